//! Call detail records: one JSON line per finished call, appended to `DIR/YYYY-MM-DD.jsonl`
//! (the UTC date the call ended) by a writer thread, off the call path.
//!
//! Call tasks fill a [`Cdr`] and [`CdrWriter::submit`] it; submitting never blocks: when
//! the bounded queue is full the record is dropped and counted. Reading back for the API is
//! [`read_day`], which opens only `DIR/DATE.jsonl` for a date it has checked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::index::parse_rfc3339_ms;
use crate::metrics::Metrics;

/// Records waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Which side ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HangupSide {
    /// The caller (BYE or CANCEL from the caller).
    Caller,
    /// The server (BYE from us, or a refusal).
    Server,
}

/// RTP statistics of a call's media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RtpStats {
    /// Packets received.
    pub packets: u64,
    /// Packets lost (expected minus received).
    pub lost: u64,
    /// Interarrival jitter, in milliseconds (RFC 3550 estimate).
    pub jitter_ms: f64,
}

/// One finished call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cdr {
    /// SIP Call-ID.
    pub call_id: String,
    /// The From header.
    pub from: String,
    /// The dialled user.
    pub to: String,
    /// RFC 3339 time the INVITE arrived.
    pub started_at: String,
    /// RFC 3339 time of the answer; absent for unanswered calls.
    pub answered_at: Option<String>,
    /// RFC 3339 time the call ended.
    pub ended_at: String,
    /// Milliseconds from the answer to the end (0 when never answered).
    pub duration_ms: u64,
    /// Who ended the call.
    pub hangup: HangupSide,
    /// Why it ended (`caller_bye`, `server_bye`, `cancelled`, `refused`, `ack_timeout`,
    /// `timeout`, `session_expired`, `lost`).
    pub cause: String,
    /// SIP status of a refusal (487 for a cancelled call) or 200 once answered.
    pub sip_code: Option<u16>,
    /// Keys pressed during the call, in order.
    pub digits: String,
    /// Recordings made of the call.
    pub recordings: Vec<String>,
    /// Media statistics.
    pub rtp: RtpStats,
    /// A call we answered or one we placed.
    #[serde(default)]
    pub direction: Direction,
    /// The trunk a placed call went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<String>,
    /// For a leg a call placed (`dial`), that call's Call-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_call_id: Option<String>,
    /// Where a call we answered came from, `ip:port`: behind a trusted proxy the caller's
    /// address it passed on, not the proxy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Streams of the call's audio to applications, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::stream::run::StreamRecord>,
    /// The answering-machine verdict, when the call asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amd: Option<AmdRecord>,
    /// Why the server hung up, when not at the script's plain `hangup()` (`no RTP`,
    /// `maximum duration`, `media transport: DTLS handshake did not finish in time`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How a call we answered reached us: `udp`, `tcp`, `tls`, or `webrtc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// An answering-machine verdict in a call's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AmdRecord {
    /// `HUMAN`, `MACHINE`, `NOTSURE` or `HANGUP`.
    pub status: String,
    /// Why, as Asterisk's AMDCAUSE.
    pub cause: String,
    /// Length of the greeting heard, in milliseconds.
    pub greeting_ms: u64,
    /// Words counted.
    pub words: u64,
}

/// Which way a call went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A call we answered.
    #[default]
    Inbound,
    /// A call we placed.
    Outbound,
}

/// Why CDRs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The date is not `YYYY-MM-DD`.
    #[error("date must be YYYY-MM-DD: {0:?}")]
    BadDate(String),
    /// Reading the day's file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// A checked `YYYY-MM-DD` date; the only way a file name is formed from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrDate(String);

impl CdrDate {
    /// Accepts exactly `YYYY-MM-DD` naming a real calendar day.
    pub fn parse(s: &str) -> Result<CdrDate, CdrError> {
        let ok = s.len() == 10
            && s.bytes().enumerate().all(|(i, b)| {
                if matches!(i, 4 | 7) {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
            && parse_rfc3339_ms(s).is_some();
        if ok {
            Ok(CdrDate(s.to_string()))
        } else {
            Err(CdrError::BadDate(s.to_string()))
        }
    }

    /// The UTC date of a time.
    pub fn of(t: SystemTime) -> CdrDate {
        let text = humantime::format_rfc3339_seconds(t).to_string();
        CdrDate(text.get(..10).unwrap_or("1970-01-01").to_string())
    }

    /// The UTC date of an RFC 3339 time, or of now when it does not parse.
    pub fn of_rfc3339(s: &str) -> CdrDate {
        let t = parse_rfc3339_ms(s)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
            .unwrap_or_else(SystemTime::now);
        CdrDate::of(t)
    }

    /// `YYYY-MM-DD`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The day's file in `dir`.
    pub fn file(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.jsonl", self.0))
    }
}

/// A page of one day's CDRs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CdrPage {
    /// The day listed.
    pub date: String,
    /// Records that day, across all pages.
    pub total: usize,
    /// This page, newest first.
    #[schema(value_type = Vec<Cdr>)]
    pub items: Vec<serde_json::Value>,
}

/// Reads one day's records, newest first, skipping lines that are not JSON objects (a line
/// cut short by a crash). A missing file is an empty day.
pub fn read_day(
    dir: &Path,
    date: &CdrDate,
    offset: usize,
    limit: usize,
) -> Result<CdrPage, CdrError> {
    let path = date.file(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(CdrError::Io { path, source }),
    };
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    let total = records.len();
    let items = records.into_iter().rev().skip(offset).take(limit).collect();
    Ok(CdrPage {
        date: date.0.clone(),
        total,
        items,
    })
}

/// Hands CDRs to the writer thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct CdrWriter {
    tx: SyncSender<Cdr>,
    metrics: Arc<Metrics>,
}

impl CdrWriter {
    /// Starts the writer thread appending to files in `dir` (created on the first write).
    /// The thread ends when every `CdrWriter` clone is dropped and the queue is written.
    pub fn spawn(
        dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(CdrWriter, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || write_loop(&dir, rx, &m))?;
        Ok((CdrWriter { tx, metrics }, thread))
    }

    /// Queues a record; never blocks. Answers false (and counts a drop) when the queue is
    /// full or the writer is gone.
    pub fn submit(&self, cdr: Cdr) -> bool {
        match self.tx.try_send(cdr) {
            Ok(()) => true,
            Err(TrySendError::Full(c)) => {
                tracing::warn!(call_id = %c.call_id, "CDR queue full; record dropped");
                self.metrics.cdr_dropped();
                false
            }
            Err(TrySendError::Disconnected(c)) => {
                tracing::warn!(call_id = %c.call_id, "CDR writer stopped; record dropped");
                self.metrics.cdr_dropped();
                false
            }
        }
    }
}

fn write_loop(dir: &Path, rx: Receiver<Cdr>, metrics: &Metrics) {
    let mut created = false;
    for cdr in rx {
        if !created {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create the CDR folder");
            }
            created = true;
        }
        match append(dir, &cdr) {
            Ok(()) => metrics.cdr_written(),
            Err(e) => {
                tracing::warn!(call_id = %cdr.call_id, error = %e, "CDR not written");
                metrics.cdr_dropped();
            }
        }
    }
}

fn append(dir: &Path, cdr: &Cdr) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(cdr).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let path = CdrDate::of_rfc3339(&cdr.ended_at).file(dir);
    // One write per line, in append mode, so a reader never sees two records interleaved.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&line)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A finished call ending at `ended_at`.
    pub(crate) fn sample(call_id: &str, ended_at: &str) -> Cdr {
        Cdr {
            call_id: call_id.into(),
            from: "<sip:alice@example.com>".into(),
            to: "ivr".into(),
            started_at: "2026-03-01T10:00:00.000Z".into(),
            answered_at: Some("2026-03-01T10:00:01.000Z".into()),
            ended_at: ended_at.into(),
            duration_ms: 59_000,
            hangup: HangupSide::Caller,
            cause: "caller_bye".into(),
            sip_code: None,
            digits: "12#".into(),
            recordings: vec!["rec-1".into()],
            rtp: RtpStats {
                packets: 3000,
                lost: 2,
                jitter_ms: 1.5,
            },
            direction: Direction::Inbound,
            trunk: None,
            parent_call_id: None,
            source: Some("192.0.2.10:5060".into()),
            streams: Vec::new(),
            amd: None,
            reason: None,
            transport: None,
        }
    }

    fn temp_dir() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "switchboard-cdr-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn dates_are_strict() {
        for ok in ["2026-03-01", "2024-02-29"] {
            assert_eq!(CdrDate::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "2026-3-01",
            "2026-02-30",
            "../../etc/passwd",
            "2026-03-01/..",
            "2026-03-01.jsonl",
            "20260301",
            "2026-03-0a",
            "",
        ] {
            assert!(CdrDate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            CdrDate::of_rfc3339("2026-03-01T23:30:00.000-02:00").as_str(),
            "2026-03-02"
        );
    }

    proptest::proptest! {
        #[test]
        fn an_accepted_date_names_a_file_inside_the_folder(s in "\\PC{0,12}") {
            if let Ok(d) = CdrDate::parse(&s) {
                let dir = Path::new("/cdr");
                let file = d.file(dir);
                proptest::prop_assert_eq!(file.parent(), Some(dir));
                proptest::prop_assert_eq!(d.as_str().len(), 10);
            }
        }

        #[test]
        fn the_date_of_any_time_is_accepted_back(secs in 0u64..8_000_000_000) {
            let d = CdrDate::of(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            proptest::prop_assert!(CdrDate::parse(d.as_str()).is_ok());
        }
    }

    #[test]
    fn records_are_appended_per_utc_day_and_read_newest_first() {
        let dir = temp_dir().join("cdr");
        let metrics = Arc::new(Metrics::default());
        let (w, thread) = CdrWriter::spawn(dir.clone(), metrics.clone()).unwrap();
        assert!(w.submit(sample("a", "2026-03-01T10:01:00.000Z")));
        assert!(w.submit(sample("b", "2026-03-01T11:00:00.000Z")));
        assert!(w.submit(sample("c", "2026-03-02T00:00:01.000+00:00")));
        drop(w);
        thread.join().unwrap();
        assert_eq!(metrics.cdrs_written(), 3);
        let day = CdrDate::parse("2026-03-01").unwrap();
        let page = read_day(&dir, &day, 0, 10).unwrap();
        assert_eq!(page.total, 2);
        let ids: Vec<_> = page.items.iter().map(|v| v["call_id"].clone()).collect();
        assert_eq!(ids, ["b", "a"]);
        let back: Cdr = serde_json::from_value(page.items[1].clone()).unwrap();
        assert_eq!(back, sample("a", "2026-03-01T10:01:00.000Z"));
        assert_eq!(page.items[0]["hangup"], "caller");
        let paged = read_day(&dir, &day, 1, 10).unwrap();
        assert_eq!(paged.items.len(), 1);
        assert_eq!(paged.items[0]["call_id"], "a");
        let next = read_day(&dir, &CdrDate::parse("2026-03-02").unwrap(), 0, 10).unwrap();
        assert_eq!(next.total, 1);
        let none = read_day(&dir, &CdrDate::parse("2020-01-01").unwrap(), 0, 10).unwrap();
        assert_eq!(none.total, 0);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = temp_dir();
        let line = serde_json::to_string(&sample("a", "2026-03-01T10:00:00Z")).unwrap();
        std::fs::write(
            dir.join("2026-03-01.jsonl"),
            format!("{line}\n{{\"call_id\":\"b\"\n"),
        )
        .unwrap();
        let page = read_day(&dir, &CdrDate::parse("2026-03-01").unwrap(), 0, 10).unwrap();
        assert_eq!(page.total, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_writer_that_is_gone_drops_and_counts() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = sync_channel(1);
        drop(rx);
        let w = CdrWriter {
            tx,
            metrics: metrics.clone(),
        };
        assert!(!w.submit(sample("a", "2026-03-01T10:00:00Z")));
        assert_eq!(metrics.cdrs_dropped(), 1);
    }
}
