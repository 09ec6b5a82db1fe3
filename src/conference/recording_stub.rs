//! Room recording: a recorder living on the media worker next to its room, fed the room's
//! mix once per tick. This minimal version writes the mixed recording only.

use std::time::Instant;

use super::mixer::MemberId;
use crate::media::leg::FRAME_SAMPLES;
use crate::media::record::{
    RecordError, RecordMode, RecorderFactory, RecorderHandle, RecordingMeta,
};

/// How a room is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomRecordOptions {
    /// Also one track per member.
    pub multitrack: bool,
}

/// One room's recording.
pub struct RoomRecorder {
    mixed: RecorderHandle,
}

impl std::fmt::Debug for RoomRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomRecorder")
            .field("id", &self.mixed.id())
            .finish()
    }
}

impl RoomRecorder {
    /// Starts recording `room`.
    pub fn start(
        factory: &RecorderFactory,
        room: &str,
        _opts: RoomRecordOptions,
        _now: Instant,
    ) -> Result<RoomRecorder, RecordError> {
        let mixed = factory.start(RecordingMeta {
            call_id: String::new(),
            from: String::new(),
            to: String::new(),
            room: Some(room.to_string()),
            mode: RecordMode::Inbound,
            rate: 8000,
        })?;
        Ok(RoomRecorder { mixed })
    }

    /// The mixed recording's id.
    pub fn id(&self) -> &str {
        self.mixed.id()
    }

    /// A member joined.
    pub fn member_joined(&mut self, _now: Instant, _member: MemberId, _call_id: &str, _from: &str) {
    }

    /// A member left.
    pub fn member_left(&mut self, _now: Instant, _member: MemberId) {}

    /// A member was muted or unmuted.
    pub fn member_muted(&mut self, _now: Instant, _member: MemberId, _muted: bool) {}

    /// A member started or stopped talking.
    pub fn member_talking(&mut self, _now: Instant, _member: MemberId, _talking: bool) {}

    /// Once per tick: the full room mix and each member's input frame (None: nothing heard).
    pub fn push_tick(
        &mut self,
        mix: &[i16; FRAME_SAMPLES],
        _inputs: &mut dyn Iterator<Item = (MemberId, Option<&[i16; FRAME_SAMPLES]>)>,
    ) {
        self.mixed.push(mix);
    }

    /// Ends the recording; the writer finalises the file.
    pub fn finish(self, _now: Instant) {
        // Dropping the handle finishes the recording, keeping all audio.
        drop(self.mixed);
    }
}
