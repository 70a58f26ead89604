//! The decider pattern every aggregate follows: `decide` is pure and may refuse; `evolve` never
//! fails and never panics, so an accepted history always replays.

/// An event-sourced aggregate: state folded from its own stream.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// What callers ask for. Carries time and ids: the domain reads no clock.
    type Command;
    /// What happened. Persisted through [`crate::codec::EventCodec`].
    type Event: crate::codec::EventCodec + Clone + Send + Sync + 'static;
    /// Why a command was refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stream category, e.g. `agenda` for streams named `agenda-<id>`.
    const CATEGORY: &'static str;

    /// The events a command causes in the current state, or why it is refused.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state after one event. Total: unknown or out-of-order events are absorbed, never a
    /// panic.
    fn evolve(&mut self, event: &Self::Event);

    /// Whether `command` usually starts its stream (a submission): it is then worth deciding
    /// on the initial state before reading the stream, with the append's "no stream yet"
    /// expectation checking that guess — a stream that exists fails the append, and the
    /// command is decided again on what the stream holds. Only a hint for the order of work:
    /// the outcome is the same either way. Defaults to false.
    fn creates(_command: &Self::Command) -> bool {
        false
    }

    /// Folds a whole history from the initial state.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for e in events {
            state.evolve(e);
        }
        state
    }
}

/// The stream name of an aggregate instance: `<category>-<id>`.
pub fn stream_name(category: &str, id: &str) -> String {
    format!("{category}-{id}")
}
