//! `dial()` against far ends we did not write: the real `switchboard` binary runs a dialplan
//! rule whose script dials, SIPp plays the far end (`tests/sipp/uas_*.xml`: answering with
//! `-rtp_echo`, busy, ringing until cancelled, 503 with Retry-After, a digest challenge,
//! early media), and a caller driven from the test places the call and hears the far end
//! through the bridge, decoded and measured. All on 127.0.0.1.
//!
//! Needs `sipp`; skipped without it, except under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{find_sipp, start_uas, Server, ServerOptions, Sipp, SippRun, TempDir, Transport};
use support::events::Events;
use support::rtp::RtpPeer;
use support::server::{answered_port, call, dial_outcome, hang_up, http_get, wire, DialSeen};

/// The dialling flow: the rule's `target` (several separated by spaces), with its
/// `timeout`, `mode` and `ringback` when given; the outcome is logged, then the call ends.
const DIALLER: &str = r#"
let opts = #{};
if session.vars.timeout != () { opts.timeout_secs = parse_int(session.vars.timeout); }
if session.vars.mode != () { opts.mode = session.vars.mode; }
if session.vars.ringback != () { opts.ringback = session.vars.ringback; }
let targets = session.vars.target.split(" ");
let r = dial(targets, opts);
log("dial", r.outcome, r.code);
hangup();
"#;

/// A SIPp far end, listening.
struct Far {
    port: u16,
    run: JoinHandle<SippRun>,
}

impl Far {
    /// SIPp playing `scenario` for one call; `echo` adds `-rtp_echo`.
    fn start(sipp: &std::path::Path, scenario: &'static str, echo: bool, dir: &TempDir) -> Far {
        let mut run = Sipp::new(scenario, "far", Transport::Udp);
        if echo {
            run.extra_args.push("-rtp_echo".into());
        }
        let (port, run) = start_uas(sipp.to_path_buf(), run, dir.path().to_path_buf());
        Far { port, run }
    }

    /// `sip:USER@127.0.0.1:PORT`.
    fn uri(&self, user: &str) -> String {
        format!("sip:{user}@127.0.0.1:{}", self.port)
    }

    /// SIPp's verdict on its one call: the scenario went through to its end.
    fn assert_done(self, what: &str, server: &Server) -> SippRun {
        let run = self.run.join().unwrap();
        assert!(
            run.success(),
            "{what}\n{}\n{}",
            run.report(),
            server.log_text()
        );
        run
    }
}

/// The real server with the dialling flow behind dialplan rules `(user, vars)`, `extra`
/// settings (trunks) beside them, and `trunk:` targets allowed. The scripts' folder lives
/// as long as the returned [`TempDir`].
fn server(label: &str, rules: &[(&str, Vec<(&str, String)>)], extra: &str) -> (Server, TempDir) {
    let scripts = TempDir::new(&format!("{label}-scripts"));
    std::fs::write(scripts.path().join("dialler.rhai"), DIALLER).unwrap();
    std::fs::write(scripts.path().join("default.rhai"), "hangup(404);").unwrap();
    let mut config = format!(
        "[paths]\nscripts = {:?}\n\n[outbound]\nallow = [\"sip:*@127.0.0.1:*\", \"trunk:*\"]\n\n{extra}\n",
        scripts.path().display().to_string()
    );
    for (user, vars) in rules {
        let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        config.push_str(&format!(
            "[[dialplan]]\nexact = {user:?}\nscript = \"dialler\"\nvars = {{ {} }}\n\n",
            vars.join(", ")
        ));
    }
    let server = Server::start_with(
        label,
        ServerOptions {
            config: Some(config),
            ..ServerOptions::default()
        },
    );
    (server, scripts)
}

/// A trunk `name` whose proxy is the SIPp at `port`, with `more` settings.
fn trunk(name: &str, port: u16, more: &str) -> String {
    format!("[[trunks]]\nname = {name:?}\nproxy = \"sip:127.0.0.1:{port}\"\n{more}\n")
}

/// Calls `user` on `server`, expecting the dial to be answered: sends a 1 kHz tone for 2 s
/// and returns how much of it came back (the far end echoes it, so it crossed the bridge
/// both ways), then hangs up. Also returns the caller's provisional and final statuses.
async fn call_and_hear_echo(server: &Server, user: &str) -> (f64, Vec<u16>) {
    let mut rtp = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, user, rtp.port()).await;
    let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let power = rtp.tone_back(media).await;
    let statuses = uac
        .statuses
        .iter()
        .filter(|(m, _)| m == "INVITE")
        .map(|&(_, c)| c)
        .collect();
    hang_up(&mut w, &mut uac).await;
    (power, statuses)
}

/// `GET /api/trunks`, the trunk `name`.
async fn trunk_state(server: &Server, name: &str) -> serde_json::Value {
    let (status, body) = http_get(server.http, "/api/trunks").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let found = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned();
    found.unwrap_or_else(|| panic!("no trunk {name} in {list}"))
}

/// SIPp answers with SDP and echoes RTP: the caller hears its own tone back, so audio went
/// through the bridge to the far end and back. The caller's BYE reaches the far end.
#[tokio::test]
async fn a_sipp_far_end_answers_and_audio_crosses_the_bridge_both_ways() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-answer");
    let far = Far::start(&sipp, "uas_answer", true, &scratch);
    let (server, _scripts) = server(
        "dial-answer",
        &[("to-far", vec![("target", far.uri("far"))])],
        "",
    );
    let (power, statuses) = call_and_hear_echo(&server, "to-far").await;
    assert!(
        power > 0.5,
        "the caller does not hear its tone back through the far end: {power}\n{}",
        server.log_text()
    );
    // Ringing while the far end rang, answered when it answered.
    assert!(statuses.contains(&180), "{statuses:?}");
    far.assert_done("the far end did not get its BYE", &server);
}

/// 486 from the far end: the script sees `busy` with the code.
#[tokio::test]
async fn a_busy_far_end_is_busy_486_to_the_script() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-busy");
    let far = Far::start(&sipp, "uas_busy", false, &scratch);
    let (server, _scripts) = server(
        "dial-busy",
        &[("to-busy", vec![("target", far.uri("busy"))])],
        "",
    );
    let DialSeen { step, .. } = dial_outcome(server.sip, server.http, "to-busy").await;
    assert_eq!(step, "dial ended: busy (486)");
    far.assert_done("the 486 was not ACKed", &server);
}

/// A far end that rings past `timeout_secs` (2 s) is sent CANCEL (SIPp fails without it)
/// and the script sees `no_answer`, no sooner than the timeout and not long after it.
#[tokio::test]
async fn a_far_end_ringing_past_the_timeout_is_cancelled() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-ring");
    let far = Far::start(&sipp, "uas_ring_cancel", false, &scratch);
    let (server, _scripts) = server(
        "dial-ring",
        &[(
            "to-ring",
            vec![("target", far.uri("ring")), ("timeout", "2".into())],
        )],
        "",
    );
    let DialSeen {
        step,
        took,
        statuses,
    } = dial_outcome(server.sip, server.http, "to-ring").await;
    assert_eq!(step, "dial ended: no_answer (408)");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "the dial gave up after {took:?} (timeout 2 s)"
    );
    assert!(
        statuses.contains(&180),
        "the caller heard no ringing: {statuses:?}"
    );
    let run = far.assert_done("no CANCEL, or the 487 was not ACKed", &server);
    let cancel = run
        .received_messages()
        .into_iter()
        .find(|m| m.trim_start().starts_with("CANCEL "));
    assert!(cancel.is_some(), "no CANCEL among {:?}", run.dir);
}

/// `trunk:a,b/NUMBER`: trunk a's proxy answers 503 with Retry-After: 120, so the call goes
/// on through trunk b, whose far end answers and is bridged; afterwards trunk a is down for
/// about those 120 s and b is up.
#[tokio::test]
async fn a_trunk_answering_503_retry_after_fails_over_and_goes_down() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-failover");
    let a = Far::start(&sipp, "uas_503", false, &scratch);
    let b = Far::start(&sipp, "uas_answer", true, &scratch);
    let trunks = trunk("a", a.port, "") + trunk("b", b.port, "").as_str();
    let (server, _scripts) = server(
        "dial-failover",
        &[("to-pair", vec![("target", "trunk:a,b/5551234".into())])],
        &trunks,
    );
    let (power, _) = call_and_hear_echo(&server, "to-pair").await;
    assert!(
        power > 0.5,
        "the call through trunk b is not bridged: {power}\n{}",
        server.log_text()
    );
    let a_state = trunk_state(&server, "a").await;
    assert_eq!(a_state["up"], false, "{a_state}");
    let down = a_state["down_for_secs"].as_u64().unwrap_or(0);
    assert!((100..=120).contains(&down), "{a_state}");
    let b_state = trunk_state(&server, "b").await;
    assert_eq!(b_state["up"], true, "{b_state}");
    a.assert_done("trunk a's 503 was not ACKed", &server);
    let b_port = b.port;
    let run = b.assert_done("trunk b's far end did not get its BYE", &server);
    let invite = run
        .received_messages()
        .into_iter()
        .find(|m| m.trim_start().starts_with("INVITE "))
        .unwrap_or_default();
    assert!(
        invite
            .trim_start()
            .starts_with(&format!("INVITE sip:5551234@127.0.0.1:{b_port} ")),
        "{invite}"
    );
}

/// A trunk with credentials: the carrier challenges the INVITE with 401, the server answers
/// the challenge (SIPp's `verifyauth` checks the digest) and the call is bridged.
#[tokio::test]
async fn a_trunk_with_credentials_answers_the_invites_digest_challenge() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-auth");
    let far = Far::start(&sipp, "uas_auth", true, &scratch);
    let trunks = trunk(
        "carrier",
        far.port,
        "username = \"acct\"\npassword = \"secret\"",
    );
    let (server, _scripts) = server(
        "dial-auth",
        &[(
            "to-carrier",
            vec![("target", "trunk:carrier/5550000".into())],
        )],
        &trunks,
    );
    let (power, _) = call_and_hear_echo(&server, "to-carrier").await;
    assert!(
        power > 0.5,
        "the authenticated call is not bridged: {power}\n{}",
        server.log_text()
    );
    let run = far.assert_done("the digest did not verify, or no BYE", &server);
    let invites: Vec<String> = run
        .received_messages()
        .into_iter()
        .filter(|m| m.trim_start().starts_with("INVITE "))
        .collect();
    assert_eq!(invites.len(), 2, "{invites:?}");
    assert!(
        invites[1].contains("Authorization: Digest") && invites[1].contains("username=\"acct\""),
        "{}",
        invites[1]
    );
}

/// 183 with SDP, then 200, with `ringback: "early_media"`: the caller gets a 183 of its own
/// (the far end's early media passed through) before the 200, and audio flows after the answer.
#[tokio::test]
async fn early_media_then_answer_reaches_the_caller_as_progress_then_200() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-early");
    let far = Far::start(&sipp, "uas_early", true, &scratch);
    let (server, _scripts) = server(
        "dial-early",
        &[(
            "to-early",
            vec![
                ("target", far.uri("early")),
                ("ringback", "early_media".into()),
            ],
        )],
        "",
    );
    let (power, statuses) = call_and_hear_echo(&server, "to-early").await;
    let progress = statuses.iter().position(|&c| c == 183);
    let answered = statuses.iter().position(|&c| c == 200);
    assert!(
        progress.is_some() && progress < answered,
        "no 183 (early media) before the 200: {statuses:?}"
    );
    assert!(power > 0.5, "no audio after the answer: {power}");
    far.assert_done("the far end did not get its BYE", &server);
}

/// Parallel ringing: one far end rings for ever, the other answers; the answer is bridged
/// and the ringing one is sent CANCEL.
#[tokio::test]
async fn parallel_ringing_bridges_the_answer_and_cancels_the_other() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-parallel");
    let ringing = Far::start(&sipp, "uas_ring_cancel", false, &scratch);
    let answering = Far::start(&sipp, "uas_answer", true, &scratch);
    let targets = format!("{} {}", ringing.uri("ring"), answering.uri("answer"));
    let (server, _scripts) = server(
        "dial-parallel",
        &[(
            "to-both",
            vec![
                ("target", targets),
                ("mode", "parallel".into()),
                ("timeout", "10".into()),
            ],
        )],
        "",
    );
    let mut steps = Events::open(server.http, "call_step").await;
    let (power, _) = call_and_hear_echo(&server, "to-both").await;
    assert!(power > 0.5, "the answer is not bridged: {power}");
    let bridged = steps
        .until(Duration::from_secs(5), |e| {
            e["step"]
                .as_str()
                .is_some_and(|s| s.starts_with("bridged with"))
        })
        .await;
    assert_eq!(
        bridged.last().unwrap()["step"],
        format!("bridged with {}", answering.uri("answer")).as_str()
    );
    ringing.assert_done("the ringing far end got no CANCEL", &server);
    answering.assert_done("the answering far end did not get its BYE", &server);
}

/// The caller gives up while the far end rings: its CANCEL is passed on as a CANCEL to the
/// far end (SIPp fails without it), and the caller's INVITE ends with 487.
#[tokio::test]
async fn the_callers_cancel_cancels_the_ringing_far_end() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-caller-cancel");
    let far = Far::start(&sipp, "uas_ring_cancel", false, &scratch);
    let (server, _scripts) = server(
        "dial-caller-cancel",
        &[(
            "to-ring",
            vec![("target", far.uri("ring")), ("timeout", "10".into())],
        )],
        "",
    );
    let (mut w, mut uac) = wire(false, server.sip).await;
    uac.invite(
        std::time::Instant::now(),
        "to-ring",
        &support::uac::offer("127.0.0.1", 40000, "sendrecv"),
    );
    assert!(
        w.drive(&mut uac, Duration::from_secs(5), |u| u.state
            == support::uac::UacState::Ringing)
            .await,
        "the caller heard no ringing: {:?}",
        uac.statuses
    );
    uac.cancel(std::time::Instant::now());
    assert!(
        w.drive(&mut uac, Duration::from_secs(5), |u| u
            .statuses
            .contains(&("INVITE".into(), 487)))
            .await,
        "no 487 for the cancelled INVITE: {:?}",
        uac.statuses
    );
    w.flush(&mut uac).await;
    far.assert_done("the ringing far end got no CANCEL", &server);
}

/// Just inside the timeout: a far end answering after 1.5 s of a 2 s `timeout_secs` is
/// bridged, not cancelled (the scenario fails on a CANCEL where it waits for the ACK).
#[tokio::test]
async fn a_far_end_answering_just_before_the_timeout_is_bridged() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = TempDir::new("dial-late");
    let far = Far::start(&sipp, "uas_answer_late", true, &scratch);
    let (server, _scripts) = server(
        "dial-late",
        &[(
            "to-late",
            vec![("target", far.uri("late")), ("timeout", "2".into())],
        )],
        "",
    );
    let (power, statuses) = call_and_hear_echo(&server, "to-late").await;
    assert!(
        power > 0.5,
        "the late answer is not bridged: {power}\n{}",
        server.log_text()
    );
    assert!(statuses.contains(&180), "{statuses:?}");
    far.assert_done("the late answer was cancelled or not hung up", &server);
}
