//! Drives linphonec headless: its own HOME and rc file, WAV files instead of a sound card,
//! commands on stdin and call states read from stdout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::phones::{free_port_pair, write_tone_wav, Client, Phone};

/// Bound on any one wait for a state line.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// One running linphonec.
pub struct Linphone {
    client: Client,
    stdin: ChildStdin,
    rx: mpsc::Receiver<String>,
    /// Every stdout line so far.
    pub lines: Vec<String>,
    heard: PathBuf,
    server: SocketAddr,
}

impl Linphone {
    /// Starts linphonec in `parent/name` sending a `tone_hz` tone, with `sip_settings`
    /// (`key=value` lines) added to its rc file's `[sip]` section; `lifetime_secs` bounds it.
    pub fn start(
        parent: &Path,
        name: &str,
        server: SocketAddr,
        tone_hz: u32,
        sip_settings: &[&str],
        lifetime_secs: u32,
    ) -> Linphone {
        let dir = parent.join(name);
        // Without its database folder linphonec never opens its SIP port.
        std::fs::create_dir_all(dir.join(".local/share/linphone")).unwrap();
        let tone = dir.join("tone.wav");
        write_tone_wav(&tone, tone_hz, 90);
        let rc = dir.join("rc");
        std::fs::write(
            &rc,
            format!(
                "[sip]\nsip_port={}\nsip_tcp_port=0\nsip_tls_port=0\nbind_address=127.0.0.1\n\
                 use_ipv6=0\n{}\n[rtp]\naudio_rtp_port={}\n",
                free_port_pair(),
                sip_settings.join("\n"),
                free_port_pair()
            ),
        )
        .unwrap();
        // stdbuf: its stdout is a file, and its state lines must not sit in a buffer.
        let mut client = Client::spawn(
            "stdbuf",
            &["-oL", "linphonec", "-c", &rc.display().to_string()],
            lifetime_secs,
            dir.join("linphonec.log"),
            &[("HOME", dir.as_path())],
        );
        let stdin = client.child.stdin.take().unwrap();
        // stdout goes to the log file; the log is followed to read the states.
        let (tx, rx) = mpsc::channel();
        let log = client.log.clone();
        std::thread::spawn(move || follow(&log, tx));
        let heard = dir.join("heard.wav");
        let mut phone = Linphone {
            client,
            stdin,
            rx,
            lines: Vec::new(),
            heard,
            server,
        };
        phone.send("soundcard use files");
        phone.wait_line("the files sound card", |l| l.contains("Using wav files"));
        phone.send(&format!("play {}", tone.display()));
        let heard = phone.heard.display().to_string();
        phone.send(&format!("record {heard}"));
        phone
    }

    /// One command line on stdin.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for a stdout line matching `pred`.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_for(what, STATE_TIMEOUT, pred)
    }

    pub fn wait_line_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                // Empty lines are the follower's keep-alive.
                Ok(line) if line.is_empty() => {}
                Ok(line) => {
                    self.lines.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "linphonec: no {what} within {timeout:?}\n{}",
                    self.client.log_text()
                ),
            }
        }
    }

    /// Calls `user` on the server and waits until media is established.
    pub fn call(&mut self, user: &str) {
        self.send(&format!("call sip:{user}@{}", self.server));
        let line = self.wait_line("the call's outcome", |l| {
            l.contains("Media streams established") || call_over(l)
        });
        assert!(
            line.contains("Media streams established"),
            "linphonec call to {user} failed: {line}\n{}",
            self.client.log_text()
        );
    }

    /// Ends the call and waits for linphonec to report it ended.
    pub fn hangup(&mut self) {
        self.send("terminate");
        self.wait_line("the end of the call", call_over);
    }

    /// What it heard (the file `record` writes).
    pub fn heard(&self) -> Vec<i16> {
        crate::phones::read_wav(&self.heard)
    }

    pub fn log_text(&self) -> String {
        self.client.log_text()
    }
}

impl Phone for Linphone {
    fn dial(&mut self, user: &str) {
        self.call(user);
    }
    fn hang_up(&mut self) {
        self.hangup();
    }
    fn heard(&self) -> Vec<i16> {
        Linphone::heard(self)
    }
}

/// A line saying the call failed or ended ("Call 1 with URI error.", "… ended (…)").
pub fn call_over(line: &str) -> bool {
    let line = line.trim_start_matches("linphonec> ");
    line.starts_with("Call ") && (line.ends_with(" error.") || line.contains(" ended"))
}

/// Sends each line appended to `path` to `tx`, until the receiver goes away.
fn follow(path: &Path, tx: mpsc::Sender<String>) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    let mut reader = BufReader::new(file);
    let mut partial = String::new();
    loop {
        let mut chunk = String::new();
        match reader.read_line(&mut chunk) {
            Ok(0) => {
                // The writer is still running: poll the file for more.
                std::thread::sleep(Duration::from_millis(20));
                if tx.send(String::new()).is_err() {
                    return;
                }
            }
            Ok(_) => {
                partial.push_str(&chunk);
                if partial.ends_with('\n') {
                    let line = std::mem::take(&mut partial);
                    if tx.send(line.trim_end().to_string()).is_err() {
                        return;
                    }
                }
            }
            Err(_) => return,
        }
    }
}
