//! One key-press stream from the three ways a digit can arrive: RFC 4733 telephone-events,
//! SIP INFO and in-band tones.
//!
//! A phone may signal the same key press by more than one method (an RFC 4733 sender that
//! also leaves the tones in the audio, a gateway that sends both INFO and telephone-events).
//! [`DtmfMerger`] reports each press once.
//!
//! # Rules
//!
//! Each reported press is kept as a record: digit, start, end (once known), the method that
//! reported it first, and the set of methods that have reported it since. A `Began` event
//! from method `M` for digit `d` at time `t`:
//!
//! 1. ends any record that `M` began and has not ended: a method signals one key at a time;
//! 2. is **suppressed** if a record for `d` that `M` has not yet reported lies in the overlap
//!    window: `t` is no earlier than `start − overlap` and no later than `start + overlap`,
//!    nor, once the record's end is known, later than `end + repeat_gap` (the first press
//!    must still be going on). When several records qualify, the earliest absorbs the
//!    event: each method reports presses in order, so its next report belongs to the
//!    oldest press it has not reported yet;
//! 3. is otherwise reported as a new [`KeyPress`].
//!
//! Consequences:
//! - whichever method is first wins, the others are suppressed, and no method is ever
//!   dropped as such: a leg that negotiated telephone-event but whose phone only sends
//!   tones still has its in-band digits reported;
//! - a method's own repeated presses are always reported: each method already separates
//!   presses (RFC 4733 by timestamp, in-band by the gap between tones, INFO by message);
//! - across methods, the same digit starting more than `repeat_gap` (default 40 ms) after
//!   the first report's press ended is a new press even inside the overlap window: Q.24
//!   asks senders for at least 40 ms between digits, and the slack also absorbs a
//!   method whose start estimate lags (a tone's start is only seen after the jitter
//!   buffer): presses of 100 ms tolerate 140 ms of lag.
//!
//! `Ended` events only record the end of the press their method began. Times from
//! different methods must share one time base: see [`SampleClock`] for in-band digits.
//!
//! State is a fixed ring of [`HISTORY`] records: no allocation, bounded memory.

use std::time::{Duration, Instant};

use super::{Digit, DigitEvent, DigitPhase};

/// How a digit reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    /// RTP telephone-event (RFC 4733).
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    Info,
    /// Tones in the audio.
    Inband,
}

impl DtmfMethod {
    /// The method's name in events and logs: `rfc4733`, `info` or `inband`.
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfMethod::Rfc4733 => "rfc4733",
            DtmfMethod::Info => "info",
            DtmfMethod::Inband => "inband",
        }
    }

    fn bit(self) -> u8 {
        match self {
            DtmfMethod::Rfc4733 => 1,
            DtmfMethod::Info => 2,
            DtmfMethod::Inband => 4,
        }
    }
}

/// The start or end of one key press as seen by one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfEvent {
    /// The key.
    pub digit: Digit,
    /// Which method reported it.
    pub method: DtmfMethod,
    /// When the press started (for `Ended` too, so the two events of a press agree).
    pub at: Instant,
    /// The press's length, when known: always for `Ended`, for INFO also on `Began`.
    pub duration: Option<Duration>,
    /// Start or end.
    pub phase: DigitPhase,
}

impl DtmfEvent {
    /// A press starting at `at` whose length is not known yet.
    pub fn began(digit: Digit, method: DtmfMethod, at: Instant) -> Self {
        Self {
            digit,
            method,
            at,
            duration: None,
            phase: DigitPhase::Began,
        }
    }

    /// The end of a press that started at `at` and lasted `duration`.
    pub fn ended(digit: Digit, method: DtmfMethod, at: Instant, duration: Duration) -> Self {
        Self {
            digit,
            method,
            at,
            duration: Some(duration),
            phase: DigitPhase::Ended,
        }
    }

    /// Converts an in-band detector event, placing its start sample on `clock`.
    pub fn from_inband(event: &DigitEvent, clock: &SampleClock) -> Self {
        let at = clock.instant_of(event.start_sample);
        match event.phase {
            DigitPhase::Began => Self::began(event.digit, DtmfMethod::Inband, at),
            DigitPhase::Ended => Self::ended(
                event.digit,
                DtmfMethod::Inband,
                at,
                Duration::from_millis(u64::from(event.duration_ms)),
            ),
        }
    }
}

/// Maps a leg's sample positions to instants, for in-band events.
///
/// `origin` should be the instant at which sample 0 was sent by the far end as nearly as
/// the leg knows it (arrival of the first frame minus the jitter buffer's delay), so that
/// in-band starts line up with RFC 4733 and INFO starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleClock {
    origin: Instant,
    rate: u32,
}

impl SampleClock {
    /// A clock where sample 0 is at `origin` and `sample_rate` samples make a second; `None`
    /// for a zero rate.
    pub fn new(origin: Instant, sample_rate: u32) -> Option<Self> {
        (sample_rate > 0).then_some(Self {
            origin,
            rate: sample_rate,
        })
    }

    /// The instant of sample number `sample`.
    pub fn instant_of(&self, sample: u64) -> Instant {
        let nanos = u128::from(sample) * 1_000_000_000 / u128::from(self.rate);
        let d = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.origin.checked_add(d).unwrap_or(self.origin)
    }
}

/// One key press, reported once whichever methods carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyPress {
    /// The key.
    pub digit: Digit,
    /// The method that reported it first.
    pub method: DtmfMethod,
    /// When the press started.
    pub at: Instant,
}

/// Windows used by [`DtmfMerger`]; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeConfig {
    /// Another method's report of the same digit within this much of a press's start is the
    /// same press.
    pub overlap: Duration,
    /// Another method's report starting more than this after the press ended is a new press.
    pub repeat_gap: Duration,
}

impl Default for MergeConfig {
    fn default() -> Self {
        Self {
            overlap: Duration::from_millis(300),
            repeat_gap: Duration::from_millis(40),
        }
    }
}

/// Records kept; enough for presses 40 ms apart to cover the default overlap window.
pub const HISTORY: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Press {
    digit: Digit,
    origin: DtmfMethod,
    /// Methods that have reported this press (bits of [`DtmfMethod::bit`]).
    seen: u8,
    start: Instant,
    end: Option<Instant>,
}

/// Deduplicates key presses across methods; see the module documentation.
#[derive(Debug, Clone)]
pub struct DtmfMerger {
    cfg: MergeConfig,
    presses: [Option<Press>; HISTORY],
    /// Slot the next new record goes to (the oldest one).
    next: usize,
    suppressed: u64,
}

impl Default for DtmfMerger {
    fn default() -> Self {
        Self::new(MergeConfig::default())
    }
}

impl DtmfMerger {
    /// A merger with the given windows.
    pub fn new(cfg: MergeConfig) -> Self {
        Self {
            cfg,
            presses: [None; HISTORY],
            next: 0,
            suppressed: 0,
        }
    }

    /// The windows in use.
    pub fn config(&self) -> MergeConfig {
        self.cfg
    }

    /// How many `Began` events were suppressed as duplicates so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Forgets all presses.
    pub fn reset(&mut self) {
        self.presses = [None; HISTORY];
        self.next = 0;
    }

    /// Takes one event from any method; returns the key press if it is a new one.
    pub fn push(&mut self, event: DtmfEvent) -> Option<KeyPress> {
        match event.phase {
            DigitPhase::Began => self.began(event),
            DigitPhase::Ended => {
                self.ended(event);
                None
            }
        }
    }

    fn began(&mut self, e: DtmfEvent) -> Option<KeyPress> {
        let bit = e.method.bit();
        for p in self.presses.iter_mut().flatten() {
            if p.origin == e.method && p.end.is_none() {
                p.end = Some(e.at.max(p.start));
            }
        }
        let cfg = self.cfg;
        let best = self
            .presses
            .iter_mut()
            .flatten()
            .filter(|p| p.digit == e.digit && p.seen & bit == 0)
            .filter(|p| {
                let mut until = later(p.start, cfg.overlap);
                if let Some(end) = p.end {
                    until = until.min(later(end, cfg.repeat_gap));
                }
                let from = p.start.checked_sub(cfg.overlap).unwrap_or(p.start);
                e.at >= from && e.at <= until
            })
            .min_by_key(|p| p.start);
        if let Some(p) = best {
            p.seen |= bit;
            self.suppressed += 1;
            return None;
        }
        self.presses[self.next] = Some(Press {
            digit: e.digit,
            origin: e.method,
            seen: bit,
            start: e.at,
            end: e.duration.map(|d| later(e.at, d)),
        });
        self.next = (self.next + 1) % HISTORY;
        Some(KeyPress {
            digit: e.digit,
            method: e.method,
            at: e.at,
        })
    }

    fn ended(&mut self, e: DtmfEvent) {
        let end = later(e.at, e.duration.unwrap_or_default());
        if let Some(p) = self
            .presses
            .iter_mut()
            .flatten()
            .filter(|p| p.digit == e.digit && p.origin == e.method)
            .min_by_key(|p| abs_diff(p.start, e.at))
        {
            p.end = Some(end.max(p.start));
        }
    }
}

/// `t + d`, or `t` where that is beyond what `Instant` can hold.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

fn abs_diff(a: Instant, b: Instant) -> Duration {
    if a > b {
        a - b
    } else {
        b - a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digit {
        Digit::from_char(c).unwrap()
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn press(m: &mut DtmfMerger, c: char, method: DtmfMethod, at: Instant) -> Option<KeyPress> {
        m.push(DtmfEvent::began(d(c), method, at))
    }

    fn end(m: &mut DtmfMerger, c: char, method: DtmfMethod, at: Instant, len_ms: u64) {
        let e = DtmfEvent::ended(d(c), method, at, Duration::from_millis(len_ms));
        assert_eq!(m.push(e), None);
    }

    #[test]
    fn rfc4733_and_inband_of_one_press_report_once() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        let first = press(&mut m, '5', DtmfMethod::Rfc4733, t0);
        assert_eq!(
            first,
            Some(KeyPress {
                digit: d('5'),
                method: DtmfMethod::Rfc4733,
                at: t0
            })
        );
        // In-band comes out of the jitter buffer later and its start estimate differs.
        assert_eq!(press(&mut m, '5', DtmfMethod::Inband, ms(t0, 45)), None);
        end(&mut m, '5', DtmfMethod::Inband, ms(t0, 45), 98);
        end(&mut m, '5', DtmfMethod::Rfc4733, t0, 100);
        assert_eq!(m.suppressed(), 1);
    }

    #[test]
    fn inband_first_wins_too() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        let first = press(&mut m, '#', DtmfMethod::Inband, ms(t0, 10));
        assert_eq!(first.map(|k| k.method), Some(DtmfMethod::Inband));
        assert_eq!(press(&mut m, '#', DtmfMethod::Rfc4733, t0), None);
    }

    #[test]
    fn info_and_rfc4733_of_one_press_report_once() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        let info = DtmfEvent {
            duration: Some(Duration::from_millis(250)),
            ..DtmfEvent::began(d('7'), DtmfMethod::Info, ms(t0, 20))
        };
        assert!(press(&mut m, '7', DtmfMethod::Rfc4733, t0).is_some());
        assert_eq!(m.push(info), None);
        // And the other way round, for the next press.
        let info2 = DtmfEvent {
            at: ms(t0, 1000),
            ..info
        };
        assert!(m.push(info2).is_some());
        assert_eq!(press(&mut m, '7', DtmfMethod::Rfc4733, ms(t0, 1030)), None);
    }

    #[test]
    fn quick_repeats_by_one_method_are_all_reported() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        assert!(press(&mut m, '1', DtmfMethod::Rfc4733, t0).is_some());
        end(&mut m, '1', DtmfMethod::Rfc4733, t0, 60);
        assert!(press(&mut m, '1', DtmfMethod::Rfc4733, ms(t0, 100)).is_some());
        // Without an end in between, too.
        assert!(press(&mut m, '1', DtmfMethod::Rfc4733, ms(t0, 200)).is_some());
    }

    #[test]
    fn two_quick_presses_seen_by_both_methods_report_twice() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        let mut n = 0;
        // 60 ms presses 110 ms apart; in-band lags by 60 ms and arrives late.
        n += usize::from(press(&mut m, '9', DtmfMethod::Rfc4733, t0).is_some());
        end(&mut m, '9', DtmfMethod::Rfc4733, t0, 60);
        n += usize::from(press(&mut m, '9', DtmfMethod::Rfc4733, ms(t0, 110)).is_some());
        n += usize::from(press(&mut m, '9', DtmfMethod::Inband, ms(t0, 60)).is_some());
        end(&mut m, '9', DtmfMethod::Inband, ms(t0, 60), 60);
        n += usize::from(press(&mut m, '9', DtmfMethod::Inband, ms(t0, 170)).is_some());
        assert_eq!(n, 2);
    }

    #[test]
    fn inband_only_is_reported_even_after_rfc4733_digits() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        assert!(press(&mut m, '1', DtmfMethod::Rfc4733, t0).is_some());
        end(&mut m, '1', DtmfMethod::Rfc4733, t0, 100);
        // Other digits, and the same digit once the press has ended plus the gap.
        assert!(press(&mut m, '2', DtmfMethod::Inband, ms(t0, 50)).is_some());
        assert!(press(&mut m, '1', DtmfMethod::Inband, ms(t0, 145)).is_some());
        assert!(press(&mut m, '3', DtmfMethod::Inband, ms(t0, 5000)).is_some());
    }

    #[test]
    fn other_method_within_the_gap_after_the_end_is_the_same_press() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        assert!(press(&mut m, '4', DtmfMethod::Rfc4733, t0).is_some());
        end(&mut m, '4', DtmfMethod::Rfc4733, t0, 100);
        assert_eq!(press(&mut m, '4', DtmfMethod::Inband, ms(t0, 130)), None);
    }

    #[test]
    fn overlap_window_bounds_an_active_press() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        assert!(press(&mut m, '0', DtmfMethod::Rfc4733, t0).is_some());
        assert_eq!(press(&mut m, '0', DtmfMethod::Inband, ms(t0, 290)), None);
        assert!(press(&mut m, '0', DtmfMethod::Info, ms(t0, 310)).is_some());
        // Before the start, too.
        assert!(press(&mut m, '6', DtmfMethod::Inband, ms(t0, 1000)).is_some());
        assert_eq!(press(&mut m, '6', DtmfMethod::Rfc4733, ms(t0, 750)), None);
        assert!(press(&mut m, '6', DtmfMethod::Info, ms(t0, 650)).is_some());
    }

    #[test]
    fn from_inband_uses_the_sample_clock() {
        let t0 = Instant::now();
        let clock = SampleClock::new(t0, 8000).unwrap();
        let ev = DigitEvent {
            digit: d('3'),
            start_sample: 8000,
            duration_ms: 90,
            phase: DigitPhase::Ended,
        };
        let e = DtmfEvent::from_inband(&ev, &clock);
        assert_eq!(e.at, ms(t0, 1000));
        assert_eq!(e.duration, Some(Duration::from_millis(90)));
        assert_eq!(e.method, DtmfMethod::Inband);
        assert!(SampleClock::new(t0, 0).is_none());
    }

    #[test]
    fn history_is_bounded() {
        let t0 = Instant::now();
        let mut m = DtmfMerger::default();
        for i in 0..100u64 {
            let c = char::from(b'0' + (i % 10) as u8);
            assert!(press(&mut m, c, DtmfMethod::Inband, ms(t0, i * 150)).is_some());
        }
    }
}
