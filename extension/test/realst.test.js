// What a real SillyTavern (1.12.14 to 1.19.0) showed (issue 19): each case failed on the
// extension before its fix. The fakes here carry the values in the forms ST really has them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { aliceChat, imageMessage, job, reply } from './helpers.js';
import { createApi, tokenHint } from '../lib/api.js';
import { Controller } from '../lib/controller.js';
import { ConnectionNotices, EventStreamClient } from '../lib/events.js';
import { dateText, findReply, firstDate, planInsert, sameDate } from '../lib/protocol.js';
import { messageLabel, plainExcerpt } from '../lib/text.js';
import { TOAST_SAFE, createPreview, createToasts } from '../lib/ui.js';

const CHAT_FILE = 'Alice - 2026-11-23@22h00m00s';
const STARTED = '2026-11-23T22:06:11.428Z';
const AFTER = { name: 'Alice', send_date: STARTED, mesid: 2 };

/** A reply as ST keeps it in memory right after generating it in the open tab. */
function freshReply(text = 'The glade glows.') {
    const started = new Date(STARTED);
    const finished = new Date('2026-11-23T22:06:15.761Z');
    const message = reply('Alice', text, started, finished.toISOString());
    message.gen_finished = finished;
    message.swipe_info[0].gen_started = started;
    message.swipe_info[0].gen_finished = finished;
    return message;
}

function freshChat() {
    const chat = aliceChat();
    chat[2] = freshReply();
    return chat;
}

function fakeContext(chat) {
    const ctx = {
        chat, characters: [{ name: 'Alice', avatar: 'Alice.png', chat: CHAT_FILE }], characterId: 0,
        groupId: null, chatId: CHAT_FILE, saves: [],
        getCurrentChatId: () => ctx.chatId,
        saveChat: async () => { ctx.saves.push(JSON.parse(JSON.stringify(ctx.chat))); },
    };
    return ctx;
}

function setup({ chat = freshChat(), jobs = [], generate } = {}) {
    const ctx = fakeContext(chat);
    const store = new Map(jobs.map(j => [j.id, j]));
    const calls = [];
    const api = {
        calls,
        async jobs(query) {
            return { jobs: [...store.values()].filter(j => j.state === query.state && j.chat_file === query.chat_file).reverse() };
        },
        async message(id) { return { message: imageMessage(id, 'Alice'), after: AFTER }; },
        async accept(id) { calls.push(['accept', id]); return { ...store.get(id), state: 'accepted' }; },
        async reject(id) { calls.push(['reject', id]); return { ...store.get(id), state: 'rejected' }; },
        async regen(id) { calls.push(['regen', id]); return job('NEW', { state: 'queued' }); },
        async generate(body) { calls.push(['generate', body]); return generate(body); },
    };
    const toasts = [];
    const preview = { shown: [], again: [], showPending(list) { this.shown.push(list.map(j => j.id)); }, close() { this.shown.push('closed'); }, offerAgain(id) { this.again.push(id); } };
    const controller = new Controller({
        getContext: () => ctx, api, preview,
        settings: () => ({ livePreview: true, progressToasts: true, user: '' }),
        toasts: {
            progress: (key, text) => toasts.push(['progress', key, text]),
            finish: (key, kind, text) => toasts.push([kind, key, text]),
            error: text => toasts.push(['error', text]),
            info: text => toasts.push(['info', text]),
            warning: text => toasts.push(['warning', text]),
        },
        render: { append: () => {}, insertAt: () => {}, editing: () => false },
    });
    return { ctx, api, controller, toasts, preview };
}

const markers = chat => chat.map(m => m.extra?.st_imagegen_job ?? null);

describe('1. a reply generated in the open tab (Date objects in memory)', () => {
    it('is found by its identity: Date, ISO text and epoch forms name the same moment', () => {
        const message = freshReply();
        assert.equal(dateText(new Date(STARTED)), STARTED);
        assert.equal(dateText(new Date('nonsense')), '');
        assert.equal(firstDate(message), STARTED);
        assert.equal(findReply(freshChat(), AFTER), 2);
        assert.ok(sameDate(STARTED, String(Date.parse(STARTED))));
        assert.ok(!sameDate('November 23, 2026 10:06pm', STARTED)); // minute precision: text only
        // An unswiped reply without swipe_info (ST up to 1.14 before the next render).
        const bare = freshReply();
        delete bare.swipe_info;
        delete bare.swipes;
        assert.equal(firstDate(bare), STARTED);
    });

    it('gets the live insert right after it, and the save carries the image message once', async () => {
        const t = setup();
        await t.controller.chatChanged();
        await t.controller.jobEvent(job('J1', { state: 'committed' }));
        assert.deepEqual(markers(t.ctx.chat), [null, null, null, 'J1']);
        assert.equal(t.ctx.saves.length, 1);
        assert.equal(markers(t.ctx.saves[0]).filter(Boolean).length, 1);
        assert.equal(planInsert(t.ctx.chat, { message: imageMessage('J1', 'Alice'), after: AFTER }).reason, 'present');
    });

    it('says so, once, with the way out when the reply truly is not in the tab', async () => {
        const chat = freshChat();
        chat.splice(2, 1); // the tab lost the reply (deleted here, still in the file)
        const t = setup({ chat });
        await t.controller.chatChanged();
        await t.controller.jobEvent(job('J1', { state: 'committed', mesid: 2 }));
        await t.controller.connected();
        const warnings = t.toasts.filter(x => x[0] === 'warning');
        assert.equal(warnings.length, 1);
        assert.match(warnings[0][1], /saved in the chat file.*Reload the chat \(F5\)/);
        assert.equal(t.ctx.saves.length, 0);
    });
});

describe('2. a job that comes back to pending is offered again', () => {
    it('after the user closed it, swiped away (superseded) and back (pending)', async () => {
        const t = setup({ jobs: [job('P1', { state: 'pending' })] });
        await t.controller.chatChanged();
        await t.controller.jobEvent(job('P1', { state: 'pending' }));
        assert.deepEqual(t.preview.again, []); // still pending: nothing to re-offer
        await t.controller.jobEvent(job('P1', { state: 'superseded' }));
        await t.controller.jobEvent(job('P1', { state: 'pending' }));
        assert.deepEqual(t.preview.again, ['P1']);
        assert.deepEqual(t.preview.shown.at(-1), ['P1']);
    });

    it('the real preview shows a job the user closed once it is offered again', async () => {
        const opened = [];
        const Popup = class {
            constructor() { opened.push(this); }
            show() { return new Promise(resolve => { this.resolve = resolve; }); }
            completeCancelled() { this.resolve(null); }
        };
        const preview = createPreview({
            getContext: () => ({ Popup, POPUP_TYPE: { TEXT: 1 } }), api: { imageUrl: () => new Promise(() => {}) },
            settings: () => ({ previewMode: 'popup' }), act: async () => ({}), doc: fakeDocument(),
        });
        preview.showPending([job('P1')]);
        opened[0].resolve(null); // the user pressed Close to swipe
        await new Promise(resolve => setTimeout(resolve, 5));
        preview.showPending([job('P1')]);
        assert.equal(opened.length, 1);
        preview.offerAgain('P1');
        preview.showPending([job('P1')]);
        assert.equal(opened.length, 2);
        assert.equal(preview.shown, 'P1');
    });

    it('/genimage on a reply whose job is pending shows that job', async () => {
        const t = setup({ generate: () => job('P1', { state: 'pending' }) });
        await t.controller.chatChanged();
        const made = await t.controller.generate(2);
        assert.equal(made.id, 'P1');
        assert.deepEqual(t.preview.again, ['P1']);
        assert.deepEqual(t.preview.shown.at(-1), ['P1']);
    });
});

describe('3. /genimage on a reply whose job was rejected', () => {
    it('makes a new job (force) instead of only saying "rejected"', async () => {
        const t = setup({ generate: body => (body.force ? job('NEW', { state: 'queued' }) : job('OLD', { state: 'rejected' })) });
        await t.controller.chatChanged();
        const made = await t.controller.generate(2);
        assert.equal(made.id, 'NEW');
        assert.deepEqual(t.api.calls.map(c => c[1].force), [false, true]);
        assert.ok(!t.toasts.some(x => /rejected/.test(x.at(-1))));
        assert.deepEqual(t.toasts.at(-1), ['progress', 'NEW', 'Image for message #2: queued']);
    });

    it('an image already in the chat: says so and names force=true', async () => {
        const t = setup({ generate: () => job('DONE', { state: 'committed' }) });
        await t.controller.chatChanged();
        await t.controller.generate(2);
        assert.equal(t.api.calls.length, 1);
        assert.match(t.toasts.at(-1)[1], /already has its image.*\/genimage mesid=2 force=true/);
    });
});

describe('5. daemon-supplied text never becomes HTML', () => {
    it('every toast is made with escapeHtml, whatever its kind', () => {
        const seen = [];
        const toastr = {};
        for (const kind of ['info', 'success', 'warning', 'error']) {
            toastr[kind] = (text, title, options) => { seen.push([kind, text, options]); return [{}]; };
        }
        toastr.clear = () => {};
        const toasts = createToasts(toastr);
        const hostile = '<img src=x onerror="window.pwned=1">';
        toasts.progress('K', hostile);
        toasts.finish('K', 'error', hostile);
        toasts.error(hostile);
        toasts.info(hostile);
        toasts.warning(hostile);
        assert.equal(seen.length, 5);
        for (const [, text, options] of seen) {
            assert.equal(text, hostile); // passed as text; toastr escapes it
            assert.equal(options.escapeHtml, TOAST_SAFE.escapeHtml);
            assert.equal(options.escapeHtml, true);
        }
    });
});

describe('6. one toast per user action, no raw ids, plain words', () => {
    it('repeated pending events and a regeneration keep to one toast, without job ids', async () => {
        const t = setup({ generate: () => job('GEN', { state: 'queued', mesid: 2 }) });
        await t.controller.chatChanged();
        await t.controller.generate(2);
        await t.controller.jobEvent(job('GEN', { state: 'pending', mesid: 2 }));
        await t.controller.jobEvent(job('GEN', { state: 'pending', mesid: 2 })); // images updated
        await t.controller.act('regen', job('GEN', { mesid: 2 }), 'edited');
        await t.controller.jobEvent(job('GEN', { state: 'superseded', mesid: 2, last_error: 'regenerated as 01JNEWJOBID0000000000000000' }));
        await t.controller.jobEvent(job('NEW', { state: 'imaging', mesid: 2 }));
        await t.controller.jobEvent(job('NEW', { state: 'pending', mesid: 2 }));
        await t.controller.jobEvent(job('NEW', { state: 'pending', mesid: 2 }));
        const keys = new Set(t.toasts.map(x => x[1]));
        assert.deepEqual([...keys], ['GEN']); // one toast, updated in place
        assert.equal(t.toasts.filter(x => /ready for review/.test(x[2])).length, 2); // once per job
        assert.ok(!t.toasts.some(x => /01J|superseded|regenerated as/.test(x[2])));
    });

    it('a job whose failure overtook the answer that made it still ends its toast', async () => {
        // Seen on a loaded machine: the image API refused at once, the `failed` event arrived
        // before POST /generate answered, and the toast said "queued" for good.
        const made = job('FAST', { state: 'queued', updated_at: '2026-12-07T16:41:43.200Z' });
        const t = setup({ generate: async () => {
            await t.controller.jobEvent(job('FAST', { state: 'failed', last_error: 'image: answered 400 (bad request)', updated_at: '2026-12-07T16:41:43.264Z' }));
            return made;
        } });
        await t.controller.chatChanged();
        await t.controller.generate(2, { force: true });
        assert.deepEqual(t.toasts.at(-1), ['error', 'FAST', 'Image for message #2 failed: image: answered 400 (bad request)']);
        assert.ok(!t.toasts.some(x => x[0] === 'progress'));
    });

    it('401: names the token and where to paste it, not "HTTP 401"', async () => {
        const api = createApi({
            base: () => 'http://127.0.0.1:9', token: () => '',
            fetch: async () => new Response(JSON.stringify({ error: { code: 'unauthorized', message: 'token required' } }), { status: 401 }),
        });
        await assert.rejects(api.status(), error => error.message === tokenHint(false) && error.status === 401);
        assert.match(tokenHint(false), /this daemon needs a token: run `st-imagegen web-url` and paste the part after `\?token=`/);
        const states = [];
        const stream = new EventStreamClient({
            url: () => 'http://127.0.0.1:9/api/v1/events',
            describeStatus: status => (status === 401 ? tokenHint(false) : null),
            fetch: async () => new Response('', { status: 401 }),
            onEvent: () => {}, onState: (state, detail) => states.push([state, detail?.error?.message]),
            setTimeout: () => 0, clearTimeout: () => {}, random: () => 1,
        });
        stream.start();
        await new Promise(resolve => setTimeout(resolve, 5));
        assert.deepEqual(states.at(-1), ['disconnected', tokenHint(false)]);
        stream.stop();
    });

    it('the first connection after a failed start says "connected", a later one "reconnected"', () => {
        const said = [];
        const notices = new ConnectionNotices({ toasts: { info: t => said.push(t), warning: t => said.push(t) }, where: () => 'http://127.0.0.1:8765' });
        notices.onState('connecting');
        notices.onState('disconnected', { error: new Error('Failed to fetch') }, 1);
        notices.onState('disconnected', { error: new Error('Failed to fetch') }, 2); // no repeat
        notices.onState('connected');
        notices.onState('disconnected', { error: new Error('closed') }, 1);
        notices.onState('connected');
        assert.deepEqual(said, [
            'the daemon at http://127.0.0.1:8765 is not reachable (Failed to fetch); retrying in the background',
            'connected to the daemon at http://127.0.0.1:8765',
            'the daemon at http://127.0.0.1:8765 is not reachable (closed); retrying in the background',
            'reconnected to the daemon at http://127.0.0.1:8765',
        ]);
        const quiet = [];
        const fine = new ConnectionNotices({ toasts: { info: t => quiet.push(t), warning: t => quiet.push(t) }, where: () => 'x' });
        fine.onState('connecting');
        fine.onState('connected');
        assert.deepEqual(quiet, []); // all well from the start: silent
    });
});

describe('7. small things', () => {
    it('the excerpt without markdown markers, the swipe named', () => {
        assert.equal(plainExcerpt('*She smiles.* "Come **in**," she says, ~~not~~ _softly_.\n\nsnake_case'), 'She smiles. "Come in," she says, not softly. snake_case');
        assert.equal(plainExcerpt('<b>bold</b>'), '<b>bold</b>'); // text: shown as written, never parsed
        assert.equal(messageLabel(job('X', { mesid: 12, revision: '1:abcdef0123456789' })), 'message #12, swipe 2');
        assert.equal(messageLabel(job('X', { mesid: 12, revision: null })), 'message #12');
    });

    it('the preview shows the plain excerpt and the swipe', () => {
        const doc = fakeDocument();
        const preview = createPreview({
            getContext: () => ({}), api: { imageUrl: () => new Promise(() => {}) },
            settings: () => ({ previewMode: 'panel' }), act: async () => ({}), doc,
        });
        preview.showPending([job('P1', { mesid: 12, revision: '1:abcdef0123456789', excerpt: '*She waves.*' })]);
        const texts = allText(doc.body);
        assert.ok(texts.includes('She waves.'));
        assert.ok(texts.some(t => t.includes('message #12, swipe 2')));
    });
});

// --- a DOM just big enough for the preview -------------------------------------------------

function fakeDocument() {
    class FakeElement {
        constructor(tag) {
            this.tagName = tag.toUpperCase();
            this.children = [];
            this.dataset = {};
            this.attributes = {};
            this.classList = { add() {}, remove() {} };
            this.className = '';
            this.textContent = '';
            this.value = '';
        }
        addEventListener() {}
        setAttribute(key, value) { this.attributes[key] = value; }
        append(...nodes) { this.children.push(...nodes); }
        replaceChildren(...nodes) { this.children = nodes; }
        replaceWith() {}
        remove() {}
        querySelector() { return null; }
        querySelectorAll() { return []; }
        closest() { return null; }
    }
    return { createElement: tag => new FakeElement(tag), body: new FakeElement('body') };
}

function allText(node) {
    const out = node.textContent ? [node.textContent] : [];
    for (const child of node.children ?? []) out.push(...allText(child));
    return out;
}



