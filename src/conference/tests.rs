//! Mixer tests against a naive reference: each member's output is recomputed from that tick's
//! inputs alone, by summing every other contributor directly.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::mixer::{Gain, Inbound, MemberId, MemberKind, MixOutput, Mixer, MixerError, MixerEvent};
use super::vad::{AudioLevel, VadConfig};
use crate::media::frame::{Frame, FRAME_SAMPLES};

/// Talking exactly when a frame's level reaches −40 dBov: no memory between ticks.
fn instant_vad() -> VadConfig {
    VadConfig {
        start_dbov: -40.0,
        stop_dbov: -40.0,
        attack: Duration::ZERO,
        hangover: Duration::ZERO,
    }
}

fn sat16(x: i64) -> i16 {
    x.clamp(-32768, 32767) as i16
}

fn lcg_frame(seed: u64, amp: i32) -> Frame {
    let mut s = seed | 1;
    Frame::from(std::array::from_fn(|_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = ((s >> 33) as i64 % (2 * i64::from(amp) + 1)) as i32 - amp;
        r.clamp(-32768, 32767) as i16
    }))
}

fn flat(v: i16) -> Frame {
    Frame::from([v; FRAME_SAMPLES])
}

fn loud(l: u8) -> Option<AudioLevel> {
    AudioLevel::new(l)
}

/// What the test knows of a member's settings.
#[derive(Debug, Clone, Copy)]
struct Model {
    kind: MemberKind,
    muted: bool,
    deaf: bool,
    input_gain: Gain,
    output_gain: Gain,
}

impl Model {
    fn new(kind: MemberKind) -> Self {
        Self {
            kind,
            muted: false,
            deaf: false,
            input_gain: Gain::UNITY,
            output_gain: Gain::UNITY,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Shared(Frame),
    Own(Frame),
    Silence,
}

/// The reference: contributors are the unmuted speakers with a frame whom `talking` accepts;
/// member k hears `sat16(out_gain_k · Σ_{j contributor, j ≠ k} in_gain_j · in_j)`.
fn reference(
    members: &[(MemberId, Model)],
    inputs: &HashMap<MemberId, (Frame, Option<AudioLevel>)>,
    talking: impl Fn(MemberId) -> bool,
) -> (HashMap<MemberId, Expected>, Frame) {
    let contributors: Vec<(MemberId, Frame, Gain)> = members
        .iter()
        .filter(|(id, m)| m.kind == MemberKind::Speaker && !m.muted && talking(*id))
        .filter_map(|(id, m)| inputs.get(id).map(|(f, _)| (*id, *f, m.input_gain)))
        .collect();
    let heard = |me: Option<MemberId>, gain: Gain| -> Frame {
        Frame::from(std::array::from_fn(|i| {
            let s: i64 = contributors
                .iter()
                .filter(|(id, _, _)| Some(*id) != me)
                .map(|(_, f, g)| g.apply(i32::from(f[i])))
                .sum();
            sat16(gain.apply(s as i32))
        }))
    };
    let shared = heard(None, Gain::UNITY);
    let mut out = HashMap::new();
    for (id, m) in members {
        let contributes = contributors.iter().any(|(c, _, _)| c == id);
        let e = if m.deaf {
            Expected::Silence
        } else if contributes || !m.output_gain.is_unity() {
            Expected::Own(heard(Some(*id), m.output_gain))
        } else {
            Expected::Shared(shared)
        };
        out.insert(*id, e);
    }
    (out, shared)
}

fn check(
    mixer: &Mixer,
    members: &[(MemberId, Model)],
    expected: &HashMap<MemberId, Expected>,
    shared: &Frame,
) {
    assert_eq!(mixer.shared_frame(), shared, "shared frame");
    assert_eq!(mixer.outputs().count(), members.len());
    for (id, got) in mixer.outputs() {
        let want = expected[&id];
        match (got, want) {
            (MixOutput::Shared(f), Expected::Shared(w)) => {
                assert_eq!(*f, w, "{id:?}");
                assert!(
                    std::ptr::eq(f, mixer.shared_frame()),
                    "{id:?} not the shared frame"
                );
            }
            (MixOutput::Own(f), Expected::Own(w)) => assert_eq!(*f, w, "{id:?}"),
            (MixOutput::Silence, Expected::Silence) => {}
            (got, want) => panic!("{id:?}: got {got:?}, want {want:?}"),
        }
        assert_eq!(mixer.output(id), Ok(got));
    }
}

/// Runs a tick from a map of inputs; panics if the mixer asks for a muted or listen-only
/// member's frame, or for one twice.
fn tick(
    mixer: &mut Mixer,
    members: &[(MemberId, Model)],
    inputs: &HashMap<MemberId, (Frame, Option<AudioLevel>)>,
) {
    let mut asked = Vec::new();
    mixer.mix(|id| {
        assert!(!asked.contains(&id), "asked twice for {id:?}");
        asked.push(id);
        let m = members.iter().find(|(m, _)| *m == id).map(|(_, m)| *m);
        let m = m.unwrap_or_else(|| panic!("asked for non-member {id:?}"));
        assert!(
            m.kind == MemberKind::Speaker && !m.muted,
            "asked for {id:?}: {m:?}"
        );
        inputs
            .get(&id)
            .map(|(pcm, level)| Inbound { pcm, level: *level })
    });
}

struct Room {
    mixer: Mixer,
    members: Vec<(MemberId, Model)>,
}

impl Room {
    fn new(vad: VadConfig) -> Self {
        Self {
            mixer: Mixer::new(vad).expect("valid config"),
            members: Vec::new(),
        }
    }

    fn add(&mut self, kind: MemberKind) -> MemberId {
        let id = self.mixer.add_member(kind).expect("room has space");
        self.members.push((id, Model::new(kind)));
        id
    }

    fn model(&mut self, id: MemberId) -> &mut Model {
        &mut self
            .members
            .iter_mut()
            .find(|(m, _)| *m == id)
            .expect("a member")
            .1
    }

    /// One tick checked against the reference with instant talker detection.
    fn tick_checked(&mut self, inputs: &HashMap<MemberId, (Frame, Option<AudioLevel>)>) {
        tick(&mut self.mixer, &self.members, inputs);
        let (expected, shared) = reference(&self.members, inputs, |id| {
            inputs
                .get(&id)
                .is_some_and(|(_, l)| l.is_some_and(|l| l.get() <= 40))
        });
        check(&self.mixer, &self.members, &expected, &shared);
    }
}

#[test]
fn talkers_hear_the_others_and_listeners_share_one_frame() {
    let mut room = Room::new(instant_vad());
    let talkers: Vec<_> = (0..3).map(|_| room.add(MemberKind::Speaker)).collect();
    let listeners: Vec<_> = (0..4).map(|_| room.add(MemberKind::Speaker)).collect();
    let mut inputs = HashMap::new();
    for (k, &id) in talkers.iter().enumerate() {
        inputs.insert(id, (flat(1000 * (k as i16 + 1)), loud(20)));
    }
    for &id in &listeners {
        inputs.insert(id, (flat(7), loud(90)));
    }
    room.tick_checked(&inputs);
    let m = &room.mixer;
    assert_eq!(m.talker_count(), 3);
    assert_eq!(m.output(talkers[0]), Ok(MixOutput::Own(&flat(5000))));
    assert_eq!(m.output(talkers[1]), Ok(MixOutput::Own(&flat(4000))));
    assert_eq!(m.output(talkers[2]), Ok(MixOutput::Own(&flat(3000))));
    for &id in &listeners {
        assert_eq!(m.output(id), Ok(MixOutput::Shared(&flat(6000))));
    }
}

#[test]
fn saturation_happens_once_on_the_final_sum() {
    let mut room = Room::new(instant_vad());
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    let c = room.add(MemberKind::Speaker);
    let listener = room.add(MemberKind::Speaker);
    let inputs = HashMap::from([
        (a, (flat(30000), loud(3))),
        (b, (flat(30000), loud(3))),
        (c, (flat(-30000), loud(3))),
    ]);
    room.tick_checked(&inputs);
    let m = &room.mixer;
    // 30000 + 30000 − 30000: clipping the partial sum would leave 2767.
    assert_eq!(m.output(listener), Ok(MixOutput::Shared(&flat(30000))));
    assert_eq!(m.output(a), Ok(MixOutput::Own(&flat(0))));
    // 30000 + 30000 does not fit: clipped once, at the end.
    assert_eq!(m.output(c), Ok(MixOutput::Own(&flat(32767))));
}

#[test]
fn muted_members_are_not_summed_but_hear() {
    let mut room = Room::new(instant_vad());
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    let inputs = HashMap::from([(a, (flat(1000), loud(10))), (b, (flat(2000), loud(10)))]);
    room.tick_checked(&inputs);
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StartedTalking(a)));
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StartedTalking(b)));

    room.mixer.set_muted(b, true).expect("member");
    room.model(b).muted = true;
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StoppedTalking(b)));
    assert_eq!(room.mixer.poll_event(), None);
    room.tick_checked(&inputs);
    assert_eq!(room.mixer.output(a), Ok(MixOutput::Own(&flat(0))));
    assert_eq!(room.mixer.output(b), Ok(MixOutput::Shared(&flat(1000))));
    assert_eq!(room.mixer.is_talking(b), Ok(false));
    assert_eq!(room.mixer.poll_event(), None);

    room.mixer.set_muted(b, false).expect("member");
    room.model(b).muted = false;
    room.tick_checked(&inputs);
    assert_eq!(room.mixer.output(a), Ok(MixOutput::Own(&flat(2000))));
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StartedTalking(b)));
}

#[test]
fn deaf_members_get_silence_and_still_speak() {
    let mut room = Room::new(instant_vad());
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    room.mixer.set_deaf(a, true).expect("member");
    room.model(a).deaf = true;
    let inputs = HashMap::from([(a, (flat(1234), loud(10)))]);
    room.tick_checked(&inputs);
    assert_eq!(room.mixer.output(a), Ok(MixOutput::Silence));
    assert_eq!(MixOutput::Silence.frame(), &flat(0));
    assert_eq!(room.mixer.output(b), Ok(MixOutput::Shared(&flat(1234))));
    assert_eq!(room.mixer.is_deaf(a), Ok(true));
}

#[test]
fn input_gain_scales_what_others_hear() {
    let mut room = Room::new(instant_vad());
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    let listener = room.add(MemberKind::Speaker);
    let plus6 = Gain::from_db(6).expect("in range");
    room.mixer.set_input_gain(a, plus6).expect("member");
    room.model(a).input_gain = plus6;
    let inputs = HashMap::from([(a, (flat(1000), loud(10))), (b, (flat(100), loud(10)))]);
    room.tick_checked(&inputs);
    // +6 dB is ×1.995: 1000 → 1995.
    assert_eq!(room.mixer.output(b), Ok(MixOutput::Own(&flat(1995))));
    assert_eq!(
        room.mixer.output(listener),
        Ok(MixOutput::Shared(&flat(2095)))
    );
    // The talker's own, amplified, voice is what is taken out.
    assert_eq!(room.mixer.output(a), Ok(MixOutput::Own(&flat(100))));
}

#[test]
fn output_gain_needs_a_frame_of_its_own() {
    let mut room = Room::new(instant_vad());
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    let quiet = room.add(MemberKind::Speaker);
    let minus12 = Gain::from_db(-12).expect("in range");
    let plus12 = Gain::from_db(12).expect("in range");
    room.mixer.set_output_gain(quiet, minus12).expect("member");
    room.model(quiet).output_gain = minus12;
    room.mixer.set_output_gain(a, plus12).expect("member");
    room.model(a).output_gain = plus12;
    let inputs = HashMap::from([(a, (flat(4000), loud(10))), (b, (flat(12000), loud(10)))]);
    room.tick_checked(&inputs);
    // 16000 × 1029/4096 = 4019.5 → 4020.
    assert_eq!(room.mixer.output(quiet), Ok(MixOutput::Own(&flat(4020))));
    // 12000 × 3.98 clips, once.
    assert_eq!(room.mixer.output(a), Ok(MixOutput::Own(&flat(32767))));
    assert_eq!(room.mixer.shared_frame(), &flat(16000));
}

#[test]
fn gains_are_whole_db_within_range() {
    assert_eq!(Gain::from_db(13), Err(MixerError::GainOutOfRange(13)));
    assert_eq!(Gain::from_db(-13), Err(MixerError::GainOutOfRange(-13)));
    assert_eq!(
        Gain::from_db(i8::MIN),
        Err(MixerError::GainOutOfRange(i8::MIN))
    );
    assert_eq!(Gain::from_db(0), Ok(Gain::UNITY));
    for db in -12..=12i8 {
        let g = Gain::from_db(db).expect("in range");
        assert_eq!(g.db(), db);
        let want = 10000.0 * 10f64.powf(f64::from(db) / 20.0);
        assert!((g.apply(10000) as f64 - want).abs() < 3.0, "{db} dB");
        assert!((g.apply(-10000) as f64 + want).abs() < 3.0, "{db} dB");
    }
}

#[test]
fn a_recorder_hears_the_full_mix_and_is_never_asked_for_input() {
    let mut room = Room::new(instant_vad());
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    let recorder = room.add(MemberKind::ListenOnly);
    // A frame for the recorder would be summed if it were asked: `tick` panics if it is.
    let inputs = HashMap::from([
        (a, (flat(-500), loud(10))),
        (b, (flat(800), loud(10))),
        (recorder, (flat(9999), loud(0))),
    ]);
    room.tick_checked(&inputs);
    assert_eq!(
        room.mixer.output(recorder),
        Ok(MixOutput::Shared(&flat(300)))
    );
    assert_eq!(room.mixer.talker_count(), 2);
    assert_eq!(room.mixer.is_talking(recorder), Ok(false));
}

#[test]
fn a_talker_without_a_frame_contributes_nothing() {
    let mut room = Room::new(VadConfig {
        hangover: Duration::from_millis(100),
        ..instant_vad()
    });
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    let both = HashMap::from([(a, (flat(100), loud(10))), (b, (flat(200), loud(10)))]);
    tick(&mut room.mixer, &room.members, &both);
    let only_b = HashMap::from([(b, (flat(200), loud(10)))]);
    tick(&mut room.mixer, &room.members, &only_b);
    // Still talking (hang-over), but there is nothing of a's to take out.
    assert_eq!(room.mixer.is_talking(a), Ok(true));
    assert_eq!(room.mixer.output(a), Ok(MixOutput::Shared(&flat(200))));
    assert_eq!(room.mixer.output(b), Ok(MixOutput::Own(&flat(0))));
    assert_eq!(room.mixer.talkers().collect::<Vec<_>>(), vec![b]);
}

#[test]
fn joining_and_leaving_leave_the_others_alone() {
    let mut room = Room::new(instant_vad());
    let a = room.add(MemberKind::Speaker);
    let b = room.add(MemberKind::Speaker);
    let c = room.add(MemberKind::Speaker);
    let mut inputs = HashMap::from([
        (a, (flat(100), loud(10))),
        (b, (flat(200), loud(10))),
        (c, (flat(400), loud(10))),
    ]);
    room.tick_checked(&inputs);
    let before: Vec<_> = [a, b]
        .iter()
        .map(|&id| *room.mixer.output(id).expect("member").frame())
        .collect();

    let d = room.add(MemberKind::Speaker);
    assert_eq!(room.mixer.output(d), Ok(MixOutput::Silence));
    room.mixer.remove_member(c).expect("member");
    room.members.retain(|(id, _)| *id != c);
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StartedTalking(a)));
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StartedTalking(b)));
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StartedTalking(c)));
    assert_eq!(room.mixer.poll_event(), Some(MixerEvent::StoppedTalking(c)));
    let after: Vec<_> = [a, b]
        .iter()
        .map(|&id| *room.mixer.output(id).expect("member").frame())
        .collect();
    assert_eq!(before, after);

    assert_eq!(room.mixer.output(c), Err(MixerError::UnknownMember(c)));
    assert!(room.mixer.set_muted(c, true).is_err());
    // The slot is reused, the old id stays dead.
    let e = room.add(MemberKind::Speaker);
    assert_ne!(e, c);
    assert!(!room.mixer.contains(c));
    assert_eq!(room.mixer.len(), 4);

    inputs.remove(&c);
    inputs.insert(d, (flat(1000), loud(10)));
    room.tick_checked(&inputs);
    assert_eq!(room.mixer.output(a), Ok(MixOutput::Own(&flat(1200))));
    assert_eq!(room.mixer.output(e), Ok(MixOutput::Shared(&flat(1300))));
}

#[test]
fn talker_events_follow_energy_detection_once_per_transition() {
    let mut mixer = Mixer::new(VadConfig {
        attack: Duration::from_millis(40),
        hangover: Duration::from_millis(100),
        ..VadConfig::default()
    })
    .expect("valid config");
    let a = mixer.add_member(MemberKind::Speaker).expect("space");
    let b = mixer.add_member(MemberKind::Speaker).expect("space");
    // −20 dBov speech-level noise against −60 dBov line noise.
    let speech = lcg_frame(7, 5677);
    let hiss = lcg_frame(9, 57);
    let mut events = Vec::new();
    for t in 0..40 {
        let a_frame = if (5..15).contains(&t) { &speech } else { &hiss };
        mixer.mix(|id| Some(Inbound::new(if id == a { a_frame } else { &hiss })));
        while let Some(e) = mixer.poll_event() {
            events.push((t, e));
        }
        let talking = (6..20).contains(&t);
        assert_eq!(mixer.is_talking(a), Ok(talking), "tick {t}");
        assert_eq!(mixer.talker_count(), usize::from(talking), "tick {t}");
        let heard = if talking {
            a_frame
        } else {
            &crate::media::frame::SILENCE
        };
        assert_eq!(mixer.output(b), Ok(MixOutput::Shared(heard)), "tick {t}");
    }
    // Second loud frame completes the 40 ms attack; five quiet frames of hang-over are still
    // mixed, the sixth stops.
    assert_eq!(
        events,
        vec![
            (6, MixerEvent::StartedTalking(a)),
            (20, MixerEvent::StoppedTalking(a))
        ]
    );
}

#[test]
fn bad_talker_detection_settings_are_refused() {
    let bad = VadConfig {
        start_dbov: -50.0,
        stop_dbov: -40.0,
        ..VadConfig::default()
    };
    assert!(matches!(Mixer::new(bad), Err(MixerError::InvalidVad(_))));
    let mut mixer = Mixer::new(VadConfig::default()).expect("valid config");
    assert!(mixer.set_vad(bad).is_err());
}

// ---- property test ----

#[derive(Debug, Clone)]
enum Op {
    Add(bool),
    Remove(usize),
    Mute(usize, bool),
    Deaf(usize, bool),
    InputGain(usize, i8),
    OutputGain(usize, i8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(Op::Add),
        2 => any::<usize>().prop_map(Op::Remove),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Op::Mute(i, b)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Op::Deaf(i, b)),
        1 => (any::<usize>(), -12i8..=12).prop_map(|(i, g)| Op::InputGain(i, g)),
        1 => (any::<usize>(), -12i8..=12).prop_map(|(i, g)| Op::OutputGain(i, g)),
    ]
}

/// One member's input for a tick: present, RFC 6464 level, seed, amplitude.
type InputSpec = (bool, u8, u64, i32);

fn input_spec() -> impl Strategy<Value = InputSpec> {
    (
        prop::bool::weighted(0.85),
        prop_oneof![0u8..=45, 35u8..=127],
        any::<u64>(),
        prop_oneof![Just(0), Just(40), 1000..=12000, Just(32768)],
    )
}

fn tick_plan() -> impl Strategy<Value = (Vec<Op>, Vec<InputSpec>)> {
    (
        prop::collection::vec(op(), 0..4),
        prop::collection::vec(input_spec(), 12),
    )
}

fn apply(room: &mut Room, op: &Op) {
    let n = room.members.len();
    let pick = |i: usize| (n > 0).then(|| room.members[i % n].0);
    match *op {
        Op::Add(listen_only) if n < 12 => {
            let kind = if listen_only {
                MemberKind::ListenOnly
            } else {
                MemberKind::Speaker
            };
            room.add(kind);
        }
        Op::Add(_) => {}
        Op::Remove(i) => {
            if let Some(id) = pick(i) {
                room.mixer.remove_member(id).expect("member");
                room.members.retain(|(m, _)| *m != id);
            }
        }
        Op::Mute(i, on) => {
            if let Some(id) = pick(i) {
                room.mixer.set_muted(id, on).expect("member");
                room.model(id).muted = on;
            }
        }
        Op::Deaf(i, on) => {
            if let Some(id) = pick(i) {
                room.mixer.set_deaf(id, on).expect("member");
                room.model(id).deaf = on;
            }
        }
        Op::InputGain(i, db) => {
            if let Some(id) = pick(i) {
                let g = Gain::from_db(db).expect("in range");
                room.mixer.set_input_gain(id, g).expect("member");
                room.model(id).input_gain = g;
            }
        }
        Op::OutputGain(i, db) => {
            if let Some(id) = pick(i) {
                let g = Gain::from_db(db).expect("in range");
                room.mixer.set_output_gain(id, g).expect("member");
                room.model(id).output_gain = g;
            }
        }
    }
}

fn inputs_for(
    room: &Room,
    specs: &[InputSpec],
    with_level: bool,
) -> HashMap<MemberId, (Frame, Option<AudioLevel>)> {
    room.members
        .iter()
        .zip(specs)
        .filter(|(_, (present, ..))| *present)
        .map(|((id, _), &(_, level, seed, amp))| {
            let level = if with_level {
                AudioLevel::new(level)
            } else {
                None
            };
            (*id, (lcg_frame(seed, amp), level))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Talking decided by each frame's level alone, so the reference needs nothing but the
    /// tick's inputs and the members' settings.
    #[test]
    fn every_output_matches_the_naive_mix(plan in prop::collection::vec(tick_plan(), 1..40)) {
        let mut room = Room::new(instant_vad());
        for (ops, specs) in &plan {
            for op in ops {
                apply(&mut room, op);
            }
            let inputs = inputs_for(&room, specs, true);
            room.tick_checked(&inputs);
            for (id, m) in &room.members {
                let want = m.kind == MemberKind::Speaker
                    && !m.muted
                    && inputs.get(id).is_some_and(|(_, l)| l.is_some_and(|l| l.get() <= 40));
                prop_assert_eq!(room.mixer.is_talking(*id), Ok(want));
            }
            while room.mixer.poll_event().is_some() {}
        }
    }

    /// Energy detection with attack, hang-over and hysteresis: whoever the mixer has talking
    /// is mixed exactly by the formula, and its events match its state changes one for one.
    #[test]
    fn outputs_and_events_agree_with_stateful_detection(
        plan in prop::collection::vec(tick_plan(), 1..40),
    ) {
        let vad = VadConfig {
            attack: Duration::from_millis(40),
            hangover: Duration::from_millis(60),
            ..VadConfig::default()
        };
        let mut room = Room::new(vad);
        let mut talking: HashMap<MemberId, bool> = HashMap::new();
        let drain = |mixer: &mut Mixer, talking: &mut HashMap<MemberId, bool>| {
            while let Some(e) = mixer.poll_event() {
                let (id, now) = match e {
                    MixerEvent::StartedTalking(id) => (id, true),
                    MixerEvent::StoppedTalking(id) => (id, false),
                };
                let before = talking.insert(id, now).unwrap_or(false);
                assert_ne!(before, now, "{e:?} repeats the state");
            }
        };
        for (ops, specs) in &plan {
            for op in ops {
                apply(&mut room, op);
            }
            drain(&mut room.mixer, &mut talking);
            let inputs = inputs_for(&room, specs, false);
            tick(&mut room.mixer, &room.members, &inputs);
            drain(&mut room.mixer, &mut talking);
            for (id, _) in &room.members {
                let state = room.mixer.is_talking(*id).expect("member");
                prop_assert_eq!(talking.get(id).copied().unwrap_or(false), state);
            }
            let mixer = &room.mixer;
            let (expected, shared) = reference(&room.members, &inputs, |id| {
                mixer.is_talking(id).unwrap_or(false)
            });
            check(mixer, &room.members, &expected, &shared);
        }
    }
}

/// A mixer at 16 kHz sums 16 kHz frames; a frame at another rate is only measured for
/// talker detection, and `may_sum` tells the caller which frames to convert.
#[test]
fn a_wideband_mixer_sums_its_rate_and_measures_other_rates_only() {
    let wide = crate::media::frame::ClockRate::HZ_16000;
    let mut mixer = Mixer::new(instant_vad()).unwrap();
    let (a, b, c) = (
        mixer.add_member(MemberKind::Speaker).unwrap(),
        mixer.add_member(MemberKind::Speaker).unwrap(),
        mixer.add_member(MemberKind::Speaker).unwrap(),
    );
    mixer.set_rate(wide);
    assert_eq!(mixer.rate(), wide);
    let loud_wide = Frame::from_samples(wide, &[3000; 320]);
    let loud_narrow = flat(3000);
    let quiet_narrow = flat(5);
    assert!(
        mixer.may_sum(a, &loud_narrow),
        "loud enough to start talking"
    );
    assert!(
        !mixer.may_sum(a, &quiet_narrow),
        "line noise cannot start it"
    );
    mixer.mix(|id| {
        Some(Inbound::new(match id {
            _ if id == a => &loud_wide,
            _ if id == b => &loud_narrow,
            _ => &quiet_narrow,
        }))
    });
    // a is summed; b talks (its frame was loud) but a narrowband frame is not summed.
    assert_eq!(mixer.is_talking(b), Ok(true));
    assert_eq!(mixer.talker_count(), 1);
    let shared = *mixer.output(c).unwrap().frame();
    assert_eq!(shared.rate(), wide);
    assert!(shared.iter().all(|&s| s == 3000));
    assert!(
        mixer.may_sum(b, &quiet_narrow),
        "a talker's frames may be summed"
    );
    match mixer.output(a).unwrap() {
        MixOutput::Own(f) => assert!(f.rate() == wide && f.iter().all(|&s| s == 0)),
        other => panic!("a talker hears the others alone: {other:?}"),
    }
}

/// Which members may leave quiet packets undecoded: anyone not talking, below the level that
/// would start it talking; a talker through its hang-over decodes everything.
#[test]
fn quiet_floor_follows_talker_detection() {
    let mut mixer = Mixer::new(VadConfig {
        attack: Duration::from_millis(40),
        hangover: Duration::from_millis(100),
        ..VadConfig::default()
    })
    .expect("valid config");
    let a = mixer.add_member(MemberKind::Speaker).expect("space");
    let muted = mixer.add_member(MemberKind::Speaker).expect("space");
    let recorder = mixer.add_member(MemberKind::ListenOnly).expect("space");
    mixer.set_muted(muted, true).expect("member");
    // −40 dBov starts a member talking: 40 is loud enough, 41 may be skipped.
    assert_eq!(mixer.quiet_level(), AudioLevel::new(40));
    let silence = flat(0);
    let tick = |mixer: &mut Mixer, level: u8| {
        mixer.mix(|id| {
            (id == a || id == muted).then(|| Inbound {
                pcm: &silence,
                level: AudioLevel::new(level),
            })
        });
    };
    let floors = |mixer: &Mixer| {
        (
            mixer.quiet_floor(a),
            mixer.quiet_floor(muted),
            mixer.quiet_floor(recorder),
        )
    };
    let quiet = AudioLevel::new(40);
    assert_eq!(floors(&mixer), (quiet, quiet, None));
    // Two loud frames are the attack: talking from the second on, decoding everything.
    tick(&mut mixer, 20);
    assert_eq!(mixer.quiet_floor(a), quiet);
    tick(&mut mixer, 40);
    assert_eq!(mixer.is_talking(a), Ok(true));
    assert_eq!(floors(&mixer), (None, quiet, None));
    // Quiet frames through the 100 ms hang-over keep it decoding; the sixth stops it.
    for _ in 0..5 {
        tick(&mut mixer, 127);
        assert_eq!(mixer.quiet_floor(a), None);
    }
    tick(&mut mixer, 127);
    assert_eq!(mixer.is_talking(a), Ok(false));
    assert_eq!(floors(&mixer), (quiet, quiet, None));
    // The frame that may start it talking is judged by its level, unconverted.
    assert!(mixer.may_sum_with(a, &silence, AudioLevel::new(40)));
    assert!(!mixer.may_sum_with(a, &silence, AudioLevel::new(41)));
    assert!(!mixer.may_sum_with(muted, &silence, AudioLevel::new(0)));

    // A room whose threshold is the top of the scale has no level quiet enough to skip.
    let loudest = Mixer::new(VadConfig {
        start_dbov: 0.0,
        stop_dbov: -10.0,
        ..VadConfig::default()
    })
    .expect("valid config");
    assert_eq!(loudest.quiet_level(), AudioLevel::new(0));
    let everything = Mixer::new(VadConfig {
        start_dbov: -127.0,
        stop_dbov: -127.0,
        ..VadConfig::default()
    })
    .expect("valid config");
    assert_eq!(everything.quiet_level(), AudioLevel::new(127));
}
