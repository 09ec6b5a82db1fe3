use proptest::prelude::*;

use super::*;
use crate::media::codec::test_util::{fit_sine, round_trip, sine};
use crate::media::codec::{Law, G711};
use crate::media::level::rms_dbfs;
use crate::media::resample::resample;
use crate::rtp::types::ClockRate;

const RATE: u32 = 16000;
/// 20 ms at 16 kHz.
const FRAME: usize = 320;
/// Skips the predictors' start-up before measuring.
const SETTLE: usize = 1600;

fn g722_trip(pcm: &[i16]) -> Vec<i16> {
    round_trip(&mut G722::new(), pcm, FRAME)
}

#[test]
fn describes_itself() {
    let c = G722::new();
    assert_eq!(c.kind(), CodecKind::G722);
    assert_eq!(c.name(), "G722");
    // RFC 3551 §4.5.2: the RTP clock stays 8 kHz although audio is sampled at 16 kHz.
    assert_eq!(c.clock_rate(), ClockRate::HZ_8000);
    assert_eq!(c.sample_rate(), ClockRate::HZ_16000);
    assert_eq!(c.max_encoded_len(FRAME), 160);
    assert_eq!(CodecKind::G722.samples_in(160), 320);
}

#[test]
fn one_khz_tone_round_trip_snr() {
    let pcm = sine(1000.0, 10000.0, RATE, 1.0);
    let out = g722_trip(&pcm);
    assert_eq!(out.len(), pcm.len());
    let (amp, snr) = fit_sine(&out[SETTLE..], 1000.0, RATE);
    eprintln!("G.722 1 kHz: amplitude {amp:.0}, SNR {snr:.1} dB");
    assert!((amp / 10000.0 - 1.0).abs() < 0.02, "amplitude {amp}");
    assert!(snr > 40.0, "SNR {snr:.1} dB");
}

#[test]
fn six_khz_tone_survives_g722_but_not_g711() {
    let pcm = sine(6000.0, 10000.0, RATE, 1.0);
    let out = g722_trip(&pcm);
    let (amp, snr) = fit_sine(&out[SETTLE..], 6000.0, RATE);
    eprintln!("G.722 6 kHz: amplitude {amp:.0}, SNR {snr:.1} dB");
    assert!((amp / 10000.0 - 1.0).abs() < 0.02, "amplitude {amp}");
    assert!(snr > 22.0, "SNR {snr:.1} dB");

    // The same tone through a narrowband call: down to 8 kHz, G.711, back up to 16 kHz.
    let narrow = resample(&pcm, RATE, ClockRate::HZ_8000).unwrap();
    let through = round_trip(&mut G711::new(Law::Mu), &narrow, 160);
    let wide = resample(&through, 8000, ClockRate::HZ_16000).unwrap();
    let (amp711, _) = fit_sine(&wide[SETTLE..SETTLE + 12800], 6000.0, RATE);
    eprintln!("G.711 6 kHz: amplitude {amp711:.1}");
    assert!(amp711 < 100.0, "6 kHz leaked through G.711: {amp711}");
}

#[test]
fn frequency_response_100_hz_to_7_khz() {
    let mut worst = (0.0f64, 0.0f64);
    for freq in [
        100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 3000.0, 3400.0, 4000.0, 4600.0, 5000.0, 6000.0,
        6500.0, 7000.0,
    ] {
        let pcm = sine(freq, 8000.0, RATE, 0.6);
        let out = g722_trip(&pcm);
        let (amp, _) = fit_sine(&out[SETTLE..], freq, RATE);
        let gain_db = 20.0 * (amp / 8000.0).log10();
        eprintln!("G.722 {freq} Hz: {gain_db:+.2} dB");
        // Flat through the QMF crossover at 4 kHz up to the top of the wide band.
        let (lo, hi) = (-0.5, 0.5);
        assert!(
            (lo..=hi).contains(&gain_db),
            "{freq} Hz: {gain_db:+.2} dB outside {lo}..{hi}"
        );
        if gain_db.abs() > worst.1.abs() {
            worst = (freq, gain_db);
        }
    }
    eprintln!("worst: {worst:?}");
}

#[test]
fn silence_stays_silence() {
    // ADPCM has no zero code in the low band, so idle input decodes to a few LSB of noise.
    let out = g722_trip(&[0i16; 16000]);
    let peak = out.iter().map(|&s| i32::from(s).abs()).max().unwrap();
    let rms = rms_dbfs(&out);
    eprintln!("G.722 silence: peak {peak}, {rms:.1} dBFS");
    assert!(peak <= 8, "silence decoded with peak {peak}");
    assert!(rms < -75.0, "silence decoded at {rms:.1} dBFS");
}

#[test]
fn encoder_and_decoder_state_is_per_stream() {
    let pcm = sine(440.0, 5000.0, RATE, 0.1);
    let mut a = G722::new();
    let mut b = G722::new();
    let mut pa = [0u8; 160];
    let mut pb = [0u8; 160];
    for frame in pcm.chunks_exact(FRAME) {
        a.encode(frame, &mut pa).unwrap();
        b.encode(frame, &mut pb).unwrap();
        assert_eq!(pa, pb);
    }
    // A stream encoded from the middle of a tone differs from one that heard its start…
    let mut late = G722::new();
    let mut pl = [0u8; 160];
    late.encode(&pcm[FRAME..2 * FRAME], &mut pl).unwrap();
    let mut fresh = G722::new();
    fresh.encode(&pcm[..FRAME], &mut pb).unwrap();
    fresh.encode(&pcm[FRAME..2 * FRAME], &mut pb).unwrap();
    assert_ne!(pl, pb);
    // …and a reset stream is a fresh one.
    late.reset();
    late.encode(&pcm[..FRAME], &mut pl).unwrap();
    let mut again = G722::new();
    again.encode(&pcm[..FRAME], &mut pa).unwrap();
    assert_eq!(pl, pa);
}

#[test]
fn odd_input_and_short_buffers_are_errors() {
    let mut c = G722::new();
    let mut out = [0u8; 160];
    assert!(matches!(
        c.encode(&[0i16; 321], &mut out),
        Err(CodecError::FrameSize { samples: 321, .. })
    ));
    assert!(matches!(
        c.encode(&[0i16; 320], &mut out[..159]),
        Err(CodecError::BufferTooSmall {
            needed: 160,
            available: 159
        })
    ));
    let mut pcm = [0i16; 319];
    assert!(matches!(
        c.decode(&[0u8; 160], &mut pcm),
        Err(CodecError::BufferTooSmall { needed: 320, .. })
    ));
}

#[test]
fn concealment_repeats_then_fades_to_silence() {
    let pcm = sine(1000.0, 10000.0, RATE, 0.2);
    let mut c = G722::new();
    let mut payload = [0u8; 160];
    let mut out = [0i16; FRAME];
    for frame in pcm.chunks_exact(FRAME) {
        c.encode(frame, &mut payload).unwrap();
        c.decode(&payload, &mut out).unwrap();
    }
    let mut levels = Vec::new();
    for _ in 0..4 {
        assert_eq!(c.conceal(&mut out).unwrap(), FRAME);
        let (amp, _) = fit_sine(&out, 1000.0, RATE);
        levels.push(amp);
    }
    eprintln!("concealed 1 kHz amplitudes: {levels:?}");
    // 20 ms of the tone at five sixths and falling, then nothing after 60 ms.
    assert!(levels[0] > 7000.0, "{levels:?}");
    assert!(levels[1] < levels[0] && levels[2] < levels[1], "{levels:?}");
    assert!(out.iter().all(|&s| s == 0), "still sounding after 80 ms");
    // A good frame afterwards decodes normally.
    c.encode(&pcm[..FRAME], &mut payload).unwrap();
    assert_eq!(c.decode(&payload, &mut out).unwrap(), FRAME);
}

#[test]
fn concealment_before_any_audio_is_silence() {
    let mut out = [5i16; FRAME];
    G722::new().conceal(&mut out).unwrap();
    assert!(out.iter().all(|&s| s == 0));
}

proptest! {
    #[test]
    fn encode_decode_never_panics(pcm in proptest::collection::vec(any::<i16>(), 0..1200)) {
        let mut c = G722::new();
        let even = &pcm[..pcm.len() & !1];
        let mut payload = vec![0u8; even.len() / 2];
        let n = c.encode(even, &mut payload).unwrap();
        prop_assert_eq!(n, even.len() / 2);
        let mut out = vec![0i16; even.len()];
        prop_assert_eq!(c.decode(&payload, &mut out).unwrap(), even.len());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut c = G722::new();
        let mut out = vec![0i16; payload.len() * 2];
        prop_assert_eq!(c.decode(&payload, &mut out).unwrap(), payload.len() * 2);
        let mut lost = [0i16; FRAME];
        prop_assert_eq!(c.conceal(&mut lost).unwrap(), FRAME);
    }
}

/// The 16-bit words of an ITU-T test sequence in its ASCII form: comment lines skipped, each
/// line's words read until its two-digit check.
fn itu_words(text: &str) -> Vec<u16> {
    text.lines()
        .filter(|l| !l.starts_with("/*"))
        .flat_map(|l| {
            l.as_bytes()
                .chunks_exact(4)
                .map_while(|w| u16::from_str_radix(std::str::from_utf8(w).ok()?, 16).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Where the data lies: after the leading reset words (lowest bit set) up to the next reset.
fn itu_data(words: &[u16]) -> std::ops::Range<usize> {
    let start = words.iter().position(|w| w & 1 == 0).unwrap();
    let len = words[start..].iter().position(|w| w & 1 == 1).unwrap();
    start..start + len
}

const T1C2: &str = include_str!("../../../../tests/fixtures/g722/T1C2.XMT");
const T2R2: &str = include_str!("../../../../tests/fixtures/g722/T2R2.COD");
const T3L2: &str = include_str!("../../../../tests/fixtures/g722/T3L2.RC1");
const T3H2: &str = include_str!("../../../../tests/fixtures/g722/T3H2.RC0");

/// G.722 Appendix II configuration 1: the sub-band encoders, QMF bypassed, with each input
/// word (halved to the codec's 15 bits) fed to both bands, must give the reference codes.
#[test]
fn itu_test_sequence_encoder_t1c2_to_t2r2() {
    let input = itu_words(T1C2);
    let reference = itu_words(T2R2);
    let range = itu_data(&input);
    assert!(range.len() > 700, "{range:?}");
    let mut enc = State::new();
    let mut bad = 0;
    for i in range.clone() {
        let x = i32::from(input[i] as i16) >> 1;
        let code = enc.encode_bands(x, x);
        if u16::from(code) != reference[i] >> 8 {
            bad += 1;
        }
    }
    assert_eq!(bad, 0, "{bad} of {} codes differ", range.len());
}

/// Configuration 2, mode 1: decoding the reference codes must give the reference lower and
/// higher sub-band signals (the decoder's output doubled to 16 bits).
#[test]
fn itu_test_sequence_decoder_t2r2_to_t3l2_t3h2() {
    let codes = itu_words(T2R2);
    let low = itu_words(T3L2);
    let high = itu_words(T3H2);
    let range = itu_data(&codes);
    assert!(range.len() > 700, "{range:?}");
    let mut dec = State::new();
    let mut bad = 0;
    for i in range.clone() {
        let (rlow, rhigh) = dec.decode_bands((codes[i] >> 8) as u8);
        if (rlow << 1) as u16 != low[i] || (rhigh << 1) as u16 != high[i] {
            bad += 1;
        }
    }
    assert_eq!(bad, 0, "{bad} of {} samples differ", range.len());
}
