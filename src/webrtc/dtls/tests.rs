#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn fingerprint_prints_and_parses_in_sdp_form() {
    let cert = Certificate::generate().unwrap();
    let fp = cert.fingerprint();
    let text = fp.to_string();
    assert!(text.starts_with("sha-256 "));
    // 32 bytes: 32 pairs of upper-case hex and 31 colons.
    let hex = &text["sha-256 ".len()..];
    assert_eq!(hex.len(), 32 * 2 + 31);
    assert!(hex
        .bytes()
        .all(|b| b == b':' || b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
    assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
    // Hash name in any case, hex in lower case.
    let lower = format!("SHA-256 {}", hex.to_ascii_lowercase());
    assert_eq!(lower.parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(fp, Fingerprint::of_der(cert.der()));
}

#[test]
fn unusable_fingerprints_are_refused() {
    let good = Certificate::generate().unwrap().fingerprint().to_string();
    let hex = &good["sha-256 ".len()..];
    for bad in [
        format!("sha-1 {hex}"),
        format!("sha-256 {}", &hex[..hex.len() - 3]),
        format!("sha-256 {hex}:00"),
        format!("sha-256 {}", hex.replacen(':', "", 1)),
        format!(
            "sha-256 {}",
            hex.replacen(|c: char| c.is_ascii_hexdigit(), "G", 1)
        ),
        "sha-256".to_string(),
        String::new(),
    ] {
        assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
    }
}

#[test]
fn the_process_certificate_is_made_once() {
    let a = Certificate::process().unwrap();
    let b = Certificate::process().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_ne!(
        Certificate::generate().unwrap().fingerprint(),
        a.fingerprint()
    );
}

#[test]
fn setup_answers_follow_the_offer() {
    assert_eq!(
        DtlsRole::answering("actpass"),
        Some((DtlsRole::Server, "passive"))
    );
    assert_eq!(
        DtlsRole::answering("active"),
        Some((DtlsRole::Server, "passive"))
    );
    assert_eq!(
        DtlsRole::answering("passive"),
        Some((DtlsRole::Client, "active"))
    );
    assert_eq!(DtlsRole::answering("holdconn"), None);
    assert_eq!(DtlsRole::answering(""), None);
}

#[test]
fn exported_material_splits_client_key_server_key_client_salt_server_salt() {
    // RFC 5764 §4.2 layout for AES_CM_128_HMAC_SHA1_80: 16 + 16 + 14 + 14 bytes.
    let mut material = Vec::new();
    material.extend([0xC1; 16]);
    material.extend([0x51; 16]);
    material.extend([0xC5; 14]);
    material.extend([0x55; 14]);
    let suite = Suite::AesCm128HmacSha1_80;
    let client_key: Vec<u8> = [[0xC1; 16].as_slice(), &[0xC5; 14]].concat();
    let server_key: Vec<u8> = [[0x51; 16].as_slice(), &[0x55; 14]].concat();
    let client = MasterKey::from_bytes(suite, &client_key).unwrap();
    let server = MasterKey::from_bytes(suite, &server_key).unwrap();

    let as_client = SrtpKeys::from_exported(suite, &material, DtlsRole::Client).unwrap();
    assert!(as_client.local == client && as_client.remote == server);
    let as_server = SrtpKeys::from_exported(suite, &material, DtlsRole::Server).unwrap();
    assert!(as_server.local == server && as_server.remote == client);

    assert!(SrtpKeys::from_exported(suite, &material[..59], DtlsRole::Client).is_err());
    // GCM: 16 + 16 + 12 + 12; 256-bit GCM: 32 + 32 + 12 + 12.
    assert!(SrtpKeys::from_exported(Suite::AeadAes128Gcm, &[1; 56], DtlsRole::Client).is_ok());
    assert!(SrtpKeys::from_exported(Suite::AeadAes256Gcm, &[1; 88], DtlsRole::Server).is_ok());
    // Debug shows the suite, never the keys.
    let debug = format!("{as_client:?}");
    assert!(debug.contains("AesCm128HmacSha1_80") && !debug.contains("193"));
}

#[test]
fn profiles_map_to_our_suites() {
    assert_eq!(
        suite_of(SrtpProfile::AES128_CM_SHA1_80),
        Some(Suite::AesCm128HmacSha1_80)
    );
    assert_eq!(
        suite_of(SrtpProfile::AEAD_AES_128_GCM),
        Some(Suite::AeadAes128Gcm)
    );
    assert_eq!(
        suite_of(SrtpProfile::AEAD_AES_256_GCM),
        Some(Suite::AeadAes256Gcm)
    );
}
