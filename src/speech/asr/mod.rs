//! Speech recognition for `listen()`: what a caller said, as text and as one of the choices a
//! menu offered.
//!
//! Two engines behind one blocking call, [`Asr::recognize`]:
//! - **PocketSphinx**, loaded at run time (Debian's `libpocketsphinx3` and
//!   `pocketsphinx-en-us`; a machine without them still builds and serves). With choices it
//!   recognises against a grammar of them, which works well on telephone audio; without, it
//!   recognises free speech with its n-gram model, which does poorly there.
//! - **A transcription server** speaking the OpenAI-compatible
//!   `POST /v1/audio/transcriptions`, whose transcript is matched to the nearest choice.
//!
//! The caller runs [`Asr::recognize`] on a blocking thread, never on the media tick.

mod choice;
mod ffi;
mod http;
mod pool;
mod sphinx;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::rtp::types::ClockRate;

pub use choice::{match_choice, normalise, MIN_SCORE};
pub use sphinx::{LibraryNames, INSTALL_HINT};

/// Which engine `[asr]` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AsrEngineKind {
    /// PocketSphinx, loaded at run time; refusing to start without it.
    Pocketsphinx,
    /// A transcription server at `url`.
    Http,
    /// No recognition: `listen()` hears keys only.
    None,
}

/// `[asr]`: the recognition engine and its settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// `"pocketsphinx"`, `"http"` or `"none"`; unset: PocketSphinx when its library and
    /// model are installed, else none.
    pub engine: Option<AsrEngineKind>,
    /// PocketSphinx acoustic model directory.
    pub hmm: PathBuf,
    /// PocketSphinx pronunciation dictionary.
    pub dict: PathBuf,
    /// PocketSphinx n-gram language model, for recognition without choices.
    pub lm: PathBuf,
    /// PocketSphinx decoders kept loaded (each recognises one utterance at a time); default:
    /// one per CPU, at most 4.
    pub decoders: usize,
    /// Lowest confidence (0 to 1) at which a recognised phrase counts as a choice.
    pub min_confidence: f32,
    /// Transcription server base URL (`http://host:port`); `/v1/audio/transcriptions` is added.
    pub url: String,
    /// The `model` form field sent to the server.
    pub model: String,
    /// The `language` form field (ISO 639-1); empty: not sent, the server detects it.
    pub language: String,
    /// Environment variable holding the server's bearer key; empty: no key sent.
    pub api_key_env: String,
    /// Longest wait for the server's answer, or for a free PocketSphinx decoder, in ms.
    pub timeout_ms: u64,
}

const MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            engine: None,
            hmm: PathBuf::from(MODEL_DIR).join("en-us"),
            dict: PathBuf::from(MODEL_DIR).join("cmudict-en-us.dict"),
            lm: PathBuf::from(MODEL_DIR).join("en-us.lm.bin"),
            // Each decoder holds about 30 MB, 95 MB once it has loaded the n-gram model.
            decoders: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            min_confidence: 0.45,
            url: String::new(),
            model: "whisper-1".into(),
            language: "en".into(),
            api_key_env: String::new(),
            timeout_ms: 10_000,
        }
    }
}

impl AsrConfig {
    /// Checks the settings that do not need the engine itself.
    pub fn validate(&self) -> Result<(), AsrError> {
        let bad = |m: String| Err(AsrError::Config(m));
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return bad(format!(
                "min_confidence {} must be between 0 and 1",
                self.min_confidence
            ));
        }
        if !(1..=256).contains(&self.decoders) {
            return bad(format!(
                "decoders {} must be between 1 and 256",
                self.decoders
            ));
        }
        if !(100..=300_000).contains(&self.timeout_ms) {
            return bad(format!(
                "timeout_ms {} must be between 100 and 300000",
                self.timeout_ms
            ));
        }
        if self.engine == Some(AsrEngineKind::Http) {
            http::endpoint(&self.url)?;
            if self.model.is_empty() {
                return bad("model must be set for the http engine".into());
            }
        }
        Ok(())
    }
}

/// Why recognition could not be set up or could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AsrError {
    /// A setting is wrong.
    #[error("asr: {0}")]
    Config(String),
    /// No engine is installed or configured (the message names what to install).
    #[error("speech recognition is not available: {0}")]
    Unavailable(String),
    /// A PocketSphinx call failed.
    #[error("pocketsphinx: {0}")]
    Engine(String),
    /// Every decoder stayed busy for the whole wait.
    #[error("all {0} speech decoders are busy")]
    Busy(usize),
    /// None of the choices can be recognised (their words are not in the dictionary).
    #[error("no choice can be recognised; not in the dictionary: {0:?}")]
    NoChoices(Vec<String>),
    /// The audio could not be converted for the engine.
    #[error("audio: {0}")]
    Audio(String),
    /// The transcription server could not be reached or dropped the connection.
    #[error("transcription server: {0}")]
    Http(String),
    /// The transcription server did not answer in time.
    #[error("transcription server gave no answer within {0:?}")]
    Timeout(Duration),
    /// The transcription server answered with an error status.
    #[error("transcription server answered {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of its body: the server's own explanation.
        body: String,
    },
    /// The transcription server's answer is not the expected JSON.
    #[error("transcription server answered something unreadable: {0}")]
    BadResponse(String),
}

/// What the caller said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recognition {
    /// The words recognised; empty when none were.
    pub text: String,
    /// The choice they name, when there were choices and one is named confidently enough.
    pub choice: Option<String>,
    /// How sure the engine is, 0 to 1 (a transcription server that gives no measure: 1 when
    /// it heard words; with choices, how near the transcript is to the choice).
    pub confidence: f32,
    /// Choices that could not be listened for (words the engine's dictionary lacks).
    pub left_out: Vec<String>,
}

/// Recognitions answered and failed since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AsrCounters {
    /// Calls to [`Asr::recognize`] that gave a result.
    pub recognitions: u64,
    /// Calls that ended in an error.
    pub errors: u64,
}

enum Engine {
    Sphinx(sphinx::PocketSphinx),
    Http(http::HttpEngine),
    /// Why there is no engine, the error every call returns.
    None(String),
}

/// The configured recognition engine; shared (`Arc`) by every call.
pub struct Asr {
    engine: Engine,
    min_confidence: f32,
    recognitions: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for Asr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asr")
            .field("engine", &self.engine_name())
            .finish()
    }
}

impl Asr {
    /// The engine `config` asks for, loaded; an error when it asks for one that cannot work.
    pub fn new(config: &AsrConfig) -> Result<Asr, AsrError> {
        Self::with_libraries(config, &LibraryNames::default())
    }

    /// As [`Asr::new`], loading PocketSphinx from the given library files.
    pub fn with_libraries(config: &AsrConfig, names: &LibraryNames) -> Result<Asr, AsrError> {
        config.validate()?;
        let engine = match config.engine {
            Some(AsrEngineKind::Http) => Engine::Http(http::HttpEngine::new(config)?),
            Some(AsrEngineKind::None) => Engine::None(format!(
                "[asr] engine is \"none\"; set it to \"pocketsphinx\" ({INSTALL_HINT}) or \"http\""
            )),
            Some(AsrEngineKind::Pocketsphinx) => {
                let lib = sphinx::load(config, names).map_err(AsrError::Unavailable)?;
                Engine::Sphinx(sphinx::PocketSphinx::new(lib, config, true)?)
            }
            None => match sphinx::load(config, names) {
                // Found rather than asked for: the first recognition loads a decoder.
                Ok(lib) => Engine::Sphinx(sphinx::PocketSphinx::new(lib, config, false)?),
                Err(why) => {
                    tracing::info!("{why}; listen() will hear keys only");
                    Engine::None(why)
                }
            },
        };
        Ok(Asr {
            engine,
            min_confidence: config.min_confidence,
            recognitions: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Readies the engine for a recognition soon (a listen has begun): a PocketSphinx that
    /// was found rather than configured loads its first decoder now, on a thread of its own,
    /// while the caller speaks, instead of when the utterance has ended. The loading thread,
    /// the first time only.
    pub fn prepare(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        let Engine::Sphinx(ps) = &self.engine else {
            return None;
        };
        if !ps.claim_first() {
            return None;
        }
        let asr = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("asr-load".into())
            .spawn(move || {
                if let Engine::Sphinx(ps) = &asr.engine {
                    if let Err(e) = ps.load_first() {
                        tracing::warn!("PocketSphinx's decoder did not load: {e}");
                    }
                }
            });
        spawned
            .map_err(|e| tracing::warn!("no thread to load PocketSphinx's decoder: {e}"))
            .ok()
    }

    /// Decoders loaded (idle or in use); 0 for engines without any.
    pub fn decoders(&self) -> usize {
        match &self.engine {
            Engine::Sphinx(ps) => ps.decoders(),
            _ => 0,
        }
    }

    /// `"pocketsphinx"`, `"http"` or `"none"`, for events and metrics.
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Sphinx(_) => "pocketsphinx",
            Engine::Http(_) => "http",
            Engine::None(_) => "none",
        }
    }

    /// Recognitions and errors so far.
    pub fn counters(&self) -> AsrCounters {
        AsrCounters {
            recognitions: self.recognitions.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    /// What `samples` (mono, at `rate`) say, and which of `choices` that is. Blocks for as
    /// long as recognition takes (up to the configured timeout for a server).
    pub fn recognize(
        &self,
        samples: &[i16],
        rate: ClockRate,
        choices: &[String],
    ) -> Result<Recognition, AsrError> {
        let result = self.run(samples, rate, choices);
        match &result {
            Ok(r) => {
                self.recognitions.fetch_add(1, Relaxed);
                tracing::debug!(engine = self.engine_name(), text = %r.text, choice = ?r.choice, confidence = r.confidence, "recognised");
            }
            Err(e) => {
                self.errors.fetch_add(1, Relaxed);
                tracing::warn!(engine = self.engine_name(), "recognition failed: {e}");
            }
        }
        result
    }

    fn run(
        &self,
        samples: &[i16],
        rate: ClockRate,
        choices: &[String],
    ) -> Result<Recognition, AsrError> {
        match &self.engine {
            Engine::None(why) => Err(AsrError::Unavailable(why.clone())),
            Engine::Sphinx(ps) => {
                let wide;
                let samples = if rate == ClockRate::HZ_16000 {
                    samples
                } else {
                    wide =
                        crate::media::resample::resample(samples, rate.hz(), ClockRate::HZ_16000)
                            .map_err(|e| AsrError::Audio(e.to_string()))?;
                    &wide[..]
                };
                let mut r = ps.recognize(samples, choices)?;
                if r.confidence < self.min_confidence {
                    r.choice = None;
                }
                Ok(r)
            }
            Engine::Http(h) => {
                let text = h.transcribe(samples, rate)?;
                if choices.is_empty() {
                    let confidence = if normalise(&text).is_empty() {
                        0.0
                    } else {
                        1.0
                    };
                    return Ok(Recognition {
                        text,
                        choice: None,
                        confidence,
                        left_out: Vec::new(),
                    });
                }
                let (choice, confidence) = match match_choice(&text, choices) {
                    Some((c, s)) => (Some(c), s),
                    None => (None, 0.0),
                };
                Ok(Recognition {
                    text,
                    choice,
                    confidence,
                    left_out: Vec::new(),
                })
            }
        }
    }
}

/// PocketSphinx and its model are installed here (it loads, with its first decoder).
pub fn pocketsphinx_available() -> bool {
    let config = AsrConfig {
        engine: Some(AsrEngineKind::Pocketsphinx),
        decoders: 1,
        ..AsrConfig::default()
    };
    Asr::new(&config).is_ok()
}
