//! Webhooks: each configured URL receives matching events from the [`EventBus`] as JSON
//! POSTs.
//!
//! Per webhook, one task moves events from the bus into a bounded queue (when full, the
//! oldest is dropped and counted) and another POSTs them in order, each with a timeout and
//! a bounded number of attempts with doubling backoff. Nothing here can hold up a call:
//! the bus never blocks its publishers, and a slow or dead receiver only fills its own queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use axum::http::{Method, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::api::events::event_type;
use crate::config::WebhookConfig;
use crate::events::{EventBus, Stamped};
use crate::metrics::Metrics;

/// Why a webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse or is not `http://`.
    #[error("webhook url {url:?}: {reason}")]
    BadUrl {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks a webhook URL: absolute, `http://`, with a host.
pub fn parse_url(url: &str) -> Result<Uri, WebhookError> {
    let bad = |reason: &str| WebhookError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// The running webhook tasks; dropping this stops them (queued events are lost).
#[derive(Debug, Default)]
pub struct Webhooks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Webhooks {
    /// Starts delivery for every configured webhook; must be called inside a tokio runtime.
    pub fn spawn(
        configs: &[WebhookConfig],
        bus: &EventBus,
        metrics: Arc<Metrics>,
    ) -> Result<Webhooks, WebhookError> {
        let mut tasks = Vec::new();
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        for c in configs {
            let target = Arc::new(Target {
                uri: parse_url(&c.url)?,
                events: c.events.clone(),
                timeout: Duration::from_millis(c.timeout_ms.max(1)),
                attempts: c.max_attempts.max(1),
                backoff: Duration::from_millis(c.backoff_ms),
            });
            let queue = Arc::new(Queue::new(c.queue.max(1)));
            tasks.push(tokio::spawn(subscribe(
                bus.subscribe(),
                target.clone(),
                queue.clone(),
                metrics.clone(),
            )));
            tasks.push(tokio::spawn(deliver(
                client.clone(),
                target,
                queue,
                metrics.clone(),
            )));
        }
        Ok(Webhooks { tasks })
    }

    /// Webhooks running.
    pub fn len(&self) -> usize {
        self.tasks.len() / 2
    }

    /// No webhook configured.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

struct Target {
    uri: Uri,
    events: Vec<String>,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
}

impl Target {
    fn wants(&self, e: &Stamped) -> bool {
        self.events.is_empty() || self.events.iter().any(|t| t == event_type(&e.event))
    }
}

/// Bounded FIFO that drops its oldest entry when full.
struct Queue {
    items: Mutex<VecDeque<Arc<Stamped>>>,
    ready: Notify,
    cap: usize,
}

impl Queue {
    fn new(cap: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::with_capacity(cap.min(1024))),
            ready: Notify::new(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Stamped>>> {
        match self.items.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Adds an event; answers how many were dropped to make room (0 or 1).
    fn push(&self, e: Arc<Stamped>) -> u64 {
        let dropped = {
            let mut q = self.lock();
            let dropped = if q.len() >= self.cap {
                q.pop_front();
                1
            } else {
                0
            };
            q.push_back(e);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    async fn pop(&self) -> Arc<Stamped> {
        loop {
            if let Some(e) = self.lock().pop_front() {
                return e;
            }
            self.ready.notified().await;
        }
    }
}

async fn subscribe(
    mut rx: tokio::sync::broadcast::Receiver<Arc<Stamped>>,
    target: Arc<Target>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) {
    loop {
        match rx.recv().await {
            Ok(e) if target.wants(&e) => {
                let dropped = queue.push(e);
                if dropped > 0 {
                    metrics.webhook_dropped(dropped);
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(url = %target.uri, lost = n, "webhook fell behind the event bus");
                metrics.webhook_dropped(n);
            }
            Err(RecvError::Closed) => break,
        }
    }
}

async fn deliver(
    client: Client<HttpConnector, Full<Bytes>>,
    target: Arc<Target>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) {
    loop {
        let event = queue.pop().await;
        let body = match serde_json::to_vec(&*event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "event not serialisable; webhook skipped");
                continue;
            }
        };
        let kind = event_type(&event.event);
        let mut backoff = target.backoff;
        for attempt in 1..=target.attempts {
            let outcome = post(&client, &target, kind, body.clone()).await;
            match outcome {
                Ok(()) => {
                    metrics.webhook_delivered();
                    break;
                }
                Err(why) if attempt == target.attempts => {
                    tracing::warn!(url = %target.uri, seq = event.seq, attempts = attempt, error = %why, "webhook event given up");
                    metrics.webhook_failed();
                }
                Err(why) => {
                    tracing::debug!(url = %target.uri, seq = event.seq, attempt, error = %why, "webhook POST failed; retrying");
                    metrics.webhook_retry();
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    target: &Target,
    kind: &str,
    body: Bytes,
) -> Result<(), String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(target.uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, "switchboard")
        .header("x-switchboard-event", kind)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(target.timeout, client.request(request)).await {
        Err(_) => Err(format!("no answer within {:?}", target.timeout)),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use tokio::sync::mpsc;

    use super::*;
    use crate::events::Event;

    fn config(url: String, events: &[&str]) -> WebhookConfig {
        WebhookConfig {
            url,
            events: events.iter().map(|s| s.to_string()).collect(),
            timeout_ms: 2000,
            max_attempts: 4,
            backoff_ms: 10,
            queue: 64,
        }
    }

    /// A receiver on 127.0.0.1 that fails the first `failures` requests with 503 and
    /// forwards every accepted body.
    async fn receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let app = Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let tx = tx.clone();
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, Ordering::SeqCst) < failures {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let _ = tx.send(v);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<serde_json::Value>) -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("delivered in time")
            .expect("receiver alive")
    }

    fn ended(id: &str) -> Event {
        Event::CallEnded {
            call_id: id.into(),
            reason: "caller_bye".into(),
            code: None,
        }
    }

    #[test]
    fn urls_must_be_plain_http() {
        assert!(parse_url("http://127.0.0.1:9000/hook").is_ok());
        for bad in ["https://x/hook", "ftp://x", "/hook", "http://", "not a url"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn matching_events_are_posted_in_order() {
        let (url, mut rx) = receiver(0).await;
        let bus = EventBus::default();
        let metrics = Arc::new(Metrics::default());
        let hooks =
            Webhooks::spawn(&[config(url, &["call_ended"])], &bus, metrics.clone()).unwrap();
        assert_eq!(hooks.len(), 1);
        bus.publish(Event::CallAnswered {
            call_id: "x".into(),
        });
        bus.publish(ended("a"));
        bus.publish(ended("b"));
        let first = next(&mut rx).await;
        let second = next(&mut rx).await;
        assert_eq!(first["type"], "call_ended");
        assert_eq!(first["call_id"], "a");
        assert_eq!(first["seq"], 2);
        assert_eq!(second["call_id"], "b");
        assert!(rx.try_recv().is_err(), "call_answered was filtered out");
    }

    #[tokio::test]
    async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt() {
        let (url, mut rx) = receiver(2).await;
        let bus = EventBus::default();
        let metrics = Arc::new(Metrics::default());
        let _hooks = Webhooks::spawn(&[config(url, &[])], &bus, metrics.clone()).unwrap();
        bus.publish(ended("a"));
        bus.publish(ended("b"));
        assert_eq!(next(&mut rx).await["call_id"], "a");
        // Delivery is in order, so once "b" arrives "a" has been counted.
        assert_eq!(next(&mut rx).await["call_id"], "b");
        assert!(metrics.webhooks_delivered() >= 1);
        assert_eq!(metrics.webhooks_failed(), 0);
        assert!(metrics
            .render(&Default::default())
            .contains("switchboard_webhook_retries_total 2\n"));
    }

    #[tokio::test]
    async fn a_dead_receiver_blocks_nothing_and_its_queue_stays_bounded() {
        // Bind then drop: nothing listens on the port any more.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
        drop(dead);
        let (live_url, mut rx) = receiver(0).await;
        let bus = EventBus::default();
        let metrics = Arc::new(Metrics::default());
        let mut dead_cfg = config(dead_url, &[]);
        dead_cfg.queue = 4;
        dead_cfg.max_attempts = 2;
        dead_cfg.backoff_ms = 1000;
        let _hooks =
            Webhooks::spawn(&[dead_cfg, config(live_url, &[])], &bus, metrics.clone()).unwrap();
        let start = std::time::Instant::now();
        for i in 0..20 {
            bus.publish(ended(&i.to_string()));
        }
        assert!(
            start.elapsed() < Duration::from_millis(50),
            "publishing never waits"
        );
        for i in 0..20 {
            assert_eq!(next(&mut rx).await["call_id"], i.to_string());
        }
        // The dead hook holds at most 4 queued plus one in flight; the rest are dropped.
        // Its subscriber runs on its own, so wait for it, boundedly.
        for _ in 0..200 {
            if metrics.webhooks_dropped() >= 15 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            metrics.webhooks_dropped() >= 15,
            "{}",
            metrics.webhooks_dropped()
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let q = Queue::new(2);
        let ev = |seq| {
            Arc::new(Stamped {
                seq,
                time: String::new(),
                event: ended("x"),
            })
        };
        assert_eq!(q.push(ev(1)), 0);
        assert_eq!(q.push(ev(2)), 0);
        assert_eq!(q.push(ev(3)), 1);
        let items: Vec<u64> = q.lock().iter().map(|e| e.seq).collect();
        assert_eq!(items, [2, 3]);
    }
}
