// A thin client of the daemon's HTTP API v1 (docs/http-api.md). Every failure becomes an
// ApiError with one clear sentence; nothing here touches SillyTavern.

/** How long one API request may take before it is given up. */
export const REQUEST_TIMEOUT_MS = 15000;

export class ApiError extends Error {
    /**
     * @param {string} message one clear sentence
     * @param {{status?: number, code?: string}} [info] HTTP status (0: not reachable) and slug
     */
    constructor(message, { status = 0, code = 'unreachable' } = {}) {
        super(message);
        this.name = 'ApiError';
        this.status = status;
        this.code = code;
    }
}

/**
 * What to do about a 401 (the daemon runs with a token): one sentence with the way out.
 * @param {boolean} hadToken whether a token was sent
 */
export function tokenHint(hadToken) {
    return hadToken
        ? 'the daemon did not accept the token: run `st-imagegen web-url` and paste the part after `?token=` into Extensions → st-imagegen → Token'
        : 'this daemon needs a token: run `st-imagegen web-url` and paste the part after `?token=` into Extensions → st-imagegen → Token';
}

/**
 * Normalise a daemon address typed by a user: scheme added, trailing slashes dropped.
 * @param {string} text
 */
export function normaliseBase(text) {
    let base = String(text ?? '').trim();
    if (!base) return '';
    if (!/^https?:\/\//i.test(base)) base = `http://${base}`;
    return base.replace(/\/+$/, '');
}

/**
 * The query string of `GET /api/v1/jobs` (`state` repeatable).
 * @param {{state?: string|string[], chat?: string, chat_file?: string, user?: string, limit?: number, before?: string}} query
 */
export function jobsQuery(query = {}) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
        if (value === undefined || value === null || value === '') continue;
        for (const one of Array.isArray(value) ? value : [value]) params.append(key, String(one));
    }
    const text = params.toString();
    return text ? `?${text}` : '';
}

/**
 * @param {object} options
 * @param {() => string} options.base the daemon's address (normalised by {@link normaliseBase})
 * @param {() => string} options.token the API token ('' when none)
 * @param {typeof fetch} [options.fetch]
 * @param {number} [options.timeoutMs]
 */
export function createApi({ base, token, fetch: fetchImpl, timeoutMs = REQUEST_TIMEOUT_MS }) {
    const doFetch = fetchImpl ?? globalThis.fetch.bind(globalThis);

    function headers(extra = {}) {
        const out = { ...extra };
        const secret = token();
        if (secret) out.Authorization = `Bearer ${secret}`;
        return out;
    }

    function url(path) {
        return `${normaliseBase(base())}${path}`;
    }

    async function send(method, path, body) {
        const where = normaliseBase(base());
        if (!where) throw new ApiError('no daemon address is set (Extensions → st-imagegen)', { code: 'no-address' });
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), timeoutMs);
        let response;
        try {
            response = await doFetch(`${where}${path}`, {
                method,
                headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
                body: body === undefined ? undefined : JSON.stringify(body),
                signal: controller.signal,
                credentials: 'include',
                cache: 'no-store',
            });
        } catch (error) {
            const why = controller.signal.aborted ? `no answer within ${timeoutMs / 1000} s` : 'not reachable (is it running, and is this page\'s origin in web.allowed_origins?)';
            throw new ApiError(`st-imagegen at ${where} is ${why}`, { status: 0, code: 'unreachable' });
        } finally {
            clearTimeout(timer);
        }
        let data = null;
        const text = await response.text();
        if (text) {
            try {
                data = JSON.parse(text);
            } catch {
                data = null;
            }
        }
        if (!response.ok) {
            const error = data && typeof data === 'object' ? data.error : null;
            const message = response.status === 401
                ? tokenHint(!!token())
                : error?.message || `HTTP ${response.status} from ${method} ${path}`;
            throw new ApiError(message, { status: response.status, code: error?.code || `http-${response.status}` });
        }
        return data;
    }

    return {
        url,
        headers,
        status: () => send('GET', '/api/v1/status'),
        meta: () => send('GET', '/api/v1/meta'),
        jobs: (query) => send('GET', `/api/v1/jobs${jobsQuery(query)}`),
        job: (id) => send('GET', `/api/v1/jobs/${encodeURIComponent(id)}`),
        message: (id) => send('GET', `/api/v1/jobs/${encodeURIComponent(id)}/message`),
        accept: (id, keep) => send('POST', `/api/v1/jobs/${encodeURIComponent(id)}/accept`, keep && keep.length ? { keep } : {}),
        reject: (id) => send('POST', `/api/v1/jobs/${encodeURIComponent(id)}/reject`, {}),
        cancel: (id) => send('POST', `/api/v1/jobs/${encodeURIComponent(id)}/cancel`, {}),
        regen: (id, prompt) => send('POST', `/api/v1/jobs/${encodeURIComponent(id)}/regen`, prompt ? { prompt } : {}),
        generate: (body) => send('POST', '/api/v1/generate', body),
        /** Change daemon settings (the admin's token only), e.g. `{mode: 'manual'}`: applied at once. */
        saveSettings: (changes) => send('POST', '/api/v1/settings', { changes }),
        /** Pause (or resume) illustrating one chat, named by ST's chat id. */
        pauseChat: (chatFile, paused) => send('POST', '/api/v1/pause', { paused, chat_file: chatFile }),
        /**
         * An image of a job as an object URL: fetched with the token, since an <img> cannot send
         * an Authorization header. The caller revokes it.
         * @param {string} path e.g. job.images[0].thumb
         */
        async imageUrl(path) {
            const response = await doFetch(url(path), { headers: headers(), credentials: 'include' });
            if (response.status === 401) throw new ApiError(tokenHint(!!token()), { status: 401, code: 'unauthorized' });
            if (!response.ok) throw new ApiError(`image: HTTP ${response.status}`, { status: response.status, code: 'image' });
            return URL.createObjectURL(await response.blob());
        },
    };
}
