//! The ProgressSummary of all agendas sharing a `linkId` (DOMAIN.md §4.3), computed on read
//! from the AgendaProgress objects the caller may see. Kept exactly as POP computed it, because
//! clients poll it to decide when a batch of linked agendas is done.

use crate::model::{AgendaProgress, ProcessingState, ProgressSummary};

/// Summarises `progress` (already filtered to the caller's visible agendas with this link id).
///
/// 1. Any agenda with message `failed` (any case): COMPLETE, percent null.
/// 2. Otherwise: EXECUTING if any executes; if some wait, WAITING when all wait, else
///    EXECUTING; else COMPLETE (also for none). Percent: the sum of the known percents over the
///    count of all, at most 100; 0 for none.
pub fn progress_summary(link_id: &str, progress: Vec<AgendaProgress>) -> ProgressSummary {
    let (processing_state, processing_percent) = state_and_percent(&progress);
    ProgressSummary {
        link_id: link_id.to_string(),
        processing_state,
        processing_percent,
        progress_list: progress,
    }
}

fn state_and_percent(progress: &[AgendaProgress]) -> (ProcessingState, Option<f64>) {
    let failed = progress.iter().any(AgendaProgress::fails_batch);
    if failed {
        return (ProcessingState::Complete, None);
    }
    let count = |state| progress.iter().filter(|p| p.processing_state == state).count();
    let (executing, waiting, all) =
        (count(ProcessingState::Executing), count(ProcessingState::Waiting), progress.len());
    let state = if executing > 0 {
        ProcessingState::Executing
    } else if waiting > 0 {
        if waiting == all { ProcessingState::Waiting } else { ProcessingState::Executing }
    } else {
        ProcessingState::Complete
    };
    let percent = if all == 0 {
        0.0
    } else {
        let sum: f64 = progress.iter().filter_map(|p| p.percent_complete).sum();
        (sum / all as f64).min(100.0)
    };
    (state, Some(percent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProcessingState::{Complete, Executing, Waiting};

    fn progress(state: ProcessingState, message: &str, percent: Option<f64>) -> AgendaProgress {
        AgendaProgress {
            processing_state: state,
            processing_state_message: Some(message.to_string()),
            percent_complete: percent,
            ..AgendaProgress::default()
        }
    }

    fn states(states: &[ProcessingState]) -> Vec<AgendaProgress> {
        states.iter().map(|&s| progress(s, "", None)).collect()
    }

    fn check(given: Vec<AgendaProgress>, state: ProcessingState, percent: Option<f64>) {
        let summary = progress_summary("link-1", given.clone());
        assert_eq!(summary.link_id, "link-1");
        assert_eq!(summary.processing_state, state, "{given:?}");
        assert_eq!(summary.processing_percent, percent, "{given:?}");
        assert_eq!(summary.progress_list, given);
    }

    /// pop: an agenda cancelled with a failed operation (a failure whose retry a cancel
    /// withdrew) still fails its batch; one cancelled with none does not.
    #[test]
    fn a_cancelled_agenda_with_a_failed_operation_fails_its_batch() {
        let op = |message: &str| crate::model::OperationProgress {
            processing_state: Complete,
            processing_state_message: Some(message.into()),
            ..crate::model::OperationProgress::default()
        };
        let mut withdrawn = progress(Complete, "cancelled", Some(50.0));
        withdrawn.operation_progress = vec![op("succeeded"), op("failed")];
        let done = progress(Complete, "succeeded", Some(100.0));
        check(vec![done.clone(), withdrawn.clone()], Complete, None);
        withdrawn.operation_progress = vec![op("succeeded"), op("cancelled")];
        check(vec![done, withdrawn], Complete, Some(75.0));
    }

    #[test]
    fn state_vectors_of_domain_4_3() {
        check(states(&[Complete]), Complete, Some(0.0));
        check(states(&[Waiting, Waiting]), Waiting, Some(0.0));
        check(states(&[Complete, Waiting]), Executing, Some(0.0));
        check(states(&[Complete, Executing, Waiting]), Executing, Some(0.0));
    }

    #[test]
    fn percent_vectors_of_domain_4_3() {
        check(
            vec![progress(Waiting, "queued", None), progress(Executing, "", Some(45.0))],
            Executing,
            Some(22.5),
        );
        check(
            vec![
                progress(Executing, "", Some(150.0)),
                progress(Executing, "", Some(150.0)),
                progress(Executing, "", Some(150.0)),
            ],
            Executing,
            Some(100.0),
        );
    }

    #[test]
    fn none_visible_is_complete_at_zero_with_an_empty_list() {
        check(vec![], Complete, Some(0.0));
    }

    #[test]
    fn any_failure_completes_with_no_percent() {
        check(
            vec![progress(Executing, "", Some(50.0)), progress(Complete, "FAILED", Some(100.0))],
            Complete,
            None,
        );
    }

    #[test]
    fn succeeded_ones_count_their_percent() {
        check(
            vec![progress(Complete, "succeeded", Some(100.0)), progress(Waiting, "added", None)],
            Executing,
            Some(50.0),
        );
    }
}
