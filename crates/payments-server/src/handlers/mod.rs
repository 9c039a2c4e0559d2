//! The handlers: each extracts, calls one function of the state, and maps its typed result to
//! an answer in one `match`.

pub(crate) mod audit;
pub(crate) mod payments;
pub(crate) mod probes;
pub(crate) mod rate_limits;
pub(crate) mod simulate;

use axum::response::Response;
use http::{Method, StatusCode, Uri};

use crate::responses;

/// `404` for a path no route has.
pub(crate) async fn not_found(uri: Uri) -> Response {
    responses::simple(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}

/// `405` for a known path and another method; the router adds `Allow`.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let method = crate::layers::observe::method_label(&method);
    responses::simple(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}; see `Allow`", uri.path()),
    )
}
