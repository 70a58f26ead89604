//! The application layer knows no transport: neither pop-app nor anything it depends on
//! (directly or through store and projections, dev-dependencies included) is axum,
//! async-graphql or an HTTP server. Read from the workspace's Cargo.lock, so the check needs no
//! network and fails the moment such a dependency arrives by any path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Packages that would mean a transport leaked into the use cases.
const TRANSPORTS: &[&str] = &["axum", "axum-core", "async-graphql", "async-graphql-axum", "hyper"];

/// Database clients of the store's backends: how the store talks to its server (KurrentDB's
/// gRPC client, tonic, runs on hyper) is not a transport of the use cases, so the walk does not follow
/// them.
const STORE_CLIENTS: &[&str] = &["kurrentdb", "tonic"];

/// Package name → the names of its dependencies, from Cargo.lock's `[[package]]` entries.
fn lock_graph(lock: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut name: Option<String> = None;
    let mut in_deps = false;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            name = None;
            in_deps = false;
        } else if let Some(n) = line.strip_prefix("name = ") {
            let n = n.trim_matches('"').to_string();
            graph.entry(n.clone()).or_default();
            name = Some(n);
        } else if line.starts_with("dependencies = [") {
            in_deps = true;
        } else if in_deps && line == "]" {
            in_deps = false;
        } else if in_deps && let Some(n) = &name {
            // `"name"` or `"name version"` (when several versions are locked).
            let dep = line.trim_end_matches(',').trim_matches('"');
            let dep = dep.split(' ').next().unwrap_or(dep).to_string();
            graph.entry(n.clone()).or_default().insert(dep);
        }
    }
    graph
}

#[test]
fn the_app_crate_depends_on_no_transport() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    let lock = std::fs::read_to_string(path).expect("the workspace's Cargo.lock is readable");
    let graph = lock_graph(&lock);
    assert!(graph.contains_key("pop-app"), "pop-app is in Cargo.lock");
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([("pop-app".to_string(), vec!["pop-app".to_string()])]);
    while let Some((package, path)) = queue.pop_front() {
        if !seen.insert(package.clone()) || STORE_CLIENTS.contains(&package.as_str()) {
            continue;
        }
        assert!(
            !TRANSPORTS.contains(&package.as_str()),
            "pop-app reaches the transport crate {package} through {}",
            path.join(" -> ")
        );
        for dep in graph.get(&package).into_iter().flatten() {
            let mut next = path.clone();
            next.push(dep.clone());
            queue.push_back((dep.clone(), next));
        }
    }
    // The walk did reach the layers below, so an empty graph cannot pass by accident.
    assert!(
        seen.contains("pop-store") && seen.contains("pop-projections") && seen.contains("tokio")
    );
}

#[test]
fn the_check_sees_a_transport_when_there_is_one() {
    // The api crate, which is a transport, must trip the same walk.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    let lock = std::fs::read_to_string(path).expect("the workspace's Cargo.lock is readable");
    let graph = lock_graph(&lock);
    let api = graph.get("pop-api").expect("pop-api is in Cargo.lock");
    assert!(api.contains("axum") && api.contains("async-graphql"), "{api:?}");
}
