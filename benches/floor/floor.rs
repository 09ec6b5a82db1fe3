//! The floor: what moving a call's RTP costs the kernel, with nothing else done.
//!
//! A minimal SIP answerer (UDP, one dialog per INVITE: 200 OK with an SDP naming a port of
//! its own, the ACK ignored, BYE answered) and one media thread that, on absolute 20 ms
//! ticks, drains every leg's non-blocking UDP socket until it would block (latching the
//! peer's address from what arrives, else the offer's) and sends one 172-byte RTP packet
//! (PCMU silence, 20 ms) per leg. No codec, no jitter buffer, no copy but the kernel's.
//! `benches/sipp-load.sh floor` drives it with the same SIPp load as the server and prints
//! both costs and their ratio.
//!
//! Run: `cargo build --release --example floor && target/release/examples/floor 127.0.0.1:25060`
//! (it prints `READY` when listening).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One 20 ms frame.
const FRAME: Duration = Duration::from_millis(20);
/// An RTP header and 160 bytes of PCMU.
const PACKET: usize = 172;

/// A call's media, as the media thread keeps it.
struct Leg {
    socket: UdpSocket,
    peer: SocketAddr,
    seq: u16,
    ts: u32,
}

/// What the SIP side tells the media thread.
enum Change {
    Add(String, Leg),
    Remove(String),
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:25060".into());
    let sip = match UdpSocket::bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("media".into())
        .spawn(move || media(rx))
        .map_err(|e| eprintln!("no media thread: {e}"))
        .ok();
    println!("READY sip={addr}");
    answer(&sip, &tx);
}

/// The SIP side: INVITE gets a leg and a 200 OK, BYE ends it; anything else is let be.
fn answer(sip: &UdpSocket, media: &mpsc::Sender<Change>) {
    let Ok(contact) = sip.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 65536];
    let mut answered: HashMap<String, String> = HashMap::new();
    loop {
        let Ok((n, from)) = sip.recv_from(&mut buf) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(&buf[..n]) else {
            continue;
        };
        let Some(first) = text.lines().next() else {
            continue;
        };
        let call_id = header(text, "Call-ID").unwrap_or_default().to_string();
        if first.starts_with("INVITE ") {
            // A retransmitted INVITE gets the same answer again.
            if let Some(reply) = answered.get(&call_id) {
                let _ = sip.send_to(reply.as_bytes(), from);
                continue;
            }
            let Some(offered) = offer_addr(text) else {
                continue;
            };
            let Ok(socket) = UdpSocket::bind((from.ip(), 0)) else {
                continue;
            };
            let Ok(local) = socket.local_addr() else {
                continue;
            };
            if socket.set_nonblocking(true).is_err() {
                continue;
            }
            let to = format!("{};tag=floor", header(text, "To").unwrap_or(""));
            let reply = ok(text, &to, Some((contact, local)));
            let _ = sip.send_to(reply.as_bytes(), from);
            answered.insert(call_id.clone(), reply);
            let leg = Leg {
                socket,
                peer: offered,
                seq: 0,
                ts: 0,
            };
            let _ = media.send(Change::Add(call_id, leg));
        } else if first.starts_with("BYE ") {
            let reply = ok(text, header(text, "To").unwrap_or(""), None);
            let _ = sip.send_to(reply.as_bytes(), from);
            if answered.remove(&call_id).is_some() {
                let _ = media.send(Change::Remove(call_id));
            }
        }
    }
}

/// The media thread: every 20 ms, drain each leg, then send each leg one packet.
fn media(changes: mpsc::Receiver<Change>) {
    let mut legs: HashMap<String, Leg> = HashMap::new();
    let mut buf = [0u8; 2048];
    let mut packet = [0u8; PACKET];
    packet[0] = 0x80;
    packet[12..].fill(0xff);
    let start = Instant::now();
    let mut tick: u32 = 0;
    loop {
        while let Ok(c) = changes.try_recv() {
            match c {
                Change::Add(id, leg) => {
                    legs.insert(id, leg);
                }
                Change::Remove(id) => {
                    legs.remove(&id);
                }
            }
        }
        for leg in legs.values_mut() {
            loop {
                match leg.socket.recv_from(&mut buf) {
                    Ok((_, from)) => leg.peer = from,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
            packet[2..4].copy_from_slice(&leg.seq.to_be_bytes());
            packet[4..8].copy_from_slice(&leg.ts.to_be_bytes());
            let _ = leg.socket.send_to(&packet, leg.peer);
            leg.seq = leg.seq.wrapping_add(1);
            leg.ts = leg.ts.wrapping_add(160);
        }
        tick += 1;
        let due = start + FRAME * tick;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// A header's value (first occurrence, case-insensitive name).
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Where the offer's audio goes: its `c=` address and `m=audio` port.
fn offer_addr(msg: &str) -> Option<SocketAddr> {
    let ip = msg
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim();
    let port = msg
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?;
    format!("{ip}:{port}").parse().ok()
}

/// A 200 OK to `req` with `to` as its To header and, for an INVITE, our Contact and an SDP
/// answer on `media`.
fn ok(req: &str, to: &str, invite: Option<(SocketAddr, SocketAddr)>) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        for l in req.lines().take_while(|l| !l.is_empty()) {
            if l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            {
                out.push_str(l.trim_end());
                out.push_str("\r\n");
            }
        }
    }
    out.push_str(&format!("To: {to}\r\n"));
    match invite {
        Some((contact, m)) => {
            let sdp = format!(
                "v=0\r\no=floor 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
                ip = m.ip(),
                port = m.port()
            );
            out.push_str(&format!(
                "Contact: <sip:floor@{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ));
        }
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}
