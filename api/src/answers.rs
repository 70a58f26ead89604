//! Large answers in flight, per principal: an HTTP answer (GraphQL or REST) of at least
//! [`LARGE_ANSWER_BYTES`] holds its bytes against its principal's share,
//! [`MAX_ANSWER_BYTES_IN_FLIGHT`], from when it is built until its body has been handed to
//! the connection (or the connection is gone); past the share a request is answered BUSY
//! (`Retry-After`), before any work when the share is already taken, else in place of its
//! large answer. The expensive-request permits count query cost, not bytes (hostile59 H1: one
//! user token asking 300 times at once for the 15 MB of payloads its own agendas hold, and
//! not reading the answers, took the server from 0.7 to 3 GB, and eight such requests in a
//! loop held another customer's reads at 2.3 s). One answer always fits while none is in
//! flight, so a principal is never refused its only request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use pop_app::{AppError, Code};

/// An answer at least this long holds its bytes against its principal's share.
pub const LARGE_ANSWER_BYTES: usize = 1 << 20;

/// The bytes of large answers one principal may have built and not yet sent: four answers of
/// the largest size (`MAX_RESPONSE_BYTES`, 16 MiB).
pub const MAX_ANSWER_BYTES_IN_FLIGHT: usize = 64 << 20;

/// How much of a held answer is handed to the connection at a time: the next part only once
/// the connection took the last, so an answer its client does not read keeps holding.
const PART_BYTES: usize = 64 << 10;

/// Each principal's large answers in flight.
#[derive(Debug, Default)]
pub struct Answers {
    per_principal: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl Answers {
    fn counter(&self, principal: &str) -> Option<Arc<AtomicUsize>> {
        let mut map = self.per_principal.lock().ok()?;
        // Asked by every request: its name is copied only the first time.
        if let Some(counter) = map.get(principal) {
            return Some(Arc::clone(counter));
        }
        // Principals are bounded by the token file (`MAX_TOKENS`), so is the map.
        Some(Arc::clone(map.entry(principal.to_string()).or_default()))
    }

    /// BUSY when `principal`'s large answers in flight already take its whole share: asked
    /// before a request does any work.
    pub fn check(&self, principal: &str) -> Result<(), AppError> {
        let Some(counter) = self.counter(principal) else { return Ok(()) };
        let held = counter.load(Ordering::Relaxed);
        if held >= MAX_ANSWER_BYTES_IN_FLIGHT { Err(busy(principal, held)) } else { Ok(()) }
    }

    /// Holds the `bytes` of an answer to `principal` while it is sent: `None` for a small
    /// one, BUSY when it would take the principal past its share (one always fits while none
    /// is in flight).
    pub fn hold(&self, principal: &str, bytes: usize) -> Result<Option<Held>, AppError> {
        if bytes < LARGE_ANSWER_BYTES {
            return Ok(None);
        }
        let Some(counter) = self.counter(principal) else { return Ok(None) };
        let taken = counter.fetch_add(bytes, Ordering::Relaxed);
        if taken > 0 && taken.saturating_add(bytes) > MAX_ANSWER_BYTES_IN_FLIGHT {
            counter.fetch_sub(bytes, Ordering::Relaxed);
            return Err(busy(principal, taken));
        }
        Ok(Some(Held { counter, bytes }))
    }

    /// [`Answers::hold`] for the answer of a write, which happened whatever the share: held
    /// past it rather than refused, since a BUSY would tell the client that nothing was done
    /// and its retry would do it again.
    pub fn hold_written(&self, principal: &str, bytes: usize) -> Option<Held> {
        if bytes < LARGE_ANSWER_BYTES {
            return None;
        }
        let counter = self.counter(principal)?;
        counter.fetch_add(bytes, Ordering::Relaxed);
        Some(Held { counter, bytes })
    }
}

fn busy(principal: &str, held: usize) -> AppError {
    AppError::new(
        Code::Busy,
        format!(
            "{principal:?} has {held} bytes of large answers being sent and may have at most \
             {MAX_ANSWER_BYTES_IN_FLIGHT} (answers of {LARGE_ANSWER_BYTES} bytes or more count): \
             read those first, or ask for less at once (`first`, fewer fields), then retry"
        ),
    )
}

/// An answer's bytes held against its principal's share until dropped.
#[derive(Debug)]
pub struct Held {
    counter: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
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

    #[test]
    fn a_principal_holds_at_most_its_share_and_one_answer_always_fits() {
        let answers = Answers::default();
        assert!(answers.hold("evil", LARGE_ANSWER_BYTES - 1).unwrap().is_none());
        let huge = answers.hold("evil", MAX_ANSWER_BYTES_IN_FLIGHT * 2).unwrap();
        assert!(huge.is_some(), "the only answer fits whatever its size");
        assert_eq!(answers.check("evil").unwrap_err().code, Code::Busy);
        assert_eq!(answers.hold("evil", LARGE_ANSWER_BYTES).unwrap_err().code, Code::Busy);
        // Another principal is not touched.
        assert!(answers.check("acme").is_ok());
        drop(huge);
        assert!(answers.check("evil").is_ok());
        let held: Vec<_> =
            (0..4).map(|_| answers.hold("evil", 16 << 20).unwrap().expect("large")).collect();
        assert_eq!(answers.hold("evil", LARGE_ANSWER_BYTES).unwrap_err().code, Code::Busy);
        // A write's answer is held past the share, never refused.
        let written = answers.hold_written("evil", 16 << 20).expect("large");
        assert_eq!(answers.check("evil").unwrap_err().code, Code::Busy);
        drop((held, written));
        assert!(answers.hold("evil", 16 << 20).unwrap().is_some());
    }
}
