//! Speech recognition engines: PocketSphinx on synthesized words (clean and through G.711),
//! on silence and noise; a transcription server in the test's own process; the settings
//! that are refused and the message when PocketSphinx is missing.
//!
//! Tests that need PocketSphinx skip with a note when it is not installed, and fail when
//! `CI=true` (`.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use switchboard::media::codec::g711::{ulaw_decode, ulaw_encode};
use switchboard::media::resample::resample;
use switchboard::rtp::types::ClockRate;
use switchboard::speech::asr::{
    Asr, AsrConfig, AsrCounters, AsrEngineKind, AsrError, LibraryNames, INSTALL_HINT,
};

/// The default lowest confidence of a choice.
const MIN: f32 = 0.45;
const WORDS: [&str; 6] = ["support", "sales", "billing", "yes", "no", "operator"];

fn choices(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn pocketsphinx_config() -> AsrConfig {
    AsrConfig {
        engine: Some(AsrEngineKind::Pocketsphinx),
        decoders: 2,
        ..AsrConfig::default()
    }
}

/// PocketSphinx, or `None` (with a note) when it is not installed outside CI.
fn pocketsphinx() -> Option<Asr> {
    match Asr::new(&pocketsphinx_config()) {
        Ok(asr) => Some(asr),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PocketSphinx is required under CI: {e}")
        }
        Err(e) => {
            eprintln!("note: skipped, PocketSphinx is not installed here ({e})");
            None
        }
    }
}

/// `text` spoken by flite's `voice` ("kal": 8 kHz, "kal16": 16 kHz).
fn say(text: &str, voice: &str) -> (Vec<i16>, ClockRate) {
    let mut engine = flite_rs::Engine::new();
    assert!(engine.select_voice(voice), "no voice {voice}");
    let audio = engine.synthesize(text);
    assert!(audio.samples.len() > 1000, "{text:?} gave no speech");
    (audio.samples, ClockRate::new(audio.sample_rate).unwrap())
}

/// What a caller's phone would send: 8 kHz, through µ-law and back.
fn telephone(samples: &[i16], rate: ClockRate) -> Vec<i16> {
    let narrow = resample(samples, rate.hz(), ClockRate::HZ_8000).unwrap();
    narrow
        .iter()
        .map(|&s| ulaw_decode(ulaw_encode(s)))
        .collect()
}

/// Deterministic white noise, uniform within ±`amplitude`.
fn white_noise(len: usize, amplitude: f32, seed: u64) -> Vec<i16> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len)
        .map(|_| ((rng.f32() * 2.0 - 1.0) * amplitude) as i16)
        .collect()
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

#[test]
fn pocketsphinx_recognises_each_choice_from_two_voices_clean_and_by_telephone() {
    let Some(asr) = pocketsphinx() else { return };
    let menu = choices(&WORDS);
    let mut right = 0;
    let mut total = 0;
    let mut table = String::new();
    for voice in ["kal", "kal16"] {
        let mut voice_right = 0;
        for word in WORDS {
            let (speech, rate) = say(word, voice);
            let phone = telephone(&speech, rate);
            for (line, samples, rate) in [
                ("clean", speech.clone(), rate),
                ("G.711", phone, ClockRate::HZ_8000),
            ] {
                let start = Instant::now();
                let r = asr.recognize(&samples, rate, &menu).unwrap();
                let took = start.elapsed();
                let ok = r.choice.as_deref() == Some(word);
                table += &format!(
                    "{voice:6} {line:6} {:5} Hz {word:9} -> {:12} {:?} {:.2} ({} ms for {} ms)\n",
                    rate.hz(),
                    format!("{:?}", r.text),
                    r.choice,
                    r.confidence,
                    took.as_millis(),
                    samples.len() as u64 * 1000 / u64::from(rate.hz())
                );
                if ok {
                    assert!((MIN..=1.0).contains(&r.confidence), "{r:?}");
                    voice_right += 1;
                }
                total += 1;
            }
        }
        table += &format!("{voice}: {voice_right} of {} right\n", WORDS.len() * 2);
        right += voice_right;
    }
    eprintln!("{table}");
    assert_eq!(
        right, total,
        "every word of the set, every voice and line\n{table}"
    );
    assert_eq!(
        asr.counters(),
        AsrCounters {
            recognitions: total,
            errors: 0
        }
    );
}

/// `text` spoken by espeak-ng's US English voice, or `None` (with a note) when it is not
/// installed outside CI.
fn espeak(text: &str) -> Option<(Vec<i16>, ClockRate)> {
    let dir = std::env::temp_dir().join(format!("asr-espeak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join(format!("{}.wav", text.replace(' ', "_")));
    match std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
    {
        Ok(s) if s.success() => {}
        other if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("espeak-ng is required under CI: {other:?}")
        }
        other => {
            eprintln!("note: skipped, espeak-ng did not run ({other:?})");
            return None;
        }
    }
    let reader = hound::WavReader::open(&wav).unwrap();
    let rate = ClockRate::new(reader.spec().sample_rate).unwrap();
    let samples = reader.into_samples::<i16>().map(Result::unwrap).collect();
    std::fs::remove_file(&wav).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    Some((samples, rate))
}

#[test]
fn pocketsphinx_on_a_second_synthesizer_by_telephone() {
    let Some(asr) = pocketsphinx() else { return };
    let menu = choices(&WORDS);
    let mut table = String::new();
    let mut right = 0;
    for word in WORDS {
        let Some((speech, rate)) = espeak(word) else {
            return;
        };
        let r = asr
            .recognize(&telephone(&speech, rate), ClockRate::HZ_8000, &menu)
            .unwrap();
        table += &format!(
            "espeak-ng G.711 {word:9} -> {:?} {:?} {:.2}\n",
            r.text, r.choice, r.confidence
        );
        match r.choice.as_deref() {
            Some(c) if c == word => right += 1,
            Some(c) => panic!("{word} taken for {c}\n{table}"),
            None => {}
        }
    }
    eprintln!("{table}espeak-ng: {right} of {} right", WORDS.len());
    // A robotic voice is hard for any recogniser: half, and never a wrong choice.
    assert!(right * 2 >= WORDS.len(), "\n{table}");
}

#[test]
fn a_word_with_silence_or_line_noise_around_it_is_heard() {
    let Some(asr) = pocketsphinx() else { return };
    let menu = choices(&WORDS);
    let mut table = String::new();
    let mut right = 0;
    for word in WORDS {
        let (speech, rate) = say(word, "kal");
        let phone = telephone(&speech, rate);
        // Half a second before, a second after: what a voice activity detector hands over.
        for (name, pad) in [
            ("silence", vec![0i16; 8000]),
            ("hiss", white_noise(8000, 150.0, 5)),
        ] {
            let mut samples = pad[..4000].to_vec();
            samples.extend_from_slice(&phone);
            samples.extend_from_slice(&pad);
            let r = asr.recognize(&samples, ClockRate::HZ_8000, &menu).unwrap();
            table += &format!(
                "{word:9} {name:8} -> {:?} {:?} {:.2}\n",
                r.text, r.choice, r.confidence
            );
            right += usize::from(r.choice.as_deref() == Some(word));
        }
    }
    eprintln!("{table}");
    assert_eq!(right, 2 * WORDS.len(), "\n{table}");
}

#[test]
fn silence_and_white_noise_give_no_choice() {
    let Some(asr) = pocketsphinx() else { return };
    let menu = choices(&WORDS);
    let mut cases = vec![
        ("silence 8 kHz", vec![0i16; 16_000], ClockRate::HZ_8000),
        ("silence 16 kHz", vec![0i16; 32_000], ClockRate::HZ_16000),
    ];
    // From a faint hiss to a level louder than the synthesized words themselves.
    for (i, amplitude) in [300.0, 3_000.0, 12_000.0].into_iter().enumerate() {
        let noise = white_noise(16_000, amplitude, i as u64 + 1);
        cases.push(("noise 8 kHz", noise.clone(), ClockRate::HZ_8000));
        let wide = white_noise(32_000, amplitude, i as u64 + 11);
        cases.push(("noise 16 kHz", wide, ClockRate::HZ_16000));
    }
    let (speech, rate) = say("support", "kal");
    let speech_rms = rms(&speech);
    for (name, samples, rate) in &cases {
        let r = asr.recognize(samples, *rate, &menu).unwrap();
        eprintln!("{name} rms {:.0} -> {r:?}", rms(samples));
        assert_eq!(r.choice, None, "{name} at rms {:.0}", rms(samples));
        assert!(r.confidence < MIN, "{name}: {r:?}");
    }
    assert!(
        rms(&cases.last().unwrap().1) > speech_rms,
        "the loudest noise is louder than speech"
    );
    // The same decoders still hear a word after the noise.
    let r = asr.recognize(&speech, rate, &menu).unwrap();
    assert_eq!(r.choice.as_deref(), Some("support"));
}

#[test]
fn speech_that_is_none_of_the_choices_is_not_taken_for_one() {
    let Some(asr) = pocketsphinx() else { return };
    let menu = choices(&WORDS);
    for voice in ["kal", "kal16"] {
        let (speech, rate) = say("the weather is lovely today", voice);
        for (samples, rate) in [
            (telephone(&speech, rate), ClockRate::HZ_8000),
            (speech, rate),
        ] {
            let r = asr.recognize(&samples, rate, &menu).unwrap();
            eprintln!("{voice} {} Hz: {r:?}", rate.hz());
            assert_eq!(r.choice, None, "{r:?}");
            // What was said instead comes back as a transcript.
            assert!(r.text.contains("weather"), "{r:?}");
        }
    }
}

#[test]
fn a_choice_said_inside_a_sentence_is_found_in_its_transcript() {
    let Some(asr) = pocketsphinx() else { return };
    let menu = choices(&WORDS);
    let with_choice = [
        ("I want support please", "support"),
        ("sales please", "sales"),
        ("um, billing", "billing"),
        ("yes please", "yes"),
        ("no thanks", "no"),
        ("the operator", "operator"),
        ("give me the operator please", "operator"),
        ("I would like to talk to sales", "sales"),
    ];
    let without = [
        "the weather is lovely today",
        "hello",
        "banana",
        "what time is it",
    ];
    let (mut right, mut wrong, mut total) = (0, 0, 0);
    let mut table = String::new();
    for voice in ["kal", "kal16"] {
        let cases = with_choice
            .iter()
            .map(|&(s, c)| (s, Some(c)))
            .chain(without.iter().map(|&s| (s, None)));
        for (sentence, want) in cases {
            let (speech, rate) = say(sentence, voice);
            let phone = telephone(&speech, rate);
            let start = Instant::now();
            let r = asr.recognize(&phone, ClockRate::HZ_8000, &menu).unwrap();
            let took = start.elapsed().as_millis();
            let ms = phone.len() / 8;
            table += &format!("{took:4} ms for {ms:4} ms: ");
            table += &format!(
                "{voice:6} {sentence:32} -> {:36} {:?} {:.2}\n",
                format!("{:?}", r.text),
                r.choice,
                r.confidence
            );
            match (want, r.choice.as_deref()) {
                (Some(w), Some(got)) if w == got => right += 1,
                (_, Some(_)) => wrong += 1,
                _ => {}
            }
            total += usize::from(want.is_some());
        }
    }
    eprintln!("{table}{right} of {total} sentences with a choice right, {wrong} wrong choices");
    assert_eq!(wrong, 0, "a wrong choice is worse than none\n{table}");
    assert!(right * 4 >= total * 3, "at least three in four\n{table}");
}

#[test]
fn any_rate_is_heard_and_an_empty_utterance_is_no_choice() {
    let Some(asr) = pocketsphinx() else { return };
    let menu = choices(&WORDS);
    let (speech, rate) = say("operator", "kal16");
    let high = resample(&speech, rate.hz(), ClockRate::HZ_48000).unwrap();
    let r = asr.recognize(&high, ClockRate::HZ_48000, &menu).unwrap();
    assert_eq!(r.choice.as_deref(), Some("operator"), "{r:?}");
    for rate in [ClockRate::HZ_8000, ClockRate::HZ_16000] {
        let r = asr.recognize(&[], rate, &menu).unwrap();
        assert_eq!((r.text.as_str(), r.choice, r.confidence), ("", None, 0.0));
        let r = asr.recognize(&[], rate, &[]).unwrap();
        assert_eq!(r.text, "");
    }
}

#[test]
fn menus_that_change_from_call_to_call_share_one_decoder() {
    let Some(_) = pocketsphinx() else { return };
    let asr = Asr::new(&AsrConfig {
        decoders: 1,
        ..pocketsphinx_config()
    })
    .unwrap();
    let menus = [
        choices(&["yes", "no"]),
        choices(&["sales", "support", "billing"]),
        choices(&["operator", "yes"]),
    ];
    let words: Vec<(&str, Vec<i16>, ClockRate)> = ["yes", "support", "operator", "no"]
        .into_iter()
        .map(|w| {
            let (s, r) = say(w, "kal16");
            (w, s, r)
        })
        .collect();
    // Every menu in turn, each asked of a word it holds and a word from another menu,
    // and a free transcription between them.
    for round in 0..2 {
        for menu in &menus {
            for (word, speech, rate) in &words {
                let r = asr.recognize(speech, *rate, menu).unwrap();
                let want = menu.iter().find(|c| c == word).cloned();
                assert_eq!(r.choice, want, "round {round}, {word} in {menu:?}: {r:?}");
            }
        }
        let free = asr.recognize(&words[0].1, words[0].2, &[]).unwrap();
        assert_eq!(free.choice, None);
    }
}

#[test]
fn choices_the_dictionary_lacks_are_left_out_and_named() {
    let Some(asr) = pocketsphinx() else { return };
    let (speech, rate) = say("billing", "kal16");
    let menu = choices(&["Billing!", "zqxjkv", "sales 42b"]);
    let r = asr.recognize(&speech, rate, &menu).unwrap();
    assert_eq!(r.choice.as_deref(), Some("Billing!"), "{r:?}");
    assert_eq!(r.text, "billing");
    assert_eq!(r.left_out, choices(&["zqxjkv", "sales 42b"]));

    let err = asr
        .recognize(&speech, rate, &choices(&["zqxjkv", "???"]))
        .unwrap_err();
    assert_eq!(err, AsrError::NoChoices(choices(&["zqxjkv", "???"])));
    assert_eq!(asr.counters().errors, 1);
}

#[test]
fn without_choices_pocketsphinx_transcribes_free_speech() {
    let Some(asr) = pocketsphinx() else { return };
    let (speech, rate) = say("the weather is lovely today", "kal16");
    let r = asr.recognize(&speech, rate, &[]).unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.choice, None);
    assert!(r.text.contains("weather"), "{r:?}");
    assert!((0.0..=1.0).contains(&r.confidence));
    let silent = asr
        .recognize(&[0; 16_000], ClockRate::HZ_16000, &[])
        .unwrap();
    assert_eq!(silent.text, "");
    assert_eq!(silent.confidence, 0.0);
}

#[test]
fn threads_share_the_decoder_pool() {
    let Some(asr) = pocketsphinx() else { return };
    let asr = Arc::new(asr);
    let menu = Arc::new(choices(&WORDS));
    let threads: Vec<_> = ["yes", "no", "sales", "operator"]
        .into_iter()
        .map(|word| {
            let (asr, menu) = (Arc::clone(&asr), Arc::clone(&menu));
            std::thread::spawn(move || {
                let (speech, rate) = say(word, "kal16");
                (0..3)
                    .map(|_| asr.recognize(&speech, rate, &menu).unwrap().choice)
                    .filter(|c| c.as_deref() == Some(word))
                    .count()
            })
        })
        .collect();
    let right: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(right, 12);
    assert_eq!(asr.counters().recognitions, 12);
}

#[test]
fn asking_for_pocketsphinx_without_its_library_is_refused_with_what_to_install() {
    let missing = LibraryNames {
        sphinxbase: "libsphinxbase-missing.so.3".into(),
        pocketsphinx: "libpocketsphinx-missing.so.3".into(),
    };
    let err = Asr::with_libraries(&pocketsphinx_config(), &missing).unwrap_err();
    assert!(matches!(err, AsrError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains(INSTALL_HINT), "{err}");
    assert_eq!(
        INSTALL_HINT,
        "apt install libpocketsphinx3 pocketsphinx-en-us"
    );

    // Unset engine: the server starts; each recognition fails with the same message.
    let asr = Asr::with_libraries(&AsrConfig::default(), &missing).unwrap();
    assert_eq!(asr.engine_name(), "none");
    let err = asr
        .recognize(&[0; 800], ClockRate::HZ_8000, &choices(&["yes"]))
        .unwrap_err();
    assert!(err.to_string().contains(INSTALL_HINT), "{err}");
    assert_eq!(
        asr.counters(),
        AsrCounters {
            recognitions: 0,
            errors: 1
        }
    );
}

#[test]
fn asking_for_pocketsphinx_without_its_model_is_refused_with_what_to_install() {
    let config = AsrConfig {
        hmm: "/nonexistent/en-us".into(),
        ..pocketsphinx_config()
    };
    let err = Asr::new(&config).unwrap_err();
    assert!(matches!(err, AsrError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains(INSTALL_HINT), "{err}");
    // An unset engine falls back to none instead.
    let asr = Asr::new(&AsrConfig {
        engine: None,
        ..config
    })
    .unwrap();
    assert_eq!(asr.engine_name(), "none");
}

#[test]
fn the_default_engine_is_pocketsphinx_when_installed() {
    let Some(_) = pocketsphinx() else { return };
    let asr = Asr::new(&AsrConfig::default()).unwrap();
    assert_eq!(asr.engine_name(), "pocketsphinx");
    // Found rather than asked for, it loads its decoder on the first recognition.
    assert_eq!(asr.decoders(), 0);
    let (speech, rate) = say("support", "kal16");
    let r = asr.recognize(&speech, rate, &choices(&WORDS)).unwrap();
    assert_eq!(r.choice.as_deref(), Some("support"), "{r:?}");
    assert_eq!(asr.decoders(), 1);
}

#[test]
fn a_listen_loads_the_found_decoder_once_while_the_caller_speaks() {
    let Some(_) = pocketsphinx() else { return };
    let asr = std::sync::Arc::new(Asr::new(&AsrConfig::default()).unwrap());
    assert_eq!(asr.decoders(), 0);
    let loading = asr.prepare().expect("the first prepare loads a decoder");
    // Later listens find it loading or loaded: no second load.
    assert!(asr.prepare().is_none());
    loading.join().unwrap();
    assert_eq!(asr.decoders(), 1);
    let (speech, rate) = say("support", "kal16");
    let r = asr.recognize(&speech, rate, &choices(&WORDS)).unwrap();
    assert_eq!(r.choice.as_deref(), Some("support"), "{r:?}");
    assert_eq!(asr.decoders(), 1, "the recognition used the loaded decoder");
    // A configured engine loaded its decoder at start; prepare has nothing to do.
    let configured = std::sync::Arc::new(pocketsphinx().unwrap());
    assert_eq!(configured.decoders(), 1);
    assert!(configured.prepare().is_none());
}

#[test]
fn settings_out_of_range_are_refused() {
    let ok = AsrConfig::default();
    ok.validate().unwrap();
    assert_eq!(ok.min_confidence, MIN);
    let refused = [
        AsrConfig {
            min_confidence: 1.01,
            ..ok.clone()
        },
        AsrConfig {
            min_confidence: -0.01,
            ..ok.clone()
        },
        AsrConfig {
            decoders: 0,
            ..ok.clone()
        },
        AsrConfig {
            decoders: 257,
            ..ok.clone()
        },
        AsrConfig {
            timeout_ms: 99,
            ..ok.clone()
        },
        AsrConfig {
            timeout_ms: 300_001,
            ..ok.clone()
        },
        AsrConfig {
            engine: Some(AsrEngineKind::Http),
            url: String::new(),
            ..ok.clone()
        },
        AsrConfig {
            engine: Some(AsrEngineKind::Http),
            url: "https://127.0.0.1:9".into(),
            ..ok.clone()
        },
        AsrConfig {
            engine: Some(AsrEngineKind::Http),
            url: "http://127.0.0.1:9".into(),
            model: String::new(),
            ..ok.clone()
        },
    ];
    for c in refused {
        assert!(matches!(c.validate(), Err(AsrError::Config(_))), "{c:?}");
        assert!(matches!(Asr::new(&c), Err(AsrError::Config(_))), "{c:?}");
    }
    for c in [
        AsrConfig {
            min_confidence: 0.0,
            decoders: 1,
            timeout_ms: 100,
            ..ok.clone()
        },
        AsrConfig {
            min_confidence: 1.0,
            decoders: 256,
            timeout_ms: 300_000,
            ..ok.clone()
        },
    ] {
        c.validate().unwrap();
    }
}

#[test]
fn the_settings_read_from_toml_with_defaults_and_refuse_unknown_keys() {
    let c: AsrConfig = toml::from_str(
        "engine = \"http\"\nurl = \"http://127.0.0.1:8000\"\nmodel = \"tiny\"\nlanguage = \"de\"",
    )
    .unwrap();
    assert_eq!(c.engine, Some(AsrEngineKind::Http));
    assert_eq!(c.model, "tiny");
    assert_eq!(c.timeout_ms, AsrConfig::default().timeout_ms);
    assert_eq!(
        c.dict,
        std::path::PathBuf::from("/usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict")
    );
    let empty: AsrConfig = toml::from_str("").unwrap();
    assert_eq!(empty, AsrConfig::default());
    assert!(toml::from_str::<AsrConfig>("engine = \"sphinx\"").is_err());
    assert!(toml::from_str::<AsrConfig>("egnine = \"http\"").is_err());
}

// ---------------------------------------------------------------------------------------
// The transcription server engine, against a server in this process.

/// What the server does with a request.
#[derive(Clone)]
enum Reply {
    /// 200 with `{"text": ...}` when the request is well formed, 400 saying why not.
    Text(&'static str),
    /// This status and body.
    Raw(StatusCode, &'static str),
    /// Nothing for this long, then a transcript.
    Slow(Duration),
}

/// One request as the server read it.
#[derive(Debug, Clone, Default)]
struct Seen {
    bearer: Option<String>,
    model: String,
    language: String,
    response_format: String,
    rate: u32,
    samples: Vec<i16>,
}

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Splits a multipart body into (name, content) parts; `None` when it is not one.
fn parts(content_type: &str, body: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let boundary = content_type.strip_prefix("multipart/form-data; boundary=")?;
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut out = Vec::new();
    let mut rest = text.strip_prefix(delimiter.as_bytes())?;
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let name = head.split("name=\"").nth(1)?.split('"').next()?.to_string();
        let content = &rest[head_end + 4..];
        let end_marker = format!("\r\n{delimiter}");
        let end = content
            .windows(end_marker.len())
            .position(|w| w == end_marker.as_bytes())?;
        out.push((name, content[..end].to_vec()));
        rest = &content[end + end_marker.len()..];
    }
}

fn read_request(headers: &HeaderMap, body: &[u8]) -> Result<Seen, String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .ok_or("no content type")?;
    let parts = parts(content_type, body).ok_or("not multipart/form-data")?;
    let field = |name: &str| {
        parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let wav = &parts
        .iter()
        .find(|(n, _)| n == "file")
        .ok_or("no file part")?
        .1;
    if &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return Err("file is not a WAV".into());
    }
    let reader =
        hound::WavReader::new(std::io::Cursor::new(wav.clone())).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(format!("unexpected WAV format {spec:?}"));
    }
    let samples = reader
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(Seen {
        bearer: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        model: field("model").ok_or("no model")?,
        language: field("language").unwrap_or_default(),
        response_format: field("response_format").ok_or("no response_format")?,
        rate: spec.sample_rate,
        samples,
    })
}

async fn transcription_server(reply: Reply) -> Server {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = (reply, Arc::clone(&seen));
    let app = Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(
                |State((reply, seen)): State<(Reply, Arc<Mutex<Vec<Seen>>>)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let request = read_request(&headers, &body);
                    if let Ok(r) = &request {
                        seen.lock().unwrap().push(r.clone());
                    }
                    match (reply, request) {
                        (_, Err(why)) => (StatusCode::BAD_REQUEST, why),
                        (Reply::Text(t), Ok(_)) => {
                            (StatusCode::OK, serde_json::json!({ "text": t }).to_string())
                        }
                        (Reply::Raw(status, body), Ok(_)) => (status, body.to_string()),
                        (Reply::Slow(d), Ok(_)) => {
                            tokio::time::sleep(d).await;
                            (StatusCode::OK, r#"{"text":"too late"}"#.to_string())
                        }
                    }
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { url, seen }
}

fn http_config(url: &str) -> AsrConfig {
    AsrConfig {
        engine: Some(AsrEngineKind::Http),
        url: url.to_string(),
        model: "test-model".into(),
        timeout_ms: 2_000,
        ..AsrConfig::default()
    }
}

/// `asr.recognize` on a blocking thread, as a call's `listen()` runs it.
async fn recognize_blocking(
    asr: &Arc<Asr>,
    samples: Vec<i16>,
    rate: ClockRate,
    choices: Vec<String>,
) -> Result<switchboard::speech::asr::Recognition, AsrError> {
    let asr = Arc::clone(asr);
    tokio::task::spawn_blocking(move || asr.recognize(&samples, rate, &choices))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_engine_posts_a_wav_with_the_model_and_key_and_matches_the_transcript() {
    let server = transcription_server(Reply::Text("I want support, please.")).await;
    std::env::set_var("SWITCHBOARD_TEST_ASR_KEY", "sekrit");
    let asr = Arc::new(
        Asr::new(&AsrConfig {
            api_key_env: "SWITCHBOARD_TEST_ASR_KEY".into(),
            ..http_config(&server.url)
        })
        .unwrap(),
    );
    assert_eq!(asr.engine_name(), "http");
    let (speech, rate) = say("I want support please", "kal");
    let menu = choices(&["sales", "support", "operator"]);
    let r = recognize_blocking(&asr, speech.clone(), rate, menu)
        .await
        .unwrap();
    assert_eq!(r.text, "I want support, please.");
    assert_eq!(r.choice.as_deref(), Some("support"));
    assert_eq!(r.confidence, 1.0);

    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.bearer.as_deref(), Some("Bearer sekrit"));
    assert_eq!(s.model, "test-model");
    assert_eq!(s.language, "en");
    assert_eq!(s.response_format, "json");
    assert_eq!(s.rate, 8000);
    assert_eq!(
        s.samples, speech,
        "the WAV carries the utterance sample for sample"
    );

    // Without choices: the transcript alone.
    let wide = vec![100i16; 1600];
    let r = recognize_blocking(&asr, wide.clone(), ClockRate::HZ_16000, vec![])
        .await
        .unwrap();
    assert_eq!((r.choice, r.confidence), (None, 1.0));
    let last = server.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.rate, last.samples.len()), (16000, 1600));
    assert_eq!(
        asr.counters(),
        AsrCounters {
            recognitions: 2,
            errors: 0
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_transcript_names_its_choice_below_full_confidence_and_an_unlike_one_none() {
    let menu = choices(&["sales", "support", "operator"]);
    for (said, want) in [("Sails.", Some("sales")), ("banana", None), ("", None)] {
        let server = transcription_server(Reply::Text(said)).await;
        let asr = Arc::new(Asr::new(&http_config(&server.url)).unwrap());
        let r = recognize_blocking(&asr, vec![0; 800], ClockRate::HZ_8000, menu.clone())
            .await
            .unwrap();
        assert_eq!(r.choice.as_deref(), want, "{said:?}: {r:?}");
        match want {
            Some(_) => assert!((0.55..1.0).contains(&r.confidence), "{r:?}"),
            None => assert_eq!(r.confidence, 0.0),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_reported_with_its_text_and_counted() {
    let server = transcription_server(Reply::Raw(
        StatusCode::INTERNAL_SERVER_ERROR,
        "model exploded",
    ))
    .await;
    let asr = Arc::new(Asr::new(&http_config(&server.url)).unwrap());
    let err = recognize_blocking(&asr, vec![0; 800], ClockRate::HZ_8000, vec![])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AsrError::Status {
            status: 500,
            body: "model exploded".into()
        }
    );
    assert_eq!(
        asr.counters(),
        AsrCounters {
            recognitions: 0,
            errors: 1
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_answer_is_an_error() {
    for garbage in [
        "<html>oops</html>",
        r#"{"transcript":"yes"}"#,
        r#"{"text":42}"#,
    ] {
        let server = transcription_server(Reply::Raw(StatusCode::OK, garbage)).await;
        let asr = Arc::new(Asr::new(&http_config(&server.url)).unwrap());
        let err = recognize_blocking(&asr, vec![0; 800], ClockRate::HZ_8000, vec![])
            .await
            .unwrap_err();
        assert!(
            matches!(err, AsrError::BadResponse(_)),
            "{garbage}: {err:?}"
        );
        assert_eq!(asr.counters().errors, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_out_and_a_down_one_is_an_error() {
    let server = transcription_server(Reply::Slow(Duration::from_secs(5))).await;
    let asr = Arc::new(
        Asr::new(&AsrConfig {
            timeout_ms: 300,
            ..http_config(&server.url)
        })
        .unwrap(),
    );
    let start = Instant::now();
    let err = recognize_blocking(&asr, vec![0; 800], ClockRate::HZ_8000, vec![])
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err, AsrError::Timeout(Duration::from_millis(300)));
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(2_000)).contains(&took),
        "{took:?}"
    );

    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let asr = Arc::new(Asr::new(&http_config(&format!("http://127.0.0.1:{port}"))).unwrap());
    let err = recognize_blocking(&asr, vec![0; 800], ClockRate::HZ_8000, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, AsrError::Http(_)), "{err:?}");
    assert_eq!(asr.counters().errors, 1);
}

#[test]
fn a_key_variable_that_is_not_set_is_refused() {
    let err = Asr::new(&AsrConfig {
        api_key_env: "SWITCHBOARD_TEST_ASR_KEY_UNSET".into(),
        ..http_config("http://127.0.0.1:9")
    })
    .unwrap_err();
    assert!(matches!(err, AsrError::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("SWITCHBOARD_TEST_ASR_KEY_UNSET"),
        "{err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_recognition_called_from_async_code_blocks_instead_of_panicking() {
    let server = transcription_server(Reply::Text("yes")).await;
    let asr = Asr::new(&AsrConfig {
        timeout_ms: 300,
        ..http_config(&server.url)
    })
    .unwrap();
    // The server runs on this very runtime: it answers once the blocking call gives the
    // thread back, so the call must time out, cleanly.
    let err = asr
        .recognize(&[0; 800], ClockRate::HZ_8000, &[])
        .unwrap_err();
    assert!(matches!(err, AsrError::Timeout(_)), "{err:?}");
}
