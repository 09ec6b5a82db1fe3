//! `/api/recordings` handlers: list, metadata, audio, delete.
//!
//! A recording still being written (`state: recording`) is listed and described, but its
//! audio and its deletion answer 409: until it is finished the audio is `ID.wav.part`,
//! owned by the writer, and `ID.wav` does not exist yet.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE,
    RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize, Serializer};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};

use super::index::{parse_rfc3339_ms, ListFilter};
use super::range::{etag, if_none_match, if_range_allows, parse_range, RangeAnswer};
use super::{ApiError, ApiState, ErrorBody};
use crate::media::record::sidecar::is_safe_id;
use crate::media::record::{names, Sidecar, SidecarState};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page; larger `limit`s are reduced to it.
pub const MAX_LIMIT: usize = 1000;

/// Read size when streaming audio: large enough for few syscalls, small enough per request.
const STREAM_CHUNK: usize = 64 * 1024;

/// Query of `GET /api/recordings`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Case-insensitive substring of the caller (the sidecar's `from`).
    pub caller: Option<String>,
    /// Case-insensitive substring of the callee (the sidecar's `to`).
    pub callee: Option<String>,
    /// Exact conference room name.
    pub room: Option<String>,
    /// Recordings started at or after this RFC 3339 time (or date, midnight UTC).
    /// Encode `+` in offsets as `%2B`.
    pub from: Option<String>,
    /// Recordings started before this RFC 3339 time (or date, midnight UTC); exclusive.
    pub to: Option<String>,
    /// Page size, default 50; values above 1000 are reduced to 1000.
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<usize>,
    /// Matches to skip, newest first; default 0.
    pub offset: Option<usize>,
}

impl ListParams {
    /// The index filter these parameters ask for.
    pub fn to_filter(&self) -> Result<ListFilter, ApiError> {
        let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
            match v.as_deref().filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => parse_rfc3339_ms(s).map(Some).ok_or_else(|| {
                    ApiError::BadRequest(format!("`{name}` is not an RFC 3339 time: {s:?}"))
                }),
            }
        };
        Ok(ListFilter {
            caller: text(&self.caller),
            callee: text(&self.callee),
            room: text(&self.room),
            since_ms: time("from", &self.from)?,
            until_ms: time("to", &self.to)?,
            offset: self.offset.unwrap_or(0),
            limit: self.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT),
        })
    }
}

/// Answer of `GET /api/recordings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingList {
    /// Recordings matching the filters, across all pages.
    pub total: usize,
    /// This page, newest first.
    #[serde(serialize_with = "serialize_sidecars")]
    #[schema(value_type = Vec<super::openapi::Recording>)]
    pub items: Vec<Arc<Sidecar>>,
}

fn serialize_sidecars<S: Serializer>(items: &[Arc<Sidecar>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(|i| &**i))
}

/// Lists recordings, newest first.
#[utoipa::path(
    get,
    path = "/api/recordings",
    tag = "recordings",
    params(ListParams),
    responses(
        (status = 200, description = "One page of matching recordings", body = RecordingList),
        (status = 400, description = "Unknown parameter or malformed value", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<RecordingList>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = params.to_filter()?;
    refresh_if_due(&state).await;
    let page = state.index.list(&filter);
    Ok(Json(RecordingList {
        total: page.total,
        items: page.items,
    }))
}

/// Describes one recording.
#[utoipa::path(
    get,
    path = "/api/recordings/{id}",
    tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 200, description = "The recording's sidecar", body = super::openapi::Recording),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such recording", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let sidecar = lookup(&state, id).await?;
    Ok(Json(&*sidecar).into_response())
}

/// Serves a recording's WAV, whole or one byte range.
#[utoipa::path(
    get,
    path = "/api/recordings/{id}/audio",
    tag = "recordings",
    params(
        ("id" = String, Path, description = "Recording id"),
        ("Range" = Option<String>, Header, description = "One byte range: `bytes=0-99`, `bytes=100-`, `bytes=-500`; of several, the first satisfiable one is served"),
        ("If-None-Match" = Option<String>, Header, description = "ETag from an earlier answer; 304 if unchanged"),
        ("If-Range" = Option<String>, Header, description = "ETag; the Range applies only if it still matches"),
    ),
    responses(
        (status = 200, description = "The whole WAV", content_type = "audio/wav", body = [u8],
            headers(("ETag" = String), ("Accept-Ranges" = String), ("Content-Length" = u64))),
        (status = 206, description = "One byte range of the WAV", content_type = "audio/wav", body = [u8],
            headers(("Content-Range" = String, description = "bytes START-END/LEN"), ("ETag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such recording, or its audio file is missing", body = ErrorBody),
        (status = 409, description = "Still recording", body = ErrorBody),
        (status = 416, description = "Range outside the file", headers(("Content-Range" = String, description = "bytes */LEN"))),
    )
)]
pub(crate) async fn audio(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let FinishedWav {
        path,
        mut file,
        len,
        etag: tag,
        ..
    } = finished_wav(&state, id).await?;

    let mut response = Response::builder()
        .header(ETAG, &tag)
        .header(ACCEPT_RANGES, "bytes");
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };

    if header(IF_NONE_MATCH).is_some_and(|v| if_none_match(v, &tag)) {
        return build(response.status(StatusCode::NOT_MODIFIED), Body::empty());
    }
    let range_applies = header(IF_RANGE).is_none_or(|v| if_range_allows(v, &tag));
    let answer = match header(RANGE) {
        Some(r) if range_applies => parse_range(r, len),
        _ => RangeAnswer::Full,
    };
    match answer {
        RangeAnswer::Unsatisfiable => build(
            response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(CONTENT_RANGE, format!("bytes */{len}")),
            Body::empty(),
        ),
        RangeAnswer::Full => {
            response = response
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, "audio/wav")
                .header(CONTENT_LENGTH, len);
            let stream = ReaderStream::with_capacity(file.take(len), STREAM_CHUNK);
            build(response, Body::from_stream(stream))
        }
        RangeAnswer::Partial { start, end } => {
            let count = end - start + 1;
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
            response = response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(CONTENT_TYPE, "audio/wav")
                .header(CONTENT_LENGTH, count)
                .header(CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            let stream = ReaderStream::with_capacity(file.take(count), STREAM_CHUNK);
            build(response, Body::from_stream(stream))
        }
    }
}

/// A finished recording's WAV, opened.
pub(crate) struct FinishedWav {
    /// Its sidecar.
    pub sidecar: Arc<Sidecar>,
    /// `dir/ID.wav`.
    pub path: std::path::PathBuf,
    /// The open file.
    pub file: tokio::fs::File,
    /// Its length in bytes.
    pub len: u64,
    /// Its ETag, from the open file's own metadata.
    pub etag: String,
}

/// Opens a finished recording's WAV: 409 while it is being written, 404 when the file is
/// missing or is not a regular file.
pub(crate) async fn finished_wav(
    state: &ApiState,
    id: Result<Path<String>, PathRejection>,
) -> Result<FinishedWav, ApiError> {
    let sidecar = lookup(state, id).await?;
    if sidecar.state == SidecarState::Recording {
        return Err(ApiError::Conflict(
            "recording in progress; audio is available when it ends".into(),
        ));
    }
    // Built from the checked id, never from the sidecar's own `file` field, which is data
    // read from disk.
    let path = names::wav_path(&state.dir, &sidecar.id);
    let missing = || ApiError::NotFound("audio file missing".into());
    let link_meta = match tokio::fs::symlink_metadata(&path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(ApiError::Internal(format!("{}: {e}", path.display()))),
    };
    // A link could point anywhere; only a regular file in the folder is served.
    if !link_meta.file_type().is_file() {
        return Err(missing());
    }
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(ApiError::Internal(format!("{}: {e}", path.display()))),
    };
    // The open file's own metadata, so length and ETag describe the bytes we send.
    let meta = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let len = meta.len();
    let etag = etag(
        std::os::unix::fs::MetadataExt::ino(&meta),
        len,
        meta.modified().ok(),
    );
    Ok(FinishedWav {
        sidecar,
        path,
        file,
        len,
        etag,
    })
}

/// Deletes a recording's WAV and sidecar.
#[utoipa::path(
    delete,
    path = "/api/recordings/{id}",
    tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such recording", body = ErrorBody),
        (status = 409, description = "Still recording", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let sidecar = lookup(&state, id).await?;
    if sidecar.state == SidecarState::Recording {
        return Err(ApiError::Conflict(
            "recording in progress; stop it before deleting".into(),
        ));
    }
    // The WAV goes first: if that fails nothing has changed and the request can be
    // retried; if the sidecar then fails, a retry finds the recording and finishes.
    for path in [
        names::wav_path(&state.dir, &sidecar.id),
        Sidecar::path(&state.dir, &sidecar.id),
    ] {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApiError::Internal(format!("{}: {e}", path.display()))),
        }
    }
    state.index.remove(&sidecar.id);
    tracing::info!(id = %sidecar.id, "recording deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The indexed sidecar of a path id, refusing ids that are not plain file stems.
async fn lookup(
    state: &ApiState,
    id: Result<Path<String>, PathRejection>,
) -> Result<Arc<Sidecar>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if !is_safe_id(&id) {
        return Err(ApiError::BadRequest(
            "recording ids are letters, digits, `-` and `_`".into(),
        ));
    }
    // It may have been written or finished since the last look at the folder.
    refresh_if_due(state).await;
    state
        .index
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no recording {id}")))
}

/// Lets the index catch up with the folder, off the async threads; failures are logged
/// and the request is answered from the index as it is.
async fn refresh_if_due(state: &ApiState) {
    let now = Instant::now();
    if !state.index.refresh_due(now) {
        return;
    }
    let index = state.index.clone();
    match tokio::task::spawn_blocking(move || index.refresh_if_due(now)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "recording index refresh failed"),
        Err(e) => tracing::warn!(error = %e, "recording index refresh task failed"),
    }
}

fn build(response: axum::http::response::Builder, body: Body) -> Result<Response, ApiError> {
    response
        .body(body)
        .map_err(|e| ApiError::Internal(format!("building response: {e}")))
}
