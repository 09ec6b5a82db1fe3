//! Text to speech: the audio `say()` plays is measured (level, length, frequency), the
//! streaming source is compared sample by sample with whole-text synthesis, the cache and
//! its bound are checked through the counters, and the HTTP engine is driven against an
//! in-process server on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::media::frame::AudioSource;
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::media::resample::resample;
use switchboard::rtp::types::ClockRate;
use switchboard::speech::tts::{
    EngineKind, HttpFormat, SayRequest, Speech, Tts, TtsConfig, TtsError,
};

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

// The service is shared by every call's thread; a speech moves to the media thread.
const _: fn() = || {
    fn shared<T: Send + Sync + 'static>() {}
    fn moved<T: AudioSource + 'static>() {}
    shared::<Tts>();
    moved::<Speech>();
};

const RATES: [ClockRate; 3] = [ClockRate::HZ_8000, ClockRate::HZ_16000, ClockRate::HZ_48000];

const MENU: &str = "Welcome to the help line. For sales, press one. For support, press two.";

fn flite() -> Tts {
    Tts::new(&TtsConfig::default()).unwrap()
}

fn uncached() -> Tts {
    Tts::new(&TtsConfig {
        cache_bytes: 0,
        ..TtsConfig::default()
    })
    .unwrap()
}

fn say(text: &str) -> SayRequest {
    SayRequest::new(text)
}

fn seconds(samples: usize, rate: ClockRate) -> f64 {
    samples as f64 / f64::from(rate.hz())
}

/// Plays `speech` to its end in frames of `frame` samples, asking for a frame only when
/// one is ready (or the producer is done), so nothing played is underrun silence.
async fn play(speech: &mut Speech, frame: usize) -> Vec<i16> {
    let mut all = Vec::new();
    let mut buf = vec![0i16; frame];
    let underruns = speech.underruns();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "speech did not end within 30 s");
        if speech.is_producing() && speech.buffered() < frame {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let n = speech.fill(&mut buf);
        all.extend_from_slice(&buf[..n]);
        if n < frame {
            assert_eq!(speech.underruns(), underruns, "played underrun silence");
            return all;
        }
    }
}

/// Plays 20 ms ticks, as a leg does, until one carries sound; returns how many were silent.
async fn ticks_until_heard(speech: &mut Speech) -> usize {
    let mut frame = vec![0i16; speech.rate().hz() as usize / 50];
    for silent in 0..500 {
        speech.fill(&mut frame);
        if rms_dbfs(&frame) > -40.0 {
            return silent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing heard within 10 s of ticks");
}

/// Largest step between neighbouring samples: a click at a join shows here.
fn max_jump(pcm: &[i16]) -> i32 {
    pcm.windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap_or(0)
}

fn max_diff(a: &[i16], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs())
        .max()
        .unwrap_or(0)
}

#[test]
fn hello_has_speech_energy_and_a_sane_length_at_every_leg_rate() {
    let tts = flite();
    for rate in RATES {
        let p = tts.synthesize(&say("hello"), rate).unwrap();
        assert_eq!(p.rate, rate.hz());
        let secs = seconds(p.samples.len(), rate);
        assert!((0.3..1.5).contains(&secs), "{} Hz: {secs} s", rate.hz());
        let level = rms_dbfs(&p.samples);
        assert!(level > -30.0, "{} Hz: {level:.1} dBFS", rate.hz());
    }
    // Longer text is longer speech: about two to four words a second.
    let p = tts.synthesize(&say(MENU), ClockRate::HZ_8000).unwrap();
    let words = MENU.split_whitespace().count() as f64;
    let secs = seconds(p.samples.len(), ClockRate::HZ_8000);
    assert!(
        (words / 4.0..words / 1.5).contains(&secs),
        "{secs} s for {words} words"
    );
}

#[test]
fn a_faster_rate_gives_shorter_audio() {
    let tts = flite();
    let len = |rate: Option<f32>| {
        let req = SayRequest { rate, ..say(MENU) };
        tts.synthesize(&req, ClockRate::HZ_16000)
            .unwrap()
            .samples
            .len() as f64
    };
    let normal = len(None);
    let fast = len(Some(2.0)) / normal;
    let slow = len(Some(0.5)) / normal;
    assert!(
        (0.4..0.7).contains(&fast),
        "rate 2.0: {fast:.2} of the length"
    );
    assert!(
        (1.5..2.5).contains(&slow),
        "rate 0.5: {slow:.2} of the length"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_in_frames_of_any_size_reproduces_the_whole_synthesis() {
    let whole_tts = flite();
    let live_tts = uncached();
    for rate in RATES {
        let whole = {
            let t = whole_tts.clone();
            tokio::task::spawn_blocking(move || t.synthesize(&say(MENU), rate))
                .await
                .unwrap()
                .unwrap()
        };
        for frame in [160, 320, 960] {
            let mut speech = live_tts.speak(&say(MENU), rate).unwrap();
            assert!(!speech.is_cached());
            let played = play(&mut speech, frame).await;
            assert!(speech.error().is_none());
            assert_eq!(
                played.len(),
                whole.samples.len(),
                "{} Hz by {frame}",
                rate.hz()
            );
            assert_eq!(
                &played[..],
                &whole.samples[..],
                "{} Hz by {frame}",
                rate.hz()
            );
        }
    }
    assert_eq!(live_tts.stats().cache_entries, 0);
}

#[test]
fn the_joined_stream_matches_the_whole_text_resampled_without_clicks() {
    // flite-rs's own whole-text audio, resampled once: what sentence-by-sentence streaming
    // must sound like.
    let mut engine = flite_rs::Engine::new();
    for (voice, rate) in [
        ("kal", ClockRate::HZ_48000),
        ("kal16", ClockRate::HZ_48000),
        ("kal16", ClockRate::HZ_8000),
    ] {
        assert!(engine.select_voice(voice));
        let native = engine.synthesize(MENU);
        let reference = resample(&native.samples, native.sample_rate, rate).unwrap();
        let req = SayRequest {
            voice: Some(voice.into()),
            ..say(MENU)
        };
        let ours = flite().synthesize(&req, rate).unwrap();
        assert_eq!(
            ours.samples.len(),
            reference.len(),
            "{voice} at {}",
            rate.hz()
        );
        let level = rms_dbfs(&ours.samples) - rms_dbfs(&reference);
        assert!(
            level.abs() < 0.05,
            "{voice}: level differs by {level:.3} dB"
        );
        let diff = max_diff(&ours.samples, &reference);
        assert!(
            diff <= 64,
            "{voice} at {}: differs by up to {diff}",
            rate.hz()
        );
        let (jump, reference_jump) = (max_jump(&ours.samples), max_jump(&reference));
        assert!(
            jump <= reference_jump + 64,
            "{voice}: step {jump} vs {reference_jump}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_sentence_comes_from_the_cache_with_identical_samples() {
    let tts = flite();
    let mut first = tts.speak(&say(MENU), ClockRate::HZ_8000).unwrap();
    let heard = play(&mut first, 160).await;
    assert!(!first.is_cached());
    let before = tts.stats();
    assert_eq!(
        (before.synthesized, before.cached, before.cache_entries),
        (1, 0, 1)
    );
    assert_eq!(before.cache_bytes, heard.len() as u64 * 2);

    let mut again = tts.speak(&say(MENU), ClockRate::HZ_8000).unwrap();
    assert!(again.is_cached());
    assert_eq!(play(&mut again, 160).await, heard);
    let blocking = tokio::task::spawn_blocking({
        let tts = tts.clone();
        move || tts.synthesize(&say(MENU), ClockRate::HZ_8000)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&blocking.samples[..], &heard[..]);
    let after = tts.stats();
    assert_eq!(
        (after.synthesized, after.cached, after.cache_entries),
        (1, 2, 1)
    );

    // Another leg rate, speaking rate or voice is another sentence.
    let wide = tts.speak(&say(MENU), ClockRate::HZ_16000).unwrap();
    assert!(!wide.is_cached());
    let faster = SayRequest {
        rate: Some(1.5),
        ..say(MENU)
    };
    assert!(!tts.speak(&faster, ClockRate::HZ_8000).unwrap().is_cached());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_both_play_the_sentence_whole() {
    let tts = flite();
    let mut a = tts.speak(&say(MENU), ClockRate::HZ_16000).unwrap();
    let mut b = tts.speak(&say(MENU), ClockRate::HZ_16000).unwrap();
    let (x, y) = tokio::join!(play(&mut a, 320), play(&mut b, 320));
    assert_eq!(x, y);
    assert!(rms_dbfs(&x) > -30.0);
    let stats = tts.stats();
    assert_eq!((stats.synthesized, stats.cache_entries), (2, 1));
    let mut c = tts.speak(&say(MENU), ClockRate::HZ_16000).unwrap();
    assert!(c.is_cached());
    assert_eq!(play(&mut c, 320).await, x);
}

#[test]
fn the_cache_stays_within_its_bound_evicting_the_least_recently_used() {
    let sentences = [
        "Good morning.",
        "Good afternoon.",
        "Good evening.",
        "Good night.",
    ];
    // Each is roughly 0.6-1 s at 8 kHz: 10-16 KB. Room for about two.
    let bound = 36_000;
    let tts = Tts::new(&TtsConfig {
        cache_bytes: bound,
        ..TtsConfig::default()
    })
    .unwrap();
    let rate = ClockRate::HZ_8000;
    let size = |t: &str| flite().synthesize(&say(t), rate).unwrap().samples.len() as u64 * 2;
    assert!(
        sentences.iter().all(|t| size(t) < bound / 2),
        "sentences too long for the test"
    );
    for t in sentences {
        tts.synthesize(&say(t), rate).unwrap();
        // The first sentence stays in use, so it is never the one evicted.
        tts.synthesize(&say(sentences[0]), rate).unwrap();
        assert!(tts.stats().cache_bytes <= bound, "{:?}", tts.stats());
    }
    let stats = tts.stats();
    assert!(
        stats.cache_entries >= 2 && stats.cache_entries < 4,
        "{stats:?}"
    );
    let hits = stats.cached;
    tts.synthesize(&say(sentences[0]), rate).unwrap();
    tts.synthesize(&say(sentences[3]), rate).unwrap();
    assert_eq!(
        tts.stats().cached,
        hits + 2,
        "most recent and most used are kept"
    );
    let synthesized = tts.stats().synthesized;
    tts.synthesize(&say(sentences[1]), rate).unwrap();
    assert_eq!(
        tts.stats().synthesized,
        synthesized + 1,
        "the least recently used went"
    );

    // A sentence larger than the whole bound plays but is not kept.
    let tiny = Tts::new(&TtsConfig {
        cache_bytes: 1000,
        ..TtsConfig::default()
    })
    .unwrap();
    tiny.synthesize(&say(MENU), rate).unwrap();
    assert_eq!(tiny.stats().cache_entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_frame_plays_before_a_long_text_is_synthesized() {
    // About a minute of speech; the speech buffer holds two seconds, so synthesis cannot
    // have finished when the first words are heard.
    let text = MENU.repeat(12);
    let tts = flite();
    let mut speech = tts.speak(&say(&text), ClockRate::HZ_48000).unwrap();
    ticks_until_heard(&mut speech).await;
    assert!(
        speech.is_producing(),
        "the producer finished before the first words"
    );
    assert_eq!(tts.stats().synthesized, 0);
    // A caller who leaves (or barges in) early: the rest is still made, for the cache.
    drop(speech);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tts.stats().cache_entries == 0 {
        assert!(Instant::now() < deadline, "never cached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let again = tts.speak(&say(&text), ClockRate::HZ_48000).unwrap();
    assert!(again.is_cached());
    assert!(seconds(again.buffered(), ClockRate::HZ_48000) > 40.0);
    assert_eq!(tts.stats().synthesized, 1);
}

#[test]
fn bad_requests_are_refused_with_clear_errors() {
    let tts = Tts::new(&TtsConfig {
        max_chars: 40,
        ..TtsConfig::default()
    })
    .unwrap();
    let rate = ClockRate::HZ_8000;
    let err = |req: SayRequest| tts.synthesize(&req, rate).unwrap_err();
    assert_eq!(err(say("")), TtsError::EmptyText);
    assert_eq!(err(say("  \n ")), TtsError::EmptyText);
    assert_eq!(
        err(say(&"a".repeat(41))).to_string(),
        "say(): text of 41 characters is over the limit of 40 ([tts] max_chars)"
    );
    assert!(
        tts.synthesize(&say(&"a ".repeat(20)), rate).is_ok(),
        "exactly the limit"
    );
    assert_eq!(
        err(say("bell\u{7}")).to_string(),
        "say(): text holds control character U+0007"
    );
    assert!(tts.synthesize(&say("two\nlines\tand a tab"), rate).is_ok());
    assert_eq!(
        err(say("<speak>hi</speak>")).to_string(),
        "say(): text holds markup (<speak>); say() speaks plain text"
    );
    let at = |r: f32| SayRequest {
        rate: Some(r),
        ..say("hi")
    };
    assert_eq!(
        err(at(0.49)).to_string(),
        "say(): rate 0.49 is outside 0.5-2.0"
    );
    assert!(matches!(err(at(2.01)), TtsError::BadRate(_)));
    assert!(matches!(err(at(f32::NAN)), TtsError::BadRate(_)));
    assert!(tts.synthesize(&at(0.5), rate).is_ok());
    assert!(tts.synthesize(&at(2.0), rate).is_ok());
    let voice = SayRequest {
        voice: Some("slt".into()),
        ..say("hi")
    };
    assert_eq!(
        err(voice).to_string(),
        "say(): unknown voice \"slt\" (voices: kal, kal16)"
    );
    assert_eq!(tts.stats().errors, 9);
    // Outside a runtime there is nothing to synthesize on.
    assert_eq!(
        tts.speak(&say("hi"), rate).unwrap_err(),
        TtsError::NoRuntime
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_never_allocates() {
    let tts = flite();
    let mut speech = tts.speak(&say(MENU), ClockRate::HZ_16000).unwrap();
    let mut frame = [0i16; 320];
    let deadline = Instant::now() + Duration::from_secs(10);
    while speech.buffered() < 16000 && speech.is_producing() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Ready audio, underrun silence and the end, all counted.
    let n = thread_alloc::allocations(|| {
        for _ in 0..400 {
            speech.fill(&mut frame);
        }
    });
    assert_eq!(n, 0, "live fill allocated");
    play(&mut speech, 320).await;
    let mut cached = tts.speak(&say(MENU), ClockRate::HZ_16000).unwrap();
    assert!(cached.is_cached());
    let n = thread_alloc::allocations(|| while cached.fill(&mut frame) == frame.len() {});
    assert_eq!(n, 0, "cached fill allocated");
}

#[test]
fn flite_reads_numbers_money_and_times_as_a_person_does() {
    let tts = flite();
    for (text, words) in [
        // Read right by flite-rs itself.
        ("123", "one hundred twenty three"),
        ("1,234", "one thousand two hundred thirty four"),
        ("$12.50", "twelve dollars fifty cents"),
        ("$1", "one dollar"),
        ("3:30 pm", "three thirty pm"),
        ("10:05", "ten oh five"),
        ("2nd", "second"),
        ("21st", "twenty first"),
        ("-5", "minus five"),
        ("3.14", "three point one four"),
        ("50%", "fifty per cent"),
        ("1984", "nineteen eighty four"),
        ("555-1234", "five five five one two three four"),
        (
            "(555) 123-4567",
            "five five five one two three four five six seven",
        ),
        // Rewritten first.
        ("7:00", "seven oclock"),
        ("at 9:00, please", "at nine oclock please"),
        ("7:00 pm", "seven pm"),
        ("€5", "five euros"),
        ("£3.20", "three pounds twenty pence"),
        ("$0.99", "ninety nine cents"),
        ("press #3", "press number three"),
    ] {
        assert_eq!(tts.words(text).join(" "), words, "{text:?}");
    }
}

#[test]
fn settings_have_defaults_refuse_unknown_keys_and_validate() {
    let c: TtsConfig = toml::from_str("").unwrap();
    assert_eq!(c, TtsConfig::default());
    assert_eq!(
        (c.engine, c.voice.as_deref(), c.max_chars),
        (EngineKind::Flite, None, 5000)
    );
    assert!(toml::from_str::<TtsConfig>("speed = 2").is_err());
    let c: TtsConfig = toml::from_str(
        "engine = \"http\"\nurl = \"http://127.0.0.1:8880\"\nmodel = \"kokoro\"\nvoice = \"af_heart\"\nformat = \"pcm\"\napi_key_env = \"TTS_API_KEY\"",
    )
    .unwrap();
    assert_eq!(c.validate(), Ok(()));
    // Made outside a runtime: nothing is connected until a sentence is asked for.
    assert!(Tts::new(&c).is_ok());
    let bad = |c: TtsConfig| c.validate().unwrap_err().to_string();
    assert_eq!(
        bad(TtsConfig {
            url: None,
            ..c.clone()
        }),
        "tts: engine \"http\" needs url"
    );
    assert!(bad(TtsConfig {
        url: Some("https://example.com".into()),
        ..c.clone()
    })
    .contains("only http://"));
    assert_eq!(
        bad(TtsConfig {
            model: None,
            ..c.clone()
        }),
        "tts: engine \"http\" needs model"
    );
    assert_eq!(
        bad(TtsConfig {
            voice: None,
            ..c.clone()
        }),
        "tts: engine \"http\" needs voice"
    );
    assert_eq!(
        bad(TtsConfig {
            voice: Some("slt".into()),
            ..TtsConfig::default()
        }),
        "tts: voice \"slt\" is not a flite voice (kal, kal16)"
    );
    assert!(bad(TtsConfig {
        timeout_ms: 0,
        ..c.clone()
    })
    .contains("timeout_ms"));
    assert!(Tts::new(&TtsConfig {
        max_chars: 0,
        ..TtsConfig::default()
    })
    .is_err());
}

mod http {
    use super::*;

    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::Router;
    use tokio::sync::{mpsc, oneshot, Mutex};

    const KEY_ENV: &str = "SWITCHBOARD_TTS_TEST_KEY";

    /// What the server saw of one request.
    #[derive(Debug)]
    struct Seen {
        bearer: Option<String>,
        json: serde_json::Value,
    }

    type Answer = Arc<dyn Fn(&serde_json::Value) -> Response + Send + Sync>;

    /// A speech server on 127.0.0.1 that records each request and answers with `answer`.
    async fn server(answer: Answer) -> (String, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/v1/audio/speech",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                let answer = answer.clone();
                async move {
                    let bearer = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let response = answer(&json);
                    let _ = tx.send(Seen { bearer, json });
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), rx)
    }

    fn config(url: &str, format: HttpFormat) -> TtsConfig {
        TtsConfig {
            engine: EngineKind::Http,
            url: Some(url.to_string()),
            model: Some("tts-test".into()),
            voice: Some("alloy".into()),
            api_key_env: Some(KEY_ENV.into()),
            format,
            timeout_ms: 2000,
            ..TtsConfig::default()
        }
    }

    fn tone(rate: u32, hz: f64, secs: f64) -> Vec<i16> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .map(|i| {
                ((i as f64 * hz * std::f64::consts::TAU / f64::from(rate)).sin() * 10000.0) as i16
            })
            .collect()
    }

    fn le_bytes(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// A WAV header for 16-bit mono at `rate`, with the data length unknown (streamed).
    fn wav_header(rate: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\xff\xff\xff\xffWAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data\xff\xff\xff\xff");
        b
    }

    fn audio(content_type: &'static str, bytes: Vec<u8>) -> Response {
        ([("content-type", content_type)], bytes).into_response()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wav_answer_is_played_at_the_leg_rate_and_the_request_is_openai_shaped() {
        // Safe here: no other test reads this variable.
        std::env::set_var(KEY_ENV, "sk-test");
        let body = [wav_header(22050), le_bytes(&tone(22050, 440.0, 0.5))].concat();
        let (url, mut seen) = server(Arc::new(move |_: &serde_json::Value| {
            audio("audio/wav", body.clone())
        }))
        .await;
        let tts = Tts::new(&config(&url, HttpFormat::Wav)).unwrap();
        let req = SayRequest {
            rate: Some(1.25),
            ..say("Your call is important to us.")
        };
        let mut speech = tts.speak(&req, ClockRate::HZ_8000).unwrap();
        let pcm = play(&mut speech, 160).await;
        assert!(speech.error().is_none(), "{:?}", speech.error());
        assert_eq!(pcm.len(), 4000);
        assert!(tone_share(&pcm[400..3600], 440.0, 8000.0) > 0.95);
        let s = seen.recv().await.unwrap();
        assert_eq!(s.bearer.as_deref(), Some("Bearer sk-test"));
        assert_eq!(
            s.json,
            serde_json::json!({
                "model": "tts-test",
                "input": "Your call is important to us.",
                "voice": "alloy",
                "response_format": "wav",
                "speed": 1.25,
            })
        );
        // The second time comes from the cache: the server hears nothing.
        let mut again = tts.speak(&req, ClockRate::HZ_8000).unwrap();
        assert!(again.is_cached());
        assert_eq!(play(&mut again, 160).await, pcm);
        assert!(seen.try_recv().is_err());
        let stats = tts.stats();
        assert_eq!((stats.synthesized, stats.cached, stats.errors), (1, 1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pcm_answer_is_24_khz_and_blocking_synthesis_reads_it_too() {
        let body = le_bytes(&tone(24000, 1000.0, 0.4));
        let (url, mut seen) = server(Arc::new(move |_: &serde_json::Value| {
            audio("audio/pcm", body.clone())
        }))
        .await;
        let tts = Tts::new(&config(&url, HttpFormat::Pcm)).unwrap();
        let mut speech = tts.speak(&say("one"), ClockRate::HZ_16000).unwrap();
        let pcm = play(&mut speech, 320).await;
        assert_eq!(pcm.len(), 6400);
        assert!(tone_share(&pcm[800..5600], 1000.0, 16000.0) > 0.95);
        assert_eq!(seen.recv().await.unwrap().json["response_format"], "pcm");
        let whole =
            tokio::task::spawn_blocking(move || tts.synthesize(&say("two"), ClockRate::HZ_48000))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(whole.samples.len(), 19200);
        assert!(tone_share(&whole.samples[2400..16800], 1000.0, 48000.0) > 0.95);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wav_of_every_sample_format_and_whole_mp3_flac_ogg_answers_are_read() {
        // One second of 1 kHz in each file; the text asked for names the file to answer.
        let (url, _seen) = server(Arc::new(|json: &serde_json::Value| {
            let name = json["input"].as_str().unwrap_or_default();
            let path = format!("{}/tests/fixtures/audio/{name}", env!("CARGO_MANIFEST_DIR"));
            audio("audio/wav", std::fs::read(path).unwrap_or_default())
        }))
        .await;
        let tts = Tts::new(&config(&url, HttpFormat::Wav)).unwrap();
        for name in [
            "sine-11k-u8.wav",
            "sine-16k-stereo.wav",
            "sine-22k-s24.wav",
            "sine-12k-stereo-s32.wav",
            "sine-8k-f32.wav",
            "sine-44k.mp3",
            "sine-44k.flac",
            "sine-48k.ogg",
        ] {
            let mut speech = tts.speak(&say(name), ClockRate::HZ_16000).unwrap();
            let pcm = play(&mut speech, 320).await;
            assert!(speech.error().is_none(), "{name}: {:?}", speech.error());
            let secs = seconds(pcm.len(), ClockRate::HZ_16000);
            assert!((secs - 1.0).abs() < 0.03, "{name}: {secs} s");
            let share = tone_share(&pcm[1600..14400], 1000.0, 16000.0);
            assert!(share > 0.9, "{name}: {share:.3} of the power at 1 kHz");
        }
    }

    /// A WAV answer whose body is what comes through `rx`, as it comes.
    fn streamed_wav(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Response::builder()
            .header("content-type", "audio/wav")
            .body(Body::from_stream(stream))
            .unwrap()
    }

    /// An answer whose header comes at once and whose audio comes after `delay`, then
    /// `chunks` pieces of 1 s of silence at 8 kHz (endless when `None`).
    fn delayed(delay: Duration, chunks: Option<usize>) -> Answer {
        Arc::new(move |_: &serde_json::Value| {
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from(wav_header(8000)))).await;
                tokio::time::sleep(delay).await;
                let second = Bytes::from(vec![0u8; 16000]);
                let mut sent = 0;
                while chunks.is_none_or(|n| sent < n) {
                    if tx.send(Ok(second.clone())).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
            });
            streamed_wav(rx)
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pause_inside_the_timeout_is_waited_for_and_endless_audio_is_cut() {
        let (url, _s) = server(delayed(Duration::from_millis(100), Some(2))).await;
        let patient = TtsConfig {
            timeout_ms: 1500,
            ..config(&url, HttpFormat::Wav)
        };
        let tts = Tts::new(&patient).unwrap();
        let mut speech = tts.speak(&say("wait"), ClockRate::HZ_8000).unwrap();
        assert_eq!(play(&mut speech, 160).await.len(), 16000);
        assert!(speech.error().is_none(), "{:?}", speech.error());

        let (url, _s) = server(delayed(Duration::ZERO, None)).await;
        let tts = Tts::new(&config(&url, HttpFormat::Wav)).unwrap();
        let e = tokio::task::spawn_blocking(move || {
            tts.synthesize(&say("forever"), ClockRate::HZ_8000)
        })
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(e, TtsError::AudioTooLong);
        assert_eq!(e.to_string(), "speech longer than 600 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_answer_is_playable_before_its_body_ends() {
        let (gate_tx, gate_rx) = oneshot::channel::<()>();
        let gate = Arc::new(Mutex::new(Some(gate_rx)));
        let first = [wav_header(16000), le_bytes(&tone(16000, 500.0, 0.5))].concat();
        let rest = le_bytes(&tone(16000, 500.0, 0.5));
        let answer: Answer = Arc::new(move |_: &serde_json::Value| {
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
            let (first, rest, gate) = (first.clone(), rest.clone(), gate.clone());
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from(first))).await;
                if let Some(g) = gate.lock().await.take() {
                    let _ = g.await;
                }
                let _ = tx.send(Ok(Bytes::from(rest))).await;
            });
            streamed_wav(rx)
        });
        let (url, _seen) = server(answer).await;
        let tts = Tts::new(&config(&url, HttpFormat::Wav)).unwrap();
        let mut speech = tts.speak(&say("slowly"), ClockRate::HZ_16000).unwrap();
        let ticks = ticks_until_heard(&mut speech).await;
        assert!(speech.is_producing(), "the body is still open");
        gate_tx.send(()).unwrap();
        let rest = play(&mut speech, 320).await;
        assert!(speech.error().is_none(), "{:?}", speech.error());
        // A second in all, less what was heard before the gate opened.
        let heard = 320 * (ticks + 1) + rest.len();
        assert!(
            heard >= 16000 && heard <= 16000 + 320 * (ticks + 1),
            "{heard}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_errors_garbage_silence_and_absence_end_the_speech_with_clear_errors() {
        async fn fails(tts: &Tts) -> TtsError {
            let mut speech = tts.speak(&say("hello"), ClockRate::HZ_8000).unwrap();
            let pcm = play(&mut speech, 160).await;
            assert!(pcm.is_empty(), "{} samples", pcm.len());
            speech.error().cloned().expect("an error")
        }

        let (url, _s) = server(Arc::new(|_: &serde_json::Value| {
            (StatusCode::INTERNAL_SERVER_ERROR, "model not loaded").into_response()
        }))
        .await;
        let tts = Tts::new(&config(&url, HttpFormat::Wav)).unwrap();
        let e = fails(&tts).await;
        assert!(matches!(e, TtsError::Status { status: 500, .. }), "{e}");
        assert!(
            e.to_string().ends_with("answered 500: model not loaded"),
            "{e}"
        );
        assert_eq!(tts.stats().errors, 1);
        assert_eq!(tts.stats().cache_entries, 0);

        let (url, _s) = server(Arc::new(|_: &serde_json::Value| {
            audio("audio/wav", b"certainly not a wave file".to_vec())
        }))
        .await;
        let e = fails(&Tts::new(&config(&url, HttpFormat::Wav)).unwrap()).await;
        assert!(matches!(e, TtsError::BadAudio(_)), "{e}");

        let (url, _s) = server(Arc::new(|_: &serde_json::Value| {
            audio(
                "application/json",
                br#"{"error":"quota exceeded"}"#.to_vec(),
            )
        }))
        .await;
        let e = fails(&Tts::new(&config(&url, HttpFormat::Pcm)).unwrap()).await;
        assert!(e.to_string().contains("quota exceeded"), "{e}");

        let (url, _s) = server(Arc::new(|_: &serde_json::Value| {
            audio("audio/wav", wav_header(8000))
        }))
        .await;
        let e = fails(&Tts::new(&config(&url, HttpFormat::Wav)).unwrap()).await;
        assert_eq!(
            e.to_string(),
            "tts answer is not usable audio: no audio in the answer"
        );

        // The body never comes.
        let (url, _s) = server(Arc::new(|_: &serde_json::Value| {
            let stream = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
            Response::builder().body(Body::from_stream(stream)).unwrap()
        }))
        .await;
        let slow = TtsConfig {
            timeout_ms: 150,
            ..config(&url, HttpFormat::Wav)
        };
        let e = fails(&Tts::new(&slow).unwrap()).await;
        assert!(matches!(e, TtsError::Timeout { ms: 150, .. }), "{e}");

        // Nobody listening.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = fails(
            &Tts::new(&config(
                &format!("http://127.0.0.1:{port}"),
                HttpFormat::Wav,
            ))
            .unwrap(),
        )
        .await;
        assert!(matches!(e, TtsError::Http { .. }), "{e}");
    }
}
