//! Room tests with synthetic frames: the mix each member hears, controls, keys, admission,
//! moderators, and the events every change emits.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::media::frame::FRAME_SAMPLES;

/// Talking exactly when a frame reaches −40 dBov, with no memory between ticks.
fn instant_vad() -> VadConfig {
    VadConfig {
        start_dbov: -40.0,
        stop_dbov: -40.0,
        attack: Duration::ZERO,
        hangover: Duration::ZERO,
    }
}

fn settings() -> RoomSettings {
    RoomSettings {
        vad: instant_vad(),
        ..RoomSettings::default()
    }
}

fn flat(v: i16) -> Frame {
    Frame::from([v; FRAME_SAMPLES])
}

fn sat16(x: i64) -> i16 {
    x.clamp(-32768, 32767) as i16
}

fn key(c: char) -> Digit {
    Digit::from_char(c).unwrap()
}

/// What a member heard in one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    Shared(Frame),
    Own(Frame),
    Silence,
}

impl Heard {
    fn frame(&self) -> Frame {
        match *self {
            Heard::Shared(f) | Heard::Own(f) => f,
            Heard::Silence => Frame::silence(NARROW_RATE),
        }
    }
}

struct Harness {
    room: Room,
    /// Input frame by tag.
    inputs: HashMap<usize, Frame>,
}

impl Harness {
    fn new(settings: RoomSettings) -> Self {
        Harness {
            room: Room::new(settings, RoomSounds::default()).unwrap(),
            inputs: HashMap::new(),
        }
    }

    fn join(&mut self, tag: usize, moderator: bool) -> MemberId {
        self.room
            .join(Joiner {
                moderator,
                muted: false,
                tag,
            })
            .unwrap()
    }

    /// One tick; what each member (by tag) heard.
    fn tick(&mut self) -> HashMap<usize, Heard> {
        let inputs = &self.inputs;
        self.room.tick(|_, tag| inputs.get(&tag));
        let mut out = HashMap::new();
        self.room.for_each_output(|_, tag, o| {
            let h = match o {
                RoomOutput::Shared(f) => Heard::Shared(*f),
                RoomOutput::Own(f) => Heard::Own(*f),
                RoomOutput::Silence => Heard::Silence,
            };
            out.insert(tag, h);
        });
        out
    }

    fn events(&mut self) -> Vec<RoomEvent> {
        std::iter::from_fn(|| self.room.poll_event()).collect()
    }
}

#[test]
fn talkers_hear_the_others_and_listeners_the_shared_frame() {
    let mut h = Harness::new(settings());
    for tag in 0..5 {
        h.join(tag, false);
    }
    h.inputs.insert(0, flat(1000));
    h.inputs.insert(1, flat(-3000));
    h.inputs.insert(2, flat(30000));
    let out = h.tick();
    let ins = [1000i64, -3000, 30000];
    for k in 0..3 {
        let expect: i64 = ins
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, v)| v)
            .sum();
        assert_eq!(out[&k], Heard::Own(flat(sat16(expect))), "talker {k}");
    }
    let all = flat(sat16(ins.iter().sum()));
    assert_eq!(out[&3], Heard::Shared(all));
    assert_eq!(out[&4], Heard::Shared(all));
    assert_eq!(h.room.mix_frame(), &all);
}

#[test]
fn mute_deaf_and_gains() {
    let mut h = Harness::new(settings());
    let a = h.join(0, false);
    let b = h.join(1, false);
    h.inputs.insert(0, flat(1000));
    h.inputs.insert(1, flat(2000));
    h.events();

    assert!(h.room.set_muted(a, true));
    let out = h.tick();
    assert_eq!(out[&1], Heard::Own(flat(0)), "a muted member is not heard");
    assert_eq!(out[&0], Heard::Shared(flat(2000)), "but hears the room");

    assert!(h.room.set_muted(a, false));
    assert!(h.room.set_deaf(b, true));
    let out = h.tick();
    assert_eq!(out[&1], Heard::Silence);
    assert_eq!(
        out[&0],
        Heard::Own(flat(2000)),
        "a deaf member is still heard"
    );

    assert!(h.room.set_deaf(b, false));
    assert!(h.room.set_input_gain(a, 6));
    assert!(h.room.set_volume(b, -6));
    let out = h.tick();
    // 1000 at +6 dB is 1995 (Q12 gain 8173), then −6 dB (2053) on what b hears.
    let up = (1000i64 * 8173 + 2048) >> 12;
    let down = (up * 2053 + 2048) >> 12;
    assert_eq!(out[&1], Heard::Own(flat(down as i16)));
    assert_eq!(out[&0], Heard::Own(flat(2000)));
    let ev = h.events();
    assert!(ev.contains(&RoomEvent::Muted {
        member: a,
        muted: true
    }));
    assert!(ev.contains(&RoomEvent::Muted {
        member: a,
        muted: false
    }));
    assert!(ev.contains(&RoomEvent::Deaf {
        member: b,
        deaf: true
    }));
    assert!(ev.contains(&RoomEvent::Deaf {
        member: b,
        deaf: false
    }));
}

#[test]
fn keys_toggle_mute_change_volume_and_leave() {
    let mut h = Harness::new(settings());
    let a = h.join(0, false);
    let b = h.join(1, false);
    h.events();
    assert_eq!(h.room.key(a, key('0')), Some(KeyAction::Mute));
    assert!(h.room.member(a).unwrap().muted);
    assert_eq!(h.room.key(a, key('0')), Some(KeyAction::Mute));
    assert!(!h.room.member(a).unwrap().muted);
    assert_eq!(h.room.key(a, key('*')), Some(KeyAction::VolumeDown));
    assert_eq!(h.room.member(a).unwrap().volume_db, -3);
    for _ in 0..10 {
        h.room.key(a, key('#'));
    }
    assert_eq!(h.room.member(a).unwrap().volume_db, GAIN_MAX_DB, "clamped");
    assert_eq!(
        h.room.key(a, key('5')),
        None,
        "an unmapped key does nothing"
    );
    assert_eq!(h.room.key(b, key('8')), Some(KeyAction::Leave));
    assert!(h.room.member(b).is_none());
    let ev = h.events();
    assert_eq!(
        ev,
        vec![
            RoomEvent::Muted {
                member: a,
                muted: true
            },
            RoomEvent::Muted {
                member: a,
                muted: false
            },
            RoomEvent::Left {
                member: b,
                tag: 1,
                reason: RemoveReason::Left
            },
        ]
    );
    // The volume keys change what a hears.
    h.join(2, false);
    h.inputs.insert(2, flat(4000));
    let out = h.tick();
    let g = (4000i64 * 16306 + 2048) >> 12;
    assert_eq!(out[&0], Heard::Own(flat(g as i16)));
}

#[test]
fn locked_and_full_rooms_refuse_joins() {
    let mut h = Harness::new(RoomSettings {
        max_members: 2,
        ..settings()
    });
    h.join(0, false);
    h.room.set_locked(true);
    let j = Joiner {
        moderator: false,
        muted: false,
        tag: 1,
    };
    assert_eq!(h.room.join(j.clone()), Err(JoinRefused::Locked));
    h.room.set_locked(false);
    h.join(1, false);
    assert_eq!(h.room.join(Joiner { tag: 2, ..j }), Err(JoinRefused::Full));
    let ev = h.events();
    assert!(ev.contains(&RoomEvent::Locked(true)));
    assert!(ev.contains(&RoomEvent::Locked(false)));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, RoomEvent::Joined { .. }))
            .count(),
        2
    );
}

#[test]
fn members_wait_unmixed_for_a_moderator() {
    let mut h = Harness::new(RoomSettings {
        wait_for_moderator: true,
        ..settings()
    });
    let a = h.join(0, false);
    let b = h.join(1, false);
    h.inputs.insert(0, flat(1000));
    h.inputs.insert(1, flat(2000));
    let out = h.tick();
    assert!(h.room.member(a).unwrap().waiting);
    assert_eq!(
        h.room.mix_frame(),
        &flat(0),
        "waiting members are not mixed"
    );
    // They hear the wait tone, not each other.
    assert!(matches!(out[&0], Heard::Own(f) if f != flat(2000)));
    assert!(!h.room.members().any(|m| h.room.is_talking(m.id)));
    h.join(2, true);
    let out = h.tick();
    assert!(!h.room.member(b).unwrap().waiting);
    assert_eq!(out[&2], Heard::Shared(flat(3000)));
    assert_eq!(out[&0], Heard::Own(flat(2000)));
}

#[test]
fn the_room_ends_with_its_last_moderator() {
    let mut h = Harness::new(RoomSettings {
        end_with_last_moderator: true,
        ..settings()
    });
    let m1 = h.join(0, true);
    let m2 = h.join(1, true);
    let a = h.join(2, false);
    h.events();
    assert!(h.room.leave(m1, RemoveReason::Left));
    assert!(!h.room.is_ended(), "another moderator remains");
    assert!(h.room.leave(m2, RemoveReason::Kicked));
    assert!(h.room.is_ended());
    assert!(h.room.is_empty());
    assert_eq!(
        h.events(),
        vec![
            RoomEvent::Left {
                member: m1,
                tag: 0,
                reason: RemoveReason::Left
            },
            RoomEvent::Left {
                member: m2,
                tag: 1,
                reason: RemoveReason::Kicked
            },
            RoomEvent::Left {
                member: a,
                tag: 2,
                reason: RemoveReason::Ended
            },
            RoomEvent::Ended,
        ]
    );
    let j = Joiner {
        moderator: true,
        muted: false,
        tag: 3,
    };
    assert_eq!(h.room.join(j), Err(JoinRefused::Ended));
}

#[test]
fn talker_changes_are_events_once_each() {
    let mut h = Harness::new(settings());
    let a = h.join(0, false);
    h.join(1, false);
    h.events();
    h.inputs.insert(0, flat(1000));
    h.tick();
    h.tick();
    assert_eq!(
        h.events(),
        vec![RoomEvent::Talking {
            member: a,
            talking: true
        }]
    );
    h.inputs.remove(&0);
    h.tick();
    h.tick();
    assert_eq!(
        h.events(),
        vec![RoomEvent::Talking {
            member: a,
            talking: false
        }]
    );
}

#[test]
fn a_members_prompt_replaces_what_it_hears_and_room_sounds_reach_everyone() {
    let mut h = Harness::new(settings());
    let a = h.join(0, false);
    h.join(1, false);
    h.inputs.insert(1, flat(500));
    let spec: ToneSpec = "1000/40@-10".parse().unwrap();
    h.room
        .play_to(a, Box::new(ToneGenerator::new(&spec, NARROW_RATE).unwrap()));
    let out = h.tick();
    let f = out[&0].frame();
    assert_ne!(f, flat(500), "the prompt replaces the room");
    assert_eq!(out[&1], Heard::Own(flat(0)), "the talker hears no one else");
    h.tick();
    let out = h.tick();
    assert_eq!(
        out[&0],
        Heard::Shared(flat(500)),
        "back to the room after the prompt"
    );

    h.room
        .play(Box::new(ToneGenerator::new(&spec, NARROW_RATE).unwrap()));
    let out = h.tick();
    let tone = {
        let mut g = ToneGenerator::new(&spec, NARROW_RATE).unwrap();
        let mut f = Frame::silence(NARROW_RATE);
        g.fill(&mut f);
        f
    };
    let with_talker = Frame::from(std::array::from_fn(|i| sat16(i64::from(tone[i]) + 500)));
    assert_eq!(out[&0], Heard::Shared(with_talker));
    assert_eq!(
        out[&1],
        Heard::Own(tone),
        "the talker hears the sound, not itself"
    );
}

#[derive(Debug, Clone)]
enum Change {
    Join(bool),
    Leave(usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A member joining or leaving between ticks changes what each other member hears by
    /// exactly that member's own contribution, nothing else.
    #[test]
    fn joins_and_leaves_change_only_their_own_contribution(
        amps in prop::collection::vec(
            (400i16..12000, any::<bool>()).prop_map(|(a, s)| if s { a } else { -a }),
            2..8,
        ),
        changes in prop::collection::vec(
            prop_oneof![any::<bool>().prop_map(Change::Join), (0usize..16).prop_map(Change::Leave)],
            1..12,
        ),
    ) {
        let mut h = Harness::new(settings());
        let mut tags: Vec<(usize, MemberId)> = Vec::new();
        let mut next = 0usize;
        let amp = |tag: usize| amps[tag % amps.len()];
        for _ in 0..2 {
            let id = h.join(next, false);
            h.inputs.insert(next, flat(amp(next)));
            tags.push((next, id));
            next += 1;
        }
        h.tick();
        let mut before = h.tick();
        for change in changes {
            let delta: Option<(usize, i64, bool)> = match change {
                Change::Join(loud) => {
                    let id = h.join(next, false);
                    let v = if loud { amp(next) } else { 0 };
                    h.inputs.insert(next, flat(v));
                    tags.push((next, id));
                    next += 1;
                    Some((next - 1, i64::from(v), true))
                }
                Change::Leave(i) if !tags.is_empty() => {
                    let (tag, id) = tags.remove(i % tags.len());
                    let v = i64::from(h.inputs.remove(&tag).map_or(0, |f| f[0]));
                    prop_assert!(h.room.leave(id, RemoveReason::Left));
                    Some((tag, v, false))
                }
                Change::Leave(_) => None,
            };
            let after = h.tick();
            let Some((who, v, joined)) = delta else { continue };
            // Inputs are either silent or well above the talker threshold.
            let contribution = v;
            for &(tag, _) in &tags {
                if tag == who {
                    continue;
                }
                let was = i64::from(before[&tag].frame()[0]);
                let now = i64::from(after[&tag].frame()[0]);
                // Compare unsaturated sums: reconstruct from the others' inputs.
                let others: i64 = tags
                    .iter()
                    .filter(|(t, _)| *t != tag)
                    .map(|(t, _)| i64::from(h.inputs[t][0]))
                    .sum();
                prop_assert_eq!(now, i64::from(sat16(others)), "tag {} after", tag);
                let expected_before = if joined { others - contribution } else { others + contribution };
                prop_assert_eq!(was, i64::from(sat16(expected_before)), "tag {} before", tag);
            }
            before = after;
        }
    }
}
