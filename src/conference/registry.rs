//! The conference registry: room names to rooms on the media workers. A room is created on
//! the least loaded worker by its first join and removed when its last member has left; a
//! joining leg is moved to its room's worker first. Prompts are decoded here, on blocking
//! threads, and handed to the worker ready to play.
//!
//! It also implements [`Rooms`], the operators' view and controls, from a per-room snapshot
//! that the room's worker keeps current.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

use super::host::{lock_info, JoinRefusal, RoomCommand, RoomHost, RoomLink};
use super::mixer::MemberId;
use super::recording::{RoomRecordOptions, RoomRecorder};
use super::room::{JoinRefused, RemoveReason, Room, RoomSettings, RoomSounds};
use crate::config::ConferenceConfig;
use crate::events::{Event, EventBus};
use crate::live::{ControlError, MemberAction, RoomAction, RoomInfo, Rooms};
use crate::media::frame::ClockRate;
use crate::media::frame::{AudioSource, NARROW_RATE};
use crate::media::prompt::{Prompt, PromptCache, PromptPlayer};
use crate::media::record::RecorderFactory;
use crate::stream::run::{Owner, Progress, Running};
use crate::stream::{StartInfo, StreamRequest, StreamTap, TapConfig, Track};

/// What the registry needs of the media workers (the engine implements it): rooms placed
/// on a worker and commanded there.
pub trait RoomWorkers: Send + Sync {
    /// The worker a new room should go to.
    fn least_loaded(&self) -> usize;
    /// Places a room on `worker`; false when that worker has stopped.
    fn add_room(&self, worker: usize, host: RoomHost) -> bool;
    /// Sends a command to room `room` on `worker`; false when the worker has stopped.
    fn room_command(&self, worker: usize, room: u64, cmd: RoomCommand) -> bool;
}

/// A call's leg as the registry joins it to a room (the engine's leg handle implements it).
pub trait RoomLeg: Send + Sync {
    /// The leg's id on its worker.
    fn id(&self) -> u64;
    /// Moves the leg to `worker`, resolving once it is there; the error says why not.
    fn move_to(
        &self,
        worker: usize,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Joins tried when the room went away between finding it and joining it.
const JOIN_ATTEMPTS: usize = 3;

/// How a call joins a room.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// Moderator rights.
    pub moderator: bool,
    /// Join muted.
    pub muted: bool,
    /// The member's call.
    pub call_id: String,
    /// The caller (From header).
    pub from: String,
}

/// Why a join failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The room holds its maximum of members.
    #[error("room is full")]
    Full,
    /// The room is locked.
    #[error("room is locked")]
    Locked,
    /// Anything else (the leg or the media engine).
    #[error("cannot join: {0}")]
    Failed(String),
}

/// Why a member is no longer in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The member's leave key.
    Left,
    /// Removed by an operator.
    Kicked,
    /// The room ended.
    Ended,
}

/// A call's place in a room; leaving (or dropping it) takes the call's leg out of the room.
pub struct Membership {
    member: MemberId,
    room: u64,
    worker: usize,
    media: Arc<dyn RoomWorkers>,
    left: Option<oneshot::Receiver<RemoveReason>>,
    reason: Option<LeaveReason>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("member", &self.member)
            .field("room", &self.room)
            .field("reason", &self.reason)
            .finish()
    }
}

impl Membership {
    /// The member's id in its room (as in events and the API).
    pub fn member_id(&self) -> u64 {
        self.member.as_u64()
    }

    /// Resolves when the room removed the member (its leave key, a kick, the room ending).
    pub async fn left(&mut self) -> LeaveReason {
        if let Some(r) = self.reason {
            return r;
        }
        let reason = match self.left.as_mut() {
            Some(rx) => match rx.await {
                Ok(RemoveReason::Kicked) => LeaveReason::Kicked,
                Ok(RemoveReason::Ended) | Err(_) => LeaveReason::Ended,
                Ok(RemoveReason::Left | RemoveReason::Hangup) => LeaveReason::Left,
            },
            None => std::future::pending().await,
        };
        self.left = None;
        self.reason = Some(reason);
        reason
    }

    /// Leaves the room (the caller hung up, or the script is done with it).
    pub fn leave(self) {
        // Drop does it.
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.reason.is_none() {
            self.media.room_command(
                self.worker,
                self.room,
                RoomCommand::Leave {
                    member: self.member,
                },
            );
        }
    }
}

struct Entry {
    link: RoomLink,
    worker: usize,
    settings: Arc<RoomSettings>,
}

struct Inner {
    media: Arc<dyn RoomWorkers>,
    prompts: Arc<PromptCache>,
    events: EventBus,
    config: ConferenceConfig,
    recorder: RecorderFactory,
    rooms: Mutex<HashMap<String, Entry>>,
    next_room: AtomicU64,
    /// How to stop each room's stream, by room name, with the stream's number.
    stream_stops: Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>,
    next_stream: AtomicU64,
}

/// Every room; cheap to clone and share.
#[derive(Clone)]
pub struct ConferenceRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConferenceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConferenceRegistry")
            .field("rooms", &self.lock().len())
            .finish()
    }
}

impl ConferenceRegistry {
    /// A registry placing rooms on `media`'s workers.
    pub fn new(
        media: Arc<dyn RoomWorkers>,
        prompts: Arc<PromptCache>,
        events: EventBus,
        config: ConferenceConfig,
        recorder: RecorderFactory,
    ) -> Self {
        ConferenceRegistry {
            inner: Arc::new(Inner {
                media,
                prompts,
                events,
                config,
                recorder,
                rooms: Mutex::new(HashMap::new()),
                next_room: AtomicU64::new(1),
                stream_stops: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        match self.inner.rooms.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Joins `leg` to room `room`, creating it on first join. While joined the leg's audio
    /// is the room's and its keys drive the room; after leaving it is a plain leg again.
    pub async fn join(
        &self,
        room: &str,
        opts: JoinOptions,
        leg: &mut dyn RoomLeg,
    ) -> Result<Membership, JoinError> {
        let settings = Arc::new(self.inner.config.room_settings(room));
        for _ in 0..JOIN_ATTEMPTS {
            let (link, worker) = self.find_or_create(room, &settings).await?;
            let result = self.join_on(&link, worker, &opts, leg).await;
            match result {
                Err(Attempt::Gone) => {
                    // The room ended or emptied meanwhile: forget it and start a new one.
                    let mut rooms = self.lock();
                    if rooms.get(room).is_some_and(|e| e.link.id == link.id) {
                        rooms.remove(room);
                    }
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Ok(m) => return Ok(m),
            }
        }
        Err(JoinError::Failed("room kept going away".into()))
    }

    async fn join_on(
        &self,
        link: &RoomLink,
        worker: usize,
        opts: &JoinOptions,
        leg: &mut dyn RoomLeg,
    ) -> Result<Membership, Attempt> {
        let media = &self.inner.media;
        if let Err(e) = leg.move_to(worker).await {
            link.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Attempt::Failed(JoinError::Failed(e.to_string())));
        }
        let (reply, answer) = oneshot::channel();
        let (left_tx, left) = oneshot::channel();
        let sent = media.room_command(
            worker,
            link.id,
            RoomCommand::Join {
                leg: leg.id(),
                moderator: opts.moderator,
                muted: opts.muted,
                call_id: opts.call_id.clone(),
                from: opts.from.clone(),
                reply,
                left: left_tx,
            },
        );
        if !sent {
            link.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Attempt::Failed(JoinError::Failed(
                "media worker stopped".into(),
            )));
        }
        match answer.await {
            Ok(Ok(member)) => Ok(Membership {
                member,
                room: link.id,
                worker,
                media: media.clone(),
                left: Some(left),
                reason: None,
            }),
            Ok(Err(JoinRefusal::Gone)) => Err(Attempt::Gone),
            Ok(Err(JoinRefusal::Room(JoinRefused::Full))) => Err(Attempt::Failed(JoinError::Full)),
            Ok(Err(JoinRefusal::Room(JoinRefused::Locked))) => {
                Err(Attempt::Failed(JoinError::Locked))
            }
            Ok(Err(JoinRefusal::Room(e))) => Err(Attempt::Failed(JoinError::Failed(e.to_string()))),
            Ok(Err(JoinRefusal::NoLeg)) => Err(Attempt::Failed(JoinError::Failed(
                "leg is not on the room's worker or already in a room".into(),
            ))),
            Err(_) => Err(Attempt::Failed(JoinError::Failed(
                "media worker stopped".into(),
            ))),
        }
    }

    /// The room's link and worker, counting a join on its way; creates the room if needed.
    async fn find_or_create(
        &self,
        name: &str,
        settings: &Arc<RoomSettings>,
    ) -> Result<(RoomLink, usize), JoinError> {
        if let Some(found) = self.pending_join(name) {
            return Ok(found);
        }
        // Decoding prompts reads files: never on the media tick, nor on the async runtime.
        let sounds = {
            let prompts = self.inner.prompts.clone();
            let cfg = self.inner.config.clone();
            let name = name.to_string();
            tokio::task::spawn_blocking(move || load_sounds(&prompts, &cfg, &name))
                .await
                .map_err(|e| JoinError::Failed(e.to_string()))?
        };
        let room = Room::new((**settings).clone(), sounds)
            .map_err(|e| JoinError::Failed(e.to_string()))?;
        let mut rooms = self.lock();
        if let Some(e) = rooms.get(name) {
            // Someone else created it meanwhile.
            e.link.pending.fetch_add(1, Ordering::AcqRel);
            return Ok((e.link.clone(), e.worker));
        }
        let id = self.inner.next_room.fetch_add(1, Ordering::Relaxed);
        let link = RoomLink::new(
            id,
            name,
            self.inner.events.clone(),
            crate::live::rfc3339_now(),
            1,
        );
        let recorder = if self.inner.config.room_auto_record(name) {
            self.start_recorder(name)
                .map_err(|e| tracing::warn!(room = name, error = %e, "auto-record did not start"))
                .ok()
        } else {
            None
        };
        let weak = Arc::downgrade(&self.inner);
        let (key, room_id) = (name.to_string(), id);
        let on_end = Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                let mut rooms = match inner.rooms.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                if rooms.get(&key).is_some_and(|e| e.link.id == room_id) {
                    rooms.remove(&key);
                }
            }
        });
        let recording = recorder.as_ref().map(|r| r.id().to_string());
        let host = RoomHost::new(link.clone(), room, recorder, on_end);
        let worker = self.inner.media.least_loaded();
        if !self.inner.media.add_room(worker, host) {
            return Err(JoinError::Failed("media worker stopped".into()));
        }
        rooms.insert(
            name.to_string(),
            Entry {
                link: link.clone(),
                worker,
                settings: settings.clone(),
            },
        );
        drop(rooms);
        self.inner.events.publish(Event::RoomCreated {
            room: name.to_string(),
        });
        if let Some(id) = recording {
            self.inner.events.publish(Event::RecordingStarted {
                id,
                call_id: None,
                room: Some(name.to_string()),
            });
        }
        tracing::info!(room = name, worker, "room created");
        Ok((link, worker))
    }

    fn pending_join(&self, name: &str) -> Option<(RoomLink, usize)> {
        let rooms = self.lock();
        let e = rooms.get(name)?;
        e.link.pending.fetch_add(1, Ordering::AcqRel);
        Some((e.link.clone(), e.worker))
    }

    fn start_recorder(
        &self,
        name: &str,
    ) -> Result<RoomRecorder, crate::media::record::RecordError> {
        RoomRecorder::start(
            &self.inner.recorder,
            name,
            RoomRecordOptions {
                multitrack: self.inner.config.room_multitrack(name),
            },
            Instant::now(),
        )
    }

    /// Starts streaming room `room`'s mix: the socket task, its tap on the room, and a task
    /// that announces the stream's life and tidies up after it. Answers the stream's id.
    fn start_stream(
        &self,
        room: &str,
        id: u64,
        worker: usize,
        info: &Arc<Mutex<RoomInfo>>,
        request: &StreamRequest,
    ) -> Result<String, ControlError> {
        let n = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let start = StartInfo {
            call_id: format!("room-{room}"),
            from: String::new(),
            to: room.to_string(),
            tracks: Track::Inbound,
            parameters: request.parameters.clone(),
        };
        let (mut running, handle) =
            Running::start(n, Owner::Room(room.to_string()), request, start);
        let stream_id = running.stream_id().to_string();
        let tap = StreamTap::new(
            n,
            handle,
            TapConfig {
                track: Track::Inbound,
                bidirectional: false,
                rate: ClockRate::new(request.format.rate()).unwrap_or(NARROW_RATE),
            },
        );
        let media = self.inner.media.clone();
        if !media.room_command(worker, id, RoomCommand::Stream(Box::new(tap))) {
            // The tap and its handle are gone with the command: the socket task ends.
            return Err(ControlError::NoRoom);
        }
        lock_info(info).stream = Some(stream_id.clone());
        let (stop_tx, mut stop_rx) = oneshot::channel();
        lock_map(&self.inner.stream_stops).insert(room.to_string(), (n, stop_tx));
        tracing::info!(room, url = %request.url, stream = %stream_id, "streaming the room");
        let registry = self.clone();
        let (room, info, sid) = (room.to_string(), info.clone(), stream_id.clone());
        tokio::spawn(async move {
            let bus = registry.inner.events.clone();
            let mut stopped = false;
            let reason = loop {
                tokio::select! {
                    p = running.next(&bus) => match p {
                        Progress::Connected => {}
                        Progress::Ended(r) => break r,
                    },
                    r = &mut stop_rx, if !stopped => {
                        stopped = true;
                        if r.is_ok() {
                            running.stopping();
                            media.room_command(worker, id, RoomCommand::StopStream(n));
                        }
                    }
                }
            };
            // The application went: the room lets go of the tap.
            media.room_command(worker, id, RoomCommand::StopStream(n));
            running.finish(reason, &bus);
            let mut i = lock_info(&info);
            if i.stream.as_deref() == Some(sid.as_str()) {
                i.stream = None;
            }
            drop(i);
            let mut stops = lock_map(&registry.inner.stream_stops);
            if stops.get(&room).is_some_and(|(m, _)| *m == n) {
                stops.remove(&room);
            }
        });
        Ok(stream_id)
    }

    fn room(&self, name: &str) -> Option<(u64, usize, Arc<Mutex<RoomInfo>>)> {
        let rooms = self.lock();
        let e = rooms.get(name)?;
        Some((e.link.id, e.worker, e.link.info.clone()))
    }

    /// Plays prompt `name` to one member of `room`.
    pub fn play_to_member(
        &self,
        room: &str,
        member: u64,
        prompt: &str,
    ) -> Result<(), ControlError> {
        let (id, worker, info) = self.room(room).ok_or(ControlError::NoRoom)?;
        if !lock_info(&info).members.iter().any(|m| m.id == member) {
            return Err(ControlError::NoMember);
        }
        // A closure capturing the member cannot be a fn pointer: pick it per member.
        let member = MemberId::from_u64(member);
        self.inner
            .prompts
            .resolve(prompt)
            .map_err(|e| ControlError::Refused(e.to_string()))?;
        let inner = self.inner.clone();
        let prompt = prompt.to_string();
        let work = move || match inner.prompts.load(&prompt, NARROW_RATE) {
            Ok(p) => {
                let source = Box::new(PromptPlayer::new(p));
                inner
                    .media
                    .room_command(worker, id, RoomCommand::PlayTo { member, source });
            }
            Err(e) => tracing::warn!(prompt = %prompt, error = %e, "prompt not played"),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(work);
            }
            Err(_) => work(),
        }
        Ok(())
    }

    /// Decodes prompt `name` off the caller's thread (on a blocking thread when a runtime is
    /// there) and hands it to the room's worker as `cmd`.
    fn play_prompt(
        &self,
        name: &str,
        worker: usize,
        room: u64,
        cmd: fn(Box<dyn AudioSource>) -> RoomCommand,
    ) -> Result<(), ControlError> {
        self.inner
            .prompts
            .resolve(name)
            .map_err(|e| ControlError::Refused(e.to_string()))?;
        let inner = self.inner.clone();
        let name = name.to_string();
        let work = move || match inner.prompts.load(&name, NARROW_RATE) {
            Ok(p) => {
                inner
                    .media
                    .room_command(worker, room, cmd(Box::new(PromptPlayer::new(p))));
            }
            Err(e) => tracing::warn!(prompt = %name, error = %e, "prompt not played"),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(work);
            }
            Err(_) => work(),
        }
        Ok(())
    }

    /// The settings room `name` runs (or would run) with.
    pub fn settings(&self, name: &str) -> RoomSettings {
        match self.lock().get(name) {
            Some(e) => (*e.settings).clone(),
            None => self.inner.config.room_settings(name),
        }
    }
}

enum Attempt {
    Gone,
    Failed(JoinError),
}

/// Decodes a room's prompts; a missing prompt is logged and left out.
fn load_sounds(prompts: &PromptCache, cfg: &ConferenceConfig, room: &str) -> RoomSounds {
    let load = |name: &str| -> Option<Arc<Prompt>> {
        if name.is_empty() {
            return None;
        }
        prompts
            .load(name, NARROW_RATE)
            .map_err(|e| tracing::warn!(prompt = name, error = %e, "conference prompt not loaded"))
            .ok()
    };
    let (alone, wait, announce) = cfg.room_prompts(room);
    let digits: Vec<Arc<Prompt>> = if announce {
        (0..10)
            .filter_map(|d| load(&format!("digits/{d}")))
            .collect()
    } else {
        Vec::new()
    };
    RoomSounds {
        alone: load(&alone),
        wait_moderator: load(&wait),
        digits: if digits.len() == 10 {
            digits
        } else {
            Vec::new()
        },
    }
}

impl Rooms for ConferenceRegistry {
    fn list(&self) -> Vec<RoomInfo> {
        let infos: Vec<Arc<Mutex<RoomInfo>>> =
            self.lock().values().map(|e| e.link.info.clone()).collect();
        let mut v: Vec<RoomInfo> = infos.iter().map(|i| lock_info(i).clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn get(&self, name: &str) -> Option<RoomInfo> {
        let (_, _, info) = self.room(name)?;
        let i = lock_info(&info).clone();
        Some(i)
    }

    fn member_action(
        &self,
        room: &str,
        member: u64,
        action: MemberAction,
    ) -> Result<(), ControlError> {
        let (id, worker, info) = self.room(room).ok_or(ControlError::NoRoom)?;
        if !lock_info(&info).members.iter().any(|m| m.id == member) {
            return Err(ControlError::NoMember);
        }
        let member = MemberId::from_u64(member);
        if self
            .inner
            .media
            .room_command(worker, id, RoomCommand::Member { member, action })
        {
            Ok(())
        } else {
            Err(ControlError::NoRoom)
        }
    }

    fn room_action(&self, room: &str, action: RoomAction) -> Result<Option<String>, ControlError> {
        let (id, worker, info) = self.room(room).ok_or(ControlError::NoRoom)?;
        let media = &self.inner.media;
        let send = |cmd| {
            if media.room_command(worker, id, cmd) {
                Ok(None)
            } else {
                Err(ControlError::NoRoom)
            }
        };
        match action {
            RoomAction::Lock => send(RoomCommand::Lock(true)),
            RoomAction::Unlock => send(RoomCommand::Lock(false)),
            RoomAction::End => send(RoomCommand::End),
            RoomAction::RecordStop => {
                if lock_info(&info).recording.is_none() {
                    return Err(ControlError::Refused("room is not being recorded".into()));
                }
                send(RoomCommand::RecordStop)
            }
            RoomAction::Play(name) => {
                self.play_prompt(&name, worker, id, RoomCommand::Play)?;
                Ok(None)
            }
            RoomAction::StreamStart(request) => {
                if request.bidirectional {
                    return Err(ControlError::Refused(
                        "a room stream only listens: bidirectional is for calls".into(),
                    ));
                }
                if request.track != Track::Inbound {
                    return Err(ControlError::Refused(
                        "a room stream carries the room's mix: track inbound".into(),
                    ));
                }
                if lock_info(&info).stream.is_some() {
                    return Err(ControlError::Refused("room is already streamed".into()));
                }
                self.start_stream(room, id, worker, &info, &request)
                    .map(Some)
            }
            RoomAction::StreamStop => {
                let stop = lock_map(&self.inner.stream_stops).remove(room);
                match stop {
                    Some((_, tx)) => {
                        let _ = tx.send(());
                        Ok(None)
                    }
                    None => Err(ControlError::Refused("room is not being streamed".into())),
                }
            }
            RoomAction::RecordStart => {
                if lock_info(&info).recording.is_some() {
                    return Err(ControlError::Refused(
                        "room is already being recorded".into(),
                    ));
                }
                let recorder = self
                    .start_recorder(room)
                    .map_err(|e| ControlError::Refused(e.to_string()))?;
                let rec_id = recorder.id().to_string();
                // Shown at once, so a second start is refused before the worker applies this.
                lock_info(&info).recording = Some(rec_id.clone());
                send(RoomCommand::RecordStart(Box::new(recorder)))?;
                Ok(Some(rec_id))
            }
        }
    }
}

/// A lock that survives a panic elsewhere: the map holds no invariant a panic could break.
fn lock_map<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
