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
