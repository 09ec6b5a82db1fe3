//! `dial()` end to end: one switchboard calls another over SIP on 127.0.0.1. The calling
//! server's script dials the callee server's numbers (echo, busy, ring, a short call); a
//! caller on the first server hears the far end through the bridge, decoded and measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::events::Events;
use support::rtp::{tone, tone_power, RtpPeer};
use support::scripts::{rule, Scripts};
use support::server::{answered_port, call, hang_up, http_get, start_with, wire, Server};

/// The calling server's flow: dial what the rule says, tell how it went, hang up.
const OUT: &str = r#"
let opts = #{timeout_secs: 2};
if session.vars.mode != () { opts.mode = session.vars.mode; }
let targets = session.vars.target;
if session.vars.second != () { targets = [session.vars.target, session.vars.second]; }
if session.vars.record != () { opts.record = true; }
let r = dial(targets, opts);
log("dial", r.outcome, r.code);
hangup();
"#;

/// The callee: answers, talks a second (a tone), hangs up.
const SHORT: &str = r#"answer(); tone("800/1000@-10"); hangup();"#;

/// Two servers: the callee (shipped scripts plus `short`), then the caller's, whose rules
/// dial the callee.
async fn servers() -> (Server, Server, Scripts, Scripts, Scripts) {
    let callee_scripts = Scripts::with_shipped(&[("short.rhai", SHORT)]);
    let dir = callee_scripts.0.clone();
    let callee = start_with((45600, 45699), move |c| {
        c.paths.scripts = dir;
        c.dialplan.push(rule("short", "short", &[]));
    })
    .await;
    let far = |user: &str| format!("sip:{user}@{}", callee.sip);
    let rules = vec![
        rule("to-echo", "out", &[("target", far("echo"))]),
        rule("to-busy", "out", &[("target", far("busy"))]),
        rule("to-ring", "out", &[("target", far("ring"))]),
        rule("to-short", "out", &[("target", far("short"))]),
        rule(
            "to-short-rec",
            "out",
            &[("target", far("short")), ("record", "yes".into())],
        ),
        rule(
            "to-both",
            "out",
            &[
                ("target", far("ring")),
                ("second", far("short")),
                ("mode", "parallel".into()),
            ],
        ),
        rule(
            "to-next",
            "out",
            &[("target", far("busy")), ("second", far("short"))],
        ),
    ];
    let caller_scripts = Scripts::with_shipped(&[("out.rhai", OUT)]);
    let cdrs = Scripts::with_shipped(&[]);
    let (dir, cdr_dir) = (caller_scripts.0.clone(), cdrs.0.clone());
    let caller = start_with((45700, 45799), move |c| {
        c.paths.scripts = dir;
        c.dialplan = rules;
        // Recordings of bridged calls go beside the records.
        c.paths.recordings = cdr_dir.join("recordings");
        c.cdr.dir = cdr_dir;
    })
    .await;
    (caller, callee, caller_scripts, callee_scripts, cdrs)
}

/// Calls `user` on `server` and waits for the call's `dial ended` step: its text.
async fn dial_outcome(server: &Server, user: &str) -> String {
    support::server::dial_outcome(server.sip, server.http, user)
        .await
        .step
}

/// Waits (bounded) until `dir`'s CDR files hold `n` records: all of them.
async fn read_cdrs(dir: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    out.push(serde_json::from_str(line).unwrap());
                }
            }
        }
        if out.len() >= n {
            return out;
        }
        assert!(
            Instant::now() < until,
            "{} of {n} records: {out:?}",
            out.len()
        );
        // The writer thread flushes records as calls end; there is nothing to wait on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live calls on a server, from its API.
async fn live_calls(server: &Server) -> usize {
    let (status, body) = http_get(server.http, "/api/calls").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_dialled_call_is_bridged_and_ends_with_the_caller() {
    let (caller_server, callee_server, _a, _b, _cdrs) = servers().await;
    let mut callee_events = Events::open(callee_server.http, "call_ended").await;
    let mut rtp = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, caller_server.sip).await;
    // Answered only when the far end answers: the 200 comes through the bridge.
    call(&mut w, &mut uac, "to-echo", rtp.port()).await;
    let media = SocketAddr::new(caller_server.sip.ip(), answered_port(&uac));
    // The far end's echo flow beeps first, then sends back what it hears.
    rtp.exchange(media, &tone("0/1200@-60", 1200), Duration::ZERO)
        .await;
    let power = rtp.tone_back(media).await;
    assert!(
        power > 0.5,
        "the caller does not hear itself back through the bridge and the far echo: {power}"
    );
    assert_eq!(live_calls(&callee_server).await, 1);
    hang_up(&mut w, &mut uac).await;
    // The caller's BYE ends the dialled leg too.
    let ended = callee_events
        .until(Duration::from_secs(5), |e| e["type"] == "call_ended")
        .await;
    assert_eq!(ended.last().unwrap()["reason"], "caller_bye");
    caller_server.stop().await;
    callee_server.stop().await;
}

#[tokio::test]
async fn dial_outcomes_across_two_servers() {
    let (caller_server, callee_server, _a, _b, cdrs) = servers().await;
    let mut callee_events = Events::open(callee_server.http, "call_ended").await;
    let (busy, ring, short, both, next) = tokio::join!(
        dial_outcome(&caller_server, "to-busy"),
        dial_outcome(&caller_server, "to-ring"),
        dial_outcome(&caller_server, "to-short"),
        dial_outcome(&caller_server, "to-both"),
        dial_outcome(&caller_server, "to-next"),
    );
    assert_eq!(busy, "dial ended: busy (486)");
    // Rang past its 2 s: cancelled, no answer.
    assert_eq!(ring, "dial ended: no_answer (408)");
    // The far end hung up after its second: the dial was answered, and the script went on.
    assert_eq!(short, "dial ended: answered (200)");
    // Both rang; the short call answered at once and the ringing one was cancelled.
    assert_eq!(both, "dial ended: answered (200)");
    // Busy first, then the next target answered.
    assert_eq!(next, "dial ended: answered (200)");
    // Seven calls reached the far end (one each, two for the lists) and all of them ended,
    // the ringing ones cancelled.
    let mut ended = Vec::new();
    while ended.len() < 7 {
        let seen = callee_events
            .until(Duration::from_secs(10), |e| e["type"] == "call_ended")
            .await;
        ended.push(seen.last().unwrap()["reason"].as_str().unwrap().to_string());
    }
    ended.sort();
    assert_eq!(
        ended,
        [
            "cancelled",
            "cancelled",
            "refused",
            "refused",
            "server_bye",
            "server_bye",
            "server_bye"
        ]
    );
    assert_eq!(live_calls(&callee_server).await, 0);
    // Each dialled leg has its own record, linked to the call that dialled it.
    let records = read_cdrs(&cdrs.0, 12).await;
    let inbound: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["direction"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), 5, "{records:?}");
    let busy_call = inbound.iter().find(|r| r["to"] == "to-busy").unwrap();
    let busy_leg = records
        .iter()
        .find(|r| r["parent_call_id"] == busy_call["call_id"])
        .expect("the busy leg's record");
    assert_eq!(busy_leg["direction"], "outbound");
    assert_eq!(busy_leg["sip_code"], 486);
    assert_eq!(busy_leg["cause"], "refused");
    assert!(busy_leg["to"].as_str().unwrap().starts_with("sip:busy@"));
    let next_call = inbound.iter().find(|r| r["to"] == "to-next").unwrap();
    let mut next_legs: Vec<u64> = records
        .iter()
        .filter(|r| r["parent_call_id"] == next_call["call_id"])
        .map(|r| r["sip_code"].as_u64().unwrap_or(0))
        .collect();
    next_legs.sort();
    assert_eq!(next_legs, [200, 486], "{records:?}");
    let ring_call = inbound.iter().find(|r| r["to"] == "to-ring").unwrap();
    let ring_leg = records
        .iter()
        .find(|r| r["parent_call_id"] == ring_call["call_id"])
        .unwrap();
    assert_eq!(ring_leg["cause"], "cancelled");
    assert_eq!(ring_leg["sip_code"], 487);
    caller_server.stop().await;
    callee_server.stop().await;
}

/// The far end for placed calls: rings a moment, answers, sends a 1 kHz tone, hangs up.
const LATER: &str = r#"ring(); sleep(300); answer(); tone("1000/2000@-10"); hangup();"#;

/// What an answered placed call runs: it records what the far end says.
const LISTEN: &str =
    r#"log(session.direction); record(#{file: "placed", beep: false, max_secs: 5});"#;

#[tokio::test]
async fn the_api_places_calls_that_run_a_script_or_join_a_room() {
    let callee_scripts = Scripts::with_shipped(&[("later.rhai", LATER)]);
    let dir = callee_scripts.0.clone();
    let callee = start_with((45800, 45849), move |c| {
        c.paths.scripts = dir;
        c.dialplan.push(rule("later", "later", &[]));
    })
    .await;
    let caller_scripts = Scripts::with_shipped(&[("listen.rhai", LISTEN)]);
    let recordings = Scripts::with_shipped(&[]);
    let (dir, rec) = (caller_scripts.0.clone(), recordings.0.clone());
    let server = start_with((45850, 45899), move |c| {
        c.paths.scripts = dir;
        c.paths.recordings = rec;
    })
    .await;
    let mut events = Events::open(server.http, "").await;
    let place = |body: serde_json::Value| {
        let http = server.http;
        async move {
            let (status, body) =
                support::server::http_send(http, "POST", "/api/calls", body.to_string().as_bytes())
                    .await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            (status, v)
        }
    };
    // A script on answer: the far end rings, answers and talks; what it said is recorded.
    let (status, v) = place(serde_json::json!({
        "to": format!("sip:later@{}", callee.sip), "script": "listen", "caller_id": "+15550001"
    }))
    .await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let seen = events
        .until(Duration::from_secs(15), |e| {
            e["type"] == "call_ended" && e["call_id"] == id.as_str()
        })
        .await;
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|e| e["call_id"] == id.as_str() || e["id"] == "placed")
        .filter_map(|e| e["type"].as_str())
        .filter(|t| *t != "call_step")
        .collect();
    assert_eq!(
        kinds,
        [
            "call_started",
            "call_ringing",
            "call_answered",
            "recording_started",
            "recording_finished",
            "call_ended"
        ],
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| e["step"] == "log: outbound"),
        "the script sees an outbound call: {seen:?}"
    );
    let pcm: Vec<i16> = hound::WavReader::open(recordings.0.join("placed.wav"))
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let power = pcm
        .chunks(1600)
        .map(|c| tone_power(c, 1000.0))
        .fold(0.0, f64::max);
    assert!(
        power > 0.5,
        "the far end's tone is not in the recording: {power}"
    );

    // A refusal: the call fails with the far end's status.
    let (status, v) = place(serde_json::json!({
        "to": format!("sip:busy@{}", callee.sip), "script": "listen"
    }))
    .await;
    assert_eq!(status, 201);
    let id = v["id"].as_str().unwrap().to_string();
    let seen = events
        .until(Duration::from_secs(10), |e| {
            e["type"] == "call_ended" && e["call_id"] == id.as_str()
        })
        .await;
    let failed = seen
        .iter()
        .find(|e| e["type"] == "call_failed" && e["call_id"] == id.as_str())
        .expect("call_failed");
    assert_eq!(failed["code"], 486);

    // Into a room: the answered call is a member.
    let (status, v) = place(serde_json::json!({
        "to": format!("sip:echo@{}", callee.sip), "room": "placed-room"
    }))
    .await;
    assert_eq!(status, 201);
    let id = v["id"].as_str().unwrap().to_string();
    let joined = events
        .until(Duration::from_secs(10), |e| e["type"] == "member_joined")
        .await;
    assert_eq!(joined.last().unwrap()["call_id"], id.as_str());
    let (status, _) =
        support::server::http_request(server.http, "POST", &format!("/api/calls/{id}/hangup"))
            .await;
    assert_eq!(status, 202);
    events
        .until(Duration::from_secs(10), |e| {
            e["type"] == "call_ended" && e["call_id"] == id.as_str()
        })
        .await;

    // Refused before anything goes out.
    let (status, v) = place(serde_json::json!({"to": "sip:x@192.0.2.7", "script": "listen"})).await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = place(serde_json::json!({
        "to": format!("sip:echo@{}", callee.sip), "script": "nonesuch"
    }))
    .await;
    assert_eq!(status, 400);
    let (status, _) = place(serde_json::json!({
        "to": format!("sip:echo@{}", callee.sip), "script": "listen", "room": "r"
    }))
    .await;
    assert_eq!(status, 400);
    server.stop().await;
    callee.stop().await;
}

/// A callee that answers and, after a moment, presses 1.
const PRESSER: &str = r#"answer(); sleep(600); send_dtmf("1"); echo(20000);"#;

#[tokio::test]
async fn room_dial_joins_the_callee_after_its_confirmation_key_only() {
    let callee_scripts = Scripts::with_shipped(&[("presser.rhai", PRESSER)]);
    let dir = callee_scripts.0.clone();
    let callee = start_with((45900, 45949), move |c| {
        c.paths.scripts = dir;
        c.dialplan.push(rule("presser", "presser", &[]));
    })
    .await;
    let server = start_with((45950, 45999), |_| {}).await;
    let mut events = Events::open(server.http, "").await;
    let dial = |to: String, confirm: Option<&str>| {
        let http = server.http;
        let body = match confirm {
            Some(k) => serde_json::json!({"to": to, "confirm": k}),
            None => serde_json::json!({"to": to}),
        };
        async move {
            let (status, body) = support::server::http_send(
                http,
                "POST",
                "/api/rooms/board/dial",
                body.to_string().as_bytes(),
            )
            .await;
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    // The callee presses 1: it joins.
    let pressed = dial(format!("sip:presser@{}", callee.sip), Some("1")).await;
    let seen = events
        .until(Duration::from_secs(15), |e| e["type"] == "member_joined")
        .await;
    assert_eq!(seen.last().unwrap()["call_id"], pressed.as_str());
    // The echo line presses nothing: asked twice, it is hung up without joining.
    let silent = dial(format!("sip:echo@{}", callee.sip), Some("1")).await;
    let seen = events
        .until(Duration::from_secs(30), |e| {
            e["type"] == "call_ended" && e["call_id"] == silent.as_str()
        })
        .await;
    assert!(
        !seen
            .iter()
            .any(|e| e["type"] == "member_joined" && e["call_id"] == silent.as_str()),
        "{seen:?}"
    );
    server.stop().await;
    callee.stop().await;
}

#[tokio::test]
async fn a_recorded_bridge_keeps_the_caller_left_and_the_callee_right() {
    let (caller_server, callee_server, _a, _b, cdrs) = servers().await;
    let mut events = Events::open(caller_server.http, "recording_finished").await;
    let mut rtp = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, caller_server.sip).await;
    call(&mut w, &mut uac, "to-short-rec", rtp.port()).await;
    let media = SocketAddr::new(caller_server.sip.ip(), answered_port(&uac));
    // The caller says 1 kHz while the callee says 800 Hz for its second, then hangs up.
    rtp.exchange(media, &tone("1000/1500@-10", 1500), Duration::ZERO)
        .await;
    let done = events
        .until(Duration::from_secs(10), |e| {
            e["type"] == "recording_finished"
        })
        .await;
    let id = done.last().unwrap()["id"].as_str().unwrap().to_string();
    let wav = hound::WavReader::open(cdrs.0.join("recordings").join(format!("{id}.wav"))).unwrap();
    assert_eq!(wav.spec().channels, 2);
    let samples: Vec<i16> = wav.into_samples::<i16>().map(|s| s.unwrap()).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let best = |pcm: &[i16], f: f64| {
        pcm.chunks(1600)
            .map(|c| tone_power(c, f))
            .fold(0.0, f64::max)
    };
    assert!(
        best(&left, 1000.0) > 0.5 && best(&left, 800.0) < 0.1,
        "left is the caller"
    );
    assert!(
        best(&right, 800.0) > 0.5 && best(&right, 1000.0) < 0.1,
        "right is the callee"
    );
    w.drive(&mut uac, Duration::from_millis(300), |_| false)
        .await;
    caller_server.stop().await;
    callee_server.stop().await;
}
