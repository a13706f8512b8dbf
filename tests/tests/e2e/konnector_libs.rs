//! A konnector written as Cozy's are runs unchanged: `tests/konnectors/libs-probe`, a Node
//! program on the published `cozy-konnector-libs` with its dependencies installed from the npm
//! registry, logs in with its account's credentials (sealed at rest, opened for it), downloads a
//! bill from its vendor and saves it with `saveBills` (cozy-client and cozy-client-js calls on
//! `/files` and `/data`): the PDF lands in the folder to save, the `io.cozy.bills` document
//! points at it, and a second run saves nothing twice.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use cocon_tests::Cocon;
use reqwest::Method;
use serde_json::json;

use super::jobs::{attr, cli, ended_within, id, push};

const PDF: &[u8] = b"%PDF-1.4 probe bill\n";

/// The vendor's site: any request gets the bill. Answers its address.
pub(super) fn vendor() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                PDF.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(PDF);
        }
    });
    format!("http://{addr}")
}

/// The konnector's code with its dependencies (`npm ci`, from the npm registry), in `into`.
fn build_konnector(into: &std::path::Path) {
    let files = [
        "package.json",
        "package-lock.json",
        ".npmrc",
        "manifest.konnector",
        "index.js",
    ];
    cocon_tests::npm_ci("konnectors/libs-probe", &files, into, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_konnector_on_cozy_konnector_libs_saves_a_bill_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let code = dir.path().join("libs-probe");
    let npm = std::thread::spawn({
        let code = code.clone();
        move || build_konnector(&code)
    });
    let cocon = Cocon::start(&data).await.unwrap();
    let api = cocon
        .instance(
            "alice.test",
            "io.cozy.jobs io.cozy.accounts io.cozy.bills io.cozy.files",
        )
        .await
        .unwrap();
    npm.join().expect("the konnector is built");
    let (ok, _, err) = cli(
        &cocon,
        &data,
        &["konnectors", "install", "libsprobe", code.to_str().unwrap()],
    );
    assert!(ok, "{err}");

    let folder = api
        .send(
            Method::POST,
            "/files/io.cozy.files.root-dir?Type=directory&Name=Bills",
            None,
        )
        .await;
    assert_eq!(folder.status, 201, "{}", folder.text);
    let folder = folder.body["data"]["id"].as_str().unwrap().to_string();
    let vendor = vendor();
    let run = |account: &'static str| {
        let (api, folder, vendor) = (&api, folder.clone(), vendor.clone());
        async move {
            let queued = push(
                api,
                "konnector",
                json!({"arguments": {"konnector": "libsprobe", "account": account,
                                     "folder_to_save": folder, "vendor_url": vendor}}),
            )
            .await;
            assert_eq!(queued.status, 202, "{}", queued.text);
            ended_within(api, &id(&queued), Duration::from_secs(120)).await
        }
    };

    // A wrong password: the library's LOGIN_FAILED ends the job so, as cozy-stack shows it.
    let wrong = api
        .put(
            "/data/io.cozy.accounts/wrong",
            &json!({"account_type": "libsprobe", "auth": {"login": "alice", "password": "not-it"}}),
        )
        .await;
    assert_eq!(wrong.status, 200, "{}", wrong.text);
    let failed = run("wrong").await;
    assert_eq!(attr(&failed, "state"), "errored", "{}", failed.text);
    assert_eq!(attr(&failed, "error"), "LOGIN_FAILED", "{}", failed.text);

    let account = api
        .put(
            "/data/io.cozy.accounts/acc1",
            &json!({"account_type": "libsprobe", "auth": {"login": "alice", "password": "pw-of-the-vendor"}}),
        )
        .await;
    assert_eq!(account.status, 200, "{}", account.text);
    for round in 0..2 {
        let done = run("acc1").await;
        assert_eq!(attr(&done, "state"), "done", "run {round}: {}", done.text);

        let file = api.get("/files/metadata?Path=/Bills/bill-2026-11.pdf").await;
        assert_eq!(file.status, 200, "run {round}: {}", file.text);
        let file_id = file.body["data"]["id"].as_str().unwrap().to_string();
        assert_eq!(file.body["data"]["attributes"]["mime"], "application/pdf");
        let content = api.get(&format!("/files/download/{file_id}")).await;
        assert_eq!(content.text.as_bytes(), PDF, "run {round}");
        let listing = api.get(&format!("/files/{folder}")).await;
        let entries = listing.body["included"].as_array().map_or(0, Vec::len);
        assert_eq!(entries, 1, "run {round}: one file, saved once: {}", listing.text);

        let bills = api
            .post(
                "/data/io.cozy.bills/_find",
                &json!({"selector": {"vendor": "Probe Telecom"}}),
            )
            .await;
        assert_eq!(bills.status, 200, "{}", bills.text);
        let docs = bills.body["docs"].as_array().unwrap();
        assert_eq!(docs.len(), 1, "run {round}: one bill, saved once: {}", bills.text);
        assert_eq!(docs[0]["amount"], 12.5);
        assert_eq!(docs[0]["date"], "2026-11-30T00:00:00.000Z");
        assert_eq!(docs[0]["invoice"], format!("io.cozy.files:{file_id}").as_str());
    }
}
