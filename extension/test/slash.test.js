import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseGenimageArgs } from '../lib/slash.js';
import { DEFAULTS, SETTINGS_KEY, inboxUrl, loadSettings } from '../lib/settings.js';
import { ApiError, createApi, jobsQuery, normaliseBase } from '../lib/api.js';

describe('/genimage arguments', () => {
    it('takes mesid=N, a bare number, or nothing (the last reply)', () => {
        assert.deepEqual(parseGenimageArgs({ mesid: '1' }, ''), { mesid: 1, force: false });
        assert.deepEqual(parseGenimageArgs({ mesid: 5 }, ''), { mesid: 5, force: false }); // typed NUMBER
        assert.deepEqual(parseGenimageArgs({}, ' 3 '), { mesid: 3, force: false });
        assert.deepEqual(parseGenimageArgs({}, ''), { mesid: null, force: false });
        assert.deepEqual(parseGenimageArgs({ force: 'true' }, ''), { mesid: null, force: true });
        assert.deepEqual(parseGenimageArgs(undefined, undefined), { mesid: null, force: false });
    });

    it('reads mesid= and force= typed after the number (ST passes them as unnamed text)', () => {
        // Seen in SillyTavern 1.18: `/genimage 2 force=true` gives unnamed "2 force=true".
        assert.deepEqual(parseGenimageArgs({}, '2 force=true'), { mesid: 2, force: true });
        assert.deepEqual(parseGenimageArgs({}, 'force=on mesid=4'), { mesid: 4, force: true });
        // ST filled force with its default 'false'; what the user typed wins.
        assert.deepEqual(parseGenimageArgs({ force: 'false' }, '3 force=true'), { mesid: 3, force: true });
        assert.throws(() => parseGenimageArgs({}, '2 size=big'), /got "2 size=big"/);
    });

    it('refuses what is not a message number with a sentence', () => {
        assert.throws(() => parseGenimageArgs({ mesid: '-1' }), /mesid wants a message number from 0 \(got "-1"\)/);
        assert.throws(() => parseGenimageArgs({}, 'last'), /got "last"/);
    });
});

describe('settings', () => {
    it('fills defaults in place and repairs wrong types, keeping what is valid', () => {
        const all = { [SETTINGS_KEY]: { address: 'http://box:9000', livePreview: 'yes', previewMode: 'tab' } };
        const s = loadSettings(all);
        assert.equal(all[SETTINGS_KEY], s);
        assert.equal(s.address, 'http://box:9000');
        assert.equal(s.livePreview, DEFAULTS.livePreview);
        assert.equal(s.previewMode, 'popup');
        assert.deepEqual(loadSettings({}), { ...DEFAULTS });
    });

    it('opens the inbox with the token as its login link', () => {
        assert.equal(inboxUrl({ address: '127.0.0.1:8765/', token: '' }, normaliseBase), 'http://127.0.0.1:8765/');
        assert.equal(inboxUrl({ address: 'http://h:1', token: 'a b' }, normaliseBase), 'http://h:1/?token=a%20b');
        assert.equal(inboxUrl({ address: ' ', token: 'x' }, normaliseBase), '');
    });
});

describe('api client', () => {
    it('sends the token, JSON bodies, and turns the daemon\'s errors into one sentence', async () => {
        const seen = [];
        const fetch = async (url, init) => {
            seen.push({ url, init });
            if (url.endsWith('/accept')) {
                return { ok: false, status: 409, text: async () => JSON.stringify({ error: { code: 'conflict', message: 'cannot accept job J: it is accepted' } }) };
            }
            return { ok: true, status: 200, text: async () => '{"jobs":[],"next":null}' };
        };
        const api = createApi({ base: () => 'localhost:8765/', token: () => 'tok', fetch });
        await api.jobs({ chat_file: 'A - 1', state: ['pending', 'imaging'], limit: 5 });
        assert.equal(seen[0].url, 'http://localhost:8765/api/v1/jobs?chat_file=A+-+1&state=pending&state=imaging&limit=5');
        assert.equal(seen[0].init.headers.Authorization, 'Bearer tok');
        await assert.rejects(api.accept('J', [1, 3]), e => e instanceof ApiError && e.status === 409 && e.message === 'cannot accept job J: it is accepted');
        assert.equal(seen[1].init.body, '{"keep":[1,3]}');
        assert.equal(seen[1].init.headers['Content-Type'], 'application/json');
        assert.equal(jobsQuery({}), '');
    });

    it('a daemon that is down is one clear sentence, not a TypeError', async () => {
        const api = createApi({ base: () => 'http://127.0.0.1:1', token: () => '', fetch: async () => { throw new TypeError('Failed to fetch'); } });
        await assert.rejects(api.status(), e => e instanceof ApiError && e.status === 0 && /is not reachable/.test(e.message));
        const none = createApi({ base: () => '', token: () => '' });
        await assert.rejects(none.status(), /no daemon address is set/);
    });
});

describe('/genimage cancel', () => {
    it('asks to cancel, by word or named argument, and nothing else', () => {
        assert.deepEqual(parseGenimageArgs({}, 'cancel'), { mesid: null, force: false, cancel: true });
        assert.deepEqual(parseGenimageArgs({ cancel: 'true' }, ''), { mesid: null, force: false, cancel: true });
        assert.deepEqual(parseGenimageArgs({}, '5 cancel=yes'), { mesid: null, force: false, cancel: true });
        assert.deepEqual(parseGenimageArgs({ cancel: 'false' }, '4'), { mesid: 4, force: false });
    });
});
