//! Ranges between two stores: a seeder serves chosen chunk ranges of a
//! blob as bao responses, a leecher verifies and keeps them, reads what it
//! holds while the rest is missing, then completes the blob. The bytes in
//! between could cross any transport; every byte is checked against the
//! hash on arrival.
//!
//! `cargo run -p blixard-store --example ranges`

use std::io::{Read, Seek, SeekFrom};

use blixard_store::{is_not_held, ranges, BlobStatus, ChunkNum, ChunkRanges, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (seeder, leecher) = (Store::temporary()?, Store::temporary()?);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let imported = seeder.import_bytes(data.clone()).await?;
    let hash = imported.hash;
    seeder.set_tag_and_release("image", imported.lease)?;

    // Any chunk ranges (1 KiB chunks) may be asked for; the store rounds
    // them to its 16 KiB groups. Here: the first 100 KiB and the last
    // 1000 chunks.
    let last = ranges::chunk_count(data.len() as u64);
    let first = ChunkRanges::from(ChunkNum(0)..ChunkNum(100)) | ChunkRanges::from(ChunkNum(last - 1000)..);
    let mut response = Vec::new(); // the size header, then the encoding
    seeder.write_encoded(&hash, &first, &mut response)?;
    let got = leecher.receive_encoded(hash, &first, &mut &response[..])?;
    println!("received {} bytes of response, {:?}", response.len(), got);

    // A partial blob reads what it holds, verified, and says what it lacks.
    let mut reader = leecher.reader(&hash)?;
    reader.seek(SeekFrom::Start(50_000))?;
    let mut buf = [0u8; 16];
    reader.read_exact(&mut buf)?;
    assert_eq!(&buf, &data[50_000..50_016]);
    reader.seek(SeekFrom::Start(1_000_000))?;
    let e = reader.read(&mut buf).unwrap_err();
    assert!(is_not_held(&e));
    println!("partial: byte 50000 read, byte 1000000 is {e}");

    // Ask for exactly what is missing.
    let missing = leecher.missing(&hash)?.expect("partial");
    let mut rest = Vec::new();
    seeder.write_encoded(&hash, &missing, &mut rest)?;
    leecher.receive_encoded(hash, &missing, &mut &rest[..])?;
    assert_eq!(leecher.status(&hash)?, BlobStatus::Complete { size: data.len() as u64 });
    assert_eq!(leecher.read_to_vec(&hash)?, data);
    println!("complete: {} bytes, {} bytes of responses in all", data.len(), response.len() + rest.len());
    Ok(())
}
