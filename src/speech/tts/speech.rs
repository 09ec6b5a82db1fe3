//! [`Speech`], the audio source a `say()` plays, and the producer side that feeds it.
//!
//! A sentence already in the cache plays from its shared prompt. A new one plays from a
//! bounded single-producer/single-consumer ring: the synthesis task writes samples at the
//! leg's rate, the media tick reads them. Both ends only touch atomics, so `fill` never
//! allocates, locks or waits; the producer, which may run far ahead, waits for room with a
//! timer instead of being woken by the tick.

use std::sync::atomic::{AtomicBool, AtomicI16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::media::frame::AudioSource;
use crate::media::prompt::{Prompt, PromptPlayer};
use crate::rtp::types::ClockRate;

use super::TtsError;

/// Seconds of audio the ring holds: enough to ride over a slow sentence or a slow network
/// read, small enough that a room full of callers does not hold minutes of audio each.
const RING_SECONDS: usize = 2;

/// State shared by one [`Speech`] and its producer.
pub(crate) struct Shared {
    buf: Box<[AtomicI16]>,
    /// Samples ever read; only the consumer stores it.
    head: AtomicUsize,
    /// Samples ever written; only the producer stores it.
    tail: AtomicUsize,
    /// The producer will write nothing more.
    done: AtomicBool,
    /// The listener is gone: nothing more needs to reach the ring.
    cancelled: AtomicBool,
    error: OnceLock<TtsError>,
    underruns: AtomicU64,
}

impl Shared {
    fn new(capacity: usize) -> Self {
        Self {
            buf: (0..capacity.max(1)).map(|_| AtomicI16::new(0)).collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            error: OnceLock::new(),
            underruns: AtomicU64::new(0),
        }
    }

    fn available(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(self.head.load(Ordering::Relaxed))
    }

    /// Copies up to `out.len()` samples out; consumer only.
    fn pop(&self, out: &mut [i16]) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let n = self.available().min(out.len());
        let cap = self.buf.len();
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = self.buf[(head.wrapping_add(i)) % cap].load(Ordering::Relaxed);
        }
        self.head.store(head.wrapping_add(n), Ordering::Release);
        n
    }

    /// Copies as much of `input` as there is room for; producer only.
    fn push(&self, input: &[i16]) -> usize {
        let tail = self.tail.load(Ordering::Relaxed);
        let used = tail.wrapping_sub(self.head.load(Ordering::Acquire));
        let cap = self.buf.len();
        let n = cap.saturating_sub(used).min(input.len());
        for (i, &s) in input[..n].iter().enumerate() {
            self.buf[(tail.wrapping_add(i)) % cap].store(s, Ordering::Relaxed);
        }
        self.tail.store(tail.wrapping_add(n), Ordering::Release);
        n
    }
}

/// Whether a [`Speech`]'s producer failed, read from outside the media thread.
#[derive(Clone)]
pub struct SpeechWatch(Option<Arc<Shared>>);

impl SpeechWatch {
    /// Why the producer stopped early, once it has.
    pub fn error(&self) -> Option<TtsError> {
        self.0.as_ref()?.error.get().cloned()
    }
}

impl std::fmt::Debug for SpeechWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SpeechWatch").field(&self.error()).finish()
    }
}

/// What `say()` plays: the audio of one request at the leg's rate, as it is produced.
///
/// When the producer is behind, a frame is silence rather than the end; the speech ends
/// once the producer is done and everything it made has been played, or early when it
/// fails (see [`Speech::error`]). Dropping it stops the producer from feeding it.
pub struct Speech {
    rate: ClockRate,
    source: Source,
}

enum Source {
    Cached(PromptPlayer),
    Live(Arc<Shared>),
}

impl Speech {
    /// A speech playing a finished prompt.
    pub(crate) fn cached(prompt: Arc<Prompt>, rate: ClockRate) -> Self {
        Self {
            rate,
            source: Source::Cached(PromptPlayer::new(prompt)),
        }
    }

    /// A speech fed by a producer, and that producer.
    pub(crate) fn live(rate: ClockRate) -> (Self, Feed) {
        let shared = Arc::new(Shared::new(rate.hz() as usize * RING_SECONDS));
        let speech = Self {
            rate,
            source: Source::Live(Arc::clone(&shared)),
        };
        (speech, Feed { shared, rate })
    }

    /// Why the producer stopped early, once it has; `None` while it runs or when it
    /// finished.
    pub fn error(&self) -> Option<&TtsError> {
        match &self.source {
            Source::Cached(_) => None,
            Source::Live(s) => s.error.get(),
        }
    }

    /// A handle the call keeps to learn, once the speech has played, whether its producer
    /// failed (the speech itself goes to the media thread).
    pub fn watch(&self) -> SpeechWatch {
        match &self.source {
            Source::Cached(_) => SpeechWatch(None),
            Source::Live(s) => SpeechWatch(Some(Arc::clone(s))),
        }
    }

    /// True when this plays a sentence from the cache (nothing was synthesized for it).
    pub fn is_cached(&self) -> bool {
        matches!(self.source, Source::Cached(_))
    }

    /// True while the producer may still add audio.
    pub fn is_producing(&self) -> bool {
        match &self.source {
            Source::Cached(_) => false,
            Source::Live(s) => !s.done.load(Ordering::Acquire),
        }
    }

    /// Samples ready to play now.
    pub fn buffered(&self) -> usize {
        match &self.source {
            Source::Cached(p) => p.remaining(),
            Source::Live(s) => s.available(),
        }
    }

    /// Frames that were silence because the producer was behind.
    pub fn underruns(&self) -> u64 {
        match &self.source {
            Source::Cached(_) => 0,
            Source::Live(s) => s.underruns.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Speech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speech")
            .field("rate", &self.rate.hz())
            .field("cached", &self.is_cached())
            .field("producing", &self.is_producing())
            .finish()
    }
}

impl AudioSource for Speech {
    fn rate(&self) -> ClockRate {
        self.rate
    }

    fn fill(&mut self, out: &mut [i16]) -> usize {
        let shared = match &mut self.source {
            Source::Cached(player) => return player.fill(out),
            Source::Live(shared) => shared,
        };
        // `done` is read before the samples: whatever was written before it was set is
        // then visible, so a finished producer's last samples are never mistaken for an end.
        let done = shared.done.load(Ordering::Acquire);
        if shared.available() >= out.len() || done {
            return shared.pop(out);
        }
        // Behind: a whole frame of silence now keeps the next words whole instead of
        // cutting a gap into the middle of a frame.
        shared.underruns.fetch_add(1, Ordering::Relaxed);
        out.fill(0);
        out.len()
    }
}

impl Drop for Speech {
    fn drop(&mut self) {
        if let Source::Live(s) = &self.source {
            s.cancelled.store(true, Ordering::Release);
        }
    }
}

/// The producer's end of a live [`Speech`].
pub(crate) struct Feed {
    shared: Arc<Shared>,
    rate: ClockRate,
}

impl Feed {
    /// True once the [`Speech`] is gone.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// Writes `samples` into the ring, waiting for room as the listener plays; returns
    /// early, having dropped the rest, if the listener goes away.
    pub(crate) async fn send(&self, mut samples: &[i16]) {
        while !samples.is_empty() && !self.is_cancelled() {
            let n = self.shared.push(samples);
            samples = &samples[n..];
            if n == 0 {
                // Room comes back at the play rate: wait about as long as the listener
                // takes to play what is needed, within bounds that keep the ring from
                // running dry and the task from spinning.
                let want = samples.len().min(self.shared.buf.len() / 4).max(1);
                let wait = Duration::from_secs_f64(want as f64 / f64::from(self.rate.hz()));
                tokio::time::sleep(
                    wait.clamp(Duration::from_millis(10), Duration::from_millis(250)),
                )
                .await;
            }
        }
    }

    /// Ends the speech: the listener plays what is left, then stops.
    pub(crate) fn finish(self, result: Result<(), TtsError>) {
        if let Err(e) = result {
            let _ = self.shared.error.set(e);
        }
        self.shared.done.store(true, Ordering::Release);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // A producer that panicked or was aborted must still end the speech.
        self.shared.done.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_and_keeps_order() {
        let s = Shared::new(10);
        let mut out = [0i16; 4];
        let mut next = 0i16;
        let mut expect = 0i16;
        for _ in 0..50 {
            let chunk: Vec<i16> = (next..next + 3).collect();
            let n = s.push(&chunk);
            next += n as i16;
            let got = s.pop(&mut out);
            for &v in &out[..got] {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        assert!(expect > 100, "{expect}");
    }

    #[test]
    fn ring_refuses_past_capacity() {
        let s = Shared::new(8);
        assert_eq!(s.push(&[1; 5]), 5);
        assert_eq!(s.push(&[2; 5]), 3);
        assert_eq!(s.push(&[3; 1]), 0);
        let mut out = [0i16; 16];
        assert_eq!(s.pop(&mut out), 8);
        assert_eq!(&out[..8], &[1, 1, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn live_speech_gives_silence_when_behind_and_ends_after_the_producer() {
        let (mut speech, feed) = Speech::live(ClockRate::HZ_8000);
        let mut frame = [7i16; 160];
        assert_eq!(speech.fill(&mut frame), 160);
        assert!(frame.iter().all(|&s| s == 0));
        assert_eq!(speech.underruns(), 1);
        assert_eq!(feed.shared.push(&[5; 200]), 200);
        assert_eq!(speech.fill(&mut frame), 160);
        assert!(frame.iter().all(|&s| s == 5));
        assert!(speech.is_producing());
        feed.finish(Err(TtsError::Engine("boom".into())));
        assert_eq!(speech.fill(&mut frame), 40);
        assert_eq!(speech.fill(&mut frame), 0);
        assert!(!speech.is_producing());
        assert_eq!(
            speech.error().map(|e| e.to_string()).as_deref(),
            Some("synthesis failed: boom")
        );
    }

    #[test]
    fn dropping_the_speech_cancels_the_feed() {
        let (speech, feed) = Speech::live(ClockRate::HZ_8000);
        assert!(!feed.is_cancelled());
        drop(speech);
        assert!(feed.is_cancelled());
    }
}
