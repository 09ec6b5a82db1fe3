//! switchboard: a SIP media server — conference rooms, Rhai IVR call flows, recording.
//!
//! The library holds everything; `main.rs` only parses flags and calls [`run`].

pub mod api;
pub mod call;
pub mod cdr;
pub mod conference;
pub mod config;
pub mod drain;
pub mod engine;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod live;
pub mod media;
pub mod metrics;
pub mod rtp;
pub mod script;
pub mod sdp;
pub mod sip;
pub mod speech;
pub mod stream;
pub mod webhook;
pub mod webrtc;

mod server;

pub use config::Config;
pub use error::Error;
pub use server::{run, run_with_ready, Ready};
