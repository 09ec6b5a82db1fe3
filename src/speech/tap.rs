//! The ear on a call's leg: every tick it hears what the far end said (converted to the
//! ear's rate) and passes what the [`Ear`] makes of it to the call through a bounded
//! queue, tagged with the leg's number so one queue serves all of a call's ears. Modes
//! come the other way, made off the media thread. On the media tick it never waits and,
//! after it is made, never allocates.

use tokio::sync::mpsc;

use super::ear::{ear_rate, Ear, EarSetup};
use super::listen::EarEvent;
use crate::media::frame::{ClockRate, Frame};
use crate::media::leg::AudioTap;
use crate::media::resample::RateAdapter;

/// Events and modes queued at most each way; an ear says a few things a second at most.
const QUEUE: usize = 8;

/// What a call's ears heard, each event with the tag of the ear that heard it.
pub type Heard = (u32, EarEvent);

/// A queue for a call's ears to report to: the sending end for [`EarTap::new`].
pub fn ear_queue() -> (mpsc::Sender<Heard>, mpsc::Receiver<Heard>) {
    mpsc::channel(QUEUE)
}

/// The call's end of an ear: modes to it.
#[derive(Debug)]
pub struct EarLink {
    id: u64,
    rate: ClockRate,
    modes: mpsc::Sender<EarSetup>,
}

impl EarLink {
    /// The tap's id on the leg.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The rate the ear hears at, for the setups sent to it.
    pub fn rate(&self) -> ClockRate {
        self.rate
    }

    /// Gives the ear a new mode (false: the ear is gone, or its queue is full).
    pub fn set(&self, setup: EarSetup) -> bool {
        self.modes.try_send(setup).is_ok()
    }
}

/// An ear tapping one leg.
#[derive(Debug)]
pub struct EarTap {
    id: u64,
    ear: Ear,
    adapter: RateAdapter,
    heard: Frame,
    tag: u32,
    modes: mpsc::Receiver<EarSetup>,
    events: mpsc::Sender<Heard>,
}

impl EarTap {
    /// An idle ear for a leg at `leg_rate` reporting to `events` with `tag`, and the call's
    /// link to it.
    pub fn new(
        id: u64,
        leg_rate: ClockRate,
        tag: u32,
        events: mpsc::Sender<Heard>,
    ) -> (EarTap, EarLink) {
        let rate = ear_rate(leg_rate);
        let (mode_tx, mode_rx) = mpsc::channel(QUEUE);
        let mut adapter = RateAdapter::new();
        let mut heard = Frame::silence(rate);
        // The converter is made now, not on the first tick.
        adapter.convert(&Frame::silence(leg_rate), rate, &mut heard);
        let tap = EarTap {
            id,
            ear: Ear::new(rate),
            adapter,
            heard,
            tag,
            modes: mode_rx,
            events,
        };
        let link = EarLink {
            id,
            rate,
            modes: mode_tx,
        };
        (tap, link)
    }

    fn say(&mut self, event: Option<EarEvent>) {
        if let Some(e) = event {
            if self.events.try_send((self.tag, e)).is_err() {
                tracing::warn!("ear event dropped: the call is not reading them");
            }
        }
    }
}

impl AudioTap for EarTap {
    fn id(&self) -> u64 {
        self.id
    }

    fn speaks(&self) -> bool {
        false
    }

    fn tick(&mut self, caller: &Frame, _to_caller: &mut Frame) {
        while let Ok(setup) = self.modes.try_recv() {
            let e = self.ear.apply(setup);
            self.say(e);
        }
        if matches!(self.ear.mode(), super::listen::EarMode::Off) {
            self.adapter.pass();
            return;
        }
        self.adapter
            .convert(caller, self.ear.rate(), &mut self.heard);
        let e = self.ear.push(&self.heard);
        self.say(e);
    }

    fn digit(&mut self, _digit: char) {}
}

impl Drop for EarTap {
    fn drop(&mut self) {
        let e = self.ear.finish();
        self.say(e);
    }
}
