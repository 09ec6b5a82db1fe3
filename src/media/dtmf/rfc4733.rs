//! RFC 4733 telephone-event receiver: one `Began` and one `Ended` per key press.
//!
//! # Payload
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |     event     |E|R| volume    |          duration             |
//! ```
//!
//! # How presses are told apart
//!
//! All packets of one event carry the event's start as their RTP timestamp, so the
//! timestamp identifies the press; the marker bit is not relied on (it is lost with the
//! first packet). For each packet:
//!
//! - the current event's timestamp: a continuation (duration grows) or an end report
//!   (E bit). Anything after the first end report is a retransmission and is ignored;
//! - the same event code, no marker, current event not ended, and a timestamp at most
//!   0xFFFF after the current segment's, no earlier than its duration, while that segment
//!   was long (≥ 0x8000): the next segment of a long event (§2.5.1.3), not a new press;
//! - the timestamp of one of the last [`RECENT`] events: a late or retransmitted packet of
//!   an event already over, ignored;
//! - a timestamp earlier than the current event's, within [`STALE_AFTER`] of its last
//!   packet: a late packet of an event never seen, ignored (it would be out of order);
//! - anything else starts a new press, ending the current event if it was still open.
//!
//! A press is reported `Began` at the first packet seen, whatever its duration field says
//! (so lost start packets only delay it), and `Ended` at its first end report, at the
//! first packet of the next event, or from [`EventReceiver::handle_timeout`] once no
//! packet came for the timeout (default 200 ms; senders repeat at least every 50 ms).
//! `at` is the press's start estimated as arrival minus the reported duration; `duration`
//! adds up the segments of long events.
//!
//! Several events in one packet (§2.5.1.5) are contiguous: the first starts at the RTP
//! timestamp, each next one where the previous ended. They are taken in order as if each
//! had come alone, the last [`MAX_EVENTS_PER_PACKET`] of them only (earlier ones are long
//! over and were sent in packets of their own).
//!
//! Event codes 16 and up (flash, tones) are tracked like digits so their packets do not
//! disturb the state, but never reported.

use std::time::{Duration, Instant};

use super::merge::{DtmfEvent, DtmfMethod};
use super::Digit;
use crate::rtp::types::{ClockRate, PayloadType, RtpTimestamp};

/// Ended events remembered to recognise their late and retransmitted packets.
pub const RECENT: usize = 4;
/// Within this time of the current event's last packet, older timestamps are late packets.
pub const STALE_AFTER: Duration = Duration::from_secs(2);
/// Events taken from one packet, counted from its end.
pub const MAX_EVENTS_PER_PACKET: usize = 4;
/// Default time without packets after which an open event is ended.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// Events one packet can produce: an implicit end, then a start and an end per event.
const QUEUE: usize = 1 + 2 * MAX_EVENTS_PER_PACKET;
/// A segment this long or longer may be followed by another segment of the same event.
const LONG_SEGMENT: u32 = 0x8000;

/// One 4-byte telephone-event report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    code: u8,
    end: bool,
    duration: u32,
}

impl Report {
    fn parse(b: &[u8]) -> Option<Report> {
        match *b {
            [code, flags, hi, lo] => Some(Report {
                code,
                end: flags & 0x80 != 0,
                duration: u32::from(u16::from_be_bytes([hi, lo])),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Current {
    code: u8,
    /// Timestamp of the segment being received (the first one's for short events).
    seg_ts: u32,
    /// Ticks of the segments before this one.
    earlier: u64,
    /// Largest duration seen in this segment.
    duration: u32,
    ended: bool,
    start: Instant,
    last_packet: Instant,
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiverStats {
    /// Payloads accepted.
    pub packets: u64,
    /// Payloads ignored because their length is not a non-zero multiple of 4.
    pub malformed: u64,
    /// Packets of events already over, or too late to be in order.
    pub stale: u64,
    /// Presses begun (digits and other events).
    pub events: u64,
    /// Events ended by the timeout rather than an end report.
    pub timeouts: u64,
}

/// Sans-IO RFC 4733 receiver for one RTP stream; see the module documentation.
#[derive(Debug, Clone)]
pub struct EventReceiver {
    payload_type: PayloadType,
    rate: ClockRate,
    timeout: Duration,
    current: Option<Current>,
    recent: [Option<u32>; RECENT],
    recent_next: usize,
    queue: [Option<DtmfEvent>; QUEUE],
    head: usize,
    len: usize,
    stats: ReceiverStats,
}

impl EventReceiver {
    /// A receiver for telephone-events negotiated as `payload_type` at `clock_rate`.
    pub fn new(payload_type: PayloadType, clock_rate: ClockRate) -> Self {
        Self {
            payload_type,
            rate: clock_rate,
            timeout: DEFAULT_TIMEOUT,
            current: None,
            recent: [None; RECENT],
            recent_next: 0,
            queue: [None; QUEUE],
            head: 0,
            len: 0,
            stats: ReceiverStats::default(),
        }
    }

    /// Sets how long an event may go without packets before it is ended.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The payload type this receiver was built for, for the caller's demultiplexing.
    pub fn payload_type(&self) -> PayloadType {
        self.payload_type
    }

    /// The RTP clock rate of the events.
    pub fn clock_rate(&self) -> ClockRate {
        self.rate
    }

    /// Counters so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// Forgets all events, e.g. when the stream's SSRC changes.
    pub fn reset(&mut self) {
        self.current = None;
        self.recent = [None; RECENT];
        self.recent_next = 0;
        self.head = 0;
        self.len = 0;
    }

    /// Takes one telephone-event payload; returns the first event it produced.
    ///
    /// One packet can produce more than one event (an implicit end of the previous press
    /// and the start of a new one, or several events in one packet): drain the rest with
    /// [`poll_event`](Self::poll_event) after each call.
    pub fn push(
        &mut self,
        now: Instant,
        timestamp: RtpTimestamp,
        marker: bool,
        payload: &[u8],
    ) -> Option<DtmfEvent> {
        if payload.is_empty() || !payload.len().is_multiple_of(4) {
            self.stats.malformed += 1;
            return self.poll_event();
        }
        self.stats.packets += 1;
        let count = payload.len() / 4;
        let skip = count.saturating_sub(MAX_EVENTS_PER_PACKET);
        let mut ts = timestamp.get();
        for (i, chunk) in payload.chunks_exact(4).enumerate() {
            let Some(r) = Report::parse(chunk) else {
                continue;
            };
            if i >= skip {
                // Only the packet's first event can be flagged as a new one by the marker.
                self.report(now, ts, marker && i == 0, r);
            }
            ts = ts.wrapping_add(r.duration);
        }
        self.poll_event()
    }

    /// The next event not yet returned.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        if self.len == 0 {
            return None;
        }
        let e = self.queue[self.head].take();
        self.head = (self.head + 1) % QUEUE;
        self.len -= 1;
        e
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current
            .filter(|c| !c.ended)
            .and_then(|c| c.last_packet.checked_add(self.timeout))
    }

    /// Ends an open event whose packets stopped coming (all end reports lost).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DtmfEvent> {
        let cur = self.current.as_mut()?;
        if cur.ended || now.saturating_duration_since(cur.last_packet) < self.timeout {
            return None;
        }
        cur.ended = true;
        let cur = *cur;
        self.stats.timeouts += 1;
        self.end_event(&cur)
    }

    fn report(&mut self, now: Instant, ts: u32, marker: bool, r: Report) {
        if let Some(cur) = self.current.as_mut() {
            if ts == cur.seg_ts {
                if cur.ended {
                    self.stats.stale += 1;
                    return;
                }
                cur.duration = cur.duration.max(r.duration);
                cur.last_packet = now;
                if r.end {
                    cur.ended = true;
                    let cur = *cur;
                    self.emit_end(&cur);
                }
                return;
            }
            let delta = ts.wrapping_sub(cur.seg_ts);
            if !cur.ended
                && !marker
                && r.code == cur.code
                && cur.duration >= LONG_SEGMENT
                && (cur.duration..=0xFFFF).contains(&delta)
            {
                let old = cur.seg_ts;
                cur.earlier += u64::from(delta);
                cur.seg_ts = ts;
                cur.duration = r.duration;
                cur.last_packet = now;
                cur.ended = r.end;
                let cur = *cur;
                self.remember(old);
                if r.end {
                    self.emit_end(&cur);
                }
                return;
            }
            let late =
                (delta as i32) < 0 && now.saturating_duration_since(cur.last_packet) < STALE_AFTER;
            if late || self.recent.contains(&Some(ts)) {
                self.stats.stale += 1;
                return;
            }
            let prev = *cur;
            if !prev.ended {
                self.emit_end(&prev);
            }
            self.remember(prev.seg_ts);
        }
        let dur = self.rate.duration_of(u64::from(r.duration));
        let cur = Current {
            code: r.code,
            seg_ts: ts,
            earlier: 0,
            duration: r.duration,
            ended: r.end,
            start: now.checked_sub(dur).unwrap_or(now),
            last_packet: now,
        };
        self.current = Some(cur);
        self.stats.events += 1;
        if let Some(digit) = Digit::from_event_code(cur.code) {
            self.enqueue(DtmfEvent::began(digit, DtmfMethod::Rfc4733, cur.start));
        }
        if r.end {
            self.emit_end(&cur);
        }
    }

    fn remember(&mut self, ts: u32) {
        self.recent[self.recent_next] = Some(ts);
        self.recent_next = (self.recent_next + 1) % RECENT;
    }

    fn end_event(&self, cur: &Current) -> Option<DtmfEvent> {
        let digit = Digit::from_event_code(cur.code)?;
        let ticks = cur.earlier + u64::from(cur.duration);
        Some(DtmfEvent::ended(
            digit,
            DtmfMethod::Rfc4733,
            cur.start,
            self.rate.duration_of(ticks),
        ))
    }

    fn emit_end(&mut self, cur: &Current) {
        if let Some(e) = self.end_event(cur) {
            self.enqueue(e);
        }
    }

    fn enqueue(&mut self, e: DtmfEvent) {
        if self.len == QUEUE {
            // The caller did not drain: drop the oldest rather than grow.
            self.head = (self.head + 1) % QUEUE;
            self.len -= 1;
        }
        self.queue[(self.head + self.len) % QUEUE] = Some(e);
        self.len += 1;
    }
}

/// Builds one 4-byte telephone-event report.
pub fn encode_event(code: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
    let [hi, lo] = duration.to_be_bytes();
    [code, (u8::from(end) << 7) | (volume & 0x3F), hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::DigitPhase;
    use proptest::prelude::*;

    const PT: u8 = 101;
    /// 20 ms at 8 kHz.
    const STEP: u32 = 160;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Pkt {
        /// Arrival, in ms after the test's origin.
        at_ms: u64,
        ts: u32,
        marker: bool,
        payload: [u8; 4],
    }

    fn receiver() -> EventReceiver {
        EventReceiver::new(PayloadType::new(PT).unwrap(), ClockRate::HZ_8000)
    }

    /// Packets of one press as a sender emits them: start with marker, a report every
    /// 20 ms, three end reports. `ts` is the start timestamp, `start_ms` its arrival time.
    fn press(code: u8, ts: u32, start_ms: u64, len_ticks: u32) -> Vec<Pkt> {
        let mut v = Vec::new();
        let mut d = 0;
        let mut t = start_ms;
        while d < len_ticks {
            v.push(Pkt {
                at_ms: t,
                ts,
                marker: d == 0,
                payload: encode_event(code, false, 10, d as u16),
            });
            d += STEP;
            t += 20;
        }
        for _ in 0..3 {
            v.push(Pkt {
                at_ms: t,
                ts,
                marker: false,
                payload: encode_event(code, true, 10, len_ticks as u16),
            });
            t += 20;
        }
        v
    }

    /// Feeds packets in order, calling the timeout before each, then once well after.
    fn run(rx: &mut EventReceiver, t0: Instant, pkts: &[Pkt]) -> Vec<DtmfEvent> {
        let mut out = Vec::new();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for p in pkts {
            out.extend(rx.handle_timeout(at(p.at_ms)));
            out.extend(rx.push(at(p.at_ms), RtpTimestamp::new(p.ts), p.marker, &p.payload));
            while let Some(e) = rx.poll_event() {
                out.push(e);
            }
        }
        let last = pkts.last().map_or(0, |p| p.at_ms);
        out.extend(rx.handle_timeout(at(last + 1000)));
        out
    }

    fn digits(events: &[DtmfEvent]) -> String {
        events
            .iter()
            .filter(|e| e.phase == DigitPhase::Began)
            .map(|e| e.digit.as_char())
            .collect()
    }

    fn ends(events: &[DtmfEvent]) -> usize {
        events
            .iter()
            .filter(|e| e.phase == DigitPhase::Ended)
            .count()
    }

    #[test]
    fn normal_event_reports_once_with_its_duration() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let ev = run(&mut rx, t0, &press(5, 1000, 0, 800));
        assert_eq!(digits(&ev), "5");
        assert_eq!(ends(&ev), 1);
        assert_eq!(ev[0].at, t0);
        assert_eq!(ev[0].method, DtmfMethod::Rfc4733);
        assert_eq!(ev[1].duration, Some(Duration::from_millis(100)));
        assert_eq!(ev[1].at, t0);
        assert_eq!(rx.stats().timeouts, 0);
        assert_eq!(rx.poll_timeout(), None);
    }

    #[test]
    fn missing_marker_changes_nothing() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let mut p = press(1, 1000, 0, 800);
        p.iter_mut().for_each(|p| p.marker = false);
        let ev = run(&mut rx, t0, &p);
        assert_eq!(digits(&ev), "1");
        assert_eq!(ends(&ev), 1);
    }

    #[test]
    fn lost_start_packets_still_report_once_with_estimated_start() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let p = press(2, 1000, 0, 800);
        let ev = run(&mut rx, t0, &p[3..]);
        assert_eq!(digits(&ev), "2");
        // First packet seen at 60 ms said 480 ticks = 60 ms had passed.
        assert_eq!(ev[0].at, t0);
        assert_eq!(ends(&ev), 1);
    }

    #[test]
    fn lost_end_packets_end_by_timeout() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let p = press(3, 1000, 0, 800);
        let body = &p[..p.len() - 3];
        let mut ev = Vec::new();
        for q in body {
            let now = t0 + Duration::from_millis(q.at_ms);
            ev.extend(rx.push(now, RtpTimestamp::new(q.ts), q.marker, &q.payload));
        }
        let deadline = rx.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + Duration::from_millis(80 + 200));
        assert_eq!(rx.handle_timeout(deadline - Duration::from_millis(1)), None);
        ev.extend(rx.handle_timeout(deadline));
        assert_eq!(digits(&ev), "3");
        assert_eq!(ends(&ev), 1);
        assert_eq!(ev[1].duration, Some(Duration::from_millis(80)));
        assert_eq!(rx.handle_timeout(deadline + Duration::from_secs(1)), None);
        assert_eq!(rx.stats().timeouts, 1);
        // Packets arriving after the timeout are the same press.
        let late = run(&mut rx, t0, &p[p.len() - 3..]);
        assert!(late.is_empty(), "{late:?}");
    }

    #[test]
    fn lost_end_packets_end_when_the_next_event_starts() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let a = press(4, 1000, 0, 800);
        let mut pkts = a[..a.len() - 3].to_vec();
        pkts.extend(press(6, 1000 + 800 + 560, 170, 800));
        let ev = run(&mut rx, t0, &pkts);
        assert_eq!(digits(&ev), "46");
        assert_eq!(ends(&ev), 2);
        assert_eq!(rx.stats().timeouts, 0);
    }

    #[test]
    fn end_retransmitted_after_next_event_started_is_ignored() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let a = press(7, 1000, 0, 800);
        let b = press(8, 2400, 120, 800);
        // The first event's second and third end reports arrive inside the second event.
        let mut pkts = a[..a.len() - 2].to_vec();
        pkts.push(b[0]);
        pkts.push(a[a.len() - 2]);
        pkts.push(b[1]);
        pkts.push(a[a.len() - 1]);
        pkts.extend_from_slice(&b[2..]);
        let ev = run(&mut rx, t0, &pkts);
        assert_eq!(digits(&ev), "78");
        assert_eq!(ends(&ev), 2);
        // And when the first event's ends were all lost until then.
        let mut rx = receiver();
        let mut pkts = a[..a.len() - 3].to_vec();
        pkts.push(b[0]);
        pkts.extend_from_slice(&a[a.len() - 3..]);
        pkts.extend_from_slice(&b[1..]);
        let ev = run(&mut rx, t0, &pkts);
        assert_eq!(digits(&ev), "78");
    }

    #[test]
    fn old_event_packet_long_after_is_not_a_new_press() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let a = press(1, 1000, 0, 800);
        let mut pkts = a.clone();
        pkts.extend(press(2, 2360, 170, 800));
        // A copy of the first digit's end report, delayed by seconds.
        pkts.push(Pkt {
            at_ms: 5000,
            ..a[a.len() - 1]
        });
        assert_eq!(digits(&run(&mut rx, t0, &pkts)), "12");
    }

    #[test]
    fn unseen_older_event_after_a_newer_one_is_dropped_not_reordered() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let a = press(1, 1000, 0, 800);
        let b = press(2, 2360, 170, 800);
        // The second digit's first packet overtakes all of the first digit's.
        let mut pkts = vec![Pkt { at_ms: 0, ..b[0] }];
        pkts.extend(a.iter().map(|p| Pkt {
            at_ms: p.at_ms + 1,
            ..*p
        }));
        pkts.extend_from_slice(&b[1..]);
        assert_eq!(digits(&run(&mut rx, t0, &pkts)), "2");
    }

    #[test]
    fn long_event_across_the_duration_limit_is_one_press() {
        let t0 = Instant::now();
        let mut rx = receiver();
        // 10 s at 8 kHz: segments of 0xFFFF ticks, the next starting where one ended.
        let total: u32 = 80_000;
        let mut pkts = Vec::new();
        let mut elapsed = 0;
        let mut t = 0;
        let (mut seg_ts, mut seg_start) = (5000u32, 0u32);
        while elapsed < total {
            if elapsed - seg_start > 0xFFFF {
                seg_ts = seg_ts.wrapping_add(0xFFFF);
                seg_start += 0xFFFF;
            }
            let d = elapsed - seg_start;
            pkts.push(Pkt {
                at_ms: t,
                ts: seg_ts,
                marker: elapsed == 0,
                payload: encode_event(9, false, 10, d.min(0xFFFF) as u16),
            });
            elapsed += STEP;
            t += 20;
        }
        for _ in 0..3 {
            pkts.push(Pkt {
                at_ms: t,
                ts: seg_ts,
                marker: false,
                payload: encode_event(9, true, 10, (total - seg_start) as u16),
            });
            t += 20;
        }
        let ev = run(&mut rx, t0, &pkts);
        assert_eq!(digits(&ev), "9");
        assert_eq!(ends(&ev), 1);
        assert_eq!(ev[1].duration, Some(Duration::from_secs(10)));
    }

    #[test]
    fn timestamp_wrap_is_harmless() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let mut pkts = press(1, u32::MAX - 100, 0, 800);
        pkts.extend(press(1, 1260, 170, 800));
        assert_eq!(digits(&run(&mut rx, t0, &pkts)), "11");
    }

    #[test]
    fn consecutive_digits_and_repeated_digits() {
        let t0 = Instant::now();
        let mut rx = receiver();
        let mut pkts = press(1, 1000, 0, 800);
        pkts.extend(press(2, 2360, 170, 800));
        pkts.extend(press(2, 3720, 340, 800));
        let ev = run(&mut rx, t0, &pkts);
        assert_eq!(digits(&ev), "122");
        assert_eq!(ends(&ev), 3);
    }

    #[test]
    fn wrong_lengths_and_non_digit_events() {
        let t0 = Instant::now();
        let mut rx = receiver();
        for len in [0usize, 1, 3, 5, 7] {
            let buf = [0x05u8; 8];
            assert_eq!(rx.push(t0, RtpTimestamp::new(9), true, &buf[..len]), None);
        }
        assert_eq!(rx.stats().malformed, 5);
        // Flash (16) is tracked but not reported, and does not disturb the next digit.
        let mut pkts = press(16, 1000, 0, 800);
        pkts.extend(press(0, 2360, 170, 800));
        let ev = run(&mut rx, t0, &pkts);
        assert_eq!(digits(&ev), "0");
        assert_eq!(ends(&ev), 1);
    }

    #[test]
    fn several_events_in_one_packet() {
        let t0 = Instant::now();
        let mut rx = receiver();
        // '1' (ended, 800 ticks) then '2' starting where it stopped.
        let mut payload = [0u8; 8];
        payload[..4].copy_from_slice(&encode_event(1, true, 10, 800));
        payload[4..].copy_from_slice(&encode_event(2, false, 10, 160));
        let mut ev = Vec::new();
        ev.extend(rx.push(t0, RtpTimestamp::new(1000), true, &payload));
        ev.extend(std::iter::from_fn(|| rx.poll_event()));
        // The same packet again, then '2' alone and its end.
        ev.extend(rx.push(t0, RtpTimestamp::new(1000), false, &payload));
        ev.extend(rx.push(
            t0,
            RtpTimestamp::new(1800),
            false,
            &encode_event(2, true, 10, 480),
        ));
        ev.extend(std::iter::from_fn(|| rx.poll_event()));
        assert_eq!(digits(&ev), "12");
        assert_eq!(ends(&ev), 2);
    }

    fn stream(codes: &[u8]) -> Vec<Vec<Pkt>> {
        let mut ts = 12_345u32;
        let mut t = 0;
        codes
            .iter()
            .map(|&c| {
                let p = press(c, ts, t, 800);
                ts = ts.wrapping_add(1360);
                t += 170;
                p
            })
            .collect()
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            pkts in proptest::collection::vec(
                (0u64..500, any::<u32>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..24)),
                0..60,
            )
        ) {
            let t0 = Instant::now();
            let mut rx = receiver();
            let mut t = 0;
            for (dt, ts, m, payload) in pkts {
                t += dt;
                let now = t0 + Duration::from_millis(t);
                let _ = rx.handle_timeout(now);
                let _ = rx.push(now, RtpTimestamp::new(ts), m, &payload);
                while rx.poll_event().is_some() {}
            }
        }

        /// Distinct digits, so each reported digit names its event. With loss only, every
        /// event with a packet left is reported exactly once; with reordering as well, never
        /// more than once.
        #[test]
        fn loss_and_reordering_never_duplicate(
            codes in Just((0u8..16).collect::<Vec<_>>()).prop_shuffle(),
            n in 1usize..8,
            keep in proptest::collection::vec(0u8..10, 64),
            jitter in proptest::collection::vec(0u64..60, 64),
            reorder in any::<bool>(),
        ) {
            let events = stream(&codes[..n]);
            let mut pkts = Vec::new();
            let mut expected = String::new();
            let mut k = 0;
            for (ev, &code) in events.iter().zip(&codes) {
                let mut any = false;
                for p in ev {
                    let i = k % keep.len();
                    k += 1;
                    if keep[i] < 4 {
                        continue;
                    }
                    let mut p = *p;
                    if reorder {
                        p.at_ms += jitter[i];
                    }
                    pkts.push(p);
                    any = true;
                }
                if any {
                    expected.push(Digit::from_event_code(code).unwrap().as_char());
                }
            }
            pkts.sort_by_key(|p| p.at_ms);
            let t0 = Instant::now();
            let mut rx = receiver();
            let ev = run(&mut rx, t0, &pkts);
            let got = digits(&ev);
            for c in got.chars() {
                prop_assert_eq!(got.matches(c).count(), 1, "{}", got);
                prop_assert!(expected.contains(c));
            }
            if !reorder {
                prop_assert_eq!(&got, &expected);
            }
            // Every begun digit is ended exactly once.
            prop_assert_eq!(ends(&ev), got.len());
        }
    }
}
