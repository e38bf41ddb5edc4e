// The extension's settings, kept in ST's extension_settings['st-imagegen'] (saved with the
// user's settings.json through saveSettingsDebounced).

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
});

const MODES = new Set(['popup', 'panel']);

/**
 * The settings object inside `extensionSettings`, created or repaired in place (ST keeps the
 * object, so later edits are saved with it).
 * @param {Record<string, any>} extensionSettings `context.extensionSettings`
 */
export function loadSettings(extensionSettings) {
    const current = extensionSettings[SETTINGS_KEY];
    const settings = current && typeof current === 'object' && !Array.isArray(current) ? current : {};
    for (const [key, value] of Object.entries(DEFAULTS)) {
        if (typeof settings[key] !== typeof value) settings[key] = value;
    }
    if (!MODES.has(settings.previewMode)) settings.previewMode = DEFAULTS.previewMode;
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
