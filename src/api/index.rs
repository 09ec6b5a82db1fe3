//! The in-memory index of recording sidecars behind `GET /api/recordings`.
//!
//! Listing must stay fast with 100,000 recordings, so the sidecars are read once at start
//! and kept sorted newest first; a date window is two binary searches and paging an
//! unfiltered window is a slice. The index follows the folder in two ways:
//!
//! - the server calls [`RecordingIndex::upsert`] / [`RecordingIndex::remove`] when it
//!   writes or deletes a sidecar, which is immediate;
//! - [`RecordingIndex::refresh`] catches everything else. It costs one `stat` of the folder
//!   while the folder's mtime is unchanged. When it has changed, the folder's names and
//!   inode numbers are listed (no per-file `stat`) and only sidecars that are new or whose
//!   inode changed are read: sidecars are always replaced by rename, so a rewrite shows up
//!   as a new inode.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use memchr::memmem;

use crate::media::record::sidecar::is_safe_id;
use crate::media::record::{names, Sidecar};

/// How often request handlers may trigger a [`RecordingIndex::refresh`] by default.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A folder mtime this close to the scan is "racy": a change in the same timestamp tick
/// would not move it, so the next refresh scans again (as git does for its index).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Errors of the recording index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The recordings folder could not be read.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What to list: filters and one page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Case-insensitive substring of the caller (`from`).
    pub caller: Option<String>,
    /// Case-insensitive substring of the callee (`to`).
    pub callee: Option<String>,
    /// Exact room name.
    pub room: Option<String>,
    /// Only recordings started at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only recordings started before this time (ms since the Unix epoch).
    pub until_ms: Option<i64>,
    /// Matches to skip, newest first.
    pub offset: usize,
    /// Most matches to return.
    pub limit: usize,
}

/// One page of matches and how many matched in all.
#[derive(Debug, Clone)]
pub struct Page {
    /// Matches across all pages.
    pub total: usize,
    /// This page, newest first.
    pub items: Vec<Arc<Sidecar>>,
}

/// One indexed recording with what filtering needs precomputed.
#[derive(Debug)]
struct Entry {
    started_ms: i64,
    from_lc: String,
    to_lc: String,
    sidecar: Arc<Sidecar>,
}

impl Entry {
    fn new(sidecar: Sidecar) -> Entry {
        let started_ms = parse_rfc3339_ms(&sidecar.started).unwrap_or_else(|| {
            tracing::warn!(id = %sidecar.id, started = %sidecar.started, "unparseable start time; listed last");
            i64::MIN
        });
        Entry {
            started_ms,
            from_lc: sidecar.from.to_lowercase(),
            to_lc: sidecar.to.to_lowercase(),
            sidecar: Arc::new(sidecar),
        }
    }

    /// Newest first; the id breaks ties so the order is total and stable across pages.
    fn order(&self, started_ms: i64, id: &str) -> Ordering {
        started_ms
            .cmp(&self.started_ms)
            .then_with(|| id.cmp(&self.sidecar.id))
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Newest first.
    order: Vec<Arc<Entry>>,
    by_id: HashMap<String, Arc<Entry>>,
    /// Sidecar id → inode of `ID.json` at the last scan, readable or not.
    seen: HashMap<String, u64>,
    dir_mtime: Option<SystemTime>,
    racy: bool,
}

impl Inner {
    fn position(&self, e: &Entry) -> Result<usize, usize> {
        self.order
            .binary_search_by(|probe| probe.order(e.started_ms, &e.sidecar.id))
    }

    fn insert(&mut self, sidecar: Sidecar) {
        self.remove(&sidecar.id);
        let entry = Arc::new(Entry::new(sidecar));
        let at = self.position(&entry).unwrap_or_else(|at| at);
        self.order.insert(at, entry.clone());
        self.by_id.insert(entry.sidecar.id.clone(), entry);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Sidecar>> {
        let old = self.by_id.remove(id)?;
        if let Ok(at) = self.position(&old) {
            self.order.remove(at);
        }
        Some(old.sidecar.clone())
    }
}

/// Sidecars of one recordings folder, in memory, newest first.
#[derive(Debug)]
pub struct RecordingIndex {
    dir: PathBuf,
    inner: RwLock<Inner>,
    refresh_interval: Option<Duration>,
    last_refresh: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl RecordingIndex {
    /// Reads every sidecar in `dir` (unreadable ones are skipped with a warning).
    pub fn load(dir: impl Into<PathBuf>) -> Result<RecordingIndex, IndexError> {
        let index = RecordingIndex::from_sidecars(dir, Vec::new());
        index.refresh()?;
        Ok(index)
    }

    /// An index of the given sidecars, with no disk access; a later [`refresh`] makes it
    /// match the folder.
    ///
    /// [`refresh`]: RecordingIndex::refresh
    pub fn from_sidecars(dir: impl Into<PathBuf>, sidecars: Vec<Sidecar>) -> RecordingIndex {
        let mut entries: Vec<Arc<Entry>> = sidecars
            .into_iter()
            .filter(|s| is_safe_id(&s.id))
            .map(|s| Arc::new(Entry::new(s)))
            .collect();
        entries.sort_by(|a, b| a.order(b.started_ms, &b.sidecar.id));
        entries.dedup_by(|a, b| a.sidecar.id == b.sidecar.id);
        let by_id = entries
            .iter()
            .map(|e| (e.sidecar.id.clone(), e.clone()))
            .collect();
        RecordingIndex {
            dir: dir.into(),
            inner: RwLock::new(Inner {
                order: entries,
                by_id,
                ..Inner::default()
            }),
            refresh_interval: Some(DEFAULT_REFRESH_INTERVAL),
            last_refresh: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Sets how often requests may trigger a refresh; `None` leaves it to the owner.
    pub fn with_refresh_interval(mut self, interval: Option<Duration>) -> RecordingIndex {
        self.refresh_interval = interval;
        self
    }

    /// The recordings folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of indexed recordings.
    pub fn len(&self) -> usize {
        self.read().order.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sidecar of `id`, if indexed.
    pub fn get(&self, id: &str) -> Option<Arc<Sidecar>> {
        self.read().by_id.get(id).map(|e| e.sidecar.clone())
    }

    /// Adds or replaces a recording whose `ID.json` is on disk (a refresh drops those that are not); unsafe ids are ignored.
    pub fn upsert(&self, sidecar: Sidecar) {
        if !is_safe_id(&sidecar.id) {
            tracing::warn!(id = %sidecar.id, "not indexing a recording with an unsafe id");
            return;
        }
        self.write().insert(sidecar);
    }

    /// Forgets a recording; returns its sidecar if it was indexed.
    pub fn remove(&self, id: &str) -> Option<Arc<Sidecar>> {
        let mut inner = self.write();
        // A file recreated later may get the same inode number; forgetting it makes the
        // next refresh read that file rather than take it as unchanged.
        inner.seen.remove(id);
        inner.remove(id)
    }

    /// One page of the recordings matching `filter`, newest first.
    pub fn list(&self, filter: &ListFilter) -> Page {
        let inner = self.read();
        let order = &inner.order;
        // Sorted by start time descending, so the date window is a contiguous slice.
        let start = filter
            .until_ms
            .map_or(0, |until| order.partition_point(|e| e.started_ms >= until));
        let end = filter
            .since_ms
            .map_or(order.len(), |since| {
                order.partition_point(|e| e.started_ms >= since)
            })
            .max(start);
        let window = &order[start..end];

        if filter.caller.is_none() && filter.callee.is_none() && filter.room.is_none() {
            let from = filter.offset.min(window.len());
            let to = from.saturating_add(filter.limit).min(window.len());
            return Page {
                total: window.len(),
                items: window[from..to].iter().map(|e| e.sidecar.clone()).collect(),
            };
        }

        // Searchers built once per query: `str::contains` would set one up per entry,
        // which dominates on 100,000 short URIs.
        let caller_lc = filter.caller.as_deref().map(str::to_lowercase);
        let callee_lc = filter.callee.as_deref().map(str::to_lowercase);
        let caller = caller_lc.as_deref().map(memmem::Finder::new);
        let callee = callee_lc.as_deref().map(memmem::Finder::new);
        let room = filter.room.as_deref();
        let mut total = 0usize;
        let mut items = Vec::with_capacity(filter.limit.min(1024));
        for e in window {
            let hit = room.is_none_or(|r| e.sidecar.room.as_deref() == Some(r))
                && caller
                    .as_ref()
                    .is_none_or(|f| f.find(e.from_lc.as_bytes()).is_some())
                && callee
                    .as_ref()
                    .is_none_or(|f| f.find(e.to_lc.as_bytes()).is_some());
            if hit {
                if total >= filter.offset && items.len() < filter.limit {
                    items.push(e.sidecar.clone());
                }
                total += 1;
            }
        }
        Page { total, items }
    }

    /// Whether a request arriving at `now` should call [`refresh_if_due`]; cheap, no I/O.
    ///
    /// [`refresh_if_due`]: RecordingIndex::refresh_if_due
    pub fn refresh_due(&self, now: Instant) -> bool {
        let last = *self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        !self.refreshing.load(AtomicOrdering::Acquire) && self.refresh_due_locked(last, now)
    }

    /// Runs [`refresh`] if the refresh interval has passed at `now` and no other refresh
    /// is running, so concurrent requests never scan the folder twice. Blocking.
    ///
    /// [`refresh`]: RecordingIndex::refresh
    pub fn refresh_if_due(&self, now: Instant) -> Result<bool, IndexError> {
        {
            let mut last = self
                .last_refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !self.refresh_due_locked(*last, now)
                || self.refreshing.swap(true, AtomicOrdering::AcqRel)
            {
                return Ok(false);
            }
            *last = Some(now);
        }
        // Released even if the refresh panics, or no request would refresh again.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, AtomicOrdering::Release);
            }
        }
        let _release = Release(&self.refreshing);
        self.refresh()
    }

    fn refresh_due_locked(&self, last: Option<Instant>, now: Instant) -> bool {
        self.refresh_interval.is_some_and(|interval| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= interval)
        })
    }

    /// Brings the index in line with the folder; returns whether the folder was scanned.
    ///
    /// Cheap when nothing changed (one `stat`); otherwise lists the folder and reads only
    /// new or replaced sidecars. Blocking: call it off the async runtime.
    pub fn refresh(&self) -> Result<bool, IndexError> {
        let io = |op, source| IndexError::Io {
            op,
            path: self.dir.clone(),
            source,
        };
        let mtime = fs::metadata(&self.dir)
            .and_then(|m| m.modified())
            .map_err(|e| io("stat", e))?;
        {
            let inner = self.read();
            if inner.dir_mtime == Some(mtime) && !inner.racy {
                return Ok(false);
            }
        }
        let scan_started = SystemTime::now();
        let on_disk = scan_names(&self.dir).map_err(|e| io("read dir", e))?;

        let (changed, gone): (Vec<(String, u64)>, Vec<String>) = {
            let inner = self.read();
            let changed = on_disk
                .iter()
                .filter(|(id, ino)| inner.seen.get(id.as_str()) != Some(ino))
                .cloned()
                .collect();
            let present: HashSet<&str> = on_disk.iter().map(|(id, _)| id.as_str()).collect();
            let gone = inner
                .seen
                .keys()
                .chain(inner.by_id.keys())
                .filter(|id| !present.contains(id.as_str()))
                .cloned()
                .collect();
            (changed, gone)
        };

        // Files are read without the lock so listing is never held up by the disk.
        let read: Vec<(String, u64, Option<Sidecar>)> = changed
            .into_iter()
            .map(|(id, ino)| {
                let sidecar = read_sidecar(&self.dir, &id);
                (id, ino, sidecar)
            })
            .collect();

        let mut inner = self.write();
        for id in gone {
            inner.seen.remove(&id);
            inner.remove(&id);
        }
        for (id, ino, sidecar) in read {
            inner.seen.insert(id.clone(), ino);
            match sidecar {
                Some(s) => inner.insert(s),
                None => {
                    inner.remove(&id);
                }
            }
        }
        inner.dir_mtime = Some(mtime);
        inner.racy = scan_started
            .duration_since(mtime)
            .map_or(true, |age| age < RACY_WINDOW);
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // matters more than refusing every later request would.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `(id, inode)` of every `ID.json` with a safe id, without a `stat` per file.
fn scan_names(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(id) = names::id_of(Path::new(&name), names::SIDECAR_SUFFIX) else {
            continue;
        };
        if is_safe_id(id) {
            out.push((id.to_owned(), inode(&entry)));
        }
    }
    Ok(out)
}

#[cfg(unix)]
fn inode(entry: &fs::DirEntry) -> u64 {
    use std::os::unix::fs::DirEntryExt;
    entry.ino()
}

/// Without inode numbers a rewritten sidecar is only noticed when it is new or gone.
#[cfg(not(unix))]
fn inode(_entry: &fs::DirEntry) -> u64 {
    0
}

/// The sidecar `dir/ID.json`, if it reads and really describes `id`.
fn read_sidecar(dir: &Path, id: &str) -> Option<Sidecar> {
    match Sidecar::read(&Sidecar::path(dir, id)) {
        // The file name decides where the audio is, so a sidecar claiming another id is
        // not trusted.
        Ok(s) if s.id == id => Some(s),
        Ok(s) => {
            tracing::warn!(file = id, claimed = %s.id, "sidecar id does not match its file name; skipped");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "skipping unreadable recording sidecar");
            None
        }
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (`2024-05-01T12:00:00.250Z`,
/// `…+02:00`), or of a bare date (`2024-05-01`, taken as midnight UTC).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits
            .iter()
            .try_fold(0i64, |acc, d| Some(acc * 10 + i64::from(d - b'0')))
    };
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    if b.get(16) != Some(&b':') || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let frac_start = i + 1;
        i = frac_start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == frac_start {
            return None;
        }
        // Only the first three digits matter at millisecond resolution.
        let digits = &b[frac_start..i.min(frac_start + 3)];
        millis = digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
            * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    // A leap second is counted as the last millisecond-resolution second of the minute.
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_settled_folder_is_not_scanned() {
        let dir =
            std::env::temp_dir().join(format!("switchboard-index-{:016x}", fastrand::u64(..)));
        fs::create_dir_all(&dir).unwrap();
        let index = RecordingIndex::from_sidecars(&dir, Vec::new());
        assert!(index.refresh().unwrap());
        // Just written, so the folder's mtime is racy and it is scanned again.
        assert!(index.refresh().unwrap());
        index.write().racy = false;
        assert!(!index.refresh().unwrap());
        fs::write(dir.join("x.json"), b"{}").unwrap();
        // The mtime may not have moved within the filesystem's timestamp tick; mark the
        // last scan as older to see the change.
        index.write().dir_mtime = Some(SystemTime::UNIX_EPOCH);
        assert!(index.refresh().unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rfc3339_parses_utc_offsets_fractions_and_dates() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.123456Z"), Some(123));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:00.000Z"),
            Some(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:00:00+02:00"),
            Some(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T11:30:00-00:30"),
            Some(1_714_564_800_000)
        );
        assert_eq!(parse_rfc3339_ms("2024-05-01"), Some(1_714_521_600_000));
        assert_eq!(parse_rfc3339_ms("2024-02-29"), Some(1_709_164_800_000));
        for bad in [
            "",
            "2024-05-01T12:00:00",
            "2024-13-01",
            "2023-02-29",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+2:00",
            "2024-05-01T12:00:00Zjunk",
            "2024-5-01",
            "２０２４-05-01",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
