//! The media engine: it owns the media workers, their legs, the conference rooms those legs
//! are in and their tick. It sits above `media` (legs, codecs) and `conference` (rooms), and
//! gives the conference registry the workers it places rooms on.
//!
//! The tick is socket-free ([`worker`], over a [`MediaIo`]); the worker threads, their
//! [`MediaClock`] schedule and the real sockets ([`SocketIo`], or one io_uring per worker,
//! `uring::UringIo`) are thin glue around it.

pub mod clock;
pub mod io;
mod thread;
#[cfg(target_os = "linux")]
pub mod uring;
pub mod worker;

pub use clock::{MediaClock, TickStart};
pub use io::{Datagram, IoMode, LegSockets, MediaIo, SocketIo};
pub use thread::{BridgeError, LegHandle, LegSender, MediaEngine, MoveError};
pub use worker::{Worker, WorkerStats};

#[cfg(test)]
mod bridge_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
#[cfg(target_os = "linux")]
mod uring_tests;
