//! The per-call task: negotiates SDP, takes RTP ports, answers or refuses, follows re-INVITEs
//! (hold/unhold) and INFO, and releases everything when the call ends.
//!
//! What the call does once answered is decided by a built-in dialplan keyed on the
//! Request-URI user: `busy` is refused with 486, `ring` rings until the caller gives up, and
//! anything else is answered and kept up until either side hangs up.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::endpoint::{CallHandle, EndReason, Event};
use super::message::Request;
use super::transport::Command;
use crate::rtp::ports::{PortAllocator, PortLease};
use crate::sdp::{self, LocalSession, NegotiatedAudio};

/// What every call needs from the server.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// RTP/RTCP ports.
    pub ports: PortAllocator,
    /// Address written into our SDP.
    pub media_ip: IpAddr,
    /// End answered calls after this long (None: never).
    pub max_duration: Option<Duration>,
    /// How long `ring` rings before giving up.
    pub ring_timeout: Duration,
}

/// Starts a call task for an `Event::Incoming`.
pub fn spawn(
    ctx: Arc<CallContext>,
    call: CallHandle,
    incoming: Event,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::Sender<Command>,
) {
    let Event::Incoming { request, .. } = incoming else {
        return;
    };
    let call_id = super::message::header_value(&request.headers, "Call-ID")
        .unwrap_or("")
        .to_string();
    let span = tracing::info_span!("call", call_id = %call_id);
    tokio::spawn(
        async move {
            let mut c = Call {
                ctx,
                call,
                events,
                commands,
                lease: None,
                session: None,
            };
            let reason = c.run(request).await;
            tracing::info!(?reason, "call ended");
        }
        .instrument(span),
    );
}

struct Call {
    ctx: Arc<CallContext>,
    call: CallHandle,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::Sender<Command>,
    lease: Option<PortLease>,
    session: Option<LocalSession>,
}

/// How the call ended, for the log.
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through Debug in the end-of-call log line
enum Outcome {
    Ended(EndReason),
    Refused(u16),
    Lost,
}

impl Call {
    async fn send(&self, c: Command) {
        let _ = self.commands.send(c).await;
    }

    async fn reject(&self, code: u16, reason: &str, warning: Option<String>) -> Outcome {
        self.send(Command::Reject {
            call: self.call,
            code,
            reason: reason.into(),
            warning,
        })
        .await;
        Outcome::Refused(code)
    }

    async fn run(&mut self, request: Box<Request>) -> Outcome {
        let user = request.uri.user().unwrap_or("").to_string();
        tracing::info!(to = %user, "incoming call");
        match user.as_str() {
            "busy" => return self.reject(486, "Busy Here", None).await,
            "ring" => {
                self.send(Command::Ring(self.call, None)).await;
                return self.ring_until_cancelled().await;
            }
            _ => {}
        }
        let Some(lease) = self.ctx.ports.allocate() else {
            tracing::warn!("no RTP port free");
            return self
                .reject(
                    503,
                    "Service Unavailable",
                    Some("no media ports free".into()),
                )
                .await;
        };
        let media = std::net::SocketAddr::new(self.ctx.media_ip, lease.port());
        self.lease = Some(lease);
        let mut session = LocalSession::new(fastrand::u64(1..u64::MAX >> 1), media);
        let sdp_out = if request.body.is_empty() {
            // No offer in the INVITE: we offer in the 200 and take the answer from the ACK.
            session.offer().to_string()
        } else {
            match negotiate(&mut session, &request.body) {
                Ok((sdp, m)) => {
                    tracing::info!(codec = ?m.codec, remote = ?m.remote_rtp, "media negotiated");
                    sdp
                }
                Err((code, why)) => {
                    tracing::info!(%code, %why, "offer refused");
                    let phrase = if code == 400 {
                        "Bad Request"
                    } else {
                        "Not Acceptable Here"
                    };
                    return self.reject(code, phrase, Some(why)).await;
                }
            }
        };
        let late_offer = request.body.is_empty();
        // The INVITE is not needed for the rest of the call; idle calls should stay small.
        drop(request);
        self.session = Some(session);
        self.send(Command::Ring(self.call, None)).await;
        self.send(Command::Answer(self.call, sdp_out.into_bytes()))
            .await;
        self.in_call(late_offer).await
    }

    async fn ring_until_cancelled(&mut self) -> Outcome {
        let timeout = tokio::time::sleep(self.ctx.ring_timeout);
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Ended { reason, .. }) => return Outcome::Ended(reason),
                    Some(_) => {}
                    None => return Outcome::Lost,
                },
                _ = &mut timeout => {
                    return self.reject(480, "Temporarily Unavailable", None).await;
                }
            }
        }
    }

    async fn in_call(&mut self, mut awaiting_answer: bool) -> Outcome {
        let limit = self
            .ctx
            .max_duration
            .unwrap_or(Duration::from_secs(u64::MAX >> 2));
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut hung_up = false;
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Confirmed { sdp, .. }) => {
                        if let (true, Some(body), Some(s)) = (awaiting_answer, sdp, self.session.as_mut()) {
                            match accept_answer(s, &body) {
                                Ok(m) => tracing::info!(codec = ?m.codec, "answer in ACK accepted"),
                                Err(e) => {
                                    tracing::info!(error = %e, "unusable answer in ACK; hanging up");
                                    self.send(Command::Hangup(self.call)).await;
                                }
                            }
                            awaiting_answer = false;
                        }
                    }
                    Some(Event::ReInvite { sdp, .. }) => self.on_reinvite(sdp).await,
                    Some(Event::Info { content_type, body, .. }) => {
                        tracing::info!(?content_type, len = body.len(), "INFO received");
                    }
                    Some(Event::Ended { reason, .. }) => return Outcome::Ended(reason),
                    Some(Event::ReInviteAnswered { code, sdp, .. }) => {
                        if let (Some(body), Some(s)) = (sdp, self.session.as_mut()) {
                            match accept_answer(s, &body) {
                                Ok(m) => tracing::info!(%code, direction = ?m.direction, "re-INVITE answered"),
                                Err(e) => tracing::info!(%code, error = %e, "unusable answer to our re-INVITE"),
                            }
                        }
                    }
                    Some(Event::Incoming { .. }) => {}
                    None => return Outcome::Lost,
                },
                _ = &mut deadline, if !hung_up => {
                    tracing::info!("maximum call duration reached");
                    hung_up = true;
                    self.send(Command::Hangup(self.call)).await;
                }
            }
        }
    }

    async fn on_reinvite(&mut self, offer: Option<Vec<u8>>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let result = match offer {
            Some(body) => negotiate(session, &body).map(|(sdp, m)| (sdp, Some(m))),
            // An offerless re-INVITE: we offer again; the answer comes in the ACK.
            None => Ok((session.offer().to_string(), None)),
        };
        match result {
            Ok((sdp, m)) => {
                tracing::info!(direction = ?m.map(|m| m.direction), "re-INVITE accepted");
                self.send(Command::AnswerReinvite(self.call, sdp.into_bytes()))
                    .await;
            }
            Err((code, why)) => {
                self.send(Command::RejectReinvite {
                    call: self.call,
                    code,
                    reason: "Not Acceptable Here".into(),
                    warning: Some(why),
                })
                .await;
            }
        }
    }
}

/// Parses the peer's answer to our offer.
fn accept_answer(session: &mut LocalSession, body: &[u8]) -> Result<NegotiatedAudio, String> {
    let answer = sdp::parse(body).map_err(|e| e.to_string())?;
    session.accept_answer(&answer).map_err(|e| e.to_string())
}

/// Parses and answers an offer: the answer text, or the status code and reason to refuse with.
fn negotiate(
    session: &mut LocalSession,
    body: &[u8],
) -> Result<(String, NegotiatedAudio), (u16, String)> {
    let offer = sdp::parse(body).map_err(|e| (400, format!("bad SDP: {e}")))?;
    let answer = session.answer(&offer).map_err(|e| (488, e.to_string()))?;
    Ok((answer.sdp.to_string(), answer.media))
}
