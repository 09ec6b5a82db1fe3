//! The speech verbs in the call core: `say` plays synthesized speech (a barge-in `say` or
//! `play` also stops when the caller speaks), `listen` waits for an utterance or a key and
//! has it recognised, `amd` and `wait_for_beep` wait for the ear's verdict.
//!
//! The ear on the caller's leg does the hearing ([`crate::speech::ear`]); the core sets its
//! mode ([`MediaAction::Ear`]) and takes what it heard ([`CallCore::handle_heard`]). An
//! utterance goes to the driver's recogniser ([`Work::Recognize`]) and comes back as
//! [`CallCore::handle_recognized`]. The core keeps a deadline beyond the ear's own limits,
//! so a call whose ear is lost still answers its script.

use std::time::{Duration, Instant};

use super::core::{CallCore, LegId, MediaAction, PlaySpec, Work};
use super::note::Note;
use super::verbs::Active;
use crate::media::dtmf::Digit;
use crate::script::CallReply;
use crate::speech::amd::AmdConfig;
use crate::speech::listen::{EarEvent, EarMode, Heard, ListenEnd, ListenOptions};
use crate::speech::tts::SayRequest;
use crate::speech::BeepResult;

/// Slack past the ear's own limits before the core gives up on it.
const EAR_SLACK: Duration = Duration::from_secs(5);
/// Longest a recogniser may take over one utterance.
pub const RECOGNIZE_WAIT: Duration = Duration::from_secs(30);

/// A `listen`, `amd` or `wait_for_beep` in progress.
#[derive(Debug)]
pub(super) enum Hearing {
    /// Waiting for the caller's answer.
    Listen {
        /// What the script asked.
        options: Box<ListenOptions>,
    },
    /// The utterance is with the recogniser.
    Recognizing {
        /// Why the utterance ended.
        end: ListenEnd,
        /// Its length.
        speech: Duration,
    },
    /// Answering-machine detection.
    Amd,
    /// Waiting for the voicemail tone.
    Beep,
}

impl CallCore {
    /// `say`: the text is played as it is synthesized.
    pub(super) fn start_say(&mut self, request: SayRequest, barge_in: bool) {
        self.note(Note::Said(request.text.clone()));
        if barge_in && self.has_media() {
            self.set_ear(EarMode::Watch);
        }
        self.play(PlaySpec::Speech(Box::new(request)), barge_in);
    }

    /// A barge-in `play` listens for speech too.
    pub(super) fn watch_for_speech(&mut self) {
        if self.has_media() {
            self.set_ear(EarMode::Watch);
        }
    }

    /// `listen`: a key already typed ahead answers at once; otherwise the ear listens.
    pub(super) fn start_listen(&mut self, now: Instant, options: ListenOptions) {
        if !self.has_media() {
            return self.fail("the call has no media");
        }
        if options.keys {
            if let Some(k) = self.type_ahead.pop_front() {
                self.set_ear(EarMode::Off);
                return self.heard(Heard::without_speech(ListenEnd::Key, Some(k.as_char())));
            }
        }
        let until = now + options.timeout + options.max + EAR_SLACK;
        self.set_ear(EarMode::Listen(options.clone()));
        self.active = Active::Hearing {
            hearing: Hearing::Listen {
                options: Box::new(options),
            },
            until,
        };
    }

    /// `amd`: the ear analyses the start of the call.
    pub(super) fn start_amd(&mut self, now: Instant, config: AmdConfig) {
        if !self.has_media() {
            return self.fail("the call has no media");
        }
        let until = now + Duration::from_millis(u64::from(config.total_analysis_time)) + EAR_SLACK;
        self.set_ear(EarMode::Amd(config));
        self.active = Active::Hearing {
            hearing: Hearing::Amd,
            until,
        };
    }

    /// `wait_for_beep`: the ear waits for the tone to end.
    pub(super) fn start_beep_wait(&mut self, now: Instant, wait: Duration) {
        if !self.has_media() {
            return self.fail("the call has no media");
        }
        self.set_ear(EarMode::Beep(wait));
        self.active = Active::Hearing {
            hearing: Hearing::Beep,
            until: now + wait + EAR_SLACK,
        };
    }

    /// Sets the ear's mode; `Off` only when it is on.
    pub(super) fn set_ear(&mut self, mode: EarMode) {
        let off = matches!(mode, EarMode::Off);
        if off && !self.ear_on {
            return;
        }
        self.ear_on = !off;
        self.media(MediaAction::Ear(mode));
    }

    /// What a leg's ear heard: the caller's, or a dialled leg's being screened.
    pub fn handle_heard(&mut self, now: Instant, leg: LegId, event: EarEvent) {
        if leg != LegId::CALLER {
            if let EarEvent::Amd(r) = event {
                self.screened(now, leg, r);
            }
            return;
        }
        match event {
            EarEvent::SpeechStarted => {
                if let Active::Play { barge_in: true, .. } = self.active {
                    self.note(Note::InterruptedBySpeech);
                    self.media(MediaAction::StopPlay);
                }
            }
            EarEvent::Utterance { samples, rate, end } => {
                let Active::Hearing {
                    hearing: Hearing::Listen { options },
                    ..
                } = &self.active
                else {
                    return;
                };
                self.ear_on = false;
                let choices = options.choices.clone();
                let speech =
                    Duration::from_millis(samples.len() as u64 * 1000 / u64::from(rate.hz()));
                self.active = Active::Hearing {
                    hearing: Hearing::Recognizing { end, speech },
                    until: now + RECOGNIZE_WAIT,
                };
                self.push(super::core::Action::Work(Work::Recognize {
                    samples,
                    rate,
                    choices,
                }));
            }
            EarEvent::NoInput => {
                if matches!(
                    self.active,
                    Active::Hearing {
                        hearing: Hearing::Listen { .. },
                        ..
                    }
                ) {
                    self.ear_on = false;
                    self.heard(Heard::without_speech(ListenEnd::NoInput, None));
                }
            }
            EarEvent::Amd(r) => {
                if matches!(
                    self.active,
                    Active::Hearing {
                        hearing: Hearing::Amd,
                        ..
                    }
                ) {
                    self.ear_on = false;
                    self.note(Note::Amd {
                        status: r.status_str().to_string(),
                        cause: r.cause.clone(),
                        greeting_ms: r.greeting_ms,
                        words: r.words,
                    });
                    self.active = Active::Idle;
                    self.reply(CallReply::Amd(r));
                }
            }
            EarEvent::Beep(b) => {
                if matches!(
                    self.active,
                    Active::Hearing {
                        hearing: Hearing::Beep,
                        ..
                    }
                ) {
                    self.ear_on = false;
                    self.note(match b {
                        Some(b) => Note::BeepHeard {
                            hz: b.hz.round() as u32,
                            ms: b.ms.round() as u32,
                        },
                        None => Note::NoBeep,
                    });
                    self.active = Active::Idle;
                    self.reply(CallReply::Beep(BeepResult { beep: b }));
                }
            }
        }
    }

    /// The recogniser's answer for the utterance.
    pub fn handle_recognized(&mut self, result: Result<crate::speech::asr::Recognition, String>) {
        let Active::Hearing {
            hearing: Hearing::Recognizing { end, speech },
            ..
        } = self.active
        else {
            return;
        };
        match result {
            Ok(r) => self.heard(Heard::recognized(r, end, speech)),
            Err(e) => {
                self.note(Note::NotRecognized(e.clone()));
                self.fail(format!("listen: {e}"));
            }
        }
    }

    /// A key during `listen` ends it (when keys are wanted).
    pub(super) fn listen_digit(&mut self, digit: Digit) -> bool {
        let Active::Hearing {
            hearing: Hearing::Listen { options },
            ..
        } = &self.active
        else {
            return false;
        };
        if !options.keys {
            return true;
        }
        self.set_ear(EarMode::Off);
        self.heard(Heard::without_speech(ListenEnd::Key, Some(digit.as_char())));
        true
    }

    /// The ear said nothing in time: the script gets an error rather than waiting forever.
    pub(super) fn hearing_timeout(&mut self, now: Instant) {
        let Active::Hearing { until, .. } = self.active else {
            return;
        };
        if until > now {
            return;
        }
        tracing::warn!("the ear did not answer in time");
        self.set_ear(EarMode::Off);
        self.ear_on = false;
        self.fail("the caller's audio could not be heard");
    }

    fn heard(&mut self, h: Heard) {
        tracing::info!(reason = h.reason.as_str(), text = %h.text, choice = ?h.choice, "heard");
        self.note(Note::Heard {
            text: h.text.clone(),
            choice: h.choice.clone(),
            confidence: (h.confidence.clamp(0.0, 1.0) * 1000.0).round() as u16,
            key: h.key,
            reason: h.reason.as_str(),
            speech_ms: h.speech.as_millis() as u64,
        });
        self.active = Active::Idle;
        self.reply(CallReply::Heard(h));
    }
}
