//! RTCP for one RTP leg (RFC 3550 §6), sans-IO.
//!
//! [`RtcpSession`] schedules our reports, writes them, and digests the peer's:
//! - Every interval (5 s nominal, the first at half that, each randomised over
//!   [0.5, 1.5] × — RFC 3550 §6.3.1 and §6.2) [`RtcpSession::handle_timeout`] writes one
//!   compound packet: an SR if we sent RTP during the last two intervals, else an RR (§6.4),
//!   with a report block on the source we receive, then an SDES CNAME.
//! - [`RtcpSession::handle_packet`] reads the peer's compound packets: its last SR (for the
//!   LSR/DLSR we echo back), the report block about our SSRC (loss, jitter and round-trip
//!   time, §6.4.1) and BYE. Other packet types (APP, feedback, XR, unknown) are skipped.
//! - [`RtcpSession::bye`] writes the final compound packet when the call ends.
//!
//! A two-party leg never reaches the bandwidth-derived interval (a G.711 stream's 5 % share
//! allows a report every ~0.4 s), so the 5 s minimum always applies; and with two members
//! there is no timer reconsideration, hence no e − 3/2 compensation either.
//!
//! # Time
//! `now` (monotonic) drives the schedule and the delay since the peer's last SR; the
//! `wallclock` argument only becomes NTP timestamps (ours in SRs, the arrival time in the
//! round-trip calculation). Both are the true times, not a media tick's: the arrival of a
//! datagram in [`RtcpSession::handle_packet`], the sending of the report in
//! [`RtcpSession::handle_timeout`]. The peer's round-trip time is its arrival time minus
//! LSR minus our DLSR, so any gap between the real and the stated times lands in it. The RTP timestamp in our SR is the one the sender's tick counter
//! reaches at `now`, counted from [`RtcpSession::set_media_epoch`].
//!
//! # Transport
//! Nothing here touches a socket. Without rtcp-mux, the caller sends these packets to the
//! peer's RTCP port (RTP port + 1, or `a=rtcp`). When rtcp-mux (RFC 5761) was negotiated it
//! sends them from and to the RTP port instead, and sorts what arrives there with
//! [`classify`](super::packet::classify); the packets themselves are the same.
//!
//! # Wire format
//! Received packets are parsed with the zero-copy parsers of `rtcp-types`, walking the
//! compound ourselves so a malformed packet of a type we ignore cannot hide the rest. Our
//! own packets are written by hand because that crate's builders allocate, and the media
//! tick allocates nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtcp_types::{Bye, ReceiverReport, RtcpPacketParser, SenderReport};

use super::session::{RecvSession, ReportBlock, SendSession};
use super::types::{ClockRate, NtpShort, RtpTimestamp, Ssrc};

/// The nominal report interval: RFC 3550's 5 s minimum.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The longest compound packet [`RtcpSession`] writes; a buffer this long always suffices.
pub const MAX_COMPOUND_LEN: usize = SR_LEN + BLOCK_LEN + MAX_SDES_LEN;

const VERSION: u8 = 2;
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
const SDES_CNAME: u8 = 1;
const MAX_CNAME_LEN: usize = 255;

const HEADER_LEN: usize = 4;
const SR_LEN: usize = 28;
const RR_LEN: usize = 8;
const BLOCK_LEN: usize = 24;
const BYE_LEN: usize = 8;
/// Header, SSRC, CNAME item (type, length, up to 255 octets), end octet, padding to 32 bits.
const MAX_SDES_LEN: usize = HEADER_LEN + ((4 + 2 + MAX_CNAME_LEN + 1 + 3) & !3);

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a received RTCP datagram was rejected, or ours could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// The datagram was empty.
    #[error("empty RTCP datagram")]
    Empty,
    /// A packet header or body ran past the end of the datagram.
    #[error("RTCP packet at byte {offset} is truncated")]
    Truncated {
        /// Where the offending packet starts.
        offset: usize,
    },
    /// A packet did not carry version 2.
    #[error("RTCP packet at byte {offset} has version {version}, not 2")]
    Version {
        /// Where the offending packet starts.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// Padding on a packet other than the last, or a padding count that does not fit.
    #[error("RTCP packet at byte {offset} has invalid padding")]
    Padding {
        /// Where the offending packet starts.
        offset: usize,
    },
    /// An SR, RR or BYE whose declared contents do not fit its length.
    #[error("malformed RTCP packet of type {packet_type} at byte {offset}")]
    Malformed {
        /// Where the offending packet starts.
        offset: usize,
        /// Its packet type.
        packet_type: u8,
    },
    /// The output buffer cannot hold the packet.
    #[error("RTCP output buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// The length the packet needs.
        needed: usize,
    },
}

/// A 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, the fraction in the low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NtpTime(u64);

impl NtpTime {
    /// Wraps a 32.32 value as read from or written to the wire.
    pub const fn new(value: u64) -> Self {
        NtpTime(value)
    }

    /// The 64-bit wire value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The NTP time of `t`; seconds wrap into the next era after 2036 as RFC 5905 allows.
    pub fn from_system_time(t: SystemTime) -> Self {
        let offset = i128::from(NTP_UNIX_OFFSET_SECS) * NANOS_PER_SEC as i128;
        let nanos = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => offset + d.as_nanos() as i128,
            Err(before) => offset - before.duration().as_nanos() as i128,
        }
        .max(0) as u128;
        let secs = (nanos / NANOS_PER_SEC) as u32;
        let frac = ((nanos % NANOS_PER_SEC) << 32) / NANOS_PER_SEC;
        NtpTime((u64::from(secs) << 32) | frac as u64)
    }

    /// The middle 32 bits, as LSR carries them.
    pub const fn middle(self) -> NtpShort {
        NtpShort::new((self.0 >> 16) as u32)
    }
}

/// The peer's most recent sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSenderReport {
    /// The sender's SSRC.
    pub ssrc: Ssrc,
    /// Its NTP timestamp.
    pub ntp: NtpTime,
    /// The RTP timestamp matching `ntp`.
    pub rtp_timestamp: RtpTimestamp,
    /// Packets it had sent (wrapping at 2³²).
    pub packet_count: u32,
    /// Payload octets it had sent (wrapping at 2³²).
    pub octet_count: u32,
    /// When it arrived.
    pub arrival: Instant,
}

/// Counts and the peer's view of our stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RtcpStats {
    /// Compound reports written (excluding the BYE packet).
    pub reports_sent: u64,
    /// Of those, sender reports.
    pub sender_reports_sent: u64,
    /// Compound packets received and accepted.
    pub reports_received: u64,
    /// Sender reports received.
    pub sender_reports_received: u64,
    /// Report blocks received about our SSRC; the `remote_*` fields are from the latest.
    pub remote_reports: u64,
    /// Fraction of our packets the peer lost in its last interval, 0.0–1.0 (wire value / 256).
    pub remote_fraction_lost: f64,
    /// Our packets the peer lost in total (negative with duplicates).
    pub remote_cumulative_lost: i32,
    /// The extended highest sequence number the peer received from us.
    pub remote_highest_seq: u32,
    /// Interarrival jitter of our stream at the peer, in milliseconds.
    pub remote_jitter_ms: f64,
    /// Round-trip time from the latest report block that echoed one of our SRs.
    pub rtt_ms: Option<f64>,
    /// The peer sent BYE.
    pub peer_bye: bool,
    /// Datagrams rejected by [`RtcpSession::handle_packet`].
    pub parse_errors: u64,
    /// Reports skipped because the output buffer was too small.
    pub write_errors: u64,
}

/// Per-leg RTCP state: report schedule, our sender counts, and what the peer told us.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    local_ssrc: Ssrc,
    cname: [u8; MAX_CNAME_LEN],
    cname_len: usize,
    clock_rate: ClockRate,
    media_epoch: Instant,
    rng: fastrand::Rng,
    /// `None` once BYE has been written.
    next_report: Option<Instant>,
    /// Packets sent as of the last report and the one before (RFC 3550 §6.4 `we_sent`).
    sent_marks: [u64; 2],
    peer_sr: Option<PeerSenderReport>,
    stats: RtcpStats,
}

/// What one received compound packet said, applied only once all of it parsed.
#[derive(Default)]
struct Incoming {
    report: bool,
    sr: Option<(Ssrc, NtpTime, RtpTimestamp, u32, u32)>,
    about_us: Option<ReportBlock>,
    bye: bool,
}

impl RtcpSession {
    /// A session whose report times are randomised from an entropy-seeded generator.
    pub fn new(local_ssrc: Ssrc, cname: &str, clock_rate: ClockRate, now: Instant) -> Self {
        Self::with_seed(local_ssrc, cname, clock_rate, now, fastrand::u64(..))
    }

    /// A session whose report times follow from `seed`, for reproducible runs.
    pub fn with_seed(
        local_ssrc: Ssrc,
        cname: &str,
        clock_rate: ClockRate,
        now: Instant,
        seed: u64,
    ) -> Self {
        let mut len = cname.len().min(MAX_CNAME_LEN);
        while !cname.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0u8; MAX_CNAME_LEN];
        buf[..len].copy_from_slice(&cname.as_bytes()[..len]);
        let mut rng = fastrand::Rng::with_seed(seed);
        let first = now + randomise(&mut rng, REPORT_INTERVAL / 2);
        RtcpSession {
            local_ssrc,
            cname: buf,
            cname_len: len,
            clock_rate,
            media_epoch: now,
            rng,
            next_report: Some(first),
            sent_marks: [0; 2],
            peer_sr: None,
            stats: RtcpStats::default(),
        }
    }

    /// Our SSRC, as in our reports.
    pub fn local_ssrc(&self) -> Ssrc {
        self.local_ssrc
    }

    /// Sets the instant of the sender's media tick 0 (by default the construction time).
    ///
    /// The SR's RTP timestamp is `send.timestamp_at(0)` plus the media time since then, so
    /// the peer can line our RTP clock up with our NTP clock.
    pub fn set_media_epoch(&mut self, tick_zero: Instant) {
        self.media_epoch = tick_zero;
    }

    /// Changes the RTP clock our reports count in (a re-INVITE to a codec with another clock).
    pub fn set_clock_rate(&mut self, clock_rate: ClockRate) {
        self.clock_rate = clock_rate;
    }

    /// Counts and the peer's latest view of our stream.
    pub fn stats(&self) -> RtcpStats {
        self.stats
    }

    /// The peer's latest sender report, if any.
    pub fn peer_sender_report(&self) -> Option<PeerSenderReport> {
        self.peer_sr
    }

    /// When the next report is due; `None` after [`RtcpSession::bye`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    /// Writes the compound report into `out` if one is due at `now`; returns its length.
    ///
    /// `recv` supplies the report block (and starts its next loss interval) and learns the
    /// peer's last SR; `send` makes it an SR. `out` should hold [`MAX_COMPOUND_LEN`] bytes:
    /// if it is too short the report is skipped and counted in `write_errors`.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        recv: Option<&mut RecvSession>,
        send: Option<&SendSession>,
        wallclock: SystemTime,
        out: &mut [u8],
    ) -> Option<usize> {
        let due = self.next_report?;
        if now < due {
            return None;
        }
        self.next_report = Some(now + randomise(&mut self.rng, REPORT_INTERVAL));

        let sent = send.map_or(0, SendSession::packets_sent);
        let we_sent = send.is_some() && sent > self.sent_marks[1];
        self.sent_marks = [sent, self.sent_marks[0]];

        // Sized for a report block before asking `recv` for one, which starts a new interval.
        let needed = if we_sent { SR_LEN } else { RR_LEN } + BLOCK_LEN + self.sdes_len();
        if out.len() < needed {
            self.stats.write_errors += 1;
            return None;
        }

        let block = recv.and_then(|recv| {
            if let Some(sr) = self.peer_sr {
                // LSR must echo an SR of the source the block is about.
                if recv.ssrc() == Some(sr.ssrc) {
                    recv.note_sender_report(sr.arrival, sr.ntp.middle());
                }
            }
            recv.report_block(now)
        });

        let mut w = Writer { out, pos: 0 };
        match send.filter(|_| we_sent) {
            Some(send) => {
                let elapsed = now.saturating_duration_since(self.media_epoch);
                let rtp = send
                    .timestamp_at(0)
                    .wrapping_add(self.clock_rate.ticks_in(elapsed));
                w.header(
                    usize::from(block.is_some()),
                    PT_SR,
                    SR_LEN + block_len(&block),
                );
                w.u32(self.local_ssrc.get());
                w.u64(NtpTime::from_system_time(wallclock).get());
                w.u32(rtp.get());
                w.u32(send.packets_sent() as u32);
                w.u32(send.octets_sent() as u32);
                self.stats.sender_reports_sent += 1;
            }
            None => {
                w.header(
                    usize::from(block.is_some()),
                    PT_RR,
                    RR_LEN + block_len(&block),
                );
                w.u32(self.local_ssrc.get());
            }
        }
        if let Some(b) = &block {
            w.block(b);
        }
        self.write_sdes(&mut w);
        self.stats.reports_sent += 1;
        Some(w.pos)
    }

    /// Writes the final compound packet (empty RR, SDES CNAME, BYE) and stops reporting.
    pub fn bye(&mut self, out: &mut [u8]) -> Result<usize, RtcpError> {
        let needed = RR_LEN + self.sdes_len() + BYE_LEN;
        if out.len() < needed {
            return Err(RtcpError::BufferTooSmall { needed });
        }
        let mut w = Writer { out, pos: 0 };
        // A compound packet must open with a report, even an empty one (RFC 3550 §6.1).
        w.header(0, PT_RR, RR_LEN);
        w.u32(self.local_ssrc.get());
        self.write_sdes(&mut w);
        w.header(1, PT_BYE, BYE_LEN);
        w.u32(self.local_ssrc.get());
        self.next_report = None;
        Ok(w.pos)
    }

    /// Digests one compound RTCP datagram received at `now` (`wallclock` for the RTT).
    ///
    /// Nothing is applied unless the whole datagram is well formed.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        bytes: &[u8],
    ) -> Result<(), RtcpError> {
        let incoming = match self.parse(bytes) {
            Ok(incoming) => incoming,
            Err(e) => {
                self.stats.parse_errors += 1;
                return Err(e);
            }
        };
        if incoming.report {
            self.stats.reports_received += 1;
        }
        if let Some((ssrc, ntp, rtp_timestamp, packet_count, octet_count)) = incoming.sr {
            self.stats.sender_reports_received += 1;
            self.peer_sr = Some(PeerSenderReport {
                ssrc,
                ntp,
                rtp_timestamp,
                packet_count,
                octet_count,
                arrival: now,
            });
        }
        if let Some(b) = incoming.about_us {
            let st = &mut self.stats;
            st.remote_reports += 1;
            st.remote_fraction_lost = f64::from(b.fraction_lost) / 256.0;
            st.remote_cumulative_lost = b.cumulative_lost;
            st.remote_highest_seq = b.extended_highest_seq;
            st.remote_jitter_ms = f64::from(b.jitter) * 1000.0 / f64::from(self.clock_rate.hz());
            if let Some(rtt) = round_trip(wallclock, b.last_sr, b.delay_since_last_sr) {
                st.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
            }
        }
        if incoming.bye {
            self.stats.peer_bye = true;
        }
        Ok(())
    }

    fn parse(&self, bytes: &[u8]) -> Result<Incoming, RtcpError> {
        if bytes.is_empty() {
            return Err(RtcpError::Empty);
        }
        let mut inc = Incoming::default();
        let mut offset = 0;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let [first, packet_type, len_hi, len_lo, ..] = *rest else {
                return Err(RtcpError::Truncated { offset });
            };
            let version = first >> 6;
            if version != VERSION {
                return Err(RtcpError::Version { offset, version });
            }
            let len = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
            let Some(packet) = rest.get(..len) else {
                return Err(RtcpError::Truncated { offset });
            };
            if first & 0x20 != 0 {
                let pad = usize::from(packet[len - 1]);
                if offset + len != bytes.len() || pad == 0 || pad > len - HEADER_LEN {
                    return Err(RtcpError::Padding { offset });
                }
            }
            let malformed = |_| RtcpError::Malformed {
                offset,
                packet_type,
            };
            match packet_type {
                PT_SR => {
                    let sr = SenderReport::parse(packet).map_err(malformed)?;
                    inc.report = true;
                    inc.sr = Some((
                        Ssrc::new(sr.ssrc()),
                        NtpTime::new(sr.ntp_timestamp()),
                        RtpTimestamp::new(sr.rtp_timestamp()),
                        sr.packet_count(),
                        sr.octet_count(),
                    ));
                    self.take_block(&mut inc, sr.report_blocks());
                }
                PT_RR => {
                    let rr = ReceiverReport::parse(packet).map_err(malformed)?;
                    inc.report = true;
                    self.take_block(&mut inc, rr.report_blocks());
                }
                PT_BYE => {
                    let bye = Bye::parse(packet).map_err(malformed)?;
                    // A BYE for our own SSRC is our packet looped back, not the peer leaving.
                    inc.bye |= bye.ssrcs().any(|s| s != self.local_ssrc.get());
                }
                // SDES, APP, feedback, XR and unknown types carry nothing we act on.
                _ => {}
            }
            offset += len;
        }
        Ok(inc)
    }

    fn take_block<'a>(
        &self,
        inc: &mut Incoming,
        blocks: impl Iterator<Item = rtcp_types::ReportBlock<'a>>,
    ) {
        for b in blocks.filter(|b| b.ssrc() == self.local_ssrc.get()) {
            // Sign-extend the 24-bit two's complement count.
            let lost = ((b.cumulative_lost() << 8) as i32) >> 8;
            inc.about_us = Some(ReportBlock {
                ssrc: self.local_ssrc,
                fraction_lost: b.fraction_lost(),
                cumulative_lost: lost,
                extended_highest_seq: b.extended_sequence_number(),
                jitter: b.interarrival_jitter(),
                last_sr: NtpShort::new(b.last_sender_report_timestamp()),
                delay_since_last_sr: NtpShort::new(b.delay_since_last_sender_report_timestamp()),
            });
        }
    }

    fn sdes_len(&self) -> usize {
        HEADER_LEN + ((4 + 2 + self.cname_len + 1 + 3) & !3)
    }

    fn write_sdes(&self, w: &mut Writer<'_>) {
        let len = self.sdes_len();
        let start = w.pos;
        w.header(1, PT_SDES, len);
        w.u32(self.local_ssrc.get());
        w.u8(SDES_CNAME);
        w.u8(self.cname_len as u8);
        w.bytes(&self.cname[..self.cname_len]);
        // The item list ends with a null octet, then nulls up to the 32-bit boundary.
        while w.pos < start + len {
            w.u8(0);
        }
    }
}

/// RTT = A − LSR − DLSR in 16.16 seconds (RFC 3550 §6.4.1); `None` without an echoed SR or
/// when the result is negative (the wallclock stepped back).
fn round_trip(wallclock: SystemTime, lsr: NtpShort, dlsr: NtpShort) -> Option<Duration> {
    if lsr.get() == 0 {
        return None;
    }
    let arrival = NtpTime::from_system_time(wallclock).middle().get();
    let rtt = arrival.wrapping_sub(lsr.get()).wrapping_sub(dlsr.get());
    (rtt < 0x8000_0000).then(|| NtpShort::new(rtt).to_duration())
}

/// `base` × a uniform factor in [0.5, 1.5) (RFC 3550 §6.3.1).
fn randomise(rng: &mut fastrand::Rng, base: Duration) -> Duration {
    base.mul_f64(0.5 + rng.f64())
}

fn block_len(block: &Option<ReportBlock>) -> usize {
    if block.is_some() {
        BLOCK_LEN
    } else {
        0
    }
}

/// Big-endian writer over a buffer whose length the caller has already checked.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    /// The common header of a packet `len` bytes long (a multiple of 4) with `count` items.
    fn header(&mut self, count: usize, packet_type: u8, len: usize) {
        self.u8((VERSION << 6) | count as u8);
        self.u8(packet_type);
        self.bytes(&((len / 4 - 1) as u16).to_be_bytes());
    }

    fn block(&mut self, b: &ReportBlock) {
        self.u32(b.ssrc.get());
        let lost = (b.cumulative_lost as u32) & 0x00ff_ffff;
        self.u32((u32::from(b.fraction_lost) << 24) | lost);
        self.u32(b.extended_highest_seq);
        self.u32(b.jitter);
        self.u32(b.last_sr.get());
        self.u32(b.delay_since_last_sr.get());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packet::{RtpHeader, RtpPacket};
    use crate::rtp::session::RecvConfig;
    use crate::rtp::types::{PayloadType, PayloadTypeSet, WireSeq};
    use proptest::prelude::*;
    use rtcp_types::{Compound, Packet, RtcpPacketParserExt};
    use std::collections::VecDeque;
    use std::net::SocketAddr;

    const OURS: Ssrc = Ssrc::new(0x0bad_cafe);
    const RATE: ClockRate = ClockRate::HZ_8000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A wallclock in 2023 with a whole number of seconds.
    fn wall0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_690_000_000)
    }

    fn recv_session() -> RecvSession {
        let mut c = RecvConfig::new(RATE, PayloadTypeSet::empty().with(PayloadType::PCMU));
        c.probation = 1;
        RecvSession::new(c)
    }

    fn send_session(ssrc: Ssrc, ts_base: u32) -> SendSession {
        SendSession::new(
            ssrc,
            WireSeq::new(1000),
            RtpTimestamp::new(ts_base),
            PayloadType::PCMU,
            RATE,
            ms(20),
        )
    }

    fn rtp(send: &mut SendSession, tick: u64) -> RtpHeader {
        let mut buf = [0u8; 200];
        let n = send.write(tick, &[0xff; 160], &mut buf).unwrap();
        RtpPacket::parse(&buf[..n]).unwrap().header
    }

    // ---- NTP ----

    #[test]
    fn ntp_from_system_time() {
        assert_eq!(
            NtpTime::from_system_time(UNIX_EPOCH).get(),
            0x83aa_7e80_0000_0000,
            "1970 is 2 208 988 800 s after 1900"
        );
        let half = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(NtpTime::from_system_time(half).get(), 0x83aa_7e81_8000_0000);
        assert_eq!(
            NtpTime::from_system_time(half).middle(),
            NtpShort::new(0x7e81_8000)
        );
        // 2036-02-07 06:28:16 UTC starts NTP era 1: the seconds wrap to zero.
        let era1 = UNIX_EPOCH + Duration::from_secs((1u64 << 32) - NTP_UNIX_OFFSET_SECS);
        assert_eq!(NtpTime::from_system_time(era1 + ms(250)).get(), 0x4000_0000);
        let before_1900 = UNIX_EPOCH - Duration::from_secs(NTP_UNIX_OFFSET_SECS + 5);
        assert_eq!(NtpTime::from_system_time(before_1900).get(), 0);
    }

    // ---- Two parties over a 40 ms path ----

    struct Party {
        rtcp: RtcpSession,
        recv: RecvSession,
        send: SendSession,
        wall_base: SystemTime,
        addr: SocketAddr,
    }

    enum Payload {
        Rtp(RtpHeader, u64),
        /// With what the sender's receive side reported, to check on arrival.
        Rtcp(Vec<u8>, Option<Expect>),
    }

    #[derive(Clone, Copy, Debug)]
    struct Expect {
        cumulative: i32,
        fraction: u8,
        jitter_ticks: u64,
    }

    struct Flight {
        at: Instant,
        to_b: bool,
        payload: Payload,
    }

    fn dropped(i: u64) -> bool {
        i % 10 == 3
    }

    /// A sends to B with every tenth packet lost and 0/5 ms alternating extra delay; B sends
    /// to A cleanly. RTCP takes 40 ms each way. B's wallclock is 3.7 s ahead of A's, which
    /// must not matter: each RTT uses one side's clock only.
    #[test]
    fn two_parties_exchange_reports() {
        let t0 = Instant::now();
        let mut a = Party {
            rtcp: RtcpSession::with_seed(OURS, "a@example.org", RATE, t0, 1),
            recv: recv_session(),
            send: send_session(OURS, 5000),
            wall_base: wall0(),
            addr: "192.0.2.1:4000".parse().unwrap(),
        };
        let mut b = Party {
            rtcp: RtcpSession::with_seed(Ssrc::new(0xb0b), "b@example.net", RATE, t0, 2),
            recv: recv_session(),
            send: send_session(Ssrc::new(0xb0b), 77),
            wall_base: wall0() + ms(3700),
            addr: "198.51.100.2:5000".parse().unwrap(),
        };
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        // Highest A packet index B has received, at B's previous report and now.
        let (mut b_prev_high, mut b_high): (i64, i64) = (-1, -1);
        let mut checked = 0;
        let mut rtt_seen = 0;

        for t in 0..=30_000u64 {
            let now = t0 + ms(t);
            // Deliveries due now, in order of arrival time.
            while let Some(i) = flights.iter().position(|f| f.at <= now) {
                let f = flights.remove(i).unwrap();
                let (to, from_addr) = if f.to_b {
                    (&mut b, a.addr)
                } else {
                    (&mut a, b.addr)
                };
                match f.payload {
                    Payload::Rtp(h, index) => {
                        to.recv.receive(now, from_addr, &h);
                        if f.to_b {
                            b_high = b_high.max(index as i64);
                        }
                    }
                    Payload::Rtcp(bytes, expect) => {
                        let wall = to.wall_base + (now - t0);
                        to.rtcp.handle_packet(now, wall, &bytes).unwrap();
                        let st = to.rtcp.stats();
                        if let Some(e) = expect {
                            assert_eq!(st.remote_cumulative_lost, e.cumulative, "at {t} ms");
                            assert_eq!(
                                st.remote_fraction_lost,
                                f64::from(e.fraction) / 256.0,
                                "at {t} ms"
                            );
                            assert_eq!(st.remote_jitter_ms, e.jitter_ticks as f64 / 8.0);
                            checked += 1;
                        }
                        if let Some(rtt) = st.rtt_ms {
                            assert!((rtt - 80.0).abs() <= 1.0, "rtt {rtt} ms at {t} ms");
                            rtt_seen += 1;
                        }
                    }
                }
            }
            // Reports.
            for (side, p) in [(true, &mut a), (false, &mut b)] {
                let wall = p.wall_base + (now - t0);
                if let Some(n) =
                    p.rtcp
                        .handle_timeout(now, Some(&mut p.recv), Some(&p.send), wall, &mut buf)
                {
                    assert_eq!(buf[1], PT_SR, "both sides send media, so both send SRs");
                    let expect = (!side && b_high >= 0).then(|| {
                        let lost_to = |h: i64| (0..=h).filter(|&i| dropped(i as u64)).count();
                        let lost_interval = lost_to(b_high) - lost_to(b_prev_high);
                        let expected_interval = (b_high - b_prev_high) as usize;
                        b_prev_high = b_high;
                        Expect {
                            cumulative: lost_to(b_high) as i32,
                            fraction: (lost_interval * 256)
                                .checked_div(expected_interval)
                                .map_or(0, |f| f as u8),
                            jitter_ticks: p.recv.jitter().ticks(),
                        }
                    });
                    flights.push_back(Flight {
                        at: now + ms(40),
                        to_b: side,
                        payload: Payload::Rtcp(buf[..n].to_vec(), expect),
                    });
                }
            }
            // Media, one frame per 20 ms tick.
            if t % 20 == 0 {
                let tick = t / 20;
                let h = rtp(&mut a.send, tick);
                if !dropped(tick) {
                    let extra = if tick % 2 == 1 { 5 } else { 0 };
                    flights.push_back(Flight {
                        at: now + ms(40 + extra),
                        to_b: true,
                        payload: Payload::Rtp(h, tick),
                    });
                }
                let h = rtp(&mut b.send, tick);
                flights.push_back(Flight {
                    at: now + ms(40),
                    to_b: false,
                    payload: Payload::Rtp(h, tick),
                });
            }
        }

        assert!(checked >= 4, "only {checked} reports from B checked");
        assert!(rtt_seen >= 3, "only {rtt_seen} RTT samples at A");
        let sa = a.rtcp.stats();
        let sb = b.rtcp.stats();
        assert!((0.09..=0.11).contains(&sa.remote_fraction_lost), "{sa:?}");
        // Alternating 0/5 ms extra delay is |D| = 40 ticks, thinned a little by the losses.
        assert!(
            (3.5..=5.0).contains(&sa.remote_jitter_ms),
            "jitter {} ms",
            sa.remote_jitter_ms
        );
        assert!(sa.sender_reports_received >= 4 && sb.sender_reports_received >= 4);
        assert_eq!(sa.reports_received, sa.sender_reports_received);
        let rtt_b = sb.rtt_ms.expect("B measured RTT too");
        assert!((rtt_b - 80.0).abs() <= 1.0, "B's rtt {rtt_b}");
        assert_eq!(sb.remote_cumulative_lost, 0, "B's stream is clean");
        assert_eq!(sa.parse_errors + sb.parse_errors, 0);
        assert!(!sa.peer_bye && !sb.peer_bye);

        // A's last SR as B saw it: packet count, and an RTP timestamp on A's media timeline.
        let sr = b.rtcp.peer_sender_report().unwrap();
        assert_eq!(sr.ssrc, OURS);
        let since_epoch_s = (sr.ntp.get() as f64 / 4_294_967_296.0)
            - ((wall0().duration_since(UNIX_EPOCH).unwrap().as_secs() + NTP_UNIX_OFFSET_SECS)
                as f64);
        let ticks = sr.rtp_timestamp.get().wrapping_sub(5000);
        assert!(
            (f64::from(ticks) - since_epoch_s * 8000.0).abs() <= 8.0,
            "rtp {ticks} vs {since_epoch_s} s"
        );
        assert!(sr.packet_count > 0 && sr.octet_count == sr.packet_count * 160);
    }

    // ---- Schedule ----

    fn report_times(seed: u64, n: usize) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(OURS, "x", RATE, t0, seed);
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        let mut times = Vec::new();
        while times.len() < n {
            let due = s.poll_timeout().unwrap();
            assert_eq!(
                s.handle_timeout(due - ms(1), None, None, wall0(), &mut buf),
                None,
                "not before it is due"
            );
            assert!(s
                .handle_timeout(due, None, None, wall0(), &mut buf)
                .is_some());
            times.push(due - t0);
        }
        times
    }

    #[test]
    fn report_interval_is_randomised_around_five_seconds() {
        let mut gaps = Vec::new();
        for seed in 0..20 {
            let times = report_times(seed, 50);
            assert!(
                (1250..3750).contains(&times[0].as_millis()),
                "first at {:?}",
                times[0]
            );
            gaps.extend(times.windows(2).map(|w| w[1] - w[0]));
        }
        assert!(gaps.iter().all(|g| (ms(2500)..ms(7500)).contains(g)));
        let min = gaps.iter().min().unwrap();
        let max = gaps.iter().max().unwrap();
        assert!(*min < ms(2700) && *max > ms(7300), "range {min:?}..{max:?}");
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        assert!((ms(4800)..ms(5200)).contains(&mean), "mean {mean:?}");

        assert_eq!(
            report_times(7, 10),
            report_times(7, 10),
            "seeded: reproducible"
        );
        assert_ne!(report_times(7, 10), report_times(8, 10));
    }

    #[test]
    fn sender_report_only_while_sending() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(OURS, "x", RATE, t0, 3);
        let mut send = send_session(OURS, 0);
        let mut recv = recv_session();
        let peer: SocketAddr = "192.0.2.9:7000".parse().unwrap();
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        let mut tick = 0;
        let mut kinds = Vec::new();
        let mut step = |sending: bool, s: &mut RtcpSession, kinds: &mut Vec<u8>| {
            let due = s.poll_timeout().unwrap();
            while t0 + ms(tick * 20) < due {
                if sending {
                    rtp(&mut send, tick);
                }
                let mut h = RtpHeader {
                    marker: false,
                    payload_type: PayloadType::PCMU,
                    seq: WireSeq::new(tick as u16),
                    timestamp: RtpTimestamp::new(tick as u32 * 160),
                    ssrc: Ssrc::new(42),
                };
                h.marker = tick == 0;
                recv.receive(t0 + ms(tick * 20), peer, &h);
                tick += 1;
            }
            let n = s
                .handle_timeout(due, Some(&mut recv), Some(&send), wall0(), &mut buf)
                .unwrap();
            kinds.push(buf[1]);
            n
        };
        step(false, &mut s, &mut kinds);
        step(true, &mut s, &mut kinds);
        step(false, &mut s, &mut kinds);
        step(false, &mut s, &mut kinds);
        step(false, &mut s, &mut kinds);
        // RFC 3550 §6.4: a sender is one that sent during the last two intervals.
        assert_eq!(kinds, [PT_RR, PT_SR, PT_SR, PT_RR, PT_RR]);
        let st = s.stats();
        assert_eq!((st.reports_sent, st.sender_reports_sent), (5, 2));

        // No send session at all: RR, still with the block about the source we hear.
        let mut s = RtcpSession::with_seed(OURS, "x", RATE, t0, 4);
        let due = s.poll_timeout().unwrap();
        let n = s
            .handle_timeout(due, Some(&mut recv), None, wall0(), &mut buf)
            .unwrap();
        let mut c = Compound::parse(&buf[..n]).unwrap();
        match c.next().unwrap().unwrap() {
            Packet::Rr(rr) => {
                assert_eq!(rr.ssrc(), OURS.get());
                assert_eq!(rr.report_blocks().next().unwrap().ssrc(), 42);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Our writer checked by an independent parser, field by field.
    #[test]
    fn written_report_parses_with_rtcp_types() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(OURS, "alice@192.0.2.1", RATE, t0, 5);
        let mut send = send_session(OURS, 1_000);
        for tick in 0..100 {
            rtp(&mut send, tick);
        }
        let peer: SocketAddr = "192.0.2.9:7000".parse().unwrap();
        let mut recv = recv_session_like(t0, peer);
        // The peer's SR (SSRC 0x5eed, NTP middle 0x12345678) arrived 250 ms before our report.
        let due = s.poll_timeout().unwrap();
        let peer_sr = [
            0x80, 0xc8, 0x00, 0x06, 0x00, 0x00, 0x5e, 0xed, 0xaa, 0xbb, 0x12, 0x34, 0x56, 0x78,
            0x9a, 0xbc, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0x05, 0xa0,
        ];
        s.handle_packet(due - ms(250), wall0(), &peer_sr).unwrap();
        let wall = wall0() + ms(500);
        let mut out = [0u8; MAX_COMPOUND_LEN];
        let n = s
            .handle_timeout(due, Some(&mut recv), Some(&send), wall, &mut out)
            .unwrap();
        let bytes = &out[..n];
        assert_eq!(n, SR_LEN + BLOCK_LEN + 4 + 24);
        let mut c = Compound::parse(bytes).unwrap();
        let Packet::Sr(sr) = c.next().unwrap().unwrap() else {
            panic!("not an SR")
        };
        assert_eq!(sr.ssrc(), OURS.get());
        assert_eq!(sr.ntp_timestamp(), NtpTime::from_system_time(wall).get());
        let elapsed_ticks = RATE.ticks_in(due - t0);
        assert_eq!(
            sr.rtp_timestamp(),
            1_000u32.wrapping_add(elapsed_ticks as u32)
        );
        assert_eq!((sr.packet_count(), sr.octet_count()), (100, 16_000));
        let rb = sr.report_blocks().next().unwrap();
        assert_eq!(rb.ssrc(), 0x5eed);
        assert_eq!(rb.cumulative_lost(), 1);
        assert_eq!(rb.fraction_lost(), 5, "1 of 50 is 5.12/256");
        assert_eq!(rb.extended_sequence_number(), (1 << 16) | 13);
        assert_eq!(rb.last_sender_report_timestamp(), 0x1234_5678);
        assert_eq!(rb.delay_since_last_sender_report_timestamp(), 0x4000);
        let Packet::Sdes(sdes) = c.next().unwrap().unwrap() else {
            panic!("not SDES")
        };
        let chunk = sdes.chunks().next().unwrap();
        assert_eq!(chunk.ssrc(), OURS.get());
        let item = chunk.items().next().unwrap();
        assert_eq!((item.type_(), item.value()), (1, &b"alice@192.0.2.1"[..]));
        assert!(c.next().is_none());
    }

    /// DLSR is the time from the SR's arrival to our report, whatever it is, not a count of
    /// media ticks: the callers pass the true read and send times.
    #[test]
    fn dlsr_is_the_true_delay_from_sr_arrival_to_our_report() {
        let peer: SocketAddr = "192.0.2.9:7000".parse().unwrap();
        let peer_sr = [
            0x80, 0xc8, 0x00, 0x06, 0x00, 0x00, 0x5e, 0xed, 0xaa, 0xbb, 0x12, 0x34, 0x56, 0x78,
            0x9a, 0xbc, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0x05, 0xa0,
        ];
        let deltas_us: [u64; 11] = [
            0, 1, 999, 7_300, 19_999, 20_000, 20_001, 33_333, 89_000, 1_234_567, 4_999_999,
        ];
        for (i, &us) in deltas_us.iter().enumerate() {
            let t0 = Instant::now();
            let mut s = RtcpSession::with_seed(OURS, "x", RATE, t0, 20 + i as u64);
            let mut recv = recv_session_like(t0, peer);
            // Off the 20 ms grid: the SR is read 1.013 s after our report fell due.
            let read = s.poll_timeout().unwrap() + Duration::from_micros(1_013_017);
            s.handle_packet(read, wall0(), &peer_sr).unwrap();
            let delta = Duration::from_micros(us);
            let mut out = [0u8; MAX_COMPOUND_LEN];
            let n = s
                .handle_timeout(read + delta, Some(&mut recv), None, wall0(), &mut out)
                .unwrap();
            let mut c = Compound::parse(&out[..n]).unwrap();
            let Packet::Rr(rr) = c.next().unwrap().unwrap() else {
                panic!("not an RR")
            };
            let b = rr.report_blocks().next().unwrap();
            assert_eq!(b.last_sender_report_timestamp(), 0x1234_5678);
            let dlsr = f64::from(b.delay_since_last_sender_report_timestamp());
            let want = delta.as_secs_f64() * 65_536.0;
            assert!(
                (dlsr - want).abs() <= 1.0,
                "Δ {us} µs: DLSR {dlsr}, want {want}"
            );
        }
    }

    /// Our RTT from the peer's report uses the report's true arrival time.
    #[test]
    fn rtt_from_the_peer_report_is_exact_off_the_tick_grid() {
        for rtt_us in [0u64, 300, 7_700, 20_000, 33_333, 145_001] {
            let mut s = RtcpSession::with_seed(OURS, "me", RATE, Instant::now(), 0);
            // The capture's block echoes our SR with a DLSR of 1.5 s.
            let arrival = capture_lsr_wallclock() + ms(1500) + Duration::from_micros(rtt_us);
            s.handle_packet(Instant::now(), arrival, &CAPTURE).unwrap();
            let rtt = s.stats().rtt_ms.unwrap();
            let want = rtt_us as f64 / 1000.0;
            // Two 1/65536 s units: the arrival's truncation and the wire's.
            assert!((rtt - want).abs() <= 0.031, "rtt {rtt} ms, want {want} ms");
        }
    }

    fn recv_session_like(t0: Instant, peer: SocketAddr) -> RecvSession {
        let mut recv = recv_session();
        for i in 0..50u16 {
            if i == 20 {
                continue;
            }
            let h = RtpHeader {
                marker: i == 0,
                payload_type: PayloadType::PCMU,
                seq: WireSeq::new(65_500u16.wrapping_add(i)),
                timestamp: RtpTimestamp::new(u32::from(i) * 160),
                ssrc: Ssrc::new(0x5eed),
            };
            recv.receive(t0 + ms(u64::from(i) * 20), peer, &h);
        }
        recv
    }

    // ---- Parsing ----

    /// The SR + SDES compound a typical softphone sends mid-call, laid out per RFC 3550
    /// §6.4.1 and §6.5 (byte values as a capture shows them):
    ///
    /// ```text
    /// SR      81 c8 00 0c            V=2 P=0 RC=1, PT=200, length 12 words (52 bytes)
    ///         5d 1f 3a 92            sender SSRC
    ///         e8 2b 4c 7a 4f 5c 28 f6  NTP timestamp (2023-06-07)
    ///         00 0a 8c 40            RTP timestamp
    ///         00 00 01 f4            sender's packet count (500)
    ///         00 01 38 80            sender's octet count (80 000)
    ///   block 0b ad ca fe            SSRC reported on: ours
    ///         0c 00 00 07            fraction lost 12/256, cumulative lost 7
    ///         00 01 00 2a            extended highest seq: 1 wrap, seq 42
    ///         00 00 00 58            interarrival jitter 88 ticks (11 ms at 8 kHz)
    ///         4c 7a 1f 00            LSR: middle of the NTP time of our last SR
    ///         00 01 80 00            DLSR: 1.5 s
    /// SDES    81 ca 00 06            V=2 P=0 SC=1, PT=202, length 6 words (28 bytes)
    ///         5d 1f 3a 92            chunk SSRC
    ///         01 0f "user@192.0.2.15"  CNAME, 15 octets
    ///         00 00 00               end of items, padding to 32 bits
    /// ```
    const CAPTURE: [u8; 80] = [
        0x81, 0xc8, 0x00, 0x0c, 0x5d, 0x1f, 0x3a, 0x92, 0xe8, 0x2b, 0x4c, 0x7a, 0x4f, 0x5c, 0x28,
        0xf6, 0x00, 0x0a, 0x8c, 0x40, 0x00, 0x00, 0x01, 0xf4, 0x00, 0x01, 0x38, 0x80, 0x0b, 0xad,
        0xca, 0xfe, 0x0c, 0x00, 0x00, 0x07, 0x00, 0x01, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x58, 0x4c,
        0x7a, 0x1f, 0x00, 0x00, 0x01, 0x80, 0x00, //
        0x81, 0xca, 0x00, 0x06, 0x5d, 0x1f, 0x3a, 0x92, 0x01, 0x0f, b'u', b's', b'e', b'r', b'@',
        b'1', b'9', b'2', b'.', b'0', b'.', b'2', b'.', b'1', b'5', 0x00, 0x00, 0x00,
    ];

    /// The wallclock whose NTP middle 32 bits are the capture's LSR, 0x4c7a_1f00
    /// (NTP seconds 0xe82b_4c7a, fraction 0x1f00/65536 = 0.12109375 s).
    fn capture_lsr_wallclock() -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(0xe82b_4c7a - NTP_UNIX_OFFSET_SECS)
            + Duration::from_nanos(121_093_750)
    }

    #[test]
    fn parses_a_captured_compound() {
        assert_eq!(
            NtpTime::from_system_time(capture_lsr_wallclock()).middle(),
            NtpShort::new(0x4c7a_1f00)
        );
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(OURS, "me", RATE, t0, 0);
        // Arrives 1.5 s (DLSR) + 120 ms after our SR left.
        let arrival = capture_lsr_wallclock() + ms(1620);
        s.handle_packet(t0, arrival, &CAPTURE).unwrap();
        let st = s.stats();
        assert_eq!((st.reports_received, st.sender_reports_received), (1, 1));
        assert_eq!(st.remote_reports, 1);
        assert_eq!(st.remote_fraction_lost, 12.0 / 256.0);
        assert_eq!(st.remote_cumulative_lost, 7);
        assert_eq!(st.remote_highest_seq, 0x0001_002a);
        assert_eq!(st.remote_jitter_ms, 11.0);
        let rtt = st.rtt_ms.unwrap();
        assert!((rtt - 120.0).abs() < 0.05, "rtt {rtt}");
        assert!(!st.peer_bye);
        let sr = s.peer_sender_report().unwrap();
        assert_eq!(sr.ssrc, Ssrc::new(0x5d1f_3a92));
        assert_eq!(sr.ntp, NtpTime::new(0xe82b_4c7a_4f5c_28f6));
        assert_eq!(sr.rtp_timestamp, RtpTimestamp::new(0x000a_8c40));
        assert_eq!((sr.packet_count, sr.octet_count), (500, 80_000));
        assert_eq!(sr.arrival, t0);
    }

    #[test]
    fn block_about_another_source_is_not_ours() {
        let mut bytes = CAPTURE;
        bytes[28..32].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        let mut s = RtcpSession::with_seed(OURS, "me", RATE, Instant::now(), 0);
        s.handle_packet(Instant::now(), capture_lsr_wallclock(), &bytes)
            .unwrap();
        let st = s.stats();
        assert_eq!((st.remote_reports, st.rtt_ms), (0, None));
        assert_eq!(st.sender_reports_received, 1);
    }

    #[test]
    fn negative_cumulative_loss_and_no_lsr() {
        // RR from 0x5d1f3a92: cumulative lost -2 (duplicates), jitter 800 ticks, no SR seen.
        let rr = [
            0x81, 0xc9, 0x00, 0x07, 0x5d, 0x1f, 0x3a, 0x92, 0x0b, 0xad, 0xca, 0xfe, 0x00, 0xff,
            0xff, 0xfe, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x03, 0x20, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut s = RtcpSession::with_seed(OURS, "me", RATE, Instant::now(), 0);
        s.handle_packet(Instant::now(), wall0(), &rr).unwrap();
        let st = s.stats();
        assert_eq!(st.remote_cumulative_lost, -2);
        assert_eq!(st.remote_jitter_ms, 100.0);
        assert_eq!(
            st.rtt_ms, None,
            "LSR 0: the peer has not seen an SR from us"
        );
        assert_eq!((st.reports_received, st.sender_reports_received), (1, 0));
        // The same jitter at 48 kHz is 800/48 ms.
        let mut s = RtcpSession::with_seed(OURS, "me", ClockRate::HZ_48000, Instant::now(), 0);
        s.handle_packet(Instant::now(), wall0(), &rr).unwrap();
        assert!((s.stats().remote_jitter_ms - 800.0 / 48.0).abs() < 1e-9);
    }

    #[test]
    fn unknown_and_ignored_packet_types_are_skipped() {
        let mut bytes = CAPTURE.to_vec();
        // APP (204), subtype 1, name "qual", 4 bytes of data.
        bytes.extend_from_slice(&[
            0x81, 0xcc, 0x00, 0x03, 0x5d, 0x1f, 0x3a, 0x92, b'q', b'u', b'a', b'l', 1, 2, 3, 4,
        ]);
        // XR (207) too short to hold even its SSRC: malformed, but not ours to judge.
        bytes.extend_from_slice(&[0x80, 0xcf, 0x00, 0x00]);
        // An unassigned type (210) with one word of body.
        bytes.extend_from_slice(&[0x80, 0xd2, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]);
        // BYE from the peer, with a reason, padded with 4 bytes as the last packet.
        bytes.extend_from_slice(&[
            0xa1, 0xcb, 0x00, 0x03, 0x5d, 0x1f, 0x3a, 0x92, 3, b'b', b'y', b'e', 0, 0, 0, 4,
        ]);
        let mut s = RtcpSession::with_seed(OURS, "me", RATE, Instant::now(), 0);
        s.handle_packet(Instant::now(), wall0(), &bytes).unwrap();
        let st = s.stats();
        assert_eq!(st.remote_cumulative_lost, 7, "the SR still counted");
        assert!(st.peer_bye);
        assert_eq!(st.parse_errors, 0);
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let t = Instant::now();
        let mut s = RtcpSession::with_seed(OURS, "me", RATE, t, 0);
        assert_eq!(s.handle_packet(t, wall0(), &[]), Err(RtcpError::Empty));
        for cut in 1..CAPTURE.len() {
            let r = s.handle_packet(t, wall0(), &CAPTURE[..cut]);
            if cut == 52 {
                assert_eq!(r, Ok(()), "the SR alone is a whole compound");
            } else {
                assert!(r.is_err(), "cut at {cut}");
            }
        }
        let errors = s.stats().parse_errors;
        assert_eq!(
            errors,
            1 + (CAPTURE.len() as u64 - 2),
            "empty, then every cut but one"
        );

        let mut v1 = CAPTURE;
        v1[52] = 0x41;
        assert_eq!(
            s.handle_packet(t, wall0(), &v1),
            Err(RtcpError::Version {
                offset: 52,
                version: 1
            })
        );
        let mut padded_first = CAPTURE;
        padded_first[0] |= 0x20;
        assert_eq!(
            s.handle_packet(t, wall0(), &padded_first),
            Err(RtcpError::Padding { offset: 0 })
        );
        let mut pad_too_long = CAPTURE;
        pad_too_long[52] |= 0x20;
        pad_too_long[79] = 200;
        assert_eq!(
            s.handle_packet(t, wall0(), &pad_too_long),
            Err(RtcpError::Padding { offset: 52 })
        );
        // RC says two blocks, the length has room for one.
        let mut overcount = CAPTURE;
        overcount[0] = 0x82;
        assert_eq!(
            s.handle_packet(t, wall0(), &overcount),
            Err(RtcpError::Malformed {
                offset: 0,
                packet_type: 200
            })
        );
        // Trailing bytes that are not a packet.
        let mut trailing = CAPTURE.to_vec();
        trailing.extend_from_slice(&[0x80, 0xc9]);
        assert_eq!(
            s.handle_packet(t, wall0(), &trailing),
            Err(RtcpError::Truncated { offset: 80 })
        );
        let st = s.stats();
        assert_eq!(st.reports_received, 1, "only the whole SR was accepted");
    }

    #[test]
    fn a_bad_tail_applies_nothing() {
        let t = Instant::now();
        let mut s = RtcpSession::with_seed(OURS, "me", RATE, t, 0);
        let mut bytes = CAPTURE.to_vec();
        bytes.extend_from_slice(&[0x81, 0xcb, 0x00, 0x00]); // BYE claiming one SSRC, none there
        assert!(s.handle_packet(t, wall0(), &bytes).is_err());
        let st = s.stats();
        assert_eq!((st.reports_received, st.remote_reports), (0, 0));
        assert!(s.peer_sender_report().is_none());
        assert!(!st.peer_bye);
    }

    // ---- BYE ----

    #[test]
    fn bye_is_written_and_understood() {
        let t = Instant::now();
        let mut a = RtcpSession::with_seed(OURS, "alice@example.org", RATE, t, 0);
        let mut b = RtcpSession::with_seed(Ssrc::new(0xb0b), "bob", RATE, t, 0);
        assert_eq!(
            a.bye(&mut [0u8; 20]),
            Err(RtcpError::BufferTooSmall { needed: 8 + 28 + 8 }),
            "empty RR, SDES with a 17-octet CNAME, BYE"
        );
        assert!(
            a.poll_timeout().is_some(),
            "a failed BYE does not end the session"
        );
        let mut out = [0u8; MAX_COMPOUND_LEN];
        let n = a.bye(&mut out).unwrap();
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(
            a.handle_timeout(t + Duration::from_secs(60), None, None, wall0(), &mut out),
            None,
            "no reports after BYE"
        );
        let bytes = &out[..n];
        let kinds: Vec<u8> = Compound::parse(bytes)
            .unwrap()
            .map(|p| p.unwrap().type_())
            .collect();
        assert_eq!(kinds, [PT_RR, PT_SDES, PT_BYE]);
        let Some(Ok(Packet::Bye(bye))) = Compound::parse(bytes).unwrap().nth(2) else {
            panic!("no BYE")
        };
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [OURS.get()]);

        assert!(!b.stats().peer_bye);
        b.handle_packet(t, wall0(), bytes).unwrap();
        assert!(b.stats().peer_bye);
        assert_eq!(b.stats().reports_received, 1);

        // Our own BYE looped back is not the peer leaving.
        let mut c = RtcpSession::with_seed(OURS, "alice@example.org", RATE, t, 0);
        c.handle_packet(t, wall0(), bytes).unwrap();
        assert!(!c.stats().peer_bye);
    }

    #[test]
    fn short_output_buffer_skips_the_report() {
        let t = Instant::now();
        let mut s = RtcpSession::with_seed(OURS, "a-rather-long-cname@example.org", RATE, t, 0);
        let mut recv = recv_session_like(t, "192.0.2.9:7000".parse().unwrap());
        let due = s.poll_timeout().unwrap();
        let mut small = [0u8; 40];
        assert_eq!(
            s.handle_timeout(due, Some(&mut recv), None, wall0(), &mut small),
            None
        );
        assert_eq!(s.stats().write_errors, 1);
        assert!(
            s.poll_timeout().unwrap() > due,
            "rescheduled, not retried at once"
        );
        // The receive side's loss interval was not consumed by the skipped report.
        let mut out = [0u8; MAX_COMPOUND_LEN];
        let next = s.poll_timeout().unwrap();
        let n = s
            .handle_timeout(next, Some(&mut recv), None, wall0(), &mut out)
            .unwrap();
        assert_eq!(
            out[12], 5,
            "fraction lost still covers the first 50 packets"
        );
        assert!(n <= MAX_COMPOUND_LEN);
    }

    #[test]
    fn long_cname_is_truncated_on_a_char_boundary() {
        let cname = "é".repeat(200); // 400 bytes
        let mut s = RtcpSession::with_seed(OURS, &cname, RATE, Instant::now(), 0);
        let mut out = [0u8; MAX_COMPOUND_LEN];
        let n = s.bye(&mut out).unwrap();
        let mut c = Compound::parse(&out[..n]).unwrap();
        let _rr = c.next();
        let Some(Ok(Packet::Sdes(sdes))) = c.next() else {
            panic!("no SDES")
        };
        let value = sdes
            .chunks()
            .next()
            .unwrap()
            .items()
            .next()
            .unwrap()
            .value();
        assert_eq!(value.len(), 254);
        assert!(std::str::from_utf8(value).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let t = Instant::now();
            let mut s = RtcpSession::with_seed(OURS, "me", RATE, t, 0);
            let _ = s.handle_packet(t, wall0(), &bytes);
        }

        #[test]
        fn mangled_captures_never_panic(
            edits in proptest::collection::vec((0usize..80, any::<u8>()), 1..6),
            cut in 0usize..=80,
        ) {
            let mut bytes = CAPTURE;
            for (i, v) in edits {
                bytes[i] = v;
            }
            let t = Instant::now();
            let mut s = RtcpSession::with_seed(OURS, "me", RATE, t, 0);
            let before = s.stats();
            if s.handle_packet(t, wall0(), &bytes[..cut]).is_err() {
                let after = s.stats();
                prop_assert_eq!(after.parse_errors, before.parse_errors + 1);
                prop_assert_eq!(after.reports_received, 0);
            }
        }
    }
}
