//! What the API answers, as types: the handlers serialize these, and the OpenAPI document
//! (`http::openapi`) is generated from the same types, so the two cannot drift apart.
//! Field names are the contract: fields may be added, none renamed.

use serde::Serialize;
use utoipa::ToSchema;

use super::rfc3339;
use crate::db::disputes::Dispute;
use crate::db::models::{Account, DecisionRow, Purchase};
use crate::db::refunds::Refund;
use crate::ledger::{LedgerEntry, Lot};

/// An RFC 9457 problem (`application/problem+json`). `type` is a stable slug to branch on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable slug, e.g. `invalid-signature`, `insufficient-credits`, `account-not-found`.
    #[serde(rename = "type")]
    #[schema(example = "insufficient-credits")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault (`invalid-request` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The balance when credits were insufficient (`insufficient-credits` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    /// The credits asked for (`insufficient-credits` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<i64>,
}

/// An automatic decision (or a person's), with the rule that made it and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    /// Rule id of the policy table (docs/policy.md): P1, D1, M1, CB1, …
    #[schema(example = "D1")]
    pub rule: String,
    #[schema(example = "refund:rf_0194f0c1")]
    pub action: String,
    pub explanation: String,
    /// `creditguard` for automatic decisions, `support:<token id>` for a person's.
    pub decided_by: String,
    pub at: String,
}

impl From<&DecisionRow> for DecisionView {
    fn from(d: &DecisionRow) -> Self {
        Self {
            rule: d.rule.clone(),
            action: d.action.clone(),
            explanation: d.explanation.clone(),
            decided_by: d.decided_by.clone(),
            at: rfc3339(d.created_at),
        }
    }
}

/// The credits one purchase granted, and how many are left.
#[derive(Debug, Serialize, ToSchema)]
pub struct LotView {
    pub lot_id: i64,
    pub purchase_id: Option<String>,
    pub granted: i64,
    pub remaining: i64,
    pub granted_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    /// `active`, `suspended` or `terminated`.
    pub status: String,
    pub status_reason: Option<String>,
    /// Credits: the sum of the lots' `remaining`.
    pub balance: i64,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub created_at: String,
    /// Oldest first: the order consumption draws them (FIFO).
    pub lots: Vec<LotView>,
    /// Suspensions, lifts and terminations (CB1–CB4, E1, V1).
    pub decisions: Vec<DecisionView>,
}

impl AccountView {
    pub fn new(account: &Account, lots: &[Lot], decisions: &[DecisionRow]) -> Self {
        Self {
            id: account.id.clone(),
            status: account.status.clone(),
            status_reason: account.status_reason.clone(),
            balance: account.balance,
            email: account.email.clone(),
            stripe_customer_id: account.stripe_customer_id.clone(),
            created_at: rfc3339(account.created_at),
            lots: lots
                .iter()
                .map(|lot| LotView {
                    lot_id: lot.id,
                    purchase_id: lot.purchase_id.clone(),
                    granted: lot.granted,
                    remaining: lot.remaining,
                    granted_at: rfc3339(lot.created_at),
                })
                .collect(),
            decisions: decisions.iter().map(DecisionView::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntryView {
    pub id: i64,
    /// `grant`, `consume`, `failure_restore`, `refund_revoke`, `dispute_revoke`, …
    pub kind: String,
    pub delta: i64,
    pub balance_after: i64,
    /// What caused it: a purchase, generation, refund or dispute id.
    pub reference: String,
    pub purchase_id: Option<String>,
    pub lot_id: i64,
    pub created_at: String,
}

impl From<&LedgerEntry> for LedgerEntryView {
    fn from(e: &LedgerEntry) -> Self {
        Self {
            id: e.id,
            kind: e.kind.clone(),
            delta: e.delta,
            balance_after: e.balance_after,
            reference: e.reference.clone(),
            purchase_id: e.purchase_id.clone(),
            lot_id: e.lot_id,
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntryView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumptionView {
    pub generation_id: String,
    pub credits: i64,
    /// The balance right after this consumption (the same on a repeat).
    pub balance: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RestorationView {
    pub generation_id: String,
    pub account_id: String,
    /// Credits that went back to the account (rule T1; fewer if a lot owed them, see the
    /// purchase's decisions).
    pub restored: i64,
    pub balance: i64,
    /// True when this generation had been restored before and nothing changed now.
    pub already_restored: bool,
    pub rule: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseView {
    pub id: String,
    pub account_id: Option<String>,
    /// What the payment named as its account, even when it could not be used (M1).
    pub account_reference: Option<String>,
    pub package_id: Option<String>,
    /// What Stripe charged, in minor units.
    pub amount: i64,
    pub currency: String,
    pub payment_intent: String,
    pub charge: Option<String>,
    pub checkout_session: Option<String>,
    /// `credited`, `undelivered`, `refunded`, `partially_refunded` or `disputed`.
    pub status: String,
    pub undelivered_reason: Option<String>,
    pub credits_granted: i64,
    pub credits_remaining: i64,
    pub paid_at: String,
    pub decisions: Vec<DecisionView>,
}

impl PurchaseView {
    pub fn new(purchase: &Purchase, remaining: i64, decisions: &[DecisionRow]) -> Self {
        Self {
            id: purchase.id.clone(),
            account_id: purchase.account_id.clone(),
            account_reference: purchase.account_reference.clone(),
            package_id: purchase.package_id.clone(),
            amount: purchase.amount,
            currency: purchase.currency.clone(),
            payment_intent: purchase.payment_intent_id.clone(),
            charge: purchase.charge_id.clone(),
            checkout_session: purchase.checkout_session_id.clone(),
            status: purchase.status.clone(),
            undelivered_reason: purchase.undelivered_reason.clone(),
            credits_granted: purchase.credits_granted,
            credits_remaining: remaining,
            paid_at: rfc3339(purchase.paid_at),
            decisions: decisions.iter().map(DecisionView::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub id: String,
    pub purchase_id: String,
    pub amount: i64,
    pub currency: String,
    /// Ours: `duplicate`, `early_fraud_warning`, `outside_creditguard`, …
    pub reason: String,
    pub rule: String,
    /// `creditguard` (we asked Stripe) or `stripe` (made outside creditguard, O1).
    pub origin: String,
    /// `pending`, `submitted`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    pub status_detail: Option<String>,
    pub stripe_refund_id: Option<String>,
    pub credits_revoked: i64,
    /// Credits the refunded money paid for that were already spent (O1).
    pub credits_shortfall: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Refund> for RefundView {
    fn from(r: &Refund) -> Self {
        Self {
            id: r.id.clone(),
            purchase_id: r.purchase_id.clone(),
            amount: r.amount,
            currency: r.currency.clone(),
            reason: r.reason.clone(),
            rule: r.rule.clone(),
            origin: r.origin.clone(),
            status: r.status.clone(),
            status_detail: r.status_detail.clone(),
            stripe_refund_id: r.stripe_refund_id.clone(),
            credits_revoked: r.credits_revoked,
            credits_shortfall: r.credits_shortfall,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeView {
    pub id: String,
    pub purchase_id: String,
    pub account_id: Option<String>,
    pub charge: Option<String>,
    /// Stripe's reason (`fraudulent`, `product_not_received`, …).
    pub reason: String,
    pub amount: i64,
    pub currency: String,
    /// Stripe's status (`needs_response`, `won`, `lost`, …).
    pub status: String,
    pub outcome: Option<String>,
    pub credits_revoked: i64,
    pub credits_reinstated: i64,
    pub funds_withdrawn: i64,
    pub fees_withdrawn: i64,
    pub funds_reinstated: i64,
    pub fees_reinstated: i64,
    pub opened_at: String,
    pub closed_at: Option<String>,
}

impl From<&Dispute> for DisputeView {
    fn from(d: &Dispute) -> Self {
        Self {
            id: d.id.clone(),
            purchase_id: d.purchase_id.clone(),
            account_id: d.account_id.clone(),
            charge: d.charge_id.clone(),
            reason: d.reason.clone(),
            amount: d.amount,
            currency: d.currency.clone(),
            status: d.status.clone(),
            outcome: d.outcome.clone(),
            credits_revoked: d.credits_revoked,
            credits_reinstated: d.credits_reinstated,
            funds_withdrawn: d.funds_withdrawn,
            fees_withdrawn: d.fees_withdrawn,
            funds_reinstated: d.funds_reinstated,
            fees_reinstated: d.fees_reinstated,
            opened_at: rfc3339(d.opened_at),
            closed_at: d.closed_at.map(rfc3339),
        }
    }
}

/// The answer to Stripe, sent only after the event's transaction committed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    pub event_id: String,
    /// `processed`, `duplicate`, `deferred` or `ignored`.
    #[schema(value_type = String, example = "processed")]
    pub outcome: crate::flows::webhook::Outcome,
    /// The event's stored status: `processed`, `deferred`, `ignored` or `failed`.
    #[schema(value_type = String)]
    pub status: crate::domain::EventStatus,
    /// What applying the event did, in words.
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An approved request's refund: how much, where it goes and when it arrives.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestRefundView {
    pub id: String,
    pub purchase_id: String,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `submitted`, `succeeded`, `failed` or `canceled` (see `GET /v1/refunds`).
    pub status: String,
    /// Always `original_payment_method`: Stripe refunds to the card or account that paid.
    #[schema(example = "original_payment_method")]
    pub method: String,
    /// What the customer can be told about when the money arrives.
    #[schema(example = "3-10 business days")]
    pub expected_processing: String,
    pub credits_revoked: i64,
}

impl From<&Refund> for RequestRefundView {
    fn from(r: &Refund) -> Self {
        Self {
            id: r.id.clone(),
            purchase_id: r.purchase_id.clone(),
            amount: r.amount,
            currency: r.currency.clone(),
            status: r.status.clone(),
            method: "original_payment_method".into(),
            expected_processing: "3-10 business days".into(),
            credits_revoked: r.credits_revoked,
        }
    }
}

/// Something said on a request: a reviewer's question or note, the customer's reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestNoteView {
    /// `request_info`, `reply`, `approve` or `deny`.
    pub kind: String,
    /// `role:token_id` of who said it.
    pub author: String,
    pub body: String,
    pub at: String,
}

/// The account beside a request in the queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountHistoryView {
    pub status: String,
    pub status_reason: Option<String>,
    pub balance: i64,
    pub purchases: i64,
    pub refunds: i64,
    pub disputes: i64,
    /// Generations that failed and were restored (T1).
    pub failed_generations: i64,
    pub refund_requests: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundRequestView {
    pub id: String,
    pub account_id: String,
    /// `duplicate`, `technical`, `misdelivery`, `change_of_mind`, `quality`, `renewal`, or
    /// another kind (denied under C1).
    pub kind: String,
    /// `approved`, `denied`, `pending_review` or `needs_info`.
    pub status: String,
    /// The rule that decided (or queued) it: D1, T2, M1, C1, Q1, L1, V1, CB4, …
    pub rule: String,
    /// Why, in words that can be shown to the customer.
    pub explanation: String,
    pub purchase_id: Option<String>,
    pub generation_id: Option<String>,
    pub category: Option<String>,
    pub feedback: String,
    pub original_image_url: Option<String>,
    pub result_image_url: Option<String>,
    /// R1: when a person must have answered (while `pending_review`).
    pub due_at: Option<String>,
    /// Waiting for a person past `due_at`.
    pub overdue: bool,
    /// An approved refund: amount, method and expected processing time.
    pub refund: Option<RequestRefundView>,
    /// Credits given back to the balance (an approved quality or misdelivery request).
    pub credits_returned: i64,
    /// `creditguard` for the policy, `support:<token id>` for a person; null while waiting.
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub filed_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub notes: Vec<RequestNoteView>,
    /// Every decision on the request, oldest first.
    pub decisions: Vec<DecisionView>,
    /// In the queue (`GET /v1/refund-requests`) and on one request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_history: Option<AccountHistoryView>,
}

impl RefundRequestView {
    pub fn new(
        r: &crate::db::refund_requests::RefundRequest,
        now: chrono::NaiveDateTime,
        refund: Option<&Refund>,
        notes: &[crate::db::refund_requests::Note],
        decisions: &[DecisionRow],
    ) -> Self {
        Self {
            id: r.id.clone(),
            account_id: r.account_id.clone(),
            kind: r.kind.clone(),
            status: r.status.clone(),
            rule: r.rule.clone(),
            explanation: r.explanation.clone(),
            purchase_id: r.purchase_id.clone(),
            generation_id: r.generation_id.clone(),
            category: r.category.clone(),
            feedback: r.feedback.clone(),
            original_image_url: r.original_image_url.clone(),
            result_image_url: r.result_image_url.clone(),
            due_at: r.due_at.map(rfc3339),
            overdue: r.status == "pending_review" && r.due_at.is_some_and(|due| due < now),
            refund: refund.map(RequestRefundView::from),
            credits_returned: r.credits_returned,
            decided_by: r.decided_by.clone(),
            decided_at: r.decided_at.map(rfc3339),
            filed_by: r.filed_by.clone(),
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            notes: notes
                .iter()
                .map(|n| RequestNoteView {
                    kind: n.kind.clone(),
                    author: n.author.clone(),
                    body: n.body.clone(),
                    at: rfc3339(n.created_at),
                })
                .collect(),
            decisions: decisions.iter().map(DecisionView::from).collect(),
            account_history: None,
        }
    }
}

/// Requests of one ISO week, kind and category.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackWeekView {
    /// ISO week, `2026-W49`.
    pub week: String,
    pub kind: String,
    pub category: Option<String>,
    pub requests: i64,
    pub approved: i64,
    pub denied: i64,
    pub pending_review: i64,
    pub needs_info: i64,
    /// approved / (approved + denied); null before any is decided.
    pub approval_rate: Option<f64>,
}

/// Requests of one kind over the whole window.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackKindView {
    pub kind: String,
    pub requests: i64,
    pub approved: i64,
    pub denied: i64,
    pub approval_rate: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TermCountView {
    pub term: String,
    pub count: i64,
}

/// The most frequent terms of the quality feedback of one category.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryTermsView {
    pub category: String,
    pub requests: i64,
    pub terms: Vec<TermCountView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackReportView {
    pub from: String,
    pub to: String,
    pub weeks: Vec<FeedbackWeekView>,
    pub kinds: Vec<FeedbackKindView>,
    pub quality_terms: Vec<CategoryTermsView>,
}
