//! A conformance suite that can be pointed at any peer: it dials the peer,
//! runs every check of the specification's required behaviour, and reports
//! each as pass or fail with what it saw.
//!
//! The peer must serve at least one blob: named by the caller, or else the
//! first resource it lists (a blob of more than 32 KiB exercises the most).
//! Downloads go into throwaway stores under a scratch directory.

use std::{net::SocketAddr, path::Path, time::Duration};

use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, Hash, Store};

use crate::{client, limits, wire, Connection, Endpoint, Error, ErrorCode, NodeId, SecretKey};

/// Time each check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    /// The check's name.
    pub name: &'static str,
    /// True if the peer behaved as specified.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// True if every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The names of failed checks.
    pub fn failures(&self) -> Vec<&'static str> {
        self.checks.iter().filter(|c| !c.passed).map(|c| c.name).collect()
    }

    /// A pass/fail table.
    pub fn table(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
        let mut out = format!("{:<width$}  {:<6} detail\n", "check", "result");
        for c in &self.checks {
            out.push_str(&format!("{:<width$}  {:<6} {}\n", c.name, if c.passed { "pass" } else { "FAIL" }, c.detail));
        }
        let failed = self.failures().len();
        out.push_str(&format!(
            "{} checks, {} passed, {} failed\n",
            self.checks.len(),
            self.checks.len() - failed,
            failed
        ));
        out
    }
}

type Outcome = std::result::Result<String, String>;

struct Runner {
    report: Report,
}

impl Runner {
    async fn check<F: std::future::Future<Output = Outcome>>(&mut self, name: &'static str, f: F) -> bool {
        let (passed, detail) = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
            Ok(Ok(d)) => (true, d),
            Ok(Err(d)) => (false, d),
            Err(_) => (false, format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        self.report.checks.push(Check { name, passed, detail });
        passed
    }

    fn fail(&mut self, name: &'static str, detail: &str) {
        self.report.checks.push(Check { name, passed: false, detail: detail.into() });
    }
}

/// Runs every check against the node `id` at `addr`, using `hash` as the
/// test blob if given. `scratch` holds throwaway stores.
pub async fn run(id: NodeId, addr: SocketAddr, hash: Option<Hash>, scratch: &Path) -> Report {
    let mut r = Runner { report: Report::default() };
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("valid");
    let endpoint = match Endpoint::bind(SecretKey::generate(), bind, Default::default()) {
        Ok(e) => e,
        Err(e) => {
            r.fail("handshake", &format!("cannot bind a local endpoint: {e}"));
            return r.report;
        }
    };
    let conn = match endpoint.connect(addr, Some(id)).await {
        Ok(c) => {
            r.report.checks.push(Check { name: "handshake", passed: true, detail: format!("TLS 1.3, node {id}") });
            c
        }
        Err(e) => {
            r.fail("handshake", &e.to_string());
            return r.report;
        }
    };

    r.check("wrong identity refused", async {
        let other = SecretKey::generate().node_id();
        match endpoint.connect(addr, Some(other)).await {
            Err(blixard_net::Error::WrongIdentity { .. }) => Ok("a dial expecting another key fails".into()),
            Err(e) => Err(format!("failed, but not on identity: {e}")),
            Ok(_) => Err("connected although the key differs".into()),
        }
    })
    .await;

    let local_port = endpoint.local_addr().port();
    r.check("ping", async {
        let p = client::ping(&conn).await.map_err(|e| e.to_string())?;
        if p.observed.port() != local_port {
            return Err(format!("observed {}, our port is {local_port}", p.observed));
        }
        Ok(format!("rtt {:?}, observed {}", p.rtt, p.observed))
    })
    .await;

    let mut listed = None;
    r.check("list", async {
        let l = client::list(&conn, None).await.map_err(|e| e.to_string())?;
        if l.items.len() > limits::MAX_LIST_ITEMS {
            return Err(format!("{} items, over the limit", l.items.len()));
        }
        listed = l.items.iter().max_by_key(|i| i.size.min(1 << 20)).cloned();
        Ok(format!("{} resources", l.items.len()))
    })
    .await;

    let target = match (hash, &listed) {
        (Some(h), _) => h,
        (None, Some(item)) => Hash(item.hash),
        (None, None) => {
            r.fail("get full", "the peer lists no resources and no --hash was given: nothing to fetch");
            Hash([0; 32])
        }
    };
    let known = hash.is_some() || listed.is_some();

    if let (None, Some(item)) = (hash, &listed) {
        let item = item.clone();
        r.check("lookup", async {
            let found =
                client::lookup(&conn, &item.kind, &item.name, &item.version).await.map_err(|e| e.to_string())?;
            match found {
                Some(f) if f.hash == item.hash => Ok(format!("{} {} {}", item.kind, item.name, item.version)),
                Some(_) => Err("lookup and list disagree on the hash".into()),
                None => Err("a listed resource was not found by lookup".into()),
            }
        })
        .await;
    }

    let mut size = None;
    if known {
        let dir = scratch.join("full");
        r.check("get full", async {
            let store = Store::open(&dir).map_err(|e| e.to_string())?;
            let out = client::get(&conn, &store, target, &Default::default()).await.map_err(|e| e.to_string())?;
            if !out.complete || out.data_bytes != out.size {
                return Err(format!("incomplete: {} of {} bytes", out.data_bytes, out.size));
            }
            size = Some(out.size);
            Ok(format!("{} bytes verified", out.size))
        })
        .await;
    }

    if let Some(size) = size {
        let groups = ranges::chunk_count(size).div_ceil(16);
        let partial = if groups > 1 {
            ChunkRanges::from(ChunkNum(16)..ChunkNum(32))
        } else {
            ChunkRanges::from(ChunkNum(0)..ChunkNum(1))
        };
        for (name, wanted) in [
            ("get partial range", partial),
            ("get last chunk", ranges::last_chunk(size)),
            ("get past the end", ChunkRanges::from(ChunkNum(1 << 50)..)),
        ] {
            let dir = scratch.join(name.replace(' ', "-"));
            let conn = &conn;
            r.check(name, async move {
                let store = Store::open(&dir).map_err(|e| e.to_string())?;
                let out = client::get_ranges(conn, &store, target, wanted.clone(), &Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let expect = wire::effective_ranges(&wanted, size);
                if out.size != size || out.held != expect {
                    return Err(format!("size {} held {:?}, expected {size} and {expect:?}", out.size, out.held));
                }
                if name != "get partial range" {
                    match store.status(&target).map_err(|e| e.to_string())? {
                        BlobStatus::Partial { size_verified: true, .. } | BlobStatus::Complete { .. } => {}
                        s => return Err(format!("the size was not proven: {s:?}")),
                    }
                }
                Ok(format!("{} data bytes, ranges {:?}", out.data_bytes, out.held))
            })
            .await;
        }

        r.check("observe", async {
            let a = client::observe(&conn, target).await.map_err(|e| e.to_string())?;
            if !a.complete || a.size != Some(size) {
                return Err(format!("{a:?}"));
            }
            Ok("complete, size matches".into())
        })
        .await;

        r.check("get tree", async {
            let groups = ranges::chunk_count(size).div_ceil(16).max(1);
            if groups < 2 {
                return Ok("one group: no tree to ask for".into());
            }
            let store = Store::open(scratch.join("tree")).map_err(|e| e.to_string())?;
            let out = client::get_tree(&conn, &store, target, size, &Default::default(), &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let want = 8 + (groups - 1) * 64;
            if out.wire_bytes != want {
                return Err(format!("{} bytes, expected {want}", out.wire_bytes));
            }
            let missing = Hash(rand_bytes());
            match client::get_tree(&conn, &store, missing, size, &Default::default(), &Default::default()).await {
                Err(Error::Remote(ErrorCode::NotFound)) => {}
                other => {
                    return Err(format!("the tree of an unknown hash: expected not found (code 5), got {other:?}"))
                }
            }
            Ok(format!("{} parents verified top-down; unknown hash: not found", groups - 1))
        })
        .await;
    }

    r.check("unknown hash", async {
        let dir = scratch.join("unknown");
        let store = Store::open(&dir).map_err(|e| e.to_string())?;
        let missing = Hash(rand_bytes());
        match client::get(&conn, &store, missing, &Default::default()).await {
            Err(Error::Remote(ErrorCode::NotFound)) => Ok("not found (code 5)".into()),
            Err(e) => Err(format!("expected not found (code 5), got: {e}")),
            Ok(_) => Err("served a blob nobody has".into()),
        }
    })
    .await;

    let frame = |body: &[u8]| {
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    };
    let too_many = wire::encode_frame(&wire::Request::Get(wire::GetRequest {
        hash: target.0,
        ranges: wire::RangeSpec((0..limits::MAX_RANGE_BOUNDARIES as u64 + 2).collect()),
    }));
    let unsorted = wire::encode_frame(&wire::Request::Get(wire::GetRequest {
        hash: target.0,
        ranges: wire::RangeSpec(vec![9, 3]),
    }));
    let mut oversized = (limits::MAX_REQUEST_BYTES + 1).to_le_bytes().to_vec();
    oversized.extend_from_slice(&[0; 512]);
    let cases: [(&'static str, Vec<u8>, ErrorCode); 6] = [
        ("malformed request", frame(&[0, 0, 0, 0, 0xde, 0xad]), ErrorCode::BadRequest),
        ("unknown request", frame(&[99, 0, 0, 0]), ErrorCode::UnknownRequest),
        ("empty stream", Vec::new(), ErrorCode::BadRequest),
        ("oversized request", oversized, ErrorCode::RequestTooLarge),
        ("too many ranges", too_many, ErrorCode::TooMany),
        ("unsorted ranges", unsorted, ErrorCode::BadRequest),
    ];
    for (name, bytes, expected) in cases {
        let conn = &conn;
        r.check(name, async move {
            match raw_request(conn, &bytes).await {
                Some(code) if code == expected => Ok(format!("{code}")),
                Some(code) => Err(format!("expected {expected}, got {code}")),
                None => Err(format!("expected a reset with {expected}, the stream ended without one")),
            }
        })
        .await;
    }

    r.check("too many streams", async {
        let n = limits::MAX_STREAMS_PER_CONNECTION as usize * 4;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let conn = conn.clone();
            set.spawn(async move { client::ping(&conn).await });
        }
        let mut failed = 0;
        while let Some(r) = set.join_next().await {
            failed += usize::from(!matches!(r, Ok(Ok(_))));
        }
        if failed > 0 {
            return Err(format!("{failed} of {n} concurrent pings failed"));
        }
        client::ping(&conn).await.map_err(|e| format!("the connection broke: {e}"))?;
        Ok(format!("{n} concurrent streams answered"))
    })
    .await;

    r.check("peers", async {
        let p = client::peers(&conn).await.map_err(|e| e.to_string())?;
        Ok(format!("{} peers", p.len()))
    })
    .await;

    conn.close(ErrorCode::Ok, "conformance done");
    r.report
}

async fn raw_request(conn: &Connection, bytes: &[u8]) -> Option<ErrorCode> {
    let (mut send, mut recv) = conn.quinn().open_bi().await.ok()?;
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    match recv.read_to_end(1 << 20).await {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Some(ErrorCode::from_varint(code)),
        _ => None,
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("the system RNG works");
    b
}
