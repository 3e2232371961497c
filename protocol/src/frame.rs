//! Framing over QUIC streams: one length-prefixed, capped frame each way
//! (the bytes are `wire`'s; this is only their async transport).

use serde::{de::DeserializeOwned, Serialize};

use crate::{wire, Error, Result};

/// Writes one frame.
pub async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, value: &T) -> Result<()> {
    send.write_all(&wire::encode_frame(value)).await?;
    Ok(())
}

/// Reads one frame body of at most `limit` bytes; `None` if the stream ended
/// cleanly before a frame started.
pub async fn read_frame_body(recv: &mut quinn::RecvStream, limit: u32) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut len[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(Error::Malformed { what: "frame", reason: "stream ended inside a length".into() }),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > limit {
        return Err(Error::Limit { what: "frame length", actual: len as u64, limit: limit as u64 });
    }
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads one frame and decodes it.
pub async fn read_frame<T: DeserializeOwned>(recv: &mut quinn::RecvStream, what: &'static str) -> Result<T> {
    let body = read_frame_body(recv, crate::limits::MAX_RESPONSE_FRAME_BYTES)
        .await?
        .ok_or_else(|| Error::Malformed { what, reason: "stream ended before the response".into() })?;
    wire::decode_body(what, &body)
}
