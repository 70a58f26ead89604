//! Agenda ids are scoped per customer: each customer chooses its own ids (and progress ids),
//! and two customers may use the same one without either learning of the other. The
//! aggregate's stream is therefore keyed by both, `agenda-<customer>/<id>` ([`key`]), with the
//! customer part escaped so that the first `/` always ends it (POP's customer ids are often
//! URLs). Within a customer an id names at most one agenda *or* one agenda's progress: a
//! progress id other than the agenda's own id is taken on the stream of that name
//! ([`super::AgendaCommand::TakeProgressId`]), so it can be neither another agenda's id nor
//! another agenda's progress id.

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
}
