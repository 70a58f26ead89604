//! Who is calling (DOMAIN.md §10): bearer tokens mapped to principals, each with a role and
//! the customers it may see. What a principal may do is the application layer's
//! (`pop_app::caller`); this module only finds out who presented a token. Tokens come from a JSON token file and/or the `POP_TOKENS`
//! environment variable; the embedded default can generate an admin token on first start.
//!
//! Token file (and `POP_TOKENS`) format, a JSON array:
//! `[{"token": "…", "name": "ci", "role": "user", "customers": ["acme"]}, …]`, where
//! `customers` may contain `"*"` (every customer) and `role` is `user`, `service` or `admin`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use pop_projections::Visibility;
use serde::Deserialize;
use uuid::Uuid;

use crate::config::{MAX_TOKEN_FILE_BYTES, MAX_TOKENS};

/// The environment variable holding extra tokens (same JSON as the token file).
pub const TOKENS_ENV: &str = "POP_TOKENS";

/// The file the embedded default keeps its generated admin token in, under the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Shortest token accepted: a token is a password that never expires, so it must be too long
/// to guess (16 bytes of entropy written as text is at least 22 characters).
pub const MIN_TOKEN_LENGTH: usize = 22;

/// Longest token accepted (tokens are compared byte by byte on every request).
pub const MAX_TOKEN_LENGTH: usize = 512;

pub use pop_app::caller::{Action, Principal, Role};

/// Why tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("tokens from {origin} are not valid JSON token entries")]
    Parse {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("token entry {index} ({name:?}) from {origin}: {problem}")]
    Invalid { origin: String, index: usize, name: String, problem: String },
    #[error("more than {MAX_TOKENS} tokens")]
    TooMany,
    #[error(
        "no token: {origin} list none, so every request would be refused; list at least one \
         (an admin token to start with)"
    )]
    Empty { origin: String },
    #[error("cannot write the admin token to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    name: String,
    role: Role,
    #[serde(default)]
    customers: Vec<String>,
}

/// The known tokens. Lookups compare the presented token with every known one in constant
/// time per comparison and never stop early, so response timing does not tell an attacker
/// how much of a token was right, or which entry matched.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Box<[u8]>, Principal)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        let names: Vec<&str> = self.entries.iter().map(|(_, p)| p.name.as_str()).collect();
        f.debug_struct("Tokens").field("principals", &names).finish()
    }
}

impl Tokens {
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Adds one token. Refuses short or overlong tokens, duplicates, and a name already given
    /// to another principal. A principal's name is its identity — the holder of the leases it
    /// takes, the actor in the audit trail, the key of its connection limits — so two tokens
    /// share a name only as two tokens of one principal (same role and customers: a rotation).
    pub fn insert(&mut self, token: &str, principal: Principal) -> Result<(), String> {
        let len = token.len();
        if !(MIN_TOKEN_LENGTH..=MAX_TOKEN_LENGTH).contains(&len) {
            return Err(format!(
                "a token must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} bytes long"
            ));
        }
        if token.chars().any(char::is_whitespace) {
            return Err("a token must not contain whitespace".into());
        }
        if self.entries.len() >= MAX_TOKENS {
            return Err(format!("more than {MAX_TOKENS} tokens"));
        }
        if self.lookup(token).is_some() {
            return Err("the token is already defined".into());
        }
        // Names that differ only in case or surrounding blanks read as one in the audit trail.
        let same_name = |p: &Principal| p.name.trim().eq_ignore_ascii_case(principal.name.trim());
        if let Some((_, other)) = self.entries.iter().find(|(_, p)| same_name(p))
            && *other != principal
        {
            return Err(format!(
                "the name {:?} is already the name of a principal {:?} with another spelling, \
                 role or customers; a name identifies one principal (it holds leases and is the \
                 actor in the audit trail): give this token its own name, or the same name, role \
                 and customers to rotate it",
                principal.name, other.name
            ));
        }
        self.entries.push((token.as_bytes().into(), principal));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the tokens of a JSON array (see the module docs); `origin` names the source in
    /// errors.
    pub fn add_json(&mut self, json: &str, origin: &str) -> Result<(), TokenError> {
        let entries: Vec<TokenEntry> = serde_json::from_str(json)
            .map_err(|source| TokenError::Parse { origin: origin.to_string(), source })?;
        if self.entries.len() + entries.len() > MAX_TOKENS {
            return Err(TokenError::TooMany);
        }
        for (index, e) in entries.into_iter().enumerate() {
            let invalid = |problem: String| TokenError::Invalid {
                origin: origin.to_string(),
                index,
                name: e.name.clone(),
                problem,
            };
            if e.name.trim().is_empty() {
                return Err(invalid("the name is empty".into()));
            }
            if e.customers.is_empty() {
                return Err(invalid("customers is empty (use [\"*\"] for every customer)".into()));
            }
            let principal = Principal {
                name: e.name.clone(),
                role: e.role,
                customers: Visibility::from_ids(e.customers.iter().cloned()),
            };
            self.insert(&e.token, principal).map_err(invalid)?;
        }
        Ok(())
    }

    /// Adds the tokens of a JSON token file.
    pub fn add_file(&mut self, path: &Path) -> Result<(), TokenError> {
        let read = |source| TokenError::Read { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_TOKEN_FILE_BYTES {
            return Err(TokenError::TooLarge { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        self.add_json(&text, &path.display().to_string())
    }

    /// Adds the tokens of `POP_TOKENS` when it is set.
    pub fn add_env(&mut self) -> Result<(), TokenError> {
        match std::env::var(TOKENS_ENV) {
            Ok(json) if !json.trim().is_empty() => self.add_json(&json, TOKENS_ENV),
            _ => Ok(()),
        }
    }

    /// The principal a presented token belongs to.
    pub fn lookup(&self, presented: &str) -> Option<&Principal> {
        let presented = presented.as_bytes();
        let mut found = None;
        for (token, principal) in &self.entries {
            // Evaluate every comparison: no early exit on a match.
            if constant_time_eq(token, presented) {
                found = Some(principal);
            }
        }
        found
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // `black_box` keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// The token in an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The token in a graphql-ws `connection_init` payload: `{"authorization": "Bearer …"}`
/// (also `Authorization`) or `{"token": "…"}`.
pub fn token_from_init_payload(payload: &serde_json::Value) -> Option<String> {
    let obj = payload.as_object()?;
    for key in ["authorization", "Authorization"] {
        if let Some(v) = obj.get(key).and_then(|v| v.as_str()) {
            return bearer(v).map(str::to_string);
        }
    }
    obj.get("token")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// A fresh random token: 244 bits from the operating system's generator (two v4 UUIDs),
/// written as hex with a `pop_` prefix so it is recognisable in a leaked config.
pub fn generate_token() -> String {
    format!("pop_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// The admin principal of the embedded default.
pub fn default_admin() -> Principal {
    Principal { name: "admin".into(), role: Role::Admin, customers: Visibility::All }
}

/// The admin token of the embedded default: read from `<data_dir>/admin.token` if it exists,
/// else generated and written there with mode 0600. Returns the token and whether it was
/// just created (so the server prints it once, on first start only).
pub fn ensure_admin_token(data_dir: &Path) -> Result<(String, bool), TokenError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(TokenError::Read { path, source }),
    }
    let write = |source| TokenError::Write { path: path.clone(), source };
    std::fs::create_dir_all(data_dir).map_err(write)?;
    let token = generate_token();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(write)?;
    // `mode` applies only when the file is created; an empty file left behind keeps its own.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write)?;
    }
    file.write_all(format!("{token}\n").as_bytes()).map_err(write)?;
    file.sync_all().map_err(write)?;
    Ok((token, true))
}

/// Loads the tokens `pop serve` uses: the token file if given, then `POP_TOKENS`, then (when
/// `data_dir` is given: `pop serve` gives it only when no token file and no `POP_TOKENS`
/// are configured) the admin token of
/// [`ensure_admin_token`]. Returns the tokens and the admin token when it was just generated.
pub fn load_tokens(
    token_file: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<(Tokens, Option<String>), TokenError> {
    let mut tokens = Tokens::new();
    if let Some(path) = token_file {
        tokens.add_file(path)?;
    }
    tokens.add_env()?;
    let mut fresh = None;
    if let Some(dir) = data_dir {
        let (token, created) = ensure_admin_token(dir)?;
        if tokens.lookup(&token).is_none() {
            tokens.insert(&token, default_admin()).map_err(|problem| TokenError::Invalid {
                origin: dir.join(ADMIN_TOKEN_FILE).display().to_string(),
                index: 0,
                name: "admin".into(),
                problem,
            })?;
        }
        if created {
            fresh = Some(token);
        }
    }
    // A server no token can reach serves nobody: refused at start, not found by the first
    // client's 401 (ops3am7: `[]` in the token file started a server that said nothing).
    if tokens.is_empty() {
        let origin = match token_file {
            Some(path) => format!("the token file {} and {TOKENS_ENV}", path.display()),
            None => TOKENS_ENV.to_string(),
        };
        return Err(TokenError::Empty { origin });
    }
    Ok((tokens, fresh))
}

/// Convenience for tests and tools: a principal from its parts.
pub fn principal(name: &str, role: Role, customers: &[&str]) -> Principal {
    Principal::new(name, role, customers)
}

/// The customer ids of a visibility (`None` for all).
pub fn customer_ids(v: &Visibility) -> Option<&BTreeSet<String>> {
    match v {
        Visibility::All => None,
        Visibility::Customers(ids) => Some(ids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "tok_aaaaaaaaaaaaaaaaaaaaaaaa";
    const T2: &str = "tok_bbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn json_tokens_load_and_look_up() {
        let mut tokens = Tokens::new();
        let json = format!(
            r#"[{{"token":"{T1}","name":"a","role":"user","customers":["acme"]}},
                {{"token":"{T2}","name":"root","role":"admin","customers":["*"]}}]"#
        );
        tokens.add_json(&json, "test").unwrap();
        let a = tokens.lookup(T1).unwrap();
        assert_eq!((a.name.as_str(), a.role), ("a", Role::User));
        assert!(a.sees("acme") && !a.sees("other"));
        assert_eq!(tokens.lookup(T2).unwrap().customers, Visibility::All);
        assert!(tokens.lookup("tok_aaaaaaaaaaaaaaaaaaaaaaab").is_none());
        assert!(tokens.lookup("").is_none());
        assert!(!format!("{tokens:?}").contains(T1), "Debug must not print secrets");
    }

    #[test]
    fn bad_entries_are_refused() {
        for json in [
            r#"[{"token":"short","name":"a","role":"user","customers":["x"]}]"#,
            r#"[{"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"a","role":"root","customers":["x"]}]"#,
            r#"[{"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"a","role":"user","customers":[]}]"#,
            r#"[{"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"a","role":"user","customers":["x"]},
                {"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"b","role":"user","customers":["x"]}]"#,
            // One name, two principals: another tenant's worker would hold the other's leases.
            r#"[{"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"worker","role":"service","customers":["acme"]},
                {"token":"tok_bbbbbbbbbbbbbbbbbbbbbbbb","name":"worker","role":"service","customers":["globex"]}]"#,
            r#"[{"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"worker","role":"service","customers":["acme"]},
                {"token":"tok_bbbbbbbbbbbbbbbbbbbbbbbb","name":"worker","role":"admin","customers":["acme"]}]"#,
            r#"[{"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"worker","role":"service","customers":["acme"]},
                {"token":"tok_bbbbbbbbbbbbbbbbbbbbbbbb","name":"Worker ","role":"service","customers":["acme"]}]"#,
            r#"{"token":"x"}"#,
        ] {
            assert!(Tokens::new().add_json(json, "t").is_err(), "{json}");
        }
        // Two tokens of one principal (a rotation) are fine, in any order of customers.
        let rotation = r#"[{"token":"tok_aaaaaaaaaaaaaaaaaaaaaaaa","name":"worker","role":"service","customers":["acme","globex"]},
            {"token":"tok_bbbbbbbbbbbbbbbbbbbbbbbb","name":"worker","role":"service","customers":["globex","acme"]}]"#;
        let mut tokens = Tokens::new();
        tokens.add_json(rotation, "t").unwrap();
        assert_eq!(tokens.len(), 2);
    }

    #[test]
    fn bearer_and_init_payloads() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        let p = serde_json::json!({"authorization": "Bearer xyz"});
        assert_eq!(token_from_init_payload(&p).as_deref(), Some("xyz"));
        let p = serde_json::json!({"token": "xyz"});
        assert_eq!(token_from_init_payload(&p).as_deref(), Some("xyz"));
        assert_eq!(token_from_init_payload(&serde_json::json!(null)), None);
    }

    #[test]
    fn admin_token_is_generated_once_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (token, created) = ensure_admin_token(dir.path()).unwrap();
        assert!(created && token.starts_with("pop_") && token.len() >= MIN_TOKEN_LENGTH);
        let mode =
            std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = ensure_admin_token(dir.path()).unwrap();
        assert_eq!((again, created), (token.clone(), false));
        let (tokens, fresh) = load_tokens(None, Some(dir.path())).unwrap();
        assert_eq!(fresh, None);
        assert_eq!(tokens.lookup(&token).unwrap().role, Role::Admin);
    }

    /// A token file that lists no token starts no server that refuses everyone (ops3am7).
    #[test]
    fn a_token_file_listing_none_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.json");
        std::fs::write(&file, "[]").unwrap();
        let refused = load_tokens(Some(&file), None).map(|_| ()).unwrap_err();
        assert!(matches!(refused, TokenError::Empty { .. }), "{refused}");
        assert!(refused.to_string().contains("tokens.json"), "{refused}");
    }
}
