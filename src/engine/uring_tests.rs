//! [`UringIo`] over loopback sockets: many legs in one tick, RTCP with kernel timestamps, a
//! leg's place reused after it went, full queues and an exhausted buffer ring; and the
//! choice between io_uring and sockets.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use super::io::{IoMode, LegSockets, MediaIo};
use super::thread::choose;
use super::uring::{kernel_supports, UringIo};
use crate::media::leg::Port;

/// Each test's loops give up after this long.
const PATIENCE: Duration = Duration::from_secs(3);

fn leg(rtcp_mux: bool) -> LegSockets {
    let bind = || UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s = LegSockets::new(bind(), bind());
    s.prepare(rtcp_mux).unwrap();
    s
}

fn addr(s: &LegSockets, port: Port) -> SocketAddr {
    s.port(port).local_addr().unwrap()
}

/// A peer that sends to legs and reads what they send, blocking at most a second.
fn peer() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    p
}

/// Runs ticks (a short wait, then what arrived becomes readable) until `done` says so;
/// false if it never did in time.
fn ticks_until(io: &mut UringIo, mut done: impl FnMut(&mut UringIo) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        io.sleep_until(Instant::now() + Duration::from_millis(2));
        io.begin_tick();
        if done(io) {
            return true;
        }
        io.end_tick();
    }
    false
}

#[test]
fn many_legs_receive_and_send_in_one_tick() {
    const LEGS: usize = 64;
    let mut io = UringIo::new().unwrap();
    let mut legs: Vec<LegSockets> = (0..LEGS).map(|_| leg(false)).collect();
    for l in &mut legs {
        io.attach(l);
    }
    // Arms the receives.
    io.sleep_until(Instant::now());
    let peers: Vec<UdpSocket> = (0..LEGS).map(|_| peer()).collect();
    for (i, (l, p)) in legs.iter().zip(&peers).enumerate() {
        p.send_to(format!("to leg {i}").as_bytes(), addr(l, Port::Rtp))
            .unwrap();
    }
    let mut got: Vec<Option<String>> = vec![None; LEGS];
    let mut buf = [0u8; 2048];
    let all = ticks_until(&mut io, |io| {
        for (i, l) in legs.iter().enumerate() {
            if let Some(d) = io.recv(l, Port::Rtp, &mut buf) {
                assert_eq!(d.from, peers[i].local_addr().unwrap(), "leg {i}'s source");
                assert_eq!(d.stamp, None, "RTP without mux is not stamped");
                got[i] = Some(String::from_utf8_lossy(&buf[..d.len]).into_owned());
            }
        }
        got.iter().all(Option::is_some)
    });
    assert!(all, "every leg heard its peer: {got:?}");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.as_deref(), Some(format!("to leg {i}").as_str()));
    }
    // Every leg answers in the same tick; one submission sends them all.
    for (i, (l, p)) in legs.iter().zip(&peers).enumerate() {
        io.send(
            l,
            Port::Rtp,
            p.local_addr().unwrap(),
            format!("from leg {i}").as_bytes(),
        );
    }
    io.end_tick();
    io.sleep_until(Instant::now());
    for (i, (l, p)) in legs.iter().zip(&peers).enumerate() {
        let (n, from) = p.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr(l, Port::Rtp));
        assert_eq!(&buf[..n], format!("from leg {i}").as_bytes());
    }
    io.begin_tick();
    let c = io.counters();
    assert_eq!((c.send_drops, c.send_errors, c.queue_drops), (0, 0, 0));
}

#[test]
fn rtcp_carries_the_kernels_receive_time() {
    let mut io = UringIo::new().unwrap();
    let mut plain = leg(false);
    let mut muxed = leg(true);
    io.attach(&mut plain);
    io.attach(&mut muxed);
    io.sleep_until(Instant::now());
    let p = peer();
    let sent = SystemTime::now();
    p.send_to(b"report", addr(&plain, Port::Rtcp)).unwrap();
    p.send_to(b"muxed report", addr(&muxed, Port::Rtp)).unwrap();
    // The datagrams wait a while before a tick reads them: their stamps must not.
    std::thread::sleep(Duration::from_millis(40));
    let mut buf = [0u8; 2048];
    let mut stamps = [None, None];
    let read = ticks_until(&mut io, |io| {
        if let Some(d) = io.recv(&plain, Port::Rtcp, &mut buf) {
            assert_eq!(&buf[..d.len], b"report");
            stamps[0] = Some(d.stamp.expect("the RTCP socket is stamped"));
        }
        if let Some(d) = io.recv(&muxed, Port::Rtp, &mut buf) {
            assert_eq!(&buf[..d.len], b"muxed report");
            stamps[1] = Some(d.stamp.expect("with rtcp-mux the RTP socket is stamped"));
        }
        stamps.iter().all(Option::is_some)
    });
    assert!(read);
    let now = SystemTime::now();
    for s in stamps.into_iter().flatten() {
        let waited = now.duration_since(s).unwrap();
        assert!(
            waited >= Duration::from_millis(35),
            "stamped on arrival, not on reading: {waited:?}"
        );
        assert!(s.duration_since(sent).unwrap_or_default() < Duration::from_millis(20));
    }
}

#[test]
fn a_place_taken_again_never_hears_the_leg_that_left_it() {
    let mut io = UringIo::new().unwrap();
    let mut old = leg(false);
    io.attach(&mut old);
    io.sleep_until(Instant::now());
    let (place, gen) = old.ring.unwrap();
    let p = peer();
    for _ in 0..5 {
        p.send_to(b"for the old leg", addr(&old, Port::Rtp))
            .unwrap();
    }
    // Received into the ring, not yet reaped when the leg goes.
    io.complete_unreaped(5).unwrap();
    io.detach(&mut old);
    assert_eq!(old.ring, None);
    let mut new = leg(false);
    io.attach(&mut new);
    let (new_place, new_gen) = new.ring.unwrap();
    assert_eq!(new_place, place, "the place is reused");
    assert_ne!(new_gen, gen);
    io.sleep_until(Instant::now());
    io.begin_tick();
    let mut buf = [0u8; 2048];
    assert_eq!(io.recv(&new, Port::Rtp, &mut buf), None);
    assert_eq!(
        io.counters().stale,
        5,
        "the old leg's datagrams came in after it left"
    );
    io.end_tick();
    p.send_to(b"for the new leg", addr(&new, Port::Rtp))
        .unwrap();
    let mut heard = Vec::new();
    let got = ticks_until(&mut io, |io| {
        while let Some(d) = io.recv(&new, Port::Rtp, &mut buf) {
            heard.push(buf[..d.len].to_vec());
        }
        !heard.is_empty()
    });
    assert!(got);
    assert_eq!(heard, vec![b"for the new leg".to_vec()]);
    // The old leg's buffers all came back: a ring's worth of datagrams still flows.
    let n = usize::from(super::uring::DEFAULT_BUFFERS) + 100;
    let mut count = 0;
    let mut sent = 0;
    let flowed = ticks_until(&mut io, |io| {
        // A burst small enough for the socket buffer and the leg's queue.
        for _ in 0..16 {
            if sent < n {
                p.send_to(b"more", addr(&new, Port::Rtp)).unwrap();
                sent += 1;
            }
        }
        while let Some(d) = io.recv(&new, Port::Rtp, &mut buf) {
            assert_eq!(&buf[..d.len], b"more");
            count += 1;
        }
        count == n
    });
    assert!(flowed, "{count} of {n}");
}

#[test]
fn a_full_queue_drops_and_counts_the_rest() {
    let mut io = UringIo::with_capacity(64, 16).unwrap();
    let mut l = leg(false);
    io.attach(&mut l);
    io.sleep_until(Instant::now());
    let p = peer();
    const SENT: usize = super::uring::QUEUE + 8;
    for i in 0..SENT as u32 {
        p.send_to(&i.to_be_bytes(), addr(&l, Port::Rtp)).unwrap();
    }
    // Nothing is read meanwhile: the leg's queue fills and the rest are dropped.
    assert!(ticks_until(&mut io, |io| io.counters().queue_drops == 8));
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while let Some(d) = io.recv(&l, Port::Rtp, &mut buf) {
        assert_eq!(d.len, 4);
        got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
    }
    let want: Vec<u32> = (0..super::uring::QUEUE as u32).collect();
    assert_eq!(got, want, "the first ones, intact and in order");
    assert_eq!(io.counters().queue_drops, 8);
}

#[test]
fn an_exhausted_buffer_ring_delays_but_corrupts_nothing() {
    const BUFFERS: u16 = 8;
    let mut io = UringIo::with_capacity(BUFFERS, 16).unwrap();
    let mut legs = [leg(false), leg(false)];
    for l in &mut legs {
        io.attach(l);
    }
    io.sleep_until(Instant::now());
    let p = peer();
    const SENT: u32 = 24;
    for i in 0..SENT {
        for (k, l) in legs.iter().enumerate() {
            p.send_to(&[k as u8, i as u8, 0xa5, !(i as u8)], addr(l, Port::Rtp))
                .unwrap();
        }
    }
    let mut buf = [0u8; 2048];
    let mut got = [Vec::new(), Vec::new()];
    let all = ticks_until(&mut io, |io| {
        for (k, l) in legs.iter().enumerate() {
            while let Some(d) = io.recv(l, Port::Rtp, &mut buf) {
                assert_eq!(d.len, 4);
                let [leg, i, mark, check] = [buf[0], buf[1], buf[2], buf[3]];
                assert_eq!((leg, mark, check), (k as u8, 0xa5, !i), "leg {k} got {i}");
                got[k].push(u32::from(i));
            }
        }
        got.iter().all(|g| g.len() == SENT as usize)
    });
    let c = io.counters();
    assert!(
        all,
        "{} and {} of {SENT}; {c:?}",
        got[0].len(),
        got[1].len()
    );
    for g in &got {
        assert_eq!(*g, (0..SENT).collect::<Vec<_>>());
    }
    assert!(c.starved > 0 && c.rearms > 0, "{c:?}");
    assert_eq!(c.queue_drops, 0);
}

#[test]
fn auto_falls_back_to_sockets_when_io_uring_is_refused() {
    let refused = || Err::<(), _>("io_uring_disabled is 2".to_string());
    assert!(!choose(IoMode::Auto, refused).unwrap());
    let e = choose(IoMode::Uring, refused).unwrap_err();
    assert!(e.to_string().contains("io_uring_disabled"), "{e}");
    assert!(!choose(IoMode::Sockets, || panic!("not asked")).unwrap());
    assert!(choose(IoMode::Auto, || Ok(())).unwrap());
    assert!(choose(IoMode::Uring, || Ok(())).unwrap());
}

#[test]
fn kernels_from_six_one_on_are_supported() {
    assert!(kernel_supports("6.1.0-18-amd64"));
    assert!(kernel_supports("6.18.1-arch1-1"));
    assert!(kernel_supports("10.0"));
    assert!(!kernel_supports("6.0.19"));
    assert!(!kernel_supports("5.19.17-generic"));
    assert!(!kernel_supports("4.19.0"));
    assert!(!kernel_supports("unknown"));
}

#[test]
fn a_worker_over_uring_ticks_a_leg_it_was_handed() {
    use crate::media::leg::{Leg, LegConfig};
    use crate::rtp::types::Ssrc;
    let mut io = UringIo::new().unwrap();
    let l = leg(false);
    let local = addr(&l, Port::Rtp);
    let p = peer();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = Instant::now();
    let mut w = super::Worker::new();
    let leg = Leg::new(LegConfig::pcmu(p.local_addr().unwrap(), Ssrc::new(7)), t0).unwrap();
    w.command(
        t0,
        0,
        super::worker::Command::Add {
            id: 1,
            leg: Box::new(leg),
            endpoint: l,
            events: tx,
            route: std::sync::Arc::new(super::worker::Route {
                worker: Default::default(),
                workers: std::sync::Arc::new(Vec::new()),
            }),
        },
        &mut io,
    );
    for n in 0..3u64 {
        io.sleep_until(Instant::now());
        w.tick(n, Instant::now(), SystemTime::now(), &mut io);
    }
    io.sleep_until(Instant::now());
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        let (len, from) = p.recv_from(&mut buf).unwrap();
        assert_eq!(from, local);
        assert_eq!(len, 12 + 160, "a 20 ms PCMU frame");
    }
    w.command(
        Instant::now(),
        3,
        super::worker::Command::Remove(1),
        &mut io,
    );
    let mut closed = false;
    while let Ok(e) = rx.try_recv() {
        closed |= matches!(e, crate::media::leg::LegEvent::Closed(_));
    }
    assert!(closed, "the leg was removed and its place given up");
}

#[test]
fn the_wait_lasts_until_the_deadline_while_datagrams_arrive() {
    let mut io = UringIo::new().unwrap();
    let mut l = leg(false);
    io.attach(&mut l);
    io.sleep_until(Instant::now());
    let p = peer();
    let to = addr(&l, Port::Rtp);
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..10 {
            p.send_to(b"during the wait", to).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    io.sleep_until(start + Duration::from_millis(30));
    let waited = start.elapsed();
    sender.join().unwrap();
    assert!(waited >= Duration::from_millis(30), "{waited:?}");
    // A late tick (its deadline past) still reads what arrived: every datagram sent.
    io.sleep_until(start);
    io.begin_tick();
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while io.recv(&l, Port::Rtp, &mut buf).is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
}
