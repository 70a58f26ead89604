//! Answers in flight, per customer: an HTTP read (GraphQL or REST) takes a ticket for its
//! answer before it resolves anything, holding an estimate of it (the size of its customer's
//! last answer to a read); any answer, once built, holds its real bytes (when at least
//! [`LARGE_ANSWER_BYTES`]) until the connection has taken its last part. A write's ticket
//! holds no estimate and is never refused: its answer is small but for claims of large
//! agendas, and a worker's report must not wait for a dashboard's reads. What a customer's
//! tokens hold together is bounded by [`MAX_ANSWER_BYTES_IN_FLIGHT`]: past it a request is
//! answered BUSY (`Retry-After`) before it does any work, or, for a read, instead of an answer
//! that would pass it. A write's answer is held past it, never refused (a BUSY would say nothing
//! was done, and the client's retry would do it again). One answer always fits while nothing
//! else is held, so a customer is never refused its only request.
//!
//! Why (hostile59 H1, reprobe59): the expensive-request permits count query cost, not bytes;
//! one user token asking 300 times at once for 15 MB of its own payloads and not reading the
//! answers took the server from 0.7 to 3 GB; refused only once built, the same requests then
//! cost a second of CPU each and held another customer's reads at seconds; answers under the
//! first 1 MiB threshold, 1,000 times unread, took 0.7 GB; and each token of a customer had a
//! share of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use pop_app::{AppError, Code, Principal};
use pop_projections::Visibility;

/// An answer at least this long holds its bytes until it is sent; a shorter one is written
/// whole at once.
pub const LARGE_ANSWER_BYTES: usize = 64 << 10;

/// The bytes of answers one customer's tokens may have built or be building and not yet
/// sent: four answers of the largest size (`MAX_RESPONSE_BYTES`, 16 MiB).
pub const MAX_ANSWER_BYTES_IN_FLIGHT: usize = 64 << 20;

/// A read whose estimate is at least this long builds its answer only while no other such read
/// of its customer does: building one takes a core for up to a second (reprobe59b M1: HEADs in a
/// loop, whose answers are dropped at once and so never fill the share, built 15 MB each on
/// both cores and held another customer's reads at 4 s).
pub const LARGE_BUILD_BYTES: usize = 1 << 20;

/// Longest a read waits for its customer's turn at building a large answer before it is
/// BUSY: a small read right after a large one waits for the one before it (reprobe59c L: a
/// dashboard's ten reads after one large read were refused at once), and the reads that wait
/// hold their estimates, so the share bounds how many wait.
pub const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How much of a held answer is handed to the connection at a time: the next part only once
/// the connection took the last, so an answer its client does not read keeps holding.
const PART_BYTES: usize = 64 << 10;

/// Whose share a principal's answers count against: its customers together (every token of
/// a customer shares one), and an admin of every customer its own.
pub fn owner(principal: &Principal) -> String {
    match &principal.customers {
        Visibility::Customers(ids) => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            format!("customer {}", ids.join(", "))
        }
        Visibility::All => format!("principal {}", principal.name),
    }
}

/// Each owner's answers in flight.
#[derive(Debug, Default)]
pub struct Answers {
    shares: Mutex<HashMap<String, Arc<Share>>>,
}

#[derive(Debug)]
struct Share {
    /// Bytes held: tickets' estimates and answers being sent.
    held: AtomicUsize,
    /// The size of the owner's last answer to a read: the estimate of the next.
    last: AtomicUsize,
    /// The turn at building an answer estimated at [`LARGE_BUILD_BYTES`] or more: one read
    /// of the owner at a time; the others wait for it (at most [`TURN_WAIT`]).
    turn: Arc<tokio::sync::Semaphore>,
}

impl Default for Share {
    fn default() -> Share {
        Share {
            held: AtomicUsize::new(0),
            last: AtomicUsize::new(0),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

impl Answers {
    fn share(&self, owner: &str) -> Option<Arc<Share>> {
        let mut map = self.shares.lock().ok()?;
        // Asked by every request: the owner's name is copied only the first time.
        if let Some(share) = map.get(owner) {
            return Some(Arc::clone(share));
        }
        // Owners are bounded by the token file (`MAX_TOKENS`), so is the map.
        Some(Arc::clone(map.entry(owner.to_string()).or_default()))
    }

    /// The ticket of a request of `owner` ([`owner`]), taken before any work: a read's holds
    /// the estimate of its answer (the owner's last answer to a read) until [`Ticket::hold`]
    /// or its drop, BUSY when the estimate would take the owner past its share while
    /// something else is held; a `write`'s holds nothing and is never refused.
    pub async fn start(&self, owner: &str, write: bool) -> Result<Ticket, AppError> {
        let Some(share) = self.share(owner) else {
            return Ok(Ticket { share: None, bytes: 0, owner: String::new(), turn: None });
        };
        if write {
            let owner = owner.to_string();
            return Ok(Ticket { share: Some(share), bytes: 0, owner, turn: None });
        }
        // The last read's answer, small ones included: a customer whose reads are small again
        // runs many at once again.
        let estimate = share.last.load(Ordering::Relaxed);
        let before = share.held.fetch_add(estimate, Ordering::Relaxed);
        if before > 0 && before.saturating_add(estimate) > MAX_ANSWER_BYTES_IN_FLIGHT {
            share.held.fetch_sub(estimate, Ordering::Relaxed);
            return Err(busy(owner, before));
        }
        // Made before waiting, so a request given up while it waits gives its estimate back.
        let turn = Arc::clone(&share.turn);
        let mut ticket =
            Ticket { share: Some(share), bytes: estimate, owner: owner.to_string(), turn: None };
        if estimate >= LARGE_BUILD_BYTES {
            match tokio::time::timeout(TURN_WAIT, turn.acquire_owned()).await {
                Ok(Ok(permit)) => ticket.turn = Some(permit),
                _ => {
                    return Err(AppError::new(
                        Code::Busy,
                        format!(
                            "{owner} has another large answer being built (its last read \
                             answered {estimate} bytes), and this one waited {} s for its turn: \
                             one at a time, so that other customers keep a core; retry, or ask \
                             for less (`first`, fewer fields)",
                            TURN_WAIT.as_secs()
                        ),
                    ));
                }
            }
        }
        Ok(ticket)
    }

    /// Holds the `bytes` of a write's answer built outside a ticket (the writes of a batch
    /// whose reads were refused): `None` for a short one.
    pub fn hold_written(&self, owner: &str, bytes: usize) -> Option<Held> {
        if bytes < LARGE_ANSWER_BYTES {
            return None;
        }
        let share = self.share(owner)?;
        share.held.fetch_add(bytes, Ordering::Relaxed);
        Some(Held { share, bytes })
    }
}

/// A request's place in its owner's share ([`Answers::start`]); released when dropped.
#[derive(Debug)]
pub struct Ticket {
    share: Option<Arc<Share>>,
    bytes: usize,
    owner: String,
    /// Its owner's turn at building a large answer, while it builds one.
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Ticket {
    /// The built answer of `bytes` in place of the estimate: `None` for a short one (written
    /// at once), else held until it is sent; for a read BUSY when it takes the owner past its
    /// share while something else is held, a `written` answer never.
    pub fn hold(mut self, bytes: usize, written: bool) -> Result<Option<Held>, AppError> {
        let Some(share) = self.share.take() else { return Ok(None) };
        let estimate = std::mem::take(&mut self.bytes);
        self.turn = None;
        if !written {
            share.last.store(bytes, Ordering::Relaxed);
        }
        if bytes < LARGE_ANSWER_BYTES {
            share.held.fetch_sub(estimate, Ordering::Relaxed);
            return Ok(None);
        }
        let after = share.held.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        share.held.fetch_sub(estimate, Ordering::Relaxed);
        let now = after.saturating_sub(estimate);
        let others = now.saturating_sub(bytes);
        if !written && others > 0 && now > MAX_ANSWER_BYTES_IN_FLIGHT {
            share.held.fetch_sub(bytes, Ordering::Relaxed);
            return Err(busy(&self.owner, others));
        }
        Ok(Some(Held { share, bytes }))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(share) = &self.share {
            share.held.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

fn busy(owner: &str, held: usize) -> AppError {
    AppError::new(
        Code::Busy,
        format!(
            "the answers of {owner} take {held} bytes, built or not yet read by their \
             connections, and may take at most {MAX_ANSWER_BYTES_IN_FLIGHT}: read those first, \
             or ask for less at once (`first`, fewer fields), then retry"
        ),
    )
}

/// An answer's bytes held against its owner's share until dropped.
#[derive(Debug)]
pub struct Held {
    share: Arc<Share>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.share.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A JSON answer of `bytes` with `status`: a large one handed to the connection in parts,
/// holding `held` until the last part was taken (or the connection dropped it).
pub fn json(status: StatusCode, bytes: Vec<u8>, held: Option<Held>) -> Response {
    let length = bytes.len();
    let body = match held {
        None => Body::from(bytes),
        Some(held) => {
            let parts = futures::stream::unfold(
                (Bytes::from(bytes), Some(held)),
                |(mut rest, held)| async move {
                    if rest.is_empty() {
                        // The last part was taken: `held` goes with the state.
                        return None;
                    }
                    let part = rest.split_to(rest.len().min(PART_BYTES));
                    Some((Ok::<_, std::convert::Infallible>(part), (rest, held)))
                },
            );
            Body::from_stream(parts)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn an_owner_holds_at_most_its_share_and_one_answer_always_fits() {
        let answers = Answers::default();
        // A short answer holds nothing once built.
        let short = answers
            .start("evil", false)
            .await
            .unwrap()
            .hold(LARGE_ANSWER_BYTES - 1, false)
            .unwrap();
        assert!(short.is_none());
        let huge =
            answers.start("evil", false).await.unwrap().hold(2 * MAX_ANSWER_BYTES_IN_FLIGHT, false);
        let huge = huge.unwrap();
        assert!(huge.is_some(), "the only answer fits whatever its size");
        assert_eq!(answers.start("evil", false).await.unwrap_err().code, Code::Busy);
        // Another owner is not touched.
        assert!(answers.start("acme", false).await.is_ok());
        drop(huge);
        // Refused before any work once the estimate (the last answer's size) does not fit.
        let mut held = Vec::new();
        for _ in 0..4 {
            let ticket = answers.start("evil", false).await.unwrap();
            held.push(ticket.hold(16 * MIB, false).unwrap().expect("large"));
        }
        assert_eq!(answers.start("evil", false).await.unwrap_err().code, Code::Busy);
        drop(held);
        // A read estimated large is built only while no other of its owner is: the next waits
        // for its turn (2 s), then is BUSY.
        let building = answers.start("evil", false).await.unwrap();
        let refused = answers.start("evil", false).await.unwrap_err();
        assert!(refused.message.contains("waited 2 s for its turn"), "{refused:?}");
        assert!(answers.start("acme", false).await.is_ok(), "another owner builds meanwhile");
        drop(building.hold(16 * MIB, false).unwrap());
        let tickets = answers.start("evil", false).await.unwrap();
        drop(tickets);
        assert_eq!(answers.shares.lock().unwrap()["evil"].held.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_reads_answer_past_the_share_is_refused_and_a_writes_is_held() {
        let answers = Answers::default();
        let last = |answers: &Answers| Arc::clone(&answers.shares.lock().unwrap()["evil"]);
        let mut three = Vec::new();
        for _ in 0..3 {
            let ticket = answers.start("evil", false).await.unwrap();
            three.push(ticket.hold(20 * MIB, false).unwrap().expect("large"));
        }
        // The estimate (the last answer, 20 MiB) does not fit beside 60 MiB: refused up front.
        assert_eq!(answers.start("evil", false).await.unwrap_err().code, Code::Busy);
        drop(three);
        // An answer larger than its ticket's estimate: refused for a read, held for a write.
        let first = answers.start("evil", false).await.unwrap().hold(60 * MIB, false).unwrap();
        last(&answers).last.store(0, Ordering::Relaxed);
        let read = answers.start("evil", false).await.unwrap();
        assert_eq!(read.hold(10 * MIB, false).unwrap_err().code, Code::Busy);
        last(&answers).last.store(0, Ordering::Relaxed);
        let written = answers.start("evil", true).await.unwrap().hold(10 * MIB, true).unwrap();
        assert!(written.is_some());
        // A write's ticket is never refused, whatever is held.
        assert!(answers.start("evil", true).await.is_ok());
        drop((first, written));
        assert_eq!(last(&answers).held.load(Ordering::Relaxed), 0);
        // A read that waits for the turn gets it once the large one before it answered (a
        // dashboard's small read right after a large one: reprobe59c L).
        last(&answers).last.store(16 * MIB, Ordering::Relaxed);
        let building = answers.start("evil", false).await.unwrap();
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            drop(building.hold(LARGE_ANSWER_BYTES - 1, false));
        };
        let (waited, ()) = tokio::join!(answers.start("evil", false), release);
        assert!(waited.is_ok(), "{waited:?}");
    }
}
