// Shared test data: ST-shaped chats and daemon-shaped messages and jobs.
import { webcrypto } from 'node:crypto';

// Node 18 (Debian's package) has WebCrypto only as a module export, Node 20 as a global.
if (!globalThis.crypto) globalThis.crypto = webcrypto;

export function userMessage(text, date) {
    return { name: 'User', is_user: true, is_system: false, send_date: date, mes: text, extra: { isSmallSys: false, reasoning: '' } };
}

/** A generated reply after the browser rendered it (swipe fields added, as ST 1.18 does). */
export function reply(name, text, started, sent = started) {
    return {
        extra: { api: 'custom', model: 'mock-model' }, name, is_user: false, send_date: sent, mes: text, title: '',
        gen_started: started, gen_finished: sent,
        swipes: [text], swipe_id: 0,
        swipe_info: [{ send_date: sent, gen_started: started, gen_finished: sent, extra: { api: 'custom', model: 'mock-model' } }],
    };
}

/** The message the daemon writes (daemon/tavern/write.py build_image_message). */
export function imageMessage(jobId, name, url = `/user/images/${name}/${name}_${jobId}-1.png`) {
    return {
        name, is_user: false, is_system: true, send_date: '2026-11-23T22:07:14.327Z',
        mes: `[${name} sends a picture: a forest]`,
        extra: {
            image: url, title: 'a forest',
            media: [{ url, type: 'image', title: 'a forest', source: 'generated' }],
            media_display: 'gallery', media_index: 0, inline_image: false, st_imagegen_job: jobId,
        },
    };
}

export function job(id, overrides = {}) {
    return {
        id, short_id: id.slice(0, 10), state: 'pending', user: 'default-user',
        chat: 'default-user/chats/Alice/Alice - 2026-11-23@22h00m00s.jsonl',
        chat_file: 'Alice - 2026-11-23@22h00m00s', chat_folder: 'Alice', is_group: false,
        character: 'Alice', speaker: 'Alice', mesid: 2,
        identity: { name: 'Alice', send_date: '2026-11-23T22:06:11.428Z' },
        revision: null, excerpt: 'The glade glows.', source: 'auto', prompt: 'a forest', attempts: 1,
        last_error: null, images: [{ index: 1, name: 'image-1.png', thumb: `/api/v1/jobs/${id}/images/1?size=thumb`, full: `/api/v1/jobs/${id}/images/1` }],
        progress: null, st_url: null, ...overrides,
    };
}

/** A chat: greeting, user message, reply (index 2). */
export function aliceChat() {
    return [
        reply('Alice', 'Hello there, User.', '2026-11-23T22:00:00.000Z'),
        userMessage('Describe the scene.', '2026-11-23T22:06:11.100Z'),
        reply('Alice', 'The glade glows.', '2026-11-23T22:06:11.428Z', '2026-11-23T22:06:15.761Z'),
    ];
}
