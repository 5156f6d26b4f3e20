//! Route handlers. Each one authorises, validates its input into domain types, calls the
//! store and converts the answer to the handheld-proto types.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use handheld_proto::*;
use schema::anomaly::AnomalyKind;
use schema::archive::{Day, DocId};
use schema::codes::FullCode;
use schema::event::{CorrectionReason, EventBody, EventId, FindingAction, SignedEvent, parse_hex};
use schema::records::{Customer, Staff};
use schema::rules::{FillCheck, Refusal, check_fill};
use schema::vocab::Medium;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth;
use crate::convert::{anomaly_view, archive_from, archive_view, event_view, reason, rfc3339, state_view, summary};
use crate::metrics::AnomalyCounts;
use crate::store::anomalies::AnomalyFilter;
use crate::store::{CylinderFilter, CylinderRow, Store, StoreError, StoredResult};

/// Runs a blocking store read off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "store read task failed");
            Err(ApiError::internal())
        }
    }
}

fn json_error(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "请求须为 JSON（Content-Type: application/json）",
            "request body must be JSON (Content-Type: application/json)",
        ),
        JsonRejection::JsonDataError(e) => ApiError::bad_request(
            "invalid_json",
            format!("请求字段有误：{}", e.body_text()),
            format!("invalid request fields: {}", e.body_text()),
        ),
        other => {
            if other.status() == StatusCode::PAYLOAD_TOO_LARGE {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "请求内容过大",
                    "request body too large",
                );
            }
            ApiError::bad_request(
                "invalid_json",
                format!("请求不是合法的 JSON：{}", other.body_text()),
                format!("request is not valid JSON: {}", other.body_text()),
            )
        }
    }
}

fn query_error(e: QueryRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!("查询参数有误：{}", e.body_text()),
        format!("invalid query: {}", e.body_text()),
    )
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no_route", "没有这个接口", "no such route")
}

/// A node enrolling with this head office (no login: the one-time code is the proof).
pub(super) async fn enrol(
    State(app): State<AppState>,
    body: Result<Json<crate::enrolment::EnrolRequest>, JsonRejection>,
) -> Result<Json<crate::enrolment::EnrolResponse>, ApiError> {
    use crate::enrolment::RedeemError;
    let Json(req) = body.map_err(json_error)?;
    let quic_port = (app.settings.role == crate::config::Role::HeadOffice).then(|| app.settings.quic.port());
    crate::enrolment::redeem(&app.store, req, quic_port).await.map(Json).map_err(|e| match e {
        RedeemError::NotHeadOffice => {
            ApiError::not_found("not_head_office", "本节点不是总部节点，不能签发证书", "this node is not a head office")
        }
        RedeemError::BadCode => ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_enrolment_code",
            "注册码无效或已使用",
            "unknown or already used enrolment code",
        ),
        RedeemError::BadKey => {
            ApiError::bad_request("invalid_node_key", "节点公钥应为64位十六进制", "node key must be 64 hex digits")
        }
        RedeemError::Store(e) => ApiError::from(e),
        RedeemError::Certificate(e) => {
            tracing::error!(error = %e, "issuing a certificate failed");
            ApiError::internal()
        }
    })
}

/// The handheld page, compiled into the binary.
pub(super) async fn handheld_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("handheld.html")).into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

pub(super) async fn health(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    let store = app.store.clone();
    let ((cylinders, events), (events_fingerprint, documents_fingerprint)) =
        blocking(move || Ok((store.counts()?, store.fingerprints()?))).await?;
    Ok(Json(Health {
        status: "ok".into(),
        api_version: API_VERSION.into(),
        station: app.settings.station_name.clone(),
        enterprise: app.settings.enterprise.to_string(),
        node: app.store.node_id().to_string(),
        cylinders,
        events,
        events_fingerprint,
        documents_fingerprint,
        other_enterprises: app.others.iter().map(|s| s.enterprise().to_owned()).collect(),
    }))
}

pub(super) async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.store.clone();
    let commit = *store.subscribe().borrow();
    let cached = app.metrics.anomaly_counts.lock().ok().and_then(|c| c.clone()).filter(|c| c.fresh(commit));
    let (cylinders, events, nodes, anomalies, backlog, ahead) = blocking(move || {
        let (cylinders, events) = store.counts()?;
        let ahead = store.counter(crate::store::replica::EVENTS_AHEAD_COUNTER)?;
        let nodes = store.records("node")?;
        let anomalies = match cached {
            Some(c) => c,
            None => AnomalyCounts { commit, at: std::time::Instant::now(), counts: store.anomaly_counts()? },
        };
        Ok((cylinders, events, nodes, anomalies, store.index_backlog()?, ahead))
    })
    .await?;
    if let Ok(mut cache) = app.metrics.anomaly_counts.lock() {
        *cache = Some(anomalies.clone());
    }
    let anomalies = anomalies.counts;
    let mut text = app.metrics.render(app.store.stats(), cylinders, events);
    let ahead_max = schema::hlc::AHEAD_MAX_MS / 60_000;
    let _ = std::fmt::Write::write_fmt(
        &mut text,
        format_args!(
            "# HELP node_index_backlog_events Received events not yet in the traceability index.\n\
             # TYPE node_index_backlog_events gauge\nnode_index_backlog_events {backlog}\n\
             # HELP node_events_clock_ahead_total Received events stamped more than {ahead_max} minutes ahead of this node's clock (their signer's clock runs fast).\n\
             # TYPE node_events_clock_ahead_total counter\nnode_events_clock_ahead_total {ahead}\n"
        ),
    );
    let peers = peer_views(&app, &nodes, events);
    crate::metrics::render_replication(&mut text, &peers, &anomalies);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Every enrolled node but this one, and every node heard from, with what replication
/// knows of it.
fn peer_views(app: &AppState, nodes: &[serde_json::Value], events_now: u64) -> Vec<PeerView> {
    let now = app.clock.now_ms();
    let me = app.store.node_id().to_string();
    let mut known: std::collections::BTreeMap<String, (Option<String>, Option<String>)> = nodes
        .iter()
        .filter_map(|n| {
            let key = n.get("key")?.as_str()?.to_owned();
            let field = |f: &str| n.get(f).and_then(|v| v.as_str()).map(str::to_owned);
            Some((key, (field("name"), field("role"))))
        })
        .filter(|(k, _)| *k != me)
        .collect();
    let seen = app.peers.snapshot();
    for id in seen.keys() {
        known.entry(id.to_string()).or_default();
    }
    known
        .into_iter()
        .map(|(key, (name, role))| {
            let state =
                parse_hex::<32>(&key).and_then(|k| seen.get(&schema::event::NodeId(k)).cloned()).unwrap_or_default();
            PeerView {
                node: key,
                name,
                role,
                address: state.address.clone(),
                connected: state.connected,
                last_contact: state.last_contact_ms.map(rfc3339),
                last_in_sync: state.last_in_sync_ms.map(rfc3339),
                lag_ms: if state.last_contact_ms.is_some() { state.lag_ms(now) } else { 0 },
                pending_events: if state.last_contact_ms.is_some() { state.pending_events(events_now) } else { 0 },
                items_sent: state.items_sent,
                items_received: state.items_received,
                items_refused: state.items_refused,
                bytes_in: state.bytes_in,
                bytes_out: state.bytes_out,
                first_round_ms: state.first_round.map(|r| r.ms),
                first_round_bytes: state.first_round.map(|r| r.bytes),
                first_round_flights: state.first_round.map(|r| r.flights),
                first_round_item_bytes: state.first_round.map(|r| r.item_bytes),
            }
        })
        .collect()
}

/// Stock by place and status (at a head office: across all its stations).
pub(super) async fn stock(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EnterpriseQuery>, QueryRejection>,
) -> Result<Json<Vec<handheld_proto::StockLine>>, ApiError> {
    app.authorize(&headers, &[])?;
    let Query(q) = query.map_err(query_error)?;
    let store = app.store_of(q.enterprise.as_deref())?;
    let lines = blocking(move || store.stock()).await?;
    let zh = |status: &str| {
        schema::state::Location::ALL_STATUSES.iter().find(|(s, _)| *s == status).map_or("", |(_, zh)| zh).to_owned()
    };
    Ok(Json(
        lines
            .into_iter()
            .map(|l| handheld_proto::StockLine {
                place: l.place,
                status: l.status.to_owned(),
                status_zh: zh(l.status),
                full: l.full,
                count: l.count,
            })
            .collect(),
    ))
}

/// Which enterprise's data a regulator's laptop is asked about (default: its own).
#[derive(Debug, Deserialize)]
pub(super) struct EnterpriseQuery {
    enterprise: Option<String>,
}

/// Replication peers: last contact, lag and pending counts.
pub(super) async fn peers(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Vec<PeerView>>, ApiError> {
    app.authorize(&headers, &[])?;
    let stores: Vec<Store> = app.stores().cloned().collect();
    // A regulator's laptop has a peer per enterprise: each is named in its own registry.
    let (events, nodes) = blocking(move || {
        let (mut events, mut nodes) = (0, Vec::new());
        for store in &stores {
            events += store.counts()?.1;
            nodes.extend(store.records("node")?);
        }
        Ok((events, nodes))
    })
    .await?;
    Ok(Json(peer_views(&app, &nodes, events)))
}

pub(super) async fn login(
    State(app): State<AppState>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<LoginResponse>, ApiError> {
    let Json(req) = body.map_err(json_error)?;
    let wrong = || ApiError::unauthorized("wrong account or password");
    if req.account.is_empty() || req.account.len() > 64 || req.password.len() > 256 {
        return Err(wrong());
    }
    let store = app.store.clone();
    let doc = DocId::record("staff", &req.account);
    let record = blocking(move || store.record(&doc)).await?.ok_or_else(wrong)?;
    let staff: Staff = serde_json::from_value(record).map_err(|e| {
        tracing::error!(error = %e, "staff record does not parse");
        ApiError::internal()
    })?;
    let password = req.password.clone();
    let hash = staff.password_hash.clone();
    // Argon2 takes tens of milliseconds: keep it off the async threads.
    let ok = tokio::task::spawn_blocking(move || auth::check_password(&password, &hash)).await.unwrap_or(false);
    if !ok || !staff.active {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "账号或密码错误，或账号已停用",
            "wrong account or password, or account disabled",
        ));
    }
    let expires_ms = app.clock.now_ms() + i64::from(app.settings.token_ttl_hours) * 3_600_000;
    let claims = auth::Claims { account: staff.account.clone(), roles: staff.roles.clone(), expires_ms };
    Ok(Json(LoginResponse {
        token: auth::issue(app.store.token_key(), &claims),
        role: staff.roles.first().map(|r| r.code().to_owned()).unwrap_or_default(),
        roles: staff.roles.iter().map(|r| r.code().to_owned()).collect(),
        name: staff.name,
        enterprise: staff.enterprise,
        station: app.settings.station_name.clone(),
        expires_at: rfc3339(expires_ms),
    }))
}

/// Resolves a scanned code (10 or 16 digits, QR URL) or a tag id to a registered cylinder.
async fn resolve(app: &AppState, scan: &str) -> Result<FullCode, ApiError> {
    if let Ok(code) = FullCode::from_scan(scan, app.settings.region) {
        return Ok(code);
    }
    let stores: Vec<Store> = app.stores().cloned().collect();
    let tag = scan.trim().to_owned();
    if tag.is_empty() || tag.len() > 128 {
        return Err(bad_code(scan));
    }
    blocking(move || {
        for store in &stores {
            if let Some(code) = store.cylinder_by_tag(&tag)? {
                return Ok(Some(code));
            }
        }
        Ok(None)
    })
    .await?
    .ok_or_else(|| bad_code(scan))
}

fn bad_code(scan: &str) -> ApiError {
    let shown: String = scan.chars().take(40).collect();
    ApiError::bad_request(
        "invalid_code",
        format!("无法识别的气瓶编码或标签：{shown}（应为10位或16位数字、二维码网址或已绑定的标签）"),
        format!("unrecognised cylinder code or tag {shown:?} (expected 10 or 16 digits, the QR URL, or a bound tag)"),
    )
}

/// One point read per store. It runs on the async thread: a redb read transaction never
/// waits for the writer and the read takes microseconds, while a hop through
/// `spawn_blocking` cost the fill check about 0.5 ms at p99 under 16 handhelds
/// (station_bench). Returns the store that holds the cylinder (a regulator's laptop holds
/// several enterprises) with its row.
fn row_of(app: &AppState, code: FullCode) -> Result<(Store, CylinderRow), ApiError> {
    for store in app.stores() {
        if let Some(row) = store.cylinder(&code)? {
            return Ok((store.clone(), row));
        }
    }
    Err(ApiError::from(StoreError::UnknownCylinder(code)))
}

pub(super) async fn detail(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(scan): Path<String>,
) -> Result<Json<CylinderDetail>, ApiError> {
    app.authorize(&headers, &[])?;
    let code = resolve(&app, &scan).await?;
    let (store, row) = row_of(&app, code)?;
    let recent = blocking(move || store.events_of(&code, 20)).await?;
    Ok(Json(CylinderDetail {
        archive: archive_view(&row.archive),
        state: state_view(&row.archive, &row.state, &app.settings.rules),
        recent_events: recent.iter().rev().map(event_view).collect(),
    }))
}

pub(super) async fn events(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(scan): Path<String>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    app.authorize(&headers, &[])?;
    let code = resolve(&app, &scan).await?;
    let (store, _) = row_of(&app, code)?;
    let all = blocking(move || store.events_of(&code, usize::MAX)).await?;
    Ok(Json(all.iter().map(event_view).collect()))
}

/// A list's page (1-based, default 1) and page size (1..=500, default 50).
fn paging(page: Option<u32>, page_size: Option<u32>) -> Result<(u32, u32), ApiError> {
    let page_size = page_size.unwrap_or(50);
    if !(1..=500).contains(&page_size) {
        return Err(ApiError::bad_request("invalid_query", "每页条数须为 1–500", "page_size must be 1..=500"));
    }
    Ok((page.unwrap_or(1).max(1), page_size))
}

pub(super) async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<CylinderSummary>>, ApiError> {
    app.authorize(&headers, &[])?;
    let Query(q) = query.map_err(query_error)?;
    let (page, page_size) = paging(q.page, q.page_size)?;
    let code_prefix = match q.code.as_deref().map(str::trim) {
        Some(c) if c.len() == 10 && c.bytes().all(|b| b.is_ascii_digit()) => {
            Some(format!("{}{c}", app.settings.region))
        }
        Some(c) if c.bytes().all(|b| b.is_ascii_digit()) && c.len() <= 16 => Some(c.to_owned()),
        Some(c) => return Err(bad_code(c)),
        None => None,
    };
    if let Some(m) = &q.medium {
        m.parse::<Medium>().map_err(|_| {
            ApiError::bad_request("invalid_query", format!("未知介质：{m}"), format!("unknown medium {m:?}"))
        })?;
    }
    let filter = CylinderFilter {
        code_prefix,
        tag: q.tag,
        serial: q.serial,
        status: q.status,
        place: q.place,
        medium: q.medium.map(|m| m.parse::<Medium>().map(|m| m.code().to_owned()).unwrap_or(m)),
    };
    let store = app.store_of(q.enterprise.as_deref())?;
    let (total, rows) = blocking(move || store.list(&filter, page, page_size)).await?;
    Ok(Json(Page { total, page, page_size, items: rows.iter().map(|r| summary(r, &app.settings.rules)).collect() }))
}

/// Anomalies found in this node's data, newest first, each with its proving events.
pub(super) async fn anomalies(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AnomalyQuery>, QueryRejection>,
) -> Result<Json<Page<AnomalyView>>, ApiError> {
    app.authorize(&headers, &[])?;
    let Query(q) = query.map_err(query_error)?;
    let (page, page_size) = paging(q.page, q.page_size)?;
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some(k) => Some(AnomalyKind::from_code(k).ok_or_else(|| {
            let known: Vec<&str> = AnomalyKind::ALL.iter().map(|k| k.code()).collect();
            ApiError::bad_request(
                "invalid_query",
                format!("未知异常类型：{k}"),
                format!("unknown anomaly kind {k:?}; known: {}", known.join(", ")),
            )
        })?),
    };
    let cylinder = match q.cylinder.as_deref() {
        None | Some("") => None,
        Some(c) => Some(FullCode::from_scan(c, app.settings.region).map_err(|_| bad_code(c))?),
    };
    let store = app.store_of(q.enterprise.as_deref())?;
    let filter = AnomalyFilter { kind, cylinder };
    let (total, found) = blocking(move || {
        let all = store.anomalies(&filter)?;
        let total = all.len() as u64;
        let start = (page as usize - 1).saturating_mul(page_size as usize);
        let mut out = Vec::new();
        for a in all.into_iter().skip(start).take(page_size as usize) {
            let events = store.events_by_id(&a.events)?;
            out.push((a, events));
        }
        Ok((total, out))
    })
    .await?;
    let items = found.iter().map(|(a, events)| anomaly_view(a, events)).collect();
    Ok(Json(Page { total, page, page_size, items }))
}

/// Traceability search across cylinders: by operator, kind or place within a time range.
#[derive(Debug, Deserialize)]
pub(super) struct TraceQuery {
    operator: Option<String>,
    kind: Option<String>,
    place: Option<String>,
    /// RFC 3339; default: 30 days ago.
    from: Option<String>,
    /// RFC 3339; default: now.
    to: Option<String>,
    limit: Option<usize>,
    /// A regulator's laptop: the enterprise to search (default: its own).
    enterprise: Option<String>,
}

pub(super) async fn trace(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TraceQuery>, QueryRejection>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    app.authorize(&headers, &[])?;
    let Query(q) = query.map_err(query_error)?;
    let time = |s: &Option<String>, default: i64| -> Result<i64, ApiError> {
        match s {
            None => Ok(default),
            Some(s) => chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("时间格式应为 RFC 3339：{s}"),
                    format!("time must be RFC 3339: {s:?}"),
                )
            }),
        }
    };
    let now = app.clock.now_ms();
    let (from, to) = (time(&q.from, now - 30 * 86_400_000)?, time(&q.to, now + 1)?);
    let (dimension, value) = match (&q.operator, &q.kind, &q.place) {
        (Some(o), None, None) => ("operator", o.clone()),
        (None, Some(k), None) => ("kind", k.clone()),
        (None, None, Some(p)) => ("place", p.clone()),
        (None, None, None) => ("time", String::new()),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "operator、kind、place 只能选一个",
                "give at most one of operator, kind, place",
            ));
        }
    };
    let limit = q.limit.unwrap_or(200).min(5000);
    let store = app.store_of(q.enterprise.as_deref())?;
    let found = blocking(move || store.trace(dimension, &value, from, to, limit)).await?;
    Ok(Json(found.iter().map(event_view).collect()))
}

pub(super) async fn fill_check(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(scan): Path<String>,
    body: Result<Json<FillCheckRequest>, JsonRejection>,
) -> Result<Json<FillCheckResponse>, ApiError> {
    app.authorize(&headers, &[])?;
    let Json(req) = body.map_err(json_error)?;
    let medium = req.medium.as_deref().map(parse_medium).transpose()?;
    let mass = req.filled_mass_kg.map(check_mass).transpose()?;
    let code = resolve(&app, &scan).await?;
    let (_, row) = row_of(&app, code)?;
    let now = app.now_ms()?;
    let refusals = check_fill(
        &app.settings.rules,
        &FillCheck {
            archive: &row.archive,
            state: &row.state,
            today: app.today(now),
            station_enterprise: app.settings.enterprise.as_str(),
            medium,
            filled_mass_kg: mass,
        },
    );
    app.metrics.fill_checks.fetch_add(1, Ordering::Relaxed);
    for r in &refusals {
        app.metrics.refusal(r.rule);
    }
    Ok(Json(FillCheckResponse {
        code: code.to_string(),
        allowed: refusals.is_empty(),
        reasons: refusals.iter().map(reason).collect(),
        rule_table: app.settings.rules.version.clone(),
        checked_at: rfc3339(now),
    }))
}

fn parse_medium(m: &str) -> Result<Medium, ApiError> {
    m.parse().map_err(|_| {
        let known: Vec<&str> = Medium::ALL.iter().map(|m| m.code()).collect();
        ApiError::bad_request(
            "invalid_medium",
            format!("未知介质：{m}"),
            format!("unknown medium {m:?}; known: {}", known.join(", ")),
        )
    })
}

fn check_mass(kg: f64) -> Result<f64, ApiError> {
    if kg.is_finite() && kg > 0.0 && kg <= 2000.0 {
        Ok(kg)
    } else {
        Err(ApiError::bad_request(
            "invalid_mass",
            "充装量须为大于 0 且不超过 2000 的千克数",
            "filled mass must be a number of kg in (0, 2000]",
        ))
    }
}

fn parse_day(field: &str, v: &str) -> Result<Day, ApiError> {
    v.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_date",
            format!("{field} 日期格式应为 YYYY-MM-DD：{v}"),
            format!("{field} must be YYYY-MM-DD, got {v:?}"),
        )
    })
}

fn required(field: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "missing_field",
            format!("{field} 不能为空且不超过 200 字"),
            format!("{field} must be 1..=200 characters"),
        ));
    }
    Ok(v.to_owned())
}

/// A passed check lists no failed items; a failed check lists at least one.
fn check_items(passed: bool, failed_items: &[String]) -> Result<(), ApiError> {
    if passed == failed_items.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "invalid_check",
        "检查合格时不应有不合格项，不合格时须列出不合格项",
        "a passed check lists no failed items; a failed check lists at least one",
    ))
}

/// Domain body of an operation, validated; `place` is where it happened.
fn event_body(app: &AppState, op: &Operation, operator: &str) -> Result<(EventBody, String), ApiError> {
    let station = app.settings.station_name.clone();
    Ok(match op {
        Operation::BindTag { tag } => (EventBody::BindTag { tag: required("tag", tag)? }, station),
        Operation::ReceiveEmpty { warehouse } => {
            let w = required("warehouse", warehouse)?;
            (EventBody::ReceiveEmpty { warehouse: w.clone() }, w)
        }
        Operation::PreFillCheck { passed, failed_items } => {
            check_items(*passed, failed_items)?;
            (EventBody::PreFillCheck { passed: *passed, failed_items: failed_items.clone() }, station)
        }
        Operation::Fill { medium, filled_mass_kg, batch } => {
            let m = parse_medium(medium)?;
            let kg = check_mass(*filled_mass_kg)?;
            (EventBody::Fill { medium: m, filled_mass_g: (kg * 1000.0).round() as u64, batch: batch.clone() }, station)
        }
        Operation::PostFillCheck { passed, failed_items } => {
            check_items(*passed, failed_items)?;
            (EventBody::PostFillCheck { passed: *passed, failed_items: failed_items.clone() }, station)
        }
        Operation::StoreFull { warehouse } => {
            let w = required("warehouse", warehouse)?;
            (EventBody::StoreFull { warehouse: w.clone() }, w)
        }
        Operation::Dispatch { order } => {
            (EventBody::Dispatch { order: order.clone(), driver: operator.to_owned() }, station)
        }
        Operation::Deliver { customer, order, .. } => {
            let c = required("customer", customer)?;
            (EventBody::Deliver { customer: c.clone(), order: order.clone() }, c)
        }
        Operation::Return { customer, slip } => {
            let c = required("customer", customer)?;
            (EventBody::Return { customer: c.clone(), slip: slip.clone() }, c)
        }
        Operation::Repair { description } => {
            (EventBody::Repair { description: required("description", description)? }, station)
        }
        Operation::SendToInspection { reason } => {
            (EventBody::SendToInspection { reason: required("reason", reason)? }, station)
        }
        Operation::InspectionResult { passed, report_no, inspected_on, next_due } => {
            let on = parse_day("inspected_on", inspected_on)?;
            let next = next_due.as_deref().map(|d| parse_day("next_due", d)).transpose()?;
            if next.is_some_and(|n| n <= on) {
                return Err(ApiError::bad_request(
                    "invalid_date",
                    "下次检验日期须晚于本次检验日期",
                    "next_due must be after inspected_on",
                ));
            }
            if on > app.today(app.now_ms()?) {
                return Err(ApiError::bad_request(
                    "invalid_date",
                    "检验日期不能晚于今天",
                    "inspected_on is in the future",
                ));
            }
            (
                EventBody::InspectionResult {
                    passed: *passed,
                    report_no: required("report_no", report_no)?,
                    inspected_on: on,
                    next_due: next,
                },
                station,
            )
        }
        Operation::Scrap { reason } => (EventBody::Scrap { reason: required("reason", reason)? }, station),
        Operation::RegulatorFinding { action, finding, note } => {
            let action = match action.as_str() {
                "hold" => FindingAction::Hold,
                "release" => FindingAction::Release,
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_action",
                        format!("监管标记动作应为 hold 或 release：{other}"),
                        format!("action must be hold or release, got {other:?}"),
                    ));
                }
            };
            (
                EventBody::RegulatorFinding { action, finding: required("finding", finding)?, note: note.clone() },
                station,
            )
        }
        Operation::Correction { target, reason, note } => {
            let target = parse_hex::<32>(target).map(EventId).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_target",
                    "被更正的事件编号应为64位十六进制",
                    "target must be a 64-hex-digit event id",
                )
            })?;
            let reason = match reason.as_str() {
                "did_not_occur" => CorrectionReason::DidNotOccur,
                "incorrect_data" => CorrectionReason::IncorrectData,
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_reason",
                        format!("更正原因应为 did_not_occur 或 incorrect_data：{other}"),
                        format!("reason must be did_not_occur or incorrect_data, got {other:?}"),
                    ));
                }
            };
            (EventBody::Correction { target, reason, note: note.clone() }, station)
        }
    })
}

/// What the writer decided for an operation. Responses are built after the commit, off
/// the writer thread.
enum Outcome {
    Done(Box<(SignedEvent, CylinderRow)>),
    Replayed(Box<StoredResult>),
    Refused(Vec<Refusal>),
    UnknownTarget,
}

pub(super) async fn operation(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<OperationRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(json_error)?;
    let kind = req.op.kind();
    let claims = app.authorize(&headers, auth::allowed_roles(kind))?;
    if app.settings.role == crate::config::Role::Regulator && kind != "regulator_finding" {
        return Err(regulator_node_only());
    }
    let op_id = req.op_id.trim().to_owned();
    if op_id.is_empty() || op_id.len() > 64 || !op_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_op_id",
            "op_id 须为 1–64 个可见 ASCII 字符",
            "op_id must be 1..=64 visible ASCII characters",
        ));
    }
    let code = resolve(&app, &req.code).await?;
    let (body, place) = event_body(&app, &req.op, &claims.account)?;
    let request_hash: [u8; 32] = Sha256::digest(serde_json::to_vec(&req).unwrap_or_default()).into();

    // The store holding the cylinder takes the event (a regulator's laptop holds every
    // enterprise of its region; a finding goes to the cylinder's enterprise). An unknown
    // cylinder is refused inside the write job, with the same error as ever.
    let store = row_of(&app, code).map_or_else(|_| app.store.clone(), |(store, _)| store);
    // A retry usually finds its answer without queueing behind the writer (a point read,
    // inline like `row_of`).
    if let Some(stored) = store.operation_result(&op_id)? {
        return replay(&app, stored, request_hash);
    }

    let customer = match &req.op {
        Operation::Deliver { customer, customer_name: Some(name), customer_phone, customer_address, .. } => {
            Some(Customer {
                code: customer.trim().to_owned(),
                name: name.trim().to_owned(),
                address: customer_address.clone().unwrap_or_default(),
                region: app.settings.region.to_string(),
                contact: name.trim().to_owned(),
                phone: customer_phone.clone().unwrap_or_default(),
                household: true,
                active: true,
            })
        }
        _ => None,
    };
    let job_app = app.clone();
    let operator = claims.account.clone();
    let outcome = store
        .write(move |ctx| {
            let app = job_app;
            if let Some(stored) = ctx.operation_result(&op_id)? {
                return Ok(Outcome::Replayed(Box::new(stored)));
            }
            let Some(row) = ctx.row(&code)? else {
                return Err(StoreError::UnknownCylinder(code));
            };
            let mut body = body;
            if let EventBody::Fill { medium, filled_mass_g, .. } = &body {
                let refusals = check_fill(
                    &app.settings.rules,
                    &FillCheck {
                        archive: &row.archive,
                        state: &row.state,
                        today: app.today(ctx.now_ms()),
                        station_enterprise: app.settings.enterprise.as_str(),
                        medium: Some(*medium),
                        filled_mass_kg: Some(*filled_mass_g as f64 / 1000.0),
                    },
                );
                if !refusals.is_empty() {
                    return Ok(Outcome::Refused(refusals));
                }
            }
            if let EventBody::Correction { target, .. } = &body
                && !ctx.event_exists(target)?
            {
                return Ok(Outcome::UnknownTarget);
            }
            if let EventBody::InspectionResult { passed: true, inspected_on, next_due: next_due @ None, .. } = &mut body
            {
                let years = app.settings.rules.interval_years(row.archive.variety, row.archive.medium);
                *next_due = Some(inspected_on.plus_years(years as i32));
            }
            // All checks are done: from here on the job writes.
            let wall = ctx.wall_ms;
            let (event, row) = ctx.record(code, &operator, &place, body, wall)?;
            if let Some(c) = &customer {
                ctx.put_record(&DocId::record("customer", &c.code), c)?;
            }
            ctx.put_operation_result(&op_id, request_hash, &event.id, &row.state)?;
            Ok(Outcome::Done(Box::new((event, row))))
        })
        .await?;
    match outcome {
        Outcome::Done(done) => {
            app.metrics.operation(kind);
            let (event, row) = *done;
            Ok(Json(OperationResponse {
                event: event_view(&event),
                state: state_view(&row.archive, &row.state, &app.settings.rules),
                replayed: false,
            })
            .into_response())
        }
        Outcome::Replayed(stored) => replay(&app, *stored, request_hash),
        Outcome::UnknownTarget => {
            Err(ApiError::not_found("unknown_event", "被更正的事件不存在", "the event to correct does not exist"))
        }
        Outcome::Refused(refusals) => {
            for r in &refusals {
                app.metrics.refusal(r.rule);
            }
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "fill_refused",
                format!("禁止充装：{} 条安全规则不允许", refusals.len()),
                format!("fill refused by {} safety rule(s)", refusals.len()),
            );
            e.reasons = refusals.iter().map(reason).collect();
            Err(e)
        }
    }
}

/// A regulator's laptop records findings only; its other data comes from the stations.
fn regulator_node_only() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "regulator_node",
        "监管终端只能记录监管查封/解封",
        "a regulator's node records regulator findings only",
    )
}

fn op_id_reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "op_id_reused",
        "op_id 已用于另一项不同的操作",
        "op_id was already used for a different operation",
    )
}

fn replay(app: &AppState, stored: StoredResult, request_hash: [u8; 32]) -> Result<Response, ApiError> {
    if stored.request_hash != request_hash {
        return Err(op_id_reused());
    }
    // Event and state are those of the first answer; the archive is today's.
    let (_, row) = row_of(app, stored.event.event.cylinder)?;
    app.metrics.replays.fetch_add(1, Ordering::Relaxed);
    Ok(Json(OperationResponse {
        event: event_view(&stored.event),
        state: state_view(&row.archive, &stored.state, &app.settings.rules),
        replayed: true,
    })
    .into_response())
}

pub(super) async fn register(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Archive>, JsonRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let claims = app.authorize(&headers, auth::allowed_roles("register"))?;
    if app.settings.role == crate::config::Role::Regulator {
        return Err(regulator_node_only());
    }
    let Json(a) = body.map_err(json_error)?;
    let mut a = a;
    if a.code.trim().len() == 10 {
        a.code = format!("{}{}", app.settings.region, a.code.trim());
    }
    let archive = archive_from(&a).map_err(|e| {
        ApiError::bad_request("invalid_archive", format!("档案数据有误：{e}"), format!("invalid archive: {e}"))
    })?;
    let station = app.settings.station_name.clone();
    let (event, row) = app.store.write(move |ctx| ctx.register(archive, &claims.account, &station)).await?;
    app.metrics.operation("register");
    Ok((StatusCode::CREATED, Json(RegisterResponse { archive: archive_view(&row.archive), event: event_view(&event) })))
}
