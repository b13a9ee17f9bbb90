//! Which addresses a plugin may reach without naming them: public ones only.
//! Loopback, private, link-local (cloud metadata at 169.254.169.254 among
//! them), unique-local, shared, benchmarking, reserved, unspecified and
//! broadcast addresses are refused unless a grant names the address or the
//! host explicitly, and so are IPv6 addresses that carry one of them
//! (mapped, compatible, NAT64). The check runs on IP literals in every
//! spelling (the URL parser normalises `127.1`, `0x7f000001` and
//! `[::ffff:127.0.0.1]`) and on every address a name resolves to, in the
//! resolver the connection itself uses.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an ordinary public address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || first == 0
                || first >= 240
                || (first == 100 && (64..128).contains(&second))
                || (first == 198 && (18..20).contains(&second)))
        }
        IpAddr::V6(a) => {
            // An IPv4 address inside: mapped (`::ffff:a.b.c.d`), compatible
            // (`::a.b.c.d`), or behind NAT64's well-known prefix, which a
            // gateway turns back into that IPv4 address.
            let s = a.segments();
            if let Some(v4) = a.to_ipv4() {
                return is_public(IpAddr::V4(v4));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            let first = s[0];
            // NAT64's local-use prefix (64:ff9b:1::/48) maps in a way only
            // the network knows.
            if s[..3] == [0x64, 0xff9b, 1] {
                return false;
            }
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The resolver a plugin's connections use: a name resolves only to public
/// addresses, unless a grant names that host explicitly.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    /// Hosts (names or addresses) the grants name exactly.
    pub explicit: BTreeSet<String>,
}

/// Keeps the addresses `host` may use, or says why none is left.
pub fn filter(
    host: &str,
    explicit: &BTreeSet<String>,
    found: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    if explicit.contains(&host.to_ascii_lowercase()) {
        return Ok(found);
    }
    let refused: Vec<String> = found
        .iter()
        .filter(|a| !is_public(a.ip()))
        .map(|a| a.ip().to_string())
        .collect();
    let kept: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
    if kept.is_empty() {
        return Err(format!(
            "{host} resolves only to non-public addresses ({}): a grant must name the host explicitly to reach them",
            if refused.is_empty() {
                "none".to_string()
            } else {
                refused.join(", ")
            }
        ));
    }
    Ok(kept)
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let explicit = self.explicit.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = filter(&host, &explicit, found)
                .map_err(|m| -> Box<dyn std::error::Error + Send + Sync> { m.into() })?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_in_every_family() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::169.254.169.254",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::a00:1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::93.184.216.34",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_name_resolving_to_loopback_is_refused_unless_named_explicitly() {
        let loopback = vec!["127.0.0.1:0".parse().unwrap()];
        let err = filter("crm.internal", &BTreeSet::new(), loopback.clone()).unwrap_err();
        assert!(
            err.contains("127.0.0.1") && err.contains("name the host explicitly"),
            "{err}"
        );
        let named = BTreeSet::from(["crm.internal".to_string()]);
        assert_eq!(filter("crm.internal", &named, loopback).unwrap().len(), 1);
        let mixed = vec![
            "10.0.0.1:0".parse().unwrap(),
            "93.184.216.34:0".parse().unwrap(),
        ];
        assert_eq!(
            filter("x", &BTreeSet::new(), mixed).unwrap(),
            vec!["93.184.216.34:0".parse().unwrap()]
        );
    }
}
