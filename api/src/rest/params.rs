//! The query parameters of the REST surface: their names (matched case-insensitively, as POP
//! clients spell them either way), which route takes which, and how the documentation spells
//! them. Shared by the handlers and the OpenAPI document.

use super::Kind;

// Query parameter names, lower-cased (matched case-insensitively).
pub(crate) const BY_ID: &str = "byid";
pub(crate) const BY_CUSTOMER_ID: &str = "bycustomerid";
pub(crate) const BY_LINK_ID: &str = "bylinkid";
pub(crate) const BY_AGENDA_ID: &str = "byagendaid";
pub(crate) const BY_AGENDA_PROGRESS_ID: &str = "byagendaprogressid";
pub(crate) const BY_RESOURCE_POOL_ID: &str = "byresourcepoolid";
pub(crate) const BY_INSIGHT_ID: &str = "byinsightid";
pub(crate) const BY_TITLE: &str = "bytitle";
pub(crate) const LIMIT: &str = "limit";
pub(crate) const AFTER: &str = "after";
pub(crate) const AT_LEAST_POSITION: &str = "atleastposition";
pub(crate) const LINK_ID: &str = "linkid";
/// POP's spelling of `limit`.
pub(crate) const BY_LIMIT: &str = "bylimit";
/// POP's field selection: `byFields=title,customerId` answers only those fields.
pub(crate) const BY_FIELDS: &str = "byfields";
/// POP's count-only query: `byCount=true` answers how many match, without them.
pub(crate) const BY_COUNT: &str = "bycount";
/// POP's filter by the correlation id an object was written with.
pub(crate) const BY_CID: &str = "bycid";
/// pop only: read an agenda, its progress or a summary as of a log position or a time.
pub(crate) const AS_OF: &str = "asof";

/// The query parameters each GET accepts, as documented in the OpenAPI document.
pub(crate) fn list_params(kind: Kind, item: bool) -> &'static [&'static str] {
    const AGENDA: &[&str] = &[
        BY_ID,
        BY_AGENDA_ID,
        BY_CUSTOMER_ID,
        BY_LINK_ID,
        BY_AGENDA_PROGRESS_ID,
        BY_RESOURCE_POOL_ID,
        BY_INSIGHT_ID,
        BY_TITLE,
        BY_CID,
        LIMIT,
        BY_LIMIT,
        AFTER,
        BY_FIELDS,
        BY_COUNT,
        AT_LEAST_POSITION,
    ];
    const PROGRESS: &[&str] = &[
        BY_ID,
        BY_AGENDA_ID,
        BY_CUSTOMER_ID,
        BY_LINK_ID,
        BY_RESOURCE_POOL_ID,
        BY_INSIGHT_ID,
        BY_TITLE,
        BY_CID,
        LIMIT,
        BY_LIMIT,
        AFTER,
        BY_FIELDS,
        BY_COUNT,
        AT_LEAST_POSITION,
    ];
    const OPERATION: &[&str] = &[
        BY_ID,
        BY_AGENDA_PROGRESS_ID,
        BY_AGENDA_ID,
        BY_CUSTOMER_ID,
        LIMIT,
        BY_LIMIT,
        AFTER,
        BY_FIELDS,
        BY_COUNT,
        AT_LEAST_POSITION,
    ];
    const POOLED: &[&str] = &[
        BY_ID,
        BY_CUSTOMER_ID,
        BY_TITLE,
        BY_RESOURCE_POOL_ID,
        BY_CID,
        LIMIT,
        BY_LIMIT,
        AFTER,
        BY_FIELDS,
        BY_COUNT,
        AT_LEAST_POSITION,
    ];
    const OWNED: &[&str] = &[
        BY_ID,
        BY_CUSTOMER_ID,
        BY_TITLE,
        BY_CID,
        LIMIT,
        BY_LIMIT,
        AFTER,
        BY_FIELDS,
        BY_COUNT,
        AT_LEAST_POSITION,
    ];
    if item {
        return match kind {
            // An id two customers both use: an admin of both names the customer.
            Kind::Agenda | Kind::AgendaProgress | Kind::OperationProgress => {
                &[BY_FIELDS, AT_LEAST_POSITION, AS_OF, BY_CUSTOMER_ID]
            }
            _ => &[BY_FIELDS, AT_LEAST_POSITION],
        };
    }
    match kind {
        Kind::Agenda => AGENDA,
        Kind::AgendaProgress => PROGRESS,
        Kind::OperationProgress => OPERATION,
        Kind::Customer | Kind::Insight => POOLED,
        Kind::ResourcePool | Kind::AgendaTemplate => OWNED,
    }
}

/// The spelling of a parameter in the documentation and in messages.
pub(crate) fn param_spelling(lower: &str) -> &'static str {
    match lower {
        BY_ID => "byId",
        BY_CUSTOMER_ID => "byCustomerId",
        BY_LINK_ID => "byLinkId",
        BY_AGENDA_ID => "byAgendaId",
        BY_AGENDA_PROGRESS_ID => "byAgendaProgressId",
        BY_RESOURCE_POOL_ID => "byResourcePoolId",
        BY_INSIGHT_ID => "byInsightId",
        BY_TITLE => "byTitle",
        LIMIT => "limit",
        AFTER => "after",
        AT_LEAST_POSITION => "atLeastPosition",
        LINK_ID => "linkId",
        BY_LIMIT => "byLimit",
        BY_FIELDS => "byFields",
        BY_COUNT => "byCount",
        AS_OF => "asOf",
        BY_CID => "byCid",
        _ => "?",
    }
}
