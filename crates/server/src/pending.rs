//! Bookkeeping writes coalesced in memory: a group log acknowledgement (read only by
//! pruning) and when a device was last seen (read only by admins) change at every request
//! or session, and neither is worth a durable write of its own. Both keep the newest value
//! per key and are written every second and at shutdown, acknowledgements also before each
//! prune. A
//! crash loses at most the last second's: acknowledged entries are then pruned later (at
//! the device's next acknowledgement, which covers everything before it, or at the
//! retention limit), never early; a last-seen time is a second older than it was.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use redoubt_proto::{DeviceId, GroupId};
use redoubt_store::StoreError;

use crate::State;

/// The newest value recorded for each key since the last write.
#[derive(Debug)]
pub(crate) struct Newest<K, V>(Mutex<HashMap<K, V>>);

impl<K, V> Default for Newest<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash, V: Ord + Copy> Newest<K, V> {
    pub(crate) fn record(&self, key: K, value: V) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let newest = map.entry(key).or_insert(value);
        *newest = (*newest).max(value);
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied()
    }

    fn take(&self) -> Vec<(K, V)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).drain().collect()
    }

    /// Puts back values a failed write did not store (unless newer ones came meanwhile).
    fn restore(&self, values: impl IntoIterator<Item = (K, V)>) {
        for (key, value) in values {
            self.record(key, value);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    /// The newest sequence number each device acknowledged in each group.
    pub acks: Newest<(GroupId, DeviceId), u64>,
    /// When each device last authenticated.
    pub last_seen: Newest<DeviceId, i64>,
}

/// Writes what is pending; what a failed write did not store is kept for the next try.
/// One failing does not hold back the other.
pub(crate) async fn flush(state: &State) -> Result<(), StoreError> {
    let acks = flush_acks(state).await;
    let last_seen = flush_last_seen(state).await;
    acks.and(last_seen)
}

/// Writes the pending acknowledgements (pruning reads them).
pub(crate) async fn flush_acks(state: &State) -> Result<(), StoreError> {
    let mut acks = state.pending.acks.take().into_iter();
    while let Some(((group, device), seq)) = acks.next() {
        if let Err(error) = state.store.ack(&group, &device, seq).await {
            state
                .pending
                .acks
                .restore(std::iter::once(((group, device), seq)).chain(acks));
            return Err(error);
        }
    }
    Ok(())
}

async fn flush_last_seen(state: &State) -> Result<(), StoreError> {
    let seen = state.pending.last_seen.take();
    if seen.is_empty() {
        return Ok(());
    }
    state.store.record_last_seen(&seen).await.inspect_err(|_| {
        state.pending.last_seen.restore(seen);
    })
}
