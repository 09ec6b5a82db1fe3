//! The server's event stream: everything an operator can watch happen to calls, rooms and
//! recordings, published once and fanned out to the HTTP event stream, webhooks and tests.
//!
//! Publishing never blocks and never fails: with no subscriber the event is dropped, and a
//! subscriber that falls more than the bus's capacity behind loses the oldest events (it is
//! told how many, see [`tokio::sync::broadcast::error::RecvError::Lagged`]). Events are
//! rare next to media frames (a talk spurt, a key press), so publishing from a media worker
//! is allowed; publishing per frame is not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// Events kept for a slow subscriber before it starts losing the oldest.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An INVITE arrived and a call began.
    CallStarted {
        /// SIP Call-ID.
        call_id: String,
        /// The From header.
        from: String,
        /// The dialled user.
        to: String,
    },
    /// The call was answered (200 OK sent).
    CallAnswered {
        /// SIP Call-ID.
        call_id: String,
    },
    /// The call ended.
    CallEnded {
        /// SIP Call-ID.
        call_id: String,
        /// Who or what ended it (`caller_bye`, `server_bye`, `cancelled`, `refused`, …).
        reason: String,
        /// The SIP status when the call was refused.
        code: Option<u16>,
    },
    /// A key press, however it was detected.
    Dtmf {
        /// SIP Call-ID.
        call_id: String,
        /// The key.
        digit: String,
        /// `rfc4733`, `inband` or `info`.
        method: String,
    },
    /// A room was created by its first member.
    RoomCreated {
        /// The room's name.
        room: String,
    },
    /// A room ended (its last member left, or it was ended).
    RoomEnded {
        /// The room's name.
        room: String,
    },
    /// A room was locked or unlocked.
    RoomLocked {
        /// The room's name.
        room: String,
        /// Locked now.
        locked: bool,
    },
    /// A member joined a room.
    MemberJoined {
        /// The room's name.
        room: String,
        /// The member's id in the room.
        member: u64,
        /// The member's call.
        call_id: String,
        /// Joined as moderator.
        moderator: bool,
        /// Joined muted.
        muted: bool,
    },
    /// A member left a room.
    MemberLeft {
        /// The room's name.
        room: String,
        /// The member's id in the room.
        member: u64,
        /// The member's call.
        call_id: String,
        /// `left`, `kicked`, `ended` or `hangup`.
        reason: String,
    },
    /// A member started or stopped talking.
    MemberTalking {
        /// The room's name.
        room: String,
        /// The member's id in the room.
        member: u64,
        /// Talking now.
        talking: bool,
    },
    /// A member was muted or unmuted.
    MemberMuted {
        /// The room's name.
        room: String,
        /// The member's id in the room.
        member: u64,
        /// Muted now.
        muted: bool,
    },
    /// A member was made deaf or could hear again.
    MemberDeaf {
        /// The room's name.
        room: String,
        /// The member's id in the room.
        member: u64,
        /// Deaf now.
        deaf: bool,
    },
    /// A call we placed is ringing at the far end.
    CallRinging {
        /// The SIP Call-ID.
        call_id: String,
    },
    /// A call we placed was refused or not answered.
    CallFailed {
        /// The SIP Call-ID.
        call_id: String,
        /// The final SIP status (408 when nobody answered in time).
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// A step of a call's flow: a verb started or ended, as the simulator's transcript
    /// shows it (`answered`, `played welcome`, `collected "12"`, `hung up`).
    CallStep {
        /// The SIP Call-ID.
        call_id: String,
        /// What happened.
        step: String,
    },
    /// A recording began.
    RecordingStarted {
        /// The recording's id.
        id: String,
        /// The call recorded, if it is a call recording.
        call_id: Option<String>,
        /// The room recorded, if it is a room recording.
        room: Option<String>,
    },
    /// A stream of a call's or a room's audio to an application is up (its socket connected
    /// and the start message went out).
    StreamStarted {
        /// The stream's id (Twilio's `streamSid`).
        stream_id: String,
        /// The call streamed, if it is a call's stream.
        call_id: Option<String>,
        /// The room streamed, if it is a room's stream.
        room: Option<String>,
        /// The application's URL.
        url: String,
        /// `twilio`, `l16/8000` or `l16/16000`.
        format: String,
        /// `inbound`, `outbound` or `both`.
        track: String,
        /// The application's audio is played to the caller.
        bidirectional: bool,
    },
    /// A stream ended (also one that never connected).
    StreamStopped {
        /// The stream's id.
        stream_id: String,
        /// The call streamed, if it is a call's stream.
        call_id: Option<String>,
        /// The room streamed, if it is a room's stream.
        room: Option<String>,
        /// `app_closed`, `hangup`, `stopped`, `connect_failed`, `timeout` or `error`.
        reason: String,
        /// Milliseconds from its start.
        duration_ms: u64,
        /// Messages dropped because the application did not keep up.
        dropped: u64,
    },
    /// A call spoke (`say`) or listened (`listen`).
    Speech {
        /// SIP Call-ID.
        call_id: String,
        /// `say` or `listen`.
        kind: String,
        /// The engine that synthesized or recognised (`flite`, `http`, `pocketsphinx`; empty
        /// when a `listen` ended without speech).
        engine: String,
        /// What was said, or recognised.
        text: String,
        /// A `say` came from the sentence cache (it was not synthesized again).
        #[serde(skip_serializing_if = "Option::is_none")]
        cached: Option<bool>,
        /// The choice the answer matched.
        #[serde(skip_serializing_if = "Option::is_none")]
        choice: Option<String>,
        /// The recogniser's confidence, 0 to 1.
        #[serde(skip_serializing_if = "Option::is_none")]
        confidence: Option<f64>,
        /// The key that ended a `listen`.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Why a `listen` ended: `speech`, `max-speech`, `key` or `no-input`.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Length of the caller's speech, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        speech_ms: Option<u64>,
        /// Milliseconds the recogniser took.
        #[serde(skip_serializing_if = "Option::is_none")]
        recognize_ms: Option<u64>,
    },
    /// Answering-machine detection reached its verdict.
    Amd {
        /// SIP Call-ID.
        call_id: String,
        /// `HUMAN`, `MACHINE`, `NOTSURE` or `HANGUP`.
        status: String,
        /// Why, as Asterisk's AMDCAUSE (`LONGGREETING-1540-1500`).
        cause: String,
        /// Length of the greeting heard, in milliseconds.
        greeting_ms: u64,
        /// Words counted.
        words: u64,
    },
    /// A recording was finalised (or discarded).
    RecordingFinished {
        /// The recording's id.
        id: String,
        /// Audio kept, in milliseconds.
        duration_ms: u64,
        /// Why it stopped.
        reason: String,
        /// Too short to keep.
        discarded: bool,
    },
}

/// An event with its place in the stream and when it was published.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Stamped {
    /// 1, 2, 3 … in publishing order, per server run.
    pub seq: u64,
    /// RFC 3339 time of publishing (UTC, milliseconds).
    pub time: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Where events are published; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Stamped>>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(DEFAULT_CAPACITY)
    }
}

impl EventBus {
    /// A bus keeping up to `capacity` events for each slow subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus {
            tx,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes an event to every current subscriber; never blocks.
    pub fn publish(&self, event: Event) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // No subscriber is not an error: nobody is watching.
        let _ = self.tx.send(Arc::new(Stamped { seq, time, event }));
    }

    /// Receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Stamped>> {
        self.tx.subscribe()
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_events_in_order_with_sequence_numbers() {
        let bus = EventBus::new(8);
        bus.publish(Event::RoomCreated { room: "x".into() });
        let mut rx = bus.subscribe();
        bus.publish(Event::CallAnswered {
            call_id: "a".into(),
        });
        bus.publish(Event::RoomEnded { room: "x".into() });
        let first = rx.try_recv().unwrap();
        let second = rx.try_recv().unwrap();
        assert_eq!((first.seq, second.seq), (2, 3));
        assert_eq!(
            first.event,
            Event::CallAnswered {
                call_id: "a".into()
            }
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(bus.published(), 3);
    }

    #[test]
    fn json_is_flat_and_tagged() {
        let s = Stamped {
            seq: 7,
            time: "2026-01-01T00:00:00.000Z".into(),
            event: Event::MemberTalking {
                room: "1000".into(),
                member: 3,
                talking: true,
            },
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "member_talking");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["room"], "1000");
        assert_eq!(v["talking"], true);
    }

    #[test]
    fn a_slow_subscriber_loses_the_oldest_and_is_told() {
        let bus = EventBus::new(2);
        let mut rx = bus.subscribe();
        for i in 0..5 {
            bus.publish(Event::RoomCreated {
                room: i.to_string(),
            });
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        ));
        assert_eq!(rx.try_recv().unwrap().seq, 4);
    }
}
