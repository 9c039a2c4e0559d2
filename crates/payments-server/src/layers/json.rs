//! `415` for a body that does not say it is JSON.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;

use super::Refusal;
use super::stage::{Next, Step, answer, pass};
use crate::state::AppState;

/// Refuses anything but `application/json` (or `application/*+json`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequireJson;

impl Step for RequireJson {
    fn run<S: Next>(
        &self,
        _state: Arc<AppState>,
        request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static {
        match tollgate_http::content_type::require_json(request.headers()) {
            Ok(()) => pass(next, request),
            Err(problem) => {
                let mut response = crate::problem::respond(problem);
                response
                    .extensions_mut()
                    .insert(Refusal::UnsupportedMediaType);
                answer(response)
            }
        }
    }
}
