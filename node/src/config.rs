//! Configuration: a TOML file (`RawConfig`) validated into `Settings` before anything
//! starts. Command-line flags of `node run` override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use handheld_proto::discovery::MdnsInterfaces;
use schema::codes::{EnterpriseCode, RegionCode};
use schema::rules::RuleTable;
use serde::Deserialize;

/// The configuration file as written by an operator. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Station name shown to handhelds and advertised over mDNS.
    pub station_name: String,
    /// Enterprise code of the enterprise this station fills for.
    pub enterprise: String,
    /// Administrative region code, used to complete 10-digit codes.
    pub region: String,
    /// Directory holding `node.redb`.
    pub data_dir: PathBuf,
    /// HTTP listen address of the handheld API.
    pub http: String,
    /// mDNS interfaces: `all`, `off`, or a comma-separated list of names.
    pub mdns: String,
    /// Optional enterprise rule-override file (same shape as schema/rules/default.toml).
    pub rules_file: Option<PathBuf>,
    /// Offset of local time from UTC in minutes (Asia/Shanghai: 480).
    pub utc_offset_minutes: i32,
    /// How long a login token is valid, in hours.
    pub token_ttl_hours: u32,
    /// redb page cache in MiB; unset: 48 for a station or laptop, 128 for a head office
    /// (which takes in every station's data: a small cache makes bulk ingest evict and
    /// re-read pages; see `Role::default_cache_bytes`).
    pub cache_mib: Option<usize>,
    /// Save redb's allocator state with every commit: recovery after a crash takes
    /// milliseconds instead of a walk over the whole file, commits cost more.
    pub quick_repair: bool,
    /// Largest accepted request body in KiB.
    pub body_max_kib: usize,
    /// `station` (replicates to `upstream`) or `head-office` (accepts stations on `quic`).
    pub role: String,
    /// The head office's QUIC address, for a station.
    pub upstream: Option<String>,
    /// Where a head office accepts replication connections.
    pub quic: String,
    /// A long push (a first upload, a week offline) marks its progress every this many
    /// KiB of items; a link cut part way resends only what came after the last mark the
    /// peer held durably. Unset: 65,536 (64 MiB, one merged put at the receiver); lower
    /// on links that drop often (each mark costs the receiver one commit).
    pub sync_mark_kib: Option<u64>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            station_name: "历下充装站".into(),
            enterprise: "3701020001".into(),
            region: "370102".into(),
            data_dir: PathBuf::from("data"),
            http: "0.0.0.0:8080".into(),
            mdns: "all".into(),
            rules_file: None,
            utc_offset_minutes: 480,
            token_ttl_hours: 12,
            cache_mib: None,
            quick_repair: false,
            body_max_kib: 256,
            role: "station".into(),
            upstream: None,
            quic: "0.0.0.0:7443".into(),
            sync_mark_kib: None,
        }
    }
}

/// Validated settings; the running node never sees an unchecked value.
#[derive(Debug, Clone)]
pub struct Settings {
    pub station_name: String,
    pub enterprise: EnterpriseCode,
    pub region: RegionCode,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub mdns: MdnsInterfaces,
    pub rules: RuleTable,
    pub utc_offset: chrono::FixedOffset,
    pub token_ttl_hours: u32,
    pub cache_bytes: Option<usize>,
    pub quick_repair: bool,
    pub body_max_bytes: usize,
    pub role: Role,
    pub upstream: Option<SocketAddr>,
    pub quic: SocketAddr,
    /// Bytes of items between a long push's progress marks (`sync::session::SessionOptions::mark_bytes`).
    pub sync_mark_bytes: u64,
}

/// What a node is in the replication topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Station,
    HeadOffice,
    /// A regulator's laptop: pulls the data, records findings only.
    Regulator,
}

impl Role {
    /// The redb page cache when the config sets none: a head office takes in every
    /// station's data, and a small cache makes bulk ingest evict and re-read pages. Its
    /// tables outgrow any cache a small box can give (a random-keyed id table of
    /// gigabytes), so the cache buys little speed and costs its size in RSS: twenty
    /// stations of 5,000 cylinders (`net_bench --stations 20 --cylinders 5000`) took
    /// 75.0 and 85.0 s with 128 MiB against 70.2–77.4 s with 256 MiB, and peaked at 551
    /// and 636 MiB against 684–834 MiB.
    pub fn default_cache_bytes(self) -> usize {
        match self {
            Role::HeadOffice => 128 << 20,
            Role::Station | Role::Regulator => 48 << 20,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "station" => Ok(Role::Station),
            "head-office" => Ok(Role::HeadOffice),
            "regulator" => Ok(Role::Regulator),
            other => Err(format!("role must be station, head-office or regulator, got {other:?}")),
        }
    }
}

impl RawConfig {
    pub fn load(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    pub fn validate(self) -> anyhow::Result<Settings> {
        let enterprise: EnterpriseCode = self.enterprise.parse().context("config `enterprise`")?;
        let region: RegionCode = self.region.parse().context("config `region`")?;
        let http: SocketAddr =
            self.http.parse().with_context(|| format!("config `http`: {:?} is not ip:port", self.http))?;
        let mdns: MdnsInterfaces = self.mdns.parse().map_err(anyhow::Error::msg).context("config `mdns`")?;
        let mut rules = RuleTable::embedded();
        if let Some(file) = &self.rules_file {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("reading rules file {}", file.display()))?;
            rules = rules.with_overrides(&text).with_context(|| format!("rules file {}", file.display()))?;
        }
        let utc_offset = chrono::FixedOffset::east_opt(self.utc_offset_minutes * 60)
            .context("config `utc_offset_minutes` out of range")?;
        if self.token_ttl_hours == 0 || self.token_ttl_hours > 24 * 31 {
            bail!("config `token_ttl_hours` must be 1..=744");
        }
        if self.cache_mib.is_some_and(|c| !(4..=4096).contains(&c)) {
            bail!("config `cache_mib` must be 4..=4096");
        }
        if !(16..=65536).contains(&self.body_max_kib) {
            bail!("config `body_max_kib` must be 16..=65536");
        }
        let role: Role = self.role.parse().map_err(anyhow::Error::msg).context("config `role`")?;
        let upstream = match &self.upstream {
            Some(u) => Some(u.parse().with_context(|| format!("config `upstream`: {u:?} is not ip:port"))?),
            None => None,
        };
        let quic: SocketAddr =
            self.quic.parse().with_context(|| format!("config `quic`: {:?} is not ip:port", self.quic))?;
        if self.sync_mark_kib.is_some_and(|k| !(16..=1 << 20).contains(&k)) {
            bail!("config `sync_mark_kib` must be 16..=1048576");
        }
        if self.station_name.trim().is_empty() {
            bail!("config `station_name` must not be empty");
        }
        Ok(Settings {
            station_name: self.station_name,
            enterprise,
            region,
            data_dir: self.data_dir,
            http,
            mdns,
            rules,
            utc_offset,
            token_ttl_hours: self.token_ttl_hours,
            cache_bytes: self.cache_mib.map(|c| c << 20),
            quick_repair: self.quick_repair,
            body_max_bytes: self.body_max_kib << 10,
            role,
            upstream,
            quic,
            sync_mark_bytes: self.sync_mark_kib.map_or(crate::replication::MERGE_ITEM_BYTES as u64, |k| k << 10),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let text = include_str!("../config.example.toml");
        let raw: RawConfig = toml::from_str(text).unwrap();
        let s = raw.validate().unwrap();
        assert_eq!(s.enterprise.as_str(), "3701020001");
        assert_eq!(s.mdns, MdnsInterfaces::All);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_name() {
        let raw = RawConfig { http: "localhost".into(), ..RawConfig::default() };
        assert!(format!("{:#}", raw.validate().unwrap_err()).contains("config `http`"));
        let raw = RawConfig { enterprise: "12".into(), ..RawConfig::default() };
        assert!(format!("{:#}", raw.validate().unwrap_err()).contains("config `enterprise`"));
        assert!(toml::from_str::<RawConfig>("colour = 1").is_err());
        let raw = RawConfig { sync_mark_kib: Some(8), ..RawConfig::default() };
        assert!(format!("{:#}", raw.validate().unwrap_err()).contains("config `sync_mark_kib`"));
        let raw = RawConfig { sync_mark_kib: Some(256), ..RawConfig::default() };
        assert_eq!(raw.validate().unwrap().sync_mark_bytes, 256 << 10);
    }
}
