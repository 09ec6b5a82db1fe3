//! Calls: what a call is and does, above the SIP protocol core and the media engine.
//!
//! - [`core`]: the sans-IO call core — the caller's INVITE, its media legs, the script's
//!   requests carried out one at a time, timers — driven with `now` and drained of actions;
//! - [`verbs`]: how the core carries out each script verb;
//! - [`note`]: the steps a call reports (transcripts, `call_step` events);
//! - `speech`: the speech verbs (`say`, `listen`, `amd`, `wait_for_beep`) and the caller's ear;
//! - [`task`]: the live call's tokio task, thin glue between the core and the SIP
//!   transport, the media engine, rooms, recordings and the event bus;
//! - [`transfer`]: the target a script hands a blind transfer;
//! - [`webrtc`]: a WebRTC leg's ICE and DTLS, run beside the leg off the media tick;
//! - [`whip`]: calls offered over HTTP (WHIP style), each a call like an INVITE's.
//!
//! The simulator (`crate::script::simulate`) drives the same core with a virtual caller and
//! a virtual clock, so a script behaves the same on a phone and in a simulation.

pub mod core;
pub mod dial;
pub mod note;
pub mod outbound;
mod speech;
pub mod task;
mod transfer;
mod verbs;
pub mod webrtc;
pub mod whip;

pub use self::core::{
    Action, CallCore, CoreConfig, LegId, MediaAction, Outcome, PlaySpec, SipAction, Work,
};
pub use dial::{
    Dial, DialOutcome, DialRequest, DialResult, Originate, OriginateError, OriginateFlow, Ringback,
};
pub use note::{HangupCause, Note};
pub use outbound::{OutboundPolicy, OutboundSlots};
pub use task::{originate, spawn, CallContext};
pub use transfer::TransferTarget;

#[cfg(test)]
mod tests;
