//! The agenda use cases of a customer (DOMAIN.md §1, §6, §8): submit, run a template, rerun,
//! expand and cancel. Each is one domain command executed through `Commands` (never a direct
//! append, never a read-model update); this layer reads the clock (`App::now`: the wall
//! clock, never behind the store's last commit) and makes ids (UUID v7), checks the caller's
//! role and tenancy, and answers the agenda as the command left it with the global position
//! of its last event for read-your-writes.
//!
//! Tenancy on writes is checked against the write side (the aggregate loaded from its
//! stream), not the read models, so a just-written object is found even before the
//! projections have it; an object the caller may not see answers NOT_FOUND exactly like one
//! that does not exist.

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use pop_domain::agenda::key::check_own_id;
use pop_domain::agenda::{AgendaCommand, AgendaState, RerunFlags, key};
use pop_domain::binding::bind_among;
use pop_domain::model::{Agenda, AgendaInsight, Insight, Operation};
use pop_domain::params::Params;
use pop_domain::template::{may_use_template, run_customer, run_template};
use pop_domain::validate::{
    check_expansion_sizes, check_id, check_sizes, json_bytes, validate_agenda,
};
use pop_projections::{Phase, Visibility};
use pop_store::repeats::SharedRepeats;

use crate::caller::{Action, Caller};
use crate::error::{self, AppError, AppResult, Code};
use crate::limits::{MAX_AGENDAS_PER_REQUEST, MAX_REASON_LENGTH, MAX_RERUN_PARAMS};
use crate::outcome::AgendaOutcome;
use crate::resolve::Named;
use crate::{App, metadata, metrics};

/// Reads a POP JSON input named `field` into a domain value; a shape error is VALIDATION at
/// the exact path of the value that does not fit (`agenda.operations[1].type`).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(field: &str, value: Value) -> AppResult<T> {
    pop_domain::wire::from_json(field, value).map_err(|e| AppError::validation(field, e))
}

/// Refuses the id `fields` of a client's JSON object when they are blank strings. Leaving an
/// id out (or null) asks the server to generate it, as in POP; an empty string is a client's
/// bug that would otherwise be silently replaced by a generated id.
pub(crate) fn refuse_blank_ids(value: &Value, fields: &[&str]) -> AppResult<()> {
    for field in fields {
        if let Some(Value::String(id)) = value.get(*field)
            && id.trim().is_empty()
        {
            return Err(AppError::invalid(
                field,
                format!("{field} must not be empty; leave it out (or null) to have one generated"),
            ));
        }
    }
    Ok(())
}

/// The client-chosen ids of an agenda that must not be blank strings.
const AGENDA_IDS: &[&str] = &["id", "progressId"];

pub(crate) fn agenda_subject(id: &str) -> String {
    format!("agenda {id:?}")
}

impl App {
    /// A submission's refusal as the caller reads it ([`error::create_within`]); an id taken
    /// as the progress id of an agenda the data reaper has since deleted is said so: an id is
    /// never used twice (hostile14: "is already the progress id of agenda rp2" named an
    /// agenda that no longer existed, where the agenda's own reaped id said why).
    async fn refused_create(
        &self,
        customer: &str,
        subject: &str,
        root: &str,
        e: pop_store::ExecuteError<pop_domain::agenda::AgendaError>,
    ) -> AppError {
        if let pop_store::ExecuteError::Refused(
            pop_domain::agenda::AgendaError::ProgressIdTaken { agenda_id: owner, .. },
        ) = &e
        {
            let owner_key = key(customer, owner);
            if let Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted {
                ..
            })) = self.commands().load::<AgendaState>(&owner_key).await
            {
                return AppError::conflict(format!(
                    "{subject} was the progress id of agenda {owner:?}, since deleted (reaped): \
                     an id is never used twice; choose another"
                ));
            }
        }
        error::create_within(subject, root, e)
    }
}

impl App {
    /// Submits a POP agenda given as JSON (GraphQL `submitAgenda`, REST `POST agenda`): an
    /// object in POP's agenda shape. The server assigns `id` (unless given), `progressId` (the
    /// id, unless given), `cid`, times and the insight binding; `customerId` defaults to the
    /// caller's only customer. Nothing is stored when validation or binding fails.
    ///
    /// The submission's cid is `cid`, else the agenda's own `cid` field, else the request's.
    /// `at_least` (a position) makes the binding see config written just before (a customer or
    /// insight created by the same client on another replica).
    pub async fn submit(
        &self,
        caller: &Caller,
        agenda: Value,
        cid: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        let own = agenda.get("cid").and_then(Value::as_str).map(str::to_string);
        caller
            .run(Action::Submit, cid.or(own.as_deref()), async |caller| {
                self.settle(at_least).await?;
                if !agenda.is_object() {
                    return Err(AppError::invalid("agenda", "the agenda must be a JSON object"));
                }
                refuse_blank_ids(&agenda, AGENDA_IDS)?;
                self.refuse_past_quota(caller)?;
                // Unknown keys are ignored for POP's clients; one that is a misspelling is named
                // when the agenda is refused (newcomer61 M1: `"operatoins"` was refused as an
                // agenda without operations, not a word of the key).
                let misspelt = pop_domain::wire::misspelt_agenda_keys(&agenda);
                let heavy = large_input(&agenda);
                let ready = cpu_bound(heavy, || {
                    let agenda: Agenda = from_json("agenda", agenda)?;
                    self.ready_agenda(caller, agenda)
                });
                let (agenda, insight) = ready.map_err(|e| e.with_misspelt("agenda", &misspelt))?;
                self.commit(caller, agenda, insight, "agenda").await
            })
            .await
    }

    /// QUOTA_EXCEEDED, before a submission is read into agendas, checked or measured, when the
    /// caller acts for one customer that has no room for another agenda: a refused body of
    /// megabytes cost all of that first (hostile61 M1: a loop of them held every tenant's
    /// reads; its parse as JSON is paced per token by the API, `--max-upload-bytes-per-second`).
    fn refuse_past_quota(&self, caller: &Caller) -> AppResult<()> {
        match caller.principal.only_customer() {
            Some(customer) => self.check_quotas(customer, 1, 0),
            None => Ok(()),
        }
    }

    /// Runs template `template_id` (one the customer may use) with `payload` for the customer
    /// [`run_customer`] picks (`customer_id`, else the template agenda's, else the caller's
    /// only customer) and submits the result.
    pub async fn run_template(
        &self,
        caller: &Caller,
        template_id: &str,
        payload: Value,
        customer_id: Option<String>,
        cid: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        caller
            .run(Action::Submit, cid, async |caller| {
                self.settle(at_least).await?;
                let not_found = || AppError::not_found("agenda template", template_id);
                // A template none of the caller's customers may use answers as if it did not
                // exist.
                let template = {
                    let models = self.projections().read();
                    models
                        .template(template_id)
                        .filter(|t| match &caller.principal.customers {
                            Visibility::All => true,
                            Visibility::Customers(ids) => {
                                ids.iter().any(|c| may_use_template(t, c))
                            }
                        })
                        .cloned()
                }
                .ok_or_else(not_found)?;
                let customer = run_customer(
                    customer_id.as_deref(),
                    &template,
                    caller.principal.only_customer(),
                    |c| caller.principal.sees(c),
                )
                .map_err(|e| AppError::validation("the template run", e))?;
                if !caller.principal.sees(&customer) {
                    return Err(AppError::forbidden(format!(
                        "principal {:?} may not submit agendas for customer {customer:?}",
                        caller.principal.name
                    )));
                }
                if !may_use_template(&template, &customer) {
                    return Err(not_found());
                }
                let agenda = run_template(&template, &payload, &customer).map_err(|e| {
                    AppError::validation(
                        &format!("agenda template {template_id:?} run with this payload"),
                        e,
                    )
                })?;
                self.submit_agenda(caller, agenda).await
            })
            .await
    }

    /// Reruns the agenda `agenda` names with POP's rerun params (DOMAIN.md §8): `resetAll`,
    /// `continue`, `skipExecution`, `operationsToReset=a,b`; none means `resetAll`.
    pub async fn rerun(
        &self,
        caller: &Caller,
        agenda: Named<'_>,
        params: Vec<String>,
        cid: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        caller
            .run(Action::Rerun, cid, async |caller| {
                if params.len() > MAX_RERUN_PARAMS {
                    return Err(AppError::invalid(
                        "params",
                        format!("at most {MAX_RERUN_PARAMS} rerun params"),
                    ));
                }
                let flags = RerunFlags::parse(&params).map_err(|e| {
                    AppError::validation(&format!("rerun of agenda {:?}", agenda.id), e)
                })?;
                let command = AgendaCommand::Rerun { flags, now: self.now() };
                self.on_agenda(caller, "rerunAgenda", agenda, command).await
            })
            .await
    }

    /// Appends `operations` (POP JSON) to the agenda `agenda` names, validated like a submission
    /// against the existing ones, and merges `params` into its params.
    pub async fn expand(
        &self,
        caller: &Caller,
        agenda: Named<'_>,
        operations: Value,
        params: Option<Value>,
        cid: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        caller
            .run(Action::Expand, cid, async |caller| {
                let operations: Vec<Operation> = from_json("operations", operations)?;
                let params: Params = match params.filter(|p| !p.is_null()) {
                    None => Params::new(),
                    Some(p) => from_json("params", p)?,
                };
                check_expansion_sizes(&operations, &params, self.config().size_limits())
                    .map_err(|e| AppError::validation("the expansion", e))?;
                let command = AgendaCommand::Expand { operations, params, now: self.now() };
                self.on_agenda(caller, "expandAgenda", agenda.for_work(), command).await
            })
            .await
    }

    /// Cancels a non-complete agenda (COMPLETE/cancelled), or a failed one with attempts left
    /// (withdrawing its retry); executors' later reports are refused.
    pub async fn cancel(
        &self,
        caller: &Caller,
        agenda: Named<'_>,
        reason: Option<String>,
        cid: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        caller
            .run(Action::Cancel, cid, async |caller| {
                if let Some(why) = reason
                    .as_deref()
                    .and_then(|r| pop_domain::validate::check_text(r, MAX_REASON_LENGTH).err())
                {
                    return Err(AppError::invalid("reason", format!("the reason {why}")));
                }
                let said = reason.clone().unwrap_or_default();
                let command = AgendaCommand::Cancel { reason, now: self.now() };
                let outcome = self.on_agenda(caller, "cancelAgenda", agenda, command).await?;
                // Said as a claim and a completion are (ops3am14: a storm's cancels left the
                // log promising retries that never came).
                if outcome.position.is_some() {
                    let p = outcome.progress();
                    tracing::info!(target: "pop::agendas", agenda = &*pop_domain::agenda::key::key(&p.customer_id, &p.agenda_id), by = &*caller.principal.name, cid = &*caller.cid, reason = &*said, "cancelled: it runs no more and no retry follows");
                }
                Ok(outcome)
            })
            .await
    }

    /// Submits `agenda`: [`App::prepare`] then executes `Submit`.
    async fn submit_agenda(&self, caller: &Caller, agenda: Agenda) -> AppResult<AgendaOutcome> {
        let (agenda, insight) = self.ready_agenda(caller, agenda)?;
        self.commit(caller, agenda, insight, "agenda").await
    }

    /// A submission readied ([`Self::prepare`]) and measured against the store's bound and the
    /// customer's quotas, nothing written: synchronous, so a large one runs off the async
    /// workers ([`cpu_bound`]).
    fn ready_agenda(&self, caller: &Caller, agenda: Agenda) -> AppResult<(Agenda, AgendaInsight)> {
        let (agenda, insight) = self.prepare(caller, agenda, "agenda")?;
        let bytes = json_bytes(&agenda);
        check_storable(&agenda, &insight, bytes, "agenda")?;
        self.check_quotas(&agenda.customer_id, 1, bytes as u64)?;
        Ok((agenda, insight))
    }

    /// QUOTA_EXCEEDED when `adding` more live (not COMPLETE) agendas of `adding_bytes` (their
    /// definitions as JSON) would take `customer` past
    /// [`crate::AppConfig::max_live_agendas_per_customer`] or
    /// [`crate::AppConfig::max_live_bytes_per_customer`], or when its finished agendas hold
    /// past [`crate::AppConfig::max_retained_bytes_per_customer`]
    /// ([`App::check_retained_quota`]). Counted from the read models (constant time per
    /// customer), so submits at once (requests in flight together, on one replica or several)
    /// may pass it by the few the projections have not applied yet: a bound on memory, not an
    /// exact count. A batched GraphQL POST runs its operations in turn (`pop_api`'s
    /// `execute_in_order`), so one body does not.
    fn check_quotas(&self, customer: &str, adding: usize, adding_bytes: u64) -> AppResult<()> {
        let config = self.config();
        let visibility = Visibility::from_ids([customer]);
        let (counts, bytes, retained, log) = {
            let models = self.projections().read();
            let agendas = models.agendas();
            (
                agendas.phase_counts(&visibility),
                agendas.live_bytes(&visibility),
                agendas.retained_bytes(&visibility),
                agendas.log_bytes(&visibility),
            )
        };
        let live: usize =
            Phase::ALL.iter().filter(|p| p.is_live()).map(|p| counts[p.index()]).sum();
        let max = config.max_live_agendas_per_customer;
        if live.saturating_add(adding) > max {
            return Err(AppError::new(
                Code::QuotaExceeded,
                format!(
                    "customer {customer:?} has {live} live agendas and may have at most {max} (its quota); submit again when some have finished"
                ),
            ));
        }
        let max = config.max_live_bytes_per_customer;
        if bytes.saturating_add(adding_bytes) > max {
            return Err(AppError::new(
                Code::QuotaExceeded,
                format!(
                    "customer {customer:?} has live agendas of {bytes} bytes and may have at most {max} (its quota); these would add {adding_bytes}: submit again when some have finished"
                ),
            ));
        }
        self.check_retained_quota(customer, retained)?;
        self.check_log_quota(customer, log, adding_bytes)
    }

    /// QUOTA_EXCEEDED when `customer`'s agendas take `bytes` of the log, past
    /// [`crate::AppConfig::max_log_bytes_per_customer`] (hostile57 H2: the memory quotas count
    /// finished agendas compressed, and one token wrote 139 MB of log in 21 s with agendas of
    /// compressible payloads cancelled at once). New agendas and reruns are refused; what
    /// is taken frees as the data reaper deletes finished agendas' streams. Reports to live
    /// agendas still append, so the live ones finish. For the operator, a WARN line at most
    /// every 10 s.
    /// `adding`: what the request's agendas add (their definitions; reprobe58 L1: counted
    /// only once stored, a customer with room for one byte stored 8 MiB at once).
    fn check_log_quota(&self, customer: &str, bytes: u64, adding: u64) -> AppResult<()> {
        let max = self.config().max_log_bytes_per_customer;
        if bytes.saturating_add(adding) <= max {
            return Ok(());
        }
        static PAST: SharedRepeats = SharedRepeats::new(pop_store::repeats::EVERY, 1);
        let said = PAST.say_now();
        if let Some(unsaid) = said {
            tracing::warn!(target: "pop::agendas", customer, log_bytes = bytes, quota = max, unsaid, "a customer's agendas take more of the log than its quota: its new agendas are refused until the data reaper removes some");
        }
        Err(AppError::new(
            Code::QuotaExceeded,
            format!(
                "customer {customer:?}'s agendas take {bytes} bytes of the log and may take at \
                 most {max} (its quota, the server's --max-log-bytes-per-customer); these would \
                 add {adding}: submit or rerun again as the data reaper removes finished ones \
                 (older than its --agenda-reap-age, a batch a cycle)"
            ),
        ))
    }

    /// QUOTA_EXCEEDED when `customer`'s finished agendas hold `bytes`, past
    /// [`crate::AppConfig::max_retained_bytes_per_customer`], in memory (hostile42 H2: finished
    /// agendas grew the server by 77 MB in 65 s, every one within the live quota). New agendas
    /// and reruns are refused, and due retries wait (`pop_reapers::retry::MemoryQuotas`): a
    /// rerun makes a finished agenda live, and what its reports then keep it holds when it
    /// finishes again (hostile50 H1: reruns refilled finished agendas to 4.8 times the quota).
    /// What is held frees as the data reaper removes finished agendas. Checked against what
    /// has finished, so a customer may pass it by what its live agendas keep when they finish;
    /// past twice it their reports keep nothing new ([`App::over_memory_quota`]). For the
    /// operator, a WARN line at most every 10 s.
    fn check_retained_quota(&self, customer: &str, bytes: u64) -> AppResult<()> {
        let max = self.config().max_retained_bytes_per_customer;
        if bytes <= max {
            return Ok(());
        }
        static PAST: SharedRepeats = SharedRepeats::new(pop_store::repeats::EVERY, 1);
        let said = PAST.say_now();
        if let Some(unsaid) = said {
            tracing::warn!(target: "pop::agendas", customer, retained_bytes = bytes, quota = max, unsaid, "a customer's finished agendas hold more than its retained quota: its new agendas are refused until the data reaper removes some");
        }
        Err(AppError::new(
            Code::QuotaExceeded,
            format!(
                "customer {customer:?}'s finished agendas hold {bytes} bytes in the server's \
                 memory and may hold at most {max} (its quota, the server's \
                 --max-retained-bytes-per-customer): submit or rerun again as the data reaper \
                 removes them (finished agendas older than its --agenda-reap-age, a batch a \
                 cycle)"
            ),
        ))
    }

    /// Why reports to `customer`'s agendas keep nothing new (no result, params, diagnostic or
    /// free-text message), when its live agendas hold past twice its memory quota
    /// ([`crate::AppConfig::max_live_bytes_per_customer`]; `ProgressReport::over_quota`), or
    /// `None`. Past the quota itself only new agendas are refused: the live ones still finish,
    /// and finished they free what they held. Past twice it, what reports add is bounded too
    /// (hostile40 M2: one live agenda's results grew the server by 360 MB). The same when its
    /// finished agendas hold past twice [`crate::AppConfig::max_retained_bytes_per_customer`]:
    /// that quota is checked when an agenda is admitted, and 1,000 tiny agendas admitted at 0
    /// then finished with 500 KB results each took a customer to 25 times it (hostile51). The
    /// finished agendas alone (review-s50c: adding live JSON to compressed finished bytes put a
    /// customer with nothing finished there whenever the retained quota was under twice the
    /// live one).
    pub(crate) fn over_memory_quota(&self, customer: &str) -> Option<String> {
        self.report_quotas(customer).0
    }

    /// What a report to `customer`'s agenda is held to: why it keeps nothing new
    /// ([`App::over_memory_quota`]) and whether it is past the log quota
    /// ([`App::past_log_quota`]), from one read of the models (a report asked twice, each
    /// building its own visibility).
    pub(crate) fn report_quotas(&self, customer: &str) -> (Option<String>, bool) {
        let (live, retained, log) = {
            let models = self.projections().read();
            let agendas = models.agendas();
            let visibility = Visibility::from_ids([customer]);
            (
                agendas.live_bytes(&visibility),
                agendas.retained_bytes(&visibility),
                agendas.log_bytes(&visibility),
            )
        };
        (self.over_memory_quota_at(customer, live, retained), self.past_log_quota_at(customer, log))
    }

    /// [`App::over_memory_quota`] of a customer whose agendas hold `live` and `retained` bytes.
    fn over_memory_quota_at(&self, customer: &str, live: u64, retained: u64) -> Option<String> {
        let config = self.config();
        let (max_live, max_retained) =
            (config.max_live_bytes_per_customer, config.max_retained_bytes_per_customer);
        // Said without the figure it holds now, which moves: the same report sent again then
        // makes the same diagnostic, kept once.
        let (quota, why) = if live > max_live.saturating_mul(2) {
            let why = format!(
                "customer {customer:?}'s live agendas hold more than twice its quota of \
                 {max_live} bytes (definitions and what reports keep: results, params, \
                 diagnostics, messages; the server's --max-live-bytes-per-customer); it frees as \
                 its agendas finish"
            );
            ("live", why)
        } else if retained > max_retained.saturating_mul(2) {
            let why = format!(
                "customer {customer:?}'s finished agendas hold more than twice its quota of \
                 {max_retained} bytes for them (the server's \
                 --max-retained-bytes-per-customer); it frees as the data reaper removes \
                 finished agendas older than its --agenda-reap-age"
            );
            ("retained", why)
        } else {
            return None;
        };
        // For the operator too, at most a line per 10 s (review-s49c: a customer got there with
        // nothing in the log).
        static PAST: SharedRepeats = SharedRepeats::new(pop_store::repeats::EVERY, 1);
        let said = PAST.say_now();
        if let Some(unsaid) = said {
            tracing::warn!(target: "pop::agendas", customer, quota, live_bytes = live, retained_bytes = retained, max_live, max_retained, unsaid, "a customer's agendas hold more than twice a memory quota: its reports keep nothing new until some finish or are reaped");
        }
        Some(why)
    }

    /// Whether `customer`'s agendas take more of the log than its quota
    /// ([`crate::AppConfig::max_log_bytes_per_customer`]; `ProgressReport::log_quota_passed`):
    /// its reports that move nothing are then written at most once per fifth of the lease
    /// (reprobe58 M2: a token holding a live agenda wrote 4.5 MB of reports in 10 s past the
    /// quota). What moves an agenda is written, so its live agendas still finish. For the
    /// operator, a WARN line at most every 10 s.
    pub(crate) fn past_log_quota(&self, customer: &str) -> bool {
        let bytes =
            self.projections().read().agendas().log_bytes(&Visibility::from_ids([customer]));
        self.past_log_quota_at(customer, bytes)
    }

    /// [`App::past_log_quota`] of a customer whose agendas take `bytes` of the log (read with
    /// its other figures under one lock by a report: `App::report_quotas`).
    fn past_log_quota_at(&self, customer: &str, bytes: u64) -> bool {
        let max = self.config().max_log_bytes_per_customer;
        if bytes <= max {
            return false;
        }
        static PAST: SharedRepeats = SharedRepeats::new(pop_store::repeats::EVERY, 1);
        if let Some(unsaid) = PAST.say_now() {
            tracing::warn!(target: "pop::agendas", customer, log_bytes = bytes, quota = max, unsaid, "a customer's agendas take more of the log than its quota: its reports that change no state are written at most once per fifth of a lease until the data reaper removes some");
        }
        true
    }

    /// QUOTA_EXCEEDED when an expansion of `adding` bytes would take `customer`'s live agendas
    /// past twice its memory quota, or its finished agendas hold more than twice their own
    /// ([`App::over_memory_quota`]'s bounds).
    fn check_expansion_quota(&self, customer: &str, adding: u64) -> AppResult<()> {
        // Where a report adding operations is refused (review-s50c M2: an expansion still
        // added them past twice the retained quota), said as it says it.
        if let Some(why) = self.over_memory_quota(customer) {
            return Err(AppError::new(Code::QuotaExceeded, why));
        }
        // Past the log quota too, as a submission (hostile60b M2: expansions of 100 KB wrote
        // 0.95 MB/s of log past a 200 KB quota, bounded only by the memory quota).
        let (bytes, log) = {
            let models = self.projections().read();
            let visibility = Visibility::from_ids([customer]);
            (models.agendas().live_bytes(&visibility), models.agendas().log_bytes(&visibility))
        };
        self.check_log_quota(customer, log, adding)?;
        let max = self.config().max_live_bytes_per_customer;
        if bytes.saturating_add(adding) > max.saturating_mul(2) {
            return Err(AppError::new(
                Code::QuotaExceeded,
                format!(
                    "customer {customer:?}'s live agendas hold {bytes} bytes; this expansion of \
                     {adding} would take them past twice its quota of {max} (the server's \
                     --max-live-bytes-per-customer): expand again when some agendas have \
                     finished"
                ),
            ));
        }
        Ok(())
    }

    /// Readies a submission without writing anything: fills the customer (the caller's only
    /// one) and the ids (`id` generated when blank, `progressId` the id unless given), checks
    /// the caller may act for the customer, validates the agenda (DOMAIN.md §2, §5) and binds
    /// it to an insight from the read models (§6). Validation problems name their fields inside
    /// `root`, the agenda's name in the request (`agenda`; empty for an element of a list, which
    /// the caller places).
    fn prepare(
        &self,
        caller: &Caller,
        mut agenda: Agenda,
        root: &str,
    ) -> AppResult<(Agenda, AgendaInsight)> {
        if agenda.customer_id.trim().is_empty()
            && let Some(only) = caller.principal.only_customer()
        {
            agenda.customer_id = only.to_string();
        }
        let customer_id = agenda.customer_id.clone();
        if !customer_id.trim().is_empty() && !caller.principal.sees(&customer_id) {
            return Err(AppError::forbidden(format!(
                "principal {:?} may not submit agendas for customer {customer_id:?}",
                caller.principal.name
            )));
        }
        let generated = agenda.id.trim().is_empty();
        if generated {
            agenda.id = Uuid::now_v7().to_string();
        }
        check_id("id", &agenda.id)?;
        check_own_id("id", &agenda.id)?;
        if agenda.progress_id.as_deref().is_none_or(|p| p.trim().is_empty()) {
            // The common case: the read models key progress by agenda id at no extra cost.
            agenda.progress_id = Some(agenda.id.clone());
        }
        if let Some(p) = &agenda.progress_id {
            check_id("progressId", p)?;
            check_own_id("progressId", p)?;
        }
        agenda.cid = Some(caller.cid.clone());
        // Server-assigned: binding, and times (set by the domain from `now`).
        agenda.agenda_insight = None;
        agenda.added_time = None;
        agenda.updated_time = None;
        // An id made up here names nothing the caller knows (popclient21).
        let subject = if generated { "the agenda".to_string() } else { agenda_subject(&agenda.id) };
        validate_agenda(&agenda).map_err(|e| AppError::validation(&subject, e.within(root)))?;
        check_sizes(&agenda, self.config().size_limits())
            .map_err(|e| AppError::validation(&subject, e.within(root)))?;
        let insight = self.bound(&agenda).map_err(|e| error::binding_within(root, &e))?;
        Ok((agenda, insight))
    }

    /// The insight `agenda` binds to on the read models as they are: one of its customer's
    /// pool that it may use ([`bind_among`]).
    fn bound(&self, agenda: &Agenda) -> Result<AgendaInsight, pop_domain::binding::BindingError> {
        let models = self.projections().read();
        let customer = models.customer(&agenda.customer_id);
        let pool = customer.and_then(|c| c.resource_pool_id.clone()).unwrap_or_default();
        let insights: Vec<&Insight> =
            models.all_insights().filter(|i| i.resource_pool_id == pool).collect();
        bind_among(agenda, customer, &insights)
    }

    /// Executes `Submit` for a prepared agenda (`root` as for [`App::prepare`]).
    async fn commit(
        &self,
        caller: &Caller,
        agenda: Agenda,
        insight: AgendaInsight,
        root: &str,
    ) -> AppResult<AgendaOutcome> {
        let subject = agenda_subject(&agenda.id);
        // Not while an update that may hand the insight's agendas to other workers is between
        // its check and its append (`App::insight_gate`), and bound on the insight as it is
        // once such an update is applied: prepared on models from before it, the binding is
        // checked again here (reprobe58b M1: one bound on the old insight was appended just
        // after the update and handed to the workers it brought).
        let _gate = self.insight_gate(&insight.insight_id).read_owned().await;
        let bound_now = self.bound(&agenda);
        // Its customer deleted meanwhile: said as a submission for it is.
        if let Err(e) = &bound_now
            && self.projections().read().customer(&agenda.customer_id).is_none()
        {
            return Err(error::binding_within(root, e));
        }
        if bound_now.as_ref().ok() != Some(&insight) {
            return Err(AppError::conflict(format!(
                "{subject}: insight {:?} changed while the agenda was being submitted (its \
                 owner, pool or share); nothing was written: submit it again",
                insight.insight_id
            )));
        }
        let metadata = metadata(caller, &agenda.customer_id, "submitAgenda");
        let now = self.now();
        // A progress id of its own is taken first, on the stream of that name: within the
        // customer it can then be no other agenda's id or progress id (see `agenda::key`).
        if let Some(progress_id) = agenda.progress_id.as_deref().filter(|p| *p != agenda.id) {
            let command = AgendaCommand::TakeProgressId { agenda_id: agenda.id.clone(), now };
            let taken = self
                .commands()
                .execute::<AgendaState>(&key(&agenda.customer_id, progress_id), &metadata, &command)
                .await;
            if let Err(e) = taken {
                let subject = format!("progress id {progress_id:?}");
                return Err(self.refused_create(&agenda.customer_id, &subject, root, e).await);
            }
        }
        let stream_key = key(&agenda.customer_id, &agenda.id);
        let do_not_run = agenda.params.contains(pop_domain::params::keys::DO_NOT_RUN);
        let insight_id = insight.insight_id.clone();
        let customer = agenda.customer_id.clone();
        let command = AgendaCommand::Submit { agenda, insight, now };
        // A worker of this replica waits for the insight and nothing else is in line: the
        // submission hands its agenda over in its own write (`crate::handout`).
        let waiter =
            if do_not_run { None } else { self.handout_waiter(&insight_id, &customer).await };
        let executed = match waiter {
            Some(waiter) => {
                self.submit_handing_out(stream_key.clone(), insight_id, metadata, command, waiter)
                    .await
            }
            None => self.commands().execute::<AgendaState>(&stream_key, &metadata, &command).await,
        };
        metrics::command("submitAgenda", &executed);
        let executed = match executed {
            Ok(executed) => executed,
            Err(e) => return Err(self.refused_create(&customer, &subject, root, e).await),
        };
        let outcome = AgendaOutcome::of(&executed, caller);
        // One line per agenda lifecycle step for operators (`RUST_LOG=info,pop::agendas::flow=warn`
        // quiets submissions and claims).
        tracing::info!(target: "pop::agendas::flow", agenda = &*stream_key, by = &*caller.principal.name, cid = &*caller.cid, "submitted");
        Ok(outcome)
    }

    /// Submits several agendas (POP's `createAgenda {"agendas": [...]}`), at most
    /// [`MAX_AGENDAS_PER_REQUEST`]. Every one is read, validated, bound and decided against
    /// its streams as they stand before any is written ([`App::check_new`]: an id repeated in
    /// the list, or one that exists already), so a mistake in one (named `agendas[i].…`)
    /// stores none. They are then written in order. Only a failure of the store, or another
    /// writer taking one of the ids in between, can still stop the list part way: the answer
    /// then names that agenda, and the ones before it are written.
    pub async fn submit_many(
        &self,
        caller: &Caller,
        agendas: Vec<Value>,
        cid: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<Vec<AgendaOutcome>> {
        caller
            .run(Action::Submit, cid, async |caller| {
                if agendas.is_empty() || agendas.len() > MAX_AGENDAS_PER_REQUEST {
                    return Err(AppError::invalid(
                        "agendas",
                        format!(
                            "give 1 to {MAX_AGENDAS_PER_REQUEST} agendas, not {}",
                            agendas.len()
                        ),
                    ));
                }
                self.settle(at_least).await?;
                self.refuse_past_quota(caller)?;
                let heavy = large_input(&agendas);
                let (prepared, callers) = cpu_bound(heavy, || self.ready_many(caller, agendas))?;
                self.check_new(&prepared).await?;
                let mut done = Vec::with_capacity(prepared.len());
                for (i, ((agenda, insight), caller)) in
                    prepared.into_iter().zip(&callers).enumerate()
                {
                    let outcome = self
                        .commit(caller, agenda, insight, "")
                        .await
                        .map_err(|e| e.within(&format!("agendas[{i}]")))?;
                    done.push(outcome);
                }
                Ok(done)
            })
            .await
    }

    /// The agendas of a batch readied and measured as [`Self::ready_agenda`] does one, with each
    /// one's caller (its own `cid`); every agenda's problems when any is refused.
    #[allow(clippy::type_complexity)]
    fn ready_many(
        &self,
        caller: &Caller,
        agendas: Vec<Value>,
    ) -> AppResult<(Vec<(Agenda, AgendaInsight)>, Vec<Caller>)> {
        let mut prepared = Vec::with_capacity(agendas.len());
        // Each agenda's own `cid` is its correlation id (POP's createAgenda request has
        // none of its own; POP kept each agenda's and handed it to the executor).
        let mut callers = Vec::with_capacity(agendas.len());
        // Every agenda's problems, not only the first invalid one's (popclient21: a
        // list was fixed one agenda per round trip).
        let mut refused = Vec::new();
        for (i, value) in agendas.into_iter().enumerate() {
            let misspelt = pop_domain::wire::misspelt_agenda_keys(&value);
            let at = |e: AppError| e.with_misspelt("", &misspelt).within(&format!("agendas[{i}]"));
            let read = || {
                if !value.is_object() {
                    return Err(AppError::invalid("", "the agenda must be a JSON object"));
                }
                // Fields are named inside the element: `agendas[i].operations[1].type`.
                refuse_blank_ids(&value, AGENDA_IDS)?;
                // Fields inside the element, the object "the agenda" (popclient25:
                // "agendas[0]:  is invalid: id: …" named nothing).
                let agenda: Agenda = pop_domain::wire::from_json("", value)
                    .map_err(|e| AppError::validation("the agenda", e))?;
                let own = caller.with_cid(agenda.cid.as_deref())?;
                Ok((self.prepare(&own, agenda, "")?, own))
            };
            match read() {
                Ok((agenda, own)) => {
                    prepared.push(agenda);
                    callers.push(own);
                }
                Err(e) => refused.push(at(e)),
            }
        }
        if !refused.is_empty() {
            return Err(AppError::of_list(refused));
        }
        let mut per_customer: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
        for (i, (agenda, insight)) in prepared.iter().enumerate() {
            let bytes = json_bytes(agenda);
            check_storable(agenda, insight, bytes, "")
                .map_err(|e| e.within(&format!("agendas[{i}]")))?;
            let adding = per_customer.entry(agenda.customer_id.as_str()).or_default();
            adding.0 += 1;
            adding.1 += bytes as u64;
        }
        for (customer, (adding, bytes)) in per_customer {
            self.check_quotas(customer, adding, bytes)?;
        }
        Ok((prepared, callers))
    }

    /// Decides every prepared agenda's writes on its streams as they stand now, without
    /// writing: the same answers [`App::commit`] would give (CONFLICT for an id that exists,
    /// NOT_FOUND for one reaped), and VALIDATION for an id or progress id that two agendas of
    /// the list share. Each answer names `agendas[i]`.
    async fn check_new(&self, prepared: &[(Agenda, AgendaInsight)]) -> AppResult<()> {
        use pop_domain::Aggregate as _;
        let now = self.now();
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        for (i, (agenda, insight)) in prepared.iter().enumerate() {
            let at = |e: AppError| e.within(&format!("agendas[{i}]"));
            let customer = agenda.customer_id.as_str();
            let progress = agenda.progress_id.as_deref().filter(|p| *p != agenda.id);
            let own = [("id", Some(agenda.id.as_str())), ("progressId", progress)];
            for (field, id) in own.into_iter().filter_map(|(f, id)| Some((f, id?))) {
                if let Some(j) = seen.insert(key(customer, id), i) {
                    return Err(AppError::invalid(
                        &format!("agendas[{i}].{field}"),
                        format!("{id:?} is also the id or progress id of agendas[{j}]"),
                    ));
                }
            }
            if let Some(progress_id) = progress {
                let subject = format!("progress id {progress_id:?}");
                let (state, _) = self
                    .commands()
                    .load::<AgendaState>(&key(customer, progress_id))
                    .await
                    .map_err(|e| at(error::create_within(&subject, "", e)))?;
                let command = AgendaCommand::TakeProgressId { agenda_id: agenda.id.clone(), now };
                state.decide(&command).map_err(|e| {
                    at(error::execute_within(&subject, "", pop_store::ExecuteError::Refused(e)))
                })?;
            }
            let subject = agenda_subject(&agenda.id);
            let (state, _) = self
                .commands()
                .load::<AgendaState>(&key(customer, &agenda.id))
                .await
                .map_err(|e| at(error::create_within(&subject, "", e)))?;
            let command =
                AgendaCommand::Submit { agenda: agenda.clone(), insight: insight.clone(), now };
            state.decide(&command).map_err(|e| {
                at(error::execute_within(&subject, "", pop_store::ExecuteError::Refused(e)))
            })?;
        }
        Ok(())
    }

    /// Runs `command` on the agenda `named` names if the caller may act on it (NOT_FOUND
    /// otherwise; see [`crate::resolve`]).
    pub(crate) async fn on_agenda(
        &self,
        caller: &Caller,
        name: &'static str,
        named: Named<'_>,
        command: AgendaCommand,
    ) -> AppResult<AgendaOutcome> {
        self.on_agenda_within(caller, name, named, command, "").await
    }

    /// [`Self::on_agenda`] for a command read from the request's object `root`: validation
    /// problems name their fields inside it (`agendaProgress.operationProgress[0].operation`).
    pub(crate) async fn on_agenda_within(
        &self,
        caller: &Caller,
        name: &'static str,
        named: Named<'_>,
        command: AgendaCommand,
        root: &str,
    ) -> AppResult<AgendaOutcome> {
        let key = self.resolve(caller, named).await?;
        self.on_key(caller, name, named.id, &key, command, root).await
    }

    /// Runs `command` on the agenda keyed `key` (named `id` in errors) if the caller may act on
    /// it.
    pub(crate) async fn on_key(
        &self,
        caller: &Caller,
        name: &'static str,
        id: &str,
        key: &str,
        command: AgendaCommand,
        root: &str,
    ) -> AppResult<AgendaOutcome> {
        let late_report = matches!(command, AgendaCommand::ReportProgress { .. });
        let customer_id = self.authorized_customer_for(caller, id, key, late_report).await?;
        // Past its customer's log quota a hand-back is refused: each is an event, and
        // hand-backs and claims in a loop wrote 44 KB/s past a 200 KB quota from four agendas
        // (hostile60b M2). The worker lets the lease run out instead (the reclaimer requeues
        // it) or finishes the agenda. Asked once the caller is known to act on the agenda
        // (review61 M1: asked before, a worker of one tenant that named another's customer
        // learnt whether it was past its quota, of an agenda that did not even exist).
        if matches!(command, AgendaCommand::Release { .. }) && self.past_log_quota(&customer_id) {
            return Err(AppError::new(
                Code::QuotaExceeded,
                "the agenda's customer takes more of the log than its quota (the server's \
                 --max-log-bytes-per-customer): a hand-back is not written now; finish the \
                 agenda, or let its lease run out and the reclaimer requeues it",
            ));
        }
        // An expansion adds to a live agenda's definition: counted against the customer's
        // memory quota (hostile41 H2: 68 times the quota by expansions). Past twice it, as what
        // reports add: a running generator still expands its agenda past the quota itself,
        // where only new agendas are refused (review-s49b).
        // One that adds nothing, or to a finished agenda, is the domain's to answer: it changes
        // nothing, or is refused as illegal for a COMPLETE agenda (review-s51 L2: past twice
        // the retained quota, the expansion of a finished agenda said QUOTA_EXCEEDED). Read
        // from its stream only when the quota refuses.
        if let AgendaCommand::Expand { operations, params, .. } = &command
            && !(operations.is_empty() && params.is_empty())
        {
            let bytes = pop_domain::validate::json_bytes(operations)
                + pop_domain::validate::json_bytes(params);
            if let Err(refused) = self.check_expansion_quota(&customer_id, bytes as u64) {
                use pop_domain::aggregate::Aggregate as _;
                // Answered from the state read, never executed: a rerun in between would
                // otherwise let the expansion past the quota (review54 L3).
                let decided = match self.commands().load::<AgendaState>(key).await {
                    Ok((state, _)) if state.is_complete() => state.decide(&command).err(),
                    _ => None,
                };
                return Err(match decided {
                    Some(e) => error::execute_within(
                        &agenda_subject(id),
                        root,
                        pop_store::ExecuteError::Refused(e),
                    ),
                    None => refused,
                });
            }
        }
        let mut _gate = None;
        if matches!(command, AgendaCommand::Rerun { .. }) {
            // A rerun makes a finished agenda live again, what it kept included: refused past
            // the customer's quotas as a submission is (hostile42 M1: 13 reruns took a customer
            // from 27 to 53 times its live quota; hostile50 H1: reruns refilled finished
            // agendas to 4.8 times the retained quota).
            self.check_quotas(&customer_id, 1, 0)?;
            // Ordered against an update that may hand the insight's agendas over, as a
            // submission is (`App::insight_gate`).
            let insight = self
                .projections()
                .read()
                .agendas()
                .get(key)
                .and_then(|e| e.insight_id().map(str::to_string));
            if let Some(insight) = insight {
                _gate = Some(self.insight_gate(&insight).read_owned().await);
            }
            self.check_insight_takes(id, key)?;
        }
        let executed = self
            .commands()
            .execute::<AgendaState>(key, &metadata(caller, &customer_id, name), &command)
            .await;
        metrics::command(name, &executed);
        let executed = executed.map_err(|e| error::execute_within(&agenda_subject(id), root, e))?;
        Ok(AgendaOutcome::of(&executed, caller))
    }
}

impl App {
    /// A rerun runs an agenda on the insight it is bound to: only while that insight exists
    /// and still takes the agenda's customer. Deleted, the rerun would wait for good
    /// (popclient26: answered 200, it stayed WAITING/added); re-created under its id by another
    /// customer, the rerun handed the agenda, its payloads, to that customer's workers, which
    /// reported it done (hostile38); no longer shared with the customer, it ran on the owner's
    /// workers though new submissions are refused. Each refused, saying what to do.
    fn check_insight_takes(&self, id: &str, key: &str) -> AppResult<()> {
        let models = self.projections().read();
        let Some(entry) = models.agendas().get(key) else { return Ok(()) };
        let Some(insight_id) = entry.insight_id() else { return Ok(()) };
        let customer = entry.customer_id();
        // Its customer deleted (its finished agendas stay until reaped): a rerun would make a
        // live agenda of a customer that is gone (popclient60 M1: reruns were taken).
        if models.customer(customer).is_none() {
            return Err(AppError::conflict(format!(
                "agenda {id:?} belongs to customer {customer:?}, which was deleted: it is kept \
                 as a record until the data reaper removes it, and is not run again"
            )));
        }
        // On the pool it was bound on: moved to another, its workers would take the rerun,
        // where a new submission of the agenda could not go (reprobe58b M2: an agenda cancelled
        // before a move, rerun after it, went to the new pool's workers).
        let bound_pool = entry.progress().ok().and_then(|p| p.agenda_insight.clone());
        let same_pool = |i: &Insight| {
            bound_pool.as_ref().is_none_or(|b| b.resource_pool_id == i.resource_pool_id)
        };
        if models.insight_takes(insight_id, customer)
            && models.insight(insight_id).is_some_and(same_pool)
        {
            return Ok(());
        }
        let why = match models.insight(insight_id) {
            None => "which was deleted",
            Some(i) if !same_pool(i) => "which moved to another resource pool",
            Some(_) => {
                "which no longer takes its customer's agendas (or is another customer's now)"
            }
        };
        Err(AppError::conflict(format!(
            "agenda {id:?} is bound to insight {insight_id:?}, {why}: a rerun would not run \
             where it was submitted to; submit the agenda anew (a new id) to bind it to an \
             insight its customer {customer:?} may use"
        )))
    }
}

/// Requests at least this large as JSON are readied off the async workers ([`cpu_bound`]).
const LARGE_INPUT_BYTES: usize = 256 << 10;

/// Whether `input` takes at least [`LARGE_INPUT_BYTES`] as JSON (counted only that far).
fn large_input(input: &impl serde::Serialize) -> bool {
    pop_domain::validate::json_bytes_within(input, LARGE_INPUT_BYTES).is_none()
}

/// Runs `work`, which does not yield, so that it does not hold an async worker other requests
/// need: when `heavy`, on a multi-threaded runtime, inside `block_in_place` (the runtime hands
/// this worker's other tasks to another thread meanwhile). Readying a batch of 2 MB ran on the
/// request's worker, and a loop of them held every tenant's reads at 0.3-2 s while the
/// server used less than its two cores (hostile61 M1).
fn cpu_bound<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if heavy && multi_thread { tokio::task::block_in_place(work) } else { work() }
}

/// Refuses an agenda whose submission the store would refuse as too large, before anything is
/// written: a batch is all or nothing (one over the limit was refused after the agendas before
/// it were written), and the error names the agenda as a VALIDATION problem. Each field has its
/// own bound ([`check_sizes`]); together they may still exceed the store's bound per event, so
/// an agenda whose JSON (`json_bytes`, counted once for this and the quota) comes near it is
/// measured as the store will take it: its `AgendaSubmitted`, encoded.
fn check_storable(
    agenda: &Agenda,
    insight: &AgendaInsight,
    json_bytes: usize,
    root: &str,
) -> AppResult<()> {
    use pop_domain::aggregate::Aggregate as _;
    use pop_domain::codec::EventCodec as _;
    use pop_store::limits::MAX_EVENT_DATA_BYTES;
    // What an AgendaSubmitted holds besides the agenda: the binding and a few times.
    const BESIDES_THE_AGENDA: usize = 64 * 1024;
    if json_bytes + BESIDES_THE_AGENDA <= MAX_EVENT_DATA_BYTES {
        return Ok(());
    }
    let command =
        AgendaCommand::Submit { agenda: agenda.clone(), insight: insight.clone(), now: Utc::now() };
    // A refusal or a codec failure is the write's to report, as for any agenda.
    let Ok(events) = AgendaState::default().decide(&command) else {
        return Ok(());
    };
    for event in events {
        let Ok(data) = event.encode() else {
            return Ok(());
        };
        if data.len() > MAX_EVENT_DATA_BYTES {
            return Err(AppError::invalid(
                root,
                format!(
                    "agenda {:?} takes {} bytes to store, more than the limit of \
                     {MAX_EVENT_DATA_BYTES} bytes an agenda may take: make its payloads, params \
                     or titles smaller",
                    agenda.id,
                    data.len()
                ),
            ));
        }
    }
    Ok(())
}
