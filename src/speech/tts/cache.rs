//! Synthesized sentences kept for the next caller who hears them, bounded in bytes and
//! evicted least recently used first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::media::prompt::Prompt;

/// What a sentence's audio depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub engine: &'static str,
    pub voice: String,
    pub rate_hz: u32,
    /// Speaking rate in thousandths, the precision synthesis is done at.
    pub speed_milli: u32,
    pub text: String,
}

struct Entry {
    prompt: Arc<Prompt>,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: u64,
    clock: u64,
}

/// The cache; every operation holds its lock only to look up or insert.
pub(crate) struct Cache {
    limit: u64,
    inner: Mutex<Inner>,
}

/// Bytes a prompt holds.
pub(crate) fn prompt_bytes(p: &Prompt) -> u64 {
    (p.samples.len() * std::mem::size_of::<i16>()) as u64
}

impl Cache {
    /// An empty cache holding at most `limit` bytes of audio.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each change leaves the map and its byte count consistent before it can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The largest prompt worth keeping.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The prompt for `key`, marked as just used.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Prompt>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(key)?;
        entry.last_used = now;
        Some(Arc::clone(&entry.prompt))
    }

    /// Keeps `prompt` under `key`, evicting the least recently used until it fits; a
    /// prompt larger than the whole bound is not kept.
    pub(crate) fn insert(&self, key: Key, prompt: Arc<Prompt>) {
        let size = prompt_bytes(&prompt);
        if size > self.limit {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= prompt_bytes(&old.prompt);
        }
        while inner.bytes + size > self.limit {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= prompt_bytes(&e.prompt);
            }
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.bytes += size;
        inner.entries.insert(key, Entry { prompt, last_used });
    }

    /// Sentences held.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Bytes of audio held.
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        Key {
            engine: "flite",
            voice: "kal".into(),
            rate_hz: 8000,
            speed_milli: 1000,
            text: text.into(),
        }
    }

    fn prompt(samples: usize) -> Arc<Prompt> {
        Arc::new(Prompt {
            samples: vec![1i16; samples].into(),
            rate: 8000,
            name: "tts".into(),
        })
    }

    #[test]
    fn evicts_least_recently_used_within_the_bound() {
        let cache = Cache::new(1000);
        cache.insert(key("a"), prompt(200));
        cache.insert(key("b"), prompt(200));
        assert!(cache.get(&key("a")).is_some());
        // 400 + 400 > 1000 bytes: "b", used longest ago, goes.
        cache.insert(key("c"), prompt(200));
        assert_eq!(cache.bytes(), 800);
        assert!(cache.get(&key("b")).is_none());
        assert!(cache.get(&key("a")).is_some());
        assert!(cache.get(&key("c")).is_some());
        // Exactly at the bound fits; one byte over does not.
        let exact = Cache::new(400);
        exact.insert(key("x"), prompt(200));
        assert_eq!(exact.len(), 1);
        let small = Cache::new(399);
        small.insert(key("x"), prompt(200));
        assert_eq!(small.len(), 0);
    }

    #[test]
    fn replacing_a_key_keeps_the_count_right() {
        let cache = Cache::new(10_000);
        cache.insert(key("a"), prompt(100));
        cache.insert(key("a"), prompt(300));
        assert_eq!((cache.len(), cache.bytes()), (1, 600));
    }
}
