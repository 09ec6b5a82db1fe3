//! The SIP stack: message model, TCP framing, RFC 3261 transactions and dialogs (sans-IO),
//! blind transfer (REFER), digest authentication (client side, and callers' INVITEs checked
//! against the users), the endpoint core that ties them together (answering and placing
//! calls), the registration client, SIP trunks, TLS, WebSockets (RFC 7118), and the tokio
//! transport glue.

pub mod auth;
pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod framing;
pub mod guard;
pub mod ids;
pub mod message;
pub mod proxy;
pub mod refer;
pub mod register;
pub mod session_timer;
pub mod tls;
pub mod transaction;
pub mod transport;
pub mod trunks;
pub mod ws;
