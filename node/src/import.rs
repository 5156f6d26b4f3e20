//! `node import cylinders FILE`: bulk import of cylinder archives from the spreadsheet
//! template (CSV or XLSX). Bad rows are rejected with a reason per row and written to a
//! report; good rows are imported.
//!
//! Columns are matched by header, Chinese or English (see [`COLUMNS`]); order is free.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use calamine::{DataType, Reader};
use schema::archive::{CylinderArchive, Day, LAYOUT_VERSION};
use schema::codes::{FullCode, RegionCode};

use crate::store::{Store, StoreError};

/// (field, accepted headers). The first header is the template's.
pub const COLUMNS: &[(&str, &[&str])] = &[
    ("code", &["气瓶编码", "条码号", "code"]),
    ("variety", &["设备品种", "品种", "variety"]),
    ("medium", &["充装介质", "介质", "medium"]),
    ("serial", &["出厂编号", "制造编号", "serial"]),
    ("maker", &["制造单位", "maker"]),
    ("manufactured", &["出厂日期", "manufactured"]),
    ("standard", &["制造标准", "standard"]),
    ("nominal_pressure_mpa", &["公称工作压力(MPa)", "公称压力", "nominal_pressure_mpa"]),
    ("water_volume_l", &["水容积(L)", "容积", "water_volume_l"]),
    ("tare_kg", &["皮重(kg)", "皮重", "tare_kg"]),
    ("rated_max_fill_kg", &["额定充装量(kg)", "rated_max_fill_kg"]),
    ("design_life_years", &["设计使用年限(年)", "有效期限(年)", "design_life_years"]),
    ("last_inspection", &["上次检验日期", "last_inspection"]),
    ("next_inspection", &["下次检验日期", "next_inspection"]),
    ("owner", &["产权单位", "owner"]),
    ("property", &["产权性质", "property"]),
    ("customer", &["客户", "客户名称", "customer"]),
    ("tags", &["标签号", "tags"]),
];

const REQUIRED: &[&str] =
    &["code", "variety", "medium", "serial", "manufactured", "water_volume_l", "nominal_pressure_mpa"];
const CHUNK: usize = 500;

/// One rejected row.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// 1-based row number in the file, the header being row 1.
    pub row: usize,
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub imported: usize,
    pub rejected: Vec<Rejected>,
}

/// Reads the file into rows of (row number, field → text).
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<(usize, BTreeMap<&'static str, String>)>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let table: Vec<Vec<String>> = match ext.as_str() {
        "csv" | "txt" => {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_path(path)
                .with_context(|| format!("opening {}", path.display()))?;
            let mut out = Vec::new();
            for rec in r.records() {
                let rec = rec.with_context(|| format!("reading {}", path.display()))?;
                out.push(rec.iter().map(|s| s.trim_start_matches('\u{feff}').trim().to_owned()).collect());
            }
            out
        }
        "xlsx" | "xls" | "xlsm" | "ods" => {
            let mut wb = calamine::open_workbook_auto(path).with_context(|| format!("opening {}", path.display()))?;
            let range =
                wb.worksheet_range_at(0).context("the workbook has no sheet")?.context("reading the first sheet")?;
            range.rows().map(|r| r.iter().map(cell_text).collect()).collect()
        }
        other => bail!("unsupported file type {other:?}: use .csv or .xlsx"),
    };
    let Some((header, body)) = table.split_first() else {
        bail!("{} is empty", path.display());
    };
    let mut index: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        let h = h.trim();
        if let Some((field, _)) = COLUMNS.iter().find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(h))) {
            index.insert(field, i);
        }
    }
    let missing: Vec<&str> = REQUIRED.iter().filter(|f| !index.contains_key(*f)).copied().collect();
    if !missing.is_empty() {
        let names: Vec<&str> =
            missing.iter().filter_map(|f| COLUMNS.iter().find(|(n, _)| n == f).map(|(_, h)| h[0])).collect();
        bail!("missing columns: {} (缺少列：{})", missing.join(", "), names.join("、"));
    }
    Ok(body
        .iter()
        .enumerate()
        .filter(|(_, r)| r.iter().any(|c| !c.is_empty()))
        .map(|(i, r)| (i + 2, index.iter().map(|(f, &c)| (*f, r.get(c).cloned().unwrap_or_default())).collect()))
        .collect())
}

fn cell_text(c: &calamine::Data) -> String {
    match c {
        calamine::Data::DateTime(_) | calamine::Data::DateTimeIso(_) => {
            c.as_date().map(|d| d.to_string()).unwrap_or_default()
        }
        calamine::Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_string().trim().to_owned(),
    }
}

fn parse_day(s: &str) -> Option<Day> {
    let s = s.trim().replace(['/', '.'], "-");
    if let Ok(d) = s.parse::<Day>() {
        return Some(d);
    }
    // Stamps carry year-month only; the template normalises to day 1.
    let mut parts = s.split('-');
    let (y, m) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if parts.next().is_some() {
        return None;
    }
    Day::ymd(y, m, 1)
}

/// Turns one row into an archive, or says which field is wrong.
pub fn archive_of(
    row: &BTreeMap<&'static str, String>,
    region: RegionCode,
    enterprise: &str,
) -> Result<CylinderArchive, String> {
    let get = |f: &str| row.get(f).map(|s| s.trim()).unwrap_or_default();
    let opt = |f: &str| Some(get(f)).filter(|s| !s.is_empty());
    let num = |f: &str| -> Result<Option<f64>, String> {
        opt(f).map(|s| s.parse::<f64>().map_err(|_| format!("{f}: {s:?} is not a number"))).transpose()
    };
    let day = |f: &str| -> Result<Option<Day>, String> {
        opt(f)
            .map(|s| parse_day(s).ok_or_else(|| format!("{f}: {s:?} is not a date (YYYY-MM-DD or YYYY-MM)")))
            .transpose()
    };
    for f in REQUIRED {
        if get(f).is_empty() {
            return Err(format!("{f} is empty"));
        }
    }
    let code = FullCode::from_scan(get("code"), region).map_err(|e| format!("code: {e}"))?;
    let archive = CylinderArchive {
        layout: LAYOUT_VERSION,
        code: code.to_string(),
        variety: get("variety").parse().map_err(|e| format!("variety: {e}"))?,
        medium: get("medium").parse().map_err(|e| format!("medium: {e}"))?,
        serial: get("serial").to_owned(),
        maker: get("maker").to_owned(),
        manufactured: day("manufactured")?.ok_or("manufactured is empty")?,
        standard: get("standard").to_owned(),
        nominal_pressure_mpa: num("nominal_pressure_mpa")?.ok_or("nominal_pressure_mpa is empty")?,
        water_volume_l: num("water_volume_l")?.ok_or("water_volume_l is empty")?,
        tare_kg: num("tare_kg")?,
        rated_max_fill_kg: num("rated_max_fill_kg")?,
        design_life_years: opt("design_life_years")
            .map(|s| s.parse::<u32>().map_err(|_| format!("design_life_years: {s:?} is not a whole number")))
            .transpose()?,
        last_inspection: day("last_inspection")?,
        next_inspection: day("next_inspection")?,
        owner: opt("owner").unwrap_or(enterprise).to_owned(),
        property: opt("property").unwrap_or("own").parse().map_err(|e| format!("property: {e}"))?,
        customer: opt("customer").map(str::to_owned),
        tags: opt("tags")
            .map(|t| t.split([';', ',', '，', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    archive.validate().map_err(|e| e.to_string())?;
    Ok(archive)
}

/// Imports every good row; `progress` gets (rows done, rows total).
pub fn import(
    store: &Store,
    path: &Path,
    region: RegionCode,
    enterprise: &str,
    operator: &str,
    progress: &dyn Fn(u64, u64),
) -> anyhow::Result<Report> {
    let rows = read_rows(path)?;
    let total = rows.len() as u64;
    let mut report = Report::default();
    let mut done = 0u64;
    for chunk in rows.chunks(CHUNK) {
        let mut good = Vec::new();
        for (n, row) in chunk {
            match archive_of(row, region, enterprise) {
                Ok(a) => good.push((*n, a)),
                Err(reason) => report.rejected.push(Rejected {
                    row: *n,
                    code: row.get("code").cloned().unwrap_or_default(),
                    reason,
                }),
            }
        }
        let operator = operator.to_owned();
        let results = store.write_blocking(move |ctx| {
            let mut out = Vec::new();
            for (n, a) in good {
                let code = a.code.clone();
                match ctx.register(a, &operator, "import") {
                    Ok(_) => out.push((n, code, None)),
                    Err(e) if !e.is_fatal() => out.push((n, code, Some(e.to_string()))),
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, StoreError>(out)
        })?;
        for (row, code, err) in results {
            match err {
                None => report.imported += 1,
                Some(reason) => report.rejected.push(Rejected { row, code, reason }),
            }
        }
        done += chunk.len() as u64;
        progress(done, total);
    }
    report.rejected.sort_by_key(|r| r.row);
    Ok(report)
}

/// Writes the rejected rows as CSV (row, code, reason) next to the input.
pub fn write_report(input: &Path, rejected: &[Rejected]) -> anyhow::Result<PathBuf> {
    let path = input.with_extension("errors.csv");
    let mut w = csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record(["行号 row", "气瓶编码 code", "原因 reason"])?;
    for r in rejected {
        w.write_record([r.row.to_string(), r.code.clone(), r.reason.clone()])?;
    }
    w.flush()?;
    Ok(path)
}

#[cfg(test)]
mod tests;
