//! pop's read side: pure folds of the global log into in-memory read models (agendas with
//! their AgendaProgress and OperationProgress, customers, resource pools, insights,
//! templates), the indexes the API, the scheduler and the reapers query, and the runner that
//! tails the log with a checkpoint, snapshots and a change feed.
//!
//! This crate must never:
//! - append events: projections only read the log; every change goes through a command;
//! - read a clock into a read model: the models are a deterministic function of the log (the
//!   same events always give the same models, checked by [`ReadModels::fingerprint`]), and
//!   the only timers decide when to snapshot and how long to wait;
//! - re-implement a domain rule: agenda progress is the domain's own `evolve`, summaries its
//!   `rollup::progress_summary`;
//! - crash on events it does not know (a newer replica may write them) — they are skipped and
//!   counted — nor fold past a known event that does not decode: that stops the runner.
//!
//! Map: [`decode`] (stored event → domain event), [`agendas`] and [`configs`] (the models and
//! their indexes), [`models`] (all of them and the fold), [`query`] (visibility and
//! pagination), [`change`] (the change feed's item), [`fnv`] (the checksum and fingerprint hash), [`runner`] (tailing, readiness,
//! read-your-writes, rebuild), [`snapshot`] (the snapshot file).

pub mod agendas;
pub mod change;
pub mod configs;
pub mod decode;
pub mod fnv;
pub mod models;
pub mod phase;
pub mod query;
pub mod runner;
pub mod snapshot;

pub use agendas::{AgendaEntry, AgendaModel, AgendaQuery, CorruptEntry, DetachedProgress};
pub use change::{Change, ChangeKind};
pub use decode::{DecodeError, Decoded, DomainEvent, Skip, decode};
pub use models::{DeletedConfig, FORMAT_VERSION, ReadModels};
pub use phase::Phase;
pub use query::{
    AgendaOrder, Cursor, CursorParseError, MAX_CONFIG_SCANNED_PER_PAGE, MAX_PAGE_SIZE,
    MAX_SCANNED_PER_PAGE, Page, Visibility, VisibleTo,
};
pub use runner::{
    CHANGE_FEED_CAPACITY, ProjectionError, Projections, RebuildProgress, Runner, RunnerConfig,
    Timeout, fold_events, rebuild,
};
pub use snapshot::{SnapshotError, SnapshotInfo, Unusable};
