//! RFC 4028 session timers from the UAS side: reading `Session-Expires` / `Min-SE` /
//! `Supported` / `Require`, choosing the interval and the refresher (§9), and the per-dialog
//! deadline (refresh at half the interval, or BYE shortly before expiry, §10). Sans-IO: the
//! endpoint owns one [`SessionTimer`] per call and fires it from its timer heap.

use std::time::{Duration, Instant};

use super::message::{canonical_name, header_value, Headers};

/// The lowest session interval RFC 4028 allows (§4, §5).
pub const MIN_SE_FLOOR: u32 = 90;

/// Our session timer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval we ask for (and the most we grant), in seconds.
    pub session_expires: u32,
    /// The smallest interval we accept, in seconds (at least [`MIN_SE_FLOOR`]).
    pub min_se: u32,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            session_expires: 1800,
            min_se: MIN_SE_FLOOR,
        }
    }
}

impl SessionTimerConfig {
    /// `min_se` raised to the RFC floor.
    pub fn floor(&self) -> u32 {
        self.min_se.max(MIN_SE_FLOOR)
    }
}

/// Which side sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// This server.
    Us,
    /// The caller.
    Peer,
}

/// The outcome of negotiating a request from the peer (the peer is the UAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Session interval in seconds.
    pub interval: u32,
    /// Who refreshes.
    pub refresher: Refresher,
    /// The peer listed `timer` in Supported or Require.
    pub peer_supports: bool,
}

impl Negotiated {
    /// The `Session-Expires` value of our 2xx (the peer is the UAC of its request).
    pub fn session_expires(&self) -> String {
        let r = match self.refresher {
            Refresher::Peer => "uac",
            Refresher::Us => "uas",
        };
        format!("{};refresher={r}", self.interval)
    }
}

/// True when an option tag appears in any header called `name` (comma-separated lists).
pub fn has_option_tag(headers: &Headers, name: &str, tag: &str) -> bool {
    headers
        .iter()
        .filter(|h| canonical_name(h.name()).eq_ignore_ascii_case(name))
        .any(|h| {
            h.value()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(tag))
        })
}

/// A `Session-Expires` header as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval in seconds.
    pub interval: u32,
    /// The `refresher` parameter, lowercased.
    pub refresher: Option<String>,
}

/// `Session-Expires` (or `x`): the interval and the refresher parameter.
pub fn session_expires(headers: &Headers) -> Option<SessionExpires> {
    let v = header_value(headers, "Session-Expires")?;
    let mut parts = v.split(';');
    let secs = parts.next()?.trim().parse::<u32>().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some(SessionExpires {
        interval: secs,
        refresher,
    })
}

/// `Min-SE` in seconds (its parameters ignored).
pub fn min_se(headers: &Headers) -> Option<u32> {
    header_value(headers, "Min-SE")?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Negotiates the session timer of a request from the peer (§9). `current` is the running
/// timer of the dialog, for a refresh. `Ok(None)`: no session timer. `Err(min)`: refuse with
/// 422 and `Min-SE: min`.
pub fn negotiate(
    headers: &Headers,
    cfg: &SessionTimerConfig,
    current: Option<(u32, Refresher)>,
) -> Result<Option<Negotiated>, u32> {
    let supports = has_option_tag(headers, "Supported", "timer")
        || has_option_tag(headers, "Require", "timer");
    let ours = cfg.floor();
    // The interval may never go below what the peer (and any proxy) asked for.
    let floor = min_se(headers).unwrap_or(MIN_SE_FLOOR).max(ours);
    let Some(SessionExpires {
        interval: asked,
        refresher,
    }) = session_expires(headers)
    else {
        return Ok(match current {
            // A refresh without the header keeps the running timer; a peer that does not
            // speak RFC 4028 cannot refresh, so we do.
            Some((interval, r)) => Some(Negotiated {
                interval,
                refresher: if supports { r } else { Refresher::Us },
                peer_supports: supports,
            }),
            // §9: a UAC that supports timers but asked for none may still be given one.
            None if supports => Some(Negotiated {
                interval: cfg.session_expires.max(floor),
                refresher: Refresher::Peer,
                peer_supports: true,
            }),
            None => None,
        });
    };
    // Without `timer` support a proxy inserted the header and the UAC would not understand
    // 422 (§8.1 by analogy): the interval is raised below instead.
    if asked < ours && supports {
        return Err(ours);
    }
    let interval = asked.max(floor).min(cfg.session_expires.max(floor));
    let refresher = match refresher.as_deref() {
        Some("uac") if supports => Refresher::Peer,
        Some("uas") => Refresher::Us,
        // Left open: a supporting UAC keeps (or takes) the job, else we refresh (§9).
        _ if supports => current.map_or(Refresher::Peer, |(_, r)| r),
        _ => Refresher::Us,
    };
    Ok(Some(Negotiated {
        interval,
        refresher,
        peer_supports: supports,
    }))
}

/// What to do when a session timer's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a refresh (we are the refresher).
    Refresh,
    /// The session expired: send BYE.
    Expire,
}

/// The running session timer of one dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// Session interval in seconds.
    pub interval: u32,
    /// Who refreshes.
    pub refresher: Refresher,
    /// The interval our next refresh asks for (raised by a 422's Min-SE).
    pub ask: u32,
    refreshed_at: Instant,
    refresh_sent: bool,
    next: Instant,
}

impl SessionTimer {
    /// A timer (re)started by a refresh at `now`.
    pub fn start(now: Instant, interval: u32, refresher: Refresher) -> Self {
        let mut t = SessionTimer {
            interval,
            refresher,
            ask: interval,
            refreshed_at: now,
            refresh_sent: false,
            next: now,
        };
        t.next = match refresher {
            Refresher::Us => now + Duration::from_millis(u64::from(interval) * 500),
            Refresher::Peer => t.expiry_bye(),
        };
        t
    }

    /// The moment to give up on the session: expiry minus min(32 s, interval/3) (§10).
    fn expiry_bye(&self) -> Instant {
        let interval = Duration::from_secs(u64::from(self.interval));
        let margin = Duration::from_secs(32).min(interval / 3);
        self.refreshed_at + interval - margin
    }

    /// The next deadline.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// What the deadline asks for at `now`; None before it (a stale wake-up).
    pub fn on_due(&mut self, now: Instant) -> Option<Due> {
        if now < self.next {
            return None;
        }
        if self.refresher == Refresher::Us && !self.refresh_sent {
            self.refresh_sent = true;
            self.next = self.expiry_bye().max(now);
            return Some(Due::Refresh);
        }
        Some(Due::Expire)
    }

    /// Sends the refresh again at `at` (after 491, 422, or while the dialog is busy).
    pub fn retry_at(&mut self, at: Instant) {
        self.refresh_sent = false;
        self.next = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{classify, Inbound};

    fn headers(extra: &str) -> Headers {
        let m = format!(
            "INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKst\r\n\
From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: st\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:a@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        let Inbound::Request(r) = classify(m.as_bytes(), false) else {
            panic!("{m}")
        };
        r.req.headers
    }

    fn cfg() -> SessionTimerConfig {
        SessionTimerConfig {
            session_expires: 1800,
            min_se: 120,
        }
    }

    #[test]
    fn interval_below_our_minimum_gets_422_only_from_a_supporting_uac() {
        let h = headers("Supported: timer\r\nSession-Expires: 119\r\n");
        assert_eq!(negotiate(&h, &cfg(), None), Err(120));
        let h = headers("Supported: timer\r\nSession-Expires: 120\r\n");
        assert_eq!(negotiate(&h, &cfg(), None).unwrap().unwrap().interval, 120);
        // Inserted by a proxy: raised instead, and we refresh.
        let h = headers("Session-Expires: 100\r\n");
        let n = negotiate(&h, &cfg(), None).unwrap().unwrap();
        assert_eq!((n.interval, n.refresher), (120, Refresher::Us));
    }

    #[test]
    fn compact_form_refresher_and_cap() {
        let h = headers("k: timer\r\nx: 3600;refresher=uas\r\n");
        let n = negotiate(&h, &cfg(), None).unwrap().unwrap();
        assert_eq!((n.interval, n.refresher), (1800, Refresher::Us));
        assert_eq!(n.session_expires(), "1800;refresher=uas");
        let h = headers("Supported: 100rel, timer\r\nSession-Expires: 600\r\n");
        let n = negotiate(&h, &cfg(), None).unwrap().unwrap();
        assert_eq!((n.interval, n.refresher), (600, Refresher::Peer));
        // The peer's Min-SE bounds how far we may lower the interval.
        let c = SessionTimerConfig {
            session_expires: 300,
            min_se: 90,
        };
        let h = headers("Supported: timer\r\nSession-Expires: 1800\r\nMin-SE: 400\r\n");
        assert_eq!(negotiate(&h, &c, None).unwrap().unwrap().interval, 400);
    }

    #[test]
    fn no_header_no_support_means_no_timer_but_a_refresh_keeps_it() {
        assert_eq!(negotiate(&headers(""), &cfg(), None), Ok(None));
        let n = negotiate(&headers(""), &cfg(), Some((600, Refresher::Peer)))
            .unwrap()
            .unwrap();
        assert_eq!((n.interval, n.refresher), (600, Refresher::Us));
        let n = negotiate(&headers("Supported: timer\r\n"), &cfg(), None)
            .unwrap()
            .unwrap();
        assert_eq!((n.interval, n.refresher), (1800, Refresher::Peer));
    }

    #[test]
    fn deadlines_are_half_the_interval_or_expiry_minus_margin() {
        let t0 = Instant::now();
        let mut us = SessionTimer::start(t0, 90, Refresher::Us);
        assert_eq!(us.next() - t0, Duration::from_secs(45));
        assert_eq!(us.on_due(t0 + Duration::from_secs(44)), None);
        assert_eq!(us.on_due(us.next()), Some(Due::Refresh));
        assert_eq!(us.next() - t0, Duration::from_secs(60));
        assert_eq!(us.on_due(us.next()), Some(Due::Expire));
        let peer = SessionTimer::start(t0, 1800, Refresher::Peer);
        assert_eq!(peer.next() - t0, Duration::from_secs(1768));
    }
}
