//! The database URL: parsed by sqlx (`sslmode`, `sslrootcert` and the rest are honoured),
//! and errors that name the server and database but never the password.

use std::fmt::Display;
use std::time::Duration;

use redoubt_store::{Result, StoreError};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// How long the first connection may take: a host that drops packets would otherwise hold
/// the start-up for the system's TCP timeout.
const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Prepared statements each connection keeps: every statement of this crate (about a
/// hundred) with room to spare, so that none is prepared twice on a connection.
const STATEMENTS_CACHED_MAX: usize = 256;

/// What messages replace a secret with.
const REDACTED: &str = "***";

/// A parsed database URL.
pub(crate) struct Target {
    pub(crate) options: PgConnectOptions,
    /// Where the database is, for messages: host, port and database, never the password.
    place: String,
    /// Texts no message may contain: the URL's password, as written and decoded.
    secrets: Vec<String>,
}

/// `PgConnectOptions` prints its password in `Debug`; this prints where it points only.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `postgres://user:password@host:port/database?sslmode=…`.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let secrets = secrets(url);
        let invalid = |reason: &dyn Display| {
            StoreError::Backend(redact(&format!("invalid database URL: {reason}"), &secrets))
        };
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            return Err(invalid(&"it must start with postgres:// or postgresql://"));
        }
        let options: PgConnectOptions = url.parse().map_err(|e| match e {
            // sqlx says "error with configuration: …"; the cause is what helps.
            sqlx::Error::Configuration(cause) => invalid(&cause),
            other => invalid(&other),
        })?;
        let host = match options.get_socket() {
            Some(socket) => format!("socket {}", socket.display()),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        let database = options.get_database().unwrap_or(options.get_username());
        let place = format!("{host}, database {database}");
        // Sessions name themselves in pg_stat_activity, unless the URL names them; the
        // URL may set the statement cache too.
        let options = match options.get_application_name() {
            Some(_) => options,
            None => options.application_name("redoubt"),
        };
        let options = if url.contains("statement-cache-capacity=") {
            options
        } else {
            options.statement_cache_capacity(STATEMENTS_CACHED_MAX)
        };
        Ok(Self {
            options,
            place,
            secrets,
        })
    }

    /// A failure of the database named by this URL, without its password.
    pub(crate) fn error(&self, doing: &str, error: &dyn Display) -> StoreError {
        StoreError::Backend(redact(
            &format!("{doing} PostgreSQL at {}: {error}", self.place),
            &self.secrets,
        ))
    }

    /// One connection, made once (no retries), within [`CONNECT_TIMEOUT_MS`].
    pub(crate) async fn connect(&self) -> Result<PgConnection> {
        let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
        match tokio::time::timeout(timeout, PgConnection::connect_with(&self.options)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(error)) => Err(self.error("cannot connect to", &error)),
            Err(_) => Err(self.error(
                "cannot connect to",
                &format_args!("no answer within {} s", CONNECT_TIMEOUT_MS / 1_000),
            )),
        }
    }
}

/// The password of `url`, wherever it may be (user info, `password=` parameter), as
/// written and percent-decoded. Found by plain text search, so that a URL too malformed
/// to parse still has its password kept out of the message saying so.
fn secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    // The user info ends at the last '@': a password with a stray '@' or '/' is still in it.
    if let Some((user_info, _)) = before_query.rsplit_once('@')
        && let Some((_, password)) = user_info.split_once(':')
    {
        found.push(password.to_owned());
        found.push(percent_decode(password, false));
    }
    for pair in query.split('&') {
        if let Some((key, value)) = pair.split_once('=')
            && percent_decode(key, true) == "password"
        {
            found.push(value.to_owned());
            found.push(percent_decode(value, true));
        }
    }
    found.retain(|secret| !secret.is_empty());
    found.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    found.dedup();
    found
}

/// `%XX` escapes decoded (and `+` as a space in a query, as form encoding has it).
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        i += 1;
        match (byte, hex(i), hex(i + 1)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits: at most 0xFF.
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 2;
            }
            (b'+', _, _) if plus_is_space => out.push(b' '),
            _ => out.push(byte),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` with every secret replaced (longest first, so none is left half-shown).
fn redact(message: &str, secrets: &[String]) -> String {
    secrets.iter().fold(message.to_owned(), |message, secret| {
        message.replace(secret.as_str(), REDACTED)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn message(error: StoreError) -> String {
        match error {
            StoreError::Backend(message) => message,
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    #[test]
    fn passwords_are_found_as_written_and_decoded() {
        let found = secrets("postgres://app:s%40cret@db.example:5432/redoubt?sslmode=require");
        assert!(found.contains(&"s%40cret".to_owned()), "{found:?}");
        assert!(found.contains(&"s@cret".to_owned()), "{found:?}");
        let found = secrets("postgresql://db.example/redoubt?user=app&password=hunter+2%21");
        assert!(found.contains(&"hunter 2!".to_owned()), "{found:?}");
        assert!(secrets("postgres://app@db.example/redoubt").is_empty());
    }

    #[test]
    fn redaction_hides_every_form_of_the_password() {
        let secrets = secrets("postgres://app:p%2Fw@db/x");
        let redacted = redact("failed for p%2Fw and p/w", &secrets);
        assert_eq!(redacted, "failed for *** and ***");
    }

    #[test]
    fn a_malformed_url_is_refused_clearly_without_its_password() {
        for url in [
            "postgres://app:Secret123@db.example:notaport/redoubt",
            "postgres://app:Secret123@[::1/redoubt",
            "mysql://app:Secret123@db.example/redoubt",
            "app:Secret123@db.example/redoubt",
            "",
        ] {
            let text = message(Target::parse(url).unwrap_err());
            assert!(text.starts_with("invalid database URL: "), "{url}: {text}");
            assert!(!text.contains("Secret123"), "{url}: {text}");
        }
    }

    #[test]
    fn errors_name_the_server_and_database_but_not_the_password() {
        let target = Target::parse("postgres://app:Secret123@db.example:6543/redoubt").unwrap();
        let text = message(target.error("cannot connect to", &"auth failed for Secret123"));
        assert_eq!(
            text,
            "cannot connect to PostgreSQL at db.example:6543, database redoubt: auth failed for ***"
        );
        assert!(!format!("{target:?}").contains("Secret123"));
    }
}
