//! The relay's UDP echo probe (sans I/O): a node sends a request to the
//! relay's UDP port (the same number as its TCP port) and learns the source
//! address and port the relay saw, its public UDP mapping, which the TCP
//! connection cannot tell (its port is another mapping).
//!
//! Both messages start with a byte below 0x40, so a socket shared with QUIC
//! (with `grease_quic_bit(false)`) can tell them from QUIC packets. The
//! request is as long as the longest answer, so the relay never sends more
//! than it received (no amplification). Specified in `docs/RELAY.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// First byte of a request.
pub const REQUEST: u8 = 0x20;
/// First byte of an answer.
pub const ANSWER: u8 = 0x21;
/// After the first byte.
pub const MAGIC: [u8; 3] = *b"BXP";
/// Request length: tag, magic, transaction id (12), zero padding.
pub const REQUEST_BYTES: usize = 36;
/// Transaction id length.
pub const TXID_BYTES: usize = 12;

/// A probe request: its transaction id, or `None` if `packet` is not one.
pub fn parse_request(packet: &[u8]) -> Option<[u8; TXID_BYTES]> {
    if packet.len() != REQUEST_BYTES || packet[0] != REQUEST || packet[1..4] != MAGIC {
        return None;
    }
    packet[4..16].try_into().ok()
}

/// Encodes a request with `txid`.
pub fn request(txid: [u8; TXID_BYTES]) -> [u8; REQUEST_BYTES] {
    let mut out = [0u8; REQUEST_BYTES];
    out[0] = REQUEST;
    out[1..4].copy_from_slice(&MAGIC);
    out[4..16].copy_from_slice(&txid);
    out
}

/// Encodes the answer: `txid`, then the family (4 or 6), the port (big
/// endian) and the address seen. 23 or 35 bytes.
pub fn answer(txid: [u8; TXID_BYTES], seen: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_BYTES);
    out.push(ANSWER);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&txid);
    match seen.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&seen.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&seen.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
    }
    out
}

/// Reads an answer: its transaction id and the address seen, or `None`
/// if `packet` is not a well-formed answer.
pub fn parse_answer(packet: &[u8]) -> Option<([u8; TXID_BYTES], SocketAddr)> {
    if packet.len() < 19 || packet[0] != ANSWER || packet[1..4] != MAGIC {
        return None;
    }
    let txid: [u8; TXID_BYTES] = packet[4..16].try_into().ok()?;
    let port = u16::from_be_bytes([packet[17], packet[18]]);
    let ip = match (packet[16], &packet[19..]) {
        (4, a) if a.len() == 4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).ok()?)),
        (6, a) if a.len() == 16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).ok()?)),
        _ => return None,
    };
    Some((txid, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_never_outgrow_the_request() {
        let txid = [7u8; TXID_BYTES];
        let req = request(txid);
        assert_eq!(parse_request(&req), Some(txid));
        assert!(req[0] < 0x40, "not a QUIC packet");
        for seen in ["192.0.2.7:40000", "[2001:db8::1]:5"] {
            let seen: SocketAddr = seen.parse().unwrap();
            let a = answer(txid, seen);
            assert!(a.len() <= REQUEST_BYTES);
            assert_eq!(parse_answer(&a), Some((txid, seen)));
        }
        assert_eq!(parse_request(&req[..35]), None, "short requests are ignored");
        assert_eq!(parse_answer(&answer(txid, "1.2.3.4:5".parse().unwrap())[..20]), None);
    }

    /// The vector in `docs/RELAY.md`.
    #[test]
    fn vector() {
        let a = answer(*b"txid-0000001", "192.0.2.7:40000".parse().unwrap());
        let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "21425850747869642d30303030303031049c40c0000207");
    }
}
