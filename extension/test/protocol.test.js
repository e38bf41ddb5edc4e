import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { aliceChat, imageMessage, job, reply, userMessage } from './helpers.js';
import {
    CommitLedger, chatKeyOf, generateBody, cloneMessage, findMarker, findReply, firstDate, insertIndex,
    FINAL_STATES, RUNNING_STATES, STATE_LABELS, jobInChat, markerOf, openChatOf, planInsert, revisionOf,
    useVocabulary,
} from '../lib/protocol.js';

const AFTER = { name: 'Alice', send_date: '2026-11-23T22:06:11.428Z', mesid: 2 };

describe('markers', () => {
    it('reads the marker from the top-level extra only', () => {
        const msg = imageMessage('J1', 'Alice');
        assert.equal(markerOf(msg), 'J1');
        const copy = reply('Alice', 'x', 'd');
        copy.swipe_info[0].extra.st_imagegen_job = 'J1'; // ST copies extra into swipe_info
        assert.equal(markerOf(copy), null);
        assert.equal(markerOf({ extra: { st_imagegen_job: '' } }), null);
        assert.equal(markerOf(null), null);
        assert.equal(findMarker([copy, msg], 'J1'), 1);
        assert.equal(findMarker([copy], 'J1'), -1);
    });
});

describe('identity', () => {
    it('uses the first swipe\'s start, stable across swipes', () => {
        const msg = reply('Alice', 'one', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:05.000Z');
        assert.equal(firstDate(msg), '2026-01-01T00:00:00.000Z');
        msg.swipes.push('two');
        msg.swipe_id = 1;
        msg.mes = 'two';
        msg.send_date = '2026-01-01T00:01:00.000Z';
        msg.gen_started = '2026-01-01T00:00:59.000Z';
        msg.swipe_info.push({ send_date: msg.send_date, gen_started: msg.gen_started, extra: {} });
        assert.equal(firstDate(msg), '2026-01-01T00:00:00.000Z');
    });

    it('falls back like the daemon: swipes_info (1.12), gen_started, send_date, numbers', () => {
        assert.equal(firstDate({ swipes_info: [{ send_date: 'a' }] }), 'a');
        assert.equal(firstDate({ gen_started: 'g', send_date: 's' }), 'g');
        assert.equal(firstDate({ gen_started: 'g', send_date: 's', swipes: ['a', 'b'] }), 's');
        assert.equal(firstDate({ send_date: 1716000000000.0 }), '1716000000000');
    });

    it('finds the reply by the mesid hint, else by searching (moved reply)', () => {
        const chat = aliceChat();
        assert.equal(findReply(chat, AFTER), 2);
        chat.splice(0, 0, userMessage('inserted above', 'x'));
        assert.equal(findReply(chat, AFTER), 3);
        assert.equal(findReply(chat, { ...AFTER, mesid: 99 }), 3);
        assert.equal(findReply(chat, { ...AFTER, name: 'Bob' }), -1);
    });
});

describe('revision', () => {
    it('is swipe_id and the first 16 hex digits of sha256(mes), as the daemon writes it', async () => {
        const msg = { mes: 'The glade glows. ✨', swipe_id: 1 };
        const expected = `1:${createHash('sha256').update('The glade glows. ✨', 'utf8').digest('hex').slice(0, 16)}`;
        assert.equal(await revisionOf(msg), expected);
        assert.equal((await revisionOf({ mes: 'x' })).split(':')[0], '0');
    });
});

describe('planInsert', () => {
    const payload = (id, after = AFTER) => ({ message: imageMessage(id, 'Alice'), after });

    it('inserts right after the reply when it is the last message', () => {
        const chat = aliceChat();
        assert.deepEqual(planInsert(chat, payload('J1')), { action: 'insert', index: 3, atEnd: true, replyIndex: 2 });
    });

    it('inserts mid-chat when the user already wrote after the reply', () => {
        const chat = aliceChat();
        chat.push(userMessage('next', 'n'));
        assert.deepEqual(planInsert(chat, payload('J1')), { action: 'insert', index: 3, atEnd: false, replyIndex: 2 });
    });

    it('goes after our image messages already following the reply (the daemon\'s order)', () => {
        const chat = aliceChat();
        chat.push(imageMessage('J0', 'Alice'), userMessage('next', 'n'));
        assert.equal(insertIndex(chat, 2), 4);
        assert.equal(planInsert(chat, payload('J1')).index, 4);
    });

    it('never makes a second copy', () => {
        const chat = aliceChat();
        chat.push(imageMessage('J1', 'Alice'));
        assert.deepEqual(planInsert(chat, payload('J1')), { action: 'skip', reason: 'present' });
    });

    it('finds a reply that moved (messages inserted above)', () => {
        const chat = aliceChat();
        chat.unshift(userMessage('a', 'a'), userMessage('b', 'b'));
        const plan = planInsert(chat, payload('J1'));
        assert.equal(plan.index, 5);
        assert.equal(plan.replyIndex, 4);
    });

    it('skips a reply that is gone (deleted, or another chat is open)', () => {
        const chat = aliceChat().slice(0, 2);
        assert.equal(planInsert(chat, payload('J1')).reason, 'reply-gone');
    });

    it('skips a reply shown in another revision (swiped): the image belongs to the old one', async () => {
        const chat = aliceChat();
        const before = await revisionOf(chat[2]);
        chat[2].swipes.push('Another text.');
        chat[2].swipe_id = 1;
        chat[2].mes = 'Another text.';
        const now = await revisionOf(chat[2]);
        assert.notEqual(before, now);
        assert.equal(planInsert(chat, payload('J1'), { revision: before, currentRevision: now }).reason, 'reply-changed');
        assert.equal(planInsert(chat, payload('J1'), { revision: before, currentRevision: before }).action, 'insert');
    });

    it('refuses a message without a marker', () => {
        const message = imageMessage('J1', 'Alice');
        delete message.extra.st_imagegen_job;
        assert.equal(planInsert(aliceChat(), { message, after: AFTER }).reason, 'bad-message');
    });

    it('clones exactly: the inserted object equals the daemon\'s, and is not shared', () => {
        const message = imageMessage('J1', 'Alice');
        const copy = cloneMessage(message);
        assert.deepEqual(copy, message);
        copy.extra.media.push({});
        assert.equal(message.extra.media.length, 1);
    });
});

describe('open chat', () => {
    const characters = [{ name: 'Alice', avatar: 'Alice.png', chat: 'Alice - 1' }];

    it('prefers getCurrentChatId (1.12.0 chatId is wrong for character 0)', () => {
        const ctx = { characters, characterId: 0, chatId: 0, getCurrentChatId: () => 'Alice - 1' };
        assert.deepEqual(openChatOf(ctx), { chatFile: 'Alice - 1', folder: 'Alice', isGroup: false, groupId: null });
        assert.equal(openChatOf({ characters, characterId: 0, chatId: 'Alice - 1' }).chatFile, 'Alice - 1');
        assert.equal(openChatOf({ characters, characterId: undefined, chatId: undefined }), null);
    });

    it('knows group chats', () => {
        const open = openChatOf({ characters, groupId: '1716000000000', chatId: '2026-05-20@12h00m00s123ms' });
        assert.deepEqual(open, { chatFile: '2026-05-20@12h00m00s123ms', folder: '', isGroup: true, groupId: '1716000000000' });
        assert.deepEqual(generateBody(open, { mesid: 3 }), { chat: '1716000000000', chat_file: '2026-05-20@12h00m00s123ms', force: false, mesid: 3 });
        assert.deepEqual(generateBody(open, { user: 'alice' }), { chat: 'alice/group chats/2026-05-20@12h00m00s123ms.jsonl', force: false });
        assert.ok(jobInChat(job('J', { is_group: true, chat_folder: '', chat_file: '2026-05-20@12h00m00s123ms' }), open));
        assert.ok(!jobInChat(job('J', { is_group: false, chat_folder: '', chat_file: '2026-05-20@12h00m00s123ms' }), open));
    });

    it('matches jobs by chat file, folder and (optionally) user', () => {
        const open = { chatFile: 'Alice - 2026-11-23@22h00m00s', folder: 'Alice', isGroup: false, groupId: null };
        assert.deepEqual(generateBody(open), { chat: 'Alice', chat_file: 'Alice - 2026-11-23@22h00m00s', force: false });
        assert.deepEqual(generateBody(open, { user: 'bob', force: true, mesid: 0 }), { chat: 'bob/chats/Alice/Alice - 2026-11-23@22h00m00s.jsonl', force: true, mesid: 0 });
        assert.ok(jobInChat(job('J'), open));
        assert.ok(jobInChat(job('J'), open, 'default-user'));
        assert.ok(!jobInChat(job('J'), open, 'other-user'));
        assert.ok(!jobInChat(job('J', { chat_folder: 'Bob' }), open));
        assert.ok(!jobInChat(job('J', { chat_file: 'Alice - 2' }), open));
        assert.ok(!jobInChat(job('J'), null));
    });
});

describe('CommitLedger', () => {
    it('inserts only jobs committed while the chat is open, each once', () => {
        const ledger = new CommitLedger();
        const key = chatKeyOf({ chatFile: 'a', folder: 'A', isGroup: false });
        ledger.reset(key, ['OLD']);
        assert.equal(ledger.wants(key, 'OLD'), false); // committed before: the file's business
        assert.equal(ledger.wants(key, 'NEW'), true);
        assert.equal(ledger.wants('c:B:b', 'NEW'), false); // another chat
        ledger.done('NEW');
        assert.equal(ledger.wants(key, 'NEW'), false);
    });
});

describe('vocabulary', () => {
    it('takes the daemon\'s states, groups and labels (GET /api/v1/meta) in place', () => {
        const before = [[...RUNNING_STATES], [...FINAL_STATES], { ...STATE_LABELS }];
        try {
            assert.equal(useVocabulary(null), false);
            assert.equal(useVocabulary({ groups: { active: 'queued' } }), false);
            assert.deepEqual(RUNNING_STATES, before[0]); // a bad answer changes nothing
            const meta = {
                groups: { active: ['queued', 'prompting', 'imaging', 'waiting'], final: ['committed', 'gone'] },
                labels: { waiting: 'waiting for a slot' },
            };
            assert.equal(useVocabulary(meta), true);
            assert.deepEqual(RUNNING_STATES, ['queued', 'prompting', 'imaging', 'waiting']);
            assert.deepEqual(FINAL_STATES, ['committed', 'gone']);
            assert.equal(STATE_LABELS.waiting, 'waiting for a slot');
        } finally {
            RUNNING_STATES.splice(0, Infinity, ...before[0]);
            FINAL_STATES.splice(0, Infinity, ...before[1]);
            for (const key of Object.keys(STATE_LABELS)) delete STATE_LABELS[key];
            Object.assign(STATE_LABELS, before[2]);
        }
    });
});
