//! Tokens, scopes and instance isolation, end to end.

use cocon_tests::Cocon;
use serde_json::json;

#[tokio::test]
async fn test_tokens_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let alice = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    let bob = cocon.instance("bob.test", "io.cozy.notes").await.unwrap();
    assert_eq!(alice.put("/data/io.cozy.notes/n", &json!({"v": 1})).await.status, 200);

    // No token, a garbage token, a forged one, and another instance's.
    let none = alice.with_token(None).get("/data/io.cozy.notes/n").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.get("error"), "unauthorized");
    assert_eq!(
        alice
            .with_token(Some("garbage"))
            .get("/data/io.cozy.notes/n")
            .await
            .status,
        401
    );
    let token = cocon.token("alice.test", "io.cozy.notes").await.unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let bob_token = cocon.token("bob.test", "io.cozy.notes").await.unwrap();
    parts[2] = bob_token.split('.').nth(2).unwrap().to_string();
    assert_eq!(
        alice
            .with_token(Some(&parts.join(".")))
            .get("/data/io.cozy.notes/n")
            .await
            .status,
        401,
        "forged signature"
    );
    let cross = alice.with_token(Some(&bob_token)).get("/data/io.cozy.notes/n").await;
    assert_eq!(cross.status, 401, "bob's token on alice's host: {}", cross.text);
    let basic = reqwest::Client::new()
        .get(format!("{}/data/io.cozy.notes/n", cocon.http))
        .header("Host", "alice.test")
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    // An expired token. Expiry has one-second resolution: a 2-second token is good for at
    // least a whole second (one of 1 second would expire at the next tick of the clock).
    let short = cocon.token_ttl("alice.test", "io.cozy.notes", 2).await.unwrap();
    assert_eq!(
        alice.with_token(Some(&short)).get("/data/io.cozy.notes/n").await.status,
        200
    );
    // Wait until its time has passed.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let expired = alice.with_token(Some(&short)).get("/data/io.cozy.notes/n").await;
    assert_eq!(expired.status, 401, "{}", expired.text);
    assert!(expired.get("reason").as_str().unwrap().contains("expired"));

    // An unknown host.
    let nobody = cocon
        .api("nobody.test", Some(&token))
        .get("/data/io.cozy.notes/n")
        .await;
    assert_eq!(nobody.status, 404);
    assert!(nobody.get("reason").as_str().unwrap().contains("nobody.test"));

    // Bob cannot see alice's document.
    assert_eq!(bob.get("/data/io.cozy.notes/n").await.status, 404);

    // The admin API wants the admin token.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/instances", cocon.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = reqwest::Client::new()
        .get(format!("{}/instances", cocon.admin))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Bad scopes and domains are refused when minting.
    let (status, _) = cocon
        .admin(
            reqwest::Method::POST,
            "/instances/token",
            &[("Domain", "alice.test"), ("Scope", "io.cozy.notes:FETCH")],
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = cocon
        .admin(reqwest::Method::POST, "/instances", &[("Domain", "Bad_Domain")])
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = cocon
        .admin(reqwest::Method::POST, "/instances", &[("Domain", "alice.test")])
        .await
        .unwrap();
    assert_eq!(status, 409);
}

#[tokio::test]
async fn test_scopes_limit_doctypes_verbs_and_documents() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let admin = cocon
        .instance("alice.test", "io.cozy.notes io.cozy.contacts io.cozy.bank.operations")
        .await
        .unwrap();
    admin.put("/data/io.cozy.notes/n1", &json!({"v": 1})).await;
    admin.put("/data/io.cozy.contacts/c1", &json!({"v": 1})).await;
    admin.put("/data/io.cozy.contacts/c2", &json!({"v": 2})).await;

    let read_notes = cocon.token("alice.test", "io.cozy.notes:GET").await.unwrap();
    let api = admin.with_token(Some(&read_notes));
    assert_eq!(api.get("/data/io.cozy.notes/n1").await.status, 200);
    assert_eq!(api.get("/data/io.cozy.notes/_all_docs").await.status, 200);
    assert_eq!(
        api.post("/data/io.cozy.notes/_find", &json!({"selector": {}}))
            .await
            .status,
        200,
        "a query is a read"
    );
    let put = api.put("/data/io.cozy.notes/n1", &json!({"v": 2})).await;
    assert_eq!(put.status, 403);
    assert_eq!(put.get("error"), "forbidden");
    assert_eq!(api.post("/data/io.cozy.notes/", &json!({})).await.status, 403);
    assert_eq!(api.get("/data/io.cozy.contacts/c1").await.status, 403);
    assert_eq!(
        api.post("/data/io.cozy.notes/_bulk_docs", &json!({"docs": []}))
            .await
            .status,
        403
    );

    // A rule limited to some documents reaches only them, and never a whole-doctype route.
    let one = cocon.token("alice.test", "io.cozy.contacts:GET:c1").await.unwrap();
    let api = admin.with_token(Some(&one));
    assert_eq!(api.get("/data/io.cozy.contacts/c1").await.status, 200);
    assert_eq!(api.get("/data/io.cozy.contacts/c2").await.status, 403);
    assert_eq!(api.get("/data/io.cozy.contacts/_all_docs").await.status, 403);
    assert_eq!(api.get("/data/io.cozy.contacts/_changes").await.status, 403);
    assert_eq!(
        api.post("/data/io.cozy.contacts/_find", &json!({"selector": {}}))
            .await
            .status,
        403
    );

    // Wildcards cover a doctype family.
    let bank = cocon.token("alice.test", "io.cozy.bank.*").await.unwrap();
    let api = admin.with_token(Some(&bank));
    assert_eq!(
        api.put("/data/io.cozy.bank.operations/o1", &json!({"amount": -3}))
            .await
            .status,
        200
    );
    assert_eq!(api.get("/data/io.cozy.notes/n1").await.status, 403);
}

#[tokio::test]
async fn test_instances_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let alice = cocon
        .instance("alice.test", "io.cozy.notes io.cozy.doctypes")
        .await
        .unwrap();
    let bob = cocon
        .instance("bob.test", "io.cozy.notes io.cozy.doctypes")
        .await
        .unwrap();
    for i in 0..5 {
        alice
            .put(&format!("/data/io.cozy.notes/same-{i}"), &json!({"owner": "alice"}))
            .await;
    }
    bob.put("/data/io.cozy.notes/same-0", &json!({"owner": "bob"})).await;
    alice
        .post(
            "/data/io.cozy.notes/_index",
            &json!({"index": {"fields": ["owner"]}, "ddoc": "by-owner"}),
        )
        .await;

    assert_eq!(bob.get("/data/io.cozy.notes/same-0").await.get("owner"), "bob");
    assert_eq!(alice.get("/data/io.cozy.notes/same-0").await.get("owner"), "alice");
    assert_eq!(bob.get("/data/io.cozy.notes/same-1").await.status, 404);
    let all = bob.get("/data/io.cozy.notes/_all_docs?include_docs=true").await;
    assert_eq!(all.get("total_rows"), 1);
    let changes = bob.get("/data/io.cozy.notes/_changes?include_docs=true").await;
    let results = changes.get("results").as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["doc"]["owner"], "bob");
    let found = bob
        .post("/data/io.cozy.notes/_find", &json!({"selector": {"owner": "alice"}}))
        .await;
    assert_eq!(found.get("docs").as_array().unwrap().len(), 0);
    // Alice's index is hers: bob's query on it finds no such index.
    let on_alice_index = bob
        .post(
            "/data/io.cozy.notes/_find",
            &json!({"selector": {"owner": "bob"}, "use_index": "by-owner"}),
        )
        .await;
    assert_eq!(on_alice_index.status, 400);
    assert_eq!(
        bob.get("/data/io.cozy.notes/_design_docs")
            .await
            .get("rows")
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Removing bob erases his data and leaves alice's.
    let (status, _) = cocon
        .admin(reqwest::Method::DELETE, "/instances/bob.test", &[])
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(bob.get("/data/io.cozy.notes/same-0").await.status, 404);
    assert_eq!(
        alice.get("/data/io.cozy.notes/_all_docs").await.get("total_rows"),
        6,
        "5 notes and the design document"
    );
    let (status, list) = cocon.admin(reqwest::Method::GET, "/instances", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// cozy-stack's development setup names instances with a port (`cozy.localhost:8080`). A host
/// matches the domain with its port first, then without; each instance keeps its own data.
#[tokio::test]
async fn test_domains_with_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let (status, created) = cocon
        .admin(
            reqwest::Method::POST,
            "/instances",
            &[("Domain", "carol.localhost:8080")],
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["domain"], "carol.localhost:8080");
    assert!(
        created["onboarding_url"]
            .as_str()
            .unwrap()
            .starts_with("http://carol.localhost:8080/auth/onboarding?"),
        "the link names the instance's own port: {created}"
    );
    let carol = cocon.api(
        "carol.localhost:8080",
        Some(&cocon.token("carol.localhost:8080", "io.cozy.notes").await.unwrap()),
    );
    assert_eq!(
        carol
            .put("/data/io.cozy.notes/n", &json!({"who": "carol"}))
            .await
            .status,
        200
    );
    assert_eq!(carol.get("/data/io.cozy.notes/n").await.get("who"), "carol");
    // Another port, or none, is another host: carol's instance is not there.
    for host in ["carol.localhost", "carol.localhost:9090"] {
        let elsewhere = carol.with_host(host).get("/data/io.cozy.notes/n").await;
        assert_eq!(elsewhere.status, 404, "{host}: {}", elsewhere.text);
    }

    // An instance without a port is reached on any port, unless a domain with that port exists.
    let dave = cocon.instance("dave.test", "io.cozy.notes").await.unwrap();
    dave.put("/data/io.cozy.notes/n", &json!({"who": "dave"})).await;
    let via_port = dave.with_host("dave.test:8443").get("/data/io.cozy.notes/n").await;
    assert_eq!(via_port.get("who"), "dave", "{}", via_port.text);
    cocon.add_instance("dave.test:9000").await.unwrap();
    let other = dave.with_host("dave.test:9000").get("/data/io.cozy.notes/n").await;
    assert_eq!(
        other.status, 401,
        "dave's token is not for dave.test:9000: {}",
        other.text
    );

    // Bad ports are refused with a clear reason.
    for bad in ["erin.test:0", "erin.test:99999", "erin.test:", "erin.test:08"] {
        let (status, body) = cocon
            .admin(reqwest::Method::POST, "/instances", &[("Domain", bad)])
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Destroying the instance with a port leaves the one without.
    let (status, _) = cocon
        .admin(reqwest::Method::DELETE, "/instances/dave.test:9000", &[])
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(
        dave.with_host("dave.test:9000")
            .get("/data/io.cozy.notes/n")
            .await
            .get("who"),
        "dave"
    );
}

/// The admin API lists instances a page at a time, in domain order, each full page linking to
/// the next.
#[tokio::test]
async fn test_the_admin_api_lists_instances_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let domains = ["e.test", "b.test", "d.test", "a.test", "c.test"];
    for domain in domains {
        cocon.add_instance(domain).await.unwrap();
    }
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let http = reqwest::Client::new();
    let mut url = format!("{}/instances?limit=2", cocon.admin);
    let mut pages = Vec::new();
    loop {
        let res = http.get(&url).bearer_auth(token.trim()).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let next = res.headers().get("link").map(|l| l.to_str().unwrap().to_string());
        let page: Vec<String> = res
            .json::<Vec<serde_json::Value>>()
            .await
            .unwrap()
            .iter()
            .map(|i| i["domain"].as_str().unwrap().to_string())
            .collect();
        pages.push(page);
        let Some(link) = next else { break };
        let path = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(path, _)| path)
            .unwrap_or_else(|| panic!("a next link: {link}"));
        url = format!("{}{path}", cocon.admin);
    }
    // Three pages of 2, 2 and 1 (a full last page would link to an empty one).
    assert_eq!(
        pages,
        vec![vec!["a.test", "b.test"], vec!["c.test", "d.test"], vec!["e.test"]],
    );
    for bad in ["0", "abc", "10001"] {
        let (status, body) = cocon
            .admin(reqwest::Method::GET, "/instances", &[("limit", bad)])
            .await
            .unwrap();
        assert_eq!(status, 400, "limit={bad}: {body}");
    }
    let (status, all) = cocon.admin(reqwest::Method::GET, "/instances", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(all.as_array().unwrap().len(), 5, "a page of 1,000 by default");
    let (status, none) = cocon
        .admin(reqwest::Method::GET, "/instances", &[("after", "z.test")])
        .await
        .unwrap();
    assert_eq!((status, none), (200, serde_json::json!([])));
}
