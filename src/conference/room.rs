//! One conference room, sans-IO: who is in it (moderators, muted, deaf, waiting for a
//! moderator), the room's sounds and prompts, in-call keys, and the mix of each tick.
//!
//! The media worker owns the room next to its members' legs. Each tick it calls
//! [`Room::tick`] with every member's received frame, then [`Room::for_each_output`] to send
//! each member what it hears, then drains [`Room::poll_event`]. Controls (join, leave, mute,
//! keys, prompts) are applied between ticks. Prompts arrive already decoded; nothing here
//! reads a file, a clock or a socket, and a tick allocates nothing.
//!
//! A member's own prompt (the "you are alone" message, the member count, the wait for a
//! moderator, a prompt played to it alone) replaces the room audio it hears until it ends.
//! Sounds for everyone (join and leave tones, a prompt played to the room) are mixed into
//! the room as a source that everyone hears.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Deserialize;

use super::mixer::{
    Gain, Inbound, MemberId, MemberKind, MixOutput, Mixer, MixerError, MixerEvent, GAIN_MAX_DB,
    GAIN_MIN_DB,
};
use super::vad::{AudioLevel, VadConfig};
use crate::media::dtmf::Digit;
use crate::media::frame::{AudioSource, ClockRate, Frame, NARROW_RATE, SILENCE};
use crate::media::prompt::{Playlist, Prompt, PromptPlayer};
use crate::media::resample::RateAdapter;
use crate::media::tone::{ToneGenerator, ToneSpec};

/// Output volume change per key press, in dB.
const VOLUME_STEP_DB: i8 = 3;
/// What a member waiting for a moderator hears when there is no prompt for it.
const WAIT_TONE: &str = "440/200/3800@-20";

/// What an in-call key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAction {
    /// Mute or unmute oneself.
    Mute,
    /// Stop or start hearing the room.
    Deaf,
    /// Hear the room quieter.
    VolumeDown,
    /// Hear the room louder.
    VolumeUp,
    /// Leave the room.
    Leave,
}

/// The in-call keys: which key does what (16 DTMF keys, each at most one action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMap([Option<KeyAction>; 16]);

impl Default for KeyMap {
    /// `0` mute toggle, `*` volume down, `#` volume up, `8` leave.
    fn default() -> Self {
        let mut map = KeyMap::empty();
        for (key, action) in [
            ('0', KeyAction::Mute),
            ('*', KeyAction::VolumeDown),
            ('#', KeyAction::VolumeUp),
            ('8', KeyAction::Leave),
        ] {
            if let Some(d) = Digit::from_char(key) {
                map.set(d, Some(action));
            }
        }
        map
    }
}

impl KeyMap {
    /// No key does anything.
    pub fn empty() -> Self {
        KeyMap([None; 16])
    }

    /// Sets what `digit` does.
    pub fn set(&mut self, digit: Digit, action: Option<KeyAction>) {
        if let Some(slot) = self.0.get_mut(usize::from(digit.event_code())) {
            *slot = action;
        }
    }

    /// What `digit` does.
    pub fn get(&self, digit: Digit) -> Option<KeyAction> {
        self.0
            .get(usize::from(digit.event_code()))
            .copied()
            .flatten()
    }
}

/// How a room behaves.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// Most members at once; a join beyond it is refused as [`JoinRefused::Full`].
    pub max_members: usize,
    /// In-call keys.
    pub keys: KeyMap,
    /// Played to the room when someone joins (not for the first member).
    pub join_sound: Option<ToneSpec>,
    /// Played to the room when someone leaves (while others remain).
    pub leave_sound: Option<ToneSpec>,
    /// Tell a joiner how many members the room has (with `digits/N` prompts).
    pub announce_count: bool,
    /// Members other than moderators wait, unmixed, until a moderator is present.
    pub wait_for_moderator: bool,
    /// The room ends when its last moderator leaves.
    pub end_with_last_moderator: bool,
    /// Talker detection.
    pub vad: VadConfig,
    /// The rate the room mixes and records at; `None` (auto): the highest rate among its
    /// members' codecs.
    pub rate: Option<ClockRate>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            max_members: 100,
            keys: KeyMap::default(),
            join_sound: None,
            leave_sound: None,
            announce_count: false,
            wait_for_moderator: false,
            end_with_last_moderator: false,
            vad: VadConfig::default(),
            rate: None,
        }
    }
}

/// The room's prompts, decoded before the room is created (never on the media tick).
#[derive(Debug, Clone, Default)]
pub struct RoomSounds {
    /// "You are the only person in this conference", to a member joining an empty room.
    pub alone: Option<Arc<Prompt>>,
    /// Repeated to members waiting for a moderator (else a tone).
    pub wait_moderator: Option<Arc<Prompt>>,
    /// `digits/0` … `digits/9`, for announcing the member count (all ten, or none).
    pub digits: Vec<Arc<Prompt>>,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// The room holds its maximum of members.
    #[error("room is full")]
    Full,
    /// The room is locked.
    #[error("room is locked")]
    Locked,
    /// The room has ended.
    #[error("room has ended")]
    Ended,
    /// The mixer refused the member.
    #[error("{0}")]
    Mixer(#[from] MixerError),
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its leave key.
    Left,
    /// Removed by an operator.
    Kicked,
    /// The room ended.
    Ended,
    /// Its call went away.
    Hangup,
}

impl RemoveReason {
    /// The name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Left => "left",
            RemoveReason::Kicked => "kicked",
            RemoveReason::Ended => "ended",
            RemoveReason::Hangup => "hangup",
        }
    }
}

/// Who joins.
#[derive(Debug, Clone)]
pub struct Joiner {
    /// Moderator rights (unlocks the wait, may end the room by leaving).
    pub moderator: bool,
    /// Joins muted.
    pub muted: bool,
    /// The caller's key for its own side tables (the worker's leg slot).
    pub tag: usize,
}

/// A change in the room, for the operators' event stream and the members' calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomEvent {
    /// A member joined.
    Joined {
        /// The member.
        member: MemberId,
        /// Its tag.
        tag: usize,
    },
    /// A member left; its tag is free for reuse after this event.
    Left {
        /// The member.
        member: MemberId,
        /// Its tag.
        tag: usize,
        /// Why.
        reason: RemoveReason,
    },
    /// A member started or stopped being mixed as a talker.
    Talking {
        /// The member.
        member: MemberId,
        /// Talking now.
        talking: bool,
    },
    /// A member was muted or unmuted.
    Muted {
        /// The member.
        member: MemberId,
        /// Muted now.
        muted: bool,
    },
    /// A member was made deaf or could hear again.
    Deaf {
        /// The member.
        member: MemberId,
        /// Deaf now.
        deaf: bool,
    },
    /// The room was locked or unlocked.
    Locked(bool),
    /// The room ended: every member has left.
    Ended,
}

/// What a member is sent for the last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomOutput<'a> {
    /// The room's shared frame, the same for every such member: encode once per codec.
    Shared(&'a Frame),
    /// A frame for this member alone.
    Own(&'a Frame),
    /// Silence.
    Silence,
}

impl<'a> RoomOutput<'a> {
    /// The samples.
    pub fn frame(&self) -> &'a Frame {
        match *self {
            RoomOutput::Shared(f) | RoomOutput::Own(f) => f,
            RoomOutput::Silence => &SILENCE,
        }
    }
}

/// A member as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub id: MemberId,
    /// Its tag.
    pub tag: usize,
    /// Moderator.
    pub moderator: bool,
    /// Muted (by itself or an operator).
    pub muted: bool,
    /// Deaf.
    pub deaf: bool,
    /// Waiting for a moderator.
    pub waiting: bool,
    /// Output volume, dB.
    pub volume_db: i8,
}

struct Member {
    id: MemberId,
    tag: usize,
    moderator: bool,
    /// Muted by itself or an operator; the mixer also mutes a waiting member.
    muted: bool,
    deaf: bool,
    waiting: bool,
    volume_db: i8,
    /// Its own prompt, replacing the room audio until it ends.
    prompt: Option<Box<dyn AudioSource>>,
    /// What it hears while waiting, restarted whenever it ends.
    wait: Option<Looping>,
    /// Carries its prompt or wait sound to the room's rate.
    adapter: RateAdapter,
}

/// A sound played over and over.
enum Looping {
    Prompt(PromptPlayer),
    Tone(Box<ToneGenerator>),
}

impl AudioSource for Looping {
    fn rate(&self) -> ClockRate {
        match self {
            Looping::Prompt(p) => p.rate(),
            Looping::Tone(t) => t.rate(),
        }
    }

    /// Never ends: a prompt starts over where it ran out.
    fn fill(&mut self, out: &mut [i16]) -> usize {
        match self {
            Looping::Prompt(p) => {
                let mut n = p.fill(out);
                if n < out.len() {
                    p.rewind();
                    n += p.fill(&mut out[n..]);
                    out[n..].fill(0);
                }
            }
            Looping::Tone(t) => {
                let n = t.fill(out);
                out[n..].fill(0);
            }
        }
        out.len()
    }
}

/// One room.
pub struct Room {
    settings: RoomSettings,
    sounds: RoomSounds,
    mixer: Mixer,
    /// Indexed by `MemberId::index()`.
    members: Vec<Option<Member>>,
    /// Members in joining order.
    order: Vec<MemberId>,
    /// Mixer members that play join/leave tones and prompts to the room.
    tones: MemberId,
    announce: MemberId,
    tone: Option<Box<ToneGenerator>>,
    announcement: Option<Box<dyn AudioSource>>,
    /// Carry the tone and the announcement to the room's rate.
    tone_adapter: RateAdapter,
    announce_adapter: RateAdapter,
    source_frame: Frame,
    announce_frame: Frame,
    scratch: Frame,
    locked: bool,
    ended: bool,
    moderators: usize,
    events: VecDeque<RoomEvent>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("members", &self.order.len())
            .field("locked", &self.locked)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Room {
    /// An empty room.
    pub fn new(settings: RoomSettings, sounds: RoomSounds) -> Result<Room, MixerError> {
        let capacity = settings.max_members.min(super::mixer::MAX_MEMBERS - 2);
        let mut mixer = Mixer::with_capacity(settings.vad, capacity + 2)?;
        if let Some(rate) = settings.rate {
            mixer.set_rate(rate);
        }
        let tones = mixer.add_member(MemberKind::Source)?;
        let announce = mixer.add_member(MemberKind::Source)?;
        let mut members = Vec::with_capacity(capacity + 2);
        members.resize_with(2, || None);
        Ok(Room {
            settings,
            sounds,
            mixer,
            members,
            order: Vec::with_capacity(capacity),
            tones,
            announce,
            tone: None,
            announcement: None,
            tone_adapter: RateAdapter::new(),
            announce_adapter: RateAdapter::new(),
            source_frame: Frame::silence(NARROW_RATE),
            announce_frame: Frame::silence(NARROW_RATE),
            scratch: Frame::silence(NARROW_RATE),
            locked: false,
            ended: false,
            moderators: 0,
            events: VecDeque::with_capacity(64),
        })
    }

    /// The rate the room mixes at; every frame in and out of it is at this rate.
    pub fn rate(&self) -> ClockRate {
        self.mixer.rate()
    }

    /// Whether member `id`'s `frame`, of the sender's RFC 6464 `level` when it gave one, may
    /// be mixed in the next tick (see [`Mixer::may_sum_with`]).
    pub fn may_mix(&self, id: MemberId, frame: &[i16], level: Option<AudioLevel>) -> bool {
        self.mixer.may_sum_with(id, frame, level)
    }

    /// The RFC 6464 level below which member `id`'s leg may leave packets undecoded next
    /// tick (see [`Mixer::quiet_floor`]); `None`: decode them all.
    pub fn quiet_floor(&self, id: MemberId) -> Option<AudioLevel> {
        self.mixer.quiet_floor(id)
    }

    /// Mixes at `rate` from the next tick (the highest rate among the members changed).
    pub fn set_rate(&mut self, rate: ClockRate) {
        self.mixer.set_rate(rate);
    }

    /// The room's settings.
    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Locked against joins.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Ended: no one can join any more.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Members in joining order.
    pub fn members(&self) -> impl Iterator<Item = MemberView> + '_ {
        self.order.iter().filter_map(|&id| self.view(id))
    }

    /// One member.
    pub fn member(&self, id: MemberId) -> Option<MemberView> {
        self.view(id)
    }

    /// Whether talker detection has the member talking.
    pub fn is_talking(&self, id: MemberId) -> bool {
        self.mixer.is_talking(id).unwrap_or(false)
    }

    fn view(&self, id: MemberId) -> Option<MemberView> {
        let m = self.get(id)?;
        Some(MemberView {
            id,
            tag: m.tag,
            moderator: m.moderator,
            muted: m.muted,
            deaf: m.deaf,
            waiting: m.waiting,
            volume_db: m.volume_db,
        })
    }

    fn get(&self, id: MemberId) -> Option<&Member> {
        self.members
            .get(id.index())
            .and_then(|m| m.as_ref())
            .filter(|m| m.id == id)
    }

    fn get_mut(&mut self, id: MemberId) -> Option<&mut Member> {
        self.members
            .get_mut(id.index())
            .and_then(|m| m.as_mut())
            .filter(|m| m.id == id)
    }

    /// Adds a member. Allocates (rarely): joining is not on the per-frame path.
    pub fn join(&mut self, who: Joiner) -> Result<MemberId, JoinRefused> {
        if self.ended {
            return Err(JoinRefused::Ended);
        }
        if self.locked {
            return Err(JoinRefused::Locked);
        }
        if self.order.len() >= self.settings.max_members {
            return Err(JoinRefused::Full);
        }
        let id = self.mixer.add_member(MemberKind::Speaker)?;
        let was_empty = self.order.is_empty();
        let waiting = self.settings.wait_for_moderator && !who.moderator && self.moderators == 0;
        let _ = self.mixer.set_muted(id, who.muted || waiting);
        if self.members.len() <= id.index() {
            self.members.resize_with(id.index() + 1, || None);
        }
        self.members[id.index()] = Some(Member {
            id,
            tag: who.tag,
            moderator: who.moderator,
            muted: who.muted,
            deaf: false,
            waiting,
            volume_db: 0,
            prompt: None,
            wait: None,
            adapter: RateAdapter::new(),
        });
        self.order.push(id);
        self.events.push_back(RoomEvent::Joined {
            member: id,
            tag: who.tag,
        });
        if who.moderator {
            self.moderators += 1;
            if self.moderators == 1 {
                self.release_waiting();
            }
        }
        if waiting {
            let wait = self.wait_sound();
            if let Some(m) = self.get_mut(id) {
                m.wait = wait;
            }
        } else if was_empty {
            if let Some(alone) = self.sounds.alone.clone() {
                self.play_to(id, Box::new(PromptPlayer::new(alone)));
            }
        } else {
            if self.settings.announce_count {
                if let Some(count) = self.count_prompt(self.order.len()) {
                    self.play_to(id, count);
                }
            }
            if let Some(spec) = self.settings.join_sound {
                self.play_tone(&spec);
            }
        }
        Ok(id)
    }

    /// The member count as `digits/N` prompts, one per decimal digit.
    fn count_prompt(&self, count: usize) -> Option<Box<dyn AudioSource>> {
        if self.sounds.digits.len() != 10 {
            return None;
        }
        let prompts: Vec<Arc<Prompt>> = count
            .to_string()
            .bytes()
            .filter_map(|b| self.sounds.digits.get(usize::from(b - b'0')).cloned())
            .collect();
        Playlist::new(prompts)
            .ok()
            .map(|p| Box::new(p) as Box<dyn AudioSource>)
    }

    fn wait_sound(&self) -> Option<Looping> {
        match &self.sounds.wait_moderator {
            Some(p) => Some(Looping::Prompt(PromptPlayer::new(p.clone()))),
            None => {
                let spec: ToneSpec = WAIT_TONE.parse().ok()?;
                let tone = ToneGenerator::new(&spec, self.rate()).ok()?;
                Some(Looping::Tone(Box::new(tone)))
            }
        }
    }

    /// A moderator is present: waiting members are mixed and hear the room.
    fn release_waiting(&mut self) {
        for i in 0..self.order.len() {
            let id = self.order[i];
            if let Some(m) = self.get_mut(id) {
                if m.waiting {
                    m.waiting = false;
                    m.wait = None;
                    let muted = m.muted;
                    let _ = self.mixer.set_muted(id, muted);
                }
            }
        }
    }

    /// No moderator is left: members other than moderators wait again.
    fn hold_waiting(&mut self) {
        for i in 0..self.order.len() {
            let id = self.order[i];
            let wait = self.wait_sound();
            if let Some(m) = self.get_mut(id) {
                if !m.moderator && !m.waiting {
                    m.waiting = true;
                    m.wait = wait;
                    let _ = self.mixer.set_muted(id, true);
                }
            }
        }
    }

    /// Removes a member; when it was the last moderator and the room ends with it, everyone
    /// else leaves as [`RemoveReason::Ended`].
    pub fn leave(&mut self, id: MemberId, reason: RemoveReason) -> bool {
        let Some(m) = self.members.get_mut(id.index()).and_then(Option::take) else {
            return false;
        };
        if m.id != id {
            self.members[id.index()] = Some(m);
            return false;
        }
        let _ = self.mixer.remove_member(id);
        self.drain_mixer_events();
        self.order.retain(|&o| o != id);
        self.events.push_back(RoomEvent::Left {
            member: id,
            tag: m.tag,
            reason,
        });
        if m.moderator {
            self.moderators -= 1;
            if self.moderators == 0 && !self.order.is_empty() {
                if self.settings.end_with_last_moderator {
                    self.end();
                    return true;
                }
                if self.settings.wait_for_moderator {
                    self.hold_waiting();
                }
            }
        }
        if !self.order.is_empty() && reason != RemoveReason::Ended {
            if let Some(spec) = self.settings.leave_sound {
                self.play_tone(&spec);
            }
        }
        true
    }

    /// Ends the room: every member leaves as [`RemoveReason::Ended`].
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        while let Some(&id) = self.order.first() {
            self.leave(id, RemoveReason::Ended);
        }
        self.events.push_back(RoomEvent::Ended);
    }

    /// Locks or unlocks the room.
    pub fn set_locked(&mut self, locked: bool) {
        if self.locked != locked {
            self.locked = locked;
            self.events.push_back(RoomEvent::Locked(locked));
        }
    }

    /// Mutes or unmutes a member.
    pub fn set_muted(&mut self, id: MemberId, muted: bool) -> bool {
        let Some(m) = self.get_mut(id) else {
            return false;
        };
        if m.muted == muted {
            return true;
        }
        m.muted = muted;
        let mixer_muted = muted || m.waiting;
        let _ = self.mixer.set_muted(id, mixer_muted);
        self.drain_mixer_events();
        self.events
            .push_back(RoomEvent::Muted { member: id, muted });
        true
    }

    /// Makes a member deaf or hearing.
    pub fn set_deaf(&mut self, id: MemberId, deaf: bool) -> bool {
        let Some(m) = self.get_mut(id) else {
            return false;
        };
        if m.deaf == deaf {
            return true;
        }
        m.deaf = deaf;
        let _ = self.mixer.set_deaf(id, deaf);
        self.events.push_back(RoomEvent::Deaf { member: id, deaf });
        true
    }

    /// Sets what a member hears louder or quieter, in dB (clamped to the mixer's range).
    pub fn set_volume(&mut self, id: MemberId, db: i8) -> bool {
        let db = db.clamp(GAIN_MIN_DB, GAIN_MAX_DB);
        let Some(m) = self.get_mut(id) else {
            return false;
        };
        m.volume_db = db;
        Gain::from_db(db)
            .and_then(|g| self.mixer.set_output_gain(id, g))
            .is_ok()
    }

    /// Sets how loud a member is heard by the others, in dB (clamped to the mixer's range).
    pub fn set_input_gain(&mut self, id: MemberId, db: i8) -> bool {
        let db = db.clamp(GAIN_MIN_DB, GAIN_MAX_DB);
        self.get(id).is_some()
            && Gain::from_db(db)
                .and_then(|g| self.mixer.set_input_gain(id, g))
                .is_ok()
    }

    /// A key pressed by a member; returns the action it took.
    pub fn key(&mut self, id: MemberId, digit: Digit) -> Option<KeyAction> {
        let action = self.settings.keys.get(digit)?;
        let m = self.get(id)?;
        let (muted, deaf, volume) = (m.muted, m.deaf, m.volume_db);
        match action {
            KeyAction::Mute => self.set_muted(id, !muted),
            KeyAction::Deaf => self.set_deaf(id, !deaf),
            KeyAction::VolumeDown => self.set_volume(id, volume.saturating_sub(VOLUME_STEP_DB)),
            KeyAction::VolumeUp => self.set_volume(id, volume.saturating_add(VOLUME_STEP_DB)),
            KeyAction::Leave => self.leave(id, RemoveReason::Left),
        };
        Some(action)
    }

    /// Plays a sound to everyone, replacing a sound already playing to the room.
    pub fn play(&mut self, source: Box<dyn AudioSource>) {
        self.announcement = Some(source);
    }

    /// Plays a sound to one member alone; it replaces the room audio for that member.
    pub fn play_to(&mut self, id: MemberId, source: Box<dyn AudioSource>) -> bool {
        match self.get_mut(id) {
            Some(m) => {
                m.prompt = Some(source);
                true
            }
            None => false,
        }
    }

    fn play_tone(&mut self, spec: &ToneSpec) {
        self.tone = ToneGenerator::new(spec, self.rate()).ok().map(Box::new);
    }

    /// Mixes one tick. `input` gives a member's received frame (by id and tag), or `None`
    /// when nothing usable was heard from it (no audio, or a key tone to keep out of the mix).
    pub fn tick<'f>(&mut self, mut input: impl FnMut(MemberId, usize) -> Option<&'f Frame>) {
        self.tick_inbound(|id, tag| input(id, tag).map(Inbound::new));
    }

    /// [`Room::tick`] with each member's frame as an [`Inbound`], which may carry the level
    /// its sender gave it (RFC 6464), taken by talker detection instead of measuring.
    pub fn tick_inbound<'f>(
        &mut self,
        mut input: impl FnMut(MemberId, usize) -> Option<Inbound<'f>>,
    ) {
        let rate = self.rate();
        let tone_on = fill_from(
            &mut self.tone,
            &mut self.tone_adapter,
            rate,
            &mut self.source_frame,
        );
        let announce_on = fill_from(
            &mut self.announcement,
            &mut self.announce_adapter,
            rate,
            &mut self.announce_frame,
        );
        let (tones, announce) = (self.tones, self.announce);
        let (source_frame, announce_frame) = (&self.source_frame, &self.announce_frame);
        let members = &self.members;
        self.mixer.mix(|id| {
            if id == tones {
                return tone_on.then(|| Inbound::new(source_frame));
            }
            if id == announce {
                return announce_on.then(|| Inbound::new(announce_frame));
            }
            let m = members.get(id.index())?.as_ref()?;
            input(id, m.tag)
        });
        self.drain_mixer_events();
    }

    fn drain_mixer_events(&mut self) {
        while let Some(e) = self.mixer.poll_event() {
            let (member, talking) = match e {
                MixerEvent::StartedTalking(m) => (m, true),
                MixerEvent::StoppedTalking(m) => (m, false),
            };
            if member != self.tones && member != self.announce {
                self.events
                    .push_back(RoomEvent::Talking { member, talking });
            }
        }
    }

    /// The full mix of the last tick (every talker and room sound): what a recorder hears.
    pub fn mix_frame(&self) -> &Frame {
        self.mixer.shared_frame()
    }

    /// Calls `out` with what each member is to be sent for the last tick, in joining order.
    /// A member's own prompt (or wait sound) replaces the room audio.
    pub fn for_each_output(&mut self, mut out: impl FnMut(MemberId, usize, RoomOutput<'_>)) {
        let rate = self.rate();
        for &id in &self.order {
            let Some(m) = self
                .members
                .get_mut(id.index())
                .and_then(|m| m.as_mut())
                .filter(|m| m.id == id)
            else {
                continue;
            };
            if m.waiting {
                if let Some(w) = m.wait.as_mut() {
                    m.adapter.fill(w, rate, &mut self.scratch);
                    out(id, m.tag, RoomOutput::Own(&self.scratch));
                } else {
                    out(id, m.tag, RoomOutput::Silence);
                }
                continue;
            }
            if m.prompt.is_some()
                && fill_from(&mut m.prompt, &mut m.adapter, rate, &mut self.scratch)
            {
                out(id, m.tag, RoomOutput::Own(&self.scratch));
                continue;
            }
            let o = match self.mixer.output(id) {
                Ok(MixOutput::Shared(f)) => RoomOutput::Shared(f),
                Ok(MixOutput::Own(f)) => RoomOutput::Own(f),
                Ok(MixOutput::Silence) | Err(_) => RoomOutput::Silence,
            };
            out(id, m.tag, o);
        }
    }

    /// The next change, oldest first; drain after every tick and control.
    pub fn poll_event(&mut self) -> Option<RoomEvent> {
        self.events.pop_front()
    }
}

/// Fills `frame` at `rate` from a playing source; `false` (and the source dropped) once it
/// has ended.
fn fill_from<S: AudioSource + ?Sized>(
    source: &mut Option<Box<S>>,
    adapter: &mut RateAdapter,
    rate: ClockRate,
    frame: &mut Frame,
) -> bool {
    let Some(s) = source.as_mut() else {
        return false;
    };
    let fill = adapter.fill(s.as_mut(), rate, frame);
    if fill.ended {
        *source = None;
    }
    fill.any
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
