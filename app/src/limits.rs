//! The bounds every use case keeps, each a named constant with the reason for its size, and
//! [`AppConfig`], the knobs a server (or a test) may choose within them. Transport limits (body
//! size, query depth and complexity, WebSocket connections) live with the transports.

use std::time::Duration;

/// Items a list returns when the client does not say (`first`).
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Most items a client may ask for in one page. The projections cap a page at
/// `pop_projections::MAX_PAGE_SIZE` (1,000); this keeps one response well under a few MiB
/// with 500 agendas of a few KiB each.
pub const MAX_PAGE_SIZE: usize = 500;

/// Most events `agendaEvents`/`events` return in one page: events can be up to 1 MiB each,
/// so this is lower than the read-model page size.
pub const MAX_EVENT_PAGE_SIZE: usize = 200;

/// Longest an `atLeastPosition` read waits for the projections by default. A healthy replica
/// applies a write within milliseconds; seconds of lag mean something is wrong, and the client
/// should see that as an error rather than hang.
pub const DEFAULT_READ_WAIT: Duration = Duration::from_secs(5);

/// How long a POP REST request waits for the read models to catch up with the log at start
/// before it is UNAVAILABLE ([`crate::App::serving_within`]; other requests wait `read_wait`):
/// under the 60 s a proxy in front (nginx, a cloud load balancer) commonly allows.
pub const POP_CATCH_UP_WAIT: Duration = Duration::from_secs(50);

/// Changes one follower may have queued before it is told it lagged (default). A dashboard
/// renders one update per change; 256 covers a burst of a few hundred updates on one
/// customer without a resync, at a few hundred bytes per queued change.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 256;

/// Most live follows (subscriptions) the server serves at once (all connections together).
/// Each holds a buffer of up to [`DEFAULT_SUBSCRIBER_BUFFER`] queued changes and an entry in
/// the feed's routing maps; 50,000 is five times the 10,000-subscriber fan-out the server is
/// measured at (BENCHMARKS.md), and keeps the worst case (every buffer full) to a few hundred
/// MiB of queued pointers. Past it a new subscription is refused with a clear error.
pub const MAX_SUBSCRIBERS: usize = 50_000;

/// Most live follows one principal may have at once, and one customer with all its
/// principals together (default): their share of [`MAX_SUBSCRIBERS`], so neither one token
/// (one user filled all 50,000 with 505 connections) nor one customer's many tokens
/// (hostile34: ten at their share filled it) can lock every other customer's dashboards out.
/// A dashboard follows a handful; 5,000 is a tenth of the bound, so it takes ten customers at
/// their share together to fill it.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_PRINCIPAL: usize = 5_000;

/// Most live (not COMPLETE) agendas one customer may have at once (default); past it a
/// submit is refused with QUOTA_EXCEEDED. Every live agenda is held in the read models of
/// every replica (and replayed into them after a restart), so one customer must not be able
/// to fill memory for all: an ordinary agenda (a few operations, small payloads) costs tens
/// of KiB there, so 20,000 stay within a few hundred MiB of the deploy's 2 GiB. (Agendas
/// near the 1 MiB event limit cost ~8 MiB each: [`DEFAULT_MAX_LIVE_BYTES_PER_CUSTOMER`]
/// bounds those.)
pub const DEFAULT_MAX_LIVE_AGENDAS_PER_CUSTOMER: usize = 20_000;

/// Most bytes (as compact JSON) one customer's live agendas may hold together, their
/// definitions and what they keep of reports (results, params, diagnostics, messages)
/// (default); past it a submit or a rerun is refused with QUOTA_EXCEEDED and a due retry
/// waits; past twice it an expansion is refused too, and reports keep nothing new
/// (`App::over_memory_quota`, `AgendaState::keep_nothing_new`). Live agendas are held
/// whole in every replica's read models, at about eight times their JSON size (a 0.86 MB
/// agenda costs ~7.3 MB of RSS), so 64 MiB bounds one customer's live agendas to ~550 MiB
/// in the deploy's 2 GiB however large each is; the count quota
/// ([`DEFAULT_MAX_LIVE_AGENDAS_PER_CUSTOMER`]) bounds the many small ones.
pub const DEFAULT_MAX_LIVE_BYTES_PER_CUSTOMER: u64 = 64 << 20;

/// Most bytes one customer's finished (COMPLETE) agendas may hold in memory together
/// (default): their settled bodies (compressed JSON: results, params, diagnostics kept) and
/// about 512 B each for their entries and index keys. Past it a submit or a rerun is refused
/// with QUOTA_EXCEEDED, and a due retry waits (a rerun refills a finished agenda: hostile50
/// H1), until the data reaper frees some: it removes finished agendas older than its
/// `--agenda-reap-age` (3 days by default), oldest first, up to a batch (2,000 by default,
/// `--reaper-batch-size`) every `--data-reap-interval` (4 h), so relief comes at its pace, and
/// a failed agenda whose retry waited past its reap age is reaped unretried, as any finished
/// one. Checked against what has finished when an agenda is admitted; past twice it, reports
/// keep nothing new, as past twice the live quota (hostile51: 1,000 tiny agendas admitted at
/// 0, then finished with 500 KB results, took a customer to 25 times it). Finished agendas
/// are held in every replica's read models like live ones, so without a bound one customer
/// finishing agendas with large results filled the server for all (hostile42 H2: 77 MB in
/// 65 s, each agenda within the live quota). 256 MiB
/// is an eighth of the deploy's 2 GiB (with the live quota, one customer stays well inside
/// the degraded mode's 80 %): about 230,000 small finished agendas (~1.2 KB counted each), or
/// 20 to 60 holding what they may keep at their bounds. For more, raise it with the pod's
/// memory, or lower the reap age. What is counted is the settled bodies and the entries'
/// measured share; a server's resident memory grows more than that while agendas run and
/// finish (allocator slack, the command path's state cache, SQLite's page cache: hostile50
/// saw 5 to 9 MB of RSS per counted MB), so size the pod with room.
pub const DEFAULT_MAX_RETAINED_BYTES_PER_CUSTOMER: u64 = 256 << 20;

/// Most bytes one customer's agendas may take in the log together (default): their events'
/// data and metadata, live and finished, until the data reaper deletes their streams; past it
/// a submit or rerun is refused with QUOTA_EXCEEDED (hostile57 H2: the memory quotas count
/// finished agendas compressed, and one user token wrote 139 MB of log in 21 s with agendas
/// of compressible payloads cancelled at once). 4 GiB: about the log of the 230,000 small
/// finished agendas the retained quota allows, a fifth of the 20 Gi volume deploy/ claims;
/// size it to the volume over the customers that share it. Indexes, hashes and the
/// write-ahead log come on top (about 1 KiB an agenda; README "Sizing").
pub const DEFAULT_MAX_LOG_BYTES_PER_CUSTOMER: u64 = 4 << 30;

/// Most bytes (as compact JSON) one operation's `payload`, or a report's `resultPayload`, may
/// take (default): half the 1 MiB an event may hold, so an agenda of one large operation
/// still fits; payloads are commands and references, not data. Past it: VALIDATION naming
/// the field.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 512 << 10;

/// Most bytes (as compact JSON) one `params` map may take (default): the agenda's, an
/// operation's, or what a report adds. Params are flags and settings, copied into every
/// progress object. Past it: VALIDATION naming the field.
pub const DEFAULT_MAX_PARAMS_BYTES: usize = 256 << 10;

/// Longest window of `agendaStats`' per-minute completions: a day of minutes, one chart.
pub const MAX_STATS_MINUTES: i64 = 1_440;

/// Most completed agendas `agendaStats` reads to count completions per minute: at a
/// sustained 1,000 completions a second an hour's window holds 3.6 million, so the count is a
/// bounded scan (~20 ms for 200,000 index entries) and says `capped` past it.
pub const MAX_STATS_COMPLETIONS: usize = 200_000;

/// Most objects a follow re-sends after it lagged or when it resumes from an `afterPosition`.
/// Past this the lagged item says `truncated` and the client re-lists with `atLeastPosition`.
pub const MAX_RESYNC_ITEMS: usize = 500;

/// Most log events a customer or linkId follow reads to find the agendas that changed while
/// it lagged (or since its `afterPosition`). The read models know what each agenda is now,
/// not when it last changed; the log does. Bounded so one slow follower cannot make the server
/// read the whole log; past it the resync is `truncated`.
pub const MAX_RESYNC_SCAN: usize = 20_000;

/// Most changes a follow of one agenda that has fallen behind takes from its buffer into one
/// item (rendered once: `live::Follow::buffered`). Each is a cheap
/// union of operation names; the bound keeps one item's gathering short when changes keep
/// arriving as fast as it takes them.
pub const MAX_BUFFERED_PER_ITEM: usize = 1_024;

/// Resync scans ([`MAX_RESYNC_SCAN`]) one customer's follows (every token of it together; a
/// follow of several customers', its principal's) run at once; its other follows wait for a
/// turn (hostile52: keyed per token, 20 tokens of one customer ran 20 at once). Each reads up
/// to 20,000 events of every customer's log: 3,000 subscriptions of one token resuming from
/// `afterPosition: "0"` took a minute of CPU together and held other tenants' reads up to 4 s
/// (hostile18). A scan that stalls (the store slow to answer) holds the customer's other
/// follows' resyncs and resumed starts meanwhile.
pub const MAX_RESYNC_SCANS_PER_OWNER: usize = 1;

/// Follow items one customer's follows (every token of it together; a follow of several
/// customers', its principal's) produce at once (`live::Turn`): each reads an agenda's state
/// from the read models and is resolved into its transport's value (a GraphQL value, several
/// times the agenda's JSON) while it holds its turn. Two per core of the deploy's two; the
/// rest of its follows wait, and lag when they wait long (hostile50 H2: 4,000 subscriptions of
/// one customer to agendas of 500 KB results took the server from 540 MB to 3.3 GB, another
/// tenant's submit 83 s).
pub const MAX_DELIVERIES_PER_OWNER: usize = 4;

/// Most agendas one submission request may carry (POP's `createAgenda {"agendas": [...]}`):
/// each is validated, bound and written in turn, and the request body limit bounds them too.
pub const MAX_AGENDAS_PER_REQUEST: usize = 100;

/// Most objects a count (POP's `byCount`) examines; past it the count says it is capped.
pub const MAX_COUNTED: usize = 10_000;

/// Most rerun params accepted in one rerun (the flags are four words; the rest is operation
/// names, which `operationsToReset=a,b` already lists in one param).
pub const MAX_RERUN_PARAMS: usize = 64;

/// Longest cancel reason, in characters: it is stored in the event and shown in progress.
pub const MAX_REASON_LENGTH: usize = 2_000;

/// Longest client-supplied correlation id, in characters: it is copied into every event
/// metadata and error.
pub const MAX_CID_LENGTH: usize = 200;

/// How long a `getAgenda` lease lasts by default before the reclaimer may take the agenda back;
/// every `updateAgendaProgress` renews it. Five minutes lets an executor report between
/// operations of ordinary length without holding a dead executor's work for long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);

/// Shortest lease a server may configure (shorter ones expire before a report can arrive).
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// Longest lease a server may configure: past a day, a dead executor's work waits too long.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// Most agendas one `getAgenda` may ask for: each is one claim command.
pub const MAX_GET_AGENDA_COUNT: usize = 100;

/// Most reports one `updateAgendaProgresses` may carry: each is one command.
pub const MAX_REPORTS_PER_REQUEST: usize = 100;

/// Longest a `getAgenda` may wait for work (`waitSeconds`) before it answers an empty list:
/// well inside the usual 60 s idle timeouts of HTTP proxies and load balancers.
pub const MAX_GET_AGENDA_WAIT_SECONDS: i64 = 30;

/// Most `getAgenda` calls of one principal (token) that wait for work at once on a replica;
/// one more is refused BUSY. Every agenda that enters an insight's queue wakes each call
/// waiting on it, and each runs a claim: thousands of idle waits of one tenant on a shared
/// insight slowed every other tenant's hand-outs from milliseconds to a second (hostile
/// probe; a wait is now woken only by agendas it may take). A puller needs one wait per free
/// slot; a farm of more than this many `pop worker` processes on one token per replica gets
/// BUSY on the rest (they retry after `Retry-After`).
pub const MAX_WAITING_GET_AGENDA_PER_PRINCIPAL: usize = 256;

/// How many queued candidates `getAgenda` looks at per agenda asked for: concurrent callers
/// race for the oldest, and a caller that loses some claims tries the next ones.
pub const GET_AGENDA_CANDIDATES_PER_ITEM: usize = 4;

/// The use cases' knobs; the defaults are what `pop serve` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    /// See [`MAX_PAGE_SIZE`]; at most that.
    pub max_page_size: usize,
    /// How long an `atLeastPosition` read waits at most (capped by the projections'
    /// `MAX_WAIT`).
    pub read_wait: Duration,
    /// How long a POP REST request waits for the read models at start ([`POP_CATCH_UP_WAIT`]).
    pub pop_catch_up_wait: Duration,
    /// See [`DEFAULT_SUBSCRIBER_BUFFER`]; at least 1.
    pub subscriber_buffer: usize,
    /// See [`DEFAULT_LEASE`]; within [`MIN_LEASE`]..=[`MAX_LEASE`].
    pub lease: Duration,
    /// Longest a `getAgenda` actually waits for work, whatever `waitSeconds` asks (at most
    /// [`MAX_GET_AGENDA_WAIT_SECONDS`], the default): lower it behind a proxy whose idle
    /// timeout is shorter. A wait cut short answers an empty list, as a wait that ran out.
    pub max_wait: Duration,
    /// See [`DEFAULT_MAX_SUBSCRIPTIONS_PER_PRINCIPAL`]; within 1..=[`MAX_SUBSCRIBERS`].
    pub max_subscriptions_per_principal: usize,
    /// Whether `/metrics` labels its per-insight series with the insight's id. Off by
    /// default: `/metrics` answers without a token, and insight ids are tenant data (they
    /// often name the customer); the series are then totals over every insight. Turn it on
    /// where only the operator's Prometheus reaches `/metrics`.
    pub metrics_insight_labels: bool,
    /// See [`DEFAULT_MAX_LIVE_AGENDAS_PER_CUSTOMER`]; at least 1.
    pub max_live_agendas_per_customer: usize,
    /// See [`DEFAULT_MAX_LIVE_BYTES_PER_CUSTOMER`]; at least 1.
    pub max_live_bytes_per_customer: u64,
    /// See [`DEFAULT_MAX_RETAINED_BYTES_PER_CUSTOMER`]; at least 1.
    pub max_retained_bytes_per_customer: u64,
    /// See [`DEFAULT_MAX_LOG_BYTES_PER_CUSTOMER`]; at least 1.
    pub max_log_bytes_per_customer: u64,
    /// See [`DEFAULT_MAX_PAYLOAD_BYTES`]; at least 2 (`{}`).
    pub max_payload_bytes: usize,
    /// See [`DEFAULT_MAX_PARAMS_BYTES`]; at least 2 (`{}`).
    pub max_params_bytes: usize,
    /// Whether the deployment retries failed agendas (`pop serve --retry-interval` not 0):
    /// what the log says of a failure with attempts left (review-s40: "retried after the
    /// backoff" was said with retries off).
    pub retries: bool,
    /// The retry process's backoff (`pop serve --retry-backoff*`): when a failed agenda's
    /// retry is due, said by `retryDueTime` where [`AppConfig::retries`].
    pub retry_backoff: pop_domain::backoff::Backoff,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            max_page_size: MAX_PAGE_SIZE,
            read_wait: DEFAULT_READ_WAIT,
            pop_catch_up_wait: POP_CATCH_UP_WAIT,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            lease: DEFAULT_LEASE,
            max_wait: Duration::from_secs(MAX_GET_AGENDA_WAIT_SECONDS.unsigned_abs()),
            max_subscriptions_per_principal: DEFAULT_MAX_SUBSCRIPTIONS_PER_PRINCIPAL,
            metrics_insight_labels: false,
            max_live_agendas_per_customer: DEFAULT_MAX_LIVE_AGENDAS_PER_CUSTOMER,
            max_live_bytes_per_customer: DEFAULT_MAX_LIVE_BYTES_PER_CUSTOMER,
            max_retained_bytes_per_customer: DEFAULT_MAX_RETAINED_BYTES_PER_CUSTOMER,
            max_log_bytes_per_customer: DEFAULT_MAX_LOG_BYTES_PER_CUSTOMER,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_params_bytes: DEFAULT_MAX_PARAMS_BYTES,
            retries: true,
            retry_backoff: pop_domain::backoff::Backoff::default(),
        }
    }
}

impl AppConfig {
    /// The payload and params size limits, as the domain's checks take them.
    pub fn size_limits(&self) -> pop_domain::validate::SizeLimits {
        pop_domain::validate::SizeLimits {
            payload_bytes: self.max_payload_bytes,
            params_bytes: self.max_params_bytes,
        }
    }

    /// The config with every knob clamped into its bounds.
    pub fn bounded(mut self) -> AppConfig {
        self.max_page_size = self.max_page_size.clamp(1, MAX_PAGE_SIZE);
        self.read_wait = self.read_wait.min(pop_projections::runner::MAX_WAIT);
        self.subscriber_buffer = self.subscriber_buffer.max(1);
        self.lease = self.lease.clamp(MIN_LEASE, MAX_LEASE);
        self.max_wait =
            self.max_wait.min(Duration::from_secs(MAX_GET_AGENDA_WAIT_SECONDS.unsigned_abs()));
        self.max_subscriptions_per_principal =
            self.max_subscriptions_per_principal.clamp(1, MAX_SUBSCRIBERS);
        self.max_live_agendas_per_customer = self.max_live_agendas_per_customer.max(1);
        self.max_live_bytes_per_customer = self.max_live_bytes_per_customer.max(1);
        self.max_retained_bytes_per_customer = self.max_retained_bytes_per_customer.max(1);
        self.max_log_bytes_per_customer = self.max_log_bytes_per_customer.max(1);
        self.max_payload_bytes = self.max_payload_bytes.max(2);
        self.max_params_bytes = self.max_params_bytes.max(2);
        self
    }
}

/// How long `/readyz` waits for the store to answer a read of its head before it counts the
/// store as unavailable: under the second within which the probes must be answered.
pub const STORE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// How long after an append failed as unavailable (disk full) the server stays not ready
/// unless an append succeeds first: long enough for a load balancer to notice, short enough
/// that readiness returns by itself soon after the disk has room again.
pub const UNAVAILABLE_HOLD: std::time::Duration = std::time::Duration::from_secs(5);
