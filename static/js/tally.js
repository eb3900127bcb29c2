// Progressive enhancement only: every page works without this file.
document.addEventListener("click", (event) => {
  // Close an open profile menu when clicking elsewhere.
  document.querySelectorAll("details.profile-menu[open]").forEach((menu) => {
    if (!menu.contains(event.target)) menu.removeAttribute("open");
  });
});
