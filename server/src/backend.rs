//! The store `pop serve` runs on: the embedded SQLite file under the data directory (the
//! default), a shared PostgreSQL database (`--store postgres://…` / `DATABASE_URL`) or a
//! KurrentDB server or cluster (`--store kurrentdb://…` or `esdb://…`, with the cargo feature
//! `kurrentdb`), with the leadership that fits it.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use pop_store::{
    Durability, EventStore, Leadership, PgLeadership, PgOptions, PgStore, ProcessLeadership,
    SqliteOptions, SqliteStore,
};

use crate::cli::{DurabilityArg, StoreArgs};
use pop_store::sqlite::DEFAULT_MIN_FREE_BYTES;

/// An open store and the leader locks that go with it.
pub struct Backend {
    pub log: Arc<dyn EventStore>,
    pub leadership: Arc<dyn Leadership>,
    /// For logs: the file, or the database URL without its password.
    pub describe: String,
    store: Store,
}

enum Store {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
    /// Nothing to close: the client's channels close when the last clone drops.
    #[cfg(feature = "kurrentdb")]
    Kurrent,
}

/// What a start takes of a store it would otherwise refuse.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accepting {
    /// An older pop's store from before the hash chain: chained and signed as it is
    /// (`--chain-unchained-history`).
    pub chain_unchained: bool,
    /// The embedded store's write-ahead log damaged with commits after the damage: opened as
    /// SQLite would, dropping them (`--accept-wal-damage`).
    pub wal_damage: bool,
}

impl Backend {
    /// Opens the PostgreSQL store at `store_url`, or without it the embedded store in the
    /// data directory of `store` with `durability`.
    pub async fn open(
        store: &StoreArgs,
        store_url: Option<&str>,
        durability: DurabilityArg,
    ) -> Result<Backend> {
        Self::open_with(
            store,
            store_url,
            durability,
            false,
            PgOptions::default().pool_size,
            DEFAULT_MIN_FREE_BYTES,
            Accepting::default(),
        )
        .await
    }

    /// [`Backend::open`] with a PostgreSQL pool of `pool_size` (`pop serve --pg-pool-size`),
    /// the embedded store's free-space floor (`--min-free-disk-mib`), and whether a store from
    /// before the hash chain is chained, or a damaged write-ahead log opened ([`Accepting`]).
    pub async fn open_sized(
        store: &StoreArgs,
        store_url: Option<&str>,
        durability: DurabilityArg,
        pool_size: usize,
        min_free_bytes: u64,
        accepting: Accepting,
    ) -> Result<Backend> {
        Self::open_with(store, store_url, durability, false, pool_size, min_free_bytes, accepting)
            .await
    }

    /// The shared store at `store_url` for a tool that only reads it beside the servers
    /// (`pop log`): a PostgreSQL store is opened without migrating its schema.
    pub async fn open_reader(store: &StoreArgs, store_url: &str) -> Result<Backend> {
        Self::open_with(
            store,
            Some(store_url),
            DurabilityArg::Full,
            true,
            PgOptions::default().pool_size,
            DEFAULT_MIN_FREE_BYTES,
            Accepting::default(),
        )
        .await
    }

    async fn open_with(
        store: &StoreArgs,
        store_url: Option<&str>,
        durability: DurabilityArg,
        read_only: bool,
        pool_size: usize,
        min_free_bytes: u64,
        accepting: Accepting,
    ) -> Result<Backend> {
        let Accepting { chain_unchained, wal_damage: accept_wal_damage } = accepting;
        match store_url {
            None => {
                let path = store.db_path();
                if path.is_dir() {
                    bail!(
                        "the embedded store's file {} is a directory: move it away (the store \
                         is one SQLite file there)",
                        path.display()
                    );
                }
                let durability = match durability {
                    DurabilityArg::Full => Durability::Full,
                    DurabilityArg::Normal => Durability::Normal,
                };
                let store = Arc::new(
                    SqliteStore::open(
                        &path,
                        SqliteOptions {
                            durability,
                            min_free_bytes,
                            chain_unchained,
                            accept_wal_damage,
                            ..SqliteOptions::default()
                        },
                    )
                    .await
                    .with_context(|| format!("opening the embedded store at {}", path.display()))?,
                );
                Ok(Backend {
                    log: store.clone(),
                    // One process is the only replica of the embedded store.
                    leadership: Arc::new(ProcessLeadership::default()),
                    describe: path.display().to_string(),
                    store: Store::Sqlite(store),
                })
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let options =
                    PgOptions { read_only, pool_size, chain_unchained, ..PgOptions::default() };
                let describe = redact(url);
                let store = Arc::new(
                    PgStore::connect(url, options.clone())
                        .await
                        .with_context(|| format!("opening the PostgreSQL store at {describe}"))?,
                );
                let leadership =
                    PgLeadership::new(url, &options).context("setting up the leader locks")?;
                Ok(Backend {
                    log: store.clone(),
                    leadership: Arc::new(leadership),
                    describe,
                    store: Store::Postgres(store),
                })
            }
            #[cfg(feature = "kurrentdb")]
            Some(url) if pop_store::kurrentdb::is_kurrentdb_url(url) => {
                use pop_store::{KurrentLeadership, KurrentOptions, KurrentStore, LeaseOptions};
                let describe = redact(url);
                let store = KurrentStore::connect(url, KurrentOptions::default())
                    .await
                    .with_context(|| format!("opening the KurrentDB store at {describe}"))?;
                let leadership = KurrentLeadership::new(&store, LeaseOptions::default());
                Ok(Backend {
                    log: Arc::new(store),
                    leadership: Arc::new(leadership),
                    describe,
                    store: Store::Kurrent,
                })
            }
            Some(other) => bail!(
                "--store {:?} is not a PostgreSQL URL (postgres://user@host/db){}; leave it out \
                 for the embedded store in --data-dir",
                redact(other),
                if cfg!(feature = "kurrentdb") {
                    " nor a KurrentDB one (kurrentdb://host:2113, esdb://…)"
                } else {
                    " (this pop was built without the cargo feature `kurrentdb`, so KurrentDB \
                     URLs are not available)"
                }
            ),
        }
    }

    /// The store's signed checkpoints (`pop_store::commitment`), on the backends that keep
    /// them (the embedded store and PostgreSQL).
    pub fn commitment(&self) -> Option<Arc<dyn pop_store::commitment::LogCommitment>> {
        match &self.store {
            Store::Sqlite(store) => Some(store.clone()),
            Store::Postgres(store) => Some(store.clone()),
            #[cfg(feature = "kurrentdb")]
            Store::Kurrent => None,
        }
    }

    /// Closes the store after the appends already queued.
    pub async fn close(&self) -> Result<()> {
        match &self.store {
            Store::Sqlite(store) => store.close().await.context("closing the store"),
            Store::Postgres(store) => {
                store.close().await;
                Ok(())
            }
            #[cfg(feature = "kurrentdb")]
            Store::Kurrent => Ok(()),
        }
    }
}

/// The URL without a password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    /// A KurrentDB URL given to a `pop` built without the backend is refused with a message
    /// that says why, not as "not a PostgreSQL URL" alone; with the backend, a URL nobody
    /// answers at is an error naming the store.
    #[tokio::test]
    async fn kurrentdb_urls_are_recognised() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = crate::cli::StoreArgs { data_dir: dir.path().to_path_buf() };
        let url = "kurrentdb://admin:secret@127.0.0.1:1?tls=false&maxDiscoverAttempts=1";
        let opened = super::Backend::open(&store, Some(url), crate::cli::DurabilityArg::Full).await;
        let message = format!("{:#}", opened.err().expect("nothing answers on port 1"));
        assert!(!message.contains("secret"), "the password leaked: {message}");
        if cfg!(feature = "kurrentdb") {
            assert!(message.contains("opening the KurrentDB store"), "{message}");
        } else {
            assert!(message.contains("cargo feature `kurrentdb`"), "{message}");
        }
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact("postgres://pop:secret@db:5432/pop"), "postgres://pop:***@db:5432/pop");
        assert_eq!(redact("postgres://pop@db/pop"), "postgres://pop@db/pop");
        assert_eq!(redact("postgres://db/pop"), "postgres://db/pop");
        assert_eq!(
            redact("kurrentdb://admin:changeit@kdb:2113?tls=true"),
            "kurrentdb://admin:***@kdb:2113?tls=true"
        );
    }
}

/// Where the read-model snapshot of a store lives in `data_dir`: `snapshots/` for the embedded
/// store, and for a shared one (`store_url`) a folder of its own under it, named by the store's
/// kind and a hash of the whole URL but its password (host, socket path, port, database, user,
/// options — any of them, in the path or the query, may pick another log). A snapshot holds no
/// mark of the log it came from, so a server pointed at another store from the same data
/// directory (the migration recipe's `pop serve --store postgres://…` after the tour) loaded
/// the embedded store's snapshot, and one database's snapshot served another's agendas
/// (newcomer4). Another spelling of the same store only costs one rebuild.
pub fn snapshot_dir(data_dir: &std::path::Path, store_url: Option<&str>) -> std::path::PathBuf {
    let base = data_dir.join("snapshots");
    let Some(url) = store_url else { return base };
    let (scheme, rest) = url.split_once("://").unwrap_or(("store", url));
    // The password, in the userinfo or the query, is no part of which log it is.
    let (authority_end, _) = rest
        .char_indices()
        .find(|(_, c)| matches!(c, '/' | '?' | '#'))
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{user}@{hosts}")
        }
        None => authority.to_string(),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let query: Vec<&str> = query
        .split(['&', '#'])
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("password="))
        .collect();
    let identity = format!("{scheme}://{authority}{path}?{}", query.join("&"));
    let hash = pop_store::digest::hex(&pop_store::digest::data_hash(identity.as_bytes()));
    let kind: String = scheme.chars().filter(char::is_ascii_alphanumeric).collect();
    base.join(format!("{kind}-{}", &hash[..16]))
}

#[cfg(test)]
mod snapshot_dir_tests {
    use super::snapshot_dir;
    use std::path::Path;

    #[test]
    fn each_store_has_its_own_snapshot_folder() {
        let d = Path::new("pop-data");
        assert_eq!(snapshot_dir(d, None), d.join("snapshots"));
        let a = snapshot_dir(d, Some("postgres://pop:secret@db.example:5432/pop?sslmode=disable"));
        let same =
            snapshot_dir(d, Some("postgres://pop:other@db.example:5432/pop?sslmode=disable"));
        assert_eq!(a, same, "the password does not make another store");
        let same =
            snapshot_dir(d, Some("postgres://pop@db.example:5432/pop?sslmode=disable&password=x"));
        assert_eq!(a, same, "nor in the query");
        // Each of these may reach another log (review-s35b): never one folder.
        let others = [
            "postgres://pop:secret@db.example:5432/popx?sslmode=disable",
            "postgres://bob:secret@db.example:5432/pop?sslmode=disable",
            "postgres://pop:secret@db.example:5433/pop?sslmode=disable",
            "postgres:///?host=/run/postgresql&dbname=a",
            "postgres:///?host=/run/postgresql&dbname=b",
            "postgres:///pop?host=/tmp",
            "postgres://db.example/pop?options=-c%20search_path%3Dt1",
            "postgres://db.example/pop?options=-c%20search_path%3Dt2",
        ];
        let dirs: Vec<_> = others.iter().map(|u| snapshot_dir(d, Some(u))).collect();
        for (i, x) in dirs.iter().enumerate() {
            assert_ne!(x, &a, "{}", others[i]);
            for (j, y) in dirs.iter().enumerate().skip(i + 1) {
                assert_ne!(x, y, "{} and {}", others[i], others[j]);
            }
        }
        assert_ne!(a, d.join("snapshots"));
        assert!(a.starts_with(d.join("snapshots")));
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("postgres-"));
    }
}
