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

// Loading states. htmx marks the element an hx-indicator names with .htmx-request while
// its request runs; here the same element gets aria-busy, says what is loading, and on a
// failure the page goes back to what it showed, with the error and a way to try again.
const dayRow = (toggle) => document.getElementById(toggle.getAttribute("aria-controls"));
const periodSection = () => document.getElementById("usage-period");

function say(row, text, retry) {
  // A day's row, with a message (and a retry button) in place of its jobs.
  const cell = document.createElement("td");
  cell.colSpan = 4;
  const message = document.createElement("p");
  message.className = retry ? "error jobs-status" : "hint jobs-status";
  message.textContent = text;
  if (retry) {
    message.setAttribute("role", "alert");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button retry";
    button.dataset.retryDay = row.id;
    button.textContent = "Try again";
    message.append(" ", button);
  }
  cell.append(message);
  row.replaceChildren(cell);
  row.hidden = false;
}

document.addEventListener("htmx:beforeRequest", (event) => {
  const source = event.detail.elt;
  if (source.matches("[data-day-toggle]")) {
    const row = dayRow(source);
    if (!row || row.dataset.loaded === "true" || row.getAttribute("aria-busy") === "true") {
      event.preventDefault();  // the jobs are here already, or on their way
      return;
    }
    row.setAttribute("aria-busy", "true");
    say(row, "Loading the day's jobs…", false);
  } else if (source.matches(".period-form")) {
    const section = periodSection();
    const select = source.querySelector("select");
    source.dataset.requestedPeriod = select.value;
    section.setAttribute("aria-busy", "true");
    const status = section.querySelector(".period-status");
    status.className = "period-status hint";
    status.textContent = `Loading ${select.selectedOptions[0].textContent.trim()}…`;
    status.hidden = false;
  }
});

function failed(event) {
  const source = event.detail.elt;
  if (source.matches("[data-day-toggle]")) {
    const row = dayRow(source);
    row.removeAttribute("aria-busy");
    say(row, "The day's jobs could not be loaded.", true);
  } else if (source.matches(".period-form")) {
    // Back to the month the page shows, and say which one failed.
    const section = periodSection();
    const select = source.querySelector("select");
    select.value = source.dataset.shownPeriod;
    section.removeAttribute("aria-busy");
    const status = section.querySelector(".period-status");
    const option = [...select.options].find((o) => o.value === source.dataset.requestedPeriod);
    status.className = "period-status error";
    status.setAttribute("role", "alert");
    status.textContent = `${option ? option.textContent.trim() : "That month"} could not be loaded. `;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button retry";
    button.dataset.retryPeriod = source.dataset.requestedPeriod;
    button.textContent = "Try again";
    status.append(button);
    status.hidden = false;
  }
}
["htmx:responseError", "htmx:sendError", "htmx:timeout"].forEach((name) => document.addEventListener(name, failed));
document.addEventListener("htmx:afterSwap", (event) => {
  if (event.detail.target.id === "usage-period") periodSection().removeAttribute("aria-busy");
});

document.addEventListener("click", (event) => {
  const retryDay = event.target.closest("[data-retry-day]");
  if (retryDay) {
    document.querySelector(`[aria-controls="${retryDay.dataset.retryDay}"]`).click();
    return;
  }
  const retryPeriod = event.target.closest("[data-retry-period]");
  if (retryPeriod) {
    const form = document.querySelector(".period-form");
    form.querySelector("select").value = retryPeriod.dataset.retryPeriod;
    htmx.trigger(form, "change");
  }
});
