//! The async-graphql schema: queries ([`query`]), mutations ([`mutation`]), subscriptions
//! ([`subscription`]), the object shapes ([`types`]), and what every resolver shares: the
//! caller, role checks, read-your-writes waits, page bounds, and the extension that gives
//! every error a code and a cid.

pub mod insight_stats;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;
pub(crate) mod work;

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextRequest, NextSubscribe,
};
use async_graphql::futures_util::StreamExt;
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::{Context, Request, Response, Schema, ServerError, ServerResult};
use pop_domain::error::ErrorCode;
use pop_projections::{Cursor, Projections};
use pop_store::{Commands, EventStore, Position};

use crate::auth::{Action, Principal};
use crate::config::{ApiConfig, DEFAULT_PAGE_SIZE, MAX_CID_LENGTH};
use crate::error::{ApiError, ApiResult, ext};
use crate::feed::Dispatcher;
use crate::metrics;

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;

/// The schema type.
pub type PopSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What resolvers need from the server. One per schema.
pub struct Services {
    pub store: Arc<dyn EventStore>,
    pub commands: Arc<Commands>,
    pub projections: Projections,
    pub config: ApiConfig,
    /// Routes the projections' changes to the subscriptions (one reader of the feed).
    pub feed: Dispatcher,
    /// Agendas this replica is claiming or has just claimed (`getAgenda`).
    pub claims: work::ClaimBook,
}

/// The authenticated caller of one request (HTTP) or connection (WebSocket), and the
/// correlation id its errors and events carry unless a mutation names its own.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub cid: String,
}

/// Builds the schema over `services` with the configured limits.
pub fn build_schema(services: Arc<Services>) -> PopSchema {
    let config = services.config.clone();
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(services)
        .extension(Normalize)
        .limit_depth(config.max_depth)
        .limit_complexity(config.max_complexity)
        .finish()
}

/// The schema's SDL (for the golden test and for clients' code generators).
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).finish().sdl()
}

pub(crate) fn services<'a>(ctx: &Context<'a>) -> ApiResult<&'a Arc<Services>> {
    ctx.data::<Arc<Services>>()
        .map_err(|_| ApiError::new(ErrorCode::Internal, "the schema was built without services"))
}

/// The caller; UNAUTHENTICATED when the transport attached none.
pub(crate) fn caller<'a>(ctx: &Context<'a>) -> ApiResult<&'a Caller> {
    ctx.data::<Caller>().map_err(|_| ApiError::unauthenticated())
}

/// The caller, if its role allows `action` (FORBIDDEN otherwise: a role check reveals
/// nothing about any object).
pub(crate) fn authorize<'a>(ctx: &Context<'a>, action: Action) -> ApiResult<&'a Caller> {
    authorize_caller(caller(ctx)?, action)
}

/// The role check of [`authorize`] for a caller the transport already has (the REST surface).
pub(crate) fn authorize_caller(caller: &Caller, action: Action) -> ApiResult<&Caller> {
    if !caller.principal.role.allows(action) {
        return Err(ApiError::forbidden(format!(
            "principal {:?} has role {} and may not {}",
            caller.principal.name,
            caller.principal.role.as_str(),
            action.as_str()
        ))
        .with_cid(&caller.cid));
    }
    Ok(caller)
}

/// The correlation id of a mutation: the one the client gave (checked), else the request's.
pub(crate) fn mutation_cid(caller: &Caller, given: Option<String>) -> ApiResult<String> {
    match given.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()) {
        None => Ok(caller.cid.clone()),
        Some(c) if c.chars().count() > MAX_CID_LENGTH || c.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                "cid",
                format!("a cid is at most {MAX_CID_LENGTH} printable characters"),
            )
            .with_cid(&caller.cid))
        }
        Some(c) => Ok(c),
    }
}

/// Parses a client's log position.
pub(crate) fn parse_position(field: &str, text: &str) -> ApiResult<Position> {
    text.trim().parse().map_err(|e| ApiError::invalid(field, format!("{e}")))
}

/// Read-your-writes: waits (bounded) until the read models reach `at_least`. A position
/// beyond the log's head can never be reached and is refused at once; one not reached in
/// time is TIMEOUT.
pub(crate) async fn wait_for(services: &Services, at_least: Option<&str>) -> ApiResult<()> {
    let Some(text) = at_least else { return Ok(()) };
    let position = parse_position("atLeastPosition", text)?;
    if services.projections.applied() >= position {
        return Ok(());
    }
    let head = services.store.head().await.map_err(|e| crate::error::store("the log head", &e))?;
    if position > head {
        return Err(ApiError::invalid(
            "atLeastPosition",
            format!("position {position} is beyond the end of the log ({head})"),
        ));
    }
    services.projections.wait_for(position, services.config.read_wait).await.map_err(|t| {
        ApiError::timeout(format!(
            "atLeastPosition: the read models did not reach position {} within {:?} (they are at {}); retry",
            t.wanted, t.waited, t.applied
        ))
    })
}

/// The page size a list uses: `first` when given (1..=max, else BAD_REQUEST).
pub(crate) fn page_size(first: Option<i32>, max: usize) -> ApiResult<usize> {
    match first {
        None => Ok(DEFAULT_PAGE_SIZE.min(max)),
        Some(n) if n >= 1 && (n as usize) <= max => Ok(n as usize),
        Some(n) => Err(ApiError::bad_request(format!("first: {n} is outside 1..={max}"))),
    }
}

/// Parses an `after` cursor of a read-model list.
pub(crate) fn parse_cursor(after: Option<&str>) -> ApiResult<Option<Cursor>> {
    after
        .map(|a| a.parse::<Cursor>().map_err(|e| ApiError::invalid("after", e.to_string())))
        .transpose()
}

/// Gives every error of a response `extensions.code` (errors async-graphql raised itself —
/// parse errors, unknown fields, depth and complexity limits, bad argument values — are
/// BAD_REQUEST) and `extensions.cid`, and records request metrics.
struct Normalize;

impl ExtensionFactory for Normalize {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(NormalizeExtension::default())
    }
}

/// One per request (the factory makes one each time). The request's own data (where the
/// HTTP handler puts the caller) is not visible to the `request` hook, so `prepare_request`
/// remembers the cid for it.
#[derive(Default)]
struct NormalizeExtension {
    cid: std::sync::Mutex<Option<String>>,
}

fn normalize(errors: &mut [ServerError], cid: Option<&str>) {
    for error in errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get(ext::CODE).is_none() {
            extensions.set(ext::CODE, ErrorCode::BadRequest.as_str());
        }
        if let (None, Some(cid)) = (extensions.get(ext::CID), cid) {
            extensions.set(ext::CID, cid);
        }
        if let Some(async_graphql::Value::String(code)) = extensions.get(ext::CODE) {
            metrics::error(code);
        }
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for NormalizeExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let mut response = next.run(ctx).await;
        let remembered = self.cid.lock().ok().and_then(|mut c| c.take());
        let cid = remembered.or_else(|| ctx.data_opt::<Caller>().map(|c| c.cid.clone()));
        normalize(&mut response.errors, cid.as_deref());
        metrics::request(started.elapsed(), response.errors.is_empty());
        response
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(caller) = request
            .data
            .get(&std::any::TypeId::of::<Caller>())
            .and_then(|d| d.downcast_ref::<Caller>())
            && let Ok(mut cid) = self.cid.lock()
        {
            *cid = Some(caller.cid.clone());
        }
        next.run(ctx, request).await
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let cid = ctx.data_opt::<Caller>().map(|c| c.cid.clone());
        next.run(ctx, stream)
            .map(move |mut response| {
                normalize(&mut response.errors, cid.as_deref());
                response
            })
            .boxed()
    }
}
