//! Speech on live calls, end to end: a real server on 127.0.0.1 and an in-process phone
//! sending and receiving PCMU. The phone hears `say()` (decoded and compared with the
//! synthesizer's own output), answers `listen()` by voice (speech synthesized in the test,
//! recognised by PocketSphinx) or by key, stops a barge-in prompt by speaking, plays an
//! answering machine's greeting and a voicemail beep to `amd()` and `wait_for_beep()`; the
//! results reach the script, the `speech` and `amd` events and the CDR.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::events::Events;
use support::rtp::{tone, RtpPeer};
use support::scripts::{rule, Scripts};
use support::server::*;
use support::uac::{Uac, UacState};
use switchboard::media::level::rms_dbfs;

const WAIT: Duration = Duration::from_secs(10);

/// `text` spoken by the embedded voice at 8 kHz, as a caller would say it.
fn spoken(text: &str) -> Vec<i16> {
    let audio = flite_rs::Engine::new().synthesize(text);
    assert_eq!(audio.sample_rate, 8000);
    audio.samples
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

/// A server whose dialplan sends `user` to the script `text`.
async fn server_with(
    scripts: &[(&str, &str)],
    cdr: Option<std::path::PathBuf>,
) -> (Server, Scripts) {
    let files: Vec<(String, &str)> = scripts
        .iter()
        .map(|(user, text)| (format!("{user}.rhai"), *text))
        .collect();
    let named: Vec<(&str, &str)> = files.iter().map(|(f, t)| (f.as_str(), *t)).collect();
    let s = Scripts::with_shipped(&named);
    let dir = s.0.clone();
    let rules: Vec<_> = scripts
        .iter()
        .map(|(user, _)| rule(user, user, &[]))
        .collect();
    let server = start_with(common::rtp_ports(8), move |c| {
        c.paths.scripts = dir;
        c.dialplan.splice(0..0, rules);
        if let Some(cdr) = cdr {
            c.cdr.dir = cdr;
        }
    })
    .await;
    (server, s)
}

/// Calls `user`, sends `pcm` (then `linger` of nothing), waits for the script to hang up
/// and returns the call and what was heard.
async fn talk(server: &Server, user: &str, pcm: &[i16], linger: Duration) -> (Uac, Vec<i16>) {
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, user, peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let heard = peer.exchange(to, pcm, linger).await;
    assert!(
        w.drive(&mut uac, WAIT, |u| u.state == UacState::Terminated)
            .await,
        "the script hangs up"
    );
    (uac, heard)
}

/// Loudness of each 20 ms frame, in dBFS.
fn envelope(pcm: &[i16]) -> Vec<f64> {
    pcm.chunks_exact(160).map(rms_dbfs).collect()
}

/// The first 20 ms frame louder than −40 dBFS.
fn onset(pcm: &[i16]) -> Option<usize> {
    envelope(pcm).iter().position(|&d| d > -40.0)
}

/// Pearson correlation of two envelopes.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt()).max(1e-9)
}

const SENTENCE: &str = "Thank you for calling. Your balance is 42 dollars and 17 cents.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_hears_say_as_the_synthesizer_speaks_it() {
    let script = format!("answer(); say(\"{SENTENCE}\"); hangup();");
    let (server, _s) = server_with(&[("speak", &script)], None).await;
    let mut events = Events::open(server.http, "speech").await;
    let (_uac, heard) = talk(&server, "speak", &silence(6000), Duration::ZERO).await;
    let said = events.until(WAIT, |e| e["type"] == "speech").await;
    let said = said.last().unwrap();
    assert_eq!(said["kind"], "say");
    assert_eq!(said["engine"], "flite");
    assert_eq!(said["text"], SENTENCE);

    let start = onset(&heard).expect("the caller hears speech");
    let heard = &heard[start * 160..];
    let want = spoken(SENTENCE);
    let from = onset(&want).unwrap();
    let want = &want[from * 160..];
    // The caller hears the whole sentence: as long as the synthesizer's, as loud, with the
    // same rise and fall of syllables.
    let loud = |p: &[i16]| envelope(p).iter().filter(|&&d| d > -40.0).count();
    let (h, w) = (loud(heard), loud(want));
    assert!(
        (h as f64 - w as f64).abs() <= w as f64 * 0.1,
        "speech frames heard {h}, synthesized {w}"
    );
    let r = correlation(&envelope(heard), &envelope(want));
    assert!(r > 0.9, "envelope correlation {r}");
    let level = rms_dbfs(&heard[..want.len().min(heard.len())]);
    assert!(level > -30.0, "speech level {level} dBFS");
    server.stop().await;
}

const MENU: &str = r#"
answer();
let r = listen(#{choices: ["sales", "support", "billing"], timeout_ms: 4000});
log(`heard ${r.choice} ${r.reason}`);
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_choice_reaches_the_script_the_event_and_the_console() {
    if !support::speech::sphinx() {
        return;
    }
    let (server, _s) = server_with(&[("menu", MENU)], None).await;
    let mut events = Events::open(server.http, "speech,call_step").await;
    let mut pcm = silence(600);
    pcm.extend(spoken("support"));
    pcm.extend(silence(2500));
    let (uac, _) = talk(&server, "menu", &pcm, Duration::ZERO).await;
    let seen = events
        .until(WAIT, |e| e["type"] == "speech" && e["kind"] == "listen")
        .await;
    let heard = seen.last().unwrap();
    assert_eq!(heard["call_id"], uac.call_id.as_str());
    assert_eq!(heard["choice"], "support", "{heard}");
    assert_eq!(heard["reason"], "speech");
    assert_eq!(heard["engine"], "pocketsphinx");
    let speech_ms = heard["speech_ms"].as_u64().unwrap();
    assert!((300..=1500).contains(&speech_ms), "speech {speech_ms} ms");
    let log = events
        .until(WAIT, |e| {
            e["type"] == "call_step" && e["step"].as_str().unwrap_or("").starts_with("log:")
        })
        .await;
    assert_eq!(log.last().unwrap()["step"], "log: heard support speech");
    assert_eq!(
        metric(server.http, "switchboard_asr_recognitions_total").await,
        1.0
    );
    assert_eq!(
        metric(server.http, "switchboard_asr_errors_total").await,
        0.0
    );
    server.stop().await;
}

const PATIENT: &str = r#"
answer();
let r = listen(#{timeout_ms: 1000});
log(`${r.reason} key=${r.key}`);
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_gives_no_input_after_its_timeout_and_a_key_ends_it() {
    let (server, _s) = server_with(&[("patient", PATIENT)], None).await;
    let mut events = Events::open(server.http, "speech").await;

    // Silence: nothing heard within the second.
    let began = std::time::Instant::now();
    let (_u, _) = talk(&server, "patient", &silence(1500), Duration::ZERO).await;
    let got = events.until(WAIT, |e| e["type"] == "speech").await;
    let got = got.last().unwrap();
    assert_eq!(got["reason"], "no-input");
    assert_eq!(got["text"], "");
    assert!(began.elapsed() >= Duration::from_millis(1000));

    // A key instead of speech.
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "patient", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    peer.send_dtmf(to, "7").await;
    let got = events.until(WAIT, |e| e["type"] == "speech").await;
    let got = got.last().unwrap();
    assert_eq!(got["reason"], "key");
    assert_eq!(got["key"], "7");
    assert!(
        w.drive(&mut uac, WAIT, |u| u.state == UacState::Terminated)
            .await,
        "the script hangs up"
    );
    server.stop().await;
}

const BARGE: &str = r#"
answer();
say("Welcome to the example company. Please tell me which department you need: sales, support or billing. You can also press a key.", #{barge_in: true});
let r = listen(#{choices: ["sales", "support", "billing"]});
log(`heard ${r.choice}`);
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_over_a_barge_in_prompt_stops_it_and_listen_hears_the_whole_answer() {
    let recognise = support::speech::sphinx();
    let (server, _s) = server_with(&[("barge", BARGE)], None).await;
    let mut events = Events::open(server.http, "speech,call_step").await;
    // The caller waits 1.5 s into the prompt, then says its answer.
    let mut pcm = silence(1500);
    let answer_at = pcm.len();
    pcm.extend(spoken("billing"));
    pcm.extend(silence(2500));
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "barge", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let got = peer.exchange_packets(to, &pcm, 160, Duration::ZERO).await;
    assert!(
        w.drive(&mut uac, WAIT, |u| u.state == UacState::Terminated)
            .await,
        "the script hangs up"
    );
    // From the caller's first word going out to the prompt's last sound coming in: within
    // 300 ms.
    let spoke = answer_at / 160 + onset(&spoken("billing")).unwrap();
    let first_word = got.sent[spoke];
    let last_prompt = got
        .timed()
        .iter()
        .filter(|(_, pcm)| rms_dbfs(pcm) > -40.0)
        .map(|(t, _)| *t)
        .filter(|t| *t < first_word + Duration::from_secs(1))
        .max()
        .expect("the prompt was heard");
    let stopped = last_prompt.saturating_duration_since(first_word);
    eprintln!("the prompt stopped {stopped:?} after the caller's first word went out");
    assert!(
        stopped <= Duration::from_millis(300),
        "the prompt went on {stopped:?} after the caller began"
    );
    let heard = got.audio;
    let steps = events
        .until(WAIT, |e| {
            e["type"] == "call_step" && e["step"] == "interrupted by speech"
        })
        .await;
    assert!(steps
        .iter()
        .any(|e| e["type"] == "speech" && e["kind"] == "say"));
    // The prompt was playing when the caller began, and stopped soon after.
    let env = envelope(&heard);
    let spoke = answer_at / 160 + onset(&spoken("billing")).unwrap();
    let before = &env[spoke.saturating_sub(25)..spoke];
    assert!(
        before.iter().filter(|&&d| d > -40.0).count() > 10,
        "the prompt plays before the caller speaks"
    );
    // And nothing of it after.
    let after = &env[(spoke + 25).min(env.len())..(spoke + 75).min(env.len())];
    assert!(after.iter().all(|&d| d < -45.0), "{after:?}");
    if recognise {
        let got = events
            .until(WAIT, |e| e["type"] == "speech" && e["kind"] == "listen")
            .await;
        assert_eq!(got.last().unwrap()["choice"], "billing");
    }
    server.stop().await;
}

const AMD: &str = r#"
answer();
let r = amd();
log(`amd ${r.status} ${r.cause} ${r.words}`);
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amd_tells_a_person_from_an_answering_machine_in_events_and_cdrs() {
    let cdrs = common::TempDir::new("speech-cdr");
    let (server, _s) = server_with(&[("amd", AMD)], Some(cdrs.path().to_path_buf())).await;
    let mut events = Events::open(server.http, "amd").await;

    // A person: a short hello, then silence while waiting for the caller to speak.
    let mut person = silence(300);
    person.extend(spoken("Hello?"));
    person.extend(silence(2500));
    let (uac, _) = talk(&server, "amd", &person, Duration::ZERO).await;
    let got = events.until(WAIT, |e| e["type"] == "amd").await;
    let got = got.last().unwrap();
    assert_eq!(got["status"], "HUMAN", "{got}");
    assert_eq!(got["call_id"], uac.call_id.as_str());
    let record = support::cdr_of(cdrs.path(), &uac.call_id).await;
    assert_eq!(record["amd"]["status"], "HUMAN");

    // A machine: a long greeting.
    let mut machine = silence(300);
    machine.extend(spoken(
        "Hi, you have reached the Smith family. We cannot come to the phone right now, please leave a message after the tone.",
    ));
    let (uac, _) = talk(&server, "amd", &machine, Duration::ZERO).await;
    let got = events.until(WAIT, |e| e["type"] == "amd").await;
    let got = got.last().unwrap();
    assert_eq!(got["status"], "MACHINE", "{got}");
    let cause = got["cause"].as_str().unwrap();
    assert!(
        cause.starts_with("LONGGREETING") || cause.starts_with("MAXWORDS"),
        "{cause}"
    );
    let record = support::cdr_of(cdrs.path(), &uac.call_id).await;
    assert_eq!(record["amd"]["status"], "MACHINE");
    for status in ["HUMAN", "MACHINE"] {
        let sample = format!("switchboard_amd_results_total{{status=\"{status}\"}}");
        assert_eq!(metric(server.http, &sample).await, 1.0, "{status}");
    }
    server.stop().await;
}

const VOICEMAIL: &str = r#"
answer();
let b = wait_for_beep(#{timeout_ms: 10000});
log(`beep ${b.beep} ${b.hz} ${b.ms}`);
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_beep_returns_once_the_voicemail_tone_has_ended() {
    let (server, _s) = server_with(&[("vm", VOICEMAIL)], None).await;
    let mut events = Events::open(server.http, "call_step").await;
    let mut pcm = silence(200);
    pcm.extend(spoken("Please leave a message after the tone."));
    pcm.extend(silence(300));
    let tone_from = pcm.len() / 160;
    pcm.extend(tone("1000/400@-12", 400));
    let tone_end = pcm.len() / 160;
    pcm.extend(silence(1500));
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "vm", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    // The caller talks while the test waits for the script's answer.
    let caller = tokio::spawn(async move {
        let got = peer.exchange_packets(to, &pcm, 160, Duration::ZERO).await;
        (got.sent, peer)
    });
    let got = events
        .until(WAIT, |e| {
            e["type"] == "call_step" && e["step"].as_str().unwrap_or("").starts_with("log: beep")
        })
        .await;
    let answered = std::time::Instant::now();
    let (sent, _peer) = caller.await.unwrap();
    assert!(
        w.drive(&mut uac, WAIT, |u| u.state == UacState::Terminated)
            .await,
        "the script hangs up"
    );
    // The last 20 ms of the tone went out with packet `tone_end - 1`: the script has its
    // answer after that, within 150 ms (the network and the jitter buffer included).
    let ended = sent[tone_end - 1];
    assert!(sent[tone_from] < ended);
    let after = answered.saturating_duration_since(ended);
    eprintln!("wait_for_beep answered {after:?} after the tone ended");
    assert!(answered > ended, "answered before the tone ended");
    assert!(
        after <= Duration::from_millis(150),
        "answered {after:?} after the tone ended"
    );
    let line = got.last().unwrap()["step"].as_str().unwrap().to_string();
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts[2], "true", "{line}");
    let hz: i64 = parts[3].parse().unwrap();
    let ms: i64 = parts[4].parse().unwrap();
    assert!((990..=1010).contains(&hz), "{line}");
    assert!((340..=460).contains(&ms), "{line}");
    server.stop().await;
}

/// A callee server's numbers: a voicemail greeting, and a person who says hello and waits.
const MACHINE: &str = r#"answer(); say("Hi, you have reached the Smith family. We cannot come to the phone right now, please leave a message after the tone."); sleep(4000); hangup();"#;
const PERSON: &str = r#"answer(); say("Hello?"); sleep(8000); hangup();"#;

/// The caller's script dials with screening and tells how it went.
const SCREENING: &str = r#"
answer();
let r = dial(session.vars.target, #{amd: true, timeout_secs: 5});
log(`dial ${r.outcome} ${r.amd.status}`);
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_with_amd_bridges_a_person_and_hangs_up_on_a_machine() {
    let (callee, _s1) = server_with(&[("machine", MACHINE), ("person", PERSON)], None).await;
    let far = |user: &str| format!("sip:{user}@{}", callee.sip);
    let s = Scripts::with_shipped(&[("screening.rhai", SCREENING)]);
    let dir = s.0.clone();
    let rules = vec![
        rule("to-machine", "screening", &[("target", far("machine"))]),
        rule("to-person", "screening", &[("target", far("person"))]),
    ];
    let caller = start_with(common::rtp_ports(12), move |c| {
        c.paths.scripts = dir;
        c.dialplan.splice(0..0, rules);
    })
    .await;
    let mut events = Events::open(caller.http, "amd,call_step").await;
    for (user, status, outcome) in [
        ("to-machine", "MACHINE", "machine"),
        ("to-person", "HUMAN", "answered"),
    ] {
        let mut peer = RtpPeer::bind().await;
        let (mut w, mut uac) = wire(false, caller.sip).await;
        call(&mut w, &mut uac, user, peer.port()).await;
        let to = SocketAddr::new(caller.sip.ip(), answered_port(&uac));
        let seen = events
            .until(Duration::from_secs(15), |e| e["type"] == "amd")
            .await;
        assert_eq!(seen.last().unwrap()["status"], status, "{user}: {seen:?}");
        if status == "HUMAN" {
            // Bridged: the caller hears the callee's line (silence after its hello) and the
            // call goes on until the callee hangs up.
            let _ = peer.exchange(to, &silence(500), Duration::ZERO).await;
        }
        let log = events
            .until(Duration::from_secs(15), |e| {
                e["type"] == "call_step"
                    && e["step"].as_str().unwrap_or("").starts_with("log: dial")
            })
            .await;
        assert_eq!(
            log.last().unwrap()["step"],
            format!("log: dial {outcome} {status}"),
            "{user}"
        );
        assert!(
            w.drive(&mut uac, Duration::from_secs(15), |u| u.state
                == UacState::Terminated)
                .await,
            "{user}: the script hangs up"
        );
    }
    caller.stop().await;
    callee.stop().await;
}

/// A transcription server in the test: what it was sent (the WAV's length in bytes) and the
/// transcript it answers with.
async fn transcriber(text: &'static str) -> (String, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/audio/transcriptions",
        post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body.len());
                axum::Json(serde_json::json!({ "text": text }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcription_server_hears_the_utterance_and_its_text_picks_the_choice() {
    let (url, mut sent) = transcriber("Billing, please.").await;
    let s = Scripts::with_shipped(&[("menu.rhai", MENU)]);
    let dir = s.0.clone();
    let server = start_with(common::rtp_ports(4), move |c| {
        c.paths.scripts = dir;
        c.dialplan.splice(0..0, vec![rule("menu", "menu", &[])]);
        c.asr.engine = Some(switchboard::speech::asr::AsrEngineKind::Http);
        c.asr.url = url;
    })
    .await;
    let mut events = Events::open(server.http, "speech").await;
    let mut pcm = silence(400);
    pcm.extend(spoken("billing please"));
    pcm.extend(silence(1500));
    let (uac, _) = talk(&server, "menu", &pcm, Duration::ZERO).await;
    let got = events.until(WAIT, |e| e["kind"] == "listen").await;
    let got = got.last().unwrap();
    assert_eq!(got["call_id"], uac.call_id.as_str());
    assert_eq!(got["engine"], "http");
    assert_eq!(got["text"], "Billing, please.");
    assert_eq!(got["choice"], "billing");
    // The server got the utterance as a WAV: the caller's words, not the whole call.
    let bytes = sent.recv().await.unwrap();
    let speech_ms = got["speech_ms"].as_u64().unwrap();
    assert!(
        bytes as u64 > speech_ms * 8,
        "{bytes} bytes for {speech_ms} ms"
    );
    assert!(speech_ms < 2000, "{speech_ms} ms");
    server.stop().await;
}

/// What a placed call does after its answering-machine detection.
const AFTER_AMD: &str = r#"log(`placed ${session.amd.status}`); hangup();"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_placed_with_amd_hands_the_verdict_to_its_script_and_the_event_stream() {
    let (callee, _s1) = server_with(&[("machine", MACHINE), ("person", PERSON)], None).await;
    let s = Scripts::with_shipped(&[("after_amd.rhai", AFTER_AMD)]);
    let dir = s.0.clone();
    let caller = start_with(common::rtp_ports(8), move |c| {
        c.paths.scripts = dir;
    })
    .await;
    let mut events = Events::open(caller.http, "amd,call_step").await;
    for (user, status) in [("machine", "MACHINE"), ("person", "HUMAN")] {
        let body = serde_json::json!({
            "to": format!("sip:{user}@{}", callee.sip),
            "script": "after_amd",
            "amd": true,
        });
        let (code, answer) = http_send(
            caller.http,
            "POST",
            "/api/calls",
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&answer));
        let id: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        let id = id["id"].as_str().unwrap().to_string();
        let seen = events
            .until(Duration::from_secs(15), |e| {
                e["type"] == "amd" && e["call_id"] == id.as_str()
            })
            .await;
        assert_eq!(seen.last().unwrap()["status"], status, "{user}");
        let log = events
            .until(Duration::from_secs(5), |e| {
                e["call_id"] == id.as_str()
                    && e["step"].as_str().unwrap_or("").starts_with("log: placed")
            })
            .await;
        assert_eq!(
            log.last().unwrap()["step"],
            format!("log: placed {status}"),
            "{user}"
        );
    }
    caller.stop().await;
    callee.stop().await;
}
