//! Error vocabulary shared by every layer: the machine-readable codes of DOMAIN.md §11 and the
//! validation report that lists every problem found (capped), each naming its field.

use serde::{Deserialize, Serialize};

/// The machine-readable error codes of DOMAIN.md §11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Validation,
    NotFound,
    Forbidden,
    Unauthenticated,
    Conflict,
    BadRequest,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Validation => "VALIDATION",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// One problem with one field, e.g. `operations[2].params.dependsOn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// At most this many problems are reported; more are counted, not listed, so a hostile payload
/// cannot make the error larger than the request.
pub const MAX_REPORTED_PROBLEMS: usize = 50;

/// Every problem found in one request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
    /// Problems found beyond [`MAX_REPORTED_PROBLEMS`].
    pub omitted: usize,
}

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.errors.len() < MAX_REPORTED_PROBLEMS {
            self.errors.push(FieldError { field: field.into(), message: message.into() });
        } else {
            self.omitted += 1;
        }
    }
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.omitted == 0
    }
    /// `Ok(())` when nothing was found, else the report.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The same problems with every field placed inside `root`, the name of the object in the
    /// request: `operations[1].name` within `agenda` is `agenda.operations[1].name`. Rules
    /// name fields relative to the object they check; the caller knows where it sits.
    pub fn within(mut self, root: &str) -> ValidationErrors {
        for e in &mut self.errors {
            e.field = join_path(root, &e.field);
        }
        self
    }
}

/// A path inside `root`: `root.path`, or `root[0]...` for a path that starts with an index;
/// an empty path (or `.`, the root in `serde_path_to_error`'s notation) is `root` itself, and
/// an empty root leaves the path as it is.
pub fn join_path(root: &str, path: &str) -> String {
    match (root, path) {
        (root, "" | ".") => root.to_string(),
        ("", path) => path.to_string(),
        (root, path) if path.starts_with('[') => format!("{root}{path}"),
        (root, path) => format!("{root}.{path}"),
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        if self.omitted > 0 {
            write!(f, "; and {} more problems not listed", self.omitted)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// An error with its sources, `outer: inner: …`, for one log line. One helper for every crate:
/// each layer's message describes its own layer only, so the chain reads without repetition.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    /// Each error of the chain once: a source whose text the error before it already ends
    /// with (tokio-postgres writes its cause into its own text, and gives it as its source too:
    /// ops3am16 read "error connecting to server: error connecting to server: …") is not said
    /// again.
    ///
    /// On one line: a line break (PostgreSQL's `HINT:` after its message) is written `; ` and
    /// other control characters escaped (ops3am16: the hint stood as a log line of its own).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut said = one_line(&self.0.to_string());
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = one_line(&s.to_string());
            // Said already when it is what came before, or its last part (review-s41: not any
            // ending: "…connection closed" and a source "closed").
            if said != text && !said.ends_with(&format!(": {text}")) {
                said.push_str(": ");
                said.push_str(&text);
            }
            source = s.source();
        }
        f.write_str(&said)
    }
}

fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim_end().chars() {
        match c {
            '\n' => out.push_str("; "),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod chain_tests {
    use super::ErrorChain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_source_once_in_order() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: inner");
    }

    /// An error that writes its cause into its own text, and gives it as its source too.
    #[derive(Debug, thiserror::Error)]
    #[error("connecting: {0}")]
    struct Saying(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("pool: {0}")]
    struct Pool(#[source] Saying);

    #[test]
    fn a_chain_is_one_line() {
        let e =
            Outer(std::io::Error::other("could not extend file\nHINT: Check free disk space.\n"));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "outer: could not extend file; HINT: Check free disk space."
        );
        let e = Outer(std::io::Error::other("a\u{1b}[2Kb"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: a\\u{1b}[2Kb");
    }

    #[test]
    fn a_source_already_said_is_not_said_again() {
        let e = Pool(Saying(std::io::Error::other("refused")));
        assert_eq!(ErrorChain(&e).to_string(), "pool: connecting: refused");
        // A source that only ends the text by chance is said.
        let e = Outer(std::io::Error::other("closed"));
        assert_eq!(ErrorChain(&Closing(e)).to_string(), "connection closed: outer: closed");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("connection closed")]
    struct Closing(#[source] Outer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_placed_inside_their_root() {
        assert_eq!(join_path("agenda", "operations[1].name"), "agenda.operations[1].name");
        assert_eq!(join_path("agendas", "[0].id"), "agendas[0].id");
        assert_eq!(join_path("agenda", "."), "agenda");
        assert_eq!(join_path("agenda", ""), "agenda");
        assert_eq!(join_path("", "customerId"), "customerId");
        assert_eq!(join_path("", "."), "");
        let mut errors = ValidationErrors::new();
        errors.push("customerId", "blank");
        errors.push("operations[0].payload", "unknown");
        let fields: Vec<_> = errors.within("agenda").errors.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["agenda.customerId", "agenda.operations[0].payload"]);
    }
}
