//! Recording of a conference room: the room's mix as one WAV, optionally one aligned WAV per
//! member, and a timeline of joins, leaves, mutes and talk spurts.
//!
//! [`RoomRecorder`] is sans-IO and lives on the media worker next to its room. It only
//! queues work for the [`RecordingWriter`](crate::media::record::RecordingWriter) thread,
//! which owns the files: no file I/O happens on the tick, and once membership is stable
//! [`RoomRecorder::push_tick`] allocates nothing.
//!
//! - The **mixed** recording is an ordinary recording whose sidecar names the room and
//!   its timeline (`ID.timeline.json`).
//! - A member's **track** is a recording with id `ID-mN` whose sidecar names the room, the
//!   member's Call-ID and caller, and the mixed recording (`track_of`). Tracks are aligned
//!   sample for sample with the mix by padding with silence: before the member first
//!   joined, while it was away, muted or sent nothing. Padding rather than an offset field
//!   means any player, editor or transcriber lines the files up by position alone, and a
//!   rejoin needs no second offset; the silence costs only what the writer spends filling
//!   it (16 kB/s of disk), never queue space, since [`RecorderHandle::skip`] just counts it.
//!   A member is identified by its call: one who leaves and rejoins keeps its number and
//!   track.
//! - The **timeline** is kept by the writer as JSON Lines while recording and turned into
//!   one JSON document when the mixed recording ends or is repaired after a crash. Offsets
//!   are milliseconds since the `now` given to [`RoomRecorder::start`].
//!
//! Events: the recorder has no bus. The room publishes `RecordingStarted` with
//! [`RoomRecorder::id`] after [`RoomRecorder::start`], and `RecordingFinished` with
//! [`RoomRecorder::id`] and [`RoomRecorder::duration_ms`] when it calls
//! [`RoomRecorder::finish`]. Tracks and the timeline are found from the mixed recording (its
//! sidecar and timeline), so they get no events of their own.

use std::collections::HashMap;
use std::time::Instant;

use crate::conference::MemberId;
use crate::media::frame::{samples_at, ClockRate, Frame, FRAME, NARROW_RATE};
use crate::media::record::{
    names, RecordError, RecordMode, RecordOutcome, RecorderFactory, RecorderHandle, RecordingMeta,
    RoomFields, StartOptions, StopReason, TimelineKind, TimelineMember,
};
use crate::media::resample::RateAdapter;

/// How a room is recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomRecordOptions {
    /// Also record each member on its own track.
    pub multitrack: bool,
}

/// Someone who took part, identified by the call; kept after leaving in case of a rejoin.
struct Participant {
    /// Number in the timeline, from 1.
    number: u64,
    /// The member's own recording (multitrack only).
    track: Option<RecorderHandle>,
    /// Ticks of the track already pushed or skipped.
    written: u64,
    muted: bool,
    talking: bool,
    /// The track's rate: the member's when it first joined.
    rate: ClockRate,
    /// Carries the member's audio to the track's rate once they differ (a rejoin or a codec
    /// change at another rate).
    convert: Option<Box<(RateAdapter, Frame)>>,
}

/// The recording of one room, driven by the room on its media worker.
pub struct RoomRecorder {
    factory: RecorderFactory,
    room: String,
    mixed: RecorderHandle,
    started: Instant,
    multitrack: bool,
    /// Ticks pushed so far; the position of the next frame in every file.
    ticks: u64,
    /// The mix's rate in the file: the room's at the first tick with a member in it.
    rate: Option<ClockRate>,
    /// Carries the mix to `rate` once the room mixes at another.
    mix_convert: RateAdapter,
    mix_frame: Frame,
    participants: Vec<Participant>,
    by_call: HashMap<String, usize>,
    /// By [`MemberId::index`]: the member now in that slot and its participant.
    slots: Vec<Option<(MemberId, usize)>>,
}

impl RoomRecorder {
    /// Starts recording `room`; the writer creates the files, so this does no file I/O.
    /// Fails only if the writer has exited.
    pub fn start(
        factory: &RecorderFactory,
        room: &str,
        opts: RoomRecordOptions,
        now: Instant,
    ) -> Result<RoomRecorder, RecordError> {
        let mixed = factory.start_with(
            RecordingMeta {
                call_id: String::new(),
                from: String::new(),
                to: String::new(),
                room: Some(room.to_owned()),
                mode: RecordMode::MixedMono,
                rate: NARROW_RATE,
            },
            StartOptions {
                timeline: true,
                ..StartOptions::default()
            },
        )?;
        tracing::debug!(room, id = %mixed.id(), multitrack = opts.multitrack, "room recording started");
        Ok(RoomRecorder {
            factory: factory.clone(),
            room: room.to_owned(),
            mixed,
            started: now,
            multitrack: opts.multitrack,
            ticks: 0,
            rate: None,
            mix_convert: RateAdapter::new(),
            mix_frame: Frame::silence(NARROW_RATE),
            participants: Vec::new(),
            by_call: HashMap::new(),
            slots: Vec::new(),
        })
    }

    /// The mixed recording's id; its files are `ID.wav`, `ID.json` and `ID.timeline.json`.
    pub fn id(&self) -> &str {
        self.mixed.id()
    }

    /// Length of the audio pushed so far, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.ticks * FRAME.as_millis() as u64
    }

    /// The id of `member`'s track, if it is present and tracks are recorded.
    pub fn track_id(&self, member: MemberId) -> Option<&str> {
        let p = self.participant(member)?;
        self.participants[p].track.as_ref().map(RecorderHandle::id)
    }

    /// Chunks dropped so far because the writer's queue was full (mix and tracks).
    pub fn dropped_chunks(&self) -> u64 {
        self.mixed.dropped_chunks()
            + self
                .participants
                .iter()
                .filter_map(|p| p.track.as_ref())
                .map(RecorderHandle::dropped_chunks)
                .sum::<u64>()
    }

    fn at_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    fn participant(&self, member: MemberId) -> Option<usize> {
        match self.slots.get(member.index()) {
            Some(Some((id, p))) if *id == member => Some(*p),
            _ => None,
        }
    }

    fn note(&self, now: Instant, kind: TimelineKind, p: usize) {
        self.mixed
            .note(self.at_ms(now), kind, self.participants[p].number);
    }

    /// `member` joined with call `call_id` from `from`, its audio at `rate`; a call seen
    /// before keeps its number and track. Allocates (a track is started on the first join).
    pub fn member_joined(
        &mut self,
        now: Instant,
        member: MemberId,
        call_id: &str,
        from: &str,
        rate: ClockRate,
    ) {
        if self.participant(member).is_some() {
            return;
        }
        let p = match self.by_call.get(call_id) {
            Some(&p) => p,
            None => self.add_participant(call_id, from, rate),
        };
        let slot = member.index();
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        self.slots[slot] = Some((member, p));
        let part = &mut self.participants[p];
        // A rejoin starts unmuted and silent, as the mixer's new member does.
        part.muted = false;
        part.talking = false;
        self.note(now, TimelineKind::Join, p);
    }

    fn add_participant(&mut self, call_id: &str, from: &str, rate: ClockRate) -> usize {
        let number = self.participants.len() as u64 + 1;
        let track = if self.multitrack {
            let started = self.factory.start_with(
                RecordingMeta {
                    call_id: call_id.to_owned(),
                    from: from.to_owned(),
                    to: String::new(),
                    room: Some(self.room.clone()),
                    mode: RecordMode::Inbound,
                    rate,
                },
                StartOptions {
                    id: Some(names::track_id(self.mixed.id(), number)),
                    room: RoomFields {
                        track_of: Some(self.mixed.id().to_owned()),
                        member: Some(number),
                        ..RoomFields::default()
                    },
                    timeline: false,
                },
            );
            match started {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::error!(room = %self.room, call_id, error = %e, "cannot start member track");
                    None
                }
            }
        } else {
            None
        };
        self.mixed.register_member(TimelineMember {
            member: number,
            call_id: call_id.to_owned(),
            from: from.to_owned(),
            track: track.as_ref().map(|t| t.id().to_owned()),
        });
        let p = self.participants.len();
        self.participants.push(Participant {
            number,
            track,
            written: 0,
            muted: false,
            talking: false,
            rate,
            convert: None,
        });
        self.by_call.insert(call_id.to_owned(), p);
        p
    }

    /// `member` left; its track keeps running as silence in case the call rejoins.
    pub fn member_left(&mut self, now: Instant, member: MemberId) {
        let Some(p) = self.participant(member) else {
            return;
        };
        if self.participants[p].talking {
            self.participants[p].talking = false;
            self.note(now, TimelineKind::TalkStop, p);
        }
        self.note(now, TimelineKind::Leave, p);
        self.slots[member.index()] = None;
    }

    /// `member` was muted or unmuted; a muted member's track is silence.
    pub fn member_muted(&mut self, now: Instant, member: MemberId, muted: bool) {
        let Some(p) = self.participant(member) else {
            return;
        };
        if self.participants[p].muted == muted {
            return;
        }
        self.participants[p].muted = muted;
        let kind = if muted {
            TimelineKind::Mute
        } else {
            TimelineKind::Unmute
        };
        self.note(now, kind, p);
    }

    /// `member` started or stopped talking.
    pub fn member_talking(&mut self, now: Instant, member: MemberId, talking: bool) {
        let Some(p) = self.participant(member) else {
            return;
        };
        if self.participants[p].talking == talking {
            return;
        }
        self.participants[p].talking = talking;
        let kind = if talking {
            TimelineKind::TalkStart
        } else {
            TimelineKind::TalkStop
        };
        self.note(now, kind, p);
    }

    /// Once per tick: the full room mix and each member's input frame at its own rate
    /// (None: nothing heard from it). Never blocks, does no file I/O, and allocates nothing
    /// once the room's members and rates are settled.
    ///
    /// The mix is recorded at the room's rate at the first tick with a member in it (the
    /// ticks before are silence at that rate); should the room mix at another rate later (a
    /// wider member joined), the mix is converted to the file's.
    pub fn push_tick(
        &mut self,
        mix: &Frame,
        inputs: &mut dyn Iterator<Item = (MemberId, Option<&Frame>)>,
    ) {
        let mut inputs = inputs.peekable();
        let rate = match self.rate {
            Some(rate) => rate,
            None if inputs.peek().is_none() => {
                // Nobody in the room yet: its rate is not known.
                self.ticks += 1;
                return;
            }
            None => {
                let rate = mix.rate();
                self.mixed.set_rate(rate);
                self.mixed.skip(self.ticks * samples_at(rate) as u64);
                self.rate = Some(rate);
                rate
            }
        };
        if mix.rate() == rate {
            self.mixed.push(mix);
        } else {
            self.mix_convert.convert(mix, rate, &mut self.mix_frame);
            self.mixed.push(&self.mix_frame);
        }
        let tick = self.ticks;
        self.ticks += 1;
        if !self.multitrack {
            return;
        }
        for (member, frame) in inputs {
            let Some(p) = self.participant(member) else {
                continue;
            };
            let part = &mut self.participants[p];
            let Some(track) = part.track.as_ref() else {
                continue;
            };
            if part.written > tick {
                // The same member twice in one tick: the first frame counts.
                continue;
            }
            // Ticks the member missed (before joining, away, or left out of `inputs`).
            let frame_len = samples_at(part.rate) as u64;
            track.skip((tick - part.written) * frame_len);
            match frame {
                Some(f) if !part.muted && f.rate() == part.rate => {
                    track.push(f);
                }
                Some(f) if !part.muted => {
                    let c = part.convert.get_or_insert_with(|| {
                        Box::new((RateAdapter::new(), Frame::silence(part.rate)))
                    });
                    c.0.convert(f, part.rate, &mut c.1);
                    track.push(&c.1);
                }
                _ => track.skip(frame_len),
            }
            part.written = tick + 1;
        }
    }

    /// Ends the recording: open talk spurts are closed at `now`, every track is padded to
    /// the mix's length, and the writer finalises the files and the timeline.
    pub fn finish(mut self, now: Instant) {
        for p in 0..self.participants.len() {
            if self.participants[p].talking {
                self.participants[p].talking = false;
                self.note(now, TimelineKind::TalkStop, p);
            }
        }
        for part in self.participants.drain(..) {
            if let Some(track) = part.track {
                let missed = self.ticks - part.written.min(self.ticks);
                track.skip(missed * samples_at(part.rate) as u64);
                track.finish(RecordOutcome::new(StopReason::Requested));
            }
        }
        if self.rate.is_none() {
            // No one ever joined: silence as long as the recording ran, at the rate it began.
            self.mixed.skip(self.ticks * samples_at(NARROW_RATE) as u64);
        }
        tracing::debug!(room = %self.room, id = %self.mixed.id(), duration_ms = self.duration_ms(), "room recording finished");
        self.mixed.finish(RecordOutcome::new(StopReason::Requested));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::index::{ListFilter, RecordingIndex};
    use crate::conference::{MemberKind, Mixer, VadConfig};
    use crate::media::record::tests::{files, run_crash_child, TempDir};
    use crate::media::record::{
        repair_dir, RecordingWriter, Sidecar, SidecarState, Timeline, TimelineEntry,
    };
    use std::path::Path;
    use std::thread::JoinHandle;
    use std::time::Duration;

    fn samples(path: &Path) -> Vec<i16> {
        hound::WavReader::open(path)
            .unwrap()
            .samples::<i16>()
            .map(|s| s.unwrap())
            .collect()
    }

    /// A frame whose every sample says who sent it and when (never zero).
    fn frame(who: i16, tick: u64) -> [i16; 160] {
        [who * 1000 + tick as i16 + 1; 160]
    }

    fn mix_frame(tick: u64) -> [i16; 160] {
        let mut f = [0i16; 160];
        for (i, s) in f.iter_mut().enumerate() {
            *s = (tick as i16).wrapping_mul(160).wrapping_add(i as i16) | 1;
        }
        f
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn writer(dir: &Path) -> (RecorderFactory, JoinHandle<()>) {
        RecordingWriter::spawn(dir).unwrap()
    }

    fn tick(
        rec: &mut RoomRecorder,
        t: u64,
        inputs: &[(MemberId, Option<[i16; 160]>)],
    ) -> [i16; 160] {
        let mix = mix_frame(t);
        let frames: Vec<(MemberId, Option<Frame>)> = inputs
            .iter()
            .map(|(m, f)| (*m, f.map(Frame::from)))
            .collect();
        let mut it = frames.iter().map(|(m, f)| (*m, f.as_ref()));
        rec.push_tick(&Frame::from(mix), &mut it);
        mix
    }

    #[test]
    fn mixed_wav_holds_exactly_the_pushed_mix_and_no_tracks_without_multitrack() {
        let tmp = TempDir::new("mixed");
        let (factory, thread) = writer(&tmp.0);
        let t0 = Instant::now();
        let mut mixer = Mixer::new(VadConfig::default()).unwrap();
        let a = mixer.add_member(MemberKind::Speaker).unwrap();
        let mut rec =
            RoomRecorder::start(&factory, "lobby", RoomRecordOptions::default(), t0).unwrap();
        let id = rec.id().to_owned();
        rec.member_joined(t0, a, "call-a", "sip:a@x", NARROW_RATE);
        let mut expect = Vec::new();
        for t in 0..75 {
            expect.extend(tick(&mut rec, t, &[(a, Some(frame(1, t)))]));
        }
        assert_eq!(rec.duration_ms(), 1500);
        assert_eq!(rec.track_id(a), None);
        rec.finish(ms(t0, 1500));
        drop(factory);
        thread.join().unwrap();

        assert_eq!(
            files(&tmp.0),
            [
                format!("{id}.json"),
                format!("{id}.timeline.json"),
                format!("{id}.wav")
            ]
        );
        assert_eq!(samples(&tmp.0.join(format!("{id}.wav"))), expect);
        let (sc, room) = Sidecar::read_with(&Sidecar::path(&tmp.0, &id)).unwrap();
        assert_eq!(sc.room.as_deref(), Some("lobby"));
        assert_eq!(sc.state, SidecarState::Complete);
        assert_eq!(sc.mode, RecordMode::MixedMono);
        assert_eq!(sc.duration_ms, 1500);
        assert_eq!(room.timeline, Some(format!("{id}.timeline.json")));
        let tl = Timeline::read(&Timeline::path(&tmp.0, &id)).unwrap();
        assert_eq!(tl.members.len(), 1);
        assert_eq!(tl.members[0].track, None);
        assert_eq!((tl.room.as_str(), tl.duration_ms), ("lobby", 1500));
    }

    /// Every `(who, tick)` of a track: 0 for silence, else the sender's tag.
    fn ticks_of(track: &[i16]) -> Vec<i16> {
        track
            .chunks(160)
            .map(|c| {
                assert!(c.iter().all(|&s| s == c[0]), "frames are never mixed up");
                c[0]
            })
            .collect()
    }

    #[test]
    fn tracks_are_aligned_with_the_mix_and_the_timeline_names_everyone() {
        let tmp = TempDir::new("tracks");
        let (factory, thread) = writer(&tmp.0);
        let t0 = Instant::now();
        let mut mixer = Mixer::new(VadConfig::default()).unwrap();
        let a = mixer.add_member(MemberKind::Speaker).unwrap();
        let mut rec = RoomRecorder::start(
            &factory,
            "board",
            RoomRecordOptions { multitrack: true },
            t0,
        )
        .unwrap();
        let id = rec.id().to_owned();
        rec.member_joined(t0, a, "call-a", "sip:alice@x", NARROW_RATE);
        let mut b = None;
        let mut b_first = None;
        for t in 0..40u64 {
            let now = ms(t0, t * 20);
            match t {
                10 => {
                    let m = mixer.add_member(MemberKind::Speaker).unwrap();
                    rec.member_joined(now, m, "call-b", "sip:bob@x", NARROW_RATE);
                    b_first = Some(m);
                    b = Some(m);
                }
                12 => rec.member_talking(now, a, true),
                15 => rec.member_talking(now, a, false),
                20 => rec.member_muted(now, a, true),
                24 => rec.member_muted(now, a, false),
                25 => {
                    let m = b.take().unwrap();
                    rec.member_talking(now, m, true);
                    rec.member_left(now, m);
                    mixer.remove_member(m).unwrap();
                }
                30 => {
                    // The same call comes back as a new mixer member.
                    let m = mixer.add_member(MemberKind::Speaker).unwrap();
                    assert_ne!(Some(m), b_first);
                    rec.member_joined(now, m, "call-b", "sip:bob@x", NARROW_RATE);
                    b = Some(m);
                }
                35 => rec.member_talking(now, b.unwrap(), true),
                _ => {}
            }
            let mut inputs = vec![(a, (!(5..8).contains(&t)).then(|| frame(1, t)))];
            if let Some(m) = b {
                inputs.push((m, Some(frame(2, t))));
            }
            tick(&mut rec, t, &inputs);
        }
        let a_track = rec.track_id(a).unwrap().to_owned();
        let b_track = rec.track_id(b.unwrap()).unwrap().to_owned();
        assert_eq!(a_track, format!("{id}-m1"));
        assert_eq!(b_track, format!("{id}-m2"));
        rec.finish(ms(t0, 800));
        drop(factory);
        thread.join().unwrap();

        let names = files(&tmp.0);
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".part") || n.ends_with(".jsonl")),
            "finish renames everything: {names:?}"
        );
        assert_eq!(names.len(), 3 + 2 * 2, "{names:?}");

        let wav = |id: &str| samples(&tmp.0.join(format!("{id}.wav")));
        assert_eq!(wav(&id).len(), 40 * 160);
        let want_a: Vec<i16> = (0..40u64)
            .map(|t| {
                if (5..8).contains(&t) || (20..24).contains(&t) {
                    0
                } else {
                    frame(1, t)[0]
                }
            })
            .collect();
        assert_eq!(ticks_of(&wav(&a_track)), want_a);
        let want_b: Vec<i16> = (0..40u64)
            .map(|t| {
                if (10..25).contains(&t) || t >= 30 {
                    frame(2, t)[0]
                } else {
                    0
                }
            })
            .collect();
        assert_eq!(ticks_of(&wav(&b_track)), want_b);

        for (track, n, call, from) in [
            (&a_track, 1, "call-a", "sip:alice@x"),
            (&b_track, 2, "call-b", "sip:bob@x"),
        ] {
            let (sc, room) = Sidecar::read_with(&Sidecar::path(&tmp.0, track)).unwrap();
            assert_eq!(sc.room.as_deref(), Some("board"));
            assert_eq!((sc.call_id.as_str(), sc.from.as_str()), (call, from));
            assert_eq!(sc.state, SidecarState::Complete);
            assert_eq!(sc.duration_ms, 800);
            assert_eq!(room.track_of.as_deref(), Some(id.as_str()));
            assert_eq!(room.member, Some(n));
        }

        let tl = Timeline::read(&Timeline::path(&tmp.0, &id)).unwrap();
        assert_eq!(tl.state, SidecarState::Complete);
        assert_eq!(tl.duration_ms, 800);
        let got: Vec<(u64, TimelineKind, u64)> = tl
            .events
            .iter()
            .map(|e| (e.at_ms, e.event, e.member))
            .collect();
        use TimelineKind::*;
        assert_eq!(
            got,
            [
                (0, Join, 1),
                (200, Join, 2),
                (240, TalkStart, 1),
                (300, TalkStop, 1),
                (400, Mute, 1),
                (480, Unmute, 1),
                (500, TalkStart, 2),
                (500, TalkStop, 2),
                (500, Leave, 2),
                (600, Join, 2),
                (700, TalkStart, 2),
                (800, TalkStop, 2),
            ]
        );
        let e: &TimelineEntry = &tl.events[1];
        assert_eq!(
            (e.call_id.as_str(), e.from.as_str(), e.track.as_deref()),
            ("call-b", "sip:bob@x", Some(b_track.as_str()))
        );
        assert!(tl
            .events
            .iter()
            .filter(|e| e.member == 1)
            .all(|e| e.track.as_deref() == Some(a_track.as_str())));
        assert_eq!(tl.members.len(), 2);

        // The API's index lists the mix and both tracks under the room, and no timeline.
        let index = RecordingIndex::load(&tmp.0).unwrap();
        let page = index.list(&ListFilter {
            room: Some("board".into()),
            limit: 10,
            ..ListFilter::default()
        });
        let mut ids: Vec<&str> = page.items.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, [id.as_str(), a_track.as_str(), b_track.as_str()]);
        assert_eq!(
            crate::media::record::list_recordings(&tmp.0).unwrap().len(),
            3
        );
    }

    #[test]
    fn a_member_left_out_of_a_tick_is_padded_and_unknown_members_are_ignored() {
        let tmp = TempDir::new("gaps");
        let (factory, thread) = writer(&tmp.0);
        let t0 = Instant::now();
        let mut mixer = Mixer::new(VadConfig::default()).unwrap();
        let a = mixer.add_member(MemberKind::Speaker).unwrap();
        let stranger = mixer.add_member(MemberKind::Speaker).unwrap();
        let mut rec =
            RoomRecorder::start(&factory, "r", RoomRecordOptions { multitrack: true }, t0).unwrap();
        rec.member_joined(t0, a, "call-a", "a", NARROW_RATE);
        rec.member_talking(t0, stranger, true);
        rec.member_left(t0, stranger);
        for t in 0..10u64 {
            let mut inputs = vec![(stranger, Some(frame(3, t)))];
            if t % 3 == 0 {
                inputs.push((a, Some(frame(1, t))));
                // A second frame for the same member in one tick is ignored.
                inputs.push((a, Some(frame(2, t))));
            }
            tick(&mut rec, t, &inputs);
        }
        let track = rec.track_id(a).unwrap().to_owned();
        let id = rec.id().to_owned();
        rec.finish(ms(t0, 200));
        drop(factory);
        thread.join().unwrap();
        let want: Vec<i16> = (0..10u64)
            .map(|t| if t % 3 == 0 { frame(1, t)[0] } else { 0 })
            .collect();
        assert_eq!(
            ticks_of(&samples(&tmp.0.join(format!("{track}.wav")))),
            want
        );
        let tl = Timeline::read(&Timeline::path(&tmp.0, &id)).unwrap();
        assert_eq!(tl.events.len(), 1, "{:?}", tl.events);
    }

    const CRASH_ENV: &str = "SWITCHBOARD_ROOMREC_CRASH_DIR";
    const CRASH_TICKS: u64 = 130;

    /// Runs only as the crash test's child process: records a room for 2.6 s, then aborts.
    #[test]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_ENV) else {
            return;
        };
        let (factory, _thread) = writer(Path::new(&dir));
        let t0 = Instant::now();
        let mut mixer = Mixer::new(VadConfig::default()).unwrap();
        let a = mixer.add_member(MemberKind::Speaker).unwrap();
        let b = mixer.add_member(MemberKind::Speaker).unwrap();
        let mut rec = RoomRecorder::start(
            &factory,
            "crash",
            RoomRecordOptions { multitrack: true },
            t0,
        )
        .unwrap();
        rec.member_joined(t0, a, "call-a", "sip:a@x", NARROW_RATE);
        for t in 0..CRASH_TICKS {
            if t == 50 {
                rec.member_joined(ms(t0, 1000), b, "call-b", "sip:b@x", NARROW_RATE);
                rec.member_talking(ms(t0, 1000), b, true);
            }
            let inputs = [(a, Some(frame(1, t))), (b, Some(frame(2, t)))];
            tick(&mut rec, t, &inputs);
        }
        factory.sync().unwrap();
        std::process::abort();
    }

    #[test]
    fn a_killed_room_recording_is_repaired_with_its_timeline() {
        let tmp = TempDir::new("crash");
        run_crash_child(
            "conference::recording::tests::crash_child",
            CRASH_ENV,
            &tmp.0,
        );

        let names = files(&tmp.0);
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".wav.part")).count(),
            3,
            "{names:?}"
        );
        assert_eq!(
            names
                .iter()
                .filter(|n| n.ends_with(".timeline.jsonl"))
                .count(),
            1,
            "{names:?}"
        );
        let id = names
            .iter()
            .find_map(|n| n.strip_suffix(".timeline.jsonl"))
            .unwrap()
            .to_owned();

        let repaired = repair_dir(&tmp.0);
        assert_eq!(repaired.len(), 3);
        let names = files(&tmp.0);
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".part") || n.ends_with(".jsonl") || n.ends_with(".tmp")),
            "{names:?}"
        );
        for r in &repaired {
            let s = samples(&r.wav);
            // At least up to the last header flush (2.0 s), at most all that was pushed.
            assert!(
                (16_000..=CRASH_TICKS as usize * 160).contains(&s.len()),
                "{}: {} samples",
                r.id,
                s.len()
            );
            let (sc, room) = Sidecar::read_with(&Sidecar::path(&tmp.0, &r.id)).unwrap();
            assert_eq!(sc.state, SidecarState::Repaired);
            assert_eq!(sc.room.as_deref(), Some("crash"));
            if r.id == id {
                assert_eq!(room.timeline, Some(format!("{id}.timeline.json")));
                for (t, f) in s.chunks(160).enumerate() {
                    assert_eq!(f, mix_frame(t as u64), "mix tick {t}");
                }
            } else {
                assert_eq!(room.track_of.as_deref(), Some(id.as_str()));
                let who = if room.member == Some(1) { 1 } else { 2 };
                for (t, f) in ticks_of(&s).into_iter().enumerate() {
                    let t = t as u64;
                    let want = if who == 2 && t < 50 {
                        0
                    } else {
                        frame(who, t)[0]
                    };
                    assert_eq!(f, want, "member {who} tick {t}");
                }
            }
        }
        let mixed = repaired.iter().find(|r| r.id == id).unwrap();
        let tl = Timeline::read(&Timeline::path(&tmp.0, &id)).unwrap();
        assert_eq!(tl.state, SidecarState::Repaired);
        assert_eq!(tl.duration_ms, mixed.duration_ms);
        let got: Vec<(u64, TimelineKind, u64)> = tl
            .events
            .iter()
            .map(|e| (e.at_ms, e.event, e.member))
            .collect();
        assert_eq!(
            got,
            [
                (0, TimelineKind::Join, 1),
                (1000, TimelineKind::Join, 2),
                (1000, TimelineKind::TalkStart, 2),
            ]
        );
        assert_eq!(tl.members.len(), 2);
        assert!(repair_dir(&tmp.0).is_empty(), "nothing left to repair");
    }

    /// A room's recording takes the room's rate at its first tick with a member (the ticks
    /// before are silence at it); a member's track its own rate; audio at another rate later
    /// is converted to the file's.
    #[test]
    fn a_room_records_at_its_rate_once_a_member_is_in_and_converts_later_rates() {
        let tmp = TempDir::new("rates");
        let (factory, thread) = writer(&tmp.0);
        let t0 = Instant::now();
        let mut mixer = Mixer::new(VadConfig::default()).unwrap();
        let a = mixer.add_member(MemberKind::Speaker).unwrap();
        let opts = RoomRecordOptions { multitrack: true };
        let mut rec = RoomRecorder::start(&factory, "wide", opts, t0).unwrap();
        let id = rec.id().to_owned();
        let wide = ClockRate::HZ_16000;
        let full = ClockRate::HZ_48000;
        // Two ticks with nobody in the room.
        for _ in 0..2 {
            rec.push_tick(&Frame::silence(NARROW_RATE), &mut std::iter::empty());
        }
        rec.member_joined(ms(t0, 40), a, "call-a", "sip:a@x", wide);
        let a_frame = Frame::from_samples(wide, &[1000; 320]);
        let mix = Frame::from_samples(wide, &[500; 320]);
        for _ in 0..10 {
            rec.push_tick(&mix, &mut std::iter::once((a, Some(&a_frame))));
        }
        // The room now mixes at 48 kHz (an Opus member joined), and the member sends at 8 kHz.
        let mix = Frame::from_samples(full, &[300; 960]);
        let a_frame = Frame::from_samples(NARROW_RATE, &[700; 160]);
        for _ in 0..20 {
            rec.push_tick(&mix, &mut std::iter::once((a, Some(&a_frame))));
        }
        let track = rec.track_id(a).unwrap().to_owned();
        rec.finish(ms(t0, 640));
        drop(factory);
        thread.join().unwrap();

        let path = tmp.0.join(format!("{id}.wav"));
        assert_eq!(
            hound::WavReader::open(&path).unwrap().spec().sample_rate,
            16000
        );
        let mixed = samples(&path);
        assert_eq!(
            mixed.len(),
            32 * 320,
            "every tick at 16 kHz, the empty ones too"
        );
        assert!(mixed[..640].iter().all(|&s| s == 0));
        assert!(mixed[640..12 * 320].iter().all(|&s| s == 500));
        // Converted down, the constant settles at its level after the filter's delay.
        let settled = &mixed[20 * 320..];
        assert!(
            settled.iter().all(|&s| (s - 300).abs() <= 3),
            "{:?}",
            &settled[..8]
        );

        let path = tmp.0.join(format!("{track}.wav"));
        assert_eq!(
            hound::WavReader::open(&path).unwrap().spec().sample_rate,
            16000
        );
        let tr = samples(&path);
        assert_eq!(tr.len(), 32 * 320);
        assert!(tr[2 * 320..12 * 320].iter().all(|&s| s == 1000));
        assert!(
            tr[20 * 320..].iter().all(|&s| (s - 700).abs() <= 3),
            "{:?}",
            &tr[20 * 320..20 * 320 + 8]
        );
    }
}
