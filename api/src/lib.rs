//! pop's API: the axum router and the async-graphql schema — queries, mutations and
//! subscriptions (over graphql-transport-ws, served by [`ws`]) over DOMAIN.md's objects —
//! with bearer-token auth, tenancy, read-your-writes (`atLeastPosition`), limits, health and
//! Prometheus metrics.
//!
//! What the server calls: [`auth::load_tokens`] (token file, `POP_TOKENS`, the generated admin
//! token of the embedded default), [`AppState::new`] (store, commands, projections handle,
//! tokens, [`ApiConfig`]) and [`router`].
//!
//! This crate must never:
//! - append events except through `Commands::execute` of a domain command (no raw appends,
//!   no deletes), so every write is decided by the domain against the stream's version;
//! - update a read model, or feed a subscription from the mutation path: reads and
//!   subscriptions come from the projections, which follow the log;
//! - reveal an object to a caller who may not see it: reads filter by the caller's customers,
//!   and writes to invisible objects answer NOT_FOUND exactly like missing ones;
//! - leak store or codec internals to clients (they are logged, the client gets INTERNAL), or
//!   answer an error without `extensions.code` and `extensions.cid`;
//! - panic or `unwrap` on a request path, or accept unbounded input: body size, query depth and
//!   complexity, page sizes, batch sizes and subscriber buffers are all bounded in [`config`].
//!
//! Map: [`config`] (limits and knobs), [`auth`] (tokens, principals, roles), [`error`] (codes
//! and what leaks), [`graphql`] (schema: [`graphql::query`], [`graphql::mutation`],
//! [`graphql::subscription`], [`graphql::types`]), [`feed`] (one dispatcher routing the change
//! feed by key into the subscribers' bounded buffers, with lag signalling), [`http`] (routes), [`rest`] (the POP-compatible
//! REST surface under `/pop`, over the resolvers' own functions), [`ws`] (the graphql-transport-ws
//! server: close codes, connection and operation limits), [`metrics`], [`scheduler`] (tops insight queues up from
//! their `added` agendas), [`state`].

pub mod auth;
pub mod config;
pub mod error;
pub mod feed;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod rest;
pub mod scheduler;
pub mod state;
pub mod ws;

pub use auth::{Principal, Role, Tokens, ensure_admin_token, load_tokens};
pub use config::ApiConfig;
pub use graphql::{PopSchema, build_schema, sdl};
pub use http::{router, router_with};
pub use state::AppState;
