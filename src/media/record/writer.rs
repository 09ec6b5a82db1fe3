//! The path from the media tick to the disk: [`RecorderHandle`] on the tick side, one
//! [`RecordingWriter`] thread owning every open file on the other.
//!
//! Audio travels as fixed-size [`CHUNK_SAMPLES`] chunks through a bounded
//! `std::sync::mpsc::sync_channel`. Its slots are allocated once when the channel is
//! created and a chunk is a plain array moved by value, so [`RecorderHandle::push`] neither
//! allocates nor blocks: `try_send` either copies into a free slot or fails at once, and a
//! failed chunk is counted and remembered as a gap that the writer fills with silence.
//!
//! Start and finish are rare and carry strings, so they go through a separate unbounded
//! channel that cannot lose them. The writer only looks at it after taking a message off
//! the audio queue, so every control message is followed by a `Wake` on the audio queue
//! (if that queue is full, the writer is about to take a message anyway). A finish carries
//! the number of chunks its handle queued; the writer finalises a recording only once all
//! of them have arrived, which keeps the two channels in order.
//!
//! A room recording's timeline events ([`RecorderHandle::note`]) are a few plain numbers,
//! so they ride the audio queue like chunks (and are counted with them); only when that
//! queue is full do they take the control channel, which never loses one. Who a member is
//! (strings) is registered once per member over the control channel, ahead of its events.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::names;
use super::repair::{read_layout, repair_or_remove, set_data_len};
use super::sidecar::{is_safe_id, new_id, rfc3339, sync_dir};
use super::timeline::{TimelineHeader, TimelineKind, TimelineLog, TimelineMember};
use super::{
    Format, RecordError, RecordMode, RecordOutcome, RoomFields, Sidecar, SidecarState, StopReason,
};
use crate::media::frame::{ClockRate, FRAMES_PER_SEC, FRAME_SAMPLES};

/// Samples per queued chunk: a stereo frame at the internal rate.
pub const CHUNK_SAMPLES: usize = 2 * FRAME_SAMPLES;

/// Bits per sample of every recording.
const BITS: u16 = 16;

/// Largest number of samples a WAV's 32-bit sizes allow (with room for the header).
const MAX_SAMPLES: u64 = (u32::MAX as u64 - 128) / 4 * 2;

type Wav = hound::WavWriter<BufWriter<File>>;

/// One chunk of interleaved samples for one recording.
struct Chunk {
    key: u64,
    /// Samples of silence to write first, standing in for chunks dropped before this one.
    gap: u32,
    len: u16,
    samples: [i16; CHUNK_SAMPLES],
}

/// Messages on the bounded audio queue.
// Chunks are big on purpose: boxing them would allocate on the tick.
#[allow(clippy::large_enum_variant)]
enum Data {
    Chunk(Chunk),
    /// Makes the writer look at the control channel.
    Wake,
    /// A timeline event; counted with the chunks so a finish waits for it.
    Note(Note),
    /// Acknowledged once everything queued before it is written.
    Barrier(Sender<()>),
    /// Stops the writer until the receiver yields or closes, to fill the queue in tests.
    #[cfg(test)]
    Pause(Sender<()>, Receiver<()>),
}

/// A timeline event as it travels to the writer: plain numbers, so sending it never allocates.
#[derive(Debug, Clone, Copy)]
struct Note {
    key: u64,
    at_ms: u64,
    kind: TimelineKind,
    member: u64,
}

/// Messages on the unbounded control channel.
enum Control {
    Start {
        key: u64,
        sidecar: Box<Sidecar>,
        room: Box<RoomFields>,
    },
    /// Who a timeline's member is, sent before any event that names the member.
    Member {
        key: u64,
        member: Box<TimelineMember>,
    },
    /// A timeline event that did not fit the audio queue.
    Note(Note),
    /// The audio will come at another rate than the recording was started with; sent
    /// before any audio.
    Rate { key: u64, rate: ClockRate },
    Finish {
        key: u64,
        chunks: u64,
        gap: u64,
        outcome: RecordOutcome,
    },
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Capacity of the audio queue in chunks, shared by all recordings (≈650 bytes each).
    pub queue_chunks: usize,
    /// How much audio a recording may gain before its header is rewritten and flushed.
    pub flush_every: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            // ~1.3 MB: 40 s of one stereo call, or a 2 s stall with 20 of them.
            queue_chunks: 2048,
            flush_every: Duration::from_secs(1),
        }
    }
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
    discarded: AtomicU64,
    failed: AtomicU64,
    chunks_written: AtomicU64,
    dropped_chunks: AtomicU64,
}

/// Counters of one writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Recordings started.
    pub started: u64,
    /// Recordings finalised as `ID.wav`.
    pub completed: u64,
    /// Recordings deleted for being shorter than their minimum.
    pub discarded: u64,
    /// Recordings that hit a file error (recovered as far as possible).
    pub failed: u64,
    /// Recordings started and not yet finalised, discarded or failed.
    pub open: u64,
    /// Chunks written to disk.
    pub chunks_written: u64,
    /// Chunks dropped because the queue was full.
    pub dropped_chunks: u64,
}

/// Spawns the writer thread.
pub struct RecordingWriter;

impl RecordingWriter {
    /// Starts a writer for `dir` (created if missing) with default settings.
    pub fn spawn(
        dir: impl Into<PathBuf>,
    ) -> Result<(RecorderFactory, JoinHandle<()>), RecordError> {
        RecordingWriter::spawn_with(dir, WriterConfig::default())
    }

    /// Starts a writer for `dir` with `config`; it runs until every factory and handle is
    /// dropped, then finalises what is still open and exits.
    pub fn spawn_with(
        dir: impl Into<PathBuf>,
        config: WriterConfig,
    ) -> Result<(RecorderFactory, JoinHandle<()>), RecordError> {
        let dir: PathBuf = dir.into();
        fs::create_dir_all(&dir).map_err(|e| RecordError::io("create", &dir, e))?;
        let (data_tx, data_rx) = mpsc::sync_channel(config.queue_chunks.max(1));
        let (control_tx, control_rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let mut writer = Writer {
            dir: dir.clone(),
            flush_every: config.flush_every,
            recs: HashMap::new(),
            pending: Vec::new(),
            counters: counters.clone(),
            control: control_rx,
        };
        let thread = std::thread::Builder::new()
            .name("record-writer".into())
            .spawn(move || writer.run(data_rx))
            .map_err(|e| RecordError::io("spawn writer for", &dir, e))?;
        let factory = RecorderFactory {
            dir: dir.into(),
            data: data_tx,
            control: control_tx,
            counters,
            next_key: Arc::new(AtomicU64::new(0)),
        };
        Ok((factory, thread))
    }
}

/// Who and what a recording is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingMeta {
    /// SIP Call-ID.
    pub call_id: String,
    /// Caller (From URI).
    pub from: String,
    /// Callee (To URI).
    pub to: String,
    /// Conference room, if any.
    pub room: Option<String>,
    /// Recorded directions and layout.
    pub mode: RecordMode,
    /// Sample rate of the pushed audio.
    pub rate: ClockRate,
}

/// Settings of [`RecorderFactory::start_with`] beyond [`RecordingMeta`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The recording's id; a new one when `None` (or when it is not filesystem-safe:
    /// ASCII letters, digits, `-` and `_` only).
    pub id: Option<String>,
    /// Room fields for the sidecar.
    pub room: RoomFields,
    /// Keep a timeline of room events next to the recording (see [`RecorderHandle::note`]);
    /// sets `room.timeline` to its file name.
    pub timeline: bool,
}

/// Starts recordings on one writer; cheap to clone and share between threads.
#[derive(Clone)]
pub struct RecorderFactory {
    dir: Arc<Path>,
    data: SyncSender<Data>,
    control: Sender<Control>,
    counters: Arc<Counters>,
    next_key: Arc<AtomicU64>,
}

impl RecorderFactory {
    /// Starts a recording; the writer creates `ID.wav.part` and the sidecar on its thread,
    /// so this does no file I/O. Fails only if the writer has exited.
    pub fn start(&self, meta: RecordingMeta) -> Result<RecorderHandle, RecordError> {
        self.start_with(meta, StartOptions::default())
    }

    /// Starts a recording with an id of the caller's choosing and room fields; otherwise as
    /// [`start`](Self::start).
    pub fn start_with(
        &self,
        meta: RecordingMeta,
        opts: StartOptions,
    ) -> Result<RecorderHandle, RecordError> {
        let now = SystemTime::now();
        let id = match opts.id {
            Some(id) if is_safe_id(&id) => id,
            Some(id) => {
                tracing::warn!(id, "recording id is not filesystem-safe; using a new one");
                new_id(now)
            }
            None => new_id(now),
        };
        let mut room = opts.room;
        room.timeline = opts.timeline.then(|| names::timeline_name(&id));
        let key = self.next_key.fetch_add(1, Relaxed);
        let channels = meta.mode.channels();
        let sidecar = Sidecar {
            id: id.clone(),
            call_id: meta.call_id,
            from: meta.from,
            to: meta.to,
            room: meta.room,
            started: rfc3339(now),
            duration_ms: 0,
            format: Format {
                rate: meta.rate.hz(),
                channels,
                bits: BITS,
            },
            mode: meta.mode,
            digits: String::new(),
            stop_reason: None,
            state: SidecarState::Recording,
            file: names::wav_name(&id),
        };
        self.control
            .send(Control::Start {
                key,
                sidecar: Box::new(sidecar),
                room: Box::new(room),
            })
            .map_err(|_| RecordError::WriterGone)?;
        let _ = self.data.try_send(Data::Wake);
        self.counters.started.fetch_add(1, Relaxed);
        Ok(RecorderHandle {
            key,
            id,
            data: self.data.clone(),
            control: self.control.clone(),
            counters: self.counters.clone(),
            sent: Cell::new(0),
            dropped: Cell::new(0),
            gap: Cell::new(0),
            finished: false,
        })
    }

    /// The recordings directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current counters.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        let started = c.started.load(Relaxed);
        let completed = c.completed.load(Relaxed);
        let discarded = c.discarded.load(Relaxed);
        let failed = c.failed.load(Relaxed);
        WriterStats {
            started,
            completed,
            discarded,
            failed,
            open: started.saturating_sub(completed + discarded + failed),
            chunks_written: c.chunks_written.load(Relaxed),
            dropped_chunks: c.dropped_chunks.load(Relaxed),
        }
    }

    /// Blocks until the writer has handled everything queued before this call (chunks
    /// written, ready finishes finalised). Not for the media tick.
    pub fn sync(&self) -> Result<(), RecordError> {
        let (tx, rx) = mpsc::channel();
        self.data
            .send(Data::Barrier(tx))
            .map_err(|_| RecordError::WriterGone)?;
        rx.recv().map_err(|_| RecordError::WriterGone)
    }

    /// Stops the writer thread until the returned sender is dropped; returns once it is
    /// stopped, with the audio queue empty.
    #[cfg(test)]
    pub(crate) fn pause(&self) -> Sender<()> {
        let (ack_tx, ack_rx) = mpsc::channel();
        let (resume_tx, resume_rx) = mpsc::channel();
        if self.data.send(Data::Pause(ack_tx, resume_rx)).is_ok() {
            let _ = ack_rx.recv();
        }
        resume_tx
    }
}

/// The media tick's end of one recording: pushes audio without blocking or allocating.
///
/// Dropping it without [`finish`](Self::finish) finishes the recording as
/// [`StopReason::Hangup`], keeping all audio.
pub struct RecorderHandle {
    key: u64,
    id: String,
    data: SyncSender<Data>,
    control: Sender<Control>,
    counters: Arc<Counters>,
    /// Chunks accepted by the queue.
    sent: Cell<u64>,
    dropped: Cell<u64>,
    /// Samples dropped since the last accepted chunk.
    gap: Cell<u64>,
    finished: bool,
}

impl RecorderHandle {
    /// The recording id; the files are `ID.wav` and `ID.json`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Queues interleaved samples (one 20 ms frame, ideally); never blocks or allocates.
    ///
    /// Returns false if any chunk was dropped because the queue was full or the writer is
    /// gone; the dropped samples become silence in the file. Stereo frames must have an
    /// even length so that chunks stay channel-aligned.
    pub fn push(&self, samples: &[i16]) -> bool {
        let mut all = true;
        for part in samples.chunks(CHUNK_SAMPLES) {
            let gap = self.gap.get();
            let gap_now = gap.min(u64::from(u32::MAX)) as u32;
            let mut chunk = Chunk {
                key: self.key,
                gap: gap_now,
                // At most CHUNK_SAMPLES, so it fits.
                len: part.len() as u16,
                samples: [0; CHUNK_SAMPLES],
            };
            chunk.samples[..part.len()].copy_from_slice(part);
            match self.data.try_send(Data::Chunk(chunk)) {
                Ok(()) => {
                    self.sent.set(self.sent.get() + 1);
                    self.gap.set(gap - u64::from(gap_now));
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.dropped.set(self.dropped.get() + 1);
                    self.counters.dropped_chunks.fetch_add(1, Relaxed);
                    self.gap.set(gap + part.len() as u64);
                    all = false;
                }
            }
        }
        all
    }

    /// Chunks of this recording dropped so far.
    pub fn dropped_chunks(&self) -> u64 {
        self.dropped.get()
    }

    /// Adds `samples` of silence (interleaved samples, as in [`push`](Self::push)) without
    /// queueing anything: the writer writes them before the next chunk or at finish. Never
    /// blocks or allocates.
    pub fn skip(&self, samples: u64) {
        self.gap.set(self.gap.get().saturating_add(samples));
    }

    /// The audio will come at `rate` rather than the rate the recording was started with:
    /// for a recording whose rate is only known once audio flows (a room's, set by its
    /// members). Only before the first [`push`](Self::push) or [`skip`](Self::skip); later
    /// the writer keeps the rate it has.
    pub fn set_rate(&self, rate: ClockRate) {
        if self
            .control
            .send(Control::Rate {
                key: self.key,
                rate,
            })
            .is_ok()
        {
            let _ = self.data.try_send(Data::Wake);
        }
    }

    /// Tells the writer who timeline member `member.member` is; later [`note`](Self::note)s
    /// about the member carry its call, caller and track. Allocates; for joins only.
    pub fn register_member(&self, member: TimelineMember) {
        let msg = Control::Member {
            key: self.key,
            member: Box::new(member),
        };
        if self.control.send(msg).is_ok() {
            let _ = self.data.try_send(Data::Wake);
        }
    }

    /// Appends an event to this recording's timeline (ignored unless it was started with
    /// [`StartOptions::timeline`]). Goes on the audio queue so it normally neither blocks nor
    /// allocates; when the queue is full it takes the unbounded control channel instead,
    /// so timeline events are never lost.
    pub fn note(&self, at_ms: u64, kind: TimelineKind, member: u64) {
        let note = Note {
            key: self.key,
            at_ms,
            kind,
            member,
        };
        match self.data.try_send(Data::Note(note)) {
            Ok(()) => self.sent.set(self.sent.get() + 1),
            Err(_) => {
                if self.control.send(Control::Note(note)).is_err() {
                    tracing::warn!(id = %self.id, "timeline event after the writer exited");
                }
            }
        }
    }

    /// Ends the recording: the writer trims, finalises and renames it, or deletes it if
    /// `outcome` says it is too short. Does not block.
    pub fn finish(mut self, outcome: RecordOutcome) {
        self.send_finish(outcome);
    }

    fn send_finish(&mut self, outcome: RecordOutcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let msg = Control::Finish {
            key: self.key,
            chunks: self.sent.get(),
            gap: self.gap.get(),
            outcome,
        };
        if self.control.send(msg).is_err() {
            tracing::warn!(id = %self.id, "recording finished after its writer exited");
            return;
        }
        let _ = self.data.try_send(Data::Wake);
    }
}

impl Drop for RecorderHandle {
    fn drop(&mut self) {
        self.send_finish(RecordOutcome::new(StopReason::Hangup));
    }
}

/// One open recording on the writer thread.
struct Rec {
    sidecar: Sidecar,
    room: RoomFields,
    timeline: Option<TimelineLog>,
    part: PathBuf,
    /// `None` once a file error happened; later audio is discarded.
    wav: Option<Wav>,
    channels: u16,
    /// Interleaved samples in the data chunk.
    samples: u64,
    since_flush: u64,
    flush_samples: u64,
    received: u64,
    finish: Option<(u64, u64, RecordOutcome)>,
}

struct Writer {
    dir: PathBuf,
    flush_every: Duration,
    recs: HashMap<u64, Rec>,
    /// Keys with a finish waiting for their last chunks.
    pending: Vec<u64>,
    counters: Arc<Counters>,
    control: Receiver<Control>,
}

impl Writer {
    fn run(&mut self, data: Receiver<Data>) {
        let mut acks: Vec<Sender<()>> = Vec::new();
        // Ends when every sender (factories and handles) is gone.
        while let Ok(msg) = data.recv() {
            self.drain_control();
            match msg {
                Data::Chunk(chunk) => self.write_chunk(&chunk),
                Data::Wake => {}
                Data::Note(note) => self.note(&note, true),
                Data::Barrier(ack) => acks.push(ack),
                #[cfg(test)]
                Data::Pause(ack, resume) => {
                    let _ = ack.send(());
                    let _ = resume.recv();
                }
            }
            self.finish_ready();
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
        }
        self.drain_control();
        self.finish_ready();
        // Only handles leaked with mem::forget get here; keep their audio.
        let keys: Vec<u64> = self.recs.keys().copied().collect();
        for key in keys {
            if let Some(rec) = self.recs.remove(&key) {
                self.finalize(rec, 0, RecordOutcome::new(StopReason::Hangup));
            }
        }
    }

    fn drain_control(&mut self) {
        while let Ok(msg) = self.control.try_recv() {
            match msg {
                Control::Start { key, sidecar, room } => self.open(key, *sidecar, *room),
                Control::Member { key, member } => {
                    if let Some(log) = self.recs.get_mut(&key).and_then(|r| r.timeline.as_mut()) {
                        log.register(*member);
                    }
                }
                Control::Note(note) => self.note(&note, false),
                Control::Rate { key, rate } => self.set_rate(key, rate),
                Control::Finish {
                    key,
                    chunks,
                    gap,
                    outcome,
                } => {
                    if let Some(rec) = self.recs.get_mut(&key) {
                        rec.finish = Some((chunks, gap, outcome));
                        self.pending.push(key);
                    }
                }
            }
        }
    }

    fn note(&mut self, note: &Note, queued: bool) {
        let Some(rec) = self.recs.get_mut(&note.key) else {
            return;
        };
        if queued {
            rec.received += 1;
        }
        if let Some(log) = rec.timeline.as_mut() {
            log.event(note.at_ms, note.kind, note.member);
        }
    }

    /// Starts the recording `key` again at `rate`, if nothing is written yet.
    fn set_rate(&mut self, key: u64, rate: ClockRate) {
        let Some(rec) = self.recs.get(&key) else {
            return;
        };
        if rec.sidecar.format.rate == rate.hz() {
            return;
        }
        // Timeline notes may have come before; audio may not.
        if rec.samples > 0 {
            tracing::warn!(id = %rec.sidecar.id, rate = rate.hz(), "recording rate not changed: audio already written");
            return;
        }
        let Some(rec) = self.recs.get_mut(&key) else {
            return;
        };
        rec.sidecar.format.rate = rate.hz();
        rec.wav = create_wav(&rec.part, &rec.sidecar);
        if rec.wav.is_some() {
            if let Err(e) = rec.sidecar.write_with(&self.dir, &rec.room) {
                tracing::error!(id = %rec.sidecar.id, error = %e, "cannot write recording sidecar");
            }
        }
        rec.flush_samples = flush_samples(&rec.sidecar, self.flush_every);
    }

    fn open(&mut self, key: u64, sidecar: Sidecar, room: RoomFields) {
        let part = names::part_path(&self.dir, &sidecar.id);
        let wav = create_wav(&part, &sidecar);
        if wav.is_some() {
            if let Err(e) = sidecar.write_with(&self.dir, &room) {
                tracing::error!(id = %sidecar.id, error = %e, "cannot write recording sidecar");
            }
        }
        let timeline = if room.timeline.is_some() {
            let header = TimelineHeader {
                id: sidecar.id.clone(),
                room: sidecar.room.clone().unwrap_or_default(),
                started: sidecar.started.clone(),
            };
            TimelineLog::create(&self.dir, &header)
                .map_err(
                    |e| tracing::error!(id = %sidecar.id, error = %e, "cannot create timeline"),
                )
                .ok()
        } else {
            None
        };
        let channels = sidecar.format.channels.max(1);
        let flush_samples = flush_samples(&sidecar, self.flush_every);
        tracing::debug!(id = %sidecar.id, "recording started");
        self.recs.insert(
            key,
            Rec {
                sidecar,
                room,
                timeline,
                part,
                wav,
                channels,
                samples: 0,
                since_flush: 0,
                flush_samples,
                received: 0,
                finish: None,
            },
        );
    }

    fn write_chunk(&mut self, chunk: &Chunk) {
        let Some(rec) = self.recs.get_mut(&chunk.key) else {
            return;
        };
        rec.received += 1;
        let len = usize::from(chunk.len).min(CHUNK_SAMPLES);
        if let Err(e) = rec.write(u64::from(chunk.gap), &chunk.samples[..len]) {
            rec.fail(&e);
        } else {
            self.counters.chunks_written.fetch_add(1, Relaxed);
        }
    }

    fn finish_ready(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let key = self.pending[i];
            let ready = self
                .recs
                .get(&key)
                .and_then(|r| r.finish.as_ref().map(|(chunks, ..)| r.received >= *chunks))
                .unwrap_or(true);
            if !ready {
                i += 1;
                continue;
            }
            self.pending.swap_remove(i);
            if let Some(mut rec) = self.recs.remove(&key) {
                if let Some((_, gap, outcome)) = rec.finish.take() {
                    self.finalize(rec, gap, outcome);
                }
            }
        }
    }

    fn finalize(&self, mut rec: Rec, gap: u64, outcome: RecordOutcome) {
        let id = rec.sidecar.id.clone();
        if outcome.discard() {
            drop(rec.wav.take());
            if let Some(log) = rec.timeline.take() {
                log.discard();
            }
            let _ = fs::remove_file(&rec.part);
            let _ = fs::remove_file(Sidecar::path(&self.dir, &id));
            self.counters.discarded.fetch_add(1, Relaxed);
            tracing::debug!(id, "recording discarded as too short");
            return;
        }
        if rec.wav.is_some() {
            if let Err(e) = rec.write(gap, &[]) {
                rec.fail(&e);
            }
        }
        let result = self.complete(&mut rec, &outcome);
        // Left only when completing failed before the sidecar (which finishes it first).
        if let Some(log) = rec.timeline.take() {
            let per_sec = u64::from(rec.sidecar.format.rate) * u64::from(rec.channels);
            finish_timeline(&id, log, rec.samples * 1000 / per_sec.max(1));
        }
        match result {
            Ok(()) => {
                self.counters.completed.fetch_add(1, Relaxed);
                tracing::debug!(
                    id,
                    duration_ms = rec.sidecar.duration_ms,
                    "recording complete"
                );
            }
            Err(e) => {
                tracing::error!(id, error = %e, "recording could not be finalised");
                self.counters.failed.fetch_add(1, Relaxed);
                if rec.part.exists() {
                    repair_or_remove(&rec.part);
                }
            }
        }
    }

    /// Finalises header, trims, fsyncs, renames, and marks the sidecar complete.
    fn complete(&self, rec: &mut Rec, outcome: &RecordOutcome) -> Result<(), RecordError> {
        let Some(wav) = rec.wav.take() else {
            return Err(RecordError::BadWav {
                path: rec.part.clone(),
                reason: "write failed earlier",
            });
        };
        let part = rec.part.as_path();
        wav.finalize().map_err(|source| RecordError::Wav {
            path: part.to_path_buf(),
            source,
        })?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(part)
            .map_err(|e| RecordError::io("open", part, e))?;
        let layout = read_layout(&mut file, part)?;
        let sr = rec.sidecar.format.rate;
        let frame_samples = u64::from(sr / FRAMES_PER_SEC) * u64::from(rec.channels);
        let trim = outcome.trim_frames.saturating_mul(frame_samples);
        let kept = rec.samples.saturating_sub(trim);
        if trim > 0 {
            set_data_len(&mut file, part, &layout, kept * 2)?;
        }
        file.sync_all()
            .map_err(|e| RecordError::io("fsync", part, e))?;
        drop(file);
        let wav_path = self.dir.join(&rec.sidecar.file);
        fs::rename(part, &wav_path).map_err(|e| RecordError::io("rename", part, e))?;
        sync_dir(&self.dir);

        let s = &mut rec.sidecar;
        s.duration_ms = layout.duration_ms(kept * 2);
        s.digits.clone_from(&outcome.digits);
        s.stop_reason = Some(outcome.reason);
        s.state = SidecarState::Complete;
        // A reader that sees a complete sidecar finds the timeline complete too.
        if let Some(log) = rec.timeline.take() {
            finish_timeline(&s.id, log, s.duration_ms);
        }
        s.write_with(&self.dir, &rec.room)
    }
}

/// Turns a room recording's timeline log into its final JSON, logging a failure.
fn finish_timeline(id: &str, log: TimelineLog, duration_ms: u64) {
    let path = log.path().to_path_buf();
    if let Err(e) = log.finish(duration_ms) {
        tracing::error!(id, error = %e, path = %path.display(), "timeline could not be finished");
    }
}

/// A new, empty WAV at `part` in the sidecar's format (`None`, logged, when it cannot be
/// made).
fn create_wav(part: &Path, sidecar: &Sidecar) -> Option<Wav> {
    let spec = hound::WavSpec {
        channels: sidecar.format.channels,
        sample_rate: sidecar.format.rate,
        bits_per_sample: BITS,
        sample_format: hound::SampleFormat::Int,
    };
    let wav = hound::WavWriter::create(part, spec)
        // Puts a valid empty WAV on disk before any audio.
        .and_then(|mut w| w.flush().map(|()| w));
    match wav {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(id = %sidecar.id, error = %e, "cannot create recording");
            None
        }
    }
}

/// Interleaved samples a recording in `sidecar`'s format gains between flushes.
fn flush_samples(sidecar: &Sidecar, every: Duration) -> u64 {
    let per_sec = u64::from(sidecar.format.rate) * u64::from(sidecar.format.channels.max(1));
    ((per_sec as f64 * every.as_secs_f64()) as u64).max(1)
}

impl Rec {
    /// Writes `gap` samples of silence, then `samples`; flushes the header when due.
    fn write(&mut self, gap: u64, samples: &[i16]) -> Result<(), hound::Error> {
        let Some(wav) = self.wav.as_mut() else {
            return Ok(());
        };
        let room = MAX_SAMPLES.saturating_sub(self.samples);
        let gap = gap.min(room);
        let n = (samples.len() as u64).min(room - gap) as usize;
        if n < samples.len() {
            tracing::warn!(id = %self.sidecar.id, "recording reached the WAV size limit");
        }
        let mut left = gap;
        while left > 0 {
            let step = left.min(CHUNK_SAMPLES as u64) as u32;
            let mut w = wav.get_i16_writer(step);
            for _ in 0..step {
                w.write_sample(0i16);
            }
            w.flush()?;
            left -= u64::from(step);
        }
        if n > 0 {
            let mut w = wav.get_i16_writer(n as u32);
            for &s in &samples[..n] {
                w.write_sample(s);
            }
            w.flush()?;
        }
        let written = gap + n as u64;
        self.samples += written;
        self.since_flush += written;
        if self.since_flush >= self.flush_samples {
            self.since_flush = 0;
            wav.flush()?;
        }
        Ok(())
    }

    /// Stops writing after a file error; what is on disk is recovered at finish.
    fn fail(&mut self, e: &hound::Error) {
        tracing::error!(id = %self.sidecar.id, error = %e, "recording write failed");
        // Dropping lets hound update the header one last time; errors are moot now.
        drop(self.wav.take());
    }
}
