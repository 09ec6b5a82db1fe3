// Calls a dialplan number from the browser: the offer goes to POST /api/webrtc/{number} (as
// an INVITE to that number would), the answer comes back in the response, DELETE on its
// Location hangs up. Keys go as RFC 4733 events (RTCDTMFSender). `?autostart=1` calls at
// once; `?token=` gives the API token (else it is asked for when the server needs one).
// `?processing=0` turns off the browser's echo cancellation, noise suppression and gain
// control, for a headset or a line source: noise suppression takes a steady tone (music,
// a test tone) for noise and fades it by some 20 dB within two seconds.
"use strict";

const TOKEN_KEY = "switchboard-token";
const params = new URLSearchParams(location.search);
const number = decodeURIComponent(location.pathname.replace(/^\/call\//, ""));
const $ = (s) => document.querySelector(s);
let token = params.get("token") || localStorage.getItem(TOKEN_KEY) || "";
let pc = null;
let session = null;
let sender = null;
let analyser = null;

// What the page heard, for people (the meter) and for automated tests (window.callStats).
const stats = { state: "idle", level: 0, peakHz: 0, keysSent: "", error: "", callId: "" };
window.callStats = () => Object.assign({}, stats);

function setState(s) {
  stats.state = s;
  const el = $("#state");
  el.textContent = s;
  el.className = "state " + (s === "connected" ? "on" : "off");
  const live = s === "calling" || s === "connecting" || s === "connected";
  $("#call").disabled = live;
  $("#hangup").disabled = !live;
  $("#mute").disabled = s !== "connected";
}

function fail(message) {
  stats.error = message;
  $("#error").textContent = message;
  setState("failed");
  closePeer();
}

function closePeer() {
  if (pc) pc.close();
  pc = null;
  sender = null;
}

function headers() {
  const h = { "Content-Type": "application/sdp" };
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function gathered(peer) {
  if (peer.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const done = () => peer.iceGatheringState === "complete" && resolve();
    peer.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000); // what is gathered by then is offered
  });
}

function listen(stream) {
  $("#remote").srcObject = stream;
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(stream);
  analyser = ctx.createAnalyser();
  analyser.fftSize = 4096;
  src.connect(analyser);
  const time = new Float32Array(analyser.fftSize);
  const freq = new Float32Array(analyser.frequencyBinCount);
  const tick = () => {
    if (!analyser) return;
    analyser.getFloatTimeDomainData(time);
    let sum = 0;
    for (const v of time) sum += v * v;
    stats.level = Math.sqrt(sum / time.length);
    analyser.getFloatFrequencyData(freq);
    let best = 0;
    for (let i = 1; i < freq.length; i++) if (freq[i] > freq[best]) best = i;
    stats.peakHz = (best * ctx.sampleRate) / analyser.fftSize;
    $("#level").value = Math.min(1, stats.level * 4);
    setTimeout(tick, 100);
  };
  tick();
}

async function call() {
  $("#error").textContent = "";
  stats.error = "";
  setState("calling");
  let mic;
  try {
    const audio = params.get("processing") === "0"
      ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false }
      : true;
    mic = await navigator.mediaDevices.getUserMedia({ audio });
  } catch (e) {
    return fail("no microphone: " + e.message);
  }
  pc = new RTCPeerConnection({ iceServers: [] });
  const [track] = mic.getAudioTracks();
  const tx = pc.addTransceiver(track, { direction: "sendrecv", streams: [mic] });
  sender = tx.sender;
  pc.ontrack = (e) => listen(e.streams[0] || new MediaStream([e.track]));
  pc.onconnectionstatechange = () => {
    if (!pc) return;
    if (pc.connectionState === "connected") setState("connected");
    if (pc.connectionState === "failed") fail("the media connection failed");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  let res;
  try {
    res = await fetch("/api/webrtc/" + encodeURIComponent(number), {
      method: "POST",
      headers: headers(),
      body: pc.localDescription.sdp,
    });
  } catch (e) {
    return fail("the server cannot be reached: " + e.message);
  }
  if (res.status === 401) {
    $("#login").hidden = false;
    return fail("this server needs its API token");
  }
  if (res.status !== 201) {
    let why = res.statusText;
    try { why = (await res.json()).error || why; } catch (_) { /* not JSON */ }
    return fail(res.status + ": " + why);
  }
  session = res.headers.get("Location");
  stats.callId = res.headers.get("X-Call-Id") || "";
  setState("connecting");
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
}

async function hangup() {
  const where = session;
  session = null;
  closePeer();
  analyser = null;
  setState("ended");
  if (where) {
    // keepalive: sent even when the page is going away.
    await fetch(where, { method: "DELETE", keepalive: true, headers: token ? { Authorization: "Bearer " + token } : {} });
  }
}

function key(k) {
  if (!sender || !sender.dtmf) return;
  sender.dtmf.insertDTMF(k, 100, 70);
  stats.keysSent += k;
  $("#sent-keys").textContent = stats.keysSent;
}
window.sendKeys = key;
// Another client on this page (a SIP phone in JavaScript) is measured by the same meter.
window.listenTo = listen;

$("#number").textContent = number;
$("#call").addEventListener("click", call);
$("#hangup").addEventListener("click", hangup);
$("#mute").addEventListener("click", () => {
  const muted = $("#mute").getAttribute("aria-pressed") !== "true";
  $("#mute").setAttribute("aria-pressed", String(muted));
  if (sender && sender.track) sender.track.enabled = !muted;
});
$("#keypad").addEventListener("click", (e) => {
  if (e.target.tagName === "BUTTON") key(e.target.textContent);
});
$("#token").addEventListener("change", () => {
  token = $("#token").value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  $("#login").hidden = true;
});
window.addEventListener("beforeunload", () => { if (session) navigator.sendBeacon && hangup(); });
setState("idle");
if (params.get("autostart") === "1") call();
