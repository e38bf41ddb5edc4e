// st-imagegen: what every page shares (the status strip, the API helper, times, toasts).
"use strict";
(() => {
  const api = async (method, path, body) => {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      // The browser's own words ("Failed to fetch") tell the user nothing.
      const error = new Error("The daemon is not reachable (stopped?); this page reconnects by itself.");
      error.status = 0;
      throw error;
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      error.key = data && data.error ? data.error.key : undefined;
      throw error;
    }
    return data;
  };

  const ago = (iso) => {
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 45) return "just now";
    if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  };

  let toastTimer = 0;
  // One message at a time; with an action (Undo) or a link, for a few seconds.
  const toast = (text, options = {}) => {
    const box = document.getElementById("toast");
    if (!box) return;
    const parts = [Object.assign(document.createElement("span"), { textContent: text })];
    if (options.action) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "toast-action";
      button.textContent = options.action.label;
      button.addEventListener("click", () => { box.hidden = true; options.action.run(); });
      parts.push(button);
    }
    if (options.link) {
      const link = document.createElement("a");
      link.href = options.link.href;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = options.link.text;
      parts.push(link);
    }
    box.replaceChildren(...parts);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, options.ms || 5000);
  };

  // The job vocabulary (states, groups, labels) from the daemon: GET /api/v1/meta, in the page.
  const meta = JSON.parse(document.getElementById("st-meta").textContent);
  const STATE_ORDER = ["pending", ...meta.groups.inbox.filter((s) => s !== "pending")];
  let statusBusy = false;
  const refreshStatus = async () => {
    if (statusBusy) return;
    statusBusy = true;
    const strip = document.getElementById("status");
    try {
      const s = await api("GET", "/api/v1/status");
      const running = s.daemon && s.daemon.running;
      strip.dataset.state = !running ? "down" : (s.daemon.state === "draining" ? "draining" : "running");
      const parts = [running ? (s.daemon.state === "draining" ? "stopping" : "running") : "daemon not running"];
      parts.push(`${s.chats_watched} chat${s.chats_watched === 1 ? "" : "s"} watched`);
      if (s.paused && (s.paused.all || (s.paused.chats || []).length)) {
        parts.push(s.paused.all ? "paused" : `${s.paused.chats.length} chat(s) paused`);
      }
      for (const state of STATE_ORDER) {
        const n = (s.counts || {})[state] || 0;
        if (n) parts.push(`${n} ${state}`);
      }
      const spend = s.spend || {};
      if (spend.today_images || spend.month_images) {
        const cap = spend.daily_budget != null ? ` of ${spend.daily_budget.toFixed(2)}` : "";
        const est = spend.estimated ? " (est.)" : "";
        parts.push(
          `today ${spend.today_images} image${spend.today_images === 1 ? "" : "s"}, ` +
          `${Number(spend.today_usd).toFixed(2)}${cap} USD${est}; ` +
          `month ${spend.month_images}, ${Number(spend.month_usd).toFixed(2)} USD`
        );
      }
      const text = strip.querySelector(".status-text");
      text.textContent = parts.join(" · ");
      if (s.setup_needed && s.setup_needed.length) {
        // Nothing is drawn until an image service is set up: say so first, with the way there.
        strip.dataset.state = "setup";
        text.replaceChildren("not set up yet: ", Object.assign(document.createElement("a"), { href: "/setup", textContent: "open the setup" }));
      }
      if (s.config_problem) {
        const bad = document.createElement("span");
        bad.className = "err";
        const line = s.config_problem.line ? ` (line ${s.config_problem.line})` : "";
        bad.textContent = ` · config file not applied${line}: ${s.config_problem.message}`;
        text.appendChild(bad);
      } else if (s.restart_pending && s.restart_pending.length) {
        const note = document.createElement("span");
        note.className = "err";
        note.textContent = ` · restart pending (${s.restart_pending.join(", ")})`;
        text.appendChild(note);
      }
      const held = s.held || [];
      if (held.length) {
        const note = document.createElement("span");
        note.className = "err";
        note.textContent = ` · ${held.length} held: ${held[0].reason} (${held[0].fix})`;
        text.appendChild(note);
      }
      const errors = s.errors || [];
      if (errors.length) {
        const err = document.createElement("span");
        err.className = "err";
        err.textContent = ` · last error: ${errors[0].error}`;
        text.appendChild(err);
        strip.title = errors.map((e) => `${e.job.slice(0, 10)} ${e.state}: ${e.error}`).join("\n");
      } else {
        strip.title = "";
      }
      const count = document.getElementById("pending-count");
      const pending = (s.counts || {}).pending || 0;
      count.textContent = String(pending);
      count.hidden = pending === 0;
    } catch (error) {
      strip.dataset.state = "down";
      strip.querySelector(".status-text").textContent = `status unavailable: ${error.message}`;
    } finally {
      statusBusy = false;
    }
  };

  let statusSoon = 0;
  const statusLater = () => {
    clearTimeout(statusSoon);
    statusSoon = setTimeout(refreshStatus, 400);
  };

  window.stImagegen = { api, ago, toast, refreshStatus, statusLater, meta, notify: (...a) => notify(...a) };
  // The service worker only opens the job when a notification is tapped (and makes the inbox
  // installable); it needs a secure context (localhost, or HTTPS behind a proxy).
  const worker = ("serviceWorker" in navigator && window.isSecureContext)
    ? navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => null)
    : Promise.resolve(null);
  // A notification from the open page (with permission): through the worker where there is
  // one (phones need it), else the page's own.
  const notify = async (title, body, url, tag) => {
    if (!("Notification" in window) || Notification.permission !== "granted") return false;
    const options = { body, tag, renotify: true, icon: "/static/icon-192.png", data: { url } };
    const registration = await worker;
    if (registration && registration.showNotification) {
      await registration.showNotification(title, options);
    } else {
      const note = new Notification(title, options);
      note.onclick = () => { window.focus(); location.href = url; note.close(); };
    }
    return true;
  };
  document.addEventListener("DOMContentLoaded", () => {
    refreshStatus();
    setInterval(refreshStatus, 15000);
    for (const select of document.querySelectorAll("select[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.submit());
    }
  });
})();
