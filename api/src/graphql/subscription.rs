//! Subscriptions (graphql-transport-ws): agenda progress by id, by customer and by linkId,
//! and the operation progress of one agenda — each a live follow of the application layer
//! ([`pop_app::live`]), which is fed from the projections' change feed, filters by the
//! caller's customers, and signals lag (`lagged`, then the current state marked `resync`).
//! This module only gives the follow's items their GraphQL shape.

use async_graphql::futures_util::Stream;
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
    async fn agenda_progress(
        &self,
        ctx: &Context<'_>,
        id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        progress(ctx, Target::Progress(id), after_position).await
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

    /// Every change of the visible agendas sharing a linkId.
    async fn agenda_progress_by_link_id(
        &self,
        ctx: &Context<'_>,
        link_id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        progress(ctx, Target::Link(link_id), after_position).await
    }

    /// The operation progress of one agenda: all of it first, then the entries each change
    /// touched.
    async fn operation_progress(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = OperationProgressUpdate>> {
        let (app, caller) = context(ctx)?;
        let follow = app
            .follow(caller, Target::Operations(agenda_id), after_position.as_deref())
            .await
            .map_err(GqlError)?;
        Ok(follow.filter_map(|update| async move {
            match update {
                Update::Operations(o) => Some(OperationProgressUpdate::from(o)),
                Update::Progress(_) => None,
            }
        }))
    }
}
