//! Speech recognition engines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard::media::codec::g711::{ulaw_decode, ulaw_encode};
use switchboard::rtp::types::ClockRate;
use switchboard::speech::asr::{Asr, AsrConfig, AsrEngineKind};

fn synth(text: &str, voice: &str) -> (Vec<i16>, ClockRate) {
    let mut engine = flite_rs::Engine::new();
    assert!(engine.select_voice(voice));
    let audio = engine.synthesize(text);
    (audio.samples, ClockRate::new(audio.sample_rate).unwrap())
}

fn telephone(s: &[i16]) -> Vec<i16> {
    s.iter().map(|&x| ulaw_decode(ulaw_encode(x))).collect()
}

#[test]
fn calibrate() {
    let asr = Asr::new(&AsrConfig {
        engine: Some(AsrEngineKind::Pocketsphinx),
        ..AsrConfig::default()
    })
    .unwrap();
    let choices: Vec<String> = ["support", "sales", "billing", "yes", "no", "operator"]
        .map(String::from)
        .to_vec();
    for voice in ["kal", "kal16"] {
        for w in &choices {
            let (s, rate) = synth(w, voice);
            let t = std::time::Instant::now();
            let r = asr.recognize(&telephone(&s), rate, &choices).unwrap();
            eprintln!(
                "{voice} {w} -> {:?} {:?} {:.2} {:?}",
                r.text,
                r.choice,
                r.confidence,
                t.elapsed()
            );
        }
    }
    let mut seed = 1u32;
    for amp in [300.0, 3000.0, 10000.0] {
        let noise: Vec<i16> = (0..8000)
            .map(|_| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (((seed >> 16) as f32 / 65536.0 - 0.5) * 2.0 * amp) as i16
            })
            .collect();
        let r = asr.recognize(&noise, ClockRate::HZ_8000, &choices).unwrap();
        eprintln!(
            "noise {amp} -> {:?} {:?} {:.2}",
            r.text, r.choice, r.confidence
        );
    }
    let r = asr
        .recognize(&vec![0i16; 8000], ClockRate::HZ_8000, &choices)
        .unwrap();
    eprintln!("silence -> {:?} {:?} {:.2}", r.text, r.choice, r.confidence);
    for sent in [
        "the weather is lovely today",
        "I want support please",
        "sails",
    ] {
        let (s, rate) = synth(sent, "kal");
        let r = asr.recognize(&telephone(&s), rate, &choices).unwrap();
        eprintln!(
            "other sentence -> {:?} {:?} {:.2}",
            r.text, r.choice, r.confidence
        );
        let r = asr.recognize(&telephone(&s), rate, &[]).unwrap();
        eprintln!("free -> {:?} {:?} {:.2}", r.text, r.choice, r.confidence);
    }
}
