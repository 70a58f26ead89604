//! As-of reads: an agenda, its progress, one operation's progress, or a linkId's summary as
//! they were at a past point of the log, computed by folding the agenda streams up to that
//! point with the domain's own `evolve` — the fold the projections use — never from today's
//! read models.
//!
//! **The bound.** [`AsOf::Position`] keeps every event at or below the position: exactly what
//! the read models showed once they had applied that position (positions are in commit order,
//! and a position at or below the log's head never gains an event later: the PostgreSQL
//! horizon rule). [`AsOf::Time`] keeps of each stream the longest prefix of its events whose
//! commit time (`recorded_at`, stamped by the store's clock) is at or before the time, or
//! whose own time (the command's clock: what pop shows) is and which committed within a
//! second after it ([`AsOf::admits`]; monotonic in the time). A stream's appends are
//! serialised, so its commit times do not decrease in practice; should a clock step back, the
//! fold stops at the first event not admitted, so the fold is always a prefix of the stream (a
//! history the domain accepted).
//!
//! **What is found.** Which agendas a request names is decided as for a live read (the
//! caller's customers, a lease holder's agendas, ambiguity: `reads.rs`), over the agendas
//! the log still holds; an agenda the data reaper has deleted has no history left to fold and
//! reads as absent, as it does live. An agenda that did not exist yet at the bound reads as
//! absent too.
//!
//! **Bounds on the work.** One agenda folds at most [`MAX_AS_OF_EVENTS`] events; a summary
//! folds at most [`MAX_AS_OF_AGENDAS`] agendas. Beyond either the request is refused
//! (BAD_REQUEST) rather than served partly.

use chrono::{DateTime, Utc};

use pop_domain::agenda::{AgendaState, CATEGORY as AGENDA_CATEGORY};
use pop_domain::aggregate::stream_name;
use pop_domain::model::{Agenda, AgendaProgress, OperationProgress, ProgressSummary};
use pop_domain::{Aggregate, rollup};
use pop_projections::{AgendaQuery, Decoded, DomainEvent, MAX_PAGE_SIZE};
use pop_store::{Direction, Position, RecordedEvent, StoreError};

use crate::App;
use crate::caller::{Action, Caller};
use crate::error::{self, AppError, AppResult};
use crate::reads::{one_operation, operation_named, parse_position, progress_or_pool, shown};
use crate::resolve::{ambiguous, holds_lease, may_touch};

/// Digits from which a bare number in `asOf` is epoch milliseconds, not a log position: 12
/// digits is 1973 onwards; a log of a hundred billion events is far off.
pub const EPOCH_MS_DIGITS: usize = 12;

/// Most events one as-of fold of an agenda reads.
pub const MAX_AS_OF_EVENTS: usize = 100_000;

/// Most agendas one as-of summary folds.
pub const MAX_AS_OF_AGENDAS: usize = 1_000;

/// Events read per store call while folding.
const FOLD_BATCH: usize = 1_000;

/// A point of the log to read as of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Every event at or below this global position.
    Position(Position),
    /// Every event committed at or before this time (see the module docs for the rule).
    Time(DateTime<Utc>),
}

/// How long after the shown time a change that carries it may have committed and still be the
/// change that time labels ([`AsOf::admits`]).
const SHOWN_TIME_SLACK: chrono::Duration = chrono::Duration::seconds(1);

impl AsOf {
    /// Reads a client's `asOf` text: a log position (`"42"`, `"7/3"`), an RFC 3339 time
    /// (`"2026-12-02T14:02:00Z"`), or epoch milliseconds as POP's REST surface shows its times
    /// (`"1796419675432"`: a bare number of [`EPOCH_MS_DIGITS`] digits or more; a shorter one
    /// is a position).
    pub fn parse(field: &str, text: &str) -> AppResult<AsOf> {
        let text = text.trim();
        if text.len() >= EPOCH_MS_DIGITS
            && text.bytes().all(|b| b.is_ascii_digit())
            && let Some(t) = text.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis)
        {
            return Ok(AsOf::Time(t));
        }
        if text.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'/')
        {
            return parse_position(field, text).map(AsOf::Position);
        }
        DateTime::parse_from_rfc3339(text).map(|t| AsOf::Time(t.with_timezone(&Utc))).map_err(
            |_| {
                // A `+` offset sent unencoded in a URL arrives as a space (auditor30).
                let plus = DateTime::parse_from_rfc3339(&text.replacen(' ', "+", 1)).is_ok();
                AppError::invalid(
                    field,
                    format!(
                        "{text:?} is neither a log position (\"42\", \"7/3\") nor an RFC 3339 \
                         time (\"2026-12-02T14:02:00Z\"){}",
                        if plus { "; a `+` in a URL reads as a space: write it %2B" } else { "" }
                    ),
                )
            },
        )
    }

    /// Whether `event` is inside the bound. By time: committed at or before it, or carrying
    /// a time at or before it (`time`: the change's own time, when it decoded as one) and
    /// committed at most [`SHOWN_TIME_SLACK`] after it. The times pop shows (`updatedTime`,
    /// `completedTime`, `addedTime`) are the changes' own: the command's clock, read before the
    /// append, whose commit lands milliseconds later (auditor15 measured 1–18 ms; as of its
    /// own `addedTime` a submission read as absent), so as of a shown time the change it labels
    /// is in. Both halves only grow with the time, so a later time never shows an earlier
    /// state (auditor16: a rule for whole milliseconds alone un-completed an agenda between
    /// `.232` and its commit at `.233161`); the slack keeps a wrong clock from pulling in
    /// changes committed long after.
    fn admits(&self, event: &RecordedEvent, time: Option<DateTime<Utc>>) -> bool {
        match self {
            AsOf::Position(p) => event.position <= *p,
            AsOf::Time(t) => {
                event.recorded_at <= *t
                    || (time.is_some_and(|time| time <= *t)
                        && event.recorded_at <= *t + SHOWN_TIME_SLACK)
            }
        }
    }

    /// Whether `event` could be inside the bound, whatever its own time: past this, the fold
    /// stops without reading it.
    fn may_admit(&self, event: &RecordedEvent) -> bool {
        match self {
            AsOf::Position(p) => event.position <= *p,
            AsOf::Time(t) => event.recorded_at <= *t + SHOWN_TIME_SLACK,
        }
    }
}

/// The earliest time an as-of read by time admits `event` of own time `time` ([`AsOf::admits`]):
/// its commit, or its own time when that is earlier and the commit came within
/// [`SHOWN_TIME_SLACK`] of it. An agenda's history shows each event at this time, so a read as
/// of a moment before a row shows the state before it (auditor61 M1).
pub(crate) fn shown_from(event: &RecordedEvent, time: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match time {
        Some(time) => event.recorded_at.min(time.max(event.recorded_at - SHOWN_TIME_SLACK)),
        None => event.recorded_at,
    }
}

/// The outcome of folding one stream up to a bound.
#[derive(Debug, Clone)]
pub struct Folded {
    pub state: AgendaState,
    /// The position of the last event folded (`None`: nothing was folded).
    pub position: Option<Position>,
    /// How many events were folded.
    pub events: usize,
}

impl App {
    /// Folds the agenda stream keyed `key` (`pop_domain::agenda::key`) up to `bound` with the
    /// domain's `evolve`. No authorisation: callers decide first who may read it. A deleted
    /// (reaped) stream folds to nothing.
    pub async fn fold_agenda(&self, key: &str, bound: AsOf) -> AppResult<Folded> {
        let stream = stream_name(AGENDA_CATEGORY, key);
        let mut folded = Folded { state: AgendaState::default(), position: None, events: 0 };
        let mut from = 0u64;
        loop {
            let batch = match self
                .store()
                .read_stream(&stream, from, FOLD_BATCH, Direction::Forwards)
                .await
            {
                Ok(batch) => batch,
                Err(StoreError::StreamDeleted { .. }) => {
                    return Ok(Folded { state: AgendaState::default(), position: None, events: 0 });
                }
                Err(e) => return Err(error::store(&format!("agenda stream {key:?}"), &e)),
            };
            let Some(last) = batch.last() else { return Ok(folded) };
            from = last.version.saturating_add(1);
            for event in &batch {
                if !bound.may_admit(event) {
                    return Ok(folded);
                }
                let change = match pop_projections::decode(event) {
                    Ok(Decoded::Event { event: DomainEvent::Agenda(e), .. }) => Some(e),
                    // Written by a newer build, or of another category: the read side skips
                    // these too.
                    Ok(_) => None,
                    // One that only its own time could bring inside: outside, as before.
                    Err(_) if !bound.admits(event, None) => return Ok(folded),
                    Err(e) => return Err(AppError::internal("folding an agenda's history", &e)),
                };
                if !bound.admits(event, change.as_ref().map(|e| e.time())) {
                    return Ok(folded);
                }
                if folded.events >= MAX_AS_OF_EVENTS {
                    return Err(AppError::bad_request(format!(
                        "agenda {key:?} has more than {MAX_AS_OF_EVENTS} events before the \
                         asOf bound; an as-of read folds at most that many"
                    )));
                }
                if let Some(e) = &change {
                    folded.state.evolve(e);
                }
                folded.events += 1;
                folded.position = Some(event.position);
            }
        }
    }

    /// A position bound beyond the log's head could still gain events, and a two-part one on
    /// the embedded store names no point of it (auditor20: `11/5` was compared as the pair and
    /// answered as of 10): both refused, as for `atLeastPosition`. So is a time later than the
    /// store's clock, or within a second of it (auditor32: as of a time 30 s ahead answered
    /// WAITING/queued, then after a claim, for the same time, WAITING/scheduled, both labelled
    /// as history).
    async fn check_bound(&self, bound: AsOf) -> AppResult<()> {
        if let AsOf::Time(t) = bound {
            let now = self.now();
            // Within the last second too: a change showing a time before it may still commit
            // up to a second after it (auditor33: the same recent time read again 2 s later
            // answered otherwise, a few in a thousand).
            if t + SHOWN_TIME_SLACK > now {
                let show =
                    |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let when = if t > now { "later than" } else { "within a second of" };
                return Err(AppError::invalid(
                    "asOf",
                    format!(
                        "{} is {when} the store's time {}: it is no settled history yet (a \
                         change it shows may commit up to a second after it); ask as of a time \
                         at least a second past, or read the live state without asOf",
                        show(t),
                        show(now)
                    ),
                ));
            }
        }
        if let AsOf::Position(p) = bound {
            self.position_of_this_log("asOf", p)?;
            let head = self.store().head().await.map_err(|e| error::store("the log head", &e))?;
            if p > head {
                return Err(AppError::invalid(
                    "asOf",
                    format!("position {p} is beyond the end of the log (its head is {head})"),
                ));
            }
        }
        Ok(())
    }

    /// The stream keys of the agendas `pick` chooses from the read models, after
    /// read-your-writes; at most one, else the ambiguity error naming `id`.
    async fn one_key(
        &self,
        id: &str,
        pick: impl FnOnce(&pop_projections::ReadModels) -> Vec<String>,
    ) -> AppResult<Option<String>> {
        self.settle(None).await?;
        let keys = pick(&self.projections().read());
        match keys.len() {
            0 | 1 => Ok(keys.into_iter().next()),
            n => Err(ambiguous(id, n)),
        }
    }

    /// The state of one agenda the caller may read, as of `bound`, when it existed then.
    async fn visible_as_of(
        &self,
        principal: &crate::caller::Principal,
        id: &str,
        bound: AsOf,
        pick: impl FnOnce(&pop_projections::ReadModels) -> Vec<String>,
    ) -> AppResult<Option<AgendaState>> {
        self.check_bound(bound).await?;
        let Some(key) = self.one_key(id, pick).await? else { return Ok(None) };
        let folded = self.fold_agenda(&key, bound).await?;
        Ok(Some(folded.state).filter(|s| s.exists() && readable_at(principal, s)))
    }

    /// [`App::agenda`] as of `bound`.
    pub async fn agenda_as_of(
        &self,
        caller: &Caller,
        id: &str,
        customer: Option<&str>,
        bound: AsOf,
    ) -> AppResult<Option<Agenda>> {
        caller
            .run(Action::Read, None, async |caller| {
                let p = &caller.principal;
                let state = self
                    .visible_as_of(p, id, bound, |m| {
                        touchable(m.agendas().with_id(id), p, customer)
                    })
                    .await?;
                Ok(state.and_then(|s| s.agenda().cloned()))
            })
            .await
    }

    /// [`App::agenda_progress`] as of `bound`.
    pub async fn agenda_progress_as_of(
        &self,
        caller: &Caller,
        id: &str,
        customer: Option<&str>,
        bound: AsOf,
    ) -> AppResult<Option<AgendaProgress>> {
        caller
            .run(Action::Read, None, async |caller| {
                let p = &caller.principal;
                // By its own progress id or by the pool's progress id a worker was handed, as
                // live (`progress_or_pool`), and then shown under that id.
                let mut pooled = false;
                let state = self
                    .visible_as_of(p, id, bound, |m| {
                        let found = progress_or_pool(m, p, id, customer);
                        pooled = found.iter().any(|(_, pooled)| *pooled);
                        found.into_iter().map(|(e, _)| e.key().to_string()).collect()
                    })
                    .await?;
                Ok(state.map(|s| {
                    let mut progress = s.progress().clone();
                    if pooled {
                        progress.show_as(id);
                    }
                    progress
                }))
            })
            .await
    }

    /// [`App::operation_progress`] as of `bound`: the id is split at each `-` into an
    /// AgendaProgress id and an operation name, as live; the agendas the caller may read are
    /// chosen first, then each is folded and asked for the operation.
    pub async fn operation_progress_as_of(
        &self,
        caller: &Caller,
        id: &str,
        customer: Option<&str>,
        bound: AsOf,
    ) -> AppResult<Option<OperationProgress>> {
        caller
            .run(Action::Read, None, async |caller| {
                self.check_bound(bound).await?;
                self.settle(None).await?;
                // Chosen as live (`operation_named`: the caller's agendas, pool ids), then
                // each folded to the bound and asked for the operation.
                let candidates: Vec<(String, String, Option<String>)> = {
                    let models = self.projections().read();
                    operation_named(&models, &caller.principal, id, customer)
                        .into_iter()
                        .map(|(e, name, pooled)| {
                            (e.key().to_string(), name.to_string(), pooled.map(str::to_string))
                        })
                        .collect()
                };
                let mut found = Vec::new();
                for (key, name, pooled) in candidates {
                    let folded = self.fold_agenda(&key, bound).await?;
                    if !readable_at(&caller.principal, &folded.state) {
                        continue;
                    }
                    let op = folded
                        .state
                        .progress()
                        .operation_progress
                        .iter()
                        .find(|op| *op.operation == *name);
                    found.extend(op.cloned().map(|op| shown(op, pooled.as_deref())));
                }
                one_operation(id, found)
            })
            .await
    }

    /// [`App::progress_summary`] as of `bound`: the agendas with this linkId the caller may
    /// see, each folded to the bound, in the order of the live summary (`addedTime`).
    pub async fn progress_summary_as_of(
        &self,
        caller: &Caller,
        link_id: &str,
        customer: Option<&str>,
        bound: AsOf,
    ) -> AppResult<ProgressSummary> {
        if link_id.trim().is_empty() {
            return Err(AppError::invalid("linkId", "is required").with_cid(&caller.cid));
        }
        caller
            .run(Action::Read, None, async |caller| {
                self.check_bound(bound).await?;
                self.settle(None).await?;
                let keys = {
                    let models = self.projections().read();
                    let visibility = &crate::reads::summarised(caller, customer);
                    let mut keys = Vec::new();
                    let mut after = None;
                    loop {
                        let mut q = AgendaQuery::new(visibility);
                        q.link_id = Some(link_id);
                        q.after = after.as_ref();
                        q.limit = MAX_PAGE_SIZE;
                        let page = models.agendas().select(&q);
                        keys.extend(page.items.iter().map(|e| e.key().to_string()));
                        if keys.len() > MAX_AS_OF_AGENDAS {
                            return Err(AppError::bad_request(format!(
                                "linkId {link_id:?} has more than {MAX_AS_OF_AGENDAS} agendas; \
                                 an as-of summary folds at most that many"
                            )));
                        }
                        match page.next {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                    keys
                };
                let mut list = Vec::with_capacity(keys.len());
                for key in keys {
                    let folded = self.fold_agenda(&key, bound).await?;
                    if folded.state.exists() {
                        list.push(folded.state.progress().clone());
                    }
                }
                Ok(rollup::progress_summary(link_id, list))
            })
            .await
    }
}

/// Whether `principal` may read an agenda as it was at a bound, `state` (chosen as live, by
/// [`may_touch`]): its customer's caller; a lease holder of another customer only where it
/// held the lease then too. Folded to a bound before its claim, or after the agenda finished,
/// it showed what it never held: an earlier run's results and diagnostics (review54 H2), as
/// its events did (hostile54 M1).
fn readable_at(principal: &crate::caller::Principal, state: &AgendaState) -> bool {
    state.agenda().is_some_and(|a| principal.sees(&a.customer_id)) || holds_lease(principal, state)
}

/// The keys of those `found` agendas the caller may read (of `customer` when it names one).
fn touchable<'m>(
    found: impl Iterator<Item = &'m pop_projections::AgendaEntry>,
    p: &crate::caller::Principal,
    customer: Option<&str>,
) -> Vec<String> {
    found
        .filter(|e| may_touch(p, e) && customer.is_none_or(|c| e.customer_id() == c))
        .map(|e| e.key().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn as_of_text() {
        assert_eq!(AsOf::parse("asOf", "42").unwrap(), AsOf::Position(Position::from_sequence(42)));
        assert_eq!(AsOf::parse("asOf", " 7/3 ").unwrap(), AsOf::Position(Position::new(7, 3)));
        let t = AsOf::parse("asOf", "2026-12-02T14:02:00+01:00").unwrap();
        assert_eq!(
            t,
            AsOf::Time(DateTime::parse_from_rfc3339("2026-12-02T13:02:00Z").unwrap().into())
        );
        // POP's epoch milliseconds (12 digits or more); 11 digits are still a position.
        assert_eq!(
            AsOf::parse("asOf", "1796419675432").unwrap(),
            AsOf::Time(DateTime::from_timestamp_millis(1_796_419_675_432).unwrap())
        );
        assert_eq!(
            AsOf::parse("asOf", "12345678901").unwrap(),
            AsOf::Position(Position::from_sequence(12_345_678_901))
        );
        for bad in ["", "yesterday", "1/", "2026-12-02", "-1"] {
            let e = AsOf::parse("asOf", bad).unwrap_err();
            assert_eq!(e.code, crate::Code::Validation, "{bad:?}");
            assert_eq!(e.problems[0].field, "asOf", "{bad:?}");
            assert!(!e.message.contains("%2B"), "{bad:?}: {}", e.message);
        }
        // `+02:00` sent unencoded in a URL: the hint says how to send it.
        let e = AsOf::parse("asOf", "2026-12-06T07:23:31 02:00").unwrap_err();
        assert!(e.message.contains("write it %2B"), "{}", e.message);
    }

    #[test]
    fn a_time_shown_to_the_millisecond_covers_that_millisecond() {
        let at = |micros: i64| RecordedEvent {
            position: Position::from_sequence(1),
            stream: "s".into(),
            version: 0,
            event_id: uuid::Uuid::nil(),
            event_type: "T".into(),
            schema_version: 1,
            data: Default::default(),
            metadata: Default::default(),
            recorded_at: DateTime::from_timestamp_micros(micros).unwrap(),
        };
        let ms = |ms: i64| DateTime::from_timestamp_millis(ms);
        // updatedTime 21:27:55.432 (the command's clock), committed at .432818 or at .449838:
        // as of the shown time, the change it labels is in.
        let shown = AsOf::parse("asOf", "1796419675432").unwrap();
        assert!(shown.admits(&at(1_796_419_675_432_818), ms(1_796_419_675_432)));
        assert!(shown.admits(&at(1_796_419_675_449_838), ms(1_796_419_675_432)));
        // A change of .433 is not, whenever it committed after .432.
        assert!(!shown.admits(&at(1_796_419_675_449_838), ms(1_796_419_675_433)));
        assert!(!shown.admits(&at(1_796_419_675_433_000), None));
        // Nor one committed a second or more later, whatever time it carries.
        assert!(!shown.admits(&at(1_796_419_676_432_001), ms(1_796_419_675_432)));
        // By commit time alone, to the microsecond.
        let exact = AsOf::Time(DateTime::from_timestamp_micros(1_796_419_675_432_817).unwrap());
        assert!(exact.admits(&at(1_796_419_675_432_817), None));
        assert!(!exact.admits(&at(1_796_419_675_432_818), None));
        // Monotonic: a later time never drops what an earlier one took (auditor16: the change
        // of .232 committed at .233161 was in as of .232, out as of .232001).
        let event = at(1_796_419_675_433_161);
        let own = ms(1_796_419_675_432);
        let mut was_in = false;
        for micros in (1_796_419_675_431_000_i64..1_796_419_675_434_000).step_by(7) {
            let now_in =
                AsOf::Time(DateTime::from_timestamp_micros(micros).unwrap()).admits(&event, own);
            assert!(now_in || !was_in, "dropped again at {micros}");
            was_in = now_in;
        }
        assert!(was_in);
    }
}
