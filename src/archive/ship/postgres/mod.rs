//! PostgreSQL (feature `postgres`): the fleet's [`Store`](crate::archive::ship::Store),
//! which [`Shipper::start`] ships each host's spool into, and
//! [`verify_postgres`], which checks it there.

mod sql;
mod verify;

use std::str::FromStr;
use std::time::Duration;

use super::shipper::{ShipError, Shipper, ShipperConfig};
use crate::archive::Archiver;
use sql::Connection;

pub use verify::verify_postgres;

impl Shipper {
    /// Starts shipping `archiver`'s directory to the PostgreSQL database at
    /// `url` (a libpq-style connection string:
    /// `postgres://user@host:port/db` or `host=... user=...`).
    ///
    /// Returns at once: connecting happens on the shipper's thread, and a
    /// server that is down is retried with backoff (see
    /// [`status`](Shipper::status)).
    ///
    /// # Errors
    ///
    /// [`ShipError::InvalidConfig`], [`ShipError::Url`] for a connection
    /// string that does not parse, [`ShipError::Spawn`].
    pub fn start(archiver: &Archiver, url: &str, config: ShipperConfig) -> Result<Self, ShipError> {
        let mut pg = postgres::Config::from_str(url).map_err(|e| ShipError::Url {
            reason: e.to_string(),
        })?;
        pg.connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            // Names the connection after the host (at most 63 bytes), so an
            // operator can find it in `pg_stat_activity`.
            .application_name(
                &format!("callring-shipper {}", config.host_id)
                    .chars()
                    .take(63)
                    .collect::<String>(),
            );
        let host_id = config.host_id.clone();
        Self::spawn(archiver, config, move || Connection::open(&pg, &host_id))
    }
}

impl From<postgres::Error> for ShipError {
    fn from(e: postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_owned());
        let message = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        };
        Self::Database { code, message }
    }
}
