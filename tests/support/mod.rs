//! Test clients shared by the integration tests.
#![allow(dead_code)]

pub mod browser;
pub mod events;
pub mod offers;
pub mod pki;
pub mod rtp;
pub mod scripts;
pub mod server;
pub mod speech;
pub mod uac;
pub mod webrtc;
pub mod ws;

/// Seconds of the built-in message flow's greeting (welcome, record-after-tone, beep).
pub fn greeting_secs() -> f64 {
    let cache = switchboard::media::prompt::PromptCache::new("prompts".into());
    ["welcome", "record-after-tone", "beep"]
        .iter()
        .map(|p| {
            cache
                .load(p, switchboard::rtp::types::ClockRate::HZ_8000)
                .unwrap()
                .duration()
                .as_secs_f64()
        })
        .sum()
}

/// The one recording sidecar in `dir`, parsed.
pub fn sole_sidecar(dir: &std::path::Path) -> serde_json::Value {
    let found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    serde_json::from_slice(&std::fs::read(&found[0]).unwrap()).unwrap()
}

/// The finished recordings' sidecars in `dir` once at least `count` are complete (bounded).
pub async fn complete_sidecars(dir: &std::path::Path, count: usize) -> Vec<serde_json::Value> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let done: Vec<serde_json::Value> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p.to_string_lossy().ends_with(".timeline.json")
            })
            .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
            .filter(|v: &serde_json::Value| v["state"] == "complete")
            .collect();
        if done.len() >= count {
            return done;
        }
        assert!(
            std::time::Instant::now() < until,
            "recordings not finished: {done:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The CDR of `call_id` in the records under `dir`, once it is written (bounded).
pub async fn cdr_of(dir: &std::path::Path, call_id: &str) -> serde_json::Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let found = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .find(|r| r["call_id"] == call_id);
        if let Some(r) = found {
            return r;
        }
        assert!(
            std::time::Instant::now() < until,
            "no CDR for {call_id} in {dir:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
