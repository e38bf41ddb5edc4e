// /genimage (aliases /generateimage, /imggen): argument parsing, pure.

export const COMMAND = 'genimage';
export const ALIASES = Object.freeze(['generateimage', 'imggen']);
export const HELP = 'Illustrates a reply of the open chat with st-imagegen (the daemon\'s manual mode). '
    + '<code>mesid=N</code> picks the message (first is 0; default: the last character reply); '
    + '<code>force=true</code> makes a new job even if the reply already has one; '
    + '<code>/genimage cancel</code> stops the jobs this tab started that are still queued or running. '
    + 'Example: <code>/genimage mesid=5</code>';

function truthy(value) {
    return value === true || ['true', 'on', 'yes', '1'].includes(String(value).trim().toLowerCase());
}

/**
 * Parse the command's arguments. ST passes named arguments as an object of strings (1.12+;
 * typed ones may arrive as numbers) and the unnamed one as a string; `/genimage 5` means
 * `mesid=5`.
 * @param {Record<string, any>} named
 * @param {any} unnamed
 * @returns {{mesid: number|null, force: boolean, cancel?: true}}
 * @throws {Error} with a sentence for the user on a bad value
 */
export function parseGenimageArgs(named = {}, unnamed = '') {
    const args = { ...(named && typeof named === 'object' ? named : {}) };
    let rest = typeof unnamed === 'string' ? unnamed.trim() : (unnamed ?? '');
    if (typeof rest === 'string' && rest.includes('=')) {
        // ST's parser takes named arguments only before the unnamed one: `/genimage 5 force=true`
        // arrives as the unnamed text "5 force=true". Our own names are picked out of it, and
        // win: ST fills a named argument left out with its default (force: 'false').
        const left = [];
        for (const token of rest.split(/\s+/)) {
            const found = /^(mesid|force|cancel)=(.*)$/i.exec(token);
            if (found) args[found[1].toLowerCase()] = found[2];
            else left.push(token);
        }
        rest = left.join(' ');
    }
    if (typeof rest === 'string' && /^cancel$/i.test(rest)) {
        args.cancel = 'true';
        rest = '';
    }
    if (args.cancel !== undefined && truthy(args.cancel)) return { mesid: null, force: false, cancel: true };
    let raw = args.mesid;
    if ((raw === undefined || raw === null || raw === '') && rest !== '') raw = rest;
    let mesid = null;
    if (raw !== undefined && raw !== null && String(raw).trim() !== '') {
        const text = String(raw).trim();
        if (!/^\d+$/.test(text)) {
            throw new Error(`/genimage: mesid wants a message number from 0 (got "${text}")`);
        }
        mesid = Number(text);
    }
    return { mesid, force: args.force !== undefined && truthy(args.force) };
}
