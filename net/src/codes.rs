//! The protocol's error codes: the application code of a stream reset (a
//! refused request) or of a connection close, by number and by name.

/// Error codes: sent as the application code of a stream reset (request
/// errors) or of a connection close. Code 0 on a close means a normal close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: no error (connection close only).
    Ok,
    /// 1: the request did not decode, or broke a rule (e.g. unsorted ranges).
    BadRequest,
    /// 2: the request tag is not one this server knows (a newer protocol?).
    UnknownRequest,
    /// 3: the request frame is longer than the blob protocol's `MAX_REQUEST_BYTES`.
    RequestTooLarge,
    /// 4: too many ranges, items or children.
    TooMany,
    /// 5: the server does not have this blob or resource.
    NotFound,
    /// 6: the server has the blob but not all the requested ranges.
    NotHeld,
    /// 7: the request was not sent in time.
    RequestTimeout,
    /// 8: the hash sequence is malformed (size not a multiple of 32).
    BadSequence,
    /// 9: the server failed (e.g. its copy is damaged); try another peer.
    Internal,
    /// 10: the server is shutting down or overloaded; try again later.
    Unavailable,
    /// 11: the peer is refused (connection close, e.g. not on an allowlist).
    Refused,
    /// 12: the peer broke the protocol (connection close).
    ProtocolViolation,
    /// Any other code, from a newer peer.
    Other(u64),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u64 {
        match self {
            ErrorCode::Ok => 0,
            ErrorCode::BadRequest => 1,
            ErrorCode::UnknownRequest => 2,
            ErrorCode::RequestTooLarge => 3,
            ErrorCode::TooMany => 4,
            ErrorCode::NotFound => 5,
            ErrorCode::NotHeld => 6,
            ErrorCode::RequestTimeout => 7,
            ErrorCode::BadSequence => 8,
            ErrorCode::Internal => 9,
            ErrorCode::Unavailable => 10,
            ErrorCode::Refused => 11,
            ErrorCode::ProtocolViolation => 12,
            ErrorCode::Other(c) => c,
        }
    }

    /// The code for a wire value.
    pub fn from_code(c: u64) -> Self {
        match c {
            0 => ErrorCode::Ok,
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnknownRequest,
            3 => ErrorCode::RequestTooLarge,
            4 => ErrorCode::TooMany,
            5 => ErrorCode::NotFound,
            6 => ErrorCode::NotHeld,
            7 => ErrorCode::RequestTimeout,
            8 => ErrorCode::BadSequence,
            9 => ErrorCode::Internal,
            10 => ErrorCode::Unavailable,
            11 => ErrorCode::Refused,
            12 => ErrorCode::ProtocolViolation,
            c => ErrorCode::Other(c),
        }
    }

    /// The QUIC varint form.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u64(self.code()).unwrap_or(quinn::VarInt::MAX)
    }

    /// From a QUIC varint.
    pub fn from_varint(v: quinn::VarInt) -> Self {
        Self::from_code(v.into_inner())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ErrorCode::Ok => "ok",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnknownRequest => "unknown request",
            ErrorCode::RequestTooLarge => "request too large",
            ErrorCode::TooMany => "too many ranges, items or children",
            ErrorCode::NotFound => "not found",
            ErrorCode::NotHeld => "ranges not held",
            ErrorCode::RequestTimeout => "request timeout",
            ErrorCode::BadSequence => "malformed hash sequence",
            ErrorCode::Internal => "internal error",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Refused => "refused",
            ErrorCode::ProtocolViolation => "protocol violation",
            ErrorCode::Other(_) => "unknown code",
        };
        write!(f, "{name} (code {})", self.code())
    }
}
