//! Tenancy of agenda identities (issue 12, items 1, 2, 3 and 5), over real HTTP: agenda ids
//! and progress ids are chosen per customer, so another tenant can neither take over a
//! progress id, learn that an id exists, nor shadow an operation's progress; and a pool's
//! service token serves every customer of a shared insight, reaching another customer's agenda
//! only while it holds its lease.

#![allow(clippy::unwrap_used)]

mod support;

use pop_api::ApiConfig;
use pop_reapers::scheduler::{Memory, pass};
use serde_json::{Value, json};
use support::*;

const SUBMIT: &str = "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
    { agenda { id customerId progressId } position } }";
const AGENDA: &str = "query($id: String!, $c: String) { agenda(id: $id, customerId: $c) \
    { id customerId linkId progressId } }";
const PROGRESS: &str = "query($id: String!, $c: String) { agendaProgress(id: $id, customerId: $c) \
    { id agendaId customerId processingState operationProgress { operation processingState resultPayload } } }";
const OPERATION: &str = "query($id: String!) { operationProgress(id: $id) \
    { id customerId agendaProgressId operation } }";
const CLAIM: &str = "mutation($n: Int!) { getAgenda(insightId: \"transcode\", count: $n) \
    { agenda { id customerId progressId } lease { id } } }";
const REPORT: &str = "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) \
    { agenda { id customerId } progress { processingState } } }";

/// An agenda of `customer` with a chosen id, progress id and operation names.
fn named(customer: &str, id: &str, progress_id: &str, operations: &[&str]) -> Value {
    let operations: Vec<Value> = operations
        .iter()
        .map(|name| json!({"name": name, "type": "ffmpeg", "payload": {"src": "in.mp4"}}))
        .collect();
    json!({"id": id, "progressId": progress_id, "customerId": customer, "linkId": customer,
           "title": "t", "operations": operations})
}

async fn submit(s: &TestServer, token: &str, agenda: Value, after: &str) -> Value {
    s.ok(token, SUBMIT, json!({"a": agenda, "p": after})).await["submitAgenda"].clone()
}

/// One scheduler pass once the read models have every acknowledged write; waits until its
/// moves are applied.
async fn queue_all(s: &TestServer) {
    let projections = s.state.projections();
    projections.wait_for(s.commands.written(), WAIT).await.unwrap();
    // Nothing to move is an answer too (`None`).
    if let Some(moved) = pass(&s.commands, projections, &mut Memory::default()).await {
        projections.wait_for(moved, WAIT).await.unwrap();
    }
}

fn executing(progress_id: &str, agenda_id: Option<&str>, operation: &str, result: &str) -> Value {
    let mut p = json!({"id": progress_id, "processingState": "EXECUTING",
        "operationProgress": [{"operation": operation, "processingState": "COMPLETE",
                               "processingStateMessage": "succeeded", "resultPayload": {"r": result}}]});
    if let Some(a) = agenda_id {
        p["agendaId"] = json!(a);
    }
    p
}

/// GETs `url` over REST as `token`; the JSON answer.
async fn rest_get(s: &TestServer, token: &str, url: &str) -> Value {
    s.http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

fn problem_fields(e: &Value) -> Vec<String> {
    e["extensions"]["problems"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["field"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Item 2: an id another tenant uses is no oracle — both submits succeed, each customer reads
/// its own agenda, a cancel by one leaves the other alone, and a caller who sees both is asked
/// to name the customer rather than handed either.
#[tokio::test]
async fn the_same_agenda_id_in_two_customers_is_two_agendas_and_no_oracle() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let acme = submit(&s, ACME, named("acme", "job-1", "job-1", &["probe"]), &after).await;
    assert_eq!(acme["agenda"]["customerId"], "acme");
    // Before: 409 "already exists" — telling globex that acme uses the id.
    let globex = submit(&s, GLOBEX, named("globex", "job-1", "job-1", &["probe"]), &after).await;
    assert_eq!(globex["agenda"]["id"], "job-1");
    assert_eq!(globex["agenda"]["customerId"], "globex");

    for (token, customer) in [(ACME, "acme"), (GLOBEX, "globex")] {
        let a = s.ok(token, AGENDA, json!({"id": "job-1"})).await;
        assert_eq!(a["agenda"]["customerId"], customer, "{a:#}");
        assert_eq!(a["agenda"]["linkId"], customer, "{a:#}");
        let p = s.ok(token, PROGRESS, json!({"id": "job-1"})).await;
        assert_eq!(p["agendaProgress"]["customerId"], customer, "{p:#}");
        // Naming the other customer is the same as naming nothing that exists.
        let other = if customer == "acme" { "globex" } else { "acme" };
        let a = s.ok(token, AGENDA, json!({"id": "job-1", "c": other})).await;
        assert!(a["agenda"].is_null(), "{a:#}");
    }

    // Within one customer an id is still taken once.
    let e = s
        .err(ACME, SUBMIT, json!({"a": named("acme", "job-1", "other", &["probe"]), "p": after}))
        .await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");

    // The admin sees both customers: it must say which.
    let e = s.err(ADMIN, AGENDA, json!({"id": "job-1"})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(problem_fields(&e), ["customerId"], "{e:#}");
    let a = s.ok(ADMIN, AGENDA, json!({"id": "job-1", "c": "globex"})).await;
    assert_eq!(a["agenda"]["customerId"], "globex");

    // globex cancels its job-1; acme's is untouched.
    s.cancel(GLOBEX, "job-1").await;
    let p = s.ok(ACME, PROGRESS, json!({"id": "job-1"})).await;
    assert_eq!(p["agendaProgress"]["processingState"], "WAITING", "{p:#}");
    let p = s.ok(GLOBEX, PROGRESS, json!({"id": "job-1"})).await;
    assert_eq!(p["agendaProgress"]["processingState"], "COMPLETE", "{p:#}");

    // Over REST, by path: each customer gets its own.
    for (token, customer) in [(ACME, "acme"), (GLOBEX, "globex")] {
        let answer = rest_get(&s, token, &format!("{}/pop/agenda/job-1", s.base)).await;
        assert_eq!(answer["all"][0]["customerId"], customer, "{answer:#}");
    }
    // The admin's path names one object too: refused as over GraphQL (it was answered both,
    // and POP's getObject takes the first), unless the customer is named; a query by id
    // lists what matches.
    for path in ["agenda/job-1", "progress/agenda/job-1"] {
        let url = format!("{}/pop/{path}", s.base);
        let answer = s.http.get(&url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{path}");
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["errorResponse"]["code"], "VALIDATION", "{answer:#}");
        let named = rest_get(&s, ADMIN, &format!("{url}?byCustomerId=globex")).await;
        assert_eq!(named["all"].as_array().unwrap().len(), 1, "{named:#}");
        assert_eq!(named["all"][0]["customerId"], "globex", "{named:#}");
    }
    let listed = rest_get(&s, ADMIN, &format!("{}/pop/agenda?byId=job-1", s.base)).await;
    assert_eq!(listed["all"].as_array().unwrap().len(), 2, "{listed:#}");
}

/// Item 1: another tenant that submits with the victim's progress id takes nothing — the
/// victim's progress stays readable, and the victim's executor's reports (result payloads
/// included) land in the victim's agenda. A report whose progress id is not the named
/// agenda's is refused.
#[tokio::test]
async fn another_customers_progress_id_cannot_take_over_yours() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, ACME, named("acme", "victim", "p-victim", &["probe"]), &after).await;
    // Before: accepted, and the progress-id index then pointed at globex's agenda.
    submit(&s, GLOBEX, named("globex", "attacker", "p-victim", &["probe"]), &after).await;

    let p = s.ok(ACME, PROGRESS, json!({"id": "p-victim"})).await;
    assert_eq!(p["agendaProgress"]["agendaId"], "victim", "{p:#}");
    assert_eq!(p["agendaProgress"]["customerId"], "acme", "{p:#}");
    let over_rest = rest_get(&s, ACME, &format!("{}/pop/progress/agenda/p-victim", s.base)).await;
    assert_eq!(over_rest["all"][0]["agendaId"], "victim", "{over_rest:#}");

    // Within acme the progress id is taken: as an agenda id or another agenda's progress id.
    for agenda in
        [named("acme", "p-victim", "q", &["probe"]), named("acme", "x", "p-victim", &["probe"])]
    {
        let e = s.err(ACME, SUBMIT, json!({"a": agenda, "p": after})).await;
        assert_eq!(code(&e), "CONFLICT", "{e:#}");
    }

    // The pool's worker (ops runs the global insight) is handed both, each under the pool's
    // progress id, which names the customer (POP's puller knows agendas by progress id), and
    // reports for the victim with the id it was handed.
    queue_all(&s).await;
    let claimed = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    assert_eq!(claimed["getAgenda"].as_array().unwrap().len(), 2, "{claimed:#}");
    handed_as(&claimed, "acme", "victim", "p-victim");
    handed_as(&claimed, "globex", "attacker", "p-victim");
    let r = s
        .ok(
            OPS_SERVICE,
            REPORT,
            json!({"p": executing(&pool_id("acme", "p-victim"), Some("victim"), "probe", "secret")}),
        )
        .await;
    assert_eq!(r["updateAgendaProgress"]["agenda"]["customerId"], "acme", "{r:#}");
    let p = s.ok(ACME, PROGRESS, json!({"id": "p-victim"})).await;
    assert_eq!(
        p["agendaProgress"]["operationProgress"][0]["resultPayload"],
        json!({"r": "secret"})
    );
    let p = s.ok(GLOBEX, PROGRESS, json!({"id": "p-victim"})).await;
    assert_eq!(p["agendaProgress"]["agendaId"], "attacker");
    assert_eq!(p["agendaProgress"]["operationProgress"][0]["processingState"], "WAITING", "{p:#}");

    // The progress id alone names two customers' agendas an admin reaches as a worker of the
    // pool: refused, naming customerId, and never routed to the attacker's.
    let e = s.err(ADMIN, REPORT, json!({"p": executing("p-victim", None, "probe", "x")})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(problem_fields(&e), ["customerId"], "{e:#}");
    let p = s.ok(GLOBEX, PROGRESS, json!({"id": "p-victim"})).await;
    assert_eq!(p["agendaProgress"]["operationProgress"][0]["processingState"], "WAITING", "{p:#}");
    // A progress id that is not the named agenda's is refused, never routed elsewhere.
    let e = s
        .err(ADMIN, REPORT, json!({"p": executing("p-other", Some("victim"), "probe", "x")}))
        .await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(problem_fields(&e), ["agendaProgress.id"], "{e:#}");
}

/// Item 3: OperationProgress ids are `<progressId>-<operation>` with `-` allowed in both; an
/// agenda `a-b` with operation `c` of another customer cannot shadow agenda `a`'s operation
/// `b-c`, and within one customer the ambiguity is an error, never a guess.
#[tokio::test]
async fn operation_progress_ids_with_dashes_are_never_shadowed_by_another_customer() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, ACME, named("acme", "a", "a", &["b-c"]), &after).await;
    submit(&s, GLOBEX, named("globex", "a-b", "a-b", &["c"]), &after).await;

    let o = s.ok(ACME, OPERATION, json!({"id": "a-b-c"})).await;
    assert_eq!(o["operationProgress"]["customerId"], "acme", "{o:#}");
    assert_eq!(o["operationProgress"]["operation"], "b-c", "{o:#}");
    assert_eq!(o["operationProgress"]["agendaProgressId"], "a", "{o:#}");
    let o = s.ok(GLOBEX, OPERATION, json!({"id": "a-b-c"})).await;
    assert_eq!(o["operationProgress"]["customerId"], "globex", "{o:#}");
    assert_eq!(o["operationProgress"]["operation"], "c", "{o:#}");

    // The admin sees both: ambiguous, said so.
    let e = s.err(ADMIN, OPERATION, json!({"id": "a-b-c"})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    // REST, by path, for each customer.
    for (token, operation) in [(ACME, "b-c"), (GLOBEX, "c")] {
        let answer = rest_get(&s, token, &format!("{}/pop/progress/operation/a-b-c", s.base)).await;
        assert_eq!(answer["all"][0]["operation"], operation, "{answer:#}");
    }
}

/// Item 5: a pool's service token — one that sees the insight's or the pool's owner — takes from
/// a shared (global) insight the agendas of every customer it serves — before, only those of
/// customers in its own list, while the others held the queue's slots — and may report on and
/// expand another customer's agenda exactly while it holds its lease. A worker of a customer
/// the insight merely serves takes only that customer's agendas.
#[tokio::test]
async fn a_pool_worker_serves_every_customer_of_a_shared_insight_under_its_lease() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, GLOBEX, named("globex", "g-1", "g-1", &["probe", "encode"]), &after).await;
    queue_all(&s).await;

    // acme's own worker takes only acme's agendas from the global insight it may use: not
    // globex's (a probe drained and falsified another tenant's work this way).
    let claimed = s.ok(ACME_SERVICE, CLAIM, json!({"n": 2})).await;
    assert_eq!(claimed["getAgenda"], json!([]), "{claimed:#}");
    // ops' token lists only ops, yet it is the pool's worker: ops runs the insight.
    let claimed = s.ok(OPS_SERVICE, CLAIM, json!({"n": 2})).await;
    let items = claimed["getAgenda"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{claimed:#}");
    assert_eq!(items[0]["agenda"]["customerId"], "globex");

    // Another token of the same list, not holding the lease, cannot reach it.
    let e = s
        .err(OPS_SERVICE_2, REPORT, json!({"p": executing("g-1", Some("g-1"), "probe", "x")}))
        .await;
    assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
    // The holder reports and expands it.
    let r =
        s.ok(OPS_SERVICE, REPORT, json!({"p": executing("g-1", Some("g-1"), "probe", "ok")})).await;
    assert_eq!(r["updateAgendaProgress"]["progress"]["processingState"], "EXECUTING", "{r:#}");
    let expand = "mutation($id: String!, $o: JSON!) { expandAgenda(agendaId: $id, operations: $o) \
        { progress { operationProgress { operation } } } }";
    let ops = json!([{"name": "more", "type": "ffmpeg", "payload": {}}]);
    let x = s.ok(OPS_SERVICE, expand, json!({"id": "g-1", "o": ops})).await;
    assert_eq!(x["expandAgenda"]["progress"]["operationProgress"].as_array().unwrap().len(), 3);
    let p = s.ok(GLOBEX, PROGRESS, json!({"id": "g-1"})).await;
    assert_eq!(p["agendaProgress"]["operationProgress"][0]["resultPayload"], json!({"r": "ok"}));
    // It reads it while it holds it; globex's user still sees only its own.
    let a = s.ok(OPS_SERVICE, AGENDA, json!({"id": "g-1"})).await;
    assert_eq!(a["agenda"]["customerId"], "globex");
    // Once finished the lease is gone, and so is the worker's reach.
    let done = json!({"id": "g-1", "agendaId": "g-1", "processingState": "COMPLETE",
        "processingStateMessage": "succeeded",
        "operationProgress": [
            {"operation": "encode", "processingState": "COMPLETE", "processingStateMessage": "succeeded"},
            {"operation": "more", "processingState": "COMPLETE", "processingStateMessage": "succeeded"}]});
    s.ok(OPS_SERVICE, REPORT, json!({"p": done})).await;
    let a = s.ok(OPS_SERVICE, AGENDA, json!({"id": "g-1"})).await;
    assert!(a["agenda"].is_null(), "{a:#}");
    // Its executor's repeat of an operation's report after the agenda completed (as POP's
    // executor re-sends a report it got no answer to) reaches it by the agenda id too — the
    // worker runs the insight — and changes nothing.
    let r = s
        .ok(OPS_SERVICE, REPORT, json!({"p": executing("g-1", Some("g-1"), "probe", "late")}))
        .await;
    assert_eq!(r["updateAgendaProgress"]["progress"]["processingState"], "COMPLETE", "{r:#}");
    let p = s.ok(GLOBEX, PROGRESS, json!({"id": "g-1"})).await;
    assert_eq!(p["agendaProgress"]["operationProgress"][0]["resultPayload"], json!({"r": "ok"}));
    // Except for its executor's own outcome report: taken, with the reason it adds, by the
    // progress id alone, as POP's executor sends it (AgendaProgressFactory sets neither the
    // agenda id nor the customer; it was NOT_FOUND), and again naming them. Another worker of
    // the pool, which did not hold the lease, still reaches nothing.
    let outcome = json!({"id": "g-1", "processingState": "COMPLETE",
        "processingStateMessage": "succeeded",
        "diagnosticEvents": [{"message": "all renditions uploaded"}]});
    let e = s.err(OPS_SERVICE_2, REPORT, json!({"p": outcome.clone()})).await;
    assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
    s.ok(OPS_SERVICE, REPORT, json!({"p": outcome.clone()})).await;
    let mut named_outcome = outcome;
    named_outcome["agendaId"] = json!("g-1");
    named_outcome["customerId"] = json!("globex");
    let e = s.err(OPS_SERVICE_2, REPORT, json!({"p": named_outcome.clone()})).await;
    assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
    s.ok(OPS_SERVICE, REPORT, json!({"p": named_outcome})).await;
    let p = s.ok(GLOBEX, "query { agendaProgress(id: \"g-1\") { processingStateMessage diagnosticEvents { message } } }", json!({})).await;
    assert_eq!(p["agendaProgress"]["processingStateMessage"], "succeeded", "{p:#}");
    assert_eq!(p["agendaProgress"]["diagnosticEvents"][0]["message"], "all renditions uploaded");
}

/// A pool's worker that does not hold another customer's agenda, reporting by that agenda's
/// progress id alone, is answered exactly as for an absent progress id: not with the agenda's
/// own id (hostile16: "agenda \"acme-merger-with-initech\" not found" told a worker of the
/// pool the secret id behind a progress id it could not read).
#[tokio::test]
async fn a_pool_workers_report_on_an_agenda_it_does_not_hold_names_only_what_it_sent() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, GLOBEX, named("globex", "g-secret-merger", "gp-2", &["probe"]), &after).await;
    queue_all(&s).await;
    let claimed = s.ok(OPS_SERVICE, CLAIM, json!({"n": 1})).await;
    assert_eq!(claimed["getAgenda"].as_array().unwrap().len(), 1, "{claimed:#}");
    let held = s.err(OPS_SERVICE_2, REPORT, json!({"p": executing("gp-2", None, "probe", "x")}));
    let absent = s.err(OPS_SERVICE_2, REPORT, json!({"p": executing("gp-9", None, "probe", "x")}));
    let (held, absent) = (held.await, absent.await);
    assert_eq!(code(&held), "NOT_FOUND", "{held:#}");
    assert_eq!(held["message"], "agenda progress \"gp-2\" not found", "{held:#}");
    assert_eq!(absent["message"], "agenda progress \"gp-9\" not found", "{absent:#}");
    // By the pool's form of the id too, which anyone may compute (hostile30: the held one was
    // said of its bare id, the absent one of the id as sent), also when the report names
    // another customer.
    for other_customer in [None, Some("acme")] {
        for id in ["gp-2", "gp-9"] {
            let sent = pool_id("globex", id);
            let mut report = executing(&sent, None, "probe", "x");
            if let Some(c) = other_customer {
                report["customerId"] = json!(c);
            }
            let e = s.err(OPS_SERVICE_2, REPORT, json!({"p": report.clone()})).await;
            assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
            assert_eq!(e["message"], format!("agenda progress {sent:?} not found"), "{e:#}");
            // Nor by a refusal of what the report carries (hostile31: params over their limit
            // were said of the bare id when the agenda existed): a report's params are judged
            // merged into the operation's, once the caller is known to hold the agenda
            // (popclient28), so to anyone else it is not found, said of the id as sent.
            report["operationProgress"][0]["params"] = json!({"big": "x".repeat(300 << 10)});
            let e = s.err(OPS_SERVICE_2, REPORT, json!({"p": report})).await;
            assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
            assert_eq!(e["message"], format!("agenda progress {sent:?} not found"), "{e:#}");
        }
    }
}

const POOL_CLAIM: &str = "mutation($n: Int!, $w: Int) { getAgenda(insightId: \"transcode\", count: $n, waitSeconds: $w) \
    { agenda { id customerId progressId } progress { id agendaId customerId \
      operationProgress { id agendaProgressId operation } } lease { id } } }";
const POOL_REPORT: &str = "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) \
    { agenda { id customerId progressId } progress { id processingState } } }";

/// The progress id a pool's worker is handed for `customer`'s agenda of progress id `id`.
fn pool_id(customer: &str, id: &str) -> String {
    pop_domain::agenda::pool_progress_id(customer, id)
}

/// The handed-out item of `customer` in a getAgenda answer, checked to show the pool's
/// progress id everywhere a POP executor reads it.
fn handed<'a>(claimed: &'a Value, customer: &str, id: &str) -> &'a Value {
    handed_as(claimed, customer, id, id)
}

/// [`handed`] for an agenda `id` of progress id `progress_id`.
fn handed_as<'a>(claimed: &'a Value, customer: &str, id: &str, progress_id: &str) -> &'a Value {
    let item = claimed["getAgenda"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["agenda"]["customerId"] == customer)
        .unwrap_or_else(|| panic!("{customer} not handed out: {claimed:#}"));
    assert_eq!(item["agenda"]["id"], id, "{item:#}");
    let shown = pool_id(customer, progress_id);
    assert_eq!(item["agenda"]["progressId"], shown.as_str(), "{item:#}");
    assert_eq!(item["progress"]["id"], shown.as_str(), "{item:#}");
    assert_eq!(item["progress"]["agendaId"], id, "{item:#}");
    for op in item["progress"]["operationProgress"].as_array().unwrap() {
        assert_eq!(op["agendaProgressId"], shown.as_str(), "{op:#}");
        let want = format!("{shown}-{}", op["operation"].as_str().unwrap());
        assert_eq!(op["id"], want.as_str(), "{op:#}");
    }
    item
}

/// POP's pullers and executors know an agenda by its progress id alone, while two customers
/// may use one id, and a pool's worker serves both. It is handed both, each under the pool's
/// progress id, which names the customer (`<id>~<customer tag>`): POP's `retrieveAgendaToProgressMap`
/// (which threw "Duplicate key" on two agendas of one id in an answer) takes them, and its
/// executors' reports by that id alone — late ones included — reach exactly the agenda they
/// ran. A report by the bare id, which cannot say whose, is refused rather than guessed at.
/// The customers themselves only ever see their own id.
#[tokio::test]
async fn a_pool_worker_is_handed_each_customers_agenda_of_one_id_under_an_id_of_its_own() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, GLOBEX, named("globex", "dup", "dup", &["probe"]), &after).await;
    submit(&s, ACME, named("acme", "dup", "dup", &["probe"]), &after).await;
    queue_all(&s).await;

    // ops runs the global insight: both, in one answer, under two ids.
    let claimed = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    assert_eq!(claimed["getAgenda"].as_array().unwrap().len(), 2, "{claimed:#}");
    handed(&claimed, "globex", "dup");
    handed(&claimed, "acme", "dup");
    let (acme_id, globex_id) = (pool_id("acme", "dup"), pool_id("globex", "dup"));
    assert_ne!(acme_id, globex_id);

    // While it holds them, the worker reads each by the id it was handed (GraphQL and POP's
    // REST), answered under that id; a customer reads nothing by another customer's pool id.
    let p = s.ok(OPS_SERVICE, PROGRESS, json!({"id": acme_id})).await;
    assert_eq!(p["agendaProgress"]["id"], acme_id.as_str(), "{p:#}");
    assert_eq!(p["agendaProgress"]["customerId"], "acme", "{p:#}");
    let url = format!("{}/pop/progress/agenda/{}", s.base, globex_id);
    let over_rest = rest_get(&s, OPS_SERVICE, &url).await;
    assert_eq!(over_rest["all"][0]["customerId"], "globex", "{over_rest:#}");
    assert_eq!(over_rest["all"][0]["id"], globex_id.as_str(), "{over_rest:#}");
    let op_id = format!("{globex_id}-probe");
    let o = s.ok(OPS_SERVICE, OPERATION, json!({"id": op_id})).await;
    assert_eq!(o["operationProgress"]["customerId"], "globex", "{o:#}");
    assert_eq!(o["operationProgress"]["id"], op_id.as_str(), "{o:#}");
    assert_eq!(o["operationProgress"]["agendaProgressId"], globex_id.as_str(), "{o:#}");
    let url = format!("{}/pop/progress/operation/{op_id}", s.base);
    let over_rest = rest_get(&s, OPS_SERVICE, &url).await;
    assert_eq!(over_rest["all"][0]["customerId"], "globex", "{over_rest:#}");
    assert_eq!(over_rest["all"][0]["id"], op_id.as_str(), "{over_rest:#}");
    // As of a time too: folded from the log, chosen and answered as live.
    // Settled history a second after (a change may commit up to a second after its time).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let now = (chrono::Utc::now() - chrono::Duration::milliseconds(1_050)).to_rfc3339();
    let as_of = format!(
        "query($id: String!, $op: String!) {{ agendaProgress(id: $id, asOf: {{time: \"{now}\"}}) \
         {{ id customerId }} operationProgress(id: $op, asOf: {{time: \"{now}\"}}) \
         {{ id customerId agendaProgressId }} }}"
    );
    let a = s.ok(OPS_SERVICE, &as_of, json!({"id": acme_id, "op": op_id})).await;
    assert_eq!(a["agendaProgress"]["id"], acme_id.as_str(), "{a:#}");
    assert_eq!(a["agendaProgress"]["customerId"], "acme", "{a:#}");
    assert_eq!(a["operationProgress"]["id"], op_id.as_str(), "{a:#}");
    assert_eq!(a["operationProgress"]["customerId"], "globex", "{a:#}");
    assert_eq!(a["operationProgress"]["agendaProgressId"], globex_id.as_str(), "{a:#}");
    let url =
        format!("{}/pop/progress/agenda/{globex_id}?asOf={}", s.base, now.replace('+', "%2B"));
    let over_rest = rest_get(&s, OPS_SERVICE, &url).await;
    assert_eq!(over_rest["all"][0]["customerId"], "globex", "{over_rest:#}");
    assert_eq!(over_rest["all"][0]["id"], globex_id.as_str(), "{over_rest:#}");
    let a = s.ok(GLOBEX, &as_of, json!({"id": acme_id, "op": format!("{acme_id}-probe")})).await;
    assert!(a["agendaProgress"].is_null() && a["operationProgress"].is_null(), "{a:#}");
    // A follow shows agendas of the caller's customers: the worker holding acme's agenda is
    // told to read it by id (its follow got the starting state, then nothing: hostile12).
    let mut ws = RawWs::authed(&s.ws_url(), OPS_SERVICE).await;
    let follow = "subscription($id: String!, $c: String) { operationProgress(agendaId: $id, customerId: $c) { agendaId } }";
    ws.subscribe("w", follow, json!({"id": "dup", "c": "acme"})).await;
    let m = ws.next().await;
    assert_eq!(m["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{m:#}");
    let p = s.ok(GLOBEX, PROGRESS, json!({"id": acme_id})).await;
    assert!(p["agendaProgress"].is_null(), "{p:#}");
    let o = s.ok(GLOBEX, OPERATION, json!({"id": format!("{acme_id}-probe")})).await;
    assert!(o["operationProgress"].is_null(), "{o:#}");

    // The bare id names two customers' agendas this worker serves: refused, naming customerId.
    let e =
        s.err(OPS_SERVICE, POOL_REPORT, json!({"p": executing("dup", None, "probe", "?")})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(problem_fields(&e), vec!["customerId"], "{e:#}");
    // Also with the agenda id (the same in both customers) and no customer.
    let e = s
        .err(OPS_SERVICE, POOL_REPORT, json!({"p": executing("dup", Some("dup"), "probe", "?")}))
        .await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");

    // Each report by the id it was handed reaches that customer's agenda, and answers that id.
    let r = s
        .ok(OPS_SERVICE, POOL_REPORT, json!({"p": executing(&acme_id, None, "probe", "acme's")}))
        .await;
    let answer = &r["updateAgendaProgress"];
    assert_eq!(answer["agenda"]["customerId"], "acme", "{r:#}");
    assert_eq!(answer["agenda"]["progressId"], acme_id.as_str(), "{r:#}");
    assert_eq!(answer["progress"]["id"], acme_id.as_str(), "{r:#}");
    assert_eq!(answer["progress"]["processingState"], "COMPLETE", "{r:#}");
    let p = s.ok(GLOBEX, PROGRESS, json!({"id": "dup"})).await;
    assert_eq!(p["agendaProgress"]["processingState"], "WAITING", "{p:#}");
    assert_eq!(p["agendaProgress"]["operationProgress"][0]["resultPayload"], Value::Null);

    // The executor's own outcome report after the agenda completed (the lease is gone), by
    // the handed id alone: to acme's, never to globex's, which the worker still runs.
    let outcome = json!({"id": acme_id, "processingState": "COMPLETE",
        "processingStateMessage": "succeeded", "diagnosticEvents": [{"message": "acme done"}]});
    let r = s.ok(OPS_SERVICE, POOL_REPORT, json!({"p": outcome})).await;
    assert_eq!(r["updateAgendaProgress"]["agenda"]["customerId"], "acme", "{r:#}");
    // With the agenda id and the customer its executor's AgendaProgress carries, too; a
    // customer that is not the one the id names reaches nothing.
    let mut named_report = executing(&globex_id, Some("dup"), "probe", "globex's");
    named_report["customerId"] = json!("acme");
    let e = s.err(OPS_SERVICE, POOL_REPORT, json!({"p": named_report.clone()})).await;
    assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
    named_report["customerId"] = json!("globex");
    let r = s.ok(OPS_SERVICE, POOL_REPORT, json!({"p": named_report})).await;
    assert_eq!(r["updateAgendaProgress"]["agenda"]["customerId"], "globex", "{r:#}");

    // Each customer sees its own result under its own id.
    for (token, result) in [(ACME, "acme's"), (GLOBEX, "globex's")] {
        let p = s.ok(token, PROGRESS, json!({"id": "dup"})).await;
        assert_eq!(p["agendaProgress"]["id"], "dup", "{p:#}");
        assert_eq!(p["agendaProgress"]["processingState"], "COMPLETE", "{p:#}");
        let got = &p["agendaProgress"]["operationProgress"][0]["resultPayload"];
        assert_eq!(got, &json!({"r": result}), "{p:#}");
    }
    // A tenant's worker cannot use another customer's pool id to reach its agenda.
    let e = s
        .err(ACME_SERVICE, POOL_REPORT, json!({"p": executing(&globex_id, None, "probe", "x")}))
        .await;
    assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
}

/// A worker's requests (reports, expansions, releases) may name any agenda of the insights its
/// pool runs, so there a bare id two customers use is refused; a read, cancel or rerun names
/// only what the caller may act on. A tenant of the owner's global insight that uses one of the
/// owner's ids (`nightly`) does not block the owner's requests by that id (a review found every
/// use case counting the pool's agendas: the owner's reads by its own id were refused, and the
/// refusal told it another customer used the id).
#[tokio::test]
async fn a_tenant_using_the_pool_owners_id_does_not_block_the_owners_reads_by_it() {
    let s = start(ApiConfig::default()).await;
    s.seed().await;
    let created = s
        .ok(
            ADMIN,
            "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
            json!({"c": {"id": "ops", "title": "ops", "resourcePoolId": "pool-1"}}),
        )
        .await;
    let after = created["createCustomer"]["position"].as_str().unwrap().to_string();
    submit(&s, ADMIN, named("ops", "nightly", "nightly", &["probe"]), &after).await;
    submit(&s, ACME, named("acme", "nightly", "nightly", &["probe"]), &after).await;
    let events = "query($id: String!) { agendaEvents(agendaId: $id) { items { type stream } } }";
    let e = s.ok(OPS_SERVICE, events, json!({"id": "nightly"})).await;
    let first = &e["agendaEvents"]["items"][0];
    assert_eq!(first["type"], "AgendaSubmitted", "{e:#}");
    assert_eq!(first["stream"], "agenda-ops/nightly", "{e:#}");

    // The pool's worker is handed both; its report by the bare id cannot say whose: refused.
    queue_all(&s).await;
    let claimed = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    assert_eq!(claimed["getAgenda"].as_array().unwrap().len(), 2, "{claimed:#}");
    handed(&claimed, "ops", "nightly");
    let report = executing("nightly", Some("nightly"), "probe", "?");
    let e = s.err(OPS_SERVICE, POOL_REPORT, json!({"p": report})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(problem_fields(&e), vec!["customerId"], "{e:#}");
}

/// linkIds are chosen per customer: a caller that sees several customers names the one whose
/// batch it means, and another tenant's agendas under the same linkId (a hostile probe cancelled
/// one under acme's to change acme's batch as an admin saw it) then do not count.
#[tokio::test]
async fn a_progress_summary_names_the_customer_whose_batch_it_means() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    for (token, customer) in [(ACME, "acme"), (GLOBEX, "globex")] {
        let mut agenda = named(customer, &format!("{customer}-1"), "", &["probe"]);
        agenda["linkId"] = json!("batch-1");
        agenda.as_object_mut().unwrap().remove("progressId");
        submit(&s, token, agenda, &after).await;
    }
    let query = "query($c: String) { progressSummary(linkId: \"batch-1\", customerId: $c) \
        { progressList { customerId } } }";
    let customers = |data: &Value| -> Vec<String> {
        let list = data["progressSummary"]["progressList"].as_array().unwrap();
        let mut c: Vec<String> =
            list.iter().map(|p| p["customerId"].as_str().unwrap().to_string()).collect();
        c.sort();
        c
    };
    let all = s.ok(ADMIN, query, json!({"c": null})).await;
    assert_eq!(customers(&all), ["acme", "globex"], "{all:#}");
    let acme = s.ok(ADMIN, query, json!({"c": "acme"})).await;
    assert_eq!(customers(&acme), ["acme"], "{acme:#}");
    // A customer the caller may not see summarises nothing, as a linkId nobody uses.
    let other = s.ok(ACME, query, json!({"c": "globex"})).await;
    assert!(customers(&other).is_empty(), "{other:#}");
    // POP's REST surface: `byCustomerId` on GET, `customerId` in a POST body.
    let url = format!("{}/pop/progress/agenda/service?linkId=batch-1&byCustomerId=globex", s.base);
    let got = rest_get(&s, ADMIN, &url).await;
    assert_eq!(got["progressList"].as_array().unwrap().len(), 1, "{got:#}");
    assert_eq!(got["progressList"][0]["customerId"], "globex", "{got:#}");
    let url = format!("{}/pop/progress/agenda/service", s.base);
    let body = json!({"linkId": "batch-1", "customerId": "acme"});
    let got: Value = s
        .http
        .post(&url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["progressList"].as_array().unwrap().len(), 1, "{got:#}");
    assert_eq!(got["progressList"][0]["customerId"], "acme", "{got:#}");
}

/// An operation progress id of a pool's shape (`<progressId>~<tag>-<operation>`) names, by its
/// own ids, only agendas of the caller's customers: a hostile tenant chose the progress id
/// `rap~<acme's tag>-encode` and an operation `720p`, so that the pool worker's read of acme's
/// `rap~<acme's tag>-encode-720p` was ambiguous while it held both, and answered globex's
/// operation once acme's run ended.
#[tokio::test]
async fn a_tenants_ids_shaped_like_a_pool_operation_id_do_not_answer_a_workers_read() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let acme_pool = pool_id("acme", "rap");
    submit(&s, ACME, named("acme", "rap-a", "rap", &["encode-720p"]), &after).await;
    let lookalike = format!("{acme_pool}-encode");
    submit(&s, GLOBEX, named("globex", "rap-g", &lookalike, &["720p"]), &after).await;
    queue_all(&s).await;
    let claimed = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    assert_eq!(claimed["getAgenda"].as_array().unwrap().len(), 2, "{claimed:#}");
    let op_id = format!("{acme_pool}-encode-720p");
    let o = s.ok(OPS_SERVICE, OPERATION, json!({"id": op_id})).await;
    assert_eq!(o["operationProgress"]["customerId"], "acme", "{o:#}");
    // acme's run ends: the worker's read by that id finds nothing, not globex's operation.
    let done = json!({"id": acme_pool, "processingState": "COMPLETE",
        "processingStateMessage": "succeeded", "operationProgress": [
            {"operation": "encode-720p", "processingState": "COMPLETE", "processingStateMessage": "succeeded"}]});
    s.ok(OPS_SERVICE, POOL_REPORT, json!({"p": done})).await;
    let o = s.ok(OPS_SERVICE, OPERATION, json!({"id": op_id})).await;
    assert!(o["operationProgress"].is_null(), "{o:#}");
    // Nor as of a time (the as-of read chose its agendas apart and answered globex's).
    // Settled history a second after (a change may commit up to a second after its time).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let now = (chrono::Utc::now() - chrono::Duration::milliseconds(1_050)).to_rfc3339();
    let as_of = format!(
        "query($id: String!) {{ operationProgress(id: $id, asOf: {{time: \"{now}\"}}) {{ id customerId }} }}"
    );
    let o = s.ok(OPS_SERVICE, &as_of, json!({"id": op_id})).await;
    assert!(o["operationProgress"].is_null(), "{o:#}");
    let url = format!("{}/pop/progress/operation/{op_id}", s.base);
    let answer = s.http.get(&url).bearer_auth(OPS_SERVICE).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    // globex reads its own operation by its own id.
    let o = s.ok(GLOBEX, OPERATION, json!({"id": op_id})).await;
    assert_eq!(o["operationProgress"]["customerId"], "globex", "{o:#}");
}

/// A refused config write answers alike for an id another customer uses and an unused one: a
/// hostile admin of one customer told other customers' ids apart (a create of `globex` naming a
/// customer it may not manage answered NOT_FOUND, of an unused id FORBIDDEN).
#[tokio::test]
async fn a_refused_config_write_does_not_tell_whether_the_id_is_taken() {
    let s = start(ApiConfig::default()).await;
    s.seed().await;
    let private = json!({"o": {"id": "ops-private", "customerId": "ops", "title": "t",
        "resourcePoolId": "pool-1", "queueSize": 1}});
    let made = s
        .ok(ADMIN, "mutation($o: JSON!) { createInsight(insight: $o) { position } }", private)
        .await;
    assert!(made["createInsight"]["position"].is_string(), "{made:#}");
    let pool = json!({"o": {"id": "acme-pool", "customerId": "acme", "title": "t"}});
    s.ok(ADMIN, "mutation($o: JSON!) { createResourcePool(resourcePool: $o) { position } }", pool)
        .await;
    let writes = [
        (
            "createCustomer(customer: $o)",
            json!({"id": "globex", "customerId": "nobody", "title": "t"}),
            json!({"id": "unused-c", "customerId": "nobody", "title": "t"}),
        ),
        (
            "createResourcePool(resourcePool: $o)",
            json!({"id": "pool-1", "customerId": "globex", "title": "t"}),
            json!({"id": "unused-p", "customerId": "globex", "title": "t"}),
        ),
        (
            "createInsight(insight: $o)",
            json!({"id": "ops-private", "customerId": "acme", "title": "t", "resourcePoolId": "no-such-pool", "queueSize": 1}),
            json!({"id": "unused-i", "customerId": "acme", "title": "t", "resourcePoolId": "no-such-pool", "queueSize": 1}),
        ),
        // Bodies no write could take (the object's own rules), naming only what it may name.
        (
            "createCustomer(customer: $o)",
            json!({"id": "globex", "customerId": "acme", "title": "t"}),
            json!({"id": "unused-c2", "customerId": "acme", "title": "t"}),
        ),
        (
            "createInsight(insight: $o)",
            json!({"id": "ops-private", "customerId": "acme", "resourcePoolId": "acme-pool", "queueSize": -1}),
            json!({"id": "unused-i2", "customerId": "acme", "resourcePoolId": "acme-pool", "queueSize": -1}),
        ),
    ];
    for (field, taken, unused) in writes {
        let mutation = format!("mutation($o: JSON!) {{ {field} {{ position }} }}");
        let a = s.err(ACME_ADMIN, &mutation, json!({"o": taken})).await;
        let b = s.err(ACME_ADMIN, &mutation, json!({"o": unused})).await;
        assert_eq!(code(&a), code(&b), "{a:#} against {b:#}");
        assert_eq!(problem_fields(&a), problem_fields(&b), "{a:#} against {b:#}");
    }
}

/// A waiting pool worker is handed a submission in the submission's own write
/// (`crate::handout`) under the pool's id too; two customers' submissions of one id a moment
/// apart are both handed out, each under its own id, and each report reaches its own (a
/// hostile probe had both handed out under the bare id, after which a report could reach
/// either).
#[tokio::test]
async fn two_customers_submitting_one_id_at_once_are_each_handed_out_under_its_own() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let waiting = {
        let (http, url) = (s.http.clone(), format!("{}/graphql", s.base));
        tokio::spawn(async move {
            let body = json!({"query": POOL_CLAIM, "variables": {"n": 1, "w": 10}});
            let r = http.post(url).bearer_auth(OPS_SERVICE).json(&body).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    // Wait until the worker sits at the desk, then submit twice.
    for _ in 0..200 {
        if s.state.app().waiting_at_desk() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    submit(&s, ACME, named("acme", "race", "race", &["probe"]), &after).await;
    submit(&s, GLOBEX, named("globex", "race", "race", &["probe"]), &after).await;
    let first = waiting.await.unwrap();
    let first = &first["data"];
    handed(first, "acme", "race");
    queue_all(&s).await;
    let second = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    handed(&second, "globex", "race");
    for customer in ["acme", "globex"] {
        let report = executing(&pool_id(customer, "race"), None, "probe", customer);
        let r = s.ok(OPS_SERVICE, POOL_REPORT, json!({"p": report})).await;
        assert_eq!(r["updateAgendaProgress"]["agenda"]["customerId"], customer, "{r:#}");
    }
    for (token, customer) in [(ACME, "acme"), (GLOBEX, "globex")] {
        let p = s.ok(token, PROGRESS, json!({"id": "race"})).await;
        let got = &p["agendaProgress"]["operationProgress"][0]["resultPayload"];
        assert_eq!(got, &json!({"r": customer}), "{p:#}");
    }
}

/// POP's expand (`updateAgenda {agendaId}`, no customer) from a pool's worker that serves two
/// customers using the agenda id: refused, never applied to whichever it still holds. A
/// hostile probe had the other customer cancel its own twin, after which the expand (as POP's
/// generator and pop's own worker sent it) added its operations to the victim's agenda. Named
/// by customer (pop's worker does), it applies.
#[tokio::test]
async fn an_expand_by_an_agenda_id_two_customers_use_is_refused_not_guessed() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, ACME, named("acme", "e2", "e2", &["probe"]), &after).await;
    submit(&s, GLOBEX, named("globex", "e2", "e2", &["probe"]), &after).await;
    queue_all(&s).await;
    let claimed = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    handed(&claimed, "acme", "e2");
    handed(&claimed, "globex", "e2");
    s.cancel(GLOBEX, "e2").await;

    let expand = "mutation($id: String!, $c: String, $o: JSON!) { expandAgenda(agendaId: $id, \
        customerId: $c, operations: $o) { agenda { customerId } progress { operationProgress { operation } } } }";
    let ops = json!([{"name": "injected", "type": "ffmpeg", "payload": {}}]);
    let e = s.err(OPS_SERVICE, expand, json!({"id": "e2", "o": ops.clone()})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(problem_fields(&e), ["customerId"], "{e:#}");
    let rest = s
        .http
        .post(format!("{}/pop/resourcepool/service/updateAgenda", s.base))
        .bearer_auth(OPS_SERVICE)
        .json(&json!({"agendaId": "e2", "operations": ops.clone()}))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 400);
    let p = s.ok(ACME, PROGRESS, json!({"id": "e2"})).await;
    assert_eq!(p["agendaProgress"]["operationProgress"].as_array().unwrap().len(), 1, "{p:#}");
    let x = s.ok(OPS_SERVICE, expand, json!({"id": "e2", "c": "acme", "o": ops.clone()})).await;
    let added = &x["expandAgenda"]["progress"]["operationProgress"];
    assert_eq!(added.as_array().unwrap().len(), 2, "{x:#}");
    // By the progress id it was handed, as its reports name it (popclient59 L1: an unchanged
    // POP executor has no customerId to send): exactly that customer's agenda, over GraphQL
    // and POP's REST alike. Another customer's tag on the id names nothing it may act on.
    let more = json!([{"name": "more", "type": "ffmpeg", "payload": {}}]);
    let handed_id = pool_id("acme", "e2");
    let x = s.ok(OPS_SERVICE, expand, json!({"id": handed_id, "o": more})).await;
    assert_eq!(x["expandAgenda"]["agenda"]["customerId"], "acme", "{x:#}");
    let added = &x["expandAgenda"]["progress"]["operationProgress"];
    assert_eq!(added.as_array().unwrap().len(), 3, "{x:#}");
    let rest = s
        .http
        .post(format!("{}/pop/resourcepool/service/updateAgenda", s.base))
        .bearer_auth(OPS_SERVICE)
        .json(&json!({"agendaId": handed_id, "operations": [{"name": "rest", "type": "ffmpeg", "payload": {}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let p = s.ok(ACME, PROGRESS, json!({"id": "e2"})).await;
    assert_eq!(p["agendaProgress"]["operationProgress"].as_array().unwrap().len(), 4, "{p:#}");
    // With its customerId beside it, as a Jackson client sends whenever it has one
    // (repopclient61 F4: 404).
    let named = json!({"id": handed_id, "c": "acme", "o": [{"name": "named", "type": "ffmpeg", "payload": {}}]});
    let x = s.ok(OPS_SERVICE, expand, named).await;
    assert_eq!(
        x["expandAgenda"]["progress"]["operationProgress"].as_array().unwrap().len(),
        5,
        "{x:#}"
    );
    // Another customer's tag on a worker's request names nothing this worker may act on.
    let e = s.err(OPS_SERVICE, expand, json!({"id": pool_id("initech", "e2"), "o": ops})).await;
    assert_eq!(code(&e), "NOT_FOUND", "{e:#}");
}

/// A worker that takes two customers' agendas without running the insight (a token of both)
/// is shown pool progress ids too (it was handed bare ids, and a late report of one customer's
/// run completed the other's agenda of the same id). Ids shaped like a pool id are refused at
/// submission: a hostile tenant's `q1~<acme's tag>` steered such reports to acme's `q1`.
#[tokio::test]
async fn a_worker_of_two_customers_is_shown_pool_ids_and_lookalike_ids_are_refused() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let lookalike = pool_id("acme", "q1");
    // Padded with a blank (requests that name an agenda trim ids: a hostile probe's
    // `"z1~<tag> "` was stored as one id and read back as acme's pool id), and an honest id
    // with a trailing blank, which nothing could have reported on.
    let padded = format!("{lookalike}\u{a0}");
    for (id, progress_id, field) in [
        ("g-q1", lookalike.as_str(), "progressId"),
        (lookalike.as_str(), "", "id"),
        ("g-q2", padded.as_str(), "progressId"),
        (padded.as_str(), "", "id"),
        ("nightly ", "", "id"),
    ] {
        let mut agenda = named("globex", id, progress_id, &["probe"]);
        if progress_id.is_empty() {
            agenda.as_object_mut().unwrap().remove("progressId");
        }
        let e = s.err(GLOBEX, SUBMIT, json!({"a": agenda, "p": after})).await;
        assert_eq!(code(&e), "VALIDATION", "{e:#}");
        assert_eq!(problem_fields(&e), [field], "{e:#}");
    }
    submit(&s, ACME, named("acme", "q1", "q1", &["probe"]), &after).await;
    submit(&s, GLOBEX, named("globex", "q1", "q1", &["probe"]), &after).await;
    queue_all(&s).await;
    let claimed = s.ok(TWO_CUSTOMERS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    handed(&claimed, "acme", "q1");
    handed(&claimed, "globex", "q1");
    for customer in ["globex", "acme"] {
        let report = executing(&pool_id(customer, "q1"), None, "probe", customer);
        let r = s.ok(TWO_CUSTOMERS_SERVICE, POOL_REPORT, json!({"p": report})).await;
        assert_eq!(r["updateAgendaProgress"]["agenda"]["customerId"], customer, "{r:#}");
    }
    for (token, customer) in [(ACME, "acme"), (GLOBEX, "globex")] {
        let p = s.ok(token, PROGRESS, json!({"id": "q1"})).await;
        let got = &p["agendaProgress"]["operationProgress"][0]["resultPayload"];
        assert_eq!(got, &json!({"r": customer}), "{p:#}");
    }
    // A late report of globex's run by the bare id: refused, never acme's.
    let e = s
        .err(TWO_CUSTOMERS_SERVICE, POOL_REPORT, json!({"p": executing("q1", None, "probe", "?")}))
        .await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
}

/// A tenant's worker that names another customer's agenda (agendaId and customerId) with a
/// progress id that is not its own learns nothing: NOT_FOUND, as for an agenda nobody has (it
/// was VALIDATION "not the progress id of agenda", an oracle of another tenant's agenda ids).
#[tokio::test]
async fn a_report_naming_another_customers_agenda_is_not_found_whatever_its_ids() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, ACME, named("acme", "secret-1", "secret-1", &["probe"]), &after).await;
    let mut answers = Vec::new();
    for agenda in ["secret-1", "nobody-has-this"] {
        let mut report = executing("wrong-progress", Some(agenda), "probe", "x");
        report["customerId"] = json!("acme");
        let e = s.err(GLOBEX_SERVICE, REPORT, json!({"p": report})).await;
        answers.push((
            code(&e).to_string(),
            e["message"].as_str().unwrap_or("").replace(agenda, "ID"),
        ));
    }
    assert_eq!(answers[0], answers[1], "{answers:?}");
    assert_eq!(answers[0].0, "NOT_FOUND", "{answers:?}");
}

/// The same after a lease ran out: the executor whose lease on one customer's agenda expired
/// may still report on it (a tenant's operation can stall on purpose). Another customer's
/// agenda of the same id is handed to the same pool worker meanwhile; the stalled executor's
/// report, under the id it was handed, never lands on it.
#[tokio::test]
async fn a_stale_report_after_a_lease_ran_out_never_lands_on_another_customers_agenda() {
    use pop_reapers::ReclaimerConfig;
    use pop_reapers::reclaimer::{execute, plan};
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, GLOBEX, named("globex", "slow", "slow", &["probe"]), &after).await;
    queue_all(&s).await;
    let claimed = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    handed(&claimed, "globex", "slow");
    // globex's operation stalls past the lease; the reclaimer takes the agenda back.
    let lease = chrono::Duration::from_std(s.state.config().lease).unwrap();
    let later = chrono::Utc::now() + lease + chrono::Duration::seconds(1);
    let projections = s.state.projections();
    projections.wait_for(s.commands.written(), WAIT).await.unwrap();
    let actions = plan(later, &projections.read(), &ReclaimerConfig::default());
    assert_eq!(actions.len(), 1, "{actions:?}");
    let report = execute(&s.commands, later, &actions, None).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    // acme submits an agenda of the same id: the scheduler queues it, and the same worker is
    // handed it, under acme's pool id.
    let after = s.commands.written().to_string();
    submit(&s, ACME, named("acme", "slow", "slow", &["probe"]), &after).await;
    queue_all(&s).await;
    let claimed = s.ok(OPS_SERVICE, POOL_CLAIM, json!({"n": 5})).await;
    handed(&claimed, "acme", "slow");
    // The stalled executor wakes up and reports globex's result under the id it was handed:
    // whatever becomes of it on globex's agenda, acme's is untouched. By the bare id it is
    // refused.
    let stale = executing(&pool_id("globex", "slow"), None, "probe", "globex's");
    let _ =
        s.post(Some(OPS_SERVICE), json!({"query": POOL_REPORT, "variables": {"p": stale}})).await;
    let e =
        s.err(OPS_SERVICE, POOL_REPORT, json!({"p": executing("slow", None, "probe", "?")})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    let p = s.ok(ACME, PROGRESS, json!({"id": "slow"})).await;
    assert_eq!(p["agendaProgress"]["operationProgress"][0]["resultPayload"], Value::Null, "{p:#}");
    assert_ne!(p["agendaProgress"]["processingState"], "COMPLETE", "{p:#}");
}

/// Issue 19, item 10: a pool's `insightIds` lists only the insights the caller may see; on a
/// pool shared by several customers, another customer's own insight stays invisible.
#[tokio::test]
async fn a_shared_pool_lists_only_the_insights_the_caller_may_see() {
    let s = start(ApiConfig::default()).await;
    s.seed().await;
    s.ok(
        ADMIN,
        "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
        json!({"p": {"id": "shared", "customerId": "acme", "title": "Shared"}}),
    )
    .await;
    let mut last = String::new();
    for (id, customer, global) in
        [("acme-enc", "acme", false), ("globex-secret", "globex", false), ("everyone", "ops", true)]
    {
        let data = s
            .ok(
                ADMIN,
                "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                json!({"i": {
                    "id": id, "customerId": customer, "title": id, "resourcePoolId": "shared",
                    "queueSize": 5, "isGlobal": global, "mappers": {"operationType": ["ffmpeg"]}
                }}),
            )
            .await;
        last = data["createInsight"]["position"].as_str().unwrap().to_string();
    }
    let query = "query($p: String) { resourcePool(id: \"shared\", atLeastPosition: $p) { insightIds } resourcePools(atLeastPosition: $p) { items { id insightIds } } }";
    let data = s.ok(ACME, query, json!({"p": last})).await;
    assert_eq!(data["resourcePool"]["insightIds"], json!(["acme-enc", "everyone"]), "{data:#}");
    let listed: Vec<&Value> = data["resourcePools"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == "shared")
        .collect();
    assert_eq!(listed.len(), 1, "{data:#}");
    assert_eq!(listed[0]["insightIds"], json!(["acme-enc", "everyone"]), "{data:#}");
    // The REST surface reads the same use case.
    let rest = rest_get(&s, ACME, &format!("{}/pop/resourcepool?byId=shared", s.base)).await;
    assert_eq!(rest["all"][0]["insightIds"], json!(["acme-enc", "everyone"]), "{rest:#}");
    // A write answers the pool as a read shows it (POP's PUT answered `insightIds: []`).
    let url = format!("{}/pop/resourcepool/shared?atLeastPosition={last}", s.base);
    let pool = json!({"id": "shared", "customerId": "acme", "title": "Shared, renamed"});
    let put = s.http.put(&url).bearer_auth(ADMIN).json(&pool).send().await.unwrap();
    let put: Value = put.json().await.unwrap();
    assert_eq!(
        put["all"][0]["insightIds"],
        json!(["acme-enc", "everyone", "globex-secret"]),
        "{put:#}"
    );
    // An admin of every customer sees all three.
    let data = s.ok(ADMIN, query, json!({"p": last})).await;
    assert_eq!(
        data["resourcePool"]["insightIds"],
        json!(["acme-enc", "everyone", "globex-secret"]),
        "{data:#}"
    );

    // An insight or template shared with several customers shows each of them only itself
    // in `allowedCustomerIds` (a hostile probe read its co-tenants' customer ids there); its
    // owner and the pool's workers see the whole list (ops' pool: `shared` is acme's).
    let insight = json!({"i": {"id": "partners", "customerId": "ops", "title": "partners",
        "resourcePoolId": "pool-1", "queueSize": 5, "allowedCustomerIds": ["acme", "globex"],
        "mappers": {"operationType": ["ffmpeg"]}}});
    s.ok(ADMIN, "mutation($i: JSON!) { createInsight(insight: $i) { position } }", insight).await;
    let template = json!({"t": {"id": "shared-tpl", "customerId": "ops", "title": "t",
        "allowedCustomerIds": ["acme", "globex"],
        "agenda": {"operations": [{"name": "a", "type": "ffmpeg", "payload": {}}]}}});
    let data = s
        .ok(ADMIN, "mutation($t: JSON!) { createTemplate(template: $t) { position } }", template)
        .await;
    let last = data["createTemplate"]["position"].as_str().unwrap().to_string();
    let query = "query($p: String) { insight(id: \"partners\", atLeastPosition: $p) { allowedCustomerIds } \
        template(id: \"shared-tpl\") { allowedCustomerIds } }";
    for (token, seen) in [
        (ACME, json!(["acme"])),
        (GLOBEX, json!(["globex"])),
        (OPS_SERVICE, json!(["acme", "globex"])),
        (ADMIN, json!(["acme", "globex"])),
    ] {
        let data = s.ok(token, query, json!({"p": last})).await;
        assert_eq!(data["insight"]["allowedCustomerIds"], seen, "{data:#}");
        assert_eq!(data["template"]["allowedCustomerIds"], seen, "{data:#}");
    }
    let rest = rest_get(&s, GLOBEX, &format!("{}/pop/insight/partners", s.base)).await;
    assert_eq!(rest["all"][0]["allowedCustomerIds"], json!(["globex"]), "{rest:#}");
    let rest = rest_get(&s, ACME, &format!("{}/pop/agendatemplate/shared-tpl", s.base)).await;
    assert_eq!(rest["all"][0]["allowedCustomerIds"], json!(["acme"]), "{rest:#}");
    // Its agenda, written without an id or customer, reads back without them (it read
    // `"id": ""`, which POP's clients took for an id and pop refused on submission).
    let agenda = &rest["all"][0]["agenda"];
    assert!(agenda.get("id").is_none() && agenda.get("customerId").is_none(), "{rest:#}");
    assert_eq!(agenda["operations"][0]["name"], "a", "{rest:#}");
    let data = s.ok(ACME, "{ template(id: \"shared-tpl\") { agenda } }", json!({})).await;
    assert!(data["template"]["agenda"].get("id").is_none(), "{data:#}");
}

/// A report whose results are each within their bound but too large together for one event
/// is taken whole, stored in parts (popclient27: refused, POP's executor sent it again and the
/// agenda failed when its attempts ran out). One operation's change that is too large alone to
/// store is a VALIDATION problem naming `agendaProgress` (it was a BAD_REQUEST naming nothing),
/// and nothing of it is applied.
#[tokio::test]
async fn a_report_too_large_to_store_names_the_agenda_progress() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    submit(&s, ACME, named("acme", "big", "big", &["a", "b", "c"]), &after).await;
    queue_all(&s).await;
    let claimed = s.ok(ACME_SERVICE, CLAIM, json!({"n": 1})).await;
    assert_eq!(claimed["getAgenda"][0]["agenda"]["id"], "big", "{claimed:#}");
    let result = "r".repeat(500_000);
    let ops: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|o| json!({"operation": o, "processingState": "EXECUTING", "resultPayload": {"r": result}}))
        .collect();
    let report = json!({"id": "big", "processingState": "EXECUTING", "operationProgress": ops});
    s.ok(ACME_SERVICE, REPORT, json!({"p": report})).await;
    let p = s.ok(ACME, PROGRESS, json!({"id": "big"})).await;
    assert_eq!(p["agendaProgress"]["processingState"], "EXECUTING", "{p:#.300}");
    let kept = p["agendaProgress"]["operationProgress"].as_array().unwrap();
    assert_eq!(kept.len(), 3);
    for op in kept {
        let r = &op["resultPayload"];
        let r: Value = r.as_str().map_or_else(|| r.clone(), |t| serde_json::from_str(t).unwrap());
        assert_eq!(r["r"].as_str().map(str::len), Some(500_000), "{:.200}", op.to_string());
    }

    // One operation's change past 1 MiB alone: a new result and ten diagnostics of 80 KB.
    let diagnostics: Vec<Value> = (0..10)
        .map(|i| json!({"message": format!("{i}{}", "m".repeat(40_000)), "stackTrace": "t".repeat(40_000)}))
        .collect();
    let op = json!({"operation": "a", "processingState": "EXECUTING",
        "resultPayload": {"r": "n".repeat(500_000)}, "diagnosticEvents": diagnostics});
    let report = json!({"id": "big", "processingState": "EXECUTING", "operationProgress": [op]});
    let e = s.err(ACME_SERVICE, REPORT, json!({"p": report})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(problem_fields(&e), ["agendaProgress"], "{e:#}");
    assert!(e["message"].as_str().unwrap().contains("diagnostics"), "the hint names them: {e:#}");
    let p = s.ok(ACME, PROGRESS, json!({"id": "big"})).await;
    let a = &p["agendaProgress"]["operationProgress"][0];
    assert!(!a["resultPayload"].to_string().contains("nnnn"), "nothing of it applied");
}
