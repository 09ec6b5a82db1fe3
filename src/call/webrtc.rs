//! A DTLS-SRTP leg's transport, run off the media tick: the leg hands its STUN and DTLS
//! datagrams over a bounded queue ([`DtlsLink`]); this task feeds them with `now` to the
//! sans-IO [`WebRtcTransport`] (ICE-lite and DTLS), sends what it answers from the leg's own
//! RTP socket, and gives the leg its keys and the peer's address once the handshake is done.
//! A transport that fails, or whose peer stops proving consent, ends the leg with a reason.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::engine::LegSender;
use crate::media::leg::{ControlDatagram, DtlsLink, LegCommand, LegEvent};
use crate::sdp::{SrtpKeys, WebRtcLocal, WebRtcRemote};
use crate::webrtc::{
    Certificate, Credentials, Event, FailReason, TransportConfig, WebRtcTransport,
};

/// Datagrams a leg may queue for its transport: a handshake is a handful of flights, and a
/// peer's checks come every few hundred milliseconds at most.
const QUEUE: usize = 64;

/// What every WebRTC leg shares.
#[derive(Debug)]
pub struct WebRtcContext {
    /// The certificate every handshake presents.
    pub certificate: Arc<Certificate>,
    /// The address our ICE candidate announces (None: the media address).
    pub public_ip: Option<IpAddr>,
    /// How long ICE and the handshake may take.
    pub connect_timeout: Duration,
    /// The codecs WebRTC calls may use, in our order.
    pub codecs: Vec<crate::sdp::Codec>,
    /// Where sessions and refused datagrams are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl WebRtcContext {
    /// Our side of one call's transport, for media at `media`: fresh ICE credentials.
    pub fn local(&self, media: SocketAddr) -> Result<WebRtcLocal, String> {
        let creds = Credentials::random().map_err(|e| e.to_string())?;
        Ok(WebRtcLocal {
            ufrag: creds.ufrag,
            pwd: creds.pwd,
            fingerprint: self.certificate.fingerprint(),
            candidate: SocketAddr::new(self.public_ip.unwrap_or(media.ip()), media.port()),
            codecs: self.codecs.clone(),
        })
    }

    /// Starts the transport of a leg whose offer was `remote` and answer `local`, sending
    /// from `socket` (a handle on the leg's RTP socket). The leg's queue comes back at once;
    /// the leg itself is given (through `leg`) once it is on its worker, and its failures
    /// are reported on `events` as the leg's own.
    pub fn start(
        &self,
        local: &WebRtcLocal,
        remote: &WebRtcRemote,
        socket: UdpSocket,
        events: mpsc::UnboundedSender<LegEvent>,
    ) -> Result<(DtlsLink, oneshot::Sender<LegSender>), String> {
        let mut config = TransportConfig::new(
            Credentials {
                ufrag: local.ufrag.clone(),
                pwd: local.pwd.clone(),
            },
            Credentials {
                ufrag: remote.ufrag.clone(),
                pwd: remote.pwd.clone(),
            },
            remote.role,
            remote.fingerprint,
            self.certificate.clone(),
        );
        config.check_timeout = self.connect_timeout;
        config.connect_timeout = self.connect_timeout;
        let transport = WebRtcTransport::new(config, Instant::now()).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (leg_tx, leg_rx) = oneshot::channel();
        tokio::spawn(drive(
            transport,
            socket,
            rx,
            leg_rx,
            events,
            self.metrics.clone(),
        ));
        Ok((DtlsLink(tx), leg_tx))
    }
}

/// Runs one leg's transport until the leg goes (its queue closes) or the transport ends.
async fn drive(
    mut transport: WebRtcTransport,
    socket: UdpSocket,
    mut datagrams: mpsc::Receiver<ControlDatagram>,
    leg: oneshot::Receiver<LegSender>,
    events: mpsc::UnboundedSender<LegEvent>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let Ok(leg) = leg.await else {
        return;
    };
    let mut counted = Rejected::default();
    // Keys from a handshake that finished before ICE selected an address.
    let mut held = None;
    loop {
        let deadline = transport.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            d = datagrams.recv() => match d {
                Some(d) => transport.handle_datagram(Instant::now(), d.from, &d.bytes),
                None => return,
            },
            _ = sleep_until(deadline) => transport.handle_timeout(Instant::now()),
        }
        counted.count(&transport, &metrics);
        while let Some(t) = transport.poll_transmit() {
            // Non-blocking: a full socket buffer loses a flight, which DTLS retransmits.
            let _ = socket.send_to(&t.bytes, t.to);
        }
        while let Some(event) = transport.poll_event() {
            match event {
                Event::Selected(addr) => {
                    tracing::debug!(%addr, "ICE selected the peer's address");
                }
                Event::Connected(keys) => held = Some(keys),
                Event::Failed(why) => {
                    tracing::info!(%why, "WebRTC transport failed");
                    metrics.webrtc_session(match why {
                        FailReason::IceTimeout => "ice_timeout",
                        FailReason::HandshakeTimeout => "handshake_timeout",
                        FailReason::Handshake(_) => "handshake_failed",
                    });
                    let _ = events.send(LegEvent::TransportFailed(why.to_string()));
                    return;
                }
                Event::ConsentLost => {
                    tracing::info!("the WebRTC peer's consent lapsed");
                    metrics.webrtc_session("consent_lost");
                    let _ = events.send(LegEvent::TransportFailed("ICE consent lost".into()));
                    return;
                }
            }
        }
        if let Some((keys, remote)) = release(&mut held, transport.selected()) {
            tracing::info!(suite = keys.suite.sdp_name(), %remote, "DTLS-SRTP connected");
            metrics.webrtc_session("connected");
            leg.send(LegCommand::Secured {
                keys: Box::new(SrtpKeys {
                    ours: keys.local.clone(),
                    theirs: crate::rtp::srtp::CryptoAttr::new(1, keys.remote.clone()),
                }),
                remote,
            });
        }
    }
}

/// What a transport refused so far and has been counted in `/metrics`.
#[derive(Default)]
struct Rejected {
    stun: u64,
    dtls: u64,
}

impl Rejected {
    /// Counts what the transport refused since the last call.
    fn count(&mut self, t: &WebRtcTransport, metrics: &crate::metrics::Metrics) {
        let c = t.counters();
        let stun = c.ice.bad_request + c.ice.unauthorized + c.ice.role_conflict;
        let dtls = c.dtls_unvalidated + c.dtls_malformed;
        if stun != self.stun || dtls != self.dtls {
            metrics.webrtc_rejected(
                stun.saturating_sub(self.stun),
                dtls.saturating_sub(self.dtls),
            );
            self.stun = stun;
            self.dtls = dtls;
        }
    }
}

/// The keys and where to send, once both are known. A browser starts DTLS on its first
/// answered check and nominates later, so the handshake may finish before ICE selects an
/// address; its keys wait for the selection rather than being lost.
fn release<K>(held: &mut Option<K>, selected: Option<SocketAddr>) -> Option<(K, SocketAddr)> {
    let remote = selected?;
    held.take().map(|keys| (keys, remote))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::release;
    use std::net::SocketAddr;

    #[test]
    fn keys_wait_for_the_selected_address_and_go_once() {
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut held = None::<u8>;
        assert_eq!(release(&mut held, Some(addr)), None, "no keys yet");
        held = Some(7);
        assert_eq!(release(&mut held, None), None, "no address yet");
        assert_eq!(held, Some(7), "the keys are kept");
        assert_eq!(release(&mut held, Some(addr)), Some((7, addr)));
        assert_eq!(release(&mut held, Some(addr)), None, "given once");
    }
}
