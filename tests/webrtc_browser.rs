//! Headless Chromium as a caller, with real WebRTC media (its ICE agent, DTLS and SRTP):
//! the call page (`/call/{number}`) joins a room where an in-process SIP caller sends
//! another tone, and each hears the other; JsSIP in the same browser calls the echo over
//! ws:// and hears its tone back; and keys sent with `RTCDTMFSender` reach a script's
//! `collect()` and the CDR; the page asks for the API token or takes `?token=`, and leaving
//! it hangs up. The browser's microphone is a tone WAV; what it hears is
//! measured in the page by the call page's WebAudio analyser (`window.callStats()`).
//!
//! Each test runs in its own network namespace with only `lo` (server, chromedriver and
//! Chromium inside), so nothing can leave 127.0.0.1 whatever Chromium gathers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/phones.rs"]
mod phones;
mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fantoccini::Client;
use serde_json::Value;
use support::rtp::{peak_tone_power, tone, RtpPeer};
use support::scripts::{rule, Scripts};
use support::server::{answered_port, call, hang_up, start_with, wire};

/// The browser's microphone tone.
const MIC_HZ: u32 = 600;
/// Bound on each whole test.
const TEST_LIMIT: Duration = Duration::from_secs(40);

/// Runs `test` with Chromium and chromedriver's paths and a folder for its files, in a
/// fresh loopback-only network namespace on a runtime started inside it. Skips (a failure
/// under `CI=true`) when the browser, `ip` or the namespace is unavailable.
fn in_namespace<F, Fut>(test: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some((driver, browser)) = support::browser::tools() else {
        return;
    };
    // One browser at a time: three at once are too much for a small CI machine.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    if !phones::have(&["ip"]) || !phones::isolate_network() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sb-browser-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("mic.wav");
    phones::write_tone_wav_at(&wav, MIC_HZ, 5, 48000);
    // Built after unshare: its threads, and all they start, live in the namespace.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let b = Browser {
        driver,
        browser,
        wav,
        dir: dir.clone(),
    };
    rt.block_on(async move {
        tokio::time::timeout(TEST_LIMIT, test(b))
            .await
            .expect("the test finished in time");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a test needs to start its browser.
struct Browser {
    driver: PathBuf,
    browser: PathBuf,
    wav: PathBuf,
    dir: PathBuf,
}

impl Browser {
    /// Chromium (and its chromedriver) with the fake microphone playing [`MIC_HZ`].
    async fn open(&self) -> (support::browser::Killed, Client) {
        let (driver, addr) = support::browser::start_chromedriver(&self.driver).await;
        let args = support::browser::webrtc_args(&self.wav);
        let client = support::browser::session_with(addr, &self.browser, &args).await;
        (driver, client)
    }
}

/// The page's `window.callStats()`.
async fn stats(c: &Client) -> Value {
    c.execute("return window.callStats();", vec![])
        .await
        .unwrap()
}

/// Polls the page's stats every 100 ms until `want` holds, at most `limit`; the last read.
async fn stats_until(c: &Client, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let s = stats(c).await;
        if want(&s) || tokio::time::Instant::now() >= until {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the page hears a tone near `hz` at a level a person would hear.
fn hears(s: &Value, hz: f64) -> bool {
    let peak = s["peakHz"].as_f64().unwrap_or(0.0);
    let level = s["level"].as_f64().unwrap_or(0.0);
    // One bin of the page's 4096-point analyser at 48 kHz is 11.7 Hz. The tones are sent
    // at -10 dBm0, about 0.155 RMS as the page measures it.
    (peak - hz).abs() < 25.0 && (0.08..0.4).contains(&level)
}

/// Several consecutive reads hearing `hz`: a steady tone, not one lucky frame.
async fn hears_steadily(c: &Client, hz: f64, limit: Duration) -> Value {
    let until = tokio::time::Instant::now() + limit;
    let mut run = 0;
    loop {
        let s = stats(c).await;
        run = if hears(&s, hz) { run + 1 } else { 0 };
        if run >= 5 {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the page did not hear {hz} Hz steadily within {limit:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_call_page_joins_a_room_and_hears_a_sip_caller_who_hears_it() {
    in_namespace(|b| async move {
        let server = start_with((40000, 40099), |_| {}).await;
        let (_driver, c) = b.open().await;
        // Without the browser's processing: its noise suppression fades a steady tone.
        let page = format!(
            "http://{}/call/conf-web?autostart=1&processing=0",
            server.http
        );
        c.goto(&page).await.unwrap();
        let s = stats_until(&c, Duration::from_secs(10), |s| {
            s["state"] == "connected" || s["state"] == "failed"
        })
        .await;
        assert_eq!(s["state"], "connected", "{s}");
        // What Chromium offered: loopback host candidates, and nothing else.
        let offer = c
            .execute("return pc.localDescription.sdp;", vec![])
            .await
            .unwrap();
        let offer = offer.as_str().unwrap_or_default();
        let candidates: Vec<&str> = offer
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert!(!candidates.is_empty(), "{offer}");
        assert!(
            candidates
                .iter()
                .all(|l| l.contains(" 127.0.0.1 ") && l.contains(" typ host")),
            "{candidates:?}"
        );

        // The SIP caller joins and sends 1 kHz for 4 s, recording what the room sends it.
        let (mut w, mut uac) = wire(false, server.sip).await;
        let mut rtp = RtpPeer::bind().await;
        call(&mut w, &mut uac, "conf-web", rtp.port()).await;
        let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));
        let sip_side = tokio::spawn(async move {
            let heard = rtp
                .exchange(media, &tone("1000/4000@-10", 4000), Duration::ZERO)
                .await;
            (rtp, heard)
        });
        let page = hears_steadily(&c, 1000.0, Duration::from_secs(4)).await;
        let (_rtp, heard) = sip_side.await.unwrap();
        hang_up(&mut w, &mut uac).await;
        let _ = c.close().await;

        let browser_tone = peak_tone_power(&heard, f64::from(MIC_HZ));
        let own_tone = peak_tone_power(&heard, 1000.0);
        let levels: Vec<String> = heard
            .chunks(4000)
            .map(|c| format!("{:.1}", switchboard::media::level::rms_dbfs(c)))
            .collect();
        eprintln!(
            "page {page}; the SIP caller heard {MIC_HZ} Hz share {browser_tone:.2}, {levels:?}"
        );
        assert!(
            browser_tone > 0.8,
            "the SIP caller heard the browser's tone at share {browser_tone:.2}"
        );
        // A room sends no member its own voice.
        assert!(own_tone < 0.2, "the SIP caller heard itself: {own_tone:.2}");
        // The file's -10 dBm0 through the call's codec and the room's mix, steady.
        let level = switchboard::media::level::rms_dbfs(&heard[heard.len() / 2..]);
        assert!(
            (-22.0..-8.0).contains(&level),
            "the browser's tone came at {level:.1} dBFS: {levels:?}"
        );
        server.stop().await;
    });
}

#[test]
fn jssip_in_chromium_calls_the_echo_over_ws_and_hears_its_tone_back() {
    in_namespace(|b| async move {
        let server = start_with((40100, 40199), |c| {
            c.sip.ws_listen = "127.0.0.1:0".into();
        })
        .await;
        let ws = server.ws.expect("a ws listener");
        let (_driver, c) = b.open().await;
        // The call page, not started: its analyser measures the JsSIP call's audio.
        support::browser::open_with_jssip(&c, &format!("http://{}/call/echo", server.http)).await;
        let script = format!(
            r#"
            window.sipLog = [];
            const log = (m) => window.sipLog.push(m);
            const socket = new JsSIP.WebSocketInterface('ws://{ws}');
            const ua = new JsSIP.UA({{
                sockets: [socket], uri: 'sip:alice@127.0.0.1', register: false,
                connection_recovery_min_interval: 60,
            }});
            ua.on('connected', () => {{
                // As the call page's `?processing=0`: nothing fades the steady tone.
                const audio = {{
                    echoCancellation: false, noiseSuppression: false, autoGainControl: false,
                }};
                const s = ua.call('sip:echo@{ws}', {{
                    mediaConstraints: {{ audio, video: false }},
                    pcConfig: {{ iceServers: [] }},
                }});
                window.sipSession = s;
                for (const ev of ['progress', 'accepted', 'confirmed', 'ended', 'failed']) {{
                    s.on(ev, (e) => log(ev + ' ' + (e && e.cause ? e.cause : '')));
                }}
                s.connection.addEventListener('track', (e) => {{
                    log('track');
                    window.listenTo(e.streams[0] || new MediaStream([e.track]));
                }});
            }});
            window.sipUa = ua;
            ua.start();
            "#
        );
        c.execute(&script, vec![]).await.unwrap();
        let heard = stats_until(&c, Duration::from_secs(12), |s| hears(s, f64::from(MIC_HZ))).await;
        let log = c.execute("return window.sipLog;", vec![]).await.unwrap();
        assert!(hears(&heard, f64::from(MIC_HZ)), "{heard} {log}");
        let steady = hears_steadily(&c, f64::from(MIC_HZ), Duration::from_secs(3)).await;
        eprintln!("JsSIP heard {steady}; {log}");
        let _ = c
            .execute(
                "window.sipSession.terminate(); window.sipUa.stop();",
                vec![],
            )
            .await;
        let _ = c.close().await;
        server.stop().await;
    });
}

/// Collects keys up to `#`, then plays a tone whose pitch is the digits collected: the
/// browser hears what the script got.
const KEYS: &str = r##"
answer();
let got = collect(#{ max: 8, terminators: "#", first_digit_timeout: 15000 });
if got != () {
    tone(got + "/2500@-10");
}
hangup();
"##;

#[test]
fn keys_from_rtcdtmfsender_reach_the_script_and_the_cdr() {
    in_namespace(|b| async move {
        let scripts = Scripts::with_shipped(&[("keys.rhai", KEYS)]);
        let (dir, cdrs) = (scripts.0.clone(), b.dir.join("cdr"));
        let cdr_dir = cdrs.clone();
        let server = start_with((40200, 40299), move |c| {
            c.paths.scripts = dir;
            c.cdr.dir = cdr_dir;
            c.dialplan.insert(0, rule("keys", "keys", &[]));
        })
        .await;
        let (_driver, c) = b.open().await;
        c.goto(&format!("http://{}/call/keys?autostart=1", server.http))
            .await
            .unwrap();
        let s = stats_until(&c, Duration::from_secs(10), |s| {
            s["state"] == "connected" || s["state"] == "failed"
        })
        .await;
        assert_eq!(s["state"], "connected", "{s}");
        c.execute("window.sendKeys('1234#');", vec![])
            .await
            .unwrap();
        // The script heard 1, 2, 3, 4 and the terminator: it plays 1234 Hz.
        let heard = hears_steadily(&c, 1234.0, Duration::from_secs(8)).await;
        let call_id = heard["callId"].as_str().unwrap_or_default().to_string();
        assert_eq!(heard["keysSent"], "1234#", "{heard}");
        assert!(!call_id.is_empty(), "{heard}");
        // The script hangs up after its 2.5 s tone (within cdr_of's 5 s); the CDR has every
        // key, the terminator too.
        let cdr = support::cdr_of(&cdrs, &call_id).await;
        assert_eq!(cdr["digits"], "1234#", "{cdr}");
        assert_eq!(cdr["to"], "keys", "{cdr}");
        let _ = c.close().await;
        server.stop().await;
        drop(scripts);
    });
}

#[test]
fn the_call_page_asks_for_the_token_and_takes_it_from_the_address() {
    in_namespace(|b| async move {
        let server = start_with((40300, 40399), |c| c.http.token = "s3cret".into()).await;
        let (_driver, c) = b.open().await;
        let page = format!("http://{}/call/echo?autostart=1&processing=0", server.http);
        c.goto(&page).await.unwrap();
        let s = stats_until(&c, Duration::from_secs(10), |s| s["state"] == "failed").await;
        assert_eq!(s["state"], "failed", "{s}");
        assert_eq!(s["error"], "this server needs its API token", "{s}");
        let login = c.find(fantoccini::Locator::Id("login")).await.unwrap();
        assert!(login.is_displayed().await.unwrap(), "no token field shown");
        // A wrong token is refused the same way; the right one calls.
        c.goto(&format!("{page}&token=wrong")).await.unwrap();
        let s = stats_until(&c, Duration::from_secs(10), |s| s["state"] == "failed").await;
        assert_eq!(s["error"], "this server needs its API token", "{s}");
        c.goto(&format!("{page}&token=s3cret")).await.unwrap();
        let heard = hears_steadily(&c, f64::from(MIC_HZ), Duration::from_secs(10)).await;
        assert_eq!(heard["state"], "connected", "{heard}");
        let (_, body) = support::server::http_get(server.http, "/api/info").await;
        let info: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(info["calls"], 1, "{info}");
        // Leaving the page hangs up (with the token), long before ICE consent would lapse.
        c.goto("about:blank").await.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            // `/api/info` needs no token and counts the live calls.
            let (_, body) = support::server::http_get(server.http, "/api/info").await;
            let info: Value = serde_json::from_slice(&body).unwrap();
            if info["calls"] == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the call stayed: {info}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = c.close().await;
        server.stop().await;
    });
}
