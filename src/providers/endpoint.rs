//! Endpoint safety: by default rotor refuses provider endpoints that resolve to
//! loopback, private, link-local or otherwise internal addresses, so that a tenant
//! cannot use the operator to reach services inside the cluster network.
//! `rotor run --allow-private-endpoints` lifts it.

use super::ProviderError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `ip` is an address a tenant must not reach through rotor.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v6(v6: Ipv6Addr) -> bool {
    let seg = v6.segments();
    let first = seg[0];
    let v4_at = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d (which covers :: and ::1).
    if let Some(v4) = v6.to_ipv4() {
        return is_internal_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96 reaches the embedded IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(v4_at(seg[6], seg[7]));
    }
    // 6to4 2002:a.b.c.d::/48 reaches the embedded IPv4 relay.
    if first == 0x2002 {
        return is_internal_v4(v4_at(seg[1], seg[2]));
    }
    // Teredo 2001:0::/32: server IPv4 in bits 32..64, client IPv4 inverted in the last 32.
    if first == 0x2001 && seg[1] == 0 {
        return is_internal_v4(v4_at(seg[2], seg[3])) || is_internal_v4(v4_at(!seg[6], !seg[7]));
    }
    v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (first == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed inside)
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0
        || a >= 240 // reserved 240.0.0.0/4
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
}

/// An address block an operator allows despite it being internal
/// (`--allow-private-cidr 10.20.0.0/16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            // An IPv4-mapped IPv6 address is the IPv4 address.
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(v4.into())),
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').unwrap_or((s, ""));
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            max
        } else {
            len.trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?
        };
        Ok(Self { net, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// Which internal addresses rotor may reach.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// `--allow-private-endpoints`: every address.
    pub allow_private: bool,
    /// `--allow-private-cidr`: these blocks.
    pub allowed: Vec<Cidr>,
}

impl Guard {
    /// Whether rotor may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || !is_internal(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }
}

/// Resolves `host:port`, keeping only the addresses `guard` permits.
pub async fn resolve_guarded(
    host: &str,
    port: u16,
    guard: &Guard,
) -> Result<Vec<SocketAddr>, ProviderError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ProviderError::Unavailable(format!("cannot resolve {host}: {e}")))?
        .collect();
    let allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| guard.permits(a.ip()))
        .collect();
    if allowed.is_empty() && !addrs.is_empty() {
        return Err(refused(host));
    }
    if allowed.is_empty() {
        return Err(ProviderError::Unavailable(format!("{host} has no address")));
    }
    Ok(allowed)
}

pub fn refused(host: &str) -> ProviderError {
    ProviderError::InvalidConfig(format!(
        "endpoint {host} resolves to a loopback, private or link-local address, which rotor refuses by default (operators can allow it with --allow-private-endpoints or --allow-private-cidr)"
    ))
}

/// A reqwest DNS resolver applying the same rule, so that a name cannot re-resolve
/// to an internal address between the check and the connection.
pub struct GuardedResolver {
    pub guard: Guard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let addrs = resolve_guarded(name.as_str(), 0, &guard).await.map_err(
                |e| -> Box<dyn std::error::Error + Send + Sync> { e.to_string().into() },
            )?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::8.8.8.8",
            "2002:a9fe:a9fe::1",
            "2002:0a00:0001::",
            "2001:0:a9fe:a9fe::1",
            "2001:0:0808:0808:0:0:f5ff:fffe",
            "fec0::1",
            "240.0.0.1",
            "198.18.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "2001:0:0808:0808:0:0:f7f7:f7f7",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_names_are_refused_unless_allowed() {
        let guard = |allow_private| Guard {
            allow_private,
            allowed: Vec::new(),
        };
        let err = resolve_guarded("127.0.0.1", 80, &guard(false))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("--allow-private-endpoints"),
            "{err}"
        );
        assert!(resolve_guarded("127.0.0.1", 80, &guard(true)).await.is_ok());
        let only_one = Guard {
            allow_private: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        };
        assert!(resolve_guarded("127.0.0.1", 80, &only_one).await.is_ok());
        assert!(resolve_guarded("127.0.0.2", 80, &only_one).await.is_err());
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.20.0.0/16".parse().unwrap();
        assert!(c.contains("10.20.3.4".parse().unwrap()));
        assert!(c.contains("::ffff:10.20.3.4".parse().unwrap()));
        assert!(!c.contains("10.21.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("169.254.169.254".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
