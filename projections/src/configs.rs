//! The config read models: customers, resource pools, insights and agenda templates, each
//! folded by the domain's own `ConfigAggregate::evolve` (so "an update cannot revive a deleted
//! object" holds here exactly as on the write side). Deleted objects are kept as tombstones
//! for that rule but never returned by a query.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use pop_domain::Aggregate;
use pop_domain::config::{ConfigAggregate, ConfigEvent, ConfigObject, Lifecycle};
use serde::{Deserialize, Serialize};

use crate::query::{Cursor, MAX_CONFIG_SCANNED_PER_PAGE, MAX_PAGE_SIZE, Page};

/// Every object of one config kind, by id (the stream id), in id order.
#[derive(Debug, Clone)]
pub struct ConfigModel<T> {
    objects: BTreeMap<String, ConfigAggregate<T>>,
}

impl<T> Default for ConfigModel<T> {
    fn default() -> Self {
        ConfigModel { objects: BTreeMap::new() }
    }
}

/// How one config object is stored in a snapshot: its lifecycle, tombstones included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredConfig<T> {
    pub id: String,
    pub deleted: bool,
    pub object: T,
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

    /// Applies one event of stream `<category>-<id>`; returns the live object before and after.
    pub(crate) fn apply(&mut self, id: &str, event: &ConfigEvent<T>) -> (Option<T>, Option<&T>) {
        let aggregate = self.objects.entry(id.to_string()).or_default();
        let before = aggregate.live().cloned();
        aggregate.evolve(event);
        (before, aggregate.live())
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
        self.objects.remove(id).and_then(|a| match a.lifecycle {
            Lifecycle::Live(object) => Some(object),
            Lifecycle::Absent | Lifecycle::Deleted(_) => None,
        })
    }

    pub(crate) fn to_stored(&self) -> Vec<StoredConfig<&T>> {
        self.objects
            .iter()
            .filter_map(|(id, a)| match &a.lifecycle {
                Lifecycle::Absent => None,
                Lifecycle::Live(object) => {
                    Some(StoredConfig { id: id.clone(), deleted: false, object })
                }
                Lifecycle::Deleted(object) => {
                    Some(StoredConfig { id: id.clone(), deleted: true, object })
                }
            })
            .collect()
    }

    pub(crate) fn from_stored(stored: Vec<StoredConfig<T>>) -> ConfigModel<T> {
        let objects = stored
            .into_iter()
            .map(|s| {
                let lifecycle = if s.deleted {
                    Lifecycle::Deleted(s.object)
                } else {
                    Lifecycle::Live(s.object)
                };
                (s.id, ConfigAggregate { lifecycle })
            })
            .collect();
        ConfigModel { objects }
    }
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
            model.apply(&id, &ConfigEvent::Created { object, time });
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
}
