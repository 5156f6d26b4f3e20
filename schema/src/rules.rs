//! The safety rules enforced before every fill, as pure functions over derived state.
//!
//! Thresholds live in a versioned [`RuleTable`]: the embedded default
//! (`schema/rules/default.toml`, one source per number from domain.md) with optional
//! per-enterprise overrides. A check returns **every** failing rule, each with a stable
//! code, a Chinese and an English message and the regulation it comes from.

use serde::{Deserialize, Serialize};

use crate::archive::{CylinderArchive, Day};
use crate::state::CylinderState;
use crate::vocab::{Medium, PropertyKind, Variety};

/// The embedded default table.
pub const DEFAULT_TABLE_TOML: &str = include_str!("../rules/default.toml");

/// Stable rule codes. The strings are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Scrapped,
    FailedInspection,
    InspectionOverdue,
    PastDesignLife,
    FillCountLimit,
    NotOwnCylinder,
    MediumMismatch,
    TareUnknown,
    Overfill,
    RegulatorHold,
    OutOfServiceTooLong,
}

impl Rule {
    pub const ALL: &'static [Rule] = &[
        Rule::Scrapped,
        Rule::FailedInspection,
        Rule::InspectionOverdue,
        Rule::PastDesignLife,
        Rule::FillCountLimit,
        Rule::NotOwnCylinder,
        Rule::MediumMismatch,
        Rule::TareUnknown,
        Rule::Overfill,
        Rule::RegulatorHold,
        Rule::OutOfServiceTooLong,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Rule::Scrapped => "scrapped",
            Rule::FailedInspection => "failed_inspection",
            Rule::InspectionOverdue => "inspection_overdue",
            Rule::PastDesignLife => "past_design_life",
            Rule::FillCountLimit => "fill_count_limit",
            Rule::NotOwnCylinder => "not_own_cylinder",
            Rule::MediumMismatch => "medium_mismatch",
            Rule::TareUnknown => "tare_unknown",
            Rule::Overfill => "overfill",
            Rule::RegulatorHold => "regulator_hold",
            Rule::OutOfServiceTooLong => "out_of_service_too_long",
        }
    }

    /// The regulation a refusal cites.
    pub fn regulation(self) -> &'static str {
        match self {
            Rule::Scrapped => "TSG 23-2021 第8章; 充装前检查: 报废气瓶不得充装 (domain.md §1.3, §1.7-4)",
            Rule::FailedInspection => "TSG 23-2021 第9章; 检验不合格气瓶不得充装 (domain.md §1.7-4)",
            Rule::InspectionOverdue => "TSG 23-2021 第9章 定期检验; 超期未检气瓶不得充装 (domain.md §1.2, §1.7-3)",
            Rule::PastDesignLife => "TSG 23-2021; GB 5842 设计使用年限 (domain.md §1.3, §1.7-5)",
            Rule::FillCountLimit => "企业规则: 超过充装次数不得充装 (domain.md §4-5)",
            Rule::NotOwnCylinder => "TSG 23-2021 第8章: 只充装自有或托管并登记的气瓶 (domain.md §1.4, §1.7-1)",
            Rule::MediumMismatch => "TSG 23-2021 第8章: 介质不符不得充装 (domain.md §1.7-6)",
            Rule::TareUnknown => "皮重不清楚的不准充装 (domain.md §1.6 [S21], §1.7-13)",
            Rule::Overfill => "GB/T 14193.1-2025 第6章 充装系数; 严禁超装 (domain.md §1.6)",
            Rule::RegulatorHold => "监管查封: 监管人员标记的气瓶不得充装 (mission.md)",
            Rule::OutOfServiceTooLong => "停用超过一个检验周期须重新检验 (domain.md §1.2 [S5][S6])",
        }
    }
}

/// One failing rule, as the handheld shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub rule: Rule,
    pub message_zh: String,
    pub message_en: String,
    pub regulation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalEntry {
    pub variety: Variety,
    pub medium: Option<Medium>,
    pub years: u32,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifeEntry {
    pub variety: Variety,
    /// Manufacturing standard this entry applies to; `None` matches any.
    pub standard: Option<String>,
    pub years: u32,
    /// One-time extension after a passed inspection near the end of life.
    #[serde(default)]
    pub extension_years: u32,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioEntry {
    pub medium: Medium,
    pub kg_per_l: f64,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillCountEntry {
    pub variety: Variety,
    pub limit: u32,
    pub source: String,
}

/// The versioned table of rule thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    pub version: String,
    pub default_interval_years: u32,
    pub default_interval_source: String,
    #[serde(default)]
    pub inspection_interval: Vec<IntervalEntry>,
    #[serde(default)]
    pub design_life: Vec<LifeEntry>,
    #[serde(default)]
    pub filling_ratio: Vec<RatioEntry>,
    #[serde(default)]
    pub fill_count_limit: Vec<FillCountEntry>,
}

/// An enterprise override file: same entries, all optional; its entries are tried first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverrides {
    pub version: String,
    #[serde(default)]
    pub inspection_interval: Vec<IntervalEntry>,
    #[serde(default)]
    pub design_life: Vec<LifeEntry>,
    #[serde(default)]
    pub filling_ratio: Vec<RatioEntry>,
    #[serde(default)]
    pub fill_count_limit: Vec<FillCountEntry>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleTableError {
    #[error("rule table does not parse: {0}")]
    Parse(String),
    #[error("rule table entry is invalid: {0}")]
    Invalid(String),
}

impl RuleTable {
    pub fn embedded() -> RuleTable {
        RuleTable::parse(DEFAULT_TABLE_TOML).expect("the embedded rule table is valid (tested)")
    }

    pub fn parse(text: &str) -> Result<RuleTable, RuleTableError> {
        let table: RuleTable = toml::from_str(text).map_err(|e| RuleTableError::Parse(e.to_string()))?;
        table.validate()?;
        Ok(table)
    }

    /// Puts an enterprise's entries in front of the defaults; the version names both.
    pub fn with_overrides(mut self, text: &str) -> Result<RuleTable, RuleTableError> {
        let o: RuleOverrides = toml::from_str(text).map_err(|e| RuleTableError::Parse(e.to_string()))?;
        self.version = format!("{}+{}", self.version, o.version);
        fn front<T>(mine: Vec<T>, base: &mut Vec<T>) {
            let rest = std::mem::replace(base, mine);
            base.extend(rest);
        }
        front(o.inspection_interval, &mut self.inspection_interval);
        front(o.design_life, &mut self.design_life);
        front(o.filling_ratio, &mut self.filling_ratio);
        front(o.fill_count_limit, &mut self.fill_count_limit);
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), RuleTableError> {
        let bad = |what: String| Err(RuleTableError::Invalid(what));
        if self.default_interval_years == 0 {
            return bad("default_interval_years must be at least 1".into());
        }
        for e in &self.inspection_interval {
            if e.years == 0 || e.source.trim().is_empty() {
                return bad(format!("inspection_interval {}: years ≥ 1 and a source are required", e.variety));
            }
        }
        for e in &self.design_life {
            if e.years == 0 || e.source.trim().is_empty() {
                return bad(format!("design_life {}: years ≥ 1 and a source are required", e.variety));
            }
        }
        for e in &self.filling_ratio {
            if !(e.kg_per_l > 0.0 && e.kg_per_l < 2.0) || e.source.trim().is_empty() {
                return bad(format!("filling_ratio {}: 0 < kg_per_l < 2 and a source are required", e.medium));
            }
        }
        for e in &self.fill_count_limit {
            if e.limit == 0 || e.source.trim().is_empty() {
                return bad(format!("fill_count_limit {}: limit ≥ 1 and a source are required", e.variety));
            }
        }
        Ok(())
    }

    /// Inspection interval in years: variety + medium first, then variety, then the default.
    pub fn interval_years(&self, variety: Variety, medium: Medium) -> u32 {
        self.inspection_interval
            .iter()
            .find(|e| e.variety == variety && e.medium == Some(medium))
            .or_else(|| self.inspection_interval.iter().find(|e| e.variety == variety && e.medium.is_none()))
            .map_or(self.default_interval_years, |e| e.years)
    }

    /// Design life entry: the stamped life wins; then variety + standard, then variety.
    pub fn life(&self, archive: &CylinderArchive) -> Option<(u32, u32)> {
        let matching = |e: &&LifeEntry| e.variety == archive.variety;
        let by_standard = self
            .design_life
            .iter()
            .filter(matching)
            .find(|e| e.standard.as_deref().is_some_and(|s| normalise(s) == normalise(&archive.standard)));
        let general = self.design_life.iter().filter(matching).find(|e| e.standard.is_none());
        let entry = by_standard.or(general);
        match archive.design_life_years {
            Some(years) => Some((years, entry.map_or(0, |e| e.extension_years))),
            None => entry.map(|e| (e.years, e.extension_years)),
        }
    }

    pub fn filling_ratio(&self, medium: Medium) -> Option<f64> {
        self.filling_ratio.iter().find(|e| e.medium == medium).map(|e| e.kg_per_l)
    }

    pub fn fill_count_limit(&self, variety: Variety) -> Option<u32> {
        self.fill_count_limit.iter().find(|e| e.variety == variety).map(|e| e.limit)
    }

    /// Maximum fill mass in kg: rated (stamped) maximum, else water volume × filling ratio.
    pub fn max_fill_kg(&self, archive: &CylinderArchive) -> Option<f64> {
        archive.rated_max_fill_kg.or_else(|| self.filling_ratio(archive.medium).map(|r| r * archive.water_volume_l))
    }

    /// The next inspection due date: from events, else last inspection + interval, else
    /// manufacture + interval.
    pub fn next_inspection_due(&self, archive: &CylinderArchive, state: &CylinderState) -> Day {
        let interval = self.interval_years(archive.variety, archive.medium) as i32;
        state
            .next_inspection
            .unwrap_or_else(|| state.last_inspection.unwrap_or(archive.manufactured).plus_years(interval))
    }
}

fn normalise(standard: &str) -> String {
    standard.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase()
}

/// Everything a fill check looks at.
#[derive(Debug, Clone, Copy)]
pub struct FillCheck<'a> {
    pub archive: &'a CylinderArchive,
    pub state: &'a CylinderState,
    /// Today in the station's time zone.
    pub today: Day,
    /// The enterprise the station fills for.
    pub station_enterprise: &'a str,
    /// The medium the filler is about to fill; `None` checks everything else.
    pub medium: Option<Medium>,
    /// The mass about to be (or just) filled; `None` skips the overfill rule.
    pub filled_mass_kg: Option<f64>,
}

/// Returns every rule that forbids this fill; empty means the fill is allowed.
pub fn check_fill(table: &RuleTable, c: &FillCheck<'_>) -> Vec<Refusal> {
    let mut out = Vec::new();
    let mut refuse = |rule: Rule, zh: String, en: String| {
        out.push(Refusal { rule, message_zh: zh, message_en: en, regulation: rule.regulation().to_owned() });
    };
    let a = c.archive;
    let s = c.state;

    if s.scrapped.is_some() {
        refuse(Rule::Scrapped, "气瓶已报废，禁止充装".into(), "cylinder is scrapped".into());
    }
    if let Some(reason) = &s.inspection_hold {
        refuse(
            Rule::FailedInspection,
            format!("检验或充装前检查不合格，须检验合格后方可充装（{reason}）"),
            format!("failed inspection or pre-fill check, must pass inspection first ({reason})"),
        );
    }
    let due = table.next_inspection_due(a, s);
    if c.today >= due {
        refuse(
            Rule::InspectionOverdue,
            format!("超期未检：下次检验日期 {due} 已到"),
            format!("overdue for periodic inspection: next inspection was due {due}"),
        );
    }
    if let Some((life, extension)) = table.life(a) {
        let end = a.manufactured.plus_years(life as i32);
        // The one-time extension needs a passed inspection within the last year of life.
        let extended = extension > 0 && s.last_passed_inspection.is_some_and(|d| d >= end.plus_years(-1));
        let limit = if extended { end.plus_years(extension as i32) } else { end };
        if c.today >= limit {
            refuse(
                Rule::PastDesignLife,
                format!("超过设计使用年限：{} 制造，使用年限至 {limit}", a.manufactured),
                format!("past design service life: made {}, usable until {limit}", a.manufactured),
            );
        }
    }
    if let Some(limit) = table.fill_count_limit(a.variety)
        && s.fill_count >= limit
    {
        refuse(
            Rule::FillCountLimit,
            format!("超过充装次数：已充装 {} 次，上限 {limit} 次", s.fill_count),
            format!("fill-count limit reached: {} fills, limit {limit}", s.fill_count),
        );
    }
    let own = a.owner == c.station_enterprise && matches!(a.property, PropertyKind::Own | PropertyKind::Entrusted);
    if !own {
        refuse(
            Rule::NotOwnCylinder,
            format!("非本单位自有或托管气瓶（产权单位 {}，{}），禁止充装", a.owner, a.property.zh()),
            format!("not this enterprise's own or entrusted cylinder (owner {}, {})", a.owner, a.property.code()),
        );
    }
    if let Some(m) = c.medium
        && m != a.medium
    {
        refuse(
            Rule::MediumMismatch,
            format!("介质不符：气瓶介质为{}，本次充装{}", a.medium.zh(), m.zh()),
            format!("medium mismatch: cylinder is for {}, filling {}", a.medium.code(), m.code()),
        );
    }
    if a.medium.is_liquefied() {
        if a.tare_kg.is_none() {
            refuse(Rule::TareUnknown, "皮重不清，禁止充装".into(), "tare weight unknown".into());
        }
        match (c.filled_mass_kg, table.max_fill_kg(a)) {
            (Some(mass), Some(max)) if mass > max + 1e-9 => refuse(
                Rule::Overfill,
                format!("超装：充装量 {mass:.2} kg 超过最大充装量 {max:.2} kg"),
                format!("overfill: {mass:.2} kg exceeds the maximum fill of {max:.2} kg"),
            ),
            (Some(_), None) => refuse(
                Rule::Overfill,
                "最大充装量未知（无额定充装量且无充装系数），禁止充装".into(),
                "maximum fill unknown (no rated fill and no filling ratio)".into(),
            ),
            _ => {}
        }
    }
    if !s.regulator_holds.is_empty() {
        let findings: Vec<&str> = s.regulator_holds.keys().map(String::as_str).collect();
        refuse(
            Rule::RegulatorHold,
            format!("监管查封：{}", findings.join("、")),
            format!("held by a regulator finding: {}", findings.join(", ")),
        );
    }
    let interval = table.interval_years(a.variety, a.medium) as i32;
    let last_use =
        s.last_activity_ms.and_then(|ms| chrono::DateTime::from_timestamp_millis(ms).map(|t| Day(t.date_naive())));
    let active_since = match (last_use, s.last_inspection) {
        (Some(u), Some(i)) => Some(u.max(i)),
        (u, i) => u.or(i),
    };
    if let Some(since) = active_since
        && c.today >= since.plus_years(interval)
    {
        refuse(
            Rule::OutOfServiceTooLong,
            format!("停用超过一个检验周期（自 {since} 起），须重新检验"),
            format!("out of service longer than one inspection interval (since {since}), re-inspect first"),
        );
    }
    out
}

#[cfg(test)]
mod tests;
