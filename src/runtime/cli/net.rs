//! The options of packet tools (xdp, tc, sockfilter): which namespace, which packets. Every
//! filter here runs in the kernel (`struct tk_pkt_filter` in pkt.h, written into rodata).

use std::net::IpAddr;

use clap::{Args, ValueEnum};

use crate::error::Error;

/// At most this many `--port` values (TK_PKT_MAX_PORTS in pkt.h; checked against the generated
/// type where the filter is written).
pub const MAX_PORTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Sctp,
}

impl Proto {
    /// The IPPROTO_* number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmp6 => 58,
            Proto::Sctp => 132,
        }
    }
}

/// An address with a prefix length: `10.0.0.1`, `10.0.0.0/8`, `fd00::/64`.
/// The mask of a prefix length over 16 bytes: `prefix` leading one bits, then zeros.
pub fn prefix_mask(prefix: u8) -> [u8; 16] {
    std::array::from_fn(|i| {
        let keep = u32::from(prefix).saturating_sub(i as u32 * 8).min(8);
        if keep == 0 { 0 } else { 0xffu8 << (8 - keep) }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPrefix {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl HostPrefix {
    /// The address as 16 bytes (IPv4 in the first 4), with the bits past the prefix cleared.
    pub fn masked_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        match self.addr {
            IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
        }
        for (b, m) in out.iter_mut().zip(prefix_mask(self.prefix)) {
            *b &= m;
        }
        out
    }

    /// The prefix's mask, laid out as [`HostPrefix::masked_bytes`] lays out the address.
    pub fn mask_bytes(&self) -> [u8; 16] {
        prefix_mask(self.prefix)
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

pub fn parse_host(s: &str) -> Result<HostPrefix, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr =
        addr.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
            format!("`{s}` is not an IP address or prefix (e.g. 10.0.0.1, 10.0.0.0/8, fd00::1, fd00::/64)")
        })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("prefix length `{p}` of `{s}` must be a number from 0 to {max}")),
        },
    };
    Ok(HostPrefix { addr, prefix })
}

/// One port, 1-65535 (`--port 80`); lists come as `--port 80,443` through clap's delimiter.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range (1-65535)")),
        Err(_) => Err(format!("`{s}` is not a port number (1-65535)")),
    }
}

/// A port filter's values (`-L 80,443` arrives as two strings), at most `max`; `without` says
/// what to do instead of filtering, e.g. "watch without the port filter".
pub fn port_list(flag: &str, given: &[String], max: usize, without: &str) -> Result<Vec<u16>, Error> {
    if given.len() > max {
        return Err(Error::usage(
            format!("{flag} takes at most {max} ports, got {}", given.len()),
            Some(format!("{without} and select in the JSON output instead")),
        ));
    }
    given
        .iter()
        .map(|p| {
            parse_port(p)
                .map_err(|e| Error::usage(format!("{flag}: {e}"), Some(format!("e.g. {flag} 5201, or {flag} 80,443"))))
        })
        .collect()
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Packet options")]
pub struct NetArgs {
    /// Network namespace of the interface: a name (`ip netns`), a path (/proc/PID/ns/net) or a pid
    #[arg(long, value_name = "NAME|PATH|PID")]
    pub netns: Option<String>,

    /// IPv4 packets only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 packets only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only this transport protocol
    #[arg(long, value_enum, value_name = "PROTO")]
    pub proto: Option<Proto>,

    /// Only packets with this source or destination port (comma-separated, at most 8)
    #[arg(long = "port", value_name = "PORT", value_delimiter = ',', value_parser = parse_port)]
    pub ports: Vec<u16>,

    /// Only packets from or to this address or prefix (ADDR[/LEN])
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = parse_host, conflicts_with_all = ["src", "dst"])]
    pub host: Option<HostPrefix>,

    /// Only packets from this address or prefix
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = parse_host, conflicts_with = "dst")]
    pub src: Option<HostPrefix>,

    /// Only packets to this address or prefix
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = parse_host)]
    pub dst: Option<HostPrefix>,

    /// Write the matched packets to FILE in pcapng (`-` for stdout), as tcpdump -w; no rows
    /// are printed unless --print
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<std::path::PathBuf>,

    /// With -w: bytes of each packet to keep (tcpdump's -s; at most 32640 per packet)
    #[arg(short = 's', long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..), requires = "write")]
    pub snaplen: Option<u32>,

    /// With -w FILE: print the packets too
    #[arg(long, requires = "write")]
    pub print: bool,

    /// Only packets this tcpdump expression selects (man 7 pcap-filter), run in the kernel;
    /// several words are joined as tcpdump joins them: `tcp port 80 and not host 10.0.0.1`
    #[arg(value_name = "EXPRESSION", num_args = 0..)]
    pub expression: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_prefixes() {
        let h = parse_host("10.1.2.3/8").unwrap();
        assert_eq!(h.prefix, 8);
        assert_eq!(&h.masked_bytes()[..4], &[10, 0, 0, 0]);
        assert_eq!(parse_host("10.1.2.3").unwrap().prefix, 32);
        let h = parse_host("fd00::1:2/112").unwrap();
        assert_eq!(h.masked_bytes()[14..], [0, 0]);
        assert_eq!(h.masked_bytes()[..2], [0xfd, 0]);
        assert_eq!(parse_host("[::1]").unwrap().prefix, 128);
        let h = parse_host("10.255.255.255/12").unwrap();
        assert_eq!(&h.masked_bytes()[..4], &[10, 240, 0, 0]);
        assert_eq!(h.mask_bytes(), [255, 240, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(prefix_mask(0), [0; 16]);
        assert_eq!(prefix_mask(128), [255; 16]);
        assert!(parse_host("10.0.0.1/33").unwrap_err().contains("0 to 32"));
        assert!(parse_host("nohost").unwrap_err().contains("not an IP address"));
        assert!(parse_host("::1/129").is_err());
        assert!(parse_host("").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("80"), Ok(80));
        assert!(parse_port("0").unwrap_err().contains("out of range"));
        assert!(parse_port("65536").unwrap_err().contains("out of range"));
        assert!(parse_port("http").unwrap_err().contains("not a port"));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// No string makes a parser panic; a rejection always names the input.
            #[test]
            fn hostile_strings_never_panic(s in "\\PC*") {
                if let Err(e) = parse_host(&s) {
                    prop_assert!(e.contains(&s) || s.contains('/'), "{e}");
                }
                let _ = parse_port(&s);
            }

            #[test]
            fn any_v4_prefix_round_trips(a in any::<u32>(), len in 0u8..=32) {
                let addr = std::net::Ipv4Addr::from(a);
                let h = parse_host(&format!("{addr}/{len}")).unwrap();
                prop_assert_eq!(h.prefix, len);
                let m = u32::from_be_bytes(h.masked_bytes()[..4].try_into().unwrap());
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                prop_assert_eq!(m, a & mask);
                prop_assert!(h.masked_bytes()[4..].iter().all(|&b| b == 0));
            }

            #[test]
            fn any_v6_prefix_keeps_exactly_its_bits(a in any::<u128>(), len in 0u8..=128) {
                let addr = std::net::Ipv6Addr::from(a);
                let h = parse_host(&format!("{addr}/{len}")).unwrap();
                let m = u128::from_be_bytes(h.masked_bytes());
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                prop_assert_eq!(m, a & mask);
            }

            #[test]
            fn ports_in_range_parse_and_others_do_not(n in any::<u32>()) {
                let r = parse_port(&n.to_string());
                prop_assert_eq!(r.is_ok(), (1..=65535).contains(&n));
            }
        }
    }
}
