//! What a call set-up over TLS costs against the real server on 127.0.0.1: a new TCP
//! connection, the TLS handshake and one INVITE answered 200 by `echo` (timed), then ACK and
//! BYE to end the call (not timed). The same over plain TCP for comparison.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;
use switchboard::sip::framing::StreamFramer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

struct Bench {
    sip: SocketAddr,
    tls: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A folder removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts the server with a TLS listener on a certificate made here; a client trusting it.
async fn start() -> Bench {
    let dir = std::env::temp_dir().join(format!("sb-tls-bench-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["sip.bench.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let mut cfg = switchboard::Config::embedded().unwrap();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.sip.tls_listen = "127.0.0.1:0".into();
    cfg.sip.tls_cert = dir.join("cert.pem");
    cfg.sip.tls_key = dir.join("key.pem");
    cfg.rtp.port_min = 48800;
    cfg.rtp.port_max = 48999;
    cfg.cdr.dir = std::path::PathBuf::new();
    cfg.sip.invite_rate = 0.0;
    cfg.sip.max_cps = 0;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = switchboard::run_with_ready(cfg, std::future::pending(), move |r| {
            let _ = tx.send(r);
        })
        .await;
    });
    let ready = rx.await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Bench {
        sip: ready.sip,
        tls: ready.tls.unwrap(),
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        _dir: tempdir::Dir(dir),
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";

fn request(
    method: &str,
    n: u64,
    cseq: u32,
    tp: &str,
    local: SocketAddr,
    to_tag: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    format!(
        "{method} sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{tp} {local};branch=z9hG4bK{method}{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b{n}\r\nTo: <sip:echo@127.0.0.1>{to_tag}\r\n\
         Call-ID: {n}@tls.bench\r\nCSeq: {cseq} {method}\r\nContact: <sip:bench@{local}>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads messages until one starts with `prefix`: that one.
async fn until<S: AsyncRead + Unpin>(s: &mut S, framer: &mut StreamFramer, prefix: &str) -> String {
    let mut buf = [0u8; 8192];
    for _ in 0..1000 {
        while let Some(m) = framer.next_message().unwrap() {
            let text = String::from_utf8(m).unwrap();
            if text.starts_with(prefix) {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed");
        framer.push(&buf[..n]);
    }
    panic!("no {prefix}");
}

/// One call: INVITE until its 200 (timed from before the connection), then ACK, BYE, 200.
async fn call<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    n: u64,
    tp: &str,
    local: SocketAddr,
    t0: Instant,
) -> Duration {
    let mut framer = StreamFramer::new(65535);
    s.write_all(request("INVITE", n, 1, tp, local, "", SDP).as_bytes())
        .await
        .unwrap();
    let ok = until(&mut s, &mut framer, "SIP/2.0 200").await;
    let took = t0.elapsed();
    let tag = ok
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .map(|t| format!(";tag={}", t.trim()))
        .unwrap();
    s.write_all(request("ACK", n, 1, tp, local, &tag, "").as_bytes())
        .await
        .unwrap();
    s.write_all(request("BYE", n, 2, tp, local, &tag, "").as_bytes())
        .await
        .unwrap();
    until(&mut s, &mut framer, "SIP/2.0 200").await;
    took
}

fn tls_setup(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bench = rt.block_on(start());
    let mut g = c.benchmark_group("call set-up");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("TLS: connect + handshake + INVITE/200", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let n = fastrand::u64(..);
                    let t0 = Instant::now();
                    let tcp = TcpStream::connect(bench.tls).await.unwrap();
                    let local = tcp.local_addr().unwrap();
                    let name = ServerName::try_from("sip.bench.test").unwrap();
                    let s = bench.connector.connect(name, tcp).await.unwrap();
                    total += call(s, n, "TLS", local, t0).await;
                }
                total
            })
        })
    });
    g.bench_function("TCP: connect + INVITE/200", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let n = fastrand::u64(..);
                    let t0 = Instant::now();
                    let tcp = TcpStream::connect(bench.sip).await.unwrap();
                    let local = tcp.local_addr().unwrap();
                    total += call(tcp, n, "TCP", local, t0).await;
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, tls_setup);
criterion_main!(benches);
