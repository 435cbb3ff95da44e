pub(crate) mod accounts;
pub(crate) mod disputes;
pub(crate) mod ops;
pub(crate) mod purchases;
pub(crate) mod reconciliation;
pub(crate) mod refund_requests;
pub(crate) mod refunds;
pub(crate) mod webhooks;

use std::collections::BTreeMap;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage as _, HttpResponse, Route};

use super::auth::Caller;
use super::ApiError;
use crate::domain::Role;

/// Who may call a route. The role is a property of the route, checked before any handler or
/// extractor runs (a body is not even parsed for a caller who may not call it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (Stripe's webhook, health, metrics, the API document).
    Public,
    /// A bearer token with one of these roles (or `admin`).
    Roles(&'static [Role]),
}

const SERVICE: Access = Access::Roles(&[Role::Service]);
const SUPPORT: Access = Access::Roles(&[Role::Support]);
const READERS: Access = Access::Roles(&[Role::Service, Role::Support, Role::Finance]);
const FINANCE: Access = Access::Roles(&[Role::Finance]);
const BACK_OFFICE: Access = Access::Roles(&[Role::Support, Role::Finance]);
/// Refund requests are filed (and answered) by the generation service on a customer's behalf, or
/// by support.
const FILERS: Access = Access::Roles(&[Role::Service, Role::Support]);

/// One route of the router: its method, its path (the same pattern in the OpenAPI document),
/// who may call it, and how to build its handler.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    build: fn(Method) -> Route,
}

macro_rules! route_table {
    ($($method:ident $path:literal $access:ident => $handler:path),* $(,)?) => {
        /// Every route the service serves. `configure` builds the router from this table, and
        /// tests check it against the OpenAPI document both ways and walk it with every role.
        pub fn table() -> Vec<RouteSpec> {
            vec![$(RouteSpec {
                method: Method::$method,
                path: $path,
                access: $access,
                build: |method| web::route().method(method).to($handler),
            }),*]
        }
    };
}

const PUBLIC: Access = Access::Public;

route_table! {
    GET "/healthz" PUBLIC => ops::healthz,
    GET "/readyz" PUBLIC => ops::readyz,
    GET "/metrics" PUBLIC => ops::metrics,
    GET "/openapi.json" PUBLIC => ops::openapi_json,
    GET "/docs" PUBLIC => ops::docs,
    POST "/webhooks/stripe" PUBLIC => webhooks::receive,
    PUT "/v1/accounts/{account_id}" SERVICE => accounts::put_account,
    GET "/v1/accounts/{account_id}" READERS => accounts::get_account,
    GET "/v1/accounts/{account_id}/ledger" READERS => accounts::get_ledger,
    POST "/v1/accounts/{account_id}/consumptions" SERVICE => accounts::post_consumption,
    POST "/v1/accounts/{account_id}/suspend" SUPPORT => accounts::suspend,
    POST "/v1/accounts/{account_id}/reinstate" SUPPORT => accounts::reinstate,
    POST "/v1/accounts/{account_id}/terminate" SUPPORT => accounts::terminate,
    POST "/v1/consumptions/{generation_id}/failure" SERVICE => accounts::post_failure,
    GET "/v1/purchases" BACK_OFFICE => purchases::list,
    GET "/v1/purchases/{purchase_id}" BACK_OFFICE => purchases::get,
    POST "/v1/purchases/{purchase_id}/assign" SUPPORT => purchases::assign,
    GET "/v1/refunds" BACK_OFFICE => refunds::list,
    POST "/v1/refund-requests" FILERS => refund_requests::file,
    GET "/v1/refund-requests" SUPPORT => refund_requests::list,
    GET "/v1/refund-requests/feedback-report" SUPPORT => refund_requests::feedback_report,
    GET "/v1/refund-requests/{request_id}" FILERS => refund_requests::get,
    POST "/v1/refund-requests/{request_id}/approve" SUPPORT => refund_requests::approve,
    POST "/v1/refund-requests/{request_id}/deny" SUPPORT => refund_requests::deny,
    POST "/v1/refund-requests/{request_id}/request-info" SUPPORT => refund_requests::request_info,
    POST "/v1/refund-requests/{request_id}/reply" FILERS => refund_requests::reply,
    GET "/v1/disputes" BACK_OFFICE => disputes::list,
    GET "/v1/reconciliation/summary" FINANCE => reconciliation::summary,
    GET "/v1/reconciliation/discrepancies" FINANCE => reconciliation::discrepancies,
    GET "/v1/reconciliation/export.csv" FINANCE => reconciliation::export_csv,
}

impl RouteSpec {
    fn route(&self) -> Route {
        let route = (self.build)(self.method.clone());
        match self.access {
            Access::Public => route,
            Access::Roles(roles) => route.wrap(from_fn(
                move |req: ServiceRequest, next: Next<actix_web::body::BoxBody>| {
                    require_role(roles, req, next)
                },
            )),
        }
    }
}

/// 401 without a valid token, 403 for a role the route does not admit; otherwise the caller
/// is kept in the request (the `Caller` extractor finds it there) and the handler runs.
async fn require_role(
    roles: &'static [Role],
    mut req: ServiceRequest,
    next: Next<actix_web::body::BoxBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let caller = req.extract::<Caller>().await?;
    caller.require(roles)?;
    req.extensions_mut().insert(caller);
    next.call(req).await
}

/// Registers the table: one resource per path, so a known path asked with another method gets
/// 405 with `Allow` (and a problem body) instead of falling through to 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut by_path: BTreeMap<&'static str, Vec<RouteSpec>> = BTreeMap::new();
    for spec in table() {
        by_path.entry(spec.path).or_default().push(spec);
    }
    for (path, specs) in by_path {
        let allow = specs
            .iter()
            .map(|s| s.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut resource = web::resource(path);
        for spec in &specs {
            resource = resource.route(spec.route());
        }
        cfg.service(resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        })));
    }
}

fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut response =
        actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed(allow.to_owned()));
    if let Ok(value) = header::HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}
