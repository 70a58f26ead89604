//! The API's errors (DOMAIN.md §11): every error a client sees has `extensions.code`, a
//! message naming the field or object at fault, `extensions.cid`, and for validation every
//! problem in `extensions.problems: [{field, message}]`. This module decides what leaks: store
//! and codec failures are logged with their detail and answered as a bare INTERNAL.

use async_graphql::{ErrorExtensions, Value};
use pop_domain::agenda::AgendaError;
use pop_domain::binding::BindingError;
use pop_domain::config::ConfigError;
use pop_domain::error::{ErrorChain, ErrorCode, FieldError, ValidationErrors};
use pop_store::{ExecuteError, StoreError};

/// Extension keys on a GraphQL error.
pub mod ext {
    pub const CODE: &str = "code";
    pub const CID: &str = "cid";
    pub const PROBLEMS: &str = "problems";
    pub const OMITTED: &str = "omittedProblems";
}

/// The code of an `atLeastPosition` read whose position was not reached in time. Not one of
/// DOMAIN.md §11's codes on purpose: none of them means "this replica is behind, retry", and
/// a client must be able to tell that apart from its own mistakes.
pub const TIMEOUT: &str = "TIMEOUT";

/// The code of a REST call with a method its route does not answer (HTTP 405). REST-only:
/// GraphQL has one endpoint and never answers it, so it is not one of DOMAIN.md §11's codes
/// (nor in GraphQL's schema or documents); it tells a POP client "wrong verb for this path"
/// apart from a malformed request.
pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";

/// An error answered to a client.
///
/// Deliberately not `Display`/`std::error::Error`: async-graphql converts every `Display` type
/// into its error by message alone, which would drop the code, cid and problems. Without
/// `Display`, `?` in a resolver goes through [`ApiError::into_graphql`] and keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// One of DOMAIN.md §11's codes ([`ErrorCode::as_str`]), [`TIMEOUT`], or (REST only)
    /// [`METHOD_NOT_ALLOWED`].
    pub code: &'static str,
    pub message: String,
    pub problems: Vec<FieldError>,
    /// Problems found beyond the ones listed (the domain caps the list).
    pub omitted: usize,
    pub cid: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.as_str(),
            message: message.into(),
            problems: Vec::new(),
            omitted: 0,
            cid: None,
        }
    }

    /// TIMEOUT: the read models did not reach the position the client asked for in time.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError { code: TIMEOUT, ..ApiError::new(ErrorCode::Internal, message) }
    }

    pub fn with_cid(mut self, cid: &str) -> ApiError {
        self.cid = Some(cid.to_string());
        self
    }

    /// NOT_FOUND naming the object. Also the answer for objects the caller may not see, so
    /// nobody learns that they exist (DOMAIN.md §10).
    pub fn not_found(kind: &str, id: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{kind} {id:?} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "authentication required: send a valid bearer token (Authorization: Bearer <token>)",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// VALIDATION with one problem.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            code: ErrorCode::Validation.as_str(),
            message: format!("{field}: {message}"),
            problems: vec![FieldError { field: field.to_string(), message }],
            omitted: 0,
            cid: None,
        }
    }

    /// VALIDATION listing every problem; `context` names the object (e.g. `agenda "a1"`).
    pub fn validation(context: &str, errors: ValidationErrors) -> ApiError {
        ApiError {
            code: ErrorCode::Validation.as_str(),
            message: format!("{context} is invalid: {errors}"),
            problems: errors.errors,
            omitted: errors.omitted,
            cid: None,
        }
    }

    /// INTERNAL: the detail goes to the log with the cid, never to the client.
    pub fn internal(what: &str, detail: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %ErrorChain(detail), what, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            format!("internal error while {what}; see the server log"),
        )
    }

    /// As an async-graphql error with its extensions.
    pub fn into_graphql(self) -> async_graphql::Error {
        let ApiError { code, message, problems, omitted, cid } = self;
        async_graphql::Error::new(message).extend_with(|_, e| {
            e.set(ext::CODE, code);
            if let Some(cid) = &cid {
                e.set(ext::CID, cid.as_str());
            }
            if !problems.is_empty() || code == ErrorCode::Validation.as_str() {
                e.set(ext::PROBLEMS, problems_value(&problems));
            }
            if omitted > 0 {
                e.set(ext::OMITTED, omitted as u64);
            }
        })
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        e.into_graphql()
    }
}

fn problems_value(problems: &[FieldError]) -> Value {
    Value::List(
        problems
            .iter()
            .map(|p| {
                let mut obj = async_graphql::indexmap::IndexMap::new();
                obj.insert(async_graphql::Name::new("field"), Value::from(p.field.as_str()));
                obj.insert(async_graphql::Name::new("message"), Value::from(p.message.as_str()));
                Value::Object(obj)
            })
            .collect(),
    )
}

/// A domain refusal: its code, and its validation problems when it has them.
pub trait Refusal: std::error::Error + Send + Sync + 'static {
    fn code(&self) -> ErrorCode;
    fn problems(&self) -> Option<&ValidationErrors> {
        None
    }
}

impl Refusal for AgendaError {
    fn code(&self) -> ErrorCode {
        AgendaError::code(self)
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

/// A refusal as an API error. `subject` names the object (`agenda "a1"`) so that messages
/// like the agenda's "agenda not found" still say which one.
pub fn refused<E: Refusal>(subject: &str, e: &E) -> ApiError {
    let code = e.code();
    if let Some(problems) = e.problems() {
        return ApiError::validation(subject, problems.clone());
    }
    let message = match code {
        ErrorCode::NotFound => format!("{subject} not found"),
        _ => format!("{subject}: {e}"),
    };
    ApiError::new(code, message)
}

/// The binding error for the request field it concerns (DOMAIN.md §6).
pub fn binding(e: &BindingError) -> ApiError {
    match e.code() {
        ErrorCode::Validation => ApiError::invalid(e.field(), e.to_string()),
        code => ApiError::new(code, format!("{}: {e}", e.field())),
    }
}

/// A failed command as an API error: refusals by their code, a stream that kept changing as
/// CONFLICT, a deleted stream as NOT_FOUND, a request the store finds too large as
/// BAD_REQUEST, anything else as INTERNAL (logged).
pub fn execute<E: Refusal>(subject: &str, e: ExecuteError<E>) -> ApiError {
    match e {
        ExecuteError::Refused(r) => refused(subject, &r),
        ExecuteError::Conflict { attempts, .. } => ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{subject} kept changing under concurrent writers; gave up after {attempts} attempts, retry"
            ),
        ),
        ExecuteError::Store(s) => store(subject, &s),
        ExecuteError::Codec(c) => {
            ApiError::internal(&format!("encoding or decoding events of {subject}"), &c)
        }
    }
}

/// A store failure as an API error (see [`execute`]).
pub fn store(subject: &str, e: &StoreError) -> ApiError {
    match e {
        StoreError::StreamDeleted { .. } => {
            ApiError::new(ErrorCode::NotFound, format!("{subject} not found (deleted)"))
        }
        StoreError::LimitExceeded { .. } => {
            ApiError::bad_request(format!("{subject} is too large to store: {e}"))
        }
        // Only a client's id makes a stream name invalid.
        StoreError::InvalidStreamName { reason, .. } => {
            ApiError::bad_request(format!("{subject} cannot exist: its stream name {reason}"))
        }
        StoreError::WrongExpectedVersion { .. } => {
            ApiError::new(ErrorCode::Conflict, format!("{subject} changed concurrently; retry"))
        }
        _ => ApiError::internal(&format!("storing or reading {subject}"), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_lists_every_problem() {
        let mut errors = ValidationErrors::new();
        errors.push("operations[0].name", "required");
        errors.push("customerId", "blank");
        let e = ApiError::validation("agenda \"a\"", errors).with_cid("c1").into_graphql();
        let ext = e.extensions.unwrap();
        assert_eq!(ext.get("code"), Some(&Value::from("VALIDATION")));
        assert_eq!(ext.get("cid"), Some(&Value::from("c1")));
        let Some(Value::List(problems)) = ext.get("problems") else { panic!("no problems") };
        assert_eq!(problems.len(), 2);
        assert!(e.message.contains("operations[0].name") && e.message.contains("customerId"));
    }

    #[test]
    fn refusals_keep_their_codes() {
        let e = refused("agenda \"a\"", &AgendaError::NotFound);
        assert_eq!((e.code, e.message.as_str()), ("NOT_FOUND", "agenda \"a\" not found"));
        let e = refused("agenda \"a\"", &AgendaError::AgendaCancelled);
        assert_eq!(e.code, "CONFLICT");
        let e = binding(&BindingError::UnknownCustomer { customer_id: "x".into() });
        assert_eq!((e.code, e.problems[0].field.as_str()), ("VALIDATION", "customerId"));
    }

    #[test]
    fn store_details_do_not_leak() {
        let e = store(
            "agenda \"a\"",
            &StoreError::backend("reading", std::io::Error::other("disk /dev/sda1 on fire")),
        );
        assert_eq!(e.code, "INTERNAL");
        assert!(!e.message.contains("sda1"), "{}", e.message);
    }
}
