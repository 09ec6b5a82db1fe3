//! What a blind transfer goes to, as the call layer takes it from a script: a target already
//! checked the way a REFER's Refer-To will be, so a bad URI is refused when asked for, not
//! after the call has tried.

use std::fmt;

use crate::sip::refer::{validate_target, TargetError};

/// A `sip:`, `sips:` or `tel:` URI fit for `Refer-To: <target>` (RFC 3515).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferTarget(String);

impl TransferTarget {
    /// Checks `uri` and keeps it without surrounding blanks or angle brackets.
    pub fn parse(uri: &str) -> Result<Self, TargetError> {
        validate_target(uri).map(|t| TransferTarget(t.to_string()))
    }

    /// The URI, as the REFER will carry it.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransferTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_kept_bare_and_a_bad_one_refused() {
        let t = TransferTarget::parse(" <sip:200@127.0.0.1> ");
        assert_eq!(
            t.map(|t| t.to_string()),
            Ok("sip:200@127.0.0.1".to_string())
        );
        assert_eq!(TransferTarget::parse("http://x"), Err(TargetError::Scheme));
    }
}
