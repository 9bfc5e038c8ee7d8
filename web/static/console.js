// The live tail of an execution page: server-sent events from /api/executions/<id>/logs/stream.
// Lines are added as text (textContent), never as HTML. No other script; nothing from the network.
"use strict";
(function () {
  var table = document.getElementById("logs");
  if (!table || table.dataset.live !== "yes" || !window.EventSource) return;
  var body = table.tBodies[0];
  var state = document.getElementById("tail-state");
  var statusBadge = document.getElementById("execution-status");
  var url = "/api/executions/" + table.dataset.executionId + "/logs/stream?after=" + table.dataset.position;
  var source = new EventSource(url);
  function cell(row, text, cls) {
    var td = row.insertCell(-1);
    td.textContent = text;
    if (cls) td.className = cls;
  }
  source.addEventListener("line", function (event) {
    var line = JSON.parse(event.data);
    var row = body.insertRow(-1);
    cell(row, line.at); cell(row, String(line.attempt)); cell(row, line.level); cell(row, line.message, "message");
    table.dataset.position = String(line.position);
  });
  source.addEventListener("status", function (event) {
    var data = JSON.parse(event.data);
    statusBadge.textContent = data.status;
    statusBadge.className = "status s-" + data.status;
  });
  source.addEventListener("end", function () {
    source.close();
    state.textContent = "finished";
    // The timings, result and error are known now: show them (the page's lines are all there already).
    window.setTimeout(function () { window.location.reload(); }, 300);
  });
})();
// Delete asks once more in the browser too (the server checks the typed name).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.classList && form.classList.contains("danger") && !window.confirm("Delete this task for good?")) {
    event.preventDefault();
  }
});
