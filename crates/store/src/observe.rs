//! What a backend tells the server's metrics about its own work.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Receives a backend's timings. Called on the store's hot paths (every read, every group
/// commit), so implementations only count.
pub trait StoreObserver: Send + Sync + std::fmt::Debug {
    /// One group commit: `entries` log entries appended in one transaction, which took
    /// `elapsed` including its sync to disk.
    fn append_batch(&self, entries: usize, elapsed: Duration);
    /// One read (a lookup by key or a short range scan).
    fn read(&self, elapsed: Duration);
}

/// Where a backend keeps its observer: set at most once, after the store opened, and read
/// by every thread of the backend without a lock.
#[derive(Debug, Clone, Default)]
pub struct ObserverSlot(Arc<OnceLock<Arc<dyn StoreObserver>>>);

impl ObserverSlot {
    /// Sets the observer; a second call is ignored (one server observes one store).
    pub fn set(&self, observer: Arc<dyn StoreObserver>) {
        let _ = self.0.set(observer);
    }

    /// Runs `work`, reporting its duration as a read when an observer is set.
    pub fn time_read<T>(&self, work: impl FnOnce() -> T) -> T {
        match self.0.get() {
            Some(observer) => {
                let start = std::time::Instant::now();
                let result = work();
                observer.read(start.elapsed());
                result
            }
            None => work(),
        }
    }

    /// Reports a group commit timed by the caller (an asynchronous backend's).
    pub fn append_batch(&self, entries: usize, elapsed: Duration) {
        if let Some(observer) = self.0.get() {
            observer.append_batch(entries, elapsed);
        }
    }

    /// Runs `work` (a group commit of `entries` entries), reporting its duration.
    pub fn time_append_batch<T>(&self, entries: usize, work: impl FnOnce() -> T) -> T {
        match self.0.get() {
            Some(observer) => {
                let start = std::time::Instant::now();
                let result = work();
                observer.append_batch(entries, start.elapsed());
                result
            }
            None => work(),
        }
    }
}
