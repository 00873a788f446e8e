//! Wake-ups between the nodes of a cluster (`redoubt_store::Bus`) through PostgreSQL's
//! `LISTEN`/`NOTIFY` on the store's database.
//!
//! A message is published with `pg_notify` from a pool connection, outside any write
//! transaction, and reaches every session listening, this node's included. PostgreSQL keeps
//! no notification for a session that is not listening: after its connection is lost the
//! bus reconnects and says so ([`BusEvent::Gap`]), and the node looks at everything again.

use std::time::Duration;

use redoubt_store::{BUS_MESSAGE_BYTES_MAX, Bus, BusEvent, Result, StoreError};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use crate::{PgStore, backend_error};

/// The channel every node listens on (channels are per database).
const CHANNEL: &str = "redoubt_cluster";
/// How the listening session names itself in `pg_stat_activity`.
const APPLICATION_NAME: &str = "redoubt-bus";
/// Waits between attempts to listen again after the connection was lost, growing to this.
const RECONNECT_WAIT_MAX_MS: u64 = 5_000;

/// The cluster bus on a [`PgStore`]'s database ([`PgStore::bus`]).
#[derive(Debug)]
pub struct PgBus {
    /// Publishes: the store's pool.
    pool: PgPool,
    /// Listens: a connection of its own, in a pool of one that reconnects it.
    listening_pool: PgPool,
    listener: tokio::sync::Mutex<Option<PgListener>>,
}

impl PgStore {
    /// The cluster bus on this store's database, listening already: every message published
    /// after this returns is heard.
    pub async fn bus(&self) -> Result<PgBus> {
        let options = (*self.pool.connect_options())
            .clone()
            .application_name(APPLICATION_NAME);
        let listening_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(options);
        let listener = listen(&listening_pool).await.map_err(backend_error)?;
        Ok(PgBus {
            pool: self.pool.clone(),
            listening_pool,
            listener: tokio::sync::Mutex::new(Some(listener)),
        })
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

impl PgBus {
    /// Stops listening: a waiting or later [`Bus::next`] fails.
    pub async fn close(&self) {
        // Marks the pool closed at once: a `next` waiting wakes, fails and lets go of the
        // listener, whose connection the pool then waits for.
        let closed = self.listening_pool.close();
        drop(self.listener.lock().await.take());
        closed.await;
    }
}

#[async_trait::async_trait]
impl Bus for PgBus {
    async fn publish(&self, message: &[u8]) -> Result<()> {
        if message.len() > BUS_MESSAGE_BYTES_MAX {
            return Err(StoreError::Limit(format!(
                "a bus message is at most {BUS_MESSAGE_BYTES_MAX} bytes; this one has {}",
                message.len()
            )));
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(hex(message))
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn next(&self) -> Result<BusEvent> {
        let mut listener = self.listener.lock().await;
        let mut wait_ms = 50;
        loop {
            if self.listening_pool.is_closed() {
                *listener = None;
                return Err(StoreError::Backend("the bus is closed".into()));
            }
            let Some(current) = listener.as_mut() else {
                // Lost earlier: listen again, then tell the caller what it may have missed.
                match listen(&self.listening_pool).await {
                    Ok(again) => {
                        *listener = Some(again);
                        return Ok(BusEvent::Gap);
                    }
                    Err(error) => {
                        tracing::warn!(%error, wait_ms, "cannot listen on the cluster bus; trying again");
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        wait_ms = (wait_ms * 2).min(RECONNECT_WAIT_MAX_MS);
                        continue;
                    }
                }
            };
            match current.try_recv().await {
                Ok(Some(notification)) => match unhex(notification.payload()) {
                    Some(message) => return Ok(BusEvent::Message(message)),
                    None => tracing::warn!("ignoring a cluster bus message that is not hex"),
                },
                // Lost and listening again (sqlx reconnected): messages may have been missed.
                Ok(None) => return Ok(BusEvent::Gap),
                Err(sqlx::Error::PoolClosed) => {
                    *listener = None;
                    return Err(StoreError::Backend("the bus is closed".into()));
                }
                Err(error) => {
                    // The session ended with an error (terminated, the server shutting
                    // down): a new listener on a new connection.
                    tracing::warn!(%error, "the cluster bus lost its connection");
                    *listener = None;
                }
            }
        }
    }
}

/// Notification payloads are text: the message in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_text_encoding_at_the_largest_size() {
        let message: Vec<u8> = (0..BUS_MESSAGE_BYTES_MAX).map(|i| (i * 7) as u8).collect();
        let text = hex(&message);
        // PostgreSQL's payload limit is 8,000 bytes.
        assert!(text.len() < 8_000);
        assert_eq!(unhex(&text), Some(message));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
