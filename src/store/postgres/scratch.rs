//! Throwaway PostgreSQL databases for tests and benchmarks: each
//! [`ScratchDb`] is a fresh `weir_test_<random>` database on the server at
//! `WEIR_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! the trust-auth cluster `.ci/run` sets up), dropped again on `Drop`.
//!
//! Public (not `cfg(test)`) because the integration tests in `tests/` are
//! another crate and need the same helper.
//!
//! No server: outside CI the Postgres tests skip with a printed line, so a
//! laptop without PostgreSQL still runs the rest of the suite; with
//! `CI=true` they fail instead, so CI can never go green without them.

use std::time::Duration;

use rand::{distr::Alphanumeric, Rng};
use tokio_postgres::NoTls;

/// Admin URL used when `WEIR_TEST_PG_URL` is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test; dropped (with its connections) on drop.
#[derive(Debug)]
pub struct ScratchDb {
    /// URL of the new database, for `PostgresStore::connect` or `--db`.
    pub url: String,
    name: String,
    admin: String,
}

/// The server tests use.
pub fn admin_url() -> String {
    std::env::var("WEIR_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

async fn admin_client(admin: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg: tokio_postgres::Config = admin.parse()?;
    cfg.connect_timeout(Duration::from_secs(3));
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Whether Postgres tests can run here. Prints why not and returns false
/// outside CI; panics under CI (see the module docs).
pub async fn available() -> bool {
    let admin = admin_url();
    match admin_client(&admin).await {
        Ok(_) => true,
        Err(e) if in_ci() => panic!(
            "CI is set but PostgreSQL at {admin} is not reachable: {}",
            super::with_causes(&e)
        ),
        Err(e) => {
            let why = super::with_causes(&e);
            eprintln!(
                "skipping: no PostgreSQL at {admin} ({why}); set WEIR_TEST_PG_URL or start one"
            );
            false
        }
    }
}

impl ScratchDb {
    /// Creates a fresh database, or `None` when [`available`] says to skip.
    pub async fn create() -> Option<Self> {
        let admin = admin_url();
        let client = match admin_client(&admin).await {
            Ok(c) => c,
            Err(_) if !available().await => return None,
            Err(e) => panic!("PostgreSQL at {admin}: {e}"),
        };
        let suffix: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(16)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        let name = format!("weir_test_{suffix}");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
        Some(Self {
            url: to_url(&admin, &name),
            name,
            admin,
        })
    }

    /// The database name (`weir_test_…`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The admin URL with its path (database) replaced by `name`.
fn to_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    // `scheme://authority/db`: keep everything up to the authority's end.
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut url = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl Drop for ScratchDb {
    /// Drops the database from a thread of its own: `Drop` cannot await, and
    /// it may run inside a runtime, where blocking on another would panic.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = admin_client(&admin).await.map_err(|e| e.to_string())?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop scratch database {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_url;

    #[test]
    fn database_is_swapped_in_the_url() {
        assert_eq!(
            to_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            to_url("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(to_url("postgresql://h:1", "x"), "postgresql://h:1/x");
    }
}
