//! Wideband calls end to end, from an in-process phone: a call runs at its codec's own rate,
//! so a 6 kHz tone (above narrowband's 4 kHz) comes back in the echo of a G.722, L16/16000
//! or Opus call, a G.722 message is recorded as a 16 kHz WAV, and keys are detected at every
//! rate, in-band and as RFC 4733 events counted on 16 and 48 kHz clocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::events::Events;
use support::server::*;
use switchboard::media::codec::{AudioCodec, CodecKind, CodecParams};
use switchboard::media::dtmf::{EventSender, InbandSender};
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp, Ssrc, WireSeq};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A codec a phone offers alone, on `pt`, with telephone-events on `te` at `te_rate`.
#[derive(Debug, Clone, Copy)]
struct Phone {
    kind: CodecKind,
    pt: u8,
    rtpmap: &'static str,
    te: Option<(u8, u32)>,
}

const G722: Phone = Phone {
    kind: CodecKind::G722,
    pt: 9,
    rtpmap: "G722/8000",
    te: Some((101, 8000)),
};
const L16_WIDE: Phone = Phone {
    kind: CodecKind::L16Wide,
    pt: 97,
    rtpmap: "L16/16000",
    te: Some((102, 16000)),
};
#[cfg(feature = "opus")]
const OPUS: Phone = Phone {
    kind: CodecKind::Opus,
    pt: 111,
    rtpmap: "opus/48000/2",
    te: Some((110, 48000)),
};

/// Every codec the server may answer with.
fn wide_server(
    tweak: impl FnOnce(&mut switchboard::Config) + Send + 'static,
) -> impl FnOnce(&mut switchboard::Config) {
    move |c| {
        c.media.codecs = ["opus", "G722", "L16", "PCMU"].map(String::from).to_vec();
        tweak(c);
    }
}

fn offer(p: &Phone, port: u16) -> Vec<u8> {
    let (te_pt, te) = match p.te {
        Some((pt, rate)) => (
            format!(" {pt}"),
            format!("a=rtpmap:{pt} telephone-event/{rate}\r\na=fmtp:{pt} 0-16\r\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP {pt}{te_pt}\r\na=rtpmap:{pt} {map}\r\n{te}a=ptime:20\r\na=sendrecv\r\n",
        pt = p.pt,
        map = p.rtpmap,
    )
    .into_bytes()
}

/// The answer's payload types on its `m=audio` line.
fn answered_pts(uac: &support::uac::Uac) -> Vec<u8> {
    let sdp = String::from_utf8(uac.answer.clone().expect("an answer")).unwrap();
    let m = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace()
        .skip(3)
        .map(|t| t.parse().unwrap())
        .collect()
}

/// A sine of `hz` at `rate`, peak 8000 (−15.2 dBFS RMS), `ms` long.
fn sine(hz: f64, rate: u32, ms: u32) -> Vec<i16> {
    (0..rate * ms / 1000)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * hz * f64::from(i) / f64::from(rate)).sin())
                as i16
        })
        .collect()
}

/// What to send in one 20 ms tick.
enum Out {
    /// Audio at the codec's rate, one frame.
    Audio(Vec<i16>),
    /// An RFC 4733 packet instead of audio.
    Event(switchboard::media::dtmf::EventPacket),
}

/// One call's media from the phone's side: its socket, where the server's media is, and the
/// phone's encoder and RTP state.
struct Media {
    phone: Phone,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    enc: Box<dyn AudioCodec>,
    seq: u16,
    ts: u32,
    first: bool,
}

impl Media {
    fn frame(&self) -> usize {
        self.phone.kind.sample_rate().hz() as usize / 50
    }

    /// RTP ticks in one 20 ms frame of the codec.
    fn step(&self) -> u32 {
        self.phone.kind.rtp_ticks(self.frame() as u64) as u32
    }

    async fn send(&mut self, out: Out) {
        let (pt, ts, marker, payload) = match out {
            Out::Audio(pcm) => {
                let mut buf = [0u8; 1500];
                let n = self.enc.encode(&pcm, &mut buf).unwrap();
                (self.phone.pt, self.ts, self.first, buf[..n].to_vec())
            }
            Out::Event(e) => (
                e.payload_type.get(),
                e.timestamp.get(),
                e.marker,
                e.payload.to_vec(),
            ),
        };
        let header = RtpHeader {
            marker,
            payload_type: PayloadType::new(pt).unwrap(),
            seq: WireSeq::new(self.seq),
            timestamp: RtpTimestamp::new(ts),
            ssrc: Ssrc::new(0x5eed),
        };
        let mut wire = [0u8; 1600];
        let n = RtpPacket::new(header, &payload).write(&mut wire).unwrap();
        let _ = self.socket.send_to(&wire[..n], self.to).await;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.step());
        self.first = false;
    }

    /// Sends `pcm` in 20 ms packets on a 20 ms tick.
    async fn talk(&mut self, pcm: &[i16]) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for f in pcm.chunks_exact(self.frame()) {
            tick.tick().await;
            self.send(Out::Audio(f.to_vec())).await;
        }
    }

    /// Sends `digits` as RFC 4733 events (silence between them), then `tail_ms` of silence.
    async fn press(&mut self, digits: &str, tail_ms: u32) {
        let (pt, rate) = self.phone.te.unwrap();
        let mut tx = EventSender::new(PayloadType::new(pt).unwrap(), ClockRate::new(rate).unwrap());
        tx.queue(digits).unwrap();
        let silence = vec![0i16; self.frame()];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let ticks = digits.len() as u32 * 25 + tail_ms / 20;
        // The event clock is the codec's RTP clock here, so the audio timestamps serve.
        for _ in 0..ticks {
            tick.tick().await;
            match tx.poll(RtpTimestamp::new(self.ts)) {
                Some(e) => self.send(Out::Event(e)).await,
                None => self.send(Out::Audio(silence.clone())).await,
            }
        }
    }
}

/// `payloads` decoded in order by one `kind` decoder.
fn decoded(kind: CodecKind, payloads: &[Vec<u8>]) -> Vec<i16> {
    let mut dec = kind.new_codec_with(&CodecParams::default());
    let mut pcm = Vec::new();
    for p in payloads {
        let mut frame = [0i16; 2880];
        let n = dec.decode(p, &mut frame).unwrap();
        pcm.extend_from_slice(&frame[..n]);
    }
    pcm
}

/// The payloads from `rx` once `count` have come (5 s at most).
async fn received(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>, count: usize) -> Vec<Vec<u8>> {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(p)) => got.push(p),
            _ => break,
        }
    }
    got
}

/// Passes on every payload of payload type `pt` that `socket` receives.
async fn listen(socket: Arc<UdpSocket>, pt: u8, tx: mpsc::UnboundedSender<Vec<u8>>) {
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf).await {
        if let Ok(p) = RtpPacket::parse(&buf[..n]) {
            if p.header.payload_type.get() == pt && tx.send(p.payload.to_vec()).is_err() {
                return;
            }
        }
    }
}

/// Calls `user` offering `phone` alone; checks the answer took it.
async fn dial(server: &Server, user: &str, phone: Phone) -> (Wire, support::uac::Uac, Media) {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let port = socket.local_addr().unwrap().port();
    let (mut w, mut uac) = wire(false, server.sip).await;
    call_offering(&mut w, &mut uac, user, &offer(&phone, port)).await;
    let pts = answered_pts(&uac);
    assert_eq!(pts[0], phone.pt, "{:?}: answered {pts:?}", phone.kind);
    if let Some((te, _)) = phone.te {
        assert!(
            pts.contains(&te),
            "{:?}: telephone-event not answered: {pts:?}",
            phone.kind
        );
    }
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let media = Media {
        phone,
        socket,
        to,
        enc: phone.kind.new_codec_with(&CodecParams::default()),
        seq: fastrand::u16(..),
        ts: fastrand::u32(..),
        first: true,
    };
    (w, uac, media)
}

/// Calls the echo, says a `hz` tone for 1.5 s and returns the last half second of the echo,
/// decoded at the codec's rate.
async fn echo_of(phone: Phone, hz: f64) -> Vec<i16> {
    let server = start_with(common::rtp_ports(4), wide_server(|_| {})).await;
    let (mut w, mut uac, mut media) = dial(&server, "echo", phone).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::spawn(listen(media.socket.clone(), phone.pt, tx));
    let rate = phone.kind.sample_rate().hz();
    media.talk(&sine(hz, rate, 1500)).await;
    // The echo runs a jitter buffer's depth behind: five packets past the 75 sent hold the
    // end of the tone.
    let payloads = received(&mut rx, 80).await;
    listener.abort();
    hang_up(&mut w, &mut uac).await;
    server.stop().await;
    let pcm = decoded(phone.kind, &payloads);
    let half = rate as usize / 2;
    assert!(
        pcm.len() > 2 * half,
        "{:?}: {} samples of echo",
        phone.kind,
        pcm.len()
    );
    // Leave out the last 100 ms: the tone stopped there.
    let end = pcm.len() - rate as usize / 10;
    pcm[end - half..end].to_vec()
}

fn assert_tone(pcm: &[i16], hz: f64, rate: u32, what: &str) {
    let share = tone_share(pcm, hz, f64::from(rate));
    let level = rms_dbfs(pcm);
    eprintln!("{what}: {hz} Hz share {share:.3} at {level:.1} dBFS");
    assert!(share > 0.85, "{what}: {hz} Hz share {share:.3}");
    assert!(
        (level + 15.2).abs() < 3.0,
        "{what}: at {level:.1} dBFS, sent at -15.2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_caller_hears_a_6_khz_tone_in_its_echo() {
    let pcm = echo_of(G722, 6000.0).await;
    assert_tone(&pcm, 6000.0, 16000, "G.722 echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l16_wideband_caller_hears_a_6_khz_tone_in_its_echo() {
    let pcm = echo_of(L16_WIDE, 6000.0).await;
    assert_tone(&pcm, 6000.0, 16000, "L16/16000 echo");
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_caller_hears_a_6_khz_tone_in_its_echo() {
    let pcm = echo_of(OPUS, 6000.0).await;
    assert_tone(&pcm, 6000.0, 48000, "Opus echo");
}

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_message_is_recorded_as_16_khz_audio_with_its_6_khz_tone() {
    let dir = TempDir(std::env::temp_dir().join(format!("sb-wide-rec-{}", fastrand::u64(..))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let rec = dir.0.clone();
    let server = start_with(
        common::rtp_ports(4),
        wide_server(move |c| c.paths.recordings = rec),
    )
    .await;
    let (mut w, mut uac, mut media) = dial(&server, "message", G722).await;
    // Silence through the greeting, then the tone.
    media
        .talk(&vec![
            0;
            (support::greeting_secs() * 16000.0) as usize / 320
                * 320
                + 6400
        ])
        .await;
    media.talk(&sine(6000.0, 16000, 1500)).await;
    hang_up(&mut w, &mut uac).await;
    let sidecars = support::complete_sidecars(&dir.0, 1).await;
    server.stop().await;
    let sidecar = &sidecars[0];
    assert_eq!(sidecar["format"]["rate"], 16000, "{sidecar}");
    let mut wav = hound::WavReader::open(dir.0.join(sidecar["file"].as_str().unwrap())).unwrap();
    assert_eq!(wav.spec().sample_rate, 16000);
    let pcm: Vec<i16> = wav.samples::<i16>().map(|s| s.unwrap()).collect();
    // The loudest half second holds the tone.
    let loudest = pcm
        .chunks(8000)
        .max_by(|a, b| rms_dbfs(a).total_cmp(&rms_dbfs(b)))
        .unwrap();
    assert_tone(loudest, 6000.0, 16000, "the G.722 recording");
}

/// The `dtmf` events' keys and methods, read until `count` of them or 10 s.
async fn keys(events: &mut Events, count: usize) -> Vec<(String, String)> {
    let mut found = Vec::new();
    while found.len() < count {
        let seen = events
            .until(Duration::from_secs(10), |e| e.get("digit").is_some())
            .await;
        let key = seen.last().unwrap();
        found.push((
            key["digit"].as_str().unwrap_or_default().to_string(),
            key["method"].as_str().unwrap_or_default().to_string(),
        ));
    }
    found
}

/// Calls the echo as `phone`, presses `events` by RFC 4733 and then plays `inband` as
/// tones at the codec's rate; returns the keys the server reported. (`#` would end the
/// echo.)
async fn keys_of(phone: Phone, events: &str, inband: &str) -> Vec<(String, String)> {
    let server = start_with(common::rtp_ports(4), wide_server(|_| {})).await;
    let mut events_seen = Events::open(server.http, "dtmf").await;
    let (mut w, mut uac, mut media) = dial(&server, "echo", phone).await;
    let rate = phone.kind.sample_rate();
    media.talk(&vec![0; rate.hz() as usize / 5]).await;
    media.press(events, 200).await;
    let mut tones = InbandSender::new(rate).unwrap();
    tones.queue(inband).unwrap();
    let mut pcm = vec![0i16; rate.hz() as usize * (inband.len() + 1) / 5];
    tones.fill(&mut pcm);
    media.talk(&pcm).await;
    let heard = keys(&mut events_seen, events.len() + inband.len()).await;
    hang_up(&mut w, &mut uac).await;
    server.stop().await;
    heard
}

fn expected(events: &str, inband: &str) -> Vec<(String, String)> {
    events
        .chars()
        .map(|c| (c.to_string(), "rfc4733".to_string()))
        .chain(
            inband
                .chars()
                .map(|c| (c.to_string(), "inband".to_string())),
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_an_l16_wideband_call_as_16_khz_events_and_16_khz_tones() {
    assert_eq!(keys_of(L16_WIDE, "1*", "7").await, expected("1*", "7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_a_g722_call_as_events_and_16_khz_tones() {
    assert_eq!(keys_of(G722, "4", "*0").await, expected("4", "*0"));
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_an_opus_call_as_48_khz_events_and_48_khz_tones() {
    assert_eq!(keys_of(OPUS, "5*", "9D").await, expected("5*", "9D"));
}

/// What a caller on `phone` hears of a 16 kHz prompt holding a 1 kHz and a 6 kHz tone, played
/// by a script: the audio it received, decoded at its codec's rate.
async fn prompt_heard_by(phone: Phone) -> Vec<i16> {
    let dir = TempDir(std::env::temp_dir().join(format!("sb-wide-prompt-{}", fastrand::u64(..))));
    let (prompts, scripts) = (dir.0.join("prompts"), dir.0.join("scripts"));
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::create_dir_all(&scripts).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(prompts.join("wide.wav"), spec).unwrap();
    for (a, b) in sine(1000.0, 16000, 1500)
        .iter()
        .zip(sine(6000.0, 16000, 1500))
    {
        w.write_sample(a / 2 + b / 2).unwrap();
    }
    w.finalize().unwrap();
    std::fs::write(
        scripts.join("wide.rhai"),
        "answer();\nplay(\"wide\");\nhangup();\n",
    )
    .unwrap();
    let server = start_with(
        common::rtp_ports(4),
        wide_server(move |c| {
            c.paths.prompts = prompts;
            c.paths.scripts = scripts;
            c.dialplan = vec![switchboard::script::dialplan::RuleConfig {
                exact: Some("wide".into()),
                prefix: None,
                regex: None,
                script: "wide".into(),
                vars: Default::default(),
                auth: false,
            }];
        }),
    )
    .await;
    let (mut w, mut uac, mut media) = dial(&server, "wide", phone).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::spawn(listen(media.socket.clone(), phone.pt, tx));
    // Silence while the prompt plays; the script hangs up after it.
    let rate = phone.kind.sample_rate().hz();
    media.talk(&vec![0; rate as usize * 2]).await;
    listener.abort();
    let ended = w
        .drive(&mut uac, Duration::from_secs(5), |u| {
            u.state == support::uac::UacState::Terminated
        })
        .await;
    w.flush(&mut uac).await;
    assert!(
        ended && uac.requests_in.contains(&"BYE".to_string()),
        "the script hangs up after its prompt"
    );
    server.stop().await;
    let payloads: Vec<Vec<u8>> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    decoded(phone.kind, &payloads)
}

/// The loudest half second of `pcm` at `rate`.
fn loudest_half_second(pcm: &[i16], rate: u32) -> &[i16] {
    pcm.chunks(rate as usize / 2)
        .max_by(|a, b| rms_dbfs(a).total_cmp(&rms_dbfs(b)))
        .unwrap()
}

/// A prompt is decoded and resampled once per rate: a G.722 caller hears its 6 kHz tone, a
/// PCMU caller its 1 kHz tone alone (nothing above 4 kHz, nothing folded onto 2 kHz).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wideband_prompt_keeps_its_band_on_g722_and_is_cut_to_narrowband_on_pcmu() {
    let pcm = prompt_heard_by(G722).await;
    let part = loudest_half_second(&pcm, 16000);
    let (low, high) = (
        tone_share(part, 1000.0, 16000.0),
        tone_share(part, 6000.0, 16000.0),
    );
    eprintln!(
        "G.722: 1 kHz {low:.3}, 6 kHz {high:.3}, {:.1} dBFS",
        rms_dbfs(part)
    );
    assert!(
        low > 0.35 && high > 0.35,
        "G.722 hears both tones: {low:.3}, {high:.3}"
    );

    let pcmu = Phone {
        kind: CodecKind::Pcmu,
        pt: 0,
        rtpmap: "PCMU/8000",
        te: None,
    };
    let pcm = prompt_heard_by(pcmu).await;
    let part = loudest_half_second(&pcm, 8000);
    let (low, alias) = (
        tone_share(part, 1000.0, 8000.0),
        tone_share(part, 2000.0, 8000.0),
    );
    eprintln!("PCMU: 1 kHz {low:.3}, 2 kHz {alias:.3}");
    assert!(low > 0.9, "PCMU hears the 1 kHz tone alone: {low:.3}");
    assert!(alias < 0.01, "the 6 kHz tone folded onto 2 kHz: {alias:.3}");
}
