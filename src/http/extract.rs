//! JSON bodies and query strings whose 422 names the field at fault. actix's `web::Json` and
//! `web::Query` pass serde's message on, which names a missing or unknown field but not one of
//! the wrong type ("invalid type: integer `42`, expected a string"); serde_path_to_error keeps
//! the path to the failing field.

use std::future::{ready, Future};
use std::ops::Deref;
use std::pin::Pin;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::problem::{field_of, ApiError};

/// A JSON body. actix's `web::Json` reads it (limit, content type, syntax: its errors are
/// mapped in `problem::json_error`); `T` is then taken from the parsed value, field by field.
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

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let reading = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = reading.await?.into_inner();
            Ok(Json(
                serde_path_to_error::deserialize(value).map_err(invalid)?,
            ))
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
