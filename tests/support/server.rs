//! The real server started in-process on 127.0.0.1 port 0, and a SIP caller driven over real
//! UDP or TCP sockets against it.

use std::time::{Duration, Instant};

use super::uac::{offer, Uac, UacState};
use switchboard::sip::framing::StreamFramer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub struct Server {
    pub sip: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    /// The TLS listener, when `tls_listen` is set.
    pub tls: Option<std::net::SocketAddr>,
    /// The WebSocket listeners, when `ws_listen` or `wss_listen` is set.
    pub ws: Option<std::net::SocketAddr>,
    pub wss: Option<std::net::SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn start(max_call_secs: u64, rtp: (u16, u16)) -> Server {
    start_with(rtp, |cfg| cfg.sip.max_call_secs = max_call_secs).await
}

pub async fn start_with(rtp: (u16, u16), tweak: impl FnOnce(&mut switchboard::Config)) -> Server {
    let mut cfg = switchboard::Config::embedded().unwrap();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.rtp.port_min = rtp.0;
    cfg.rtp.port_max = rtp.1;
    // No CDR files in the working directory; a test that wants them sets a folder.
    cfg.cdr.dir = std::path::PathBuf::new();
    // `stop` ends live calls at once rather than waiting for them; a drain test sets its own.
    cfg.sip.drain_secs = 0;
    tweak(&mut cfg);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let r = switchboard::run_with_ready(
            cfg,
            async {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = ready_tx.send((r.sip, r.http, r.tls, r.ws, r.wss));
            },
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    });
    let (sip, http, tls, ws, wss) = tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("ready in time")
        .expect("ready");
    Server {
        sip,
        http,
        tls,
        ws,
        wss,
        stop: Some(stop_tx),
        task,
    }
}

impl Server {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }
}

/// A byte stream a caller talks over: TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

/// Carries the caller's messages over one socket until `done` holds; bounded in time.
pub enum Wire {
    Udp(UdpSocket),
    Tcp(Box<dyn Stream>, StreamFramer),
    /// A WebSocket (RFC 7118): one SIP message per WebSocket message.
    Ws(Box<super::ws::SipSocket>),
}

impl Wire {
    /// Sends whatever the caller has queued (e.g. our 200 for the server's BYE) before the
    /// socket is dropped.
    pub async fn flush(&mut self, uac: &mut Uac) {
        self.drive(uac, Duration::ZERO, |_| false).await;
    }

    pub async fn drive(
        &mut self,
        uac: &mut Uac,
        limit: Duration,
        done: impl Fn(&Uac) -> bool,
    ) -> bool {
        let until = tokio::time::Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        loop {
            while let Some(m) = uac.outbox.pop_front() {
                match self {
                    Wire::Udp(s) => {
                        s.send_to(&m, uac.server).await.unwrap();
                    }
                    Wire::Tcp(s, _) => s.write_all(&m).await.unwrap(),
                    Wire::Ws(s) => super::ws::send(s, m).await,
                }
            }
            if done(uac) {
                return true;
            }
            let wake = uac
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(until)
                .min(until);
            let got = match self {
                Wire::Udp(s) => tokio::select! {
                    r = s.recv_from(&mut buf) => Some(vec![buf[..r.unwrap().0].to_vec()]),
                    _ = tokio::time::sleep_until(wake) => None,
                },
                Wire::Tcp(s, framer) => tokio::select! {
                    r = s.read(&mut buf) => {
                        let n = r.unwrap();
                        assert!(n > 0, "server closed the connection");
                        framer.push(&buf[..n]);
                        Some(std::iter::from_fn(|| framer.next_message().unwrap()).collect())
                    }
                    _ = tokio::time::sleep_until(wake) => None,
                },
                Wire::Ws(s) => tokio::select! {
                    m = super::ws::receive(s) => Some(vec![m]),
                    _ = tokio::time::sleep_until(wake) => None,
                },
            };
            let now = Instant::now();
            for m in got.unwrap_or_default() {
                uac.handle(now, &m);
            }
            uac.handle_timeout(now);
            if tokio::time::Instant::now() >= until {
                return done(uac);
            }
        }
    }
}

pub async fn wire(tcp: bool, server: std::net::SocketAddr) -> (Wire, Uac) {
    if tcp {
        let s = TcpStream::connect(server).await.unwrap();
        let local = s.local_addr().unwrap();
        (
            Wire::Tcp(Box::new(s), StreamFramer::new(65535)),
            Uac::new(local, server, true),
        )
    } else {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = s.local_addr().unwrap();
        (Wire::Udp(s), Uac::new(local, server, false))
    }
}

/// A caller over TLS to `server` (the TLS listener), checking its certificate with
/// `connector`; its Via says TLS.
pub async fn wire_tls(
    server: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> (Wire, Uac) {
    let s = TcpStream::connect(server).await.unwrap();
    let local = s.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
    let s = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, s))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut uac = Uac::new(local, server, true);
    uac.tls = true;
    (Wire::Tcp(Box::new(s), StreamFramer::new(65535)), uac)
}

/// Calls `echo` and expects the server, not the caller, to end the call with a BYE no sooner
/// than about a second later (the configured limit under test).
pub async fn expect_server_bye(w: &mut Wire, uac: &mut Uac, why: &str) {
    uac.invite(
        Instant::now(),
        "echo",
        &offer("127.0.0.1", 40000, "sendrecv"),
    );
    let t0 = Instant::now();
    assert!(
        w.drive(uac, Duration::from_secs(5), |u| u.state
            == UacState::Terminated)
            .await,
        "{why}"
    );
    assert_eq!(uac.requests_in, vec!["BYE".to_string()]);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    w.flush(uac).await;
}

/// The caller hangs up; the server must answer the BYE with 200.
pub async fn hang_up(w: &mut Wire, uac: &mut Uac) {
    uac.request(Instant::now(), "BYE", "", b"");
    assert!(
        w.drive(uac, Duration::from_secs(5), |u| u
            .statuses
            .contains(&("BYE".into(), 200)))
            .await,
        "no 200 for the caller's BYE"
    );
}

/// Places a call to `user` offering media on `rtp_port` and waits until it is answered.
pub async fn call(w: &mut Wire, uac: &mut Uac, user: &str, rtp_port: u16) {
    call_offering(w, uac, user, &offer("127.0.0.1", rtp_port, "sendrecv")).await;
}

/// Places a call to `user` with the SDP offer `sdp` and waits until it is answered.
pub async fn call_offering(w: &mut Wire, uac: &mut Uac, user: &str, sdp: &[u8]) {
    uac.invite(Instant::now(), user, sdp);
    assert!(
        w.drive(uac, Duration::from_secs(5), |u| u.state
            == UacState::Confirmed)
            .await,
        "the call to {user} was not answered"
    );
}

/// What a caller saw of a call whose flow dials.
pub struct DialSeen {
    /// The call's `dial ended: …` step.
    pub step: String,
    /// How long after the INVITE it came.
    pub took: Duration,
    /// The statuses the caller received.
    pub statuses: Vec<u16>,
}

/// Calls `user` on the server at `sip` and waits (at most 20 s) for the call's `dial ended`
/// step on its event stream at `http`; then lets the flow end the call (at most 2 s).
pub async fn dial_outcome(
    sip: std::net::SocketAddr,
    http: std::net::SocketAddr,
    user: &str,
) -> DialSeen {
    let mut events = super::events::Events::open(http, "call_step").await;
    let (mut w, mut uac) = wire(false, sip).await;
    let t0 = Instant::now();
    uac.invite(t0, user, &offer("127.0.0.1", 40000, "sendrecv"));
    let deadline = t0 + Duration::from_secs(20);
    loop {
        w.drive(&mut uac, Duration::from_millis(20), |_| false)
            .await;
        events
            .read(tokio::time::Instant::now() + Duration::from_millis(20))
            .await;
        for ev in events.take() {
            let step = ev["step"].as_str().unwrap_or("");
            if ev["call_id"] == uac.call_id.as_str() && step.starts_with("dial ended") {
                let took = t0.elapsed();
                w.drive(&mut uac, Duration::from_secs(2), |u| {
                    u.state == UacState::Terminated
                })
                .await;
                return DialSeen {
                    step: step.to_string(),
                    took,
                    statuses: uac.statuses.iter().map(|&(_, c)| c).collect(),
                };
            }
        }
        assert!(Instant::now() < deadline, "{user}: the dial did not end");
    }
}

pub fn answered_port(uac: &Uac) -> u16 {
    let sdp = String::from_utf8(uac.answer.clone().expect("an SDP answer")).unwrap();
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .expect("m=audio");
    m.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The value of one sample of `/metrics`, e.g. `switchboard_sip_refused_total{reason="acl"}`.
pub async fn metric(http: std::net::SocketAddr, sample: &str) -> f64 {
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}

/// Rooms with only their members' own audio in the mix: no join or leave tones, no "you are
/// alone" prompt, no member count announced.
pub fn only_members_heard(c: &mut switchboard::Config) {
    c.conference.join_sound.clear();
    c.conference.leave_sound.clear();
    c.conference.alone_prompt.clear();
    c.conference.announce_count = false;
}

/// Waits (at most 5 s) until room `room` has `count` members, as `GET /api/rooms/NAME` shows.
pub async fn room_members_joined(http: std::net::SocketAddr, room: &str, count: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http_get(http, &format!("/api/rooms/{room}")).await;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if v["members"].as_array().is_some_and(|m| m.len() == count) {
                return;
            }
        }
        assert!(
            Instant::now() < until,
            "the members of {room} never all joined"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.1 GET over loopback: status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    http_request(addr, "GET", path).await
}

/// A minimal HTTP/1.1 request without a body over loopback: status and body.
pub async fn http_request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, Vec<u8>) {
    http_send(addr, method, path, b"").await
}

/// A minimal HTTP/1.1 request with a JSON body over loopback: status and body.
pub async fn http_send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = http_with(addr, method, path, "application/json", body).await;
    (status, body)
}

/// A minimal HTTP/1.1 request with a body of `content_type` over loopback: status, head
/// and body (within 15 s: an offer waits for the dialplan's answer).
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut raw))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

/// The value of header `name` in an HTTP head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}
