//! API tests through the router without sockets: every operation, every role refusal,
//! bad input, the safety rules, idempotency.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use schema::archive::{CylinderArchive, Day, DocId};
use schema::records::Staff;
use schema::vocab::{Medium, Role, Variety};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::clock::ManualClock;
use crate::config::RawConfig;

/// 2026-11-25T04:00:00Z = 12:00 in Shanghai.
const NOW_MS: i64 = 1_795_579_200_000;

struct T {
    app: AppState,
    clock: Arc<ManualClock>,
}

fn archive(code10: &str, f: impl FnOnce(&mut CylinderArchive)) -> CylinderArchive {
    let mut a = CylinderArchive::example(&format!("370102{code10}"));
    a.tags = vec![format!("T{code10}")];
    f(&mut a);
    a
}

impl T {
    async fn new() -> T {
        let clock = Arc::new(ManualClock::at(NOW_MS));
        let store = crate::store::Store::in_memory(clock.clone()).unwrap();
        let raw = RawConfig { mdns: "off".into(), ..RawConfig::default() };
        let settings = raw.validate().unwrap();
        store
            .write(|ctx| {
                for (account, role) in [
                    ("manager", Role::Manager),
                    ("filler", Role::Filler),
                    ("keeper", Role::Keeper),
                    ("driver", Role::Driver),
                    ("repairer", Role::Repairer),
                    ("inspector", Role::Inspector),
                    ("regulator", Role::Regulator),
                ] {
                    ctx.put_record(
                        &DocId::record("staff", account),
                        &Staff {
                            account: account.into(),
                            name: account.into(),
                            id_number: String::new(),
                            roles: vec![role],
                            enterprise: "3701020001".into(),
                            active: true,
                            password_hash: crate::auth::hash_password("pw", &[1; 16]).unwrap(),
                        },
                    )?;
                }
                ctx.register(archive("0101000001", |_| {}), "seed", "test")?;
                ctx.register(archive("0101000002", |a| a.next_inspection = Day::ymd(2026, 11, 25)), "seed", "test")?;
                ctx.register(archive("0101000004", |a| a.owner = "3701260001".into()), "seed", "test")?;
                ctx.register(
                    archive("0201000001", |a| {
                        a.medium = Medium::Oxygen;
                        a.variety = Variety::SeamlessSteel;
                        a.standard = "GB/T 5099".into();
                    }),
                    "seed",
                    "test",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let app = Arc::new(App {
            settings,
            store,
            others: Vec::new(),
            clock: clock.clone(),
            metrics: Default::default(),
            peers: Default::default(),
        });
        T { app, clock }
    }

    fn token(&self, account: &str, role: Role) -> String {
        crate::auth::issue(
            self.app.store.token_key(),
            &crate::auth::Claims { account: account.into(), roles: vec![role], expires_ms: NOW_MS + 3_600_000 },
        )
    }

    async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = router(self.app.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn op(&self, role: Role, body: Value) -> (StatusCode, Value) {
        let t = self.token(role.code(), role);
        self.call("POST", "/api/v1/operations", Some(&t), Some(body)).await
    }
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["code"], code, "body: {v}");
    assert!(!v["message_zh"].as_str().unwrap_or_default().is_empty(), "body: {v}");
    assert!(!v["message_en"].as_str().unwrap_or_default().is_empty(), "body: {v}");
}

#[tokio::test]
async fn login_with_the_right_password_only() {
    let t = T::new().await;
    let (s, v) = t.call("POST", "/api/v1/session", None, Some(json!({"account": "filler", "password": "pw"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["role"], "filler");
    let token = v["token"].as_str().unwrap().to_owned();
    let (s, _) = t.call("GET", "/api/v1/cylinders/0101000001", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = t.call("POST", "/api/v1/session", None, Some(json!({"account": "filler", "password": "wrong"}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "bad_credentials");
    let (s, v) = t.call("POST", "/api/v1/session", None, Some(json!({"account": "nobody", "password": "pw"}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (s, v) = t.call("GET", "/api/v1/cylinders/0101000001", Some("forged.token"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (s, _) = t.call("GET", "/api/v1/cylinders", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Every operation kind: recorded by an allowed role, refused for a role that may not.
#[tokio::test]
async fn each_operation_is_recorded_by_its_roles_and_refused_for_others() {
    let t = T::new().await;
    let cases: Vec<(Value, Role, Role, &str)> = vec![
        (json!({"kind": "bind_tag", "tag": "RFID-1"}), Role::Keeper, Role::Driver, "unknown"),
        (json!({"kind": "receive_empty", "warehouse": "空瓶左库"}), Role::Keeper, Role::Repairer, "empty_store"),
        (json!({"kind": "pre_fill_check", "passed": true}), Role::Filler, Role::Driver, "empty_store"),
        (json!({"kind": "fill", "medium": "lpg", "filled_mass_kg": 14.5}), Role::Filler, Role::Keeper, "empty_store"),
        (json!({"kind": "post_fill_check", "passed": true}), Role::Filler, Role::Driver, "empty_store"),
        (json!({"kind": "store_full", "warehouse": "重瓶左库"}), Role::Keeper, Role::Repairer, "full_store"),
        (json!({"kind": "dispatch", "order": "DD202611250001"}), Role::Driver, Role::Filler, "in_transit"),
        (
            json!({"kind": "deliver", "customer": "C-NEW", "customer_name": "王家", "customer_phone": "13900000000"}),
            Role::Driver,
            Role::Keeper,
            "at_customer",
        ),
        (
            json!({"kind": "return", "customer": "C-NEW", "slip": "HS202611250001"}),
            Role::Driver,
            Role::Filler,
            "in_transit",
        ),
        (json!({"kind": "repair", "description": "更换瓶阀"}), Role::Repairer, Role::Driver, "in_repair"),
        (json!({"kind": "send_to_inspection", "reason": "到期送检"}), Role::Repairer, Role::Driver, "at_inspection"),
        (
            json!({"kind": "inspection_result", "passed": true, "report_no": "JY-1", "inspected_on": "2026-11-20"}),
            Role::Inspector,
            Role::Filler,
            "at_inspection",
        ),
        (
            json!({"kind": "regulator_finding", "action": "hold", "finding": "JC-1", "note": "钢印模糊"}),
            Role::Regulator,
            Role::Manager,
            "at_inspection",
        ),
        (
            json!({"kind": "regulator_finding", "action": "release", "finding": "JC-1"}),
            Role::Regulator,
            Role::Inspector,
            "at_inspection",
        ),
        (json!({"kind": "scrap", "reason": "腐蚀"}), Role::Inspector, Role::Filler, "scrapped"),
    ];
    for (i, (op, allowed, forbidden, status)) in cases.into_iter().enumerate() {
        let mut body = op.clone();
        body["code"] = json!("0101000001");
        body["op_id"] = json!(format!("forbidden-{i}"));
        let (s, v) = t.op(forbidden, body.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{op} as {forbidden:?}: {v}");
        assert_error(&v, "role_forbidden");
        body["op_id"] = json!(format!("op-{i}"));
        let (s, v) = t.op(allowed, body).await;
        assert_eq!(s, StatusCode::OK, "{op} as {allowed:?}: {v}");
        assert_eq!(v["event"]["kind"], op["kind"], "{v}");
        assert_eq!(v["state"]["status"], status, "{op}: {v}");
        assert_eq!(v["replayed"], false);
    }
    // The inspection result moved the due date by the LPG interval (4 y).
    let token = t.token("m", Role::Manager);
    let (_, v) = t.call("GET", "/api/v1/cylinders/0101000001", Some(&token), None).await;
    assert_eq!(v["state"]["next_inspection"], "2030-11-20");
    assert_eq!(v["state"]["fill_count"], 1);
    assert_eq!(v["state"]["scrapped"], true);
    assert!(v["state"]["tags"].as_array().unwrap().contains(&json!("RFID-1")));
    // The new customer's details were kept as a record.
    assert_eq!(t.app.store.record(&DocId::record("customer", "C-NEW")).unwrap().unwrap()["name"], "王家");
    // A correction by the manager names an existing event.
    let (_, events) = t.call("GET", "/api/v1/cylinders/0101000001/events", Some(&token), None).await;
    let target = events.as_array().unwrap().iter().find(|e| e["kind"] == "dispatch").unwrap()["id"].clone();
    let (s, v) = t.op(Role::Manager, json!({"op_id": "fix-1", "code": "0101000001", "kind": "correction", "target": target, "reason": "did_not_occur"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = t.op(Role::Filler, json!({"op_id": "fix-2", "code": "0101000001", "kind": "correction", "target": target, "reason": "did_not_occur"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = t.op(Role::Manager, json!({"op_id": "fix-3", "code": "0101000001", "kind": "correction", "target": "00".repeat(32), "reason": "did_not_occur"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "unknown_event");
}

#[tokio::test]
async fn a_fill_the_rules_forbid_is_refused_with_every_reason_and_records_nothing() {
    let t = T::new().await;
    let fill = |code: &str, medium: &str, kg: f64, op: &str| json!({"op_id": op, "code": code, "kind": "fill", "medium": medium, "filled_mass_kg": kg});
    let cases = [
        ("0101000002", "lpg", 14.0, vec!["inspection_overdue"]),
        ("0101000004", "lpg", 14.0, vec!["not_own_cylinder"]),
        ("0101000001", "oxygen", 14.0, vec!["medium_mismatch"]),
        ("0101000001", "lpg", 15.0, vec!["overfill"]),
        ("0101000004", "propane", 20.0, vec!["not_own_cylinder", "medium_mismatch", "overfill"]),
    ];
    for (i, (code, medium, kg, rules)) in cases.iter().enumerate() {
        let (s, v) = t.op(Role::Filler, fill(code, medium, *kg, &format!("r{i}"))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{code} {medium} {kg}: {v}");
        assert_error(&v, "fill_refused");
        let got: Vec<&str> = v["reasons"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
        assert_eq!(&got, rules, "{v}");
        assert!(v["reasons"].as_array().unwrap().iter().all(|r| !r["regulation"].as_str().unwrap().is_empty()));
        // The fill check says the same.
        let token = t.token("f", Role::Filler);
        let (_, c) = t
            .call(
                "POST",
                &format!("/api/v1/cylinders/{code}/fill-check"),
                Some(&token),
                Some(json!({"medium": medium, "filled_mass_kg": kg})),
            )
            .await;
        assert_eq!(c["allowed"], false);
        assert_eq!(c["reasons"], v["reasons"]);
    }
    // Nothing was recorded: still no fill on any of them.
    let token = t.token("f", Role::Filler);
    for code in ["0101000001", "0101000002", "0101000004"] {
        let (_, v) = t.call("GET", &format!("/api/v1/cylinders/{code}"), Some(&token), None).await;
        assert_eq!(v["state"]["fill_count"], 0, "{code}");
    }
    // Scrapped: the inspector scraps, the next fill is refused for that.
    let (s, _) =
        t.op(Role::Inspector, json!({"op_id": "s", "code": "0101000001", "kind": "scrap", "reason": "裂纹"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = t.op(Role::Filler, fill("0101000001", "lpg", 14.0, "after-scrap")).await;
    assert_eq!(v["reasons"][0]["rule"], "scrapped");
    // A compressed-gas cylinder fills without a mass rule.
    let (s, v) = t.op(Role::Filler, fill("0201000001", "oxygen", 8.0, "o2")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_retried_op_id_records_one_event() {
    let t = T::new().await;
    let body =
        json!({"op_id": "retry-1", "code": "0101000001", "kind": "fill", "medium": "lpg", "filled_mass_kg": 14.2});
    let (s1, v1) = t.op(Role::Filler, body.clone()).await;
    let (s2, v2) = t.op(Role::Filler, body.clone()).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(v1["event"]["id"], v2["event"]["id"]);
    assert_eq!(v2["replayed"], true);
    let token = t.token("f", Role::Filler);
    let (_, events) = t.call("GET", "/api/v1/cylinders/0101000001/events", Some(&token), None).await;
    assert_eq!(events.as_array().unwrap().iter().filter(|e| e["kind"] == "fill").count(), 1);
    // Concurrent retries of one new op_id also record one event.
    let body = json!({"op_id": "retry-2", "code": "0101000001", "kind": "store_full", "warehouse": "重瓶左库"});
    let (a, b) = tokio::join!(t.op(Role::Filler, body.clone()), t.op(Role::Filler, body.clone()));
    assert_eq!(a.1["event"]["id"], b.1["event"]["id"]);
    let (_, events) = t.call("GET", "/api/v1/cylinders/0101000001/events", Some(&token), None).await;
    assert_eq!(events.as_array().unwrap().iter().filter(|e| e["kind"] == "store_full").count(), 1);
    // The same op_id for a different operation is refused.
    let (s, v) = t
        .op(
            Role::Filler,
            json!({"op_id": "retry-1", "code": "0101000001", "kind": "fill", "medium": "lpg", "filled_mass_kg": 9.0}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "op_id_reused");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let t = T::new().await;
    let token = t.token("f", Role::Filler);
    let cases: Vec<(&str, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            "POST",
            "/api/v1/operations",
            Some(json!({"op_id": "x", "code": "0101000001", "kind": "teleport"})),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/operations",
            Some(json!({"op_id": "x", "code": "0101000001", "kind": "fill", "medium": "lpg"})),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/operations",
            Some(json!({"op_id": "x", "code": "0101000001", "kind": "fill", "medium": "water", "filled_mass_kg": 1.0})),
            StatusCode::BAD_REQUEST,
            "invalid_medium",
        ),
        (
            "POST",
            "/api/v1/operations",
            Some(json!({"op_id": "x", "code": "0101000001", "kind": "fill", "medium": "lpg", "filled_mass_kg": -1.0})),
            StatusCode::BAD_REQUEST,
            "invalid_mass",
        ),
        (
            "POST",
            "/api/v1/operations",
            Some(json!({"op_id": "x", "code": "12ab", "kind": "fill", "medium": "lpg", "filled_mass_kg": 1.0})),
            StatusCode::BAD_REQUEST,
            "invalid_code",
        ),
        (
            "POST",
            "/api/v1/operations",
            Some(json!({"op_id": "", "code": "0101000001", "kind": "fill", "medium": "lpg", "filled_mass_kg": 1.0})),
            StatusCode::BAD_REQUEST,
            "invalid_op_id",
        ),
        (
            "POST",
            "/api/v1/operations",
            Some(json!({"op_id": "x", "code": "0101999999", "kind": "fill", "medium": "lpg", "filled_mass_kg": 1.0})),
            StatusCode::NOT_FOUND,
            "cylinder_not_found",
        ),
        (
            "POST",
            "/api/v1/operations",
            Some(
                json!({"op_id": "x", "code": "0101000001", "kind": "pre_fill_check", "passed": true, "failed_items": ["阀"]}),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_check",
        ),
        (
            "POST",
            "/api/v1/cylinders/0101000001/fill-check",
            Some(json!({"medium": 5})),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        ("GET", "/api/v1/cylinders/9900000000000001", None, StatusCode::BAD_REQUEST, "invalid_code"),
        ("GET", "/api/v1/cylinders?page_size=100000", None, StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/api/v1/cylinders?page=abc", None, StatusCode::BAD_REQUEST, "invalid_query"),
        ("GET", "/api/v1/nowhere", None, StatusCode::NOT_FOUND, "no_route"),
    ];
    for (method, uri, body, status, code) in cases {
        let (s, v) = t.call(method, uri, Some(&token), body.clone()).await;
        assert_eq!(s, status, "{method} {uri} {body:?}: {v}");
        assert_error(&v, code);
    }
    // Not JSON at all, and a body over the limit.
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/operations")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = router(t.app.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let big = json!({"op_id": "x", "code": "0101000001", "kind": "repair", "description": "x".repeat(300_000)});
    let (s, v) = t.call("POST", "/api/v1/operations", Some(&t.token("r", Role::Repairer)), Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_error(&v, "body_too_large");
    let (_, v) = t.call("GET", "/api/v1/cylinders/0101000001", Some(&token), None).await;
    assert_eq!(v["state"]["n_events"], 2, "only register and bind_tag: {v}");
}

#[tokio::test]
async fn lists_filter_and_page() {
    let t = T::new().await;
    let token = t.token("k", Role::Keeper);
    let (_, v) = t.call("GET", "/api/v1/cylinders?page_size=2", Some(&token), None).await;
    assert_eq!(v["total"], 4);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let (_, v) = t.call("GET", "/api/v1/cylinders?medium=oxygen", Some(&token), None).await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["code10"], "0201000001");
    let (_, v) = t.call("GET", "/api/v1/cylinders?medium=%E6%B0%A7%E6%B0%94", Some(&token), None).await; // 氧气
    assert_eq!(v["total"], 1, "{v}");
    let (_, v) = t.call("GET", "/api/v1/cylinders?tag=T0101000002", Some(&token), None).await;
    assert_eq!(v["items"][0]["code"], "3701020101000002");
    let (_, v) = t.call("GET", "/api/v1/cylinders?serial=S0101000004", Some(&token), None).await;
    assert_eq!(v["total"], 1);
    let (_, v) = t.call("GET", "/api/v1/cylinders?code=37010201010", Some(&token), None).await;
    assert_eq!(v["total"], 3);
    t.op(Role::Keeper, json!({"op_id": "a", "code": "0101000001", "kind": "receive_empty", "warehouse": "空瓶左库"}))
        .await;
    let (_, v) = t
        .call(
            "GET",
            "/api/v1/cylinders?status=empty_store&place=%E7%A9%BA%E7%93%B6%E5%B7%A6%E5%BA%93",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(v["total"], 1, "{v}");
    // A tag resolves to its cylinder in the path too.
    let (s, v) = t.call("GET", "/api/v1/cylinders/T0101000002", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["archive"]["code"], "3701020101000002");
    // And the QR URL.
    let (_, v) = t
        .call("GET", "/api/v1/cylinders/http%3A%2F%2Fteshe.org.cn%2FQ%3Fid%3D3701020101000004", Some(&token), None)
        .await;
    assert_eq!(v["archive"]["owner"], "3701260001");
    // Traceability search by operator.
    let (_, v) = t.call("GET", "/api/v1/trace?operator=keeper", Some(&token), None).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn register_validates_and_refuses_duplicates() {
    let t = T::new().await;
    let token = t.token("k", Role::Keeper);
    let a = handheld_proto::Archive {
        code: "0101000099".into(),
        variety: "液化石油气钢瓶".into(),
        medium: "lpg".into(),
        serial: "X1".into(),
        maker: "m".into(),
        manufactured: "2024-01-01".into(),
        standard: "GB 5842-2006".into(),
        nominal_pressure_mpa: 2.1,
        water_volume_l: 35.5,
        tare_kg: Some(15.0),
        rated_max_fill_kg: None,
        design_life_years: None,
        last_inspection: None,
        next_inspection: None,
        owner: "3701020001".into(),
        property: "own".into(),
        customer: None,
        tags: vec!["NEWTAG".into()],
    };
    let (s, v) = t.call("POST", "/api/v1/cylinders", Some(&token), Some(serde_json::to_value(&a).unwrap())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["archive"]["code"], "3701020101000099");
    let (s, v) = t.call("POST", "/api/v1/cylinders", Some(&token), Some(serde_json::to_value(&a).unwrap())).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "already_registered");
    let mut bad = a.clone();
    bad.code = "0101000098".into();
    bad.water_volume_l = 0.0;
    let (s, v) = t.call("POST", "/api/v1/cylinders", Some(&token), Some(serde_json::to_value(&bad).unwrap())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_archive");
    let (s, _) = t
        .call("POST", "/api/v1/cylinders", Some(&t.token("f", Role::Filler)), Some(serde_json::to_value(&a).unwrap()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// A station box whose clock lost its time (set back a year: no battery, no time
/// service while offline) still refuses a fill of a cylinder whose inspection is overdue:
/// the rules take the newest time the node's clock has reached, not the wall clock alone.
#[tokio::test]
async fn a_clock_set_back_does_not_make_an_overdue_cylinder_fillable() {
    let t = T::new().await;
    t.clock.now_ms.store(NOW_MS - 365 * 86_400_000, std::sync::atomic::Ordering::Relaxed);
    let fill = json!({"op_id": "c1", "code": "0101000002", "kind": "fill", "medium": "lpg", "filled_mass_kg": 14.0});
    let (s, v) = t.op(Role::Filler, fill).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["reasons"][0]["rule"], "inspection_overdue", "{v}");
    let token = t.token("f", Role::Filler);
    let check = json!({"medium": "lpg", "filled_mass_kg": 14.0});
    let (_, c) = t.call("POST", "/api/v1/cylinders/0101000002/fill-check", Some(&token), Some(check)).await;
    assert_eq!(c["allowed"], false, "{c}");
    // A cylinder not due still fills.
    let fill = json!({"op_id": "c2", "code": "0101000001", "kind": "fill", "medium": "lpg", "filled_mass_kg": 14.0});
    let (s, v) = t.op(Role::Filler, fill).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn openapi_health_and_metrics_are_served() {
    let t = T::new().await;
    let (s, v) = t.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["openapi"], "3.0.3");
    assert!(v["paths"]["/api/v1/operations"]["post"].is_object());
    let (_, v) = t.call("GET", "/healthz", None, None).await;
    assert_eq!(v["cylinders"], 4);
    t.op(
        Role::Filler,
        json!({"op_id": "m1", "code": "0101000002", "kind": "fill", "medium": "lpg", "filled_mass_kg": 14.0}),
    )
    .await;
    let (s, v) = t.call("GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("node_fill_refusals_total{rule=\"inspection_overdue\"} 1"), "{text}");
    assert!(text.contains("node_cylinders 4"));
    assert!(text.contains("\nnode_events_clock_ahead_total 0\n"), "{text}");
}

/// Any JSON (well-formed or not, of any shape, often close to a real operation): a 4xx
/// with a complete error body or a success, never a 5xx or a panic.
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,12}".prop_map(Value::String),
            prop_oneof![Just("0101000001"), Just("lpg"), Just("fill"), Just("hold"), Just("2026-11-20")]
                .prop_map(|s| json!(s)),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A real operation with some fields replaced or added.
    fn near_operation() -> impl Strategy<Value = Value> {
        let kinds = prop_oneof![
            Just("fill"),
            Just("receive_empty"),
            Just("pre_fill_check"),
            Just("deliver"),
            Just("inspection_result"),
            Just("regulator_finding"),
            Just("correction"),
            Just("teleport"),
        ];
        let fields = prop_oneof![
            Just("op_id"),
            Just("code"),
            Just("medium"),
            Just("filled_mass_kg"),
            Just("warehouse"),
            Just("passed"),
            Just("failed_items"),
            Just("inspected_on"),
            Just("next_due"),
            Just("target"),
            Just("action"),
            Just("customer"),
        ];
        (kinds, proptest::collection::vec((fields, value()), 0..5)).prop_map(|(kind, changes)| {
            let mut op = json!({"op_id": "fz-1", "code": "0101000001", "kind": kind, "medium": "lpg",
                "filled_mass_kg": 14.0, "warehouse": "W1", "passed": true});
            for (field, v) in changes {
                op[field] = v;
            }
            op
        })
    }

    fn assert_clean(status: StatusCode, v: &Value, sent: &Value) {
        assert!(!status.is_server_error(), "{status} for {sent}: {v}");
        if status.is_client_error() {
            assert!(v["code"].is_string() && v["message_zh"].is_string() && v["message_en"].is_string(), "{v}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]
        #[test]
        fn handheld_json_never_breaks_the_node(op in near_operation(), other in value()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let t = T::new().await;
                let manager = t.token("manager", Role::Manager);
                for (uri, body) in [
                    ("/api/v1/operations", &op),
                    ("/api/v1/operations", &other),
                    ("/api/v1/cylinders", &other),
                    ("/api/v1/session", &other),
                    ("/api/v1/cylinders/0101000001/fill-check", &other),
                ] {
                    let (status, v) = t.call("POST", uri, Some(&manager), Some(body.clone())).await;
                    assert_clean(status, &v, body);
                }
            });
        }
    }
}

#[tokio::test]
async fn stock_counts_cylinders_by_place_and_status() {
    let t = T::new().await;
    let keeper = t.token("keeper", Role::Keeper);
    let receive = |code: &str, op_id: &str| json!({"op_id": op_id, "code": code, "kind": "receive_empty", "warehouse": "空瓶左库"});
    for (code, op_id) in [("0101000001", "s-1"), ("0201000001", "s-2")] {
        let (s, v) = t.call("POST", "/api/v1/operations", Some(&keeper), Some(receive(code, op_id))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = t.call("GET", "/api/v1/stock", Some(&keeper), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let lines = v.as_array().unwrap();
    let line = |place: &str, status: &str| {
        lines.iter().find(|l| l["place"] == place && l["status"] == status).map(|l| l["count"].as_u64().unwrap())
    };
    assert_eq!(line("空瓶左库", "empty_store"), Some(2), "{v}");
    assert_eq!(line("", "unknown"), Some(2), "the two never received: {v}");
    let total: u64 = lines.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 4);
    assert!(lines.iter().all(|l| !l["status_zh"].as_str().unwrap().is_empty()), "{v}");
    let (s, _) = t.call("GET", "/api/v1/stock", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_enterprise_is_asked_of_a_node_that_holds_only_its_own() {
    let t = T::new().await;
    let token = t.token("m", Role::Manager);
    let (s, v) = t.call("GET", "/api/v1/cylinders?enterprise=3701020001", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK, "its own enterprise by name: {v}");
    assert_eq!(v["total"], 4);
    for path in ["/api/v1/cylinders", "/api/v1/anomalies", "/api/v1/trace", "/api/v1/stock"] {
        let (s, v) = t.call("GET", &format!("{path}?enterprise=3701120001"), Some(&token), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert_error(&v, "unknown_enterprise");
    }
    let (_, v) = t.call("GET", "/healthz", None, None).await;
    assert_eq!(v["other_enterprises"], serde_json::json!([]));
}
