pub(crate) mod accounts;
pub(crate) mod disputes;
pub(crate) mod ops;
pub(crate) mod purchases;
pub(crate) mod refunds;
pub(crate) mod webhooks;

use std::collections::BTreeMap;

use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse, Route};

use super::ApiError;

/// One route of the router: its method, its path (the same pattern in the OpenAPI document), and
/// how to build its handler.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    build: fn(Method) -> Route,
}

macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route the service serves. `configure` builds the router from this table, and a
        /// test checks it against the OpenAPI document both ways, so neither can miss a route.
        pub fn table() -> Vec<RouteSpec> {
            vec![$(RouteSpec {
                method: Method::$method,
                path: $path,
                build: |method| web::route().method(method).to($handler),
            }),*]
        }
    };
}

route_table! {
    GET "/healthz" => ops::healthz,
    GET "/readyz" => ops::readyz,
    GET "/metrics" => ops::metrics,
    GET "/openapi.json" => ops::openapi_json,
    GET "/docs" => ops::docs,
    POST "/webhooks/stripe" => webhooks::receive,
    PUT "/v1/accounts/{account_id}" => accounts::put_account,
    GET "/v1/accounts/{account_id}" => accounts::get_account,
    GET "/v1/accounts/{account_id}/ledger" => accounts::get_ledger,
    POST "/v1/accounts/{account_id}/consumptions" => accounts::post_consumption,
    POST "/v1/accounts/{account_id}/suspend" => accounts::suspend,
    POST "/v1/accounts/{account_id}/reinstate" => accounts::reinstate,
    POST "/v1/accounts/{account_id}/terminate" => accounts::terminate,
    POST "/v1/consumptions/{generation_id}/failure" => accounts::post_failure,
    GET "/v1/purchases" => purchases::list,
    GET "/v1/purchases/{purchase_id}" => purchases::get,
    GET "/v1/refunds" => refunds::list,
    GET "/v1/disputes" => disputes::list,
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
        for spec in specs {
            resource = resource.route((spec.build)(spec.method));
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
