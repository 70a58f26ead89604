//! Subscriptions (graphql-transport-ws): agenda progress by id, by customer and by linkId,
//! and the operation progress of one agenda — each a live follow of the application layer
//! ([`pop_app::live`]), which is fed from the projections' change feed, filters by the
//! caller's customers, and signals lag (`lagged`, then the current state marked `resync`).
//! This module only gives the follow's items their GraphQL shape.

use async_graphql::futures_util::Stream;
use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Context, Result, Subscription};
use futures::StreamExt;
use pop_app::live::{Target, Update};

use crate::error::GqlError;
use crate::graphql::context;
use crate::graphql::types::*;

pub struct SubscriptionRoot;

/// Starts a follow and keeps its progress items.
async fn progress(
    ctx: &Context<'_>,
    target: Target,
    after_position: Option<String>,
) -> Result<impl Stream<Item = AgendaProgressUpdate> + use<>> {
    let (app, caller) = context(ctx)?;
    let follow = app.follow(caller, target, after_position.as_deref()).await.map_err(GqlError)?;
    Ok(follow.filter_map(|update| async move {
        match update {
            Update::Progress(p) => Some(AgendaProgressUpdate::from(*p)),
            Update::Operations(_) => None,
        }
    }))
}

#[Subscription]
impl SubscriptionRoot {
    /// One AgendaProgress (by its id): its current state first, then after every change.
    /// Ids are chosen per customer: the follow shows one customer's agenda, the `customerId`
    /// named, else the one whose agenda of the id exists when it starts (a caller that sees two
    /// customers using the id names one: VALIDATION `customerId`), else the first to appear.
    async fn agenda_progress(
        &self,
        ctx: &Context<'_>,
        id: String,
        customer_id: Option<String>,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        progress(ctx, Target::Progress(id, named(customer_id)), after_position).await
    }

    /// Every change of a customer's agendas. A customer outside the caller's set is
    /// FORBIDDEN (decided by the token alone, so it reveals nothing about the customer). With
    /// `afterPosition`, first the agendas changed since then.
    async fn agenda_progress_by_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        progress(ctx, Target::Customer(customer_id), after_position).await
    }

    /// Every change of the visible agendas sharing a linkId; with `customerId`, only that
    /// customer's (linkIds are chosen per customer: a caller that sees several customers names
    /// the one whose batch it follows; a customer it may not see follows nothing).
    async fn agenda_progress_by_link_id(
        &self,
        ctx: &Context<'_>,
        link_id: String,
        customer_id: Option<String>,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        progress(ctx, Target::Link(link_id, named(customer_id)), after_position).await
    }

    /// The operation progress of one agenda: all of it first, then the entries each change
    /// touched. One customer's agenda, chosen as for `agendaProgress`.
    async fn operation_progress(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        customer_id: Option<String>,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = OperationProgressUpdate>> {
        let (app, caller) = context(ctx)?;
        let target = Target::Operations(agenda_id, named(customer_id));
        let follow =
            app.follow(caller, target, after_position.as_deref()).await.map_err(GqlError)?;
        Ok(follow.filter_map(|update| async move {
            match update {
                Update::Operations(o) => Some(OperationProgressUpdate::from(o)),
                Update::Progress(_) => None,
            }
        }))
    }
}

/// A `customerId` argument: trimmed, blank as none.
fn named(customer_id: Option<String>) -> Option<String> {
    customer_id.map(|c| c.trim().to_string()).filter(|c| !c.is_empty())
}

/// GraphQL's single-root-field rule for subscriptions (spec §5.2.3.1), which the library
/// does not enforce: one `subscribe` holding 6,000 aliased root fields took its principal's
/// whole share of follows. The operation the request runs (by `operation_name`, else its
/// only one) must select exactly one root field, counting those of its fragments (each
/// fragment counted once: review-s37 found the walk exponential in nested spreads). Answers
/// the operation's type (`None` when no operation is chosen).
pub fn single_root_field(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> std::result::Result<Option<OperationType>, String> {
    let mut kind = None;
    let mut memo = HashMap::new();
    for (name, operation) in document.operations.iter() {
        let chosen = operation_name.is_none_or(|wanted| name.is_some_and(|n| n.as_str() == wanted));
        if !chosen {
            continue;
        }
        kind = kind.or(Some(operation.node.ty));
        if operation.node.ty != OperationType::Subscription {
            continue;
        }
        let fields = root_fields(&operation.node.selection_set.node, document, &mut memo);
        if fields != 1 {
            return Err(format!(
                "a subscription selects exactly one root field (GraphQL's single root field \
                 rule); this one selects {fields}: subscribe to each separately"
            ));
        }
    }
    Ok(kind)
}

/// Fields a selection set selects at its own level, through its fragments (each fragment's
/// count remembered; a fragment that spreads itself counts 0 there: the schema refuses
/// cycles).
fn root_fields<'d>(
    set: &'d SelectionSet,
    document: &'d ExecutableDocument,
    memo: &mut HashMap<&'d str, u64>,
) -> u64 {
    let mut fields: u64 = 0;
    for item in &set.items {
        let more = match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => root_fields(&f.node.selection_set.node, document, memo),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                match (memo.get(name), document.fragments.get(name)) {
                    (Some(known), _) => *known,
                    (None, None) => 0,
                    (None, Some(fragment)) => {
                        memo.insert(name, 0);
                        let count = root_fields(&fragment.node.selection_set.node, document, memo);
                        memo.insert(name, count);
                        count
                    }
                }
            }
        };
        fields = fields.saturating_add(more);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_selects_one_root_field() {
        let check = |query: &str, name: Option<&str>| {
            let document = async_graphql::parser::parse_query(query).expect("it parses");
            single_root_field(&document, name)
        };
        assert_eq!(
            check("subscription { a: agendaProgress(id: \"x\") { id } }", None),
            Ok(Some(OperationType::Subscription))
        );
        let two = "subscription { a: agendaProgress(id: \"x\") { id } b: agendaProgress(id: \"y\") { id } }";
        assert!(check(two, None).unwrap_err().contains("selects 2"));
        let fragments = "subscription S { ...F ... on SubscriptionRoot { b: agendaProgress(id: \"y\") { id } } } \
                         fragment F on SubscriptionRoot { a: agendaProgress(id: \"x\") { id } }";
        assert!(check(fragments, Some("S")).unwrap_err().contains("selects 2"));
        // Queries and other operations are not its business.
        assert_eq!(
            check("{ a: me { name } b: me { name } }", None),
            Ok(Some(OperationType::Query))
        );
        assert_eq!(
            check(
                &format!(
                    "query Q {{ me {{ name }} }} {}",
                    two.replacen("subscription", "subscription T", 1)
                ),
                Some("Q")
            ),
            Ok(Some(OperationType::Query))
        );
        // Forty fragments each spreading the one before twice: counted in a moment.
        let mut nested = String::from(
            "subscription { ...F39 } fragment F0 on SubscriptionRoot { a: agendaProgress(id: \"x\") { id } }",
        );
        for i in 1..40 {
            nested.push_str(&format!(
                " fragment F{i} on SubscriptionRoot {{ ...F{p} ...F{p} }}",
                p = i - 1
            ));
        }
        let took = std::time::Instant::now();
        assert!(check(&nested, None).unwrap_err().contains(&format!("selects {}", 1u64 << 39)));
        assert!(took.elapsed() < std::time::Duration::from_secs(1), "{:?}", took.elapsed());
    }
}
