//! JSON bodies and query strings whose 422 names the field at fault. actix's `web::Json` and
//! `web::Query` pass serde's message on, which names a missing or unknown field but not one of
//! the wrong type ("invalid type: integer `42`, expected a string"); serde_path_to_error keeps
//! the path to the failing field. Every error is a problem (400, 413, 422), never plain text.

use std::future::{ready, Future};
use std::ops::Deref;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;

use super::problem::{field_of, ApiError};

/// The body limit of the `/v1` JSON API (docs/configuration.md).
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// A JSON body of at most `JSON_BODY_LIMIT` bytes, sent as `application/json`. It is
/// deserialized straight from its bytes, so a repeated key is a 422 as serde has it.
pub struct Json<T>(pub T);

/// A query string, as `web::Query` would read it.
pub struct Query<T>(pub T);

/// The 422 of a value that does not fit its field.
fn invalid<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> ApiError {
    let path = error.path().to_string();
    let message = error.into_inner().to_string();
    // At the top level ("."), serde's own message names the field (missing, unknown).
    let field = if path == "." {
        field_of(&message)
    } else {
        path
    };
    ApiError::invalid(&field, message)
}

/// Reads a body of at most `limit` bytes; an announced length over it is refused before a
/// byte of it is read. Shared by the JSON API and Stripe's webhook.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    payload
        .to_bytes_limited(limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?
        .map_err(|e| ApiError::MalformedRequest(format!("could not read the body: {e}")))
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        if e.inner().is_data() {
            invalid(e)
        } else {
            ApiError::MalformedRequest(format!("the body is not valid JSON: {}", e.inner()))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedRequest(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = web::Payload::from_request(&req, payload).into_inner();
        Box::pin(async move {
            let is_json = matches!(req.mime_type(), Ok(Some(mime))
                if mime.subtype() == actix_web::mime::JSON || mime.suffix() == Some(actix_web::mime::JSON));
            if !is_json {
                return Err(ApiError::MalformedRequest(
                    "the body must be JSON (Content-Type: application/json)".into(),
                )
                .into());
            }
            let body = read_body(&req, payload?, JSON_BODY_LIMIT).await?;
            Ok(Json(parse_json(&body)?))
        })
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        ready(
            serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
                .map(Query)
                .map_err(|e| invalid(e).into()),
        )
    }
}

macro_rules! inner_access {
    ($name:ident) => {
        impl<T> $name<T> {
            pub fn into_inner(self) -> T {
                self.0
            }
        }

        impl<T> Deref for $name<T> {
            type Target = T;
            fn deref(&self) -> &T {
                &self.0
            }
        }
    };
}

inner_access!(Json);
inner_access!(Query);
