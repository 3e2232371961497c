//! The relay's frames, without sockets: what nodes and a relay say to each
//! other over one TLS 1.3 stream (TCP), specified byte by byte in
//! `docs/RELAY.md`, with vectors in `tests/vectors/relay/`.
//!
//! A frame is `type: u8 | length: u32 LE | body`. The relay forwards
//! opaque QUIC datagrams between node ids; the identity of each end is
//! the mutual TLS handshake's (the same Ed25519 certificates as the QUIC
//! protocol), so login carries only a version. A datagram frame may carry
//! a GSO batch: `segment_size` says where its packets split (0 means one
//! datagram), and the ECN bits travel with it, as quinn needs both to take
//! the batch back.
//!
//! [`FrameDecoder`] takes bytes as they arrive and yields whole frames;
//! every length is checked against its cap before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Error, NodeId, Result};

/// Frame header: type (1) and body length (4).
pub const HEADER_BYTES: usize = 5;
/// Largest datagram payload in one frame: a GSO batch of up to 64 KiB.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest body of any frame (a datagram frame: id, ECN, segment size,
/// payload).
pub const MAX_BODY_BYTES: usize = 32 + 1 + 2 + MAX_PAYLOAD_BYTES;
/// Longest message in an error frame.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// The relay protocol version this crate speaks.
pub const RELAY_VERSION: u16 = 1;

/// One relay frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayFrame {
    /// Client → relay, first frame: the version it speaks.
    Login {
        /// Relay protocol version.
        version: u16,
    },
    /// Relay → client: login accepted.
    LoginAck {
        /// The relay's version.
        version: u16,
    },
    /// Client → relay: forward these datagrams to `dst`.
    SendTo {
        /// The destination node.
        dst: NodeId,
        /// The batch.
        datagrams: Datagrams,
    },
    /// Relay → client: datagrams from `src`.
    RecvFrom {
        /// The sending node (as its TLS identity proved).
        src: NodeId,
        /// The batch.
        datagrams: Datagrams,
    },
    /// Either way: answer with a `Pong` carrying the same bytes.
    Ping([u8; 8]),
    /// The answer to a `Ping`.
    Pong([u8; 8]),
    /// Either way: nothing but proof of life (keeps NATs and idle timers).
    KeepAlive,
    /// Relay → client: `node` is not connected here (or left); datagrams
    /// to it were dropped.
    PeerGone(NodeId),
    /// Either way, before closing: why.
    Error {
        /// What went wrong (see `docs/RELAY.md`).
        code: u16,
        /// For people, UTF-8, at most [`MAX_ERROR_MESSAGE_BYTES`].
        message: String,
    },
}

/// Datagrams as quinn hands them out: one, or a GSO batch of
/// `segment_size`-byte packets (the last may be shorter), with their ECN
/// bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagrams {
    /// ECN codepoint (0–3).
    pub ecn: u8,
    /// 0: the payload is one datagram; else the size of each packet in it.
    pub segment_size: u16,
    /// The bytes, at most [`MAX_PAYLOAD_BYTES`].
    pub payload: Bytes,
}

impl Datagrams {
    /// The packets of the batch.
    pub fn packets(&self) -> impl Iterator<Item = Bytes> + '_ {
        let step = match self.segment_size {
            0 => self.payload.len().max(1),
            s => s as usize,
        };
        (0..self.payload.len()).step_by(step).map(move |at| self.payload.slice(at..(at + step).min(self.payload.len())))
    }
}

mod tag {
    pub const LOGIN: u8 = 0x01;
    pub const LOGIN_ACK: u8 = 0x02;
    pub const SEND_TO: u8 = 0x03;
    pub const RECV_FROM: u8 = 0x04;
    pub const PING: u8 = 0x05;
    pub const PONG: u8 = 0x06;
    pub const KEEP_ALIVE: u8 = 0x07;
    pub const PEER_GONE: u8 = 0x08;
    pub const ERROR: u8 = 0x09;
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed { what: "relay frame", reason: reason.into() }
}

impl RelayFrame {
    /// The frame's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RelayFrame::Login { .. } => "Login",
            RelayFrame::LoginAck { .. } => "LoginAck",
            RelayFrame::SendTo { .. } => "SendTo",
            RelayFrame::RecvFrom { .. } => "RecvFrom",
            RelayFrame::Ping(_) => "Ping",
            RelayFrame::Pong(_) => "Pong",
            RelayFrame::KeepAlive => "KeepAlive",
            RelayFrame::PeerGone(_) => "PeerGone",
            RelayFrame::Error { .. } => "Error",
        }
    }

    /// Appends the frame's bytes to `out`. Payloads and messages over
    /// their caps are an error (a frame the peer would refuse).
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        out.put_u8(0);
        out.put_u32_le(0);
        let tag = match self {
            RelayFrame::Login { version } => {
                out.put_u16_le(*version);
                tag::LOGIN
            }
            RelayFrame::LoginAck { version } => {
                out.put_u16_le(*version);
                tag::LOGIN_ACK
            }
            RelayFrame::SendTo { dst: node, datagrams } | RelayFrame::RecvFrom { src: node, datagrams } => {
                datagrams.check()?;
                out.put_slice(node.as_bytes());
                out.put_u8(datagrams.ecn);
                out.put_u16_le(datagrams.segment_size);
                out.put_slice(&datagrams.payload);
                if matches!(self, RelayFrame::SendTo { .. }) {
                    tag::SEND_TO
                } else {
                    tag::RECV_FROM
                }
            }
            RelayFrame::Ping(data) => {
                out.put_slice(data);
                tag::PING
            }
            RelayFrame::Pong(data) => {
                out.put_slice(data);
                tag::PONG
            }
            RelayFrame::KeepAlive => tag::KEEP_ALIVE,
            RelayFrame::PeerGone(node) => {
                out.put_slice(node.as_bytes());
                tag::PEER_GONE
            }
            RelayFrame::Error { code, message } => {
                if message.len() > MAX_ERROR_MESSAGE_BYTES {
                    out.truncate(start);
                    return Err(Error::Limit {
                        what: "relay error message",
                        actual: message.len() as u64,
                        limit: MAX_ERROR_MESSAGE_BYTES as u64,
                    });
                }
                out.put_u16_le(*code);
                out.put_slice(message.as_bytes());
                tag::ERROR
            }
        };
        let body = (out.len() - start - HEADER_BYTES) as u32;
        out[start] = tag;
        out[start + 1..start + HEADER_BYTES].copy_from_slice(&body.to_le_bytes());
        Ok(())
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes one frame body of type `tag`.
    fn decode_body(tag: u8, mut body: Bytes) -> Result<RelayFrame> {
        let exact = |body: &Bytes, n: usize, name: &str| {
            if body.len() == n {
                Ok(())
            } else {
                Err(malformed(format!("a {name} body is {n} bytes, not {}", body.len())))
            }
        };
        let frame = match tag {
            tag::LOGIN | tag::LOGIN_ACK => {
                exact(&body, 2, "login")?;
                let version = body.get_u16_le();
                if tag == tag::LOGIN {
                    RelayFrame::Login { version }
                } else {
                    RelayFrame::LoginAck { version }
                }
            }
            tag::SEND_TO | tag::RECV_FROM => {
                if body.len() < 35 {
                    return Err(malformed(format!(
                        "a datagram body needs 35 bytes before its payload, has {}",
                        body.len()
                    )));
                }
                let node = NodeId(body.split_to(32)[..].try_into().expect("32 bytes"));
                let ecn = body.get_u8();
                let segment_size = body.get_u16_le();
                let datagrams = Datagrams { ecn, segment_size, payload: body };
                datagrams.check()?;
                if tag == tag::SEND_TO {
                    RelayFrame::SendTo { dst: node, datagrams }
                } else {
                    RelayFrame::RecvFrom { src: node, datagrams }
                }
            }
            tag::PING | tag::PONG => {
                exact(&body, 8, "ping")?;
                let data: [u8; 8] = body[..].try_into().expect("8 bytes");
                if tag == tag::PING {
                    RelayFrame::Ping(data)
                } else {
                    RelayFrame::Pong(data)
                }
            }
            tag::KEEP_ALIVE => {
                exact(&body, 0, "keep-alive")?;
                RelayFrame::KeepAlive
            }
            tag::PEER_GONE => {
                exact(&body, 32, "peer-gone")?;
                RelayFrame::PeerGone(NodeId(body[..].try_into().expect("32 bytes")))
            }
            tag::ERROR => {
                if body.len() < 2 || body.len() > 2 + MAX_ERROR_MESSAGE_BYTES {
                    return Err(malformed(format!(
                        "an error body is 2 to {} bytes, not {}",
                        2 + MAX_ERROR_MESSAGE_BYTES,
                        body.len()
                    )));
                }
                let code = body.get_u16_le();
                let message =
                    String::from_utf8(body.to_vec()).map_err(|_| malformed("an error message is not UTF-8"))?;
                RelayFrame::Error { code, message }
            }
            other => return Err(malformed(format!("unknown frame type 0x{other:02x}"))),
        };
        Ok(frame)
    }
}

impl Datagrams {
    fn check(&self) -> Result<()> {
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::Limit {
                what: "relayed datagram payload",
                actual: self.payload.len() as u64,
                limit: MAX_PAYLOAD_BYTES as u64,
            });
        }
        if self.ecn > 3 {
            return Err(malformed(format!("ECN {} is not a 2-bit codepoint", self.ecn)));
        }
        if self.payload.is_empty() {
            return Err(malformed("an empty datagram"));
        }
        if self.segment_size as usize > self.payload.len() {
            return Err(malformed(format!(
                "segment size {} is larger than the {}-byte batch",
                self.segment_size,
                self.payload.len()
            )));
        }
        Ok(())
    }
}

/// Cuts frames out of a byte stream as it arrives.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. A header announcing more
    /// than [`MAX_BODY_BYTES`] is an error at once, before its body is
    /// waited for; after any error the stream is to be closed.
    pub fn next_frame(&mut self) -> Result<Option<RelayFrame>> {
        if self.buf.len() < HEADER_BYTES {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_le_bytes(self.buf[1..HEADER_BYTES].try_into().expect("4 bytes")) as usize;
        if len > MAX_BODY_BYTES {
            return Err(Error::Limit { what: "relay frame body", actual: len as u64, limit: MAX_BODY_BYTES as u64 });
        }
        if self.buf.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_BYTES);
        let body = self.buf.split_to(len).freeze();
        RelayFrame::decode_body(tag, body).map(Some)
    }

    /// Bytes held that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
