//! Which network addresses a webhook may reach: the rule the service applies when a
//! subscription names an endpoint, and again when a delivery connects (DNS can change between
//! the two).
//!
//! Webhooks go to agency systems. An endpoint that is, or resolves to, an address of the
//! service's own host or network (loopback, private, link-local with the cloud metadata service
//! at 169.254.169.254, the shared CGNAT space with Alibaba Cloud's metadata service at
//! 100.100.100.200, …) would let whoever may create a subscription make the service send
//! requests into its own network (server-side request forgery). Those addresses are refused
//! unless the operator lists the host, the address or its network in the allow-list
//! (`notification.webhook_allowed_hosts`).
//!
//! Pure: the addresses are given; looking names up is the webhook adapter's business.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest host name accepted in the allow-list, in bytes.
pub const HOST_NAME_LEN_MAX: usize = 253;

/// A range of addresses webhooks may not reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForbiddenRange {
    /// `0.0.0.0` and `::`.
    Unspecified,
    /// The rest of `0.0.0.0/8`, "this network".
    ThisNetwork,
    /// `127.0.0.0/8` and `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12` and `192.168.0.0/16` (RFC 1918).
    Private,
    /// `169.254.0.0/16`, with the cloud metadata service at `169.254.169.254`, and
    /// `fe80::/10`.
    LinkLocal,
    /// `100.64.0.0/10`, the shared address space of carrier-grade NAT (RFC 6598), with
    /// Alibaba Cloud's metadata service at `100.100.100.200`.
    Shared,
    /// `192.0.0.0/24`, the IETF protocol assignments.
    ProtocolAssignments,
    /// `198.18.0.0/15`, for benchmarking.
    Benchmarking,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32` and `3fff::/20`.
    Documentation,
    /// `224.0.0.0/4` and `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4`, the deprecated IPv4-compatible `::/96` and site-local `fec0::/10`.
    Reserved,
    /// `fc00::/7`, unique local, with the AWS metadata service at `fd00:ec2::254`.
    UniqueLocal,
    /// `64:ff9b:1::/48`, NAT64 for local use.
    LocalNat64,
}

impl ForbiddenRange {
    /// A short name of the range for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ForbiddenRange::Unspecified => "unspecified",
            ForbiddenRange::ThisNetwork => "this network, 0.0.0.0/8",
            ForbiddenRange::Loopback => "loopback",
            ForbiddenRange::Private => "private, RFC 1918",
            ForbiddenRange::LinkLocal => "link-local",
            ForbiddenRange::Shared => "shared, 100.64.0.0/10",
            ForbiddenRange::ProtocolAssignments => "IETF protocol assignments, 192.0.0.0/24",
            ForbiddenRange::Benchmarking => "benchmarking, 198.18.0.0/15",
            ForbiddenRange::Documentation => "documentation",
            ForbiddenRange::Multicast => "multicast",
            ForbiddenRange::Broadcast => "broadcast",
            ForbiddenRange::Reserved => "reserved",
            ForbiddenRange::UniqueLocal => "unique local",
            ForbiddenRange::LocalNat64 => "local-use NAT64",
        }
    }
}

impl fmt::Display for ForbiddenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The range `ip` lies in when webhooks may not reach it; `None` for an address they may
/// reach. An IPv4 address inside IPv6 (mapped `::ffff:a.b.c.d`, translated
/// `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged as that IPv4
/// address.
pub fn forbidden_range(ip: IpAddr) -> Option<ForbiddenRange> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<ForbiddenRange> {
    let [a, b, c, _] = ip.octets();
    let range = if ip.is_unspecified() {
        ForbiddenRange::Unspecified
    } else if a == 0 {
        ForbiddenRange::ThisNetwork
    } else if ip.is_loopback() {
        ForbiddenRange::Loopback
    } else if ip.is_private() {
        ForbiddenRange::Private
    } else if ip.is_link_local() {
        ForbiddenRange::LinkLocal
    } else if a == 100 && (b & 0xc0) == 64 {
        ForbiddenRange::Shared
    } else if a == 192 && b == 0 && c == 0 {
        ForbiddenRange::ProtocolAssignments
    } else if a == 198 && (b & 0xfe) == 18 {
        ForbiddenRange::Benchmarking
    } else if ip.is_documentation() {
        ForbiddenRange::Documentation
    } else if ip.is_multicast() {
        ForbiddenRange::Multicast
    } else if ip.is_broadcast() {
        ForbiddenRange::Broadcast
    } else if a >= 240 {
        ForbiddenRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

/// The IPv4 address held in two 16-bit groups of an IPv6 address.
fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<ForbiddenRange> {
    let s = ip.segments();
    let range = if ip.is_unspecified() {
        ForbiddenRange::Unspecified
    } else if ip.is_loopback() {
        ForbiddenRange::Loopback
    } else if ip.is_multicast() {
        ForbiddenRange::Multicast
    } else if ip.is_unique_local() {
        ForbiddenRange::UniqueLocal
    } else if ip.is_unicast_link_local() {
        ForbiddenRange::LinkLocal
    } else if (s[0] & 0xffc0) == 0xfec0 {
        // Site-local, deprecated but still routed inside some networks.
        ForbiddenRange::Reserved
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && (s[1] & 0xf000) == 0) {
        // 2001:db8::/32 and 3fff::/20.
        ForbiddenRange::Documentation
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: the gateway connects to the IPv4 address in the last 32 bits.
        return forbidden_v4(embedded_v4(s[6], s[7]));
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001 {
        ForbiddenRange::LocalNat64
    } else if s[0] == 0x2002 {
        // 6to4: the relay reaches the IPv4 address in bits 16 to 48.
        return forbidden_v4(embedded_v4(s[1], s[2]));
    } else if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        // IPv4-translated (SIIT), ::ffff:0:a.b.c.d.
        return forbidden_v4(embedded_v4(s[6], s[7]));
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible, ::a.b.c.d, deprecated (`::` and `::1` are judged above).
        ForbiddenRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

/// An entry of the allow-list that is neither a host name, an IP address nor a CIDR network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAllowEntry {
    /// The entry as given.
    pub entry: String,
    /// What is accepted.
    pub why: &'static str,
}

impl fmt::Display for BadAllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.entry, self.why)
    }
}

impl std::error::Error for BadAllowEntry {}

/// An IP network: an address and the length of its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u32,
}

impl Network {
    /// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address (brackets allowed) or `v6/n`.
    fn parse(text: &str) -> Option<Network> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address = address
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(address);
        let base: IpAddr = address.parse().ok()?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix.parse::<u32>().ok().filter(|n| *n <= bits)?,
        };
        // An IPv4-mapped network is kept as the IPv4 network it maps: candidates are
        // canonical (mapped addresses become IPv4) before they are compared.
        Some(match (base, base.to_canonical()) {
            (IpAddr::V6(_), IpAddr::V4(v4)) if prefix >= 96 => Network {
                base: IpAddr::V4(v4),
                prefix: prefix - 96,
            },
            _ => Network { base, prefix },
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                base.to_bits() & mask == ip.to_bits() & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                base.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }
}

/// A host name as compared: without IPv6 brackets or a trailing dot, in lower case.
fn normalized_host(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `name` (normalized) is a DNS host name: labels of letters, digits, `-` and `_`.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= HOST_NAME_LEN_MAX
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The operator's exceptions to the forbidden ranges: host names (exact, case-insensitive),
/// IP addresses and CIDR networks that webhooks may reach even when the addresses are
/// loopback, private or otherwise forbidden. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
    networks: Vec<Network>,
}

impl AllowList {
    /// Parses the entries of `notification.webhook_allowed_hosts`: each a host name
    /// (`hooks.internal`), an IP address (`127.0.0.1`, `::1`) or a CIDR network
    /// (`10.20.0.0/16`, `fd00::/8`). `Err` names the first entry that is none of these.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, BadAllowEntry> {
        let mut list = AllowList::default();
        for entry in entries {
            let text = entry.as_ref().trim();
            if let Some(network) = Network::parse(text) {
                list.networks.push(network);
                continue;
            }
            let name = normalized_host(text);
            if text.contains('/') || !is_host_name(&name) {
                return Err(BadAllowEntry {
                    entry: entry.as_ref().to_owned(),
                    why: "is not a host name, an IP address or a CIDR network such as 10.0.0.0/8",
                });
            }
            list.hosts.push(name);
        }
        Ok(list)
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.networks.is_empty()
    }

    /// Whether the host name `host` is listed (IP addresses are judged by
    /// [`AllowList::allows_address`]).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalized_host(host);
        self.hosts.contains(&host)
    }

    /// Whether `ip` is a listed address or in a listed network.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|network| network.contains(ip))
    }
}

/// Whether a webhook to `host` may connect to `ip`: yes when the operator lists the host, the
/// address or a network holding it, otherwise only when the address is in no forbidden range
/// (`Err` names the range).
pub fn check_address(allow: &AllowList, host: &str, ip: IpAddr) -> Result<(), ForbiddenRange> {
    if allow.allows_host(host) || allow.allows_address(ip) {
        return Ok(());
    }
    match forbidden_range(ip) {
        Some(range) => Err(range),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> Option<ForbiddenRange> {
        forbidden_range(text.parse().expect("an IP address"))
    }

    #[test]
    fn every_internal_and_special_range_is_forbidden() {
        // Proves each range the issue names is refused, at its edges, in IPv4 and IPv6.
        use ForbiddenRange as R;
        let cases: &[(&str, R)] = &[
            ("0.0.0.0", R::Unspecified),
            ("::", R::Unspecified),
            ("0.1.2.3", R::ThisNetwork),
            ("0.255.255.255", R::ThisNetwork),
            ("127.0.0.1", R::Loopback),
            ("127.255.255.254", R::Loopback),
            ("::1", R::Loopback),
            ("10.0.0.1", R::Private),
            ("10.255.255.255", R::Private),
            ("172.16.0.1", R::Private),
            ("172.31.255.255", R::Private),
            ("192.168.1.1", R::Private),
            ("169.254.169.254", R::LinkLocal),
            ("169.254.0.1", R::LinkLocal),
            ("fe80::1", R::LinkLocal),
            ("febf:ffff::1", R::LinkLocal),
            ("100.64.0.0", R::Shared),
            ("100.100.100.200", R::Shared),
            ("100.127.255.255", R::Shared),
            ("192.0.0.1", R::ProtocolAssignments),
            ("192.0.0.255", R::ProtocolAssignments),
            ("198.18.0.1", R::Benchmarking),
            ("198.19.255.255", R::Benchmarking),
            ("192.0.2.1", R::Documentation),
            ("198.51.100.7", R::Documentation),
            ("203.0.113.9", R::Documentation),
            ("2001:db8::1", R::Documentation),
            ("3fff:fff::1", R::Documentation),
            ("224.0.0.1", R::Multicast),
            ("239.255.255.250", R::Multicast),
            ("ff02::1", R::Multicast),
            ("255.255.255.255", R::Broadcast),
            ("240.0.0.1", R::Reserved),
            ("254.1.2.3", R::Reserved),
            ("fec0::1", R::Reserved),
            ("::7f00:1", R::Reserved),
            ("fc00::1", R::UniqueLocal),
            ("fd00:ec2::254", R::UniqueLocal),
            ("64:ff9b:1::a00:1", R::LocalNat64),
        ];
        for (address, expected) in cases {
            assert_eq!(range(address), Some(*expected), "{address}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_as_the_ipv4_address() {
        // Proves the mapped, translated, NAT64 and 6to4 forms cannot smuggle a forbidden IPv4
        // address, and do not forbid a public one.
        use ForbiddenRange as R;
        let cases: &[(&str, Option<R>)] = &[
            ("::ffff:127.0.0.1", Some(R::Loopback)),
            ("::ffff:169.254.169.254", Some(R::LinkLocal)),
            ("::ffff:10.0.0.1", Some(R::Private)),
            ("::ffff:100.100.100.200", Some(R::Shared)),
            ("::ffff:0:a00:1", Some(R::Private)),
            ("64:ff9b::7f00:1", Some(R::Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(R::LinkLocal)),
            ("64:ff9b::6464:64c8", Some(R::Shared)),
            ("2002:7f00:1::", Some(R::Loopback)),
            ("2002:a00:1::1", Some(R::Private)),
            ("2002:a9fe:a9fe::", Some(R::LinkLocal)),
            ("2002:c612:1::", Some(R::Benchmarking)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
        ];
        for (address, expected) in cases {
            assert_eq!(range(address), *expected, "{address}");
        }
    }

    #[test]
    fn public_addresses_next_to_the_ranges_are_allowed() {
        // Proves the ranges end where they should: their neighbours are reachable.
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2400:3200::1",
            "2001:db9::1",
            "3fff:1000::1",
            "64:ff9b:2::1",
        ] {
            assert_eq!(range(address), None, "{address}");
        }
    }

    #[test]
    fn the_allow_list_takes_names_addresses_and_networks() {
        // Proves the operator's entries are parsed, compared without case or trailing dot,
        // and that a listed name, address or network lifts the refusal.
        let list = AllowList::parse(&[
            "127.0.0.1",
            " 10.20.0.0/16 ",
            "Hooks.Internal.",
            "fd00::/8",
            "[::1]",
            "::ffff:192.168.0.0/112",
        ])
        .unwrap();
        assert!(!list.is_empty());
        assert!(list.allows_host("hooks.internal"));
        assert!(list.allows_host("HOOKS.internal."));
        assert!(!list.allows_host("other.internal"));
        for allowed in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.20.3.4",
            "fd00:ec2::254",
            "::1",
            "192.168.7.7",
        ] {
            assert!(list.allows_address(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in ["127.0.0.2", "10.21.0.1", "fc00::1", "192.169.0.1"] {
            assert!(!list.allows_address(refused.parse().unwrap()), "{refused}");
        }
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let other_loopback: IpAddr = "127.0.0.2".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        assert_eq!(check_address(&list, "anything.example", loopback), Ok(()));
        assert_eq!(check_address(&list, "hooks.internal", metadata), Ok(()));
        assert_eq!(
            check_address(&list, "anything.example", other_loopback),
            Err(ForbiddenRange::Loopback)
        );
        assert_eq!(
            check_address(&AllowList::default(), "x.example", metadata),
            Err(ForbiddenRange::LinkLocal)
        );
        assert_eq!(
            check_address(
                &AllowList::default(),
                "x.example",
                "93.184.215.14".parse().unwrap()
            ),
            Ok(())
        );
        let everything = AllowList::parse(&["0.0.0.0/0"]).unwrap();
        assert!(everything.allows_address(metadata));
        assert!(!everything.allows_address("::1".parse().unwrap()));
    }

    #[test]
    fn the_allow_list_refuses_what_is_neither_a_name_an_address_nor_a_network() {
        // Proves a typo in the setting is reported with the entry instead of being ignored.
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "1.2.3.4/x",
            "http://hooks.internal",
            "hooks.internal:8443",
            "two words",
            "a..b",
        ] {
            let error = AllowList::parse(&[bad]).unwrap_err();
            assert_eq!(error.entry, bad);
        }
    }
}
