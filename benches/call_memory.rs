//! Heap held per idle answered call in the whole server (endpoint, dialog, call task, SDP
//! session, port lease), measured with a counting allocator around an in-process server.
//! Run: `cargo bench --bench call_memory`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::Duration;

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

const CALLS: usize = 2000;

fn main() {
    let mut cfg = switchboard::Config::embedded().expect("defaults");
    cfg.sip.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.http.listen = "127.0.0.1:0".parse().expect("addr");
    // A short T1 lets every INVITE transaction expire (64·T1) within the run.
    cfg.sip.t1_ms = 10;
    cfg.sip.t2_ms = 40;
    // Every call comes from one address, far faster than a phone's: the guard's per-source and
    // server-wide call-rate limits are lifted, as for the SIPp loads.
    cfg.sip.invite_rate = 0.0;
    cfg.sip.max_cps = 0;
    cfg.sip.max_pending_invites = 0;
    cfg.rtp.port_min = 30000;
    cfg.rtp.port_max = 40000;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(switchboard::run_with_ready(
            cfg,
            async {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = ready_tx.send(r.sip);
            },
        ))
    });
    let sip = ready_rx.recv().expect("server ready");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = sock.local_addr().expect("addr");
    let mut buf = vec![0u8; 65536];
    std::thread::sleep(Duration::from_millis(200));
    let before = alloc::held();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    for n in 0..CALLS {
        let head = |method: &str, to_tag: &str| {
            format!(
                "{method} sip:echo@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{n}\r\n\
From: <sip:m@{local}>;tag=f{n}\r\nTo: <sip:echo@{sip}>{to_tag}\r\nCall-ID: mem{n}\r\n\
CSeq: 1 {method}\r\nContact: <sip:m@{local}>\r\nMax-Forwards: 70\r\n"
            )
        };
        let invite = format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            head("INVITE", ""),
            sdp.len()
        );
        sock.send_to(invite.as_bytes(), sip).expect("send");
        let tag = loop {
            let (len, _) = sock.recv_from(&mut buf).expect("an answer");
            let text = String::from_utf8_lossy(&buf[..len]);
            if text.starts_with("SIP/2.0 200") {
                let to = text.lines().find(|l| l.starts_with("To:")).unwrap_or("");
                break to.split(";tag=").nth(1).unwrap_or("").trim().to_string();
            }
        };
        let ack = format!(
            "{}Content-Length: 0\r\n\r\n",
            head("ACK", &format!(";tag={tag}"))
        );
        sock.send_to(ack.as_bytes(), sip).expect("send");
    }
    // 64·T1 = 640 ms: all INVITE transactions are gone after this.
    std::thread::sleep(Duration::from_millis(1500));
    let held = alloc::held();
    println!(
        "heap per idle answered call: {} bytes ({CALLS} calls)",
        (held - before) / CALLS as isize
    );
    let _ = stop_tx.send(());
    let _ = server.join();
}
