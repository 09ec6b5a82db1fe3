//! Tokio glue for the SIP endpoint: one task owns the [`Endpoint`] and the UDP socket, TCP
//! connections feed it framed messages, and call tasks talk to it through channels. A task
//! places a call with [`Command::Dial`] and gets the call's event stream back. A message
//! for a TCP peer not connected to us opens a connection to it (bounded by
//! [`TCP_CONNECT_TIMEOUT`]; what is sent meanwhile waits in its queue), read and framed like
//! an accepted one and reused after; if it cannot be opened its messages are dropped and the
//! transactions time out. TLS connections (accepted on their own listener, or opened to a
//! `sips:`/`transport=tls` peer) take the same path once the handshake is done. WebSocket
//! connections (RFC 7118, [`super::ws`]) are accepted on listeners of their own and reused
//! the same way, but only the peer opens them: a message for a WebSocket peer no longer
//! connected fails what waits on it at once, and a closed one ends the calls it carried.
//! The task also drives the trunks' registrations
//! ([`TrunkRegistrations`]): their REGISTERs go out through the same sockets, their answers
//! are taken before the guard and the endpoint see them, and a drain removes the bindings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::dialog::{Peer, Transport};
use super::endpoint::{CallHandle, CommandError, Endpoint, Event, OutgoingCall, Transmit};
use super::framing::StreamFramer;
use super::guard::{self, ConnLimit, Guard, Load, Verdict};
use super::tls::ServerTls;
use super::trunks::TrunkRegistrations;
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
    pub events: CallEvents,
}

/// A call's events from the endpoint. Boxed: a channel makes room for 32 messages when it is
/// made (1.4 KB of events), where a call gets a handful.
pub type CallEvents = mpsc::UnboundedReceiver<Box<Event>>;

/// The sending end of [`CallEvents`].
pub type CallEventSender = mpsc::UnboundedSender<Box<Event>>;

/// Starts the task that runs a new call: it gets the call's events and a command sender.
pub type CallSpawner =
    Arc<dyn Fn(CallHandle, Event, CallEvents, mpsc::Sender<Command>) + Send + Sync>;

/// The bound listening sockets.
pub struct Listeners {
    /// UDP socket, if enabled.
    pub udp: Option<Arc<UdpSocket>>,
    /// TCP listener, if enabled.
    pub tcp: Option<TcpListener>,
    /// TLS listener and its (reloadable) certificate, if enabled.
    pub tls: Option<(TcpListener, ServerTls)>,
    /// SIP over WebSocket (`ws://`) listener, if enabled.
    pub ws: Option<TcpListener>,
    /// SIP over secure WebSocket (`wss://`) listener and its certificate, if enabled.
    pub wss: Option<(TcpListener, ServerTls)>,
    /// How connections we open to TLS peers check them (None: TLS peers cannot be reached).
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// The name a TLS peer's certificate is checked against, by address (a trunk's domain);
    /// other TLS peers are checked by their IP.
    pub tls_names: HashMap<SocketAddr, String>,
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
                tls: None,
                ws: None,
                wss: None,
                tls_client: None,
                tls_names: HashMap::new(),
            },
            local,
        ));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    ))
}

/// What connections tell the task.
pub(super) enum FromNet {
    /// One whole SIP message from a peer.
    Message(Peer, Vec<u8>),
    /// A connection is up: its peer, its id and its writer.
    Connected(Peer, u64, mpsc::UnboundedSender<Vec<u8>>),
    /// The connection with this id is gone.
    Closed(Peer, u64),
    /// The connection with this id we tried to open could not be: what waits on it fails.
    Unreachable(Peer, u64),
}

/// How long opening a TCP connection to a peer may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a TLS handshake may take, either way: a peer that stalls it holds a connection
/// slot of its source no longer.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a drain waits for the registrars to confirm the removal of our bindings.
const UNREGISTER_GRACE: Duration = Duration::from_secs(2);

/// Tells connections apart, so that a late `Closed` of an old one to an address does not
/// drop a newer one's writer.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// The sockets the task sends through: UDP, and the TCP and TLS connections by peer.
struct Net {
    udp: Option<Arc<UdpSocket>>,
    tcp: HashMap<Peer, (u64, mpsc::UnboundedSender<Vec<u8>>)>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    tls_names: HashMap<SocketAddr, String>,
    /// Where connections opened here report.
    to_core: mpsc::Sender<FromNet>,
    max_message: usize,
}

impl Net {
    async fn send(&mut self, Transmit { peer, bytes }: Transmit) {
        match peer.transport {
            Transport::Udp => {
                if let Some(u) = &self.udp {
                    if let Err(e) = u.send_to(&bytes, peer.addr).await {
                        tracing::debug!(to = %peer.addr, error = %e, "udp send failed");
                    }
                }
            }
            Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                let bytes = match self.tcp.get(&peer) {
                    Some((_, w)) => match w.send(bytes) {
                        Ok(()) => return,
                        // Its task ended before its `Closed` arrived: open another.
                        Err(e) => e.0,
                    },
                    None => bytes,
                };
                if peer.transport.is_websocket() {
                    // Only the peer opens a WebSocket: with it gone, so is the way to reach
                    // the peer. Id 0 names no connection, so no writer is dropped for it.
                    tracing::debug!(to = %peer.addr, "no WebSocket to the peer: message dropped");
                    self.tcp.remove(&peer);
                    let _ = self.to_core.try_send(FromNet::Unreachable(peer, 0));
                    return;
                }
                let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
                let (w_tx, w_rx) = mpsc::unbounded_channel();
                // Queued until the connection is up; a receiver exists, so this cannot fail.
                let _ = w_tx.send(bytes);
                self.tcp.insert(peer, (id, w_tx));
                tracing::debug!(to = %peer.addr, transport = peer.transport.via_token(), "opening a connection");
                tokio::spawn(connect_out(
                    peer,
                    id,
                    w_rx,
                    self.to_core.clone(),
                    self.max_message,
                    self.tls_client
                        .clone()
                        .map(|c| (c, self.tls_names.get(&peer.addr).cloned())),
                ));
            }
        }
    }
}

/// What stands between the network and the endpoint, and how a shutdown drains.
pub struct Protection {
    /// Decides what happens to each inbound message.
    pub guard: Guard,
    /// How long calls in progress may go on once `shutdown` resolves, before they get BYE.
    pub drain_after: Duration,
    /// The drain switch `shutdown` follows, read for each inbound message: a request that
    /// arrives after the switch is thrown is refused even if `shutdown` has not been seen
    /// yet (`POST /api/admin/drain` has already said so).
    pub drain: crate::drain::Drain,
}

/// How long to wait for the peers' answers to our BYEs before stopping regardless.
const BYE_GRACE: Duration = Duration::from_secs(3);

/// Runs the SIP endpoint until `shutdown` resolves, then drains: new INVITEs and OPTIONS get
/// 503, live calls go on for up to `drain_after`, then get BYE; returns once no call is left
/// (or [`BYE_GRACE`] after the BYEs).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut endpoint: Endpoint,
    listeners: Listeners,
    max_message: usize,
    spawn_call: CallSpawner,
    metrics: Arc<Metrics>,
    protection: Protection,
    mut registrations: TrunkRegistrations,
    commands: (mpsc::Sender<Command>, mpsc::Receiver<Command>),
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Protection {
        mut guard,
        drain_after,
        drain,
    } = protection;
    let (in_tx, mut in_rx) = mpsc::channel::<FromNet>(4096);
    // Made by the caller, so that calls can also be placed from outside (the HTTP API).
    let (cmd_tx, mut cmd_rx) = commands;
    // TCP, TLS and WebSocket connections from one source count against one cap.
    let limit = Arc::new(Mutex::new(ConnLimit::new(
        guard.config().max_tcp_per_source,
        guard.config().acl.clone(),
    )));
    let streams = [
        listeners.tcp.map(|l| (l, Speaks::Tcp)),
        listeners.tls.map(|(l, tls)| (l, Speaks::Tls(tls))),
        listeners.ws.map(|l| (l, Speaks::Ws)),
        listeners.wss.map(|(l, tls)| (l, Speaks::Wss(tls))),
    ];
    for (listener, speaks) in streams.into_iter().flatten() {
        tokio::spawn(accept_loop(
            listener,
            speaks,
            in_tx.clone(),
            max_message,
            limit.clone(),
            metrics.clone(),
        ));
    }
    let mut net = Net {
        udp: listeners.udp,
        tcp: HashMap::new(),
        tls_client: listeners.tls_client,
        tls_names: listeners.tls_names,
        to_core: in_tx.clone(),
        max_message,
    };
    let udp = net.udp.clone();
    let mut calls: HashMap<CallHandle, CallEventSender> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    tokio::pin!(shutdown);
    // Set once draining: when live calls get BYE, then when to stop waiting for them.
    let mut draining: Option<Instant> = None;
    let mut hung_up: Option<Instant> = None;
    // When a drain stops waiting for the registrars to confirm our bindings are gone.
    let mut unregistered_by: Option<Instant> = None;
    let start = Instant::now();
    registrations.start(std::time::Instant::now());
    flush(&mut endpoint, &mut registrations, &metrics, &mut net).await;
    loop {
        // Over TCP nothing retransmits: the wait for the registrars needs a wake-up of its own.
        let give_up = unregistered_by
            .filter(|by| registrations.unregistering() && *by > Instant::now())
            .map(Instant::into_std);
        // Likewise the end of a drain's wait for answers to its BYEs: a call whose INVITE
        // went to a stream peer that never answered has no timer of its own before Timer B.
        let deadline = [
            endpoint.poll_timeout(),
            registrations.poll_timeout(),
            give_up,
            hung_up.map(Instant::into_std),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(Instant::from_std)
        .unwrap_or(start + Duration::from_secs(3600 * 24 * 365));
        tokio::select! {
            r = recv_udp(&udp, &mut buf) => {
                if let Some((n, from)) = r {
                    let peer = Peer { transport: Transport::Udp, addr: from };
                    inbound(&mut endpoint, &mut registrations, (&mut guard, &drain), &metrics, peer, &buf[..n]);
                }
            }
            Some(m) = in_rx.recv() => match m {
                FromNet::Message(peer, bytes) => {
                    inbound(&mut endpoint, &mut registrations, (&mut guard, &drain), &metrics, peer, &bytes)
                }
                FromNet::Connected(peer, id, w) => { net.tcp.insert(peer, (id, w)); }
                FromNet::Closed(peer, id) => {
                    if net.tcp.get(&peer).is_some_and(|(open, _)| *open == id) {
                        net.tcp.remove(&peer);
                        if peer.transport.is_websocket() {
                            endpoint.flow_closed(std::time::Instant::now(), peer);
                        }
                    }
                }
                FromNet::Unreachable(peer, id) => {
                    if net.tcp.get(&peer).is_some_and(|(open, _)| *open == id) {
                        net.tcp.remove(&peer);
                    }
                    endpoint.peer_unreachable(std::time::Instant::now(), peer);
                }
            },
            Some(c) = cmd_rx.recv() => apply(&mut endpoint, &mut calls, c),
            _ = tokio::time::sleep_until(deadline) => {
                let now = std::time::Instant::now();
                endpoint.handle_timeout(now);
                registrations.handle_timeout(now);
            }
            _ = &mut shutdown, if draining.is_none() => {
                tracing::info!(
                    calls = endpoint.call_count(),
                    drain_secs = drain_after.as_secs_f64(),
                    "draining: refusing new calls, waiting for live ones to end"
                );
                guard.set_draining(true);
                draining = Some(Instant::now() + drain_after);
                // No new calls are taken from now: the trunks may as well route elsewhere.
                registrations.unregister_all(std::time::Instant::now());
                unregistered_by = Some(Instant::now() + UNREGISTER_GRACE);
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
        flush(&mut endpoint, &mut registrations, &metrics, &mut net).await;
        while let Some(ev) = endpoint.poll_event() {
            dispatch(
                ev,
                &mut calls,
                &spawn_call,
                &cmd_tx,
                draining.is_some(),
                &mut endpoint,
            );
            flush(&mut endpoint, &mut registrations, &metrics, &mut net).await;
        }
        if draining.is_some() {
            let unregistering = registrations.unregistering()
                && unregistered_by.is_some_and(|by| Instant::now() < by);
            if endpoint.call_count() == 0 && !unregistering {
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

/// Puts one inbound message past the guard: handled, refused or dropped. Answers to the
/// trunks' REGISTERs go to them first: they match our own random branch, so the guard
/// (which may not list the carrier) has nothing to judge.
fn inbound(
    ep: &mut Endpoint,
    registrations: &mut TrunkRegistrations,
    (guard, drain): (&mut Guard, &crate::drain::Drain),
    metrics: &Metrics,
    peer: Peer,
    bytes: &[u8],
) {
    let now = std::time::Instant::now();
    if drain.is_draining() && !guard.draining() {
        guard.set_draining(true);
    }
    if registrations.handle_message(now, peer, bytes) {
        return;
    }
    // Behind a trusted proxy the caller's own address is judged, not the proxy's.
    let source = guard.config().trusted_proxies.source_of(peer, bytes);
    let msg = guard::Inbound {
        source: source.ip(),
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
        Verdict::Drop(reason) => {
            metrics.sip_dropped(reason);
            // Silence only hides us from a scanner; a proxy in front would take it for a dead
            // instance and move its other callers elsewhere. It gets a 403 to pass back.
            if guard.config().trusted_proxies.trusts(peer) {
                ep.refuse(now, peer, bytes, &Refusal::Forbidden, None);
            }
        }
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

fn apply(ep: &mut Endpoint, calls: &mut HashMap<CallHandle, CallEventSender>, c: Command) {
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
    calls: &mut HashMap<CallHandle, CallEventSender>,
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
                let _ = tx.send(Box::new(ev));
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
                let _ = tx.send(Box::new(ev));
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
    registrations: &mut TrunkRegistrations,
    metrics: &crate::metrics::Metrics,
    net: &mut Net,
) {
    while let Some(t) = ep.poll_transmit() {
        if let Some(code) = response_code(&t.bytes) {
            metrics.sip_response(code);
        }
        net.send(t).await;
    }
    while let Some(t) = registrations.poll_transmit() {
        net.send(t).await;
    }
}

/// What a listener's connections speak, with the certificate of the TLS ones.
enum Speaks {
    Tcp,
    Tls(ServerTls),
    Ws,
    Wss(ServerTls),
}

impl Speaks {
    /// The SIP transport of its connections.
    fn transport(&self) -> Transport {
        match self {
            Speaks::Tcp => Transport::Tcp,
            Speaks::Tls(_) => Transport::Tls,
            Speaks::Ws => Transport::Ws,
            Speaks::Wss(_) => Transport::Wss,
        }
    }

    /// The acceptor for its next connection, when it speaks TLS.
    fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        match self {
            Speaks::Tls(tls) | Speaks::Wss(tls) => Some(tls.acceptor()),
            Speaks::Tcp | Speaks::Ws => None,
        }
    }
}

/// Accepts connections on a TCP, TLS, WS or WSS listener, admitted by the per-source cap
/// and the access lists, and serves each like any other.
async fn accept_loop(
    listener: TcpListener,
    speaks: Speaks,
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
                let peer = Peer {
                    transport: speaks.transport(),
                    addr,
                };
                // Taken now: a reload after this accept applies from the next connection.
                let acceptor = speaks.acceptor();
                tokio::spawn(async move {
                    match (acceptor, peer.transport.is_websocket()) {
                        (None, false) => serve(stream, peer, to_core, max).await,
                        (None, true) => super::ws::serve(stream, peer, to_core, max).await,
                        (Some(acceptor), websocket) => {
                            if let Some(stream) = tls_accept(acceptor, stream, addr).await {
                                if websocket {
                                    super::ws::serve(stream, peer, to_core, max).await;
                                } else {
                                    serve(stream, peer, to_core, max).await;
                                }
                            }
                        }
                    }
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

/// The server side of a TLS handshake, bounded by [`TLS_HANDSHAKE_TIMEOUT`]; None (logged)
/// when it fails.
async fn tls_accept(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::info!(%addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%addr, "TLS handshake not done in time");
            None
        }
    }
}

/// What a mutex guards (the connection counts), even if a task panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Registers an accepted connection with the core and serves it until it closes.
async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: Peer,
    to_core: mpsc::Sender<FromNet>,
    max: usize,
) {
    if let Some((id, w_rx)) = announce(peer, &to_core).await {
        connection(stream, peer, id, w_rx, to_core, max).await;
    }
}

/// Tells the core an accepted connection to `peer` is up: its id and the queue of what to
/// write to it; None when the core is gone.
pub(super) async fn announce(
    peer: Peer,
    to_core: &mpsc::Sender<FromNet>,
) -> Option<(u64, mpsc::UnboundedReceiver<Vec<u8>>)> {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let (w_tx, w_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let announced = to_core.send(FromNet::Connected(peer, id, w_tx)).await;
    announced.ok().map(|()| (id, w_rx))
}

/// Opens a connection to `peer` (TCP, or TLS with `tls_client`) for messages already
/// queued in `w_rx`, then serves it like an accepted one; reports `Unreachable` if it
/// cannot be opened (and the endpoint fails what waits on it). A TLS peer is checked by the
/// name given with `tls_client`, else by its IP address: names are never resolved here.
async fn connect_out(
    peer: Peer,
    id: u64,
    w_rx: mpsc::UnboundedReceiver<Vec<u8>>,
    to_core: mpsc::Sender<FromNet>,
    max: usize,
    tls_client: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
) {
    let addr = peer.addr;
    match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) if peer.transport == Transport::Tls => {
            let _ = stream.set_nodelay(true);
            let Some((config, name)) = tls_client else {
                tracing::warn!(to = %addr, "no TLS client set up: cannot reach a TLS peer");
                let _ = to_core.send(FromNet::Unreachable(peer, id)).await;
                return;
            };
            let name = super::tls::server_name(name.as_deref(), addr);
            let connector = tokio_rustls::TlsConnector::from(config);
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await
            {
                Ok(Ok(stream)) => connection(stream, peer, id, w_rx, to_core, max).await,
                Ok(Err(e)) => {
                    tracing::warn!(to = %addr, error = %e, "TLS handshake with a peer failed");
                    let _ = to_core.send(FromNet::Unreachable(peer, id)).await;
                }
                Err(_) => {
                    tracing::warn!(to = %addr, "TLS handshake with a peer not done in time");
                    let _ = to_core.send(FromNet::Unreachable(peer, id)).await;
                }
            }
        }
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            connection(stream, peer, id, w_rx, to_core, max).await;
        }
        Ok(Err(e)) => {
            tracing::info!(to = %addr, error = %e, "cannot open a TCP connection");
            let _ = to_core.send(FromNet::Unreachable(peer, id)).await;
        }
        Err(_) => {
            tracing::info!(to = %addr, "TCP connection not opened in time");
            let _ = to_core.send(FromNet::Unreachable(peer, id)).await;
        }
    }
}

/// Reads and frames one connection's messages for the core and writes what `w_rx` brings;
/// the same for TCP and TLS.
async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: Peer,
    id: u64,
    mut w_rx: mpsc::UnboundedReceiver<Vec<u8>>,
    to_core: mpsc::Sender<FromNet>,
    max: usize,
) {
    let addr = peer.addr;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = w_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::new(max);
    let mut buf = vec![0u8; 16384];
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
    let _ = to_core.send(FromNet::Closed(peer, id)).await;
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
            call_id: None,
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

    #[test]
    fn a_call_placed_over_tls_names_the_tls_port_in_via_and_contact() {
        let mut ep = Endpoint::with_ids(
            EndpointConfig {
                timers: Default::default(),
                local_addr: "127.0.0.1:5060".parse().unwrap(),
                user_agent: "t".into(),
            },
            Ids::with_seed(3),
        );
        ep.set_tls_port(5061);
        let peer = Peer {
            transport: Transport::Tls,
            addr: "127.0.0.1:5071".parse().unwrap(),
        };
        let target = "sips:bob@127.0.0.1:5071".to_string();
        let out = OutgoingCall {
            target: target.clone(),
            peer,
            from: Party::uri("sip:sb@127.0.0.1"),
            to: Party::uri(target),
            sdp: None,
            headers: Vec::new(),
            route: Vec::new(),
            credentials: None,
            call_id: None,
        };
        ep.invite(std::time::Instant::now(), out).unwrap();
        let sent = ep.poll_transmit().unwrap();
        assert_eq!(sent.peer, peer);
        let text = String::from_utf8(sent.bytes).unwrap();
        assert!(text.contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"), "{text}");
        assert!(
            text.contains("<sip:switchboard@127.0.0.1:5061;transport=tls>"),
            "{text}"
        );
    }

    /// Reads one framed message from a stream, within a bounded time.
    async fn read_message(stream: &mut TcpStream, framer: &mut StreamFramer) -> String {
        let mut buf = [0u8; 4096];
        for _ in 0..100 {
            if let Some(m) = framer.next_message().unwrap() {
                return String::from_utf8(m).unwrap();
            }
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("a message within 5 s")
                .unwrap();
            assert!(n > 0, "the connection closed");
            framer.push(&buf[..n]);
        }
        panic!("no whole message");
    }

    #[tokio::test]
    async fn a_call_to_a_tcp_peer_not_connected_to_us_opens_a_connection_and_reuses_it() {
        // The commands sender of the first incoming call is how this test places a call.
        let (cmd_out, cmd_in) = std::sync::mpsc::channel::<mpsc::Sender<Command>>();
        let cmd_out = Mutex::new(cmd_out);
        let spawner: CallSpawner = Arc::new(move |_call, _ev, _rx, tx| {
            let _ = lock(&cmd_out).send(tx);
        });
        let (local, server, stop_tx) = start_server(spawner, Arc::default()).await;
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cport = caller.local_addr().unwrap().port();
        let invite = format!(
            "INVITE sip:svc@{local} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKin1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:svc@{local}>\r\n\
             Call-ID: in1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{cport}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        caller.send_to(invite.as_bytes(), local).await.unwrap();
        let commands = tokio::task::spawn_blocking(move || {
            cmd_in.recv_timeout(Duration::from_secs(5)).unwrap()
        })
        .await
        .unwrap();

        let callee = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callee_addr = callee.local_addr().unwrap();
        let target = format!("sip:bob@{callee_addr};transport=tcp");
        let (reply, dialled) = oneshot::channel();
        commands
            .send(Command::Dial {
                call: Box::new(OutgoingCall {
                    target: target.clone(),
                    peer: Peer {
                        transport: Transport::Tcp,
                        addr: callee_addr,
                    },
                    from: Party::uri("sip:sb@127.0.0.1"),
                    to: Party::uri(target.clone()),
                    sdp: Some(b"v=0\r\n".to_vec()),
                    headers: Vec::new(),
                    route: Vec::new(),
                    credentials: None,
                    call_id: None,
                }),
                reply,
            })
            .await
            .unwrap();
        let Dialled { mut events, .. } = dialled.await.unwrap().unwrap();
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), callee.accept())
            .await
            .expect("the server connects within 5 s")
            .unwrap();
        let mut framer = StreamFramer::new(65535);
        let got = read_message(&mut stream, &mut framer).await;
        let line = got.lines().next().unwrap().to_ascii_lowercase();
        assert_eq!(line, format!("invite {target} sip/2.0"), "{got}");
        assert!(header(&got, "Via:").contains("SIP/2.0/TCP"), "{got}");
        let ok = answer(
            &got,
            "200 OK",
            &format!("Contact: <sip:bob@{callee_addr};transport=tcp>\r\n"),
        );
        stream.write_all(ok.as_bytes()).await.unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.recv().await.map(|e| *e) {
                    Some(Event::Answered { .. }) => return true,
                    Some(_) => continue,
                    None => return false,
                }
            }
        })
        .await
        .unwrap();
        assert!(
            answered,
            "the 200 OK read from the new connection answers the call"
        );
        // The ACK comes over the same connection: no second one is opened.
        let ack = read_message(&mut stream, &mut framer).await;
        assert!(ack.starts_with("ACK sip:bob@"), "{ack}");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), callee.accept())
                .await
                .is_err(),
            "a second connection was opened"
        );
        let _ = stop_tx.send(());
        drop(commands);
        server.abort();
    }

    /// The line of header `name` in a message.
    fn header(msg: &str, name: &str) -> String {
        msg.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {msg}"))
            .to_string()
    }

    /// A response to request `req`: its Via, From, To (tagged), Call-ID and CSeq, plus `extra`.
    fn answer(req: &str, status: &str, extra: &str) -> String {
        format!(
            "SIP/2.0 {status}\r\n{}\r\n{}\r\n{};tag=b1\r\n{}\r\n{}\r\n{extra}Content-Length: 0\r\n\r\n",
            header(req, "Via:"),
            header(req, "From:"),
            header(req, "To:"),
            header(req, "Call-ID:"),
            header(req, "CSeq:")
        )
    }

    #[tokio::test]
    async fn a_drain_removes_the_trunks_bindings_and_waits_for_the_registrar() {
        use crate::sip::trunks::{RegistrationStatus, Trunks};
        let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let config = crate::Config::from_toml_str(
            "t",
            &format!(
                "[[trunks]]\nname = \"x\"\nproxy = \"sip:{}\"\nregister = true\nregister_expires = 60\n",
                registrar.local_addr().unwrap()
            ),
        )
        .unwrap();
        let trunks = Arc::new(Trunks::new(&config.trunks).unwrap());
        let (_, server, stop_tx) = start_server(Arc::new(|_, _, _, _| {}), trunks.clone()).await;
        let mut buf = [0u8; 4096];
        let mut receive = async || {
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), registrar.recv_from(&mut buf))
                    .await
                    .expect("a REGISTER within 5 s")
                    .unwrap();
            (String::from_utf8_lossy(&buf[..n]).to_string(), from)
        };
        let (first, from) = receive().await;
        assert!(first.starts_with("REGISTER "), "{first}");
        assert_eq!(header(&first, "Expires:"), "Expires: 60");
        registrar
            .send_to(answer(&first, "200 OK", "Expires: 60\r\n").as_bytes(), from)
            .await
            .unwrap();
        let registered = async {
            for _ in 0..500 {
                let s = trunks.status(std::time::Instant::now());
                if matches!(s[0].registration, RegistrationStatus::Registered { .. }) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        };
        assert!(registered.await, "the 200 OK did not register the trunk");
        stop_tx.send(()).unwrap();
        let (last, from) = receive().await;
        assert!(last.starts_with("REGISTER "), "{last}");
        assert_eq!(header(&last, "Expires:"), "Expires: 0");
        assert_eq!(header(&last, "Call-ID:"), header(&first, "Call-ID:"));
        // No call is up, yet the drain waits for the registrar's answer…
        let mut server = server;
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut server)
                .await
                .is_err(),
            "run() returned before the registrar confirmed"
        );
        // …and ends as soon as it comes.
        registrar
            .send_to(answer(&last, "200 OK", "").as_bytes(), from)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_millis(1500), server)
            .await
            .expect("run() returns once the binding is removed")
            .unwrap();
        assert_eq!(
            trunks.status(std::time::Instant::now())[0].registration,
            RegistrationStatus::Unregistered
        );
    }

    /// `run()` on loopback (UDP and TCP) with these trunks: its address, its task and the
    /// switch that starts its drain.
    async fn start_server(
        spawner: CallSpawner,
        trunks: Arc<crate::sip::trunks::Trunks>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (listeners, local) = bind("127.0.0.1:0".parse().unwrap(), true, true)
            .await
            .unwrap();
        let ep = Endpoint::with_ids(
            EndpointConfig {
                timers: Default::default(),
                local_addr: local,
                user_agent: "t".into(),
            },
            Ids::with_seed(7),
        );
        let registrations = TrunkRegistrations::new(
            trunks,
            &crate::sip::trunks::LocalSide {
                addr: local,
                user_agent: "t".into(),
                timers: Default::default(),
            },
            Ids::with_seed(9),
        );
        let config = crate::Config::embedded().unwrap();
        let guard = Guard::new(config.sip.guard().unwrap(), std::time::Instant::now());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(run(
            ep,
            listeners,
            65535,
            spawner,
            Arc::new(Metrics::default()),
            Protection {
                guard,
                drain_after: Duration::from_secs(60),
                drain: Default::default(),
            },
            registrations,
            mpsc::channel(64),
            async {
                let _ = stop_rx.await;
            },
        ));
        (local, server, stop_tx)
    }

    /// A [`Net`] with no UDP socket and no connection yet, reporting to `to_core`.
    fn stream_net(to_core: mpsc::Sender<FromNet>) -> Net {
        Net {
            udp: None,
            tcp: HashMap::new(),
            tls_client: None,
            tls_names: HashMap::new(),
            to_core,
            max_message: 65535,
        }
    }

    #[tokio::test]
    async fn a_tcp_peer_that_cannot_be_reached_gets_its_writer_dropped() {
        // A port nobody listens on: the connect fails at once and the writer is forgotten.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let (to_core, mut from_net) = mpsc::channel(8);
        let mut net = stream_net(to_core);
        let peer = Peer {
            transport: Transport::Tcp,
            addr,
        };
        net.send(Transmit {
            peer,
            bytes: b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec(),
        })
        .await;
        let id = net.tcp.get(&peer).map(|(id, _)| *id).unwrap();
        let closed = tokio::time::timeout(TCP_CONNECT_TIMEOUT * 2, from_net.recv())
            .await
            .unwrap();
        assert!(matches!(closed, Some(FromNet::Unreachable(p, i)) if p == peer && i == id));
    }

    #[tokio::test]
    async fn a_websocket_peer_no_longer_connected_is_unreachable_at_once() {
        let (to_core, mut from_net) = mpsc::channel(8);
        let mut net = stream_net(to_core);
        let peer = Peer {
            transport: Transport::Ws,
            addr: "127.0.0.1:40000".parse().unwrap(),
        };
        // Its writer's task has ended (the socket closed) before the core heard of it.
        let (w_tx, w_rx) = mpsc::unbounded_channel();
        drop(w_rx);
        net.tcp.insert(peer, (7, w_tx));
        net.send(Transmit {
            peer,
            bytes: b"BYE sip:x SIP/2.0\r\n\r\n".to_vec(),
        })
        .await;
        // No connection is opened to it: only it could open one.
        assert!(net.tcp.is_empty());
        assert!(matches!(
            from_net.try_recv(),
            Ok(FromNet::Unreachable(p, 0)) if p == peer
        ));
    }

    /// An endpoint, no trunks and a guard from a configuration, for [`inbound`] alone.
    struct SansIo {
        ep: Endpoint,
        regs: TrunkRegistrations,
        guard: Guard,
        drain: crate::drain::Drain,
        metrics: Metrics,
    }

    impl SansIo {
        fn new(toml: &str) -> SansIo {
            let config = crate::Config::from_toml_str("t", toml).unwrap();
            let guard = Guard::new(config.sip.guard().unwrap(), std::time::Instant::now());
            let local: SocketAddr = "127.0.0.1:5080".parse().unwrap();
            let mut ep = Endpoint::with_ids(
                EndpointConfig {
                    timers: Default::default(),
                    local_addr: local,
                    user_agent: "t".into(),
                },
                Ids::with_seed(3),
            );
            ep.set_trusted_proxies(guard.config().trusted_proxies.clone());
            let regs = TrunkRegistrations::new(
                Arc::default(),
                &crate::sip::trunks::LocalSide {
                    addr: local,
                    user_agent: "t".into(),
                    timers: Default::default(),
                },
                Ids::with_seed(4),
            );
            SansIo {
                ep,
                regs,
                guard,
                drain: Default::default(),
                metrics: Metrics::default(),
            }
        }

        /// Puts `bytes` from `from` through [`inbound`]: the status codes sent back.
        fn send(&mut self, from: Peer, bytes: &[u8]) -> Vec<u16> {
            let s = self;
            let guard = (&mut s.guard, &s.drain);
            inbound(&mut s.ep, &mut s.regs, guard, &s.metrics, from, bytes);
            std::iter::from_fn(|| s.ep.poll_transmit())
                .filter_map(|t| {
                    let text = String::from_utf8(t.bytes).ok()?;
                    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
                })
                .collect()
        }

        /// The source of the call the last INVITE started (none: a failure).
        fn incoming_source(&mut self) -> (Peer, SocketAddr) {
            match self.ep.poll_event() {
                Some(Event::Incoming { peer, source, .. }) => (peer, source),
                other => panic!("{other:?}"),
            }
        }
    }

    fn udp(addr: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: addr.parse().unwrap(),
        }
    }

    /// A new request from `from`, optionally with a source header.
    fn request(method: &str, n: u32, from: Peer, said: Option<&str>) -> Vec<u8> {
        let header = said
            .map(|s| format!("X-Switchboard-Source: {s}\r\n"))
            .unwrap_or_default();
        format!(
            "{method} sip:conf-1@127.0.0.1:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};branch=z9hG4bK-{method}-{n}\r\n\
             From: <sip:a@127.0.0.1>;tag=f{n}\r\nTo: <sip:conf-1@127.0.0.1>\r\n\
             Call-ID: {method}-{n}\r\nCSeq: 1 {method}\r\nContact: <sip:a@{}>\r\n\
             Max-Forwards: 70\r\n{header}Content-Length: 0\r\n\r\n",
            from.addr, from.addr
        )
        .into_bytes()
    }

    const PROXY: &str = "127.0.0.1:5060";
    const BEHIND_PROXY: &str = "[sip]\ntrusted_proxies = [\"127.0.0.1:5060\"]\n\
                                deny = [\"198.51.100.0/24\"]\n";

    #[test]
    fn a_trusted_proxys_caller_is_judged_by_the_address_the_proxy_passes_on() {
        let mut s = SansIo::new(BEHIND_PROXY);
        let proxy = udp(PROXY);
        // A denied caller behind the proxy is refused although the proxy itself is not denied.
        let denied = request("INVITE", 1, proxy, Some("198.51.100.7:5062"));
        assert_eq!(s.send(proxy, &denied), [403]);
        assert!(s.ep.poll_event().is_none());
        // An allowed one gets through, with its own address as the call's source.
        let allowed = request("INVITE", 2, proxy, Some("192.0.2.1:5062"));
        assert_eq!(s.send(proxy, &allowed), [100]);
        let (peer, source) = s.incoming_source();
        assert_eq!(peer, proxy, "answers still go to the proxy");
        assert_eq!(source, "192.0.2.1:5062".parse().unwrap());
        // The proxy's own probes carry no header and are judged as the proxy's.
        assert_eq!(s.send(proxy, &request("OPTIONS", 3, proxy, None)), [200]);
    }

    #[test]
    fn the_source_header_of_anyone_but_a_trusted_proxy_is_ignored() {
        let mut s = SansIo::new(BEHIND_PROXY);
        // The proxy's address but another port (over UDP): not the proxy.
        for (n, from) in [(1, "127.0.0.1:5061"), (2, "127.0.0.2:5060")] {
            let caller = udp(from);
            // Claiming a denied address hurts nobody but the caller's own claim...
            let claim = request("INVITE", n, caller, Some("198.51.100.7:5062"));
            assert_eq!(s.send(caller, &claim), [100], "{from}");
            assert_eq!(s.incoming_source().1, caller.addr);
        }
        // ...and a denied caller cannot claim an allowed address.
        let denied = udp("198.51.100.9:5060");
        let claim = request("INVITE", 3, denied, Some("192.0.2.1:5062"));
        assert_eq!(s.send(denied, &claim), [403]);
        // Without trusted proxies the header means nothing either.
        let mut s = SansIo::new("[sip]\ndeny = [\"198.51.100.0/24\"]\n");
        let proxy = udp(PROXY);
        let claim = request("INVITE", 4, proxy, Some("198.51.100.7:5062"));
        assert_eq!(s.send(proxy, &claim), [100]);
    }

    #[test]
    fn what_would_be_dropped_unanswered_is_refused_to_a_trusted_proxy() {
        use crate::sip::guard::DropReason;
        let mut s = SansIo::new(&format!("{BEHIND_PROXY}acl_action = \"drop\"\n"));
        let proxy = udp(PROXY);
        let denied = request("INVITE", 1, proxy, Some("198.51.100.7:5062"));
        assert_eq!(s.send(proxy, &denied), [403], "through the proxy");
        let caller = udp("198.51.100.7:5062");
        let direct = request("INVITE", 2, caller, None);
        assert!(
            s.send(caller, &direct).is_empty(),
            "straight from the caller: silence"
        );
        assert_eq!(s.guard.stats().dropped[DropReason::Acl as usize], 2);
    }

    #[test]
    fn options_get_200_until_the_drain_and_503_after_so_a_dispatcher_moves_on() {
        let mut s = SansIo::new(BEHIND_PROXY);
        let proxy = udp(PROXY);
        assert_eq!(s.send(proxy, &request("OPTIONS", 1, proxy, None)), [200]);
        // The switch alone, before the transport's loop has seen the drain begin: the next
        // request is refused all the same.
        s.drain.start();
        assert_eq!(s.send(proxy, &request("OPTIONS", 2, proxy, None)), [503]);
        assert!(s.guard.draining());
        let invite = request("INVITE", 3, proxy, Some("192.0.2.1:5062"));
        assert_eq!(s.send(proxy, &invite), [503]);
        assert!(s.ep.poll_event().is_none());
    }
}
