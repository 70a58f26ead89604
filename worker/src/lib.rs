//! pop's worker: a resource pool's puller and executor (DOMAIN.md §1, §7, §8).
//!
//! The [`puller`] claims agendas by insight (`getAgenda`), the [`execute`] module runs each
//! agenda's operation DAG with handlers chosen by operation type ([`handler`], [`builtin`],
//! [`local`], [`pod`]), and [`report`] sends progress back (`updateAgendaProgress`). The scheduling
//! rules live in the pure [`plan`] state machine.
//!
//! This crate must never depend on the store, projections or API crates: it speaks to pop
//! only through the public API ([`api::WorkApi`]), like any other resource pool.

pub mod api;
pub mod builtin;
pub mod config;
pub mod execute;
pub mod handler;
pub mod local;
pub mod plan;
pub mod pod;
pub mod puller;
pub mod report;
pub mod trace;
