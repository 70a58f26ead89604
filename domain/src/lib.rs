//! pop's domain: what every object, state, rule and formula of DOMAIN.md means, as pure code.
//!
//! This crate must never do IO, spawn tasks, read a clock or draw random numbers: time and ids
//! arrive inside commands, so replaying the same events always gives the same state.

pub mod agenda;
pub mod aggregate;
pub mod backoff;
pub mod binding;
pub mod codec;
pub mod config;
pub mod error;
pub mod model;
pub mod params;
pub mod payload;
pub mod pod_labels;
pub mod reap;
pub mod references;
pub mod rollup;
pub mod scheduling;
pub mod template;
pub mod text;
pub mod validate;
pub mod wire;

pub use aggregate::Aggregate;
pub use codec::{CodecError, EventCodec};
pub use error::{ErrorCode, FieldError, ValidationErrors};
pub use model::*;
pub use params::Params;
pub use payload::Payload;
