//! One room's audio mixer, sans-IO: decoded 20 ms frames in, one frame (or a reference to the
//! room's shared frame) out per member, talker changes as events.
//!
//! # The mix
//! Each tick only the members detected as talking ([`super::vad`]) are summed, in `i32`, after
//! their input gain. A talker hears `sat16(sum − own)`, the others' voices without its own.
//! Everyone else hears the same `sat16(sum)`: that frame is computed once per tick
//! ([`Mixer::shared_frame`]) and reported as [`MixOutput::Shared`], so the caller encodes it
//! once per (codec, ptime) group and sends the same payload to every such member. Saturation
//! happens once, on the final value, so talkers that cancel each other never clip.
//!
//! Who gets a frame of their own ([`MixOutput::Own`]):
//! - a member whose audio was summed this tick (it must not hear itself);
//! - a member whose output gain is not 0 dB (the gain is applied to the `i32` sum before
//!   saturating, which the shared frame cannot carry).
//!
//! A deaf member gets [`MixOutput::Silence`]: the stream keeps flowing (no RTP timeout at the
//! far end, no comfort-noise negotiation) and, like the shared frame, one encoded silence
//! payload per codec serves all of them. A muted member is never summed and is not run
//! through talker detection, but hears the room. A [`MemberKind::ListenOnly`] member (a
//! recorder) contributes nothing and hears the full mix, i.e. the shared frame.
//!
//! # Timing and input
//! The mixer has no clock and no buffer: the caller calls [`Mixer::mix`] once per 20 ms tick
//! and hands over at most one decoded frame per member, taken from that member's jitter
//! buffer (each leg has one; it absorbs jitter and clock skew and flushes input lagging more
//! than a few frames, so the room never drifts behind a slow sender). A member with no frame
//! this tick contributes nothing and still hears the room.
//!
//! # Order of a tick
//! 1. Apply membership and control changes (add, remove, mute, gains…).
//! 2. [`Mixer::mix`] with each speaking member's frame.
//! 3. Encode [`Mixer::shared_frame`] once per (codec, ptime) group that has a member with
//!    [`MixOutput::Shared`], then walk [`Mixer::outputs`]: shared members get that payload,
//!    `Own` members get their frame encoded, `Silence` members a cached silence payload.
//! 4. Drain [`Mixer::poll_event`].
//!
//! Adding or removing a member touches only that member: the others' outputs of the last tick
//! stay as they were, and the next tick mixes whoever is present then.
//!
//! # Cost
//! Member storage grows only when a member joins into a full table; a tick allocates nothing,
//! takes no lock and does no I/O. A listener costs one talker-detection check (a sum of
//! squares over its frame, or nothing when the sender gave an RFC 6464 level) and a flag.

use std::collections::VecDeque;

use crate::media::frame::{samples_at, ClockRate, Frame, MAX_FRAME_SAMPLES, NARROW_RATE, SILENCE};

use super::vad::{frame_energy, AudioLevel, Measure, Transition, Vad, VadConfig, VadParams};

/// Most members one room can hold: this many talkers at the highest input gain still sum
/// within `i32`.
pub const MAX_MEMBERS: usize = 16_000;
/// Lowest settable gain, in dB.
pub const GAIN_MIN_DB: i8 = -12;
/// Highest settable gain, in dB.
pub const GAIN_MAX_DB: i8 = 12;

/// Fractional bits of the fixed-point gains.
const GAIN_SHIFT: u32 = 12;
/// `round(4096 × 10^(dB/20))` for dB = −12..=12.
const GAIN_Q12: [i32; 25] = [
    1029, 1154, 1295, 1453, 1631, 1830, 2053, 2303, 2584, 2900, 3254, 3651, 4096, 4596, 5157, 5786,
    6492, 7284, 8173, 9170, 10289, 11544, 12953, 14533, 16306,
];

/// Why a mixer call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MixerError {
    /// The id names no current member (never added, or removed since).
    #[error("no member {0:?} in this room")]
    UnknownMember(MemberId),
    /// The room already holds [`MAX_MEMBERS`] members.
    #[error("room is full ({MAX_MEMBERS} members)")]
    RoomFull,
    /// A gain outside [`GAIN_MIN_DB`]..=[`GAIN_MAX_DB`].
    #[error("gain {0} dB out of range {GAIN_MIN_DB}..={GAIN_MAX_DB}")]
    GainOutOfRange(i8),
    /// The talker detection settings are inconsistent.
    #[error("invalid talker detection settings: {0}")]
    InvalidVad(&'static str),
}

/// A member of one mixer; ids of removed members are never valid again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    slot: u32,
    generation: u32,
}

impl MemberId {
    /// A small dense index, reused after removal: a key for the caller's side tables.
    pub fn index(self) -> usize {
        self.slot as usize
    }

    /// The id as one number, unique within its room (the slot's generation in the high half).
    pub fn as_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.slot)
    }

    /// The id back from [`MemberId::as_u64`].
    pub fn from_u64(v: u64) -> Self {
        Self {
            slot: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// How a member takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// Speaks (when not muted) and listens.
    Speaker,
    /// Only listens to the full mix, e.g. a recorder; never asked for input.
    ListenOnly,
    /// A sound played to the room (a join tone, an announcement): summed whenever it gives a
    /// frame, without talker detection, and hears nothing.
    Source,
}

/// A gain in whole dB, applied in fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gain {
    db: i8,
    q12: i32,
}

impl Default for Gain {
    fn default() -> Self {
        Self::UNITY
    }
}

impl Gain {
    /// 0 dB.
    pub const UNITY: Gain = Gain {
        db: 0,
        q12: 1 << GAIN_SHIFT,
    };

    /// A gain of `db` dB, within [`GAIN_MIN_DB`]..=[`GAIN_MAX_DB`].
    pub fn from_db(db: i8) -> Result<Self, MixerError> {
        let index = usize::try_from(i16::from(db) - i16::from(GAIN_MIN_DB))
            .map_err(|_| MixerError::GainOutOfRange(db))?;
        let q12 = *GAIN_Q12.get(index).ok_or(MixerError::GainOutOfRange(db))?;
        Ok(Self { db, q12 })
    }

    /// The gain in dB.
    pub fn db(self) -> i8 {
        self.db
    }

    /// Whether this is 0 dB.
    pub fn is_unity(self) -> bool {
        self.db == 0
    }

    /// Scales a sample or sum, rounding to nearest; the mixer's exact arithmetic.
    #[inline]
    pub fn apply(self, x: i32) -> i64 {
        (i64::from(x) * i64::from(self.q12) + (1 << (GAIN_SHIFT - 1))) >> GAIN_SHIFT
    }
}

/// One member's decoded input for a tick.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// One frame at the mixer's rate (a frame at another rate is not mixed).
    pub pcm: &'a Frame,
    /// The sender's RFC 6464 level for this frame; when given, no energy is computed.
    pub level: Option<AudioLevel>,
}

impl<'a> Inbound<'a> {
    /// A frame whose level the mixer measures itself.
    pub fn new(pcm: &'a Frame) -> Self {
        Self { pcm, level: None }
    }
}

/// What a member is to be sent for the last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixOutput<'a> {
    /// The room's shared frame (the same for every such member): encode once per codec.
    Shared(&'a Frame),
    /// A frame for this member alone.
    Own(&'a Frame),
    /// Silence (deaf, or joined since the last tick): one encoded payload serves all.
    Silence,
}

impl<'a> MixOutput<'a> {
    /// The samples, whichever kind of output this is.
    pub fn frame(&self) -> &'a Frame {
        match *self {
            MixOutput::Shared(f) | MixOutput::Own(f) => f,
            MixOutput::Silence => &SILENCE,
        }
    }
}

/// A talker change, as detected during [`Mixer::mix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixerEvent {
    /// The member's audio is now being mixed.
    StartedTalking(MemberId),
    /// The member's audio is no longer mixed (quiet past the hang-over, muted, or removed).
    StoppedTalking(MemberId),
}

/// Which frame a member gets for the last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Shared,
    Own,
    Silence,
}

#[derive(Debug, Clone)]
struct Member {
    kind: MemberKind,
    muted: bool,
    deaf: bool,
    input_gain: Gain,
    output_gain: Gain,
    vad: Vad,
    out: Out,
    /// This tick's contribution to the sum, after input gain; valid while summed.
    contribution: [i32; MAX_FRAME_SAMPLES],
    /// This member's own outbound frame; valid when `out == Out::Own`.
    frame: Frame,
}

impl Member {
    fn new(kind: MemberKind, rate: ClockRate) -> Self {
        Self {
            kind,
            muted: false,
            deaf: false,
            input_gain: Gain::UNITY,
            output_gain: Gain::UNITY,
            vad: Vad::default(),
            out: Out::Silence,
            contribution: [0; MAX_FRAME_SAMPLES],
            frame: Frame::silence(rate),
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    generation: u32,
    // Boxed so that a 6 kB member does not make every scan of the table stride over it.
    member: Option<Box<Member>>,
}

/// The mixer of one room.
#[derive(Debug, Clone)]
pub struct Mixer {
    vad: VadParams,
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    /// The rate every frame in and out is at.
    rate: ClockRate,
    /// Samples in one frame at `rate`.
    samples: usize,
    sum: [i32; MAX_FRAME_SAMPLES],
    shared: Frame,
    /// Members summed this tick.
    talkers: Vec<MemberId>,
    /// Slots not summed that still need a frame of their own (output gain).
    gained: Vec<u32>,
    events: VecDeque<MixerEvent>,
}

impl Mixer {
    /// An empty room with the given talker detection.
    pub fn new(vad: VadConfig) -> Result<Self, MixerError> {
        Self::with_capacity(vad, 0)
    }

    /// An empty room with storage for `members` members allocated up front.
    pub fn with_capacity(vad: VadConfig, members: usize) -> Result<Self, MixerError> {
        let members = members.min(MAX_MEMBERS);
        Ok(Self {
            vad: vad.compile()?,
            slots: Vec::with_capacity(members),
            free: Vec::with_capacity(members),
            len: 0,
            rate: NARROW_RATE,
            samples: samples_at(NARROW_RATE),
            sum: [0; MAX_FRAME_SAMPLES],
            shared: Frame::silence(NARROW_RATE),
            talkers: Vec::with_capacity(members),
            gained: Vec::with_capacity(members),
            events: VecDeque::with_capacity(2 * members),
        })
    }

    /// Changes the talker detection; members keep their current talking state.
    pub fn set_vad(&mut self, vad: VadConfig) -> Result<(), MixerError> {
        self.vad = vad.compile()?;
        Ok(())
    }

    /// The rate frames are mixed at.
    pub fn rate(&self) -> ClockRate {
        self.rate
    }

    /// Mixes at `rate` from the next tick: inputs must come at it, and outputs will. The
    /// frames of the last tick are silenced; talkers stay talking.
    pub fn set_rate(&mut self, rate: ClockRate) {
        if rate == self.rate {
            return;
        }
        self.rate = rate;
        self.samples = samples_at(rate);
        self.shared.clear(rate);
        for m in self
            .slots
            .iter_mut()
            .filter_map(|s| s.member.as_deref_mut())
        {
            m.frame.clear(rate);
        }
    }

    /// Adds a member: unmuted, hearing, 0 dB both ways, silent until the next tick.
    pub fn add_member(&mut self, kind: MemberKind) -> Result<MemberId, MixerError> {
        if self.len >= MAX_MEMBERS {
            return Err(MixerError::RoomFull);
        }
        let member = Some(Box::new(Member::new(kind, self.rate)));
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).map_err(|_| MixerError::RoomFull)?;
                self.slots.push(Slot {
                    generation: 0,
                    member: None,
                });
                // Grown here so that the tick itself never allocates.
                self.talkers.reserve(self.slots.len() - self.talkers.len());
                self.gained.reserve(self.slots.len() - self.gained.len());
                self.free.reserve(self.slots.len() - self.free.len());
                self.events
                    .reserve((2 * self.slots.len()).saturating_sub(self.events.len()));
                slot
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.member = member;
        self.len += 1;
        Ok(MemberId {
            slot,
            generation: entry.generation,
        })
    }

    /// Removes a member; a talker's removal is reported as [`MixerEvent::StoppedTalking`].
    pub fn remove_member(&mut self, id: MemberId) -> Result<(), MixerError> {
        self.member(id)?;
        let entry = &mut self.slots[id.slot as usize];
        let was_talking = entry.member.take().is_some_and(|m| m.vad.is_talking());
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(id.slot);
        self.len -= 1;
        if was_talking {
            self.events.push_back(MixerEvent::StoppedTalking(id));
        }
        Ok(())
    }

    /// Whether `id` is a current member.
    pub fn contains(&self, id: MemberId) -> bool {
        self.member(id).is_ok()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Mutes or unmutes; muting a talker stops it at once ([`MixerEvent::StoppedTalking`]).
    pub fn set_muted(&mut self, id: MemberId, muted: bool) -> Result<(), MixerError> {
        let m = self.member_mut(id)?;
        m.muted = muted;
        if muted && m.vad.is_talking() {
            m.vad.reset();
            self.events.push_back(MixerEvent::StoppedTalking(id));
        }
        Ok(())
    }

    /// Makes a member deaf (it gets [`MixOutput::Silence`]) or hearing again.
    pub fn set_deaf(&mut self, id: MemberId, deaf: bool) -> Result<(), MixerError> {
        self.member_mut(id)?.deaf = deaf;
        Ok(())
    }

    /// Sets the gain applied to a member's audio before it is summed.
    pub fn set_input_gain(&mut self, id: MemberId, gain: Gain) -> Result<(), MixerError> {
        self.member_mut(id)?.input_gain = gain;
        Ok(())
    }

    /// Sets the gain applied to what a member hears; other than 0 dB it needs its own frame.
    pub fn set_output_gain(&mut self, id: MemberId, gain: Gain) -> Result<(), MixerError> {
        self.member_mut(id)?.output_gain = gain;
        Ok(())
    }

    /// Whether the member is muted.
    pub fn is_muted(&self, id: MemberId) -> Result<bool, MixerError> {
        Ok(self.member(id)?.muted)
    }

    /// Whether the member is deaf.
    pub fn is_deaf(&self, id: MemberId) -> Result<bool, MixerError> {
        Ok(self.member(id)?.deaf)
    }

    /// Whether `frame` from member `id` may be summed in the next tick: the member talks
    /// already, or the frame is loud enough to start it talking. A caller whose member sends
    /// at another rate than the mix converts only such frames; any other is handed over as
    /// it is, for talker detection alone.
    pub fn may_sum(&self, id: MemberId, frame: &[i16]) -> bool {
        self.may_sum_with(id, frame, None)
    }

    /// [`Mixer::may_sum`] for a frame whose sender may have given its level (RFC 6464),
    /// which is then taken instead of measuring.
    pub fn may_sum_with(&self, id: MemberId, frame: &[i16], level: Option<AudioLevel>) -> bool {
        self.member(id).is_ok_and(|m| {
            let measure =
                level.map_or_else(|| Measure::Energy(frame_energy(frame)), Measure::Level);
            m.kind == MemberKind::Speaker
                && !m.muted
                && (m.vad.is_talking() || measure.loud(&self.vad))
        })
    }

    /// The level below which a member not talking may leave its packets undecoded, when
    /// they carry RFC 6464 levels (see [`Mixer::quiet_floor`]).
    pub fn quiet_level(&self) -> Option<AudioLevel> {
        self.vad.quiet_below()
    }

    /// Whether member `id` may leave packets quieter than [`Mixer::quiet_level`] undecoded
    /// next tick, and below which level: while it does not talk (a muted member never does)
    /// such a packet could neither be summed nor start it talking. `None`: decode all.
    pub fn quiet_floor(&self, id: MemberId) -> Option<AudioLevel> {
        let m = self.member(id).ok()?;
        (m.kind == MemberKind::Speaker && !m.vad.is_talking())
            .then(|| self.quiet_level())
            .flatten()
    }

    /// Whether talker detection has the member talking (it is summed when it sends a frame).
    pub fn is_talking(&self, id: MemberId) -> Result<bool, MixerError> {
        Ok(self.member(id)?.vad.is_talking())
    }

    /// Runs one tick: `input` is asked once for each unmuted speaker's frame, in table order
    /// (`None`: no audio this tick), then every member's output is ready in [`Mixer::outputs`].
    pub fn mix<'f, F>(&mut self, mut input: F)
    where
        F: FnMut(MemberId) -> Option<Inbound<'f>>,
    {
        let (n, rate) = (self.samples, self.rate);
        let sum = &mut self.sum[..n];
        sum.fill(0);
        self.talkers.clear();
        self.gained.clear();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(m) = slot.member.as_deref_mut() else {
                continue;
            };
            let id = MemberId {
                slot: index as u32,
                generation: slot.generation,
            };
            let mut summed = false;
            if m.kind == MemberKind::Source {
                if let Some(frame) = input(id).filter(|f| f.pcm.rate() == rate) {
                    add_contribution(sum, &mut m.contribution, frame.pcm, m.input_gain);
                }
                m.out = Out::Silence;
                continue;
            }
            if m.kind == MemberKind::Speaker && !m.muted {
                // A frame at another rate than the mix is measured, not summed: the caller
                // converts only what may be heard (see `may_sum`).
                let frame = input(id);
                let measure = frame.map_or(Measure::Absent, |f| {
                    f.level
                        .map_or_else(|| Measure::Energy(frame_energy(f.pcm)), Measure::Level)
                });
                match m.vad.update(measure, &self.vad) {
                    Some(Transition::Started) => {
                        self.events.push_back(MixerEvent::StartedTalking(id));
                    }
                    Some(Transition::Stopped) => {
                        self.events.push_back(MixerEvent::StoppedTalking(id));
                    }
                    None => {}
                }
                let summable = frame.filter(|f| f.pcm.rate() == rate);
                if let (true, Some(frame)) = (m.vad.is_talking(), summable) {
                    add_contribution(sum, &mut m.contribution, frame.pcm, m.input_gain);
                    self.talkers.push(id);
                    summed = true;
                }
            }
            m.out = if m.deaf {
                Out::Silence
            } else if summed {
                Out::Own
            } else if !m.output_gain.is_unity() {
                self.gained.push(index as u32);
                Out::Own
            } else {
                Out::Shared
            };
        }

        let sum = &self.sum[..n];
        for (out, &s) in self.shared.iter_mut().zip(sum) {
            *out = sat16(i64::from(s));
        }
        for id in &self.talkers {
            if let Some(m) = self.slots[id.slot as usize].member.as_deref_mut() {
                if m.out == Out::Own {
                    minus_own(&mut m.frame, sum, &m.contribution, m.output_gain);
                }
            }
        }
        for &index in &self.gained {
            if let Some(m) = self.slots[index as usize].member.as_deref_mut() {
                for (out, &s) in m.frame.iter_mut().zip(sum) {
                    *out = sat16(m.output_gain.apply(s));
                }
            }
        }
    }

    /// The frame every [`MixOutput::Shared`] member gets for the last tick: `sat16(sum)`.
    pub fn shared_frame(&self) -> &Frame {
        &self.shared
    }

    /// How many members were summed in the last tick.
    pub fn talker_count(&self) -> usize {
        self.talkers.len()
    }

    /// The members summed in the last tick (still members), in table order.
    pub fn talkers(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.talkers.iter().copied().filter(|&id| self.contains(id))
    }

    /// What `id` is to be sent for the last tick.
    pub fn output(&self, id: MemberId) -> Result<MixOutput<'_>, MixerError> {
        Ok(self.output_of(self.member(id)?))
    }

    /// Every member's output for the last tick, in table order.
    pub fn outputs(&self) -> impl Iterator<Item = (MemberId, MixOutput<'_>)> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let m = slot.member.as_deref()?;
            let id = MemberId {
                slot: index as u32,
                generation: slot.generation,
            };
            Some((id, self.output_of(m)))
        })
    }

    /// The next talker change, oldest first; drain after every tick.
    pub fn poll_event(&mut self) -> Option<MixerEvent> {
        self.events.pop_front()
    }

    fn output_of<'a>(&'a self, m: &'a Member) -> MixOutput<'a> {
        match m.out {
            Out::Shared => MixOutput::Shared(&self.shared),
            Out::Own => MixOutput::Own(&m.frame),
            Out::Silence => MixOutput::Silence,
        }
    }

    fn member(&self, id: MemberId) -> Result<&Member, MixerError> {
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.member.as_deref())
            .ok_or(MixerError::UnknownMember(id))
    }

    fn member_mut(&mut self, id: MemberId) -> Result<&mut Member, MixerError> {
        self.slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.member.as_deref_mut())
            .ok_or(MixerError::UnknownMember(id))
    }
}

/// Saturates to the 16-bit range.
#[inline]
fn sat16(x: i64) -> i16 {
    x.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

#[inline]
fn add_contribution(sum: &mut [i32], own: &mut [i32; MAX_FRAME_SAMPLES], pcm: &Frame, gain: Gain) {
    if gain.is_unity() {
        for ((s, o), &x) in sum.iter_mut().zip(own.iter_mut()).zip(pcm.iter()) {
            *o = i32::from(x);
            *s += *o;
        }
    } else {
        for ((s, o), &x) in sum.iter_mut().zip(own.iter_mut()).zip(pcm.iter()) {
            // |x| ≤ 2^15 times at most +12 dB stays well inside i32.
            *o = gain.apply(i32::from(x)) as i32;
            *s += *o;
        }
    }
}

#[inline]
fn minus_own(out: &mut Frame, sum: &[i32], own: &[i32; MAX_FRAME_SAMPLES], gain: Gain) {
    if gain.is_unity() {
        for ((o, &s), &c) in out.iter_mut().zip(sum).zip(own) {
            *o = sat16(i64::from(s - c));
        }
    } else {
        for ((o, &s), &c) in out.iter_mut().zip(sum).zip(own) {
            *o = sat16(gain.apply(s - c));
        }
    }
}
