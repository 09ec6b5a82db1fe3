// switchboard web console: plain JavaScript, no build step. `/api/info` says whether the
// server needs a token; when it does, every data request carries it, and the event stream
// and audio, which browsers cannot give headers, carry it as ?token=.
"use strict";

const TOKEN_KEY = "switchboard-token";
const $ = (sel) => document.querySelector(sel);

let token = localStorage.getItem(TOKEN_KEY);
let needsToken = true;
// The number that joins room {room} from this browser, when the server takes WebRTC calls.
let roomNumber = null;
let rooms = new Map(); // name -> RoomInfo
let events = null;
let statsTimer = null;

function authHeaders() {
  return needsToken && token ? { Authorization: "Bearer " + token } : {};
}

function withToken(url) {
  return needsToken && token
    ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token)
    : url;
}

async function api(method, path, body) {
  const opts = { method, headers: authHeaders() };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    needsToken = true;
    showLogin(token ? "The token was refused." : "");
    throw new Error("unauthorized");
  }
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
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
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function button(label, action, onclick, cls) {
  return el("button", { type: "button", "data-action": action, onclick, class: cls }, label);
}

// A button that acts only when clicked twice within a few seconds: for the controls that
// cannot be undone (end a room, kick a member).
function armedButton(label, action, onconfirm) {
  const b = button(label, action, () => {
    if (b.dataset.armed === "1") {
      onconfirm();
      return;
    }
    b.dataset.armed = "1";
    b.textContent = "Sure? " + label;
    b.classList.add("armed");
    setTimeout(() => {
      if (!b.isConnected) return;
      delete b.dataset.armed;
      b.textContent = label;
      b.classList.remove("armed");
    }, 4000);
  }, "danger");
  return b;
}

function control(method, path, body) {
  $("#error").textContent = "";
  return api(method, path, body).catch(showError);
}

function tag(text, cls) {
  return el("span", { class: "tag" + (cls ? " " + cls : "") }, text);
}

// ---- presentation ----

// `"Alice Smith" <sip:alice@example.com;user=phone>;tag=12` -> name "Alice Smith", user
// "alice", uri "sip:alice@example.com;user=phone". Also takes bare URIs and plain users.
function parseParty(text) {
  const s = String(text || "").trim();
  let name = "";
  let rest = s;
  if (s.startsWith('"')) {
    // A quoted name may hold any character, `<` and escaped quotes included.
    const m = /^"((?:[^"\\]|\\.)*)"\s*/.exec(s);
    if (m) {
      name = m[1].replace(/\\(.)/g, "$1");
      rest = s.slice(m[0].length);
    }
  }
  let uri;
  const lt = rest.indexOf("<");
  if (lt >= 0) {
    if (!name) name = rest.slice(0, lt).trim();
    const gt = rest.indexOf(">", lt);
    uri = rest.slice(lt + 1, gt < 0 ? undefined : gt);
  } else {
    uri = rest.split(";")[0]; // header parameters such as ;tag= follow a bare URI
  }
  let user = uri.replace(/^(sips?|tel):/i, "").split(/[;?]/)[0];
  const at = user.lastIndexOf("@");
  if (at >= 0) user = user.slice(0, at);
  user = user.split(":")[0]; // user:password
  try { user = decodeURIComponent(user); } catch (_) { /* keep it as written */ }
  if (!user) user = uri;
  return { name, user, uri };
}

function party(text) {
  const p = parseParty(text);
  const title = p.uri || String(text || "");
  if (p.name && p.name !== p.user) {
    return el("span", { class: "party", title },
      el("span", { class: "name" }, p.name), " ", el("span", { class: "user" }, p.user));
  }
  return el("span", { class: "party", title }, el("span", { class: "name" }, p.user));
}

function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
}

// A duration that counts up from an RFC 3339 time, refreshed by `tick`.
function since(time) {
  const e = el("span", { class: "dur", "data-since": time || "" });
  updateSince(e);
  return e;
}

function updateSince(e) {
  const t = Date.parse(e.dataset.since);
  e.textContent = Number.isNaN(t) ? "" : formatDuration(Date.now() - t);
}

function tick() {
  for (const e of document.querySelectorAll(".dur[data-since]")) updateSince(e);
}

function shortTime(t) {
  if (!t) return "";
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return t;
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " "
    + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
}

// ---- login ----

function showLogin(message) {
  if (events) { events.close(); events = null; }
  if (statsTimer) { clearInterval(statsTimer); statsTimer = null; }
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#change-token").hidden = true;
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

// ---- live panel ----

async function loadStats() {
  const s = await api("GET", "/api/stats");
  for (const box of document.querySelectorAll("#live .stat")) {
    const v = s[box.dataset.stat];
    if (v === undefined) continue;
    box.querySelector(".n").textContent = String(v);
    // Late ticks since start are history; only new ones since the last look are a warning.
    const prev = Number(box.dataset.value);
    box.classList.toggle("warn",
      (box.dataset.stat === "rtp_loss_percent" && v >= 1) ||
      (box.dataset.stat === "late_ticks" && !Number.isNaN(prev) && v > prev));
    box.dataset.value = String(v);
  }
}

// ---- rooms ----

const promptText = new Map(); // room -> what is typed in its prompt box

function renderRooms() {
  const box = $("#rooms");
  const focused = document.activeElement && document.activeElement.dataset.promptFor;
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
        class: "member" + (m.talking ? " talking" : "") + (m.muted ? " muted" : "") + (m.deaf ? " deaf" : ""),
        "data-member": String(m.id),
        "data-call": m.call_id,
      },
        el("td", { class: "talk-cell" }, el("span", { class: "talk", title: m.talking ? "talking" : "quiet" })),
        el("td", { class: "who" }, party(m.from),
          m.moderator ? tag("moderator") : "",
          m.muted ? tag("muted", "mute-state") : "",
          m.deaf ? tag("deaf", "deaf-tag") : ""),
        el("td", { class: "num" }, since(m.joined_at)),
        el("td", { class: "actions" },
          m.muted
            ? button("Unmute", "unmute", () => control("POST", mpath + "unmute"))
            : button("Mute", "mute", () => control("POST", mpath + "mute")),
          m.deaf
            ? button("Undeaf", "undeaf", () => control("POST", mpath + "undeaf"))
            : button("Deafen", "deaf", () => control("POST", mpath + "deaf")),
          armedButton("Kick", "kick", () => control("POST", mpath + "kick"))));
      members.append(row);
    }
    const prompt = el("input", {
      class: "prompt", placeholder: "prompt, e.g. beep", value: promptText.get(room.name) || "",
      "data-prompt-for": room.name,
      oninput: (ev) => promptText.set(room.name, ev.target.value),
      onkeydown: (ev) => { if (ev.key === "Enter") playPrompt(); },
    });
    function playPrompt() {
      const name = prompt.value.trim();
      if (name) control("POST", path + "/play", { prompt: name });
    }
    const controls = el("div", { class: "room-controls" },
      room.locked
        ? button("Unlock", "unlock", () => control("POST", path + "/unlock"))
        : button("Lock", "lock", () => control("POST", path + "/lock")),
      room.recording
        ? button("Stop recording", "record-stop", () => control("POST", path + "/record/stop"), "rec")
        : button("Record", "record-start", () => control("POST", path + "/record/start")),
      el("span", { class: "play" }, prompt, button("Play", "play-prompt", playPrompt)),
      roomNumber
        ? el("a", {
          class: "join", "data-action": "join", target: "_blank", rel: "noopener",
          href: "/call/" + encodeURIComponent(roomNumber.replace("{room}", room.name)),
        }, "Join from this browser")
        : "",
      armedButton("End room", "end", () => control("POST", path + "/end")));
    const card = el("div", { class: "room", "data-room": room.name },
      el("div", { class: "room-head" },
        el("h3", {}, room.name),
        el("span", { class: "room-meta" },
          room.members.length + (room.members.length === 1 ? " member" : " members"), " · ",
          since(room.created_at),
          room.rate ? " · " + room.rate / 1000 + " kHz" : ""),
        room.locked ? tag("locked", "locked-tag") : "",
        room.recording ? tag("● recording", "rec-tag") : "",
        controls),
      room.members.length
        ? el("table", { class: "members" },
            el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "Member"),
              el("th", {}, "In room"), el("th", {}, ""))),
            members)
        : el("p", { class: "empty" }, "Nobody here."));
    box.append(card);
    if (focused === room.name) {
      prompt.focus();
      prompt.setSelectionRange(prompt.value.length, prompt.value.length);
    }
  }
}

// Member changes from the event stream, newest last, so a room list fetched before a change
// (and answered after it) does not undo it.
let lastSeq = 0;
const memberChanges = [];

async function loadRooms() {
  const seqBefore = lastSeq;
  const list = await api("GET", "/api/rooms");
  rooms = new Map(list.map((r) => [r.name, r]));
  for (const c of memberChanges) {
    if (c.seq > seqBefore) patchMember(c.room, c.id, c.change);
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
    const answered = c.state === "answered";
    body.append(el("tr", { "data-call": c.id, title: "Call-ID " + c.id },
      el("td", { class: "who" }, party(c.from)),
      el("td", {}, c.direction === "outbound" ? "↗ " + c.to : party(c.to),
        c.bridged_with ? el("div", { class: "bridged" }, "⇄ " + c.bridged_with) : "",
        c.heard ? el("div", { class: "heard", title: "What the last listen() heard" }, "“" + c.heard + "”") : "",
        c.amd ? el("div", { class: "amd", title: "Answering-machine detection" }, "AMD " + c.amd) : ""),
      el("td", { class: "call-state" }, tag(c.state, answered ? "ok" : "ringing")),
      el("td", { class: "num" }, since(c.answered_at || c.started_at)),
      el("td", {}, c.room || ""),
      el("td", { class: "actions" }, button("Hang up", "hangup",
        () => control("POST", "/api/calls/" + encodeURIComponent(c.id) + "/hangup"), "danger"))));
  }
  $("#calls-empty").hidden = list.length > 0;
  body.closest("table").hidden = list.length === 0;
}

// ---- recordings ----

const levelCache = new Map(); // id -> peaks

function formQuery(form, extra) {
  const q = new URLSearchParams();
  for (const input of form.querySelectorAll("input, select")) {
    if (input.value.trim()) q.set(input.name, input.value.trim());
  }
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q.toString();
}

function drawLevels(canvas, peaks) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#3a7bd5";
  const bar = w / Math.max(1, peaks.length);
  peaks.forEach((p, i) => {
    // A square-root scale keeps quiet speech visible next to loud parts.
    const y = Math.max(1, Math.round(Math.sqrt(p) * h));
    ctx.fillRect(Math.floor(i * bar), (h - y) / 2, Math.max(1, Math.ceil(bar) - (bar > 2 ? 1 : 0)), y);
  });
  canvas.dataset.levels = String(peaks.length);
}

function levelStrip(id) {
  const canvas = el("canvas", { class: "levels", width: 160, height: 24, "data-levels-for": id });
  const cached = levelCache.get(id);
  if (cached) {
    drawLevels(canvas, cached);
  } else {
    api("GET", "/api/recordings/" + encodeURIComponent(id) + "/levels?n=80")
      .then((l) => {
        if (levelCache.size >= 1000) levelCache.clear(); // a page left open for days
        levelCache.set(id, l.peaks);
        drawLevels(canvas, l.peaks);
      })
      .catch(showError);
  }
  return canvas;
}

async function loadRecordings() {
  const page = await api("GET", "/api/recordings?" + formQuery($("#search"), { limit: "100" }));
  const body = $("#recordings");
  body.replaceChildren();
  for (const r of page.items) {
    const audio = withToken("/api/recordings/" + encodeURIComponent(r.id) + "/audio");
    const done = r.state !== "recording";
    body.append(el("tr", { "data-recording": r.id, title: r.id },
      el("td", {}, shortTime(r.started)),
      el("td", { class: "who" }, party(r.from)),
      el("td", {}, party(r.to)),
      el("td", {}, r.room || ""),
      el("td", { class: "num length" }, done ? formatDuration(r.duration_ms) : tag("● recording", "rec-tag")),
      el("td", {}, done ? levelStrip(r.id) : ""),
      el("td", { class: "actions" },
        done ? button("▶ Play", "play", () => {
          const p = $("#player");
          p.src = audio;
          p.dataset.recording = r.id;
          p.play().catch(showError);
        }) : "",
        done ? el("a", { href: audio, download: r.id + ".wav", "data-action": "download", class: "button" }, "Download") : "",
        done ? armedButton("Delete", "delete", async () => {
          await control("DELETE", "/api/recordings/" + encodeURIComponent(r.id));
          levelCache.delete(r.id);
          loadRecordings().catch(showError);
        }) : "")));
  }
  body.closest("table").hidden = page.items.length === 0;
  $("#recordings-total").textContent =
    page.total === 0 ? "No recordings." : page.total + (page.total === 1 ? " recording" : " recordings");
}

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadRecordings().catch(showError);
});

// ---- call history ----

function outcome(c) {
  const ok = !!c.answered_at;
  const label = (c.cause || (ok ? "answered" : "unanswered")).replace(/_/g, " ");
  return tag(label + (c.sip_code ? " (" + c.sip_code + ")" : ""), ok ? "ok" : "missed");
}

async function loadHistory() {
  const form = $("#history-filter");
  if (!form.elements.date.value) form.elements.date.value = new Date().toISOString().slice(0, 10);
  let page;
  try {
    page = await api("GET", "/api/cdrs?" + formQuery(form, { limit: "200" }));
  } catch (e) {
    if (e.status !== 404) throw e;
    form.hidden = true;
    $("#history-table").hidden = true;
    $("#history-total").textContent = "Call history is off: the server keeps no call records ([cdr] dir).";
    return;
  }
  form.hidden = false;
  const body = $("#history");
  $("#history-table").hidden = page.items.length === 0;
  body.replaceChildren();
  // A leg a call dialled is shown under that call, so a bridged call reads as one.
  const ids = new Set(page.items.map((c) => c.call_id));
  const legs = new Map();
  for (const c of page.items) {
    if (c.parent_call_id && ids.has(c.parent_call_id)) {
      if (!legs.has(c.parent_call_id)) legs.set(c.parent_call_id, []);
      legs.get(c.parent_call_id).push(c);
    }
  }
  const row = (c, leg) =>
    el("tr", { "data-cdr": c.call_id, class: leg ? "leg" : "", title: "Call-ID " + c.call_id },
      el("td", {}, shortTime(c.started_at)),
      el("td", { class: "who" }, leg ? "" : party(c.from)),
      el("td", { class: "dialled" }, leg ? "↳ " + (c.trunk ? c.trunk + ": " : "") + c.to : party(c.to)),
      el("td", { class: "num talk-time" }, c.answered_at ? formatDuration(c.duration_ms) : "–"),
      el("td", { class: "outcome" }, outcome(c)),
      el("td", {}, c.digits || ""),
      el("td", { class: "num" }, c.rtp && !leg ? String(c.rtp.lost) : ""));
  for (const c of page.items) {
    if (c.parent_call_id && ids.has(c.parent_call_id)) continue;
    body.append(row(c, false));
    for (const leg of (legs.get(c.call_id) || []).reverse()) body.append(row(leg, true));
  }
  $("#history-total").textContent = page.total === 0
    ? "No calls on " + page.date + "."
    : page.total + (page.total === 1 ? " call" : " calls") + " on " + page.date;
}

$("#history-filter").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadHistory().catch(showError);
});

// ---- event stream ----

let reloadTimer = null;
const pending = new Set();
const loaders = { rooms: loadRooms, calls: loadCalls, recordings: loadRecordings, history: loadHistory, stats: loadStats };

// Bursts of events (a room filling up) cause one reload per list, not one per event.
function reloadSoon(what) {
  pending.add(what);
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    const todo = [...pending];
    pending.clear();
    for (const w of todo) loaders[w]().catch(showError);
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
      reloadSoon("stats");
      if (e.type === "member_joined" || e.type === "member_left") reloadSoon("calls");
      break;
    case "call_started": case "call_answered":
      reloadSoon("calls");
      reloadSoon("stats");
      break;
    case "call_ended":
      reloadSoon("calls");
      reloadSoon("stats");
      reloadSoon("history");
      break;
    case "speech": case "amd":
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
    reloadSoon("rooms"); reloadSoon("calls"); reloadSoon("stats");
  };
  events.onerror = () => {
    state.textContent = "events: reconnecting";
    state.className = "state off";
  };
  const types = ["call_started", "call_answered", "call_ended", "dtmf", "room_created", "room_ended",
    "room_locked", "member_joined", "member_left", "member_talking", "member_muted", "member_deaf",
    "recording_started", "recording_finished", "speech", "amd"];
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
  $("#change-token").hidden = !needsToken;
  $("#error").textContent = "";
  // Each list stands alone: one that fails (CDRs turned off) leaves the others working.
  const loads = await Promise.allSettled([loadStats(), loadRooms(), loadCalls(), loadRecordings(), loadHistory()]);
  if (loads.some((r) => r.status === "rejected" && r.reason.message === "unauthorized")) return;
  for (const r of loads) if (r.status === "rejected") showError(r.reason);
  connectEvents();
  if (!statsTimer) statsTimer = setInterval(() => loadStats().catch(showError), 2000);
}

setInterval(tick, 1000);

async function boot() {
  try {
    const resp = await fetch("/api/info");
    const info = await resp.json();
    needsToken = info.auth !== "none";
    roomNumber = info.room_number || null;
    $("#version").textContent = info.version ? "v" + info.version : "";
  } catch (_) {
    needsToken = true; // an older server: assume it wants one
  }
  if (needsToken && !token) showLogin("");
  else start();
}

boot();
