//! Digest authentication of callers through the endpoint, in virtual time: the INVITE to a
//! protected user is challenged, the answer computed by the client side of the digest module
//! lets the call through with the user's name, and stale nonces, replays, wrong passwords,
//! unknown users and other servers' nonces are answered as `sip::auth` documents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rsipstack::sip::{Header, Headers};
use switchboard::sip::auth::{AuthConfig, Authenticator, Ha1Config, UserConfig};
use switchboard::sip::dialog::{Peer, Transport};
use switchboard::sip::digest::{
    self, parse_challenges, Algorithm, Authorization, Challenge, ClientAuth, Credentials, Qop,
};
use switchboard::sip::endpoint::{Endpoint, EndpointConfig, Event};
use switchboard::sip::ids::Ids;
use switchboard::sip::transaction::TimerConfig;

const SERVER: &str = "127.0.0.1:5060";
const CLIENT: &str = "127.0.0.1:5070";
const REALM: &str = "sb.test";
const NONCE_SECS: u64 = 300;
/// The UNIX time the authenticator's clock starts at.
const UNIX0: u64 = 1_700_000_000;

fn users() -> Vec<UserConfig> {
    vec![
        UserConfig {
            name: "alice".into(),
            password: Some("wonderland".into()),
            ha1: None,
        },
        UserConfig {
            name: "bob".into(),
            password: None,
            ha1: Some(Ha1Config::Many(vec![
                digest::ha1(Algorithm::Md5, "bob", REALM, "builder"),
                digest::ha1(Algorithm::Sha256, "bob", REALM, "builder"),
            ])),
        },
    ]
}

fn authenticator(secret: &[u8], now: Instant) -> Authenticator {
    let algs = ["SHA-256".to_string(), "MD5".to_string()];
    let cfg = AuthConfig::new(REALM, &algs, NONCE_SECS, &users()).unwrap();
    Authenticator::new(
        cfg,
        secret.to_vec(),
        now,
        UNIX0,
        Box::new(|user| user.starts_with("secret")),
    )
}

/// An endpoint seeded with `seed` whose nonces are signed with `secret`.
fn endpoint(seed: u64, secret: &[u8], now: Instant) -> Endpoint {
    let mut ep = Endpoint::with_ids(
        EndpointConfig {
            timers: TimerConfig::default(),
            local_addr: SERVER.parse().unwrap(),
            user_agent: "switchboard-test".into(),
        },
        Ids::with_seed(seed),
    );
    ep.set_auth(authenticator(secret, now));
    ep
}

struct World {
    now: Instant,
    ep: Endpoint,
    /// Branch and Call-ID numbers of the caller's requests.
    n: u32,
    /// Users the calls that reached the layer above authenticated as.
    incoming: Vec<Option<String>>,
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        let ep = endpoint(7, b"our secret", now);
        World {
            now,
            ep,
            n: 0,
            incoming: Vec::new(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.ep.handle_timeout(self.now);
        self.drain();
    }

    /// Delivers `bytes` from the caller; returns what the endpoint sent back.
    fn deliver(&mut self, bytes: &[u8]) -> Vec<String> {
        let peer = Peer {
            transport: Transport::Udp,
            addr: CLIENT.parse().unwrap(),
        };
        self.ep.handle_message(self.now, peer, bytes);
        self.drain()
    }

    fn drain(&mut self) -> Vec<String> {
        while let Some(ev) = self.ep.poll_event() {
            if let Event::Incoming { auth_user, .. } = ev {
                self.incoming.push(auth_user);
            }
        }
        let mut out = Vec::new();
        while let Some(t) = self.ep.poll_transmit() {
            out.push(String::from_utf8(t.bytes).unwrap());
        }
        out
    }

    /// A new INVITE (its own transaction and Call-ID) to `user`, with `authorization`.
    fn invite(&mut self, user: &str, authorization: Option<&str>) -> Vec<String> {
        self.n += 1;
        let text = invite_text(self.n, user, authorization);
        self.deliver(text.as_bytes())
    }

    fn client_ip(&self) -> IpAddr {
        CLIENT.parse::<std::net::SocketAddr>().unwrap().ip()
    }

    fn failures(&self) -> u32 {
        self.ep.auth().unwrap().failures(self.client_ip())
    }
}

fn invite_text(n: u32, user: &str, authorization: Option<&str>) -> String {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "INVITE sip:{user}@{SERVER} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CLIENT};branch=z9hG4bK-auth-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@{CLIENT}>;tag=from-{n}\r\n\
         To: <sip:{user}@{SERVER}>\r\n\
         Call-ID: auth-call-{n}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{CLIENT}>\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
}

/// The status code of a response.
fn code(resp: &str) -> u16 {
    resp[8..11].parse().unwrap()
}

/// The final response among what was sent (the last one; 100 Trying is provisional).
fn final_code(sent: &[String]) -> u16 {
    sent.iter()
        .rev()
        .map(|s| code(s))
        .find(|&c| c >= 200)
        .unwrap_or(0)
}

/// The values of a header, in order.
fn header_values<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// The challenges of the (only) 401 among `sent`.
fn challenges(sent: &[String]) -> Vec<Challenge> {
    let resp = sent.iter().find(|s| code(s) == 401).expect("a 401");
    header_values(resp, "WWW-Authenticate")
        .into_iter()
        .flat_map(|v| parse_challenges(v).unwrap())
        .collect()
}

/// The 401's challenge headers as the client side reads them.
fn challenge_headers(cs: &[Challenge]) -> Headers {
    let mut h = Headers::default();
    for c in cs {
        h.push(Header::Other("WWW-Authenticate".into(), c.to_string()));
    }
    h
}

/// The client side's Authorization for an INVITE to `user`.
fn answer(client: &mut ClientAuth, cs: &[Challenge], user: &str, cnonce: &str) -> String {
    client.on_challenge(&challenge_headers(cs), false).unwrap();
    let uri = format!("sip:{user}@{SERVER}");
    let mut a = client.authorizations("INVITE", &uri, &[], cnonce);
    assert_eq!(a.len(), 1);
    a.remove(0).1
}

/// Credentials for one challenge with a chosen nonce count.
fn answer_nc(c: &Challenge, user: &str, password: &str, nc: u32, to: &str) -> String {
    let uri = format!("sip:{to}@{SERVER}");
    let ha1 = digest::ha1(c.algorithm, user, &c.realm, password);
    Authorization {
        username: user.into(),
        realm: c.realm.clone(),
        nonce: c.nonce.clone(),
        uri: uri.clone(),
        response: digest::response(
            c.algorithm,
            &ha1,
            &c.nonce,
            "cn",
            nc,
            Some(Qop::Auth),
            "INVITE",
            &uri,
            &[],
        ),
        algorithm: c.algorithm,
        cnonce: Some("cn".into()),
        opaque: None,
        qop: Some(Qop::Auth),
        nc: Some(nc),
    }
    .to_string()
}

#[test]
fn a_protected_user_is_challenged_with_sha256_then_md5_and_the_sha256_answer_gets_through() {
    let mut w = World::new();
    let sent = w.invite("secret-room", None);
    assert_eq!(final_code(&sent), 401, "{sent:?}");
    assert!(w.incoming.is_empty(), "no call before authentication");
    let cs = challenges(&sent);
    assert_eq!(
        cs.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
        vec![Algorithm::Sha256, Algorithm::Md5],
        "one challenge per algorithm, SHA-256 first (RFC 8760 §2.4)"
    );
    assert!(cs
        .iter()
        .all(|c| c.realm == REALM && c.qop == Some(Qop::Auth) && !c.stale));
    assert_ne!(cs[0].nonce, cs[1].nonce);
    assert_eq!(w.failures(), 0, "asking for credentials is no failure");

    // The 401's retransmission and its ACK are the transaction's business.
    let again = w.deliver(invite_text(w.n, "secret-room", None).as_bytes());
    assert_eq!(
        again,
        vec![sent.last().unwrap().clone()],
        "the same 401 again"
    );
    let to_tag = header_values(sent.last().unwrap(), "To")[0].to_string();
    let ack = format!(
        "ACK sip:secret-room@{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {CLIENT};branch=z9hG4bK-auth-1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{CLIENT}>;tag=from-1\r\nTo: {to_tag}\r\n\
         Call-ID: auth-call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(w.deliver(ack.as_bytes()).is_empty());

    let mut client = ClientAuth::new(Credentials::password("alice", "wonderland"));
    let creds = answer(&mut client, &cs, "secret-room", "c1");
    assert!(creds.contains("algorithm=SHA-256"), "{creds}");
    let sent = w.invite("secret-room", Some(&creds));
    assert_eq!(sent.iter().map(|s| code(s)).collect::<Vec<_>>(), vec![100]);
    assert_eq!(w.incoming, vec![Some("alice".to_string())]);

    // CANCEL needs no credentials.
    let cancel = format!(
        "CANCEL sip:secret-room@{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {CLIENT};branch=z9hG4bK-auth-2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{CLIENT}>;tag=from-2\r\nTo: <sip:secret-room@{SERVER}>\r\n\
         Call-ID: auth-call-2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let codes: Vec<u16> = w
        .deliver(cancel.as_bytes())
        .iter()
        .map(|s| code(s))
        .collect();
    assert_eq!(codes, vec![200, 487]);
    w.advance(Duration::from_secs(40));
}

#[test]
fn an_md5_answer_with_an_ha1_is_accepted_too() {
    let mut w = World::new();
    let cs = challenges(&w.invite("secret", None));
    let md5: Vec<Challenge> = cs
        .into_iter()
        .filter(|c| c.algorithm == Algorithm::Md5)
        .collect();
    let mut client = ClientAuth::new(Credentials::password("bob", "builder"));
    let creds = answer(&mut client, &md5, "secret", "c9");
    assert!(creds.contains("algorithm=MD5"), "{creds}");
    assert_eq!(final_code(&w.invite("secret", Some(&creds))), 0);
    assert_eq!(w.incoming, vec![Some("bob".to_string())]);
}

#[test]
fn a_nonce_is_good_for_its_lifetime_then_stale_and_a_fresh_one_succeeds() {
    let mut w = World::new();
    let first = challenges(&w.invite("secret", None));
    let second = challenges(&w.invite("secret", None));
    // Just inside the lifetime.
    w.advance(Duration::from_secs(NONCE_SECS));
    let ok = answer_nc(&first[0], "alice", "wonderland", 1, "secret");
    assert_eq!(final_code(&w.invite("secret", Some(&ok))), 0);
    assert_eq!(w.incoming.len(), 1);
    // Just outside: the right answer to an old nonce is asked again with stale=true.
    w.advance(Duration::from_secs(1));
    let late = answer_nc(&second[0], "alice", "wonderland", 1, "secret");
    let sent = w.invite("secret", Some(&late));
    assert_eq!(final_code(&sent), 401);
    let fresh = challenges(&sent);
    assert!(fresh.iter().all(|c| c.stale), "{fresh:?}");
    assert_eq!(w.failures(), 0, "a stale nonce is no failure");
    // A wrong password on a stale nonce is not told it is only stale.
    let wrong_late = answer_nc(&second[1], "alice", "queen", 1, "secret");
    let sent = w.invite("secret", Some(&wrong_late));
    assert!(challenges(&sent).iter().all(|c| !c.stale));
    assert_eq!(w.failures(), 1);
    // The client answers the stale challenge without asking anyone.
    let mut client = ClientAuth::new(Credentials::password("alice", "wonderland"));
    let creds = answer(&mut client, &fresh, "secret", "c2");
    assert_eq!(final_code(&w.invite("secret", Some(&creds))), 0);
    assert_eq!(w.incoming.len(), 2);
    assert_eq!(w.failures(), 0, "success forgets the failures");
}

#[test]
fn a_nonce_count_not_above_the_last_is_a_replay() {
    let mut w = World::new();
    let cs = challenges(&w.invite("secret", None));
    let nc1 = answer_nc(&cs[0], "alice", "wonderland", 1, "secret");
    assert_eq!(final_code(&w.invite("secret", Some(&nc1))), 0);
    // The same credentials on a new INVITE (not a retransmission): a replay.
    assert_eq!(final_code(&w.invite("secret", Some(&nc1))), 401);
    assert_eq!(w.failures(), 1);
    let nc3 = answer_nc(&cs[0], "alice", "wonderland", 3, "secret");
    assert_eq!(final_code(&w.invite("secret", Some(&nc3))), 0);
    let nc2 = answer_nc(&cs[0], "alice", "wonderland", 2, "secret");
    assert_eq!(final_code(&w.invite("secret", Some(&nc2))), 401);
    assert_eq!(w.incoming.len(), 2);
    assert_eq!(w.failures(), 1, "the success in between forgot the first");
    assert_eq!(w.ep.auth().unwrap().failures_total(), 2);
}

#[test]
fn wrong_passwords_get_401_twice_then_403_until_the_window_passes() {
    let mut w = World::new();
    let mut codes = Vec::new();
    for _ in 0..4 {
        let cs = challenges(&w.invite("secret", None));
        let wrong = answer_nc(&cs[0], "alice", "not-it", 1, "secret");
        codes.push(final_code(&w.invite("secret", Some(&wrong))));
    }
    assert_eq!(codes, vec![401, 401, 403, 403]);
    assert_eq!(w.failures(), 4);
    let auth = w.ep.auth_mut().unwrap();
    assert_eq!(auth.failures_total(), 4);
    assert_eq!(auth.take_failed_sources().len(), 4);
    assert!(auth.take_failed_sources().is_empty());
    assert!(w.incoming.is_empty());
    // A right answer in the meantime still gets through and clears the record.
    let cs = challenges(&w.invite("secret", None));
    let right = answer_nc(&cs[0], "alice", "wonderland", 1, "secret");
    assert_eq!(final_code(&w.invite("secret", Some(&right))), 0);
    assert_eq!(w.failures(), 0);

    // The window runs from the first failure: 599 s later still 403, at 600 s 401 again.
    let fail = |w: &mut World| {
        let cs = challenges(&w.invite("secret", None));
        let wrong = answer_nc(&cs[0], "alice", "not-it", 1, "secret");
        final_code(&w.invite("secret", Some(&wrong)))
    };
    for _ in 0..3 {
        fail(&mut w);
    }
    w.advance(Duration::from_secs(599));
    assert_eq!(fail(&mut w), 403);
    w.advance(Duration::from_secs(1));
    assert_eq!(fail(&mut w), 401);
    assert_eq!(w.failures(), 1);
}

#[test]
fn an_unknown_user_is_answered_like_a_wrong_password() {
    let mut w = World::new();
    let cs = challenges(&w.invite("secret", None));
    let nobody = answer_nc(&cs[0], "mallory", "anything", 1, "secret");
    let sent = w.invite("secret", Some(&nobody));
    assert_eq!(final_code(&sent), 401);
    assert_eq!(challenges(&sent).len(), 2);
    assert_eq!(w.failures(), 1);
    // Credentials for another protected user do not open this one.
    let cs = challenges(&sent);
    let elsewhere = answer_nc(&cs[0], "alice", "wonderland", 1, "secret-other");
    assert_eq!(final_code(&w.invite("secret", Some(&elsewhere))), 401);
    assert_eq!(w.failures(), 2);
    assert!(w.incoming.is_empty());
}

#[test]
fn a_user_without_auth_needs_nothing() {
    let mut w = World::new();
    let sent = w.invite("echo", None);
    assert_eq!(sent.iter().map(|s| code(s)).collect::<Vec<_>>(), vec![100]);
    assert_eq!(w.incoming, vec![None]);
}

#[test]
fn a_nonce_signed_by_another_server_is_refused_without_counting_a_failure() {
    let mut w = World::new();
    let mut other = endpoint(8, b"another secret", w.now);
    let peer = Peer {
        transport: Transport::Udp,
        addr: CLIENT.parse().unwrap(),
    };
    other.handle_message(w.now, peer, invite_text(99, "secret", None).as_bytes());
    let mut theirs = Vec::new();
    while let Some(t) = other.poll_transmit() {
        theirs.push(String::from_utf8(t.bytes).unwrap());
    }
    let cs = challenges(&theirs);
    let creds = answer_nc(&cs[0], "alice", "wonderland", 1, "secret");
    let sent = w.invite("secret", Some(&creds));
    assert_eq!(final_code(&sent), 401);
    assert!(challenges(&sent).iter().all(|c| !c.stale));
    assert_eq!(w.failures(), 0);
    assert!(w.incoming.is_empty());
    // The same answer is good where its nonce came from.
    other.handle_message(
        w.now,
        peer,
        invite_text(100, "secret", Some(&creds)).as_bytes(),
    );
    let mut accepted = false;
    while let Some(ev) = other.poll_event() {
        accepted |= matches!(ev, Event::Incoming { auth_user: Some(ref u), .. } if u == "alice");
    }
    assert!(accepted);
}
