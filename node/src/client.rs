//! `ControlClient`: the typed client of a node's control API. The CLI and
//! `blixard tui` drive a node through it, and so can any program on the
//! node's machine that can read its `control.json`.
//!
//! Each call opens one HTTP/1.1 connection to the loopback address in
//! `control.json` and sends the bearer token; answers are read into the
//! types the node serves, capped at [`MAX_ANSWER`] bytes. A node that
//! answers with an error gives [`Error::ControlApi`] (status and the
//! node's message); one that cannot be reached gives
//! [`Error::ControlUnreachable`].
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> blixard_node::Result<()> {
//! use blixard_node::client::{ControlClient, EventLine};
//!
//! let node = ControlClient::find(std::path::Path::new("blixard-data/node-1"))?;
//! println!("{} peers connected", node.status().await?.peers_connected);
//! let mut events = node.events().await?;
//! while let Some(line) = events.next().await {
//!     match line? {
//!         EventLine::Event(e) => println!("{e:?}"),
//!         EventLine::Lagged { missed } => println!("missed {missed} events: re-read the state"),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::{net::SocketAddr, path::Path, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::{Bytes, Incoming},
    header, Method, Request, Response,
};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    cache::GcReport,
    control::{
        ApiError, ConnectRequest, ControlFile, P2pSwitch, ResourceFile, TransferChange, VerifyInfo, VerifyRequest,
    },
    transfers::DownloadRequest,
    Error, NodeId, P2pEvent, PeerInfo, RemoteResource, ResourceInfo, Result, Stats, TransferId, TransferInfo,
    TransferPriority, UploadProgress,
};

/// Largest answer read, in bytes (a transfer list of a long-running node
/// is well under a megabyte).
pub const MAX_ANSWER: usize = 64 << 20;
/// Longest line of the event stream, in bytes.
pub const MAX_EVENT_LINE: usize = 1 << 20;
/// Longest error answer read, in bytes.
const MAX_ERROR_ANSWER: usize = 64 << 10;
/// A node that has not accepted the connection by then is not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's control API, by address and token.
#[derive(Clone)]
pub struct ControlClient {
    addr: SocketAddr,
    token: String,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl ControlClient {
    /// A client of the API at `addr` with `token`.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        ControlClient { addr, token: token.into() }
    }

    /// The client of the node whose data dir is `data_dir` (from its
    /// `control.json`; an error naming the file if there is none).
    pub fn find(data_dir: &Path) -> Result<Self> {
        let file = ControlFile::read(data_dir)?;
        Ok(Self::new(file.addr, file.token))
    }

    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn unreachable(&self, reason: impl Into<String>) -> Error {
        Error::ControlUnreachable { addr: self.addr, reason: reason.into() }
    }

    /// Sends one request; a non-success answer becomes [`Error::ControlApi`].
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response<Incoming>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(format!("{e} (is the node running?)")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.unreachable(e.to_string()))?;
        let answer = sender.send_request(request).await.map_err(|e| self.unreachable(e.to_string()))?;
        if !answer.status().is_success() {
            let status = answer.status().as_u16();
            let bytes = Limited::new(answer.into_body(), MAX_ERROR_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::ControlApi { status, message });
        }
        Ok(answer)
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<T> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request types serialise"));
        let answer = self.send(method, path, body).await?;
        let bytes = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| self.unreachable(format!("an answer that does not read: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// Node-wide figures.
    pub async fn status(&self) -> Result<Stats> {
        self.get("/v1/status").await
    }

    /// Every peer the node knows.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.get("/v1/peers").await
    }

    /// Connects the node to a peer: `HOST:PORT` or `NODE_ID@HOST:PORT`.
    pub async fn connect(&self, peer: &str) -> Result<NodeId> {
        self.call(Method::POST, "/v1/peers", Some(&ConnectRequest { peer: peer.into() })).await
    }

    /// The node's own resources.
    pub async fn resources(&self) -> Result<Vec<ResourceInfo>> {
        self.get("/v1/resources").await
    }

    /// What the node's peers list.
    pub async fn remote_resources(&self) -> Result<Vec<RemoteResource>> {
        self.get("/v1/resources/remote").await
    }

    /// Imports a file on the node's machine and publishes it (returns when
    /// the import is done; follow it meanwhile with [`Self::uploads`]).
    pub async fn upload(&self, file: &ResourceFile) -> Result<ResourceInfo> {
        self.call(Method::POST, "/v1/upload", Some(file)).await
    }

    /// Imports running now.
    pub async fn uploads(&self) -> Result<Vec<UploadProgress>> {
        self.get("/v1/uploads").await
    }

    /// Queues a download.
    pub async fn download(&self, request: &DownloadRequest) -> Result<TransferId> {
        self.call(Method::POST, "/v1/download", Some(request)).await
    }

    /// Every transfer of this run of the node.
    pub async fn transfers(&self) -> Result<Vec<TransferInfo>> {
        self.get("/v1/transfers").await
    }

    /// One transfer.
    pub async fn transfer(&self, id: TransferId) -> Result<TransferInfo> {
        self.get(&format!("/v1/transfers/{id}")).await
    }

    /// Cancels a queued or running transfer.
    pub async fn cancel(&self, id: TransferId) -> Result<()> {
        self.call(Method::DELETE, &format!("/v1/transfers/{id}"), None::<&()>).await
    }

    /// Gives a queued or running transfer a new priority.
    pub async fn set_priority(&self, id: TransferId, priority: TransferPriority) -> Result<TransferInfo> {
        self.call(Method::PATCH, &format!("/v1/transfers/{id}"), Some(&TransferChange { priority })).await
    }

    /// Writes a complete local resource to a file on the node's machine.
    pub async fn export(&self, file: &ResourceFile) -> Result<()> {
        self.call(Method::POST, "/v1/export", Some(file)).await
    }

    /// Checks every blob at rest.
    pub async fn verify(&self, repair: bool) -> Result<Vec<VerifyInfo>> {
        self.call(Method::POST, "/v1/verify", Some(&VerifyRequest { repair })).await
    }

    /// Collects garbage now.
    pub async fn gc(&self) -> Result<GcReport> {
        self.call(Method::POST, "/v1/gc", Some(&())).await
    }

    /// Whether P2P is on.
    pub async fn p2p_enabled(&self) -> Result<bool> {
        Ok(self.get::<P2pSwitch>("/v1/p2p").await?.enabled)
    }

    /// Turns P2P on or off (see [`crate::Node::set_p2p_enabled`]); returns
    /// the new state.
    pub async fn set_p2p_enabled(&self, enabled: bool) -> Result<bool> {
        Ok(self.call::<P2pSwitch>(Method::PUT, "/v1/p2p", Some(&P2pSwitch { enabled })).await?.enabled)
    }

    /// The node's events from now on.
    pub async fn events(&self) -> Result<EventStream> {
        let answer = self.send(Method::GET, "/v1/events", None).await?;
        Ok(EventStream { body: answer.into_body(), buffer: Vec::new(), addr: self.addr })
    }
}

/// One line of the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EventLine {
    /// An event.
    Event(P2pEvent),
    /// This many events were missed: re-read the state shown.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// The node's events as they happen ([`ControlClient::events`]).
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    buffer: Vec<u8>,
    addr: SocketAddr,
}

impl EventStream {
    /// The next line; `None` when the node ends the stream (it stopped).
    pub async fn next(&mut self) -> Option<Result<EventLine>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(self.parse(&line[..end]));
            }
            if self.buffer.len() > MAX_EVENT_LINE {
                return Some(Err(self.bad(format!("an event line over {MAX_EVENT_LINE} bytes"))));
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(e) => return Some(Err(self.bad(format!("the event stream broke: {e}")))),
            }
        }
    }

    fn bad(&self, reason: String) -> Error {
        Error::ControlUnreachable { addr: self.addr, reason }
    }

    fn parse(&self, line: &[u8]) -> Result<EventLine> {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| self.bad(format!("an event that is not JSON: {e}")))?;
        if value.get("type").and_then(|t| t.as_str()) == Some("lagged") {
            let missed = value.get("missed").and_then(|m| m.as_u64()).unwrap_or(0);
            return Ok(EventLine::Lagged { missed });
        }
        P2pEvent::from_json(&value)
            .map(EventLine::Event)
            .map_err(|e| self.bad(format!("an event that does not read: {e}")))
    }
}
