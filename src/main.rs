//! Command line: parse flags, build the configuration, start logging, run the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::{Config, LogFormat};

/// switchboard: a SIP media server for conference rooms, IVR call flows and recording.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Compile every call-flow script in DIR (default: the configured scripts folder); print
    /// `file:line:col: message` for each error and exit non-zero if there is any.
    Check {
        /// Folder of `.rhai` scripts.
        dir: Option<PathBuf>,
    },
    /// Run a call flow against a virtual caller on a virtual clock (no SIP, no RTP) and print
    /// what happened.
    Simulate {
        /// The script file.
        script: PathBuf,
        /// The dialled user (the call's `to`).
        #[arg(long, default_value = "ivr")]
        to: String,
        /// The caller's URI.
        #[arg(long, default_value = "sip:caller@127.0.0.1")]
        from: String,
        /// What the caller does, e.g. "1, wait 3s, 4#, hangup".
        #[arg(long, default_value = "")]
        input: String,
        /// Prompts folder, for real prompt durations.
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
    },
}

/// Flags override the config file, which overrides the embedded defaults.
#[derive(clap::Args, Debug, Default)]
struct ServeArgs {
    /// TOML configuration file (keys not set keep their embedded defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SIP address for UDP and TCP, e.g. 127.0.0.1:5060 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    sip_listen: Option<SocketAddr>,
    /// SIP over WebSocket (ws://) address, e.g. 0.0.0.0:8080 (overrides `[sip] ws_listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    sip_ws_listen: Option<SocketAddr>,
    /// SIP over secure WebSocket (wss://) address, e.g. 0.0.0.0:8443, with the TLS certificate
    /// of `[sip]` (overrides `[sip] wss_listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    sip_wss_listen: Option<SocketAddr>,
    /// RTP port range, e.g. 20000-29999 (each call takes an even port and the next one).
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_range)]
    rtp_ports: Option<(u16, u16)>,
    /// HTTP API address, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// Folder recordings are written to.
    #[arg(long, value_name = "DIR")]
    recordings: Option<PathBuf>,
    /// Folder of call-flow scripts.
    #[arg(long, value_name = "DIR")]
    scripts: Option<PathBuf>,
    /// Folder of audio prompts.
    #[arg(long, value_name = "DIR")]
    prompts: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
    let a = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    Ok((a, b))
}

fn build_config(args: &ServeArgs) -> Result<Config, switchboard::config::ConfigError> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    };
    if let Some(a) = args.sip_listen {
        cfg.sip.listen = a;
    }
    if let Some(a) = args.sip_ws_listen {
        cfg.sip.ws_listen = a.to_string();
    }
    if let Some(a) = args.sip_wss_listen {
        cfg.sip.wss_listen = a.to_string();
    }
    if let Some((lo, hi)) = args.rtp_ports {
        cfg.rtp.port_min = lo;
        cfg.rtp.port_max = hi;
    }
    if let Some(a) = args.http_listen {
        cfg.http.listen = a;
    }
    if let Some(p) = &args.recordings {
        cfg.paths.recordings = p.clone();
    }
    if let Some(p) = &args.scripts {
        cfg.paths.scripts = p.clone();
    }
    if let Some(p) = &args.prompts {
        cfg.paths.prompts = p.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn check(dir: Option<PathBuf>) -> ExitCode {
    let dir = match dir {
        Some(d) => d,
        None => match Config::embedded() {
            Ok(c) => c.paths.scripts,
            Err(e) => {
                eprintln!("switchboard: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match switchboard::script::check_dir(&dir) {
        Ok(n) => {
            println!("{n} scripts in {} compile", dir.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Cmd::Serve(a)) => a,
        None => ServeArgs::default(),
        Some(Cmd::Check { dir }) => return check(dir),
        Some(Cmd::Simulate {
            script,
            to,
            from,
            input,
            prompts,
        }) => {
            let prompts = prompts.is_dir().then_some(prompts.as_path());
            return match switchboard::script::simulate(&script, &to, &from, &input, prompts) {
                Ok(t) => {
                    print!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let cfg = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cfg);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    let result = rt.block_on(switchboard::run_with_ready(cfg, shutdown, |ready| {
        // One machine-readable line on stdout; logs go to stderr.
        let tls = ready.tls.map_or(String::new(), |t| format!(" tls={t}"));
        let ws = ready.ws.map_or(String::new(), |t| format!(" ws={t}"));
        let wss = ready.wss.map_or(String::new(), |t| format!(" wss={t}"));
        println!("READY sip={} http={}{tls}{ws}{wss}", ready.sip, ready.http);
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_websocket_flags_set_their_listeners() {
        let cfg = build_config(&ServeArgs {
            sip_ws_listen: Some("127.0.0.1:8080".parse().unwrap()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(
            cfg.sip.ws_addr().unwrap(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(cfg.sip.wss_addr().unwrap(), None);
        // wss:// without a certificate is refused before anything is bound.
        let e = build_config(&ServeArgs {
            sip_wss_listen: Some("127.0.0.1:8443".parse().unwrap()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("wss_listen needs tls_cert"), "{e}");
    }
}
