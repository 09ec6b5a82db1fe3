//! End to end: SIPp plays a trunk's registrar (`tests/sipp/uas_registrar*.xml`) and the real
//! `switchboard` binary registers there at start, as its `[[trunks]]` settings say; the
//! state is read back from `GET /api/trunks` and `/metrics`. All on 127.0.0.1.
//!
//! Needs `sipp`; skipped without it, except under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{find_sipp, http, Server, ServerOptions, Sipp, SippRun, Transport};

/// How often the API is asked while waiting for a state.
const POLL: Duration = Duration::from_millis(50);

/// The trunk `x` of `GET /api/trunks`.
fn trunk_x(api: SocketAddr) -> serde_json::Value {
    let (status, body) = http(api, "GET", "/api/trunks");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let x = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "x")
        .cloned();
    x.unwrap_or_else(|| panic!("no trunk x in {body}"))
}

/// Asks the API until trunk `x`'s registration is in `state` (bounded by `limit`): the
/// trunk as then listed, and when it was seen.
fn wait_for_state(server: &Server, state: &str, limit: Duration) -> (serde_json::Value, Instant) {
    let until = Instant::now() + limit;
    for _ in 0..(limit.as_millis() / POLL.as_millis() + 1) {
        let t = trunk_x(server.http);
        if t["registration"]["state"] == state {
            return (t, Instant::now());
        }
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(POLL);
    }
    panic!(
        "trunk x never {state} within {limit:?}: {}\n{}",
        trunk_x(server.http),
        server.log_text()
    );
}

/// The value of one sample of `/metrics`.
fn sample(api: SocketAddr, line_start: &str) -> Option<f64> {
    let (status, text) = http(api, "GET", "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

/// Starts SIPp playing `scenario` on a port of its own, returns once it listens there.
fn start_registrar(
    sipp: std::path::PathBuf,
    scenario: &'static str,
    transport: Transport,
    dir: std::path::PathBuf,
) -> (u16, std::thread::JoinHandle<SippRun>) {
    common::start_uas(sipp, Sipp::new(scenario, "x", transport), dir)
}

fn trunk_config(port: u16, transport: Transport, extra: &str) -> String {
    let t = match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    format!(
        "[[trunks]]\nname = \"x\"\nproxy = \"sip:127.0.0.1:{port};transport={t}\"\n\
         register = true\n{extra}"
    )
}

/// The server registers at start through a digest challenge, the API and `/metrics` show
/// it registered, and the refresh of a 10 s binding comes before it lapses.
fn registers_and_refreshes(transport: Transport) {
    let Some(sipp) = find_sipp() else { return };
    let scratch = common::TempDir::new(&format!("registrar-{transport}"));
    let (port, registrar) = start_registrar(
        sipp,
        "uas_registrar",
        transport,
        scratch.path().to_path_buf(),
    );
    let server = Server::start_with(
        &format!("trunk-register-{transport}"),
        ServerOptions {
            config: Some(trunk_config(
                port,
                transport,
                "username = \"acct\"\npassword = \"secret\"\nregister_expires = 600\n",
            )),
            ..ServerOptions::default()
        },
    );
    let (x, _) = wait_for_state(&server, "registered", Duration::from_secs(15));
    let left = x["registration"]["expires_in_secs"].as_u64().unwrap();
    assert!((1..=10).contains(&left), "the registrar granted 10 s: {x}");
    assert_eq!(x["up"], true);
    assert_eq!(
        sample(server.http, "switchboard_trunk_registered{trunk=\"x\"} "),
        Some(1.0)
    );
    assert_eq!(
        sample(server.http, "switchboard_trunk_up{trunk=\"x\"} "),
        Some(1.0)
    );
    // The scenario waits at most 9 s after its 10 s grant for the refresh: its success
    // means the refresh came before the binding lapsed, with valid credentials.
    let run = registrar.join().unwrap();
    assert!(
        run.success(),
        "registrar over {transport}\n{}\n{}",
        run.report(),
        server.log_text()
    );
    let (x, _) = wait_for_state(&server, "registered", Duration::from_secs(2));
    assert!(
        x["registration"]["expires_in_secs"].as_u64().unwrap() >= 5,
        "{x}"
    );
}

#[test]
fn trunk_registers_with_digest_and_refreshes_before_expiry_udp() {
    registers_and_refreshes(Transport::Udp);
}

/// Over TCP the server opens the connection to the registrar itself.
#[test]
fn trunk_registers_with_digest_and_refreshes_before_expiry_tcp() {
    registers_and_refreshes(Transport::Tcp);
}

/// A registrar answering 503 with Retry-After: 2: the trunk shows the failure, and the
/// REGISTER is retried about 2 s later and granted.
#[test]
fn trunk_registration_obeys_retry_after_of_a_503_udp() {
    let Some(sipp) = find_sipp() else { return };
    let scratch = common::TempDir::new("registrar-503");
    let (port, registrar) = start_registrar(
        sipp,
        "uas_registrar_503",
        Transport::Udp,
        scratch.path().to_path_buf(),
    );
    let server = Server::start_with(
        "trunk-register-503",
        ServerOptions {
            config: Some(trunk_config(port, Transport::Udp, "")),
            ..ServerOptions::default()
        },
    );
    let (x, failed_at) = wait_for_state(&server, "failed", Duration::from_secs(10));
    assert_eq!(x["registration"]["code"], 503, "{x}");
    let retry_in = x["registration"]["retry_in_secs"].as_u64().unwrap();
    assert!((1..=2).contains(&retry_in), "{x}");
    assert_eq!(
        sample(server.http, "switchboard_trunk_registered{trunk=\"x\"} "),
        Some(0.0)
    );
    let (x, registered_at) = wait_for_state(&server, "registered", Duration::from_secs(6));
    let waited = registered_at - failed_at;
    assert!(
        waited >= Duration::from_millis(1500) && waited <= Duration::from_millis(3500),
        "retried {waited:?} after the 503 was seen (Retry-After: 2)"
    );
    assert!(
        x["registration"]["expires_in_secs"].as_u64().unwrap() > 50,
        "{x}"
    );
    let run = registrar.join().unwrap();
    assert!(run.success(), "{}\n{}", run.report(), server.log_text());
}
