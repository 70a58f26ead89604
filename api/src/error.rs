//! How the transports answer an [`AppError`] (DOMAIN.md §11): GraphQL gets `extensions.code`,
//! `extensions.cid` and, for validation, `extensions.problems: [{field, message}]`; the REST
//! surface maps the same [`Code`] to an HTTP status ([`crate::rest::status_of`]). The codes
//! and what leaks are the application layer's decisions (`pop_app::error`); nothing here adds
//! one, except REST's own `METHOD_NOT_ALLOWED` (in [`crate::rest`]).

use async_graphql::{ErrorExtensions, Value};
use pop_domain::error::FieldError;

pub use pop_app::error::{AppError, AppResult, Code};

/// Extension keys on a GraphQL error.
pub mod ext {
    pub const CODE: &str = "code";
    pub const CID: &str = "cid";
    pub const PROBLEMS: &str = "problems";
    pub const OMITTED: &str = "omittedProblems";
    /// `true` on an error the same request may be retried after (UNAVAILABLE).
    pub const RETRYABLE: &str = "retryable";
    /// The seconds to wait before that retry (also the response's `Retry-After`).
    pub const RETRY_AFTER: &str = "retryAfterSeconds";
}

/// The `Retry-After` seconds an error of `code` suggests, for the codes a client should
/// retry unchanged after a pause.
pub fn retry_after(code: Code) -> Option<u64> {
    match code {
        Code::Unavailable => Some(pop_app::error::RETRY_AFTER_UNAVAILABLE_SECS),
        // Too many of the caller's own requests at once (waits, expensive queries): one of
        // them ends within seconds.
        Code::Busy => Some(1),
        // Nothing was done in time (the read models did not reach a position, a request body
        // did not arrive): the same request may be sent again.
        Code::Timeout => Some(1),
        _ => None,
    }
}

/// An application error on its way to a GraphQL client. A resolver returns
/// `Result<T, GqlError>` (or converts with `?`): the conversion keeps the code, cid and
/// problems, which async-graphql's conversion of a plain message would drop.
#[derive(Debug, Clone)]
pub struct GqlError(pub AppError);

pub type GqlResult<T> = Result<T, GqlError>;

impl From<AppError> for GqlError {
    fn from(e: AppError) -> GqlError {
        GqlError(e)
    }
}

impl From<GqlError> for async_graphql::Error {
    fn from(e: GqlError) -> async_graphql::Error {
        into_graphql(e.0)
    }
}

/// An application error as an async-graphql error with its extensions.
pub fn into_graphql(e: AppError) -> async_graphql::Error {
    let AppError { code, message, problems, omitted, cid } = e;
    async_graphql::Error::new(message).extend_with(|_, ext| {
        ext.set(ext::CODE, code.as_str());
        if let Some(cid) = &cid {
            ext.set(ext::CID, cid.as_str());
        }
        if !problems.is_empty() || code == Code::Validation {
            ext.set(ext::PROBLEMS, problems_value(&problems));
        }
        if omitted > 0 {
            ext.set(ext::OMITTED, omitted as u64);
        }
        if let Some(seconds) = retry_after(code) {
            ext.set(ext::RETRYABLE, true);
            ext.set(ext::RETRY_AFTER, seconds);
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use pop_domain::error::ValidationErrors;

    #[test]
    fn validation_lists_every_problem() {
        let mut errors = ValidationErrors::new();
        errors.push("operations[0].name", "required");
        errors.push("customerId", "blank");
        let e = into_graphql(AppError::validation("agenda \"a\"", errors).with_cid("c1"));
        let Some(ext) = e.extensions else { panic!("no extensions") };
        assert_eq!(ext.get("code"), Some(&Value::from("VALIDATION")));
        assert_eq!(ext.get("cid"), Some(&Value::from("c1")));
        let Some(Value::List(problems)) = ext.get("problems") else { panic!("no problems") };
        assert_eq!(problems.len(), 2);
        assert!(e.message.contains("operations[0].name") && e.message.contains("customerId"));
    }
}
