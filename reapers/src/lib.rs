//! pop's timed processes (DOMAIN.md §7, §9): the [`scheduler`] (tops each insight's queue up
//! from its `added` agendas, woken by the change feed), the [`reclaimer`] (AgendaReclaimer: agendas whose
//! lease holder stopped reporting come back to the queue, or fail when their attempts are used
//! up), [`retry`] (AgendaRetry: failed agendas with attempts left are rerun with `continue`
//! after a backoff), [`data`] (DataObjectReaper: old finished agendas and deleted config
//! objects leave the read models and the store, with an audit record kept) and [`pods`]
//! (PodReaper: finished Kubernetes pods carrying pop's labels are deleted; behind the default
//! `kube` feature).
//!
//! Each process is a [`TimedProcess`]: a pure `plan(now, inputs, &config) -> Vec<action>` plus
//! an idempotent `execute`, run by one loop ([`process::run_loop`]) every interval (and on
//! wake-ups) under a leader lock, with a maximum run time per cycle, a batch size, a dry-run
//! switch and metrics. While traces are exported, a cycle is a `pass` span and each command
//! on an agenda joins that agenda's trace ([`trace`]).
//!
//! This crate must never:
//! - append events except through domain commands (`Commands::execute`): every action is a
//!   command the domain's `decide` judges against the stream's current state, so a plan made
//!   from a slightly stale read model can only be refused, never do harm (the data reaper's
//!   stream deletes come after a domain event that makes the stream final);
//! - read a clock for domain time: `now` is passed in (to `plan`/`execute` by the caller, to
//!   the loop as a clock function), so plans are reproducible and tests pick any instant;
//!   tokio timers only pace the loop and bound a cycle's run time;
//! - update a read model: the projections fold the events its commands cause, like any other;
//! - touch a Kubernetes pod without pop's labels ([`pods::labels`]);
//! - exit the process or panic on a failed command: failures are counted and logged, and the
//!   next cycle tries again.

pub mod data;
#[cfg(feature = "kube")]
pub mod pods;
pub mod process;
pub mod reclaimer;
pub mod retry;
pub mod scheduler;
mod trace;

pub use data::DataReaperConfig;
#[cfg(feature = "kube")]
pub use pods::PodReaperConfig;
pub use process::{Cadence, CycleReport, ProcessName, Services, TimedProcess};
pub use reclaimer::{
    DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL, DEFAULT_MAX_RUN_TIME, ReclaimAction, ReclaimError,
    ReclaimReport, ReclaimerConfig,
};
pub use retry::{Backoff, RetryConfig};
