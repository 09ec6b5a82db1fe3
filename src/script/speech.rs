//! The speech verbs of the script API: `say()`, `listen()`, `amd()` and `wait_for_beep()`.
//! Options are checked here, once, with messages that name the verb and the option; the
//! call carries the requests out.

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, Map, INT};

use super::api::{err, request, CallReply, CallRequest, Opts, Res};
use crate::speech::amd::{AmdConfig, AmdResult};
use crate::speech::listen::{BeepResult, Heard, ListenOptions, MAX_BEEP_WAIT};
use crate::speech::tts::{SayRequest, MAX_RATE, MIN_RATE};

fn millis(d: Duration) -> INT {
    d.as_millis().min(INT::MAX as u128) as INT
}

/// A `say` request from its text and options (`voice`, `rate`, `barge_in`).
pub fn say_request(text: &str, opts: &Map) -> Res<(SayRequest, bool)> {
    let o = Opts::new("say", opts, &["voice", "rate", "barge_in"])?;
    // The text itself (empty, too long, markup) is the synthesizer's to judge.
    let rate = match o.get("rate") {
        None => None,
        Some(v) => {
            let r = v
                .as_float()
                .ok()
                .or_else(|| v.as_int().ok().map(|n| n as f64));
            match r {
                Some(r) if (f64::from(MIN_RATE)..=f64::from(MAX_RATE)).contains(&r) => {
                    Some(r as f32)
                }
                _ => {
                    return err(format!(
                        "say: rate must be a number from {MIN_RATE} to {MAX_RATE}"
                    ))
                }
            }
        }
    };
    let request = SayRequest {
        text: text.to_string(),
        voice: o.string("voice")?,
        rate,
    };
    Ok((request, o.bool("barge_in")?.unwrap_or(false)))
}

fn say(text: &str, opts: &Map) -> Res<()> {
    let (wanted, barge_in) = say_request(text, opts)?;
    request(CallRequest::Say {
        request: wanted,
        barge_in,
    })
    .map(|_| ())
}

/// `choices` as an array of strings, or one string of comma-separated choices.
fn choices(v: Option<&Dynamic>) -> Res<Vec<String>> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let items: Vec<String> = if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        s.split(',').map(|c| c.trim().to_string()).collect()
    } else if let Some(a) = v.read_lock::<Array>() {
        let mut out = Vec::with_capacity(a.len());
        for item in a.iter() {
            match item.read_lock::<rhai::ImmutableString>() {
                Some(s) => out.push(s.trim().to_string()),
                None => return err("listen: choices must be strings"),
            }
        }
        out
    } else {
        return err("listen: choices must be an array of strings");
    };
    Ok(items)
}

/// `listen` options from a script's map.
pub fn listen_options(opts: &Map) -> Res<ListenOptions> {
    let o = Opts::new(
        "listen",
        opts,
        &["choices", "timeout_ms", "end_silence_ms", "max_ms", "keys"],
    )?;
    let d = ListenOptions::default();
    let l = ListenOptions {
        choices: choices(o.get("choices"))?,
        timeout: o.millis("timeout_ms")?.unwrap_or(d.timeout),
        end_silence: o.millis("end_silence_ms")?.unwrap_or(d.end_silence),
        max: o.millis("max_ms")?.unwrap_or(d.max),
        keys: o.bool("keys")?.unwrap_or(d.keys),
    };
    if let Err(e) = l.validate() {
        return err(e);
    }
    Ok(l)
}

/// The map `listen` returns.
pub fn heard_map(h: &Heard) -> Map {
    let mut m = Map::new();
    m.insert("text".into(), h.text.clone().into());
    m.insert(
        "choice".into(),
        h.choice.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert(
        "confidence".into(),
        Dynamic::from_float(f64::from(h.confidence)),
    );
    m.insert(
        "key".into(),
        h.key
            .map_or(Dynamic::UNIT, |k| Dynamic::from(k.to_string())),
    );
    m.insert("reason".into(), h.reason.as_str().into());
    m.insert("speech_ms".into(), millis(h.speech).into());
    m
}

fn listen(opts: &Map) -> Res<Map> {
    let o = listen_options(opts)?;
    match request(CallRequest::Listen(o))? {
        CallReply::Heard(h) => Ok(heard_map(&h)),
        other => err(format!("listen: unexpected reply {other:?}")),
    }
}

/// The options of `amd`: Asterisk's names, the range each takes, and its field.
type AmdOption = (&'static str, INT, INT, fn(&mut AmdConfig) -> &mut u32);
const AMD_OPTIONS: [AmdOption; 9] = [
    ("initial_silence", 20, 60_000, |c| &mut c.initial_silence),
    ("greeting", 20, 60_000, |c| &mut c.greeting),
    ("after_greeting_silence", 20, 60_000, |c| {
        &mut c.after_greeting_silence
    }),
    ("total_analysis_time", 500, 60_000, |c| {
        &mut c.total_analysis_time
    }),
    ("min_word_length", 20, 10_000, |c| &mut c.min_word_length),
    ("between_words_silence", 20, 10_000, |c| {
        &mut c.between_words_silence
    }),
    ("maximum_number_of_words", 1, 100, |c| {
        &mut c.maximum_number_of_words
    }),
    ("silence_threshold", 1, 32_767, |c| &mut c.silence_threshold),
    ("maximum_word_length", 20, 60_000, |c| {
        &mut c.maximum_word_length
    }),
];

/// `amd` options, with Asterisk's names and defaults.
pub fn amd_config(opts: &Map) -> Res<AmdConfig> {
    let names = AMD_OPTIONS.map(|(name, ..)| name);
    let o = Opts::new("amd", opts, &names)?;
    let mut c = AmdConfig::default();
    for (name, lo, hi, field) in AMD_OPTIONS {
        if let Some(v) = o.int(name, lo, hi)? {
            *field(&mut c) = v as u32;
        }
    }
    Ok(c)
}

/// The map `amd` returns.
pub fn amd_map(r: &AmdResult) -> Map {
    let mut m = Map::new();
    m.insert("status".into(), r.status_str().into());
    m.insert("cause".into(), r.cause.clone().into());
    m.insert("greeting_ms".into(), INT::from(r.greeting_ms).into());
    m.insert("words".into(), INT::from(r.words).into());
    m
}

fn amd(opts: &Map) -> Res<Map> {
    let c = amd_config(opts)?;
    match request(CallRequest::Amd(Box::new(c)))? {
        CallReply::Amd(r) => Ok(amd_map(&r)),
        other => err(format!("amd: unexpected reply {other:?}")),
    }
}

/// The map `wait_for_beep` returns.
pub fn beep_map(r: &BeepResult) -> Map {
    let mut m = Map::new();
    m.insert("beep".into(), r.beep.is_some().into());
    if let Some(b) = r.beep {
        m.insert("hz".into(), (b.hz.round() as INT).into());
        m.insert("at_ms".into(), (b.at_ms.round() as INT).into());
        m.insert("ms".into(), (b.ms.round() as INT).into());
    }
    m
}

fn wait_for_beep(opts: &Map) -> Res<Map> {
    let o = Opts::new("wait_for_beep", opts, &["timeout_ms"])?;
    let wait = o.millis("timeout_ms")?.unwrap_or(Duration::from_secs(30));
    if wait.is_zero() || wait > MAX_BEEP_WAIT {
        return err(format!(
            "wait_for_beep: timeout_ms must be 1..={}",
            MAX_BEEP_WAIT.as_millis()
        ));
    }
    match request(CallRequest::WaitForBeep(wait))? {
        CallReply::Beep(r) => Ok(beep_map(&r)),
        other => err(format!("wait_for_beep: unexpected reply {other:?}")),
    }
}

/// Answering-machine detection before a placed call's script (`originate` with `amd`): its
/// result is the script's `session.amd`.
pub(crate) fn amd_first() -> Res<()> {
    match request(CallRequest::Amd(Box::default()))? {
        CallReply::Amd(r) => {
            super::api::add_to_session("amd", amd_map(&r).into());
            Ok(())
        }
        other => err(format!("amd: unexpected reply {other:?}")),
    }
}

/// Adds the speech verbs to `engine`.
pub fn register(engine: &mut Engine) {
    engine
        .register_fn("say", |t: &str| say(t, &Map::new()))
        .register_fn("say", |t: &str, o: Map| say(t, &o))
        .register_fn("listen", || listen(&Map::new()))
        .register_fn("listen", |o: Map| listen(&o))
        .register_fn("amd", || amd(&Map::new()))
        .register_fn("amd", |o: Map| amd(&o))
        .register_fn("wait_for_beep", || wait_for_beep(&Map::new()))
        .register_fn("wait_for_beep", |o: Map| wait_for_beep(&o));
}
