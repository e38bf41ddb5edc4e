// st-imagegen: the settings page's Users box (the admin makes and revokes user tokens).
// GET/POST /api/v1/users and POST /api/v1/users/{id}/revoke; a token's secret is shown once.
"use strict";
(() => {
  const { api, toast } = window.stImagegen;
  const list = document.getElementById("user-list");
  const form = document.getElementById("user-new");
  const error = document.getElementById("user-error");
  const note = document.getElementById("user-token-note");
  const secret = document.getElementById("user-token");
  if (!list || !form) return;

  const say = (text) => {
    error.textContent = text || "";
    error.hidden = !text;
  };

  const row = (token) => {
    const item = document.createElement("li");
    const made = new Date(token.created * 1000).toLocaleDateString();
    const text = document.createElement("span");
    text.textContent = `${token.handles.join(", ")} · made ${made}${token.label ? ` · ${token.label}` : ""}`;
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.textContent = "Revoke";
    revoke.addEventListener("click", async () => {
      try {
        await api("POST", `/api/v1/users/${encodeURIComponent(token.id)}/revoke`, {});
        toast(`token for ${token.handles.join(", ")} revoked`);
        await load();
      } catch (e) {
        say(e.message);
      }
    });
    item.append(text, " ", revoke);
    item.dataset.token = token.id;
    return item;
  };

  const load = async () => {
    try {
      const data = await api("GET", "/api/v1/users");
      list.replaceChildren(...data.tokens.map(row));
      if (!data.tokens.length) {
        const none = document.createElement("li");
        none.className = "muted";
        none.textContent = "no user tokens yet";
        list.append(none);
      }
      say("");
    } catch (e) {
      document.getElementById("users-box").hidden = e.status === 403 || e.status === 404;
      say(e.message);
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const handles = String(fields.get("handles") || "").split(/[\s,]+/).filter(Boolean);
    try {
      const made = await api("POST", "/api/v1/users", { handles, label: String(fields.get("label") || "") });
      form.reset();
      secret.value = made.token;
      note.hidden = false;
      secret.select();
      await load();
    } catch (e) {
      say(e.message);
    }
  });

  load();
})();
