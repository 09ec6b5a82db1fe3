//! SIP over WebSocket (RFC 7118) on listeners of their own, `ws://` and `wss://` (the latter
//! with the certificate of the SIP TLS listener): the HTTP upgrade (path `/`, subprotocol
//! `sip` required and echoed, the Origin logged but not checked), then one SIP message per
//! WebSocket message, text or binary, each way; a double-CRLF keep-alive gets its CRLF
//! (RFC 5626 §3.5.1). A message over the size limit closes the connection with 1009 and a
//! reason. The connection is the flow (§5): the answers and our in-dialog requests go back
//! over it, and once it closes nothing can reach the peer, so the transport glue ends the
//! calls it carried.

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

/// A keep-alive ping (RFC 5626 §3.5.1: a double CRLF) and the single CRLF that answers it.
const KEEP_ALIVE_PING: &[u8] = b"\r\n\r\n";
const KEEP_ALIVE_PONG: &str = "\r\n";

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
    // The error type is tungstenite's: an HTTP response, however large.
    #[allow(clippy::result_large_err)]
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
                    Some(Ok(Message::Close(_))) => {
                        // The library has queued the closing handshake's answer: send it.
                        let _ = tokio::time::timeout(UPGRADE_TIMEOUT, ws.flush()).await;
                        break;
                    }
                    None => break,
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
                if bytes == KEEP_ALIVE_PING {
                    // SIP.js keeps its socket alive this way and waits for the pong.
                    if ws.send(Message::text(KEEP_ALIVE_PONG)).await.is_err() {
                        break;
                    }
                    continue;
                }
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

    use crate::sip::dialog::Transport;
    use crate::sip::endpoint::{EndReason, Endpoint, EndpointConfig, Event};
    use crate::sip::ids::Ids;
    use std::time::Instant;

    fn peer(addr: &str) -> Peer {
        Peer {
            transport: Transport::Ws,
            addr: addr.parse().unwrap(),
        }
    }

    /// A request as a browser phone sends it: `.invalid` sent-by, no Content-Length.
    fn request(method: &str, n: u32, extra: &str) -> Vec<u8> {
        format!(
            "{method} sip:echo@127.0.0.1:8080;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/WS h7kjh12.invalid;branch=z9hG4bK{method}{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a{n}\r\n\
             To: <sip:echo@127.0.0.1>{extra}\r\nCall-ID: ws{n}\r\nCSeq: 1 {method}\r\n\
             Contact: <sip:alice@h7kjh12.invalid;transport=ws>\r\n\r\n"
        )
        .into_bytes()
    }

    fn sent(ep: &mut Endpoint) -> Vec<(Peer, String)> {
        std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| (t.peer, String::from_utf8(t.bytes).unwrap()))
            .collect()
    }

    /// An answered call from `from`: its handle.
    fn answered_call(
        ep: &mut Endpoint,
        now: Instant,
        from: Peer,
        n: u32,
    ) -> crate::sip::endpoint::CallHandle {
        ep.handle_message(now, from, &request("INVITE", n, ""));
        let call = match ep.poll_event() {
            Some(Event::Incoming { call, .. }) => call,
            other => panic!("{other:?}"),
        };
        ep.answer(now, call, b"v=0\r\n".to_vec()).unwrap();
        let ok = sent(ep).pop().unwrap();
        assert_eq!(ok.0, from, "answered over the flow the INVITE came on");
        let to =
            ok.1.lines()
                .find(|l| l.starts_with("To:"))
                .unwrap()
                .to_string();
        let ack = String::from_utf8(request("ACK", n, ""))
            .unwrap()
            .replace("To: <sip:echo@127.0.0.1>", &to);
        ep.handle_message(now, from, ack.as_bytes());
        assert!(matches!(ep.poll_event(), Some(Event::Confirmed { .. })));
        call
    }

    #[test]
    fn a_websocket_peer_is_answered_on_its_flow_and_its_calls_end_when_it_closes() {
        let now = Instant::now();
        let mut ep = Endpoint::with_ids(
            EndpointConfig {
                timers: Default::default(),
                local_addr: "127.0.0.1:5060".parse().unwrap(),
                user_agent: "t".into(),
            },
            Ids::with_seed(5),
        );
        ep.set_listener_port(Transport::Ws, 8080);
        let a = peer("127.0.0.1:40000");
        ep.handle_message(now, a, &request("OPTIONS", 1, ""));
        let out = sent(&mut ep);
        assert_eq!(out.len(), 1);
        let (to, answer) = &out[0];
        assert_eq!(*to, a);
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        // The unreachable sent-by is kept; where the request really came from is added.
        assert!(
            answer.contains(
                "Via: SIP/2.0/WS h7kjh12.invalid;branch=z9hG4bKOPTIONS1;received=127.0.0.1;rport=40000\r\n"
            ),
            "{answer}"
        );
        assert!(
            answer.contains("<sip:switchboard@127.0.0.1:8080;transport=ws>"),
            "{answer}"
        );

        let first = answered_call(&mut ep, now, a, 2);
        let b = peer("127.0.0.1:40001");
        let second = answered_call(&mut ep, now, b, 3);
        // Our BYE goes over the flow too, saying WS and our WebSocket port.
        ep.hangup(now, second).unwrap();
        let (to, bye) = sent(&mut ep).pop().unwrap();
        assert_eq!(to, b);
        assert!(
            bye.to_ascii_lowercase()
                .starts_with("bye sip:alice@h7kjh12.invalid;transport=ws sip/2.0\r\n"),
            "{bye}"
        );
        assert!(bye.contains("Via: SIP/2.0/WS 127.0.0.1:8080;"), "{bye}");

        assert!(matches!(
            ep.poll_event(),
            Some(Event::Ended { call, reason: EndReason::LocalBye }) if call == second
        ));
        // The first peer's socket closes: its call ends, nothing is sent, the other call's
        // BYE is still waiting for its answer.
        ep.flow_closed(now, a);
        match ep.poll_event() {
            Some(Event::Ended { call, reason }) => {
                assert_eq!((call, reason), (first, EndReason::Timeout));
            }
            other => panic!("{other:?}"),
        }
        assert!(sent(&mut ep).is_empty());
        assert_eq!(ep.call_count(), 1);
        // Then the second's: its BYE fails at once instead of at Timer F.
        ep.flow_closed(now, b);
        assert_eq!(ep.call_count(), 0);
        assert!(ep.hangup(now, first).is_err());
    }
}
