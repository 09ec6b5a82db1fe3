//! Start-up cost of one call's script, and the memory a running script holds.
//!
//! `script/start` runs a one-verb script on the calling thread through a no-op port: the
//! per-call work on a shared engine (scope, call install, evaluation, the first request).
//! `script/ivr_flow` runs the shipped menu to its goodbye. `script/spawn` adds the start on the script pool (a coroutine on a kept stack) and the
//! join; `script/spawn_thread` the same on a thread of its own, as before the pool. Memory is the heap held per script waiting in a verb, counted by a wrapping
//! allocator; coroutine stacks are counted with the rest of RSS in `tests/script_pool.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::script::{
    build_engine, channel_port, compile_source, run_script, spawn_script, CallGone, CallInfo,
    CallPort, CallReply, CallRequest, ScriptLimits,
};

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

struct NoopPort;

impl CallPort for NoopPort {
    fn request(&mut self, req: CallRequest) -> Result<CallReply, CallGone> {
        Ok(match req {
            // "0" in the menu: goodbye.
            CallRequest::Collect(_) => CallReply::Digits(Some("0".into())),
            _ => CallReply::Done,
        })
    }
}

fn info() -> CallInfo {
    let mut i = CallInfo {
        from: "\"Alice\" <sip:alice@example.com>;tag=1".into(),
        to: "ivr".into(),
        call_id: "a84b4c76e66710@pc33.example.com".into(),
        ..CallInfo::default()
    };
    i.vars.insert("lang".into(), "en".into());
    i
}

fn bench(c: &mut Criterion) {
    let engine = Arc::new(build_engine(&ScriptLimits::default()));
    let ast = Arc::new(compile_source(&engine, "answer.rhai", "answer();").unwrap());
    let ivr =
        Arc::new(compile_source(&engine, "ivr.rhai", include_str!("../scripts/ivr.rhai")).unwrap());
    let info = info();
    c.bench_function("script/start", |b| {
        b.iter(|| {
            let out = run_script(
                &engine,
                &ast,
                &info,
                Box::new(NoopPort),
                Arc::new(AtomicBool::new(false)),
            );
            black_box(out)
        })
    });
    c.bench_function("script/ivr_flow", |b| {
        b.iter(|| {
            let flag = Arc::new(AtomicBool::new(false));
            black_box(run_script(&engine, &ivr, &info, Box::new(NoopPort), flag))
        })
    });
    c.bench_function("script/spawn", |b| {
        b.iter(|| {
            let h = spawn_script(
                ast.clone(),
                engine.clone(),
                info.clone(),
                Box::new(NoopPort),
            );
            black_box(h.join_blocking())
        })
    });
    // The same start on a thread of its own, as scripts ran before the pool.
    c.bench_function("script/spawn_thread", |b| {
        b.iter(|| {
            let (engine, ast, info) = (engine.clone(), ast.clone(), info.clone());
            let t = std::thread::Builder::new()
                .stack_size(8 << 20)
                .spawn(move || {
                    let flag = Arc::new(AtomicBool::new(false));
                    run_script(&engine, &ast, &info, Box::new(NoopPort), flag)
                })
                .unwrap();
            black_box(t.join().unwrap())
        })
    });
    memory(&engine, &ivr);
}

/// Heap held per script waiting in its first verb.
fn memory(engine: &Arc<rhai::Engine>, ast: &Arc<rhai::AST>) {
    const N: usize = 200;
    let before = alloc::held();
    let mut waiting = Vec::with_capacity(N);
    let mut handles = Vec::with_capacity(N);
    for _ in 0..N {
        let (port, mut rx) = channel_port();
        handles.push(spawn_script(
            ast.clone(),
            engine.clone(),
            info(),
            Box::new(port),
        ));
        // The script now waits in `answer()` until the request is dropped.
        if let Some(req) = rx.blocking_recv() {
            waiting.push((req, rx));
        }
    }
    let held = alloc::held() - before;
    println!(
        "script/memory: {} bytes of heap per script waiting in a verb ({N} scripts)",
        held / N as isize
    );
    drop(waiting);
    for h in handles {
        black_box(h.join_blocking());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
