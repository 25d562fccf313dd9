// The checkout page's countdown to the hold's expiry, served as a file so the page needs no
// inline script (the Content-Security-Policy allows scripts from the storefront only).
(function () {
  var expiry = document.getElementById("expiry");
  var out = document.getElementById("countdown");
  if (!expiry || !out) return;
  var end = Date.parse(expiry.getAttribute("datetime"));
  function tick() {
    var s = Math.max(0, Math.round((end - Date.now()) / 1000));
    out.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    if (s > 0) setTimeout(tick, 1000);
  }
  tick();
})();
