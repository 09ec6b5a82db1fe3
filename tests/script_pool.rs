//! The script pool: scripts waiting in a verb cost a few kilobytes each, a busy script does
//! not starve the others on its thread, and limits, hangups and panics end only their own
//! script. Its own binary, and one test at a time, so the memory measured is the scripts'.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchboard::script::runner::{measure_stack, script_stack_size, ScriptPool};
use switchboard::script::{
    build_engine, channel_port, compile_source, run_script, CallInfo, CallReply, CallRequest,
    ScriptHandle, ScriptLimits, ScriptOutcome, ScriptRequest, StopCause,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Scripts waiting at once in the memory test.
const WAITING: usize = 2000;
/// Resident memory allowed per waiting script.
const PER_SCRIPT_MAX: usize = 32 << 10;
/// Longest any test waits for a script.
const PATIENCE: Duration = Duration::from_secs(60);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Resident bytes of this process.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

fn ivr_info() -> CallInfo {
    let mut info = CallInfo {
        from: "\"Alice\" <sip:alice@example.com>;tag=1".into(),
        to: "ivr".into(),
        call_id: "a84b4c76e66710@pc33.example.com".into(),
        ..CallInfo::default()
    };
    info.vars.insert("lang".into(), "en".into());
    info
}

/// Plays the call task: answers every request, "0" (goodbye) to a `collect`, until the
/// script ends.
async fn answer_all(mut rx: mpsc::Receiver<ScriptRequest>) -> usize {
    let mut n = 0;
    while let Some(r) = rx.recv().await {
        n += 1;
        let reply = match r.request() {
            CallRequest::Collect(_) => CallReply::Digits(Some("0".into())),
            _ => CallReply::Done,
        };
        r.reply(reply);
    }
    n
}

/// The next request, within [`PATIENCE`].
async fn next(rx: &mut mpsc::Receiver<ScriptRequest>) -> ScriptRequest {
    timeout(PATIENCE, rx.recv()).await.unwrap().unwrap()
}

async fn join(h: ScriptHandle) -> ScriptOutcome {
    timeout(PATIENCE, h.join()).await.unwrap()
}

/// Starts `n` copies of the shipped menu and leaves each waiting in its first `collect`:
/// the requests held, and the receivers to answer the rest on.
type Waiting = Vec<(ScriptRequest, mpsc::Receiver<ScriptRequest>)>;

async fn park(n: usize, mut spawn: impl FnMut() -> mpsc::Receiver<ScriptRequest>) -> Waiting {
    let mut rxs: Vec<_> = (0..n).map(|_| spawn()).collect();
    let mut held = Vec::with_capacity(n);
    for mut rx in rxs.drain(..) {
        let answer = next(&mut rx).await;
        assert!(matches!(answer.request(), CallRequest::Answer));
        answer.reply(CallReply::Done);
        let collect = next(&mut rx).await;
        assert!(matches!(collect.request(), CallRequest::Collect(_)));
        held.push((collect, rx));
    }
    held
}

/// Answers the held requests and every one after, and waits for every script to finish.
async fn finish(held: Waiting, handles: Vec<ScriptHandle>) {
    let mut tasks = Vec::new();
    for (req, rx) in held {
        // "*": no choice, so goodbye.
        req.reply(CallReply::Digits(Some("*".into())));
        tasks.push(tokio::spawn(answer_all(rx)));
    }
    for h in handles {
        assert_eq!(join(h).await, ScriptOutcome::Finished);
    }
    for t in tasks {
        // play("goodbye") and hangup() follow the held collect.
        assert_eq!(timeout(PATIENCE, t).await.unwrap().unwrap(), 2);
    }
}

#[test]
fn two_thousand_waiting_scripts_fit_in_32_kb_each() {
    let _alone = alone();
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let ivr =
        Arc::new(compile_source(&engine, "ivr.rhai", include_str!("../scripts/ivr.rhai")).unwrap());
    let pool = ScriptPool::new(2).unwrap();
    let rt = runtime();
    let spawn = |handles: &mut Vec<ScriptHandle>| {
        let (port, rx) = channel_port();
        handles.push(pool.spawn(ivr.clone(), engine.clone(), ivr_info(), Box::new(port)));
        rx
    };
    // Once-only costs (allocator arenas, the pool's tables, the compiled menu pattern) are
    // not a waiting script's; the stacks these leave behind hold no memory.
    let mut warm = Vec::new();
    let held = rt.block_on(park(100, || spawn(&mut warm)));
    rt.block_on(finish(held, warm));
    let started = Instant::now();
    let before = rss();
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let heap_before = unsafe { libc::mallinfo2() }.uordblks;
    let mut handles = Vec::with_capacity(WAITING);
    let held = rt.block_on(park(WAITING, || spawn(&mut handles)));
    let per_script = (rss() - before) / WAITING;
    // SAFETY: as above.
    let heap = (unsafe { libc::mallinfo2() }.uordblks - heap_before) / WAITING;
    println!("of which {heap} bytes of heap in use");
    println!(
        "{per_script} bytes resident per script waiting in collect ({WAITING} on the pool, \
         parked in {:?})",
        started.elapsed()
    );
    assert!(
        per_script <= PER_SCRIPT_MAX,
        "{per_script} bytes per script"
    );
    rt.block_on(finish(held, handles));
}

/// The same measure for a thread per script with the 8 MB stack each had before the pool:
/// `cargo test --release --test script_pool -- --ignored --nocapture`.
#[test]
#[ignore]
fn a_thread_per_waiting_script_for_comparison() {
    let _alone = alone();
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let ivr =
        Arc::new(compile_source(&engine, "ivr.rhai", include_str!("../scripts/ivr.rhai")).unwrap());
    let rt = runtime();
    let before = rss();
    let mut threads = Vec::with_capacity(WAITING);
    let held = rt.block_on(park(WAITING, || {
        let (port, rx) = channel_port();
        let (engine, ivr) = (engine.clone(), ivr.clone());
        threads.push(
            std::thread::Builder::new()
                .stack_size(8 << 20)
                .spawn(move || {
                    let hangup = Arc::new(AtomicBool::new(false));
                    run_script(&engine, &ivr, &ivr_info(), Box::new(port), hangup)
                })
                .unwrap(),
        );
        rx
    }));
    let per_script = (rss() - before) / WAITING;
    println!("{per_script} bytes resident per script waiting in collect ({WAITING} threads)");
    rt.block_on(finish(held, Vec::new()));
    for t in threads {
        assert_eq!(t.join().unwrap(), ScriptOutcome::Finished);
    }
}

/// A script that computes without end (no operations limit), and one that waits in verbs.
fn busy_and_waiting(max_operations: u64) -> (Arc<rhai::Engine>, Arc<rhai::AST>, Arc<rhai::AST>) {
    let engine = Arc::new(build_engine(&ScriptLimits {
        max_operations,
        ..ScriptLimits::default()
    }));
    let busy = Arc::new(compile_source(&engine, "busy.rhai", "answer(); loop { }").unwrap());
    let waiting = Arc::new(
        compile_source(&engine, "wait.rhai", "answer(); sleep(1); play(\"bye\");").unwrap(),
    );
    (engine, busy, waiting)
}

#[test]
fn a_busy_script_does_not_starve_one_waiting_on_its_thread_and_a_hangup_stops_it() {
    let _alone = alone();
    let (engine, busy, waiting) = busy_and_waiting(0);
    let pool = ScriptPool::new(1).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (port, mut busy_rx) = channel_port();
        let busy = pool.spawn(busy, engine.clone(), CallInfo::default(), Box::new(port));
        // Once answered it loops, holding the only thread unless it yields.
        next(&mut busy_rx).await.reply(CallReply::Done);
        let (port, rx) = channel_port();
        let started = Instant::now();
        let waiter = pool.spawn(waiting, engine, CallInfo::default(), Box::new(port));
        let replies = tokio::spawn(answer_all(rx));
        assert_eq!(join(waiter).await, ScriptOutcome::Finished);
        assert_eq!(timeout(PATIENCE, replies).await.unwrap().unwrap(), 3);
        println!(
            "the waiting script ran beside the busy one in {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        busy.hangup();
        assert_eq!(join(busy).await, ScriptOutcome::Stopped(StopCause::Hangup));
    });
}

#[test]
fn a_busy_script_beside_a_waiting_one_ends_at_its_operations_limit() {
    let _alone = alone();
    let (engine, busy, waiting) = busy_and_waiting(1_000_000);
    let pool = ScriptPool::new(1).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (port, busy_rx) = channel_port();
        let started = Instant::now();
        let busy = pool.spawn(busy, engine.clone(), CallInfo::default(), Box::new(port));
        let busy_replies = tokio::spawn(answer_all(busy_rx));
        let (port, rx) = channel_port();
        let waiter = pool.spawn(waiting, engine, CallInfo::default(), Box::new(port));
        let replies = tokio::spawn(answer_all(rx));
        assert_eq!(join(waiter).await, ScriptOutcome::Finished);
        assert_eq!(timeout(PATIENCE, replies).await.unwrap().unwrap(), 3);
        let outcome = join(busy).await;
        println!(
            "1,000,000 operations of a busy loop in {:?}",
            started.elapsed()
        );
        assert_eq!(
            outcome,
            ScriptOutcome::Stopped(StopCause::Limit(
                "Too many operations at busy.rhai:1".into()
            ))
        );
        assert_eq!(timeout(PATIENCE, busy_replies).await.unwrap().unwrap(), 1);
    });
}

#[test]
fn a_panic_in_native_code_ends_only_its_own_script() {
    let _alone = alone();
    let mut engine = build_engine(&ScriptLimits::default());
    engine.register_fn("explode", || -> i64 { panic!("native code failed") });
    let engine = Arc::new(engine);
    let exploding = Arc::new(compile_source(&engine, "boom.rhai", "answer(); explode();").unwrap());
    let waiting = Arc::new(
        compile_source(&engine, "wait.rhai", "answer(); sleep(1); play(\"bye\");").unwrap(),
    );
    let pool = ScriptPool::new(1).unwrap();
    let rt = runtime();
    rt.block_on(async {
        // The other script is suspended in a verb on the same thread when the panic comes.
        let (port, mut rx) = channel_port();
        let waiter = pool.spawn(
            waiting.clone(),
            engine.clone(),
            CallInfo::default(),
            Box::new(port),
        );
        let held = next(&mut rx).await;
        let (port, boom_rx) = channel_port();
        let boom = pool.spawn(
            exploding,
            engine.clone(),
            CallInfo::default(),
            Box::new(port),
        );
        let boom_replies = tokio::spawn(answer_all(boom_rx));
        match join(boom).await {
            ScriptOutcome::Error(e) => {
                assert_eq!(e.file, "boom.rhai");
                assert!(e.message.contains("native code failed"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // Its port went with it: the call task sees the script gone.
        assert_eq!(timeout(PATIENCE, boom_replies).await.unwrap().unwrap(), 1);
        held.reply(CallReply::Done);
        let replies = tokio::spawn(answer_all(rx));
        assert_eq!(join(waiter).await, ScriptOutcome::Finished);
        assert_eq!(timeout(PATIENCE, replies).await.unwrap().unwrap(), 2);
        // The thread still takes new scripts.
        let (port, rx) = channel_port();
        let again = pool.spawn(waiting, engine, CallInfo::default(), Box::new(port));
        let replies = tokio::spawn(answer_all(rx));
        assert_eq!(join(again).await, ScriptOutcome::Finished);
        assert_eq!(timeout(PATIENCE, replies).await.unwrap().unwrap(), 3);
    });
}

/// The deepest nesting that compiles.
fn deepest(engine: &rhai::Engine, make: impl Fn(usize) -> String) -> String {
    (1..200)
        .rev()
        .map(make)
        .find(|src| compile_source(engine, "deep.rhai", src).is_ok())
        .unwrap()
}

fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "(n+".repeat(depth), ")".repeat(depth))
}

#[test]
fn the_deepest_scripts_end_at_the_engine_limits_within_their_stack() {
    let _alone = alone();
    for limits in [
        ScriptLimits::default(),
        ScriptLimits {
            max_call_levels: 128,
            ..ScriptLimits::default()
        },
    ] {
        let engine = Arc::new(build_engine(&limits));
        let size = script_stack_size(&engine);
        let recursion = "fn f(n) { f(n + 1) } f(0);".to_string();
        let expr = deepest(&engine, |d| {
            format!("let n = 1; let x = {};", nested(d, "n"))
        });
        let recursion_in_expr = deepest(&engine, |d| {
            format!("fn f(n) {{ {} }} f(0);", nested(d, "f(n + 1)"))
        });
        for (src, limited) in [(recursion, true), (expr, false), (recursion_in_expr, true)] {
            let ast = Arc::new(compile_source(&engine, "deep.rhai", &src).unwrap());
            let (outcome, used) = measure_stack(engine.clone(), ast, 4 * size).unwrap();
            println!(
                "max_call_levels {}: {used} bytes of stack used of {size} by {}…",
                limits.max_call_levels,
                &src[..src.len().min(30)]
            );
            if limited {
                assert!(
                    matches!(&outcome, ScriptOutcome::Stopped(StopCause::Limit(m))
                        if m.starts_with("Stack overflow")),
                    "{outcome:?}"
                );
            } else {
                assert_eq!(outcome, ScriptOutcome::Finished);
            }
            // A margin for paths deeper per level than these.
            assert!(used * 2 <= size, "{used} bytes used of {size}");
        }
    }
}

#[test]
fn the_deepest_script_on_the_pool_ends_with_the_engine_limit() {
    let _alone = alone();
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let src = deepest(&engine, |d| {
        format!("fn f(n) {{ {} }} f(0);", nested(d, "f(n + 1)"))
    });
    let ast = Arc::new(compile_source(&engine, "deep.rhai", &src).unwrap());
    let pool = ScriptPool::new(1).unwrap();
    let (port, rx) = channel_port();
    drop(rx);
    let h = pool.spawn(ast, engine, CallInfo::default(), Box::new(port));
    let outcome = runtime().block_on(join(h));
    assert!(
        matches!(&outcome, ScriptOutcome::Stopped(StopCause::Limit(m)) if m.starts_with("Stack overflow")),
        "{outcome:?}"
    );
}

/// Start and end of a one-verb script, on the pool and on a thread of its own:
/// `cargo test --test script_pool -- --ignored --nocapture start_cost`.
#[test]
#[ignore]
fn start_cost_on_the_pool_and_on_a_thread() {
    const N: u32 = 2000;
    let _alone = alone();
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let ast = Arc::new(compile_source(&engine, "t.rhai", "answer();").unwrap());
    let pool = ScriptPool::new(2).unwrap();
    let rt = runtime();
    let started = Instant::now();
    for _ in 0..N {
        let (port, rx) = channel_port();
        let h = pool.spawn(
            ast.clone(),
            engine.clone(),
            CallInfo::default(),
            Box::new(port),
        );
        let outcome = rt.block_on(async {
            let replies = tokio::spawn(answer_all(rx));
            let outcome = join(h).await;
            assert_eq!(timeout(PATIENCE, replies).await.unwrap().unwrap(), 1);
            outcome
        });
        assert_eq!(outcome, ScriptOutcome::Finished);
    }
    let on_pool = started.elapsed() / N;
    let started = Instant::now();
    for _ in 0..N {
        let (port, rx) = channel_port();
        let (engine, ast) = (engine.clone(), ast.clone());
        let t = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || {
                let hangup = Arc::new(AtomicBool::new(false));
                run_script(&engine, &ast, &CallInfo::default(), Box::new(port), hangup)
            })
            .unwrap();
        rt.block_on(async {
            assert_eq!(timeout(PATIENCE, answer_all(rx)).await.unwrap(), 1);
        });
        assert_eq!(t.join().unwrap(), ScriptOutcome::Finished);
    }
    let on_thread = started.elapsed() / N;
    println!("start to end of a one-verb script: {on_pool:?} on the pool, {on_thread:?} on a thread of its own");
}
