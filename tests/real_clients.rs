//! Real SIP phones from Debian (baresip, linphonec) against the real server binary, each
//! test in its own loopback-only network namespace. What a phone heard, or what the server
//! recorded, is decoded and measured: tone frequency and level.
//!
//! Needs root (for the namespace), `baresip`, `linphonec` and `ip`; without them the tests
//! skip with a notice, except with `CI=true`, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/baresip.rs"]
mod baresip;
mod common;
#[path = "support/linphone.rs"]
mod linphone;
#[path = "support/phones.rs"]
mod phones;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::rtp::measure_at;

use baresip::{Baresip, Options};
use common::{http, Server, ServerOptions};
use linphone::Linphone;
use phones::{measure, read_wav_bytes, window, Events, Phone};
use serde_json::Value;

/// Bound on waiting for any one server event.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long audio is left to flow before it is measured. Not a synchronisation: the
/// measurement needs this much audio.
const LISTEN: Duration = Duration::from_millis(2500);

/// The last stretch of a call's audio that is measured: 1.6 s, ending 200 ms before the
/// end, so the moments around hang-up are left out.
fn tail(pcm: &[i16]) -> &[i16] {
    window(pcm, -1800, -200)
}

/// A server in a private network namespace, with its event stream open.
struct Bench {
    server: Server,
    events: Events,
}

impl Bench {
    /// None (after a notice) when the programs or the namespace are unavailable outside CI.
    fn new(label: &str, programs: &[&str], options: ServerOptions) -> Option<Bench> {
        if !phones::have(programs) || !phones::have(&["ip"]) || !phones::isolate_network() {
            return None;
        }
        let server = Server::start_with(label, options);
        let events = Events::subscribe(server.http);
        Some(Bench { server, events })
    }

    fn sip(&self) -> SocketAddr {
        self.server.sip
    }

    fn dir(&self) -> &std::path::Path {
        self.server.dir()
    }

    /// The call_answered event of the call to `to` (the dialled user), and its Call-ID.
    fn answered(&mut self, to: &str) -> String {
        let started = self
            .events
            .wait("call_started", EVENT_WAIT, |e| e["to"] == to);
        let call_id = started["call_id"].as_str().unwrap_or_default().to_string();
        self.events.wait("call_answered", EVENT_WAIT, |e| {
            e["call_id"] == call_id.as_str()
        });
        call_id
    }

    fn ended(&mut self, call_id: &str) -> Value {
        self.events
            .wait("call_ended", EVENT_WAIT, |e| e["call_id"] == call_id)
    }

    fn joined(&mut self, room: &str, call_id: &str) -> Value {
        self.events.wait("member_joined", EVENT_WAIT, |e| {
            e["room"] == room && e["call_id"] == call_id
        })
    }

    fn dtmf(&mut self, call_id: &str, digit: char) -> Value {
        self.events.wait("dtmf", EVENT_WAIT, |e| {
            e["call_id"] == call_id && e["digit"] == digit.to_string().as_str()
        })
    }

    /// Calls the echo service, runs `during` once it answered, lets the echo run, hangs up,
    /// and checks that the phone heard its own `hz` tone back. Returns the call_ended event.
    fn echo(&mut self, phone: &mut impl Phone, hz: u32, during: impl FnOnce(&mut Bench)) -> Value {
        self.echo_at(phone, "echo", hz, during)
    }

    /// [`Bench::echo`] with the echo script reached by calling `user`.
    fn echo_at(
        &mut self,
        phone: &mut impl Phone,
        user: &str,
        hz: u32,
        during: impl FnOnce(&mut Bench),
    ) -> Value {
        phone.dial(user);
        let call = self.answered(user);
        during(self);
        std::thread::sleep(LISTEN);
        phone.hang_up();
        let ended = self.ended(&call);
        measure(tail(&phone.heard()), &[hz]).assert_tone(hz, "the echo");
        ended
    }

    /// Calls the answering machine; returns the call's Call-ID and the recording's id once
    /// the recording has started (after the greeting).
    fn leave_message(&mut self, phone: &mut Baresip) -> (String, String) {
        phone.call("message");
        let call = self.answered("message");
        let started = self.events.wait(
            "recording_started",
            EVENT_WAIT + Duration::from_secs(10),
            |e| e["call_id"] == call.as_str(),
        );
        let id = started["id"].as_str().unwrap_or_default().to_string();
        (call, id)
    }

    /// Leaves a message of [`LISTEN`] after the greeting and hangs up; returns the
    /// recording_finished event once the recording is finished and the call ended.
    fn record_message(&mut self, phone: &mut Baresip) -> Value {
        let (call, id) = self.leave_message(phone);
        std::thread::sleep(LISTEN);
        phone.hangup();
        let finished = self
            .events
            .wait("recording_finished", EVENT_WAIT, |e| e["id"] == id.as_str());
        assert_eq!(self.ended(&call)["reason"], "caller_bye");
        finished
    }

    /// The recording `id` as served by the API, decoded.
    fn recording(&self, id: &str) -> Vec<i16> {
        let body = http_bytes(self.server.http, &format!("/api/recordings/{id}/audio"));
        read_wav_bytes(&body, &format!("recording {id}"))
    }

    /// Walks the IVR with RFC 4733 keys into room 42 (1: conference, then 4, 2, #), each key
    /// detected as an event, and hangs up.
    fn walk_to_room_42(&mut self, phone: &mut Baresip) {
        phone.call("ivr");
        let call = self.answered("ivr");
        for key in ['1', '4', '2', '#'] {
            phone.key(key);
            let ev = self.dtmf(&call, key);
            assert_eq!(ev["method"], "rfc4733", "{ev}");
        }
        self.joined("42", &call);
        phone.hangup();
        self.ended(&call);
    }

    /// A counter from `/metrics` (0 when absent).
    fn metric(&self, name_and_labels: &str) -> f64 {
        let (status, body) = http(self.server.http, "GET", "/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Asserts that this namespace has an established TCP connection to `server` (our IPv4
/// loopback listener), as the server side of `/proc/net/tcp` shows it.
fn assert_connected_to(server: SocketAddr) {
    let tcp = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap();
    let local = format!("0100007F:{:04X}", server.port());
    assert!(
        tcp.lines().any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"01")
        }),
        "no established connection to {server}:\n{tcp}"
    );
}

/// GET `path`, the body as bytes (a 200 is required).
fn http_bytes(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no HTTP header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "GET {path}: {head}");
    assert!(
        !head.contains("chunked"),
        "GET {path}: chunked bodies not handled"
    );
    raw[split + 4..].to_vec()
}

/// Conference tests hear only the members: no join or leave tones, no "you are alone".
fn quiet_rooms() -> ServerOptions {
    ServerOptions {
        config: Some(
            "[conference]\njoin_sound = \"\"\nleave_sound = \"\"\nalone_prompt = \"\"\n".into(),
        ),
        ..ServerOptions::default()
    }
}

#[test]
fn baresip_echo_returns_its_tone() {
    let Some(mut b) = Bench::new("rc-bs-echo", &["baresip"], ServerOptions::default()) else {
        return;
    };
    let mut phone = Baresip::start(b.dir(), "alice", b.sip(), Options::tone(700));
    let ended = b.echo(&mut phone, 700, |_| {});
    assert_eq!(ended["reason"], "caller_bye");
}

#[test]
fn baresip_echo_over_tcp() {
    let Some(mut b) = Bench::new("rc-bs-tcp", &["baresip"], ServerOptions::default()) else {
        return;
    };
    let options = Options {
        tcp: true,
        ..Options::tone(750)
    };
    let mut phone = Baresip::start(b.dir(), "tcp", b.sip(), options);
    // The call's signalling is on a TCP connection to the server's SIP port.
    b.echo(&mut phone, 750, |b| assert_connected_to(b.sip()));
}

/// A protected echo rule (`secret`, `auth = true`) for the user alice, offering
/// `algorithms`.
fn protected_echo(algorithms: &str) -> ServerOptions {
    ServerOptions {
        config: Some(format!(
            "[sip]\nauth_algorithms = {algorithms}\n\n\
             [[users]]\nname = \"alice\"\npassword = \"wonderland\"\n\n\
             [[dialplan]]\nexact = \"secret\"\nscript = \"echo\"\nauth = true\n"
        )),
        ..ServerOptions::default()
    }
}

/// baresip answers the 401 with its account's password and hears the protected echo.
#[test]
fn baresip_authenticates_and_hears_the_protected_echo() {
    let Some(mut b) = Bench::new("rc-bs-auth", &["baresip"], protected_echo("[\"MD5\"]")) else {
        return;
    };
    let options = Options {
        auth_pass: Some("wonderland".into()),
        ..Options::tone(650)
    };
    let mut phone = Baresip::start(b.dir(), "alice", b.sip(), options);
    b.echo_at(&mut phone, "secret", 650, |_| {});
    assert_eq!(b.metric("switchboard_sip_auth_failures_total"), 0.0);
    assert_eq!(
        b.metric("switchboard_sip_responses_total{code=\"401\"}"),
        1.0
    );
}

/// linphone is offered SHA-256 and MD5 (the default order), answers SHA-256 with the
/// password of its auth_info, and hears the protected echo. (baresip 1.0 abandons a call
/// whose 401 carries any challenge but MD5, hence MD5 alone above.)
#[test]
fn linphone_authenticates_with_sha256_and_hears_the_protected_echo() {
    let algorithms = "[\"SHA-256\", \"MD5\"]";
    let Some(mut b) = Bench::new("rc-lp-auth", &["linphonec"], protected_echo(algorithms)) else {
        return;
    };
    // The rc file's [sip] lines, then a section of its own for the credentials.
    let settings = [
        "contact=sip:alice@127.0.0.1",
        "[auth_info_0]",
        "username=alice",
        "passwd=wonderland",
        "realm=127.0.0.1",
    ];
    let mut phone = Linphone::start(b.dir(), "lin-auth", b.sip(), 1300, &settings, 60);
    b.echo_at(&mut phone, "secret", 1300, |_| {});
    let log = b.server.log_text();
    assert!(
        log.contains("caller authenticated") && log.contains("algorithm=\"SHA-256\""),
        "{log}"
    );
    assert_eq!(b.metric("switchboard_sip_auth_failures_total"), 0.0);
}

#[test]
fn linphone_echo_returns_its_tone() {
    let Some(mut b) = Bench::new("rc-lp-echo", &["linphonec"], ServerOptions::default()) else {
        return;
    };
    let mut phone = Linphone::start(b.dir(), "lin", b.sip(), 1100, &[], 60);
    b.echo(&mut phone, 1100, |_| {});
}

#[test]
fn linphone_late_offer_echo() {
    let Some(mut b) = Bench::new("rc-lp-late", &["linphonec"], ServerOptions::default()) else {
        return;
    };
    // INVITE without SDP: the server offers in its 200, linphone answers in the ACK.
    let mut phone = Linphone::start(b.dir(), "late", b.sip(), 1200, &["sdp_200_ack=1"], 60);
    // Its tone comes back: audio flowed to the server and from it.
    b.echo(&mut phone, 1200, |_| {});
    assert!(
        b.server.log_text().contains("answer in ACK accepted"),
        "the call was not a late offer\n{}",
        b.server.log_text()
    );
}

#[test]
fn baresip_walks_the_ivr_with_rfc4733_keys() {
    let Some(mut b) = Bench::new("rc-bs-ivr", &["baresip"], quiet_rooms()) else {
        return;
    };
    let mut phone = Baresip::start(b.dir(), "keys", b.sip(), Options::tone(700));
    b.walk_to_room_42(&mut phone);
}

#[test]
fn linphone_walks_the_ivr_with_sip_info() {
    let Some(mut b) = Bench::new("rc-lp-ivr", &["linphonec"], quiet_rooms()) else {
        return;
    };
    let mut phone = Linphone::start(
        b.dir(),
        "info",
        b.sip(),
        700,
        &["use_info=1", "use_rfc2833=0"],
        60,
    );
    phone.call("ivr");
    let call = b.answered("ivr");
    for key in ['1', '4', '3', '#'] {
        phone.send(&key.to_string());
        let ev = b.dtmf(&call, key);
        assert_eq!(ev["method"], "info", "{ev}");
    }
    b.joined("43", &call);
    phone.hangup();
    b.ended(&call);
}

#[test]
fn two_phones_in_a_room_hear_each_other_not_themselves() {
    let Some(mut b) = Bench::new("rc-conf", &["baresip", "linphonec"], quiet_rooms()) else {
        return;
    };
    let (bs_hz, lp_hz) = (600, 1400);
    let mut bs = Baresip::start(b.dir(), "bs", b.sip(), Options::tone(bs_hz));
    let mut lp = Linphone::start(b.dir(), "lp", b.sip(), lp_hz, &[], 60);
    bs.call("conf-duo");
    let bs_call = b.answered("conf-duo");
    b.joined("duo", &bs_call);
    lp.call("conf-duo");
    let lp_call = b.answered("conf-duo");
    b.joined("duo", &lp_call);
    std::thread::sleep(LISTEN);
    bs.hangup();
    lp.hangup();
    let bs_heard = measure(tail(&bs.heard()), &[bs_hz, lp_hz]);
    bs_heard.assert_tone(lp_hz, "baresip hears linphone");
    bs_heard.assert_without(bs_hz, "baresip hears itself");
    // linphone's file goes on after baresip left; its last second is silence.
    let lp_heard = measure(window(&lp.heard(), -3000, -1200), &[bs_hz, lp_hz]);
    lp_heard.assert_tone(bs_hz, "linphone hears baresip");
    lp_heard.assert_without(lp_hz, "linphone hears itself");
}

#[test]
fn message_recording_holds_the_phones_tone() {
    let Some(mut b) = Bench::new("rc-record", &["baresip"], ServerOptions::default()) else {
        return;
    };
    let mut phone = Baresip::start(b.dir(), "rec", b.sip(), Options::tone(900));
    let finished = b.record_message(&mut phone);
    assert!(
        finished["duration_ms"].as_u64().unwrap_or(0) >= 2000,
        "{finished}"
    );
    let audio = b.recording(finished["id"].as_str().unwrap_or_default());
    measure(window(&audio, 200, -200), &[900]).assert_tone(900, "the recording");
}

#[test]
fn baresip_hold_and_resume_keep_the_call_and_its_audio() {
    let Some(mut b) = Bench::new("rc-hold", &["baresip"], ServerOptions::default()) else {
        return;
    };
    let mut phone = Baresip::start(b.dir(), "hold", b.sip(), Options::tone(950));
    let (call, id) = b.leave_message(&mut phone);
    std::thread::sleep(Duration::from_millis(1000));
    // Each re-INVITE is done when its answer's SDP arrives.
    let sdp_or_close = |v: &Value| v["type"] == "CALL_REMOTE_SDP" || v["type"] == "CALL_CLOSED";
    phone.command("hold", "");
    let ev = phone.wait("the answer to the hold re-INVITE", sdp_or_close);
    assert_eq!(ev["type"], "CALL_REMOTE_SDP", "hold: {ev}");
    std::thread::sleep(Duration::from_millis(1500));
    phone.command("resume", "");
    let ev = phone.wait("the answer to the resume re-INVITE", sdp_or_close);
    assert_eq!(ev["type"], "CALL_REMOTE_SDP", "resume: {ev}");
    std::thread::sleep(LISTEN);
    assert!(
        !b.events.drain().iter().any(|e| e["type"] == "call_ended"),
        "the call ended during hold/resume: {:#?}",
        b.events.seen
    );
    phone.hangup();
    b.events
        .wait("recording_finished", EVENT_WAIT, |e| e["id"] == id.as_str());
    assert_eq!(b.ended(&call)["reason"], "caller_bye");
    // The server's recording of what it received: the tone is back after the resume.
    // The server's recording of what it received: the tone, silence while held (so the
    // hold took effect), then the tone again after the resume.
    let audio = b.recording(&id);
    let levels: Vec<f64> = audio
        .chunks_exact(1600)
        .map(switchboard::media::level::rms_dbfs)
        .collect();
    let held = levels.iter().position(|&db| db < -50.0);
    assert!(
        held.is_some_and(|i| i > 0 && levels[i..].iter().any(|&db| db > -20.0)),
        "no silence between tone before the hold and tone after it: {levels:.0?}"
    );
    measure(tail(&audio), &[950]).assert_tone(950, "the recording after resume");
}

#[test]
fn linphone_session_timer_refresh_keeps_the_call() {
    let Some(mut b) = Bench::new("rc-timer", &["linphonec"], ServerOptions::default()) else {
        return;
    };
    let mut phone = Linphone::start(
        b.dir(),
        "timer",
        b.sip(),
        1300,
        &["session_expires_enabled=1", "session_expires_value=90"],
        120,
    );
    phone.call("echo");
    let call = b.answered("echo");
    let answered_before = b.metric("switchboard_sip_responses_total{code=\"200\"}");
    // linphone refreshes at half the interval (45 s) by UPDATE; the call must come through
    // it untouched. The wait ends at 52 s, or earlier if the call ends.
    let ended = b
        .events
        .try_wait("call_ended", Duration::from_secs(52), |e| {
            e["call_id"] == call.as_str()
        });
    let refused = b.metric("switchboard_sip_responses_total{code=\"405\"}");
    assert!(
        ended.is_none(),
        "the call did not survive the refresh: {ended:?}\n{}",
        phone.log_text()
    );
    assert_eq!(
        refused, 0.0,
        "the server refused linphone's refresh with 405"
    );
    let answered = b.metric("switchboard_sip_responses_total{code=\"200\"}") - answered_before;
    assert!(
        answered >= 1.0,
        "no refresh was answered 200 during the call"
    );
    phone.hangup();
    b.ended(&call);
    measure(tail(&phone.heard()), &[1300]).assert_tone(1300, "linphone after the refresh");
}

/// A phone that crashed leaves its RTP flowing (here, a stale streamer imitating it from
/// its own address). Once its call is gone, a new call given the same server port must not
/// take that stream for its caller's: neither the new caller nor the room may hear it.
#[test]
fn stale_rtp_of_a_dead_caller_reaches_no_one() {
    // Two RTP port pairs: one for the listener, one that the crashed call frees.
    let options = ServerOptions {
        rtp_port_count: 4,
        ..quiet_rooms()
    };
    let Some(mut b) = Bench::new("rc-stale", &["baresip"], options) else {
        return;
    };
    let (listener_hz, dead_hz, stale_hz, new_hz) = (600, 1000, 1700, 1200);
    let mut listener = Baresip::start(b.dir(), "listener", b.sip(), Options::tone(listener_hz));
    listener.call("conf-crash");
    let listener_call = b.answered("conf-crash");
    b.joined("crash", &listener_call);
    let listener_port = listener.server_rtp_port();

    let dead_rtp = phones::free_port_pair();
    let mut dead = Baresip::start(
        b.dir(),
        "dead",
        b.sip(),
        Options {
            rtp_port: Some(dead_rtp),
            ..Options::tone(dead_hz)
        },
    );
    dead.call("conf-crash");
    let dead_call = b.answered("conf-crash");
    b.joined("crash", &dead_call);
    let port = dead.server_rtp_port();
    dead.kill();

    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let stop = stop.clone();
        let socket = phones::wait_for("the dead phone's RTP port", Duration::from_secs(5), || {
            UdpSocket::bind(("127.0.0.1", dead_rtp)).ok()
        });
        std::thread::spawn(move || stream_tone(&socket, port, stale_hz, &stop))
    };

    let (status, body) = http(
        b.server.http,
        "POST",
        &format!("/api/calls/{dead_call}/hangup"),
    );
    assert_eq!(status, 202, "{body}");
    b.ended(&dead_call);

    // The new phone sends 40 ms packets: between two of them come four stale ones, enough
    // for a receiver that follows whichever address sends steadily to switch to the stale one.
    let new_options = Options {
        ptime: Some(40),
        ..Options::tone(new_hz)
    };
    let mut new = Baresip::start(b.dir(), "new", b.sip(), new_options);
    new.call("conf-crash");
    let new_call = b.answered("conf-crash");
    b.joined("crash", &new_call);
    // The listener holds the other pair, so the new call has the dead call's port. (The new
    // phone cannot tell: while the server sends to the stale address it receives nothing.)
    assert_ne!(listener_port, port);
    std::thread::sleep(LISTEN);
    new.hangup();
    listener.hangup();
    stop.store(true, Ordering::Relaxed);
    let _ = streamer.join();

    let freqs = [listener_hz, stale_hz, new_hz];
    let room = measure(window(&listener.heard(), -2200, -600), &freqs);
    let caller = measure(tail(&new.heard()), &freqs);
    // Both sides are measured before either is judged, so a failure shows the whole picture.
    eprintln!("the room heard: {room}\nthe new caller heard: {caller}");
    room.assert_without(stale_hz, "the room hears the stale stream");
    caller.assert_without(stale_hz, "the new caller hears the stale stream");
    room.assert_tone(new_hz, "the room hears the new caller");
    caller.assert_tone(listener_hz, "the new caller hears the room");
}

/// Sends a PCMU tone to the server's RTP `port` in real time until `stop`, in 10 ms packets
/// (a phone set to ptime 10).
fn stream_tone(socket: &UdpSocket, port: u16, freq: u32, stop: &AtomicBool) {
    use switchboard::media::codec::g711::ulaw_encode;
    const FRAME: usize = 80;
    let pcm = support::rtp::tone(&format!("{freq}/1000@-10"), 1000);
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    // At most a minute, whatever happens to the test.
    for n in 0u32..6000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let frame = &pcm[(n as usize % (pcm.len() / FRAME)) * FRAME..][..FRAME];
        let mut packet = vec![0x80, 0];
        packet.extend_from_slice(&(n as u16).to_be_bytes());
        packet.extend_from_slice(&(n * FRAME as u32).to_be_bytes());
        packet.extend_from_slice(&0x057a_1e00u32.to_be_bytes());
        packet.extend(frame.iter().map(|&s| ulaw_encode(s)));
        // Refused while nothing listens on the port: expected between the two calls.
        let _ = socket.send_to(&packet, to);
        let next = start + Duration::from_millis(10 * u64::from(n + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// The flow behind `dial-PORT`: it dials the phone listening on 127.0.0.1:PORT.
const DIAL_PHONE: &str = r#"
let r = dial("sip:callee@127.0.0.1:" + session.vars.port, #{timeout_secs: 10});
log("dial", r.outcome, r.code);
hangup();
"#;

/// A script dials a real phone: one baresip calls `dial-PORT`, the server's script dials a
/// second baresip (answermode=auto) and bridges them; each phone hears the other's tone,
/// and the callee is hung up with the caller.
#[test]
fn a_script_dials_baresip_and_bridges_two_phones() {
    let scripts = common::TempDir::new("rc-dial-scripts");
    std::fs::write(scripts.path().join("dial-phone.rhai"), DIAL_PHONE).unwrap();
    std::fs::write(scripts.path().join("default.rhai"), "hangup(404);").unwrap();
    let config = format!(
        "[paths]\nscripts = {:?}\n\n[[dialplan]]\nregex = \"dial-(?<port>[0-9]+)\"\n\
         script = \"dial-phone\"\n",
        scripts.path().display().to_string()
    );
    let options = ServerOptions {
        config: Some(config),
        ..ServerOptions::default()
    };
    let Some(mut b) = Bench::new("rc-dial", &["baresip"], options) else {
        return;
    };
    let (caller_hz, callee_hz) = (650, 1350);
    let mut callee = Baresip::start(b.dir(), "callee", b.sip(), Options::tone(callee_hz));
    let mut caller = Baresip::start(b.dir(), "caller", b.sip(), Options::tone(caller_hz));
    let user = format!("dial-{}", callee.sip_port);
    // Established once the callee answered: the caller's 200 waits for the far end's.
    caller.call(&user);
    let call = b.answered(&user);
    callee.event("CALL_ESTABLISHED");
    std::thread::sleep(LISTEN);
    caller.hangup();
    b.ended(&call);
    // The caller's BYE ends the placed leg: the server hangs up on the callee.
    callee.event("CALL_CLOSED");
    let caller_heard = measure(tail(&caller.heard()), &[caller_hz, callee_hz]);
    let callee_heard = measure(tail(&callee.heard()), &[caller_hz, callee_hz]);
    eprintln!("the caller heard: {caller_heard}\nthe callee heard: {callee_heard}");
    caller_heard.assert_tone(callee_hz, "the caller hears the dialled phone");
    caller_heard.assert_without(caller_hz, "the caller hears itself");
    callee_heard.assert_tone(caller_hz, "the dialled phone hears the caller");
    callee_heard.assert_without(callee_hz, "the dialled phone hears itself");
}

/// baresip over SIP/TLS with mandatory SRTP (`RTP/SAVP`, SDES keys) against a server that
/// requires SRTP: its echo comes back, its keys walk the IVR as RFC 4733 events inside SRTP,
/// and its message is recorded in the clear. Nothing failed authentication.
#[test]
fn baresip_over_tls_with_srtp_hears_its_echo_walks_the_ivr_and_is_recorded() {
    let pki = support::pki::Pki::new();
    let config = format!(
        "[sip]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n\n\
         [rtp]\nsrtp = \"required\"\n\n{}",
        pki.cert().display().to_string(),
        pki.key().display().to_string(),
        quiet_rooms().config.unwrap_or_default(),
    );
    let options = ServerOptions {
        config: Some(config),
        ..ServerOptions::default()
    };
    let Some(mut b) = Bench::new("rc-bs-srtp", &["baresip"], options) else {
        return;
    };
    let tls = b.server.tls.expect("the server's TLS listener");
    let options = Options {
        tls_ca: Some(pki.ca_file()),
        mediaenc: Some("srtp-mand"),
        ..Options::tone(900)
    };
    let mut phone = Baresip::start(b.dir(), "secure", tls, options);

    // Audio both ways: the phone hears its own tone back through SRTP.
    b.echo(&mut phone, 900, |_| assert_connected_to(tls));

    // Keys as RFC 4733 events inside SRTP.
    b.walk_to_room_42(&mut phone);

    // The recording holds the phone's tone, decrypted.
    let finished = b.record_message(&mut phone);
    let audio = b.recording(finished["id"].as_str().unwrap_or_default());
    measure(window(&audio, 200, -200), &[900]).assert_tone(900, "the recording");

    let log = b.server.log_text();
    assert_eq!(
        log.matches("media is SRTP").count(),
        3,
        "every call's media was SRTP\n{log}"
    );
    // Every RTP packet authenticated. (RTCP is not checked: baresip sends a few RTCP
    // packets in the clear around the start of its SRTP, which are rightly dropped.)
    assert_eq!(
        b.metric("switchboard_srtp_dropped_total{reason=\"auth\",stream=\"rtp\"}"),
        0.0,
        "{log}"
    );
}

/// baresip's best-effort SRTP (`RTP/AVP` with `a=crypto`) over UDP against the default
/// policy: the server takes the keys, so the media is SRTP, and the echo comes back.
#[test]
fn baresip_best_effort_srtp_is_taken_by_the_default_policy() {
    let Some(mut b) = Bench::new("rc-bs-srtp-be", &["baresip"], ServerOptions::default()) else {
        return;
    };
    let options = Options {
        mediaenc: Some("srtp"),
        ..Options::tone(1050)
    };
    let mut phone = Baresip::start(b.dir(), "besteffort", b.sip(), options);
    b.echo(&mut phone, 1050, |_| {});
    let log = b.server.log_text();
    assert_eq!(log.matches("media is SRTP").count(), 1, "{log}");
}

/// The level and `hz` share of the stretch `tail` measures (1.6 s ending 200 ms before the
/// end), at `rate` Hz.
fn tail_at(pcm: &[i16], rate: u32, hz: u32) -> (f64, f64) {
    let from = pcm.len().saturating_sub(rate as usize * 18 / 10);
    let to = pcm.len().saturating_sub(rate as usize / 5);
    measure_at(&pcm[from..to], rate, hz)
}

/// A WAV served by the API, at whatever rate it was written; and that rate.
fn wav_at_rate(bytes: &[u8]) -> (Vec<i16>, u32) {
    let mut wav = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
    let spec = wav.spec();
    assert_eq!(spec.channels, 1, "a mono recording");
    let pcm = wav.samples::<i16>().map(|s| s.unwrap()).collect();
    (pcm, spec.sample_rate)
}

/// What a wideband baresip test does: each part is one call.
#[derive(PartialEq)]
enum Part {
    /// The echo returns its tone at the level sent.
    Echo,
    /// Keys walk the IVR and arrive as RFC 4733 events.
    Keys,
    /// A message is recorded, holding its tone at the level sent.
    Message,
}

/// The tone a wideband baresip test sends and the rate it lives at.
#[derive(Clone, Copy)]
struct Tone {
    /// The tone, Hz.
    hz: u32,
    /// The codec's sample rate: the phone's tone file, source and player run at it (so
    /// baresip resamples nothing), and the echo it hears and the recording are at it.
    rate: u32,
}

/// baresip offering `audio_codecs` alone against a server allowing `server_codecs` does
/// `parts`, sending `tone`; every call negotiated `codec` (the server's log) and the phone
/// encoded every call in it (the phone's log). What the phone encoded (its `sndfile` dump)
/// holds the tone at the tone file's level, and the echo and the recording hold it at that
/// level too (±3 dB), at the codec's rate.
fn baresip_wideband(
    label: &str,
    server_codecs: &str,
    audio_codecs: &'static str,
    codec: &str,
    tone: Tone,
    parts: &[Part],
) {
    let Tone { hz, rate } = tone;
    let config = format!(
        "[media]\ncodecs = {server_codecs}\n\n{}",
        quiet_rooms().config.unwrap_or_default()
    );
    let options = ServerOptions {
        config: Some(config),
        ..ServerOptions::default()
    };
    let Some(mut b) = Bench::new(label, &["baresip"], options) else {
        return;
    };
    let options = Options {
        audio_codecs: Some(audio_codecs),
        srate: rate,
        ..Options::tone(hz)
    };
    let mut phone = Baresip::start(b.dir(), "wide", b.sip(), options);
    let (file, file_rate) =
        wav_at_rate(&std::fs::read(b.dir().join("wide").join("tone.wav")).unwrap());
    assert_eq!(file_rate, rate, "the tone file's rate");
    let (file_dbfs, _) = measure_at(&file[..rate as usize * 2], rate, hz);
    // The tone as the phone encoded it: all there, at the file's level, at the codec's rate.
    let mut sent_dbfs = None;
    let mut sent_level = |phone: &Baresip| {
        *sent_dbfs.get_or_insert_with(|| {
            let (sent, sent_rate) = phone.sent_at_rate();
            let (dbfs, share) = tail_at(&sent, sent_rate, hz);
            eprintln!(
                "{codec}: the phone sent at {sent_rate} Hz: {dbfs:.1} dBFS, {hz} Hz {share:.3} \
                 (its file: {file_dbfs:.1} dBFS)"
            );
            assert_eq!(sent_rate, rate, "the phone's encoder rate");
            assert!(
                share > 0.9 && (dbfs - file_dbfs).abs() < 1.0,
                "the phone sent {hz} Hz share {share:.3} at {dbfs:.1} dBFS, its file at \
                 {file_dbfs:.1}"
            );
            dbfs
        })
    };

    if parts.contains(&Part::Echo) {
        phone.call("echo");
        let call = b.answered("echo");
        std::thread::sleep(LISTEN);
        phone.hangup();
        b.ended(&call);
        let sent = sent_level(&phone);
        let (pcm, heard_rate) = phone.heard_at_rate();
        let (dbfs, share) = tail_at(&pcm, heard_rate, hz);
        eprintln!("{codec}: the echo at {heard_rate} Hz: {dbfs:.1} dBFS, {hz} Hz {share:.3}");
        assert_eq!(heard_rate, rate, "the phone's decoder rate");
        assert!(
            share > 0.8 && (dbfs - sent).abs() < 3.0,
            "the echo: {hz} Hz share {share:.3} at {dbfs:.1} dBFS, sent at {sent:.1}"
        );
    }

    if parts.contains(&Part::Keys) {
        b.walk_to_room_42(&mut phone);
    }

    if parts.contains(&Part::Message) {
        let finished = b.record_message(&mut phone);
        let id = finished["id"].as_str().unwrap_or_default();
        let sent = sent_level(&phone);
        let (audio, recorded_rate) = wav_at_rate(&http_bytes(
            b.server.http,
            &format!("/api/recordings/{id}/audio"),
        ));
        let (dbfs, share) = tail_at(&audio, recorded_rate, hz);
        eprintln!(
            "{codec}: the recording at {recorded_rate} Hz: {dbfs:.1} dBFS, {hz} Hz {share:.3}"
        );
        assert_eq!(recorded_rate, rate, "the recording's rate");
        assert!(
            share > 0.8 && (dbfs - sent).abs() < 3.0,
            "the recording: {hz} Hz share {share:.3} at {dbfs:.1} dBFS, sent at {sent:.1}"
        );
    }

    let log = b.server.log_text();
    let negotiated: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("media negotiated"))
        .collect();
    assert_eq!(negotiated.len(), parts.len(), "one call a part\n{log}");
    assert!(
        negotiated
            .iter()
            .all(|l| l.contains(&format!("codec={codec}"))),
        "every call in {codec}: {negotiated:#?}"
    );
    let phone_log = std::fs::read_to_string(b.dir().join("wide").join("baresip.log"))
        .unwrap()
        .to_ascii_lowercase();
    let encoder = format!(
        "set audio encoder: {} ",
        audio_codecs.split('/').next().unwrap_or_default()
    );
    assert_eq!(
        phone_log.matches(&encoder).count(),
        parts.len(),
        "the phone encoded every call in {audio_codecs}\n{phone_log}"
    );
}

/// A 6 kHz tone from a 16 kHz source: above the narrowband limit, below G.722's 7 kHz.
const G722_TONE: Tone = Tone {
    hz: 6000,
    rate: 16000,
};
/// 3 kHz from an 8 kHz source: PCMU's band holds no 6 kHz.
const PCMU_TONE: Tone = Tone {
    hz: 3000,
    rate: 8000,
};
/// 5 kHz from a 48 kHz source, apart from the G.722 member's 6 kHz in a room.
#[cfg(feature = "opus")]
const OPUS_ROOM_TONE: Tone = Tone {
    hz: 5000,
    rate: 48000,
};
/// A 6 kHz tone from a 48 kHz source.
#[cfg(feature = "opus")]
const OPUS_TONE: Tone = Tone {
    hz: 6000,
    rate: 48000,
};

#[test]
fn baresip_in_g722_hears_its_echo_walks_the_ivr_and_is_recorded() {
    baresip_wideband(
        "rc-bs-g722",
        "[\"PCMU\", \"G722\"]",
        "g722/16000/1",
        "G722",
        G722_TONE,
        &[Part::Echo, Part::Keys, Part::Message],
    );
}

#[cfg(feature = "opus")]
#[test]
fn baresip_in_opus_hears_its_echo_and_is_recorded() {
    baresip_wideband(
        "rc-bs-opus",
        "[\"PCMU\", \"opus\"]",
        "opus/48000/2",
        "Opus",
        OPUS_TONE,
        &[Part::Echo, Part::Message],
    );
}

/// baresip's Opus offer carries `telephone-event/8000` alone (`m=audio P RTP/AVP 96 101`,
/// `a=rtpmap:101 telephone-event/8000`); with none at Opus's 48 kHz clock the answer takes
/// the 8 kHz one, and the phone's RFC 4733 keys walk the IVR.
#[cfg(feature = "opus")]
#[test]
fn baresip_in_opus_walks_the_ivr_with_rfc4733_keys() {
    baresip_wideband(
        "rc-bs-opus-keys",
        "[\"PCMU\", \"opus\"]",
        "opus/48000/2",
        "Opus",
        OPUS_TONE,
        &[Part::Keys],
    );
}

/// The control: the same phone on PCMU, from an 8 kHz source, sends 3 kHz (6 kHz does not
/// fit); its echo and its message come back at 8 kHz.
#[test]
fn baresip_in_pcmu_hears_its_echo_and_is_recorded_at_8khz() {
    baresip_wideband(
        "rc-bs-pcmu",
        "[\"PCMU\", \"G722\"]",
        "pcmu",
        "Pcmu",
        PCMU_TONE,
        &[Part::Echo, Part::Message],
    );
}

/// A baresip room member: its codec and what it sends.
#[derive(Clone, Copy)]
struct Member {
    name: &'static str,
    audio_codecs: &'static str,
    tone: Tone,
}

/// What a room member heard of the other member's tone.
struct Hearing {
    /// Its decoder's rate.
    rate: u32,
    /// The level and share of the other's tone (at 8 kHz, a tone above 4 kHz is measured
    /// where it would fold to).
    dbfs: f64,
    share: f64,
    /// The share of its own tone.
    own: f64,
    /// The level the other member encoded its tone at.
    sent: f64,
}

/// Two baresip phones in room `wide`, each on its own codec, talk at once for [`LISTEN`];
/// what each heard, measured. None when the test is skipped.
fn room_of_two(label: &str, members: [Member; 2]) -> Option<[Hearing; 2]> {
    // Opus only where the server is built with it (the PCMU/G.722 room needs no Opus).
    let codecs = if cfg!(feature = "opus") {
        "\"PCMU\", \"G722\", \"opus\""
    } else {
        "\"PCMU\", \"G722\""
    };
    let config = format!(
        "[media]\ncodecs = [{codecs}]\n\n{}",
        quiet_rooms().config.unwrap_or_default()
    );
    let options = ServerOptions {
        config: Some(config),
        ..ServerOptions::default()
    };
    let mut b = Bench::new(label, &["baresip"], options)?;
    let mut phones = members.map(|m| {
        let options = Options {
            audio_codecs: Some(m.audio_codecs),
            srate: m.tone.rate,
            ..Options::tone(m.tone.hz)
        };
        Baresip::start(b.dir(), m.name, b.sip(), options)
    });
    for phone in &mut phones {
        phone.call("conf-wide");
        let call = b.answered("conf-wide");
        b.joined("wide", &call);
    }
    std::thread::sleep(LISTEN);
    for phone in &mut phones {
        phone.hangup();
    }
    let sent = [0, 1].map(|i| {
        let (pcm, rate) = phones[i].sent_at_rate();
        tail_at(&pcm, rate, members[i].tone.hz).0
    });
    let heard = [0, 1].map(|i| {
        let (own, other) = (members[i], members[1 - i]);
        let (pcm, rate) = phones[i].heard_at_rate();
        let (dbfs, share) = tail_at(&pcm, rate, other.tone.hz);
        let own_share = tail_at(&pcm, rate, own.tone.hz).1;
        eprintln!(
            "{} heard at {rate} Hz: {dbfs:.1} dBFS, {} Hz {share:.3} (sent at {:.1} dBFS), \
             its own {} Hz {own_share:.3}",
            own.name,
            other.tone.hz,
            sent[1 - i],
            own.tone.hz
        );
        Hearing {
            rate,
            dbfs,
            share,
            own: own_share,
            sent: sent[1 - i],
        }
    });
    Some(heard)
}

impl Hearing {
    /// Panics unless this member, at `rate`, heard the other's tone at the level sent
    /// (±3 dB) and not its own.
    fn assert_hears_the_other(&self, who: &str, rate: u32) {
        assert_eq!(self.rate, rate, "{who}: the decoder's rate");
        assert!(
            self.share > 0.8 && (self.dbfs - self.sent).abs() < 3.0,
            "{who}: the other's tone share {:.3} at {:.1} dBFS, sent at {:.1}",
            self.share,
            self.dbfs,
            self.sent
        );
        assert!(self.own < 0.05, "{who} hears itself: {:.3}", self.own);
    }
}

const G722_MEMBER: Member = Member {
    name: "g722",
    audio_codecs: "g722/16000/1",
    tone: G722_TONE,
};

/// A G.722 member sending 6 kHz and an Opus member sending 5 kHz, each from a source at
/// its codec's rate, in one room: each hears the other's tone, above the narrowband limit,
/// at the level it was sent (±3 dB), and not its own.
#[cfg(feature = "opus")]
#[test]
fn g722_and_opus_members_of_a_room_hear_each_others_wideband_tones() {
    let opus = Member {
        name: "opus",
        audio_codecs: "opus/48000/2",
        tone: OPUS_ROOM_TONE,
    };
    let Some([g722, opus]) = room_of_two("rc-wide-room", [G722_MEMBER, opus]) else {
        return;
    };
    g722.assert_hears_the_other("the G.722 member", 16000);
    opus.assert_hears_the_other("the Opus member", 48000);
}

/// Just outside the band: a PCMU member of the same room hears nothing of the G.722
/// member's 6 kHz (neither the tone nor its fold at 2 kHz), while the G.722 member hears
/// the PCMU member's 3 kHz.
#[test]
fn a_pcmu_member_of_a_room_hears_no_fold_of_a_g722_members_6khz() {
    let pcmu = Member {
        name: "pcmu",
        audio_codecs: "pcmu",
        tone: PCMU_TONE,
    };
    let Some([g722, pcmu]) = room_of_two("rc-narrow-room", [G722_MEMBER, pcmu]) else {
        return;
    };
    g722.assert_hears_the_other("the G.722 member", 16000);
    assert_eq!(pcmu.rate, 8000, "the PCMU member's decoder rate");
    assert!(
        pcmu.share < 0.05 || pcmu.dbfs < -50.0,
        "the PCMU member hears 6 kHz folded to 2 kHz: share {:.3} at {:.1} dBFS",
        pcmu.share,
        pcmu.dbfs
    );
    assert!(
        pcmu.own < 0.05,
        "the PCMU member hears itself: {:.3}",
        pcmu.own
    );
}

/// baresip on G.722 calls a bot whose application takes L16 at 16 kHz and sends every frame
/// straight back: the application gets the phone's 6 kHz tone (above narrowband) and the
/// phone hears it again, so the stream is wideband both ways with a phone we did not write.
#[test]
fn baresip_in_g722_streams_its_6_khz_tone_to_an_l16_application_and_hears_it_back() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const APP: &str = "127.0.0.1:19077";
    let url = format!("ws://{APP}/bot");
    let Tone { hz, rate } = G722_TONE;
    let config = format!(
        "[media]\ncodecs = [\"PCMU\", \"G722\"]\n\n[[dialplan]]\nexact = \"bot\"\nscript = \"bot\"\n\
         vars = {{ stream_url = \"{url}\", format = \"l16\", rate = \"16000\" }}\n"
    );
    let options = ServerOptions {
        config: Some(config),
        ..ServerOptions::default()
    };
    let Some(mut b) = Bench::new("rc-bs-stream", &["baresip"], options) else {
        return;
    };
    // The application lives in the test's namespace (made by `Bench::new`), on the port its
    // dialplan rule names: nothing else listens in a fresh namespace.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind(APP)).unwrap();
    let (got_tx, got_rx) = std::sync::mpsc::channel::<(String, Vec<i16>)>();
    rt.spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) => {
                    let _ = got_tx.send((t.to_string(), Vec::new()));
                }
                Message::Binary(b) => {
                    let pcm = switchboard::stream::l16::decode_pcm(&b).unwrap_or_default();
                    let _ = got_tx.send((String::new(), pcm));
                    if ws.send(Message::binary(b)).await.is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
    });

    let options = Options {
        audio_codecs: Some("g722/16000/1"),
        srate: rate,
        ..Options::tone(hz)
    };
    let mut phone = Baresip::start(b.dir(), "streamer", b.sip(), options);
    phone.call("bot");
    let call = b.answered("bot");
    std::thread::sleep(LISTEN);
    phone.hangup();
    b.ended(&call);

    let got: Vec<(String, Vec<i16>)> = got_rx.try_iter().collect();
    let start: Value = serde_json::from_str(&got[0].0).expect("a JSON start frame first");
    assert_eq!(start["event"], "start", "{start}");
    assert_eq!(start["sampleRate"], 16000, "{start}");
    assert_eq!(start["callId"], call.as_str(), "{start}");
    let pcm: Vec<i16> = got.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert!(
        got.iter()
            .filter(|(t, _)| t.is_empty())
            .all(|(_, p)| p.len() == 320),
        "20 ms at 16 kHz per frame"
    );
    let (dbfs, share) = tail_at(&pcm, 16000, hz);
    eprintln!("the application got {dbfs:.1} dBFS, {hz} Hz share {share:.3}");
    assert!(
        share > 0.8 && dbfs > -30.0,
        "the application's {hz} Hz: {share:.3} at {dbfs:.1} dBFS"
    );
    let (heard, heard_rate) = phone.heard_at_rate();
    let (dbfs, share) = tail_at(&heard, heard_rate, hz);
    eprintln!("the phone heard at {heard_rate} Hz: {dbfs:.1} dBFS, {hz} Hz share {share:.3}");
    assert_eq!(heard_rate, rate);
    assert!(
        share > 0.8 && dbfs > -30.0,
        "the phone heard {hz} Hz: {share:.3} at {dbfs:.1} dBFS"
    );
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// baresip with `audio_level yes` maps RFC 6464's level in its offer and sends it in every
/// packet. Two such G.722 phones in a room, one sending its tone and one digital silence:
/// the silent one's packets are left undecoded (the worker counter says so), and it still
/// hears the other's tone at the level sent.
#[test]
fn baresip_audio_levels_leave_a_quiet_room_member_undecoded() {
    let config = format!(
        "[media]\ncodecs = [\"PCMU\", \"G722\"]\n\n{}",
        quiet_rooms().config.unwrap_or_default()
    );
    let options = ServerOptions {
        config: Some(config),
        ..ServerOptions::default()
    };
    let Some(mut b) = Bench::new("rc-bs-levels", &["baresip"], options) else {
        return;
    };
    let options = |name| Options {
        audio_codecs: Some("g722/16000/1"),
        srate: G722_TONE.rate,
        audio_level: true,
        ..Options::tone(if name == "loud" { G722_TONE.hz } else { 1000 })
    };
    let mut loud = Baresip::start(b.dir(), "loud", b.sip(), options("loud"));
    let mut quiet = Baresip::start(b.dir(), "quiet", b.sip(), options("quiet"));
    // The quiet phone's microphone: silence, in place of the tone before it is opened.
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: G722_TONE.rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(b.dir().join("quiet").join("tone.wav"), spec).unwrap();
    for _ in 0..10 * G722_TONE.rate {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    let skipped = |b: &Bench| -> f64 {
        let (status, body) = http(b.server.http, "GET", "/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .filter(|l| l.starts_with("switchboard_media_worker_decodes_skipped_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = skipped(&b);
    for phone in [&mut loud, &mut quiet] {
        phone.call("conf-levels");
        let call = b.answered("conf-levels");
        b.joined("levels", &call);
    }
    std::thread::sleep(LISTEN);
    let during = skipped(&b) - before;
    for phone in [&mut loud, &mut quiet] {
        phone.hangup();
    }
    let offer_log =
        std::fs::read_to_string(b.dir().join("quiet").join("baresip.log")).unwrap_or_default();
    eprintln!("{during} decodes skipped while the quiet phone was in the room");
    let (pcm, rate) = quiet.heard_at_rate();
    let (dbfs, share) = tail_at(&pcm, rate, G722_TONE.hz);
    let (sent, sent_rate) = loud.sent_at_rate();
    let sent_dbfs = tail_at(&sent, sent_rate, G722_TONE.hz).0;
    eprintln!(
        "the quiet phone heard {dbfs:.1} dBFS, {} Hz {share:.3}",
        G722_TONE.hz
    );
    assert!(
        share > 0.8 && (dbfs - sent_dbfs).abs() < 3.0,
        "the quiet phone hears the tone: share {share:.3} at {dbfs:.1} dBFS, sent at {sent_dbfs:.1}"
    );
    // 2.5 s of the quiet phone's 20 ms packets, less the moments around joining; none of
    // the loud phone's, which would double it.
    assert!(
        during > 80.0,
        "{during} decodes skipped: does baresip send its levels?\n{offer_log}"
    );
    assert!(
        during < 200.0,
        "{during} decodes skipped: the loud phone's too?"
    );
}

/// What the spoken menu says.
const MENU_PROMPT: &str = "Thank you for calling the example company. To reach the right person, please say sales, support or billing.";

/// baresip's microphone (its audio file) says "billing" a second after a menu
/// that asks with `say()` and then listens for three choices: the word is recognised and
/// reaches the script, and the phone heard the menu spoken.
#[test]
fn baresip_answers_a_spoken_menu_by_voice() {
    if !support::speech::sphinx() {
        return;
    }
    let scripts = std::env::temp_dir().join(format!("rc-speech-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("menu.rhai"),
        format!(
            "answer();\nsay(\"{MENU_PROMPT}\");\n\
             let r = listen(#{{choices: [\"sales\", \"support\", \"billing\"], timeout_ms: 8000}});\n\
             log(`heard ${{r.choice}}`);\nhangup();\n"
        ),
    )
    .unwrap();
    let options = ServerOptions {
        config: Some(format!(
            "[paths]\nscripts = \"{}\"\n\n[[dialplan]]\nexact = \"menu\"\nscript = \"menu\"\n",
            scripts.display()
        )),
        ..ServerOptions::default()
    };
    let Some(mut b) = Bench::new("rc-bs-speech", &["baresip"], options) else {
        return;
    };
    // The phone answers a second after the menu.
    let menu = flite_rs::Engine::new()
        .synthesize(MENU_PROMPT)
        .samples
        .len();
    let mut voice = vec![0i16; menu + 8000];
    voice.extend(flite_rs::Engine::new().synthesize("billing").samples);
    voice.extend(vec![0i16; 10 * 8000]);
    let options = Options {
        source: Some(voice),
        ..Options::tone(1000)
    };
    let mut phone = Baresip::start(b.dir(), "talker", b.sip(), options);
    phone.call("menu");
    let call = b.answered("menu");
    // The answer comes after the whole menu (about 7 s) has been said.
    let menu_time = Duration::from_secs_f64(menu as f64 / 8000.0);
    let heard = b.events.wait("speech", menu_time + EVENT_WAIT, |e| {
        e["call_id"] == call.as_str() && e["kind"] == "listen"
    });
    assert_eq!(heard["choice"], "billing", "{heard}");
    assert_eq!(heard["reason"], "speech", "{heard}");
    b.ended(&call);
    // The menu's question reached the phone as speech.
    let pcm = phone.heard();
    let loud = pcm
        .chunks_exact(160)
        .filter(|f| switchboard::media::level::rms_dbfs(f) > -35.0)
        .count();
    assert!(loud > 40, "the phone heard {loud} loud frames of the menu");
    // What the phone heard of say(), transcribed by Whisper (the speech server of
    // tests/speech_engines.rs, when its packages are installed).
    if let Some(speech) = support::speech::speech_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let text = rt.block_on(support::speech::transcribe(&speech.url, &pcm));
        let right = support::speech::words_right(MENU_PROMPT, &text);
        eprintln!("Whisper heard the phone's menu as {text:?}");
        assert!(right >= 0.9, "{:.0} % of the words: {text}", right * 100.0);
    }
    let _ = std::fs::remove_dir_all(&scripts);
}
