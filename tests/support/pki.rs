//! Certificates made at test time: a CA and a leaf it signed for 127.0.0.1, written as PEM
//! files (for the server's `tls_cert`/`tls_key` and a client's CA file), and a rustls client
//! that trusts that CA alone.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SerialNumber};
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// A test CA and the certificate files of a leaf it signed for 127.0.0.1, in a folder
/// removed afterwards.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertifiedIssuer<'static, KeyPair>,
    /// The DER of the leaf last written.
    pub leaf: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let mut pki = Pki {
            dir,
            ca,
            leaf: CertificateDer::from(Vec::new()),
        };
        pki.write_leaf(1);
        pki
    }

    /// Writes a new leaf with serial `serial` (and the CA after it: the chain) and its key.
    pub fn write_leaf(&mut self, serial: u64) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let leaf = params.signed_by(&key, &self.ca).unwrap();
        let chain = format!("{}{}", leaf.pem(), self.ca.pem());
        // Whole files at once: a reload never reads half of one.
        let tmp = self.dir.join("tmp.pem");
        std::fs::write(&tmp, chain).unwrap();
        std::fs::rename(&tmp, self.cert()).unwrap();
        std::fs::write(&tmp, key.serialize_pem()).unwrap();
        std::fs::rename(&tmp, self.key()).unwrap();
        self.leaf = leaf.der().clone();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client that trusts this CA alone.
    pub fn connector(&self) -> TlsConnector {
        connector_trusting(self.ca.der())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn connector_trusting(ca: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}
