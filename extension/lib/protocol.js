// The insert protocol (docs/http-api.md, "The insert protocol"): pure functions over ST's
// in-memory chat array. No DOM, no SillyTavern imports, so Node's test runner can load them.
//
// The daemon always writes the image message into the chat file. The open tab mirrors that exact
// object into context.chat right after the reply it illustrates, unless a message with the same
// marker is already there, and saves: the tab's save then carries the line and the daemon sees its
// message acknowledged. Both sides insert only when the marker is absent, so no duplicate.

/** Top-level `extra` key of every message the daemon writes; its value is the job id. */
export const MARKER_KEY = 'st_imagegen_job';

/** Job states in which a job still runs (progress toasts follow these): the daemon's group
 * `active`. Like the two below, replaced in place by the daemon's own vocabulary
 * (`GET /api/v1/meta`) when the tab connects: see `useVocabulary`. */
export const RUNNING_STATES = ['queued', 'prompting', 'imaging'];

/** Job states after which nothing more happens to a job: the daemon's group `final`. */
export const FINAL_STATES = ['committed', 'rejected', 'superseded', 'failed'];

/** A few words for each state (the daemon's `labels`). */
export const STATE_LABELS = {
    queued: 'queued',
    prompting: 'writing the prompt',
    imaging: 'drawing the image',
    pending: 'ready for review',
    accepted: 'accepted, writing into the chat',
};

/**
 * Take the daemon's job vocabulary (`GET /api/v1/meta`: states, groups, labels) in place of the
 * defaults above, so the tab and the daemon never disagree on what a state means.
 * @param {any} meta
 * @returns {boolean} whether it was usable
 */
export function useVocabulary(meta) {
    const groups = meta && typeof meta === 'object' ? meta.groups : null;
    const words = (list) => Array.isArray(list) && list.every(s => typeof s === 'string');
    if (!groups || !words(groups.active) || !words(groups.final)) return false;
    RUNNING_STATES.splice(0, RUNNING_STATES.length, ...groups.active);
    FINAL_STATES.splice(0, FINAL_STATES.length, ...groups.final);
    if (meta.labels && typeof meta.labels === 'object') {
        for (const [state, text] of Object.entries(meta.labels)) {
            if (typeof text === 'string') STATE_LABELS[state] = text;
        }
    }
    return true;
}

/**
 * Our job id if `message` was written by the daemon (top-level `extra` only: ST copies `extra`
 * into `swipe_info[i].extra`, which must not count).
 * @param {any} message
 * @returns {string|null}
 */
export function markerOf(message) {
    const extra = message && typeof message === 'object' ? message.extra : null;
    const value = extra && typeof extra === 'object' ? extra[MARKER_KEY] : null;
    return typeof value === 'string' && value ? value : null;
}

/**
 * Index of the message carrying `jobId`'s marker, or -1.
 * @param {any[]} chat
 * @param {string} jobId
 */
export function findMarker(chat, jobId) {
    for (let i = chat.length - 1; i >= 0; i--) {
        if (markerOf(chat[i]) === jobId) return i;
    }
    return -1;
}

/**
 * A message date as the saved file has it. In ST's memory a freshly generated reply carries
 * `gen_started` (and `swipe_info[i].gen_started`) as a JavaScript Date (`generation_started =
 * new Date()`); the file has the ISO text JSON.stringify makes of it, which is what the daemon
 * reads. Numbers (epoch milliseconds, some importers) count as their integer text.
 * @param {any} value
 * @returns {string}
 */
export function dateText(value) {
    if (typeof value === 'string') return value;
    if (typeof value === 'number' && Number.isFinite(value)) return String(Math.trunc(value));
    if (value instanceof Date || Object.prototype.toString.call(value) === '[object Date]') {
        const time = value.getTime();
        return Number.isFinite(time) ? value.toISOString() : '';
    }
    return '';
}

/**
 * The first swipe's start, stable across swipes: the same rule as the daemon's
 * `Message.first_date` (daemon/tavern/chat.py), over the values as ST keeps them in memory.
 * @param {any} message
 * @returns {string}
 */
export function firstDate(message) {
    if (!message || typeof message !== 'object') return '';
    let info = message.swipe_info;
    if (!Array.isArray(info)) info = message.swipes_info; // 1.12 misspells it on /sendas
    if (Array.isArray(info) && info.length && info[0] && typeof info[0] === 'object') {
        for (const key of ['gen_started', 'send_date']) {
            const text = dateText(info[0][key]);
            if (text) return text;
        }
    }
    const swipes = Array.isArray(message.swipes) ? message.swipes.filter(s => typeof s === 'string') : [];
    // The daemon takes a top-level gen_started only as text (a Date is text once saved).
    const started = typeof message.gen_started === 'number' ? '' : dateText(message.gen_started);
    if (started && swipes.length < 2) return started;
    return dateText(message.send_date);
}

/** The instant a date text names (ms), or null: ISO texts, epoch numbers, ST's humanized form. */
function instantOf(text) {
    if (!text) return null;
    if (/^\d+$/.test(text)) return Number(text);
    const parsed = Date.parse(text);
    return Number.isFinite(parsed) ? parsed : null;
}

/**
 * Whether two date texts name the same moment: equal texts, or (forms differ: ISO against epoch
 * milliseconds) the same instant to the millisecond. ST's humanized `send_date` ("November 23,
 * 2026 10:06pm") has minute precision and is compared as text only.
 * @param {string} a
 * @param {string} b
 */
export function sameDate(a, b) {
    if (!a || !b) return false;
    if (a === b) return true;
    const precise = text => /^\d+$/.test(text) || /T\d\d:\d\d:\d\d/.test(text);
    if (!precise(a) || !precise(b)) return false;
    const x = instantOf(a);
    const y = instantOf(b);
    return x !== null && y !== null && x === y;
}

/**
 * Whether `message` is the reply with this identity (name + first swipe's date).
 * @param {any} message
 * @param {{name: string, send_date: string}} identity
 */
export function isReply(message, identity) {
    return !!message && message.name === identity.name && sameDate(firstDate(message), String(identity.send_date ?? ''));
}

/**
 * Index of the reply `after` names, or -1. The mesid is a hint (inserts above shift indices):
 * it is tried first, then the chat is searched from the end.
 * @param {any[]} chat
 * @param {{name: string, send_date: string, mesid?: number}} after
 */
export function findReply(chat, after) {
    const hint = Number(after.mesid);
    if (Number.isInteger(hint) && hint >= 0 && hint < chat.length && isReply(chat[hint], after)) {
        return hint;
    }
    for (let i = chat.length - 1; i >= 0; i--) {
        if (isReply(chat[i], after)) return i;
    }
    return -1;
}

/**
 * SHA-256 (hex) of a string as UTF-8, with WebCrypto (browsers and Node 20 alike).
 * @param {string} text
 */
export async function sha256Hex(text) {
    const bytes = new TextEncoder().encode(text);
    const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes);
    return Array.from(new Uint8Array(digest), b => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The reply's revision as the daemon writes it: `<swipe_id>:<sha256(mes)[:16]>`.
 * (Lone surrogates, which the daemon hashes as such, become U+FFFD here: such a reply reads as
 * changed, and the tab leaves the insert to the daemon.)
 * @param {any} message
 */
export async function revisionOf(message) {
    const swipeId = Number.isInteger(message?.swipe_id) ? message.swipe_id : 0;
    const mes = typeof message?.mes === 'string' ? message.mes : '';
    return `${swipeId}:${(await sha256Hex(mes)).slice(0, 16)}`;
}

/**
 * Where the image message goes: after the reply and after our image messages already following
 * it (the daemon's `insert_position`, so the tab and the file agree on the order).
 * @param {any[]} chat
 * @param {number} replyIndex
 */
export function insertIndex(chat, replyIndex) {
    let index = replyIndex + 1;
    while (index < chat.length && markerOf(chat[index]) !== null) index++;
    return index;
}

/**
 * Decide what the tab does with a committed job's message.
 *
 * Returns `{action: 'insert', index, atEnd}` or `{action: 'skip', reason}` with reason
 * `present` (the marker is already in the chat: never a second copy), `reply-gone` (the reply is
 * not in this chat: deleted, or another chat), `reply-changed` (the reply shows another swipe or
 * text than the image was made for: it belongs to that revision), `bad-message`.
 *
 * @param {any[]} chat ST's in-memory chat (`context.chat`)
 * @param {{message: any, after: {name: string, send_date: string, mesid?: number}}} payload
 *   the answer of `GET /api/v1/jobs/{id}/message`
 * @param {{revision?: string|null, currentRevision?: string|null}} [check] the job's revision and
 *   the reply's current one (from {@link revisionOf}); skipped when either is missing
 */
export function planInsert(chat, payload, check = {}) {
    const message = payload?.message;
    const jobId = markerOf(message);
    if (!jobId || !payload.after || typeof payload.after.name !== 'string') {
        return { action: 'skip', reason: 'bad-message' };
    }
    if (findMarker(chat, jobId) !== -1) return { action: 'skip', reason: 'present' };
    const reply = findReply(chat, payload.after);
    if (reply === -1) return { action: 'skip', reason: 'reply-gone' };
    if (check.revision && check.currentRevision && check.revision !== check.currentRevision) {
        return { action: 'skip', reason: 'reply-changed', replyIndex: reply };
    }
    const index = insertIndex(chat, reply);
    return { action: 'insert', index, atEnd: index === chat.length, replyIndex: reply };
}

/**
 * A deep copy of the daemon's message, safe to put into ST's chat (ST mutates the objects it
 * renders: swipe fields, media migration). JSON round trip: the message came as JSON.
 * @param {any} message
 */
export function cloneMessage(message) {
    return JSON.parse(JSON.stringify(message));
}

/**
 * Which chat the tab has open, in the daemon's terms (`chat_file` = ST's chatId, `chat_folder` =
 * the card file stem, "" for groups). `null` when no chat is open.
 *
 * Copes with 1.12.0, whose `context.chatId` is `this_chid && …` (wrong for character 0):
 * `getCurrentChatId()` is preferred wherever it exists.
 * @param {any} ctx the object `SillyTavern.getContext()` returns
 * @returns {{chatFile: string, folder: string, isGroup: boolean, groupId: string|null}|null}
 */
export function openChatOf(ctx) {
    if (!ctx) return null;
    const chatId = typeof ctx.getCurrentChatId === 'function' ? ctx.getCurrentChatId() : ctx.chatId;
    if (!chatId || typeof chatId !== 'string') return null;
    if (ctx.groupId !== undefined && ctx.groupId !== null && ctx.groupId !== '') {
        return { chatFile: chatId, folder: '', isGroup: true, groupId: String(ctx.groupId) };
    }
    const character = ctx.characters?.[ctx.characterId];
    const avatar = typeof character?.avatar === 'string' ? character.avatar : '';
    const folder = avatar.replace(/\.png$/i, '');
    if (!folder) return null;
    return { chatFile: chatId, folder, isGroup: false, groupId: null };
}

/**
 * Whether `job` illustrates a reply of the open chat `open` (from {@link openChatOf}).
 * @param {any} job a Job object of the HTTP API
 * @param {ReturnType<typeof openChatOf>} open
 * @param {string} [user] the ST user handle, when the settings name one
 */
export function jobInChat(job, open, user = '') {
    if (!job || !open) return false;
    if (user && job.user !== user) return false;
    if (job.chat_file !== open.chatFile) return false;
    if (!!job.is_group !== open.isGroup) return false;
    return open.isGroup || job.chat_folder === open.folder;
}

/**
 * The body of `POST /api/v1/generate` for the open chat. The daemon joins `chat` and
 * `chat_file` as `generate --chat NAME/CHAT` does (NAME: card file stem or group id); with the
 * ST user known, the chat's path under the data root is exact even when two users have a card
 * of the same name.
 * @param {NonNullable<ReturnType<typeof openChatOf>>} open
 * @param {{mesid?: number|null, force?: boolean, user?: string}} [options]
 */
export function generateBody(open, { mesid = null, force = false, user = '' } = {}) {
    const body = user
        ? { chat: open.isGroup ? `${user}/group chats/${open.chatFile}.jsonl` : `${user}/chats/${open.folder}/${open.chatFile}.jsonl` }
        : { chat: open.isGroup ? open.groupId : open.folder, chat_file: open.chatFile };
    body.force = !!force;
    if (mesid !== null && mesid !== undefined) body.mesid = mesid;
    return body;
}

/**
 * Tracks which committed jobs of the open chat the tab may still insert.
 *
 * When a chat is opened, the jobs committed before are the file's business: their message is in
 * the loaded chat, or the user removed it (deleted, or ST's Regenerate dropped it), and re-adding
 * would undo the user. Only jobs committed while the chat is open are inserted, whether their
 * event arrived live or was missed during a reconnect and found by the catch-up listing.
 */
export class CommitLedger {
    constructor() {
        /** @type {string|null} */ this.chatKey = null;
        /** @type {Set<string>} */ this.baseline = new Set();
        /** @type {Set<string>} */ this.handled = new Set();
    }

    /**
     * A chat was opened: `committedIds` are the jobs of it committed at that moment.
     * @param {string|null} chatKey
     * @param {Iterable<string>} committedIds
     */
    reset(chatKey, committedIds) {
        this.chatKey = chatKey;
        this.baseline = new Set(committedIds);
        this.handled = new Set();
    }

    /** Whether the job's message should be mirrored into the open chat. */
    wants(chatKey, jobId) {
        return chatKey === this.chatKey && !this.baseline.has(jobId) && !this.handled.has(jobId);
    }

    /** The job was inserted, found present, or refused for good. */
    done(jobId) {
        this.handled.add(jobId);
    }
}

/** A stable string for an open chat (ledger key). */
export function chatKeyOf(open) {
    return open ? `${open.isGroup ? 'g' : 'c'}:${open.folder}:${open.chatFile}` : null;
}
