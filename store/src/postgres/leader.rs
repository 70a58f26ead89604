//! Leader locks on PostgreSQL: a session-level advisory lock per name, held by a connection
//! of its own that lives as long as the [`LeaderGuard`]. The lock goes with the connection:
//! dropping the guard closes it (the server releases the lock), and a connection that dies
//! (the server restarted, the backend was terminated, the network broke) both releases the
//! lock on the server and marks the guard lost here.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::NoTls;

use super::{LOCK_CLASS, PgOptions, pg_config};
use crate::{LeaderGuard, Leadership, StoreError};

/// How often a guard checks its connection with a trivial query. A dead TCP peer may send
/// nothing; the query (bounded by the statement timeout and TCP keepalives) finds out.
pub const PG_LEADER_HEARTBEAT: Duration = Duration::from_secs(2);

/// How long the server keeps a lock's session that says nothing (`idle_session_timeout`,
/// PostgreSQL 14 and later): a replica frozen with its locks (`kill -STOP`, a hung node, Ctrl-Z
/// on a terminal's `pop serve`) sends no heartbeat, and without a bound the server kept its
/// idle sessions, and so the scheduler's, retry's and reclaimer's locks, for as long as the
/// process lived: nothing was scheduled anywhere (ops3am2). TCP keepalives do not help: a
/// stopped process's kernel still answers them. Several heartbeats long, so a busy but healthy
/// replica never loses its lock to it.
pub const PG_LEADER_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Leadership among all replicas sharing one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgLeadership {
    config: tokio_postgres::Config,
}

impl PgLeadership {
    /// Leadership on the database at `url` (the store's URL).
    pub fn new(url: &str, options: &PgOptions) -> Result<PgLeadership, StoreError> {
        Ok(PgLeadership { config: pg_config(url, options)? })
    }
}

/// What a guard holds: dropping it aborts the tasks, which drops the client and closes the
/// connection, which releases the lock on the server.
struct Held {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl Leadership for PgLeadership {
    async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>, StoreError> {
        let fail = super::connect_error("asking for a leader lock");
        let (client, mut connection) = self.config.connect(NoTls).await.map_err(&fail)?;
        let (lost_tx, lost_rx) = watch::channel(false);
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                if message.is_err() {
                    break;
                }
            }
            // Whatever ended the connection, the lock is gone with it.
            let _ = lost_tx.send(true);
        });
        // Before the lock, so no lock is ever held by an unbounded session. An older server
        // without the setting refuses it: the lock is then held as before.
        let bound = format!("SET idle_session_timeout = '{}s'", PG_LEADER_IDLE_TIMEOUT.as_secs());
        if let Err(error) = client.simple_query(&bound).await {
            tracing::debug!(%error, "the server does not bound idle sessions; a frozen leader keeps its locks");
        }
        let row = match client
            .query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&LOCK_CLASS, &name])
            .await
        {
            Ok(row) => row,
            Err(e) => {
                driver.abort();
                return Err(fail(e));
            }
        };
        let got: bool = row.try_get(0).map_err(fail)?;
        if !got {
            driver.abort();
            return Ok(None);
        }
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(PG_LEADER_HEARTBEAT).await;
                if let Err(error) = client.simple_query("SELECT 1").await {
                    tracing::warn!(%error, "leader lock connection failed");
                    // Dropping the client ends the connection; the driver reports the loss.
                    return;
                }
            }
        });
        // Debug, not info: the timed processes take their lock once per cycle (every 10–30 s).
        tracing::debug!(name, "leader lock taken");
        let held = Held { tasks: vec![heartbeat, driver] };
        Ok(Some(LeaderGuard::new(name, lost_rx, Box::new(held))))
    }
}
