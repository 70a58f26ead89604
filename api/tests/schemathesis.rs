//! Schemathesis against both API surfaces of the real router (support helpers: SQLite store,
//! projections runner, seeded config), with the admin token:
//! - the POP REST surface from its own OpenAPI document (`<base>/pop/openapi.json`): no
//!   generated request gets a 5xx, and every status, body and content type is one the document
//!   declares;
//! - the GraphQL endpoint from its introspected schema (`<base>/graphql`): no generated query or
//!   mutation, with arguments of every type the schema allows, gets a 5xx.
//!
//! The binary is `$POP_SCHEMATHESIS` or `schemathesis` on the PATH (`pip install
//! schemathesis`). Without it each test prints a line starting with `SKIP:` and passes —
//! unless `POP_REQUIRE_SCHEMATHESIS=1`, as in CI, where that is a failure.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use pop_api::ApiConfig;
use support::*;

/// Schemathesis's own time budget for generating and sending requests.
const BUDGET_SECONDS: u32 = 60;

/// Longest the whole run may take (start-up, the budget, shrinking and the report).
const TIMEOUT: Duration = Duration::from_secs(180);

/// Generated requests per operation: 50 operations × 30 stays well inside the budget.
const MAX_EXAMPLES: u32 = 30;

/// What schemathesis asserts of REST: no 5xx; statuses, bodies and content types as documented.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

fn binary() -> String {
    std::env::var("POP_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_string())
}

fn missing_prerequisite(binary: &str) -> Option<String> {
    let status = std::process::Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => None,
        _ => Some(format!(
            "`{binary}` does not run (pip install schemathesis, or set POP_SCHEMATHESIS)"
        )),
    }
}

/// The REST checks: no 5xx; statuses, bodies and content types as documented.
const REST_CHECKS: &str = CHECKS;

/// GraphQL answers 200 with an `errors` list for a refused request. The check is pop's own
/// (`fixtures/schemathesis/pop_hooks.py`): any 5xx, an INTERNAL error or an error without a code fails the
/// run; the generic heuristic would count every refusal that has a `path` as a server error.
const GRAPHQL_CHECKS: &str = "pop_no_server_error";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_undocumented_answers() {
    run("/pop/openapi.json", "", REST_CHECKS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_in_the_graphql_schema() {
    run("/graphql", "/graphql", GRAPHQL_CHECKS).await;
}

/// Starts a seeded server and runs schemathesis with the schema at `location` against requests
/// to `base_path` (both paths on that server).
async fn run(location: &str, base_path: &str, checks: &str) {
    let binary = binary();
    if let Some(why) = missing_prerequisite(&binary) {
        let required = std::env::var("POP_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v == "1");
        assert!(!required, "POP_REQUIRE_SCHEMATHESIS=1 but schemathesis cannot run: {why}");
        let line = format!(
            "SKIP: the schemathesis run did not happen: {why}. Set POP_REQUIRE_SCHEMATHESIS=1 to make this a failure.\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    // A fuzzed `waitSeconds` (up to 30) would hold a request past the tool's request timeout:
    // the server's cap on waits keeps every long poll short here.
    let s =
        start(ApiConfig { max_wait: std::time::Duration::from_secs(1), ..ApiConfig::default() })
            .await;
    let at = s.seed().await;
    s.submit(ACME, "acme", "link-1", &at).await;
    let reports = tempfile::tempdir().expect("a temp dir for the reports");
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("run")
        .arg(format!("{}{location}", s.base))
        .args(["--url", &format!("{}{base_path}", s.base)])
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--checks", checks])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--max-time", &BUDGET_SECONDS.to_string()])
        .args(["--seed", "8"])
        .args(["--request-timeout", "10"])
        .args(["--generation-allow-x00", "false"])
        .args(["--report-dir", &reports.path().display().to_string()])
        // Its cache of past crashes goes to the temp dir, never into the source tree.
        .current_dir(reports.path())
        .env("NO_COLOR", "1")
        // The hooks: a strategy for the `JSON` scalar and the GraphQL check.
        .env("SCHEMATHESIS_HOOKS", "pop_hooks")
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schemathesis"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("schemathesis starts");
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {TIMEOUT:?}"))
        .expect("schemathesis's output is readable");
    println!("---- schemathesis (stdout)");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    println!("---- (stderr)");
    println!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems: {}", output.status);
}
