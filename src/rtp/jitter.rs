//! Adaptive jitter buffer: one per receiving leg, pushed with accepted packets and popped once
//! per frame tick.
//!
//! Assumes one frame per packet at the negotiated ptime ([`JitterConfig::frame`]); consecutive
//! extended sequence numbers are consecutive frames. Payloads live in a ring of fixed-size
//! slots allocated once, so the steady state allocates nothing.
//!
//! Playout:
//! - Prefetch: nothing is played until the newest packet is more than the target depth ahead
//!   of the playout point, or the oldest buffered packet has waited the target depth. Before
//!   the first frame is played, a reordered earlier packet moves the playout point back to it.
//! - Playing: each pop yields the frame at the playout point, or [`Pop::Lost`] when it is
//!   missing but a later one is buffered (the caller conceals). When nothing is buffered the
//!   buffer has run dry (a jitter spike, an outage or the end of a talkspurt): it returns
//!   [`Pop::Empty`] and prefetches again, which is how the actual depth grows to a larger
//!   target. The buffer cannot tell a lost frame from a delayed one or from silence at that
//!   point, so a caller that was playing should conceal an `Empty` as it would a `Lost`.
//! - After running dry, missing frames whose ticks have already passed are skipped (counted
//!   in [`JitterStats::skipped`]) so an outage does not add its length to the delay; with
//!   silence suppression the next talkspurt continues the numbering and nothing is skipped.
//! - Packets older than the playout point are dropped as late; copies of buffered or recently
//!   played packets are dropped as duplicates.
//! - [`JitterBuffer::peek`] shows a buffered packet without taking it: after a `Lost`, the
//!   one after it, whose redundancy (Opus in-band FEC) may rebuild the lost frame.
//!
//! Adaptation: each packet's arrival is compared with the arrival its timestamp predicts; the
//! spread of that delay over the last [`DELAY_WINDOW`] packets, rounded up to frames plus one
//! frame, is the wanted depth. The target rises to it at once (and by a frame per late packet)
//! and falls by one frame per [`JitterConfig::shrink_interval`]. Right before a pop the depth
//! is normally the target plus zero or one frame (depending on whether the packet came in just
//! before the tick or just after); when it stays beyond target + 2 frames for a shrink
//! interval, one frame is skipped to catch up. A packet more than
//! [`JitterConfig::max_depth`] ahead of the playout point flushes the oldest frames so
//! playout resumes the target depth behind it.

use std::time::{Duration, Instant};

use super::types::{MediaTime, SeqNo};

/// Packets whose arrival delay is remembered for the depth estimate.
pub const DELAY_WINDOW: usize = 128;

/// The most frames a buffer can be configured to hold.
pub const MAX_FRAMES: u64 = 1000;

/// Jitter buffer tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Media per packet and time between pops (the ptime; at least 1 ms).
    pub frame: Duration,
    /// Target depth at start.
    pub initial_depth: Duration,
    /// Lowest target depth.
    pub min_depth: Duration,
    /// Highest depth; more buffered than this is flushed (at most [`MAX_FRAMES`] frames).
    pub max_depth: Duration,
    /// Largest payload a slot holds (320 bytes: 20 ms of 16-bit PCM at 8 kHz).
    pub slot_bytes: usize,
    /// The payload size expected (0: `slot_bytes`). Slots start this big and grow, up to
    /// `slot_bytes`, when a larger packet comes: a leg holds room for the packets its peer
    /// sends rather than for the largest it might.
    pub expected_bytes: usize,
    /// How long the target waits between one-frame decreases, and how long excess depth is
    /// tolerated before a frame is skipped.
    pub shrink_interval: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            frame: Duration::from_millis(20),
            initial_depth: Duration::from_millis(40),
            min_depth: Duration::from_millis(20),
            max_depth: Duration::from_millis(200),
            slot_bytes: 320,
            expected_bytes: 0,
            shrink_interval: Duration::from_secs(1),
        }
    }
}

/// Jitter buffer counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets stored.
    pub stored: u64,
    /// Frames played.
    pub played: u64,
    /// Frames reported lost.
    pub lost: u64,
    /// Packets dropped for arriving after their playout point.
    pub late: u64,
    /// Packets dropped as copies of one buffered.
    pub duplicates: u64,
    /// Packets dropped for not fitting a slot.
    pub oversize: u64,
    /// Times the buffer ran dry while playing.
    pub underruns: u64,
    /// Times a packet beyond the maximum depth forced a flush.
    pub overflows: u64,
    /// Sequence numbers passed over without being played or reported lost: flushes, catch-up
    /// skips, and missing frames whose time passed while the buffer was dry.
    pub skipped: u64,
    /// Buffered frames discarded by flushes and catch-up skips.
    pub discarded: u64,
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered.
    Stored,
    /// Buffered after flushing older frames to stay within the maximum depth.
    StoredAfterFlush,
    /// Its playout point has passed.
    Late,
    /// Already buffered.
    Duplicate,
    /// Larger than a slot.
    Oversize,
}

/// A frame handed out for decoding; the payload borrows the buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its sequence number.
    pub seq: SeqNo,
    /// Its timestamp.
    pub timestamp: MediaTime,
    /// The encoded payload.
    pub payload: &'a [u8],
    /// The level the sender gave the packet (RFC 6464: 0 loudest, 127 silence), if any.
    pub level: Option<u8>,
}

/// The result of one pop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop<'a> {
    /// The next frame.
    Frame(Frame<'a>),
    /// The frame with this sequence number is missing; conceal it.
    Lost(SeqNo),
    /// Nothing due: not started, prefetching, or run dry (conceal if a talkspurt was playing).
    Empty,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    entry: Option<(SeqNo, MediaTime)>,
    len: usize,
    /// The packet's RFC 6464 level, kept with it for the decoder to see.
    level: Option<u8>,
}

/// An adaptive jitter buffer for one leg.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    frame_nanos: u64,
    min_frames: u64,
    max_frames: u64,
    target_frames: u64,
    slots: Vec<Slot>,
    /// Slot `i`'s payload lives at `i * stride`.
    data: Vec<u8>,
    /// Bytes per slot in `data`: the largest payload seen or expected, at most `slot_bytes`.
    stride: usize,
    buffered: usize,
    next: Option<SeqNo>,
    highest: Option<SeqNo>,
    playing: bool,
    output_started: bool,
    /// Bit k set: `next − 1 − k` was played, so a copy arriving now is a duplicate, not late.
    played: u128,
    /// Ticks that found the buffer empty since it ran dry.
    dry_ticks: u64,
    prefetch_since: Option<Instant>,
    excess_since: Option<Instant>,
    last_target_change: Option<Instant>,
    reference: Option<(Instant, MediaTime)>,
    delays: [i64; DELAY_WINDOW],
    delay_count: usize,
    delay_pos: usize,
    last_delay: i64,
    /// Least and greatest of the delays in the window, kept as they come and go rather
    /// than looked for among all of them for every packet.
    delay_range: (i64, i64),
    stats: JitterStats,
}

/// Arrival delay in µs of a packet `ticks` of media after the reference, `wall_ns` after it
/// by the clock, truncated toward zero. In i64 whenever that cannot overflow (more than two
/// days of media at 48 kHz), which is most of the cost of every packet otherwise.
fn delay_us(wall_ns: u128, ticks: i128, rate: u32) -> i64 {
    let rate = i64::from(rate.max(1));
    let narrow = i64::try_from(wall_ns).ok().zip(i64::try_from(ticks).ok());
    if let Some(diff) =
        narrow.and_then(|(wall, ticks)| wall.checked_sub(ticks.checked_mul(1_000_000_000)? / rate))
    {
        return diff / 1000;
    }
    let media = ticks * 1_000_000_000 / i128::from(rate);
    i64::try_from((wall_ns as i128 - media) / 1000).unwrap_or(i64::MAX)
}

fn frames_in(d: Duration, frame: Duration) -> u64 {
    let frame = frame.as_nanos().max(1);
    u64::try_from(d.as_nanos().div_ceil(frame)).unwrap_or(u64::MAX)
}

impl JitterBuffer {
    /// A buffer with its slots allocated for `config.max_depth`.
    pub fn new(mut config: JitterConfig) -> Self {
        // Bounds that keep a mistyped configuration from asking for gigabytes of slots.
        config.frame = config.frame.max(Duration::from_millis(1));
        let max_frames = frames_in(config.max_depth, config.frame).clamp(1, MAX_FRAMES);
        let min_frames = frames_in(config.min_depth, config.frame).clamp(1, max_frames);
        let target_frames =
            frames_in(config.initial_depth, config.frame).clamp(min_frames, max_frames);
        // Two spare slots: the frame being popped and one arriving at the cap.
        let slot_count = usize::try_from(max_frames + 2).unwrap_or(usize::MAX);
        let stride = match config.expected_bytes {
            0 => config.slot_bytes,
            n => n.min(config.slot_bytes),
        };
        JitterBuffer {
            config,
            frame_nanos: u64::try_from(config.frame.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            min_frames,
            max_frames,
            target_frames,
            slots: vec![
                Slot {
                    entry: None,
                    len: 0,
                    level: None,
                };
                slot_count
            ],
            data: vec![0; slot_count * stride],
            stride,
            buffered: 0,
            next: None,
            highest: None,
            playing: false,
            output_started: false,
            played: 0,
            dry_ticks: 0,
            prefetch_since: None,
            excess_since: None,
            last_target_change: None,
            reference: None,
            delays: [0; DELAY_WINDOW],
            delay_count: 0,
            delay_pos: 0,
            last_delay: 0,
            delay_range: (i64::MAX, i64::MIN),
            stats: JitterStats::default(),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current target depth.
    pub fn target_depth(&self) -> Duration {
        self.config.frame.saturating_mul(self.target_frames as u32)
    }

    /// Frames from the playout point to the newest buffered packet, holes included.
    pub fn depth_frames(&self) -> u64 {
        match (self.next, self.highest) {
            (Some(n), Some(h)) if self.buffered > 0 => h.since(n).map_or(0, |d| d + 1),
            _ => 0,
        }
    }

    /// Whether a talkspurt is being played out (as opposed to prefetching or idle).
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Forgets all packets and the playout point, keeping the target depth; for a new source
    /// or a sequence restart.
    pub fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.entry = None;
        }
        self.buffered = 0;
        self.next = None;
        self.highest = None;
        self.playing = false;
        self.output_started = false;
        self.played = 0;
        self.dry_ticks = 0;
        self.prefetch_since = None;
        self.excess_since = None;
        self.reference = None;
        self.forget_delays();
        self.last_delay = 0;
    }

    /// Empties the window of arrival delays.
    fn forget_delays(&mut self) {
        self.delay_count = 0;
        self.delay_pos = 0;
        self.delay_range = (i64::MAX, i64::MIN);
    }

    fn slot_index(&self, seq: SeqNo) -> usize {
        (seq.get() % self.slots.len() as u64) as usize
    }

    /// Offers a packet that arrived at `now`.
    pub fn push(
        &mut self,
        now: Instant,
        seq: SeqNo,
        timestamp: MediaTime,
        payload: &[u8],
    ) -> PushOutcome {
        self.push_with_level(now, seq, timestamp, payload, None)
    }

    /// Offers a packet that arrived at `now` with the audio level its sender gave it
    /// (RFC 6464), handed back with its [`Frame`].
    pub fn push_with_level(
        &mut self,
        now: Instant,
        seq: SeqNo,
        timestamp: MediaTime,
        payload: &[u8],
        level: Option<u8>,
    ) -> PushOutcome {
        if payload.len() > self.config.slot_bytes {
            self.stats.oversize += 1;
            return PushOutcome::Oversize;
        }
        if payload.len() > self.stride {
            self.widen(payload.len());
        }
        let mut flushed = false;
        if let Some(next) = self.next {
            if self.buffered == 0 && self.dry_ticks > 0 && seq > next {
                // The first packet after running dry: the frames between the playout point
                // and it whose time has passed are gone; skipping them keeps the outage from
                // adding its length to the delay.
                let skip = seq.since(next).unwrap_or(0).min(self.dry_ticks);
                self.flush_before(next.add(skip));
                self.dry_ticks = 0;
            }
        }
        match (self.next, self.highest) {
            (Some(next), Some(highest)) => {
                if seq < next {
                    let ago = next.get() - 1 - seq.get();
                    if ago < 128 && self.played & (1 << ago) != 0 {
                        self.stats.duplicates += 1;
                        return PushOutcome::Duplicate;
                    }
                    let fits = highest.since(seq).is_some_and(|d| d < self.max_frames);
                    if self.output_started || !fits {
                        self.stats.late += 1;
                        let before = self.target_frames;
                        self.observe_delay(now, timestamp);
                        if self.target_frames == before {
                            self.on_late(now);
                        }
                        return PushOutcome::Late;
                    }
                    self.next = Some(seq);
                } else if self.slots[self.slot_index(seq)].entry.map(|(s, _)| s) == Some(seq) {
                    self.stats.duplicates += 1;
                    return PushOutcome::Duplicate;
                } else if seq.since(next).is_some_and(|d| d > self.max_frames) {
                    self.flush_before(SeqNo::new(seq.get().saturating_sub(self.target_frames)));
                    self.stats.overflows += 1;
                    flushed = true;
                }
                if seq > highest || self.buffered == 0 {
                    self.highest = Some(seq);
                }
            }
            _ => {
                self.next = Some(seq);
                self.highest = Some(seq);
            }
        }
        self.store(seq, timestamp, payload, level);
        if !self.playing && self.prefetch_since.is_none() {
            self.prefetch_since = Some(now);
        }
        self.observe_delay(now, timestamp);
        if flushed {
            PushOutcome::StoredAfterFlush
        } else {
            PushOutcome::Stored
        }
    }

    /// Makes every slot hold at least `len` bytes, moving what is buffered. Slots at least
    /// double each time, so a leg reallocates a few times at most, and only when its peer
    /// sends larger packets than before.
    fn widen(&mut self, len: usize) {
        let stride = len.max(self.stride * 2).min(self.config.slot_bytes);
        let mut data = vec![0; self.slots.len() * stride];
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.entry.is_some() {
                let old = i * self.stride;
                data[i * stride..i * stride + slot.len]
                    .copy_from_slice(&self.data[old..old + slot.len]);
            }
        }
        self.data = data;
        self.stride = stride;
    }

    fn store(&mut self, seq: SeqNo, timestamp: MediaTime, payload: &[u8], level: Option<u8>) {
        let idx = self.slot_index(seq);
        let start = idx * self.stride;
        self.data[start..start + payload.len()].copy_from_slice(payload);
        let slot = &mut self.slots[idx];
        if slot.entry.is_none() {
            self.buffered += 1;
        }
        slot.entry = Some((seq, timestamp));
        slot.len = payload.len();
        slot.level = level;
        self.stats.stored += 1;
    }

    /// Moves the playout point to `new_next`, discarding everything before it.
    fn flush_before(&mut self, new_next: SeqNo) {
        let Some(next) = self.next else { return };
        if new_next <= next {
            return;
        }
        for slot in &mut self.slots {
            if let Some((s, _)) = slot.entry {
                if s < new_next {
                    slot.entry = None;
                    self.buffered -= 1;
                    self.stats.discarded += 1;
                }
            }
        }
        let skipped = new_next.since(next).unwrap_or(0);
        self.stats.skipped += skipped;
        self.advance_played(skipped, false);
        self.next = Some(new_next);
        if self.buffered == 0 {
            self.highest = Some(new_next);
        }
    }

    fn advance_played(&mut self, by: u64, played: bool) {
        self.played = if by >= 128 { 0 } else { self.played << by };
        if played {
            self.played |= 1;
        }
    }

    fn on_late(&mut self, now: Instant) {
        if self.target_frames < self.max_frames {
            self.target_frames += 1;
            self.last_target_change = Some(now);
        }
    }

    /// Records how late this packet is against its timestamp and retunes the target.
    fn observe_delay(&mut self, now: Instant, timestamp: MediaTime) {
        let Some((t0, ts0)) = self.reference else {
            self.reference = Some((now, timestamp));
            self.last_target_change.get_or_insert(now);
            self.record_delay(0);
            return;
        };
        let delay = delay_us(
            now.saturating_duration_since(t0).as_nanos(),
            i128::from(timestamp.ticks()) - i128::from(ts0.ticks()),
            timestamp.rate().hz(),
        );
        let max_us = self.config.max_depth.as_micros() as i64;
        if (delay - self.last_delay).abs() > max_us.saturating_mul(2) {
            // A clock jump on the sender or a long stall: no depth could absorb it, so
            // measure afresh from here instead of letting it dominate the window.
            self.reference = Some((now, timestamp));
            self.forget_delays();
            self.record_delay(0);
            return;
        }
        self.record_delay(delay);

        let (lo, hi) = self.delay_range;
        // Whole frames, rounded up (a spread past u64 nanoseconds saturates, and the depth
        // is clamped to the maximum either way).
        let spread_ns = u64::try_from(hi.saturating_sub(lo))
            .unwrap_or(0)
            .saturating_mul(1000);
        let wanted = spread_ns
            .div_ceil(self.frame_nanos)
            .saturating_add(1)
            .clamp(self.min_frames, self.max_frames);
        let since_change = self
            .last_target_change
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if wanted > self.target_frames {
            self.target_frames = wanted;
            self.last_target_change = Some(now);
        } else if wanted < self.target_frames && since_change >= self.config.shrink_interval {
            self.target_frames -= 1;
            self.last_target_change = Some(now);
        }
    }

    fn record_delay(&mut self, delay_us: i64) {
        let leaving = (self.delay_count == DELAY_WINDOW).then(|| self.delays[self.delay_pos]);
        self.delays[self.delay_pos] = delay_us;
        self.delay_pos = (self.delay_pos + 1) % DELAY_WINDOW;
        self.delay_count = (self.delay_count + 1).min(DELAY_WINDOW);
        self.last_delay = delay_us;
        let (lo, hi) = self.delay_range;
        self.delay_range = if leaving.is_some_and(|d| d == lo || d == hi) {
            // The least or greatest just left: look again (one packet in ~a window's worth).
            self.delays[..self.delay_count]
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)))
        } else {
            (lo.min(delay_us), hi.max(delay_us))
        };
    }

    /// The payload of packet `seq` if it is buffered, without taking it: after a
    /// [`Pop::Lost`], the packet after the lost one, whose redundancy may carry it.
    pub fn peek(&self, seq: SeqNo) -> Option<&[u8]> {
        if self.buffered == 0 {
            return None;
        }
        let idx = self.slot_index(seq);
        let slot = &self.slots[idx];
        let start = idx * self.stride;
        (slot.entry.map(|(s, _)| s) == Some(seq)).then(|| &self.data[start..start + slot.len])
    }

    /// Takes the frame due at this tick; call once per [`JitterConfig::frame`].
    pub fn pop_frame(&mut self, now: Instant) -> Pop<'_> {
        let Some(mut next) = self.next else {
            return Pop::Empty;
        };
        if self.buffered == 0 {
            if self.playing {
                self.playing = false;
                self.stats.underruns += 1;
            }
            if self.output_started {
                self.dry_ticks += 1;
            }
            self.prefetch_since = None;
            self.excess_since = None;
            return Pop::Empty;
        }
        let depth = self.depth_frames();
        if !self.playing {
            let waited = self
                .prefetch_since
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            if depth <= self.target_frames && waited < self.target_depth() {
                return Pop::Empty;
            }
            self.playing = true;
            self.prefetch_since = None;
        } else if depth > self.target_frames + 2 {
            let since = *self.excess_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.config.shrink_interval {
                self.excess_since = Some(now);
                let idx = self.slot_index(next);
                if self.slots[idx].entry.is_some_and(|(s, _)| s == next) {
                    self.slots[idx].entry = None;
                    self.buffered -= 1;
                    self.stats.discarded += 1;
                }
                self.stats.skipped += 1;
                self.advance_played(1, false);
                next = next.next();
                self.next = Some(next);
            }
        } else {
            self.excess_since = None;
        }

        self.output_started = true;
        self.next = Some(next.next());
        let idx = self.slot_index(next);
        let slot = self.slots[idx];
        match slot.entry {
            Some((seq, timestamp)) if seq == next => {
                self.advance_played(1, true);
                self.slots[idx].entry = None;
                self.buffered -= 1;
                self.stats.played += 1;
                if self.buffered == 0 {
                    self.highest = Some(next);
                }
                let start = idx * self.stride;
                Pop::Frame(Frame {
                    seq,
                    timestamp,
                    payload: &self.data[start..start + slot.len],
                    level: slot.level,
                })
            }
            _ => {
                self.advance_played(1, false);
                self.stats.lost += 1;
                Pop::Lost(next)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::types::ClockRate;
    use proptest::prelude::*;

    const BASE: u64 = (5 << 16) + 65_530;

    fn seq(i: u64) -> SeqNo {
        SeqNo::new(BASE + i)
    }

    fn ts(i: u64) -> MediaTime {
        MediaTime::new((1 << 32) + i * 160, ClockRate::HZ_8000)
    }

    fn payload(i: u64) -> [u8; 4] {
        (i as u32).to_be_bytes()
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        Frame(u64, [u8; 4]),
        Lost(u64),
        Empty,
    }

    fn pop(jb: &mut JitterBuffer, now: Instant) -> Out {
        match jb.pop_frame(now) {
            Pop::Frame(f) => {
                assert_eq!(f.timestamp, ts(f.seq.get() - BASE));
                Out::Frame(f.seq.get() - BASE, f.payload.try_into().unwrap())
            }
            Pop::Lost(s) => Out::Lost(s.get() - BASE),
            Pop::Empty => Out::Empty,
        }
    }

    fn push(jb: &mut JitterBuffer, now: Instant, i: u64) -> PushOutcome {
        jb.push(now, seq(i), ts(i), &payload(i))
    }

    #[test]
    fn steady_stream_plays_in_order_after_prefetch() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.target_depth(), Duration::from_millis(40));
        let mut out = Vec::new();
        for i in 0..50 {
            let now = ms(t0, i * 20);
            assert_eq!(push(&mut jb, now, i), PushOutcome::Stored);
            out.push(pop(&mut jb, now));
        }
        assert_eq!(out[..2], [Out::Empty, Out::Empty], "prefetching");
        for (k, o) in out[2..].iter().enumerate() {
            assert_eq!(*o, Out::Frame(k as u64, payload(k as u64)));
        }
    }

    #[test]
    fn gaps_within_the_depth_are_reported_lost_one_per_frame() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut outs = Vec::new();
        let missing = [10u64, 11, 20];
        for i in 0..30u64 {
            let now = ms(t0, i * 20);
            if !missing.contains(&i) {
                push(&mut jb, now, i);
            }
            outs.push(pop(&mut jb, now));
        }
        let lost: Vec<u64> = outs
            .iter()
            .filter_map(|o| match o {
                Out::Lost(s) => Some(*s),
                _ => None,
            })
            .collect();
        assert_eq!(lost, missing);
        assert_eq!(jb.stats().lost, 3);
        assert_eq!(outs.last(), Some(&Out::Frame(27, payload(27))));
    }

    #[test]
    fn outage_longer_than_the_depth_adds_no_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut outs = Vec::new();
        for i in 0..40u64 {
            let now = ms(t0, i * 20);
            if !(10..20).contains(&i) {
                push(&mut jb, now, i);
            }
            outs.push(pop(&mut jb, now));
        }
        // Frame k plays at tick k + 2 before the outage and after it.
        assert_eq!(outs[9], Out::Frame(7, payload(7)));
        assert_eq!(outs[39], Out::Frame(37, payload(37)));
        // The buffer ran dry for the ticks it could not know about, then reported the rest.
        let empty = outs[10..22].iter().filter(|o| **o == Out::Empty).count() as u64;
        let st = jb.stats();
        assert_eq!(st.underruns, 1);
        assert_eq!(
            empty + st.lost,
            10,
            "every missing frame's tick was concealed"
        );
        assert_eq!(st.skipped + st.lost, 10);
        assert_eq!(st.discarded, 0);
    }

    #[test]
    fn reordering_within_depth_is_repaired() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Swap every pair: 1,0,3,2,...; both of a pair arrive before the first is due.
        let order = [1u64, 0, 3, 2, 5, 4, 7, 6, 9, 8];
        let mut outs = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let now = ms(t0, k as u64 * 20);
            push(&mut jb, now, i);
            outs.push(pop(&mut jb, now));
        }
        for k in 10..14u64 {
            outs.push(pop(&mut jb, ms(t0, k * 20)));
        }
        let frames: Vec<u64> = outs
            .iter()
            .filter_map(|o| match o {
                Out::Frame(s, _) => Some(*s),
                _ => None,
            })
            .collect();
        assert_eq!(frames, (0..10).collect::<Vec<_>>());
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn each_frame_carries_its_own_packets_level() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // Reordered pairs; every third packet has no level; the slots are reused several
        // times over (the ring holds a dozen), so a level left in a slot would show up.
        let level = |i: u64| (!i.is_multiple_of(3)).then_some((i % 128) as u8);
        let order: Vec<u64> = (0..60u64).map(|k| k ^ 1).collect();
        let mut seen = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let now = ms(t0, k as u64 * 20);
            jb.push_with_level(now, seq(i), ts(i), &payload(i), level(i));
            if let Pop::Frame(f) = jb.pop_frame(now) {
                seen.push((f.seq.get() - BASE, f.level));
            }
        }
        assert!(seen.len() >= 50, "{}", seen.len());
        for (i, l) in seen {
            assert_eq!(l, level(i), "frame {i}");
        }
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..5 {
            push(&mut jb, ms(t0, i * 20), i);
            pop(&mut jb, ms(t0, i * 20));
        }
        // Played 0..=2; 3 and 4 are buffered.
        assert_eq!(push(&mut jb, ms(t0, 90), 4), PushOutcome::Duplicate);
        // 5 is held up; 6 and 7 arrive, 5 is declared lost, then arrives late.
        push(&mut jb, ms(t0, 100), 6);
        assert_eq!(pop(&mut jb, ms(t0, 100)), Out::Frame(3, payload(3)));
        push(&mut jb, ms(t0, 120), 7);
        assert_eq!(pop(&mut jb, ms(t0, 120)), Out::Frame(4, payload(4)));
        assert_eq!(pop(&mut jb, ms(t0, 140)), Out::Lost(5));
        let before = jb.target_depth();
        assert_eq!(push(&mut jb, ms(t0, 150), 5), PushOutcome::Late);
        assert_eq!(
            push(&mut jb, ms(t0, 151), 2),
            PushOutcome::Duplicate,
            "a copy of a played frame"
        );
        let st = jb.stats();
        assert_eq!((st.duplicates, st.late), (2, 1));
        assert!(jb.target_depth() > before, "late packets raise the target");
        assert_eq!(pop(&mut jb, ms(t0, 160)), Out::Frame(6, payload(6)));
    }

    #[test]
    fn oversize_payload_is_refused() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let big = [0u8; 321];
        assert_eq!(
            jb.push(Instant::now(), seq(0), ts(0), &big),
            PushOutcome::Oversize
        );
        assert_eq!(jb.stats().oversize, 1);
        assert_eq!(jb.pop_frame(Instant::now()), Pop::Empty);
    }

    #[test]
    fn slots_grow_for_larger_packets_keeping_what_is_buffered() {
        let t0 = Instant::now();
        let cfg = JitterConfig {
            slot_bytes: 960,
            expected_bytes: 160,
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(cfg);
        assert_eq!(
            jb.data.len(),
            jb.slots.len() * 160,
            "room for what is expected"
        );
        // Each packet's bytes say which packet it is; sizes 160, 161 (just over: the slots
        // double), 320, 321 (double again), 960 (the most), 961 (refused).
        let body = |i: u64, len: usize| -> Vec<u8> {
            (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
        };
        let sizes = [160usize, 100, 161, 320, 50, 321, 960];
        for (i, &len) in sizes.iter().enumerate() {
            let i = i as u64;
            let out = jb.push(ms(t0, i), seq(i), ts(i), &body(i, len));
            assert_eq!(out, PushOutcome::Stored, "packet {i} of {len} bytes");
        }
        assert_eq!(jb.stride, 960);
        assert_eq!(
            jb.push(ms(t0, 7), seq(7), ts(7), &body(7, 961)),
            PushOutcome::Oversize
        );
        for (i, &len) in sizes.iter().enumerate() {
            let i = i as u64;
            match jb.pop_frame(ms(t0, 200 + i * 20)) {
                Pop::Frame(f) => {
                    assert_eq!(f.seq, seq(i));
                    assert_eq!(f.payload, &body(i, len)[..], "packet {i} came out whole");
                }
                other => panic!("packet {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn slots_start_at_the_expected_size_and_double() {
        let cfg = JitterConfig {
            slot_bytes: 960,
            expected_bytes: 160,
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(cfg);
        let t0 = Instant::now();
        assert_eq!(jb.stride, 160);
        jb.push(t0, seq(0), ts(0), &[1; 161]);
        assert_eq!(jb.stride, 320, "doubled, not grown by a byte");
        jb.push(t0, seq(1), ts(1), &[1; 700]);
        assert_eq!(jb.stride, 700, "a packet larger than double sets the size");
        jb.push(t0, seq(2), ts(2), &[1; 800]);
        assert_eq!(jb.stride, 960, "never past slot_bytes");
        let plain = JitterBuffer::new(JitterConfig::default());
        assert_eq!(
            plain.stride, 320,
            "expected_bytes 0: slot_bytes from the start"
        );
    }

    #[test]
    fn peek_shows_a_buffered_packet_without_taking_it() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.peek(seq(0)), None);
        for i in [0u64, 1, 3, 4] {
            push(&mut jb, ms(t0, i * 20), i);
        }
        assert_eq!(pop(&mut jb, ms(t0, 80)), Out::Frame(0, payload(0)));
        assert_eq!(pop(&mut jb, ms(t0, 100)), Out::Frame(1, payload(1)));
        assert_eq!(pop(&mut jb, ms(t0, 120)), Out::Lost(2));
        // The packet after the lost one, seen and left in place.
        assert_eq!(jb.peek(seq(3)), Some(&payload(3)[..]));
        assert_eq!(jb.peek(seq(3)), Some(&payload(3)[..]));
        assert_eq!(jb.peek(seq(2)), None, "the lost one is not there");
        assert_eq!(jb.peek(seq(1)), None, "a played one is gone");
        // Same slot, another lap of the ring: not the packet asked for.
        let lap = jb.slots.len() as u64;
        assert_eq!(jb.peek(seq(3 + lap)), None);
        assert_eq!(pop(&mut jb, ms(t0, 140)), Out::Frame(3, payload(3)));
        assert_eq!(jb.peek(seq(3)), None);
        assert_eq!(pop(&mut jb, ms(t0, 160)), Out::Frame(4, payload(4)));
        assert_eq!(jb.peek(seq(4)), None, "drained");
        assert_eq!(jb.stats().played, 4);
    }

    /// Deterministic pseudo-random network delay in 0..max_ms.
    fn delay(i: u64, max_ms: u64) -> u64 {
        (i.wrapping_mul(2_654_435_761) >> 7) % max_ms
    }

    #[test]
    fn depth_grows_under_jitter_and_shrinks_back() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals: Vec<(u64, u64)> = Vec::new();
        // 4 s with up to 70 ms of jitter, then 20 s of a clean network.
        let jittery = 200;
        let total = jittery + 1000;
        for k in 0..total {
            let d = if k < jittery { delay(k, 70) } else { 0 };
            arrivals.push((k * 20 + d, k));
        }
        arrivals.sort();
        let mut next_arrival = 0;
        let mut max_target = Duration::ZERO;
        let mut lost_clean = 0;
        for tick in 0..total + 20 {
            let now_ms = tick * 20;
            while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= now_ms {
                let (at, s) = arrivals[next_arrival];
                push(&mut jb, ms(t0, at), s);
                next_arrival += 1;
            }
            if let Out::Lost(s) = pop(&mut jb, ms(t0, now_ms)) {
                if s > jittery + 200 {
                    lost_clean += 1;
                }
            }
            max_target = max_target.max(jb.target_depth());
            if tick == jittery {
                assert!(
                    jb.target_depth() >= Duration::from_millis(80),
                    "target after jitter: {:?}",
                    jb.target_depth()
                );
            }
        }
        assert!(max_target >= Duration::from_millis(80));
        assert!(
            jb.target_depth() <= Duration::from_millis(40),
            "target after a clean period: {:?}",
            jb.target_depth()
        );
        assert!(
            jb.depth_frames() <= 3,
            "buffered depth after a clean period: {}",
            jb.depth_frames()
        );
        assert_eq!(lost_clean, 0);
        assert!(jb.stats().skipped > 0, "excess depth was caught up");
    }

    #[test]
    fn overflow_flushes_to_target_and_recovers() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..5 {
            push(&mut jb, ms(t0, i * 20), i);
            pop(&mut jb, ms(t0, i * 20));
        }
        // A stall, then 40 packets (800 ms) at once: far beyond the 200 ms cap.
        let mut flushed = false;
        for i in 5..45 {
            flushed |= push(&mut jb, ms(t0, 900), i) == PushOutcome::StoredAfterFlush;
        }
        assert!(flushed);
        let st = jb.stats();
        assert!(st.overflows >= 1);
        assert!(jb.depth_frames() <= 11, "depth {}", jb.depth_frames());
        // Playout continues in order from the retained frames, then with new ones.
        let mut last = None;
        for k in 0..20u64 {
            let now = ms(t0, 900 + k * 20);
            push(&mut jb, now, 45 + k);
            match pop(&mut jb, now) {
                Out::Frame(s, p) => {
                    assert_eq!(p, payload(s));
                    if let Some(l) = last {
                        assert_eq!(s, l + 1);
                    }
                    last = Some(s);
                }
                other => panic!("tick {k}: {other:?}"),
            }
        }
        let last = last.unwrap();
        assert!(
            last >= 64 - 11,
            "playing at most the cap behind the newest: {last}"
        );
        assert_eq!(jb.stats().skipped, jb.stats().discarded);
    }

    #[test]
    fn run_dry_returns_empty_and_resumes() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..5 {
            push(&mut jb, ms(t0, i * 20), i);
            pop(&mut jb, ms(t0, i * 20));
        }
        assert_eq!(pop(&mut jb, ms(t0, 100)), Out::Frame(3, payload(3)));
        assert_eq!(pop(&mut jb, ms(t0, 120)), Out::Frame(4, payload(4)));
        assert_eq!(pop(&mut jb, ms(t0, 140)), Out::Empty);
        assert!(!jb.is_playing());
        assert_eq!(jb.stats().underruns, 1);
        // The talkspurt resumes with the next sequence number after a pause, and is
        // prefetched again.
        push(&mut jb, ms(t0, 600), 5);
        assert_eq!(pop(&mut jb, ms(t0, 600)), Out::Empty);
        push(&mut jb, ms(t0, 620), 6);
        assert_eq!(pop(&mut jb, ms(t0, 620)), Out::Empty);
        push(&mut jb, ms(t0, 640), 7);
        assert_eq!(pop(&mut jb, ms(t0, 640)), Out::Frame(5, payload(5)));
        assert_eq!(jb.stats().lost, 0);
        jb.reset();
        assert_eq!(pop(&mut jb, ms(t0, 660)), Out::Empty);
        assert_eq!(
            push(&mut jb, ms(t0, 1060), 3),
            PushOutcome::Stored,
            "old numbering forgotten"
        );
    }

    proptest! {
        /// The delay in i64 is the delay the i128 formula gives, for any clock and media
        /// time, ahead of or behind the reference.
        #[test]
        fn the_delay_in_i64_is_the_exact_one(
            wall in 0u128..(1u128 << 70),
            ticks in -(1i128 << 40)..(1i128 << 40),
            rate in prop::sample::select(vec![8000u32, 16000, 48000, 90000, 1]),
        ) {
            let media = ticks * 1_000_000_000 / i128::from(rate);
            let want = i64::try_from((wall as i128 - media) / 1000).unwrap_or(i64::MAX);
            prop_assert_eq!(delay_us(wall, ticks, rate), want);
        }

        /// The range kept as delays come and go is the least and greatest of the window.
        #[test]
        fn the_kept_delay_range_is_the_windows(
            delays in proptest::collection::vec(-50i64..50, 1..400),
            reset_at in proptest::option::of(0usize..400),
        ) {
            let mut jb = JitterBuffer::new(JitterConfig::default());
            for (i, d) in delays.iter().enumerate() {
                if reset_at == Some(i) {
                    jb.reset();
                }
                jb.record_delay(*d);
                let window = &jb.delays[..jb.delay_count];
                let lo = window.iter().copied().min().unwrap();
                let hi = window.iter().copied().max().unwrap();
                prop_assert_eq!(jb.delay_range, (lo, hi), "after {} delays", i + 1);
            }
        }

        /// Drops, duplicates and reorders (each packet displaced by less than `window`
        /// frames), with a pop every 20 ms: output is strictly increasing, every frame was
        /// input, a Lost is only ever a packet that was dropped or arrived after its turn, and
        /// frames plus Lost (plus any sequence numbers skipped to stay within the maximum
        /// depth) cover the output span exactly.
        #[test]
        fn never_duplicates_or_reorders(
            n in 1u64..150,
            window in 1u64..6,
            fates in proptest::collection::vec((0u64..6, 0u64..20, 0u8..10), 150),
        ) {
            use std::collections::{HashMap, HashSet};
            let t0 = Instant::now();
            let config = JitterConfig {
                shrink_interval: Duration::from_secs(3600),
                ..JitterConfig::default()
            };
            let mut jb = JitterBuffer::new(config);
            // 10 % dropped, 10 % duplicated.
            let mut arrivals: Vec<(u64, u64)> = Vec::new();
            let mut dropped = HashSet::new();
            for i in 0..n {
                let (shift, fine, fate) = fates[i as usize];
                if fate == 0 {
                    dropped.insert(i);
                    continue;
                }
                arrivals.push((i * 20 + (shift % window) * 20 + fine, i));
                if fate == 1 {
                    arrivals.push((i * 20 + window * 20 + fine, i));
                }
            }
            arrivals.sort();
            let mut pushed_at: HashMap<u64, u64> = HashMap::new();
            let mut outputs: Vec<(Out, u64)> = Vec::new();
            let mut next_arrival = 0;
            for tick in 0..(n + window + 30) {
                let now_ms = tick * 20;
                while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= now_ms {
                    let (at, i) = arrivals[next_arrival];
                    pushed_at.entry(i).or_insert(tick);
                    push(&mut jb, ms(t0, at), i);
                    next_arrival += 1;
                }
                outputs.push((pop(&mut jb, ms(t0, now_ms)), tick));
            }
            let mut last: Option<u64> = None;
            let mut first: Option<u64> = None;
            let (mut frames, mut lost) = (0u64, 0u64);
            for (o, tick) in &outputs {
                let s = match o {
                    Out::Frame(s, p) => {
                        prop_assert_eq!(*p, payload(*s));
                        prop_assert!(pushed_at.contains_key(s));
                        frames += 1;
                        *s
                    }
                    Out::Lost(s) => {
                        let late = pushed_at.get(s).is_none_or(|p| p > tick);
                        prop_assert!(dropped.contains(s) || late, "lost {} was there", s);
                        lost += 1;
                        *s
                    }
                    Out::Empty => continue,
                };
                if let Some(l) = last {
                    prop_assert!(s > l, "{} after {}", s, l);
                }
                first.get_or_insert(s);
                last = Some(s);
            }
            let st = jb.stats();
            // Skips happen only when an outage or a late start pushed the delay past the cap.
            if let (Some(f), Some(l)) = (first, last) {
                prop_assert_eq!(frames + lost + st.skipped, l - f + 1);
            }
            prop_assert_eq!(frames, st.played);
            prop_assert_eq!(lost, st.lost);
            // Every packet that arrived was played or dropped as late.
            prop_assert!(frames + st.late + st.discarded >= pushed_at.len() as u64);
            prop_assert_eq!(jb.depth_frames(), 0, "drained");
        }
    }
}
