//! The dialplan: which script a call runs, chosen by the dialled user (the Request-URI user
//! part), with variables for the script.
//!
//! Rules are tried in order; the first that matches wins:
//! - `exact = "ivr"`: the user is exactly `ivr`;
//! - `prefix = "vm-"`: the user starts with `vm-`; the rest is the variable `suffix`;
//! - `regex = "conf-(?<room>[0-9]+)"`: the whole user matches (the pattern is anchored at
//!   both ends); named groups become variables (`room`).
//!
//! A rule's own `vars` are set first, so a capture of the same name overrides them. A user
//! no rule matches runs `default.rhai`. A rule with `auth = true` lets only callers who
//! authenticate reach its script (see [`crate::sip::auth`]).

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

/// The script for users no rule matches.
pub const FALLBACK_SCRIPT: &str = "default.rhai";

/// One rule as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Matches this user exactly.
    #[serde(default)]
    pub exact: Option<String>,
    /// Matches users starting with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Matches users the whole of which match this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// The script to run, by file name in the scripts folder (`.rhai` may be left out).
    pub script: String,
    /// Variables for the script (`session.vars`).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Callers must authenticate (digest, against `[[users]]`) before the script runs.
    #[serde(default)]
    pub auth: bool,
}

/// A rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dialplan rule {index} ({script}): {message}")]
pub struct DialplanError {
    /// 1-based position of the rule.
    pub index: usize,
    /// The rule's script.
    pub script: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    script: String,
    vars: BTreeMap<String, String>,
    auth: bool,
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The script's file name (`ivr.rhai`).
    pub script: String,
    /// Variables for the script.
    pub vars: BTreeMap<String, String>,
    /// 1-based number of the rule that matched (None: the fallback).
    pub rule: Option<usize>,
    /// The caller must authenticate first.
    pub auth: bool,
}

/// The compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    rules: Vec<Rule>,
}

/// `ivr` and `ivr.rhai` both name `ivr.rhai`; paths are refused.
pub fn script_file(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "script {name:?} must be a file name in the scripts folder"
        ));
    }
    Ok(if name.ends_with(".rhai") {
        name.to_string()
    } else {
        format!("{name}.rhai")
    })
}

impl Dialplan {
    /// Compiles rules; each must have exactly one of `exact`, `prefix`, `regex`.
    pub fn new(rules: &[RuleConfig]) -> Result<Self, DialplanError> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let err = |message: String| DialplanError {
                index: i + 1,
                script: r.script.clone(),
                message,
            };
            let matcher = match (&r.exact, &r.prefix, &r.regex) {
                (Some(e), None, None) => Matcher::Exact(e.clone()),
                (None, Some(p), None) => Matcher::Prefix(p.clone()),
                (None, None, Some(re)) => Matcher::Regex(
                    Regex::new(&format!("^(?:{re})$"))
                        .map_err(|e| err(format!("bad regex: {e}")))?,
                ),
                _ => {
                    return Err(err(
                        "needs exactly one of `exact`, `prefix` and `regex`".into()
                    ))
                }
            };
            out.push(Rule {
                matcher,
                script: script_file(&r.script).map_err(err)?,
                vars: r.vars.clone(),
                auth: r.auth,
            });
        }
        Ok(Dialplan { rules: out })
    }

    /// The route for a dialled user.
    pub fn route(&self, user: &str) -> Route {
        for (i, rule) in self.rules.iter().enumerate() {
            let mut vars = rule.vars.clone();
            let matched = match &rule.matcher {
                Matcher::Exact(e) => user == e,
                Matcher::Prefix(p) => match user.strip_prefix(p.as_str()) {
                    Some(rest) => {
                        vars.insert("suffix".into(), rest.to_string());
                        true
                    }
                    None => false,
                },
                Matcher::Regex(re) => match re.captures(user) {
                    Some(caps) => {
                        for name in re.capture_names().flatten() {
                            if let Some(m) = caps.name(name) {
                                vars.insert(name.to_string(), m.as_str().to_string());
                            }
                        }
                        true
                    }
                    None => false,
                },
            };
            if matched {
                return Route {
                    script: rule.script.clone(),
                    vars,
                    rule: Some(i + 1),
                    auth: rule.auth,
                };
            }
        }
        Route {
            script: FALLBACK_SCRIPT.into(),
            vars: BTreeMap::new(),
            rule: None,
            auth: false,
        }
    }

    /// Whether some rule asks callers to authenticate.
    pub fn any_auth(&self) -> bool {
        self.rules.iter().any(|r| r.auth)
    }

    /// The script of every rule, in order (for checking they exist at start).
    pub fn scripts(&self) -> impl Iterator<Item = (usize, &str)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r.script.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str, pattern: &str, script: &str) -> RuleConfig {
        let mut r = RuleConfig {
            exact: None,
            prefix: None,
            regex: None,
            script: script.into(),
            vars: BTreeMap::new(),
            auth: false,
        };
        match kind {
            "exact" => r.exact = Some(pattern.into()),
            "prefix" => r.prefix = Some(pattern.into()),
            _ => r.regex = Some(pattern.into()),
        }
        r
    }

    #[test]
    fn first_match_wins_and_unmatched_falls_back() {
        let mut conf = rule("regex", "conf-(?<room>.+)", "conference");
        conf.vars.insert("room".into(), "ignored".into());
        conf.vars.insert("pin".into(), "1234".into());
        let plan = Dialplan::new(&[
            rule("exact", "echo", "echo"),
            conf,
            rule("prefix", "conf-", "never"),
            rule("prefix", "vm-", "voicemail.rhai"),
        ])
        .unwrap();
        assert_eq!(plan.route("echo").script, "echo.rhai");
        assert_eq!(plan.route("echo").rule, Some(1));
        let r = plan.route("conf-42");
        assert_eq!(r.script, "conference.rhai");
        assert_eq!(r.vars["room"], "42", "a capture overrides a rule variable");
        assert_eq!(r.vars["pin"], "1234");
        let r = plan.route("vm-alice");
        assert_eq!(
            (r.script.as_str(), r.vars["suffix"].as_str()),
            ("voicemail.rhai", "alice")
        );
        let r = plan.route("echo2");
        assert_eq!((r.script.as_str(), r.rule), (FALLBACK_SCRIPT, None));
        assert!(r.vars.is_empty());
    }

    #[test]
    fn regex_must_match_the_whole_user() {
        let plan = Dialplan::new(&[rule("regex", "[0-9]{3}", "three")]).unwrap();
        assert_eq!(plan.route("123").script, "three.rhai");
        assert_eq!(plan.route("1234").script, FALLBACK_SCRIPT);
        assert_eq!(plan.route("x123").script, FALLBACK_SCRIPT);
    }

    #[test]
    fn bad_rules_are_refused_with_their_number() {
        let e = Dialplan::new(&[rule("exact", "a", "a"), rule("regex", "(", "b")]).unwrap_err();
        assert_eq!(e.index, 2);
        assert!(e.message.contains("bad regex"), "{e}");
        let mut both = rule("exact", "a", "a");
        both.prefix = Some("b".into());
        assert!(Dialplan::new(&[both])
            .unwrap_err()
            .message
            .contains("exactly one"));
        let mut none = rule("exact", "a", "a");
        none.exact = None;
        assert!(Dialplan::new(&[none]).is_err());
        for bad in ["../etc/x", "", ".hidden", "a/b"] {
            assert!(
                Dialplan::new(&[rule("exact", "a", bad)]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shipped_dialplan_routes_the_documented_numbers() {
        let cfg = crate::Config::embedded().unwrap();
        let plan = Dialplan::new(&cfg.dialplan).unwrap();
        assert_eq!(plan.route("echo").script, "echo.rhai");
        assert_eq!(plan.route("ivr").script, "ivr.rhai");
        assert_eq!(plan.route("record").script, "voicemail.rhai");
        let r = plan.route("conf-sales");
        assert_eq!(
            (r.script.as_str(), r.vars["room"].as_str()),
            ("conference.rhai", "sales")
        );
        assert_eq!(plan.route("5551234").script, FALLBACK_SCRIPT);
        // Every rule's script ships in scripts/.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        for (i, s) in plan.scripts() {
            assert!(dir.join(s).is_file(), "rule {i}: {s} missing");
        }
        assert!(dir.join(FALLBACK_SCRIPT).is_file());
    }
}
