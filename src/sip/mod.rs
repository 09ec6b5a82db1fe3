//! The SIP stack: message model, TCP framing, RFC 3261 transactions and dialogs (sans-IO),
//! the endpoint core that ties them together, and the tokio transport glue.

pub mod message;
pub mod transaction;
