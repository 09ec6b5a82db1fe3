//! A SIP over WebSocket client (RFC 7118) for tests: the upgrade over TCP or TLS, SIP
//! messages sent and read one per WebSocket message, and a caller wired over it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::server::{Stream, Wire};
use super::uac::Uac;

/// A WebSocket over TCP or TLS.
pub type SipSocket = WebSocketStream<Box<dyn Stream>>;

/// Opens a connection to `server` (TLS with `tls`) and asks for an upgrade at `path` with
/// the subprotocol `protocol` (none: no Sec-WebSocket-Protocol); the socket and our
/// address, or the library's error (an HTTP refusal among them).
pub async fn upgrade(
    server: SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
    path: &str,
    protocol: Option<&str>,
) -> (Result<SipSocket, tungstenite::Error>, SocketAddr) {
    let tcp = TcpStream::connect(server).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let (scheme, stream): (&str, Box<dyn Stream>) = match tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
            let s = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
                .await
                .expect("TLS handshake in time")
                .expect("TLS handshake");
            ("wss", Box::new(s))
        }
        None => ("ws", Box::new(tcp)),
    };
    let mut req = format!("{scheme}://{server}{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", HeaderValue::from_static("https://phone.test"));
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("upgrade answered in time");
    (r.map(|(ws, _)| ws), local)
}

/// A WebSocket to `server` with the `sip` subprotocol, the server's echo of it checked.
pub async fn connect(
    server: SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> (SipSocket, SocketAddr) {
    let (ws, local) = upgrade(server, tls, "/", Some("sip")).await;
    (ws.expect("WebSocket upgrade"), local)
}

/// Sends one SIP message as one text message.
pub async fn send(ws: &mut SipSocket, msg: Vec<u8>) {
    ws.send(Message::text(String::from_utf8(msg).unwrap()))
        .await
        .unwrap();
}

/// The next SIP message (text or binary); panics when the server closes the socket.
pub async fn receive(ws: &mut SipSocket) -> Vec<u8> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Close(f))) => panic!("the server closed the WebSocket: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the WebSocket ended: {other:?}"),
        }
    }
}

/// The next SIP message as text, within 5 s.
pub async fn receive_text(ws: &mut SipSocket) -> String {
    let m = tokio::time::timeout(Duration::from_secs(5), receive(ws))
        .await
        .expect("a SIP message within 5 s");
    String::from_utf8(m).unwrap()
}

/// A caller over a WebSocket to `server` (WSS with `tls`); its Via says WS or WSS.
pub async fn wire_ws(server: SocketAddr, tls: Option<&tokio_rustls::TlsConnector>) -> (Wire, Uac) {
    let (ws, local) = connect(server, tls).await;
    let mut uac = Uac::new(local, server, true);
    uac.via = Some(if tls.is_some() { "WSS" } else { "WS" });
    (Wire::Ws(Box::new(ws)), uac)
}
