//! Rerun (DOMAIN.md §8): POP's string flags, and which operations a rerun resets, resumes or
//! removes. Pure functions over the agenda, so the rules are testable without events.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::model::{Operation, OperationProgress, ProcessingState, message};
use crate::references::dependencies;
use crate::text::{eq_ignore_case, fold_case};

/// POP's flag spellings, compared case-insensitively.
pub mod flag {
    pub const RESET_ALL: &str = "resetAll";
    pub const CONTINUE: &str = "continue";
    pub const SKIP_EXECUTION: &str = "skipExecution";
    /// Followed by `=a,b`.
    pub const OPERATIONS_TO_RESET: &str = "operationsToReset";
}

/// Which operations a rerun resets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "operations", rename_all = "camelCase")]
pub enum RerunReset {
    /// Every operation (POP's default when no flag is given).
    All,
    /// None: succeeded operations keep their results and the executor resumes.
    Continue,
    /// These operations and everything that depends on them.
    Operations(Vec<String>),
}

/// A parsed rerun request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunFlags {
    #[serde(rename = "reset")]
    pub reset: RerunReset,
    /// Leave the agenda WAITING/pending instead of re-adding it.
    #[serde(rename = "skipExecution", default)]
    pub skip_execution: bool,
}

impl Default for RerunFlags {
    fn default() -> Self {
        RerunFlags { reset: RerunReset::All, skip_execution: false }
    }
}

impl RerunFlags {
    /// The `continue` rerun the automatic retry uses.
    pub fn continue_() -> Self {
        RerunFlags { reset: RerunReset::Continue, skip_execution: false }
    }

    /// Parses POP's rerun params, e.g. `["operationsToReset=a,b", "skipExecution"]`, as POP's
    /// `RerunAgendaParameter.getParametersMap` and `ProgressResetProcessor` read them.
    ///
    /// Precedence, POP's: `resetAll` wins over everything else given with it; else
    /// `operationsToReset` (operations outside the reset set continue either way, so
    /// `continue` beside it changes nothing); else `continue`; no reset flag at all means
    /// `resetAll`. A value after `=` on a flag that takes none (`continue=x`, `resetAll=`) is
    /// ignored, as POP ignored it. Several `operationsToReset` entries add up. Refused: unknown
    /// flags (POP dropped them silently, which turned a typo into a full reset) and an
    /// `operationsToReset=` without names.
    pub fn parse<S: AsRef<str>>(params: &[S]) -> Result<RerunFlags, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let (mut reset_all, mut continue_, mut skip_execution) = (false, false, false);
        let mut names: Option<Vec<String>> = None;
        for (i, raw) in params.iter().enumerate() {
            let raw = raw.as_ref().trim();
            let field = format!("params[{i}]");
            let (key, value) = match raw.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v)),
                None => (raw, None),
            };
            if eq_ignore_case(key, flag::OPERATIONS_TO_RESET) {
                let listed: Vec<String> = value
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                if listed.is_empty() {
                    errors.push(
                        field,
                        "operationsToReset needs operation names: operationsToReset=a,b",
                    );
                }
                names.get_or_insert_with(Vec::new).extend(listed);
            } else if eq_ignore_case(key, flag::RESET_ALL) {
                reset_all = true;
            } else if eq_ignore_case(key, flag::CONTINUE) {
                continue_ = true;
            } else if eq_ignore_case(key, flag::SKIP_EXECUTION) {
                skip_execution = true;
            } else {
                errors.push(
                    field,
                    format!(
                        "unknown rerun flag {key:?}; expected resetAll, continue, skipExecution or operationsToReset=a,b"
                    ),
                );
            }
        }
        errors.into_result()?;
        let reset = match names {
            _ if reset_all => RerunReset::All,
            Some(mut names) => {
                let mut seen = BTreeSet::new();
                names.retain(|n| seen.insert(fold_case(n)));
                RerunReset::Operations(names)
            }
            None if continue_ => RerunReset::Continue,
            None => RerunReset::All,
        };
        Ok(RerunFlags { reset, skip_execution })
    }

    /// Back to POP's string form (the inverse of [`RerunFlags::parse`]).
    pub fn to_params(&self) -> Vec<String> {
        let mut out = vec![match &self.reset {
            RerunReset::All => flag::RESET_ALL.to_string(),
            RerunReset::Continue => flag::CONTINUE.to_string(),
            RerunReset::Operations(names) => {
                format!("{}={}", flag::OPERATIONS_TO_RESET, names.join(","))
            }
        }];
        if self.skip_execution {
            out.push(flag::SKIP_EXECUTION.to_string());
        }
        out
    }
}

/// What one rerun does to the operations, each list in agenda order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RerunPlan {
    /// Back to WAITING/pending with result, diagnostics, percent and times cleared.
    pub reset: Vec<String>,
    /// Not reset and not succeeded (failed, cancelled, interrupted): back to WAITING/pending
    /// keeping their diagnostics, so the executor runs them again and the reason for the last
    /// failure stays visible.
    pub resumed: Vec<String>,
    /// Generated by a reset (or removed) generator: dropped from the agenda, because the
    /// generator will generate them again.
    pub removed: Vec<String>,
}

/// Plans a rerun. Fails when `operationsToReset` names an operation the agenda does not have.
pub fn plan_rerun(
    operations: &[Operation],
    progress: &[OperationProgress],
    reset: &RerunReset,
) -> Result<RerunPlan, ValidationErrors> {
    let seeds: BTreeSet<String> = match reset {
        RerunReset::All => operations.iter().map(|op| op.name.clone()).collect(),
        RerunReset::Continue => BTreeSet::new(),
        RerunReset::Operations(names) => {
            let mut errors = ValidationErrors::new();
            let mut seeds = BTreeSet::new();
            for name in names {
                match operations.iter().find(|op| eq_ignore_case(&op.name, name)) {
                    Some(op) => {
                        seeds.insert(op.name.clone());
                    }
                    None => errors.push(
                        "operationsToReset",
                        format!("{name:?} is not an operation of this agenda"),
                    ),
                }
            }
            errors.into_result()?;
            seeds
        }
    };
    let (reset, removed) = reset_closure(operations, &seeds);
    let resumed = progress
        .iter()
        .filter(|p| !reset.iter().chain(&removed).any(|n| **n == *p.operation))
        .filter(|p| p.processing_state != ProcessingState::Waiting && !is_succeeded(p))
        .map(|p| p.operation.to_string())
        .collect();
    Ok(RerunPlan { reset, resumed, removed })
}

fn is_succeeded(p: &OperationProgress) -> bool {
    p.processing_state == ProcessingState::Complete
        && p.processing_state_message.as_deref().is_some_and(message::is_succeeded)
}

/// The reset set closed over dependants, and the operations removed because a reset or removed
/// generator made them (DOMAIN.md §8). Removal wins over reset: an operation generated by a
/// reset generator is removed even when it also depends on a reset operation. An operation that
/// depends on a removed one is reset, since its input will be produced again.
///
/// `seeds` hold exact operation names. Bounded: each pass adds at least one operation or stops,
/// so at most `operations.len() + 1` passes.
pub fn reset_closure(
    operations: &[Operation],
    seeds: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let deps: Vec<BTreeSet<String>> = operations.iter().map(dependencies).collect();
    let mut reset: BTreeSet<&str> = seeds.iter().map(String::as_str).collect();
    let mut removed: BTreeSet<&str> = BTreeSet::new();
    for _ in 0..=operations.len() {
        let mut changed = false;
        for (op, deps) in operations.iter().zip(&deps) {
            let name = op.name.as_str();
            if removed.contains(name) {
                continue;
            }
            let by_reset_generator = op
                .generated_by()
                .is_some_and(|parent| reset.contains(parent) || removed.contains(parent));
            if by_reset_generator {
                reset.remove(name);
                removed.insert(name);
                changed = true;
            } else if !reset.contains(name)
                && deps.iter().any(|d| reset.contains(d.as_str()) || removed.contains(d.as_str()))
            {
                reset.insert(name);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let in_order = |set: &BTreeSet<&str>| {
        operations
            .iter()
            .filter(|op| set.contains(op.name.as_str()))
            .map(|op| op.name.clone())
            .collect::<Vec<_>>()
    };
    (in_order(&reset), in_order(&removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flag_is_reset_all() {
        let none: [&str; 0] = [];
        assert_eq!(RerunFlags::parse(&none).unwrap(), RerunFlags::default());
        assert_eq!(
            RerunFlags::parse(&["skipExecution"]).unwrap(),
            RerunFlags { reset: RerunReset::All, skip_execution: true }
        );
    }

    #[test]
    fn parses_every_flag() {
        assert_eq!(RerunFlags::parse(&["continue"]).unwrap(), RerunFlags::continue_());
        assert_eq!(
            RerunFlags::parse(&["operationsToReset=a, b", "OperationsToReset=c,A"]).unwrap(),
            RerunFlags {
                reset: RerunReset::Operations(vec!["a".into(), "b".into(), "c".into()]),
                skip_execution: false
            }
        );
        assert_eq!(
            RerunFlags::parse(&["continue", "operationsToReset=a"]).unwrap().reset,
            RerunReset::Operations(vec!["a".into()])
        );
    }

    #[test]
    fn refuses_unknown_and_empty_flags() {
        let err = RerunFlags::parse(&["resetEverything", "operationsToReset="]).unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
        assert!(err.errors[0].message.contains("resetEverything"));
        assert_eq!(err.errors[1].field, "params[1]");
    }

    #[test]
    fn what_pop_accepted_is_accepted_with_pops_precedence() {
        let parse = |p: &[&str]| RerunFlags::parse(p).unwrap();
        // Values on flags that take none are ignored.
        assert_eq!(parse(&["continue=x"]), RerunFlags::continue_());
        assert_eq!(parse(&["resetAll="]), RerunFlags::default());
        assert!(parse(&["skipExecution=yes"]).skip_execution);
        // resetAll wins over everything given with it.
        assert_eq!(parse(&["resetAll", "continue"]).reset, RerunReset::All);
        assert_eq!(parse(&["continue", "operationsToReset=a", "resetAll"]).reset, RerunReset::All);
        // operationsToReset wins over continue.
        assert_eq!(
            parse(&["continue", "operationsToReset=a"]).reset,
            RerunReset::Operations(vec!["a".into()])
        );
        // Flags combine with skipExecution.
        let flags = parse(&["continue", "skipExecution"]);
        assert_eq!((flags.reset, flags.skip_execution), (RerunReset::Continue, true));
    }

    #[test]
    fn to_params_round_trips() {
        for params in
            [vec!["resetAll"], vec!["continue", "skipExecution"], vec!["operationsToReset=x,y"]]
        {
            let flags = RerunFlags::parse(&params).unwrap();
            assert_eq!(flags.to_params(), params);
        }
    }
}
