//! What the real-phone tests share: finding a client program (a hard failure in CI), a private
//! loopback-only network namespace per test, tone WAVs, reading what a phone heard, and the
//! server's event stream.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// True when missing clients must fail the run rather than skip it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the test (returns false) with a notice, or fails it in CI.
fn unavailable(what: &str) -> bool {
    if in_ci() {
        panic!("{what}");
    }
    eprintln!("skipping real-client test: {what}");
    false
}

/// The programs on the PATH, or false (after a notice; a panic in CI) when one is missing.
pub fn have(programs: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in programs {
        if !std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
            return unavailable(&format!(
                "{program} not found (Debian: apt-get install baresip linphone-cli iproute2)"
            ));
        }
    }
    true
}

/// Moves the calling thread (and every process and thread it starts from now on) into a
/// fresh network namespace with only `lo`, up. Phones there cannot reach or advertise any
/// address but 127.0.0.1 (linphone otherwise puts the host's other address in its SDP), and
/// ports chosen in one test cannot collide with another's. Needs CAP_SYS_ADMIN (root).
pub fn isolate_network() -> bool {
    // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's namespace; no memory
    // is shared with the call.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        return unavailable(&format!(
            "cannot create a network namespace ({}); the real-client tests run as root",
            std::io::Error::last_os_error()
        ));
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    match up {
        Ok(s) if s.success() => true,
        other => unavailable(&format!("`ip link set lo up` failed: {other:?}")),
    }
}

/// Writes `secs` of a sine at `freq` Hz, -10 dBm0, as an 8 kHz mono 16-bit WAV.
pub fn write_tone_wav(path: &Path, freq: u32, secs: usize) {
    write_tone_wav_at(path, freq, secs, 8000);
}

/// Like [`write_tone_wav`], sampled at `rate` Hz.
pub fn write_tone_wav_at(path: &Path, freq: u32, secs: usize, rate: u32) {
    use switchboard::media::tone::{ToneGenerator, ToneSpec};
    use switchboard::rtp::types::ClockRate;
    let spec: ToneSpec = format!("{freq}/{}@-10", secs * 1000).parse().unwrap();
    let clock = ClockRate::new(rate).expect("a tone file's rate is not zero");
    let mut generator =
        ToneGenerator::new(&spec, clock).unwrap_or_else(|e| panic!("{freq} Hz at {rate} Hz: {e}"));
    let mut pcm = vec![0i16; secs * rate as usize];
    generator.fill(&mut pcm);
    write_wav_at(path, &pcm, rate);
}

/// `pcm` as a mono 16-bit WAV at `rate`.
pub fn write_wav_at(path: &Path, pcm: &[i16], rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in pcm {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// An 8 kHz mono WAV as samples. Files still being written (a header not yet patched) are
/// read to their end.
pub fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    read_wav_bytes(&bytes, &path.display().to_string())
}

/// Like [`read_wav`] for a WAV in memory.
pub fn read_wav_bytes(bytes: &[u8], what: &str) -> Vec<i16> {
    // The data chunk is found by hand: a client killed mid-call leaves its size at zero.
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .unwrap_or_else(|| panic!("{what}: no data chunk"));
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let channels = u16::from_le_bytes(bytes[22..24].try_into().unwrap());
    assert_eq!((rate, channels), (8000, 1), "{what}: not 8 kHz mono");
    bytes[data + 8..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// `pcm[from_ms..to_ms]`, with negative times counted from the end.
pub fn window(pcm: &[i16], from_ms: i64, to_ms: i64) -> &[i16] {
    let at = |ms: i64| {
        let n = ms * 8;
        let i = if n < 0 { pcm.len() as i64 + n } else { n };
        i.clamp(0, pcm.len() as i64) as usize
    };
    let (a, b) = (at(from_ms), at(to_ms));
    &pcm[a.min(b)..b]
}

/// How a stretch of audio measures: its level and the share of its energy at some tones.
pub struct Heard {
    pub dbfs: f64,
    pub shares: Vec<(u32, f64)>,
}

impl std::fmt::Display for Heard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} dBFS", self.dbfs)?;
        for (freq, share) in &self.shares {
            write!(f, ", {freq} Hz {:.0}%", share * 100.0)?;
        }
        Ok(())
    }
}

/// Level and tone shares of `pcm`, over blocks of 200 ms (the median block, so one join
/// beep or a lost packet does not decide).
pub fn measure(pcm: &[i16], freqs: &[u32]) -> Heard {
    if pcm.len() < 1600 {
        // Less than one block heard: nothing to measure, which is silence.
        return Heard {
            dbfs: f64::NEG_INFINITY,
            shares: freqs.iter().map(|&f| (f, 0.0)).collect(),
        };
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let blocks: Vec<&[i16]> = pcm.chunks_exact(1600).collect();
    Heard {
        dbfs: median(
            blocks
                .iter()
                .map(|b| switchboard::media::level::rms_dbfs(b))
                .collect(),
        ),
        shares: freqs
            .iter()
            .map(|&f| {
                let shares = blocks
                    .iter()
                    .map(|b| crate::support::rtp::tone_power(b, f64::from(f)))
                    .collect();
                (f, median(shares))
            })
            .collect(),
    }
}

impl Heard {
    pub fn share(&self, freq: u32) -> f64 {
        self.shares
            .iter()
            .find(|(f, _)| *f == freq)
            .map_or(0.0, |s| s.1)
    }

    /// Panics unless this is mostly `freq` at about the level sent (-10 dBm0 ≈ -13 dBFS).
    pub fn assert_tone(&self, freq: u32, what: &str) {
        eprintln!("{what}: {self}");
        assert!(
            self.share(freq) > 0.8 && (-20.0..-9.0).contains(&self.dbfs),
            "{what}: expected the {freq} Hz tone at about -13 dBFS, heard {self}"
        );
    }

    /// Panics if `freq` is audible (above 5% of the energy, at a level above -50 dBFS).
    pub fn assert_without(&self, freq: u32, what: &str) {
        eprintln!("{what}: {self}");
        assert!(
            self.share(freq) < 0.05 || self.dbfs < -50.0,
            "{what}: {freq} Hz must not be heard, heard {self}"
        );
    }
}

/// What every phone driver does, for tests that do not care which phone it is.
pub trait Phone {
    /// Calls `user` on the server; returns once the call is up.
    fn dial(&mut self, user: &str);
    /// Hangs up; returns once the phone says the call is over.
    fn hang_up(&mut self);
    /// Everything the phone heard in its last call, 8 kHz.
    fn heard(&self) -> Vec<i16>;
}

/// A client run under `timeout`, its stdout and stderr in one log file. Killed on drop.
pub struct Client {
    pub child: Child,
    pub log: PathBuf,
}

impl Client {
    /// Starts `program args` under `timeout secs` with its output to `log`.
    pub fn spawn(
        program: &str,
        args: &[&str],
        secs: u32,
        log: PathBuf,
        env: &[(&str, &Path)],
    ) -> Client {
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", &secs.to_string(), program])
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Client { child, log }
    }

    /// The client's own process id (the child of `timeout`).
    pub fn program_pid(&self) -> Option<u32> {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// SIGKILLs the client itself (not `timeout`) and waits, bounded, until it is gone.
    pub fn kill_program(&mut self) {
        let pid = self.program_pid().expect("client process not found");
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}/exe")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "--- {} ---\n{}",
            self.log.display(),
            crate::common::tail(&text, 80)
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The client first: killing `timeout` alone would leave it running, unbounded.
        if let Some(pid) = self.program_pid() {
            // SAFETY: kill(2) on a process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

/// Waits (bounded) until `f` returns something.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's event stream (`/api/events`), read by a thread into a channel.
pub struct Events {
    rx: mpsc::Receiver<Value>,
    /// Events received and not yet taken by a wait, oldest first.
    pending: Vec<Value>,
    /// Every event seen so far, for failure messages and later questions.
    pub seen: Vec<Value>,
}

impl Events {
    /// Subscribes; returns once the server has sent its `: connected` comment, so no event
    /// published after this returns is missed.
    pub fn subscribe(http: SocketAddr) -> Events {
        let mut s = TcpStream::connect(http).unwrap();
        write!(
            s,
            "GET /api/events HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(s);
        let mut chunked = false;
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "event stream closed"
            );
            if line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
            {
                chunked = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = reader.get_ref().set_read_timeout(None);
            let mut text = String::new();
            let mut ready = Some(ready_tx);
            loop {
                let piece = if chunked {
                    let mut size = String::new();
                    if reader.read_line(&mut size).unwrap_or(0) == 0 {
                        return;
                    }
                    let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                        return;
                    };
                    let mut body = vec![0; n + 2];
                    if n == 0 || reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    body.truncate(n);
                    body
                } else {
                    let mut buf = vec![0; 4096];
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf[..n].to_vec(),
                    }
                };
                text.push_str(&String::from_utf8_lossy(&piece));
                while let Some(end) = text.find('\n') {
                    let line: String = text.drain(..=end).collect();
                    if line.starts_with(": connected") {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    if let Some(data) = line.trim_end().strip_prefix("data:") {
                        if let Ok(v) = serde_json::from_str(data.trim()) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("event stream sent no `: connected`");
        Events {
            rx,
            pending: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// The next event (among those not yet taken) of `kind` for which `pred` holds.
    pub fn wait(&mut self, kind: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_wait(kind, timeout, pred).unwrap_or_else(|| {
            panic!(
                "no {kind} event within {timeout:?}; events seen: {:#?}",
                self.seen
            )
        })
    }

    /// Like [`Events::wait`], but None when `timeout` passes first.
    pub fn try_wait(
        &mut self,
        kind: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let matches = |ev: &Value| ev["type"] == kind && pred(ev);
        if let Some(i) = self.pending.iter().position(matches) {
            return Some(self.pending.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.rx.recv_timeout(left).ok()?;
            self.seen.push(ev.clone());
            if matches(&ev) {
                return Some(ev);
            }
            self.pending.push(ev);
        }
    }

    /// Events that have arrived by now, without waiting.
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(ev) = self.rx.try_recv() {
            self.seen.push(ev.clone());
            self.pending.push(ev);
        }
        &self.seen
    }
}

/// A loopback UDP port `p` with `p + 1` free as well (RTP and RTCP, or baresip's SIP and
/// TLS ports).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let p = crate::common::free_port();
        if p < u16::MAX
            && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no free loopback port pair");
}
