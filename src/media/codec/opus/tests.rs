use proptest::prelude::*;

use super::*;
use crate::media::codec::test_util::{fit_sine, round_trip, sine};
use crate::media::level::rms_dbfs;
use crate::media::resample::resample;
use crate::rtp::types::ClockRate;

/// 20 ms at 48 kHz.
const FRAME: usize = 960;
/// Skips the encoder's start-up and its look-ahead before measuring.
const SETTLE: usize = 9600;

fn params(fec: bool, dtx: bool, max_playback_rate: u32) -> OpusParams {
    OpusParams {
        max_playback_rate,
        use_inband_fec: fec,
        use_dtx: dtx,
        stereo: false,
    }
}

fn speech_48k() -> Vec<i16> {
    let raw = include_bytes!("../../../../tests/fixtures/speech-8k.raw");
    let pcm: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    resample(&pcm, 8000, ClockRate::HZ_48000).unwrap()
}

#[test]
fn describes_itself() {
    let c = Opus::new(&OpusParams::default());
    assert_eq!(c.kind(), CodecKind::Opus);
    assert_eq!(c.name(), "opus");
    assert_eq!(c.clock_rate(), ClockRate::HZ_48000);
    assert_eq!(c.sample_rate(), ClockRate::HZ_48000);
    assert_eq!(CodecKind::Opus.channels(), 2);
    assert_eq!(CodecKind::Opus.frame_samples(20), Some(960));
    assert_eq!(CodecKind::Opus.frame_samples(30), None);
    assert!(c.max_encoded_len(FRAME) >= 1275);
    assert!(c.has_own_concealment());
}

#[test]
fn one_khz_round_trip_snr() {
    let pcm = sine(1000.0, 10000.0, 48000, 1.0);
    let out = round_trip(&mut Opus::new(&OpusParams::default()), &pcm, FRAME);
    assert_eq!(out.len(), pcm.len());
    let (amp, snr) = fit_sine(&out[SETTLE..], 1000.0, 48000);
    eprintln!("Opus 1 kHz: amplitude {amp:.0}, SNR {snr:.1} dB");
    assert!((amp / 10000.0 - 1.0).abs() < 0.05, "amplitude {amp}");
    assert!(snr > 30.0, "SNR {snr:.1} dB");
}

#[test]
fn six_khz_survives_unless_the_receiver_plays_narrowband() {
    let pcm = sine(6000.0, 10000.0, 48000, 1.0);
    let out = round_trip(&mut Opus::new(&OpusParams::default()), &pcm, FRAME);
    let (amp, snr) = fit_sine(&out[SETTLE..], 6000.0, 48000);
    eprintln!("Opus 6 kHz: amplitude {amp:.0}, SNR {snr:.1} dB");
    assert!((amp / 10000.0 - 1.0).abs() < 0.05, "amplitude {amp}");
    assert!(snr > 25.0, "SNR {snr:.1} dB");

    // maxplaybackrate=8000: the encoder keeps to narrowband, 4 kHz audio.
    let out = round_trip(&mut Opus::new(&params(false, false, 8000)), &pcm, FRAME);
    let (amp, _) = fit_sine(&out[SETTLE..], 6000.0, 48000);
    eprintln!("Opus 6 kHz at maxplaybackrate=8000: amplitude {amp:.0}");
    assert!(amp < 500.0, "6 kHz sent to a narrowband receiver: {amp}");
    // 16000: wideband, up to 8 kHz, so 6 kHz passes.
    let out = round_trip(&mut Opus::new(&params(false, false, 16000)), &pcm, FRAME);
    let (amp, _) = fit_sine(&out[SETTLE..], 6000.0, 48000);
    assert!(amp > 8000.0, "wideband lost 6 kHz: {amp}");
}

/// Energy ratio, in dB, of `reference` to the difference `got − reference`.
fn snr_db(reference: &[i16], got: &[i16]) -> f64 {
    let signal: f64 = reference.iter().map(|&x| f64::from(x).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(got)
        .map(|(&r, &g)| (f64::from(r) - f64::from(g)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-9)).log10()
}

#[test]
fn fec_recovers_a_lost_packet_better_than_concealment() {
    let pcm = speech_48k();
    let p = params(true, false, 48000);
    let mut enc = Opus::new(&p);
    let mut packets = Vec::new();
    let mut buf = [0u8; 1500];
    for frame in pcm.chunks_exact(FRAME) {
        let n = enc.encode(frame, &mut buf).unwrap();
        packets.push(buf[..n].to_vec());
    }
    assert!(packets.len() > 40);

    // Every seventh packet lost, away from the edges, where there is speech.
    let lost: Vec<usize> = (10..packets.len() - 2)
        .step_by(7)
        .filter(|&k| rms_dbfs(&pcm[k * FRAME..(k + 1) * FRAME]) > -40.0)
        .collect();
    assert!(lost.len() >= 5, "too little speech: {lost:?}");

    let run = |use_fec: bool| -> Vec<i16> {
        let mut dec = Opus::new(&p);
        let mut out = Vec::new();
        let mut frame = [0i16; FRAME];
        for (k, pkt) in packets.iter().enumerate() {
            let n = if !lost.contains(&k) {
                dec.decode(pkt, &mut frame).unwrap()
            } else if use_fec {
                dec.recover(&packets[k + 1], &mut frame).unwrap()
            } else {
                dec.conceal(&mut frame).unwrap()
            };
            assert_eq!(n, FRAME);
            out.extend_from_slice(&frame);
        }
        out
    };
    let reference = run_without_loss(&packets, &p);
    let fec = run(true);
    let plc = run(false);
    let (mut ref_lost, mut fec_lost, mut plc_lost) = (Vec::new(), Vec::new(), Vec::new());
    for &k in &lost {
        let r = k * FRAME..(k + 1) * FRAME;
        ref_lost.extend_from_slice(&reference[r.clone()]);
        fec_lost.extend_from_slice(&fec[r.clone()]);
        plc_lost.extend_from_slice(&plc[r]);
    }
    let fec_snr = snr_db(&ref_lost, &fec_lost);
    let plc_snr = snr_db(&ref_lost, &plc_lost);
    eprintln!(
        "Opus, {} lost frames: FEC {fec_snr:.1} dB, PLC {plc_snr:.1} dB against the lossless decode",
        lost.len()
    );
    assert!(
        fec_snr > plc_snr + 6.0,
        "FEC {fec_snr:.1} dB, PLC {plc_snr:.1} dB"
    );
}

fn run_without_loss(packets: &[Vec<u8>], p: &OpusParams) -> Vec<i16> {
    let mut dec = Opus::new(p);
    let mut out = Vec::new();
    let mut frame = [0i16; FRAME];
    for pkt in packets {
        let n = dec.decode(pkt, &mut frame).unwrap();
        out.extend_from_slice(&frame[..n]);
    }
    out
}

#[test]
fn dtx_sends_nothing_in_silence_and_the_gap_stays_quiet() {
    let mut c = Opus::new(&params(false, true, 48000));
    let tone = sine(1000.0, 8000.0, 48000, 0.2);
    let mut buf = [0u8; 1500];
    let mut frame = [0i16; FRAME];
    for f in tone.chunks_exact(FRAME) {
        let n = c.encode(f, &mut buf).unwrap();
        assert!(n > DTX_MAX_BYTES);
        c.decode(&buf[..n], &mut frame).unwrap();
    }
    let silence = [0i16; FRAME];
    let mut unsent = 0;
    let mut heard = Vec::new();
    for _ in 0..100 {
        let n = c.encode(&silence, &mut buf).unwrap();
        if n == 0 {
            unsent += 1;
            // Nothing arrives: the receiver plays the decoder's concealment (comfort noise).
            c.conceal(&mut frame).unwrap();
        } else {
            c.decode(&buf[..n], &mut frame).unwrap();
        }
        heard.extend_from_slice(&frame);
    }
    eprintln!("Opus DTX: {unsent} of 100 silent frames not sent");
    assert!(
        unsent >= 70,
        "only {unsent} of 100 silent frames were left unsent"
    );
    let tail = rms_dbfs(&heard[20 * FRAME..]);
    assert!(tail < -60.0, "DTX gap heard at {tail:.1} dBFS");
    // Speech after the gap is sent and decodes at once.
    let mut out = Vec::new();
    for f in tone.chunks_exact(FRAME) {
        let n = c.encode(f, &mut buf).unwrap();
        assert!(n > 0, "speech not sent after DTX");
        c.decode(&buf[..n], &mut frame).unwrap();
        out.extend_from_slice(&frame);
    }
    let (amp, _) = fit_sine(&out[4 * FRAME..], 1000.0, 48000);
    assert!(amp > 6000.0, "tone after DTX at {amp}");
}

#[test]
fn without_dtx_silence_is_still_sent() {
    let mut c = Opus::new(&params(false, false, 48000));
    let mut buf = [0u8; 1500];
    for _ in 0..50 {
        assert!(c.encode(&[0i16; FRAME], &mut buf).unwrap() > 0);
    }
}

#[test]
fn stereo_packets_decode_to_mono() {
    let mut err = 0;
    // SAFETY: valid arguments; the encoder is destroyed below.
    let enc = unsafe { ffi::opus_encoder_create(48000, 2, ffi::OPUS_APPLICATION_AUDIO, &mut err) };
    assert!(!enc.is_null(), "{}", lib_error(err));
    // A 1 kHz tone on the left channel only.
    let left = sine(1000.0, 12000.0, 48000, 0.5);
    let mut dec = Opus::new(&OpusParams::default());
    let mut out = Vec::new();
    let mut stereo = [0i16; 2 * FRAME];
    let mut buf = [0u8; 1500];
    let mut frame = [0i16; FRAME];
    for f in left.chunks_exact(FRAME) {
        for (i, &s) in f.iter().enumerate() {
            stereo[2 * i] = s;
            stereo[2 * i + 1] = 0;
        }
        // SAFETY: `stereo` holds FRAME samples of two channels; `buf` is 1500 bytes.
        let n =
            unsafe { ffi::opus_encode(enc, stereo.as_ptr(), FRAME as i32, buf.as_mut_ptr(), 1500) };
        assert!(n > 0);
        assert_eq!(dec.decode(&buf[..n as usize], &mut frame).unwrap(), FRAME);
        out.extend_from_slice(&frame);
    }
    // SAFETY: created above, not used after this.
    unsafe { ffi::opus_encoder_destroy(enc) };
    let (amp, snr) = fit_sine(&out[4 * FRAME..], 1000.0, 48000);
    eprintln!("Opus stereo → mono: amplitude {amp:.0}, SNR {snr:.1} dB");
    // The downmix averages the channels: half the left channel's amplitude.
    assert!((4000.0..8000.0).contains(&amp), "amplitude {amp}");
    assert!(snr > 15.0, "SNR {snr:.1} dB");
}

#[test]
fn bad_frames_and_payloads_are_errors() {
    let mut c = Opus::new(&OpusParams::default());
    let mut buf = [0u8; 1500];
    assert!(matches!(
        c.encode(&[0i16; 160], &mut buf),
        Err(CodecError::FrameSize { samples: 160, .. })
    ));
    let mut frame = [0i16; FRAME];
    assert_eq!(
        c.decode(&[], &mut frame),
        Err(CodecError::InvalidPayload { codec: "opus" })
    );
    // A 60 ms packet does not fit a 20 ms buffer.
    let mut long = Opus::new(&OpusParams::default());
    let n = long.encode(&[0i16; 2880], &mut buf).unwrap();
    assert!(c.decode(&buf[..n], &mut frame).is_err());
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut c = Opus::new(&OpusParams::default());
        let mut frame = [0i16; 2880];
        let _ = c.decode(&payload, &mut frame);
        let _ = c.recover(&payload, &mut frame[..FRAME]);
        prop_assert!(c.conceal(&mut frame[..FRAME]).is_ok());
    }

    #[test]
    fn encoding_arbitrary_audio_never_panics(pcm in proptest::collection::vec(any::<i16>(), FRAME..=FRAME)) {
        let mut c = Opus::new(&params(true, true, 16000));
        let mut buf = [0u8; 1500];
        let n = c.encode(&pcm, &mut buf).unwrap();
        let mut frame = [0i16; FRAME];
        if n > 0 {
            prop_assert_eq!(c.decode(&buf[..n], &mut frame).unwrap(), FRAME);
        }
    }
}

#[test]
fn packet_durations_come_from_the_toc() {
    use crate::media::codec::opus_packet_samples;
    let mut c = Opus::new(&OpusParams::default());
    let mut buf = [0u8; 1500];
    for samples in [480, 960, 1920, 2880] {
        let n = c.encode(&vec![0i16; samples], &mut buf).unwrap();
        assert_eq!(opus_packet_samples(&buf[..n]), Some(samples));
        assert_eq!(CodecKind::Opus.payload_samples(&buf[..n]), samples);
    }
    assert_eq!(opus_packet_samples(&[]), None);
    // Code 3 without its frame count byte, and a count of zero frames.
    assert_eq!(opus_packet_samples(&[0x03]), None);
    assert_eq!(opus_packet_samples(&[0x03, 0x00]), None);
    // Code 3 with 3 frames of 20 ms (config 1: SILK NB 20 ms).
    assert_eq!(opus_packet_samples(&[(1 << 3) | 3, 3]), Some(2880));
    // More than 120 ms is not a packet.
    assert_eq!(opus_packet_samples(&[(1 << 3) | 3, 7]), None);
}
