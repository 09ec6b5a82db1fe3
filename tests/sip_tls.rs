//! SIP over TLS against the real server on 127.0.0.1: certificates made at test time
//! (a CA and a leaf for 127.0.0.1), an in-process rustls client, a call to `echo` over
//! TLS with plain RTP, connections that fail the handshake, the certificate reloaded on
//! SIGHUP, and a `dial()` from one server to another's TLS listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, ServerName};
use support::pki::Pki;
use support::rtp::{peak_tone_power, tone, RtpPeer};
use support::server::{answered_port, call, hang_up, start_with, wire, wire_tls, Server};
use switchboard::sip::framing::StreamFramer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The server with a TLS listener on port 0 serving `pki`'s certificate.
async fn tls_server(
    rtp: (u16, u16),
    pki: &Pki,
    tweak: impl FnOnce(&mut switchboard::Config),
) -> Server {
    let (cert, key) = (pki.cert(), pki.key());
    let server = start_with(rtp, move |c| {
        c.sip.tls_listen = "127.0.0.1:0".into();
        c.sip.tls_cert = cert;
        c.sip.tls_key = key;
        tweak(c);
    })
    .await;
    assert!(server.tls.is_some(), "Ready reports the TLS listener");
    server
}

async fn connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(ServerName::IpAddress(addr.ip().into()), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

/// The certificate the server showed on this connection.
fn shown<S>(s: &tokio_rustls::client::TlsStream<S>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Sends an OPTIONS over `s` and returns the status line of the answer (bounded in time).
async fn options<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    server: SocketAddr,
    n: u32,
) -> String {
    options_answer(s, server, n)
        .await
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Sends an OPTIONS over `s` and returns the whole answer (bounded in time).
async fn options_answer<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    server: SocketAddr,
    n: u32,
) -> String {
    let local = "127.0.0.1:1";
    let req = format!(
        "OPTIONS sip:ping@{server};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKo{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=o{n}\r\nTo: <sip:ping@{server}>\r\n\
         Call-ID: opt{n}-{}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        fastrand::u64(..)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut framer = StreamFramer::new(65535);
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        if let Some(m) = framer.next_message().unwrap() {
            return String::from_utf8(m).unwrap();
        }
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(r > 0, "the server closed the connection");
        framer.push(&buf[..r]);
    }
    panic!("no whole answer");
}

#[tokio::test]
async fn options_and_an_echo_call_over_tls_with_bye_on_the_same_connection() {
    let pki = Pki::new();
    let server = tls_server((48100, 48199), &pki, |_| {}).await;
    let tls = server.tls.unwrap();
    let mut s = connect(tls, &pki.connector()).await;
    assert_eq!(shown(&s), pki.leaf);
    let answer = options_answer(&mut s, tls, 1).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    // The answer tells the peer to come back over TLS, to the TLS port.
    let contact = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .unwrap_or_default();
    assert!(
        contact.contains(&format!("@{tls};transport=tls>")),
        "{contact}"
    );
    drop(s);

    let mut rtp = RtpPeer::bind().await;
    let (mut w, mut uac) = wire_tls(tls, &pki.connector()).await;
    call(&mut w, &mut uac, "echo", rtp.port()).await;
    // The media stays plain RTP.
    let media = SocketAddr::new(tls.ip(), answered_port(&uac));
    rtp.expect_echo(media).await;
    // The BYE goes over the same connection (the wire has no other) and gets its 200.
    hang_up(&mut w, &mut uac).await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_a_refused_certificate_are_dropped_without_harming_other_connections() {
    let pki = Pki::new();
    let server = tls_server((48200, 48299), &pki, |_| {}).await;
    let tls = server.tls.unwrap();
    let mut good = connect(tls, &pki.connector()).await;
    assert_eq!(options(&mut good, tls, 1).await, "SIP/2.0 200 OK");

    // Plain SIP instead of a ClientHello: the server closes the connection unanswered.
    let mut plain = TcpStream::connect(tls).await.unwrap();
    let _ = plain
        .write_all(b"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .await;
    let mut buf = [0u8; 1024];
    let mut answered = Vec::new();
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
            .await
            .expect("closed within 5 s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answered.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        !String::from_utf8_lossy(&answered).contains("SIP/2.0"),
        "plain SIP was answered on the TLS port"
    );

    // A client that does not trust the certificate (another CA) gives up in the handshake.
    let other = Pki::new();
    let tcp = TcpStream::connect(tls).await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        other
            .connector()
            .connect(ServerName::IpAddress(tls.ip().into()), tcp),
    )
    .await
    .expect("handshake ends in time");
    assert!(refused.is_err(), "a certificate of another CA was accepted");

    // A certificate for another name is refused too: the name is checked.
    let tcp = TcpStream::connect(tls).await.unwrap();
    let wrong_name = tokio::time::timeout(
        Duration::from_secs(5),
        pki.connector()
            .connect(ServerName::try_from("sip.example.net").unwrap(), tcp),
    )
    .await
    .expect("handshake ends in time");
    assert!(
        wrong_name.is_err(),
        "a certificate for 127.0.0.1 passed as sip.example.net"
    );

    // The first connection goes on as before.
    assert_eq!(options(&mut good, tls, 2).await, "SIP/2.0 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_only() {
    // Ours first: from now on SIGHUP is caught in this process, whatever the server does.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let mut pki = Pki::new();
    let server = tls_server((48300, 48399), &pki, |_| {}).await;
    let tls = server.tls.unwrap();
    let first = pki.leaf.clone();
    let mut old = connect(tls, &pki.connector()).await;
    assert_eq!(shown(&old), first);

    pki.write_leaf(2);
    assert_ne!(pki.leaf, first);
    // SIGHUP to this very process: the server's handler reads the files again.
    let pid = std::process::id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    tokio::time::timeout(Duration::from_secs(5), hup.recv())
        .await
        .expect("the signal arrived");
    // The reload runs on the server's task: new connections see it shortly after.
    let mut seen = None;
    for _ in 0..100 {
        let s = connect(tls, &pki.connector()).await;
        if shown(&s) == pki.leaf {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut new = seen.expect("a new connection gets the new certificate within 5 s");
    assert_eq!(options(&mut new, tls, 1).await, "SIP/2.0 200 OK");
    // The old connection keeps its certificate and still works.
    assert_eq!(shown(&old), first);
    assert_eq!(options(&mut old, tls, 2).await, "SIP/2.0 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn a_missing_or_bad_certificate_file_stops_the_start_naming_the_file() {
    let pki = Pki::new();
    let mut cfg = switchboard::Config::embedded().unwrap();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.cdr.dir = PathBuf::new();
    cfg.sip.tls_listen = "127.0.0.1:0".into();
    cfg.sip.tls_cert = pki.dir.join("nope.pem");
    cfg.sip.tls_key = pki.key();
    let e = switchboard::run(cfg.clone(), async {}).await.unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
    // A key file where the certificate should be.
    cfg.sip.tls_cert = pki.key();
    let e = switchboard::run(cfg.clone(), async {}).await.unwrap_err();
    assert!(e.to_string().contains(&*pki.key().to_string_lossy()), "{e}");
    // A key that does not go with the certificate.
    let stray = pki.dir.join("stray.pem");
    std::fs::write(&stray, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    cfg.sip.tls_cert = pki.cert();
    cfg.sip.tls_key = stray;
    let e = switchboard::run(cfg, async {}).await.unwrap_err();
    assert!(e.to_string().contains("stray.pem"), "{e}");
}

/// The calling server's flow: dial the rule's target, then hang up.
const OUT: &str = r#"let r = dial(session.vars.target, #{timeout_secs: 3}); log("dial", r.outcome, r.code); hangup();"#;

fn rule(exact: &str, target: String) -> switchboard::script::dialplan::RuleConfig {
    switchboard::script::dialplan::RuleConfig {
        exact: Some(exact.into()),
        prefix: None,
        regex: None,
        script: "out".into(),
        vars: [("target".to_string(), target)].into_iter().collect(),
        auth: false,
    }
}

/// The shipped scripts and `out.rhai`, in a folder of their own.
fn scripts(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    for e in std::fs::read_dir(shipped).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rhai") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.join("out.rhai"), OUT).unwrap();
}

#[tokio::test]
async fn dial_reaches_a_sips_target_over_tls_and_the_echo_comes_back() {
    let pki = Pki::new();
    let callee = tls_server((48400, 48499), &pki, |_| {}).await;
    let far = callee.tls.unwrap();
    let dir = pki.dir.join("scripts");
    scripts(&dir);
    let ca = pki.ca_file();
    let rules = vec![
        rule("to-echo", format!("sips:echo@{far}")),
        rule("to-echo-param", format!("sip:echo@{far};transport=tls")),
    ];
    let caller = start_with((48500, 48599), move |c| {
        c.paths.scripts = dir;
        c.dialplan = rules;
        c.sip.tls_ca = ca;
        c.outbound.allow = vec!["sips:*@127.0.0.1:*".into(), "sip:*@127.0.0.1:*".into()];
    })
    .await;
    for user in ["to-echo", "to-echo-param"] {
        let mut rtp = RtpPeer::bind().await;
        let (mut w, mut uac) = wire(false, caller.sip).await;
        call(&mut w, &mut uac, user, rtp.port()).await;
        let media = SocketAddr::new(caller.sip.ip(), answered_port(&uac));
        // The far end's echo flow beeps first, then sends back what it hears.
        rtp.exchange(media, &tone("0/1200@-60", 1200), Duration::ZERO)
            .await;
        let back = rtp
            .exchange(
                media,
                &tone("1000/1000@-10", 1000),
                Duration::from_millis(400),
            )
            .await;
        let best = peak_tone_power(&back, 1000.0);
        assert!(
            best > 0.9,
            "{user}: 1 kHz power {best}: the TLS leg carried no call"
        );
        hang_up(&mut w, &mut uac).await;
    }
    caller.stop().await;
    callee.stop().await;
}
#[tokio::test]
async fn dial_to_a_tls_peer_whose_certificate_does_not_verify_fails() {
    let pki = Pki::new();
    let callee = tls_server((48600, 48699), &pki, |_| {}).await;
    let far = callee.tls.unwrap();
    let dir = pki.dir.join("scripts");
    scripts(&dir);
    // No tls_ca: the test CA is not among the system roots.
    let caller = start_with((48700, 48799), move |c| {
        c.paths.scripts = dir;
        c.dialplan = vec![rule("to-echo", format!("sips:echo@{far}"))];
        c.outbound.allow = vec!["sips:*@127.0.0.1:*".into()];
    })
    .await;
    let mut events = support::events::Events::open(caller.http, "call_step").await;
    let (mut w, mut uac) = wire(false, caller.sip).await;
    uac.invite(
        Instant::now(),
        "to-echo",
        &support::uac::offer("127.0.0.1", 40000, "sendrecv"),
    );
    // Well before the dial's own 3 s timeout: the failed handshake fails the INVITE at once.
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(10);
    let step = loop {
        w.drive(&mut uac, Duration::from_millis(20), |_| false)
            .await;
        events
            .read(tokio::time::Instant::now() + Duration::from_millis(20))
            .await;
        if let Some(s) = events.take().into_iter().find_map(|ev| {
            let step = ev["step"].as_str().unwrap_or("").to_string();
            (ev["call_id"] == uac.call_id.as_str() && step.starts_with("dial ended"))
                .then_some(step)
        }) {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dial did not end"
        );
    };
    assert!(!step.contains("answered"), "{step}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the dial took {:?}: {step}",
        started.elapsed()
    );
    // The caller's own call is refused once the script hangs up.
    assert!(
        w.drive(&mut uac, Duration::from_secs(5), |u| u
            .statuses
            .iter()
            .any(|(m, c)| m == "INVITE" && *c >= 300))
            .await,
        "the caller got no final answer: {:?}",
        uac.statuses
    );
    caller.stop().await;
    callee.stop().await;
}

#[tokio::test]
async fn tls_and_tcp_connections_from_one_source_share_its_cap() {
    let pki = Pki::new();
    let server = tls_server((48900, 48919), &pki, |c| c.sip.max_tcp_per_source = 2).await;
    let tls = server.tls.unwrap();
    // One over TCP and one over TLS, both answered: both admitted.
    let mut tcp = TcpStream::connect(server.sip).await.unwrap();
    assert_eq!(options(&mut tcp, server.sip, 1).await, "SIP/2.0 200 OK");
    let mut first = connect(tls, &pki.connector()).await;
    assert_eq!(options(&mut first, tls, 2).await, "SIP/2.0 200 OK");
    // A third, over TLS, is one too many: closed at accept, so the handshake fails.
    let third = TcpStream::connect(tls).await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        pki.connector()
            .connect(ServerName::IpAddress(tls.ip().into()), third),
    )
    .await
    .expect("handshake ends in time");
    assert!(refused.is_err(), "a third connection was admitted");
    // Once the TCP one is gone, a TLS one fits again (the close is counted asynchronously).
    drop(tcp);
    let mut admitted = None;
    for _ in 0..100 {
        let tcp = TcpStream::connect(tls).await.unwrap();
        let name = ServerName::IpAddress(tls.ip().into());
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(5), pki.connector().connect(name, tcp)).await
        {
            admitted = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = admitted.expect("a TLS connection admitted once the TCP one closed");
    assert_eq!(options(&mut again, tls, 3).await, "SIP/2.0 200 OK");
    assert_eq!(options(&mut first, tls, 4).await, "SIP/2.0 200 OK");
    server.stop().await;
}
