//! SIGKILL during a recording: after a restart every recording is a valid WAV holding the
//! audio up to the kill (less at most about a second), and its sidecar says it was repaired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::uac::{offer, Uac, UacState};

/// The server process, killed (SIGKILL) and reaped when dropped, so no test leaves it running.
struct Proc(Child);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the real binary on port 0 with `recordings`, returning it and its SIP address.
fn spawn(recordings: &Path, rtp: &str) -> (Proc, SocketAddr) {
    // CDRs next to the recordings, never in the working directory.
    let config = recordings.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[cdr]\ndir = {:?}\n",
            recordings.with_extension("cdr").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Proc(
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--sip-listen", "127.0.0.1:0", "--rtp-ports", rtp])
            .arg("--config")
            .arg(&config)
            .args(["--http-listen", "127.0.0.1:0"])
            .arg("--recordings")
            .arg(recordings)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("READY within 10 s");
        if let Some(rest) = line.strip_prefix("READY sip=") {
            let addr = rest.split_whitespace().next().unwrap();
            return (child, addr.parse().unwrap());
        }
    }
}

async fn record_then_kill(child: &mut Proc, sip: SocketAddr) -> f64 {
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut uac = Uac::new(socket.local_addr().unwrap(), sip, false);
    uac.invite(
        Instant::now(),
        "message",
        &offer("127.0.0.1", rtp.port(), "sendrecv"),
    );
    let mut buf = vec![0u8; 65536];
    let until = Instant::now() + Duration::from_secs(5);
    while uac.state != UacState::Confirmed {
        assert!(Instant::now() < until, "call not answered");
        while let Some(m) = uac.outbox.pop_front() {
            socket.send_to(&m, sip).await.unwrap();
        }
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
        {
            uac.handle(Instant::now(), &buf[..n]);
        }
        uac.handle_timeout(Instant::now());
    }
    while let Some(m) = uac.outbox.pop_front() {
        socket.send_to(&m, sip).await.unwrap();
    }
    let sdp = String::from_utf8(uac.answer.clone().unwrap()).unwrap();
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let media = SocketAddr::new(sip.ip(), port);
    let greeting = support::greeting_secs();
    rtp.exchange(
        media,
        &vec![0i16; ((greeting + 0.3) * 8000.0) as usize],
        Duration::ZERO,
    )
    .await;
    let tone_secs = 3.0;
    rtp.exchange(
        media,
        &support::rtp::tone("1000/3000@-10", 3000),
        Duration::ZERO,
    )
    .await;
    child.kill();
    tone_secs
}

#[test]
fn a_recording_survives_sigkill() {
    let dir = std::env::temp_dir().join(format!("sb-crash-{}", fastrand::u64(..)));
    let rec = dir.join("recordings");
    std::fs::create_dir_all(&rec).unwrap();
    let (mut child, sip) = spawn(&rec, "43800-43899");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt.block_on(record_then_kill(&mut child, sip));

    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = names(&rec);
    assert!(
        before.iter().any(|n| n.ends_with(".wav.part")),
        "a recording in progress is a .part file: {before:?}"
    );
    // Even before repair, the .part's header is valid up to the last update.
    let part = before.iter().find(|n| n.ends_with(".wav.part")).unwrap();
    let early = hound::WavReader::open(rec.join(part)).unwrap().len();
    assert!(early > 8000, "the .part header covers {early} samples");

    // Restart: the leftover is repaired before the server is READY.
    let (mut again, _) = spawn(&rec, "43800-43899");
    again.kill();
    let after = names(&rec);
    assert!(!after.iter().any(|n| n.ends_with(".part")), "{after:?}");
    let json = after
        .iter()
        .find(|n| n.ends_with(".json"))
        .expect("sidecar");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join(json)).unwrap()).unwrap();
    assert_eq!(meta["state"], "repaired", "{meta}");
    let wav = rec.join(meta["file"].as_str().unwrap());
    let samples: Vec<i16> = hound::WavReader::open(&wav)
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let secs = samples.len() as f64 / 8000.0;
    // Audio up to the kill, less at most ~1 s (the header is brought up to date every second);
    // the recording began a little before the tone.
    assert!(secs >= sent - 1.2, "kept {secs:.2} s of {sent:.1} s");
    assert!(secs <= sent + 1.5, "kept {secs:.2} s of {sent:.1} s");
    // The kept audio is the tone (judged on the clearest half second of its last second: a
    // loaded machine can delay packets enough for a few frames to be concealed).
    let tail = &samples[samples.len().saturating_sub(8000)..];
    let tone = tail
        .chunks(4000)
        .map(|c| support::rtp::tone_power(c, 1000.0))
        .fold(0.0, f64::max);
    assert!(tone > 0.9, "the kept audio is not the tone: {tone:.2}");
    let _ = std::fs::remove_dir_all(&dir);
}
