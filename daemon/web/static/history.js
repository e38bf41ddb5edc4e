// st-imagegen history page: "More variants" of a committed image (they become image swipes of
// the same chat message once accepted in the inbox).
"use strict";
(() => {
  const { api, toast } = window.stImagegen;
  document.addEventListener("click", async (event) => {
    const back = event.target.closest('button[data-act="restore"]');
    if (back) {
      back.disabled = true;
      try {
        const job = await api("POST", `/api/v1/jobs/${encodeURIComponent(back.dataset.id)}/restore`, {});
        const row = back.closest(".hcard");
        back.remove();
        const badge = row && row.querySelector(".badge");
        if (badge) { badge.textContent = job.state; badge.className = `badge badge-${job.state}`; }
        toast(`Back in the inbox: ${job.speaker || job.character}'s #${job.mesid}.`);
      } catch (error) {
        back.disabled = false;
        toast(error.message);
      }
      return;
    }
    const button = event.target.closest('button[data-act="variants"]');
    if (!button) return;
    button.disabled = true;
    try {
      const job = await api("POST", `/api/v1/jobs/${encodeURIComponent(button.dataset.id)}/regen`, {});
      button.textContent = "Queued: see the inbox";
      toast(`Variants queued as job ${job.short_id}; accept them in the inbox to add them as swipes.`);
    } catch (error) {
      button.disabled = false;
      toast(`Cannot make variants: ${error.message}`);
    }
  });
})();
