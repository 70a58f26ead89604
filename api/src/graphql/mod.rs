//! The async-graphql schema: queries ([`query`]), mutations ([`mutation`]), subscriptions
//! ([`subscription`]), the object shapes ([`types`]), and what every resolver shares: the
//! application ([`pop_app::App`]) and the caller the transport attached, and the extension
//! that gives every error a code and a cid. Resolvers translate arguments and results; every
//! rule is the application layer's.

pub mod agenda_stats;
pub mod audit;
pub mod cost;
pub mod insight_stats;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextRequest, NextSubscribe,
};
use async_graphql::futures_util::StreamExt;
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::{Context, Request, Response, Schema, ServerError, ServerResult};
use pop_app::{App, AppError, Caller};

use crate::config::ApiConfig;
use crate::error::{Code, GqlResult, ext};
use crate::metrics;

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;

/// The schema type.
pub type PopSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema over `app` with the configured limits; `running` counts each principal's
/// expensive requests (the HTTP transport takes a permit of it early for a large document).
pub fn build_schema(app: App, config: &ApiConfig, running: Arc<cost::Running>) -> PopSchema {
    let builder = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(app)
        .extension(Normalize)
        .extension(cost::Limits {
            max_cost: config.max_complexity,
            max_expensive_per_principal: config.max_expensive_per_principal,
            running,
        })
        .limit_depth(config.max_depth);
    // Only when traces are exported: otherwise it would wrap every field for spans nobody
    // records.
    let builder = if config.graphql_tracing {
        builder.extension(async_graphql::extensions::Tracing)
    } else {
        builder
    };
    builder.finish()
}

/// The schema's SDL (for the golden test and for clients' code generators).
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).finish().sdl()
}

/// The application and the caller of a resolver; UNAUTHENTICATED when the transport attached
/// no caller.
pub(crate) fn context<'a>(ctx: &Context<'a>) -> GqlResult<(&'a App, &'a Caller)> {
    let app = ctx.data::<App>().map_err(|_| {
        AppError::new(Code::Internal, "the schema was built without the application")
    })?;
    let caller = ctx.data::<Caller>().map_err(|_| AppError::unauthenticated())?;
    Ok((app, caller))
}

/// Gives every error of a response `extensions.code` (errors async-graphql raised itself —
/// parse errors, unknown fields, the depth limit, bad argument values — are
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

/// What a time a client sent must look like, said after async-graphql's own words when a
/// `DateTime` does not parse (auditor59 L4: "Failed to parse \"DateTime\": premature end of
/// input", naming neither the field nor the format).
const DATE_TIME_HINT: &str = "a DateTime is an RFC 3339 time with its offset, e.g. \
                              \"2026-12-07T20:31:20Z\" or \"2026-12-07T21:31:20+01:00\"";

fn normalize(errors: &mut [ServerError], cid: Option<&str>) {
    for error in errors {
        let date_time =
            error.extensions.is_none() && error.message.starts_with("Failed to parse \"DateTime\"");
        if date_time {
            error.message = format!("{}: {DATE_TIME_HINT}", error.message);
        }
        let extensions = error.extensions.get_or_insert_with(Default::default);
        // The as-of reads' time is the one DateTime inside an input object: named as a field.
        if date_time && error.message.contains("(occurred while parsing \"AsOfInput\")") {
            let problem = async_graphql::Value::Object(
                [
                    (async_graphql::Name::new("field"), async_graphql::Value::from("asOf.time")),
                    (
                        async_graphql::Name::new("message"),
                        async_graphql::Value::from(error.message.clone()),
                    ),
                ]
                .into_iter()
                .collect(),
            );
            extensions.set(ext::PROBLEMS, async_graphql::Value::List(vec![problem]));
        }
        if extensions.get(ext::CODE).is_none() {
            extensions.set(ext::CODE, Code::BadRequest.as_str());
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
        let (mut response, waited) = pop_app::measuring_waits(next.run(ctx)).await;
        let remembered = self.cid.lock().ok().and_then(|mut c| c.take());
        let cid = remembered.or_else(|| ctx.data_opt::<Caller>().map(|c| c.cid.clone()));
        normalize(&mut response.errors, cid.as_deref());
        // A getAgenda's wait for work is not the server's latency: an idle worker's long
        // polls read as 5 s requests on a quiet farm (newcomer55 M2).
        metrics::request(started.elapsed().saturating_sub(waited), response.errors.is_empty());
        response
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let caller = request
            .data
            .get(&std::any::TypeId::of::<Caller>())
            .and_then(|d| d.downcast_ref::<Caller>());
        if let Some(caller) = caller
            && let Ok(mut cid) = self.cid.lock()
        {
            *cid = Some(caller.cid.clone());
        }
        // Over HTTP and WebSocket alike (queries, mutations, subscriptions): nothing is
        // answered from read models still loading the log (`App::serving`).
        // (A WebSocket's caller is its session's data, not the request's.)
        // Borrowed, not cloned: every request passes here, and only one that must wait uses it.
        let cid = caller.or_else(|| ctx.data_opt::<Caller>()).map(|c| c.cid.as_str());
        if let (Some(cid), Some(app)) = (cid, ctx.data_opt::<App>()) {
            app.serving(cid).await.map_err(cost::server_error)?;
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
