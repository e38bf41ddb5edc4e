// Text shown by the extension: ST's markdown markers taken out of a reply's excerpt. The result
// goes into the page as text (textContent), never as HTML.

/** Paired markers, longest first; the marked text must not start or end with a space. */
const PAIRS = [/\*\*(\S(?:.*?\S)?)\*\*/gs, /~~(\S(?:.*?\S)?)~~/gs, /\*(\S(?:.*?\S)?)\*/gs, /`([^`]+)`/g];
/** Underscores only at word edges (snake_case stays). */
const UNDERSCORES = [/(^|[^\w])__(\S(?:.*?\S)?)__(?=[^\w]|$)/gs, /(^|[^\w])_(\S(?:.*?\S)?)_(?=[^\w]|$)/gs];

/**
 * An excerpt as a reader sees it in ST: `*actions*`, `_italics_`, `**bold**`, `~~struck~~` and
 * `` `code` `` without their markers, lines joined, spaces collapsed.
 * @param {string} text
 * @returns {string}
 */
export function plainExcerpt(text) {
    let out = String(text ?? '').replace(/```[a-z]*\n?/gi, '');
    for (const pair of PAIRS) out = out.replace(pair, '$1');
    for (const pair of UNDERSCORES) out = out.replace(pair, '$1$2');
    return out.replace(/\s+/g, ' ').trim();
}

/**
 * "message #12, swipe 2" from a job: the swipe is read from its revision
 * (`<swipe_id>:<hash>`, swipe_id 0-based), which the daemon fills once it read the reply.
 * @param {any} job
 */
export function messageLabel(job) {
    const found = /^(\d+):/.exec(typeof job?.revision === 'string' ? job.revision : '');
    const swipe = found ? `, swipe ${Number(found[1]) + 1}` : '';
    return `message #${job?.mesid}${swipe}`;
}
