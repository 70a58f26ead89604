//! The config read models: customers, resource pools, insights and agenda templates, each
//! folded by the domain's own `ConfigAggregate::evolve` (so "an update cannot revive a deleted
//! object" holds here exactly as on the write side). Deleted objects are kept as tombstones
//! for that rule but never returned by a query.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use pop_domain::Aggregate;
use pop_domain::config::{ConfigAggregate, ConfigEvent, ConfigObject, Lifecycle};
use serde::{Deserialize, Serialize};

use crate::query::{Cursor, MAX_CONFIG_SCANNED_PER_PAGE, MAX_PAGE_SIZE, Page, Visibility};

/// Every object of one config kind, by id (the stream id), in id order.
#[derive(Debug, Clone)]
pub struct ConfigModel<T> {
    objects: BTreeMap<String, ConfigAggregate<T>>,
    /// What each object (live or a tombstone) takes, by id.
    footprints: HashMap<String, Footprint>,
    /// What each customer's objects take, summed from `footprints`.
    by_customer: HashMap<String, ConfigBytes>,
}

impl<T> Default for ConfigModel<T> {
    fn default() -> Self {
        ConfigModel {
            objects: BTreeMap::new(),
            footprints: HashMap::new(),
            by_customer: HashMap::new(),
        }
    }
}

/// What config objects take: their streams' events (data and metadata) in the log, until the
/// data reaper deletes them, and the objects as JSON in the read models (tombstones too).
/// Counted toward a customer's quotas when one of its limited admins writes one (hostile60c:
/// a customer's admin rewriting a template in a loop wrote the log at its request rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigBytes {
    pub log: u64,
    pub memory: u64,
}

impl ConfigBytes {
    pub(crate) fn add(&mut self, other: ConfigBytes) {
        self.log = self.log.saturating_add(other.log);
        self.memory = self.memory.saturating_add(other.memory);
    }

    fn sub(&mut self, other: ConfigBytes) {
        self.log = self.log.saturating_sub(other.log);
        self.memory = self.memory.saturating_sub(other.memory);
    }
}

/// One object's share: whose it is and what it takes.
#[derive(Debug, Clone, Default)]
struct Footprint {
    customer: String,
    bytes: ConfigBytes,
}

/// How one config object is stored in a snapshot: its lifecycle, tombstones included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredConfig<T> {
    pub id: String,
    pub deleted: bool,
    pub object: T,
    /// Its stream's bytes in the log (which no fold of the object gives back).
    pub log_bytes: u64,
}

impl<T: ConfigObject> ConfigModel<T> {
    /// The live object `id`.
    pub fn get(&self, id: &str) -> Option<&T> {
        self.objects.get(id).and_then(ConfigAggregate::live)
    }

    /// Live objects.
    pub fn len(&self) -> usize {
        self.live().count()
    }

    pub fn is_empty(&self) -> bool {
        self.live().next().is_none()
    }

    /// Every live object in id order.
    pub fn live(&self) -> impl Iterator<Item = &T> {
        self.objects.values().filter_map(ConfigAggregate::live)
    }

    /// Whether `id` names a deleted object still held as a tombstone.
    pub fn is_deleted(&self, id: &str) -> bool {
        self.objects.get(id).is_some_and(|a| matches!(a.lifecycle, Lifecycle::Deleted(_)))
    }

    /// Deleted objects still held as tombstones, in id order, with their id.
    pub fn deleted(&self) -> impl Iterator<Item = (&str, &T)> {
        self.objects.iter().filter_map(|(id, a)| match &a.lifecycle {
            Lifecycle::Deleted(object) => Some((id.as_str(), object)),
            Lifecycle::Absent | Lifecycle::Live(_) => None,
        })
    }

    /// One page of the live objects `visible` admits, in id order (cursor time is 0). With
    /// `exact_next`, a full page looks ahead for one more admitted object and gives `next`
    /// only if there is one (or if the [`MAX_CONFIG_SCANNED_PER_PAGE`] bound stopped the
    /// look-ahead).
    pub fn list(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        exact_next: bool,
        mut visible: impl FnMut(&T) -> bool,
    ) -> Page<&T> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let start = match after {
            Some(c) => Bound::Excluded(c.id.as_ref()),
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut range = self.objects.range::<str, _>((start, Bound::Unbounded)).peekable();
        let mut scanned = 0;
        // The id of the page's last item, once the page is full and looking ahead.
        let mut full_at: Option<&str> = None;
        while let Some((id, aggregate)) = range.next() {
            scanned += 1;
            let admitted = aggregate.live().filter(|o| visible(o));
            match (full_at, admitted) {
                (Some(last), Some(_)) => return Page { items, next: Some(Cursor::new(0, last)) },
                (Some(_), None) | (None, None) => {}
                (None, Some(object)) => items.push(object),
            }
            if full_at.is_none() && items.len() == limit {
                if !exact_next {
                    let next = range.peek().is_some().then(|| Cursor::new(0, id.as_str()));
                    return Page { items, next };
                }
                full_at = Some(id.as_str());
            }
            if scanned == MAX_CONFIG_SCANNED_PER_PAGE {
                let next = range.peek().is_some().then(|| Cursor::new(0, id.as_str()));
                return Page { items, next };
            }
        }
        Page { items, next: None }
    }

    /// What the objects of the customers `visibility` sees take (constant time per customer).
    pub fn bytes(&self, visibility: &Visibility) -> ConfigBytes {
        match visibility {
            Visibility::All => {
                let mut all = ConfigBytes::default();
                self.by_customer.values().for_each(|b| all.add(*b));
                all
            }
            Visibility::Customers(ids) => {
                let mut held = ConfigBytes::default();
                ids.iter().filter_map(|c| self.by_customer.get(c)).for_each(|b| held.add(*b));
                held
            }
        }
    }

    /// Applies one event of stream `<category>-<id>`, `stored` bytes in the log; returns the
    /// live object before and after.
    pub(crate) fn apply(
        &mut self,
        id: &str,
        event: &ConfigEvent<T>,
        stored: u32,
    ) -> (Option<T>, Option<&T>) {
        let aggregate = self.objects.entry(id.to_string()).or_default();
        let before = aggregate.live().cloned();
        aggregate.evolve(event);
        let held = match &aggregate.lifecycle {
            Lifecycle::Live(o) | Lifecycle::Deleted(o) => {
                Some((o.customer_id().to_string(), json_len(o)))
            }
            Lifecycle::Absent => None,
        };
        let log = self.footprints.get(id).map_or(0, |f| f.bytes.log).saturating_add(stored.into());
        self.set_footprint(
            id,
            held.map(|(customer, memory)| (customer, ConfigBytes { log, memory })),
        );
        (before, self.objects.get(id).and_then(ConfigAggregate::live))
    }

    /// Replaces what the object `id` takes (`None`: nothing, it is gone).
    fn set_footprint(&mut self, id: &str, new: Option<(String, ConfigBytes)>) {
        if let Some(old) = self.footprints.remove(id)
            && let Some(sum) = self.by_customer.get_mut(&old.customer)
        {
            sum.sub(old.bytes);
            if *sum == ConfigBytes::default() {
                self.by_customer.remove(&old.customer);
            }
        }
        if let Some((customer, bytes)) = new {
            self.by_customer.entry(customer.clone()).or_default().add(bytes);
            self.footprints.insert(id.to_string(), Footprint { customer, bytes });
        }
    }

    /// The live object `id`, to change read-side fields (computed `insightIds`).
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        match self.objects.get_mut(id).map(|a| &mut a.lifecycle) {
            Some(Lifecycle::Live(object)) => Some(object),
            _ => None,
        }
    }

    /// Forgets `id` entirely, tombstone included (the hook for deleted streams).
    pub(crate) fn remove(&mut self, id: &str) -> Option<T> {
        self.set_footprint(id, None);
        self.objects.remove(id).and_then(|a| match a.lifecycle {
            Lifecycle::Live(object) => Some(object),
            Lifecycle::Absent | Lifecycle::Deleted(_) => None,
        })
    }

    pub(crate) fn to_stored(&self) -> Vec<StoredConfig<&T>> {
        self.objects
            .iter()
            .filter_map(|(id, a)| {
                let (deleted, object) = match &a.lifecycle {
                    Lifecycle::Absent => return None,
                    Lifecycle::Live(object) => (false, object),
                    Lifecycle::Deleted(object) => (true, object),
                };
                let log_bytes = self.footprints.get(id).map_or(0, |f| f.bytes.log);
                Some(StoredConfig { id: id.clone(), deleted, object, log_bytes })
            })
            .collect()
    }

    pub(crate) fn from_stored(stored: Vec<StoredConfig<T>>) -> ConfigModel<T> {
        let mut model = ConfigModel::default();
        for s in stored {
            let bytes = ConfigBytes { log: s.log_bytes, memory: json_len(&s.object) };
            model.set_footprint(&s.id, Some((s.object.customer_id().to_string(), bytes)));
            let lifecycle =
                if s.deleted { Lifecycle::Deleted(s.object) } else { Lifecycle::Live(s.object) };
            model.objects.insert(s.id, ConfigAggregate { lifecycle });
        }
        model
    }
}

/// An object's size as JSON: what it is counted to hold in memory.
fn json_len<T: Serialize>(object: &T) -> u64 {
    pop_domain::validate::json_bytes(object) as u64
}

/// The id as the `Arc<str>` a [`crate::Change`] carries.
pub(crate) fn arc(id: &str) -> Arc<str> {
    Arc::from(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pop_domain::model::Customer;

    /// Past twenty thousand other tenants' customers, a tenant's page of customers still holds
    /// its own and ends without a cursor (a cursor there would name the last object examined,
    /// another tenant's: hostile13).
    #[test]
    fn a_page_past_many_other_tenants_objects_names_none_of_them() {
        let mut model: ConfigModel<Customer> = ConfigModel::default();
        let time = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let mut create = |id: String| {
            let object =
                Customer { id: id.clone(), customer_id: id.clone(), ..Customer::default() };
            model.apply(&id, &ConfigEvent::Created { object, time }, 0);
        };
        for i in 0..25_000 {
            create(format!("b-{i:05}"));
        }
        create("zz-acme".to_owned());
        let page = model.list(None, 10, true, |c| c.id == "zz-acme");
        let ids: Vec<&str> = page.items.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["zz-acme"]);
        assert!(page.next.is_none(), "{:?}", page.next);
    }

    /// What a customer's config objects take follows every event: each event's bytes add to
    /// the log figure, the memory figure is the object as it is (a tombstone too), an object
    /// moved to another customer moves its share, a reaped stream takes its share away, and a
    /// snapshot gives back the same figures.
    #[test]
    fn a_customers_config_bytes_follow_its_objects() {
        let mut model: ConfigModel<Customer> = ConfigModel::default();
        let time = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let acme = Visibility::from_ids(["acme"]);
        let globex = Visibility::from_ids(["globex"]);
        let object = |owner: &str, title: &str| Customer {
            id: "c1".to_owned(),
            customer_id: owner.to_owned(),
            title: title.to_owned(),
            ..Customer::default()
        };
        let len = |c: &Customer| serde_json::to_vec(c).map(|v| v.len() as u64).unwrap_or(0);

        let first = object("acme", "short");
        model.apply("c1", &ConfigEvent::Created { object: first.clone(), time }, 100);
        assert_eq!(model.bytes(&acme), ConfigBytes { log: 100, memory: len(&first) });

        let longer = object("acme", &"x".repeat(500));
        model.apply("c1", &ConfigEvent::Updated { object: longer.clone(), time }, 700);
        assert_eq!(model.bytes(&acme), ConfigBytes { log: 800, memory: len(&longer) });
        assert_eq!(model.bytes(&globex), ConfigBytes::default());

        let moved = object("globex", "short");
        model.apply("c1", &ConfigEvent::Updated { object: moved.clone(), time }, 50);
        assert_eq!(model.bytes(&acme), ConfigBytes::default());
        assert_eq!(model.bytes(&globex), ConfigBytes { log: 850, memory: len(&moved) });

        model.apply("c1", &ConfigEvent::Deleted { object: moved.clone(), time }, 60);
        let held = ConfigBytes { log: 910, memory: len(&moved) };
        assert_eq!(model.bytes(&globex), held, "a tombstone is still held");
        assert_eq!(model.bytes(&Visibility::All), held);

        let stored: Vec<StoredConfig<Customer>> = model
            .to_stored()
            .into_iter()
            .map(|s| StoredConfig {
                id: s.id,
                deleted: s.deleted,
                object: s.object.clone(),
                log_bytes: s.log_bytes,
            })
            .collect();
        let back = ConfigModel::from_stored(stored);
        assert_eq!(back.bytes(&globex), held);

        model.remove("c1");
        assert_eq!(model.bytes(&globex), ConfigBytes::default());
        assert_eq!(model.bytes(&Visibility::All), ConfigBytes::default());
    }
}
