//! One call's media leg, sans-IO: RTP in (latching, jitter buffer, decode, loss concealment,
//! in-band DTMF), a 20 ms tick out (echo, a playing source, or silence; encode; RTP in packets
//! of the peer's ptime, gathered in a small FIFO of encoded audio), and the events a call
//! cares about (digits, playback done, RTP timeout).
//!
//! The worker owns the socket: it hands received datagrams to [`Leg::handle_packet`] and calls
//! [`Leg::tick`] once per 20 ms with a send callback. A leg in a conference room is ticked in
//! two halves instead, so the room can mix in between: [`Leg::receive`] (its input frame), then
//! [`Leg::send`] with the room's audio, or [`Leg::send_encoded`] with the room's shared frame
//! already encoded once for every listener with the same codec. Nothing here allocates per packet or per
//! frame; buffers are sized once in [`Leg::new`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::codec::{AudioCodec, CodecKind, CodecParams};
pub use super::dtmf::DtmfMethod;
use super::dtmf::{
    DetectorConfig, Digit, DigitEvent, DigitPhase, DtmfEvent, DtmfMerger, EventReceiver,
    EventSender, InbandDetection, InbandDetector, InbandSender, SampleClock,
};
use super::frame::{samples_at, AudioSource, Frame, FRAME};
#[cfg(test)]
use super::frame::{FRAME_SAMPLES, MAX_FRAME_SAMPLES, NARROW_RATE};
use super::record::{RecordSession, RecorderHandle, Step, StopReason};
use super::resample::RateAdapter;
use crate::conference::AudioLevel;
use crate::rtp::hdrext::audio_level;
use crate::rtp::jitter::{JitterBuffer, JitterConfig, Pop};
use crate::rtp::packet::{classify, PacketKind, RtpPacket};
use crate::rtp::plc::G711Plc;
use crate::rtp::rtcp::{RtcpSession, MAX_COMPOUND_LEN};
use crate::rtp::session::{
    Received, RecvConfig, RecvSession, Rejection, RemoteMedia, SendSession, StrictRtp,
    DEFAULT_LEARN_WINDOW,
};
use crate::rtp::srtp::{SrtpError, SrtpSession};
use crate::rtp::types::{
    ClockRate, PayloadType, PayloadTypeSet, RtpTimestamp, SeqNo, Ssrc, WireSeq,
};
use crate::sdp::Direction;
use crate::sdp::SrtpKeys;

/// Frames cut from a recording's end when a terminator key stopped it: detection lags the
/// tone by up to this much.
const TERMINATOR_TRIM_FRAMES: u64 = 5;
/// The longest packet a leg plays out: 60 ms, three frames, at the highest rate.
#[cfg(test)]
const MAX_PACKET_SAMPLES: usize = 3 * MAX_FRAME_SAMPLES;
/// Room for encoded audio waiting to fill a packet: the longest packet plus the frame
/// appended to it, of the codec with the most bytes per millisecond sent in packets of more
/// than one frame (L16 at 16 kHz: 80 ms is 2,560 bytes).
const OUT_FIFO_BYTES: usize = 2 * 4 * samples_at(crate::rtp::types::ClockRate::HZ_16000);

/// Frames of concealment through the codec after which a talkspurt counts as over: libopus
/// has faded to near silence by then (G.711 Appendix I is silent after 60 ms).
const OWN_CONCEALMENT_FRAMES: usize = 6;

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
    /// The media transport (ICE, DTLS, consent) failed, and why.
    TransportFailed(String),
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
    /// Round-trip time from the peer's latest report on our stream, in microseconds.
    pub rtt_us: Option<u64>,
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
    /// Stream the call's audio to an application (replacing a stream already running).
    Stream(Box<dyn AudioTap>),
    /// Stop the stream with this id, if it is still the one running.
    StopStream(u64),
    /// Hear the caller for the call's script (replacing an ear already there).
    Listen(Box<dyn AudioTap>),
    /// Stop the ear with this id, if it is still the one there.
    StopListen(u64),
    /// Send DTMF: RFC 4733 events when negotiated (or `inband`), else tones in the audio.
    SendDtmf {
        /// Digits 0-9, *, #, A-D.
        digits: String,
        /// Force in-band tones.
        inband: bool,
    },
    /// The call was answered after early media: the peer may only now start sending, so a
    /// new source may be learned again for a while.
    Answered,
    /// The SDP changed (re-INVITE or UPDATE): remote address, direction and codec, from our
    /// point of view.
    Update {
        /// Where to send RTP (None: only to a latched source).
        remote: Option<SocketAddr>,
        /// Where to send RTCP.
        remote_rtcp: Option<SocketAddr>,
        /// Our direction.
        direction: Direction,
        /// The packet duration the peer asked for (`a=ptime`).
        ptime: Duration,
        /// The negotiated codec: the leg switches to it when it or its payload type changed.
        codec: CodecKind,
        /// Its payload type.
        payload_type: PayloadType,
        /// The telephone-event payload type, when negotiated.
        telephone_event: Option<PayloadType>,
        /// The telephone-event's clock (None: the codec's).
        telephone_event_rate: Option<ClockRate>,
        /// What the peer's `a=fmtp` asks of the codec, used when the leg switches to it.
        params: Box<CodecParams>,
        /// The SDES keys now agreed (None: plain RTP from now on); the same keys keep the
        /// SRTP state (rollover counter, replay window), others start it afresh.
        srtp: Option<Box<SrtpKeys>>,
    },
    /// A DTLS-SRTP leg's handshake finished: media flows from now on, protected with these
    /// keys, to the address the peer's ICE checks chose.
    Secured {
        /// The keys the handshake exported.
        keys: Box<SrtpKeys>,
        /// Where the peer's checks came from.
        remote: SocketAddr,
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
            LegCommand::Stream(t) => write!(f, "Stream({})", t.id()),
            LegCommand::StopStream(id) => write!(f, "StopStream({id})"),
            LegCommand::Listen(t) => write!(f, "Listen({})", t.id()),
            LegCommand::StopListen(id) => write!(f, "StopListen({id})"),
            LegCommand::Answered => write!(f, "Answered"),
            LegCommand::Secured { remote, .. } => write!(f, "Secured({remote})"),
            LegCommand::SendDtmf { digits, inband } => {
                write!(f, "SendDtmf {{ digits: {digits:?}, inband: {inband} }}")
            }
            LegCommand::Update {
                remote,
                direction,
                ptime,
                codec,
                payload_type,
                ..
            } => write!(
                f,
                "Update {{ remote: {remote:?}, direction: {direction:?}, ptime: {ptime:?}, \
                 codec: {codec:?}/{} }}",
                payload_type.get()
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
    /// The telephone-event's clock when it is not the codec's (an 8 kHz one beside Opus).
    pub telephone_event_rate: Option<ClockRate>,
    /// What the peer's `a=fmtp` asks of the codec (Opus: bandwidth, FEC, DTX).
    pub params: CodecParams,
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
    /// Duration of the packets we send: the peer's `a=ptime`, a multiple of 10 ms up to
    /// 60 ms (anything else sends 20 ms).
    pub ptime: Duration,
    /// Which sources the leg hears.
    pub sources: LegSources,
    /// What the in-band DTMF detector accepts as a key tone.
    pub dtmf: DetectorConfig,
    /// Whether the in-band detector runs when the peer agreed RFC 4733 events too.
    pub inband: InbandDetection,
    /// The sequence number of our first RTP packet (random in production, RFC 3550 §5.1).
    pub first_seq: u16,
    /// The RTP timestamp of our first sample (random in production, RFC 3550 §5.1).
    pub first_timestamp: u32,
    /// Seeds the randomised RTCP report times (RFC 3550 §6.2).
    pub rtcp_seed: u64,
    /// The SDES keys when the call's media is SRTP.
    pub srtp: Option<Box<SrtpKeys>>,
    /// A DTLS-SRTP leg: where its ICE and DTLS datagrams go. Until its keys come
    /// ([`LegCommand::Secured`]) it neither sends nor hears media.
    pub dtls: Option<DtlsLink>,
}

/// Where a DTLS-SRTP leg hands the datagrams that are not media (STUN, DTLS: RFC 7983 §7):
/// to the call's transport, which runs off the media tick (a handshake's crypto would stall
/// it). The queue is bounded: a flood from a stranger is dropped, never queued without end.
#[derive(Debug, Clone)]
pub struct DtlsLink(pub tokio::sync::mpsc::Sender<ControlDatagram>);

/// A STUN or DTLS datagram a leg received.
#[derive(Debug)]
pub struct ControlDatagram {
    /// Its source.
    pub from: SocketAddr,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl LegConfig {
    /// A PCMU leg with telephone-events (PT 101) sending 20 ms packets to `remote`, RTCP to
    /// the next port, with the default source rule and DTMF limits: the common case, which
    /// other set-ups adjust with struct update syntax. Its RTP start points and RTCP seed
    /// follow from `ssrc`, so the same set-up runs the same way every time.
    pub fn pcmu(remote: SocketAddr, ssrc: Ssrc) -> Self {
        let mut rng = fastrand::Rng::with_seed(u64::from(ssrc.get()));
        LegConfig {
            codec: CodecKind::Pcmu,
            payload_type: PayloadType::PCMU,
            telephone_event: Some(PayloadType::DEFAULT_TELEPHONE_EVENT),
            telephone_event_rate: None,
            params: CodecParams::default(),
            remote: Some(remote),
            remote_rtcp: None,
            rtcp_mux: false,
            direction: Direction::SendRecv,
            rtp_timeout: Duration::from_secs(60),
            ssrc,
            ptime: FRAME,
            sources: LegSources::default(),
            dtmf: DetectorConfig::default(),
            inband: InbandDetection::Always,
            first_seq: rng.u16(..),
            first_timestamp: rng.u32(..),
            rtcp_seed: rng.u64(..),
            srtp: None,
            dtls: None,
        }
    }
}

/// Which RTP sources a leg accepts (see [`crate::rtp::session`]), and where it counts the
/// packets it drops from any other.
#[derive(Debug, Clone)]
pub struct LegSources {
    /// `[media] strict_rtp`.
    pub mode: StrictRtp,
    /// How long after the answer, or a move of the remote media, a new source may be learned.
    pub learn_window: Duration,
    /// Where the SIP request with the SDP came from, to tell whether NAT is evident.
    pub signalling: Option<IpAddr>,
    /// Server counters for packets dropped from strangers (None: the leg's own count only).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Default for LegSources {
    /// Strict, the default window, no signalling address (so no NAT is evident) and no counters.
    fn default() -> Self {
        LegSources {
            mode: StrictRtp::default(),
            learn_window: DEFAULT_LEARN_WINDOW,
            signalling: None,
            metrics: None,
        }
    }
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
    /// Frames concealed (lost or late), by the codec's own concealment or G.711 Appendix I.
    pub frames_concealed: u64,
    /// Lost frames recovered from the redundancy in the packet after them (Opus in-band
    /// FEC); not counted as concealed.
    pub frames_recovered: u64,
    /// Datagrams dropped (not RTP, rejected by the session, undecodable).
    pub dropped: u64,
    /// RTP packets lost: expected from the sequence numbers but never received.
    pub packets_lost: u64,
    /// SRTP and SRTCP packets whose authentication tag did not verify (also in `dropped`).
    pub srtp_auth_failures: u64,
    /// SRTP and SRTCP packets replayed or older than the replay window (also in `dropped`).
    pub srtp_replays: u64,
    /// SRTP and SRTCP packets too short, or with an MKI not the peer's (also in `dropped`).
    pub srtp_malformed: u64,
    /// Packets not decoded because their sender's RFC 6464 level said they were quieter than
    /// the room would mix (heard as silence; not in `frames_decoded`).
    pub decodes_skipped: u64,
}

/// The largest datagram an SRTP leg takes or makes, tag and MKI included.
const SECURE_BUF: usize = 2048;

/// SRTP for a leg whose call agreed SDES keys (kept in its `LegConfig::srtp`): the
/// transform and a buffer to work in place.
struct Secure {
    session: SrtpSession,
    buf: [u8; SECURE_BUF],
}

impl Secure {
    fn new(keys: &SrtpKeys) -> Result<Box<Secure>, SrtpError> {
        Ok(Box::new(Secure {
            session: SrtpSession::new(&keys.ours, &keys.theirs)?,
            buf: [0; SECURE_BUF],
        }))
    }

    /// Checks and decrypts a received datagram into `buf`; the plaintext's length.
    fn open(&mut self, rtcp: bool, bytes: &[u8]) -> Result<usize, SrtpError> {
        let buf = self
            .buf
            .get_mut(..bytes.len())
            .ok_or(SrtpError::BufferTooSmall)?;
        buf.copy_from_slice(bytes);
        if rtcp {
            self.session.unprotect_rtcp(buf)
        } else {
            self.session.unprotect_rtp(buf)
        }
    }

    /// Protects an outgoing datagram into `buf` and hands it to `send`; RTCP is told by its
    /// port, or by its packet type under rtcp-mux.
    fn seal(
        &mut self,
        port: Port,
        dest: SocketAddr,
        bytes: &[u8],
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        let rtcp = port == Port::Rtcp || classify(bytes) == PacketKind::Rtcp;
        match self.protect(rtcp, bytes) {
            Ok(sealed) => send(port, dest, sealed),
            Err(e) => tracing::debug!(error = %e, "an outgoing packet could not be protected"),
        }
    }

    /// Copies `bytes` into `buf` and protects them there as RTP or RTCP.
    fn protect(&mut self, rtcp: bool, bytes: &[u8]) -> Result<&[u8], SrtpError> {
        let len = bytes.len();
        self.buf
            .get_mut(..len)
            .ok_or(SrtpError::BufferTooSmall)?
            .copy_from_slice(bytes);
        let n = if rtcp {
            self.session.protect_rtcp(&mut self.buf, len)?
        } else {
            self.session.protect_rtp(&mut self.buf, len)?
        };
        Ok(&self.buf[..n])
    }
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

/// A playback on the leg.
struct Playback {
    /// Reported back in `PlayDone`.
    id: u64,
    source: Box<dyn AudioSource>,
    /// A key stops it.
    barge_in: bool,
}

/// A recording on the leg: its frame-by-frame policy and the writer's handle.
struct Recording {
    session: Box<RecordSession>,
    handle: RecorderHandle,
    /// Carries the leg's audio to the recording's rate, once they differ (the codec changed
    /// rate while recording).
    convert: Option<Box<RecordConvert>>,
}

/// Both directions of a leg's audio at a recording's rate.
struct RecordConvert {
    inbound: RateAdapter,
    outbound: RateAdapter,
    pcm_in: Frame,
    pcm_out: Frame,
}

/// The RTP timeout's watch.
#[derive(Debug, Clone, Copy)]
enum RtpWatch {
    /// RTP is awaited since then (the last packet, the start, a media change).
    Since(Instant),
    /// None came in time and that was reported; a packet starts the watch again.
    TimedOut,
}

/// Something that taps a leg's audio every tick: an application stream, or the call's ear.
pub trait AudioTap: Send {
    /// The call's number for it, so that a late stop does not end its successor.
    fn id(&self) -> u64;
    /// It adds audio of its own to what the caller hears: the leg makes its own frame then.
    fn speaks(&self) -> bool;
    /// One tick: `caller` is what the caller said, `to_caller` what it is about to hear
    /// (the tap may add to it).
    fn tick(&mut self, caller: &Frame, to_caller: &mut Frame);
    /// A key the caller pressed.
    fn digit(&mut self, digit: char);
}

/// One call's media.
pub struct Leg {
    cfg: LegConfig,
    codec: Box<dyn AudioCodec>,
    recv: RecvSession,
    send: SendSession,
    rtcp: RtcpSession,
    rtcp_buf: [u8; MAX_COMPOUND_LEN],
    /// SRTP, when the call agreed keys: every datagram in and out passes through it.
    secure: Option<Box<Secure>>,
    jitter: JitterBuffer,
    /// The rate the leg's audio is processed at: its codec's sample rate.
    rate: ClockRate,
    /// Samples in one frame at `rate`.
    frame_samples: usize,
    /// Samples per received packet (the peer's ptime), learnt from its packets.
    packet_samples: usize,
    /// Decoded audio not yet played out: a packet may hold more than one tick's worth. Sized
    /// for the leg's rate (a frame and the longest packet), so a narrowband leg does not
    /// carry room for 48 kHz.
    fifo: Box<[i16]>,
    fifo_len: usize,
    /// One decoded packet, up to the longest at the leg's rate.
    scratch: Box<[i16]>,
    /// Appendix I concealment, where it is defined at the leg's rate and the codec has none
    /// of its own.
    plc: Option<G711Plc>,
    /// Carries room or bridge audio at another rate to the leg's.
    adapter: RateAdapter,
    /// Carries a playing source made for another rate to the leg's.
    source_adapter: RateAdapter,
    /// Samples concealed through the codec since the last frame heard or recovered.
    concealed_run: usize,
    inband: InbandDetector,
    inband_clock: SampleClock,
    rfc4733: Option<EventReceiver>,
    merger: DtmfMerger,
    event_sender: Option<EventSender>,
    inband_sender: InbandSender,
    playing: Option<Playback>,
    recording: Option<Recording>,
    /// An application stream tapping the call's audio.
    stream: Option<Box<dyn AudioTap>>,
    /// The call's ear: speech, answering machines and tones heard for the script.
    listener: Option<Box<dyn AudioTap>>,
    echo: bool,
    /// An in-band key tone is being heard (between its detected start and end).
    inband_active: bool,
    /// An RFC 4733 key press is in progress.
    rfc4733_active: bool,
    /// Since when RTP has been awaited, or that its absence was reported.
    rtp_watch: RtpWatch,
    talkspurt: bool,
    pcm_in: Frame,
    pcm_out: Frame,
    /// Samples per packet we send (the peer's ptime).
    ptime_samples: usize,
    /// Encoded audio not yet sent: a packet may span several ticks, or end mid-tick.
    out_fifo: [u8; OUT_FIFO_BYTES],
    out_len: usize,
    /// Sample position (see [`SendSession::position_of`]) of the first byte in `out_fifo`.
    out_pos: u64,
    /// The tick of the last send half.
    last_tick: Option<u64>,
    packet: [u8; 1500],
    events: VecDeque<LegEvent>,
    stats: LegStats,
    /// The header extension id of the RFC 6464 level the peer agreed to send.
    level_id: Option<u8>,
    /// Packets whose level is below this may go undecoded (set each tick by a room).
    quiet_floor: Option<AudioLevel>,
    /// The sender's level for this tick's input, when every packet in it had one.
    input_level: Option<AudioLevel>,
    /// The level of the packet whose audio is left in `fifo` (`None`: unknown).
    fifo_level: Option<u8>,
    /// The last packet played out was skipped: the decoder has not seen what came since.
    skipping: bool,
}

impl Leg {
    /// A leg starting at `now`.
    pub fn new(cfg: LegConfig, now: Instant) -> Result<Self, LegError> {
        let codec = cfg.codec.new_codec_with(&cfg.params);
        let audio_rate = cfg.codec.sample_rate();
        let frame_samples = samples_at(audio_rate);
        let rate = cfg.codec.rtp_clock();
        let mut recv_cfg = RecvConfig::new(rate, payload_types(&cfg));
        // A phone's first packet is real audio; do not throw it away in probation.
        recv_cfg.probation = 1;
        recv_cfg.strict = cfg.sources.mode;
        recv_cfg.learn_window = cfg.sources.learn_window;
        let mut recv = RecvSession::new(recv_cfg);
        recv.set_remote(now, remote_media(&cfg));
        let send = SendSession::new(
            cfg.ssrc,
            WireSeq::new(cfg.first_seq),
            RtpTimestamp::new(cfg.first_timestamp),
            cfg.payload_type,
            rate,
            FRAME,
        );
        let (inband, inband_clock, inband_sender) = inband_dtmf(audio_rate, cfg.dtmf, now)?;
        let cname = format!("switchboard-{:08x}", cfg.ssrc.get());
        let events = telephone_events(&cfg);
        let secure = match &cfg.srtp {
            Some(keys) => Some(Secure::new(keys).map_err(|e| LegError(format!("SRTP: {e}")))?),
            None => None,
        };
        Ok(Leg {
            secure,
            rtcp: RtcpSession::with_seed(cfg.ssrc, &cname, rate, now, cfg.rtcp_seed),
            rtcp_buf: [0; MAX_COMPOUND_LEN],
            codec,
            recv,
            send,
            jitter: JitterBuffer::new(jitter_config(cfg.codec, frame_samples, audio_rate)),
            rate: audio_rate,
            frame_samples,
            packet_samples: frame_samples,
            fifo: fifo_for(frame_samples),
            fifo_len: 0,
            scratch: scratch_for(frame_samples),
            plc: G711Plc::with_rate(audio_rate),
            adapter: RateAdapter::new(),
            source_adapter: RateAdapter::new(),
            concealed_run: 0,
            inband,
            inband_clock,
            rfc4733: events.map(|(pt, clock)| EventReceiver::new(pt, clock)),
            merger: DtmfMerger::default(),
            event_sender: events.map(|(pt, clock)| EventSender::new(pt, clock)),
            inband_sender,
            playing: None,
            recording: None,
            stream: None,
            listener: None,
            echo: false,
            inband_active: false,
            rfc4733_active: false,
            rtp_watch: RtpWatch::Since(now),
            talkspurt: false,
            pcm_in: Frame::silence(audio_rate),
            pcm_out: Frame::silence(audio_rate),
            ptime_samples: ptime_samples(cfg.codec, cfg.ptime),
            out_fifo: [0; OUT_FIFO_BYTES],
            out_len: 0,
            out_pos: 0,
            last_tick: None,
            packet: [0; 1500],
            events: VecDeque::with_capacity(16),
            stats: LegStats::default(),
            level_id: cfg.params.audio_level_id,
            quiet_floor: None,
            input_level: None,
            fifo_level: None,
            skipping: false,
            cfg,
        })
    }

    /// Counters.
    pub fn stats(&self) -> LegStats {
        LegStats {
            packets_lost: self.recv.stats().lost.max(0) as u64,
            ..self.stats
        }
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

    /// Handles one datagram received from `from` on the RTCP port.
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.unsealed(true, bytes, |leg, clear| {
            leg.handle_clear_rtcp(now, wallclock, from, clear)
        });
    }

    /// Runs `then` on a received datagram in the clear: as it came, or checked and
    /// decrypted when the leg is SRTP. A packet that fails the checks is counted and
    /// dropped: it is never played, recorded or taken as the peer's address.
    fn unsealed(&mut self, rtcp: bool, bytes: &[u8], then: impl FnOnce(&mut Leg, &[u8])) {
        let Some(mut secure) = self.secure.take() else {
            if self.awaiting_keys() {
                self.stats.dropped += 1;
                return;
            }
            return then(self, bytes);
        };
        match secure.open(rtcp, bytes) {
            Ok(n) => then(self, &secure.buf[..n]),
            Err(e) => self.srtp_dropped(rtcp, &e, bytes),
        }
        self.secure = Some(secure);
    }

    fn srtp_dropped(&mut self, rtcp: bool, e: &SrtpError, bytes: &[u8]) {
        use crate::metrics::{SrtpDrop, Stranger};
        let s = &self.stats;
        if s.srtp_auth_failures + s.srtp_replays + s.srtp_malformed == 0 {
            // The first one a leg drops says why; a flood of them is only counted.
            let head = &bytes[..bytes.len().min(12)];
            tracing::info!(error = %e, rtcp, len = bytes.len(), ?head, "SRTP packet dropped");
        }
        self.stats.dropped += 1;
        let why = match e {
            SrtpError::AuthFailed => {
                self.stats.srtp_auth_failures += 1;
                SrtpDrop::Auth
            }
            SrtpError::Replayed => {
                self.stats.srtp_replays += 1;
                SrtpDrop::Replay
            }
            _ => {
                self.stats.srtp_malformed += 1;
                SrtpDrop::Malformed
            }
        };
        if let Some(m) = &self.cfg.sources.metrics {
            m.srtp_dropped(why, if rtcp { Stranger::Rtcp } else { Stranger::Rtp });
        }
    }

    fn handle_clear_rtcp(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        if !self.recv.accept_rtcp(from) {
            self.stats.dropped += 1;
            if let Some(m) = &self.cfg.sources.metrics {
                m.stranger_dropped(crate::metrics::Stranger::Rtcp);
            }
            return;
        }
        if self.rtcp.handle_packet(now, wallclock, bytes).is_err() {
            self.stats.dropped += 1;
        }
    }

    /// The final RTCP BYE for when the leg goes away, with where to send it.
    pub fn rtcp_bye(&mut self) -> Option<(SocketAddr, &[u8])> {
        if self.awaiting_keys() {
            return None;
        }
        let dest = self.rtcp_destination()?;
        let n = self.rtcp.bye(&mut self.rtcp_buf).ok()?;
        match self.secure.as_deref_mut() {
            None => Some((dest, &self.rtcp_buf[..n])),
            Some(s) => Some((dest, s.protect(true, &self.rtcp_buf[..n]).ok()?)),
        }
    }

    /// Receive statistics so far.
    pub fn rtp_summary(&self) -> RtpSummary {
        RtpSummary {
            packets: self.stats.packets_in,
            lost: self.recv.stats().lost.max(0) as u64,
            jitter_us: self.recv.jitter().to_duration().as_micros() as u64,
            rtt_us: self.rtcp.stats().rtt_ms.map(|ms| (ms * 1000.0) as u64),
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
                self.playing = Some(Playback {
                    id,
                    source,
                    barge_in,
                });
            }
            LegCommand::StopPlay => self.stop_play(true),
            LegCommand::Record { session, handle } => {
                self.stop_record(|s| s.request_stop());
                self.recording = Some(Recording {
                    session,
                    handle,
                    convert: None,
                });
            }
            LegCommand::StopRecord => self.stop_record(|s| s.request_stop()),
            LegCommand::Stream(tap) => self.stream = Some(tap),
            LegCommand::StopStream(id) => {
                if self.stream.as_ref().is_some_and(|s| s.id() == id) {
                    self.stream = None;
                }
            }
            LegCommand::Listen(tap) => self.listener = Some(tap),
            LegCommand::StopListen(id) => {
                if self.listener.as_ref().is_some_and(|s| s.id() == id) {
                    self.listener = None;
                }
            }
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
            LegCommand::Answered => self.recv.open_learning_window(now),
            LegCommand::Secured { keys, remote } => self.secured(now, keys, remote),
            LegCommand::Update {
                remote,
                remote_rtcp,
                direction,
                ptime,
                codec,
                payload_type,
                telephone_event,
                telephone_event_rate,
                params,
                srtp,
            } => {
                let te = telephone_event.map(|pt| (pt, telephone_event_rate));
                self.switch_codec(now, codec, payload_type, te, &params);
                // Audio already buffered goes out in packets of the new size.
                self.cfg.ptime = ptime;
                self.ptime_samples = ptime_samples(self.cfg.codec, ptime);
                self.cfg.direction = direction;
                // A DTLS-SRTP leg's keys and address come from its handshake and ICE, which a
                // re-offer of the same transport does not restart.
                if self.cfg.dtls.is_none() {
                    self.rekey(srtp);
                    self.cfg.remote = remote;
                    self.cfg.remote_rtcp = remote_rtcp;
                }
                // A move of the peer's media forgets its source and opens a learning window.
                self.recv.set_remote(now, remote_media(&self.cfg));
                // Coming off hold, the peer gets a full timeout to resume sending.
                self.rtp_watch = RtpWatch::Since(now);
            }
        }
    }

    /// Takes the SRTP keys a re-INVITE agreed: a change of either side's key (or to or from
    /// plain RTP) starts a new transform; the same keys keep the running one.
    fn rekey(&mut self, keys: Option<Box<SrtpKeys>>) {
        if self.cfg.srtp == keys {
            return;
        }
        self.secure = match keys.as_deref().map(Secure::new) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                // The negotiator checked these keys; keep the old ones rather than go clear.
                tracing::warn!(error = %e, "new SRTP keys refused; keeping the old ones");
                return;
            }
        };
        self.cfg.srtp = keys;
    }

    /// Moves the leg to the codec a re-INVITE agreed, mid-call, when the codec or a payload
    /// type changed (else nothing restarts, so a hold or a move of the address does not
    /// glitch). Decoded audio, the in-band detector and a recording carry on, as they work on
    /// audio already decoded; what holds the old codec's bytes is dropped, and so are packets
    /// of the old payload type still arriving (they race the answer).
    fn switch_codec(
        &mut self,
        now: Instant,
        codec: CodecKind,
        payload_type: PayloadType,
        te: Option<(PayloadType, Option<ClockRate>)>,
        params: &CodecParams,
    ) {
        self.level_id = params.audio_level_id;
        let telephone_event = te.map(|(pt, _)| pt);
        let te_rate = te.and_then(|(_, r)| r);
        let new_audio = codec != self.cfg.codec || payload_type != self.cfg.payload_type;
        let new_rate = codec.rtp_clock() != self.cfg.codec.rtp_clock();
        let new_te =
            telephone_event != self.cfg.telephone_event || te_rate != self.cfg.telephone_event_rate;
        if !new_audio && !new_te {
            return;
        }
        let rate = codec.rtp_clock();
        if new_audio {
            let instance = codec.new_codec_with(params);
            if codec.sample_rate() != self.rate {
                self.set_audio_rate(now, codec.sample_rate());
            }
            tracing::debug!(from = ?self.cfg.codec, to = ?codec, pt = payload_type.get(), "codec switched");
            self.codec = instance;
            // Packets still buffered are the old codec's.
            self.jitter = JitterBuffer::new(jitter_config(codec, self.packet_samples, self.rate));
            self.out_len = 0;
            self.send.set_payload_type(payload_type);
            self.send.mark_next();
            if new_rate {
                let next_tick = self.last_tick.map_or(0, |t| t.wrapping_add(1));
                self.send.set_clock_rate(rate, FRAME, next_tick);
                self.rtcp.set_clock_rate(rate);
            }
            self.cfg.codec = codec;
            self.cfg.payload_type = payload_type;
        }
        if new_rate || new_te {
            // Events count on the audio's clock unless they have one of their own, so a new
            // codec clock renews them too.
            self.cfg.telephone_event = telephone_event;
            self.cfg.telephone_event_rate = te_rate;
            let events = telephone_events(&self.cfg);
            self.rfc4733 = events.map(|(pt, clock)| EventReceiver::new(pt, clock));
            self.event_sender = events.map(|(pt, clock)| EventSender::new(pt, clock));
            self.rfc4733_active = false;
        }
        self.recv.set_payload(rate, payload_types(&self.cfg));
    }

    /// Moves the leg's processing to `rate` (its new codec's): decoded audio waiting to be
    /// played was the old codec's and is dropped; the in-band DTMF detector and generator
    /// start again at the new rate; a recording goes on at its own rate.
    fn set_audio_rate(&mut self, now: Instant, rate: ClockRate) {
        match inband_dtmf(rate, self.cfg.dtmf, now) {
            Ok((detector, clock, sender)) => {
                self.inband = detector;
                self.inband_clock = clock;
                self.inband_sender = sender;
            }
            Err(e) => tracing::warn!(error = %e, "in-band DTMF stays at the old rate"),
        }
        self.rate = rate;
        self.frame_samples = samples_at(rate);
        self.packet_samples = self.frame_samples;
        self.fifo = fifo_for(self.frame_samples);
        self.scratch = scratch_for(self.frame_samples);
        self.fifo_len = 0;
        self.pcm_in.clear(rate);
        self.pcm_out.clear(rate);
        self.plc = G711Plc::with_rate(rate);
        self.concealed_run = 0;
        self.inband_active = false;
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
            if let Some(s) = self.stream.as_mut() {
                s.digit(k.digit.as_char());
            }
            let stops = self
                .recording
                .as_mut()
                .and_then(|r| r.session.on_digit(k.digit))
                .is_some();
            if stops {
                if let Some(r) = self.recording.take() {
                    self.finish_record(r);
                }
            }
            if self.playing.as_ref().is_some_and(|p| p.barge_in) {
                self.stop_play(true);
            }
        }
    }

    /// The call ended: finalise a recording in progress as a hangup and stop playback.
    pub fn close(&mut self) {
        self.stop_record(|s| s.hangup());
        self.playing = None;
        // The socket task sees its handle go, says `stop` and closes.
        self.stream = None;
        self.listener = None;
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
        let Some(mut r) = self.recording.take() else {
            return;
        };
        let _ = stop(&mut r.session);
        self.finish_record(r);
    }

    fn finish_record(
        &mut self,
        Recording {
            session, handle, ..
        }: Recording,
    ) {
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
        let Some(r) = self.recording.as_mut() else {
            return;
        };
        let rate = r.session.policy().rate;
        let step = if rate == self.rate {
            r.session.push_frame(&self.pcm_in, &self.pcm_out)
        } else {
            let c = r.convert.get_or_insert_with(|| {
                Box::new(RecordConvert {
                    inbound: RateAdapter::new(),
                    outbound: RateAdapter::new(),
                    pcm_in: Frame::silence(rate),
                    pcm_out: Frame::silence(rate),
                })
            });
            c.inbound.convert(&self.pcm_in, rate, &mut c.pcm_in);
            c.outbound.convert(&self.pcm_out, rate, &mut c.pcm_out);
            r.session.push_frame(&c.pcm_in, &c.pcm_out)
        };
        r.handle.push(r.session.frame());
        if let Step::Stop(_) = step {
            if let Some(r) = self.recording.take() {
                self.finish_record(r);
            }
        }
    }

    fn stop_play(&mut self, interrupted: bool) {
        if let Some(Playback { id, .. }) = self.playing.take() {
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
            PacketKind::Rtp => {
                self.unsealed(false, bytes, |leg, clear| {
                    leg.handle_clear_rtp(now, from, clear)
                });
            }
            // rtcp-mux (RFC 5761 §4): RTCP on the RTP port.
            PacketKind::Rtcp => self.handle_rtcp(now, wallclock, from, bytes),
            PacketKind::Other => self.control_datagram(from, bytes),
        }
    }

    /// Hands a STUN or DTLS datagram to the call's transport when the leg is DTLS-SRTP.
    fn control_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let Some(DtlsLink(link)) = &self.cfg.dtls else {
            self.stats.dropped += 1;
            return;
        };
        use crate::webrtc::{demux, Demux};
        // RFC 7983 §7: only STUN and DTLS are the transport's; anything else is nobody's.
        if !matches!(demux(bytes), Demux::Stun | Demux::Dtls)
            || link
                .try_send(ControlDatagram {
                    from,
                    bytes: bytes.to_vec(),
                })
                .is_err()
        {
            self.stats.dropped += 1;
        }
    }

    /// A DTLS-SRTP leg whose handshake has not finished yet.
    fn awaiting_keys(&self) -> bool {
        self.cfg.dtls.is_some() && self.secure.is_none()
    }

    /// Takes the keys of a finished DTLS handshake and the peer's ICE address.
    fn secured(&mut self, now: Instant, keys: Box<SrtpKeys>, remote: SocketAddr) {
        match Secure::new(&keys) {
            Ok(s) => self.secure = Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "DTLS-SRTP keys refused");
                return;
            }
        }
        self.cfg.srtp = Some(keys);
        self.cfg.remote = Some(remote);
        self.cfg.remote_rtcp = Some(remote);
        self.recv.set_remote(now, remote_media(&self.cfg));
        self.rtp_watch = RtpWatch::Since(now);
    }

    fn handle_clear_rtp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Ok(pkt) = RtpPacket::parse(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        let acc = match self.recv.receive(now, from, &pkt.header) {
            Received::Accepted(a) => a,
            Received::Rejected(why) => {
                self.stats.dropped += 1;
                if let (Rejection::ForeignSource, Some(m)) = (why, &self.cfg.sources.metrics) {
                    m.stranger_dropped(crate::metrics::Stranger::Rtp);
                }
                return;
            }
        };
        self.stats.packets_in += 1;
        self.rtp_watch = RtpWatch::Since(now);
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
        let samples = self.cfg.codec.payload_samples(pkt.payload);
        if samples == 0
            || samples > 3 * self.frame_samples
            || !samples.is_multiple_of(self.frame_samples / 2)
        {
            // Packets of 10 ms multiples up to 60 ms; anything else cannot be played out.
            self.stats.dropped += 1;
            return;
        }
        if samples != self.packet_samples {
            // The peer's packetization (ptime) changed, or this is the first packet: the jitter
            // buffer counts in packets, so it starts over at the new size.
            self.packet_samples = samples;
            self.jitter = JitterBuffer::new(jitter_config(self.cfg.codec, samples, self.rate));
        } else if acc.restarted {
            self.jitter.reset();
            self.codec.reset();
        }
        let level = self
            .level_id
            .and_then(|id| audio_level(pkt.extension, id))
            .map(|l| l.level);
        self.jitter
            .push_with_level(now, acc.seq, acc.timestamp, pkt.payload, level);
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
    pub fn input(&self) -> &Frame {
        &self.pcm_in
    }

    /// Whether this tick's input carries received audio (decoded, concealed, or skipped as
    /// quiet), not filler.
    pub fn hearing(&self) -> bool {
        self.talkspurt
    }

    /// The sender's RFC 6464 level of this tick's input, when the extension was agreed and
    /// every packet in the input carried it: what a room's talker detection takes instead of
    /// measuring, and all there is to know of a packet whose decode was skipped.
    pub fn input_level(&self) -> Option<AudioLevel> {
        self.input_level
    }

    /// Lets the receive half skip decoding packets whose RFC 6464 level is below `floor`
    /// (`None`: decode every packet). A room sets it each tick for the next one, for members
    /// it would not mix anyway; a skipped packet is heard as silence with its level in
    /// [`Leg::input_level`], and a packet at or above the floor is decoded as usual. A leg
    /// recording or streaming its call decodes every packet all the same.
    pub fn set_quiet_floor(&mut self, floor: Option<AudioLevel>) {
        self.quiet_floor = floor;
    }

    /// Whether the in-band detector analyses this leg's audio (see [`InbandDetection`]).
    fn listens_inband(&self) -> bool {
        self.cfg.inband == InbandDetection::Always || self.cfg.telephone_event.is_none()
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
        room: Option<&Frame>,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        self.sealed(send, |leg, send| {
            leg.send_clear(now, wallclock, tick, room, send)
        });
    }

    /// Runs `then` with a send callback that protects each datagram first when the leg is
    /// SRTP, else with `send` itself.
    fn sealed(
        &mut self,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
        then: impl FnOnce(&mut Leg, &mut dyn FnMut(Port, SocketAddr, &[u8])),
    ) {
        let Some(mut secure) = self.secure.take() else {
            if self.awaiting_keys() {
                // The tick's work goes on (prompts play out, recordings run); nothing leaves.
                return then(self, &mut |_, _, _| {});
            }
            return then(self, send);
        };
        then(self, &mut |port, dest, bytes| {
            secure.seal(port, dest, bytes, send)
        });
        self.secure = Some(secure);
    }

    fn send_clear(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        tick: u64,
        room: Option<&Frame>,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        self.follow_ticks(now, tick);
        self.produce_frame(room);
        if let Some(s) = self.stream.as_mut() {
            s.tick(&self.pcm_in, &mut self.pcm_out);
        }
        if let Some(l) = self.listener.as_mut() {
            l.tick(&self.pcm_in, &mut self.pcm_out);
        }
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
        pcm: &Frame,
        payload: &[u8],
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        self.sealed(send, |leg, send| {
            let own_audio = leg.playing.is_some()
                || leg.echo
                || !leg.inband_sender.is_idle()
                || leg.stream.as_ref().is_some_and(|s| s.speaks());
            if own_audio || pcm.rate() != leg.rate {
                return leg.send_clear(now, wallclock, tick, Some(pcm), send);
            }
            leg.send_shared(now, wallclock, tick, pcm, payload, send)
        });
    }

    fn send_shared(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        tick: u64,
        pcm: &Frame,
        payload: &[u8],
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        self.follow_ticks(now, tick);
        if self.recording.is_some() || self.stream.is_some() {
            self.pcm_out = *pcm;
        }
        if let Some(s) = self.stream.as_mut() {
            // Not speaking (see `send_encoded`): the frame is left as the room made it.
            s.tick(&self.pcm_in, &mut self.pcm_out);
        }
        if let Some(l) = self.listener.as_mut() {
            l.tick(&self.pcm_in, &mut self.pcm_out);
        }
        self.record_frame();
        if self.cfg.direction.sends() {
            let dest = self.recv.remote().or(self.cfg.remote);
            if let Some(dest) = dest {
                self.send_frame(tick, dest, Some(payload), send);
            }
        }
        self.send_rtcp(now, wallclock, send);
    }

    /// Lines the SR's RTP clock up with the ticks that stamp our packets: tick 0 of the
    /// worker (not the leg's creation) is where `timestamp_at(0)` lies. Set at the first
    /// send half and again when the ticks jump (the leg moved to another worker).
    fn follow_ticks(&mut self, now: Instant, tick: u64) {
        if self
            .last_tick
            .is_none_or(|last| last.wrapping_add(1) != tick)
        {
            let since_zero = Duration::from_micros(tick.saturating_mul(FRAME.as_micros() as u64));
            if let Some(zero) = now.checked_sub(since_zero) {
                self.rtcp.set_media_epoch(zero);
            }
        }
        self.last_tick = Some(tick);
    }

    /// RTCP shares the RTP port (RFC 5761): RTCP then arrives on the RTP socket.
    pub fn rtcp_mux(&self) -> bool {
        self.cfg.rtcp_mux
    }

    /// Whether an RTCP report goes out in a send half at `now`: the caller then passes the
    /// true send time, which the report's DLSR and NTP timestamp are taken from.
    pub fn rtcp_due(&self, now: Instant) -> bool {
        self.rtcp.poll_timeout().is_some_and(|t| t <= now)
    }

    fn send_rtcp(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        if self.rtcp_due(now) {
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

    /// Sends this tick's audio: a telephone-event while one is being sent (RFC 4733 §2.5:
    /// events replace the audio they stand for), else the encoded frame, appended to the
    /// audio waiting to be sent; every whole packet (the peer's ptime) in it goes out, each
    /// stamped by its first sample.
    fn send_frame(
        &mut self,
        tick: u64,
        dest: SocketAddr,
        encoded: Option<&[u8]>,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        let audio_ts = self.send.timestamp_at(tick);
        if let Some(ev) = self.event_sender.as_mut().and_then(|s| s.poll(audio_ts)) {
            // Audio buffered before the event would only go out after it, late.
            self.out_len = 0;
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
        let position = self.send.position_of(tick);
        if !self.cfg.codec.fixed_size() {
            return self.send_frame_alone(position, dest, encoded, send);
        }
        // Positions count RTP ticks, which run slower than G.722's samples.
        let codec = self.cfg.codec;
        let buffered = codec.rtp_ticks(codec.samples_in(self.out_len) as u64);
        if self.out_len > 0 && self.out_pos.wrapping_add(buffered) != position {
            // Ticks went by unsent (on hold, skipped ahead): the buffer no longer joins on.
            self.out_len = 0;
        }
        if self.out_len == 0 {
            self.out_pos = position;
        }
        let Some(appended) = self.append_frame(encoded) else {
            return;
        };
        self.out_len += appended;
        let samples = codec.rtp_ticks(self.ptime_samples as u64);
        let bytes = self.packet_bytes();
        while self.out_len >= bytes {
            let written = self.send.write_samples(
                self.out_pos,
                samples,
                &self.out_fifo[..bytes],
                &mut self.packet,
            );
            if let Ok(len) = written {
                send(Port::Rtp, dest, &self.packet[..len]);
                self.stats.packets_out += 1;
            }
            self.out_fifo.copy_within(bytes..self.out_len, 0);
            self.out_len -= bytes;
            self.out_pos = self.out_pos.wrapping_add(samples);
        }
    }

    /// Appends this tick's frame to the encoded audio waiting to be sent: `encoded` when the
    /// room encoded it already, else `pcm_out` encoded here. Its length in bytes, or `None`
    /// when it does not fit or cannot be encoded.
    fn append_frame(&mut self, encoded: Option<&[u8]>) -> Option<usize> {
        let tail = &mut self.out_fifo[self.out_len..];
        match encoded {
            Some(p) => {
                tail.get_mut(..p.len())?.copy_from_slice(p);
                Some(p.len())
            }
            None => self.codec.encode(&self.pcm_out, tail).ok(),
        }
    }

    /// Sends this tick's frame as a packet of its own, for codecs whose frames vary in size
    /// (Opus): 20 ms packets whatever the peer's ptime, and none when the encoder has
    /// nothing to send (DTX).
    fn send_frame_alone(
        &mut self,
        position: u64,
        dest: SocketAddr,
        encoded: Option<&[u8]>,
        send: &mut dyn FnMut(Port, SocketAddr, &[u8]),
    ) {
        self.out_len = 0;
        let Some(len) = self.append_frame(encoded).filter(|&n| n > 0) else {
            return;
        };
        let ticks = self.cfg.codec.rtp_ticks(self.frame_samples as u64);
        let written =
            self.send
                .write_samples(position, ticks, &self.out_fifo[..len], &mut self.packet);
        if let Ok(n) = written {
            send(Port::Rtp, dest, &self.packet[..n]);
            self.stats.packets_out += 1;
        }
    }

    /// Encoded bytes in one packet we send (codecs of a fixed size per duration).
    fn packet_bytes(&self) -> usize {
        self.cfg.codec.max_payload_bytes(self.ptime_samples)
    }

    /// Fills `pcm_in` with this tick's 20 ms of received audio. Packets may carry 10-60 ms,
    /// so decoded audio passes through a small sample FIFO; the jitter buffer is asked for a
    /// packet only when the FIFO runs short.
    fn receive_frame(&mut self, now: Instant) {
        let frame = self.frame_samples;
        // The tick's level is the loudest of its packets', when they all have one.
        let mut tick_level = if self.fifo_len > 0 {
            self.fifo_level
        } else {
            Some(SILENT_LEVEL)
        };
        while self.fifo_len < frame {
            let n = self.packet_samples;
            let out = &mut self.scratch[..n];
            let mut level = None;
            let decoded = match self.jitter.pop_frame(now) {
                Pop::Frame(f) => {
                    level = f.level;
                    // A recording, a stream or the ear of this call wants what the caller says, quiet
                    // or not.
                    let own_listener = self.recording.is_some()
                        || self.stream.is_some()
                        || self.listener.is_some();
                    let skip = !own_listener && below(f.level, self.quiet_floor);
                    let ok = if skip {
                        out.fill(0);
                        self.stats.decodes_skipped += 1;
                        true
                    } else {
                        if self.skipping {
                            // What the decoder last heard (perhaps a loud moment before the
                            // quiet it skipped) must not sound into this frame.
                            self.codec.reset_decoder();
                        }
                        let ok = matches!(self.codec.decode(f.payload, out), Ok(got) if got == n);
                        self.stats.frames_decoded += u64::from(ok);
                        ok
                    };
                    self.skipping = skip;
                    if ok {
                        self.talkspurt = true;
                        self.concealed_run = 0;
                        if let Some(plc) = self.plc.as_mut() {
                            if !self.codec.has_own_concealment() {
                                let _ = plc.good_frame(out);
                            }
                        }
                    }
                    ok
                }
                Pop::Lost(_) if self.skipping => false,
                Pop::Lost(seq) => self.recover_frame(seq.next(), n),
                Pop::Empty if !self.talkspurt => {
                    // Nothing is playing: this tick hears silence.
                    let missing = frame - self.fifo_len;
                    self.fifo[self.fifo_len..frame].fill(0);
                    self.fifo_len += missing;
                    break;
                }
                Pop::Empty => false,
            };
            if !decoded {
                self.conceal_frame(n);
            }
            tick_level = louder(tick_level, level);
            self.fifo_level = level;
            self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&self.scratch[..n]);
            self.fifo_len += n;
        }
        self.input_level = tick_level.and_then(AudioLevel::new);
        self.pcm_in.copy_from_slice(&self.fifo[..frame]);
        self.fifo.copy_within(frame..self.fifo_len, 0);
        self.fifo_len -= frame;
        // At most a couple of digit events per 20 ms frame; collect them without allocating.
        let mut found = [None; 4];
        let mut count = 0;
        let clock = &self.inband_clock;
        let on_event = |e: DigitEvent| {
            if count < found.len() {
                found[count] = Some(DtmfEvent::from_inband(&e, clock));
                count += 1;
            }
        };
        if self.listens_inband() {
            self.inband.push(&self.pcm_in, on_event);
        } else {
            self.inband.pass(self.pcm_in.len(), on_event);
        }
        for e in found.into_iter().flatten() {
            self.key_event(e);
        }
    }

    /// Rebuilds a lost frame of `n` samples into `scratch` from the redundancy in packet
    /// `next`, if it is buffered and the codec carries any (Opus in-band FEC, RFC 7587 §3.2).
    fn recover_frame(&mut self, next: SeqNo, n: usize) -> bool {
        if !self.codec.has_own_concealment() {
            return false;
        }
        let Some(payload) = self.jitter.peek(next) else {
            return false;
        };
        let out = &mut self.scratch[..n];
        let ok = matches!(self.codec.recover(payload, out), Ok(got) if got == n);
        if ok {
            self.stats.frames_recovered += 1;
            self.concealed_run = 0;
        }
        ok
    }

    /// Fills `scratch` with `n` samples of concealment for a frame that did not come: the
    /// codec's own where it has one (it knows its signal model and keeps its decoder in step
    /// for the next packet), else G.711 Appendix I on the decoded audio.
    fn conceal_frame(&mut self, n: usize) {
        let out = &mut self.scratch[..n];
        self.stats.frames_concealed += 1;
        if self.skipping {
            // The decoder last heard a packet from before the quiet ones it skipped (perhaps
            // a loud one): extrapolating from it would be a burst of the wrong sound.
            out.fill(0);
            self.concealed_run += n;
            if self.concealed_run >= OWN_CONCEALMENT_FRAMES * self.frame_samples {
                self.talkspurt = false;
            }
            return;
        }
        if self.codec.has_own_concealment() {
            if !matches!(self.codec.conceal(out), Ok(got) if got == n) {
                out.fill(0);
            }
            self.concealed_run += n;
            if self.concealed_run >= OWN_CONCEALMENT_FRAMES * self.frame_samples {
                // Long enough for the codec to have faded out: the talkspurt is over, and
                // silence from here on costs no decoding.
                self.talkspurt = false;
            }
            return;
        }
        // The codec still hears of the gap and minds its state its own way (G.722 keeps its
        // ADPCM state, which fits the talker's level better than a reset one; a resampled
        // codec keeps its filters fed); what is heard is Appendix I.
        let _ = self.codec.conceal(out);
        let Some(plc) = self.plc.as_mut() else {
            // No Appendix I at this rate: the gap is silence, and so is what follows.
            out.fill(0);
            self.talkspurt = false;
            return;
        };
        let _ = plc.lost_frame(out);
        if !plc.concealing() {
            self.talkspurt = false;
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        // A peer that put us on hold (it does not send) owes us no RTP.
        let RtpWatch::Since(last) = self.rtp_watch else {
            return;
        };
        if !self.cfg.direction.receives() {
            return;
        }
        if now.saturating_duration_since(last) >= self.cfg.rtp_timeout {
            self.rtp_watch = RtpWatch::TimedOut;
            self.events.push_back(LegEvent::RtpTimeout);
        }
    }

    fn produce_frame(&mut self, room: Option<&Frame>) {
        if let Some(Playback { id, source, .. }) = self.playing.as_mut() {
            // A source is made for the leg's rate, but the codec may have changed since.
            let fill = self
                .source_adapter
                .fill(source.as_mut(), self.rate, &mut self.pcm_out);
            if fill.ended {
                let id = *id;
                self.playing = None;
                self.events.push_back(LegEvent::PlayDone {
                    id,
                    interrupted: false,
                });
            }
        } else if let Some(room) = room {
            self.adapter.convert(room, self.rate, &mut self.pcm_out);
        } else if self.echo {
            self.pcm_out = self.pcm_in;
        } else {
            self.pcm_out.clear(self.rate);
        }
        if !self.inband_sender.is_idle() {
            // In-band DTMF replaces whatever else would be heard.
            let n = self.inband_sender.fill(&mut self.pcm_out);
            self.pcm_out[n..].fill(0);
        }
    }
}

/// Samples per packet we send for `ptime`: 10 ms steps up to the longest packet whose payload
/// fits our packet buffer with its 12-byte header (60 ms of L16 at 16 kHz does not), else 20 ms.
fn ptime_samples(codec: CodecKind, ptime: Duration) -> usize {
    let frame = samples_at(codec.sample_rate());
    let samples = codec.sample_rate().ticks_in(ptime) as usize;
    if samples > 0
        && samples <= 3 * frame
        && samples.is_multiple_of(frame / 2)
        && codec.max_payload_bytes(samples) + 12 <= 1500
    {
        samples
    } else {
        frame
    }
}

/// The RFC 6464 level of digital silence.
const SILENT_LEVEL: u8 = 127;

/// Whether a packet of `level` is quieter than `floor` (neither unknown).
fn below(level: Option<u8>, floor: Option<AudioLevel>) -> bool {
    matches!((level, floor), (Some(l), Some(f)) if l > f.get())
}

/// The louder of two RFC 6464 levels (the smaller value), unknown if either is.
fn louder(a: Option<u8>, b: Option<u8>) -> Option<u8> {
    Some(a?.min(b?))
}

/// A jitter buffer for packets of `samples` samples at `rate`.
fn jitter_config(codec: CodecKind, samples: usize, rate: ClockRate) -> JitterConfig {
    let frame = rate.duration_of(samples as u64);
    let default = JitterConfig::default();
    // A lost frame can be rebuilt from the FEC in the packet after it only if that packet is
    // already buffered when the lost one is due: one frame more depth than the least.
    let min_depth = if codec.inband_fec() {
        default.min_depth.max(frame * 2)
    } else {
        default.min_depth
    };
    JitterConfig {
        frame,
        min_depth,
        initial_depth: default.initial_depth.max(min_depth),
        slot_bytes: codec
            .max_payload_bytes(3 * samples_at(codec.sample_rate()))
            .max(960),
        // Room for the packets the peer is expected to send; slots grow if it sends larger.
        expected_bytes: codec.expected_payload_bytes(samples),
        ..JitterConfig::default()
    }
}

/// Room for decoded audio waiting to be played: a frame and the longest packet (three frames).
fn fifo_for(frame_samples: usize) -> Box<[i16]> {
    vec![0; 4 * frame_samples].into_boxed_slice()
}

/// Room for one decoded packet of up to three frames.
fn scratch_for(frame_samples: usize) -> Box<[i16]> {
    vec![0; 3 * frame_samples].into_boxed_slice()
}

/// In-band DTMF at `rate`: the detector with `limits`, its sample clock from `now`, and the
/// generator.
fn inband_dtmf(
    rate: ClockRate,
    limits: DetectorConfig,
    now: Instant,
) -> Result<(InbandDetector, SampleClock, InbandSender), LegError> {
    let detector =
        InbandDetector::with_config(rate, limits).map_err(|e| LegError(e.to_string()))?;
    let clock = SampleClock::new(now, rate.hz()).ok_or_else(|| LegError("sample clock".into()))?;
    let sender = InbandSender::new(rate).map_err(|e| LegError(e.to_string()))?;
    Ok((detector, clock, sender))
}

/// The telephone-event payload type and the clock its durations count in.
fn telephone_events(cfg: &LegConfig) -> Option<(PayloadType, ClockRate)> {
    let clock = cfg.telephone_event_rate.unwrap_or(cfg.codec.rtp_clock());
    cfg.telephone_event.map(|pt| (pt, clock))
}

/// The payload types the leg takes: its codec's and telephone-event's.
fn payload_types(cfg: &LegConfig) -> PayloadTypeSet {
    let mut pts = PayloadTypeSet::empty().with(cfg.payload_type);
    if let Some(te) = cfg.telephone_event {
        pts.insert(te);
    }
    pts
}

/// What the leg's configuration says about where the peer's media comes from.
fn remote_media(cfg: &LegConfig) -> RemoteMedia {
    RemoteMedia {
        rtp: cfg.remote,
        rtcp: cfg.remote_rtcp,
        rtcp_mux: cfg.rtcp_mux,
        signalling: cfg.sources.signalling,
    }
}

/// A leg could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot create media leg: {0}")]
pub struct LegError(String);

/// A PCMU leg with telephone-event 101 towards 127.0.0.1:40000, for the tests below.
#[cfg(test)]
fn test_leg(now: Instant) -> Leg {
    test_leg_with_ptime(now, FRAME)
}

/// Feeds an RFC 4733 packet the leg sent to `rx`, noting the keys that began in `keys`.
#[cfg(test)]
fn read_keys(rx: &mut EventReceiver, now: Instant, p: &RtpPacket<'_>, keys: &mut String) {
    let first = rx.push(now, p.header.timestamp, p.header.marker, p.payload);
    for e in first
        .into_iter()
        .chain(std::iter::from_fn(|| rx.poll_event()))
    {
        if e.phase == DigitPhase::Began {
            keys.push(e.digit.as_char());
        }
    }
}

/// An `Update` that keeps `l`'s codec: a hold, a move of the address or a new ptime.
#[cfg(test)]
fn update_keeping_codec(
    l: &Leg,
    remote: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    direction: Direction,
    ptime: Duration,
) -> LegCommand {
    LegCommand::Update {
        remote,
        remote_rtcp,
        direction,
        ptime,
        codec: l.cfg.codec,
        payload_type: l.cfg.payload_type,
        telephone_event: l.cfg.telephone_event,
        telephone_event_rate: l.cfg.telephone_event_rate,
        params: Box::default(),
        srtp: l.cfg.srtp.clone(),
    }
}

/// [`test_leg`] sending packets of `ptime`.
#[cfg(test)]
fn test_leg_with_ptime(now: Instant, ptime: Duration) -> Leg {
    let remote = SocketAddr::from(([127, 0, 0, 1], 40000));
    let cfg = LegConfig {
        ptime,
        ..LegConfig::pcmu(remote, Ssrc::new(7))
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
        let mut g = ToneGenerator::new(&spec, NARROW_RATE).unwrap();
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
    fn packets_missing_from_the_sequence_are_counted_lost() {
        let t0 = Instant::now();
        let mut l = leg(t0);
        let mut input = packets(&generate("1000/1000@-10", 1000), 100);
        // Five packets never arrive (a gap in the sequence numbers), and a tick hears nothing.
        for p in input.iter_mut().skip(20).take(5) {
            p.clear();
        }
        run(&mut l, t0, &input, 50);
        let stats = l.stats();
        assert_eq!(stats.packets_in, 45);
        assert_eq!(stats.packets_lost, 5);
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
        room: &Frame,
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
        let room = Frame::from_samples(NARROW_RATE, &generate("500/20@-10", 20));
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
                    source: Box::new(ToneGenerator::new(&spec, NARROW_RATE).unwrap()),
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
        let source = Box::new(ToneGenerator::new(&spec, NARROW_RATE).unwrap());
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
                source: Box::new(ToneGenerator::new(&spec, NARROW_RATE).unwrap()),
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
            update_keeping_codec(
                &held,
                Some(PEER.parse().unwrap()),
                None,
                Direction::SendOnly,
                FRAME,
            ),
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
            update_keeping_codec(
                &l,
                Some(PEER.parse().unwrap()),
                None,
                Direction::Inactive,
                FRAME,
            ),
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
        let mut gen = crate::media::tone::ToneGenerator::new(&tone, NARROW_RATE).unwrap();
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
    fn with_inband_auto_only_a_leg_without_rfc4733_listens_for_tones() {
        let t0 = Instant::now();
        let auto = |telephone_event| {
            let mut l = leg(t0);
            l.cfg.inband = InbandDetection::Auto;
            l.cfg.telephone_event = telephone_event;
            l
        };
        let mut events_agreed = auto(Some(TE));
        assert_eq!(
            digits(&run(&mut events_agreed, t0, false, true, false)),
            vec![],
            "events agreed: tones alone go unheard"
        );
        let mut both = auto(Some(TE));
        assert_eq!(
            digits(&run(&mut both, t0, true, true, false)),
            vec![('7', DtmfMethod::Rfc4733)],
            "its events are heard"
        );
        let mut no_events = auto(None);
        assert_eq!(
            digits(&run(&mut no_events, t0, false, true, false)),
            vec![('7', DtmfMethod::Inband)],
            "no events agreed: tones are listened for"
        );
        // The default listens whatever was agreed (inband_press_alone_is_reported).
        assert_eq!(leg(t0).cfg.inband, InbandDetection::Always);
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
            read_keys(&mut rx, now, p, &mut got);
        });
        assert_eq!(got, "19#");
        assert!(audio_packets > 0, "audio resumes between and after events");
    }

    #[test]
    fn sent_dtmf_inband_is_heard_as_tones() {
        let mut det = InbandDetector::new(NARROW_RATE).unwrap();
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

#[cfg(test)]
mod ptime_tests {
    use super::*;
    use crate::media::codec::g711::{ulaw_decode, ulaw_encode};
    use crate::media::level::{rms_dbfs, tone_share};
    use crate::media::tone::{ToneGenerator, ToneSpec};
    use crate::rtp::packet::RtpHeader;

    const PEER: &str = "127.0.0.1:40000";
    const TE: PayloadType = PayloadType::DEFAULT_TELEPHONE_EVENT;
    const TONE: &str = "1000/10000@-10";

    /// One RTP packet the leg sent: the tick it left in, its header and payload.
    pub(super) struct Sent {
        pub(super) tick: u64,
        pub(super) header: RtpHeader,
        pub(super) payload: Vec<u8>,
    }

    fn tone_source() -> Box<ToneGenerator> {
        let spec: ToneSpec = TONE.parse().unwrap();
        Box::new(ToneGenerator::new(&spec, NARROW_RATE).unwrap())
    }

    /// The first `samples` of the played tone as the peer should hear them (through µ-law).
    fn expected_tone(samples: usize) -> Vec<i16> {
        let mut pcm = vec![0i16; samples];
        tone_source().fill(&mut pcm);
        pcm.iter().map(|&s| ulaw_decode(ulaw_encode(s))).collect()
    }

    fn playing_leg(t0: Instant, ptime_ms: u64) -> Leg {
        let mut l = test_leg_with_ptime(t0, Duration::from_millis(ptime_ms));
        l.apply(
            t0,
            LegCommand::Play {
                id: 1,
                source: tone_source(),
                barge_in: false,
            },
        );
        l
    }

    fn tick_leg(l: &mut Leg, t0: Instant, ticks: std::ops::Range<u64>, out: &mut Vec<Sent>) {
        for n in ticks {
            let now = t0 + FRAME * n as u32;
            l.tick(now, SystemTime::now(), n, &mut collect(n, out));
        }
    }

    /// A send callback keeping the RTP packets sent in tick `n`.
    pub(super) fn collect(n: u64, out: &mut Vec<Sent>) -> impl FnMut(Port, SocketAddr, &[u8]) + '_ {
        move |port, _, bytes| {
            if port == Port::Rtp {
                let p = RtpPacket::parse(bytes).unwrap();
                out.push(Sent {
                    tick: n,
                    header: p.header,
                    payload: p.payload.to_vec(),
                });
            }
        }
    }

    /// A leg with `ptime_ms` playing the tone for `ticks`, and what it sent.
    fn played(ptime_ms: u64, ticks: u64) -> (Leg, Vec<Sent>, Instant) {
        let t0 = Instant::now();
        let mut l = playing_leg(t0, ptime_ms);
        let mut sent = Vec::new();
        tick_leg(&mut l, t0, 0..ticks, &mut sent);
        (l, sent, t0)
    }

    fn decode(packets: &[&Sent]) -> Vec<i16> {
        packets
            .iter()
            .flat_map(|p| p.payload.iter().map(|&b| ulaw_decode(b)))
            .collect()
    }

    /// Checks packets of `samples` samples: sizes, timestamps, sequence numbers, the ticks
    /// they leave in, and that together they carry the played tone unbroken.
    fn check_stream(sent: &[Sent], samples: usize) {
        assert!(sent.len() > 10);
        let first_ts = sent[0].header.timestamp.get();
        for (i, p) in sent.iter().enumerate() {
            assert_eq!(p.payload.len(), samples, "packet {i}");
            assert_eq!(p.header.payload_type, PayloadType::PCMU);
            assert_eq!(
                p.header.timestamp.get().wrapping_sub(first_ts),
                (i * samples) as u32,
                "packet {i} is stamped by its first sample"
            );
            assert_eq!(
                p.header.seq.get(),
                sent[0].header.seq.get().wrapping_add(i as u16)
            );
            assert_eq!(p.header.marker, i == 0, "packet {i}");
            // A packet leaves in the tick that completes it.
            let end = (i + 1) * samples;
            assert_eq!(
                p.tick as usize,
                end.div_ceil(FRAME_SAMPLES) - 1,
                "packet {i}"
            );
        }
        let audio = decode(&sent.iter().collect::<Vec<_>>());
        assert_eq!(
            audio,
            expected_tone(audio.len()),
            "the tone, sample for sample"
        );
        assert!(tone_share(&audio, 1000.0, 8000.0) > 0.995);
        let level = rms_dbfs(&audio);
        let want = rms_dbfs(&expected_tone(audio.len()));
        assert!((level - want).abs() < 0.2, "{level} vs {want}");
    }

    #[test]
    fn forty_ms_packets_every_second_tick() {
        let (l, sent, _) = played(40, 100);
        assert_eq!(sent.len(), 50);
        check_stream(&sent, 320);
        assert!(sent.iter().all(|p| p.tick % 2 == 1));
        assert_eq!(l.stats().packets_out, 50);
    }

    #[test]
    fn thirty_ms_packets_fall_between_ticks() {
        let (_, sent, _) = played(30, 99);
        // 99 ticks make 66 packets of 30 ms: sent in ticks 1, 2, 4, 5, 7, 8 …
        assert_eq!(sent.len(), 66);
        check_stream(&sent, 240);
        assert!(sent.iter().all(|p| p.tick % 3 != 0));
    }

    #[test]
    fn sixty_and_ten_ms_packets() {
        let (_, sent, _) = played(60, 90);
        assert_eq!(sent.len(), 30);
        check_stream(&sent, 480);

        let (_, sent, _) = played(10, 50);
        assert_eq!(sent.len(), 100, "two packets a tick");
        check_stream(&sent, 80);
    }

    #[test]
    fn unusable_ptimes_send_twenty_ms() {
        for ms in [0, 5, 25, 70, 80] {
            let (_, sent, _) = played(ms, 20);
            assert_eq!(sent.len(), 20, "ptime {ms}");
            check_stream(&sent, 160);
        }
    }

    #[test]
    fn a_new_ptime_from_a_reinvite_applies_to_later_packets() {
        let (mut l, mut sent, t0) = played(20, 20);
        l.apply(
            t0 + FRAME * 20,
            update_keeping_codec(
                &l,
                PEER.parse().ok(),
                None,
                Direction::SendRecv,
                Duration::from_millis(40),
            ),
        );
        tick_leg(&mut l, t0, 20..60, &mut sent);
        let sizes: Vec<usize> = sent.iter().map(|p| p.payload.len()).collect();
        assert_eq!(sizes[..20], [160; 20]);
        assert_eq!(sizes[20..], [320; 20]);
        let audio = decode(&sent.iter().collect::<Vec<_>>());
        assert_eq!(audio, expected_tone(60 * FRAME_SAMPLES));
    }

    #[test]
    fn an_rfc4733_event_in_forty_ms_packetisation() {
        // Tick 10 buffers half a packet; the event starts at tick 11 and replaces it.
        let (mut l, mut sent, t0) = played(40, 11);
        l.apply(
            t0 + FRAME * 11,
            LegCommand::SendDtmf {
                digits: "5".into(),
                inband: false,
            },
        );
        tick_leg(&mut l, t0, 11..60, &mut sent);

        let events: Vec<&Sent> = sent
            .iter()
            .filter(|p| p.header.payload_type == TE)
            .collect();
        let audio: Vec<&Sent> = sent
            .iter()
            .filter(|p| p.header.payload_type != TE)
            .collect();
        assert!(!events.is_empty());
        let (first_ev, last_ev) = (events[0].tick, events[events.len() - 1].tick);
        assert_eq!(first_ev, 11);
        assert!(
            events
                .iter()
                .all(|e| (first_ev..=last_ev).contains(&e.tick)),
            "one event packet a tick, together"
        );
        assert_eq!(last_ev - first_ev + 1, events.len() as u64);
        // The receiver reads the key back.
        let mut rx = EventReceiver::new(TE, crate::rtp::types::ClockRate::HZ_8000);
        let mut digits = String::new();
        for e in &events {
            let now = t0 + FRAME * e.tick as u32;
            let p = RtpPacket::new(e.header, &e.payload);
            read_keys(&mut rx, now, &p, &mut digits);
        }
        assert_eq!(digits, "5");

        let base = sent[0].header.timestamp.get();
        let ts = |p: &Sent| p.header.timestamp.get().wrapping_sub(base) as usize;
        assert_eq!(
            events[0].header.timestamp.get().wrapping_sub(base),
            11 * 160
        );
        let (before, after): (Vec<&Sent>, Vec<&Sent>) =
            audio.iter().partition(|p| p.tick < first_ev);
        assert_eq!(
            before.len(),
            5,
            "ticks 0-9 in five packets; tick 10's half dropped"
        );
        assert!(
            after.iter().all(|p| p.tick > last_ev),
            "no audio while the event runs"
        );
        // Audio resumes at the tick after the event, stamped by the media clock: nothing
        // buffered before the event comes out late.
        assert_eq!(ts(after[0]), (last_ev as usize + 1) * 160);
        assert_eq!(
            after[0].tick,
            last_ev + 2,
            "its first packet fills in two ticks"
        );
        for pair in after.windows(2) {
            assert_eq!(ts(pair[1]) - ts(pair[0]), 320);
        }
        assert!(audio.iter().all(|p| p.payload.len() == 320));
        // Sequence numbers run on through the events.
        for (i, p) in sent.iter().enumerate() {
            assert_eq!(
                p.header.seq.get(),
                sent[0].header.seq.get().wrapping_add(i as u16)
            );
        }
        // What resumes is the tone, unbroken, where the media clock has it.
        let resumed = decode(&after);
        let from = ts(after[0]);
        let want = expected_tone(from + resumed.len());
        assert_eq!(resumed, want[from..]);
        assert!(tone_share(&resumed, 1000.0, 8000.0) > 0.995);
    }

    #[test]
    fn room_audio_encoded_once_goes_out_in_forty_ms_packets() {
        let t0 = Instant::now();
        let mut l = test_leg_with_ptime(t0, Duration::from_millis(40));
        let mut gen = tone_source();
        let mut sent = Vec::new();
        for n in 0..40u64 {
            let now = t0 + FRAME * n as u32;
            let mut pcm = Frame::silence(NARROW_RATE);
            gen.fill(&mut pcm);
            let payload: Vec<u8> = pcm.iter().map(|&s| ulaw_encode(s)).collect();
            l.receive(now);
            let mut out = collect(n, &mut sent);
            l.send_encoded(now, SystemTime::now(), n, &pcm, &payload, &mut out);
        }
        assert_eq!(sent.len(), 20);
        check_stream(&sent, 320);
    }

    /// PCMU packets of `pcm`, in runs of (count, samples per packet), numbered and stamped
    /// continuously.
    fn varying_packets(pcm: &[i16], runs: &[(usize, usize)]) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut seq = 500u16;
        for &(count, per) in runs {
            for _ in 0..count {
                let payload: Vec<u8> = pcm[at..at + per].iter().map(|&s| ulaw_encode(s)).collect();
                let header = RtpHeader {
                    marker: at == 0,
                    payload_type: PayloadType::PCMU,
                    seq: WireSeq::new(seq),
                    timestamp: RtpTimestamp::new(9000 + at as u32),
                    ssrc: Ssrc::new(99),
                };
                let mut buf = vec![0u8; 1500];
                let n = RtpPacket::new(header, &payload).write(&mut buf).unwrap();
                buf.truncate(n);
                at += per;
                seq = seq.wrapping_add(1);
                // The packet leaves once its last sample exists.
                out.push((at, buf));
            }
        }
        out
    }

    /// Echoes packets of the given runs, each handed over in the tick its audio is complete,
    /// and returns the decoded echo and the frames concealed until the last packet arrived.
    fn echo(runs: &[(usize, usize)], ticks: usize) -> (Vec<i16>, u64) {
        let t0 = Instant::now();
        let mut l = test_leg(t0);
        l.apply(t0, LegCommand::Echo(true));
        let total: usize = runs.iter().map(|(c, p)| c * p).sum();
        let mut pcm = vec![0i16; total];
        tone_source().fill(&mut pcm);
        let input = varying_packets(&pcm, runs);
        let from: SocketAddr = PEER.parse().unwrap();
        let mut next = 0;
        let mut sent = Vec::new();
        let mut concealed = None;
        for n in 0..ticks {
            let now = t0 + FRAME * n as u32;
            while next < input.len() && input[next].0 <= (n + 1) * FRAME_SAMPLES {
                l.handle_packet(now, SystemTime::now(), from, &input[next].1);
                next += 1;
            }
            if next == input.len() && concealed.is_none() {
                concealed = Some(l.stats().frames_concealed);
            }
            tick_leg(&mut l, t0, n as u64..n as u64 + 1, &mut sent);
        }
        assert_eq!(next, input.len());
        let concealed = concealed.unwrap_or(u64::MAX);
        (decode(&sent.iter().collect::<Vec<_>>()), concealed)
    }

    #[test]
    fn ten_forty_and_sixty_ms_packets_are_received() {
        for per in [80, 320, 480] {
            let count = 2400 / per * 8 / 2;
            let (out, concealed) = echo(&[(count, per)], 80);
            let middle = &out[30 * FRAME_SAMPLES..60 * FRAME_SAMPLES];
            let share = tone_share(middle, 1000.0, 8000.0);
            assert!(share > 0.99, "{per}: {share}");
            assert!((rms_dbfs(middle) - rms_dbfs(&expected_tone(4800))).abs() < 0.5);
            assert_eq!(concealed, 0, "{per}: no gap while packets keep coming");
        }
    }

    #[test]
    fn a_peer_changing_ptime_mid_call_is_followed() {
        // 20 ms for 1.2 s, then 40 ms for 1.2 s, then 10 ms for 1.2 s.
        let (out, concealed) = echo(&[(60, 160), (30, 320), (120, 80)], 200);
        // Each change of packet size starts the jitter buffer over: a short gap at most.
        assert!(concealed <= 6, "{concealed}");
        for (from, to) in [(20, 60), (85, 120), (145, 180)] {
            let part = &out[from * FRAME_SAMPLES..to * FRAME_SAMPLES];
            let share = tone_share(part, 1000.0, 8000.0);
            assert!(share > 0.99, "ticks {from}..{to}: {share}");
        }
    }

    /// Our SR states the RTP time of our packets: a leg joining a worker at tick 5000 stamps
    /// its SR from the worker's tick 0, not from its own creation.
    #[test]
    fn the_sender_report_matches_the_packets_rtp_clock() {
        let t0 = Instant::now();
        let start = 5000u64;
        let mut l = playing_leg(t0 + FRAME * start as u32, 40);
        let mut sr = None;
        let mut last_audio = None;
        for n in start..start + 300 {
            let now = t0 + FRAME * n as u32;
            l.tick(
                now,
                SystemTime::now(),
                n,
                &mut |port, _, bytes| match port {
                    Port::Rtp => last_audio = Some((n, RtpPacket::parse(bytes).unwrap().header)),
                    Port::Rtcp if bytes[1] == 200 && sr.is_none() => {
                        let ts = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
                        sr = Some((n, ts));
                    }
                    Port::Rtcp => {}
                },
            );
        }
        let (sr_tick, sr_ts) = sr.expect("an SR");
        let (audio_tick, audio) = last_audio.unwrap();
        // The last 40 ms packet starts one tick before the tick that sent it.
        let audio_start = audio_tick - 1;
        let expected = audio
            .timestamp
            .get()
            .wrapping_sub(((audio_start - sr_tick) * 160) as u32);
        assert_eq!(sr_ts, expected);
    }
}

#[cfg(test)]
mod strict_tests {
    use super::*;
    use crate::media::codec::g711::{ulaw_decode, ulaw_encode};
    use crate::media::dtmf::rfc4733::encode_event;
    use crate::media::record::{RecordPolicy, RecordingMeta, RecordingWriter};
    use crate::media::tone::{ToneGenerator, ToneSpec};
    use crate::metrics::{Gauges, Metrics};
    use crate::rtp::packet::RtpHeader;

    const PEER: &str = "127.0.0.1:40000";
    /// Another port on the caller's host: a stale caller, or someone spraying the range.
    const STRANGER: &str = "127.0.0.1:40002";
    const CALLER_HZ: f64 = 1000.0;
    const STRANGER_HZ: f64 = 2000.0;
    const TICKS: u32 = 120;
    /// The caller starts talking after the stranger has been at it for a while.
    const CALLER_FROM: u32 = 15;

    fn rtp(pt: PayloadType, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let header = RtpHeader {
            marker: false,
            payload_type: pt,
            seq: WireSeq::new(seq),
            timestamp: RtpTimestamp::new(ts),
            ssrc: Ssrc::new(ssrc),
        };
        let mut out = vec![0u8; 1500];
        let n = RtpPacket::new(header, payload).write(&mut out).unwrap();
        out.truncate(n);
        out
    }

    fn pcmu(pcm: &[i16]) -> Vec<u8> {
        pcm.iter().map(|&s| ulaw_encode(s)).collect()
    }

    fn power(pcm: &[i16], hz: f64) -> f64 {
        crate::media::level::tone_share(pcm, hz, 8000.0)
    }

    fn counter(m: &Metrics, stream: &str) -> u64 {
        let text = m.render(&Gauges::default());
        let key = format!("switchboard_rtp_stranger_packets_dropped_total{{stream=\"{stream}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    }

    /// A stranger sprays loud tone, an in-band key and RFC 4733 key events (in sequence, one
    /// SSRC) from the first tick; the caller talks from `CALLER_FROM`. The leg echoes and
    /// records what it hears.
    #[test]
    fn a_strangers_spray_is_not_heard_recorded_or_detected_and_the_echo_reaches_the_caller() {
        let t0 = Instant::now();
        let metrics = Arc::new(Metrics::default());
        let mut cfg_leg = test_leg(t0);
        cfg_leg.cfg.sources.metrics = Some(metrics.clone());
        let mut l = cfg_leg;
        l.apply(t0, LegCommand::Echo(true));
        let tmp = crate::media::record::tests::TempDir::new("strict-leg");
        let (factory, writer) = RecordingWriter::spawn(&tmp.0).unwrap();
        let handle = factory
            .start(RecordingMeta {
                call_id: "strict".into(),
                from: "a".into(),
                to: "b".into(),
                room: None,
                mode: crate::media::record::RecordMode::Inbound,
                rate: NARROW_RATE,
            })
            .unwrap();
        let id = handle.id().to_owned();
        l.apply(
            t0,
            LegCommand::Record {
                session: Box::new(RecordSession::new(RecordPolicy::default())),
                handle,
            },
        );

        let mut caller =
            ToneGenerator::new(&"1000/10000@-10".parse().unwrap(), NARROW_RATE).unwrap();
        let mut loud = ToneGenerator::new(&"2000/10000@-3".parse().unwrap(), NARROW_RATE).unwrap();
        let key = ToneSpec::dtmf(Digit::from_char('5').unwrap(), 200, 0);
        let mut key = ToneGenerator::new(&key, NARROW_RATE).unwrap();
        let (peer, stranger): (SocketAddr, SocketAddr) =
            (PEER.parse().unwrap(), STRANGER.parse().unwrap());
        let wc = SystemTime::now();
        let mut heard = Vec::new();
        let mut echoed = Vec::new();
        let (mut seq, mut caller_seq) = (7000u16, 100u16);
        for n in 0..TICKS {
            let now = t0 + FRAME * n;
            let mut pcm = [0i16; FRAME_SAMPLES];
            if (30..40).contains(&n) {
                key.fill(&mut pcm);
            } else {
                loud.fill(&mut pcm);
            }
            let spray = rtp(PayloadType::PCMU, 0xbad, seq, n * 160, &pcmu(&pcm));
            l.handle_packet(now, wc, stranger, &spray);
            seq = seq.wrapping_add(1);
            if (50..60).contains(&n) {
                let ev = encode_event(9, n >= 57, 10, ((n - 50) * 160) as u16);
                let te = PayloadType::DEFAULT_TELEPHONE_EVENT;
                l.handle_packet(now, wc, stranger, &rtp(te, 0xbad, seq, 50 * 160, &ev));
                seq = seq.wrapping_add(1);
            }
            if n >= CALLER_FROM {
                caller.fill(&mut pcm);
                let own = rtp(PayloadType::PCMU, 0x5eed, caller_seq, n * 160, &pcmu(&pcm));
                l.handle_packet(now, wc, peer, &own);
                caller_seq = caller_seq.wrapping_add(1);
            }
            l.tick(now, wc, u64::from(n), &mut |port, to, bytes| {
                assert_ne!(to.port(), stranger.port(), "nothing goes to the stranger");
                if port == Port::Rtp {
                    assert_eq!(to, peer);
                    let p = RtpPacket::parse(bytes).unwrap();
                    echoed.extend(p.payload.iter().map(|&b| ulaw_decode(b)));
                }
            });
            heard.extend_from_slice(l.input());
        }
        // A stranger's RTCP is dropped and counted too.
        let rtcp_from: SocketAddr = "127.0.0.1:40003".parse().unwrap();
        l.handle_rtcp(
            t0 + FRAME * TICKS,
            wc,
            rtcp_from,
            &[0x80, 201, 0, 1, 0, 0, 0, 1],
        );
        l.apply(t0, LegCommand::StopRecord);
        let events: Vec<LegEvent> = std::iter::from_fn(|| l.poll_event()).collect();
        assert!(
            !events.iter().any(|e| matches!(e, LegEvent::Digit { .. })),
            "{events:?}"
        );
        drop(factory);
        writer.join().unwrap();

        let frame = FRAME_SAMPLES;
        let before = &heard[..CALLER_FROM as usize * frame];
        assert!(before.iter().all(|&s| s == 0), "silence before the caller");
        let during = &heard[(CALLER_FROM as usize + 10) * frame..];
        assert!(
            power(during, CALLER_HZ) > 0.9,
            "{}",
            power(during, CALLER_HZ)
        );
        assert!(
            power(during, STRANGER_HZ) < 0.01,
            "{}",
            power(during, STRANGER_HZ)
        );
        let echo = &echoed[(CALLER_FROM as usize + 10) * frame..];
        assert!(power(echo, CALLER_HZ) > 0.9, "{}", power(echo, CALLER_HZ));
        assert!(
            power(echo, STRANGER_HZ) < 0.01,
            "{}",
            power(echo, STRANGER_HZ)
        );

        let mut wav = hound::WavReader::open(tmp.0.join(format!("{id}.wav"))).unwrap();
        let recorded: Vec<i16> = wav.samples::<i16>().map(|s| s.unwrap()).collect();
        assert!(recorded.len() >= 100 * frame, "{}", recorded.len());
        assert!(
            power(&recorded, STRANGER_HZ) < 0.01,
            "{}",
            power(&recorded, STRANGER_HZ)
        );
        assert!(
            power(&recorded, CALLER_HZ) > 0.8,
            "{}",
            power(&recorded, CALLER_HZ)
        );

        let dropped = l.report().recv.foreign;
        assert_eq!(dropped, u64::from(TICKS) + 10, "every stranger packet");
        assert_eq!(counter(&metrics, "rtp"), dropped);
        assert_eq!(counter(&metrics, "rtcp"), 1);
    }

    /// SIP from 127.0.0.1, SDP saying 127.0.0.2: NAT is evident, and the caller's real source
    /// is learned from its packets in the window.
    #[test]
    fn behind_evident_nat_the_real_source_is_learned_and_hears_its_echo() {
        let t0 = Instant::now();
        let sdp: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let real: SocketAddr = STRANGER.parse().unwrap();
        let cfg = LegConfig {
            remote: Some(sdp),
            remote_rtcp: Some(SocketAddr::new(sdp.ip(), 40001)),
            sources: LegSources {
                signalling: Some(real.ip()),
                ..LegSources::default()
            },
            ..test_leg(t0).cfg
        };
        let mut l = Leg::new(cfg, t0).unwrap();
        l.apply(t0, LegCommand::Echo(true));
        let mut tone = ToneGenerator::new(&"1000/2000@-10".parse().unwrap(), NARROW_RATE).unwrap();
        let wc = SystemTime::now();
        let mut echoed = Vec::new();
        let mut dests = Vec::new();
        for n in 0..60u32 {
            let now = t0 + FRAME * n;
            let mut pcm = [0i16; FRAME_SAMPLES];
            tone.fill(&mut pcm);
            l.handle_packet(
                now,
                wc,
                real,
                &rtp(PayloadType::PCMU, 1, n as u16, n * 160, &pcmu(&pcm)),
            );
            l.tick(now, wc, u64::from(n), &mut |port, to, bytes| {
                if port == Port::Rtp {
                    dests.push(to);
                    echoed.extend(
                        RtpPacket::parse(bytes)
                            .unwrap()
                            .payload
                            .iter()
                            .map(|&b| ulaw_decode(b)),
                    );
                }
            });
        }
        assert_eq!(l.report().recv.foreign, 3, "the proof's first packets");
        assert_eq!(dests[..3], [sdp; 3], "the SDP address until learned");
        assert!(dests[3..].iter().all(|&d| d == real));
        let tail = &echoed[20 * FRAME_SAMPLES..];
        assert!(power(tail, CALLER_HZ) > 0.9, "{}", power(tail, CALLER_HZ));
    }

    /// Behind evident NAT, a caller that starts sending only after the window is not heard
    /// until signalling opens a new one: a re-INVITE moving the media, or the answer after
    /// early media.
    #[test]
    fn a_media_move_or_a_late_answer_opens_a_new_window() {
        let t0 = Instant::now();
        let real: SocketAddr = STRANGER.parse().unwrap();
        let cfg = LegConfig {
            remote: "127.0.0.2:40000".parse().ok(),
            remote_rtcp: "127.0.0.2:40001".parse().ok(),
            sources: LegSources {
                signalling: Some(real.ip()),
                ..LegSources::default()
            },
            ..test_leg(t0).cfg
        };
        let mut l = Leg::new(cfg, t0).unwrap();
        let mut tone = ToneGenerator::new(&"1000/60000@-10".parse().unwrap(), NARROW_RATE).unwrap();
        let wc = SystemTime::now();
        let mut seq = 0u16;
        // Ticks `from..to` with the caller talking; what the leg heard over the last 20.
        let mut talk = |l: &mut Leg, from: u32, to: u32| {
            let mut heard = Vec::new();
            for n in from..to {
                let now = t0 + FRAME * n;
                let mut pcm = [0i16; FRAME_SAMPLES];
                tone.fill(&mut pcm);
                let p = rtp(PayloadType::PCMU, 1, seq, n * 160, &pcmu(&pcm));
                seq = seq.wrapping_add(1);
                l.handle_packet(now, wc, real, &p);
                l.tick(now, wc, u64::from(n), &mut |_, _, _| {});
                if n + 20 >= to {
                    heard.extend_from_slice(l.input());
                }
            }
            power(&heard, CALLER_HZ)
        };
        let window = DEFAULT_LEARN_WINDOW.as_millis() as u32 / 20;
        assert!(
            talk(&mut l, window, window + 60) < 0.01,
            "learned after the window"
        );
        let moved = t0 + FRAME * (window + 60);
        l.apply(
            moved,
            update_keeping_codec(
                &l,
                "127.0.0.2:40010".parse().ok(),
                "127.0.0.2:40011".parse().ok(),
                Direction::SendRecv,
                FRAME,
            ),
        );
        assert!(
            talk(&mut l, window + 60, window + 120) > 0.9,
            "not learned after the move"
        );

        let mut l = Leg::new(l.cfg.clone(), t0).unwrap();
        let late = 2 * window;
        assert!(
            talk(&mut l, late, late + 60) < 0.01,
            "learned after the window"
        );
        l.apply(t0 + FRAME * (late + 60), LegCommand::Answered);
        assert!(
            talk(&mut l, late + 60, late + 120) > 0.9,
            "not learned after the answer"
        );
    }
}

#[cfg(test)]
mod codec_switch_tests {
    use super::ptime_tests::{collect, Sent};
    use super::*;
    use crate::media::level::{rms_dbfs, tone_share};
    use crate::media::tone::{ToneGenerator, ToneSpec};
    use crate::rtp::packet::RtpHeader;

    const PEER: &str = "127.0.0.1:40000";
    /// Ticks before the re-INVITE's codec takes effect.
    const SWITCH: u64 = 25;
    const END: u64 = 75;
    /// What the leg plays, and what the peer says.
    const PLAYED_HZ: f64 = 1000.0;
    const PEER_HZ: f64 = 2000.0;

    fn tone(hz: f64, ms: u32) -> ToneGenerator {
        tone_at(hz, ms, NARROW_RATE)
    }

    fn tone_at(hz: f64, ms: u32, rate: ClockRate) -> ToneGenerator {
        let spec: ToneSpec = format!("{hz}/{ms}@-10").parse().unwrap();
        ToneGenerator::new(&spec, rate).unwrap()
    }

    /// The next 20 ms of `talk` at its rate.
    fn next_frame(talk: &mut ToneGenerator) -> Frame {
        let mut pcm = Frame::silence(talk.rate());
        talk.fill(&mut pcm);
        pcm
    }

    /// The command a re-INVITE that agreed `codec` on `pt` sends, the rest unchanged.
    fn switch_to(codec: CodecKind, pt: PayloadType) -> LegCommand {
        LegCommand::Update {
            remote: PEER.parse().ok(),
            remote_rtcp: None,
            direction: Direction::SendRecv,
            ptime: FRAME,
            codec,
            payload_type: pt,
            telephone_event: Some(PayloadType::DEFAULT_TELEPHONE_EVENT),
            telephone_event_rate: None,
            params: Box::default(),
            srtp: None,
        }
    }

    /// The peer's packet for tick `n`: 20 ms of `pcm` in `codec`, on `pt`, stamped on the
    /// codec's clock from where the tick falls.
    fn peer_packet(
        enc: &mut dyn AudioCodec,
        codec: CodecKind,
        pt: PayloadType,
        n: u64,
        ts: u64,
        pcm: &Frame,
    ) -> Vec<u8> {
        let mut payload = vec![0u8; codec.max_payload_bytes(pcm.len())];
        let len = enc.encode(pcm, &mut payload).unwrap();
        let header = RtpHeader {
            marker: n == 0,
            payload_type: pt,
            seq: WireSeq::new(500u16.wrapping_add(n as u16)),
            timestamp: RtpTimestamp::new(ts as u32),
            ssrc: Ssrc::new(99),
        };
        let mut out = vec![0u8; 1500];
        let n = RtpPacket::new(header, &payload[..len])
            .write(&mut out)
            .unwrap();
        out.truncate(n);
        out
    }

    /// Ticks `from..to`; before each, `input` may give the leg a packet from the peer.
    /// Returns what the leg heard (at its rate at the time); what it sent is appended to
    /// `sent`.
    fn run(
        l: &mut Leg,
        t0: Instant,
        ticks: std::ops::Range<u64>,
        mut input: impl FnMut(u64) -> Option<Vec<u8>>,
        sent: &mut Vec<Sent>,
    ) -> Vec<i16> {
        let peer: SocketAddr = PEER.parse().unwrap();
        let wc = SystemTime::now();
        let mut heard = Vec::new();
        for n in ticks {
            let now = t0 + FRAME * n as u32;
            if let Some(p) = input(n) {
                l.handle_packet(now, wc, peer, &p);
            }
            l.tick(now, wc, n, &mut collect(n, sent));
            heard.extend_from_slice(l.input());
        }
        heard
    }

    /// `payloads` decoded by a fresh `codec`, at its rate.
    fn decode<'a>(codec: CodecKind, payloads: impl Iterator<Item = &'a Sent>) -> Vec<i16> {
        let mut dec = codec.new_codec();
        let mut out = Vec::new();
        for s in payloads {
            let mut frame = [0i16; MAX_PACKET_SAMPLES];
            let n = dec.decode(&s.payload, &mut frame).unwrap();
            out.extend_from_slice(&frame[..n]);
        }
        out
    }

    fn check_tone(pcm: &[i16], hz: f64, what: &str) -> f64 {
        check_tone_at(pcm, hz, NARROW_RATE, what)
    }

    fn check_tone_at(pcm: &[i16], hz: f64, rate: ClockRate, what: &str) -> f64 {
        let share = tone_share(pcm, hz, f64::from(rate.hz()));
        assert!(share > 0.95, "{what}: {hz} Hz share {share:.3}");
        rms_dbfs(pcm)
    }

    #[test]
    fn a_reinvite_from_pcmu_to_g722_switches_what_is_sent_and_heard() {
        let t0 = Instant::now();
        let mut l = test_leg(t0);
        l.apply(
            t0,
            LegCommand::Play {
                id: 1,
                source: Box::new(tone(PLAYED_HZ, 10_000)),
                barge_in: false,
            },
        );
        let mut talk = tone(PEER_HZ, 10_000);
        let mut talk_wide = tone_at(PEER_HZ, 10_000, ClockRate::HZ_16000);
        let mut pcmu = CodecKind::Pcmu.new_codec();
        let mut g722 = CodecKind::G722.new_codec();
        let mut sent = Vec::new();
        let mut speak = |n: u64, enc: &mut dyn AudioCodec, codec: CodecKind, pt| {
            let pcm = if codec == CodecKind::G722 {
                next_frame(&mut talk_wide)
            } else {
                next_frame(&mut talk)
            };
            Some(peer_packet(enc, codec, pt, n, 7000 + 160 * n, &pcm))
        };
        let before = run(
            &mut l,
            t0,
            0..SWITCH,
            |n| speak(n, pcmu.as_mut(), CodecKind::Pcmu, PayloadType::PCMU),
            &mut sent,
        );
        l.apply(
            t0 + FRAME * SWITCH as u32,
            switch_to(CodecKind::G722, PayloadType::G722),
        );
        assert_eq!(l.codec(), CodecKind::G722, "a room groups the leg by this");
        // The peer's last two PCMU packets were on their way when it read the answer.
        let after = run(
            &mut l,
            t0,
            SWITCH..END,
            |n| match n - SWITCH {
                0 | 1 => speak(n, pcmu.as_mut(), CodecKind::Pcmu, PayloadType::PCMU),
                _ => speak(n, g722.as_mut(), CodecKind::G722, PayloadType::G722),
            },
            &mut sent,
        );

        assert_eq!(l.report().recv.bad_payload_type, 2, "late PCMU not dropped");
        assert_eq!(l.stats().packets_in, END - 2);
        let heard_before = check_tone(&before[10 * FRAME_SAMPLES..], PEER_HZ, "heard in PCMU");
        // Heard at G.722's own 16 kHz from the switch on.
        let wide = ClockRate::HZ_16000;
        let heard_after = check_tone_at(&after[30 * FRAME_SAMPLES..], PEER_HZ, wide, "in G.722");
        assert!(
            (heard_after - heard_before).abs() < 1.5,
            "heard at {heard_before:.1} dBFS, then {heard_after:.1}"
        );

        let (old, new): (Vec<&Sent>, Vec<&Sent>) = sent.iter().partition(|s| s.tick < SWITCH);
        assert_eq!((old.len(), new.len()), (25, 50), "a packet every tick");
        assert!(old
            .iter()
            .all(|s| s.header.payload_type == PayloadType::PCMU));
        assert!(new
            .iter()
            .all(|s| s.header.payload_type == PayloadType::G722 && s.payload.len() == 160));
        for w in sent.windows(2) {
            assert_eq!(w[1].header.seq.get(), w[0].header.seq.get().wrapping_add(1));
            // G.722 keeps the 8 kHz clock: the timestamps run on.
            let step = w[1]
                .header
                .timestamp
                .get()
                .wrapping_sub(w[0].header.timestamp.get());
            assert_eq!(step, 160);
        }
        assert!(
            new[0].header.marker,
            "the new codec's first packet is marked"
        );
        let played_before = check_tone(
            &decode(CodecKind::Pcmu, old.into_iter()),
            PLAYED_HZ,
            "sent in PCMU",
        );
        // The tone was made for PCMU's rate; the leg carries it over to G.722's.
        let played_after = check_tone_at(
            &decode(CodecKind::G722, new.into_iter().skip(1)),
            PLAYED_HZ,
            wide,
            "sent in G.722",
        );
        assert!(
            (played_after - played_before).abs() < 1.0,
            "sent at {played_before:.1} dBFS, then {played_after:.1}"
        );
    }

    #[test]
    fn an_update_with_the_same_codec_restarts_nothing() {
        let t0 = Instant::now();
        let mut l = test_leg(t0);
        l.apply(t0, LegCommand::Echo(true));
        let mut talk = tone(PEER_HZ, 10_000);
        let mut pcmu = CodecKind::Pcmu.new_codec();
        let mut speak = |n: u64| {
            let pcm = next_frame(&mut talk);
            let p = PayloadType::PCMU;
            Some(peer_packet(
                pcmu.as_mut(),
                CodecKind::Pcmu,
                p,
                n,
                160 * n,
                &pcm,
            ))
        };
        let mut sent = Vec::new();
        run(&mut l, t0, 0..SWITCH, &mut speak, &mut sent);
        let update = update_keeping_codec(&l, PEER.parse().ok(), None, Direction::SendRecv, FRAME);
        l.apply(t0 + FRAME * SWITCH as u32, update);
        let heard = run(&mut l, t0, SWITCH..END, &mut speak, &mut sent);

        // A restarted jitter buffer would refill, and conceal meanwhile.
        assert_eq!(l.stats().frames_concealed, 0);
        assert_eq!(l.stats().frames_decoded, END - 2);
        check_tone(&heard, PEER_HZ, "heard");
        assert_eq!(sent.len(), END as usize);
        assert_eq!(sent.iter().filter(|s| s.header.marker).count(), 1);
        for w in sent.windows(2) {
            assert_eq!(w[1].header.seq.get(), w[0].header.seq.get().wrapping_add(1));
            assert_eq!(w[1].header.payload_type, PayloadType::PCMU);
        }
    }

    #[test]
    fn a_switch_to_a_faster_clock_keeps_timestamps_and_events_on_it() {
        let l16 = PayloadType::new(97).unwrap();
        let t0 = Instant::now();
        let mut l = test_leg(t0);
        l.apply(t0, LegCommand::Echo(true));
        let mut talk = tone(PEER_HZ, 10_000);
        let mut talk_wide = tone_at(PEER_HZ, 10_000, ClockRate::HZ_16000);
        let mut pcmu = CodecKind::Pcmu.new_codec();
        let mut wide = CodecKind::L16Wide.new_codec();
        let mut sent = Vec::new();
        let mut speak = |n: u64, enc: &mut dyn AudioCodec, codec: CodecKind, pt, ts| {
            let pcm = if codec == CodecKind::L16Wide {
                next_frame(&mut talk_wide)
            } else {
                next_frame(&mut talk)
            };
            Some(peer_packet(enc, codec, pt, n, ts, &pcm))
        };
        run(
            &mut l,
            t0,
            0..SWITCH,
            |n| {
                speak(
                    n,
                    pcmu.as_mut(),
                    CodecKind::Pcmu,
                    PayloadType::PCMU,
                    160 * n,
                )
            },
            &mut sent,
        );
        l.apply(
            t0 + FRAME * SWITCH as u32,
            switch_to(CodecKind::L16Wide, l16),
        );
        l.apply(
            t0 + FRAME * SWITCH as u32,
            LegCommand::SendDtmf {
                digits: "5".into(),
                inband: false,
            },
        );
        let heard = run(
            &mut l,
            t0,
            SWITCH..END,
            |n| speak(n, wide.as_mut(), CodecKind::L16Wide, l16, 320 * n),
            &mut sent,
        );
        let wide_rate = ClockRate::HZ_16000;
        check_tone_at(
            &heard[40 * FRAME_SAMPLES..],
            PEER_HZ,
            wide_rate,
            "heard in L16/16000",
        );

        let last_pcmu = sent.iter().rfind(|s| s.tick < SWITCH).unwrap();
        let (events, audio): (Vec<&Sent>, Vec<&Sent>) = sent
            .iter()
            .filter(|s| s.tick >= SWITCH)
            .partition(|s| s.header.payload_type == PayloadType::DEFAULT_TELEPHONE_EVENT);
        assert!(audio.iter().all(|s| s.header.payload_type == l16));
        // The tick after the last PCMU packet keeps its place on the clock; then 320 a tick.
        let resumed = last_pcmu.header.timestamp.get().wrapping_add(160);
        for s in &audio {
            let ts = s.header.timestamp.get().wrapping_sub(resumed);
            assert_eq!(u64::from(ts), 320 * (s.tick - SWITCH), "tick {}", s.tick);
        }
        check_tone_at(
            &decode(CodecKind::L16Wide, audio.iter().copied().skip(25)),
            PEER_HZ,
            wide_rate,
            "echoed in L16/16000",
        );
        // The event counts its duration on the new clock: 100 ms is 1600 ticks.
        let end = events.last().unwrap();
        assert_eq!(end.payload[1] & 0x80, 0x80, "an end report");
        assert_eq!(u16::from_be_bytes([end.payload[2], end.payload[3]]), 1600);
        let rate = CodecKind::L16Wide.rtp_clock();
        let mut rx = EventReceiver::new(PayloadType::DEFAULT_TELEPHONE_EVENT, rate);
        let mut keys = String::new();
        for s in &events {
            let p = RtpPacket::new(s.header, &s.payload);
            read_keys(&mut rx, t0, &p, &mut keys);
        }
        assert_eq!(keys, "5");
    }
}

#[cfg(test)]
mod srtp_tests {
    use super::*;
    use crate::media::codec::g711::{ulaw_decode, ulaw_encode};
    use crate::media::level::tone_share;
    use crate::media::tone::{ToneGenerator, ToneSpec};
    use crate::rtp::packet::RtpHeader;
    use crate::rtp::srtp::{CryptoAttr, MasterKey, SrtpSession, Suite};

    const PEER: &str = "127.0.0.1:40000";

    /// The leg's keys, and the peer's session that matches them.
    fn pair(suite: Suite) -> (SrtpKeys, SrtpSession) {
        let leg_key = MasterKey::random(suite).unwrap();
        let peer_key = CryptoAttr::new(1, MasterKey::random(suite).unwrap());
        let peer = SrtpSession::new(&peer_key.key, &CryptoAttr::new(1, leg_key.clone())).unwrap();
        let keys = SrtpKeys {
            ours: leg_key,
            theirs: peer_key,
        };
        (keys, peer)
    }

    fn echo_leg(now: Instant, keys: SrtpKeys) -> Leg {
        let cfg = LegConfig {
            srtp: Some(Box::new(keys)),
            ..LegConfig::pcmu(PEER.parse().unwrap(), Ssrc::new(7))
        };
        let mut l = Leg::new(cfg, now).unwrap();
        l.apply(now, LegCommand::Echo(true));
        l
    }

    fn tone(hz: f64) -> Vec<i16> {
        let spec: ToneSpec = format!("{hz}/2000@-10").parse().unwrap();
        let mut g = ToneGenerator::new(&spec, NARROW_RATE).unwrap();
        let mut out = vec![0i16; 16000];
        for f in out.chunks_mut(FRAME_SAMPLES) {
            let mut frame = [0i16; FRAME_SAMPLES];
            g.fill(&mut frame);
            f.copy_from_slice(&frame);
        }
        out
    }

    /// The peer's protected PCMU packet `n` of `pcm`.
    fn sealed(s: &mut SrtpSession, n: u16, pcm: &[i16]) -> Vec<u8> {
        let at = usize::from(n) * FRAME_SAMPLES;
        let payload: Vec<u8> = pcm[at..at + FRAME_SAMPLES]
            .iter()
            .map(|&x| ulaw_encode(x))
            .collect();
        let header = RtpHeader {
            marker: n == 0,
            payload_type: PayloadType::PCMU,
            seq: WireSeq::new(100 + n),
            timestamp: RtpTimestamp::new(u32::from(n) * 160),
            ssrc: Ssrc::new(99),
        };
        let mut buf = vec![0u8; 1500];
        let len = RtpPacket::new(header, &payload).write(&mut buf).unwrap();
        let len = s.protect_rtp(&mut buf, len).unwrap();
        buf.truncate(len);
        buf
    }

    /// Runs ticks `from..to`: the peer's genuine packet each tick, after `extra` (if any);
    /// returns what the peer decrypted and decoded of the leg's RTP.
    fn run(
        l: &mut Leg,
        peer: &mut SrtpSession,
        t0: Instant,
        ticks: std::ops::Range<u16>,
        pcm: &[i16],
        mut extra: impl FnMut(u16) -> Option<Vec<u8>>,
    ) -> Vec<i16> {
        let from: SocketAddr = PEER.parse().unwrap();
        let mut heard = Vec::new();
        for n in ticks {
            let now = t0 + FRAME * u32::from(n);
            if let Some(x) = extra(n) {
                l.handle_packet(now, SystemTime::UNIX_EPOCH, from, &x);
            }
            let p = sealed(peer, n, pcm);
            l.handle_packet(now, SystemTime::UNIX_EPOCH, from, &p);
            l.tick(
                now,
                SystemTime::UNIX_EPOCH,
                u64::from(n),
                &mut |port, _, bytes| {
                    let mut b = bytes.to_vec();
                    if port == Port::Rtp && classify(&b) == PacketKind::Rtp {
                        let n = peer
                            .unprotect_rtp(&mut b)
                            .expect("the peer opens what the leg sent");
                        let p = RtpPacket::parse(&b[..n]).unwrap();
                        heard.extend(p.payload.iter().map(|&x| ulaw_decode(x)));
                    } else {
                        peer.unprotect_rtcp(&mut b)
                            .expect("the peer opens the leg's RTCP");
                    }
                },
            );
        }
        heard
    }

    #[test]
    fn an_srtp_leg_echoes_through_the_transform_and_drops_forgeries_unheard() {
        for suite in [
            Suite::AesCm128HmacSha1_80,
            Suite::AesCm128HmacSha1_32,
            Suite::AeadAes128Gcm,
        ] {
            let t0 = Instant::now();
            let (keys, mut peer) = pair(suite);
            let mut l = echo_leg(t0, keys.clone());
            let good = tone(1000.0);
            let bad = tone(2000.0);
            // Forgeries: the 2 kHz tone sealed with a key the leg does not have.
            let (_, mut stranger) = pair(suite);
            let heard = run(&mut l, &mut peer, t0, 0..90, &good, |n| {
                Some(sealed(&mut stranger, n, &bad))
            });
            assert_eq!(l.stats().srtp_auth_failures, 90, "{suite:?}");
            assert!(
                heard.len() >= 80 * FRAME_SAMPLES,
                "{suite:?}: {}",
                heard.len()
            );
            let tail = &heard[heard.len() - 8000..];
            assert!(tone_share(tail, 1000.0, 8000.0) > 0.9, "{suite:?}");
            assert!(tone_share(tail, 2000.0, 8000.0) < 0.01, "{suite:?}");
        }
    }

    #[test]
    fn replays_are_dropped_and_the_same_keys_keep_the_window_new_ones_start_afresh() {
        let t0 = Instant::now();
        let (keys, mut peer) = pair(Suite::AesCm128HmacSha1_80);
        let mut l = echo_leg(t0, keys.clone());
        let pcm = tone(1000.0);
        run(&mut l, &mut peer, t0, 0..10, &pcm, |_| None);
        // The same keys again (a re-INVITE that changed nothing): the replay window stays,
        // so packets 0-9 sent again are replays.
        let now = t0 + FRAME * 10;
        l.apply(
            now,
            update_keeping_codec(&l, PEER.parse().ok(), None, Direction::SendRecv, FRAME),
        );
        assert_eq!(l.cfg.srtp.as_deref(), Some(&keys));
        // A sender with the peer's key and a fresh state re-seals packets 0-9 exactly.
        let mut replayer =
            SrtpSession::new(&keys.theirs.key, &CryptoAttr::new(1, keys.ours.clone())).unwrap();
        let from: SocketAddr = PEER.parse().unwrap();
        for n in 0..10 {
            let p = sealed(&mut replayer, n, &pcm);
            l.handle_packet(now, SystemTime::UNIX_EPOCH, from, &p);
        }
        assert_eq!(l.stats().srtp_replays, 10);
        assert_eq!(l.stats().srtp_auth_failures, 0);

        // New keys for the peer: its old key no longer opens, the new one does.
        let (new_keys, mut new_peer) = pair(Suite::AeadAes128Gcm);
        let mut cmd = update_keeping_codec(&l, PEER.parse().ok(), None, Direction::SendRecv, FRAME);
        if let LegCommand::Update { srtp, .. } = &mut cmd {
            *srtp = Some(Box::new(new_keys));
        }
        l.apply(now, cmd);
        let stale = sealed(&mut peer, 10, &pcm);
        l.handle_packet(now, SystemTime::UNIX_EPOCH, from, &stale);
        assert_eq!(l.stats().srtp_auth_failures, 1);
        let heard = run(&mut l, &mut new_peer, t0, 11..60, &pcm, |_| None);
        assert!(tone_share(&heard[heard.len() - 4000..], 1000.0, 8000.0) > 0.9);
        assert_eq!(l.stats().srtp_auth_failures, 1);
    }
}

/// Loss concealment per codec: Opus conceals and recovers through libopus, the others
/// through G.711 Appendix I on the decoded audio.
#[cfg(test)]
mod concealment_tests {
    use super::*;
    use crate::media::codec::test_util::{fit_sine, sine};
    use crate::rtp::packet::RtpHeader;

    const PEER: &str = "127.0.0.1:40000";

    fn leg_of(codec: CodecKind, pt: u8, now: Instant) -> Leg {
        let cfg = LegConfig {
            codec,
            payload_type: PayloadType::new(pt).unwrap(),
            ..LegConfig::pcmu(PEER.parse().unwrap(), Ssrc::new(7))
        };
        Leg::new(cfg, now).unwrap()
    }

    /// Payloads of `pcm` in frames of `frame` samples, through `enc`.
    fn encode_all(enc: &mut dyn AudioCodec, pcm: &[i16], frame: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 1500];
        pcm.chunks_exact(frame)
            .map(|f| {
                let n = enc.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    /// Gives the leg one packet a tick (none for those in `lost`), `step` RTP ticks apart,
    /// each arriving `after` its tick (zero: just before it), for as many ticks as there are
    /// payloads plus `tail`; returns what it heard from its first decoded frame on.
    fn hear(
        l: &mut Leg,
        payloads: &[Vec<u8>],
        step: u32,
        after: Duration,
        lost: &[usize],
        tail: usize,
        t0: Instant,
    ) -> Vec<i16> {
        let pt = l.cfg.payload_type;
        let mut heard = Vec::new();
        let mut wire = [0u8; 1500];
        for k in 0..payloads.len() + tail {
            let now = t0 + FRAME * k as u32;
            if !after.is_zero() {
                l.receive(now);
            }
            if let Some(p) = payloads.get(k).filter(|_| !lost.contains(&k)) {
                let header = RtpHeader {
                    marker: k == 0,
                    payload_type: pt,
                    seq: WireSeq::new(1000 + k as u16),
                    timestamp: RtpTimestamp::new(7000 + step * k as u32),
                    ssrc: Ssrc::new(99),
                };
                let n = RtpPacket::new(header, p).write(&mut wire).unwrap();
                let from = PEER.parse().unwrap();
                l.handle_packet(now + after, SystemTime::UNIX_EPOCH, from, &wire[..n]);
            }
            if after.is_zero() {
                l.receive(now);
            }
            if l.stats().frames_decoded > 0 {
                heard.extend_from_slice(l.input());
            }
        }
        heard
    }

    /// What a lost frame becomes in a reference pipeline: decode each payload through a
    /// fresh leg codec and treat the lost ones with `fill(codec, plc, k, frame)`.
    fn pipeline(
        codec: CodecKind,
        payloads: &[Vec<u8>],
        lost: &[usize],
        appendix_i: bool,
        mut fill: impl FnMut(&mut dyn AudioCodec, &mut G711Plc, usize, &mut [i16]),
    ) -> Vec<i16> {
        let mut dec = codec.new_codec();
        let mut plc = G711Plc::new();
        let mut out = Vec::new();
        let n = samples_at(codec.sample_rate());
        for (k, p) in payloads.iter().enumerate() {
            let mut frame = vec![0i16; n];
            if lost.contains(&k) {
                fill(dec.as_mut(), &mut plc, k, &mut frame);
            } else {
                assert_eq!(dec.decode(p, &mut frame).unwrap(), n);
                if appendix_i {
                    plc.good_frame(&mut frame).unwrap();
                }
            }
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn g711_loss_is_concealed_by_appendix_i_exactly_as_before() {
        let raw = include_bytes!("../../tests/fixtures/speech-8k.raw");
        let speech: Vec<i16> = raw[..2 * 120 * FRAME_SAMPLES]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let payloads = encode_all(CodecKind::Pcmu.new_codec().as_mut(), &speech, FRAME_SAMPLES);
        let lost = [10, 30, 31, 60, 61, 62, 63, 64, 65, 66, 67, 90];
        let t0 = Instant::now();
        let mut l = leg_of(CodecKind::Pcmu, 0, t0);
        let heard = hear(&mut l, &payloads, 160, Duration::ZERO, &lost, 0, t0);
        let st = l.stats();
        assert_eq!(st.frames_concealed, lost.len() as u64);
        assert_eq!(st.frames_recovered, 0);
        // Decode, Appendix I for the lost frames and nothing from the codec: the leg as it
        // always was, sample for sample.
        let expected = pipeline(CodecKind::Pcmu, &payloads, &lost, true, |_, plc, _, f| {
            plc.lost_frame(f).unwrap()
        });
        assert!(heard.len() > 100 * FRAME_SAMPLES);
        assert_eq!(heard[..], expected[..heard.len()]);
        let concealed = &heard[60 * FRAME_SAMPLES..64 * FRAME_SAMPLES];
        assert!(
            concealed[..FRAME_SAMPLES].iter().any(|&s| s != 0),
            "a loss is bridged, not muted"
        );
        assert!(
            heard[66 * FRAME_SAMPLES..67 * FRAME_SAMPLES]
                .iter()
                .all(|&s| s == 0),
            "silent after 60 ms"
        );
    }

    #[test]
    fn g722_after_a_loss_decodes_at_the_talkers_level() {
        let pcm = sine(1000.0, 8000.0, 16000, 1.2);
        let mut enc = CodecKind::G722.new_codec();
        let payloads = encode_all(enc.as_mut(), &pcm, 320);
        let t0 = Instant::now();
        let mut l = leg_of(CodecKind::G722, 9, t0);
        let lost = [20, 21];
        let heard = hear(&mut l, &payloads, 160, Duration::ZERO, &lost, 0, t0);
        assert_eq!(l.stats().frames_concealed, 2);
        // Heard at G.722's own rate.
        let f = 320;
        let before = fit_sine(&heard[10 * f..19 * f], 1000.0, 16000);
        let after = fit_sine(&heard[23 * f..32 * f], 1000.0, 16000);
        let drop_db = 20.0 * (before.0 / after.0).log10();
        assert!(drop_db.abs() < 1.0, "{drop_db:.2} dB off after the gap");
        assert!(after.1 > 25.0, "SNR after the gap {:.1} dB", after.1);
        let gap = fit_sine(&heard[19 * f..23 * f], 1000.0, 16000);
        assert!(gap.0 > before.0 / 4.0, "the gap is bridged: {:.0}", gap.0);
    }

    #[cfg(feature = "opus")]
    mod opus {
        use super::*;
        use crate::media::codec::opus::Opus;
        use crate::media::codec::OpusParams;
        use crate::media::level::rms_dbfs;
        use crate::rtp::types::ClockRate;

        /// Samples in a frame at Opus's rate, the leg's.
        const F: usize = 960;

        /// Packets in one burst of tone and the pause after it (see [`tone_packets`]).
        const BURST: usize = 15;
        const PAUSE: usize = 3;
        /// Where the loss is: inside the third burst, the leg long playing.
        const K: usize = 2 * BURST + 4;
        const PACKETS: usize = 4 * BURST;

        /// A peer's 20 ms Opus packets, with in-band FEC, of a 1 kHz tone at −12 dBFS:
        /// steady, or in bursts of 240 ms with 60 ms pauses. libopus codes FEC only for frames
        /// its voice activity detector finds active, and it takes a steady tone for noise
        /// within a second, while pauses keep it active as speech does.
        fn tone_packets(packets: usize, bursts: bool) -> Vec<Vec<u8>> {
            let mut enc = Opus::new(&OpusParams {
                use_inband_fec: true,
                ..OpusParams::default()
            });
            let mut pcm = sine(1000.0, 8000.0, 48000, 0.02 * packets as f64);
            if bursts {
                for (k, frame) in pcm.chunks_exact_mut(960).enumerate() {
                    if k % BURST >= BURST - PAUSE {
                        frame.fill(0);
                    }
                }
            }
            encode_all(&mut enc, &pcm, 960)
        }

        fn opus_leg(t0: Instant) -> Leg {
            leg_of(CodecKind::Opus, 111, t0)
        }

        /// A fresh Opus leg after [`hear`]ing `payloads`, and what it heard.
        fn opus_heard(payloads: &[Vec<u8>], lost: &[usize], tail: usize) -> (Leg, Vec<i16>) {
            let t0 = Instant::now();
            let mut l = opus_leg(t0);
            let heard = hear(&mut l, payloads, 960, Duration::ZERO, lost, tail, t0);
            (l, heard)
        }

        /// SNR, in dB, of a 1 kHz tone fitted to the 80 ms from the frame before `k` on.
        fn snr_around(pcm: &[i16], k: usize) -> f64 {
            fit_sine(&pcm[(k - 1) * F..(k + 3) * F], 1000.0, 48000).1
        }

        #[test]
        fn a_lost_packet_is_recovered_from_the_next_ones_fec() {
            let payloads = tone_packets(PACKETS, true);
            let (l, heard) = opus_heard(&payloads, &[K], 0);
            let st = l.stats();
            assert_eq!((st.frames_recovered, st.frames_concealed), (1, 0));

            // The same loss through the decoder: FEC from the next packet, as the leg did;
            // and libopus's concealment.
            let fec = pipeline(CodecKind::Opus, &payloads, &[K], false, |c, _, k, f| {
                assert_eq!(c.recover(&payloads[k + 1], f).unwrap(), F);
            });
            assert_eq!(heard[..], fec[..heard.len()], "the leg decoded the FEC");
            let plc = pipeline(CodecKind::Opus, &payloads, &[K], false, |c, _, _, f| {
                assert_eq!(c.conceal(f).unwrap(), F);
            });
            let (got, plc) = (snr_around(&heard, K), snr_around(&plc, K));
            eprintln!("around the loss: FEC {got:.1} dB, Opus PLC {plc:.1} dB");
            assert!(got > plc + 3.0, "FEC {got:.1} dB, PLC {plc:.1} dB");
            assert!(got > 20.0, "FEC {got:.1} dB");
        }

        #[test]
        fn of_two_lost_in_a_row_the_first_is_concealed_and_the_second_recovered() {
            let payloads = tone_packets(PACKETS, true);
            let lost = [K, K + 1];
            let (l, heard) = opus_heard(&payloads, &lost, 0);
            let st = l.stats();
            assert_eq!((st.frames_concealed, st.frames_recovered), (1, 1));
            let expected = pipeline(CodecKind::Opus, &payloads, &lost, false, |c, _, k, f| {
                let n = if k == K {
                    c.conceal(f).unwrap()
                } else {
                    c.recover(&payloads[k + 1], f).unwrap()
                };
                assert_eq!(n, F);
            });
            assert_eq!(heard[..], expected[..heard.len()]);
            let both_concealed =
                pipeline(CodecKind::Opus, &payloads, &lost, false, |c, _, _, f| {
                    assert_eq!(c.conceal(f).unwrap(), F);
                });
            // The second lost frame and the one after it, where the FEC takes over.
            let second = |pcm: &[i16]| fit_sine(&pcm[(K + 1) * F..(K + 3) * F], 1000.0, 48000).1;
            let (got, plc) = (second(&heard), second(&both_concealed));
            eprintln!("second lost frame on: FEC {got:.1} dB, Opus PLC {plc:.1} dB");
            assert!(got > plc + 3.0, "FEC {got:.1} dB, PLC {plc:.1} dB");
        }

        /// On a clean network the jitter buffer shrinks to its least depth; for Opus that
        /// still holds the packet after a lost one when packets come just after the tick.
        #[test]
        fn fec_is_used_when_the_buffer_has_shrunk_and_packets_arrive_after_the_tick() {
            let payloads = tone_packets(10 * BURST, true);
            let t0 = Instant::now();
            let mut l = opus_leg(t0);
            let after = Duration::from_millis(5);
            let (single, pair) = (8 * BURST + 4, 9 * BURST + 2);
            let lost = [single, pair, pair + 1];
            let heard = hear(&mut l, &payloads, 960, after, &lost, 0, t0);
            assert_eq!(l.jitter.target_depth(), FRAME * 2, "shrunk to its least");
            let st = l.stats();
            assert_eq!((st.frames_recovered, st.frames_concealed), (2, 1));
            let snr = snr_around(&heard, single);
            assert!(snr > 20.0, "SNR around the recovered frame {snr:.1} dB");
        }

        #[test]
        fn when_the_peer_stops_concealment_fades_then_stops() {
            let (l, heard) = opus_heard(&tone_packets(PACKETS, false), &[], 20);
            let st = l.stats();
            let limit = OWN_CONCEALMENT_FRAMES;
            assert_eq!(
                st.frames_concealed, limit as u64,
                "then the talkspurt is over"
            );
            assert!(!l.hearing());
            assert!(
                heard[heard.len() - 10 * F..].iter().all(|&s| s == 0),
                "silence after the concealment"
            );
            // Right after the last packet the tone carries on, then fades.
            let at = |frame: usize| &heard[frame * F..(frame + 1) * F];
            let first = PACKETS - 2;
            let decoded = rms_dbfs(&heard[(first - 4) * F..first * F]);
            let bridged = rms_dbfs(at(first));
            let last = rms_dbfs(at(first + limit - 1));
            eprintln!("decoded {decoded:.1} dBFS, first concealed {bridged:.1}, last {last:.1}");
            assert!(
                bridged > decoded - 6.0,
                "{bridged:.1} against {decoded:.1} dBFS"
            );
            assert!(last < decoded - 10.0, "faded to {last:.1} dBFS");
        }

        /// Speech rather than a tone, every seventh packet lost: against the lossless
        /// decode, FEC beats concealment.
        #[test]
        fn speech_losses_recovered_from_fec_beat_concealment() {
            let raw = include_bytes!("../../tests/fixtures/speech-8k.raw");
            let speech: Vec<i16> = raw
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            let wide =
                crate::media::resample::resample(&speech, 8000, ClockRate::HZ_48000).unwrap();
            let mut enc = Opus::new(&OpusParams {
                use_inband_fec: true,
                ..OpusParams::default()
            });
            let payloads = encode_all(&mut enc, &wide, 960);
            let lost: Vec<usize> = (10..payloads.len() - 2).step_by(7).collect();
            let (l, heard) = opus_heard(&payloads, &lost, 0);
            assert_eq!(l.stats().frames_recovered, lost.len() as u64);
            let clean = pipeline(CodecKind::Opus, &payloads, &[], false, |_, _, _, _| {});
            let plc = pipeline(CodecKind::Opus, &payloads, &lost, false, |c, _, _, f| {
                assert_eq!(c.conceal(f).unwrap(), F);
            });
            let snr = |got: &[i16], reference: &[i16]| {
                let (mut signal, mut noise) = (0.0, 0.0);
                for &k in &lost {
                    for i in k * F..(k + 2) * F {
                        let r = f64::from(reference[i]);
                        signal += r * r;
                        noise += (r - f64::from(got[i])).powi(2);
                    }
                }
                10.0 * (signal / f64::max(noise, 1e-9)).log10()
            };
            let n = heard.len().min(clean.len());
            let (got, plc) = (snr(&heard[..n], &clean), snr(&plc, &clean));
            eprintln!(
                "speech, {} losses: FEC {got:.1} dB, Opus PLC {plc:.1} dB",
                lost.len()
            );
            assert!(got > plc + 3.0, "FEC {got:.1} dB, PLC {plc:.1} dB");
        }
    }
}

#[cfg(test)]
#[path = "leg_level_tests.rs"]
mod level_tests;
