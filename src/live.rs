//! Live calls and rooms as operators see them: what is going on now, and the handles to act
//! on it (hang a call up, send it keys, mute a member, lock a room).
//!
//! Call tasks register themselves in the [`CallRegistry`] and keep it up to date; the
//! conference side implements [`Rooms`]. The HTTP API reads both and never owns a call or a
//! room: a control is a message to the call task or the room's worker, applied there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

/// A call's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// INVITE received, not answered yet.
    Ringing,
    /// Answered.
    Answered,
}

/// A live call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CallInfo {
    /// SIP Call-ID.
    pub id: String,
    /// The From header.
    pub from: String,
    /// The dialled user.
    pub to: String,
    /// Ringing or answered.
    pub state: CallState,
    /// RFC 3339 time the INVITE arrived.
    pub started_at: String,
    /// RFC 3339 time of the answer.
    pub answered_at: Option<String>,
    /// The call-flow script running it.
    pub script: Option<String>,
    /// The room the call is in, if any.
    pub room: Option<String>,
    /// The recording in progress, if any.
    pub recording: Option<String>,
    /// `inbound` (a call we answered) or `outbound` (a call we placed).
    pub direction: String,
    /// The party a `dial` bridged the call with, while bridged.
    pub bridged_with: Option<String>,
    /// The stream of the call's audio to an application, if any (its id).
    pub stream: Option<String>,
    /// What the last `listen` heard (the text, or the key as `key 5`).
    pub heard: Option<String>,
    /// The answering-machine verdict (`MACHINE (LONGGREETING-1540-1500)`).
    pub amd: Option<String>,
    /// How the caller reached us: `udp`, `tcp`, `tls`, or `webrtc` for DTLS-SRTP media
    /// with ICE (a browser); empty for a call we place.
    pub transport: String,
}

impl CallInfo {
    /// A call that has just arrived.
    pub fn new(id: &str, from: &str, to: &str) -> Self {
        CallInfo {
            id: id.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            state: CallState::Ringing,
            started_at: rfc3339_now(),
            answered_at: None,
            script: None,
            room: None,
            recording: None,
            direction: "inbound".into(),
            bridged_with: None,
            stream: None,
            heard: None,
            amd: None,
            transport: String::new(),
        }
    }

    /// A call that came over `transport`.
    pub fn over(mut self, transport: &str) -> Self {
        self.transport = transport.to_string();
        self
    }

    /// A call we place.
    pub fn outbound(mut self) -> Self {
        self.direction = "outbound".into();
        self
    }
}

/// RFC 3339 "now" with milliseconds, the form every timestamp of the API has.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// What an operator can ask of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallControl {
    /// Hang up (BYE, or 480 before answer).
    Hangup,
    /// Send keys to the caller.
    Dtmf(String),
    /// Stream the caller's audio to an application.
    Stream(Box<crate::stream::StreamRequest>),
    /// Stop the caller's stream.
    StopStream,
}

/// A control could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such call.
    #[error("no such call")]
    NoCall,
    /// No such room.
    #[error("no such room")]
    NoRoom,
    /// No such member in the room.
    #[error("no such member")]
    NoMember,
    /// The request was refused; the text says why.
    #[error("{0}")]
    Refused(String),
}

struct Entry {
    info: CallInfo,
    control: mpsc::UnboundedSender<CallControl>,
}

/// Every live call; cheap to clone and share.
#[derive(Clone, Default)]
pub struct CallRegistry {
    calls: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for CallRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRegistry")
            .field("calls", &self.len())
            .finish()
    }
}

/// A call's registration; dropping it removes the call.
#[derive(Debug)]
pub struct CallGuard {
    registry: CallRegistry,
    id: String,
}

impl CallGuard {
    /// Changes the call's public state.
    pub fn update(&self, f: impl FnOnce(&mut CallInfo)) {
        if let Some(e) = self.registry.lock().get_mut(&self.id) {
            f(&mut e.info);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl CallRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere must not take the call list with it.
        match self.calls.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Registers a call; controls for it arrive on `control`. A second call with the same id
    /// replaces the first's entry.
    pub fn register(
        &self,
        info: CallInfo,
        control: mpsc::UnboundedSender<CallControl>,
    ) -> CallGuard {
        let id = info.id.clone();
        self.lock().insert(id.clone(), Entry { info, control });
        CallGuard {
            registry: self.clone(),
            id,
        }
    }

    /// Live calls, oldest first.
    pub fn list(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self.lock().values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        v
    }

    /// One call.
    pub fn get(&self, id: &str) -> Option<CallInfo> {
        self.lock().get(id).map(|e| e.info.clone())
    }

    /// Live calls now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No live call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks a call to do something.
    pub fn control(&self, id: &str, c: CallControl) -> Result<(), ControlError> {
        let calls = self.lock();
        let e = calls.get(id).ok_or(ControlError::NoCall)?;
        e.control.send(c).map_err(|_| ControlError::NoCall)
    }
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MemberInfo {
    /// The member's id in its room.
    pub id: u64,
    /// The member's call.
    pub call_id: String,
    /// The caller (From header).
    pub from: String,
    /// Joined as moderator.
    pub moderator: bool,
    /// Not heard by the others.
    pub muted: bool,
    /// Hears nothing.
    pub deaf: bool,
    /// Talking now.
    pub talking: bool,
    /// RFC 3339 time of joining.
    pub joined_at: String,
}

/// A live room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
    /// Members, in joining order.
    pub members: Vec<MemberInfo>,
    /// No one else may join.
    pub locked: bool,
    /// The room recording in progress, if any.
    pub recording: Option<String>,
    /// The stream of the room's mix to an application, if any (its id).
    pub stream: Option<String>,
    /// RFC 3339 time the room was created.
    pub created_at: String,
    /// The rate the room mixes at now, Hz: its widest member's codec's, or its fixed rate.
    pub rate: u32,
}

/// What an operator can do to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAction {
    /// Stop the others hearing the member.
    Mute,
    /// Let the others hear the member again.
    Unmute,
    /// Stop the member hearing the room.
    Deaf,
    /// Let the member hear the room again.
    Undeaf,
    /// Remove the member from the room (its call is hung up).
    Kick,
}

/// What an operator can do to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAction {
    /// No one else may join.
    Lock,
    /// Others may join again.
    Unlock,
    /// Play a prompt (a name under the prompts folder) to everyone.
    Play(String),
    /// Start recording the room.
    RecordStart,
    /// Stop recording the room.
    RecordStop,
    /// Stream the room's mix to an application; answers the stream's id.
    StreamStart(Box<crate::stream::StreamRequest>),
    /// Stop the room's stream.
    StreamStop,
    /// End the room: every member leaves.
    End,
}

/// The conference side as operators see it.
pub trait Rooms: Send + Sync {
    /// Live rooms, by name.
    fn list(&self) -> Vec<RoomInfo>;
    /// One room.
    fn get(&self, name: &str) -> Option<RoomInfo>;
    /// Acts on a member.
    fn member_action(
        &self,
        room: &str,
        member: u64,
        action: MemberAction,
    ) -> Result<(), ControlError>;
    /// Acts on a room; `RecordStart` answers the new recording's id.
    fn room_action(&self, room: &str, action: RoomAction) -> Result<Option<String>, ControlError>;
}

/// No conference rooms at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRooms;

impl Rooms for NoRooms {
    fn list(&self) -> Vec<RoomInfo> {
        Vec::new()
    }
    fn get(&self, _: &str) -> Option<RoomInfo> {
        None
    }
    fn member_action(&self, _: &str, _: u64, _: MemberAction) -> Result<(), ControlError> {
        Err(ControlError::NoRoom)
    }
    fn room_action(&self, _: &str, _: RoomAction) -> Result<Option<String>, ControlError> {
        Err(ControlError::NoRoom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lives_as_long_as_its_guard() {
        let reg = CallRegistry::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let guard = reg.register(CallInfo::new("c1", "<sip:a@x>", "ivr"), tx);
        assert_eq!(reg.len(), 1);
        guard.update(|c| c.state = CallState::Answered);
        assert_eq!(reg.get("c1").unwrap().state, CallState::Answered);
        reg.control("c1", CallControl::Dtmf("12".into())).unwrap();
        assert_eq!(rx.try_recv().unwrap(), CallControl::Dtmf("12".into()));
        assert_eq!(
            reg.control("nope", CallControl::Hangup),
            Err(ControlError::NoCall)
        );
        drop(guard);
        assert!(reg.is_empty());
        assert_eq!(reg.get("c1"), None);
    }

    #[test]
    fn a_call_whose_task_is_gone_cannot_be_controlled() {
        let reg = CallRegistry::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let _guard = reg.register(CallInfo::new("c1", "a", "b"), tx);
        drop(rx);
        assert_eq!(
            reg.control("c1", CallControl::Hangup),
            Err(ControlError::NoCall)
        );
    }
}
