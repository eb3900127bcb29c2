// A "Print" button for documents such as invoices; the browser can also save as PDF.
document.querySelectorAll("[data-print]").forEach((button) => {
  button.addEventListener("click", () => window.print());
});
