//! The handheld HTTP API under `/api/v1` (axum), plus `/healthz` and `/metrics`.

pub mod error;
mod handlers;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schema::vocab::Role;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::{self, Claims, TokenError};
use crate::clock::Clock;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach.
#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    /// The node's own store: its enterprise's data, its staff, its login tokens.
    pub store: Store,
    /// A regulator's laptop: the other enterprises of its region, one store each.
    pub others: Vec<Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub peers: Arc<crate::replication::peers::Peers>,
}

pub type AppState = Arc<App>;

impl App {
    /// Checks the bearer token and that one of the caller's roles is in `allowed`
    /// (an empty `allowed` admits any logged-in staff member).
    pub fn authorize(&self, headers: &HeaderMap, allowed: &[Role]) -> Result<Claims, ApiError> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = auth::verify(self.store.token_key(), token.trim(), self.clock.now_ms()).map_err(|e| match e {
            TokenError::Expired => ApiError::unauthorized("token expired"),
            TokenError::Malformed | TokenError::BadSignature => ApiError::unauthorized("invalid token"),
        })?;
        if !allowed.is_empty() && !claims.roles.iter().any(|r| allowed.contains(r)) {
            let names: Vec<&str> = allowed.iter().map(|r| r.zh()).collect();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "role_forbidden",
                format!("无权限：此操作需要以下岗位之一：{}", names.join("、")),
                format!(
                    "forbidden: this operation needs one of the roles {}",
                    allowed.iter().map(|r| r.code()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(claims)
    }

    /// Every store this node holds, its own first.
    pub fn stores(&self) -> impl Iterator<Item = &Store> {
        std::iter::once(&self.store).chain(&self.others)
    }

    /// The store of `enterprise`; none given: the node's own.
    pub fn store_of(&self, enterprise: Option<&str>) -> Result<Store, ApiError> {
        match enterprise.map(str::trim) {
            None | Some("") => Ok(self.store.clone()),
            Some(e) => self.stores().find(|s| s.enterprise() == e).cloned().ok_or_else(|| {
                let shown: String = e.chars().take(20).collect();
                ApiError::not_found(
                    "unknown_enterprise",
                    format!("本节点没有企业 {shown} 的数据"),
                    format!("this node holds no data of enterprise {shown:?}"),
                )
            }),
        }
    }

    /// Now for the rules: the wall clock, or the newest time this node's clock has reached
    /// if the wall clock is behind it ([`crate::store::Store::now_ms`]).
    pub fn now_ms(&self) -> Result<i64, crate::store::StoreError> {
        self.store.now_ms(self.clock.now_ms())
    }

    /// Today in the station's local time.
    pub fn today(&self, now_ms: i64) -> schema::archive::Day {
        let utc = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        schema::archive::Day(utc.with_timezone(&self.settings.utc_offset).date_naive())
    }
}

/// The router with every route and layer.
pub fn router(app: AppState) -> Router {
    let body_max = app.settings.body_max_bytes;
    let api = Router::new()
        .route("/session", post(handlers::login))
        .route("/cylinders", get(handlers::list).post(handlers::register))
        .route("/cylinders/{code}", get(handlers::detail))
        .route("/cylinders/{code}/events", get(handlers::events))
        .route("/cylinders/{code}/fill-check", post(handlers::fill_check))
        .route("/operations", post(handlers::operation))
        .route("/trace", get(handlers::trace))
        .route("/anomalies", get(handlers::anomalies))
        .route("/peers", get(handlers::peers))
        .route("/stock", get(handlers::stock))
        .route("/enrol", post(handlers::enrol))
        .route("/openapi.json", get(handlers::openapi));
    Router::new()
        .nest(handheld_proto::PREFIX, api)
        .route("/", get(handlers::handheld_page))
        .route("/handheld", get(handlers::handheld_page))
        .route("/healthz", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .layer(DefaultBodyLimit::max(body_max))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::internal().into_response()
        }))
        .with_state(app)
}

/// Counts requests and error statuses, and turns axum's plain-text rejections (such as a
/// body over the limit) into the JSON error body.
async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    app.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() {
        app.metrics.http_errors_4xx.fetch_add(1, Ordering::Relaxed);
    } else if status.is_server_error() {
        app.metrics.http_errors_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::new(status, "body_too_large", "请求内容过大", "request body too large").into_response();
    }
    resp
}

#[cfg(test)]
mod tests;
