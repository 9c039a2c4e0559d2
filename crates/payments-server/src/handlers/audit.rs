//! `GET /api/v1/audit-logs`: the caller's own trail, newest first, a page at a time.

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use tollgate_audit::PageRequest;

use crate::auth::Caller;
use crate::responses;
use crate::state::AppState;

/// `?limit=&cursor=`.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) async fn audit_logs(
    State(state): State<Arc<AppState>>,
    Extension(Caller { user, .. }): Extension<Caller>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return responses::simple(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let page = match PageRequest::new(query.limit, query.cursor.as_deref()) {
        Ok(page) => page,
        Err(error) => return responses::simple(StatusCode::BAD_REQUEST, error.to_string()),
    };
    match state.audit.log.page(&user, page).await {
        Ok(page) => responses::json(StatusCode::OK, &page),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "audit trail unavailable");
            responses::unavailable("the audit trail is unavailable")
        }
    }
}
