//! The server's event stream (`GET /api/events`) as a test reads it: events as JSON, in order.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An open `/api/events` stream and what has been read of it.
pub struct Events {
    stream: TcpStream,
    text: String,
    /// Bytes of `text` already turned into events.
    used: usize,
    /// Events read but not yet handed out by [`Events::until`].
    pending: std::collections::VecDeque<serde_json::Value>,
}

impl Events {
    /// Subscribes to `types` (comma-separated; empty: every type), ready once it returns.
    pub async fn open(http: std::net::SocketAddr, types: &str) -> Events {
        let mut stream = TcpStream::connect(http).await.unwrap();
        let query = if types.is_empty() {
            String::new()
        } else {
            format!("?types={types}")
        };
        let req = format!(
            "GET /api/events{query} HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut e = Events {
            stream,
            text: String::new(),
            used: 0,
            pending: Default::default(),
        };
        // The stream is open (subscribed) once its response head has arrived.
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while !e.text.contains("\r\n\r\n") {
            assert!(e.read(until).await, "no event stream head");
        }
        e.used = e.text.len();
        e
    }

    /// Reads more, until `until`; false when nothing came.
    pub async fn read(&mut self, until: tokio::time::Instant) -> bool {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(until, self.stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                true
            }
            Ok(Ok(_)) => panic!("the event stream closed"),
            _ => false,
        }
    }

    /// Events completely read since the last call, as JSON.
    pub fn take(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(end) = self.text[self.used..].find("\n\n") {
            let block = &self.text[self.used..self.used + end];
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    if let Ok(v) = serde_json::from_str(data) {
                        out.push(v);
                    }
                }
            }
            self.used += end + 2;
        }
        out
    }

    /// Reads until an event satisfies `want`, within `limit`; every event seen on the way,
    /// that one last.
    pub async fn until(
        &mut self,
        limit: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let fresh = self.take();
            self.pending.extend(fresh);
            while let Some(ev) = self.pending.pop_front() {
                let done = want(&ev);
                seen.push(ev);
                if done {
                    return seen;
                }
            }
            assert!(
                self.read(deadline).await,
                "no such event within {limit:?}; seen: {seen:?}"
            );
        }
    }
}
