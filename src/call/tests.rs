//! The call core in virtual time: inputs with `now`, actions out, no task or socket.

use std::time::{Duration, Instant};

use super::core::*;
use super::note::{HangupCause, Note};
use crate::media::dtmf::{Digit, DtmfMethod};
use crate::script::{CallReply, CallRequest, PlayRequest};
use crate::sdp::LocalSession;
use crate::sip::endpoint::{CallHandle, EndReason, Event};

const OFFER: &str = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const ANSWER: &str = "v=0\r\no=a 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

fn core(offer: &str, max: Option<Duration>) -> CallCore {
    let session = LocalSession::new(7, "127.0.0.1:40010".parse().unwrap());
    CallCore::incoming(
        CoreConfig {
            max_duration: max,
            outbound: std::sync::Arc::new(super::OutboundPolicy::new(
                &["sip:*@127.0.0.1*".into()],
                4,
            )),
        },
        session,
        offer.as_bytes(),
    )
}

fn drain(c: &mut CallCore) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn sip(actions: &[Action]) -> Vec<&SipAction> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Sip(_, s) => Some(s),
            _ => None,
        })
        .collect()
}

fn replies(actions: &[Action]) -> Vec<&CallReply> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn play(name: &str) -> CallRequest {
    CallRequest::Play(PlayRequest {
        prompts: vec![name.into()],
        barge_in: false,
    })
}

fn event(ev: Event, c: &mut CallCore, now: Instant) {
    c.handle_sip(now, LegId::CALLER, ev);
}

#[test]
fn end_reasons_name_their_cause_and_code() {
    let cases = [
        (Outcome::Ended(EndReason::Cancelled), ("cancelled", None)),
        (
            Outcome::Ended(EndReason::SessionExpired),
            ("session_expired", None),
        ),
        (
            Outcome::Ended(EndReason::Rejected(486)),
            ("refused", Some(486)),
        ),
        (Outcome::Refused(480), ("refused", Some(480))),
        (Outcome::Ended(EndReason::RemoteBye), ("caller_bye", None)),
    ];
    for (outcome, want) in cases {
        assert_eq!(outcome.describe(), want, "{outcome:?}");
    }
}

#[test]
fn a_broken_offer_is_refused_before_any_script() {
    let mut c = core("v=0\r\nbroken", None);
    let a = drain(&mut c);
    assert!(matches!(sip(&a)[..], [SipAction::Reject { code: 400, .. }]));
    assert_eq!(c.outcome(), Some(&Outcome::Refused(400)));
    assert_eq!(c.final_status(), Some(400));
}

#[test]
fn a_play_answers_the_call_then_waits_for_the_leg() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    c.handle_request(t0, play("welcome"));
    let a = drain(&mut c);
    assert!(matches!(sip(&a)[..], [SipAction::Answer(_)]));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Media(_, MediaAction::Start(_)))));
    let id = a
        .iter()
        .find_map(|a| match a {
            Action::Media(_, MediaAction::Play { id, .. }) => Some(*id),
            _ => None,
        })
        .expect("a playback");
    assert!(replies(&a).is_empty(), "answered before the prompt ended");
    assert!(!c.is_ready());
    c.handle_play_done(t0 + Duration::from_secs(2), LegId::CALLER, id);
    assert_eq!(replies(&drain(&mut c)), [&CallReply::Done]);
    assert!(c.is_ready());
    assert_eq!(c.final_status(), Some(200));
}

#[test]
fn without_an_offer_media_verbs_wait_for_the_answer_in_the_ack() {
    let t0 = Instant::now();
    let mut c = core("", None);
    c.handle_request(t0, play("welcome"));
    let a = drain(&mut c);
    assert!(matches!(sip(&a)[..], [SipAction::Answer(_)]));
    assert!(
        !a.iter().any(|a| matches!(a, Action::Media(..))),
        "media before the answer: {a:?}"
    );
    event(
        Event::Confirmed {
            call: CallHandle(1),
            sdp: Some(ANSWER.as_bytes().to_vec()),
        },
        &mut c,
        t0,
    );
    let media: Vec<MediaAction> = drain(&mut c)
        .into_iter()
        .filter_map(|a| match a {
            Action::Media(_, m) => Some(m),
            _ => None,
        })
        .collect();
    assert!(
        matches!(media[..], [MediaAction::Start(_), MediaAction::Play { .. }]),
        "{media:?}"
    );
}

#[test]
fn an_ack_without_the_answer_we_asked_for_ends_the_call() {
    let t0 = Instant::now();
    let mut c = core("", None);
    c.handle_request(t0, CallRequest::Answer);
    drain(&mut c);
    event(
        Event::Confirmed {
            call: CallHandle(1),
            sdp: None,
        },
        &mut c,
        t0,
    );
    let a = drain(&mut c);
    assert!(matches!(sip(&a)[..], [SipAction::Hangup]));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Note(Note::HungUp(HangupCause::BadAnswer)))));
}

#[test]
fn the_maximum_duration_hangs_up_once_exactly_at_its_end() {
    let t0 = Instant::now();
    let max = Duration::from_secs(30);
    let mut c = core(OFFER, Some(max));
    c.handle_request(t0, CallRequest::Answer);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + max));
    c.handle_timeout(t0 + max - Duration::from_millis(1));
    assert!(sip(&drain(&mut c)).is_empty(), "hung up early");
    c.handle_timeout(t0 + max);
    assert!(matches!(sip(&drain(&mut c))[..], [SipAction::Hangup]));
    c.handle_timeout(t0 + max + Duration::from_secs(1));
    assert!(sip(&drain(&mut c)).is_empty(), "hung up twice");
}

#[test]
fn type_ahead_keeps_the_last_32_keys() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    let keys: Vec<Digit> = "0123456789*#"
        .chars()
        .filter_map(Digit::from_char)
        .collect();
    for i in 0..40 {
        c.handle_digit(t0, LegId::CALLER, keys[i % keys.len()], DtmfMethod::Rfc4733);
    }
    assert_eq!(c.type_ahead.len(), TYPE_AHEAD_MAX);
    assert_eq!(c.type_ahead.front(), Some(&keys[8 % keys.len()]));
    assert_eq!(c.digits().len(), 40);
}

#[test]
fn send_dtmf_waits_190_ms_a_key() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    c.handle_request(t0, CallRequest::SendDtmf("123".into()));
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(570)));
    c.handle_timeout(t0 + Duration::from_millis(569));
    assert!(replies(&drain(&mut c)).is_empty());
    c.handle_timeout(t0 + Duration::from_millis(570));
    assert_eq!(replies(&drain(&mut c)), [&CallReply::Done]);
}

#[test]
fn the_callers_bye_ends_the_call_and_no_request_is_answered_after() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    c.handle_request(t0, play("welcome"));
    drain(&mut c);
    event(
        Event::Ended {
            call: CallHandle(1),
            reason: EndReason::RemoteBye,
        },
        &mut c,
        t0,
    );
    assert_eq!(c.outcome(), Some(&Outcome::Ended(EndReason::RemoteBye)));
    c.handle_request(t0, play("again"));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_cancelled_invite_got_487() {
    let mut c = core(OFFER, None);
    event(
        Event::Ended {
            call: CallHandle(1),
            reason: EndReason::Cancelled,
        },
        &mut c,
        Instant::now(),
    );
    assert_eq!(c.final_status(), Some(487));
}

fn dial(targets: &[&str]) -> CallRequest {
    CallRequest::Dial(super::DialRequest {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    })
}

/// Asks `c` to dial with `request` and hands it the first placed leg's session: that leg.
fn dial_prepared(c: &mut CallCore, t0: Instant, request: CallRequest) -> LegId {
    c.handle_request(t0, request);
    drain(c);
    let leg = LegId(1);
    let session = LocalSession::new(9, "127.0.0.1:40020".parse().unwrap());
    c.handle_prepared(t0, leg, Ok(session));
    leg
}

/// The placed leg `leg` answers with SDP at `at`.
fn answer_leg(c: &mut CallCore, at: Instant, leg: LegId) {
    let sdp = Some(ANSWER.as_bytes().to_vec());
    c.handle_sip(
        at,
        leg,
        Event::Answered {
            call: CallHandle(2),
            sdp,
        },
    );
}

fn dialed(a: &[Action]) -> Option<&super::DialResult> {
    a.iter().find_map(|a| match a {
        Action::Reply(CallReply::Dialed(d)) => Some(d),
        _ => None,
    })
}

#[test]
fn a_target_outside_the_allow_patterns_is_never_called() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    c.handle_request(
        t0,
        dial(&["sip:bob@127.0.0.1", "sip:+1900555@carrier.example"]),
    );
    let a = drain(&mut c);
    let d = dialed(&a).expect("answered at once");
    assert_eq!(d.outcome, super::DialOutcome::Failed);
    assert!(d.reason.contains("not allowed"), "{}", d.reason);
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::Media(_, MediaAction::Prepare))),
        "no leg was prepared: {a:?}"
    );
}

#[test]
fn a_call_places_at_most_its_legs() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    let five = ["sip:a@127.0.0.1"; 5];
    c.handle_request(t0, dial(&five));
    let d = dialed(&drain(&mut c)).cloned().expect("refused at once");
    assert!(d.reason.contains("4 legs at most"), "{}", d.reason);
}

#[test]
fn a_dialled_leg_rings_the_caller_then_is_bridged_and_its_bye_ends_the_dial() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    c.handle_request(t0, dial(&["sip:bob@127.0.0.1"]));
    let a = drain(&mut c);
    let leg = a
        .iter()
        .find_map(|a| match a {
            Action::Media(l, MediaAction::Prepare) => Some(*l),
            _ => None,
        })
        .expect("a leg to prepare");
    assert_ne!(leg, LegId::CALLER);
    let session = LocalSession::new(9, "127.0.0.1:40020".parse().unwrap());
    c.handle_prepared(t0, leg, Ok(session));
    let a = drain(&mut c);
    assert!(
        matches!(a[..], [Action::Sip(l, SipAction::Dial(_))] if l == leg),
        "{a:?}"
    );
    let call = CallHandle(2);
    c.handle_sip(
        t0,
        leg,
        Event::Progress {
            call,
            code: 180,
            reason: "Ringing".into(),
            to_tag: None,
            sdp: None,
        },
    );
    let a = drain(&mut c);
    assert!(
        matches!(
            a[..],
            [Action::Sip(LegId::CALLER, SipAction::Ring(None)), ..]
        ),
        "{a:?}"
    );
    answer_leg(&mut c, t0 + Duration::from_secs(2), leg);
    let a = drain(&mut c);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Media(l, MediaAction::Start(_)) if *l == leg)),
        "{a:?}"
    );
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Sip(LegId::CALLER, SipAction::Answer(_)))));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Media(LegId::CALLER, MediaAction::Bridge(l)) if *l == leg)));
    assert!(dialed(&a).is_none(), "the dial goes on while bridged");
    c.handle_sip(
        t0 + Duration::from_secs(12),
        leg,
        Event::Ended {
            call,
            reason: EndReason::RemoteBye,
        },
    );
    let a = drain(&mut c);
    let d = dialed(&a).expect("the dial ended");
    assert_eq!(d.outcome, super::DialOutcome::Answered);
    assert_eq!(d.duration, Duration::from_secs(10));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Media(LegId::CALLER, MediaAction::Unbridge))));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Media(l, MediaAction::Close) if *l == leg)));
}

#[test]
fn the_callers_hangup_cancels_a_ringing_leg() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    let leg = dial_prepared(&mut c, t0, dial(&["sip:bob@127.0.0.1"]));
    drain(&mut c);
    event(
        Event::Ended {
            call: CallHandle(1),
            reason: EndReason::Cancelled,
        },
        &mut c,
        t0,
    );
    let a = drain(&mut c);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Sip(l, SipAction::Cancel) if *l == leg)),
        "{a:?}"
    );
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Media(l, MediaAction::Close) if *l == leg)));
}

#[test]
fn early_media_of_a_dialled_leg_is_bridged_once_before_the_answer() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    let early = CallRequest::Dial(super::DialRequest {
        targets: vec!["sip:bob@127.0.0.1".into()],
        ringback: super::Ringback::EarlyMedia,
        ..Default::default()
    });
    let leg = dial_prepared(&mut c, t0, early);
    drain(&mut c);
    let call = CallHandle(2);
    c.handle_sip(
        t0,
        leg,
        Event::Progress {
            call,
            code: 183,
            reason: "Session Progress".into(),
            to_tag: Some("b".into()),
            sdp: Some(ANSWER.as_bytes().to_vec()),
        },
    );
    let a = drain(&mut c);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Sip(LegId::CALLER, SipAction::Ring(Some(_))))),
        "{a:?}"
    );
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Media(l, MediaAction::Start(_)) if *l == leg)));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Media(LegId::CALLER, MediaAction::Start(_)))));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Media(LegId::CALLER, MediaAction::Bridge(l)) if *l == leg)));
    answer_leg(&mut c, t0 + Duration::from_secs(3), leg);
    let a = drain(&mut c);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Sip(LegId::CALLER, SipAction::Answer(_)))),
        "{a:?}"
    );
    assert!(
        !a.iter().any(|x| matches!(
            x,
            Action::Media(_, MediaAction::Bridge(_) | MediaAction::Start(_))
        )),
        "bridged or started twice: {a:?}"
    );
}

#[test]
fn keys_cross_a_bridge_as_rfc4733_events_both_ways() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    let leg = dial_prepared(&mut c, t0, dial(&["sip:bob@127.0.0.1"]));
    drain(&mut c);
    answer_leg(&mut c, t0, leg);
    drain(&mut c);
    let five = Digit::from_char('5').unwrap();
    c.handle_digit(t0, LegId::CALLER, five, DtmfMethod::Inband);
    let a = drain(&mut c);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Media(l, MediaAction::SendDtmf(k)) if *l == leg && k == "5")
        ),
        "the caller's key goes to the callee: {a:?}"
    );
    let hash = Digit::from_char('#').unwrap();
    c.handle_digit(t0, leg, hash, DtmfMethod::Rfc4733);
    let a = drain(&mut c);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Media(LegId::CALLER, MediaAction::SendDtmf(k)) if k == "#")
        ),
        "the callee's key goes to the caller: {a:?}"
    );
    // The caller's keys count in its record; the callee's do not.
    assert_eq!(c.digits(), "5");
}

#[test]
fn a_ringback_prompt_plays_again_until_the_answer() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    c.handle_request(t0, CallRequest::Answer);
    drain(&mut c);
    let request = CallRequest::Dial(super::DialRequest {
        targets: vec!["sip:bob@127.0.0.1".into()],
        ringback: super::Ringback::Prompt("hold-music".into()),
        ..Default::default()
    });
    let leg = dial_prepared(&mut c, t0, request);
    drain(&mut c);
    let ringing = |c: &mut CallCore| {
        c.handle_sip(
            t0,
            leg,
            Event::Progress {
                call: CallHandle(2),
                code: 180,
                reason: "Ringing".into(),
                to_tag: None,
                sdp: None,
            },
        );
    };
    ringing(&mut c);
    let plays = |a: &[Action]| -> Vec<u64> {
        a.iter()
            .filter_map(|x| match x {
                Action::Media(
                    LegId::CALLER,
                    MediaAction::Play {
                        id,
                        what: PlaySpec::Prompts(p),
                        ..
                    },
                ) if p == &["hold-music".to_string()] => Some(*id),
                _ => None,
            })
            .collect()
    };
    let first = plays(&drain(&mut c));
    assert_eq!(first.len(), 1, "the prompt starts with the ringing");
    c.handle_play_done(t0 + Duration::from_secs(5), LegId::CALLER, first[0]);
    let again = plays(&drain(&mut c));
    assert_eq!(again.len(), 1, "and plays again while it rings");
    answer_leg(&mut c, t0 + Duration::from_secs(7), leg);
    let a = drain(&mut c);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Media(LegId::CALLER, MediaAction::StopPlay))),
        "{a:?}"
    );
    c.handle_play_done(t0 + Duration::from_secs(7), LegId::CALLER, again[0]);
    assert!(plays(&drain(&mut c)).is_empty(), "not after the answer");
}

#[test]
fn a_reinvite_from_the_dialled_party_is_answered_and_moves_its_media() {
    let t0 = Instant::now();
    let mut c = core(OFFER, None);
    let leg = dial_prepared(&mut c, t0, dial(&["sip:bob@127.0.0.1"]));
    drain(&mut c);
    answer_leg(&mut c, t0, leg);
    drain(&mut c);
    let hold = OFFER.replace("m=audio 40000", "m=audio 40030") + "a=sendonly\r\n";
    c.handle_sip(
        t0,
        leg,
        Event::ReInvite {
            call: CallHandle(2),
            sdp: Some(hold.into_bytes()),
        },
    );
    let a = drain(&mut c);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Sip(l, SipAction::AnswerReinvite(_)) if *l == leg)),
        "{a:?}"
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Media(l, MediaAction::Update(m))
            if *l == leg && m.remote_rtp.map(|r| r.port()) == Some(40030))),
        "{a:?}"
    );
    c.handle_sip(
        t0,
        leg,
        Event::Update {
            call: CallHandle(2),
            sdp: b"v=0\r\nbroken".to_vec(),
        },
    );
    let a = drain(&mut c);
    assert!(
        a.iter().any(|x| matches!(x, Action::Sip(l, SipAction::RejectReinvite { code: 488, .. }) if *l == leg)),
        "{a:?}"
    );
}
