//! Call detail records of known calls: SIPp places an answered call, a refused one (486), a
//! cancelled one (487), one nobody answers (480) and one the server ends (its maximum call
//! length) against the real binary; every field of each JSONL record is checked.
//!
//! Needs `sipp`, like tests/sipp.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{find_sipp, Server, ServerOptions, Sipp, TempDir, Transport};
use serde_json::Value;
use switchboard::api::index::parse_rfc3339_ms;

/// How long the no-answer destination rings before giving up with 480.
const RING_MS: u64 = 1000;
/// The server's maximum call length.
const MAX_CALL_SECS: u64 = 2;
/// The pause of `uac_basic` between the ACK and its BYE.
const BASIC_PAUSE_MS: i64 = 500;

/// The repository's scripts, plus `noanswer`: `ring.rhai`'s behaviour with a short ring.
fn scripts(dir: &TempDir) -> std::path::PathBuf {
    let to = dir.path().join("scripts");
    std::fs::create_dir_all(&to).unwrap();
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rhai") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    let noanswer = format!("ring();\nsleep({RING_MS});\nhangup(480);\n");
    std::fs::write(to.join("noanswer.rhai"), noanswer).unwrap();
    to
}

/// The records written so far, oldest first, once there are `n` (bounded wait: the writer
/// thread is off the call path).
fn records(dir: &std::path::Path, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                text.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<Value>>()
            })
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "{} of {n} CDRs: {lines:?}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ms(v: &Value) -> i64 {
    v.as_str()
        .and_then(parse_rfc3339_ms)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
}

/// The fields every record shares, whatever the call.
fn check_common(r: &Value, to: &str) {
    // `reason` is there when the server hung up for one (checked where it is expected).
    let keys: Vec<&str> = r
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "reason")
        .collect();
    let mut want = [
        "answered_at",
        "call_id",
        "cause",
        "digits",
        "direction",
        "duration_ms",
        "ended_at",
        "from",
        "hangup",
        "recordings",
        "rtp",
        "sip_code",
        "source",
        "started_at",
        "to",
        "transport",
    ];
    want.sort_unstable();
    assert_eq!(keys, want, "{r}");
    // These calls were answered here; `trunk` and `parent_call_id` belong to placed legs.
    assert_eq!(r["direction"], "inbound", "{r}");
    assert_eq!(r["transport"], "udp", "{r}");
    assert!(!r["call_id"].as_str().unwrap().is_empty(), "{r}");
    assert!(
        r["from"].as_str().unwrap().contains("sip:sipp@127.0.0.1"),
        "{r}"
    );
    assert_eq!(r["to"], to, "{r}");
    // Where SIPp called from (no proxy in front).
    let source: std::net::SocketAddr = r["source"].as_str().unwrap().parse().unwrap();
    assert_eq!(source.ip(), std::net::Ipv4Addr::LOCALHOST, "{r}");
    assert!(ms(&r["started_at"]) <= ms(&r["ended_at"]), "{r}");
    assert_eq!(r["digits"], "", "{r}");
    assert_eq!(r["recordings"], serde_json::json!([]), "{r}");
    // SIPp sends no RTP in these scenarios.
    assert_eq!(
        r["rtp"],
        serde_json::json!({"packets": 0, "lost": 0, "jitter_ms": 0.0}),
        "{r}"
    );
}

/// An answered call: answered_at between start and end, and a duration that matches it.
fn check_answered(r: &Value, at_least_ms: i64) {
    assert_eq!(r["sip_code"], 200, "{r}");
    let (start, answered, ended) = (
        ms(&r["started_at"]),
        ms(&r["answered_at"]),
        ms(&r["ended_at"]),
    );
    assert!(start <= answered && answered <= ended, "{r}");
    let duration = r["duration_ms"].as_i64().unwrap();
    assert!(
        (duration - (ended - answered)).abs() <= 20,
        "duration {duration} vs answered..ended {}: {r}",
        ended - answered
    );
    assert!((at_least_ms..at_least_ms + 1500).contains(&duration), "{r}");
}

fn check_unanswered(r: &Value, cause: &str, code: u16, hangup: &str) {
    assert_eq!(r["cause"], cause, "{r}");
    assert_eq!(r["sip_code"], code, "{r}");
    assert_eq!(r["hangup"], hangup, "{r}");
    assert_eq!(r["answered_at"], Value::Null, "{r}");
    assert_eq!(r["duration_ms"], 0, "{r}");
}

#[test]
fn every_field_of_known_calls() {
    let Some(sipp) = find_sipp() else { return };
    let files = TempDir::new("cdr-scripts");
    let scripts = scripts(&files);
    let config = format!(
        "[sip]\nmax_call_secs = {MAX_CALL_SECS}\n\n[paths]\nscripts = {:?}\n\n\
[[dialplan]]\nexact = \"echo\"\nscript = \"echo\"\n\n\
[[dialplan]]\nexact = \"busy\"\nscript = \"busy\"\n\n\
[[dialplan]]\nexact = \"ring\"\nscript = \"ring\"\n\n\
[[dialplan]]\nexact = \"noanswer\"\nscript = \"noanswer\"\n",
        scripts.display().to_string()
    );
    let server = Server::start_with(
        "cdr",
        ServerOptions {
            config: Some(config),
            ..ServerOptions::default()
        },
    );
    let cases = [
        ("uac_basic", "echo"),
        ("uac_busy", "busy"),
        ("uac_cancel", "ring"),
        ("uac_no_answer", "noanswer"),
        ("uac_server_bye", "echo"),
    ];
    for (n, (scenario, service)) in cases.iter().enumerate() {
        let run = Sipp::new(scenario, service, Transport::Udp).run(&sipp, server.sip, server.dir());
        assert!(
            run.success(),
            "{scenario}\n{}\n{}",
            run.report(),
            server.log_text()
        );
        // One record per call, in the order the calls ended.
        records(&server.dir().join("cdr"), n + 1);
    }
    let r = records(&server.dir().join("cdr"), cases.len());
    assert_eq!(r.len(), cases.len(), "{r:?}");
    for (record, (_, service)) in r.iter().zip(cases) {
        check_common(record, service);
    }
    let ids: std::collections::HashSet<&str> =
        r.iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), cases.len());

    // Answered, the caller hung up after its pause.
    assert_eq!(r[0]["cause"], "caller_bye");
    assert_eq!(r[0]["hangup"], "caller");
    check_answered(&r[0], BASIC_PAUSE_MS);
    check_unanswered(&r[1], "refused", 486, "server");
    // The server answered the INVITE 487 (and the CANCEL 200).
    check_unanswered(&r[2], "cancelled", 487, "caller");
    check_unanswered(&r[3], "refused", 480, "server");
    let rang = ms(&r[3]["ended_at"]) - ms(&r[3]["started_at"]);
    assert!(
        (RING_MS as i64..RING_MS as i64 + 1500).contains(&rang),
        "{}",
        r[3]
    );
    // Ended by the server at the maximum call length.
    assert_eq!(r[4]["cause"], "server_bye");
    assert_eq!(r[4]["hangup"], "server");
    assert_eq!(r[4]["reason"], "maximum duration");
    assert_eq!(
        r[0]["reason"],
        Value::Null,
        "the caller hung up: no reason of ours"
    );
    check_answered(&r[4], MAX_CALL_SECS as i64 * 1000);
}
