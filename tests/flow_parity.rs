//! Every shipped script, run twice with the same caller: once in the simulator and once as a
//! live call (SIP over UDP, RFC 4733 keys over RTP, against the in-process server). The steps
//! the call took — the simulator's transcript and the live call's `call_step` events — must
//! be the same, since both run the same call core.
//!
//! The live caller presses its keys when the step before them is announced, as the
//! simulated caller presses keys at the first moment the call listens; lengths of time
//! (`echo ended after 0.2 s`) are compared as `N s`, and recording ids by their order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::events::Events;
use support::rtp::RtpPeer;
use support::server::{answered_port, start_with, wire, Server};
use switchboard::script::{CallInfo, Simulator};

/// What the live caller does when a step (or event) shows up.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Press keys (RFC 4733).
    Keys(&'static str),
    /// Hang up: BYE once answered, CANCEL before.
    Hangup,
}

/// One shipped script and one caller.
struct Case {
    /// The dialled user (the dialplan picks the script).
    user: &'static str,
    /// The script file.
    script: &'static str,
    /// Dialplan variables the rule gives the script.
    vars: &'static [(&'static str, &'static str)],
    /// The simulated caller's input.
    input: &'static str,
    /// The live caller: on the step starting with the text (or the event type in
    /// brackets), act.
    live: &'static [(&'static str, Act)],
}

const CASES: &[Case] = &[
    Case {
        user: "busy",
        script: "busy.rhai",
        vars: &[],
        input: "",
        live: &[],
    },
    Case {
        user: "ring",
        script: "ring.rhai",
        vars: &[],
        input: "hangup",
        live: &[("slept", Act::Hangup)],
    },
    Case {
        user: "echo",
        script: "echo.rhai",
        vars: &[],
        input: "#",
        live: &[("echo test", Act::Keys("#"))],
    },
    Case {
        user: "ivr",
        script: "ivr.rhai",
        vars: &[],
        input: "*",
        live: &[("played menu", Act::Keys("*"))],
    },
    Case {
        user: "ivr",
        script: "ivr.rhai",
        vars: &[],
        input: "3, #, *",
        live: &[
            ("played menu", Act::Keys("3")),
            ("echo test", Act::Keys("#")),
            ("played menu", Act::Keys("*")),
        ],
    },
    Case {
        user: "someone",
        script: "default.rhai",
        vars: &[],
        input: "*",
        live: &[("played menu", Act::Keys("*"))],
    },
    Case {
        user: "conf-7",
        script: "conference.rhai",
        vars: &[("room", "7")],
        input: "hangup",
        live: &[("joined conference", Act::Hangup)],
    },
    Case {
        user: "message",
        script: "message.rhai",
        vars: &[],
        input: "#",
        live: &[("[recording_started]", Act::Keys("#"))],
    },
    // Without a stream URL in its rule the bot says goodbye: the path that is the same live
    // and simulated (a simulated application never goes away by itself).
    Case {
        user: "bot",
        script: "bot.rhai",
        vars: &[],
        input: "",
        live: &[],
    },
    Case {
        user: "record",
        script: "voicemail.rhai",
        vars: &[],
        input: "#, #, #",
        live: &[
            ("[recording_started]", Act::Keys("#")),
            ("[recording_started]", Act::Keys("#")),
            ("[recording_started]", Act::Keys("#")),
        ],
    },
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Lengths of time become `N s`, so a live call's real timing compares with virtual time.
fn masked(step: &str) -> String {
    let re = regex::Regex::new(r"\d+\.\d s").unwrap();
    re.replace_all(step, "N s").into_owned()
}

/// The steps of the simulated call (the simulated caller's own lines left out).
fn simulated(case: &Case) -> Vec<String> {
    let info = CallInfo {
        to: case.user.into(),
        from: "<sip:parity@127.0.0.1>".into(),
        call_id: "parity".into(),
        vars: case
            .vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..CallInfo::default()
    };
    let t = Simulator::default()
        .prompts(root().join("prompts"))
        .call(info)
        .run_file(&root().join("scripts").join(case.script), case.input)
        .expect("the shipped script compiles");
    t.texts()
        .into_iter()
        .filter(|l| !l.starts_with("caller hung up"))
        .map(masked)
        .collect()
}

/// The steps of the live call, with recording ids replaced by the simulator's (`sim-N`).
async fn live(server: &Server, case: &Case) -> Vec<String> {
    let mut events = Events::open(server.http, "call_step,recording_started,call_ended").await;
    let mut rtp = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    uac.invite(
        Instant::now(),
        case.user,
        &support::uac::offer("127.0.0.1", rtp.port(), "sendrecv"),
    );
    let mut plan = case.live.iter().peekable();
    let mut steps = Vec::new();
    let mut recordings: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: the live call did not end; steps so far: {steps:?}",
            case.script
        );
        w.drive(&mut uac, Duration::from_millis(10), |_| false)
            .await;
        events
            .read(tokio::time::Instant::now() + Duration::from_millis(10))
            .await;
        for ev in events.take() {
            if ev["call_id"] != uac.call_id.as_str() {
                continue;
            }
            let kind = ev["type"].as_str().unwrap_or("");
            let seen = match kind {
                "call_ended" => {
                    w.flush(&mut uac).await;
                    return steps;
                }
                "call_step" => {
                    let mut step = ev["step"].as_str().unwrap().to_string();
                    for (n, id) in recordings.iter().enumerate() {
                        step = step.replace(id.as_str(), &format!("sim-{}", n + 1));
                    }
                    steps.push(masked(&step));
                    step
                }
                "recording_started" => {
                    recordings.push(ev["id"].as_str().unwrap().to_string());
                    "[recording_started]".to_string()
                }
                _ => continue,
            };
            if let Some((_, act)) = plan.next_if(|(on, _)| seen.starts_with(on)) {
                match act {
                    Act::Keys(keys) => {
                        let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
                        rtp.send_dtmf(media, keys).await;
                    }
                    Act::Hangup if uac.to_tag.is_some() && uac.answer.is_some() => {
                        uac.request(Instant::now(), "BYE", "", b"")
                    }
                    Act::Hangup => uac.cancel(Instant::now()),
                }
            }
        }
    }
}

#[tokio::test]
async fn every_shipped_script_takes_the_same_steps_live_and_simulated() {
    let server = start_with((45400, 45499), |c| {
        c.dialplan.insert(0, support::scripts::rule("bot", "bot", &[]));
    })
    .await;
    let mut covered: Vec<&str> = Vec::new();
    for case in CASES {
        let want = simulated(case);
        assert!(!want.is_empty(), "{}: no steps simulated", case.script);
        let got = live(&server, case).await;
        eprintln!("{} {:?}: {got:?}", case.script, case.input);
        assert_eq!(
            got, want,
            "{} with {:?}: live steps (left) differ from the simulation (right)",
            case.script, case.input
        );
        covered.push(case.script);
    }
    server.stop().await;
    // Every script the project ships is compared.
    for entry in std::fs::read_dir(root().join("scripts")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".rhai") {
            assert!(covered.contains(&name.as_str()), "{name} is not compared");
        }
    }
}
