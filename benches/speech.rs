//! Speech off the media tick: synthesis (real-time factor, and what a cached `say()` costs
//! the call and the tick) and recognition (one utterance against a menu's choices, which
//! gives recognitions per second per core).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::media::frame::AudioSource;
use switchboard::rtp::types::ClockRate;
use switchboard::speech::asr::{Asr, AsrConfig, AsrEngineKind};
use switchboard::speech::tts::{SayRequest, Tts, TtsConfig};

/// About 5 s of a menu, as callers hear it.
const MENU: &str = "Thank you for calling. For sales, press one. For support, press two. \
                    To speak to an operator, press zero.";

fn synthesis(c: &mut Criterion) {
    let mut g = c.benchmark_group("tts");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (rate, name) in [(ClockRate::HZ_8000, "8k"), (ClockRate::HZ_16000, "16k")] {
        let probe = Tts::new(&TtsConfig::default()).unwrap();
        let secs = probe
            .synthesize(&SayRequest::new(MENU), rate)
            .unwrap()
            .duration()
            .as_secs_f64();
        eprintln!("tts/{name}: the sentence lasts {secs:.2} s");
        // A cache of nothing: every sentence is synthesized afresh.
        let cold = Tts::new(&TtsConfig {
            cache_bytes: 0,
            ..TtsConfig::default()
        })
        .unwrap();
        g.bench_function(format!("synthesize_{name}"), |b| {
            b.iter(|| black_box(cold.synthesize(&SayRequest::new(MENU), rate).unwrap()))
        });
        // A cached say(): the lookup the call task makes, then every frame the tick plays.
        let warm = Tts::new(&TtsConfig::default()).unwrap();
        warm.synthesize(&SayRequest::new(MENU), rate).unwrap();
        let frame = rate.hz() as usize / 50;
        g.bench_function(format!("cached_say_{name}"), |b| {
            let mut out = vec![0i16; frame];
            b.iter(|| {
                let mut s = warm.speak(&SayRequest::new(MENU), rate).unwrap();
                while s.fill(&mut out) == frame {}
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn recognition(c: &mut Criterion) {
    let config = AsrConfig {
        engine: Some(AsrEngineKind::Pocketsphinx),
        decoders: 1,
        ..AsrConfig::default()
    };
    let Ok(asr) = Asr::new(&config) else {
        eprintln!("PocketSphinx is not installed: no recognition bench");
        return;
    };
    let choices: Vec<String> = ["sales", "support", "operator"].map(String::from).to_vec();
    let mut word = vec![0i16; 2400];
    word.extend(flite_rs::Engine::new().synthesize("support").samples);
    word.extend(vec![0i16; 2400]);
    eprintln!(
        "asr: the utterance lasts {:.2} s",
        word.len() as f64 / 8000.0
    );
    let mut g = c.benchmark_group("asr");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("pocketsphinx_3_choices_8k", |b| {
        b.iter(|| {
            let r = asr.recognize(&word, ClockRate::HZ_8000, &choices).unwrap();
            assert_eq!(r.choice.as_deref(), Some("support"));
        })
    });
    g.finish();
}

criterion_group!(benches, synthesis, recognition);
criterion_main!(benches);
