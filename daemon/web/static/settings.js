// st-imagegen: the setup screen and the settings page (one script, two pages).
// Every change goes to POST /api/v1/settings, which checks it with the daemon's own models
// and applies it at once; keys are sent, never shown back (only "set" and the last 4).
"use strict";
(() => {
  const { api, toast, refreshStatus } = window.stImagegen;

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  };

  const secretText = (value) => {
    if (!value || !value.set) return "not set";
    return value.last4 ? `set (ends in ${value.last4})` : "set";
  };

  const say = (node, text, kind) => {
    node.textContent = text;
    node.dataset.kind = kind || "";
    node.hidden = !text;
  };

  // --- a service step: presets, address, key, Test, models (setup screen) -----------------

  const serviceStep = (section, view, state) => {
    const box = document.querySelector(`.step[data-section="${section}"]`);
    const presetsBox = box.querySelector(".presets");
    const form = box.querySelector(".service-form");
    const presets = view.presets[section];
    const current = {};
    for (const group of view.groups) for (const f of group.fields) current[f.key] = f.value;
    const step = { preset: null, inputs: {} };
    state[section] = step;

    const url = el("input", { type: "url", id: `${section}-url`, placeholder: "http://127.0.0.1:5001/v1", autocomplete: "off" });
    const key = el("input", { type: "password", id: `${section}-key`, autocomplete: "new-password", spellcheck: "false" });
    const keyNote = el("span", { class: "hint", id: `${section}-key-note` });
    const keyLink = el("a", { target: "_blank", rel: "noopener noreferrer" });
    const model = el("select", { id: `${section}-model` });
    const modelText = el("input", { id: `${section}-model-text`, placeholder: "model name", autocomplete: "off" });
    const result = el("p", { class: "result", id: `${section}-result`, role: "status", "aria-live": "polite" });
    const test = el("button", { type: "button", id: `${section}-test`, text: "Test" });
    const load = el("button", { type: "button", id: `${section}-load-models`, text: "Load models" });
    const urlRow = el("label", { class: "row" }, el("span", { text: "Address" }), url);
    const keyRow = el("label", { class: "row" }, el("span", { text: "Key" }), key, keyNote, keyLink);
    const modelRow = el("div", { class: "row" }, el("label", { for: `${section}-model`, text: "Model" }), model, modelText, load);
    form.append(urlRow, keyRow, modelRow, el("div", { class: "actions" }, test), result);
    step.inputs = { url, key, model, modelText };
    keyNote.textContent = secretText(current[`${section}.api_key`]);

    const changes = () => {
      const out = { ...(step.preset ? step.preset.values : {}) };
      if (step.preset && step.preset.needs_url) out[`${section}.api_url`] = url.value.trim();
      const chosen = model.value === "__other__" || !model.options.length ? modelText.value.trim() : model.value;
      if (chosen) out[`${section}.model`] = chosen;
      return out;
    };
    const secrets = () => (key.value.trim() ? { [`${section}.api_key`]: key.value.trim() } : {});
    step.changes = changes;
    step.secrets = secrets;

    const fillModels = (names, wanted) => {
      model.replaceChildren();
      for (const name of names) model.append(el("option", { value: name, text: name }));
      model.append(el("option", { value: "__other__", text: "another model…" }));
      if (wanted && names.includes(wanted)) model.value = wanted;
      else if (wanted) { model.value = "__other__"; modelText.value = wanted; }
      modelText.hidden = model.value !== "__other__";
    };
    model.addEventListener("change", () => { modelText.hidden = model.value !== "__other__"; });

    const pick = (preset) => {
      step.preset = preset;
      form.hidden = false;
      for (const card of presetsBox.querySelectorAll(".preset")) {
        card.setAttribute("aria-checked", card.dataset.name === preset.name ? "true" : "false");
      }
      const needsModel = preset.values[`${section}.mode`] !== "template";
      urlRow.hidden = !preset.needs_url;
      keyRow.hidden = !preset.needs_key && !preset.needs_url;
      keyLink.hidden = !preset.key_url;
      if (preset.key_url) { keyLink.href = preset.key_url; keyLink.textContent = "get a key"; }
      modelRow.hidden = !needsModel;
      test.hidden = !needsModel;
      model.replaceChildren();
      modelText.value = preset.values[`${section}.model`] || "";
      modelText.hidden = false;
      say(result, preset.notes || "", "");
    };

    for (const preset of presets) {
      const card = el(
        "button",
        { type: "button", class: "preset", role: "radio", "aria-checked": "false", "data-name": preset.name, onclick: () => pick(preset) },
        el("span", { class: "preset-title", text: preset.title }),
        el("span", { class: "preset-note", text: preset.needs_key ? "needs a key" : (preset.local ? "on this machine, no key" : "no key needed") }),
      );
      presetsBox.append(card);
    }

    test.addEventListener("click", async () => {
      if (!step.preset) { say(result, "Pick a service first.", "fail"); return; }
      test.disabled = true;
      say(result, "Testing…", "");
      try {
        const answer = await api("POST", "/api/v1/settings/test", { section, changes: changes(), secrets: secrets() });
        const text = answer.ok ? `Works: ${answer.detail}` : `${answer.detail}${answer.fix ? ` (${answer.fix})` : ""}`;
        say(result, text, answer.ok ? "ok" : "fail");
        if (answer.ok) loadModels(true);
      } catch (error) {
        say(result, error.message, "fail");
      } finally {
        test.disabled = false;
      }
    });

    const loadModels = async (quiet) => {
      load.disabled = true;
      try {
        const answer = await api("POST", "/api/v1/settings/models", { section, changes: changes(), secrets: secrets() });
        // Keep what is chosen (a reload of the list must not change the model under the user).
        const picked = model.value && model.value !== "__other__" ? model.value : "";
        const wanted = picked || modelText.value.trim() || (step.preset && step.preset.values[`${section}.model`]);
        fillModels(answer.models, wanted);
      } catch (error) {
        if (!quiet) say(result, `No model list: ${error.message}`, "fail");
      } finally {
        load.disabled = false;
      }
    };
    load.addEventListener("click", () => loadModels(false));

    // Start on the preset matching the config, when one does ("any service" only when an
    // address is already set: it is filled in then).
    form.hidden = true;
    const configured = Boolean(current[`${section}.api_url`]);
    const match = presets.find((p) => (!p.needs_url || configured)
      && Object.entries(p.values).every(([k, v]) => current[k] === v));
    if (match) {
      pick(match);
      if (match.needs_url) url.value = current[`${section}.api_url`] || "";
    }
  };

  const setupPage = async () => {
    const loadError = document.getElementById("load-error");
    let view;
    try {
      view = await api("GET", "/api/v1/settings");
    } catch (error) {
      say(loadError, `The settings cannot be loaded: ${error.message}`, "fail");
      return;
    }
    const state = {};
    serviceStep("image", view, state);
    serviceStep("text", view, state);
    const save = document.getElementById("save-setup");
    const out = document.getElementById("save-result");
    save.addEventListener("click", async () => {
      if (!state.image.preset || !state.text.preset) {
        say(out, "Pick an image service and a prompt writer first.", "fail");
        return;
      }
      const changes = { ...state.image.changes(), ...state.text.changes() };
      changes.mode = document.querySelector("input[name=mode]:checked").value;
      changes.approval = document.querySelector("input[name=approval]:checked").value;
      const secrets = { ...state.image.secrets(), ...state.text.secrets() };
      save.disabled = true;
      try {
        const answer = await api("POST", "/api/v1/settings", { changes, secrets });
        state.image.inputs.key.value = "";
        state.text.inputs.key.value = "";
        if (answer.state.setup_needed.length) {
          say(out, `Saved, but still missing: ${answer.state.setup_needed.join(", ")}.`, "fail");
        } else {
          say(out, "Saved. New replies are illustrated from now on.", "ok");
          refreshStatus();
          setTimeout(() => { window.location.href = "/"; }, 1200);
        }
      } catch (error) {
        say(out, error.message, "fail");
      } finally {
        save.disabled = false;
      }
    });
  };

  // --- the settings page -------------------------------------------------------------------

  const fieldInput = (field) => {
    const id = `f-${field.key.replace(/\./g, "-")}`;
    const disabled = Boolean(field.pinned_by);
    let input;
    if (field.kind === "bool") {
      input = el("input", { type: "checkbox", id, disabled });
      input.checked = Boolean(field.value);
    } else if (field.kind === "choice") {
      input = el("select", { id, disabled });
      for (const choice of field.choices) input.append(el("option", { value: choice, text: choice || "(none)" }));
      input.value = field.value ?? "";
    } else if (field.kind === "textarea") {
      input = el("textarea", { id, rows: 5, disabled });
      input.value = field.value ?? "";
    } else if (field.kind === "secret") {
      input = el("input", { type: "password", id, autocomplete: "new-password", disabled, placeholder: field.value && field.value.set ? "type a new key to replace it" : "" });
    } else if (field.kind === "list") {
      input = el("input", { id, disabled, placeholder: "names, separated by commas" });
      input.value = (field.value || []).join(", ");
    } else {
      input = el("input", { id, disabled, type: field.kind === "number" ? "number" : "text", step: "any" });
      input.value = field.value ?? "";
    }
    input.dataset.key = field.key;
    input.dataset.kind = field.kind;
    return input;
  };

  const readInput = (input) => {
    const kind = input.dataset.kind;
    if (kind === "bool") return input.checked;
    if (kind === "number") return input.value === "" ? null : Number(input.value);
    if (kind === "list") return input.value.split(",").map((s) => s.trim()).filter(Boolean);
    return input.value;
  };

  const saidFor = {};  // group id -> the last save's answer [text, kind]

  const renderGroups = (view) => {
    const box = document.getElementById("groups");
    box.replaceChildren();
    for (const group of view.groups) {
      const form = el("form", { class: "group-box", "data-group": group.id, autocomplete: "off" }, el("h2", { text: group.title }));
      const inputs = [];
      for (const field of group.fields) {
        const input = fieldInput(field);
        inputs.push([field, input]);
        const row = el("div", { class: "field", "data-key": field.key },
          el("label", { for: input.id, text: field.label }), input);
        if (field.kind === "secret") row.append(el("span", { class: "hint", text: secretText(field.value) }));
        if (field.default) {
          row.append(el("button", { type: "button", text: "Reset to default", onclick: () => { input.value = field.default; } }));
        }
        if (field.help) row.append(el("span", { class: "hint", text: field.help }));
        if (field.pinned_by) row.append(el("span", { class: "pinned", text: `set by ${field.pinned_by}: change it there` }));
        if (field.restart) row.append(el("span", { class: "hint", text: "restart to apply" }));
        row.append(el("span", { class: "error field-error", hidden: true }));
        form.append(row);
      }
      const result = el("span", { class: "result", role: "status", "aria-live": "polite" });
      if (saidFor[group.id]) say(result, ...saidFor[group.id]);  // kept across a redraw
      form.append(el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Save" }), result));
      form.addEventListener("input", () => { form.dataset.dirty = "1"; });
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const changes = {};
        const secrets = {};
        for (const [field, input] of inputs) {
          if (field.pinned_by) continue;
          if (field.kind === "secret") {
            if (input.value.trim()) secrets[field.key] = input.value.trim();
            continue;
          }
          const value = readInput(input);
          if (JSON.stringify(value) !== JSON.stringify(field.value ?? (field.kind === "list" ? [] : ""))) changes[field.key] = value;
        }
        for (const err of form.querySelectorAll(".field-error")) err.hidden = true;
        if (!Object.keys(changes).length && !Object.keys(secrets).length) {
          say(result, "Nothing changed.", "");
          return;
        }
        try {
          const answer = await api("POST", "/api/v1/settings", { changes, secrets });
          saidFor[group.id] = ["Saved: the next job uses it.", "ok"];
          render(answer);  // the forms are drawn again with the saved values
          refreshStatus();
        } catch (error) {
          saidFor[group.id] = [error.message, "fail"];
          say(result, error.message, "fail");
          const key = error.key;
          const row = key && form.querySelector(`.field[data-key="${CSS.escape(key)}"] .field-error`);
          if (row) say(row, error.message, "fail");
        }
      });
      box.append(form);
    }
  };

  const renderStyles = (view) => {
    const list = document.getElementById("style-list");
    const form = document.getElementById("style-edit");
    list.replaceChildren();
    for (const style of view.styles) {
      const item = el("li", { class: "style-item", "data-style": style.name },
        el("strong", { text: style.name }),
        el("span", { class: "badge", text: style.default ? "default" : style.origin }),
        el("span", { class: "style-words", text: [style.prefix, style.suffix].filter(Boolean).join(" … ") }),
        el("button", { type: "button", text: "Edit", onclick: () => editStyle(style) }));
      if (style.origin === "config") {
        item.append(el("button", { type: "button", class: "danger", text: style.overrides_shipped ? "Back to shipped" : "Delete", onclick: () => deleteStyle(style.name) }));
      }
      list.append(item);
    }
    form.dataset.ready = "1";
  };

  const editStyle = (style) => {
    const form = document.getElementById("style-edit");
    document.getElementById("style-edit-title").textContent = style ? `Edit ${style.name}` : "New style";
    for (const name of ["name", "prefix", "suffix", "negative", "size"]) form.elements[name].value = style ? style[name] || "" : "";
    form.elements.name.readOnly = Boolean(style);
    preview();
  };

  const deleteStyle = async (name) => {
    try {
      const answer = await api("POST", "/api/v1/settings", { changes: { [`styles.${name}`]: null } });
      render(answer);
      toast(`Style ${name} removed from the config file.`);
    } catch (error) {
      toast(error.message);
    }
  };

  let previewTimer = 0;
  const preview = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      const form = document.getElementById("style-edit");
      const box = document.getElementById("style-preview");
      const style = { prefix: form.elements.prefix.value, suffix: form.elements.suffix.value, negative: form.elements.negative.value };
      try {
        const answer = await api("POST", "/api/v1/settings/preview", { style });
        const parts = [];
        if (answer.llm) {
          // The exact request the prompt writer sends for the sample reply, then the image
          // prompt built around whatever the LLM answers.
          parts.push(el("p", { class: "hint", text: `Sent to the prompt writer (${answer.request.url}) for a sample reply (the character Mira, her appearance tags and the persona are examples; everything else is your configuration):` }));
          for (const message of answer.request.body.messages) {
            parts.push(el("p", { class: "hint", text: `${message.role}:` }), el("pre", { class: "sent", "data-role": message.role, text: message.content }));
          }
          const rest = Object.fromEntries(Object.entries(answer.request.body).filter(([key]) => key !== "messages"));
          parts.push(el("p", { class: "hint", text: `With: ${JSON.stringify(rest)}` }));
          parts.push(el("p", { class: "hint", text: `Then sent to the image service, the LLM's answer (at most ${answer.answer_room} characters) in its place:` }));
        } else {
          parts.push(el("p", { class: "hint", text: "Sent to the image service for a sample reply (template prompt writer):" }));
        }
        parts.push(el("pre", { class: "sent", id: "preview-prompt", text: answer.prompt }));
        parts.push(el("p", { class: "hint", text: `Negative: ${answer.negative || "(none)"}` }));
        box.replaceChildren(...parts);
      } catch (error) {
        box.textContent = error.message;
      }
    }, 250);
  };

  const renderAdvanced = (view) => {
    const body = document.getElementById("advanced");
    body.replaceChildren();
    for (const row of view.advanced) {
      let value = row.value;
      if (value && typeof value === "object" && "set" in value && "last4" in value) value = secretText(value);
      else if (typeof value !== "string") value = JSON.stringify(value);
      const notes = [row.pinned_by ? `set by ${row.pinned_by}` : "", row.restart ? "restart to apply" : ""].filter(Boolean).join("; ");
      body.append(el("tr", {}, el("th", { scope: "row", text: row.key }), el("td", { text: value }), el("td", { class: "hint", text: notes })));
    }
  };

  const renderState = (view) => {
    const state = view.state;
    document.getElementById("config-file").textContent = `Saved to ${view.file}; a hand edit of that file is picked up at once.`;
    const problem = document.getElementById("config-problem");
    if (state.problem) {
      const where = state.problem.line ? ` (line ${state.problem.line})` : "";
      say(problem, `The config file has an error${where}, so it was not applied; the last good settings keep running. ${state.problem.message}`, "fail");
    } else {
      say(problem, "", "");
    }
    const restart = document.getElementById("restart-pending");
    say(restart, state.restart_pending.length ? `Restart pending: ${state.restart_pending.join(", ")} changed in the file; restart the daemon to apply.` : "", "");
  };

  // --- characters ------------------------------------------------------------------------

  const FROM = { profile: "set here", "st-settings": "SillyTavern's prompt for the card", card: "the card", none: "none" };

  const characterItem = (c, styleNames) => {
    const id = `c-${c.user}-${c.stem}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const appearance = el("input", { id: `${id}-appearance`, placeholder: "tags, e.g. red hair, green eyes" });
    appearance.value = c.appearance_from === "profile" ? c.appearance || "" : "";
    const negative = el("input", { id: `${id}-negative` });
    negative.value = c.negative_from === "profile" ? c.negative || "" : "";
    const style = el("select", { id: `${id}-style` });
    style.append(el("option", { value: "", text: "(the default)" }));
    for (const name of [...styleNames, "none"]) style.append(el("option", { value: name, text: name }));
    style.value = c.style_from === "character" ? c.style : "";
    const refs = el("select", { id: `${id}-refs` });
    for (const [value, label] of [["default", "as the image service setting"], ["on", "on"], ["off", "off"]]) refs.append(el("option", { value, text: label }));
    const file = el("input", { type: "file", accept: "image/png,image/jpeg,image/webp", id: `${id}-upload` });
    const result = el("span", { class: "result", role: "status", "aria-live": "polite" });
    const save = el("button", { type: "button", class: "primary", text: "Save" });
    const clear = el("button", { type: "button", class: "danger", text: "Remove reference images" });
    const now = el("p", { class: "hint" });
    const describe = (d) => {
      const tags = d.appearance ? `${d.appearance} (from ${FROM[d.appearance_from] || d.appearance_from})` : "no appearance tags";
      const look = d.style && d.style !== "none" ? `style ${d.style} (from the ${d.style_from})` : "no style";
      const count = Array.isArray(d.references) ? d.references.length : d.references;
      now.textContent = `Next picture: ${tags}; ${look}; references ${d.use_references ? "on" : "off"} (${count} image${count === 1 ? "" : "s"} chosen).`;
    };
    describe(c);
    const target = `/api/v1/characters/${encodeURIComponent(c.stem)}`;
    save.addEventListener("click", async () => {
      try {
        const d = await api("POST", target, { appearance: appearance.value, negative: negative.value, style: style.value, references: refs.value });
        describe(d);
        say(result, "Saved: the next picture uses it.", "ok");
      } catch (error) { say(result, error.message, "fail"); }
    });
    file.addEventListener("change", () => {
      const chosen = file.files && file.files[0];
      if (!chosen) return;
      const reader = new FileReader();
      reader.onload = async () => {
        const data = String(reader.result).split(",", 2)[1] || "";
        try {
          const d = await api("POST", `${target}/references`, { data_base64: data });
          describe(d);
          say(result, "Reference image kept.", "ok");
        } catch (error) { say(result, error.message, "fail"); }
        file.value = "";
      };
      reader.readAsDataURL(chosen);
    });
    clear.addEventListener("click", async () => {
      try {
        await api("POST", `${target}/references/clear`, {});
        describe({ ...c, references: [] });
        say(result, "Reference images removed.", "ok");
      } catch (error) { say(result, error.message, "fail"); }
    });
    return el("li", { class: "char", "data-character": c.stem },
      el("img", { class: "avatar", src: c.avatar, alt: "", width: 64, height: 64, loading: "lazy" }),
      el("div", { class: "char-body" },
        el("h3", { text: c.name || c.stem }),
        now,
        el("label", { class: "row" }, el("span", { text: "Appearance" }), appearance),
        el("label", { class: "row" }, el("span", { text: "Never" }), negative),
        el("label", { class: "row" }, el("span", { text: "Style" }), style),
        el("label", { class: "row" }, el("span", { text: "References" }), refs),
        el("label", { class: "row" }, el("span", { text: "Add a reference" }), file),
        el("div", { class: "actions" }, save, clear, result)));
  };

  // Included / excluded characters: picked from the data root's cards (avatars), not typed.
  const addPickers = (characters) => {
    for (const key of ["detect.include_characters", "detect.exclude_characters"]) {
      const input = document.querySelector(`[data-key="${key}"] input`);
      if (!input || input.disabled) continue;
      const row = input.closest(".field");
      row.querySelector(".picker")?.remove();
      const picker = el("div", { class: "picker", role: "group", "aria-label": "characters" });
      const chosen = () => input.value.split(",").map((t) => t.trim()).filter(Boolean);
      const sync = () => {
        const now = new Set(chosen().map((t) => t.toLowerCase()));
        for (const b of picker.children) b.setAttribute("aria-pressed", now.has(b.dataset.name.toLowerCase()) ? "true" : "false");
      };
      for (const c of characters) {
        const name = c.stem;
        picker.append(el("button", {
          type: "button", class: "pick-char", "data-name": name, "aria-pressed": "false",
          onclick: () => {
            const names = chosen();
            const at = names.findIndex((t) => t.toLowerCase() === name.toLowerCase());
            if (at >= 0) names.splice(at, 1); else names.push(name);
            input.value = names.join(", ");
            input.form.dataset.dirty = "1";
            sync();
          },
        }, el("img", { src: c.avatar, alt: "", width: 24, height: 24 }), el("span", { text: c.name || name })));
      }
      input.addEventListener("input", sync);
      row.append(picker);
      sync();
    }
  };

  const renderCharacters = async (view) => {
    const list = document.getElementById("char-list");
    if (!list) return;
    try {
      const answer = await api("GET", "/api/v1/characters");
      const names = view.styles.map((s) => s.name);
      list.replaceChildren(...answer.characters.map((c) => characterItem(c, names)));
      knownCharacters = answer.characters;
      addPickers(answer.characters);
      if (!answer.characters.length) list.append(el("li", { class: "hint", text: "No character cards in the data root yet." }));
    } catch (error) {
      list.replaceChildren(el("li", { class: "error", text: error.message }));
    }
  };

  let knownCharacters = null;
  const render = (view) => {
    renderState(view);
    renderGroups(view);
    renderStyles(view);
    renderAdvanced(view);
    if (knownCharacters) addPickers(knownCharacters);
  };

  const settingsPage = async () => {
    const loadError = document.getElementById("load-error");
    let view;
    try {
      view = await api("GET", "/api/v1/settings");
    } catch (error) {
      say(loadError, `The settings cannot be loaded: ${error.message}`, "fail");
      return;
    }
    render(view);
    renderCharacters(view);
    const form = document.getElementById("style-edit");
    for (const name of ["prefix", "suffix", "negative"]) form.elements[name].addEventListener("input", preview);
    document.getElementById("style-new").addEventListener("click", () => editStyle(null));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = form.elements.name.value.trim().toLowerCase();
      const changes = {};
      for (const field of ["prefix", "suffix", "negative", "size"]) changes[`styles.${name}.${field}`] = form.elements[field].value.trim();
      const err = document.getElementById("style-error");
      try {
        const answer = await api("POST", "/api/v1/settings", { changes });
        say(err, "", "");
        render(answer);
        toast(`Style ${name} saved: the next picture that uses it shows it.`);
        editStyle(answer.styles.find((s) => s.name === name));
      } catch (error) {
        say(err, error.message, "fail");
      }
    });
    // A hand edit of the file (or a broken one) shows here without a reload.
    const events = new EventSource("/api/v1/events");
    events.addEventListener("config", async () => {
      try {
        const fresh = await api("GET", "/api/v1/settings");
        if (document.querySelector("form[data-group][data-dirty]")) {
          renderState(fresh);  // never wipe what is being typed
          toast("The config file changed; save or reload to see its values here.");
        } else {
          render(fresh);
        }
      } catch (_) { /* the next event retries */ }
    });
    preview();
  };

  document.addEventListener("DOMContentLoaded", () => {
    if (document.body.dataset.page === "setup") setupPage();
    else if (document.body.dataset.page === "settings") settingsPage();
  });
})();
