//! The blob conformance suite on the S3 backend, against a real S3-compatible server on
//! loopback (s3s-fs), plus what only S3 can get wrong: credentials, buckets, aborted uploads.

use bytes::Bytes;
use cocon_storage::blob::testsuite;
use cocon_storage::{BlobStore, S3Blobs, S3Config, StorageError};
use cocon_tests::S3Server;

fn config(server: &S3Server, bucket: &str) -> S3Config {
    S3Config {
        endpoint: server.endpoint.clone(),
        bucket: bucket.into(),
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
        ..S3Config::default()
    }
}

#[tokio::test]
async fn test_s3_blobs_pass_the_conformance_suite() {
    let server = S3Server::start().await.unwrap();
    let blobs = S3Blobs::connect(&config(&server, "conformance")).await.unwrap();
    testsuite::run_all(&blobs, "conformance").await;
    // Connecting again finds the bucket it made.
    let again = S3Blobs::connect(&config(&server, "conformance")).await.unwrap();
    assert_eq!(again.size("conformance/a/hello").await.unwrap(), Some(11));
}

#[tokio::test]
async fn test_s3_refuses_wrong_credentials_and_missing_buckets_clearly() {
    let server = S3Server::start().await.unwrap();
    let mut wrong = config(&server, "bucket");
    wrong.secret_key = "not-the-secret".into();
    let err = S3Blobs::connect(&wrong)
        .await
        .err()
        .expect("wrong credentials are refused");
    assert!(matches!(err, StorageError::Backend(_)), "{err}");
    assert!(
        !err.to_string().contains("not-the-secret"),
        "the secret never shows: {err}"
    );

    let mut no_create = config(&server, "absent");
    no_create.create_bucket = false;
    let err = S3Blobs::connect(&no_create)
        .await
        .err()
        .expect("a missing bucket is refused");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(format!("{no_create:?}").contains("<redacted>"));

    let mut unreachable = config(&server, "bucket");
    unreachable.endpoint = "http://127.0.0.1:1".into();
    assert!(S3Blobs::connect(&unreachable).await.is_err());
}

#[tokio::test]
async fn test_s3_multipart_upload_aborted_leaves_nothing() {
    let server = S3Server::start().await.unwrap();
    let blobs = S3Blobs::connect(&config(&server, "aborts")).await.unwrap();
    // Past one part (8 MiB): a multipart upload is under way when it is abandoned.
    let mut w = blobs.create("i/ab/big").await.unwrap();
    w.write(Bytes::from(vec![1u8; 9 << 20])).await.unwrap();
    w.abort().await;
    assert_eq!(blobs.size("i/ab/big").await.unwrap(), None);
    let mut w = blobs.create("i/ab/big").await.unwrap();
    w.write(Bytes::from(vec![2u8; 9 << 20])).await.unwrap();
    w.write(Bytes::from(vec![3u8; 1 << 20])).await.unwrap();
    assert_eq!(w.finish().await.unwrap().size, 10 << 20);
    assert_eq!(blobs.size("i/ab/big").await.unwrap(), Some(10 << 20));
}

#[tokio::test]
async fn test_s3_streamed_upload_goes_with_its_md5_and_the_server_checks_it() {
    use md5::{Digest, Md5};
    let server = S3Server::start().await.unwrap();
    let blobs = S3Blobs::connect(&config(&server, "streamed")).await.unwrap();
    // Past one part: streamed as one PutObject.
    let data = Bytes::from(vec![5u8; 9 << 20]);
    let md5: [u8; 16] = Md5::digest(&data).into();

    let mut w = blobs
        .create_sized("i/ab/s", data.len() as u64, Some(md5))
        .await
        .unwrap();
    assert!(
        w.computes_md5(),
        "s3s-fs's ETags are MD5s: the probe at connect finds it"
    );
    w.write(data.clone()).await.unwrap();
    let written = w.finish().await.unwrap();
    assert_eq!(written.size, 9 << 20);
    assert_eq!(written.md5, Some(md5), "the MD5 comes from the ETag");
    assert_eq!(blobs.size("i/ab/s").await.unwrap(), Some(9 << 20));

    let mut wrong = md5;
    wrong[0] ^= 1;
    let mut w = blobs
        .create_sized("i/ab/t", data.len() as u64, Some(wrong))
        .await
        .unwrap();
    w.write(data).await.unwrap();
    let err = w
        .finish()
        .await
        .expect_err("the server refuses a content whose MD5 differs");
    assert!(matches!(err, StorageError::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("PutObject"), "{err}");
    assert_eq!(blobs.size("i/ab/t").await.unwrap(), None, "nothing is stored");
}
