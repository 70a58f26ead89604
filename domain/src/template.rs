//! Running an AgendaTemplate (DOMAIN.md §1, §5): the agenda body with the run payload
//! (`@<pop.payload>`, or POP's alias `@<pop.transformRequest>`) and the static parameters
//! (`@<name>`) filled in, ready to submit. As in POP, references are replaced across the whole
//! body: title, `linkId`, `jobId`, params, and each operation's name, type, id, payload and
//! params. Output references (`@<N.out>`) and run-time tokens stay for the executor. The
//! customer of a run is chosen by [`run_customer`]; it is never taken from the payload.

use serde_json::Value;

use crate::binding::may_use;
use crate::error::ValidationErrors;
use crate::model::{Agenda, AgendaTemplate};
use crate::params::Params;
use crate::references::{self, ReferenceError, tokens};
use crate::validate::validate_agenda;

/// Whether `customer_id` may read and run `template`: global, owned, or listed in
/// `allowedCustomerIds` (case-insensitive).
pub fn may_use_template(template: &AgendaTemplate, customer_id: &str) -> bool {
    may_use(template.is_global, &template.customer_id, &template.allowed_customer_ids, customer_id)
}

/// The agenda that running `template` with `payload` for `customer_id` (the caller's customer)
/// submits, validated like any submission. The result has no id, progress id or insight yet:
/// those are assigned when it is submitted.
///
/// Static parameters may themselves hold `@<pop.payload...>` references; they are resolved
/// against the payload first, then substituted into the body (one level, never recursively).
pub fn run_template(
    template: &AgendaTemplate,
    payload: &Value,
    customer_id: &str,
) -> Result<Agenda, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let payload_only = |name: &str| tokens::is_payload(name).then(|| payload.clone());
    let mut statics = Params::new();
    for (key, value) in template.static_parameters.iter() {
        match references::resolve(value, &payload_only) {
            Ok(v) => statics.insert(key.clone(), v),
            Err(e) => errors.push(format!("staticParameters.{key}"), e.to_string()),
        }
    }
    let lookup = |name: &str| {
        if tokens::is_payload(name) { Some(payload.clone()) } else { statics.get(name).cloned() }
    };
    let agenda = fill_body(template, customer_id, &lookup, &mut errors);
    errors.into_result()?;
    validate_agenda(&agenda)?;
    Ok(agenda)
}

/// Checks that a template holds a valid agenda body: its static parameters substituted, the run
/// payload left as the `pop.payload` token it is. Field paths start with `agenda.`.
pub fn validate_template(template: &AgendaTemplate) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let lookup = |name: &str| template.static_parameters.get(name).cloned();
    let agenda = fill_body(template, &template.customer_id, &lookup, &mut errors);
    if let Err(body) = validate_agenda(&agenda) {
        // The body's customer is the template's (checked by the template's own rules) or, at
        // run time, the caller's; a blank one is not a problem of the body. A maximumAttempts
        // taken from the run payload is known only at run time (checked then, as submitted).
        let from_payload = agenda
            .params
            .get(crate::params::keys::MAXIMUM_ATTEMPTS)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|v| v.contains(references::REFERENCE_START));
        let known_at_run = |field: &str| field == "params.maximumAttempts" && from_payload;
        for e in
            body.errors.into_iter().filter(|e| e.field != "customerId" && !known_at_run(&e.field))
        {
            errors.push(format!("agenda.{}", e.field), e.message);
        }
        errors.omitted += body.omitted;
    }
    errors.into_result()
}

/// The customer a run of `template` is for: the request's `customerId`, else the customerId
/// of the template's agenda when the caller may act for it (`may_act_for`: a template shared
/// with the caller's customer names its owner there), else the caller's only customer (POP's
/// run request names no customer). Blank values count as absent, and so does a template
/// customerId that holds a reference: the customer decides tenancy, so the run payload never
/// chooses it. The caller still has to be allowed to act for it and the customer to use the
/// template.
pub fn run_customer(
    requested: Option<&str>,
    template: &AgendaTemplate,
    callers_only_customer: Option<&str>,
    may_act_for: impl Fn(&str) -> bool,
) -> Result<String, ValidationErrors> {
    let given = |c: Option<&str>| c.map(str::trim).filter(|c| !c.is_empty()).map(str::to_string);
    let from_body = Some(template.agenda.customer_id.as_str())
        .filter(|c| !c.contains(references::REFERENCE_START) && may_act_for(c.trim()));
    given(requested).or_else(|| given(from_body)).or_else(|| given(callers_only_customer)).ok_or_else(
        || {
            let mut errors = ValidationErrors::new();
            errors.push(
                "customerId",
                format!(
                    "name the customer to run template {:?} for: the template's agenda names none and the caller may act for several",
                    template.id
                ),
            );
            errors
        },
    )
}

/// The template's body for `customer_id` with references resolved by `lookup` everywhere in it
/// (see the module doc); problems are added to `errors`.
fn fill_body(
    template: &AgendaTemplate,
    customer_id: &str,
    lookup: &impl Fn(&str) -> Option<Value>,
    errors: &mut ValidationErrors,
) -> Agenda {
    let body = &template.agenda;
    // As in POP, a body without a title takes the template's.
    let title = resolve_text(body.title.as_deref(), lookup, "title", errors)
        .filter(|t| !t.trim().is_empty())
        .or_else(|| template.title.clone());
    let mut agenda = Agenda {
        id: String::new(),
        cid: None,
        customer_id: customer_id.to_string(),
        title,
        added_time: None,
        updated_time: None,
        operations: body.operations.clone(),
        params: resolve_params(&body.params, lookup, "params", errors),
        link_id: resolve_text(body.link_id.as_deref(), lookup, "linkId", errors),
        job_id: resolve_text(body.job_id.as_deref(), lookup, "jobId", errors),
        progress_id: None,
        agenda_insight: None,
    };
    for (i, op) in agenda.operations.iter_mut().enumerate() {
        let field = |name: &str| format!("operations[{i}].{name}");
        op.name = resolve_text(Some(&op.name), lookup, &field("name"), errors).unwrap_or_default();
        op.op_type =
            resolve_text(Some(&op.op_type), lookup, &field("type"), errors).unwrap_or_default();
        op.id = resolve_text(op.id.as_deref(), lookup, &field("id"), errors);
        let label = format!("operation {:?}", op.name);
        match references::resolve(&op.payload.to_value(), lookup) {
            Ok(v) => op.payload = v.into(),
            Err(e) => errors.push(field("payload"), describe(&label, &e)),
        }
        op.params = resolve_params(&op.params, lookup, &field("params"), errors);
    }
    agenda
}

/// A text field of the body with its references resolved. A scalar result becomes its text
/// and null leaves the field unset; an object or array cannot be text and is a problem.
fn resolve_text(
    text: Option<&str>,
    lookup: &impl Fn(&str) -> Option<Value>,
    field: &str,
    errors: &mut ValidationErrors,
) -> Option<String> {
    let text = text?;
    if !text.contains(references::REFERENCE_START) {
        return Some(text.to_string());
    }
    match references::resolve(&Value::String(text.to_string()), lookup) {
        Ok(Value::String(s)) => Some(s),
        Ok(Value::Null) => None,
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
        Ok(_) => {
            errors.push(field, format!("{text} gives an object or array, but {field} is text"));
            Some(text.to_string())
        }
        Err(e) => {
            errors.push(field, e.to_string());
            Some(text.to_string())
        }
    }
}

fn resolve_params(
    params: &Params,
    lookup: &impl Fn(&str) -> Option<Value>,
    field: &str,
    errors: &mut ValidationErrors,
) -> Params {
    params
        .iter()
        .map(|(key, value)| {
            let resolved = references::resolve(value, lookup).unwrap_or_else(|e| {
                errors.push(format!("{field}.{key}"), e.to_string());
                value.clone()
            });
            (key.clone(), resolved)
        })
        .collect()
}

fn describe(label: &str, e: &ReferenceError) -> String {
    format!("{label}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> AgendaTemplate {
        serde_json::from_value(json!({
            "id": "t1",
            "customerId": "owner",
            "title": "Transcode",
            "staticParameters": {
                "preset": {"crf": 23},
                "region": "us-east",
                "source": "@<pop.payload::/input?none>"
            },
            "agenda": {
                "params": {"externalId": "@<pop.payload::/id>"},
                "operations": [
                    {"name": "sample", "type": "sample", "payload": {
                        "all": "@<pop.payload>",
                        "url": "@<pop.payload::url>",
                        "preset": "@<preset>",
                        "where": "s3://@<region>/@<pop.payload::/id>",
                        "src": "@<source>"
                    }},
                    {"name": "encode", "type": "ffmpeg", "payload": {
                        "in": "@<sample.out::/actionData>",
                        "agenda": "@<pop.agendaId>"
                    }}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn run_fills_payload_and_static_parameters_and_keeps_outputs() {
        let payload = json!({"id": 42, "url": "http://x", "input": "in.mp4"});
        let agenda = run_template(&template(), &payload, "caller").unwrap();
        assert_eq!(agenda.customer_id, "caller");
        assert_eq!(agenda.title.as_deref(), Some("Transcode"));
        assert_eq!(agenda.params.get("externalId"), Some(&json!(42)));
        assert_eq!(
            agenda.operations[0].payload,
            json!({
                "all": payload,
                "url": "http://x",
                "preset": {"crf": 23},
                "where": "s3://us-east/42",
                "src": "in.mp4"
            })
        );
        assert_eq!(
            agenda.operations[1].payload,
            json!({"in": "@<sample.out::/actionData>", "agenda": "@<pop.agendaId>"})
        );
    }

    #[test]
    fn a_payload_missing_a_required_field_is_a_validation_error() {
        let err = run_template(&template(), &json!({"url": "u"}), "caller").unwrap_err();
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["params.externalId", "operations[0].payload"]);
        assert!(err.errors[1].message.contains("@<pop.payload::/id>"), "{err}");
        assert!(err.errors[1].message.contains("\"sample\""), "{err}");
    }

    #[test]
    fn a_maximum_attempts_from_the_run_payload_is_checked_at_run_time() {
        let mut t = template();
        t.agenda.params.insert("maximumAttempts", "@<pop.payload::/attempts>");
        validate_template(&t).expect("known only at run time");
        let agenda = run_template(&t, &json!({"id": 1, "url": "u", "attempts": 5}), "c").unwrap();
        assert_eq!(agenda.params.get("maximumAttempts"), Some(&json!(5)));
        let err =
            run_template(&t, &json!({"id": 1, "url": "u", "attempts": "x"}), "c").unwrap_err();
        assert_eq!(err.errors[0].field, "params.maximumAttempts", "{err}");
        // A literal that is not an integer is the template's own problem.
        t.agenda.params.insert("maximumAttempts", "lots");
        let err = validate_template(&t).unwrap_err();
        assert_eq!(err.errors[0].field, "agenda.params.maximumAttempts", "{err}");
    }

    #[test]
    fn the_result_is_validated() {
        let mut t = template();
        t.agenda.operations[1].params.insert("dependsOn", "smaple");
        let err = run_template(&t, &json!({"id": 1, "url": "u"}), "caller").unwrap_err();
        assert_eq!(err.errors[0].field, "operations[1].params.dependsOn");
        assert!(run_template(&template(), &json!({"id": 1, "url": "u"}), " ").is_err());
    }

    #[test]
    fn validate_template_accepts_payload_tokens_and_rejects_unknown_names() {
        assert_eq!(validate_template(&template()), Ok(()));
        let mut t = template();
        t.agenda.operations[0].payload = json!("@<notAParameter>").into();
        let err = validate_template(&t).unwrap_err();
        assert_eq!(err.errors[0].field, "agenda.operations[0].payload");
        t.agenda.operations.clear();
        assert_eq!(validate_template(&t).unwrap_err().errors[0].field, "agenda.operations");
    }

    #[test]
    fn a_template_names_static_parameters_bare_but_operations_by_their_output() {
        let mut t = template();
        // `@<preset>` is a static parameter; `@<sample>` would be an operation's output.
        t.agenda.operations[1].payload = json!({"p": "@<preset>", "in": "@<sample>"}).into();
        let err = validate_template(&t).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert_eq!(err.errors[0].field, "agenda.operations[1].payload.in");
        assert!(err.errors[0].message.contains("did you mean `@<sample.out>`?"), "{err}");
    }

    #[test]
    fn run_substitutes_across_the_whole_template_agenda() {
        let t: AgendaTemplate = serde_json::from_value(json!({
            "id": "t2", "customerId": "owner", "title": "Fallback title",
            "staticParameters": {"tier": "gold"},
            "agenda": {
                "title": "Encode @<pop.payload::/name> (@<tier>)",
                "linkId": "@<pop.payload::/batch>",
                "jobId": "job-@<pop.payload::/id>",
                "params": {"externalId": "@<pop.payload::/id>", "tier": "@<tier>"},
                "operations": [{"name": "encode", "type": "ffmpeg",
                    "payload": {"src": "@<pop.payload::/url>"},
                    "params": {"node": "@<pop.payload::/node?any>"}}]
            }
        }))
        .unwrap();
        let payload = json!({"name": "trailer", "batch": "b-7", "id": 42, "url": "s3://in"});
        let agenda = run_template(&t, &payload, "caller").unwrap();
        assert_eq!(agenda.title.as_deref(), Some("Encode trailer (gold)"));
        assert_eq!(agenda.link_id.as_deref(), Some("b-7"));
        assert_eq!(agenda.job_id.as_deref(), Some("job-42"));
        assert_eq!(agenda.params.get("externalId"), Some(&json!(42)));
        assert_eq!(agenda.params.get_str("tier"), Some("gold"));
        assert_eq!(agenda.operations[0].payload, json!({"src": "s3://in"}));
        assert_eq!(agenda.operations[0].params.get_str("node"), Some("any"));
        // A linkId that must be text but would be an object is refused, naming the field.
        let mut bad = t.clone();
        bad.agenda.link_id = Some("@<pop.payload>".into());
        let err = run_template(&bad, &payload, "caller").unwrap_err();
        assert_eq!(err.errors[0].field, "linkId", "{err}");
    }

    #[test]
    fn transform_request_is_pops_alias_of_the_run_payload() {
        let mut t = template();
        t.agenda.operations[0].payload =
            json!({"url": "@<pop.transformRequest::/url>", "all": "@<pop.transformRequest>"})
                .into();
        t.static_parameters.insert("source", "@<pop.transformRequest::/input?none>");
        let payload = json!({"id": 1, "url": "http://x", "input": "in.mp4"});
        let agenda = run_template(&t, &payload, "caller").unwrap();
        assert_eq!(agenda.operations[0].payload, json!({"url": "http://x", "all": payload}));
        assert_eq!(validate_template(&t), Ok(()));
    }

    #[test]
    fn the_run_is_for_the_requested_customer_else_the_templates_else_the_callers_only_one() {
        let mut t = template();
        let any = |_: &str| true;
        assert_eq!(run_customer(Some("acme"), &t, Some("mine"), any).as_deref(), Ok("acme"));
        assert_eq!(run_customer(None, &t, Some("mine"), any).as_deref(), Ok("mine"));
        t.agenda.customer_id = "body-customer".into();
        assert_eq!(run_customer(None, &t, Some("mine"), any).as_deref(), Ok("body-customer"));
        assert_eq!(run_customer(Some(" "), &t, None, any).as_deref(), Ok("body-customer"));
        assert_eq!(run_customer(Some("acme"), &t, None, any).as_deref(), Ok("acme"));
        // A template shared with the caller names its owner: the run is for the caller's own.
        let mine = |c: &str| c == "mine";
        assert_eq!(run_customer(None, &t, Some("mine"), mine).as_deref(), Ok("mine"));
        // A customer is never taken from the run payload: a reference there does not count.
        t.agenda.customer_id = "@<pop.payload::/customer>".into();
        assert_eq!(run_customer(None, &t, Some("mine"), any).as_deref(), Ok("mine"));
        let err = run_customer(None, &t, None, any).unwrap_err();
        assert_eq!(err.errors[0].field, "customerId");
    }

    #[test]
    fn visibility() {
        let mut t = template();
        assert!(may_use_template(&t, "OWNER"));
        assert!(!may_use_template(&t, "other"));
        t.allowed_customer_ids = vec!["Other".into()];
        assert!(may_use_template(&t, "other"));
        t.allowed_customer_ids.clear();
        t.is_global = true;
        assert!(may_use_template(&t, "anyone"));
    }
}
