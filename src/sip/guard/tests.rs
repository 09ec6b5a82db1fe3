//! The guard's decisions in virtual time, at the edges of every limit.

use super::*;
use crate::sip::dialog::Transport;

const MS: Duration = Duration::from_millis(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn req(kind: Kind) -> Peek<'static> {
    Peek::Request {
        kind,
        user_agent: Some(b"Linphone/5.2"),
        in_dialog: false,
    }
}

fn msg(source: &str, peek: Peek<'static>) -> Inbound<'static> {
    Inbound {
        source: ip(source),
        transport: Transport::Udp,
        peek,
    }
}

fn idle() -> Load {
    Load::default()
}

fn refused(v: Verdict) -> Option<(u16, Option<u32>, RefuseReason)> {
    match v {
        Verdict::Refuse {
            code,
            retry_after,
            reason,
        } => Some((code, retry_after, reason)),
        _ => None,
    }
}

fn limited(invite: Rate) -> GuardConfig {
    GuardConfig {
        invite,
        ..GuardConfig::default()
    }
}

#[test]
fn bucket_passes_exactly_its_burst_then_refills_after_one_interval() {
    let t0 = Instant::now();
    let rate = Rate {
        per_sec: 2.0,
        burst: 3,
    };
    let mut g = Guard::new(limited(rate), t0);
    let m = msg("192.0.2.1", req(Kind::Invite));
    for i in 0..3 {
        assert_eq!(
            g.check(t0, &m, idle),
            Verdict::Pass,
            "request {i} of the burst"
        );
    }
    assert_eq!(
        refused(g.check(t0, &m, idle)),
        Some((503, Some(1), RefuseReason::InviteRate)),
        "one more than the burst"
    );
    // One token comes back every 1/rate = 500 ms, not a nanosecond sooner.
    let just_before = t0 + 500 * MS - Duration::from_nanos(1);
    assert!(refused(g.check(just_before, &m, idle)).is_some());
    assert_eq!(g.check(t0 + 500 * MS, &m, idle), Verdict::Pass);
    assert!(refused(g.check(t0 + 500 * MS, &m, idle)).is_some());
    // A long quiet spell refills to the burst, never beyond it.
    let later = t0 + Duration::from_secs(60);
    for _ in 0..3 {
        assert_eq!(g.check(later, &m, idle), Verdict::Pass);
    }
    assert!(refused(g.check(later, &m, idle)).is_some());
    assert_eq!(g.stats().refused[RefuseReason::InviteRate as usize], 4);
}

#[test]
fn retry_after_rounds_the_wait_up_to_whole_seconds() {
    let t0 = Instant::now();
    let slow = Rate {
        per_sec: 0.25,
        burst: 1,
    };
    let mut g = Guard::new(limited(slow), t0);
    let m = msg("192.0.2.1", req(Kind::Invite));
    assert_eq!(g.check(t0, &m, idle), Verdict::Pass);
    assert_eq!(refused(g.check(t0, &m, idle)).unwrap().1, Some(4));
    assert_eq!(
        refused(g.check(t0 + 2001 * MS, &m, idle)).unwrap().1,
        Some(2)
    );
    assert_eq!(
        refused(g.check(t0 + 3999 * MS, &m, idle)).unwrap().1,
        Some(1)
    );
    assert_eq!(g.check(t0 + 4000 * MS, &m, idle), Verdict::Pass);
}

#[test]
fn methods_and_sources_have_buckets_of_their_own() {
    let t0 = Instant::now();
    let one = Rate {
        per_sec: 1.0,
        burst: 1,
    };
    let cfg = GuardConfig {
        invite: one,
        register: one,
        options: one,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    for kind in [Kind::Invite, Kind::Register, Kind::Options] {
        assert_eq!(
            g.check(t0, &msg("192.0.2.1", req(kind)), idle),
            Verdict::Pass
        );
    }
    assert_eq!(
        refused(g.check(t0, &msg("192.0.2.1", req(Kind::Register)), idle)).map(|r| r.2),
        Some(RefuseReason::RegisterRate)
    );
    // Requests outside a dialog other than INVITE and REGISTER share the OPTIONS bucket.
    assert_eq!(
        refused(g.check(t0, &msg("192.0.2.1", req(Kind::Other)), idle)).map(|r| r.2),
        Some(RefuseReason::OptionsRate)
    );
    assert_eq!(
        g.check(t0, &msg("192.0.2.2", req(Kind::Invite)), idle),
        Verdict::Pass
    );
    // An IPv4 host arriving as an IPv4-mapped IPv6 address is the same source.
    assert!(refused(g.check(t0, &msg("::ffff:192.0.2.1", req(Kind::Invite)), idle)).is_some());
    assert_eq!(
        g.check(t0, &msg("2001:db8::1", req(Kind::Invite)), idle),
        Verdict::Pass
    );
}

#[test]
fn dialogs_responses_ack_and_cancel_are_never_limited() {
    let t0 = Instant::now();
    let none = Rate {
        per_sec: 0.001,
        burst: 1,
    };
    let cfg = GuardConfig {
        invite: none,
        options: none,
        escalate_after: 1,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    let src = "192.0.2.1";
    assert_eq!(
        g.check(t0, &msg(src, req(Kind::Invite)), idle),
        Verdict::Pass
    );
    assert!(refused(g.check(t0, &msg(src, req(Kind::Invite)), idle)).is_some());
    assert_eq!(g.stats().escalations, 1, "blocked from now on");
    let bye = Peek::Request {
        kind: Kind::Other,
        user_agent: None,
        in_dialog: true,
    };
    let reinvite = Peek::Request {
        kind: Kind::Invite,
        user_agent: None,
        in_dialog: true,
    };
    for _ in 0..100 {
        for p in [
            bye,
            reinvite,
            req(Kind::Ack),
            req(Kind::Cancel),
            Peek::Response,
            Peek::KeepAlive,
        ] {
            assert_eq!(g.check(t0, &msg(src, p), idle), Verdict::Pass, "{p:?}");
        }
    }
    assert_eq!(
        g.check(t0, &msg(src, req(Kind::Options)), idle),
        Verdict::Drop(DropReason::Blocked)
    );
}

#[test]
fn acl_applies_to_everything_deny_beating_allow() {
    let t0 = Instant::now();
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let acl = Acl::parse(
        &list(&["10.0.0.0/8", "2001:db8::/32"]),
        &list(&["10.6.0.0/16"]),
    )
    .unwrap();
    let mut g = Guard::new(
        GuardConfig {
            acl: acl.clone(),
            ..GuardConfig::default()
        },
        t0,
    );
    assert_eq!(
        g.check(t0, &msg("10.1.2.3", req(Kind::Invite)), idle),
        Verdict::Pass
    );
    assert_eq!(
        g.check(t0, &msg("2001:db8::9", req(Kind::Options)), idle),
        Verdict::Pass
    );
    let forbidden = Some((403, None, RefuseReason::Acl));
    assert_eq!(
        refused(g.check(t0, &msg("10.6.0.1", req(Kind::Invite)), idle)),
        forbidden
    );
    assert_eq!(
        refused(g.check(t0, &msg("::ffff:10.6.0.1", req(Kind::Invite)), idle)),
        forbidden
    );
    assert_eq!(
        refused(g.check(t0, &msg("192.0.2.1", req(Kind::Options)), idle)),
        forbidden
    );
    assert_eq!(
        refused(g.check(t0, &msg("192.0.2.1", Peek::Response), idle)),
        forbidden
    );
    let bye = Peek::Request {
        kind: Kind::Other,
        user_agent: None,
        in_dialog: true,
    };
    assert_eq!(
        refused(g.check(t0, &msg("192.0.2.1", bye), idle)),
        forbidden
    );
    assert_eq!(g.stats().refused[RefuseReason::Acl as usize], 5);

    let mut quiet = Guard::new(
        GuardConfig {
            acl,
            acl_action: AclAction::Drop,
            ..GuardConfig::default()
        },
        t0,
    );
    assert_eq!(
        quiet.check(t0, &msg("10.6.0.1", req(Kind::Invite)), idle),
        Verdict::Drop(DropReason::Acl)
    );
    assert_eq!(
        quiet.check(t0, &msg("10.0.0.1", req(Kind::Invite)), idle),
        Verdict::Pass
    );
}

#[test]
fn scanners_are_dropped_whatever_the_case() {
    let t0 = Instant::now();
    let mut g = Guard::new(
        GuardConfig {
            scanner_agents: vec![
                "friendly-scanner".into(),
                "SIPVicious".into(),
                String::new(),
            ],
            ..GuardConfig::default()
        },
        t0,
    );
    for ua in [
        &b"friendly-scanner"[..],
        b"Friendly-Scanner/1.0",
        b"sipvicious 0.3",
        b"x SIPVICIOUS",
    ] {
        let p = Peek::Request {
            kind: Kind::Options,
            user_agent: Some(ua),
            in_dialog: false,
        };
        assert_eq!(
            g.check(t0, &msg("192.0.2.1", p), idle),
            Verdict::Drop(DropReason::Scanner)
        );
    }
    // An empty pattern in the list must not match every agent.
    assert_eq!(
        g.check(t0, &msg("192.0.2.1", req(Kind::Invite)), idle),
        Verdict::Pass
    );
    let no_agent = Peek::Request {
        kind: Kind::Invite,
        user_agent: None,
        in_dialog: false,
    };
    assert_eq!(
        g.check(t0, &msg("192.0.2.1", no_agent), idle),
        Verdict::Pass
    );
    assert_eq!(g.stats().dropped[DropReason::Scanner as usize], 4);
}

#[test]
fn escalation_blocks_a_persistent_source_for_the_block_time_then_forgives() {
    let t0 = Instant::now();
    let cfg = GuardConfig {
        options: Rate {
            per_sec: 1.0,
            burst: 1,
        },
        escalate_after: 3,
        escalate_window: Duration::from_secs(10),
        block: Duration::from_secs(30),
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    let m = msg("192.0.2.1", req(Kind::Options));
    assert_eq!(g.check(t0, &m, idle), Verdict::Pass);
    for _ in 0..3 {
        assert!(
            refused(g.check(t0, &m, idle)).is_some(),
            "503 up to the third refusal"
        );
    }
    assert_eq!(g.stats().escalations, 1);
    // Blocked even with tokens back in the bucket, until exactly the block time is over.
    let last = t0 + Duration::from_secs(30) - Duration::from_nanos(1);
    assert_eq!(
        g.check(t0 + 5000 * MS, &m, idle),
        Verdict::Drop(DropReason::Blocked)
    );
    assert_eq!(g.check(last, &m, idle), Verdict::Drop(DropReason::Blocked));
    assert_eq!(
        g.check(t0 + Duration::from_secs(30), &m, idle),
        Verdict::Pass
    );
    assert_eq!(
        g.stats().escalations,
        1,
        "one escalation, however many drops"
    );
    // Another source is untouched throughout.
    assert_eq!(
        g.check(t0 + 5000 * MS, &msg("192.0.2.2", req(Kind::Options)), idle),
        Verdict::Pass
    );
}

#[test]
fn failed_authentications_escalate_like_rate_refusals() {
    let t0 = Instant::now();
    let cfg = GuardConfig {
        invite: Rate {
            per_sec: 100.0,
            burst: 100,
        },
        escalate_after: 3,
        escalate_window: Duration::from_secs(10),
        block: Duration::from_secs(30),
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    let m = msg("192.0.2.1", req(Kind::Invite));
    g.count_auth_failure(t0, ip("192.0.2.1"));
    g.count_auth_failure(t0, ip("192.0.2.1"));
    assert_eq!(g.check(t0, &m, idle), Verdict::Pass, "two strikes: not yet");
    g.count_auth_failure(t0, ip("192.0.2.1"));
    assert_eq!(g.stats().escalations, 1);
    assert_eq!(g.check(t0, &m, idle), Verdict::Drop(DropReason::Blocked));
    let other = msg("192.0.2.2", req(Kind::Invite));
    assert_eq!(g.check(t0, &other, idle), Verdict::Pass);
    assert_eq!(
        g.check(t0 + Duration::from_secs(30), &m, idle),
        Verdict::Pass
    );
}

#[test]
fn refusals_spread_wider_than_the_window_do_not_escalate() {
    let t0 = Instant::now();
    let cfg = GuardConfig {
        options: Rate {
            per_sec: 0.001,
            burst: 1,
        },
        escalate_after: 3,
        escalate_window: Duration::from_secs(10),
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    let m = msg("192.0.2.1", req(Kind::Options));
    assert_eq!(g.check(t0, &m, idle), Verdict::Pass);
    // The window opens at a source's first refusal: two refusals in it, then a third just
    // after it closes, opens a new one.
    for i in 0..20u64 {
        let at = t0 + Duration::from_secs(5 * i);
        assert!(refused(g.check(at, &m, idle)).is_some(), "refusal {i}");
    }
    assert_eq!(g.stats().escalations, 0);
    let at = t0 + Duration::from_secs(100);
    for _ in 0..3 {
        assert!(refused(g.check(at, &m, idle)).is_some());
    }
    assert_eq!(g.stats().escalations, 1, "three within the window");
}

#[test]
fn server_caps_at_their_edges() {
    let t0 = Instant::now();
    let cfg = GuardConfig {
        max_calls: 10,
        max_pending_invites: 4,
        max_cps: 2,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    let invite = |n: u8| msg(&format!("192.0.2.{n}"), req(Kind::Invite));
    let load = |calls, pending_invites| {
        move || Load {
            calls,
            pending_invites,
        }
    };
    assert_eq!(
        refused(g.check(t0, &invite(1), load(10, 0))),
        Some((503, Some(5), RefuseReason::MaxCalls))
    );
    assert_eq!(
        refused(g.check(t0, &invite(1), load(9, 4))),
        Some((503, Some(1), RefuseReason::MaxPending))
    );
    // Refused INVITEs took nothing from the calls-per-second bucket.
    assert_eq!(g.check(t0, &invite(1), load(9, 3)), Verdict::Pass);
    assert_eq!(g.check(t0, &invite(2), load(9, 3)), Verdict::Pass);
    assert_eq!(
        refused(g.check(t0, &invite(3), load(0, 0))),
        Some((503, Some(1), RefuseReason::MaxCps))
    );
    assert_eq!(
        g.check(t0 + 500 * MS, &invite(4), load(0, 0)),
        Verdict::Pass
    );
    // The load is not even read for anything but a new INVITE.
    let panics = || -> Load { panic!("load read for an OPTIONS") };
    assert_eq!(
        g.check(t0, &msg("192.0.2.9", req(Kind::Options)), panics),
        Verdict::Pass
    );
}

#[test]
fn draining_refuses_new_invites_and_options_only() {
    let t0 = Instant::now();
    let mut g = Guard::new(GuardConfig::default(), t0);
    g.set_draining(true);
    assert!(g.draining());
    for k in [Kind::Invite, Kind::Options] {
        assert_eq!(
            refused(g.check(t0, &msg("192.0.2.1", req(k)), idle)),
            Some((503, None, RefuseReason::Draining))
        );
    }
    let bye = Peek::Request {
        kind: Kind::Other,
        user_agent: None,
        in_dialog: true,
    };
    assert_eq!(g.check(t0, &msg("192.0.2.1", bye), idle), Verdict::Pass);
    assert_eq!(
        g.check(t0, &msg("192.0.2.1", req(Kind::Register)), idle),
        Verdict::Pass
    );
    assert_eq!(
        g.check(t0, &msg("192.0.2.1", req(Kind::Cancel)), idle),
        Verdict::Pass
    );
}

#[test]
fn a_flood_from_spoofed_sources_stays_in_the_table_size() {
    let t0 = Instant::now();
    let cfg = GuardConfig {
        invite: Rate {
            per_sec: 1.0,
            burst: 1,
        },
        sources: 64,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    for i in 0..100_000u32 {
        let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let m = Inbound {
            source,
            transport: Transport::Udp,
            peek: req(Kind::Invite),
        };
        assert_eq!(
            g.check(t0 + Duration::from_micros(u64::from(i)), &m, idle),
            Verdict::Pass
        );
    }
    assert_eq!(g.tracked_sources(), 64);
    assert_eq!(g.table.len(), 64);
}

#[test]
fn eviction_takes_the_least_recently_seen_source_of_a_set() {
    let t0 = Instant::now();
    let cfg = GuardConfig {
        invite: Rate {
            per_sec: 1.0,
            burst: 1,
        },
        sources: WAYS,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(cfg, t0);
    let a = msg("192.0.2.1", req(Kind::Invite));
    assert_eq!(g.check(t0, &a, idle), Verdict::Pass);
    for i in 0..20u64 {
        let at = t0 + Duration::from_micros(i + 1);
        // `a` is seen again before each newcomer, so never the oldest and never evicted.
        assert!(
            refused(g.check(at, &a, idle)).is_some(),
            "a still limited ({i})"
        );
        let other = msg(&format!("198.51.100.{i}"), req(Kind::Invite));
        assert_eq!(g.check(at, &other, idle), Verdict::Pass);
    }
    assert_eq!(g.tracked_sources(), WAYS);
}

#[test]
fn tcp_connections_per_source_at_the_cap() {
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let acl = Acl::parse(&[], &list(&["192.0.2.66"])).unwrap();
    let mut c = ConnLimit::new(2, acl);
    let a = ip("192.0.2.1");
    assert_eq!(c.open(a), Ok(()));
    assert_eq!(c.open(ip("::ffff:192.0.2.1")), Ok(()));
    assert_eq!(c.open(a), Err(DropReason::TcpConnections));
    assert_eq!(c.open_from(a), 2);
    assert_eq!(c.open(ip("192.0.2.2")), Ok(()));
    c.close(a);
    assert_eq!(c.open(a), Ok(()));
    assert_eq!(c.open(ip("192.0.2.66")), Err(DropReason::Acl));
    c.close(a);
    c.close(a);
    c.close(a);
    assert_eq!(c.open_from(a), 0);
    assert!(
        !c.open.contains_key(&acl::canonical(a)),
        "no entry without a connection"
    );
    let mut unlimited = ConnLimit::new(0, Acl::default());
    for _ in 0..1000 {
        assert_eq!(unlimited.open(a), Ok(()));
    }
}
