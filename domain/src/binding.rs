//! Binding an agenda to an insight (DOMAIN.md §6): which queue of the customer's resource pool
//! will run it. Pure: the caller loads the customer and the pool's insights and stores nothing
//! when binding fails.

use crate::model::{Agenda, AgendaInsight, Customer, Insight};
use crate::params::{Params, keys, value_as_text};
use crate::text::eq_ignore_case;

/// The mapper names of an insight (`mappers` keys), compared case-insensitively.
pub mod mappers {
    /// Matches when any operation's `type` is in the set.
    pub const OPERATION_TYPE: &str = "operationType";
    /// Matches when any operation's `name` is in the set.
    pub const OPERATION_NAME: &str = "operationName";
    /// Values `key=value`; matches when the agenda's or any operation's params hold the pair.
    pub const PARAM_MAP: &str = "paramMap";
    /// Every mapper name pop understands.
    pub const ALL: [&str; 3] = [OPERATION_TYPE, OPERATION_NAME, PARAM_MAP];
}

/// Why an agenda could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("customer {customer_id:?} does not exist")]
    UnknownCustomer { customer_id: String },
    #[error("customer {customer_id:?} has no resource pool, so no insight can run its agendas")]
    NoResourcePool { customer_id: String },
    #[error(
        "{}no insight of resource pool {resource_pool_id:?} that customer {customer_id:?} may use matches the agenda's operation types, names or params; {}",
        untyped_hint(*untyped),
        mapped_hint(mapped_types, suggestions)
    )]
    NoMatchingInsight {
        /// The first operation without a `type` (nothing maps it; the executor runs an
        /// operation by its type): the request's own fault, answered VALIDATION naming it.
        untyped: Option<usize>,
        customer_id: String,
        resource_pool_id: String,
        /// The operation types the insights there map (what the customer may use), sorted.
        mapped_types: Vec<String>,
        /// (an operation type of the agenda, the mapped type it is likely a misspelling of).
        suggestions: Vec<(String, String)>,
    },
}

/// The start of the no-match message when an operation has no type.
fn untyped_hint(untyped: Option<usize>) -> String {
    untyped
        .map(|i| {
            format!("operations[{i}] has no type, and no insight maps the agenda without it: ")
        })
        .unwrap_or_default()
}

/// The rest of the no-match message: which operation types are mapped, and what a misspelt
/// type of the agenda was probably meant to be.
fn mapped_hint(mapped: &[String], suggestions: &[(String, String)]) -> String {
    if mapped.is_empty() {
        return "no insight there maps an operation type".to_string();
    }
    let listed: Vec<String> = mapped.iter().map(|t| format!("{t:?}")).collect();
    let mut hint = format!("the operation types mapped there: {}", listed.join(", "));
    for (given, meant) in suggestions {
        hint.push_str(&format!(" (operation type {given:?}: did you mean {meant:?}?)"));
    }
    hint
}

/// Most mapped operation types a no-match message lists.
const MAX_LISTED_TYPES: usize = 50;

impl BindingError {
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            BindingError::UnknownCustomer { .. } | BindingError::NoResourcePool { .. } => {
                crate::ErrorCode::Validation
            }
            BindingError::NoMatchingInsight { untyped: Some(_), .. } => {
                crate::ErrorCode::Validation
            }
            BindingError::NoMatchingInsight { untyped: None, .. } => crate::ErrorCode::NotFound,
        }
    }

    /// The request field at fault.
    pub fn field(&self) -> String {
        match self {
            BindingError::UnknownCustomer { .. } | BindingError::NoResourcePool { .. } => {
                "customerId".to_string()
            }
            BindingError::NoMatchingInsight { untyped: Some(i), .. } => {
                format!("operations[{i}].type")
            }
            BindingError::NoMatchingInsight { untyped: None, .. } => "agendaInsight".to_string(),
        }
    }
}

/// Whether `customer_id` may read and use `insight`: it is global, owned by that customer, or
/// lists it in `allowedCustomerIds`; customer ids compare case-insensitively.
pub fn may_use_insight(insight: &Insight, customer_id: &str) -> bool {
    may_use(insight.is_global, &insight.customer_id, &insight.allowed_customer_ids, customer_id)
}

/// The visibility rule shared by insights and templates (DOMAIN.md §2).
pub(crate) fn may_use(is_global: bool, owner: &str, allowed: &[String], customer_id: &str) -> bool {
    is_global
        || eq_ignore_case(owner, customer_id)
        || allowed.iter().any(|a| eq_ignore_case(a, customer_id))
}

/// Binds `agenda` to an insight of `customer`'s resource pool (DOMAIN.md §6).
///
/// `customer` is the Customer whose id is the agenda's `customerId` (`None` when there is none);
/// `insights` are candidate insights in any order: those of other pools or not usable by the
/// customer are skipped, the rest are taken oldest first (then by id) so the choice does not
/// depend on the order a store returns them in.
pub fn bind_insight(
    agenda: &Agenda,
    customer: Option<&Customer>,
    insights: &[Insight],
) -> Result<AgendaInsight, BindingError> {
    bind_among(agenda, customer, &insights.iter().collect::<Vec<_>>())
}

/// [`bind_insight`] among insights borrowed where they are kept (the read models): nothing of
/// them copied, as a submission binds twice (once prepared, once more at its turn).
pub fn bind_among(
    agenda: &Agenda,
    customer: Option<&Customer>,
    insights: &[&Insight],
) -> Result<AgendaInsight, BindingError> {
    let customer_id = agenda.customer_id.as_str();
    let customer = customer
        .filter(|c| {
            eq_ignore_case(&c.id, customer_id) || eq_ignore_case(&c.customer_id, customer_id)
        })
        .ok_or_else(|| BindingError::UnknownCustomer { customer_id: customer_id.to_string() })?;
    let pool = customer
        .resource_pool_id
        .as_deref()
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| BindingError::NoResourcePool { customer_id: customer_id.to_string() })?;

    let usable = || {
        insights
            .iter()
            .copied()
            .filter(|i| i.resource_pool_id == pool && may_use_insight(i, customer_id))
    };
    let mut matches: Vec<&Insight> = usable().filter(|i| insight_matches(i, agenda)).collect();
    matches.sort_by(|a, b| (a.added_time, &a.id).cmp(&(b.added_time, &b.id)));

    let preferred = agenda.params.get_text(keys::DEFAULT_INSIGHT).and_then(|wanted| {
        matches
            .iter()
            .find(|i| eq_ignore_case(&i.title, &wanted) || eq_ignore_case(&i.id, &wanted))
            .copied()
    });
    let chosen = preferred.or_else(|| matches.first().copied()).ok_or_else(|| {
        let (mapped_types, suggestions) = mapped_types(usable(), agenda);
        // The missing type is the fault only when the pool maps types and no typed operation
        // looks like a misspelling of one (that one is named by the hint, NOT_FOUND as before).
        let untyped = (suggestions.is_empty() && !mapped_types.is_empty())
            .then(|| agenda.operations.iter().position(|op| op.op_type.trim().is_empty()))
            .flatten();
        BindingError::NoMatchingInsight {
            untyped,
            customer_id: customer_id.to_string(),
            resource_pool_id: pool.to_string(),
            mapped_types,
            suggestions,
        }
    })?;
    Ok(AgendaInsight {
        resource_pool_id: chosen.resource_pool_id.clone(),
        insight_id: chosen.id.clone(),
    })
}

/// The operation types `insights` map (sorted, case-insensitively distinct, at most
/// [`MAX_LISTED_TYPES`]), and for each operation type of `agenda` that none maps, the mapped
/// type it most likely misspells.
fn mapped_types<'a>(
    insights: impl Iterator<Item = &'a Insight>,
    agenda: &Agenda,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut mapped: Vec<String> = Vec::new();
    for insight in insights {
        for (mapper, values) in &insight.mappers {
            if !eq_ignore_case(mapper, mappers::OPERATION_TYPE) {
                continue;
            }
            for value in values {
                if !mapped.iter().any(|m| eq_ignore_case(m, value)) {
                    mapped.push(value.clone());
                }
            }
        }
    }
    mapped.sort();
    let mut suggestions: Vec<(String, String)> = Vec::new();
    for op in &agenda.operations {
        let given = op.op_type.as_str();
        if suggestions.iter().any(|(g, _)| g == given) {
            continue;
        }
        if let Some(meant) = crate::text::closest(given, mapped.iter().map(String::as_str)) {
            suggestions.push((given.to_string(), meant.to_string()));
        }
    }
    mapped.truncate(MAX_LISTED_TYPES);
    (mapped, suggestions)
}

/// Whether any of the insight's mappers matches the agenda (mappers are OR-ed; unknown mapper
/// names match nothing).
pub fn insight_matches(insight: &Insight, agenda: &Agenda) -> bool {
    insight.mappers.iter().any(|(mapper, values)| {
        let any_value = |test: &dyn Fn(&str) -> bool| values.iter().any(|v| test(v));
        if eq_ignore_case(mapper, mappers::OPERATION_TYPE) {
            any_value(&|v| agenda.operations.iter().any(|op| eq_ignore_case(&op.op_type, v)))
        } else if eq_ignore_case(mapper, mappers::OPERATION_NAME) {
            any_value(&|v| agenda.operations.iter().any(|op| eq_ignore_case(&op.name, v)))
        } else if eq_ignore_case(mapper, mappers::PARAM_MAP) {
            any_value(&|v| {
                let Some((key, value)) = v.split_once('=') else {
                    return false;
                };
                let (key, value) = (key.trim(), value.trim());
                holds_pair(&agenda.params, key, value)
                    || agenda.operations.iter().any(|op| holds_pair(&op.params, key, value))
            })
        } else {
            false
        }
    })
}

/// Whether `params` holds `key=value`, both compared case-insensitively; scalar values compare
/// by their text, so `true` matches `"TRUE"` and `5` matches `"5"`.
fn holds_pair(params: &Params, key: &str, value: &str) -> bool {
    params.iter().any(|(k, v)| {
        eq_ignore_case(k, key) && value_as_text(v).is_some_and(|t| eq_ignore_case(t.trim(), value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn customer() -> Customer {
        Customer {
            id: "acme".into(),
            customer_id: "acme".into(),
            title: "Acme".into(),
            resource_pool_id: Some("pool-1".into()),
            ..Customer::default()
        }
    }

    fn insight(id: &str, mappers: serde_json::Value) -> Insight {
        serde_json::from_value(json!({
            "id": id, "customerId": "acme", "title": format!("{id} title"),
            "resourcePoolId": "pool-1", "queueSize": 5, "mappers": mappers,
            "addedTime": 1_000,
        }))
        .unwrap()
    }

    fn agenda(extra: serde_json::Value) -> Agenda {
        let mut body = json!({
            "customerId": "acme",
            "operations": [
                {"name": "Sample.1", "type": "Sample", "params": {"codec": "H264"}},
                {"name": "encode", "type": "ffmpeg"}
            ]
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(body).unwrap()
    }

    fn bound(agenda: &Agenda, insights: &[Insight]) -> Result<String, BindingError> {
        bind_insight(agenda, Some(&customer()), insights).map(|b| {
            assert_eq!(b.resource_pool_id, "pool-1");
            b.insight_id
        })
    }

    #[test]
    fn missing_customer_is_a_validation_error_naming_it() {
        let err = bind_insight(&agenda(json!({})), None, &[]).unwrap_err();
        assert_eq!(err, BindingError::UnknownCustomer { customer_id: "acme".into() });
        assert_eq!(err.code(), crate::ErrorCode::Validation);
        assert!(err.to_string().contains("\"acme\""));
    }

    #[test]
    fn an_operation_without_a_type_that_nothing_maps_is_a_validation_error_naming_it() {
        let mut a = agenda(json!({}));
        a.operations[1].op_type = String::new();
        let types = [insight("i1", json!({"operationType": ["ffmpeg"]}))];
        let err = bind_insight(&a, Some(&customer()), &types).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Validation);
        assert_eq!(err.field(), "operations[1].type");
        assert!(err.to_string().starts_with("operations[1] has no type"), "{err}");
        // Mapped by its name, it binds: the type is the executor's business then.
        let names = [insight("i1", json!({"operationName": ["encode"]}))];
        assert_eq!(bound(&a, &names), Ok("i1".into()));
        // With every type given, no match stays NOT_FOUND.
        let err = bind_insight(&agenda(json!({})), Some(&customer()), &types[..0]).unwrap_err();
        assert_eq!(
            (err.code(), err.field().as_str()),
            (crate::ErrorCode::NotFound, "agendaInsight")
        );
        // A misspelt type beside the untyped one is the likelier fault: the hint names it, and
        // a pool that maps no type at all is not the request's fault either.
        let mut misspelt = a.clone();
        misspelt.operations[0].op_type = "ffmpg".into();
        let err = bind_insight(&misspelt, Some(&customer()), &types).unwrap_err();
        assert_eq!(
            (err.code(), err.field().as_str()),
            (crate::ErrorCode::NotFound, "agendaInsight")
        );
        assert!(err.to_string().contains("did you mean \"ffmpeg\""), "{err}");
        let err = bind_insight(&a, Some(&customer()), &names[..0]).unwrap_err();
        assert_eq!(
            (err.code(), err.field().as_str()),
            (crate::ErrorCode::NotFound, "agendaInsight")
        );
    }

    #[test]
    fn customer_without_pool_is_a_validation_error() {
        let c = Customer { resource_pool_id: None, ..customer() };
        let err = bind_insight(&agenda(json!({})), Some(&c), &[]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Validation);
    }

    #[test]
    fn mappers_match_type_name_and_params_ignoring_case() {
        let a = agenda(json!({"params": {"priority": 5}}));
        for mappers in [
            json!({"operationType": ["SAMPLE"]}),
            json!({"OperationName": ["sample.1"]}),
            json!({"paramMap": ["CODEC=h264"]}),
            json!({"paramMap": ["priority=5"]}),
        ] {
            assert_eq!(bound(&a, &[insight("i1", mappers.clone())]), Ok("i1".into()), "{mappers}");
        }
        for mappers in [
            json!({"operationType": ["other"]}),
            json!({"paramMap": ["codec"]}),
            json!({"paramMap": ["codec=vp9"]}),
            json!({"unknownMapper": ["Sample"]}),
            json!({}),
        ] {
            let err = bound(&a, &[insight("i1", mappers.clone())]).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::NotFound, "{mappers}");
        }
    }

    #[test]
    fn no_match_lists_the_mapped_types_with_a_did_you_mean() {
        let a = agenda(json!({}));
        let insights = [
            insight("i1", json!({"operationType": ["ffmpge", "log"]})),
            insight("i2", json!({"operationType": ["LOG", "probe"], "operationName": ["x"]})),
            Insight {
                customer_id: "other".into(),
                ..insight("secret", json!({"operationType": ["hidden"]}))
            },
        ];
        let err = bound(&a, &insights).unwrap_err();
        let BindingError::NoMatchingInsight { mapped_types, suggestions, .. } = &err else {
            panic!("{err:?}")
        };
        // Only what the customer may use; case-insensitively distinct, sorted.
        assert_eq!(mapped_types, &["ffmpge", "log", "probe"]);
        assert_eq!(suggestions, &[("ffmpeg".to_string(), "ffmpge".to_string())]);
        let text = err.to_string();
        assert!(text.contains(r#"mapped there: "ffmpge", "log", "probe""#), "{text}");
        assert!(text.contains(r#"operation type "ffmpeg": did you mean "ffmpge"?"#), "{text}");
        assert!(!text.contains("hidden"), "{text}");
        let err = bound(&a, &[insight("i1", json!({"operationName": ["x"]}))]).unwrap_err();
        assert!(err.to_string().ends_with("no insight there maps an operation type"), "{err}");
    }

    #[test]
    fn mappers_are_or_ed() {
        let i = insight("i1", json!({"operationType": ["nope"], "operationName": ["ENCODE"]}));
        assert_eq!(bound(&agenda(json!({})), &[i]), Ok("i1".into()));
    }

    #[test]
    fn only_usable_insights_of_the_customers_pool() {
        let matching = json!({"operationType": ["sample"]});
        let other_pool =
            Insight { resource_pool_id: "pool-2".into(), ..insight("a", matching.clone()) };
        let foreign = Insight { customer_id: "other".into(), ..insight("b", matching.clone()) };
        let global = Insight { is_global: true, ..foreign.clone() };
        let allowed = Insight {
            id: "c".into(),
            allowed_customer_ids: vec!["ACME".into()],
            ..foreign.clone()
        };
        let a = agenda(json!({}));
        assert!(bound(&a, &[other_pool.clone(), foreign.clone()]).is_err());
        assert_eq!(bound(&a, &[other_pool.clone(), foreign.clone(), global]), Ok("b".into()));
        assert_eq!(bound(&a, &[other_pool, foreign, allowed]), Ok("c".into()));
    }

    #[test]
    fn owner_compares_ignoring_case() {
        let i = Insight { customer_id: "ACME".into(), ..insight("i", json!({})) };
        assert!(may_use_insight(&i, "acme"));
        assert!(!may_use_insight(&i, "acme2"));
    }

    #[test]
    fn first_match_in_a_stable_order() {
        let m = json!({"operationType": ["sample"]});
        let older =
            Insight { added_time: Utc.timestamp_millis_opt(1).single(), ..insight("z", m.clone()) };
        let a = agenda(json!({}));
        let given = [insight("b", m.clone()), insight("a", m.clone()), older];
        assert_eq!(bound(&a, &given), Ok("z".into()));
        let mut reversed = given.clone();
        reversed.reverse();
        assert_eq!(bound(&a, &reversed), Ok("z".into()));
        assert_eq!(bound(&a, &given[..2]), Ok("a".into()));
    }

    #[test]
    fn default_insight_by_title_or_id_among_matches() {
        let m = json!({"operationType": ["sample"]});
        let given = [insight("a", m.clone()), insight("b", m.clone()), insight("c", json!({}))];
        let by_title = agenda(json!({"params": {"defaultInsight": "B TITLE"}}));
        assert_eq!(bound(&by_title, &given), Ok("b".into()));
        let by_id = agenda(json!({"params": {"defaultInsight": "b"}}));
        assert_eq!(bound(&by_id, &given), Ok("b".into()));
        // A default that does not match the agenda is not chosen; the first match is.
        let not_matching = agenda(json!({"params": {"defaultInsight": "c"}}));
        assert_eq!(bound(&not_matching, &given), Ok("a".into()));
    }
}
