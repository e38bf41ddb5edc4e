// st-imagegen inbox: a place to look at pictures and choose. Cards from the embedded jobs, kept
// live by /api/v1/events; a viewer (lightbox) for the full pictures; undo for reject.
// Every text from a chat or a prompt goes in through textContent, never as HTML.
"use strict";
(() => {
  const S = window.stImagegen;
  // The state groups from the daemon's vocabulary (GET /api/v1/meta, embedded in the page).
  const CHOICE = new Set(S.meta.groups.choice);
  const WORKING = new Set(S.meta.groups.working);
  const CANCELLABLE = new Set(S.meta.groups.cancellable);
  const initial = JSON.parse(document.getElementById("initial").textContent);
  const filter = initial.filter || {};
  const jobs = new Map();
  const cards = new Map(); // id -> {el, stamp}
  const picked = new Map(); // id -> Set of image numbers
  const drafts = new Map(); // id -> edited prompt (edit mode when present)
  const cursor = new Map(); // id -> image shown on the card (1-based)
  const selected = new Set(); // bulk selection
  const busy = new Set();
  const accepting = new Map(); // id -> how many images the user accepted here (toast on commit)
  let focusId = null;
  let renderQueued = false;
  let connections = 0;
  let online = true;
  let more = initial.more || null;
  let total = initial.total || 0;
  let selecting = false;
  let viewer = null; // {id, n} while the viewer is open
  // The event stream is the order of truth. An answer to a request (an action, a list) may
  // reach the page after the stream has told a later change of the same job (a regenerated
  // job drawn and pending before the regen's answer, which says "queued"): such an answer is
  // older and must not be put over it. `heard` counts the stream's job events; heardAt keeps,
  // per job, the count at its last event. An answer is put only when the stream has said
  // nothing about that job since the request went out; otherwise the stream has brought, or
  // will bring, a state at least as new.
  let heard = 0;
  const heardAt = new Map(); // id -> `heard` at that job's last event
  const HEARD_KEPT = 2000;
  const hear = (id) => {
    heard += 1;
    heardAt.delete(id); // re-inserted last: the oldest marks go first when the map is trimmed
    heardAt.set(id, heard);
    if (heardAt.size > HEARD_KEPT) heardAt.delete(heardAt.keys().next().value);
  };
  const heardSince = (id, mark) => (heardAt.get(id) || 0) > mark;

  const matches = (job) => (!filter.chat || job.chat === filter.chat)
    && (!filter.character || (!job.is_group && job.chat_folder === filter.character));
  const put = (job) => {
    if ((CHOICE.has(job.state) || WORKING.has(job.state)) && matches(job)) {
      const before = jobs.get(job.id);
      jobs.set(job.id, job);
      if (!picked.has(job.id) && job.images.some((i) => i.earlier)) {
        // A regeneration: the new set is picked, the earlier one offered beside it.
        picked.set(job.id, new Set(job.images.filter((i) => !i.earlier).map((i) => i.index)));
      }
      if (before && CHOICE.has(before.state) !== CHOICE.has(job.state)) total += CHOICE.has(job.state) ? 1 : -1;
      else if (!before && CHOICE.has(job.state)) total += 1;
    } else {
      if (jobs.has(job.id) && CHOICE.has(jobs.get(job.id).state)) total = Math.max(0, total - 1);
      forget(job.id);
    }
  };
  const forget = (id) => {
    if (focusId === id) focusId = neighbour(id);
    jobs.delete(id); picked.delete(id); drafts.delete(id); cursor.delete(id); selected.delete(id);
  };
  for (const job of initial.jobs) put(job);
  total = initial.total || 0;

  const h = (tag, props, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) if (child) node.append(child);
    return node;
  };

  // The reply as SillyTavern shows it: *italic*, **bold**, "speech"; any HTML stays text.
  const stText = (text) => {
    const out = document.createDocumentFragment();
    const pattern = /(\*\*[^*\n]+\*\*|\*[^*\n]+\*|"[^"\n]+"|“[^”\n]+”)/g;
    let at = 0;
    for (const m of text.matchAll(pattern)) {
      if (m.index > at) out.append(text.slice(at, m.index));
      const token = m[0];
      if (token.startsWith("**")) out.append(h("strong", { text: token.slice(2, -2) }));
      else if (token.startsWith("*")) out.append(h("em", { text: token.slice(1, -1) }));
      else out.append(h("span", { class: "speech", text: token }));
      at = m.index + token.length;
    }
    if (at < text.length) out.append(text.slice(at));
    return out;
  };

  const who = (job) => job.speaker || job.character;
  const label = (job) => `${who(job)}'s #${job.mesid}`;
  const byNewest = (a, b) => (a.id < b.id ? 1 : -1);
  const choiceJobs = () => [...jobs.values()].filter((j) => CHOICE.has(j.state)).sort(byNewest);
  const workingJobs = () => [...jobs.values()].filter((j) => WORKING.has(j.state)).sort((a, b) => (a.id < b.id ? -1 : 1));
  const visibleOrder = () => [...document.querySelectorAll("#grid .card")].map((c) => c.dataset.id);
  function neighbour(id) {
    const order = visibleOrder().filter((x) => x === id || !busy.has(x));
    const i = order.indexOf(id);
    if (i < 0) return null;
    return order[i + 1] || order[i - 1] || null;
  }

  const chosenOf = (job) => picked.get(job.id) || new Set();
  const acceptLabel = (job) => {
    const chosen = chosenOf(job);
    const n = job.images.length;
    if (picked.has(job.id) && (chosen.size !== n || job.images.some((i) => i.earlier))) {
      return chosen.size ? `Accept picked (${chosen.size})` : "Pick images to accept";
    }
    return n > 1 ? `Accept all ${n}` : "Accept";
  };
  const whyNotAccept = (job) => {
    if (job.state === "failed") return `${label(job)} failed, so there is nothing to accept: press g to retry or r to dismiss.`;
    if (CANCELLABLE.has(job.state)) return `${label(job)} is ${job.state}: its pictures are not drawn yet (c cancels it).`;
    if (job.state === "accepted") return `${label(job)} is already accepted and being written into the chat.`;
    if (job.state === "pending" && picked.has(job.id) && chosenOf(job).size === 0) return "No image is picked: pick one (space or 1–9) or press r to reject.";
    return null;
  };

  const actionButton = (job, act, text, cls) => h("button", {
    type: "button", "data-act": act, class: cls || "", text, disabled: busy.has(job.id) || !online,
  });

  const buildCard = (job) => {
    const chosen = chosenOf(job);
    const n = job.images.length;
    const at = Math.min(cursor.get(job.id) || 1, Math.max(1, n));
    const card = h("article", {
      class: `card state-${job.state}` + (busy.has(job.id) ? " busy" : ""), tabIndex: 0,
      "data-id": job.id, "data-state": job.state, id: `job-${job.id}`,
      "aria-label": `${who(job)}, ${job.chat_name}, message ${job.mesid}, ${job.state}`,
    });
    const head = h("div", { class: "card-head" });
    if (selecting) {
      head.append(h("label", { class: "select" }, h("input", {
        type: "checkbox", checked: selected.has(job.id), "aria-label": `select ${label(job)}`, "data-act": "select",
      })));
    }
    head.append(h("strong", { class: "who", text: who(job) }), h("span", { class: "mes", text: `#${job.mesid}` }));
    if (job.state === "failed") head.append(h("span", { class: "badge badge-failed", text: "failed" }));
    head.append(h("time", { dateTime: job.created_at, title: job.created_at, text: S.ago(job.created_at) }));
    card.append(head, h("p", { class: "chatname", text: job.chat_name }));
    if (n && job.state === "pending") {
      const image = job.images[at - 1];
      const cover = h("div", { class: "cover" });
      cover.append(h("button", {
        type: "button", class: "look", "data-act": "view", "data-n": String(at),
        "aria-label": `view image ${at} of ${n} large`,
      }, h("img", { src: image.thumb, alt: `image ${at} of ${label(job)}`, decoding: "async", loading: "lazy" })));
      cover.append(h("button", {
        type: "button", class: "pick", "data-act": "pick", "data-n": String(at),
        "aria-pressed": String(chosen.has(at)), "aria-label": `pick image ${at}`, title: "pick (space)",
        text: "✓",
      }));
      if (n > 1) cover.append(h("span", { class: "counter", text: `${at} / ${n}` }));
      if (image.earlier) cover.append(h("span", { class: "earlier", title: image.prompt, text: "earlier set" }));
      card.append(cover);
      if (n > 1) {
        const strip = h("div", { class: "thumbs", role: "group", "aria-label": "images" });
        for (const img of job.images) {
          strip.append(h("button", {
            type: "button", class: "thumb" + (img.index === at ? " cursor" : "") + (img.earlier ? " old" : ""),
            "data-act": "show", "data-n": String(img.index), "aria-pressed": String(chosen.has(img.index)),
            "aria-label": `show image ${img.index}${chosen.has(img.index) ? " (picked)" : ""}${img.earlier ? " (earlier set)" : ""}`,
            title: img.earlier ? `earlier set: ${img.prompt}` : `image ${img.index}`,
          }, h("img", { src: img.thumb, alt: "", loading: "lazy", decoding: "async" }),
            h("span", { class: "num", text: String(img.index) })));
        }
        card.append(strip);
      }
    }
    if (job.excerpt) card.append(h("blockquote", { class: "excerpt" }, stText(job.excerpt)));
    const draft = drafts.get(job.id);
    if (draft !== undefined) {
      const area = h("textarea", { class: "prompt-edit", value: draft, "aria-label": "new prompt" });
      area.addEventListener("input", () => drafts.set(job.id, area.value));
      card.append(area);
    } else if (job.prompt) {
      card.append(h("p", { class: "prompt", text: job.prompt, title: job.prompt }));
    }
    if (job.last_error && job.state === "failed") card.append(h("p", { class: "error", text: job.last_error }));
    const actions = h("div", { class: "actions" });
    const button = (act, text, cls) => actionButton(job, act, text, cls);
    if (draft !== undefined) {
      actions.append(button("regen-edited", "Regenerate with this prompt", "primary"), button("cancel-edit", "Cancel"));
    } else if (job.state === "pending") {
      actions.append(button("accept", acceptLabel(job), "primary"), button("reject", "Reject", "danger"),
        button("regen", "Regenerate"), button("edit", "Edit prompt"));
    } else if (job.state === "failed") {
      actions.append(button("regen", "Retry", "primary"), button("edit", "Edit prompt"), button("reject", "Dismiss", "danger"));
    }
    card.append(actions);
    if (draft !== undefined) {
      const area = card.querySelector("textarea");
      requestAnimationFrame(() => { if (document.activeElement !== area && focusId === job.id) area.focus(); });
    }
    return card;
  };

  const buildChip = (job) => {
    const text = job.progress ? job.progress.text
      + (typeof job.progress.fraction === "number" ? ` ${Math.round(job.progress.fraction * 100)}%` : "")
      + (job.attempts ? ` (try ${job.attempts + 1})` : "") : job.state;
    const chip = h("li", { class: `chip state-${job.state}`, "data-id": job.id, "data-state": job.state },
      h("span", { class: "spinner", "aria-hidden": "true" }),
      h("span", { class: "chip-text" }, h("strong", { text: who(job) }), ` #${job.mesid} · `,
        h("span", { class: "chip-chat", text: job.chat_name }), h("span", { class: "progress", text: ` · ${text}` })));
    if (job.last_error && job.state === "queued") chip.append(h("span", { class: "error", text: job.last_error }));
    if (CANCELLABLE.has(job.state)) chip.append(actionButton(job, "cancel", "Cancel", "danger small"));
    return chip;
  };

  const stampOf = (job) => [job.updated_at, job.state, job.chat_name, [...chosenOf(job)].join(","), picked.has(job.id),
    drafts.has(job.id) ? "edit" : "", busy.has(job.id) ? "busy" : "", cursor.get(job.id) || "",
    selecting ? (selected.has(job.id) ? "sel" : "unsel") : "", online].join("|");

  const render = () => {
    renderQueued = false;
    if (pointerHeld) return; // drawn on release (below)
    const grid = document.getElementById("grid");
    const keep = new Set();
    const list = choiceJobs();
    const hadFocus = document.activeElement && document.activeElement.closest && document.activeElement.closest(".card");
    const focusWasCard = hadFocus && hadFocus.dataset.id;
    const els = [];
    for (const job of list) {
      keep.add(job.id);
      const stamp = stampOf(job);
      let entry = cards.get(job.id);
      if (!entry || entry.stamp !== stamp) {
        const fresh = buildCard(job);
        entry = { el: fresh, stamp };
        cards.set(job.id, entry);
      }
      entry.el.classList.toggle("focused", focusId === job.id);
      els.push(entry.el);
    }
    for (const [id] of cards) if (!keep.has(id)) cards.delete(id);
    const same = els.length === grid.children.length && els.every((el, i) => grid.children[i] === el);
    if (!same) grid.replaceChildren(...els);
    const working = workingJobs();
    const strip = document.getElementById("strip");
    strip.replaceChildren(...working.map(buildChip));
    document.getElementById("working").hidden = working.length === 0;
    document.getElementById("working-count").textContent = String(working.length);
    document.getElementById("empty").hidden = list.length > 0 || working.length > 0;
    const shown = list.length;
    const hiddenCount = Math.max(0, total - shown);
    const counter = document.getElementById("shown");
    counter.textContent = hiddenCount ? `${shown} of ${total} waiting shown · ${hiddenCount} more` : (shown ? `${shown} waiting` : "");
    document.getElementById("more").hidden = !more || hiddenCount === 0;
    const bulk = document.getElementById("bulk");
    bulk.hidden = !selecting;
    document.getElementById("bulk-count").textContent = `${selected.size} selected`;
    for (const b of bulk.querySelectorAll("button[data-need]")) b.disabled = !online || selected.size === 0;
    document.getElementById("select-mode").setAttribute("aria-pressed", String(selecting));
    if (focusId && !jobs.has(focusId)) focusId = null;
    const focused = focusId && cards.get(focusId);
    const active = document.activeElement;
    const typing = active instanceof HTMLTextAreaElement || active instanceof HTMLInputElement && active.type !== "checkbox"
      || active instanceof HTMLSelectElement;
    if (focused && !viewer && !drafts.has(focusId) && !typing
        && (focusWasCard || active === document.body || active === null || !active.isConnected)
        && active?.closest?.(".card") !== focused.el) {
      focused.el.focus({ preventScroll: false });
      focused.el.scrollIntoView({ block: "nearest" });
    }
    if (viewer) drawViewer();
  };
  const schedule = () => { if (!renderQueued) { renderQueued = true; requestAnimationFrame(render); } };
  // A card rebuilt between a click's mousedown and mouseup loses that click (its target is
  // gone): while a pointer is down nothing is redrawn (seen under load, when a frame fell there).
  let pointerHeld = false;
  const release = () => { if (pointerHeld) { pointerHeld = false; schedule(); } };
  document.addEventListener("pointerdown", () => { pointerHeld = true; }, true);
  document.addEventListener("pointerup", release, true);
  document.addEventListener("pointercancel", release, true);

  // --- actions ----------------------------------------------------------------------------

  const after = (id) => { // the focus goes on to the next card at once, so r r r works
    if (focusId === id) focusId = neighbour(id);
  };

  const act = async (id, action, opts = {}) => {
    const job = jobs.get(id);
    if (!job || busy.has(id)) return null;
    if (!online) { S.toast("The daemon is not reachable; actions wait until it is back."); return null; }
    let path = `/api/v1/jobs/${id}/${action}`;
    let body = {};
    if (action === "accept") {
      const why = whyNotAccept(job);
      if (why) { S.toast(why); return null; }
      if (picked.has(id)) body = { keep: [...chosenOf(job)].sort((a, b) => a - b) };
    } else if (action === "regen-edited") {
      const prompt = (drafts.get(id) || "").trim();
      if (!prompt) { S.toast("The prompt is empty."); return null; }
      path = `/api/v1/jobs/${id}/regen`;
      body = { prompt };
    }
    const next = neighbour(id);
    busy.add(id);
    if (action !== "regen" && action !== "regen-edited" && !opts.keepFocus) after(id);
    schedule();
    const mark = heard;
    try {
      const result = await S.api("POST", path, body);
      busy.delete(id);
      if (action === "regen" || action === "regen-edited") {
        if (!heardSince(id, mark)) forget(id);
        if (!heardSince(result.id, mark)) put(result);
        if (focusId === null || focusId === id) focusId = result.id;
        if (!opts.quiet) S.toast(`Regenerating ${label(result)}: the new pictures come first.`);
      } else {
        if (!heardSince(result.id, mark)) put(result);
        if (!jobs.has(id) && (focusId === id || focusId === null)) focusId = next;
        if (!opts.quiet) told(action, job, result);
      }
      S.statusLater();
      schedule();
      return result;
    } catch (error) {
      busy.delete(id);
      S.toast(error.message);
      try {
        const again = heard;
        const fresh = await S.api("GET", `/api/v1/jobs/${id}`);
        if (!heardSince(id, again)) put(fresh);
      } catch (_) { /* the stream tells */ }
      schedule();
      return null;
    }
  };

  const told = (action, job, result) => {
    if (action === "reject") {
      S.toast(job.state === "failed" ? `Dismissed ${label(job)}.` : `Rejected ${label(job)}: its pictures are in the trash.`,
        { action: { label: "Undo", run: () => restore([job.id]) }, ms: 9000 });
    } else if (action === "accept") {
      const n = result.images.length;
      if (committed.has(job.id)) { addedToast(committed.get(job.id), n); return; } // the stream was first
      accepting.set(job.id, n);
      S.toast(`Accepted ${n} image${n === 1 ? "" : "s"} for ${label(job)}: writing them into the chat…`);
    } else if (action === "cancel") {
      S.toast(`Cancelled ${label(job)}: no picture will be made for it.`);
    }
  };

  const committed = new Map(); // id -> job, committed before this page heard its accept answer
  const addedToast = (job, n) => {
    const link = job.st_url ? { href: job.st_url, text: "Open SillyTavern" } : null;
    S.toast(`${n} image${n === 1 ? "" : "s"} added after ${label(job)}.`, { link, ms: 8000 });
  };

  const restore = async (ids) => {
    let back = 0;
    for (const id of ids) {
      try {
        const mark = heard;
        const job = await S.api("POST", `/api/v1/jobs/${id}/restore`, {});
        if (!heardSince(job.id, mark)) put(job);
        focusId = job.id;
        back += 1;
      } catch (error) { S.toast(error.message); }
    }
    if (back) S.toast(back === 1 ? "Restored." : `Restored ${back} jobs.`);
    schedule();
  };

  const bulk = async (action, ids) => {
    const list = ids.filter((id) => jobs.get(id) && (action !== "accept" || jobs.get(id).state === "pending"));
    if (!list.length) { S.toast(action === "accept" ? "None of them can be accepted." : "Nothing selected."); return; }
    const done = [];
    for (const id of list) {
      const result = await act(id, action, { quiet: true, keepFocus: true });
      if (result) done.push(id);
    }
    selected.clear();
    schedule();
    if (action === "reject" && done.length) {
      S.toast(`Rejected ${done.length} job${done.length === 1 ? "" : "s"}: their pictures are in the trash.`,
        { action: { label: "Undo", run: () => restore(done) }, ms: 12000 });
    } else if (action === "accept" && done.length) {
      S.toast(`Accepted ${done.length} job${done.length === 1 ? "" : "s"}: writing them into the chats…`);
    }
  };

  const toggle = (id, n) => {
    const job = jobs.get(id);
    if (!job || job.state !== "pending" || n < 1 || n > job.images.length) return;
    // Nothing picked means "all"; the first pick starts a choice of that one image.
    const chosen = new Set(chosenOf(job));
    if (chosen.has(n)) chosen.delete(n); else chosen.add(n);
    picked.set(id, chosen);
    cursor.set(id, n);
    schedule();
  };

  const startEdit = (id) => {
    const job = jobs.get(id);
    if (!job) return;
    drafts.set(id, job.prompt || "");
    focusId = id;
    schedule();
  };

  const perform = (id, what, n) => {
    if (what === "edit") startEdit(id);
    else if (what === "cancel-edit") { drafts.delete(id); schedule(); }
    else if (what === "pick") toggle(id, n);
    else if (what === "show") { cursor.set(id, n); schedule(); }
    else if (what === "view") openViewer(id, n);
    else if (what === "select") { if (selected.has(id)) selected.delete(id); else selected.add(id); schedule(); }
    else act(id, what);
  };

  document.getElementById("grid").addEventListener("click", (event) => {
    const card = event.target.closest(".card");
    if (!card) return;
    const id = card.dataset.id;
    focusId = id;
    const button = event.target.closest("[data-act]");
    if (!button) { schedule(); return; }
    if (button.dataset.act === "select") { event.stopPropagation(); }
    perform(id, button.dataset.act, Number(button.dataset.n || 0));
  });
  document.getElementById("strip").addEventListener("click", (event) => {
    const chip = event.target.closest(".chip");
    const button = event.target.closest("button[data-act]");
    if (chip && button) act(chip.dataset.id, button.dataset.act);
  });
  document.getElementById("grid").addEventListener("focusin", (event) => {
    const card = event.target.closest(".card");
    if (card && card.dataset.id !== focusId) { focusId = card.dataset.id; schedule(); }
  });

  const move = (step) => {
    const order = visibleOrder();
    if (!order.length) return;
    const i = order.indexOf(focusId);
    focusId = order[i < 0 ? 0 : Math.min(order.length - 1, Math.max(0, i + step))];
    schedule();
  };
  const columns = () => {
    const grid = document.getElementById("grid");
    return Math.max(1, getComputedStyle(grid).gridTemplateColumns.split(" ").filter(Boolean).length);
  };

  // --- the viewer ---------------------------------------------------------------------------

  const vroot = document.getElementById("viewer");
  const vimg = vroot.querySelector(".v-img");
  const viewList = () => choiceJobs().filter((j) => j.state === "pending" && j.images.length);

  const openViewer = (id, n) => {
    const job = jobs.get(id);
    if (!job || job.state !== "pending" || !job.images.length) {
      if (job) S.toast(whyNotAccept(job) || "This job has no pictures to show.");
      return;
    }
    viewer = { id, n: Math.min(Math.max(1, n || cursor.get(id) || 1), job.images.length), opener: document.activeElement };
    vroot.hidden = false;
    document.body.classList.add("viewing");
    drawViewer();
    vroot.querySelector(".v-close").focus();
  };
  const closeViewer = () => {
    if (!viewer) return;
    const id = viewer.id;
    viewer = null;
    vroot.hidden = true;
    document.body.classList.remove("viewing");
    vimg.removeAttribute("src");
    if (jobs.has(id)) focusId = id;
    schedule();
  };
  const drawViewer = () => {
    if (!viewer) return;
    let job = jobs.get(viewer.id);
    if (!job || job.state !== "pending" || busy.has(job.id)) {
      const list = viewList().filter((j) => !busy.has(j.id));
      if (!list.length) { closeViewer(); return; }
      job = list.find((j) => j.id < viewer.id) || list[0];
      viewer.id = job.id; viewer.n = 1;
    }
    const n = Math.min(viewer.n, job.images.length);
    const image = job.images[n - 1];
    const chosen = chosenOf(job);
    cursor.set(job.id, n);
    focusId = job.id;
    if (vimg.dataset.src !== image.full) {
      vimg.dataset.src = image.full;
      vimg.src = image.full;
      vimg.alt = `image ${n} of ${label(job)}`;
    }
    const list = viewList();
    const at = list.findIndex((j) => j.id === job.id);
    vroot.querySelector(".v-count").textContent = `image ${n} of ${job.images.length} · job ${at + 1} of ${list.length}`;
    vroot.querySelector(".v-who").textContent = `${who(job)} #${job.mesid}`;
    vroot.querySelector(".v-chat").textContent = job.chat_name;
    vroot.querySelector(".v-excerpt").replaceChildren(stText(job.excerpt || ""));
    vroot.querySelector(".v-prompt").textContent = image.prompt || job.prompt || "";
    vroot.querySelector(".v-earlier").hidden = !image.earlier;
    const pick = vroot.querySelector('[data-vact="pick"]');
    pick.setAttribute("aria-pressed", String(chosen.has(n)));
    pick.textContent = chosen.has(n) ? "✓ Picked" : "Pick";
    vroot.querySelector('[data-vact="accept"]').textContent = acceptLabel(job);
    for (const b of vroot.querySelectorAll("[data-vact]")) if (b.dataset.vact !== "close") b.disabled = !online;
    // The next picture loads while this one is looked at.
    const ahead = job.images[n] || (list[at + 1] && list[at + 1].images[0]);
    if (ahead) { const pre = new Image(); pre.src = ahead.full; }
  };
  const step = (delta) => {
    if (!viewer) return;
    const list = viewList();
    let at = list.findIndex((j) => j.id === viewer.id);
    if (at < 0) return;
    let n = viewer.n + delta;
    if (n < 1) {
      if (at === 0) return;
      at -= 1; n = list[at].images.length;
    } else if (n > list[at].images.length) {
      if (at === list.length - 1) return;
      at += 1; n = 1;
    }
    viewer.id = list[at].id; viewer.n = n;
    drawViewer();
  };
  const viewerAct = async (what) => {
    if (!viewer) return;
    const id = viewer.id;
    if (what === "close") closeViewer();
    else if (what === "pick") { toggle(id, viewer.n); drawViewer(); }
    else if (what === "prev") step(-1);
    else if (what === "next") step(1);
    else {
      const list = viewList();
      const at = list.findIndex((j) => j.id === id);
      const nextJob = list[at + 1] || list[at - 1];
      const pending = act(id, what);
      if (nextJob) { viewer.id = nextJob.id; viewer.n = 1; drawViewer(); }
      await pending;
      if (viewer && !viewList().length) closeViewer();
    }
  };
  vroot.addEventListener("click", (event) => {
    const button = event.target.closest("[data-vact]");
    if (button) viewerAct(button.dataset.vact);
    else if (event.target === vroot || event.target.classList.contains("v-stage")) closeViewer();
  });
  let swipeFrom = null;
  vroot.querySelector(".v-stage").addEventListener("pointerdown", (event) => {
    swipeFrom = { x: event.clientX, y: event.clientY };
  });
  vroot.querySelector(".v-stage").addEventListener("pointerup", (event) => {
    if (!swipeFrom) return;
    const dx = event.clientX - swipeFrom.x;
    const dy = event.clientY - swipeFrom.y;
    swipeFrom = null;
    if (Math.abs(dx) > 40 && Math.abs(dx) > Math.abs(dy)) step(dx < 0 ? 1 : -1);
  });

  // --- keys ---------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey && event.key !== "Enter" || event.metaKey && event.key !== "Enter") return;
    const key = event.key;
    if (viewer) {
      const map = { Escape: "close", ArrowLeft: "prev", ArrowRight: "next", " ": "pick", x: "pick", a: "accept", r: "reject", g: "regen" };
      if (map[key]) { event.preventDefault(); viewerAct(map[key]); }
      else if (/^[1-9]$/.test(key)) { event.preventDefault(); viewer.n = Number(key); drawViewer(); }
      return;
    }
    const typing = event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement && event.target.type !== "checkbox"
      || event.target instanceof HTMLSelectElement;
    const card = event.target.closest?.(".card");
    if (typing) {
      if (!card) return;
      const id = card.dataset.id;
      if (key === "Escape") { drafts.delete(id); focusId = id; schedule(); event.preventDefault(); }
      else if (key === "Enter" && (event.ctrlKey || event.metaKey)) { act(id, "regen-edited"); event.preventDefault(); }
      return;
    }
    if (event.target.closest?.("button, a, #viewer, .toast") && (key === "Enter" || key === " ")) return;
    // focusId, not the focused element: after an action the focus is already on the next
    // card even before the page has drawn it (r r r rejects three, however fast).
    const id = focusId && jobs.has(focusId) ? focusId : null;
    const job = id ? jobs.get(id) : null;
    if (key === "ArrowDown" || key === "j") { move(key === "j" ? 1 : columns()); event.preventDefault(); return; }
    if (key === "ArrowUp" || key === "k") { move(key === "k" ? -1 : -columns()); event.preventDefault(); return; }
    if (key === "Tab" || key === "Shift") return;
    if (!job) {
      if (["a", "r", "g", "e", "Enter", "ArrowLeft", "ArrowRight"].includes(key)) { move(0); event.preventDefault(); }
      return;
    }
    const n = job.images.length;
    const at = cursor.get(id) || 1;
    if (key === "ArrowRight" || key === "ArrowLeft") {
      if (n > 1) cursor.set(id, key === "ArrowRight" ? (at % n) + 1 : ((at - 2 + n) % n) + 1);
      else move(key === "ArrowRight" ? 1 : -1);
      schedule(); event.preventDefault();
    } else if (key === "Enter" || key === "v") {
      openViewer(id, at); event.preventDefault();
    } else if (key === " " || key === "x") {
      toggle(id, at); event.preventDefault();
    } else if (/^[1-9]$/.test(key)) {
      toggle(id, Number(key)); event.preventDefault();
    } else if (key === "a") {
      act(id, "accept"); event.preventDefault();
    } else if (key === "r") {
      if (CHOICE.has(job.state)) act(id, "reject"); else S.toast(`${label(job)} is ${job.state}; c cancels it.`);
      event.preventDefault();
    } else if (key === "g" && CHOICE.has(job.state)) {
      act(id, "regen"); event.preventDefault();
    } else if (key === "e" && CHOICE.has(job.state)) {
      startEdit(id); event.preventDefault();
    } else if (key === "s" && selecting) {
      perform(id, "select"); event.preventDefault();
    }
  });

  // --- toolbar: select, bulk, more, pause ---------------------------------------------------

  document.getElementById("select-mode").addEventListener("click", () => {
    selecting = !selecting;
    if (!selecting) selected.clear();
    schedule();
  });
  document.getElementById("bulk").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-bulk]");
    if (!button) return;
    const what = button.dataset.bulk;
    if (what === "all") { for (const job of choiceJobs()) selected.add(job.id); schedule(); return; }
    if (what === "none") { selected.clear(); schedule(); return; }
    if (what === "chat-reject") {
      if (!filter.chat) return;
      const mark = heard;
      const data = await S.api("GET", `/api/v1/jobs?state=pending&chat=${encodeURIComponent(filter.chat)}&limit=500`);
      for (const job of data.jobs) if (!heardSince(job.id, mark)) put(job);
      await bulk("reject", data.jobs.map((j) => j.id));
      return;
    }
    await bulk(what, [...selected]);
  });
  document.getElementById("more").addEventListener("click", async () => {
    if (!more) return;
    const query = new URLSearchParams({ state: "pending,failed", limit: String(initial.page || 48), before: more });
    if (filter.chat) query.set("chat", filter.chat);
    if (filter.character) query.set("character", filter.character);
    try {
      const mark = heard;
      const data = await S.api("GET", `/api/v1/jobs?${query}`);
      const keepTotal = total;
      for (const job of data.jobs) if (!heardSince(job.id, mark)) put(job);
      total = keepTotal;
      more = data.next;
    } catch (error) { S.toast(error.message); }
    schedule();
  });

  const pauseButton = document.getElementById("pause");
  const showPause = (p) => {
    if (!p) return;
    const mine = Boolean(filter.chat) && (p.chats || []).includes(filter.chat);
    const on = Boolean(p.all) || mine;
    pauseButton.setAttribute("aria-pressed", String(on));
    pauseButton.dataset.paused = String(on);
    const scope = filter.chat ? "this chat" : "all chats";
    const since = p.since ? ` since ${new Date(p.since).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}` : "";
    pauseButton.textContent = on ? `Paused${since}: resume` : `Pause ${scope}`;
    pauseButton.title = on ? "No new job starts until you resume" : "Stop starting new jobs (running ones finish)";
    const badge = document.getElementById("paused-badge");
    badge.hidden = !(p.all || (p.chats || []).length);
    badge.textContent = p.all ? "paused" : `${(p.chats || []).length} chat${(p.chats || []).length === 1 ? "" : "s"} paused`;
  };
  let pauseState = null;
  pauseButton.addEventListener("click", async () => {
    const on = pauseButton.dataset.paused === "true";
    const body = { paused: !on };
    if (filter.chat && !(pauseState && pauseState.all && on)) body.chat = filter.chat;
    try { pauseState = await S.api("POST", "/api/v1/pause", body); showPause(pauseState); S.refreshStatus(); }
    catch (error) { S.toast(error.message); }
  });
  S.api("GET", "/api/v1/pause").then((p) => { pauseState = p; showPause(p); }).catch(() => {});

  // --- live ---------------------------------------------------------------------------------

  const reload = async () => {
    const query = new URLSearchParams({ state: "queued,prompting,imaging,accepted", limit: "200" });
    if (filter.chat) query.set("chat", filter.chat);
    if (filter.character) query.set("character", filter.character);
    const mark = heard;
    const working = await S.api("GET", `/api/v1/jobs?${query}`);
    query.set("state", "pending,failed");
    query.set("limit", String(Math.max(initial.page || 48, choiceJobs().length)));
    const choice = await S.api("GET", `/api/v1/jobs?${query}`);
    const seen = new Set([...working.jobs, ...choice.jobs].map((j) => j.id));
    for (const id of [...jobs.keys()]) if (!seen.has(id) && !heardSince(id, mark)) forget(id);
    for (const job of [...working.jobs, ...choice.jobs]) if (!heardSince(job.id, mark)) put(job);
    schedule();
  };

  const live = document.getElementById("live");
  let downSince = null;
  let downTimer = 0;
  const setOnline = (value, text, state) => {
    live.dataset.state = state;
    live.textContent = text;
    document.body.dataset.daemon = state;
    const strip = document.getElementById("status");
    if (state !== "live") {
      strip.dataset.state = "down";
      strip.querySelector(".status-text").textContent = text;
    } else if (strip.dataset.state === "down") S.refreshStatus();
    if (online !== value) { online = value; for (const entry of cards.values()) entry.stamp = ""; schedule(); }
  };
  const hhmm = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const connect = () => {
    // `after`: the stream's position when the server read this page's jobs, so a change made
    // between that read and this subscription is replayed, not lost (later reconnections send
    // Last-Event-ID, which the server prefers).
    const after = Number.isInteger(initial.events_after) ? `?after=${initial.events_after}` : "";
    const source = new EventSource(`/api/v1/events${after}`);
    source.addEventListener("hello", () => {
      clearTimeout(downTimer);
      downSince = null;
      setOnline(true, "connected", "live");
      connections += 1;
      if (connections > 1) { reload().catch(() => {}); S.refreshStatus(); }
    });
    source.addEventListener("job", (event) => {
      const data = JSON.parse(event.data);
      const job = data.job;
      hear(job.id);
      if (job.state === "committed" && accepting.has(job.id)) {
        addedToast(job, accepting.get(job.id));
        accepting.delete(job.id);
      } else if (job.state === "committed") {
        committed.set(job.id, job);
        if (committed.size > 200) committed.delete(committed.keys().next().value);
      }
      put(job);
      schedule();
      S.statusLater();
      if (job.state === "pending" && data.previous_state !== "pending") window.dispatchEvent(new CustomEvent("st-imagegen:waiting", { detail: job }));
    });
    source.addEventListener("pause", (event) => { pauseState = JSON.parse(event.data); showPause(pauseState); });
    source.addEventListener("reset", () => { reload().catch(() => {}); });
    source.onerror = () => {
      if (downSince === null) {
        downSince = new Date();
        setOnline(false, "reconnecting…", "reconnecting");
        clearTimeout(downTimer);
        // Still not back after a few tries: say since when, and keep trying.
        downTimer = setTimeout(() => {
          if (downSince) setOnline(false, `daemon down since ${hhmm(downSince)}`, "down");
        }, 4000);
      }
    };
  };

  // --- notifications: pictures arrived while the page is in the background -----------------

  const notifyButton = document.getElementById("notify");
  const showNotifyButton = () => {
    const can = "Notification" in window && Notification.permission === "default";
    notifyButton.hidden = !can;
  };
  notifyButton.addEventListener("click", async () => {
    const answer = await Notification.requestPermission();
    showNotifyButton();
    if (answer === "granted") S.toast("You will be told when pictures wait (while this page is open).");
    else S.toast("Notifications are off for this page (the browser's site settings turn them on).");
  });
  showNotifyButton();
  let arrived = [];
  let arrivedTimer = 0;
  window.addEventListener("st-imagegen:waiting", (event) => {
    if (document.visibilityState === "visible") return;
    arrived.push(event.detail);
    clearTimeout(arrivedTimer);
    // One notification for what arrives together (a regen of several, a burst of replies).
    arrivedTimer = setTimeout(() => {
      const batch = arrived;
      arrived = [];
      const pictures = batch.reduce((n, job) => n + job.images.length, 0);
      const first = batch[0];
      const title = batch.length === 1 ? `${pictures} picture${pictures === 1 ? "" : "s"} for ${label(first)}`
        : `${pictures} pictures wait in ${batch.length} jobs`;
      const body = batch.slice(0, 4).map((job) => `${label(job)} · ${job.chat_name}`).join("\n");
      S.notify(title, body, batch.length === 1 ? `/jobs/${first.id}` : "/", "st-imagegen-waiting").catch(() => {});
    }, 1500);
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && online) reload().catch(() => {});
  });
  setInterval(() => {
    for (const node of document.querySelectorAll(".card time")) node.textContent = S.ago(node.dateTime);
  }, 30000);
  const hash = location.hash.match(/^#job-([0-9A-Z]{26})$/);
  if (hash && jobs.has(hash[1])) focusId = hash[1];
  render();
  connect();
  window.stImagegenInbox = { jobs, openViewer };
})();
