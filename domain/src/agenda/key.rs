//! Agenda ids are scoped per customer: each customer chooses its own ids (and progress ids),
//! and two customers may use the same one without either learning of the other. The
//! aggregate's stream is therefore keyed by both, `agenda-<customer>/<id>` ([`key`]), with the
//! customer part escaped so that the first `/` always ends it (POP's customer ids are often
//! URLs). Within a customer an id names at most one agenda *or* one agenda's progress: a
//! progress id other than the agenda's own id is taken on the stream of that name
//! ([`super::AgendaCommand::TakeProgressId`]), so it can be neither another agenda's id nor
//! another agenda's progress id. A resource pool's workers serve several customers, so they are
//! handed a progress id that names the customer too ([`pool_progress_id`]).

/// The aggregate id (stream `agenda-<key>`) of customer `customer_id`'s agenda `agenda_id`.
pub fn key(customer_id: &str, agenda_id: &str) -> String {
    let mut key = String::with_capacity(customer_id.len() + agenda_id.len() + 1);
    for c in customer_id.chars() {
        match c {
            '%' => key.push_str("%25"),
            '/' => key.push_str("%2F"),
            c => key.push(c),
        }
    }
    key.push('/');
    key.push_str(agenda_id);
    key
}

/// The customer and agenda id a [`key`] was made of; `None` for a key without a customer part
/// (streams written by hand or by older builds are keyed by the agenda id alone).
pub fn split(key: &str) -> Option<(String, &str)> {
    let (customer, id) = key.split_once('/')?;
    let mut out = String::with_capacity(customer.len());
    let mut rest = customer;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%25") => out.push('%'),
            Some("%2F") => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some((out, id))
}

/// Separates a progress id from its customer's tag in [`pool_progress_id`].
pub const POOL_TAG_SEPARATOR: char = '~';
/// Characters of a customer's tag in [`pool_progress_id`] (12 × 5 = 60 bits of SHA-256).
pub const POOL_TAG_LENGTH: usize = 12;
const TAG_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The tag of `customer_id` in [`pool_progress_id`]: the first 60 bits of the SHA-256 of the
/// id, in lowercase base32. Stable across builds and replicas (an executor keeps the id it was
/// handed for as long as it runs), and a customer id cannot be chosen to collide with another's.
pub fn customer_tag(customer_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(customer_id.as_bytes());
    let mut bits = 0u64;
    for byte in &digest[..8] {
        bits = (bits << 8) | u64::from(*byte);
    }
    (0..POOL_TAG_LENGTH)
        .map(|i| {
            let index = (bits >> (64 - 5 * (i + 1))) & 31;
            char::from(TAG_ALPHABET[usize::try_from(index).unwrap_or(0)])
        })
        .collect()
}

/// The progress id a resource pool's worker is handed for customer `customer_id`'s agenda of
/// progress id `progress_id`: `<progressId>~<customer tag>` ([`customer_tag`]).
///
/// POP's pullers and executors know an agenda by its progress id alone (an executor's reports
/// name neither the agenda nor the customer), while each customer chooses its own progress ids
/// and two may use the same one. A pool's worker serves every customer of its insights, so the
/// id it is handed names the customer too: its executor's reports (late and stale ones
/// included) then reach exactly the agenda it was handed, whatever another customer submits
/// with the same id, and no customer's agenda waits on another's.
pub fn pool_progress_id(customer_id: &str, progress_id: &str) -> String {
    let mut id = String::with_capacity(progress_id.len() + 1 + POOL_TAG_LENGTH);
    id.push_str(progress_id);
    id.push(POOL_TAG_SEPARATOR);
    id.push_str(&customer_tag(customer_id));
    id
}

/// The progress id and customer tag of an id shaped like a [`pool_progress_id`]; `None` for
/// any other id. A customer's own progress id may have the shape too: whether the tag names
/// an agenda the caller may act on decides ([`pool_progress_id`]'s callers look it up).
pub fn split_pool_progress_id(id: &str) -> Option<(&str, &str)> {
    let (progress_id, tag) = id.rsplit_once(POOL_TAG_SEPARATOR)?;
    let shaped = tag.len() == POOL_TAG_LENGTH && tag.bytes().all(|b| TAG_ALPHABET.contains(&b));
    (shaped && !progress_id.is_empty()).then_some((progress_id, tag))
}

/// Refuses an agenda id or progress id a customer chooses that has the shape of a
/// [`pool_progress_id`] (ends in `~` and [`POOL_TAG_LENGTH`] lowercase base32 characters):
/// such ids are pop's, handed to workers that serve several customers, and a customer's own id
/// of that shape could be read as another customer's pool id (a hostile tenant chose
/// `w2~<acme's tag>` so that a pool worker's report of its run by that id reached acme's `w2`).
///
/// Leading or trailing blanks (any Unicode white space) are refused too: requests that name an
/// agenda trim the ids they carry, so `"z1~<tag> "` was stored as one id and read back as
/// another customer's pool id (hostile probe), and an honest id with a trailing blank could
/// never be reported on.
pub fn check_own_id(field: &str, id: &str) -> Result<(), crate::error::FieldError> {
    let refused =
        |message: String| Err(crate::error::FieldError { field: field.to_string(), message });
    if id.trim() != id {
        return refused(
            "ids have no leading or trailing blanks (requests that name an agenda trim them)"
                .into(),
        );
    }
    if let Err(e) = crate::validate::check_new_id(field, id) {
        return refused(e.message);
    }
    match split_pool_progress_id(id) {
        Some(_) => refused(format!(
            "ids ending in {POOL_TAG_SEPARATOR:?} and {POOL_TAG_LENGTH} letters a-z or digits 2-7 are reserved for the progress ids pop hands to workers; choose another id"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous_and_split_back() {
        for (customer, id) in [
            ("acme", "a1"),
            ("http://x/Account/1", "a/b/c"),
            ("50%/off", "%2F"),
            ("a", "b-c"),
            ("a-b", "c"),
        ] {
            let k = key(customer, id);
            assert_eq!(split(&k), Some((customer.to_string(), id)), "{k}");
        }
        // Different customers never share a key, whatever their ids.
        assert_ne!(key("a/b", "c"), key("a", "b/c"));
        assert_eq!(split("plain"), None);
    }

    #[test]
    fn pool_progress_ids_name_the_customer_and_split_back() {
        let a = pool_progress_id("acme", "job-1");
        let b = pool_progress_id("beta", "job-1");
        assert_ne!(a, b);
        assert_eq!(split_pool_progress_id(&a), Some(("job-1", customer_tag("acme").as_str())));
        assert_eq!(a.len(), "job-1".len() + 1 + POOL_TAG_LENGTH);
        // Stable: an executor keeps its id across restarts and upgrades of the server.
        assert_eq!(customer_tag("acme"), customer_tag("acme"));
        assert_eq!(customer_tag(""), "4oymiquy7qob", "SHA-256 of nothing, 60 bits in base32");
        // A progress id that itself looks like one splits at its last separator.
        let nested = pool_progress_id("beta", &a);
        assert_eq!(
            split_pool_progress_id(&nested),
            Some((a.as_str(), customer_tag("beta").as_str()))
        );
        for plain in ["job-1", "a~b", "~abcdefghijkl", "x~ABCDEFGHIJKL", "x~abcdefghijk1", "x~abc"]
        {
            assert_eq!(split_pool_progress_id(plain), None, "{plain}");
            assert_eq!(check_own_id("id", plain), Ok(()));
        }
        let refused = check_own_id("progressId", &a).unwrap_err();
        assert_eq!(refused.field, "progressId");
        let padded = [format!("{a} "), format!("{a}\u{a0}"), format!("{a}\u{3000}")];
        for padded in padded.iter().map(String::as_str).chain([" x", "x\u{2028}", "x\u{202f}"]) {
            assert!(check_own_id("id", padded).is_err(), "{padded:?}");
        }
    }
}
