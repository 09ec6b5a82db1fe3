//! Wires the configured parts together and runs them until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{ApiState, RecordingIndex};
use crate::call::{self, CallContext};
use crate::cdr::CdrWriter;
use crate::conference::ConferenceRegistry;
use crate::engine::MediaEngine;
use crate::events::EventBus;
use crate::live::CallRegistry;
use crate::media::prompt::PromptCache;
use crate::media::record::{repair_dir, RecordingWriter};
use crate::metrics::Metrics;
use crate::rtp::ports::PortAllocator;
use crate::script::dialplan::Dialplan;
use crate::script::{build_engine, ScriptSet};
use crate::sip::auth::Authenticator;
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::guard::Guard;
use crate::sip::tls::ServerTls;
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::{self, CallSpawner, Protection};
use crate::sip::trunks::{LocalSide, TrunkRegistrations, Trunks};
use crate::webhook::Webhooks;
use crate::{Config, Error};

/// Where the server ended up listening (ports may have been chosen by the OS).
#[derive(Debug, Clone)]
pub struct Ready {
    /// SIP address (UDP and TCP share the port).
    pub sip: std::net::SocketAddr,
    /// HTTP API address.
    pub http: std::net::SocketAddr,
    /// SIP over TLS address, when `[sip] tls_listen` is set.
    pub tls: Option<std::net::SocketAddr>,
    /// SIP over WebSocket (`ws://`) address, when `[sip] ws_listen` is set.
    pub ws: Option<std::net::SocketAddr>,
    /// SIP over secure WebSocket (`wss://`) address, when `[sip] wss_listen` is set.
    pub wss: Option<std::net::SocketAddr>,
}

/// Binds the listener of a stream transport that has an address of its own (none: off):
/// the listener and the address it got; the error names it.
async fn bind_stream(
    what: &'static str,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<(tokio::net::TcpListener, std::net::SocketAddr)>, Error> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })?;
    let bound = listener.local_addr()?;
    Ok(Some((listener, bound)))
}

/// Runs the server until `shutdown` completes and the calls have drained (see `[sip] drain_secs`).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_with_ready(config, shutdown, |_| {}).await
}

/// Like [`run`], calling `on_ready` once every listener is bound.
pub async fn run_with_ready(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Ready),
) -> Result<(), Error> {
    config.validate()?;
    let advertise = config.advertise_ip()?;
    let (mut listeners, sip_addr) =
        transport::bind(config.sip.listen, config.sip.udp, config.sip.tcp)
            .await
            .map_err(|source| Error::Bind {
                what: "SIP",
                addr: config.sip.listen,
                source,
            })?;
    // One certificate for TLS and WSS, reloaded for both on SIGHUP.
    let server_tls = if config.sip.tls_addr()?.is_some() || config.sip.wss_addr()?.is_some() {
        Some(ServerTls::load(&config.sip.tls_cert, &config.sip.tls_key)?)
    } else {
        None
    };
    let tls = bind_stream("SIP TLS", config.sip.tls_addr()?).await?;
    let ws = bind_stream("SIP WebSocket", config.sip.ws_addr()?).await?;
    let wss = bind_stream("SIP secure WebSocket", config.sip.wss_addr()?).await?;
    let bound = |l: &Option<(_, std::net::SocketAddr)>| l.as_ref().map(|(_, a)| *a);
    let (tls_addr, ws_addr, wss_addr) = (bound(&tls), bound(&ws), bound(&wss));
    // `server_tls` is loaded whenever TLS or WSS listens, so `zip` drops nothing.
    listeners.tls = tls.zip(server_tls.clone()).map(|((l, _), c)| (l, c));
    listeners.ws = ws.map(|(l, _)| l);
    listeners.wss = wss.zip(server_tls.clone()).map(|((l, _), c)| (l, c));
    let ca = (!config.sip.tls_ca.as_os_str().is_empty()).then_some(config.sip.tls_ca.as_path());
    listeners.tls_client = Some(crate::sip::tls::client_config(ca, config.sip.tls_verify)?);
    let (t1, t2, t4) = config.timers();
    let local_addr = std::net::SocketAddr::new(advertise, sip_addr.port());
    let mut endpoint = Endpoint::new(EndpointConfig {
        timers: TimerConfig { t1, t2, t4 },
        local_addr,
        user_agent: config.sip.user_agent.clone(),
    });
    // Shared by the transport (registrations), the call tasks (routes) and the API.
    let trunks = Arc::new(
        Trunks::new(&config.trunks)
            .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?,
    );
    listeners.tls_names = trunks.tls_names().into_iter().collect();
    let registrations = TrunkRegistrations::new(
        trunks.clone(),
        &LocalSide {
            addr: local_addr,
            user_agent: config.sip.user_agent.clone(),
            timers: TimerConfig { t1, t2, t4 },
        },
        crate::sip::ids::Ids::from_entropy(),
    );
    endpoint.set_session_timers(config.sip.session_timers());
    if let Some(bound) = tls_addr {
        endpoint.set_tls_port(bound.port());
    }
    for (transport, bound) in [
        (crate::sip::dialog::Transport::Ws, ws_addr),
        (crate::sip::dialog::Transport::Wss, wss_addr),
    ] {
        if let Some(bound) = bound {
            endpoint.set_listener_port(transport, bound.port());
        }
    }
    let guard = Guard::new(config.sip.guard()?, std::time::Instant::now());
    endpoint.set_trusted_proxies(guard.config().trusted_proxies.clone());
    // SIGTERM (the caller's `shutdown`) and `POST /api/admin/drain` throw the same switch.
    let drain = crate::drain::Drain::default();
    std::fs::create_dir_all(&config.paths.recordings)?;
    // Recordings a crash left behind as `.part` are made whole before anything new is written.
    for r in repair_dir(&config.paths.recordings) {
        tracing::info!(id = %r.id, duration_ms = r.duration_ms, "repaired an interrupted recording");
    }
    let (recorder, writer) = RecordingWriter::spawn(config.paths.recordings.clone())
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let scripts = Arc::new(load_scripts(&config)?);
    let dialplan = Arc::new(
        Dialplan::new(&config.dialplan)
            .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?,
    );
    if let Some(auth) = config.auth()? {
        let plan = dialplan.clone();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        tracing::info!(realm = %auth.realm, users = config.users.len(), "callers of protected rules must authenticate");
        endpoint.set_auth(Authenticator::new(
            auth,
            nonce_secret()?,
            std::time::Instant::now(),
            unix,
            Box::new(move |user| plan.route(user).auth),
        ));
    }
    // Live state shared by the call side, the conference side and the HTTP side.
    let calls = CallRegistry::default();
    let events = EventBus::default();
    let metrics = Arc::new(Metrics::default());
    let cdr_dir = (!config.cdr.dir.as_os_str().is_empty()).then(|| config.cdr.dir.clone());
    let (cdr_writer, cdr_thread) = match &cdr_dir {
        Some(dir) => {
            let (w, t) = CdrWriter::spawn(dir.clone(), metrics.clone())?;
            (Some(w), Some(t))
        }
        None => (None, None),
    };
    let webhooks = Webhooks::spawn(&config.webhooks, &events, metrics.clone())
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let reload_task = tokio::spawn(reload_scripts(
        scripts.clone(),
        server_tls.clone(),
        Duration::from_secs(config.scripts.reload_secs),
    ));
    let media = Arc::new(MediaEngine::start_with_io(
        config.media.workers,
        config.media.realtime_priority,
        config.media.io,
    )?);
    let prompts = Arc::new(PromptCache::new(config.paths.prompts.clone()));
    let rooms = ConferenceRegistry::new(
        media.clone(),
        prompts.clone(),
        events.clone(),
        config.conference.clone(),
        recorder.clone(),
    );
    let ctx = Arc::new(CallContext {
        media: media.clone(),
        recorder,
        prompts,
        rooms: rooms.clone(),
        rtp_timeout: (config.media.rtp_timeout_secs > 0)
            .then(|| Duration::from_secs(config.media.rtp_timeout_secs)),
        rtp_sources: crate::media::leg::LegSources {
            mode: config.media.strict_rtp,
            learn_window: Duration::from_millis(config.media.strict_rtp_learn_ms),
            signalling: None,
            metrics: Some(metrics.clone()),
        },
        dtmf: config.dtmf.detector(),
        inband: config.dtmf.inband,
        ports: PortAllocator::new(
            config.sip.listen.ip(),
            config.rtp.port_min,
            config.rtp.port_max,
        ),
        media_ip: advertise,
        max_duration: (config.sip.max_call_secs > 0)
            .then(|| Duration::from_secs(config.sip.max_call_secs)),
        scripts,
        dialplan,
        calls: calls.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        // Once from entropy: SSRCs and SDP session ids of calls must not be predictable.
        ids_seed: fastrand::u64(..),
        cdr: cdr_writer,
        outbound: Arc::new(crate::call::OutboundPolicy::new(
            &config.outbound.allow,
            config.outbound.max_legs_per_call,
        )),
        outbound_slots: crate::call::OutboundSlots::new(config.outbound.max_calls),
        trunks: trunks.clone(),
        ivr_operator: config.ivr.operator.trim().to_string(),
        codecs: config.media.codec_list()?,
        codec_choice: config.media.codec_choice,
        srtp: config.rtp.srtp,
        tts: {
            let tts = crate::speech::tts::Tts::new(&config.tts)
                .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?;
            metrics.watch_tts(tts.clone());
            Arc::new(tts)
        },
        webrtc: if config.webrtc.enabled {
            Some(Arc::new(crate::call::webrtc::WebRtcContext {
                certificate: crate::webrtc::Certificate::process()
                    .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?,
                public_ip: config.webrtc.public_ip,
                connect_timeout: Duration::from_secs(config.webrtc.connect_timeout_secs),
                codecs: config.webrtc.codec_list()?,
                metrics: metrics.clone(),
            }))
        } else {
            None
        },
        asr: {
            let asr = Arc::new(
                crate::speech::asr::Asr::new(&config.asr)
                    .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?,
            );
            metrics.watch_asr(asr.clone());
            asr
        },
    });
    let (sip_commands, sip_command_rx) = tokio::sync::mpsc::channel(4096);
    let originator: crate::api::Originator = {
        let ctx = ctx.clone();
        let commands = sip_commands.clone();
        Arc::new(move |o| call::originate(ctx.clone(), commands.clone(), o))
    };
    let spawner: CallSpawner =
        Arc::new(move |h, ev, rx, tx| call::spawn(ctx.clone(), h, ev, rx, tx));
    let whip = config.webrtc.enabled.then(|| {
        crate::call::whip::WhipCalls::new(
            spawner.clone(),
            sip_commands.clone(),
            advertise,
            crate::call::whip::WhipLimits {
                per_source: config.webrtc.max_sessions_per_source,
                answer_timeout: Duration::from_secs(config.webrtc.answer_timeout_secs),
            },
        )
    });
    let index = RecordingIndex::load(config.paths.recordings.clone())
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let token = (!config.http.token.trim().is_empty()).then(|| config.http.token.clone());
    let state = ApiState::new(Arc::new(index), token);
    let state = match whip {
        Some(w) => state.with_whip(w, &config.webrtc.room_number),
        None => state,
    };
    let api = crate::api::router(
        state
            .with_calls(calls.clone())
            .with_rooms(Arc::new(rooms))
            .with_events(events.clone())
            .with_metrics(metrics.clone())
            .with_media_stats(media.stats())
            .with_cdr_dir(cdr_dir)
            .with_drain(drain.clone())
            .with_originator(originator)
            .with_trunks(trunks.clone())
            .with_instance(&config.server.instance_name()),
    );
    tracing::debug!(
        webhooks = webhooks.len(),
        cdr = cdr_thread.is_some(),
        calls = calls.len(),
        "HTTP side ready"
    );
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| Error::Bind {
            what: "HTTP",
            addr: config.http.listen,
            source,
        })?;
    let http_addr = http.local_addr()?;
    let (http_stop_tx, http_stop) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        // The peer's address is where an HTTP-offered call comes from.
        let served = axum::serve(
            http,
            api.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = http_stop.await;
        })
        .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "HTTP API stopped");
        }
    });
    tracing::info!(sip = %sip_addr, http = %http_addr, udp = config.sip.udp, tcp = config.sip.tcp, tls = ?tls_addr, ws = ?ws_addr, wss = ?wss_addr, "listening");
    let stats_task = tokio::spawn(log_media_stats(media.clone()));
    on_ready(Ready {
        sip: sip_addr,
        http: http_addr,
        tls: tls_addr,
        ws: ws_addr,
        wss: wss_addr,
    });
    let drained = {
        let drain = drain.clone();
        async move {
            tokio::select! {
                _ = shutdown => { drain.start(); }
                _ = drain.wait() => {}
            }
        }
    };
    transport::run(
        endpoint,
        listeners,
        config.sip.max_message_bytes,
        spawner,
        metrics.clone(),
        Protection {
            guard,
            drain_after: Duration::from_secs(config.sip.drain_secs),
            drain: drain.clone(),
        },
        registrations,
        (sip_commands, sip_command_rx),
        drained,
    )
    .await;
    stats_task.abort();
    reload_task.abort();
    let _ = http_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    // Legs own recorder handles: once the media workers stop, every recording is finalised and
    // the writer thread drains and exits. Calls still winding down may hold them a little longer.
    drop(media);
    let wait = tokio::task::spawn_blocking(move || {
        let _ = writer.join();
        // The CDR writer ends once the last call has dropped its sender: its queue is on disk.
        if let Some(t) = cdr_thread {
            let _ = t.join();
        }
    });
    if tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .is_err()
    {
        tracing::warn!(
            "recording writer still busy at exit; unfinished files are repaired at next start"
        );
    }
    Ok(())
}

/// The key nonces are signed with, new at every start: from the operating system, since
/// whoever could guess it could make nonces.
fn nonce_secret() -> Result<Vec<u8>, Error> {
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    Ok(key)
}

/// Compiles every script; refuses to start on a script error or on a dialplan rule whose
/// script is missing.
fn load_scripts(config: &Config) -> Result<ScriptSet, Error> {
    if !crate::script::runner::set_pool_threads(config.scripts.threads) {
        tracing::warn!(
            "[scripts] threads applies at start only; the script pool keeps its threads"
        );
    }
    let engine = Arc::new(build_engine(&config.scripts.limits()));
    let set = ScriptSet::load(config.paths.scripts.clone(), engine)
        .map_err(|errors| Error::Scripts(errors.iter().map(ToString::to_string).collect()))?;
    let plan = Dialplan::new(&config.dialplan)
        .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?;
    let missing: Vec<String> = plan
        .scripts()
        .filter(|(_, s)| set.get(s).is_none())
        .map(|(i, s)| {
            format!(
                "dialplan rule {i}: no script {s} in {}",
                config.paths.scripts.display()
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::Scripts(missing));
    }
    tracing::info!(scripts = ?set.names(), "scripts loaded");
    Ok(set)
}

/// Reads the TLS certificate and key again (what SIGHUP does): new connections get the new
/// certificate, open ones keep theirs; on an error the old one stays in use.
pub fn reload_tls(tls: &ServerTls) {
    match tls.reload() {
        Ok(()) => tracing::info!("TLS certificate reloaded"),
        Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the old one stays"),
    }
}

/// Reloads changed scripts every `every` (never when zero) and at once on SIGHUP, when the
/// TLS certificate is read again too. A script that no longer compiles keeps its previous
/// version; calls keep the version they began with.
async fn reload_scripts(scripts: Arc<ScriptSet>, tls: Option<ServerTls>, every: Duration) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(if every.is_zero() {
        Duration::from_secs(3600)
    } else {
        every
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let by_signal = tokio::select! {
            _ = tick.tick(), if !every.is_zero() => false,
            _ = hangup => true,
        };
        if by_signal {
            if let Some(tls) = &tls {
                reload_tls(tls);
            }
        }
        let set = scripts.clone();
        let report = tokio::task::spawn_blocking(move || set.reload_if_changed()).await;
        if by_signal {
            match report {
                Ok(r) => {
                    tracing::info!(reloaded = ?r.reloaded, removed = ?r.removed, errors = r.errors.len(), "scripts reloaded on SIGHUP")
                }
                Err(e) => tracing::warn!(error = %e, "script reload failed"),
            }
        }
    }
}

/// Every 10 s: legs, late ticks and load of the media workers (info when ticks ran late).
async fn log_media_stats(media: Arc<MediaEngine>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last_late = 0;
    let mut last_busy = 0;
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.tick().await;
    loop {
        every.tick().await;
        let stats = media.stats();
        let legs: usize = stats.iter().map(|s| s.legs.load(Relaxed)).sum();
        let late: u64 = stats.iter().map(|s| s.late_ticks.load(Relaxed)).sum();
        let skipped: u64 = stats.iter().map(|s| s.skipped_ticks.load(Relaxed)).sum();
        let busy: u64 = stats.iter().map(|s| s.busy_us.load(Relaxed)).sum();
        let max_late_us = stats.iter().map(|s| s.max_lateness_us.load(Relaxed)).max();
        let load = (busy - last_busy) as f64 / 10e6 * 100.0;
        if late > last_late {
            tracing::info!(
                legs,
                late_ticks = late,
                skipped,
                ?max_late_us,
                load_pct = load,
                "media workers ran late"
            );
        } else {
            tracing::debug!(
                legs,
                late_ticks = late,
                skipped,
                ?max_late_us,
                load_pct = load,
                "media workers"
            );
        }
        (last_late, last_busy) = (late, busy);
    }
}
