//! The drain switch: once thrown (SIGTERM, or `POST /api/admin/drain`), the SIP side
//! refuses new calls, lets the calls in progress end for a while, then ends them and stops
//! the server. Shared by the signal handling, the HTTP API and the SIP transport.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A one-way switch; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    on: AtomicBool,
    changed: Notify,
}

impl Drain {
    /// Throws the switch; true the first time.
    pub fn start(&self) -> bool {
        let first = !self.0.on.swap(true, Ordering::SeqCst);
        if first {
            self.0.changed.notify_waiters();
        }
        first
    }

    /// Whether the switch is thrown.
    pub fn is_draining(&self) -> bool {
        self.0.on.load(Ordering::SeqCst)
    }

    /// Resolves once the switch is thrown.
    pub async fn wait(&self) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a start in between is not missed.
            changed.as_mut().enable();
            if self.is_draining() {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_once_and_late_waiters_return_at_once() {
        let d = Drain::default();
        assert!(!d.is_draining());
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(d.start());
        assert!(!d.start(), "only the first start counts");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), d.wait())
            .await
            .unwrap();
        assert!(d.is_draining());
    }
}
