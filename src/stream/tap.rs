//! The media side of a stream on a call's leg: every tick it hands the call's audio to the
//! socket task at the stream's rate and, for a bidirectional stream, mixes what the
//! application sent back into what the caller hears. Everything here runs on the media
//! tick: it never waits, and after it is made it never allocates (the player's queue and
//! the conversion frames are made up front).

use crate::media::frame::{ClockRate, Frame};
use crate::media::leg::AudioTap;
use crate::media::resample::RateAdapter;

use super::{AudioFrame, Outbound, Player, PlayoutEvent, StreamHandle, Track};

/// Longest audio the application may queue ahead of playout: 30 s.
pub const MAX_QUEUED: std::time::Duration = std::time::Duration::from_secs(30);

/// Application commands taken from the socket per tick at most, so a flood cannot hold a
/// tick up; the rest wait for the next tick (the socket task holds the application back).
const COMMANDS_PER_TICK: usize = 16;

/// How a stream taps a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapConfig {
    /// Which side of the call is sent.
    pub track: Track,
    /// The application's audio is played to the caller.
    pub bidirectional: bool,
    /// The rate of the stream's audio (8 or 16 kHz).
    pub rate: ClockRate,
}

/// A stream tapping one leg.
#[derive(Debug)]
pub struct StreamTap {
    id: u64,
    handle: StreamHandle,
    cfg: TapConfig,
    player: Player,
    /// Frames handed over (20 ms each), for the timestamps.
    ticks: u64,
    inbound: RateAdapter,
    outbound: RateAdapter,
    up: RateAdapter,
    pcm_in: Frame,
    pcm_out: Frame,
    app: Frame,
    app_up: Frame,
}

impl StreamTap {
    /// A tap for stream `id` (the call's own number for it) over `handle`.
    pub fn new(id: u64, handle: StreamHandle, cfg: TapConfig) -> Self {
        let capacity = if cfg.bidirectional {
            cfg.rate.ticks_in(MAX_QUEUED) as usize
        } else {
            0
        };
        StreamTap {
            id,
            handle,
            cfg,
            player: Player::new(capacity),
            ticks: 0,
            inbound: RateAdapter::new(),
            outbound: RateAdapter::new(),
            up: RateAdapter::new(),
            pcm_in: Frame::silence(cfg.rate),
            pcm_out: Frame::silence(cfg.rate),
            app: Frame::silence(cfg.rate),
            app_up: Frame::silence(cfg.rate),
        }
    }

    /// The handle to the socket task (its counters).
    pub fn handle(&self) -> &StreamHandle {
        &self.handle
    }

    /// Samples of the application's audio waiting to be played.
    pub fn queued_samples(&self) -> usize {
        self.player.queued_samples()
    }

    /// Mixes the application's next frame into `out` (what the caller is about to hear),
    /// after taking what it sent since the last tick; echoes the marks now played.
    fn play(&mut self, out: &mut Frame) {
        for _ in 0..COMMANDS_PER_TICK {
            match self.handle.try_recv() {
                Some(c) if self.cfg.bidirectional => self.player.apply(c),
                Some(_) => {}
                None => break,
            }
        }
        if !self.cfg.bidirectional {
            return;
        }
        if self.player.queued_samples() > 0 {
            let n = self.player.fill(&mut self.app);
            self.up.convert(&self.app, out.rate(), &mut self.app_up);
            for (o, a) in out.iter_mut().zip(self.app_up.iter()) {
                *o = o.saturating_add(*a);
            }
            if n < self.app.len() {
                // The application's audio ran out: its next words start a new stretch.
                self.up.pass();
            }
        } else {
            self.up.pass();
        }
        while let Some(e) = self.player.next_event() {
            let (PlayoutEvent::Played(name) | PlayoutEvent::Cleared(name)) = e;
            self.handle.send(Outbound::Mark(name));
        }
    }

    /// Hands this tick's audio to the socket: what the caller said and what it heard, at
    /// the stream's rate.
    fn capture(&mut self, caller: &Frame, to_caller: &Frame) {
        let rate = self.cfg.rate;
        let inbound = match self.cfg.track {
            Track::Inbound | Track::Both => {
                self.inbound.convert(caller, rate, &mut self.pcm_in);
                Some(&self.pcm_in[..])
            }
            Track::Outbound => None,
        };
        let outbound = match self.cfg.track {
            Track::Outbound | Track::Both => {
                self.outbound.convert(to_caller, rate, &mut self.pcm_out);
                Some(&self.pcm_out[..])
            }
            Track::Inbound => None,
        };
        let at = self.ticks * 20;
        self.ticks += 1;
        self.handle
            .send(Outbound::Audio(AudioFrame::new(at, inbound, outbound)));
    }
}

impl AudioTap for StreamTap {
    fn id(&self) -> u64 {
        self.id
    }

    /// The application's audio is played to the caller.
    fn speaks(&self) -> bool {
        self.cfg.bidirectional
    }

    /// The application's next frame is mixed into what the caller is about to hear, then
    /// what the caller said and heard goes to the socket.
    fn tick(&mut self, caller: &Frame, to_caller: &mut Frame) {
        self.play(to_caller);
        self.capture(caller, to_caller);
    }

    fn digit(&mut self, digit: char) {
        self.handle.send(Outbound::Dtmf(digit));
    }
}
