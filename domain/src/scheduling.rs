//! Which `added` agendas a scheduler pass moves to an insight's queue (DOMAIN.md §7), as a
//! pure function: no clock (the caller passes `now`), no IO, deterministic for equal inputs.
//!
//! - [`SchedulingAlgorithm::FirstInFirstOut`]: the oldest candidates first.
//! - [`SchedulingAlgorithm::RoundRobin`]: the pass hands out work in rounds, one agenda per
//!   customer per round (each customer's oldest first), customers visited in the remembered
//!   [`CustomerOrder`] (customers not yet in it follow, in order of their oldest candidate).
//!   The order returned for the next pass is the list rotated to just after the last customer
//!   served, so customers that got no turn in the last (partial) round go first next time.
//!   Customers with no candidates are dropped from the order (and come back last). As a result
//!   the hand-outs to any two customers that both have work all along strictly alternate, so
//!   neither is ever more than one turn behind the other, across passes.
//! - [`SchedulingAlgorithm::Priority`]: highest *effective* priority first, FIFO within one.
//!   The effective priority is `params.priority` (clamped to ±[`MAX_PRIORITY`], default 0)
//!   plus one per whole [`PRIORITY_AGING_INTERVAL_MS`] the agenda has waited since it (re-)entered
//!   the queue, so low priority work is never starved forever (see
//!   [`PRIORITY_AGING_INTERVAL_MS`] for the bound).
//!
//! "Oldest" is by the time an agenda entered its insight's queue ([`Candidate::entered_ms`]):
//! its submission, or its re-entry after a rerun, retry, reclaim or release, which puts it at
//! the back, as POP's new ReadyAgenda did. Its `addedTime` (creation) plays no part.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::model::SchedulingAlgorithm;
use crate::params::Params;

/// How long an agenda waits for its effective priority to rise by one. A minute: priorities
/// are small integers in practice, so work one level below the incoming stream gets through
/// after about a minute of waiting, while a burst of urgent work still runs first for that
/// long. An agenda of priority `p_high` that enters the queue `(p_high - p + 1)` intervals
/// after one of priority `p` ranks strictly below it, so only finitely many agendas can ever
/// pass it.
pub const PRIORITY_AGING_INTERVAL_MS: i64 = 60_000;

/// Largest `params.priority` magnitude honoured; larger values are clamped. Bounds the aging
/// wait: the lowest priority outranks fresh work of the highest after at most
/// `2 * MAX_PRIORITY + 1` aging intervals (about 33 hours), instead of never for priorities
/// near `i64::MAX`.
pub const MAX_PRIORITY: i64 = 1_000;

/// The `params` key read as an agenda's priority.
pub const PRIORITY_PARAM: &str = "priority";

/// One schedulable `added` agenda of an insight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub customer_id: String,
    /// When it (re-)entered its insight's queue, in epoch milliseconds (the agenda state's
    /// `entered_time`, not `addedTime`).
    pub entered_ms: i64,
    /// `params.priority` (see [`Candidate::priority_of`]); only `Priority` reads it.
    pub priority: i64,
}

impl Candidate {
    /// `params.priority` read leniently (a number or a numeric string), 0 when absent or not
    /// an integer.
    pub fn priority_of(params: &Params) -> i64 {
        params.get_i64(PRIORITY_PARAM).unwrap_or(0)
    }
}

/// The remembered customer order of `RoundRobin`: who goes first in the next pass. State a
/// scheduler carries from one pass of an insight to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerOrder(Vec<String>);

impl CustomerOrder {
    pub fn new(customers: Vec<String>) -> Self {
        CustomerOrder(customers)
    }
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// What a pass does for one insight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indices into the candidates, in the order they are to be queued.
    pub picks: Vec<usize>,
    /// The customer order to remember for the next pass.
    pub customer_order: CustomerOrder,
}

/// Plans one pass for one insight: at most `free` of `candidates` (given oldest first) to
/// queue, in order, and the customer order for the next pass. `now_ms` (epoch ms) is only
/// used for `Priority` aging.
pub fn plan(
    algorithm: SchedulingAlgorithm,
    free: usize,
    candidates: &[Candidate],
    order: &CustomerOrder,
    now_ms: i64,
) -> Plan {
    match algorithm {
        SchedulingAlgorithm::FirstInFirstOut => {
            Plan { picks: (0..free.min(candidates.len())).collect(), customer_order: order.clone() }
        }
        SchedulingAlgorithm::RoundRobin => round_robin(free, candidates, order),
        SchedulingAlgorithm::Priority => {
            Plan { picks: by_priority(free, candidates, now_ms), customer_order: order.clone() }
        }
    }
}

/// The effective priority of a candidate at `now_ms`: its clamped priority plus one per whole
/// aging interval waited since it entered the queue (a future `entered_ms` counts as no wait).
pub fn effective_priority(candidate: &Candidate, now_ms: i64) -> i64 {
    let waited = now_ms.saturating_sub(candidate.entered_ms).max(0);
    candidate
        .priority
        .clamp(-MAX_PRIORITY, MAX_PRIORITY)
        .saturating_add(waited / PRIORITY_AGING_INTERVAL_MS)
}

fn by_priority(free: usize, candidates: &[Candidate], now_ms: i64) -> Vec<usize> {
    let mut ranked: Vec<(i64, i64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (effective_priority(c, now_ms), c.entered_ms, i))
        .collect();
    // Higher effective priority first; then older; then the caller's (oldest-first) order.
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked.into_iter().take(free).map(|(_, _, i)| i).collect()
}

fn round_robin(free: usize, candidates: &[Candidate], order: &CustomerOrder) -> Plan {
    // Each customer's candidates, oldest first; customers first seen in candidate order.
    let mut queues: HashMap<&str, VecDeque<usize>> = HashMap::new();
    let mut first_seen: Vec<&str> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let queue = queues.entry(c.customer_id.as_str()).or_insert_with(|| {
            first_seen.push(c.customer_id.as_str());
            VecDeque::new()
        });
        queue.push_back(i);
    }
    // The visiting order: remembered customers that have work, then new ones.
    let mut listed: HashSet<&str> = HashSet::new();
    let mut list: Vec<&str> = Vec::with_capacity(first_seen.len());
    for customer in order.0.iter().map(String::as_str).chain(first_seen.iter().copied()) {
        if queues.contains_key(customer) && listed.insert(customer) {
            list.push(customer);
        }
    }
    let mut picks = Vec::with_capacity(free.min(candidates.len()));
    let mut last_served: Option<usize> = None;
    'rounds: while picks.len() < free {
        let mut served_any = false;
        for (position, customer) in list.iter().enumerate() {
            if picks.len() == free {
                break 'rounds;
            }
            if let Some(next) = queues.get_mut(customer).and_then(VecDeque::pop_front) {
                picks.push(next);
                last_served = Some(position);
                served_any = true;
            }
        }
        if !served_any {
            break;
        }
    }
    let rotate = last_served.map_or(0, |k| k + 1);
    let customer_order =
        list[rotate..].iter().chain(list[..rotate].iter()).map(|c| (*c).to_string()).collect();
    Plan { picks, customer_order: CustomerOrder(customer_order) }
}
