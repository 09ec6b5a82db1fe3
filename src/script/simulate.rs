//! A simulated call: a scripted caller on a virtual clock, for trying call flows without
//! SIP and for testing them.
//!
//! The fake call side implements [`CallPort`] the way the call task does, with time taken
//! from a virtual clock that jumps from event to event, so an hour-long call simulates in
//! microseconds. Prompts last as long as the real files (with a prompt folder) or a fixed
//! [`DEFAULT_PROMPT`] each; `collect` is driven by the same [`Collector`] as a real call.
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

use super::api::{
    CallGone, CallPort, CallReply, CallRequest, ConferenceRequest, RecordInfo, RecordRequest,
};
use super::collect::{CollectAction, CollectOptions, Collector, PromptKind};
use super::engine::{build_engine, compile_file, compile_source, ScriptError, ScriptLimits};
use super::runner::{run_script, CallInfo, ScriptOutcome, StopCause};
use crate::media::dtmf::Digit;
use crate::media::frame::INTERNAL_RATE;
use crate::media::prompt::PromptCache;

/// How long each prompt lasts when no prompt folder is given.
pub const DEFAULT_PROMPT: Duration = Duration::from_secs(2);
/// Time between two keys of one input step.
pub const KEY_GAP: Duration = Duration::from_millis(100);
/// Time to send one DTMF key (tone and pause).
const DTMF_KEY: Duration = Duration::from_millis(200);

/// One step of the simulated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerStep {
    /// Press these keys.
    Keys(Vec<Digit>),
    /// Let time pass.
    Wait(Duration),
    /// Hang up.
    Hangup,
}

/// Parses caller input (`"1, wait 3s, 4#, hangup"`).
pub fn parse_input(input: &str) -> Result<Vec<CallerStep>, String> {
    let mut steps = Vec::new();
    for item in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let lower = item.to_ascii_lowercase();
        if lower == "hangup" {
            steps.push(CallerStep::Hangup);
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
                    format!("{item:?}: {c:?} is not a key; steps are keys, wait Ns, hangup")
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
        }
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
        )));
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
        if !sim.gone {
            let why = match &outcome {
                ScriptOutcome::Finished => "hung up (script ended)".to_string(),
                ScriptOutcome::Error(e) => format!("hung up (script error: {e})"),
                ScriptOutcome::Stopped(StopCause::Limit(l)) => format!("hung up ({l})"),
                ScriptOutcome::Stopped(StopCause::Hangup) => "hung up".to_string(),
            };
            sim.line(why);
        }
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

/// A `collect` prompt playing in simulated time.
#[derive(Debug, Clone, Copy)]
struct Prompt {
    /// The collector's number for the prompt.
    play: u32,
    /// When it has played out, from the call's start.
    until: Duration,
}

impl CallPort for SimPort {
    fn request(&mut self, req: CallRequest) -> Result<CallReply, CallGone> {
        lock(&self.0).handle(req)
    }
}

/// Something the caller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerEvent {
    Key(Digit),
    Hangup,
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

/// What ended a wait.
enum Stop {
    /// The activity reached its end.
    Ended,
    /// The caller pressed a key.
    Key(Digit),
    /// The caller hung up (or the time limit passed).
    Hangup,
}

struct SimCall {
    t0: Instant,
    now: Duration,
    limit: Duration,
    caller: Caller,
    answered: bool,
    /// Early media started: media verbs play without answering.
    early: bool,
    gone: bool,
    hangup: Arc<AtomicBool>,
    type_ahead: VecDeque<Digit>,
    prompts: Option<PromptCache>,
    durations: HashMap<String, Option<Duration>>,
    recordings: u32,
    /// Recordings made in this call, playable as `recording:ID`.
    recorded: HashMap<String, Duration>,
    lines: Vec<TranscriptLine>,
}

impl SimCall {
    fn new(
        steps: Vec<CallerStep>,
        prompts: Option<&Path>,
        limit: Duration,
        hangup: Arc<AtomicBool>,
    ) -> Self {
        SimCall {
            t0: Instant::now(),
            now: Duration::ZERO,
            limit,
            caller: Caller {
                steps: steps.into(),
                clock: Duration::ZERO,
            },
            answered: false,
            early: false,
            gone: false,
            hangup,
            type_ahead: VecDeque::new(),
            prompts: prompts.map(|p| PromptCache::new(p.to_path_buf())),
            durations: HashMap::new(),
            recordings: 0,
            recorded: HashMap::new(),
            lines: Vec::new(),
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

    fn end_call(&mut self) {
        self.gone = true;
        self.hangup.store(true, Ordering::Relaxed);
    }

    /// Lets virtual time run until `end` (None: open-ended) or a caller event.
    fn wait_for(&mut self, end: Option<Duration>, listening: bool) -> Stop {
        let end_at = end.unwrap_or(Duration::MAX).min(self.limit);
        if let Some((at, ev)) = self.caller.peek(self.now, listening) {
            if at < end_at {
                self.now = at;
                self.caller.consume(at);
                return match ev {
                    CallerEvent::Key(d) => Stop::Key(d),
                    CallerEvent::Hangup => {
                        self.line("caller hung up");
                        self.end_call();
                        Stop::Hangup
                    }
                };
            }
        }
        self.now = self.now.max(end_at);
        if end.is_none_or(|e| e > self.limit) {
            self.line("caller hung up (time limit)");
            self.end_call();
            return Stop::Hangup;
        }
        Stop::Ended
    }

    fn prompt_duration(&mut self, name: &str) -> Option<Duration> {
        if let Some(id) = name.strip_prefix("recording:") {
            let d = self.recorded.get(id).copied();
            if d.is_none() {
                self.line(format!("recording {id} not played: no such recording"));
            }
            return d;
        }
        let Some(cache) = &self.prompts else {
            return Some(DEFAULT_PROMPT);
        };
        if let Some(d) = self.durations.get(name) {
            return *d;
        }
        let d = match cache.load(name, INTERNAL_RATE) {
            Ok(p) => Some(p.duration()),
            Err(e) => {
                self.line(format!("prompt {name} not played: {e}"));
                None
            }
        };
        self.durations.insert(name.to_string(), d);
        d
    }

    fn prompts_duration(&mut self, names: &[String]) -> Duration {
        names.iter().filter_map(|n| self.prompt_duration(n)).sum()
    }

    /// Media needs an answered call, or early media; without either, answer first.
    fn ensure_media(&mut self) {
        if !self.early {
            self.answer();
        }
    }

    fn answer(&mut self) {
        if !self.answered {
            self.answered = true;
            self.line("answered");
        }
    }

    fn handle(&mut self, req: CallRequest) -> Result<CallReply, CallGone> {
        if self.gone {
            return Err(CallGone);
        }
        match req {
            CallRequest::Answer => {
                self.answer();
                Ok(CallReply::Done)
            }
            CallRequest::EarlyMedia => {
                if !self.answered && !self.early {
                    self.early = true;
                    self.line("early media");
                }
                Ok(CallReply::Done)
            }
            CallRequest::Ring => {
                self.line("ringing");
                Ok(CallReply::Done)
            }
            CallRequest::Hangup { cause } => {
                match (cause, self.answered) {
                    (Some(c), false) => self.line(format!("refused with {c}")),
                    _ => self.line("hung up"),
                }
                self.end_call();
                Ok(CallReply::Done)
            }
            CallRequest::DiscardRecording(id) => {
                self.line(format!("discarded recording {id}"));
                self.recorded.remove(&id);
                Ok(CallReply::Done)
            }
            CallRequest::Log(s) => {
                self.line(format!("log: {s}"));
                Ok(CallReply::Done)
            }
            // The simulated call is alone: rooms have no members and take every request.
            CallRequest::Room { room, request } => {
                self.line(format!("room {room}: {request:?}"));
                Ok(match request {
                    super::api::RoomRequest::Members => CallReply::Members(Vec::new()),
                    super::api::RoomRequest::RecordStart => {
                        CallReply::Text(Some(format!("sim-room-{room}")))
                    }
                    _ => CallReply::Done,
                })
            }
            CallRequest::Play(p) => {
                self.ensure_media();
                self.line(format!("played {}", p.prompts.join(", ")));
                let dur = self.prompts_duration(&p.prompts);
                self.play_for(dur, p.barge_in)?;
                Ok(CallReply::Done)
            }
            CallRequest::Tone { spec } => {
                self.ensure_media();
                let ms = spec.duration_ms().unwrap_or(0);
                self.line(format!("tone {ms} ms"));
                self.play_for(Duration::from_millis(ms), false)?;
                Ok(CallReply::Done)
            }
            CallRequest::Silence(d) => {
                self.ensure_media();
                self.line(format!("silence {:.1} s", d.as_secs_f64()));
                self.play_for(d, false)?;
                Ok(CallReply::Done)
            }
            CallRequest::Sleep(d) => {
                self.line(format!("slept {:.1} s", d.as_secs_f64()));
                self.play_for(d, false)?;
                Ok(CallReply::Done)
            }
            CallRequest::SendDtmf(keys) => {
                self.ensure_media();
                self.line(format!("sent DTMF {keys}"));
                self.play_for(DTMF_KEY * keys.len() as u32, false)?;
                Ok(CallReply::Done)
            }
            CallRequest::Transfer(uri) => {
                self.line(format!("transferred to {uri}"));
                self.end_call();
                Ok(CallReply::Done)
            }
            CallRequest::Collect(opts) => {
                self.ensure_media();
                self.collect(opts).map(CallReply::Digits)
            }
            CallRequest::Record(r) => {
                self.ensure_media();
                self.record(r).map(CallReply::Recorded)
            }
            CallRequest::Conference(c) => {
                self.ensure_media();
                self.conference(c).map(CallReply::Left)
            }
            CallRequest::Echo { max } => {
                self.ensure_media();
                self.echo(max)?;
                Ok(CallReply::Done)
            }
        }
    }

    /// Plays (or waits) for `d`; with barge-in a key stops it and is kept as type-ahead.
    fn play_for(&mut self, d: Duration, barge_in: bool) -> Result<(), CallGone> {
        let end = self.now + d;
        match self.wait_for(Some(end), barge_in) {
            Stop::Ended => Ok(()),
            Stop::Key(k) => {
                self.line(format!("interrupted by {k}"));
                self.type_ahead.push_back(k);
                Ok(())
            }
            Stop::Hangup => Err(CallGone),
        }
    }

    fn collect(&mut self, opts: CollectOptions) -> Result<Option<String>, CallGone> {
        let now = self.instant();
        let mut c = Collector::new(opts, now, &mut self.type_ahead);
        let mut playing: Option<Prompt> = None;
        loop {
            while let Some(a) = c.poll_action() {
                match a {
                    CollectAction::Play { kind, play, .. } => {
                        let names = match kind {
                            PromptKind::Prompt => c.options().prompt.clone(),
                            PromptKind::Invalid => c.options().invalid_prompt.clone(),
                        };
                        self.line(format!("played {}", names.join(", ")));
                        let d = self.prompts_duration(&names);
                        playing = Some(Prompt {
                            play,
                            until: self.now + d,
                        });
                    }
                    CollectAction::Stop { play } => {
                        if playing.is_some_and(|p| p.play == play) {
                            playing = None;
                        }
                    }
                    CollectAction::Done(r) => {
                        match &r {
                            Some(s) => self.line(format!("collected {s:?}")),
                            None => self.line("collected nothing"),
                        }
                        return Ok(r);
                    }
                }
            }
            let timer = c
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.t0));
            let end = match (playing.map(|p| p.until), timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match self.wait_for(end, c.is_listening()) {
                Stop::Ended => {
                    let now = self.instant();
                    match playing {
                        Some(Prompt { play, until }) if self.now >= until => {
                            playing = None;
                            c.handle_play_done(now, play);
                        }
                        _ => c.handle_timeout(now),
                    }
                }
                Stop::Key(k) => {
                    if playing.is_some() && c.is_listening() {
                        self.line(format!("interrupted by {k}"));
                    }
                    c.handle_digit(self.instant(), k);
                }
                Stop::Hangup => return Err(CallGone),
            }
        }
    }

    fn record(&mut self, r: RecordRequest) -> Result<RecordInfo, CallGone> {
        if r.beep {
            self.line("beep");
            let d = match self.prompts {
                Some(_) => self.prompt_duration("beep").unwrap_or_default(),
                None => Duration::from_millis(250),
            };
            self.play_for(d, false)?;
        }
        let start = self.now;
        let max_end = start + r.max;
        let mut digits = String::new();
        let (reason, kept) = loop {
            let silence_from = self.caller.is_done().then(|| self.caller.clock.max(start));
            let end = match (r.silence, silence_from) {
                (Some(s), Some(from)) => max_end.min(from + s),
                _ => max_end,
            };
            match self.wait_for(Some(end), true) {
                Stop::Ended if self.now >= max_end => break ("max_duration", r.max),
                Stop::Ended => {
                    let from = silence_from.unwrap_or(self.now);
                    break ("silence", from.saturating_sub(start));
                }
                Stop::Key(k) => {
                    digits.push(k.as_char());
                    if r.terminators.contains(k) {
                        break ("terminator", self.now - start);
                    }
                }
                Stop::Hangup => break ("hangup", self.now - start),
            }
        };
        self.recordings += 1;
        let id = r
            .file
            .clone()
            .unwrap_or_else(|| format!("sim-{}", self.recordings));
        let discarded = kept < r.min;
        if !discarded {
            self.recorded.insert(id.clone(), kept);
        }
        let text = format!(
            "recorded {:.1} s ({reason}){}",
            kept.as_secs_f64(),
            if discarded { ", discarded" } else { "" }
        );
        // The line belongs to when recording stopped, before a hangup line if any.
        let at = self.now;
        let pos = self
            .lines
            .iter()
            .rposition(|l| l.text != "caller hung up")
            .map_or(0, |p| p + 1);
        self.lines.insert(pos, TranscriptLine { at, text });
        Ok(RecordInfo {
            id,
            duration: kept,
            digits,
            reason: reason.into(),
            discarded,
        })
    }

    fn conference(&mut self, c: ConferenceRequest) -> Result<String, CallGone> {
        let mut how = Vec::new();
        if c.moderator {
            how.push("moderator");
        }
        if c.muted {
            how.push("muted");
        }
        let how = if how.is_empty() {
            String::new()
        } else {
            format!(" ({})", how.join(", "))
        };
        self.line(format!("joined conference {}{how}", c.room));
        loop {
            match self.wait_for(None, true) {
                // The room keeps its own keys (mute, volume); the simulated room ignores them.
                Stop::Key(_) | Stop::Ended => {}
                Stop::Hangup => return Err(CallGone),
            }
        }
    }

    fn echo(&mut self, max: Option<Duration>) -> Result<(), CallGone> {
        self.line("echo test");
        let start = self.now;
        let end = max.map(|m| start + m);
        loop {
            match self.wait_for(end, true) {
                Stop::Key(k) if k.as_char() == '#' => break,
                Stop::Key(_) => {}
                Stop::Ended => break,
                Stop::Hangup => return Err(CallGone),
            }
        }
        self.line(format!(
            "echo ended after {:.1} s",
            (self.now - start).as_secs_f64()
        ));
        Ok(())
    }
}
