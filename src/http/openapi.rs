//! The HTTP API as an OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the response types in `views`. Served at `GET /openapi.json`, rendered at
//! `GET /docs/` (Swagger UI, its assets compiled into the binary), checked in as
//! `docs/openapi.json`; tests fail when the checked-in copy or the router differ from it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes::{
    accounts, disputes, ops, purchases, reconciliation, refund_requests, refunds, webhooks,
};
use super::views;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "creditguard",
        description = "The payments back office of a business selling prepaid credit packages \
            through Stripe: signed Stripe webhooks, a FIFO credit ledger, automatic refunds, \
            chargebacks and support actions. Every `/v1` call needs `Authorization: Bearer \
            <token>` with a role (`service`, `support`, `finance`; `admin` may do everything). \
            Errors are `application/problem+json` (RFC 9457) with a stable `type`. Money is in \
            minor units with an ISO currency; times are RFC 3339 UTC. Rule ids (P1, D1, CB1, …) \
            are explained in docs/policy.md.",
        license(name = "Apache-2.0"),
    ),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi_json,
        ops::docs,
        webhooks::receive,
        accounts::put_account,
        accounts::get_account,
        accounts::get_ledger,
        accounts::post_consumption,
        accounts::suspend,
        accounts::reinstate,
        accounts::terminate,
        accounts::post_failure,
        purchases::list,
        purchases::get,
        purchases::assign,
        refunds::list,
        disputes::list,
        refund_requests::file,
        refund_requests::list,
        refund_requests::feedback_report,
        refund_requests::get,
        refund_requests::approve,
        refund_requests::deny,
        refund_requests::request_info,
        refund_requests::reply,
        reconciliation::summary,
        reconciliation::discrepancies,
        reconciliation::export_csv,
    ),
    components(schemas(
        views::Problem,
        views::AccountView,
        views::LotView,
        views::DecisionView,
        views::LedgerPage,
        views::LedgerEntryView,
        views::ConsumptionView,
        views::RestorationView,
        views::PurchaseView,
        views::RefundView,
        views::DisputeView,
        views::WebhookReceipt,
        views::Health,
        accounts::AccountBody,
        accounts::ConsumptionBody,
        accounts::FailureBody,
        accounts::ActionBody,
        purchases::AssignBody,
        views::RefundRequestView,
        views::RequestRefundView,
        views::RequestNoteView,
        views::AccountHistoryView,
        views::FeedbackReportView,
        views::FeedbackWeekView,
        views::FeedbackKindView,
        views::CategoryTermsView,
        views::TermCountView,
        refund_requests::FileBody,
        refund_requests::NoteBody,
        refund_requests::ReplyBody,
        reconciliation::SummaryView,
        reconciliation::CurrencySummary,
        reconciliation::CreditSummary,
        reconciliation::Counts,
        reconciliation::DiscrepancyView,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "stripe", description = "Stripe's signed webhooks"),
        (name = "credits", description = "Accounts, balances and spending (the generation service)"),
        (name = "support", description = "Purchases, refunds, disputes, account actions and refund requests (filing, the review queue, the feedback report)"),
        (name = "finance", description = "Reconciliation: the summary of a window, discrepancies, the CSV export"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    ),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `creditguard token create --role ROLE` (only its hash is stored)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served and checked in (pretty JSON, ending in a newline).
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_route_of_the_router_is_in_the_document_and_nothing_else() {
        let routed: BTreeSet<(String, String)> = super::super::routes::table()
            .iter()
            .map(|r| (r.method.as_str().to_lowercase(), r.path.to_owned()))
            .collect();
        let document: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes missing from the document: {undocumented:?}; documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_error_is_a_problem() {
        let document: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        // `/readyz` answers the same small status object whether it is ready or not.
        let paths = document["paths"].as_object().unwrap();
        for (path, item) in paths.iter().filter(|(path, _)| *path != "/readyz") {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            response["content"]["application/problem+json"].is_object(),
                            "{method} {path} {status} is not documented as problem+json"
                        );
                    }
                }
            }
        }
    }

    /// `UPDATE_OPENAPI=1 cargo test openapi` writes the checked-in copy anew.
    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let generated = document_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the document the code generates; run \
             `UPDATE_OPENAPI=1 cargo test openapi` (or `creditguard openapi > docs/openapi.json`) \
             and commit it"
        );
    }
}
