"""The page ``GET /storage-guard/live`` serves: listings changing live, from the change stream.

Plain HTML and JavaScript, no build step. The stream needs a bearer token with the scope
``read``, which EventSource cannot send: the page reads the stream with fetch() instead, parses
the events itself and reconnects with the last event id, so a dropped connection misses nothing.
The token stays in the tab's sessionStorage.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Listings, live</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5rem; }
  form { display: flex; gap: .5rem; flex-wrap: wrap; margin-bottom: 1rem; }
  input { font: inherit; padding: .25rem; min-width: 18rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left; }
  tr.fresh { animation: flash 2s ease-out; }
  @keyframes flash { from { background: #ffe58a; } to { background: transparent; } }
  #state { margin-left: 1rem; color: #666; }
</style>
</head>
<body>
<h1>Listings, live <span id="state">not connected</span></h1>
<form id="form">
  <input id="token" type="password" placeholder="bearer token (scope read)" autocomplete="off">
  <input id="booking_id" placeholder="booking_id (optional)">
  <input id="location_id" placeholder="location_id (optional)">
  <input id="vendor_id" placeholder="vendor_id (optional)">
  <button id="connect" type="submit">Connect</button>
</form>
<table>
  <thead><tr><th>time</th><th>change</th><th>booking</th><th>crop</th><th>status</th>
  <th>quality</th><th>details</th></tr></thead>
  <tbody id="changes"></tbody>
</table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const STREAM = "/storage-guard/listing-changes/stream";
let lastEventId = null, generation = 0;
$("token").value = sessionStorage.getItem("mis-token") || "";

function show(change) {
  const row = document.createElement("tr");
  row.className = "fresh";
  row.dataset.bookingId = change.booking_id;
  row.dataset.kind = change.kind;
  const details = [];
  if (change.previous_quality_score != null) details.push("was " + change.previous_quality_score);
  if (change.previous_status) details.push("was " + change.previous_status);
  if (change.sensor_health) details.push("sensors " + change.sensor_health);
  if (change.certificate_type) details.push(change.certificate_type);
  if (change.pest_count != null) details.push(change.pest_count + " pests");
  const cells = [new Date(change.evaluated_at).toLocaleTimeString(), change.kind,
    change.booking_id, change.crop_type, change.status, change.quality_score ?? "",
    details.join(", ")];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = String(text);
    row.appendChild(cell);
  }
  $("changes").prepend(row);
  while ($("changes").rows.length > 200) $("changes").deleteRow(-1);
}

function dispatch(block) {
  let event = "message", data = [], id = null;
  for (const line of block.split("\\n")) {
    if (line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  if (id !== null) lastEventId = id;
  if (event === "ready") $("state").textContent = "live";
  else if (event === "listing-change") show(JSON.parse(data.join("\\n")));
  else if (event === "error") $("state").textContent = "error: " + data.join(" ");
}

async function follow(mine) {
  const params = new URLSearchParams();
  for (const name of ["booking_id", "location_id", "vendor_id"]) {
    const value = $(name).value.trim();
    if (value) params.set(name, value);
  }
  const headers = { "Authorization": "Bearer " + $("token").value.trim() };
  while (mine === generation) {
    try {
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch(STREAM + "?" + params, { headers });
      if (!response.ok) {
        $("state").textContent = "refused: " + response.status + " " + await response.text();
        return;
      }
      $("state").textContent = "connected";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      while (mine === generation) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\\r\\n?/g, "\\n");
        let end;
        while ((end = buffer.indexOf("\\n\\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      reader.cancel().catch(() => {});
    } catch (err) {
      $("state").textContent = "reconnecting (" + err + ")";
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("mis-token", $("token").value.trim());
  lastEventId = null;
  generation += 1;
  follow(generation);
});
if ($("token").value) { generation += 1; follow(generation); }
</script>
</body>
</html>
"""
