// switchboard web console: plain JavaScript, no build step. Every data request carries the
// bearer token; the event stream and audio, which browsers cannot give headers, carry it
// as ?token=.
"use strict";

const TOKEN_KEY = "switchboard-token";
const $ = (sel) => document.querySelector(sel);

let token = localStorage.getItem(TOKEN_KEY);
let rooms = new Map(); // name -> RoomInfo
let events = null;

function authHeaders() {
  return token ? { Authorization: "Bearer " + token } : {};
}

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function api(method, path, body) {
  const opts = { method, headers: authHeaders() };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    showLogin("The token was refused.");
    throw new Error("unauthorized");
  }
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  const type = resp.headers.get("Content-Type") || "";
  return type.includes("json") ? resp.json() : null;
}

function showError(e) {
  if (e && e.message !== "unauthorized") $("#error").textContent = String(e.message || e);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function button(label, action, onclick) {
  return el("button", { type: "button", "data-action": action, onclick }, label);
}

function control(method, path, body) {
  $("#error").textContent = "";
  return api(method, path, body).catch(showError);
}

function shortTime(t) {
  return t ? t.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

// ---- login ----

function showLogin(message) {
  if (events) { events.close(); events = null; }
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  start();
});

$("#change-token").addEventListener("click", () => showLogin(""));

// ---- rooms ----

function renderRooms() {
  const box = $("#rooms");
  box.replaceChildren();
  if (rooms.size === 0) {
    box.append(el("p", { class: "empty" }, "No rooms."));
    return;
  }
  for (const room of [...rooms.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const path = "/api/rooms/" + encodeURIComponent(room.name);
    const members = el("tbody");
    for (const m of room.members) {
      const mpath = path + "/members/" + m.id + "/";
      const row = el("tr", {
        class: "member" + (m.talking ? " talking" : "") + (m.muted ? " muted" : ""),
        "data-member": String(m.id),
      },
        el("td", {}, el("span", { class: "talk", title: "talking" })),
        el("td", { class: "who" }, m.from,
          m.moderator ? el("span", { class: "tag" }, "moderator") : "",
          m.deaf ? el("span", { class: "tag" }, "deaf") : ""),
        el("td", { class: "mute-state" }, m.muted ? "muted" : ""),
        el("td", {},
          m.muted
            ? button("Unmute", "unmute", () => control("POST", mpath + "unmute"))
            : button("Mute", "mute", () => control("POST", mpath + "mute")),
          " ",
          button("Kick", "kick", () => {
            if (confirm("Remove " + m.from + " from " + room.name + "?")) control("POST", mpath + "kick");
          })));
      members.append(row);
    }
    box.append(el("div", { class: "room", "data-room": room.name },
      el("h3", {}, room.name,
        room.locked ? el("span", { class: "tag" }, "locked") : "",
        room.recording ? el("span", { class: "tag" }, "recording") : ""),
      el("table", {}, members),
      room.members.length === 0 ? el("p", { class: "empty" }, "Nobody here.") : ""));
  }
}

// Member changes from the event stream, newest last, so a room list fetched before a change
// (and answered after it) does not undo it.
let lastSeq = 0;
const memberChanges = [];

async function loadRooms() {
  const since = lastSeq;
  const list = await api("GET", "/api/rooms");
  rooms = new Map(list.map((r) => [r.name, r]));
  for (const c of memberChanges) {
    if (c.seq > since) patchMember(c.room, c.id, c.change);
  }
  renderRooms();
}

function patchMember(roomName, id, change) {
  const room = rooms.get(roomName);
  const m = room && room.members.find((x) => x.id === id);
  if (!m) return false;
  Object.assign(m, change);
  return true;
}

function updateMember(roomName, id, change, seq) {
  memberChanges.push({ seq, room: roomName, id, change });
  if (memberChanges.length > 500) memberChanges.splice(0, memberChanges.length - 500);
  if (!patchMember(roomName, id, change)) return false;
  renderRooms();
  return true;
}

// ---- calls ----

async function loadCalls() {
  const list = await api("GET", "/api/calls");
  const body = $("#calls");
  body.replaceChildren();
  for (const c of list) {
    body.append(el("tr", { "data-call": c.id },
      el("td", {}, c.id), el("td", {}, c.from), el("td", {}, c.to),
      el("td", { class: "call-state" }, c.state), el("td", {}, shortTime(c.started_at)),
      el("td", {}, c.room || ""),
      el("td", {}, button("Hang up", "hangup",
        () => control("POST", "/api/calls/" + encodeURIComponent(c.id) + "/hangup")))));
  }
  $("#calls-empty").hidden = list.length > 0;
}

// ---- recordings ----

function searchQuery() {
  const q = new URLSearchParams();
  for (const input of $("#search").querySelectorAll("input")) {
    if (input.value.trim()) q.set(input.name, input.value.trim());
  }
  q.set("limit", "100");
  return q.toString();
}

async function loadRecordings() {
  const page = await api("GET", "/api/recordings?" + searchQuery());
  const body = $("#recordings");
  body.replaceChildren();
  for (const r of page.items) {
    const audio = withToken("/api/recordings/" + encodeURIComponent(r.id) + "/audio");
    const done = r.state !== "recording";
    body.append(el("tr", { "data-recording": r.id },
      el("td", {}, shortTime(r.started)), el("td", {}, r.from), el("td", {}, r.to),
      el("td", {}, r.room || ""), el("td", {}, (r.duration_ms / 1000).toFixed(1) + " s"),
      el("td", {}, r.state),
      el("td", {},
        done ? button("Play", "play", () => {
          const p = $("#player");
          p.src = audio;
          p.dataset.recording = r.id;
          p.play().catch(showError);
        }) : "",
        " ",
        done ? el("a", { href: audio, download: r.id + ".wav", "data-action": "download" }, "Download") : "",
        " ",
        done ? button("Delete", "delete", async () => {
          if (!confirm("Delete recording " + r.id + "?")) return;
          await control("DELETE", "/api/recordings/" + encodeURIComponent(r.id));
          loadRecordings().catch(showError);
        }) : "")));
  }
  $("#recordings-total").textContent = page.total === 0 ? "No recordings." : page.total + " recordings";
}

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadRecordings().catch(showError);
});

// ---- event stream ----

let reloadTimer = null;
const pending = new Set();

// Bursts of events (a room filling up) cause one reload per list, not one per event.
function reloadSoon(what) {
  pending.add(what);
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    const todo = [...pending];
    pending.clear();
    for (const w of todo) ({ rooms: loadRooms, calls: loadCalls, recordings: loadRecordings })[w]().catch(showError);
  }, 200);
}

function onEvent(e) {
  if (typeof e.seq === "number") lastSeq = Math.max(lastSeq, e.seq);
  switch (e.type) {
    case "member_talking":
      if (!updateMember(e.room, e.member, { talking: e.talking }, e.seq)) reloadSoon("rooms");
      break;
    case "member_muted":
      if (!updateMember(e.room, e.member, { muted: e.muted }, e.seq)) reloadSoon("rooms");
      break;
    case "member_deaf":
      if (!updateMember(e.room, e.member, { deaf: e.deaf }, e.seq)) reloadSoon("rooms");
      break;
    case "room_created": case "room_ended": case "room_locked":
    case "member_joined": case "member_left":
      reloadSoon("rooms");
      if (e.type === "member_joined" || e.type === "member_left") reloadSoon("calls");
      break;
    case "call_started": case "call_answered": case "call_ended":
      reloadSoon("calls");
      break;
    case "recording_started": case "recording_finished":
      reloadSoon("recordings");
      reloadSoon("rooms");
      break;
  }
}

function connectEvents() {
  if (events) events.close();
  events = new EventSource(withToken("/api/events"));
  const state = $("#stream-state");
  events.onopen = () => {
    state.textContent = "events: live";
    state.className = "state on";
    // Anything missed while disconnected is picked up by reloading.
    reloadSoon("rooms"); reloadSoon("calls");
  };
  events.onerror = () => {
    state.textContent = "events: reconnecting";
    state.className = "state off";
  };
  const types = ["call_started", "call_answered", "call_ended", "dtmf", "room_created", "room_ended",
    "room_locked", "member_joined", "member_left", "member_talking", "member_muted", "member_deaf",
    "recording_started", "recording_finished"];
  for (const t of types) {
    events.addEventListener(t, (msg) => {
      try { onEvent(JSON.parse(msg.data)); } catch (err) { showError(err); }
    });
  }
  // Events were lost: the lists may be stale, so read them again.
  events.addEventListener("lagged", () => { reloadSoon("rooms"); reloadSoon("calls"); });
}

// ---- start ----

async function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#error").textContent = "";
  try {
    await Promise.all([loadRooms(), loadCalls(), loadRecordings()]);
    connectEvents();
  } catch (e) {
    showError(e);
  }
}

if (token === null) showLogin("");
else start();
