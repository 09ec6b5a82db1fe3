//! Drives baresip headless: a config folder per phone (a tone WAV as its microphone, no
//! sound device, `sndfile` writing what it hears), commands and events over `ctrl_tcp`.
#![allow(dead_code)]

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::phones::{free_port_pair, wait_for, write_tone_wav_at, Client, Phone};

/// How long a baresip may live: every test ends well before.
const LIFETIME_SECS: u32 = 90;
/// Bound on any one wait for a baresip event or answer.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Options {
    /// The tone it sends, Hz.
    pub tone_hz: u32,
    /// SIP over TCP instead of UDP.
    pub tcp: bool,
    /// Its own RTP port (and RTCP on the next), instead of any free one.
    pub rtp_port: Option<u16>,
    /// Milliseconds of audio per packet it asks for (`a=ptime`) and sends; baresip's 20 if
    /// None.
    pub ptime: Option<u32>,
    /// The password it answers digest challenges with (its user name is the account's).
    pub auth_pass: Option<String>,
    /// SIP over TLS to the server (whose address is then its TLS listener), trusting the CA
    /// in this PEM file.
    pub tls_ca: Option<PathBuf>,
    /// Its account's `mediaenc` (`srtp`: best effort, `srtp-mand`: RTP/SAVP).
    pub mediaenc: Option<&'static str>,
    /// Its account's `audio_codecs` (e.g. `g722/16000/1`, `opus/48000/2`), instead of
    /// `pcmu,pcma`; the codec modules named are loaded.
    pub audio_codecs: Option<&'static str>,
    /// The rate of its audio source and player (`ausrc_srate`, `auplay_srate`) and of its
    /// tone file, Hz. At the codec's own rate baresip sends the file as it is: its own
    /// resampler is no flat channel (from 8 to 16 kHz it passes 1 kHz at -1.8 dB, 1250 Hz
    /// at -8 dB and nothing from 2 kHz up; from 16 to 48 kHz, 7 kHz at -4 dB).
    pub srate: u32,
    /// Sends RFC 6464 audio levels in its RTP (`audio_level yes`).
    pub audio_level: bool,
    /// What its microphone says instead of the tone: samples at `srate`.
    pub source: Option<Vec<i16>>,
}

impl Options {
    pub fn tone(tone_hz: u32) -> Options {
        Options {
            tone_hz,
            tcp: false,
            rtp_port: None,
            ptime: None,
            auth_pass: None,
            tls_ca: None,
            mediaenc: None,
            audio_codecs: None,
            srate: 8000,
            audio_level: false,
            source: None,
        }
    }
}

/// One running baresip.
pub struct Baresip {
    client: Client,
    dir: PathBuf,
    ctrl: TcpStream,
    rx: mpsc::Receiver<Value>,
    /// Messages that arrived while a command waited for its answer, for the next wait.
    backlog: std::collections::VecDeque<Value>,
    /// Every event and answer received, for failure messages.
    pub seen: Vec<Value>,
    token: u64,
    server: SocketAddr,
    tcp: bool,
    tls: bool,
    /// Its SIP port on 127.0.0.1 (where calls to it go).
    pub sip_port: u16,
}

impl Baresip {
    /// Writes the phone's config under `parent/name` and starts it; returns once its
    /// control port answers.
    pub fn start(parent: &Path, name: &str, server: SocketAddr, options: Options) -> Baresip {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let tone = dir.join("tone.wav");
        match &options.source {
            Some(pcm) => super::phones::write_wav_at(&tone, pcm, options.srate),
            None => write_tone_wav_at(&tone, options.tone_hz, 30, options.srate),
        }
        let sip = free_port_pair();
        let ctrl = crate::common::free_port();
        let rtp = options.rtp_port.unwrap_or_else(free_port_pair);
        let config = format!(
            "sip_listen 127.0.0.1:{sip}\n\
             audio_source aufile,{tone}\n\
             audio_player aubridge,nowhere\n\
             ausrc_srate {srate}\nauplay_srate {srate}\nausrc_channels 1\nauplay_channels 1\n\
             rtp_ports {rtp}-{rtp_end}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n{wide}module aufile.so\nmodule aubridge.so\nmodule sndfile.so\n\
             {srtp}module account.so\n\
             module_app menu.so\nmodule_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl}\n\
             snd_path {dir}\n{ca}audio_level {level}\n",
            tone = tone.display(),
            srate = options.srate,
            level = if options.audio_level { "yes" } else { "no" },
            rtp_end = rtp + 1,
            dir = dir.display(),
            wide = ["g722", "opus"]
                .iter()
                .filter(|m| options.audio_codecs.is_some_and(|c| c.contains(*m)))
                .map(|m| format!("module {m}.so\n"))
                .collect::<String>(),
            // Before the accounts, which name it.
            srtp = if options.mediaenc.is_some() {
                "module srtp.so\n"
            } else {
                ""
            },
            ca = options
                .tls_ca
                .as_ref()
                .map_or(String::new(), |ca| format!("sip_cafile {}\n", ca.display())),
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let transport = transport(options.tcp, options.tls_ca.is_some());
        let mediaenc = options
            .mediaenc
            .map_or(String::new(), |m| format!(";mediaenc={m}"));
        let ptime = options
            .ptime
            .map_or(String::new(), |ms| format!(";ptime={ms}"));
        let auth = options
            .auth_pass
            .as_ref()
            .map_or(String::new(), |p| format!(";auth_pass={p}"));
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{name}@127.0.0.1:{}{transport}>;regint=0;answermode=auto;audio_codecs={codecs}{ptime}{auth}{mediaenc}\n",
                server.port(),
                codecs = options.audio_codecs.unwrap_or("pcmu,pcma"),
            ),
        )
        .unwrap();
        let client = Client::spawn(
            "baresip",
            &["-n", "127.0.0.1", "-4", "-f", &dir.display().to_string()],
            LIFETIME_SECS,
            dir.join("baresip.log"),
            &[],
        );
        let ctrl_addr = SocketAddr::from(([127, 0, 0, 1], ctrl));
        // baresip gives no sign of being ready other than its control port accepting.
        let stream = wait_for("baresip's control port", EVENT_TIMEOUT, || {
            TcpStream::connect(ctrl_addr).ok()
        });
        let (tx, rx) = mpsc::channel();
        let reader = stream.try_clone().unwrap();
        std::thread::spawn(move || read_netstrings(reader, tx));
        Baresip {
            client,
            dir,
            ctrl: stream,
            rx,
            backlog: Default::default(),
            seen: Vec::new(),
            token: 0,
            server,
            tcp: options.tcp,
            tls: options.tls_ca.is_some(),
            sip_port: sip,
        }
    }

    /// The SIP URI of `user` on the server under test.
    pub fn uri(&self, user: &str) -> String {
        format!(
            "sip:{user}@{}{}",
            self.server,
            transport(self.tcp, self.tls)
        )
    }

    /// Sends a command and waits for its answer; panics if baresip refuses it.
    pub fn command(&mut self, command: &str, params: &str) -> Value {
        self.token += 1;
        let token = self.token.to_string();
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        write!(self.ctrl, "{}:{body},", body.len()).unwrap();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(v) = self.rx.recv_timeout(left) else {
                panic!(
                    "baresip did not answer {command}\n{}",
                    self.client.log_text()
                )
            };
            self.seen.push(v.clone());
            if v["response"] == true && v["token"] == token.as_str() {
                break v;
            }
            // An event the command caused may come before its answer.
            self.backlog.push_back(v);
        };
        assert!(
            answer["ok"] == true,
            "baresip refused {command} {params}: {answer}\n{}",
            self.client.log_text()
        );
        answer
    }

    /// Waits for the next message matching `pred`.
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, EVENT_TIMEOUT, pred)
    }

    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.backlog.pop_front() {
                if pred(&v) {
                    return v;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "baresip: no {what} within {timeout:?}; seen {:#?}\n{}",
                    self.seen,
                    self.client.log_text()
                ),
            }
        }
    }

    /// Waits for the event `kind` (CALL_ESTABLISHED, CALL_CLOSED, CALL_REMOTE_SDP …).
    pub fn event(&mut self, kind: &str) -> Value {
        self.wait(kind, |v| v["event"] == true && v["type"] == kind)
    }

    /// Dials `user` and waits until the call is established; returns its Call-ID.
    pub fn call(&mut self, user: &str) -> String {
        let uri = self.uri(user);
        self.command("dial", &uri);
        let ev = self.wait(&format!("CALL_ESTABLISHED with {uri}"), |v| {
            v["type"] == "CALL_ESTABLISHED" || v["type"] == "CALL_CLOSED"
        });
        assert_eq!(ev["type"], "CALL_ESTABLISHED", "call to {uri} failed: {ev}");
        ev["id"].as_str().unwrap_or_default().to_string()
    }

    /// Hangs up and waits for CALL_CLOSED.
    pub fn hangup(&mut self) {
        self.command("hangup", "");
        self.event("CALL_CLOSED");
    }

    /// Sends one key as an RFC 4733 event.
    pub fn key(&mut self, key: char) {
        self.command("sndcode", &key.to_string());
    }

    /// Everything this phone heard in its last call (`sndfile`'s decoder dump).
    pub fn heard(&self) -> Vec<i16> {
        crate::phones::read_wav(&self.last_dump("dec"))
    }

    /// The last call's `sndfile` dump of `side` (`dec`: heard, `enc`: sent).
    fn last_dump(&self, side: &str) -> PathBuf {
        let suffix = format!("-{side}.wav");
        let mut dumps: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(&suffix))
            .collect();
        dumps.sort();
        dumps
            .pop()
            .unwrap_or_else(|| panic!("baresip wrote no dump\n{}", self.client.log_text()))
    }

    /// What this phone heard in its last call, at the rate its decoder ran (16 kHz for
    /// G.722, 48 kHz for Opus), channels averaged; and that rate.
    pub fn heard_at_rate(&self) -> (Vec<i16>, u32) {
        dump_at_rate(&self.last_dump("dec"))
    }

    /// What this phone sent in its last call, at the rate its encoder ran; and that rate.
    pub fn sent_at_rate(&self) -> (Vec<i16>, u32) {
        dump_at_rate(&self.last_dump("enc"))
    }

    /// The server's RTP port of the current call, as baresip logs it on the first packet
    /// it receives.
    pub fn server_rtp_port(&self) -> u16 {
        wait_for("baresip's first RTP packet", EVENT_TIMEOUT, || {
            let log = std::fs::read_to_string(&self.client.log).ok()?;
            let (_, rest) = log.rsplit_once("receiving from 127.0.0.1:")?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
    }

    /// SIGKILLs baresip: it sends nothing more, not even a BYE.
    pub fn kill(&mut self) {
        self.client.kill_program();
    }

    pub fn log_text(&self) -> String {
        self.client.log_text()
    }
}

impl Phone for Baresip {
    fn dial(&mut self, user: &str) {
        self.call(user);
    }
    fn hang_up(&mut self) {
        self.hangup();
    }
    fn heard(&self) -> Vec<i16> {
        Baresip::heard(self)
    }
}

/// A `sndfile` dump at whatever rate it was written, channels averaged; and its rate.
fn dump_at_rate(path: &Path) -> (Vec<i16>, u32) {
    let bytes = std::fs::read(path).unwrap();
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let channels = usize::from(u16::from_le_bytes(bytes[22..24].try_into().unwrap()));
    // The data chunk is found by hand: a dump still open has its size at zero.
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .unwrap_or_else(|| panic!("{}: no data chunk", path.display()));
    let pcm = bytes[data + 8..]
        .chunks_exact(2 * channels)
        .map(|frame| {
            let sum: i32 = frame
                .chunks_exact(2)
                .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
                .sum();
            (sum / channels as i32) as i16
        })
        .collect();
    (pcm, rate)
}

/// Reads baresip's netstrings (`LEN:JSON,`) into `tx` until the connection closes.
fn read_netstrings(stream: TcpStream, tx: mpsc::Sender<Value>) {
    let mut r = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut byte = [0u8];
        loop {
            if r.read_exact(&mut byte).is_err() {
                return;
            }
            match byte[0] {
                b':' => break,
                d @ b'0'..=b'9' => len = len * 10 + usize::from(d - b'0'),
                _ => return,
            }
        }
        let mut body = vec![0; len + 1];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        body.truncate(len);
        if let Ok(v) = serde_json::from_slice(&body) {
            if tx.send(v).is_err() {
                return;
            }
        }
    }
}

/// The URI parameter for the phone's SIP transport.
fn transport(tcp: bool, tls: bool) -> &'static str {
    match (tls, tcp) {
        (true, _) => ";transport=tls",
        (false, true) => ";transport=tcp",
        (false, false) => "",
    }
}
