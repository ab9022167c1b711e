//! The Sync Engine through a real S3-protocol server (s3s with SigV4 checks, in-process): an
//! offer uploaded to the bucket is fetched by the receiver with presigned URLs alone, after the
//! sender is gone; a revoked offer's objects leave the bucket.

mod common;
#[path = "../actors/tests/s3_support/mod.rs"]
mod s3_support;

use common::{linked_pair, TCP};
use hermes::config::S3Config;
use hermes::proto::sync::Location;
use hermes::sync::{Backend, OfferOptions, State};
use s3_support::{S3Server, ACCESS_KEY, BUCKET, REGION, SECRET_KEY};
use std::time::Duration;

const MIB: usize = 1 << 20;

fn s3_config(server: &S3Server, creds: &std::path::Path) -> S3Config {
    S3Config {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.into(),
        region: REGION.into(),
        prefix: "t/".into(),
        path_style: true,
        credentials_file: Some(creds.to_path_buf()),
        profile: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_through_s3_is_fetched_with_presigned_urls_after_the_sender_left() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let s3 = s3_config(&server, &creds);
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |c| {
        c.sync.chunk_size = hermes::config::ByteSize(MIB as u64);
        c.sync.s3 = Some(s3.clone());
    })
    .await;
    let src = dir.path().join("shard.bin");
    let data: Vec<u8> = (0..13 * MIB + 7).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let opts = OfferOptions {
        via: Some(Backend::S3),
        no_delivery: true,
        ..OfferOptions::default()
    };
    let ticket = a
        .offer(&src, &nb.ss58, 3, opts.clone())
        .await
        .expect("offer via S3");
    assert!(
        matches!(ticket.body.locations[0], Location::Presigned { .. }),
        "presigned URLs come first"
    );
    assert!(
        !ticket.to_string().contains(SECRET_KEY) && !ticket.to_string().contains(ACCESS_KEY),
        "the ticket carries no credentials"
    );
    // The sealed payload is in the bucket as one object.
    let sealed = server.object_path(&format!("t/{}.sealed", ticket.body.transfer_id));
    assert_eq!(
        std::fs::metadata(&sealed).unwrap().len(),
        ticket.body.layout.sealed_size()
    );

    // The sender is gone: only the bucket can serve the transfer.
    a.shutdown().await.unwrap();
    let dest = dir.path().join("got.bin");
    let t = b.fetch(&ticket.to_string(), &dest).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), t.wait())
        .await
        .expect("download ends")
        .expect("download from S3");
    assert!(std::fs::read(&dest).unwrap() == data, "byte-exact");
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_offers_need_usable_credentials_and_revoking_deletes_the_objects() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = wrong\n"),
    )
    .unwrap();
    let s3 = s3_config(&server, &creds);
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |c| {
        c.sync.chunk_size = hermes::config::ByteSize(MIB as u64);
        c.sync.s3 = Some(s3.clone());
    })
    .await;
    let src = dir.path().join("f");
    std::fs::write(&src, vec![9u8; 3 * MIB]).unwrap();
    let opts = OfferOptions {
        via: Some(Backend::S3),
        no_delivery: true,
        ..OfferOptions::default()
    };
    // A wrong secret: the upload is refused by the server and the offer says so.
    let e = a.offer(&src, &nb.ss58, 3, opts.clone()).await.unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    // The right one: uploaded; revoked: both objects deleted, the receiver is refused.
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |c| {
        c.sync.chunk_size = hermes::config::ByteSize(MIB as u64);
        c.sync.s3 = Some(s3.clone());
    })
    .await;
    let ticket = a.offer(&src, &nb.ss58, 3, opts).await.unwrap();
    let sealed = server.object_path(&format!("t/{}.sealed", ticket.body.transfer_id));
    assert!(sealed.exists());
    let info = a.revoke(ticket.body.transfer_id).await.unwrap();
    assert_eq!(info.state, State::Revoked);
    assert!(!sealed.exists(), "the payload object is deleted");
    let dest = dir.path().join("r");
    let t = b.fetch(&ticket.to_string(), &dest).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(60), t.wait())
        .await
        .expect("download ends")
        .unwrap_err();
    assert!(e.contains("revoked"), "{e}");
    assert!(!dest.exists());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
