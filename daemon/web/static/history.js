// st-imagegen history page: "More variants" of a committed image (they become image swipes of
// the same chat message once accepted in the inbox).
"use strict";
(() => {
  const { api, toast } = window.stImagegen;
  document.addEventListener("click", async (event) => {
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
