// Sagaway console: the little behaviour pages need, from a static file (the CSP allows no inline
// script). A form with data-confirm asks before it is submitted.
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});
