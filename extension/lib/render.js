// Showing a message the tab just put into context.chat, with ST's own renderer (addOneMessage).

/**
 * The message was pushed as the chat's last: ST renders it like any new message.
 * @param {any} ctx `SillyTavern.getContext()`
 * @param {any} message
 */
export function appendMessage(ctx, message) {
    ctx.addOneMessage(message);
}

/**
 * The message was spliced into context.chat at `index` (mid-chat). ST's own mid-chat insert
 * (`/sendas at=N`) saves and reloads the whole chat; that re-reads the file and scrolls away. Here
 * the shown ids at and after `index` shift by one (what ST's updateViewMessageIds does), the
 * message is rendered with the id `index`, and placed after the reply's element. addOneMessage's
 * `insertAfter` is ignored for 0 in 1.12, hence the explicit placement.
 * @param {any} ctx
 * @param {number} index
 * @param {any} message
 * @param {Document} [doc]
 */
export function insertMessageAt(ctx, index, message, doc = globalThis.document) {
    const root = doc.getElementById('chat');
    if (!root) return;
    const shown = [...root.querySelectorAll('.mes[mesid]')];
    const ids = shown.map(el => Number(el.getAttribute('mesid')));
    if (!shown.length || index < Math.min(...ids)) {
        // Above the shown part (ST shows the newest messages only): renumber, render nothing;
        // ST renders it with "Show more messages".
        for (const el of shown) setId(el, Number(el.getAttribute('mesid')) + 1);
        return;
    }
    for (const el of shown) {
        const id = Number(el.getAttribute('mesid'));
        if (id >= index) setId(el, id + 1);
    }
    const reply = root.querySelector(`.mes[mesid="${index - 1}"]`);
    ctx.addOneMessage(message, { forceId: index, insertAfter: index - 1, scroll: false });
    const added = [...root.querySelectorAll(`.mes[mesid="${index}"]`)].find(el => !shown.includes(el));
    if (added && reply && reply.nextElementSibling !== added) reply.after(added);
    const all = root.querySelectorAll('.mes');
    all.forEach(el => el.classList.remove('last_mes'));
    all[all.length - 1]?.classList.add('last_mes');
}

function setId(el, id) {
    el.setAttribute('mesid', String(id));
    const label = el.querySelector('.mesIDDisplay');
    if (label) label.textContent = `#${id}`;
}

/**
 * Whether ST's message editor is open (ST keeps the message's index while editing).
 * @param {Document} [doc]
 */
export function editing(doc = globalThis.document) {
    return !!doc.querySelector('#chat #curEditTextarea');
}
