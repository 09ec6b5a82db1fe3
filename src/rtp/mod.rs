//! RTP: media port allocation, packets, per-leg sessions, jitter buffering.

pub mod ports;
