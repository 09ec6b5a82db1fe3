//! Calls offered over HTTP in the style of WHIP (RFC 9725): `POST /api/webrtc/{number}` with
//! an SDP offer becomes a call exactly as an INVITE to that number would, the same call task
//! running the same dialplan. The offer travels in an INVITE made here, and this module plays
//! the SIP endpoint's part for that one dialog: the call's 200 is the HTTP answer (and its
//! ACK follows at once), a `DELETE` of the session is the caller's BYE, and the call's own
//! hangup ends the session. Everything else the call asks of SIP (a `dial()`'s legs) goes on
//! to the real transport.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::sip::dialog::{Peer, Transport};
use crate::sip::endpoint::{CallHandle, EndReason, Event};
use crate::sip::message::{classify, Inbound};
use crate::sip::transport::{CallSpawner, Command};

/// Handles of HTTP-offered calls: apart from the endpoint's (counted from 1) and from the
/// calls the server places (from 2^63).
const FIRST_HANDLE: u64 = 1 << 62;

/// The most an offer may be: an audio-only browser offer is 2–5 KB.
pub const MAX_OFFER_BYTES: usize = 32 * 1024;

/// How HTTP-offered calls are limited.
#[derive(Debug, Clone, Copy)]
pub struct WhipLimits {
    /// Live sessions per source address.
    pub per_source: usize,
    /// How long an offer waits for the dialplan's answer.
    pub answer_timeout: Duration,
}

/// The live HTTP-offered calls, and how new ones start.
pub struct WhipCalls {
    spawn: CallSpawner,
    sip: mpsc::Sender<Command>,
    /// Our address, for the Request-URI of the INVITEs made here.
    host: IpAddr,
    limits: WhipLimits,
    sessions: Mutex<HashMap<String, Session>>,
    next: AtomicU64,
}

struct Session {
    call: CallHandle,
    events: crate::sip::transport::CallEventSender,
    source: IpAddr,
}

/// A call's answer to an offer.
#[derive(Debug)]
pub struct WhipAnswer {
    /// The session, named in its `Location` (`/api/webrtc/sessions/{id}`).
    pub id: String,
    /// The call's Call-ID, as the API, events and CDRs show it.
    pub call_id: String,
    /// The answer SDP.
    pub sdp: Vec<u8>,
}

/// Why an offer got no call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipError {
    /// The number cannot be dialled (not a plain user part).
    #[error("{0:?} is not a number or user that can be dialled")]
    BadNumber(String),
    /// The offer is too large or not text.
    #[error("the offer is not an SDP body of at most {MAX_OFFER_BYTES} bytes")]
    BadOffer,
    /// The source has as many sessions as it may.
    #[error("too many sessions from {0}")]
    TooMany(IpAddr),
    /// The call refused the offer as it would an INVITE: its status, reason and warning.
    #[error("{code} {reason}{}", warning.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    Refused {
        /// The SIP status.
        code: u16,
        /// Its reason phrase.
        reason: String,
        /// What the call said was wrong (a 488's cause).
        warning: Option<String>,
    },
    /// The dialplan did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call ended before it answered.
    #[error("the call ended before it answered")]
    Gone,
}

impl WhipCalls {
    /// Calls start through `spawn`, as the SIP transport starts them; their other SIP
    /// commands go to `sip`.
    pub fn new(
        spawn: CallSpawner,
        sip: mpsc::Sender<Command>,
        host: IpAddr,
        limits: WhipLimits,
    ) -> Arc<WhipCalls> {
        Arc::new(WhipCalls {
            spawn,
            sip,
            host,
            limits,
            sessions: Mutex::default(),
            next: AtomicU64::new(FIRST_HANDLE),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Offers `sdp` to `number` on behalf of `source`; the call's answer, or why none came.
    pub async fn offer(
        self: &Arc<Self>,
        number: &str,
        sdp: &[u8],
        source: SocketAddr,
    ) -> Result<WhipAnswer, WhipError> {
        if !dialable(number) {
            return Err(WhipError::BadNumber(number.to_owned()));
        }
        if sdp.len() > MAX_OFFER_BYTES || std::str::from_utf8(sdp).is_err() {
            return Err(WhipError::BadOffer);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let call = CallHandle(n);
        // The id is all a DELETE needs besides the token: it must not be guessable.
        let mut secret = [0u8; 8];
        getrandom::fill(&mut secret).map_err(|_| WhipError::Gone)?;
        let id = format!("{:016x}{:016x}", u64::from_le_bytes(secret), n);
        let call_id = format!("{id}@webrtc");
        let request = invite(number, self.host, source, &id, &call_id, sdp)?;
        let (events, events_rx) = mpsc::unbounded_channel();
        {
            let mut sessions = self.lock();
            let from_source = sessions
                .values()
                .filter(|s| s.source == source.ip())
                .count();
            if from_source >= self.limits.per_source {
                return Err(WhipError::TooMany(source.ip()));
            }
            sessions.insert(
                id.clone(),
                Session {
                    call,
                    events: events.clone(),
                    source: source.ip(),
                },
            );
        }
        let (commands, commands_rx) = mpsc::channel(64);
        let (answer_tx, answer_rx) = oneshot::channel();
        tokio::spawn(
            self.clone()
                .dialog(id.clone(), call, commands_rx, events.clone(), answer_tx),
        );
        (self.spawn)(
            call,
            Event::Incoming {
                call,
                request: Box::new(request),
                peer: Peer {
                    transport: Transport::Tcp,
                    addr: source,
                },
                source,
                auth_user: None,
            },
            events_rx,
            commands,
        );
        let answered = tokio::time::timeout(self.limits.answer_timeout, answer_rx).await;
        match answered {
            Ok(Ok(Ok(sdp))) => Ok(WhipAnswer { id, call_id, sdp }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(WhipError::Gone),
            Err(_) => {
                // The caller stops waiting, as a SIP caller would CANCEL.
                let _ = events.send(Box::new(Event::Ended {
                    call,
                    reason: EndReason::Cancelled,
                }));
                self.lock().remove(&id);
                Err(WhipError::Timeout(self.limits.answer_timeout))
            }
        }
    }

    /// Ends session `id` as the caller's BYE would; false when there is no such session.
    pub fn hang_up(&self, id: &str) -> bool {
        let Some(s) = self.lock().remove(id) else {
            return false;
        };
        let _ = s.events.send(Box::new(Event::Ended {
            call: s.call,
            reason: EndReason::RemoteBye,
        }));
        true
    }

    /// Plays the endpoint's part for the dialog of `call` until the call drops its commands.
    async fn dialog(
        self: Arc<Self>,
        id: String,
        call: CallHandle,
        mut commands: mpsc::Receiver<Command>,
        events: crate::sip::transport::CallEventSender,
        answer: oneshot::Sender<Result<Vec<u8>, WhipError>>,
    ) {
        let mut answer = Some(answer);
        let mut reply = |r: Result<Vec<u8>, WhipError>| {
            if let Some(tx) = answer.take() {
                let _ = tx.send(r);
            }
        };
        let end = |reason| {
            let _ = events.send(Box::new(Event::Ended { call, reason }));
        };
        while let Some(cmd) = commands.recv().await {
            if handle_of(&cmd) != Some(call) {
                // A dialled leg's signalling is real SIP.
                if self.sip.send(cmd).await.is_err() {
                    break;
                }
                continue;
            }
            match cmd {
                Command::Answer(_, sdp) => {
                    reply(Ok(sdp));
                    let _ = events.send(Box::new(Event::Confirmed { call, sdp: None }));
                }
                Command::Reject {
                    code,
                    reason,
                    warning,
                    ..
                } => {
                    reply(Err(WhipError::Refused {
                        code,
                        reason,
                        warning,
                    }));
                    end(EndReason::Rejected(code));
                }
                Command::Hangup(_) => {
                    reply(Err(WhipError::Gone));
                    end(EndReason::LocalBye);
                    self.lock().remove(&id);
                }
                // Nothing can reach the browser mid-call but media: a re-offer or a transfer
                // is refused as a peer that does not implement them would.
                Command::ReInvite(..) => {
                    let _ = events.send(Box::new(Event::ReInviteAnswered {
                        call,
                        code: 488,
                        sdp: None,
                    }));
                }
                Command::Refer { .. } => {
                    let _ = events.send(Box::new(Event::ReferAnswered { call, code: 501 }));
                }
                // Ringing and INFO have no HTTP form; an answer to a re-INVITE never comes up.
                _ => {}
            }
        }
        reply(Err(WhipError::Gone));
        self.lock().remove(&id);
    }
}

/// The call a command is about, when it is about one.
fn handle_of(cmd: &Command) -> Option<CallHandle> {
    match cmd {
        Command::Ring(c, _)
        | Command::Answer(c, _)
        | Command::AnswerReinvite(c, _)
        | Command::Hangup(c)
        | Command::Info(c, ..)
        | Command::ReInvite(c, _)
        | Command::Cancel(c)
        | Command::Acknowledge(c, _) => Some(*c),
        Command::Reject { call, .. }
        | Command::RejectReinvite { call, .. }
        | Command::Refer { call, .. } => Some(*call),
        Command::Dial { .. } => None,
    }
}

/// A number or user name that can stand in a Request-URI as it is.
fn dialable(number: &str) -> bool {
    !number.is_empty()
        && number.len() <= 64
        && number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
}

/// The INVITE that carries an HTTP offer into the dialplan.
fn invite(
    number: &str,
    host: IpAddr,
    source: SocketAddr,
    id: &str,
    call_id: &str,
    sdp: &[u8],
) -> Result<crate::sip::message::Request, WhipError> {
    let host = match host {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let mut bytes = format!(
        "INVITE sip:{number}@{host} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {source};branch=z9hG4bK{id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:webrtc@{host}>;tag={id}\r\n\
         To: <sip:{number}@{host}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:webrtc@{source};transport=tcp>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n",
        sdp.len()
    )
    .into_bytes();
    bytes.extend_from_slice(sdp);
    match classify(&bytes, true) {
        Inbound::Request(r) => Ok(r.req),
        _ => Err(WhipError::BadOffer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_numbers_and_users_are_dialled() {
        for ok in ["echo", "1000", "+4930123", "conf-1", "a.b_c", "*97", "123#"] {
            assert!(dialable(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x@y",
            "a\r\nVia: evil",
            "<sip:x>",
            &"9".repeat(65),
        ] {
            assert!(!dialable(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_invite_carries_the_offer_and_the_number() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        let req = invite(
            "echo",
            "127.0.0.1".parse().unwrap(),
            "127.0.0.1:5555".parse().unwrap(),
            "abc",
            "abc@webrtc",
            sdp,
        )
        .unwrap();
        assert_eq!(req.uri.user(), Some("echo"));
        assert_eq!(req.body, sdp.to_vec());
        assert_eq!(
            crate::sip::message::header_value(&req.headers, "Call-ID"),
            Some("abc@webrtc")
        );
    }
}
