//! pop's API: transports over the application layer ([`pop_app::App`]) — the axum router, the
//! async-graphql schema (queries, mutations, and subscriptions over graphql-transport-ws,
//! served by [`ws`]), the POP-compatible REST surface ([`rest`]), bearer-token
//! authentication, transport limits, health and Prometheus metrics.
//!
//! What the server calls: [`auth::load_tokens`] (token file, `POP_TOKENS`, the generated admin
//! token of the embedded default), [`AppState::new`] (store, commands, projections handle,
//! tokens, [`ApiConfig`]) and [`router`].
//!
//! This crate must never:
//! - decide a rule: every role check, tenancy filter, validation, id, clock reading and limit
//!   of a use case is `pop_app`'s; a resolver or handler only translates arguments and
//!   results (a transport that needs a rule the other one has asks `pop_app` for it);
//! - append events, update a read model, or feed a subscription: those paths go through
//!   `pop_app`, the store's commands and the projections;
//! - answer an error without `extensions.code` and `extensions.cid` (GraphQL) or POP's
//!   envelope with `code` and `correlationId` (REST);
//! - panic or `unwrap` on a request path, or accept unbounded input: body size, query depth
//!   and complexity, batch sizes and WebSocket limits are bounded in [`config`] and [`ws`].
//!
//! Map: [`config`] (transport limits and knobs), [`dashboard`] (the embedded dashboard and
//! GraphiQL), [`auth`] (tokens to principals), [`request`]
//! (cid, principal and body of an HTTP request), [`error`] (an `AppError` as GraphQL sees it),
//! [`graphql`] (schema: [`graphql::query`], [`graphql::mutation`], [`graphql::subscription`],
//! [`graphql::types`]), [`http`] (routes), [`rest`] (the POP-compatible REST surface under
//! `/pop`), [`ws`] (the graphql-transport-ws server: close codes, connection and operation
//! limits), [`metrics`],
//! [`state`].

pub mod answers;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod request;
pub mod rest;
pub mod serve;
pub mod state;
pub mod ws;

pub use auth::{Principal, Role, Tokens, ensure_admin_token, load_tokens};
pub use config::ApiConfig;
pub use graphql::{PopSchema, build_schema, sdl};
pub use http::{router, router_with};
pub use state::AppState;
