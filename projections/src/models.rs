//! All read models together, and the one function that folds a decoded event into them.
//! [`ReadModels`] is a pure value: the same events in the same order always give the same
//! models, whatever was snapshotted or reloaded on the way (checked by
//! [`ReadModels::fingerprint`] over the canonical JSON).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use pop_domain::agenda::AgendaState;
use pop_domain::config::{ConfigEvent, ConfigObject};
use pop_domain::reap::{ReapEvent, STREAM_REAPED};
use pop_domain::{
    Agenda, AgendaProgress, AgendaTemplate, Customer, EventCodec, Insight, OperationProgress,
    ProgressSummary, ResourcePool,
};
use pop_store::Position;
use serde::Deserialize;

use crate::agendas::{AgendaEntry, AgendaModel, AgendaQuery, CorruptEntry};
use crate::change::{Change, ChangeKind};
use crate::configs::{ConfigBytes, ConfigModel, StoredConfig, arc};
use crate::decode::{Decoded, DomainEvent, category, split_stream};
use crate::fnv::Fnv1a;
use crate::query::{Cursor, Page, Visibility, VisibleTo};

/// The version of the canonical JSON shape (and so of the snapshot body). Bump it whenever
/// the shape or the meaning of a read model changes: an old snapshot is then ignored and the
/// models are rebuilt from the log, which is always correct.
///
/// 2: agenda states record when they entered their insight's queue (`enteredTime`), operation
/// progress carries `cid` and the operation's params, `startedTime` keeps the first start, and
/// `statusCode` is a string; a version-1 snapshot would show none of that until each agenda
/// changed again.
///
/// 3: the snapshot body is no longer the canonical JSON but framed, checksummed chunks of
/// agenda records holding finished agendas in their settled (compressed) bytes
/// ([`crate::snapshot`]); the canonical JSON itself (what the fingerprints hash) is unchanged
/// but for this number.
///
/// 4: agenda states count the diagnostics of their current attempt
/// (`attemptDiagnostics`, `operationAttemptDiagnostics`), a rerun after an executor's
/// NOT_RETRYABLE adds a diagnostic saying so, and a cancel that withdrew a retry says it: the
/// fold of an old log gives other states than a version-3 snapshot holds, so such a snapshot is
/// set aside and the models rebuilt from the log (review-s41: `pop verify` called an upgraded
/// data directory's honest snapshot TAMPERED).
///
/// 5: a snapshot's agenda records carry what each agenda's stream takes in the log (for
/// `--max-log-bytes-per-customer`), which no fold of a state gives back: a version-4 snapshot
/// is set aside and the models rebuilt from the log, which counts it.
///
/// 6: a settled agenda record says whether its retry is to come (`AgendaEntry::retry_due`),
/// read without decoding it; a version-5 snapshot is set aside and the models rebuilt.
///
/// 7: each config object carries what its stream takes in the log (`logBytes`, counted toward
/// its customer's quotas when a limited admin writes one); a version-6 snapshot is set aside
/// and the models rebuilt.
pub const FORMAT_VERSION: u32 = 7;

/// A deleted config object kept as a tombstone (see [`ReadModels::deleted_configs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedConfig {
    /// Its stream, `<category>-<id>`.
    pub stream: String,
    /// `customer`, `resource pool`, `insight` or `agenda template`.
    pub kind: &'static str,
    pub id: String,
    pub customer_id: String,
    /// When it was deleted.
    pub updated_time: Option<pop_domain::Timestamp>,
}

/// Every read model, at one position of the log.
#[derive(Debug, Default)]
pub struct ReadModels {
    position: Position,
    agendas: AgendaModel,
    customers: ConfigModel<Customer>,
    pools: ConfigModel<ResourcePool>,
    insights: ConfigModel<Insight>,
    templates: ConfigModel<AgendaTemplate>,
    /// Pool id → the live insights whose `resourcePoolId` is that pool. Kept even for pools
    /// that do not exist (yet): an insight may name a pool created later.
    pool_insights: BTreeMap<String, BTreeSet<String>>,
}

impl ReadModels {
    pub fn new() -> ReadModels {
        ReadModels::default()
    }

    /// The position of the last event folded in (skipped ones included).
    pub fn position(&self) -> Position {
        self.position
    }

    /// Folds one event at `position`. When `changes` is given, the changes it caused are
    /// pushed there (the rebuild path passes `None` and pays nothing for them).
    ///
    /// Only a corrupt settled agenda fails (see [`CorruptEntry`]); every event, known or
    /// skipped, moves the position.
    pub fn apply(
        &mut self,
        position: Position,
        decoded: &Decoded,
        changes: Option<&mut Vec<Change>>,
    ) -> Result<(), CorruptEntry> {
        if let Decoded::Event { id, event, stored } = decoded {
            match event {
                DomainEvent::Agenda(e) => {
                    let mut change = changes.is_some().then(|| {
                        let mut c = Change::empty(position, ChangeKind::Agenda, e.event_type());
                        c.operations = crate::change::operations_touched(e);
                        c
                    });
                    if self.agendas.apply(id, e, *stored, change.as_mut())?
                        && let (Some(changes), Some(change)) = (changes, change)
                    {
                        changes.push(change);
                    }
                }
                DomainEvent::Customer(e) => {
                    self.customers.apply(id, e, *stored);
                    push_config(changes, position, ChangeKind::Customer, id, e);
                }
                DomainEvent::ResourcePool(e) => {
                    self.pools.apply(id, e, *stored);
                    self.refresh_pool(id);
                    push_config(changes, position, ChangeKind::ResourcePool, id, e);
                }
                DomainEvent::Insight(e) => {
                    let (before, after) = self.insights.apply(id, e, *stored);
                    let old_pool = before.map(|i| i.resource_pool_id);
                    let new_pool = after.map(|i| i.resource_pool_id.clone());
                    let mut changes = changes;
                    push_config(changes.as_deref_mut(), position, ChangeKind::Insight, id, e);
                    if old_pool != new_pool {
                        self.move_insight(id, old_pool, new_pool, position, changes);
                    }
                }
                DomainEvent::Template(e) => {
                    self.templates.apply(id, e, *stored);
                    push_config(changes, position, ChangeKind::Template, id, e);
                }
                // The reaper deleted (or is about to delete) the named stream: forget what it
                // fed, exactly as a rebuild without its events would.
                DomainEvent::Reap(ReapEvent::StreamReaped(e)) => {
                    if let Some(mut change) = self.forget_stream(position, &e.stream) {
                        change.event_type = STREAM_REAPED;
                        if let Some(changes) = changes {
                            changes.push(change);
                        }
                    }
                }
            }
        }
        self.position = position;
        Ok(())
    }

    /// The hook for streams deleted from the store: drops whatever read model the stream fed.
    /// The data reaper's `StreamReaped` records (stream `reaps-<day>`) are routed here.
    pub fn forget_stream(&mut self, position: Position, stream: &str) -> Option<Change> {
        let (cat, id) = split_stream(stream)?;
        let change = |kind, customer: &str| {
            let mut c = Change::empty(position, kind, "StreamDeleted");
            c.id = arc(id);
            c.customer_id = arc(customer);
            c.removed = true;
            c
        };
        let change = match cat {
            category::AGENDA => {
                let entry = self.agendas.remove(id)?;
                let mut c = change(ChangeKind::Agenda, entry.customer_id());
                c.progress_id = Some(arc(entry.progress_id()));
                c.link_id = entry.link_id().map(arc);
                c.insight_id = entry.insight_id().map(arc);
                c
            }
            category::CUSTOMER => {
                change(ChangeKind::Customer, &self.customers.remove(id)?.customer_id)
            }
            category::RESOURCE_POOL => {
                change(ChangeKind::ResourcePool, &self.pools.remove(id)?.customer_id)
            }
            category::INSIGHT => {
                let insight = self.insights.remove(id)?;
                self.move_insight(id, Some(insight.resource_pool_id), None, position, None);
                change(ChangeKind::Insight, &insight.customer_id)
            }
            category::TEMPLATE => {
                change(ChangeKind::Template, &self.templates.remove(id)?.customer_id)
            }
            _ => return None,
        };
        self.position = self.position.max(position);
        Some(change)
    }

    fn move_insight(
        &mut self,
        insight_id: &str,
        old_pool: Option<String>,
        new_pool: Option<String>,
        position: Position,
        mut changes: Option<&mut Vec<Change>>,
    ) {
        if let Some(pool) = &old_pool
            && let Some(set) = self.pool_insights.get_mut(pool)
        {
            set.remove(insight_id);
            if set.is_empty() {
                self.pool_insights.remove(pool);
            }
        }
        if let Some(pool) = &new_pool {
            self.pool_insights.entry(pool.clone()).or_default().insert(insight_id.to_string());
        }
        for pool in old_pool.iter().chain(new_pool.iter()) {
            if self.refresh_pool(pool)
                && let (Some(changes), Some(p)) = (changes.as_deref_mut(), self.pools.get(pool))
            {
                let mut c = Change::empty(position, ChangeKind::ResourcePool, "InsightMoved");
                c.id = arc(pool);
                c.customer_id = arc(&p.customer_id);
                changes.push(c);
            }
        }
    }

    /// Sets a live pool's computed `insightIds`; whether they changed.
    fn refresh_pool(&mut self, pool_id: &str) -> bool {
        let ids: Vec<String> = self
            .pool_insights
            .get(pool_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        match self.pools.get_mut(pool_id) {
            Some(pool) if pool.insight_ids != ids => {
                pool.insight_ids = ids;
                true
            }
            _ => false,
        }
    }

    /// Every deleted config object still held as a tombstone (what the data reaper may reap):
    /// customers, resource pools, insights and templates, in that order and by id.
    pub fn deleted_configs(&self) -> Vec<DeletedConfig> {
        fn of<T: ConfigObject>(model: &ConfigModel<T>, out: &mut Vec<DeletedConfig>) {
            for (id, object) in model.deleted() {
                out.push(DeletedConfig {
                    stream: pop_domain::aggregate::stream_name(T::CATEGORY, id),
                    kind: T::KIND,
                    id: id.to_string(),
                    customer_id: object.customer_id().to_string(),
                    updated_time: object.updated_time(),
                });
            }
        }
        let mut out = Vec::new();
        of(&self.customers, &mut out);
        of(&self.pools, &mut out);
        of(&self.insights, &mut out);
        of(&self.templates, &mut out);
        out
    }

    // ---- queries --------------------------------------------------------------------------
    // Single-object lookups return the object whatever its customer: the API checks
    // `Visibility::sees` on the result and answers not-found (DOMAIN.md §10). Lists filter.

    /// Stops maintaining the agenda indexes per event, for a bulk load (rebuild, snapshot)
    /// that nobody queries before it ends with [`ReadModels::build_indexes`].
    pub(crate) fn defer_indexes(&mut self) {
        self.agendas.defer_indexes();
    }

    /// Builds the agenda indexes once after [`ReadModels::defer_indexes`].
    pub(crate) fn build_indexes(&mut self) {
        self.agendas.build_indexes();
    }

    /// The agendas read model (entries, indexes, pages).
    pub fn agendas(&self) -> &AgendaModel {
        &self.agendas
    }

    /// The degraded mode: see [`AgendaModel::compact_live`].
    pub fn compact_live(&mut self) -> usize {
        self.agendas.compact_live()
    }

    pub fn agenda_entry(&self, id: &str) -> Option<&AgendaEntry> {
        self.agendas.get(id)
    }

    pub fn agenda(&self, id: &str) -> Result<Option<Agenda>, CorruptEntry> {
        self.agendas.get(id).map_or(Ok(None), AgendaEntry::agenda)
    }

    pub fn agenda_state(&self, id: &str) -> Result<Option<AgendaState>, CorruptEntry> {
        self.agendas.get(id).map_or(Ok(None), |e| e.state().map(|s| Some(s.into_owned())))
    }

    /// By AgendaProgress id (the agenda's `progressId`), among the agendas `v` sees (progress
    /// ids are chosen per customer: one that several customers use answers the first; the
    /// application layer tells such an id apart).
    pub fn agenda_progress(
        &self,
        progress_id: &str,
        v: &Visibility,
    ) -> Result<Option<AgendaProgress>, CorruptEntry> {
        self.agendas
            .with_progress_id(progress_id)
            .find(|e| v.sees(e.customer_id()))
            .map_or(Ok(None), |e| e.progress().map(Some))
    }

    /// By OperationProgress id (`<progressId>-<operation name>`), among the agendas `v` sees
    /// (the first match; see [`AgendaModel::operation_progress`] for all of them).
    pub fn operation_progress(
        &self,
        id: &str,
        v: &Visibility,
    ) -> Result<Option<OperationProgress>, CorruptEntry> {
        Ok(self.agendas.operation_progress(id, |e| v.sees(e.customer_id()))?.into_iter().next())
    }

    /// A page of agenda entries (cheap; decode with [`AgendaEntry::agenda`] /
    /// [`AgendaEntry::progress`]).
    pub fn select_agendas(&self, query: &AgendaQuery<'_>) -> Page<&AgendaEntry> {
        self.agendas.select(query)
    }

    /// [`Self::select_agendas`] with one more per-entry filter applied before the page is cut
    /// (see [`AgendaModel::select_where`]).
    pub fn select_agendas_where(
        &self,
        query: &AgendaQuery<'_>,
        keep: impl Fn(&AgendaEntry) -> bool,
    ) -> Page<&AgendaEntry> {
        self.agendas.select_where(query, keep)
    }

    /// A page of AgendaProgress.
    pub fn progress_page(
        &self,
        query: &AgendaQuery<'_>,
    ) -> Result<Page<AgendaProgress>, CorruptEntry> {
        let page = self.agendas.select(query);
        let items = page.items.iter().map(|e| e.progress()).collect::<Result<_, _>>()?;
        Ok(Page { items, next: page.next })
    }

    /// A page of agendas.
    pub fn agenda_page(&self, query: &AgendaQuery<'_>) -> Result<Page<Agenda>, CorruptEntry> {
        let page = self.agendas.select(query);
        let mut items = Vec::with_capacity(page.items.len());
        for entry in &page.items {
            items.extend(entry.agenda()?);
        }
        Ok(Page { items, next: page.next })
    }

    /// DOMAIN.md §4.3, over the agendas of `link_id` the caller sees; computed on read.
    pub fn progress_summary(
        &self,
        link_id: &str,
        visibility: &Visibility,
    ) -> Result<ProgressSummary, CorruptEntry> {
        self.agendas.progress_summary(link_id, visibility)
    }

    /// [`AgendaModel::progress_summary_parts`]: what a summary is made of, taken out under the
    /// read lock to be decoded after it.
    pub fn progress_summary_parts(
        &self,
        link_id: &str,
        visibility: &Visibility,
    ) -> Vec<crate::DetachedProgress> {
        self.agendas.progress_summary_parts(link_id, visibility)
    }

    /// [`AgendaModel::progress_summary_parts_within`].
    pub fn progress_summary_parts_within(
        &self,
        link_id: &str,
        visibility: &Visibility,
        max: usize,
    ) -> Option<Vec<crate::DetachedProgress>> {
        self.agendas.progress_summary_parts_within(link_id, visibility, max)
    }

    /// What the config objects of the customers `v` sees take, of every kind (their own
    /// customer objects included): constant time per customer.
    pub fn config_bytes(&self, v: &Visibility) -> ConfigBytes {
        let mut bytes = self.customers.bytes(v);
        bytes.add(self.pools.bytes(v));
        bytes.add(self.insights.bytes(v));
        bytes.add(self.templates.bytes(v));
        bytes
    }

    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.get(id)
    }

    /// A live customer whose id equals `id` ignoring case but is not `id`: sharing
    /// (`allowedCustomerIds`) compares ids ignoring case, as POP's clients lowercase them, so
    /// two such customers would be one to it.
    pub fn customer_ignoring_case(&self, id: &str) -> Option<&Customer> {
        self.customers.live().find(|c| c.id != id && pop_domain::text::eq_ignore_case(&c.id, id))
    }

    /// A page of the live customers `v` may see that also pass `keep`, in id order; `keep`
    /// applies before the page is cut, and `next` only when more match (see
    /// [`ConfigModel::list`]'s `exact_next`). The same for the other config kinds below.
    pub fn customers(
        &self,
        v: &Visibility,
        after: Option<&Cursor>,
        limit: usize,
        keep: impl Fn(&Customer) -> bool,
    ) -> Page<&Customer> {
        self.customers.list(after, limit, true, |c| c.visible_to(v) && keep(c))
    }

    /// Every live customer in id order (a pool's delete asks which name it).
    pub fn all_customers(&self) -> impl Iterator<Item = &Customer> {
        self.customers.live()
    }

    /// Every live resource pool in id order (a customer's delete asks which it owns).
    pub fn all_resource_pools(&self) -> impl Iterator<Item = &ResourcePool> {
        self.pools.live()
    }

    /// Every live template in id order (a customer's delete asks which it owns).
    pub fn all_templates(&self) -> impl Iterator<Item = &AgendaTemplate> {
        self.templates.live()
    }

    /// With `insightIds` computed from the live insights.
    pub fn resource_pool(&self, id: &str) -> Option<&ResourcePool> {
        self.pools.get(id)
    }

    pub fn resource_pools(
        &self,
        v: &Visibility,
        after: Option<&Cursor>,
        limit: usize,
        keep: impl Fn(&ResourcePool) -> bool,
    ) -> Page<&ResourcePool> {
        self.pools.list(after, limit, true, |p| p.visible_to(v) && keep(p))
    }

    pub fn insight(&self, id: &str) -> Option<&Insight> {
        self.insights.get(id)
    }

    /// Whether insight `id` exists and takes agendas of `customer_id` (its own, shared with
    /// it, or global): the one place an agenda of that customer bound to it may run (a rerun,
    /// a retry; what holds the insight's delete).
    pub fn insight_takes(&self, id: &str, customer_id: &str) -> bool {
        self.insight(id).is_some_and(|i| pop_domain::binding::may_use_insight(i, customer_id))
    }

    /// Insights the caller owns, that are global, or that are shared with it.
    pub fn insights(
        &self,
        v: &Visibility,
        after: Option<&Cursor>,
        limit: usize,
        keep: impl Fn(&Insight) -> bool,
    ) -> Page<&Insight> {
        self.insights.list(after, limit, true, |i| i.visible_to(v) && keep(i))
    }

    /// Every live insight in id order (the scheduler walks them all).
    pub fn all_insights(&self) -> impl Iterator<Item = &Insight> {
        self.insights.live()
    }

    pub fn template(&self, id: &str) -> Option<&AgendaTemplate> {
        self.templates.get(id)
    }

    /// Templates the caller owns, that are global, or that are shared with it.
    pub fn templates(
        &self,
        v: &Visibility,
        after: Option<&Cursor>,
        limit: usize,
        keep: impl Fn(&AgendaTemplate) -> bool,
    ) -> Page<&AgendaTemplate> {
        self.templates.list(after, limit, true, |t| t.visible_to(v) && keep(t))
    }

    // ---- canonical form -------------------------------------------------------------------

    /// Writes the canonical JSON of every read model: objects in id order, agenda states as
    /// `serde_json` writes them (maps are `BTreeMap`s, so key order is fixed). Equal models
    /// write equal bytes; this is the snapshot body and what [`Self::fingerprint`] hashes.
    pub fn write_canonical(&self, w: &mut impl Write) -> io::Result<()> {
        write!(w, "{{\"formatVersion\":{FORMAT_VERSION},\"position\":")?;
        serde_json::to_writer(&mut *w, &self.position)?;
        w.write_all(b",")?;
        self.write_objects(w)
    }

    /// The canonical JSON of the objects alone (after the position), for
    /// [`Self::write_canonical`] and [`Self::content_fingerprint`].
    fn write_objects(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(b"\"agendas\":[")?;
        for (i, entry) in self.agendas.entries_by_id().into_iter().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            w.write_all(b"{\"id\":")?;
            serde_json::to_writer(&mut *w, entry.key())?;
            w.write_all(b",\"state\":")?;
            let json = entry.canonical_json().map_err(io::Error::other)?;
            w.write_all(&json)?;
            w.write_all(b"}")?;
        }
        w.write_all(b"],")?;
        self.write_configs(w)?;
        w.write_all(b"}")
    }

    /// The config objects' members of the canonical JSON and of a snapshot's head:
    /// `"customers":…,"resourcePools":…,"insights":…,"templates":…`.
    fn write_configs(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(b"\"customers\":")?;
        serde_json::to_writer(&mut *w, &self.customers.to_stored())?;
        w.write_all(b",\"resourcePools\":")?;
        serde_json::to_writer(&mut *w, &self.pools.to_stored())?;
        w.write_all(b",\"insights\":")?;
        serde_json::to_writer(&mut *w, &self.insights.to_stored())?;
        w.write_all(b",\"templates\":")?;
        serde_json::to_writer(&mut *w, &self.templates.to_stored())?;
        Ok(())
    }

    /// A stable 64-bit hash (FNV-1a) of the canonical JSON: equal for equal models, across
    /// processes and Rust versions (unlike `DefaultHasher`, whose algorithm may change).
    pub fn fingerprint(&self) -> io::Result<u64> {
        let mut hasher = Fnv1a::default();
        self.write_canonical(&mut hasher)?;
        Ok(hasher.finish())
    }

    /// [`Self::fingerprint`] without the log position: equal for equal objects, whichever
    /// store the log was folded from. A position is the store's own numbering (the embedded
    /// store counts 1, 2, 3…, PostgreSQL numbers (transaction, sequence) pairs), so the same
    /// events imported into another store end at another position while every read model
    /// holds the same objects; no object in the models holds a position. `pop rebuild` prints
    /// this one, so an export imported elsewhere can be compared with its source.
    pub fn content_fingerprint(&self) -> io::Result<u64> {
        let mut hasher = Fnv1a::default();
        write!(hasher, "{{\"formatVersion\":{FORMAT_VERSION},")?;
        self.write_objects(&mut hasher)?;
        Ok(hasher.finish())
    }

    /// Reads models back from their canonical JSON (what the fingerprints hash; snapshots
    /// have a format of their own, [`crate::snapshot`]).
    pub fn from_canonical(json: &[u8]) -> Result<ReadModels, serde_json::Error> {
        let stored: StoredModels = serde_json::from_slice(json)?;
        check_format_version(stored.format_version)?;
        let mut models = ReadModels::from_configs(
            stored.position,
            stored.customers,
            stored.resource_pools,
            stored.insights,
            stored.templates,
        );
        models.agendas.defer_indexes();
        for agenda in stored.agendas {
            models.agendas.put(&agenda.id, agenda.state, None);
        }
        models.agendas.build_indexes();
        Ok(models)
    }

    /// Models holding the given config objects (and no agenda), with each pool's
    /// `insightIds` computed.
    fn from_configs(
        position: Position,
        customers: Vec<StoredConfig<Customer>>,
        pools: Vec<StoredConfig<ResourcePool>>,
        insights: Vec<StoredConfig<Insight>>,
        templates: Vec<StoredConfig<AgendaTemplate>>,
    ) -> ReadModels {
        let mut models = ReadModels {
            position,
            customers: ConfigModel::from_stored(customers),
            pools: ConfigModel::from_stored(pools),
            insights: ConfigModel::from_stored(insights),
            templates: ConfigModel::from_stored(templates),
            ..ReadModels::default()
        };
        let links: Vec<(String, String)> =
            models.insights.live().map(|i| (i.id.clone(), i.resource_pool_id.clone())).collect();
        for (insight, pool) in links {
            models.pool_insights.entry(pool).or_default().insert(insight);
        }
        let pools: Vec<String> = models.pool_insights.keys().cloned().collect();
        for pool in pools {
            models.refresh_pool(&pool);
        }
        models
    }

    /// A snapshot's head (see [`crate::snapshot`]): JSON of the format version, the position,
    /// how many agendas follow, and every config object, as in the canonical JSON.
    pub(crate) fn write_snapshot_head(&self, w: &mut impl Write) -> io::Result<()> {
        write!(w, "{{\"formatVersion\":{FORMAT_VERSION},\"position\":")?;
        serde_json::to_writer(&mut *w, &self.position)?;
        write!(w, ",\"agendas\":{},", self.agendas.len())?;
        self.write_configs(w)?;
        w.write_all(b"}")
    }

    /// The models of a snapshot's head, without agendas, and how many agendas it says follow.
    pub(crate) fn from_snapshot_head(
        json: &[u8],
    ) -> Result<(ReadModels, usize), serde_json::Error> {
        let head: SnapshotHead = serde_json::from_slice(json)?;
        check_format_version(head.format_version)?;
        let models = ReadModels::from_configs(
            head.position,
            head.customers,
            head.resource_pools,
            head.insights,
            head.templates,
        );
        Ok((models, head.agendas))
    }

    /// Puts the agendas of a snapshot (their indexes built) into models from its head.
    pub(crate) fn set_agendas(&mut self, agendas: AgendaModel) {
        self.agendas = agendas;
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotHead {
    format_version: u32,
    position: Position,
    agendas: usize,
    customers: Vec<StoredConfig<Customer>>,
    resource_pools: Vec<StoredConfig<ResourcePool>>,
    insights: Vec<StoredConfig<Insight>>,
    templates: Vec<StoredConfig<AgendaTemplate>>,
}

fn check_format_version(found: u32) -> Result<(), serde_json::Error> {
    if found == FORMAT_VERSION {
        return Ok(());
    }
    Err(<serde_json::Error as serde::de::Error>::custom(format!(
        "format version {found} is not {FORMAT_VERSION}"
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredModels {
    format_version: u32,
    position: Position,
    agendas: Vec<StoredAgenda>,
    customers: Vec<StoredConfig<Customer>>,
    resource_pools: Vec<StoredConfig<ResourcePool>>,
    insights: Vec<StoredConfig<Insight>>,
    templates: Vec<StoredConfig<AgendaTemplate>>,
}

#[derive(Deserialize)]
struct StoredAgenda {
    id: String,
    state: AgendaState,
}

fn push_config<T: ConfigObject>(
    changes: Option<&mut Vec<Change>>,
    position: Position,
    kind: ChangeKind,
    id: &str,
    event: &ConfigEvent<T>,
) {
    if let Some(changes) = changes {
        let mut c = Change::empty(position, kind, event.event_type());
        c.id = arc(id);
        c.customer_id = arc(event.object().customer_id());
        c.removed = matches!(event, ConfigEvent::Deleted { .. });
        changes.push(c);
    }
}
