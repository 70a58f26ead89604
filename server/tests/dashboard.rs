//! The dashboard in a real browser: starts the real `pop serve` (scheduler on, a token file
//! with an admin, a user of `acme`, a user of `globex` and a worker of `acme`), seeds a pool,
//! both customers and the `transcode` insight, then runs `node --test dashboard.test.mjs` in
//! `contract/` — puppeteer-core driving Debian's headless Chromium (`/usr/bin/chromium`, or
//! `POP_CHROMIUM`) — and requires it to pass. The cases (sign in, live list, the DAG with
//! unstarted operations, live bars, cancel, filters, tenant isolation with counts, GraphiQL
//! offline, sign-out, no console errors) are in that file.
//!
//! Without Chromium, `node` or `contract/node_modules` (`npm ci --prefix contract`) it prints
//! a line starting with `SKIP:` and passes — unless `POP_REQUIRE_BROWSER=1`, as in CI, where
//! that is a failure. `POP_SCREENSHOTS=<dir>` saves the screenshots the README shows.

// The shared harness panics on purpose: a broken fixture should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::{Pop, log_tail};

/// Longest the browser suite may run: it takes well under a minute; a hang must not hold CI.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

const ACME: &str = "tok_dash_acme_user_00000000000000";
const GLOBEX: &str = "tok_dash_globex_user_000000000000";
const ACME_SERVICE: &str = "tok_dash_acme_service_00000000000";

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("contract")
}

fn chromium() -> PathBuf {
    std::env::var_os("POP_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Why the browser suite cannot run here, if it cannot.
fn missing_prerequisite(dir: &Path) -> Option<String> {
    let runs = |cmd: &Path| {
        std::process::Command::new(cmd)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs(Path::new("node")) {
        return Some("`node` is not installed or does not run".into());
    }
    if !dir.join("node_modules").join("puppeteer-core").is_dir() {
        return Some(format!(
            "{} has no puppeteer-core (run `npm ci --prefix contract`)",
            dir.display()
        ));
    }
    let browser = chromium();
    if !runs(&browser) {
        return Some(format!(
            "{} does not run (install Debian's `chromium`, or set POP_CHROMIUM)",
            browser.display()
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_headless_chromium() {
    let dir = contract_dir();
    if let Some(why) = missing_prerequisite(&dir) {
        let required = std::env::var("POP_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(!required, "POP_REQUIRE_BROWSER=1 but the browser tests cannot run: {why}");
        let line = format!(
            "SKIP: the dashboard browser tests did not run: {why}. Set POP_REQUIRE_BROWSER=1 to make this a failure.\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    let tmp = tempfile::tempdir().expect("a temp dir");
    let tokens = json!([
        {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
        {"token": GLOBEX, "name": "globex-user", "role": "user", "customers": ["globex"]},
        {"token": ACME_SERVICE, "name": "acme-worker", "role": "service", "customers": ["acme"]},
    ]);
    let token_file = tmp.path().join("tokens.json");
    std::fs::write(&token_file, tokens.to_string()).expect("writing the token file");
    let log = tmp.path().join("pop.log");
    let pop = Pop::start(&tmp.path().join("data"), Some(&token_file), &log, true);
    pop.seed_transcode(&pop.admin, 10).await;
    pop.ok(
        &pop.admin,
        "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
        json!({"c": {"id": "globex", "title": "globex", "resourcePoolId": "pool-1"}}),
    )
    .await;

    let mut command = tokio::process::Command::new("node");
    command
        .args(["--test", "--test-reporter=spec", "dashboard.test.mjs"])
        .current_dir(&dir)
        .env("POP_BASE", pop.base())
        .env("POP_ADMIN", &pop.admin)
        .env("POP_ACME", ACME)
        .env("POP_GLOBEX", GLOBEX)
        .env("POP_ACME_SERVICE", ACME_SERVICE)
        .env("POP_CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("node starts");
    let output = tokio::time::timeout(NODE_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node --test did not finish within {NODE_TIMEOUT:?}"))
        .expect("node's output is readable");
    println!("---- node --test contract/dashboard.test.mjs (stdout)");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    println!("---- (stderr)");
    println!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the dashboard browser tests failed: {}\nserver log:\n{}",
        output.status,
        log_tail(&log)
    );
    // After all that traffic (claims, reports, cancels, errors, subscriptions, timed
    // processes), every series on /metrics has its `# HELP`.
    let text = pop.metrics().await;
    assert!(text.contains("pop_claims_total"), "{text}");
    assert_eq!(pop_api::metrics::undescribed(&text), Vec::<String>::new(), "{text}");
}

/// On its first start without configured tokens, `pop serve` prints a sign-in link with the
/// generated admin token in the URL fragment; the page it names is the dashboard and the token
/// is the admin's. Later starts print the plain address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_prints_a_sign_in_link_with_the_admin_token() {
    use std::io::{BufRead, BufReader};

    /// Kills and reaps the server on drop, so a failing assertion leaks no process.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let tmp = tempfile::tempdir().expect("a temp dir");
    let data = tmp.path().join("data");
    let start_with = |flags: &[&str]| {
        let mut cmd = support::pop_command();
        cmd.arg("serve").arg("--data-dir").arg(&data).args(["--bind", "127.0.0.1:0"]).args(flags);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = Guard(cmd.spawn().expect("spawning pop serve"));
        let stdout = child.0.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = loop {
            match rx.recv_timeout(support::WAIT) {
                Ok(line) if line.starts_with("pop: dashboard: ") => break line,
                Ok(_) => {}
                Err(e) => panic!("no dashboard line within {:?}: {e}", support::WAIT),
            }
        };
        (child, line["pop: dashboard: ".len()..].to_string())
    };
    let start = || start_with(&[]);

    let (child, url) = start();
    let (page, token) = url.split_once("#token=").expect("a sign-in link with #token=");
    let written = std::fs::read_to_string(data.join("admin.token")).expect("the admin token");
    assert_eq!(token, written.trim(), "the link carries the generated admin token");
    let http = reqwest::Client::new();
    let html = http.get(page).send().await.expect("GET /");
    assert_eq!(html.status(), 200);
    assert!(html.text().await.expect("a body").contains("/dashboard/app.js"));
    let me: serde_json::Value = http
        .post(format!("{page}graphql"))
        .bearer_auth(token)
        .json(&json!({"query": "{ me { role customers } }"}))
        .send()
        .await
        .expect("POST /graphql")
        .json()
        .await
        .expect("JSON");
    assert_eq!(me["data"]["me"], json!({"role": "admin", "customers": ["*"]}));
    let text = http.get(format!("{page}metrics")).send().await.expect("GET /metrics");
    let text = text.text().await.expect("a body");
    assert!(text.contains("# HELP pop_api_requests_total"), "{text}");
    assert_eq!(pop_api::metrics::undescribed(&text), Vec::<String>::new(), "{text}");
    drop(child);

    let (child, url) = start();
    assert!(!url.contains("token"), "a later start prints no token: {url}");
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/'), "{url}");
    drop(child);
    // A `--dev` start signs in with it however many starts made it before (newcomer18: the
    // README's plain `serve`, then the tour's `serve --dev`).
    let (_child, url) = start_with(&["--dev"]);
    let (_, again) = url.split_once("#token=").expect("a --dev start's sign-in link");
    assert_eq!(again, written.trim());
}
