//! The drive app shares a folder with another Cozy (`tests/browser/drive_share.py`): alice
//! invites Bob by his e-mail address in Chromium; the invitation is mailed; Bob takes it on his
//! own host in the browser (`sharing_flow.py`); the sharing is then ready on both hosts and the
//! folder's files reach Bob's Cozy.

use cocon_tests::drive::{ROOT, new_dir, upload};
use cocon_tests::sharing::{PASSPHRASE, link_in, node_at, person, port};
use cocon_tests::{Cocon, SmtpServer};

use super::browser::run_script;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_drive_shares_a_folder_with_another_cozy() {
    let smtp = SmtpServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice_host = Cocon::builder(&dir.path().join("alice-host"))
        .smtp(smtp.port)
        .start()
        .await
        .unwrap();
    let bob_host = Cocon::start(&dir.path().join("bob-host")).await.unwrap();
    let (ap, bp) = (port(&alice_host), port(&bob_host));
    let (alice_domain, bob_domain) = (format!("alice.localhost:{ap}"), format!("bob.localhost:{bp}"));
    person(&alice_host, &alice_domain).await;
    person(&bob_host, &bob_domain).await;
    alice_host.app_installed(&alice_domain, "drive").await;
    let token = alice_host
        .token(&alice_domain, "io.cozy.files io.cozy.sharings")
        .await
        .unwrap();
    let alice = alice_host.api(&alice_domain, Some(&token));
    let folder = new_dir(&alice, ROOT, "Holidays").await;
    assert_eq!(upload(&alice, &folder, "plan.txt", b"the plan").await.status, 201);

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let seen = run_script(
        "drive_share.py",
        &[
            &format!("http://drive.alice.localhost:{ap}/"),
            PASSPHRASE,
            "Holidays",
            "bob@example.org",
            shots.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(seen["button"], "Share with a Cozy", "{seen}");
    assert_eq!(seen["before"], "No one yet.", "{seen}");
    assert_eq!(seen["refused_empty"], true, "{seen}");
    assert_eq!(seen["problem"], false, "{seen}");
    assert_eq!(seen["said"], "Invitation sent to bob@example.org.", "{seen}");
    let members = seen["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{seen}");
    assert_eq!(members[0][0], "bob@example.org", "{seen}");

    // The sharing the page made: the folder, kept in sync, with Bob invited by mail.
    let listed = alice.get("/sharings/doctype/io.cozy.files").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let sharing = &listed.body["data"][0];
    let id = sharing["id"].as_str().unwrap().to_string();
    assert_eq!(sharing["attributes"]["rules"][0]["values"][0], folder.as_str());
    assert_eq!(sharing["attributes"]["rules"][0]["add"], "sync");
    let mails = smtp.wait_for(1).await;
    assert!(mails[0].contains("bob@example.org"), "{}", mails[0]);
    let (_, text) = cocon_tests::text_of(&mails[0]);
    let link = link_in(&text, &format!("http://{alice_domain}"));

    // Bob takes it on his Cozy, in the browser; the sharing is then ready.
    let taken = run_script(
        "sharing_flow.py",
        &[&link, &format!("http://{bob_domain}"), PASSPHRASE, "Holidays"],
    )
    .await;
    assert_eq!(taken["accepted"], true, "{taken}");
    let on_alice = alice.get(&format!("/sharings/{id}")).await;
    assert_eq!(
        on_alice.body["data"]["attributes"]["members"][1]["status"], "ready",
        "{}",
        on_alice.text
    );
    let bob_token = bob_host.token(&bob_domain, "io.cozy.files").await.unwrap();
    let bob = bob_host.api(&bob_domain, Some(&bob_token));
    let plan = node_at(&bob, "/Shared with me/Holidays/plan.txt", |_| true).await;
    assert_eq!(plan["attributes"]["size"], "8", "{plan}");
}
