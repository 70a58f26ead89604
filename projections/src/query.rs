//! The vocabulary of read-model queries: who may see what ([`Visibility`]), and cursor
//! pagination ([`Cursor`], [`Page`]). Tenancy is the API's to enforce; these types give it an
//! efficient way to do so (per-customer indexes instead of filtering everything).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use pop_domain::text::eq_ignore_case;

/// The customer ids a caller may see (DOMAIN.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// `*`: every customer (admins, internal processes).
    All,
    /// Exactly these customer ids.
    Customers(BTreeSet<String>),
}

impl Visibility {
    /// From a principal's customer ids; any `*` means all.
    pub fn from_ids<I, S>(ids: I) -> Visibility
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut set = BTreeSet::new();
        for id in ids {
            let id = id.into();
            if id == "*" {
                return Visibility::All;
            }
            set.insert(id);
        }
        Visibility::Customers(set)
    }

    /// Whether objects owned by `customer_id` are visible.
    pub fn sees(&self, customer_id: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Customers(ids) => ids.contains(customer_id),
        }
    }

    /// DOMAIN.md §2's rule for insights and templates: owned, global, or shared with one of
    /// the caller's customers (`allowedCustomerIds`, compared case-insensitively).
    pub fn sees_shared(&self, customer_id: &str, is_global: bool, allowed: &[String]) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Customers(ids) => {
                is_global
                    || ids.contains(customer_id)
                    || allowed.iter().any(|a| ids.iter().any(|id| eq_ignore_case(a, id)))
            }
        }
    }
}

/// Who may see a config object, per kind (DOMAIN.md §2, §10): customers and resource pools by
/// their owner; insights and templates also when global or shared with one of the caller's
/// customers. The one place each kind's rule is written; lists filter with it and the
/// application layer's lookups check it.
pub trait VisibleTo {
    fn visible_to(&self, v: &Visibility) -> bool;
}

impl VisibleTo for pop_domain::Customer {
    fn visible_to(&self, v: &Visibility) -> bool {
        v.sees(&self.customer_id)
    }
}

impl VisibleTo for pop_domain::ResourcePool {
    fn visible_to(&self, v: &Visibility) -> bool {
        v.sees(&self.customer_id)
    }
}

impl VisibleTo for pop_domain::Insight {
    fn visible_to(&self, v: &Visibility) -> bool {
        v.sees_shared(&self.customer_id, self.is_global, &self.allowed_customer_ids)
    }
}

impl VisibleTo for pop_domain::AgendaTemplate {
    fn visible_to(&self, v: &Visibility) -> bool {
        v.sees_shared(&self.customer_id, self.is_global, &self.allowed_customer_ids)
    }
}

/// Where a page ends: the sort key of its last item. Lists are ordered by `(time, id)` where
/// the time is the list's order (addedTime or updatedTime, epoch milliseconds) and the id
/// breaks ties, so a cursor names one place in the order even among equal times. Config
/// lists are ordered by id alone (time 0).
///
/// Text form (opaque to clients): `<ms>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub time: i64,
    pub id: Arc<str>,
}

impl Cursor {
    pub fn new(time: i64, id: impl Into<Arc<str>>) -> Cursor {
        Cursor { time, id: id.into() }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.time, self.id)
    }
}

/// A text that is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a page cursor")]
pub struct CursorParseError {
    pub text: String,
}

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Cursor, CursorParseError> {
        let err = || CursorParseError { text: s.to_string() };
        // The time comes first and has no `:`; the id may contain any character.
        let (time, id) = s.split_once(':').ok_or_else(err)?;
        let time = time.parse().map_err(|_| err())?;
        Ok(Cursor { time, id: Arc::from(id) })
    }
}

/// Most items one page holds. Bounds the work and the response of one query; the API may ask
/// for fewer.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// Most index entries one page query examines. A filter that matches rarely (a state few
/// agendas are in, seen by a customer with few agendas) would otherwise scan the whole
/// index: instead the page ends early with a cursor where the scan stopped, and the caller
/// continues from there.
pub const MAX_SCANNED_PER_PAGE: usize = 20_000;

/// Most config objects (customers, pools, insights, templates) one page of a config list
/// examines. They are walked in id order whoever asks, and a page cut by the bound ends with a
/// cursor naming the last one examined, which a caller who may not see it must never be shown
/// (hostile13: past [`MAX_SCANNED_PER_PAGE`] other tenants' objects, a tenant's page of
/// customers would have named one). Config objects are few next to agendas and cheap to pass
/// over (a million in ~50 ms), so the bound sits past any deployment's count: a page of a
/// config list is never cut short in practice.
pub const MAX_CONFIG_SCANNED_PER_PAGE: usize = 1_000_000;

/// One page of a list, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next: self.next }
    }
}

/// The order of an agenda list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AgendaOrder {
    /// By `(addedTime, agenda id)`: stable, an agenda never moves.
    #[default]
    AddedTime,
    /// By `(updatedTime, agenda id)`: an agenda moves to the end whenever it changes, so a
    /// walk through pages may see it again; useful for "recently changed" and for reapers.
    UpdatedTime,
    /// An insight's queue order, `(time the agenda entered the queue, agenda id)`: its
    /// submission, or its re-entry after a rerun, retry, reclaim or release, so a re-added
    /// agenda is behind the ones that waited before it. Only for a query with `insight_id` and
    /// phase `Added` (the agendas the scheduler may queue; `doNotRun` ones never are) or
    /// `Queued`; any other query in this order selects nothing.
    Queue,
}
