//! The contract test with the reference graphql-transport-ws client: starts the real router
//! (support helpers: SQLite store, projections runner) and runs
//! `node --test contract/graphql-ws.test.mjs` against it with `POP_URL`, `POP_HTTP` and
//! `POP_TOKEN` (admin), printing node's output and requiring exit status 0.
//!
//! Without `node` or without `contract/node_modules` (run `npm ci --prefix contract`) it
//! prints a line starting with `SKIP:` and passes — unless `POP_REQUIRE_CONTRACT=1`, as in
//! CI, where that is a failure.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use pop_api::ApiConfig;
use support::*;

/// Longest the node suite may run: it takes a few seconds; a hang must not hold CI forever.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("contract")
}

/// Why the contract cannot run here, if it cannot.
fn missing_prerequisite(dir: &std::path::Path) -> Option<String> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(s) if s.success()) {
        return Some("`node` is not installed or does not run".into());
    }
    if !dir.join("node_modules").join("graphql-ws").is_dir() {
        return Some(format!(
            "{} has no node_modules (run `npm ci --prefix contract`)",
            dir.display()
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_graphql_ws_client_agrees_with_the_server() {
    let dir = contract_dir();
    if let Some(why) = missing_prerequisite(&dir) {
        let required = std::env::var("POP_REQUIRE_CONTRACT").is_ok_and(|v| v == "1");
        assert!(!required, "POP_REQUIRE_CONTRACT=1 but the contract test cannot run: {why}");
        // Straight to stderr: libtest captures `println!`/`eprintln!` of passing tests, and a
        // skipped contract must be seen.
        let line = format!(
            "SKIP: the graphql-ws contract test did not run: {why}. Set POP_REQUIRE_CONTRACT=1 to make this a failure.\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    let s = start(ApiConfig::default()).await;
    // Both WebSocket endpoints: the dedicated path and an upgrade on the GraphQL path.
    for url in [s.ws_url(), format!("ws://{}/graphql", s.addr)] {
        let mut command = tokio::process::Command::new("node");
        command
            .args(["--test", "graphql-ws.test.mjs"])
            .current_dir(&dir)
            .env("POP_URL", &url)
            .env("POP_HTTP", format!("{}/graphql", s.base))
            .env("POP_TOKEN", ADMIN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().expect("node starts");
        let output = tokio::time::timeout(NODE_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("node --test did not finish within {NODE_TIMEOUT:?}"))
            .expect("node's output is readable");
        println!("---- node --test contract/graphql-ws.test.mjs against {url} (stdout)");
        println!("{}", String::from_utf8_lossy(&output.stdout));
        println!("---- (stderr)");
        println!("{}", String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "the graphql-ws contract failed on {url}: {}",
            output.status
        );
    }
}
