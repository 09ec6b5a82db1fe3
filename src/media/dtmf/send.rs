//! Sending DTMF: RFC 4733 telephone-event packets and in-band tones, digit string in,
//! one packet or frame per 20 ms tick out.
//!
//! # RFC 4733 packet schedule ([`EventSender`])
//!
//! For each digit, on consecutive ticks:
//! 1. the start report: marker bit set, duration 0, the tick's timestamp as the event's
//!    timestamp (kept by every later report of the digit);
//! 2. a continuation report per tick, its duration the ticks elapsed since the start;
//! 3. at the first tick at least the tone length after the start, the end report (E bit)
//!    with the tone length as duration, then the same report again on the next ticks,
//!    [`SenderConfig::end_copies`] in all (RFC 4733 §2.5.1.4 asks for three);
//! 4. the gap: the next digit starts at the first tick at least the gap after the tone's
//!    end, and not before the end reports are all sent. With 20 ms ticks the defaults
//!    (100 ms tone, 70 ms gap) put a digit every 180 ms.
//!
//! On a tick where [`EventSender::poll`] returns a packet, the leg sends it instead of an
//! audio frame, with the next sequence number. Tones are limited to 0xFFFF timestamp
//! ticks (8.2 s at 8 kHz) so that no event needs segments.
//!
//! # In-band ([`InbandSender`])
//!
//! Renders each digit with [`ToneSpec::dtmf`] (tone, then silence for the gap) into the
//! caller's frames.

use std::collections::VecDeque;
use std::time::Duration;

use super::rfc4733::encode_event;
use super::{Digit, InvalidDigit};
use crate::media::tone::{ToneGenerator, ToneSpec, ToneSpecError};
use crate::rtp::types::{ClockRate, PayloadType, RtpTimestamp};

/// Timing and level of sent telephone-events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// How long each digit lasts.
    pub tone: Duration,
    /// Silence between the end of one digit and the start of the next.
    pub gap: Duration,
    /// Volume field, in −dBm0 (0–63).
    pub volume: u8,
    /// How many end reports each digit gets (at least 1).
    pub end_copies: u8,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            tone: Duration::from_millis(100),
            gap: Duration::from_millis(70),
            volume: 10,
            end_copies: 3,
        }
    }
}

/// A sender configuration that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SenderConfigError {
    /// The tone is empty or longer than one event can say (0xFFFF ticks).
    #[error("tone length must be between one tick and 0xFFFF ticks")]
    ToneLength,
    /// The gap does not fit in a timestamp.
    #[error("gap too long")]
    GapLength,
    /// Volume above 63.
    #[error("volume must be 0..=63")]
    Volume,
    /// No end reports.
    #[error("at least one end report is needed")]
    EndCopies,
}

/// One telephone-event packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The negotiated telephone-event payload type.
    pub payload_type: PayloadType,
    /// Set on the first packet of each digit.
    pub marker: bool,
    /// The digit's start timestamp.
    pub timestamp: RtpTimestamp,
    /// The 4-byte event report.
    pub payload: [u8; 4],
}

/// Gaps are compared as signed timestamp differences, so they must stay below 2³¹ ticks.
const MAX_GAP_TICKS: u64 = (u32::MAX / 2) as u64;

#[derive(Debug, Clone, Copy)]
enum SendState {
    /// Between digits; the next may start once the timestamp reaches `ready_at`.
    Idle {
        ready_at: Option<u32>,
    },
    Tone {
        digit: Digit,
        start: u32,
        sent: u32,
    },
    Ending {
        digit: Digit,
        start: u32,
        duration: u16,
        left: u8,
    },
}

/// Turns a digit string into RFC 4733 packets, one per tick; see the module documentation.
#[derive(Debug, Clone)]
pub struct EventSender {
    payload_type: PayloadType,
    cfg: SenderConfig,
    tone_ticks: u32,
    gap_ticks: u32,
    queue: VecDeque<Digit>,
    state: SendState,
}

impl EventSender {
    /// A sender with the default timing (the tone is capped at 0xFFFF ticks for clock
    /// rates above 655 kHz).
    pub fn new(payload_type: PayloadType, clock_rate: ClockRate) -> Self {
        Self::build(payload_type, clock_rate, SenderConfig::default())
    }

    /// A sender with explicit timing.
    pub fn with_config(
        payload_type: PayloadType,
        clock_rate: ClockRate,
        cfg: SenderConfig,
    ) -> Result<Self, SenderConfigError> {
        let tone = clock_rate.ticks_in(cfg.tone);
        if tone == 0 || tone > 0xFFFF {
            return Err(SenderConfigError::ToneLength);
        }
        if clock_rate.ticks_in(cfg.gap) > MAX_GAP_TICKS {
            return Err(SenderConfigError::GapLength);
        }
        if cfg.volume > 63 {
            return Err(SenderConfigError::Volume);
        }
        if cfg.end_copies == 0 {
            return Err(SenderConfigError::EndCopies);
        }
        Ok(Self::build(payload_type, clock_rate, cfg))
    }

    fn build(payload_type: PayloadType, rate: ClockRate, cfg: SenderConfig) -> Self {
        Self {
            payload_type,
            cfg,
            tone_ticks: rate.ticks_in(cfg.tone).clamp(1, 0xFFFF) as u32,
            gap_ticks: rate.ticks_in(cfg.gap).min(MAX_GAP_TICKS) as u32,
            queue: VecDeque::with_capacity(32),
            state: SendState::Idle { ready_at: None },
        }
    }

    /// The payload type the packets carry.
    pub fn payload_type(&self) -> PayloadType {
        self.payload_type
    }

    /// The timing in use.
    pub fn config(&self) -> SenderConfig {
        self.cfg
    }

    /// Appends digits to send; nothing is queued if any character is not a DTMF digit.
    pub fn queue(&mut self, digits: &str) -> Result<(), InvalidDigit> {
        queue_digits(&mut self.queue, digits)
    }

    /// Digits queued and not yet started.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// True when no digit is queued or being sent (a gap may still be running).
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && matches!(self.state, SendState::Idle { .. })
    }

    /// Drops the queued digits and cuts the current one short (its end reports still go out).
    pub fn cancel(&mut self) {
        self.queue.clear();
        if let SendState::Tone { digit, start, sent } = self.state {
            self.state = SendState::Ending {
                digit,
                start,
                duration: sent.min(0xFFFF) as u16,
                left: self.cfg.end_copies,
            };
        }
    }

    /// The packet for the tick whose audio timestamp is `tick_timestamp`, if any.
    pub fn poll(&mut self, tick_timestamp: RtpTimestamp) -> Option<EventPacket> {
        let now = tick_timestamp.get();
        match self.state {
            SendState::Idle { ready_at } => {
                if ready_at.is_some_and(|r| (now.wrapping_sub(r) as i32) < 0) {
                    return None;
                }
                let digit = self.queue.pop_front()?;
                self.state = SendState::Tone {
                    digit,
                    start: now,
                    sent: 0,
                };
                Some(self.packet(true, digit, now, false, 0))
            }
            SendState::Tone { digit, start, sent } => {
                // A timestamp behind the start (caller error) counts as no time elapsed.
                let elapsed = match now.wrapping_sub(start) {
                    e if (e as i32) < 0 => sent,
                    e => e.max(sent),
                };
                if elapsed < self.tone_ticks {
                    self.state = SendState::Tone {
                        digit,
                        start,
                        sent: elapsed,
                    };
                    return Some(self.packet(false, digit, start, false, elapsed as u16));
                }
                let duration = self.tone_ticks as u16;
                self.state = SendState::Ending {
                    digit,
                    start,
                    duration,
                    left: self.cfg.end_copies,
                };
                self.poll(tick_timestamp)
            }
            SendState::Ending {
                digit,
                start,
                duration,
                left,
            } => {
                self.state = if left > 1 {
                    SendState::Ending {
                        digit,
                        start,
                        duration,
                        left: left - 1,
                    }
                } else {
                    let end = start.wrapping_add(u32::from(duration));
                    SendState::Idle {
                        ready_at: Some(end.wrapping_add(self.gap_ticks)),
                    }
                };
                Some(self.packet(false, digit, start, true, duration))
            }
        }
    }

    fn packet(&self, marker: bool, d: Digit, ts: u32, end: bool, duration: u16) -> EventPacket {
        EventPacket {
            payload_type: self.payload_type,
            marker,
            timestamp: RtpTimestamp::new(ts),
            payload: encode_event(d.event_code(), end, self.cfg.volume, duration),
        }
    }
}

fn queue_digits(queue: &mut VecDeque<Digit>, digits: &str) -> Result<(), InvalidDigit> {
    if let Some(bad) = digits.chars().find(|&c| Digit::from_char(c).is_none()) {
        return Err(InvalidDigit(bad));
    }
    queue.extend(digits.chars().filter_map(Digit::from_char));
    Ok(())
}

/// Timing and level of in-band digits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InbandConfig {
    /// Tone length in ms.
    pub tone_ms: u32,
    /// Silence after each tone in ms.
    pub gap_ms: u32,
    /// Level of each of the two tones in dBm0.
    pub level_dbm0: f32,
}

impl Default for InbandConfig {
    fn default() -> Self {
        Self {
            tone_ms: 100,
            gap_ms: 70,
            level_dbm0: -10.0,
        }
    }
}

/// Renders a digit string as DTMF tones into PCM frames.
#[derive(Debug, Clone)]
pub struct InbandSender {
    rate: ClockRate,
    cfg: InbandConfig,
    queue: VecDeque<Digit>,
    current: Option<ToneGenerator>,
}

impl InbandSender {
    /// A sender for PCM at `rate` with the default timing.
    pub fn new(rate: ClockRate) -> Result<Self, ToneSpecError> {
        Self::with_config(rate, InbandConfig::default())
    }

    /// A sender with explicit timing and level.
    pub fn with_config(rate: ClockRate, cfg: InbandConfig) -> Result<Self, ToneSpecError> {
        // Building the highest-pitched digit once checks the rate, level and lengths for all.
        let d = Digit::from_event_code(15).ok_or(ToneSpecError::Empty)?;
        ToneGenerator::new(&Self::spec(&cfg, d)?, rate)?;
        Ok(Self {
            rate,
            cfg,
            queue: VecDeque::with_capacity(32),
            current: None,
        })
    }

    fn spec(cfg: &InbandConfig, d: Digit) -> Result<ToneSpec, ToneSpecError> {
        ToneSpec::dtmf(d, cfg.tone_ms, cfg.gap_ms).with_level(cfg.level_dbm0)
    }

    /// Appends digits to play; nothing is queued if any character is not a DTMF digit.
    pub fn queue(&mut self, digits: &str) -> Result<(), InvalidDigit> {
        queue_digits(&mut self.queue, digits)
    }

    /// True when nothing is queued or playing.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.current.is_none()
    }

    /// Drops queued digits and stops the one playing.
    pub fn cancel(&mut self) {
        self.queue.clear();
        self.current = None;
    }

    /// Writes tones and gaps into `out`; returns how many samples were written.
    ///
    /// Fewer than `out.len()` means the digits ran out; the rest of `out` is left as is, for
    /// the caller's own audio.
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        while written < out.len() {
            let gen = match self.current.as_mut() {
                Some(g) => g,
                None => {
                    let Some(d) = self.queue.pop_front() else {
                        break;
                    };
                    let Ok(gen) = Self::spec(&self.cfg, d)
                        .and_then(|spec| ToneGenerator::new(&spec, self.rate))
                    else {
                        continue;
                    };
                    self.current.insert(gen)
                }
            };
            written += gen.fill(&mut out[written..]);
            if gen.is_finished() {
                self.current = None;
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> EventSender {
        EventSender::new(PayloadType::new(101).unwrap(), ClockRate::HZ_8000)
    }

    /// Polls ticks 160 apart from `ts0` until idle; returns (tick, packet) pairs.
    fn drain(s: &mut EventSender, ts0: u32) -> Vec<(u32, EventPacket)> {
        let mut out = Vec::new();
        let mut tick = ts0;
        for _ in 0..1000 {
            if let Some(p) = s.poll(RtpTimestamp::new(tick)) {
                out.push((tick, p));
            } else if s.is_idle() {
                break;
            }
            tick = tick.wrapping_add(160);
        }
        out
    }

    fn fields(p: &EventPacket) -> (u8, bool, u16) {
        (
            p.payload[0],
            p.payload[1] & 0x80 != 0,
            u16::from_be_bytes([p.payload[2], p.payload[3]]),
        )
    }

    #[test]
    fn one_digit_schedule() {
        let mut s = sender();
        s.queue("5").unwrap();
        let pkts = drain(&mut s, 1000);
        let got: Vec<_> = pkts
            .iter()
            .map(|(t, p)| (*t, p.marker, p.timestamp.get(), fields(p)))
            .collect();
        let expect = vec![
            (1000, true, 1000, (5, false, 0)),
            (1160, false, 1000, (5, false, 160)),
            (1320, false, 1000, (5, false, 320)),
            (1480, false, 1000, (5, false, 480)),
            (1640, false, 1000, (5, false, 640)),
            (1800, false, 1000, (5, true, 800)),
            (1960, false, 1000, (5, true, 800)),
            (2120, false, 1000, (5, true, 800)),
        ];
        assert_eq!(got, expect);
        assert!(pkts.iter().all(|(_, p)| p.payload_type.get() == 101));
        assert_eq!(pkts[0].1.payload[1] & 0x3f, 10, "volume");
    }

    #[test]
    fn gap_between_digits() {
        let mut s = sender();
        s.queue("12").unwrap();
        let pkts = drain(&mut s, 0);
        let starts: Vec<u32> = pkts
            .iter()
            .filter(|(_, p)| p.marker)
            .map(|(t, _)| *t)
            .collect();
        // Tone ends at 800, gap of 560 → first tick at or after 1360.
        assert_eq!(starts, vec![0, 1440]);
        assert_eq!(pkts.len(), 16);
    }

    #[test]
    fn invalid_digits_queue_nothing() {
        let mut s = sender();
        assert_eq!(s.queue("12x3"), Err(InvalidDigit('x')));
        assert_eq!(s.pending(), 0);
        assert!(s.is_idle());
        assert_eq!(s.poll(RtpTimestamp::new(0)), None);
        s.queue("*#abcd").unwrap();
        assert_eq!(s.pending(), 6);
    }

    #[test]
    fn skipped_ticks_and_wrap() {
        let mut s = sender();
        s.queue("9").unwrap();
        let start = u32::MAX - 200;
        assert!(s.poll(RtpTimestamp::new(start)).unwrap().marker);
        // A late tick jumps straight to the end reports with the configured length.
        let p = s.poll(RtpTimestamp::new(start.wrapping_add(2000))).unwrap();
        assert_eq!(fields(&p), (9, true, 800));
        assert_eq!(p.timestamp.get(), start);
    }

    #[test]
    fn cancel_ends_the_current_digit() {
        let mut s = sender();
        s.queue("77").unwrap();
        s.poll(RtpTimestamp::new(0));
        s.poll(RtpTimestamp::new(160));
        s.cancel();
        let rest = drain(&mut s, 320);
        assert_eq!(rest.len(), 3);
        assert!(rest.iter().all(|(_, p)| fields(p) == (7, true, 160)));
        assert!(s.is_idle());
    }

    #[test]
    fn config_is_validated() {
        let pt = PayloadType::new(101).unwrap();
        let bad = |cfg| EventSender::with_config(pt, ClockRate::HZ_48000, cfg).err();
        let d = SenderConfig::default();
        assert_eq!(
            bad(SenderConfig {
                tone: Duration::from_secs(2),
                ..d
            }),
            Some(SenderConfigError::ToneLength)
        );
        assert_eq!(
            bad(SenderConfig {
                tone: Duration::ZERO,
                ..d
            }),
            Some(SenderConfigError::ToneLength)
        );
        assert_eq!(
            bad(SenderConfig { volume: 64, ..d }),
            Some(SenderConfigError::Volume)
        );
        assert_eq!(
            bad(SenderConfig { end_copies: 0, ..d }),
            Some(SenderConfigError::EndCopies)
        );
        assert_eq!(bad(d), None);
        assert!(
            InbandSender::new(ClockRate::new(3000).unwrap()).is_err(),
            "1633 Hz needs more than 3 kHz"
        );
        assert!(InbandSender::with_config(
            ClockRate::HZ_8000,
            InbandConfig {
                level_dbm0: f32::NAN,
                ..InbandConfig::default()
            }
        )
        .is_err());
    }

    #[test]
    fn inband_fills_tone_then_gap_then_stops() {
        let mut s = InbandSender::new(ClockRate::HZ_8000).unwrap();
        s.queue("1").unwrap();
        let mut frame = [7i16; 160];
        let mut total = 0;
        let mut loud = 0;
        loop {
            let n = s.fill(&mut frame);
            total += n;
            loud += frame[..n].iter().filter(|&&x| x != 0).count();
            if n < frame.len() {
                assert_eq!(frame[n], 7, "rest of the frame untouched");
                break;
            }
            frame = [7; 160];
        }
        assert_eq!(total, 1360, "100 ms tone + 70 ms gap");
        assert!(loud > 700 && loud <= 800, "{loud}");
        assert!(s.is_idle());
    }
}
