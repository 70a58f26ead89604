//! The pure heart of the executor: which operations of an agenda may run now, fed events
//! (started, succeeded, failed, expanded) and answering with what is ready and whether the
//! agenda is finished. No IO, no clock, no tasks, so every scheduling rule is a unit test.
//!
//! Rules (DOMAIN.md §4.2, §5, §8):
//! - an operation is ready when every dependency (references in its payload and
//!   `params.dependsOn`) has succeeded — in this execution or, on a `continue` rerun, in an
//!   earlier one (its recorded result feeds its dependants);
//! - the first failure stops operations that have not started; the agenda fails once nothing
//!   runs any more;
//! - operations that can never become ready (a dependency that is unknown, or that ended
//!   without success in an earlier attempt and cannot run again in this one) are a deadlock:
//!   the agenda fails with a diagnostic naming them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use pop_domain::model::{AgendaProgress, Operation, ProcessingState, message};
use pop_domain::references::{self, ReferenceError, output_name, tokens};

/// Where one operation is in this execution.
#[derive(Debug, Clone, PartialEq)]
pub enum OpState {
    /// Not started; may start once its dependencies succeeded.
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Ended without success before this execution (COMPLETE/failed or cancelled and not
    /// reset): the server refuses to run it again in this attempt.
    EndedEarlier(String),
}

#[derive(Debug, Clone)]
struct Entry {
    op: Operation,
    /// Dependencies by exact name (references spell names exactly; DOMAIN.md §5).
    deps: BTreeSet<String>,
    state: OpState,
}

/// How the agenda stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Operations are running or ready.
    Working,
    /// Every operation succeeded.
    Succeeded,
    /// An operation failed and nothing runs any more.
    Failed { failed: Vec<String> },
    /// Nothing runs, and these pending operations can never become ready.
    Deadlocked { blocked: Vec<Blocked> },
}

/// A pending operation that can never run, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub operation: String,
    /// Its dependencies that will never succeed, each with the reason.
    pub waits_for: Vec<(String, String)>,
}

impl Status {
    pub fn is_finished(&self) -> bool {
        !matches!(self, Status::Working)
    }
}

/// One agenda's DAG as this execution sees it.
#[derive(Debug, Clone)]
pub struct Plan {
    agenda_id: String,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    outputs: BTreeMap<String, Value>,
    any_failed: bool,
}

impl Plan {
    /// The plan of `operations`, resuming from `progress` when the agenda has some: operations
    /// recorded COMPLETE/succeeded keep their result and do not run again.
    pub fn new(
        agenda_id: &str,
        operations: &[Operation],
        progress: Option<&AgendaProgress>,
    ) -> Plan {
        let mut plan = Plan {
            agenda_id: agenda_id.to_string(),
            entries: Vec::with_capacity(operations.len()),
            by_name: HashMap::new(),
            outputs: BTreeMap::new(),
            any_failed: false,
        };
        plan.add_operations(operations);
        for p in progress.map(|p| p.operation_progress.as_slice()).unwrap_or_default() {
            let Some(&i) = plan.by_name.get(&*p.operation) else { continue };
            if p.processing_state != ProcessingState::Complete {
                continue;
            }
            let msg = p.processing_state_message.as_deref().unwrap_or_default().to_string();
            if message::is_succeeded(&msg) {
                plan.entries[i].state = OpState::Succeeded;
                plan.outputs.insert(p.operation.to_string(), p.result_payload.to_value());
            } else {
                plan.entries[i].state = OpState::EndedEarlier(msg);
            }
        }
        plan
    }

    /// Adds operations (a generator's expansion); names already present are skipped, so a
    /// generator that runs again after a crash does not add its operations twice. Returns the
    /// names added.
    pub fn add_operations(&mut self, operations: &[Operation]) -> Vec<String> {
        let mut added = Vec::new();
        for op in operations {
            if self.by_name.contains_key(&op.name) {
                continue;
            }
            self.by_name.insert(op.name.clone(), self.entries.len());
            self.entries.push(Entry {
                deps: references::dependencies(op),
                op: op.clone(),
                state: OpState::Pending,
            });
            added.push(op.name.clone());
        }
        added
    }

    pub fn agenda_id(&self) -> &str {
        &self.agenda_id
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.by_name.get(name).map(|&i| &self.entries[i].op)
    }

    pub fn state(&self, name: &str) -> Option<&OpState> {
        self.by_name.get(name).map(|&i| &self.entries[i].state)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The recorded outputs, by operation name.
    pub fn outputs(&self) -> &BTreeMap<String, Value> {
        &self.outputs
    }

    pub fn running(&self) -> usize {
        self.entries.iter().filter(|e| e.state == OpState::Running).count()
    }

    /// Pending operations whose dependencies all succeeded, in agenda order, at most `max`;
    /// none once an operation failed (a failure stops what has not started).
    pub fn ready(&self, max: usize) -> Vec<String> {
        if self.any_failed {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|e| e.state == OpState::Pending && self.deps_succeeded(e))
            .take(max)
            .map(|e| e.op.name.clone())
            .collect()
    }

    fn deps_succeeded(&self, e: &Entry) -> bool {
        e.deps.iter().all(|d| {
            self.by_name.get(d).is_some_and(|&i| self.entries[i].state == OpState::Succeeded)
        })
    }

    /// The payload of `name` with references to earlier outputs (`N.out`) and the tokens
    /// `pop.agendaId` / `pop.operationName` replaced (DOMAIN.md §5).
    pub fn resolved_payload(&self, name: &str) -> Result<Value, ReferenceError> {
        let Some(op) = self.operation(name) else { return Ok(Value::Null) };
        let lookup = |reference: &str| -> Option<Value> {
            match reference {
                tokens::AGENDA_ID => Some(Value::String(self.agenda_id.clone())),
                tokens::OPERATION_NAME => Some(Value::String(op.name.clone())),
                _ => {
                    let operation = reference.strip_suffix(references::OUTPUT_SUFFIX)?;
                    debug_assert_eq!(output_name(operation), reference);
                    self.outputs.get(operation).cloned()
                }
            }
        };
        references::resolve(&op.payload.to_value(), &lookup)
    }

    pub fn start(&mut self, name: &str) {
        self.set(name, OpState::Running);
    }

    pub fn succeed(&mut self, name: &str, output: Value) {
        self.set(name, OpState::Succeeded);
        self.outputs.insert(name.to_string(), output);
    }

    /// `name` stopped before it ended (its worker is stopping): pending again, for the next
    /// worker the agenda is handed to.
    pub fn abandon(&mut self, name: &str) {
        self.set(name, OpState::Pending);
    }

    pub fn fail(&mut self, name: &str) {
        self.set(name, OpState::Failed);
        self.any_failed = true;
    }

    fn set(&mut self, name: &str, state: OpState) {
        if let Some(&i) = self.by_name.get(name) {
            self.entries[i].state = state;
        }
    }

    /// Pending operations that can never become ready: a dependency unknown, ended without
    /// success earlier, or itself blocked (transitively). Empty when all can still run.
    pub fn blocked(&self) -> Vec<Blocked> {
        // Fixed point over "can still succeed": each round marks at least one more
        // operation, or stops; bounded by the number of operations.
        let mut dead: BTreeMap<String, String> = BTreeMap::new();
        for e in &self.entries {
            match &e.state {
                OpState::EndedEarlier(m) => {
                    dead.insert(
                        e.op.name.clone(),
                        format!("it is COMPLETE/{m} from an earlier attempt"),
                    );
                }
                OpState::Failed => {
                    dead.insert(e.op.name.clone(), "it failed".to_string());
                }
                _ => {}
            }
        }
        let mut blocked: Vec<Blocked> = Vec::new();
        loop {
            let mut changed = false;
            for e in &self.entries {
                if e.state != OpState::Pending || dead.contains_key(&e.op.name) {
                    continue;
                }
                let waits_for: Vec<(String, String)> = e
                    .deps
                    .iter()
                    .filter_map(|d| match (self.by_name.contains_key(d), dead.get(d)) {
                        (false, _) => {
                            Some((d.clone(), "the agenda has no such operation".to_string()))
                        }
                        (true, Some(why)) => Some((d.clone(), why.clone())),
                        (true, None) => None,
                    })
                    .collect();
                if !waits_for.is_empty() {
                    dead.insert(e.op.name.clone(), "it can never run".to_string());
                    blocked.push(Blocked { operation: e.op.name.clone(), waits_for });
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        blocked
    }

    /// How the agenda stands now.
    pub fn status(&self) -> Status {
        let running = self.running();
        if self.any_failed {
            if running > 0 {
                return Status::Working;
            }
            let failed = self
                .entries
                .iter()
                .filter(|e| e.state == OpState::Failed)
                .map(|e| e.op.name.clone())
                .collect();
            return Status::Failed { failed };
        }
        if self.entries.iter().all(|e| e.state == OpState::Succeeded) {
            return Status::Succeeded;
        }
        // A blocked operation is known dead at once: waiting for the running ones would only
        // run work whose agenda is already lost.
        let blocked = self.blocked();
        if !blocked.is_empty() {
            return if running > 0 { Status::Working } else { Status::Deadlocked { blocked } };
        }
        if running == 0 && self.ready(1).is_empty() {
            // Pending operations remain, none can start and none runs. With the checks above
            // this needs a dependency cycle, which submission rejects; kept as a guard so an
            // execution can never hang.
            let blocked = self
                .entries
                .iter()
                .filter(|e| !matches!(e.state, OpState::Succeeded))
                .map(|e| Blocked {
                    operation: e.op.name.clone(),
                    waits_for: e
                        .deps
                        .iter()
                        .filter(|d| self.state(d) != Some(&OpState::Succeeded))
                        .map(|d| (d.clone(), "it never becomes ready".to_string()))
                        .collect(),
                })
                .collect();
            return Status::Deadlocked { blocked };
        }
        Status::Working
    }

    /// Whether the plan should start nothing more: a failure, or a deadlock already known.
    pub fn is_stopping(&self) -> bool {
        self.any_failed || !self.blocked().is_empty()
    }
}

/// The diagnostic message of a deadlock, naming every blocked operation.
pub fn deadlock_message(blocked: &[Blocked]) -> String {
    let parts: Vec<String> = blocked
        .iter()
        .map(|b| {
            let waits: Vec<String> =
                b.waits_for.iter().map(|(d, why)| format!("{d:?} ({why})")).collect();
            format!("{:?} waits for {}", b.operation, waits.join(", "))
        })
        .collect();
    let names: Vec<&str> = blocked.iter().map(|b| b.operation.as_str()).collect();
    format!(
        "deadlock: operations {} can never become ready: {}",
        names.join(", "),
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pop_domain::model::OperationProgress;
    use serde_json::json;

    fn op(name: &str, payload: Value, depends_on: Option<&str>) -> Operation {
        let mut params = pop_domain::Params::new();
        if let Some(d) = depends_on {
            params.insert("dependsOn", d);
        }
        Operation {
            name: name.into(),
            op_type: "t".into(),
            payload: payload.into(),
            params,
            id: None,
        }
    }

    fn diamond() -> Vec<Operation> {
        vec![
            op("a", json!({"x": 1}), None),
            op("b", json!("@<a.out::/v>"), None),
            op("c", json!({"n": "@<pop.operationName>", "id": "@<pop.agendaId>"}), Some("a")),
            op("d", json!("--@<b.out>--@<c.out::/k>--"), None),
        ]
    }

    #[test]
    fn runs_a_diamond_in_dependency_order_and_resolves_outputs() {
        let mut plan = Plan::new("ag1", &diamond(), None);
        assert_eq!(plan.ready(10), vec!["a"]);
        plan.start("a");
        assert_eq!(plan.ready(10), Vec::<String>::new());
        assert_eq!(plan.status(), Status::Working);
        plan.succeed("a", json!({"v": [1, 2]}));
        assert_eq!(plan.ready(10), vec!["b", "c"]);
        assert_eq!(plan.ready(1), vec!["b"]);
        assert_eq!(plan.resolved_payload("b").unwrap(), json!([1, 2]));
        assert_eq!(plan.resolved_payload("c").unwrap(), json!({"n": "c", "id": "ag1"}));
        plan.start("b");
        plan.start("c");
        plan.succeed("b", json!(85));
        plan.succeed("c", json!({"k": "x"}));
        assert_eq!(plan.ready(10), vec!["d"]);
        assert_eq!(plan.resolved_payload("d").unwrap(), json!("--85--x--"));
        plan.start("d");
        plan.succeed("d", json!(null));
        assert_eq!(plan.status(), Status::Succeeded);
    }

    #[test]
    fn a_failure_stops_what_has_not_started_and_fails_once_nothing_runs() {
        let mut plan = Plan::new("ag", &diamond(), None);
        plan.start("a");
        plan.succeed("a", json!({"v": 1}));
        plan.start("b");
        plan.start("c");
        plan.fail("b");
        assert!(plan.ready(10).is_empty());
        assert_eq!(plan.status(), Status::Working, "c still runs");
        plan.succeed("c", json!({"k": 1}));
        assert_eq!(plan.status(), Status::Failed { failed: vec!["b".into()] });
        assert_eq!(plan.state("d"), Some(&OpState::Pending));
    }

    #[test]
    fn resumes_from_recorded_progress_without_running_succeeded_operations() {
        let progress = AgendaProgress {
            operation_progress: vec![
                OperationProgress {
                    operation: "a".into(),
                    processing_state: ProcessingState::Complete,
                    processing_state_message: Some("Succeeded".into()),
                    result_payload: json!({"v": "kept"}).into(),
                    ..Default::default()
                },
                OperationProgress {
                    operation: "b".into(),
                    processing_state: ProcessingState::Waiting,
                    processing_state_message: Some("pending".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let plan = Plan::new("ag", &diamond(), Some(&progress));
        assert_eq!(plan.ready(10), vec!["b", "c"]);
        assert_eq!(plan.resolved_payload("b").unwrap(), json!("kept"));
    }

    #[test]
    fn an_operation_ended_earlier_blocks_its_dependants_as_a_deadlock() {
        let progress = AgendaProgress {
            operation_progress: vec![OperationProgress {
                operation: "a".into(),
                processing_state: ProcessingState::Complete,
                processing_state_message: Some("failed".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = Plan::new("ag", &diamond(), Some(&progress));
        let Status::Deadlocked { blocked } = plan.status() else { panic!("{:?}", plan.status()) };
        let names: Vec<&str> = blocked.iter().map(|b| b.operation.as_str()).collect();
        assert_eq!(names, vec!["b", "c", "d"]);
        let text = deadlock_message(&blocked);
        assert!(text.starts_with("deadlock: operations b, c, d can never become ready"), "{text}");
        assert!(text.contains("COMPLETE/failed from an earlier attempt"), "{text}");
        assert!(plan.is_stopping());
        assert!(plan.ready(10).is_empty());
    }

    #[test]
    fn an_unknown_dependency_is_a_deadlock_naming_the_operation() {
        let ops = vec![op("a", json!(1), None), op("b", json!(1), Some("ghost"))];
        let mut plan = Plan::new("ag", &ops, None);
        assert_eq!(plan.ready(10), vec!["a"]);
        plan.start("a");
        assert_eq!(plan.status(), Status::Working, "a still runs");
        plan.succeed("a", json!(1));
        let Status::Deadlocked { blocked } = plan.status() else { panic!() };
        assert_eq!(blocked[0].operation, "b");
        assert_eq!(blocked[0].waits_for[0].0, "ghost");
    }

    #[test]
    fn a_cycle_never_hangs() {
        let ops = vec![op("a", json!("@<b.out>"), None), op("b", json!("@<a.out>"), None)];
        let plan = Plan::new("ag", &ops, None);
        assert!(matches!(plan.status(), Status::Deadlocked { .. }));
    }

    #[test]
    fn expansion_adds_operations_once_and_they_run_in_the_same_execution() {
        let ops = vec![op("gen", json!({}), None)];
        let mut plan = Plan::new("ag", &ops, None);
        plan.start("gen");
        let new = vec![op("g1", json!("@<gen.out::/seed>"), None), op("g2", json!(2), Some("g1"))];
        assert_eq!(plan.add_operations(&new), vec!["g1", "g2"]);
        assert_eq!(plan.add_operations(&new), Vec::<String>::new());
        plan.succeed("gen", json!({"seed": 7}));
        assert_eq!(plan.status(), Status::Working);
        assert_eq!(plan.ready(10), vec!["g1"]);
        assert_eq!(plan.resolved_payload("g1").unwrap(), json!(7));
        plan.start("g1");
        plan.succeed("g1", json!(1));
        plan.start("g2");
        plan.succeed("g2", json!(2));
        assert_eq!(plan.status(), Status::Succeeded);
    }

    #[test]
    fn a_reference_to_an_unknown_output_stays_as_written() {
        let ops = vec![op("a", json!("@<pop.payload> and @<x.out>"), None)];
        let plan = Plan::new("ag", &ops, None);
        assert_eq!(plan.resolved_payload("a").unwrap(), json!("@<pop.payload> and @<x.out>"));
    }
}
