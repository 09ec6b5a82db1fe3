//! The glue that runs a [`Room`] on a media worker next to its members' legs: applies
//! controls from the registry, feeds the room each member's received frame, sends each member
//! its frame (the room's shared frame encoded once per codec per tick), keeps the recorder
//! fed, and turns room changes into published events, the operators' view of the room and
//! the members' "you have left" answers.
//!
//! The legs are reached through [`MemberLegs`], so the same code runs on the worker and in
//! benchmarks and tests without sockets.
//!
//! Members whose phones send RFC 6464 audio levels: talker detection takes the sender's level
//! instead of measuring, and each tick the host tells every member's leg below which level it
//! may leave packets undecoded next tick ([`super::room::Room::quiet_floor`]: while the member
//! is not talking, the level that would start it talking). Such a packet could not be heard
//! in the mix, so a quiet listener costs no decode; it reaches the room, and a room
//! recording's track of that member, as silence.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

use super::mixer::{Inbound, MemberId};
use super::recording::RoomRecorder;
use super::room::{Joiner, RemoveReason, Room, RoomEvent, RoomOutput};
use super::vad::AudioLevel;
use crate::events::{Event, EventBus};
use crate::live::{MemberAction, MemberInfo, RoomInfo};
use crate::media::codec::{AudioCodec, CodecKind};
use crate::media::dtmf::Digit;
use crate::media::frame::{silence_at, AudioSource, ClockRate, Frame, FRAME_SAMPLES, NARROW_RATE};
use crate::media::leg::AudioTap;
use crate::media::resample::RateAdapter;

/// The legs of a worker, as a room reaches its members (each by its tag, the leg's slot).
pub trait MemberLegs {
    /// The tag of leg `leg` when it is here and in no room.
    fn find(&self, leg: u64) -> Option<usize>;
    /// Records that the leg at `tag` is now in `room` as `member` (None: in no room).
    fn bind(&mut self, tag: usize, room: Option<(u64, MemberId)>);
    /// The leg's received frame this tick, when it is audio to mix.
    fn input(&self, tag: usize) -> Option<&Frame>;
    /// The level its sender gave the leg's frame this tick (RFC 6464), when it gave one.
    fn input_level(&self, _tag: usize) -> Option<AudioLevel> {
        None
    }
    /// Lets the leg leave received packets quieter than `floor` undecoded from its next
    /// receive half on (`None`: decode them all); see [`crate::media::leg::Leg::set_quiet_floor`].
    fn set_quiet_floor(&mut self, _tag: usize, _floor: Option<AudioLevel>) {}
    /// The leg's codec.
    fn codec(&self, tag: usize) -> Option<CodecKind>;
    /// Runs the leg's send half with `pcm`, already encoded as `encoded` when given.
    fn send(&mut self, tag: usize, pcm: &Frame, encoded: Option<&[u8]>);
}

/// Why a join was not done on the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The room said no.
    Room(super::room::JoinRefused),
    /// The room is gone (ended, or removed when empty).
    Gone,
    /// The leg is not on the room's worker, or already in a room.
    NoLeg,
}

/// A control for a room, applied on its worker between ticks.
pub enum RoomCommand {
    /// Adds the leg `leg` as a member.
    Join {
        /// The leg's id.
        leg: u64,
        /// Moderator and muted flags.
        moderator: bool,
        /// Joins muted.
        muted: bool,
        /// The member's call.
        call_id: String,
        /// The caller.
        from: String,
        /// The member id, or why not.
        reply: oneshot::Sender<Result<MemberId, JoinRefusal>>,
        /// Told once the room removes the member.
        left: oneshot::Sender<RemoveReason>,
    },
    /// The member leaves (its call or script is done with the room).
    Leave {
        /// The member.
        member: MemberId,
    },
    /// The member's leg went away.
    Hangup {
        /// The member.
        member: MemberId,
    },
    /// An operator's action on a member.
    Member {
        /// The member.
        member: MemberId,
        /// What to do.
        action: MemberAction,
    },
    /// Lock or unlock.
    Lock(bool),
    /// Play to everyone.
    Play(Box<dyn AudioSource>),
    /// Play to one member.
    PlayTo {
        /// The member.
        member: MemberId,
        /// The audio.
        source: Box<dyn AudioSource>,
    },
    /// Start recording (the previous recording, if any, is finished).
    RecordStart(Box<RoomRecorder>),
    /// Stop recording.
    RecordStop,
    /// Stream the room's mix to an application (replacing a stream already running).
    Stream(Box<dyn AudioTap>),
    /// Stop the stream with this id, if it is still the one running.
    StopStream(u64),
    /// End the room.
    End,
}

impl std::fmt::Debug for RoomCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomCommand::Join { leg, .. } => write!(f, "Join(leg {leg})"),
            RoomCommand::Leave { member } => write!(f, "Leave({member:?})"),
            RoomCommand::Hangup { member } => write!(f, "Hangup({member:?})"),
            RoomCommand::Member { member, action } => write!(f, "{action:?}({member:?})"),
            RoomCommand::Lock(l) => write!(f, "Lock({l})"),
            RoomCommand::Play(_) => write!(f, "Play"),
            RoomCommand::PlayTo { member, .. } => write!(f, "PlayTo({member:?})"),
            RoomCommand::RecordStart(_) => write!(f, "RecordStart"),
            RoomCommand::RecordStop => write!(f, "RecordStop"),
            RoomCommand::Stream(t) => write!(f, "Stream({})", t.id()),
            RoomCommand::StopStream(id) => write!(f, "StopStream({id})"),
            RoomCommand::End => write!(f, "End"),
        }
    }
}

impl RoomCommand {
    /// Answers a command whose room is gone.
    pub(crate) fn refuse_gone(self) {
        if let RoomCommand::Join { reply, .. } = self {
            let _ = reply.send(Err(JoinRefusal::Gone));
        }
    }
}

/// The largest shared payload: 20 ms of Opus at any bitrate a phone asks for fits, and of
/// L16 at 16 kHz.
const SHARED_PAYLOAD: usize = 4 * FRAME_SAMPLES;

/// A codec's encoding of this tick's frame, shared by every member with that codec.
struct Encoded {
    kind: CodecKind,
    codec: Box<dyn AudioCodec>,
    buf: [u8; SHARED_PAYLOAD],
    len: usize,
    ready: bool,
}

impl Encoded {
    /// One shared encoder per codec whose single stream every listener can take: G.711,
    /// which keeps no state, and Opus, whose decoders follow any packet (a member that now
    /// and then gets its own encoding instead, while it talks or plays something, hears at
    /// most a short blip at the change). G.722's ADPCM state would drift apart, so its
    /// members encode for themselves.
    fn all() -> Vec<Encoded> {
        #[cfg(feature = "opus")]
        let shared = CodecKind::ALL.into_iter().chain([CodecKind::Opus]);
        #[cfg(not(feature = "opus"))]
        let shared = CodecKind::ALL.into_iter();
        shared
            .map(|kind| Encoded {
                kind,
                codec: kind.new_codec(),
                buf: [0; SHARED_PAYLOAD],
                len: 0,
                ready: false,
            })
            .collect()
    }
}

/// The room's shared frame at a rate below the room's, converted once per tick for every
/// listener at that rate.
struct SharedAt {
    rate: ClockRate,
    adapter: RateAdapter,
    frame: Frame,
    ready: bool,
}

/// `shared` at `rate`, converted on the first call in a tick (after `before`, the last
/// tick's, when the rate had no listener then); later calls reuse it.
fn shared_at<'a>(
    groups: &'a mut Vec<SharedAt>,
    before: &Frame,
    shared: &Frame,
    rate: ClockRate,
) -> &'a Frame {
    let i = match groups.iter().position(|g| g.rate == rate) {
        Some(i) => i,
        None => {
            // A rate new to the room (a join): made once, kept while the room lasts.
            groups.push(SharedAt {
                rate,
                adapter: RateAdapter::new(),
                frame: Frame::silence(rate),
                ready: false,
            });
            groups.len() - 1
        }
    };
    let g = &mut groups[i];
    if !g.ready {
        g.adapter
            .convert_after(Some(before), shared, rate, &mut g.frame);
        g.ready = true;
    }
    &g.frame
}

/// Encodes `pcm` for `kind` once; later calls in the same round reuse the payload.
fn encode_once<'a>(
    cache: &'a mut [Encoded],
    kind: Option<CodecKind>,
    pcm: &Frame,
) -> Option<&'a [u8]> {
    let e = cache.iter_mut().find(|e| Some(e.kind) == kind)?;
    if !e.ready {
        e.len = e.codec.encode(pcm, &mut e.buf).ok()?;
        e.ready = true;
    }
    Some(&e.buf[..e.len])
}

struct Glue {
    call_id: String,
    from: String,
    left: Option<oneshot::Sender<RemoveReason>>,
    /// The member's input at the room's rate, when its own is another (made on the first
    /// conversion: a member at the room's rate never needs it).
    up: RateAdapter,
    input: Option<Box<Frame>>,
    /// `input` holds this tick's converted input.
    converted: bool,
    /// A frame for this member alone, carried down from the room's rate to its own.
    down: RateAdapter,
    out: Option<Box<Frame>>,
}

impl Glue {
    fn new(call_id: String, from: String, left: oneshot::Sender<RemoveReason>) -> Glue {
        Glue {
            call_id,
            from,
            left: Some(left),
            up: RateAdapter::new(),
            input: None,
            converted: false,
            down: RateAdapter::new(),
            out: None,
        }
    }
}

/// What the registry shares with a room's host.
#[derive(Clone)]
pub struct RoomLink {
    /// The room's id (unique per registry).
    pub id: u64,
    /// The room's name.
    pub name: Arc<str>,
    /// Where events are published.
    pub bus: EventBus,
    /// The operators' view, kept current by the host.
    pub info: Arc<Mutex<RoomInfo>>,
    /// Joins on their way to the room: it is not removed while one is.
    pub pending: Arc<AtomicUsize>,
}

impl RoomLink {
    /// A new room's link with an empty view, created at `created_at` (RFC 3339), with
    /// `pending` joins already on their way.
    pub fn new(id: u64, name: &str, bus: EventBus, created_at: String, pending: usize) -> Self {
        RoomLink {
            id,
            name: Arc::from(name),
            bus,
            info: Arc::new(Mutex::new(RoomInfo {
                name: name.to_string(),
                members: Vec::new(),
                locked: false,
                recording: None,
                stream: None,
                created_at,
                rate: NARROW_RATE.hz(),
            })),
            pending: Arc::new(AtomicUsize::new(pending)),
        }
    }
}

impl std::fmt::Debug for RoomLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomLink({} {})", self.id, self.name)
    }
}

/// Locks the view, surviving a panic elsewhere.
pub(crate) fn lock_info(info: &Mutex<RoomInfo>) -> MutexGuard<'_, RoomInfo> {
    match info.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A room running on a worker.
pub struct RoomHost {
    link: RoomLink,
    room: Room,
    recorder: Option<RoomRecorder>,
    /// An application stream of the room's mix, and the frame it is handed back (a room
    /// stream only listens, so what it leaves there is not used).
    stream: Option<(Box<dyn AudioTap>, Box<Frame>)>,
    /// Indexed by `MemberId::index()`.
    glue: Vec<Option<Glue>>,
    shared: Vec<Encoded>,
    silence: Vec<Encoded>,
    /// The shared frame at each rate below the room's that a listener has.
    shared_at: Vec<SharedAt>,
    /// The last tick's mix: what a conversion taken up again is warmed with.
    last_mix: Frame,
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for RoomHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHost")
            .field("link", &self.link)
            .field("room", &self.room)
            .finish()
    }
}

impl RoomHost {
    /// A host for `room`; `on_end` runs once, on the worker, when the room is removed.
    pub fn new(
        link: RoomLink,
        room: Room,
        recorder: Option<RoomRecorder>,
        on_end: Box<dyn FnOnce() + Send>,
    ) -> RoomHost {
        let capacity = room.settings().max_members.min(1024);
        let mut glue = Vec::with_capacity(capacity + 2);
        glue.resize_with(2, || None);
        {
            let mut info = lock_info(&link.info);
            info.rate = room.rate().hz();
            if let Some(r) = &recorder {
                info.recording = Some(r.id().to_string());
            }
        }
        RoomHost {
            link,
            room,
            recorder,
            stream: None,
            glue,
            shared: Encoded::all(),
            silence: Encoded::all(),
            shared_at: Vec::new(),
            last_mix: Frame::silence(NARROW_RATE),
            on_end: Some(on_end),
        }
    }

    /// The room's id.
    pub fn id(&self) -> u64 {
        self.link.id
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.room.len()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.room.is_empty()
    }

    /// The room itself.
    pub fn room(&self) -> &Room {
        &self.room
    }

    /// The recording in progress.
    pub fn recording(&self) -> Option<&str> {
        self.recorder.as_ref().map(RoomRecorder::id)
    }

    /// Applies a control; call [`RoomHost::flush`] after.
    pub fn command(&mut self, now: Instant, cmd: RoomCommand, legs: &mut dyn MemberLegs) {
        match cmd {
            RoomCommand::Join {
                leg,
                moderator,
                muted,
                call_id,
                from,
                reply,
                left,
            } => {
                self.link.pending.fetch_sub(1, Ordering::AcqRel);
                let Some(tag) = legs.find(leg) else {
                    let _ = reply.send(Err(JoinRefusal::NoLeg));
                    return;
                };
                let joined = self.room.join(Joiner {
                    moderator,
                    muted,
                    tag,
                });
                match joined {
                    Ok(id) => {
                        if self.glue.len() <= id.index() {
                            self.glue.resize_with(id.index() + 1, || None);
                        }
                        self.glue[id.index()] = Some(Glue::new(call_id, from, left));
                        // Published and visible to operators before the joiner hears back.
                        self.flush(now, legs);
                        // A joiner that gave up waiting is not left in the room.
                        if reply.send(Ok(id)).is_err() {
                            self.room.leave(id, RemoveReason::Hangup);
                        }
                    }
                    Err(super::room::JoinRefused::Ended) => {
                        let _ = reply.send(Err(JoinRefusal::Gone));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(JoinRefusal::Room(e)));
                    }
                }
            }
            RoomCommand::Leave { member } => {
                self.room.leave(member, RemoveReason::Left);
            }
            RoomCommand::Hangup { member } => {
                self.room.leave(member, RemoveReason::Hangup);
            }
            RoomCommand::Member { member, action } => {
                match action {
                    MemberAction::Mute => self.room.set_muted(member, true),
                    MemberAction::Unmute => self.room.set_muted(member, false),
                    MemberAction::Deaf => self.room.set_deaf(member, true),
                    MemberAction::Undeaf => self.room.set_deaf(member, false),
                    MemberAction::Kick => self.room.leave(member, RemoveReason::Kicked),
                };
            }
            RoomCommand::Lock(locked) => self.room.set_locked(locked),
            RoomCommand::Play(source) => self.room.play(source),
            RoomCommand::PlayTo { member, source } => {
                self.room.play_to(member, source);
            }
            RoomCommand::RecordStart(mut recorder) => {
                self.finish_recording(now);
                for m in self.room.members() {
                    if let Some(Some(g)) = self.glue.get(m.id.index()) {
                        let rate = member_rate(legs, m.tag);
                        recorder.member_joined(now, m.id, &g.call_id, &g.from, rate);
                    }
                }
                lock_info(&self.link.info).recording = Some(recorder.id().to_string());
                self.link.bus.publish(Event::RecordingStarted {
                    id: recorder.id().to_string(),
                    call_id: None,
                    room: Some(self.link.name.to_string()),
                });
                self.recorder = Some(*recorder);
            }
            RoomCommand::RecordStop => self.finish_recording(now),
            RoomCommand::Stream(tap) => {
                self.stream = Some((tap, Box::new(Frame::silence(NARROW_RATE))));
            }
            RoomCommand::StopStream(id) => {
                if self.stream.as_ref().is_some_and(|(t, _)| t.id() == id) {
                    self.stream = None;
                }
            }
            RoomCommand::End => self.room.end(),
        }
    }

    fn finish_recording(&mut self, now: Instant) {
        if let Some(r) = self.recorder.take() {
            self.link.bus.publish(Event::RecordingFinished {
                id: r.id().to_string(),
                duration_ms: r.duration_ms(),
                reason: "requested".into(),
                discarded: false,
            });
            r.finish(now);
            lock_info(&self.link.info).recording = None;
        }
    }

    /// A key pressed by a member (from its leg's merged DTMF).
    pub fn key(&mut self, member: MemberId, digit: Digit) {
        self.room.key(member, digit);
    }

    /// One tick: mix the members' input, feed the recorder, send every member its frame.
    ///
    /// The room mixes at the highest rate among its members' codecs. A member at a lower
    /// rate has its input carried up to the room's rate before the mix, and hears the
    /// room's shared frame carried down once per rate (then encoded once per codec), or its
    /// own frame carried down by its own adapter.
    pub fn tick(&mut self, _now: Instant, legs: &mut dyn MemberLegs) {
        let rate = match self.room.settings().rate {
            Some(fixed) => fixed,
            None => self
                .room
                .members()
                .map(|m| member_rate(legs, m.tag))
                .max()
                .unwrap_or(self.room.rate()),
        };
        if rate != self.room.rate() {
            tracing::debug!(room = %self.link.name, from = self.room.rate().hz(), to = rate.hz(), "room mixes at a new rate");
            self.room.set_rate(rate);
            lock_info(&self.link.info).rate = rate.hz();
        }
        for m in self.room.members() {
            let Some(Some(g)) = self.glue.get_mut(m.id.index()) else {
                continue;
            };
            g.converted = false;
            match legs.input(m.tag) {
                // Only what may be heard is carried up to the room's rate; a quiet member's
                // frame is measured as it is (and, being quiet, is no loss to the filter's
                // history when conversion starts again).
                Some(f)
                    if f.rate() != rate && self.room.may_mix(m.id, f, legs.input_level(m.tag)) =>
                {
                    let input = g
                        .input
                        .get_or_insert_with(|| Box::new(Frame::silence(rate)));
                    g.up.convert(f, rate, input);
                    g.converted = true;
                }
                Some(f) if f.rate() == rate => {}
                _ => g.up.pass(),
            }
        }
        {
            let legs: &dyn MemberLegs = legs;
            let glue = &self.glue;
            self.room.tick_inbound(|id, tag| {
                let pcm = match glue.get(id.index()) {
                    Some(Some(g)) if g.converted => g.input.as_deref(),
                    _ => legs.input(tag),
                }?;
                let level = legs.input_level(tag);
                Some(Inbound { pcm, level })
            });
            if let Some(rec) = self.recorder.as_mut() {
                let room = &self.room;
                let mut inputs = room.members().map(|m| (m.id, legs.input(m.tag)));
                rec.push_tick(room.mix_frame(), &mut inputs);
            }
            if let Some((tap, back)) = self.stream.as_mut() {
                back.clear(rate);
                tap.tick(self.room.mix_frame(), back);
            }
        }
        for e in &mut self.shared {
            e.ready = false;
        }
        for g in &mut self.shared_at {
            g.ready = false;
        }
        let (shared, silence) = (&mut self.shared, &mut self.silence);
        let (groups, glue, last_mix) = (&mut self.shared_at, &mut self.glue, &self.last_mix);
        self.room.for_each_output(|id, tag, out| {
            let codec = legs.codec(tag);
            let wants = codec.map_or(rate, CodecKind::sample_rate);
            let g = glue.get_mut(id.index()).and_then(Option::as_mut);
            match out {
                RoomOutput::Shared(frame) if frame.rate() == wants => {
                    let payload = encode_once(shared, codec, frame);
                    legs.send(tag, frame, payload);
                }
                RoomOutput::Shared(frame) => {
                    if let Some(g) = g {
                        g.down.pass();
                    }
                    let at = shared_at(groups, last_mix, frame, wants);
                    let payload = encode_once(shared, codec, at);
                    legs.send(tag, at, payload);
                }
                RoomOutput::Own(frame) => match g {
                    Some(g) if frame.rate() != wants => {
                        let out = g.out.get_or_insert_with(|| Box::new(Frame::silence(wants)));
                        g.down.convert_after(Some(last_mix), frame, wants, out);
                        legs.send(tag, out, None);
                    }
                    _ => legs.send(tag, frame, None),
                },
                RoomOutput::Silence => {
                    if let Some(g) = g {
                        g.down.pass();
                    }
                    // Silence encodes the same every tick: its payload is kept.
                    let quiet = silence_at(wants);
                    let payload = encode_once(silence, codec, quiet);
                    legs.send(tag, quiet, payload);
                }
            }
        });
        // Talker detection has had this tick: who may skip decoding quiet packets next tick.
        for m in self.room.members() {
            legs.set_quiet_floor(m.tag, self.room.quiet_floor(m.id));
        }
        // A rate nobody took the shared frame at this tick is warmed up from the last mix
        // when it is taken again.
        for g in self.shared_at.iter_mut().filter(|g| !g.ready) {
            g.adapter.pass();
        }
        self.last_mix = *self.room.mix_frame();
    }

    /// Publishes the room's changes, updates the operators' view and the legs' bindings, and
    /// answers members that left. Call after every tick and control.
    pub fn flush(&mut self, now: Instant, legs: &mut dyn MemberLegs) {
        while let Some(e) = self.room.poll_event() {
            self.on_event(now, e, legs);
        }
    }

    fn on_event(&mut self, now: Instant, e: RoomEvent, legs: &mut dyn MemberLegs) {
        let room = self.link.name.to_string();
        match e {
            RoomEvent::Joined { member, tag } => {
                legs.bind(tag, Some((self.link.id, member)));
                let view = self.room.member(member);
                let Some(Some(g)) = self.glue.get(member.index()) else {
                    return;
                };
                let (moderator, muted) = view.map_or((false, false), |v| (v.moderator, v.muted));
                if let Some(r) = self.recorder.as_mut() {
                    let rate = member_rate(legs, tag);
                    r.member_joined(now, member, &g.call_id, &g.from, rate);
                }
                lock_info(&self.link.info).members.push(MemberInfo {
                    id: member.as_u64(),
                    call_id: g.call_id.clone(),
                    from: g.from.clone(),
                    moderator,
                    muted,
                    deaf: false,
                    talking: false,
                    joined_at: crate::live::rfc3339_now(),
                });
                self.link.bus.publish(Event::MemberJoined {
                    room,
                    member: member.as_u64(),
                    call_id: g.call_id.clone(),
                    moderator,
                    muted,
                });
            }
            RoomEvent::Left {
                member,
                tag,
                reason,
            } => {
                legs.bind(tag, None);
                let g = self.glue.get_mut(member.index()).and_then(Option::take);
                if let Some(r) = self.recorder.as_mut() {
                    r.member_left(now, member);
                }
                lock_info(&self.link.info)
                    .members
                    .retain(|m| m.id != member.as_u64());
                let call_id = match g {
                    Some(mut g) => {
                        if let Some(tx) = g.left.take() {
                            let _ = tx.send(reason);
                        }
                        g.call_id
                    }
                    None => String::new(),
                };
                self.link.bus.publish(Event::MemberLeft {
                    room,
                    member: member.as_u64(),
                    call_id,
                    reason: reason.as_str().to_string(),
                });
            }
            RoomEvent::Talking { member, talking } => {
                if let Some(r) = self.recorder.as_mut() {
                    r.member_talking(now, member, talking);
                }
                self.update(member, |m| m.talking = talking);
                self.link.bus.publish(Event::MemberTalking {
                    room,
                    member: member.as_u64(),
                    talking,
                });
            }
            RoomEvent::Muted { member, muted } => {
                if let Some(r) = self.recorder.as_mut() {
                    r.member_muted(now, member, muted);
                }
                self.update(member, |m| m.muted = muted);
                self.link.bus.publish(Event::MemberMuted {
                    room,
                    member: member.as_u64(),
                    muted,
                });
            }
            RoomEvent::Deaf { member, deaf } => {
                self.update(member, |m| m.deaf = deaf);
                self.link.bus.publish(Event::MemberDeaf {
                    room,
                    member: member.as_u64(),
                    deaf,
                });
            }
            RoomEvent::Locked(locked) => {
                lock_info(&self.link.info).locked = locked;
                self.link.bus.publish(Event::RoomLocked { room, locked });
            }
            RoomEvent::Ended => {}
        }
    }

    fn update(&self, member: MemberId, f: impl FnOnce(&mut MemberInfo)) {
        let mut info = lock_info(&self.link.info);
        if let Some(m) = info.members.iter_mut().find(|m| m.id == member.as_u64()) {
            f(m);
        }
    }

    /// When the room is empty and no join is on its way: finishes its recording, publishes
    /// its end and tells the registry; true when the room is to be dropped.
    pub fn close_if_done(&mut self, now: Instant) -> bool {
        if !self.room.is_empty() || self.link.pending.load(Ordering::Acquire) != 0 {
            return false;
        }
        self.finish_recording(now);
        // Gone from the registry before anyone hears it ended.
        if let Some(f) = self.on_end.take() {
            f();
        }
        self.link.bus.publish(Event::RoomEnded {
            room: self.link.name.to_string(),
        });
        true
    }
}

/// The rate a member's leg runs at (its codec's).
fn member_rate(legs: &dyn MemberLegs, tag: usize) -> ClockRate {
    legs.codec(tag).map_or(NARROW_RATE, CodecKind::sample_rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conference::room::RoomSettings;
    use crate::conference::RoomSounds;
    use crate::conference::VadConfig;
    use std::collections::HashMap;
    use std::time::Duration;

    /// Legs that record what each member was sent and where its payload came from.
    struct Fake {
        codecs: Vec<CodecKind>,
        inputs: Vec<Option<Frame>>,
        /// (tag, payload address when pre-encoded, first sample)
        sent: Vec<(usize, Option<usize>, i16)>,
        /// (tag, the frame's rate, its last sample) of every send
        frames: Vec<(usize, u32, i16)>,
        bound: Vec<Option<(u64, MemberId)>>,
    }

    impl MemberLegs for Fake {
        fn find(&self, leg: u64) -> Option<usize> {
            let i = leg as usize;
            (i < self.codecs.len() && self.bound[i].is_none()).then_some(i)
        }
        fn bind(&mut self, tag: usize, room: Option<(u64, MemberId)>) {
            self.bound[tag] = room;
        }
        fn input(&self, tag: usize) -> Option<&Frame> {
            self.inputs.get(tag)?.as_ref()
        }
        fn codec(&self, tag: usize) -> Option<CodecKind> {
            self.codecs.get(tag).copied()
        }
        fn send(&mut self, tag: usize, pcm: &Frame, encoded: Option<&[u8]>) {
            self.sent
                .push((tag, encoded.map(|p| p.as_ptr() as usize), pcm[0]));
            self.frames
                .push((tag, pcm.rate().hz(), pcm.last().copied().unwrap_or(0)));
        }
    }

    fn host() -> RoomHost {
        let settings = RoomSettings {
            vad: VadConfig {
                start_dbov: -40.0,
                stop_dbov: -40.0,
                attack: Duration::ZERO,
                hangover: Duration::ZERO,
            },
            ..RoomSettings::default()
        };
        let link = RoomLink::new(7, "r", EventBus::new(64), String::new(), 0);
        let room = Room::new(settings, RoomSounds::default()).unwrap();
        RoomHost::new(link, room, None, Box::new(|| {}))
    }

    fn join(h: &mut RoomHost, legs: &mut Fake, leg: u64) -> MemberId {
        h.link.pending.fetch_add(1, Ordering::AcqRel);
        let (reply, mut rx) = oneshot::channel();
        let (left, _left_rx) = oneshot::channel();
        std::mem::forget(_left_rx);
        h.command(
            Instant::now(),
            RoomCommand::Join {
                leg,
                moderator: false,
                muted: false,
                call_id: format!("c{leg}"),
                from: String::new(),
                reply,
                left,
            },
            legs,
        );
        rx.try_recv().unwrap().unwrap()
    }

    #[test]
    fn listeners_with_one_codec_share_one_encoded_payload() {
        let mut h = host();
        let codecs = vec![
            CodecKind::Pcmu,
            CodecKind::Pcmu,
            CodecKind::Pcmu,
            CodecKind::Pcma,
            CodecKind::Pcma,
        ];
        let mut legs = Fake {
            inputs: vec![
                Some(Frame::from([3000; FRAME_SAMPLES])),
                None,
                None,
                None,
                None,
            ],
            bound: vec![None; codecs.len()],
            codecs,
            sent: Vec::new(),
            frames: Vec::new(),
        };
        let mut bus = h.link.bus.subscribe();
        for leg in 0..5 {
            join(&mut h, &mut legs, leg);
        }
        assert!(legs.bound.iter().all(Option::is_some), "every leg is bound");
        h.tick(Instant::now(), &mut legs);
        let by_tag: HashMap<usize, (Option<usize>, i16)> =
            legs.sent.iter().map(|&(t, p, s)| (t, (p, s))).collect();
        assert_eq!(by_tag[&0], (None, 0), "the talker gets its own frame");
        let mu = by_tag[&1].0.expect("pre-encoded");
        assert_eq!(by_tag[&2].0, Some(mu), "one PCMU payload for both");
        let a = by_tag[&3].0.expect("pre-encoded");
        assert_eq!(by_tag[&4].0, Some(a), "one PCMA payload for both");
        assert_ne!(mu, a);
        assert_eq!(by_tag[&1].1, 3000);
        assert!(!h.close_if_done(Instant::now()), "not while members remain");
        let mut joined = 0;
        while let Ok(e) = bus.try_recv() {
            if matches!(e.event, Event::MemberJoined { .. }) {
                joined += 1;
            }
        }
        assert_eq!(joined, 5);
    }

    #[test]
    fn a_hangup_unbinds_the_leg_and_the_empty_room_closes_once() {
        let mut h = host();
        let mut legs = Fake {
            inputs: vec![None],
            bound: vec![None],
            codecs: vec![CodecKind::Pcmu],
            sent: Vec::new(),
            frames: Vec::new(),
        };
        let m = join(&mut h, &mut legs, 0);
        assert_eq!(lock_info(&h.link.info).members.len(), 1);
        h.command(Instant::now(), RoomCommand::Hangup { member: m }, &mut legs);
        h.flush(Instant::now(), &mut legs);
        assert_eq!(legs.bound[0], None);
        assert!(lock_info(&h.link.info).members.is_empty());
        assert!(h.close_if_done(Instant::now()));
    }

    /// Members at 8 and 16 kHz: the room mixes at 16 kHz, carries the narrow talker up and
    /// the mix down, sends each member its own rate, and shares one payload per codec.
    #[test]
    fn a_room_mixes_at_its_widest_members_rate_and_sends_each_its_own() {
        let mut h = host();
        let wide = ClockRate::HZ_16000;
        let mut legs = Fake {
            codecs: vec![
                CodecKind::Pcmu,
                CodecKind::G722,
                CodecKind::Pcmu,
                CodecKind::Pcmu,
                CodecKind::G722,
                CodecKind::G722,
            ],
            inputs: vec![
                Some(Frame::from([3000; FRAME_SAMPLES])),
                Some(Frame::from_samples(wide, &[2000; 320])),
                None,
                None,
                None,
                None,
            ],
            bound: vec![None; 6],
            sent: Vec::new(),
            frames: Vec::new(),
        };
        for leg in 0..6 {
            join(&mut h, &mut legs, leg);
        }
        for _ in 0..10 {
            legs.sent.clear();
            legs.frames.clear();
            h.tick(Instant::now(), &mut legs);
        }
        assert_eq!(h.room().rate(), wide);
        assert_eq!(
            lock_info(&h.link.info).rate,
            16000,
            "operators see the rate"
        );
        let heard: HashMap<usize, (u32, i16)> =
            legs.frames.iter().map(|&(t, r, s)| (t, (r, s))).collect();
        let near = |got: i16, want: i16| (got - want).abs() <= 30;
        // The talkers hear each other, each at its own rate.
        assert!(
            heard[&0].0 == 8000 && near(heard[&0].1, 2000),
            "{:?}",
            heard[&0]
        );
        assert!(
            heard[&1].0 == 16000 && near(heard[&1].1, 3000),
            "{:?}",
            heard[&1]
        );
        // Listeners hear both talkers.
        for tag in 2..4 {
            assert!(
                heard[&tag].0 == 8000 && near(heard[&tag].1, 5000),
                "{:?}",
                heard[&tag]
            );
        }
        for tag in 4..6 {
            assert!(
                heard[&tag].0 == 16000 && near(heard[&tag].1, 5000),
                "{:?}",
                heard[&tag]
            );
        }
        let payload: HashMap<usize, Option<usize>> =
            legs.sent.iter().map(|&(t, p, _)| (t, p)).collect();
        assert!(
            payload[&2].is_some() && payload[&2] == payload[&3],
            "one PCMU payload"
        );
        // G.722 listeners encode for themselves (see `Encoded::all`), at their own rate.
        assert_eq!((payload[&4], payload[&5]), (None, None));

        // The wideband members hang up: the room goes back to 8 kHz.
        for tag in [1, 4, 5] {
            let (_, m) = legs.bound[tag].unwrap();
            h.command(Instant::now(), RoomCommand::Hangup { member: m }, &mut legs);
        }
        h.flush(Instant::now(), &mut legs);
        h.tick(Instant::now(), &mut legs);
        assert_eq!(h.room().rate(), NARROW_RATE);
        assert_eq!(lock_info(&h.link.info).rate, 8000);
    }

    #[test]
    fn a_room_with_a_fixed_rate_keeps_it_whoever_is_in() {
        let settings = RoomSettings {
            rate: Some(ClockRate::HZ_48000),
            ..RoomSettings::default()
        };
        let link = RoomLink::new(8, "fixed", EventBus::new(64), String::new(), 0);
        let room = Room::new(settings, RoomSounds::default()).unwrap();
        let mut h = RoomHost::new(link, room, None, Box::new(|| {}));
        let mut legs = Fake {
            codecs: vec![CodecKind::Pcmu],
            inputs: vec![Some(Frame::from([3000; FRAME_SAMPLES]))],
            bound: vec![None],
            sent: Vec::new(),
            frames: Vec::new(),
        };
        join(&mut h, &mut legs, 0);
        h.tick(Instant::now(), &mut legs);
        assert_eq!(h.room().rate(), ClockRate::HZ_48000);
        assert!(
            legs.frames.iter().all(|&(_, r, _)| r == 8000),
            "sent at its own rate"
        );
    }
}
