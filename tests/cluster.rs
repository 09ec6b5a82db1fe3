//! Scale-out behind Kamailio, end to end: Kamailio runs `deploy/kamailio/kamailio.cfg` in the
//! foreground on 127.0.0.1 in front of `switchboard` binaries; calls go through it to rooms
//! and to the IVR, and each instance's API shows where they landed. Then instances are
//! drained, killed and restarted, and new calls must follow.
//!
//! Needs `kamailio` (Debian package `kamailio`): without it the tests are skipped with a
//! notice, except under `CI=true`, where that fails them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::rtp::{peak_tone_power, tone, RtpPeer};
use support::server::{answered_port, call, hang_up, http_get, wire, Wire};
use support::uac::Uac;

/// Kamailio's OPTIONS probing interval, in seconds.
const PING_SECS: u64 = 1;
/// How long Kamailio waits for an instance's first answer before trying the next one.
const TIMEOUT_MS: u64 = 1000;
/// How long an instance may take to print READY.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// `KAMAILIO` if set, else `kamailio` on the PATH or in the sbin folders Debian puts it in.
/// When it is missing the tests are skipped with a notice, except in CI (`CI=true`), where
/// that is an error.
fn find_kamailio() -> Option<PathBuf> {
    let found = match std::env::var_os("KAMAILIO") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => {
            let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            dirs.extend(["/usr/sbin".into(), "/usr/local/sbin".into()]);
            dirs.into_iter()
                .map(|d| d.join("kamailio"))
                .find(|p| p.is_file())
        }
    };
    if found.is_none() {
        let msg = "kamailio not found: install it (Debian/Ubuntu: apt-get install kamailio) \
                   or point KAMAILIO at the binary";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("skipping cluster test: {msg}");
    }
    found
}

/// One `switchboard serve` behind the proxy, killed when dropped.
struct Instance {
    name: String,
    sip: SocketAddr,
    http: SocketAddr,
    config: PathBuf,
    cdr: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Instance {
    /// Starts the binary with the configuration at `config` and waits for its READY line.
    fn start(name: &str, sip: SocketAddr, config: PathBuf, cdr: PathBuf, log: PathBuf) -> Self {
        let mut child = Command::new(common::server_binary())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let http = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "{name} printed no READY line ({e})\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            if line.starts_with("READY ") {
                break line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("http=")?.parse().ok())
                    .expect("http= in READY");
            }
        };
        Instance {
            name: name.to_string(),
            sip,
            http,
            config,
            cdr,
            log,
            child,
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = common::http(self.http, "GET", path);
        assert_eq!(status, 200, "{} {path}: {body}", self.name);
        serde_json::from_str(&body).unwrap()
    }

    /// Room name → members, from `/api/rooms`.
    fn rooms(&self) -> BTreeMap<String, usize> {
        self.get("/api/rooms")
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["instance"], self.name, "{r}");
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["members"].as_array().unwrap().len(),
                )
            })
            .collect()
    }

    /// Live calls to `user`, from `/api/calls`.
    fn calls_to(&self, user: &str) -> usize {
        self.get("/api/calls")
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["to"] == user)
            .count()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit by itself.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        // std has no wait with a timeout for a child.
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every CDR the instance wrote.
    fn cdrs(&self) -> Vec<serde_json::Value> {
        let Ok(dir) = std::fs::read_dir(&self.cdr) else {
            return Vec::new();
        };
        dir.flatten()
            .flat_map(|f| {
                std::fs::read_to_string(f.path())
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kamailio and its instances, all stopped when dropped.
struct Cluster {
    proxy: SocketAddr,
    kamailio: Child,
    kamailio_log: PathBuf,
    instances: Vec<Instance>,
    dir: common::TempDir,
}

impl Cluster {
    /// Kamailio in front of `n` instances with `sip` added to their `[sip]` settings, the last
    /// one reached over TCP when `tcp_to_last`; None (skipped) without Kamailio.
    fn start(label: &str, n: usize, sip: &str, tcp_to_last: bool) -> Option<Cluster> {
        let kamailio = find_kamailio()?;
        let dir = common::TempDir::new(label);
        let proxy = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let recordings = dir.path().join("recordings");
        std::fs::create_dir_all(&recordings).unwrap();
        let mut list = String::new();
        let mut instances = Vec::new();
        for i in 1..=n {
            let name = format!("sb-{i}");
            let home = dir.path().join(&name);
            std::fs::create_dir_all(&home).unwrap();
            let listen = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
            let rtp = common::rtp_ports(40);
            let over_tcp = tcp_to_last && i == n;
            // Over TCP the proxy connects from any port of its address.
            let trusted = if over_tcp {
                proxy.ip().to_string()
            } else {
                proxy.to_string()
            };
            let cdr = home.join("cdr");
            let config = home.join("switchboard.toml");
            std::fs::write(
                &config,
                format!(
                    "[server]\nname = {name:?}\n\n\
                     [sip]\nlisten = \"{listen}\"\ntrusted_proxies = [\"{trusted}\"]\n\
                     {sip}\n\n\
                     [http]\nlisten = \"127.0.0.1:0\"\n\n\
                     [rtp]\nport_min = {}\nport_max = {}\n\n\
                     [media]\nworkers = 1\n\n\
                     [paths]\nrecordings = {:?}\n\n\
                     [cdr]\ndir = {:?}\n",
                    rtp.0,
                    rtp.1,
                    recordings.display().to_string(),
                    cdr.display().to_string(),
                ),
            )
            .unwrap();
            let param = if over_tcp { ";transport=tcp" } else { "" };
            list.push_str(&format!("1 sip:{listen}{param}\n2 sip:{listen}{param}\n"));
            instances.push(Instance::start(
                &name,
                listen,
                config,
                cdr,
                home.join("log"),
            ));
        }
        let kdir = dir.path().join("kamailio");
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::write(kdir.join("dispatcher.list"), list).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/kamailio.cfg"),
            kdir.join("kamailio.cfg"),
        )
        .unwrap();
        std::fs::write(
            kdir.join("switchboard-local.cfg"),
            format!(
                "#!substdef \"!SB_PORT!{}!g\"\n\
                 #!substdef \"!SB_LIST!{}!g\"\n\
                 #!substdef \"!SB_PING_SECS!{PING_SECS}!g\"\n\
                 #!substdef \"!SB_DOWN_AFTER!1!g\"\n\
                 #!substdef \"!SB_UP_AFTER!1!g\"\n\
                 #!substdef \"!SB_TIMEOUT_MS!{TIMEOUT_MS}!g\"\n",
                proxy.port(),
                kdir.join("dispatcher.list").display()
            ),
        )
        .unwrap();
        let kamailio_log = kdir.join("log");
        let log = std::fs::File::create(&kamailio_log).unwrap();
        let child = Command::new(kamailio)
            .arg("-DD")
            .arg("-E")
            .arg("-f")
            .arg(kdir.join("kamailio.cfg"))
            .arg("-P")
            .arg(kdir.join("kamailio.pid"))
            .arg("-w")
            .arg(&kdir)
            .arg("-Y")
            .arg(&kdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let cluster = Cluster {
            proxy,
            kamailio: child,
            kamailio_log,
            instances,
            dir,
        };
        cluster.await_proxy();
        Some(cluster)
    }

    /// Waits until Kamailio answers an OPTIONS of its own.
    fn await_proxy(&self) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let local = s.local_addr().unwrap();
        let mut buf = [0u8; 4096];
        for n in 0..50 {
            let options = format!(
                "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-up{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:t@{local}>;tag=u\r\nTo: <sip:{proxy}>\r\n\
                 Call-ID: up{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                proxy = self.proxy
            );
            s.send_to(options.as_bytes(), self.proxy).unwrap();
            if let Ok(len) = s.recv(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("kamailio does not answer\n{}", self.kamailio_log_text());
    }

    fn kamailio_log_text(&self) -> String {
        common::tail(
            &std::fs::read_to_string(&self.kamailio_log).unwrap_or_default(),
            60,
        )
    }

    /// Which instance took a call, by the Contact of its 2xx.
    fn holder(&self, uac: &Uac) -> usize {
        let target = uac.remote_target().expect("an answered call");
        self.instances
            .iter()
            .position(|i| {
                let at = format!("@{}", i.sip);
                target.ends_with(&at) || target.contains(&format!("{at};"))
            })
            .unwrap_or_else(|| panic!("{target} is none of the instances"))
    }

    /// Which instance Kamailio sent a call's INVITE to first (before any failover), from the
    /// line its routing logs for each INVITE.
    fn first_choice(&self, uac: &Uac) -> usize {
        let log = std::fs::read_to_string(&self.kamailio_log).unwrap();
        let mark = format!(" from {} to sip:", uac.local);
        let line = log
            .lines()
            .rfind(|l| l.contains(" INVITE ") && l.contains(&mark))
            .unwrap_or_else(|| panic!("no INVITE from {} logged", uac.local));
        let dest = line.split(&mark).nth(1).unwrap();
        self.instances
            .iter()
            .position(|i| {
                let at = i.sip.to_string();
                dest.starts_with(&format!("{at} ")) || dest.starts_with(&format!("{at};"))
            })
            .unwrap_or_else(|| panic!("{line}: none of the instances"))
    }

    /// The instance Kamailio tried first for a call, and the one that took it.
    fn route(&self, uac: &Uac) -> (usize, usize) {
        (self.first_choice(uac), self.holder(uac))
    }

    /// Starts instance `i` again on its old address and configuration.
    fn restart(&mut self, i: usize) {
        let old = &self.instances[i];
        let (name, sip, config, cdr) = (
            old.name.clone(),
            old.sip,
            old.config.clone(),
            old.cdr.clone(),
        );
        let log = self.dir.path().join(&name).join("log-restarted");
        self.instances[i].kill();
        self.instances[i] = Instance::start(&name, sip, config, cdr, log);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGTERM lets Kamailio stop its worker processes with it.
        unsafe { libc::kill(self.kamailio.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.kamailio.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kamailio.kill();
        let _ = self.kamailio.wait();
        if std::thread::panicking() {
            eprintln!("--- kamailio log ---\n{}", self.kamailio_log_text());
            for i in &self.instances {
                let text = std::fs::read_to_string(&i.log).unwrap_or_default();
                eprintln!("--- {} log ---\n{}", i.name, common::tail(&text, 40));
            }
        }
    }
}

/// A call through the proxy: its caller, its socket and its media endpoint.
struct Caller {
    wire: Wire,
    uac: Uac,
    rtp: RtpPeer,
}

impl Caller {
    /// Calls `user` through the proxy over UDP and waits (up to 5 s) for the answer.
    async fn dial(proxy: SocketAddr, user: &str) -> Caller {
        Caller::dial_over(proxy, user, false).await
    }

    /// [`Caller::dial`], over TCP when `tcp`.
    async fn dial_over(proxy: SocketAddr, user: &str, tcp: bool) -> Caller {
        let (mut wire, mut uac) = wire(tcp, proxy).await;
        uac.follow_record_route = true;
        let rtp = RtpPeer::bind().await;
        call(&mut wire, &mut uac, user, rtp.port()).await;
        Caller { wire, uac, rtp }
    }

    /// Where its media goes.
    fn media(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], answered_port(&self.uac)))
    }

    async fn hang_up(mut self) {
        hang_up(&mut self.wire, &mut self.uac).await;
        self.wire.flush(&mut self.uac).await;
    }

    /// Whether the server sent BYE within `limit`.
    async fn got_bye(&mut self, limit: Duration) -> bool {
        self.wire
            .drive(&mut self.uac, limit, |u| {
                u.requests_in.iter().any(|m| m == "BYE")
            })
            .await
    }
}

const ROOMS: [&str; 6] = ["red", "green", "blue", "amber", "violet", "white"];

/// Kamailio reaches sb-2 over TCP (and sb-2 trusts its address, since it connects from any
/// port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_room_lives_on_one_instance_and_ivr_calls_spread_over_both() {
    let Some(cluster) = Cluster::start("placement", 2, "", true) else {
        return;
    };
    // Two callers per room.
    let mut callers: Vec<(String, Caller)> = Vec::new();
    for room in ROOMS {
        for _ in 0..2 {
            let c = Caller::dial(cluster.proxy, &format!("conf-{room}")).await;
            callers.push((room.to_string(), c));
        }
    }
    for pair in callers.chunks(2) {
        assert_eq!(
            cluster.holder(&pair[0].1.uac),
            cluster.holder(&pair[1].1.uac),
            "both callers of {} reach one instance",
            pair[0].0
        );
    }
    // A member joins its room a moment after the answer.
    let mut rooms: Vec<BTreeMap<String, usize>> = Vec::new();
    for _ in 0..100 {
        rooms = cluster.instances.iter().map(|i| i.rooms()).collect();
        if rooms.iter().flat_map(|r| r.values()).sum::<usize>() == callers.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for room in ROOMS {
        let holders: Vec<usize> = (0..2).filter(|&i| rooms[i].contains_key(room)).collect();
        assert_eq!(
            holders.len(),
            1,
            "{room} lives on exactly one instance: {rooms:?}"
        );
        assert_eq!(
            rooms[holders[0]][room], 2,
            "{room} has both its callers: {rooms:?}"
        );
    }
    assert!(
        rooms.iter().all(|r| !r.is_empty()),
        "the six rooms spread over both instances: {rooms:?}"
    );
    eprintln!(
        "rooms: {} on sb-1, {} on sb-2",
        rooms[0].keys().cloned().collect::<Vec<_>>().join(" "),
        rooms[1].keys().cloned().collect::<Vec<_>>().join(" ")
    );

    // The media of a room placed through the proxy flows between its members: a tone one
    // sends, the other hears.
    let (first, rest) = callers.split_at_mut(1);
    let (a, b) = (&mut first[0].1, &mut rest[0].1);
    let (to_a, to_b) = (a.media(), b.media());
    let sent = tone("1000/2000@-10", 2000);
    let silence = vec![0i16; 2000 * 8];
    // A quiet round first: past the join prompt and sounds, and the media learnt.
    tokio::join!(
        a.rtp.exchange(to_a, &silence, Duration::ZERO),
        b.rtp.exchange(to_b, &silence, Duration::ZERO)
    );
    // The room is recorded meanwhile, into the folder every instance shares.
    let room = ROOMS[0];
    let holder = &cluster.instances[cluster.holder(&a.uac)];
    let other = &cluster.instances[1 - cluster.holder(&a.uac)];
    let start = format!("/api/rooms/{room}/record/start");
    let (status, body) = common::http(holder.http, "POST", &start);
    assert_eq!(status, 202, "{body}");
    let (_, heard) = tokio::join!(
        a.rtp.exchange(to_a, &sent, Duration::from_millis(300)),
        b.rtp.exchange(to_b, &silence, Duration::from_millis(300))
    );
    let share = peak_tone_power(&heard, 1000.0);
    eprintln!("through the proxy, the other member heard 1 kHz at {share:.2} of its audio");
    assert!(share > 0.5, "the other member heard 1 kHz at {share:.2}");
    let stop = format!("/api/rooms/{room}/record/stop");
    let (status, body) = common::http(holder.http, "POST", &stop);
    assert_eq!(status, 202, "{body}");

    // The other instance lists that recording and serves its audio.
    let done = support::complete_sidecars(&cluster.dir.path().join("recordings"), 1).await;
    let id = done[0]["id"].as_str().unwrap().to_string();
    let listed = other.get("/api/recordings");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id),
        "{} does not list {id}: {listed}",
        other.name
    );
    let (status, wav) = http_get(other.http, &format!("/api/recordings/{id}/audio")).await;
    assert_eq!(status, 200);
    let reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    let rate = reader.spec().sample_rate;
    let pcm: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
    let share = pcm
        .chunks(rate as usize / 5)
        .map(|c| switchboard::media::level::tone_share(c, 1000.0, f64::from(rate)))
        .fold(0.0, f64::max);
    assert!(
        share > 0.5,
        "1 kHz at {share:.2} in the recording served by {}",
        other.name
    );

    // The IVR: round robin over both, half the callers over TCP (Kamailio relays them over
    // UDP and records both sides of the route).
    let mut ivr = Vec::new();
    for n in 0..4 {
        ivr.push(Caller::dial_over(cluster.proxy, "ivr", n % 2 == 1).await);
    }
    let per: Vec<usize> = cluster
        .instances
        .iter()
        .map(|i| i.calls_to("ivr"))
        .collect();
    assert_eq!(per.iter().sum::<usize>(), 4, "{per:?}");
    assert!(per.iter().all(|&n| n >= 1), "IVR calls on both: {per:?}");
    eprintln!("IVR calls per instance: {per:?}");
    for (i, inst) in cluster.instances.iter().enumerate() {
        let info = inst.get("/api/info");
        assert_eq!(info["instance"], inst.name);
        assert_eq!(info["draining"], false);
        let rooms_calls: usize = rooms[i].values().sum();
        assert_eq!(info["calls"], (rooms_calls + per[i]) as u64, "{info}");
    }

    // Everyone hangs up through the proxy; each CDR names the caller, not the proxy.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for c in callers.into_iter().map(|(_, c)| c).chain(ivr) {
        expected.insert(c.uac.local.to_string());
        c.hang_up().await;
    }
    let mut sources = BTreeSet::new();
    for _ in 0..100 {
        sources = cluster
            .instances
            .iter()
            .flat_map(|i| i.cdrs())
            .filter_map(|c| c["source"].as_str().map(str::to_string))
            .collect();
        if sources.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sources, expected,
        "CDR sources are the callers' own addresses"
    );
    assert!(!sources.contains(&cluster.proxy.to_string()));
}

/// Calls `user` again and again (each within 5 s) until `cond` holds for the instance that
/// answered and the one Kamailio tried first; how long that took since `since`.
async fn until_answered_by(
    cluster: &Cluster,
    user: &str,
    since: Instant,
    cond: impl Fn(usize, usize) -> bool,
) -> (Duration, Caller) {
    for _ in 0..40 {
        let c = Caller::dial(cluster.proxy, user).await;
        if cond(cluster.holder(&c.uac), cluster.first_choice(&c.uac)) {
            return (since.elapsed(), c);
        }
        c.hang_up().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("calls to {user} never met the condition");
}

/// Restarts instance `i` and calls `room` until a call lands on it: how long after the
/// restart.
async fn back_in_rotation(cluster: &mut Cluster, i: usize, room: &str) -> Duration {
    let t0 = Instant::now();
    cluster.restart(i);
    let (back, c) = until_answered_by(cluster, &format!("conf-{room}"), t0, |at, _| at == i).await;
    c.hang_up().await;
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_or_killed_instance_is_taken_out_and_put_back_when_it_returns() {
    const DRAIN_SECS: u64 = 30;
    let Some(mut cluster) =
        Cluster::start("failover", 2, &format!("drain_secs = {DRAIN_SECS}"), false)
    else {
        return;
    };
    // Where each room lives while both are up.
    let mut home = BTreeMap::new();
    let mut callers = Vec::new();
    for room in ROOMS {
        let c = Caller::dial(cluster.proxy, &format!("conf-{room}")).await;
        home.insert(room, cluster.holder(&c.uac));
        callers.push((room, c));
    }
    let room_of = |inst: usize| *home.iter().find(|(_, &h)| h == inst).expect("a room").0;
    let (drained, other) = (0, 1);
    let (drained_room, other_room) = (room_of(drained), room_of(other));

    // Drain sb-1: a new call to its room goes to sb-2, its call in progress stays up.
    let (status, body) = common::http(cluster.instances[drained].http, "POST", "/api/admin/drain");
    assert_eq!(status, 202, "{body}");
    let t0 = Instant::now();
    let moved = Caller::dial(cluster.proxy, &format!("conf-{drained_room}")).await;
    assert_eq!(
        cluster.holder(&moved.uac),
        other,
        "a new call avoids the draining instance"
    );
    eprintln!(
        "drain: first new call to its room answered by the other in {:?}",
        t0.elapsed()
    );
    // Its 503 to OPTIONS takes it out: calls then go to the other instance first.
    let (taken_out, straight) = until_answered_by(
        &cluster,
        &format!("conf-{drained_room}"),
        t0,
        |at, first| at == other && first == other,
    )
    .await;
    eprintln!("drain: calls go straight to the other instance {taken_out:?} after the drain");
    assert!(
        taken_out <= Duration::from_millis(PING_SECS * 1000 * 2 + 1000),
        "probed out {taken_out:?} after the drain"
    );
    let info = cluster.instances[drained].get("/api/info");
    assert_eq!(info["draining"], true);
    assert!(
        cluster.instances[drained]
            .rooms()
            .contains_key(drained_room),
        "the room in progress stays on the draining instance"
    );
    for (_, c) in callers.iter_mut().filter(|(r, _)| home[r] == drained) {
        assert!(
            !c.got_bye(Duration::from_millis(200)).await,
            "a call in progress was cut"
        );
    }
    // Its callers hang up through the proxy; with no call left it exits.
    let (on_drained, mut callers): (Vec<_>, Vec<_>) =
        callers.into_iter().partition(|(r, _)| home[r] == drained);
    for (_, c) in on_drained {
        c.hang_up().await;
    }
    moved.hang_up().await;
    straight.hang_up().await;
    let exit = cluster.instances[drained].wait_exit(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "drained instance exited: {exit:?}"
    );

    // Restarted, it is put back: its rooms come home.
    let back = back_in_rotation(&mut cluster, drained, drained_room).await;
    eprintln!("restart after drain: back in rotation {back:?} after the restart");

    // Kill sb-2 outright and place no call: the probes alone take it out, so a probing
    // interval and a probe's timeout later the first new call to its room goes straight to
    // sb-1.
    let t0 = Instant::now();
    cluster.instances[other].kill();
    // The killed instance's callers just go away (nobody answers their BYE).
    callers.clear();
    let probed_out = Duration::from_millis(PING_SECS * 1000 + TIMEOUT_MS + 500);
    tokio::time::sleep(probed_out).await;
    let first = Caller::dial(cluster.proxy, &format!("conf-{other_room}")).await;
    let rtt = t0.elapsed().saturating_sub(probed_out);
    assert_eq!(
        cluster.route(&first.uac),
        (drained, drained),
        "the killed instance was still in rotation {probed_out:?} after the kill"
    );
    eprintln!(
        "kill: a call {probed_out:?} after the kill went straight to the survivor, answered in {rtt:?}"
    );
    first.hang_up().await;

    // Back again: its rooms return to it within a probing interval or two.
    let back = back_in_rotation(&mut cluster, other, other_room).await;
    eprintln!("restart after kill: back in rotation {back:?} after the restart");
    assert!(
        back <= Duration::from_millis(PING_SECS * 1000 * 2 + 2000),
        "back {back:?} after the restart"
    );

    // A call placed the moment an instance dies waits out the proxy's timeout for it, then
    // takes the next instance; the calls after it go straight there.
    let t0 = Instant::now();
    cluster.instances[other].kill();
    let c = Caller::dial(cluster.proxy, &format!("conf-{other_room}")).await;
    let first_call = t0.elapsed();
    eprintln!("kill: a call placed at once was answered by the survivor in {first_call:?}");
    assert_eq!(
        cluster.route(&c.uac),
        (other, drained),
        "the dead one first"
    );
    assert!(
        first_call < Duration::from_millis(TIMEOUT_MS + 1500),
        "{first_call:?}"
    );
    c.hang_up().await;
    let c = Caller::dial(cluster.proxy, &format!("conf-{other_room}")).await;
    assert_eq!(
        cluster.route(&c.uac),
        (drained, drained),
        "taken out by the timeout"
    );
    c.hang_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_passes_a_call_on_and_stays_in_rotation() {
    let Some(cluster) = Cluster::start("full", 2, "max_calls = 1", false) else {
        return;
    };
    let room = format!("conf-{}", ROOMS[0]);
    let first = Caller::dial(cluster.proxy, &room).await;
    let home = cluster.holder(&first.uac);
    // Its instance is full: it answers 503 and the next instance takes the call.
    let second = Caller::dial(cluster.proxy, &room).await;
    assert_eq!(cluster.route(&second.uac), (home, 1 - home), "passed on");
    second.hang_up().await;
    first.hang_up().await;
    // With room again, it takes the room's next call at once: it was never taken out (a
    // probe would only have put it back after a probing interval).
    let again = Caller::dial(cluster.proxy, &room).await;
    assert_eq!(cluster.route(&again.uac), (home, home), "still in rotation");
    again.hang_up().await;
}
