import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { job } from './helpers.js';
import { createPreview } from '../lib/ui.js';

/** Just enough of a DOM element for the preview's markup. */
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

const fakeDocument = { createElement: tag => new FakeElement(tag), body: new FakeElement('body') };

/** ST 1.18's Popup as the extension sees it: show() settles only after completeCancelled() returned. */
function fakePopupClass(opened) {
    return class {
        constructor(content) {
            this.content = content;
            opened.push(this);
        }
        show() {
            return new Promise(resolve => { this.resolve = resolve; });
        }
        completeCancelled() {
            setTimeout(() => this.resolve(null), 0);
        }
    };
}

describe('preview popup', () => {
    it('shows a job again after the extension (not the user) closed its popup', async () => {
        // Seen in SillyTavern 1.18: switching chats away and back hid the pending job for good.
        const opened = [];
        const ctx = { Popup: fakePopupClass(opened), POPUP_TYPE: { TEXT: 1 } };
        const preview = createPreview({
            getContext: () => ctx, api: { imageUrl: () => new Promise(() => {}) },
            settings: () => ({ previewMode: 'popup' }), act: async () => ({}), doc: fakeDocument,
        });
        const pending = job('01JOB');
        preview.showPending([pending]);
        assert.equal(opened.length, 1);
        preview.close(); // CHAT_CHANGED
        await new Promise(resolve => setTimeout(resolve, 5)); // ST settles show() now
        preview.showPending([pending]); // the chat is open again
        assert.equal(opened.length, 2);
        assert.equal(preview.shown, '01JOB');
    });

    it('does not show a job again once the user closed its popup', async () => {
        const opened = [];
        const ctx = { Popup: fakePopupClass(opened), POPUP_TYPE: { TEXT: 1 } };
        const preview = createPreview({
            getContext: () => ctx, api: { imageUrl: () => new Promise(() => {}) },
            settings: () => ({ previewMode: 'popup' }), act: async () => ({}), doc: fakeDocument,
        });
        const pending = job('01JOB');
        preview.showPending([pending]);
        opened[0].resolve(null); // the user pressed Close
        await new Promise(resolve => setTimeout(resolve, 5));
        preview.showPending([pending]);
        assert.equal(opened.length, 1);
        assert.equal(preview.shown, null);
    });
});

describe('settings panel: the daemon\'s setup and essentials', () => {
    const find = (node, id) => {
        if (node.attributes?.id === id) return node;
        for (const child of node.children ?? []) {
            const found = typeof child === 'object' ? find(child, id) : null;
            if (found) return found;
        }
        return null;
    };

    it('says "not set up yet" with the setup address, and shows the daemon\'s mode and approval', async () => {
        const { createSettingsPanel } = await import('../lib/ui.js');
        const settings = { address: 'http://127.0.0.1:8765/', token: 'tok en', user: '', livePreview: true, progressToasts: true, previewMode: 'popup' };
        const panel = createSettingsPanel({ settings, save() {}, reconnect() {}, api: {}, openChat: () => ({ chatFile: 'Alice - one' }), doc: fakeDocument });
        const setup = find(panel.root, 'st_imagegen_setup');
        assert.equal(setup.attributes.hidden, '');
        panel.setDaemon({ setup_needed: ['image service'], mode: 'manual', approval: 'auto', paused: { chats: ['default-user/chats/Alice/Alice - one.jsonl'] } });
        assert.equal(setup.hidden, false);
        assert.equal(find(panel.root, 'st_imagegen_pause_chat').checked, true);
        const link = find(panel.root, 'st_imagegen_setup_link');
        assert.equal(link.href, 'http://127.0.0.1:8765/setup?token=tok%20en');
        assert.equal(link.textContent, 'open http://127.0.0.1:8765/setup');
        const mode = find(panel.root, 'st_imagegen_daemon_mode');
        assert.equal(mode.value, 'manual');
        assert.equal(mode.disabled, false);
        assert.equal(find(panel.root, 'st_imagegen_approval').value, 'auto');
        panel.setDaemon({ setup_needed: [], mode: 'auto', approval: 'manual', paused: { chats: ['default-user/chats/Bob/Alice - one2.jsonl'] } });
        assert.equal(setup.hidden, true);
        assert.equal(find(panel.root, 'st_imagegen_pause_chat').checked, false);
    });

    it('opens the settings page through the login link when a token is set', async () => {
        const { pageUrl } = await import('../lib/settings.js');
        const { normaliseBase } = await import('../lib/api.js');
        assert.equal(pageUrl({ address: 'http://h:1', token: '' }, normaliseBase, '/settings'), 'http://h:1/settings');
        assert.equal(pageUrl({ address: 'http://h:1', token: 'x' }, normaliseBase, '/settings'), 'http://h:1/settings?token=x');
        assert.equal(pageUrl({ address: '', token: 'x' }, normaliseBase, '/settings'), '');
    });
});
