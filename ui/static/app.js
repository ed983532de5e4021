// Switchyard console: reads the gateway API with the operator's API key
// and watches a session through a read-only observer attach. Everything is
// rendered with textContent: nothing from the server is parsed as HTML.
"use strict";

const KEY = "switchyard.apiKey";
const MAX_EVENTS = 200; // events kept on the page
const REFRESH_MS = 3000;

const $ = (id) => document.getElementById(id);
let socket = null;
let seen = new Set(); // event ids shown: an event may reach a node twice (submitted here, delivered here)

function apiKey() { return sessionStorage.getItem(KEY) || ""; }

function status(text) { $("status").textContent = text; }

async function api(path) {
  const headers = {};
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  const res = await fetch(path, { headers, cache: "no-store" });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(path + ": " + res.status + " " + (body.detail || body.code || ""));
  return body;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const tbody = $(tableId).querySelector("tbody");
  tbody.replaceChildren(...rows.map(row));
}

async function refresh() {
  try {
    const m = await api("/v1/gateway/members");
    fill("members", m.members.map((x) => [x.name + (x.self ? " (this node)" : ""), x.url, x.state, x.participants]));
    const p = await api("/v1/gateway/participants");
    fill("participants", p.participants.map((x) => [x.participant_id, x.participant_type, x.online ? "yes" : "no", (x.sessions || []).join(", ")]));
    $("participants-note").textContent = p.truncated ? "showing " + p.participants.length + " of " + p.total : p.total + " in all";
    const sessions = [...new Set(p.participants.flatMap((x) => x.sessions || []))].sort();
    $("sessions").replaceChildren(...sessions.map((s) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = s;
      b.addEventListener("click", () => { $("watch-session").value = s; watch(s); });
      li.appendChild(b);
      return li;
    }));
    status("");
  } catch (e) {
    status(e.message);
  }
}

function watch(session) {
  if (socket) socket.close(1000);
  seen = new Set();
  $("events").replaceChildren();
  const q = new URLSearchParams({ observe: "1", session_id: session });
  if (apiKey()) q.set("access_token", apiKey());
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/v1/gateway/ws?" + q);
  socket = ws;
  $("watch-state").textContent = "connecting to " + session + "…";
  ws.onmessage = (msg) => {
    for (const line of String(msg.data).split("\n")) {
      if (line) show(JSON.parse(line));
    }
  };
  ws.onclose = (ev) => {
    if (socket === ws) $("watch-state").textContent = "closed (" + ev.code + (ev.reason ? ": " + ev.reason : "") + ")";
  };
}

function show(frame) {
  if (frame.type === "welcome") {
    $("watch-state").textContent = "watching " + frame.sessions.join(", ") + " on " + frame.node;
    return;
  }
  if (frame.type !== "event" || seen.has(frame.event_id)) return;
  seen.add(frame.event_id);
  const ev = frame.event;
  const li = document.createElement("li");
  li.className = "event";
  li.dataset.eventId = frame.event_id;
  li.textContent = new Date().toLocaleTimeString() + "  " + ev.sender_id + " (" + ev.sender_type + ") " +
    ev.event_type + ": " + (ev.message || "") + "  [" + frame.event_id + "]";
  const list = $("events");
  list.appendChild(li);
  while (list.children.length > MAX_EVENTS) list.firstChild.remove();
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value);
  $("api-key").value = "";
  refresh();
});
$("refresh").addEventListener("click", refresh);
$("watch-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const s = $("watch-session").value.trim();
  if (s) watch(s);
});

refresh();
setInterval(refresh, REFRESH_MS);
