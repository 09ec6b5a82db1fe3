//! A bounded pool of expensive objects (PocketSphinx decoders): built on demand up to a
//! maximum, each lent to one thread at a time, waited for no longer than a deadline.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::AsrError;

struct State<T> {
    idle: Vec<T>,
    /// Objects in existence: idle, lent out, or being built.
    created: usize,
}

/// Up to `max` objects of type `T`, lent out by [`Pool::take`] and given back by [`Pool::put`].
pub(super) struct Pool<T> {
    state: Mutex<State<T>>,
    returned: Condvar,
    max: usize,
    wait: Duration,
}

impl<T> Pool<T> {
    /// An empty pool of at most `max` (at least one) objects; a taker waits up to `wait`.
    pub(super) fn new(max: usize, wait: Duration) -> Self {
        Pool {
            state: Mutex::new(State {
                idle: Vec::new(),
                created: 0,
            }),
            returned: Condvar::new(),
            max: max.max(1),
            wait,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves only a list of idle objects behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle object, a new one from `build` while under the maximum, or one given back
    /// within the wait; [`AsrError::Busy`] when none is.
    pub(super) fn take(&self, build: impl FnOnce() -> Result<T, AsrError>) -> Result<T, AsrError> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.lock();
        loop {
            if let Some(t) = state.idle.pop() {
                return Ok(t);
            }
            if state.created < self.max {
                state.created += 1;
                drop(state);
                let built = build();
                if built.is_err() {
                    self.discard();
                }
                return built;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AsrError::Busy(self.max));
            }
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Gives an object back for the next taker.
    pub(super) fn put(&self, t: T) {
        self.lock().idle.push(t);
        self.returned.notify_one();
    }

    /// Objects in existence: idle, lent out, or being built.
    pub(super) fn created(&self) -> usize {
        self.lock().created
    }

    /// Forgets a lent object that is not coming back (it failed), making room for a new one.
    pub(super) fn discard(&self) {
        let mut state = self.lock();
        state.created = state.created.saturating_sub(1);
        drop(state);
        self.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn objects_are_built_up_to_the_maximum_and_then_reused() {
        let pool = Pool::new(2, Duration::from_millis(50));
        let a = pool.take(|| Ok(1)).unwrap();
        let b = pool.take(|| Ok(2)).unwrap();
        let start = Instant::now();
        assert_eq!(pool.take(|| Ok(3)), Err(AsrError::Busy(2)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        pool.put(a);
        assert_eq!(pool.take(|| Ok(4)), Ok(1), "the idle one, not a new one");
        pool.put(b);
    }

    #[test]
    fn a_waiting_taker_gets_the_object_given_back() {
        let pool = Arc::new(Pool::new(1, Duration::from_secs(10)));
        let held = pool.take(|| Ok("decoder")).unwrap();
        let waiter = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || pool.take(|| Ok("second")))
        };
        pool.put(held);
        assert_eq!(waiter.join().unwrap(), Ok("decoder"));
    }

    #[test]
    fn a_failed_build_or_a_discarded_object_frees_its_place() {
        let pool = Pool::new(1, Duration::from_millis(10));
        assert_eq!(
            pool.take(|| Err::<u8, _>(AsrError::Engine("ps_init".into()))),
            Err(AsrError::Engine("ps_init".into()))
        );
        let t = pool.take(|| Ok(7)).unwrap();
        assert_eq!(t, 7);
        pool.discard();
        assert_eq!(pool.take(|| Ok(8)), Ok(8));
    }

    #[test]
    fn a_discard_wakes_a_waiter_to_build_anew() {
        let pool = Arc::new(Pool::new(1, Duration::from_secs(10)));
        let _lost = pool.take(|| Ok(1)).unwrap();
        let waiter = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let start = Instant::now();
                (pool.take(|| Ok(2)), start.elapsed())
            })
        };
        pool.discard();
        let (got, took) = waiter.join().unwrap();
        assert_eq!(got, Ok(2));
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
