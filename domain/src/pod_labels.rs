//! The labels pop puts on the Kubernetes pods it runs: the contract between the worker's pod
//! handler (which sets them) and the pod reaper (which selects on them and re-checks them).
//! Pure: keys, the selector and the label-value rule, no Kubernetes types (the worker may not
//! depend on the reapers, so both take them from here).
//!
//! What a pod carries:
//! - [`MANAGED_BY`]`=`[`MANAGED_BY_VALUE`] on every pod pop creates;
//! - [`INSIGHT_ID`], [`RESOURCE_POOL_ID`], [`AGENDA_ID`], [`OPERATION_NAME`], each as a label
//!   whose value is the id made valid by [`label_value`] (so possibly changed: characters
//!   replaced, cut to 63, even empty), **and** as an annotation of the same key holding the
//!   exact id. Readers that need the exact id read the annotation.
//!
//! The pod reaper touches only pods with [`MANAGED_BY`]`=`[`MANAGED_BY_VALUE`] and a non-empty
//! [`AGENDA_ID`] label; a pod whose agenda id sanitises to nothing is therefore never reaped.

/// `app.kubernetes.io/managed-by=pop`: the pod is pop's.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "pop";
/// The insight the agenda was handed out from.
pub const INSIGHT_ID: &str = "pop.insightId";
/// The resource pool whose worker runs the pod.
pub const RESOURCE_POOL_ID: &str = "pop.resourcePoolId";
/// The agenda the pod works for (required for the reaper to touch it).
pub const AGENDA_ID: &str = "pop.agendaId";
/// The operation the pod runs.
pub const OPERATION_NAME: &str = "pop.operationName";

/// Longest label value Kubernetes accepts.
pub const MAX_VALUE_LENGTH: usize = 63;

/// The server-side selector of the pod reaper: managed by pop and naming an agenda.
pub fn selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{AGENDA_ID}")
}

/// A label value Kubernetes accepts, from any id: characters outside `[A-Za-z0-9._-]` become
/// `_`, the result is cut to [`MAX_VALUE_LENGTH`] characters, then anything not alphanumeric
/// is trimmed from both ends (a value must start and end alphanumeric; it may be empty).
pub fn label_value(value: &str) -> String {
    let mapped: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .take(MAX_VALUE_LENGTH)
        .collect();
    mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_what_kubernetes_accepts() {
        assert_eq!(label_value("agenda-1.a_b"), "agenda-1.a_b");
        assert_eq!(label_value("a b/c"), "a_b_c");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value("ä"), "");
        assert_eq!(label_value(&"y".repeat(100)).len(), MAX_VALUE_LENGTH);
    }

    #[test]
    fn the_selector_names_pops_pods_with_an_agenda() {
        assert_eq!(selector(), "app.kubernetes.io/managed-by=pop,pop.agendaId");
    }
}
