//! The PocketSphinx engine: a pool of decoders loaded once and reused, a JSGF grammar built
//! from the choices of each request, and a confidence from how well the words fit the audio.
//!
//! The grammar offers "nothing" (`<NULL>`) beside the choices, so that noise and silence are
//! left to the decoder's filler models (silence, noise, speech-like noise) instead of being
//! forced into the nearest choice. The confidence is the words' acoustic score per 10 ms
//! frame; the library scores each frame against its best-matching state, so a word that
//! fits the audio scores near zero and a word forced onto other speech far below.
//!
//! A choice is taken from the grammar when it is confident and takes most of the utterance
//! (a choice said on its own). Otherwise the caller may have said it inside a sentence
//! ("the operator, please"): the n-gram model transcribes the utterance and the transcript
//! is matched to the choices ([`match_choice`]). Without choices, that transcript is the
//! answer: the n-gram model is poor on telephone audio, and best with a sentence or more.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::choice::{match_choice, normalise};
use super::ffi::{Decoder, Segment, Sphinx};
use super::pool::Pool;
use super::{AsrConfig, AsrError, Recognition};
use crate::media::level::rms_dbfs;

/// Library file names, by default Debian's; tests point them elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryNames {
    /// SphinxBase, loaded first.
    pub sphinxbase: String,
    /// PocketSphinx.
    pub pocketsphinx: String,
}

impl Default for LibraryNames {
    fn default() -> Self {
        LibraryNames {
            sphinxbase: "libsphinxbase.so.3".into(),
            pocketsphinx: "libpocketsphinx.so.3".into(),
        }
    }
}

/// What to install when the library or the model is missing.
pub const INSTALL_HINT: &str = "apt install libpocketsphinx3 pocketsphinx-en-us";

/// Two names for the grammar search, used in turn: the library frees a search it replaces
/// without looking whether it is the one in use, so a new grammar never takes the name of
/// the search in use.
const GRAMMARS: [&str; 2] = ["choices-a", "choices-b"];
const NGRAM: &str = "ngram";

/// Acoustic score per frame of words at which confidence is 1, and at which it is 0; linear
/// between. Measured on the en-us model with synthesized words, clean and through G.711
/// (tests/asr.rs): a choice said alone scores -6 to -34 per frame (confidence 0.51 to 1), a
/// choice forced onto a sentence of other words -39 to -44 (0.29 to 0.40); the default
/// `min_confidence` of 0.45 falls between, at -36.4.
const SCORE_SURE: f64 = -10.0;
const SCORE_NONE: f64 = -58.0;
/// Least share of the sound in an utterance that a choice said on its own takes: measured
/// 0.78 to 1 for the words of tests/asr.rs (two flite voices and espeak-ng, with and without
/// silence or line noise around them), 0.34 to 0.69 for a choice the grammar found in a
/// sentence with a confidence above the threshold ("hello" heard as "no").
const MIN_COVERAGE: f64 = 0.75;
/// The n-gram search reports word scores from its lattice, which keeps them 2^10 times finer
/// than the grammar search's (the library's senone score shift).
const LATTICE_SCALE: f64 = 1024.0;

/// One pooled decoder and what has been set up on it.
struct Slot {
    decoder: Decoder,
    /// The grammar text last set, and which of [`GRAMMARS`] holds it.
    grammar: Option<(String, usize)>,
    has_ngram: bool,
}

/// PocketSphinx behind a pool of decoders.
pub(super) struct PocketSphinx {
    lib: Arc<Sphinx>,
    args: Vec<(String, String)>,
    lm: String,
    pool: Pool<Slot>,
    min_confidence: f32,
    /// Set once a first decoder has been asked for: at start, or by [`PocketSphinx::claim_first`].
    prepared: AtomicBool,
}

impl std::fmt::Debug for PocketSphinx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PocketSphinx")
            .field("lm", &self.lm)
            .finish()
    }
}

fn path_str(p: &Path) -> Result<String, AsrError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| AsrError::Config(format!("path {} is not UTF-8", p.display())))
}

/// The files PocketSphinx reads, checked before it does: a missing one makes some of its
/// readers end the process instead of returning an error.
fn check_model(c: &AsrConfig) -> Result<(), String> {
    let hmm = &c.hmm;
    let mut needed = vec![c.dict.clone(), c.lm.clone()];
    for f in [
        "mdef",
        "means",
        "variances",
        "transition_matrices",
        "feat.params",
    ] {
        needed.push(hmm.join(f));
    }
    match needed.iter().find(|p| !p.is_file()) {
        Some(p) => Err(format!("model file {} is missing", p.display())),
        None => Ok(()),
    }
}

/// Why PocketSphinx cannot be used here, with what to install; `Ok` when it can.
pub(super) fn load(c: &AsrConfig, names: &LibraryNames) -> Result<Arc<Sphinx>, String> {
    let lib = Sphinx::load(&names.sphinxbase, &names.pocketsphinx)
        .map_err(|e| format!("PocketSphinx is not available ({e}): {INSTALL_HINT}"))?;
    check_model(c)
        .map_err(|e| format!("PocketSphinx's model is not available ({e}): {INSTALL_HINT}"))?;
    Ok(Arc::new(lib))
}

impl PocketSphinx {
    /// Builds the engine; with `warm`, its first decoder too, so that a broken model shows
    /// at start (a decoder holds ~20 MB, which a server that never listens need not carry).
    pub(super) fn new(
        lib: Arc<Sphinx>,
        c: &AsrConfig,
        warm: bool,
    ) -> Result<PocketSphinx, AsrError> {
        let args = vec![
            ("-hmm".to_string(), path_str(&c.hmm)?),
            ("-dict".to_string(), path_str(&c.dict)?),
            ("-samprate".to_string(), "16000".to_string()),
        ];
        let engine = PocketSphinx {
            lib,
            args,
            lm: path_str(&c.lm)?,
            pool: Pool::new(c.decoders, Duration::from_millis(c.timeout_ms)),
            min_confidence: c.min_confidence,
            prepared: AtomicBool::new(warm),
        };
        if warm {
            engine.load_first()?;
        }
        Ok(engine)
    }

    /// Decoders in existence.
    pub(super) fn decoders(&self) -> usize {
        self.pool.created()
    }

    /// Whether a first decoder is still to be loaded; true once, to the first who asks, who
    /// then loads it with [`PocketSphinx::load_first`].
    pub(super) fn claim_first(&self) -> bool {
        !self.prepared.swap(true, Ordering::AcqRel)
    }

    /// Loads a decoder into the pool (blocking, a second or more), so that the recognition
    /// that follows a listen's start does not wait for the model.
    pub(super) fn load_first(&self) -> Result<(), AsrError> {
        let slot = self.pool.take(|| self.build())?;
        self.pool.put(slot);
        Ok(())
    }

    fn build(&self) -> Result<Slot, AsrError> {
        let args: Vec<(&str, &str)> = self
            .args
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let decoder = Decoder::new(Arc::clone(&self.lib), &args).map_err(AsrError::Engine)?;
        Ok(Slot {
            decoder,
            grammar: None,
            has_ngram: false,
        })
    }

    /// Recognises 16 kHz samples, against `choices` when there are any.
    pub(super) fn recognize(
        &self,
        samples: &[i16],
        choices: &[String],
    ) -> Result<Recognition, AsrError> {
        let mut slot = self.pool.take(|| self.build())?;
        let result = self.run(&mut slot, samples, choices);
        // A decoder whose C call failed is dropped rather than trusted again.
        match &result {
            Err(AsrError::Engine(_)) => self.pool.discard(),
            _ => self.pool.put(slot),
        }
        result
    }

    fn run(
        &self,
        slot: &mut Slot,
        samples: &[i16],
        choices: &[String],
    ) -> Result<Recognition, AsrError> {
        if choices.is_empty() {
            return self.free(slot, samples);
        }
        let mut phrases = Vec::new();
        let mut left_out = Vec::new();
        for choice in choices {
            let words = normalise(choice);
            if !words.is_empty() && words.iter().all(|w| slot.decoder.has_word(w)) {
                phrases.push((words.join(" "), choice));
            } else {
                left_out.push(choice.clone());
            }
        }
        if !left_out.is_empty() {
            tracing::warn!(
                ?left_out,
                "choices with words PocketSphinx's dictionary lacks are left out"
            );
        }
        if phrases.is_empty() {
            return Err(AsrError::NoChoices(left_out));
        }
        let grammar = jsgf(phrases.iter().map(|(p, _)| p.as_str()));
        let name = match &slot.grammar {
            Some((set, name)) if *set == grammar => *name,
            last => {
                let name = last.as_ref().map_or(0, |(_, n)| 1 - n);
                slot.grammar = None;
                slot.decoder
                    .set_jsgf(GRAMMARS[name], &grammar)
                    .map_err(AsrError::Engine)?;
                slot.grammar = Some((grammar, name));
                name
            }
        };
        slot.decoder
            .use_search(GRAMMARS[name])
            .map_err(AsrError::Engine)?;
        let hyp = slot.decoder.decode(samples).map_err(AsrError::Engine)?;
        let text = hyp.text.trim().to_string();
        let confidence = confidence(&hyp.segments, 1.0);
        let choice = phrases
            .iter()
            .find(|(p, _)| *p == text)
            .map(|(_, c)| (*c).clone());
        let coverage = coverage(&hyp.segments, active_frames(samples));
        if text.is_empty()
            || (choice.is_some() && confidence >= self.min_confidence && coverage >= MIN_COVERAGE)
        {
            return Ok(Recognition {
                text,
                choice,
                confidence,
                left_out,
            });
        }
        // Not a choice said on its own: perhaps one said inside a sentence. The n-gram model
        // transcribes the sentence, and the transcript is matched as a server's would be.
        let free = self.free(slot, samples)?;
        let (choice, confidence) = match match_choice(&free.text, choices) {
            Some((choice, score)) => (Some(choice), score),
            None => (None, free.confidence),
        };
        tracing::debug!(grammar = %text, transcript = %free.text, ?choice, "choice looked for in a transcript");
        Ok(Recognition {
            text: free.text,
            choice,
            confidence,
            left_out,
        })
    }

    /// Free recognition with the n-gram model, loaded on a decoder when it is first needed.
    fn free(&self, slot: &mut Slot, samples: &[i16]) -> Result<Recognition, AsrError> {
        if !slot.has_ngram {
            slot.decoder
                .set_lm_file(NGRAM, &self.lm)
                .map_err(AsrError::Engine)?;
            slot.has_ngram = true;
        }
        slot.decoder.use_search(NGRAM).map_err(AsrError::Engine)?;
        let hyp = slot.decoder.decode(samples).map_err(AsrError::Engine)?;
        Ok(Recognition {
            confidence: confidence(&hyp.segments, LATTICE_SCALE),
            text: hyp.text.trim().to_string(),
            choice: None,
            left_out: Vec::new(),
        })
    }
}

/// Share of the sound in the utterance that the words take, at most 1: the words' frames
/// over the [`active_frames`].
fn coverage(segments: &[Segment], active: usize) -> f64 {
    let words: i64 = segments
        .iter()
        .filter(|s| !is_filler(&s.word))
        .map(|s| i64::from(s.frames.1 - s.frames.0 + 1).max(0))
        .sum();
    (words as f64 / active.max(1) as f64).min(1.0)
}

/// The 10 ms frames of `samples` (16 kHz) that carry sound rather than silence or line
/// noise: within 30 dB of the loudest frame and 10 dB above the quietest tenth (all of
/// them when the level hardly changes). The decoder's own frames cannot tell: it keeps
/// some of the silence around speech as silence, more or less depending on how much there
/// was.
fn active_frames(samples: &[i16]) -> usize {
    let mut levels: Vec<f64> = samples.chunks(160).map(rms_dbfs).collect();
    if levels.is_empty() {
        return 0;
    }
    levels.sort_by(f64::total_cmp);
    let floor = levels[levels.len() / 10];
    let peak = levels[levels.len() - 1];
    if peak - floor < 10.0 {
        // One level throughout: nothing to tell apart, all of it counts.
        return levels.len();
    }
    let threshold = (peak - 30.0).max(floor + 10.0);
    levels.iter().filter(|&&l| l >= threshold).count()
}

/// Confidence from the acoustic score per frame of the words (fillers aside, scores divided
/// by `scale`); 0 without words.
fn confidence(segments: &[Segment], scale: f64) -> f32 {
    let (mut score, mut frames) = (0i64, 0i64);
    for s in segments.iter().filter(|s| !is_filler(&s.word)) {
        score += i64::from(s.ascr);
        frames += i64::from(s.frames.1 - s.frames.0 + 1).max(0);
    }
    if frames == 0 {
        return 0.0;
    }
    let per_frame = score as f64 / scale / frames as f64;
    ((per_frame - SCORE_NONE) / (SCORE_SURE - SCORE_NONE)).clamp(0.0, 1.0) as f32
}

/// Silence, noise and sentence marks: `<sil>`, `<s>`, `[NOISE]`, `(NULL)`.
fn is_filler(word: &str) -> bool {
    word.is_empty() || word.starts_with(['<', '[', '('])
}

/// A JSGF grammar whose one public rule is any of `phrases` (already normalised words, so
/// nothing in them is JSGF syntax) or nothing.
fn jsgf<'a>(phrases: impl Iterator<Item = &'a str>) -> String {
    let alternatives: Vec<&str> = phrases.collect();
    format!(
        "#JSGF V1.0;\ngrammar choices;\npublic <choice> = {} | <NULL>;\n",
        alternatives.join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(word: &str, first: i32, last: i32, ascr: i32) -> Segment {
        Segment {
            word: word.into(),
            frames: (first, last),
            ascr,
        }
    }

    #[test]
    fn the_grammar_offers_each_phrase_or_nothing() {
        assert_eq!(
            jsgf(["sales", "customer service"].into_iter()),
            "#JSGF V1.0;\ngrammar choices;\npublic <choice> = sales | customer service | <NULL>;\n"
        );
    }

    #[test]
    fn confidence_is_the_words_score_per_frame_between_the_two_marks() {
        // 10 frames of word at SCORE_SURE per frame: 1; at SCORE_NONE: 0; halfway: 0.5.
        let at = |per_frame: f64| {
            vec![
                seg("<sil>", 0, 9, -9_999),
                seg("yes", 10, 19, (per_frame * 10.0) as i32),
            ]
        };
        assert_eq!(confidence(&at(SCORE_SURE), 1.0), 1.0);
        assert_eq!(confidence(&at(0.0), 1.0), 1.0);
        assert_eq!(confidence(&at(SCORE_NONE), 1.0), 0.0);
        assert_eq!(confidence(&at(-200.0), 1.0), 0.0);
        let half = confidence(&at((SCORE_SURE + SCORE_NONE) / 2.0), 1.0);
        assert!((half - 0.5).abs() < 1e-6, "{half}");
        // The lattice's finer scores give the same confidence once scaled.
        let lattice = vec![seg("yes", 0, 9, (SCORE_SURE * 10.0 * LATTICE_SCALE) as i32)];
        assert_eq!(confidence(&lattice, LATTICE_SCALE), 1.0);
        // Fillers alone, or nothing: no words, no confidence.
        assert_eq!(
            confidence(&[seg("<sil>", 0, 50, 0), seg("[NOISE]", 51, 60, 0)], 1.0),
            0.0
        );
        assert_eq!(confidence(&[], 1.0), 0.0);
    }

    #[test]
    fn coverage_is_the_words_share_of_the_frames_with_sound() {
        let alone = [
            seg("<sil>", 0, 9, 0),
            seg("support", 10, 59, 0),
            seg("<sil>", 60, 69, 0),
        ];
        assert!((coverage(&alone, 100) - 0.5).abs() < 1e-9);
        assert_eq!(coverage(&alone, 40), 1.0, "at most one");
        assert_eq!(coverage(&alone, 0), 1.0);
        assert_eq!(coverage(&[seg("<sil>", 0, 99, 0)], 50), 0.0);
    }

    #[test]
    fn active_frames_leave_out_silence_and_line_noise() {
        let tone = |amplitude: f64, frames: usize| -> Vec<i16> {
            (0..frames * 160)
                .map(|n| (amplitude * (n as f64 * 0.3).sin()) as i16)
                .collect()
        };
        let mut samples = vec![0i16; 50 * 160];
        samples.extend(tone(8000.0, 30));
        // Quieter speech sounds count (20 dB down), line noise (40 dB down) does not.
        samples.extend(tone(800.0, 10));
        samples.extend(tone(80.0, 60));
        assert_eq!(active_frames(&samples), 40);
        assert_eq!(active_frames(&[]), 0);
        // All the same level: all of it.
        assert_eq!(active_frames(&tone(3000.0, 20)), 20);
    }

    #[test]
    fn fillers_are_told_from_words() {
        for f in ["<sil>", "<s>", "</s>", "[NOISE]", "[SPEECH]", "(NULL)", ""] {
            assert!(is_filler(f), "{f}");
        }
        for w in ["yes", "to(3)", "don't"] {
            assert!(!is_filler(w), "{w}");
        }
    }

    #[test]
    fn a_missing_library_names_what_to_install() {
        let names = LibraryNames {
            sphinxbase: "libsphinxbase-none.so".into(),
            pocketsphinx: "libpocketsphinx-none.so".into(),
        };
        let err = load(&AsrConfig::default(), &names).unwrap_err();
        assert!(err.contains(INSTALL_HINT), "{err}");
        assert!(err.contains("libsphinxbase-none.so"), "{err}");
    }
}
