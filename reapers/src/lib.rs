//! pop's timed processes (DOMAIN.md §9), so far the [`reclaimer`] (AgendaReclaimer): agendas
//! handed out under a lease whose holder stopped reporting come back to the queue, or end
//! COMPLETE/failed when their attempts are used up.
//!
//! Each process is a pure `plan(now, &ReadModels, &config) -> Vec<action>` plus an idempotent
//! `execute` that issues ordinary domain commands through the store's `Executor`, and a loop
//! that runs them every interval with a maximum run time per cycle and a dry-run switch.
//!
//! This crate must never:
//! - append events except through domain commands (`Executor::execute`): every action is a
//!   command the domain's `decide` judges against the stream's current state, so a plan made
//!   from a slightly stale read model can only be refused, never do harm;
//! - read a clock for domain time: `now` is passed in (to `plan`/`execute` by the caller, to
//!   the loop as a clock function), so plans are reproducible and tests pick any instant;
//!   tokio timers only pace the loop and bound a cycle's run time;
//! - update a read model: the projections fold the events its commands cause, like any other;
//! - exit the process or panic on a failed command: failures are counted and logged, and the
//!   next cycle tries again.

pub mod reclaimer;

pub use reclaimer::{
    DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL, DEFAULT_MAX_RUN_TIME, ReclaimAction, ReclaimError,
    ReclaimReport, ReclaimerConfig,
};
