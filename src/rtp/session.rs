//! Per-leg RTP state: what we know about the stream we receive, and how we stamp the one we send.
//!
//! [`RecvSession`] decides which packets belong to the leg (the source rule below), extends
//! sequence numbers and timestamps, spots duplicates, reordering and restarts, estimates
//! interarrival jitter and keeps the counts an RTCP report block is built from. [`SendSession`]
//! numbers and stamps outgoing packets from the media tick counter.
//!
//! # Source rule ([`StrictRtp`])
//! Whoever sends to a leg's port is heard by the call, so a stale caller still streaming to a
//! reused port, or anyone spraying the port range, would be mixed into the next call. Signalling
//! tells the session where media should come from ([`RecvSession::set_remote`]: the SDP's RTP
//! and RTCP addresses and the address the SIP request came from).
//!
//! `strict` (the default):
//! - Packets from the SDP's address and port are always accepted, and win over any other
//!   source: the first one moves the leg's source back to the SDP address.
//! - Another source is learned only when NAT is evident (the SDP's media address differs from
//!   the signalling source, which includes a private SDP address behind a public signalling
//!   source), only within [`RecvConfig::learn_window`] of the answer or of signalling moving the
//!   remote media, and only after [`RecvConfig::relatch_after`] consecutive in-sequence packets
//!   with one SSRC from it, with no packet from the current source in between. A later change
//!   of source needs the same proof in a window; a source at the SDP address is never replaced.
//! - Everything else is dropped and counted ([`RecvStats::foreign`]).
//!
//! `learn` learns in the window without NAT evidence; the SDP address still always wins.
//! `off` is plain symmetric-RTP latching:
//! - Until latched, the first packet whose payload type is in the configured set latches its
//!   source address and SSRC.
//! - Packets from any other address are dropped, but tracked as a candidate. The leg re-latches
//!   to the candidate after [`RecvConfig::relatch_after`] consecutive packets from it with one
//!   SSRC and consecutive sequence numbers, with no packet from the latched address in between,
//!   at any time.
//!
//! In every mode a different SSRC from the current source's address is a new source: sequence,
//! timestamp and jitter state restart (with probation) and the address stays. If a proven new
//! source's SSRC is new, its sequence state starts already validated, since the proof was its
//! probation.
//!
//! RTCP ([`RecvSession::accept_rtcp`]) follows the RTP source: accepted from the SDP's RTCP
//! address, or from a learned RTP source's port + 1 (its own port with rtcp-mux); in `off`
//! mode from anywhere.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::packet::{PacketError, RtpHeader, RtpPacket};
use super::types::{
    ClockRate, MediaTime, NtpShort, PayloadType, PayloadTypeSet, RtpTimestamp, SeqNo, Ssrc, WireSeq,
};

const SEQ_MOD: u32 = 1 << 16;
/// Packets behind the highest one whose arrival is remembered, to recognise duplicates.
const DUP_WINDOW: u16 = 128;
/// How long a new source may be learned after the answer or a move of the remote media.
pub const DEFAULT_LEARN_WINDOW: Duration = Duration::from_secs(5);

/// Which sources a leg accepts (`[media] strict_rtp`); see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrictRtp {
    /// The SDP address; another source only with evident NAT, proven within the window.
    #[default]
    Strict,
    /// The SDP address; another source proven within the window, NAT evident or not.
    Learn,
    /// The first source heard, replaced by another once it falls silent.
    Off,
}

/// What signalling says about the peer's media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteMedia {
    /// RTP address from the SDP (None: none given, or on hold with 0.0.0.0).
    pub rtp: Option<SocketAddr>,
    /// RTCP address from the SDP (port + 1, `a=rtcp`, or the RTP address with rtcp-mux).
    pub rtcp: Option<SocketAddr>,
    /// RTCP shares the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Where the SIP request carrying the SDP came from.
    pub signalling: Option<IpAddr>,
}

impl RemoteMedia {
    /// Whether the SDP's media address cannot be where the peer really sends from: it differs
    /// from the signalling source, or is private while the signalling source is public.
    pub fn nat_evident(&self) -> bool {
        let (Some(rtp), Some(sig)) = (self.rtp, self.signalling) else {
            return false;
        };
        let (media, sig) = (rtp.ip().to_canonical(), sig.to_canonical());
        media != sig || (is_private(media) && !is_private(sig))
    }
}

/// Addresses that a NAT hides: RFC 1918, shared (RFC 6598), link-local, unique local (RFC 4193).
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Receive-side tuning; [`RecvConfig::new`] gives the RFC 3550 defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvConfig {
    /// Clock rate of the negotiated audio payload.
    pub clock_rate: ClockRate,
    /// Media duration of one packet (the ptime), to tell timestamp jumps from normal steps.
    pub frame: Duration,
    /// Payload types that are plausible for this leg; others are dropped and never latch.
    pub payload_types: PayloadTypeSet,
    /// Consecutive in-sequence packets with one SSRC a new address must send to become the
    /// source (in `off` mode: to move the latch there).
    pub relatch_after: u32,
    /// Which sources are accepted.
    pub strict: StrictRtp,
    /// How long after [`RecvSession::set_remote`] moves the remote media a new source may be
    /// learned (`strict` and `learn`).
    pub learn_window: Duration,
    /// Sequential packets a new source must send before its packets are accepted
    /// (RFC 3550 A.1 `MIN_SEQUENTIAL`; 1 accepts the first packet).
    pub probation: u32,
    /// Largest forward sequence gap treated as loss rather than a restart (A.1 `MAX_DROPOUT`).
    pub max_dropout: u16,
    /// Largest backward step treated as reordering (A.1 `MAX_MISORDER`; at most 127).
    pub max_misorder: u16,
}

impl RecvConfig {
    /// Defaults: 20 ms frames, a new source after 4 packets, probation 2, dropout 3000, misorder
    /// 100, and `off` (latching), which a leg replaces with its configured rule.
    pub fn new(clock_rate: ClockRate, payload_types: PayloadTypeSet) -> Self {
        RecvConfig {
            clock_rate,
            frame: Duration::from_millis(20),
            payload_types,
            relatch_after: 4,
            strict: StrictRtp::Off,
            learn_window: DEFAULT_LEARN_WINDOW,
            probation: 2,
            max_dropout: 3000,
            max_misorder: 100,
        }
    }
}

/// Counts over the life of a receiving leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Packets accepted (duplicates excluded).
    pub received: u64,
    /// Packets expected from the sequence numbers seen, summed over sources.
    pub expected: u64,
    /// `expected − received`; negative only if a sender repeated sequence numbers beyond the
    /// duplicate window.
    pub lost: i64,
    /// Packets dropped as copies of one already accepted.
    pub duplicates: u64,
    /// Packets accepted after a packet with a higher sequence number.
    pub out_of_order: u64,
    /// Packets dropped for being further behind the highest than `max_misorder`.
    pub late: u64,
    /// Packets dropped while their source was on probation.
    pub probation: u64,
    /// Packets dropped for a sequence jump larger than `max_dropout` (pending confirmation).
    pub seq_jumps: u64,
    /// Times the sequence restarted after a confirmed jump.
    pub restarts: u64,
    /// Packets whose timestamp step disagreed with their sequence step, without marker bit.
    pub timestamp_jumps: u64,
    /// RTP packets dropped for coming from an address other than the leg's source.
    pub foreign: u64,
    /// RTCP packets dropped for coming from an address other than the source's RTCP address.
    pub foreign_rtcp: u64,
    /// Packets with a payload type outside the configured set.
    pub bad_payload_type: u64,
    /// Times the source moved to a new address (learned, or back to the SDP address).
    pub relatches: u64,
    /// Times the SSRC changed (from the latched address or by re-latching).
    pub ssrc_changes: u64,
}

/// Why a received packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Payload type not in the configured set.
    PayloadType,
    /// From an address other than the leg's source.
    ForeignSource,
    /// The source is still on probation.
    Probation,
    /// Already accepted.
    Duplicate,
    /// Too far behind the highest sequence number to be placed.
    Late,
    /// A sequence jump beyond `max_dropout`; a second packet continuing it restarts the source.
    SequenceJump,
}

/// A packet accepted for the leg, with its extended numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Extended sequence number; grows monotonically over the leg, restarts included.
    pub seq: SeqNo,
    /// Extended timestamp in the configured clock rate.
    pub timestamp: MediaTime,
    /// Marker bit: the first packet of a talkspurt.
    pub marker: bool,
    /// The timestamp step disagrees with the sequence step (silence suppression if `marker`,
    /// otherwise a sender clock jump).
    pub discontinuity: bool,
    /// Arrived after a packet with a higher sequence number.
    pub out_of_order: bool,
    /// First packet of a new source, a re-latch to a new SSRC or a sequence restart: state
    /// keyed on the old numbering (the jitter buffer) should be reset.
    pub restarted: bool,
}

/// The verdict on one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The packet belongs to the leg.
    Accepted(Accepted),
    /// The packet was dropped, and counted.
    Rejected(Rejection),
}

/// The fields of an RFC 3550 §6.4.1 report block, in wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: Ssrc,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, clamped to 24-bit signed.
    pub cumulative_lost: i32,
    /// Wrap count since the source (re)started in the high 16 bits, highest wire seq low.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last sender report's NTP timestamp, 0 if none.
    pub last_sr: NtpShort,
    /// Delay since that sender report, 0 if none.
    pub delay_since_last_sr: NtpShort,
}

#[derive(Debug, Clone, Copy)]
struct Latch {
    addr: SocketAddr,
    ssrc: Ssrc,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    ssrc: Ssrc,
    last_seq: WireSeq,
    count: u32,
}

/// Sequence, timestamp and jitter state of the current source (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone, Copy)]
struct Source {
    probation: u32,
    max_seq: u16,
    max_ext: u64,
    /// `SEQ_MOD + 1` means "none" (A.1 `bad_seq`).
    bad_seq: u32,
    base_ext: u64,
    /// Origin of the RTCP extended-highest-seq field: wraps count from here.
    cycle_origin: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Bit i set: `max_ext − i` was accepted.
    window: u128,
    ts_ref_wire: u32,
    ts_ref_ext: u64,
    transit: Option<i64>,
    /// Jitter scaled by 16 (A.8 integer form).
    jitter16: i64,
}

impl Source {
    fn new() -> Self {
        Source {
            probation: 0,
            max_seq: 0,
            max_ext: 0,
            bad_seq: SEQ_MOD + 1,
            base_ext: 0,
            cycle_origin: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            window: 0,
            ts_ref_wire: 0,
            ts_ref_ext: 0,
            transit: None,
            jitter16: 0,
        }
    }

    fn expected(&self) -> u64 {
        if self.received == 0 {
            0
        } else {
            self.max_ext - self.base_ext + 1
        }
    }

    fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }
}

/// Receive state of one leg.
#[derive(Debug, Clone)]
pub struct RecvSession {
    config: RecvConfig,
    frame_ticks: u64,
    latch: Option<Latch>,
    candidate: Option<Candidate>,
    /// Where signalling says media comes from.
    expected: RemoteMedia,
    /// `strict` or `learn`, and the rule allows learning for `expected`.
    may_learn: bool,
    /// End of the current learning window.
    learn_until: Option<Instant>,
    src: Source,
    /// Highest extended seq ever used on the leg; restarts continue above it.
    leg_max_ext: Option<u64>,
    leg_max_ts: Option<u64>,
    epoch: Option<Instant>,
    stats: RecvStats,
    /// Counts of earlier sources, folded in when a source restarts.
    prior_expected: u64,
    prior_received: u64,
    last_sr: Option<(NtpShort, Instant)>,
}

impl RecvSession {
    /// A leg that has not latched yet.
    pub fn new(mut config: RecvConfig) -> Self {
        config.max_misorder = config.max_misorder.min(DUP_WINDOW - 1);
        config.probation = config.probation.max(1);
        config.relatch_after = config.relatch_after.max(1);
        let frame_ticks = config.clock_rate.ticks_in(config.frame).max(1);
        RecvSession {
            config,
            frame_ticks,
            latch: None,
            candidate: None,
            expected: RemoteMedia::default(),
            may_learn: false,
            learn_until: None,
            src: Source::new(),
            leg_max_ext: None,
            leg_max_ts: None,
            epoch: None,
            stats: RecvStats::default(),
            prior_expected: 0,
            prior_received: 0,
            last_sr: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RecvConfig {
        &self.config
    }

    /// The latched remote address, if any.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.latch.map(|l| l.addr)
    }

    /// The SSRC of the current source, if any.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.latch.map(|l| l.ssrc)
    }

    /// Forgets the source: in `off` mode the next plausible packet from anywhere latches
    /// afresh; otherwise the SDP address, or a source proven in a window, is taken next.
    pub fn relearn(&mut self) {
        self.latch = None;
        self.candidate = None;
    }

    /// Where signalling says the peer's media comes from, as of `now` (the answer, or a
    /// re-INVITE or UPDATE). When the RTP address moves (or on the first call) the current
    /// source is forgotten and a learning window opens.
    pub fn set_remote(&mut self, now: Instant, remote: RemoteMedia) {
        let moved = self.learn_until.is_none() || remote.rtp != self.expected.rtp;
        self.expected = remote;
        self.may_learn = match self.config.strict {
            StrictRtp::Strict => remote.nat_evident(),
            StrictRtp::Learn => true,
            StrictRtp::Off => false,
        };
        if moved {
            self.relearn();
            self.open_learning_window(now);
        }
    }

    /// Opens a learning window from `now` without forgetting the source, for a call answered
    /// after early media: a phone may start sending only once answered.
    pub fn open_learning_window(&mut self, now: Instant) {
        self.learn_until = Some(now + self.config.learn_window);
    }

    /// Follows a change of codec (a re-INVITE or UPDATE): from now on only `payload_types`
    /// are taken, and timestamps count at `clock_rate`. The jitter estimate is kept, in the
    /// new clock's units; its transit baseline starts again, as the old clock's would not
    /// compare.
    pub fn set_payload(&mut self, clock_rate: ClockRate, payload_types: PayloadTypeSet) {
        self.config.payload_types = payload_types;
        let old = self.config.clock_rate;
        if clock_rate == old {
            return;
        }
        self.src.jitter16 = self.src.jitter16 * i64::from(clock_rate.hz()) / i64::from(old.hz());
        self.src.transit = None;
        self.config.clock_rate = clock_rate;
        self.frame_ticks = clock_rate.ticks_in(self.config.frame).max(1);
    }

    /// Whether a new source may be learned at `now`.
    fn learning(&self, now: Instant) -> bool {
        self.may_learn && self.learn_until.is_some_and(|end| now < end)
    }

    /// Judges the source of an RTCP datagram that arrived from `from`; counts it if dropped.
    pub fn accept_rtcp(&mut self, from: SocketAddr) -> bool {
        if self.config.strict == StrictRtp::Off || self.expected.rtcp == Some(from) {
            return true;
        }
        let learned = self
            .latch
            .filter(|l| Some(l.addr) != self.expected.rtp)
            .map(|l| {
                if self.expected.rtcp_mux {
                    l.addr
                } else {
                    SocketAddr::new(l.addr.ip(), l.addr.port().wrapping_add(1))
                }
            });
        if learned == Some(from) {
            return true;
        }
        self.stats.foreign_rtcp += 1;
        false
    }

    /// Leg counts so far.
    pub fn stats(&self) -> RecvStats {
        let expected = self.prior_expected + self.src.expected();
        let received = self.prior_received + self.src.received;
        RecvStats {
            expected,
            lost: expected as i64 - received as i64,
            ..self.stats
        }
    }

    /// Highest extended sequence number accepted from the current source.
    pub fn highest_seq(&self) -> Option<SeqNo> {
        (self.src.received > 0).then_some(SeqNo::new(self.src.max_ext))
    }

    /// Current interarrival jitter estimate (RFC 3550 A.8) in the configured clock rate.
    pub fn jitter(&self) -> MediaTime {
        MediaTime::new((self.src.jitter16 >> 4) as u64, self.config.clock_rate)
    }

    /// Records a sender report from the source: the middle 32 bits of its NTP timestamp.
    pub fn note_sender_report(&mut self, now: Instant, ntp_middle: NtpShort) {
        self.last_sr = Some((ntp_middle, now));
    }

    /// Builds a report block for the current source and starts a new loss interval (A.3).
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.latch?.ssrc;
        let src = &mut self.src;
        if src.received == 0 {
            return None;
        }
        let expected = src.expected();
        let expected_interval = expected - src.expected_prior;
        src.expected_prior = expected;
        let received_interval = src.received - src.received_prior;
        src.received_prior = src.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((ntp, at)) => (
                ntp,
                NtpShort::from_duration(now.saturating_duration_since(at)),
            ),
            None => (NtpShort::default(), NtpShort::default()),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: src.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            extended_highest_seq: (src.max_ext - src.cycle_origin) as u32,
            jitter: u32::try_from(src.jitter16 >> 4).unwrap_or(u32::MAX),
            last_sr,
            delay_since_last_sr,
        })
    }

    /// Judges one packet that arrived at `now` from `from`.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, header: &RtpHeader) -> Received {
        if !self.config.payload_types.contains(header.payload_type) {
            self.stats.bad_payload_type += 1;
            return Received::Rejected(Rejection::PayloadType);
        }
        let strict = self.config.strict != StrictRtp::Off;
        let from_sdp = strict && self.expected.rtp == Some(from);
        let mut validated = false;
        match self.latch {
            None if !strict || from_sdp => {
                self.latch = Some(Latch {
                    addr: from,
                    ssrc: header.ssrc,
                });
                self.candidate = None;
                self.start_source(header.seq, false);
            }
            Some(latch) if latch.addr == from => {
                self.candidate = None;
                if latch.ssrc != header.ssrc {
                    self.stats.ssrc_changes += 1;
                    self.latch = Some(Latch {
                        addr: from,
                        ssrc: header.ssrc,
                    });
                    self.start_source(header.seq, false);
                }
            }
            Some(latch) if from_sdp => {
                // The SDP address wins over a learned source at once, without proof.
                self.candidate = None;
                self.stats.relatches += 1;
                self.latch = Some(Latch {
                    addr: from,
                    ssrc: header.ssrc,
                });
                if latch.ssrc != header.ssrc {
                    self.stats.ssrc_changes += 1;
                    self.start_source(header.seq, false);
                }
            }
            latch => {
                let learnable = !strict
                    || (self.learning(now)
                        && latch.is_none_or(|l| Some(l.addr) != self.expected.rtp));
                if !learnable {
                    self.stats.foreign += 1;
                    return Received::Rejected(Rejection::ForeignSource);
                }
                let count = match self.candidate {
                    Some(c)
                        if c.addr == from
                            && c.ssrc == header.ssrc
                            && c.last_seq.next() == header.seq =>
                    {
                        c.count + 1
                    }
                    _ => 1,
                };
                if count < self.config.relatch_after {
                    self.candidate = Some(Candidate {
                        addr: from,
                        ssrc: header.ssrc,
                        last_seq: header.seq,
                        count,
                    });
                    self.stats.foreign += 1;
                    return Received::Rejected(Rejection::ForeignSource);
                }
                self.candidate = None;
                self.latch = Some(Latch {
                    addr: from,
                    ssrc: header.ssrc,
                });
                match latch {
                    Some(old) => {
                        self.stats.relatches += 1;
                        if old.ssrc != header.ssrc {
                            self.stats.ssrc_changes += 1;
                            self.start_source(header.seq, true);
                            validated = true;
                        }
                    }
                    None => {
                        self.start_source(header.seq, true);
                        validated = true;
                    }
                }
            }
        }
        self.update(now, header, validated)
    }

    /// Resets per-source state for a source whose next packet carries `seq`.
    fn start_source(&mut self, seq: WireSeq, validated: bool) {
        self.prior_expected += self.src.expected();
        self.prior_received += self.src.received;
        self.src = Source::new();
        self.src.max_seq = seq.get().wrapping_sub(1);
        self.src.probation = if validated { 0 } else { self.config.probation };
    }

    /// A.1 `init_seq`, but numbering continues above everything used before on this leg.
    fn init_seq(&mut self, seq: u16, ts: RtpTimestamp) {
        let ext = match self.leg_max_ext {
            None => SEQ_MOD as u64 | u64::from(seq),
            Some(prev) => (((prev >> 16) + 1) << 16) | u64::from(seq),
        };
        // Extended timestamps start one wrap up, so a reordered packet from just before the
        // first one still has a representable timestamp.
        let ts_ext = match self.leg_max_ts {
            None => (1u64 << 32) | u64::from(ts.get()),
            Some(prev) => (((prev >> 32) + 2) << 32) | u64::from(ts.get()),
        };
        let src = &mut self.src;
        src.max_seq = seq;
        src.max_ext = ext;
        src.base_ext = ext;
        src.cycle_origin = ext & !0xffff;
        src.bad_seq = SEQ_MOD + 1;
        src.received = 0;
        src.expected_prior = 0;
        src.received_prior = 0;
        src.window = 0;
        src.ts_ref_wire = ts.get();
        src.ts_ref_ext = ts_ext;
        src.transit = None;
        src.jitter16 = 0;
        self.leg_max_ext = Some(ext);
        self.leg_max_ts = Some(ts_ext);
    }

    fn update(&mut self, now: Instant, header: &RtpHeader, validated: bool) -> Received {
        let seq = header.seq.get();
        let mut restarted = validated;
        let mut out_of_order = false;
        let mut discontinuity = false;

        if validated {
            self.init_seq(seq, header.timestamp);
        } else if self.src.probation > 0 {
            if seq == self.src.max_seq.wrapping_add(1) {
                self.src.probation -= 1;
                self.src.max_seq = seq;
                if self.src.probation > 0 {
                    self.stats.probation += 1;
                    return Received::Rejected(Rejection::Probation);
                }
                self.init_seq(seq, header.timestamp);
                restarted = true;
            } else {
                self.src.probation = self.config.probation.saturating_sub(1).max(1);
                self.src.max_seq = seq;
                self.stats.probation += 1;
                return Received::Rejected(Rejection::Probation);
            }
        } else {
            let udelta = seq.wrapping_sub(self.src.max_seq);
            if udelta == 0 {
                self.stats.duplicates += 1;
                return Received::Rejected(Rejection::Duplicate);
            } else if udelta < self.config.max_dropout {
                let step = u64::from(udelta);
                let ts_step =
                    i64::from(header.timestamp.get().wrapping_sub(self.src.ts_ref_wire) as i32);
                let expected_step =
                    i64::try_from(step.saturating_mul(self.frame_ticks)).unwrap_or(i64::MAX);
                if ts_step.saturating_sub(expected_step).unsigned_abs() > self.frame_ticks / 2 {
                    discontinuity = true;
                    if !header.marker {
                        self.stats.timestamp_jumps += 1;
                    }
                }
                let src = &mut self.src;
                src.window = if step >= 128 { 0 } else { src.window << step };
                src.max_ext += step;
                src.max_seq = seq;
                src.ts_ref_ext = src.ts_ref_ext.saturating_add_signed(ts_step);
                src.ts_ref_wire = header.timestamp.get();
                self.leg_max_ext = Some(src.max_ext);
                self.leg_max_ts = Some(self.leg_max_ts.unwrap_or(0).max(src.ts_ref_ext));
            } else if u32::from(udelta) <= SEQ_MOD - u32::from(self.config.max_misorder) {
                if u32::from(seq) == self.src.bad_seq {
                    // Two sequential packets after a big jump: the sender restarted (A.1).
                    self.stats.restarts += 1;
                    self.prior_expected += self.src.expected();
                    self.prior_received += self.src.received;
                    self.init_seq(seq, header.timestamp);
                    restarted = true;
                } else {
                    self.src.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
                    if udelta >= 0x8000 {
                        self.stats.late += 1;
                        return Received::Rejected(Rejection::Late);
                    }
                    self.stats.seq_jumps += 1;
                    return Received::Rejected(Rejection::SequenceJump);
                }
            } else {
                let behind = SEQ_MOD - u32::from(udelta);
                let bit = 1u128 << behind;
                if self.src.window & bit != 0 {
                    self.stats.duplicates += 1;
                    return Received::Rejected(Rejection::Duplicate);
                }
                self.src.window |= bit;
                out_of_order = true;
                self.stats.out_of_order += 1;
            }
        }

        let src = &mut self.src;
        let ext = if out_of_order {
            let behind = u64::from(src.max_seq.wrapping_sub(seq));
            let ext = src.max_ext - behind;
            src.base_ext = src.base_ext.min(ext);
            ext
        } else {
            src.window |= 1;
            src.max_ext
        };
        let ts_ext = if out_of_order {
            let off = i64::from(header.timestamp.get().wrapping_sub(src.ts_ref_wire) as i32);
            src.ts_ref_ext.saturating_add_signed(off)
        } else {
            src.ts_ref_ext
        };
        src.received += 1;
        self.stats.received += 1;
        self.update_jitter(now, ts_ext, discontinuity && !header.marker);

        Received::Accepted(Accepted {
            seq: SeqNo::new(ext),
            timestamp: MediaTime::new(ts_ext, self.config.clock_rate),
            marker: header.marker,
            discontinuity,
            out_of_order,
            restarted,
        })
    }

    /// RFC 3550 A.8, in the integer form with the estimate scaled by 16.
    ///
    /// A sender timestamp jump without marker bit is not network jitter, so it only moves the
    /// transit baseline.
    fn update_jitter(&mut self, now: Instant, ts_ext: u64, clock_jump: bool) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = self
            .config
            .clock_rate
            .ticks_in(now.saturating_duration_since(epoch));
        let transit = arrival as i64 - ts_ext as i64;
        if let Some(prev) = self.src.transit {
            if !clock_jump {
                let d = (transit - prev).abs();
                self.src.jitter16 += d - ((self.src.jitter16 + 8) >> 4);
            }
        }
        self.src.transit = Some(transit);
    }
}

/// Send state of one leg: our SSRC, sequence numbers and timestamps.
///
/// Timestamps come from a position in samples counted from `ts_base` (a media tick is
/// `samples_per_frame` samples), not from how many packets were sent: skipped ticks
/// (silence) advance them, and a packet of several frames is stamped by its first sample.
#[derive(Debug, Clone)]
pub struct SendSession {
    ssrc: Ssrc,
    payload_type: PayloadType,
    next_seq: WireSeq,
    ts_base: RtpTimestamp,
    samples_per_frame: u64,
    /// The sample position just after the last packet sent.
    last_end: Option<u64>,
    mark_next: bool,
    packets: u64,
    octets: u64,
}

impl SendSession {
    /// A sender whose SSRC, first sequence number and timestamp origin the caller drew at random.
    pub fn new(
        ssrc: Ssrc,
        first_seq: WireSeq,
        ts_base: RtpTimestamp,
        payload_type: PayloadType,
        clock_rate: ClockRate,
        frame: Duration,
    ) -> Self {
        SendSession {
            ssrc,
            payload_type,
            next_seq: first_seq,
            ts_base,
            samples_per_frame: clock_rate.ticks_in(frame),
            last_end: None,
            mark_next: true,
            packets: 0,
            octets: 0,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Packets sent so far (the RTCP SR packet count).
    pub fn packets_sent(&self) -> u64 {
        self.packets
    }

    /// Payload octets sent so far (the RTCP SR octet count).
    pub fn octets_sent(&self) -> u64 {
        self.octets
    }

    /// The RTP timestamp of media tick `tick`, as an SR would report it.
    pub fn timestamp_at(&self, tick: u64) -> RtpTimestamp {
        self.timestamp_of(self.position_of(tick))
    }

    /// The sample position where media tick `tick` starts.
    pub fn position_of(&self, tick: u64) -> u64 {
        tick.wrapping_mul(self.samples_per_frame)
    }

    fn timestamp_of(&self, position: u64) -> RtpTimestamp {
        self.ts_base.wrapping_add(position)
    }

    /// Changes the payload type of later packets (e.g. after a re-INVITE).
    pub fn set_payload_type(&mut self, payload_type: PayloadType) {
        self.payload_type = payload_type;
    }

    /// Changes the RTP clock of later packets (a re-INVITE to a codec with another clock):
    /// media tick `at_tick` keeps the timestamp it had, later ticks step at the new rate, and
    /// the next packet is marked.
    pub fn set_clock_rate(&mut self, clock_rate: ClockRate, frame: Duration, at_tick: u64) {
        let samples_per_frame = clock_rate.ticks_in(frame);
        if samples_per_frame == self.samples_per_frame {
            return;
        }
        let at = self.timestamp_at(at_tick);
        self.samples_per_frame = samples_per_frame;
        let moved = at.get().wrapping_sub(self.timestamp_at(at_tick).get());
        self.ts_base = self.ts_base.wrapping_add(u64::from(moved));
        // Positions counted at the old rate no longer compare with new ones.
        self.last_end = None;
        self.mark_next = true;
    }

    /// Sets the marker bit on the next packet, as at the start of a talkspurt.
    pub fn mark_next(&mut self) {
        self.mark_next = true;
    }

    /// The header for the frame of media tick `tick`, consuming a sequence number.
    ///
    /// The marker is set after a skipped tick or at the start.
    pub fn next_header(&mut self, tick: u64) -> RtpHeader {
        let position = self.position_of(tick);
        let header = self.peek_header(position);
        self.commit(position + self.samples_per_frame, 0);
        header
    }

    /// Writes the one-frame packet for tick `tick` carrying `payload` into `out`; returns
    /// its length.
    ///
    /// On error no sequence number is consumed.
    pub fn write(
        &mut self,
        tick: u64,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, PacketError> {
        self.write_samples(self.position_of(tick), self.samples_per_frame, payload, out)
    }

    /// Writes a packet of `samples` samples of audio starting at sample `position` (see
    /// [`SendSession::position_of`]); a packet that does not start where the last one ended
    /// is marked. On error no sequence number is consumed.
    pub fn write_samples(
        &mut self,
        position: u64,
        samples: u64,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, PacketError> {
        let header = self.peek_header(position);
        let n = RtpPacket::new(header, payload).write(out)?;
        self.commit(position.wrapping_add(samples), payload.len());
        Ok(n)
    }

    /// Writes a packet in the tick's place in the sequence but with `edit` applied to its
    /// header: RFC 4733 events carry their own payload type, timestamp and marker.
    pub fn write_edited(
        &mut self,
        tick: u64,
        edit: impl FnOnce(&mut RtpHeader),
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, PacketError> {
        let position = self.position_of(tick);
        let mut header = self.peek_header(position);
        edit(&mut header);
        let n = RtpPacket::new(header, payload).write(out)?;
        // The event stands for the tick's audio: audio resuming at the next tick continues.
        self.commit(position.wrapping_add(self.samples_per_frame), payload.len());
        Ok(n)
    }

    fn peek_header(&self, position: u64) -> RtpHeader {
        let resumed = self.last_end.is_some_and(|end| end != position);
        RtpHeader {
            marker: self.mark_next || resumed,
            payload_type: self.payload_type,
            seq: self.next_seq,
            timestamp: self.timestamp_of(position),
            ssrc: self.ssrc,
        }
    }

    fn commit(&mut self, end: u64, payload_len: usize) {
        self.next_seq = self.next_seq.next();
        self.last_end = Some(end);
        self.mark_next = false;
        self.packets += 1;
        self.octets += payload_len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "192.0.2.10:4000";
    const B: &str = "192.0.2.10:4002";
    const SPOOF: &str = "198.51.100.7:9999";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn header(ssrc: u32, seq: u16, ts: u32) -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: PayloadType::PCMU,
            seq: WireSeq::new(seq),
            timestamp: RtpTimestamp::new(ts),
            ssrc: Ssrc::new(ssrc),
        }
    }

    fn config() -> RecvConfig {
        let mut c = RecvConfig::new(
            ClockRate::HZ_8000,
            PayloadTypeSet::empty().with(PayloadType::PCMU),
        );
        c.probation = 1;
        c.relatch_after = 3;
        c
    }

    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn accepted(r: Received) -> Accepted {
        match r {
            Received::Accepted(a) => a,
            Received::Rejected(why) => panic!("rejected: {why:?}"),
        }
    }

    /// Sends seqs `start..start+n` (wrapping) from `from` at 20 ms spacing from `t_ms`.
    fn feed(
        s: &mut RecvSession,
        clock: &Clock,
        from: &str,
        ssrc: u32,
        start: u16,
        n: u32,
        t_ms: u64,
    ) -> Vec<Received> {
        (0..n)
            .map(|i| {
                let seq = start.wrapping_add(i as u16);
                let ts = u32::from(seq).wrapping_mul(160);
                s.receive(
                    clock.at(t_ms + 20 * u64::from(i)),
                    addr(from),
                    &header(ssrc, seq, ts),
                )
            })
            .collect()
    }

    #[test]
    fn extends_sequence_across_several_wraps() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        let mut prev: Option<SeqNo> = None;
        // Steps of 1000 from 65000 cross a multiple of 65536 four times in 200 packets.
        for i in 0..200u32 {
            let seq = (65_000u32 + i * 1000) as u16;
            let ts = i * 160_000;
            let a = accepted(s.receive(
                clock.at(u64::from(i) * 20),
                addr(A),
                &RtpHeader {
                    marker: true,
                    ..header(7, seq, ts)
                },
            ));
            assert_eq!(a.seq.wire(), WireSeq::new(seq));
            if let Some(p) = prev {
                assert_eq!(a.seq.since(p), Some(1000), "packet {i}");
            }
            prev = Some(a.seq);
        }
        let st = s.stats();
        assert_eq!(st.received, 200);
        assert_eq!(st.expected, 199 * 1000 + 1);
        assert_eq!(st.lost, 199 * 1000 + 1 - 200);
        let block = s.report_block(clock.at(5000)).unwrap();
        assert_eq!(block.extended_highest_seq >> 16, 4, "four wraps");
        assert_eq!(
            block.extended_highest_seq & 0xffff,
            u32::from((65_000u32 + 199 * 1000) as u16)
        );
    }

    #[test]
    fn consecutive_wrap_and_reordering_across_it() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        let order: [u16; 8] = [65532, 65533, 65535, 65534, 1, 0, 2, 3];
        let seqs: Vec<SeqNo> = order
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                accepted(s.receive(
                    clock.at(i as u64 * 20),
                    addr(A),
                    &header(1, q, u32::from(q) * 160),
                ))
                .seq
            })
            .collect();
        let base = seqs[0].get();
        let rel: Vec<u64> = seqs.iter().map(|q| q.get() - base).collect();
        assert_eq!(rel, vec![0, 1, 3, 2, 5, 4, 6, 7]);
        let st = s.stats();
        assert_eq!(st.out_of_order, 2);
        assert_eq!(st.lost, 0);
        assert_eq!(st.received, 8);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        for (i, q) in [65534u16, 65535, 0, 65535, 0, 1, 65534].iter().enumerate() {
            let r = s.receive(clock.at(i as u64 * 20), addr(A), &header(1, *q, 0));
            let dup = i == 3 || i == 4 || i == 6;
            assert_eq!(
                r == Received::Rejected(Rejection::Duplicate),
                dup,
                "packet {i}: {r:?}"
            );
        }
        let st = s.stats();
        assert_eq!(st.duplicates, 3);
        assert_eq!(st.received, 4);
        assert_eq!(st.lost, 0);
    }

    #[test]
    fn loss_and_timestamps_extend() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        let a0 = accepted(s.receive(clock.at(0), addr(A), &header(1, 10, u32::MAX - 159)));
        // Seq 11 lost; 12 carries a timestamp that wrapped.
        let a2 = accepted(s.receive(clock.at(40), addr(A), &header(1, 12, 160)));
        assert_eq!(
            a2.timestamp.since(a0.timestamp).map(|t| t.ticks()),
            Some(320)
        );
        assert!(!a2.discontinuity);
        assert_eq!(s.stats().lost, 1);
    }

    #[test]
    fn probation_needs_sequential_packets() {
        let clock = Clock(Instant::now());
        let mut c = config();
        c.probation = 2;
        let mut s = RecvSession::new(c);
        let r = s.receive(clock.at(0), addr(A), &header(1, 100, 0));
        assert_eq!(r, Received::Rejected(Rejection::Probation));
        let r = s.receive(clock.at(20), addr(A), &header(1, 200, 0));
        assert_eq!(
            r,
            Received::Rejected(Rejection::Probation),
            "not sequential"
        );
        let a = accepted(s.receive(clock.at(40), addr(A), &header(1, 201, 160)));
        assert!(a.restarted);
        assert_eq!(s.stats().probation, 2);
        assert_eq!(s.stats().received, 1);
    }

    #[test]
    fn large_jump_restarts_after_confirmation() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        let res = feed(&mut s, &clock, A, 1, 100, 5, 0);
        let last = match res[4] {
            Received::Accepted(a) => a.seq,
            _ => panic!(),
        };
        let r = s.receive(clock.at(100), addr(A), &header(1, 20_000, 0));
        assert_eq!(r, Received::Rejected(Rejection::SequenceJump));
        let a = accepted(s.receive(clock.at(120), addr(A), &header(1, 20_001, 160)));
        assert!(a.restarted);
        assert!(a.seq > last, "numbering stays monotonic over a restart");
        assert_eq!(a.seq.wire(), WireSeq::new(20_001));
        let st = s.stats();
        assert_eq!((st.restarts, st.seq_jumps), (1, 1));
        // A stale packet far behind is late, not a restart.
        let r = s.receive(clock.at(140), addr(A), &header(1, 19_000, 0));
        assert_eq!(r, Received::Rejected(Rejection::Late));
        accepted(s.receive(clock.at(160), addr(A), &header(1, 20_002, 320)));
        assert_eq!(s.stats().late, 1);
    }

    #[test]
    fn ssrc_change_resets_sequence_state() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        feed(&mut s, &clock, A, 1, 1000, 10, 0);
        assert_eq!(s.stats().received, 10);
        // New SSRC from the same address, with unrelated numbering.
        let a = accepted(s.receive(clock.at(200), addr(A), &header(2, 5, 999)));
        assert!(a.restarted);
        assert_eq!(s.ssrc(), Some(Ssrc::new(2)));
        assert_eq!(s.remote(), Some(addr(A)));
        let b = accepted(s.receive(clock.at(220), addr(A), &header(2, 6, 999 + 160)));
        assert_eq!(b.seq.since(a.seq), Some(1));
        let st = s.stats();
        assert_eq!(st.ssrc_changes, 1);
        assert_eq!(st.received, 12);
        assert_eq!(st.lost, 0, "no phantom loss from the jump 1009 → 5");
        let block = s.report_block(clock.at(240)).unwrap();
        assert_eq!(block.ssrc, Ssrc::new(2));
        assert_eq!(block.extended_highest_seq, 6);
        assert_eq!(block.cumulative_lost, 0);
    }

    #[test]
    fn first_plausible_packet_latches() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        let mut odd = header(9, 1, 0);
        odd.payload_type = PayloadType::new(96).unwrap();
        assert_eq!(
            s.receive(clock.at(0), addr(SPOOF), &odd),
            Received::Rejected(Rejection::PayloadType)
        );
        assert_eq!(s.remote(), None, "implausible payload type does not latch");
        accepted(s.receive(clock.at(20), addr(A), &header(1, 1, 0)));
        assert_eq!(s.remote(), Some(addr(A)));
    }

    #[test]
    fn spoofed_packets_do_not_steal_the_stream() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        feed(&mut s, &clock, A, 1, 500, 5, 0);
        // A single spoofed packet, then one more per real packet: never consecutive enough.
        for i in 0..20u16 {
            let t = 100 + u64::from(i) * 20;
            let r = s.receive(clock.at(t), addr(SPOOF), &header(0xbad, 7000 + i, 0));
            assert_eq!(r, Received::Rejected(Rejection::ForeignSource));
            let seq = 505 + i;
            accepted(s.receive(
                clock.at(t + 1),
                addr(A),
                &header(1, seq, u32::from(seq) * 160),
            ));
        }
        // Even copying the real SSRC and sequence does not help while the source is alive.
        for i in 0..10u16 {
            let seq = 525 + i;
            let t = 600 + u64::from(i) * 20;
            let r = s.receive(
                clock.at(t),
                addr(SPOOF),
                &header(1, seq, u32::from(seq) * 160),
            );
            assert_eq!(r, Received::Rejected(Rejection::ForeignSource));
            accepted(s.receive(
                clock.at(t + 1),
                addr(A),
                &header(1, seq, u32::from(seq) * 160),
            ));
        }
        assert_eq!(s.remote(), Some(addr(A)));
        assert_eq!(s.ssrc(), Some(Ssrc::new(1)));
        let st = s.stats();
        assert_eq!((st.relatches, st.foreign, st.lost), (0, 30, 0));
    }

    #[test]
    fn nat_rebind_relatches() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        feed(&mut s, &clock, A, 1, 100, 10, 0);
        // The NAT moves the same stream to a new port.
        let res = feed(&mut s, &clock, B, 1, 110, 5, 200);
        assert_eq!(res[0], Received::Rejected(Rejection::ForeignSource));
        assert_eq!(res[1], Received::Rejected(Rejection::ForeignSource));
        let a = match res[2] {
            Received::Accepted(a) => a,
            other => panic!("{other:?}"),
        };
        assert!(!a.restarted, "same SSRC keeps its numbering");
        assert!(matches!(res[3], Received::Accepted(_)));
        assert_eq!(s.remote(), Some(addr(B)));
        let st = s.stats();
        assert_eq!(st.relatches, 1);
        assert_eq!(st.lost, 2, "the two packets before the re-latch");
        // The old address is now the foreign one.
        let r = s.receive(clock.at(400), addr(A), &header(1, 115, 0));
        assert_eq!(r, Received::Rejected(Rejection::ForeignSource));
    }

    #[test]
    fn relatch_to_new_ssrc_skips_probation() {
        let clock = Clock(Instant::now());
        let mut c = config();
        c.probation = 2;
        let mut s = RecvSession::new(c);
        feed(&mut s, &clock, A, 1, 100, 10, 0);
        let res = feed(&mut s, &clock, B, 2, 9000, 4, 200);
        let a = match res[2] {
            Received::Accepted(a) => a,
            other => panic!("{other:?}"),
        };
        assert!(a.restarted);
        assert!(matches!(res[3], Received::Accepted(_)));
        assert_eq!(s.ssrc(), Some(Ssrc::new(2)));
        assert_eq!(s.stats().ssrc_changes, 1);
    }

    #[test]
    fn relearn_takes_the_next_source() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        feed(&mut s, &clock, A, 1, 100, 3, 0);
        s.relearn();
        accepted(s.receive(clock.at(100), addr(B), &header(1, 103, 103 * 160)));
        assert_eq!(s.remote(), Some(addr(B)));
    }

    /// Hand-worked RFC 3550 A.8 example at 8 kHz, 20 ms packets (160 ticks):
    ///
    /// | packet | arrival ms | arrival ticks | ts  | transit | D  | J×16 (integer form)        |
    /// |--------|-----------:|--------------:|----:|--------:|---:|----------------------------|
    /// | 0      | 0          | 0             | 0   | 0       | –  | 0                          |
    /// | 1      | 20         | 160           | 160 | 0       | 0  | 0 + 0 − 0 = 0              |
    /// | 2      | 45         | 360           | 320 | 40      | 40 | 0 + 40 − 0 = 40            |
    /// | 3      | 60         | 480           | 480 | 0       | 40 | 40 + 40 − (48>>4=3) = 77   |
    /// | 4      | 80         | 640           | 640 | 0       | 0  | 77 + 0 − (85>>4=5) = 72    |
    ///
    /// Reported jitter J = J×16 >> 4: 0, 0, 2, 4, 4 ticks (floating point: 0, 0, 2.5, 4.84, 4.54).
    #[test]
    fn interarrival_jitter_matches_hand_worked_example() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        let arrivals = [0u64, 20, 45, 60, 80];
        let expected = [0u64, 0, 2, 4, 4];
        for (i, (&ms, &j)) in arrivals.iter().zip(expected.iter()).enumerate() {
            let seq = 3000 + i as u16;
            accepted(s.receive(
                clock.at(ms),
                addr(A),
                &header(1, seq, 8000 + 160 * i as u32),
            ));
            assert_eq!(s.jitter().ticks(), j, "after packet {i}");
        }
        assert_eq!(s.report_block(clock.at(100)).unwrap().jitter, 4);
    }

    #[test]
    fn timestamp_jump_flags_discontinuity() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        feed(&mut s, &clock, A, 1, 1, 3, 0);
        // Talkspurt after 1 s of silence suppression: marker set, jump expected.
        let mut h = header(1, 4, 4 * 160 + 8000);
        h.marker = true;
        let a = accepted(s.receive(clock.at(1060), addr(A), &h));
        assert!(a.discontinuity && a.marker);
        // Unmarked jump: a sender clock jump.
        let b = accepted(s.receive(clock.at(1080), addr(A), &header(1, 5, 123_456)));
        assert!(b.discontinuity && !b.marker);
        let c = accepted(s.receive(clock.at(1100), addr(A), &header(1, 6, 123_456 + 160)));
        assert!(!c.discontinuity);
        assert_eq!(s.stats().timestamp_jumps, 1);
        assert_eq!(
            s.jitter().ticks(),
            0,
            "neither jump counts as network jitter"
        );
    }

    #[test]
    fn report_block_fraction_and_lsr() {
        let clock = Clock(Instant::now());
        let mut s = RecvSession::new(config());
        // 8 of 10 arrive in the first interval.
        for q in [0u16, 1, 2, 4, 5, 6, 8, 9] {
            accepted(s.receive(
                clock.at(u64::from(q) * 20),
                addr(A),
                &header(1, q, u32::from(q) * 160),
            ));
        }
        s.note_sender_report(clock.at(100), NtpShort::new(0x1234_5678));
        let b = s.report_block(clock.at(1600)).unwrap();
        assert_eq!(b.fraction_lost, 51, "2/10 of 256");
        assert_eq!(b.cumulative_lost, 2);
        assert_eq!(b.extended_highest_seq, 9);
        assert_eq!(b.last_sr, NtpShort::new(0x1234_5678));
        assert_eq!(b.delay_since_last_sr, NtpShort::new(0x0001_8000));
        // No loss in the next interval.
        feed(&mut s, &clock, A, 1, 10, 10, 200);
        let b = s.report_block(clock.at(2000)).unwrap();
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 2));
    }

    #[test]
    fn sender_stamps_from_the_tick_counter() {
        let mut tx = SendSession::new(
            Ssrc::new(0xabcd),
            WireSeq::new(65535),
            RtpTimestamp::new(u32::MAX - 100),
            PayloadType::PCMA,
            ClockRate::HZ_8000,
            Duration::from_millis(20),
        );
        let h0 = tx.next_header(0);
        assert!(h0.marker, "first packet is marked");
        assert_eq!(h0.seq, WireSeq::new(65535));
        assert_eq!(h0.timestamp, RtpTimestamp::new(u32::MAX - 100));
        let h1 = tx.next_header(1);
        assert!(!h1.marker);
        assert_eq!(h1.seq, WireSeq::new(0));
        assert_eq!(h1.timestamp, RtpTimestamp::new(59));
        // Ticks 2..=4 silent: the timestamp keeps time, the sequence does not.
        let h5 = tx.next_header(5);
        assert!(h5.marker, "first packet after silence is marked");
        assert_eq!(h5.seq, WireSeq::new(1));
        assert_eq!(h5.timestamp, RtpTimestamp::new(59 + 4 * 160));
        assert_eq!(h5.ssrc, Ssrc::new(0xabcd));
        tx.mark_next();
        assert!(tx.next_header(6).marker);

        let mut small = [0u8; 20];
        assert!(tx.write(7, &[0xd5; 160], &mut small).is_err());
        let mut buf = [0u8; 200];
        let n = tx.write(7, &[0xd5; 160], &mut buf).unwrap();
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(
            p.header.seq,
            WireSeq::new(3),
            "the failed write used no number"
        );
        assert_eq!(p.header.payload_type, PayloadType::PCMA);
        assert_eq!(p.payload.len(), 160);
        assert_eq!(tx.packets_sent(), 5);
        assert_eq!(tx.octets_sent(), 160);
    }

    #[test]
    fn packets_of_several_frames_are_stamped_by_their_first_sample() {
        let mut tx = SendSession::new(
            Ssrc::new(1),
            WireSeq::new(10),
            RtpTimestamp::new(1000),
            PayloadType::PCMU,
            ClockRate::HZ_8000,
            Duration::from_millis(20),
        );
        let mut buf = [0u8; 600];
        let mut sent = Vec::new();
        // 30 ms packets: positions 0, 240, 480; then one that skips ahead (a gap).
        for (pos, len) in [(0u64, 240u64), (240, 240), (480, 240), (960, 240)] {
            let n = tx.write_samples(pos, len, &[0xff; 240], &mut buf).unwrap();
            sent.push(RtpPacket::parse(&buf[..n]).unwrap().header);
        }
        let ts: Vec<u32> = sent.iter().map(|h| h.timestamp.get()).collect();
        assert_eq!(ts, [1000, 1240, 1480, 1960]);
        let marks: Vec<bool> = sent.iter().map(|h| h.marker).collect();
        assert_eq!(marks, [true, false, false, true]);
        let seqs: Vec<u16> = sent.iter().map(|h| h.seq.get()).collect();
        assert_eq!(seqs, [10, 11, 12, 13]);
        // An event packet at tick 8 (audio ended at 1200: a gap, so marked), then audio at
        // tick 9 continues it unmarked.
        let n = tx.write_edited(8, |_| {}, &[0; 4], &mut buf).unwrap();
        assert!(RtpPacket::parse(&buf[..n]).unwrap().header.marker);
        let n = tx.write(9, &[0xff; 160], &mut buf).unwrap();
        let h = RtpPacket::parse(&buf[..n]).unwrap().header;
        assert!(!h.marker);
        assert_eq!(h.timestamp.get(), 1000 + 9 * 160);
    }

    // The source rule. Sans-IO: these addresses are plain values, nothing is sent.
    const WINDOW_MS: u64 = 3000;
    /// What a phone behind NAT puts in its SDP.
    const PRIVATE: &str = "10.0.0.5:4000";
    /// Where its packets really come from (the NAT's public side).
    const NATTED: &str = "192.0.2.10:31000";
    const OTHER: &str = "192.0.2.10:31002";

    /// A session with the leg's settings in `mode`, told at 0 ms that the SDP says `sdp` and
    /// the SIP request came from `signalling`.
    fn ruled(clock: &Clock, mode: StrictRtp, sdp: &str, signalling: &str) -> RecvSession {
        let mut c = config();
        c.relatch_after = 4;
        c.strict = mode;
        c.learn_window = Duration::from_millis(WINDOW_MS);
        let mut s = RecvSession::new(c);
        let sdp = addr(sdp);
        s.set_remote(
            clock.at(0),
            RemoteMedia {
                rtp: Some(sdp),
                rtcp: Some(SocketAddr::new(sdp.ip(), sdp.port() + 1)),
                rtcp_mux: false,
                signalling: Some(addr(signalling).ip()),
            },
        );
        s
    }

    fn all_rejected(res: &[Received]) -> bool {
        res.iter()
            .all(|r| *r == Received::Rejected(Rejection::ForeignSource))
    }

    #[test]
    fn nat_is_evident_from_the_addresses() {
        let rm = |sdp: &str, sig: &str| RemoteMedia {
            rtp: Some(addr(sdp)),
            rtcp: None,
            rtcp_mux: false,
            signalling: Some(sig.parse().unwrap()),
        };
        assert!(!rm(A, "192.0.2.10").nat_evident(), "same address");
        assert!(!rm("[::ffff:192.0.2.10]:4000", "192.0.2.10").nat_evident());
        assert!(rm(A, "192.0.2.11").nat_evident(), "different address");
        assert!(
            rm(PRIVATE, "192.0.2.10").nat_evident(),
            "private behind public"
        );
        assert!(rm("100.64.0.1:4000", "192.0.2.10").nat_evident());
        assert!(rm("[fd00::1]:4000", "2001:db8::1").nat_evident());
        assert!(!RemoteMedia::default().nat_evident(), "nothing to compare");
    }

    #[test]
    fn sdp_source_wins_over_an_earlier_stranger() {
        let clock = Clock(Instant::now());
        for mode in [StrictRtp::Strict, StrictRtp::Learn] {
            let mut s = ruled(&clock, mode, A, A);
            // The stranger is first, in sequence and with one SSRC.
            let res = feed(&mut s, &clock, SPOOF, 0xbad, 100, 3, 0);
            assert!(all_rejected(&res), "{mode:?}: {res:?}");
            let a = accepted(s.receive(clock.at(70), addr(A), &header(1, 500, 0)));
            assert!(a.restarted);
            assert_eq!(s.remote(), Some(addr(A)));
            // The stranger carries on: still nothing, however long.
            let res = feed(&mut s, &clock, SPOOF, 0xbad, 103, 20, 80);
            assert!(all_rejected(&res), "{mode:?}: {res:?}");
            assert_eq!(s.stats().foreign, 23);
        }
        // A learned source gives way to the SDP address at its first packet.
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        let res = feed(&mut s, &clock, NATTED, 1, 100, 4, 0);
        assert!(matches!(res[3], Received::Accepted(_)));
        assert_eq!(s.remote(), Some(addr(NATTED)));
        accepted(s.receive(clock.at(100), addr(PRIVATE), &header(1, 104, 104 * 160)));
        assert_eq!(s.remote(), Some(addr(PRIVATE)));
        let r = s.receive(clock.at(120), addr(NATTED), &header(1, 105, 105 * 160));
        assert_eq!(r, Received::Rejected(Rejection::ForeignSource));
        assert_eq!(s.stats().relatches, 1);
    }

    #[test]
    fn a_stranger_is_never_learned_without_evident_nat() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Strict, A, A);
        // In sequence, one SSRC, inside and after the window, with the real source silent.
        let res = feed(&mut s, &clock, SPOOF, 0xbad, 7000, 300, 0);
        assert!(all_rejected(&res));
        assert_eq!(s.remote(), None);
        assert_eq!(s.stats().foreign, 300);
        assert_eq!(s.stats().received, 0);
        // The same from the SDP's host on another port (the stale-caller case).
        let res = feed(&mut s, &clock, B, 9, 1, 100, 0);
        assert!(all_rejected(&res));
    }

    #[test]
    fn evident_nat_learns_after_enough_packets_inside_the_window_only() {
        let clock = Clock(Instant::now());
        // The proof's last packet just inside the window: learned.
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        let start = WINDOW_MS - 1 - 3 * 20;
        let res = feed(&mut s, &clock, NATTED, 1, 100, 6, start);
        assert!(all_rejected(&res[..3]), "{res:?}");
        let a = match res[3] {
            Received::Accepted(a) => a,
            other => panic!("{other:?}"),
        };
        assert!(a.restarted, "the proof was the probation");
        assert!(
            matches!(res[4], Received::Accepted(_)),
            "after the window too"
        );
        assert_eq!(s.remote(), Some(addr(NATTED)));
        assert_eq!(s.ssrc(), Some(Ssrc::new(1)));
        // The same packets a millisecond later: the window has closed.
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        let res = feed(&mut s, &clock, NATTED, 1, 100, 50, start + 1);
        assert!(all_rejected(&res));
        assert_eq!(s.remote(), None);
    }

    #[test]
    fn one_packet_short_of_the_proof_is_not_enough() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        let res = feed(&mut s, &clock, NATTED, 1, 100, 3, 0);
        assert!(all_rejected(&res));
        // A gap in the sequence starts the count again.
        let res = feed(&mut s, &clock, NATTED, 1, 104, 3, 60);
        assert!(all_rejected(&res), "{res:?}");
        let res = feed(&mut s, &clock, NATTED, 1, 107, 1, 120);
        assert!(matches!(res[0], Received::Accepted(_)), "{res:?}");
    }

    #[test]
    fn an_ssrc_change_mid_proof_restarts_it() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        let mut res = feed(&mut s, &clock, NATTED, 1, 100, 3, 0);
        res.extend(feed(&mut s, &clock, NATTED, 2, 103, 3, 60));
        assert!(all_rejected(&res), "{res:?}");
        let r = s.receive(clock.at(200), addr(NATTED), &header(2, 106, 106 * 160));
        accepted(r);
        assert_eq!(s.ssrc(), Some(Ssrc::new(2)));
    }

    #[test]
    fn a_later_switch_needs_the_same_proof_and_a_window() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        feed(&mut s, &clock, NATTED, 1, 100, 10, 0);
        assert_eq!(s.remote(), Some(addr(NATTED)));
        // Interleaved with the live source: never.
        for i in 0..10u16 {
            let t = 200 + u64::from(i) * 20;
            let r = s.receive(clock.at(t), addr(OTHER), &header(1, 110 + i, 0));
            assert_eq!(r, Received::Rejected(Rejection::ForeignSource));
            accepted(s.receive(clock.at(t + 1), addr(NATTED), &header(1, 110 + i, 0)));
        }
        // The source falls silent: the NAT rebinding is learned by the same proof.
        let res = feed(&mut s, &clock, OTHER, 1, 120, 4, 600);
        assert!(all_rejected(&res[..3]));
        assert!(matches!(res[3], Received::Accepted(_)));
        assert_eq!(s.remote(), Some(addr(OTHER)));
        assert_eq!(s.stats().relatches, 1);
        // After the window no rebinding is learned, however long the source is silent.
        let res = feed(&mut s, &clock, NATTED, 1, 200, 50, WINDOW_MS);
        assert!(all_rejected(&res));
        assert_eq!(s.remote(), Some(addr(OTHER)));
    }

    #[test]
    fn moving_the_remote_media_opens_a_new_window() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        let late = WINDOW_MS + 1000;
        assert!(all_rejected(&feed(
            &mut s, &clock, NATTED, 1, 100, 10, late
        )));
        let moved = RemoteMedia {
            rtp: Some(addr("10.0.0.5:5000")),
            rtcp: Some(addr("10.0.0.5:5001")),
            rtcp_mux: false,
            signalling: Some(addr(A).ip()),
        };
        // Unchanged media (a direction change, say) opens nothing.
        let same = RemoteMedia {
            rtp: Some(addr(PRIVATE)),
            ..moved
        };
        s.set_remote(clock.at(late + 300), same);
        assert!(all_rejected(&feed(
            &mut s,
            &clock,
            NATTED,
            1,
            110,
            10,
            late + 400
        )));
        s.set_remote(clock.at(late + 1000), moved);
        let res = feed(&mut s, &clock, NATTED, 1, 120, 4, late + 1100);
        assert!(matches!(res[3], Received::Accepted(_)), "{res:?}");
        assert_eq!(s.remote(), Some(addr(NATTED)));
    }

    #[test]
    fn an_answer_after_early_media_reopens_the_window_and_keeps_the_source() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        feed(&mut s, &clock, NATTED, 1, 100, 4, 0);
        let late = WINDOW_MS + 500;
        assert!(all_rejected(&feed(&mut s, &clock, OTHER, 2, 1, 10, late)));
        s.open_learning_window(clock.at(late + 1000));
        assert_eq!(s.remote(), Some(addr(NATTED)), "the source is kept");
        let res = feed(&mut s, &clock, OTHER, 2, 1, 4, late + 1100);
        assert!(matches!(res[3], Received::Accepted(_)), "{res:?}");
        assert_eq!(s.remote(), Some(addr(OTHER)));
    }

    #[test]
    fn learn_mode_learns_without_nat_and_the_sdp_address_still_wins() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Learn, A, A);
        let res = feed(&mut s, &clock, B, 1, 100, 4, 0);
        assert!(matches!(res[3], Received::Accepted(_)));
        assert_eq!(s.remote(), Some(addr(B)));
        accepted(s.receive(clock.at(100), addr(A), &header(2, 1, 0)));
        assert_eq!(s.remote(), Some(addr(A)));
        // With the SDP address as the source, nothing else is learned, in the window or not.
        let res = feed(&mut s, &clock, B, 1, 104, 20, 120);
        assert!(all_rejected(&res));
        // Outside the window learn mode learns nothing either.
        let mut s = ruled(&clock, StrictRtp::Learn, A, A);
        assert!(all_rejected(&feed(
            &mut s, &clock, B, 1, 100, 20, WINDOW_MS
        )));
    }

    #[test]
    fn off_mode_latches_the_first_source_heard() {
        let clock = Clock(Instant::now());
        let mut s = ruled(&clock, StrictRtp::Off, A, A);
        accepted(s.receive(clock.at(WINDOW_MS * 2), addr(SPOOF), &header(9, 1, 0)));
        assert_eq!(s.remote(), Some(addr(SPOOF)));
        let r = s.receive(clock.at(WINDOW_MS * 2 + 20), addr(A), &header(1, 1, 0));
        assert_eq!(r, Received::Rejected(Rejection::ForeignSource));
        assert!(s.accept_rtcp(addr(SPOOF)), "RTCP from anywhere");
    }

    #[test]
    fn rtcp_follows_the_source_rule() {
        let clock = Clock(Instant::now());
        // No NAT: the SDP's RTCP address only.
        let mut s = ruled(&clock, StrictRtp::Strict, A, A);
        assert!(s.accept_rtcp(addr("192.0.2.10:4001")));
        assert!(!s.accept_rtcp(addr(A)), "RTP port without rtcp-mux");
        assert!(!s.accept_rtcp(addr(SPOOF)));
        feed(&mut s, &clock, SPOOF, 9, 1, 10, 0);
        assert!(!s.accept_rtcp(addr("198.51.100.7:10000")));
        assert_eq!(s.stats().foreign_rtcp, 3);
        // NAT: a learned RTP source brings its RTCP port + 1.
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        assert!(
            !s.accept_rtcp(addr("192.0.2.10:31001")),
            "nothing learned yet"
        );
        feed(&mut s, &clock, NATTED, 1, 100, 4, 0);
        assert!(s.accept_rtcp(addr("192.0.2.10:31001")));
        assert!(s.accept_rtcp(addr("10.0.0.5:4001")), "the SDP's own");
        assert!(!s.accept_rtcp(addr(NATTED)));
        // With rtcp-mux, the learned RTP address itself.
        let mut s = ruled(&clock, StrictRtp::Strict, PRIVATE, A);
        s.set_remote(
            clock.at(0),
            RemoteMedia {
                rtp: Some(addr(PRIVATE)),
                rtcp: Some(addr(PRIVATE)),
                rtcp_mux: true,
                signalling: Some(addr(A).ip()),
            },
        );
        feed(&mut s, &clock, NATTED, 1, 100, 4, 0);
        assert!(s.accept_rtcp(addr(NATTED)));
        assert!(!s.accept_rtcp(addr("192.0.2.10:31001")));
    }
}
