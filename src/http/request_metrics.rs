//! Counts every answered request by route template, method and status, with its duration
//! (`creditguard_http_requests_total`, `creditguard_http_request_duration_seconds`).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use super::AppState;
use crate::metrics::UNMATCHED_ROUTE;

pub async fn record(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let method = request.method().as_str().to_owned();
    // The template (`/v1/accounts/{account_id}`), never the path: ids would make a series each.
    let route = request
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let answer = next.call(request).await;
    if let Some(state) = state {
        let status = match &answer {
            Ok(response) => response.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        state
            .metrics
            .http_request(&method, &route, status.as_u16(), started.elapsed());
    }
    answer
}
