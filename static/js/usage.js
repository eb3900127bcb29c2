// The usage page's progressive enhancement: the export dialog and re-collapsing day rows.
// Without this file the download icon downloads directly and each day's button submits its
// form, reloading the page with that day open (or closed).
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-open-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.openDialog);
    if (dialog && typeof dialog.showModal === "function") {
      event.preventDefault();
      dialog.showModal();
    }
    return;
  }
  const closer = event.target.closest("[data-close-dialog]");
  if (closer) {
    // Let the download go ahead, then put the dialog away.
    setTimeout(() => closer.closest("dialog")?.close(), 0);
    return;
  }
  const toggle = event.target.closest("[data-day-toggle]");
  if (toggle) {
    event.preventDefault();  // no form submission: htmx loads the jobs, or they are here
    const row = document.getElementById(toggle.getAttribute("aria-controls"));
    if (row && row.dataset.loaded === "true") {
      const open = toggle.getAttribute("aria-expanded") === "true";
      toggle.setAttribute("aria-expanded", String(!open));
      row.hidden = open;
    } else {
      toggle.setAttribute("aria-expanded", "true");  // htmx is loading the day's jobs
    }
  }
});
