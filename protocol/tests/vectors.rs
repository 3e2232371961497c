//! The test vectors in `tests/vectors/` (workspace root), checked against
//! the codec, our store's encoder and decoder, and bao-tree's encoder.
//!
//! Each `.hex` file holds `#` comment lines and hex digits (whitespace is
//! ignored). Message vectors are whole frames (length prefix included);
//! response vectors are a whole blob response (size header and encoding).
//! Invalid requests under `invalid/` carry `# error: CODE` and must be
//! refused with that code. `BLIXARD_WRITE_VECTORS=1` rewrites the files from
//! the code (then review the diff: vectors change only with the protocol).

mod common;

use std::path::PathBuf;

use blixard_protocol::wire::{self, *};
use blixard_protocol::NodeId;
use blixard_store::{ranges, ChunkNum, ChunkRanges, Store};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

fn writing() -> bool {
    std::env::var_os("BLIXARD_WRITE_VECTORS").is_some()
}

fn to_hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(32).map(|c| hex::encode(c) + "\n").collect()
}

/// Reads a vector file: its comment lines and its bytes.
fn read(name: &str) -> (Vec<String>, Vec<u8>) {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let comments = text.lines().filter(|l| l.starts_with('#')).map(str::to_string).collect();
    let digits: String =
        text.lines().filter(|l| !l.starts_with('#')).flat_map(|l| l.chars()).filter(|c| !c.is_whitespace()).collect();
    (comments, hex::decode(digits).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// Checks `bytes` against the file `name`, or writes it.
fn check(name: &str, about: &str, bytes: &[u8]) {
    if writing() {
        let path = dir().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let header: String = about.lines().map(|l| format!("# {l}\n")).collect();
        std::fs::write(&path, header + &to_hex_lines(bytes)).unwrap();
        return;
    }
    let (_, expected) = read(name);
    assert_eq!(hex::encode(bytes), hex::encode(&expected), "vector {name} differs from the code");
}

fn h(n: u8) -> [u8; 32] {
    std::array::from_fn(|i| n.wrapping_add(i as u8))
}

fn requests() -> Vec<(&'static str, &'static str, Request)> {
    let get = |ranges: Vec<u64>| GetRequest { hash: h(0xa0), ranges: RangeSpec(ranges) };
    vec![
        ("request-get-all", "get: hash a0a1..bf, ranges [0] (every chunk)", Request::Get(get(vec![0]))),
        (
            "request-get-ranges",
            "get: chunks 0..16 and 32.. (boundaries [0, 16, 32])",
            Request::Get(get(vec![0, 16, 32])),
        ),
        (
            "request-get-many",
            "get many: two items, [0] and [16, 32]",
            Request::GetMany(GetManyRequest {
                items: vec![get(vec![0]), GetRequest { hash: h(0x10), ranges: RangeSpec(vec![16, 32]) }],
            }),
        ),
        (
            "request-get-seq",
            "get seq: sequence hash a0.., children ranges [0]",
            Request::GetSeq(GetSeqRequest { hash: h(0xa0), children: RangeSpec(vec![0]) }),
        ),
        (
            "request-observe",
            "observe: hash a0.., watch = true",
            Request::Observe(ObserveRequest { hash: h(0xa0), watch: true }),
        ),
        (
            "request-lookup",
            "lookup: vm-image ubuntu-server 22.04",
            Request::Lookup(LookupRequest {
                kind: "vm-image".into(),
                name: "ubuntu-server".into(),
                version: "22.04".into(),
            }),
        ),
        ("request-list-all", "list: every kind", Request::List(ListRequest { kind: None })),
        ("request-list-kind", "list: kind logs", Request::List(ListRequest { kind: Some("logs".into()) })),
        ("request-ping", "ping", Request::Ping),
        ("request-peers", "peers", Request::Peers),
        ("request-get-tree", "get tree: hash a0a1..bf", Request::GetTree(GetTreeRequest { hash: h(0xa0) })),
        ("request-get-index", "get index: hash a0a1..bf", Request::GetIndex(GetTreeRequest { hash: h(0xa0) })),
    ]
}

#[test]
fn request_vectors_match_the_codec() {
    for (name, about, req) in requests() {
        let frame = encode_frame(&req);
        check(&format!("{name}.hex"), about, &frame);
        let (_, bytes) = read(&format!("{name}.hex"));
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4, "{name}: length prefix");
        assert_eq!(decode_request(&bytes[4..]).unwrap(), req, "{name}: decodes to the message");
    }
}

#[test]
fn response_frame_vectors_match_the_codec() {
    // Signed by the key of seed [0x42; 32] (Ed25519 signatures are deterministic).
    let resource = blixard_store::Resource {
        kind: blixard_store::ResourceKind::VmImage,
        name: "ubuntu-server".into(),
        version: "22.04".into(),
        hash: blixard_store::Hash(h(0xa0)),
        size: 1 << 30,
        created_unix_ms: 1_763_942_400_000,
    };
    let info = ResourceInfo::sign(&resource, &blixard_protocol::SecretKey::from_seed(&[0x42; 32]));
    info.verify().unwrap();
    check(
        "claim-signed-message.hex",
        "the message the publisher signs for the lookup vector's claim: the domain tag,\nthen kind, name, version, hash, size, created_unix_ms, publisher",
        &info.signed_message(),
    );
    fn one<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        name: &str,
        about: &str,
        value: T,
    ) {
        let frame = encode_frame(&value);
        check(&format!("{name}.hex"), about, &frame);
        let (_, bytes) = read(&format!("{name}.hex"));
        let back: T = decode_body("vector", &bytes[4..]).unwrap();
        assert_eq!(back, value, "{name}: decodes to the message");
    }
    one(
        "response-availability-partial",
        "observe response: size 40000, not verified, chunks 0..16 held, not complete",
        Availability { size: Some(40_000), size_verified: false, ranges: RangeSpec(vec![0, 16]), complete: false },
    );
    one(
        "response-availability-absent",
        "observe response: nothing held",
        Availability { size: None, size_verified: false, ranges: RangeSpec(vec![]), complete: false },
    );
    one("response-lookup-found", "lookup response: one record", LookupResponse(Some(info.clone())));
    one("response-lookup-missing", "lookup response: no such resource", LookupResponse(None));
    // Binding and ordering (§3.2.1): genuine claims of the same publisher
    // that must be refused in answer to `request-lookup` (22.04).
    let key = blixard_protocol::SecretKey::from_seed(&[0x42; 32]);
    let replayed = ResourceInfo::sign(&blixard_store::Resource { version: "20.04".into(), ..resource.clone() }, &key);
    one(
        "response-lookup-replayed",
        "lookup response: the same publisher's genuine claim for 20.04; refused in answer to a lookup of 22.04",
        LookupResponse(Some(replayed.clone())),
    );
    replayed.verify().unwrap();
    assert!(replayed.check_answers("vm-image", "ubuntu-server", "22.04").is_err());
    info.check_answers("vm-image", "ubuntu-server", "22.04").unwrap();
    let older = ResourceInfo::sign(
        &blixard_store::Resource { created_unix_ms: resource.created_unix_ms - 1, ..resource.clone() },
        &key,
    );
    one(
        "response-lookup-older",
        "lookup response: the same publisher's genuine claim for 22.04 made 1 ms before the found one;\nrefused by a node that accepted the found one",
        LookupResponse(Some(older.clone())),
    );
    older.verify().unwrap();
    older.check_answers("vm-image", "ubuntu-server", "22.04").unwrap();
    assert!(older.created_unix_ms < info.created_unix_ms);
    one(
        "response-list",
        "list response: one record, not truncated",
        ListResponse { items: vec![info], truncated: false },
    );
    one(
        "response-pong-v4",
        "pong: observed 192.0.2.7:7001",
        Pong { observed: "192.0.2.7:7001".parse::<std::net::SocketAddr>().unwrap().into() },
    );
    one(
        "response-pong-v6",
        "pong: observed [2001:db8::1]:443",
        Pong { observed: "[2001:db8::1]:443".parse::<std::net::SocketAddr>().unwrap().into() },
    );
    one(
        "response-peers",
        "peers response: one peer (id 00..1f) at 198.51.100.1:7002",
        PeersResponse {
            peers: vec![PeerEntry {
                id: NodeId(h(0)),
                addrs: vec!["198.51.100.1:7002".parse::<std::net::SocketAddr>().unwrap().into()],
                relay: None,
            }],
        },
    );
    one(
        "response-peers-relay",
        "peers response: one peer (id 00..1f) with no direct address, home relay id 20..3f at 203.0.113.10:3340",
        PeersResponse {
            peers: vec![PeerEntry {
                id: NodeId(h(0)),
                addrs: vec![],
                relay: Some(WireRelay {
                    id: NodeId(h(32)),
                    addr: "203.0.113.10:3340".parse::<std::net::SocketAddr>().unwrap().into(),
                }),
            }],
        },
    );
}

fn invalid() -> Vec<(&'static str, &'static str, Vec<u8>, ErrorCode)> {
    let body = |req: &Request| encode_frame(req)[4..].to_vec();
    let mut trailing = body(&Request::Ping);
    trailing.push(0);
    let mut huge_count = 1u32.to_le_bytes().to_vec();
    huge_count.extend_from_slice(&(1u64 << 60).to_le_bytes());
    vec![
        (
            "invalid/unknown-tag",
            "request tag 10 (not defined in blixard/2)",
            10u32.to_le_bytes().to_vec(),
            ErrorCode::UnknownRequest,
        ),
        ("invalid/short", "a body shorter than a tag", vec![0, 0], ErrorCode::BadRequest),
        ("invalid/trailing-byte", "ping followed by one extra byte", trailing, ErrorCode::BadRequest),
        (
            "invalid/unsorted-ranges",
            "get with boundaries [5, 5] (not strictly increasing)",
            body(&Request::Get(GetRequest { hash: h(0), ranges: RangeSpec(vec![5, 5]) })),
            ErrorCode::BadRequest,
        ),
        (
            "invalid/too-many-ranges",
            "get with 2049 boundaries",
            body(&Request::Get(GetRequest { hash: h(0), ranges: RangeSpec((0..2049).collect()) })),
            ErrorCode::TooMany,
        ),
        ("invalid/huge-count", "get many claiming 2^60 items in 12 bytes", huge_count, ErrorCode::BadRequest),
        (
            "invalid/bad-bool",
            "observe with watch byte 2",
            {
                let mut b = body(&Request::Observe(ObserveRequest { hash: h(0), watch: true }));
                *b.last_mut().unwrap() = 2;
                b
            },
            ErrorCode::BadRequest,
        ),
    ]
}

#[test]
fn invalid_request_vectors_are_refused_with_their_code() {
    for (name, about, body, code) in invalid() {
        let about = format!("{about}\nerror: {}", code.code());
        check(&format!("{name}.hex"), &about, &body);
        let (comments, bytes) = read(&format!("{name}.hex"));
        let expected: u64 = comments
            .iter()
            .find_map(|c| c.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{name}: no error line"))
            .parse()
            .unwrap();
        let got = decode_request(&bytes).expect_err(name);
        assert_eq!(got.code.code(), expected, "{name}: {}", got.reason);
    }
}

/// Blob bytes of the response vectors: byte i is i mod 251.
fn blob(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn chunks(r: std::ops::Range<u64>) -> ChunkRanges {
    ChunkRanges::from(ChunkNum(r.start)..ChunkNum(r.end))
}

fn blob_vectors() -> Vec<(&'static str, &'static str, usize, ChunkRanges)> {
    vec![
        ("response-empty", "blob of 0 bytes, ranges [0]", 0, ChunkRanges::all()),
        ("response-1000-all", "blob of 1000 bytes (one chunk, one group), ranges [0]", 1000, ChunkRanges::all()),
        ("response-16384-all", "blob of 16384 bytes (one whole group), ranges [0]", 16384, ChunkRanges::all()),
        ("response-40000-all", "blob of 40000 bytes (3 groups), ranges [0]", 40_000, ChunkRanges::all()),
        (
            "response-40000-chunk-20",
            "blob of 40000 bytes, ranges [20, 21]: rounded to the group of chunks 16..32",
            40_000,
            chunks(20..21),
        ),
        (
            "response-40000-past-end",
            "blob of 40000 bytes, ranges [100]: past the end, so the last chunk (the size proof)",
            40_000,
            ChunkRanges::from(ChunkNum(100)..),
        ),
    ]
}

#[tokio::test]
async fn blob_response_vectors_match_our_encoder_bao_tree_and_our_decoder() {
    for (name, about, size, requested) in blob_vectors() {
        let data = blob(size);
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(scratch.path().join("src")).unwrap();
        let out = store.import_bytes(data.clone()).await.unwrap();
        let hash = out.hash;
        let effective = wire::effective_ranges(&requested, size as u64);

        // Our server's bytes.
        let mut ours = Vec::new();
        store.write_encoded(&hash, &effective, &mut ours).unwrap();
        let about = format!(
            "{about}\nhash {hash}\nrequest boundaries {:?}, effective boundaries {:?}",
            RangeSpec::new(&requested).0,
            RangeSpec::new(&effective).0
        );
        check(&format!("{name}.hex"), &about, &ours);
        let (_, vector) = read(&format!("{name}.hex"));

        // bao-tree's encoder, from an in-memory outboard.
        let ob = bao_tree::io::outboard::PreOrderMemOutboard::create(&data, bao_tree::BlockSize::from_chunk_log(4));
        let mut theirs = (size as u64).to_le_bytes().to_vec();
        bao_tree::io::sync::encode_ranges_validated(&data[..], &ob, &effective, &mut theirs).unwrap();
        assert_eq!(hex::encode(&theirs), hex::encode(&vector), "{name}: bao-tree encodes differently");
        assert_eq!(ob.root.as_bytes(), &hash.0);

        // The vector decodes into a fresh store, verified.
        let dst = Store::open(scratch.path().join("dst")).unwrap();
        let got = dst.receive_encoded(hash, &effective, &mut &vector[..]).unwrap();
        assert!(got.held.is_superset(&ranges::clamp(&effective, size as u64)), "{name}: {:?}", got.held);
        if requested == ChunkRanges::all() {
            assert!(got.complete, "{name}: a full response completes the blob");
        }
        // Any flipped byte is refused.
        if vector.len() > 8 {
            let mut bad = vector.clone();
            let i = 8 + (bad.len() - 8) / 2;
            bad[i] ^= 1;
            let dst2 = Store::open(scratch.path().join("dst2")).unwrap();
            assert!(dst2.receive_encoded(hash, &effective, &mut &bad[..]).is_err(), "{name}: flip");
        }
    }
}

/// Tree responses (get tree): the size, then every parent in pre-order,
/// which is bao-tree's pre-order outboard; walked top-down, the records
/// prove every group's chaining value, and any flipped byte fails.
#[tokio::test]
async fn tree_response_vectors_match_our_server_bao_tree_and_the_walk() {
    for (name, size) in [("tree-40000", 40_000usize), ("tree-100000", 100_000)] {
        let data = blob(size);
        let store = Store::temporary().unwrap();
        let hash = store.import_bytes(data.clone()).await.unwrap().hash;
        let mut reader = store.tree_reader(&hash).unwrap();
        let mut ours = (size as u64).to_le_bytes().to_vec();
        while let Some(piece) = reader.next_piece(1 << 16).unwrap() {
            ours.extend_from_slice(&piece);
        }
        let groups = size.div_ceil(16384);
        let about = format!(
            "tree of a blob of {size} bytes (byte i is i mod 251): {groups} groups, {} parents\nhash {hash}",
            groups - 1
        );
        check(&format!("{name}.hex"), &about, &ours);
        let (_, vector) = read(&format!("{name}.hex"));
        let ob = bao_tree::io::outboard::PreOrderMemOutboard::create(&data, bao_tree::BlockSize::from_chunk_log(4));
        assert_eq!(hex::encode(&vector[8..]), hex::encode(&ob.data), "{name}: bao-tree's outboard differs");
        let mut walk = blixard_store::TreeWalk::new(&hash, size as u64);
        let mut cvs = Vec::new();
        for rec in vector[8..].chunks(64) {
            walk.push(rec, |g, cv| cvs.push((g, *cv))).unwrap();
        }
        assert!(walk.is_done());
        let want: Vec<_> = (0..groups as u64)
            .map(|g| {
                let piece = &data[g as usize * 16384..((g as usize + 1) * 16384).min(size)];
                let mut h = blake3::Hasher::new();
                blake3::hazmat::HasherExt::set_input_offset(&mut h, g * 16384);
                h.update(piece);
                (g, blake3::hazmat::HasherExt::finalize_non_root(&h))
            })
            .collect();
        assert_eq!(cvs, want, "{name}: group chaining values");
        for i in 8..vector.len() {
            let mut bad = vector[8..].to_vec();
            bad[i - 8] ^= 1;
            let mut walk = blixard_store::TreeWalk::new(&hash, size as u64);
            assert!(bad.chunks(64).try_for_each(|rec| walk.push(rec, |_, _| {})).is_err(), "{name}: flip at {i}");
        }
    }
}

/// The content index vector: what our store builds for the blob, what the
/// chunker gives for its bytes, and what the decoder accepts.
#[tokio::test]
async fn content_index_vector_matches_the_chunker_and_the_decoder() {
    use blixard_store::content_index::{chunk_bytes, decode_index, encode_index};
    let size = 300_000usize;
    // Content that chunks like real data (a periodic blob would cut only
    // at the maximum): the BLAKE3 output stream of a fixed input.
    let mut data = vec![0u8; size];
    blake3::Hasher::new().update(b"blixard index vector").finalize_xof().fill(&mut data);
    let store = Store::temporary().unwrap();
    let out = store.import_bytes(data.clone()).await.unwrap();
    store.build_content_index(&out.hash).unwrap();
    let ours = store.content_index(&out.hash).unwrap().unwrap();
    let entries = chunk_bytes(&data);
    assert_eq!(ours, encode_index(size as u64, &entries));
    let about = format!(
        "content index (get index response) of a blob of {size} bytes, the BLAKE3 XOF output of \"blixard index vector\": {} chunks\nhash {}",
        entries.len(),
        out.hash
    );
    check("index-300000.hex", &about, &ours);
    let (_, vector) = read("index-300000.hex");
    assert_eq!(decode_index(size as u64, &vector[..]).unwrap(), entries);
    for (e, next) in entries.iter().zip(entries.iter().skip(1)) {
        assert_eq!(e.offset + e.len as u64, next.offset);
    }
}
