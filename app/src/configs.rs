//! Customers, resource pools, insights and templates (DOMAIN.md §2): create, update and
//! delete (admins, within their customers), and the reads every caller may make of the ones
//! it may see. Each kind's visibility rule and filterable fields are written once, in its
//! [`ConfigKind`] impl.

use serde_json::Value;
use uuid::Uuid;

use pop_domain::binding::may_use_insight;
use pop_domain::config::{ConfigAggregate, ConfigCommand, ConfigObject, Lifecycle};
use pop_domain::model::{AgendaTemplate, Customer, Insight, ResourcePool};
use pop_domain::validate::{check_id, check_new_id};
use pop_projections::{Cursor, Phase, ReadModels, Visibility, VisibleTo};

use crate::agendas::{from_json, refuse_blank_ids};
use crate::caller::{Action, Caller};
use crate::error::{self, AppError, AppResult, Code};
use crate::outcome::{Configured, Page};
use crate::reads::{Count, PageRequest};
use crate::{App, metadata, metrics};

/// One kind of config object, as the use cases need it.
pub trait ConfigKind: ConfigObject + VisibleTo + Clone {
    /// The command names (metrics).
    const CREATE: &'static str;
    const UPDATE: &'static str;
    const DELETE: &'static str;
    /// Sets the id when the client left it out (customers: from `customerId`).
    fn fill_id(&mut self);
    /// The object with this id in the read models (visible or not).
    fn find<'m>(models: &'m ReadModels, id: &str) -> Option<&'m Self>;
    /// A page of the live objects that pass `keep`, filtered before the page is cut.
    fn page<'m>(
        models: &'m ReadModels,
        v: &Visibility,
        after: Option<&Cursor>,
        limit: usize,
        keep: &dyn Fn(&Self) -> bool,
    ) -> pop_projections::Page<&'m Self>;
    /// The correlation id of the request that wrote it last (lists filter on it: POP's
    /// `byCid`).
    fn cid(&self) -> Option<&str>;
    /// The resource pool lists filter on (customers and insights have one).
    fn resource_pool_id(&self) -> Option<&str> {
        None
    }
    /// The object's JSON as clients read it (a template's agenda without blank ids:
    /// [`pop_domain::model::template_agenda_json`]).
    fn tidy_json(_value: &mut serde_json::Value) {}
    /// An update that did not send a field POP's clients cannot carry keeps its `current`
    /// value (`sent`: the update as sent).
    fn keep_unsent(&mut self, _sent: &Value, _current: &Self) {}
    /// Whether an id may not differ from another object's only in case. Creates of such a
    /// kind take turns in this process and read the models at the log's head before
    /// [`Self::clash`] (hostile23: two creates of `Race0` and `race0` at once both passed).
    const UNIQUE_IGNORING_CASE: bool = false;
    /// Another live object this one may not exist beside, if any (its owner's customer id
    /// and its id).
    fn clash<'m>(&self, _models: &'m ReadModels) -> Option<(&'m str, &'m str)> {
        None
    }
    /// Whether objects of customers `v` does not see already name this object's id (a pool an
    /// admin of every customer named before creating it): a create by such a caller is then
    /// answered as for an id another customer uses (hostile61 L1: another tenant's admin
    /// created the pool a customer and its insight named, and owned it).
    fn named_unseen(&self, _models: &ReadModels, _v: &Visibility) -> bool {
        false
    }
    /// The object as a caller who sees `v` may read it: a pool lists only the insights
    /// the caller may see (on a shared pool, other customers' insights stay theirs).
    fn seen_by(self, _models: &ReadModels, _v: &Visibility) -> Self {
        self
    }
    /// What the object names besides its own customer (see [`References`]).
    fn references(&self) -> References<'_> {
        References::default()
    }
    /// Whether a delete checks what depends on the object ([`Self::in_use`]): only then
    /// does it wait for the read models to reach the log's head (review-s45: every kind's
    /// delete waited, for nothing).
    const CHECKS_IN_USE: bool = false;
    /// Why the object with this id may not be deleted now by a caller who sees `v`, if
    /// anything depends on it.
    fn in_use(_models: &ReadModels, _id: &str, _v: &Visibility) -> Option<String> {
        None
    }
    /// Whether `next` changes what decides whose workers run an insight's agendas (an
    /// insight's owner, pool, share or isGlobal; a pool's owner): only then is
    /// [`Self::handed_over`] asked, on read models at the log's head.
    fn may_hand_over(_current: &Self, _next: &Self) -> bool {
        false
    }
    /// The insights whose submissions an update of `current` that may hand their agendas over
    /// waits for, and holds until its append ([`App::insight_gate`]).
    fn gated_insights(_models: &ReadModels, _current: &Self) -> Vec<String> {
        Vec::new()
    }
    /// Why `next` may not replace `current` now (and the field that says so), for a caller
    /// who sees `v`: it would hand agendas already bound to an insight to the workers of a
    /// customer that did not run them ([`handover`]).
    fn handed_over(
        _models: &ReadModels,
        _current: &Self,
        _next: &Self,
        _v: &Visibility,
    ) -> Option<(String, &'static str)> {
        None
    }
}

/// The customers whose workers are handed every customer's agendas of `insight` when its
/// pool belongs to `pool_owner` ([`crate::resolve::operates`]): its owner, and its pool's owner
/// when that customer may use the insight.
fn operators<'a>(insight: &'a Insight, pool_owner: Option<&'a str>) -> Vec<&'a str> {
    let mut operators = vec![insight.customer_id.as_str()];
    operators.extend(pool_owner.filter(|owner| may_use_insight(insight, owner)));
    operators
}

/// The live agendas bound to insight `id` that would still run: waiting, executing, or
/// failed with a retry to come while the insight takes their customer. Not doNotRun records,
/// nor ones parked by a skipExecution rerun: those run only when rerun. `retries_anyway`: a
/// failed one whose retry is due counts even while the insight does not take its customer,
/// which may be let back in before the retry (reprobe58 H1: taken out of the share, the
/// agenda no longer held a move to another pool, and let back in, its retry went to the new
/// pool's workers).
fn live_bound<'m>(
    models: &'m ReadModels,
    id: &'m str,
    retries_anyway: bool,
) -> impl Iterator<Item = &'m pop_projections::AgendaEntry> + 'm {
    // A doNotRun record never runs: it waits as much with the insight as without it
    // (review-s45: one blocked the delete, "let them finish" never coming). A failed one
    // whose retry is still to come is live again then (popclient26: retried after the
    // delete, it waited for good).
    // A failed one's retry runs only while the insight takes its customer (review-s45c: a
    // customer taken out of the share left its failed agendas "due" for good, and they
    // held the delete, though the retry would never run them).
    let held = move |a: &&pop_projections::AgendaEntry| {
        if a.processing_state() == pop_domain::ProcessingState::Complete {
            // Read from the entry's keys, not decoded (hostile60b M1: decoding each under the
            // read models' lock, a looping refused delete held every write).
            return a.retry_due() && (retries_anyway || models.insight_takes(id, a.customer_id()));
        }
        !a.is_do_not_run()
    };
    // Parked by a skipExecution rerun (WAITING/pending), an agenda runs only when rerun,
    // which a deleted insight refuses: it holds nothing either (hostile38: one parked by
    // a customer the insight was shared with held its delete for good).
    models
        .agendas()
        .bound_to(id, |p| (p.is_live() && p != Phase::Pending) || p == Phase::Failed)
        .filter(held)
}

/// How many `agendas` there are, and how many of them of customers `v` does not see.
fn counted<'m>(
    agendas: impl Iterator<Item = &'m pop_projections::AgendaEntry>,
    v: &Visibility,
) -> (usize, usize) {
    agendas
        .fold((0, 0), |(all, unseen), a| (all + 1, unseen + usize::from(!v.sees(a.customer_id()))))
}

/// Why an update may not change the customers whose workers run insight `id`'s agendas from
/// `before` to `after` (see [`operators`]): agendas already bound to it would go, definitions,
/// payloads and the right to report their results, to the workers of a customer that was not
/// running them (popclient58 M1: an admin's PUT of an insight with another `customerId`
/// handed acme's queued agenda to beta's service token, and acme's own workers were then told
/// the insight was not found). An agenda of the one customer that newly runs it stays its
/// own. `what` names the object changed (the insight, or the pool it is on).
fn handover(
    models: &ReadModels,
    id: &str,
    before: &[&str],
    after: &[&str],
    v: &Visibility,
    what: &str,
) -> Option<String> {
    let mut newcomers: Vec<&str> = after
        .iter()
        .copied()
        .filter(|n| !before.iter().any(|b| b.eq_ignore_ascii_case(n)))
        .collect();
    newcomers.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    if newcomers.is_empty() {
        return None;
    }
    let own = |customer: &str| newcomers.iter().all(|n| n.eq_ignore_ascii_case(customer));
    let (live, others) = counted(live_bound(models, id, true).filter(|a| !own(a.customer_id())), v);
    if live == 0 {
        return None;
    }
    let agendas = match live {
        1 => "1 live agenda of another customer is".to_owned(),
        n => format!("{n} live agendas of other customers are"),
    };
    let whom: Vec<String> = newcomers.iter().map(|n| format!("{n:?}")).collect();
    let unseen = match others {
        0 => String::new(),
        n => {
            format!(" ({n} of them of customers you do not act for: their own cancels or finishes)")
        }
    };
    Some(format!(
        "{what} may not hand its agendas to the workers of customer {} while {agendas} bound to \
         insight {id:?} (waiting, executing, or failed with a retry to come): their definitions, \
         payloads and reports would go to workers that were not running them; let them finish \
         or cancel them first{unseen}, or make the change on a new insight",
        whom.join(" and ")
    ))
}

/// What a config object names besides its own customer, and so may steer: the resource pool
/// whose workers run its agendas (customers and insights), the customers an insight takes
/// agendas from or a template is shown to (`allowedCustomerIds`), and whether it takes or is
/// shown to every customer (`isGlobal`).
/// A principal that sees only some customers may name only pools and customers it sees, and
/// may not make an insight global: else it could bind another customer's agendas to its own
/// workers, or its own to another customer's.
#[derive(Debug, Default)]
pub struct References<'a> {
    pub pool: Option<&'a str>,
    pub customers: &'a [String],
    pub global: bool,
    /// A template's agenda's own `customerId`, the customer its runs go to (hostile32: a
    /// limited admin named another's, and the template was then "not found" to every caller
    /// who may act for that customer).
    pub agenda_customer: Option<&'a str>,
}

/// Keeps of an insight's or template's `allowedCustomerIds` only the customers `v` sees: a
/// customer it is shared with learns no other tenant's customer id from it (a hostile probe
/// read every co-tenant's id there, which is also what names their pool progress ids). Its
/// owner, and whoever runs the insight, sees the whole list; only they may write it.
fn only_seen(allowed: &mut Vec<String>, v: &Visibility) {
    // Compared as sharing compares them: case-insensitively.
    allowed.retain(|c| v.sees_shared("", false, std::slice::from_ref(c)));
}

fn generated_id(id: &mut String) {
    if id.trim().is_empty() {
        *id = Uuid::now_v7().to_string();
    }
}

/// The parts every kind spells the same way (command names, lookup by id, pages, cid); each
/// kind adds its own id rule, title and resource pool.
macro_rules! config_kind {
    ($kind:ty, $name:literal, $find:ident, $page:ident, { $($own:tt)* }) => {
        impl ConfigKind for $kind {
            const CREATE: &'static str = concat!("create", $name);
            const UPDATE: &'static str = concat!("update", $name);
            const DELETE: &'static str = concat!("delete", $name);
            fn find<'m>(models: &'m ReadModels, id: &str) -> Option<&'m Self> {
                models.$find(id)
            }
            fn page<'m>(
                models: &'m ReadModels,
                v: &Visibility,
                after: Option<&Cursor>,
                limit: usize,
                keep: &dyn Fn(&Self) -> bool,
            ) -> pop_projections::Page<&'m Self> {
                models.$page(v, after, limit, keep)
            }
            fn cid(&self) -> Option<&str> {
                self.cid.as_deref()
            }
            $($own)*
        }
    };
}

config_kind!(Customer, "Customer", customer, customers, {
    /// Customer ids are unique ignoring case (popclient16: `Gamma` and `gamma` were two
    /// customers, while sharing, which compares ids ignoring case, let each use what was shared
    /// with the other).
    const UNIQUE_IGNORING_CASE: bool = true;
    fn clash<'m>(&self, models: &'m ReadModels) -> Option<(&'m str, &'m str)> {
        models.customer_ignoring_case(&self.id).map(|c| (c.customer_id.as_str(), c.id.as_str()))
    }
    fn fill_id(&mut self) {
        // A customer's id is its customerId (DOMAIN.md §2): either names both.
        if self.id.trim().is_empty() {
            self.id = self.customer_id.clone();
        }
        if self.customer_id.trim().is_empty() {
            self.customer_id = self.id.clone();
        }
    }
    fn resource_pool_id(&self) -> Option<&str> {
        self.resource_pool_id.as_deref()
    }
    fn references(&self) -> References<'_> {
        References { pool: self.resource_pool_id.as_deref(), ..References::default() }
    }
    /// Its live agendas and the pools, insights and templates it owns: deleted, its queued
    /// agendas were still handed out and its reruns taken while new submissions and template
    /// runs were refused (popclient60 M1: a delete answered 200 into that split state). Only
    /// a caller who sees the customer gets here, and what it owns is its.
    const CHECKS_IN_USE: bool = true;
    fn in_use(models: &ReadModels, id: &str, _v: &Visibility) -> Option<String> {
        // Constant time per customer (hostile60b M1: counting its failed agendas with a retry
        // to come decoded each under the read models' lock, ~140 µs apiece, and a tenant's
        // refused deletes of its own customer held every write on the server at 0.3-1 s).
        // Those are counted from their keys' flag: the retry process plans on models read
        // before a delete and appends after it, so one planned just before would make a
        // deleted customer's agenda live again (review61 M2).
        let customer = Visibility::from_ids([id]);
        let counts = models.agendas().phase_counts(&customer);
        let live: usize =
            Phase::ALL.iter().filter(|p| p.is_live()).map(|p| counts[p.index()]).sum();
        let retries = models.agendas().retries_to_come(&customer);
        let owns = |owner: &str| owner.eq_ignore_ascii_case(id);
        let named = |kind: &str, ids: Vec<&str>| {
            let plural = if ids.len() == 1 { "" } else { "s" };
            let shown: Vec<&str> = ids.iter().take(10).copied().collect();
            let more = if ids.len() > shown.len() { ", …" } else { "" };
            format!("{} {kind}{plural} ({}{more})", ids.len(), shown.join(", "))
        };
        let mut said = Vec::new();
        if live > 0 {
            let agendas = if live == 1 { "agenda" } else { "agendas" };
            said.push(format!("{live} live {agendas} (cancel them or let them finish)"));
        }
        if retries > 0 {
            let agendas = if retries == 1 { "agenda" } else { "agendas" };
            said.push(format!(
                "{retries} failed {agendas} with a retry to come (cancel them to withdraw it)"
            ));
        }
        let pools: Vec<&str> = models
            .all_resource_pools()
            .filter(|p| owns(&p.customer_id))
            .map(|p| p.id.as_str())
            .collect();
        let insights: Vec<&str> =
            models.all_insights().filter(|i| owns(&i.customer_id)).map(|i| i.id.as_str()).collect();
        let templates: Vec<&str> = models
            .all_templates()
            .filter(|t| owns(&t.customer_id))
            .map(|t| t.id.as_str())
            .collect();
        // A pool it uses itself is refused its own delete while the customer names it: the
        // way out is said (renew60 L7: each delete's 409 pointed at the other).
        let uses_own = models
            .customer(id)
            .and_then(|c| c.resource_pool_id.as_deref())
            .is_some_and(|p| pools.contains(&p));
        for (kind, ids) in
            [("template", templates), ("insight", insights), ("resource pool", pools)]
        {
            if !ids.is_empty() {
                said.push(named(kind, ids));
            }
        }
        if uses_own {
            said.push(
                "and it uses its own pool: update the customer without resourcePoolId, then \
                 delete the pool"
                    .to_string(),
            );
        }
        if said.is_empty() {
            return None;
        }
        Some(format!(
            "customer {id:?} may not be deleted while it has {}: its agendas would still be \
             handed out and rerun while nothing new could be submitted for it; finish or cancel \
             its agendas and delete (or give another customer) what it owns first",
            said.join(", ")
        ))
    }
    /// The insights that may take the customer's agendas: its delete holds their
    /// submissions from its check to its append (reprobe-op60 M1: submissions racing the
    /// delete were both answered 200, a deleted customer with live agendas).
    fn gated_insights(models: &ReadModels, current: &Self) -> Vec<String> {
        models
            .all_insights()
            .filter(|i| may_use_insight(i, &current.id))
            .map(|i| i.id.clone())
            .collect()
    }
});

config_kind!(ResourcePool, "ResourcePool", resource_pool, resource_pools, {
    fn fill_id(&mut self) {
        generated_id(&mut self.id);
    }
    fn named_unseen(&self, models: &ReadModels, v: &Visibility) -> bool {
        let names = |pool: &str| pool == self.id;
        models
            .all_customers()
            .any(|c| c.resource_pool_id.as_deref().is_some_and(names) && !v.sees(&c.customer_id))
            || models.all_insights().any(|i| names(&i.resource_pool_id) && !v.sees(&i.customer_id))
    }
    fn seen_by(mut self, models: &ReadModels, v: &Visibility) -> Self {
        // Computed by the read models: a pool read from them has its list; one as written
        // carries none (a PUT answered `[]`) and takes theirs.
        if self.insight_ids.is_empty()
            && let Some(read) = models.resource_pool(&self.id)
        {
            self.insight_ids.clone_from(&read.insight_ids);
        }
        self.insight_ids.retain(|id| models.insight(id).is_some_and(|i| i.visible_to(v)));
        self
    }
    /// The insights and customers that name the pool: deleted, it would leave them naming
    /// nothing (popclient53: a delete answered 200, `insightIds: []`, while two insights, a
    /// customer and four live agendas used the pool; its insights still handed out work and
    /// new agendas still bound to it). Those the caller does not see are counted, not named.
    const CHECKS_IN_USE: bool = true;
    fn in_use(models: &ReadModels, id: &str, v: &Visibility) -> Option<String> {
        // What names the pool, by kind: the ids the caller sees, and how many it does not.
        let insights = models.all_insights().filter(|i| i.resource_pool_id == id);
        let insights = seen_and_not(insights.map(|i| (i.id.as_str(), i.visible_to(v))));
        let customers =
            models.all_customers().filter(|c| c.resource_pool_id.as_deref() == Some(id));
        let customers = seen_and_not(customers.map(|c| (c.id.as_str(), c.visible_to(v))));
        let said: Vec<String> = [("insight", &insights), ("customer", &customers)]
            .into_iter()
            .filter_map(|(kind, (seen, unseen))| {
                let all = seen.len() + unseen;
                (all > 0).then(|| {
                    let plural = if all == 1 { "" } else { "s" };
                    let ids = if seen.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", seen.join(", "))
                    };
                    let others = if *unseen > 0 {
                        format!(", {unseen} of them not yours to see")
                    } else {
                        String::new()
                    };
                    format!("{all} {kind}{plural}{ids}{others}")
                })
            })
            .collect();
        if said.is_empty() {
            return None;
        }
        let others = if insights.1 + customers.1 > 0 {
            " (those you do not see, an admin of their customers)"
        } else {
            ""
        };
        Some(format!(
            "resource pool {id:?} may not be deleted while {} name it (its workers run their \
             agendas): delete those insights and move those customers to another pool \
             (resourcePoolId) first{others}",
            said.join(" and ")
        ))
    }
    fn may_hand_over(current: &Self, next: &Self) -> bool {
        !current.customer_id.eq_ignore_ascii_case(&next.customer_id)
    }
    fn gated_insights(models: &ReadModels, current: &Self) -> Vec<String> {
        models
            .all_insights()
            .filter(|i| i.resource_pool_id == current.id)
            .map(|i| i.id.clone())
            .collect()
    }
    /// A pool given to another customer hands that customer's workers the agendas of every
    /// insight on it the customer may use ([`operators`]): refused while any of them has
    /// agendas of others bound (popclient58 M1).
    fn handed_over(
        models: &ReadModels,
        current: &Self,
        next: &Self,
        v: &Visibility,
    ) -> Option<(String, &'static str)> {
        if current.customer_id.eq_ignore_ascii_case(&next.customer_id) {
            return None;
        }
        models.all_insights().filter(|i| i.resource_pool_id == current.id).find_map(|insight| {
            let before = operators(insight, Some(&current.customer_id));
            let after = operators(insight, Some(&next.customer_id));
            let what = match insight.visible_to(v) {
                true => format!("resource pool {:?} (its insight {:?})", current.id, insight.id),
                false => format!(
                    "resource pool {:?} (an insight on it of a customer you do not act for)",
                    current.id
                ),
            };
            let why = handover(models, &insight.id, &before, &after, v, &what)?;
            Some((why, "customerId"))
        })
    }
});

config_kind!(Insight, "Insight", insight, insights, {
    fn fill_id(&mut self) {
        generated_id(&mut self.id);
    }
    fn seen_by(mut self, models: &ReadModels, v: &Visibility) -> Self {
        let runs = v.sees(&self.customer_id)
            || models.resource_pool(&self.resource_pool_id).is_some_and(|p| v.sees(&p.customer_id));
        if !runs {
            only_seen(&mut self.allowed_customer_ids, v);
        }
        self
    }
    fn resource_pool_id(&self) -> Option<&str> {
        Some(&self.resource_pool_id)
    }
    fn references(&self) -> References<'_> {
        References {
            pool: Some(&self.resource_pool_id),
            customers: &self.allowed_customer_ids,
            global: self.is_global,
            agenda_customer: None,
        }
    }
    /// Live agendas bound to the insight: deleted, it would strand them (hostile36: an admin
    /// of the insight's customer deleted it while agendas of a customer it was shared with
    /// were queued; they stayed WAITING "queued" for good, counted by that customer's live
    /// quota, with no diagnostic and no way for a worker to take them). All of them are
    /// counted, whoever's: the insight's owner reads its totals anyway. Those of customers the
    /// caller does not act for, it cannot cancel: the way out is said (hostile37: told to
    /// cancel them, it was answered NOT_FOUND, and the other customer kept the insight
    /// undeletable by submitting more).
    const CHECKS_IN_USE: bool = true;
    fn in_use(models: &ReadModels, id: &str, v: &Visibility) -> Option<String> {
        let (live, others) = counted(live_bound(models, id, false), v);
        if live == 0 {
            return None;
        }
        let agendas = match live {
            1 => "1 live agenda is".to_owned(),
            n => format!("{n} live agendas are"),
        };
        let way_out = if others == 0 {
            "cancel them or let them finish first".to_owned()
        } else {
            format!(
                "{others} of them of customers it is shared with whom you do not act for: take \
                 those customers out of its allowedCustomerIds (and isGlobal off) so that no \
                 more are bound to it, let the ones bound finish (its pool's workers still run \
                 them), cancel or finish your own, then delete it"
            )
        };
        Some(format!(
            "insight {id:?} may not be deleted while {agendas} bound to it (waiting, executing, \
             or failed with a retry to come; a deleted insight's agendas would wait for good): \
             {way_out}"
        ))
    }
    fn may_hand_over(current: &Self, next: &Self) -> bool {
        !current.customer_id.eq_ignore_ascii_case(&next.customer_id)
            || current.resource_pool_id != next.resource_pool_id
            || current.is_global != next.is_global
            || current.allowed_customer_ids != next.allowed_customer_ids
    }
    fn gated_insights(_models: &ReadModels, current: &Self) -> Vec<String> {
        vec![current.id.clone()]
    }
    /// A new owner, pool, share or isGlobal that makes another customer's workers run the
    /// insight's agendas: refused while agendas of others are bound to it (popclient58 M1).
    /// Taking customers out of the share is not: the same workers still run the ones bound.
    fn handed_over(
        models: &ReadModels,
        current: &Self,
        next: &Self,
        v: &Visibility,
    ) -> Option<(String, &'static str)> {
        let owner = |insight: &Insight| {
            models.resource_pool(&insight.resource_pool_id).map(|p| p.customer_id.clone())
        };
        let (owner_before, owner_after) = (owner(current), owner(next));
        let before = operators(current, owner_before.as_deref());
        let after = operators(next, owner_after.as_deref());
        let what = format!("insight {:?}", current.id);
        let why = handover(models, &current.id, &before, &after, v, &what)?;
        let field = if !current.customer_id.eq_ignore_ascii_case(&next.customer_id) {
            "customerId"
        } else if current.resource_pool_id != next.resource_pool_id {
            "resourcePoolId"
        } else if current.is_global != next.is_global {
            "isGlobal"
        } else {
            "allowedCustomerIds"
        };
        Some((why, field))
    }
    /// POP's `SchedulingAlgorithm` has no `Priority`: POP's Jackson threw on it and lost the
    /// whole list that held it (popclient15). On /pop such an insight carries pop's value in
    /// `popSchedulingAlgorithm` instead.
    fn tidy_json(value: &mut Value) {
        if let Some(object) = value.as_object_mut()
            && object.get(SCHEDULING_ALGORITHM).and_then(Value::as_str) == Some("Priority")
            && let Some(algorithm) = object.remove(SCHEDULING_ALGORITHM)
        {
            object.insert(POP_SCHEDULING_ALGORITHM.into(), algorithm);
        }
    }
    /// A POP client that read a `Priority` insight (without `schedulingAlgorithm`) and writes
    /// it back must not turn it into first-in-first-out: an update without the field (or with
    /// null) keeps the insight's algorithm; `popSchedulingAlgorithm` is read as the field.
    fn keep_unsent(&mut self, sent: &Value, current: &Self) {
        let given = |field: &str| sent.get(field).is_some_and(|v| !v.is_null());
        if !given(SCHEDULING_ALGORITHM) && !given(POP_SCHEDULING_ALGORITHM) {
            self.scheduling_algorithm = current.scheduling_algorithm;
        }
    }
});

/// The field of an insight's algorithm, and the one /pop answers `Priority` in
/// ([`ConfigKind::tidy_json`] of [`Insight`]).
const SCHEDULING_ALGORITHM: &str = "schedulingAlgorithm";
const POP_SCHEDULING_ALGORITHM: &str = "popSchedulingAlgorithm";

config_kind!(AgendaTemplate, "Template", template, templates, {
    fn fill_id(&mut self) {
        generated_id(&mut self.id);
    }
    fn tidy_json(value: &mut serde_json::Value) {
        if let Some(agenda) = value.get_mut("agenda") {
            pop_domain::model::template_agenda_json(agenda);
        }
    }
    fn seen_by(mut self, _models: &ReadModels, v: &Visibility) -> Self {
        if !v.sees(&self.customer_id) {
            only_seen(&mut self.allowed_customer_ids, v);
        }
        self
    }
    fn references(&self) -> References<'_> {
        References {
            pool: None,
            customers: &self.allowed_customer_ids,
            global: self.is_global,
            agenda_customer: Some(self.agenda.customer_id.as_str())
                .filter(|c| !c.trim().is_empty()),
        }
    }
});

/// `value` with the fields /pop answers in pop's own names read as POP's: an insight's
/// `popSchedulingAlgorithm` as its `schedulingAlgorithm` (when that is not given).
fn with_pop_fields<T: ConfigKind>(mut value: Value) -> AppResult<Value> {
    if let Some(object) = value.as_object_mut()
        && let Some(algorithm) = object.remove(POP_SCHEDULING_ALGORITHM)
    {
        // Checked under its own name (hostile22: a bad value was blamed on
        // schedulingAlgorithm, which the client had not sent).
        if !algorithm.is_null()
            && serde_json::from_value::<pop_domain::model::SchedulingAlgorithm>(algorithm.clone())
                .is_err()
        {
            return Err(AppError::invalid(
                &format!("{}.{POP_SCHEDULING_ALGORITHM}", T::DATA_FIELD),
                format!(
                    "{algorithm} is not a scheduling algorithm (FirstInFirstOut, RoundRobin, \
                     Priority)"
                ),
            ));
        }
        if object.get(SCHEDULING_ALGORITHM).is_none_or(Value::is_null) {
            object.insert(SCHEDULING_ALGORITHM.into(), algorithm);
        }
    }
    Ok(value)
}

/// A config write.
#[derive(Debug, Clone)]
pub enum ConfigOp {
    /// The object as POP JSON.
    Create(Value),
    /// The object as POP JSON (its `addedTime` is kept).
    Update(Value),
    /// By id.
    Delete(String),
}

/// Filters of config lists (ANDed); names compared exactly.
#[derive(Debug, Clone, Default)]
pub struct ConfigFilter {
    pub customer_id: Option<String>,
    pub title: Option<String>,
    pub resource_pool_id: Option<String>,
    pub cid: Option<String>,
}

impl ConfigFilter {
    pub fn admits<T: ConfigKind>(&self, object: &T) -> bool {
        self.customer_id.as_deref().is_none_or(|c| object.customer_id() == c)
            && self.title.as_deref().is_none_or(|t| object.title() == Some(t))
            && self.resource_pool_id.as_deref().is_none_or(|p| object.resource_pool_id() == Some(p))
            && self.cid.as_deref().is_none_or(|c| object.cid() == Some(c))
    }
}

/// How many times a delete closes its gates again for insights that came to take the object
/// while it closed them, before it asks to be sent again.
const MAX_GATE_TURNS: usize = 4;

impl App {
    /// Closes the gates of `insights` (their submissions wait until the guards drop), in id
    /// order, each once: every writer takes them in one order, so two never wait on each other.
    async fn close_gates(
        &self,
        mut insights: Vec<String>,
    ) -> Vec<tokio::sync::OwnedRwLockWriteGuard<()>> {
        insights.sort_unstable();
        insights.dedup();
        let mut gates = Vec::with_capacity(insights.len());
        for insight in &insights {
            gates.push(self.insight_gate(insight).write_owned().await);
        }
        gates
    }

    /// Creates, updates or deletes one config object (admins, within their customers).
    /// `at_least` (a position) makes the write wait until the read models have what the
    /// client wrote before (read-your-writes across replicas).
    pub async fn configure<T: ConfigKind>(
        &self,
        caller: &Caller,
        op: ConfigOp,
        cid: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<Configured<T>> {
        caller
            .run(Action::Configure, cid, async |caller| {
                self.settle(at_least).await?;
                self.configure_as::<T>(caller, op).await
            })
            .await
    }

    async fn configure_as<T: ConfigKind>(
        &self,
        caller: &Caller,
        op: ConfigOp,
    ) -> AppResult<Configured<T>> {
        let now = self.now();
        let cid = caller.cid.clone();
        let mut sent = None;
        let mut generated = false;
        let (id, name, mut command) = match op {
            ConfigOp::Create(value) | ConfigOp::Update(value) if !value.is_object() => {
                return Err(AppError::invalid(
                    T::DATA_FIELD,
                    format!("the {} must be a JSON object", T::KIND),
                ));
            }
            ConfigOp::Create(value) => {
                refuse_blank_ids(&value, &["id"])?;
                let mut object: T = from_json(T::DATA_FIELD, with_pop_fields::<T>(value)?)?;
                generated = object.id().trim().is_empty();
                object.fill_id();
                check_new_id("id", object.id())?;
                (object.id().to_string(), T::CREATE, ConfigCommand::Create { object, now, cid })
            }
            ConfigOp::Update(value) => {
                sent = Some(value.clone());
                let mut object: T = from_json(T::DATA_FIELD, with_pop_fields::<T>(value)?)?;
                object.fill_id();
                check_id("id", object.id())?;
                (object.id().to_string(), T::UPDATE, ConfigCommand::Update { object, now, cid })
            }
            ConfigOp::Delete(id) => {
                check_id("id", &id)?;
                (id.clone(), T::DELETE, ConfigCommand::Delete { id, now, cid })
            }
        };
        let subject = format!("{} {id:?}", T::KIND);
        // Creates whose ids must differ ignoring case take turns from their check to their
        // append (held to the end of this call).
        let _case_turn = match &command {
            ConfigCommand::Create { .. } if T::UNIQUE_IGNORING_CASE => Some(self.case_turn().await),
            _ => None,
        };
        if let ConfigCommand::Create { object, .. } = &command {
            self.check_written(caller, &command, None).await?;
            // The object's own rules too (the domain checks them again when it decides): a
            // create no write could make (no title, a blank customer id) was NOT_FOUND for an
            // id another customer uses and VALIDATION for an unused one. Both before the
            // object's stream is read, so a refused create takes as long for either (reading
            // another customer's stream answered ~0.1 ms later).
            if let Err(mut errors) = pop_domain::config::validate(object) {
                let kind = T::KIND;
                if generated {
                    // An id made up here names nothing the caller knows (popclient21): the
                    // object is the one the request sent.
                    let named = format!("{kind} {id:?}");
                    for e in &mut errors.errors {
                        e.message = e.message.replace(&named, &format!("the {kind}"));
                    }
                    let subject = format!("the {kind}");
                    return Err(AppError::validation(&subject, errors.within(T::DATA_FIELD)));
                }
                let refused = pop_domain::config::ConfigError::Invalid {
                    kind,
                    id: object.id().to_string(),
                    errors,
                };
                let refused = pop_store::ExecuteError::Refused(refused);
                return Err(error::execute_within(&subject, T::DATA_FIELD, refused));
            }
            // After the object's own rules: a create they refuse says nothing of other
            // customers (hostile23: a limited admin's customer "GLOBEX" with its own customerId
            // answered NOT_FOUND where globex existed, VALIDATION where nothing did).
            // Checked on read models that have every object written so far.
            if T::UNIQUE_IGNORING_CASE {
                self.settle_to_head().await?;
            }
            let clash = object
                .clash(&self.projections().read())
                .map(|(owner, id)| (caller.principal.sees(owner), id.to_owned()));
            match clash {
                Some((true, other)) => {
                    return Err(AppError::conflict(format!(
                        "{} {:?} differs only in case from {} {other:?}: ids are compared \
                         ignoring case where objects are shared (allowedCustomerIds; POP's \
                         clients lowercase them), so the two would be one",
                        T::KIND,
                        object.id(),
                        T::KIND
                    ))
                    .within("id"));
                }
                // Another customer's: as for an id it uses, nothing tells it exists.
                Some((false, _)) => return Err(AppError::not_found(T::KIND, object.id())),
                None => {}
            }
            if object.named_unseen(&self.projections().read(), &caller.principal.customers) {
                return Err(AppError::not_found(T::KIND, object.id()));
            }
        }
        // Tenancy: the object as the write side has it must be visible (else NOT_FOUND), and
        // the object written must belong to a customer the caller may act for (else
        // FORBIDDEN).
        // (And whose the object was, if deleted.)
        let (current, deleted) = match self.commands().load::<ConfigAggregate<T>>(&id).await {
            Ok((state, _)) => {
                let deleted = match &state.lifecycle {
                    Lifecycle::Deleted(o) => Some(o.clone()),
                    _ => None,
                };
                (state.live().cloned(), deleted)
            }
            Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted {
                ..
            })) => (None, None),
            Err(e) => return Err(error::execute(&subject, e)),
        };
        // A deleted object's id comes back only for its own customer: what still names it (an
        // insight's agendas, a pool's insights and customers) would otherwise go to another
        // customer's (hostile38: acme's agenda rerun on the insight initech created under the
        // id acme had deleted went to initech's workers, payloads and all). Answered as an id
        // another customer uses is: as if it did not exist.
        if matches!(command, ConfigCommand::Create { .. })
            && deleted.as_ref().is_some_and(|o| !caller.principal.sees(o.customer_id()))
        {
            return Err(AppError::not_found(T::KIND, &id));
        }
        let visible = current.as_ref().filter(|c| caller.principal.sees(c.customer_id()));
        if let (ConfigCommand::Update { object, .. }, Some(sent), Some(current)) =
            (&mut command, &sent, visible)
        {
            object.keep_unsent(sent, current);
        }
        // Shared with this caller (an insight or template of another customer that allows
        // it, or a global one): it reads the object, so a write says it may not manage it.
        if let Some(shared) = current
            .as_ref()
            .filter(|c| visible.is_none() && c.visible_to(&caller.principal.customers))
        {
            return Err(AppError::forbidden(format!(
                "principal {:?} may read {subject} but not manage it: it belongs to customer {:?}",
                caller.principal.name,
                shared.customer_id()
            )));
        }
        let is_create = matches!(command, ConfigCommand::Create { .. });
        // (A create's object was checked above, before anything of the stored one was read: a
        // refused create answers alike for an id another customer uses and an unused one; a
        // hostile admin of one customer told them apart by NOT_FOUND against FORBIDDEN.) An
        // update or delete of an object the caller may not see is NOT_FOUND first, whatever
        // it names.
        // Exists but not for this caller: an update or delete must not touch it, and a create
        // must not reveal it (CONFLICT would) — all answer as if it did not exist.
        if visible.is_none() && (current.is_some() || !is_create) {
            return Err(AppError::not_found(T::KIND, &id));
        }
        if !is_create {
            self.check_written(caller, &command, visible).await?;
        }
        // An update that may change whose workers run an insight's agendas is checked on read
        // models that have every agenda and pool written so far (review58 M1: checked first on
        // the models as they were, an agenda submitted a moment before, or a pool created a
        // moment before, passed unseen).
        // A create of a deleted object's id is checked against what it was: the agendas still
        // bound to a deleted insight's id whose retries are due run on the new one (reprobe58
        // H1: deleted, and made again on another customer's pool, it handed them over).
        let before = match &command {
            ConfigCommand::Update { object, .. } => visible.map(|c| (c, object)),
            ConfigCommand::Create { object, .. } => deleted.as_ref().map(|d| (d, object)),
            ConfigCommand::Delete { .. } => None,
        };
        // Held from the check to the append: this process's submissions to the insights it
        // checks wait for it, and it for those under way (reprobe58 M1).
        let mut _gates = Vec::new();
        if let Some((before, next)) = before
            && T::may_hand_over(before, next)
        {
            let gated = T::gated_insights(&self.projections().read(), before);
            _gates = self.close_gates(gated).await;
            self.settle_to_head().await?;
            let seen = &caller.principal.customers;
            if let Some((why, field)) =
                T::handed_over(&self.projections().read(), before, next, seen)
            {
                return Err(AppError::conflict(why).within(field));
            }
        }
        if T::CHECKS_IN_USE && matches!(command, ConfigCommand::Delete { .. }) {
            // Counted on read models that have every agenda written so far, with this
            // process's submissions to the insights the object concerns held from the check to
            // the append (each binds again once the delete is applied, and is refused): one
            // bound between the two went unseen (reprobe-op60 M1: a customer's delete and its
            // submissions at once were all answered 200). Replicas of one PostgreSQL store do
            // not share the gate.
            // Checked first without the gates: a delete refused (most are, while anything
            // holds the object) holds no submission (review60 L1: a looping refused delete of
            // a customer held every global insight's submissions); then again under them, on
            // models that have what was written meanwhile.
            let seen = &caller.principal.customers;
            self.settle_to_head().await?;
            if let Some(why) = T::in_use(&self.projections().read(), &id, seen) {
                return Err(AppError::conflict(why).within("id"));
            }
            // The insights to hold are read again under the gates: one that came to take the
            // object while they closed (an insight shared with the customer meanwhile) is held
            // too, the gates closed again in their order, and the check made again (review61
            // L2: chosen once, a submission to it bound and was appended after the delete).
            let mut gated = match visible {
                Some(current) => T::gated_insights(&self.projections().read(), current),
                None => Vec::new(),
            };
            let mut turns = 0;
            loop {
                _gates = self.close_gates(gated.clone()).await;
                self.settle_to_head().await?;
                if let Some(why) = T::in_use(&self.projections().read(), &id, seen) {
                    return Err(AppError::conflict(why).within("id"));
                }
                let now = match visible {
                    Some(current) => T::gated_insights(&self.projections().read(), current),
                    None => Vec::new(),
                };
                let more: Vec<String> = now.into_iter().filter(|i| !gated.contains(i)).collect();
                if more.is_empty() {
                    break;
                }
                turns += 1;
                if turns == MAX_GATE_TURNS {
                    return Err(AppError::conflict(format!(
                        "the insights that may take {subject} changed while it was being \
                         deleted; delete it again"
                    ))
                    .within("id"));
                }
                _gates = Vec::new();
                gated.extend(more);
            }
        }
        if let ConfigCommand::Create { object, .. } | ConfigCommand::Update { object, .. } =
            &command
            && caller.principal.customers != Visibility::All
        {
            self.check_config_quotas(object, visible)?;
        }
        let customer = match &command {
            ConfigCommand::Create { object, .. } | ConfigCommand::Update { object, .. } => {
                object.customer_id().to_string()
            }
            ConfigCommand::Delete { .. } => {
                visible.map(|c| c.customer_id().to_string()).unwrap_or_default()
            }
        };
        let executed = self
            .commands()
            .execute::<ConfigAggregate<T>>(&id, &metadata(caller, &customer, name), &command)
            .await;
        // The gates open once the read models have the update: a submission that waited binds
        // on the insight as it is now (reprobe58b M1: bound on models from before the update,
        // one was appended after it, to workers the update's check had not counted).
        // (The update is written: a wait that ends in an error does not make it an error.)
        if !_gates.is_empty()
            && let Ok(done) = &executed
            && let Some(position) = done.position
            && let Err(e) = self.wait_applied(position).await
        {
            tracing::warn!(error = %e.message, "an update's or delete's gate opened before the read models had it");
        }
        drop(_gates);
        metrics::command(name, &executed);
        if is_create
            && let Err(pop_store::ExecuteError::Refused(
                pop_domain::config::ConfigError::AlreadyExists { .. },
            )) = &executed
            && self.sees_stored::<T>(caller, &id).await != Some(true)
        {
            // Lost a race with another customer's create of the same id (hostile39: the
            // loser was told "already exists" 29 times in 40, where an id another customer
            // uses answers as if it did not exist).
            return Err(AppError::not_found(T::KIND, &id));
        }
        let executed = executed.map_err(|e| error::execute_within(&subject, T::DATA_FIELD, e))?;
        let (object, deleted) = match &executed.state.lifecycle {
            Lifecycle::Live(o) => (o, false),
            Lifecycle::Deleted(o) => (o, true),
            Lifecycle::Absent => {
                return Err(AppError::new(
                    Code::Internal,
                    format!("{subject} vanished after the command"),
                ));
            }
        };
        // Answered as a read shows it (a pool's insightIds, what a tenant sees of the list).
        let object =
            object.clone().seen_by(&self.projections().read(), &caller.principal.customers);
        Ok(Configured { object, deleted, position: executed.position, cid: caller.cid.clone() })
    }

    /// QUOTA_EXCEEDED when an admin limited to some customers writes `object` (in place of
    /// `current`) and its customer's agendas and config objects together would take more of
    /// the log than `--max-log-bytes-per-customer`, or its finished agendas and config objects
    /// more memory than `--max-retained-bytes-per-customer` (an object that shrinks passes
    /// that one). Config objects were counted by no quota: a customer's admin rewriting a
    /// template in a loop wrote the log at its request rate (hostile60c). An admin of every
    /// customer (the operator, who must be able to move a customer or mend an insight at any
    /// time) is not held to it; deletes never are. Counted from the read models, as the
    /// agendas' quotas are: a bound, not an exact count.
    fn check_config_quotas<T: ConfigKind>(&self, object: &T, current: Option<&T>) -> AppResult<()> {
        let customer = object.customer_id();
        let visibility = Visibility::from_ids([customer]);
        let (configs, log, retained) = {
            let models = self.projections().read();
            let agendas = models.agendas();
            (
                models.config_bytes(&visibility),
                agendas.log_bytes(&visibility),
                agendas.retained_bytes(&visibility),
            )
        };
        let config = self.config();
        let size = pop_domain::validate::json_bytes(object) as u64;
        let kind = T::KIND;
        let log = log.saturating_add(configs.log);
        let max = config.max_log_bytes_per_customer;
        if log.saturating_add(size) > max {
            return Err(AppError::new(
                Code::QuotaExceeded,
                format!(
                    "customer {customer:?}'s agendas and config objects take {log} bytes of the \
                     log and may take at most {max} (its quota, the server's \
                     --max-log-bytes-per-customer); this {kind} would add {size}: write it again \
                     as the data reaper removes finished agendas and deleted objects, or ask an \
                     admin of every customer, who is not held to it"
                ),
            ));
        }
        let was = current.map_or(0, |c| pop_domain::validate::json_bytes(c) as u64);
        let memory = retained.saturating_add(configs.memory).saturating_sub(was);
        let max = config.max_retained_bytes_per_customer;
        if size > was && memory.saturating_add(size) > max {
            return Err(AppError::new(
                Code::QuotaExceeded,
                format!(
                    "customer {customer:?}'s finished agendas and config objects hold {memory} \
                     bytes in the server's memory and may hold at most {max} (its quota, the \
                     server's --max-retained-bytes-per-customer); this {kind} would add {size}: \
                     write a smaller one, delete some objects, or ask an admin of every \
                     customer, who is not held to it"
                ),
            ));
        }
        Ok(())
    }

    /// The customer an object is written for must be one the caller may act for (FORBIDDEN),
    /// and what it names must be visible to it ([`Self::check_references`]).
    async fn check_written<T: ConfigKind>(
        &self,
        caller: &Caller,
        command: &ConfigCommand<T>,
        visible: Option<&T>,
    ) -> AppResult<()> {
        if let ConfigCommand::Create { object, .. } | ConfigCommand::Update { object, .. } = command
        {
            let customer = object.customer_id();
            if !customer.trim().is_empty() && !caller.principal.sees(customer) {
                return Err(AppError::forbidden(format!(
                    "principal {:?} may not manage objects of customer {customer:?}",
                    caller.principal.name
                )));
            }
            if caller.principal.customers != Visibility::All {
                let before = visible.map(|c| c.references()).unwrap_or_default();
                self.check_references(caller, object.references(), before).await?;
            }
        }
        Ok(())
    }

    /// The [`References`] an object written by a principal that sees only some customers
    /// adds to what it named `before` (what an admin of every customer set stays as it is): a
    /// pool or customer the principal may not see answers NOT_FOUND (as an id it may not see
    /// does everywhere), a global object FORBIDDEN; each names its field. The pool is looked up
    /// on the write side, so a pool created just before is found.
    async fn check_references(
        &self,
        caller: &Caller,
        refs: References<'_>,
        before: References<'_>,
    ) -> AppResult<()> {
        if refs.global && !before.global {
            return Err(AppError::forbidden(format!(
                "principal {:?} sees only some customers and may not make an object global \
                 (isGlobal: an insight takes every customer's agendas, a template is shown to \
                 every customer)",
                caller.principal.name
            ))
            .within("isGlobal"));
        }
        // Ignoring case, as sharing compares them: POP's clients lowercase the ids they read
        // back (popclient16: a limited admin's write-back of `gamma` for its `Gamma` was
        // NOT_FOUND).
        let same = |a: &String, b: &String| pop_domain::text::eq_ignore_case(a, b);
        let added = refs
            .customers
            .iter()
            .enumerate()
            .filter(|(_, c)| !before.customers.iter().any(|b| same(b, c)));
        // As sharing compares them (`Visibility::sees_shared`, the rule reads use).
        let sees = |customer: &String| {
            caller.principal.customers.sees_shared("", false, std::slice::from_ref(customer))
        };
        for (i, customer) in added {
            if !sees(customer) {
                return Err(AppError::not_found("customer", customer)
                    .within(&format!("allowedCustomerIds[{i}]")));
            }
        }
        // Exactly as the run reads it (hostile33: `ACME` passed a check that ignored case, and
        // runs for it then failed "customer does not exist"); a reference (`@<…>`) is resolved
        // and checked when the template runs.
        if let Some(customer) = refs.agenda_customer.map(str::to_string)
            && !customer.starts_with("@<")
            && before.agenda_customer.is_none_or(|b| b != customer)
            && !caller.principal.sees(&customer)
        {
            return Err(AppError::not_found("customer", &customer).within("agenda.customerId"));
        }
        // A pool the caller could not name again is not cleared by a write that leaves it out
        // (hostile55 L2: a limited admin's update of its customer without resourcePoolId
        // cleared the provider's pool, and putting it back was "resource pool not found": every
        // submission failed until a global admin repaired it).
        if let Some(kept) = before.pool.filter(|p| !p.trim().is_empty())
            && refs.pool.is_none_or(|p| p.trim().is_empty())
            && !self.may_use_pool(caller, kept).await?
        {
            return Err(AppError::invalid(
                "resourcePoolId",
                format!(
                    "leaving resourcePoolId out (or null) would clear resource pool {kept:?}, \
                     which {} could not set again (it is not one of its customers' pools); send \
                     it as read to keep it, or ask an admin of every customer to change it",
                    caller.principal.name
                ),
            ));
        }
        let Some(pool) = refs.pool.filter(|p| !p.trim().is_empty() && before.pool != Some(*p))
        else {
            return Ok(());
        };
        if !self.may_use_pool(caller, pool).await? {
            return Err(AppError::not_found("resource pool", pool).within("resourcePoolId"));
        }
        Ok(())
    }

    /// Whether `pool` is a live resource pool of one of the caller's customers: one it may name
    /// in an object it writes.
    async fn may_use_pool(&self, caller: &Caller, pool: &str) -> AppResult<bool> {
        let found = match self.commands().load::<ConfigAggregate<ResourcePool>>(pool).await {
            Ok((state, _)) => state.live().cloned(),
            Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted {
                ..
            })) => None,
            Err(e) => return Err(error::execute("resource pool", e)),
        };
        Ok(found.is_some_and(|p| caller.principal.sees(p.customer_id())))
    }

    /// Whether the object stored under `id` now is one the caller sees (live: its own or
    /// shared with it; deleted since: its own, hostile40: an owner's create racing its own
    /// delete was told NOT_FOUND); `None` when there is none or it could not be read, which a
    /// create race answers as NOT_FOUND too (review-s47b: CONFLICT would name another
    /// customer's id).
    async fn sees_stored<T: ConfigKind>(&self, caller: &Caller, id: &str) -> Option<bool> {
        let (state, _) = self.commands().load::<ConfigAggregate<T>>(id).await.ok()?;
        match &state.lifecycle {
            Lifecycle::Live(o) => Some(o.visible_to(&caller.principal.customers)),
            Lifecycle::Deleted(o) => Some(caller.principal.sees(o.customer_id())),
            Lifecycle::Absent => None,
        }
    }

    /// The config object with this id; `None` when there is none the caller may see (the two
    /// are indistinguishable on purpose).
    pub async fn config_by_id<T: ConfigKind>(
        &self,
        caller: &Caller,
        id: &str,
        at_least: Option<&str>,
    ) -> AppResult<Option<T>> {
        self.read(caller, at_least, |models| {
            let v = &caller.principal.customers;
            Ok(T::find(models, id)
                .filter(|o| o.visible_to(v))
                .map(|o| o.clone().seen_by(models, v)))
        })
        .await
    }

    /// A page of the config objects of kind `T` the caller may see that pass `filter`, in id
    /// order. The filter applies while the page is selected, so a page holds up to `first`
    /// matching objects and `next` only follows when more match (or when the read models'
    /// bound on objects examined per page ended the scan early).
    pub async fn configs<T: ConfigKind>(
        &self,
        caller: &Caller,
        filter: &ConfigFilter,
        page: &PageRequest,
        at_least: Option<&str>,
    ) -> AppResult<Page<T>> {
        let (limit, after) = self.page_bounds(page).map_err(|e| e.with_cid(&caller.cid))?;
        self.read(caller, at_least, |models| {
            let found =
                T::page(models, &caller.principal.customers, after.as_ref(), limit, &|o: &T| {
                    filter.admits(o)
                });
            let v = &caller.principal.customers;
            Ok(Page {
                items: found.items.into_iter().map(|o| o.clone().seen_by(models, v)).collect(),
                next: found.next,
                position: models.position(),
            })
        })
        .await
    }

    /// How many config objects of kind `T` the caller may see pass `filter`.
    pub async fn count_configs<T: ConfigKind>(
        &self,
        caller: &Caller,
        filter: &ConfigFilter,
        at_least: Option<&str>,
    ) -> AppResult<Count> {
        self.read(caller, at_least, |models| {
            Count::by_pages(|after: Option<Cursor>| {
                let page = T::page(
                    models,
                    &caller.principal.customers,
                    after.as_ref(),
                    pop_projections::MAX_PAGE_SIZE,
                    &|o: &T| filter.admits(o),
                );
                Ok((page.items.len(), page.next))
            })
        })
        .await
    }
}

/// The ids of `objects` the caller sees (`true` beside an id), and how many it does not.
fn seen_and_not<'a>(objects: impl Iterator<Item = (&'a str, bool)>) -> (Vec<&'a str>, usize) {
    let mut seen = Vec::new();
    let mut unseen = 0;
    for (id, visible) in objects {
        if visible {
            seen.push(id);
        } else {
            unseen += 1;
        }
    }
    (seen, unseen)
}
