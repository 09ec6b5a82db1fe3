//! The socket glue: one tokio task per stream connects to the application's `ws://` or
//! `wss://` URL, sends what the media side hands it and passes back what the application
//! sends. The media side only ever calls non-blocking methods of [`StreamHandle`]: a full
//! send queue drops the frame and counts it, so a slow or dead application cannot stall a
//! media tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use std::sync::mpsc as sync_mpsc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::Connector;

use super::{l16, twilio, AppCommand, StartInfo, StreamError, Track, MAX_FRAME_SAMPLES};

/// The largest message taken from the application (24 s of µ-law in base64, 8 s of L16 at
/// 16 kHz): with the receive queue, it bounds what one stream can hold in memory.
pub const MAX_APP_MESSAGE: usize = 256 * 1024;

/// The socket's read buffer. The library's default (128 KiB) is allocated per stream and
/// zeroed up to its size on every read, which cost more than everything else a stream does;
/// the application's messages are a few hundred bytes (a larger one takes more reads).
const READ_BUFFER: usize = 4 * 1024;

/// Messages written to the socket at once at most, when several are waiting.
const WRITE_BATCH: usize = 8;

/// How long a stream ending on our side may take to flush what is queued and say `stop`.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The wire format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Twilio Media Streams: JSON with base64 µ-law at 8 kHz.
    Twilio,
    /// Binary little-endian 16-bit PCM at `rate` (8000 or 16000) with JSON control frames.
    L16 {
        /// Sample rate of every frame, both ways.
        rate: u32,
    },
}

impl Format {
    /// The sample rate of the audio both ways.
    pub fn rate(self) -> u32 {
        match self {
            Format::Twilio => 8000,
            Format::L16 { rate } if l16::RATES.contains(&rate) => rate,
            Format::L16 { .. } => 8000,
        }
    }
}

/// Everything a stream needs to start.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `ws://` or `wss://` URL of the application.
    pub url: String,
    /// Wire format.
    pub format: Format,
    /// What the start message says about the call.
    pub start: StartInfo,
    /// The stream's id (Twilio's `streamSid`).
    pub stream_id: String,
    /// Limit on TCP connect, TLS and the WebSocket handshake together.
    pub connect_timeout: Duration,
    /// Messages waiting to be sent before new ones are dropped (50 frames are 1 s).
    pub send_queue: usize,
    /// Application messages waiting for the media side before the socket is read no more
    /// (the media side empties it into its player every tick).
    pub receive_queue: usize,
    /// TLS settings for `wss://`; `None` takes the system roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl StreamConfig {
    /// A configuration with a fresh stream id, a 5 s connect timeout and 1 s of send queue.
    pub fn new(url: &str, format: Format, start: StartInfo) -> Self {
        StreamConfig {
            url: url.to_string(),
            format,
            start,
            stream_id: format!("MZ{:032x}", fastrand::u128(..)),
            connect_timeout: Duration::from_secs(5),
            send_queue: 50,
            receive_queue: 64,
            tls: None,
        }
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The application closed the socket.
    AppClosed,
    /// Our side ended it: the call hung up or the stream was stopped.
    Hangup,
    /// The connection or the WebSocket handshake was refused.
    ConnectFailed,
    /// The connection was not up within the connect timeout.
    Timeout,
    /// The socket failed after it was up.
    Error,
}

impl EndReason {
    /// The name used in events and the CDR.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::AppClosed => "app_closed",
            EndReason::Hangup => "hangup",
            EndReason::ConnectFailed => "connect_failed",
            EndReason::Timeout => "timeout",
            EndReason::Error => "error",
        }
    }
}

/// One 20 ms tick of the call's audio: the inbound track, the outbound track or both.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    timestamp_ms: u64,
    len: usize,
    inbound: Option<[i16; MAX_FRAME_SAMPLES]>,
    outbound: Option<[i16; MAX_FRAME_SAMPLES]>,
}

impl AudioFrame {
    /// A frame taken `timestamp_ms` after the stream started; each track at most
    /// [`MAX_FRAME_SAMPLES`] samples (the rest is cut), both the length of the first.
    pub fn new(timestamp_ms: u64, inbound: Option<&[i16]>, outbound: Option<&[i16]>) -> Self {
        let len = inbound
            .or(outbound)
            .map_or(0, |s| s.len().min(MAX_FRAME_SAMPLES));
        let copy = |s: &[i16]| {
            let mut a = [0i16; MAX_FRAME_SAMPLES];
            let n = s.len().min(len);
            a[..n].copy_from_slice(&s[..n]);
            a
        };
        AudioFrame {
            timestamp_ms,
            len,
            inbound: inbound.map(copy),
            outbound: outbound.map(copy),
        }
    }

    /// Leaves out a track the stream does not carry.
    fn keep(&mut self, tracks: Track) {
        match tracks {
            Track::Inbound => self.outbound = None,
            Track::Outbound => self.inbound = None,
            Track::Both => {}
        }
    }

    /// When the frame was taken, in milliseconds since the stream started.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The outbound or the inbound track, when the frame carries it.
    pub fn track(&self, outbound: bool) -> Option<&[i16]> {
        let t = if outbound {
            self.outbound.as_ref()
        } else {
            self.inbound.as_ref()
        };
        t.map(|a| &a[..self.len])
    }
}

/// What the media side hands to the socket.
// Audio inline, not boxed: a media tick hands one over every 20 ms and must not allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Audio of the call.
    Audio(AudioFrame),
    /// A key the caller pressed.
    Dtmf(char),
    /// The echo of a mark whose audio has been played (or cleared).
    Mark(String),
}

/// Counters of one stream, shared with its task.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Messages written to the socket.
    pub sent: AtomicU64,
    /// Messages dropped because the send queue was full.
    pub dropped: AtomicU64,
    /// Messages from the application that could not be used.
    pub malformed: AtomicU64,
}

/// The media side's end of a stream. Dropping it ends the stream with
/// [`EndReason::Hangup`] after a `stop`.
#[derive(Debug)]
pub struct StreamHandle {
    tx: sync_mpsc::SyncSender<Outbound>,
    wake: Arc<Notify>,
    rx: mpsc::Receiver<AppCommand>,
    stats: Arc<StreamStats>,
    _hangup: oneshot::Sender<()>,
}

impl StreamHandle {
    /// Queues `msg` without waiting; `false` when it was dropped (queue full, counted) or
    /// the stream has ended.
    pub fn send(&self, msg: Outbound) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.wake.notify_one();
                true
            }
            Err(sync_mpsc::TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(sync_mpsc::TrySendError::Disconnected(_)) => false,
        }
    }

    /// The next command from the application, if one is waiting.
    pub fn try_recv(&mut self) -> Option<AppCommand> {
        self.rx.try_recv().ok()
    }

    /// Waits for the next command; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<AppCommand> {
        self.rx.recv().await
    }

    /// The stream's counters.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// The stream's counters, to read after the handle is gone.
    pub fn shared_stats(&self) -> Arc<StreamStats> {
        self.stats.clone()
    }
}

/// Starts a stream: the task connects, sends `connected` and `start` (Twilio) or the start
/// frame (L16), then carries audio until either side ends it; it returns why.
pub fn spawn(config: StreamConfig) -> (StreamHandle, JoinHandle<EndReason>) {
    let (handle, task, _connected) = spawn_watched(config);
    (handle, task)
}

/// As [`spawn`], and the returned receiver hears once the socket is up and the opening
/// messages went out (it is dropped unheard when the stream never connects).
pub fn spawn_watched(
    config: StreamConfig,
) -> (StreamHandle, JoinHandle<EndReason>, oneshot::Receiver<()>) {
    let (handle, ends) = channels(config.send_queue, config.receive_queue);
    let (up_tx, up_rx) = oneshot::channel();
    let task = tokio::spawn(run(
        config,
        ends.queue,
        ends.commands,
        ends.hangup,
        up_tx,
        ends.stats,
    ));
    (handle, task, up_rx)
}

/// The socket task's ends of a [`StreamHandle`].
struct TaskEnds {
    queue: OutQueue,
    commands: mpsc::Sender<AppCommand>,
    hangup: oneshot::Receiver<()>,
    stats: Arc<StreamStats>,
}

fn channels(send_queue: usize, receive_queue: usize) -> (StreamHandle, TaskEnds) {
    // std's bounded channel allocates its slots once, up front, so a tick handing over a
    // frame never allocates (tokio's grows in blocks); a Notify wakes the task.
    let (out_tx, out_rx) = sync_mpsc::sync_channel(send_queue.max(1));
    let wake = Arc::new(Notify::new());
    let (in_tx, in_rx) = mpsc::channel(receive_queue.max(1));
    let (hangup_tx, hangup_rx) = oneshot::channel();
    let stats = Arc::new(StreamStats::default());
    let handle = StreamHandle {
        tx: out_tx,
        wake: wake.clone(),
        rx: in_rx,
        stats: stats.clone(),
        _hangup: hangup_tx,
    };
    let ends = TaskEnds {
        queue: OutQueue { rx: out_rx, wake },
        commands: in_tx,
        hangup: hangup_rx,
        stats,
    };
    (handle, ends)
}

/// The task's end of the send queue.
struct OutQueue {
    rx: sync_mpsc::Receiver<Outbound>,
    wake: Arc<Notify>,
}

impl OutQueue {
    /// A message already waiting. `&mut`: the receiver is not `Sync`, so a future holding a
    /// shared borrow of it could not move between threads.
    fn try_next(&mut self) -> Option<Outbound> {
        self.rx.try_recv().ok()
    }

    /// The next message; `None` once the handle is gone and the queue is empty.
    async fn recv(&mut self) -> Option<Outbound> {
        loop {
            match self.rx.try_recv() {
                Ok(o) => return Some(o),
                // A wake-up sent before this wait is kept as a permit, so none is lost.
                Err(sync_mpsc::TryRecvError::Empty) => self.wake.notified().await,
                Err(sync_mpsc::TryRecvError::Disconnected) => return None,
            }
        }
    }
}

/// Turns what the media side hands over into WebSocket messages of one format (public for
/// the benchmarks).
#[doc(hidden)]
pub enum Encoder {
    Twilio(twilio::Encoder),
    L16 { stereo: bool },
}

impl Encoder {
    /// The encoder of `config`'s format.
    pub fn new(config: &StreamConfig) -> Self {
        match config.format {
            Format::Twilio => Encoder::Twilio(twilio::Encoder::new(
                &config.stream_id,
                &config.start.call_id,
            )),
            Format::L16 { .. } => Encoder::L16 {
                stereo: l16::is_stereo(config.start.tracks),
            },
        }
    }

    fn opening(&mut self, config: &StreamConfig) -> Vec<WsMessage> {
        match self {
            Encoder::Twilio(e) => vec![
                WsMessage::text(e.connected()),
                WsMessage::text(e.start(&config.start)),
            ],
            Encoder::L16 { .. } => vec![WsMessage::text(l16::start(
                &config.start,
                config.format.rate(),
            ))],
        }
    }

    /// Appends the messages carrying `msg` to `out`, with only the `tracks` the stream sends.
    pub fn encode(&mut self, mut msg: Outbound, tracks: Track, out: &mut Vec<WsMessage>) {
        if let Outbound::Audio(f) = &mut msg {
            f.keep(tracks);
        }
        match (self, msg) {
            (Encoder::Twilio(e), Outbound::Audio(f)) => {
                for outbound in [false, true] {
                    if let Some(pcm) = f.track(outbound) {
                        out.push(WsMessage::text(e.media(outbound, f.timestamp_ms, pcm)));
                    }
                }
            }
            (Encoder::Twilio(e), Outbound::Dtmf(d)) => out.push(WsMessage::text(e.dtmf(d))),
            (Encoder::Twilio(e), Outbound::Mark(name)) => out.push(WsMessage::text(e.mark(&name))),
            (Encoder::L16 { stereo }, Outbound::Audio(f)) => {
                let (first, second) = match (f.track(false), f.track(true)) {
                    // Two channels on every frame, a missing track as silence.
                    (i, o) if *stereo => (i.unwrap_or(&[]), Some(o.unwrap_or(&[]))),
                    (Some(i), _) => (i, None),
                    (None, Some(o)) => (o, None),
                    (None, None) => return,
                };
                // Straight into the message's own buffer: it is handed over, not copied.
                let mut bytes = Vec::new();
                l16::encode_pcm(first, second, &mut bytes);
                out.push(WsMessage::binary(bytes));
            }
            (Encoder::L16 { .. }, Outbound::Dtmf(d)) => {
                out.push(WsMessage::text(l16::control(&l16::Control::Dtmf {
                    digit: d.to_string(),
                })))
            }
            (Encoder::L16 { .. }, Outbound::Mark(name)) => {
                out.push(WsMessage::text(l16::control(&l16::Control::Mark { name })))
            }
        }
    }

    fn stop(&mut self) -> WsMessage {
        match self {
            Encoder::Twilio(e) => WsMessage::text(e.stop()),
            Encoder::L16 { .. } => WsMessage::text(l16::control(&l16::Control::Stop)),
        }
    }
}

fn connector(config: &StreamConfig) -> Result<Connector, EndReason> {
    if config.url.starts_with("ws://") {
        return Ok(Connector::Plain);
    }
    if !config.url.starts_with("wss://") {
        tracing::warn!(url = %config.url, "stream URL is neither ws:// nor wss://");
        return Err(EndReason::ConnectFailed);
    }
    match &config.tls {
        Some(tls) => Ok(Connector::Rustls(tls.clone())),
        None => crate::sip::tls::client_config(None, true)
            .map(Connector::Rustls)
            .map_err(|e| {
                tracing::warn!(error = %e, "no TLS settings for the stream");
                EndReason::ConnectFailed
            }),
    }
}

async fn run(
    config: StreamConfig,
    mut out_rx: OutQueue,
    in_tx: mpsc::Sender<AppCommand>,
    mut hangup_rx: oneshot::Receiver<()>,
    up: oneshot::Sender<()>,
    stats: Arc<StreamStats>,
) -> EndReason {
    let reason = run_inner(&config, &mut out_rx, in_tx, &mut hangup_rx, up, &stats).await;
    tracing::debug!(stream = %config.stream_id, url = %config.url, reason = reason.as_str(),
        sent = stats.sent.load(Ordering::Relaxed), dropped = stats.dropped.load(Ordering::Relaxed),
        "stream ended");
    reason
}

async fn run_inner(
    config: &StreamConfig,
    out_rx: &mut OutQueue,
    in_tx: mpsc::Sender<AppCommand>,
    hangup_rx: &mut oneshot::Receiver<()>,
    up: oneshot::Sender<()>,
    stats: &StreamStats,
) -> EndReason {
    let connector = match connector(config) {
        Ok(c) => c,
        Err(reason) => return reason,
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        config.url.as_str(),
        Some(
            WebSocketConfig::default()
                .max_message_size(Some(MAX_APP_MESSAGE))
                .max_frame_size(Some(MAX_APP_MESSAGE))
                .read_buffer_size(READ_BUFFER),
        ),
        // Frames are small and due every 20 ms: Nagle would only delay them.
        true,
        Some(connector),
    );
    let ws = tokio::select! {
        _ = &mut *hangup_rx => return EndReason::Hangup,
        r = tokio::time::timeout(config.connect_timeout, connect) => match r {
            Err(_) => return EndReason::Timeout,
            Ok(Err(e)) => {
                tracing::info!(url = %config.url, error = %e, "stream could not connect");
                return EndReason::ConnectFailed;
            }
            Ok(Ok((ws, _response))) => ws,
        },
    };
    let (mut sink, mut source) = ws.split();
    let mut encoder = Encoder::new(config);
    let tracks = config.start.tracks;
    let opening = encoder.opening(config);

    let reason = {
        let encoder = &mut encoder;
        let sink = &mut sink;
        let writer = async {
            for m in opening {
                sink.feed(m).await?;
            }
            sink.flush().await?;
            // Nobody listening is fine: the owner may not care when the stream is up.
            let _ = up.send(());
            let mut batch = Vec::with_capacity(WRITE_BATCH + 1);
            while let Some(o) = out_rx.recv().await {
                encoder.encode(o, tracks, &mut batch);
                // What is already waiting (the other track, a mark) goes out in the same write.
                while batch.len() < WRITE_BATCH {
                    let Some(o) = out_rx.try_next() else { break };
                    encoder.encode(o, tracks, &mut batch);
                }
                let n = batch.len() as u64;
                for m in batch.drain(..) {
                    sink.feed(m).await?;
                }
                sink.flush().await?;
                stats.sent.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<_, tokio_tungstenite::tungstenite::Error>(EndReason::Hangup)
        };
        let reader = async {
            while let Some(msg) = source.next().await {
                let msg = match msg {
                    Ok(WsMessage::Close(_)) => return EndReason::AppClosed,
                    Ok(m) => m,
                    Err(e) => {
                        tracing::info!(error = %e, "stream socket failed");
                        return EndReason::Error;
                    }
                };
                match decode(config.format, msg) {
                    Some(Ok(cmd)) => {
                        // Waiting here holds the application back (TCP flow control)
                        // instead of dropping what it sent; the media side never waits.
                        let Ok(()) = in_tx.send(cmd).await else {
                            return EndReason::Hangup;
                        };
                    }
                    Some(Err(e)) => {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "unusable message from the application");
                    }
                    None => {}
                }
            }
            EndReason::AppClosed
        };
        tokio::select! {
            r = reader => r,
            w = writer => w.unwrap_or_else(|e| {
                tracing::info!(error = %e, "stream socket failed");
                EndReason::Error
            }),
            _ = &mut *hangup_rx => EndReason::Hangup,
        }
    };

    let ending = async {
        if reason == EndReason::Hangup {
            let mut batch = Vec::new();
            while let Some(o) = out_rx.try_next() {
                encoder.encode(o, tracks, &mut batch);
            }
            for m in batch {
                sink.feed(m).await?;
            }
            sink.feed(encoder.stop()).await?;
        }
        sink.close().await
    };
    // The application may be gone or stuck: closing politely is best effort.
    let _ = tokio::time::timeout(CLOSE_GRACE, ending).await;
    reason
}

fn decode(format: Format, msg: WsMessage) -> Option<Result<AppCommand, StreamError>> {
    match (format, msg) {
        (Format::Twilio, WsMessage::Text(t)) => Some(twilio::parse_app(t.as_str())),
        (Format::L16 { .. }, WsMessage::Text(t)) => Some(l16::parse_app(t.as_str())),
        (Format::L16 { .. }, WsMessage::Binary(b)) => {
            Some(l16::decode_pcm(&b).map(AppCommand::Audio))
        }
        (Format::Twilio, WsMessage::Binary(_)) => Some(Err(StreamError::UnexpectedBinary)),
        // Pings are answered by the library; pongs and raw frames carry nothing.
        _ => None,
    }
}

/// The far end of a [`StreamHandle`] with no socket task: what the media side hands over,
/// and a way to play the application. For tests and benchmarks of the media side.
#[doc(hidden)]
pub struct Loopback {
    /// What the media side handed over, in order.
    pub out: sync_mpsc::Receiver<Outbound>,
    /// Commands as the application would send them.
    pub app: mpsc::Sender<AppCommand>,
    _hangup: oneshot::Receiver<()>,
}

/// A handle whose far end is a [`Loopback`] instead of a socket task.
#[doc(hidden)]
pub fn loopback(send_queue: usize, receive_queue: usize) -> (StreamHandle, Loopback) {
    let (handle, ends) = channels(send_queue, receive_queue);
    let far = Loopback {
        out: ends.queue.rx,
        app: ends.commands,
        _hangup: ends.hangup,
    };
    (handle, far)
}
