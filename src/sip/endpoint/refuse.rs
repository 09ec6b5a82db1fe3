//! The guard's hook into the endpoint: answering a request the guard refused, and the load
//! figures its server-wide caps read.

use std::time::Instant;

use super::{tx_key, CallPhase, Endpoint};
use crate::error::Refusal;
use crate::sip::dialog::Peer;
use crate::sip::message::{
    classify_with, encode_response, push_header, refusal_to, Inbound, Method,
};

impl Endpoint {
    /// Answers the request in `bytes` with `refusal` (plus `Retry-After: retry_after` when
    /// given), statelessly: no transaction is kept for it. A retransmission of a request
    /// whose transaction exists (an INVITE accepted a moment ago, say) is handled as usual
    /// instead, so a limit reached in between cannot turn an accepted call into a refused one.
    pub fn refuse(
        &mut self,
        now: Instant,
        peer: Peer,
        bytes: &[u8],
        refusal: &Refusal,
        retry_after: Option<u32>,
    ) {
        match classify_with(bytes, peer.transport.is_byte_stream(), &mut self.ids) {
            Inbound::Request(r) => {
                if self.server_txs.contains_key(&tx_key(&r.ess, r.req.method)) {
                    return self.on_request(now, peer, *r);
                }
                if r.req.method == Method::Ack {
                    return;
                }
                let mut resp = refusal_to(&r.req, refusal, Some(&self.ids.token()));
                if let Some(secs) = retry_after {
                    push_header(&mut resp, "Retry-After", &secs.to_string());
                }
                push_header(&mut resp, "Server", &self.cfg.user_agent);
                self.send(peer, encode_response(&resp));
            }
            Inbound::Reject { response, .. } => self.send(peer, response),
            Inbound::Response(_) | Inbound::Drop { .. } => {}
        }
    }

    /// Calls whose initial INVITE has no final answer yet.
    pub fn pending_invite_count(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.phase == CallPhase::Early)
            .count()
    }
}
