//! Newtypes for RTP protocol numbers and media time.
//!
//! Wire values (`WireSeq`, `RtpTimestamp`) are what a packet carries; the extended forms
//! (`SeqNo`, `MediaTime`) are what the receive path reasons with, because they never wrap.
//!
//! Conversions:
//! - `SeqNo` = `cycles << 16 | wire`; [`SeqNo::wire`] keeps the low 16 bits.
//! - `MediaTime` counts ticks of a [`ClockRate`]; [`MediaTime::wire`] keeps the low 32 bits,
//!   [`MediaTime::to_duration`] divides by the rate (truncating to whole nanoseconds) and
//!   [`MediaTime::from_duration`] multiplies by it (truncating to whole ticks).
//! - `NtpShort` is the 16.16 fixed-point seconds format RTCP uses for LSR and DLSR.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A synchronisation source identifier (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(u32);

impl Ssrc {
    /// Wraps a 32-bit SSRC as read from or written to the wire.
    pub const fn new(value: u32) -> Self {
        Ssrc(value)
    }

    /// The 32-bit wire value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for Ssrc {
    fn from(value: u32) -> Self {
        Ssrc(value)
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A payload type number that is outside 0..=127.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payload type {0} is outside 0..=127")]
pub struct InvalidPayloadType(pub u8);

/// An RTP payload type, always within 0..=127 (the header has seven bits for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// G.711 µ-law (RFC 3551 static assignment).
    pub const PCMU: PayloadType = PayloadType(0);
    /// G.711 A-law (RFC 3551 static assignment).
    pub const PCMA: PayloadType = PayloadType(8);
    /// G.722 (RFC 3551 static assignment).
    pub const G722: PayloadType = PayloadType(9);
    /// Comfort noise (RFC 3389, static assignment).
    pub const CN: PayloadType = PayloadType(13);
    /// The dynamic payload type we use for telephone-event in our own offers.
    pub const DEFAULT_TELEPHONE_EVENT: PayloadType = PayloadType(101);

    /// Validates a payload type number.
    pub const fn new(value: u8) -> Result<Self, InvalidPayloadType> {
        if value <= 127 {
            Ok(PayloadType(value))
        } else {
            Err(InvalidPayloadType(value))
        }
    }

    /// The seven-bit number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Whether the payload type lies in the dynamic range 96..=127 (RFC 3551 §6).
    pub const fn is_dynamic(self) -> bool {
        self.0 >= 96
    }
}

impl std::str::FromStr for PayloadType {
    type Err = InvalidPayloadType;

    /// Decimal digits only (as SDP writes them), 0..=127.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPayloadType(u8::MAX));
        }
        s.parse::<u8>()
            .map_err(|_| InvalidPayloadType(u8::MAX))
            .and_then(PayloadType::new)
    }
}

impl TryFrom<u8> for PayloadType {
    type Error = InvalidPayloadType;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        PayloadType::new(value)
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of payload types, stored as a 128-bit mask so membership tests never allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadTypeSet(u128);

impl PayloadTypeSet {
    /// The empty set.
    pub const fn empty() -> Self {
        PayloadTypeSet(0)
    }

    /// Every payload type; useful where any well-formed packet should be plausible.
    pub const fn all() -> Self {
        PayloadTypeSet(u128::MAX)
    }

    /// This set plus `pt`.
    pub const fn with(self, pt: PayloadType) -> Self {
        PayloadTypeSet(self.0 | (1u128 << pt.0))
    }

    /// Adds `pt` in place.
    pub fn insert(&mut self, pt: PayloadType) {
        self.0 |= 1u128 << pt.0;
    }

    /// Whether `pt` is in the set.
    pub const fn contains(self, pt: PayloadType) -> bool {
        self.0 & (1u128 << pt.0) != 0
    }
}

impl FromIterator<PayloadType> for PayloadTypeSet {
    fn from_iter<I: IntoIterator<Item = PayloadType>>(iter: I) -> Self {
        let mut set = PayloadTypeSet::empty();
        for pt in iter {
            set.insert(pt);
        }
        set
    }
}

/// The 16-bit sequence number exactly as carried in a packet; it wraps after 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireSeq(u16);

impl WireSeq {
    /// Wraps a 16-bit wire sequence number.
    pub const fn new(value: u16) -> Self {
        WireSeq(value)
    }

    /// The 16-bit wire value.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The following sequence number, wrapping after 65535.
    pub const fn next(self) -> Self {
        WireSeq(self.0.wrapping_add(1))
    }
}

impl From<u16> for WireSeq {
    fn from(value: u16) -> Self {
        WireSeq(value)
    }
}

/// An extended sequence number: the wire number plus a count of wraps in the high bits, so
/// it only grows within one source (RFC 3550 Appendix A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(u64);

impl SeqNo {
    /// Wraps an already extended sequence number.
    pub const fn new(value: u64) -> Self {
        SeqNo(value)
    }

    /// The extended value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The low 16 bits, as they appear on the wire.
    pub const fn wire(self) -> WireSeq {
        WireSeq(self.0 as u16)
    }

    /// How many times the 16-bit wire number has wrapped.
    pub const fn cycles(self) -> u64 {
        self.0 >> 16
    }

    /// The following sequence number.
    pub const fn next(self) -> Self {
        SeqNo(self.0.wrapping_add(1))
    }

    /// `self + n`.
    pub const fn add(self, n: u64) -> Self {
        SeqNo(self.0.wrapping_add(n))
    }

    /// How far `self` is after `earlier` (`None` when it is before).
    pub const fn since(self, earlier: SeqNo) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The 32-bit timestamp exactly as carried in a packet; it wraps after 2³²−1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpTimestamp(u32);

impl RtpTimestamp {
    /// Wraps a 32-bit wire timestamp.
    pub const fn new(value: u32) -> Self {
        RtpTimestamp(value)
    }

    /// The 32-bit wire value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// This timestamp advanced by `ticks`, wrapping as the wire does.
    pub const fn wrapping_add(self, ticks: u64) -> Self {
        RtpTimestamp(self.0.wrapping_add(ticks as u32))
    }
}

/// A media clock rate in Hz; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClockRate(u32);

impl ClockRate {
    /// 8 kHz: G.711 and the RTP clock of G.722 (RFC 3551 §4.5.2).
    pub const HZ_8000: ClockRate = ClockRate(8000);
    /// 16 kHz wideband PCM.
    pub const HZ_16000: ClockRate = ClockRate(16000);
    /// 48 kHz, the RTP clock of Opus.
    pub const HZ_48000: ClockRate = ClockRate(48000);

    /// A rate of `hz` ticks per second; `None` for zero.
    pub const fn new(hz: u32) -> Option<Self> {
        if hz == 0 {
            None
        } else {
            Some(ClockRate(hz))
        }
    }

    /// Ticks per second.
    pub const fn hz(self) -> u32 {
        self.0
    }

    /// Whole ticks in `d` (truncated).
    pub fn ticks_in(self, d: Duration) -> u64 {
        let ticks = d.as_nanos() * u128::from(self.0) / NANOS_PER_SEC;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// The duration of `ticks` ticks (truncated to whole nanoseconds).
    pub fn duration_of(self, ticks: u64) -> Duration {
        let nanos = u128::from(ticks) * NANOS_PER_SEC / u128::from(self.0);
        let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
        Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
    }
}

/// A point or span of media time: a tick count in a clock rate.
///
/// As a point it is an extended RTP timestamp (low 32 bits = wire value); as a span it is a
/// length such as one frame or the interarrival jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaTime {
    ticks: u64,
    rate: ClockRate,
}

impl MediaTime {
    /// `ticks` ticks of `rate`.
    pub const fn new(ticks: u64, rate: ClockRate) -> Self {
        MediaTime { ticks, rate }
    }

    /// Zero ticks of `rate`.
    pub const fn zero(rate: ClockRate) -> Self {
        MediaTime { ticks: 0, rate }
    }

    /// The duration `d` in ticks of `rate` (truncated).
    pub fn from_duration(d: Duration, rate: ClockRate) -> Self {
        MediaTime {
            ticks: rate.ticks_in(d),
            rate,
        }
    }

    /// The tick count.
    pub const fn ticks(self) -> u64 {
        self.ticks
    }

    /// The clock rate the ticks count in.
    pub const fn rate(self) -> ClockRate {
        self.rate
    }

    /// The tick count as a duration.
    pub fn to_duration(self) -> Duration {
        self.rate.duration_of(self.ticks)
    }

    /// The low 32 bits, as they appear on the wire.
    pub const fn wire(self) -> RtpTimestamp {
        RtpTimestamp(self.ticks as u32)
    }

    /// `self` advanced by `ticks` (saturating).
    pub const fn add_ticks(self, ticks: u64) -> Self {
        MediaTime {
            ticks: self.ticks.saturating_add(ticks),
            rate: self.rate,
        }
    }

    /// The span from `earlier` to `self`; `None` if `earlier` is later or in another rate.
    pub fn since(self, earlier: MediaTime) -> Option<MediaTime> {
        if self.rate != earlier.rate {
            return None;
        }
        self.ticks
            .checked_sub(earlier.ticks)
            .map(|ticks| MediaTime::new(ticks, self.rate))
    }
}

/// Seconds in 16.16 fixed point: the middle 32 bits of an NTP timestamp (RTCP LSR, DLSR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NtpShort(u32);

impl NtpShort {
    /// Wraps a 16.16 value as read from or written to the wire.
    pub const fn new(value: u32) -> Self {
        NtpShort(value)
    }

    /// The 32-bit wire value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// `d` in units of 1/65536 s, saturating at about 18 hours.
    pub fn from_duration(d: Duration) -> Self {
        let units = d.as_nanos() * 65_536 / NANOS_PER_SEC;
        NtpShort(u32::try_from(units).unwrap_or(u32::MAX))
    }

    /// The value as a duration.
    pub fn to_duration(self) -> Duration {
        let nanos = u128::from(self.0) * NANOS_PER_SEC / 65_536;
        Duration::from_nanos(nanos as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_type_bounds() {
        assert_eq!(PayloadType::new(127).map(PayloadType::get), Ok(127));
        assert_eq!(PayloadType::new(128), Err(InvalidPayloadType(128)));
        assert!(PayloadType::try_from(255).is_err());
    }

    #[test]
    fn payload_type_set_membership() {
        let set = PayloadTypeSet::empty()
            .with(PayloadType::PCMU)
            .with(PayloadType::new(127).unwrap());
        assert!(set.contains(PayloadType::PCMU));
        assert!(set.contains(PayloadType::new(127).unwrap()));
        assert!(!set.contains(PayloadType::PCMA));
    }

    #[test]
    fn seq_no_wire_and_cycles() {
        let s = SeqNo::new((3 << 16) | 0xfffe);
        assert_eq!(s.wire(), WireSeq::new(0xfffe));
        assert_eq!(s.cycles(), 3);
        assert_eq!(s.add(2).wire(), WireSeq::new(0));
        assert_eq!(s.add(2).cycles(), 4);
        assert_eq!(s.add(2).since(s), Some(2));
        assert_eq!(s.since(s.add(2)), None);
    }

    #[test]
    fn media_time_conversions() {
        let rate = ClockRate::HZ_8000;
        let frame = MediaTime::from_duration(Duration::from_millis(20), rate);
        assert_eq!(frame.ticks(), 160);
        assert_eq!(frame.to_duration(), Duration::from_millis(20));
        let big = MediaTime::new((1 << 32) + 5, rate);
        assert_eq!(big.wire(), RtpTimestamp::new(5));
        assert_eq!(
            big.since(frame).map(MediaTime::ticks),
            Some((1 << 32) + 5 - 160)
        );
        assert_eq!(
            frame.since(MediaTime::zero(ClockRate::HZ_16000)),
            None,
            "different rates do not subtract"
        );
        assert_eq!(ClockRate::new(0), None);
        assert_eq!(
            ClockRate::HZ_48000.duration_of(48_000 * 3 + 24_000),
            Duration::from_millis(3500)
        );
    }

    #[test]
    fn ntp_short_round_trip() {
        let d = Duration::from_millis(1500);
        assert_eq!(NtpShort::from_duration(d).get(), 0x0001_8000);
        assert_eq!(NtpShort::new(0x0001_8000).to_duration(), d);
    }
}
