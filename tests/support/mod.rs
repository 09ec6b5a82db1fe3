//! Test clients shared by the integration tests.
#![allow(dead_code)]

pub mod rtp;
pub mod uac;
