//! The configuration aggregates: Customer, ResourcePool, Insight and AgendaTemplate
//! (DOMAIN.md §2). Their lifecycles are the same shape (create, update, delete, each a whole
//! object), so one generic decider, [`ConfigAggregate`], serves all four; what differs per kind
//! (stream category, event type names, validation) lives in its [`ConfigObject`] impl.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::aggregate::Aggregate;
use crate::binding::mappers;
use crate::codec::{CodecError, EventCodec};
use crate::error::{ErrorCode, ValidationErrors};
use crate::model::{AgendaTemplate, Customer, Insight, ResourcePool, Timestamp, epoch_ms};
use crate::template::validate_template;
use crate::text::eq_ignore_case;

/// The schema version this build writes for every config event type.
pub const SCHEMA_VERSION: u32 = 1;

pub use crate::validate::MAX_ID_LENGTH;

/// At most this many agendas wait in one insight's queue: the queue is what `getAgenda` hands
/// out, and fairness across customers (§7) is decided when agendas enter it, so a huge queue
/// would only freeze today's order for longer.
pub const MAX_QUEUE_SIZE: i64 = 10_000;

/// The event data key holding the time of the change (epoch milliseconds, like every POP time).
const TIME_FIELD: &str = "time";

/// What varies between the config kinds. Everything else about their lifecycle is shared.
pub trait ConfigObject:
    Clone + Debug + PartialEq + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The stream category (`<category>-<id>`).
    const CATEGORY: &'static str;
    /// The kind in messages, e.g. `resource pool`.
    const KIND: &'static str;
    /// The event data key that holds the object, e.g. `resourcePool`.
    const DATA_FIELD: &'static str;
    /// Persisted event type names. Never renamed once written.
    const CREATED: &'static str;
    const UPDATED: &'static str;
    const DELETED: &'static str;

    fn id(&self) -> &str;
    fn customer_id(&self) -> &str;
    /// The rules of DOMAIN.md §2 beyond the common ones (id and customerId present).
    fn check(&self, errors: &mut ValidationErrors);
    /// The object's title, if it has one (checked as a short label by [`validate`]).
    fn title(&self) -> Option<&str>;
    /// Sets the server-owned fields: correlation id and times; clears computed fields.
    fn stamp(&mut self, cid: &str, added: Timestamp, updated: Timestamp);
    fn added_time(&self) -> Option<Timestamp>;
    /// `updatedTime`: for a deleted object, when it was deleted.
    fn updated_time(&self) -> Option<Timestamp>;
}

/// What an admin asks of a config object. Each carries the time and correlation id, since the
/// domain reads no clock.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigCommand<T> {
    Create {
        object: T,
        now: Timestamp,
        cid: String,
    },
    /// Replaces the whole object (its `addedTime` is kept).
    Update {
        object: T,
        now: Timestamp,
        cid: String,
    },
    Delete {
        id: String,
        now: Timestamp,
        cid: String,
    },
}

/// What happened to a config object. Every event carries the whole object as it is after the
/// change (for a deletion: as it was, stamped with the deleting cid and time), so read models
/// never need the earlier events.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigEvent<T> {
    Created { object: T, time: Timestamp },
    Updated { object: T, time: Timestamp },
    Deleted { object: T, time: Timestamp },
}

impl<T: ConfigObject> ConfigEvent<T> {
    /// Every (type name, schema version) this enum writes; the golden fixtures cover each.
    pub const EVENT_TYPES: &'static [(&'static str, u32)] =
        &[(T::CREATED, SCHEMA_VERSION), (T::UPDATED, SCHEMA_VERSION), (T::DELETED, SCHEMA_VERSION)];

    pub fn object(&self) -> &T {
        match self {
            ConfigEvent::Created { object, .. }
            | ConfigEvent::Updated { object, .. }
            | ConfigEvent::Deleted { object, .. } => object,
        }
    }

    pub fn time(&self) -> Timestamp {
        match self {
            ConfigEvent::Created { time, .. }
            | ConfigEvent::Updated { time, .. }
            | ConfigEvent::Deleted { time, .. } => *time,
        }
    }
}

/// Why a config command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{kind} {id:?} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("{kind} {id:?} does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id:?} is invalid: {errors}")]
    Invalid { kind: &'static str, id: String, errors: ValidationErrors },
}

impl ConfigError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ConfigError::AlreadyExists { .. } => ErrorCode::Conflict,
            ConfigError::NotFound { .. } => ErrorCode::NotFound,
            ConfigError::Invalid { .. } => ErrorCode::Validation,
        }
    }
}

/// Where a config object is in its life.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Lifecycle<T> {
    /// Never created (an empty stream).
    #[default]
    Absent,
    Live(T),
    /// Deleted; a new create may bring the id back.
    Deleted(T),
}

/// The decider of one config object; see the module docs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigAggregate<T> {
    pub lifecycle: Lifecycle<T>,
}

impl<T> ConfigAggregate<T> {
    /// The object unless absent or deleted.
    pub fn live(&self) -> Option<&T> {
        match &self.lifecycle {
            Lifecycle::Live(object) => Some(object),
            Lifecycle::Absent | Lifecycle::Deleted(_) => None,
        }
    }
}

pub type CustomerAggregate = ConfigAggregate<Customer>;
pub type CustomerCommand = ConfigCommand<Customer>;
pub type CustomerEvent = ConfigEvent<Customer>;
pub type ResourcePoolAggregate = ConfigAggregate<ResourcePool>;
pub type ResourcePoolCommand = ConfigCommand<ResourcePool>;
pub type ResourcePoolEvent = ConfigEvent<ResourcePool>;
pub type InsightAggregate = ConfigAggregate<Insight>;
pub type InsightCommand = ConfigCommand<Insight>;
pub type InsightEvent = ConfigEvent<Insight>;
pub type AgendaTemplateAggregate = ConfigAggregate<AgendaTemplate>;
pub type AgendaTemplateCommand = ConfigCommand<AgendaTemplate>;
pub type AgendaTemplateEvent = ConfigEvent<AgendaTemplate>;

/// Every config event type this build writes, with its schema version.
pub fn event_types() -> Vec<(&'static str, u32)> {
    [
        CustomerEvent::EVENT_TYPES,
        ResourcePoolEvent::EVENT_TYPES,
        InsightEvent::EVENT_TYPES,
        AgendaTemplateEvent::EVENT_TYPES,
    ]
    .concat()
}

/// Validates an object for create or update: the common rules, then its kind's.
pub fn validate<T: ConfigObject>(object: &T) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let id = object.id();
    if id.trim().is_empty() {
        errors.push("id", format!("the {} needs an id", T::KIND));
    } else if id.chars().count() > MAX_ID_LENGTH {
        errors.push("id", format!("{} ids are at most {MAX_ID_LENGTH} characters", T::KIND));
    }
    if object.customer_id().trim().is_empty() {
        errors.push("customerId", format!("{} {id:?} needs a customerId", T::KIND));
    }
    // A title is a short label, as an agenda's (hostile60c M1: a 100 KB customer title written
    // in a loop grew the log 8 MB/s).
    if let Some(title) = object.title()
        && let Err(why) = crate::validate::check_text(title, crate::validate::MAX_TITLE_LENGTH)
    {
        errors.push("title", format!("the title {why}"));
    }
    object.check(&mut errors);
    errors.into_result()
}

impl<T: ConfigObject> Aggregate for ConfigAggregate<T> {
    type Command = ConfigCommand<T>;
    type Event = ConfigEvent<T>;
    type Error = ConfigError;

    const CATEGORY: &'static str = T::CATEGORY;

    fn decide(&self, command: &ConfigCommand<T>) -> Result<Vec<ConfigEvent<T>>, ConfigError> {
        let invalid = |object: &T, errors| ConfigError::Invalid {
            kind: T::KIND,
            id: object.id().to_string(),
            errors,
        };
        match command {
            ConfigCommand::Create { object, now, cid } => {
                if self.live().is_some() {
                    return Err(ConfigError::AlreadyExists {
                        kind: T::KIND,
                        id: object.id().to_string(),
                    });
                }
                validate(object).map_err(|e| invalid(object, e))?;
                let mut object = object.clone();
                object.stamp(cid, *now, *now);
                Ok(vec![ConfigEvent::Created { object, time: *now }])
            }
            ConfigCommand::Update { object, now, cid } => {
                let Some(current) = self.live() else {
                    return Err(ConfigError::NotFound {
                        kind: T::KIND,
                        id: object.id().to_string(),
                    });
                };
                validate(object).map_err(|e| invalid(object, e))?;
                if object.id() != current.id() {
                    let mut errors = ValidationErrors::new();
                    errors.push(
                        "id",
                        format!("the id of {} {:?} cannot change", T::KIND, current.id()),
                    );
                    return Err(invalid(object, errors));
                }
                let mut object = object.clone();
                object.stamp(cid, current.added_time().unwrap_or(*now), *now);
                Ok(vec![ConfigEvent::Updated { object, time: *now }])
            }
            ConfigCommand::Delete { id, now, cid } => {
                let Some(current) = self.live() else {
                    return Err(ConfigError::NotFound { kind: T::KIND, id: id.clone() });
                };
                let mut object = current.clone();
                object.stamp(cid, current.added_time().unwrap_or(*now), *now);
                Ok(vec![ConfigEvent::Deleted { object, time: *now }])
            }
        }
    }

    /// Total: a creation or update makes the object live (the event is the fact), except that
    /// an update cannot revive a deleted object; a deletion always leaves it deleted.
    fn evolve(&mut self, event: &ConfigEvent<T>) {
        self.lifecycle = match (std::mem::take(&mut self.lifecycle), event) {
            (_, ConfigEvent::Created { object, .. }) => Lifecycle::Live(object.clone()),
            (Lifecycle::Deleted(old), ConfigEvent::Updated { .. }) => Lifecycle::Deleted(old),
            (_, ConfigEvent::Updated { object, .. }) => Lifecycle::Live(object.clone()),
            (_, ConfigEvent::Deleted { object, .. }) => Lifecycle::Deleted(object.clone()),
        };
    }
}

impl<T: ConfigObject> EventCodec for ConfigEvent<T> {
    fn event_type(&self) -> &'static str {
        match self {
            ConfigEvent::Created { .. } => T::CREATED,
            ConfigEvent::Updated { .. } => T::UPDATED,
            ConfigEvent::Deleted { .. } => T::DELETED,
        }
    }

    fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    /// `{"<dataField>": {...the object...}, "time": <epoch ms>}`.
    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut data = serde_json::Map::new();
        data.insert(
            T::DATA_FIELD.to_string(),
            serde_json::to_value(self.object()).map_err(CodecError::Encode)?,
        );
        data.insert(TIME_FIELD.to_string(), Value::from(self.time().timestamp_millis()));
        serde_json::to_vec(&Value::Object(data)).map_err(CodecError::Encode)
    }

    fn decode(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, CodecError> {
        #[derive(Clone, Copy)]
        enum Kind {
            Created,
            Updated,
            Deleted,
        }
        let kind = match event_type {
            t if t == T::CREATED => Kind::Created,
            t if t == T::UPDATED => Kind::Updated,
            t if t == T::DELETED => Kind::Deleted,
            _ => return Err(CodecError::UnknownType { event_type: event_type.to_string() }),
        };
        if schema_version != SCHEMA_VERSION {
            return Err(CodecError::UnknownVersion {
                event_type: event_type.to_string(),
                version: schema_version,
            });
        }
        let malformed = |source| CodecError::Malformed {
            event_type: event_type.to_string(),
            version: schema_version,
            source,
        };
        let missing = |field: &'static str| {
            malformed(<serde_json::Error as serde::de::Error>::missing_field(field))
        };
        let mut data: serde_json::Map<String, Value> =
            serde_json::from_slice(data).map_err(malformed)?;
        let object = data.remove(T::DATA_FIELD).ok_or_else(|| missing(T::DATA_FIELD))?;
        let object: T = serde_json::from_value(object).map_err(malformed)?;
        let time = data.get(TIME_FIELD).ok_or_else(|| missing(TIME_FIELD))?;
        let time = epoch_ms::from_value(time)
            .map_err(|e| malformed(<serde_json::Error as serde::de::Error>::custom(e)))?
            .ok_or_else(|| missing(TIME_FIELD))?;
        Ok(match kind {
            Kind::Created => ConfigEvent::Created { object, time },
            Kind::Updated => ConfigEvent::Updated { object, time },
            Kind::Deleted => ConfigEvent::Deleted { object, time },
        })
    }
}

fn blank(text: &str) -> bool {
    text.trim().is_empty()
}

impl ConfigObject for Customer {
    fn title(&self) -> Option<&str> {
        Some(&self.title)
    }
    const CATEGORY: &'static str = "customer";
    const KIND: &'static str = "customer";
    const DATA_FIELD: &'static str = "customer";
    const CREATED: &'static str = "CustomerCreated";
    const UPDATED: &'static str = "CustomerUpdated";
    const DELETED: &'static str = "CustomerDeleted";

    fn id(&self) -> &str {
        &self.id
    }
    fn customer_id(&self) -> &str {
        &self.customer_id
    }
    fn check(&self, errors: &mut ValidationErrors) {
        if blank(&self.title) {
            errors.push("title", format!("customer {:?} needs a title", self.id));
        }
        if !blank(&self.id) && !blank(&self.customer_id) && self.id != self.customer_id {
            errors.push(
                "id",
                format!(
                    "a customer's id must equal its customerId ({:?} is not {:?})",
                    self.id, self.customer_id
                ),
            );
        }
    }
    fn stamp(&mut self, cid: &str, added: Timestamp, updated: Timestamp) {
        self.cid = Some(cid.to_string());
        self.added_time = Some(added);
        self.updated_time = Some(updated);
    }
    fn added_time(&self) -> Option<Timestamp> {
        self.added_time
    }
    fn updated_time(&self) -> Option<Timestamp> {
        self.updated_time
    }
}

impl ConfigObject for ResourcePool {
    fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }
    const CATEGORY: &'static str = "resourcepool";
    const KIND: &'static str = "resource pool";
    const DATA_FIELD: &'static str = "resourcePool";
    const CREATED: &'static str = "ResourcePoolCreated";
    const UPDATED: &'static str = "ResourcePoolUpdated";
    const DELETED: &'static str = "ResourcePoolDeleted";

    fn id(&self) -> &str {
        &self.id
    }
    fn customer_id(&self) -> &str {
        &self.customer_id
    }
    fn check(&self, _errors: &mut ValidationErrors) {
        // Only the common rules: a pool's title is optional in POP.
    }
    fn stamp(&mut self, cid: &str, added: Timestamp, updated: Timestamp) {
        self.cid = Some(cid.to_string());
        self.added_time = Some(added);
        self.updated_time = Some(updated);
        // Computed by the read side from the insights; never stored.
        self.insight_ids.clear();
    }
    fn added_time(&self) -> Option<Timestamp> {
        self.added_time
    }
    fn updated_time(&self) -> Option<Timestamp> {
        self.updated_time
    }
}

impl ConfigObject for Insight {
    fn title(&self) -> Option<&str> {
        Some(&self.title)
    }
    const CATEGORY: &'static str = "insight";
    const KIND: &'static str = "insight";
    const DATA_FIELD: &'static str = "insight";
    const CREATED: &'static str = "InsightCreated";
    const UPDATED: &'static str = "InsightUpdated";
    const DELETED: &'static str = "InsightDeleted";

    fn id(&self) -> &str {
        &self.id
    }
    fn customer_id(&self) -> &str {
        &self.customer_id
    }
    fn check(&self, errors: &mut ValidationErrors) {
        let id = &self.id;
        if blank(&self.title) {
            errors.push("title", format!("insight {id:?} needs a title"));
        }
        if blank(&self.resource_pool_id) {
            errors.push("resourcePoolId", format!("insight {id:?} needs a resourcePoolId"));
        }
        // pop: POP defaulted queueSize to 0, which silently meant "never scheduled".
        if self.queue_size == 0 {
            errors.push(
                "queueSize",
                format!(
                    "insight {id:?} needs a queueSize between 1 and {MAX_QUEUE_SIZE} (it was \
                     missing, null or 0; POP's 0 meant the insight was never scheduled)"
                ),
            );
        } else if !(1..=MAX_QUEUE_SIZE).contains(&self.queue_size) {
            errors.push(
                "queueSize",
                format!(
                    "insight {id:?} has queueSize {}; it must be between 1 and {MAX_QUEUE_SIZE}",
                    self.queue_size
                ),
            );
        }
        for (name, values) in &self.mappers {
            let field = format!("mappers.{name}");
            if !mappers::ALL.iter().any(|known| eq_ignore_case(known, name)) {
                errors.push(
                    field,
                    format!(
                        "insight {id:?} has mapper {name:?}, which matches nothing; mappers are {}",
                        mappers::ALL.join(", ")
                    ),
                );
            } else if eq_ignore_case(name, mappers::PARAM_MAP) {
                for value in values.iter().filter(|v| !v.contains('=')) {
                    errors.push(
                        field.clone(),
                        format!("insight {id:?} has paramMap value {value:?}, not key=value"),
                    );
                }
            }
        }
    }
    fn stamp(&mut self, cid: &str, added: Timestamp, updated: Timestamp) {
        self.cid = Some(cid.to_string());
        self.added_time = Some(added);
        self.updated_time = Some(updated);
    }
    fn added_time(&self) -> Option<Timestamp> {
        self.added_time
    }
    fn updated_time(&self) -> Option<Timestamp> {
        self.updated_time
    }
}

impl ConfigObject for AgendaTemplate {
    fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }
    const CATEGORY: &'static str = "template";
    const KIND: &'static str = "agenda template";
    const DATA_FIELD: &'static str = "agendaTemplate";
    const CREATED: &'static str = "AgendaTemplateCreated";
    const UPDATED: &'static str = "AgendaTemplateUpdated";
    const DELETED: &'static str = "AgendaTemplateDeleted";

    fn id(&self) -> &str {
        &self.id
    }
    fn customer_id(&self) -> &str {
        &self.customer_id
    }
    fn check(&self, errors: &mut ValidationErrors) {
        if let Err(body) = validate_template(self) {
            for e in body.errors {
                errors.push(e.field, e.message);
            }
            errors.omitted += body.omitted;
        }
    }
    fn stamp(&mut self, cid: &str, added: Timestamp, updated: Timestamp) {
        self.cid = Some(cid.to_string());
        self.added_time = Some(added);
        self.updated_time = Some(updated);
    }
    fn added_time(&self) -> Option<Timestamp> {
        self.added_time
    }
    fn updated_time(&self) -> Option<Timestamp> {
        self.updated_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    fn at(ms: i64) -> Timestamp {
        Utc.timestamp_millis_opt(ms).single().unwrap()
    }

    fn customer() -> Customer {
        serde_json::from_value(json!({
            "id": "acme", "customerId": "acme", "title": "Acme", "resourcePoolId": "pool-1"
        }))
        .unwrap()
    }

    fn insight() -> Insight {
        serde_json::from_value(json!({
            "id": "i1", "customerId": "acme", "title": "Transcode", "resourcePoolId": "pool-1",
            "queueSize": 5, "mappers": {"operationType": ["ffmpeg"], "paramMap": ["tier=gold"]}
        }))
        .unwrap()
    }

    fn create<T: Clone>(object: &T, ms: i64) -> ConfigCommand<T> {
        ConfigCommand::Create { object: object.clone(), now: at(ms), cid: format!("cid-{ms}") }
    }
    fn update<T: Clone>(object: &T, ms: i64) -> ConfigCommand<T> {
        ConfigCommand::Update { object: object.clone(), now: at(ms), cid: format!("cid-{ms}") }
    }
    fn delete<T>(id: &str, ms: i64) -> ConfigCommand<T> {
        ConfigCommand::Delete { id: id.into(), now: at(ms), cid: format!("cid-{ms}") }
    }

    /// Given the events of earlier commands, when `command`, then its events or error.
    fn check<T: ConfigObject>(
        given: &[ConfigCommand<T>],
        when: ConfigCommand<T>,
    ) -> Result<Vec<ConfigEvent<T>>, ConfigError> {
        let mut state = ConfigAggregate::<T>::default();
        for command in given {
            for event in state.decide(command).unwrap() {
                state.evolve(&event);
            }
        }
        state.decide(&when)
    }

    fn invalid_fields(result: Result<Vec<impl Debug>, ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid { errors, .. }) => {
                errors.errors.into_iter().map(|e| e.field).collect()
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn create_stamps_cid_and_times() {
        let events = check(&[], create(&customer(), 1_000)).unwrap();
        let mut expected = customer();
        expected.cid = Some("cid-1000".into());
        expected.added_time = Some(at(1_000));
        expected.updated_time = Some(at(1_000));
        assert_eq!(events, vec![ConfigEvent::Created { object: expected, time: at(1_000) }]);
        assert_eq!(events[0].event_type(), "CustomerCreated");
    }

    #[test]
    fn customer_rules() {
        let c = Customer { title: " ".into(), id: "other".into(), ..customer() };
        assert_eq!(invalid_fields(check(&[], create(&c, 1))), vec!["title", "id"]);
        let c = Customer { customer_id: String::new(), id: String::new(), ..customer() };
        assert_eq!(invalid_fields(check(&[], create(&c, 1))), vec!["id", "customerId"]);
    }

    /// A title is a short label, as an agenda's, on every kind (hostile60c M1: a 100 KB
    /// customer title written in a loop grew the log 8 MB/s).
    #[test]
    fn a_title_is_a_short_label_on_every_kind() {
        let long = "x".repeat(crate::validate::MAX_TITLE_LENGTH + 1);
        let c = Customer { title: long.clone(), ..customer() };
        assert_eq!(invalid_fields(check(&[], create(&c, 1))), vec!["title"]);
        let i = Insight { title: long.clone(), ..insight() };
        assert_eq!(invalid_fields(check(&[], create(&i, 1))), vec!["title"]);
        let p = ResourcePool {
            id: "p".into(),
            customer_id: "acme".into(),
            title: Some(long),
            ..ResourcePool::default()
        };
        assert_eq!(invalid_fields(check(&[], create(&p, 1))), vec!["title"]);
        let fits = "x".repeat(crate::validate::MAX_TITLE_LENGTH);
        let c = Customer { title: fits, ..customer() };
        assert!(check(&[], create(&c, 1)).is_ok());
    }

    #[test]
    fn insight_rules() {
        let i = Insight { title: String::new(), resource_pool_id: " ".into(), ..insight() };
        assert_eq!(invalid_fields(check(&[], create(&i, 1))), vec!["title", "resourcePoolId"]);
        for size in [0, -1, MAX_QUEUE_SIZE + 1] {
            let i = Insight { queue_size: size, ..insight() };
            assert_eq!(invalid_fields(check(&[], create(&i, 1))), vec!["queueSize"], "{size}");
        }
        let mut i = insight();
        i.mappers.insert("operationtype".into(), ["x".to_string()].into());
        i.mappers.insert("opType".into(), ["x".to_string()].into());
        i.mappers.insert("paramMap".into(), ["tier".to_string()].into());
        assert_eq!(
            invalid_fields(check(&[], create(&i, 1))),
            vec!["mappers.opType", "mappers.paramMap"]
        );
    }

    #[test]
    fn template_must_hold_a_valid_agenda() {
        let t: AgendaTemplate = serde_json::from_value(json!({
            "id": "t1", "customerId": "acme", "staticParameters": {"p": 1},
            "agenda": {"operations": [{"name": "a", "payload": "@<p>-@<pop.payload::/x>"}]}
        }))
        .unwrap();
        assert!(check(&[], create(&t, 1)).is_ok());
        let broken = AgendaTemplate { agenda: Default::default(), ..t.clone() };
        assert_eq!(invalid_fields(check(&[], create(&broken, 1))), vec!["agenda.operations"]);
    }

    #[test]
    fn create_on_existing_conflicts_but_may_follow_a_delete() {
        let err = check(&[create(&customer(), 1)], create(&customer(), 2)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict);
        assert!(err.to_string().contains("customer \"acme\""), "{err}");
        let again = check(&[create(&customer(), 1), delete("acme", 2)], create(&customer(), 3));
        assert!(matches!(again.unwrap()[..], [ConfigEvent::Created { .. }]));
    }

    #[test]
    fn update_and_delete_need_a_live_object() {
        for given in [vec![], vec![create(&insight(), 1), delete("i1", 2)]] {
            let err = check(&given, update(&insight(), 3)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::NotFound);
            let err = check(&given, delete::<Insight>("i1", 3)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::NotFound);
        }
    }

    #[test]
    fn update_keeps_added_time() {
        let changed = Insight { queue_size: 9, ..insight() };
        let events = check(&[create(&insight(), 1)], update(&changed, 5)).unwrap();
        let ConfigEvent::Updated { object, time } = &events[0] else { panic!("{events:?}") };
        assert_eq!(
            (object.added_time, object.updated_time, *time),
            (Some(at(1)), Some(at(5)), at(5))
        );
        assert_eq!(object.queue_size, 9);
        assert_eq!(object.cid.as_deref(), Some("cid-5"));
    }

    #[test]
    fn update_cannot_change_the_id() {
        let moved = Insight { id: "i2".into(), ..insight() };
        assert_eq!(invalid_fields(check(&[create(&insight(), 1)], update(&moved, 2))), vec!["id"]);
    }

    #[test]
    fn delete_carries_the_last_state() {
        let events = check(&[create(&customer(), 1)], delete("acme", 4)).unwrap();
        let ConfigEvent::Deleted { object, time } = &events[0] else { panic!("{events:?}") };
        assert_eq!((object.title.as_str(), *time), ("Acme", at(4)));
        let mut state = CustomerAggregate::default();
        state.evolve(&events[0]);
        assert_eq!(state.live(), None);
    }

    #[test]
    fn resource_pool_insight_ids_are_never_stored() {
        let pool = ResourcePool {
            id: "pool-1".into(),
            customer_id: "acme".into(),
            insight_ids: vec!["i1".into()],
            ..ResourcePool::default()
        };
        let events = check(&[], create(&pool, 1)).unwrap();
        assert!(events[0].object().insight_ids.is_empty());
    }

    #[test]
    fn codec_rejects_unknown_types_versions_and_bad_data() {
        let data = br#"{"customer": {"id": "a", "customerId": "a", "title": "A"}, "time": 5}"#;
        assert!(CustomerEvent::decode("CustomerCreated", 1, data).is_ok());
        assert!(matches!(
            CustomerEvent::decode("InsightCreated", 1, data),
            Err(CodecError::UnknownType { .. })
        ));
        assert!(matches!(
            CustomerEvent::decode("CustomerCreated", 2, data),
            Err(CodecError::UnknownVersion { .. })
        ));
        for bad in [&br#"{"time": 5}"#[..], br#"{"customer": {}}"#, b"[]", b"{"] {
            assert!(matches!(
                CustomerEvent::decode("CustomerCreated", 1, bad),
                Err(CodecError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn event_types_are_listed_once_each() {
        let types = event_types();
        assert_eq!(types.len(), 12);
        let mut names: Vec<_> = types.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 12);
    }

    fn arbitrary_event() -> impl Strategy<Value = InsightEvent> {
        (0u8..3, 0i64..4, "[a-c]{0,2}", 0i64..1_000_000).prop_map(|(kind, size, title, ms)| {
            let object = Insight { queue_size: size, title, ..insight() };
            let time = at(ms);
            match kind {
                0 => ConfigEvent::Created { object, time },
                1 => ConfigEvent::Updated { object, time },
                _ => ConfigEvent::Deleted { object, time },
            }
        })
    }

    fn arbitrary_command() -> impl Strategy<Value = InsightCommand> {
        (0u8..3, 0i64..3, 0i64..1_000).prop_map(|(kind, size, ms)| {
            let object = Insight { queue_size: size, ..insight() };
            match kind {
                0 => create(&object, ms),
                1 => update(&object, ms),
                _ => delete("i1", ms),
            }
        })
    }

    proptest! {
        #[test]
        fn evolve_is_total(events in prop::collection::vec(arbitrary_event(), 0..12)) {
            let state = InsightAggregate::replay(&events);
            // Any order folds without a panic; an update never revives a deleted object.
            let mut live = false;
            let mut deleted = false;
            for event in &events {
                match event {
                    ConfigEvent::Created { .. } => (live, deleted) = (true, false),
                    ConfigEvent::Updated { .. } => live = !deleted,
                    ConfigEvent::Deleted { .. } => (live, deleted) = (false, true),
                }
            }
            prop_assert_eq!(state.live().is_some(), live);
        }

        #[test]
        fn replay_reproduces_state_and_events_round_trip(
            commands in prop::collection::vec(arbitrary_command(), 0..12)
        ) {
            let mut state = InsightAggregate::default();
            let mut history = Vec::new();
            for command in &commands {
                if let Ok(events) = state.decide(command) {
                    for event in events {
                        state.evolve(&event);
                        history.push(event);
                    }
                }
            }
            prop_assert_eq!(&InsightAggregate::replay(&history), &state);
            for event in &history {
                let data = event.encode().unwrap();
                let back = InsightEvent::decode(event.event_type(), event.schema_version(), &data);
                prop_assert_eq!(&back.unwrap(), event);
            }
        }
    }
}
