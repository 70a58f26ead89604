//! The PodReaper (DOMAIN.md §9): pods in the configured namespace that carry pop's labels
//! ([`labels`]), in phase `Succeeded` or `Failed`, finished at least `reapAge` ago, are
//! deleted in batches. **pop:** POP deleted every finished pod in the namespace; this reaper
//! selects by label on the server *and* re-checks the labels in [`plan`], so a pod without
//! pop's labels is never touched, and every delete carries a UID precondition, so a pod
//! re-created under the same name since the list is never hit (the API answers 409).
//!
//! "Finished" is the latest `terminated.finishedAt` of the pod's containers; a pod that
//! ended abnormally without one (evicted, never started, node lost) is judged by its
//! `status.startTime`, then by its creation time.
//!
//! [`plan`] is pure over the listed pods; [`execute`] is idempotent: a pod already gone (404)
//! counts as gone, a re-created one (409) as refused. No Kubernetes API server can run in this
//! repository's CI: the reaper is tested against a scripted mock of the API (`tower-test`).

use std::time::Duration;

use chrono::TimeDelta;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use pop_domain::Timestamp;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::process::{Cadence, CycleReport, ProcessName, TimedProcess};

/// The labels pop puts on the pods it runs ([`pop_domain::pod_labels`], shared with the
/// worker, which sets them): this reaper selects on `app.kubernetes.io/managed-by=pop` and a
/// `pop.agendaId` label and re-checks both. Each id label holds the id made a valid label value
/// (`pod_labels::label_value`: replaced characters, cut to 63, possibly empty), and an
/// annotation of the same key holds the exact id; the agenda id this reaper reports is the
/// label's, and a pod whose agenda id label is empty is never touched.
pub use pop_domain::pod_labels as labels;

/// POP's age: 1440 minutes after a pod finished.
pub const DEFAULT_REAP_AGE: Duration = Duration::from_secs(1440 * 60);
/// Every 5 minutes: a list of the labelled pods is cheap, and finished pods hold node
/// resources (their logs, sandbox) until deleted.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Most pods deleted per cycle; the rest wait for the next cycle, oldest first.
pub const DEFAULT_BATCH_SIZE: usize = 200;
/// Longest one cycle deletes.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(120);
/// Deletes in flight at once: gentle on the API server (its default client QPS is low).
pub const MAX_CONCURRENT_DELETES: usize = 8;
/// Pods per list page, and most pods looked at per cycle (a namespace with more labelled
/// finished pods than this is worked through over several cycles).
pub const LIST_PAGE: u32 = 500;
pub const MAX_LISTED: usize = 20_000;

/// How the pod reaper runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReaperConfig {
    /// Interval, batch size, run-time bound and dry run.
    pub cadence: Cadence,
    /// Age since a pod finished at which it is deleted.
    pub reap_age: Duration,
}

impl Default for PodReaperConfig {
    fn default() -> PodReaperConfig {
        PodReaperConfig {
            cadence: Cadence {
                interval: DEFAULT_INTERVAL,
                batch_size: DEFAULT_BATCH_SIZE,
                max_run_time: DEFAULT_MAX_RUN_TIME,
                dry_run: false,
            },
            reap_age: DEFAULT_REAP_AGE,
        }
    }
}

/// One pod to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAction {
    pub name: String,
    /// The UID it was listed with: the delete's precondition.
    pub uid: String,
    /// `Succeeded` or `Failed`.
    pub phase: String,
    pub agenda_id: String,
    /// When it finished (or the fallback, see the module docs).
    pub finished: Timestamp,
}

/// What one cycle did.
#[derive(Debug, Default)]
pub struct PodReport {
    pub planned: usize,
    pub deleted: usize,
    /// Already gone (404): someone else deleted it.
    pub gone: usize,
    /// The UID precondition failed (409): a new pod has the name now; left alone.
    pub refused: usize,
    /// Not attempted: run time used up (or dry run).
    pub skipped: usize,
    pub errors: Vec<PodReapError>,
}

/// A list or delete that failed.
#[derive(Debug, thiserror::Error)]
pub enum PodReapError {
    #[error("listing pop's pods failed")]
    List(#[source] kube::Error),
    #[error("deleting pod {name:?} failed")]
    Delete {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("a delete task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Whether `pod` carries pop's labels (the re-check behind the server-side selector).
pub fn is_pops(pod: &Pod) -> bool {
    let Some(l) = pod.metadata.labels.as_ref() else { return false };
    l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE)
        && l.get(labels::AGENDA_ID).is_some_and(|a| !a.is_empty())
}

fn to_timestamp(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<Timestamp> {
    Timestamp::from_timestamp_millis(t.0.as_millisecond())
}

/// When `pod` finished: the latest container `finishedAt`, else its start, else its creation.
pub fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let finished = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .filter_map(to_timestamp)
        .max();
    finished
        .or_else(|| status.and_then(|s| s.start_time.as_ref()).and_then(to_timestamp))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().and_then(to_timestamp))
}

/// The pods to delete at `now`: pop's, `Succeeded` or `Failed`, finished at or before
/// `now - reap_age` (exactly at the bound is reaped), oldest first, at most
/// `config.cadence.batch_size`. Pure.
pub fn plan(now: Timestamp, pods: &[Pod], config: &PodReaperConfig) -> Vec<PodAction> {
    let cutoff = now - TimeDelta::from_std(config.reap_age).unwrap_or(TimeDelta::MAX);
    let mut found: Vec<PodAction> = pods
        .iter()
        .filter(|p| is_pops(p))
        .filter_map(|pod| {
            let phase = pod.status.as_ref()?.phase.clone()?;
            if phase != "Succeeded" && phase != "Failed" {
                return None;
            }
            let finished = finished_at(pod)?;
            if finished > cutoff {
                return None;
            }
            Some(PodAction {
                name: pod.metadata.name.clone()?,
                uid: pod.metadata.uid.clone()?,
                phase,
                agenda_id: pod.metadata.labels.as_ref()?.get(labels::AGENDA_ID)?.clone(),
                finished,
            })
        })
        .collect();
    found.sort_by(|a, b| (a.finished, &a.name).cmp(&(b.finished, &b.name)));
    found.truncate(config.cadence.batch_size);
    found
}

/// Lists pop's pods (label selector, paged, at most [`MAX_LISTED`]).
pub async fn list(api: &Api<Pod>) -> Result<Vec<Pod>, kube::Error> {
    let mut pods = Vec::new();
    let mut params = ListParams::default().labels(&labels::selector()).limit(LIST_PAGE);
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        pods.extend(page.items);
        match next {
            Some(token) if pods.len() < MAX_LISTED => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(pods)
}

enum Outcome {
    Deleted,
    Gone,
    Refused,
}

/// Deletes each pod with a UID precondition, at most [`MAX_CONCURRENT_DELETES`] at once,
/// starting none after `deadline`.
pub async fn execute(
    api: &Api<Pod>,
    actions: &[PodAction],
    deadline: Option<Instant>,
) -> PodReport {
    let mut report = PodReport { planned: actions.len(), ..PodReport::default() };
    let mut tasks: JoinSet<Result<Outcome, PodReapError>> = JoinSet::new();
    let mut started = 0;
    for action in actions {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        while tasks.len() >= MAX_CONCURRENT_DELETES {
            if let Some(done) = tasks.join_next().await {
                count(&mut report, done);
            }
        }
        started += 1;
        let api = api.clone();
        let action = action.clone();
        // A child of the pass's span, named after what it does (`crate::trace`).
        let span = tracing::info_span!(
            "pod_delete",
            otel.name = "delete pod",
            pod = %action.name,
            agenda.id = &*action.agenda_id,
        );
        tasks.spawn(async move { delete(&api, &action).await }.instrument(span));
    }
    while let Some(done) = tasks.join_next().await {
        count(&mut report, done);
    }
    report.skipped = actions.len() - started;
    report
}

fn count(
    report: &mut PodReport,
    done: Result<Result<Outcome, PodReapError>, tokio::task::JoinError>,
) {
    match done {
        Ok(Ok(Outcome::Deleted)) => report.deleted += 1,
        Ok(Ok(Outcome::Gone)) => report.gone += 1,
        Ok(Ok(Outcome::Refused)) => report.refused += 1,
        Ok(Err(e)) => report.errors.push(e),
        Err(e) => report.errors.push(PodReapError::Task(e)),
    }
}

async fn delete(api: &Api<Pod>, action: &PodAction) -> Result<Outcome, PodReapError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(action.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&action.name, &params).await {
        Ok(_) => {
            tracing::info!(pod = %action.name, agenda = &*action.agenda_id, phase = %action.phase, finished = %action.finished, "pod reaper: deleted");
            Ok(Outcome::Deleted)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Outcome::Gone),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::info!(pod = %action.name, "pod reaper: the name belongs to a new pod now; left alone");
            Ok(Outcome::Refused)
        }
        Err(source) => Err(PodReapError::Delete { name: action.name.clone(), source }),
    }
}

/// The pod reaper as a [`TimedProcess`]: lists pop's pods, plans, deletes through the API.
pub struct PodReaper {
    api: Api<Pod>,
    config: PodReaperConfig,
}

impl std::fmt::Debug for PodReaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodReaper").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PodReaper {
    pub fn new(api: Api<Pod>, config: PodReaperConfig) -> PodReaper {
        PodReaper { api, config }
    }
}

#[async_trait::async_trait]
impl TimedProcess for PodReaper {
    type Action = PodAction;
    type Report = PodReport;

    fn name(&self) -> ProcessName {
        ProcessName::Pods
    }
    fn cadence(&self) -> Cadence {
        self.config.cadence
    }
    async fn plan(&mut self, now: Timestamp) -> Result<Vec<PodAction>, PodReport> {
        match list(&self.api).await {
            Ok(pods) => Ok(plan(now, &pods, &self.config)),
            Err(e) => {
                Err(PodReport { errors: vec![PodReapError::List(e)], ..PodReport::default() })
            }
        }
    }
    async fn execute(
        &mut self,
        _now: Timestamp,
        actions: Vec<PodAction>,
        deadline: Instant,
    ) -> PodReport {
        execute(&self.api, &actions, Some(deadline)).await
    }
    fn dry_run(&self, actions: &[PodAction]) -> PodReport {
        for a in actions {
            tracing::info!(pod = %a.name, agenda = &*a.agenda_id, phase = %a.phase, finished = %a.finished, "pod reaper (dry run): would delete");
        }
        PodReport { planned: actions.len(), skipped: actions.len(), ..PodReport::default() }
    }
}

impl CycleReport for PodReport {
    fn planned(&self) -> usize {
        self.planned
    }
    fn outcomes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("deleted", self.deleted),
            ("gone", self.gone),
            ("refused", self.refused),
            ("skipped", self.skipped),
        ]
    }
    fn errors(&self) -> Vec<String> {
        self.errors.iter().map(|e| pop_domain::error::ErrorChain(e).to_string()).collect()
    }
}
