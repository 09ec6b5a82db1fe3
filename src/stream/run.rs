//! A stream as its owner (a call's task, a room) runs it: started from a
//! [`StreamRequest`], announced on the event bus when its socket is up and when it ends,
//! and summed up for the call's record. The call task and the room use this one piece, so
//! a stream's events and record read the same whoever owns it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{
    spawn_watched, EndReason, StartInfo, StreamConfig, StreamHandle, StreamRequest, StreamStats,
};
use crate::events::{Event, EventBus};

/// Whose audio a stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A call (its Call-ID).
    Call(String),
    /// A conference room (its name).
    Room(String),
}

/// A finished stream, as the call's record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamRecord {
    /// The stream's id (Twilio's `streamSid`).
    pub stream_id: String,
    /// Where it went.
    pub url: String,
    /// Why it ended: `app_closed`, `hangup`, `stopped`, `connect_failed`, `timeout`,
    /// `error`.
    pub reason: String,
    /// Milliseconds from its start to its end.
    pub duration_ms: u64,
    /// Messages written to the socket.
    pub sent: u64,
    /// Messages dropped because the application did not keep up.
    pub dropped: u64,
}

/// A stream running for its owner.
#[derive(Debug)]
pub struct Running {
    id: u64,
    stream_id: String,
    request: StreamRequest,
    owner: Owner,
    started: Instant,
    stopping: bool,
    end: JoinHandle<EndReason>,
    connected: Option<oneshot::Receiver<()>>,
    stats: Arc<StreamStats>,
}

/// What [`Running::next`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The socket is up (announced).
    Connected,
    /// The stream ended; finish it with [`Running::finish`].
    Ended(EndReason),
}

impl Running {
    /// Starts stream number `id` of its owner: the socket task is spawned and its media
    /// side returned, for the owner's leg or room to feed.
    pub fn start(
        id: u64,
        owner: Owner,
        request: &StreamRequest,
        start: StartInfo,
    ) -> (Running, StreamHandle) {
        let config = StreamConfig::new(&request.url, request.format, start);
        let stream_id = config.stream_id.clone();
        let (handle, end, connected) = spawn_watched(config);
        let running = Running {
            id,
            stream_id,
            request: request.clone(),
            owner,
            started: Instant::now(),
            stopping: false,
            end,
            connected: Some(connected),
            stats: handle.shared_stats(),
        };
        (running, handle)
    }

    /// The owner's number for the stream.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The stream's id on the wire.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Its owner stops it: the end that follows is `stopped`, not `hangup`.
    pub fn stopping(&mut self) {
        self.stopping = true;
    }

    /// Waits for the socket to come up (announced as `stream_started`) or the stream to end.
    pub async fn next(&mut self, bus: &EventBus) -> Progress {
        if let Some(up) = self.connected.as_mut() {
            tokio::select! {
                r = up => {
                    self.connected = None;
                    if r.is_ok() {
                        bus.publish(self.started_event());
                        return Progress::Connected;
                    }
                }
                r = &mut self.end => return Progress::Ended(ended(r)),
            }
        }
        Progress::Ended(ended((&mut self.end).await))
    }

    /// The stream ended for `reason`: announced as `stream_stopped` and summed up.
    pub fn finish(self, reason: EndReason, bus: &EventBus) -> StreamRecord {
        let reason = match reason {
            EndReason::Hangup if self.stopping => "stopped",
            r => r.as_str(),
        };
        let record = StreamRecord {
            stream_id: self.stream_id,
            url: self.request.url,
            reason: reason.to_string(),
            duration_ms: self.started.elapsed().as_millis() as u64,
            sent: self.stats.sent.load(Ordering::Relaxed),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
        };
        let (call_id, room) = owner_fields(&self.owner);
        tracing::info!(stream = %record.stream_id, reason, sent = record.sent,
            dropped = record.dropped, "stream ended");
        bus.publish(Event::StreamStopped {
            stream_id: record.stream_id.clone(),
            call_id,
            room,
            reason: record.reason.clone(),
            duration_ms: record.duration_ms,
            dropped: record.dropped,
        });
        record
    }

    /// Waits at most `limit` for a stream whose media side is gone to end, then finishes
    /// it (a stream still going after that is reported as a hangup and left to close).
    pub async fn wind_up(mut self, limit: std::time::Duration, bus: &EventBus) -> StreamRecord {
        let reason = match tokio::time::timeout(limit, &mut self.end).await {
            Ok(r) => ended(r),
            Err(_) => EndReason::Hangup,
        };
        self.finish(reason, bus)
    }

    fn started_event(&self) -> Event {
        let request = &self.request;
        let (call_id, room) = owner_fields(&self.owner);
        Event::StreamStarted {
            stream_id: self.stream_id.clone(),
            call_id,
            room,
            url: request.url.clone(),
            format: match request.format {
                super::Format::Twilio => "twilio".to_string(),
                super::Format::L16 { rate } => format!("l16/{rate}"),
            },
            track: request.track.as_str().to_string(),
            bidirectional: request.bidirectional,
        }
    }
}

fn owner_fields(owner: &Owner) -> (Option<String>, Option<String>) {
    match owner {
        Owner::Call(c) => (Some(c.clone()), None),
        Owner::Room(r) => (None, Some(r.clone())),
    }
}

/// A socket task that panicked or was aborted ended in error.
fn ended(r: Result<EndReason, tokio::task::JoinError>) -> EndReason {
    r.unwrap_or(EndReason::Error)
}
