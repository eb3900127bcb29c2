// Progressive enhancement only: every page works without this file.
document.addEventListener("click", (event) => {
  // Close an open profile menu when clicking elsewhere.
  document.querySelectorAll("details.profile-menu[open]").forEach((menu) => {
    if (!menu.contains(event.target)) menu.removeAttribute("open");
  });
});
document.addEventListener("keydown", (event) => {
  // Escape closes an open profile menu and gives focus back to its button.
  if (event.key !== "Escape") return;
  document.querySelectorAll("details.profile-menu[open]").forEach((menu) => {
    menu.removeAttribute("open");
    menu.querySelector("summary").focus();
  });
});
