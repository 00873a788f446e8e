//! akd's `Database` on Redoubt's store: the key directory lives in whatever backend the
//! server runs on (SQLite, PostgreSQL), through the store's `kt_*` methods, which every
//! backend's conformance suite checks.
//!
//! Records are akd's own types, postcard-encoded: tree nodes and the aZKS by their binary
//! key, value states by `(label, epoch)`.

use std::collections::HashMap;
use std::sync::Arc;

use akd::errors::StorageError;
use akd::storage::types::{DbRecord, KeyData, StorageType, ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable};
use akd::{AkdLabel, AkdValue};
use redoubt_store::{KtNode, KtValue, Store, StoreError};

#[derive(Clone)]
pub(crate) struct StoreDb(pub(crate) Arc<dyn Store>);

fn backend(error: StoreError) -> StorageError {
    StorageError::Connection(error.to_string())
}

fn encode(record: &DbRecord) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(record)
        .map_err(|e| StorageError::Other(format!("encoding a key directory record: {e}")))
}

fn decode(bytes: &[u8]) -> Result<DbRecord, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Other(format!("corrupt key directory record: {e}")))
}

fn decode_state(bytes: &[u8]) -> Result<ValueState, StorageError> {
    match decode(bytes)? {
        DbRecord::ValueState(state) => Ok(state),
        _ => Err(StorageError::Other(
            "corrupt key directory value: not a value state".into(),
        )),
    }
}

/// The state `flag` selects among one label's states (as akd's in-memory database does).
fn pick(states: &[ValueState], flag: ValueStateRetrievalFlag) -> Option<&ValueState> {
    match flag {
        ValueStateRetrievalFlag::MaxEpoch => states.iter().max_by_key(|s| s.epoch),
        ValueStateRetrievalFlag::MinEpoch => states.iter().min_by_key(|s| s.epoch),
        ValueStateRetrievalFlag::SpecificVersion(version) => states.iter().find(|s| s.version == version),
        ValueStateRetrievalFlag::SpecificEpoch(epoch) => states.iter().find(|s| s.epoch == epoch),
        ValueStateRetrievalFlag::LeqEpoch(epoch) => {
            states.iter().filter(|s| s.epoch <= epoch).max_by_key(|s| s.epoch)
        }
    }
}

impl StoreDb {
    async fn write(&self, records: &[DbRecord]) -> Result<(), StorageError> {
        let mut nodes = Vec::new();
        let mut values = Vec::new();
        for record in records {
            match record {
                DbRecord::ValueState(state) => values.push(KtValue {
                    label: state.username.0.clone(),
                    epoch: state.epoch,
                    version: state.version,
                    record: encode(record)?,
                }),
                _ => nodes.push(KtNode {
                    key: record.get_full_binary_id(),
                    record: encode(record)?,
                }),
            }
        }
        self.0.kt_write(&nodes, &values).await.map_err(backend)
    }

    /// Every state of each label, by label.
    async fn states(&self, labels: &[AkdLabel]) -> Result<HashMap<Vec<u8>, Vec<ValueState>>, StorageError> {
        let keys: Vec<Vec<u8>> = labels.iter().map(|l| l.0.clone()).collect();
        let mut by_label: HashMap<Vec<u8>, Vec<ValueState>> = HashMap::new();
        for row in self.0.kt_values(&keys).await.map_err(backend)? {
            by_label
                .entry(row.label)
                .or_default()
                .push(decode_state(&row.record)?);
        }
        Ok(by_label)
    }

    async fn get_by_key(&self, key: Vec<u8>) -> Result<DbRecord, StorageError> {
        if key.first() == Some(&(StorageType::ValueState as u8)) {
            let id = ValueState::key_from_full_binary(&key).map_err(StorageError::Other)?;
            let label = AkdLabel(id.0);
            let states = self.states(std::slice::from_ref(&label)).await?;
            return states
                .get(&label.0)
                .and_then(|s| s.iter().find(|s| s.epoch == id.1))
                .cloned()
                .map(DbRecord::ValueState)
                .ok_or_else(|| StorageError::NotFound(format!("value state at epoch {}", id.1)));
        }
        let mut found = self.0.kt_nodes(&[key]).await.map_err(backend)?;
        match found.pop() {
            Some(node) => decode(&node.record),
            None => Err(StorageError::NotFound("key directory record".into())),
        }
    }
}

#[async_trait::async_trait]
impl Database for StoreDb {
    async fn set(&self, record: DbRecord) -> Result<(), StorageError> {
        self.write(std::slice::from_ref(&record)).await
    }

    async fn batch_set(&self, records: Vec<DbRecord>, _state: DbSetState) -> Result<(), StorageError> {
        self.write(&records).await
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, StorageError> {
        self.get_by_key(St::get_full_binary_key_id(id)).await
    }

    async fn batch_get<St: Storable>(&self, ids: &[St::StorageKey]) -> Result<Vec<DbRecord>, StorageError> {
        if St::data_type() == StorageType::ValueState {
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                match self.get::<St>(id).await {
                    Ok(record) => records.push(record),
                    Err(StorageError::NotFound(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            return Ok(records);
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(St::get_full_binary_key_id).collect();
        self.0
            .kt_nodes(&keys)
            .await
            .map_err(backend)?
            .iter()
            .map(|node| decode(&node.record))
            .collect()
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, StorageError> {
        let mut states = self.states(std::slice::from_ref(username)).await?;
        match states.remove(&username.0) {
            Some(states) if !states.is_empty() => Ok(KeyData { states }),
            _ => Err(StorageError::NotFound("user in the key directory".into())),
        }
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, StorageError> {
        let states = self.states(std::slice::from_ref(username)).await?;
        states
            .get(&username.0)
            .and_then(|s| pick(s, flag))
            .cloned()
            .ok_or_else(|| StorageError::NotFound("user state in the key directory".into()))
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let states = self.states(usernames).await?;
        Ok(states
            .iter()
            .filter_map(|(label, states)| {
                let state = pick(states, flag)?;
                Some((AkdLabel(label.clone()), (state.version, state.value.clone())))
            })
            .collect())
    }
}
