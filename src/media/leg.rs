//! One call's media leg, sans-IO: RTP in (latching, jitter buffer, decode, loss concealment,
//! in-band DTMF), a 20 ms tick out (echo, a playing source, or silence; encode; RTP), and the
//! events a call cares about (digits, playback done, RTP timeout).
//!
//! The worker owns the socket: it hands received datagrams to [`Leg::handle_packet`] and calls
//! [`Leg::tick`] once per 20 ms with a send callback. A leg in a conference room is ticked in
//! two halves instead, so the room can mix in between: [`Leg::receive`] (its input frame), then
//! [`Leg::send`] with the room's audio, or [`Leg::send_encoded`] with the room's shared frame
//! already encoded once for every listener with the same codec. Nothing here allocates per packet or per
//! frame; buffers are sized once in [`Leg::new`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::codec::{AudioCodec, CodecKind};
pub use super::dtmf::DtmfMethod;
use super::dtmf::{
    DetectorConfig, Digit, DigitPhase, DtmfEvent, DtmfMerger, EventReceiver, EventSender,
    InbandDetector, InbandSender, SampleClock,
};
use super::record::{RecordSession, RecorderHandle, Step, StopReason};
use crate::rtp::jitter::{JitterBuffer, JitterConfig, Pop};
use crate::rtp::packet::{classify, PacketKind, RtpPacket};
use crate::rtp::plc::G711Plc;
use crate::rtp::rtcp::{RtcpSession, MAX_COMPOUND_LEN};
use crate::rtp::session::{Received, RecvConfig, RecvSession, SendSession};
use crate::rtp::types::{ClockRate, PayloadType, PayloadTypeSet, RtpTimestamp, Ssrc, WireSeq};
use crate::sdp::Direction;

/// Frame duration of the media clock.
pub const FRAME: Duration = Duration::from_millis(20);
/// Frames cut from a recording's end when a terminator key stopped it: detection lags the
/// tone by up to this much.
const TERMINATOR_TRIM_FRAMES: u64 = 5;
/// The longest packet we play out: 60 ms at 8 kHz.
const MAX_PACKET_SAMPLES: usize = 480;
/// Samples per frame at 8 kHz, the rate of every codec so far.
pub const FRAME_SAMPLES: usize = 160;

/// Something that produces outbound audio, a frame at a time, without allocating.
pub trait AudioSource: Send {
    /// Fills `out`; returns how many samples were written (fewer than asked: finished).
    fn fill(&mut self, out: &mut [i16]) -> usize;
}

impl AudioSource for super::tone::ToneGenerator {
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::tone::ToneGenerator::fill(self, out)
    }
}

impl AudioSource for super::prompt::Playlist {
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::prompt::Playlist::fill(self, out)
    }
}

impl AudioSource for super::prompt::PromptPlayer {
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::prompt::PromptPlayer::fill(self, out)
    }
}

/// Which of the leg's two ports a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The RTP port.
    Rtp,
    /// The RTCP port (RTP port + 1), or the RTP port itself with rtcp-mux.
    Rtcp,
}

/// What the leg reports to its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// A key press.
    Digit {
        /// The key.
        digit: Digit,
        /// How it was detected.
        method: DtmfMethod,
    },
    /// A playback finished (`interrupted`: stopped by a command or barge-in).
    PlayDone {
        /// The id given with the play command.
        id: u64,
        /// True when it did not run to its end.
        interrupted: bool,
    },
    /// A recording ended (its file is finalised by the writer).
    RecordDone {
        /// The recording's id (its file and sidecar name).
        id: String,
        /// Why it stopped.
        reason: StopReason,
        /// Audio kept, after trimming trailing silence or the terminator tone.
        kept: Duration,
        /// Digits pressed while recording.
        digits: String,
        /// Discarded for being shorter than the minimum.
        discarded: bool,
    },
    /// No RTP for the configured time while the peer should be sending.
    RtpTimeout,
    /// The leg was removed from its worker: its final receive statistics.
    Closed(RtpSummary),
}

/// A leg's receive statistics at its end, for the call's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpSummary {
    /// RTP packets accepted.
    pub packets: u64,
    /// Packets lost (expected minus received, never negative).
    pub lost: u64,
    /// Interarrival jitter (RFC 3550 A.8), in microseconds.
    pub jitter_us: u64,
}

/// What the call asks of its leg; applied at the start of the next tick.
pub enum LegCommand {
    /// Play a source; a digit stops it when `barge_in` is set.
    Play {
        /// Reported back in `PlayDone`.
        id: u64,
        /// The audio.
        source: Box<dyn AudioSource>,
        /// Stop on the first key press.
        barge_in: bool,
    },
    /// Stop the current playback.
    StopPlay,
    /// Send back what is received.
    Echo(bool),
    /// A key press that arrived by SIP INFO, merged with what the media saw.
    InfoDigit(DtmfEvent),
    /// Record the call; the policy decides what and until when.
    Record {
        /// Frame-by-frame policy (mode, limits, terminators).
        session: Box<RecordSession>,
        /// Where frames go (a bounded queue to the writer thread).
        handle: RecorderHandle,
    },
    /// Stop the current recording.
    StopRecord,
    /// Send DTMF: RFC 4733 events when negotiated (or `inband`), else tones in the audio.
    SendDtmf {
        /// Digits 0-9, *, #, A-D.
        digits: String,
        /// Force in-band tones.
        inband: bool,
    },
    /// The SDP changed (re-INVITE): remote address and direction, from our point of view.
    Update {
        /// Where to send RTP (None: only to a latched source).
        remote: Option<SocketAddr>,
        /// Where to send RTCP.
        remote_rtcp: Option<SocketAddr>,
        /// Our direction.
        direction: Direction,
    },
}

impl std::fmt::Debug for LegCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LegCommand::Play { id, barge_in, .. } => {
                write!(f, "Play {{ id: {id}, barge_in: {barge_in} }}")
            }
            LegCommand::StopPlay => write!(f, "StopPlay"),
            LegCommand::Echo(on) => write!(f, "Echo({on})"),
            LegCommand::InfoDigit(e) => write!(f, "InfoDigit({:?})", e.digit),
            LegCommand::Record { handle, .. } => write!(f, "Record({})", handle.id()),
            LegCommand::StopRecord => write!(f, "StopRecord"),
            LegCommand::SendDtmf { digits, inband } => {
                write!(f, "SendDtmf {{ digits: {digits:?}, inband: {inband} }}")
            }
            LegCommand::Update {
                remote, direction, ..
            } => write!(
                f,
                "Update {{ remote: {remote:?}, direction: {direction:?} }}"
            ),
        }
    }
}

/// What a leg is created with.
#[derive(Debug, Clone)]
pub struct LegConfig {
    /// Negotiated codec.
    pub codec: CodecKind,
    /// Its payload type.
    pub payload_type: PayloadType,
    /// The telephone-event payload type, when negotiated.
    pub telephone_event: Option<PayloadType>,
    /// Where to send RTP until a source latches (from the SDP).
    pub remote: Option<SocketAddr>,
    /// Where to send RTCP (from the SDP: port+1, `a=rtcp`, or the RTP port with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP shares the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Our direction.
    pub direction: Direction,
    /// End the call when no RTP arrives for this long (not while the peer is on hold).
    pub rtp_timeout: Duration,
    /// Our SSRC.
    pub ssrc: Ssrc,
    /// What the in-band DTMF detector accepts as a key tone.
    pub dtmf: DetectorConfig,
}

/// Counters of one leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    /// RTP packets accepted.
    pub packets_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Frames decoded from packets.
    pub frames_decoded: u64,
    /// Frames concealed (lost or late).
    pub frames_concealed: u64,
    /// Datagrams dropped (not RTP, rejected by the session, undecodable).
    pub dropped: u64,
}

/// A snapshot of a leg's receive, jitter and RTCP statistics.
#[derive(Debug, Clone, Copy)]
pub struct LegReport {
    /// Leg counters.
    pub leg: LegStats,
    /// RTP receive statistics (loss, jitter, duplicates).
    pub recv: crate::rtp::session::RecvStats,
    /// Jitter buffer statistics.
    pub jitter: crate::rtp::jitter::JitterStats,
    /// RTCP statistics (what the peer reports about us, RTT).
    pub rtcp: crate::rtp::rtcp::RtcpStats,
}

/// One call's media.
pub struct Leg {
    cfg: LegConfig,
    codec: Box<dyn AudioCodec>,
    recv: RecvSession,
    send: SendSession,
    rtcp: RtcpSession,
    rtcp_buf: [u8; MAX_COMPOUND_LEN],
    jitter: JitterBuffer,
    /// Samples per received packet (the peer's ptime), learnt from its packets.
    packet_samples: usize,
    /// Decoded audio not yet played out: a packet may hold more than one tick's worth.
    fifo: [i16; FRAME_SAMPLES + MAX_PACKET_SAMPLES],
    fifo_len: usize,
    scratch: [i16; MAX_PACKET_SAMPLES],
    plc: G711Plc,
    inband: InbandDetector,
    inband_clock: SampleClock,
    rfc4733: Option<EventReceiver>,
    merger: DtmfMerger,
    event_sender: Option<EventSender>,
    inband_sender: InbandSender,
    playing: Option<(u64, Box<dyn AudioSource>, bool)>,
    recording: Option<(Box<RecordSession>, RecorderHandle)>,
    echo: bool,
    /// An in-band key tone is being heard (between its detected start and end).
    inband_active: bool,
    /// An RFC 4733 key press is in progress.
    rfc4733_active: bool,
    last_rx: Instant,
    timed_out: bool,
    talkspurt: bool,
    pcm_in: [i16; FRAME_SAMPLES],
    pcm_out: [i16; FRAME_SAMPLES],
    payload: [u8; 2 * FRAME_SAMPLES],
    packet: [u8; 1500],
    events: VecDeque<LegEvent>,
    stats: LegStats,
}

impl Leg {
    /// A leg starting at `now`.
    pub fn new(cfg: LegConfig, now: Instant) -> Result<Self, LegError> {
        let rate = ClockRate::HZ_8000;
        let mut pts = PayloadTypeSet::empty().with(cfg.payload_type);
        if let Some(te) = cfg.telephone_event {
            pts.insert(te);
        }
        let mut recv_cfg = RecvConfig::new(rate, pts);
        // A phone's first packet is real audio; do not throw it away in probation.
        recv_cfg.probation = 1;
        let send = SendSession::new(
            cfg.ssrc,
            WireSeq::new(fastrand::u16(..)),
            RtpTimestamp::new(fastrand::u32(..)),
            cfg.payload_type,
            rate,
            FRAME,
        );
        let inband =
            InbandDetector::with_config(8000, cfg.dtmf).map_err(|e| LegError(e.to_string()))?;
        let inband_clock =
            SampleClock::new(now, 8000).ok_or_else(|| LegError("sample clock".into()))?;
        let inband_sender = InbandSender::new(8000).map_err(|e| LegError(e.to_string()))?;
        let cname = format!("switchboard-{:08x}", cfg.ssrc.get());
        Ok(Leg {
            rtcp: RtcpSession::new(cfg.ssrc, &cname, rate, now),
            rtcp_buf: [0; MAX_COMPOUND_LEN],
            codec: cfg.codec.new_codec(),
            recv: RecvSession::new(recv_cfg),
            send,
            jitter: JitterBuffer::new(jitter_config(FRAME_SAMPLES)),
            packet_samples: FRAME_SAMPLES,
            fifo: [0; FRAME_SAMPLES + MAX_PACKET_SAMPLES],
            fifo_len: 0,
            scratch: [0; MAX_PACKET_SAMPLES],
            plc: G711Plc::new(),
            inband,
            inband_clock,
            rfc4733: cfg.telephone_event.map(|pt| EventReceiver::new(pt, rate)),
            merger: DtmfMerger::default(),
            event_sender: cfg.telephone_event.map(|pt| EventSender::new(pt, rate)),
            inband_sender,
            playing: None,
            recording: None,
            echo: false,
            inband_active: false,
            rfc4733_active: false,
            last_rx: now,
            timed_out: false,
            talkspurt: false,
            pcm_in: [0; FRAME_SAMPLES],
            pcm_out: [0; FRAME_SAMPLES],
            payload: [0; 2 * FRAME_SAMPLES],
            packet: [0; 1500],
            events: VecDeque::with_capacity(16),
            stats: LegStats::default(),
            cfg,
        })
    }

    /// Counters.
    pub fn stats(&self) -> LegStats {
        self.stats
    }

    /// Receive, jitter buffer and RTCP statistics.
    pub fn report(&self) -> LegReport {
        LegReport {
            leg: self.stats,
            recv: self.recv.stats(),
            jitter: self.jitter.stats(),
            rtcp: self.rtcp.stats(),
        }
    }

    /// Where RTCP goes: the SDP's RTCP address, else the latched RTP source's port + 1 (or the
    /// RTP address itself with rtcp-mux).
    fn rtcp_destination(&self) -> Option<SocketAddr> {
        if let Some(a) = self.cfg.remote_rtcp {
            return Some(a);
        }
        let rtp = self.recv.remote().or(self.cfg.remote)?;
        if self.cfg.rtcp_mux {
            Some(rtp)
        } else {
            Some(SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)))
        }
    }

    /// Handles one datagram received on the RTCP port.
    pub fn handle_rtcp(&mut self, now: Instant, wallclock: SystemTime, bytes: &[u8]) {
        if self.rtcp.handle_packet(now, wallclock, bytes).is_err() {
            self.stats.dropped += 1;
        }
    }

    /// The final RTCP BYE for when the leg goes away, with where to send it.
    pub fn rtcp_bye(&mut self) -> Option<(SocketAddr, &[u8])> {
        let dest = self.rtcp_destination()?;
        let n = self.rtcp.bye(&mut self.rtcp_buf).ok()?;
        Some((dest, &self.rtcp_buf[..n]))
    }

    /// Receive statistics so far.
    pub fn rtp_summary(&self) -> RtpSummary {
        RtpSummary {
            packets: self.stats.packets_in,
            lost: self.recv.stats().lost.max(0) as u64,
            jitter_us: self.recv.jitter().to_duration().as_micros() as u64,
        }
    }

    /// The next event for the call.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// Applies a command from the call.
    pub fn apply(&mut self, now: Instant, cmd: LegCommand) {
        match cmd {
            LegCommand::Play {
                id,
                source,
                barge_in,
            } => {
                self.stop_play(true);
                self.playing = Some((id, source, barge_in));
            }
            LegCommand::StopPlay => self.stop_play(true),
            LegCommand::Record { session, handle } => {
                self.stop_record(|s| s.request_stop());
                self.recording = Some((session, handle));
            }
            LegCommand::StopRecord => self.stop_record(|s| s.request_stop()),
            LegCommand::Echo(on) => self.echo = on,
            LegCommand::InfoDigit(e) => self.key_event(e),
            LegCommand::SendDtmf { digits, inband } => {
                let queued = match self.event_sender.as_mut() {
                    Some(s) if !inband => s.queue(&digits).is_ok(),
                    _ => self.inband_sender.queue(&digits).is_ok(),
                };
                if !queued {
                    tracing::debug!(%digits, "invalid DTMF digits not sent");
                }
            }
            LegCommand::Update {
                remote,
                remote_rtcp,
                direction,
            } => {
                if remote != self.cfg.remote {
                    // The peer moved its media: learn the new source from scratch.
                    self.recv.relearn();
                }
                self.cfg.remote = remote;
                self.cfg.remote_rtcp = remote_rtcp;
                self.cfg.direction = direction;
                // Coming off hold, the peer gets a full timeout to resume sending.
                self.last_rx = now;
                self.timed_out = false;
            }
        }
    }

    /// Every key press, whatever its method, goes through the merger so each is reported once.
    fn key_event(&mut self, e: DtmfEvent) {
        match e.method {
            DtmfMethod::Inband => self.inband_active = e.phase == DigitPhase::Began,
            DtmfMethod::Rfc4733 => self.rfc4733_active = e.phase == DigitPhase::Began,
            _ => {}
        }
        if e.phase != DigitPhase::Began {
            let _ = self.merger.push(e);
            return;
        }
        if let Some(k) = self.merger.push(e) {
            self.events.push_back(LegEvent::Digit {
                digit: k.digit,
                method: k.method,
            });
            let stops = self
                .recording
                .as_mut()
                .and_then(|(s, _)| s.on_digit(k.digit))
                .is_some();
            if stops {
                if let Some((session, handle)) = self.recording.take() {
                    self.finish_record(session, handle);
                }
            }
            if self.playing.as_ref().is_some_and(|p| p.2) {
                self.stop_play(true);
            }
        }
    }

    /// The call ended: finalise a recording in progress as a hangup and stop playback.
    pub fn close(&mut self) {
        self.stop_record(|s| s.hangup());
        self.playing = None;
        let r = self.report();
        tracing::debug!(
            packets_in = r.leg.packets_in,
            packets_out = r.leg.packets_out,
            decoded = r.leg.frames_decoded,
            concealed = r.leg.frames_concealed,
            dropped = r.leg.dropped,
            lost = r.recv.lost,
            jitter_late = r.jitter.late,
            remote_fraction_lost = r.rtcp.remote_fraction_lost,
            rtt_ms = ?r.rtcp.rtt_ms,
            "leg closed"
        );
    }

    /// Ends the recording (if any) with the reason `stop` gives, finalises it and reports.
    fn stop_record(&mut self, stop: impl FnOnce(&mut RecordSession) -> StopReason) {
        let Some((mut session, handle)) = self.recording.take() else {
            return;
        };
        let _ = stop(&mut session);
        self.finish_record(session, handle);
    }

    fn finish_record(&mut self, session: Box<RecordSession>, handle: RecorderHandle) {
        let Some(mut outcome) = session.outcome() else {
            return;
        };
        if let StopReason::Terminator(_) = outcome.reason {
            // The key's own tone was recorded in the frames before it was recognised.
            outcome = outcome.trim_tail(TERMINATOR_TRIM_FRAMES);
        }
        let event = LegEvent::RecordDone {
            id: handle.id().to_string(),
            reason: outcome.reason,
            kept: outcome.kept_duration(),
            digits: outcome.digits.clone(),
            discarded: outcome.discard(),
        };
        handle.finish(outcome);
        self.events.push_back(event);
    }

    /// Feeds this tick's audio (what we heard and what we sent) to the recording.
    fn record_frame(&mut self) {
        let Some((session, handle)) = self.recording.as_mut() else {
            return;
        };
        let step = session.push_frame(&self.pcm_in, &self.pcm_out);
        handle.push(session.frame());
        if let Step::Stop(_) = step {
            if let Some((session, handle)) = self.recording.take() {
                self.finish_record(session, handle);
            }
        }
    }

    fn stop_play(&mut self, interrupted: bool) {
        if let Some((id, _, _)) = self.playing.take() {
            self.events
                .push_back(LegEvent::PlayDone { id, interrupted });
        }
    }

    /// Handles one datagram received on the leg's RTP port.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        match classify(bytes) {
            PacketKind::Rtp => {}
            // rtcp-mux (RFC 5761 §4): RTCP on the RTP port.
            PacketKind::Rtcp => return self.handle_rtcp(now, wallclock, bytes),
            PacketKind::Other => {
                self.stats.dropped += 1;
                return;
            }
        }
        let Ok(pkt) = RtpPacket::parse(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        let acc = match self.recv.receive(now, from, &pkt.header) {
            Received::Accepted(a) => a,
            Received::Rejected(_) => {
                self.stats.dropped += 1;
                return;
            }
        };
        self.stats.packets_in += 1;
        self.last_rx = now;
        self.timed_out = false;
        if Some(pkt.header.payload_type) == self.cfg.telephone_event {
            // RFC 4733 events are handled apart from audio (never through the jitter buffer).
            if let Some(rx) = self.rfc4733.as_mut() {
                if acc.restarted {
                    rx.reset();
                }
                let first = rx.push(now, pkt.header.timestamp, pkt.header.marker, pkt.payload);
                let mut batch = [None; 4];
                batch[0] = first;
                for slot in batch.iter_mut().skip(1) {
                    *slot = rx.poll_event();
                }
                for e in batch.into_iter().flatten() {
                    self.key_event(e);
                }
            }
            return;
        }
        let samples = self.cfg.codec.samples_in(pkt.payload.len());
        if samples == 0 || samples > MAX_PACKET_SAMPLES || !samples.is_multiple_of(80) {
            // Packets of 10 ms multiples up to 60 ms; anything else cannot be played out.
            self.stats.dropped += 1;
            return;
        }
        if samples != self.packet_samples {
            // The peer's packetization (ptime) changed, or this is the first packet: the jitter
            // buffer counts in packets, so it starts over at the new size.
            self.packet_samples = samples;
            self.jitter = JitterBuffer::new(jitter_config(samples));
        } else if acc.restarted {
            self.jitter.reset();
            self.codec.reset();
        }
        self.jitter.push(now, acc.seq, acc.timestamp, pkt.payload);
    }

    /// Produces one 20 ms frame: consumes received audio, sends ours (and RTCP when due)
    /// through `send`. `tick` counts frames since the worker started; it stamps RTP timestamps.
    ///
    /// The composition of [`Leg::receive`] and [`Leg::send`] without room audio, for a leg
    /// that is not in a conference.
    pub fn tick(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        tick: u64,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        self.receive(now);
        self.send(now, wallclock, tick, None, send);
    }

    /// The receive half of a tick: the next 20 ms of received audio (jitter buffer, decode,
    /// concealment) into [`Leg::input`], digit detection and the RTP timeout.
    pub fn receive(&mut self, now: Instant) {
        self.receive_frame(now);
        if let Some(e) = self.rfc4733.as_mut().and_then(|rx| rx.handle_timeout(now)) {
            self.key_event(e);
        }
        self.check_timeout(now);
    }

    /// This tick's received audio (silence when nothing is coming in).
    pub fn input(&self) -> &[i16; FRAME_SAMPLES] {
        &self.pcm_in
    }

    /// Whether this tick's input carries received audio (decoded or concealed), not filler.
    pub fn hearing(&self) -> bool {
        self.talkspurt
    }

    /// Whether an in-band key tone is sounding in the input now: a room leaves that audio out
    /// of its mix so that key presses are not heard by the other members.
    pub fn dtmf_sounding(&self) -> bool {
        self.inband_active || self.rfc4733_active || self.inband.tone_suspected()
    }

    /// The codec this leg sends with.
    pub fn codec(&self) -> CodecKind {
        self.cfg.codec
    }

    /// The send half of a tick: this leg's frame is its playback (which replaces the room's
    /// audio), else `room`, else the echo of its input, else silence; then in-band DTMF being
    /// sent, the recording, encode and RTP, and RTCP when due.
    pub fn send(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        tick: u64,
        room: Option<&[i16; FRAME_SAMPLES]>,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        self.produce_frame(room);
        self.record_frame();
        if self.cfg.direction.sends() {
            let dest = self.recv.remote().or(self.cfg.remote);
            if let Some(dest) = dest {
                self.send_frame(tick, dest, None, send);
            }
        }
        self.send_rtcp(now, wallclock, send);
    }

    /// The send half of a tick with audio already encoded for this leg's codec: `payload` is
    /// `pcm` encoded, shared by every listener of a room with the same codec so the room
    /// encodes its common frame once. A leg with its own playback, echo or in-band DTMF to
    /// send encodes for itself instead.
    pub fn send_encoded(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        tick: u64,
        pcm: &[i16; FRAME_SAMPLES],
        payload: &[u8],
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        if self.playing.is_some() || self.echo || !self.inband_sender.is_idle() {
            return self.send(now, wallclock, tick, Some(pcm), send);
        }
        if self.recording.is_some() {
            self.pcm_out = *pcm;
            self.record_frame();
        }
        if self.cfg.direction.sends() {
            let dest = self.recv.remote().or(self.cfg.remote);
            if let Some(dest) = dest {
                self.send_frame(tick, dest, Some(payload), send);
            }
        }
        self.send_rtcp(now, wallclock, send);
    }

    fn send_rtcp(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        if self.rtcp.poll_timeout().is_some_and(|t| t <= now) {
            let sending = self.cfg.direction.sends().then_some(&self.send);
            let written = self.rtcp.handle_timeout(
                now,
                Some(&mut self.recv),
                sending,
                wallclock,
                &mut self.rtcp_buf,
            );
            if let (Some(n), Some(dest)) = (written, self.rtcp_destination()) {
                let port = if self.cfg.rtcp_mux {
                    Port::Rtp
                } else {
                    Port::Rtcp
                };
                send(port, dest, &self.rtcp_buf[..n]);
            }
        }
    }

    /// Sends this tick's packet: a telephone-event while one is being sent (RFC 4733 §2.5:
    /// events replace the audio they stand for), else the encoded audio frame.
    fn send_frame(
        &mut self,
        tick: u64,
        dest: SocketAddr,
        encoded: Option<&[u8]>,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        let audio_ts = self.send.timestamp_at(tick);
        if let Some(ev) = self.event_sender.as_mut().and_then(|s| s.poll(audio_ts)) {
            let written = self.send.write_edited(
                tick,
                |h| {
                    h.payload_type = ev.payload_type;
                    h.timestamp = ev.timestamp;
                    h.marker = ev.marker;
                },
                &ev.payload,
                &mut self.packet,
            );
            if let Ok(len) = written {
                send(Port::Rtp, dest, &self.packet[..len]);
                self.stats.packets_out += 1;
            }
            return;
        }
        let payload = match encoded {
            Some(p) => p,
            None => match self.codec.encode(&self.pcm_out, &mut self.payload) {
                Ok(n) => &self.payload[..n],
                Err(_) => return,
            },
        };
        if let Ok(len) = self.send.write(tick, payload, &mut self.packet) {
            send(Port::Rtp, dest, &self.packet[..len]);
            self.stats.packets_out += 1;
        }
    }

    /// Fills `pcm_in` with this tick's 20 ms of received audio. Packets may carry 10-60 ms,
    /// so decoded audio passes through a small sample FIFO; the jitter buffer is asked for a
    /// packet only when the FIFO runs short.
    fn receive_frame(&mut self, now: Instant) {
        while self.fifo_len < FRAME_SAMPLES {
            let n = self.packet_samples;
            let out = &mut self.scratch[..n];
            let decoded = match self.jitter.pop_frame(now) {
                Pop::Frame(f) => {
                    let ok = matches!(self.codec.decode(f.payload, out), Ok(got) if got == n);
                    if ok {
                        self.talkspurt = true;
                        let _ = self.plc.good_frame(out);
                        self.stats.frames_decoded += 1;
                    }
                    ok
                }
                Pop::Lost(_) => false,
                Pop::Empty if !self.talkspurt => {
                    // Nothing is playing: this tick hears silence.
                    let missing = FRAME_SAMPLES - self.fifo_len;
                    self.fifo[self.fifo_len..FRAME_SAMPLES].fill(0);
                    self.fifo_len += missing;
                    break;
                }
                Pop::Empty => false,
            };
            if !decoded {
                let _ = self.plc.lost_frame(out);
                self.stats.frames_concealed += 1;
                if !self.plc.concealing() {
                    self.talkspurt = false;
                }
            }
            self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&self.scratch[..n]);
            self.fifo_len += n;
        }
        self.pcm_in.copy_from_slice(&self.fifo[..FRAME_SAMPLES]);
        self.fifo.copy_within(FRAME_SAMPLES..self.fifo_len, 0);
        self.fifo_len -= FRAME_SAMPLES;
        // At most a couple of digit events per 20 ms frame; collect them without allocating.
        let mut found = [None; 4];
        let mut count = 0;
        let clock = &self.inband_clock;
        self.inband.push(&self.pcm_in, |e| {
            if count < found.len() {
                found[count] = Some(DtmfEvent::from_inband(&e, clock));
                count += 1;
            }
        });
        for e in found.into_iter().flatten() {
            self.key_event(e);
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        // A peer that put us on hold (it does not send) owes us no RTP.
        if self.timed_out || !self.cfg.direction.receives() {
            return;
        }
        if now.saturating_duration_since(self.last_rx) >= self.cfg.rtp_timeout {
            self.timed_out = true;
            self.events.push_back(LegEvent::RtpTimeout);
        }
    }

    fn produce_frame(&mut self, room: Option<&[i16; FRAME_SAMPLES]>) {
        if let Some((id, source, _)) = self.playing.as_mut() {
            let n = source.fill(&mut self.pcm_out);
            if n < FRAME_SAMPLES {
                self.pcm_out[n..].fill(0);
                let id = *id;
                self.playing = None;
                self.events.push_back(LegEvent::PlayDone {
                    id,
                    interrupted: false,
                });
            }
        } else if let Some(room) = room {
            self.pcm_out = *room;
        } else if self.echo {
            self.pcm_out = self.pcm_in;
        } else {
            self.pcm_out.fill(0);
        }
        if !self.inband_sender.is_idle() {
            // In-band DTMF replaces whatever else would be heard.
            let n = self.inband_sender.fill(&mut self.pcm_out);
            self.pcm_out[n..].fill(0);
        }
    }
}

/// A jitter buffer for packets of `samples` samples at 8 kHz.
fn jitter_config(samples: usize) -> JitterConfig {
    JitterConfig {
        frame: Duration::from_micros(samples as u64 * 125),
        slot_bytes: MAX_PACKET_SAMPLES * 2,
        ..JitterConfig::default()
    }
}

/// A leg could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot create media leg: {0}")]
pub struct LegError(String);

/// A PCMU leg with telephone-event 101 towards 127.0.0.1:40000, for the tests below.
#[cfg(test)]
fn test_leg(now: Instant) -> Leg {
    let cfg = LegConfig {
        codec: CodecKind::Pcmu,
        payload_type: PayloadType::PCMU,
        telephone_event: Some(PayloadType::DEFAULT_TELEPHONE_EVENT),
        remote: "127.0.0.1:40000".parse().ok(),
        remote_rtcp: None,
        rtcp_mux: false,
        direction: Direction::SendRecv,
        rtp_timeout: Duration::from_secs(60),
        ssrc: Ssrc::new(7),
        dtmf: DetectorConfig::default(),
    };
    match Leg::new(cfg, now) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::g711::{ulaw_decode, ulaw_encode};
    use crate::media::tone::{ToneGenerator, ToneSpec};
    use crate::rtp::packet::RtpHeader;

    const PEER: &str = "127.0.0.1:40000";

    fn leg(now: Instant) -> Leg {
        test_leg(now)
    }

    fn tone_power(pcm: &[i16], freq: f64) -> f64 {
        crate::media::level::tone_share(pcm, freq, 8000.0)
    }

    /// RTP packets of PCMU carrying `pcm` in 20 ms frames.
    fn packets(pcm: &[i16], first_seq: u16) -> Vec<Vec<u8>> {
        packets_of(pcm, first_seq, FRAME_SAMPLES)
    }

    /// RTP packets of PCMU carrying `pcm`, `per` samples each.
    fn packets_of(pcm: &[i16], first_seq: u16, per: usize) -> Vec<Vec<u8>> {
        pcm.chunks(per)
            .enumerate()
            .map(|(i, frame)| {
                let payload: Vec<u8> = frame.iter().map(|&s| ulaw_encode(s)).collect();
                let header = RtpHeader {
                    marker: i == 0,
                    payload_type: PayloadType::PCMU,
                    seq: WireSeq::new(first_seq.wrapping_add(i as u16)),
                    timestamp: RtpTimestamp::new(1000 + (i * per) as u32),
                    ssrc: Ssrc::new(99),
                };
                let p = RtpPacket::new(header, &payload);
                let mut out = vec![0u8; 1500];
                let n = p.write(&mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect()
    }

    fn generate(spec: &str, ms: usize) -> Vec<i16> {
        let spec: ToneSpec = spec.parse().unwrap();
        let mut g = ToneGenerator::new(&spec, 8000).unwrap();
        let mut pcm = vec![0i16; ms * 8];
        g.fill(&mut pcm);
        pcm
    }

    /// Feeds `input` as RTP, one packet per tick, and returns the decoded audio the leg sent.
    fn run(leg: &mut Leg, t0: Instant, input: &[Vec<u8>], ticks: usize) -> Vec<i16> {
        let mut sent = Vec::new();
        for n in 0..ticks {
            let now = t0 + FRAME * n as u32;
            if let Some(p) = input.get(n) {
                leg.handle_packet(now, SystemTime::now(), PEER.parse().unwrap(), p);
            }
            leg.tick(now, SystemTime::now(), n as u64, &mut |port, to, bytes| {
                if port == Port::Rtcp {
                    return;
                }
                assert_eq!(to, PEER.parse().unwrap());
                let pkt = RtpPacket::parse(bytes).unwrap();
                assert_eq!(pkt.header.ssrc, Ssrc::new(7));
                sent.extend(pkt.payload.iter().map(|&b| ulaw_decode(b)));
            });
        }
        sent
    }

    #[test]
    fn echo_returns_the_received_tone() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        l.apply(t0, LegCommand::Echo(true));
        let input = packets(&generate("1000/1000@-10", 1000), 65500);
        let out = run(&mut l, t0, &input, 60);
        assert_eq!(out.len(), 60 * FRAME_SAMPLES, "a packet every tick");
        // After the jitter buffer's delay the echo carries the tone.
        let tail = &out[20 * FRAME_SAMPLES..50 * FRAME_SAMPLES];
        assert!(
            tone_power(tail, 1000.0) > 0.9,
            "{}",
            tone_power(tail, 1000.0)
        );
        assert_eq!(l.stats().frames_decoded, 50);
        assert_eq!(l.stats().packets_out, 60);
    }

    #[test]
    fn thirty_ms_packets_are_played_out_in_twenty_ms_ticks() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        l.apply(t0, LegCommand::Echo(true));
        let input = packets_of(&generate("1000/1500@-10", 1500), 7, 240);
        // Two 30 ms packets arrive every three 20 ms ticks.
        let mut sent = Vec::new();
        let from: SocketAddr = PEER.parse().unwrap();
        let mut concealed_while_streaming = None;
        for n in 0..90usize {
            let now = t0 + FRAME * n as u32;
            if n == 70 {
                concealed_while_streaming = Some(l.stats().frames_concealed);
            }
            if n % 3 != 2 {
                if let Some(p) = input.get(n / 3 * 2 + n % 3) {
                    l.handle_packet(now, SystemTime::now(), from, p);
                }
            }
            l.tick(now, SystemTime::now(), n as u64, &mut |port, _, bytes| {
                if port == Port::Rtp {
                    let p = RtpPacket::parse(bytes).unwrap();
                    sent.extend(
                        p.payload
                            .iter()
                            .map(|&b| crate::media::codec::g711::ulaw_decode(b)),
                    );
                }
            });
        }
        assert_eq!(l.stats().frames_decoded, 50, "every 30 ms packet decoded");
        let middle = &sent[20 * FRAME_SAMPLES..60 * FRAME_SAMPLES];
        assert!(
            tone_power(middle, 1000.0) > 0.9,
            "{}",
            tone_power(middle, 1000.0)
        );
        assert_eq!(
            concealed_while_streaming,
            Some(0),
            "no gap while packets keep coming"
        );
    }

    /// Ticks `l` with the split halves, handing `room` as room audio (encoded once beforehand
    /// when `encoded`), and returns the decoded audio sent.
    fn run_in_room(
        l: &mut Leg,
        t0: Instant,
        input: &[Vec<u8>],
        room: &[i16; FRAME_SAMPLES],
        encoded: bool,
        ticks: usize,
    ) -> Vec<i16> {
        let payload: Vec<u8> = room.iter().map(|&s| ulaw_encode(s)).collect();
        let mut sent = Vec::new();
        for n in 0..ticks {
            let now = t0 + FRAME * n as u32;
            if let Some(p) = input.get(n) {
                l.handle_packet(now, SystemTime::now(), PEER.parse().unwrap(), p);
            }
            l.receive(now);
            let mut sink = |port: Port, _: SocketAddr, bytes: &[u8]| {
                if port == Port::Rtp {
                    let pkt = RtpPacket::parse(bytes).unwrap();
                    sent.extend(pkt.payload.iter().map(|&b| ulaw_decode(b)));
                }
            };
            if encoded {
                l.send_encoded(now, SystemTime::now(), n as u64, room, &payload, &mut sink);
            } else {
                l.send(now, SystemTime::now(), n as u64, Some(room), &mut sink);
            }
        }
        sent
    }

    #[test]
    fn room_audio_is_sent_encoded_or_not_and_a_prompt_replaces_it() {
        let t0 = Instant::now();
        let mut room = [0i16; FRAME_SAMPLES];
        room.copy_from_slice(&generate("500/20@-10", 20));
        for encoded in [false, true] {
            let mut l = leg(t0);
            let out = run_in_room(&mut l, t0, &[], &room, encoded, 10);
            assert_eq!(out.len(), 10 * FRAME_SAMPLES);
            assert!(tone_power(&out, 500.0) > 0.9, "encoded={encoded}");
            let spec: ToneSpec = "1000/100@-10".parse().unwrap();
            l.apply(
                t0,
                LegCommand::Play {
                    id: 1,
                    source: Box::new(ToneGenerator::new(&spec, 8000).unwrap()),
                    barge_in: false,
                },
            );
            let out = run_in_room(&mut l, t0 + FRAME * 10, &[], &room, encoded, 5);
            assert!(
                tone_power(&out, 1000.0) > 0.9,
                "the prompt replaces the room"
            );
        }
    }

    #[test]
    fn an_inband_key_tone_is_flagged_while_it_sounds() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let mut pcm = vec![0i16; 100 * 8];
        pcm.extend(generate("770+1336/200@-10", 200));
        pcm.extend(vec![0i16; 300 * 8]);
        let input = packets(&pcm, 10);
        let mut flagged = Vec::new();
        let mut loud = Vec::new();
        for (n, p) in input.iter().enumerate() {
            let now = t0 + FRAME * n as u32;
            l.handle_packet(now, SystemTime::now(), PEER.parse().unwrap(), p);
            l.receive(now);
            flagged.push(l.dtmf_sounding());
            if crate::media::level::rms_dbfs(l.input()) > -40.0 {
                loud.push((n, l.dtmf_sounding()));
            }
            l.send(now, SystemTime::now(), n as u64, None, &mut |_, _, _| {});
        }
        assert!(flagged.iter().any(|&f| f), "{flagged:?}");
        // Every frame carrying the key tone is flagged but the partly covered first and last
        // (10 ms packets put the tone's edges mid-frame; a block must fill before a hit), so
        // a room passes at most those two half frames of a key press to the others.
        let inner = &loud[1..loud.len() - 1];
        assert!(inner.iter().all(|&(_, f)| f), "{loud:?}");
        assert!(!flagged[..5].iter().any(|&f| f), "not before the tone");
        assert!(!*flagged.last().unwrap(), "not after it ended");
    }

    #[test]
    fn silence_without_echo_or_playback() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let input = packets(&generate("1000/1000@-10", 400), 1);
        let out = run(&mut l, t0, &input, 20);
        assert!(out.iter().all(|&s| s.abs() <= 8), "idle legs send silence");
    }

    #[test]
    fn a_played_tone_is_sent_and_reported_done() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let spec: ToneSpec = "440/200@-10".parse().unwrap();
        let source = Box::new(ToneGenerator::new(&spec, 8000).unwrap());
        l.apply(
            t0,
            LegCommand::Play {
                id: 5,
                source,
                barge_in: false,
            },
        );
        let out = run(&mut l, t0, &[], 15);
        assert!(tone_power(&out[..10 * FRAME_SAMPLES], 440.0) > 0.9);
        assert!(out[11 * FRAME_SAMPLES..].iter().all(|&s| s.abs() <= 8));
        assert_eq!(
            l.poll_event(),
            Some(LegEvent::PlayDone {
                id: 5,
                interrupted: false
            })
        );
    }

    #[test]
    fn an_inband_digit_is_reported_once_and_barges_in() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let spec: ToneSpec = "440/5000@-10".parse().unwrap();
        l.apply(
            t0,
            LegCommand::Play {
                id: 1,
                source: Box::new(ToneGenerator::new(&spec, 8000).unwrap()),
                barge_in: true,
            },
        );
        let mut pcm = vec![0i16; 200 * 8];
        pcm.extend(generate("770+1336/100@-10", 100));
        pcm.extend(vec![0i16; 300 * 8]);
        let input = packets(&pcm, 10);
        run(&mut l, t0, &input, 40);
        let events: Vec<_> = std::iter::from_fn(|| l.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                LegEvent::Digit {
                    digit: Digit::from_char('5').unwrap(),
                    method: DtmfMethod::Inband
                },
                LegEvent::PlayDone {
                    id: 1,
                    interrupted: true
                }
            ]
        );
    }

    #[test]
    fn rtp_timeout_fires_once_but_not_while_the_peer_holds() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let mut send = |_: Port, _: SocketAddr, _: &[u8]| {};
        let wc = SystemTime::now();
        l.tick(t0 + Duration::from_secs(59), wc, 0, &mut send);
        assert_eq!(l.poll_event(), None);
        l.tick(t0 + Duration::from_secs(60), wc, 1, &mut send);
        assert_eq!(l.poll_event(), Some(LegEvent::RtpTimeout));
        l.tick(t0 + Duration::from_secs(61), wc, 2, &mut send);
        assert_eq!(l.poll_event(), None);

        let mut held = leg(t0);
        held.apply(
            t0,
            LegCommand::Update {
                remote: Some(PEER.parse().unwrap()),
                remote_rtcp: None,
                direction: Direction::SendOnly,
            },
        );
        held.tick(t0 + Duration::from_secs(600), wc, 0, &mut send);
        assert_eq!(held.poll_event(), None);
    }

    #[test]
    fn inactive_sends_nothing() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        l.apply(
            t0,
            LegCommand::Update {
                remote: Some(PEER.parse().unwrap()),
                remote_rtcp: None,
                direction: Direction::Inactive,
            },
        );
        let out = run(&mut l, t0, &[], 5);
        assert!(out.is_empty());
    }

    #[test]
    fn rtcp_and_garbage_are_dropped_without_harm() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let from: SocketAddr = PEER.parse().unwrap();
        let wc = SystemTime::now();
        // A truncated RTCP packet on a muxed port, then two non-RTP datagrams.
        l.handle_packet(t0, wc, from, &[0x80, 200, 0, 1, 0, 0, 0, 1]);
        l.handle_packet(t0, wc, from, b"hello");
        l.handle_packet(t0, wc, from, &[]);
        assert_eq!(l.stats().dropped, 3);
        assert_eq!(l.stats().packets_in, 0);
    }
}

#[cfg(test)]
mod dtmf_tests {
    use super::*;
    use crate::media::codec::g711::ulaw_encode;
    use crate::media::dtmf::rfc4733::encode_event;
    use crate::rtp::packet::RtpHeader;

    const PEER: &str = "127.0.0.1:40000";
    const TE: PayloadType = PayloadType::DEFAULT_TELEPHONE_EVENT;

    fn leg(now: Instant) -> Leg {
        test_leg(now)
    }

    fn rtp(pt: PayloadType, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let header = RtpHeader {
            marker,
            payload_type: pt,
            seq: WireSeq::new(seq),
            timestamp: RtpTimestamp::new(ts),
            ssrc: Ssrc::new(99),
        };
        let mut out = vec![0u8; 1500];
        let n = RtpPacket::new(header, payload).write(&mut out).unwrap();
        out.truncate(n);
        out
    }

    /// One key press as an RFC 4733 event stream (100 ms, 3 end packets) and, optionally, the
    /// same press as tones in the audio, over 40 ticks.
    fn run(
        l: &mut Leg,
        t0: Instant,
        with_events: bool,
        with_tones: bool,
        drop_ends: bool,
    ) -> Vec<LegEvent> {
        let tone = crate::media::tone::ToneSpec::dtmf(Digit::from_char('7').unwrap(), 100, 0);
        let mut gen = crate::media::tone::ToneGenerator::new(&tone, 8000).unwrap();
        let from: SocketAddr = PEER.parse().unwrap();
        let wc = SystemTime::now();
        let mut seq = 1000u16;
        for n in 0..40u32 {
            let now = t0 + FRAME * n;
            let mut pcm = [0i16; FRAME_SAMPLES];
            if with_tones && (5..10).contains(&n) {
                gen.fill(&mut pcm);
            }
            let payload: Vec<u8> = pcm.iter().map(|&s| ulaw_encode(s)).collect();
            l.handle_packet(
                now,
                wc,
                from,
                &rtp(PayloadType::PCMU, seq, n * 160, n == 0, &payload),
            );
            seq = seq.wrapping_add(1);
            if with_events && (5..=12).contains(&n) {
                let end = n >= 10;
                if !(end && drop_ends) {
                    let dur = ((n.min(10) - 5) * 160) as u16;
                    let ev = encode_event(7, end, 10, dur);
                    l.handle_packet(now, wc, from, &rtp(TE, seq, 5 * 160, n == 5, &ev));
                    seq = seq.wrapping_add(1);
                }
            }
            l.tick(now, wc, u64::from(n), &mut |_, _, _| {});
        }
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    fn digits(events: &[LegEvent]) -> Vec<(char, DtmfMethod)> {
        events
            .iter()
            .filter_map(|e| match e {
                LegEvent::Digit { digit, method } => Some((digit.as_char(), *method)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rfc4733_press_is_one_digit_even_without_its_end_packets() {
        let t0 = Instant::now();
        for drop_ends in [false, true] {
            let mut l = leg(t0);
            let d = digits(&run(&mut l, t0, true, false, drop_ends));
            assert_eq!(d, vec![('7', DtmfMethod::Rfc4733)], "drop_ends={drop_ends}");
        }
    }

    #[test]
    fn inband_press_alone_is_reported() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        assert_eq!(
            digits(&run(&mut l, t0, false, true, false)),
            vec![('7', DtmfMethod::Inband)]
        );
    }

    #[test]
    fn the_same_press_by_rfc4733_tones_and_info_is_reported_once() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        l.apply(
            t0,
            LegCommand::InfoDigit(DtmfEvent::began(
                Digit::from_char('7').unwrap(),
                DtmfMethod::Info,
                t0 + FRAME * 5,
            )),
        );
        let d = digits(&run(&mut l, t0, true, true, false));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, '7');
    }

    /// Asks the leg to send `digits` and ticks it, handing every RTP packet it sends (with the
    /// tick's time) to `seen`.
    fn send_dtmf(
        digits: &str,
        inband: bool,
        ticks: u32,
        mut seen: impl FnMut(Instant, &RtpPacket),
    ) {
        let t0 = Instant::now();
        let mut l = leg(t0);
        l.apply(
            t0,
            LegCommand::SendDtmf {
                digits: digits.into(),
                inband,
            },
        );
        for n in 0..ticks {
            let now = t0 + FRAME * n;
            l.tick(
                now,
                SystemTime::now(),
                u64::from(n),
                &mut |port, _, bytes| {
                    if port == Port::Rtp {
                        seen(now, &RtpPacket::parse(bytes).unwrap());
                    }
                },
            );
        }
    }

    #[test]
    fn sent_dtmf_goes_out_as_rfc4733_events_the_receiver_reads_back() {
        let mut rx = EventReceiver::new(TE, crate::rtp::types::ClockRate::HZ_8000);
        let mut got = String::new();
        let mut audio_packets = 0;
        send_dtmf("19#", false, 60, |now, p| {
            if p.header.payload_type != TE {
                audio_packets += 1;
                return;
            }
            let first = rx.push(now, p.header.timestamp, p.header.marker, p.payload);
            for e in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.poll_event()))
            {
                if e.phase == DigitPhase::Began {
                    got.push(e.digit.as_char());
                }
            }
        });
        assert_eq!(got, "19#");
        assert!(audio_packets > 0, "audio resumes between and after events");
    }

    #[test]
    fn sent_dtmf_inband_is_heard_as_tones() {
        let mut det = InbandDetector::new(8000).unwrap();
        let mut got = String::new();
        send_dtmf("42", true, 40, |_, p| {
            let pcm: Vec<i16> = p
                .payload
                .iter()
                .map(|&b| crate::media::codec::g711::ulaw_decode(b))
                .collect();
            det.push(&pcm, |e| {
                if e.phase == DigitPhase::Began {
                    got.push(e.digit.as_char());
                }
            });
        });
        assert_eq!(got, "42");
    }
}
