// st-imagegen's SillyTavern extension: wiring only. The logic lives in lib/ (see
// docs/sillytavern-extension.md). Uses nothing but SillyTavern.getContext() (ST 1.12 to 1.19).

import { createApi, normaliseBase, tokenHint } from './lib/api.js';
import { Controller } from './lib/controller.js';
import { ConnectionNotices, EventStreamClient } from './lib/events.js';
import { appendMessage, editing, insertMessageAt } from './lib/render.js';
import { openChatOf, useVocabulary } from './lib/protocol.js';
import { loadSettings } from './lib/settings.js';
import { ALIASES, COMMAND, HELP, parseGenimageArgs } from './lib/slash.js';
import { BUTTON_CLASS, addMessageButtons, createPreview, createSettingsPanel, createToasts } from './lib/ui.js';

const getContext = () => globalThis.SillyTavern.getContext();

function registerCommand(ctx, controller, toasts) {
    const callback = async (named, unnamed) => {
        let args;
        try {
            args = parseGenimageArgs(named, unnamed);
        } catch (error) {
            toasts.error(error.message);
            return '';
        }
        if (args.cancel) return String(await controller.cancelTracked());
        const job = await controller.generate(args.mesid, { force: args.force });
        return job?.id ?? '';
    };
    if (ctx.SlashCommandParser?.addCommandObject && ctx.SlashCommand?.fromProps) {
        const named = [];
        const unnamed = [];
        const type = ctx.ARGUMENT_TYPE ?? {};
        if (ctx.SlashCommandNamedArgument?.fromProps) {
            named.push(ctx.SlashCommandNamedArgument.fromProps({
                name: 'mesid', description: 'message number (first is 0); default: the last character reply',
                typeList: [type.NUMBER ?? 'number'], isRequired: false,
            }));
            named.push(ctx.SlashCommandNamedArgument.fromProps({
                name: 'force', description: 'a new job even if the reply already has one',
                typeList: [type.BOOLEAN ?? 'bool'], isRequired: false, defaultValue: 'false',
            }));
            named.push(ctx.SlashCommandNamedArgument.fromProps({
                name: 'cancel', description: 'stop the jobs this tab started that are still queued or running',
                typeList: [type.BOOLEAN ?? 'bool'], isRequired: false, defaultValue: 'false',
            }));
        }
        if (ctx.SlashCommandArgument?.fromProps) {
            unnamed.push(ctx.SlashCommandArgument.fromProps({
                description: 'message number (same as mesid=)', typeList: [type.NUMBER ?? 'number'], isRequired: false,
            }));
        }
        ctx.SlashCommandParser.addCommandObject(ctx.SlashCommand.fromProps({
            name: COMMAND, aliases: [...ALIASES], callback, helpString: HELP, returns: 'the job id',
            namedArgumentList: named, unnamedArgumentList: unnamed,
        }));
    } else if (typeof ctx.registerSlashCommand === 'function') {
        ctx.registerSlashCommand(COMMAND, callback, [...ALIASES], HELP); // (name, callback, aliases, help) in 1.12+
    }
}

function init() {
    const ctx = getContext();
    const settings = loadSettings(ctx.extensionSettings);
    const save = () => getContext().saveSettingsDebounced();
    const api = createApi({ base: () => settings.address, token: () => settings.token });
    const toasts = createToasts(globalThis.toastr);
    let controller = null;
    const preview = createPreview({ getContext, api, settings: () => settings, act: (...args) => controller.act(...args) });
    controller = new Controller({
        getContext, api, settings: () => settings, preview, toasts,
        render: { append: appendMessage, insertAt: (c, index, message) => insertMessageAt(c, index, message), editing: () => editing() },
        log: (level, ...args) => (console[level] ?? console.log)(...args),
    });

    const notices = new ConnectionNotices({ toasts, where: () => normaliseBase(settings.address) });
    const stream = new EventStreamClient({
        url: () => api.url('/api/v1/events'),
        headers: () => api.headers(),
        describeStatus: status => (status === 401 ? tokenHint(!!settings.token) : null),
        onEvent: ({ type, data }) => {
            // A restarted daemon's stream starts over, and `reset` says events were lost: both
            // mean catching up from the job list.
            if (type === 'hello') api.meta().then(useVocabulary).catch(() => {}); // the daemon's words
            if (type === 'hello' || type === 'reset' || type === 'config' || type === 'pause') {
                if (type === 'hello' || type === 'reset') controller.connected();
                // Not set up yet, and the essentials' values: the panel shows them.
                api.status().then(status => panel.setDaemon(status), () => {});
            }
            else if (type === 'job' && data && typeof data === 'object') controller.jobEvent(data.job);
        },
        onState: (state, detail) => {
            panel.setConnection(state, detail ?? {});
            notices.onState(state, detail, stream.attempt);
        },
    });
    const panel = createSettingsPanel({
        settings, save, api,
        openChat: () => openChatOf(getContext()),
        reconnect: () => {
            stream.restart();
            controller.chatChanged();
        },
    });
    (document.getElementById('extensions_settings2') ?? document.getElementById('extensions_settings'))?.append(panel.root);

    registerCommand(ctx, controller, toasts);
    addMessageButtons();
    document.addEventListener('click', event => {
        const button = event.target instanceof Element ? event.target.closest(`.${BUTTON_CLASS}`) : null;
        if (!button) return;
        const mesid = Number(button.closest('.mes')?.getAttribute('mesid'));
        if (Number.isInteger(mesid)) controller.generate(mesid);
    });

    const events = ctx.eventTypes ?? ctx.event_types;
    ctx.eventSource.on(events.CHAT_CHANGED, () => {
        addMessageButtons();
        controller.chatChanged();
        api.status().then(status => panel.setDaemon(status), () => {}); // this chat's pause
    });
    for (const name of ['CHARACTER_MESSAGE_RENDERED', 'USER_MESSAGE_RENDERED', 'MORE_MESSAGES_LOADED']) {
        if (events[name]) ctx.eventSource.on(events[name], () => addMessageButtons());
    }

    stream.start();
    controller.chatChanged();
    // A handle for the browser console and the tests (read-only use).
    globalThis.stImagegen = { controller, stream, api, settings, preview };
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
