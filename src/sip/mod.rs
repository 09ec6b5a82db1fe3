//! The SIP stack: message model, TCP framing, RFC 3261 transactions and dialogs (sans-IO),
//! blind transfer (REFER), the endpoint core that ties them together, and the tokio transport
//! glue.

pub mod dialog;
pub mod endpoint;
pub mod framing;
pub mod guard;
pub mod ids;
pub mod message;
pub mod refer;
pub mod session_timer;
pub mod transaction;
pub mod transport;
