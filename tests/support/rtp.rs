//! A test RTP endpoint: sends PCMU audio in real time and decodes what comes back.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard::media::codec::g711::{ulaw_decode, ulaw_encode};
use switchboard::media::tone::{ToneGenerator, ToneSpec};
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp, Ssrc, WireSeq};
use tokio::net::UdpSocket;

pub struct RtpPeer {
    pub socket: UdpSocket,
    seq: u16,
    ts: u32,
}

/// PCM of a tone spec at 8 kHz, `ms` long.
pub fn tone(spec: &str, ms: usize) -> Vec<i16> {
    let spec: ToneSpec = spec.parse().unwrap();
    let mut g = ToneGenerator::new(&spec, ClockRate::HZ_8000).unwrap();
    let mut pcm = vec![0i16; ms * 8];
    g.fill(&mut pcm);
    pcm
}

/// Share of `pcm`'s energy at `freq` (8 kHz audio).
pub fn tone_power(pcm: &[i16], freq: f64) -> f64 {
    switchboard::media::level::tone_share(pcm, freq, 8000.0)
}

/// The level (dBFS) of `pcm` at `rate` Hz and the share of `hz` in it, as medians over
/// 200 ms blocks.
pub fn measure_at(pcm: &[i16], rate: u32, hz: u32) -> (f64, f64) {
    let block = rate as usize / 5;
    let median = |mut v: Vec<f64>| {
        assert!(!v.is_empty(), "less than 200 ms to measure");
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let blocks: Vec<&[i16]> = pcm.chunks_exact(block).collect();
    (
        median(
            blocks
                .iter()
                .map(|b| switchboard::media::level::rms_dbfs(b))
                .collect(),
        ),
        median(
            blocks
                .iter()
                .map(|b| switchboard::media::level::tone_share(b, f64::from(hz), f64::from(rate)))
                .collect(),
        ),
    )
}

/// The highest share of `freq` in any 200 ms stretch of `pcm`: whether a tone came through
/// somewhere after the jitter buffer's delay.
pub fn peak_tone_power(pcm: &[i16], freq: f64) -> f64 {
    pcm.chunks(160 * 10)
        .map(|c| tone_power(c, freq))
        .fold(0.0, f64::max)
}

impl RtpPeer {
    /// Sends `digits` as RFC 4733 telephone-events (payload type 101), paced in real time.
    pub async fn send_dtmf(&mut self, to: SocketAddr, digits: &str) {
        use switchboard::media::dtmf::EventSender;
        use switchboard::rtp::types::ClockRate;
        let mut sender = EventSender::new(PayloadType::DEFAULT_TELEPHONE_EVENT, ClockRate::HZ_8000);
        sender.queue(digits).unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..500 {
            tick.tick().await;
            if sender.is_idle() {
                return;
            }
            let Some(ev) = sender.poll(RtpTimestamp::new(self.ts)) else {
                self.ts = self.ts.wrapping_add(160);
                continue;
            };
            let header = RtpHeader {
                marker: ev.marker,
                payload_type: ev.payload_type,
                seq: WireSeq::new(self.seq),
                timestamp: ev.timestamp,
                ssrc: Ssrc::new(0x5eed),
            };
            let mut out = vec![0u8; 1500];
            let n = RtpPacket::new(header, &ev.payload).write(&mut out).unwrap();
            self.socket.send_to(&out[..n], to).await.unwrap();
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
        }
    }

    pub async fn bind() -> RtpPeer {
        RtpPeer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            seq: fastrand::u16(..),
            ts: fastrand::u32(..),
        }
    }

    /// Sends a 1 kHz tone to `to` for 2 s and returns how much of it came back: the peak
    /// share of 1 kHz in any 200 ms of what was received meanwhile (and 300 ms after).
    pub async fn tone_back(&mut self, to: SocketAddr) -> f64 {
        let heard = self
            .exchange(to, &tone("1000/2000@-10", 2000), Duration::from_millis(300))
            .await;
        peak_tone_power(&heard, 1000.0)
    }

    /// Sends a second of a 1 kHz tone at -10 dBFS to the echo at `to` and checks what came
    /// back: nearly all of it, the 1 kHz share above 0.9, and the level above -25 dBFS.
    pub async fn expect_echo(&mut self, to: SocketAddr) {
        let sent = tone("1000/1000@-10", 1000);
        let back = self.exchange(to, &sent, Duration::from_millis(300)).await;
        assert!(
            back.len() >= 50 * 160,
            "only {} samples came back",
            back.len()
        );
        let best = peak_tone_power(&back, 1000.0);
        assert!(best > 0.9, "1 kHz power {best}");
        let level = switchboard::media::level::rms_dbfs(&back[back.len() / 4..back.len() / 2]);
        assert!(level > -25.0, "echo level {level} dBFS");
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Sends `pcm` to `to` as 20 ms PCMU packets paced in real time, and returns the decoded
    /// audio received meanwhile (and for `linger` after), in arrival order.
    pub async fn exchange(&mut self, to: SocketAddr, pcm: &[i16], linger: Duration) -> Vec<i16> {
        self.exchange_packets(to, pcm, 160, linger).await.audio
    }

    /// [`RtpPeer::exchange`] with packets of `per` samples, keeping what came back packet
    /// by packet as well.
    pub async fn exchange_packets(
        &mut self,
        to: SocketAddr,
        pcm: &[i16],
        per: usize,
        linger: Duration,
    ) -> Exchanged {
        let mut received = Exchanged::default();
        let ptime = Duration::from_micros(per as u64 * 125);
        let mut tick = tokio::time::interval(ptime);
        let mut buf = vec![0u8; 2048];
        let mut frames = pcm.chunks(per);
        let until = tokio::time::Instant::now() + ptime * pcm.len().div_ceil(per) as u32 + linger;
        let mut sent = 0usize;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(frame) = frames.next() {
                        let payload: Vec<u8> = frame.iter().map(|&s| ulaw_encode(s)).collect();
                        let header = RtpHeader {
                            marker: sent == 0,
                            payload_type: PayloadType::PCMU,
                            seq: WireSeq::new(self.seq),
                            timestamp: RtpTimestamp::new(self.ts),
                            ssrc: Ssrc::new(0x5eed),
                        };
                        let mut out = vec![0u8; 1500];
                        let n = RtpPacket::new(header, &payload).write(&mut out).unwrap();
                        self.socket.send_to(&out[..n], to).await.unwrap();
                        received.sent.push(std::time::Instant::now());
                        self.seq = self.seq.wrapping_add(1);
                        self.ts = self.ts.wrapping_add(frame.len() as u32);
                        sent += 1;
                    }
                }
                r = self.socket.recv_from(&mut buf) => {
                    let (n, _) = r.unwrap();
                    if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                        if p.header.payload_type == PayloadType::PCMU {
                            received.audio.extend(p.payload.iter().map(|&b| ulaw_decode(b)));
                            received.packets.push((p.header, p.payload.len()));
                            received.arrivals.push(std::time::Instant::now());
                        }
                    }
                }
                _ = tokio::time::sleep_until(until) => return received,
            }
        }
    }
}

/// What came back during an exchange.
#[derive(Default)]
pub struct Exchanged {
    /// The decoded audio, in arrival order.
    pub audio: Vec<i16>,
    /// Each audio packet's header and payload length.
    pub packets: Vec<(RtpHeader, usize)>,
    /// When each audio packet came back.
    pub arrivals: Vec<std::time::Instant>,
    /// When each packet went out.
    pub sent: Vec<std::time::Instant>,
}

impl Exchanged {
    /// The decoded audio of each packet that came back, with when it came.
    pub fn timed(&self) -> Vec<(std::time::Instant, &[i16])> {
        let mut at = 0;
        self.packets
            .iter()
            .zip(&self.arrivals)
            .map(|((_, len), t)| {
                let pcm = &self.audio[at..at + len];
                at += len;
                (*t, pcm)
            })
            .collect()
    }
}
