//! The command line: `check` and `simulate` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[test]
fn check_accepts_the_shipped_scripts() {
    let out = switchboard().args(["check", "scripts"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("9 scripts"));
}

#[test]
fn check_refuses_a_syntax_error_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("sb-check-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.rhai"), "answer();\nhangup();\n").unwrap();
    std::fs::write(dir.join("bad.rhai"), "answer();\nlet x = ;\n").unwrap();
    let out = switchboard().arg("check").arg(&dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.rhai:2:"), "{err}");
    assert!(!err.contains("good.rhai"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn simulate_prints_what_the_call_flow_did() {
    let out = switchboard()
        .args(["simulate", "scripts/ivr.rhai", "--input", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("answered"), "{text}");
    assert!(text.contains("collected \"0\""), "{text}");
    assert!(text.contains("played goodbye"), "{text}");
}

#[test]
fn help_explains_every_serve_option() {
    let out = switchboard().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--sip-listen",
        "--sip-ws-listen",
        "--sip-wss-listen",
        "--rtp-ports",
        "--http-listen",
        "--recordings",
        "--scripts",
        "--prompts",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[path = "common/mod.rs"]
mod common;

/// With periodic reloading off, SIGHUP makes the running server compile a changed script.
#[test]
fn sighup_reloads_changed_scripts() {
    let scripts = common::TempDir::new("sighup-scripts");
    let flow = scripts.path().join("flow.rhai");
    std::fs::write(&flow, "answer();\nhangup();\n").unwrap();
    let config = format!(
        "[paths]\nscripts = {:?}\n\n[scripts]\nreload_secs = 0\n\n[[dialplan]]\nexact = \"flow\"\nscript = \"flow\"\n",
        scripts.path().display().to_string()
    );
    let server = common::Server::start_with(
        "sighup",
        common::ServerOptions {
            config: Some(config),
            ..common::ServerOptions::default()
        },
    );
    std::fs::write(&flow, "answer();\nsleep(1000);\nhangup();\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&flow)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = server.log_text();
        if log.contains("scripts reloaded on SIGHUP") {
            assert!(log.contains("reloaded=[\"flow.rhai\"]"), "{log}");
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "no reload on SIGHUP\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
