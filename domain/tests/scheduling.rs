//! The scheduling planner (DOMAIN.md §7): FirstInFirstOut, the RoundRobin vectors, Priority
//! with aging, and two properties.
//!
//! **RoundRobin fairness** (`round_robin_is_fair`). Passes are simulated with random arrivals
//! between them and random free slots. A customer *has work throughout* a pass when it has
//! candidates at the start of the pass and still has at least one left at its end (so it was
//! eligible in every round of the pass). "No customer with work waits more than one pass
//! behind another" is checked as: for every window of consecutive passes and every two
//! customers that have work throughout every pass of the window, the numbers of agendas
//! handed to them in the window differ by at most one. Every pass also hands out exactly
//! `min(free, candidates)` agendas (no slot is left idle while there is work).
//!
//! **Priority aging** (`priority_aging_never_starves`). Every pass a steady stream of
//! `high` agendas of priority `p_high` arrives, at least as many as the pass's free slots, so
//! without aging the backlog of high work grows for ever and lower work would starve. For an
//! agenda X of priority `p` added at `a_x`, an agenda Y of priority `q` added at `a_y` with
//! `a_y - a_x >= (q - p + 1) * PRIORITY_AGING_INTERVAL_MS` always ranks strictly below X, so
//! only agendas added before `a_x + (p_high - p + 1) * interval` can ever be handed out
//! before X. With `step` ms between passes and at most `high + lows` arrivals per pass, that is
//! at most `pending(X) + (high + lows) * ((p_high - p + 1) * interval / step + 2)` agendas, and
//! each pass that does not hand out X hands out `slots` of them; the test checks every low
//! agenda waits at most that many / `slots` passes, and that all of them get handed out.

use std::collections::BTreeMap;

use pop_domain::scheduling::{
    Candidate, CustomerOrder, MAX_PRIORITY, PRIORITY_AGING_INTERVAL_MS, Plan, effective_priority,
    plan,
};
use pop_domain::{Params, SchedulingAlgorithm};
use proptest::prelude::*;
use serde_json::json;

fn candidate(id: &str, customer: &str, entered_ms: i64, priority: i64) -> Candidate {
    Candidate { id: id.to_string(), customer_id: customer.to_string(), entered_ms, priority }
}

fn order(customers: &[&str]) -> CustomerOrder {
    CustomerOrder::new(customers.iter().map(|c| c.to_string()).collect())
}

fn picked_ids(candidates: &[Candidate], plan: &Plan) -> Vec<String> {
    plan.picks.iter().map(|&i| candidates[i].id.clone()).collect()
}

/// Candidates from `(id, customer)` pairs, oldest first.
fn arrivals(pairs: &[(&str, &str)]) -> Vec<Candidate> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (id, customer))| candidate(id, customer, i as i64, 0))
        .collect()
}

struct RoundRobinVector {
    name: &'static str,
    remembered: &'static [&'static str],
    candidates: &'static [(&'static str, &'static str)],
    free: usize,
    picks: &'static [&'static str],
    next_order: &'static [&'static str],
}

const ROUND_ROBIN_VECTORS: &[RoundRobinVector] = &[
    RoundRobinVector {
        name: "one per customer per round; new customers by oldest work; rotate after last served",
        remembered: &[],
        candidates: &[("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"), ("a3", "a"), ("c2", "c")],
        free: 4,
        picks: &["a1", "b1", "c1", "a2"],
        next_order: &["b", "c", "a"],
    },
    RoundRobinVector {
        name: "a customer that got no turn goes first next time; one without work is dropped",
        remembered: &["b", "c", "a"],
        candidates: &[("a3", "a"), ("c2", "c")],
        free: 1,
        picks: &["c2"],
        next_order: &["a", "c"],
    },
    RoundRobinVector {
        name: "a returning customer comes after the remembered ones",
        remembered: &["a", "c"],
        candidates: &[("a3", "a"), ("b2", "b")],
        free: 1,
        picks: &["a3"],
        next_order: &["b", "a"],
    },
    RoundRobinVector {
        name: "the remembered order wins over age",
        remembered: &["c", "b", "a"],
        candidates: &[("a1", "a"), ("b1", "b"), ("c1", "c")],
        free: 2,
        picks: &["c1", "b1"],
        next_order: &["a", "c", "b"],
    },
    RoundRobinVector {
        name: "enough room: everything, in rounds",
        remembered: &[],
        candidates: &[("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"), ("a3", "a"), ("c2", "c")],
        free: 10,
        picks: &["a1", "b1", "c1", "a2", "c2", "a3"],
        next_order: &["b", "c", "a"],
    },
    RoundRobinVector {
        name: "no room: nothing moves, the order only learns the new customers",
        remembered: &["b"],
        candidates: &[("a1", "a"), ("b1", "b")],
        free: 0,
        picks: &[],
        next_order: &["b", "a"],
    },
    RoundRobinVector {
        name: "duplicates and customers without work in the remembered order are ignored",
        remembered: &["x", "b", "b", "a", "x"],
        candidates: &[("a1", "a"), ("b1", "b"), ("b2", "b")],
        free: 2,
        picks: &["b1", "a1"],
        next_order: &["b", "a"],
    },
    RoundRobinVector {
        name: "no candidates",
        remembered: &["a"],
        candidates: &[],
        free: 3,
        picks: &[],
        next_order: &[],
    },
];

#[test]
fn round_robin_vectors() {
    for v in ROUND_ROBIN_VECTORS {
        let candidates = arrivals(v.candidates);
        let planned =
            plan(SchedulingAlgorithm::RoundRobin, v.free, &candidates, &order(v.remembered), 0);
        assert_eq!(picked_ids(&candidates, &planned), v.picks, "{}", v.name);
        assert_eq!(planned.customer_order, order(v.next_order), "{}", v.name);
    }
}

#[test]
fn round_robin_passes_chain() {
    // The first three vectors as consecutive passes of one insight.
    let mut remembered = CustomerOrder::default();
    let mut pending =
        arrivals(&[("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"), ("a3", "a"), ("c2", "c")]);
    let mut handed = Vec::new();
    for (free, arrival) in [(4, None), (1, None), (1, Some(("b2", "b"))), (5, None)] {
        if let Some((id, customer)) = arrival {
            pending.push(candidate(id, customer, 100, 0));
        }
        let planned = plan(SchedulingAlgorithm::RoundRobin, free, &pending, &remembered, 0);
        handed.extend(picked_ids(&pending, &planned));
        let mut picks = planned.picks.clone();
        picks.sort_unstable();
        for i in picks.into_iter().rev() {
            pending.remove(i);
        }
        remembered = planned.customer_order;
    }
    assert_eq!(handed, ["a1", "b1", "c1", "a2", "c2", "a3", "b2"]);
    assert!(pending.is_empty());
}

#[test]
fn first_in_first_out_takes_the_oldest() {
    let candidates =
        vec![candidate("old", "a", 1, 0), candidate("mid", "b", 2, 9), candidate("new", "a", 3, 0)];
    let remembered = order(&["b"]);
    let planned = plan(SchedulingAlgorithm::FirstInFirstOut, 2, &candidates, &remembered, 0);
    assert_eq!(picked_ids(&candidates, &planned), ["old", "mid"]);
    assert_eq!(planned.customer_order, remembered);
    let planned = plan(SchedulingAlgorithm::FirstInFirstOut, 9, &candidates, &remembered, 0);
    assert_eq!(picked_ids(&candidates, &planned), ["old", "mid", "new"]);
}

#[test]
fn priority_higher_first_fifo_within() {
    let candidates = vec![
        candidate("p0", "a", 1, 0),
        candidate("p5-old", "a", 2, 5),
        candidate("p1", "b", 3, 1),
        candidate("p5-new", "b", 4, 5),
        candidate("neg", "b", 5, -3),
    ];
    let planned = plan(SchedulingAlgorithm::Priority, 10, &candidates, &order(&[]), 10);
    assert_eq!(picked_ids(&candidates, &planned), ["p5-old", "p5-new", "p1", "p0", "neg"]);
    let planned = plan(SchedulingAlgorithm::Priority, 2, &candidates, &order(&[]), 10);
    assert_eq!(picked_ids(&candidates, &planned), ["p5-old", "p5-new"]);
}

#[test]
fn priority_ages() {
    let i = PRIORITY_AGING_INTERVAL_MS;
    let now = 10 * i;
    let waited = candidate("waited", "a", now - 2 * i, 0);
    let fresh = candidate("fresh", "b", now, 1);
    assert_eq!(effective_priority(&waited, now), 2);
    assert_eq!(effective_priority(&fresh, now), 1);
    let candidates = vec![waited, fresh];
    let planned = plan(SchedulingAlgorithm::Priority, 1, &candidates, &order(&[]), now);
    assert_eq!(picked_ids(&candidates, &planned), ["waited"]);
    // One interval less of waiting: a tie at 1, the older goes first.
    let planned = plan(SchedulingAlgorithm::Priority, 1, &candidates, &order(&[]), now - i);
    assert_eq!(picked_ids(&candidates, &planned), ["waited"]);
    // Less than one interval: the higher priority goes first.
    let planned = plan(SchedulingAlgorithm::Priority, 1, &candidates, &order(&[]), now - i - 1);
    assert_eq!(picked_ids(&candidates, &planned), ["fresh"]);
}

#[test]
fn priority_is_clamped_and_read_leniently() {
    assert_eq!(
        effective_priority(&candidate("x", "a", 0, i64::MAX), i64::MAX),
        MAX_PRIORITY + i64::MAX / PRIORITY_AGING_INTERVAL_MS
    );
    assert_eq!(effective_priority(&candidate("x", "a", 0, i64::MIN), 0), -MAX_PRIORITY);
    // An added time in the future is no wait.
    assert_eq!(effective_priority(&candidate("x", "a", 50, 3), 0), 3);
    let params = |v: serde_json::Value| -> Params {
        serde_json::from_value(json!({ "priority": v })).expect("params")
    };
    assert_eq!(Candidate::priority_of(&params(json!(7))), 7);
    assert_eq!(Candidate::priority_of(&params(json!(" 7 "))), 7);
    assert_eq!(Candidate::priority_of(&params(json!(7.0))), 7);
    assert_eq!(Candidate::priority_of(&params(json!("high"))), 0);
    assert_eq!(Candidate::priority_of(&params(json!(null))), 0);
    assert_eq!(Candidate::priority_of(&Params::default()), 0);
}

/// Arrivals of one simulated pass are spread over this many ms before it is planned.
const ARRIVAL_SPREAD_MS: i64 = 1_000;

/// One simulated pass: the customers (indices) that arrive before it, and its free slots.
fn passes() -> impl Strategy<Value = (usize, Vec<(Vec<usize>, usize)>)> {
    (1usize..=6).prop_flat_map(|customers| {
        (
            Just(customers),
            proptest::collection::vec(
                (proptest::collection::vec(0..customers, 0..8), 0usize..7),
                1..40,
            ),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_robin_is_fair((customers, steps) in passes()) {
        let mut pending: Vec<Candidate> = Vec::new();
        let mut remembered = CustomerOrder::default();
        let mut next_id = 0i64;
        // Per pass: agendas handed to each customer, and whether it had work throughout.
        let mut handed: Vec<Vec<usize>> = Vec::new();
        let mut throughout: Vec<Vec<bool>> = Vec::new();
        for (arriving, free) in &steps {
            for &c in arriving {
                pending.push(candidate(&format!("g{next_id}"), &format!("c{c}"), next_id, 0));
                next_id += 1;
            }
            let count = |pending: &[Candidate], c: usize| {
                pending.iter().filter(|p| p.customer_id == format!("c{c}")).count()
            };
            let before: Vec<usize> = (0..customers).map(|c| count(&pending, c)).collect();
            let planned = plan(SchedulingAlgorithm::RoundRobin, *free, &pending, &remembered, 0);
            prop_assert_eq!(planned.picks.len(), (*free).min(pending.len()));
            let mut picks = planned.picks.clone();
            picks.sort_unstable();
            picks.dedup();
            prop_assert_eq!(picks.len(), planned.picks.len(), "an agenda picked twice");
            let mut got = vec![0usize; customers];
            for &i in picks.iter().rev() {
                let taken = pending.remove(i);
                let c: usize = taken.customer_id[1..].parse().expect("customer index");
                got[c] += 1;
            }
            let after: Vec<usize> = (0..customers).map(|c| count(&pending, c)).collect();
            throughout.push((0..customers).map(|c| before[c] > 0 && after[c] > 0).collect());
            handed.push(got);
            remembered = planned.customer_order;
        }
        for start in 0..steps.len() {
            for a in 0..customers {
                for b in (a + 1)..customers {
                    let (mut got_a, mut got_b) = (0i64, 0i64);
                    for end in start..steps.len() {
                        if !(throughout[end][a] && throughout[end][b]) {
                            break;
                        }
                        got_a += handed[end][a] as i64;
                        got_b += handed[end][b] as i64;
                        prop_assert!(
                            (got_a - got_b).abs() <= 1,
                            "passes {}..={}: c{} got {}, c{} got {}",
                            start, end, a, got_a, b, got_b
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn priority_aging_never_starves(
        slots in 1usize..4,
        extra_high in 0usize..3,
        p_high in 1i64..6,
        step_divisor in 1i64..9,
        lows in proptest::collection::vec((0usize..30, 0i64..6), 1..8),
    ) {
        let interval = PRIORITY_AGING_INTERVAL_MS;
        let step = interval / step_divisor;
        let high = slots + extra_high;
        // Low agendas: (arrival pass, priority below p_high).
        let lows: Vec<(usize, i64)> = lows.into_iter().map(|(pass, p)| (pass, p % p_high)).collect();
        let mut pending: Vec<Candidate> = Vec::new();
        // id → (priority, pass it arrived in, pending count when it arrived)
        let mut low_meta: BTreeMap<String, (i64, usize, usize)> = BTreeMap::new();
        let mut low_done: BTreeMap<String, usize> = BTreeMap::new();
        let mut next_id = 0i64;
        let mut pass = 0usize;
        // No low agenda can wait longer than this (the bound checked below, for the lowest
        // priority and the largest backlog), so the loop ends either way.
        let per_pass = high + lows.len();
        let cap = 30 + per_pass * (30 + (p_high as usize + 1) * step_divisor as usize + 2) + 1;
        while low_done.len() < lows.len() {
            prop_assert!(pass < cap, "low work still waiting after {} passes", cap);
            let now = pass as i64 * step;
            let pending_before = pending.len();
            let mut k = 0i64;
            for _ in 0..high {
                pending.push(candidate(&format!("h{next_id}"), "h", now + k, p_high));
                next_id += 1;
                k += 1;
            }
            for (i, (at, p)) in lows.iter().enumerate() {
                if *at == pass {
                    let id = format!("l{i}");
                    low_meta.insert(id.clone(), (*p, pass, pending_before));
                    pending.push(candidate(&id, "l", now + k, *p));
                    k += 1;
                }
            }
            // Planned a little after the arrivals of this pass (all added before it).
            let planned = plan(SchedulingAlgorithm::Priority, slots, &pending, &CustomerOrder::default(), now + ARRIVAL_SPREAD_MS);
            prop_assert_eq!(planned.picks.len(), slots.min(pending.len()));
            let mut picks = planned.picks.clone();
            picks.sort_unstable();
            for &i in picks.iter().rev() {
                let taken = pending.remove(i);
                if taken.id.starts_with('l') {
                    low_done.insert(taken.id, pass);
                }
            }
            pass += 1;
        }
        for (id, (p, arrived, pending_at_arrival)) in &low_meta {
            let handed_at = low_done[id];
            let waited = (handed_at - arrived) as i64;
            let window_passes = (p_high - p + 1) * step_divisor + 2;
            let may_pass = *pending_at_arrival as i64 + (high + lows.len()) as i64 * window_passes;
            let bound = may_pass / slots as i64;
            prop_assert!(
                waited <= bound,
                "{} (priority {}) waited {} passes, bound {}",
                id, p, waited, bound
            );
        }
    }
}
