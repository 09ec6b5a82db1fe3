//! The functions a call-flow script calls, and the requests they make of the call.
//!
//! Every verb turns its arguments into a [`CallRequest`], hands it to the call's
//! [`CallPort`] and waits for the [`CallReply`] (a script on the runner's pool is suspended
//! meanwhile, its thread free for others). The port is the running script's, installed in
//! thread-locals by the runner and swapped out while the script is suspended, so one
//! [`rhai::Engine`] serves every call. Once the caller is gone every request fails and the script is terminated
//! with an error no `try`/`catch` can swallow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, INT};

use super::collect::{full_match_regex, CollectOptions, MAX_DIGITS};
use crate::call::TransferTarget;
use crate::media::dtmf::Digit;
use crate::media::record::{DigitSet, RecordMode, RecordPolicy};
use crate::media::tone::ToneSpec;

/// Terminate token: the script called `hangup()`.
pub(crate) const END_HANGUP: &str = "switchboard:hangup";
/// Terminate token: the script called `transfer()`.
pub(crate) const END_TRANSFER: &str = "switchboard:transfer";
/// Terminate token: the caller hung up (or the call ended under the script).
pub(crate) const END_GONE: &str = "switchboard:gone";

/// Longest `sleep`, `silence` or `echo` one call may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Prompts in one `play`.
pub const MAX_PROMPTS: usize = 256;
/// Tries the PIN prompt of `conference` allows.
pub const PIN_TRIES: u32 = 3;

/// What a script asks of its call.
#[derive(Debug, Clone)]
pub enum CallRequest {
    /// Answer (200 OK) if not answered yet.
    Answer,
    /// Send 180 Ringing.
    Ring,
    /// Send 183 Session Progress with our SDP and start media before answering, so prompts
    /// and tones reach the caller before (or without) a 200 OK.
    EarlyMedia,
    /// End the call: a SIP status to refuse with before answer (default 480), ignored after.
    Hangup {
        /// The status code, if the script gave one.
        cause: Option<u16>,
    },
    /// Play prompts one after another.
    Play(PlayRequest),
    /// Play a tone (a finite [`ToneSpec`]).
    Tone {
        /// The tone.
        spec: ToneSpec,
    },
    /// Play silence.
    Silence(Duration),
    /// Read digits as specified in [`super::collect`].
    Collect(CollectOptions),
    /// Record the caller.
    Record(RecordRequest),
    /// Join a conference room until the caller leaves.
    Conference(ConferenceRequest),
    /// Send DTMF to the caller.
    SendDtmf(String),
    /// Blind transfer to a URI; the call ends for us.
    Transfer(TransferTarget),
    /// Wait, doing nothing.
    Sleep(Duration),
    /// Send the caller's audio back until `#`, the limit, or hangup.
    Echo {
        /// Longest echo (None: until `#` or hangup).
        max: Option<Duration>,
    },
    /// Delete a recording this call made (a message recorded again).
    DiscardRecording(String),
    /// A log line from the script, logged in the call's span.
    Log(String),
    /// Call others and bridge the first to answer with the caller.
    Dial(crate::call::DialRequest),
    /// Place a separate call (a callback, a room member); answered with its Call-ID.
    Originate(Box<crate::call::Originate>),
    /// Stream the call's audio to an application over WebSocket; `background`: return at
    /// once, else when the stream ends (answered with why).
    Stream {
        /// Where and how.
        request: Box<crate::stream::StreamRequest>,
        /// Return at once and let the stream run beside what the script does next.
        background: bool,
    },
    /// Stop the call's stream, if one runs.
    StreamStop,
    /// Speak text to the caller; `barge_in`: a key or the caller's speech stops it.
    Say {
        /// What to say, and how.
        request: crate::speech::tts::SayRequest,
        /// A key or speech stops it (and a `listen` that follows hears the whole answer).
        barge_in: bool,
    },
    /// Listen for one answer: speech (recognised) or a key.
    Listen(crate::speech::ListenOptions),
    /// Tell a person from an answering machine.
    Amd(Box<crate::speech::amd::AmdConfig>),
    /// Wait for the voicemail tone, at most this long.
    WaitForBeep(Duration),
    /// Act on a conference room (any room, not only the caller's), or list its members.
    Room {
        /// The room's name.
        room: String,
        /// What to do.
        request: RoomRequest,
    },
}

/// What a script can do to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomRequest {
    /// No one else may join.
    Lock,
    /// Others may join again.
    Unlock,
    /// Every member leaves.
    End,
    /// Play a prompt to everyone.
    Play(String),
    /// Start recording the room; answers the recording's id.
    RecordStart,
    /// Stop recording the room.
    RecordStop,
    /// Stream the room's mix to an application; answers the stream's id.
    StreamStart(Box<crate::stream::StreamRequest>),
    /// Stop the room's stream.
    StreamStop,
    /// Act on one member.
    Member(u64, crate::live::MemberAction),
    /// List the members.
    Members,
}

/// A `play` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayRequest {
    /// Prompt names (`welcome`, `digits/5`), played in order; `recording:ID` names a
    /// recording this call made.
    pub prompts: Vec<String>,
    /// A key stops the playback (and is kept for the next `collect`).
    pub barge_in: bool,
}

/// A `record` request.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRequest {
    /// The recording's file name (without extension) when the script chose one.
    pub file: Option<String>,
    /// Stop after this long.
    pub max: Duration,
    /// Stop after this much silence (None: never).
    pub silence: Option<Duration>,
    /// Play a beep first.
    pub beep: bool,
    /// Keys that stop the recording.
    pub terminators: DigitSet,
    /// Shorter recordings are discarded.
    pub min: Duration,
    /// Caller left, server right, instead of the caller only.
    pub stereo: bool,
}

impl Default for RecordRequest {
    fn default() -> Self {
        RecordRequest {
            file: None,
            max: Duration::from_secs(120),
            silence: Some(Duration::from_secs(5)),
            beep: true,
            terminators: DigitSet::from_chars("#"),
            min: Duration::ZERO,
            stereo: false,
        }
    }
}

impl RecordRequest {
    /// The media layer's policy for this request.
    pub fn policy(&self) -> RecordPolicy {
        RecordPolicy {
            mode: if self.stereo {
                RecordMode::Stereo
            } else {
                RecordMode::Inbound
            },
            max_duration: Some(self.max),
            silence_timeout: self.silence,
            min_duration: self.min,
            terminators: self.terminators,
            beep: self.beep,
            ..RecordPolicy::default()
        }
    }
}

/// A `conference` request (the PIN, if any, was checked by the script side already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceRequest {
    /// The room's name.
    pub room: String,
    /// Join as moderator.
    pub moderator: bool,
    /// Join muted.
    pub muted: bool,
}

/// What a finished recording reports to the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// The recording's id (its file name).
    pub id: String,
    /// Audio kept.
    pub duration: Duration,
    /// Keys pressed while recording, the terminator included.
    pub digits: String,
    /// Why it stopped (`max_duration`, `silence`, `terminator`, `hangup`, `requested`).
    pub reason: String,
    /// Shorter than the minimum, so not kept.
    pub discarded: bool,
}

/// The call's answer to a [`CallRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum CallReply {
    /// Done (answer, play, tone, sleep, …).
    Done,
    /// The result of `collect`: digits, or `None` after the last failed try.
    Digits(Option<String>),
    /// The result of `record`.
    Recorded(RecordInfo),
    /// The caller left the conference, and why (`left`, `kicked`, `ended`, `full`, `locked`).
    Left(String),
    /// The request could not be carried out (a missing prompt, no media); the script
    /// gets a catchable error.
    Failed(String),
    /// A text answer, e.g. the id of a room recording just started.
    Text(Option<String>),
    /// A room's members.
    Members(Vec<crate::live::MemberInfo>),
    /// How a `dial` ended.
    Dialed(crate::call::DialResult),
    /// What `listen` heard.
    Heard(crate::speech::Heard),
    /// The answering-machine verdict.
    Amd(crate::speech::amd::AmdResult),
    /// What `wait_for_beep` heard.
    Beep(crate::speech::BeepResult),
}

/// The caller hung up or the call ended: the request was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the call has ended")]
pub struct CallGone;

/// How a script reaches its call.
pub trait CallPort: Send {
    /// Carries out one request, returning when it is done (blocking, or suspending a
    /// script that runs on the runner's pool).
    fn request(&mut self, req: CallRequest) -> Result<CallReply, CallGone>;
}

/// The call a script is running for.
struct Active {
    /// Out while a request is in flight, so the port may suspend the script with nothing of
    /// this thread's borrowed.
    port: Option<Box<dyn CallPort>>,
    hangup: Arc<AtomicBool>,
    session: Dynamic,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
    // Kept apart from ACTIVE so the progress check never contends with a request in flight.
    static HANGUP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Makes `port` this thread's call until the guard is dropped.
pub(crate) fn install(port: Box<dyn CallPort>, hangup: Arc<AtomicBool>, session: Map) -> Installed {
    HANGUP.with(|h| *h.borrow_mut() = Some(hangup.clone()));
    ACTIVE.with(|a| {
        *a.borrow_mut() = Some(Active {
            port: Some(port),
            hangup,
            session: Dynamic::from_map(session).into_read_only(),
        })
    });
    Installed(())
}

/// A suspended script's call, out of the thread while other scripts run there.
pub(crate) struct Context(Option<Active>, Option<Arc<AtomicBool>>);

/// Takes this thread's call out, as a script is suspended.
pub(crate) fn take_context() -> Context {
    Context(
        ACTIVE.with(|a| a.borrow_mut().take()),
        HANGUP.with(|h| h.borrow_mut().take()),
    )
}

/// Puts a script's call back, as it is resumed.
pub(crate) fn restore_context(c: Context) {
    ACTIVE.with(|a| *a.borrow_mut() = c.0);
    HANGUP.with(|h| *h.borrow_mut() = c.1);
}

/// Adds `key` to the `session` map of this thread's call (before its script runs).
pub(crate) fn add_to_session(key: &str, value: Dynamic) {
    ACTIVE.with(|a| {
        if let Some(active) = a.borrow_mut().as_mut() {
            if let Some(mut m) = active.session.clone().try_cast::<Map>() {
                m.insert(key.into(), value);
                active.session = Dynamic::from_map(m).into_read_only();
            }
        }
    });
}

/// The `session` map of this thread's call, read-only.
pub(crate) fn session() -> Option<Dynamic> {
    ACTIVE.with(|a| a.borrow().as_ref().map(|a| a.session.clone()))
}

/// Uninstalls the thread's call when dropped.
pub(crate) struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        drop(take_context());
    }
}

/// Whether this thread's caller is gone; read by the engine's progress callback.
pub(crate) fn hangup_requested() -> bool {
    HANGUP.with(|h| {
        h.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    })
}

pub(super) type Res<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn err<T>(msg: impl Into<String>) -> Res<T> {
    Err(EvalAltResult::ErrorRuntime(Dynamic::from(msg.into()), Position::NONE).into())
}

fn terminate<T>(token: &str) -> Res<T> {
    Err(EvalAltResult::ErrorTerminated(Dynamic::from(token.to_string()), Position::NONE).into())
}

/// Sends `req` through this thread's port.
pub(super) fn request(req: CallRequest) -> Res<CallReply> {
    let taken = ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let active = a.as_mut()?;
        if active.hangup.load(Ordering::Relaxed) {
            return Some(Err(CallGone));
        }
        Some(active.port.take().ok_or(CallGone))
    });
    let result = match taken {
        None => return err("no call: script API used outside a call"),
        Some(Err(gone)) => Err(gone),
        Some(Ok(mut port)) => {
            let r = port.request(req);
            ACTIVE.with(|a| {
                if let Some(active) = a.borrow_mut().as_mut() {
                    active.port = Some(port);
                    if r.is_err() {
                        active.hangup.store(true, Ordering::Relaxed);
                    }
                }
            });
            r
        }
    };
    match result {
        Err(CallGone) => terminate(END_GONE),
        Ok(CallReply::Failed(why)) => err(why),
        Ok(reply) => Ok(reply),
    }
}

fn request_done(req: CallRequest) -> Res<()> {
    request(req).map(|_| ())
}

/// A `collect` pattern compiled once for every call that uses it, not once per call.
fn collect_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    /// Patterns kept; scripts use a handful, and a script making up patterns only clears it.
    const KEPT: usize = 256;
    static COMPILED: std::sync::LazyLock<std::sync::Mutex<HashMap<String, regex::Regex>>> =
        std::sync::LazyLock::new(Default::default);
    let lock = || COMPILED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = lock().get(pattern) {
        return Ok(r.clone());
    }
    // Compiling a pattern takes far more stack than a script otherwise does.
    let r = super::runner::on_thread_stack(|| full_match_regex(pattern))?;
    let mut compiled = lock();
    if compiled.len() >= KEPT {
        compiled.clear();
    }
    compiled.insert(pattern.to_string(), r.clone());
    Ok(r)
}

/// Reads options out of a script's object map, refusing unknown keys so typos surface.
pub(super) struct Opts<'a> {
    verb: &'static str,
    map: &'a Map,
}

impl<'a> Opts<'a> {
    pub(super) fn new(verb: &'static str, map: &'a Map, known: &[&str]) -> Res<Opts<'a>> {
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return err(format!(
                "{verb}: unknown option {k:?} (known: {})",
                known.join(", ")
            ));
        }
        Ok(Opts { verb, map })
    }

    pub(super) fn get(&self, key: &str) -> Option<&Dynamic> {
        self.map.get(key).filter(|v| !v.is_unit())
    }

    pub(super) fn int(&self, key: &str, lo: INT, hi: INT) -> Res<Option<INT>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_int() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            Ok(n) => err(format!(
                "{}: {key} must be between {lo} and {hi}, not {n}",
                self.verb
            )),
            Err(t) => err(format!("{}: {key} must be an integer, not {t}", self.verb)),
        }
    }

    pub(super) fn millis(&self, key: &str) -> Res<Option<Duration>> {
        let max = MAX_WAIT.as_millis() as INT;
        Ok(self
            .int(key, 0, max)?
            .map(|n| Duration::from_millis(n.unsigned_abs())))
    }

    /// Seconds as an integer or a decimal.
    fn secs(&self, key: &str) -> Res<Option<Duration>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let secs = if let Ok(n) = v.as_int() {
            n as f64
        } else if let Ok(f) = v.as_float() {
            f
        } else {
            return err(format!(
                "{}: {key} must be a number of seconds, not {}",
                self.verb,
                v.type_name()
            ));
        };
        if !(0.0..=MAX_WAIT.as_secs_f64()).contains(&secs) {
            return err(format!(
                "{}: {key} must be between 0 and {} seconds, not {secs}",
                self.verb,
                MAX_WAIT.as_secs()
            ));
        }
        Ok(Some(Duration::from_secs_f64(secs)))
    }

    pub(super) fn bool(&self, key: &str) -> Res<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_bool() {
                Ok(b) => Ok(Some(b)),
                Err(t) => err(format!(
                    "{}: {key} must be true or false, not {t}",
                    self.verb
                )),
            },
        }
    }

    /// A string; integers are taken as their decimal digits (`pin: 1234`).
    pub(super) fn string(&self, key: &str) -> Res<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => text(self.verb, key, v).map(Some),
        }
    }

    fn prompts(&self, key: &str) -> Res<Vec<String>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(v) => prompt_list(self.verb, v),
        }
    }

    fn digits(&self, key: &str) -> Res<Option<DigitSet>> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        let keys = digit_string(self.verb, &s)?;
        Ok(Some(keys.chars().fold(DigitSet::EMPTY, |set, c| {
            Digit::from_char(c).map_or(set, |d| set.with(d))
        })))
    }
}

fn text(verb: &str, what: &str, v: &Dynamic) -> Res<String> {
    if let Some(s) = v.read_lock::<ImmutableString>() {
        return Ok(s.to_string());
    }
    match v.as_int() {
        Ok(n) => Ok(n.to_string()),
        Err(t) => err(format!("{verb}: {what} must be a string, not {t}")),
    }
}

/// Checks that `s` is made of DTMF keys only.
fn digit_string(verb: &str, s: &str) -> Res<String> {
    match s.chars().find(|&c| Digit::from_char(c).is_none()) {
        Some(c) => err(format!("{verb}: {c:?} is not a DTMF key (0-9, *, #, A-D)")),
        None => Ok(s.to_ascii_uppercase()),
    }
}

/// A prompt name or an array of them.
fn prompt_list(verb: &str, v: &Dynamic) -> Res<Vec<String>> {
    let names: Vec<String> = if let Some(a) = v.read_lock::<Array>() {
        a.iter()
            .map(|p| text(verb, "a prompt", p))
            .collect::<Res<_>>()?
    } else {
        vec![text(verb, "the prompt", v)?]
    };
    if names.len() > MAX_PROMPTS {
        return err(format!("{verb}: at most {MAX_PROMPTS} prompts at once"));
    }
    if names.iter().any(|n| n.trim().is_empty()) {
        return err(format!("{verb}: empty prompt name"));
    }
    Ok(names)
}

fn wait(verb: &str, ms: INT) -> Res<Duration> {
    if ms < 0 || ms > MAX_WAIT.as_millis() as INT {
        return err(format!(
            "{verb}: {ms} ms is out of range (0 to {} ms)",
            MAX_WAIT.as_millis()
        ));
    }
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

fn play(prompts: &Dynamic, opts: &Map) -> Res<()> {
    let o = Opts::new("play", opts, &["barge_in"])?;
    let req = PlayRequest {
        prompts: prompt_list("play", prompts)?,
        barge_in: o.bool("barge_in")?.unwrap_or(false),
    };
    request_done(CallRequest::Play(req))
}

/// The prompts that speak `s` key by key.
fn digit_prompts(verb: &str, s: &str) -> Res<Vec<String>> {
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                Ok(format!("digits/{c}"))
            } else {
                err(format!(
                    "{verb}: no prompt for {c:?}; only 0-9 can be spoken"
                ))
            }
        })
        .collect()
}

fn say_digits(s: &str) -> Res<()> {
    let prompts = digit_prompts("say_digits", s)?;
    if prompts.is_empty() {
        return Ok(());
    }
    request_done(CallRequest::Play(PlayRequest {
        prompts,
        barge_in: false,
    }))
}

fn say_number(n: INT) -> Res<()> {
    if n < 0 {
        return err("say_number: negative numbers cannot be spoken (no \"minus\" prompt)");
    }
    say_digits(&n.to_string())
}

fn tone(spec: &str) -> Res<()> {
    let spec: ToneSpec = match spec.parse() {
        Ok(s) => s,
        Err(e) => return err(format!("tone: {e}")),
    };
    if spec.duration_ms().is_none() {
        return err("tone: the tone never ends; give it a count (\"…*3\")");
    }
    request_done(CallRequest::Tone { spec })
}

/// Turns `collect`'s option map into [`CollectOptions`].
pub fn collect_options(opts: &Map) -> Res<CollectOptions> {
    let o = Opts::new(
        "collect",
        opts,
        &[
            "min",
            "max",
            "timeout",
            "first_digit_timeout",
            "inter_digit_timeout",
            "terminators",
            "regex",
            "tries",
            "prompt",
            "invalid_prompt",
            "barge_in",
        ],
    )?;
    let d = CollectOptions::default();
    let top = MAX_DIGITS as INT;
    let min = o.int("min", 0, top)?.map_or(d.min, |n| n as usize);
    let max = o.int("max", 1, top)?.map_or(min.max(1), |n| n as usize);
    let regex = match o.string("regex")? {
        None => None,
        Some(p) => match collect_regex(&p) {
            Ok(r) => Some(r),
            Err(e) => return err(format!("collect: bad regex {p:?}: {e}")),
        },
    };
    let c = CollectOptions {
        min,
        max,
        first_digit_timeout: o
            .millis("first_digit_timeout")?
            .unwrap_or(d.first_digit_timeout),
        inter_digit_timeout: o
            .millis("inter_digit_timeout")?
            .unwrap_or(d.inter_digit_timeout),
        timeout: o.millis("timeout")?.filter(|t| !t.is_zero()),
        terminators: o.digits("terminators")?.unwrap_or(d.terminators),
        regex,
        tries: o.int("tries", 1, 100)?.map_or(d.tries, |n| n as u32),
        prompt: o.prompts("prompt")?,
        invalid_prompt: o.prompts("invalid_prompt")?,
        barge_in: o.bool("barge_in")?.unwrap_or(d.barge_in),
    };
    if let Err(e) = c.validate() {
        return err(e.to_string());
    }
    Ok(c)
}

fn collect(opts: &Map) -> Res<Dynamic> {
    let c = collect_options(opts)?;
    match request(CallRequest::Collect(c))? {
        CallReply::Digits(Some(s)) => Ok(s.into()),
        CallReply::Digits(None) => Ok(Dynamic::UNIT),
        other => err(format!("collect: unexpected reply {other:?}")),
    }
}

/// Turns `record`'s option map into a [`RecordRequest`].
pub fn record_request(opts: &Map) -> Res<RecordRequest> {
    let o = Opts::new(
        "record",
        opts,
        &[
            "file",
            "max_secs",
            "silence_secs",
            "beep",
            "terminators",
            "min_secs",
            "stereo",
        ],
    )?;
    let d = RecordRequest::default();
    let file = o.string("file")?;
    if let Some(f) = &file {
        // The rule recording ids follow everywhere (files, the HTTP API).
        if f.len() > 128 || !crate::media::record::sidecar::is_safe_id(f) {
            return err(format!(
                "record: file {f:?} must be 1-128 letters, digits, '-' or '_'"
            ));
        }
    }
    Ok(RecordRequest {
        file,
        max: o.secs("max_secs")?.unwrap_or(d.max),
        silence: match o.secs("silence_secs")? {
            None => d.silence,
            Some(s) if s.is_zero() => None,
            Some(s) => Some(s),
        },
        beep: o.bool("beep")?.unwrap_or(d.beep),
        terminators: o.digits("terminators")?.unwrap_or(d.terminators),
        min: o.secs("min_secs")?.unwrap_or(d.min),
        stereo: o.bool("stereo")?.unwrap_or(d.stereo),
    })
}

fn record(opts: &Map) -> Res<Map> {
    let r = record_request(opts)?;
    match request(CallRequest::Record(r))? {
        CallReply::Recorded(info) => {
            let mut m = Map::new();
            m.insert("id".into(), info.id.into());
            m.insert(
                "duration_ms".into(),
                (info.duration.as_millis().min(INT::MAX as u128) as INT).into(),
            );
            m.insert("digits".into(), info.digits.into());
            m.insert("reason".into(), info.reason.into());
            m.insert("discarded".into(), info.discarded.into());
            Ok(m)
        }
        other => err(format!("record: unexpected reply {other:?}")),
    }
}

fn conference(room: &Dynamic, opts: &Map) -> Res<ImmutableString> {
    let o = Opts::new(
        "conference",
        opts,
        &["pin", "moderator_pin", "muted", "moderator"],
    )?;
    let room = text("conference", "the room", room)?;
    if room.is_empty() || room.len() > 64 {
        return err("conference: the room name must be 1-64 characters");
    }
    let pin = o.string("pin")?;
    let moderator_pin = o.string("moderator_pin")?;
    let mut moderator = o.bool("moderator")?.unwrap_or(false);
    if pin.is_some() || moderator_pin.is_some() {
        match ask_pin(pin.as_deref(), moderator_pin.as_deref())? {
            Some(is_moderator) => moderator |= is_moderator,
            None => return Ok("bad_pin".into()),
        }
    }
    let req = ConferenceRequest {
        room,
        moderator,
        muted: o.bool("muted")?.unwrap_or(false),
    };
    match request(CallRequest::Conference(req))? {
        CallReply::Left(why) => Ok(why.into()),
        other => err(format!("conference: unexpected reply {other:?}")),
    }
}

fn room_name(verb: &str, room: &str) -> Res<String> {
    if room.is_empty() || room.len() > 64 {
        return err(format!("{verb}: the room name must be 1-64 characters"));
    }
    Ok(room.to_string())
}

/// `room_lock(room)`, `room_kick(room, member)`, …: one request to the room.
fn room_do(verb: &str, room: &str, request: RoomRequest) -> Res<Dynamic> {
    let room = room_name(verb, room)?;
    match self::request(CallRequest::Room { room, request })? {
        CallReply::Done | CallReply::Text(None) => Ok(Dynamic::UNIT),
        CallReply::Text(Some(t)) => Ok(t.into()),
        CallReply::Members(members) => Ok(members
            .into_iter()
            .map(|m| {
                let mut map = Map::new();
                map.insert("id".into(), (m.id.min(INT::MAX as u64) as INT).into());
                map.insert("call_id".into(), m.call_id.into());
                map.insert("from".into(), m.from.into());
                map.insert("moderator".into(), m.moderator.into());
                map.insert("muted".into(), m.muted.into());
                map.insert("deaf".into(), m.deaf.into());
                map.insert("talking".into(), m.talking.into());
                Dynamic::from_map(map)
            })
            .collect::<Array>()
            .into()),
        other => err(format!("{verb}: unexpected reply {other:?}")),
    }
}

fn member_do(verb: &str, room: &str, member: INT, action: crate::live::MemberAction) -> Res<()> {
    let Ok(member) = u64::try_from(member) else {
        return err(format!("{verb}: {member} is not a member id"));
    };
    room_do(verb, room, RoomRequest::Member(member, action)).map(|_| ())
}

/// Asks for a room PIN: `Some(true)` for the moderator PIN, `Some(false)` for the
/// participants' PIN, `None` after [`PIN_TRIES`] wrong ones.
fn ask_pin(pin: Option<&str>, moderator_pin: Option<&str>) -> Res<Option<bool>> {
    for _ in 0..PIN_TRIES {
        let c = CollectOptions {
            min: 1,
            max: 16,
            prompt: vec!["enter-pin".into()],
            ..CollectOptions::default()
        };
        let entered = match request(CallRequest::Collect(c))? {
            CallReply::Digits(d) => d,
            other => return err(format!("conference: unexpected reply {other:?}")),
        };
        if let Some(e) = entered {
            if moderator_pin == Some(e.as_str()) {
                return Ok(Some(true));
            }
            if pin == Some(e.as_str()) {
                return Ok(Some(false));
            }
        }
        request_done(CallRequest::Play(PlayRequest {
            prompts: vec!["invalid".into()],
            barge_in: true,
        }))?;
    }
    Ok(None)
}

fn send_dtmf(digits: &str) -> Res<()> {
    let digits = digit_string("send_dtmf", digits)?;
    if digits.len() > 64 {
        return err("send_dtmf: at most 64 keys at once");
    }
    request_done(CallRequest::SendDtmf(digits))
}

fn transfer(uri: &str) -> Res<()> {
    // The same check the REFER's Refer-To gets, so a script learns of a bad URI at once.
    let target = TransferTarget::parse(uri).map_err(|e| format!("transfer: {uri:?}: {e}"))?;
    request_done(CallRequest::Transfer(target))?;
    terminate(END_TRANSFER)
}

/// Targets a script may ring at once.
pub const MAX_DIAL_TARGETS: usize = 16;

/// The `dial` request for `targets` (a URI or an array of them) and `opts`.
pub fn dial_request(targets: &Dynamic, opts: &Map) -> Res<crate::call::DialRequest> {
    use crate::call::{DialRequest, Ringback};
    let o = Opts::new(
        "dial",
        opts,
        &[
            "timeout_secs",
            "caller_id",
            "headers",
            "ringback",
            "mode",
            "max_secs",
            "record",
            "amd",
        ],
    )?;
    let amd = match o.get("amd") {
        None => None,
        Some(v) if v.as_bool() == Ok(false) => None,
        Some(v) if v.as_bool() == Ok(true) => Some(crate::speech::amd::AmdConfig::default()),
        Some(v) => match v.read_lock::<Map>() {
            Some(m) => Some(super::speech::amd_config(&m)?),
            None => return err("dial: amd must be true, false or a map of amd() options"),
        },
    };
    let list: Vec<String> = match targets.read_lock::<Array>() {
        Some(a) => a
            .iter()
            .map(|t| text("dial", "a target", t))
            .collect::<Res<_>>()?,
        None => vec![text("dial", "the target", targets)?],
    };
    if list.is_empty() || list.len() > MAX_DIAL_TARGETS {
        return err(format!(
            "dial: 1 to {MAX_DIAL_TARGETS} targets, not {}",
            list.len()
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let t = t
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        let ok = match t.strip_prefix("trunk:") {
            Some(rest) => trunk_target(rest),
            None => {
                (t.starts_with("sip:") || t.starts_with("sips:"))
                    && crate::call::TransferTarget::parse(&t).is_ok()
            }
        };
        if !ok {
            return err(format!(
                "dial: {t:?} is not a sip: or sips: URI nor trunk:NAME[,NAME...]/NUMBER"
            ));
        }
        out.push(t);
    }
    let d = DialRequest::default();
    let parallel = match o.string("mode")?.as_deref() {
        None | Some("sequential") => false,
        Some("parallel") => true,
        Some(m) => {
            return err(format!(
                "dial: mode must be sequential or parallel, not {m:?}"
            ))
        }
    };
    let ringback = match o.string("ringback")?.as_deref() {
        None | Some("tone") => Ringback::Tone,
        Some("early_media") => Ringback::EarlyMedia,
        Some(p) if !p.trim().is_empty() => Ringback::Prompt(p.to_string()),
        Some(_) => return err("dial: ringback must be tone, early_media or a prompt"),
    };
    let caller_id = o.string("caller_id")?;
    if let Some(c) = &caller_id {
        let fine = !c.is_empty()
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "+-_.*".contains(ch));
        if !fine {
            return err(format!(
                "dial: caller_id {c:?} must be a number or a plain user name"
            ));
        }
    }
    let mut headers = Vec::new();
    if let Some(h) = o.get("headers") {
        let Some(m) = h.read_lock::<Map>() else {
            return err("dial: headers must be a map of names to values");
        };
        for (name, value) in m.iter() {
            let value = text("dial", "a header value", value)?;
            let token = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.!%*+`'~".contains(c));
            if !token || value.contains(['\r', '\n']) {
                return err(format!("dial: header {name:?} is not a valid SIP header"));
            }
            headers.push((name.to_string(), value));
        }
    }
    Ok(DialRequest {
        targets: out,
        parallel,
        timeout: o.secs("timeout_secs")?.unwrap_or(d.timeout),
        caller_id,
        headers,
        ringback,
        max: o.secs("max_secs")?.filter(|m| !m.is_zero()),
        record: o.bool("record")?.unwrap_or(false),
        amd,
    })
}

/// `NAME[,NAME...]/NUMBER` of a `trunk:` target: names of letters, digits, `-`, `_`, `.`;
/// a number of digits, letters and `+*#.-_`.
pub(crate) fn trunk_target(rest: &str) -> bool {
    let Some((names, number)) = rest.split_once('/') else {
        return false;
    };
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    names.split(',').all(name_ok)
        && !number.is_empty()
        && number.len() <= 64
        && number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+*#.-_".contains(c))
}

/// Places a call and returns its Call-ID at once.
fn place(verb: &str, o: crate::call::Originate) -> Res<ImmutableString> {
    match request(CallRequest::Originate(Box::new(o)))? {
        CallReply::Text(Some(id)) => Ok(id.into()),
        other => err(format!("{verb}: unexpected reply {other:?}")),
    }
}

fn originate(target: &str, opts: &Map) -> Res<ImmutableString> {
    use crate::call::{Originate, OriginateFlow};
    let o = Opts::new(
        "originate",
        opts,
        &["script", "room", "vars", "caller_id", "timeout_secs", "amd"],
    )?;
    let flow = match (o.string("script")?, o.string("room")?) {
        (Some(s), None) => OriginateFlow::Script(s),
        (None, Some(room)) => OriginateFlow::Room {
            room,
            confirm: None,
        },
        _ => return err("originate: give one of script and room"),
    };
    let mut vars = std::collections::BTreeMap::new();
    if let Some(v) = o.get("vars") {
        let Some(m) = v.read_lock::<Map>() else {
            return err("originate: vars must be a map");
        };
        for (k, v) in m.iter() {
            vars.insert(k.to_string(), text("originate", "a variable", v)?);
        }
    }
    place(
        "originate",
        Originate {
            to: target.trim().to_string(),
            from: None,
            caller_id: o.string("caller_id")?,
            flow,
            vars,
            timeout: o.secs("timeout_secs")?.unwrap_or(Duration::from_secs(30)),
            amd: o.bool("amd")?.unwrap_or(false),
        },
    )
}

/// Turns `stream`'s URL and option map into a [`crate::stream::StreamRequest`].
pub fn stream_request(
    verb: &'static str,
    url: &str,
    opts: &Map,
) -> Res<crate::stream::StreamRequest> {
    let o = Opts::new(
        verb,
        opts,
        &["format", "track", "rate", "bidirectional", "parameters"],
    )?;
    let mut parameters = std::collections::BTreeMap::new();
    if let Some(v) = o.get("parameters") {
        let Some(m) = v.read_lock::<Map>() else {
            return err(format!("{verb}: parameters must be a map"));
        };
        for (k, v) in m.iter() {
            parameters.insert(k.to_string(), text(verb, "a parameter", v)?);
        }
    }
    let options = crate::stream::StreamOptions {
        format: o.string("format")?,
        track: o.string("track")?,
        rate: o.int("rate", 0, 192_000)?.map(|r| r as u32),
        bidirectional: o.bool("bidirectional")?.unwrap_or(false),
        parameters,
    };
    crate::stream::StreamRequest::new(url.trim(), options).or_else(|e| err(format!("{verb}: {e}")))
}

/// `stream`: the call's audio goes to the application until it closes the socket; answers
/// why the stream ended.
fn stream(url: &str, opts: &Map) -> Res<ImmutableString> {
    let wanted = Box::new(stream_request("stream", url, opts)?);
    match request(CallRequest::Stream {
        request: wanted,
        background: false,
    })? {
        CallReply::Text(Some(reason)) => Ok(reason.into()),
        other => err(format!("stream: unexpected reply {other:?}")),
    }
}

/// `room_stream`: the room's mix goes to the application; answers the stream's id.
fn room_stream(room: &str, url: &str, opts: &Map) -> Res<Dynamic> {
    let wanted = Box::new(stream_request("room_stream", url, opts)?);
    room_do("room_stream", room, RoomRequest::StreamStart(wanted))
}

/// `stream_start`: as `stream`, but the script goes on while the stream runs.
fn stream_start(url: &str, opts: &Map) -> Res<()> {
    let request = Box::new(stream_request("stream_start", url, opts)?);
    request_done(CallRequest::Stream {
        request,
        background: true,
    })
}

fn room_dial(room: &str, target: &str, opts: &Map) -> Res<ImmutableString> {
    use crate::call::{Originate, OriginateFlow};
    let o = Opts::new(
        "room_dial",
        opts,
        &["caller_id", "timeout_secs", "confirm", "amd"],
    )?;
    let confirm = match o.string("confirm")? {
        None => None,
        Some(k) => match k.chars().collect::<Vec<_>>()[..] {
            [c] if Digit::from_char(c).is_some() => Some(c.to_ascii_uppercase()),
            _ => return err("room_dial: confirm must be one key"),
        },
    };
    place(
        "room_dial",
        Originate {
            to: target.trim().to_string(),
            from: None,
            caller_id: o.string("caller_id")?,
            flow: OriginateFlow::Room {
                room: room.to_string(),
                confirm,
            },
            vars: Default::default(),
            timeout: o.secs("timeout_secs")?.unwrap_or(Duration::from_secs(30)),
            amd: o.bool("amd")?.unwrap_or(false),
        },
    )
}

fn dial(targets: &Dynamic, opts: &Map) -> Res<Map> {
    let r = dial_request(targets, opts)?;
    match request(CallRequest::Dial(r))? {
        CallReply::Dialed(d) => {
            let mut m = Map::new();
            m.insert("outcome".into(), d.outcome.as_str().into());
            m.insert(
                "code".into(),
                d.code.map_or(Dynamic::UNIT, |c| Dynamic::from(c as INT)),
            );
            m.insert("reason".into(), d.reason.into());
            m.insert(
                "duration_ms".into(),
                (d.duration.as_millis().min(INT::MAX as u128) as INT).into(),
            );
            if let Some(r) = &d.amd {
                m.insert("amd".into(), super::speech::amd_map(r).into());
            }
            Ok(m)
        }
        other => err(format!("dial: unexpected reply {other:?}")),
    }
}

fn discard_recording(id: &str) -> Res<()> {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return err(format!("discard_recording: {id:?} is not a recording id"));
    }
    request_done(CallRequest::DiscardRecording(id.to_string()))
}

fn hangup(cause: Option<INT>) -> Res<()> {
    let cause = match cause {
        None => None,
        Some(c @ 400..=699) => Some(c as u16),
        Some(c) => return err(format!("hangup: cause {c} is not a SIP status 400-699")),
    };
    request_done(CallRequest::Hangup { cause })?;
    terminate(END_HANGUP)
}

fn log_line(parts: &[&Dynamic]) -> Res<()> {
    let line = parts
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    request_done(CallRequest::Log(line))
}

/// Registers every verb on `engine`.
pub fn register(engine: &mut Engine) {
    let empty = Map::new;
    engine
        .register_fn("answer", || request_done(CallRequest::Answer))
        .register_fn("ring", || request_done(CallRequest::Ring))
        .register_fn("early_media", || request_done(CallRequest::EarlyMedia))
        .register_fn("hangup", || hangup(None))
        .register_fn("hangup", |c: INT| hangup(Some(c)))
        .register_fn("play", move |p: Dynamic| play(&p, &empty()))
        .register_fn("play", |p: Dynamic, o: Map| play(&p, &o))
        .register_fn("say_digits", |s: &str| say_digits(s))
        .register_fn("say_digits", |n: INT| {
            if n < 0 {
                return err("say_digits: negative numbers cannot be spoken");
            }
            say_digits(&n.to_string())
        })
        .register_fn("say_number", say_number)
        .register_fn("tone", |s: &str| tone(s))
        .register_fn("silence", |ms: INT| {
            request_done(CallRequest::Silence(wait("silence", ms)?))
        })
        .register_fn("sleep", |ms: INT| {
            request_done(CallRequest::Sleep(wait("sleep", ms)?))
        })
        .register_fn("collect", move || collect(&empty()))
        .register_fn("collect", |o: Map| collect(&o))
        .register_fn("record", move || record(&empty()))
        .register_fn("record", |o: Map| record(&o))
        .register_fn("conference", move |r: Dynamic| conference(&r, &empty()))
        .register_fn("conference", |r: Dynamic, o: Map| conference(&r, &o))
        .register_fn("send_dtmf", |s: &str| send_dtmf(s))
        .register_fn("send_dtmf", |n: INT| send_dtmf(&n.to_string()))
        .register_fn("transfer", |u: &str| transfer(u))
        .register_fn("originate", move |t: &str, o: Map| originate(t, &o))
        .register_fn("room_dial", move |r: &str, t: &str| {
            room_dial(r, t, &empty())
        })
        .register_fn("room_dial", |r: &str, t: &str, o: Map| room_dial(r, t, &o))
        .register_fn("dial", move |t: Dynamic| dial(&t, &empty()))
        .register_fn("dial", |t: Dynamic, o: Map| dial(&t, &o))
        .register_fn("discard_recording", |id: &str| discard_recording(id))
        .register_fn("stream", move |u: &str| stream(u, &empty()))
        .register_fn("stream", |u: &str, o: Map| stream(u, &o))
        .register_fn("stream_start", move |u: &str| stream_start(u, &empty()))
        .register_fn("stream_start", |u: &str, o: Map| stream_start(u, &o))
        .register_fn("stream_stop", || request_done(CallRequest::StreamStop))
        .register_fn("echo", || request_done(CallRequest::Echo { max: None }))
        .register_fn("echo", |ms: INT| {
            request_done(CallRequest::Echo {
                max: Some(wait("echo", ms)?),
            })
        })
        .register_fn("room_lock", |r: &str| {
            room_do("room_lock", r, RoomRequest::Lock)
        })
        .register_fn("room_unlock", |r: &str| {
            room_do("room_unlock", r, RoomRequest::Unlock)
        })
        .register_fn("room_end", |r: &str| {
            room_do("room_end", r, RoomRequest::End)
        })
        .register_fn("room_play", |r: &str, p: &str| {
            room_do("room_play", r, RoomRequest::Play(p.to_string()))
        })
        .register_fn("room_record", |r: &str| {
            room_do("room_record", r, RoomRequest::RecordStart)
        })
        .register_fn("room_stop_recording", |r: &str| {
            room_do("room_stop_recording", r, RoomRequest::RecordStop)
        })
        .register_fn("room_stream", move |r: &str, u: &str| {
            room_stream(r, u, &empty())
        })
        .register_fn("room_stream", |r: &str, u: &str, o: Map| {
            room_stream(r, u, &o)
        })
        .register_fn("room_stream_stop", |r: &str| {
            room_do("room_stream_stop", r, RoomRequest::StreamStop)
        })
        .register_fn("room_members", |r: &str| {
            room_do("room_members", r, RoomRequest::Members)
        })
        .register_fn("room_mute", |r: &str, m: INT| {
            member_do("room_mute", r, m, crate::live::MemberAction::Mute)
        })
        .register_fn("room_unmute", |r: &str, m: INT| {
            member_do("room_unmute", r, m, crate::live::MemberAction::Unmute)
        })
        .register_fn("room_deaf", |r: &str, m: INT| {
            member_do("room_deaf", r, m, crate::live::MemberAction::Deaf)
        })
        .register_fn("room_undeaf", |r: &str, m: INT| {
            member_do("room_undeaf", r, m, crate::live::MemberAction::Undeaf)
        })
        .register_fn("room_kick", |r: &str, m: INT| {
            member_do("room_kick", r, m, crate::live::MemberAction::Kick)
        })
        .register_fn("log", |a: Dynamic| log_line(&[&a]))
        .register_fn("log", |a: Dynamic, b: Dynamic| log_line(&[&a, &b]))
        .register_fn("log", |a: Dynamic, b: Dynamic, c: Dynamic| {
            log_line(&[&a, &b, &c])
        });
    super::speech::register(engine);
}

/// `print` and `debug` from a script: a log line of its call.
pub(crate) fn print(s: &str) {
    // A print after hangup has nowhere to go; the next step stops the script anyway.
    let _ = request_done(CallRequest::Log(s.to_string()));
}
