// A stand-in for the parts of SillyTavern 1.18 the st-imagegen extension uses, written after
// ST's own code (public/script.js: chat, getChat, addOneMessage, saveChat/saveChatConditional,
// reloadCurrentChat, getCurrentChatId; scripts/st-context.js: getContext; scripts/popup.js: Popup;
// scripts/slash-commands/*: SlashCommandParser; scripts/events.js: event_types). The chat array
// is one array mutated in place, as in ST; saveChat posts the whole array to /api/chats/save.

const params = new URLSearchParams(location.search);
const characters = [{ name: params.get('name') || 'Alice', avatar: params.get('avatar') || 'Alice.png', chat: params.get('chat') }];
let this_chid;
let chat_metadata = {};
const chat = [];
const extension_settings = JSON.parse(params.get('settings') || '{}');
let isChatSaving = false;
const log = { saves: 0, saveErrors: [], settingsSaves: 0, toasts: [], chatChanged: 0 };
window.__st = log;

export const event_types = {
    APP_READY: 'app_ready', MESSAGE_SWIPED: 'message_swiped', MESSAGE_SENT: 'message_sent',
    MESSAGE_RECEIVED: 'message_received', MESSAGE_EDITED: 'message_edited', MESSAGE_DELETED: 'message_deleted',
    MESSAGE_UPDATED: 'message_updated', CHAT_CHANGED: 'chat_id_changed',
    USER_MESSAGE_RENDERED: 'user_message_rendered', CHARACTER_MESSAGE_RENDERED: 'character_message_rendered',
    MORE_MESSAGES_LOADED: 'more_messages_loaded',
};

class EventEmitter {
    constructor() { this.events = {}; }
    on(event, listener) { (this.events[event] ??= []).push(listener); }
    removeListener(event, listener) { this.events[event] = (this.events[event] ?? []).filter(l => l !== listener); }
    async emit(event, ...args) {
        for (const listener of this.events[event] ?? []) {
            try { await listener(...args); } catch (error) { console.error(error); }
        }
    }
}
export const eventSource = new EventEmitter();

function getCurrentChatId() {
    return this_chid !== undefined ? characters[this_chid]?.chat : undefined;
}

const chatElement = document.getElementById('chat');
const messageTemplate = document.querySelector('#message_template .mes');

function addOneMessage(mes, { insertAfter = null, scroll = true, insertBefore = null, forceId = null } = {}) {
    const messageId = typeof forceId === 'number' ? forceId
        : typeof insertBefore === 'number' ? insertBefore - 1
            : typeof insertAfter === 'number' ? insertAfter + 1
                : (chat.indexOf(mes) !== -1 ? chat.indexOf(mes) : chat.length - 1);
    const el = messageTemplate.cloneNode(true);
    el.setAttribute('mesid', String(messageId));
    el.setAttribute('ch_name', mes.name);
    el.setAttribute('is_user', String(!!mes.is_user));
    el.setAttribute('is_system', String(!!mes.is_system));
    el.querySelector('.name_text').textContent = mes.name;
    el.querySelector('.mesIDDisplay').textContent = `#${messageId}`;
    el.querySelector('.mes_text').textContent = mes.mes;
    const media = mes.extra?.media?.[0]?.url ?? mes.extra?.image;
    if (media) el.querySelector('.mes_img').src = media;
    if (typeof insertAfter === 'number' && insertAfter >= 0) {
        chatElement.querySelector(`.mes[mesid="${insertAfter}"]`).after(el);
    } else if (typeof insertBefore === 'number' && insertBefore >= 0) {
        chatElement.querySelector(`.mes[mesid="${insertBefore}"]`).before(el);
    } else {
        chatElement.append(el);
    }
    chatElement.querySelectorAll('.mes').forEach(m => m.classList.remove('last_mes'));
    chatElement.querySelector('.mes:last-child')?.classList.add('last_mes');
    if (!insertAfter && !insertBefore && scroll) el.scrollIntoView?.();
    return el;
}

async function post(url, body) {
    return fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), cache: 'no-cache' });
}

async function getChat() {
    const character = characters[this_chid];
    const response = await post('/api/chats/get', { ch_name: character.name, file_name: character.chat, avatar_url: character.avatar });
    const data = await response.json();
    chat.length = 0;
    if (data[0] !== undefined) {
        chat.push(...data);
        chat_metadata = chat[0].chat_metadata ?? {};
        chat.shift();
    }
    chatElement.replaceChildren();
    for (let i = 0; i < chat.length; i++) {
        addOneMessage(chat[i], { scroll: false, forceId: i });
        await eventSource.emit(chat[i].is_user ? event_types.USER_MESSAGE_RENDERED : event_types.CHARACTER_MESSAGE_RENDERED, i);
    }
    log.chatChanged++;
    await eventSource.emit(event_types.CHAT_CHANGED, getCurrentChatId());
}

async function saveChat() {
    const character = characters[this_chid];
    const header = { chat_metadata, user_name: 'unused', character_name: 'unused' };
    const response = await post('/api/chats/save', {
        ch_name: character.name, file_name: character.chat, chat: [header, ...chat], avatar_url: character.avatar, force: false,
    });
    if (!response.ok) log.saveErrors.push(await response.text());
    else log.saves++;
}

async function saveChatConditional() {
    while (isChatSaving) await new Promise(resolve => setTimeout(resolve, 100));
    try {
        isChatSaving = true;
        await saveChat();
    } finally {
        isChatSaving = false;
    }
}

async function reloadCurrentChat() {
    chatElement.replaceChildren();
    await getChat();
}

// --- popups (scripts/popup.js) --------------------------------------------------------------
const POPUP_TYPE = { TEXT: 1, CONFIRM: 2, INPUT: 3, DISPLAY: 4, CROP: 5 };
const POPUP_RESULT = { AFFIRMATIVE: 1, NEGATIVE: 0, CANCELLED: null };

class Popup {
    constructor(content, type, inputValue = '', { okButton = null, cancelButton = null, wide = false } = {}) {
        this.type = type;
        this.dlg = document.querySelector('#popup_template').content.cloneNode(true).querySelector('dialog');
        const box = this.dlg.querySelector('.popup-content');
        if (content instanceof HTMLElement) box.append(content);
        else box.innerHTML = String(content);
        if (wide) this.dlg.classList.add('wide_dialogue_popup');
        const ok = this.dlg.querySelector('.popup-button-ok');
        const cancel = this.dlg.querySelector('.popup-button-cancel');
        ok.textContent = typeof okButton === 'string' ? okButton : 'OK';
        // A TEXT popup shows no cancel button unless one is asked for.
        if (type === POPUP_TYPE.TEXT && !cancelButton) cancel.style.display = 'none';
        ok.addEventListener('click', () => this.complete(POPUP_RESULT.AFFIRMATIVE));
        cancel.addEventListener('click', () => this.complete(POPUP_RESULT.NEGATIVE));
        this.dlg.addEventListener('cancel', event => {
            event.preventDefault();
            this.completeCancelled();
        });
    }

    async show() {
        document.body.append(this.dlg);
        this.dlg.showModal();
        this.promise = new Promise(resolve => { this.resolver = resolve; });
        return this.promise;
    }

    async complete(result) {
        this.result = result;
        if (this.dlg.open) this.dlg.close();
        this.dlg.remove();
        this.resolver?.(result);
    }

    async completeCancelled() {
        return this.complete(POPUP_RESULT.CANCELLED);
    }
}

function callGenericPopup(content, type, inputValue = '', options = {}) {
    return new Popup(content, type, inputValue, options).show();
}

// --- slash commands (scripts/slash-commands/) -----------------------------------------------
const ARGUMENT_TYPE = { STRING: 'string', NUMBER: 'number', RANGE: 'range', BOOLEAN: 'bool', VARIABLE_NAME: 'varname', CLOSURE: 'closure', SUBCOMMAND: 'subcommand', LIST: 'list', DICTIONARY: 'dictionary' };
class SlashCommand {
    static fromProps(props) {
        return Object.assign(new SlashCommand(), { aliases: [], namedArgumentList: [], unnamedArgumentList: [], helpString: '' }, props);
    }
}
class SlashCommandArgument { static fromProps(props) { return Object.assign(new SlashCommandArgument(), props); } }
class SlashCommandNamedArgument { static fromProps(props) { return Object.assign(new SlashCommandNamedArgument(), props); } }
const SlashCommandParser = {
    commands: {},
    addCommandObject(command) {
        for (const name of [command.name, ...(command.aliases ?? [])]) this.commands[name] = command;
    },
    addCommand(name, callback, aliases, helpString = '') {
        this.addCommandObject(SlashCommand.fromProps({ name, callback, aliases, helpString }));
    },
};

/** `/name key=value ... rest`: named arguments as strings, the rest as one string (ST's parser). */
async function executeSlashCommands(text) {
    const match = /^\/(\S+)\s*(.*)$/s.exec(text.trim());
    const command = match && SlashCommandParser.commands[match[1]];
    if (!command) throw new Error(`unknown command ${text}`);
    const named = {};
    let rest = match[2];
    for (;;) {
        const arg = /^(\w+)=(\S+)\s*/.exec(rest);
        if (!arg) break;
        named[arg[1]] = arg[2];
        rest = rest.slice(arg[0].length);
    }
    return { pipe: await command.callback(named, rest.trim()) };
}

// --- toastr (a global in ST) ------------------------------------------------------------------
// Like the real toastr: the message is HTML unless escapeHtml is set (ST sets it globally only
// from 1.12.2; this stand-in, like 1.12.0/1.12.1, does not).
function toast(kind) {
    return (message, title, options = {}) => {
        log.toasts.push({ kind, message: String(message), escapeHtml: options?.escapeHtml === true });
        const el = document.createElement('div');
        el.className = `toast toast-${kind}`;
        const body = document.createElement('div');
        body.className = 'toast-message';
        if (options?.escapeHtml) body.textContent = message;
        else body.innerHTML = message;
        el.append(body);
        document.getElementById('toast-container').append(el);
        return [el];
    };
}
window.toastr = {
    info: toast('info'), success: toast('success'), warning: toast('warning'), error: toast('error'),
    clear(el) { (el?.[0] ?? el)?.remove?.(); },
};

function getContext() {
    return {
        chat, characters, groups: [], characterId: this_chid, groupId: null,
        chatId: characters[this_chid]?.chat, getCurrentChatId,
        eventSource, eventTypes: event_types, event_types,
        addOneMessage, reloadCurrentChat, saveChat: saveChatConditional,
        chatMetadata: chat_metadata,
        extensionSettings: extension_settings, saveSettingsDebounced: () => { log.settingsSaves++; },
        SlashCommandParser, SlashCommand, SlashCommandArgument, SlashCommandNamedArgument, ARGUMENT_TYPE,
        executeSlashCommands, registerSlashCommand: SlashCommandParser.addCommand.bind(SlashCommandParser),
        Popup, POPUP_TYPE, POPUP_RESULT, callGenericPopup,
    };
}
window.SillyTavern = { getContext };

// The test drives the page through these (what a user does in ST's UI).
window.__stTest = {
    executeSlashCommands,
    openChat: async () => { this_chid = 0; await getChat(); },
    closeChat: async () => { this_chid = undefined; chat.length = 0; chatElement.replaceChildren(); await eventSource.emit(event_types.CHAT_CHANGED, undefined); },
    reloadCurrentChat,
    /** The user sends a message: ST pushes it, renders it and saves at once. */
    async sendUser(text) {
        const message = { name: 'User', is_user: true, is_system: false, send_date: new Date().toISOString(), mes: text, extra: { isSmallSys: false } };
        chat.push(message);
        addOneMessage(message);
        await saveChatConditional();
    },
    /**
     * A generated reply arrives, rendered and saved. As in a real ST (1.12 to 1.19) its dates
     * are Date objects in memory (`generation_started = new Date()`); only the saved file has
     * them as ISO text.
     */
    async reply(text) {
        const now = new Date();
        const extra = { api: 'custom', model: 'mock-model' };
        const message = {
            extra, name: characters[this_chid].name, is_user: false, send_date: now.toISOString(), mes: text, title: '',
            gen_started: now, gen_finished: now, swipes: [text], swipe_id: 0,
            swipe_info: [{ send_date: now.toISOString(), gen_started: now, gen_finished: now, extra: { ...extra } }],
        };
        chat.push(message);
        addOneMessage(message);
        await eventSource.emit(event_types.CHARACTER_MESSAGE_RENDERED, chat.length - 1);
        await saveChatConditional();
    },
    markers: () => chat.map(m => m?.extra?.st_imagegen_job ?? null),
};

// ST loads each extension's manifest, then its css and js (scripts/extensions.js
// addExtensionStyle/addExtensionScript), before any chat is open.
const base = '/scripts/extensions/third-party/st-imagegen';
const manifest = await (await fetch(`${base}/manifest.json`)).json();
const style = document.createElement('link');
style.rel = 'stylesheet';
style.href = `${base}/${manifest.css}`;
document.head.append(style);
await new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.type = 'module';
    script.src = `${base}/${manifest.js}`;
    script.onload = resolve;
    script.onerror = reject;
    document.body.append(script);
});
await eventSource.emit(event_types.APP_READY);
window.__stReady = true;
