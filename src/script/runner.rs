//! Running one call's script on its own thread, talking to the async call task by channels.
//!
//! The script blocks on every verb; the call task never does. A [`ChannelPort`] sends each
//! [`CallRequest`] to the call task as a [`ScriptRequest`] and waits for its reply. When the
//! call ends, the call task calls [`ScriptHandle::hangup`] (or just drops the request
//! channel): the verb in flight fails, and a script busy computing is stopped by the
//! engine's progress check at its next step.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Map, Scope, AST};
use tokio::sync::{mpsc, oneshot};

use super::api::{self, CallGone, CallPort, CallReply, CallRequest};
use super::engine::ScriptError;

/// Stack of a script thread. Reserved, not committed: a script uses a few pages unless it
/// recurses, and the call-depth limit keeps recursion well inside this.
const SCRIPT_STACK: usize = 8 << 20;

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
    let result = engine.run_ast_with_scope(&mut scope, ast);
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
    ScriptOutcome::Error(ScriptError::file("script", "the script thread died"))
}

/// Starts `ast` for one call on a thread of its own.
pub fn spawn_script(
    ast: Arc<AST>,
    engine: Arc<Engine>,
    info: CallInfo,
    port: Box<dyn CallPort>,
) -> ScriptHandle {
    let hangup = Arc::new(AtomicBool::new(false));
    let (tx, done) = oneshot::channel();
    let flag = hangup.clone();
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name("script".into())
        .stack_size(SCRIPT_STACK)
        .spawn(move || {
            let _entered = span.enter();
            let outcome = run_script(&engine, &ast, &info, port, flag);
            match &outcome {
                ScriptOutcome::Finished => tracing::debug!("script finished"),
                ScriptOutcome::Error(e) => tracing::warn!(error = %e, "script error"),
                ScriptOutcome::Stopped(c) => tracing::info!(cause = ?c, "script stopped"),
            }
            let _ = tx.send(outcome);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a script thread");
    }
    ScriptHandle { hangup, done }
}

/// A script's request as the call task receives it.
#[derive(Debug)]
pub struct ScriptRequest {
    /// What the script asks.
    pub request: CallRequest,
    reply: oneshot::Sender<CallReply>,
}

impl ScriptRequest {
    /// Answers the script; dropping the request instead tells it the call is gone.
    pub fn reply(self, reply: CallReply) {
        let _ = self.reply.send(reply);
    }

    /// The request and the means to answer it, for a call task that keeps the answer for
    /// later (a `collect` answers when the caller is done).
    pub fn into_parts(self) -> (CallRequest, Replier) {
        (self.request, Replier(self.reply))
    }
}

/// Answers one script request; dropping it tells the script the call is gone.
#[derive(Debug)]
pub struct Replier(oneshot::Sender<CallReply>);

impl Replier {
    /// Answers the script.
    pub fn send(self, reply: CallReply) {
        let _ = self.0.send(reply);
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
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(ScriptRequest { request, reply })
            .map_err(|_| CallGone)?;
        rx.blocking_recv().map_err(|_| CallGone)
    }
}
