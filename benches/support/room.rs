//! A conference room for the benchmarks, its members joined on a worker's legs without
//! sockets or a registry.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use switchboard::conference::host::{MemberLegs, RoomCommand, RoomHost, RoomLink};
use switchboard::conference::{Room, RoomSettings, RoomSounds};
use switchboard::events::EventBus;
use switchboard::live::RoomInfo;
use switchboard::media::frame::Frame;
use switchboard::media::leg::Leg;

/// Room `name` with legs `0..members` of `legs` joined as plain members, default settings.
pub fn joined_room(name: &str, members: usize, t0: Instant, legs: &mut dyn MemberLegs) -> RoomHost {
    let settings = RoomSettings {
        max_members: members,
        ..RoomSettings::default()
    };
    let link = RoomLink {
        id: 1,
        name: Arc::from(name),
        bus: EventBus::new(16),
        info: Arc::new(Mutex::new(RoomInfo {
            name: name.into(),
            members: Vec::new(),
            locked: false,
            recording: None,
            stream: None,
            created_at: String::new(),
            rate: 8000,
        })),
        pending: Arc::new(AtomicUsize::new(members)),
    };
    let room = Room::new(settings, RoomSounds::default()).unwrap();
    let mut host = RoomHost::new(link, room, None, Box::new(|| {}));
    let mut replies = Vec::new();
    for i in 0..members {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let (left, left_rx) = tokio::sync::oneshot::channel();
        host.command(
            t0,
            RoomCommand::Join {
                leg: i as u64,
                moderator: false,
                muted: false,
                call_id: format!("call-{i}"),
                from: format!("<sip:{i}@127.0.0.1>"),
                reply,
                left,
            },
            legs,
        );
        replies.push((rx, left_rx));
    }
    assert_eq!(host.len(), members);
    // The receivers stay alive so that no member is taken for a joiner that gave up.
    std::mem::forget(replies);
    host
}

/// A member leg's send half for tick `tick`, as a worker runs it for [`MemberLegs::send`]:
/// the room's payload when it gives one, else the leg encodes `pcm`; the bytes sent are
/// added to `bytes`.
pub fn send_half(
    leg: &mut Leg,
    now: Instant,
    tick: u64,
    pcm: &Frame,
    encoded: Option<&[u8]>,
    bytes: &mut usize,
) {
    let wallclock = std::time::SystemTime::UNIX_EPOCH;
    let mut sink = |_, _, b: &[u8]| *bytes += b.len();
    match encoded {
        Some(p) => leg.send_encoded(now, wallclock, tick, pcm, p, &mut sink),
        None => leg.send(now, wallclock, tick, Some(pcm), &mut sink),
    }
}
