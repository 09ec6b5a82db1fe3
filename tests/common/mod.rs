//! Shared by the end-to-end tests: start the real server binary, find SIPp, run a SIPp
//! scenario against the server.

// Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the server may take to print its READY line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// SIPp's own global timeout (`-timeout`); it fails the run when reached.
const SIPP_TIMEOUT_SECS: u64 = 40;
/// Backstop in case SIPp ignores its own timeout: it is killed after this.
const SIPP_KILL_AFTER: Duration = Duration::from_secs(SIPP_TIMEOUT_SECS + 20);
/// How long SIPp waits for any one expected message before failing the call.
const SIPP_RECV_TIMEOUT: &str = "5s";

/// A directory for one test's files. Removed when the test passes, kept (and its path
/// printed) when it fails, so the logs can be read afterwards.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "switchboard-test-{}-{n}-{label}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Hands out RTP port ranges that never overlap between the servers of one test binary
/// (its tests run in parallel). The block is chosen by process id so that two test runs
/// on one machine are unlikely to share ports either; all of it stays below Linux's
/// ephemeral range so OS-chosen ports do not collide with it.
pub fn rtp_ports(count: u16) -> (u16, u16) {
    const FIRST: u16 = 20_000;
    const BLOCK: u16 = 1_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let count = count.max(2) & !1; // whole RTP/RTCP pairs, so every range starts even
    let offset = NEXT.fetch_add(count, Ordering::Relaxed);
    assert!(
        offset + count <= BLOCK,
        "RTP ports exhausted: raise BLOCK or give servers smaller ranges"
    );
    let low = FIRST + (std::process::id() % 10) as u16 * BLOCK + offset;
    (low, low + count - 1)
}

/// The server under test: this crate's binary, or `SWITCHBOARD_BIN` to run the same
/// tests against another build (a release binary, say).
pub fn server_binary() -> PathBuf {
    std::env::var_os("SWITCHBOARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard")))
}

pub struct ServerOptions {
    /// TOML written to a file and passed with `--config`.
    pub config: Option<String>,
    /// Size of the RTP port range.
    pub rtp_port_count: u16,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            config: None,
            rtp_port_count: 20,
        }
    }
}

/// A running `switchboard serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub sip: SocketAddr,
    /// The HTTP API.
    pub http: SocketAddr,
    /// SIP over TLS, when the config has `tls_listen`.
    pub tls: Option<SocketAddr>,
    pub rtp: (u16, u16),
    log: PathBuf,
    dir: TempDir,
}

impl Server {
    pub fn start(label: &str) -> Server {
        Server::start_with(label, ServerOptions::default())
    }

    pub fn start_with(label: &str, options: ServerOptions) -> Server {
        let dir = TempDir::new(label);
        let rtp = rtp_ports(options.rtp_port_count);
        let recordings = dir.path().join("recordings");
        std::fs::create_dir_all(&recordings).unwrap();
        let log = dir.path().join("server.log");

        let mut cmd = Command::new(server_binary());
        cmd.arg("serve")
            .args(["--sip-listen", "127.0.0.1:0"])
            .args(["--rtp-ports", &format!("{}-{}", rtp.0, rtp.1)])
            .args(["--http-listen", "127.0.0.1:0"])
            .arg("--recordings")
            .arg(&recordings);
        // CDRs go to the test's folder, never to the working directory.
        let toml = format!(
            "[cdr]\ndir = {:?}\n\n{}",
            dir.path().join("cdr").display().to_string(),
            options.config.as_deref().unwrap_or("")
        );
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, toml).unwrap();
        cmd.arg("--config").arg(path);
        // The log goes to a file rather than a pipe: nobody has to drain it, and it
        // is there to print when a test fails.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_binary().display()));

        // Lines arrive through a channel so the wait for READY can be bounded; the
        // reader keeps draining stdout afterwards so the server never blocks on it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });

        let mut server = Server {
            child,
            sip: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            rtp,
            log,
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(sip) = parse_ready(&line) {
                        server.sip = sip;
                        server.http = line
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("http=")?.parse().ok())
                            .unwrap_or(server.http);
                        server.tls = line
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("tls=")?.parse().ok());
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "server printed no READY line within {READY_TIMEOUT:?}\n{}",
                    server.log_text()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().ok();
                    panic!(
                        "server exited ({status:?}) before printing READY\n{}",
                        server.log_text()
                    )
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the server to exit on its own: its exit status, or `None`
    /// while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        // Polled with a deadline: std has no wait-with-timeout for a child.
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr so far, for failure messages.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "--- server log ({}) ---\n{}",
            self.log.display(),
            tail(&text, 200)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `READY sip=127.0.0.1:PORT` (further `key=value` fields are allowed).
fn parse_ready(line: &str) -> Option<SocketAddr> {
    let mut words = line.split_whitespace();
    if words.next()? != "READY" {
        return None;
    }
    words.find_map(|w| w.strip_prefix("sip=")?.parse().ok())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `SIPP` if set, else `sipp` on the PATH. When it is missing the SIPp tests are skipped
/// with a notice, except in CI (`CI=true`), where that is an error.
pub fn find_sipp() -> Option<PathBuf> {
    let found = match std::env::var_os("SIPP") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("sipp"))
                .find(|p| p.is_file())
        }),
    };
    if found.is_none() {
        let msg = "sipp not found: install SIPp (Debian/Ubuntu: apt-get install sip-tester) \
                   or point SIPP at the binary";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("skipping SIPp test: {msg}");
    }
    found
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// SIPp's `-t` mode: one socket (one UDP socket, or one TCP connection) for all calls.
    fn sipp_mode(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        })
    }
}

/// One SIPp run: a scenario file from `tests/sipp/`, the user part of the Request-URI,
/// how many calls, at what rate.
pub struct Sipp<'a> {
    pub scenario: &'a str,
    pub service: &'a str,
    pub transport: Transport,
    pub calls: u32,
    /// Calls per second; SIPp's default when `None`.
    pub rate: Option<u32>,
    /// Log every message (`-trace_msg`); too much for load runs.
    pub trace_messages: bool,
    /// `-key NAME VALUE` pairs: `[NAME]` in the scenario becomes VALUE.
    pub keys: Vec<(String, String)>,
    /// More options, e.g. `-au USER -ap PASSWORD` for `[authentication]`.
    pub args: Vec<String>,
    /// SIPp's own port (a scenario that plays the server needs one known beforehand);
    /// a free one when `None`.
    pub local_port: Option<u16>,
    /// Further options, e.g. `-rtp_echo`.
    pub extra_args: Vec<String>,
}

impl<'a> Sipp<'a> {
    pub fn new(scenario: &'a str, service: &'a str, transport: Transport) -> Sipp<'a> {
        Sipp {
            scenario,
            service,
            transport,
            calls: 1,
            rate: None,
            trace_messages: true,
            keys: Vec::new(),
            args: Vec::new(),
            local_port: None,
            extra_args: Vec::new(),
        }
    }

    /// Runs SIPp to completion (bounded by its `-timeout`, and killed if it outlives
    /// that) against `target`, keeping its logs in a fresh directory under `dir`.
    pub fn run(&self, sipp: &Path, target: SocketAddr, dir: &Path) -> SippRun {
        // The local port is picked here, free at the time of asking; another process
        // may take it before SIPp binds it, and SIPp then exits 254 having sent
        // nothing, so that case alone is retried with another port.
        const BIND_FAILED: i32 = 254;
        let mut attempt = 0;
        loop {
            let port = self.local_port.unwrap_or_else(free_port);
            let run = self.run_once(sipp, target, dir, port);
            attempt += 1;
            if attempt == 3 || run.status.and_then(|s| s.code()) != Some(BIND_FAILED) {
                return run;
            }
        }
    }

    fn run_once(&self, sipp: &Path, target: SocketAddr, dir: &Path, port: u16) -> SippRun {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = dir.join(format!("sipp-{n}-{}-{}", self.scenario, self.transport));
        std::fs::create_dir_all(&dir).unwrap();
        let scenario_file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(format!("{}.xml", self.scenario));
        assert!(scenario_file.is_file(), "no {}", scenario_file.display());

        let mut cmd = Command::new(sipp);
        cmd.arg(target.to_string())
            .arg("-sf")
            .arg(&scenario_file)
            .args(["-s", self.service])
            .args(
                self.keys
                    .iter()
                    .flat_map(|(k, v)| ["-key", k.as_str(), v.as_str()]),
            )
            .args(&self.args)
            .args(["-t", self.transport.sipp_mode()])
            // SIPp's own choice of local port races with other SIPp processes when
            // they all start at once (it probes 5060 upwards), so it is given one.
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            // Likewise its RTP port (default 6000), used by scenarios that play captures.
            .args(["-mp", &free_port().to_string()])
            .args(["-m", &self.calls.to_string()])
            .args([
                "-timeout",
                &format!("{SIPP_TIMEOUT_SECS}s"),
                "-timeout_error",
            ])
            .args(["-recv_timeout", SIPP_RECV_TIMEOUT])
            .args(["-max_recv_loops", "1000"])
            .args(&self.extra_args)
            .arg("-nostdin")
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join("errors.log"))
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(dir.join("screen.log"));
        if let Some(rate) = self.rate {
            cmd.args(["-r", &rate.to_string()]);
        }
        if self.trace_messages {
            cmd.arg("-trace_msg")
                .arg("-message_file")
                .arg(dir.join("messages.log"));
        }
        // SIPp redraws its screen on stdout; the final one is in screen.log. It runs in the
        // test's folder, where scenarios find the captures a test generated.
        cmd.current_dir(dir.parent().unwrap_or(&dir))
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout.log")).unwrap())
            .stderr(File::create(dir.join("stderr.log")).unwrap());
        let command_line = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", sipp.display()));

        // Polled with a deadline: std has no wait-with-timeout for a child.
        let deadline = Instant::now() + SIPP_KILL_AFTER;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        SippRun {
            status,
            dir,
            command_line,
        }
    }
}

/// Starts SIPp playing a server scenario (it sends nothing before it receives) on a port of
/// its own, in a thread; returns the port once SIPp listens there (or has exited), and the
/// run to join.
pub fn start_uas(
    sipp: PathBuf,
    run: Sipp<'static>,
    dir: PathBuf,
) -> (u16, std::thread::JoinHandle<SippRun>) {
    let port = run.local_port.unwrap_or_else(free_port);
    let transport = run.transport;
    let handle = std::thread::spawn(move || {
        let run = Sipp {
            local_port: Some(port),
            ..run
        };
        // The target is never used: the scenario answers whoever sends to it.
        run.run(&sipp, SocketAddr::from(([127, 0, 0, 1], 9)), &dir)
    });
    // Bound by SIPp once binding the port here fails.
    for _ in 0..200 {
        let taken = match transport {
            Transport::Udp => std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
            Transport::Tcp => std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
        };
        if taken || handle.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    (port, handle)
}

/// A loopback port that is free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..20 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

pub struct SippRun {
    /// `None` when SIPp had to be killed.
    pub status: Option<ExitStatus>,
    pub dir: PathBuf,
    command_line: String,
}

impl SippRun {
    /// SIPp exits 0 only when every call succeeded.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Every message SIPp logged as received (needs `trace_messages`).
    pub fn received_messages(&self) -> Vec<String> {
        // Each entry starts with a dashed line (plus a timestamp), then a line such as
        // "UDP message received [N] bytes :", then the message.
        let log = self.read("messages.log");
        let mut messages = Vec::new();
        let mut current: Option<String> = None;
        for line in log.lines() {
            if line.starts_with("-----------") {
                messages.extend(current.take());
            } else if let Some(msg) = current.as_mut() {
                msg.push_str(line);
                msg.push('\n');
            } else if line.contains("message received") && !line.starts_with("Unexpected") {
                current = Some(String::new());
            }
        }
        messages.extend(current);
        messages
    }

    /// A counter from SIPp's final statistics screen, e.g. "Successful call".
    pub fn counter(&self, name: &str) -> Option<u64> {
        let screen = self.read("screen.log");
        let line = screen.lines().rfind(|l| l.trim_start().starts_with(name))?;
        line.rsplit('|').next()?.trim().parse().ok()
    }

    /// Everything useful for a failure message.
    pub fn report(&self) -> String {
        let status = match self.status {
            Some(s) => format!("{s}"),
            None => format!("killed after {SIPP_KILL_AFTER:?}"),
        };
        format!(
            "sipp {status}\n{}\n--- sipp errors ---\n{}\n--- sipp stderr ---\n{}\n\
             --- sipp final screen ---\n{}\n--- last messages ---\n{}\n(files in {})",
            self.command_line,
            tail(&self.read("errors.log"), 60),
            tail(&self.read("stderr.log"), 20),
            tail(&self.read("screen.log"), 60),
            tail(&self.read("messages.log"), 80),
            self.dir.display()
        )
    }
}

/// The RTP packets of 20 ms payloads in order: payload type `pt`, sequence numbers from 0,
/// timestamps stepping by `ticks` a packet, one SSRC.
pub fn rtp_packets(pt: u8, ssrc: u32, ticks: u32, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * ticks).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(payload);
            p
        })
        .collect()
}

/// Writes RTP packets, one every 20 ms from 127.0.0.1:9000 to 127.0.0.1:9001, as a pcap
/// file SIPp's `play_pcap_audio` can replay (Ethernet, IPv4, UDP; no checksums).
pub fn write_rtp_pcap(path: &Path, packets: &[Vec<u8>]) {
    let mut out = Vec::new();
    // Global header: microsecond timestamps, version 2.4, snaplen 65535, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, rtp) in packets.iter().enumerate() {
        let at_us = i as u64 * 20_000;
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let frame_len = 14 + ip_len;
        out.extend_from_slice(&((at_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((at_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame_len as u32).to_le_bytes());
        out.extend_from_slice(&(frame_len as u32).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00]);
        out.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8]);
        out.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        out.extend_from_slice(&9000u16.to_be_bytes());
        out.extend_from_slice(&9001u16.to_be_bytes());
        out.extend_from_slice(&(udp_len as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(rtp);
    }
    std::fs::write(path, out).unwrap();
}

/// A capture of one key pressed as in-band tones: 100 ms of the key's two frequencies at
/// -10 dBm0 then 100 ms of silence, in 20 ms A-law (payload type 8) packets.
pub fn inband_key_pcap(path: &Path, key: char) {
    use switchboard::media::codec::g711::alaw_encode_slice;
    use switchboard::media::dtmf::Digit;
    use switchboard::media::tone::{ToneGenerator, ToneSpec};
    use switchboard::rtp::types::ClockRate;
    let digit = Digit::from_char(key).unwrap();
    let spec = ToneSpec::dtmf(digit, 100, 100).with_level(-10.0).unwrap();
    let mut g = ToneGenerator::new(&spec, ClockRate::HZ_8000).unwrap();
    let mut pcm = vec![0i16; 1600];
    g.fill(&mut pcm);
    let payloads: Vec<Vec<u8>> = pcm
        .chunks(160)
        .map(|frame| {
            let mut payload = vec![0u8; 160];
            alaw_encode_slice(frame, &mut payload);
            payload
        })
        .collect();
    let ssrc = 0x5eed_0000u32 + key as u32;
    write_rtp_pcap(path, &rtp_packets(8, ssrc, 160, &payloads));
}

/// A minimal HTTP/1.1 request over loopback (no body): the status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (status, body)
}
