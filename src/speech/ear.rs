//! The ear: a sans-IO core that listens to one caller, 20 ms at a time, for whatever the
//! call's script asks now — speech to stop a prompt, one utterance for `listen()`, an
//! answering machine or a voicemail tone — and says what it heard.
//!
//! It is fed every frame the caller's leg produces (time is counted in frames, never read
//! from a clock), at 8 kHz for a narrowband leg and 16 kHz otherwise. What it needs for a
//! mode (the utterance buffer, a detector) is made off the media thread in an [`EarSetup`]
//! and handed over whole, so [`Ear::push`] never allocates.
//!
//! A `listen()` that follows a barge-in prompt hears the whole answer: speech that stopped
//! the prompt is kept from its start (with the frames before the detector was sure of it)
//! and carries on into the `listen`, or is handed over at once if it has already ended.

use std::time::Duration;

use super::amd::Amd;
use super::beep::BeepDetector;
use super::listen::{EarEvent, EarMode, ListenEnd, ListenOptions};
use super::vad::{Vad, VadConfig, VadEvent};
use crate::rtp::types::ClockRate;

/// One frame: 20 ms.
pub const FRAME: Duration = Duration::from_millis(20);
/// Audio kept from before speech is confirmed, so an utterance starts where the caller did.
const PREROLL_FRAMES: usize = 25;
/// Frames taken from before the detector's onset: a soft first sound under its threshold
/// belongs to the word, and a recogniser wants a little silence before speech.
const ONSET_LEAD: u64 = 5;
/// Longest speech a barge-in watch keeps for the `listen` that may follow.
pub const WATCH_MAX: Duration = Duration::from_secs(15);

/// The rate an ear works at for a leg's rate: 8 kHz stays, anything wider is heard at 16.
pub fn ear_rate(leg: ClockRate) -> ClockRate {
    if leg.hz() <= 8000 {
        ClockRate::HZ_8000
    } else {
        ClockRate::HZ_16000
    }
}

fn frames_in(d: Duration) -> u64 {
    d.as_millis().div_ceil(FRAME.as_millis()) as u64
}

/// What a mode needs, made off the media thread.
#[derive(Debug)]
pub struct EarSetup {
    mode: EarMode,
    /// Room for the utterance (Watch, Listen).
    buffer: Vec<i16>,
    vad: Option<Box<Vad>>,
    amd: Option<Box<Amd>>,
    beep: Option<Box<BeepDetector>>,
}

impl EarSetup {
    /// Everything `mode` needs at `rate` (the ear's rate: see [`ear_rate`]).
    pub fn new(mode: EarMode, rate: ClockRate) -> EarSetup {
        let samples = |d: Duration| rate.ticks_in(d) as usize;
        let vad = |end: Duration| {
            Some(Box::new(Vad::new(
                rate,
                VadConfig {
                    end_silence_ms: end.as_millis() as u32,
                    ..VadConfig::default()
                },
            )))
        };
        let (buffer, vad, amd, beep) = match &mode {
            EarMode::Off => (Vec::new(), None, None, None),
            EarMode::Watch => (
                Vec::with_capacity(samples(WATCH_MAX)),
                vad(ListenOptions::default().end_silence),
                None,
                None,
            ),
            EarMode::Listen(o) => (
                Vec::with_capacity(samples(o.max)),
                vad(o.end_silence),
                None,
                None,
            ),
            EarMode::Amd(cfg) => (Vec::new(), None, Some(Box::new(Amd::new(*cfg))), None),
            // The ear's rates (8 and 16 kHz) are the detector's; no detector hears nothing.
            EarMode::Beep(_) => (
                Vec::new(),
                None,
                None,
                BeepDetector::new(rate).ok().map(Box::new),
            ),
        };
        EarSetup {
            mode,
            buffer,
            vad,
            amd,
            beep,
        }
    }
}

/// Where the ear is in a `listen` or a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speech {
    /// No speech yet.
    Waiting,
    /// The caller is speaking (the buffer fills).
    Speaking,
    /// The caller spoke and stopped (a watch keeps it for a `listen`).
    Ended(ListenEnd),
}

/// One caller's ear.
#[derive(Debug)]
pub struct Ear {
    rate: ClockRate,
    frame_samples: usize,
    mode: EarMode,
    /// Frames since the mode was set.
    frames: u64,
    /// Frames of the mode's limit: the listen timeout or the beep wait.
    limit: u64,
    /// Samples the utterance may hold.
    max_samples: usize,
    vad: Option<Box<Vad>>,
    amd: Option<Box<Amd>>,
    beep: Option<Box<BeepDetector>>,
    speech: Speech,
    utterance: Vec<i16>,
    /// The last frames, for the start of an utterance.
    preroll: Box<[i16]>,
    /// Frames written to `preroll` ever (its write position is this modulo its length).
    preroll_frames: u64,
}

impl Ear {
    /// An idle ear at `rate` (8 or 16 kHz).
    pub fn new(rate: ClockRate) -> Ear {
        let frame_samples = rate.ticks_in(FRAME) as usize;
        Ear {
            rate,
            frame_samples,
            mode: EarMode::Off,
            frames: 0,
            limit: 0,
            max_samples: 0,
            vad: None,
            amd: None,
            beep: None,
            speech: Speech::Waiting,
            utterance: Vec::new(),
            preroll: vec![0; frame_samples * PREROLL_FRAMES].into_boxed_slice(),
            preroll_frames: 0,
        }
    }

    /// The rate it hears at.
    pub fn rate(&self) -> ClockRate {
        self.rate
    }

    /// The mode it is in.
    pub fn mode(&self) -> &EarMode {
        &self.mode
    }

    /// Takes up a new mode. A `listen` after a watch carries on with the watch's speech: it
    /// is still going (the listen waits for its end) or has ended (it is handed over now).
    pub fn apply(&mut self, setup: EarSetup) -> Option<EarEvent> {
        let carried = matches!(self.mode, EarMode::Watch)
            && matches!(setup.mode, EarMode::Listen(_))
            && self.speech != Speech::Waiting;
        self.frames = 0;
        self.limit = match &setup.mode {
            EarMode::Listen(o) => frames_in(o.timeout),
            EarMode::Beep(wait) => frames_in(*wait),
            _ => 0,
        };
        let listen_max = match &setup.mode {
            EarMode::Listen(o) => Some(self.rate.ticks_in(o.max) as usize),
            _ => None,
        };
        self.mode = setup.mode;
        self.amd = setup.amd;
        self.beep = setup.beep;
        if carried {
            // The watch's detector and buffer go on; the listen's limit applies from now.
            if let Some(max) = listen_max {
                self.max_samples = max.min(self.utterance.capacity());
            }
            if let Speech::Ended(end) = self.speech {
                return Some(self.hand_over(end));
            }
            if self.utterance.len() >= self.max_samples {
                return Some(self.hand_over(ListenEnd::MaxSpeech));
            }
            return None;
        }
        self.speech = Speech::Waiting;
        self.utterance = setup.buffer;
        self.max_samples = self.utterance.capacity();
        self.vad = setup.vad;
        None
    }

    /// One frame of what the caller said (`frame_samples` at the ear's rate).
    pub fn push(&mut self, frame: &[i16]) -> Option<EarEvent> {
        if matches!(self.mode, EarMode::Off) {
            return None;
        }
        self.frames += 1;
        self.keep_preroll(frame);
        match self.mode {
            EarMode::Off => None,
            EarMode::Watch | EarMode::Listen(_) => self.listen(frame),
            EarMode::Amd(_) => {
                let r = self.amd.as_mut()?.push(frame)?;
                self.mode = EarMode::Off;
                Some(EarEvent::Amd(r))
            }
            EarMode::Beep(_) => {
                if let Some(b) = self.beep.as_mut()?.push(frame) {
                    self.mode = EarMode::Off;
                    return Some(EarEvent::Beep(Some(b)));
                }
                if self.frames >= self.limit {
                    self.mode = EarMode::Off;
                    return Some(EarEvent::Beep(None));
                }
                None
            }
        }
    }

    /// The caller hung up: an answering-machine analysis in progress ends with its verdict.
    pub fn finish(&mut self) -> Option<EarEvent> {
        match self.mode {
            EarMode::Amd(_) => {
                self.mode = EarMode::Off;
                self.amd.as_mut()?.finish().map(EarEvent::Amd)
            }
            _ => None,
        }
    }

    fn keep_preroll(&mut self, frame: &[i16]) {
        let n = self.frame_samples;
        let at = (self.preroll_frames as usize % PREROLL_FRAMES) * n;
        let len = frame.len().min(n);
        self.preroll[at..at + len].copy_from_slice(&frame[..len]);
        self.preroll_frames += 1;
    }

    fn listen(&mut self, frame: &[i16]) -> Option<EarEvent> {
        let vad = self.vad.as_mut()?;
        let event = vad.push(frame);
        // The VAD counts its frames from its own start, as `at_frame` does.
        let vad_now = vad.frames_seen();
        let listening = matches!(self.mode, EarMode::Listen(_));
        match event {
            Some(VadEvent::SpeechStarted { at_frame }) if self.speech == Speech::Waiting => {
                self.speech = Speech::Speaking;
                // The frames from where speech began, this one included, are in the preroll.
                let back = ((vad_now + ONSET_LEAD).saturating_sub(at_frame) as usize)
                    .clamp(1, PREROLL_FRAMES);
                self.take_preroll(back);
                return Some(EarEvent::SpeechStarted);
            }
            Some(VadEvent::SpeechEnded { .. }) if self.speech == Speech::Speaking => {
                self.speech = Speech::Ended(ListenEnd::Speech);
                if listening {
                    return Some(self.hand_over(ListenEnd::Speech));
                }
                return None;
            }
            _ => {}
        }
        match self.speech {
            Speech::Speaking => {
                let room = self.max_samples.saturating_sub(self.utterance.len());
                let take = frame.len().min(room);
                self.utterance.extend_from_slice(&frame[..take]);
                if take < frame.len() || self.utterance.len() >= self.max_samples {
                    self.speech = Speech::Ended(ListenEnd::MaxSpeech);
                    if listening {
                        return Some(self.hand_over(ListenEnd::MaxSpeech));
                    }
                }
                None
            }
            Speech::Waiting if listening && self.frames >= self.limit => {
                self.mode = EarMode::Off;
                Some(EarEvent::NoInput)
            }
            _ => None,
        }
    }

    /// Copies the last `frames` frames (this one included) into the utterance.
    fn take_preroll(&mut self, frames: usize) {
        let n = self.frame_samples;
        let frames = frames.min(self.preroll_frames as usize);
        for k in (0..frames).rev() {
            let index = (self.preroll_frames as usize - 1 - k) % PREROLL_FRAMES;
            let room = self.max_samples.saturating_sub(self.utterance.len());
            let take = n.min(room);
            self.utterance
                .extend_from_slice(&self.preroll[index * n..index * n + take]);
        }
    }

    fn hand_over(&mut self, end: ListenEnd) -> EarEvent {
        self.mode = EarMode::Off;
        self.speech = Speech::Waiting;
        EarEvent::Utterance {
            samples: std::mem::take(&mut self.utterance),
            rate: self.rate,
            end,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::speech::amd::AmdConfig;

    const N8: ClockRate = ClockRate::HZ_8000;

    fn speech(text: &str) -> Vec<i16> {
        flite_rs::Engine::new().synthesize(text).samples
    }

    /// 20 ms frames of `pcm` louder than -40 dBFS.
    fn loud(pcm: &[i16]) -> usize {
        pcm.chunks(160)
            .filter(|f| crate::media::level::rms_dbfs(f) > -40.0)
            .count()
    }

    fn quiet(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    fn tone(hz: f64, ms: usize) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16)
            .collect()
    }

    /// Feeds `pcm` a frame at a time (then silence up to `frames`), returning each event
    /// with the frame it came on.
    fn run(ear: &mut Ear, pcm: &[i16], frames: usize) -> Vec<(usize, EarEvent)> {
        let mut out = Vec::new();
        for f in 0..frames {
            let frame: Vec<i16> = (0..160)
                .map(|i| *pcm.get(f * 160 + i).unwrap_or(&0))
                .collect();
            if let Some(e) = ear.push(&frame) {
                out.push((f, e));
            }
        }
        out
    }

    fn listen(timeout_ms: u64) -> EarSetup {
        EarSetup::new(
            EarMode::Listen(ListenOptions {
                timeout: Duration::from_millis(timeout_ms),
                ..ListenOptions::default()
            }),
            N8,
        )
    }

    #[test]
    fn an_utterance_is_handed_over_from_its_start_after_the_end_silence() {
        let mut ear = Ear::new(N8);
        assert!(ear.apply(listen(5000)).is_none());
        let mut pcm = quiet(500);
        let word = speech("support");
        pcm.extend(&word);
        let events = run(&mut ear, &pcm, 200);
        assert!(matches!(events[0].1, EarEvent::SpeechStarted));
        let (at, EarEvent::Utterance { samples, end, .. }) = &events[1] else {
            panic!("{events:?}");
        };
        assert_eq!(*end, ListenEnd::Speech);
        // Ended 800 ms (the default end silence) after the word's last sound, give or take
        // the detector.
        let word_end = pcm
            .chunks(160)
            .rposition(|f| crate::media::level::rms_dbfs(f) > -40.0)
            .unwrap() as i64
            + 1;
        let ended = *at as i64 - word_end;
        assert!(
            (35..=50).contains(&ended),
            "ended {ended} frames after the word"
        );
        // Everything the caller said is in it: as long as the word, and as loud.
        assert!(
            loud(samples) >= loud(&word),
            "{} < {}",
            loud(samples),
            loud(&word)
        );
        assert_eq!(events.len(), 2, "one utterance: {events:?}");
        assert!(matches!(ear.mode(), EarMode::Off));
    }

    #[test]
    fn silence_gives_no_input_on_the_timeouts_frame() {
        for timeout in [1000u64, 1020, 3000] {
            let mut ear = Ear::new(N8);
            ear.apply(listen(timeout));
            let events = run(&mut ear, &[], 400);
            assert_eq!(events.len(), 1);
            assert!(matches!(events[0].1, EarEvent::NoInput));
            assert_eq!(events[0].0 as u64 + 1, timeout / 20, "timeout {timeout}");
        }
    }

    #[test]
    fn speech_longer_than_max_is_cut_at_max() {
        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(
            EarMode::Listen(ListenOptions {
                max: Duration::from_millis(1000),
                ..ListenOptions::default()
            }),
            N8,
        ));
        let pcm =
            speech("This is a long answer that goes on and on well past the limit of one second.");
        let events = run(&mut ear, &pcm, 300);
        let cut = events
            .iter()
            .find_map(|(_, e)| match e {
                EarEvent::Utterance { samples, end, .. } => Some((samples.len(), *end)),
                _ => None,
            })
            .unwrap();
        assert_eq!(cut, (8000, ListenEnd::MaxSpeech));
    }

    #[test]
    fn a_listen_after_a_watch_gets_the_speech_the_watch_heard() {
        // Speech that began during a barge-in prompt and goes on into the listen.
        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(EarMode::Watch, N8));
        let mut pcm = quiet(200);
        let answer = speech("billing department please");
        pcm.extend(&answer);
        let onset = 200 / 20 + 5;
        let early = run(&mut ear, &pcm, onset + 15);
        assert!(matches!(early.last().unwrap().1, EarEvent::SpeechStarted));
        assert!(ear.apply(listen(5000)).is_none(), "still speaking");
        let rest: Vec<i16> = pcm[(onset + 15) * 160..].to_vec();
        let events = run(&mut ear, &rest, 150);
        let Some((_, EarEvent::Utterance { samples, .. })) = events.first() else {
            panic!("{events:?}");
        };
        assert!(
            loud(samples) >= loud(&answer),
            "the whole answer: {} < {}",
            loud(samples),
            loud(&answer)
        );

        // Speech that ended before the listen: handed over as the listen starts.
        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(EarMode::Watch, N8));
        run(&mut ear, &pcm, 200);
        let got = ear.apply(listen(5000));
        assert!(
            matches!(
                got,
                Some(EarEvent::Utterance {
                    end: ListenEnd::Speech,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn a_fresh_listen_forgets_an_old_watch_without_speech() {
        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(EarMode::Watch, N8));
        run(&mut ear, &[], 50);
        assert!(ear.apply(listen(1000)).is_none());
        let events = run(&mut ear, &[], 60);
        assert!(matches!(events[0].1, EarEvent::NoInput));
    }

    #[test]
    fn amd_and_beep_modes_report_once_and_go_off() {
        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(EarMode::Amd(AmdConfig::default()), N8));
        // Silence past the initial silence: a machine, as Asterisk says.
        let events = run(&mut ear, &[], 200);
        assert_eq!(events.len(), 1);
        let EarEvent::Amd(r) = &events[0].1 else {
            panic!()
        };
        assert_eq!(r.status_str(), "MACHINE");
        assert!(matches!(ear.mode(), EarMode::Off));

        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(EarMode::Beep(Duration::from_secs(5)), N8));
        let mut pcm = quiet(300);
        pcm.extend(tone(1000.0, 400));
        let events = run(&mut ear, &pcm, 100);
        assert_eq!(events.len(), 1, "{events:?}");
        let EarEvent::Beep(Some(b)) = &events[0].1 else {
            panic!("{events:?}")
        };
        assert!((b.hz - 1000.0).abs() < 10.0, "{b:?}");
        // Reported once the tone has ended, not while it sounds.
        assert!(
            events[0].0 >= (300 + 400) / 20 - 1,
            "at frame {}",
            events[0].0
        );

        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(EarMode::Beep(Duration::from_secs(1)), N8));
        let events = run(&mut ear, &[], 100);
        assert!(
            matches!(events[..], [(49, EarEvent::Beep(None))]),
            "{events:?}"
        );
    }

    #[test]
    fn a_hangup_during_amd_is_its_verdict() {
        let mut ear = Ear::new(N8);
        ear.apply(EarSetup::new(EarMode::Amd(AmdConfig::default()), N8));
        run(&mut ear, &[], 10);
        let Some(EarEvent::Amd(r)) = ear.finish() else {
            panic!()
        };
        assert_eq!(r.status_str(), "HANGUP");
    }
}
