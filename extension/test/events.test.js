import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { BACKOFF_MAX_MS, EventStreamClient, SSEParser, backoffDelay } from '../lib/events.js';

describe('SSEParser', () => {
    it('parses the daemon\'s events split anywhere, with comments, CRLF and multi-line data', () => {
        const got = [];
        const comments = [];
        const parser = new SSEParser(e => got.push(e), { onComment: c => comments.push(c) });
        const text = 'id: 1\nevent: hello\ndata: {"version":"0.1.0","api":1}\n\n: ping\n\nid: 2\r\nevent: job\r\ndata: {"a":\r\ndata: 1}\r\n\r\n';
        for (const ch of text) parser.feed(ch); // one character at a time: every split point
        assert.deepEqual(got, [
            { type: 'hello', data: '{"version":"0.1.0","api":1}', id: '1' },
            { type: 'job', data: '{"a":\n1}', id: '2' },
        ]);
        assert.deepEqual(comments, ['ping']);
    });

    it('an event without data is not dispatched; a lone CR ends a line', () => {
        const got = [];
        const parser = new SSEParser(e => got.push(e));
        parser.feed('event: x\n\ndata: a\rdata: b\r\r');
        assert.deepEqual(got, [{ type: 'message', data: 'a\nb', id: '' }]);
    });
});

describe('backoff', () => {
    it('doubles from 1 s to the cap, with jitter down to half', () => {
        assert.equal(backoffDelay(0, { random: () => 1 }), 1000);
        assert.equal(backoffDelay(3, { random: () => 1 }), 8000);
        assert.equal(backoffDelay(40, { random: () => 1 }), BACKOFF_MAX_MS);
        assert.equal(backoffDelay(3, { random: () => 0 }), 4000);
    });
});

/** A fetch whose answers the test scripts: each call takes the next entry. */
function scriptedFetch(script) {
    const calls = [];
    const fetch = async (url, init) => {
        calls.push({ url, headers: { ...init.headers } });
        const step = script.shift();
        if (!step || step === 'down') throw new TypeError('Failed to fetch');
        const chunks = [...step];
        const encoder = new TextEncoder();
        return {
            ok: true, status: 200,
            body: {
                getReader: () => ({
                    read: async () => (chunks.length ? { value: encoder.encode(chunks.shift()), done: false } : { value: undefined, done: true }),
                }),
            },
        };
    };
    return { fetch, calls };
}

describe('EventStreamClient', () => {
    it('reconnects with growing delays, resumes with Last-Event-ID, resets the back-off on hello', async () => {
        const { fetch, calls } = scriptedFetch([
            ['id: 4\nevent: hello\ndata: {"version":"1"}\n\n', 'id: 5\nevent: job\ndata: {"job":{"id":"J"}}\n\n'],
            'down',
            'down',
            ['id: 1\nevent: hello\ndata: {"version":"2"}\n\n'],
        ]);
        const timers = [];
        const events = [];
        const states = [];
        const client = new EventStreamClient({
            url: () => 'http://d/api/v1/events', headers: () => ({ Authorization: 'Bearer t' }),
            onEvent: e => events.push([e.type, e.data]), onState: (s, d) => states.push([s, d?.delay]),
            fetch, setTimeout: (fn, ms) => { timers.push([fn, ms]); return timers.length; }, clearTimeout: () => {}, random: () => 1,
        });
        client.start();
        const settle = () => new Promise(resolve => setImmediate(resolve));
        await settle();
        const fire = async () => {
            const [fn] = timers.filter(t => t[1] !== client.stallMs).shift();
            timers.splice(timers.findIndex(t => t[0] === fn), 1);
            fn();
            await settle();
        };
        assert.deepEqual(events, [['hello', { version: '1' }], ['job', { job: { id: 'J' } }]]);
        assert.deepEqual(states.filter(s => s[0] === 'disconnected').map(s => s[1]), [1000]); // closed after a hello: back to 1 s
        await fire();
        await fire();
        assert.deepEqual(states.filter(s => s[0] === 'disconnected').map(s => s[1]), [1000, 2000, 4000]);
        await fire();
        assert.deepEqual(events.at(-1), ['hello', { version: '2' }]);
        assert.equal(calls[0].headers['Last-Event-ID'], undefined);
        assert.equal(calls[1].headers['Last-Event-ID'], '5');
        assert.equal(calls[3].headers.Authorization, 'Bearer t');
        assert.equal(client.attempt, 1); // reset by the hello, then one close
        client.stop();
        assert.equal(client.state, 'stopped');
    });
});
