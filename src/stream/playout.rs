//! The player of what the application sends back: a bounded queue of linear PCM and marks
//! in order, drained one frame per media tick. Sans-IO: the media side calls
//! [`Player::fill`] on its own clock; nothing here waits or reads the time.

use std::collections::VecDeque;

use super::AppCommand;

/// Something the application asked to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutEvent {
    /// All audio queued before this mark has been played.
    Played(String),
    /// The mark was dropped by `clear` before its audio was played.
    Cleared(String),
}

/// The application's audio waiting to be played, with its marks.
#[derive(Debug)]
pub struct Player {
    audio: VecDeque<i16>,
    capacity: usize,
    /// Samples ever queued and ever played; a mark is due once `played` reaches its place.
    queued: u64,
    played: u64,
    marks: VecDeque<(u64, String)>,
    cleared: VecDeque<String>,
    dropped: u64,
}

impl Player {
    /// A player holding at most `capacity` samples (e.g. 30 s at 8 kHz = 240 000).
    pub fn new(capacity: usize) -> Self {
        Player {
            audio: VecDeque::with_capacity(capacity),
            capacity,
            queued: 0,
            played: 0,
            marks: VecDeque::new(),
            cleared: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Queues audio; what does not fit is dropped and counted.
    pub fn push(&mut self, pcm: &[i16]) {
        let room = self.capacity - self.audio.len();
        let taken = pcm.len().min(room);
        self.audio.extend(&pcm[..taken]);
        self.queued += taken as u64;
        self.dropped += (pcm.len() - taken) as u64;
    }

    /// Queues a mark after the audio queued so far.
    pub fn mark(&mut self, name: String) {
        self.marks.push_back((self.queued, name));
    }

    /// Drops all queued audio; every pending mark is reported as cleared.
    pub fn clear(&mut self) {
        self.played += self.audio.len() as u64;
        self.audio.clear();
        self.cleared
            .extend(self.marks.drain(..).map(|(_, name)| name));
    }

    /// Applies one command from the application.
    pub fn apply(&mut self, command: AppCommand) {
        match command {
            AppCommand::Audio(pcm) => self.push(&pcm),
            AppCommand::Mark(name) => self.mark(name),
            AppCommand::Clear => self.clear(),
        }
    }

    /// Writes the next `frame.len()` samples, silence where the queue runs short, and
    /// returns how many were real audio. Never allocates.
    pub fn fill(&mut self, frame: &mut [i16]) -> usize {
        let n = frame.len().min(self.audio.len());
        for (out, s) in frame.iter_mut().zip(self.audio.drain(..n)) {
            *out = s;
        }
        frame[n..].fill(0);
        self.played += n as u64;
        n
    }

    /// The next mark that is due (played or cleared), in order; call after each `fill`.
    pub fn next_event(&mut self) -> Option<PlayoutEvent> {
        if let Some(name) = self.cleared.pop_front() {
            return Some(PlayoutEvent::Cleared(name));
        }
        match self.marks.front() {
            Some((at, _)) if *at <= self.played => self
                .marks
                .pop_front()
                .map(|(_, name)| PlayoutEvent::Played(name)),
            _ => None,
        }
    }

    /// Samples waiting to be played.
    pub fn queued_samples(&self) -> usize {
        self.audio.len()
    }

    /// Samples dropped because the queue was full.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const FRAME: usize = 160;

    fn ramp(n: usize, start: i16) -> Vec<i16> {
        (0..n).map(|i| start + i as i16).collect()
    }

    fn events(p: &mut Player) -> Vec<PlayoutEvent> {
        std::iter::from_fn(|| p.next_event()).take(100).collect()
    }

    #[test]
    fn plays_in_order_then_silence() {
        let mut p = Player::new(8000);
        p.push(&ramp(200, 1));
        let mut f = [7i16; FRAME];
        assert_eq!(p.fill(&mut f), FRAME);
        assert_eq!(f.to_vec(), ramp(FRAME, 1));
        assert_eq!(p.fill(&mut f), 40);
        assert_eq!(f[..40].to_vec(), ramp(40, 161));
        assert!(f[40..].iter().all(|&s| s == 0));
        assert_eq!(p.fill(&mut f), 0);
        assert!(f.iter().all(|&s| s == 0));
    }

    #[test]
    fn mark_reported_on_the_frame_that_plays_its_last_sample() {
        let mut p = Player::new(8000);
        // Just inside one frame boundary and just outside the next.
        p.push(&ramp(FRAME * 2, 1));
        p.mark("two".into());
        p.push(&ramp(1, 1));
        p.mark("just-past".into());
        let mut f = [0i16; FRAME];
        p.fill(&mut f);
        assert_eq!(events(&mut p), []);
        p.fill(&mut f);
        assert_eq!(events(&mut p), [PlayoutEvent::Played("two".into())]);
        p.fill(&mut f);
        assert_eq!(events(&mut p), [PlayoutEvent::Played("just-past".into())]);
    }

    #[test]
    fn mark_with_nothing_queued_is_due_at_once() {
        let mut p = Player::new(100);
        p.mark("now".into());
        assert_eq!(events(&mut p), [PlayoutEvent::Played("now".into())]);
    }

    #[test]
    fn clear_takes_effect_on_the_next_frame() {
        let mut p = Player::new(8000);
        p.push(&[1000; 800]);
        p.mark("a".into());
        p.push(&[1000; 800]);
        p.mark("b".into());
        let mut f = [0i16; FRAME];
        assert_eq!(p.fill(&mut f), FRAME);
        p.clear();
        assert_eq!(
            events(&mut p),
            [
                PlayoutEvent::Cleared("a".into()),
                PlayoutEvent::Cleared("b".into())
            ]
        );
        assert_eq!(p.fill(&mut f), 0);
        assert!(f.iter().all(|&s| s == 0));
        // Audio after the clear plays, and a later mark is timed from it.
        p.push(&[5; FRAME]);
        p.mark("c".into());
        assert_eq!(p.fill(&mut f), FRAME);
        assert!(f.iter().all(|&s| s == 5));
        assert_eq!(events(&mut p), [PlayoutEvent::Played("c".into())]);
    }

    #[test]
    fn overflow_is_dropped_and_counted() {
        let mut p = Player::new(480);
        p.push(&[1; 480]);
        assert_eq!(p.dropped_samples(), 0);
        p.push(&[2; 1]);
        assert_eq!(p.dropped_samples(), 1);
        p.push(&[2; 100]);
        assert_eq!(p.dropped_samples(), 101);
        assert_eq!(p.queued_samples(), 480);
        let mut f = [0i16; FRAME];
        p.fill(&mut f);
        // Room for one more frame after playing one.
        p.push(&[3; FRAME + 1]);
        assert_eq!(p.dropped_samples(), 102);
    }

    #[test]
    fn fill_does_not_grow_the_queue() {
        let mut p = Player::new(1600);
        let cap = p.audio.capacity();
        let mut f = [0i16; FRAME];
        for round in 0..50 {
            p.push(&[round; 300]);
            p.fill(&mut f);
        }
        assert_eq!(p.audio.capacity(), cap);
    }
}
