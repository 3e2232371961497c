//! The control API: HTTP + JSON on a loopback TCP port, used by the CLI
//! (and later the TUI). Every route except `/metrics` needs the bearer token
//! kept in `<data-dir>/control.json` (mode 0600), so other local users
//! cannot drive the node; `/metrics` is read-only Prometheus text.
//!
//! Routes (all under `/v1` except metrics):
//! `GET status`, `GET peers`, `POST peers {peer}`, `GET resources`,
//! `GET resources/remote`, `POST upload {kind,name,version,path}`,
//! `POST download {kind,name,version,priority}`, `GET transfers`,
//! `GET transfers/{id}`, `DELETE transfers/{id}`,
//! `POST export {kind,name,version,path,overwrite}`, `POST verify {repair}`,
//! `POST gc`, `GET uploads`, `GET events` (NDJSON stream),
//! `PATCH transfers/{id} {priority}`, `GET p2p`, `PUT p2p {enabled}`,
//! and `GET /metrics`. [`crate::client::ControlClient`] is the typed client.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use axum::{
    extract::{Path as UrlPath, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use blixard_store::ResourceKind;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{queue::TransferPriority, DownloadRequest, Error, Node, Result, TransferId};

/// Where a node's control API listens and its token: `control.json` in the
/// data dir, readable only by the node's user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlFile {
    /// The loopback address.
    pub addr: SocketAddr,
    /// The bearer token.
    pub token: String,
}

impl ControlFile {
    /// The file's path in a data dir.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("control.json")
    }

    /// Reads a node's control file.
    pub fn read(data_dir: &Path) -> Result<ControlFile> {
        let path = Self::path(data_dir);
        let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    fn write(&self, data_dir: &Path) -> Result<()> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let path = Self::path(data_dir);
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io("create", &tmp))?;
        f.write_all(serde_json::to_string(self).expect("plain data").as_bytes()).map_err(Error::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("rename", &tmp))
    }
}

/// Starts the control API on `127.0.0.1:port` (or any free port if that
/// one is taken) and writes the control file into the node's data dir
/// (a node without one is an `InvalidArgument` error). Runs until the node
/// stops.
pub async fn serve(node: Node, port: u16) -> Result<SocketAddr> {
    let Some(data_dir) = node.data_dir().map(Path::to_path_buf) else {
        return Err(Error::InvalidArgument(
            "the control API needs a node with a data dir (for its control file)".into(),
        ));
    };
    let listener = match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::start("control API: cannot listen on 127.0.0.1", e))?,
    };
    let addr = listener.local_addr().map_err(|e| Error::start("control API", e))?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    ControlFile { addr, token: token.clone() }.write(&data_dir)?;
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers).post(connect))
        .route("/v1/resources", get(resources))
        .route("/v1/resources/remote", get(remote_resources))
        .route("/v1/upload", post(upload))
        .route("/v1/download", post(download))
        .route("/v1/export", post(export))
        .route("/v1/verify", post(verify))
        .route("/v1/gc", post(gc))
        .route("/v1/uploads", get(uploads))
        .route("/v1/events", get(events))
        .route("/v1/p2p", get(p2p).put(set_p2p))
        .route("/v1/transfers", get(transfers))
        .route("/v1/transfers/{id}", get(transfer).delete(cancel).patch(change_transfer))
        .route_layer(middleware::from_fn_with_state(token, authorize));
    let app = api.route("/metrics", get(metrics)).with_state(node);
    info!(%addr, "control API listening");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn authorize(State(token): State<String>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare without an early exit, so timing does not reveal a prefix.
    let same = given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
    if same {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, Json(ApiError { error: "missing or wrong control token".into() })).into_response()
    }
}

/// An error answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

struct Failure(StatusCode, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        use blixard_store::Error as StoreError;
        let code = match &e {
            Error::Store(StoreError::Exists(_)) => StatusCode::CONFLICT,
            Error::Store(StoreError::InvalidArgument(_)) => StatusCode::BAD_REQUEST,
            // The caller's path: missing, a directory, not writable.
            Error::Store(StoreError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::IsADirectory
                        | std::io::ErrorKind::NotADirectory
                        | std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                StatusCode::BAD_REQUEST
            }
            Error::NotFound { .. } | Error::UnknownTransfer(_) => StatusCode::NOT_FOUND,
            Error::Config(_) | Error::InvalidArgument(_) | Error::Io { .. } => StatusCode::BAD_REQUEST,
            Error::Protocol(_)
            | Error::NoPeers
            | Error::Untrusted { .. }
            | Error::Conflict { .. }
            | Error::Refused { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

type Answer<T> = std::result::Result<Json<T>, Failure>;

fn kind(text: &str) -> std::result::Result<ResourceKind, Failure> {
    text.parse().map_err(|e: blixard_store::Error| Failure(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn status(State(node): State<Node>) -> Json<crate::Stats> {
    Json(node.stats())
}

async fn peers(State(node): State<Node>) -> Json<Vec<crate::events::PeerInfo>> {
    Json(node.peers())
}

/// `POST /v1/peers`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// `ADDR` or `NODE_ID@ADDR`.
    pub peer: String,
}

async fn connect(State(node): State<Node>, Json(req): Json<ConnectRequest>) -> Answer<String> {
    Ok(Json(node.connect_peer(&req.peer).await?.to_string()))
}

async fn resources(State(node): State<Node>) -> Answer<Vec<crate::events::ResourceInfo>> {
    Ok(Json(node.local_resources()?))
}

async fn remote_resources(State(node): State<Node>) -> Json<Vec<crate::events::RemoteResource>> {
    Json(node.remote_resources().await)
}

/// `POST /v1/upload` and `/v1/export`: a resource and a local path.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResourceFile {
    /// Kind, text form.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// An absolute path on the node's machine.
    pub path: PathBuf,
    /// Export only: replace an existing file (or link, which is replaced,
    /// not followed).
    #[serde(default)]
    pub overwrite: bool,
    /// Export only: hand the store's copy over (renamed to `path`, no bytes
    /// copied, kept as a reference) where it can
    /// (`blixard_store::ExportOptions::hand_over`).
    #[serde(default)]
    pub hand_over: bool,
}

async fn upload(State(node): State<Node>, Json(req): Json<ResourceFile>) -> Answer<crate::events::ResourceInfo> {
    let kind = kind(&req.kind)?;
    Ok(Json(node.upload_resource(kind, &req.name, &req.version, &req.path).await?))
}

async fn export(State(node): State<Node>, Json(req): Json<ResourceFile>) -> Answer<()> {
    let kind = kind(&req.kind)?;
    let options = blixard_store::ExportOptions { overwrite: req.overwrite, hand_over: req.hand_over };
    node.export_resource(&kind, &req.name, &req.version, &req.path, options).await?;
    Ok(Json(()))
}

async fn download(State(node): State<Node>, Json(req): Json<DownloadRequest>) -> Answer<TransferId> {
    Ok(Json(node.download(req)?))
}

/// `PATCH /v1/transfers/{id}`: what to change in a transfer.
#[derive(Debug, Serialize, Deserialize)]
pub struct TransferChange {
    /// Its new priority.
    pub priority: TransferPriority,
}

async fn change_transfer(
    State(node): State<Node>,
    UrlPath(id): UrlPath<String>,
    Json(change): Json<TransferChange>,
) -> Answer<crate::TransferInfo> {
    let id: TransferId = id.parse()?;
    node.set_priority(id, change.priority)?;
    node.transfer(id).map(Json).ok_or_else(|| Error::UnknownTransfer(id.0).into())
}

async fn transfers(State(node): State<Node>) -> Json<Vec<crate::TransferInfo>> {
    Json(node.transfers())
}

async fn transfer(State(node): State<Node>, UrlPath(id): UrlPath<String>) -> Answer<crate::TransferInfo> {
    let id: TransferId = id.parse()?;
    node.transfer(id).map(Json).ok_or_else(|| Error::UnknownTransfer(id.0).into())
}

async fn cancel(State(node): State<Node>, UrlPath(id): UrlPath<String>) -> Answer<()> {
    node.cancel(id.parse()?)?;
    Ok(Json(()))
}

/// `GET` and `PUT /v1/p2p`: whether P2P is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct P2pSwitch {
    /// On (serving, dialing, downloading) or off.
    pub enabled: bool,
}

async fn p2p(State(node): State<Node>) -> Json<P2pSwitch> {
    Json(P2pSwitch { enabled: node.p2p_enabled() })
}

async fn set_p2p(State(node): State<Node>, Json(switch): Json<P2pSwitch>) -> Json<P2pSwitch> {
    node.set_p2p_enabled(switch.enabled);
    Json(P2pSwitch { enabled: node.p2p_enabled() })
}

/// `POST /v1/verify`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Turn damaged groups back into missing ones.
    #[serde(default)]
    pub repair: bool,
}

/// One blob's check, as `POST /v1/verify` answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyInfo {
    /// The blob.
    pub hash: blixard_store::Hash,
    /// Its size.
    pub size: u64,
    /// Complete when checked (else partial: its held bytes were checked).
    pub complete: bool,
    /// Bytes checked.
    pub checked_bytes: u64,
    /// Damaged byte ranges, `[start, end)`.
    pub damaged: Vec<[u64; 2]>,
    /// True if the damaged ranges are missing again.
    pub repaired: bool,
}

impl From<&blixard_store::VerifyReport> for VerifyInfo {
    fn from(r: &blixard_store::VerifyReport) -> Self {
        let bytes = |c: &blixard_store::ChunkRanges| -> Vec<[u64; 2]> {
            blixard_store::ranges::to_vec(c, r.size)
                .iter()
                .map(|x| [x.start * 1024, (x.end * 1024).min(r.size)])
                .collect()
        };
        VerifyInfo {
            hash: r.hash,
            size: r.size,
            complete: r.complete,
            checked_bytes: blixard_store::ranges::byte_count(&r.checked, r.size),
            damaged: bytes(&r.damaged),
            repaired: r.repaired,
        }
    }
}

async fn verify(State(node): State<Node>, Json(req): Json<VerifyRequest>) -> Answer<Vec<VerifyInfo>> {
    Ok(Json(node.verify(req.repair).await?.iter().map(VerifyInfo::from).collect()))
}

/// `GET /v1/uploads`: imports running now.
async fn uploads(State(node): State<Node>) -> Answer<Vec<crate::UploadProgress>> {
    Ok(Json(node.uploads()))
}

/// `POST /v1/gc`: evict over-limit downloads, collect unreachable blobs.
async fn gc(State(node): State<Node>) -> Answer<crate::cache::GcReport> {
    Ok(Json(node.gc().await?))
}

/// `GET /v1/events`: every event from now on as NDJSON, one
/// [`P2pEvent::to_json`](crate::P2pEvent::to_json) object per line, in the order the node made them.
/// A client that falls more than [`crate::EVENTS_CAPACITY`] events behind
/// gets `{"type":"lagged","missed":N}` in their place and should re-read
/// the state it shows (`/v1/transfers`, `/v1/peers`): never a silent gap.
async fn events(State(node): State<Node>) -> impl IntoResponse {
    let body = axum::body::Body::from_stream(event_lines(node.events()));
    ([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")], body)
}

/// The NDJSON lines of an event receiver, a `lagged` line for each gap;
/// ends when the node stops.
pub(crate) fn event_lines(
    rx: tokio::sync::broadcast::Receiver<crate::P2pEvent>,
) -> impl futures_util::Stream<Item = std::result::Result<axum::body::Bytes, std::convert::Infallible>> {
    use tokio::sync::broadcast::error::RecvError;
    futures_util::stream::unfold(rx, |mut rx| async move {
        let value = match rx.recv().await {
            Ok(event) => event.to_json(),
            Err(RecvError::Lagged(missed)) => serde_json::json!({"type": "lagged", "missed": missed}),
            Err(RecvError::Closed) => return None,
        };
        let mut line = serde_json::to_vec(&value).expect("JSON values serialise");
        line.push(b'\n');
        Some((Ok(axum::body::Bytes::from(line)), rx))
    })
}

async fn metrics(State(node): State<Node>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics().render())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::{P2pEvent, TransferId};

    fn line(item: Option<std::result::Result<axum::body::Bytes, std::convert::Infallible>>) -> serde_json::Value {
        serde_json::from_slice(&item.expect("a line").unwrap()).unwrap()
    }

    /// A reader that fell behind gets a `lagged` line with the count, then
    /// the newest events in order; the stream ends when the node's sender goes.
    #[tokio::test]
    async fn a_lagging_reader_is_told_how_many_it_missed() {
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        for i in 1..=5 {
            tx.send(P2pEvent::TransferStarted(TransferId(i))).unwrap();
        }
        drop(tx);
        let mut lines = std::pin::pin!(event_lines(rx));
        assert_eq!(line(lines.next().await), serde_json::json!({"type": "lagged", "missed": 3}));
        assert_eq!(line(lines.next().await), serde_json::json!({"type": "TransferStarted", "transfer": 4}));
        assert_eq!(line(lines.next().await), serde_json::json!({"type": "TransferStarted", "transfer": 5}));
        assert!(lines.next().await.is_none());
    }
}
