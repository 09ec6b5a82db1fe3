//! Prompt decoding, resampling and caching against real files: the fixtures in
//! `tests/fixtures/audio/` (made by its `make.sh`) and the shipped `prompts/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchboard::media::prompt::{Prompt, PromptCache, PromptError, RECHECK_AFTER};
use switchboard::rtp::types::ClockRate;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio")
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts")
}

/// A fresh empty folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-prompt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Frequency from interpolated upward zero crossings over the middle of the signal.
fn frequency(x: &[i16], rate: u32) -> f64 {
    let (lo, hi) = (x.len() / 10, x.len() * 9 / 10);
    let mut crossings = Vec::new();
    for i in lo..hi {
        let (a, b) = (f64::from(x[i]), f64::from(x[i + 1]));
        if a < 0.0 && b >= 0.0 {
            crossings.push(i as f64 + a / (a - b));
        }
    }
    assert!(
        crossings.len() > 10,
        "no tone: {} crossings",
        crossings.len()
    );
    let span = crossings[crossings.len() - 1] - crossings[0];
    (crossings.len() - 1) as f64 * f64::from(rate) / span
}

fn rms_mid(x: &[i16]) -> f64 {
    let (lo, hi) = (x.len() / 10, x.len() * 9 / 10);
    let s: f64 = x[lo..hi].iter().map(|&v| f64::from(v).powi(2)).sum();
    (s / (hi - lo) as f64).sqrt()
}

/// The fixtures are a sine of peak 0.5 full scale.
const SOURCE_RMS: f64 = 0.5 * 32768.0 / std::f64::consts::SQRT_2;

fn check_tone(p: &Prompt, what: &str) {
    assert_eq!(p.rate, 8000);
    let f = frequency(&p.samples, 8000);
    assert!((f - 1000.0).abs() < 10.0, "{what}: {f:.2} Hz");
    let level = 20.0 * (rms_mid(&p.samples) / SOURCE_RMS).log10();
    assert!(level.abs() < 0.5, "{what}: level {level:+.2} dB");
    let d = p.duration().as_secs_f64();
    assert!((d - 1.0).abs() < 0.01, "{what}: {d:.4} s");
    println!("{what}: {f:.2} Hz, {level:+.3} dB, {d:.4} s");
}

#[test]
fn every_format_decodes_to_the_same_tone() {
    let cache = PromptCache::new(fixtures());
    for name in [
        "sine-16k-stereo",
        "sine-44k.flac",
        "sine-48k",
        "sine-44k.mp3",
        "sine-11k-u8",
        "sine-22k-s24",
        "sine-12k-stereo-s32",
        "sine-8k-f32",
    ] {
        let p = cache
            .load(name, ClockRate::HZ_8000)
            .unwrap_or_else(|e| panic!("{e}"));
        check_tone(&p, name);
    }
}

#[test]
fn loads_at_wideband_rate_too() {
    let cache = PromptCache::new(fixtures());
    let p = cache.load("sine-48k.ogg", ClockRate::HZ_16000).unwrap();
    assert_eq!(p.rate, 16000);
    let f = frequency(&p.samples, 16000);
    assert!((f - 1000.0).abs() < 10.0, "{f}");
    assert!((p.duration().as_secs_f64() - 1.0).abs() < 0.01);
}

#[test]
fn same_prompt_is_shared() {
    let cache = PromptCache::new(fixtures());
    let a = cache.load("sine-16k-stereo", ClockRate::HZ_8000).unwrap();
    let b = cache
        .load("sine-16k-stereo.wav", ClockRate::HZ_8000)
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(Arc::ptr_eq(&a.samples, &b.samples));
    let wide = cache.load("sine-16k-stereo", ClockRate::HZ_16000).unwrap();
    assert!(!Arc::ptr_eq(&a, &wide));
    assert_eq!(cache.len(), 2);
}

fn write_tone(path: &Path, seconds: f64) {
    // A 16-bit mono 8 kHz WAV by hand, so the test needs no encoder.
    let n = (8000.0 * seconds) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(2 * n).to_le_bytes());
    for i in 0..n {
        let v =
            (8000.0 * (2.0 * std::f64::consts::PI * 500.0 * f64::from(i) / 8000.0).sin()) as i16;
        b.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(path, b).unwrap();
}

#[test]
fn changed_file_is_reloaded() {
    let dir = TempDir::new("reload");
    let file = dir.0.join("hello.wav");
    write_tone(&file, 0.5);
    let cache = PromptCache::new(dir.0.clone());
    let first = cache.load("hello", ClockRate::HZ_8000).unwrap();
    assert_eq!(first.samples.len(), 4000);
    assert!(Arc::ptr_eq(
        &first,
        &cache.load("hello", ClockRate::HZ_8000).unwrap()
    ));

    write_tone(&file, 0.25);
    // Make the change visible even on a file system with coarse timestamps.
    let later = SystemTime::now() + Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let second = cache.load("hello", ClockRate::HZ_8000).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(second.samples.len(), 2000);
    // Players of the old prompt keep their samples.
    assert_eq!(first.samples.len(), 4000);
}

#[test]
fn a_prompt_loaded_within_the_recheck_interval_is_served_without_the_disk() {
    let dir = TempDir::new("recent");
    let file = dir.0.join("hello.wav");
    write_tone(&file, 0.5);
    let cache = PromptCache::new(dir.0.clone());
    let before = Instant::now();
    assert!(
        cache.recent("hello", ClockRate::HZ_8000, before).is_none(),
        "never loaded"
    );
    let first = cache.load("hello", ClockRate::HZ_8000).unwrap();
    let after = Instant::now();
    let again = cache.recent("hello", ClockRate::HZ_8000, after).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert!(
        cache.recent("hello", ClockRate::HZ_16000, after).is_none(),
        "another rate is another prompt"
    );
    assert!(
        cache
            .recent("hello.wav", ClockRate::HZ_8000, after)
            .is_none(),
        "by name as asked"
    );
    // Just inside the interval it is still served; at its end the file must be looked at.
    // (The load looked at the file between `before` and `after`.)
    let inside = before + RECHECK_AFTER - Duration::from_millis(1);
    assert!(cache.recent("hello", ClockRate::HZ_8000, inside).is_some());
    assert!(cache
        .recent("hello", ClockRate::HZ_8000, after + RECHECK_AFTER)
        .is_none());
    // Deleted from disk: served from memory only until the interval ends, then load says so.
    fs::remove_file(&file).unwrap();
    assert!(cache.recent("hello", ClockRate::HZ_8000, after).is_some());
    assert!(cache.load("hello", ClockRate::HZ_8000).is_err());
    cache.clear();
    assert!(
        cache.recent("hello", ClockRate::HZ_8000, after).is_none(),
        "clear forgets it"
    );
}

#[test]
fn missing_prompt_names_every_path_tried() {
    let dir = TempDir::new("missing");
    let cache = PromptCache::new(dir.0.clone());
    let err = cache.load("digits/5", ClockRate::HZ_8000).unwrap_err();
    let PromptError::NotFound { tried, .. } = &err else {
        panic!("{err:?}");
    };
    let want: Vec<PathBuf> = [
        "digits/5",
        "digits/5.wav",
        "digits/5.flac",
        "digits/5.ogg",
        "digits/5.mp3",
    ]
    .iter()
    .map(|p| dir.0.join(p))
    .collect();
    assert_eq!(tried, &want);
    let msg = err.to_string();
    for p in &want {
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }
}

#[test]
fn names_cannot_leave_the_root() {
    let cache = PromptCache::new(shipped());
    for name in ["../etc/passwd", "digits/../../Cargo.toml", "/etc/passwd"] {
        let err = cache.load(name, ClockRate::HZ_8000).unwrap_err();
        assert!(
            matches!(err, PromptError::OutsideRoot { .. }),
            "{name}: {err:?}"
        );
    }
    // An absolute path inside the root is fine.
    let inside = shipped().join("beep.wav").canonicalize().unwrap();
    assert!(cache
        .load(inside.to_str().unwrap(), ClockRate::HZ_8000)
        .is_ok());
}

#[cfg(unix)]
#[test]
fn symlink_out_of_the_root_is_refused() {
    let outside = TempDir::new("outside");
    write_tone(&outside.0.join("secret.wav"), 0.1);
    let root = TempDir::new("root");
    std::os::unix::fs::symlink(outside.0.join("secret.wav"), root.0.join("link.wav")).unwrap();
    let err = PromptCache::new(root.0.clone())
        .load("link", ClockRate::HZ_8000)
        .unwrap_err();
    assert!(matches!(err, PromptError::OutsideRoot { .. }), "{err:?}");
}

#[test]
fn damaged_files_are_errors_naming_the_file() {
    let dir = TempDir::new("corrupt");
    let put = |name: &str, bytes: &[u8]| fs::write(dir.0.join(name), bytes).unwrap();
    // FLAC whose stream info block is scrambled.
    let mut flac = fs::read(fixtures().join("sine-44k.flac")).unwrap();
    for b in &mut flac[8..42] {
        *b ^= 0x5a;
    }
    put("scrambled.flac", &flac);
    // FLAC cut inside its headers.
    put(
        "cut.flac",
        &fs::read(fixtures().join("sine-44k.flac")).unwrap()[..30],
    );
    // OGG/Vorbis with a damaged page (its CRC fails).
    let mut ogg = fs::read(fixtures().join("sine-48k.ogg")).unwrap();
    let mid = ogg.len() / 2;
    for b in &mut ogg[mid..mid + 200] {
        *b ^= 0x5a;
    }
    put("damaged.ogg", &ogg);
    // WAV claiming 13 bits per sample.
    let mut wav = fs::read(fixtures().join("sine-16k-stereo.wav")).unwrap();
    wav[34] = 13;
    put("13bit.wav", &wav);
    for name in ["scrambled.flac", "cut.flac", "damaged.ogg", "13bit.wav"] {
        let err = PromptCache::new(dir.0.clone())
            .load(name, ClockRate::HZ_8000)
            .unwrap_err();
        assert!(matches!(err, PromptError::Decode { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }

    // WAV with a format tag no decoder handles, and a file that is not audio at all.
    let mut wav = fs::read(fixtures().join("sine-16k-stereo.wav")).unwrap();
    wav[20] = 9;
    put("tag9.wav", &wav);
    put("text.wav", &b"hello, this is not a sound file\n".repeat(20));
    for name in ["tag9.wav", "text.wav"] {
        let err = PromptCache::new(dir.0.clone())
            .load(name, ClockRate::HZ_8000)
            .unwrap_err();
        assert!(
            matches!(err, PromptError::Unsupported { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }

    // A valid header with no samples.
    let mut empty = Vec::new();
    empty.extend_from_slice(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00");
    empty.extend_from_slice(&8000u32.to_le_bytes());
    empty.extend_from_slice(&16000u32.to_le_bytes());
    empty.extend_from_slice(b"\x02\x00\x10\x00data\x00\x00\x00\x00");
    put("empty.wav", &empty);
    let err = PromptCache::new(dir.0.clone())
        .load("empty", ClockRate::HZ_8000)
        .unwrap_err();
    assert!(matches!(err, PromptError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("empty.wav"), "{err}");
}

#[test]
fn truncated_file_keeps_what_it_has() {
    let dir = TempDir::new("truncated");
    let wav = fs::read(fixtures().join("sine-16k-stereo.wav")).unwrap();
    // Half the data, header still claiming all of it.
    fs::write(dir.0.join("half.wav"), &wav[..wav.len() / 2]).unwrap();
    let p = PromptCache::new(dir.0.clone())
        .load("half", ClockRate::HZ_8000)
        .unwrap();
    let d = p.duration().as_secs_f64();
    assert!((d - 0.5).abs() < 0.01, "{d}");
}

const SHIPPED: [&str; 31] = [
    "welcome",
    "menu",
    "enter-pin",
    "invalid",
    "goodbye",
    "beep",
    "digits/0",
    "digits/1",
    "digits/2",
    "digits/3",
    "digits/4",
    "digits/5",
    "digits/6",
    "digits/7",
    "digits/8",
    "digits/9",
    "conference/joined",
    "conference/left",
    "conference/alone",
    "conference/locked",
    "conference/full",
    "conference/wait-moderator",
    "record-after-tone",
    "enter-room",
    "voicemail/saved",
    "voicemail/options",
    // Names with their extension resolve to the same files.
    "welcome.wav",
    "digits/0.wav",
    "beep.wav",
    "menu.wav",
    "goodbye.wav",
];

#[test]
fn every_shipped_prompt_loads_and_is_audible() {
    let cache = PromptCache::new(shipped());
    for name in SHIPPED {
        let p = cache
            .load(name, ClockRate::HZ_8000)
            .unwrap_or_else(|e| panic!("{e}"));
        let d = p.duration();
        assert!(
            d > Duration::from_millis(200) && d < Duration::from_secs(15),
            "{name}: {d:?}"
        );
        let rms = (p.samples.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>()
            / p.samples.len() as f64)
            .sqrt();
        // Speech normalised to -3 dBFS peak sits far above -40 dBFS RMS.
        assert!(rms > 327.0, "{name}: rms {rms:.0}");
    }
    let beep = cache.load("beep", ClockRate::HZ_8000).unwrap();
    assert_eq!(beep.samples.len(), 2000);
    assert!((frequency(&beep.samples, 8000) - 1000.0).abs() < 2.0);
}

#[test]
fn playlist_of_shipped_prompts() {
    let cache = PromptCache::new(shipped());
    let mut list = cache.play(["welcome", "menu"], ClockRate::HZ_8000).unwrap();
    let total = list
        .prompts()
        .iter()
        .map(|p| p.samples.len())
        .sum::<usize>();
    let mut frame = [0i16; 160];
    let mut played = 0;
    loop {
        let n = list.fill(&mut frame);
        played += n;
        if n < frame.len() {
            break;
        }
    }
    assert_eq!(played, total);
    assert!(list.is_finished());
    assert!(matches!(
        cache.play(["welcome", "nope"], ClockRate::HZ_8000),
        Err(PromptError::NotFound { .. })
    ));
}
