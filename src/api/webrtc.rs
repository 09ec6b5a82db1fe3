//! `/api/webrtc` handlers: calls offered over HTTP in the style of WHIP (RFC 9725). A `POST`
//! of an SDP offer to a dialplan number answers `201 Created` with the call's SDP answer and
//! the session's `Location`; a `DELETE` of that location hangs up. The call itself is an
//! ordinary call ([`crate::call::whip`]).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiState, ErrorBody};
use crate::call::whip::{WhipError, MAX_OFFER_BYTES};

/// The media type of an offer and of its answer.
const SDP: &str = "application/sdp";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Calls `number` with the SDP offer in the body.
#[utoipa::path(
    post,
    path = "/api/webrtc/{number}",
    tag = "webrtc",
    params(("number" = String, Path, description = "A dialplan number, as an INVITE would dial it")),
    request_body(content = String, content_type = "application/sdp",
        description = "The offer: one audio stream, DTLS-SRTP, ICE candidates gathered"),
    responses(
        (status = 201, description = "The answer SDP; `Location` names the session", content_type = "application/sdp", body = String),
        (status = 400, description = "Malformed offer, or one without a DTLS fingerprint or a common codec", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such number, or WebRTC is off", body = ErrorBody),
        (status = 415, description = "The body is not application/sdp", body = ErrorBody),
        (status = 429, description = "Too many sessions from this address", body = ErrorBody),
        (status = 503, description = "Busy, draining or out of media ports", body = ErrorBody),
        (status = 504, description = "The dialplan did not answer in time", body = ErrorBody),
    )
)]
pub(crate) async fn offer(
    State(state): State<ApiState>,
    Path(number): Path<String>,
    request: Request,
) -> Response {
    let Some(whip) = state.whip.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "WebRTC calls are off ([webrtc] enabled)",
        );
    };
    let is_sdp = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(SDP));
    if !is_sdp {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as application/sdp",
        );
    }
    // Without the peer's address (a router driven in a test) the call comes from nowhere.
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    let body = match axum::body::to_bytes(request.into_body(), MAX_OFFER_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the offer is larger than {MAX_OFFER_BYTES} bytes"),
            )
        }
    };
    if state.drain.is_draining() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is draining");
    }
    match whip.offer(&number, &body, source).await {
        Ok(answer) => {
            let location = format!("/api/webrtc/sessions/{}", answer.id);
            let mut response = Response::new(Body::from(answer.sdp));
            *response.status_mut() = StatusCode::CREATED;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
            if let Ok(v) = HeaderValue::from_str(&location) {
                headers.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&answer.call_id) {
                headers.insert("x-call-id", v);
            }
            response
        }
        Err(e) => {
            tracing::info!(number = %number, %source, error = %e, "WebRTC offer refused");
            state.metrics.webrtc_refused(match e {
                WhipError::TooMany(_) => "too_many",
                WhipError::Timeout(_) => "timeout",
                WhipError::Refused { .. } => "refused",
                WhipError::BadNumber(_) | WhipError::BadOffer => "bad_offer",
                WhipError::Gone => "gone",
            });
            error(status_of(&e), e.to_string())
        }
    }
}

/// The HTTP status that says what a refused offer's SIP status said.
fn status_of(e: &WhipError) -> StatusCode {
    match e {
        WhipError::BadNumber(_) | WhipError::BadOffer => StatusCode::BAD_REQUEST,
        WhipError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        WhipError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        WhipError::Gone => StatusCode::GONE,
        WhipError::Refused { code, .. } => match code {
            400 | 488 | 606 => StatusCode::BAD_REQUEST,
            401 | 407 => StatusCode::UNAUTHORIZED,
            403 => StatusCode::FORBIDDEN,
            404 | 484 | 604 => StatusCode::NOT_FOUND,
            415 => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
    }
}

/// Hangs up a session's call.
#[utoipa::path(
    delete,
    path = "/api/webrtc/sessions/{id}",
    tag = "webrtc",
    params(("id" = String, Path, description = "The session, from the offer's Location")),
    responses(
        (status = 200, description = "Hung up"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub(crate) async fn hang_up(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.whip.as_ref().map(|w| w.hang_up(&id)) {
        Some(true) => StatusCode::OK.into_response(),
        _ => error(StatusCode::NOT_FOUND, format!("no WebRTC session {id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_the_http_status_that_says_the_same() {
        let refused = |code| WhipError::Refused {
            code,
            reason: String::new(),
            warning: None,
        };
        assert_eq!(status_of(&refused(404)), StatusCode::NOT_FOUND);
        assert_eq!(status_of(&refused(488)), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&refused(400)), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&refused(486)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(&refused(503)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of(&WhipError::TooMany([127, 0, 0, 1].into())),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
