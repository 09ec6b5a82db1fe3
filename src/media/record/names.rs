//! The names of a recording's files in the recordings folder, built and parsed here only.
//!
//! For a recording `ID`: the audio `ID.wav` (written as `ID.wav.part` until it is finished),
//! the sidecar `ID.json`, and for a room's mixed recording the timeline `ID.timeline.json`
//! (`ID.timeline.jsonl` while it is appended to). A room member's track is a recording of
//! its own whose id is `ID-mN`. Atomic rewrites go through a hidden `.NAME.tmp`.

use std::path::{Path, PathBuf};

/// Suffix of a finished recording.
pub const WAV_SUFFIX: &str = ".wav";
/// Suffix of a recording still being written.
pub const PART_SUFFIX: &str = ".wav.part";
/// Suffix of a sidecar.
pub const SIDECAR_SUFFIX: &str = ".json";
/// Suffix of a finished timeline (one JSON document).
pub const TIMELINE_SUFFIX: &str = ".timeline.json";
/// Suffix of a timeline still being written (JSON Lines).
pub const TIMELINE_LINES_SUFFIX: &str = ".timeline.jsonl";
/// Suffix of the temporary file an atomic write goes through.
const TMP_SUFFIX: &str = ".tmp";

/// `ID.wav`, as a sidecar names its audio.
pub fn wav_name(id: &str) -> String {
    format!("{id}{WAV_SUFFIX}")
}

/// `ID.timeline.json`, as a sidecar names its timeline.
pub fn timeline_name(id: &str) -> String {
    format!("{id}{TIMELINE_SUFFIX}")
}

/// The finished audio of `id` in `dir`.
pub fn wav_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(wav_name(id))
}

/// The audio of `id` in `dir` while it is written.
pub fn part_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{PART_SUFFIX}"))
}

/// The sidecar of `id` in `dir`.
pub fn sidecar_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{SIDECAR_SUFFIX}"))
}

/// The finished timeline of `id` in `dir`.
pub fn timeline_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(timeline_name(id))
}

/// The timeline of `id` in `dir` while it is written.
pub fn timeline_lines_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{TIMELINE_LINES_SUFFIX}"))
}

/// The files whose presence means that recording `id` exists in `dir`: its audio, finished
/// or being written, and its sidecar.
pub fn claimed_paths(dir: &Path, id: &str) -> [PathBuf; 3] {
    [wav_path(dir, id), sidecar_path(dir, id), part_path(dir, id)]
}

/// The id of room member number `member`'s track of the room recording `room_id`.
pub fn track_id(room_id: &str, member: u64) -> String {
    format!("{room_id}-m{member}")
}

/// The hidden temporary file in `dir` that `name` is written to before it is renamed.
pub fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}{TMP_SUFFIX}"))
}

/// Whether a file name is a sidecar's temporary file, left behind by a crash mid-write.
pub fn is_sidecar_tmp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(&format!("{SIDECAR_SUFFIX}{TMP_SUFFIX}"))
}

/// The id in the file name of `path` if it ends in `suffix` (one of the suffixes above).
pub fn id_of<'p>(path: &'p Path, suffix: &str) -> Option<&'p str> {
    path.file_name()?.to_str()?.strip_suffix(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_id() {
        let dir = Path::new("/rec");
        assert_eq!(wav_path(dir, "a1"), Path::new("/rec/a1.wav"));
        assert_eq!(part_path(dir, "a1"), Path::new("/rec/a1.wav.part"));
        assert_eq!(sidecar_path(dir, "a1"), Path::new("/rec/a1.json"));
        assert_eq!(timeline_path(dir, "a1"), Path::new("/rec/a1.timeline.json"));
        assert_eq!(
            timeline_lines_path(dir, "a1"),
            Path::new("/rec/a1.timeline.jsonl")
        );
        assert_eq!(tmp_path(dir, "a1.json"), Path::new("/rec/.a1.json.tmp"));
        assert_eq!(track_id("a1", 3), "a1-m3");
        assert_eq!(
            claimed_paths(dir, "a1"),
            ["/rec/a1.wav", "/rec/a1.json", "/rec/a1.wav.part"].map(PathBuf::from)
        );
        assert_eq!(id_of(&part_path(dir, "a1"), PART_SUFFIX), Some("a1"));
        assert_eq!(id_of(&sidecar_path(dir, "a1"), SIDECAR_SUFFIX), Some("a1"));
        assert_eq!(id_of(&wav_path(dir, "a1"), PART_SUFFIX), None);
        assert!(is_sidecar_tmp(".a1.json.tmp"));
        assert!(!is_sidecar_tmp("a1.json.tmp") && !is_sidecar_tmp(".a1.wav.tmp"));
    }
}
