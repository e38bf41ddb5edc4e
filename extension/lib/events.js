// The daemon's event stream (GET /api/v1/events, text/event-stream) read with fetch, not
// EventSource: EventSource cannot send the Authorization header and gives no control over its
// reconnect timing. Pure logic plus injected fetch/timers, so Node's test runner drives it.

/** First reconnect delay; it doubles per failed attempt up to the maximum. */
export const BACKOFF_BASE_MS = 1000;
/** Longest wait between two reconnect attempts. */
export const BACKOFF_MAX_MS = 30000;
/** The daemon sends `: ping` every 15 s: this long without a byte means the stream is dead. */
export const STALL_TIMEOUT_MS = 45000;

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped, with jitter in
 * [50 %, 100 %] so many tabs do not reconnect in lockstep after a daemon restart.
 * @param {number} attempt
 * @param {{base?: number, max?: number, random?: () => number}} [options]
 */
export function backoffDelay(attempt, { base = BACKOFF_BASE_MS, max = BACKOFF_MAX_MS, random = Math.random } = {}) {
    const n = Math.max(0, Math.floor(attempt));
    const full = Math.min(max, base * 2 ** Math.min(n, 30));
    return Math.round(full * (0.5 + random() / 2));
}

/**
 * An incremental parser of the text/event-stream format (WHATWG HTML, "server-sent events"):
 * fields `event`, `data` (joined by "\n"), `id`, `retry`; comment lines start with ":"; an empty
 * line dispatches; CRLF, CR and LF all end lines; a chunk may end mid-line.
 */
export class SSEParser {
    /**
     * @param {(event: {type: string, data: string, id: string}) => void} onEvent
     * @param {{onRetry?: (ms: number) => void, onComment?: (text: string) => void}} [hooks]
     */
    constructor(onEvent, hooks = {}) {
        this.onEvent = onEvent;
        this.hooks = hooks;
        this.buffer = '';
        this.lastEventId = '';
        this.pendingCR = false;
        this.reset();
    }

    reset() {
        this.type = '';
        this.data = [];
        this.hasData = false;
    }

    /** Feed decoded text. */
    feed(text) {
        let chunk = text;
        if (this.pendingCR && chunk.startsWith('\n')) chunk = chunk.slice(1);
        this.pendingCR = false;
        this.buffer += chunk;
        let start = 0;
        for (;;) {
            const cr = this.buffer.indexOf('\r', start);
            const lf = this.buffer.indexOf('\n', start);
            if (cr === -1 && lf === -1) break;
            let end;
            let next;
            if (cr !== -1 && (lf === -1 || cr < lf)) {
                end = cr;
                if (cr + 1 === this.buffer.length) {
                    this.pendingCR = true; // maybe the first half of a CRLF split across chunks
                    next = cr + 1;
                } else {
                    next = this.buffer[cr + 1] === '\n' ? cr + 2 : cr + 1;
                }
            } else {
                end = lf;
                next = lf + 1;
            }
            this.line(this.buffer.slice(start, end));
            start = next;
        }
        this.buffer = this.buffer.slice(start);
    }

    line(line) {
        if (line === '') {
            if (this.hasData) {
                this.onEvent({ type: this.type || 'message', data: this.data.join('\n'), id: this.lastEventId });
            }
            this.reset();
            return;
        }
        if (line.startsWith(':')) {
            this.hooks.onComment?.(line.slice(1).trimStart());
            return;
        }
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') this.type = value;
        else if (field === 'data') {
            this.data.push(value);
            this.hasData = true;
        } else if (field === 'id') {
            if (!value.includes('\0')) this.lastEventId = value;
        } else if (field === 'retry') {
            if (/^\d+$/.test(value)) this.hooks.onRetry?.(Number(value));
        }
    }
}

/**
 * Keeps one event stream open, reconnecting with back-off, resuming with `Last-Event-ID`.
 *
 * States reported to `onState`: `connecting`, `connected` (after the daemon's `hello`),
 * `disconnected` (with the error and the delay until the next attempt), `stopped`.
 */
export class EventStreamClient {
    /**
     * @param {object} options
     * @param {() => string} options.url the stream's absolute URL
     * @param {() => Record<string, string>} [options.headers] e.g. the Authorization header
     * @param {(event: {type: string, data: any, id: string}) => void} options.onEvent parsed JSON data
     * @param {(state: string, detail?: any) => void} [options.onState]
     * @param {typeof fetch} [options.fetch]
     * @param {(fn: () => void, ms: number) => any} [options.setTimeout]
     * @param {(handle: any) => void} [options.clearTimeout]
     * @param {(status: number) => string|null} [options.describeStatus] a sentence for an HTTP error (e.g. 401)
     * @param {() => number} [options.random]
     * @param {number} [options.stallMs]
     */
    constructor(options) {
        this.options = options;
        this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
        this.setTimeout = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
        this.clearTimeout = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
        this.random = options.random ?? Math.random;
        this.stallMs = options.stallMs ?? STALL_TIMEOUT_MS;
        this.attempt = 0;
        this.lastEventId = '';
        this.running = false;
        this.controller = null;
        this.retryTimer = null;
        this.stallTimer = null;
        this.generation = 0;
        this.state = 'stopped';
    }

    setState(state, detail) {
        this.state = state;
        this.options.onState?.(state, detail);
    }

    /** Open the stream (no-op when already running). */
    start() {
        if (this.running) return;
        this.running = true;
        this.connect();
    }

    /** Close the stream and cancel any pending reconnect. */
    stop() {
        this.running = false;
        this.generation++;
        if (this.retryTimer !== null) this.clearTimeout(this.retryTimer);
        if (this.stallTimer !== null) this.clearTimeout(this.stallTimer);
        this.retryTimer = null;
        this.stallTimer = null;
        this.controller?.abort();
        this.controller = null;
        this.setState('stopped');
    }

    /** Reconnect now (settings changed): the back-off starts over. */
    restart() {
        this.stop();
        this.attempt = 0;
        this.lastEventId = '';
        this.start();
    }

    armStall(generation) {
        if (this.stallTimer !== null) this.clearTimeout(this.stallTimer);
        this.stallTimer = this.setTimeout(() => {
            if (generation === this.generation) this.controller?.abort(new Error('no data from the daemon (stream stalled)'));
        }, this.stallMs);
    }

    async connect() {
        const generation = ++this.generation;
        const controller = new AbortController();
        this.controller = controller;
        this.setState('connecting');
        let failure = null;
        try {
            const headers = { Accept: 'text/event-stream', ...(this.options.headers?.() ?? {}) };
            if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
            const response = await this.fetch(this.options.url(), {
                headers, signal: controller.signal, cache: 'no-store', credentials: 'include',
            });
            if (!response.ok) {
                const hint = this.options.describeStatus?.(response.status);
                throw new Error(hint || `event stream: HTTP ${response.status}`);
            }
            if (!response.body) throw new Error('event stream: no body');
            const parser = new SSEParser(event => this.dispatch(event, generation));
            parser.lastEventId = this.lastEventId;
            const reader = response.body.getReader();
            const decoder = new TextDecoder();
            this.armStall(generation);
            for (;;) {
                const { value, done } = await reader.read();
                if (generation !== this.generation) return;
                if (done) break;
                this.armStall(generation);
                parser.feed(decoder.decode(value, { stream: true }));
                if (parser.lastEventId) this.lastEventId = parser.lastEventId;
            }
            failure = new Error('event stream closed by the daemon');
        } catch (error) {
            failure = error instanceof Error ? error : new Error(String(error));
            if (controller.signal.aborted && controller.signal.reason instanceof Error) failure = controller.signal.reason;
        }
        if (generation !== this.generation || !this.running) return;
        if (this.stallTimer !== null) this.clearTimeout(this.stallTimer);
        this.stallTimer = null;
        const delay = backoffDelay(this.attempt, { random: this.random });
        this.attempt++;
        this.setState('disconnected', { error: failure, delay });
        this.retryTimer = this.setTimeout(() => {
            this.retryTimer = null;
            if (this.running && generation === this.generation) this.connect();
        }, delay);
    }

    dispatch(event, generation) {
        if (generation !== this.generation) return;
        let data = event.data;
        try {
            data = JSON.parse(event.data);
        } catch {
            // not JSON: handed on as text
        }
        if (event.type === 'hello') {
            this.attempt = 0;
            this.setState('connected', data);
        }
        if (event.id) this.lastEventId = event.id;
        this.options.onEvent({ type: event.type, data, id: event.id });
    }
}

/**
 * The toasts about the connection: none while all is well; one warning per outage (not per
 * retry: ST keeps working meanwhile); after it, "connected" (the first time) or "reconnected".
 */
export class ConnectionNotices {
    /**
     * @param {{toasts: {info(text: string): void, warning(text: string): void}, where: () => string}} deps
     */
    constructor({ toasts, where }) {
        this.toasts = toasts;
        this.where = where;
        this.wasConnected = false;
        this.warnedDown = false;
    }

    /**
     * @param {string} state the stream's state
     * @param {{error?: Error}} [detail]
     * @param {number} [attempt] the stream's failed attempts so far
     */
    onState(state, detail, attempt = 0) {
        if (state === 'connected') {
            if (this.warnedDown) this.toasts.info(`${this.wasConnected ? 'reconnected' : 'connected'} to the daemon at ${this.where()}`);
            this.wasConnected = true;
            this.warnedDown = false;
        } else if (state === 'disconnected' && !this.warnedDown && (this.wasConnected || attempt === 1)) {
            this.warnedDown = true;
            const why = detail?.error?.message ?? 'no answer';
            // A token problem is its own sentence with the way out; anything else is "not reachable".
            this.toasts.warning(/token/.test(why) ? why : `the daemon at ${this.where()} is not reachable (${why}); retrying in the background`);
        }
    }
}
