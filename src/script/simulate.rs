//! A simulated call: a scripted caller on a virtual clock, for trying call flows without
//! SIP and for testing them.
//!
//! The script's requests go to the same [`CallCore`] a live call runs; only its surroundings
//! are simulated: the SIP peer answers at once, a media leg plays for as long as its audio
//! lasts and records the way the caller talks, rooms take every member, and time comes from
//! a virtual clock that jumps from event to event, so an hour-long call simulates in
//! microseconds. Prompts last as long as the real files (with a prompt folder) or a fixed
//! [`DEFAULT_PROMPT`] each.
//!
//! # Caller input
//!
//! A comma-separated list of steps, e.g. `"1, wait 3s, 4#, hangup"`:
//!
//! - `wait 3s`, `wait 500ms`, `wait 1.5s`: the caller's clock moves on.
//! - keys (`4#`, `1234`): each key is pressed at the caller's clock, or later, at the first
//!   moment the call listens for keys (a `collect`, a `record`, a barge-in `play`, `echo`,
//!   `conference`); keys of one step are [`KEY_GAP`] apart.
//! - `hangup`: the caller hangs up at the caller's clock.
//! - `say TEXT`: the caller speaks TEXT (synthesized) at the caller's clock, whether the
//!   call listens or not; the caller's clock moves on by the speech's length. The call's
//!   ear hears it as on a live call, and `listen()` sends it to the configured recogniser.
//!
//! An application a script streams to keeps the stream until the script stops it or the
//! caller hangs up.
//!
//! While there are steps left the caller is talking; after the last one the caller is
//! silent (which `record`'s silence limit notices) and stays on the line until the script
//! ends the call or [`Simulator::max_duration`] passes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rhai::{Engine, AST};

use super::api::{CallGone, CallPort, CallReply, CallRequest, RecordRequest, RoomRequest};
use super::engine::{build_engine, compile_file, compile_source, ScriptError, ScriptLimits};
use super::runner::{run_script, CallInfo, ScriptOutcome, StopCause};
use crate::call::{
    Action, CallCore, CoreConfig, LegId, MediaAction, OutboundPolicy, PlaySpec, SipAction, Work,
};
use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::frame::NARROW_RATE;
use crate::media::prompt::{Prompt, PromptCache};
use crate::media::record::StopReason;
use crate::sdp::LocalSession;
use crate::sip::endpoint::{CallHandle, EndReason, Event};
use crate::speech::asr::{Asr, Recognition};
use crate::speech::ear::{Ear, EarSetup, FRAME};
use crate::speech::tts::{SayRequest, Tts};
use crate::speech::{EarEvent, EarMode};

/// How long each prompt lasts when no prompt folder is given.
pub const DEFAULT_PROMPT: Duration = Duration::from_secs(2);
/// Time between two keys of one input step.
pub const KEY_GAP: Duration = Duration::from_millis(100);
/// The beep before a recording when no prompt folder is given.
const DEFAULT_BEEP: Duration = Duration::from_millis(250);
/// Events one simulated request may go through before the simulation gives up on it.
const MAX_STEPS: usize = 1_000_000;
/// A simulated callee's answer: PCMU from loopback.
const CALLEE_ANSWER: &str = "v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40100 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
/// The simulated caller's offer: PCMU and RFC 4733 events, from loopback.
const CALLER_OFFER: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

/// One step of the simulated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerStep {
    /// Press these keys.
    Keys(Vec<Digit>),
    /// Let time pass.
    Wait(Duration),
    /// Hang up.
    Hangup,
    /// Speak this text.
    Say(String),
}

/// Parses caller input (`"1, wait 3s, 4#, hangup"`).
pub fn parse_input(input: &str) -> Result<Vec<CallerStep>, String> {
    let mut steps = Vec::new();
    for item in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let lower = item.to_ascii_lowercase();
        if lower == "hangup" {
            steps.push(CallerStep::Hangup);
        } else if lower.starts_with("say ") {
            let text = item[4..].trim().trim_matches('"').trim();
            if text.is_empty() {
                return Err(format!("{item:?}: say what?"));
            }
            steps.push(CallerStep::Say(text.to_string()));
        } else if let Some(t) = lower.strip_prefix("wait") {
            steps.push(CallerStep::Wait(parse_duration(t.trim()).ok_or_else(
                || format!("{item:?}: expected a time like 3s, 1.5s or 500ms"),
            )?));
        } else {
            let keys = item
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| Digit::from_char(c).ok_or(c))
                .collect::<Result<Vec<_>, char>>()
                .map_err(|c| {
                    format!(
                        "{item:?}: {c:?} is not a key; steps are keys, wait Ns, say TEXT, hangup"
                    )
                })?;
            steps.push(CallerStep::Keys(keys));
        }
    }
    Ok(steps)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    (0.0..=86_400.0)
        .contains(&v)
        .then(|| Duration::from_secs_f64(v * scale))
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptLine {
    /// Virtual time since the call began.
    pub at: Duration,
    /// What happened.
    pub text: String,
}

/// What happened in a simulated call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// Events in order.
    pub lines: Vec<TranscriptLine>,
    /// How the script ended.
    pub outcome: ScriptOutcome,
}

impl Transcript {
    /// The lines' texts.
    pub fn texts(&self) -> Vec<&str> {
        self.lines.iter().map(|l| l.text.as_str()).collect()
    }

    /// Whether some line contains `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.lines.iter().any(|l| l.text.contains(s))
    }

    /// The first line containing `s`.
    pub fn find(&self, s: &str) -> Option<&TranscriptLine> {
        self.lines.iter().find(|l| l.text.contains(s))
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{:>9.3} s  {}", l.at.as_secs_f64(), l.text)?;
        }
        match &self.outcome {
            ScriptOutcome::Finished => writeln!(f, "script finished"),
            ScriptOutcome::Error(e) => writeln!(f, "script error: {e}"),
            ScriptOutcome::Stopped(StopCause::Hangup) => writeln!(f, "script stopped: hangup"),
            ScriptOutcome::Stopped(StopCause::Limit(l)) => writeln!(f, "script stopped: {l}"),
        }
    }
}

/// Runs scripts against a simulated caller.
#[derive(Clone)]
pub struct Simulator {
    engine: Arc<Engine>,
    prompts: Option<PathBuf>,
    info: CallInfo,
    max_duration: Duration,
    outbound: Arc<OutboundPolicy>,
    speech: Option<SimSpeech>,
}

/// The speech engines a simulation uses.
#[derive(Clone)]
struct SimSpeech {
    tts: Arc<Tts>,
    asr: Arc<Asr>,
}

/// The engines of the default configuration, made once for every simulation.
fn default_speech() -> Result<SimSpeech, String> {
    static MADE: std::sync::OnceLock<Result<SimSpeech, String>> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        Ok(SimSpeech {
            tts: Arc::new(Tts::new(&Default::default()).map_err(|e| e.to_string())?),
            asr: Arc::new(Asr::new(&Default::default()).map_err(|e| e.to_string())?),
        })
    })
    .clone()
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("prompts", &self.prompts)
            .field("info", &self.info)
            .field("max_duration", &self.max_duration)
            .finish()
    }
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator::new(&ScriptLimits::default())
    }
}

impl Simulator {
    /// A simulator whose engine has `limits`.
    pub fn new(limits: &ScriptLimits) -> Self {
        Simulator::with_engine(Arc::new(build_engine(limits)))
    }

    /// A simulator on an existing engine.
    pub fn with_engine(engine: Arc<Engine>) -> Self {
        Simulator {
            engine,
            prompts: None,
            info: CallInfo {
                from: "<sip:caller@simulator>".into(),
                to: "default".into(),
                call_id: "simulated".into(),
                ..CallInfo::default()
            },
            max_duration: Duration::from_secs(3600),
            outbound: Arc::new(OutboundPolicy::new(&["*".to_string()], 16)),
            speech: None,
        }
    }

    /// The speech engines `say` and `listen` use (default: those of the default
    /// configuration).
    pub fn speech(mut self, tts: Arc<Tts>, asr: Arc<Asr>) -> Self {
        self.speech = Some(SimSpeech { tts, asr });
        self
    }

    /// What calls the script may place (default: any target, 16 legs).
    pub fn outbound(mut self, policy: OutboundPolicy) -> Self {
        self.outbound = Arc::new(policy);
        self
    }

    /// Takes prompt durations from the files in `dir`.
    pub fn prompts(mut self, dir: impl Into<PathBuf>) -> Self {
        self.prompts = Some(dir.into());
        self
    }

    /// The call the script sees as `call`.
    pub fn call(mut self, info: CallInfo) -> Self {
        self.info = info;
        self
    }

    /// The caller hangs up after this much virtual time (default one hour).
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = d;
        self
    }

    /// The engine scripts run on.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Compiles and runs a script file.
    pub fn run_file(&self, path: &Path, input: &str) -> Result<Transcript, ScriptError> {
        let ast = compile_file(&self.engine, path)?;
        self.run_ast(&ast, input)
    }

    /// Compiles and runs script text named `name`.
    pub fn run_source(
        &self,
        name: &str,
        source: &str,
        input: &str,
    ) -> Result<Transcript, ScriptError> {
        let ast = compile_source(&self.engine, name, source)?;
        self.run_ast(&ast, input)
    }

    /// Runs a compiled script.
    pub fn run_ast(&self, ast: &AST, input: &str) -> Result<Transcript, ScriptError> {
        let steps = parse_input(input).map_err(|m| ScriptError::file("input", m))?;
        let hangup = Arc::new(AtomicBool::new(false));
        let sim = Arc::new(Mutex::new(SimCall::new(
            steps,
            self.prompts.as_deref(),
            self.max_duration,
            hangup.clone(),
            self.outbound.clone(),
            self.speech.clone(),
        )));
        lock(&sim).drain();
        let port = Box::new(SimPort(sim.clone()));
        // Scripts get the same roomy stack as on a real call's thread.
        let outcome = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("script-sim".into())
                .stack_size(8 << 20)
                .spawn_scoped(s, || {
                    run_script(&self.engine, ast, &self.info, port, hangup)
                })
                .map_err(|e| ScriptError::file("simulator", format!("no thread: {e}")))?
                .join()
                .map_err(|_| ScriptError::file("simulator", "the script thread panicked"))
        })?;
        let mut sim = lock(&sim);
        // The call core decides what a script's end means for the call, as on a live call.
        let now = sim.instant();
        sim.core.handle_script_end(&outcome);
        sim.core.handle_timeout(now);
        sim.drain();
        Ok(Transcript {
            lines: std::mem::take(&mut sim.lines),
            outcome,
        })
    }
}

/// Runs the script file at `script_path` for a call to `to` from `from` with caller
/// `input`, taking prompt durations from `prompts_dir` when given.
pub fn simulate(
    script_path: &Path,
    to: &str,
    from: &str,
    input: &str,
    prompts_dir: Option<&Path>,
) -> Result<Transcript, ScriptError> {
    let mut sim = Simulator::default().call(CallInfo {
        from: from.to_string(),
        to: to.to_string(),
        call_id: "simulated".into(),
        ..CallInfo::default()
    });
    if let Some(dir) = prompts_dir {
        sim = sim.prompts(dir);
    }
    sim.run_file(script_path, input)
}

fn lock(m: &Mutex<SimCall>) -> MutexGuard<'_, SimCall> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

struct SimPort(Arc<Mutex<SimCall>>);

impl CallPort for SimPort {
    fn request(&mut self, req: CallRequest) -> Result<CallReply, CallGone> {
        lock(&self.0).request(req)
    }
}

/// Something the caller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerEvent {
    Key(Digit),
    Hangup,
    Say,
}

struct Caller {
    steps: VecDeque<CallerStep>,
    /// The caller's own clock: no step happens before it.
    clock: Duration,
}

impl Caller {
    /// Applies waits at the front of the steps.
    fn settle(&mut self) {
        while let Some(CallerStep::Wait(d)) = self.steps.front() {
            self.clock += *d;
            self.steps.pop_front();
        }
    }

    fn is_done(&mut self) -> bool {
        self.settle();
        self.steps.is_empty()
    }

    /// The caller's next event, when the call is at `now` and does or does not listen.
    fn peek(&mut self, now: Duration, listening: bool) -> Option<(Duration, CallerEvent)> {
        self.settle();
        let at = self.clock.max(now);
        match self.steps.front()? {
            CallerStep::Keys(k) if listening => k.first().map(|d| (at, CallerEvent::Key(*d))),
            CallerStep::Keys(_) => None,
            CallerStep::Hangup => Some((at, CallerEvent::Hangup)),
            CallerStep::Say(_) => Some((at, CallerEvent::Say)),
            CallerStep::Wait(_) => None,
        }
    }

    /// The event from `peek` happened at `at`.
    fn consume(&mut self, at: Duration) {
        match self.steps.front_mut() {
            Some(CallerStep::Keys(k)) => {
                if !k.is_empty() {
                    k.remove(0);
                }
                self.clock = at + KEY_GAP;
                if k.is_empty() {
                    self.steps.pop_front();
                }
            }
            Some(_) => {
                self.clock = at;
                self.steps.pop_front();
            }
            None => {}
        }
    }
}

/// A playback on the simulated leg.
#[derive(Debug, Clone, Copy)]
struct SimPlay {
    id: u64,
    /// When it has played out, from the call's start.
    until: Duration,
    barge_in: bool,
}

/// A recording on the simulated leg: the caller talks while input steps are left and is
/// silent after the last one.
#[derive(Debug)]
struct SimRecord {
    id: String,
    start: Duration,
    request: RecordRequest,
    digits: String,
}

impl SimRecord {
    /// When the recording stops by itself, and why: its limit, or the silence after the
    /// caller's last step (`silence_from`).
    fn end(&self, silence_from: Option<Duration>) -> (Duration, StopReason, Duration) {
        let max_end = self.start + self.request.max;
        match (self.request.silence, silence_from) {
            (Some(s), Some(from)) if from + s < max_end => (
                from + s,
                StopReason::Silence,
                from.saturating_sub(self.start),
            ),
            _ => (max_end, StopReason::MaxDuration, self.request.max),
        }
    }
}

/// What the simulated surroundings tell the core next, at the current virtual time.
enum Input {
    Sip(LegId, Event),
    Prepared(LegId),
    PlayDone(u64),
    PlayFailed(u64, String),
    RecordStarted(String),
    RoomJoined,
    Discarded,
    WorkReply(CallReply),
    StreamEnded,
    Heard(LegId, EarEvent),
    Recognized(Result<Recognition, String>),
}

/// The simulated call: the call core and what surrounds it.
struct SimCall {
    core: CallCore,
    t0: Instant,
    now: Duration,
    limit: Duration,
    caller: Caller,
    gone: bool,
    hangup: Arc<AtomicBool>,
    prompts: Option<PromptCache>,
    durations: HashMap<String, Option<Duration>>,
    recordings: u32,
    /// Recordings made in this call and their lengths.
    recorded: HashMap<String, Duration>,
    play: Option<SimPlay>,
    record: Option<SimRecord>,
    /// Calls the script placed.
    placed: u32,
    inputs: VecDeque<Input>,
    reply: Option<CallReply>,
    lines: Vec<TranscriptLine>,
    /// The speech engines (made when first needed, unless given).
    speech: Option<SimSpeech>,
    /// The call's ear, fed the caller's audio a frame at a time while it is on.
    ear: Ear,
    /// Ears on dialled legs (screening for answering machines): a simulated far end says
    /// nothing.
    far_ears: Vec<(LegId, Ear)>,
    /// When the ear hears its next frame.
    ear_next: Duration,
    /// What the caller says: from when, and the audio.
    voice: Option<(Duration, Arc<Prompt>)>,
}

impl SimCall {
    fn new(
        steps: Vec<CallerStep>,
        prompts: Option<&Path>,
        limit: Duration,
        hangup: Arc<AtomicBool>,
        outbound: Arc<OutboundPolicy>,
        speech: Option<SimSpeech>,
    ) -> Self {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 40002));
        let core = CallCore::incoming(
            CoreConfig {
                max_duration: None,
                outbound,
            },
            LocalSession::new(1, local),
            CALLER_OFFER.as_bytes(),
        );
        SimCall {
            core,
            t0: Instant::now(),
            now: Duration::ZERO,
            limit,
            caller: Caller {
                steps: steps.into(),
                clock: Duration::ZERO,
            },
            gone: false,
            hangup,
            prompts: prompts.map(|p| PromptCache::new(p.to_path_buf())),
            durations: HashMap::new(),
            recordings: 0,
            recorded: HashMap::new(),
            play: None,
            record: None,
            placed: 0,
            inputs: VecDeque::new(),
            reply: None,
            lines: Vec::new(),
            speech,
            ear: Ear::new(NARROW_RATE),
            far_ears: Vec::new(),
            ear_next: Duration::ZERO,
            voice: None,
        }
    }

    /// The speech engines, made on first use.
    fn speech(&mut self) -> Result<SimSpeech, String> {
        if let Some(s) = &self.speech {
            return Ok(s.clone());
        }
        let s = default_speech()?;
        self.speech = Some(s.clone());
        Ok(s)
    }

    fn ear_on(&self) -> bool {
        let on = |e: &Ear| !matches!(e.mode(), EarMode::Off);
        on(&self.ear) || self.far_ears.iter().any(|(_, e)| on(e))
    }

    /// The ear hears the frame due now: what the caller says then, or silence.
    fn hear_frame(&mut self) {
        let n = NARROW_RATE.ticks_in(FRAME) as usize;
        let mut frame = [0i16; 160];
        if let Some((from, voice)) = &self.voice {
            let at = NARROW_RATE.ticks_in(self.now.saturating_sub(*from)) as usize;
            let samples = &voice.samples;
            if at < samples.len() {
                let end = (at + n).min(samples.len());
                frame[..end - at].copy_from_slice(&samples[at..end]);
            }
        }
        self.ear_next = self.now + FRAME;
        if let Some(e) = self.ear.push(&frame[..n]) {
            self.inputs.push_back(Input::Heard(LegId::CALLER, e));
        }
        let quiet = [0i16; 160];
        for (leg, ear) in &mut self.far_ears {
            if let Some(e) = ear.push(&quiet[..n]) {
                self.inputs.push_back(Input::Heard(*leg, e));
            }
        }
    }

    /// The caller starts saying the text of its next step.
    fn caller_says(&mut self, text: String) {
        let request = SayRequest {
            text: text.clone(),
            voice: None,
            rate: None,
        };
        match self.speech().and_then(|s| {
            s.tts
                .synthesize(&request, NARROW_RATE)
                .map_err(|e| e.to_string())
        }) {
            Ok(p) => {
                self.line(format!("caller says {text:?}"));
                self.caller.clock = self.now + p.duration();
                self.voice = Some((self.now, p));
            }
            Err(e) => self.line(format!("caller cannot say {text:?}: {e}")),
        }
    }

    fn line(&mut self, text: impl Into<String>) {
        self.lines.push(TranscriptLine {
            at: self.now,
            text: text.into(),
        });
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    /// One script request, carried out by the core while virtual time runs.
    fn request(&mut self, req: CallRequest) -> Result<CallReply, CallGone> {
        if self.gone || self.core.outcome().is_some() {
            return Err(CallGone);
        }
        self.core.handle_request(self.instant(), req);
        for _ in 0..MAX_STEPS {
            self.drain();
            if let Some(r) = self.reply.take() {
                return Ok(r);
            }
            if self.gone || self.core.outcome().is_some() {
                self.end_call();
                return Err(CallGone);
            }
            self.step();
        }
        self.line("caller hung up (simulation step limit)");
        self.end_call();
        Err(CallGone)
    }

    fn end_call(&mut self) {
        self.gone = true;
        self.hangup.store(true, Ordering::Relaxed);
    }

    /// Carries out the core's actions and feeds it what they cause at once.
    fn drain(&mut self) {
        loop {
            while let Some(a) = self.core.poll_action() {
                self.act(a);
            }
            let Some(input) = self.inputs.pop_front() else {
                return;
            };
            let now = self.instant();
            let leg = LegId::CALLER;
            match input {
                Input::Sip(leg, ev) => self.core.handle_sip(now, leg, ev),
                Input::Prepared(leg) => {
                    let port = 40002 + 2 * leg.0 as u16;
                    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let session = LocalSession::new(u64::from(leg.0) + 1, local);
                    self.core.handle_prepared(now, leg, Ok(session));
                }
                Input::PlayDone(id) => self.core.handle_play_done(now, leg, id),
                Input::PlayFailed(id, why) => self.core.handle_play_failed(now, leg, id, why),
                Input::RecordStarted(id) => self.core.handle_record_started(Ok(id)),
                Input::RoomJoined => self.core.handle_room_joined(Ok(1)),
                Input::Discarded => self.core.handle_discarded(Ok(())),
                Input::WorkReply(r) => self.core.handle_work_reply(r),
                Input::StreamEnded => self.core.handle_stream_ended("stopped"),
                Input::Heard(leg, e) => self.core.handle_heard(now, leg, e),
                Input::Recognized(r) => self.core.handle_recognized(r),
            }
        }
    }

    fn sip_event(&mut self, ev: Event) {
        self.inputs.push_back(Input::Sip(LegId::CALLER, ev));
    }

    /// The simulated far end of a dialled leg: a target whose user (or trunk number) is
    /// `busy` is busy, `reject` refuses, `noanswer` rings for ever; any other answers at once
    /// and stays on the line until the caller hangs up (`early` after early media). A trunk
    /// named `down` answers 503.
    fn dialled(&mut self, leg: LegId, sip: SipAction) {
        let call = CallHandle(u64::from(leg.0) + 1);
        let mut ev = |e: Event| self.inputs.push_back(Input::Sip(leg, e));
        let failed = |code: u16, reason: &str| Event::Failed {
            call,
            code,
            reason: reason.into(),
            retry_after: None,
            contacts: Vec::new(),
        };
        match sip {
            SipAction::Dial(d) => {
                let user = match d.target.strip_prefix("trunk:") {
                    Some(t) if t.starts_with("down/") => "down",
                    Some(t) => t.split_once('/').map_or("", |(_, n)| n),
                    None => d
                        .target
                        .split_once(':')
                        .map_or("", |(_, rest)| rest.split('@').next().unwrap_or("")),
                };
                match user {
                    "down" => ev(failed(503, "Service Unavailable")),
                    "busy" => ev(failed(486, "Busy Here")),
                    "reject" => ev(failed(603, "Decline")),
                    _ => {
                        // `early` sends its ringing as early media (183 with SDP).
                        let early = user == "early";
                        ev(Event::Progress {
                            call,
                            code: if early { 183 } else { 180 },
                            reason: "Ringing".into(),
                            to_tag: Some("callee".into()),
                            sdp: early.then(|| CALLEE_ANSWER.as_bytes().to_vec()),
                        });
                        if user != "noanswer" {
                            ev(Event::Answered {
                                call,
                                sdp: Some(CALLEE_ANSWER.as_bytes().to_vec()),
                            });
                        }
                        return;
                    }
                }
                ev(Event::Ended {
                    call,
                    reason: EndReason::Timeout,
                });
            }
            SipAction::Cancel => {
                ev(failed(487, "Request Terminated"));
                ev(Event::Ended {
                    call,
                    reason: EndReason::Cancelled,
                });
            }
            SipAction::Hangup => ev(Event::Ended {
                call,
                reason: EndReason::LocalBye,
            }),
            _ => {}
        }
    }

    /// The simulated peer, leg, rooms and files react to one action.
    fn act(&mut self, a: Action) {
        let call = CallHandle(1);
        match a {
            Action::Sip(leg, sip) if leg != LegId::CALLER => self.dialled(leg, sip),
            Action::Sip(_, sip) => match sip {
                SipAction::Answer(_) => self.sip_event(Event::Confirmed { call, sdp: None }),
                SipAction::Reject { code, .. } => self.sip_event(Event::Ended {
                    call,
                    reason: EndReason::Rejected(code),
                }),
                SipAction::Hangup => self.sip_event(Event::Ended {
                    call,
                    reason: EndReason::LocalBye,
                }),
                // The transferee takes the call on at once.
                SipAction::Refer(_) => {
                    self.sip_event(Event::ReferAnswered { call, code: 202 });
                    self.sip_event(Event::TransferProgress {
                        call,
                        status: 200,
                        terminated: true,
                    });
                }
                SipAction::Ring(_)
                | SipAction::AnswerReinvite(_)
                | SipAction::RejectReinvite { .. }
                | SipAction::Dial(_)
                | SipAction::Cancel => {}
            },
            Action::Media(leg, MediaAction::Prepare) => self.inputs.push_back(Input::Prepared(leg)),
            Action::Media(leg, MediaAction::Ear(mode)) if leg != LegId::CALLER => {
                if !self.ear_on() {
                    self.ear_next = self.now + FRAME;
                }
                let mut ear = Ear::new(NARROW_RATE);
                if let Some(e) = ear.apply(EarSetup::new(mode, NARROW_RATE)) {
                    self.inputs.push_back(Input::Heard(leg, e));
                }
                self.far_ears.retain(|(l, _)| *l != leg);
                self.far_ears.push((leg, ear));
            }
            Action::Media(leg, _) if leg != LegId::CALLER => {}
            Action::Media(_, media) => self.media(media),
            Action::Reply(r) => self.reply = Some(r),
            Action::Note(n) => {
                if n.is_step() {
                    self.line(n.to_string());
                }
            }
            Action::Work(Work::Discard(id)) => {
                self.recorded.remove(&id);
                self.inputs.push_back(Input::Discarded);
            }
            // A call placed from a simulation is not simulated itself: it gets an id.
            Action::Work(Work::Originate(_)) => {
                self.placed += 1;
                let id = format!("sim-call-{}", self.placed);
                self.inputs
                    .push_back(Input::WorkReply(CallReply::Text(Some(id))));
            }
            // The simulated call is alone: rooms have no members and take every request.
            Action::Work(Work::Room { room, request }) => {
                let reply = match request {
                    RoomRequest::Members => CallReply::Members(Vec::new()),
                    RoomRequest::RecordStart => CallReply::Text(Some(format!("sim-room-{room}"))),
                    RoomRequest::StreamStart(_) => {
                        CallReply::Text(Some(format!("sim-stream-{room}")))
                    }
                    _ => CallReply::Done,
                };
                self.inputs.push_back(Input::WorkReply(reply));
            }
            Action::Work(Work::Recognize {
                samples,
                rate,
                choices,
            }) => {
                let heard = self.speech().and_then(|s| {
                    s.asr
                        .recognize(&samples, rate, &choices)
                        .map_err(|e| e.to_string())
                });
                self.inputs.push_back(Input::Recognized(heard));
            }
        }
    }

    fn media(&mut self, a: MediaAction) {
        match a {
            MediaAction::Play { id, what, barge_in } => match self.duration(&what) {
                Ok(d) => {
                    self.play = Some(SimPlay {
                        id,
                        until: self.now + d,
                        barge_in,
                    })
                }
                Err(e) => self.inputs.push_back(Input::PlayFailed(id, e)),
            },
            MediaAction::StopPlay => {
                if let Some(p) = self.play.take() {
                    self.inputs.push_back(Input::PlayDone(p.id));
                }
            }
            MediaAction::Record(request) => {
                self.recordings += 1;
                let id = request
                    .file
                    .clone()
                    .unwrap_or_else(|| format!("sim-{}", self.recordings));
                self.record = Some(SimRecord {
                    id: id.clone(),
                    start: self.now,
                    request: *request,
                    digits: String::new(),
                });
                self.inputs.push_back(Input::RecordStarted(id));
            }
            MediaAction::JoinRoom(_) => self.inputs.push_back(Input::RoomJoined),
            // The simulated application keeps a stream until the script or the caller ends it.
            MediaAction::Stream(_) => {}
            MediaAction::StopStream => self.inputs.push_back(Input::StreamEnded),
            MediaAction::Ear(mode) => {
                if !self.ear_on() {
                    self.ear_next = self.now + FRAME;
                }
                if let Some(e) = self.ear.apply(EarSetup::new(mode, NARROW_RATE)) {
                    self.inputs.push_back(Input::Heard(LegId::CALLER, e));
                }
            }
            MediaAction::Prepare
            | MediaAction::Bridge(_)
            | MediaAction::Unbridge
            | MediaAction::RecordBridge(_)
            | MediaAction::StopRecord
            | MediaAction::Close => {}
            MediaAction::Start(_)
            | MediaAction::Update(_)
            | MediaAction::Answered
            | MediaAction::Echo(_)
            | MediaAction::SendDtmf(_)
            | MediaAction::InfoDigit(_) => {}
        }
    }

    /// How long a playback lasts.
    fn duration(&mut self, what: &PlaySpec) -> Result<Duration, String> {
        match what {
            PlaySpec::Tone(spec) => Ok(Duration::from_millis(spec.duration_ms().unwrap_or(0))),
            PlaySpec::Silence(d) => Ok(*d),
            PlaySpec::Beep => Ok(match self.prompts {
                Some(_) => self.prompt_duration("beep").unwrap_or_default(),
                None => DEFAULT_BEEP,
            }),
            PlaySpec::Prompts(names) => {
                let found: Vec<Duration> = names
                    .iter()
                    .filter_map(|n| self.prompt_duration(n))
                    .collect();
                if found.is_empty() {
                    return Err(format!("none of {} can be played", names.join(", ")));
                }
                Ok(found.into_iter().sum())
            }
            PlaySpec::Speech(request) => {
                let tts = self.speech()?.tts;
                tts.synthesize(request, NARROW_RATE)
                    .map(|p| p.duration())
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn prompt_duration(&mut self, name: &str) -> Option<Duration> {
        if let Some(id) = name.strip_prefix("recording:") {
            return self.recorded.get(id).copied();
        }
        let Some(cache) = &self.prompts else {
            return Some(DEFAULT_PROMPT);
        };
        if let Some(d) = self.durations.get(name) {
            return *d;
        }
        let d = match cache.load(name, NARROW_RATE) {
            Ok(p) => Some(p.duration()),
            Err(e) => {
                self.line(format!("prompt {name} not played: {e}"));
                None
            }
        };
        self.durations.insert(name.to_string(), d);
        d
    }

    /// Lets virtual time run to the next event (a timer of the core, a playback or
    /// recording ending, the caller acting, the time limit) and delivers it.
    fn step(&mut self) {
        let silence_from = self
            .caller
            .is_done()
            .then(|| self.record.as_ref().map(|r| self.caller.clock.max(r.start)))
            .flatten();
        let record_end = self.record.as_ref().map(|r| r.end(silence_from));
        let timer = self
            .core
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.t0));
        let play_end = self.play.map(|p| p.until);
        let ear = self.ear_on().then_some(self.ear_next);
        let end = [timer, play_end, record_end.map(|r| r.0), ear]
            .into_iter()
            .flatten()
            .min();
        let end_at = end.unwrap_or(Duration::MAX).min(self.limit);
        let listening = self.core.is_listening();
        if let Some((at, ev)) = self.caller.peek(self.now, listening) {
            if at < end_at {
                self.now = at;
                let said = match self.caller.steps.front() {
                    Some(CallerStep::Say(text)) => Some(text.clone()),
                    _ => None,
                };
                self.caller.consume(at);
                return match ev {
                    CallerEvent::Key(d) => self.key(d),
                    CallerEvent::Hangup => self.caller_hangs_up("caller hung up"),
                    CallerEvent::Say => {
                        if let Some(text) = said {
                            self.caller_says(text);
                        }
                    }
                };
            }
        }
        self.now = self.now.max(end_at);
        if end.is_none_or(|e| e > self.limit) {
            return self.caller_hangs_up("caller hung up (time limit)");
        }
        if let (Some(p), Some(until)) = (self.play, play_end) {
            if until <= self.now {
                self.play = None;
                self.inputs.push_back(Input::PlayDone(p.id));
                return;
            }
        }
        if let Some((at, reason, kept)) = record_end {
            if at <= self.now {
                return self.stop_record(reason, kept);
            }
        }
        if ear.is_some_and(|at| at <= self.now) {
            return self.hear_frame();
        }
        self.core.handle_timeout(self.instant());
    }

    /// A key reaches the leg: the recorder sees it, the core gets it, a barge-in
    /// playback stops.
    fn key(&mut self, d: Digit) {
        let mut terminated = false;
        if let Some(r) = &mut self.record {
            r.digits.push(d.as_char());
            terminated = r.request.terminators.contains(d);
        }
        self.core
            .handle_digit(self.instant(), LegId::CALLER, d, DtmfMethod::Rfc4733);
        if terminated {
            let kept = self
                .record
                .as_ref()
                .map_or(Duration::ZERO, |r| self.now - r.start);
            self.stop_record(StopReason::Terminator(d), kept);
        }
        if let Some(p) = self.play.filter(|p| p.barge_in) {
            self.play = None;
            self.inputs.push_back(Input::PlayDone(p.id));
        }
    }

    fn stop_record(&mut self, reason: StopReason, kept: Duration) {
        let Some(r) = self.record.take() else {
            return;
        };
        let discarded = kept < r.request.min;
        if !discarded {
            self.recorded.insert(r.id.clone(), kept);
        }
        self.core
            .handle_record_done(LegId::CALLER, r.id, reason, kept, r.digits, discarded);
    }

    /// The caller hangs up: a recording in progress ends first, as the leg reports it
    /// before the dialog ends.
    fn caller_hangs_up(&mut self, why: &str) {
        if let Some(start) = self.record.as_ref().map(|r| r.start) {
            self.stop_record(StopReason::Hangup, self.now - start);
            self.drain();
        }
        self.line(why);
        self.end_call();
        let now = self.instant();
        self.core.handle_sip(
            now,
            LegId::CALLER,
            Event::Ended {
                call: CallHandle(1),
                reason: EndReason::RemoteBye,
            },
        );
        self.drain();
    }
}
