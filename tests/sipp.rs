//! End to end: SIPp plays the caller (`tests/sipp/*.xml`) against the real `switchboard`
//! binary, over UDP and over TCP. Every test starts its own server with its own RTP
//! ports, runs one scenario, then checks with an OPTIONS that the server still answers.
//!
//! Needs `sipp` (Debian/Ubuntu package `sip-tester`); without it these tests are skipped,
//! except under `CI=true`, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{find_sipp, Server, ServerOptions, Sipp, Transport};

/// A server that hangs up every answered call after one second.
const ONE_SECOND_CALLS: &str = "[sip]\nmax_call_secs = 1\n";

struct Case {
    scenario: &'static str,
    /// User part of the Request-URI, which picks the built-in call flow.
    service: &'static str,
    config: Option<&'static str>,
    /// The server answers with SDP, whose media port must be in the server's range.
    answers_sdp: bool,
}

const fn case(scenario: &'static str, service: &'static str) -> Case {
    Case {
        scenario,
        service,
        config: None,
        answers_sdp: false,
    }
}

fn run_case(case: &Case, transport: Transport) {
    let Some(sipp) = find_sipp() else { return };
    let label = format!("{}-{transport}", case.scenario);
    let server = Server::start_with(
        &label,
        ServerOptions {
            config: case.config.map(str::to_owned),
            ..ServerOptions::default()
        },
    );

    let run =
        Sipp::new(case.scenario, case.service, transport).run(&sipp, server.sip, server.dir());
    assert!(
        run.success(),
        "scenario {} over {transport} failed\n{}\n{}",
        case.scenario,
        run.report(),
        server.log_text()
    );

    if case.answers_sdp {
        let ports: Vec<u16> = run
            .received_messages()
            .iter()
            .flat_map(|msg| msg.lines().filter_map(media_port).collect::<Vec<_>>())
            .collect();
        assert!(
            !ports.is_empty(),
            "scenario {} over {transport}: no m=audio line in any answer\n{}",
            case.scenario,
            run.report()
        );
        let (low, high) = server.rtp;
        assert!(
            ports.iter().all(|p| (low..=high).contains(p)),
            "scenario {} over {transport}: answered media ports {ports:?} outside {low}-{high}",
            case.scenario
        );
    }

    let probe = Sipp::new("uac_options", "service", transport).run(&sipp, server.sip, server.dir());
    assert!(
        probe.success(),
        "after scenario {} over {transport}, the server no longer answers OPTIONS\n{}\n{}",
        case.scenario,
        probe.report(),
        server.log_text()
    );
}

/// The port of an `m=audio PORT ...` line.
fn media_port(line: &str) -> Option<u16> {
    line.trim()
        .strip_prefix("m=audio ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// One test per scenario and transport, so a failure names both.
macro_rules! scenario_tests {
    ($($udp:ident, $tcp:ident: $case:expr;)*) => {$(
        #[test]
        fn $udp() {
            run_case(&$case, Transport::Udp);
        }
        #[test]
        fn $tcp() {
            run_case(&$case, Transport::Tcp);
        }
    )*};
}

scenario_tests! {
    basic_call_udp, basic_call_tcp: Case { answers_sdp: true, ..case("uac_basic", "echo") };
    server_hangs_up_udp, server_hangs_up_tcp:
        Case { config: Some(ONE_SECOND_CALLS), answers_sdp: true, ..case("uac_server_bye", "echo") };
    cancel_while_ringing_udp, cancel_while_ringing_tcp: case("uac_cancel", "ring");
    busy_udp, busy_tcp: case("uac_busy", "busy");
    options_udp, options_tcp: case("uac_options", "service");
    reinvite_hold_resume_udp, reinvite_hold_resume_tcp:
        Case { answers_sdp: true, ..case("uac_reinvite_hold", "echo") };
    malformed_requests_udp, malformed_requests_tcp: case("uac_malformed", "service");
    non_numeric_cseq_udp, non_numeric_cseq_tcp: case("uac_bad_cseq_number", "service");
    broken_sdp_udp, broken_sdp_tcp: case("uac_broken_sdp", "echo");
    sdp_without_version_udp, sdp_without_version_tcp: case("uac_sdp_no_version", "echo");
    no_common_codec_udp, no_common_codec_tcp: case("uac_no_common_codec", "echo");
    bye_unknown_dialog_udp, bye_unknown_dialog_tcp: case("uac_bye_unknown_dialog", "service");
    update_session_timer_udp, update_session_timer_tcp:
        Case { answers_sdp: true, ..case("uac_update_timer", "echo") };
}

/// Over TCP a Content-Length beyond the bytes sent only means "more to come", so the
/// short body is a UDP-only case.
#[test]
fn short_body_udp() {
    run_case(&case("uac_short_body", "service"), Transport::Udp);
}

/// 200 basic calls at 50 per second over UDP, at most a few dozen up at once: all succeed.
#[test]
fn load_basic_calls_udp() {
    let Some(sipp) = find_sipp() else { return };
    let server = Server::start_with(
        "load-uac_basic-UDP",
        ServerOptions {
            rtp_port_count: 200,
            ..ServerOptions::default()
        },
    );
    let calls = 200;
    let run = Sipp {
        calls,
        rate: Some(50),
        trace_messages: false,
        ..Sipp::new("uac_basic", "echo", Transport::Udp)
    }
    .run(&sipp, server.sip, server.dir());
    let successful = run.counter("Successful call");
    let failed = run.counter("Failed call");
    assert!(
        run.success() && successful == Some(u64::from(calls)) && failed == Some(0),
        "load run: {successful:?} successful, {failed:?} failed of {calls}\n{}\n{}",
        run.report(),
        server.log_text()
    );
}

/// Reads the server's event stream on a thread until `call_ended` and `recording_finished`
/// (or 60 s): the event types in order.
fn watch_events(http: std::net::SocketAddr) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {http}\r\n\r\n").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    // Subscribed once the response head is back.
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::spawn(move || {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let done =
            |t: &str| t.contains("event: call_ended") && t.contains("event: recording_finished");
        while !done(&text) && std::time::Instant::now() < until {
            if let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_string)
            .collect()
    })
}

/// The sum of the samples of a Prometheus metric family whose lines start with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// SIPp leaves a message with real RTP from its captures: 7 s of A-law speech, then the
/// RFC 4733 key '1', then BYE. The recording holds the speech and its sidecar the key, once;
/// the HTTP API lists it and serves the same valid WAV; the event stream told the call's
/// story in order; the metrics counted it.
#[test]
fn message_with_pcap_audio_and_rfc4733_udp() {
    let Some(sipp) = find_sipp() else { return };
    let server = Server::start("uac_message_pcap-UDP");
    let events = watch_events(server.http);
    let run = Sipp::new("uac_message_pcap", "message", Transport::Udp).run(
        &sipp,
        server.sip,
        server.dir(),
    );
    assert!(run.success(), "{}\n{}", run.report(), server.log_text());
    let recordings = server.dir().join("recordings");
    let sidecar = finished_recording(&server);
    assert_eq!(sidecar["digits"], "1", "{sidecar}");
    assert_eq!(sidecar["stop_reason"], "hangup", "{sidecar}");
    let wav = recordings.join(sidecar["file"].as_str().unwrap());
    let samples: Vec<i16> = hound::WavReader::open(&wav)
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let secs = samples.len() as f64 / 8000.0;
    assert!((6.5..10.0).contains(&secs), "recorded {secs:.2} s");

    // Over HTTP: listed, and the audio is the same valid WAV.
    let id = sidecar["id"].as_str().unwrap();
    let (status, list) = common::http(server.http, "GET", "/api/recordings");
    assert_eq!(status, 200);
    assert!(list.contains(&format!("\"id\":\"{id}\"")), "{list}");
    let audio = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.http).unwrap();
        write!(
            s,
            "GET /api/recordings/{id}/audio HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        assert!(
            head.contains("content-type: audio/wav") || head.contains("content-type: audio/x-wav"),
            "{head}"
        );
        raw[split + 4..].to_vec()
    };
    assert_eq!(audio, std::fs::read(&wav).unwrap(), "served audio differs");
    let served = hound::WavReader::new(std::io::Cursor::new(&audio)).unwrap();
    assert_eq!(served.len() as usize, samples.len());

    // The event stream, in order.
    let types = events.join().unwrap();
    let want = [
        "call_started",
        "call_answered",
        "recording_started",
        "dtmf",
        "recording_finished",
        "call_ended",
    ];
    let seen: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| want.contains(t))
        .collect();
    // The caller hung up while recording: the recording is finalised and announced, then the
    // call's end, always a call's last event.
    assert_eq!(seen, want, "{types:?}");

    // The metrics moved.
    let (status, text) = common::http(server.http, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "switchboard_calls_started_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchboard_calls_ended_total"),
        1.0,
        "{text}"
    );
    assert!(
        metric(&text, "switchboard_dtmf_digits_total") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "switchboard_media_worker_rtp_packets_in_total") > 100.0,
        "{text}"
    );
    // Speech, not silence: the loudest second is well above the noise floor.
    let loudest = samples
        .chunks(8000)
        .map(switchboard::media::level::rms_dbfs)
        .fold(f64::MIN, f64::max);
    assert!(loudest > -35.0, "loudest second {loudest:.1} dBFS");
}

/// The sidecar of the one finished recording in the server's folder: the BYE's 200 comes back
/// before the media worker finalises the file, so it is waited for (5 s at most).
fn finished_recording(server: &Server) -> serde_json::Value {
    let recordings = server.dir().join("recordings");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let done = std::fs::read_dir(&recordings)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .find_map(|p| {
                let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
                (v["state"] == "complete").then_some(v)
            });
        if let Some(v) = done {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished recording\n{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Puts the captures of `keys` next to the SIPp runs in `dir` as `key_<name>.pcap`: SIPp's
/// RFC 4733 captures, or in-band tones made here.
fn key_captures(dir: &std::path::Path, inband: bool, keys: &[char]) {
    for &k in keys {
        let name = match k {
            '#' => "pound".to_string(),
            '*' => "star".to_string(),
            d => d.to_string(),
        };
        let path = dir.join(format!("key_{name}.pcap"));
        if inband {
            common::inband_key_pcap(&path, k);
        } else {
            std::fs::copy(
                format!("/usr/share/sip-tester/dtmf_2833_{name}.pcap"),
                &path,
            )
            .unwrap();
        }
    }
}

/// The server log's `collected` results in order, e.g. `["Some(\"3\")", "Some(\"0\")"]`.
fn collected(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" collected"))
        .filter_map(|l| l.split("digits=").nth(1))
        .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn ivr_walk(inband: bool) {
    let Some(sipp) = find_sipp() else { return };
    let label = if inband {
        "ivr-walk-inband"
    } else {
        "ivr-walk-rfc4733"
    };
    let server = Server::start(label);
    key_captures(server.dir(), inband, &['3', '#', '*']);
    let run = Sipp::new("uac_ivr_walk", "ivr", Transport::Udp).run(&sipp, server.sip, server.dir());
    let log = server.log_text();
    assert!(run.success(), "{}\n{log}", run.report());
    // The menu took 3 (echo test), the echo ended on '#', the menu came back and took *.
    assert_eq!(collected(&log), ["Some(\"3\")", "Some(\"*\")"], "{log}");
    let method = if inband {
        "method=Inband"
    } else {
        "method=Rfc4733"
    };
    let keys: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" DTMF ") && l.contains(method))
        .collect();
    assert_eq!(keys.len(), 3, "each key seen once by {method}\n{log}");
    assert!(log.contains("echo") || log.contains("Echo"), "{log}");
}

/// The shipped IVR menu walked with RFC 4733 keys: 3 (echo test), # (back), * (goodbye).
#[test]
fn ivr_menu_walk_with_rfc4733_keys_udp() {
    ivr_walk(false);
}

/// The same walk with the keys as in-band tones in the A-law audio.
#[test]
fn ivr_menu_walk_with_inband_keys_udp() {
    ivr_walk(true);
}

/// A message left through the IVR menu: key 2, speech, silence, key 1 to keep it. The WAV
/// and its sidecar are in `recordings/`.
#[test]
fn ivr_leave_a_message_udp() {
    let Some(sipp) = find_sipp() else { return };
    let server = Server::start("ivr-message");
    key_captures(server.dir(), false, &['2', '1']);
    let run =
        Sipp::new("uac_ivr_message", "ivr", Transport::Udp).run(&sipp, server.sip, server.dir());
    let log = server.log_text();
    assert!(run.success(), "{}\n{log}", run.report());
    assert_eq!(collected(&log), ["Some(\"2\")", "Some(\"1\")"], "{log}");
    let recordings = server.dir().join("recordings");
    let sidecars: Vec<serde_json::Value> = std::fs::read_dir(&recordings)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    assert_eq!(sidecars.len(), 1, "{sidecars:?}\n{log}");
    let sidecar = &sidecars[0];
    assert_eq!(sidecar["state"], "complete", "{sidecar}");
    assert_eq!(sidecar["stop_reason"], "silence", "{sidecar}");
    let wav = recordings.join(sidecar["file"].as_str().unwrap());
    let samples: Vec<i16> = hound::WavReader::open(&wav)
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let secs = samples.len() as f64 / 8000.0;
    assert!((6.0..9.5).contains(&secs), "recorded {secs:.2} s");
    let loudest = samples
        .chunks(8000)
        .map(switchboard::media::level::rms_dbfs)
        .fold(f64::MIN, f64::max);
    assert!(loudest > -35.0, "loudest second {loudest:.1} dBFS");
}

/// A script transfers the answered call: SIPp gets a REFER to the script's URI, accepts it
/// (202), reports success by NOTIFY, and the server hangs up.
#[test]
fn blind_transfer_by_refer_udp() {
    let Some(sipp) = find_sipp() else { return };
    let scripts = common::TempDir::new("transfer-scripts");
    std::fs::write(
        scripts.path().join("transfer.rhai"),
        "answer();\ntransfer(\"sip:support@example.com\");\n",
    )
    .unwrap();
    let config = format!(
        "[paths]\nscripts = {:?}\n\n[[dialplan]]\nexact = \"transfer\"\nscript = \"transfer\"\n",
        scripts.path().display().to_string()
    );
    let server = Server::start_with(
        "uac_refer",
        ServerOptions {
            config: Some(config),
            ..ServerOptions::default()
        },
    );
    let run =
        Sipp::new("uac_refer", "transfer", Transport::Udp).run(&sipp, server.sip, server.dir());
    let log = server.log_text();
    assert!(run.success(), "{}\n{log}", run.report());
    let refer = run
        .received_messages()
        .into_iter()
        .find(|m| m.trim_start().starts_with("REFER "))
        .unwrap_or_else(|| panic!("no REFER received\n{}", run.report()));
    assert!(
        refer.contains("Refer-To: <sip:support@example.com>"),
        "{refer}"
    );
    assert!(log.contains("transfer done"), "{log}");
}

/// A room with a PIN: three wrong PINs keep the caller out and the server hangs up.
#[test]
fn conference_pin_refuses_a_wrong_code_udp() {
    let Some(sipp) = find_sipp() else { return };
    let config = "[[dialplan]]\nregex = \"conf-(?<room>.+)\"\nscript = \"conference\"\nvars = { pin = \"1234\" }\n";
    let server = Server::start_with(
        "conference-pin",
        ServerOptions {
            config: Some(config.into()),
            ..ServerOptions::default()
        },
    );
    key_captures(server.dir(), false, &['9', '8', '#']);
    let run = Sipp::new("uac_conference_pin", "conf-secure", Transport::Udp).run(
        &sipp,
        server.sip,
        server.dir(),
    );
    let log = server.log_text();
    assert!(run.success(), "{}\n{log}", run.report());
    // The two captures' events start at different offsets into their files, so the two
    // keys may arrive in either order; either way the PIN is wrong three times.
    let tries = collected(&log);
    assert_eq!(tries.len(), 3, "{log}");
    assert!(
        tries
            .iter()
            .all(|t| t == "Some(\"98\")" || t == "Some(\"89\")"),
        "{tries:?}\n{log}"
    );
    assert!(log.contains("left conference: bad_pin"), "{log}");
    assert!(!log.contains("joined the conference"), "{log}");
}

/// A test-side RTP endpoint for one conference member: sends a tone, keeps what it hears.
struct TonePeer {
    socket: std::net::UdpSocket,
    to: std::net::SocketAddr,
    tone: switchboard::media::tone::ToneGenerator,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

impl TonePeer {
    /// One 20 ms step: sends a frame of the tone (or silence), reads what arrived.
    fn step(&mut self, silent: bool, heard: &mut Vec<i16>) {
        use switchboard::media::codec::g711::{ulaw_decode_slice, ulaw_encode_slice};
        let mut pcm = [0i16; 160];
        if !silent {
            self.tone.fill(&mut pcm);
        }
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        let mut payload = [0u8; 160];
        ulaw_encode_slice(&pcm, &mut payload);
        p.extend_from_slice(&payload);
        self.socket.send_to(&p, self.to).unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        let mut buf = [0u8; 1500];
        while let Ok(n) = self.socket.recv(&mut buf) {
            // PCMU (payload type 0) with a 12-byte header; RTCP and events are skipped.
            if n == 172 && buf[1] & 0x7f == 0 {
                let mut out = [0i16; 160];
                ulaw_decode_slice(&buf[12..172], &mut out);
                heard.extend_from_slice(&out);
            }
        }
    }
}

/// Runs every peer for `ms` in real time; what each heard.
fn talk(peers: &mut [TonePeer], ms: u64, silent: &[bool]) -> Vec<Vec<i16>> {
    let mut heard = vec![Vec::new(); peers.len()];
    let start = std::time::Instant::now();
    for n in 0..ms / 20 {
        for (k, p) in peers.iter_mut().enumerate() {
            p.step(silent[k], &mut heard[k]);
        }
        let next = start + std::time::Duration::from_millis(20 * (n + 1));
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    heard
}

fn tone_shares(pcm: &[i16], freqs: &[f64]) -> Vec<f64> {
    let tail = &pcm[pcm.len().saturating_sub(12_000)..];
    freqs
        .iter()
        .map(|f| switchboard::media::level::tone_share(tail, *f, 8000.0))
        .collect()
}

/// Three SIPp callers in one room, their audio sent and checked by the test: each hears the
/// other two and not itself; a member muted through the HTTP API is no longer heard; a kicked
/// member's call gets BYE; the others are hung up through the API.
#[test]
fn conference_members_hear_each_other_mute_and_kick_udp() {
    let Some(sipp) = find_sipp() else { return };
    const FREQS: [f64; 3] = [400.0, 600.0, 1000.0];
    // Each peer below talks to whichever leg it picks, not the one its SDP named: only
    // `learn` lets a leg take a source other than its SDP address without evident NAT.
    let server = Server::start_with(
        "conference-members",
        ServerOptions {
            rtp_port_count: 6,
            config: Some("[media]\nstrict_rtp = \"learn\"\nstrict_rtp_learn_ms = 60000\n".into()),
        },
    );
    let sockets: Vec<std::net::UdpSocket> = (0..3)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let runs: Vec<_> = sockets
        .iter()
        .map(|s| {
            let port = s.local_addr().unwrap().port().to_string();
            let (sipp, sip, dir) = (sipp.clone(), server.sip, server.dir().to_path_buf());
            std::thread::spawn(move || {
                let mut run = Sipp::new("uac_conference_member", "conf-room1", Transport::Udp);
                run.keys.push(("rtp_port".into(), port));
                run.run(&sipp, sip, &dir)
            })
        })
        .collect();
    // All three in the room.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let members: Vec<serde_json::Value> = loop {
        let (status, body) = common::http(server.http, "GET", "/api/rooms/room1");
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["members"].as_array().is_some_and(|m| m.len() == 3) {
                break v["members"].as_array().unwrap().clone();
            }
        }
        assert!(
            std::time::Instant::now() < until,
            "three members never joined\n{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Each peer sends to one of the room's three legs; the leg learns it as its source, so
    // each peer talks to exactly one member, whichever call that is.
    let (low, _) = server.rtp;
    let mut peers: Vec<TonePeer> = sockets
        .into_iter()
        .zip(FREQS)
        .enumerate()
        .map(|(k, (socket, f))| {
            let spec: switchboard::media::tone::ToneSpec =
                format!("{f}/60000@-15").parse().unwrap();
            TonePeer {
                socket,
                to: std::net::SocketAddr::from(([127, 0, 0, 1], low + 2 * k as u16)),
                tone: switchboard::media::tone::ToneGenerator::new(
                    &spec,
                    switchboard::rtp::types::ClockRate::HZ_8000,
                )
                .unwrap(),
                seq: 0,
                ts: 0,
                ssrc: 0x1000 + k as u32,
            }
        })
        .collect();
    // Past the join prompts and tones, then everyone talks.
    talk(&mut peers, 3000, &[true; 3]);
    let heard = talk(&mut peers, 2500, &[false; 3]);
    for (k, pcm) in heard.iter().enumerate() {
        let s = tone_shares(pcm, &FREQS);
        for (j, share) in s.iter().enumerate() {
            if j == k {
                assert!(*share < 0.05, "peer {k} hears itself: {s:?}");
            } else {
                assert!(*share > 0.15, "peer {k} does not hear peer {j}: {s:?}");
            }
        }
    }
    // Mute the first member listed: exactly one peer's tone leaves the others' audio.
    let id = |m: &serde_json::Value| m["id"].as_u64().unwrap();
    let (status, _) = common::http(
        server.http,
        "POST",
        &format!("/api/rooms/room1/members/{}/mute", id(&members[0])),
    );
    assert_eq!(status, 202);
    let heard = talk(&mut peers, 2500, &[false; 3]);
    let shares: Vec<Vec<f64>> = heard.iter().map(|p| tone_shares(p, &FREQS)).collect();
    let muted: Vec<usize> = (0..3)
        .filter(|&j| (0..3).filter(|&k| k != j).all(|k| shares[k][j] < 0.05))
        .collect();
    assert_eq!(muted.len(), 1, "one peer should be silenced: {shares:?}");
    // Kick the second member: its SIPp caller gets BYE; hang the others up by the API.
    let (status, _) = common::http(
        server.http,
        "POST",
        &format!("/api/rooms/room1/members/{}/kick", id(&members[1])),
    );
    assert_eq!(status, 202);
    for m in [&members[0], &members[2]] {
        let call = m["call_id"].as_str().unwrap();
        let (status, _) = common::http(server.http, "POST", &format!("/api/calls/{call}/hangup"));
        assert_eq!(status, 202, "hangup {call}");
    }
    for run in runs {
        let run = run.join().unwrap();
        assert!(run.success(), "{}\n{}", run.report(), server.log_text());
    }
    let log = server.log_text();
    assert!(
        log.contains("why=\"kicked\"") || log.contains("why=kicked"),
        "{log}"
    );
}

/// A protected rule (`secret`, the echo script, `auth = true`) beside an open one, with
/// MD5 offered alone: SIPp's `[authentication]` computes MD5 only.
const AUTH_CONFIG: &str = "[sip]\nauth_algorithms = [\"MD5\"]\n\n\
    [[users]]\nname = \"alice\"\npassword = \"wonderland\"\n\n\
    [[dialplan]]\nexact = \"secret\"\nscript = \"echo\"\nauth = true\n\n\
    [[dialplan]]\nexact = \"echo\"\nscript = \"echo\"\n";

/// Runs `scenario` against the protected rule, with `-au alice -ap PASSWORD` when a
/// password is given; the server's metrics afterwards (calls started, auth failures).
fn auth_run(scenario: &str, password: Option<&str>, transport: Transport) -> Option<(f64, f64)> {
    let sipp = find_sipp()?;
    let server = Server::start_with(
        &format!("{scenario}-{transport}"),
        ServerOptions {
            config: Some(AUTH_CONFIG.to_string()),
            ..ServerOptions::default()
        },
    );
    let mut run = Sipp::new(scenario, "secret", transport);
    if let Some(p) = password {
        // SIPp's digest-uri is `sip:host:port` unless told (it adds the `sip:`); ours
        // must be the Request-URI.
        let uri = format!("secret@{}", server.sip);
        run.args = ["-au", "alice", "-ap", p, "-auth_uri", &uri]
            .map(String::from)
            .to_vec();
    }
    let run = run.run(&sipp, server.sip, server.dir());
    assert!(
        run.success(),
        "scenario {scenario} over {transport} failed\n{}\n{}",
        run.report(),
        server.log_text()
    );
    // An open rule beside it still needs nothing.
    let open = Sipp::new("uac_basic", "echo", transport).run(&sipp, server.sip, server.dir());
    assert!(open.success(), "{}\n{}", open.report(), server.log_text());
    let (status, text) = common::http(server.http, "GET", "/metrics");
    assert_eq!(status, 200);
    Some((
        metric(&text, "switchboard_calls_started_total") - 1.0,
        metric(&text, "switchboard_sip_auth_failures_total"),
    ))
}

/// Challenged, answered with the right password: the protected rule's script answers.
#[test]
fn auth_challenge_answered_reaches_the_protected_rule_udp() {
    if let Some((calls, failures)) = auth_run("uac_auth", Some("wonderland"), Transport::Udp) {
        assert_eq!((calls, failures), (1.0, 0.0));
    }
}

#[test]
fn auth_challenge_answered_reaches_the_protected_rule_tcp() {
    if let Some((calls, failures)) = auth_run("uac_auth", Some("wonderland"), Transport::Tcp) {
        assert_eq!((calls, failures), (1.0, 0.0));
    }
}

/// Without credentials: 401, and no call ever starts.
#[test]
fn auth_without_credentials_gets_401_and_no_call_udp() {
    if let Some((calls, failures)) = auth_run("uac_auth_challenged", None, Transport::Udp) {
        assert_eq!((calls, failures), (0.0, 0.0));
    }
}

/// A wrong password: challenged again, counted as a failure, no call.
#[test]
fn auth_wrong_password_never_connects_udp() {
    if let Some((calls, failures)) = auth_run("uac_auth_refused", Some("queen"), Transport::Udp) {
        assert_eq!((calls, failures), (0.0, 1.0));
    }
}

/// SIPp carries G.722: a caller offering G.722 alone leaves a message played from a capture
/// of a 6 kHz tone (written here with our encoder, as any G.722 phone would send it); the
/// recording is a 16 kHz WAV, and the tone, above narrowband's 4 kHz, is in it.
#[test]
fn sipp_leaves_a_g722_message_recorded_at_16_khz_udp() {
    use switchboard::media::codec::{CodecKind, CodecParams};
    let Some(sipp) = find_sipp() else { return };
    let options = ServerOptions {
        config: Some("[media]\ncodecs = [\"G722\", \"PCMU\"]\n".into()),
        ..ServerOptions::default()
    };
    let server = Server::start_with("uac_g722_message-UDP", options);
    // 4 s of 6 kHz at −10 dBFS peak-ish, 20 ms G.722 packets (160 bytes, 160 clock ticks).
    let mut enc = CodecKind::G722.new_codec_with(&CodecParams::default());
    let tone: Vec<i16> = (0..16000 * 4)
        .map(|i| {
            (10000.0 * (2.0 * std::f64::consts::PI * 6000.0 * f64::from(i) / 16000.0).sin()) as i16
        })
        .collect();
    let payloads: Vec<Vec<u8>> = tone
        .chunks(320)
        .map(|frame| {
            let mut payload = [0u8; 320];
            let n = enc.encode(frame, &mut payload).unwrap();
            assert_eq!(n, 160, "64 kbit/s");
            payload[..n].to_vec()
        })
        .collect();
    let packets = common::rtp_packets(9, 0x6722_0001, 160, &payloads);
    common::write_rtp_pcap(&server.dir().join("g722_tone.pcap"), &packets);
    let run = Sipp::new("uac_g722_message", "message", Transport::Udp).run(
        &sipp,
        server.sip,
        server.dir(),
    );
    assert!(run.success(), "{}\n{}", run.report(), server.log_text());
    let recordings = server.dir().join("recordings");
    let sidecar = finished_recording(&server);
    let wav = hound::WavReader::open(recordings.join(sidecar["file"].as_str().unwrap())).unwrap();
    assert_eq!(
        wav.spec().sample_rate,
        16000,
        "a G.722 call records at 16 kHz"
    );
    let samples: Vec<i16> = wav.into_samples::<i16>().map(|s| s.unwrap()).collect();
    // The loudest second: the tone, at 6 kHz.
    let loudest = samples
        .chunks(16000)
        .max_by(|a, b| {
            switchboard::media::level::rms_dbfs(a)
                .total_cmp(&switchboard::media::level::rms_dbfs(b))
        })
        .unwrap();
    let level = switchboard::media::level::rms_dbfs(loudest);
    let share = switchboard::media::level::tone_share(loudest, 6000.0, 16000.0);
    assert!(level > -20.0, "the tone's level {level:.1} dBFS");
    assert!(share > 0.9, "6 kHz share {share:.3}");
}
