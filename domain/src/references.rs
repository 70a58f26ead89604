//! The reference grammar between operations (DOMAIN.md §5): finding `@<name::pointer?fallback>`
//! in payload strings, the dependencies they imply, and replacing them with JSON values.
//!
//! Grammar, as parsed here:
//! - a reference starts at `@<` and ends at the next `>`;
//! - inside, the name runs up to `::` (a JSON Pointer follows) or `?` (a fallback follows);
//! - a name is never empty and holds no whitespace, `<`, `>` or `?`, so ordinary text such as
//!   `a @< b` or `@<b c>` is left alone instead of being mistaken for a reference;
//! - the pointer runs up to the first `?`; a missing leading `/` is added; empty or `/` means
//!   the whole value;
//! - the fallback is the rest: its text when the pointer is missing from a known value, or null
//!   when it is empty.
//!
//! Replacement is not recursive: text that a reference brings in is never scanned again, so a
//! value cannot smuggle in references of its own and resolution always terminates.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::model::Operation;
use crate::params::{self, Params};

/// Where every reference starts.
pub const REFERENCE_START: &str = "@<";
/// Where every reference ends.
pub const REFERENCE_END: char = '>';
/// Separates a reference's name from its JSON Pointer.
pub const POINTER_SEPARATOR: &str = "::";
/// Separates the pointer from the fallback.
pub const FALLBACK_SEPARATOR: char = '?';
/// The suffix naming an operation's output: `@<N.out>` is the output of operation `N`.
pub const OUTPUT_SUFFIX: &str = ".out";
/// Names starting with this are tokens the engine supplies, never operations.
pub const TOKEN_PREFIX: &str = "pop.";

/// The tokens of DOMAIN.md §5.
pub mod tokens {
    /// The id of the agenda the operation belongs to.
    pub const AGENDA_ID: &str = "pop.agendaId";
    /// The name of the operation whose payload is being resolved.
    pub const OPERATION_NAME: &str = "pop.operationName";
    /// In templates: the payload the template is run with.
    pub const PAYLOAD: &str = "pop.payload";
    /// In templates: POP's other name for the run payload (its `DefaultAgendaFactory` maps
    /// both names to it), so templates written for POP keep working.
    pub const TRANSFORM_REQUEST: &str = "pop.transformRequest";

    /// Whether `name` names the run payload of a template.
    pub fn is_payload(name: &str) -> bool {
        name == PAYLOAD || name == TRANSFORM_REQUEST
    }
}

/// One reference found in a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    /// The whole reference as written, `@<` to `>` included.
    pub text: &'a str,
    /// The name looked up: an operation output (`N.out`), an operation, a token or (in
    /// templates) a static parameter.
    pub name: &'a str,
    /// The JSON Pointer as written (without `::`), if any.
    pub pointer: Option<&'a str>,
    /// The fallback as written (without `?`), if any.
    pub fallback: Option<&'a str>,
    /// Byte offset of `@<` in the scanned string.
    pub start: usize,
    /// Byte offset just past `>`.
    pub end: usize,
}

impl Reference<'_> {
    /// The operation this reference depends on: the name with `.out` stripped; `None` for
    /// `pop.` tokens, which no operation produces.
    pub fn operation_name(&self) -> Option<&str> {
        operation_name(self.name)
    }

    /// The pointer in RFC 6901 form, or `None` when the whole value is meant.
    pub fn normalized_pointer(&self) -> Option<String> {
        self.pointer.and_then(normalize_pointer)
    }
}

/// The operation a reference name depends on (`N.out` and `N` both name `N`); `None` for
/// tokens.
pub fn operation_name(reference_name: &str) -> Option<&str> {
    if is_token(reference_name) {
        return None;
    }
    Some(reference_name.strip_suffix(OUTPUT_SUFFIX).unwrap_or(reference_name))
}

/// Whether a reference name is an engine token (`pop.` prefix).
pub fn is_token(reference_name: &str) -> bool {
    reference_name.starts_with(TOKEN_PREFIX)
}

/// The reference name of an operation's output, `N.out`.
pub fn output_name(operation_name: &str) -> String {
    format!("{operation_name}{OUTPUT_SUFFIX}")
}

/// A pointer in RFC 6901 form: a missing leading `/` is added; empty or `/` mean the whole
/// value (`None`).
pub fn normalize_pointer(pointer: &str) -> Option<String> {
    match pointer {
        "" | "/" => None,
        p if p.starts_with('/') => Some(p.to_string()),
        p => Some(format!("/{p}")),
    }
}

/// Every reference in a string, left to right.
pub fn references_in(text: &str) -> References<'_> {
    References { text, position: 0 }
}

/// Iterator over the references of one string; see [`references_in`].
#[derive(Debug, Clone)]
pub struct References<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Iterator for References<'a> {
    type Item = Reference<'a>;

    fn next(&mut self) -> Option<Reference<'a>> {
        // Each round either returns a reference or moves past one `@<`, so the loop ends.
        loop {
            let rest = self.text.get(self.position..)?;
            let start = self.position + rest.find(REFERENCE_START)?;
            let inner_start = start + REFERENCE_START.len();
            let after = self.text.get(inner_start..)?;
            let Some(inner_len) = after.find(REFERENCE_END) else {
                // No closing `>` anywhere after this point: no more references.
                self.position = self.text.len();
                return None;
            };
            let end = inner_start + inner_len + REFERENCE_END.len_utf8();
            match parse_inner(&after[..inner_len]) {
                Some((name, pointer, fallback)) => {
                    self.position = end;
                    return Some(Reference {
                        text: &self.text[start..end],
                        name,
                        pointer,
                        fallback,
                        start,
                        end,
                    });
                }
                None => self.position = inner_start,
            }
        }
    }
}

/// Splits `name::pointer?fallback`; `None` when the name is not a valid reference name.
fn parse_inner(inner: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    // The name ends at the first `::` or `?`; a single `:` stays in the name.
    let name_end = match (inner.find(POINTER_SEPARATOR), inner.find(FALLBACK_SEPARATOR)) {
        (Some(p), Some(f)) => Some(p.min(f)),
        (p, f) => p.or(f),
    };
    let (name, rest) = match name_end {
        Some(i) => inner.split_at(i),
        None => (inner, ""),
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '<' || c == '>') {
        return None;
    }
    let (pointer, fallback) = if let Some(after) = rest.strip_prefix(POINTER_SEPARATOR) {
        match after.split_once(FALLBACK_SEPARATOR) {
            Some((p, f)) => (Some(p), Some(f)),
            None => (Some(after), None),
        }
    } else if let Some(f) = rest.strip_prefix(FALLBACK_SEPARATOR) {
        (None, Some(f))
    } else {
        (None, None)
    };
    Some((name, pointer, fallback))
}

/// The names listed in `params.dependsOn`: a comma-separated string, or an array of such
/// strings; entries trimmed, empty ones skipped. Numbers count as their text (an operation may
/// be named `1`); objects and nested arrays name nothing (validation reports them).
pub fn depends_on(params: &Params) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |v: &Value| {
        if let Some(text) = params::value_as_text(v) {
            names.extend(
                text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string),
            );
        }
    };
    match params.get(params::keys::DEPENDS_ON) {
        Some(Value::Array(items)) => items.iter().for_each(&mut add),
        Some(v) => add(v),
        None => {}
    }
    names
}

/// Names of the operations `op` depends on: every operation named by a reference in its payload
/// (string values anywhere in the tree, never keys; `.out` and pointer stripped; `pop.` tokens
/// excluded) and every name in `params.dependsOn`.
pub fn dependencies(op: &Operation) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    op.payload.for_each_string(&mut |text| {
        for r in references_in(text) {
            if let Some(name) = r.operation_name() {
                names.insert(name.to_string());
            }
        }
    });
    names.extend(depends_on(&op.params).into_iter().filter(|n| !is_token(n)));
    names
}

/// Calls `f` with every string value in a JSON tree (object keys excluded).
pub fn for_each_string(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| for_each_string(v, f)),
        Value::Object(map) => map.values().for_each(|v| for_each_string(v, f)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Why a reference could not be replaced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    /// The name is known but its value has nothing at the pointer, and no fallback was given.
    #[error(
        "{reference} at {at:?}: {name:?} has no value at {pointer:?} (add a fallback such as `?` to allow that)"
    )]
    MissingPointer { reference: String, name: String, pointer: String, at: String },
    /// An object or array cannot become part of a longer text.
    #[error(
        "{reference} at {at:?} is {kind} and cannot be embedded in text; make the reference the whole string"
    )]
    NotScalarInText { reference: String, kind: &'static str, at: String },
}

impl ReferenceError {
    /// The reference as written, e.g. `@<a.out::/x>`.
    pub fn reference(&self) -> &str {
        match self {
            ReferenceError::MissingPointer { reference, .. }
            | ReferenceError::NotScalarInText { reference, .. } => reference,
        }
    }

    /// The JSON Pointer (RFC 6901) of the string in the resolved tree that holds the reference;
    /// empty for the root.
    pub fn at(&self) -> &str {
        match self {
            ReferenceError::MissingPointer { at, .. }
            | ReferenceError::NotScalarInText { at, .. } => at,
        }
    }

    pub fn code(&self) -> crate::ErrorCode {
        crate::ErrorCode::Validation
    }
}

/// Replaces the references in every string value of `value` (keys are never touched).
///
/// `lookup` answers a reference name (`N.out`, `pop.agendaId`, a template's static parameter,
/// ...) with its value, or `None` when the name is not (yet) known; such references stay as
/// written so a later pass (e.g. run time after template expansion) can resolve them.
///
/// - A string that is exactly one reference becomes the referenced value, type kept.
/// - In a longer string each scalar reference is replaced by its text (null as `null`); an
///   object or array there is an error.
/// - A pointer missing from a known value gives the fallback (`?7` → `"7"`, `?` → null), or an
///   error without one.
pub fn resolve(
    value: &Value,
    lookup: &impl Fn(&str) -> Option<Value>,
) -> Result<Value, ReferenceError> {
    let mut at = String::new();
    resolve_at(value, lookup, &mut at)
}

fn resolve_at(
    value: &Value,
    lookup: &impl Fn(&str) -> Option<Value>,
    at: &mut String,
) -> Result<Value, ReferenceError> {
    match value {
        Value::String(s) => resolve_str_at(s, lookup, at),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = at.len();
                at.push('/');
                at.push_str(&i.to_string());
                out.push(resolve_at(item, lookup, at)?);
                at.truncate(len);
            }
            Ok(Value::Array(out))
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (key, item) in map {
                let len = at.len();
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                out.insert(key.clone(), resolve_at(item, lookup, at)?);
                at.truncate(len);
            }
            Ok(Value::Object(out))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(value.clone()),
    }
}

/// [`resolve`] for one string.
pub fn resolve_str(
    text: &str,
    lookup: &impl Fn(&str) -> Option<Value>,
) -> Result<Value, ReferenceError> {
    resolve_str_at(text, lookup, "")
}

fn resolve_str_at(
    text: &str,
    lookup: &impl Fn(&str) -> Option<Value>,
    at: &str,
) -> Result<Value, ReferenceError> {
    let mut refs = references_in(text).peekable();
    let Some(first) = refs.peek().copied() else {
        return Ok(Value::String(text.to_string()));
    };
    if first.start == 0 && first.end == text.len() {
        // Exactly one reference: the value itself, type kept.
        return Ok(lookup_reference(&first, lookup, at)?
            .unwrap_or_else(|| Value::String(text.to_string())));
    }
    let mut out = String::with_capacity(text.len());
    let mut copied_to = 0;
    for r in refs {
        out.push_str(&text[copied_to..r.start]);
        copied_to = r.end;
        match lookup_reference(&r, lookup, at)? {
            None => out.push_str(r.text),
            Some(Value::String(s)) => out.push_str(&s),
            Some(Value::Null) => out.push_str("null"),
            Some(v @ (Value::Bool(_) | Value::Number(_))) => out.push_str(&v.to_string()),
            Some(Value::Array(_)) => return Err(not_scalar(&r, "an array", at)),
            Some(Value::Object(_)) => return Err(not_scalar(&r, "an object", at)),
        }
    }
    out.push_str(&text[copied_to..]);
    Ok(Value::String(out))
}

fn not_scalar(r: &Reference<'_>, kind: &'static str, at: &str) -> ReferenceError {
    ReferenceError::NotScalarInText { reference: r.text.to_string(), kind, at: at.to_string() }
}

/// The value a reference stands for; `Ok(None)` when its name is unknown.
fn lookup_reference(
    r: &Reference<'_>,
    lookup: &impl Fn(&str) -> Option<Value>,
    at: &str,
) -> Result<Option<Value>, ReferenceError> {
    let Some(value) = lookup(r.name) else {
        return Ok(None);
    };
    let Some(pointer) = r.normalized_pointer() else {
        return Ok(Some(value));
    };
    match (value.pointer(&pointer), r.fallback) {
        (Some(found), _) => Ok(Some(found.clone())),
        (None, Some("")) => Ok(Some(Value::Null)),
        (None, Some(fallback)) => Ok(Some(Value::String(fallback.to_string()))),
        (None, None) => Err(ReferenceError::MissingPointer {
            reference: r.text.to_string(),
            name: r.name.to_string(),
            pointer,
            at: at.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn lookup_in(known: Value) -> impl Fn(&str) -> Option<Value> {
        move |name| known.get(name).cloned()
    }

    fn check(payload: Value, known: Value, expected: Value) {
        assert_eq!(resolve(&payload, &lookup_in(known)).unwrap(), expected);
    }

    fn op(payload: Value, params: Value) -> Operation {
        Operation {
            name: "op".into(),
            payload: payload.into(),
            params: serde_json::from_value(params).unwrap(),
            ..Operation::default()
        }
    }

    #[test]
    fn parses_name_pointer_and_fallback() {
        let found: Vec<_> = references_in("x @<a> @<b.out::/p/q> @<c::r?7> @<d?> @<e::>")
            .map(|r| (r.name, r.pointer, r.fallback))
            .collect();
        assert_eq!(
            found,
            vec![
                ("a", None, None),
                ("b.out", Some("/p/q"), None),
                ("c", Some("r"), Some("7")),
                ("d", None, Some("")),
                ("e", Some(""), None),
            ]
        );
    }

    #[test]
    fn ordinary_text_is_not_a_reference() {
        for text in ["a @< b", "@<>", "@<b c>", "no end @<a", "@<::/x>", "x@<?>"] {
            assert_eq!(references_in(text).count(), 0, "{text}");
        }
        // A broken start does not hide a real reference after it.
        let names: Vec<_> = references_in("@<@<a>").map(|r| r.name).collect();
        assert_eq!(names, vec!["a"]);
    }

    #[test]
    fn single_colon_stays_in_the_name() {
        let r = references_in("@<ns:a::/x>").next().unwrap();
        assert_eq!((r.name, r.pointer), ("ns:a", Some("/x")));
    }

    #[test]
    fn pointer_normalization() {
        assert_eq!(normalize_pointer(""), None);
        assert_eq!(normalize_pointer("/"), None);
        assert_eq!(normalize_pointer("a/b").as_deref(), Some("/a/b"));
        assert_eq!(normalize_pointer("/a/b").as_deref(), Some("/a/b"));
    }

    #[test]
    fn whole_string_reference_keeps_type() {
        let known = json!({
            "o": {"k": 1}, "a": [1, 2], "s": "text", "n": 4.5, "b": true, "z": null
        });
        for (name, expected) in known.as_object().unwrap().clone() {
            check(json!(format!("@<{name}>")), known.clone(), expected);
        }
    }

    #[test]
    fn booleans_are_substituted_too() {
        check(json!({"flag": "@<b>"}), json!({"b": false}), json!({"flag": false}));
    }

    #[test]
    fn scalars_in_longer_text_become_text() {
        check(json!("--@<a>--@<b>"), json!({"a": 85, "b": 95}), json!("--85--95"));
        check(json!("v=@<z>"), json!({"z": null}), json!("v=null"));
        check(json!("@<s>/@<t>"), json!({"s": "x", "t": true}), json!("x/true"));
    }

    #[test]
    fn object_in_longer_text_is_an_error_naming_the_reference() {
        let err = resolve(&json!({"k": ["x@<o>"]}), &lookup_in(json!({"o": {"a": 1}})));
        let err = err.unwrap_err();
        assert_eq!(err.reference(), "@<o>");
        assert_eq!(err.at(), "/k/0");
        assert!(err.to_string().contains("@<o>"), "{err}");
        assert!(matches!(err, ReferenceError::NotScalarInText { kind: "an object", .. }));
    }

    #[test]
    fn unknown_names_stay_as_written() {
        check(json!("@<later.out::/x?1>"), json!({}), json!("@<later.out::/x?1>"));
        check(json!("a @<later.out> @<k>"), json!({"k": 1}), json!("a @<later.out> 1"));
    }

    #[test]
    fn pointers_and_fallbacks() {
        let known = json!({"x": {"a": {"b": 3}}, "sample.1.out": {"actionData": [7]}});
        check(json!("@<x::/a/b>"), known.clone(), json!(3));
        check(json!("@<x::a/b>"), known.clone(), json!(3));
        check(json!("@<x::/>"), known.clone(), json!({"a": {"b": 3}}));
        check(json!("@<x::>"), known.clone(), json!({"a": {"b": 3}}));
        check(json!("@<sample.1.out::/actionData/0>"), known.clone(), json!(7));
        check(json!("@<x::/a/c?7>"), known.clone(), json!("7"));
        check(json!("@<x::/a/c?>"), known.clone(), json!(null));
        check(json!("n=@<x::/a/c?>"), known.clone(), json!("n=null"));
        // The fallback only applies to a missing pointer, not to a present value.
        check(json!("@<x::/a/b?7>"), known.clone(), json!(3));
        let err = resolve(&json!("@<x::/a/c>"), &lookup_in(known)).unwrap_err();
        assert!(
            matches!(err, ReferenceError::MissingPointer { ref pointer, .. } if pointer == "/a/c")
        );
    }

    #[test]
    fn keys_are_never_replaced() {
        check(json!({"@<a>": "@<a>"}), json!({"a": 1}), json!({"@<a>": 1}));
    }

    #[test]
    fn replacement_is_not_recursive() {
        check(json!("@<a>"), json!({"a": "@<b>", "b": 1}), json!("@<b>"));
    }

    #[test]
    fn tokens_resolve_by_name() {
        let lookup = |name: &str| match name {
            tokens::AGENDA_ID => Some(json!("ag-1")),
            tokens::OPERATION_NAME => Some(json!("encode")),
            _ => None,
        };
        let out = resolve(&json!("@<pop.agendaId>/@<pop.operationName>"), &lookup).unwrap();
        assert_eq!(out, json!("ag-1/encode"));
    }

    #[test]
    fn dependencies_from_payload_and_depends_on() {
        let o = op(
            json!({
                "a": "@<one.out::/x>",
                "list": ["prefix @<two> and @<sample.1.out::/actionData?>"],
                "@<keyref.out>": 1,
                "t": "@<pop.agendaId> @<pop.operationName>"
            }),
            json!({"dependsOn": " three, ,four "}),
        );
        let names: Vec<_> = dependencies(&o).into_iter().collect();
        assert_eq!(names, vec!["four", "one", "sample.1", "three", "two"]);
    }

    #[test]
    fn depends_on_as_array() {
        let o = op(json!(null), json!({"dependsOn": ["a, b", "c", 1, {"x": 1}]}));
        let names: Vec<_> = dependencies(&o).into_iter().collect();
        assert_eq!(names, vec!["1", "a", "b", "c"]);
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            ".*",
            "(@<|>|::|\\?|/|a|b|\\.out| |x)*",
            Just("@<a>".to_string()),
            Just("-@<b::/k?>-".to_string()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z@<>]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn resolve_never_panics(payload in arbitrary_json(), known in arbitrary_json()) {
            let lookup = |name: &str| match name {
                "a" => Some(known.clone()),
                "b" => Some(json!({"k": [1, 2]})),
                _ => None,
            };
            let _ = resolve(&payload, &lookup);
            let _ = dependencies(&Operation { payload: payload.into(), ..Operation::default() });
        }

        #[test]
        fn nothing_known_changes_nothing(payload in arbitrary_json()) {
            prop_assert_eq!(resolve(&payload, &|_: &str| None).unwrap(), payload);
        }

        #[test]
        fn text_without_references_is_kept(text in "[^@]*") {
            prop_assert_eq!(resolve_str(&text, &|_: &str| Some(json!(1))).unwrap(), json!(text));
        }
    }
}
