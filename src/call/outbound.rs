//! What calls a script may place: targets must match an `[outbound] allow` pattern (a script
//! or API token that goes astray must not call anywhere it likes, toll numbers included), and
//! a call may place only so many legs. The server-wide cap on placed legs is counted by the
//! live task ([`OutboundSlots`]), as only it sees every call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The rules for placing calls.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Target patterns: `*` stands for any run of characters; case is ignored.
    allow: Vec<String>,
    /// Legs one call may place in all.
    pub max_legs_per_call: u32,
}

impl OutboundPolicy {
    /// A policy allowing targets that match any of `allow`.
    pub fn new(allow: &[String], max_legs_per_call: u32) -> Self {
        OutboundPolicy {
            allow: allow
                .iter()
                .map(|p| p.trim().to_ascii_lowercase())
                .collect(),
            max_legs_per_call,
        }
    }

    /// Whether `target` may be called.
    pub fn allows(&self, target: &str) -> bool {
        let t = target.trim().to_ascii_lowercase();
        self.allow.iter().any(|p| glob(p.as_bytes(), t.as_bytes()))
    }
}

/// `*` matches any run of bytes, everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The server-wide count of placed legs against its cap.
#[derive(Debug)]
pub struct OutboundSlots {
    used: AtomicUsize,
    max: usize,
}

impl OutboundSlots {
    /// Room for `max` placed legs at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(OutboundSlots {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, or None at the cap; the slot is given back when dropped.
    pub fn take(self: &Arc<Self>) -> Option<OutboundSlot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| OutboundSlot(self.clone()))
    }

    /// Placed legs now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One placed leg's share of the cap.
#[derive(Debug)]
pub struct OutboundSlot(Arc<OutboundSlots>);

impl Drop for OutboundSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_targets_with_stars_and_no_case() {
        let p = OutboundPolicy::new(
            &[
                "sip:*@127.0.0.1".into(),
                "SIP:+1555*@carrier.example:5060".into(),
            ],
            4,
        );
        assert!(p.allows("sip:bob@127.0.0.1"));
        assert!(p.allows("sip:+15551234@carrier.example:5060"));
        assert!(
            !p.allows("sip:bob@127.0.0.1:5070"),
            "a pattern matches the whole target"
        );
        assert!(!p.allows("sip:+19001234@carrier.example:5060"));
        assert!(!p.allows("sip:bob@127.0.0.10"));
        assert!(!OutboundPolicy::default().allows("sip:bob@127.0.0.1"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        // A long hostile target is still decided quickly.
        let long = "a".repeat(10_000);
        assert!(!glob(b"*a*a*a*a*b", long.as_bytes()));
    }

    #[test]
    fn slots_stop_at_the_cap_and_come_back_when_dropped() {
        let slots = OutboundSlots::new(2);
        let a = slots.take();
        let b = slots.take();
        assert!(a.is_some() && b.is_some());
        assert!(slots.take().is_none());
        drop(a);
        assert_eq!(slots.in_use(), 1);
        assert!(slots.take().is_some());
    }
}
