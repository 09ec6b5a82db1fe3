//! Headless Chromium for tests, driven over WebDriver: chromedriver started on a free
//! loopback port and killed on drop, and a session with the flags a container needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

/// Longest wait for the driver or a new session.
const WAIT: Duration = Duration::from_secs(15);

/// A child process killed on drop.
pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first of `names` found on PATH.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver, or None (a failure under `CI=true`).
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    match (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser", "google-chrome"]),
    ) {
        (Some(d), Some(b)) => Some((d, b)),
        _ => {
            let msg =
                "chromium and chromedriver are needed (apt-get install chromium chromium-driver)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("skipping the browser test: {msg}");
            None
        }
    }
}

/// Starts chromedriver on a free loopback port; answers once it listens (at most 10 s).
pub async fn start_chromedriver(driver: &Path) -> (Killed, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let child = Killed(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {addr} within 10 s");
}

/// A headless Chromium session through chromedriver at `driver_addr`.
pub async fn session(driver_addr: SocketAddr, browser: &Path) -> Client {
    session_with(driver_addr, browser, &[]).await
}

/// The flags for WebRTC calls: microphone and camera allowed without asking, the
/// microphone playing `wav` (looped), and ICE candidates on loopback, which Chromium
/// otherwise never gathers (tests keep every packet on 127.0.0.1).
pub fn webrtc_args(wav: &Path) -> Vec<String> {
    vec![
        "--use-fake-ui-for-media-stream".into(),
        "--use-fake-device-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}", wav.display()),
        "--allow-loopback-in-peer-connection".into(),
        // Host candidates as addresses, not mDNS names nobody here resolves.
        "--disable-features=WebRtcHideLocalIpsWithMdns".into(),
    ]
}

/// [`session`] with `extra` command-line flags.
pub async fn session_with(driver_addr: SocketAddr, browser: &Path, extra: &[String]) -> Client {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1000",
        "--mute-audio",
    ]
    .map(String::from)
    .into();
    args.extend_from_slice(extra);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": browser, "args": args }),
    );
    tokio::time::timeout(
        WAIT,
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{driver_addr}")),
    )
    .await
    .expect("browser session in time")
    .expect("browser session")
}

/// Opens `url` and loads the vendored JsSIP into it as `window.JsSIP`.
pub async fn open_with_jssip(c: &Client, url: &str) {
    c.goto(url).await.unwrap();
    let jssip = std::fs::read_to_string("tests/fixtures/jssip.min.js").unwrap();
    // The bundle declares a `var`: inside the injected function it needs lifting to window.
    c.execute(&format!("{jssip};\nwindow.JsSIP = JsSIP;"), vec![])
        .await
        .unwrap();
}
