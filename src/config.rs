//! Configuration: embedded defaults, overridden by a TOML file, overridden by flags; validated once.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The defaults compiled into the binary, so `serve` works from a fresh clone.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub rtp: RtpConfig,
    pub media: MediaConfig,
    pub http: HttpConfig,
    pub paths: PathsConfig,
    pub log: LogConfig,
    /// Script limits and reloading.
    pub scripts: ScriptsConfig,
    /// Which script each dialled user runs, first match wins (see [`crate::script::dialplan`]).
    #[serde(default)]
    pub dialplan: Vec<crate::script::dialplan::RuleConfig>,
    /// Call detail records.
    #[serde(default)]
    pub cdr: CdrConfig,
    /// Event receivers (`[[webhooks]]`, any number).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// `[scripts]`: limits on every call's script, and how often changed files are reloaded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptsConfig {
    /// Operations over one call's whole script run.
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Items in one array or object map.
    pub max_array_size: usize,
    /// Seconds between looks for changed script files (0: only on SIGHUP).
    pub reload_secs: u64,
}

impl ScriptsConfig {
    /// The engine limits these settings give.
    pub fn limits(&self) -> crate::script::ScriptLimits {
        crate::script::ScriptLimits {
            max_operations: self.max_operations,
            max_call_levels: self.max_call_levels,
            max_string_size: self.max_string_size,
            max_array_size: self.max_array_size,
            max_map_size: self.max_array_size,
            ..crate::script::ScriptLimits::default()
        }
    }
}

/// Call detail records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrConfig {
    /// Folder of the daily `YYYY-MM-DD.jsonl` files, relative to the working directory;
    /// empty: no CDRs.
    pub dir: PathBuf,
}

/// One webhook: matching events are POSTed to `url` as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: String,
    /// Event types to send (`call_ended`, `member_joined`, …); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Time allowed for one POST, in milliseconds.
    #[serde(default = "webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per event before it is given up.
    #[serde(default = "webhook_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled for each further retry.
    #[serde(default = "webhook_backoff_ms")]
    pub backoff_ms: u64,
    /// Events queued for this webhook before the oldest are dropped.
    #[serde(default = "webhook_queue")]
    pub queue: usize,
}

fn webhook_timeout_ms() -> u64 {
    5000
}
fn webhook_max_attempts() -> u32 {
    4
}
fn webhook_backoff_ms() -> u64 {
    500
}
fn webhook_queue() -> usize {
    1024
}

/// SIP transport and timer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    pub advertise: String,
    pub user_agent: String,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    pub max_call_secs: u64,
    pub max_message_bytes: usize,
}

/// Media port range.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpConfig {
    pub port_min: u16,
    pub port_max: u16,
}

/// Media engine settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub workers: usize,
    pub realtime_priority: i32,
    pub rtp_timeout_secs: u64,
}

/// HTTP API settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub token: String,
}

/// Folders the server reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    pub recordings: PathBuf,
    pub scripts: PathBuf,
    pub prompts: PathBuf,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// The embedded defaults alone.
    pub fn embedded() -> Result<Config, ConfigError> {
        Self::from_layers(None)
    }

    /// Embedded defaults overlaid with the TOML file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_layers(Some((&path.display().to_string(), &text)))
    }

    /// Embedded defaults overlaid with TOML text (named for error messages).
    pub fn from_toml_str(name: &str, text: &str) -> Result<Config, ConfigError> {
        Self::from_layers(Some((name, text)))
    }

    fn from_layers(overlay: Option<(&str, &str)>) -> Result<Config, ConfigError> {
        let mut base: toml::Table = parse_table("<embedded defaults>", DEFAULT_TOML)?;
        if let Some((name, text)) = overlay {
            merge(&mut base, parse_table(name, text)?);
        }
        let cfg: Config = toml::Value::Table(base)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: overlay.map_or("<embedded defaults>", |o| o.0).to_string(),
                message: e.message().to_string(),
            })?;
        Ok(cfg)
    }

    /// Checks cross-field rules; call after flags are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.rtp;
        if r.port_min < 1024 || r.port_min >= r.port_max {
            return Err(ConfigError::Invalid(format!(
                "rtp port range {}-{} must satisfy 1024 <= low < high",
                r.port_min, r.port_max
            )));
        }
        if !self.sip.udp && !self.sip.tcp {
            return Err(ConfigError::Invalid(
                "sip: at least one of udp and tcp must be enabled".into(),
            ));
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(ConfigError::Invalid(
                "sip timers must satisfy 0 < t1_ms <= t2_ms".into(),
            ));
        }
        self.advertise_ip()?;
        crate::script::dialplan::Dialplan::new(&self.dialplan)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let s = &self.scripts;
        if s.max_operations == 0
            || s.max_call_levels == 0
            || s.max_string_size == 0
            || s.max_array_size == 0
        {
            return Err(ConfigError::Invalid(
                "scripts: limits must be greater than 0".into(),
            ));
        }
        let token = (!self.http.token.trim().is_empty()).then(|| self.http.token.clone());
        crate::api::check_token_policy(self.http.listen, &token).map_err(ConfigError::Invalid)?;
        for w in &self.webhooks {
            crate::webhook::parse_url(&w.url).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if let Some(t) = w
                .events
                .iter()
                .find(|t| !crate::api::events::EVENT_TYPES.contains(&t.as_str()))
            {
                return Err(ConfigError::Invalid(format!(
                    "webhook {}: unknown event type {t:?}",
                    w.url
                )));
            }
        }
        Ok(())
    }

    /// The address written into Contact, Via and SDP.
    pub fn advertise_ip(&self) -> Result<IpAddr, ConfigError> {
        if self.sip.advertise.is_empty() {
            let ip = self.sip.listen.ip();
            if ip.is_unspecified() {
                return Err(ConfigError::Invalid(
                    "sip.advertise must be set when sip.listen is a wildcard address".into(),
                ));
            }
            return Ok(ip);
        }
        self.sip.advertise.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "sip.advertise {:?} is not an IP address",
                self.sip.advertise
            ))
        })
    }

    /// The RFC 3261 timer base values T1, T2, T4.
    pub fn timers(&self) -> (Duration, Duration, Duration) {
        (
            Duration::from_millis(self.sip.t1_ms),
            Duration::from_millis(self.sip.t2_ms),
            Duration::from_millis(self.sip.t4_ms),
        )
    }
}

fn parse_table(name: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: name.to_string(),
        message: e.to_string(),
    })
}

/// Overlays `top` onto `base` key by key, descending into tables.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::embedded().unwrap();
        c.validate().unwrap();
        assert_eq!(c.sip.listen, "127.0.0.1:5060".parse().unwrap());
        assert_eq!((c.rtp.port_min, c.rtp.port_max), (20000, 29999));
    }

    #[test]
    fn file_overrides_one_key_and_keeps_the_rest() {
        let c =
            Config::from_toml_str("t.toml", "[rtp]\nport_min = 30000\nport_max = 30100\n").unwrap();
        assert_eq!(c.rtp.port_min, 30000);
        assert_eq!(c.sip.t1_ms, 500);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let e = Config::from_toml_str("t.toml", "[sip]\nlisten_typo = 1\n").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn cdr_and_webhooks() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.cdr.dir, PathBuf::from("cdr"));
        assert!(c.webhooks.is_empty());
        let c = Config::from_toml_str(
            "t",
            "[cdr]\ndir = \"\"\n[[webhooks]]\nurl = \"http://127.0.0.1:9000/h\"\nevents = [\"call_ended\"]\n[[webhooks]]\nurl = \"http://127.0.0.1:9001/\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.cdr.dir, PathBuf::new());
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.webhooks[0].events, ["call_ended"]);
        assert!(c.webhooks[1].events.is_empty());
        assert_eq!(c.webhooks[1].max_attempts, 4);
        for bad in [
            "[[webhooks]]\nurl = \"https://x/h\"\n",
            "[[webhooks]]\nurl = \"http://x/h\"\nevents = [\"call_endd\"]\n",
        ] {
            let c = Config::from_toml_str("t", bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_port_range_is_rejected() {
        let c = Config::from_toml_str("t", "[rtp]\nport_min = 5000\nport_max = 4000\n").unwrap();
        assert!(c.validate().is_err());
    }
}
