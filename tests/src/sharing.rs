//! Two Cocon hosts on one machine set up to share, for the sharing tests and benchmarks: alice
//! on one (`alice.localhost:PORT`), bob on the other, bob signed in through his onboarding.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Api, Browser, Cocon, Reply, hidden_field};

pub const PASSPHRASE: &str = "correct horse battery staple 42";

pub fn port(cocon: &Cocon) -> u16 {
    cocon.http.rsplit(':').next().unwrap().parse().unwrap()
}

/// Creates `domain` and signs its person in through the onboarding form.
pub async fn person(cocon: &Cocon, domain: &str) -> Browser {
    let (status, body) = cocon
        .admin(Method::POST, "/instances", &[("Domain", domain)])
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let url = body["onboarding_url"].as_str().unwrap();
    let path = format!("/{}", url.splitn(4, '/').nth(3).unwrap());
    let token = path.split_once("registerToken=").unwrap().1.to_string();
    let mut browser = Browser::new(&cocon.http, domain);
    assert_eq!(browser.get(&path).await.status, 200);
    let csrf = browser.csrf();
    let form = [
        ("csrf_token", csrf.as_str()),
        ("register_token", token.as_str()),
        ("password", PASSPHRASE),
        ("password2", PASSPHRASE),
    ];
    let page = browser.post_form("/auth/onboarding", &form).await;
    assert_eq!(page.status, 303, "{page:?}");
    browser
}

/// Posts the consent form: the person accepts the sharing.
pub async fn accept(person: &mut Browser, csrf: &str, id: &str, state: &str) -> crate::Page {
    let form = [
        ("csrf_token", csrf),
        ("sharing_id", id),
        ("state", state),
        ("approve", "1"),
    ];
    person.post_form("/auth/authorize/sharing", &form).await
}

/// The path and query of a link to `origin`.
pub fn path_of(link: &str, origin: &str) -> String {
    link.strip_prefix(origin)
        .unwrap_or_else(|| panic!("{link} is not on {origin}"))
        .to_string()
}

pub struct Hosts {
    pub _dir: tempfile::TempDir,
    pub alice_host: Cocon,
    pub bob_host: Cocon,
    pub alice: Api,
    pub bob: Api,
    pub bob_person: Browser,
    pub alice_origin: String,
    pub bob_origin: String,
}

pub async fn two_hosts() -> Hosts {
    two_hosts_with(None).await
}

/// Alice's host sends mail to `smtp` when given.
pub async fn two_hosts_with(smtp: Option<u16>) -> Hosts {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Cocon::builder(&dir.path().join("alice-host"));
    if let Some(port) = smtp {
        builder = builder.smtp(port);
    }
    let alice_host = builder.start().await.unwrap();
    hosts_with(dir, alice_host).await
}

/// Alice on `alice_host` (its gateway: it may be one process of a split host), bob on a host of
/// his own started in `dir`.
pub async fn hosts_with(dir: tempfile::TempDir, alice_host: Cocon) -> Hosts {
    let bob_host = Cocon::start(&dir.path().join("bob-host")).await.unwrap();
    let bob_port = port(&bob_host);
    hosts_on(dir, alice_host, bob_host, bob_port).await
}

/// Two hosts where alice's reaches bob's through a proxy the test controls (bob's instance is
/// known by the proxy's port, so its links and its Cozy's address lead there).
pub async fn two_hosts_behind_proxy() -> (Hosts, crate::Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let alice_host = Cocon::start(&dir.path().join("alice-host")).await.unwrap();
    let bob_host = Cocon::start(&dir.path().join("bob-host")).await.unwrap();
    let target = ([127, 0, 0, 1], port(&bob_host)).into();
    let proxy = crate::Proxy::start(target).await.unwrap();
    let hosts = hosts_on(dir, alice_host, bob_host, proxy.port).await;
    (hosts, proxy)
}

/// Two hosts each reaching the other only through a proxy the test controls (alice's host
/// calls bob's through the first, bob's calls alice's through the second): a partition both
/// ways, each direction cut or black-holed on its own.
pub async fn two_hosts_partitioned_by_proxies() -> (Hosts, crate::Proxy, crate::Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let alice_host = Cocon::start(&dir.path().join("alice-host")).await.unwrap();
    let bob_host = Cocon::start(&dir.path().join("bob-host")).await.unwrap();
    let to_bob = crate::Proxy::start(([127, 0, 0, 1], port(&bob_host)).into())
        .await
        .unwrap();
    let to_alice = crate::Proxy::start(([127, 0, 0, 1], port(&alice_host)).into())
        .await
        .unwrap();
    let hosts = hosts_on_ports(dir, (alice_host, to_alice.port), (bob_host, to_bob.port)).await;
    (hosts, to_bob, to_alice)
}

/// Alice on `alice_host`, bob on `bob_host` known as `bob.localhost:<bob_port>` (a proxy's
/// port, or its own).
pub async fn hosts_on(dir: tempfile::TempDir, alice_host: Cocon, bob_host: Cocon, bob_port: u16) -> Hosts {
    let alice_port = port(&alice_host);
    hosts_on_ports(dir, (alice_host, alice_port), (bob_host, bob_port)).await
}

/// Alice and bob on their hosts, each known by the port given with it (so the other host
/// calls that port).
pub async fn hosts_on_ports(
    dir: tempfile::TempDir,
    (alice_host, alice_port): (Cocon, u16),
    (bob_host, bob_port): (Cocon, u16),
) -> Hosts {
    let alice_domain = format!("alice.localhost:{alice_port}");
    let bob_domain = format!("bob.localhost:{bob_port}");
    let alice = alice_host
        .instance(
            &alice_domain,
            "io.cozy.notes io.cozy.contacts io.cozy.sharings io.cozy.files io.cozy.photos.albums",
        )
        .await
        .unwrap();
    let bob_person = person(&bob_host, &bob_domain).await;
    let token = bob_host
        .token(
            &bob_domain,
            "io.cozy.notes io.cozy.notifications io.cozy.files io.cozy.photos.albums",
        )
        .await
        .unwrap();
    let bob = bob_host.api(&bob_domain, Some(&token));
    Hosts {
        _dir: dir,
        alice_origin: format!("http://{alice_domain}"),
        bob_origin: format!("http://{bob_domain}"),
        alice_host,
        bob_host,
        alice,
        bob,
        bob_person,
    }
}

pub const NOTE: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Alice's app shares what `rule` selects with her contact Bob (whose Cozy it knows); the
/// sharing's JSON-API `data`.
pub async fn share(h: &Hosts, description: &str, rule: Value) -> Value {
    share_rules(h, description, json!([rule])).await
}

/// Alice's contact for Bob, whose Cozy she knows: its id.
pub async fn bob_contact(h: &Hosts) -> String {
    let contact = h
        .alice
        .post(
            "/data/io.cozy.contacts/",
            &json!({"fullname": "Bob", "email": [{"address": "bob@example.org", "primary": true}],
                    "cozy": [{"url": h.bob_origin, "primary": true}]}),
        )
        .await;
    assert_eq!(contact.status, 201, "{}", contact.text);
    contact.get("id").as_str().unwrap_or_default().to_string()
}

/// [`share`] with several rules (a JSON array).
pub async fn share_rules(h: &Hosts, description: &str, rules: Value) -> Value {
    let contact = bob_contact(h).await;
    let created = h
        .alice
        .post(
            "/sharings/",
            &json!({"data": {"type": "io.cozy.sharings", "attributes": {"description": description, "rules": rules},
                "relationships": {"recipients": {"data": [{"id": contact, "type": "io.cozy.contacts"}]}}}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.body["data"].clone()
}

/// [`share`], answering the sharing's id.
pub async fn share_with(h: &Hosts, description: &str, rule: Value) -> String {
    share(h, description, rule).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Alice's note, and a sharing of it (rules syncing both ways) made with these
/// `relationships.recipients` and extra `attributes`: the creation's answer.
pub async fn share_note_to(h: &Hosts, attributes: Value, recipients: Value) -> crate::Reply {
    put_note(h).await;
    let mut attrs = json!({"description": "Holiday plans", "rules": [note_rule()]});
    if let (Some(attrs), Some(extra)) = (attrs.as_object_mut(), attributes.as_object()) {
        attrs.extend(extra.clone());
    }
    h.alice
        .post(
            "/sharings/",
            &json!({"data": {"type": "io.cozy.sharings", "attributes": attrs,
                             "relationships": {"recipients": {"data": recipients}}}}),
        )
        .await
}

/// Alice's app shares her note with Bob (the rules sync both ways); the sharing's `data`.
pub async fn share_note(h: &Hosts) -> Value {
    put_note(h).await;
    share(h, "Holiday plans", note_rule()).await
}

/// Alice's note "Holiday plans" (`NOTE`).
async fn put_note(h: &Hosts) {
    let note = h
        .alice
        .put(
            &format!("/data/io.cozy.notes/{NOTE}"),
            &json!({"title": "Holiday plans"}),
        )
        .await;
    assert_eq!(note.status, 200, "{}", note.text);
}

/// The rule sharing alice's note both ways.
fn note_rule() -> Value {
    json!({"title": "Plans", "doctype": "io.cozy.notes", "values": [NOTE],
           "add": "sync", "update": "sync", "remove": "sync"})
}

/// Alice's app shares her note with a contact Bob whose Cozy it does not know (the invitation
/// goes by mail); `relationship` is `recipients` or `read_only_recipients`. The creation's
/// answer.
pub async fn share_by_mail(h: &Hosts, relationship: &str) -> crate::Reply {
    h.alice
        .put(
            &format!("/data/io.cozy.notes/{NOTE}"),
            &json!({"title": "Holiday plans"}),
        )
        .await;
    let contact = h
        .alice
        .post(
            "/data/io.cozy.contacts/",
            &json!({"fullname": "Bob", "email": [{"address": "bob@example.org"}]}),
        )
        .await;
    let behaviour = if relationship == "recipients" { "sync" } else { "push" };
    let created = h
        .alice
        .post(
            "/sharings/",
            &json!({"data": {"type": "io.cozy.sharings", "attributes": {"description": "Holiday plans",
                "rules": [{"title": "Plans", "doctype": "io.cozy.notes", "values": [NOTE], "add": behaviour, "update": behaviour}]},
                "relationships": {relationship: {"data": [{"id": contact.get("id"), "type": "io.cozy.contacts"}]}}}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    created
}

/// The first link to `origin`'s sharing pages in a mail's text.
pub fn link_in(text: &str, origin: &str) -> String {
    let start = text
        .find(&format!("{origin}/sharings/"))
        .unwrap_or_else(|| panic!("a link to {origin} in the mail: {text}"));
    text[start..].chars().take_while(|c| !c.is_whitespace()).collect()
}

/// The consent page's link, from the notification bob's host made for the request.
pub async fn request_link(h: &Hosts) -> String {
    let notifications = h
        .bob
        .get("/data/io.cozy.notifications/_all_docs?include_docs=true")
        .await;
    assert_eq!(notifications.status, 200, "{}", notifications.text);
    let rows = notifications.get("rows").as_array().unwrap();
    let request = rows
        .iter()
        .map(|r| &r["doc"])
        .find(|d| d["category"] == "sharing-request")
        .unwrap_or_else(|| panic!("bob is told of the request: {}", notifications.text));
    assert!(
        request["title"].as_str().unwrap().contains("Holiday plans"),
        "{request}"
    );
    request["data"]["redirectLink"].as_str().unwrap().to_string()
}

/// A sharing of alice's note that bob accepted: its id and the note's id on bob's side.
pub async fn accepted(h: &mut Hosts) -> (String, String) {
    let sharing = share_note(h).await;
    let id = sharing["id"].as_str().unwrap().to_string();
    let consent = path_of(&request_link(h).await, &h.bob_origin);
    let page = h.bob_person.get(&consent).await;
    let csrf = hidden_field(&page.text, "csrf_token").unwrap();
    let state = hidden_field(&page.text, "state").unwrap();
    assert_eq!(accept(&mut h.bob_person, &csrf, &id, &state).await.status, 303);
    let on_bob = h.bob.get(&format!("/sharings/{id}")).await;
    let note = on_bob.body["data"]["attributes"]["rules"][0]["values"][0]
        .as_str()
        .unwrap()
        .to_string();
    (id, note)
}

/// Restarts a stopped host on its port (its instances' domains carry it) and data directory.
pub async fn restart(host: &Cocon) -> Cocon {
    Cocon::builder(&host.data_dir)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{}", port(host)))
        .start()
        .await
        .unwrap()
}

/// The document at `path` once `done` holds for it, or a failure after 20 s.
pub async fn eventually(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = api.get(path).await;
        if got.status == 200 && done(&got.body) {
            return got.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never got there: {}",
            got.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Bob accepts the request of sharing `id` (the newest sharing-request notification for it), on
/// his consent page.
pub async fn accept_request(h: &mut Hosts, id: &str) {
    accept_as(&h.bob, &mut h.bob_person, &h.bob_origin, id).await;
}

/// The person of the instance at `origin` (`api` reads its notifications, `person` is signed
/// in) accepts the request of sharing `id` on their consent page, once it is notified.
pub async fn accept_as(api: &Api, person: &mut Browser, origin: &str, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let link = loop {
        let notes = api.get("/data/io.cozy.notifications/_all_docs?include_docs=true").await;
        let found = notes.body["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["doc"]["data"]["redirectLink"].as_str())
            .find(|l| l.contains(id))
            .map(str::to_string);
        if let Some(link) = found {
            break link;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{origin}'s notification of the request {id}: {}",
            notes.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let page = person.get(&path_of(&link, origin)).await;
    let csrf = hidden_field(&page.text, "csrf_token").expect("the consent form");
    let state = hidden_field(&page.text, "state").expect("the consent form");
    let done = accept(person, &csrf, id, &state).await;
    assert_eq!(done.status, 303, "consent: {}", done.text);
}

/// Notes `{prefix}NNNNNN` for each `n` of `range`, tagged `tag` with 200 bytes of text, written
/// by alice's `_bulk_docs` 1,000 at a time.
pub async fn bulk_notes(api: &Api, prefix: &str, range: std::ops::Range<usize>, tag: &str) {
    for chunk in range.collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"_id": format!("{prefix}{i:06}"), "tags": [tag], "n": i, "text": "x".repeat(200)}))
            .collect();
        let res = api.post("/data/io.cozy.notes/_bulk_docs", &json!({"docs": docs})).await;
        assert_eq!(res.status, 201, "bulk: {}", res.text);
    }
}

/// The state in a consent link.
pub fn state_of(link: &str) -> String {
    let query = link.split_once('?').unwrap().1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// The test answers sharing `id` in bob's host's place, with the state the request carried:
/// alice's host gives it a token for the sharing, as it gives bob's host. Answers alice's API
/// with that token (a member that could lie).
pub async fn answer_in_bobs_place(h: &mut Hosts, id: &str) -> Api {
    let state = state_of(&request_link(h).await);
    // Bob's host stops first: alice's host would otherwise replicate to it with the made-up
    // credentials, be refused, and end the sharing (the other side ended it) under the test.
    // Stopped, it is only unreachable, which alice's host retries.
    h.bob_host.stop().await.unwrap();
    let answer = h
        .alice
        .with_token(None)
        .post(
            &format!("/sharings/{id}/answer"),
            &json!({"data": {"type": "io.cozy.sharings.answer", "id": id, "attributes": {
                "state": state, "public_name": "Bob",
                "client": {"client_id": "made-up", "client_secret": "made-up"},
                "access_token": {"access_token": "made-up", "refresh_token": "made-up"}}}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let token = answer.body["data"]["attributes"]["access_token"]["access_token"]
        .as_str()
        .unwrap();
    h.alice.with_token(Some(token))
}

/// Alice's folder "Holiday" holding `plan.txt` ("v1"), shared with Bob both ways and
/// accepted, once bob's copy holds the file: the sharing's id and the folder's.
pub async fn shared_holiday(h: &mut Hosts) -> (String, String) {
    use crate::drive::{ROOT, new_dir, new_file};
    let holiday = new_dir(&h.alice, ROOT, "Holiday").await;
    new_file(&h.alice, &holiday, "plan.txt", b"v1").await;
    let rule = json!({"title": "Holiday", "doctype": "io.cozy.files", "values": [holiday],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let id = share_with(h, "Holiday", rule).await;
    accept_request(h, &id).await;
    converged(h, "/Holiday", "/Shared with me/Holiday", |t| t.len() == 1).await;
    (id, holiday)
}

/// `PUT /files/:id`: new content for a file, which must be taken.
pub async fn rewrite(api: &Api, id: &str, data: &[u8]) {
    let r = Api::reply(api.request(Method::PUT, &format!("/files/{id}")).body(data.to_vec())).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Everything under the folder at `path`, for comparing two hosts' copies: each node's path
/// below the folder with its MD5 (`dir` for a directory), sorted. Empty when the folder is not
/// there.
pub async fn folder_tree(api: &Api, path: &str) -> Vec<(String, String)> {
    let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let top = api.get(&format!("/files/metadata?Path={encoded}")).await;
    let Some(top) = top.body["data"]["id"].as_str().map(str::to_string) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut pending = vec![(top, String::new())];
    while let Some((id, prefix)) = pending.pop() {
        let page = api.get(&format!("/files/{id}?page[limit]=1000")).await;
        for node in page.body["included"].as_array().into_iter().flatten() {
            let a = &node["attributes"];
            let name = format!("{prefix}/{}", a["name"].as_str().unwrap_or_default());
            if a["type"] == "directory" {
                pending.push((node["id"].as_str().unwrap_or_default().to_string(), name.clone()));
                out.push((name, "dir".to_string()));
            } else {
                out.push((name, a["md5sum"].as_str().unwrap_or_default().to_string()));
            }
        }
    }
    out.sort();
    out
}

/// Waits until alice's folder at `alice_path` and bob's copy hold the same tree and `done`
/// holds for it; answers it.
pub async fn converged(
    h: &Hosts,
    alice_path: &str,
    bob_path: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let a = folder_tree(&h.alice, alice_path).await;
        let b = folder_tree(&h.bob, bob_path).await;
        if a == b && done(&a) {
            return a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hosts did not converge:\nalice {a:?}\nbob   {b:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl Hosts {
    pub fn bob_person_domain(&self) -> &str {
        self.bob.domain()
    }
}

/// The node at `path` once `done` holds for it (the sharing replicates in the background).
pub async fn node_at(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    eventually(api, &format!("/files/metadata?Path={encoded}"), |n| {
        n["data"]["id"].is_string() && done(&n["data"])
    })
    .await["data"]
        .clone()
}

/// Waits until nothing is at `path`.
pub async fn gone(api: &Api, path: &str) {
    let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = api.get(&format!("/files/metadata?Path={encoded}")).await;
        if r.status == 404 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} is still there: {}",
            r.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A JSON-API resource's attribute.
pub fn attr<'a>(node: &'a Value, key: &str) -> &'a Value {
    &node["attributes"][key]
}

/// `PATCH /files/:id` with these attributes.
pub async fn patch(api: &Api, id: &str, attributes: Value) -> Reply {
    Api::reply(
        api.request(Method::PATCH, &format!("/files/{id}"))
            .header("Content-Type", "application/vnd.api+json")
            .body(json!({"data": {"type": "io.cozy.files", "id": id, "attributes": attributes}}).to_string()),
    )
    .await
}
