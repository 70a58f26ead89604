//! Submission validation (DOMAIN.md §2, §5, §8): what an agenda, or the operations an expand
//! appends, must satisfy before any event is written. Every problem is listed (capped by
//! [`ValidationErrors`]), each with the field at fault and the operation named.
//!
//! An operation's result is referenced as `@<N.out>`; `@<N>` naming an operation is refused
//! with a hint, since nothing by that name exists at run time (the handler would receive the
//! literal text). Templates substitute their static parameters (`@<name>`) before this check.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::error::{FieldError, ValidationErrors};
use crate::model::{Agenda, Operation};
use crate::params::{Params, keys};
use crate::references::{
    self, OUTPUT_SUFFIX, REFERENCE_START, is_token, operation_name, references_in,
};
use crate::text::fold_case;

/// Ids name streams and read-model keys and appear in every error message (in characters).
pub const MAX_ID_LENGTH: usize = 200;

/// A `linkId` or `jobId` (in characters): keys a client chooses to find its agendas by, which
/// POP's clients often fill with URLs (a presigned S3 URL runs to 1–2 KB; POP had no bound).
/// They follow the rules of ids otherwise (it was [`MAX_ID_LENGTH`], and a linkId of 323
/// characters was refused: popclient57 M2).
pub const MAX_KEY_LENGTH: usize = 4_096;

/// At most this many operations per agenda, generated ones included: every progress report and
/// projection update carries the whole operation list, so a bigger DAG belongs in several
/// agendas sharing a `linkId`.
pub const MAX_OPERATIONS: usize = 1_000;

/// Operation names are ids shown in every progress entry and error message (in characters).
pub const MAX_NAME_LENGTH: usize = 200;

/// At most this many entries in one `params` map (the agenda's or an operation's): params are
/// flags and small settings, not data, and are copied into every progress object.
pub const MAX_PARAMS_ENTRIES: usize = 256;

/// Deepest JSON nesting accepted in a payload or a param value. Every walk over a payload
/// (reference search, replacement, encoding) recurses, so depth is bounded well below what
/// would exhaust a stack; real payloads are a few levels deep.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// A title is a short label shown in lists (in characters).
pub const MAX_TITLE_LENGTH: usize = 1_000;

/// Cycles found beyond this many are not reported: each names every operation on it, and after
/// fixing the first ones a resubmission reveals the rest.
pub const MAX_REPORTED_CYCLES: usize = 10;

/// A cycle message names at most this many operations, so one long cycle stays readable.
const MAX_NAMES_IN_CYCLE_MESSAGE: usize = 20;

/// Whether `c` may not appear in an id: control characters (NUL, newlines, U+0085 …) break
/// logs and headers, and the bidirectional overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069, U+200E/U+200F) make an id display as a different one. (U+2028/U+2029 are
/// not refused: ids stored with them must stay nameable — review-s40c; logs and the CLI print
/// them escaped.)
pub fn is_forbidden_in_id(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks an id a client chose (an agenda's, a progress id, a config object's, or one named in
/// a request): at most [`MAX_ID_LENGTH`] characters, none of them [`is_forbidden_in_id`]. A blank
/// id is the caller's to judge (on create it means "generate one").
pub fn check_id(field: &str, id: &str) -> Result<(), FieldError> {
    check_name(field, id, MAX_ID_LENGTH, "ids")
}

/// Checks a `linkId` or `jobId` named `field`: at most [`MAX_KEY_LENGTH`] characters, none of
/// them [`is_forbidden_in_id`].
pub fn check_key(field: &str, key: &str) -> Result<(), FieldError> {
    check_name(field, key, MAX_KEY_LENGTH, &format!("{field}s"))
}

/// `text`, a name of kind `kinds` ("ids"), is at most `max` characters, none of them
/// [`is_forbidden_in_id`].
fn check_name(field: &str, text: &str, max: usize, kinds: &str) -> Result<(), FieldError> {
    if text.chars().count() > max || text.chars().any(is_forbidden_in_id) {
        return Err(FieldError {
            field: field.to_string(),
            message: format!(
                "{kinds} are at most {max} printable characters, without control or bidirectional-override characters"
            ),
        });
    }
    Ok(())
}

/// Whether `c` is invisible, or shows as a blank, where an id is shown wherever it stands: the
/// zero-width space, the word joiner, invisible operators and deprecated format characters,
/// the byte-order mark, the soft hyphen, the Arabic letter mark, the Hangul and braille blanks,
/// Khmer's invisible vowels, musical and interlinear formatting, the line and paragraph
/// separators, and every blank but the plain space (a no-break space shows as one: reprobe55
/// L1). Refused in ids chosen now ([`check_new_id`]); ids stored before stay nameable.
pub fn is_invisible_in_id(c: char) -> bool {
    (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180E}'
                | '\u{200B}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206A}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
        )
}

/// Whether `c` joins or modifies the character before it (or, the joiners, after it): the
/// zero-width (non-)joiner, the combining grapheme joiner, variation selectors and tag
/// characters. Within a word they shape Persian and Indic text and make emoji (review55 M2:
/// `می‌خواهم`, `team-👩‍💻` and `farm-❤️` are ids); first in an id, or a joiner last, they
/// join nothing and show as nothing.
fn joins(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Checks an id a client chooses for a new object (a config object's, an agenda's): what
/// [`check_id`] checks, and no leading or trailing blank nor invisible character, so that no id
/// shows as another that exists (hostile55 L3: insights `" insA"`, `"insA "` and
/// `"insA\u{200B}"` were created beside `insA`, and read as it in every list).
pub fn check_new_id(field: &str, id: &str) -> Result<(), FieldError> {
    check_id(field, id)?;
    let refused =
        |message: &str| Err(FieldError { field: field.to_string(), message: message.to_string() });
    if id.trim() != id {
        return refused(
            "ids have no leading or trailing blanks (requests that name an object trim them)",
        );
    }
    let invisible = id.chars().find(|c| is_invisible_in_id(*c));
    let first = id.chars().next().filter(|c| joins(*c));
    let last = id.chars().last().filter(|c| matches!(c, '\u{200C}' | '\u{200D}'));
    if let Some(c) = invisible.or(first).or(last) {
        return refused(&format!(
            "ids have no invisible characters, nor a joiner or selector that joins nothing (this \
             one has U+{:04X}): it would show as another id",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Checks a submitted agenda: customer, operations, names, params, references and the DAG.
pub fn validate_agenda(agenda: &Agenda) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    if agenda.customer_id.trim().is_empty() {
        errors.push("customerId", "customerId is required and must not be blank");
    }
    if agenda.operations.is_empty() {
        errors.push("operations", "an agenda needs at least one operation");
    }
    // linkId and jobId are keys (lookups, subscriptions, batches): the rules of ids, but as
    // long as a URL.
    for (field, value) in [("linkId", &agenda.link_id), ("jobId", &agenda.job_id)] {
        if let Some(value) = value
            && let Err(e) = check_key(field, value)
        {
            errors.push(field, e.message);
        }
    }
    if let Some(title) = &agenda.title
        && let Err(why) = check_text(title, MAX_TITLE_LENGTH)
    {
        errors.push("title", format!("the title {why}"));
    }
    check_params(&agenda.params, "params", "the agenda", &mut errors);
    check_maximum_attempts(&agenda.params, &mut errors);
    check_priority(&agenda.params, &mut errors);
    check_operations(&[], &agenda.operations, &mut errors);
    errors.into_result()
}

/// Checks a free text a person reads (a title, a reason): at most `max` characters, no NUL or
/// other control character but tab and line breaks, no bidirectional override (which makes a
/// text display as another, "Trojan Source").
pub fn check_text(text: &str, max: usize) -> Result<(), String> {
    let length = text.chars().count();
    if length > max {
        return Err(format!("is {length} characters long; at most {max} are allowed"));
    }
    if text.chars().any(|c| !matches!(c, '\t' | '\n' | '\r') && is_forbidden_in_id(c)) {
        return Err("contains a control character (NUL …) or a bidirectional override; text is \
             printable characters, tabs and line breaks"
            .into());
    }
    Ok(())
}

/// `params.maximumAttempts` as the agenda will use it (default 3, clamped to 1..=20), and a
/// problem named `params.maximumAttempts` when it is present but not an integer.
pub(crate) fn check_maximum_attempts(params: &Params, errors: &mut ValidationErrors) -> u32 {
    crate::agenda::maximum_attempts(params).unwrap_or_else(|value| {
        errors.push(
            "params.maximumAttempts",
            format!("maximumAttempts must be an integer, not {value}"),
        );
        crate::agenda::DEFAULT_MAXIMUM_ATTEMPTS
    })
}

/// A problem named `params.priority` when it is present but not an integer (a number or a
/// numeric string): `Priority` insights read any other value as 0 (popclient22: 6.5, "high"
/// and true were accepted and ranked behind priority 1 and no priority at all).
pub(crate) fn check_priority(params: &Params, errors: &mut ValidationErrors) {
    let key = crate::scheduling::PRIORITY_PARAM;
    if let Some(value) = params.get(key).filter(|v| !v.is_null())
        && params.get_i64(key).is_none()
    {
        errors.push("params.priority", format!("priority must be an integer, not {value}"));
    }
}

/// Checks the operations an expand appends to `existing`, as a submission would be checked but
/// against existing + new: names unique across both, references may name existing operations,
/// no cycle through the new ones, the total within [`MAX_OPERATIONS`]. Field paths index
/// `new_operations`. An empty list is valid (a generator may find nothing to add).
pub fn validate_expansion(
    existing: &Agenda,
    new_operations: &[Operation],
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_operations(&existing.operations, new_operations, &mut errors);
    errors.into_result()
}

/// The shared rules: `existing` were accepted before and are only context; `new` are checked.
fn check_operations(existing: &[Operation], new: &[Operation], errors: &mut ValidationErrors) {
    let total = existing.len() + new.len();
    if total > MAX_OPERATIONS {
        let message = if existing.is_empty() {
            format!("{total} operations exceed the limit of {MAX_OPERATIONS} per agenda")
        } else {
            format!(
                "{} existing and {} new operations exceed the limit of {MAX_OPERATIONS} per agenda",
                existing.len(),
                new.len()
            )
        };
        errors.push("operations", message);
    }

    // Names compare case-insensitively for uniqueness; references must spell a name exactly
    // (the executor looks outputs up by the exact name), with a hint when only the case differs.
    let mut by_folded: HashMap<String, usize> = HashMap::new();
    let mut exact: HashMap<&str, usize> = HashMap::new();
    for (i, op) in existing.iter().enumerate() {
        by_folded.entry(fold_case(&op.name)).or_insert(i);
        exact.entry(op.name.as_str()).or_insert(i);
    }
    for (j, op) in new.iter().enumerate() {
        let field = format!("operations[{j}].name");
        if op.name.trim().is_empty() {
            errors.push(field, format!("operations[{j}] has no name; every operation needs one"));
            continue;
        }
        if op.name.chars().any(is_forbidden_in_id) {
            errors.push(
                field.clone(),
                format!(
                    "operation name {:?} contains a control character (NUL, a newline, U+0085 …) or a bidirectional override; names are printable text",
                    op.name.chars().take(40).collect::<String>()
                ),
            );
        }
        // `dependsOn` lists names separated by commas, trimmed: such a name could never be
        // depended on.
        if op.name.contains(',') || op.name.trim() != op.name {
            errors.push(
                field.clone(),
                format!(
                    "operation name {:?} has a comma or surrounding blanks; `dependsOn` lists \
                     names separated by commas, trimmed, so it could never be depended on",
                    op.name.chars().take(40).collect::<String>()
                ),
            );
        }
        let length = op.name.chars().count();
        if length > MAX_NAME_LENGTH {
            errors.push(
                field.clone(),
                format!(
                    "operation name {:?}... is {length} characters long; at most {MAX_NAME_LENGTH} are allowed",
                    op.name.chars().take(40).collect::<String>()
                ),
            );
        }
        let index = existing.len() + j;
        match by_folded.get(&fold_case(&op.name)) {
            Some(&first) => {
                let other = if first < existing.len() {
                    format!("an existing operation {:?}", existing[first].name)
                } else {
                    format!("operations[{}]", first - existing.len())
                };
                errors.push(
                    field,
                    format!(
                        "operation name {:?} is already used by {other} (names are compared case-insensitively)",
                        op.name
                    ),
                );
            }
            None => {
                by_folded.insert(fold_case(&op.name), index);
            }
        }
        exact.entry(op.name.as_str()).or_insert(index);
    }

    let all: Vec<&Operation> = existing.iter().chain(new.iter()).collect();
    let known = KnownNames { exact: &exact, all: &all };
    for (j, op) in new.iter().enumerate() {
        let label = label(op, j);
        let prefix = format!("operations[{j}]");
        check_params(&op.params, &format!("{prefix}.params"), &label, errors);
        let payload = op.payload.to_value();
        if depth_exceeds(&payload, MAX_PAYLOAD_DEPTH) {
            errors.push(
                format!("{prefix}.payload"),
                format!("{label} has a payload nested deeper than {MAX_PAYLOAD_DEPTH} levels"),
            );
        } else {
            let mut path = format!("{prefix}.payload");
            check_payload_references(&payload, &mut path, &label, &known, errors);
        }
        check_depends_on(&op.params, &prefix, &label, &known, errors);
        check_generator(&op.params, &prefix, &label, errors);
    }

    check_cycles(&all, existing.len(), &exact, errors);
}

/// The names references may point at, for messages that can suggest the right spelling.
struct KnownNames<'a> {
    exact: &'a HashMap<&'a str, usize>,
    all: &'a [&'a Operation],
}

impl KnownNames<'_> {
    /// `None` when `name` is an operation (or a token); otherwise why not.
    fn problem(&self, name: &str) -> Option<String> {
        if is_token(name) || self.exact.contains_key(name) {
            return None;
        }
        let folded = fold_case(name);
        let hint = self
            .all
            .iter()
            .find(|op| fold_case(&op.name) == folded)
            .map(|op| format!(" (did you mean {:?}? references spell names exactly)", op.name))
            .unwrap_or_default();
        Some(format!("the agenda has no operation {name:?}{hint}"))
    }
}

fn label(op: &Operation, j: usize) -> String {
    if op.name.trim().is_empty() {
        format!("operations[{j}] (unnamed)")
    } else {
        format!("operation {:?}", op.name)
    }
}

fn check_params(params: &Params, field: &str, owner: &str, errors: &mut ValidationErrors) {
    if params.len() > MAX_PARAMS_ENTRIES {
        errors.push(
            field,
            format!(
                "{owner} has {} params; at most {MAX_PARAMS_ENTRIES} are allowed",
                params.len()
            ),
        );
    }
    for (key, value) in params.iter() {
        if depth_exceeds(value, MAX_PAYLOAD_DEPTH) {
            errors.push(
                format!("{field}.{key}"),
                format!("{owner} has param {key:?} nested deeper than {MAX_PAYLOAD_DEPTH} levels"),
            );
        }
    }
}

/// Whether `value` nests deeper than `max` (a scalar has depth 1). Iterative, so an absurdly
/// deep value is rejected without recursing into it.
pub fn depth_exceeds(value: &Value, max: usize) -> bool {
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > max {
            return true;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|item| (item, depth + 1))),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    false
}

/// Reports every payload reference to a name that is neither an operation nor a token, at the
/// path of the string holding it (e.g. `operations[1].payload.files[0]`). Only called on
/// payloads within [`MAX_PAYLOAD_DEPTH`], so the recursion is bounded.
fn check_payload_references(
    value: &Value,
    path: &mut String,
    label: &str,
    known: &KnownNames<'_>,
    errors: &mut ValidationErrors,
) {
    match value {
        Value::String(text) => {
            for r in references_in(text) {
                // `N.out` is fine when `N` exists; tokens are always known.
                let Some(name) = operation_name(r.name) else {
                    continue;
                };
                if let Some(problem) = known.problem(name) {
                    errors
                        .push(path.clone(), format!("{label} references {} but {problem}", r.text));
                } else if !r.name.ends_with(OUTPUT_SUFFIX) {
                    // `@<N>` names no value at run time: the executor only knows `N.out`, and
                    // would hand the handler the literal text.
                    errors.push(
                        path.clone(),
                        format!(
                            "{label} references {} but an operation's result is named by `.out`: did you mean `{}`?",
                            r.text,
                            with_output_suffix(&r)
                        ),
                    );
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_payload_references(item, path, label, known, errors);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                check_payload_references(item, path, label, known, errors);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The reference as written with `.out` after its name: `@<a::/x?1>` → `@<a.out::/x?1>`.
fn with_output_suffix(r: &references::Reference<'_>) -> String {
    let rest = r.text.get(REFERENCE_START.len() + r.name.len()..).unwrap_or(">");
    format!("{REFERENCE_START}{}{OUTPUT_SUFFIX}{rest}", r.name)
}

fn check_depends_on(
    params: &Params,
    prefix: &str,
    label: &str,
    known: &KnownNames<'_>,
    errors: &mut ValidationErrors,
) {
    let Some(value) = params.get(keys::DEPENDS_ON) else {
        return;
    };
    let field = format!("{prefix}.params.{}", keys::DEPENDS_ON);
    let well_formed = match value {
        Value::Array(items) => {
            items.iter().all(|v| matches!(v, Value::String(_) | Value::Number(_)))
        }
        Value::String(_) | Value::Number(_) | Value::Null => true,
        Value::Bool(_) | Value::Object(_) => false,
    };
    if !well_formed {
        errors.push(
            field.clone(),
            format!(
                "{label} has a dependsOn that is neither a comma-separated string nor an array of names"
            ),
        );
    }
    for name in references::depends_on(params) {
        if let Some(problem) = known.problem(&name) {
            errors.push(field.clone(), format!("{label} depends on {name:?} but {problem}"));
        }
    }
}

/// `agenda.operation.generator` must say where the generated operations are in the output.
fn check_generator(params: &Params, prefix: &str, label: &str, errors: &mut ValidationErrors) {
    let Some(value) = params.get(keys::GENERATOR) else {
        return;
    };
    let field = format!("{prefix}.params[{:?}]", keys::GENERATOR);
    let Some(spec) = value.as_object() else {
        errors.push(
            field,
            format!("{label} has a generator that is not an object {{operationsJsonPointer, paramsJsonPointer?}}"),
        );
        return;
    };
    if !matches!(spec.get("operationsJsonPointer"), Some(Value::String(_))) {
        errors.push(
            field.clone(),
            format!("{label} has a generator without an operationsJsonPointer string"),
        );
    }
    if !matches!(spec.get("paramsJsonPointer"), None | Some(Value::Null | Value::String(_))) {
        errors.push(
            field,
            format!("{label} has a generator whose paramsJsonPointer is not a string"),
        );
    }
}

/// Where an edge of the dependency graph comes from, for the field path of a cycle report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EdgeSource {
    Payload,
    DependsOn,
}

/// Finds dependency cycles through at least one new operation (indices `first_new..`) and
/// reports each with every operation on it, in order.
fn check_cycles(
    all: &[&Operation],
    first_new: usize,
    exact: &HashMap<&str, usize>,
    errors: &mut ValidationErrors,
) {
    // Edge u → v: operation u depends on operation v. Sorted so reports are deterministic.
    let edges: Vec<BTreeMap<usize, EdgeSource>> = all
        .iter()
        .map(|op| {
            let mut out = BTreeMap::new();
            for name in references::depends_on(&op.params) {
                if let Some(&v) = exact.get(name.as_str()) {
                    out.insert(v, EdgeSource::DependsOn);
                }
            }
            let mut from_payload = BTreeSet::new();
            op.payload.for_each_string(&mut |text| {
                for r in references_in(text) {
                    if let Some(v) = r.operation_name().and_then(|n| exact.get(n)) {
                        from_payload.insert(*v);
                    }
                }
            });
            for v in from_payload {
                out.entry(v).or_insert(EdgeSource::Payload);
            }
            out
        })
        .collect();

    let cycles = find_cycles(&edges, MAX_REPORTED_CYCLES, first_new);
    for cycle in cycles {
        // Report at the first new operation on the cycle, where the submitter can fix it.
        let Some(turn) = cycle.iter().position(|&u| u >= first_new) else {
            continue;
        };
        let mut ordered = cycle.clone();
        ordered.rotate_left(turn);
        let (u, v) = (ordered[0], ordered[1 % ordered.len()]);
        let source = edges[u].get(&v).copied().unwrap_or(EdgeSource::Payload);
        let field = match source {
            EdgeSource::DependsOn => format!("operations[{}].params.dependsOn", u - first_new),
            EdgeSource::Payload => format!("operations[{}].payload", u - first_new),
        };
        let message = if ordered.len() == 1 {
            format!("operation {:?} depends on itself", all[u].name)
        } else {
            let mut names: Vec<String> = ordered
                .iter()
                .chain(std::iter::once(&u))
                .take(MAX_NAMES_IN_CYCLE_MESSAGE)
                .map(|&i| format!("{:?}", all[i].name))
                .collect();
            if ordered.len() + 1 > MAX_NAMES_IN_CYCLE_MESSAGE {
                names.push(format!("... ({} operations in all)", ordered.len()));
            }
            format!("dependency cycle: {}", names.join(" depends on "))
        };
        errors.push(field, message);
    }
}

/// Up to `limit` elementary cycles (each as node indices, every node depending on the next and
/// the last on the first), found by one iterative depth-first search: every back edge closes
/// one cycle. Cycles only among nodes before `first_new` are skipped (they were accepted
/// before and are not the submitter's to fix). Linear in nodes and edges plus the cycles copied.
fn find_cycles(
    edges: &[BTreeMap<usize, EdgeSource>],
    limit: usize,
    first_new: usize,
) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath(usize),
        Done,
    }
    let mut marks = vec![Mark::Unvisited; edges.len()];
    let mut cycles = Vec::new();
    let mut path: Vec<usize> = Vec::new();
    for root in 0..edges.len() {
        if marks[root] != Mark::Unvisited {
            continue;
        }
        // Each frame: a node and the iterator over its remaining edges.
        let mut frames = vec![(root, edges[root].keys())];
        marks[root] = Mark::OnPath(0);
        path.push(root);
        while let Some((u, next)) = frames.last_mut() {
            let u = *u;
            match next.next() {
                Some(&v) if v < edges.len() => match marks[v] {
                    Mark::Unvisited => {
                        marks[v] = Mark::OnPath(path.len());
                        path.push(v);
                        frames.push((v, edges[v].keys()));
                    }
                    Mark::OnPath(at) => {
                        let cycle = path[at..].to_vec();
                        if cycle.iter().any(|&i| i >= first_new) {
                            cycles.push(cycle);
                            if cycles.len() >= limit {
                                return cycles;
                            }
                        }
                    }
                    Mark::Done => {}
                },
                Some(_) => {}
                None => {
                    marks[u] = Mark::Done;
                    path.pop();
                    frames.pop();
                }
            }
        }
    }
    cycles
}

/// The bytes `value` takes as compact JSON (what it costs in an event and, roughly, in the read
/// models), counted without building the text. A value that does not serialize counts 0.
pub fn json_bytes<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    json_bytes_within(value, usize::MAX).unwrap_or(0)
}

/// [`json_bytes`] when they are at most `max`; `None` past it (found as soon as the count
/// passes it: the rest is not serialized) or for a value that does not serialize.
pub fn json_bytes_within<T: serde::Serialize + ?Sized>(value: &T, max: usize) -> Option<usize> {
    struct Count(usize, usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            if self.0 > self.1 {
                return Err(std::io::Error::other("past the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0, max);
    serde_json::to_writer(&mut count, value).ok().map(|()| count.0)
}

/// The most bytes a diagnostic keeps of its `message`, its `stackTrace` (as stored: JSON
/// escapes counted) and its `payload` (as JSON) (popclient27: a failure report with a 1.1 MB
/// Java stack trace was refused whole, sent again, refused again, and the agenda failed as
/// "timed out" with the cause nowhere). An agenda of several operations keeps less of each
/// (`AgendaState::diagnostic_text_bytes`).
pub const MAX_DIAGNOSTIC_TEXT_BYTES: usize = 32 << 10;

/// The most bytes a diagnostic keeps of its `statusCode` (POP's are short names: `1`,
/// `NOT_RETRYABLE`); review-s49: it was never cut, and 95 KB codes made an agenda of 58 MB.
pub const MAX_STATUS_CODE_BYTES: usize = 100;

/// Cuts a diagnostic's `message` and `stackTrace` to `max` bytes each as stored (at most
/// [`MAX_DIAGNOSTIC_TEXT_BYTES`]), keeping their start and end
/// ([`crate::text::cut_middle_json`]), and its `statusCode` to [`MAX_STATUS_CODE_BYTES`]; a
/// `payload` larger than `max` is replaced by a note of its size. Returns whether anything was
/// cut. [`is_cut_of`] knows the outcome for its original.
pub fn cut_diagnostic(d: &mut crate::model::DiagnosticEvent, max: usize) -> bool {
    let max = max.min(MAX_DIAGNOSTIC_TEXT_BYTES);
    let mut cut = crate::text::cut_middle_json(&mut d.message, max);
    if let Some(trace) = &mut d.stack_trace {
        cut += crate::text::cut_middle_json(trace, max);
    }
    if let Some(code) = &mut d.status_code {
        cut += crate::text::cut_middle_json(code, MAX_STATUS_CODE_BYTES);
    }
    let payload = json_bytes(&d.payload);
    if payload > max {
        d.payload = serde_json::Value::String(format!(
            "{}{payload} bytes as JSON, not kept: pop keeps at most {max} bytes of a \
             diagnostic's payload here]",
            PAYLOAD_NOTE
        ));
        cut += payload;
    }
    cut > 0
}

/// How the note that replaces a diagnostic's payload starts.
const PAYLOAD_NOTE: &str = "[a payload of ";

/// Whether `kept` is `original` as recorded, cut by [`cut_diagnostic`] at any bound or not at
/// all: how a diagnostic sent again is known for one recorded, however short the agenda cut it
/// then (an agenda that gained operations, or a customer past its quota, cuts shorter).
pub fn is_cut_of(
    kept: &crate::model::DiagnosticEvent,
    original: &crate::model::DiagnosticEvent,
) -> bool {
    use crate::text::is_cut_of as text;
    let optional = |k: &Option<String>, o: &Option<String>| match (k, o) {
        (Some(k), Some(o)) => text(k, o),
        (None, None) => true,
        _ => false,
    };
    let payload = kept.payload == original.payload
        || kept.payload.as_str().is_some_and(|note| {
            note.strip_prefix(PAYLOAD_NOTE).and_then(|rest| rest.split_once(' ')).is_some_and(
                |(bytes, _)| bytes.parse::<usize>().ok() == Some(json_bytes(&original.payload)),
            )
        });
    kept.time == original.time
        && payload
        && text(&kept.message, &original.message)
        && optional(&kept.stack_trace, &original.stack_trace)
        && optional(&kept.status_code, &original.status_code)
}

/// The most bytes (as compact JSON, [`json_bytes`]) a payload and a params map may take: the
/// per-customer size limits, which the server configures (no clock, no config here: they come
/// in as an argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// One operation's `payload` (and a report's `resultPayload`).
    pub payload_bytes: usize,
    /// One `params` map: the agenda's, an operation's, or one a report adds.
    pub params_bytes: usize,
}

/// Checks the sizes of `agenda`'s payloads and params against `limits`, naming each field that
/// is too large (`operations[2].payload`, `params`) with its size and the limit.
pub fn check_sizes(agenda: &Agenda, limits: SizeLimits) -> Result<(), ValidationErrors> {
    check_expansion_sizes(&agenda.operations, &agenda.params, limits)
}

/// [`check_sizes`] for operations and params an expansion adds (named as in its request:
/// `operations[0].payload`, `params`).
pub fn check_expansion_sizes(
    operations: &[Operation],
    params: &Params,
    limits: SizeLimits,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_size(&mut errors, "params", params, limits.params_bytes);
    for (i, op) in operations.iter().enumerate() {
        let at = format!("operations[{i}]");
        check_size(&mut errors, &format!("{at}.payload"), &op.payload, limits.payload_bytes);
        check_size(&mut errors, &format!("{at}.params"), &op.params, limits.params_bytes);
    }
    errors.into_result()
}

/// Pushes a problem on `field` when `value` takes more than `max` bytes as JSON.
pub fn check_size<T: serde::Serialize + ?Sized>(
    errors: &mut ValidationErrors,
    field: &str,
    value: &T,
    max: usize,
) {
    let bytes = json_bytes(value);
    if bytes > max {
        errors.push(
            field,
            format!("takes {bytes} bytes as JSON; at most {max} are allowed (the server's limit per payload or params)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_new_id_that_would_show_as_another_is_refused() {
        for ok in [
            "insA",
            "ins A",
            "société",
            "a/b~c",
            "insА",
            "می\u{200C}خواهم",
            "team-👩\u{200D}💻",
            "farm-❤\u{FE0F}",
        ] {
            assert_eq!(check_new_id("id", ok), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            (" insA", "blanks"),
            ("insA ", "blanks"),
            ("insA\u{00A0}", "blanks"),
            ("insA\u{200B}", "U+200B"),
            ("in\u{FEFF}sA", "U+FEFF"),
            ("ins\u{00AD}A", "U+00AD"),
            ("\u{200D}insA", "U+200D"),
            ("insA\u{200C}", "U+200C"),
            ("\u{FE0F}insA", "U+FE0F"),
            ("job\u{00A0}1", "U+00A0"),
            ("X1\u{2800}", "U+2800"),
            ("X\u{2028} 1", "U+2028"),
            ("X\u{17B4}1", "U+17B4"),
            ("X\u{1D173}1", "U+1D173"),
            ("X\u{FFF9}1", "U+FFF9"),
            ("ins\nA", "control"),
        ] {
            let e = check_new_id("id", bad).unwrap_err();
            assert_eq!(e.field, "id");
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
        }
        // Ids stored before stay nameable: a request naming one is checked by `check_id`.
        assert_eq!(check_id("id", "insA\u{200B}"), Ok(()));
    }

    #[test]
    fn sizes_are_counted_as_compact_json_and_each_field_too_large_is_named() {
        assert_eq!(json_bytes(&json!({"a": "xy", "b": [1, 2]})), r#"{"a":"xy","b":[1,2]}"#.len());
        let big = "x".repeat(100);
        let a = agenda(json!([
            {"name": "small", "payload": {"p": 1}},
            {"name": "large", "payload": {"p": big}, "params": {"k": big}},
        ]));
        let limits = SizeLimits { payload_bytes: 50, params_bytes: 60 };
        let errors = check_sizes(&a, limits).unwrap_err().errors;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["operations[1].payload", "operations[1].params"]);
        assert!(
            errors[0].message.contains("108 bytes") && errors[0].message.contains("at most 50"),
            "{errors:?}"
        );
        // At the limit exactly is fine.
        let limits = SizeLimits { payload_bytes: 108, params_bytes: 108 };
        check_sizes(&a, limits).unwrap();
    }

    fn agenda(ops: Value) -> Agenda {
        serde_json::from_value(json!({"customerId": "acme", "operations": ops})).unwrap()
    }

    fn errors_of(agenda: &Agenda) -> Vec<(String, String)> {
        match validate_agenda(agenda) {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|e| (e.field, e.message)).collect(),
        }
    }

    fn fields_of(agenda: &Agenda) -> Vec<String> {
        errors_of(agenda).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn every_problem_of_a_submission_is_named_at_once_maximum_attempts_included() {
        let mut a = agenda(json!([{"name": "", "type": "x"}]));
        a.customer_id = String::new();
        a.params.insert("maximumAttempts", json!("abc"));
        let fields = fields_of(&a);
        assert!(fields.contains(&"customerId".to_string()), "{fields:?}");
        assert!(fields.contains(&"params.maximumAttempts".to_string()), "{fields:?}");
        assert!(fields.iter().any(|f| f.starts_with("operations[0]")), "{fields:?}");
        // A numeric string is POP's lenient form, not a problem.
        a.params.insert("maximumAttempts", json!("5"));
        assert!(!fields_of(&a).contains(&"params.maximumAttempts".to_string()));
        // A priority that is no integer is named, not ranked as 0 (popclient22).
        for bad in [json!(6.5), json!("high"), json!(true), json!([1])] {
            a.params.insert("priority", bad.clone());
            assert!(fields_of(&a).contains(&"params.priority".to_string()), "{bad}");
        }
        for fine in [json!(7), json!("-3"), json!(2.0), json!(null)] {
            a.params.insert("priority", fine.clone());
            assert!(!fields_of(&a).contains(&"params.priority".to_string()), "{fine}");
        }
    }

    #[test]
    fn json_bytes_stop_counting_past_the_limit() {
        let value = json!({"a": "x".repeat(100), "b": [1, 2, 3]});
        let bytes = json_bytes(&value);
        assert_eq!(bytes, serde_json::to_vec(&value).unwrap().len());
        assert_eq!(json_bytes_within(&value, bytes), Some(bytes));
        assert_eq!(json_bytes_within(&value, bytes - 1), None);
        assert_eq!(json_bytes_within(&value, 3), None);
    }

    #[test]
    fn keys_titles_and_names_follow_text_rules() {
        let mut a = agenda(json!([{"name": "a,b", "type": "x"}, {"name": " c ", "type": "x"}]));
        a.link_id = Some("l".repeat(MAX_KEY_LENGTH + 1));
        a.job_id = Some("job\u{0}1".into());
        a.title = Some("t\u{202E}txt.exe".into());
        let errors = errors_of(&a);
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["linkId", "jobId", "title", "operations[0].name", "operations[1].name"],
            "{errors:?}"
        );
        assert!(errors[0].1.starts_with("linkIds are at most 4096"), "{errors:?}");
        // A presigned URL is a linkId as POP's clients send it (popclient57 M2: 323 characters
        // were refused).
        a = agenda(json!([{"name": "a", "type": "x"}]));
        let url =
            format!("https://in.s3.amazonaws.com/a.mp4?{}", "X-Amz-Signature=0a1b2c&".repeat(14));
        assert!(url.len() > 300, "{url}");
        a.link_id = Some(url);
        a.job_id = Some("j".repeat(MAX_KEY_LENGTH));
        assert_eq!(errors_of(&a), vec![]);
        // Line breaks and tabs are text; a long title is not.
        a = agenda(json!([{"name": "a", "type": "x"}]));
        a.title = Some("two\nlines\tand a tab".into());
        assert_eq!(errors_of(&a), vec![]);
        a.title = Some("x".repeat(MAX_TITLE_LENGTH + 1));
        assert_eq!(fields_of(&a), ["title"]);
    }

    #[test]
    fn ids_refuse_control_and_bidi_override_characters() {
        assert!(check_id("id", "a-1_b.c:d/e").is_ok());
        assert!(check_id("id", &"x".repeat(MAX_ID_LENGTH)).is_ok());
        for bad in ["a\u{0}b", "a\nb", "a\u{85}b", "a\u{202E}b", "a\u{2066}b", "a\u{200F}b"] {
            let e = check_id("agendaId", bad).unwrap_err();
            assert_eq!(e.field, "agendaId", "{bad:?}");
        }
        assert!(check_id("id", &"x".repeat(MAX_ID_LENGTH + 1)).is_err());
    }

    #[test]
    fn a_valid_dag_passes() {
        let a = agenda(json!([
            {"name": "sample.1", "type": "sample"},
            {"name": "b", "payload": {"x": "@<sample.1.out::/actionData>", "n": "@<pop.agendaId>"}},
            {"name": "c", "payload": "@<b.out>", "params": {"dependsOn": "sample.1, b"}}
        ]));
        assert_eq!(validate_agenda(&a), Ok(()));
    }

    #[test]
    fn customer_and_operations_are_required() {
        let a = Agenda { customer_id: "  ".into(), ..Agenda::default() };
        assert_eq!(fields_of(&a), vec!["customerId", "operations"]);
    }

    #[test]
    fn names_required_and_unique_ignoring_case() {
        let a = agenda(json!([{"name": "Encode"}, {"name": ""}, {"name": "encode"}]));
        let errors = errors_of(&a);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "operations[1].name");
        assert_eq!(errors[1].0, "operations[2].name");
        assert!(errors[1].1.contains("\"encode\"") && errors[1].1.contains("operations[0]"));
    }

    #[test]
    fn every_problem_is_listed() {
        let a = agenda(json!([
            {"name": "a", "payload": {"list": ["x @<missing.out::/y>"]}},
            {"name": "b", "params": {"dependsOn": "a, typo"}},
            {"name": "c", "params": {"dependsOn": {"x": 1}}}
        ]));
        let errors = errors_of(&a);
        let fields: Vec<_> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "operations[0].payload.list[0]",
                "operations[1].params.dependsOn",
                "operations[2].params.dependsOn"
            ]
        );
        assert!(errors[0].1.contains("operation \"a\"") && errors[0].1.contains("\"missing\""));
        assert!(errors[1].1.contains("operation \"b\"") && errors[1].1.contains("\"typo\""));
    }

    #[test]
    fn an_operation_is_referenced_by_its_output_with_a_hint_when_out_is_missing() {
        let a = agenda(json!([
            {"name": "probe"},
            {"name": "encode", "payload": {"in": "@<probe>", "w": "w=@<probe::/width?1>"}},
            {"name": "ok", "payload": "@<probe.out::/x>", "params": {"dependsOn": "probe"}}
        ]));
        let errors = errors_of(&a);
        let fields: Vec<_> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["operations[1].payload.in", "operations[1].payload.w"], "{errors:?}");
        assert!(errors[0].1.contains("did you mean `@<probe.out>`?"), "{}", errors[0].1);
        assert!(errors[1].1.contains("did you mean `@<probe.out::/width?1>`?"), "{}", errors[1].1);
        assert!(errors[0].1.contains("operation \"encode\""), "{}", errors[0].1);
    }

    #[test]
    fn wrong_case_reference_gets_a_hint() {
        let a = agenda(json!([{"name": "Encode"}, {"name": "b", "payload": "@<encode.out>"}]));
        let errors = errors_of(&a);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.contains("did you mean \"Encode\""), "{}", errors[0].1);
    }

    #[test]
    fn tokens_are_always_known() {
        let a = agenda(json!([
            {"name": "a", "payload": "@<pop.agendaId>-@<pop.operationName>-@<pop.payload::/x>"},
        ]));
        assert_eq!(validate_agenda(&a), Ok(()));
    }

    #[test]
    fn cycles_name_every_operation_on_them() {
        let a = agenda(json!([
            {"name": "a", "payload": "@<c.out>"},
            {"name": "b", "params": {"dependsOn": "a"}},
            {"name": "c", "payload": {"in": "@<b.out::/x>"}},
            {"name": "d", "params": {"dependsOn": "d"}}
        ]));
        let errors = errors_of(&a);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "operations[0].payload");
        assert_eq!(
            errors[0].1,
            "dependency cycle: \"a\" depends on \"c\" depends on \"b\" depends on \"a\""
        );
        assert_eq!(errors[1].0, "operations[3].params.dependsOn");
        assert!(errors[1].1.contains("\"d\" depends on itself"));
    }

    #[test]
    fn limits_are_enforced() {
        let many: Vec<Value> =
            (0..=MAX_OPERATIONS).map(|i| json!({"name": format!("op{i}")})).collect();
        assert_eq!(fields_of(&agenda(Value::Array(many))), vec!["operations"]);

        let long = "n".repeat(MAX_NAME_LENGTH + 1);
        assert_eq!(fields_of(&agenda(json!([{"name": long}]))), vec!["operations[0].name"]);
        for bad in ["a\u{0}b", "a\nb", "a\rb", "a\u{85}b", "a\u{1b}b", "a\u{202E}b", "a\u{2069}b"] {
            let a = agenda(json!([{"name": "ok"}, {"name": bad}]));
            assert_eq!(fields_of(&a), vec!["operations[1].name"], "{bad:?}");
        }

        let params: serde_json::Map<String, Value> =
            (0..=MAX_PARAMS_ENTRIES).map(|i| (format!("k{i}"), json!(i))).collect();
        let a = agenda(json!([{"name": "a", "params": params}]));
        assert_eq!(fields_of(&a), vec!["operations[0].params"]);

        let mut deep = json!("@<nowhere>");
        for _ in 0..MAX_PAYLOAD_DEPTH {
            deep = json!([deep]);
        }
        let a = agenda(json!([{"name": "a", "payload": deep}]));
        assert_eq!(fields_of(&a), vec!["operations[0].payload"]);
    }

    #[test]
    fn generator_spec_is_checked() {
        let a = agenda(json!([
            {"name": "g", "params": {"agenda.operation.generator": {"operationsJsonPointer": "/ops"}}},
            {"name": "h", "params": {"agenda.operation.generator": {"paramsJsonPointer": 3}}}
        ]));
        let fields = fields_of(&a);
        assert_eq!(fields.len(), 2);
        assert!(fields.iter().all(|f| f == "operations[1].params[\"agenda.operation.generator\"]"));
    }

    #[test]
    fn expansion_checks_against_existing_operations() {
        let existing = agenda(json!([{"name": "gen"}, {"name": "Split"}]));
        let new: Vec<Operation> = serde_json::from_value(json!([
            {"name": "part1", "payload": "@<gen.out::/x>", "params": {"generatedOperationParent": "gen"}},
            {"name": "split"},
            {"name": "part2", "params": {"dependsOn": "part1, nope"}}
        ]))
        .unwrap();
        let errors = validate_expansion(&existing, &new).unwrap_err().errors;
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["operations[1].name", "operations[2].params.dependsOn"]);
        assert!(errors[0].message.contains("existing operation \"Split\""));
        assert_eq!(validate_expansion(&existing, &[]), Ok(()));
    }

    #[test]
    fn expansion_respects_the_total_limit() {
        let ops: Vec<Value> =
            (0..MAX_OPERATIONS).map(|i| json!({"name": format!("op{i}")})).collect();
        let existing = agenda(Value::Array(ops));
        let new = vec![Operation { name: "one.more".into(), ..Operation::default() }];
        let errors = validate_expansion(&existing, &new).unwrap_err().errors;
        assert_eq!(errors[0].field, "operations");
    }

    #[test]
    fn expansion_rejects_cycles_through_new_operations() {
        // An existing op cannot name a new one (it was validated), so a cycle needs new ops only,
        // or a new op naming itself.
        let existing = agenda(json!([{"name": "a"}]));
        let new: Vec<Operation> = serde_json::from_value(json!([
            {"name": "x", "payload": "@<y.out>", "params": {"dependsOn": "a"}},
            {"name": "y", "payload": "@<x.out>"}
        ]))
        .unwrap();
        let errors = validate_expansion(&existing, &new).unwrap_err().errors;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "operations[0].payload");
        assert!(errors[0].message.contains("\"x\" depends on \"y\" depends on \"x\""));
    }

    /// Operation `i` may depend on any `j < i`: always a DAG.
    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (2usize..18).prop_flat_map(|n| {
            (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(vec![]).boxed()
                    } else {
                        prop::collection::vec(0..i, 0..4).boxed()
                    }
                })
                .collect::<Vec<_>>()
        })
    }

    fn agenda_from(deps: &[Vec<usize>], use_payload: bool) -> Agenda {
        let ops = deps
            .iter()
            .enumerate()
            .map(|(i, ds)| {
                let names: Vec<String> = ds.iter().map(|d| format!("op{d}")).collect();
                if use_payload {
                    let refs: Vec<String> = names.iter().map(|n| format!("@<{n}.out>")).collect();
                    json!({"name": format!("op{i}"), "payload": {"in": refs}})
                } else {
                    json!({"name": format!("op{i}"), "params": {"dependsOn": names.join(",")}})
                }
            })
            .collect();
        agenda(Value::Array(ops))
    }

    proptest! {
        #[test]
        fn generated_dags_validate(deps in dag(), use_payload in any::<bool>()) {
            prop_assert_eq!(validate_agenda(&agenda_from(&deps, use_payload)), Ok(()));
        }

        #[test]
        fn a_back_edge_is_rejected_naming_the_cycle(
            deps in dag(), use_payload in any::<bool>(), pick in any::<prop::sample::Index>()
        ) {
            // Make a path from the last op back to op0, then close it: op0 depends on the last.
            let mut deps = deps;
            let last = deps.len() - 1;
            for (i, ds) in deps.iter_mut().enumerate().skip(1) {
                ds.push(i - 1);
            }
            let from = pick.index(last + 1);
            deps[from].push(last);
            let errors = validate_agenda(&agenda_from(&deps, use_payload)).unwrap_err().errors;
            prop_assert!(!errors.is_empty());
            prop_assert!(errors.iter().all(|e| e.message.contains("depend")));
            let named_from = format!("\"op{from}\"");
            let named_last = format!("\"op{last}\"");
            prop_assert!(errors.iter().any(|e| e.message.contains(&named_from)
                && e.message.contains(&named_last)));
        }

        #[test]
        fn validation_never_panics(ops in prop::collection::vec(
            ("[a-c]{0,2}", "(@<|>|a|b|c|\\.out|::|,| )*", "(a|b|c|,| )*"), 0..8)
        ) {
            let ops: Vec<Value> = ops
                .into_iter()
                .map(|(name, payload, depends)| json!({
                    "name": name, "payload": {"p": payload}, "params": {"dependsOn": depends}
                }))
                .collect();
            let a = agenda(Value::Array(ops.clone()));
            let _ = validate_agenda(&a);
            let _ = validate_expansion(&a, &a.operations);
        }
    }
}
