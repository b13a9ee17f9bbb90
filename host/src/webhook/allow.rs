//! Where a pipeline's deliveries may come from (`allow-from`): networks
//! written as `192.30.252.0/22`, `2620:112:3000::/44` or one address. A
//! second line behind the signature, for senders that publish the
//! addresses they send from (GitHub, Stripe, Shopify), and a first one for
//! those whose token or login is all that proves them.

use std::net::IpAddr;

use serde::Deserialize;

/// An address and how many of its leading bits a sender's must share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `peer` is in it. An IPv4 peer on an IPv6 socket
    /// (`::ffff:a.b.c.d`) is taken as the IPv4 address it is.
    pub fn contains(&self, peer: IpAddr) -> bool {
        match (self.addr, peer.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(peer)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(peer)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(peer), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// `value`'s leading `prefix` bits of `width`.
fn masked(value: u128, width: u32, prefix: u8) -> u128 {
    match u32::from(prefix) {
        0 => 0,
        bits => value >> (width - bits.min(width)),
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{text:?} is not an address or a network such as \"192.30.252.0/22\"")
        })?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| {
                    format!("{text:?}: the prefix must be a number from 0 to {width}")
                })?,
        };
        Ok(Network { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        String::deserialize(d)?
            .trim()
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> Network {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_network_holds_the_addresses_its_prefix_covers() {
        let github = network("192.30.252.0/22");
        assert!(github.contains(ip("192.30.252.1")));
        assert!(github.contains(ip("192.30.255.255")));
        assert!(!github.contains(ip("192.31.0.1")));
        assert!(!github.contains(ip("192.30.251.255")));
        // The same address on an IPv6 socket.
        assert!(github.contains(ip("::ffff:192.30.253.7")));
        let v6 = network("2620:112:3000::/44");
        assert!(v6.contains(ip("2620:112:300f:ffff::1")));
        assert!(!v6.contains(ip("2620:112:3010::1")));
        assert!(!v6.contains(ip("192.30.252.1")));
        let one = network("203.0.113.7");
        assert_eq!(one.to_string(), "203.0.113.7/32");
        assert!(one.contains(ip("203.0.113.7")) && !one.contains(ip("203.0.113.8")));
        assert!(network("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(network("::/0").contains(ip("::1")));
        for wrong in ["192.30.252.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(wrong.parse::<Network>().is_err(), "{wrong}");
        }
    }
}
