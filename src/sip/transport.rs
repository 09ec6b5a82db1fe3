//! Tokio glue for the SIP endpoint: one task owns the [`Endpoint`] and the UDP socket, TCP
//! connections feed it framed messages, and call tasks talk to it through channels. A task
//! places a call with [`Command::Dial`] and gets the call's event stream back; outgoing TCP
//! reaches only peers already connected to us (no outbound connect yet).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::dialog::{Peer, Transport};
use super::endpoint::{CallHandle, CommandError, Endpoint, Event, OutgoingCall, Transmit};
use super::framing::StreamFramer;
use super::guard::{self, ConnLimit, Guard, Load, Verdict};
use crate::error::{Refusal, SipStatus};
use crate::metrics::Metrics;

/// What a call task asks of the endpoint.
#[derive(Debug)]
pub enum Command {
    /// 180 Ringing (or 183 with early-media SDP).
    Ring(CallHandle, Option<Vec<u8>>),
    /// 200 OK with SDP.
    Answer(CallHandle, Vec<u8>),
    /// A final error response.
    Reject {
        /// The call.
        call: CallHandle,
        /// Status code (300-699).
        code: u16,
        /// Reason phrase.
        reason: String,
        /// Text for a Warning header.
        warning: Option<String>,
    },
    /// 200 OK with SDP to a re-INVITE.
    AnswerReinvite(CallHandle, Vec<u8>),
    /// A final error response to a re-INVITE.
    RejectReinvite {
        /// The call.
        call: CallHandle,
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
        /// Text for a Warning header.
        warning: Option<String>,
    },
    /// BYE (or 480 while ringing).
    Hangup(CallHandle),
    /// An INFO request in the call.
    Info(CallHandle, String, Vec<u8>),
    /// A re-INVITE of ours with a new SDP offer.
    ReInvite(CallHandle, Vec<u8>),
    /// A REFER: ask the peer to call `target` instead (blind transfer).
    Refer {
        /// The call.
        call: CallHandle,
        /// A `sip:`, `sips:` or `tel:` URI.
        target: String,
    },
    /// Places a call; `reply` gets its handle and event stream, or why it was not sent.
    Dial {
        /// What to call.
        call: Box<OutgoingCall>,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<Dialled, CommandError>>,
    },
    /// Cancels a call of ours not yet answered.
    Cancel(CallHandle),
    /// The ACK with our SDP answer, for a call we placed without an offer.
    Acknowledge(CallHandle, Vec<u8>),
}

/// A call [`Command::Dial`] placed: its handle and the stream of its events (progress,
/// answer or failure, in-dialog events, and [`Event::Ended`] last).
#[derive(Debug)]
pub struct Dialled {
    /// The call.
    pub call: CallHandle,
    /// Its events.
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// Starts the task that runs a new call: it gets the call's events and a command sender.
pub type CallSpawner = Arc<
    dyn Fn(CallHandle, Event, mpsc::UnboundedReceiver<Event>, mpsc::Sender<Command>) + Send + Sync,
>;

/// The bound listening sockets.
pub struct Listeners {
    /// UDP socket, if enabled.
    pub udp: Option<Arc<UdpSocket>>,
    /// TCP listener, if enabled.
    pub tcp: Option<TcpListener>,
}

/// Binds UDP and TCP on one address; with port 0 the OS picks a port free for both.
pub async fn bind(
    addr: SocketAddr,
    udp: bool,
    tcp: bool,
) -> std::io::Result<(Listeners, SocketAddr)> {
    for _ in 0..20 {
        let u = if udp {
            Some(UdpSocket::bind(addr).await?)
        } else {
            None
        };
        let port = match &u {
            Some(u) => u.local_addr()?.port(),
            None => addr.port(),
        };
        let t = if tcp {
            match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
                Ok(t) => Some(t),
                // The OS gave UDP a port TCP has in use: try another.
                Err(_) if addr.port() == 0 => continue,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let port = match &t {
            Some(t) => t.local_addr()?.port(),
            None => port,
        };
        let local = SocketAddr::new(addr.ip(), port);
        return Ok((
            Listeners {
                udp: u.map(Arc::new),
                tcp: t,
            },
            local,
        ));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    ))
}

enum FromNet {
    Message(Peer, Vec<u8>),
    Connected(SocketAddr, mpsc::UnboundedSender<Vec<u8>>),
    Closed(SocketAddr),
}

/// What stands between the network and the endpoint, and how a shutdown drains.
pub struct Protection {
    /// Decides what happens to each inbound message.
    pub guard: Guard,
    /// How long calls in progress may go on once `shutdown` resolves, before they get BYE.
    pub drain_after: Duration,
}

/// How long to wait for the peers' answers to our BYEs before stopping regardless.
const BYE_GRACE: Duration = Duration::from_secs(3);

/// Runs the SIP endpoint until `shutdown` resolves, then drains: new INVITEs and OPTIONS get
/// 503, live calls go on for up to `drain_after`, then get BYE; returns once no call is left
/// (or [`BYE_GRACE`] after the BYEs).
pub async fn run(
    mut endpoint: Endpoint,
    listeners: Listeners,
    max_message: usize,
    spawn_call: CallSpawner,
    metrics: Arc<Metrics>,
    protection: Protection,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Protection {
        mut guard,
        drain_after,
    } = protection;
    let (in_tx, mut in_rx) = mpsc::channel::<FromNet>(4096);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(4096);
    if let Some(tcp) = listeners.tcp {
        let limit = ConnLimit::new(
            guard.config().max_tcp_per_source,
            guard.config().acl.clone(),
        );
        tokio::spawn(accept_loop(
            tcp,
            in_tx.clone(),
            max_message,
            Arc::new(Mutex::new(limit)),
            metrics.clone(),
        ));
    }
    let udp = listeners.udp;
    let mut tcp_writers: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut calls: HashMap<CallHandle, mpsc::UnboundedSender<Event>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    tokio::pin!(shutdown);
    // Set once draining: when live calls get BYE, then when to stop waiting for them.
    let mut draining: Option<Instant> = None;
    let mut hung_up: Option<Instant> = None;
    let start = Instant::now();
    loop {
        let deadline = endpoint
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or(start + Duration::from_secs(3600 * 24 * 365));
        tokio::select! {
            r = recv_udp(&udp, &mut buf) => {
                if let Some((n, from)) = r {
                    let peer = Peer { transport: Transport::Udp, addr: from };
                    inbound(&mut endpoint, &mut guard, &metrics, peer, &buf[..n]);
                }
            }
            Some(m) = in_rx.recv() => match m {
                FromNet::Message(peer, bytes) => {
                    inbound(&mut endpoint, &mut guard, &metrics, peer, &bytes)
                }
                FromNet::Connected(addr, w) => { tcp_writers.insert(addr, w); }
                FromNet::Closed(addr) => { tcp_writers.remove(&addr); }
            },
            Some(c) = cmd_rx.recv() => apply(&mut endpoint, &mut calls, c),
            _ = tokio::time::sleep_until(deadline) => {
                endpoint.handle_timeout(std::time::Instant::now());
            }
            _ = &mut shutdown, if draining.is_none() => {
                tracing::info!(
                    calls = endpoint.call_count(),
                    drain_secs = drain_after.as_secs_f64(),
                    "draining: refusing new calls, waiting for live ones to end"
                );
                guard.set_draining(true);
                draining = Some(Instant::now() + drain_after);
            }
            _ = tokio::time::sleep_until(draining.unwrap_or(start)), if draining.is_some() && hung_up.is_none() => {
                tracing::info!(calls = endpoint.call_count(), "drain time over: ending live calls");
                hung_up = Some(Instant::now() + BYE_GRACE);
                let now = std::time::Instant::now();
                for call in calls.keys() {
                    let _ = endpoint.hangup(now, *call);
                }
            }
        }
        flush(&mut endpoint, &metrics, &udp, &tcp_writers).await;
        while let Some(ev) = endpoint.poll_event() {
            dispatch(
                ev,
                &mut calls,
                &spawn_call,
                &cmd_tx,
                draining.is_some(),
                &mut endpoint,
            );
            flush(&mut endpoint, &metrics, &udp, &tcp_writers).await;
        }
        if draining.is_some() {
            if endpoint.call_count() == 0 {
                tracing::info!("drained: no call left");
                break;
            }
            if hung_up.is_some_and(|until| Instant::now() >= until) {
                tracing::warn!(
                    calls = endpoint.call_count(),
                    "stopping with calls whose BYE went unanswered"
                );
                break;
            }
        }
    }
}

/// Puts one inbound message past the guard: handled, refused or dropped.
fn inbound(ep: &mut Endpoint, guard: &mut Guard, metrics: &Metrics, peer: Peer, bytes: &[u8]) {
    let now = std::time::Instant::now();
    let msg = guard::Inbound {
        source: peer.addr.ip(),
        transport: peer.transport,
        peek: guard::peek(bytes),
    };
    let escalations = guard.stats().escalations;
    let verdict = guard.check(now, &msg, || Load {
        calls: ep.call_count(),
        pending_invites: ep.pending_invite_count(),
    });
    match verdict {
        Verdict::Pass => {
            ep.handle_message(now, peer, bytes);
            // Failed authentications count towards the source's escalation.
            for source in ep
                .auth_mut()
                .map(|a| a.take_failed_sources())
                .unwrap_or_default()
            {
                metrics.sip_auth_failure();
                guard.count_auth_failure(now, source);
            }
        }
        Verdict::Refuse {
            code,
            retry_after,
            reason,
        } => {
            metrics.sip_refused(reason);
            let why = if code == 403 {
                Refusal::Forbidden
            } else {
                Refusal::Overloaded
            };
            ep.refuse(now, peer, bytes, &why, retry_after);
        }
        Verdict::Drop(reason) => metrics.sip_dropped(reason),
    }
    if guard.stats().escalations != escalations {
        metrics.sip_escalation();
    }
}

async fn recv_udp(udp: &Option<Arc<UdpSocket>>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match udp {
        Some(u) => match u.recv_from(buf).await {
            Ok(r) => Some(r),
            Err(e) => {
                // ICMP port-unreachable from a vanished peer shows up here on some systems.
                tracing::debug!(error = %e, "udp receive error");
                None
            }
        },
        None => std::future::pending().await,
    }
}

fn apply(
    ep: &mut Endpoint,
    calls: &mut HashMap<CallHandle, mpsc::UnboundedSender<Event>>,
    c: Command,
) {
    let now = std::time::Instant::now();
    let r = match c {
        Command::Dial { call, reply } => match ep.invite(now, *call) {
            Ok(handle) => {
                let (tx, events) = mpsc::unbounded_channel();
                calls.insert(handle, tx);
                if reply
                    .send(Ok(Dialled {
                        call: handle,
                        events,
                    }))
                    .is_err()
                {
                    // Nobody waits for this call any more.
                    calls.remove(&handle);
                    ep.cancel(now, handle)
                } else {
                    Ok(())
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e.clone()));
                Err(e)
            }
        },
        Command::Cancel(call) => ep.cancel(now, call),
        Command::Acknowledge(call, sdp) => ep.acknowledge(now, call, sdp),
        Command::Ring(call, sdp) => ep.ring(now, call, sdp),
        Command::Answer(call, sdp) => ep.answer(now, call, sdp),
        Command::Reject {
            call,
            code,
            reason,
            warning,
        } => ep.reject(now, call, code, &reason, warning.as_deref()),
        Command::AnswerReinvite(call, sdp) => ep.answer_reinvite(now, call, sdp),
        Command::RejectReinvite {
            call,
            code,
            reason,
            warning,
        } => ep.reject_reinvite(now, call, code, &reason, warning.as_deref()),
        Command::Hangup(call) => ep.hangup(now, call),
        Command::Info(call, ct, body) => ep.send_info(now, call, &ct, body),
        Command::ReInvite(call, sdp) => ep.reinvite(now, call, sdp),
        Command::Refer { call, target } => ep.refer(now, call, &target),
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "call command not applied");
    }
}

fn dispatch(
    ev: Event,
    calls: &mut HashMap<CallHandle, mpsc::UnboundedSender<Event>>,
    spawn_call: &CallSpawner,
    cmd_tx: &mpsc::Sender<Command>,
    draining: bool,
    endpoint: &mut Endpoint,
) {
    match ev {
        Event::Incoming { call, .. } if draining => {
            let now = std::time::Instant::now();
            let (code, reason) = Refusal::Overloaded.status();
            let _ = endpoint.reject(now, call, code, reason, Some("shutting down"));
        }
        Event::Incoming { call, .. } => {
            let (tx, rx) = mpsc::unbounded_channel();
            calls.insert(call, tx);
            spawn_call(call, ev, rx, cmd_tx.clone());
        }
        Event::Ended { call, .. } => {
            if let Some(tx) = calls.remove(&call) {
                let _ = tx.send(ev);
            }
        }
        Event::Confirmed { call, .. }
        | Event::ReInvite { call, .. }
        | Event::Update { call, .. }
        | Event::ReInviteAnswered { call, .. }
        | Event::Info { call, .. }
        | Event::ReferAnswered { call, .. }
        | Event::TransferProgress { call, .. }
        | Event::Progress { call, .. }
        | Event::Answered { call, .. }
        | Event::Failed { call, .. } => {
            if let Some(tx) = calls.get(&call) {
                let _ = tx.send(ev);
            }
        }
    }
}

/// The status code of an outgoing response (`SIP/2.0 200 OK…`), None for a request.
fn response_code(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"SIP/2.0 ")?;
    let digits = rest.get(..3)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

async fn flush(
    ep: &mut Endpoint,
    metrics: &crate::metrics::Metrics,
    udp: &Option<Arc<UdpSocket>>,
    tcp: &HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>,
) {
    while let Some(Transmit { peer, bytes }) = ep.poll_transmit() {
        if let Some(code) = response_code(&bytes) {
            metrics.sip_response(code);
        }
        match peer.transport {
            Transport::Udp => {
                if let Some(u) = udp {
                    if let Err(e) = u.send_to(&bytes, peer.addr).await {
                        tracing::debug!(to = %peer.addr, error = %e, "udp send failed");
                    }
                }
            }
            Transport::Tcp => match tcp.get(&peer.addr) {
                Some(w) => {
                    let _ = w.send(bytes);
                }
                None => tracing::debug!(to = %peer.addr, "no TCP connection to the peer"),
            },
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    to_core: mpsc::Sender<FromNet>,
    max: usize,
    limit: Arc<Mutex<ConnLimit>>,
    metrics: Arc<Metrics>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let admitted = lock(&limit).open(addr.ip());
                if let Err(reason) = admitted {
                    // Dropping the stream closes it: nothing is read from it.
                    metrics.sip_dropped(reason);
                    tracing::debug!(%addr, reason = reason.label(), "closed a TCP connection at accept");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let limit = limit.clone();
                let to_core = to_core.clone();
                tokio::spawn(async move {
                    connection(stream, addr, to_core, max).await;
                    lock(&limit).close(addr.ip());
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection counts, even if a connection task panicked while holding them.
fn lock(limit: &Mutex<ConnLimit>) -> std::sync::MutexGuard<'_, ConnLimit> {
    match limit.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    to_core: mpsc::Sender<FromNet>,
    max: usize,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (w_tx, mut w_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if to_core.send(FromNet::Connected(addr, w_tx)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(bytes) = w_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::new(max);
    let mut buf = vec![0u8; 16384];
    let peer = Peer {
        transport: Transport::Tcp,
        addr,
    };
    'read: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_message() {
                Ok(Some(m)) => {
                    if to_core.send(FromNet::Message(peer, m)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%addr, error = %e, "closing a TCP connection that cannot be framed");
                    break 'read;
                }
            }
        }
    }
    let _ = to_core.send(FromNet::Closed(addr)).await;
    writer.abort();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::sip::endpoint::{EndpointConfig, Party};
    use crate::sip::ids::Ids;

    #[test]
    fn dial_hands_back_the_call_and_its_events_and_cancel_reaches_the_endpoint() {
        let mut ep = Endpoint::with_ids(
            EndpointConfig {
                timers: Default::default(),
                local_addr: "127.0.0.1:5060".parse().unwrap(),
                user_agent: "t".into(),
            },
            Ids::with_seed(1),
        );
        let mut calls = HashMap::new();
        let peer = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        };
        let out = OutgoingCall {
            target: "sip:bob@127.0.0.1:5070".into(),
            peer,
            from: Party::uri("sip:sb@127.0.0.1"),
            to: Party::uri("sip:bob@127.0.0.1:5070"),
            sdp: None,
            headers: Vec::new(),
            route: Vec::new(),
            credentials: None,
        };
        let (tx, mut rx) = oneshot::channel();
        apply(
            &mut ep,
            &mut calls,
            Command::Dial {
                call: Box::new(out.clone()),
                reply: tx,
            },
        );
        let dialled = rx.try_recv().unwrap().unwrap();
        assert!(calls.contains_key(&dialled.call));
        let sent = ep.poll_transmit().unwrap();
        assert!(sent.bytes.starts_with(b"INVITE sip:bob@127.0.0.1:5070 "));
        // Cancelled before any provisional: held, nothing sent yet, but accepted.
        apply(&mut ep, &mut calls, Command::Cancel(dialled.call));
        assert!(ep.poll_transmit().is_none());
        // A call that cannot be placed is refused through the reply.
        let (tx, mut rx) = oneshot::channel();
        let bad = OutgoingCall {
            target: "http://x".into(),
            ..out
        };
        apply(
            &mut ep,
            &mut calls,
            Command::Dial {
                call: Box::new(bad),
                reply: tx,
            },
        );
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(CommandError::InvalidCall(_))
        ));
        assert_eq!(calls.len(), 1);
    }
}
