// What the tab does on the daemon's events and the user's actions. Every dependency is injected
// (ST's context getter, the API client, the preview UI, toasts, message rendering), so Node's
// test runner drives it with a fake context; index.js wires the real ones.

import {
    CommitLedger,
    FINAL_STATES,
    RUNNING_STATES,
    STATE_LABELS,
    chatKeyOf,
    cloneMessage,
    findMarker,
    findReply,
    generateBody,
    jobInChat,
    openChatOf,
    planInsert,
    revisionOf,
} from './protocol.js';
import { messageLabel } from './text.js';

/** At most this many jobs are listed per request (the API's own cap). */
export const LIST_LIMIT = 500;
/** Jobs whose newest event is remembered (see Controller.seen). */
export const SEEN_LIMIT = 500;
/** How often a deferred insert is tried again. */
export const RETRY_MS = 1500;

const STEP_TEXT = STATE_LABELS; // the daemon's words once connected (useVocabulary)

/** The progress line of a job started from this tab. */
export function progressText(job) {
    const step = STEP_TEXT[job.state] ?? job.state;
    const detail = job.progress && job.progress.text ? String(job.progress.text).trim() : '';
    // The daemon's progress text often just names the step ("drawing", "writing the prompt");
    // repeated in brackets it reads as a stutter, so only a detail the step lacks is added.
    const extra = detail && !step.toLowerCase().includes(detail.toLowerCase()) ? ` (${detail})` : '';
    return `Image for ${messageLabel(job)}: ${step}${extra}`;
}

export class Controller {
    /**
     * @param {object} deps
     * @param {() => any} deps.getContext `SillyTavern.getContext`
     * @param {ReturnType<import('./api.js').createApi>} deps.api
     * @param {() => Record<string, any>} deps.settings the live settings object
     * @param {{showPending(jobs: any[]): void, close(): void}} deps.preview
     * @param {{progress(id: string, text: string): void, finish(id: string, kind: string, text: string): void, error(text: string): void, info(text: string): void, warning(text: string): void}} deps.toasts
     * @param {{append(ctx: any, message: any): void, insertAt(ctx: any, index: number, message: any): void}} deps.render
     * @param {(level: string, ...args: any[]) => void} [deps.log]
     */
    constructor(deps) {
        this.deps = deps;
        this.log = deps.log ?? (() => {});
        this.ledger = new CommitLedger();
        /** @type {Map<string, any>} pending jobs of the open chat, by id */
        this.pending = new Map();
        /**
         * Jobs started from this tab, with the key of the one toast their user action has
         * (a regeneration's new job keeps its predecessor's toast) and the last state a
         * finishing toast was shown for (a repeated event shows nothing new).
         * @type {Map<string, {key: string, shown: string|null}>}
         */
        this.tracked = new Map();
        /**
         * The newest event seen per job (any chat), so a job whose events overtook the answer
         * that made it (a fast failure before `generate` returned) is followed from where it is.
         * @type {Map<string, any>}
         */
        this.seen = new Map();
        /**
         * How many job events the stream has brought (`heard`), and that count at each job's
         * newest one: a job list read before an event must not undo it (see refreshPending).
         * @type {Map<string, number>}
         */
        this.heardAt = new Map();
        this.heard = 0;
        /** @type {Map<string, string>} the last state seen per job of the open chat */
        this.lastState = new Map();
        /** @type {Set<string>} jobs whose "reload to see it" toast was shown */
        this.toldReload = new Set();
        this.chatReady = Promise.resolve();
        this.baselineMissing = true;
        this.queue = Promise.resolve();
        this.openKey = null;
    }

    get ctx() {
        return this.deps.getContext();
    }

    open() {
        return openChatOf(this.ctx);
    }

    /** Run `fn` after every earlier queued step (inserts must not interleave). */
    serial(fn) {
        const run = this.queue.then(fn, fn);
        this.queue = run.catch(() => {});
        return run;
    }

    // --- chat switches and (re)connects -------------------------------------------------------

    /** ST opened another chat (CHAT_CHANGED), or the page started with one. */
    chatChanged() {
        this.deps.preview.close();
        this.pending.clear();
        this.lastState.clear();
        const open = this.open();
        this.openKey = chatKeyOf(open);
        this.chatReady = this.serial(() => this.loadChat(open));
        return this.chatReady;
    }

    async listJobs(open, state) {
        const answer = await this.deps.api.jobs({ chat_file: open.chatFile, state, limit: LIST_LIMIT });
        const user = this.deps.settings().user;
        return (answer?.jobs ?? []).filter(job => jobInChat(job, open, user));
    }

    async loadChat(open) {
        const key = chatKeyOf(open);
        if (!open) {
            this.ledger.reset(null, []);
            this.baselineMissing = false;
            return;
        }
        try {
            const committed = await this.listJobs(open, 'committed');
            if (chatKeyOf(this.open()) !== key) return;
            this.ledger.reset(key, committed.map(job => job.id));
            this.baselineMissing = false;
            await this.refreshPending(open);
        } catch (error) {
            // Daemon down: no baseline yet; the next `hello` takes it (nothing can be committed
            // while the daemon is down).
            this.ledger.reset(key, []);
            this.ledger.chatKey = null;
            this.baselineMissing = true;
            this.log('warn', 'st-imagegen: cannot list jobs of the open chat', error);
        }
    }

    async refreshPending(open) {
        const mark = this.heard;
        const jobs = await this.listJobs(open, 'pending');
        if (chatKeyOf(this.open()) !== chatKeyOf(open)) return;
        // The list was read before any event heard since `mark`: for those jobs the stream's
        // word stands (a job accepted meanwhile stays gone, one turned pending stays shown).
        const listed = jobs.filter(job => !this.heardSince(job.id, mark));
        const kept = [...this.pending.values()].filter(job => this.heardSince(job.id, mark));
        this.pending.clear();
        for (const job of [...listed, ...kept].sort((a, b) => (a.id < b.id ? -1 : 1))) {
            this.pending.set(job.id, job); // oldest first (ids grow with time)
        }
        this.showPending();
    }

    /** Has the stream told anything about job `id` since the count was `mark`? */
    heardSince(id, mark) {
        return (this.heardAt.get(id) ?? 0) > mark;
    }

    /** The stream (re)connected: catch up on what happened while it was down. */
    connected() {
        return this.serial(async () => {
            const open = this.open();
            if (!open) return;
            if (this.baselineMissing || this.ledger.chatKey !== chatKeyOf(open)) {
                await this.loadChat(open);
                return;
            }
            const committed = await this.listJobs(open, 'committed');
            for (const job of committed.reverse()) {
                if (this.ledger.wants(chatKeyOf(open), job.id)) await this.insertCommitted(job);
            }
            await this.refreshPending(open);
        }).catch(error => this.log('warn', 'st-imagegen: catch-up failed', error));
    }

    // --- job events -----------------------------------------------------------------------------

    /** One `job` event of the stream. */
    async jobEvent(job) {
        if (!job || typeof job.id !== 'string') return;
        this.remember(job);
        this.progress(job);
        await this.chatReady;
        const open = this.open();
        if (!jobInChat(job, open, this.deps.settings().user)) return;
        const before = this.lastState.get(job.id);
        this.lastState.set(job.id, job.state);
        if (job.state === 'pending') {
            // Back to pending (revived by a swipe back, retried): offered again even if the user
            // closed its preview before.
            if (before && before !== 'pending') this.deps.preview.offerAgain?.(job.id);
            this.pending.set(job.id, job);
            this.showPending();
            return;
        }
        if (this.pending.delete(job.id)) this.showPending();
        if (job.state === 'committed') {
            await this.serial(() => this.insertCommitted(job));
        }
    }

    remember(job) {
        this.seen.delete(job.id);
        this.seen.set(job.id, job);
        if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.keys().next().value);
        this.heard += 1;
        this.heardAt.delete(job.id);
        this.heardAt.set(job.id, this.heard);
        if (this.heardAt.size > SEEN_LIMIT) this.heardAt.delete(this.heardAt.keys().next().value);
    }

    /** Follow `job` (started from this tab) with one toast, under `key` (default: its id). */
    track(job, key = job.id) {
        this.tracked.set(job.id, { key, shown: null });
        const seen = this.seen.get(job.id);
        // ISO times compare as text; an event newer than the answer is where the job is now.
        const newer = seen && String(seen.updated_at ?? '') > String(job.updated_at ?? '');
        this.progress(newer ? seen : job);
    }

    progress(job) {
        const entry = this.tracked.get(job.id);
        if (!entry || !this.deps.settings().progressToasts) return;
        const { toasts } = this.deps;
        const what = `Image for ${messageLabel(job)}`;
        if (RUNNING_STATES.includes(job.state) || job.state === 'accepted') {
            entry.shown = null;
            toasts.progress(entry.key, progressText(job));
        } else if (job.state === 'pending') {
            if (entry.shown === 'pending') return; // the same state again: nothing new to say
            entry.shown = 'pending';
            toasts.finish(entry.key, 'success', progressText(job));
        } else if (job.state === 'committed') {
            this.tracked.delete(job.id);
            toasts.finish(entry.key, 'success', `${what} is in the chat`);
        } else if (job.state === 'superseded') {
            // Replaced (the reply changed, or a newer job): its last_error names job ids.
            this.tracked.delete(job.id);
            toasts.finish(entry.key, 'info', `${what} was dropped: the reply changed`);
        } else if (FINAL_STATES.includes(job.state)) {
            this.tracked.delete(job.id);
            const why = job.state === 'failed' && job.last_error ? `: ${job.last_error}` : '';
            toasts.finish(entry.key, job.state === 'failed' ? 'error' : 'info', `${what} ${job.state}${why}`);
        }
    }

    showPending() {
        if (!this.deps.settings().livePreview) return;
        const jobs = [...this.pending.values()];
        if (jobs.length) this.deps.preview.showPending(jobs);
        else this.deps.preview.close();
    }

    /**
     * Mirror a committed job's message into the open chat (the insert protocol). Returns what
     * was done: `inserted`, `present`, `not-wanted`, `switched`, or a skip reason of planInsert.
     */
    async insertCommitted(job) {
        const open = this.open();
        const key = chatKeyOf(open);
        if (!open || !this.ledger.wants(key, job.id)) return 'not-wanted';
        if (findMarker(this.ctx.chat, job.id) !== -1) {
            this.ledger.done(job.id);
            return 'present';
        }
        const payload = await this.deps.api.message(job.id);
        if (chatKeyOf(this.open()) !== key) return 'switched';
        const replyBefore = findReply(this.ctx.chat, payload?.after ?? {});
        const currentRevision = replyBefore === -1 ? null : await revisionOf(this.ctx.chat[replyBefore]);
        // No await from here on: the plan and the splice see the same chat.
        const ctx = this.ctx;
        if (chatKeyOf(openChatOf(ctx)) !== key) return 'switched';
        const sameReply = replyBefore !== -1 && findReply(ctx.chat, payload.after) === replyBefore;
        const plan = planInsert(ctx.chat, payload, { revision: job.revision, currentRevision: sameReply ? currentRevision : null });
        if (plan.action !== 'insert') {
            this.ledger.done(job.id);
            if (plan.reason === 'reply-gone' && !this.toldReload.has(job.id)) {
                // Never silent: the image is in the chat file, this tab just cannot place it.
                this.toldReload.add(job.id);
                this.deps.toasts.warning(`The image for ${messageLabel(job)} was saved in the chat file, but this tab cannot find that message. Reload the chat (F5) to see it.`);
            }
            if (plan.reason === 'reply-changed') {
                this.log('info', `st-imagegen: job ${job.id} is for an earlier version of message #${plan.replyIndex}; not shown`);
            }
            return plan.reason;
        }
        if (!plan.atEnd && this.deps.render.editing?.()) {
            // A message below is being edited: renumbering under ST's open editor would save the
            // edit into the wrong message. Try again once the editor is closed.
            this.log('info', `st-imagegen: job ${job.id} waits for the open message editor`);
            this.retryLater(job);
            return 'deferred';
        }
        const message = cloneMessage(payload.message);
        if (plan.atEnd) {
            ctx.chat.push(message);
            this.deps.render.append(ctx, message);
        } else {
            ctx.chat.splice(plan.index, 0, message);
            this.deps.render.insertAt(ctx, plan.index, message);
        }
        this.ledger.done(job.id);
        await ctx.saveChat();
        return 'inserted';
    }

    retryLater(job) {
        const wait = this.deps.setTimeout ?? globalThis.setTimeout;
        wait(() => {
            this.serial(() => this.insertCommitted(job)).catch(error => this.log('warn', 'st-imagegen: insert failed', error));
        }, RETRY_MS);
    }

    // --- user actions -------------------------------------------------------------------------

    /**
     * A preview button: `accept` (value: the 1-based images to keep, or nothing for all),
     * `reject`, `regen` (value: an edited prompt, or nothing). The job leaves the preview at
     * once; its events bring the rest (the insert on commit, the new job of a regeneration).
     */
    async act(what, job, value) {
        const { api, toasts } = this.deps;
        const entry = this.tracked.get(job.id);
        try {
            let result;
            if (what === 'accept') result = await api.accept(job.id, value);
            else if (what === 'reject') result = await api.reject(job.id);
            else if (what === 'regen') {
                result = await api.regen(job.id, value);
                // The old job's end ("regenerated as <id>") is no news: its toast follows the new job.
                this.tracked.delete(job.id);
                if (result?.id) this.track(result, entry?.key ?? result.id);
            } else throw new Error(`unknown action ${what}`);
            if (what === 'reject') this.tracked.delete(job.id);
            if (this.pending.delete(job.id)) this.showPending();
            return result ?? {};
        } catch (error) {
            if (error?.status === 409) toasts.warning(error.message);
            else toasts.error(`st-imagegen: ${error?.message ?? error}`);
            return null;
        }
    }

    /**
     * `/genimage cancel`: stop the jobs this tab started that are still queued or running
     * (no image is made for them; a running call is dropped or interrupted by the daemon).
     * @returns {Promise<number>} how many were cancelled
     */
    async cancelTracked() {
        const { api, toasts } = this.deps;
        let cancelled = 0;
        for (const [id, entry] of [...this.tracked]) {
            try {
                await api.cancel(id);
                this.tracked.delete(id);
                toasts.finish(entry.key, 'info', 'Image cancelled: none will be made');
                cancelled += 1;
            } catch (error) {
                if (error?.status !== 409) toasts.error(`st-imagegen: ${error?.message ?? error}`);
            }
        }
        if (!cancelled) toasts.info('st-imagegen: nothing of this tab is queued or running');
        return cancelled;
    }

    /**
     * /genimage and the message button: the daemon's manual mode for the open chat.
     * @param {number|null} mesid
     * @param {{force?: boolean}} [options]
     */
    async generate(mesid, { force = false } = {}) {
        const { api, toasts } = this.deps;
        const open = this.open();
        if (!open) {
            toasts.error('st-imagegen: open a chat first');
            return null;
        }
        const chat = this.ctx.chat;
        if (mesid !== null && mesid !== undefined) {
            const message = chat[mesid];
            if (!message) {
                toasts.error(`st-imagegen: there is no message #${mesid} (the chat has ${chat.length})`);
                return null;
            }
            if (message.is_user) {
                toasts.error(`st-imagegen: message #${mesid} is the user's; pick a character reply`);
                return null;
            }
        }
        const body = generateBody(open, { mesid, force, user: this.deps.settings().user });
        try {
            let job = await api.generate(body);
            if (!force && ['rejected', 'failed', 'superseded'].includes(job?.state)) {
                // The reply's earlier job ended without an image: asking again means a new one.
                job = await api.generate({ ...body, force: true });
            }
            if (job?.state === 'committed') {
                toasts.info(`${messageLabel(job)} already has its image in the chat; /genimage mesid=${job.mesid} force=true makes another`);
                return job;
            }
            if (job?.state === 'pending' && this.deps.settings().livePreview && jobInChat(job, this.open(), this.deps.settings().user)) {
                // Waiting for review (perhaps closed earlier): show it again.
                this.deps.preview.offerAgain?.(job.id);
                this.pending.set(job.id, job);
                this.lastState.set(job.id, job.state);
                this.showPending();
                return job;
            }
            this.track(job);
            return job;
        } catch (error) {
            toasts.error(`st-imagegen: ${error?.message ?? error}`);
            return null;
        }
    }
}
