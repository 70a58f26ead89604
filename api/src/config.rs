//! The API's knobs: the transports' own bounds (body size, query depth, cost and response bytes) as named
//! constants with the reason for their size, and [`ApiConfig`], which also carries the
//! application layer's knobs ([`pop_app::AppConfig`]) so the server configures both in one
//! place. The use cases' bounds are re-exported from [`pop_app::limits`].

use std::time::Duration;

pub use pop_app::limits::{
    DEFAULT_LEASE, DEFAULT_MAX_LIVE_AGENDAS_PER_CUSTOMER, DEFAULT_MAX_LIVE_BYTES_PER_CUSTOMER,
    DEFAULT_MAX_LOG_BYTES_PER_CUSTOMER, DEFAULT_MAX_PARAMS_BYTES, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_RETAINED_BYTES_PER_CUSTOMER, DEFAULT_MAX_SUBSCRIPTIONS_PER_PRINCIPAL,
    DEFAULT_PAGE_SIZE, DEFAULT_READ_WAIT, DEFAULT_SUBSCRIBER_BUFFER, MAX_CID_LENGTH,
    MAX_EVENT_PAGE_SIZE, MAX_GET_AGENDA_COUNT, MAX_GET_AGENDA_WAIT_SECONDS, MAX_LEASE,
    MAX_PAGE_SIZE, MAX_REASON_LENGTH, MAX_RERUN_PARAMS, MAX_RESYNC_ITEMS, MAX_RESYNC_SCAN,
    MAX_SUBSCRIBERS, MIN_LEASE,
};

/// Largest request body (decompressed) accepted on `POST /graphql` and the REST routes. The
/// largest legitimate request is a report carrying every result its agenda can keep: 4 MiB
/// of results per agenda ([`pop_app::limits`]), which POP's clients send as JSON text inside a
/// string (its escaping adds up to a third), with the operations' params and diagnostics
/// beside them; 8 MiB takes that whole, and a batch of submissions of ordinary size. It was
/// 2 MiB, under what an agenda keeps, so a POP executor's report of five results of 450 KB
/// each was refused 413 and sent again until the agenda timed out (popclient57 M1). POP ran
/// behind API Gateway and Lambda, which took 6 MB. Memory stays bounded by
/// [`MAX_UPLOADS_PER_PRINCIPAL`] bodies arriving at once per token.
pub const MAX_REQUEST_BODY_BYTES: usize = 8 << 20;

/// Longest GraphQL document (the `query` text of one operation, over HTTP or WebSocket).
/// Parsing and validating a document run before any cost bound and without yielding the
/// worker thread: 2 MB documents (400,000 fragment spreads, or 220,000 aliases) held a worker
/// for 15–20 s each and two froze every endpoint, and 999,000 unknown fields made as many
/// errors, 1.9 GB of memory and a 179 MB answer (hostile15). The dashboard's largest document
/// is under 4 KiB and GraphiQL's introspection about 3 KiB; values, however large, go in
/// `variables` (a submitted agenda is `$a: JSON!`), which this does not count.
pub const MAX_QUERY_BYTES: usize = 64 << 10;

/// Most errors one GraphQL response lists: past it the rest are counted in one more error.
/// Validation reports every occurrence of a mistake, and a document within
/// [`MAX_QUERY_BYTES`] may still make thousands.
pub const MAX_RESPONSE_ERRORS: usize = 50;

/// Deepest selection set a query may have. The deepest data query (summary → progress list
/// → operation progress → diagnostic events → fields) is 5 levels, but GraphiQL's own
/// introspection query nests `ofType` to depth 13; 16 admits it and still refuses queries
/// that nest introspection types without end.
pub const MAX_QUERY_DEPTH: usize = 16;

/// Most cost points one HTTP body (every operation of a batch together) or one WebSocket
/// operation may cost ([`crate::graphql::cost`]): one per selected field, a paged list
/// `first` × its selection, a list inside an object 10 × its selection, a read-model scan
/// 100 more. The dashboard's largest query (200 insights with their counts) costs about
/// 4,000, a page of 50 progress entries about 1,000, GraphiQL's introspection about 150;
/// 50,000 admits ten times that while refusing the request that repeats a 500-item page
/// of agendas and their operations through 40 aliases (240,000) or 1,000 progress summaries
/// (100,000 and more).
pub const MAX_QUERY_COMPLEXITY: usize = 50_000;

/// Most bytes of JSON data one `POST /graphql` response may hold (every operation of a batch
/// together); past it the response is one `RESPONSE_TOO_LARGE` error and no more fields are
/// resolved. A page of 100 agendas of 100 KiB fits; 16 MiB times the few expensive requests
/// a principal may run at once stays far inside the deploy's 2 GiB, even counting the
/// in-memory form of the value (a few times its JSON).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// How long a `POST /graphql` body may run by default before it is stopped with
/// `DEADLINE_EXCEEDED`. Dashboard and worker requests answer in milliseconds; an
/// `atLeastPosition` read may wait up to its own 5 s default. 20 s leaves room for both
/// and stops a request long before a liveness probe's patience (Kubernetes: 3 × 10 s).
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// How much longer than its deadline a request may wait on something (a store write, a
/// read-your-writes wait) before the handler stops waiting and answers DEADLINE_EXCEEDED.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// Longest deadline a server may configure.
pub const MAX_REQUEST_DEADLINE: Duration = Duration::from_secs(120);

/// Expensive requests (see [`crate::graphql::cost::MIN_EXPENSIVE_COST`]) one principal may
/// run at once by default. With a worker thread per core, two hostile requests of one token
/// can no longer occupy a 2-core server's every worker between their yields, and a
/// dashboard's requests are cheap enough never to count.
pub const DEFAULT_MAX_EXPENSIVE_PER_PRINCIPAL: usize = 2;

/// Most principals a token file or `POP_TOKENS` may hold: every request compares the
/// presented token against each one (in constant time per token).
pub const MAX_TOKENS: usize = 1_000;

/// Largest token file read, in bytes.
pub const MAX_TOKEN_FILE_BYTES: u64 = 1 << 20;

/// Longest [`crate::AppState::shutdown`] waits for the open connections to send their
/// 1001 close frame and see the client's answer. The frame is a few bytes and the answer one
/// round trip; a client that has not answered by then is dropped. Well inside the server's
/// 10 s drain and Kubernetes' default 30 s grace period.
pub const SHUTDOWN_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Request bodies one principal may be sending at once. A body is read before its request is
/// served, outside the request deadline, and its connection does not count as idle: a client
/// that declared a large body and sent it a byte at a time held its memory for minutes, and
/// 200 such connections of one token took 500 MB (hostile18). The rest are refused BUSY (429).
pub const MAX_UPLOADS_PER_PRINCIPAL: usize = 16;

/// Request bodies at least this long are paced by [`ApiConfig::max_upload_bytes_per_second`];
/// smaller ones (reports, claims, reads) cost their request more than their bytes.
pub const PACED_BODY_BYTES: usize = 16 << 10;

/// The default of [`ApiConfig::max_upload_bytes_per_second`]: 4 MiB/s of large bodies per
/// token, past a burst of [`UPLOAD_BURST_SECONDS`] of it (or one largest body). A refused or
/// accepted body of megabytes costs the server its reading, parsing, checks and measuring on
/// its two cores whatever becomes of it: looping 2 MB bodies that were all refused held every
/// tenant's reads at p99 0.2-1 s (hostile61 M1, rehostile61). 4 MiB/s is 200 batches of 100
/// agendas of 200 B a second, past what the server commits.
pub const DEFAULT_MAX_UPLOAD_BYTES_PER_SECOND: u64 = 4 << 20;

/// How many seconds of [`ApiConfig::max_upload_bytes_per_second`] a token may send at once.
pub const UPLOAD_BURST_SECONDS: u64 = 4;

/// Longest a body over its token's pace waits before it is read on; past it, BUSY (429).
pub const MAX_UPLOAD_PACE_WAIT: Duration = Duration::from_secs(10);

/// How long a request body may take to arrive, whole: a body at the 8 MiB limit needs about
/// 280 KB/s; the rest are refused (408) and their connection closed.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How the API behaves; the defaults are what `pop serve` uses.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// See [`MAX_REQUEST_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// How many bytes of request bodies of at least [`PACED_BODY_BYTES`] one token may send a
    /// second (see [`DEFAULT_MAX_UPLOAD_BYTES_PER_SECOND`]); at least 1.
    pub max_upload_bytes_per_second: u64,
    /// See [`BODY_READ_TIMEOUT`]; within 100 ms..=[`MAX_REQUEST_DEADLINE`].
    pub body_read_timeout: Duration,
    /// See [`MAX_QUERY_DEPTH`].
    pub max_depth: usize,
    /// See [`MAX_QUERY_COMPLEXITY`].
    pub max_complexity: usize,
    /// See [`MAX_RESPONSE_BYTES`]; at most that.
    pub max_response_bytes: usize,
    /// See [`DEFAULT_REQUEST_DEADLINE`]; within 10 ms..=[`MAX_REQUEST_DEADLINE`].
    pub request_deadline: Duration,
    /// See [`DEFAULT_MAX_EXPENSIVE_PER_PRINCIPAL`]; within 1..=64.
    pub max_expensive_per_principal: usize,
    /// See [`MAX_PAGE_SIZE`]; at most that.
    pub max_page_size: usize,
    /// How long an `atLeastPosition` read waits at most (capped by the projections'
    /// `MAX_WAIT`).
    pub read_wait: Duration,
    /// How long a POP REST request waits for the read models at start (50 s: POP's clients
    /// never read `Retry-After`, and some of their calls are never retried).
    pub pop_catch_up_wait: Duration,
    /// See [`DEFAULT_SUBSCRIBER_BUFFER`]; at least 1.
    pub subscriber_buffer: usize,
    /// Whether GraphiQL is served on `GET /graphql`.
    pub graphiql: bool,
    /// See [`DEFAULT_LEASE`]; within [`MIN_LEASE`]..=[`MAX_LEASE`].
    pub lease: Duration,
    /// See [`pop_app::AppConfig::max_wait`].
    pub max_wait: Duration,
    /// See [`pop_app::limits::DEFAULT_MAX_SUBSCRIPTIONS_PER_PRINCIPAL`].
    pub max_subscriptions_per_principal: usize,
    /// See [`pop_app::AppConfig::metrics_insight_labels`].
    pub metrics_insight_labels: bool,
    /// See [`pop_app::limits::DEFAULT_MAX_LIVE_AGENDAS_PER_CUSTOMER`].
    pub max_live_agendas_per_customer: usize,
    /// See [`pop_app::limits::DEFAULT_MAX_LIVE_BYTES_PER_CUSTOMER`].
    pub max_live_bytes_per_customer: u64,
    /// See [`pop_app::limits::DEFAULT_MAX_RETAINED_BYTES_PER_CUSTOMER`].
    pub max_retained_bytes_per_customer: u64,
    /// See [`pop_app::limits::DEFAULT_MAX_LOG_BYTES_PER_CUSTOMER`].
    pub max_log_bytes_per_customer: u64,
    /// See [`pop_app::limits::DEFAULT_MAX_PAYLOAD_BYTES`].
    pub max_payload_bytes: usize,
    /// See [`pop_app::limits::DEFAULT_MAX_PARAMS_BYTES`].
    pub max_params_bytes: usize,
    /// See [`pop_app::AppConfig::retries`].
    pub retries: bool,
    /// See [`pop_app::AppConfig::retry_backoff`].
    pub retry_backoff: pop_domain::backoff::Backoff,
    /// Whether async-graphql's tracing extension runs (a span per operation, its parse,
    /// validation and execution, and per resolved field). Off by default: it costs a span per
    /// field, which only pays when traces are exported (`pop serve --otlp-endpoint`).
    pub graphql_tracing: bool,
    /// Answer errors under `/pop` with HTTP 200 and POP's error envelope (`errorResponse`,
    /// its `responseCode` the status pop would have answered), as POP's own endpoints answered
    /// service errors: POP's Java clients read no body on a 4xx or 5xx and log the status
    /// alone, without pop's code, message and cid. Where POP had no error it answers as POP
    /// did: a GET of an id that matches nothing is an empty list, a DELETE of one an empty
    /// answer. Off by default: honest statuses.
    pub pop_errors_in_body: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        let app = pop_app::AppConfig::default();
        ApiConfig {
            max_body_bytes: MAX_REQUEST_BODY_BYTES,
            max_upload_bytes_per_second: DEFAULT_MAX_UPLOAD_BYTES_PER_SECOND,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_depth: MAX_QUERY_DEPTH,
            max_complexity: MAX_QUERY_COMPLEXITY,
            max_response_bytes: MAX_RESPONSE_BYTES,
            request_deadline: DEFAULT_REQUEST_DEADLINE,
            max_expensive_per_principal: DEFAULT_MAX_EXPENSIVE_PER_PRINCIPAL,
            max_page_size: app.max_page_size,
            read_wait: app.read_wait,
            pop_catch_up_wait: app.pop_catch_up_wait,
            subscriber_buffer: app.subscriber_buffer,
            graphiql: true,
            lease: app.lease,
            max_wait: app.max_wait,
            max_subscriptions_per_principal: app.max_subscriptions_per_principal,
            metrics_insight_labels: app.metrics_insight_labels,
            max_live_agendas_per_customer: app.max_live_agendas_per_customer,
            max_live_bytes_per_customer: app.max_live_bytes_per_customer,
            max_retained_bytes_per_customer: app.max_retained_bytes_per_customer,
            max_log_bytes_per_customer: app.max_log_bytes_per_customer,
            max_payload_bytes: app.max_payload_bytes,
            max_params_bytes: app.max_params_bytes,
            retries: app.retries,
            retry_backoff: app.retry_backoff,
            graphql_tracing: false,
            pop_errors_in_body: false,
        }
    }
}

impl ApiConfig {
    /// The config with every knob clamped into its bounds.
    pub(crate) fn bounded(mut self) -> ApiConfig {
        self.max_body_bytes = self.max_body_bytes.clamp(1, MAX_REQUEST_BODY_BYTES);
        self.max_upload_bytes_per_second = self.max_upload_bytes_per_second.max(1);
        self.body_read_timeout =
            self.body_read_timeout.clamp(Duration::from_millis(100), MAX_REQUEST_DEADLINE);
        self.max_depth = self.max_depth.clamp(1, MAX_QUERY_DEPTH);
        self.max_complexity = self.max_complexity.clamp(1, MAX_QUERY_COMPLEXITY);
        self.max_response_bytes = self.max_response_bytes.clamp(1, MAX_RESPONSE_BYTES);
        self.request_deadline =
            self.request_deadline.clamp(Duration::from_millis(10), MAX_REQUEST_DEADLINE);
        self.max_expensive_per_principal = self.max_expensive_per_principal.clamp(1, 64);
        let app = self.app();
        self.max_page_size = app.max_page_size;
        self.read_wait = app.read_wait;
        self.pop_catch_up_wait = app.pop_catch_up_wait;
        self.subscriber_buffer = app.subscriber_buffer;
        self.lease = app.lease;
        self.max_wait = app.max_wait;
        self.max_subscriptions_per_principal = app.max_subscriptions_per_principal;
        self.max_live_agendas_per_customer = app.max_live_agendas_per_customer;
        self.max_live_bytes_per_customer = app.max_live_bytes_per_customer;
        self.max_retained_bytes_per_customer = app.max_retained_bytes_per_customer;
        self.max_log_bytes_per_customer = app.max_log_bytes_per_customer;
        self.max_payload_bytes = app.max_payload_bytes;
        self.max_params_bytes = app.max_params_bytes;
        self
    }

    /// The application layer's part, bounded.
    pub fn app(&self) -> pop_app::AppConfig {
        pop_app::AppConfig {
            max_page_size: self.max_page_size,
            read_wait: self.read_wait,
            pop_catch_up_wait: self.pop_catch_up_wait,
            subscriber_buffer: self.subscriber_buffer,
            lease: self.lease,
            max_wait: self.max_wait,
            max_subscriptions_per_principal: self.max_subscriptions_per_principal,
            metrics_insight_labels: self.metrics_insight_labels,
            max_live_agendas_per_customer: self.max_live_agendas_per_customer,
            max_live_bytes_per_customer: self.max_live_bytes_per_customer,
            max_retained_bytes_per_customer: self.max_retained_bytes_per_customer,
            max_log_bytes_per_customer: self.max_log_bytes_per_customer,
            max_payload_bytes: self.max_payload_bytes,
            max_params_bytes: self.max_params_bytes,
            retries: self.retries,
            retry_backoff: self.retry_backoff.clone(),
        }
        .bounded()
    }
}
