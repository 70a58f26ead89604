//! Case-insensitive text comparison, the way DOMAIN.md compares operation names, customer ids,
//! mapper values and insight titles. One definition so every rule folds case the same way.

/// The form two texts are compared in: Unicode lower case (so `É` and `é` match, as they did
/// with POP's Java `equalsIgnoreCase`).
pub fn fold_case(text: &str) -> String {
    text.to_lowercase()
}

/// Whether two texts are equal ignoring case. ASCII is checked first because almost every id and
/// name is ASCII and that check does not allocate.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (!(a.is_ascii() && b.is_ascii()) && fold_case(a) == fold_case(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_ascii_and_unicode() {
        assert!(eq_ignore_case("Acme", "aCME"));
        assert!(eq_ignore_case("Éclair", "éCLAIR"));
        assert!(!eq_ignore_case("acme", "acme2"));
    }
}
