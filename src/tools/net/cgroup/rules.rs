//! The policy language of `tracekit cgroup`: `--deny KIND:WHAT` and `--rewrite KIND:FROM=TO`,
//! parsed into the rules the BPF programs walk (`struct tk_cg_rule`, in rodata).
//!
//! ```text
//! --deny connect:10.0.0.0/8:443      connect4/6 to the prefix and port (also connect4:, connect6:)
//! --deny connect6:[::1]:*            any port; `*` alone is any address of both families
//! --deny bind:0-1023                 the port actually bound (post_bind), any address
//! --deny sendmsg:127.0.0.53:53       unconnected UDP sends (also sendmsg4:, sendmsg6:)
//! --deny egress:10.0.0.0/8[:PORT]    packets to the prefix; ingress: packets from it
//! --deny sock:inet6  sock:raw  sock:inet+udp   socket() by family, type, protocol
//! --deny dev:c:1:3:rw                char (c) or block (b) device or *, major, minor or *, access
//! --rewrite connect:127.0.0.7:80=127.0.0.1:8080   the destination, transparently
//! --rewrite sendmsg:127.0.0.7:53=127.0.0.1:5353   ...and replies read as from 127.0.0.7:53
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::runtime::cli::net::{HostPrefix, parse_host};

/// `AF_INET`, `AF_INET6`, `SOCK_*` and `IPPROTO_*` as `struct bpf_sock` has them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// What a rule looks at (mirrors `enum tk_cg_rule_kind` in cgroup.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect = 0,
    Sendmsg = 1,
    Bind = 2,
    Egress = 3,
    Ingress = 4,
    Sock = 5,
    Dev = 6,
    RewriteConnect = 7,
    RewriteSendmsg = 8,
}

/// An address or prefix (None: any address, of either family) and a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub net: Option<HostPrefix>,
    pub ports: (u16, u16),
}

/// One `--deny` or `--rewrite`, as given and as the kernel will check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The text as given (for the counters at exit), with its flag: `deny connect:…`.
    pub text: String,
    pub kind: Kind,
    /// 4 or 6 when the rule is for one family only (connect4:, an IPv4 address), else 0.
    pub family: u8,
    pub target: Target,
    /// Rewrites: the new address and port (None keeps the port).
    pub to: Option<(IpAddr, Option<u16>)>,
    /// sock: AF_*, SOCK_*, IPPROTO_* (0 = any).
    pub sock: (u8, u8, u8),
    /// dev: BPF_DEVCG_DEV_* (0 any), major and minor (None any), BPF_DEVCG_ACC_* bits.
    pub dev: (u8, Option<u32>, Option<u32>, u8),
    /// Its place on the command line, from 1 (the kernel holds the rules sorted by kind).
    pub number: usize,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const DENY_KINDS: &str = "connect, connect4, connect6, sendmsg, sendmsg4, sendmsg6, bind, egress, ingress, sock, dev";

/// `--deny KIND:WHAT`.
pub fn parse_deny(s: &str) -> Result<Rule, String> {
    let (kind, what) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not KIND:WHAT (e.g. connect:10.0.0.0/8:443); KIND is one of {DENY_KINDS}"))?;
    let text = format!("deny {s}");
    let inet = |kind: Kind, family: u8| -> Result<Rule, String> {
        let target = parse_target(what).map_err(|e| format!("in `{s}`: {e}"))?;
        let family = check_family(s, family, &target)?;
        Ok(Rule {
            text: text.clone(),
            kind,
            family,
            target,
            to: None,
            sock: (0, 0, 0),
            dev: (0, None, None, 0),
            number: 0,
        })
    };
    match kind {
        "connect" => inet(Kind::Connect, 0),
        "connect4" => inet(Kind::Connect, 4),
        "connect6" => inet(Kind::Connect, 6),
        "sendmsg" => inet(Kind::Sendmsg, 0),
        "sendmsg4" => inet(Kind::Sendmsg, 4),
        "sendmsg6" => inet(Kind::Sendmsg, 6),
        "bind" => inet(Kind::Bind, 0),
        "bind4" => inet(Kind::Bind, 4),
        "bind6" => inet(Kind::Bind, 6),
        "egress" => inet(Kind::Egress, 0),
        "ingress" => inet(Kind::Ingress, 0),
        "sock" => {
            let sock = parse_sock(what).map_err(|e| format!("in `{s}`: {e}"))?;
            let family = match sock.0 {
                AF_INET => 4,
                AF_INET6 => 6,
                _ => 0,
            };
            Ok(Rule { text, kind: Kind::Sock, family, target: ANY, to: None, sock, dev: (0, None, None, 0), number: 0 })
        }
        "dev" => {
            let dev = parse_dev(what).map_err(|e| format!("in `{s}`: {e}"))?;
            Ok(Rule { text, kind: Kind::Dev, family: 0, target: ANY, to: None, sock: (0, 0, 0), dev, number: 0 })
        }
        other => Err(format!("unknown rule kind `{other}` in `{s}`: one of {DENY_KINDS}")),
    }
}

/// `--rewrite connect:FROM=TO` or `--rewrite sendmsg:FROM=TO`.
pub fn parse_rewrite(s: &str) -> Result<Rule, String> {
    let (kind, what) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not KIND:FROM=TO (e.g. connect:127.0.0.7:80=127.0.0.1:8080)"))?;
    let kind = match kind {
        "connect" => Kind::RewriteConnect,
        "sendmsg" => Kind::RewriteSendmsg,
        other => return Err(format!("cannot rewrite `{other}` in `{s}`: connect or sendmsg")),
    };
    let (from, to) =
        what.split_once('=').ok_or_else(|| format!("`{s}` has no `=`: write KIND:FROM=TO, e.g. connect:A:P=B:Q"))?;
    let target = parse_target(from).map_err(|e| format!("in `{s}`, the address to rewrite: {e}"))?;
    let Some(net) = target.net else {
        return Err(format!("in `{s}`: rewrite one address (`A:P=B:Q`), not every address"));
    };
    let full = if net.is_ipv4() { 32 } else { 128 };
    if net.prefix != full {
        return Err(format!("in `{s}`: rewrite one address, not a prefix (`/{}`)", net.prefix));
    }
    let to_target = parse_target(to).map_err(|e| format!("in `{s}`, the new address: {e}"))?;
    let Some(to_net) = to_target.net.filter(|n| n.prefix == if n.is_ipv4() { 32 } else { 128 }) else {
        return Err(format!("in `{s}`: the new address `{to}` must be one address (with an optional :PORT)"));
    };
    if to_net.is_ipv4() != net.is_ipv4() {
        return Err(format!(
            "in `{s}`: address family mismatch: `{from}` is IPv{} but `{to}` is IPv{}",
            if net.is_ipv4() { 4 } else { 6 },
            if to_net.is_ipv4() { 4 } else { 6 }
        ));
    }
    let to_port = match to_target.ports {
        (0, 65535) => None,
        (lo, hi) if lo == hi && lo != 0 => Some(lo),
        _ => return Err(format!("in `{s}`: the new port must be one port (or none, to keep the port)")),
    };
    if to_port.is_some() && target.ports.0 != target.ports.1 {
        return Err(format!(
            "in `{s}`: many ports to one port cannot be undone for replies: give one port to rewrite, or keep the port"
        ));
    }
    let family = if net.is_ipv4() { 4 } else { 6 };
    Ok(Rule {
        text: format!("rewrite {s}"),
        kind,
        family,
        target,
        to: Some((to_net.addr, to_port)),
        sock: (0, 0, 0),
        dev: (0, None, None, 0),
        number: 0,
    })
}

const ANY: Target = Target { net: None, ports: (0, 65535) };

/// `connect6:10.0.0.1:80` names one family and gives the other.
fn check_family(s: &str, family: u8, target: &Target) -> Result<u8, String> {
    let given = target.net.map_or(0, |n| if n.is_ipv4() { 4 } else { 6 });
    match (family, given) {
        (f, g) if f != 0 && g != 0 && f != g => Err(format!(
            "in `{s}`: address family mismatch: the rule is for IPv{f} but the address is IPv{g}: \
             drop the 4/6 from the kind, or give an IPv{f} address"
        )),
        (0, g) => Ok(g),
        (f, _) => Ok(f),
    }
}

/// `[ADDR[/LEN]:]PORTS`, `ADDR[/LEN]` or `PORTS`: ADDR is IPv4, `[IPv6]` or `*`; PORTS is
/// `*`, `N` or `N-M`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    if s.is_empty() {
        return Err("an address or port is missing".into());
    }
    // Digits, `-` and `*` only: ports, and their error is the one to show.
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'*') {
        return parse_ports(s).map(|ports| Target { net: None, ports });
    }
    let (addr, ports) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) =
            rest.split_once(']').ok_or_else(|| format!("`{s}` opens `[` for an IPv6 address and never closes it"))?;
        // `[fd00::]/8:443` as well as `[fd00::/8]:443`
        let (len, after) = match after.strip_prefix('/') {
            Some(x) => match x.split_once(':') {
                Some((len, ports)) => (Some(len), Some(ports)),
                None => (Some(x), None),
            },
            None => match after {
                "" => (None, None),
                _ => (None, Some(after.strip_prefix(':').ok_or_else(|| format!("`{after}` after `]` in `{s}`"))?)),
            },
        };
        let addr = match len {
            Some(len) => format!("{inside}/{len}"),
            None => inside.to_owned(),
        };
        if !addr.split('/').next().unwrap_or("").contains(':') {
            return Err(format!("`[{inside}]`: brackets are for IPv6 addresses"));
        }
        (addr, after)
    } else if s.matches(':').count() > 1 {
        // an IPv6 address without brackets has no room for a port
        (s.to_owned(), None)
    } else {
        match s.split_once(':') {
            Some((a, p)) => (a.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    let net = match addr.as_str() {
        "*" => None,
        a => Some(parse_host(a)?),
    };
    let ports = match ports {
        None => (0, 65535),
        Some(p) => parse_ports(p).map_err(|e| format!("{e} (after the address `{addr}`)"))?,
    };
    Ok(Target { net, ports })
}

/// `*`, `N` or `N-M` (0-65535).
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        p.parse::<u16>().map_err(|_| format!("`{p}` is not a port (0-65535), a range N-M or `*`"))
    };
    match s {
        "*" => Ok((0, 65535)),
        _ => match s.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (one(lo)?, one(hi)?);
                if lo > hi {
                    return Err(format!("the port range `{s}` is empty: write the low port first"));
                }
                Ok((lo, hi))
            }
            None => one(s).map(|p| (p, p)),
        },
    }
}

/// `inet`, `inet6`, `stream`, `dgram`, `raw`, `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, joined
/// with `+` (all must hold).
fn parse_sock(s: &str) -> Result<(u8, u8, u8), String> {
    let (mut family, mut ty, mut proto) = (0u8, 0u8, 0u8);
    for word in s.split('+') {
        let (slot, value) = match word {
            "inet" | "inet4" | "ipv4" => (&mut family, AF_INET),
            "inet6" | "ipv6" => (&mut family, AF_INET6),
            "stream" => (&mut ty, 1),
            "dgram" => (&mut ty, 2),
            "raw" => (&mut ty, 3),
            "tcp" => (&mut proto, 6),
            "udp" => (&mut proto, 17),
            "icmp" => (&mut proto, 1),
            "icmpv6" | "icmp6" => (&mut proto, 58),
            "sctp" => (&mut proto, 132),
            other => {
                return Err(format!(
                    "`{other}` is not a socket family, type or protocol: inet, inet6, stream, dgram, raw, \
                     tcp, udp, icmp, icmpv6, sctp (join with +, e.g. inet6+udp)"
                ));
            }
        };
        if *slot != 0 && *slot != value {
            return Err(format!("`{s}` gives two values for one of family, type, protocol"));
        }
        *slot = value;
    }
    Ok((family, ty, proto))
}

/// `TYPE:MAJOR:MINOR[:ACCESS]`: TYPE `c`, `b` or `*`; MAJOR and MINOR a number or `*`; ACCESS
/// letters of `rwm` (default all three).
fn parse_dev(s: &str) -> Result<(u8, Option<u32>, Option<u32>, u8), String> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(3..=4).contains(&parts.len()) {
        return Err(format!("`{s}` is not TYPE:MAJOR:MINOR[:ACCESS] (e.g. c:1:3:rw)"));
    }
    let ty = match parts[0] {
        "c" => 2,
        "b" => 1,
        "*" | "a" => 0,
        t => return Err(format!("device type `{t}` is not c (char), b (block) or *")),
    };
    let num = |p: &str, what: &str| -> Result<Option<u32>, String> {
        match p {
            "*" => Ok(None),
            _ => p.parse::<u32>().map(Some).map_err(|_| format!("{what} `{p}` is not a number or *")),
        }
    };
    let major = num(parts[1], "major")?;
    let minor = num(parts[2], "minor")?;
    let mut access = 0u8;
    for c in parts.get(3).copied().unwrap_or("rwm").chars() {
        access |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => return Err(format!("access `{c}` is not r, w or m")),
        };
    }
    if access == 0 {
        return Err("the access is empty: give letters of rwm".into());
    }
    Ok((ty, major, minor, access))
}

/// An address as the kernel compares it: four u32 words in network byte order (IPv4 in the
/// first), read as the host reads memory.
pub fn words(addr: &[u8; 16]) -> [u32; 4] {
    std::array::from_fn(|i| u32::from_ne_bytes(addr[i * 4..i * 4 + 4].try_into().expect("4 bytes")))
}

/// The mask of a prefix length as [`words`].
pub fn mask_words(prefix: u8) -> [u32; 4] {
    words(&crate::runtime::cli::net::prefix_mask(prefix))
}

pub fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// The address of an event's four words, in `family`.
pub fn ip_of(family: u8, w: &[u32; 4]) -> IpAddr {
    let mut bytes = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    if family == 6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_examples_parse() {
        let r = parse_deny("connect:10.0.0.0/8:443").unwrap();
        assert_eq!((r.kind, r.family, r.target.ports), (Kind::Connect, 4, (443, 443)));
        assert_eq!(r.target.net.unwrap().prefix, 8);
        let r = parse_deny("connect6:[::1]:*").unwrap();
        assert_eq!((r.family, r.target.ports), (6, (0, 65535)));
        let r = parse_deny("bind:0-1023").unwrap();
        assert_eq!((r.kind, r.family, r.target.net, r.target.ports), (Kind::Bind, 0, None, (0, 1023)));
        let r = parse_deny("dev:c:1:3:rw").unwrap();
        assert_eq!(r.dev, (2, Some(1), Some(3), 6));
        let r = parse_deny("sock:inet6").unwrap();
        assert_eq!(r.sock, (AF_INET6, 0, 0));
        let r = parse_deny("sock:raw").unwrap();
        assert_eq!(r.sock, (0, 3, 0));
        let r = parse_deny("connect:0.0.0.0/0:*").unwrap();
        assert_eq!((r.family, r.target.net.unwrap().prefix), (4, 0));
        let r = parse_deny("egress:127.0.0.2").unwrap();
        assert_eq!(r.target.ports, (0, 65535));
        let r = parse_deny("ingress:[fd00::]/8:53").unwrap();
        assert_eq!((r.family, r.target.net.unwrap().prefix, r.target.ports), (6, 8, (53, 53)));
        let r = parse_rewrite("connect:127.0.0.7:80=127.0.0.1:8080").unwrap();
        assert_eq!(r.to, Some(("127.0.0.1".parse().unwrap(), Some(8080))));
        let r = parse_rewrite("sendmsg:[::1]:53=[::1]:5353").unwrap();
        assert_eq!(r.family, 6);
    }

    #[test]
    fn mistakes_name_their_part() {
        let e = parse_deny("connect6:10.0.0.1:80").unwrap_err();
        assert!(e.contains("address family mismatch"), "{e}");
        let e = parse_deny("connect:10.0.0.1:http").unwrap_err();
        assert!(e.contains("`http` is not a port"), "{e}");
        let e = parse_deny("listen:80").unwrap_err();
        assert!(e.contains("unknown rule kind `listen`"), "{e}");
        let e = parse_deny("dev:x:1:3").unwrap_err();
        assert!(e.contains("device type `x`"), "{e}");
        let e = parse_deny("dev:c:1:3:rx").unwrap_err();
        assert!(e.contains("access `x`"), "{e}");
        let e = parse_deny("bind:1023-80").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse_rewrite("connect:127.0.0.7:80=[::1]:80").unwrap_err();
        assert!(e.contains("address family mismatch"), "{e}");
        let e = parse_rewrite("sendmsg:127.0.0.7:*=127.0.0.1:53").unwrap_err();
        assert!(e.contains("cannot be undone"), "{e}");
        let e = parse_rewrite("connect:10.0.0.0/8:80=127.0.0.1:80").unwrap_err();
        assert!(e.contains("not a prefix"), "{e}");
        let e = parse_deny("sock:inet+inet6").unwrap_err();
        assert!(e.contains("two values"), "{e}");
    }

    #[test]
    fn words_are_network_order_in_memory() {
        let w = words(&ip_bytes("10.1.2.3".parse().unwrap()));
        assert_eq!(w[0].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(mask_words(8)[0].to_ne_bytes(), [255, 0, 0, 0]);
        assert_eq!(ip_of(4, &w), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
