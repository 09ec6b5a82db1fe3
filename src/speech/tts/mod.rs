//! Text to speech for `say()`: the `[tts]` settings, the engines (embedded flite-rs, or an
//! OpenAI-compatible HTTP server), the cache of synthesized sentences, and [`Speech`], the
//! audio source that plays a sentence while it is still being made.
//!
//! [`Tts::speak`] returns at once. A sentence heard before plays from the cache; a new one
//! is synthesized off the media workers (flite a sentence at a time on blocking threads,
//! HTTP as the body arrives in a task), converted once to the leg's rate and written into
//! the speech's ring, which the media tick drains without allocating or waiting. Once
//! complete, the whole sentence is cached, keyed by engine, voice, leg rate, speaking rate
//! and text. [`Tts::synthesize`] does the same in one blocking call and returns the whole
//! prompt, for whoever needs to know how long a sentence lasts.

mod cache;
mod convert;
pub mod flite;
mod http;
pub mod normalize;
mod speech;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::media::prompt::{Prompt, MAX_PROMPT};
use crate::media::resample::ResampleError;
use crate::rtp::types::ClockRate;

use cache::{Cache, Key};
use convert::Converter;
use flite::Flite;
use http::HttpEngine;
use speech::Feed;
pub use speech::{Speech, SpeechWatch};

/// Slowest speaking rate accepted (half the natural rate).
pub const MIN_RATE: f32 = 0.5;
/// Fastest speaking rate accepted (twice the natural rate).
pub const MAX_RATE: f32 = 2.0;

/// Which engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// flite-rs, embedded: no server, no system library.
    #[default]
    Flite,
    /// A server speaking the OpenAI-compatible `POST /v1/audio/speech`.
    Http,
}

impl EngineKind {
    /// Its name in settings and events.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Flite => "flite",
            EngineKind::Http => "http",
        }
    }
}

/// The audio format asked of an HTTP engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpFormat {
    /// WAV: every server has it; its header says the rate.
    #[default]
    Wav,
    /// Raw 16-bit little-endian mono at 24 kHz, as the OpenAI API defines it.
    Pcm,
}

impl HttpFormat {
    fn as_str(self) -> &'static str {
        match self {
            HttpFormat::Wav => "wav",
            HttpFormat::Pcm => "pcm",
        }
    }
}

/// The `[tts]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// `"flite"` (default) or `"http"`.
    pub engine: EngineKind,
    /// Default voice; none picks flite's voice by the leg's rate. Required for `http`.
    pub voice: Option<String>,
    /// Base URL of the HTTP engine (`http://host:port`); it is sent `POST {url}/v1/audio/speech`.
    pub url: Option<String>,
    /// Model name sent to the HTTP engine.
    pub model: Option<String>,
    /// Name of the environment variable holding the HTTP engine's API key (sent as a bearer
    /// token when set).
    pub api_key_env: Option<String>,
    /// Audio format asked of the HTTP engine: `"wav"` (default) or `"pcm"`.
    pub format: HttpFormat,
    /// How long the HTTP engine may take to answer, and between two pieces of its body.
    pub timeout_ms: u64,
    /// Bound on the audio the cache holds, in bytes.
    pub cache_bytes: u64,
    /// Longest text accepted, in characters.
    pub max_chars: usize,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            engine: EngineKind::Flite,
            voice: None,
            url: None,
            model: None,
            api_key_env: None,
            format: HttpFormat::Wav,
            timeout_ms: 10_000,
            cache_bytes: 64 * 1024 * 1024,
            max_chars: 5_000,
        }
    }
}

impl TtsConfig {
    /// Checks the settings together; the message names the setting at fault.
    pub fn validate(&self) -> Result<(), TtsError> {
        let invalid = |m: String| Err(TtsError::Config(m));
        if self.timeout_ms == 0 {
            return invalid("timeout_ms must be above 0".into());
        }
        if self.max_chars == 0 || self.max_chars > 100_000 {
            return invalid(format!("max_chars {} is outside 1-100000", self.max_chars));
        }
        match self.engine {
            EngineKind::Flite => {
                if let Some(v) = &self.voice {
                    if !flite::VOICES.iter().any(|(n, _)| n == v) {
                        return invalid(format!(
                            "voice {v:?} is not a flite voice ({})",
                            flite::VOICES.map(|(n, _)| n).join(", ")
                        ));
                    }
                }
            }
            EngineKind::Http => {
                let Some(url) = &self.url else {
                    return invalid("engine \"http\" needs url".into());
                };
                http::parse_base(url).map_err(TtsError::Config)?;
                if self.model.as_deref().is_none_or(str::is_empty) {
                    return invalid("engine \"http\" needs model".into());
                }
                if self.voice.as_deref().is_none_or(str::is_empty) {
                    return invalid("engine \"http\" needs voice".into());
                }
                if self.api_key_env.as_deref() == Some("") {
                    return invalid("api_key_env is empty".into());
                }
            }
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// One `say()`: what to say and how.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SayRequest {
    /// The text, plain (no markup).
    pub text: String,
    /// A voice of the engine; none: the configured one, or flite's for the leg's rate.
    pub voice: Option<String>,
    /// Speaking rate: 1.0 natural, 0.5 half as fast, 2.0 twice as fast.
    pub rate: Option<f32>,
}

impl SayRequest {
    /// A request for `text` with the default voice and rate.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
}

/// Why a sentence could not be spoken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TtsError {
    /// A setting is wrong.
    #[error("tts: {0}")]
    Config(String),
    /// Nothing to say.
    #[error("say(): empty text")]
    EmptyText,
    /// The text is longer than `[tts] max_chars`.
    #[error("say(): text of {len} characters is over the limit of {max} ([tts] max_chars)")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text holds a control character.
    #[error("say(): text holds control character U+{0:04X}")]
    ControlChar(u32),
    /// The text holds markup, which would be read out.
    #[error("say(): text holds markup ({0}); say() speaks plain text")]
    Markup(String),
    /// The speaking rate is outside [`MIN_RATE`]–[`MAX_RATE`].
    #[error("say(): rate {0} is outside 0.5-2.0")]
    BadRate(f32),
    /// The engine has no such voice.
    #[error("say(): unknown voice {voice:?} (voices: {known})")]
    UnknownVoice {
        /// The voice asked for.
        voice: String,
        /// The voices there are.
        known: String,
    },
    /// Called outside a tokio runtime.
    #[error("speak() needs a tokio runtime")]
    NoRuntime,
    /// The synthesizer failed.
    #[error("synthesis failed: {0}")]
    Engine(String),
    /// The audio made is longer than a prompt may be.
    #[error("speech longer than {} s", MAX_PROMPT.as_secs())]
    AudioTooLong,
    /// The HTTP engine could not be reached or the exchange broke.
    #[error("tts server {url}: {reason}")]
    Http {
        /// Where it was sent.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP engine did not answer in time.
    #[error("tts server {url}: no answer within {ms} ms")]
    Timeout {
        /// Where it was sent.
        url: String,
        /// The timeout.
        ms: u64,
    },
    /// The HTTP engine answered with an error status.
    #[error("tts server {url} answered {status}: {body}")]
    Status {
        /// Where it was sent.
        url: String,
        /// The status code.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The answer is not audio this server reads.
    #[error("tts answer is not usable audio: {0}")]
    BadAudio(String),
    /// Conversion to the leg's rate failed.
    #[error("tts: {0}")]
    Resample(#[from] ResampleError),
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TtsStats {
    /// Sentences synthesized to the end.
    pub synthesized: u64,
    /// Sentences played from the cache.
    pub cached: u64,
    /// Requests refused or failed.
    pub errors: u64,
    /// Sentences in the cache now.
    pub cache_entries: u64,
    /// Bytes of audio in the cache now.
    pub cache_bytes: u64,
}

#[derive(Default)]
struct Counters {
    synthesized: AtomicU64,
    cached: AtomicU64,
    errors: AtomicU64,
}

enum Engine {
    Flite(Flite),
    Http(Box<HttpEngine>),
}

/// The text to speech service, shared by every call (cheap to clone).
#[derive(Clone)]
pub struct Tts {
    inner: Arc<Inner>,
}

struct Inner {
    config: TtsConfig,
    engine: Engine,
    cache: Cache,
    counters: Counters,
}

/// A request checked and resolved to what the engine is asked.
struct Job {
    key: Key,
    /// Index of the flite voice.
    flite_voice: usize,
    speed: f32,
    rate: ClockRate,
}

impl std::fmt::Debug for Tts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tts")
            .field("engine", &self.inner.config.engine)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Collects a sentence's audio for the cache while it fits.
struct Keep {
    samples: Option<Vec<i16>>,
    limit: usize,
}

impl Keep {
    fn new(limit_bytes: u64) -> Self {
        let limit = usize::try_from(limit_bytes / 2).unwrap_or(usize::MAX);
        Self {
            samples: Some(Vec::new()),
            limit,
        }
    }

    fn add(&mut self, s: &[i16]) {
        if let Some(all) = &mut self.samples {
            if all.len() + s.len() > self.limit {
                self.samples = None;
            } else {
                all.extend_from_slice(s);
            }
        }
    }
}

/// Where produced audio goes: a live speech (and the cache), or one buffer.
enum Out<'a> {
    Live {
        feed: &'a Feed,
        keep: Keep,
        total: usize,
    },
    Whole(Vec<i16>),
}

impl Out<'_> {
    fn live(feed: &Feed, cache_limit: u64) -> Out<'_> {
        Out::Live {
            feed,
            keep: Keep::new(cache_limit),
            total: 0,
        }
    }

    /// True when nobody will hear or keep anything more.
    fn pointless(&self) -> bool {
        match self {
            Out::Live { feed, keep, .. } => feed.is_cancelled() && keep.samples.is_none(),
            Out::Whole(_) => false,
        }
    }

    async fn put(&mut self, s: &[i16], rate: ClockRate) -> Result<(), TtsError> {
        let total = match self {
            Out::Live { feed, keep, total } => {
                keep.add(s);
                feed.send(s).await;
                *total += s.len();
                *total
            }
            Out::Whole(all) => {
                all.extend_from_slice(s);
                all.len()
            }
        };
        if total as u64 > rate.ticks_in(MAX_PROMPT) {
            return Err(TtsError::AudioTooLong);
        }
        Ok(())
    }

    /// The whole sentence, when it was kept.
    fn into_samples(self) -> Option<Vec<i16>> {
        match self {
            Out::Live { keep, .. } => keep.samples,
            Out::Whole(all) => Some(all),
        }
    }
}

impl Tts {
    /// The service for `config`; refuses settings that [`TtsConfig::validate`] refuses.
    pub fn new(config: &TtsConfig) -> Result<Tts, TtsError> {
        config.validate()?;
        let engine = match config.engine {
            EngineKind::Flite => Engine::Flite(Flite::new()?),
            EngineKind::Http => Engine::Http(Box::new(HttpEngine::new(config)?)),
        };
        Ok(Tts {
            inner: Arc::new(Inner {
                config: config.clone(),
                engine,
                cache: Cache::new(config.cache_bytes),
                counters: Counters::default(),
            }),
        })
    }

    /// The counters, read now.
    pub fn stats(&self) -> TtsStats {
        let c = &self.inner.counters;
        TtsStats {
            synthesized: c.synthesized.load(Ordering::Relaxed),
            cached: c.cached.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            cache_entries: self.inner.cache.len() as u64,
            cache_bytes: self.inner.cache.bytes(),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &TtsConfig {
        &self.inner.config
    }

    /// Starts speaking `request` at the leg's `rate` and returns at once with the audio
    /// source to play. Must be called inside a tokio runtime.
    ///
    /// Bad requests (empty, too long, control characters or markup, unknown voice, rate
    /// out of range) fail here; a failure while synthesizing ends the speech early and is
    /// read from [`Speech::error`].
    pub fn speak(&self, request: &SayRequest, rate: ClockRate) -> Result<Speech, TtsError> {
        let job = self.counted(self.inner.prepare(request, rate))?;
        if let Some(prompt) = self.inner.cache.get(&job.key) {
            self.inner.counters.cached.fetch_add(1, Ordering::Relaxed);
            return Ok(Speech::cached(prompt, rate));
        }
        let handle =
            self.counted(tokio::runtime::Handle::try_current().map_err(|_| TtsError::NoRuntime))?;
        let (speech, feed) = Speech::live(rate);
        let inner = Arc::clone(&self.inner);
        handle.spawn(async move {
            let mut out = Out::live(&feed, inner.cache.limit());
            let result = inner.produce(&job, &mut out).await;
            // Given up half way with nobody listening: neither a sentence made nor a failure.
            let abandoned = result.is_ok() && out.pointless();
            if !abandoned {
                let prompt = out.into_samples().map(|s| inner.prompt(&job, s));
                inner.done(&job, &result, prompt);
            }
            feed.finish(result);
        });
        Ok(speech)
    }

    /// Synthesizes the whole of `request` at `rate`, or takes it from the cache. Blocking:
    /// call it from a blocking thread, never from the media tick or an async task.
    pub fn synthesize(
        &self,
        request: &SayRequest,
        rate: ClockRate,
    ) -> Result<Arc<Prompt>, TtsError> {
        let job = self.counted(self.inner.prepare(request, rate))?;
        if let Some(prompt) = self.inner.cache.get(&job.key) {
            self.inner.counters.cached.fetch_add(1, Ordering::Relaxed);
            return Ok(prompt);
        }
        let result = match &self.inner.engine {
            // The media workers never run this, but the caller's thread should outlive a
            // synthesizer bug all the same.
            Engine::Flite(f) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flite_whole(f, &job)))
                    .unwrap_or_else(|_| Err(TtsError::Engine("synthesizer panicked".into())))
            }
            Engine::Http(h) => run_blocking(|| async {
                let mut out = Out::Whole(Vec::new());
                h.produce_alone(&job, &mut out).await?;
                Ok(out.into_samples().unwrap_or_default())
            }),
        };
        let (status, prompt) = match result {
            Ok(samples) => (Ok(()), Some(self.inner.prompt(&job, samples))),
            Err(e) => (Err(e), None),
        };
        self.inner.done(&job, &status, prompt.clone());
        status?;
        // A sentence too large for the cache is still returned.
        prompt.ok_or_else(|| TtsError::Engine("no audio".into()))
    }

    /// The words the embedded engine speaks for `text`, after normalisation; empty with
    /// another engine.
    pub fn words(&self, text: &str) -> Vec<String> {
        match &self.inner.engine {
            Engine::Flite(f) => f.words(&normalize::normalize(text)),
            Engine::Http(_) => Vec::new(),
        }
    }

    fn counted<T>(&self, r: Result<T, TtsError>) -> Result<T, TtsError> {
        if r.is_err() {
            self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// Runs a future to completion from blocking code, wherever that code runs.
fn run_blocking<T, F, Fut>(make: F) -> Result<T, TtsError>
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, TtsError>>,
    T: Send,
{
    // A thread of its own has no runtime of its caller to conflict with.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| TtsError::Engine(e.to_string()))?;
            rt.block_on(make())
        })
        .join()
        .unwrap_or_else(|_| Err(TtsError::Engine("synthesis thread panicked".into())))
    })
}

impl Inner {
    /// Checks `request` and resolves its voice and rate.
    fn prepare(&self, request: &SayRequest, rate: ClockRate) -> Result<Job, TtsError> {
        check_text(&request.text, self.config.max_chars)?;
        let speed = match request.rate {
            None => 1.0,
            Some(r) if (MIN_RATE..=MAX_RATE).contains(&r) => (r * 1000.0).round() / 1000.0,
            Some(r) => return Err(TtsError::BadRate(r)),
        };
        let asked = request.voice.as_deref().or(self.config.voice.as_deref());
        let (engine, flite_voice, voice, text) = match &self.engine {
            Engine::Flite(f) => {
                let index = f.pick(asked, rate)?;
                let text = normalize::normalize(&request.text);
                ("flite", index, f.name(index).to_string(), text)
            }
            Engine::Http(_) => {
                let voice = asked.unwrap_or_default();
                if voice.is_empty() {
                    return Err(TtsError::UnknownVoice {
                        voice: String::new(),
                        known: "those of the server".into(),
                    });
                }
                ("http", 0, voice.to_string(), request.text.clone())
            }
        };
        Ok(Job {
            key: Key {
                engine,
                voice,
                rate_hz: rate.hz(),
                speed_milli: (speed * 1000.0).round() as u32,
                text,
            },
            flite_voice,
            speed,
            rate,
        })
    }

    fn prompt(&self, job: &Job, samples: Vec<i16>) -> Arc<Prompt> {
        Arc::new(Prompt {
            samples: samples.into(),
            rate: job.rate.hz(),
            name: format!("tts:{}", job.key.voice),
        })
    }

    /// Counts the outcome and caches a complete sentence.
    fn done(&self, job: &Job, result: &Result<(), TtsError>, prompt: Option<Arc<Prompt>>) {
        match result {
            Ok(()) => {
                self.counters.synthesized.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    engine = job.key.engine,
                    voice = %job.key.voice,
                    rate = job.rate.hz(),
                    ms = prompt.as_ref().map_or(0, |p| p.duration().as_millis()),
                    "tts sentence synthesized"
                );
                if let Some(prompt) = prompt.filter(|p| !p.samples.is_empty()) {
                    self.cache.insert(job.key.clone(), prompt);
                }
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(engine = job.key.engine, voice = %job.key.voice, error = %e, "tts failed");
            }
        }
    }

    async fn produce(self: &Arc<Self>, job: &Job, out: &mut Out<'_>) -> Result<(), TtsError> {
        match &self.engine {
            Engine::Flite(_) => self.produce_flite(job, out).await,
            Engine::Http(h) => h.produce(job, out).await,
        }
    }

    /// Synthesizes sentence by sentence on blocking threads, each sentence's audio
    /// written out before the next is made.
    async fn produce_flite(self: &Arc<Self>, job: &Job, out: &mut Out<'_>) -> Result<(), TtsError> {
        let Engine::Flite(f) = &self.engine else {
            return Ok(());
        };
        let mut converter = Converter::new(f.sample_rate(job.flite_voice), job.rate)?;
        let (voice, speed) = (job.flite_voice, job.speed);
        for sentence in Flite::sentences(&job.key.text) {
            if out.pointless() {
                return Ok(());
            }
            let inner = Arc::clone(self);
            let (back, samples) = tokio::task::spawn_blocking(move || {
                let mut samples = Vec::new();
                let r = match &inner.engine {
                    Engine::Flite(f) => {
                        flite_sentence(f, voice, speed, &sentence, &mut converter, &mut samples)
                    }
                    Engine::Http(_) => Ok(()),
                };
                (converter, r.map(|()| samples))
            })
            .await
            .map_err(|e| TtsError::Engine(e.to_string()))?;
            converter = back;
            out.put(&samples?, job.rate).await?;
        }
        let mut tail = Vec::new();
        converter.finish(&mut tail)?;
        out.put(&tail, job.rate).await
    }
}

/// The whole text through the same steps as [`Inner::produce_flite`], on this thread.
fn flite_whole(f: &Flite, job: &Job) -> Result<Vec<i16>, TtsError> {
    let mut converter = Converter::new(f.sample_rate(job.flite_voice), job.rate)?;
    let mut all = Vec::new();
    for sentence in Flite::sentences(&job.key.text) {
        flite_sentence(
            f,
            job.flite_voice,
            job.speed,
            &sentence,
            &mut converter,
            &mut all,
        )?;
        if all.len() as u64 > job.rate.ticks_in(MAX_PROMPT) {
            return Err(TtsError::AudioTooLong);
        }
    }
    converter.finish(&mut all)?;
    Ok(all)
}

/// One sentence, converted to the leg's rate, appended to `out`.
fn flite_sentence(
    f: &Flite,
    voice: usize,
    speed: f32,
    sentence: &flite::Sentence,
    converter: &mut Converter,
    out: &mut Vec<i16>,
) -> Result<(), TtsError> {
    let mut failed = None;
    f.speak(
        voice,
        speed,
        sentence,
        &mut |period| match converter.push(period, out) {
            Ok(()) => flite_rs::Flow::Continue,
            Err(e) => {
                failed = Some(e);
                flite_rs::Flow::Stop
            }
        },
    );
    failed.map_or(Ok(()), Err)
}

/// Refuses text that cannot be spoken as it is.
fn check_text(text: &str, max_chars: usize) -> Result<(), TtsError> {
    if text.trim().is_empty() {
        return Err(TtsError::EmptyText);
    }
    let len = text.chars().count();
    if len > max_chars {
        return Err(TtsError::TooLong {
            len,
            max: max_chars,
        });
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(TtsError::ControlChar(u32::from(c)));
    }
    if let Some(tag) = normalize::markup(text) {
        return Err(TtsError::Markup(tag));
    }
    Ok(())
}
