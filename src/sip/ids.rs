//! Where the SIP core's identifiers come from: tags, branches, first CSeqs, SDP session ids,
//! SSRCs, RTP start points and random back-offs are all drawn from one [`Ids`] source handed
//! to the core. Production seeds it from entropy once, which keeps tags and branches
//! unguessable (RFC 3261 §8.1.1.3, §8.1.1.7); tests seed it to replay a call byte for byte.

/// A seedable source of identifiers and random choices.
#[derive(Debug, Clone)]
pub struct Ids {
    rng: fastrand::Rng,
}

impl Ids {
    /// A source seeded from entropy: what production uses.
    pub fn from_entropy() -> Self {
        Self::with_seed(fastrand::u64(..))
    }

    /// A source that yields the same sequence for the same seed.
    pub fn with_seed(seed: u64) -> Self {
        Ids {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A source of its own for the call `n`, derived from `seed`: calls do not share a
    /// sequence, so one call's identifiers do not depend on what the others drew.
    pub fn for_call(seed: u64, n: u64) -> Self {
        // An odd multiplier spreads neighbouring call numbers over the whole seed space.
        Self::with_seed(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// A token for tags (RFC 3261 asks for 32 bits of randomness; this has 64), as 16 hex
    /// digits.
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.rng.u64(..))
    }

    /// A new RFC 3261 branch (`z9hG4bK` and a token) for a request we send.
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token())
    }

    /// The CSeq number our first request in a dialog follows: low enough never to wrap.
    pub fn first_cseq(&mut self) -> u32 {
        self.rng.u32(1..0x1000)
    }

    /// A random `u16` (an RTP start sequence number).
    pub fn u16(&mut self) -> u16 {
        self.rng.u16(..)
    }

    /// A random `u32` (an SSRC, an RTP start timestamp).
    pub fn u32(&mut self) -> u32 {
        self.rng.u32(..)
    }

    /// A random `u64` in `range` (an SDP session id, a seed, a back-off in ms).
    pub fn u64(&mut self, range: impl std::ops::RangeBounds<u64>) -> u64 {
        self.rng.u64(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_identifiers_and_another_seed_others() {
        let draw = |seed| {
            let mut ids = Ids::with_seed(seed);
            (ids.token(), ids.branch(), ids.first_cseq())
        };
        assert_eq!(draw(1), draw(1));
        let (a, b) = (draw(1), draw(2));
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
    }

    #[test]
    fn tokens_and_branches_keep_their_form() {
        let mut ids = Ids::with_seed(0);
        for _ in 0..100 {
            let t = ids.token();
            assert_eq!(t.len(), 16);
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
            let b = ids.branch();
            assert!(b.starts_with("z9hG4bK"));
            assert_eq!(b.len(), 7 + 16);
            assert!((1..0x1000).contains(&ids.first_cseq()));
        }
    }

    #[test]
    fn calls_get_sources_of_their_own() {
        let mut a = Ids::for_call(5, 1);
        let mut b = Ids::for_call(5, 2);
        assert_ne!(a.token(), b.token());
        assert_eq!(Ids::for_call(5, 1).token(), Ids::for_call(5, 1).token());
    }
}
