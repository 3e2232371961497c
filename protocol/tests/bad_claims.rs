//! A hostile peer answering lookups with genuine claims that are not
//! answers: a publisher's claim for another version, kind or name, and a
//! claim of a size the protocol does not allow. (Apart from `bad_server`,
//! whose memory checks must not see these tests' endpoints.)

mod common;

use blixard_protocol::{client, frame, wire, Error};
use blixard_store::Hash;

/// A server that answers every lookup with `claim`, whatever was asked.
async fn replaying_server(claim: wire::ResourceInfo) -> blixard_protocol::Endpoint {
    let ep = common::endpoint();
    let ep2 = ep.clone();
    tokio::spawn(async move {
        while let Some(Ok(conn)) = ep2.accept().await {
            let claim = claim.clone();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.quinn().accept_bi().await {
                    let _ = frame::read_frame_body(&mut recv, 65536).await;
                    let _ = frame::write_frame(&mut send, &wire::LookupResponse(Some(claim.clone()))).await;
                    let _ = send.finish();
                }
            });
        }
    });
    ep
}

/// A genuine signed claim of a publisher for one version, replayed by a
/// stranger in answer to a lookup of another version, kind or name, is
/// refused; and a genuine claim of a size over the protocol's maximum is
/// refused before anything is asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_oversized_claims_are_refused_at_lookup() {
    use blixard_store::{Resource, ResourceKind};
    let publisher = blixard_protocol::SecretKey::generate();
    let old = Resource {
        kind: ResourceKind::VmImage,
        name: "ubuntu-server".into(),
        version: "20.04".into(),
        hash: Hash::of(b"20.04"),
        size: 5,
        created_unix_ms: 1,
    };
    let claim = wire::ResourceInfo::sign(&old, &publisher);
    let server = replaying_server(claim).await;
    let client = common::endpoint();
    let conn = client.connect(server.local_addr(), Some(server.node_id())).await.unwrap();
    let honest = client::lookup(&conn, "vm-image", "ubuntu-server", "20.04").await.unwrap();
    assert_eq!(honest.map(|c| c.version), Some("20.04".to_string()), "the claim for what was asked is taken");
    for (kind, name, version) in [
        ("vm-image", "ubuntu-server", "22.04"),
        ("configuration", "ubuntu-server", "20.04"),
        ("vm-image", "other", "20.04"),
    ] {
        match client::lookup(&conn, kind, name, version).await {
            Err(Error::BadClaim(why)) => assert!(why.contains("20.04") && why.contains(version), "{why}"),
            other => panic!("a replayed claim for {kind} {name} {version} was taken: {other:?}"),
        }
    }

    let huge = Resource { size: blixard_store::MAX_BLOB_SIZE + 1, version: "22.04".into(), ..old };
    let server = replaying_server(wire::ResourceInfo::sign(&huge, &publisher)).await;
    let conn = client.connect(server.local_addr(), Some(server.node_id())).await.unwrap();
    match client::lookup(&conn, "vm-image", "ubuntu-server", "22.04").await {
        Err(e @ Error::BadClaim(_)) => {
            assert!(e.is_peer_misbehaving() && e.to_string().contains(&publisher.node_id().to_string()), "{e}")
        }
        other => panic!("a claim over the maximum size was taken: {other:?}"),
    }
}
