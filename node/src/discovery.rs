//! mDNS advertising of the node: `_cylinder-node._tcp.local.` with TXT records for the
//! station name, the enterprise code and the API version.

use std::net::{IpAddr, Ipv4Addr};

use handheld_proto::discovery::{MdnsInterfaces, daemon};
use handheld_proto::{API_VERSION, SERVICE_TYPE};
use mdns_sd::{ServiceDaemon, ServiceInfo};

/// A running advertisement; dropping it does not stop it, call [`Advertiser::stop`].
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser").field("fullname", &self.fullname).finish_non_exhaustive()
    }
}

impl Advertiser {
    pub fn stop(self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// Advertises `port` on `interfaces`; `Ok(None)` when mDNS is off.
pub fn advertise(
    interfaces: &MdnsInterfaces,
    instance: &str,
    station: &str,
    enterprise: &str,
    port: u16,
    bound_ip: IpAddr,
) -> Result<Option<Advertiser>, String> {
    let Some(d) = daemon(interfaces)? else {
        return Ok(None);
    };
    let properties = [("station", station), ("enterprise", enterprise), ("api", API_VERSION)];
    let host = format!("{instance}.local.");
    let info = if bound_ip.is_unspecified() {
        ServiceInfo::new(SERVICE_TYPE, instance, &host, "", port, &properties[..]).map(|i| i.enable_addr_auto())
    } else {
        ServiceInfo::new(SERVICE_TYPE, instance, &host, bound_ip, port, &properties[..])
    }
    .map_err(|e| format!("mDNS service info: {e}"))?;
    // On loopback, advertise the loopback address so a handheld on the same host connects.
    let info =
        if matches!(interfaces, MdnsInterfaces::Only(n) if n.iter().all(|n| n == "lo")) && bound_ip.is_unspecified() {
            ServiceInfo::new(SERVICE_TYPE, instance, &host, IpAddr::V4(Ipv4Addr::LOCALHOST), port, &properties[..])
                .map_err(|e| format!("mDNS service info: {e}"))?
        } else {
            info
        };
    let fullname = info.get_fullname().to_owned();
    d.register(info).map_err(|e| format!("mDNS register: {e}"))?;
    Ok(Some(Advertiser { daemon: d, fullname }))
}
