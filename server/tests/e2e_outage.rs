//! A storage outage through the real `pop` binary: `pop serve` on a PostgreSQL database of a
//! throwaway cluster of its own, which the test stops and starts again. While the database is
//! down, a write answers UNAVAILABLE — GraphQL in the error's extensions (`retryable`,
//! `retryAfterSeconds`) with a `Retry-After` header, REST with status 503 and `Retry-After` —
//! never INTERNAL, and `/readyz` answers 503; once the database is back, readiness returns by
//! itself and the same write succeeds. Every wait is bounded ([`WAIT`]).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use pop_store::test_cluster::{ClusterDurability, TestCluster};
use serde_json::{Value, json};
use support::{Pop, WAIT, log_tail};

const ACME: &str = "tok_outage_acme_user_000000000000";
const SUBMIT: &str = "mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id } position } }";

fn agenda(id: &str) -> Value {
    json!({"id": id, "customerId": "acme", "title": "transcode",
        "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}}]})
}

/// `/readyz`'s status.
async fn ready(pop: &Pop) -> u16 {
    match pop.http.get(format!("{}/readyz", pop.base())).send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("/readyz did not answer: {e}"),
    }
}

async fn wait_ready(pop: &Pop, wanted: u16) {
    let deadline = Instant::now() + WAIT;
    while ready(pop).await != wanted {
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer {wanted} within {WAIT:?}\nlog:\n{}",
            log_tail(&pop.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_unavailable_and_readiness_comes_back() {
    let Some(cluster) =
        TestCluster::start("a_database_outage_answers_unavailable", ClusterDurability::Fast)
            .expect("a cluster of its own")
    else {
        return;
    };
    let url = cluster.create_database().await.expect("a database");
    let dir = tempfile::tempdir().unwrap();
    let tokens =
        json!([{"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]}]);
    std::fs::write(dir.path().join("tokens.json"), tokens.to_string()).unwrap();
    let pop = Pop::start_on(
        &dir.path().join("data"),
        Some(&dir.path().join("tokens.json")),
        &dir.path().join("pop.log"),
        false,
        Some(&url),
    );
    pop.seed_transcode(&pop.admin, 5).await;
    wait_ready(&pop, 200).await;

    let cluster = tokio::task::spawn_blocking(move || cluster.stop().map(|()| cluster))
        .await
        .unwrap()
        .expect("stopping the cluster");

    // GraphQL: UNAVAILABLE in the extensions, retryable, with Retry-After.
    let response = pop
        .http
        .post(format!("{}/graphql", pop.base()))
        .bearer_auth(ACME)
        .json(&json!({"query": SUBMIT, "variables": {"a": agenda("during")}}))
        .send()
        .await
        .unwrap();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.unwrap();
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{body:#}\n{}", log_tail(&pop.log));
    assert_eq!(error["extensions"]["retryable"], true, "{body:#}");
    assert_eq!(error["extensions"]["retryAfterSeconds"], 1, "{body:#}");
    assert!(error["extensions"]["cid"].is_string(), "{body:#}");
    assert_eq!(retry_after.as_ref().and_then(|v| v.to_str().ok()), Some("1"), "{body:#}");
    // The operator finds the cause under the cid the client printed.
    let cid = error["extensions"]["cid"].as_str().unwrap_or_default();
    let log = std::fs::read_to_string(&pop.log).unwrap_or_default();
    // (The store's failure, or the projections' that it stops, whichever the request met.)
    assert!(
        log.lines().any(|l| l.contains(cid)
            && (l.contains("event store is unavailable") || l.contains("cannot read the log"))),
        "no log line names cid {cid}:\n{}",
        log_tail(&pop.log)
    );

    // REST: status 503 with Retry-After and the code in POP's envelope.
    let response = pop
        .http
        .post(format!("{}/pop/agenda", pop.base()))
        .bearer_auth(ACME)
        .json(&agenda("during-rest"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["errorResponse"]["code"], "UNAVAILABLE", "{body:#}");
    assert_eq!(retry_after.as_ref().and_then(|v| v.to_str().ok()), Some("1"), "{body:#}");

    // The CLI sends a retryable answer's request again: started during the outage, it says
    // so and succeeds once the database is back.
    let cli_log = dir.path().join("cli.log");
    let mut cli = support::pop_command()
        .args(["gql", "--server", &pop.base(), "--token", ACME, SUBMIT, "--variables"])
        .arg(json!({"a": agenda("from-the-cli")}).to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&cli_log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&cli_log).unwrap_or_default().contains("retrying") {
        if Instant::now() > deadline || cli.try_wait().unwrap().is_some() {
            let _ = cli.kill();
            panic!("pop gql did not retry\n{}", log_tail(&cli_log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_to_string(&cli_log).unwrap().contains("UNAVAILABLE"));

    // Not ready while the store cannot serve; ready again by itself once it can.
    wait_ready(&pop, 503).await;
    let cluster = tokio::task::spawn_blocking(move || cluster.start_again().map(|()| cluster))
        .await
        .unwrap()
        .expect("starting the cluster again");
    wait_ready(&pop, 200).await;
    let cli = tokio::task::spawn_blocking(move || cli.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "pop gql: {stdout}\n{}", log_tail(&cli_log));
    assert!(stdout.contains("from-the-cli"), "{stdout}");
    let data = pop.ok(ACME, SUBMIT, json!({"a": agenda("after")})).await;
    assert_eq!(data["submitAgenda"]["agenda"]["id"], "after", "{data:#}");
    drop(pop);
    drop(cluster);
}

/// Submits, as acme, an agenda named `id` whose payload carries `blob`; the GraphQL answer.
async fn submit_blob(pop: &Pop, id: &str, blob: &str) -> Value {
    let mut a = agenda(id);
    a["operations"][0]["payload"]["blob"] = json!(blob);
    let response = pop
        .http
        .post(format!("{}/graphql", pop.base()))
        .bearer_auth(ACME)
        .json(&json!({"query": SUBMIT, "variables": {"a": a}}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer to submit {id}: {e}\n{}", log_tail(&pop.log)));
    response.json().await.unwrap()
}

/// A write past the file-size limit (`ulimit -f`) is the store's failure, not the process's
/// death (ops3am5: SIGXFSZ killed `pop serve` without a line in its log, and a restart under
/// the same limit said "ready" and died at its first write): the submit that does not fit is
/// refused as UNAVAILABLE (like a full disk) with its cid, the server goes on answering, and every agenda it
/// acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_the_file_size_limit_is_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let tokens =
        json!([{"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]}]);
    std::fs::write(dir.path().join("tokens.json"), tokens.to_string()).unwrap();
    let mut pop = Pop::start_wrapped(
        &dir.path().join("data"),
        Some(&dir.path().join("tokens.json")),
        &dir.path().join("pop.log"),
        false,
        &[],
        &[],
        Some(4096),
    );
    pop.seed_transcode(&pop.admin, 5).await;
    let blob = "x".repeat(100_000);
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let body = submit_blob(&pop, &format!("big-{i}"), &blob).await;
        if body.get("errors").is_some() {
            refused = Some(body);
            break;
        }
        acknowledged.push(format!("big-{i}"));
    }
    let refused = refused.expect("4 MiB of files took 400 agendas of 100 kB");
    eprintln!(
        "figure: {} agendas acknowledged under ulimit -f 4096; then {refused}",
        acknowledged.len()
    );
    let error = &refused["errors"][0];
    assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{refused:#}");
    assert!(error["extensions"]["cid"].is_string(), "{refused:#}");
    assert!(pop.child.try_wait().unwrap().is_none(), "the server died:\n{}", log_tail(&pop.log));
    let health = pop.http.get(format!("{}/healthz", pop.base())).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let said = std::fs::read_to_string(&pop.log).unwrap_or_default();
    assert!(said.contains("runs under a file-size limit"), "not said at start:\n{said}");
    // The refused write asked for the WAL to be copied back: writes fit again without a
    // restart (ops3am6: every later write failed until one).
    let mut recovered = None;
    for attempt in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = submit_blob(&pop, &format!("after-{attempt}"), &blob).await;
        if body.get("errors").is_none() {
            recovered = Some(format!("after-{attempt}"));
            break;
        }
    }
    let recovered = recovered.expect("writes fit again once the WAL was copied back");
    acknowledged.push(recovered);
    for id in &acknowledged {
        let data =
            pop.ok(ACME, "query($id: String!) { agenda(id: $id) { id } }", json!({"id": id})).await;
        assert_eq!(data["agenda"]["id"], json!(id), "{data:#}");
    }
}

/// A start while the database is down waits for it (`--store-connect-wait`), saying why at
/// WARN, and serves once it is back (operator60 M3: `pop serve` ended at once, and under
/// Kubernetes a cold start of the database left the pods crash-looping); with no wait it ends
/// at once, naming the flag when the wait ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waits_for_a_database_that_is_down() {
    let Some(cluster) =
        TestCluster::start("a_start_waits_for_a_database_that_is_down", ClusterDurability::Fast)
            .expect("a cluster of its own")
    else {
        return;
    };
    let url = cluster.create_database().await.expect("a database");
    let cluster = tokio::task::spawn_blocking(move || cluster.stop().map(|()| cluster))
        .await
        .unwrap()
        .expect("stopping the cluster");
    let dir = tempfile::tempdir().unwrap();
    let tokens =
        json!([{"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]}]);
    std::fs::write(dir.path().join("tokens.json"), tokens.to_string()).unwrap();

    // A wait shorter than the outage: it ends, naming the flag.
    let mut cmd = support::pop_command();
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--store", &url, "--store-connect-wait", "2"])
        .arg("--data-dir")
        .arg(dir.path().join("short"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited: {:?}", started.elapsed());
    assert!(stderr.contains("does not answer yet"), "{stderr}");
    assert!(stderr.contains("--store-connect-wait (2 s)"), "{stderr}");

    // The default wait: the database comes back once the start has said it waits.
    let log = dir.path().join("pop.log");
    let watched = log.clone();
    let back = std::thread::spawn(move || {
        let deadline = Instant::now() + WAIT;
        while !std::fs::read_to_string(&watched).unwrap_or_default().contains("does not answer yet")
        {
            assert!(Instant::now() < deadline, "the start never said it waits");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster.start_again().map(|()| cluster)
    });
    let pop = tokio::task::spawn_blocking(move || {
        Pop::start_on(
            &dir.path().join("data"),
            Some(&dir.path().join("tokens.json")),
            &log,
            false,
            Some(&url),
        )
    })
    .await
    .unwrap();
    let _cluster = back.join().unwrap().expect("the cluster back");
    wait_ready(&pop, 200).await;
    pop.seed_transcode(&pop.admin, 5).await;
    let done = pop.ok(ACME, SUBMIT, json!({"a": agenda("after-wait")})).await;
    assert_eq!(done["submitAgenda"]["agenda"]["id"], "after-wait", "{done:#}");
}
