//! The speech verbs through the simulator: the same call core and ear as a live call, the
//! caller's words synthesized and heard frame by frame on the virtual clock.

use std::time::Duration;

use super::*;

fn run(src: &str, input: &str) -> Transcript {
    Simulator::default()
        .run_source("t.rhai", src, input)
        .expect("compiles")
}

/// The line starting with `prefix`, and when.
fn line<'a>(t: &'a Transcript, prefix: &str) -> &'a TranscriptLine {
    t.lines
        .iter()
        .find(|l| l.text.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{t}"))
}

fn sphinx() -> bool {
    let here = crate::speech::asr::pocketsphinx_available();
    assert!(
        here || std::env::var_os("CI").is_none(),
        "CI needs PocketSphinx: apt install libpocketsphinx3 pocketsphinx-en-us"
    );
    here
}

#[test]
fn say_lasts_as_long_as_its_speech() {
    let t = run(
        r#"answer(); say("Your call is important to us."); hangup();"#,
        "",
    );
    let said = line(&t, "said \"Your call is important to us.\"");
    let hung = line(&t, "hung up");
    let spoken = flite_rs::Engine::new().synthesize("Your call is important to us.");
    let want = Duration::from_secs_f32(spoken.duration_seconds());
    let took = hung.at - said.at;
    assert!(
        took.abs_diff(want) <= Duration::from_millis(20),
        "{took:?} vs {want:?}\n{t}"
    );
}

#[test]
fn bad_say_options_are_script_errors_naming_them() {
    for (src, msg) in [
        (r#"say("")"#, "say(): empty text"),
        (
            r#"say("hi", #{voice: "nobody"})"#,
            "say(): unknown voice \"nobody\"",
        ),
        (
            r#"say("hi", #{rate: 3.0})"#,
            "say: rate must be a number from 0.5 to 2",
        ),
        (r#"say("hi", #{speed: 1})"#, "say: unknown option \"speed\""),
        (r#"listen(#{timeout_ms: 0})"#, "listen: timeout_ms must be"),
        (
            r#"listen(#{choices: [1, 2]})"#,
            "listen: choices must be strings",
        ),
        (
            r#"wait_for_beep(#{timeout_ms: 999999})"#,
            "wait_for_beep: timeout_ms must be",
        ),
        (
            r#"wait_for_beep(#{timeout_ms: 0})"#,
            "wait_for_beep: timeout_ms must be",
        ),
        (
            r#"amd(#{greeting: 0})"#,
            "amd: greeting must be between 20 and 60000, not 0",
        ),
        (
            r#"amd(#{silence_threshold: 40000})"#,
            "amd: silence_threshold must be between 1 and 32767",
        ),
        (
            r#"amd(#{total_analysis_time: 100})"#,
            "amd: total_analysis_time must be between 500",
        ),
        (
            r#"amd(#{maximum_number_of_words: 0})"#,
            "amd: maximum_number_of_words must be between 1",
        ),
        (
            r#"amd(#{greting: 1500})"#,
            "amd: unknown option \"greting\"",
        ),
        (r#"listen(#{max_ms: 50})"#, "listen: max_ms must be"),
        (
            r#"listen(#{end_silence_ms: 20000})"#,
            "listen: end_silence_ms must be",
        ),
        (
            r#"listen(#{choices: ["a", " "]})"#,
            "listen: a choice is empty",
        ),
        (
            r#"listen(#{choices: 5})"#,
            "listen: choices must be an array of strings",
        ),
        (
            r#"dial("sip:a@127.0.0.1", #{amd: "yes"})"#,
            "dial: amd must be true, false or a map",
        ),
    ] {
        let t = run(&format!("answer(); {src};"), "");
        let ScriptOutcome::Error(e) = &t.outcome else {
            panic!("{src}: {:?}", t.outcome);
        };
        assert!(e.to_string().contains(msg), "{src}: {e}");
    }
}

const LISTEN_ONLY: &str = r#"
let r = listen(#{choices: ["sales", "support", "billing"], timeout_ms: 3000});
log(`${r.reason} ${r.choice} ${r.key}`);
"#;

/// Answers, then listens.
fn listen_after(first: &str) -> String {
    format!("answer(); {first} {LISTEN_ONLY}")
}

#[test]
fn listen_ends_with_no_input_at_its_timeout_or_with_a_key() {
    let t = run(&listen_after(""), "");
    let heard = line(&t, "heard nothing (no-input)");
    let answered = line(&t, "answered");
    assert_eq!(heard.at - answered.at, Duration::from_millis(3000), "{t}");
    assert!(t.contains("log: no-input"), "{t}");

    let t = run(&listen_after(""), "wait 1s, 2");
    assert_eq!(line(&t, "heard key 2").at, Duration::from_secs(1), "{t}");
    assert!(t.contains("log: key  2"), "{t}");

    // A key pressed during a barge-in prompt answers the listen that follows at once.
    let t = run(
        &listen_after(r#"say("Press or say one of the departments now.", #{barge_in: true});"#),
        "wait 500ms, 3",
    );
    assert!(t.contains("interrupted by 3"), "{t}");
    assert_eq!(
        line(&t, "heard key 3").at,
        Duration::from_millis(500),
        "{t}"
    );
}

#[test]
fn a_caller_who_says_a_choice_is_heard() {
    if !sphinx() {
        return;
    }
    let t = run(&listen_after(""), "wait 500ms, say support");
    assert!(t.contains("log: speech support"), "{t}");
    // The utterance ends 800 ms (the end silence) after the word's last sound.
    let spoken = flite_rs::Engine::new().synthesize("support");
    let last_sound = spoken
        .samples
        .chunks(160)
        .rposition(|f| crate::media::level::rms_dbfs(f) > -40.0)
        .unwrap() as u64
        + 1;
    let word_end = Duration::from_millis(500 + last_sound * 20);
    let heard = line(&t, "heard \"");
    let after = heard.at.saturating_sub(word_end);
    assert!(
        (Duration::from_millis(700)..=Duration::from_millis(1000)).contains(&after),
        "{after:?}\n{t}"
    );
}

#[test]
fn a_log_line_between_a_barge_in_say_and_listen_keeps_the_answer() {
    if !sphinx() {
        return;
    }
    let t = run(
        &listen_after(
            r#"say("Which department do you need? Sales, support or billing?", #{barge_in: true}); log("asked");"#,
        ),
        "wait 1s, say billing",
    );
    assert!(t.contains("interrupted by speech"), "{t}");
    assert!(t.contains("log: speech billing"), "{t}");
}

#[test]
fn speaking_stops_a_barge_in_say_and_listen_gets_the_answer() {
    let recognise = sphinx();
    let src = r#"
answer();
say("Welcome. Please tell me which department you need: sales, support or billing.", #{barge_in: true});
let r = listen(#{choices: ["sales", "support", "billing"]});
log(`${r.reason} ${r.choice}`);
"#;
    if !recognise {
        return;
    }
    let t = run(src, "wait 1s, say billing");
    let stopped = line(&t, "interrupted by speech");
    assert!(
        stopped.at >= Duration::from_secs(1) && stopped.at <= Duration::from_millis(1400),
        "{t}"
    );
    assert!(t.contains("log: speech billing"), "{t}");
}

#[test]
fn amd_hears_a_machine_in_silence_and_a_person_who_says_hello() {
    let src = r#"answer(); let r = amd(); log(`${r.status} ${r.cause}`);"#;
    let t = run(src, "");
    assert!(t.contains("log: MACHINE INITIALSILENCE"), "{t}");
    assert_eq!(
        line(&t, "answering machine detection").at,
        Duration::from_millis(2500),
        "{t}"
    );
    let t = run(src, "wait 300ms, say Hello?");
    assert!(t.contains("log: HUMAN"), "{t}");
}

#[test]
fn a_screened_dial_leaves_a_silent_far_end_as_a_machine() {
    // A simulated far end says nothing: past the initial silence it is a machine.
    let t = run(
        r#"answer(); let r = dial("sip:bob@127.0.0.1", #{amd: true}); log(`${r.outcome} ${r.amd.cause}`);"#,
        "",
    );
    assert!(t.contains("log: machine INITIALSILENCE-2500-2500"), "{t}");
    assert!(!t.contains("bridged"), "{t}");
}

#[test]
fn a_placed_call_with_amd_gives_its_script_the_verdict() {
    let t = Simulator::default()
        .call(CallInfo {
            outbound: true,
            amd: true,
            ..CallInfo::default()
        })
        .run_source("t.rhai", "log(session.amd.status);", "")
        .unwrap();
    assert!(t.contains("log: MACHINE"), "{t}");
}
