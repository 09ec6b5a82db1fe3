//! Replays every seed and every kept crash of the fuzz targets (`fuzz/corpus/TARGET/`,
//! `fuzz/artifacts/TARGET/`) through the same functions the targets call, so what fuzzing
//! found stays fixed without the nightly toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("sip_parse", switchboard::fuzzing::sip_parse),
    ("sdp_parse", switchboard::fuzzing::sdp_parse),
    ("digest_parse", switchboard::fuzzing::digest_parse),
    ("rtp_packet", switchboard::fuzzing::rtp_packet),
    ("rtcp_compound", switchboard::fuzzing::rtcp_compound),
    ("rfc4733_events", switchboard::fuzzing::rfc4733_events),
    ("sip_framing", switchboard::fuzzing::sip_framing),
    ("info_body", switchboard::fuzzing::info_body),
    ("guard_peek", switchboard::fuzzing::guard_peek),
    ("codec_decode", switchboard::fuzzing::codec_decode),
    ("endpoint", switchboard::fuzzing::endpoint),
    ("srtp", switchboard::fuzzing::srtp),
    ("stun", switchboard::fuzzing::stun),
];

/// Runs every file under `fuzz/KIND/TARGET/`; returns how many ran.
fn replay(kind: &str, name: &str, target: Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in &paths {
        // A fuzzer running on the same folder may replace files under us.
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(outcome.is_ok(), "{name} panics on {}", path.display());
    }
    paths.len()
}

#[test]
fn every_target_has_a_seed_corpus_and_it_passes() {
    for (name, target) in TARGETS {
        let seeds = replay("corpus", name, *target);
        assert!(seeds >= 2, "fuzz/corpus/{name} holds {seeds} seeds");
    }
}

#[test]
fn kept_crashes_stay_fixed() {
    for (name, target) in TARGETS {
        replay("artifacts", name, *target);
    }
}

#[test]
fn every_target_is_listed_in_the_fuzz_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is not a [[bin]] of fuzz/Cargo.toml"
        );
    }
}
