//! The live call task: thin tokio glue around a [`CallCore`]. It picks the call's script
//! from the dialplan, takes RTP ports, starts the script on the script pool, and then only carries
//! messages: SIP events, leg events, the script's requests, room departures, operator
//! controls and timers into the core; SIP commands, leg commands, replies, events, live
//! state and the CDR out of it. Work that touches files (prompts, recordings) runs off the
//! task and comes back as an input.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::AST;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::core::{
    Action, CallCore, CoreConfig, LegId, MediaAction, Outcome, PlaySpec, SipAction, Work,
};
use super::dial::{Originate, OriginateError, OriginateFlow};
use super::note::Note;
use crate::cdr::{Cdr, HangupSide, RtpStats};
use crate::conference::{JoinError, JoinOptions, LeaveReason, Membership};
use crate::engine::{LegHandle, LegSockets, MediaEngine};
use crate::error::{reason_phrase, Refusal, SipStatus};
use crate::events::{Event as BusEvent, EventBus};
use crate::live::{CallControl, CallGuard, CallRegistry, CallState};
use crate::media::frame::{AudioSource, ClockRate, NARROW_RATE};
use crate::media::leg::{Leg, LegCommand, LegConfig, LegEvent};
use crate::media::prompt::{load_file, PromptCache};
use crate::media::record::names::{claimed_paths, wav_path};
use crate::media::record::{
    RecordMode, RecordPolicy, RecordSession, RecorderFactory, RecordingMeta,
};
use crate::media::tone::{ToneGenerator, ToneSpec};
use crate::rtp::ports::{PortAllocator, PortLease};
use crate::rtp::types::Ssrc;
use crate::script::dialplan::Dialplan;
use crate::script::{
    channel_port, spawn_script, CallInfo, CallReply, RecordRequest, Replier, ScriptRequest,
    ScriptSet,
};
use crate::sdp::{LocalSession, NegotiatedAudio};
use crate::sip::dialog::Transport;
use crate::sip::endpoint::{CallHandle, EndReason, Event};
use crate::sip::endpoint::{OutgoingCall, Party};
use crate::sip::ids::Ids;
use crate::sip::message::Request;
use crate::sip::transport::{Command, Dialled};
use crate::speech::ear::EarSetup;
use crate::speech::tap::{ear_queue, EarLink, EarTap, Heard};
use crate::stream::run::{Owner, Progress, Running, StreamRecord};
use crate::stream::{StartInfo, StreamRequest, StreamTap, TapConfig};

/// What every call needs from the server.
pub struct CallContext {
    /// The media workers.
    pub media: Arc<MediaEngine>,
    /// Starts recordings on the writer thread.
    pub recorder: RecorderFactory,
    /// Decoded prompts, shared by all calls.
    pub prompts: Arc<PromptCache>,
    /// Conference rooms.
    pub rooms: crate::conference::ConferenceRegistry,
    /// End a call after this long without RTP (None: never).
    pub rtp_timeout: Option<Duration>,
    /// Which RTP sources a call hears; the leg adds the SIP source address of its call.
    pub rtp_sources: crate::media::leg::LegSources,
    /// In-band DTMF detection limits.
    pub dtmf: crate::media::dtmf::DetectorConfig,
    /// Which legs run the in-band detector.
    pub inband: crate::media::dtmf::InbandDetection,
    /// RTP/RTCP ports.
    pub ports: PortAllocator,
    /// Address written into our SDP.
    pub media_ip: IpAddr,
    /// End answered calls after this long (None: never).
    pub max_duration: Option<Duration>,
    /// The compiled call-flow scripts.
    pub scripts: Arc<ScriptSet>,
    /// Which script a dialled user runs.
    pub dialplan: Arc<Dialplan>,
    /// Live calls, for the HTTP API.
    pub calls: CallRegistry,
    /// Where call events are published.
    pub events: EventBus,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where finished calls' records go (None: no CDRs).
    pub cdr: Option<crate::cdr::CdrWriter>,
    /// With the call handle, seeds each call's SDP session id, SSRC and RTP start points.
    pub ids_seed: u64,
    /// What calls a script may place.
    pub outbound: Arc<crate::call::OutboundPolicy>,
    /// The server-wide cap on placed legs.
    pub outbound_slots: Arc<crate::call::OutboundSlots>,
    /// `[ivr] operator`, given to scripts as `session.vars.operator`.
    pub ivr_operator: String,
    /// The SIP trunks `trunk:` targets go through.
    pub trunks: Arc<crate::sip::trunks::Trunks>,
    /// Codecs we take and offer, in our order (`[media] codecs`).
    pub codecs: Vec<crate::sdp::Codec>,
    /// Whose order picks the codec of an offer (`[media] codec_choice`).
    pub codec_choice: crate::sdp::CodecChoice,
    /// When the media is SRTP (`[rtp] srtp`).
    pub srtp: crate::sdp::SrtpPolicy,
    /// Text to speech for `say`.
    pub tts: Arc<crate::speech::tts::Tts>,
    /// Speech recognition for `listen`.
    pub asr: Arc<crate::speech::asr::Asr>,
    /// DTLS-SRTP media for browser callers (None: `[webrtc] enabled = false`).
    pub webrtc: Option<Arc<super::webrtc::WebRtcContext>>,
}

/// A recognition's answer and how long it took.
type Recognized = (Result<crate::speech::asr::Recognition, String>, Duration);

/// How long a call's stream may take to close after the call ended.
const STREAM_CLOSE: Duration = Duration::from_millis(1500);

/// Starts a call task for an `Event::Incoming`.
pub fn spawn(
    ctx: Arc<CallContext>,
    call: CallHandle,
    incoming: Event,
    events: crate::sip::transport::CallEvents,
    commands: mpsc::Sender<Command>,
) {
    let Event::Incoming {
        request,
        source,
        auth_user,
        peer,
        ..
    } = incoming
    else {
        return;
    };
    let header = |name| {
        crate::sip::message::header_value(&request.headers, name)
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let parties = Parties {
        call_id: header("Call-ID"),
        from: header("From"),
        to: header("To"),
        user: request.uri.user().unwrap_or("").to_string(),
        signalling: source.ip(),
        source: Some(source),
        auth_user: auth_user.unwrap_or_default(),
    };
    let live = crate::live::CallInfo::new(&parties.call_id, &parties.from, &parties.user)
        .over(&peer.transport.via_token().to_ascii_lowercase());
    let ids = Ids::for_call(ctx.ids_seed, call.0);
    start(ctx, parties, live, ids, Some(call), events, commands, |t| {
        Box::pin(async move { t.run(request).await })
    });
}

/// Numbers calls we place for their seeded ids, apart from the endpoint's handles.
static PLACED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 63);

/// The script a call placed into a room runs: the confirmation key if asked for, the room,
/// then goodbye.
const ROOM_FLOW: &str = r#"
if session.amd != () && session.amd.status == "MACHINE" { hangup(); }
if session.vars.confirm != () {
    let key = collect(#{prompt: "enter-pin", max: 1, tries: 2, first_digit_timeout: 8000});
    if key != session.vars.confirm { hangup(); }
}
conference(session.vars.room);
hangup();
"#;

/// [`ROOM_FLOW`], compiled once for every call placed into a room (the engine is the
/// server's one, built at start).
fn room_flow(engine: &rhai::Engine) -> Result<Arc<AST>, OriginateError> {
    static FLOW: std::sync::OnceLock<Result<Arc<AST>, String>> = std::sync::OnceLock::new();
    FLOW.get_or_init(|| {
        crate::script::compile_source(engine, "room", ROOM_FLOW)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(OriginateError::Invalid)
}

/// Places a call and returns its Call-ID at once; progress comes as events (`call_ringing`,
/// `call_answered`, `call_failed`, `call_ended`).
pub fn originate(
    ctx: Arc<CallContext>,
    commands: mpsc::Sender<Command>,
    mut o: Originate,
) -> Result<String, OriginateError> {
    let to = o.to.trim().to_string();
    // Where the call's signalling goes: the target's address, or (through a trunk) ours
    // until the trunk's proxy is known.
    let signalling = match to.strip_prefix("trunk:") {
        Some(rest) if crate::script::api::trunk_target(rest) => ctx.media_ip,
        Some(_) => return Err(OriginateError::BadTarget(to)),
        None => crate::sip::dialog::uri_peer(&to, Transport::Udp)
            .filter(|_| to.starts_with("sip:") || to.starts_with("sips:"))
            .ok_or_else(|| OriginateError::BadTarget(to.clone()))?
            .addr
            .ip(),
    };
    if !ctx.outbound.allows(&to) {
        return Err(OriginateError::NotAllowed(to));
    }
    let user_ok = |u: &str| {
        !u.is_empty()
            && u.len() <= 64
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_.*".contains(c))
    };
    for u in [&o.from, &o.caller_id].into_iter().flatten() {
        if !user_ok(u) {
            return Err(OriginateError::Invalid(format!(
                "{u:?} must be a number or a plain user name"
            )));
        }
    }
    let (ast, name) = match &o.flow {
        OriginateFlow::Script(s) => {
            let file = crate::script::dialplan::script_file(s).map_err(OriginateError::Invalid)?;
            let ast = ctx
                .scripts
                .get(&file)
                .ok_or_else(|| OriginateError::NoSuchScript(s.clone()))?;
            (ast, file)
        }
        OriginateFlow::Room { room, confirm } => {
            if room.is_empty() || room.len() > 64 || room.chars().any(char::is_control) {
                return Err(OriginateError::Invalid(format!(
                    "room {room:?}: a room name is 1-64 characters"
                )));
            }
            o.vars.insert("room".into(), room.clone());
            if let Some(k) = confirm {
                o.vars.insert("confirm".into(), k.to_string());
            }
            (room_flow(ctx.scripts.engine())?, format!("room:{room}"))
        }
    };
    let n = PLACED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut ids = Ids::for_call(ctx.ids_seed, n);
    let call_id = format!("{:016x}{:08x}@{}", ids.u64(..), ids.u32(), ctx.media_ip);
    let user = o
        .caller_id
        .clone()
        .or_else(|| o.from.clone())
        .unwrap_or_else(|| "switchboard".into());
    o.caller_id = Some(user.clone());
    let parties = Parties {
        call_id: call_id.clone(),
        from: format!("<sip:{user}@{}>", ctx.media_ip),
        to: to.clone(),
        user: to.clone(),
        signalling,
        source: None,
        auth_user: String::new(),
    };
    let live = crate::live::CallInfo::new(&call_id, &parties.from, &to).outbound();
    o.to = to;
    let flow = PlacedFlow {
        originate: o,
        ast,
        name,
    };
    // A call we place has no inbound dialog: its events come through its dialled leg.
    let (_unused, events) = mpsc::unbounded_channel();
    start(ctx, parties, live, ids, None, events, commands, move |t| {
        Box::pin(async move { t.run_outgoing(flow).await })
    });
    Ok(call_id)
}

/// What a placed call runs when answered.
struct PlacedFlow {
    originate: Originate,
    ast: Arc<AST>,
    /// The script's name for the live registry.
    name: String,
}

/// Starts a call's task: registers it, runs it with `run`, then reports its end and
/// writes its record.
#[allow(clippy::too_many_arguments)]
fn start(
    ctx: Arc<CallContext>,
    parties: Parties,
    live_info: crate::live::CallInfo,
    ids: Ids,
    call: Option<CallHandle>,
    events: crate::sip::transport::CallEvents,
    commands: mpsc::Sender<Command>,
    run: impl for<'a> FnOnce(
            &'a mut Task,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = CallCore> + Send + 'a>>
        + Send
        + 'static,
) {
    let call_id = parties.call_id.clone();
    let span = tracing::info_span!("call", call_id = %call_id);
    tokio::spawn(
        async move {
            let (control_tx, control) = mpsc::unbounded_channel();
            ctx.metrics.call_started();
            let transport = live_info.transport.clone();
            let live = ctx.calls.register(live_info, control_tx);
            ctx.events.publish(BusEvent::CallStarted {
                call_id: parties.call_id.clone(),
                from: parties.from.clone(),
                to: parties.user.clone(),
            });
            let (leg_tx, leg_events) = mpsc::unbounded_channel();
            let (out_tx, out_events) = mpsc::unbounded_channel();
            let (ear_tx, ears) = ear_queue();
            let (recognized_tx, recognized) = mpsc::channel(1);
            let outbound = call.is_none();
            let mut t = Task {
                ctx,
                ids,
                call,
                outbound,
                caller_trunk: None,
                events,
                commands,
                lease: None,
                leg: None,
                webrtc: None,
                transport,
                audio_rate: NARROW_RATE,
                leg_tx,
                leg_events,
                parties,
                live,
                control,
                replier: None,
                membership: None,
                rtp: Default::default(),
                outs: HashMap::new(),
                out_tx,
                out_events,
                stream: None,
                ear: None,
                speaking: None,
                ear_tx,
                ears,
                recognized_tx,
                recognized,
                next_stream: 0,
                streams: Vec::new(),
                amd: None,
                recognize_ms: None,
            };
            let core = run(&mut t).await;
            let ended = EndedAt {
                at: Instant::now(),
                rfc3339: crate::live::rfc3339_now(),
            };
            let outcome = core.outcome().cloned().unwrap_or(Outcome::Lost);
            let (reason, code) = outcome.describe();
            tracing::info!(reason, ?code, "call ended");
            t.ctx.metrics.call_ended();
            // Media first: a recording the hangup ended is announced before the call's end,
            // which is the last event of a call.
            let mut core = core;
            t.close_media(&mut core).await;
            t.close_stream(&mut core).await;
            t.ctx.events.publish(BusEvent::CallEnded {
                call_id: t.parties.call_id.clone(),
                reason: reason.into(),
                code,
            });
            t.write_cdr(&core, &outcome, reason, ended);
        }
        .instrument(span),
    );
}

/// The glue's side of one live call: the channels and resources the core's actions use.
struct Task {
    ctx: Arc<CallContext>,
    /// The call's identifiers: SDP session id, SSRC, RTP start points.
    ids: Ids,
    /// The endpoint's handle of the INVITE we answer (None: a call we place, whose dialog
    /// is its caller leg's in `outs`).
    call: Option<CallHandle>,
    /// A call we placed.
    outbound: bool,
    /// The trunk a call we placed went through, for its record.
    caller_trunk: Option<String>,
    events: crate::sip::transport::CallEvents,
    commands: mpsc::Sender<Command>,
    lease: Option<PortLease>,
    leg: Option<LegHandle>,
    /// Our side of the caller's DTLS-SRTP transport, offered in case the caller is WebRTC.
    webrtc: Option<crate::sdp::WebRtcLocal>,
    /// How the caller reached us (`udp`, `tcp`, `tls`, `webrtc`), for the record.
    transport: String,
    /// The rate the caller's leg runs at (its codec's): prompts, tones and recordings are
    /// made at it.
    audio_rate: ClockRate,
    leg_tx: mpsc::UnboundedSender<LegEvent>,
    leg_events: mpsc::UnboundedReceiver<LegEvent>,
    parties: Parties,
    live: CallGuard,
    control: mpsc::UnboundedReceiver<CallControl>,
    /// Answers the script's request in progress.
    replier: Option<Replier>,
    /// The caller's place in a conference room.
    membership: Option<Membership>,
    /// The leg's receive statistics, once it is closed.
    rtp: crate::media::leg::RtpSummary,
    /// The legs the call placed.
    outs: HashMap<LegId, Out>,
    /// Events of the placed legs, tagged with their leg.
    /// Boxed, as for `recognized`: a channel's first block holds 32 messages.
    out_tx: mpsc::UnboundedSender<(LegId, Box<OutEvent>)>,
    out_events: mpsc::UnboundedReceiver<(LegId, Box<OutEvent>)>,
    /// The stream tapping the caller's leg.
    stream: Option<Running>,
    /// The ear on the caller's leg, once a speech verb wanted one.
    ear: Option<EarLink>,
    /// The `say` playing on the caller's leg: its play id and its producer's outcome.
    speaking: Option<(u64, crate::speech::tts::SpeechWatch)>,
    /// Where every ear of the call reports, tagged with its leg.
    ear_tx: mpsc::Sender<Heard>,
    ears: mpsc::Receiver<Heard>,
    /// Recognitions done off the call task, and how long each took.
    /// Boxed: a channel's first block holds 32 messages, made with the channel, and a
    /// recognition is ~100 bytes, most calls never sending one.
    recognized_tx: mpsc::Sender<Box<Recognized>>,
    recognized: mpsc::Receiver<Box<Recognized>>,
    /// The last stream's number.
    next_stream: u64,
    /// The streams that ended, for the call's record.
    streams: Vec<StreamRecord>,
    /// The answering-machine verdict, for the call's record.
    amd: Option<crate::cdr::AmdRecord>,
    /// How long the last recognition took.
    recognize_ms: Option<u64>,
}

/// A leg the call placed: its ports, its SIP call and its media.
#[derive(Default)]
struct Out {
    /// What its record will say (a leg the call dialled; None for a placed call's own leg).
    record: Option<OutRecord>,
    /// The trunk it goes through, and its share of the trunk's calls.
    trunk: Option<(String, crate::sip::trunks::CallSlot)>,
    /// Its share of the server-wide cap.
    slot: Option<crate::call::outbound::OutboundSlot>,
    lease: Option<PortLease>,
    sip: Option<CallHandle>,
    media: Option<LegHandle>,
    /// The rate its media runs at.
    rate: Option<ClockRate>,
    /// Its ear, once answering-machine detection wanted one.
    ear: Option<EarLink>,
}

/// A dialled leg's record as it goes.
struct OutRecord {
    call_id: String,
    target: String,
    started_at: String,
    answered: Option<(Instant, String)>,
    code: Option<u16>,
    ended: Option<EndReason>,
}

/// Something that happened on a placed leg.
enum OutEvent {
    Sip(Event),
    Media(LegEvent),
}

/// Who the call is between.
struct Parties {
    call_id: String,
    from: String,
    to: String,
    /// The dialled user (Request-URI user part).
    user: String,
    /// Where the INVITE came from: NAT is evident when the SDP's media address differs.
    signalling: std::net::IpAddr,
    /// The caller's address (behind a trusted proxy, the one it passed on); None for a call
    /// we placed.
    source: Option<std::net::SocketAddr>,
    /// The user the caller authenticated as (empty: none asked).
    auth_user: String,
}

/// When a call ended, monotonic (for its duration) and as RFC 3339 (for the CDR).
struct EndedAt {
    at: Instant,
    rfc3339: String,
}

/// A call's script: to start (with what it is told of the call), or started.
enum Flow {
    Waiting(Arc<AST>, CallInfo),
    Started,
}

/// What the call's stream does next; never while none runs.
async fn stream_progress(s: &mut Option<Running>, bus: &EventBus) -> Progress {
    match s {
        Some(s) => s.next(bus).await,
        None => std::future::pending().await,
    }
}

/// The end of a running script.
type ScriptDone =
    std::pin::Pin<Box<dyn std::future::Future<Output = crate::script::ScriptOutcome> + Send>>;

/// The script's next request; never while no script runs.
async fn next_request(r: &mut Option<mpsc::Receiver<ScriptRequest>>) -> Option<ScriptRequest> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The script's end; never while no script runs.
async fn script_done(d: &mut Option<ScriptDone>) -> crate::script::ScriptOutcome {
    match d {
        Some(d) => d.await,
        None => std::future::pending().await,
    }
}

/// Resolves when the room lets the call's member go; never while the call is in no room.
async fn room_left(room: &mut Option<Membership>) -> LeaveReason {
    match room {
        Some(m) => m.left().await,
        None => std::future::pending().await,
    }
}

/// `ms` of silence as a playable source.
struct Silence {
    left: usize,
    rate: ClockRate,
}

impl AudioSource for Silence {
    fn rate(&self) -> ClockRate {
        self.rate
    }

    fn fill(&mut self, out: &mut [i16]) -> usize {
        let n = out.len().min(self.left);
        out[..n].fill(0);
        self.left -= n;
        n
    }
}

impl Task {
    /// Refuses the call before a core exists.
    fn refused(&self, code: u16, warning: Option<String>, session: LocalSession) -> CallCore {
        let mut core = CallCore::incoming(self.core_config(), session, &[]);
        core.refuse_now(code, warning);
        core
    }

    /// A new SDP session with media at `addr`, the configured codecs and a seeded id.
    fn session(&mut self, addr: std::net::SocketAddr) -> LocalSession {
        LocalSession::new(self.ids.u64(1..u64::MAX >> 1), addr)
            .with_codecs(self.ctx.codecs.clone())
            .with_choice(self.ctx.codec_choice)
            .with_srtp(self.ctx.srtp)
    }

    fn core_config(&self) -> CoreConfig {
        CoreConfig {
            max_duration: self.ctx.max_duration,
            outbound: self.ctx.outbound.clone(),
        }
    }

    async fn run(&mut self, request: Box<Request>) -> CallCore {
        let user = self.parties.user.clone();
        let route = self.ctx.dialplan.route(&user);
        tracing::info!(to = %user, script = %route.script, "incoming call");
        let placeholder = std::net::SocketAddr::new(self.ctx.media_ip, 0);
        let Some(ast) = self.ctx.scripts.get(&route.script) else {
            tracing::warn!(script = %route.script, "no such script; refusing the call");
            let session = LocalSession::new(1, placeholder);
            let mut core = self.refused(
                Refusal::NoSuchUser.code(),
                Some(format!("no script {}", route.script)),
                session,
            );
            self.drain(&mut core).await;
            return core;
        };
        let Some(lease) = self.ctx.ports.allocate() else {
            tracing::warn!("no RTP port free");
            let session = LocalSession::new(1, placeholder);
            let mut core = self.refused(
                Refusal::Overloaded.code(),
                Some("no media ports free".into()),
                session,
            );
            self.drain(&mut core).await;
            return core;
        };
        let media = std::net::SocketAddr::new(self.ctx.media_ip, lease.port());
        self.lease = Some(lease);
        let mut session = self.session(media);
        if let Some(w) = &self.ctx.webrtc {
            match w.local(media) {
                Ok(local) => {
                    session = session.with_webrtc(local.clone());
                    self.webrtc = Some(local);
                }
                Err(e) => tracing::warn!(error = %e, "no WebRTC for this call"),
            }
        }
        let mut core = CallCore::incoming(self.core_config(), session, &request.body);
        if core.outcome().is_some() {
            self.drain(&mut core).await;
            return core;
        }
        let info = CallInfo {
            from: self.parties.from.clone(),
            to: user,
            call_id: self.parties.call_id.clone(),
            headers: request_headers(&request),
            vars: {
                let mut vars = route.vars;
                if !self.ctx.ivr_operator.is_empty() {
                    vars.entry("operator".into())
                        .or_insert_with(|| self.ctx.ivr_operator.clone());
                }
                vars
            },
            auth_user: self.parties.auth_user.clone(),
            outbound: false,
            amd: false,
        };
        // The INVITE is not needed for the rest of the call; idle calls should stay small.
        drop(request);
        self.live.update(|c| c.script = Some(route.script.clone()));
        let mut flow = Flow::Waiting(ast, info);
        self.in_call(&mut core, &mut flow).await;
        core
    }

    /// A call we place: the INVITE goes out, and the script runs once the far end answers.
    async fn run_outgoing(&mut self, placed: PlacedFlow) -> CallCore {
        let PlacedFlow {
            originate: o,
            ast,
            name,
        } = placed;
        let placeholder = std::net::SocketAddr::new(self.ctx.media_ip, 0);
        let Some(lease) = self.ctx.ports.allocate() else {
            tracing::warn!("no RTP port free for a call to place");
            self.ctx.events.publish(BusEvent::CallFailed {
                call_id: self.parties.call_id.clone(),
                code: 503,
                reason: "no media ports free".into(),
            });
            let session = LocalSession::new(1, placeholder);
            return self.refused(Refusal::Overloaded.code(), None, session);
        };
        let media = std::net::SocketAddr::new(self.ctx.media_ip, lease.port());
        self.lease = Some(lease);
        let session = self.session(media);
        let dial = crate::call::Dial {
            target: o.to.clone(),
            caller_id: o.caller_id.clone(),
            headers: Vec::new(),
            sdp: Vec::new(),
        };
        let mut core =
            CallCore::outgoing(self.core_config(), session, dial, Instant::now(), o.timeout);
        let info = CallInfo {
            from: self.parties.from.clone(),
            to: o.to,
            call_id: self.parties.call_id.clone(),
            headers: BTreeMap::new(),
            vars: o.vars,
            outbound: true,
            auth_user: String::new(),
            amd: o.amd,
        };
        self.live.update(|c| c.script = Some(name));
        let mut flow = Flow::Waiting(ast, info);
        self.drain(&mut core).await;
        self.in_call(&mut core, &mut flow).await;
        core
    }

    /// The event loop: every input goes to the core, then its actions are carried out. The
    /// script starts as soon as the call is answered or could be (a call we answer starts it
    /// at once; a call we place, on the far end's answer).
    async fn in_call(&mut self, core: &mut CallCore, flow: &mut Flow) {
        let mut requests: Option<mpsc::Receiver<ScriptRequest>> = None;
        let mut done: Option<ScriptDone> = None;
        let mut hangup = None;
        while core.outcome().is_none() {
            if self.call.is_some() || core.is_answered() {
                if let Flow::Waiting(ast, info) = std::mem::replace(flow, Flow::Started) {
                    let (port, rx) = channel_port();
                    let script =
                        spawn_script(ast, self.ctx.scripts.engine().clone(), info, Box::new(port));
                    hangup = Some(script.hangup_flag());
                    requests = Some(rx);
                    done = Some(Box::pin(script.join()));
                }
            }
            let timer = core.poll_timeout();
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                timer.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            ));
            let ready = core.is_ready() && self.replier.is_none();
            tokio::select! {
                ev = self.events.recv(), if self.call.is_some() => match ev {
                    Some(ev) => core.handle_sip(Instant::now(), LegId::CALLER, *ev),
                    None => core.handle_lost(),
                },
                Some(e) = self.leg_events.recv() => self.on_leg_event(core, e).await,
                reason = room_left(&mut self.membership) => {
                    self.membership = None;
                    self.live.update(|i| i.room = None);
                    core.handle_room_left(reason);
                }
                req = next_request(&mut requests), if ready => match req {
                    Some(r) => {
                        let (request, reply) = r.into_parts();
                        self.replier = Some(reply);
                        core.handle_request(Instant::now(), request);
                    }
                    None => requests = None,
                },
                outcome = script_done(&mut done), if core.script_running() && done.is_some() => {
                    done = None;
                    if matches!(outcome, crate::script::ScriptOutcome::Error(_)) {
                        self.ctx.metrics.script_error();
                    }
                    core.handle_script_end(&outcome);
                }
                _ = sleep, if timer.is_some() => core.handle_timeout(Instant::now()),
                Some((leg, ev)) = self.out_events.recv() => match *ev {
                    OutEvent::Sip(ev) => {
                        self.report_trunk(leg, &ev);
                        self.note_out_event(leg, &ev);
                        core.handle_sip(Instant::now(), leg, ev)
                    }
                    OutEvent::Media(e) => self.on_out_leg_event(core, leg, e),
                },
                Some(c) = self.control.recv() => match c {
                    CallControl::Hangup => core.handle_operator_hangup(),
                    CallControl::Dtmf(digits) => core.handle_operator_dtmf(digits),
                    CallControl::Stream(request) => {
                        if !core.handle_operator_stream(*request) {
                            tracing::info!("operator's stream not started: no media yet, or a stream runs");
                        }
                    }
                    CallControl::StopStream => core.handle_operator_stream_stop(),
                },
                Some((leg, e)) = self.ears.recv() => {
                    core.handle_heard(Instant::now(), LegId(leg), e)
                }
                Some(recognized) = self.recognized.recv() => {
                    let (result, took) = *recognized;
                    self.recognize_ms = Some(took.as_millis() as u64);
                    core.handle_recognized(result);
                }
                p = stream_progress(&mut self.stream, &self.ctx.events) => {
                    if let Progress::Ended(reason) = p {
                        self.stream_ended(core, reason);
                    }
                }
            }
            self.drain(core).await;
        }
        // A request the core will never answer: dropping its replier tells the script the
        // call is gone; a script still running stops at its next step.
        self.replier = None;
        if let Some(h) = hangup {
            h.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Starts a stream of the caller's audio: the socket task, and its tap on the leg.
    fn start_stream(&mut self, request: &StreamRequest) {
        self.next_stream += 1;
        let id = self.next_stream;
        let start = StartInfo {
            call_id: self.parties.call_id.clone(),
            from: uri_user(&self.parties.from),
            to: self.parties.user.clone(),
            tracks: request.track,
            parameters: request.parameters.clone(),
        };
        let owner = Owner::Call(self.parties.call_id.clone());
        let (running, handle) = Running::start(id, owner, request, start);
        let tap = StreamTap::new(
            id,
            handle,
            TapConfig {
                track: request.track,
                bidirectional: request.bidirectional,
                rate: ClockRate::new(request.format.rate()).unwrap_or(NARROW_RATE),
            },
        );
        tracing::info!(url = %request.url, stream = running.stream_id(), "streaming the call");
        let sid = running.stream_id().to_string();
        self.live.update(|i| i.stream = Some(sid));
        self.send_leg(LegCommand::Stream(Box::new(tap)));
        self.stream = Some(running);
    }

    /// The caller's stream ended: its tap leaves the leg, the core and the record learn why.
    fn stream_ended(&mut self, core: &mut CallCore, reason: crate::stream::EndReason) {
        let Some(running) = self.stream.take() else {
            return;
        };
        self.send_leg(LegCommand::StopStream(running.id()));
        self.live.update(|i| i.stream = None);
        let record = running.finish(reason, &self.ctx.events);
        core.handle_stream_ended(&record.reason);
        self.streams.push(record);
    }

    async fn on_leg_event(&mut self, core: &mut CallCore, e: LegEvent) {
        let now = Instant::now();
        match e {
            LegEvent::Digit { digit, method } => {
                tracing::info!(%digit, ?method, "DTMF");
                core.handle_digit(now, LegId::CALLER, digit, method);
            }
            LegEvent::PlayDone { id, interrupted } => {
                tracing::debug!(id, interrupted, "playback done");
                // A say that ran out because its synthesizer failed fails the verb; one that
                // was stopped did not fail.
                let mut failed = None;
                if let Some((_, watch)) = self.speaking.take_if(|(said, _)| *said == id) {
                    failed = watch.error().filter(|_| !interrupted);
                }
                match failed {
                    Some(e) => core.handle_play_failed(now, LegId::CALLER, id, e.to_string()),
                    None => core.handle_play_done(now, LegId::CALLER, id),
                }
            }
            e @ LegEvent::RecordDone { .. } => self.record_done(core, e).await,
            LegEvent::Closed(summary) => self.rtp = summary,
            LegEvent::RtpTimeout => core.handle_rtp_timeout(LegId::CALLER),
            LegEvent::TransportFailed(why) => core.handle_transport_failed(LegId::CALLER, why),
        }
    }

    /// What a dialled leg's record keeps of its SIP events.
    fn note_out_event(&mut self, leg: LegId, ev: &Event) {
        let Some(r) = self.outs.get_mut(&leg).and_then(|o| o.record.as_mut()) else {
            return;
        };
        match ev {
            Event::Answered { .. } => {
                r.answered = Some((Instant::now(), crate::live::rfc3339_now()));
                r.code = Some(200);
            }
            Event::Failed { code, .. } => r.code = Some(*code),
            Event::Ended { reason, .. } => r.ended = Some(reason.clone()),
            _ => {}
        }
    }

    /// Removes a dialled leg: its media and ports go, and its record is written.
    fn close_out(&mut self, leg: LegId) {
        let Some(mut out) = self.outs.remove(&leg) else {
            return;
        };
        if leg == LegId::CALLER {
            self.caller_trunk = out.trunk.as_ref().map(|(t, _)| t.clone());
        }
        let (Some(r), Some(cdr)) = (out.record.take(), &self.ctx.cdr) else {
            return;
        };
        let now = Instant::now();
        // A leg let go before its dialog ended was cancelled (unanswered) or hung up by us.
        let reason = r.ended.clone().unwrap_or(if r.answered.is_some() {
            EndReason::LocalBye
        } else {
            EndReason::Cancelled
        });
        let cause = match (r.answered.is_some(), r.code) {
            (false, Some(c)) if c >= 300 && c != 487 => "refused",
            _ => Outcome::Ended(reason.clone()).describe().0,
        };
        let sip_code = match (&reason, r.code) {
            (EndReason::Cancelled, None) => Some(487),
            (_, code) => code,
        };
        cdr.submit(Cdr {
            call_id: r.call_id,
            from: self.parties.from.clone(),
            to: r.target,
            started_at: r.started_at,
            answered_at: r.answered.as_ref().map(|(_, t)| t.clone()),
            ended_at: crate::live::rfc3339_now(),
            duration_ms: r.answered.map_or(0, |(at, _)| {
                now.saturating_duration_since(at).as_millis() as u64
            }),
            hangup: match reason {
                EndReason::RemoteBye => HangupSide::Caller,
                _ => HangupSide::Server,
            },
            cause: cause.to_string(),
            sip_code,
            digits: String::new(),
            recordings: Vec::new(),
            rtp: RtpStats::default(),
            direction: crate::cdr::Direction::Outbound,
            trunk: out.trunk.as_ref().map(|(t, _)| t.clone()),
            parent_call_id: Some(self.parties.call_id.clone()),
            source: None,
            streams: Vec::new(),
            amd: None,
            reason: None,
            transport: None,
        });
    }

    /// A placed leg's final answer goes into its trunk's record (503 with Retry-After takes
    /// the trunk down for that long).
    fn report_trunk(&self, leg: LegId, ev: &Event) {
        let Some((name, _)) = self.outs.get(&leg).and_then(|o| o.trunk.as_ref()) else {
            return;
        };
        let (code, retry_after) = match ev {
            Event::Answered { .. } => (200, None),
            Event::Failed {
                code, retry_after, ..
            } => (*code, *retry_after),
            _ => return,
        };
        self.ctx
            .trunks
            .report(name, code, retry_after, Instant::now());
    }

    /// A placed leg's media event.
    fn on_out_leg_event(&mut self, core: &mut CallCore, leg: LegId, e: LegEvent) {
        let now = Instant::now();
        match e {
            LegEvent::Digit { digit, method } => core.handle_digit(now, leg, digit, method),
            LegEvent::PlayDone { id, .. } => core.handle_play_done(now, leg, id),
            LegEvent::RtpTimeout => core.handle_rtp_timeout(leg),
            LegEvent::TransportFailed(why) => core.handle_transport_failed(leg, why),
            LegEvent::RecordDone { .. } | LegEvent::Closed(_) => {}
        }
    }

    /// A recording ended: announced, counted, then told to the core.
    async fn record_done(&mut self, core: &mut CallCore, e: LegEvent) {
        let LegEvent::RecordDone {
            id,
            reason,
            kept,
            digits,
            discarded,
        } = e
        else {
            return;
        };
        tracing::info!(%id, reason = reason.as_str(), kept_ms = kept.as_millis() as u64, %digits, discarded, "recording done");
        self.finish_recording(&id, reason.as_str(), kept, discarded)
            .await;
        core.handle_record_done(LegId::CALLER, id, reason, kept, digits, discarded);
    }

    /// The writer finalises the file on its own thread: wait for it, so the script can play
    /// the recording back (or discard it) the moment `record` returns.
    async fn finish_recording(&mut self, id: &str, reason: &str, kept: Duration, discarded: bool) {
        self.live.update(|c| c.recording = None);
        let recorder = self.ctx.recorder.clone();
        let _ = tokio::task::spawn_blocking(move || recorder.sync()).await;
        self.ctx.events.publish(BusEvent::RecordingFinished {
            id: id.to_string(),
            duration_ms: kept.as_millis() as u64,
            reason: reason.to_string(),
            discarded,
        });
        if !discarded {
            let path = wav_path(self.ctx.recorder.dir(), id);
            let bytes = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
            self.ctx.metrics.recording_finished(bytes);
        }
    }

    /// Carries out the core's actions until it has none; results of work go back in.
    async fn drain(&mut self, core: &mut CallCore) {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Sip(leg, a) if leg != LegId::CALLER || self.call.is_none() => {
                    self.out_sip(core, leg, a).await
                }
                Action::Sip(_, a) => self.sip(a).await,
                Action::Media(leg, a) => self.media(core, leg, a).await,
                Action::Reply(r) => {
                    if let Some(replier) = self.replier.take() {
                        replier.send(r);
                    }
                }
                Action::Note(n) => self.note(n),
                Action::Work(Work::Discard(id)) => {
                    let dir = self.ctx.recorder.dir().to_path_buf();
                    let removed = tokio::task::spawn_blocking(move || {
                        for ext in ["wav", "json"] {
                            let path = dir.join(format!("{id}.{ext}"));
                            if let Err(e) = std::fs::remove_file(&path) {
                                if e.kind() != std::io::ErrorKind::NotFound {
                                    return Err(format!("{}: {e}", path.display()));
                                }
                            }
                        }
                        Ok(())
                    })
                    .await;
                    core.handle_discarded(removed.unwrap_or_else(|e| Err(e.to_string())));
                }
                Action::Work(Work::Originate(o)) => {
                    let placed = originate(self.ctx.clone(), self.commands.clone(), *o);
                    core.handle_work_reply(match placed {
                        Ok(id) => CallReply::Text(Some(id)),
                        Err(e) => CallReply::Failed(e.to_string()),
                    });
                }
                Action::Work(Work::Recognize {
                    samples,
                    rate,
                    choices,
                }) => {
                    // Off the call task, so that a hangup meanwhile is taken at once; the
                    // answer comes back through `recognized`.
                    let asr = self.ctx.asr.clone();
                    let back = self.recognized_tx.clone();
                    tokio::spawn(async move {
                        let began = Instant::now();
                        let result = tokio::task::spawn_blocking(move || {
                            asr.recognize(&samples, rate, &choices)
                                .map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        let _ = back.send(Box::new((result, began.elapsed()))).await;
                    });
                }
                Action::Work(Work::Room { room, request }) => {
                    core.handle_work_reply(self.room_request(&room, request));
                }
            }
        }
    }

    /// The live side of a note: logs, the event bus, the live registry, counters.
    fn note(&mut self, n: Note) {
        let call_id = &self.parties.call_id;
        match &n {
            Note::Answered => {
                self.live.update(|c| {
                    c.state = CallState::Answered;
                    c.answered_at = Some(crate::live::rfc3339_now());
                });
                self.ctx.events.publish(BusEvent::CallAnswered {
                    call_id: call_id.clone(),
                });
            }
            Note::Digit { digit, method } => {
                self.ctx.metrics.dtmf(method.as_str());
                self.ctx.events.publish(BusEvent::Dtmf {
                    call_id: call_id.clone(),
                    digit: digit.as_char().to_string(),
                    method: method.as_str().into(),
                });
            }
            Note::RecordingStarted(id) => {
                self.ctx.events.publish(BusEvent::RecordingStarted {
                    id: id.clone(),
                    call_id: Some(call_id.clone()),
                    room: None,
                });
                let id = id.clone();
                self.live.update(|c| c.recording = Some(id));
            }
            Note::Ringing if self.outbound => {
                self.ctx.events.publish(BusEvent::CallRinging {
                    call_id: call_id.clone(),
                });
            }
            Note::CallFailed(code, reason) => {
                self.ctx.events.publish(BusEvent::CallFailed {
                    call_id: call_id.clone(),
                    code: *code,
                    reason: reason.clone(),
                });
            }
            Note::Bridged(target) => {
                let target = target.clone();
                self.live.update(|c| c.bridged_with = Some(target));
            }
            Note::DialEnded(..) => self.live.update(|c| c.bridged_with = None),
            Note::Heard {
                text,
                choice,
                confidence,
                key,
                reason,
                speech_ms,
            } => {
                let recognised = key.is_none() && *speech_ms > 0;
                self.ctx.events.publish(BusEvent::Speech {
                    call_id: call_id.clone(),
                    kind: "listen".into(),
                    cached: None,
                    engine: if recognised {
                        self.ctx.asr.engine_name().into()
                    } else {
                        String::new()
                    },
                    text: text.clone(),
                    choice: choice.clone(),
                    confidence: recognised.then_some(f64::from(*confidence) / 1000.0),
                    key: key.map(|k| k.to_string()),
                    reason: Some((*reason).into()),
                    speech_ms: Some(*speech_ms),
                    recognize_ms: if recognised {
                        self.recognize_ms.take()
                    } else {
                        None
                    },
                });
                let shown = match (key, choice) {
                    (Some(k), _) => format!("key {k}"),
                    (None, Some(c)) => c.clone(),
                    (None, None) if text.is_empty() => format!("({reason})"),
                    (None, None) => text.clone(),
                };
                self.live.update(|c| c.heard = Some(shown));
            }
            Note::Amd {
                status,
                cause,
                greeting_ms,
                words,
            } => {
                self.ctx.metrics.amd(status);
                self.ctx.events.publish(BusEvent::Amd {
                    call_id: call_id.clone(),
                    status: status.clone(),
                    cause: cause.clone(),
                    greeting_ms: u64::from(*greeting_ms),
                    words: u64::from(*words),
                });
                self.amd = Some(crate::cdr::AmdRecord {
                    status: status.clone(),
                    cause: cause.clone(),
                    greeting_ms: u64::from(*greeting_ms),
                    words: u64::from(*words),
                });
                let shown = format!("{status} ({cause})");
                self.live.update(|c| c.amd = Some(shown));
            }
            Note::Joined { room, .. } => {
                let room = room.clone();
                self.live.update(|i| i.room = Some(room));
            }
            _ => {}
        }
        if n.is_step() {
            self.ctx.events.publish(BusEvent::CallStep {
                call_id: call_id.clone(),
                step: n.to_string(),
            });
        }
    }

    async fn sip(&mut self, a: SipAction) {
        let Some(call) = self.call else {
            return;
        };
        let command = match a {
            SipAction::Ring(sdp) => Command::Ring(call, sdp),
            SipAction::Answer(sdp) => Command::Answer(call, sdp),
            SipAction::Reject { code, warning } => Command::Reject {
                call,
                code,
                reason: reason_phrase(code).into(),
                warning,
            },
            SipAction::AnswerReinvite(sdp) => Command::AnswerReinvite(call, sdp),
            SipAction::RejectReinvite { code, warning } => Command::RejectReinvite {
                call,
                code,
                reason: reason_phrase(code).into(),
                warning,
            },
            SipAction::Hangup => Command::Hangup(call),
            SipAction::Refer(target) => Command::Refer { call, target },
            // The caller's leg is one we answered: nothing to place or cancel.
            SipAction::Dial(_) | SipAction::Cancel => return,
        };
        let _ = self.commands.send(command).await;
    }

    /// SIP for a leg the call places.
    async fn out_sip(&mut self, core: &mut CallCore, leg: LegId, a: SipAction) {
        let handle = self.outs.get(&leg).and_then(|o| o.sip);
        let command = match (a, handle) {
            (SipAction::Dial(d), _) => return self.dial(core, leg, *d).await,
            (SipAction::Cancel, Some(call)) => Command::Cancel(call),
            (SipAction::Hangup, Some(call)) => Command::Hangup(call),
            (SipAction::Refer(target), Some(call)) => Command::Refer { call, target },
            (SipAction::AnswerReinvite(sdp), Some(call)) => Command::AnswerReinvite(call, sdp),
            (SipAction::RejectReinvite { code, warning }, Some(call)) => Command::RejectReinvite {
                call,
                code,
                reason: reason_phrase(code).into(),
                warning,
            },
            _ => return,
        };
        let _ = self.commands.send(command).await;
    }

    /// Places a leg's call; its events come back through `out_events`.
    async fn dial(&mut self, core: &mut CallCore, leg: LegId, d: crate::call::Dial) {
        let now = Instant::now();
        let fail = |core: &mut CallCore, code: u16, why: String| {
            let call = CallHandle(0);
            core.handle_sip(
                now,
                leg,
                Event::Failed {
                    call,
                    code,
                    reason: why,
                    retry_after: None,
                    contacts: Vec::new(),
                },
            );
        };
        // A placed call's own leg has the call's id; a dialled leg gets one of its own, known
        // now for its record.
        let call_id = if leg == LegId::CALLER && self.call.is_none() {
            self.parties.call_id.clone()
        } else {
            let id = format!(
                "{:016x}{:08x}@{}",
                self.ids.u64(..),
                self.ids.u32(),
                self.ctx.media_ip
            );
            self.outs.entry(leg).or_default().record = Some(OutRecord {
                call_id: id.clone(),
                target: d.target.clone(),
                started_at: crate::live::rfc3339_now(),
                answered: None,
                code: None,
                ended: None,
            });
            id
        };
        let call_id = Some(call_id);
        let call = match d.target.strip_prefix("trunk:") {
            Some(rest) => {
                let (name, number) = rest.split_once('/').unwrap_or((rest, ""));
                let route = match self.ctx.trunks.route(name, number, now) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::info!(trunk = name, why = %e, "trunk not used");
                        let code = match e {
                            crate::sip::trunks::TrunkUnavailable::InvalidNumber(_) => 484,
                            crate::sip::trunks::TrunkUnavailable::Unknown(_) => 500,
                            _ => 503,
                        };
                        return fail(core, code, e.to_string());
                    }
                };
                let mut call = route.outgoing(Some(d.sdp), d.headers);
                if let Some(cid) = &d.caller_id {
                    call.from = Party::uri(with_user(&call.from.uri, cid));
                }
                call.call_id = call_id;
                let out = self.outs.entry(leg).or_default();
                out.trunk = Some((name.to_string(), route.slot));
                call
            }
            None => {
                let Some(peer) = crate::sip::dialog::uri_peer(&d.target, Transport::Udp) else {
                    return fail(
                        core,
                        400,
                        format!("{}: not a sip: URI with an IP address", d.target),
                    );
                };
                let user = d
                    .caller_id
                    .clone()
                    .unwrap_or_else(|| uri_user(&self.parties.from));
                OutgoingCall {
                    target: d.target.clone(),
                    peer,
                    from: Party::uri(format!("sip:{user}@{}", self.ctx.media_ip)),
                    to: Party::uri(d.target.clone()),
                    sdp: Some(d.sdp),
                    headers: d.headers,
                    route: Vec::new(),
                    credentials: None,
                    call_id,
                }
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self
            .commands
            .send(Command::Dial {
                call: Box::new(call),
                reply,
            })
            .await;
        let dialled = match (sent, answer.await) {
            (Ok(()), Ok(Ok(d))) => d,
            (_, Ok(Err(e))) => return fail(core, 400, e.to_string()),
            _ => return fail(core, 503, "the SIP transport is gone".into()),
        };
        let Dialled { call, mut events } = dialled;
        self.outs.entry(leg).or_default().sip = Some(call);
        let tx = self.out_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if tx.send((leg, Box::new(OutEvent::Sip(*ev)))).is_err() {
                    return;
                }
            }
        });
    }

    async fn media(&mut self, core: &mut CallCore, leg: LegId, a: MediaAction) {
        let now = Instant::now();
        match a {
            MediaAction::Prepare => {
                let prepared = match (self.ctx.outbound_slots.take(), self.ctx.ports.allocate()) {
                    (None, _) => Err("the server's outbound call limit is reached".to_string()),
                    (_, None) => Err("no media ports free".to_string()),
                    (Some(slot), Some(lease)) => {
                        let addr = std::net::SocketAddr::new(self.ctx.media_ip, lease.port());
                        let out = self.outs.entry(leg).or_default();
                        out.lease = Some(lease);
                        out.slot = Some(slot);
                        Ok(self.session(addr))
                    }
                };
                core.handle_prepared(now, leg, prepared);
            }
            MediaAction::Close => self.close_out(leg),
            MediaAction::Bridge(other) => {
                let peer = self.outs.get(&other).and_then(|o| o.media.as_ref());
                let bridged = match (self.leg.as_ref(), peer) {
                    (Some(a), Some(b)) => {
                        self.ctx.media.bridge(a, b).await.map_err(|e| e.to_string())
                    }
                    _ => Err("a leg of the bridge has no media".to_string()),
                };
                match bridged {
                    Ok(()) => tracing::info!(?other, "bridged"),
                    Err(e) => {
                        tracing::warn!(error = %e, ?other, "the legs could not be bridged");
                        core.handle_media_failed(other);
                    }
                }
            }
            MediaAction::RecordBridge(max) => {
                let request = RecordRequest {
                    file: None,
                    max,
                    silence: None,
                    beep: false,
                    terminators: crate::media::record::DigitSet::EMPTY,
                    min: Duration::ZERO,
                    stereo: true,
                };
                match self.start_recording(&request) {
                    Ok(id) => self.note(Note::RecordingStarted(id)),
                    Err(e) => tracing::warn!(error = %e, "the bridged call is not recorded"),
                }
            }
            MediaAction::StopRecord => self.send_leg(LegCommand::StopRecord),
            MediaAction::Stream(request) => self.start_stream(&request),
            MediaAction::Ear(mode) => self.set_ear(leg, mode),
            MediaAction::StopStream => {
                if let Some(s) = self.stream.as_mut() {
                    s.stopping();
                    let id = s.id();
                    self.send_leg(LegCommand::StopStream(id));
                }
            }
            MediaAction::Unbridge => {
                if let Some(a) = &self.leg {
                    self.ctx.media.unbridge(a);
                }
            }
            MediaAction::Start(m) if leg != LegId::CALLER => {
                if let Err(e) = self.start_out_media(leg, &m) {
                    tracing::warn!(error = %e, ?leg, "no media for a placed leg");
                    core.handle_media_failed(leg);
                }
            }
            MediaAction::Start(m) => {
                if let Err(e) = self.start_media(&m) {
                    tracing::warn!(error = %e, "no media for the call");
                    core.handle_media_failed(leg);
                }
            }
            MediaAction::Update(m) if leg != LegId::CALLER => {
                if let Some(h) = self.outs.get(&leg).and_then(|o| o.media.as_ref()) {
                    h.send(update_command(&m));
                }
            }
            MediaAction::Update(m) => {
                self.audio_rate = m.codec.sample_rate();
                self.send_leg(update_command(&m));
            }
            MediaAction::Answered => self.send_leg(LegCommand::Answered),
            MediaAction::Play {
                id,
                what: PlaySpec::Speech(request),
                barge_in,
            } if leg == LegId::CALLER => match self.speak(&request) {
                Ok(speech) => {
                    // Kept to learn, when it has played, whether the synthesizer failed.
                    self.speaking = Some((id, speech.watch()));
                    self.send_leg(LegCommand::Play {
                        id,
                        source: Box::new(speech),
                        barge_in,
                    })
                }
                Err(e) => core.handle_play_failed(now, leg, id, e),
            },
            MediaAction::Play { id, what, barge_in } => match self.load(what).await {
                Ok(source) => self.send_leg(LegCommand::Play {
                    id,
                    source,
                    barge_in,
                }),
                Err(e) => core.handle_play_failed(now, leg, id, e),
            },
            MediaAction::SendDtmf(digits) if leg != LegId::CALLER => {
                if let Some(h) = self.outs.get(&leg).and_then(|o| o.media.as_ref()) {
                    h.send(LegCommand::SendDtmf {
                        digits,
                        inband: false,
                    });
                }
            }
            MediaAction::StopPlay => self.send_leg(LegCommand::StopPlay),
            MediaAction::Echo(on) => self.send_leg(LegCommand::Echo(on)),
            MediaAction::SendDtmf(digits) => self.send_leg(LegCommand::SendDtmf {
                digits,
                inband: false,
            }),
            MediaAction::InfoDigit(d) => self.send_leg(LegCommand::InfoDigit(d)),
            MediaAction::Record(r) => core.handle_record_started(self.start_recording(&r)),
            MediaAction::JoinRoom(c) => {
                let result = self.join_room(c).await;
                core.handle_room_joined(result);
            }
        }
    }

    /// Gives a leg's ear a mode, putting an ear on the leg the first time.
    fn set_ear(&mut self, leg: LegId, mode: crate::speech::EarMode) {
        if matches!(mode, crate::speech::EarMode::Listen(_)) {
            // The loading thread is left to finish on its own.
            drop(self.ctx.asr.prepare());
        }
        self.next_stream += 1;
        let id = self.next_stream;
        let ear = if leg == LegId::CALLER {
            let Some(handle) = &self.leg else {
                return;
            };
            if self.ear.is_none() {
                let (tap, link) = EarTap::new(id, self.audio_rate, leg.0, self.ear_tx.clone());
                handle.send(LegCommand::Listen(Box::new(tap)));
                self.ear = Some(link);
            }
            self.ear.as_ref()
        } else {
            let Some(out) = self.outs.get_mut(&leg) else {
                return;
            };
            let (Some(handle), Some(rate)) = (&out.media, out.rate) else {
                return;
            };
            if out.ear.is_none() {
                let (tap, link) = EarTap::new(id, rate, leg.0, self.ear_tx.clone());
                handle.send(LegCommand::Listen(Box::new(tap)));
                out.ear = Some(link);
            }
            out.ear.as_ref()
        };
        if let Some(ear) = ear {
            if !ear.set(EarSetup::new(mode, ear.rate())) {
                tracing::warn!(?leg, "the ear did not take its mode");
            }
        }
    }

    fn send_leg(&self, c: LegCommand) {
        if let Some(leg) = &self.leg {
            leg.send(c);
        }
    }

    /// Puts the caller's media on a worker.
    fn start_media(&mut self, m: &NegotiatedAudio) -> Result<(), String> {
        let lease = self.lease.as_ref().ok_or("no RTP ports")?;
        let sockets = lease_sockets(lease)?;
        // A WebRTC caller's handshake runs beside the leg and hands it its keys.
        let (dtls, keyed) = match (&m.webrtc, &self.webrtc, &self.ctx.webrtc) {
            (Some(remote), Some(local), Some(ctx)) => {
                let socket = lease.rtp.try_clone().map_err(|e| e.to_string())?;
                let (link, keyed) = ctx.start(local, remote, socket, self.leg_tx.clone())?;
                self.live.update(|c| c.transport = "webrtc".into());
                self.transport = "webrtc".into();
                (Some(link), Some(keyed))
            }
            (Some(_), _, _) => return Err("a DTLS-SRTP answer without WebRTC".into()),
            _ => (None, None),
        };
        let leg = self.new_leg(m, dtls)?;
        let handle = self
            .ctx
            .media
            .add(leg, sockets, self.leg_tx.clone())
            .map_err(|e| e.to_string())?;
        if let Some(keyed) = keyed {
            let _ = keyed.send(handle.sender());
        }
        self.leg = Some(handle);
        self.audio_rate = m.codec.sample_rate();
        Ok(())
    }

    /// Puts a placed leg's media on a worker; its events come back through `out_events`.
    fn start_out_media(&mut self, id: LegId, m: &NegotiatedAudio) -> Result<(), String> {
        let out = self.outs.get(&id).ok_or("no such leg")?;
        let sockets = lease_sockets(out.lease.as_ref().ok_or("no RTP ports")?)?;
        let leg = self.new_leg(m, None)?;
        let (tx, mut events) = mpsc::unbounded_channel();
        let handle = self
            .ctx
            .media
            .add(leg, sockets, tx)
            .map_err(|e| e.to_string())?;
        let to_call = self.out_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if to_call.send((id, Box::new(OutEvent::Media(e)))).is_err() {
                    return;
                }
            }
        });
        if let Some(out) = self.outs.get_mut(&id) {
            out.media = Some(handle);
            out.rate = Some(m.codec.sample_rate());
        }
        Ok(())
    }

    /// A media leg for a negotiation, with this call's ids.
    fn new_leg(
        &mut self,
        m: &NegotiatedAudio,
        dtls: Option<crate::media::leg::DtlsLink>,
    ) -> Result<Leg, String> {
        let cfg = LegConfig {
            codec: m.codec,
            payload_type: m.payload_type,
            telephone_event: m.telephone_event_pt,
            telephone_event_rate: te_rate(m),
            params: m.params.clone(),
            remote: m.remote_rtp,
            remote_rtcp: m.remote_rtcp,
            rtcp_mux: m.rtcp_mux,
            direction: m.direction,
            rtp_timeout: self.ctx.rtp_timeout.unwrap_or(Duration::MAX),
            ssrc: Ssrc::new(self.ids.u32()),
            ptime: Duration::from_millis(u64::from(m.ptime_ms)),
            sources: crate::media::leg::LegSources {
                signalling: Some(self.parties.signalling),
                ..self.ctx.rtp_sources.clone()
            },
            dtmf: self.ctx.dtmf,
            inband: self.ctx.inband,
            first_seq: self.ids.u16(),
            first_timestamp: self.ids.u32(),
            rtcp_seed: self.ids.u64(..),
            srtp: m.srtp.clone(),
            dtls,
        };
        if let Some(keys) = &m.srtp {
            tracing::info!(
                ours = keys.ours.suite().sdp_name(),
                theirs = keys.theirs.key.suite().sdp_name(),
                "media is SRTP"
            );
        }
        Leg::new(cfg, Instant::now()).map_err(|e| e.to_string())
    }

    /// Starts speaking `request` at the leg's rate (audio made as it plays), announced as a
    /// `speech` event.
    fn speak(
        &self,
        request: &crate::speech::tts::SayRequest,
    ) -> Result<crate::speech::tts::Speech, String> {
        let speech = self
            .ctx
            .tts
            .speak(request, self.audio_rate)
            .map_err(|e| e.to_string())?;
        self.ctx.events.publish(BusEvent::Speech {
            call_id: self.parties.call_id.clone(),
            kind: "say".into(),
            engine: self.ctx.tts.config().engine.as_str().into(),
            text: request.text.clone(),
            cached: Some(speech.is_cached()),
            choice: None,
            confidence: None,
            key: None,
            reason: None,
            speech_ms: None,
            recognize_ms: None,
        });
        Ok(speech)
    }

    /// Turns what to play into audio, off the call task: `recording:ID` names a recording
    /// of this call (the core checked it), anything else a prompt. A prompt that cannot be
    /// loaded is logged and skipped, as a missing sound file should not end a call; only
    /// when none can be played is it an error.
    async fn load(&self, what: PlaySpec) -> Result<Box<dyn AudioSource>, String> {
        let rate = self.audio_rate;
        let names = match what {
            PlaySpec::Tone(spec) => {
                return ToneGenerator::new(&spec, rate)
                    .map(|g| Box::new(g) as Box<dyn AudioSource>)
                    .map_err(|e| e.to_string())
            }
            PlaySpec::Silence(d) => {
                let left = rate.ticks_in(d) as usize;
                return Ok(Box::new(Silence { left, rate }));
            }
            PlaySpec::Beep => {
                return match Box::pin(self.load(PlaySpec::Prompts(vec!["beep".into()]))).await {
                    Ok(p) => Ok(p),
                    Err(_) => ToneGenerator::new(&ToneSpec::beep(), rate)
                        .map(|g| Box::new(g) as Box<dyn AudioSource>)
                        .map_err(|e| e.to_string()),
                }
            }
            PlaySpec::Prompts(names) => names,
            PlaySpec::Speech(request) => {
                return self
                    .speak(&request)
                    .map(|s| Box::new(s) as Box<dyn AudioSource>);
            }
        };
        let prompts = self.ctx.prompts.clone();
        // Prompts played in the last second need no file system look-up, so no hand-off to
        // a blocking thread: most calls of a busy server play the same few.
        let now = Instant::now();
        let recent: Option<Vec<_>> = names
            .iter()
            .map(|n| {
                if n.starts_with("recording:") {
                    None
                } else {
                    prompts.recent(n, rate, now)
                }
            })
            .collect();
        if let Some(list) = recent {
            return crate::media::prompt::Playlist::new(list)
                .map(|p| Box::new(p) as Box<dyn AudioSource>)
                .map_err(|e| e.to_string());
        }
        let dir = self.ctx.recorder.dir().to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(names.len());
            let mut first_error = None;
            for name in &names {
                let got = match name.strip_prefix("recording:") {
                    Some(id) => load_file(&wav_path(&dir, id), name, rate)
                        .map(std::sync::Arc::new)
                        .map_err(|e| e.to_string()),
                    None => prompts.load(name, rate).map_err(|e| e.to_string()),
                };
                match got {
                    Ok(p) => out.push(p),
                    Err(e) => {
                        tracing::warn!(prompt = %name, error = %e, "prompt not played");
                        first_error.get_or_insert(e);
                    }
                }
            }
            match (out.is_empty(), first_error) {
                (true, Some(e)) => Err(e),
                _ => crate::media::prompt::Playlist::new(out).map_err(|e| e.to_string()),
            }
        })
        .await;
        loaded
            .unwrap_or_else(|e| Err(e.to_string()))
            .map(|p| Box::new(p) as Box<dyn AudioSource>)
    }

    /// Starts a recording on the leg: the writer's handle and the leg's policy.
    fn start_recording(&mut self, request: &RecordRequest) -> Result<String, String> {
        let leg = self.leg.as_ref().ok_or("the call has no media")?;
        if let Some(name) = &request.file {
            let dir = self.ctx.recorder.dir();
            if claimed_paths(dir, name).iter().any(|p| p.exists()) {
                return Err(format!("record: a recording named {name} exists"));
            }
        }
        let meta = RecordingMeta {
            call_id: self.parties.call_id.clone(),
            from: self.parties.from.clone(),
            to: self.parties.to.clone(),
            room: None,
            mode: if request.stereo {
                RecordMode::Stereo
            } else {
                RecordMode::Inbound
            },
            rate: self.audio_rate,
        };
        let opts = crate::media::record::StartOptions {
            id: request.file.clone(),
            ..Default::default()
        };
        let handle = self
            .ctx
            .recorder
            .start_with(meta, opts)
            .map_err(|e| format!("cannot record: {e}"))?;
        let id = handle.id().to_string();
        leg.send(LegCommand::Record {
            session: Box::new(RecordSession::new(RecordPolicy {
                rate: self.audio_rate,
                ..request.policy()
            })),
            handle,
        });
        Ok(id)
    }

    /// Puts the call's leg in a room.
    async fn join_room(&mut self, c: crate::script::ConferenceRequest) -> Result<u64, JoinError> {
        let rooms = self.ctx.rooms.clone();
        let Some(leg) = self.leg.as_mut() else {
            return Err(JoinError::Failed("the call has no media".into()));
        };
        let opts = JoinOptions {
            moderator: c.moderator,
            muted: c.muted,
            call_id: self.parties.call_id.clone(),
            from: self.parties.from.clone(),
        };
        let m = rooms.join(&c.room, opts, leg).await?;
        let member = m.member_id();
        self.membership = Some(m);
        let name = c.room.clone();
        self.live.update(|i| i.room = Some(name));
        Ok(member)
    }

    /// A script's request about a room (any room, not only the caller's).
    fn room_request(&self, room: &str, request: crate::script::RoomRequest) -> CallReply {
        use crate::live::{RoomAction, Rooms};
        use crate::script::RoomRequest as R;
        let rooms = &self.ctx.rooms;
        let done = |r: Result<Option<String>, crate::live::ControlError>| match r {
            Ok(t) => CallReply::Text(t),
            Err(e) => CallReply::Failed(format!("room {room}: {e}")),
        };
        match request {
            R::Members => match rooms.get(room) {
                Some(info) => CallReply::Members(info.members),
                None => CallReply::Failed(format!("room {room}: no such room")),
            },
            R::Member(m, action) => done(rooms.member_action(room, m, action).map(|()| None)),
            R::Lock => done(rooms.room_action(room, RoomAction::Lock)),
            R::Unlock => done(rooms.room_action(room, RoomAction::Unlock)),
            R::End => done(rooms.room_action(room, RoomAction::End)),
            R::Play(p) => done(rooms.room_action(room, RoomAction::Play(p))),
            R::RecordStart => done(rooms.room_action(room, RoomAction::RecordStart)),
            R::RecordStop => done(rooms.room_action(room, RoomAction::RecordStop)),
            R::StreamStart(s) => done(rooms.room_action(room, RoomAction::StreamStart(s))),
            R::StreamStop => done(rooms.room_action(room, RoomAction::StreamStop)),
        }
    }

    /// Leaves the room and removes the leg, and waits briefly for the leg's final
    /// statistics (the worker reports them as it removes the leg).
    async fn close_media(&mut self, core: &mut CallCore) {
        self.membership = None;
        let legs: Vec<LegId> = self.outs.keys().copied().collect();
        for leg in legs {
            self.close_out(leg);
        }
        if self.leg.take().is_none() {
            return;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(e)) = tokio::time::timeout_at(until, self.leg_events.recv()).await {
            match e {
                LegEvent::Closed(summary) => {
                    self.rtp = summary;
                    return;
                }
                // A recording the hangup ended: announced and counted like any other.
                e @ LegEvent::RecordDone { .. } => self.record_done(core, e).await,
                _ => {}
            }
        }
    }

    /// The caller's stream, its tap gone with the leg, says `stop` and closes; its end is
    /// announced before the call's and kept in the record.
    async fn close_stream(&mut self, core: &mut CallCore) {
        if let Some(running) = self.stream.take() {
            let record = running.wind_up(STREAM_CLOSE, &self.ctx.events).await;
            core.handle_stream_ended(&record.reason);
            self.streams.push(record);
        }
    }

    /// Hands the call's record to the CDR writer, if CDRs are on. `ended` is when the call
    /// ended (not when its media was closed), monotonic and as RFC 3339.
    fn write_cdr(&self, core: &CallCore, outcome: &Outcome, cause: &str, ended: EndedAt) {
        let Some(cdr) = &self.ctx.cdr else {
            return;
        };
        let info = self.ctx.calls.get(&self.parties.call_id);
        let hangup = match outcome {
            Outcome::Ended(EndReason::RemoteBye | EndReason::Cancelled) => HangupSide::Caller,
            _ => HangupSide::Server,
        };
        cdr.submit(Cdr {
            call_id: self.parties.call_id.clone(),
            from: self.parties.from.clone(),
            to: self.parties.user.clone(),
            started_at: info
                .as_ref()
                .map_or_else(crate::live::rfc3339_now, |i| i.started_at.clone()),
            answered_at: info.and_then(|i| i.answered_at),
            ended_at: ended.rfc3339,
            duration_ms: core.answered_at().map_or(0, |t| {
                ended.at.saturating_duration_since(t).as_millis() as u64
            }),
            hangup,
            cause: cause.to_string(),
            sip_code: core.final_status(),
            digits: core.digits().to_string(),
            recordings: core.all_recordings().to_vec(),
            rtp: RtpStats {
                packets: self.rtp.packets,
                lost: self.rtp.lost,
                jitter_ms: self.rtp.jitter_us as f64 / 1000.0,
            },
            direction: if self.outbound {
                crate::cdr::Direction::Outbound
            } else {
                crate::cdr::Direction::Inbound
            },
            trunk: self.caller_trunk.clone(),
            parent_call_id: None,
            source: self.parties.source.map(|a| a.to_string()),
            streams: self.streams.clone(),
            amd: self.amd.clone(),
            reason: core.hangup_reason(),
            transport: (!self.outbound).then(|| self.transport.clone()),
        });
    }
}

/// A leg's sockets from its port lease.
/// What a leg is told of a renegotiation (re-INVITE or UPDATE): its new address,
/// direction, packet time and codec.
fn update_command(m: &NegotiatedAudio) -> LegCommand {
    LegCommand::Update {
        remote: m.remote_rtp,
        remote_rtcp: m.remote_rtcp,
        direction: m.direction,
        ptime: Duration::from_millis(u64::from(m.ptime_ms)),
        codec: m.codec,
        payload_type: m.payload_type,
        telephone_event: m.telephone_event_pt,
        telephone_event_rate: te_rate(m),
        params: Box::new(m.params.clone()),
        srtp: m.srtp.clone(),
    }
}

/// The telephone-event's clock when it is not the codec's.
fn te_rate(m: &NegotiatedAudio) -> Option<crate::rtp::types::ClockRate> {
    (m.telephone_event_rate != m.clock_rate)
        .then(|| crate::rtp::types::ClockRate::new(m.telephone_event_rate))
        .flatten()
}

fn lease_sockets(lease: &PortLease) -> Result<LegSockets, String> {
    Ok(LegSockets::new(
        lease.rtp.try_clone().map_err(|e| e.to_string())?,
        lease.rtcp.try_clone().map_err(|e| e.to_string())?,
    ))
}

/// `uri` with its user part replaced by `user` (`sip:acct@host` → `sip:USER@host`).
fn with_user(uri: &str, user: &str) -> String {
    let (scheme, rest) = uri.split_once(':').unwrap_or(("sip", uri));
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}:{user}@{host}")
}

/// The user part of a From/To header value or URI (`"Alice" <sip:alice@host>` → `alice`).
fn uri_user(value: &str) -> String {
    let uri = value
        .split_once('<')
        .map_or(value, |(_, r)| r.split('>').next().unwrap_or(r));
    uri.split_once(':')
        .map(|(_, r)| r.split(['@', ';']).next().unwrap_or(""))
        .filter(|u| !u.is_empty())
        .unwrap_or("switchboard")
        .to_string()
}

/// The INVITE's headers by lower-case name, repeated headers joined by ", ".
fn request_headers(request: &Request) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for h in request.headers.iter() {
        let name = crate::sip::message::canonical_name(h.name()).to_ascii_lowercase();
        let value = h.value().trim();
        out.entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    out
}
