//! Digest authentication of callers (RFC 3261 §22.2, RFC 7616, RFC 8760): decides whether an
//! initial INVITE may reach its dialplan rule, and what to answer when it may not.
//!
//! The check runs inside the endpoint, on a new INVITE before its call exists
//! ([`crate::sip::endpoint::Endpoint::set_auth`]). There the 401 goes out on the INVITE's
//! own server transaction, so its retransmissions and the ACK are absorbed as for any other
//! final response, no call task or media is set up for a caller who never authenticates,
//! and the whole exchange can be driven in virtual time. The endpoint knows nothing of the
//! dialplan: it is handed a predicate, "does the dialled user need authentication", which
//! the server builds from the rules (`auth = true`).
//!
//! What a request gets:
//! - a user that needs no authentication passes untouched;
//! - no credentials for our realm, credentials we cannot use (an algorithm not offered, no
//!   `qop=auth`), or a nonce that is not ours (another server's, or ours before a restart):
//!   401 with one fresh challenge per offered algorithm, in the configured order (RFC 8760
//!   §2.4);
//! - the right answer to a nonce past its lifetime: 401 with `stale=true`, so the phone
//!   answers again without asking its user;
//! - a wrong answer, an unknown user (answered like a wrong password, so names cannot be
//!   probed), a digest-uri for another user than the Request-URI's, or the right answer
//!   with a nonce count not above the last one used with that nonce (a replay): a failure.
//!   HTTP answers refused credentials with a new challenge (RFC 7235 §3.1), which a phone
//!   shows its user as a password prompt; so a source's failures below
//!   [`FAILURES_BEFORE_FORBIDDEN`] get 401 again, and from then on, until
//!   [`FAILURE_WINDOW_SECS`] have passed since its first failure or it authenticates, 403
//!   (RFC 3261 §21.4.3: "authorization will not help"), which stops a phone's retry loop
//!   and tells a guesser nothing new.
//!
//! Every failure is counted per source ([`Authenticator::failures`]) and in all
//! ([`Authenticator::failures_total`], the `switchboard_sip_auth_failures_total` metric);
//! [`Authenticator::take_failed_sources`] hands the sources to the guard, whose escalation
//! blocks a source that keeps failing.
//!
//! Nonces carry their own signed time stamp ([`NonceIssuer`]) and a counter, so no state is
//! kept per challenge: a flood of unauthenticated INVITEs costs no memory. Nonce counts are
//! remembered only for nonces used with valid credentials. Sans-IO: `now` comes in with
//! every call and is turned into UNIX seconds from the pair given at construction.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use serde::Deserialize;

use super::digest::{
    self, parse_authorization, Algorithm, Authorization, Challenge, NonceCounts, NonceIssuer,
    NonceStatus, Qop,
};
use super::message::{canonical_name, Request};

/// Failures of one source (within [`FAILURE_WINDOW_SECS`]) from which on it gets 403.
pub const FAILURES_BEFORE_FORBIDDEN: u32 = 3;

/// How long a source's failures are remembered after its first one.
pub const FAILURE_WINDOW_SECS: u64 = 600;

/// Sources whose failures are remembered at once; beyond it the one failing longest ago
/// is forgotten.
const FAILURE_SOURCES: usize = 4096;

/// Nonces whose counts are remembered: more than the successful authentications of one
/// nonce lifetime on a busy server.
const COUNTED_NONCES: usize = 16384;

/// Stands in for the HA1 of a user we do not know.
const UNKNOWN_HA1: &str = "00000000000000000000000000000000";

/// One `[[users]]` entry as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The digest user name.
    pub name: String,
    /// The password; or give `ha1`.
    #[serde(default)]
    pub password: Option<String>,
    /// H(name:realm:password) in hex: 32 digits for MD5, 64 for SHA-256; a list gives one
    /// per algorithm.
    #[serde(default)]
    pub ha1: Option<Ha1Config>,
}

/// One HA1 or several (one per algorithm).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Ha1Config {
    /// One HA1; its length says its algorithm.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// What authentication needs, checked.
#[derive(Clone)]
pub struct AuthConfig {
    /// Protection space.
    pub realm: String,
    /// Algorithms offered, in order.
    pub algorithms: Vec<Algorithm>,
    /// Nonce lifetime in seconds.
    pub nonce_secs: u64,
    /// HA1 per user name and base algorithm.
    users: HashMap<String, Vec<(Algorithm, String)>>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The HA1s stay out of logs.
        f.debug_struct("AuthConfig")
            .field("realm", &self.realm)
            .field("algorithms", &self.algorithms)
            .field("nonce_secs", &self.nonce_secs)
            .field("users", &self.users.len())
            .finish()
    }
}

/// A setting authentication cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(pub String);

impl AuthConfig {
    /// Checks the users and settings: unique names, a password or HA1s (hex of the length
    /// of MD5 or SHA-256, at most one per algorithm), at least one HA1 of an offered
    /// algorithm, only MD5 and SHA-256 offered, each once, a lifetime of at least a second.
    pub fn new(
        realm: &str,
        algorithms: &[String],
        nonce_secs: u64,
        users: &[UserConfig],
    ) -> Result<Self, AuthConfigError> {
        let bad = |m: String| Err(AuthConfigError(m));
        if realm.is_empty() || realm.contains(['"', '\\', '\r', '\n']) {
            return bad(format!(
                "auth_realm {realm:?} must be a plain non-empty text"
            ));
        }
        if nonce_secs == 0 {
            return bad("nonce_secs must be at least 1".into());
        }
        let mut offered = Vec::new();
        for a in algorithms {
            match Algorithm::parse(a) {
                Some(alg @ (Algorithm::Md5 | Algorithm::Sha256)) if !offered.contains(&alg) => {
                    offered.push(alg)
                }
                Some(Algorithm::Md5 | Algorithm::Sha256) => {
                    return bad(format!("auth_algorithms lists {a} twice"))
                }
                _ => return bad(format!("auth_algorithms: {a:?} is not SHA-256 or MD5")),
            }
        }
        if offered.is_empty() {
            return bad("auth_algorithms must name SHA-256, MD5 or both".into());
        }
        let mut table = HashMap::new();
        for u in users {
            let who = format!("user {:?}", u.name);
            if u.name.is_empty() || u.name.contains(['"', '\\', '\r', '\n']) {
                return bad(format!("{who}: the name must be a plain non-empty text"));
            }
            if table.contains_key(&u.name) {
                return bad(format!("{who} is listed twice"));
            }
            let ha1s = match (&u.password, &u.ha1) {
                (Some(p), None) => offered
                    .iter()
                    .map(|&a| (a, digest::ha1(a, &u.name, realm, p)))
                    .collect(),
                (None, Some(h)) => {
                    parse_ha1s(h).map_err(|m| AuthConfigError(format!("{who}: {m}")))?
                }
                _ => return bad(format!("{who} needs exactly one of `password` and `ha1`")),
            };
            if !ha1s.iter().any(|(a, _)| offered.contains(a)) {
                return bad(format!("{who}: no ha1 for an algorithm in auth_algorithms"));
            }
            table.insert(u.name.clone(), ha1s);
        }
        Ok(AuthConfig {
            realm: realm.to_string(),
            algorithms: offered,
            nonce_secs,
            users: table,
        })
    }
}

/// HA1s by their length: 32 hex digits are MD5, 64 SHA-256.
fn parse_ha1s(h: &Ha1Config) -> Result<Vec<(Algorithm, String)>, String> {
    let list = match h {
        Ha1Config::One(s) => std::slice::from_ref(s),
        Ha1Config::Many(v) => v.as_slice(),
    };
    let mut out: Vec<(Algorithm, String)> = Vec::new();
    for s in list {
        let alg = match s.len() {
            32 => Algorithm::Md5,
            64 => Algorithm::Sha256,
            n => {
                return Err(format!(
                    "ha1 has {n} characters: 32 hex digits for MD5, 64 for SHA-256"
                ))
            }
        };
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("ha1 must be hex digits".into());
        }
        if out.iter().any(|(a, _)| *a == alg) {
            return Err(format!("two ha1 for {}", alg.as_str()));
        }
        out.push((alg, s.to_ascii_lowercase()));
    }
    if out.is_empty() {
        return Err("ha1 is empty".into());
    }
    Ok(out)
}

/// What an INVITE gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It goes on; with the authenticated user name when its user needs authentication.
    Pass(Option<String>),
    /// 401 with [`Authenticator::challenges`]; `stale` when only the nonce was out of date.
    Challenge {
        /// The nonce expired but the credentials were right.
        stale: bool,
    },
    /// 403: the source failed too often.
    Forbidden,
}

/// A source's failures since `since` (UNIX seconds).
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: u64,
}

/// Which dialled users need authentication.
pub type Protected = Box<dyn Fn(&str) -> bool + Send>;

/// The server side of digest authentication: challenges, verification, failure counts.
pub struct Authenticator {
    cfg: AuthConfig,
    issuer: NonceIssuer,
    counts: NonceCounts,
    failures: HashMap<IpAddr, Failures>,
    failed_sources: Vec<IpAddr>,
    failures_total: u64,
    protected: Protected,
    /// The UNIX time at `epoch`.
    epoch: Instant,
    epoch_unix: u64,
    /// Makes each nonce unique.
    issued: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("cfg", &self.cfg)
            .field("failures_total", &self.failures_total)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator signing nonces with `secret` (keep it unpredictable: whoever knows
    /// it can make nonces), whose clock reads `unix_secs` at `now`; `protected` says which
    /// dialled users need authentication.
    pub fn new(
        cfg: AuthConfig,
        secret: Vec<u8>,
        now: Instant,
        unix_secs: u64,
        protected: Protected,
    ) -> Self {
        Authenticator {
            issuer: NonceIssuer::new(secret, cfg.realm.clone(), cfg.nonce_secs),
            cfg,
            counts: NonceCounts::new(COUNTED_NONCES),
            failures: HashMap::new(),
            failed_sources: Vec::new(),
            failures_total: 0,
            protected,
            epoch: now,
            epoch_unix: unix_secs,
            issued: 0,
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch_unix + now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Decides on an initial INVITE from `source` at `now`.
    pub fn check(&mut self, now: Instant, source: IpAddr, req: &Request) -> Decision {
        let user = req.uri.user().unwrap_or("");
        if !(self.protected)(user) {
            return Decision::Pass(None);
        }
        let unix = self.unix(now);
        let Some(auth) = self.credentials(req) else {
            return Decision::Challenge { stale: false };
        };
        if !self.cfg.algorithms.contains(&auth.algorithm) || auth.qop != Some(Qop::Auth) {
            return Decision::Challenge { stale: false };
        }
        let status = self.issuer.check(&auth.nonce, unix);
        if status == NonceStatus::Bad {
            return Decision::Challenge { stale: false };
        }
        let ha1 = self
            .cfg
            .users
            .get(&auth.username)
            .and_then(|h| h.iter().find(|(a, _)| *a == auth.algorithm.base()))
            .map(|(_, ha1)| ha1.as_str());
        // An unknown user costs the same hashing as a known one, so the time of the answer
        // does not tell them apart.
        let verified = digest::verify(&auth, "INVITE", ha1.unwrap_or(UNKNOWN_HA1));
        let right =
            verified && ha1.is_some() && digest_uri_user(&auth.uri).is_some_and(|u| u == user);
        if !right {
            tracing::info!(%source, user = %auth.username, "digest authentication failed");
            return self.failed(source, unix);
        }
        if status == NonceStatus::Stale {
            return Decision::Challenge { stale: true };
        }
        if !self.counts.accept(&auth.nonce, auth.nc.unwrap_or(0)) {
            tracing::info!(%source, user = %auth.username, "replayed nonce count");
            return self.failed(source, unix);
        }
        self.failures.remove(&source);
        tracing::info!(%source, user = %auth.username, algorithm = auth.algorithm.as_str(), "caller authenticated");
        Decision::Pass(Some(auth.username))
    }

    /// The credentials for our realm, if the request carries them.
    fn credentials(&self, req: &Request) -> Option<Authorization> {
        req.headers
            .iter()
            .filter(|h| canonical_name(h.name()).eq_ignore_ascii_case("Authorization"))
            .filter_map(|h| parse_authorization(h.value()).ok())
            .find(|a| a.realm == self.cfg.realm)
    }

    fn failed(&mut self, source: IpAddr, unix: u64) -> Decision {
        self.failures_total += 1;
        self.failed_sources.push(source);
        if !self.failures.contains_key(&source) && self.failures.len() >= FAILURE_SOURCES {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, f)| f.since)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.failures.remove(&k);
            }
        }
        let f = self.failures.entry(source).or_insert(Failures {
            count: 0,
            since: unix,
        });
        if unix.saturating_sub(f.since) >= FAILURE_WINDOW_SECS {
            *f = Failures {
                count: 0,
                since: unix,
            };
        }
        f.count += 1;
        if f.count >= FAILURES_BEFORE_FORBIDDEN {
            Decision::Forbidden
        } else {
            Decision::Challenge { stale: false }
        }
    }

    /// The `WWW-Authenticate` values of a 401 at `now`: one fresh challenge per offered
    /// algorithm, in the configured order.
    pub fn challenges(&mut self, now: Instant, stale: bool) -> Vec<String> {
        let unix = self.unix(now);
        let mut out = Vec::with_capacity(self.cfg.algorithms.len());
        for &algorithm in &self.cfg.algorithms {
            self.issued = self.issued.wrapping_add(1);
            let c = Challenge {
                realm: self.cfg.realm.clone(),
                nonce: self.issuer.issue_unique(unix, self.issued),
                opaque: None,
                algorithm,
                qop: Some(Qop::Auth),
                stale,
            };
            out.push(c.to_string());
        }
        out
    }

    /// Failures of `source` within the current window (0 once it authenticated).
    pub fn failures(&self, source: IpAddr) -> u32 {
        self.failures.get(&source).map_or(0, |f| f.count)
    }

    /// Failures of every source so far.
    pub fn failures_total(&self) -> u64 {
        self.failures_total
    }

    /// The source of each failure since the last call, oldest first.
    pub fn take_failed_sources(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.failed_sources)
    }

    /// The protection space.
    pub fn realm(&self) -> &str {
        &self.cfg.realm
    }
}

/// The user part of a digest-uri (`sip:alice@host;params`).
fn digest_uri_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(';').next().unwrap_or(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: Option<&str>, ha1: Option<Ha1Config>) -> UserConfig {
        UserConfig {
            name: name.into(),
            password: password.map(Into::into),
            ha1,
        }
    }

    fn algs(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn users_and_settings_are_checked() {
        let both = algs(&["SHA-256", "MD5"]);
        let md5 = digest::ha1(Algorithm::Md5, "a", "r", "p");
        let sha = digest::ha1(Algorithm::Sha256, "a", "r", "p");
        let ok = AuthConfig::new(
            "r",
            &both,
            300,
            &[
                user(
                    "a",
                    None,
                    Some(Ha1Config::Many(vec![md5.clone(), sha.to_uppercase()])),
                ),
                user("b", Some("pw"), None),
            ],
        )
        .unwrap();
        assert_eq!(ok.algorithms, vec![Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(ok.users["a"][1], (Algorithm::Sha256, sha.clone()));
        assert_eq!(ok.users["b"].len(), 2);
        let err = |r: Result<AuthConfig, AuthConfigError>| r.unwrap_err().0;
        assert!(err(AuthConfig::new(
            "r",
            &both,
            300,
            &[user("a", Some("x"), None), user("a", Some("y"), None)]
        ))
        .contains("twice"));
        assert!(err(AuthConfig::new(
            "r",
            &both,
            300,
            &[user("a", Some("x"), Some(Ha1Config::One(md5.clone())))]
        ))
        .contains("exactly one"));
        assert!(
            err(AuthConfig::new("r", &both, 300, &[user("a", None, None)])).contains("exactly one")
        );
        // 31 and 33 digits: just outside MD5's length.
        for bad in [&md5[..31], &format!("{md5}0")[..]] {
            assert!(err(AuthConfig::new(
                "r",
                &both,
                300,
                &[user("a", None, Some(Ha1Config::One(bad.into())))]
            ))
            .contains("characters"));
        }
        let not_hex = format!("{}g", &md5[..31]);
        assert!(err(AuthConfig::new(
            "r",
            &both,
            300,
            &[user("a", None, Some(Ha1Config::One(not_hex)))]
        ))
        .contains("hex"));
        assert!(err(AuthConfig::new(
            "r",
            &algs(&["SHA-256"]),
            300,
            &[user("a", None, Some(Ha1Config::One(md5.clone())))]
        ))
        .contains("no ha1"));
        assert!(
            err(AuthConfig::new("r", &algs(&["SHA-512-256"]), 300, &[])).contains("not SHA-256")
        );
        assert!(err(AuthConfig::new("r", &algs(&["MD5", "md5"]), 300, &[])).contains("twice"));
        assert!(err(AuthConfig::new("r", &algs(&[]), 300, &[])).contains("must name"));
        assert!(err(AuthConfig::new("r", &both, 0, &[])).contains("nonce_secs"));
        assert!(err(AuthConfig::new("", &both, 300, &[])).contains("realm"));
    }

    #[test]
    fn digest_uri_user_part() {
        assert_eq!(digest_uri_user("sip:secret@127.0.0.1:5060"), Some("secret"));
        assert_eq!(digest_uri_user("sips:a;x=y@h"), Some("a"));
        assert_eq!(digest_uri_user("sip:127.0.0.1"), None);
        assert_eq!(digest_uri_user("tel:123"), None);
    }
}
