//! SIP over WebSocket (RFC 7118) on listeners of their own, `ws://` and `wss://` (the latter
//! with the certificate of the SIP TLS listener): the HTTP upgrade (path `/`, subprotocol
//! `sip` required and echoed, the Origin logged but not checked), then one SIP message per
//! WebSocket message, text or binary, each way. A message over the size limit closes the
//! connection with 1009 and a reason. The connection is the flow (§5): the answers and our
//! in-dialog requests go back over it, and once it closes nothing can reach the peer, so
//! the transport glue ends the calls it carried.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::dialog::Peer;
use super::transport::{announce, FromNet};

/// The WebSocket subprotocol of SIP (RFC 7118 §4.1).
pub const SUBPROTOCOL: &str = "sip";

/// The only path upgraded.
pub const PATH: &str = "/";

/// How long the HTTP upgrade may take once the connection (and its TLS) is up.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upgrade request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// A path other than [`PATH`].
    #[error("no WebSocket endpoint at {0}")]
    NotFound(String),
    /// `sip` is not among the subprotocols the client offers.
    #[error("the WebSocket subprotocol \"sip\" is required (RFC 7118)")]
    NoSipSubprotocol,
}

impl UpgradeRefusal {
    /// The HTTP status the refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeRefusal::NotFound(_) => 404,
            UpgradeRefusal::NoSipSubprotocol => 400,
        }
    }
}

/// Judges an upgrade request by its path and its `Sec-WebSocket-Protocol` values (one or
/// several headers, each a comma-separated list).
pub fn check_upgrade<'a>(
    path: &str,
    protocols: impl IntoIterator<Item = &'a str>,
) -> Result<(), UpgradeRefusal> {
    if path != PATH {
        return Err(UpgradeRefusal::NotFound(path.to_string()));
    }
    // Subprotocol names are compared as sent (RFC 6455 §4.1: case-sensitive).
    let offered = protocols
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return Err(UpgradeRefusal::NoSipSubprotocol);
    }
    Ok(())
}

/// The limits of a connection: a message or frame over `max` bytes is an error at once,
/// before its payload is read.
fn config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Upgrades an accepted connection (TCP, or TLS already handshaken) and serves it until it
/// closes; `peer` says WS or WSS and the remote address.
pub(super) async fn serve<S>(stream: S, peer: Peer, to_core: mpsc::Sender<FromNet>, max: usize)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    let callback = move |req: &Request, mut resp: Response| {
        let origin = req
            .headers()
            .get("origin")
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        let protocols = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok());
        match check_upgrade(req.uri().path(), protocols) {
            Ok(()) => {
                tracing::debug!(%addr, origin, "SIP WebSocket opened");
                resp.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(SUBPROTOCOL),
                );
                Ok(resp)
            }
            Err(why) => {
                tracing::info!(%addr, origin, reason = %why, "refused a WebSocket upgrade");
                let mut refusal = ErrorResponse::new(Some(why.to_string()));
                *refusal.status_mut() =
                    StatusCode::from_u16(why.status()).unwrap_or(StatusCode::BAD_REQUEST);
                Err(refusal)
            }
        }
    };
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config(max)));
    let ws = match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "WebSocket upgrade failed");
            return;
        }
        Err(_) => {
            tracing::info!(%addr, "WebSocket upgrade not done in time");
            return;
        }
    };
    if let Some((id, w_rx)) = announce(peer, &to_core).await {
        connection(ws, peer, id, w_rx, to_core, max).await;
    }
}

/// A SIP message as a WebSocket message: text when it is UTF-8 (what browsers' stacks
/// expect), else binary (RFC 7118 §5.1 allows both).
fn frame(bytes: Vec<u8>) -> Message {
    match String::from_utf8(bytes) {
        Ok(text) => Message::text(text),
        Err(e) => Message::binary(e.into_bytes()),
    }
}

/// Hands each WebSocket message to the core as one SIP message and writes what `w_rx`
/// brings, until either side closes.
async fn connection<S>(
    mut ws: WebSocketStream<S>,
    peer: Peer,
    id: u64,
    mut w_rx: mpsc::UnboundedReceiver<Vec<u8>>,
    to_core: mpsc::Sender<FromNet>,
    max: usize,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    loop {
        tokio::select! {
            out = w_rx.recv() => match out {
                Some(bytes) => {
                    if let Err(e) = ws.send(frame(bytes)).await {
                        tracing::debug!(%addr, error = %e, "WebSocket write failed");
                        break;
                    }
                }
                None => break,
            },
            got = ws.next() => {
                let bytes = match got {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    // Pings are answered by the library; pongs need nothing.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        tracing::info!(%addr, error = %e, "closing a WebSocket that sent an oversized message");
                        let reason = format!("SIP message over {max} bytes");
                        let close = CloseFrame { code: CloseCode::Size, reason: reason.into() };
                        let _ = tokio::time::timeout(UPGRADE_TIMEOUT, ws.close(Some(close))).await;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "WebSocket read failed");
                        break;
                    }
                };
                if to_core.send(FromNet::Message(peer, bytes)).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to_core.send(FromNet::Closed(peer, id)).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_upgrade_needs_the_root_path_and_the_sip_subprotocol() {
        assert_eq!(check_upgrade("/", ["sip"]), Ok(()));
        // Among others, in one header or several, with spaces.
        assert_eq!(check_upgrade("/", ["chat, sip"]), Ok(()));
        assert_eq!(check_upgrade("/", ["chat", " sip "]), Ok(()));
        let missing = check_upgrade("/", ["chat, sips"]).unwrap_err();
        assert_eq!(missing, UpgradeRefusal::NoSipSubprotocol);
        assert_eq!(missing.status(), 400);
        assert_eq!(
            check_upgrade("/", []),
            Err(UpgradeRefusal::NoSipSubprotocol)
        );
        // Names are case-sensitive.
        assert_eq!(
            check_upgrade("/", ["SIP"]),
            Err(UpgradeRefusal::NoSipSubprotocol)
        );
        let elsewhere = check_upgrade("/ws", ["sip"]).unwrap_err();
        assert_eq!(elsewhere.status(), 404);
    }

    #[test]
    fn utf8_goes_as_text_and_anything_else_as_binary() {
        assert!(matches!(
            frame(b"OPTIONS sip:a SIP/2.0\r\n\r\n".to_vec()),
            Message::Text(_)
        ));
        assert!(matches!(frame(vec![0xff, 0xfe]), Message::Binary(_)));
    }
}
