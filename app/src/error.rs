//! What a use case answers when it does not do what was asked (DOMAIN.md §11): an
//! [`AppError`] with a machine-readable [`Code`], a message naming the field or object at fault,
//! every validation problem, and the caller's cid. This module decides what leaks: store and
//! codec failures are logged with their detail and answered as a bare INTERNAL. The transports
//! map [`Code`] to GraphQL's `extensions.code` and to HTTP statuses; they add no codes of their
//! own except REST's `METHOD_NOT_ALLOWED`, which only a URL can cause.

use pop_domain::agenda::AgendaError;
use pop_domain::binding::BindingError;
use pop_domain::config::ConfigError;
use pop_domain::error::{
    ErrorChain, ErrorCode, FieldError, MAX_REPORTED_PROBLEMS, ValidationErrors,
};
use pop_store::{ExecuteError, StoreError};

/// The machine-readable codes a use case answers: DOMAIN.md §11's, plus [`Code::Timeout`] and
/// the transports' cost limits ([`Code::QueryTooCostly`], [`Code::ResponseTooLarge`],
/// [`Code::DeadlineExceeded`], [`Code::Busy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Validation,
    NotFound,
    Forbidden,
    Unauthenticated,
    Conflict,
    BadRequest,
    Internal,
    /// A read's `atLeastPosition` was not reached in time. Not one of DOMAIN.md §11's codes on
    /// purpose: none of them means "this replica is behind, retry", and a client must be able
    /// to tell that apart from its own mistakes.
    Timeout,
    /// A GraphQL request costs more than the transport's limit (lists count their `first`
    /// times their selection; aliases and batched operations add up). Not a BAD_REQUEST: the
    /// request is valid, and the client should ask for less.
    QueryTooCostly,
    /// The data a request asked for is larger than the transport's response limit: the
    /// client should page (`first`) or select fewer fields.
    ResponseTooLarge,
    /// The request ran past the transport's deadline and was stopped; it may be retried
    /// (smaller, or later).
    DeadlineExceeded,
    /// The caller already runs as many expensive requests as it may at once: retry when one
    /// has answered.
    Busy,
    /// The store cannot serve the request right now (its disk is full, the database restarts
    /// or cannot be reached): nothing was done, and the same request may be retried after
    /// [`RETRY_AFTER_UNAVAILABLE_SECS`]. Not INTERNAL, which a client cannot tell from a bug.
    Unavailable,
    /// The customer already has as many live (not COMPLETE) agendas as its quota allows
    /// ([`crate::AppConfig::max_live_agendas_per_customer`]): submit again once some finished
    /// (or were cancelled). Not BAD_REQUEST: the agenda itself is fine.
    QuotaExceeded,
}

/// The `Retry-After` (seconds) an UNAVAILABLE answer suggests.
pub const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 1;

impl Code {
    /// Every code (the REST contract lists them: popclient17 found QUOTA_EXCEEDED and others
    /// missing from its enum).
    pub const ALL: [Code; 14] = [
        Code::Validation,
        Code::NotFound,
        Code::Forbidden,
        Code::Unauthenticated,
        Code::Conflict,
        Code::BadRequest,
        Code::Internal,
        Code::Timeout,
        Code::QueryTooCostly,
        Code::ResponseTooLarge,
        Code::DeadlineExceeded,
        Code::Busy,
        Code::Unavailable,
        Code::QuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Timeout => "TIMEOUT",
            Code::QueryTooCostly => "QUERY_TOO_COSTLY",
            Code::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::Busy => "BUSY",
            Code::Unavailable => "UNAVAILABLE",
            Code::QuotaExceeded => "QUOTA_EXCEEDED",
            Code::Validation => ErrorCode::Validation.as_str(),
            Code::NotFound => ErrorCode::NotFound.as_str(),
            Code::Forbidden => ErrorCode::Forbidden.as_str(),
            Code::Unauthenticated => ErrorCode::Unauthenticated.as_str(),
            Code::Conflict => ErrorCode::Conflict.as_str(),
            Code::BadRequest => ErrorCode::BadRequest.as_str(),
            Code::Internal => ErrorCode::Internal.as_str(),
        }
    }
}

impl From<ErrorCode> for Code {
    fn from(c: ErrorCode) -> Code {
        match c {
            ErrorCode::Validation => Code::Validation,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::Forbidden => Code::Forbidden,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::Conflict => Code::Conflict,
            ErrorCode::BadRequest => Code::BadRequest,
            ErrorCode::Internal => Code::Internal,
        }
    }
}

/// A use case's refusal or failure, as clients see it.
///
/// Deliberately not `Display`/`std::error::Error`: GraphQL libraries convert any `Display`
/// type into their error by message alone, which would drop the code, cid and problems; a
/// transport must map it on purpose.
#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    pub code: Code,
    pub message: String,
    pub problems: Vec<FieldError>,
    /// Problems found beyond the ones listed (the domain caps the list).
    pub omitted: usize,
    pub cid: Option<String>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// The same error with each `list[i]` in its fields and message (the first level of that
    /// name only) said as `list[places[i]]`: the places in the request of entries taken out of
    /// it before it was read (a report's null operations).
    pub fn renumbered(mut self, list: &str, places: &[usize]) -> AppError {
        let renumber = |text: &str| -> String {
            let open = format!("{list}[");
            let mut out = String::with_capacity(text.len());
            let mut rest = text;
            while let Some(at) = rest.find(&open) {
                let (before, after) = rest.split_at(at + open.len());
                out.push_str(before);
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                let place = after[..digits].parse::<usize>().ok().and_then(|i| places.get(i));
                match (place, after[digits..].starts_with(']')) {
                    (Some(place), true) => out.push_str(&place.to_string()),
                    _ => out.push_str(&after[..digits]),
                }
                rest = &after[digits..];
            }
            out.push_str(rest);
            out
        };
        self.message = renumber(&self.message);
        for problem in &mut self.problems {
            problem.field = renumber(&problem.field);
            problem.message = renumber(&problem.message);
        }
        self
    }

    pub fn new(code: impl Into<Code>, message: impl Into<String>) -> AppError {
        AppError {
            code: code.into(),
            message: message.into(),
            problems: Vec::new(),
            omitted: 0,
            cid: None,
        }
    }

    /// TIMEOUT: the read models did not reach the position the client asked for in time.
    pub fn timeout(message: impl Into<String>) -> AppError {
        AppError::new(Code::Timeout, message)
    }

    pub fn with_cid(mut self, cid: &str) -> AppError {
        self.cid = Some(cid.to_string());
        self
    }

    /// NOT_FOUND naming the object. Also the answer for objects the caller may not see, so
    /// nobody learns that they exist (DOMAIN.md §10).
    pub fn not_found(kind: &str, id: &str) -> AppError {
        AppError::new(Code::NotFound, format!("{kind} {id:?} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(Code::Forbidden, message)
    }

    pub fn unauthenticated() -> AppError {
        AppError::new(
            Code::Unauthenticated,
            "authentication required: send a valid bearer token (Authorization: Bearer <token>)",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(Code::BadRequest, message)
    }

    pub fn conflict(message: impl Into<String>) -> AppError {
        AppError::new(Code::Conflict, message)
    }

    /// VALIDATION with one problem.
    pub fn invalid(field: &str, message: impl Into<String>) -> AppError {
        let message = message.into();
        AppError {
            code: Code::Validation,
            // A problem of the whole (field "", named later by `within`) is its message alone.
            message: if field.is_empty() { message.clone() } else { format!("{field}: {message}") },
            problems: vec![FieldError { field: field.to_string(), message }],
            omitted: 0,
            cid: None,
        }
    }

    /// VALIDATION listing every problem; `context` names the object (e.g. `agenda "a1"`).
    pub fn validation(context: &str, errors: ValidationErrors) -> AppError {
        AppError {
            code: Code::Validation,
            message: format!("{context} is invalid: {errors}"),
            problems: errors.errors,
            omitted: errors.omitted,
            cid: None,
        }
    }

    /// A VALIDATION refusal of an agenda that also names the misspelt keys it holds
    /// (`pop_domain::wire::misspelt_agenda_keys`, their paths inside `root`): unknown keys are
    /// ignored for POP's clients, so a misspelt one is often why the agenda was refused
    /// (newcomer61 M1: `"operatoins"` was refused as an agenda without operations, the key
    /// unnamed). Any other error is as it was.
    pub fn with_misspelt(mut self, root: &str, misspelt: &[(String, String)]) -> AppError {
        if self.code != Code::Validation || misspelt.is_empty() {
            return self;
        }
        let said: Vec<&str> = misspelt.iter().map(|(_, said)| said.as_str()).collect();
        self.message = format!(
            "{} (and {}: pop ignores keys it does not know)",
            self.message,
            said.join("; ")
        );
        for (path, said) in misspelt {
            self.problems.push(FieldError {
                field: pop_domain::error::join_path(root, path),
                message: said.clone(),
            });
        }
        self
    }

    /// The same error about an element of a list: every problem's field (and the message)
    /// prefixed with `path` (e.g. `agendas[2]`), so the caller learns which element is at fault.
    pub fn within(mut self, path: &str) -> AppError {
        for p in &mut self.problems {
            p.field = pop_domain::error::join_path(path, &p.field);
        }
        self.message = format!("{path}: {}", self.message);
        self
    }

    /// The refusal of a list whose elements were refused (each named by [`AppError::within`]):
    /// the first that is not VALIDATION (an element the caller may not submit says so alone),
    /// else one VALIDATION listing every element's problems, as far as
    /// [`MAX_REPORTED_PROBLEMS`] goes (the elements past it are counted).
    pub fn of_list(mut refused: Vec<AppError>) -> AppError {
        if let Some(i) = refused.iter().position(|e| e.code != Code::Validation) {
            return refused.swap_remove(i);
        }
        if refused.len() == 1 {
            return refused.swap_remove(0);
        }
        let mut all = AppError::new(Code::Validation, String::new());
        let mut messages = Vec::with_capacity(refused.len());
        // The problems of elements left out whole; an element's own message says what it left
        // out of its list (review-s42: counted twice).
        let mut left_out = 0;
        for e in refused {
            if all.problems.len() + e.problems.len() > MAX_REPORTED_PROBLEMS {
                left_out += e.problems.len() + e.omitted;
                continue;
            }
            messages.push(e.message);
            all.omitted += e.omitted;
            all.problems.extend(e.problems);
        }
        all.omitted += left_out;
        all.message = messages.join("; ");
        if left_out > 0 {
            all.message.push_str(&format!("; and {left_out} more problems not listed"));
        }
        all
    }

    /// INTERNAL: the detail goes to the log, never to the client.
    pub fn internal(what: &str, detail: &dyn std::error::Error) -> AppError {
        tracing::error!(error = %ErrorChain(detail), what, cid = &*serving_cid(), "internal error");
        AppError::new(Code::Internal, format!("internal error while {what}; see the server log"))
    }
}

impl From<FieldError> for AppError {
    fn from(e: FieldError) -> AppError {
        AppError::invalid(&e.field, e.message)
    }
}

/// A domain refusal: its code, and its validation problems when it has them.
pub trait Refusal: std::error::Error + Send + Sync + 'static {
    fn code(&self) -> ErrorCode;
    fn problems(&self) -> Option<&ValidationErrors> {
        None
    }
    /// The field a refusal that is not a validation names (said as its one problem).
    fn field(&self) -> Option<String> {
        None
    }
}

impl Refusal for AgendaError {
    fn code(&self) -> ErrorCode {
        AgendaError::code(self)
    }
    fn field(&self) -> Option<String> {
        AgendaError::field(self)
    }
    fn problems(&self) -> Option<&ValidationErrors> {
        match self {
            AgendaError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl Refusal for ConfigError {
    fn code(&self) -> ErrorCode {
        ConfigError::code(self)
    }
    fn problems(&self) -> Option<&ValidationErrors> {
        match self {
            ConfigError::Invalid { errors, .. } => Some(errors),
            _ => None,
        }
    }
}

impl Refusal for BindingError {
    fn code(&self) -> ErrorCode {
        BindingError::code(self)
    }
}

/// A refusal as an app error. `subject` names the object (`agenda "a1"`) so that messages
/// like the agenda's "agenda not found" still say which one.
pub fn refused<E: Refusal>(subject: &str, e: &E) -> AppError {
    refused_within(subject, "", e)
}

/// [`refused`] for an object the request names `root`: validation problems name their
/// fields inside it (`agenda.params.maximumAttempts`).
fn refused_within<E: Refusal>(subject: &str, root: &str, e: &E) -> AppError {
    let code = e.code();
    if let Some(problems) = e.problems() {
        return AppError::validation(subject, problems.clone().within(root));
    }
    let message = match code {
        ErrorCode::NotFound => format!("{subject} not found"),
        // Said once when the refusal names its subject itself (newcomer6: `agenda "job-1":
        // agenda "job-1" already exists`).
        _ => match e.to_string() {
            said if said.starts_with(subject) => said,
            said => format!("{subject}: {said}"),
        },
    };
    match e.field() {
        Some(field) => {
            let field = pop_domain::error::join_path(root, &field);
            let problem = FieldError { field, message: e.to_string() };
            AppError { problems: vec![problem], ..AppError::new(code, message) }
        }
        None => AppError::new(code, message),
    }
}

/// The binding error for the request field it concerns (DOMAIN.md §6).
pub fn binding(e: &BindingError) -> AppError {
    binding_within("", e)
}

/// [`binding`] for an agenda the request names `root`: the field is named inside it.
pub fn binding_within(root: &str, e: &BindingError) -> AppError {
    let field = pop_domain::error::join_path(root, &e.field());
    match e.code() {
        ErrorCode::Validation => AppError::invalid(&field, e.to_string()),
        // NOT_FOUND (no insight takes the agenda) names its field too, so that a client tells
        // it from an object that does not exist by more than the message (popclient59 L2).
        code => AppError {
            problems: vec![FieldError { field: field.clone(), message: e.to_string() }],
            ..AppError::new(code, format!("{field}: {e}"))
        },
    }
}

tokio::task_local! {
    /// The cid of the use case this task runs (set by `Caller::run` and `Caller::read_now`),
    /// so the log lines written while it runs name it: an operator greps the server's log for
    /// the cid a client's error printed ("internal error ...; see the server log") and finds
    /// the cause.
    pub(crate) static SERVING: String;
    /// The actor (`<role>:<principal>`, as events' metadata name it) of the read this task
    /// runs (set with [`SERVING`]; `None` for a write): a read while the store is down waits
    /// for its own writes only (`App::settle`). A write's checks against the read models
    /// (a submission's binding) still wait for every acknowledged write: decided on models
    /// without an insight an admin had just created, a submission was NOT_FOUND for good.
    pub(crate) static SERVING_ACTOR: Option<String>;
}

/// The cid of the use case running on this task, if one is ([`SERVING`]); `-` otherwise (a
/// timed process, the projections).
pub(crate) fn serving_cid() -> String {
    SERVING.try_with(String::clone).unwrap_or_else(|_| "-".to_string())
}

/// Requests refused because the store was unavailable, for [`unavailable`]'s log line: at most
/// [`UNAVAILABLE_LINES_PER_SECOND`] at WARN a second.
static UNAVAILABLE: pop_store::repeats::SharedRepeats = pop_store::repeats::SharedRepeats::new(
    std::time::Duration::from_secs(1),
    UNAVAILABLE_LINES_PER_SECOND,
);

/// WARN lines a second [`unavailable`] writes at most.
const UNAVAILABLE_LINES_PER_SECOND: u32 = 10;

/// Whether a request refused because the store (or what reads it) is unavailable is said at
/// WARN: `Some(n)` with the `n` not said since, within [`UNAVAILABLE_LINES_PER_SECOND`] lines a
/// second for all such refusals together; `None`: say it at DEBUG.
pub(crate) fn say_unavailable() -> Option<u64> {
    UNAVAILABLE.say_now()
}

/// UNAVAILABLE: the store cannot serve `what` right now. The detail goes to the log (a
/// warning: it is the storage's condition, not a bug), never to the client.
pub fn unavailable(what: &str, detail: &StoreError) -> AppError {
    // While the store stays down every request fails: each is said at WARN with its cid and
    // cause, up to a budget a second, the rest at DEBUG and counted on the next WARN (ops3am25:
    // 2,000-3,400 WARN lines per 15 s outage, two or three per request, buried the ERROR that
    // said why).
    // A write whose outcome is not known is always said: its cid is one an operator has to
    // reconcile (review-s47).
    let said = match detail.outcome_unknown() {
        true => Some(0),
        false => say_unavailable(),
    };
    match said {
        Some(unsaid) => tracing::warn!(
            error = %ErrorChain(detail),
            what,
            cid = &*serving_cid(),
            not_said_before = unsaid,
            "the event store is unavailable"
        ),
        None => tracing::debug!(
            error = %ErrorChain(detail),
            what,
            cid = &*serving_cid(),
            "the event store is unavailable"
        ),
    }
    if detail.outcome_unknown() {
        return AppError::new(
            Code::Unavailable,
            format!(
                "the event store failed while {what}, past the point where the write may be \
                 stored: whether it was is not known; read it back once the store answers (retry in \
                 {RETRY_AFTER_UNAVAILABLE_SECS} s) before sending it again, or send it again with \
                 the same ids (a repeat is refused as a duplicate, never made twice)"
            ),
        );
    }
    AppError::new(
        Code::Unavailable,
        format!(
            "the event store is unavailable while {what} (disk full, or the database restarting \
             or unreachable); nothing was done: retry in {RETRY_AFTER_UNAVAILABLE_SECS} s"
        ),
    )
}

/// A failed command: refusals by their code, a stream that kept changing as CONFLICT, a
/// deleted stream as NOT_FOUND, a request the store finds too large as BAD_REQUEST, anything
/// else as INTERNAL (logged).
pub fn execute<E: Refusal>(subject: &str, e: ExecuteError<E>) -> AppError {
    execute_within(subject, "", e)
}

/// [`execute_within`] for a command that makes its stream (a submission, a progress id
/// taken): a stream the data reaper deleted is an id used once already, a CONFLICT that says
/// so, not "not found (deleted)" (auditor17: a resubmit of a reaped agenda's id read as if
/// the caller had named something absent).
pub fn create_within<E: Refusal>(subject: &str, root: &str, e: ExecuteError<E>) -> AppError {
    match e {
        ExecuteError::Store(StoreError::StreamDeleted { .. }) => AppError::conflict(format!(
            "{subject} was used before, by an agenda since deleted (reaped): an id is never \
             used twice; choose another"
        )),
        e => execute_within(subject, root, e),
    }
}

/// [`execute`] for a command read from the request's object `root` (see [`refused`]).
pub fn execute_within<E: Refusal>(subject: &str, root: &str, e: ExecuteError<E>) -> AppError {
    match e {
        ExecuteError::Refused(r) => refused_within(subject, root, &r),
        ExecuteError::Conflict { attempts, .. } => AppError::conflict(format!(
            "{subject} kept changing under concurrent writers; gave up after {attempts} attempts, retry"
        )),
        // What the request sent is too large to store as one event: a problem of the value at
        // `root` (a report's results together, say), not a malformed request.
        ExecuteError::Store(s @ StoreError::LimitExceeded { .. }) if !root.is_empty() => {
            AppError::invalid(
                root,
                format!(
                    "{subject} is too large to store: {s}; send less (smaller results, payloads, \
                     params or diagnostics)"
                ),
            )
        }
        ExecuteError::Store(s) => store(subject, &s),
        ExecuteError::Codec(c) => {
            AppError::internal(&format!("encoding or decoding events of {subject}"), &c)
        }
        e @ (ExecuteError::Interrupted { .. } | ExecuteError::ChainBroken) => {
            AppError::internal(&format!("writing {subject}"), &e)
        }
    }
}

/// A store failure (see [`execute`]).
pub fn store(subject: &str, e: &StoreError) -> AppError {
    match e {
        StoreError::StreamDeleted { .. } => {
            AppError::new(Code::NotFound, format!("{subject} not found (deleted)"))
        }
        StoreError::LimitExceeded { .. } => {
            AppError::bad_request(format!("{subject} is too large to store: {e}"))
        }
        // Only a client's id makes a stream name invalid.
        StoreError::InvalidStreamName { reason, .. } => {
            AppError::bad_request(format!("{subject} cannot exist: its stream name {reason}"))
        }
        StoreError::WrongExpectedVersion { .. } => {
            AppError::conflict(format!("{subject} changed concurrently; retry"))
        }
        _ if e.is_unavailable() => unavailable(&format!("storing or reading {subject}"), e),
        // No retry helps, and the operator has to act (newcomer55 H2: "see the server log").
        // The store says it at ERROR once (`EventStore::damaged`); each request that meets it
        // only at DEBUG, or every request would write an ERROR line for as long as it lasts.
        _ if e.is_damaged_file() => {
            tracing::debug!(error = %ErrorChain(e), subject, cid = &*serving_cid(), "damaged store file");
            AppError::new(
                Code::Internal,
                format!(
                    "storing or reading {subject} failed: the server's event store file is \
                     damaged, and a retry will not help; the operator must repair or restore it \
                     (the server's /readyz and log say how)"
                ),
            )
        }
        _ => AppError::internal(&format!("storing or reading {subject}"), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals for an unavailable store share one budget of WARN lines a second, the reads
    /// that wait for projections that cannot read the log included (ops3am53: one line per
    /// read, 60-70 a second).
    #[test]
    fn refusals_for_an_unavailable_store_share_a_budget_of_lines() {
        let said = (0..200).filter(|_| say_unavailable().is_some()).count();
        // Within one second, or two if the loop crossed into the next.
        let budget = UNAVAILABLE_LINES_PER_SECOND as usize;
        assert!(said >= 1 && said <= 2 * budget, "{said} of 200 said");
    }

    /// Entries taken out of a list are said at their places as sent, at the first level of the
    /// list's name only.
    #[test]
    fn a_renumbered_error_names_each_entry_at_its_place_as_sent() {
        let e = AppError::invalid("agendaProgress.operationProgress[1].diagnosticEvents[0]", "bad")
            .renumbered("operationProgress", &[1, 3]);
        assert_eq!(e.problems[0].field, "agendaProgress.operationProgress[3].diagnosticEvents[0]");
        assert!(e.message.contains("operationProgress[3].diagnosticEvents[0]"), "{}", e.message);
        // Past the places known, or not an index: as it was.
        let e =
            AppError::invalid("operationProgress[7]", "x").renumbered("operationProgress", &[2]);
        assert_eq!(e.problems[0].field, "operationProgress[7]");
        let e = AppError::invalid("operationProgress[]", "x").renumbered("operationProgress", &[2]);
        assert_eq!(e.problems[0].field, "operationProgress[]");
    }

    /// Every code is in [`Code::ALL`] (the REST contract's enum is made from it): a new code
    /// fails to compile here until this match, and so the list, names it.
    #[test]
    fn every_code_is_listed() {
        for code in Code::ALL {
            let listed = match code {
                Code::Validation
                | Code::NotFound
                | Code::Forbidden
                | Code::Unauthenticated
                | Code::Conflict
                | Code::BadRequest
                | Code::Internal
                | Code::Timeout
                | Code::QueryTooCostly
                | Code::ResponseTooLarge
                | Code::DeadlineExceeded
                | Code::Busy
                | Code::Unavailable
                | Code::QuotaExceeded => Code::ALL.iter().filter(|c| **c == code).count(),
            };
            assert_eq!(listed, 1, "{code:?}");
        }
    }

    #[test]
    fn refusals_keep_their_codes() {
        let e = refused("agenda \"a\"", &AgendaError::NotFound);
        assert_eq!((e.code, e.message.as_str()), (Code::NotFound, "agenda \"a\" not found"));
        let e = refused("agenda \"a\"", &AgendaError::AgendaCancelled);
        assert_eq!(e.code, Code::Conflict);
        let e = binding(&BindingError::UnknownCustomer { customer_id: "x".into() });
        assert_eq!((e.code, e.problems[0].field.as_str()), (Code::Validation, "customerId"));
    }

    #[test]
    fn store_details_do_not_leak() {
        // An IO failure is the storage's condition: UNAVAILABLE (retry), detail in the log.
        let e = store(
            "agenda \"a\"",
            &StoreError::backend("reading", std::io::Error::other("disk /dev/sda1 on fire")),
        );
        assert_eq!(e.code, Code::Unavailable);
        assert!(!e.message.contains("sda1"), "{}", e.message);
        // A failure that is not (here: corrupt rows): INTERNAL, detail in the log.
        let e = store("agenda \"a\"", &StoreError::Corrupt("row 7 of /dev/sda1".into()));
        assert_eq!(e.code, Code::Internal);
        assert!(!e.message.contains("sda1"), "{}", e.message);
    }

    #[test]
    fn codes_spell_as_domain_md_says() {
        assert_eq!(Code::from(ErrorCode::NotFound).as_str(), "NOT_FOUND");
        assert_eq!(Code::Timeout.as_str(), "TIMEOUT");
    }
}
