// The extension's settings, kept in ST's extension_settings['st-imagegen'] (saved with the
// user's settings.json through saveSettingsDebounced).

import { INSTALLED } from './installed.js';

/** The key in `extension_settings`. */
export const SETTINGS_KEY = 'st-imagegen';

/** The daemon's default address (`web.host`/`web.port` defaults). */
export const DEFAULT_ADDRESS = 'http://127.0.0.1:8765';

/** Defaults of every setting; a stored value of another type is replaced by its default. */
export const DEFAULTS = Object.freeze({
    address: DEFAULT_ADDRESS,
    token: '',
    livePreview: true,
    previewMode: 'popup', // 'popup' (ST's modal) | 'panel' (non-blocking, bottom right)
    user: '', // ST user handle whose chats this tab shows; '' = match by chat only
    progressToasts: true,
    addressEdited: false, // the user typed an address: the install's no longer replaces it
    tokenEdited: false, // the user typed a token: the install's no longer replaces it
});

const MODES = new Set(['popup', 'panel']);

/**
 * The settings object inside `extensionSettings`, created or repaired in place (ST keeps the
 * object, so later edits are saved with it). The address the install wrote wins over a stored
 * one the user never typed (an earlier install's, or the default).
 * @param {Record<string, any>} extensionSettings `context.extensionSettings`
 * @param {{address?: string, token?: string}} [installed] what the install knew (lib/installed.js)
 */
export function loadSettings(extensionSettings, installed = INSTALLED) {
    const current = extensionSettings[SETTINGS_KEY];
    const settings = current && typeof current === 'object' && !Array.isArray(current) ? current : {};
    for (const [key, value] of Object.entries(DEFAULTS)) {
        if (typeof settings[key] !== typeof value) settings[key] = value;
    }
    if (!MODES.has(settings.previewMode)) settings.previewMode = DEFAULTS.previewMode;
    const given = typeof installed?.address === 'string' ? installed.address.trim() : '';
    if (given && !settings.addressEdited) settings.address = given;
    // A per-user install holds that user's token: it wins until the user types one.
    const token = typeof installed?.token === 'string' ? installed.token.trim() : '';
    if (token && !settings.tokenEdited) settings.token = token;
    extensionSettings[SETTINGS_KEY] = settings;
    return settings;
}

/**
 * The web inbox's address; with a token, the login link (`/?token=` sets the cookie and
 * redirects to `/` without it).
 * @param {{address: string, token: string}} settings
 * @param {(text: string) => string} normalise
 */
export function inboxUrl(settings, normalise) {
    const base = normalise(settings.address);
    if (!base) return '';
    return settings.token ? `${base}/?token=${encodeURIComponent(settings.token)}` : `${base}/`;
}

/**
 * An address on the daemon's own pages (``/settings``, ``/setup``); with a token, through the
 * login link (``?token=`` sets the cookie and redirects to the same page without it).
 * @param {{address: string, token: string}} settings
 * @param {(text: string) => string} normalise
 * @param {string} page e.g. '/settings'
 */
export function pageUrl(settings, normalise, page) {
    const base = normalise(settings.address);
    if (!base) return '';
    return settings.token ? `${base}${page}?token=${encodeURIComponent(settings.token)}` : `${base}${page}`;
}
