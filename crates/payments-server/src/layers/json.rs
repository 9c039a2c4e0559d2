//! `415` for a body that does not say it is JSON.

use axum::extract::Request;
use axum::response::Response;

use super::Refusal;
use super::stage::Check;
use crate::state::AppState;

/// Refuses anything but `application/json` (or `application/*+json`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequireJson;

impl Check for RequireJson {
    fn check(&self, _state: &AppState, request: &mut Request) -> Option<Response> {
        let problem = tollgate_http::content_type::require_json(request.headers()).err()?;
        let mut response = crate::problem::respond(problem);
        response
            .extensions_mut()
            .insert(Refusal::UnsupportedMediaType);
        Some(response)
    }
}
