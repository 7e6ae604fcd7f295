// Keeps <main> current: the dashboard sends the page's fragment again over server-sent
// events whenever what it shows changes. Without this script the page is whole as loaded.
(function () {
  "use strict";
  if (!window.EventSource) {
    return;
  }
  var main = document.getElementById("main");
  var page = location.pathname + location.search;
  var source = new EventSource("/live?page=" + encodeURIComponent(page));
  var updates = 0;
  source.onmessage = function (event) {
    main.innerHTML = event.data;
    updates += 1;
    document.body.setAttribute("data-updates", String(updates));
  };
})();
