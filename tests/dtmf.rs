//! DTMF end to end: what our senders produce, our receivers read back.

use std::time::{Duration, Instant};

use switchboard::media::dtmf::{
    DigitEvent, DigitPhase, DtmfEvent, DtmfMerger, EventReceiver, EventSender, InbandDetector,
    InbandSender, SampleClock,
};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp};

fn began(events: &[DtmfEvent]) -> String {
    events
        .iter()
        .filter(|e| e.phase == DigitPhase::Began)
        .map(|e| e.digit.as_char())
        .collect()
}

/// Runs a sender into a receiver on a 20 ms tick; `drop(i)` loses the i-th packet.
fn round_trip(digits: &str, drop: impl Fn(usize) -> bool) -> Vec<DtmfEvent> {
    let pt = PayloadType::new(101).unwrap();
    let mut tx = EventSender::new(pt, ClockRate::HZ_8000);
    let mut rx = EventReceiver::new(pt, ClockRate::HZ_8000);
    tx.queue(digits).unwrap();
    let t0 = Instant::now();
    let mut ts = RtpTimestamp::new(0x8000_0000);
    let mut events = Vec::new();
    let mut sent = 0;
    for tick in 0..500u64 {
        let now = t0 + Duration::from_millis(20 * tick);
        events.extend(rx.handle_timeout(now));
        if let Some(p) = tx.poll(ts) {
            assert_eq!(p.payload_type, rx.payload_type());
            if !drop(sent) {
                events.extend(rx.push(now, p.timestamp, p.marker, &p.payload));
                events.extend(std::iter::from_fn(|| rx.poll_event()));
            }
            sent += 1;
        }
        ts = ts.wrapping_add(160);
    }
    events
}

#[test]
fn rfc4733_sender_to_receiver() {
    let ev = round_trip("123#", |_| false);
    assert_eq!(began(&ev), "123#");
    let ends: Vec<_> = ev
        .iter()
        .filter(|e| e.phase == DigitPhase::Ended)
        .map(|e| e.duration)
        .collect();
    assert_eq!(ends, vec![Some(Duration::from_millis(100)); 4]);
}

#[test]
fn rfc4733_round_trip_survives_losing_non_essential_packets() {
    // Eight packets per digit: start, four continuations, three ends.
    for lose in [
        &[0usize][..],     // start of the first digit
        &[0, 1, 2],        // first packets
        &[5, 6, 7],        // every end report of the first digit
        &[1, 3, 6, 9, 14], // scattered
        &[8, 16, 24],      // each later digit's marker packet
        &[13, 14, 15, 16], // second digit's ends and the third's start
    ] {
        let ev = round_trip("123#", |i| lose.contains(&i));
        assert_eq!(began(&ev), "123#", "losing {lose:?}");
    }
    // Same digit twice in a row, with its ends lost.
    let ev = round_trip("55", |i| (5..8).contains(&i));
    assert_eq!(began(&ev), "55");
}

#[test]
fn inband_sender_to_detector() {
    let mut tx = InbandSender::new(8000).unwrap();
    let all = "0123456789*#ABCD";
    tx.queue(all).unwrap();
    tx.queue("1199").unwrap();
    let mut det = InbandDetector::new(8000).unwrap();
    let mut found: Vec<DigitEvent> = Vec::new();
    let mut frame = [0i16; 160];
    while !tx.is_idle() {
        let n = tx.fill(&mut frame);
        frame[n..].fill(0);
        det.push(&frame, |e| found.push(e));
    }
    det.push(&[0; 800], |e| found.push(e));
    let digits: String = found
        .iter()
        .filter(|e| e.phase == DigitPhase::Began)
        .map(|e| e.digit.as_char())
        .collect();
    assert_eq!(digits, format!("{all}1199"));
    // The merged stream of both directions' digits, in-band only, is unchanged.
    let clock = SampleClock::new(Instant::now(), 8000).unwrap();
    let mut merger = DtmfMerger::default();
    let merged: String = found
        .iter()
        .filter_map(|e| merger.push(DtmfEvent::from_inband(e, &clock)))
        .map(|k| k.digit.as_char())
        .collect();
    assert_eq!(merged, digits);
}

#[test]
fn rfc4733_and_inband_of_the_same_presses_merge() {
    let pt = PayloadType::new(101).unwrap();
    let mut tx = EventSender::new(pt, ClockRate::HZ_8000);
    let mut rx = EventReceiver::new(pt, ClockRate::HZ_8000);
    let mut tones = InbandSender::new(8000).unwrap();
    let mut det = InbandDetector::new(8000).unwrap();
    // Same presses both ways, including a quick repeat.
    tx.queue("4477").unwrap();
    tones.queue("4477").unwrap();
    let t0 = Instant::now();
    // In-band audio comes out of a 60 ms jitter buffer and the clock does not correct for
    // it: the overlap window absorbs the lag.
    let clock = SampleClock::new(t0, 8000).unwrap();
    let mut merger = DtmfMerger::default();
    let mut presses = String::new();
    let mut ts = RtpTimestamp::new(0);
    let mut frame = [0i16; 160];
    let mut delayed: Vec<[i16; 160]> = vec![[0; 160]; 3];
    for tick in 0..100u64 {
        let now = t0 + Duration::from_millis(20 * tick);
        let mut events = Vec::new();
        events.extend(rx.handle_timeout(now));
        if let Some(p) = tx.poll(ts) {
            events.extend(rx.push(now, p.timestamp, p.marker, &p.payload));
            events.extend(std::iter::from_fn(|| rx.poll_event()));
        }
        let n = tones.fill(&mut frame);
        frame[n..].fill(0);
        delayed.push(frame);
        let out = delayed.remove(0);
        det.push(&out, |e| events.push(DtmfEvent::from_inband(&e, &clock)));
        for e in events {
            presses.extend(merger.push(e).map(|k| k.digit.as_char()));
        }
        ts = ts.wrapping_add(160);
    }
    assert_eq!(presses, "4477");
    assert_eq!(merger.suppressed(), 4);
}
