import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { aliceChat, imageMessage, job, userMessage } from './helpers.js';
import { Controller, progressText } from '../lib/controller.js';
import { revisionOf } from '../lib/protocol.js';

const CHAT_FILE = 'Alice - 2026-11-23@22h00m00s';
const AFTER = { name: 'Alice', send_date: '2026-11-23T22:06:11.428Z', mesid: 2 };

/** A fake of the parts of SillyTavern.getContext() the controller uses. */
function fakeContext(chat = aliceChat()) {
    const ctx = {
        chat, characters: [{ name: 'Alice', avatar: 'Alice.png', chat: CHAT_FILE }], characterId: 0,
        groupId: null, chatId: CHAT_FILE, saves: [],
        getCurrentChatId: () => ctx.chatId,
        saveChat: async () => { ctx.saves.push(JSON.parse(JSON.stringify(ctx.chat))); },
    };
    return ctx;
}

/** A fake API: jobs by id (`store`); committed ones answer /message with the daemon's object. */
function fakeApi(jobs = []) {
    const api = {
        store: new Map(jobs.map(j => [j.id, j])),
        down: false,
        calls: [],
        async jobs(query) {
            api.calls.push(['jobs', query]);
            if (api.down) throw Object.assign(new Error('not reachable'), { status: 0 });
            const found = [...api.store.values()].filter(j => j.state === query.state && j.chat_file === query.chat_file);
            return { jobs: found.reverse(), next: null }; // newest first, as the daemon answers
        },
        async message(id) {
            api.calls.push(['message', id]);
            return { message: imageMessage(id, 'Alice'), after: AFTER };
        },
        async accept(id, keep) { api.calls.push(['accept', id, keep]); return { ...api.store.get(id), state: 'accepted' }; },
        async reject(id) { api.calls.push(['reject', id]); return { ...api.store.get(id), state: 'rejected' }; },
        async regen(id, prompt) { api.calls.push(['regen', id, prompt]); return job('NEW', { state: 'queued' }); },
        async cancel(id) {
            api.calls.push(['cancel', id]);
            if (id === 'DONE') throw Object.assign(new Error('cannot cancel job DONE: it is pending'), { status: 409 });
            return { ...job(id), state: 'rejected', cancelled: true };
        },
        async generate(body) {
            api.calls.push(['generate', body]);
            if (api.down) throw Object.assign(new Error('st-imagegen at http://127.0.0.1:8765 is not reachable'), { status: 0 });
            return job('GEN', { state: 'queued', mesid: body.mesid ?? 2 });
        },
    };
    return api;
}

function setup({ chat, jobs, settings = {} } = {}) {
    const ctx = fakeContext(chat);
    const api = fakeApi(jobs);
    const shown = [];
    const toasts = [];
    const rendered = [];
    const timers = [];
    let editing = false;
    const controller = new Controller({
        getContext: () => ctx,
        api,
        settings: () => ({ livePreview: true, progressToasts: true, user: '', ...settings }),
        preview: { showPending: (list) => shown.push(list.map(j => j.id)), close: () => shown.push('closed') },
        toasts: {
            progress: (id, text) => toasts.push(['progress', id, text]),
            finish: (id, kind, text) => toasts.push([kind, id, text]),
            error: text => toasts.push(['error', text]),
            info: text => toasts.push(['info', text]),
            warning: text => toasts.push(['warning', text]),
        },
        render: {
            append: (_c, m) => rendered.push(['append', m.extra.st_imagegen_job]),
            insertAt: (_c, i, m) => rendered.push(['insertAt', i, m.extra.st_imagegen_job]),
            editing: () => editing,
        },
        setTimeout: (fn, ms) => timers.push([fn, ms]),
    });
    return { ctx, api, controller, shown, toasts, rendered, timers, setEditing: v => { editing = v; } };
}

const markers = chat => chat.map(m => m.extra?.st_imagegen_job ?? null);

describe('live insert', () => {
    it('puts a job committed while the chat is open right after its reply, once, and saves', async () => {
        const t = setup();
        await t.controller.chatChanged();
        const done = job('J1', { state: 'committed', revision: await revisionOf(t.ctx.chat[2]) });
        await t.controller.jobEvent(done);
        await t.controller.jobEvent(done); // the same event again (replay after a reconnect)
        assert.deepEqual(markers(t.ctx.chat), [null, null, null, 'J1']);
        assert.deepEqual(t.rendered, [['append', 'J1']]);
        assert.equal(t.ctx.saves.length, 1);
        assert.deepEqual(t.ctx.saves[0][3], imageMessage('J1', 'Alice')); // exactly the daemon's object
    });

    it('inserts mid-chat (the user wrote on) after the reply, not at the end', async () => {
        const chat = aliceChat();
        chat.push(userMessage('next', '2026-11-23T22:07:00.000Z'));
        const t = setup({ chat });
        await t.controller.chatChanged();
        await t.controller.jobEvent(job('J1', { state: 'committed' }));
        assert.deepEqual(markers(t.ctx.chat), [null, null, null, 'J1', null]);
        assert.deepEqual(t.rendered, [['insertAt', 3, 'J1']]);
    });

    it('waits for an open message editor before inserting mid-chat, then inserts', async () => {
        const chat = aliceChat();
        chat.push(userMessage('next', '2026-11-23T22:07:00.000Z'));
        const t = setup({ chat });
        await t.controller.chatChanged();
        t.setEditing(true);
        assert.equal(await t.controller.insertCommitted(job('J1', { state: 'committed' })), 'deferred');
        assert.equal(t.ctx.chat.length, 4);
        t.setEditing(false);
        t.timers.shift()[0]();
        await t.controller.queue;
        assert.deepEqual(markers(t.ctx.chat), [null, null, null, 'J1', null]);
    });

    it('leaves alone jobs committed before the chat was opened (the file has them, or the user removed them)', async () => {
        const t = setup({ jobs: [job('OLD', { state: 'committed' })] });
        await t.controller.chatChanged();
        await t.controller.jobEvent(job('OLD', { state: 'committed' }));
        assert.equal(t.ctx.chat.length, 3);
        assert.equal(t.ctx.saves.length, 0);
    });

    it('never adds a second copy when the message is already there (a reload read it from the file)', async () => {
        const chat = aliceChat();
        chat.push(imageMessage('J1', 'Alice'));
        const t = setup({ chat });
        await t.controller.chatChanged();
        assert.equal(await t.controller.insertCommitted(job('J1', { state: 'committed' })), 'present');
        assert.equal(t.ctx.chat.length, 4);
        assert.equal(t.ctx.saves.length, 0);
    });

    it('skips a reply swiped since: the image belongs to the revision it was made for', async () => {
        const t = setup();
        await t.controller.chatChanged();
        const revision = await revisionOf(t.ctx.chat[2]);
        Object.assign(t.ctx.chat[2], { mes: 'Another text.', swipe_id: 1, swipes: ['The glade glows.', 'Another text.'] });
        assert.equal(await t.controller.insertCommitted(job('J1', { state: 'committed', revision })), 'reply-changed');
        assert.equal(t.ctx.chat.length, 3);
    });

    it('ignores jobs of other chats, and a chat switched while the message was fetched', async () => {
        const t = setup();
        await t.controller.chatChanged();
        await t.controller.jobEvent(job('J1', { state: 'committed', chat_file: 'Alice - other' }));
        await t.controller.jobEvent(job('J2', { state: 'committed', chat_folder: 'Bob' }));
        assert.equal(t.ctx.chat.length, 3);
        const message = t.api.message;
        t.api.message = async id => {
            t.ctx.chatId = 'Alice - switched';
            return message(id);
        };
        assert.equal(await t.controller.insertCommitted(job('J3', { state: 'committed' })), 'switched');
        assert.equal(t.ctx.chat.length, 3);
    });

    it('in a group chat, matches the group chat id and saves the same way', async () => {
        const t = setup();
        Object.assign(t.ctx, { groupId: '1716000000000', chatId: 'grp-chat', characterId: undefined });
        await t.controller.chatChanged();
        await t.controller.jobEvent(job('G1', { state: 'committed', is_group: true, chat_folder: '', chat_file: 'grp-chat' }));
        assert.deepEqual(markers(t.ctx.chat), [null, null, null, 'G1']);
        assert.equal(t.ctx.saves.length, 1);
    });
});

describe('reconnect', () => {
    it('catches up on jobs committed while the stream was down, once', async () => {
        const t = setup();
        await t.controller.chatChanged();
        t.api.store.set('LATE', job('LATE', { state: 'committed' }));
        await t.controller.connected();
        await t.controller.connected();
        assert.deepEqual(markers(t.ctx.chat), [null, null, null, 'LATE']);
        assert.equal(t.ctx.saves.length, 1);
    });

    it('with the daemon down at chat open, takes the baseline at the first hello', async () => {
        const t = setup({ jobs: [job('OLD', { state: 'committed' })] });
        t.api.down = true;
        await t.controller.chatChanged();
        t.api.down = false;
        await t.controller.connected();
        await t.controller.jobEvent(job('OLD', { state: 'committed' }));
        assert.equal(t.ctx.chat.length, 3);
        await t.controller.jobEvent(job('NEW', { state: 'committed' }));
        assert.deepEqual(markers(t.ctx.chat), [null, null, null, 'NEW']);
    });
});

describe('preview', () => {
    it('shows pending jobs of the open chat, oldest first, and drops them when decided', async () => {
        const t = setup({ jobs: [job('P1', { state: 'pending' })] });
        await t.controller.chatChanged();
        assert.deepEqual(t.shown.at(-1), ['P1']);
        await t.controller.jobEvent(job('P2', { state: 'pending' }));
        assert.deepEqual(t.shown.at(-1), ['P1', 'P2']);
        await t.controller.jobEvent(job('P9', { state: 'pending', chat_file: 'elsewhere' }));
        assert.deepEqual(t.shown.at(-1), ['P1', 'P2']);
        await t.controller.act('accept', job('P1'), [2]);
        assert.deepEqual(t.api.calls.at(-1), ['accept', 'P1', [2]]);
        assert.deepEqual(t.shown.at(-1), ['P2']);
        await t.controller.jobEvent(job('P2', { state: 'rejected' }));
        assert.equal(t.shown.at(-1), 'closed');
    });

    it('a job list read before a job event does not undo the event (a catch-up racing the stream)', async () => {
        const t = setup({ jobs: [job('P1', { state: 'pending' })] });
        await t.controller.chatChanged();
        assert.deepEqual(t.shown.at(-1), ['P1']);
        // The catch-up's list of pending jobs is read now, and answers only after two events.
        let release;
        const held = new Promise(resolve => { release = resolve; });
        const list = t.api.jobs;
        t.api.jobs = async query => {
            const answer = await list(query);
            if (query.state === 'pending') await held;
            return answer;
        };
        const catchUp = t.controller.connected();
        await new Promise(resolve => setImmediate(resolve)); // the list is under way
        t.api.store.set('P1', job('P1', { state: 'accepted' }));
        await t.controller.jobEvent(job('P1', { state: 'accepted' }));
        t.api.store.set('P2', job('P2', { state: 'pending' }));
        await t.controller.jobEvent(job('P2', { state: 'pending' }));
        assert.deepEqual(t.shown.at(-1), ['P2']);
        release();
        await catchUp;
        assert.deepEqual(t.shown.at(-1), ['P2']); // not P1 back, not P2 gone
        // A later catch-up with nothing heard in between takes the list as it is.
        t.api.jobs = list;
        await t.controller.connected();
        assert.deepEqual(t.shown.at(-1), ['P2']);
    });

    it('closes on a chat switch', async () => {
        const t = setup({ jobs: [job('P1', { state: 'pending' })] });
        await t.controller.chatChanged();
        t.ctx.chatId = 'Alice - other';
        await t.controller.chatChanged();
        assert.ok(t.shown.includes('closed'));
        assert.deepEqual(t.shown.filter(x => x !== 'closed'), [['P1']]);
    });

    it('shows nothing with live preview off', async () => {
        const t = setup({ jobs: [job('P1', { state: 'pending' })], settings: { livePreview: false } });
        await t.controller.chatChanged();
        assert.equal(t.shown.filter(x => x !== 'closed').length, 0);
    });

    it('a 409 (another client was first) is a warning, the buttons come back', async () => {
        const t = setup();
        t.api.reject = async () => { throw Object.assign(new Error('cannot reject job P1: it is accepted'), { status: 409 }); };
        assert.equal(await t.controller.act('reject', job('P1')), null);
        assert.deepEqual(t.toasts.at(-1), ['warning', 'cannot reject job P1: it is accepted']);
    });

    it('regenerate with an edited prompt sends it and follows the new job', async () => {
        const t = setup();
        await t.controller.act('regen', job('P1'), 'a new prompt');
        assert.deepEqual(t.api.calls.at(-1), ['regen', 'P1', 'a new prompt']);
        assert.deepEqual(t.toasts.at(-1).slice(0, 2), ['progress', 'NEW']);
    });
});

describe('generate (/genimage and the message button)', () => {
    it('asks the daemon for the open chat and message, then toasts the progress to the end', async () => {
        const t = setup();
        await t.controller.chatChanged();
        const made = await t.controller.generate(2);
        assert.equal(made.id, 'GEN');
        assert.deepEqual(t.api.calls.at(-1), ['generate', { chat: 'Alice', chat_file: CHAT_FILE, force: false, mesid: 2 }]);
        assert.deepEqual(t.toasts.at(-1), ['progress', 'GEN', 'Image for message #2: queued']);
        await t.controller.jobEvent(job('GEN', { state: 'imaging', progress: { step: 'imaging', fraction: 0.5, text: 'step 10/20' } }));
        assert.deepEqual(t.toasts.at(-1), ['progress', 'GEN', 'Image for message #2: drawing the image (step 10/20)']);
        await t.controller.jobEvent(job('GEN', { state: 'pending' }));
        assert.deepEqual(t.toasts.at(-1), ['success', 'GEN', 'Image for message #2: ready for review']);
        await t.controller.jobEvent(job('GEN', { state: 'committed' }));
        assert.deepEqual(t.toasts.at(-1), ['success', 'GEN', 'Image for message #2 is in the chat']);
        await t.controller.jobEvent(job('GEN', { state: 'committed' }));
        assert.equal(t.toasts.filter(x => x[1] === 'GEN' && x[0] === 'success').length, 2); // no toast after the end
    });

    it('refuses a user message or a missing one before calling the daemon', async () => {
        const t = setup();
        await t.controller.chatChanged();
        assert.equal(await t.controller.generate(1), null);
        assert.match(t.toasts.at(-1)[1], /message #1 is the user's/);
        assert.equal(await t.controller.generate(7), null);
        assert.match(t.toasts.at(-1)[1], /no message #7/);
        assert.ok(!t.api.calls.some(c => c[0] === 'generate'));
    });

    it('says clearly when the daemon is down, and nothing else happens', async () => {
        const t = setup();
        await t.controller.chatChanged();
        t.api.down = true;
        assert.equal(await t.controller.generate(null), null);
        assert.deepEqual(t.toasts.at(-1), ['error', 'st-imagegen: st-imagegen at http://127.0.0.1:8765 is not reachable']);
        assert.equal(t.ctx.chat.length, 3);
    });

    it('without an open chat, says so', async () => {
        const t = setup();
        Object.assign(t.ctx, { chatId: undefined, characterId: undefined });
        assert.equal(await t.controller.generate(null), null);
        assert.deepEqual(t.toasts.at(-1), ['error', 'st-imagegen: open a chat first']);
    });

    it('progress text', () => {
        assert.equal(progressText(job('X', { state: 'prompting', mesid: 4, progress: null })), 'Image for message #4: writing the prompt');
        // As a real daemon sends them (seen in SillyTavern 1.18): no "drawing the image (drawing)".
        assert.equal(progressText(job('X', { state: 'imaging', mesid: 2, progress: { fraction: 0, text: 'drawing' } })), 'Image for message #2: drawing the image');
        assert.equal(progressText(job('X', { state: 'prompting', mesid: 2, progress: { fraction: 0, text: 'writing the prompt' } })), 'Image for message #2: writing the prompt');
        assert.equal(progressText(job('X', { state: 'queued', mesid: 2, progress: { fraction: 0, text: 'waiting for its turn' } })), 'Image for message #2: queued (waiting for its turn)');
    });
});

describe('/genimage cancel', () => {
    it('cancels what this tab started and is still running, and says so', async () => {
        const t = setup();
        await t.controller.chatChanged();
        const made = await t.controller.generate(2);
        assert.equal(made.id, 'GEN');
        t.controller.track(job('DONE', { state: 'queued' }));
        assert.equal(await t.controller.cancelTracked(), 1);
        assert.deepEqual(t.api.calls.filter(c => c[0] === 'cancel'), [['cancel', 'GEN'], ['cancel', 'DONE']]);
        assert.ok(t.toasts.some(x => x[0] === 'info' && x[1] === 'GEN' && /cancelled/.test(x[2])));
        assert.equal(await t.controller.cancelTracked(), 0); // GEN is no longer followed
        assert.ok(t.toasts.some(x => x[0] === 'info' && /nothing of this tab/.test(x[1])));
    });
});
