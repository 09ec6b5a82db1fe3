//! SIP over WebSocket (RFC 7118) against the real server on 127.0.0.1: a tokio-tungstenite
//! client over ws:// and wss:// (OPTIONS with a `.invalid` sent-by, REGISTER answered as
//! over TCP, an echo call with plain RTP measured back, a call to a protected rule with
//! digest, BYE either way), upgrades refused without the `sip` subprotocol or off `/`,
//! malformed and oversized messages, a connection closed mid-call; and JsSIP in headless
//! Chromium registering and sending OPTIONS over ws://.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::pki::Pki;
use support::rtp::{peak_tone_power, tone, RtpPeer};
use support::server::{answered_port, call, expect_server_bye, hang_up, start_with, Server, Wire};
use support::uac::{offer, Uac, UacState};
use support::ws::{connect, receive_text, send, upgrade, wire_ws};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// The server with a ws:// listener (and wss:// with `pki`'s certificate) on port 0.
async fn ws_server(
    rtp: (u16, u16),
    pki: Option<&Pki>,
    tweak: impl FnOnce(&mut switchboard::Config),
) -> Server {
    let cert = pki.map(|p| (p.cert(), p.key()));
    let server = start_with(rtp, move |c| {
        c.sip.ws_listen = "127.0.0.1:0".into();
        if let Some((cert, key)) = cert {
            c.sip.wss_listen = "127.0.0.1:0".into();
            c.sip.tls_cert = cert;
            c.sip.tls_key = key;
        }
        tweak(c);
    })
    .await;
    assert!(server.ws.is_some(), "Ready reports the ws listener");
    assert_eq!(server.wss.is_some(), pki.is_some());
    server
}

/// The line of header `name` (any case) in a message, or "".
fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    let name = format!("{}:", name.to_ascii_lowercase());
    msg.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&name))
        .unwrap_or("")
}

/// An out-of-dialog request as a browser phone sends it: a `.invalid` sent-by and Contact
/// host (RFC 7118 §5), and no Content-Length (the WebSocket message delimits it).
fn browser_request(method: &str, server: SocketAddr, via: &str, n: u32) -> Vec<u8> {
    format!(
        "{method} sip:ping@{server};transport=ws SIP/2.0\r\n\
         Via: SIP/2.0/{via} df7jal23ls0d.invalid;branch=z9hG4bK{method}{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=w{n}\r\nTo: <sip:ping@{server}>\r\n\
         Call-ID: {method}{n}-{}@test\r\nCSeq: {n} {method}\r\n\
         Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>;expires=60\r\n\r\n",
        fastrand::u64(..)
    )
    .into_bytes()
}

/// Sends `req` over a new TCP connection to `server` and reads the answer's status line.
async fn status_over_tcp(server: SocketAddr, req: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut framer = switchboard::sip::framing::StreamFramer::new(65535);
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        if let Some(m) = framer.next_message().unwrap() {
            let text = String::from_utf8(m).unwrap();
            return text.lines().next().unwrap_or("").to_string();
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        framer.push(&buf[..n]);
    }
    panic!("no whole answer");
}

/// OPTIONS and REGISTER from a browser-like client, then an echo call with a plain RTP/AVP
/// offer whose tone comes back, ended by the client's BYE.
async fn options_register_and_echo(server: &Server, addr: SocketAddr, tls: Option<&Pki>) {
    let connector = tls.map(Pki::connector);
    let (token, param) = match tls {
        Some(_) => ("WSS", "wss"),
        None => ("WS", "ws"),
    };
    let (mut ws, _) = connect(addr, connector.as_ref()).await;
    send(&mut ws, browser_request("OPTIONS", addr, token, 1)).await;
    let answer = receive_text(&mut ws).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    // Back over the socket it came on, though its Via names a host nobody can reach.
    let via = header(&answer, "Via");
    assert!(via.contains("df7jal23ls0d.invalid"), "{answer}");
    // ...and with the address the connection is from written in (RFC 3261 §18.2.1, RFC 3581).
    assert!(via.contains(";received=127.0.0.1;rport="), "{answer}");
    // Our Contact sends the phone back over this transport, to this listener.
    let contact = header(&answer, "Contact");
    assert!(
        contact.contains(&format!("@{addr};transport={param}>")),
        "{contact}"
    );
    // REGISTER: answered as over TCP.
    send(&mut ws, browser_request("REGISTER", addr, token, 2)).await;
    let registered = receive_text(&mut ws).await;
    let status = registered.lines().next().unwrap().to_string();
    let over_tcp = String::from_utf8(browser_request("REGISTER", server.sip, "TCP", 3))
        .unwrap()
        .replace("df7jal23ls0d.invalid", "127.0.0.1:9")
        .replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n");
    let over_tcp = status_over_tcp(server.sip, over_tcp.as_bytes()).await;
    assert_eq!(status, over_tcp);
    assert!(status.starts_with("SIP/2.0 405"), "{registered}");
    assert!(
        header(&registered, "Allow").contains("INVITE"),
        "{registered}"
    );
    drop(ws);

    let mut rtp = RtpPeer::bind().await;
    let (mut w, mut uac) = wire_ws(addr, connector.as_ref()).await;
    call(&mut w, &mut uac, "echo", rtp.port()).await;
    // The media stays plain RTP, on the server's address.
    let media = SocketAddr::new(addr.ip(), answered_port(&uac));
    rtp.expect_echo(media).await;
    hang_up(&mut w, &mut uac).await;
}

#[tokio::test]
async fn options_register_and_an_echo_call_over_ws_and_wss() {
    let pki = Pki::new();
    let server = ws_server((49100, 49199), Some(&pki), |_| {}).await;
    options_register_and_echo(&server, server.ws.unwrap(), None).await;
    options_register_and_echo(&server, server.wss.unwrap(), Some(&pki)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_bye_from_the_server_arrives_on_the_websocket() {
    // The call limit makes the server hang up about a second in.
    let server = ws_server((49200, 49299), None, |c| c.sip.max_call_secs = 1).await;
    let (mut w, mut uac) = wire_ws(server.ws.unwrap(), None).await;
    expect_server_bye(
        &mut w,
        &mut uac,
        "the server's BYE did not come over the socket",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_call_to_a_protected_rule_authenticates_over_ws() {
    use switchboard::sip::digest::{ClientAuth, Credentials};
    let server = ws_server((49300, 49399), None, |c| {
        let mut rule = support::scripts::rule("echo-auth", "echo", &[]);
        rule.auth = true;
        c.dialplan.insert(0, rule);
        c.users = vec![switchboard::sip::auth::UserConfig {
            name: "alice".into(),
            password: Some("wonderland".into()),
            ha1: None,
        }];
    })
    .await;
    let addr = server.ws.unwrap();
    let (mut w, mut uac) = wire_ws(addr, None).await;
    // Without credentials: 401 with a challenge, and no call.
    uac.invite(
        Instant::now(),
        "echo-auth",
        &offer("127.0.0.1", 40000, "sendrecv"),
    );
    let Wire::Ws(ws) = &mut w else { unreachable!() };
    let mut challenge = String::new();
    for m in uac.outbox.drain(..) {
        send(ws, m).await;
    }
    for _ in 0..5 {
        let m = receive_text(ws).await;
        uac.handle(Instant::now(), m.as_bytes());
        if m.starts_with("SIP/2.0 401") {
            challenge = m;
            break;
        }
    }
    assert!(!challenge.is_empty(), "no 401");
    assert_eq!(uac.state, UacState::Terminated);
    w.flush(&mut uac).await;
    let mut headers = rsipstack::sip::Headers::default();
    for l in challenge.lines() {
        if let Some(v) = l.strip_prefix("WWW-Authenticate: ") {
            headers.push(rsipstack::sip::Header::Other(
                "WWW-Authenticate".into(),
                v.to_string(),
            ));
        }
    }
    let mut client = ClientAuth::new(Credentials::password("alice", "wonderland"));
    client.on_challenge(&headers, false).unwrap();
    let uri = format!("sip:echo-auth@{addr}");
    let (name, value) = client
        .authorizations("INVITE", &uri, &[], "c0ffee")
        .into_iter()
        .next()
        .expect("an answer to the challenge");
    // The same socket, a new call with the answer: it goes through to the echo.
    let Wire::Ws(ws) = w else { unreachable!() };
    let mut w = Wire::Ws(ws);
    let mut again = Uac::new(uac.local, addr, true);
    again.via = Some("WS");
    again.invite_headers = format!("{name}: {value}\r\n");
    let mut rtp = RtpPeer::bind().await;
    call(&mut w, &mut again, "echo-auth", rtp.port()).await;
    let media = SocketAddr::new(addr.ip(), answered_port(&again));
    let back = rtp
        .exchange(media, &tone("700/700@-10", 600), Duration::from_millis(300))
        .await;
    assert!(
        peak_tone_power(&back, 700.0) > 0.9,
        "the authenticated call does not echo"
    );
    hang_up(&mut w, &mut again).await;
    server.stop().await;
}

#[tokio::test]
async fn an_upgrade_without_the_sip_subprotocol_or_off_the_root_is_refused() {
    let server = ws_server((49400, 49499), None, |_| {}).await;
    let addr = server.ws.unwrap();
    let refused = |r: Result<_, tungstenite::Error>| match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("not an HTTP refusal: {e}"),
        Ok(_) => panic!("upgraded"),
    };
    assert_eq!(refused(upgrade(addr, None, "/", None).await.0), 400);
    assert_eq!(refused(upgrade(addr, None, "/", Some("chat")).await.0), 400);
    assert_eq!(
        refused(upgrade(addr, None, "/sip", Some("sip")).await.0),
        404
    );
    // Among other subprotocols, `sip` is chosen and echoed (the client library checks).
    let (ws, _) = upgrade(addr, None, "/", Some("chat, sip")).await;
    let mut ws = ws.expect("upgraded with sip among others");
    send(&mut ws, browser_request("OPTIONS", addr, "WS", 1)).await;
    assert!(receive_text(&mut ws).await.starts_with("SIP/2.0 200 OK"));
    // A closing handshake of the client's is answered.
    ws.close(None).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the close answered within 5 s");
    assert!(
        matches!(answered, Some(Ok(Message::Close(_)))),
        "{answered:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_message_is_answered_and_an_oversized_one_closes_the_socket() {
    const MAX: usize = 4000;
    let server = ws_server((49500, 49599), None, |c| c.sip.max_message_bytes = MAX).await;
    let addr = server.ws.unwrap();
    let (mut ws, _) = connect(addr, None).await;
    // A Content-Length beyond the message's end: 400, and the socket stays open.
    let short = String::from_utf8(browser_request("OPTIONS", addr, "WS", 1))
        .unwrap()
        .replace("\r\n\r\n", "\r\nContent-Length: 10\r\n\r\nabc");
    send(&mut ws, short.into_bytes()).await;
    let answer = receive_text(&mut ws).await;
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");
    // A double-CRLF keep-alive gets its single CRLF, and nothing else.
    ws.send(Message::text("\r\n\r\n")).await.unwrap();
    assert_eq!(receive_text(&mut ws).await, "\r\n");
    // Binary messages are SIP too.
    ws.send(Message::binary(browser_request("OPTIONS", addr, "WS", 2)))
        .await
        .unwrap();
    assert!(receive_text(&mut ws).await.starts_with("SIP/2.0 200 OK"));
    // Just inside the limit: answered.
    let padded = |size: usize, n: u32| {
        let head = String::from_utf8(browser_request("OPTIONS", addr, "WS", n)).unwrap();
        let pad = size - head.len() - "X-Pad: \r\n".len();
        let head = head.replacen(
            "Max-Forwards",
            &format!("X-Pad: {}\r\nMax-Forwards", "p".repeat(pad)),
            1,
        );
        assert_eq!(head.len(), size);
        head
    };
    send(&mut ws, padded(MAX, 3).into_bytes()).await;
    assert!(receive_text(&mut ws).await.starts_with("SIP/2.0 200 OK"));
    // One byte over: the socket is closed with 1009 and a reason.
    send(&mut ws, padded(MAX + 1, 4).into_bytes()).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed within 5 s");
    let closed = match closed {
        Some(Ok(Message::Close(Some(f)))) => f,
        other => panic!("no close frame with a code: {other:?}"),
    };
    assert_eq!(closed.code, CloseCode::Size);
    assert!(closed.reason.contains(&MAX.to_string()), "{closed:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_closed_mid_call_ends_the_call_with_a_cdr() {
    let cdrs = std::env::temp_dir().join(format!("sb-ws-cdr-{}", fastrand::u64(..)));
    let dir = cdrs.clone();
    let server = ws_server((49600, 49699), None, move |c| c.cdr.dir = dir).await;
    let (mut w, mut uac) = wire_ws(server.ws.unwrap(), None).await;
    let mut rtp = RtpPeer::bind().await;
    call(&mut w, &mut uac, "echo", rtp.port()).await;
    let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    // A second of tone: under load the echo's first packets may come late.
    let back = rtp
        .exchange(
            media,
            &tone("1000/1000@-10", 1000),
            Duration::from_millis(500),
        )
        .await;
    assert!(peak_tone_power(&back, 1000.0) > 0.9, "the call was not up");
    let t0 = Instant::now();
    drop(w);
    // No BYE can come: the call ends when the socket closes, not by the media timeout (60 s).
    let cdr = support::cdr_of(&cdrs, &uac.call_id).await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(cdr["cause"], "timeout", "{cdr}");
    assert!(cdr["answered_at"].is_string(), "{cdr}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&cdrs);
}

/// JsSIP, a SIP stack we did not write, in headless Chromium over ws://: it registers (our
/// REGISTER answer reaches its registrator) and its OPTIONS gets 200.
#[tokio::test]
async fn jssip_in_chromium_registers_and_sends_options_over_ws() {
    let Some((driver, browser)) = support::browser::tools() else {
        return;
    };
    let server = ws_server((49700, 49799), None, |_| {}).await;
    let addr = server.ws.unwrap();
    let (_driver, driver_addr) = support::browser::start_chromedriver(&driver).await;
    let c = support::browser::session(driver_addr, &browser).await;
    // A page from our own loopback origin (the console's): JsSIP runs in it.
    support::browser::open_with_jssip(&c, &format!("http://{}/", server.http)).await;
    // Started here, read back below: what JsSIP reports lands in `window.sipOut`, and every
    // event it emits along the way in `window.sipLog` (shown when it does not finish).
    let script = format!(
        r#"
        window.sipOut = {{}};
        window.sipLog = [];
        const out = window.sipOut;
        const socket = new JsSIP.WebSocketInterface('ws://{addr}');
        const ua = new JsSIP.UA({{
            sockets: [socket], uri: 'sip:alice@127.0.0.1', register: true,
            register_expires: 60, connection_recovery_min_interval: 60,
        }});
        for (const ev of ['connecting', 'connected', 'disconnected', 'registered',
                          'unregistered', 'registrationFailed']) {{
            ua.on(ev, e => window.sipLog.push(ev + ' ' + (e && e.cause ? e.cause : '')));
        }}
        ua.on('registered', e => {{ out.registration = {{ code: e.response.status_code }}; }});
        ua.on('registrationFailed', e => {{
            out.registration = {{ code: e.response ? e.response.status_code : null, cause: e.cause }};
        }});
        ua.on('connected', () => {{
            const o = ua.sendOptions('sip:ping@{addr}');
            o.on('succeeded', e => {{
                out.options = {{ code: e.response.status_code, server: e.response.getHeader('Server') }};
            }});
            o.on('failed', e => {{ out.options = {{ failed: e.cause }}; }});
        }});
        window.sipUa = ua;
        ua.start();
        "#
    );
    c.execute(&script, vec![]).await.unwrap();
    let mut out = serde_json::Value::Null;
    for _ in 0..200 {
        out = c.execute("return window.sipOut;", vec![]).await.unwrap();
        if out.get("registration").is_some() && out.get("options").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = c.execute("return window.sipLog;", vec![]).await.unwrap();
    let _ = c.execute("window.sipUa.stop();", vec![]).await;
    let _ = c.close().await;
    // Our answers as JsSIP read them: OPTIONS 200 from us, REGISTER as over any transport.
    assert_eq!(out["options"]["code"], 200, "{out} {log}");
    assert_eq!(out["options"]["server"], "switchboard", "{out} {log}");
    assert_eq!(out["registration"]["code"], 405, "{out} {log}");
    server.stop().await;
}

#[tokio::test]
async fn websockets_count_against_the_per_source_cap_with_tcp() {
    let server = ws_server((49800, 49899), None, |c| c.sip.max_tcp_per_source = 1).await;
    let addr = server.ws.unwrap();
    // One TCP connection from 127.0.0.1 takes the only slot...
    let tcp = tokio::net::TcpStream::connect(server.sip).await.unwrap();
    let req = String::from_utf8(browser_request("OPTIONS", server.sip, "TCP", 1))
        .unwrap()
        .replace("df7jal23ls0d.invalid", "127.0.0.1:9")
        .replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n");
    let mut tcp = tcp;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"SIP/2.0 200"),
            "the TCP connection is served"
        );
    }
    // ...so a WebSocket from the same address is closed at accept, and counted.
    let (refused, _) = upgrade(addr, None, "/", Some("sip")).await;
    assert!(refused.is_err(), "a second connection was upgraded");
    let dropped = "switchboard_sip_dropped_total{reason=\"tcp_connections\"}";
    assert_eq!(support::server::metric(server.http, dropped).await, 1.0);
    // Once the TCP connection is gone the slot is free again (its close is noticed shortly).
    drop(tcp);
    let mut upgraded = None;
    for _ in 0..50 {
        if let (Ok(ws), _) = upgrade(addr, None, "/", Some("sip")).await {
            upgraded = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = upgraded.expect("the slot is free within 2.5 s");
    send(&mut ws, browser_request("OPTIONS", addr, "WS", 2)).await;
    assert!(receive_text(&mut ws).await.starts_with("SIP/2.0 200 OK"));
    server.stop().await;
}
