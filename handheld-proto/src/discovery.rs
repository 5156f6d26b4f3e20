//! Finding nodes on the station LAN over mDNS (`_cylinder-node._tcp.local.`).
//!
//! Interfaces are chosen explicitly: `all` for a real handheld, or a list of interface
//! names (`lo` in tests on a shared machine, so no announcement or query leaves it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};

use crate::api::SERVICE_TYPE;

/// Which interfaces mDNS may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnsInterfaces {
    All,
    Off,
    Only(Vec<String>),
}

impl std::str::FromStr for MdnsInterfaces {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(MdnsInterfaces::All),
            "off" => Ok(MdnsInterfaces::Off),
            "" => Err("expected all, off or a comma-separated list of interface names".into()),
            list => {
                let names: Vec<String> = list.split(',').map(|n| n.trim().to_owned()).collect();
                if names.iter().any(|n| n.is_empty() || n.contains(char::is_whitespace)) {
                    return Err(format!("bad interface list {list:?}"));
                }
                Ok(MdnsInterfaces::Only(names))
            }
        }
    }
}

/// Starts an mDNS daemon restricted to `interfaces`; `None` when mDNS is off.
pub fn daemon(interfaces: &MdnsInterfaces) -> Result<Option<ServiceDaemon>, String> {
    let names = match interfaces {
        MdnsInterfaces::Off => return Ok(None),
        MdnsInterfaces::All => None,
        MdnsInterfaces::Only(names) => Some(names),
    };
    let d = ServiceDaemon::new().map_err(|e| format!("mDNS daemon: {e}"))?;
    if let Some(names) = names {
        // Commands run in order on the daemon thread, so nothing is sent on other
        // interfaces: registration and browsing are queued after this.
        d.disable_interface(IfKind::All).map_err(|e| format!("mDNS: {e}"))?;
        for n in names {
            d.enable_interface(IfKind::Name(n.clone())).map_err(|e| format!("mDNS: {e}"))?;
        }
        if names.iter().any(|n| n == "lo") {
            d.enable_interface(IfKind::LoopbackV4).map_err(|e| format!("mDNS: {e}"))?;
        }
    }
    Ok(Some(d))
}

/// A node found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundNode {
    pub instance: String,
    /// `http://ip:port`.
    pub url: String,
    pub station: String,
    pub enterprise: String,
    pub api_version: String,
}

/// Browses for `timeout` and returns every node that answered. Once the first node
/// answers, listens only 300 ms more for others.
pub fn discover(interfaces: &MdnsInterfaces, timeout: Duration) -> Result<Vec<FoundNode>, String> {
    let Some(d) = daemon(interfaces)? else {
        return Err("mDNS is off".into());
    };
    let rx = d.browse(SERVICE_TYPE).map_err(|e| format!("mDNS browse: {e}"))?;
    let mut deadline = Instant::now() + timeout;
    let mut found = BTreeMap::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(info)) => {
                if let Some(node) = found_node(&info) {
                    if found.is_empty() {
                        deadline = deadline.min(Instant::now() + Duration::from_millis(300));
                    }
                    found.insert(node.instance.clone(), node);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = d.shutdown();
    Ok(found.into_values().collect())
}

/// Reads a resolved service; IPv4 addresses are preferred.
fn found_node(info: &mdns_sd::ResolvedService) -> Option<FoundNode> {
    let mut addrs: Vec<std::net::IpAddr> = info.addresses.iter().map(|a| a.to_ip_addr()).collect();
    addrs.sort_by_key(|a| (!a.is_ipv4(), *a));
    let ip = addrs.first()?;
    let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let txt = |k: &str| info.txt_properties.get_property_val_str(k).unwrap_or_default().to_owned();
    Some(FoundNode {
        instance: info.fullname.clone(),
        url: format!("http://{host}:{}", info.port),
        station: txt("station"),
        enterprise: txt("enterprise"),
        api_version: txt("api"),
    })
}
