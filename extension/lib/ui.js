// The extension's DOM: the live preview (ST popup or a non-blocking panel), the settings panel
// in the Extensions drawer, the message-menu button and toasts. Plain DOM APIs, no framework.

import { ApiError, normaliseBase } from './api.js';
import { messageLabel, plainExcerpt } from './text.js';
import { inboxUrl, pageUrl } from './settings.js';

/** The class of our button in each message's action menu (`.extraMesButtons`). */
export const BUTTON_CLASS = 'st-imagegen-gen';

function el(doc, tag, attrs = {}, ...children) {
    const node = doc.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === 'class') node.className = value;
        else if (key === 'text') node.textContent = value;
        else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
}

// --- live preview ------------------------------------------------------------------------------

/**
 * The preview of the open chat's pending jobs: one job at a time (the oldest), with its images,
 * prompt and the seed's five actions.
 * @param {object} deps
 * @param {() => any} deps.getContext
 * @param {ReturnType<import('./api.js').createApi>} deps.api
 * @param {() => Record<string, any>} deps.settings
 * @param {(what: string, job: any, value?: any) => Promise<any>} deps.act
 * @param {Document} [deps.doc]
 */
export function createPreview({ getContext, api, settings, act, doc = globalThis.document }) {
    /** @type {{kind: string, root: HTMLElement, close: () => void}|null} */
    let shell = null;
    let shownId = null;
    let objectUrls = [];
    let closing = false; // close() by the extension, not the user
    /** Jobs the user closed the preview of: not shown again (they stay pending for the inbox). */
    const dismissed = new Set();

    function releaseImages() {
        for (const url of objectUrls) URL.revokeObjectURL(url);
        objectUrls = [];
    }

    function openShell() {
        const ctx = getContext();
        const root = el(doc, 'div', { class: 'st-imagegen-preview', 'data-testid': 'st-imagegen-preview' });
        const mode = settings().previewMode;
        if (mode === 'popup' && (ctx.Popup || ctx.callGenericPopup)) {
            let popup = null;
            let byUs = false;
            const onClosed = () => {
                // ST's Popup resolves show() after completeCancelled() returns, when `closing`
                // is long reset: without byUs a chat switch would count as the user's dismissal.
                if (!closing && !byUs && root.dataset.job) dismissed.add(root.dataset.job);
                if (shell && shell.root === root) {
                    shell = null;
                    shownId = null;
                    releaseImages();
                }
            };
            if (ctx.Popup) {
                const type = ctx.POPUP_TYPE?.TEXT ?? 1;
                popup = new ctx.Popup(root, type, '', { okButton: 'Close', cancelButton: false, wide: true, allowVerticalScrolling: true });
                popup.show().then(onClosed, onClosed);
            } else {
                ctx.callGenericPopup(root, 1, '', { okButton: 'Close', wide: true }).then(onClosed, onClosed);
            }
            return {
                kind: 'popup', root, close() {
                    byUs = true;
                    if (popup && typeof popup.completeCancelled === 'function') popup.completeCancelled();
                    else {
                        // 1.12.0 has no Popup in the context: click the OK of its shadow_popup.
                        const dialog = root.closest('dialog, .popup, .shadow_popup');
                        const button = dialog?.querySelector('.popup-button-ok, .dialogue_popup_ok');
                        if (button) button.click();
                        else root.remove();
                    }
                    onClosed();
                },
            };
        }
        const panel = el(doc, 'div', { id: 'st-imagegen-panel', class: 'st-imagegen-panel' },
            el(doc, 'div', {
                class: 'st-imagegen-panel-close fa-solid fa-xmark', title: 'Hide (the job stays pending)', role: 'button',
                onclick: () => {
                    if (root.dataset.job) dismissed.add(root.dataset.job);
                    current?.close();
                },
            }),
            root);
        doc.body.append(panel);
        const current = {
            kind: 'panel', root, close() {
                panel.remove();
                if (shell === current) {
                    shell = null;
                    shownId = null;
                    releaseImages();
                }
            },
        };
        return current;
    }

    function render(job, count) {
        const root = shell.root;
        releaseImages();
        root.replaceChildren();
        root.dataset.job = job.id;
        const head = el(doc, 'div', { class: 'st-imagegen-head' },
            el(doc, 'b', { text: 'st-imagegen' }),
            el(doc, 'span', { text: ` · ${job.speaker || job.character || ''}${job.group_name ? ` (${job.group_name})` : ''} · ${messageLabel(job)}` }),
            count > 1 ? el(doc, 'span', { class: 'st-imagegen-count', text: ` · 1 of ${count} pending` }) : null);
        const images = el(doc, 'div', { class: 'st-imagegen-images' });
        for (const image of job.images ?? []) {
            const img = el(doc, 'img', { alt: `image ${image.index}`, title: 'click to choose or unchoose' });
            const box = el(doc, 'input', { type: 'checkbox', checked: true, 'data-index': image.index, title: `keep image ${image.index}` });
            const label = el(doc, 'label', { class: 'st-imagegen-image' }, img, box);
            images.append(label);
            api.imageUrl(image.thumb || image.full).then(url => {
                if (root.dataset.job !== job.id) return URL.revokeObjectURL(url);
                objectUrls.push(url);
                img.src = url;
            }, error => {
                img.replaceWith(el(doc, 'div', { class: 'st-imagegen-noimage', text: `image ${image.index}: ${error.message}` }));
            });
        }
        const prompt = el(doc, 'textarea', { class: 'st-imagegen-prompt text_pole', rows: 4, 'aria-label': 'prompt' });
        prompt.value = job.prompt ?? '';
        // ST shows the reply rendered; its markdown markers read as noise here (text only, never HTML).
        const excerpt = job.excerpt ? el(doc, 'div', { class: 'st-imagegen-excerpt', text: plainExcerpt(job.excerpt) }) : null;
        const status = el(doc, 'div', { class: 'st-imagegen-status' });
        const buttons = el(doc, 'div', { class: 'st-imagegen-buttons' });
        const chosen = () => [...images.querySelectorAll('input[type=checkbox]')].filter(b => b.checked).map(b => Number(b.dataset.index));
        const actions = [
            ['accept', 'Accept', 'fa-check', () => act('accept', job)],
            ['accept-chosen', 'Accept chosen', 'fa-list-check', () => {
                const keep = chosen();
                if (!keep.length) {
                    status.textContent = 'Choose at least one image.';
                    return Promise.resolve(null);
                }
                return act('accept', job, keep);
            }],
            ['reject', 'Reject', 'fa-xmark', () => act('reject', job)],
            ['regen', 'Regenerate', 'fa-rotate', () => act('regen', job)],
            ['regen-edited', 'Regenerate with edited prompt', 'fa-pen', () => act('regen', job, prompt.value.trim() || undefined)],
        ];
        // Two rows that keep together (decide | try again): no button wraps alone onto a line.
        const rows = [el(doc, 'div', { class: 'st-imagegen-button-row' }), el(doc, 'div', { class: 'st-imagegen-button-row' })];
        buttons.append(...rows);
        const all = () => [...buttons.querySelectorAll?.('.menu_button') ?? []];
        for (const [name, label, icon, run] of actions) {
            const row = name.startsWith('regen') ? rows[1] : rows[0];
            row.append(el(doc, 'div', {
                class: `menu_button st-imagegen-${name}`, role: 'button', tabindex: 0, 'data-action': name,
                onclick: async () => {
                    for (const b of all()) b.classList.add('disabled');
                    status.textContent = `${label}…`;
                    const result = await run();
                    if (result === null) {
                        for (const b of all()) b.classList.remove('disabled');
                        if (status.textContent === `${label}…`) status.textContent = '';
                    }
                },
            }, el(doc, 'i', { class: `fa-solid ${icon}` }), el(doc, 'span', { text: ` ${label}` })));
        }
        root.append(head, images, el(doc, 'label', { class: 'st-imagegen-label', text: 'Prompt' }), prompt, excerpt, buttons, status);
    }

    return {
        /** Show the oldest of `jobs` (all pending, of the open chat). */
        showPending(all) {
            const jobs = all.filter(j => !dismissed.has(j.id));
            const job = jobs[0];
            if (!job) return this.close();
            if (!shell) shell = openShell();
            if (shownId === job.id) {
                const count = shell.root.querySelector('.st-imagegen-count');
                if (count) count.textContent = jobs.length > 1 ? ` · 1 of ${jobs.length} pending` : '';
                return undefined;
            }
            shownId = job.id;
            render(job, jobs.length);
            return undefined;
        },
        close() {
            const current = shell;
            shell = null;
            shownId = null;
            closing = true;
            try {
                current?.close();
            } finally {
                closing = false;
            }
            releaseImages();
        },
        /** The job is pending again (revived, retried, asked for): offer it even if closed before. */
        offerAgain(id) {
            dismissed.delete(id);
        },
        get shown() {
            return shownId;
        },
    };
}

// --- toasts -----------------------------------------------------------------------------------

/**
 * Toastr options for every toast: the text is daemon-supplied (an API's error body, a prompt) and
 * toastr renders HTML unless told otherwise; ST sets escapeHtml globally only from 1.12.2.
 */
export const TOAST_SAFE = Object.freeze({ escapeHtml: true });

/**
 * Toasts through ST's global toastr. A user action (one job, or a job and its regenerations) has
 * one toast under its key: progress updates it in place, the end replaces it.
 * @param {any} toastr
 */
export function createToasts(toastr) {
    const open = new Map();
    const title = 'st-imagegen';
    const alive = toast => !!toast && (!toast.closest || !!toast.closest('body'));
    const show = (kind, text, extra = {}) => {
        const fn = toastr[kind] ?? toastr.info;
        const toast = fn.call(toastr, String(text), title, { ...extra, ...TOAST_SAFE });
        return toast?.[0] ?? toast;
    };
    const drop = key => {
        const existing = open.get(key);
        if (existing) {
            if (alive(existing)) toastr.clear(globalThis.jQuery ? globalThis.jQuery(existing) : existing);
            open.delete(key);
        }
    };
    return {
        progress(key, text) {
            const existing = open.get(key);
            if (existing && existing.kind === 'progress' && alive(existing.toast)) {
                const body = existing.toast.querySelector?.('.toast-message');
                if (body) {
                    body.textContent = text;
                    return;
                }
            }
            drop(key);
            open.set(key, { kind: 'progress', toast: show('info', text, { timeOut: 0, extendedTimeOut: 0, tapToDismiss: true }) });
        },
        finish(key, kind, text) {
            const existing = open.get(key);
            if (existing && alive(existing.toast)) toastr.clear(globalThis.jQuery ? globalThis.jQuery(existing.toast) : existing.toast);
            open.set(key, { kind, toast: show(kind, text) });
        },
        error: text => show('error', text),
        info: text => show('info', text),
        warning: text => show('warning', text),
    };
}

// --- settings panel ---------------------------------------------------------------------------

/**
 * The settings panel in the Extensions drawer (ST's inline-drawer markup, so ST's own click
 * handler opens and closes it).
 * @param {object} deps
 * @param {Record<string, any>} deps.settings the live settings object
 * @param {() => void} deps.save `saveSettingsDebounced`
 * @param {() => void} deps.reconnect settings that change the connection were edited
 * @param {ReturnType<import('./api.js').createApi>} deps.api
 * @param {() => ({chatFile: string}|null)} [deps.openChat] the chat open in the tab
 * @param {Document} [deps.doc]
 */
export function createSettingsPanel({ settings, save, reconnect, api, openChat = () => null, doc = globalThis.document }) {
    const address = el(doc, 'input', { id: 'st_imagegen_address', class: 'text_pole', type: 'text', placeholder: 'http://127.0.0.1:8765' });
    address.value = settings.address;
    const token = el(doc, 'input', { id: 'st_imagegen_token', class: 'text_pole', type: 'password', autocomplete: 'off', placeholder: 'only when the daemon asks for one' });
    token.value = settings.token;
    const user = el(doc, 'input', { id: 'st_imagegen_user', class: 'text_pole', type: 'text', placeholder: 'any' });
    user.value = settings.user;
    const dot = el(doc, 'span', { class: 'st-imagegen-dot', 'data-state': 'stopped' });
    const state = el(doc, 'span', { id: 'st_imagegen_state', text: 'not connected' });
    const lastError = el(doc, 'div', { id: 'st_imagegen_error', class: 'st-imagegen-error' });
    const live = el(doc, 'input', { id: 'st_imagegen_live', type: 'checkbox', checked: settings.livePreview });
    const toasts = el(doc, 'input', { id: 'st_imagegen_toasts', type: 'checkbox', checked: settings.progressToasts });
    const mode = el(doc, 'select', { id: 'st_imagegen_mode', class: 'text_pole' },
        el(doc, 'option', { value: 'popup', text: 'popup' }), el(doc, 'option', { value: 'panel', text: 'panel (non-blocking)' }));
    mode.value = settings.previewMode;

    let timer = null;
    const connectionChanged = () => {
        settings.address = address.value.trim();
        settings.token = token.value.trim();
        settings.user = user.value.trim();
        save();
        clearTimeout(timer);
        timer = setTimeout(reconnect, 600); // typing: reconnect once it stops
    };
    address.addEventListener('input', () => {
        settings.addressEdited = true;
        connectionChanged();
    });
    token.addEventListener('input', () => {
        settings.tokenEdited = true;
        connectionChanged();
    });
    user.addEventListener('input', connectionChanged);
    live.addEventListener('change', () => { settings.livePreview = live.checked; save(); });
    toasts.addEventListener('change', () => { settings.progressToasts = toasts.checked; save(); });
    mode.addEventListener('change', () => { settings.previewMode = mode.value; save(); });

    const test = el(doc, 'div', {
        class: 'menu_button', id: 'st_imagegen_test', role: 'button', text: 'Test connection',
        onclick: async () => {
            try {
                const status = await api.status();
                lastError.textContent = '';
                state.textContent = `daemon ${status?.version ?? '?'} reachable`;
            } catch (error) {
                lastError.textContent = error instanceof ApiError ? error.message : String(error);
            }
        },
    });
    const inbox = el(doc, 'div', {
        class: 'menu_button', id: 'st_imagegen_inbox', role: 'button', text: 'Open the web inbox',
        onclick: () => {
            const url = inboxUrl(settings, normaliseBase);
            if (url) globalThis.open(url, '_blank', 'noopener');
        },
    });
    const openSettings = el(doc, 'div', {
        class: 'menu_button', id: 'st_imagegen_open_settings', role: 'button', text: 'Open st-imagegen settings',
        onclick: () => {
            const url = pageUrl(settings, normaliseBase, '/settings');
            if (url) globalThis.open(url, '_blank', 'noopener');
        },
    });
    // Not set up yet: the daemon draws nothing until its setup screen is filled in.
    const setupLink = el(doc, 'a', { id: 'st_imagegen_setup_link', target: '_blank', rel: 'noopener', text: 'open the setup' });
    const setup = el(doc, 'div', { id: 'st_imagegen_setup', class: 'st-imagegen-error', hidden: true },
        el(doc, 'span', { text: 'st-imagegen is not set up yet: ' }), setupLink);
    // The essentials, inline (the daemon applies them at once; the admin's token only).
    const daemonMode = el(doc, 'select', { id: 'st_imagegen_daemon_mode', class: 'text_pole', disabled: true },
        el(doc, 'option', { value: 'auto', text: 'every new reply' }), el(doc, 'option', { value: 'manual', text: 'only the ones I ask for' }));
    const approval = el(doc, 'select', { id: 'st_imagegen_approval', class: 'text_pole', disabled: true },
        el(doc, 'option', { value: 'manual', text: 'I accept each picture first' }), el(doc, 'option', { value: 'auto', text: 'straight into the chat' }));
    const essentialsNote = el(doc, 'div', { id: 'st_imagegen_essentials_note', class: 'st-imagegen-error' });
    const saveEssential = async (key, select) => {
        try {
            await api.saveSettings({ [key]: select.value });
            essentialsNote.textContent = '';
        } catch (error) {
            essentialsNote.textContent = error instanceof ApiError ? error.message : String(error);
        }
    };
    // Pause this chat: its chat id comes from the open chat (deps.openChat), the switch's
    // state from the daemon's status (paused.chats holds chat paths).
    const pauseChat = el(doc, 'input', { id: 'st_imagegen_pause_chat', type: 'checkbox', disabled: true });
    pauseChat.addEventListener('change', async () => {
        const open = openChat();
        if (!open) return;
        try {
            await api.pauseChat(open.chatFile, pauseChat.checked);
            essentialsNote.textContent = '';
        } catch (error) {
            pauseChat.checked = !pauseChat.checked;
            essentialsNote.textContent = error instanceof ApiError ? error.message : String(error);
        }
    });
    daemonMode.addEventListener('change', () => saveEssential('mode', daemonMode));
    approval.addEventListener('change', () => saveEssential('approval', approval));
    const row = (...children) => el(doc, 'div', { class: 'st-imagegen-row' }, ...children);
    const root = el(doc, 'div', { class: 'st-imagegen-settings' },
        el(doc, 'div', { class: 'inline-drawer' },
            el(doc, 'div', { class: 'inline-drawer-toggle inline-drawer-header' },
                el(doc, 'b', { text: 'st-imagegen' }),
                el(doc, 'div', { class: 'inline-drawer-icon fa-solid fa-circle-chevron-down down' })),
            el(doc, 'div', { class: 'inline-drawer-content' },
                el(doc, 'label', { for: 'st_imagegen_address', text: 'Daemon address' }), address,
                el(doc, 'label', { for: 'st_imagegen_token', text: 'Token' }), token,
                row(dot, state), lastError, setup,
                row(test, inbox, openSettings),
                row(el(doc, 'label', { for: 'st_imagegen_daemon_mode', text: 'Illustrate' }), daemonMode),
                row(el(doc, 'label', { for: 'st_imagegen_approval', text: 'Approval' }), approval),
                row(pauseChat, el(doc, 'label', { for: 'st_imagegen_pause_chat', text: 'Pause illustrating this chat' })),
                essentialsNote,
                row(live, el(doc, 'label', { for: 'st_imagegen_live', text: 'Live preview of new images' })),
                row(el(doc, 'label', { for: 'st_imagegen_mode', text: 'Show the preview as' }), mode),
                row(toasts, el(doc, 'label', { for: 'st_imagegen_toasts', text: 'Progress toasts for images I start' })),
                el(doc, 'label', { for: 'st_imagegen_user', text: 'SillyTavern user (optional: only this user\'s jobs)' }), user)));

    return {
        root,
        /**
         * @param {string} connection connecting | connected | disconnected | stopped
         * @param {{version?: string, error?: Error|string, delay?: number}} [detail]
         */
        setConnection(connection, detail = {}) {
            dot.dataset.state = connection;
            if (connection === 'connected') {
                state.textContent = `connected · daemon ${detail.version ?? '?'}`;
                lastError.textContent = '';
            } else if (connection === 'connecting') {
                state.textContent = 'connecting…';
            } else if (connection === 'disconnected') {
                const seconds = Math.round((detail.delay ?? 0) / 1000);
                state.textContent = `disconnected · retrying in ${seconds} s`;
                const message = detail.error instanceof Error ? detail.error.message : String(detail.error ?? '');
                lastError.textContent = `last error: ${message}`;
            } else {
                state.textContent = 'not connected';
            }
        },
        /**
         * What the daemon's status says: not set up yet (with the way to its setup screen), and
         * the essentials' current values.
         * @param {Record<string, any>} status the answer of GET /api/v1/status
         */
        setDaemon(status) {
            const needed = Array.isArray(status?.setup_needed) ? status.setup_needed : [];
            setup.hidden = needed.length === 0;
            setupLink.href = pageUrl(settings, normaliseBase, '/setup');
            setupLink.textContent = `open ${normaliseBase(settings.address)}/setup`;
            const open = openChat();
            const chats = Array.isArray(status?.paused?.chats) ? status.paused.chats : [];
            pauseChat.disabled = !open;
            pauseChat.checked = Boolean(open && chats.some(c => String(c).endsWith(`/${open.chatFile}.jsonl`)));
            for (const [select, value] of [[daemonMode, status?.mode], [approval, status?.approval]]) {
                if (typeof value === 'string') {
                    select.value = value;
                    select.disabled = false;
                }
            }
        },
    };
}

/**
 * Put our button into each message's action menu: into ST's message template (messages rendered
 * later are clones of it) and into the messages already shown.
 * @param {Document} [doc]
 */
export function addMessageButtons(doc = globalThis.document) {
    const make = () => el(doc, 'div', {
        // Not ST's own paintbrush (its image generation sits beside it): a wand over a picture.
        class: `mes_button ${BUTTON_CLASS} fa-solid fa-wand-magic-sparkles`,
        title: 'Illustrate with st-imagegen', 'data-i18n': '[title]Illustrate with st-imagegen',
    });
    const template = doc.querySelector('#message_template .extraMesButtons');
    if (template && !template.querySelector(`.${BUTTON_CLASS}`)) template.prepend(make());
    for (const menu of doc.querySelectorAll('#chat .mes .extraMesButtons')) {
        if (!menu.querySelector(`.${BUTTON_CLASS}`)) menu.prepend(make());
    }
}
