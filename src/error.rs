//! The top-level error of the server and its start-up, and the one place where errors
//! become SIP answers: [`SipStatus`], the [`Refusal`] causes and the [`reason_phrase`] table.

/// Anything that stops the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A TLS certificate, key or CA file that cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::sip::tls::TlsError),
    /// Scripts that do not compile (each `file:line:column: message`), or a dialplan rule
    /// naming a script that is not there.
    #[error("scripts refused:\n{}", .0.join("\n"))]
    Scripts(Vec<String>),
}

/// The SIP final status an error is answered with.
pub trait SipStatus {
    /// The status code and its reason phrase.
    fn status(&self) -> (u16, &'static str);

    /// The status code alone.
    fn code(&self) -> u16 {
        self.status().0
    }
}

/// The reason phrase we send with a status code: the one table of them (RFC 3261 §21, RFC
/// 4028, RFC 3265 for the codes outside it).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        c if c < 500 => "Request Failure",
        c if c < 600 => "Server Failure",
        _ => "Global Failure",
    }
}

/// Why we refuse a SIP request or end a call we have not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed; the text says how and is sent as the reason phrase.
    #[error("{0}")]
    Malformed(String),
    /// The source address may not use this server (its access lists).
    #[error("forbidden")]
    Forbidden,
    /// No call flow for the dialled user.
    #[error("no such user")]
    NoSuchUser,
    /// A method we do not take here.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `Accept` rules out the SDP we would answer with (RFC 3261 §21.4.7).
    #[error("our SDP is not acceptable")]
    NotAcceptable,
    /// A body that is not SDP.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A Request-URI scheme other than sip, sips, tel.
    #[error("unsupported URI scheme")]
    UnsupportedUriScheme,
    /// `Require` names an extension we lack (RFC 3261 §8.2.2.3).
    #[error("unsupported extension")]
    BadExtension,
    /// The session interval is below our Min-SE (RFC 4028 §9).
    #[error("session interval too small")]
    IntervalTooSmall,
    /// Nobody answers: the flow or the operator ended the call, or its time ran out.
    #[error("temporarily unavailable")]
    Unavailable,
    /// No dialog or transaction for the request.
    #[error("no such dialog or transaction")]
    NoSuchDialog,
    /// A NOTIFY for a subscription we do not hold (RFC 6665 §4.1.3).
    #[error("no such subscription")]
    NoSuchSubscription,
    /// The INVITE was cancelled, or its call ended, before an answer.
    #[error("request terminated")]
    Terminated,
    /// An SDP offer we cannot take.
    #[error("offer not acceptable")]
    OfferNotAcceptable,
    /// Glare: an offer of ours is still pending (RFC 3261 §14.2).
    #[error("an offer of ours is pending")]
    OurOfferPending,
    /// An offer of the peer's is still pending: retry later (RFC 3261 §14.2, RFC 3311 §5.2).
    #[error("an offer of the peer's is pending")]
    TheirOfferPending,
    /// A CSeq lower than the dialog has seen (RFC 3261 §12.2.2).
    #[error("CSeq out of order")]
    CSeqOutOfOrder,
    /// Something failed on our side, such as the call's script.
    #[error("internal error")]
    Internal,
    /// A method we do not know.
    #[error("method not implemented")]
    NotImplemented,
    /// Out of resources (media ports) or shutting down.
    #[error("service unavailable")]
    Overloaded,
    /// A SIP version other than 2.0.
    #[error("SIP version not supported")]
    VersionNotSupported,
}

impl SipStatus for Refusal {
    fn status(&self) -> (u16, &'static str) {
        let code = match self {
            Refusal::Malformed(_) => 400,
            Refusal::Forbidden => 403,
            Refusal::NoSuchUser => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::NotAcceptable => 406,
            Refusal::UnsupportedMediaType => 415,
            Refusal::UnsupportedUriScheme => 416,
            Refusal::BadExtension => 420,
            Refusal::IntervalTooSmall => 422,
            Refusal::Unavailable => 480,
            Refusal::NoSuchDialog => 481,
            Refusal::NoSuchSubscription => return (481, "Subscription Does Not Exist"),
            Refusal::Terminated => 487,
            Refusal::OfferNotAcceptable => 488,
            Refusal::OurOfferPending => 491,
            Refusal::TheirOfferPending | Refusal::Internal => 500,
            Refusal::CSeqOutOfOrder => return (500, "CSeq Out of Order"),
            Refusal::NotImplemented => 501,
            Refusal::Overloaded => 503,
            Refusal::VersionNotSupported => 505,
        };
        (code, reason_phrase(code))
    }
}

impl Refusal {
    /// The reason phrase sent: what is wrong with a malformed request, else the status's.
    pub fn phrase(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Refusal::Malformed(why) => why.clone().into(),
            _ => self.status().1.into(),
        }
    }
}

/// A dialog-creating request that lacks what a dialog needs is malformed.
impl SipStatus for crate::sip::dialog::DialogError {
    fn status(&self) -> (u16, &'static str) {
        (400, reason_phrase(400))
    }
}

/// An offer that does not parse is malformed.
impl SipStatus for crate::sdp::SdpError {
    fn status(&self) -> (u16, &'static str) {
        (400, reason_phrase(400))
    }
}

/// An offer we cannot answer (no common codec, no audio, a transport we lack).
impl SipStatus for crate::sdp::NegotiationError {
    fn status(&self) -> (u16, &'static str) {
        Refusal::OfferNotAcceptable.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_codes_and_phrases() {
        let cases = [
            (
                Refusal::Malformed("Bad Via header".into()),
                400,
                "Bad Via header",
            ),
            (Refusal::Forbidden, 403, "Forbidden"),
            (Refusal::NoSuchUser, 404, "Not Found"),
            (Refusal::BadExtension, 420, "Bad Extension"),
            (
                Refusal::NoSuchDialog,
                481,
                "Call/Transaction Does Not Exist",
            ),
            (
                Refusal::NoSuchSubscription,
                481,
                "Subscription Does Not Exist",
            ),
            (Refusal::OfferNotAcceptable, 488, "Not Acceptable Here"),
            (Refusal::OurOfferPending, 491, "Request Pending"),
            (Refusal::TheirOfferPending, 500, "Server Internal Error"),
            (Refusal::CSeqOutOfOrder, 500, "CSeq Out of Order"),
            (Refusal::Overloaded, 503, "Service Unavailable"),
            (Refusal::VersionNotSupported, 505, "Version Not Supported"),
        ];
        for (r, code, phrase) in cases {
            assert_eq!((r.code(), r.phrase().as_ref()), (code, phrase), "{r:?}");
        }
    }

    #[test]
    fn unlisted_codes_get_their_class_phrase() {
        assert_eq!(reason_phrase(499), "Request Failure");
        assert_eq!(reason_phrase(500), "Server Internal Error");
        assert_eq!(reason_phrase(599), "Server Failure");
        assert_eq!(reason_phrase(699), "Global Failure");
    }
}
