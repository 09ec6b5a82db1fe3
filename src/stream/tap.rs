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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::media::level::tone_share;
    use crate::stream::client::{loopback, Loopback};
    use crate::stream::{AppCommand, Outbound};

    const W48: ClockRate = ClockRate::HZ_48000;
    const N8: ClockRate = ClockRate::HZ_8000;

    fn hz(r: u32) -> ClockRate {
        ClockRate::new(r).unwrap()
    }

    fn sine(freq: f64, rate: ClockRate, frame: u64) -> Frame {
        let n = crate::media::frame::samples_at(rate);
        let r = f64::from(rate.hz());
        let pcm: Vec<i16> = (0..n as u64)
            .map(|i| {
                let t = (frame * n as u64 + i) as f64 / r;
                (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect();
        Frame::from_samples(rate, &pcm)
    }

    fn tap(track: Track, bidirectional: bool, rate: ClockRate) -> (StreamTap, Loopback) {
        let (handle, far) = loopback(1000, 1000);
        let cfg = TapConfig {
            track,
            bidirectional,
            rate,
        };
        (StreamTap::new(7, handle, cfg), far)
    }

    /// A frame as handed over: its timestamp, inbound and outbound tracks.
    type Handed = (u64, Option<Vec<i16>>, Option<Vec<i16>>);

    fn audio(far: &Loopback) -> Vec<Handed> {
        let mut out = Vec::new();
        while let Ok(m) = far.out.try_recv() {
            if let Outbound::Audio(f) = m {
                let track = |o| f.track(o).map(<[i16]>::to_vec);
                out.push((f.timestamp_ms(), track(false), track(true)));
            }
        }
        out
    }

    #[test]
    fn a_wideband_leg_is_carried_down_to_the_streams_rate_on_the_tracks_asked_for() {
        for (track, inbound, outbound) in [
            (Track::Inbound, true, false),
            (Track::Outbound, false, true),
            (Track::Both, true, true),
        ] {
            let (mut t, far) = tap(track, false, hz(16000));
            let mut said = Vec::new();
            let mut heard = Vec::new();
            for k in 0..50 {
                let mut out = sine(700.0, W48, k);
                t.tick(&sine(3000.0, W48, k), &mut out);
                assert_eq!(out, sine(700.0, W48, k), "a listening stream adds nothing");
            }
            let frames = audio(&far);
            assert_eq!(frames.len(), 50);
            for (i, (at, inb, outb)) in frames.into_iter().enumerate() {
                assert_eq!(at, i as u64 * 20);
                assert_eq!(inb.is_some(), inbound);
                assert_eq!(outb.is_some(), outbound);
                said.extend(inb.unwrap_or_default());
                heard.extend(outb.unwrap_or_default());
            }
            if inbound {
                assert_eq!(said.len(), 50 * 320, "16 kHz frames");
                let s = tone_share(&said[3200..], 3000.0, 16000.0);
                assert!(s > 0.95, "caller's 3 kHz at 16 kHz: {s}");
            }
            if outbound {
                let s = tone_share(&heard[3200..], 700.0, 16000.0);
                assert!(s > 0.95, "what the caller hears: {s}");
            }
        }
    }

    #[test]
    fn the_applications_audio_is_mixed_in_and_clear_silences_it_on_the_next_frame() {
        let (mut t, far) = tap(Track::Inbound, true, N8);
        // One second of 500 Hz at 8 kHz, then a mark.
        let reply: Vec<i16> = (0..50).flat_map(|k| sine(500.0, N8, k).to_vec()).collect();
        far.app.try_send(AppCommand::Audio(reply)).unwrap();
        far.app.try_send(AppCommand::Mark("half".into())).unwrap();
        let mut heard = Vec::new();
        for k in 0..10 {
            let mut out = Frame::silence(W48);
            t.tick(&sine(1000.0, W48, k), &mut out);
            heard.extend_from_slice(&out);
        }
        let s = tone_share(&heard[4800..], 500.0, 48000.0);
        assert!(s > 0.95, "the reply at the leg's 48 kHz: {s}");
        assert_eq!(t.queued_samples(), 40 * 160);
        // Barge-in: the very next frame is silent, the mark comes back cleared.
        far.app.try_send(AppCommand::Clear).unwrap();
        let mut out = Frame::silence(W48);
        t.tick(&sine(1000.0, W48, 10), &mut out);
        assert!(out.iter().all(|&s| s == 0), "clear silences the next frame");
        let marks: Vec<String> = std::iter::from_fn(|| far.out.try_recv().ok())
            .filter_map(|m| match m {
                Outbound::Mark(n) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(marks, ["half"]);
    }

    #[test]
    fn a_mark_comes_back_on_the_tick_its_audio_ends() {
        let (mut t, far) = tap(Track::Inbound, true, N8);
        far.app
            .try_send(AppCommand::Audio(vec![1000; 3 * 160 + 80]))
            .unwrap();
        far.app.try_send(AppCommand::Mark("m".into())).unwrap();
        let mut marked_at = None;
        for k in 0..6 {
            let mut out = Frame::silence(N8);
            t.tick(&Frame::silence(N8), &mut out);
            let mark = std::iter::from_fn(|| far.out.try_recv().ok())
                .any(|m| matches!(m, Outbound::Mark(ref n) if n == "m"));
            if mark {
                marked_at.get_or_insert(k);
            }
        }
        // 3.5 frames of audio: played out during the fourth tick.
        assert_eq!(marked_at, Some(3));
    }

    #[test]
    fn a_listening_stream_drops_what_the_application_sends_and_keys_go_out() {
        let (mut t, far) = tap(Track::Inbound, false, N8);
        far.app
            .try_send(AppCommand::Audio(vec![9000; 1600]))
            .unwrap();
        let mut out = Frame::silence(N8);
        t.tick(&Frame::silence(N8), &mut out);
        assert!(out.iter().all(|&s| s == 0));
        assert!(!t.speaks());
        t.digit('#');
        let keys: Vec<char> = std::iter::from_fn(|| far.out.try_recv().ok())
            .filter_map(|m| match m {
                Outbound::Dtmf(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(keys, ['#']);
    }
}
