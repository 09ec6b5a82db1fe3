//! Conference rooms on real media workers: three RTP peers on 127.0.0.1 join one room whose
//! legs start on different workers, and each hears the other two and not itself; muting,
//! kicking and the leave key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use support::rtp::{tone, tone_power, RtpPeer};
use switchboard::conference::{ConferenceRegistry, JoinOptions, LeaveReason, Membership};
use switchboard::config::Config;
use switchboard::engine::{LegHandle, LegSockets, MediaEngine};
use switchboard::events::{Event, EventBus};
use switchboard::live::{MemberAction, Rooms};
use switchboard::media::leg::{Leg, LegConfig, LegEvent};
use switchboard::media::prompt::PromptCache;
use switchboard::media::record::RecordingWriter;
use switchboard::rtp::types::Ssrc;
use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedReceiver;

const FREQS: [f64; 3] = [400.0, 700.0, 1100.0];
const ROOM: &str = "3000";

struct Caller {
    peer: RtpPeer,
    leg: LegHandle,
    leg_addr: SocketAddr,
    _events: UnboundedReceiver<LegEvent>,
}

fn new_caller(media: &MediaEngine, peer: RtpPeer, n: u32) -> Caller {
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let leg_addr = rtp.local_addr().unwrap();
    let cfg = LegConfig::pcmu(peer.socket.local_addr().unwrap(), Ssrc::new(100 + n));
    let leg = Leg::new(cfg, std::time::Instant::now()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let leg = media.add(leg, LegSockets::new(rtp, rtcp), tx).unwrap();
    Caller {
        peer,
        leg,
        leg_addr,
        _events: rx,
    }
}

/// Waits (bounded) for the first event matching `pred`.
async fn wait_for(
    rx: &mut broadcast::Receiver<Arc<switchboard::events::Stamped>>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("event in time")
            .expect("bus open");
        if pred(&e.event) {
            return e.event.clone();
        }
    }
}

/// All three send their tone for `ms` at once; what each received, past the first 400 ms.
async fn talk(callers: &mut [Caller], ms: usize) -> Vec<Vec<i16>> {
    let mut it = callers.iter_mut();
    let (a, b, c) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let linger = Duration::from_millis(100);
    let (ta, tb, tc) = (
        tone("400/5000@-16", ms),
        tone("700/5000@-16", ms),
        tone("1100/5000@-16", ms),
    );
    let (ra, rb, rc) = tokio::join!(
        a.peer.exchange(a.leg_addr, &ta, linger),
        b.peer.exchange(b.leg_addr, &tb, linger),
        c.peer.exchange(c.leg_addr, &tc, linger),
    );
    [ra, rb, rc]
        .into_iter()
        .map(|r| r.get(400 * 8..).unwrap_or(&[]).to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_hear_each_other_not_themselves_and_leave_by_kick_and_key() {
    let dir = tempdir();
    let media = Arc::new(MediaEngine::start(2, 0).unwrap());
    let bus = EventBus::default();
    let mut bus_rx = bus.subscribe();
    let mut cfg = Config::embedded().unwrap().conference;
    // Pure mix: no sounds or prompts over the members' tones.
    cfg.join_sound.clear();
    cfg.leave_sound.clear();
    cfg.alone_prompt.clear();
    let (factory, _writer) = RecordingWriter::spawn(&dir).unwrap();
    let prompts = Arc::new(PromptCache::new("prompts".into()));
    let reg = ConferenceRegistry::new(media.clone(), prompts, bus.clone(), cfg, factory);

    let mut callers = Vec::new();
    for n in 0..3 {
        callers.push(new_caller(&media, RtpPeer::bind().await, n));
    }
    let start_workers: Vec<usize> = callers.iter().map(|c| c.leg.worker()).collect();
    assert!(
        start_workers.contains(&0) && start_workers.contains(&1),
        "legs start spread over both workers: {start_workers:?}"
    );
    let mut members: Vec<Membership> = Vec::new();
    for (n, c) in callers.iter_mut().enumerate() {
        let opts = JoinOptions {
            moderator: n == 0,
            muted: false,
            call_id: format!("call-{n}"),
            from: format!("<sip:{n}@127.0.0.1>"),
        };
        members.push(reg.join(ROOM, opts, &mut c.leg).await.unwrap());
    }
    let room_worker = callers[0].leg.worker();
    assert!(
        callers.iter().all(|c| c.leg.worker() == room_worker),
        "all on the room's worker"
    );
    wait_for(
        &mut bus_rx,
        |e| matches!(e, Event::RoomCreated { room } if room == ROOM),
    )
    .await;
    let info = reg.get(ROOM).unwrap();
    assert_eq!(info.members.len(), 3);
    assert!(info.members[0].moderator);

    let heard = talk(&mut callers, 2000).await;
    for (k, audio) in heard.iter().enumerate() {
        assert!(
            audio.len() > 8 * 800,
            "caller {k} received audio: {}",
            audio.len()
        );
        for (j, f) in FREQS.iter().enumerate() {
            let share = tone_power(audio, *f);
            if j == k {
                assert!(share < 0.05, "caller {k} hears itself: {share}");
            } else {
                assert!(share > 0.3, "caller {k} hears caller {j} at {share}");
            }
        }
    }

    // Mute caller 0: the others stop hearing it.
    let m0 = members[0].member_id();
    reg.member_action(ROOM, m0, MemberAction::Mute).unwrap();
    wait_for(
        &mut bus_rx,
        |e| matches!(e, Event::MemberMuted { member, muted: true, .. } if *member == m0),
    )
    .await;
    let heard = talk(&mut callers, 1500).await;
    for (k, audio) in heard.iter().enumerate().skip(1) {
        let share = tone_power(audio, FREQS[0]);
        assert!(
            share < 0.05,
            "caller {k} still hears the muted caller: {share}"
        );
        let other = 3 - k;
        assert!(
            tone_power(audio, FREQS[other]) > 0.8,
            "caller {k} hears caller {other}"
        );
    }
    assert!(reg.get(ROOM).unwrap().members[0].muted);

    // Kick caller 2.
    let m2 = members[2].member_id();
    reg.member_action(ROOM, m2, MemberAction::Kick).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), members[2].left())
        .await
        .unwrap();
    assert_eq!(reason, LeaveReason::Kicked);

    // Caller 1 presses 8 (RFC 4733): it leaves.
    let addr1 = callers[1].leg_addr;
    callers[1].peer.send_dtmf(addr1, "8").await;
    let reason = tokio::time::timeout(Duration::from_secs(5), members[1].left())
        .await
        .unwrap();
    assert_eq!(reason, LeaveReason::Left);
    wait_for(
        &mut bus_rx,
        |e| matches!(e, Event::MemberLeft { reason, .. } if reason == "left"),
    )
    .await;
    assert_eq!(reg.get(ROOM).unwrap().members.len(), 1);

    // The last member leaves: the room is gone.
    drop(members);
    wait_for(
        &mut bus_rx,
        |e| matches!(e, Event::RoomEnded { room } if room == ROOM),
    )
    .await;
    assert!(reg.get(ROOM).is_none());
    assert!(reg.list().is_empty());

    // Caller 1 is a plain leg again: its own commands (echo) decide what it hears.
    callers[1]
        .leg
        .send(switchboard::media::leg::LegCommand::Echo(true));
    let probe = tone("700/1000@-16", 1000);
    let echoed = callers[1]
        .peer
        .exchange(addr1, &probe, Duration::from_millis(200))
        .await;
    assert!(
        tone_power(echoed.get(400 * 8..).unwrap_or(&[]), 700.0) > 0.8,
        "echo after leaving"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchboard-conf-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_leg_keeps_its_id_sockets_and_commands_from_old_senders() {
    let media = MediaEngine::start(2, 0).unwrap();
    let mut c = new_caller(&media, RtpPeer::bind().await, 9);
    let old_sender = c.leg.sender();
    let (from, id) = (c.leg.worker(), c.leg.id());
    // A command sent just before the move is applied on whichever worker has the leg.
    old_sender.send(switchboard::media::leg::LegCommand::Echo(true));
    media.move_leg(&c.leg, 1 - from).await.unwrap();
    assert_eq!(c.leg.worker(), 1 - from);
    assert_eq!(c.leg.id(), id);
    let probe = tone("700/1000@-16", 1000);
    let echoed = c
        .peer
        .exchange(c.leg_addr, &probe, Duration::from_millis(200))
        .await;
    assert!(
        tone_power(echoed.get(400 * 8..).unwrap_or(&[]), 700.0) > 0.8,
        "echo on the new worker"
    );
    // The old sender still reaches the leg after the move.
    old_sender.send(switchboard::media::leg::LegCommand::Echo(false));
    let quiet = c
        .peer
        .exchange(c.leg_addr, &probe, Duration::from_millis(200))
        .await;
    let tail = quiet.get(400 * 8..).unwrap_or(&[]);
    assert!(tail.len() > 8 * 400, "still sending: {}", tail.len());
    assert!(
        tail.iter().all(|&s| s.abs() <= 8),
        "echo stopped by the old sender's command"
    );
    let stats = media.stats();
    let legs: usize = stats
        .iter()
        .map(|s| s.legs.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(legs, 1);
    assert!(
        stats[1 - from]
            .packets_out
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_locked_rooms_refuse_and_operators_record_and_end_a_room() {
    let dir = tempdir();
    let media = Arc::new(MediaEngine::start(2, 0).unwrap());
    let bus = EventBus::default();
    let mut bus_rx = bus.subscribe();
    let mut cfg = Config::from_toml_str(
        "t",
        "[conference.rooms.small]\nmax_members = 1\nalone_prompt = \"\"\n",
    )
    .unwrap()
    .conference;
    cfg.join_sound.clear();
    let (factory, _writer) = RecordingWriter::spawn(&dir).unwrap();
    let prompts = Arc::new(PromptCache::new("prompts".into()));
    let reg = ConferenceRegistry::new(media.clone(), prompts, bus.clone(), cfg, factory.clone());
    let mut a = new_caller(&media, RtpPeer::bind().await, 20);
    let mut b = new_caller(&media, RtpPeer::bind().await, 21);
    let opts = |n: &str| JoinOptions {
        call_id: n.into(),
        ..JoinOptions::default()
    };

    let ma = reg.join("small", opts("a"), &mut a.leg).await.unwrap();
    let full = reg.join("small", opts("b"), &mut b.leg).await.unwrap_err();
    assert_eq!(full, switchboard::conference::JoinError::Full);

    let mut mb = reg.join("big", opts("b"), &mut b.leg).await.unwrap();
    use switchboard::live::RoomAction;
    reg.room_action("big", RoomAction::Lock).unwrap();
    wait_for(&mut bus_rx, |e| {
        matches!(e, Event::RoomLocked { locked: true, .. })
    })
    .await;
    let mut c = new_caller(&media, RtpPeer::bind().await, 22);
    let locked = reg.join("big", opts("c"), &mut c.leg).await.unwrap_err();
    assert_eq!(locked, switchboard::conference::JoinError::Locked);
    assert!(reg.get("big").unwrap().locked);

    let id = reg
        .room_action("big", RoomAction::RecordStart)
        .unwrap()
        .unwrap();
    assert_eq!(
        reg.get("big").unwrap().recording.as_deref(),
        Some(id.as_str())
    );
    assert!(
        reg.room_action("big", RoomAction::RecordStart).is_err(),
        "one at a time"
    );
    reg.room_action("big", RoomAction::RecordStop).unwrap();
    reg.room_action("big", RoomAction::End).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), mb.left())
        .await
        .unwrap();
    assert_eq!(reason, LeaveReason::Ended);
    wait_for(
        &mut bus_rx,
        |e| matches!(e, Event::RoomEnded { room } if room == "big"),
    )
    .await;
    factory.sync().unwrap();
    // Finalised as ID.wav, or still ID.wav.part if the writer has not renamed it yet.
    let wavs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .to_string();
            name.starts_with(&id) && name.contains(".wav")
        })
        .count();
    assert_eq!(wavs, 1, "the room recording was written");

    assert_eq!(
        reg.member_action("small", 12345, MemberAction::Mute),
        Err(switchboard::live::ControlError::NoMember)
    );
    assert_eq!(
        reg.member_action("nowhere", 1, MemberAction::Mute),
        Err(switchboard::live::ControlError::NoRoom)
    );
    ma.leave();
    let _ = std::fs::remove_dir_all(&dir);
}
