//! Call flows as Rhai scripts.
//!
//! The script for a call is chosen by the dialled user ([`dialplan`]) and runs as a
//! coroutine on a small pool of threads ([`spawn_script`], [`runner`]). Every verb of the script API ([`api`]) is a
//! [`CallRequest`] to the call task, answered by a [`CallReply`]; the call task owns all
//! timers (`collect` timeouts included, specified in [`collect`]), so a script never holds
//! up media. Hanging up sets a flag the engine checks as the script runs, and limits on
//! operations, call depth and data sizes ([`ScriptLimits`]) stop a runaway script.
//!
//! The same request/reply boundary lets [`simulate`] run a flow against a scripted caller on
//! a virtual clock, which is how the shipped scripts in `scripts/` are tested.

pub mod api;
pub mod collect;
pub mod dialplan;
pub mod engine;
pub mod runner;
pub mod simulate;
pub mod speech;

#[cfg(test)]
mod speech_tests;
#[cfg(test)]
mod tests;

pub use api::{
    CallGone, CallPort, CallReply, CallRequest, ConferenceRequest, PlayRequest, RecordInfo,
    RecordRequest, RoomRequest,
};
pub use collect::{CollectAction, CollectOptions, Collector, PromptKind};
pub use engine::{
    build_engine, check_dir, compile_file, compile_source, ReloadReport, ScriptError, ScriptLimits,
    ScriptSet,
};
pub use runner::{
    channel_port, run_script, spawn_script, CallInfo, ChannelPort, Replier, ScriptHandle,
    ScriptOutcome, ScriptPool, ScriptRequest, StopCause,
};
pub use simulate::{parse_input, simulate, CallerStep, Simulator, Transcript, TranscriptLine};
