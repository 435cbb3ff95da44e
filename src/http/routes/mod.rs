mod accounts;
mod disputes;
mod ops;
mod purchases;
mod refunds;
mod webhooks;

use actix_web::web;

/// Every route of the HTTP API (docs/openapi.json is generated from these).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .route("/webhooks/stripe", web::post().to(webhooks::receive))
        .service(
            web::scope("/v1")
                .route(
                    "/accounts/{account_id}",
                    web::put().to(accounts::put_account),
                )
                .route(
                    "/accounts/{account_id}",
                    web::get().to(accounts::get_account),
                )
                .route(
                    "/accounts/{account_id}/ledger",
                    web::get().to(accounts::get_ledger),
                )
                .route(
                    "/accounts/{account_id}/consumptions",
                    web::post().to(accounts::post_consumption),
                )
                .route(
                    "/accounts/{account_id}/suspend",
                    web::post().to(accounts::suspend),
                )
                .route(
                    "/accounts/{account_id}/reinstate",
                    web::post().to(accounts::reinstate),
                )
                .route(
                    "/accounts/{account_id}/terminate",
                    web::post().to(accounts::terminate),
                )
                .route(
                    "/consumptions/{generation_id}/failure",
                    web::post().to(accounts::post_failure),
                )
                .route("/purchases", web::get().to(purchases::list))
                .route("/purchases/{purchase_id}", web::get().to(purchases::get))
                .route("/refunds", web::get().to(refunds::list))
                .route("/disputes", web::get().to(disputes::list)),
        );
}
