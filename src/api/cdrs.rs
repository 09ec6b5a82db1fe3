//! `GET /api/cdrs`: one day's call detail records, newest first, optionally filtered by
//! caller, callee and outcome.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::recordings::{DEFAULT_LIMIT, MAX_LIMIT};
use super::{ApiError, ApiState, ErrorBody};
use crate::cdr::{read_day, CdrDate, CdrError, CdrPage};

/// Query of `GET /api/cdrs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CdrParams {
    /// The UTC day, `YYYY-MM-DD`; default today.
    pub date: Option<String>,
    /// Case-insensitive substring of the caller (the record's `from`).
    pub caller: Option<String>,
    /// Case-insensitive substring of the callee (the record's `to`).
    pub callee: Option<String>,
    /// `answered`, `unanswered`, or one `cause` such as `caller_bye` or `refused`.
    pub outcome: Option<String>,
    /// Page size, default 50; values above 1000 are reduced to 1000.
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<usize>,
    /// Records to skip, newest first; default 0.
    pub offset: Option<usize>,
}

/// Lists one day's CDRs.
#[utoipa::path(
    get,
    path = "/api/cdrs",
    tag = "cdrs",
    params(CdrParams),
    responses(
        (status = 200, description = "One page of the day's records, newest first", body = CdrPage),
        (status = 400, description = "Malformed date or parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "CDRs are turned off (`[cdr] dir` is empty)", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<CdrParams>, QueryRejection>,
) -> Result<Json<CdrPage>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Some(dir) = state.cdr_dir.clone() else {
        return Err(ApiError::NotFound("CDRs are turned off".into()));
    };
    let date = match params.date.as_deref() {
        Some(d) => CdrDate::parse(d).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => CdrDate::of(std::time::SystemTime::now()),
    };
    let offset = params.offset.unwrap_or(0);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let filter = CdrFilter::of(&params);
    let page = tokio::task::spawn_blocking(move || {
        if filter.is_empty() {
            return read_day(&dir, &date, offset, limit);
        }
        let mut day = read_day(&dir, &date, 0, usize::MAX)?;
        day.items.retain(|r| filter.matches(r));
        day.total = day.items.len();
        day.items = day.items.into_iter().skip(offset).take(limit).collect();
        Ok(day)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("CDR read task: {e}")))?;
    match page {
        Ok(p) => Ok(Json(p)),
        Err(e @ CdrError::BadDate(_)) => Err(ApiError::BadRequest(e.to_string())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The record filters of a query, lower-cased; empty values are no filter.
#[derive(Debug, Default, PartialEq)]
struct CdrFilter {
    caller: Option<String>,
    callee: Option<String>,
    outcome: Option<String>,
}

impl CdrFilter {
    fn of(p: &CdrParams) -> CdrFilter {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase)
        };
        CdrFilter {
            caller: text(&p.caller),
            callee: text(&p.callee),
            outcome: text(&p.outcome),
        }
    }

    fn is_empty(&self) -> bool {
        *self == CdrFilter::default()
    }

    fn matches(&self, record: &serde_json::Value) -> bool {
        let field = |k: &str| record.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let contains = |k: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| field(k).to_lowercase().contains(w))
        };
        let answered = record.get("answered_at").is_some_and(|v| !v.is_null());
        let outcome = match self.outcome.as_deref() {
            None => true,
            Some("answered") => answered,
            Some("unanswered") => !answered,
            Some(cause) => field("cause") == cause,
        };
        contains("from", &self.caller) && contains("to", &self.callee) && outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let rec = serde_json::json!({
            "from": "\"Alice\" <sip:alice@example.com>;tag=1",
            "to": "ivr",
            "answered_at": "2026-01-01T00:00:00.000Z",
            "cause": "caller_bye",
        });
        let f = |caller: &str, callee: &str, outcome: &str| {
            CdrFilter::of(&CdrParams {
                caller: Some(caller.into()),
                callee: Some(callee.into()),
                outcome: Some(outcome.into()),
                ..CdrParams::default()
            })
        };
        assert!(f("", "", "").is_empty());
        assert!(f("ALICE", "iv", "answered").matches(&rec));
        assert!(f("", "", "caller_bye").matches(&rec));
        assert!(!f("bob", "", "").matches(&rec));
        assert!(!f("", "echo", "").matches(&rec));
        assert!(!f("", "", "unanswered").matches(&rec));
        assert!(!f("", "", "refused").matches(&rec));
        let missed =
            serde_json::json!({"from": "a", "to": "b", "answered_at": null, "cause": "cancelled"});
        assert!(f("", "", "unanswered").matches(&missed));
    }
}
