//! A bank of Goertzel filters evaluated together over one block of samples.
//!
//! All filters share the loop over samples so the compiler can keep the per-frequency state
//! in SIMD registers; coefficients are computed once, for exact (non-integer) bin frequencies.

/// A filter's last two states `(s[n−1], s[n−2])`, from which its complex output follows.
pub type FilterState = (f32, f32);

/// `K` Goertzel filters at fixed frequencies.
#[derive(Debug, Clone)]
pub struct GoertzelBank<const K: usize> {
    coef: [f32; K],
}

impl<const K: usize> GoertzelBank<K> {
    /// Filters for `freqs` (Hz) at `sample_rate` (Hz).
    pub fn new(freqs: &[f32; K], sample_rate: u32) -> Self {
        let mut coef = [0.0; K];
        for (c, &f) in coef.iter_mut().zip(freqs) {
            let w = 2.0 * std::f64::consts::PI * f64::from(f) / f64::from(sample_rate);
            *c = (2.0 * w.cos()) as f32;
        }
        Self { coef }
    }

    /// Filter states after the first `mid` samples of `block` and after
    /// all of it, for callers that need complex DFT values (phase) of both parts.
    #[inline]
    pub fn states_split(&self, block: &[f32], mid: usize) -> ([FilterState; K], [FilterState; K]) {
        let mut s1 = [0.0f32; K];
        let mut s2 = [0.0f32; K];
        let (head, tail) = block.split_at(mid.min(block.len()));
        self.run(head, &mut s1, &mut s2);
        let at_mid = std::array::from_fn(|k| (s1[k], s2[k]));
        self.run(tail, &mut s1, &mut s2);
        (at_mid, std::array::from_fn(|k| (s1[k], s2[k])))
    }

    /// `|X(f)|²` of the filter at index `k` from its final states.
    #[inline]
    pub fn power_of(&self, k: usize, (s1, s2): FilterState) -> f32 {
        s1 * s1 + s2 * s2 - self.coef[k] * s1 * s2
    }

    #[inline]
    fn run(&self, block: &[f32], s1: &mut [f32; K], s2: &mut [f32; K]) {
        for &x in block {
            for k in 0..K {
                // (x − s2) does not depend on s1, so only one multiply-add sits on the
                // loop-carried dependency chain.
                let s0 = (x - s2[k]) + self.coef[k] * s1[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
    }

    /// Squared DFT magnitude `|X(f)|²` of `block` at each frequency.
    ///
    /// A sine of amplitude `A` at exactly `f` over `n` samples gives about `(A·n/2)²`.
    #[inline]
    pub fn power(&self, block: &[f32]) -> [f32; K] {
        let mut s1 = [0.0f32; K];
        let mut s2 = [0.0f32; K];
        self.run(block, &mut s1, &mut s2);
        std::array::from_fn(|k| self.power_of(k, (s1[k], s2[k])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(f: f32, amp: f32, n: usize, rate: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (2.0 * std::f32::consts::PI * f * i as f32 / rate).sin())
            .collect()
    }

    #[test]
    fn on_frequency_power_matches_amplitude() {
        let bank = GoertzelBank::new(&[697.0, 1209.0, 1000.0], 8000);
        let x = sine(1209.0, 1000.0, 102, 8000.0);
        let p = bank.power(&x);
        let expected = (1000.0 * 102.0 / 2.0f32).powi(2);
        assert!((p[1] / expected - 1.0).abs() < 0.1, "{p:?}");
        assert!(p[0] < expected * 0.01, "{p:?}");
        assert!(p[2] < expected * 0.05, "{p:?}");
    }
}
