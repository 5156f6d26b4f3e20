//! Conversion between `schema` domain types and the `handheld-proto` wire types. This is
//! the one place where the handheld JSON meets the domain.

use handheld_proto::{AnomalyView, Archive, CylinderSummary, EventView, Reason, State};
use schema::anomaly::Anomaly;
use schema::archive::{CylinderArchive, Day, LAYOUT_VERSION};
use schema::event::{EventBody, SignedEvent};
use schema::rules::{Refusal, RuleTable};
use schema::state::CylinderState;

use crate::store::CylinderRow;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub fn kind_zh(kind: &str) -> &'static str {
    match kind {
        "register" => "建档",
        "bind_tag" => "标签绑定",
        "receive_empty" => "入空瓶库",
        "pre_fill_check" => "充装前检查",
        "fill" => "充装",
        "post_fill_check" => "充装后检查",
        "store_full" => "入满瓶库",
        "dispatch" => "出库配送",
        "deliver" => "已配送",
        "return" => "回收",
        "repair" => "维修",
        "send_to_inspection" => "送检",
        "inspection_result" => "检验",
        "scrap" => "报废",
        "regulator_finding" => "监管标记",
        "correction" => "更正",
        _ => "其他",
    }
}

pub fn archive_view(a: &CylinderArchive) -> Archive {
    Archive {
        code: a.code.clone(),
        variety: a.variety.code().into(),
        medium: a.medium.code().into(),
        serial: a.serial.clone(),
        maker: a.maker.clone(),
        manufactured: a.manufactured.to_string(),
        standard: a.standard.clone(),
        nominal_pressure_mpa: a.nominal_pressure_mpa,
        water_volume_l: a.water_volume_l,
        tare_kg: a.tare_kg,
        rated_max_fill_kg: a.rated_max_fill_kg,
        design_life_years: a.design_life_years,
        last_inspection: a.last_inspection.map(|d| d.to_string()),
        next_inspection: a.next_inspection.map(|d| d.to_string()),
        owner: a.owner.clone(),
        property: a.property.code().into(),
        customer: a.customer.clone(),
        tags: a.tags.clone(),
    }
}

/// Reads an archive sent by a client; the error names the field.
pub fn archive_from(a: &Archive) -> Result<CylinderArchive, String> {
    let day = |field: &str, v: &str| v.parse::<Day>().map_err(|_| format!("{field}: {v:?} is not YYYY-MM-DD"));
    let opt_day = |field: &str, v: &Option<String>| v.as_deref().map(|s| day(field, s)).transpose();
    let archive = CylinderArchive {
        layout: LAYOUT_VERSION,
        code: a.code.trim().to_owned(),
        variety: a.variety.parse().map_err(|e| format!("variety: {e}"))?,
        medium: a.medium.parse().map_err(|e| format!("medium: {e}"))?,
        serial: a.serial.trim().to_owned(),
        maker: a.maker.trim().to_owned(),
        manufactured: day("manufactured", &a.manufactured)?,
        standard: a.standard.trim().to_owned(),
        nominal_pressure_mpa: a.nominal_pressure_mpa,
        water_volume_l: a.water_volume_l,
        tare_kg: a.tare_kg,
        rated_max_fill_kg: a.rated_max_fill_kg,
        design_life_years: a.design_life_years,
        last_inspection: opt_day("last_inspection", &a.last_inspection)?,
        next_inspection: opt_day("next_inspection", &a.next_inspection)?,
        owner: a.owner.trim().to_owned(),
        property: a.property.parse().map_err(|e| format!("property: {e}"))?,
        customer: a.customer.clone().filter(|c| !c.trim().is_empty()),
        tags: a.tags.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect(),
    };
    archive.validate().map_err(|e| e.to_string())?;
    Ok(archive)
}

pub fn state_view(a: &CylinderArchive, s: &CylinderState, rules: &RuleTable) -> State {
    State {
        status: s.location.status().into(),
        status_zh: s.location.zh().into(),
        place: s.location.place().map(str::to_owned),
        full: s.full,
        fill_count: s.fill_count,
        last_fill_at: s.last_fill.as_ref().map(|f| rfc3339(f.wall_ms)),
        last_fill_mass_kg: s.last_fill.as_ref().map(|f| f.filled_mass_g as f64 / 1000.0),
        last_inspection: s.last_inspection.map(|d| d.to_string()),
        next_inspection: rules.next_inspection_due(a, s).to_string(),
        scrapped: s.scrapped.is_some(),
        inspection_hold: s.inspection_hold.clone(),
        regulator_holds: s.regulator_holds.keys().cloned().collect(),
        tags: s.tags.iter().cloned().collect(),
        n_events: s.n_events,
    }
}

pub fn summary(row: &CylinderRow, rules: &RuleTable) -> CylinderSummary {
    let (a, s) = (&row.archive, &row.state);
    CylinderSummary {
        code: a.code.clone(),
        code10: a.code.get(6..).unwrap_or_default().to_owned(),
        variety: a.variety.code().into(),
        variety_zh: a.variety.zh().into(),
        medium: a.medium.code().into(),
        medium_zh: a.medium.zh().into(),
        serial: a.serial.clone(),
        owner: a.owner.clone(),
        status: s.location.status().into(),
        status_zh: s.location.zh().into(),
        place: s.location.place().map(str::to_owned),
        full: s.full,
        fill_count: s.fill_count,
        next_inspection: rules.next_inspection_due(a, s).to_string(),
        scrapped: s.scrapped.is_some(),
        held: s.inspection_hold.is_some() || !s.regulator_holds.is_empty(),
    }
}

/// An anomaly with its proving events (those this node holds).
pub fn anomaly_view(a: &Anomaly, events: &[SignedEvent]) -> AnomalyView {
    AnomalyView {
        id: crate::auth::hex(&a.id()),
        kind: a.kind.code().to_owned(),
        kind_zh: a.kind.zh().to_owned(),
        cylinders: a.cylinders.iter().map(|c| c.to_string()).collect(),
        at: rfc3339(a.at_ms),
        rules: a.rules.clone(),
        message_zh: a.detail_zh.clone(),
        message_en: a.detail_en.clone(),
        events: events.iter().map(event_view).collect(),
    }
}

pub fn event_view(e: &SignedEvent) -> EventView {
    let ev = &e.event;
    // The body's own fields, without the enum wrapper; masses in kg on the wire.
    let mut fields = match serde_json::to_value(&ev.body) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().next().map(|(_, v)| v).unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    if let (EventBody::Correction { target, .. }, serde_json::Value::Object(m)) = (&ev.body, &mut fields) {
        m.insert("target".into(), serde_json::json!(target.to_string()));
    }
    if let (EventBody::Fill { filled_mass_g, .. }, serde_json::Value::Object(m)) = (&ev.body, &mut fields) {
        m.remove("filled_mass_g");
        m.insert("filled_mass_kg".into(), serde_json::json!(*filled_mass_g as f64 / 1000.0));
    }
    EventView {
        id: e.id.to_string(),
        code: ev.cylinder.to_string(),
        kind: ev.body.kind().into(),
        kind_zh: kind_zh(ev.body.kind()).into(),
        at: rfc3339(ev.wall_ms),
        hlc: format!("{}.{}", ev.hlc.physical_ms, ev.hlc.logical),
        node: ev.node.to_string(),
        operator: ev.operator.clone(),
        place: ev.place.clone(),
        fields,
    }
}

pub fn reason(r: &Refusal) -> Reason {
    Reason {
        rule: r.rule.code().into(),
        message_zh: r.message_zh.clone(),
        message_en: r.message_en.clone(),
        regulation: r.regulation.clone(),
    }
}
