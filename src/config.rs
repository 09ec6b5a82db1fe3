//! Configuration: embedded defaults, overridden by a TOML file, overridden by flags; validated once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::conference::room::{KeyAction, KeyMap, RoomSettings};
use crate::conference::VadConfig;
use crate::media::dtmf::{DetectorConfig, Digit};
use crate::media::tone::ToneSpec;
use crate::rtp::types::ClockRate;

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
    /// Who this instance is.
    pub server: ServerConfig,
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
    pub conference: ConferenceConfig,
    /// In-band DTMF detection limits.
    #[serde(default)]
    pub dtmf: DtmfConfig,
    /// Calls the server places.
    pub outbound: OutboundConfig,
    /// The shipped IVR's settings.
    pub ivr: IvrConfig,
    /// Who may call the dialplan rules with `auth = true` (`[[users]]`).
    #[serde(default)]
    pub users: Vec<crate::sip::auth::UserConfig>,
    /// SIP trunks (`[[trunks]]`, any number): carriers calls go out through.
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    /// Text to speech for `say()` (`[tts]`).
    #[serde(default)]
    pub tts: crate::speech::tts::TtsConfig,
    /// Speech recognition for `listen()` (`[asr]`).
    #[serde(default)]
    pub asr: crate::speech::asr::AsrConfig,
    /// Browser and WebRTC callers (`[webrtc]`).
    #[serde(default)]
    pub webrtc: WebRtcConfig,
}

/// `[webrtc]`: calls whose media is DTLS-SRTP with ICE, from browsers and WebRTC
/// applications, over `POST /api/webrtc/{number}` or SIP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Take such calls at all.
    pub enabled: bool,
    /// The address announced in our ICE candidate when media is reached through NAT
    /// (unset: the media address).
    pub public_ip: Option<IpAddr>,
    /// How long ICE and the DTLS handshake may take after the answer before the call ends.
    pub connect_timeout_secs: u64,
    /// How long an HTTP offer waits for the dialplan's answer.
    pub answer_timeout_secs: u64,
    /// Live HTTP-offered calls per source address.
    pub max_sessions_per_source: usize,
    /// The number that joins room `{room}`, for the console's "Join from this browser"
    /// (the shipped dialplan sends `conf-NAME` to room NAME).
    pub room_number: String,
    /// The codecs WebRTC calls may use, in our order: Opus first when built in (browsers
    /// all have it), then G.711.
    pub codecs: Vec<String>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            enabled: true,
            public_ip: None,
            connect_timeout_secs: 10,
            answer_timeout_secs: 10,
            max_sessions_per_source: 20,
            room_number: "conf-{room}".into(),
            codecs: if cfg!(feature = "opus") {
                vec!["opus".into(), "PCMU".into(), "PCMA".into()]
            } else {
                vec!["PCMU".into(), "PCMA".into()]
            },
        }
    }
}

impl WebRtcConfig {
    /// [`WebRtcConfig::codecs`], checked.
    pub fn codec_list(&self) -> Result<Vec<crate::media::codec::CodecKind>, ConfigError> {
        codec_list("webrtc.codecs", &self.codecs)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.codec_list()?;
        if self.connect_timeout_secs == 0
            || self.answer_timeout_secs == 0
            || self.max_sessions_per_source == 0
        {
            return Err(ConfigError::Invalid(
                "webrtc: timeouts and max_sessions_per_source must be greater than 0".into(),
            ));
        }
        if self.public_ip.is_some_and(|ip| ip.is_unspecified()) {
            return Err(ConfigError::Invalid(
                "webrtc: public_ip must be an address media can be sent to".into(),
            ));
        }
        Ok(())
    }
}

/// One `[[trunks]]` entry: a carrier's proxy, the account there and how calls use it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Unique; what `trunk:NAME/NUMBER` names.
    pub name: String,
    /// `sip:IP:PORT;transport=udp|tcp|tls` or `sips:IP[:PORT]`: where INVITEs and REGISTERs go (names are not resolved).
    pub proxy: String,
    /// Host part of the Request-URI, To and From; the proxy's host when absent.
    #[serde(default)]
    pub domain: Option<String>,
    /// Digest user name (also the user of the registered address of record).
    #[serde(default)]
    pub username: String,
    /// Digest password (or `ha1`, never both).
    #[serde(default)]
    pub password: Option<String>,
    /// MD5(username:realm:password) in hex, instead of the password.
    #[serde(default)]
    pub ha1: Option<String>,
    /// Keep a registration at the proxy, refreshed before it lapses.
    #[serde(default)]
    pub register: bool,
    /// Binding lifetime asked for, in seconds.
    #[serde(default = "trunk_register_expires")]
    pub register_expires: u32,
    /// The From user of calls through the trunk; the calling party's own when absent.
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Calls through the trunk at once (0: no cap).
    #[serde(default)]
    pub max_calls: usize,
}

fn trunk_register_expires() -> u32 {
    600
}

impl std::fmt::Debug for TrunkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets stay out of logs.
        f.debug_struct("TrunkConfig")
            .field("name", &self.name)
            .field("proxy", &self.proxy)
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("register", &self.register)
            .field("caller_id", &self.caller_id)
            .field("max_calls", &self.max_calls)
            .finish_non_exhaustive()
    }
}

/// `[ivr]`: settings the shipped scripts read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrConfig {
    /// Where `0` in the menu puts the caller through (`dial`); every script sees it as
    /// `session.vars.operator` unless its dialplan rule sets that variable. Empty: no
    /// operator.
    pub operator: String,
}

/// `[outbound]`: which calls scripts may place, and how many.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Target URI patterns (`*` for any run of characters) a `dial` may reach; nothing else.
    pub allow: Vec<String>,
    /// Placed legs across the server at once.
    pub max_calls: usize,
    /// Legs one call may place in all.
    pub max_legs_per_call: u32,
}

/// `[dtmf]`: what the in-band detector of every call accepts as a key tone (ITU-T Q.24).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtmfConfig {
    /// Quietest accepted level of each of the two tones, in dBm0.
    pub min_level_dbm0: f32,
    /// Normal twist: how much quieter the high-group tone may be than the low-group one, dB.
    pub normal_twist_db: f32,
    /// Reverse twist: how much louder the high-group tone may be than the low-group one, dB.
    pub reverse_twist_db: f32,
    /// Which legs listen for key tones in their audio: `"always"`, or `"auto"` (only legs
    /// that did not agree RFC 4733 events).
    pub inband: crate::media::dtmf::InbandDetection,
}

impl Default for DtmfConfig {
    fn default() -> Self {
        let d = DetectorConfig::default();
        Self {
            min_level_dbm0: d.min_level_dbm0,
            normal_twist_db: d.normal_twist_db,
            reverse_twist_db: d.reverse_twist_db,
            inband: crate::media::dtmf::InbandDetection::Always,
        }
    }
}

impl DtmfConfig {
    /// The detector thresholds these settings give; the rest keep their defaults.
    pub fn detector(&self) -> DetectorConfig {
        DetectorConfig {
            min_level_dbm0: self.min_level_dbm0,
            normal_twist_db: self.normal_twist_db,
            reverse_twist_db: self.reverse_twist_db,
            ..DetectorConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("dtmf: {m}")));
        if !(-60.0..=0.0).contains(&self.min_level_dbm0) {
            return invalid(format!(
                "min_level_dbm0 {} must be between -60 and 0",
                self.min_level_dbm0
            ));
        }
        for (name, v) in [
            ("normal_twist_db", self.normal_twist_db),
            ("reverse_twist_db", self.reverse_twist_db),
        ] {
            if !(0.0..=20.0).contains(&v) {
                return invalid(format!("{name} {v} must be between 0 and 20"));
            }
        }
        Ok(())
    }
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
    /// Threads running every call's script as a coroutine (0: the number of cores, at
    /// least 2).
    #[serde(default)]
    pub threads: usize,
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

/// This instance's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The instance's name in `/api/info` and `/api/rooms`, kept to a plain word so logs and
    /// scripts can carry it as it is (empty: the host name).
    pub name: String,
}

impl ServerConfig {
    /// The name, or the host name when none is set.
    pub fn instance_name(&self) -> String {
        let set = self.name.trim();
        if !set.is_empty() {
            return set.to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "switchboard".to_string())
    }
}

/// An optional listen address of `[sip]` setting `key`: None when empty.
fn listen_addr(key: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let t = value.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| ConfigError::Invalid(format!("sip: {key} {t:?} is not IP:port")))
}

/// SIP transport and timer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    /// TLS listen address (empty: no TLS listener).
    pub tls_listen: String,
    /// Server certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Private key of `tls_cert` (PEM).
    pub tls_key: PathBuf,
    /// Extra roots for outbound TLS (PEM; empty: the system roots alone).
    pub tls_ca: PathBuf,
    /// Whether outbound TLS checks the server certificate.
    pub tls_verify: bool,
    /// SIP over WebSocket (`ws://`) listen address (empty: none).
    pub ws_listen: String,
    /// SIP over secure WebSocket (`wss://`) listen address (empty: none); uses `tls_cert`.
    pub wss_listen: String,
    pub advertise: String,
    pub user_agent: String,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    pub max_call_secs: u64,
    pub max_message_bytes: usize,
    /// Session interval we ask for and the most we grant (RFC 4028), in seconds.
    pub session_expires: u32,
    /// The smallest session interval we accept (at least 90), in seconds.
    pub min_se: u32,
    /// Addresses and prefixes allowed to send SIP (empty: everyone).
    pub allow: Vec<String>,
    /// Addresses and prefixes refused, even when `allow` lists them.
    pub deny: Vec<String>,
    /// What a source the lists shut out gets: `"403"` or `"drop"`.
    pub acl_action: crate::sip::guard::AclAction,
    /// User-Agent substrings (any case) whose requests are dropped unanswered.
    pub scanner_user_agents: Vec<String>,
    /// New INVITEs per second from one source (0: no limit), and how many at once.
    pub invite_rate: f64,
    pub invite_burst: u32,
    /// REGISTERs per second from one source (0: no limit), and how many at once.
    pub register_rate: f64,
    pub register_burst: u32,
    /// OPTIONS and other requests outside a dialog per second from one source (0: no
    /// limit), and how many at once.
    pub options_rate: f64,
    pub options_burst: u32,
    /// Rate refusals of one source within `escalate_window_secs` after which its requests
    /// are dropped for `block_secs` (0: never).
    pub escalate_after: u32,
    pub escalate_window_secs: u64,
    pub block_secs: u64,
    /// Concurrent calls (0: as many as the RTP ports allow).
    pub max_calls: usize,
    /// New calls per second, server-wide (0: no cap).
    pub max_cps: u32,
    /// INVITEs not answered yet, server-wide (0: no cap).
    pub max_pending_invites: usize,
    /// Open TCP connections from one address (0: no cap).
    pub max_tcp_per_source: u32,
    /// Sources whose rates are tracked at once; beyond it the least recently seen is
    /// forgotten.
    pub guard_sources: usize,
    /// On SIGTERM or a drain request: seconds calls in progress may go on before they get BYE.
    pub drain_secs: u64,
    /// Digest realm of the challenges (empty: the advertised address).
    pub auth_realm: String,
    /// Digest algorithms offered, in order: `SHA-256`, `MD5`.
    pub auth_algorithms: Vec<String>,
    /// Lifetime of a nonce in seconds; later answers to it get `stale=true`.
    pub nonce_secs: u64,
    /// Proxies in front (`ip:port`, address or prefix) whose `X-Switchboard-Source` header
    /// gives the caller's address.
    pub trusted_proxies: Vec<String>,
}

impl SipConfig {
    /// The TLS listen address, None when TLS is off.
    pub fn tls_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("tls_listen", &self.tls_listen)
    }

    /// The `ws://` listen address, None when off.
    pub fn ws_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("ws_listen", &self.ws_listen)
    }

    /// The `wss://` listen address, None when off.
    pub fn wss_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("wss_listen", &self.wss_listen)
    }

    /// The guard's settings; fails on a malformed address prefix.
    pub fn guard(&self) -> Result<crate::sip::guard::GuardConfig, ConfigError> {
        use crate::sip::guard::{Acl, GuardConfig, Rate};
        let acl = Acl::parse(&self.allow, &self.deny)
            .map_err(|e| ConfigError::Invalid(format!("sip: allow/deny: {e}")))?;
        let trusted_proxies = crate::sip::proxy::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| ConfigError::Invalid(format!("sip: trusted_proxies: {e}")))?;
        let rate = |name: &str, per_sec: f64, burst: u32| {
            if !(per_sec.is_finite() && per_sec >= 0.0) || burst == 0 {
                return Err(ConfigError::Invalid(format!(
                    "sip: {name}_rate must be 0 or more and {name}_burst at least 1"
                )));
            }
            Ok(Rate { per_sec, burst })
        };
        if self.guard_sources == 0 {
            return Err(ConfigError::Invalid(
                "sip: guard_sources must be at least 1".into(),
            ));
        }
        Ok(GuardConfig {
            acl,
            acl_action: self.acl_action,
            scanner_agents: self.scanner_user_agents.clone(),
            invite: rate("invite", self.invite_rate, self.invite_burst)?,
            register: rate("register", self.register_rate, self.register_burst)?,
            options: rate("options", self.options_rate, self.options_burst)?,
            escalate_after: self.escalate_after,
            escalate_window: Duration::from_secs(self.escalate_window_secs),
            block: Duration::from_secs(self.block_secs),
            max_calls: self.max_calls,
            max_cps: self.max_cps,
            max_pending_invites: self.max_pending_invites,
            max_tcp_per_source: self.max_tcp_per_source,
            sources: self.guard_sources,
            trusted_proxies,
        })
    }

    /// The session timer settings for the endpoint.
    pub fn session_timers(&self) -> crate::sip::session_timer::SessionTimerConfig {
        crate::sip::session_timer::SessionTimerConfig {
            session_expires: self.session_expires,
            min_se: self.min_se,
        }
    }
}

/// Media port range.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpConfig {
    pub port_min: u16,
    pub port_max: u16,
    /// When media is SRTP (SDES keys): `optional`, `required` or `off`.
    #[serde(default)]
    pub srtp: crate::sdp::SrtpPolicy,
}

/// Media engine settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub workers: usize,
    pub realtime_priority: i32,
    pub rtp_timeout_secs: u64,
    /// Which RTP sources a call hears (see [`crate::rtp::session`]).
    pub strict_rtp: crate::rtp::session::StrictRtp,
    /// How long after the answer (or a move of the caller's media) another source may be learned.
    pub strict_rtp_learn_ms: u64,
    /// The codecs calls may use, in our preference order (SDP names, case-insensitive).
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
    /// How an answer picks among the codecs both sides support.
    #[serde(default)]
    pub codec_choice: crate::sdp::CodecChoice,
    /// How the media workers move datagrams: io_uring or a system call per datagram.
    #[serde(default)]
    pub io: crate::engine::IoMode,
}

fn default_codecs() -> Vec<String> {
    crate::media::codec::CodecKind::ALL
        .iter()
        .map(|k| k.name().to_owned())
        .collect()
}

impl MediaConfig {
    /// The configured codecs, in order; an unknown name, a repeat or an empty list is an error.
    pub fn codec_list(&self) -> Result<Vec<crate::media::codec::CodecKind>, ConfigError> {
        codec_list("media.codecs", &self.codecs)
    }
}

/// The codecs named by setting `key`, in order, each known and built in, none twice.
fn codec_list(
    key: &str,
    names: &[String],
) -> Result<Vec<crate::media::codec::CodecKind>, ConfigError> {
    {
        use crate::media::codec::CodecKind;
        let invalid = |m: String| ConfigError::Invalid(format!("{key}: {m}"));
        let mut list: Vec<CodecKind> = Vec::with_capacity(names.len());
        for name in names {
            let kind = CodecKind::from_config_name(name).ok_or_else(|| {
                if name.eq_ignore_ascii_case("opus") {
                    invalid("opus needs a build with the `opus` feature (libopus)".into())
                } else {
                    invalid(format!(
                        "unknown codec {name:?} (known: PCMU, PCMA, G722, L16, L16/8000, opus)"
                    ))
                }
            })?;
            if list.contains(&kind) {
                return Err(invalid(format!("{name:?} is listed twice")));
            }
            list.push(kind);
        }
        if list.is_empty() {
            return Err(invalid("at least one codec is needed".into()));
        }
        Ok(list)
    }
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

/// Conference rooms: defaults for every room, and overrides by room name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConferenceConfig {
    /// Most members in one room.
    pub max_members: usize,
    /// In-call keys: key (`0`-`9`, `*`, `#`, `A`-`D`) to action.
    pub keys: BTreeMap<String, KeyAction>,
    /// Tone spec played to the room when someone joins (empty: none).
    pub join_sound: String,
    /// Tone spec played to the room when someone leaves (empty: none).
    pub leave_sound: String,
    /// Tell a joiner how many members there are (`digits/N` prompts).
    pub announce_count: bool,
    /// Prompt for a member joining an empty room (empty: none).
    pub alone_prompt: String,
    /// Prompt repeated to members waiting for a moderator (empty: a tone).
    pub wait_prompt: String,
    /// Members other than moderators wait, unmixed, until a moderator joins.
    pub wait_for_moderator: bool,
    /// The room ends when its last moderator leaves.
    pub end_with_last_moderator: bool,
    /// Record every room from its creation.
    pub auto_record: bool,
    /// Room recordings also keep a track per member.
    pub multitrack: bool,
    /// The rate rooms mix at: `auto` (the highest among the members' codecs), or 8000,
    /// 16000 or 48000 Hz always.
    pub rate: String,
    /// Talker detection: level to start talking, dBov.
    pub talk_start_dbov: f32,
    /// Talker detection: level below which a talker counts towards stopping, dBov.
    pub talk_stop_dbov: f32,
    /// Talker detection: loud audio needed to start, ms.
    pub talk_attack_ms: u64,
    /// Talker detection: quiet audio a talker is still mixed through, ms.
    pub talk_hangover_ms: u64,
    /// Overrides by room name.
    #[serde(default)]
    pub rooms: BTreeMap<String, RoomOverride>,
}

/// Settings of one named room that differ from the `[conference]` defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomOverride {
    pub max_members: Option<usize>,
    pub keys: Option<BTreeMap<String, KeyAction>>,
    pub join_sound: Option<String>,
    pub leave_sound: Option<String>,
    pub announce_count: Option<bool>,
    pub alone_prompt: Option<String>,
    pub wait_prompt: Option<String>,
    pub wait_for_moderator: Option<bool>,
    pub end_with_last_moderator: Option<bool>,
    pub auto_record: Option<bool>,
    pub multitrack: Option<bool>,
    pub rate: Option<String>,
    pub talk_start_dbov: Option<f32>,
    pub talk_stop_dbov: Option<f32>,
    pub talk_attack_ms: Option<u64>,
    pub talk_hangover_ms: Option<u64>,
}

/// A room's `rate` setting: `None` for `auto`.
fn mix_rate(s: &str) -> Result<Option<ClockRate>, String> {
    match s.trim() {
        "auto" => Ok(None),
        "8000" => Ok(Some(ClockRate::HZ_8000)),
        "16000" => Ok(Some(ClockRate::HZ_16000)),
        "48000" => Ok(Some(ClockRate::HZ_48000)),
        other => Err(format!(
            "rate {other:?}: \"auto\", \"8000\", \"16000\" or \"48000\""
        )),
    }
}

impl ConferenceConfig {
    fn over(&self, room: &str) -> RoomOverride {
        self.rooms.get(room).cloned().unwrap_or_default()
    }

    /// The settings room `room` runs with (checked by [`Config::validate`]; anything invalid
    /// that slipped through falls back to the defaults).
    pub fn room_settings(&self, room: &str) -> RoomSettings {
        self.try_room_settings(room).unwrap_or_default()
    }

    fn try_room_settings(&self, room: &str) -> Result<RoomSettings, String> {
        let o = self.over(room);
        let tone = |s: &str| -> Result<Option<ToneSpec>, String> {
            if s.trim().is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(|e| format!("tone {s:?}: {e}"))
        };
        let mut keys = KeyMap::empty();
        for (k, action) in o.keys.as_ref().unwrap_or(&self.keys) {
            let mut chars = k.chars();
            let digit = match (chars.next(), chars.next()) {
                (Some(c), None) => Digit::from_char(c),
                _ => None,
            }
            .ok_or_else(|| format!("key {k:?} is not one DTMF key"))?;
            keys.set(digit, Some(*action));
        }
        let vad = VadConfig {
            start_dbov: o.talk_start_dbov.unwrap_or(self.talk_start_dbov),
            stop_dbov: o.talk_stop_dbov.unwrap_or(self.talk_stop_dbov),
            attack: Duration::from_millis(o.talk_attack_ms.unwrap_or(self.talk_attack_ms)),
            hangover: Duration::from_millis(o.talk_hangover_ms.unwrap_or(self.talk_hangover_ms)),
        };
        crate::conference::Mixer::new(vad).map_err(|e| e.to_string())?;
        let max_members = o.max_members.unwrap_or(self.max_members);
        if max_members == 0 || max_members > crate::conference::mixer::MAX_MEMBERS - 2 {
            return Err(format!("max_members {max_members} out of range"));
        }
        Ok(RoomSettings {
            max_members,
            keys,
            join_sound: tone(o.join_sound.as_deref().unwrap_or(&self.join_sound))?,
            leave_sound: tone(o.leave_sound.as_deref().unwrap_or(&self.leave_sound))?,
            announce_count: o.announce_count.unwrap_or(self.announce_count),
            wait_for_moderator: o.wait_for_moderator.unwrap_or(self.wait_for_moderator),
            end_with_last_moderator: o
                .end_with_last_moderator
                .unwrap_or(self.end_with_last_moderator),
            vad,
            rate: mix_rate(o.rate.as_deref().unwrap_or(&self.rate))?,
        })
    }

    /// Whether room `room` records from its creation.
    pub fn room_auto_record(&self, room: &str) -> bool {
        self.over(room).auto_record.unwrap_or(self.auto_record)
    }

    /// Whether room `room`'s recordings keep a track per member.
    pub fn room_multitrack(&self, room: &str) -> bool {
        self.over(room).multitrack.unwrap_or(self.multitrack)
    }

    /// Room `room`'s alone and wait prompts, and whether it announces the member count.
    pub fn room_prompts(&self, room: &str) -> (String, String, bool) {
        let o = self.over(room);
        (
            o.alone_prompt.unwrap_or_else(|| self.alone_prompt.clone()),
            o.wait_prompt.unwrap_or_else(|| self.wait_prompt.clone()),
            o.announce_count.unwrap_or(self.announce_count),
        )
    }

    /// Checks the defaults and every override.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.try_room_settings("")
            .map_err(|e| ConfigError::Invalid(format!("conference: {e}")))?;
        for name in self.rooms.keys() {
            self.try_room_settings(name)
                .map_err(|e| ConfigError::Invalid(format!("conference.rooms.{name}: {e}")))?;
        }
        Ok(())
    }
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
        let no_cert =
            self.sip.tls_cert.as_os_str().is_empty() || self.sip.tls_key.as_os_str().is_empty();
        for (key, addr) in [
            ("tls_listen", self.sip.tls_addr()?),
            ("wss_listen", self.sip.wss_addr()?),
        ] {
            if addr.is_some() && no_cert {
                return Err(ConfigError::Invalid(format!(
                    "sip: {key} needs tls_cert and tls_key"
                )));
            }
        }
        self.sip.ws_addr()?;
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(ConfigError::Invalid(
                "sip timers must satisfy 0 < t1_ms <= t2_ms".into(),
            ));
        }
        let floor = crate::sip::session_timer::MIN_SE_FLOOR;
        if self.sip.min_se < floor || self.sip.session_expires < self.sip.min_se {
            return Err(ConfigError::Invalid(format!(
                "sip: session timers must satisfy {floor} <= min_se <= session_expires"
            )));
        }
        let name = &self.server.name;
        if name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::Invalid(format!(
                "server: name {name:?} must be at most 64 letters, digits, '-', '_' or '.'"
            )));
        }
        self.advertise_ip()?;
        self.sip.guard()?;
        self.auth()?;
        crate::sip::trunks::Trunks::new(&self.trunks)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
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
        self.conference.validate()?;
        self.dtmf.validate()?;
        self.tts
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.asr
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.webrtc.validate()?;
        self.media.codec_list()?;
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

    /// The authentication settings and users, checked; None when no dialplan rule asks for
    /// authentication (users are still checked).
    pub fn auth(&self) -> Result<Option<crate::sip::auth::AuthConfig>, ConfigError> {
        let realm = if self.sip.auth_realm.is_empty() {
            self.advertise_ip()?.to_string()
        } else {
            self.sip.auth_realm.clone()
        };
        let cfg = crate::sip::auth::AuthConfig::new(
            &realm,
            &self.sip.auth_algorithms,
            self.sip.nonce_secs,
            &self.users,
        )
        .map_err(|e| ConfigError::Invalid(format!("sip/users: {e}")))?;
        let protects = self.dialplan.iter().any(|r| r.auth);
        if protects && self.users.is_empty() {
            return Err(ConfigError::Invalid(
                "a dialplan rule has auth = true but no [[users]] are configured".into(),
            ));
        }
        Ok(protects.then_some(cfg))
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
    fn trusted_proxies_are_none_by_default_and_checked() {
        let c = Config::embedded().unwrap();
        assert!(c.sip.guard().unwrap().trusted_proxies.is_empty());
        let c = Config::from_toml_str(
            "t",
            "[sip]\ntrusted_proxies = [\"127.0.0.1:5060\", \"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(!c.sip.guard().unwrap().trusted_proxies.is_empty());
        for bad in ["kamailio:5060", "10.0.0.1/8"] {
            let c = Config::from_toml_str("t", &format!("[sip]\ntrusted_proxies = [{bad:?}]\n"))
                .unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("trusted_proxies"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_instance_name_is_the_host_name_unless_set_and_a_plain_word() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.server.name, "");
        let host = c.server.instance_name();
        assert!(!host.is_empty() && !host.contains('\n'), "{host:?}");
        let named = Config::from_toml_str("t", "[server]\nname = \"sb-2\"\n").unwrap();
        named.validate().unwrap();
        assert_eq!(named.server.instance_name(), "sb-2");
        let longest = "a".repeat(64);
        for ok in [longest.as_str(), "node_1.eu"] {
            let c = Config::from_toml_str("t", &format!("[server]\nname = {ok:?}\n")).unwrap();
            assert!(c.validate().is_ok(), "{ok}");
        }
        let too_long = "a".repeat(65);
        for bad in [too_long.as_str(), "a/b", "a b", "../x"] {
            let c = Config::from_toml_str("t", &format!("[server]\nname = {bad:?}\n")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn strict_rtp_is_strict_unless_set() {
        use crate::rtp::session::StrictRtp;
        let c = Config::embedded().unwrap();
        assert_eq!(c.media.strict_rtp, StrictRtp::Strict);
        assert_eq!(c.media.strict_rtp_learn_ms, 5000);
        for (text, mode) in [("learn", StrictRtp::Learn), ("off", StrictRtp::Off)] {
            let c =
                Config::from_toml_str("t", &format!("[media]\nstrict_rtp = \"{text}\"\n")).unwrap();
            assert_eq!(c.media.strict_rtp, mode);
        }
        assert!(Config::from_toml_str("t", "[media]\nstrict_rtp = \"yes\"\n").is_err());
    }

    #[test]
    fn media_io_is_sockets_unless_set() {
        use crate::engine::IoMode;
        assert_eq!(Config::embedded().unwrap().media.io, IoMode::Sockets);
        assert_eq!(IoMode::default(), IoMode::Sockets);
        for (text, mode) in [
            ("auto", IoMode::Auto),
            ("uring", IoMode::Uring),
            ("sockets", IoMode::Sockets),
        ] {
            let c = Config::from_toml_str("t", &format!("[media]\nio = \"{text}\"\n")).unwrap();
            assert_eq!(c.media.io, mode);
        }
        assert!(Config::from_toml_str("t", "[media]\nio = \"epoll\"\n").is_err());
    }

    #[test]
    fn codecs_default_to_g711_and_follow_the_configured_order() {
        use crate::media::codec::CodecKind;
        use crate::sdp::CodecChoice;
        let c = Config::embedded().unwrap();
        assert_eq!(
            c.media.codec_list().unwrap(),
            vec![CodecKind::Pcmu, CodecKind::Pcma]
        );
        assert_eq!(c.media.codec_choice, CodecChoice::Generous);
        let c = Config::from_toml_str(
            "t",
            "[media]\ncodecs = [\"g722\", \"L16\", \"l16/8000\", \"pcma\"]\ncodec_choice = \"greedy\"\n",
        )
        .unwrap();
        assert_eq!(
            c.media.codec_list().unwrap(),
            vec![
                CodecKind::G722,
                CodecKind::L16Wide,
                CodecKind::L16Narrow,
                CodecKind::Pcma
            ]
        );
        assert_eq!(c.media.codec_choice, CodecChoice::Greedy);
        for bad in [
            "codecs = []",
            "codecs = [\"G729\"]",
            "codecs = [\"PCMU\", \"pcmu\"]",
        ] {
            let c = Config::from_toml_str("t", &format!("[media]\n{bad}\n")).unwrap();
            assert!(c.media.codec_list().is_err(), "{bad}");
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(Config::from_toml_str("t", "[media]\ncodec_choice = \"fair\"\n").is_err());
        let opus = Config::from_toml_str("t", "[media]\ncodecs = [\"opus\", \"PCMU\"]\n")
            .unwrap()
            .media
            .codec_list();
        if cfg!(feature = "opus") {
            assert_eq!(opus.unwrap()[0].name(), "opus");
        } else {
            let err = opus.unwrap_err().to_string();
            assert!(err.contains("`opus` feature"), "{err}");
        }
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
    fn session_timer_settings_default_and_bounds() {
        let c = Config::embedded().unwrap();
        assert_eq!((c.sip.session_expires, c.sip.min_se), (1800, 90));
        let ok = Config::from_toml_str("t", "[sip]\nmin_se = 90\nsession_expires = 90\n").unwrap();
        ok.validate().unwrap();
        for bad in [
            "[sip]\nmin_se = 89\n",
            "[sip]\nmin_se = 600\nsession_expires = 599\n",
        ] {
            let c = Config::from_toml_str("t", bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
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
    fn dtmf_limits_default_to_q24_and_can_be_set() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.dtmf, DtmfConfig::default());
        assert_eq!(c.dtmf.detector(), DetectorConfig::default());
        assert_eq!(c.dtmf.normal_twist_db, 8.0);
        assert_eq!(c.dtmf.reverse_twist_db, 4.0);
        assert!(c.dtmf.min_level_dbm0 <= -36.0);
        let c = Config::from_toml_str(
            "t",
            "[dtmf]
min_level_dbm0 = -30.0
",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.dtmf.detector().min_level_dbm0, -30.0);
        assert_eq!(c.dtmf.normal_twist_db, 8.0);
        assert_eq!(c.dtmf.inband, crate::media::dtmf::InbandDetection::Always);
        let auto = Config::from_toml_str("t", "[dtmf]\ninband = \"auto\"\n").unwrap();
        assert_eq!(auto.dtmf.inband, crate::media::dtmf::InbandDetection::Auto);
        assert!(Config::from_toml_str("t", "[dtmf]\ninband = \"sometimes\"\n").is_err());
        assert!(Config::from_toml_str(
            "t",
            "[dtmf]
twist_db = 3.0
"
        )
        .is_err());
        for bad in [
            "[dtmf]
min_level_dbm0 = 5.0
",
            "[dtmf]
normal_twist_db = -1.0
",
            "[dtmf]
reverse_twist_db = 40.0
",
        ] {
            let c = Config::from_toml_str("t", bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn conference_defaults_and_a_room_override() {
        let c = Config::from_toml_str(
            "t",
            "[conference.rooms.board]\nmax_members = 5\nwait_for_moderator = true\n\
             [conference.rooms.board.keys]\n\"1\" = \"leave\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let d = c.conference.room_settings("lobby");
        assert_eq!(d.max_members, 100);
        assert!(!d.wait_for_moderator);
        let leave = Digit::from_char('8').unwrap();
        assert_eq!(d.keys.get(leave), Some(KeyAction::Leave));
        let b = c.conference.room_settings("board");
        assert_eq!(b.max_members, 5);
        assert!(b.wait_for_moderator);
        assert_eq!(
            b.keys.get(leave),
            None,
            "a room's key map replaces the default"
        );
        assert_eq!(
            b.keys.get(Digit::from_char('1').unwrap()),
            Some(KeyAction::Leave)
        );
    }

    #[test]
    fn conference_mistakes_are_caught_at_load() {
        assert!(Config::from_toml_str("t", "[conference]\nmax_memberz = 3\n").is_err());
        assert!(Config::from_toml_str("t", "[conference.rooms.x]\nbogus = 1\n").is_err());
        assert!(Config::from_toml_str("t", "[conference.keys]\n\"0\" = \"explode\"\n").is_err());
        for bad in [
            "[conference.keys]\n\"00\" = \"mute\"\n",
            "[conference]\njoin_sound = \"not a tone\"\n",
            "[conference]\ntalk_stop_dbov = -10.0\n",
            "[conference.rooms.x]\nmax_members = 0\n",
        ] {
            let c = Config::from_toml_str("t", bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn users_and_auth_settings() {
        let c = Config::embedded().unwrap();
        assert!(
            c.auth().unwrap().is_none(),
            "no rule asks for authentication"
        );
        assert_eq!(c.sip.auth_algorithms, ["SHA-256", "MD5"]);
        assert_eq!(c.sip.nonce_secs, 300);
        let rule = "[[dialplan]]\nexact = \"s\"\nscript = \"echo\"\nauth = true\n";
        let c = Config::from_toml_str("t", rule).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no [[users]]"));
        let ha1 =
            crate::sip::digest::ha1(crate::sip::digest::Algorithm::Md5, "b", "127.0.0.1", "p");
        let text = format!(
            "{rule}[[users]]\nname = \"a\"\npassword = \"x\"\n\
             [[users]]\nname = \"b\"\nha1 = \"{ha1}\"\n"
        );
        let c = Config::from_toml_str("t", &text).unwrap();
        c.validate().unwrap();
        let auth = c.auth().unwrap().unwrap();
        assert_eq!(auth.realm, "127.0.0.1", "the advertised address by default");
        let c = Config::from_toml_str("t", &format!("{text}[sip]\nauth_realm = \"sb\"\n")).unwrap();
        assert_eq!(c.auth().unwrap().unwrap().realm, "sb");
        for bad in [
            format!("{text}[[users]]\nname = \"a\"\npassword = \"y\"\n"),
            format!("{text}[[users]]\nname = \"c\"\nha1 = \"abc\"\n"),
            format!("{text}[sip]\nauth_algorithms = [\"SHA-256\"]\n"),
            format!("{text}[sip]\nnonce_secs = 0\n"),
        ] {
            let c = Config::from_toml_str("t", &bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(Config::from_toml_str("t", "[[users]]\nname = \"a\"\npasswd = \"x\"\n").is_err());
    }

    #[test]
    fn guard_settings_default_and_mistakes() {
        use crate::sip::guard::AclAction;
        let c = Config::embedded().unwrap();
        let g = c.sip.guard().unwrap();
        assert_eq!(g.acl_action, AclAction::Forbidden);
        assert!(g.scanner_agents.iter().any(|s| s == "friendly-scanner"));
        assert!(g.invite.per_sec > 0.0 && g.max_cps > 0);
        assert_eq!(c.sip.drain_secs, 300);
        let c = Config::from_toml_str(
            "t",
            "[sip]\nallow = [\"10.0.0.0/8\", \"::1\"]\ndeny = [\"10.6.0.0/16\"]\nacl_action = \"drop\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let g = c.sip.guard().unwrap();
        assert_eq!(g.acl_action, AclAction::Drop);
        assert!(g.acl.permits("10.1.1.1".parse().unwrap()));
        assert!(!g.acl.permits("10.6.1.1".parse().unwrap()));
        assert!(Config::from_toml_str("t", "[sip]\nacl_action = \"404\"\n").is_err());
        for bad in [
            "[sip]\ndeny = [\"10.0.0.1/8\"]\n",
            "[sip]\nallow = [\"localhost\"]\n",
            "[sip]\ninvite_burst = 0\n",
            "[sip]\noptions_rate = -1.0\n",
            "[sip]\nguard_sources = 0\n",
        ] {
            let c = Config::from_toml_str("t", bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn trunks_are_validated_at_load() {
        let ok = "[[trunks]]\nname = \"carrier\"\nproxy = \"sip:203.0.113.5:5060;transport=udp\"\n\
                  domain = \"sip.example.net\"\nusername = \"acct\"\npassword = \"secret\"\n\
                  register = true\nregister_expires = 600\ncaller_id = \"+15551230000\"\nmax_calls = 50\n\
                  [[trunks]]\nname = \"backup\"\nproxy = \"sip:198.51.100.7\"\n";
        let c = Config::from_toml_str("t", ok).unwrap();
        c.validate().unwrap();
        assert_eq!(c.trunks.len(), 2);
        assert_eq!(c.trunks[0].max_calls, 50);
        assert!(!c.trunks[1].register);
        assert_eq!(c.trunks[1].register_expires, 600);
        assert!(!format!("{:?}", c.trunks[0]).contains("secret"));
        assert!(Config::embedded().unwrap().trunks.is_empty());
        let one = |extra: &str| {
            format!("[[trunks]]\nname = \"a\"\nproxy = \"sip:192.0.2.1:5060\"\n{extra}")
        };
        let dup = format!("{}{}", one(""), one(""));
        for bad in [
            dup,
            one("username = \"u\"\npassword = \"p\"\nha1 = \"0123456789abcdef0123456789abcdef\"\n"),
            one("password = \"p\"\n"),
            one("username = \"u\"\nha1 = \"xyz\"\n"),
            one("register_expires = 0\n"),
            one("caller_id = \"a b\"\n"),
            "[[trunks]]\nname = \"x\"\nproxy = \"sip:carrier.example.net\"\n".into(),
            "[[trunks]]\nname = \"x\"\nproxy = \"sips:192.0.2.1;transport=udp\"\n".into(),
            "[[trunks]]\nname = \"x\"\nproxy = \"sip:192.0.2.1;transport=sctp\"\n".into(),
            "[[trunks]]\nname = \"a,b\"\nproxy = \"sip:192.0.2.1\"\n".into(),
            "[[trunks]]\nname = \"\"\nproxy = \"sip:192.0.2.1\"\n".into(),
        ] {
            let c = Config::from_toml_str("t", &bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        // Just inside: ha1 alone (with a user), and a registration of 1 s.
        let c = Config::from_toml_str(
            "t",
            &one("username = \"u\"\nha1 = \"0123456789ABCDEF0123456789abcdef\"\nregister_expires = 1\n"),
        )
        .unwrap();
        c.validate().unwrap();
        assert!(Config::from_toml_str("t", &one("pasword = \"p\"\n")).is_err());
        // TLS proxies: sips:, or transport=tls.
        for good in ["sips:192.0.2.1", "sip:192.0.2.1:5061;transport=tls"] {
            let c = Config::from_toml_str(
                "t",
                &format!("[[trunks]]\nname = \"x\"\nproxy = \"{good}\"\n"),
            )
            .unwrap();
            c.validate().unwrap();
        }
    }

    #[test]
    fn a_tls_listener_needs_an_address_a_certificate_and_a_key() {
        let parse = |t: &str| Config::from_toml_str("t", &format!("[sip]\n{t}\n")).unwrap();
        assert_eq!(Config::embedded().unwrap().sip.tls_addr().unwrap(), None);
        let c = parse("tls_listen = \"127.0.0.1:5061\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"");
        c.validate().unwrap();
        assert_eq!(
            c.sip.tls_addr().unwrap(),
            Some("127.0.0.1:5061".parse().unwrap())
        );
        assert!(
            parse("tls_listen = \"127.0.0.1:5061\"\ntls_cert = \"c.pem\"")
                .validate()
                .is_err()
        );
        assert!(
            parse("tls_listen = \"localhost:5061\"\ntls_cert = \"c\"\ntls_key = \"k\"")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn websocket_listeners_take_an_address_and_wss_a_certificate_and_a_key() {
        let parse = |t: &str| Config::from_toml_str("t", &format!("[sip]\n{t}\n")).unwrap();
        let embedded = Config::embedded().unwrap();
        assert_eq!(embedded.sip.ws_addr().unwrap(), None);
        assert_eq!(embedded.sip.wss_addr().unwrap(), None);
        let c = parse("ws_listen = \"127.0.0.1:8080\"");
        c.validate().unwrap();
        assert_eq!(
            c.sip.ws_addr().unwrap(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let e = parse("ws_listen = \"localhost:8080\"")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("ws_listen"), "{e}");
        let e = parse("wss_listen = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("wss_listen needs tls_cert"), "{e}");
        let c = parse("wss_listen = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"");
        c.validate().unwrap();
        assert_eq!(
            c.sip.wss_addr().unwrap(),
            Some("127.0.0.1:8443".parse().unwrap())
        );
    }

    #[test]
    fn bad_port_range_is_rejected() {
        let c = Config::from_toml_str("t", "[rtp]\nport_min = 5000\nport_max = 4000\n").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_room_mixes_at_auto_or_a_fixed_rate_and_other_rates_are_refused() {
        let parse = |t: &str| Config::from_toml_str("t", &format!("[conference]\n{t}\n")).unwrap();
        let c = Config::embedded().unwrap();
        assert_eq!(
            c.conference.room_settings("any").rate,
            None,
            "auto by default"
        );
        let c = parse("rate = \"16000\"\n[conference.rooms.hd]\nrate = \"48000\"");
        c.validate().unwrap();
        assert_eq!(
            c.conference.room_settings("any").rate,
            Some(ClockRate::HZ_16000)
        );
        assert_eq!(
            c.conference.room_settings("hd").rate,
            Some(ClockRate::HZ_48000)
        );
        for bad in ["44100", "8k", "0", ""] {
            let c = parse(&format!("rate = \"{bad}\""));
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("rate"), "{bad}: {e}");
        }
        let c = parse("[conference.rooms.odd]\nrate = \"32000\"");
        assert!(c.validate().is_err(), "a room's own rate is checked too");
    }
}
