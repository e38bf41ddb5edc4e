// st-imagegen inbox: cards from the embedded jobs, kept live by /api/v1/events.
// Every text from a chat or a prompt goes in through textContent, never as HTML.
"use strict";
(() => {
  const S = window.stImagegen;
  const INBOX = new Set(S.meta.groups.inbox);
  const initial = JSON.parse(document.getElementById("initial").textContent);
  const jobs = new Map();
  const cards = new Map(); // id -> {el, stamp}
  const picked = new Map(); // id -> Set of image numbers
  const drafts = new Map(); // id -> edited prompt (edit mode when present)
  const cursor = new Map(); // id -> thumbnail under the keyboard cursor
  const busy = new Set();
  let focusId = null;
  let renderQueued = false;
  let connections = 0;

  const put = (job) => {
    if (INBOX.has(job.state)) jobs.set(job.id, job);
    else forget(job.id);
  };
  const forget = (id) => {
    if (focusId === id) focusId = neighbour(id);
    jobs.delete(id); picked.delete(id); drafts.delete(id); cursor.delete(id);
  };
  for (const job of initial.jobs) put(job);

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

  const ordered = () => [...jobs.values()].sort((a, b) => (a.id < b.id ? 1 : -1));
  const visibleOrder = () => [...document.querySelectorAll("#groups .card")].map((c) => c.dataset.id);
  function neighbour(id) {
    const order = visibleOrder();
    const i = order.indexOf(id);
    if (i < 0) return null;
    return order[i + 1] || order[i - 1] || null;
  }

  const acceptLabel = (job) => {
    const chosen = picked.get(job.id);
    const n = job.images.length;
    if (chosen && chosen.size) return `Accept ${chosen.size} of ${n}`;
    return n > 1 ? `Accept all ${n}` : "Accept";
  };

  const buildCard = (job) => {
    const card = h("article", {
      class: `card state-${job.state}`, tabIndex: 0, "data-id": job.id, "data-state": job.state,
      "aria-label": `${job.speaker || job.character}, message ${job.mesid}, ${job.state}`,
    });
    card.append(h("div", { class: "card-head" },
      h("strong", { class: "who", text: job.speaker || job.character }),
      h("span", { class: `badge badge-${job.state}`, text: job.state }),
      h("span", { class: "mes", text: `#${job.mesid}` }),
      h("time", { dateTime: job.created_at, title: job.created_at, text: S.ago(job.created_at) })));
    if (job.excerpt) card.append(h("blockquote", { class: "excerpt", text: job.excerpt }));
    if (job.images.length && (job.state === "pending" || job.state === "accepted")) {
      const chosen = picked.get(job.id) || new Set();
      const strip = h("div", { class: "thumbs" });
      for (const image of job.images) {
        const button = h("button", {
          type: "button", class: "thumb" + (cursor.get(job.id) === image.index ? " cursor" : ""),
          "data-n": String(image.index), "aria-pressed": String(chosen.has(image.index)),
          title: `image ${image.index}: click to pick it (only picked ones are kept)`,
        }, h("img", { src: image.thumb, alt: `image ${image.index}`, loading: "lazy", decoding: "async" }),
          h("span", { class: "num", text: String(image.index) }));
        const zoom = h("a", { class: "zoom", href: image.full, target: "_blank", rel: "noopener", text: "full", title: "open the full image" });
        strip.append(h("div", { class: "thumb-wrap" }, button, zoom));
      }
      card.append(strip);
    }
    const draft = drafts.get(job.id);
    if (draft !== undefined) {
      const area = h("textarea", { class: "prompt-edit", value: draft, "aria-label": "new prompt" });
      area.addEventListener("input", () => drafts.set(job.id, area.value));
      card.append(area);
    } else if (job.prompt) {
      card.append(h("p", { class: "prompt", text: job.prompt }));
    }
    if (job.progress && job.state !== "pending") {
      card.append(h("div", { class: "progress" }, h("span", { class: "spinner", "aria-hidden": "true" }),
        h("span", { text: job.progress.text
          + (typeof job.progress.fraction === "number" ? ` ${Math.round(job.progress.fraction * 100)}%` : "")
          + (job.attempts ? ` (try ${job.attempts + 1})` : "") })));
    }
    if (job.last_error && (job.state === "failed" || job.state === "queued" || job.state === "accepted")) {
      card.append(h("p", { class: "error", text: job.last_error }));
    }
    const actions = h("div", { class: "actions" });
    const button = (act, text, cls) => h("button", { type: "button", "data-act": act, class: cls || "", text, disabled: busy.has(job.id) });
    if (draft !== undefined) {
      actions.append(button("regen-edited", "Regenerate with this prompt", "primary"), button("cancel-edit", "Cancel"));
    } else if (job.state === "pending") {
      actions.append(button("accept", acceptLabel(job), "primary"), button("reject", "Reject", "danger"),
        button("regen", "Regenerate"), button("edit", "Edit prompt"));
    } else if (job.state === "failed") {
      actions.append(button("regen", "Retry", "primary"), button("edit", "Edit prompt"), button("reject", "Dismiss", "danger"));
    }
    if (actions.childElementCount) card.append(actions);
    if (draft !== undefined) {
      const area = card.querySelector("textarea");
      requestAnimationFrame(() => { if (document.activeElement !== area && focusId === job.id) area.focus(); });
    }
    return card;
  };

  // Picks and the keyboard cursor are painted on the card in place, never by rebuilding it: a
  // card replaced between a click's mousedown and mouseup loses that click (seen under load).
  const paintPicks = (el, job) => {
    const chosen = picked.get(job.id) || new Set();
    for (const thumb of el.querySelectorAll(".thumb")) {
      const n = Number(thumb.dataset.n);
      thumb.setAttribute("aria-pressed", String(chosen.has(n)));
      thumb.classList.toggle("cursor", cursor.get(job.id) === n);
    }
    const accept = el.querySelector('button[data-act="accept"]');
    if (accept) accept.textContent = acceptLabel(job);
  };

  const stampOf = (job) => [job.updated_at, job.state,
    drafts.has(job.id) ? "edit" : "", busy.has(job.id) ? "busy" : ""].join("|");

  const render = () => {
    renderQueued = false;
    const root = document.getElementById("groups");
    const groups = new Map();
    for (const job of ordered()) {
      if (!groups.has(job.chat)) groups.set(job.chat, []);
      groups.get(job.chat).push(job);
    }
    const keep = new Set();
    const sections = [];
    for (const [chat, list] of groups) {
      const first = list[0];
      let section = root.querySelector(`section[data-chat="${CSS.escape(chat)}"]`);
      if (!section) {
        section = h("section", { class: "group", "data-chat": chat },
          h("h2", {}), h("div", { class: "cards" }));
      }
      const who = first.is_group ? `group ${first.character}` : (first.chat_folder || first.character);
      section.querySelector("h2").textContent = `${who} · ${first.chat_file}`;
      const holder = section.querySelector(".cards");
      for (const job of list) {
        keep.add(job.id);
        const stamp = stampOf(job);
        let entry = cards.get(job.id);
        if (!entry || entry.stamp !== stamp) {
          const fresh = buildCard(job);
          if (entry) entry.el.replaceWith(fresh);
          entry = { el: fresh, stamp };
          cards.set(job.id, entry);
        }
        paintPicks(entry.el, job);
        entry.el.classList.toggle("focused", focusId === job.id);
        holder.append(entry.el);
      }
      sections.push(section);
    }
    for (const [id, entry] of cards) if (!keep.has(id)) { entry.el.remove(); cards.delete(id); }
    root.replaceChildren(...sections);
    document.getElementById("empty").hidden = jobs.size > 0;
    if (focusId && !jobs.has(focusId)) focusId = null;
    const focused = focusId && cards.get(focusId);
    if (focused && !drafts.has(focusId) && document.activeElement?.closest?.(".card") !== focused.el
        && !(document.activeElement instanceof HTMLTextAreaElement)) {
      focused.el.focus({ preventScroll: false });
    }
  };
  const schedule = () => { if (!renderQueued) { renderQueued = true; requestAnimationFrame(render); } };

  const act = async (id, action) => {
    const job = jobs.get(id);
    if (!job || busy.has(id)) return;
    let path = `/api/v1/jobs/${id}/${action}`;
    let body = {};
    if (action === "accept") {
      const chosen = picked.get(id);
      if (chosen && chosen.size) body = { keep: [...chosen].sort((a, b) => a - b) };
    } else if (action === "regen-edited") {
      const prompt = (drafts.get(id) || "").trim();
      if (!prompt) { S.toast("The prompt is empty."); return; }
      path = `/api/v1/jobs/${id}/regen`;
      body = { prompt };
    }
    busy.add(id); schedule();
    try {
      const result = await S.api("POST", path, body);
      busy.delete(id);
      if (action === "regen" || action === "regen-edited") {
        forget(id);
        put(result);
        focusId = result.id;
      } else {
        const next = neighbour(id);
        put(result);
        if (!jobs.has(id)) focusId = next;
      }
      S.statusLater();
    } catch (error) {
      busy.delete(id);
      S.toast(error.message);
      try { put(await S.api("GET", `/api/v1/jobs/${id}`)); } catch (_) { forget(id); }
    }
    schedule();
  };

  const toggle = (id, n) => {
    const job = jobs.get(id);
    if (!job || job.state !== "pending" || n < 1 || n > job.images.length) return;
    const chosen = picked.get(id) || new Set();
    if (chosen.has(n)) chosen.delete(n); else chosen.add(n);
    picked.set(id, chosen);
    cursor.set(id, n);
    const entry = cards.get(id);
    if (entry) paintPicks(entry.el, job); // at once, on the card the user clicked
    schedule();
  };

  const startEdit = (id) => {
    const job = jobs.get(id);
    if (!job) return;
    drafts.set(id, job.prompt || "");
    focusId = id;
    schedule();
  };

  document.getElementById("groups").addEventListener("click", (event) => {
    const card = event.target.closest(".card");
    if (!card) return;
    const id = card.dataset.id;
    focusId = id;
    const thumb = event.target.closest(".thumb");
    if (thumb) { toggle(id, Number(thumb.dataset.n)); return; }
    const button = event.target.closest("button[data-act]");
    if (!button) { schedule(); return; }
    const what = button.dataset.act;
    if (what === "edit") startEdit(id);
    else if (what === "cancel-edit") { drafts.delete(id); schedule(); }
    else act(id, what);
  });

  document.getElementById("groups").addEventListener("focusin", (event) => {
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

  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement
      || event.target instanceof HTMLSelectElement;
    const card = event.target.closest?.(".card");
    if (typing) {
      if (!card) return;
      const id = card.dataset.id;
      if (event.key === "Escape") { drafts.delete(id); focusId = id; schedule(); event.preventDefault(); }
      else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { act(id, "regen-edited"); event.preventDefault(); }
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (card && card.dataset.id !== focusId && jobs.has(card.dataset.id)) focusId = card.dataset.id;
    const id = focusId && jobs.has(focusId) ? focusId : null;
    const job = id ? jobs.get(id) : null;
    const key = event.key;
    if (key === "ArrowDown" || key === "j") { move(1); event.preventDefault(); return; }
    if (key === "ArrowUp" || key === "k") { move(-1); event.preventDefault(); return; }
    if (!job) {
      if (["a", "r", "g", "e", "ArrowLeft", "ArrowRight"].includes(key)) { move(0); event.preventDefault(); }
      return;
    }
    if (key === "ArrowRight" || key === "ArrowLeft") {
      const n = job.images.length;
      if (!n) return;
      const at = cursor.get(id) || 0;
      cursor.set(id, key === "ArrowRight" ? (at % n) + 1 : ((at - 2 + n) % n) + 1);
      schedule(); event.preventDefault();
    } else if (key === " " || key === "x") {
      toggle(id, cursor.get(id) || 1); event.preventDefault();
    } else if (/^[1-9]$/.test(key)) {
      toggle(id, Number(key)); event.preventDefault();
    } else if (key === "a" && job.state === "pending") {
      act(id, "accept"); event.preventDefault();
    } else if (key === "r" && (job.state === "pending" || job.state === "failed")) {
      act(id, "reject"); event.preventDefault();
    } else if (key === "g" && (job.state === "pending" || job.state === "failed")) {
      act(id, "regen"); event.preventDefault();
    } else if (key === "e" && (job.state === "pending" || job.state === "failed")) {
      startEdit(id); event.preventDefault();
    }
  });

  const reload = async () => {
    const states = [...INBOX].map((s) => `state=${s}`).join("&");
    const data = await S.api("GET", `/api/v1/jobs?${states}&limit=500`);
    const seen = new Set(data.jobs.map((j) => j.id));
    for (const id of [...jobs.keys()]) if (!seen.has(id)) forget(id);
    for (const job of data.jobs) put(job);
    schedule();
  };

  const live = document.getElementById("live");
  const connect = () => {
    const source = new EventSource("/api/v1/events");
    source.addEventListener("hello", () => {
      live.dataset.state = "live"; live.textContent = "live";
      connections += 1;
      if (connections > 1) reload().catch(() => {});
    });
    source.addEventListener("job", (event) => {
      const data = JSON.parse(event.data);
      put(data.job);
      schedule();
      S.statusLater();
    });
    source.addEventListener("reset", () => { reload().catch(() => {}); });
    source.onerror = () => { live.dataset.state = "down"; live.textContent = "reconnecting…"; };
  };

  // Changes made by another process (the CLI, a drop folder) reach the stream only when the
  // daemon acts on them; coming back to the tab reloads the list, so none is missed for long.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reload().catch(() => {});
  });
  setInterval(() => {
    for (const node of document.querySelectorAll(".card time")) node.textContent = S.ago(node.dateTime);
  }, 30000);
  render();
  connect();
})();
