//! `415` for a body that does not say it is JSON.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::Refusal;

/// Refuses anything but `application/json` (or `application/*+json`).
pub(crate) async fn require_json(request: Request, next: Next) -> Response {
    match tollgate_http::content_type::require_json(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(problem) => {
            let mut response = crate::problem::respond(problem);
            response
                .extensions_mut()
                .insert(Refusal::UnsupportedMediaType);
            response
        }
    }
}
