//! The script API, limits, errors and shipped scripts, through the simulator.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `src` with 2 s prompts and `input`.
fn run(src: &str, input: &str) -> Transcript {
    Simulator::default()
        .run_source("t.rhai", src, input)
        .expect("compiles")
}

/// Runs a shipped script with the shipped prompts.
fn shipped(name: &str, input: &str, vars: &[(&str, &str)]) -> Transcript {
    let info = CallInfo {
        to: name.trim_end_matches(".rhai").into(),
        from: "<sip:alice@example.com>".into(),
        call_id: "c1".into(),
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..CallInfo::default()
    };
    let t = Simulator::default()
        .prompts(root().join("prompts"))
        .call(info)
        .run_file(&root().join("scripts").join(name), input)
        .expect("compiles");
    assert!(
        !t.contains("not played"),
        "a shipped script played a missing prompt:\n{t}"
    );
    t
}

fn at(t: &Transcript, s: &str) -> Duration {
    t.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{t}")).at
}

fn error_of(t: &Transcript) -> &ScriptError {
    match &t.outcome {
        ScriptOutcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}\n{t}"),
    }
}

// --- every verb -------------------------------------------------------------------------

#[test]
fn answer_ring_and_hangup() {
    let t = run("ring(); answer(); hangup(); log(\"never\");", "");
    assert_eq!(t.texts(), ["ringing", "answered", "hung up"]);
    assert_eq!(t.outcome, ScriptOutcome::Finished);
}

#[test]
fn early_media_plays_before_the_answer() {
    let t = run("early_media(); play(\"x\"); hangup(486);", "");
    assert_eq!(t.texts(), ["early media", "played x", "refused with 486"]);
    let t = run("early_media(); play(\"x\"); answer(); play(\"y\");", "");
    assert_eq!(
        t.texts(),
        [
            "early media",
            "played x",
            "answered",
            "played y",
            "hung up (script ended)"
        ]
    );
}

#[test]
fn hangup_with_a_cause_refuses_an_unanswered_call() {
    let t = run("hangup(486);", "");
    assert_eq!(t.texts(), ["refused with 486"]);
    let t = run("hangup(200);", "");
    assert!(error_of(&t).message.contains("400-699"));
}

#[test]
fn play_one_or_many_prompts_takes_their_time() {
    let t = run(
        "answer(); play(\"welcome\"); play([\"a\", \"b\"]); log(\"x\");",
        "",
    );
    assert_eq!(at(&t, "played a, b"), Duration::from_secs(2));
    assert_eq!(at(&t, "log: x"), Duration::from_secs(6));
}

#[test]
fn play_without_barge_in_is_not_interrupted() {
    let t = run(
        "answer(); play(\"welcome\"); let d = collect(); log(d);",
        "5",
    );
    assert!(!t.contains("interrupted"));
    assert_eq!(at(&t, "collected \"5\""), Duration::from_secs(2));
}

#[test]
fn play_with_barge_in_stops_at_a_key() {
    let t = run(
        "answer(); play(\"welcome\", #{barge_in: true}); log(\"after\");",
        "wait 500ms, 1",
    );
    assert_eq!(at(&t, "interrupted by 1"), Duration::from_millis(500));
    assert_eq!(at(&t, "log: after"), Duration::from_millis(500));
}

#[test]
fn say_digits_and_say_number_speak_digit_by_digit() {
    let t = run("say_digits(\"907\"); say_number(42); say_digits(5);", "");
    assert!(t.contains("played digits/9, digits/0, digits/7"));
    assert!(t.contains("played digits/4, digits/2"));
    assert!(t.contains("played digits/5"));
    let t = run("say_number(-3);", "");
    assert!(error_of(&t).message.contains("negative"));
    let t = run("say_digits(\"1*\");", "");
    assert!(error_of(&t).message.contains("only 0-9"));
}

#[test]
fn tone_plays_a_finite_spec() {
    let t = run("tone(\"1000/400\"); log(\"x\");", "");
    assert!(t.contains("tone 400 ms"));
    assert_eq!(at(&t, "log: x"), Duration::from_millis(400));
    let t = run("tone(\"440+480/2000/4000\");", "");
    assert!(error_of(&t).message.contains("never ends"));
    let t = run("tone(\"nonsense\");", "");
    assert!(error_of(&t).message.starts_with("tone:"));
}

#[test]
fn silence_and_sleep_take_their_time() {
    let t = run("silence(1500); sleep(250); log(\"x\");", "");
    assert_eq!(at(&t, "log: x"), Duration::from_millis(1750));
    let t = run("sleep(-1);", "");
    assert!(error_of(&t).message.contains("out of range"));
}

#[test]
fn collect_returns_a_string_or_unit() {
    let src = "let d = collect(#{max: 4}); log(type_of(d), d);";
    let t = run(src, "12#");
    assert!(t.contains("log: string 12"), "{t}");
    let t = run(src, "");
    assert!(t.contains("log: () "), "{t}");
}

#[test]
fn collect_options_are_checked() {
    let t = run("collect(#{min: 3, max: 2});", "");
    assert_eq!(error_of(&t).line, Some(1));
    let t = run("collect(#{maxx: 2});", "");
    assert!(error_of(&t).message.contains("unknown option \"maxx\""));
    let t = run("collect(#{regex: \"(\"});", "");
    assert!(error_of(&t).message.contains("bad regex"));
}

#[test]
fn collect_rules_hold_through_the_simulator() {
    // Timeouts, terminators, max and tries, end to end with 2 s prompts.
    let src = r#"let d = collect(#{prompt: "p", invalid_prompt: "bad", min: 2, max: 4,
        tries: 2, regex: "1.*", first_digit_timeout: 3000, inter_digit_timeout: 1000});
        log(d);"#;
    // "9#" is invalid (regex), then "1234" reaches max.
    let t = run(src, "9#, 1234");
    assert_eq!(
        t.texts()[..4],
        ["answered", "played p", "interrupted by 9", "played bad"]
    );
    assert!(t.contains("collected \"1234\""), "{t}");
    // Nothing: prompt, 3 s, invalid, prompt, 3 s, invalid, ().
    let t = run(src, "");
    assert_eq!(at(&t, "collected nothing"), Duration::from_secs(14));
    // A single digit then the inter-digit timeout: too short.
    let t = run(src, "wait 2s, 1, wait 5s, 15");
    assert_eq!(at(&t, "played bad"), Duration::from_secs(3));
    assert!(t.contains("collected \"15\""), "{t}");
}

#[test]
fn barge_in_keys_are_type_ahead_for_the_next_collect() {
    let src = r#"answer();
        play(["welcome", "menu"], #{barge_in: true});
        let d = collect(#{prompt: "enter-room", max: 3});
        log(d);"#;
    let t = run(src, "wait 1s, 12, 3");
    assert_eq!(at(&t, "interrupted by 1"), Duration::from_secs(1));
    assert!(!t.contains("played enter-room"), "prompt skipped:\n{t}");
    assert!(t.contains("collected \"123\""), "{t}");
}

#[test]
fn record_reports_id_duration_digits_and_reason() {
    let src = r#"let r = record(#{file: "msg-1", max_secs: 30, silence_secs: 4});
        log(r.id, r.duration_ms, r.reason + "/" + r.digits);"#;
    let t = run(src, "wait 10s, 5#");
    // Beep 250 ms, keys pressed at 10 s and 10.1 s.
    assert!(t.contains("log: msg-1 9850 terminator/5#"), "{t}");
    // Silent caller: stopped by silence, nothing kept.
    let t = run(src, "");
    assert!(t.contains("log: msg-1 0 silence/"), "{t}");
    // A caller talking for a minute hits max_secs.
    let t = run(src, "wait 60s");
    assert!(t.contains("log: msg-1 30000 max_duration/"), "{t}");
}

#[test]
fn record_min_and_hangup() {
    let t = run(
        "let r = record(#{min_secs: 2, beep: false}); log(r.discarded);",
        "wait 1s, #",
    );
    assert!(t.contains("recorded 1.0 s (terminator), discarded"), "{t}");
    assert!(t.contains("log: true"));
    let t = run("record(); log(\"after\");", "wait 3s, hangup");
    assert!(t.contains("recorded 2.8 s (hangup)"), "{t}");
    assert!(!t.contains("log: after"));
    assert_eq!(t.outcome, ScriptOutcome::Stopped(StopCause::Hangup));
}

#[test]
fn recordings_can_be_played_back_and_discarded() {
    let t = run(
        r#"let r = record(#{beep: false}); play("recording:" + r.id); discard_recording(r.id);
           play("recording:" + r.id);"#,
        "wait 3s, #",
    );
    assert!(t.contains("played recording:sim-1"));
    assert!(t.contains("discarded recording sim-1"));
    assert!(t.contains("recording sim-1 not played"));
}

#[test]
fn conference_asks_for_the_pin() {
    let src = r#"let why = conference(42, #{pin: "1234", moderator_pin: 9999, muted: true});
        log(why);"#;
    let t = run(src, "1234#");
    assert!(t.contains("played enter-pin"));
    assert!(t.contains("joined conference 42 (muted)"), "{t}");
    let t = run(src, "9999#");
    assert!(t.contains("joined conference 42 (moderator, muted)"), "{t}");
    let t = run(src, "1#, 2#, 3#");
    assert!(t.contains("log: bad_pin"), "{t}");
    assert!(!t.contains("joined"));
}

#[test]
fn conference_without_pin_returns_when_the_caller_leaves() {
    let t = run("conference(\"sales\"); log(\"after\");", "wait 30s, hangup");
    assert!(t.contains("joined conference sales"));
    assert_eq!(at(&t, "caller hung up"), Duration::from_secs(30));
    assert!(!t.contains("log: after"));
}

#[test]
fn send_dtmf_and_transfer() {
    let t = run(
        "answer(); send_dtmf(\"12#\"); transfer(\"sip:bob@example.com\"); log(\"never\");",
        "",
    );
    assert!(t.contains("sent DTMF 12#"));
    // Three keys of 190 ms each (100 ms tone, 70 ms gap, a frame of slack), as on a live call.
    assert_eq!(
        at(&t, "transferred to sip:bob@example.com"),
        Duration::from_millis(570)
    );
    assert!(!t.contains("never"));
    assert_eq!(t.outcome, ScriptOutcome::Finished);
    let t = run("send_dtmf(\"1x\");", "");
    assert!(error_of(&t).message.contains("not a DTMF key"));
    let t = run("transfer(\"bob\");", "");
    assert!(error_of(&t).message.contains("not a sip:"));
}

#[test]
fn echo_until_hash_or_limit() {
    let t = run("echo(); log(\"x\");", "wait 4s, #");
    assert!(t.contains("echo ended after 4.0 s"), "{t}");
    let t = run("echo(1000);", "");
    assert!(t.contains("echo ended after 1.0 s"), "{t}");
}

#[test]
fn log_and_print_go_to_the_transcript() {
    let t = run("log(\"a\"); log(\"b\", 2); log(1, 2, 3); print(\"p\");", "");
    assert_eq!(
        t.texts()[..4],
        ["log: a", "log: b 2", "log: 1 2 3", "log: p"]
    );
}

#[test]
fn session_is_visible_everywhere_and_read_only() {
    let mut info = CallInfo {
        from: "<sip:alice@example.com>".into(),
        to: "ivr".into(),
        call_id: "abc".into(),
        auth_user: "alice".into(),
        ..CallInfo::default()
    };
    info.headers.insert("user-agent".into(), "phone".into());
    info.vars.insert("lang".into(), "en".into());
    let sim = Simulator::default().call(info);
    let t = sim
        .run_source(
            "t.rhai",
            r#"fn who() { session.from }
               log(who(), session.to, session.call_id);
               log(session.headers["user-agent"], session.vars.lang, session.vars.none);"#,
            "",
        )
        .unwrap();
    assert!(t.contains("log: <sip:alice@example.com> ivr abc"), "{t}");
    assert!(t.contains("log: phone en "), "{t}");
    let t = sim
        .run_source("t.rhai", "log(`[${session.auth_user}]`);", "")
        .unwrap();
    assert!(t.contains("log: [alice]"), "{t}");
    let anonymous = Simulator::default().call(CallInfo::default());
    let t = anonymous
        .run_source("t.rhai", "log(`[${session.auth_user}]`);", "")
        .unwrap();
    assert!(
        t.contains("log: []"),
        "no authentication, an empty name: {t}"
    );
    let t = sim.run_source("t.rhai", "session.to = \"x\";", "").unwrap();
    assert!(matches!(t.outcome, ScriptOutcome::Error(_)), "{t}");
}

#[test]
fn a_failed_verb_is_catchable_but_a_hangup_is_not() {
    let t = run(
        r#"try { play("x", #{nope: 1}); } catch (e) { log("caught"); }"#,
        "",
    );
    assert!(t.contains("log: caught"));
    let t = run(
        r#"answer(); loop { try { play("welcome"); } catch { log("swallowed"); } }"#,
        "wait 3s, hangup",
    );
    assert!(!t.contains("swallowed"));
    assert_eq!(t.outcome, ScriptOutcome::Stopped(StopCause::Hangup));
}

// --- errors and limits ------------------------------------------------------------------

#[test]
fn a_runtime_error_names_file_and_line() {
    let t = run("answer();\nlet x = 1;\nx.nope();\n", "");
    let e = error_of(&t);
    assert_eq!((e.file.as_str(), e.line), ("t.rhai", Some(3)));
    assert!(e.to_string().starts_with("t.rhai:3:"), "{e}");
    // Inside a function: the line in the function, not the call's.
    let t = run("fn f() {\n  1 / 0\n}\n\nf();", "");
    assert_eq!(error_of(&t).line, Some(2));
    assert!(error_of(&t).message.contains("in f()"));
}

#[test]
fn a_verb_error_points_at_the_call() {
    let t = run("answer();\n\n  play(\"\");", "");
    let e = error_of(&t);
    assert_eq!((e.line, e.column), (Some(3), Some(3)));
    assert_eq!(e.message, "play: empty prompt name");
}

#[test]
fn an_endless_loop_is_stopped_by_the_operation_limit() {
    let limits = ScriptLimits {
        max_operations: 100_000,
        ..ScriptLimits::default()
    };
    let t = Simulator::new(&limits)
        .run_source("t.rhai", "answer();\nloop {}", "")
        .unwrap();
    match &t.outcome {
        ScriptOutcome::Stopped(StopCause::Limit(l)) => assert!(l.contains("operations"), "{l}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_recursion_is_stopped() {
    let t = run("fn f(n) { f(n + 1) }\nf(0);", "");
    match &t.outcome {
        ScriptOutcome::Stopped(StopCause::Limit(l)) => assert!(l.contains("Stack overflow"), "{l}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_growing_string_is_stopped() {
    let t = run("let s = \"xx\"; loop { s += s; }", "");
    assert!(
        matches!(&t.outcome, ScriptOutcome::Stopped(StopCause::Limit(l)) if l.contains("too large")),
        "{:?}",
        t.outcome
    );
}

#[test]
fn a_hangup_during_play_stops_the_script_at_its_next_step() {
    let t = run(
        "answer(); play(\"menu\"); log(\"after\"); play(\"x\");",
        "wait 1s, hangup",
    );
    assert_eq!(at(&t, "caller hung up"), Duration::from_secs(1));
    assert!(!t.contains("after"));
    assert_eq!(t.outcome, ScriptOutcome::Stopped(StopCause::Hangup));
}

/// A call side on a thread of its own, answering every request with `Done`.
fn fake_call_task(
    mut rx: tokio::sync::mpsc::Receiver<ScriptRequest>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while let Some(r) = rx.blocking_recv() {
            n += 1;
            r.reply(CallReply::Done);
        }
        n
    })
}

#[test]
fn hangup_stops_a_busy_loop_through_the_runner() {
    let engine = Arc::new(build_engine(&ScriptLimits {
        max_operations: 0, // unlimited: only the hangup can stop it
        ..ScriptLimits::default()
    }));
    let ast = Arc::new(compile_source(&engine, "t.rhai", "answer(); loop { }").unwrap());
    let (port, rx) = channel_port();
    let task = fake_call_task(rx);
    let h = spawn_script(ast, engine, CallInfo::default(), Box::new(port));
    std::thread::sleep(Duration::from_millis(50));
    h.hangup();
    assert_eq!(h.join_blocking(), ScriptOutcome::Stopped(StopCause::Hangup));
    assert_eq!(task.join().unwrap(), 1);
}

#[test]
fn the_runner_carries_requests_and_replies() {
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let ast =
        Arc::new(compile_source(&engine, "t.rhai", "answer(); play(\"a\"); sleep(5);").unwrap());
    let (port, rx) = channel_port();
    let task = fake_call_task(rx);
    let h = spawn_script(ast, engine, CallInfo::default(), Box::new(port));
    assert_eq!(h.join_blocking(), ScriptOutcome::Finished);
    assert_eq!(task.join().unwrap(), 3);
}

#[test]
fn a_call_task_that_goes_away_stops_the_script() {
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let ast = Arc::new(compile_source(&engine, "t.rhai", "answer(); log(1);").unwrap());
    let (port, rx) = channel_port();
    drop(rx);
    let h = spawn_script(ast, engine, CallInfo::default(), Box::new(port));
    assert_eq!(h.join_blocking(), ScriptOutcome::Stopped(StopCause::Hangup));
}

// --- files ------------------------------------------------------------------------------

/// A fresh folder under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchboard-script-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn check_dir_reports_syntax_errors_as_file_line() {
    let d = temp_dir("check");
    std::fs::write(d.join("good.rhai"), "answer();").unwrap();
    std::fs::write(d.join("bad.rhai"), "answer();\nlet = 3;\n").unwrap();
    std::fs::write(d.join("notes.txt"), "not a script").unwrap();
    let errs = check_dir(&d).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].to_string().starts_with("bad.rhai:2:"),
        "{}",
        errs[0]
    );
    std::fs::remove_file(d.join("bad.rhai")).unwrap();
    assert_eq!(check_dir(&d), Ok(1));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_shipped_scripts_compile() {
    assert_eq!(check_dir(&root().join("scripts")), Ok(9));
}

#[test]
fn reload_picks_up_changes_and_keeps_old_asts_alive() {
    let d = temp_dir("reload");
    let set_mtime = |name: &str, secs: u64| {
        let f = std::fs::File::options()
            .write(true)
            .open(d.join(name))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    };
    std::fs::write(d.join("default.rhai"), "log(\"v1\");").unwrap();
    set_mtime("default.rhai", 1_000);
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let set = ScriptSet::load(&d, engine.clone()).unwrap();
    let old = set.get("default.rhai").unwrap();
    assert_eq!(set.reload_if_changed(), ReloadReport::default());

    std::fs::write(d.join("default.rhai"), "log(\"v2\");").unwrap();
    set_mtime("default.rhai", 2_000);
    std::fs::write(d.join("sales.rhai"), "log(\"sales\");").unwrap();
    let r = set.reload_if_changed();
    assert_eq!(r.reloaded, ["default.rhai", "sales.rhai"]);
    assert!(set.get("sales.rhai").is_some());

    // The call that started on v1 still runs v1.
    let sim = Simulator::with_engine(engine);
    assert!(sim.run_ast(&old, "").unwrap().contains("log: v1"));
    let new = set.get("default.rhai").unwrap();
    assert!(sim.run_ast(&new, "").unwrap().contains("log: v2"));

    // A broken edit keeps the previous version.
    std::fs::write(d.join("default.rhai"), "log(").unwrap();
    set_mtime("default.rhai", 3_000);
    let r = set.reload_if_changed();
    assert_eq!(r.errors.len(), 1);
    assert_eq!(
        set.reload_if_changed(),
        ReloadReport::default(),
        "reported once"
    );
    assert!(sim
        .run_ast(&set.get("default.rhai").unwrap(), "")
        .unwrap()
        .contains("log: v2"));

    std::fs::remove_file(d.join("sales.rhai")).unwrap();
    assert_eq!(set.reload_if_changed().removed, ["sales.rhai"]);
    assert!(set.get("sales.rhai").is_none());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn simulate_runs_a_file_and_rejects_bad_input() {
    let t = simulate(
        &root().join("scripts/echo.rhai"),
        "echo",
        "<sip:a@b>",
        "wait 2s, #",
        Some(&root().join("prompts")),
    )
    .unwrap();
    assert!(t.to_string().contains("echo ended after 1.8 s"), "{t}");
    let e = simulate(&root().join("scripts/echo.rhai"), "e", "f", "wait x", None).unwrap_err();
    assert_eq!(e.file, "input");
    assert!(parse_input("1, wait 1.5s, wait 200ms, *#, hangup").is_ok());
    assert!(parse_input("1, wat 3s").is_err());
}

// --- shipped scripts --------------------------------------------------------------------

#[test]
fn default_welcomes_then_offers_the_menu() {
    let t = shipped("default.rhai", "*", &[]);
    assert_eq!(
        t.texts(),
        [
            "answered",
            "played welcome",
            "played menu",
            "interrupted by *",
            "collected \"*\"",
            "played goodbye",
            "hung up"
        ]
    );
}

#[test]
fn ivr_without_input_times_out_three_times_then_says_goodbye() {
    let t = shipped("ivr.rhai", "", &[]);
    assert_eq!(t.texts().iter().filter(|l| **l == "played menu").count(), 3);
    assert_eq!(
        t.texts().iter().filter(|l| **l == "played invalid").count(),
        3
    );
    assert!(t
        .texts()
        .ends_with(&["collected nothing", "played goodbye", "hung up"]));
    assert_eq!(t.outcome, ScriptOutcome::Finished);
}

#[test]
fn ivr_invalid_choice_plays_invalid_and_the_menu_again() {
    let t = shipped("ivr.rhai", "7, wait 5s, *", &[]);
    let texts = t.texts();
    let i = texts.iter().position(|l| *l == "interrupted by 7").unwrap();
    assert_eq!(texts[i + 1..i + 3], ["played invalid", "played menu"]);
    assert!(t.contains("collected \"*\""));
    assert!(t.contains("played goodbye"));
}

#[test]
fn ivr_2_leaves_a_message() {
    let t = shipped("ivr.rhai", "2, wait 15s, #, wait 12s, 1", &[]);
    for l in [
        "played record-after-tone",
        "beep",
        "recorded",
        "played recording:sim-1",
        "played voicemail/options",
        "played voicemail/saved",
        "played goodbye",
    ] {
        assert!(t.contains(l), "{l} missing:\n{t}");
    }
}

#[test]
fn ivr_1_joins_a_conference_with_its_pin() {
    let vars = [("pin_77", "4321")];
    let t = shipped("ivr.rhai", "1, 77#, 4321#, wait 60s, hangup", &vars);
    assert!(t.contains("played enter-pin"), "{t}");
    assert!(t.contains("joined conference 77"), "{t}");
    let t = shipped("ivr.rhai", "1, 77#, 1#, 2#, 3#, *", &vars);
    assert!(t.contains("log: left conference: bad_pin"), "{t}");
    assert!(!t.contains("joined"));
    assert!(t.contains("played goodbye"));
}

#[test]
fn ivr_3_echo_then_9_repeats_then_star_leaves() {
    let t = shipped("ivr.rhai", "3, wait 4s, #, 9, *", &[]);
    assert!(t.contains("echo test"));
    assert_eq!(
        t.texts().iter().filter(|l| **l == "played menu").count(),
        3,
        "{t}"
    );
    assert!(t.texts().ends_with(&["played goodbye", "hung up"]));
}

#[test]
fn ivr_0_puts_the_caller_through_to_the_operator() {
    let t = shipped(
        "ivr.rhai",
        "0, wait 20s, hangup",
        &[("operator", "sip:operator@127.0.0.1:5070")],
    );
    assert!(
        t.contains("bridged with sip:operator@127.0.0.1:5070"),
        "{t}"
    );
    // Busy: the caller hears why, then goodbye.
    let t = shipped("ivr.rhai", "0", &[("operator", "sip:busy@127.0.0.1:5070")]);
    assert!(t.contains("log: operator busy 486"), "{t}");
    assert!(
        t.texts()
            .ends_with(&["played operator-unavailable", "played goodbye", "hung up"]),
        "{t}"
    );
    // No operator configured.
    let t = shipped("default.rhai", "0", &[]);
    assert!(!t.contains("dialling"), "{t}");
    assert!(t.contains("played operator-unavailable"), "{t}");
}

#[test]
fn voicemail_rerecords_then_keeps() {
    let t = shipped("voicemail.rhai", "wait 10s, #, 2, wait 20s, #, 1", &[]);
    assert!(t.contains("discarded recording sim-1"), "{t}");
    assert!(t.contains("played recording:sim-2"), "{t}");
    assert!(t.contains("played voicemail/saved"));
    assert!(t.texts().ends_with(&["played goodbye", "hung up"]));
}

#[test]
fn voicemail_too_short_asks_again_and_silence_keeps() {
    // A silent caller: every try is too short (0 s < 1 s), three tries, goodbye.
    let t = shipped("voicemail.rhai", "", &[]);
    assert_eq!(
        t.texts().iter().filter(|l| l.contains("discarded")).count(),
        3,
        "{t}"
    );
    assert!(!t.contains("saved"));
    // No choice after playback: the message is kept.
    let t = shipped("voicemail.rhai", "wait 12s", &[]);
    assert!(t.contains("recorded"), "{t}");
    assert!(t.contains("played voicemail/saved"), "{t}");
}

#[test]
fn voicemail_hangup_while_recording_keeps_the_message() {
    let t = shipped("voicemail.rhai", "wait 15s, hangup", &[]);
    assert!(t.contains("(hangup)"), "{t}");
    assert!(!t.contains("discarded"));
    assert_eq!(t.outcome, ScriptOutcome::Stopped(StopCause::Hangup));
}

#[test]
fn conference_script_uses_room_and_pin_vars() {
    let t = shipped("conference.rhai", "wait 5s, hangup", &[("room", "9")]);
    assert!(t.contains("joined conference 9"), "{t}");
    let t = shipped("conference.rhai", "wait 5s, hangup", &[]);
    assert!(t.contains("joined conference 1000"), "{t}");
    let vars = [("pin", "11"), ("moderator_pin", "22")];
    let t = shipped("conference.rhai", "22#, hangup", &vars);
    assert!(t.contains("joined conference 1000 (moderator)"), "{t}");
    let t = shipped("conference.rhai", "1#, 2#, 3#", &vars);
    assert!(t.texts().ends_with(&["played goodbye", "hung up"]), "{t}");
}

#[test]
fn echo_script_echoes_until_hash() {
    let t = shipped("echo.rhai", "wait 3s, #", &[]);
    assert_eq!(
        t.texts(),
        [
            "answered",
            "played beep",
            "echo test",
            "echo ended after 2.8 s",
            "played goodbye",
            "hung up"
        ]
    );
    let t = shipped("echo.rhai", "", &[]);
    assert!(t.contains("echo ended after 300.0 s"), "{t}");
}

#[test]
fn message_script_records_after_the_greeting_then_says_goodbye() {
    let t = shipped("message.rhai", "wait 1s, #", &[]);
    assert!(matches!(t.outcome, ScriptOutcome::Finished), "{t}");
    let texts = t.texts();
    assert_eq!(texts[0], "answered");
    assert_eq!(texts[1], "played welcome, record-after-tone, beep");
    assert!(texts[2].starts_with("recorded "), "{t}");
    assert!(texts[2].contains("(terminator)"), "{t}");
    assert!(t.contains("log: message sim-1 terminator"), "{t}");
    assert_eq!(&texts[texts.len() - 2..], ["played goodbye", "hung up"]);
}

#[test]
fn test_number_scripts_refuse_or_ring() {
    let t = shipped("busy.rhai", "", &[]);
    assert_eq!(t.texts(), ["refused with 486"]);
    let t = shipped("ring.rhai", "", &[]);
    assert_eq!(t.texts(), ["ringing", "slept 60.0 s", "refused with 480"]);
}

#[test]
fn room_verbs_reach_the_call_and_answer() {
    let t = run(
        "room_lock(\"ops\");\n\
         let id = room_record(\"ops\");\n\
         log(id);\n\
         log(room_members(\"ops\").len());\n\
         room_kick(\"ops\", 3);",
        "",
    );
    assert!(t.contains("room ops: Lock"), "{t}");
    assert!(t.contains("log: sim-room-ops"), "{t}");
    assert!(t.contains("log: 0"), "{t}");
    assert!(t.contains("room ops: Member(3, Kick)"), "{t}");
    let t = run("room_kick(\"ops\", -1);", "");
    assert!(error_of(&t).message.contains("not a member id"), "{t}");
    let t = run("room_lock(\"\");", "");
    assert!(error_of(&t).message.contains("1-64 characters"), "{t}");
}

// --- dial -------------------------------------------------------------------------------

#[test]
fn dial_bridges_the_first_answer_and_returns_when_the_callee_is_gone() {
    let t = run(
        r#"let r = dial("sip:bob@127.0.0.1:5070"); log(r.outcome);"#,
        "wait 5s, hangup",
    );
    assert_eq!(
        t.texts(),
        [
            "dialling sip:bob@127.0.0.1:5070",
            "ringing",
            "answered",
            "bridged with sip:bob@127.0.0.1:5070",
            "caller hung up"
        ],
        "{t}"
    );
    assert_eq!(at(&t, "caller hung up"), Duration::from_secs(5));
    assert_eq!(t.outcome, ScriptOutcome::Stopped(StopCause::Hangup));
}

#[test]
fn dial_outcomes_busy_rejected_and_no_answer_after_the_timeout() {
    let t = run(
        r#"let r = dial("sip:busy@127.0.0.1"); log(r.outcome, r.code, r.reason);"#,
        "",
    );
    assert!(t.contains("log: busy 486 Busy Here"), "{t}");
    let t = run(
        r#"let r = dial("sip:reject@127.0.0.1"); log(r.outcome, r.code);"#,
        "",
    );
    assert!(t.contains("log: rejected 603"), "{t}");
    let t = run(
        r#"let r = dial("sip:noanswer@127.0.0.1", #{timeout_secs: 5}); log(r.outcome);"#,
        "",
    );
    assert_eq!(at(&t, "log: no_answer"), Duration::from_secs(5), "{t}");
    // The caller was never answered: it heard 180 and nothing more.
    assert!(t.contains("ringing") && !t.contains("answered"), "{t}");
}

#[test]
fn dial_tries_targets_in_order_or_rings_them_all() {
    let t = run(
        r#"dial(["sip:busy@127.0.0.1", "sip:noanswer@127.0.0.1", "sip:carol@127.0.0.1"],
                #{timeout_secs: 3}); log("after");"#,
        "wait 10s, hangup",
    );
    assert!(t.contains("bridged with sip:carol@127.0.0.1"), "{t}");
    // busy at once, no answer for 3 s, then carol.
    assert_eq!(at(&t, "answered"), Duration::from_secs(3), "{t}");
    let t = run(
        r#"dial(["sip:noanswer@127.0.0.1", "sip:carol@127.0.0.1"], #{mode: "parallel"});"#,
        "wait 1s, hangup",
    );
    assert_eq!(at(&t, "answered"), Duration::ZERO, "{t}");
    assert!(t.contains("bridged with sip:carol@127.0.0.1"), "{t}");
}

#[test]
fn dial_max_secs_ends_the_bridge_and_the_script_goes_on() {
    let t = run(
        r#"answer(); let r = dial("sip:bob@127.0.0.1", #{max_secs: 10});
           log(r.outcome, r.duration_ms); play("again");"#,
        "",
    );
    assert_eq!(
        at(&t, "dial ended: answered (200)"),
        Duration::from_secs(10),
        "{t}"
    );
    assert!(t.contains("log: answered 10000"), "{t}");
    assert!(t.contains("played again"), "{t}");
}

#[test]
fn dial_options_are_checked() {
    let t = run(r#"dial("tel:+15551234");"#, "");
    assert!(
        error_of(&t).message.contains("not a sip: or sips: URI"),
        "{t}"
    );
    let t = run(r#"dial("sip:a@127.0.0.1", #{mode: "random"});"#, "");
    assert!(error_of(&t).message.contains("sequential or parallel"));
    let t = run(
        r#"dial("sip:a@127.0.0.1", #{headers: #{"X-A": "1\r\nVia: x"}});"#,
        "",
    );
    assert!(error_of(&t).message.contains("not a valid SIP header"));
    let t = run(r#"dial([]);"#, "");
    assert!(error_of(&t).message.contains("1 to 16 targets"));
}

#[test]
fn dial_through_trunks_moves_on_after_the_trunk_fails_and_stops_at_the_callees_answer() {
    let t = run(
        r#"let r = dial("trunk:down,good/+15551234"); log(r.outcome);"#,
        "wait 2s, hangup",
    );
    assert!(t.contains("bridged with trunk:good/+15551234"), "{t}");
    let t = run(
        r#"let r = dial("trunk:first,second/busy"); log(r.outcome, r.code);"#,
        "",
    );
    assert!(t.contains("log: busy 486"), "{t}");
    let t = run(
        r#"let r = dial(["trunk:first/busy", "sip:carol@127.0.0.1"]); log(r.outcome);"#,
        "wait 1s, hangup",
    );
    // The busy callee ends its trunk list; the next target is still called.
    assert!(t.contains("bridged with sip:carol@127.0.0.1"), "{t}");
    let t = run(r#"dial("trunk:a b/123");"#, "");
    assert!(error_of(&t).message.contains("trunk:NAME"), "{t}");
}

#[test]
fn originate_and_room_dial_place_calls_of_their_own() {
    let t = run(
        r#"let a = originate("sip:bob@127.0.0.1", #{script: "callback", vars: #{n: 1}});
           let b = room_dial("sales", "sip:carol@127.0.0.1", #{confirm: "1"});
           log(a, b);"#,
        "",
    );
    assert!(t.contains("placed a call to sip:bob@127.0.0.1"), "{t}");
    assert!(t.contains("log: sim-call-1 sim-call-2"), "{t}");
    let t = run(r#"originate("sip:bob@127.0.0.1", #{});"#, "");
    assert!(error_of(&t).message.contains("one of script and room"));
    let t = run(
        r#"room_dial("r", "sip:bob@127.0.0.1", #{confirm: "12"});"#,
        "",
    );
    assert!(error_of(&t).message.contains("one key"));
}

#[test]
fn dial_passes_the_callees_early_media_to_an_unanswered_caller() {
    let t = run(
        r#"dial("sip:early@127.0.0.1", #{ringback: "early_media"});"#,
        "wait 1s, hangup",
    );
    assert_eq!(
        t.texts(),
        [
            "dialling sip:early@127.0.0.1",
            "early media",
            "answered",
            "bridged with sip:early@127.0.0.1",
            "caller hung up"
        ],
        "{t}"
    );
    // With the tone instead, the caller only hears ringing until the answer.
    let t = run(r#"dial("sip:early@127.0.0.1");"#, "wait 1s, hangup");
    assert!(t.contains("ringing") && !t.contains("early media"), "{t}");
}

#[test]
fn stream_start_runs_beside_the_flow_and_stream_stop_ends_it() {
    let src = r#"stream_start("ws://127.0.0.1:9/media", #{track: "both", parameters: #{lang: "en"}});
        sleep(2000);
        stream_stop();
        log("after");"#;
    let t = run(src, "");
    assert!(t.contains("streaming to ws://127.0.0.1:9/media"), "{t}");
    assert!(t.contains("stream ended (stopped)"), "{t}");
    assert_eq!(at(&t, "stream ended (stopped)"), Duration::from_secs(2));
    assert!(t.contains("log: after"), "{t}");
    // A second stream while one runs is refused; one after the first ended is taken.
    let t = run(
        r#"stream_start("ws://127.0.0.1:9/a");
        try { stream_start("ws://127.0.0.1:9/b"); } catch (e) { log(e); }
        stream_stop(); stream_start("ws://127.0.0.1:9/c");"#,
        "",
    );
    assert!(t.contains("log: a stream already runs on this call"), "{t}");
    assert!(t.contains("streaming to ws://127.0.0.1:9/c"), "{t}");
}

#[test]
fn stream_options_are_checked_at_the_call() {
    for (opts, why) in [
        (r#""http://x/", #{}"#, "is not ws:// or wss://"),
        (r#""ws://", #{}"#, "has no host"),
        (r#""ws://h/", #{format: "mp3"}"#, "unknown stream format"),
        (
            r#""ws://h/", #{format: "l16", rate: 44100}"#,
            "8000 or 16000",
        ),
        (r#""ws://h/", #{format: "twilio", rate: 16000}"#, "8000 Hz"),
        (r#""ws://h/", #{track: "left"}"#, "unknown track"),
        (r#""ws://h/", #{volume: 3}"#, "unknown option"),
        (r#""ws://h/", #{parameters: 3}"#, "parameters must be a map"),
    ] {
        let t = run(&format!("stream_start({opts});"), "");
        let e = error_of(&t).to_string();
        assert!(e.contains(why), "{opts}: {e}");
    }
}

#[test]
fn the_bot_streams_until_the_caller_hangs_up() {
    let t = shipped(
        "bot.rhai",
        "wait 5s, hangup",
        &[("stream_url", "wss://bot.example.com/media")],
    );
    assert!(
        t.contains("streaming to wss://bot.example.com/media"),
        "{t}"
    );
    assert_eq!(t.outcome, ScriptOutcome::Stopped(StopCause::Hangup));
    // Without a URL the caller hears goodbye.
    let t = shipped("bot.rhai", "", &[]);
    assert!(
        t.contains("log: bot: the dialplan rule gives no stream_url"),
        "{t}"
    );
    assert!(t.contains("played goodbye"), "{t}");
}

#[test]
fn room_stream_answers_the_streams_id_and_checks_its_options() {
    let t = run(
        r#"let id = room_stream("sales", "wss://asr.example.com/", #{format: "l16", rate: 16000});
        log(id); room_stream_stop("sales");"#,
        "",
    );
    assert!(t.contains("log: sim-stream-sales"), "{t}");
    let t = run(r#"room_stream("sales", "https://x/");"#, "");
    assert!(
        error_of(&t).to_string().contains("room_stream: stream URL"),
        "{t}"
    );
}
