//! End to end: the SIP guard in front of the real server, over loopback. Access lists and
//! scanner agents, OPTIONS and REGISTER floods with escalation, idle TCP connections beyond
//! the per-source cap, and 30-second floods at ten times what the server admits: INVITEs from
//! SIPp against the calls-per-second cap, OPTIONS and REGISTERs against the per-source buckets.
//!
//! Sources other than 127.0.0.1 are other loopback addresses (127.0.0.2, 127.0.0.3), which
//! Linux routes to the loopback interface like 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::server::{call, hang_up, metric, start_with, wire};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// An out-of-dialog request from `local`, unique by `n`.
fn request(
    method: &str,
    user_agent: Option<&str>,
    local: SocketAddr,
    server: SocketAddr,
    n: u32,
) -> Vec<u8> {
    let transport = "UDP";
    let ua = user_agent.map_or(String::new(), |u| format!("User-Agent: {u}\r\n"));
    format!(
        "{method} sip:service@{server} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bKg{n}x{}\r\n\
         From: <sip:probe@{local}>;tag=f{n}\r\n\
         To: <sip:service@{server}>\r\n\
         Call-ID: guard-{n}-{}@{local}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:probe@{local}>\r\n\
         Max-Forwards: 70\r\n\
         {ua}Content-Length: 0\r\n\r\n",
        fastrand::u64(..),
        fastrand::u64(..),
    )
    .into_bytes()
}

async fn udp_from(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip, 0)).await.unwrap()
}

/// The status code and the head of the next response on `s`, if one comes within `limit`.
async fn next_response(s: &UdpSocket, limit: Duration) -> Option<(u16, String)> {
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(limit, s.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let code = text.get(8..11)?.parse().ok()?;
    Some((code, text))
}

/// Sends one request and waits for its answer (up to 5 s).
async fn ask(
    s: &UdpSocket,
    server: SocketAddr,
    method: &str,
    ua: Option<&str>,
) -> Option<(u16, String)> {
    let bytes = request(
        method,
        ua,
        s.local_addr().unwrap(),
        server,
        fastrand::u32(..),
    );
    s.send_to(&bytes, server).await.unwrap();
    next_response(s, Duration::from_secs(5)).await
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn denied_sources_get_403_allowed_ones_are_answered() {
    let server = start_with((43000, 43019), |c| {
        c.sip.allow = vec!["127.0.0.1/32".into(), "127.0.0.2/32".into()];
        c.sip.deny = vec!["127.0.0.2".into()];
    })
    .await;
    let allowed = udp_from("127.0.0.1").await;
    let (code, _) = ask(&allowed, server.sip, "OPTIONS", None)
        .await
        .expect("answered");
    assert_eq!(code, 200);
    // Denied although allowed too: deny wins.
    let denied = udp_from("127.0.0.2").await;
    let (code, msg) = ask(&denied, server.sip, "OPTIONS", None)
        .await
        .expect("403");
    assert_eq!(code, 403, "{msg}");
    assert!(msg.starts_with("SIP/2.0 403 Forbidden\r\n"), "{msg}");
    assert!(
        header(&msg, "Call-ID").is_some_and(|c| c.starts_with("guard-")),
        "{msg}"
    );
    // Not in the allow list.
    let stranger = udp_from("127.0.0.3").await;
    let (code, _) = ask(&stranger, server.sip, "INVITE", None)
        .await
        .expect("403");
    assert_eq!(code, 403);
    assert_eq!(
        metric(server.http, "switchboard_sip_refused_total{reason=\"acl\"}").await,
        2.0
    );
    server.stop().await;
}

#[tokio::test]
async fn with_drop_denied_sources_and_scanners_get_nothing() {
    let server = start_with((43020, 43039), |c| {
        c.sip.deny = vec!["127.0.0.2/32".into()];
        c.sip.acl_action = switchboard::sip::guard::AclAction::Drop;
    })
    .await;
    let denied = udp_from("127.0.0.2").await;
    let allowed = udp_from("127.0.0.1").await;
    let scanner = udp_from("127.0.0.1").await;
    let sent = request("OPTIONS", None, denied.local_addr().unwrap(), server.sip, 1);
    denied.send_to(&sent, server.sip).await.unwrap();
    let sent = request(
        "OPTIONS",
        Some("friendly-scanner"),
        scanner.local_addr().unwrap(),
        server.sip,
        2,
    );
    scanner.send_to(&sent, server.sip).await.unwrap();
    let sent = request(
        "INVITE",
        Some("sipvicious 0.3.4"),
        scanner.local_addr().unwrap(),
        server.sip,
        3,
    );
    scanner.send_to(&sent, server.sip).await.unwrap();
    // The server handles messages in order: once a later request is answered, an answer to
    // the earlier ones would have been sent already.
    let (code, _) = ask(&allowed, server.sip, "OPTIONS", Some("Linphone/5.2.0"))
        .await
        .expect("answered");
    assert_eq!(code, 200);
    assert_eq!(
        next_response(&denied, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        next_response(&scanner, Duration::from_millis(300)).await,
        None
    );
    // A denied source cannot open a TCP connection either: closed at accept.
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut conn = s.connect(server.sip).await.unwrap();
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    assert_eq!(
        metric(server.http, "switchboard_sip_dropped_total{reason=\"acl\"}").await,
        2.0
    );
    assert_eq!(
        metric(
            server.http,
            "switchboard_sip_dropped_total{reason=\"scanner\"}"
        )
        .await,
        2.0
    );
    server.stop().await;
}

/// Every response that comes to `s` until it has been quiet for `quiet` (at most `n`).
async fn drain_responses(s: &UdpSocket, n: usize, quiet: Duration) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_response(s, quiet).await {
            Some(r) => out.push(r),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn options_and_register_floods_get_503_then_escalate_then_heal() {
    let server = start_with((43040, 43059), |c| {
        c.sip.options_rate = 10.0;
        c.sip.options_burst = 10;
        c.sip.register_rate = 10.0;
        c.sip.register_burst = 10;
        c.sip.escalate_after = 30;
        c.sip.escalate_window_secs = 10;
        c.sip.block_secs = 3;
    })
    .await;
    let s = udp_from("127.0.0.1").await;
    let local = s.local_addr().unwrap();
    for n in 0..25 {
        s.send_to(&request("OPTIONS", None, local, server.sip, n), server.sip)
            .await
            .unwrap();
    }
    let answers = drain_responses(&s, 25, Duration::from_secs(1)).await;
    assert_eq!(answers.len(), 25, "every OPTIONS answered");
    let ok = answers.iter().filter(|(c, _)| *c == 200).count();
    let busy: Vec<_> = answers.iter().filter(|(c, _)| *c == 503).collect();
    // The burst, and at most the refill of the time the flood took.
    assert!((10..=12).contains(&ok), "{ok} answered 200");
    assert_eq!(ok + busy.len(), 25);
    for (_, m) in &busy {
        assert_eq!(header(m, "Retry-After"), Some("1"), "{m}");
    }
    // A well-behaved client is let through once the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, _) = ask(&s, server.sip, "OPTIONS", None)
        .await
        .expect("answered");
    assert_eq!(code, 200);

    // REGISTER (which this server refuses with 405 once through): the first refusals are
    // 503, then the source has been refused `escalate_after` times and is ignored.
    let flood_at = Instant::now();
    for n in 100..140 {
        s.send_to(&request("REGISTER", None, local, server.sip, n), server.sip)
            .await
            .unwrap();
    }
    let answers = drain_responses(&s, 40, Duration::from_secs(1)).await;
    let through = answers.iter().filter(|(c, _)| *c == 405).count();
    let busy = answers.iter().filter(|(c, _)| *c == 503).count();
    assert!(
        (10..=12).contains(&through),
        "{through} REGISTERs let through"
    );
    let strikes_left = 30 - (25 - ok);
    assert_eq!(busy, strikes_left, "503s until the escalation");
    assert!(answers.len() < 40, "the rest dropped");
    assert_eq!(
        metric(server.http, "switchboard_sip_escalations_total").await,
        1.0
    );
    let blocked = metric(
        server.http,
        "switchboard_sip_dropped_total{reason=\"blocked\"}",
    )
    .await;
    assert_eq!(blocked as usize, 40 - answers.len());
    assert_eq!(
        metric(
            server.http,
            "switchboard_sip_refused_total{reason=\"register_rate\"}"
        )
        .await as usize,
        busy
    );
    // Still blocked: an OPTIONS is dropped too.
    s.send_to(
        &request("OPTIONS", None, local, server.sip, 500),
        server.sip,
    )
    .await
    .unwrap();
    assert_eq!(next_response(&s, Duration::from_millis(200)).await, None);
    // After the block, the source is served again.
    let block_over = flood_at + Duration::from_millis(3200);
    tokio::time::sleep(block_over.saturating_duration_since(Instant::now())).await;
    let (code, _) = ask(&s, server.sip, "REGISTER", None)
        .await
        .expect("answered");
    assert_eq!(code, 405);
    let (code, _) = ask(&s, server.sip, "OPTIONS", None)
        .await
        .expect("answered");
    assert_eq!(code, 200);
    server.stop().await;
}

#[tokio::test]
async fn idle_tcp_connections_beyond_the_cap_are_closed() {
    const CAP: usize = 20;
    const OPENED: usize = 200;
    let server = start_with((43060, 43079), |c| c.sip.max_tcp_per_source = CAP as u32).await;
    let mut conns = Vec::new();
    for _ in 0..OPENED {
        conns.push(TcpStream::connect(server.sip).await.unwrap());
    }
    // Each connection either sees the server close it or stays open and silent.
    let mut checks = tokio::task::JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        checks.spawn(async move {
            let mut b = [0u8; 64];
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            );
            (i, closed, c)
        });
    }
    let mut open = Vec::new();
    let mut closed = 0;
    while let Some(r) = checks.join_next().await {
        let (_, was_closed, c) = r.unwrap();
        if was_closed {
            closed += 1;
        } else {
            open.push(c);
        }
    }
    assert_eq!(open.len(), CAP, "{closed} closed");
    assert_eq!(
        metric(
            server.http,
            "switchboard_sip_dropped_total{reason=\"tcp_connections\"}"
        )
        .await,
        (OPENED - CAP) as f64
    );
    // The server still takes a call over UDP meanwhile.
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "echo", 40000).await;
    hang_up(&mut w, &mut uac).await;
    // An open connection still works.
    let c = &mut open[0];
    let local = c.local_addr().unwrap();
    let mut opts = String::from_utf8(request("OPTIONS", None, local, server.sip, 7)).unwrap();
    opts = opts.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    c.write_all(opts.as_bytes()).await.unwrap();
    let mut b = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert!(
        b[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&b[..n])
    );
    // Once connections close, their places are free again.
    drop(open);
    let mut admitted = false;
    for _ in 0..50 {
        let mut c = TcpStream::connect(server.sip).await.unwrap();
        let mut b = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(100), c.read(&mut b))
            .await
            .is_err()
        {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "no connection admitted after the others closed");
    server.stop().await;
}

/// Resident memory of process `pid`, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Places a call to `echo` from a fresh socket, sends a tone, and returns the share of
/// the tone's frequency in what came back.
async fn echo_call(sip: SocketAddr) -> f64 {
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, sip).await;
    call(&mut w, &mut uac, "echo", rtp.port()).await;
    let media = SocketAddr::new(sip.ip(), support::server::answered_port(&uac));
    let sent = support::rtp::tone("1000/1000@-10", 1000);
    let back = rtp.exchange(media, &sent, Duration::from_millis(300)).await;
    hang_up(&mut w, &mut uac).await;
    support::rtp::peak_tone_power(&back, 1000.0)
}

fn metric_sync(http: SocketAddr, sample: &str) -> f64 {
    let (status, text) = common::http(http, "GET", "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample}"))
}

#[test]
fn an_invite_flood_is_refused_beyond_the_cps_cap_and_the_server_recovers() {
    let Some(sipp) = common::find_sipp() else {
        return;
    };
    // The server admits CPS calls a second; the flood offers ten times that for 30 s.
    const CPS: u32 = 20;
    const RATE: u32 = 10 * CPS;
    const CALLS: u32 = 30 * RATE;
    let server = common::Server::start_with(
        "invite-flood",
        common::ServerOptions {
            // Only the server-wide cap: SIPp and the test's own call share 127.0.0.1.
            config: Some(format!(
                "[sip]\nmax_cps = {CPS}\ninvite_rate = 0.0\nescalate_after = 0\n"
            )),
            rtp_port_count: 200,
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A first call warms up everything a call touches, so the baseline is fair.
    assert!(rt.block_on(echo_call(server.sip)) > 0.9);
    let before = rss_kb(server.pid());

    let started = Instant::now();
    let run = common::Sipp {
        calls: CALLS,
        rate: Some(RATE),
        trace_messages: false,
        ..common::Sipp::new("uac_flood", "echo", common::Transport::Udp)
    }
    .run(&sipp, server.sip, server.dir());
    let took = started.elapsed().as_secs_f64();
    let peak = rss_kb(server.pid());
    assert_eq!(
        run.counter("Failed call"),
        Some(0),
        "{}\n{}",
        run.report(),
        server.log_text()
    );
    let refused = metric_sync(
        server.http,
        "switchboard_sip_refused_total{reason=\"max_cps\"}",
    );
    let started_calls = metric_sync(server.http, "switchboard_calls_started_total");
    // The cap held: the burst plus CPS a second, the rest refused with 503.
    let most = f64::from(CPS) * (took + 1.0) + 1.0;
    assert!(
        started_calls <= most,
        "{started_calls} calls in {took:.1} s"
    );
    assert!(started_calls >= f64::from(CPS), "{started_calls} calls");
    assert!(
        refused >= f64::from(CALLS) * 0.7,
        "{refused} refused of {CALLS}"
    );
    assert!(
        refused + started_calls >= f64::from(CALLS),
        "{refused} + {started_calls}"
    );

    // Every flood call over, memory back near where it was.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric_sync(server.http, "switchboard_active_calls") > 0.0 {
        assert!(Instant::now() < deadline, "calls still up after the flood");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = rss_kb(server.pid());
    eprintln!("RSS before {before} kB, at the end of the flood {peak} kB, after {after} kB");
    assert!(
        after <= before + 16 * 1024,
        "RSS grew from {before} kB to {after} kB (peak {peak} kB)"
    );
    // And a normal call is answered and hears its own tone.
    let heard = rt.block_on(echo_call(server.sip));
    assert!(heard > 0.9, "1 kHz power {heard}\n{}", server.log_text());
}

#[tokio::test]
async fn max_calls_refuses_the_call_beyond_it_until_one_ends() {
    let server = start_with((43080, 43099), |c| c.sip.max_calls = 2).await;
    let mut up = Vec::new();
    for port in [40000, 40002] {
        let (mut w, mut uac) = wire(false, server.sip).await;
        call(&mut w, &mut uac, "echo", port).await;
        up.push((w, uac));
    }
    let s = udp_from("127.0.0.1").await;
    let (code, msg) = ask(&s, server.sip, "INVITE", None).await.expect("answered");
    assert_eq!(code, 503, "{msg}");
    assert_eq!(header(&msg, "Retry-After"), Some("5"), "{msg}");
    assert_eq!(
        metric(
            server.http,
            "switchboard_sip_refused_total{reason=\"max_calls\"}"
        )
        .await,
        1.0
    );
    // Calls in progress are not held back by the cap: BYE still gets its 200.
    let (mut w, mut uac) = up.pop().unwrap();
    hang_up(&mut w, &mut uac).await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "echo", 40004).await;
    hang_up(&mut w, &mut uac).await;
    for (mut w, mut uac) in up {
        hang_up(&mut w, &mut uac).await;
    }
    server.stop().await;
}

#[test]
fn options_and_register_floods_for_30_s_leave_the_server_as_it_was() {
    // Each source may send RATE OPTIONS and RATE REGISTERs a second; each floods both at ten
    // times that for 30 s.
    const RATE: u32 = 10;
    const FLOOD_SECS: u64 = 30;
    const SOURCES: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let server = common::Server::start_with(
        "options-flood",
        common::ServerOptions {
            config: Some(format!(
                "[sip]\noptions_rate = {RATE}.0\noptions_burst = {RATE}\n\
                 register_rate = {RATE}.0\nregister_burst = {RATE}\n\
                 escalate_after = 200\nescalate_window_secs = 10\nblock_secs = 5\n"
            )),
            rtp_port_count: 20,
        },
    );
    let sip = server.sip;
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(echo_call(sip)) > 0.9);
    let before = rss_kb(server.pid());

    let (sent, answered) = rt.block_on(async move {
        let mut floods = tokio::task::JoinSet::new();
        for ip in SOURCES {
            floods.spawn(async move {
                let s = std::sync::Arc::new(udp_from(ip).await);
                let local = s.local_addr().unwrap();
                // Answers are counted by status while the flood runs.
                let reader = {
                    let s = s.clone();
                    tokio::spawn(async move {
                        let mut codes = std::collections::BTreeMap::<u16, u64>::new();
                        let mut buf = vec![0u8; 65536];
                        let quiet = Duration::from_secs(FLOOD_SECS + 3);
                        let end = Instant::now() + quiet;
                        while let Ok(Ok((n, _))) =
                            tokio::time::timeout_at(end.into(), s.recv_from(&mut buf)).await
                        {
                            let code = std::str::from_utf8(&buf[..n])
                                .ok()
                                .and_then(|t| t.get(8..11)?.parse().ok())
                                .unwrap_or(0);
                            *codes.entry(code).or_default() += 1;
                        }
                        codes
                    })
                };
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let ticks = FLOOD_SECS * 100;
                let mut sent = 0u64;
                for n in 0..ticks {
                    tick.tick().await;
                    // Ten times RATE of each method a second: RATE/10 of each per 10 ms tick.
                    for method in ["OPTIONS", "REGISTER"] {
                        let bytes = request(method, None, local, sip, n as u32);
                        s.send_to(&bytes, sip).await.unwrap();
                        sent += 1;
                    }
                }
                (sent, reader.await.unwrap())
            });
        }
        let mut sent = 0;
        let mut answered = std::collections::BTreeMap::<u16, u64>::new();
        while let Some(r) = floods.join_next().await {
            let (n, codes) = r.unwrap();
            sent += n;
            for (code, count) in codes {
                *answered.entry(code).or_default() += count;
            }
        }
        (sent, answered)
    });
    let peak = rss_kb(server.pid());
    eprintln!("sent {sent}, answered {answered:?}");
    let sources = SOURCES.len() as u64;
    assert_eq!(sent, sources * FLOOD_SECS * 100 * 2);
    // Only these answers: 200 to OPTIONS, 405 to REGISTER (this server takes no
    // registrations), 503 beyond the rate.
    assert!(
        answered.keys().all(|c| [200, 405, 503].contains(c)),
        "{answered:?}"
    );
    // What got through is each bucket's burst and refill, per source and method.
    let through =
        answered.get(&200).copied().unwrap_or(0) + answered.get(&405).copied().unwrap_or(0);
    let most = sources * 2 * (u64::from(RATE) * (FLOOD_SECS + 2) + u64::from(RATE));
    assert!(through <= most, "{through} let through, at most {most}");
    assert!(
        through >= sources * 2 * u64::from(RATE),
        "{through} let through"
    );
    // Sources that kept flooding past the refusals were escalated, and then not answered.
    assert!(
        metric_sync(server.http, "switchboard_sip_escalations_total") >= sources as f64,
        "{answered:?}"
    );
    let total: u64 = answered.values().sum();
    assert!(total < sent / 2, "{total} answers to {sent} requests");

    // Memory back where it was, a fresh source answered, and a call goes through.
    let after = rss_kb(server.pid());
    eprintln!("RSS before {before} kB, at the end of the flood {peak} kB, after {after} kB");
    assert!(
        after <= before + 16 * 1024,
        "RSS grew from {before} kB to {after} kB (peak {peak} kB)"
    );
    rt.block_on(async {
        let s = udp_from("127.0.0.5").await;
        let (code, _) = ask(&s, sip, "OPTIONS", None).await.expect("answered");
        assert_eq!(code, 200);
    });
    let heard = rt.block_on(echo_call(sip));
    assert!(heard > 0.9, "1 kHz power {heard}\n{}", server.log_text());
}
