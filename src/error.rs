//! The top-level error of the server and its start-up.

/// Anything that stops the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Scripts that do not compile (each `file:line:column: message`), or a dialplan rule
    /// naming a script that is not there.
    #[error("scripts refused:\n{}", .0.join("\n"))]
    Scripts(Vec<String>),
}
