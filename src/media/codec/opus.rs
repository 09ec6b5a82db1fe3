//! Opus (RFC 7587) through libopus.
