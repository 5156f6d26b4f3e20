//! Demo data: one enterprise with Chinese names, its staff accounts, warehouses,
//! customers, and thousands of cylinders with months of history, including overdue,
//! scrapped, past-life, foreign-owned and held ones. Created once per data directory.
//!
//! Well-known codes (region 370102 + these 10 digits) for trying the safety rules:
//!
//! | code | what it shows |
//! |---|---|
//! | 0101000001 | a good LPG cylinder in the empty store: fill allowed (max 14.91 kg) |
//! | 0101000002 | overdue for periodic inspection |
//! | 0101000003 | scrapped |
//! | 0101000004 | owned by another enterprise (3701260001) |
//! | 0101000005 | held by a regulator finding |
//! | 0101000006 | past its design service life (GB 5842-2006, made 2013) |
//! | 0101000007 | tare weight unknown |
//! | 0101000008 | failed its pre-fill check, waiting for inspection |
//! | 0102000001 | a good oxygen cylinder (fill it with `lpg` to see the medium rule) |

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schema::archive::{CylinderArchive, Day, DocId, LAYOUT_VERSION};
use schema::codes::{CylinderCode, FullCode};
use schema::event::{EventBody, FindingAction};
use schema::records::{Customer, DeliveryStation, Enterprise, FillBatch, Staff, Warehouse};
use schema::vocab::{Medium, PropertyKind, Role, Variety};

use crate::config::Settings;
use crate::store::{Store, StoreError, WriteCtx};

/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "demo-pass";
/// Cylinders written per transaction while generating.
const CHUNK: usize = 2000;
const DAY_MS: i64 = 86_400_000;

/// Demo accounts and their roles.
pub const ACCOUNTS: &[(&str, &str, Role)] = &[
    ("demo-manager", "王站长", Role::Manager),
    ("demo-filler", "李强强", Role::Filler),
    ("demo-keeper", "孙悦", Role::Keeper),
    ("demo-driver", "纵瑞阁", Role::Driver),
    ("demo-repairer", "王齐", Role::Repairer),
    ("demo-inspector", "张娜", Role::Inspector),
    ("demo-regulator", "赵监察", Role::Regulator),
];

pub const EMPTY_STORES: &[&str] = &["空瓶左库", "空瓶右库"];
pub const FULL_STORES: &[&str] = &["重瓶左库", "重瓶右库"];
const FOREIGN_ENTERPRISE: &str = "3701260001";

/// Creates the demo data unless this store already has it. `progress` is called with
/// (done, total) cylinders.
pub fn ensure(
    store: &Store,
    settings: &Settings,
    n_cylinders: usize,
    now_ms: i64,
    progress: &dyn Fn(u64, u64),
) -> Result<bool, StoreError> {
    if store.meta("demo")?.is_some() {
        return Ok(false);
    }
    let enterprise = settings.enterprise.to_string();
    let region = settings.region;
    let hash = crate::auth::hash_password(DEMO_PASSWORD, b"demo-salt-000001").map_err(StoreError::Invalid)?;
    {
        let enterprise = enterprise.clone();
        store.write_blocking(move |ctx| records(ctx, &enterprise, &region.to_string(), &hash))?;
    }
    let today = Day(chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .with_timezone(&settings.utc_offset)
        .date_naive());
    let mut done = 0usize;
    let mut rng = ChaCha8Rng::seed_from_u64(20_261_125);
    while done < n_cylinders {
        let end = (done + CHUNK).min(n_cylinders);
        let specs: Vec<Spec> = (done..end).map(|i| spec(i, &mut rng, today, &enterprise, region, now_ms)).collect();
        store.write_blocking(move |ctx| {
            for s in specs {
                write_cylinder(ctx, s)?;
            }
            Ok(())
        })?;
        done = end;
        progress(done as u64, n_cylinders as u64);
    }
    store.write_blocking(|ctx| ctx.set_meta("demo", b"1"))?;
    Ok(true)
}

fn records(ctx: &mut WriteCtx<'_>, enterprise: &str, region: &str, hash: &str) -> Result<(), StoreError> {
    ctx.put_record(
        &DocId::record("enterprise", enterprise),
        &Enterprise {
            code: enterprise.into(),
            name: "济南历下燃气充装有限公司".into(),
            credit_code: "91370102MA3C8XK21L".into(),
            region: region.into(),
            address: "山东省济南市历下区新泺大街2008号".into(),
            contact: "刘云洁".into(),
            phone: "0531-88880001".into(),
            media: vec![
                Medium::Lpg,
                Medium::Oxygen,
                Medium::Nitrogen,
                Medium::CarbonDioxide,
                Medium::Argon,
                Medium::Acetylene,
            ],
            in_use: true,
        },
    )?;
    for (i, (account, name, role)) in ACCOUNTS.iter().enumerate() {
        ctx.put_record(
            &DocId::record("staff", account),
            &Staff {
                account: (*account).into(),
                name: (*name).into(),
                id_number: format!("37010219850101{:04}", i + 1),
                roles: vec![*role],
                enterprise: enterprise.into(),
                active: true,
                password_hash: hash.into(),
            },
        )?;
    }
    for (i, name) in EMPTY_STORES.iter().chain(FULL_STORES).enumerate() {
        ctx.put_record(
            &DocId::record("warehouse", name),
            &Warehouse {
                id: (*name).into(),
                name: (*name).into(),
                holds_empty: i < 2,
                holds_full: i >= 2,
                enterprise: enterprise.into(),
            },
        )?;
    }
    for (id, name) in [("PS-01", "历下配送站"), ("PS-02", "高新配送站")] {
        ctx.put_record(
            &DocId::record("delivery_station", id),
            &DeliveryStation {
                id: id.into(),
                name: name.into(),
                address: format!("济南市{name}"),
                phone: "0531-88880002".into(),
                enterprise: enterprise.into(),
            },
        )?;
    }
    for i in 1..=60u32 {
        let household = i > 12;
        let name = if household {
            format!("{}{}", SURNAMES[i as usize % SURNAMES.len()], "家")
        } else {
            BUSINESSES[i as usize % BUSINESSES.len()].to_owned()
        };
        ctx.put_record(
            &DocId::record("customer", &customer_code(i)),
            &Customer {
                code: customer_code(i),
                name,
                address: format!("济南市历下区{}路{}号", STREETS[i as usize % STREETS.len()], i * 3),
                region: region.into(),
                contact: format!("{}先生", SURNAMES[(i as usize * 7) % SURNAMES.len()]),
                phone: format!("1396585{:04}", 1000 + i),
                household,
                active: true,
            },
        )?;
    }
    ctx.put_record(
        &DocId::record("batch", "PC20261101"),
        &FillBatch {
            id: "PC20261101".into(),
            medium: Medium::Lpg,
            opened: "2026-11-01".into(),
            note: "11月液化石油气批次".into(),
        },
    )?;
    Ok(())
}

fn customer_code(i: u32) -> String {
    format!("37010200{i:02}")
}

const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱"];
const BUSINESSES: &[&str] =
    &["泉城饭店", "大明湖酒家", "趵突泉食堂", "历下区第一中学", "千佛山宾馆", "山大路餐馆", "舜耕山庄", "黑虎泉茶社"];
const STREETS: &[&str] = &["泉城", "经十", "解放", "文化东", "山大", "和平", "历山", "燕子山"];
const MAKERS: &[&str] = &["济南钢瓶厂", "山东华电气瓶有限公司", "北京天海工业有限公司", "沈阳斯林达安科新技术有限公司"];

/// What is special about a generated cylinder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flavour {
    Good,
    Overdue,
    Scrapped,
    Foreign,
    Held,
    PastLife,
    TareUnknown,
    FailedCheck,
}

#[derive(Debug)]
struct Spec {
    archive: CylinderArchive,
    flavour: Flavour,
    /// Start of the history, ms.
    since_ms: i64,
    now_ms: i64,
    seed: u64,
    /// Stays with its customer at the end of the history.
    stays_out: bool,
}

fn spec(
    i: usize,
    rng: &mut ChaCha8Rng,
    today: Day,
    enterprise: &str,
    region: schema::codes::RegionCode,
    now_ms: i64,
) -> Spec {
    // The first nine are the well-known codes of the module table.
    let (medium, seq, flavour) = match i {
        0 => (Medium::Lpg, 1, Flavour::Good),
        1 => (Medium::Lpg, 2, Flavour::Overdue),
        2 => (Medium::Lpg, 3, Flavour::Scrapped),
        3 => (Medium::Lpg, 4, Flavour::Foreign),
        4 => (Medium::Lpg, 5, Flavour::Held),
        5 => (Medium::Lpg, 6, Flavour::PastLife),
        6 => (Medium::Lpg, 7, Flavour::TareUnknown),
        7 => (Medium::Lpg, 8, Flavour::FailedCheck),
        8 => (Medium::Oxygen, 1, Flavour::Good),
        _ => {
            let m = match rng.random_range(0..100) {
                0..70 => Medium::Lpg,
                70..80 => Medium::Oxygen,
                80..88 => Medium::Nitrogen,
                88..93 => Medium::CarbonDioxide,
                93..97 => Medium::Argon,
                _ => Medium::Acetylene,
            };
            let f = match rng.random_range(0..1000) {
                0..40 => Flavour::Overdue,
                40..50 => Flavour::Scrapped,
                50..70 => Flavour::Foreign,
                70..75 => Flavour::Held,
                75..100 if m == Medium::Lpg => Flavour::PastLife,
                100..105 => Flavour::TareUnknown,
                105..110 => Flavour::FailedCheck,
                _ => Flavour::Good,
            };
            (m, 10 + i, f)
        }
    };
    let medium_digits = match medium {
        Medium::Lpg => "01",
        Medium::Oxygen => "02",
        Medium::Nitrogen => "03",
        Medium::CarbonDioxide => "04",
        Medium::Argon => "05",
        _ => "06",
    };
    let code10: CylinderCode = format!("01{medium_digits}{seq:06}").parse().expect("ten digits");
    let code = FullCode::new(region, code10);
    let (variety, volume, pressure, tare, standard) = match medium {
        Medium::Lpg if rng.random_bool(0.85) => (Variety::LpgWeldedSteel, 35.5, 2.1, 15.0, "GB 5842-2006"),
        Medium::Lpg => (Variety::LpgWeldedSteel, 118.0, 2.1, 44.0, "GB 5842-2006"),
        Medium::Acetylene => (Variety::AcetyleneCylinder, 41.0, 3.0, 52.0, "GB 11638-2011"),
        Medium::CarbonDioxide => (Variety::SeamlessSteel, 40.0, 15.0, 50.0, "GB/T 5099.1-2017"),
        _ => (Variety::SeamlessSteel, 40.0, 15.0, 48.0, "GB/T 5099.1-2017"),
    };
    let interval = match (variety, medium) {
        (Variety::LpgWeldedSteel, _) => 4,
        (_, Medium::Nitrogen | Medium::Argon) => 5,
        _ => 3,
    };
    let age_years = match flavour {
        Flavour::PastLife => 13,
        _ if variety == Variety::LpgWeldedSteel => rng.random_range(0..7),
        _ => rng.random_range(0..20),
    };
    let manufactured = today.plus_years(-age_years).plus_days(-rng.random_range(30..330));
    let last_inspection = if age_years >= interval || flavour == Flavour::PastLife {
        Some(today.plus_days(-rng.random_range(60..(interval * 365 - 60) as i64)))
    } else {
        None
    };
    let mut next_inspection = last_inspection.unwrap_or(manufactured).plus_years(interval);
    if flavour == Flavour::Overdue {
        next_inspection = today.plus_days(-rng.random_range(1..200));
    }
    let archive = CylinderArchive {
        layout: LAYOUT_VERSION,
        code: code.to_string(),
        variety,
        medium,
        serial: format!("{}", rng.random_range(100_000..999_999_999u32)),
        maker: MAKERS[rng.random_range(0..MAKERS.len())].into(),
        manufactured,
        standard: standard.into(),
        nominal_pressure_mpa: pressure,
        water_volume_l: volume,
        tare_kg: if flavour == Flavour::TareUnknown { None } else { Some(tare) },
        rated_max_fill_kg: if volume > 100.0 { Some(49.5) } else { None },
        design_life_years: None,
        last_inspection: last_inspection.filter(|d| *d < next_inspection),
        next_inspection: Some(next_inspection),
        owner: if flavour == Flavour::Foreign { FOREIGN_ENTERPRISE.into() } else { enterprise.into() },
        property: if flavour == Flavour::Foreign {
            PropertyKind::Own
        } else if rng.random_bool(0.1) {
            PropertyKind::Entrusted
        } else {
            PropertyKind::Own
        },
        customer: None,
        // A tag's number is the chip's, unique across stations (the 10-digit code alone
        // repeats in every region).
        tags: vec![format!("T{code}")],
    };
    let stays_out = i >= 9 && flavour == Flavour::Good && rng.random_bool(0.3);
    Spec {
        archive,
        flavour,
        since_ms: now_ms - rng.random_range(60..120) * DAY_MS,
        now_ms,
        seed: rng.random(),
        stays_out,
    }
}

/// Registers one cylinder and plays its months of history: receive empty → pre-fill
/// check → fill → store full → dispatch → deliver → return, every one to four weeks.
fn write_cylinder(ctx: &mut WriteCtx<'_>, s: Spec) -> Result<(), StoreError> {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let code = s.archive.full_code().map_err(|e| StoreError::Invalid(e.to_string()))?;
    let medium = s.archive.medium;
    let max_kg = s.archive.rated_max_fill_kg.unwrap_or(s.archive.water_volume_l * 0.42);
    let mass_g = |rng: &mut ChaCha8Rng| ((max_kg - rng.random_range(0.05..0.6)) * 1000.0) as u64;
    let compressed_g = (s.archive.water_volume_l * 0.2 * 1000.0) as u64;
    ctx.register_backdated(s.archive, "demo-keeper", "历下充装站", s.since_ms)?;
    let mut t = s.since_ms + DAY_MS;
    let end = s.now_ms - 2 * DAY_MS;
    let customer = customer_code(rng.random_range(1..=60));
    let step =
        |ctx: &mut WriteCtx<'_>, t: &mut i64, operator: &str, place: &str, body: EventBody| -> Result<(), StoreError> {
            // 10 minutes to 2 hours between the steps of one cycle.
            *t += 600_000 + (*t).rem_euclid(6_600_000);
            ctx.record_backdated(code, operator, place, body, *t)
        };
    while t < end {
        let empty = EMPTY_STORES[(t / DAY_MS) as usize % 2];
        let full = FULL_STORES[(t / DAY_MS) as usize % 2];
        step(ctx, &mut t, "demo-keeper", empty, EventBody::ReceiveEmpty { warehouse: empty.into() })?;
        step(ctx, &mut t, "demo-filler", "历下充装站", EventBody::PreFillCheck { passed: true, failed_items: vec![] })?;
        let g = if medium.is_liquefied() { mass_g(&mut ChaCha8Rng::seed_from_u64(t as u64)) } else { compressed_g };
        // The demo station obeys the rules: a cylinder the rules refuse waits in the empty
        // store (a refused fill would rightly be listed as an anomaly).
        if !ctx.fill_refusals(&code, medium, g, t)?.is_empty() {
            break;
        }
        step(
            ctx,
            &mut t,
            "demo-filler",
            "历下充装站",
            EventBody::Fill { medium, filled_mass_g: g, batch: Some("PC20261101".into()) },
        )?;
        step(ctx, &mut t, "demo-filler", full, EventBody::StoreFull { warehouse: full.into() })?;
        step(
            ctx,
            &mut t,
            "demo-driver",
            "历下充装站",
            EventBody::Dispatch { order: None, driver: "demo-driver".into() },
        )?;
        step(ctx, &mut t, "demo-driver", &customer, EventBody::Deliver { customer: customer.clone(), order: None })?;
        // Out with the customer for three to seven weeks, unless that runs past the end
        // (the history stops there: no event after the time it is made at).
        let delivered = t;
        t += rng.random_range(21..49) * DAY_MS;
        if t >= end {
            t = delivered;
            break;
        }
        step(ctx, &mut t, "demo-driver", &customer, EventBody::Return { customer: customer.clone(), slip: None })?;
    }
    // Most cylinders end up back at the station, empty; some stay with their customer.
    if !s.stays_out {
        let empty = EMPTY_STORES[0];
        t = t.max(end);
        step(ctx, &mut t, "demo-keeper", empty, EventBody::ReceiveEmpty { warehouse: empty.into() })?;
    }
    match s.flavour {
        Flavour::Scrapped => {
            step(ctx, &mut t, "demo-inspector", "历下充装站", EventBody::Scrap { reason: "瓶体严重腐蚀".into() })?
        }
        Flavour::Held => step(
            ctx,
            &mut t,
            "demo-regulator",
            "历下充装站",
            EventBody::RegulatorFinding {
                action: FindingAction::Hold,
                finding: format!("JC-{}", &code.to_string()[10..]),
                note: "现场检查：钢印模糊，待核实".into(),
            },
        )?,
        Flavour::FailedCheck => step(
            ctx,
            &mut t,
            "demo-filler",
            "历下充装站",
            EventBody::PreFillCheck { passed: false, failed_items: vec!["瓶阀漏气".into()] },
        )?,
        _ => {}
    }
    Ok(())
}

/// A week of station work written into the last seven days of a store that holds demo
/// data: each cylinder in turn comes back empty, is checked, and (if the rules allow it)
/// is filled and goes into the full store, until `events` events are written, spread
/// evenly over the week up to an hour ago, each after the cylinder's last event (so later
/// for the cylinders the history ends with). What a station does while its link is down:
/// for trying the catch-up that follows (`net_bench --catch-up`). Returns the events
/// written.
pub fn week(store: &Store, events: usize, now_ms: i64, progress: &dyn Fn(u64, u64)) -> Result<usize, StoreError> {
    if store.meta("demo")?.is_none() {
        return Err(StoreError::Invalid("这里没有演示数据 / this data directory holds no demo data".into()));
    }
    let mut codes = Vec::new();
    for page in 1.. {
        let (_, rows) = store.list(&crate::store::CylinderFilter::default(), page, 10_000)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            codes.push(row.archive.full_code().map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
    }
    // A cycle starts as far into the week (up to an hour ago) as the events written before
    // it are into all of them, or after the cylinder's last event if that is later.
    let (start, span) = (now_ms - 7 * DAY_MS, 7 * DAY_MS - 3_600_000);
    let mut written = 0usize;
    let mut next = codes.iter().copied().cycle();
    while written < events && !codes.is_empty() {
        let batch: Vec<FullCode> = next.by_ref().take(CHUNK).collect();
        let before = written;
        written += store.write_blocking(move |ctx| {
            let mut n = 0;
            for code in batch {
                let Some(row) = ctx.row(&code)? else { continue };
                let medium = row.archive.medium;
                let grams = match medium.is_liquefied() {
                    true => (row.archive.rated_max_fill_kg.unwrap_or(row.archive.water_volume_l * 0.42) * 950.0) as u64,
                    false => (row.archive.water_volume_l * 200.0) as u64,
                };
                // A week offline follows what the head office last heard of the cylinder.
                let share = start + (span as i128 * (before + n) as i128 / events as i128) as i64;
                let t = row.state.last_applied.map_or(share, |(hlc, ..)| share.max(hlc.physical_ms + 600_000));
                let mut steps = vec![
                    ("demo-keeper", EMPTY_STORES[0], EventBody::ReceiveEmpty { warehouse: EMPTY_STORES[0].into() }),
                    ("demo-filler", "历下充装站", EventBody::PreFillCheck { passed: true, failed_items: vec![] }),
                ];
                // As in the history: a cylinder the rules refuse waits in the empty store.
                // Ten minutes between the steps of one cycle.
                if ctx.fill_refusals(&code, medium, grams, t + 2 * 600_000)?.is_empty() {
                    let batch = Some("PC20261120".into());
                    steps.push(("demo-filler", "历下充装站", EventBody::Fill { medium, filled_mass_g: grams, batch }));
                    let full = FULL_STORES[0];
                    steps.push(("demo-filler", full, EventBody::StoreFull { warehouse: full.into() }));
                }
                for (i, (operator, place, body)) in steps.into_iter().enumerate() {
                    if before + n == events {
                        return Ok(n);
                    }
                    ctx.record_backdated(code, operator, place, body, t + i as i64 * 600_000)?;
                    n += 1;
                }
            }
            Ok(n)
        })?;
        progress(written as u64, events as u64);
        if written == before {
            break;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::RawConfig;

    const NOW_MS: i64 = 1_795_579_200_000;

    #[test]
    fn a_week_of_work_goes_into_the_last_seven_days_in_cycles_the_rules_allow() {
        let store = Store::in_memory(Arc::new(ManualClock::at(NOW_MS))).unwrap();
        let settings = RawConfig { mdns: "off".into(), ..RawConfig::default() }.validate().unwrap();
        let err = week(&store, 10, NOW_MS, &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("no demo data"), "{err}");
        ensure(&store, &settings, 60, NOW_MS, &|_, _| {}).unwrap();
        let (cylinders, before) = store.counts().unwrap();
        assert_eq!(cylinders, 60);
        let (_, rows) = store.list(&crate::store::CylinderFilter::default(), 1, 100).unwrap();
        let codes: Vec<FullCode> = rows.iter().map(|r| r.archive.full_code().unwrap()).collect();
        let history: Vec<_> = codes.iter().flat_map(|c| store.events_of(c, 10_000).unwrap()).collect();
        // The history stops at the time it was made at (a cylinder's last return once came
        // up to seven weeks later).
        let latest = history.iter().map(|e| e.event.wall_ms).max().unwrap();
        assert!(latest <= NOW_MS, "an event {} ms after the demo data was made", latest - NOW_MS);
        let old: BTreeSet<_> = history.iter().map(|e| e.id).collect();

        assert_eq!(week(&store, 300, NOW_MS, &|_, _| {}).unwrap(), 300);
        assert_eq!(store.counts().unwrap().1, before + 300);
        let weeks: Vec<Vec<_>> = codes
            .iter()
            .map(|c| store.events_of(c, 10_000).unwrap().into_iter().filter(|e| !old.contains(&e.id)).collect())
            .collect();
        // The week's last event may end a cycle midway (300 is the count asked for).
        let last = weeks.iter().flatten().map(|e| e.event.hlc).max().unwrap();
        let mut new = 0;
        let mut filled = BTreeSet::new();
        for (code, events) in codes.iter().zip(weeks) {
            assert!(!events.is_empty(), "{code}: every cylinder comes back at least once in 300 events");
            new += events.len();
            // After everything the cylinder had, within the last seven days.
            let history = store.events_of(code, 10_000).unwrap();
            let first_new = history.iter().position(|e| !old.contains(&e.id)).unwrap();
            assert_eq!(history.len() - first_new, events.len(), "{code}: the week's events come last");
            for e in &events {
                assert!(
                    e.event.wall_ms >= NOW_MS - 7 * DAY_MS && e.event.wall_ms < NOW_MS,
                    "{code}: {}",
                    e.event.wall_ms
                );
            }
            // Each cycle in order, a fill only after a check and always followed by storing.
            let kinds: Vec<&str> = events.iter().map(|e| e.event.body.kind()).collect();
            let whole = [&["pre_fill_check"][..], &["pre_fill_check", "fill", "store_full"]];
            let ends_the_week = events.last().is_some_and(|e| e.event.hlc == last);
            assert_eq!(kinds[0], "receive_empty", "{code}: {kinds:?}");
            let cycles: Vec<&[&str]> = kinds.split(|k| *k == "receive_empty").skip(1).collect();
            for (i, cycle) in cycles.iter().enumerate() {
                let cut_short = ends_the_week && i + 1 == cycles.len();
                assert!(whole.contains(cycle) || cut_short && whole[1].starts_with(cycle), "{code}: {kinds:?}");
            }
            if kinds.contains(&"fill") {
                filled.insert(code.to_string());
            }
        }
        assert_eq!(new, 300);
        // A good cylinder is filled; an overdue or scrapped one waits in the empty store.
        assert!(filled.contains("3701020101000001"), "{filled:?}");
        assert!(!filled.contains("3701020101000002"), "{filled:?}");
        assert!(!filled.contains("3701020101000003"), "{filled:?}");
    }
}
