//! Where an agenda is in its life ([`Phase`]), finer than `processingState`: what the agenda
//! indexes and the change feed both key on, so it lives apart from either.

use pop_domain::ProcessingState;
use pop_domain::model::message;

/// Where an agenda is in its life, finer than `processingState`: the scheduler wants the
/// `added` ones of an insight, `getAgenda` the `queued` ones, the reclaimer the `scheduled`
/// and executing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// WAITING/added: bound to an insight, waiting for the scheduler.
    Added,
    /// WAITING/queued: in its insight's queue.
    Queued,
    /// WAITING/scheduled: handed out under a lease.
    Scheduled,
    /// WAITING/pending: reset by a rerun, not re-added.
    Pending,
    /// WAITING with any other message.
    Waiting,
    Executing,
    Succeeded,
    Failed,
    Cancelled,
    /// COMPLETE with any other message.
    Complete,
}

impl Phase {
    /// How many phases there are.
    pub const COUNT: usize = 10;

    /// Every phase, in declaration order (`ALL[p.index()] == p`).
    pub const ALL: [Phase; Phase::COUNT] = [
        Phase::Added,
        Phase::Queued,
        Phase::Scheduled,
        Phase::Pending,
        Phase::Waiting,
        Phase::Executing,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Cancelled,
        Phase::Complete,
    ];

    /// The phase's place in [`Phase::ALL`] (for counters kept in arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether an agenda in this phase is live (not COMPLETE): held whole in the read models
    /// and counted by the live quotas.
    pub fn is_live(self) -> bool {
        self.index() <= Phase::Executing.index()
    }

    /// The phase of an agenda in `state` with `message` (compared case-insensitively).
    pub fn of(state: ProcessingState, msg: &str) -> Phase {
        let is = |m: &str| msg.eq_ignore_ascii_case(m);
        match state {
            ProcessingState::Waiting if is(message::ADDED) => Phase::Added,
            ProcessingState::Waiting if is(message::QUEUED) => Phase::Queued,
            ProcessingState::Waiting if is(message::SCHEDULED) => Phase::Scheduled,
            ProcessingState::Waiting if is(message::PENDING) => Phase::Pending,
            ProcessingState::Waiting => Phase::Waiting,
            ProcessingState::Executing => Phase::Executing,
            ProcessingState::Complete if message::is_succeeded(msg) => Phase::Succeeded,
            ProcessingState::Complete if message::is_failed(msg) => Phase::Failed,
            ProcessingState::Complete if message::is_cancelled(msg) => Phase::Cancelled,
            ProcessingState::Complete => Phase::Complete,
        }
    }
}
