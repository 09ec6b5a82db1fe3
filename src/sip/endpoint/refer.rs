//! Blind transfer from our side (RFC 3515): the REFER we send, its final answer, and the
//! NOTIFYs of the implicit subscription that report the transfer's progress.

use std::time::Instant;

use super::{CallHandle, ClientPurpose, CommandError, Endpoint, Event, TxKey};
use crate::error::Refusal;
use crate::sip::dialog::{content_type, Peer};
use crate::sip::message::{
    header_value, push_header, refusal_to, response_to, Method, ParsedRequest,
};
use crate::sip::refer::{refer_event_id, sipfrag_status, subscription_terminated};

impl Endpoint {
    /// A NOTIFY in a dialog: progress of a transfer we asked for (RFC 3515 §2.4.4).
    pub(super) fn on_notify(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        call: CallHandle,
        r: ParsedRequest,
    ) {
        let id = header_value(&r.req.headers, "Event").and_then(refer_event_id);
        let mut c = self.calls.get_mut(&call);
        // Without an id RFC 3515 §2.4.6 means the dialog's first REFER; we take the oldest one
        // still subscribed, which is the same unless several REFERs overlap.
        let sub = c.as_deref_mut().and_then(|c| match id {
            Some(Some(id)) => c.refer_subs.iter().position(|s| *s == id),
            Some(None) if !c.refer_subs.is_empty() => Some(0),
            _ => None,
        });
        let (Some(c), Some(sub)) = (c, sub) else {
            // Not a subscription of ours: RFC 6665 §4.1.3.
            let resp = refusal_to(&r.req, &Refusal::NoSuchSubscription, None);
            return self.answer_non_invite(now, peer, key, resp);
        };
        let terminated =
            header_value(&r.req.headers, "Subscription-State").is_some_and(subscription_terminated);
        if terminated {
            c.refer_subs.remove(sub);
        }
        // A body we cannot read still gets 200: a non-2xx would end the subscription at the
        // notifier (RFC 6665 §4.2.2) and we would never learn the transfer's outcome.
        let is_sipfrag = content_type(&r.req.headers).is_none_or(|ct| ct == "message/sipfrag");
        let status = if is_sipfrag {
            sipfrag_status(&r.req.body).unwrap_or(0)
        } else {
            0
        };
        let report = !c.ended;
        let resp = response_to(&r.req, 200, "OK", None);
        self.answer_non_invite(now, peer, key, resp);
        tracing::debug!(call = call.0, status, terminated, "transfer progress");
        if report {
            self.events.push_back(Event::TransferProgress {
                call,
                status,
                terminated,
            });
        }
    }

    /// Asks the peer to call `target` instead (blind transfer, RFC 3515): an in-dialog REFER
    /// with `Refer-To: <target>` and our URI in Referred-By. `target` must be a `sip:`,
    /// `sips:` or `tel:` URI. The answer comes as [`Event::ReferAnswered`], the transfer's
    /// progress as [`Event::TransferProgress`].
    pub fn refer(
        &mut self,
        now: Instant,
        call: CallHandle,
        target: &str,
    ) -> Result<(), CommandError> {
        let target = crate::sip::refer::validate_target(target)?;
        let (mut req, peer, cseq) = self.dialog_request(call, Method::Refer, true, |_| true)?;
        push_header(&mut req, "Refer-To", &format!("<{target}>"));
        if let Some(c) = self.calls.get_mut(&call) {
            let referred_by = format!("<{}>", c.dialog.local_uri());
            push_header(&mut req, "Referred-By", &referred_by);
            // The subscription exists from now on: its first NOTIFY may overtake the 202.
            c.refer_subs.push(cseq);
        }
        tracing::info!(call = call.0, %target, "sending REFER");
        self.start_client(now, call, ClientPurpose::Refer { cseq }, peer, req);
        Ok(())
    }

    /// Reports the final answer to the REFER with CSeq `cseq`; without a 2xx no subscription
    /// was created.
    pub(super) fn refer_answered(&mut self, call: CallHandle, cseq: u32, code: u16) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !(200..300).contains(&code) {
            c.refer_subs.retain(|s| *s != cseq);
        }
        if !c.ended {
            self.events.push_back(Event::ReferAnswered { call, code });
        }
    }
}
