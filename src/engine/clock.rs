//! The media clock of one worker: absolute deadlines `t0 + n·20 ms` (never `sleep(20 ms)` in
//! a loop, so media does not drift), lateness measured against them, and skipping ahead when
//! the worker fell too far behind. A plain struct: the caller reads the clock and sleeps.

use std::time::{Duration, Instant};

use crate::media::frame::FRAME;

/// A tick starting later than this after its deadline counts as late.
pub const LATE: Duration = Duration::from_millis(2);
/// A tick later than this many frames skips ahead instead of bursting frames out.
pub const MAX_BEHIND_TICKS: u32 = 3;

/// Deadlines of one worker's ticks.
#[derive(Debug, Clone)]
pub struct MediaClock {
    t0: Instant,
    n: u64,
}

/// What the clock decided for a tick that starts now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickStart {
    /// The tick's number (RTP timestamps and sequence numbers follow it).
    pub n: u64,
    /// How long after its deadline the tick starts.
    pub lateness: Duration,
    /// Later than [`LATE`].
    pub late: bool,
    /// Ticks skipped to catch up (0 unless more than [`MAX_BEHIND_TICKS`] behind).
    pub skipped: u64,
}

impl MediaClock {
    /// A clock whose tick 0 is due at `t0`.
    pub fn new(t0: Instant) -> Self {
        MediaClock { t0, n: 0 }
    }

    /// When the next tick is due.
    pub fn deadline(&self) -> Instant {
        self.t0 + FRAME * self.n as u32
    }

    /// Starts the next tick at `now` (at or after its deadline): measures lateness, skips
    /// ahead when far behind, and moves on to the following deadline.
    pub fn start(&mut self, now: Instant) -> TickStart {
        let lateness = now.saturating_duration_since(self.deadline());
        let mut skipped = 0;
        if lateness > FRAME * MAX_BEHIND_TICKS {
            // Far behind (the machine stalled): catch up instead of bursting frames out.
            skipped = (lateness.as_nanos() / FRAME.as_nanos()) as u64;
            self.n += skipped;
        }
        let n = self.n;
        self.n += 1;
        TickStart {
            n,
            lateness,
            late: lateness > LATE,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn deadlines_are_absolute() {
        let t0 = Instant::now();
        let mut c = MediaClock::new(t0);
        for i in 0..1000u32 {
            assert_eq!(c.deadline(), t0 + FRAME * i);
            // Each tick runs 1.5 ms late; the schedule does not drift by it.
            let s = c.start(c.deadline() + Duration::from_micros(1500));
            assert_eq!(s.n, u64::from(i));
            assert!(!s.late);
        }
        assert_eq!(c.deadline(), t0 + FRAME * 1000);
    }

    #[test]
    fn late_is_more_than_two_ms() {
        let t0 = Instant::now();
        let mut c = MediaClock::new(t0);
        assert!(!c.start(t0).late);
        assert!(!c.start(c.deadline() + LATE).late);
        let s = c.start(c.deadline() + LATE + US);
        assert!(s.late);
        assert_eq!(s.lateness, LATE + US);
        assert_eq!(s.skipped, 0);
    }

    #[test]
    fn skips_ahead_only_beyond_three_ticks() {
        let t0 = Instant::now();
        let mut c = MediaClock::new(t0);
        // Exactly three ticks behind: late, but every frame still goes out.
        let s = c.start(t0 + FRAME * 3);
        assert_eq!((s.n, s.skipped), (0, 0));
        assert!(s.late);
        assert_eq!(c.deadline(), t0 + FRAME);

        // Just past three ticks behind: skip the three whole ticks missed.
        let d = c.deadline();
        let s = c.start(d + FRAME * 3 + US);
        assert_eq!((s.n, s.skipped), (4, 3));
        assert_eq!(c.deadline(), t0 + FRAME * 5);

        // Four ticks behind: skip four, and the next deadline is in the future again.
        let d = c.deadline();
        let now = d + FRAME * 4;
        let s = c.start(now);
        assert_eq!((s.n, s.skipped), (9, 4));
        assert!(c.deadline() > now);
    }
}
