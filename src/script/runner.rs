//! Running calls' scripts as coroutines on a small pool of threads, talking to the async
//! call tasks by channels.
//!
//! A script runs on a stackful coroutine ([`corosensei`]) of its own with a small stack, on
//! one of a few pool threads ([`ScriptPool`]). A verb sends its [`CallRequest`] to the call
//! task as a [`ScriptRequest`] and suspends the coroutine; the reply (or the call task
//! dropping it: the call is gone) puts the coroutine back in its thread's ready queue. A
//! waiting script thus holds a few pages of stack and its heap, no thread. A script busy
//! computing yields to the others on its thread every [`YIELD_EVERY`] operations, and is
//! stopped by the engine's limits or, once [`ScriptHandle::hangup`] is called, by the
//! progress check at its next step. A panic in native code ends only the script it ran in.
//!
//! [`run_script`] still runs a script on the calling thread (the simulator does), and a
//! [`ChannelPort`] used outside the pool blocks its thread as before.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Scope, AST};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::api::{self, CallGone, CallPort, CallReply, CallRequest};
use super::engine::ScriptError;

/// Operations between two yields of a busy script to the others on its thread (a multiple
/// of the engine's hangup check): a third of a millisecond of `loop {}`, which runs about
/// 200 operations a microsecond, and some milliseconds of heavier operations.
pub const YIELD_EVERY: u64 = 1 << 16;

// Stack a script needs, from the engine's nesting limits: Rhai has no stack probe of its
// own, so its limits must end the deepest script before the guard page does. Measured in a
// debug build (Rhai optimised, as the dev profile builds it; tests/script_pool.rs prints the
// measure): about 5 KB a call level, under 1 KB an expression level, 25 KB a call level
// whose body nests expressions as deep as allowed. Taken three times over.
/// Stack bytes besides the nesting: the pool thread's way into the engine, a verb, the port.
const STACK_BASE: usize = 64 << 10;
/// Stack bytes per level of nested function call.
const STACK_PER_CALL: usize = 16 << 10;
/// Stack bytes per level of nested expression.
const STACK_PER_EXPR: usize = 2 << 10;

/// A pool thread's own stack, where scripts run native work that needs deep stack.
const THREAD_STACK: usize = 8 << 20;

/// Finished scripts' stacks a pool thread keeps for the next ones.
const STACKS_KEPT: usize = 16;
/// Bytes at the top of a kept stack left resident: about what a script waiting in a verb
/// uses (giving them back only to fault them in again costs more than keeping them).
const KEPT_RESIDENT: usize = 32 << 10;
/// What a script knows about its call, visible to it as the constant `session`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallInfo {
    /// The From header (`"Alice" <sip:alice@example.com>;tag=…`).
    pub from: String,
    /// The dialled user (Request-URI user part).
    pub to: String,
    /// The Call-ID.
    pub call_id: String,
    /// Request headers of the INVITE, by lower-case name (repeated headers joined by ", ").
    pub headers: BTreeMap<String, String>,
    /// Dialplan variables.
    pub vars: BTreeMap<String, String>,
    /// The user the caller authenticated as; empty when the rule asks for none.
    pub auth_user: String,
    /// A call we placed (originate), not one we answered.
    pub outbound: bool,
    /// Answering-machine detection runs before the script, its result in `session.amd`.
    pub amd: bool,
}

impl CallInfo {
    /// The `call` object map a script sees.
    pub fn to_map(&self) -> Map {
        let strings = |m: &BTreeMap<String, String>| -> Map {
            m.iter()
                .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
                .collect()
        };
        let mut m = Map::new();
        m.insert("from".into(), self.from.clone().into());
        m.insert("to".into(), self.to.clone().into());
        m.insert("call_id".into(), self.call_id.clone().into());
        m.insert("headers".into(), strings(&self.headers).into());
        m.insert("vars".into(), strings(&self.vars).into());
        m.insert("auth_user".into(), self.auth_user.clone().into());
        let direction = if self.outbound { "outbound" } else { "inbound" };
        m.insert("direction".into(), direction.into());
        m
    }
}

/// Why a script was stopped rather than finishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    /// The caller hung up (or the call ended) while the script ran.
    Hangup,
    /// A limit was reached (operations, call depth, data size); the text says which.
    Limit(String),
}

/// How a call's script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// It ran to its end, or ended the call itself (`hangup`, `transfer`).
    Finished,
    /// A runtime error, located in its file; the call is ended.
    Error(ScriptError),
    /// Stopped from outside or by a limit.
    Stopped(StopCause),
}

/// Runs `ast` for one call on the current thread, with `port` as the call.
///
/// `hangup` is the call's flag: set it from anywhere and the script stops at its next step.
pub fn run_script(
    engine: &Engine,
    ast: &AST,
    info: &CallInfo,
    port: Box<dyn CallPort>,
    hangup: Arc<AtomicBool>,
) -> ScriptOutcome {
    let _installed = api::install(port, hangup.clone(), info.to_map());
    let mut scope = Scope::new();
    let result = match info.amd {
        true => super::speech::amd_first(),
        false => Ok(()),
    }
    .and_then(|()| engine.run_ast_with_scope(&mut scope, ast));
    let file = ast.source().unwrap_or("script");
    match result {
        Ok(()) => ScriptOutcome::Finished,
        Err(e) => outcome_of(file, &e, hangup.load(Ordering::Relaxed)),
    }
}

fn innermost(mut e: &EvalAltResult) -> &EvalAltResult {
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
            | EvalAltResult::ErrorInModule(_, inner, _) => e = inner,
            _ => return e,
        }
    }
}

fn outcome_of(file: &str, e: &EvalAltResult, hung_up: bool) -> ScriptOutcome {
    match innermost(e) {
        EvalAltResult::ErrorTerminated(token, _) => {
            let token = token.to_string();
            if token == api::END_HANGUP || token == api::END_TRANSFER {
                ScriptOutcome::Finished
            } else {
                ScriptOutcome::Stopped(StopCause::Hangup)
            }
        }
        inner @ (EvalAltResult::ErrorTooManyOperations(..)
        | EvalAltResult::ErrorStackOverflow(..)
        | EvalAltResult::ErrorDataTooLarge(..)
        | EvalAltResult::ErrorTooManyVariables(..)
        | EvalAltResult::ErrorTooManyModules(..)) => {
            let located = ScriptError::from_eval(file, e);
            let inner = super::engine::message_without_position(inner);
            tracing::debug!(error = %located, "script limit");
            ScriptOutcome::Stopped(StopCause::Limit(format!(
                "{inner} at {}:{}",
                located.file,
                located.line.unwrap_or(0)
            )))
        }
        // An error raised while the caller was leaving is the hangup, not a script bug.
        _ if hung_up => ScriptOutcome::Stopped(StopCause::Hangup),
        _ => ScriptOutcome::Error(ScriptError::from_eval(file, e)),
    }
}

/// A running script.
#[derive(Debug)]
pub struct ScriptHandle {
    hangup: Arc<AtomicBool>,
    done: oneshot::Receiver<ScriptOutcome>,
}

impl ScriptHandle {
    /// The caller is gone: the script stops at its next step.
    pub fn hangup(&self) {
        self.hangup.store(true, Ordering::Relaxed);
    }

    /// The flag [`ScriptHandle::hangup`] sets.
    pub fn hangup_flag(&self) -> Arc<AtomicBool> {
        self.hangup.clone()
    }

    /// Waits for the script to end.
    pub async fn join(self) -> ScriptOutcome {
        self.done.await.unwrap_or_else(|_| lost())
    }

    /// Waits for the script to end, blocking (not from inside an async runtime).
    pub fn join_blocking(self) -> ScriptOutcome {
        self.done.blocking_recv().unwrap_or_else(|_| lost())
    }
}

fn lost() -> ScriptOutcome {
    ScriptOutcome::Error(ScriptError::file(
        "script",
        "the script pool lost the script",
    ))
}

/// Starts `ast` for one call on the shared script pool.
pub fn spawn_script(
    ast: Arc<AST>,
    engine: Arc<Engine>,
    info: CallInfo,
    port: Box<dyn CallPort>,
) -> ScriptHandle {
    ScriptPool::global().spawn(ast, engine, info, port)
}

/// The pool threads of the shared pool when it starts; 0: [`default_threads`].
static GLOBAL_THREADS: AtomicUsize = AtomicUsize::new(0);
static GLOBAL: OnceLock<ScriptPool> = OnceLock::new();

/// Threads of the shared pool when not configured: the number of cores, at least 2.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// Sets the shared pool's threads (0: [`default_threads`]); false when the pool already
/// runs, with the threads it started with.
pub fn set_pool_threads(threads: usize) -> bool {
    GLOBAL_THREADS.store(threads, Ordering::Relaxed);
    GLOBAL.get().is_none_or(|p| p.threads() == resolve(threads))
}

fn resolve(threads: usize) -> usize {
    match threads {
        0 => default_threads(),
        n => n,
    }
}

/// What a suspended script is resumed with.
enum Resume {
    /// Its first run.
    Start,
    /// The reply to its request, or the call is gone.
    Reply(Result<CallReply, CallGone>),
    /// Its turn again after yielding.
    Continue,
}

/// Why a script suspended.
enum Suspend {
    /// Waiting for the reply to a request.
    Wait,
    /// Busy, letting the others on its thread run.
    Yield,
}

type ScriptCoroutine = Coroutine<Resume, Suspend, ScriptOutcome, DefaultStack>;

/// A script to start.
struct Job {
    ast: Arc<AST>,
    engine: Arc<Engine>,
    info: CallInfo,
    port: Box<dyn CallPort>,
    hangup: Arc<AtomicBool>,
    done: oneshot::Sender<ScriptOutcome>,
    span: tracing::Span,
}

/// What a pool thread is told.
enum Msg {
    Start(Box<Job>),
    /// A reply for the script with this id.
    Reply(u64, Result<CallReply, CallGone>),
    /// The pool is dropped: end once no script runs.
    Close,
}

/// Threads running scripts as coroutines.
#[derive(Debug)]
pub struct ScriptPool {
    threads: Vec<std_mpsc::Sender<Msg>>,
    next: AtomicUsize,
}

impl ScriptPool {
    /// Starts `threads` pool threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<ScriptPool> {
        let mut senders = Vec::with_capacity(threads.max(1));
        for _ in 0..threads.max(1) {
            let (tx, rx) = std_mpsc::channel();
            let own = tx.clone();
            std::thread::Builder::new()
                .name("script".into())
                .stack_size(THREAD_STACK)
                .spawn(move || Worker::new(own).run(rx))?;
            senders.push(tx);
        }
        Ok(ScriptPool {
            threads: senders,
            next: AtomicUsize::new(0),
        })
    }

    /// The pool [`spawn_script`] uses, started on first use with [`set_pool_threads`]'s
    /// number of threads.
    pub fn global() -> &'static ScriptPool {
        GLOBAL.get_or_init(|| {
            let threads = resolve(GLOBAL_THREADS.load(Ordering::Relaxed));
            ScriptPool::new(threads).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot start the script threads");
                ScriptPool {
                    threads: Vec::new(),
                    next: AtomicUsize::new(0),
                }
            })
        })
    }

    /// Its threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Starts `ast` for one call on one of the pool's threads.
    pub fn spawn(
        &self,
        ast: Arc<AST>,
        engine: Arc<Engine>,
        info: CallInfo,
        port: Box<dyn CallPort>,
    ) -> ScriptHandle {
        let hangup = Arc::new(AtomicBool::new(false));
        let (tx, done) = oneshot::channel();
        let job = Box::new(Job {
            ast,
            engine,
            info,
            port,
            hangup: hangup.clone(),
            done: tx,
            span: tracing::Span::current(),
        });
        if !self.threads.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
            // A send fails only if the thread is gone; the dropped job tells `join`.
            let _ = self.threads[i].send(Msg::Start(job));
        }
        ScriptHandle { hangup, done }
    }
}

impl Drop for ScriptPool {
    fn drop(&mut self) {
        for t in &self.threads {
            let _ = t.send(Msg::Close);
        }
    }
}

/// The stack a script on `engine` needs at its deepest: every call level may hold an
/// expression nested as deep as a function body allows.
fn stack_size(engine: &Engine) -> usize {
    let per_call = STACK_PER_CALL + STACK_PER_EXPR * engine.max_function_expr_depth();
    let size =
        STACK_BASE + per_call * engine.max_call_levels() + STACK_PER_EXPR * engine.max_expr_depth();
    size.next_multiple_of(64 << 10)
}

/// The running script on this thread: its yielder (set by the script itself as it enters
/// or re-enters its coroutine, cleared by the pool thread as it leaves) and its id.
#[derive(Clone, Copy)]
struct Current {
    yielder: *const Yielder<Resume, Suspend>,
    id: u64,
    /// The lowest usable address of its stack, above the guard page.
    stack_low: usize,
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
    /// The pool thread's own queue, for replies to its scripts.
    static QUEUE: std::cell::RefCell<Option<std_mpsc::Sender<Msg>>> =
        const { std::cell::RefCell::new(None) };
}

/// Suspends the running script until its pool thread resumes it; None outside the pool.
fn suspend(why: Suspend) -> Option<Resume> {
    let current = CURRENT.with(Cell::get)?;
    if matches!(why, Suspend::Wait) {
        // A wait is long: what the script touched deeper than where it waits (starting
        // up, parsing a verb's options) need not stay resident meanwhile.
        let here = 0u8;
        release_stack(current.stack_low, std::ptr::addr_of!(here) as usize);
    }
    let context = api::take_context();
    // SAFETY: `current` was set by the coroutine running now, from the yielder its body
    // received, which lives as long as that body; the pool thread clears it whenever the
    // coroutine stops running, so it is never read from another one.
    let input = unsafe { (*current.yielder).suspend(why) };
    CURRENT.with(|c| c.set(Some(current)));
    api::restore_context(context);
    Some(input)
}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    })
}

/// Gives the pages of a coroutine stack in `[low, below)` back to the system, keeping a page
/// under `below` for the context switch; they read as zeros when touched again.
fn release_stack(low: usize, below: usize) {
    let page = page_size();
    let high = (below & !(page - 1)).saturating_sub(page);
    if high > low {
        // SAFETY: the range lies inside a stack mapping of ours (private, anonymous,
        // writable), below every live frame of the coroutine that owns it; its contents
        // are dead and may be dropped.
        unsafe {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}

/// The lowest usable address of a coroutine stack.
fn stack_low(stack: &DefaultStack) -> usize {
    use corosensei::stack::Stack;
    stack.limit().get() + page_size()
}

/// Runs `f` on the pool thread's own stack rather than the script's small one, for native
/// work that needs deep stack (compiling a regex); on the calling stack outside the pool.
pub(crate) fn on_thread_stack<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match CURRENT.with(Cell::get) {
        // SAFETY: as in `suspend`, the yielder is the running coroutine's own.
        Some(current) => unsafe { (*current.yielder).on_parent_stack(f) },
        None => f(),
    }
}

/// Lets the other scripts on this pool thread run; nothing outside the pool.
pub(crate) fn yield_now() {
    let _ = suspend(Suspend::Yield);
}

/// A script on a pool thread.
struct Task {
    co: ScriptCoroutine,
    done: oneshot::Sender<ScriptOutcome>,
    span: tracing::Span,
    file: String,
    /// Its stack's size, to keep it for another script needing as much.
    size: usize,
}

/// One pool thread's scripts.
struct Worker {
    own: std_mpsc::Sender<Msg>,
    tasks: HashMap<u64, Task>,
    ready: VecDeque<(u64, Resume)>,
    /// Kept stacks and the size each was asked for.
    stacks: Vec<(usize, DefaultStack)>,
    next_id: u64,
    closing: bool,
}

impl Worker {
    fn new(own: std_mpsc::Sender<Msg>) -> Worker {
        Worker {
            own,
            tasks: HashMap::new(),
            ready: VecDeque::new(),
            stacks: Vec::new(),
            next_id: 0,
            closing: false,
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Msg>) {
        QUEUE.with(|q| *q.borrow_mut() = Some(self.own.clone()));
        loop {
            if self.ready.is_empty() {
                if self.closing && self.tasks.is_empty() {
                    return;
                }
                match rx.recv() {
                    Ok(m) => self.accept(m),
                    Err(_) => return,
                }
            }
            // Newcomers and replies take their place behind the scripts already ready.
            while let Ok(m) = rx.try_recv() {
                self.accept(m);
            }
            if let Some((id, input)) = self.ready.pop_front() {
                self.resume(id, input);
            }
        }
    }

    fn accept(&mut self, m: Msg) {
        match m {
            Msg::Start(job) => self.start(*job),
            Msg::Reply(id, reply) => {
                if self.tasks.contains_key(&id) {
                    self.ready.push_back((id, Resume::Reply(reply)));
                }
            }
            Msg::Close => self.closing = true,
        }
    }

    fn start(&mut self, job: Job) {
        let Job {
            ast,
            engine,
            info,
            port,
            hangup,
            done,
            span,
        } = job;
        let size = stack_size(&engine);
        let stack = match self.stacks.iter().position(|s| s.0 == size) {
            Some(i) => Ok(self.stacks.swap_remove(i).1),
            None => DefaultStack::new(size),
        };
        let file = ast.source().unwrap_or("script").to_string();
        let stack = match stack {
            Ok(s) => s,
            Err(e) => {
                let _entered = span.enter();
                tracing::error!(error = %e, "cannot map a script stack");
                let _ = done.send(ScriptOutcome::Error(ScriptError::file(
                    file,
                    format!("cannot start the script: {e}"),
                )));
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let low = stack_low(&stack);
        let co = Coroutine::with_stack(stack, move |yielder: &Yielder<Resume, Suspend>, _| {
            CURRENT.with(|c| {
                c.set(Some(Current {
                    yielder: yielder as *const _,
                    id,
                    stack_low: low,
                }))
            });
            run_script(&engine, &ast, &info, port, hangup)
        });
        self.tasks.insert(
            id,
            Task {
                co,
                done,
                span,
                file,
                size,
            },
        );
        self.ready.push_back((id, Resume::Start));
    }

    fn resume(&mut self, id: u64, input: Resume) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let result = {
            let _entered = task.span.enter();
            catch_unwind(AssertUnwindSafe(|| task.co.resume(input)))
        };
        CURRENT.with(|c| c.set(None));
        let outcome = match result {
            Ok(CoroutineResult::Yield(Suspend::Yield)) => {
                self.ready.push_back((id, Resume::Continue));
                return;
            }
            Ok(CoroutineResult::Yield(Suspend::Wait)) => return,
            Ok(CoroutineResult::Return(outcome)) => outcome,
            Err(panic) => {
                // Whatever the script's call had on this thread went with the unwinding.
                drop(api::take_context());
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                ScriptOutcome::Error(ScriptError::file(
                    task.file.clone(),
                    format!("internal error: {what}"),
                ))
            }
        };
        let Some(task) = self.tasks.remove(&id) else {
            return;
        };
        {
            let _entered = task.span.enter();
            match &outcome {
                ScriptOutcome::Finished => tracing::debug!("script finished"),
                ScriptOutcome::Error(e) => tracing::warn!(error = %e, "script error"),
                ScriptOutcome::Stopped(c) => tracing::info!(cause = ?c, "script stopped"),
            }
        }
        let _ = task.done.send(outcome);
        if task.co.done() && self.stacks.len() < STACKS_KEPT {
            let stack = task.co.into_stack();
            // A kept stack holds only the top pages, which the next script uses anyway.
            use corosensei::stack::Stack;
            release_stack(stack_low(&stack), stack.base().get() - KEPT_RESIDENT);
            self.stacks.push((task.size, stack));
        }
    }
}

/// Wakes a suspended script with its reply; dropped unsent, with "the call is gone".
#[derive(Debug)]
struct Wake {
    queue: std_mpsc::Sender<Msg>,
    id: u64,
    armed: bool,
}

impl Wake {
    /// The running script's, when it runs on a pool thread.
    fn current() -> Option<Wake> {
        let current = CURRENT.with(Cell::get)?;
        let queue = QUEUE.with(|q| q.borrow().clone())?;
        Some(Wake {
            queue,
            id: current.id,
            armed: true,
        })
    }

    fn send(mut self, reply: Result<CallReply, CallGone>) {
        self.armed = false;
        let _ = self.queue.send(Msg::Reply(self.id, reply));
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.queue.send(Msg::Reply(self.id, Err(CallGone)));
        }
    }
}

/// Where a script's reply goes.
#[derive(Debug)]
enum ReplyTo {
    /// A script blocking its thread.
    Thread(oneshot::Sender<CallReply>),
    /// A script suspended on the pool.
    Pool(Wake),
}

impl ReplyTo {
    fn send(self, reply: CallReply) {
        match self {
            ReplyTo::Thread(tx) => {
                let _ = tx.send(reply);
            }
            ReplyTo::Pool(w) => w.send(Ok(reply)),
        }
    }
}

/// A script's request as the call task receives it.
///
/// Boxed, so the request channel (whose blocks hold 32 messages) costs little per call.
#[derive(Debug)]
pub struct ScriptRequest(Box<(CallRequest, ReplyTo)>);

impl ScriptRequest {
    fn new(request: CallRequest, reply: ReplyTo) -> ScriptRequest {
        ScriptRequest(Box::new((request, reply)))
    }

    /// What the script asks.
    pub fn request(&self) -> &CallRequest {
        &self.0 .0
    }

    /// Answers the script; dropping the request instead tells it the call is gone.
    pub fn reply(self, reply: CallReply) {
        self.0 .1.send(reply);
    }

    /// The request and the means to answer it, for a call task that keeps the answer for
    /// later (a `collect` answers when the caller is done).
    pub fn into_parts(self) -> (CallRequest, Replier) {
        let (request, reply) = *self.0;
        (request, Replier(reply))
    }
}

/// Answers one script request; dropping it tells the script the call is gone.
#[derive(Debug)]
pub struct Replier(ReplyTo);

impl Replier {
    /// Answers the script.
    pub fn send(self, reply: CallReply) {
        self.0.send(reply);
    }
}

/// A [`CallPort`] over channels to an async call task.
#[derive(Debug)]
pub struct ChannelPort {
    tx: mpsc::Sender<ScriptRequest>,
}

/// A port for [`spawn_script`] and the receiver the call task reads requests from.
pub fn channel_port() -> (ChannelPort, mpsc::Receiver<ScriptRequest>) {
    // One request is in flight at a time: the script waits for each reply.
    let (tx, rx) = mpsc::channel(1);
    (ChannelPort { tx }, rx)
}

impl CallPort for ChannelPort {
    fn request(&mut self, request: CallRequest) -> Result<CallReply, CallGone> {
        let Some(wake) = Wake::current() else {
            let (reply, rx) = oneshot::channel();
            self.tx
                .blocking_send(ScriptRequest::new(request, ReplyTo::Thread(reply)))
                .map_err(|_| CallGone)?;
            return rx.blocking_recv().map_err(|_| CallGone);
        };
        let mut request = ScriptRequest::new(request, ReplyTo::Pool(wake));
        loop {
            match self.tx.try_send(request) {
                Ok(()) => break,
                Err(TrySendError::Closed(r)) => {
                    if let (_, ReplyTo::Pool(mut w)) = *r.0 {
                        w.armed = false;
                    }
                    return Err(CallGone);
                }
                // Not while each request waits for its reply; should it happen, let the
                // call task take the last one first.
                Err(TrySendError::Full(r)) => {
                    request = r;
                    yield_now();
                }
            }
        }
        match suspend(Suspend::Wait) {
            Some(Resume::Reply(r)) => r,
            _ => Err(CallGone),
        }
    }
}

/// Runs `ast` to its end on a coroutine of `size` bytes of stack on this thread, answering
/// every request with `Done`: how it ended and the bytes of stack it touched at its deepest.
/// For measuring what the stack size must cover.
#[doc(hidden)]
pub fn measure_stack(
    engine: Arc<Engine>,
    ast: Arc<AST>,
    size: usize,
) -> std::io::Result<(ScriptOutcome, usize)> {
    use corosensei::stack::Stack;
    struct Done;
    impl CallPort for Done {
        fn request(&mut self, _: CallRequest) -> Result<CallReply, CallGone> {
            Ok(CallReply::Done)
        }
    }
    let stack = DefaultStack::new(size)?;
    let (base, limit) = (stack.base().get(), stack.limit().get());
    let mut co: ScriptCoroutine = Coroutine::with_stack(stack, move |yielder, _| {
        let current = Current {
            yielder: yielder as *const _,
            id: u64::MAX,
            stack_low: limit + page_size(),
        };
        CURRENT.with(|c| c.set(Some(current)));
        let hangup = Arc::new(AtomicBool::new(false));
        run_script(&engine, &ast, &CallInfo::default(), Box::new(Done), hangup)
    });
    let outcome = loop {
        let step = co.resume(Resume::Continue);
        CURRENT.with(|c| c.set(None));
        if let CoroutineResult::Return(o) = step {
            break o;
        }
    };
    // A fresh mapping reads as zeros: the lowest word written marks the deepest point.
    // The lowest page is the guard.
    let lowest = (limit + (64 << 10)..base)
        .step_by(8)
        // SAFETY: the coroutine is done and its stack still mapped and writable in
        // [limit, base); reading it races with nothing.
        .find(|&a| unsafe { std::ptr::read_volatile(a as *const u64) } != 0)
        .unwrap_or(base);
    drop(co);
    Ok((outcome, base - lowest))
}

/// The stack a script running on `engine` gets.
#[doc(hidden)]
pub fn script_stack_size(engine: &Engine) -> usize {
    stack_size(engine)
}
