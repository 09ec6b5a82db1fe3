//! The embedded engine: flite-rs, with its `kal` voice at 8 kHz and `kal16` at 16 kHz.
//!
//! One engine holds the language models, shared by every call. Its own per-voice settings
//! change only through `&mut`, so each request carries its voice and speaking rate itself
//! and drives flite-rs's pipeline (analysis, then waveform) a sentence at a time.

use flite_rs::text::{self, Token};
use flite_rs::{pipeline, voice, Flow, Voice, VoiceParams};

use crate::rtp::types::ClockRate;

use super::TtsError;

/// The voices, by name, with their sample rates.
pub const VOICES: [(&str, u32); 2] = [("kal", 8000), ("kal16", 16000)];

struct Registered {
    name: &'static str,
    voice: Voice,
    params: VoiceParams,
}

/// The flite-rs engine and its voices, built once.
pub(crate) struct Flite {
    engine: flite_rs::Engine,
    voices: Vec<Registered>,
}

/// One sentence's tokens, as flite-rs split the text.
pub(crate) type Sentence = Vec<Token>;

impl Flite {
    /// Parses the embedded models and voices.
    pub(crate) fn new() -> Result<Self, TtsError> {
        let engine = flite_rs::Engine::try_new().map_err(|e| TtsError::Engine(e.to_string()))?;
        let parse = |name: &'static str, data: &'static [u8]| {
            let voice = Voice::parse(data).map_err(|e| TtsError::Engine(e.to_string()))?;
            let params = voice.params();
            Ok::<_, TtsError>(Registered {
                name,
                voice,
                params,
            })
        };
        let voices = vec![
            parse("kal", flite_rs::KAL_VOICE_DATA)?,
            parse("kal16", flite_rs::KAL16_VOICE_DATA)?,
        ];
        Ok(Self { engine, voices })
    }

    /// The voice to speak with: the one asked for, else the one made for the leg's rate
    /// (`kal` for narrowband, `kal16` above it).
    pub(crate) fn pick(&self, asked: Option<&str>, rate: ClockRate) -> Result<usize, TtsError> {
        let name = asked.unwrap_or(if rate.hz() <= 8000 { "kal" } else { "kal16" });
        self.voices
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| TtsError::UnknownVoice {
                voice: name.to_string(),
                known: VOICES.map(|(n, _)| n).join(", "),
            })
    }

    /// The name of voice `index`.
    pub(crate) fn name(&self, index: usize) -> &'static str {
        self.voices.get(index).map_or("kal", |v| v.name)
    }

    /// The sample rate voice `index` speaks at.
    pub(crate) fn sample_rate(&self, index: usize) -> u32 {
        self.voices.get(index).map_or(8000, |v| v.voice.sample_rate)
    }

    /// The text split into sentences, each synthesized on its own.
    pub(crate) fn sentences(text: &str) -> Vec<Sentence> {
        text::tokenize(text)
    }

    /// Synthesizes one sentence with voice `index` at speaking rate `speed`, handing each
    /// pitch period to `sink`.
    pub(crate) fn speak(
        &self,
        index: usize,
        speed: f32,
        sentence: &[Token],
        sink: &mut dyn FnMut(&[i16]) -> Flow,
    ) {
        let Some(v) = self.voices.get(index) else {
            return;
        };
        let mut params = v.params;
        // Twice as fast is half as long: the voice's own stretch, divided by the rate.
        params.duration_stretch = v.params.duration_stretch / speed;
        let language = self.engine.language();
        let utt = pipeline::analyse(&language, sentence, &params);
        voice::synthesise_streaming(&v.voice, &utt, &params, sink);
    }

    /// The words flite-rs speaks for `text`, after its own normalisation.
    pub(crate) fn words(&self, text: &str) -> Vec<String> {
        let language = self.engine.language();
        let params = self.voices.first().map(|v| v.params).unwrap_or_default();
        let mut words = Vec::new();
        for sentence in text::sentences(text) {
            let utt = pipeline::analyse(&language, &sentence, &params);
            for item in utt.iter_relation("Word") {
                words.push(utt.name(item).to_string());
            }
        }
        words
    }
}
