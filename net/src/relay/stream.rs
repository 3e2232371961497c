//! Writing relay frames to a TLS stream, for the server and the client
//! alike: one frame at once, or a queue drained in batched writes with
//! keepalives when it is quiet.

use std::time::Duration;

use bytes::BytesMut;
use tokio::{io::AsyncWriteExt, sync::mpsc};

use super::frame::RelayFrame;
use crate::{Error, Result};

pub(crate) async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, frame: &RelayFrame) -> Result<()> {
    let mut out = BytesMut::new();
    frame.encode(&mut out)?;
    w.write_all(&out).await.map_err(Error::Io)?;
    w.flush().await.map_err(Error::Io)
}

/// Sends queued frames, batching writes while more are queued; a
/// keepalive after `keepalive` of silence. Ends after sending an `Error`
/// or when the queue closes.
pub(crate) async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<RelayFrame>,
    keepalive: Duration,
) {
    let mut out = BytesMut::with_capacity(256 * 1024);
    loop {
        let frame = match tokio::time::timeout(keepalive, rx.recv()).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => RelayFrame::KeepAlive,
        };
        let mut last = matches!(frame, RelayFrame::Error { .. });
        if frame.encode(&mut out).is_err() {
            break;
        }
        // Whatever else is queued goes in the same write.
        while !last && out.len() < 256 * 1024 {
            let Ok(f) = rx.try_recv() else { break };
            last = matches!(f, RelayFrame::Error { .. });
            if f.encode(&mut out).is_err() {
                return;
            }
        }
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
            return;
        }
        out.clear();
        if last {
            break;
        }
    }
    let _ = w.shutdown().await;
}
