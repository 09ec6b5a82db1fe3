//! Script folders and dialplan rules for tests that run their own call flows.

use switchboard::script::dialplan::RuleConfig;

/// A folder of scripts, removed afterwards.
pub struct Scripts(pub std::path::PathBuf);

impl Scripts {
    /// The shipped scripts and `extra` (file name, text) beside them.
    pub fn with_shipped(extra: &[(&str, &str)]) -> Scripts {
        let dir = std::env::temp_dir().join(format!("sb-scripts-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        for e in std::fs::read_dir(shipped).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rhai") {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        for (name, text) in extra {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Scripts(dir)
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A rule sending the user `exact` to `script` with `vars`.
pub fn rule(exact: &str, script: &str, vars: &[(&str, String)]) -> RuleConfig {
    RuleConfig {
        exact: Some(exact.into()),
        prefix: None,
        regex: None,
        script: script.into(),
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        auth: false,
    }
}
