//! What one GraphQL request may cost, before and while it runs.
//!
//! **Before: query cost.** async-graphql computes a complexity per operation when it
//! validates it: one point per selected field unless the field says otherwise with
//! `#[graphql(complexity = …)]`, every alias counted on its own. Here lists say otherwise: a
//! paged list (`first`) costs `first` × the cost of what is selected of it ([`page`]), a
//! list inside an object (an agenda's operations, a progress's diagnostics) a nominal
//! [`NESTED_LIST_ITEMS`] × its selection ([`nested`]), and a field that scans the read models
//! (`progressSummary`) [`SCAN_COST`] on top ([`scan`]), a filtered agenda list
//! [`LIST_SCAN_COST`] ([`list_scan`]). [`Budget`] then sums the costs of every
//! operation of one HTTP body (a batch), so a batch of 16 operations cannot ask for 16 times
//! the limit. Past the limit the operation is refused with `QUERY_TOO_COSTLY` before any
//! resolver runs.
//!
//! **While: response bytes.** Nominal sizes cannot know what is stored (an agenda may hold
//! 1,000 operations of large payloads), so [`Budget`] also counts the JSON bytes of every
//! value the resolvers hand back. The first field that takes the response past the byte limit
//! fails, every field after it fails without running, and the whole response becomes one
//! `RESPONSE_TOO_LARGE` error: no response larger than the limit (and one field) is ever built.
//!
//! **How long, and how many at once.** Every `POST /graphql` body has a deadline
//! (`request_deadline`): a field that would start after it fails without running and the
//! response becomes one `DEADLINE_EXCEEDED` error. Resolvers that never wait (read-model
//! scans) get a yield every [`SLICE`], so a long request shares its worker thread with
//! `/healthz` and everyone else, and the deadline is seen. A request costing
//! [`MIN_EXPENSIVE_COST`] or more holds one of its principal's few permits
//! ([`Running`], `max_expensive_per_principal`) while it runs; with none left it is refused
//! with `BUSY` (retryable) before it runs.
//!
//! Cost and byte limits are [`crate::ApiConfig`] knobs (`max_complexity`,
//! `max_response_bytes`). The byte budget, the deadline and the permits apply to
//! `POST /graphql`, whose handler gives each body a [`Budget`], and to a query or mutation
//! sent over the WebSocket, which `crate::ws` gives one the same way; for a subscription only
//! the cost is checked here (its stream would otherwise add up for hours).
//!
//! **Before any of it: the document's size.** Parsing and validation run before the cost is
//! known and never yield, so a document longer than `MAX_QUERY_BYTES` is refused unparsed
//! ([`too_long`]), and a response lists at most `MAX_RESPONSE_ERRORS` errors ([`capped`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextRequest, NextResolve,
    NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::registry::MetaTypeName;
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Value};
use pop_app::{AppError, Caller};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_QUERY_BYTES, MAX_RESPONSE_ERRORS};
use crate::error::{Code, into_graphql};

/// Items a list inside an object is assumed to hold when its cost is computed (an agenda's
/// operations, a progress's operation progress and diagnostics). The domain lets an agenda
/// hold up to 1,000 operations, so this is a typical size, not a bound: the byte budget is
/// the bound for what the data really holds.
pub const NESTED_LIST_ITEMS: usize = 10;

/// Extra cost of a field that scans the read models rather than looking one object up
/// (`progressSummary` folds every agenda of a linkId). Its selection is paid on top.
pub const SCAN_COST: usize = 100;

/// No field costs more than this: the sums of async-graphql's visitor cannot overflow with
/// any number of fields a body within the size limit can hold.
const MAX_FIELD_COST: usize = 1 << 40;

/// The cost of a paged list: `first` (the default page when absent, at most the largest
/// page) × what is selected of each item, plus one for the field itself.
pub fn page(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .clamp(1, MAX_PAGE_SIZE);
    items.saturating_mul(child_complexity).saturating_add(1).min(MAX_FIELD_COST)
}

/// The cost of a list of agendas or of config objects: a [`page`] that may scan too
/// ([`LIST_SCAN_COST`]), whatever its filter (whether an index serves it is the read model's
/// choice, not the request's). An agenda filter no index serves (a state or phase across a
/// customer's agendas, say) examines up to `MAX_SCANNED_PER_PAGE` (20,000) agendas for a page
/// of one, so a thousand aliases of a one-item page cost about a thousand points and scanned
/// for 20 s (hostile13); at [`LIST_SCAN_COST`] each they are refused before they run, and five
/// or more in one request hold one of the caller's few expensive-request permits.
pub fn list_scan(first: Option<i32>, child_complexity: usize) -> usize {
    page(first, child_complexity).saturating_add(LIST_SCAN_COST).min(MAX_FIELD_COST)
}

/// Extra cost of a list of agendas or of config objects ([`list_scan`]): a page of one may
/// examine 20,000 agendas (some 20 ms of a core), or every config object of every customer
/// (hostile14: 2,400 aliases of `templates(first: 1)` cost 4,800 points and ran for 14 s).
/// At this price a request within the cost limit holds fewer than 50 such lists (about a
/// second), while the dashboard's lists (50 progresses of 15 fields, about 760 points before
/// it; 200 insights) stay below [`MIN_EXPENSIVE_COST`] (review-s36: at [`SCAN_COST`], 480
/// aliases fit and scanned for about 10 s).
pub const LIST_SCAN_COST: usize = 1_000;

/// The cost of a lookup that may read as of a point of the log: its selection, and with
/// `asOf` [`AS_OF_FOLD_COST`] more. An as-of read folds the agenda's stream from the store,
/// up to 100,000 events (`pop_app::asof::MAX_AS_OF_EVENTS`), not one read-model lookup
/// (hostile15: 300 aliases cost 600 points and ran to the deadline, three at once).
pub fn as_of(as_of: bool, child_complexity: usize) -> usize {
    match as_of {
        true => child_complexity.saturating_add(1 + AS_OF_FOLD_COST).min(MAX_FIELD_COST),
        false => child_complexity.saturating_add(1),
    }
}

/// The cost of a page that folds an agenda's stream from its start to reach it
/// (`agendaHistory`): the [`page`] and [`AS_OF_FOLD_COST`], as an as-of read folds as much.
pub fn folded_page(first: Option<i32>, child_complexity: usize) -> usize {
    page(first, child_complexity).saturating_add(AS_OF_FOLD_COST).min(MAX_FIELD_COST)
}

/// Extra cost of a lookup as of a point of the log ([`as_of`]): one is an expensive request
/// ([`MIN_EXPENSIVE_COST`]), and a request holds at most nine. Priced as a list scan before,
/// 49 aliases fit one request and folded a 30,000-event agenda each: 11 s, and two such
/// requests of each of a tenant's tokens ran to the deadline while another tenant's reads
/// slowed fivefold (hostile58 L1, debug build).
pub const AS_OF_FOLD_COST: usize = MIN_EXPENSIVE_COST;

/// The cost of a progress summary: a [`scan`], and with `asOf` [`AS_OF_SUMMARY_COST`] more
/// (it folds each of up to 1,000 agendas from the store).
pub fn summary(as_of: bool, child_complexity: usize) -> usize {
    let extra = if as_of { AS_OF_SUMMARY_COST } else { 0 };
    scan(child_complexity).saturating_add(extra).min(MAX_FIELD_COST)
}

/// Extra cost of a progress summary as of a point of the log: it folds up to 1,000 agendas'
/// streams, so one is an expensive request ([`MIN_EXPENSIVE_COST`]) and a request holds at
/// most four.
pub const AS_OF_SUMMARY_COST: usize = 10 * LIST_SCAN_COST;

/// The cost of a field that walks up to a list's worth of the read models whatever it is
/// asked (`agendaStats`: every completion in its window): its selection and
/// [`LIST_SCAN_COST`].
pub fn scan_of(child_complexity: usize) -> usize {
    child_complexity.saturating_add(1).saturating_add(LIST_SCAN_COST).min(MAX_FIELD_COST)
}

/// The cost of a list field inside an object: [`NESTED_LIST_ITEMS`] × its selection.
pub fn nested(child_complexity: usize) -> usize {
    NESTED_LIST_ITEMS.saturating_mul(child_complexity).saturating_add(1).min(MAX_FIELD_COST)
}

/// The cost of a list field inside an object whose length is not chosen by the client nor
/// bounded by the domain (the agendas of a linkId in a progress summary): a default page.
pub fn unpaged(child_complexity: usize) -> usize {
    page(None, child_complexity)
}

/// The cost of a field that returns `count` objects (`getAgenda`).
pub fn count(count: i32, child_complexity: usize) -> usize {
    page(Some(count), child_complexity)
}

/// The cost of a field that scans the read models: [`SCAN_COST`] plus its selection.
pub fn scan(child_complexity: usize) -> usize {
    child_complexity.saturating_add(SCAN_COST).min(MAX_FIELD_COST)
}

/// What one HTTP body (one operation, or every operation of a batch) may still spend. The
/// handler puts one `Arc<Budget>` into the data of every request of the body; a request
/// without one (a WebSocket operation) gets its own from the extension.
#[derive(Debug)]
pub struct Budget {
    max_cost: usize,
    max_bytes: usize,
    cost: AtomicUsize,
    bytes: AtomicUsize,
    exceeded: AtomicBool,
    started: Instant,
    /// When the request must have answered (none over WebSocket: a subscription lives on).
    deadline: Option<Duration>,
    timed_out: AtomicBool,
    /// When the current [`SLICE`] began, and the pause that ends it ([`Budget::pace`]).
    pace: Mutex<Pace>,
}

/// See [`Budget::pace`].
#[derive(Debug)]
struct Pace {
    slice_start: Instant,
    /// The current pause (0: none); each pause gets the next number.
    paused: u64,
    pauses: u64,
}

/// Longest a request resolves fields without letting the worker thread run other tasks.
/// Resolvers that never wait (read-model scans) would otherwise hold a worker for the whole
/// request, and with a worker per core a few such requests froze `/healthz` for 90 s.
pub const SLICE: Duration = Duration::from_millis(10);

impl Budget {
    pub fn new(max_cost: usize, max_bytes: usize) -> Budget {
        Budget {
            max_cost,
            max_bytes,
            cost: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            exceeded: AtomicBool::new(false),
            started: Instant::now(),
            deadline: None,
            timed_out: AtomicBool::new(false),
            pace: Mutex::new(Pace { slice_start: Instant::now(), paused: 0, pauses: 0 }),
        }
    }

    /// The budget of a request that must answer within `deadline`.
    pub fn with_deadline(mut self, deadline: Duration) -> Budget {
        self.deadline = Some(deadline);
        self
    }

    /// How long the request may still run before its deadline (`None`: it has none).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_sub(self.started.elapsed()))
    }

    /// Whether the request has run past its deadline (and from now on is).
    fn past_deadline(&self) -> bool {
        if self.timed_out.load(Ordering::Relaxed) {
            return true;
        }
        let past = self.deadline.is_some_and(|d| self.started.elapsed() > d);
        if past {
            self.timed_out.store(true, Ordering::Relaxed);
        }
        past
    }

    /// Lets the worker thread run other tasks once the request has resolved fields for a
    /// [`SLICE`]. Sibling fields run inside one poll of the request's task (async-graphql
    /// joins them), so one field yielding is not enough: once the slice is over, a pause
    /// begins and every field that starts yields until the task is polled again; the first
    /// field to come back from its yield ends that pause and starts a new slice.
    async fn pace(&self) {
        loop {
            let pause = {
                let Ok(mut pace) = self.pace.lock() else { return };
                if pace.paused == 0 {
                    if pace.slice_start.elapsed() <= SLICE {
                        return;
                    }
                    pace.pauses += 1;
                    pace.paused = pace.pauses;
                }
                pace.paused
            };
            tokio::task::yield_now().await;
            if let Ok(mut pace) = self.pace.lock()
                && pace.paused == pause
            {
                pace.paused = 0;
                pace.slice_start = Instant::now();
            }
        }
    }

    fn deadline_error(&self) -> AppError {
        deadline_error(self.deadline.unwrap_or_default())
    }

    /// Adds an operation's cost; the error when the body's total is past the limit.
    fn spend_cost(&self, cost: usize) -> Result<(), AppError> {
        let total = self.cost.fetch_add(cost, Ordering::Relaxed).saturating_add(cost);
        if total > self.max_cost {
            return Err(AppError::new(
                Code::QueryTooCostly,
                format!(
                    "query: the request costs {total} points, more than the limit of {}; a list \
                     costs `first` (default {DEFAULT_PAGE_SIZE}) times the fields selected of \
                     each item, a list of agendas or config objects {LIST_SCAN_COST} more (it \
                     may scan), and every alias and batched operation is added: ask for fewer \
                     lists, items, fields or aliases",
                    self.max_cost
                ),
            ));
        }
        Ok(())
    }

    /// Adds response bytes; the error when the body's response is past the limit.
    fn spend_bytes(&self, bytes: usize) -> Result<(), AppError> {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        if total > self.max_bytes {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(self.too_large());
        }
        Ok(())
    }

    fn too_large(&self) -> AppError {
        AppError::new(
            Code::ResponseTooLarge,
            format!(
                "response: the data asked for is larger than the limit of {} bytes; ask for \
                 fewer items (`first`) or fewer fields, and page through the rest",
                self.max_bytes
            ),
        )
    }

    fn is_exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The error that replaces the whole response, if any.
    pub(crate) fn refusal(&self) -> Option<AppError> {
        if self.timed_out.load(Ordering::Relaxed) {
            Some(self.deadline_error())
        } else if self.is_exceeded() {
            Some(self.too_large())
        } else {
            None
        }
    }
}

/// Why GraphQL documents are refused before the library parses or walks them.
#[derive(Debug)]
pub enum Unfit {
    /// Longer than [`MAX_QUERY_BYTES`] ([`too_long`]): 413 over HTTP.
    TooLong(AppError),
    /// Nested too deep ([`too_deep`]) or expanding past the cost limit ([`overexpanded`]).
    Refused(AppError),
}

/// The one gate of every transport's documents (every operation of one HTTP body together,
/// or one WebSocket operation), in the order that keeps each step safe: the size and the
/// nesting on the text, then `parse` (the transport's parse cache) and the fragments'
/// expansion on the parsed document. `None`: the library may take them.
pub fn unfit(
    requests: &mut [&mut Request],
    max_cost: usize,
    parse: impl Fn(&mut Request),
) -> Option<Unfit> {
    if let Some(error) = too_long(requests.iter().map(|r| r.query.as_str())) {
        return Some(Unfit::TooLong(error));
    }
    if let Some(error) = requests.iter().find_map(|r| too_deep(&r.query)) {
        return Some(Unfit::Refused(error));
    }
    let mut expanded = Some(0);
    for request in requests.iter_mut() {
        parse(request);
        expanded = add_expansion(expanded, request);
    }
    overexpanded(expanded, max_cost).map(Unfit::Refused)
}

/// BAD_REQUEST for GraphQL documents (every operation of one HTTP body together, or one
/// WebSocket operation) longer than [`MAX_QUERY_BYTES`], refused before they are parsed;
/// `None` within it. A batch counts together: sixteen documents just under the limit were
/// sixteen times the parsing and validation (hostile16: 24 s, and `/healthz` frozen).
pub fn too_long<'q>(queries: impl IntoIterator<Item = &'q str>) -> Option<AppError> {
    let bytes: usize = queries.into_iter().map(str::len).sum();
    (bytes > MAX_QUERY_BYTES).then(|| {
        AppError::bad_request(format!(
            "query: the GraphQL documents are {bytes} bytes, more than the limit of \
             {MAX_QUERY_BYTES} (a batch's together); pass values as variables, and ask for \
             fewer aliases or fragments"
        ))
    })
}

/// Deepest nesting of `{`, `[` and `(` a GraphQL document may have, counted on its text before
/// it is parsed. The parser accepts literal values nested as deep as its own stack guard lets
/// it, and the walks after it (building the syntax tree, validation) recurse deeper with
/// larger frames: a list literal nested 400 deep, 820 bytes from any token, overflowed a
/// worker's stack and aborted the whole server (hostile17). The parser already refuses
/// selection sets nested past 64; values go in variables, which serde_json bounds.
pub const MAX_DOCUMENT_NESTING: usize = 64;

/// BAD_REQUEST for a document nested deeper than [`MAX_DOCUMENT_NESTING`], found by one scan
/// of its bytes (strings, block strings and comments skipped); `None` within it.
pub fn too_deep(query: &str) -> Option<AppError> {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped delimiter inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                if i >= bytes.len() {
                    // Unterminated, the parser reads `""` and a string from the third quote,
                    // and what follows as code: nothing here may be skipped (review-s37b: a
                    // 400-deep list after `""" "` passed this scan and aborted the server).
                    return Some(AppError::bad_request(
                        "query: a block string (\"\"\") is not closed",
                    ));
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_DOCUMENT_NESTING {
                    return Some(AppError::bad_request(format!(
                        "query: the GraphQL document nests braces, brackets or parentheses more \
                         than {MAX_DOCUMENT_NESTING} deep; pass deep values as variables"
                    )));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The selections (fields, fragment spreads, inline fragments) of `document`'s operations
/// once every fragment spread is expanded, counted in one pass over the document (each
/// fragment's expansion counted once and remembered; an introspection field adds
/// [`INTROSPECTION_WEIGHT`]); `None` when a fragment spreads itself.
/// The library's own walks — its recursion-depth check, validation, execution — expand every
/// spread again wherever it occurs, without yielding: fragments that each spread the one
/// before twice made a document of under 1 KB 2^23 selections, which held a worker for 50 s
/// and froze `/healthz` (hostile16, review-s37).
pub fn expanded_selections(document: &ExecutableDocument) -> Option<u64> {
    fn set<'d>(
        selections: &'d SelectionSet,
        document: &'d ExecutableDocument,
        memo: &mut HashMap<&'d str, Option<u64>>,
    ) -> Option<u64> {
        let mut total: u64 = 0;
        for item in &selections.items {
            let inner = match &item.node {
                Selection::Field(f) => {
                    let below = set(&f.node.selection_set.node, document, memo)?;
                    match f.node.name.node.as_str() {
                        "__schema" | "__type" => below.saturating_add(INTROSPECTION_WEIGHT),
                        _ => below,
                    }
                }
                Selection::InlineFragment(f) => set(&f.node.selection_set.node, document, memo)?,
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    match memo.get(name) {
                        Some(known) => (*known)?,
                        None => match document.fragments.get(name) {
                            // An unknown fragment is the schema's to report.
                            None => 0,
                            Some(fragment) => {
                                // In progress: a spread of it from inside is a cycle.
                                memo.insert(name, None);
                                let size = set(&fragment.node.selection_set.node, document, memo);
                                memo.insert(name, size);
                                size?
                            }
                        },
                    }
                }
            };
            total = total.saturating_add(1).saturating_add(inner);
        }
        Some(total)
    }
    let mut memo = HashMap::new();
    let mut total: u64 = 0;
    for (_, operation) in document.operations.iter() {
        total = total.saturating_add(set(&operation.node.selection_set.node, document, &mut memo)?);
    }
    Some(total)
}

/// What an introspection field (`__schema`, `__type`) adds to [`expanded_selections`]: it
/// answers the whole schema for a few points of cost (hostile17: about 23 points built 45 KB,
/// and 360 aliases 16 MB), so more than four in one request are refused; GraphiQL and the
/// clients that introspect send one.
pub const INTROSPECTION_WEIGHT: u64 = 10_000;

/// The refusal of documents (every operation of one HTTP body together, or one WebSocket
/// operation) whose fragments expand to `expanded` selections ([`expanded_selections`]
/// summed; `None`: a fragment spreads itself): QUERY_TOO_COSTLY past `max`, before the
/// library walks them. Every selection costs at least a point, so such documents would be
/// refused for their cost anyway, after the walks.
pub fn overexpanded(expanded: Option<u64>, max: usize) -> Option<AppError> {
    let Some(total) = expanded else {
        return Some(AppError::bad_request(
            "query: a fragment spreads itself (directly or through others)",
        ));
    };
    (total > max as u64).then(|| {
        AppError::new(
            Code::QueryTooCostly,
            format!(
                "query: its fragments expand to {total} selections (an introspection field \
                 counting {INTROSPECTION_WEIGHT}), more than the cost limit of {max}; spread \
                 fewer fragments, or fragments that spread fewer, and introspect once"
            ),
        )
    })
}

/// [`expanded_selections`] of `request`'s document added to `total` (a document that does
/// not parse adds nothing: the schema reports it).
fn add_expansion(total: Option<u64>, request: &mut Request) -> Option<u64> {
    match request.parsed_query() {
        Ok(document) => total.zip(expanded_selections(document)).map(|(a, b)| a.saturating_add(b)),
        Err(_) => total,
    }
}

/// A request's response as it is answered: one error when it ran past `budget` (its
/// deadline or its bytes), else `response` with its errors capped ([`capped`]). For every
/// transport: the schema's request hook (HTTP) and `crate::ws` for a query or mutation it
/// streams, which the library answers without running that hook.
pub(crate) fn finish(budget: Option<&Budget>, response: Response) -> Response {
    match budget.and_then(Budget::refusal) {
        Some(refusal) => Response::from_errors(vec![server_error(refusal)]),
        None => capped(response),
    }
}

/// `response` with at most [`MAX_RESPONSE_ERRORS`] errors: the rest are counted in one more.
fn capped(mut response: Response) -> Response {
    if response.errors.len() > MAX_RESPONSE_ERRORS {
        let more = response.errors.len() - (MAX_RESPONSE_ERRORS - 1);
        response.errors.truncate(MAX_RESPONSE_ERRORS - 1);
        response.errors.shrink_to_fit();
        let said = AppError::bad_request(format!(
            "and {more} more errors, not listed (at most {MAX_RESPONSE_ERRORS} are)"
        ));
        response.errors.push(server_error(said));
    }
    response
}

/// DEADLINE_EXCEEDED for a request that ran longer than `deadline`.
pub fn deadline_error(deadline: Duration) -> AppError {
    AppError::new(
        Code::DeadlineExceeded,
        format!(
            "request: not answered within the deadline of {} ms, so what it did is not known: \
             a write it made may still commit (the store may be slow), so read before sending \
             it again; a large read: ask for less (fewer items, fields or aliases) or retry \
             later",
            deadline.as_millis()
        ),
    )
}

/// Expensive requests (at least [`MIN_EXPENSIVE_COST`] points) one principal runs at once,
/// over `POST /graphql`: each holds a permit of its principal's semaphore while it runs.
#[derive(Debug, Default)]
pub struct Running {
    per_principal: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Running {
    /// A permit for one more expensive request of `principal`, if it has one left of `max`.
    fn try_start(&self, principal: &str, max: usize) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut map = self.per_principal.lock().ok()?;
            // Principals are bounded by the token file (`MAX_TOKENS`), so is the map.
            Arc::clone(
                map.entry(principal.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(max.max(1)))),
            )
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// A body whose documents together are longer than this is parsed, walked and validated only
/// while its principal holds one of its expensive permits ([`Running`], taken before any of
/// that work and kept while the request runs): that work comes before any cost is known and
/// does not yield (hostile57 H3: 64 KiB documents of 13,000 fragment spreads took ~0.5 s each
/// on a debug build, and 24 loops of them, each refused BUSY only after that work, held
/// another tenant's reads for 2 s). The dashboard's largest document is under 4 KiB,
/// GraphiQL's introspection about 3 KiB.
pub const LARGE_DOCUMENT_BYTES: usize = 8 << 10;

/// The permit a request whose documents take `written` bytes must hold before they are parsed
/// ([`LARGE_DOCUMENT_BYTES`]): `None` for a smaller one; BUSY when `principal` already runs
/// `max` expensive requests. For every transport (`POST /graphql`, the WebSocket).
pub(crate) fn early_permit(
    running: &Running,
    principal: &str,
    max: usize,
    written: usize,
) -> Result<Option<OwnedSemaphorePermit>, AppError> {
    if written <= LARGE_DOCUMENT_BYTES {
        return Ok(None);
    }
    running.try_start(principal, max).map(Some).ok_or_else(|| {
        AppError::new(
            Code::Busy,
            format!(
                "query: {principal:?} already runs {max} expensive requests (documents over \
                 {LARGE_DOCUMENT_BYTES} bytes, or costing {MIN_EXPENSIVE_COST} points or more) \
                 at once; retry when one has answered"
            ),
        )
    })
}

/// One of `principal`'s expensive permits for a REST read priced as GraphQL prices it (an
/// as-of read folds streams from the store: `AS_OF_FOLD_COST`), held until it is answered;
/// BUSY when it already runs `max` (hostile59 L1: REST's `?asOf=` took none, and 64 at once
/// of one token were all run).
pub(crate) fn rest_permit(
    running: &Running,
    principal: &str,
    max: usize,
    what: &str,
) -> Result<OwnedSemaphorePermit, AppError> {
    running.try_start(principal, max).ok_or_else(|| {
        AppError::new(
            Code::Busy,
            format!(
                "{what}: {principal:?} already runs {max} expensive requests (as-of reads, or \
                 GraphQL requests costing {MIN_EXPENSIVE_COST} points or more) at once; retry \
                 when one has answered"
            ),
        )
    })
}

/// In a request's data when its principal's permit was taken before its document was parsed
/// ([`LARGE_DOCUMENT_BYTES`]): the validation hook takes no second one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldEarly;

/// In a WebSocket subscription's data with the permit it took early: given back once it is
/// validated, since its first answer may be an event hours away (review of reprobe57 M2).
#[derive(Clone)]
pub(crate) struct EarlyRelease(pub Arc<Mutex<Option<OwnedSemaphorePermit>>>);

/// A request at or above this cost counts against its principal's expensive requests
/// ([`crate::ApiConfig::max_expensive_per_principal`]). The dashboard's largest query costs
/// about 4,000, so it is never held back; a page of 500 agendas with operations is.
pub const MIN_EXPENSIVE_COST: usize = 5_000;

/// The extension that keeps [`Budget`]s (one instance per request, or per subscription).
pub(crate) struct Limits {
    pub max_cost: usize,
    pub max_expensive_per_principal: usize,
    pub running: Arc<Running>,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsExtension {
            // Without a transport's budget (a WebSocket operation) only the cost is bounded
            // here: a subscription lives for hours, and its messages are bounded one by one
            // by the connection's queue.
            budget: Mutex::new(Arc::new(Budget::new(self.max_cost, usize::MAX))),
            transport: AtomicBool::new(false),
            max_expensive: self.max_expensive_per_principal,
            running: Arc::clone(&self.running),
            permit: Mutex::new(None),
        })
    }
}

struct LimitsExtension {
    /// The request's budget: its own until `prepare_request` finds the transport's (the
    /// request's data is not visible to the `request` hook, so it is remembered here).
    budget: Mutex<Arc<Budget>>,
    /// Whether the budget is the HTTP transport's (a request with an end, unlike a
    /// subscription).
    transport: AtomicBool,
    max_expensive: usize,
    running: Arc<Running>,
    /// The principal's expensive-request permit, held until the request ends.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl LimitsExtension {
    fn budget(&self) -> Option<Arc<Budget>> {
        self.budget.lock().ok().map(|b| Arc::clone(&b))
    }
}

pub(crate) fn server_error(e: AppError) -> ServerError {
    let error = into_graphql(e);
    ServerError { extensions: error.extensions, ..ServerError::new(error.message, None) }
}

#[async_graphql::async_trait::async_trait]
impl Extension for LimitsExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let response = next.run(ctx).await;
        if let Ok(mut permit) = self.permit.lock() {
            permit.take();
        }
        finish(self.budget().as_deref(), response)
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(shared) = request
            .data
            .get(&std::any::TypeId::of::<Arc<Budget>>())
            .and_then(|d| d.downcast_ref::<Arc<Budget>>())
            && let Ok(mut budget) = self.budget.lock()
        {
            *budget = Arc::clone(shared);
            self.transport.store(true, Ordering::Relaxed);
        }
        next.run(ctx, request).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if let Some(EarlyRelease(early)) = ctx.data_opt::<EarlyRelease>()
            && let Ok(mut early) = early.lock()
        {
            early.take();
        }
        if let Some(budget) = self.budget() {
            budget.spend_cost(result.complexity).map_err(|e| vec![server_error(e)])?;
        }
        if result.complexity >= MIN_EXPENSIVE_COST
            && self.transport.load(Ordering::Relaxed)
            && ctx.data_opt::<HeldEarly>().is_none()
            && let Some(caller) = ctx.data_opt::<Caller>()
        {
            let name = &caller.principal.name;
            let Some(permit) = self.running.try_start(name, self.max_expensive) else {
                return Err(vec![server_error(AppError::new(
                    Code::Busy,
                    format!(
                        "query: {name:?} already runs {} expensive requests (costing \
                         {MIN_EXPENSIVE_COST} points or more) at once; retry when one has \
                         answered",
                        self.max_expensive
                    ),
                ))]);
            };
            if let Ok(mut slot) = self.permit.lock() {
                *slot = Some(permit);
            }
        }
        Ok(result)
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let Some(budget) = self.budget() else { return next.run(ctx, info).await };
        if budget.is_exceeded() {
            return Err(server_error(budget.too_large()));
        }
        budget.pace().await;
        if budget.past_deadline() {
            return Err(server_error(budget.deadline_error()));
        }
        let leaf = ctx
            .schema_env
            .registry
            .types
            .get(MetaTypeName::concrete_typename(info.return_type))
            .is_some_and(|t| t.is_leaf());
        let key = info.alias.unwrap_or(info.name).len() + 4;
        let value = next.run(ctx, info).await?;
        // An object's fields are counted as they resolve; a leaf (scalars, enums, JSON, and
        // lists of them) is counted whole here.
        let bytes = match (&value, leaf) {
            (Some(v), true) => key.saturating_add(json_len(v)),
            _ => key,
        };
        budget.spend_bytes(bytes).map_err(server_error)?;
        Ok(value)
    }
}

/// About the length of `value` as JSON (strings unescaped, numbers at most 24 characters).
fn json_len(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Boolean(_) => 5,
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => s.len() + 2,
        Value::Enum(e) => e.len() + 2,
        Value::Binary(b) => b.len().saturating_mul(4) + 2,
        Value::List(items) => {
            items.iter().map(|v| json_len(v).saturating_add(1)).fold(2, usize::saturating_add)
        }
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| (k.len() + 4).saturating_add(json_len(v)))
            .fold(2, usize::saturating_add),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_costs_its_items_times_their_selection() {
        assert_eq!(page(Some(500), 3), 1_501);
        assert_eq!(page(None, 3), DEFAULT_PAGE_SIZE * 3 + 1);
        // Out-of-range `first` is costed within the page bounds (the read refuses it anyway).
        assert_eq!(page(Some(-5), 3), DEFAULT_PAGE_SIZE * 3 + 1);
        assert_eq!(page(Some(0), 3), 4);
        assert_eq!(page(Some(i32::MAX), 3), MAX_PAGE_SIZE * 3 + 1);
        assert_eq!(nested(2), 21);
        assert_eq!(page(Some(500), usize::MAX), MAX_FIELD_COST);
    }

    #[test]
    fn a_body_spends_one_budget() {
        let budget = Budget::new(100, 10);
        assert!(budget.spend_cost(60).is_ok());
        let Err(e) = budget.spend_cost(60) else { panic!("over the limit") };
        assert_eq!(e.code, Code::QueryTooCostly);
        assert!(e.message.contains("120 points"), "{}", e.message);
        assert!(budget.spend_bytes(10).is_ok() && !budget.is_exceeded());
        let Err(e) = budget.spend_bytes(1) else { panic!("over the limit") };
        assert_eq!(e.code, Code::ResponseTooLarge);
        assert!(budget.is_exceeded());
    }

    #[test]
    fn json_length_is_close_to_the_serialized_one() {
        let value = Value::from_json(serde_json::json!({
            "a": "xyz", "b": [1, 2, {"c": null}], "d": true
        }))
        .unwrap_or(Value::Null);
        let text = serde_json::to_string(&value.clone().into_json().unwrap_or_default())
            .unwrap_or_default();
        let estimate = json_len(&value);
        assert!(estimate >= text.len() && estimate <= text.len() * 2, "{estimate} vs {text}");
    }

    #[test]
    fn fragments_are_expanded_once_each_when_counted() {
        let size = |query: &str| {
            let document = async_graphql::parser::parse_query(query).expect("it parses");
            expanded_selections(&document)
        };
        // me, name: 2; a spread counts itself and what it expands to.
        assert_eq!(size("{ me { name } }"), Some(2));
        assert_eq!(size("{ ...F ...F } fragment F on QueryRoot { me { name } }"), Some(6));
        // Sixty fragments each spreading the one before twice: 2^60-ish, counted at once.
        let mut nested = String::from("{ ...F59 } fragment F0 on QueryRoot { me { name } }");
        for i in 1..60 {
            nested
                .push_str(&format!(" fragment F{i} on QueryRoot {{ ...F{p} ...F{p} }}", p = i - 1));
        }
        let took = Instant::now();
        let big = size(&nested).expect("no cycle");
        assert!(big > 1 << 59, "{big}");
        assert!(took.elapsed() < Duration::from_millis(100), "{:?}", took.elapsed());
        assert!(overexpanded(Some(big), 50_000).is_some_and(|e| e.code == Code::QueryTooCostly));
        assert!(overexpanded(Some(6), 50_000).is_none());
        // A cycle is said, not walked.
        assert_eq!(
            size("{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { ...A }"),
            None
        );
        assert!(overexpanded(None, 50_000).is_some_and(|e| e.code == Code::BadRequest));
    }

    #[test]
    fn a_document_nested_too_deep_is_refused_from_its_text() {
        let deep =
            format!("{{ agenda(id: {}\"x\"{}) {{ id }} }}", "[".repeat(400), "]".repeat(400));
        assert!(too_deep(&deep).is_some_and(|e| e.code == Code::BadRequest));
        let ok = format!("{{ agenda(id: {}\"x\"{}) {{ id }} }}", "[".repeat(50), "]".repeat(50));
        assert!(too_deep(&ok).is_none());
        // Brackets inside strings, block strings and comments do not count.
        let quoted = format!(
            "{{ a(s: \"{b}\", t: \"\"\"{b} \\\"\"\" {b}\"\"\") # {b}\n {{ id }} }}",
            b = "[".repeat(400)
        );
        assert!(too_deep(&quoted).is_none(), "{quoted}");
        let escaped = format!("{{ a(s: \"\\\"{}\") {{ id }} }}", "{".repeat(400));
        assert!(too_deep(&escaped).is_none());
        // An unterminated block string hides nothing (the parser reads `""` and then code).
        let open = format!(
            "{{ agenda(id: [\"\"\" \" {}\"x\"{} ]) {{ id }} }}",
            "[".repeat(400),
            "]".repeat(400)
        );
        assert!(too_deep(&open).is_some_and(|e| e.message.contains("not closed")), "{open}");
    }
}
