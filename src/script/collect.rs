//! `collect`: reading digits from the caller, sans-IO.
//!
//! A [`Collector`] is driven by whoever owns the call's clock (the call task, or the
//! simulator's virtual clock): digits, prompt completions and timeouts go in with `now`,
//! actions come out of [`Collector::poll_action`], and [`Collector::poll_timeout`] tells
//! when to call [`Collector::handle_timeout`] next. It never reads a clock.
//!
//! # Specification
//!
//! Options (all optional; times in milliseconds):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `min` | 1 | fewest digits accepted |
//! | `max` | `max(min, 1)` | most digits; reaching it ends the try at once |
//! | `first_digit_timeout` | 5000 | wait for the first digit, from the start of input |
//! | `inter_digit_timeout` | 3000 | wait for each further digit, from the previous one |
//! | `timeout` | 0 (none) | the longest one try may take, from the start of input |
//! | `terminators` | `"#"` | keys that end input; never part of the result |
//! | `regex` | none | the result must match it in full |
//! | `tries` | 1 | tries before giving up |
//! | `prompt` | none | prompt(s) played at the start of every try |
//! | `invalid_prompt` | none | prompt(s) played after every failed try |
//! | `barge_in` | true | a key pressed during a prompt stops it |
//!
//! 1. **A try** plays `prompt` (if any), then takes input. *Input starts* when the prompt
//!    ends, when a key stops it (barge-in), or at once when there is no prompt.
//! 2. **Barge-in.** With `barge_in`, a key pressed during `prompt` or `invalid_prompt` stops
//!    it, input starts at that moment and the key is the try's first key. Without it, keys
//!    pressed during a prompt are ignored.
//! 3. **Type-ahead.** Keys the caller pressed before `collect` began (for instance the key
//!    that interrupted an earlier barge-in `play`) are taken first, one by one, as if
//!    pressed at the moment `collect` began; if any is taken, the first try's prompt is
//!    skipped. Taking stops when the collect ends or a try fails; what remains stays
//!    buffered when the collect ends and is discarded when a try fails.
//! 4. **Keys.** A terminator ends the try with the keys before it. Any other key is
//!    appended; when the count reaches `max` the try ends at once.
//! 5. **Timeouts** run only while taking input, never during a prompt. Before the first key
//!    the deadline is *input start* + `first_digit_timeout`; after a key it is that key's
//!    time + `inter_digit_timeout`; with `timeout`, never later than *input start* +
//!    `timeout`. At the deadline the try ends with the keys so far, or fails as *no input*
//!    when there are none.
//! 6. **Validation.** An ended try succeeds when `min ≤ count ≤ max` and `regex` (if any)
//!    matches the whole string. A terminator alone gives `""`, valid only when `min` is 0.
//!    A success ends `collect` with the keys as a string.
//! 7. **Failure.** An invalid or no-input try plays `invalid_prompt` (if any); then the next
//!    try starts with `prompt`, or, after the last of `tries`, `collect` returns `()`. A key
//!    stopping `invalid_prompt` (barge-in) starts the next try at once with that key and
//!    without its prompt; after the last try it is discarded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::media::dtmf::Digit;
use crate::media::record::DigitSet;

/// Most digits one `collect` may ask for, so `max` cannot grow a buffer without bound.
pub const MAX_DIGITS: usize = 128;

/// Options of one `collect`, as in the module's specification.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Fewest digits accepted.
    pub min: usize,
    /// Most digits; reaching it ends the try.
    pub max: usize,
    /// Wait for the first digit from the start of input.
    pub first_digit_timeout: Duration,
    /// Wait for each further digit.
    pub inter_digit_timeout: Duration,
    /// Longest a try may take from the start of input (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Keys that end input.
    pub terminators: DigitSet,
    /// Full-match validation.
    pub regex: Option<Regex>,
    /// Tries before giving up (at least 1).
    pub tries: u32,
    /// Played at the start of every try.
    pub prompt: Vec<String>,
    /// Played after every failed try.
    pub invalid_prompt: Vec<String>,
    /// A key stops a prompt.
    pub barge_in: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            min: 1,
            max: 1,
            first_digit_timeout: Duration::from_secs(5),
            inter_digit_timeout: Duration::from_secs(3),
            timeout: None,
            terminators: DigitSet::from_chars("#"),
            regex: None,
            tries: 1,
            prompt: Vec::new(),
            invalid_prompt: Vec::new(),
            barge_in: true,
        }
    }
}

/// Why a set of collect options was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectOptionsError {
    /// `min` is above `max`.
    #[error("collect: min ({min}) is greater than max ({max})")]
    MinAboveMax {
        /// The minimum.
        min: usize,
        /// The maximum.
        max: usize,
    },
    /// `max` is 0 or too large.
    #[error("collect: max must be between 1 and {MAX_DIGITS}, not {0}")]
    Max(usize),
    /// `tries` is 0.
    #[error("collect: tries must be at least 1")]
    Tries,
}

impl CollectOptions {
    /// Checks the options against each other.
    pub fn validate(&self) -> Result<(), CollectOptionsError> {
        if self.max == 0 || self.max > MAX_DIGITS {
            return Err(CollectOptionsError::Max(self.max));
        }
        if self.min > self.max {
            return Err(CollectOptionsError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if self.tries == 0 {
            return Err(CollectOptionsError::Tries);
        }
        Ok(())
    }
}

/// Which prompt a [`CollectAction::Play`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// `prompt`, at the start of a try.
    Prompt,
    /// `invalid_prompt`, after a failed try.
    Invalid,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectAction {
    /// Play the options' `prompt` or `invalid_prompt`; report its end with `play`.
    Play {
        /// Which prompt.
        kind: PromptKind,
        /// Number of this playback, for [`Collector::handle_play_done`].
        play: u32,
        /// Whether a key should stop it.
        barge_in: bool,
    },
    /// Stop playback `play` (a key barged in).
    Stop {
        /// The playback to stop.
        play: u32,
    },
    /// The collect is over: the digits, or `None` after the last failed try.
    Done(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A prompt is playing.
    Playing {
        kind: PromptKind,
        play: u32,
    },
    /// Taking input since `start`.
    Input {
        start: Instant,
    },
    Done,
}

/// One `collect` in progress.
#[derive(Debug)]
pub struct Collector {
    opts: CollectOptions,
    state: State,
    digits: String,
    last_digit: Option<Instant>,
    /// Tries that failed so far.
    failed: u32,
    next_play: u32,
    actions: VecDeque<CollectAction>,
}

impl Collector {
    /// Starts collecting at `now`, taking keys from `type_ahead` first (rule 3).
    pub fn new(opts: CollectOptions, now: Instant, type_ahead: &mut VecDeque<Digit>) -> Self {
        let mut c = Collector {
            opts,
            state: State::Done,
            digits: String::new(),
            last_digit: None,
            failed: 0,
            next_play: 0,
            actions: VecDeque::new(),
        };
        if type_ahead.is_empty() {
            c.start_try(now);
            return c;
        }
        c.state = State::Input { start: now };
        while matches!(c.state, State::Input { .. }) && c.failed == 0 {
            let Some(d) = type_ahead.pop_front() else {
                break;
            };
            c.input_digit(now, d);
        }
        if c.failed > 0 {
            type_ahead.clear();
        }
        c
    }

    /// The options this collector runs with.
    pub fn options(&self) -> &CollectOptions {
        &self.opts
    }

    /// Whether `collect` is over.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether a key pressed now would be used (not ignored by a prompt without barge-in).
    pub fn is_listening(&self) -> bool {
        match self.state {
            State::Playing { .. } => self.opts.barge_in,
            State::Input { .. } => true,
            State::Done => false,
        }
    }

    /// Takes the next action, in order.
    pub fn poll_action(&mut self) -> Option<CollectAction> {
        self.actions.pop_front()
    }

    /// When [`Collector::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let State::Input { start } = self.state else {
            return None;
        };
        let digit_deadline = match self.last_digit {
            None => start + self.opts.first_digit_timeout,
            Some(t) => t + self.opts.inter_digit_timeout,
        };
        Some(match self.opts.timeout {
            Some(overall) => digit_deadline.min(start + overall),
            None => digit_deadline,
        })
    }

    /// A key press.
    pub fn handle_digit(&mut self, now: Instant, d: Digit) {
        match self.state {
            State::Done => {}
            State::Input { .. } => self.input_digit(now, d),
            State::Playing { kind, play } => {
                if !self.opts.barge_in {
                    return;
                }
                self.actions.push_back(CollectAction::Stop { play });
                match kind {
                    PromptKind::Prompt => {
                        self.state = State::Input { start: now };
                        self.input_digit(now, d);
                    }
                    PromptKind::Invalid if self.failed < self.opts.tries => {
                        self.begin_input(now);
                        self.input_digit(now, d);
                    }
                    PromptKind::Invalid => self.finish(None),
                }
            }
        }
    }

    /// Playback `play` ended (finished or stopped); stale numbers are ignored.
    pub fn handle_play_done(&mut self, now: Instant, play: u32) {
        let State::Playing {
            kind,
            play: current,
        } = self.state
        else {
            return;
        };
        if current != play {
            return;
        }
        match kind {
            PromptKind::Prompt => self.state = State::Input { start: now },
            PromptKind::Invalid if self.failed < self.opts.tries => self.start_try(now),
            PromptKind::Invalid => self.finish(None),
        }
    }

    /// Time passed; ends the try when its deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| now >= t) {
            if self.digits.is_empty() {
                self.fail(now);
            } else {
                self.end_try(now);
            }
        }
    }

    fn start_try(&mut self, now: Instant) {
        if self.opts.prompt.is_empty() {
            self.begin_input(now);
        } else {
            self.digits.clear();
            self.last_digit = None;
            self.play(PromptKind::Prompt);
        }
    }

    fn begin_input(&mut self, now: Instant) {
        self.digits.clear();
        self.last_digit = None;
        self.state = State::Input { start: now };
    }

    fn play(&mut self, kind: PromptKind) {
        let play = self.next_play;
        self.next_play = self.next_play.wrapping_add(1);
        self.state = State::Playing { kind, play };
        self.actions.push_back(CollectAction::Play {
            kind,
            play,
            barge_in: self.opts.barge_in,
        });
    }

    fn input_digit(&mut self, now: Instant, d: Digit) {
        if self.opts.terminators.contains(d) {
            self.end_try(now);
            return;
        }
        self.digits.push(d.as_char());
        self.last_digit = Some(now);
        if self.digits.len() >= self.opts.max {
            self.end_try(now);
        }
    }

    fn end_try(&mut self, now: Instant) {
        let n = self.digits.len();
        let valid = n >= self.opts.min
            && n <= self.opts.max
            && self
                .opts
                .regex
                .as_ref()
                .is_none_or(|r| r.is_match(&self.digits));
        if valid {
            let digits = std::mem::take(&mut self.digits);
            self.finish(Some(digits));
        } else {
            self.fail(now);
        }
    }

    fn fail(&mut self, now: Instant) {
        self.failed += 1;
        self.digits.clear();
        self.last_digit = None;
        if !self.opts.invalid_prompt.is_empty() {
            self.play(PromptKind::Invalid);
        } else if self.failed < self.opts.tries {
            self.start_try(now);
        } else {
            self.finish(None);
        }
    }

    fn finish(&mut self, result: Option<String>) {
        self.state = State::Done;
        self.actions.push_back(CollectAction::Done(result));
    }
}

/// Compiles a `collect` regex so that it must match the whole input.
pub fn full_match_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digit {
        Digit::from_char(c).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A collector with a prompt, stepped by hand.
    struct Rig {
        t0: Instant,
        c: Collector,
        log: Vec<CollectAction>,
    }

    impl Rig {
        fn new(opts: CollectOptions) -> Rig {
            Rig::with_type_ahead(opts, "").0
        }

        fn with_type_ahead(opts: CollectOptions, keys: &str) -> (Rig, VecDeque<Digit>) {
            let t0 = Instant::now();
            let mut buf: VecDeque<Digit> = keys.chars().map(d).collect();
            let c = Collector::new(opts, t0, &mut buf);
            let mut r = Rig {
                t0,
                c,
                log: Vec::new(),
            };
            r.drain();
            (r, buf)
        }

        fn at(&self, t: u64) -> Instant {
            self.t0 + ms(t)
        }

        fn drain(&mut self) {
            while let Some(a) = self.c.poll_action() {
                self.log.push(a);
            }
        }

        fn key(&mut self, t: u64, k: char) {
            let now = self.at(t);
            self.c.handle_digit(now, d(k));
            self.drain();
        }

        fn keys(&mut self, t: u64, ks: &str) {
            for k in ks.chars() {
                self.key(t, k);
            }
        }

        fn play_done(&mut self, t: u64) {
            let play = self.log.iter().rev().find_map(|a| match a {
                CollectAction::Play { play, .. } => Some(*play),
                _ => None,
            });
            let now = self.at(t);
            self.c.handle_play_done(now, play.unwrap());
            self.drain();
        }

        fn tick(&mut self, t: u64) {
            let now = self.at(t);
            self.c.handle_timeout(now);
            self.drain();
        }

        fn deadline(&self) -> Option<u64> {
            self.c
                .poll_timeout()
                .map(|t| t.duration_since(self.t0).as_millis() as u64)
        }

        fn result(&self) -> Option<Option<String>> {
            self.log.iter().find_map(|a| match a {
                CollectAction::Done(r) => Some(r.clone()),
                _ => None,
            })
        }

        fn plays(&self, kind: PromptKind) -> usize {
            self.log
                .iter()
                .filter(|a| matches!(a, CollectAction::Play { kind: k, .. } if *k == kind))
                .count()
        }
    }

    fn opts() -> CollectOptions {
        CollectOptions {
            prompt: vec!["menu".into()],
            ..CollectOptions::default()
        }
    }

    #[test]
    fn first_digit_timeout_counts_from_the_end_of_the_prompt() {
        let mut r = Rig::new(opts());
        assert_eq!(r.deadline(), None, "no timer while the prompt plays");
        r.play_done(4000);
        assert_eq!(r.deadline(), Some(9000));
        r.tick(8999);
        assert_eq!(r.result(), None);
        r.tick(9000);
        assert_eq!(r.result(), Some(None));
    }

    #[test]
    fn inter_digit_timeout_ends_variable_length_input() {
        let mut r = Rig::new(CollectOptions { max: 6, ..opts() });
        r.play_done(0);
        r.key(1000, '1');
        assert_eq!(r.deadline(), Some(4000));
        r.key(3500, '2');
        assert_eq!(r.deadline(), Some(6500));
        r.tick(6499);
        assert_eq!(r.result(), None);
        r.tick(6500);
        assert_eq!(r.result(), Some(Some("12".into())));
    }

    #[test]
    fn overall_timeout_caps_the_try() {
        let mut r = Rig::new(CollectOptions {
            max: 10,
            min: 4,
            timeout: Some(ms(5000)),
            ..opts()
        });
        r.play_done(0);
        r.key(1000, '1');
        r.key(3000, '2');
        r.key(4900, '3');
        assert_eq!(r.deadline(), Some(5000));
        r.tick(5000);
        assert_eq!(r.result(), Some(None), "3 digits < min 4: invalid");
    }

    #[test]
    fn terminator_ends_input_and_is_not_included() {
        let mut r = Rig::new(CollectOptions { max: 6, ..opts() });
        r.play_done(0);
        r.keys(100, "42#");
        assert_eq!(r.result(), Some(Some("42".into())));
    }

    #[test]
    fn terminator_alone_is_invalid_unless_min_is_zero() {
        let mut r = Rig::new(CollectOptions { max: 6, ..opts() });
        r.play_done(0);
        r.key(100, '#');
        assert_eq!(r.result(), Some(None));

        let mut r = Rig::new(CollectOptions {
            min: 0,
            max: 6,
            ..opts()
        });
        r.play_done(0);
        r.key(100, '#');
        assert_eq!(r.result(), Some(Some(String::new())));
    }

    #[test]
    fn reaching_max_ends_at_once() {
        let mut r = Rig::new(CollectOptions { max: 3, ..opts() });
        r.play_done(0);
        r.keys(100, "12");
        assert_eq!(r.result(), None);
        r.key(200, '3');
        assert_eq!(r.result(), Some(Some("123".into())));
    }

    #[test]
    fn min_length_is_enforced() {
        let mut r = Rig::new(CollectOptions {
            min: 4,
            max: 8,
            ..opts()
        });
        r.play_done(0);
        r.keys(100, "123#");
        assert_eq!(r.result(), Some(None));
    }

    #[test]
    fn regex_must_match_in_full() {
        let re = || Some(full_match_regex("[0-3]").unwrap());
        let mut r = Rig::new(CollectOptions {
            regex: re(),
            ..opts()
        });
        r.play_done(0);
        r.key(100, '2');
        assert_eq!(r.result(), Some(Some("2".into())));

        let mut r = Rig::new(CollectOptions {
            regex: re(),
            ..opts()
        });
        r.play_done(0);
        r.key(100, '7');
        assert_eq!(r.result(), Some(None));

        // "12" contains a match but is not one.
        let mut r = Rig::new(CollectOptions {
            max: 2,
            regex: re(),
            ..opts()
        });
        r.play_done(0);
        r.keys(100, "12");
        assert_eq!(r.result(), Some(None));
    }

    #[test]
    fn failed_tries_play_invalid_then_prompt_again() {
        let mut r = Rig::new(CollectOptions {
            tries: 3,
            invalid_prompt: vec!["invalid".into()],
            regex: Some(full_match_regex("[12]").unwrap()),
            ..opts()
        });
        r.play_done(1000);
        r.key(1500, '7'); // invalid
        assert_eq!(r.plays(PromptKind::Invalid), 1);
        r.play_done(2500); // invalid prompt over: the menu again
        assert_eq!(r.plays(PromptKind::Prompt), 2);
        r.play_done(3500);
        r.tick(8500); // no input
        assert_eq!(r.plays(PromptKind::Invalid), 2);
        r.play_done(9500);
        r.play_done(10500);
        r.key(11000, '2');
        assert_eq!(r.result(), Some(Some("2".into())));
    }

    #[test]
    fn after_the_last_try_the_result_is_unit() {
        let mut r = Rig::new(CollectOptions {
            tries: 2,
            invalid_prompt: vec!["invalid".into()],
            ..opts()
        });
        r.play_done(0);
        r.tick(5000);
        r.play_done(6000);
        r.play_done(7000);
        r.tick(12000);
        assert_eq!(
            r.result(),
            None,
            "the invalid prompt still plays after the last try"
        );
        assert_eq!(r.plays(PromptKind::Invalid), 2);
        r.play_done(13000);
        assert_eq!(r.result(), Some(None));
        assert_eq!(r.plays(PromptKind::Prompt), 2);
    }

    #[test]
    fn without_invalid_prompt_the_next_try_follows_at_once() {
        let mut r = Rig::new(CollectOptions { tries: 2, ..opts() });
        r.play_done(0);
        r.tick(5000);
        assert_eq!(r.plays(PromptKind::Prompt), 2);
        r.play_done(6000);
        r.tick(11000);
        assert_eq!(r.result(), Some(None));
    }

    #[test]
    fn barge_in_stops_the_prompt_and_counts_as_first_digit() {
        let mut r = Rig::new(CollectOptions { max: 2, ..opts() });
        r.key(700, '5');
        assert!(r.log.contains(&CollectAction::Stop { play: 0 }));
        assert_eq!(r.deadline(), Some(3700), "inter-digit timer from the key");
        r.play_done(720); // the stopped prompt reports; nothing changes
        r.key(900, '6');
        assert_eq!(r.result(), Some(Some("56".into())));
    }

    #[test]
    fn without_barge_in_keys_during_the_prompt_are_ignored() {
        let mut r = Rig::new(CollectOptions {
            barge_in: false,
            ..opts()
        });
        assert!(!r.c.is_listening());
        r.key(700, '5');
        assert!(r
            .log
            .iter()
            .all(|a| !matches!(a, CollectAction::Stop { .. })));
        r.play_done(2000);
        r.key(2100, '6');
        assert_eq!(r.result(), Some(Some("6".into())));
    }

    #[test]
    fn barge_in_on_the_invalid_prompt_starts_the_next_try() {
        let mut r = Rig::new(CollectOptions {
            tries: 2,
            invalid_prompt: vec!["invalid".into()],
            ..opts()
        });
        r.play_done(0);
        r.key(100, '#');
        assert_eq!(r.plays(PromptKind::Invalid), 1);
        r.key(300, '4');
        assert_eq!(r.result(), Some(Some("4".into())));
        assert_eq!(r.plays(PromptKind::Prompt), 1, "the prompt is skipped");
    }

    #[test]
    fn type_ahead_is_used_first_and_skips_the_prompt() {
        let (r, rest) = Rig::with_type_ahead(opts(), "23");
        assert_eq!(r.result(), Some(Some("2".into())));
        assert_eq!(r.plays(PromptKind::Prompt), 0);
        assert_eq!(rest.into_iter().collect::<Vec<_>>(), vec![d('3')]);

        let (mut r, _) = Rig::with_type_ahead(CollectOptions { max: 4, ..opts() }, "12");
        assert_eq!(r.plays(PromptKind::Prompt), 0);
        r.key(500, '3');
        r.key(600, '#');
        assert_eq!(r.result(), Some(Some("123".into())));
    }

    #[test]
    fn a_failed_try_discards_the_rest_of_the_type_ahead() {
        let (r, rest) = Rig::with_type_ahead(
            CollectOptions {
                tries: 2,
                regex: Some(full_match_regex("1").unwrap()),
                ..opts()
            },
            "711",
        );
        assert!(rest.is_empty());
        assert_eq!(r.result(), None);
        assert_eq!(r.plays(PromptKind::Prompt), 1, "second try prompts");
    }

    #[test]
    fn no_prompt_starts_input_at_once() {
        let mut r = Rig::new(CollectOptions::default());
        assert_eq!(r.deadline(), Some(5000));
        r.key(10, '9');
        assert_eq!(r.result(), Some(Some("9".into())));
    }

    #[test]
    fn options_are_validated() {
        let bad = CollectOptions {
            min: 3,
            max: 2,
            ..opts()
        };
        assert!(matches!(
            bad.validate(),
            Err(CollectOptionsError::MinAboveMax { .. })
        ));
        let bad = CollectOptions { tries: 0, ..opts() };
        assert_eq!(bad.validate(), Err(CollectOptionsError::Tries));
        let bad = CollectOptions {
            max: MAX_DIGITS + 1,
            ..opts()
        };
        assert!(bad.validate().is_err());
    }
}
