use super::*;
use crate::media::dtmf::Digit;
use crate::media::frame::ClockRate;
use crate::media::level::dbm0_to_peak;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const RATE: u32 = 8000;
const N: usize = 160;

fn digit(c: char) -> Digit {
    Digit::from_char(c).unwrap()
}

/// 20 ms of a 1 kHz sine at `dbm0`, phase continuous across frame `index`.
fn tone_frame(dbm0: f32, index: usize) -> Vec<i16> {
    let peak = f64::from(dbm0_to_peak(dbm0));
    (0..N)
        .map(|i| {
            let t = (index * N + i) as f64 / f64::from(RATE);
            (peak * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()).round() as i16
        })
        .collect()
}

fn silence() -> Vec<i16> {
    vec![0; N]
}

/// A deterministic, non-repeating sample pattern the crash test's two processes agree on.
fn pattern(i: usize) -> i16 {
    (i.wrapping_mul(2_654_435_761) >> 7) as i16
}

fn pattern_frame(frame: usize, len: usize) -> Vec<i16> {
    (frame * len..(frame + 1) * len).map(pattern).collect()
}

/// A fresh folder, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "switchboard-record-{name}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn meta(mode: RecordMode) -> RecordingMeta {
    RecordingMeta {
        call_id: "abc@host".into(),
        from: "sip:alice@example.com".into(),
        to: "sip:ivr@example.com".into(),
        room: None,
        mode,
        rate: ClockRate::HZ_8000,
    }
}

fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    let s: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    (spec, s)
}

/// File names in `dir`, sorted.
pub(crate) fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn session(f: impl FnOnce(&mut RecordPolicy)) -> RecordSession {
    let mut p = RecordPolicy::default();
    f(&mut p);
    RecordSession::new(p)
}

// ---------------------------------------------------------------- policy

#[test]
fn max_duration_stops_on_the_exact_frame() {
    let mut s = session(|p| p.max_duration = Some(Duration::from_secs(1)));
    let f = tone_frame(-10.0, 0);
    for i in 1..50 {
        assert_eq!(s.push_frame(&f, &[]), Step::Continue, "frame {i}");
    }
    assert_eq!(s.push_frame(&f, &[]), Step::Stop(StopReason::MaxDuration));
    assert_eq!(s.elapsed(), Duration::from_secs(1));
    assert_eq!(s.frame().len(), N, "the stopping frame is recorded");
    // Later frames are ignored.
    assert_eq!(s.push_frame(&f, &[]), Step::Stop(StopReason::MaxDuration));
    assert_eq!(s.frames(), 50);
    assert!(s.frame().is_empty());
    let o = s.outcome().unwrap();
    assert_eq!((o.frames, o.trim_frames), (50, 0));

    // A limit between frames never overshoots: 1.01 s is 50 frames.
    let mut s = session(|p| p.max_duration = Some(Duration::from_millis(1010)));
    let n = (1..)
        .find(|_| s.push_frame(&f, &[]) != Step::Continue)
        .unwrap();
    assert_eq!(n, 50);
}

#[test]
fn silence_stops_after_timeout_and_trims_the_tail() {
    let mut s = session(|p| p.silence_timeout = Some(Duration::from_secs(3)));
    for i in 0..100 {
        assert_eq!(s.push_frame(&tone_frame(-20.0, i), &[]), Step::Continue);
    }
    // Quiet noise well under the -45 dBm0 threshold.
    let mut rng = fastrand::Rng::with_seed(1);
    let mut stop_at = None;
    for i in 1..=200 {
        let noise: Vec<i16> = (0..N).map(|_| rng.i16(-20..20)).collect();
        if let Step::Stop(r) = s.push_frame(&noise, &[]) {
            assert_eq!(r, StopReason::Silence);
            stop_at = Some(i);
            break;
        }
    }
    assert_eq!(stop_at, Some(150), "3 s of silence = 150 frames");
    let o = s.outcome().unwrap();
    assert_eq!(o.duration(), Duration::from_secs(5));
    assert_eq!(o.kept_duration(), Duration::from_secs(2));
    assert_eq!(o.trim_frames, 150);
    assert!(!o.discard());
}

#[test]
fn silence_from_the_start_stops_and_keeps_nothing() {
    let mut s = session(|p| {
        p.silence_timeout = Some(Duration::from_millis(500));
        p.min_duration = Duration::from_millis(20);
    });
    let n = (1..)
        .find(|_| s.push_frame(&silence(), &[]) != Step::Continue)
        .unwrap();
    assert_eq!(n, 25);
    let o = s.outcome().unwrap();
    assert_eq!(o.kept_frames(), 0);
    assert!(o.discard());
}

#[test]
fn speech_like_bursts_with_short_pauses_do_not_stop() {
    let mut s = session(|p| {
        p.silence_timeout = Some(Duration::from_secs(1));
        p.max_duration = Some(Duration::from_secs(30));
    });
    // 300 ms of voice, 900 ms of pause, repeated.
    let mut i = 0;
    let step = loop {
        let voiced = i % 60 < 15;
        let f = if voiced {
            tone_frame(-25.0, i)
        } else {
            silence()
        };
        i += 1;
        match s.push_frame(&f, &[]) {
            Step::Continue => continue,
            stop => break stop,
        }
    };
    assert_eq!(step, Step::Stop(StopReason::MaxDuration));
    assert_eq!(i, 1500);
}

#[test]
fn real_speech_does_not_trip_a_two_second_silence_timeout() {
    let pcm: Vec<i16> = include_bytes!("../../../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut s = session(|p| p.silence_timeout = Some(Duration::from_secs(2)));
    for f in pcm.chunks_exact(N) {
        assert_eq!(s.push_frame(f, &[]), Step::Continue);
    }
    // And the trailing silence after it does stop it.
    let n = (1..)
        .find(|_| s.push_frame(&silence(), &[]) != Step::Continue)
        .unwrap();
    assert!(n <= 100, "stopped after {n} silent frames");
}

#[test]
fn hysteresis_keeps_the_state_between_the_two_thresholds() {
    // Threshold -45 dBm0, hysteresis 3 dB: -43.5 dBm0 is in between.
    let between = -43.5;
    let timeout = |p: &mut RecordPolicy| p.silence_timeout = Some(Duration::from_millis(400));

    // From silence, a level in between does not count as voice.
    let mut s = session(timeout);
    let n = (0..)
        .find(|&i| s.push_frame(&tone_frame(between, i), &[]) != Step::Continue)
        .unwrap();
    assert_eq!(n + 1, 20);

    // Once voiced, the same level does not count as silence.
    let mut s = session(timeout);
    assert_eq!(s.push_frame(&tone_frame(-20.0, 0), &[]), Step::Continue);
    for i in 1..500 {
        assert_eq!(s.push_frame(&tone_frame(between, i), &[]), Step::Continue);
    }
    // Below the threshold it does.
    let n = (0..)
        .find(|&i| s.push_frame(&tone_frame(-48.0, i), &[]) != Step::Continue)
        .unwrap();
    assert_eq!(n + 1, 20);
    assert_eq!(s.outcome().unwrap().trim_frames, 20);
}

#[test]
fn terminator_digits_stop_and_are_collected() {
    let mut s = session(|p| p.terminators = DigitSet::from_chars("#*"));
    assert!(s.policy().terminators.contains(digit('*')));
    assert!(!s.policy().terminators.contains(digit('1')));
    s.push_frame(&tone_frame(-20.0, 0), &[]);
    assert_eq!(s.on_digit(digit('1')), None);
    assert_eq!(s.on_digit(digit('2')), None);
    assert_eq!(
        s.on_digit(digit('#')),
        Some(StopReason::Terminator(digit('#')))
    );
    assert_eq!(
        s.push_frame(&tone_frame(-20.0, 1), &[]),
        Step::Stop(StopReason::Terminator(digit('#')))
    );
    // Nothing after the stop counts.
    assert_eq!(s.on_digit(digit('*')), None);
    assert_eq!(s.hangup(), StopReason::Terminator(digit('#')));
    let o = s.outcome().unwrap().trim_tail(3);
    assert_eq!(o.digits, "12#");
    assert_eq!((o.frames, o.trim_frames), (1, 3));
    assert_eq!(o.kept_frames(), 0);
}

#[test]
fn min_duration_discards_short_recordings() {
    let policy = |p: &mut RecordPolicy| {
        p.min_duration = Duration::from_secs(2);
        p.silence_timeout = Some(Duration::from_secs(1));
    };
    let mut s = session(policy);
    assert!(s.outcome().is_none());
    for i in 0..99 {
        s.push_frame(&tone_frame(-20.0, i), &[]);
    }
    assert_eq!(s.hangup(), StopReason::Hangup);
    assert!(s.outcome().unwrap().discard(), "1.98 s < 2 s");

    let mut s = session(policy);
    for i in 0..100 {
        s.push_frame(&tone_frame(-20.0, i), &[]);
    }
    assert_eq!(s.request_stop(), StopReason::Requested);
    assert!(!s.outcome().unwrap().discard(), "2 s is enough");

    // 2.5 s in total, but only 1.5 s once the trailing silence is trimmed.
    let mut s = session(policy);
    for i in 0..75 {
        s.push_frame(&tone_frame(-20.0, i), &[]);
    }
    while s.push_frame(&silence(), &[]) == Step::Continue {}
    let o = s.outcome().unwrap();
    assert_eq!(o.duration(), Duration::from_millis(2500));
    assert!(o.discard());
}

#[test]
fn mixed_mono_saturates_sample_by_sample() {
    let inb = [30000, -30000, 100, i16::MIN, i16::MAX, 7];
    let out = [10000, -10000, -50, -1, i16::MAX, -7];
    let mut buf = [0i16; 6];
    let (n, _) = lay_out(RecordMode::MixedMono, &inb, &out, &mut buf);
    assert_eq!(n, 6);
    assert_eq!(buf, [32767, -32768, 50, -32768, 32767, 0]);
    // A shorter direction is padded with silence, whichever it is.
    let (n, _) = lay_out(RecordMode::MixedMono, &inb[..2], &out, &mut buf);
    assert_eq!((n, buf), (6, [32767, -32768, -50, -1, i16::MAX, -7]));
    let (n, _) = lay_out(RecordMode::MixedMono, &inb, &out[..3], &mut buf);
    assert_eq!((n, buf), (6, [32767, -32768, 50, i16::MIN, i16::MAX, 7]));

    let mut s = session(|p| p.mode = RecordMode::MixedMono);
    let a: Vec<i16> = (0..N as i16).map(|i| i * 200).collect();
    let b: Vec<i16> = (0..N as i16).map(|i| 20000 - i * 50).collect();
    s.push_frame(&a, &b);
    let expect: Vec<i16> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (i32::from(x) + i32::from(y)).clamp(-32768, 32767) as i16)
        .collect();
    assert_eq!(s.frame(), &expect[..]);
    assert!(expect.contains(&32767), "the test reaches saturation");
}

#[test]
fn stereo_and_single_direction_layouts() {
    let a: Vec<i16> = (0..N as i16).map(|i| i + 1).collect();
    let b: Vec<i16> = (0..N as i16).map(|i| -i - 1000).collect();

    let mut s = session(|p| p.mode = RecordMode::Stereo);
    s.push_frame(&a, &b);
    let f = s.frame();
    assert_eq!(f.len(), 2 * N);
    for i in 0..N {
        assert_eq!(f[2 * i], a[i], "left = inbound at {i}");
        assert_eq!(f[2 * i + 1], b[i], "right = outbound at {i}");
    }
    // A missing direction is silence.
    s.push_frame(&a, &[]);
    assert!(s.frame().iter().skip(1).step_by(2).all(|&x| x == 0));

    let mut s = session(|p| p.mode = RecordMode::Inbound);
    s.push_frame(&a, &b);
    assert_eq!(s.frame(), &a[..]);
    let mut s = session(|p| p.mode = RecordMode::Outbound);
    s.push_frame(&a, &b);
    assert_eq!(s.frame(), &b[..]);
    // Oversized input is cut to one frame instead of growing the buffer.
    let long = vec![1i16; 3 * N];
    s.push_frame(&[], &long);
    assert_eq!(s.frame().len(), N);
}

#[test]
fn stereo_silence_follows_the_louder_side() {
    let mut s = session(|p| {
        p.mode = RecordMode::Stereo;
        p.silence_timeout = Some(Duration::from_millis(200));
    });
    for i in 0..100 {
        assert_eq!(
            s.push_frame(&silence(), &tone_frame(-20.0, i)),
            Step::Continue
        );
    }
}

// ---------------------------------------------------------------- writer

#[test]
fn recording_round_trips_through_the_writer() {
    let tmp = TempDir::new("mono");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let h = factory.start(meta(RecordMode::Inbound)).unwrap();
    let id = h.id().to_owned();
    let mut pushed = Vec::new();
    for f in 0..100 {
        let frame = pattern_frame(f, N);
        assert!(h.push(&frame));
        pushed.extend(frame);
    }
    let mut outcome = RecordOutcome::new(StopReason::Requested);
    outcome.digits = "12".into();
    h.finish(outcome);
    drop(factory);
    thread.join().unwrap();

    assert_eq!(files(&tmp.0), [format!("{id}.json"), format!("{id}.wav")]);
    let (spec, samples) = read_wav(&tmp.0.join(format!("{id}.wav")));
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, RATE, 16)
    );
    assert_eq!(samples, pushed);

    let sc = Sidecar::read(&Sidecar::path(&tmp.0, &id)).unwrap();
    assert_eq!(sc.state, SidecarState::Complete);
    assert_eq!(sc.duration_ms, 2000);
    assert_eq!(sc.stop_reason, Some(StopReason::Requested));
    assert_eq!(sc.digits, "12");
    assert_eq!(sc.file, format!("{id}.wav"));
    assert_eq!(sc.call_id, "abc@host");
    assert_eq!(
        sc.format,
        Format {
            rate: RATE,
            channels: 1,
            bits: 16
        }
    );
}

#[test]
fn stereo_recording_interleaves_caller_left() {
    let tmp = TempDir::new("stereo");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let h = factory.start(meta(RecordMode::Stereo)).unwrap();
    let id = h.id().to_owned();
    let mut s = session(|p| p.mode = RecordMode::Stereo);
    for f in 0..60 {
        let a = pattern_frame(f, N);
        let b: Vec<i16> = a.iter().map(|x| x.wrapping_neg() ^ 0x55).collect();
        s.push_frame(&a, &b);
        assert!(h.push(s.frame()));
    }
    s.hangup();
    h.finish(s.outcome().unwrap());
    drop(factory);
    thread.join().unwrap();

    let (spec, samples) = read_wav(&tmp.0.join(format!("{id}.wav")));
    assert_eq!(spec.channels, 2);
    assert_eq!(samples.len(), 60 * N * 2);
    for (i, lr) in samples.chunks_exact(2).enumerate() {
        assert_eq!(lr[0], pattern(i), "left at {i}");
        assert_eq!(lr[1], pattern(i).wrapping_neg() ^ 0x55, "right at {i}");
    }
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, &id)).unwrap();
    assert_eq!(sc.mode, RecordMode::Stereo);
    assert_eq!(sc.duration_ms, 1200);
    assert_eq!(sc.stop_reason, Some(StopReason::Hangup));
}

#[test]
fn many_recordings_share_one_writer_thread() {
    let tmp = TempDir::new("concurrent");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let factory = factory.clone();
            std::thread::spawn(move || {
                let handles: Vec<_> = (0..3)
                    .map(|_| factory.start(meta(RecordMode::Inbound)).unwrap())
                    .collect();
                for f in 0..150 {
                    for (k, h) in handles.iter().enumerate() {
                        let tag = (w * 3 + k) as i16;
                        let frame: Vec<i16> = (0..N)
                            .map(|i| tag * 1000 + ((f * N + i) % 997) as i16)
                            .collect();
                        assert!(h.push(&frame));
                    }
                }
                handles
                    .into_iter()
                    .enumerate()
                    .map(|(k, h)| {
                        let id = h.id().to_owned();
                        h.finish(RecordOutcome::new(StopReason::Hangup));
                        (id, (w * 3 + k) as i16)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<(String, i16)> = workers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    factory.sync().unwrap();
    assert_eq!(factory.stats().completed, 12);
    assert_eq!(factory.stats().open, 0);
    drop(factory);
    thread.join().unwrap();

    assert_eq!(ids.len(), 12);
    for (id, tag) in ids {
        let (_, samples) = read_wav(&tmp.0.join(format!("{id}.wav")));
        assert_eq!(samples.len(), 150 * N);
        for (j, &s) in samples.iter().enumerate() {
            assert_eq!(s, tag * 1000 + (j % 997) as i16, "{id} sample {j}");
        }
    }
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let tmp = TempDir::new("full");
    let config = WriterConfig {
        queue_chunks: 4,
        ..WriterConfig::default()
    };
    let (factory, thread) = RecordingWriter::spawn_with(&tmp.0, config).unwrap();
    let h = factory.start(meta(RecordMode::Inbound)).unwrap();
    let id = h.id().to_owned();
    factory.sync().unwrap();
    let resume = factory.pause();

    let mut slowest = Duration::ZERO;
    let mut accepted = Vec::new();
    for f in 0..10 {
        let t = Instant::now();
        accepted.push(h.push(&pattern_frame(f, N)));
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(
        accepted,
        [true, true, true, true, false, false, false, false, false, false]
    );
    assert!(
        slowest < Duration::from_millis(50),
        "a push took {slowest:?}"
    );
    assert_eq!(h.dropped_chunks(), 6);
    assert_eq!(factory.stats().dropped_chunks, 6);

    drop(resume);
    factory.sync().unwrap();
    for f in 10..12 {
        assert!(h.push(&pattern_frame(f, N)));
    }
    h.finish(RecordOutcome::new(StopReason::Requested));
    drop(factory);
    thread.join().unwrap();

    // The dropped frames are silence, so everything after them keeps its time.
    let (_, samples) = read_wav(&tmp.0.join(format!("{id}.wav")));
    assert_eq!(samples.len(), 12 * N);
    let expect: Vec<i16> = (0..12)
        .flat_map(|f| {
            if (4..10).contains(&f) {
                vec![0; N]
            } else {
                pattern_frame(f, N)
            }
        })
        .collect();
    assert_eq!(samples, expect);
}

#[test]
fn finish_trims_the_tail_and_discards_short_recordings() {
    let tmp = TempDir::new("trim");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();

    // A terminator: the caller cuts the last 10 frames (the tone).
    let mut s = session(|p| p.terminators = DigitSet::from_chars("#"));
    let h = factory.start(meta(RecordMode::Inbound)).unwrap();
    let kept_id = h.id().to_owned();
    for f in 0..60 {
        s.push_frame(&pattern_frame(f, N), &[]);
        h.push(s.frame());
    }
    assert!(s.on_digit(digit('#')).is_some());
    h.finish(s.outcome().unwrap().trim_tail(10));

    // Too short: deleted, sidecar too.
    let mut s = session(|p| p.min_duration = Duration::from_secs(1));
    let h = factory.start(meta(RecordMode::Inbound)).unwrap();
    for f in 0..10 {
        s.push_frame(&pattern_frame(f, N), &[]);
        h.push(s.frame());
    }
    s.hangup();
    h.finish(s.outcome().unwrap());

    factory.sync().unwrap();
    let stats = factory.stats();
    assert_eq!((stats.completed, stats.discarded, stats.open), (1, 1, 0));
    drop(factory);
    thread.join().unwrap();

    assert_eq!(
        files(&tmp.0),
        [format!("{kept_id}.json"), format!("{kept_id}.wav")]
    );
    let (_, samples) = read_wav(&tmp.0.join(format!("{kept_id}.wav")));
    let expect: Vec<i16> = (0..50 * N).map(pattern).collect();
    assert_eq!(samples, expect);
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, &kept_id)).unwrap();
    assert_eq!(sc.duration_ms, 1000);
    assert_eq!(sc.digits, "#");
    assert_eq!(sc.stop_reason, Some(StopReason::Terminator(digit('#'))));
}

#[test]
fn dropped_handle_finishes_as_hangup() {
    let tmp = TempDir::new("drop");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let h = factory.start(meta(RecordMode::Inbound)).unwrap();
    let id = h.id().to_owned();
    h.push(&pattern_frame(0, N));
    drop(h);
    drop(factory);
    thread.join().unwrap();
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, &id)).unwrap();
    assert_eq!(sc.state, SidecarState::Complete);
    assert_eq!(sc.stop_reason, Some(StopReason::Hangup));
    assert_eq!(read_wav(&tmp.0.join(format!("{id}.wav"))).1.len(), N);
}

// ---------------------------------------------------------------- crash safety

#[test]
fn part_file_is_a_valid_wav_while_recording() {
    let tmp = TempDir::new("part");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let h = factory.start(meta(RecordMode::Inbound)).unwrap();
    let id = h.id().to_owned();
    let part = tmp.0.join(format!("{id}.wav.part"));

    factory.sync().unwrap();
    let (_, samples) = read_wav(&part);
    assert!(samples.is_empty(), "a fresh .part is already a valid WAV");
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, &id)).unwrap();
    assert_eq!(sc.state, SidecarState::Recording);

    // 2.4 s: the header was last rewritten at 2.0 s.
    for f in 0..120 {
        h.push(&pattern_frame(f, N));
    }
    factory.sync().unwrap();
    let (spec, samples) = read_wav(&part);
    assert_eq!(spec.channels, 1);
    assert_eq!(samples.len(), 2 * RATE as usize);
    let expect: Vec<i16> = (0..samples.len()).map(pattern).collect();
    assert_eq!(samples, expect);

    h.finish(RecordOutcome::new(StopReason::Requested));
    drop(factory);
    thread.join().unwrap();
    assert!(!part.exists());
    assert_eq!(read_wav(&tmp.0.join(format!("{id}.wav"))).1.len(), 120 * N);
}

const CRASH_ENV: &str = "SWITCHBOARD_RECORD_CRASH_DIR";
const CRASH_FRAMES: usize = 130;

/// Runs only as the crash test's child process: records 2.6 s, then aborts.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let (factory, _thread) = RecordingWriter::spawn(PathBuf::from(dir)).unwrap();
    let mut s = session(|p| p.mode = RecordMode::Stereo);
    let h = factory.start(meta(RecordMode::Stereo)).unwrap();
    for f in 0..CRASH_FRAMES {
        let a = pattern_frame(f, N);
        s.push_frame(&a, &a);
        h.push(s.frame());
    }
    factory.sync().unwrap();
    std::process::abort();
}

/// Runs the test `test` of this binary in a child process with `env` set to `dir`; the child
/// records into `dir` and aborts mid-recording, as a crash would.
pub(crate) fn run_crash_child(test: &str, env: &str, dir: &Path) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(env, dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die abruptly");
}

#[test]
fn crash_leaves_a_part_that_repair_recovers() {
    let tmp = TempDir::new("crash");
    run_crash_child("media::record::tests::crash_child", CRASH_ENV, &tmp.0);

    let names = files(&tmp.0);
    assert_eq!(names.len(), 2, "{names:?}");
    let part = tmp
        .0
        .join(names.iter().find(|n| n.ends_with(".wav.part")).unwrap());
    let id = names[0].strip_suffix(".json").unwrap().to_owned();
    assert_eq!(
        Sidecar::read(&Sidecar::path(&tmp.0, &id)).unwrap().state,
        SidecarState::Recording
    );
    // Only the last header rewrite (2.0 s) is visible before repair.
    assert_eq!(read_wav(&part).1.len(), 2 * 2 * RATE as usize);

    let repaired = repair_dir(&tmp.0);
    assert_eq!(repaired.len(), 1);
    let r = &repaired[0];
    assert_eq!(r.id, id);
    assert!(!part.exists());
    let (spec, samples) = read_wav(&r.wav);
    assert_eq!(spec.channels, 2);
    let frames = samples.len() / 2;
    // Everything up to the last flush, plus whatever the buffer had spilled, at most all.
    assert!(
        (2 * RATE as usize..=CRASH_FRAMES * N).contains(&frames),
        "{frames} frames"
    );
    for (i, lr) in samples.chunks_exact(2).enumerate() {
        assert_eq!((lr[0], lr[1]), (pattern(i), pattern(i)), "frame {i}");
    }
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, &id)).unwrap();
    assert_eq!(sc.state, SidecarState::Repaired);
    assert_eq!(sc.duration_ms, r.duration_ms);
    assert_eq!(sc.duration_ms, frames as u64 * 1000 / u64::from(RATE));
    assert_eq!(sc.call_id, "abc@host", "the rest of the sidecar is kept");

    // Running it again finds nothing to do.
    assert!(repair_dir(&tmp.0).is_empty());
}

/// Writes a stereo WAV whose header claims no data (as right after creation) followed by
/// `frames` frames and `extra` stray bytes, as a `.part`.
fn fake_part(dir: &Path, id: &str, frames: usize, extra: usize) -> PathBuf {
    let part = dir.join(format!("{id}.wav.part"));
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&part, spec).unwrap();
    for i in 0..frames * 2 {
        w.write_sample(pattern(i)).unwrap();
    }
    w.finalize().unwrap();
    let mut bytes = fs::read(&part).unwrap();
    bytes[4..8].copy_from_slice(&36u32.to_le_bytes());
    bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
    bytes.extend(std::iter::repeat_n(0xAB, extra));
    fs::write(&part, bytes).unwrap();
    part
}

#[test]
fn repair_cuts_a_partial_sample_frame_and_rebuilds_a_lost_sidecar() {
    let tmp = TempDir::new("partial");
    fake_part(&tmp.0, "rec-1", 1000, 3);
    let repaired = repair_dir(&tmp.0);
    assert_eq!(repaired.len(), 1);
    assert_eq!(repaired[0].truncated_bytes, 3);
    assert_eq!(repaired[0].data_bytes, 4000);
    assert_eq!(repaired[0].duration_ms, 125);
    let (_, samples) = read_wav(&tmp.0.join("rec-1.wav"));
    assert_eq!(samples, (0..2000).map(pattern).collect::<Vec<_>>());
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, "rec-1")).unwrap();
    assert_eq!(sc.state, SidecarState::Repaired);
    assert_eq!(sc.file, "rec-1.wav");
    assert_eq!(sc.format.channels, 2);
    // Byte-level check of both size fields.
    let bytes = fs::read(tmp.0.join("rec-1.wav")).unwrap();
    assert_eq!(bytes.len(), 44 + 4000);
    assert_eq!(&bytes[4..8], &(36u32 + 4000).to_le_bytes());
    assert_eq!(&bytes[40..44], &4000u32.to_le_bytes());
}

#[test]
fn repair_removes_parts_too_short_for_a_header() {
    let tmp = TempDir::new("short");
    let full = fake_part(&tmp.0, "whole", 0, 0);
    let bytes = fs::read(&full).unwrap();
    fs::remove_file(&full).unwrap();
    for (id, len) in [("a", 0), ("b", 10), ("c", 30), ("d", 43)] {
        fs::write(tmp.0.join(format!("{id}.wav.part")), &bytes[..len]).unwrap();
    }
    // The 44-byte header alone is an empty but valid recording.
    fs::write(tmp.0.join("e.wav.part"), &bytes[..44]).unwrap();
    let repaired = repair_dir(&tmp.0);
    assert_eq!(repaired.len(), 1);
    assert_eq!(repaired[0].duration_ms, 0);
    assert_eq!(files(&tmp.0), ["e.json", "e.wav"]);
}

#[test]
fn repair_finishes_a_sidecar_left_behind_after_the_rename() {
    let tmp = TempDir::new("stale");
    fake_part(&tmp.0, "late", 800, 0);
    repair_file(&tmp.0.join("late.wav.part")).unwrap();
    let mut sc = Sidecar::read(&Sidecar::path(&tmp.0, "late")).unwrap();
    sc.state = SidecarState::Recording;
    sc.duration_ms = 0;
    sc.write(&tmp.0).unwrap();
    // A sidecar whose audio is gone entirely is dropped.
    let mut orphan = sc.clone();
    orphan.id = "gone".into();
    orphan.write(&tmp.0).unwrap();

    let repaired = repair_dir(&tmp.0);
    assert_eq!(repaired.len(), 1);
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, "late")).unwrap();
    assert_eq!((sc.state, sc.duration_ms), (SidecarState::Repaired, 100));
    assert_eq!(files(&tmp.0), ["late.json", "late.wav"]);
}

// ---------------------------------------------------------------- sidecar

#[test]
fn sidecar_round_trips_and_lists() {
    let tmp = TempDir::new("sidecar");
    let sc = Sidecar {
        id: new_id(SystemTime::now()),
        call_id: "c1@x".into(),
        from: "sip:a@x".into(),
        to: "sip:b@x".into(),
        room: Some("lobby".into()),
        started: sidecar::rfc3339(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        ),
        duration_ms: 4321,
        format: Format {
            rate: 16000,
            channels: 2,
            bits: 16,
        },
        mode: RecordMode::MixedMono,
        digits: "12#".into(),
        stop_reason: Some(StopReason::Terminator(digit('#'))),
        state: SidecarState::Complete,
        file: "x.wav".into(),
    };
    assert_eq!(sc.started, "2023-11-14T22:13:20.123Z");
    sc.write(&tmp.0).unwrap();
    let text = fs::read_to_string(Sidecar::path(&tmp.0, &sc.id)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["state"], "complete");
    assert_eq!(json["mode"], "mixed_mono");
    assert_eq!(json["stop_reason"]["terminator"], "#");
    assert_eq!(json["format"]["rate"], 16000);
    assert_eq!(Sidecar::read(&Sidecar::path(&tmp.0, &sc.id)).unwrap(), sc);

    let mut other = sc.clone();
    other.id = "older".into();
    other.room = None;
    other.stop_reason = Some(StopReason::MaxDuration);
    other.started = "2020-01-01T00:00:00.000Z".into();
    other.write(&tmp.0).unwrap();
    let text = fs::read_to_string(Sidecar::path(&tmp.0, "older")).unwrap();
    assert!(!text.contains("room"));
    assert!(text.contains("\"max_duration\""));
    fs::write(tmp.0.join("junk.json"), "{").unwrap();
    let listed = list_recordings(&tmp.0).unwrap();
    assert_eq!(listed, [other, sc]);
}

#[test]
fn ids_are_unique_and_filesystem_safe() {
    let times = [
        SystemTime::UNIX_EPOCH - Duration::from_secs(10),
        SystemTime::UNIX_EPOCH,
        SystemTime::now(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000),
    ];
    let mut seen = std::collections::HashSet::new();
    for t in times {
        for _ in 0..500 {
            let id = new_id(t);
            assert!(sidecar::is_safe_id(&id), "{id}");
            assert!(!id.contains('/') && !id.contains('\\') && !id.contains(':'));
            assert!(seen.insert(id));
        }
    }
    let id = new_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    assert!(id.starts_with("20231114T221320Z-"), "{id}");
    assert_eq!(id.len(), 16 + 1 + 16);
    assert!(!sidecar::is_safe_id("../x") && !sidecar::is_safe_id(""));
}

// ---------------------------------------------------------------- room fields and timelines

#[test]
fn room_fields_survive_finish_and_repair_and_call_sidecars_stay_as_they_were() {
    let tmp = TempDir::new("roomfields");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let room = RoomFields {
        track_of: Some("mix-1".into()),
        member: Some(7),
        ..RoomFields::default()
    };
    let h = factory
        .start_with(
            meta(RecordMode::Inbound),
            StartOptions {
                id: Some("mix-1-m7".into()),
                room: room.clone(),
                timeline: false,
            },
        )
        .unwrap();
    assert_eq!(h.id(), "mix-1-m7");
    h.skip(3);
    h.push(&pattern_frame(0, N));
    h.skip(5);
    h.finish(RecordOutcome::new(StopReason::Requested));
    // An id that is not filesystem-safe is replaced.
    let bad = factory
        .start_with(
            meta(RecordMode::Inbound),
            StartOptions {
                id: Some("../x".into()),
                ..StartOptions::default()
            },
        )
        .unwrap();
    assert!(sidecar::is_safe_id(bad.id()));
    let plain = factory.start(meta(RecordMode::Inbound)).unwrap();
    let plain_id = plain.id().to_owned();
    plain.finish(RecordOutcome::new(StopReason::Requested));
    bad.finish(RecordOutcome::new(StopReason::Requested));
    drop(factory);
    thread.join().unwrap();

    let (_, samples) = read_wav(&tmp.0.join("mix-1-m7.wav"));
    let mut want = vec![0i16; 3];
    want.extend(pattern_frame(0, N));
    want.extend([0; 5]);
    assert_eq!(samples, want, "skipped samples are silence in place");
    let (sc, got) = Sidecar::read_with(&Sidecar::path(&tmp.0, "mix-1-m7")).unwrap();
    assert_eq!((sc.state, &got), (SidecarState::Complete, &room));

    // Repair keeps the room fields.
    let mut sc2 = sc.clone();
    sc2.state = SidecarState::Recording;
    sc2.write_with(&tmp.0, &room).unwrap();
    assert_eq!(repair_dir(&tmp.0).len(), 1);
    let (sc3, got) = Sidecar::read_with(&Sidecar::path(&tmp.0, "mix-1-m7")).unwrap();
    assert_eq!((sc3.state, got), (SidecarState::Repaired, room));

    let raw: serde_json::Value =
        serde_json::from_slice(&fs::read(Sidecar::path(&tmp.0, &plain_id)).unwrap()).unwrap();
    for key in ["timeline", "track_of", "member"] {
        assert!(raw.get(key).is_none(), "{key} in a call sidecar: {raw}");
    }
}

fn header_line(id: &str) -> String {
    serde_json::to_string(&TimelineHeader {
        id: id.into(),
        room: "r".into(),
        started: "2024-05-01T12:00:00.000Z".into(),
    })
    .unwrap()
}

fn entry(at_ms: u64, member: u64) -> TimelineEntry {
    TimelineEntry {
        at_ms,
        event: if member.is_multiple_of(2) {
            TimelineKind::Join
        } else {
            TimelineKind::TalkStart
        },
        member,
        call_id: format!("c{member}"),
        from: format!("sip:{member}@x"),
        track: None,
    }
}

#[test]
fn repair_turns_timeline_lines_into_a_document_and_keeps_a_finished_one() {
    let tmp = TempDir::new("timeline");
    let mut text = header_line("t1") + "\n";
    for e in [entry(40, 2), entry(10, 4), entry(40, 3)] {
        text += &serde_json::to_string(&e).unwrap();
        text.push('\n');
    }
    text += "{\"at_ms\": 9";
    fs::write(tmp.0.join("t1.timeline.jsonl"), &text).unwrap();
    // No header at all: nothing to keep.
    fs::write(tmp.0.join("t2.timeline.jsonl"), "{\"at").unwrap();

    assert!(repair_dir(&tmp.0).is_empty(), "timelines are not WAVs");
    assert_eq!(files(&tmp.0), ["t1.timeline.json"]);
    let tl = Timeline::read(&Timeline::path(&tmp.0, "t1")).unwrap();
    assert_eq!(tl.state, SidecarState::Repaired);
    assert_eq!(tl.duration_ms, 40, "no recording: the last event's time");
    assert_eq!(tl.events, [entry(10, 4), entry(40, 2), entry(40, 3)]);
    let members: Vec<u64> = tl.members.iter().map(|m| m.member).collect();
    assert_eq!(members, [4, 2]);

    // Killed after the document was written but before the lines were removed.
    fs::write(tmp.0.join("t1.timeline.jsonl"), header_line("t1") + "\n").unwrap();
    repair_dir(&tmp.0);
    assert_eq!(files(&tmp.0), ["t1.timeline.json"]);
    assert_eq!(
        Timeline::read(&Timeline::path(&tmp.0, "t1"))
            .unwrap()
            .events
            .len(),
        3
    );
}

#[test]
fn a_discarded_room_recording_leaves_no_timeline() {
    let tmp = TempDir::new("tl-discard");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let h = factory
        .start_with(
            meta(RecordMode::MixedMono),
            StartOptions {
                timeline: true,
                ..StartOptions::default()
            },
        )
        .unwrap();
    h.note(0, TimelineKind::Join, 1);
    let mut o = RecordOutcome::new(StopReason::Requested);
    o.min_frames = 10;
    h.finish(o);
    drop(factory);
    thread.join().unwrap();
    assert!(files(&tmp.0).is_empty(), "{:?}", files(&tmp.0));
}

#[test]
fn timeline_events_fall_back_to_the_control_channel_when_the_queue_is_full() {
    let tmp = TempDir::new("tl-full");
    let config = WriterConfig {
        queue_chunks: 1,
        ..WriterConfig::default()
    };
    let (factory, thread) = RecordingWriter::spawn_with(&tmp.0, config).unwrap();
    let h = factory
        .start_with(
            meta(RecordMode::MixedMono),
            StartOptions {
                timeline: true,
                ..StartOptions::default()
            },
        )
        .unwrap();
    let id = h.id().to_owned();
    factory.sync().unwrap();
    let resume = factory.pause();
    h.push(&silence());
    for i in 0..20 {
        h.note(i * 20, TimelineKind::TalkStart, 1);
    }
    drop(resume);
    h.finish(RecordOutcome::new(StopReason::Requested));
    drop(factory);
    thread.join().unwrap();
    let tl = Timeline::read(&Timeline::path(&tmp.0, &id)).unwrap();
    let at: Vec<u64> = tl.events.iter().map(|e| e.at_ms).collect();
    assert_eq!(at, (0..20).map(|i| i * 20).collect::<Vec<_>>());
}

proptest::proptest! {
    /// Whatever prefix of the lines survived a kill, finishing keeps exactly the events of
    /// the complete lines, in time order.
    #[test]
    fn finishing_keeps_exactly_the_complete_lines(
        ats in proptest::collection::vec(0u64..10_000, 0..30),
        cut in 0usize..4096,
    ) {
        let tmp = TempDir::new("tl-prop");
        let header = header_line("p") + "\n";
        let mut text = header.clone();
        let entries: Vec<TimelineEntry> =
            ats.iter().enumerate().map(|(i, &at)| entry(at, i as u64)).collect();
        let mut ends = Vec::new();
        for e in &entries {
            text += &serde_json::to_string(e).unwrap();
            text.push('\n');
            ends.push(text.len());
        }
        let keep = (header.len() + cut).min(text.len());
        let lines = tmp.0.join("p.timeline.jsonl");
        fs::write(&lines, &text.as_bytes()[..keep]).unwrap();
        let path = finish_timeline(&lines, SidecarState::Repaired, None).unwrap();
        let tl = Timeline::read(&path).unwrap();
        // A line cut just before its newline still parses whole.
        let complete = ends.iter().filter(|&&end| end - 1 <= keep).count();
        let mut want: Vec<TimelineEntry> = entries[..complete].to_vec();
        want.sort_by_key(|e| e.at_ms);
        proptest::prop_assert_eq!(tl.events, want);
        proptest::prop_assert!(!lines.exists());
    }
}

/// A recording whose rate is only known once audio flows (a room's) is started again at the
/// rate it is told before its first audio; once audio is written, the rate stays.
#[test]
fn a_recording_takes_a_new_rate_before_its_audio_and_keeps_it_after() {
    let tmp = TempDir::new("rate");
    let (factory, thread) = RecordingWriter::spawn(&tmp.0).unwrap();
    let early = factory.start(meta(RecordMode::Inbound)).unwrap();
    let late = factory.start(meta(RecordMode::Inbound)).unwrap();
    early.set_rate(ClockRate::HZ_16000);
    let wide: Vec<i16> = (0..320).map(|i| pattern(i) / 4).collect();
    assert!(early.push(&wide));
    assert!(late.push(&pattern_frame(0, N)));
    factory.sync().unwrap();
    late.set_rate(ClockRate::HZ_48000);
    assert!(late.push(&pattern_frame(1, N)));
    let (early_id, late_id) = (early.id().to_owned(), late.id().to_owned());
    early.finish(RecordOutcome::new(StopReason::Requested));
    late.finish(RecordOutcome::new(StopReason::Requested));
    drop(factory);
    thread.join().unwrap();

    let (spec, samples) = read_wav(&tmp.0.join(format!("{early_id}.wav")));
    assert_eq!(spec.sample_rate, 16000);
    assert_eq!(samples, wide);
    let sc = Sidecar::read(&Sidecar::path(&tmp.0, &early_id)).unwrap();
    assert_eq!((sc.format.rate, sc.duration_ms), (16000, 20));

    let (spec, samples) = read_wav(&tmp.0.join(format!("{late_id}.wav")));
    assert_eq!(spec.sample_rate, RATE, "audio was written: the rate stays");
    assert_eq!(samples.len(), 2 * N);
}
