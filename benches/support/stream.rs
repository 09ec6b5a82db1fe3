//! Recorded speech and the phones' RTP streams the media benchmarks replay from memory.
#![allow(dead_code)]

use switchboard::media::codec::{CodecKind, CodecParams};
use switchboard::media::resample::StreamResampler;
use switchboard::rtp::hdrext::ONE_BYTE_PROFILE;
use switchboard::rtp::packet::{HeaderExtension, RtpHeader, RtpPacket};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp, Ssrc, WireSeq};

/// The recorded speech the benchmarks send, at `rate`.
pub fn speech(rate: ClockRate) -> Vec<i16> {
    let pcm: Vec<i16> = include_bytes!("../../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    if rate == ClockRate::HZ_8000 {
        return pcm;
    }
    let mut r = StreamResampler::new(ClockRate::HZ_8000, rate, 20).unwrap();
    let mut out = vec![0i16; r.output_len()];
    let mut up = Vec::new();
    for frame in pcm.chunks_exact(r.input_len()) {
        r.process(frame, &mut out).unwrap();
        up.extend_from_slice(&out);
    }
    up
}

/// One phone's RTP stream: `pcm` encoded in 20 ms payloads, replayed in a loop with
/// sequence numbers and timestamps running on.
pub struct Stream {
    pub payloads: Vec<Vec<u8>>,
    pt: PayloadType,
    step: u32,
    ssrc: Ssrc,
    /// Packets sent so far: sequence numbers run on over frames DTX left out.
    sent: std::cell::Cell<u16>,
    /// Each payload's RFC 6464 level, sent on header extension id [`LEVEL_ID`], when the
    /// phone sends them.
    levels: Option<Vec<u8>>,
}

/// The one-byte header extension id the benchmark phones send their audio level on.
pub const LEVEL_ID: u8 = 1;

/// A frame's RFC 6464 level: minus its RMS in dBov, 127 for digital silence.
fn frame_level(pcm: &[i16]) -> u8 {
    let mean_square =
        pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len().max(1) as f64;
    let dbov = 10.0 * (mean_square / (32768.0f64 * 32768.0)).log10();
    (-dbov).round().clamp(0.0, 127.0) as u8
}

impl Stream {
    pub fn new(kind: CodecKind, pt: u8, pcm: &[i16], ssrc: u32) -> Stream {
        Stream::with(kind, pt, pcm, ssrc, &CodecParams::default())
    }

    /// A stream from an encoder with `params` (Opus with `usedtx=1` leaves silent frames out;
    /// an `audio_level_id` sends each packet's level on [`LEVEL_ID`]).
    pub fn with(kind: CodecKind, pt: u8, pcm: &[i16], ssrc: u32, params: &CodecParams) -> Stream {
        let mut enc = kind.new_codec_with(params);
        let frame = kind.frame_samples(20).unwrap();
        let levels = params
            .audio_level_id
            .map(|_| pcm.chunks_exact(frame).map(frame_level).collect());
        let payloads = pcm
            .chunks_exact(frame)
            .map(|f| {
                let mut p = vec![0u8; enc.max_encoded_len(frame).max(1500)];
                let n = enc.encode(f, &mut p).unwrap();
                p.truncate(n);
                p
            })
            .collect();
        Stream {
            payloads,
            pt: PayloadType::new(pt).unwrap(),
            step: (frame as u64 * u64::from(kind.rtp_clock().hz())
                / u64::from(kind.sample_rate().hz())) as u32,
            ssrc: Ssrc::new(ssrc),
            sent: std::cell::Cell::new(0),
            levels,
        }
    }

    /// Packet `n` of the stream into `buf`; its length, or 0 for a frame DTX left out.
    pub fn packet(&self, n: u64, buf: &mut [u8]) -> usize {
        let payload = &self.payloads[n as usize % self.payloads.len()];
        if payload.is_empty() {
            return 0;
        }
        let seq = self.sent.get();
        self.sent.set(seq.wrapping_add(1));
        let header = RtpHeader {
            marker: seq == 0,
            payload_type: self.pt,
            seq: WireSeq::new(seq),
            timestamp: RtpTimestamp::new((n as u32).wrapping_mul(self.step)),
            ssrc: self.ssrc,
        };
        let mut packet = RtpPacket::new(header, payload);
        let level = self.levels.as_ref().map(|l| l[n as usize % l.len()]);
        let block = level.map(|l| [LEVEL_ID << 4, l, 0, 0]);
        if let Some(data) = &block {
            packet.extension = Some(HeaderExtension {
                profile: ONE_BYTE_PROFILE,
                data,
            });
        }
        packet.write(buf).unwrap()
    }
}
