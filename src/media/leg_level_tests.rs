//! A leg's receive half with RFC 6464 levels: which packets a room lets it skip, what is
//! heard of them, and how decoders take up again after skipping.

use super::*;
use crate::media::codec::test_util::sine;
use crate::media::level::rms_dbfs;
use crate::rtp::hdrext::ONE_BYTE_PROFILE;
use crate::rtp::packet::{HeaderExtension, RtpHeader};

const PEER: &str = "127.0.0.1:40000";
const LEVEL_ID: u8 = 3;

fn level(l: u8) -> AudioLevel {
    AudioLevel::new(l).unwrap()
}

fn leg_with(codec: CodecKind, pt: u8, level_id: Option<u8>, now: Instant) -> Leg {
    let cfg = LegConfig {
        codec,
        payload_type: PayloadType::new(pt).unwrap(),
        params: CodecParams {
            audio_level_id: level_id,
            ..CodecParams::default()
        },
        ..LegConfig::pcmu(PEER.parse().unwrap(), Ssrc::new(7))
    };
    Leg::new(cfg, now).unwrap()
}

/// What a packet's header extension block holds.
#[derive(Debug, Clone, Copy)]
enum Ext {
    None,
    /// The one-byte form with the level on `id`.
    Level(u8, u8),
    /// The two-byte form with the level on `id`.
    TwoByte(u8, u8),
    /// A one-byte block whose only element runs past its end.
    Malformed,
}

impl Ext {
    fn block(self) -> Option<(u16, [u8; 4])> {
        match self {
            Ext::None => None,
            Ext::Level(id, l) => Some((ONE_BYTE_PROFILE, [id << 4, l, 0, 0])),
            Ext::TwoByte(id, l) => Some((0x1000, [id, 1, l, 0])),
            Ext::Malformed => Some((ONE_BYTE_PROFILE, [(LEVEL_ID << 4) | 0x0F, 5, 0, 0])),
        }
    }
}

/// One tick of what a leg heard.
#[derive(Debug, Clone)]
struct Heard {
    pcm: Vec<i16>,
    level: Option<AudioLevel>,
    hearing: bool,
}

/// Sends `payloads[k]` with `exts[k]` in tick k (none for those in `lost`), then a few ticks
/// more; returns each tick's input from the first tick that heard anything.
fn hear(
    l: &mut Leg,
    payloads: &[Vec<u8>],
    exts: &[Ext],
    lost: &[usize],
    step: u32,
    t0: Instant,
) -> Vec<Heard> {
    hear_with(l, payloads, exts, lost, step, t0, |_, _, _| {})
}

/// [`hear`], calling `before(k, now, leg)` at the start of each tick k.
fn hear_with(
    l: &mut Leg,
    payloads: &[Vec<u8>],
    exts: &[Ext],
    lost: &[usize],
    step: u32,
    t0: Instant,
    mut before: impl FnMut(usize, Instant, &mut Leg),
) -> Vec<Heard> {
    let pt = l.cfg.payload_type;
    let mut wire = [0u8; 1500];
    let mut out = Vec::new();
    for k in 0..payloads.len() + 4 {
        let now = t0 + FRAME * k as u32;
        before(k, now, l);
        if let Some(p) = payloads.get(k).filter(|_| !lost.contains(&k)) {
            let block = exts.get(k).copied().unwrap_or(Ext::None).block();
            let mut pkt = RtpPacket::new(
                RtpHeader {
                    marker: k == 0,
                    payload_type: pt,
                    seq: WireSeq::new(500 + k as u16),
                    timestamp: RtpTimestamp::new(9000 + step * k as u32),
                    ssrc: Ssrc::new(99),
                },
                p,
            );
            if let Some((profile, data)) = &block {
                pkt.extension = Some(HeaderExtension {
                    profile: *profile,
                    data,
                });
            }
            let n = pkt.write(&mut wire).unwrap();
            l.handle_packet(
                now,
                SystemTime::UNIX_EPOCH,
                PEER.parse().unwrap(),
                &wire[..n],
            );
        }
        l.receive(now);
        if l.hearing() || !out.is_empty() {
            out.push(Heard {
                pcm: l.input().to_vec(),
                level: l.input_level(),
                hearing: l.hearing(),
            });
        }
    }
    out
}

/// 20 ms payloads of a 1 kHz tone at about −20 dBov, one per packet.
fn pcmu_tone(packets: usize) -> Vec<Vec<u8>> {
    let pcm = sine(1000.0, 4000.0, 8000, 0.02 * packets as f64);
    let mut enc = CodecKind::Pcmu.new_codec();
    let mut buf = [0u8; 160];
    pcm.chunks_exact(160)
        .map(|f| {
            let n = enc.encode(f, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

#[test]
fn quiet_packets_are_skipped_and_the_rest_decoded_around_the_floor() {
    // Every packet carries the same tone: a decoded one is heard, a skipped one is not.
    let levels = [0u8, 39, 40, 41, 60, 127, 40, 41];
    let runs = 5;
    let payloads = pcmu_tone(levels.len() * runs);
    let exts: Vec<Ext> = (0..payloads.len())
        .map(|k| Ext::Level(LEVEL_ID, levels[k / runs]))
        .collect();
    let t0 = Instant::now();
    let mut l = leg_with(CodecKind::Pcmu, 0, Some(LEVEL_ID), t0);
    l.set_quiet_floor(Some(level(40)));
    let heard = hear(&mut l, &payloads, &exts, &[], 160, t0);
    let mut seen = Vec::new();
    for h in heard.iter().filter(|h| h.level.is_some()) {
        let lvl = h.level.unwrap().get();
        let rms = rms_dbfs(&h.pcm);
        // The floor is −40 dBov: 40 is at it and decoded, 41 is below it.
        if lvl <= 40 {
            assert!(rms > -25.0, "level {lvl} not decoded: {rms:.1} dB");
        } else {
            // Appendix I plays decoded audio 3.75 ms late: a decoded frame's end may open
            // the skipped one after it.
            let rest = rms_dbfs(&h.pcm[40..]);
            assert!(rest < -90.0, "level {lvl} decoded: {rest:.1} dB");
        }
        assert!(h.hearing, "a skipped frame is still heard (as quiet)");
        seen.push(lvl);
    }
    assert_eq!(seen.len(), payloads.len());
    let st = l.stats();
    let quiet = exts
        .iter()
        .filter(|e| matches!(e, Ext::Level(_, l) if *l > 40))
        .count() as u64;
    assert_eq!(st.decodes_skipped, quiet);
    assert_eq!(st.frames_decoded, payloads.len() as u64 - quiet);

    // The same stream with no floor (not in a room, or talking) is all decoded, and its
    // levels are still reported.
    let mut l = leg_with(CodecKind::Pcmu, 0, Some(LEVEL_ID), t0);
    let heard = hear(&mut l, &payloads, &exts, &[], 160, t0);
    assert!(heard
        .iter()
        .filter(|h| h.level.is_some())
        .all(|h| rms_dbfs(&h.pcm) > -25.0));
    assert_eq!(
        heard.iter().filter(|h| h.level.is_some()).count(),
        payloads.len()
    );
    assert_eq!(l.stats().decodes_skipped, 0);
}

#[test]
fn a_level_not_agreed_is_ignored() {
    let payloads = pcmu_tone(20);
    let exts = vec![Ext::Level(LEVEL_ID, 127); 20];
    let t0 = Instant::now();
    let mut l = leg_with(CodecKind::Pcmu, 0, None, t0);
    l.set_quiet_floor(Some(level(40)));
    let heard = hear(&mut l, &payloads, &exts, &[], 160, t0);
    assert!(heard.iter().all(|h| h.level.is_none()));
    assert!(heard[..20].iter().all(|h| rms_dbfs(&h.pcm) > -25.0));
    let st = l.stats();
    assert_eq!((st.decodes_skipped, st.frames_decoded), (0, 20));
}

#[test]
fn packets_without_a_readable_level_are_decoded_and_the_two_byte_form_is_read() {
    let kinds = [
        Ext::None,
        Ext::Level(LEVEL_ID + 1, 127),
        Ext::Malformed,
        Ext::TwoByte(LEVEL_ID, 90),
        Ext::Level(LEVEL_ID, 90),
    ];
    let payloads = pcmu_tone(kinds.len() * 4);
    let exts: Vec<Ext> = (0..payloads.len()).map(|k| kinds[k / 4]).collect();
    let t0 = Instant::now();
    let mut l = leg_with(CodecKind::Pcmu, 0, Some(LEVEL_ID), t0);
    l.set_quiet_floor(Some(level(40)));
    let heard = hear(&mut l, &payloads, &exts, &[], 160, t0);
    let loud = heard.iter().filter(|h| rms_dbfs(&h.pcm) > -25.0).count();
    // The first three kinds carry no level the leg can read: decoded, level unknown.
    assert_eq!(loud, 12);
    assert!(heard
        .iter()
        .filter(|h| rms_dbfs(&h.pcm) > -25.0)
        .all(|h| h.level.is_none()));
    let st = l.stats();
    assert_eq!(
        (st.decodes_skipped, st.frames_decoded, st.dropped),
        (8, 12, 0)
    );
    assert_eq!(
        heard.iter().filter(|h| h.level == Some(level(90))).count(),
        8
    );
}

/// Packets of `codec` (20 ms each): `loud` of a 1 kHz tone at −6 dBov marked level 6, then
/// `quiet` of noise at −60 dBov marked 60, then `after` of a 440 Hz tone at −35 dBov marked
/// 35: a talker's last loud moment, a pause its leg skips, and quieter speech after.
fn loud_quiet_then_speech(
    codec: CodecKind,
    loud: usize,
    quiet: usize,
    after: usize,
) -> (Vec<Vec<u8>>, Vec<Ext>) {
    let rate = codec.sample_rate().hz();
    let n = samples_at(codec.sample_rate());
    let amp = |dbov: f64| 32768.0 * 2f64.sqrt() * 10f64.powf(dbov / 20.0);
    let mut pcm = sine(1000.0, amp(-6.0), rate, 0.02 * loud as f64);
    let mut rng = fastrand::Rng::with_seed(5);
    let noise = amp(-60.0) / 2f64.sqrt() * 3f64.sqrt();
    pcm.extend((0..quiet * n).map(|_| ((rng.f64() * 2.0 - 1.0) * noise) as i16));
    pcm.extend(sine(440.0, amp(-35.0), rate, 0.02 * after as f64));
    let mut enc = codec.new_codec();
    let mut buf = [0u8; 1500];
    let payloads: Vec<Vec<u8>> = pcm
        .chunks_exact(n)
        .map(|f| {
            let len = enc.encode(f, &mut buf).unwrap();
            buf[..len].to_vec()
        })
        .collect();
    let exts = (0..payloads.len())
        .map(|k| {
            let l = if k < loud {
                6
            } else if k < loud + quiet {
                60
            } else {
                35
            };
            Ext::Level(LEVEL_ID, l)
        })
        .collect();
    (payloads, exts)
}

/// Checks that a decoder taking up again after skipping `QUIET` packets (the first of them
/// lost, another lost right after they end) plays neither the loud sound from before the
/// pause nor a concealment of it: every frame after the loud part is at most the level of
/// the speech that follows.
fn resumes_cleanly(codec: CodecKind, pt: u8) {
    const LOUD: usize = 10;
    const QUIET: usize = 25;
    const AFTER: usize = 15;
    let (payloads, exts) = loud_quiet_then_speech(codec, LOUD, QUIET, AFTER);
    let step = codec.rtp_ticks(samples_at(codec.sample_rate()) as u64) as u32;
    let lost = [LOUD + 3, LOUD + QUIET + 1];
    let t0 = Instant::now();
    let mut l = leg_with(codec, pt, Some(LEVEL_ID), t0);
    l.set_quiet_floor(Some(level(40)));
    let heard = hear(&mut l, &payloads, &exts, &lost, step, t0);
    let st = l.stats();
    assert_eq!(st.decodes_skipped, QUIET as u64 - 1);
    assert!(st.frames_concealed >= 2, "{st:?}");
    // The loud part is heard loud, the pause as silence.
    let first_quiet = heard
        .iter()
        .position(|h| h.level == Some(level(60)))
        .unwrap();
    assert!(first_quiet >= LOUD - 1);
    assert!(rms_dbfs(&heard[first_quiet - 2].pcm) > -10.0);
    let speech = heard
        .iter()
        .position(|h| h.level == Some(level(35)))
        .unwrap();
    assert!(speech > first_quiet + QUIET / 2);
    for (k, h) in heard.iter().enumerate().skip(first_quiet + 1) {
        let rms = rms_dbfs(&h.pcm);
        if k < speech {
            assert!(
                rms < -80.0,
                "{codec:?}: frame {k} of the pause at {rms:.1} dB"
            );
        } else {
            assert!(
                rms < -31.0,
                "{codec:?}: frame {k} after the pause at {rms:.1} dB"
            );
        }
    }
    // And the speech is heard, at its level.
    let tail: Vec<i16> = heard[speech + 4..speech + 10]
        .iter()
        .flat_map(|h| h.pcm.iter().copied())
        .collect();
    let rms = rms_dbfs(&tail);
    assert!(
        (-39.0..-31.0).contains(&rms),
        "{codec:?}: speech at {rms:.1} dB"
    );
}

#[test]
fn g711_resumes_cleanly_after_skipping() {
    resumes_cleanly(CodecKind::Pcmu, 0);
}

#[test]
fn g722_resumes_cleanly_after_skipping() {
    resumes_cleanly(CodecKind::G722, 9);
}

#[cfg(feature = "opus")]
#[test]
fn opus_resumes_cleanly_after_skipping() {
    resumes_cleanly(CodecKind::Opus, 111);
}

#[test]
fn a_leg_recording_its_call_decodes_quiet_packets_all_the_same() {
    use crate::media::record::{RecordMode, RecordPolicy, RecordingMeta, RecordingWriter};
    let payloads = pcmu_tone(20);
    let exts = vec![Ext::Level(LEVEL_ID, 90); 20];
    let t0 = Instant::now();
    let mut l = leg_with(CodecKind::Pcmu, 0, Some(LEVEL_ID), t0);
    l.set_quiet_floor(Some(level(40)));
    let tmp = crate::media::record::tests::TempDir::new("level-leg");
    let (factory, _writer) = RecordingWriter::spawn(&tmp.0).unwrap();
    let handle = factory
        .start(RecordingMeta {
            call_id: "levels".into(),
            from: "a".into(),
            to: "b".into(),
            room: None,
            mode: RecordMode::Inbound,
            rate: NARROW_RATE,
        })
        .unwrap();
    l.apply(
        t0,
        LegCommand::Record {
            session: Box::new(RecordSession::new(RecordPolicy::default())),
            handle,
        },
    );
    let heard = hear(&mut l, &payloads, &exts, &[], 160, t0);
    assert!(heard[..20].iter().all(|h| rms_dbfs(&h.pcm) > -25.0));
    assert!(heard[..20].iter().all(|h| h.level == Some(level(90))));
    let st = l.stats();
    assert_eq!((st.decodes_skipped, st.frames_decoded), (0, 20));
}

#[test]
fn a_reinvite_adds_and_removes_the_level() {
    // Quiet packets throughout; the level is agreed from packet 20 to packet 40.
    let payloads = pcmu_tone(60);
    let exts = vec![Ext::Level(LEVEL_ID, 90); 60];
    let t0 = Instant::now();
    let mut l = leg_with(CodecKind::Pcmu, 0, None, t0);
    l.set_quiet_floor(Some(level(40)));
    let update = |l: &Leg, id: Option<u8>| {
        let mut cmd = update_keeping_codec(l, l.cfg.remote, None, Direction::SendRecv, FRAME);
        if let LegCommand::Update { params, .. } = &mut cmd {
            params.audio_level_id = id;
        }
        cmd
    };
    let heard = hear_with(&mut l, &payloads, &exts, &[], 160, t0, |k, now, l| {
        if k == 20 {
            l.apply(now, update(l, Some(LEVEL_ID)));
        } else if k == 40 {
            l.apply(now, update(l, None));
        }
    });
    let skipped = heard.iter().filter(|h| h.level.is_some()).count();
    let st = l.stats();
    // The packets that arrived while it was agreed, and only they.
    assert_eq!(st.decodes_skipped, 20);
    assert_eq!(skipped, 20);
    assert_eq!(st.frames_decoded, 40);
}
