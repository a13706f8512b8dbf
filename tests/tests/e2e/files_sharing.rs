//! Sharing links on files and folders, end to end: a sharing-link code whose rules name a
//! folder opens that folder and everything under it, with the verbs it names, and nothing
//! else; it may need a password, and it expires.

use std::time::{Duration, Instant};

use cocon_tests::Api;
use cocon_tests::drive::{ROOT, created as id, new_dir as mkdir, upload};
use reqwest::Method;
use serde_json::{Value, json};

/// A sharing-link code for `verbs` on the given files or folders.
async fn share(owner: &Api, ids: &[&str], verbs: &[&str], extra: Value) -> String {
    let mut body = json!({"data": {"type": "io.cozy.permissions", "attributes": {"permissions": {
        "files": {"type": "io.cozy.files", "verbs": verbs, "values": ids}
    }}}});
    if let Value::Object(more) = extra {
        for (k, v) in more {
            body["data"]["attributes"][k] = v;
        }
    }
    let created = owner.post("/permissions?codes=friend", &body).await;
    assert_eq!(created.status, 200, "{}", created.text);
    created.body["data"]["attributes"]["codes"]["friend"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn test_a_folder_link_opens_that_folder_and_what_is_under_it_only() {
    let (_dir, _cocon, owner) = cocon_tests::drive::setup("io.cozy.files io.cozy.permissions").await;
    let shared = mkdir(&owner, ROOT, "Holiday").await;
    let inner = mkdir(&owner, &shared, "Day 1").await;
    let photo = id(&upload(&owner, &inner, "beach.jpg", b"sand and sea").await);
    let private = mkdir(&owner, ROOT, "Private").await;
    let secret = id(&upload(&owner, &private, "diary.txt", b"dear diary").await);

    let code = share(&owner, &[&shared], &["GET"], json!({})).await;
    let guest = owner.with_token(Some(&code));

    // Reading: the folder, what is under it, by id and by path; its contents.
    let listed = guest.get(&format!("/files/{shared}")).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["meta"]["count"], 1);
    assert_eq!(guest.get(&format!("/files/{photo}")).await.status, 200);
    assert_eq!(
        guest
            .get("/files/metadata?Path=/Holiday/Day%201/beach.jpg")
            .await
            .status,
        200
    );
    let got = guest
        .request(Method::GET, &format!("/files/download/{photo}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "sand and sea");
    let zip = guest
        .post("/files/archive", &json!({"data": {"attributes": {"ids": [shared]}}}))
        .await;
    assert_eq!(zip.status, 200, "an archive of the shared folder: {}", zip.text);

    // Nothing outside it: not the private folder, its file, the root, a path to them.
    for path in [
        format!("/files/{private}"),
        format!("/files/{secret}"),
        format!("/files/{ROOT}"),
        format!("/files/download/{secret}"),
        "/files/metadata?Path=/Private/diary.txt".to_string(),
    ] {
        let denied = guest.get(&path).await;
        assert_eq!(denied.status, 403, "{path}: {}", denied.text);
    }
    let outside_zip = guest
        .post(
            "/files/archive",
            &json!({"data": {"attributes": {"ids": [shared, secret]}}}),
        )
        .await;
    assert_eq!(outside_zip.status, 403, "{}", outside_zip.text);
    let outside_link = Api::reply(guest.request(Method::POST, &format!("/files/downloads?Id={secret}"))).await;
    assert_eq!(outside_link.status, 403, "{}", outside_link.text);
    // Nor what covers the whole drive.
    for path in ["/files/_changes", "/files/trash", "/files/io.cozy.files.trash-dir"] {
        assert_eq!(guest.get(path).await.status, 403, "{path}");
    }

    // Read-only: no writing, even inside.
    assert_eq!(upload(&guest, &shared, "new.txt", b"x").await.status, 403);
    assert_eq!(guest.delete(&format!("/files/{photo}")).await.status, 403);
}

#[tokio::test]
async fn test_a_read_write_folder_link_writes_inside_only() {
    let (_dir, _cocon, owner) = cocon_tests::drive::setup("io.cozy.files io.cozy.permissions").await;
    let shared = mkdir(&owner, ROOT, "Drop box").await;
    let outside = mkdir(&owner, ROOT, "Mine").await;
    let code = share(
        &owner,
        &[&shared],
        &["GET", "POST", "PUT", "PATCH", "DELETE"],
        json!({}),
    )
    .await;
    let guest = owner.with_token(Some(&code));

    let sent = upload(&guest, &shared, "report.pdf", b"%PDF").await;
    let file = id(&sent);
    let sub = mkdir(&guest, &shared, "Drafts").await;
    let renamed = guest
        .send(
            Method::PATCH,
            &format!("/files/{file}"),
            Some(
                json!({"data": {"attributes": {"name": "final.pdf", "dir_id": sub}}})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    let put = Api::reply(guest.request(Method::PUT, &format!("/files/{file}")).body("%PDF-2")).await;
    assert_eq!(put.status, 200, "{}", put.text);

    // Never outside: no upload there, no move out, no copy out.
    assert_eq!(upload(&guest, &outside, "x.txt", b"x").await.status, 403);
    assert_eq!(upload(&guest, ROOT, "x.txt", b"x").await.status, 403);
    let out = guest
        .send(
            Method::PATCH,
            &format!("/files/{file}"),
            Some(
                json!({"data": {"attributes": {"dir_id": outside}}})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(out.status, 403, "{}", out.text);
    let copied_out = Api::reply(guest.request(Method::POST, &format!("/files/{file}/copy?DirID={outside}"))).await;
    assert_eq!(copied_out.status, 403, "{}", copied_out.text);
    assert_eq!(owner.get(&format!("/files/{outside}")).await.body["meta"]["count"], 0);

    // The owner sees what the guest did.
    let seen = owner.get("/files/metadata?Path=/Drop%20box/Drafts/final.pdf").await;
    assert_eq!(seen.status, 200, "{}", seen.text);
}

#[tokio::test]
async fn test_folder_links_may_need_a_password_and_expire() {
    let (_dir, cocon, owner) = cocon_tests::drive::setup("io.cozy.files io.cozy.permissions").await;
    let shared = mkdir(&owner, ROOT, "Shared").await;
    let locked = share(&owner, &[&shared], &["GET"], json!({"password": "open sesame"})).await;
    let denied = owner.with_token(Some(&locked)).get(&format!("/files/{shared}")).await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert!(denied.text.contains("password"), "{}", denied.text);
    let client = reqwest::Client::new();
    let opened = client
        .post(format!("{}/auth/share-by-link/password", cocon.http))
        .header("Host", "alice.test")
        .form(&[("code", locked.as_str()), ("password", "open sesame")])
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let cookie = opened.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let read = client
        .get(format!("{}/files/{shared}", cocon.http))
        .header("Host", "alice.test")
        .bearer_auth(&locked)
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    // A link for two seconds.
    let created = owner
        .post(
            "/permissions?codes=brief&ttl=2s",
            &json!({"data": {"type": "io.cozy.permissions", "attributes": {"permissions": {
                "files": {"type": "io.cozy.files", "verbs": ["GET"], "values": [shared]}
            }}}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let brief = created.body["data"]["attributes"]["codes"]["brief"]
        .as_str()
        .unwrap()
        .to_string();
    let guest = owner.with_token(Some(&brief));
    assert_eq!(guest.get(&format!("/files/{shared}")).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = guest.get(&format!("/files/{shared}")).await;
        if reply.status == 401 {
            assert!(reply.text.contains("expired"), "{}", reply.text);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(Instant::now() < deadline, "the link never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
