//! `415` for a body that does not say it is JSON.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use tower_http::validate_request::ValidateRequest;

use super::Refusal;

/// Refuses anything but `application/json` (or `application/*+json`); tower-http's
/// `ValidateRequestHeaderLayer::custom` runs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequireJson;

impl ValidateRequest<Body> for RequireJson {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request) -> Result<(), Response> {
        let Err(problem) = tollgate_http::content_type::require_json(request.headers()) else {
            return Ok(());
        };
        let mut response = crate::responses::respond(problem);
        response
            .extensions_mut()
            .insert(Refusal::UnsupportedMediaType);
        Err(response)
    }
}
