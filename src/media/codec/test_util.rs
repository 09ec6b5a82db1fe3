//! Signal helpers for codec tests: tones, and measuring what survives a codec.

/// `seconds` of a sine at `freq` Hz, peak `amp`, sampled at `rate` Hz.
pub fn sine(freq: f64, amp: f64, rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amp * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

/// Least-squares fit of a sine at `freq` to `pcm`: (amplitude, SNR in dB of the fit against
/// the residual). Independent of the codec's delay, which only shifts the phase.
pub fn fit_sine(pcm: &[i16], freq: f64, rate: u32) -> (f64, f64) {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let (mut ss, mut cc, mut sc, mut xs, mut xc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &x) in pcm.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let x = f64::from(x);
        ss += s * s;
        cc += c * c;
        sc += s * c;
        xs += x * s;
        xc += x * c;
    }
    let det = ss * cc - sc * sc;
    let a = (xs * cc - xc * sc) / det;
    let b = (xc * ss - xs * sc) / det;
    let mut signal = 0.0;
    let mut noise = 0.0;
    for (i, &x) in pcm.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let fit = a * s + b * c;
        signal += fit * fit;
        noise += (f64::from(x) - fit).powi(2);
    }
    let amplitude = (a * a + b * b).sqrt();
    (amplitude, 10.0 * (signal / noise.max(1e-9)).log10())
}

/// Runs `pcm` through `codec` in frames of `frame` samples and returns the decoded audio.
pub fn round_trip(codec: &mut dyn super::AudioCodec, pcm: &[i16], frame: usize) -> Vec<i16> {
    let mut out = Vec::with_capacity(pcm.len());
    let mut payload = vec![0u8; codec.max_encoded_len(frame)];
    let mut decoded = vec![0i16; frame];
    for chunk in pcm.chunks_exact(frame) {
        let n = codec.encode(chunk, &mut payload).unwrap();
        let m = codec.decode(&payload[..n], &mut decoded).unwrap();
        out.extend_from_slice(&decoded[..m]);
    }
    out
}
