//! Contexts and rosters, as an institution uses them: a context in the configuration gives its
//! instances their defaults, the keys and flags apps read, and apps from its own registry; a
//! roster creates its instances in bulk, reports the rows it cannot take, and can run again.

use cocon_tests::sharing::PASSPHRASE;
use cocon_tests::{Browser, Cocon, SmtpServer, cocon_bin, submit_onboarding, text_of};
use reqwest::Method;
use serde_json::{Value, json};

/// `cocon ARGS` against the server in `data`: success, stdout, stderr.
fn cocon_cli(cocon: &Cocon, data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(cocon_bin())
        .args(args)
        .args(["--admin", &cocon.admin, "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn instance(cocon: &Cocon, domain: &str) -> Value {
    let (status, body) = cocon
        .admin(Method::GET, &format!("/instances/{domain}"), &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{domain}: {body}");
    body
}

// Two threads: the registry answers while the test waits on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_roster_creates_a_contexts_instances_once_with_its_defaults_and_apps() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The context's registry holds the notes app; the configuration's own registry is
    // unreachable, so the app can only come from the context's.
    let (bytes, sha) = super::apps::notes_tarball(dir.path());
    let registry = super::apps::registry(bytes, sha).await;
    // The server's mail, and the school's own mail server.
    let smtp = SmtpServer::start().await.unwrap();
    let school_smtp = SmtpServer::start().await.unwrap();
    let cocon = Cocon::builder(&data)
        .smtp(smtp.port)
        .env("COCON_CONTEXTS__SCHOOL__SMTP__HOST", "127.0.0.1")
        .env("COCON_CONTEXTS__SCHOOL__SMTP__PORT", school_smtp.port.to_string())
        .env("COCON_CONTEXTS__SCHOOL__SMTP__SECURITY", "none")
        .env("COCON_CONTEXTS__SCHOOL__SMTP__NOREPLY_ADDRESS", "noreply@school.test")
        .env("COCON_CONTEXTS__SCHOOL__SMTP__PASSWORD", "the-smtp-secret")
        .env("COCON_JOBS__APPS__REGISTRY", "http://127.0.0.1:9")
        .env("COCON_CONTEXTS__SCHOOL__DISK_QUOTA", "2GB")
        .env("COCON_CONTEXTS__SCHOOL__LOCALE", "fr")
        .env("COCON_CONTEXTS__SCHOOL__DOMAIN_TEMPLATE", "{user}.school.test")
        .env("COCON_CONTEXTS__SCHOOL__REGISTRY", &registry)
        .env("COCON_CONTEXTS__SCHOOL__APPS__NOTES", "registry://notes/stable")
        .env("COCON_CONTEXTS__SCHOOL__CONFIG__HELP_LINK", "https://help.school.test")
        .env("COCON_CONTEXTS__SCHOOL__FLAGS__DRIVE_OFFICE", "true")
        .start()
        .await
        .unwrap();

    // The contexts, as the operator sees them.
    let (ok, out, err) = cocon_cli(&cocon, &data, &["contexts", "ls"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\ndefault\t") && out.contains("\nschool\t2000000000\tfr\t{user}.school.test\t1"),
        "{out}"
    );
    let (ok, out, err) = cocon_cli(&cocon, &data, &["contexts", "show", "school"]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["registries"], json!([registry]));
    assert_eq!(shown["config"]["help_link"], "https://help.school.test");
    assert!(!out.contains("the-smtp-secret"), "secrets stay out of answers: {out}");
    assert_eq!(shown["smtp"]["password"], "<redacted>");
    let (status, _) = cocon
        .admin(Method::GET, "/instances/contexts/nowhere", &[])
        .await
        .unwrap();
    assert_eq!(status, 404);

    // A roster in two parts (--batch 2): two rows cannot be taken, the others are created.
    let roster = dir.path().join("pupils.csv");
    std::fs::write(
        &roster,
        "user,name,email,class,quota\n\
         ana,Ana Lima,ana@example.org,6A,\n\
         ben,Ben Roux,,6B,1GB\n\
         bad name,Bad,,,\n\
         cleo,Cléo Petit,,6A,lots\n",
    )
    .unwrap();
    let roster = roster.to_str().unwrap();
    let import = ["instances", "import", roster, "--context", "school", "--batch", "2"];
    let (ok, _, err) = cocon_cli(&cocon, &data, &import);
    assert!(!ok, "rejected rows fail the command: {err}");
    assert!(
        err.contains("2 instances created, 0 already there, 2 rows rejected"),
        "{err}"
    );
    assert!(
        err.contains("line 4 (bad name):") && err.contains("line 5 (cleo):"),
        "{err}"
    );
    let ana = instance(&cocon, "ana.school.test").await;
    assert_eq!(
        (&ana["context"], &ana["disk_quota"], &ana["locale"]),
        (&json!("school"), &json!(2_000_000_000u64), &json!("fr"))
    );
    assert_eq!(
        (&ana["public_name"], &ana["class"], &ana["email"]),
        (&json!("Ana Lima"), &json!("6A"), &json!("ana@example.org"))
    );
    assert_eq!(
        instance(&cocon, "ben.school.test").await["disk_quota"],
        1_000_000_000u64
    );

    // The same roster again creates nothing and changes nothing; the report goes to a file.
    let report = dir.path().join("report.csv");
    let mut again = import.to_vec();
    again.extend(["--report", report.to_str().unwrap()]);
    let (ok, _, err) = cocon_cli(&cocon, &data, &again);
    assert!(!ok);
    assert!(
        err.contains("0 instances created, 2 already there, 2 rows rejected"),
        "{err}"
    );
    let report = std::fs::read_to_string(&report).unwrap();
    assert!(
        report.starts_with("line,who,reason\n4,bad name,") && report.contains("\n5,cleo,"),
        "{report}"
    );
    assert_eq!(instance(&cocon, "ana.school.test").await, ana);

    // New pupils get their onboarding links: written for the operator, or mailed.
    let more = dir.path().join("more.csv");
    std::fs::write(&more, "user,email\ndana,dana@example.org\nemil,\n").unwrap();
    let links = dir.path().join("links.csv");
    let import_more = |onboarding: &str, links: Option<&std::path::Path>| {
        let mut args = vec!["instances", "import", more.to_str().unwrap(), "--context", "school"];
        args.extend(["--onboarding", onboarding]);
        if let Some(links) = links {
            args.extend(["--links", links.to_str().unwrap()]);
        }
        cocon_cli(&cocon, &data, &args)
    };
    let (ok, _, err) = import_more("mail", Some(&links));
    assert!(ok, "{err}");
    let links = std::fs::read_to_string(&links).unwrap();
    let rows: Vec<&str> = links.lines().collect();
    assert_eq!(rows.len(), 3, "{links}");
    assert!(rows[0] == "domain,email,onboarding_url,expires_at", "{links}");
    assert!(
        rows[1].starts_with("dana.school.test,dana@example.org,http://dana.school.test:"),
        "{links}"
    );
    assert!(rows[1].contains("/auth/onboarding?registerToken="), "{links}");
    assert!(
        rows[2].starts_with("emil.school.test,,http://emil.school.test:"),
        "{links}"
    );
    // Through the school's own mail server, from its address.
    let mails = school_smtp.wait_for(1).await;
    assert_eq!(mails.len(), 1, "only the pupil with an address is mailed");
    assert!(mails[0].contains("From: Cocon <noreply@school.test>"), "{}", mails[0]);
    let (_, text) = text_of(&mails[0]);
    let token = rows[1]
        .split("registerToken=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(text.contains(token), "the mail holds the same link: {text}");
    // The link works: the pupil chooses a passphrase with it, and her apps start with her
    // context's name and flags in their page.
    let link = rows[1].split(',').nth(2).unwrap();
    let path = format!("/{}", link.splitn(4, '/').nth(3).unwrap());
    let mut dana = Browser::new(&cocon.http, "dana.school.test");
    assert_eq!(dana.get(&path).await.status, 200);
    let csrf = dana.csrf();
    let page = submit_onboarding(&mut dana, &csrf, token, PASSPHRASE, PASSPHRASE).await;
    assert_eq!(page.status, 303, "{page:?}");
    let dana_apps = cocon.token("dana.school.test", "io.cozy.apps").await.unwrap();
    let dana_api = cocon.api("dana.school.test", Some(&dana_apps));
    let home = super::jobs::until(&dana_api, "/apps/home", |r| r.status == 200).await;
    assert_eq!(home.status, 200, "{}", home.text);
    let page = dana.to_domain("home.dana.school.test").get("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.text.contains("&#34;flags&#34;:{&#34;drive_office&#34;:true}"),
        "{}",
        page.text
    );
    let (ok, _, err) = import_more("link", None);
    assert!(!ok && err.contains("--links FILE"), "{err}");
    // An instance of another context is mailed through the server's own.
    let add = ["instances", "add", "solo.test", "--email", "solo@example.org"];
    let (ok, _, err) = cocon_cli(&cocon, &data, &add);
    assert!(ok, "{err}");
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("To: solo@example.org"), "{}", mails[0]);
    assert_eq!(school_smtp.received().len(), 1);

    // Through the admin API: a domain of another context is refused, with its line.
    let (status, body) = post_roster(&cocon, "default", "domain\nana.school.test\nfree.test\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], 1);
    assert_eq!(body["rejected"][0]["line"], 2);
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("already exists in context school"),
        "{body}"
    );
    let (status, body) = post_roster(&cocon, "school", "domain,age\nx.test,12\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("unknown column \"age\""),
        "{body}"
    );
    let (ok, _, err) = cocon_cli(&cocon, &data, &["instances", "add", "x.test", "--context", "nowhere"]);
    assert!(!ok && err.contains("no context \"nowhere\""), "{err}");

    // The apps of the instance read its context's keys and flags.
    let token = cocon
        .token("ana.school.test", "io.cozy.apps io.cozy.notes")
        .await
        .unwrap();
    let api = cocon.api("ana.school.test", Some(&token));
    let context = api.get("/settings/context").await;
    assert_eq!(context.status, 200, "{}", context.text);
    assert_eq!(
        context.body["data"]["attributes"]["help_link"],
        "https://help.school.test"
    );
    assert_eq!(context.body["data"]["attributes"]["default_redirection"], "home/");
    let flags = api.get("/settings/flags").await;
    assert_eq!(flags.body["data"]["attributes"], json!({"drive_office": true}));
    let free = cocon.token("free.test", "io.cozy.notes").await.unwrap();
    let flags = cocon.api("free.test", Some(&free)).get("/settings/flags").await;
    assert_eq!(
        flags.body["data"]["attributes"],
        json!({}),
        "the default context sets none"
    );

    // The context's app, from the context's registry, on each of its new instances (the
    // installation follows the creation's event).
    let installed = super::jobs::until(&api, "/apps/notes", |r| r.status == 200).await;
    assert_eq!(installed.status, 200, "{}", installed.text);
    assert_eq!(
        installed.body["data"]["attributes"]["source"],
        "registry://notes/stable"
    );
    assert_eq!(installed.body["data"]["attributes"]["version"], "2.0.0");
    let free_apps = cocon.token("free.test", "io.cozy.apps").await.unwrap();
    let free_api = cocon.api("free.test", Some(&free_apps));
    let drive = super::jobs::until(&free_api, "/apps/drive", |r| r.status == 200).await;
    assert_eq!(
        drive.status, 200,
        "Cocon's own apps reach every instance: {}",
        drive.text
    );
    assert_eq!(
        free_api.get("/apps/notes").await.status,
        404,
        "other contexts' apps do not"
    );

    // The consumer that installs them says how far it got: one creation handled per instance
    // (ana, ben, dana, emil, free, solo).
    let handled = || async {
        let (_, metrics) = cocon.admin(Method::GET, "/metrics", &[]).await.unwrap();
        let text = metrics.as_str().unwrap_or_default().to_string();
        text.lines()
            .find_map(|l| l.strip_prefix("cocon_events_handled_total{consumer=\"jobs-builtin-apps\"} "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while handled().await < 6 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(handled().await, 6);
}

/// `POST /instances/import?ContextName=…` with a CSV body.
async fn post_roster(cocon: &Cocon, context: &str, csv: &str) -> (u16, Value) {
    let body = Some(("text/csv", csv.as_bytes().to_vec()));
    cocon
        .admin_with(Method::POST, "/instances/import", &[("ContextName", context)], body)
        .await
        .unwrap()
}

/// A context's look: its assets directory replaces Cocon's theme for its instances (and its
/// login domain), other instances keep Cocon's; files outside the directory are out of reach;
/// in Chromium, the school's sign-in page wears the school's colour and logo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_contexts_assets_give_its_instances_their_look() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("school-assets");
    std::fs::create_dir_all(assets.join("styles")).unwrap();
    std::fs::create_dir_all(assets.join("images")).unwrap();
    let theme = ":root{--accent:#8a1538}\nmain::before{content:url(/assets/images/logo.svg);display:block}\n";
    std::fs::write(assets.join("styles/theme.css"), theme).unwrap();
    let logo = r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="40" height="40" fill="#8a1538"/></svg>"##;
    std::fs::write(assets.join("images/logo.svg"), logo).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "not an asset").unwrap();
    let cocon = Cocon::builder(&dir.path().join("data"))
        .env("COCON_CONTEXTS__SCHOOL__ASSETS", assets.to_str().unwrap())
        .start()
        .await
        .unwrap();
    let (status, body) = cocon
        .admin(
            Method::POST,
            "/instances",
            &[("Domain", "ana.localhost"), ("ContextName", "school")],
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    cocon.add_instance("bob.localhost").await.unwrap();

    let mut ana = Browser::new(&cocon.http, "ana.localhost");
    let css = ana.get("/assets/styles/theme.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.text, theme, "the school's theme");
    assert_eq!(css.header("content-type"), Some("text/css"));
    let svg = ana.get("/assets/images/logo.svg").await;
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.header("content-security-policy").unwrap().contains("sandbox"));
    for outside in [
        "/assets/%2e%2e/secret.txt",
        "/assets/styles/%2e%2e/%2e%2e/secret.txt",
        "/assets/nothing.png",
    ] {
        let page = ana.get(outside).await;
        assert_eq!(page.status, 404, "{outside}: {page:?}");
        assert!(!page.text.contains("not an asset"));
    }
    let mut bob = Browser::new(&cocon.http, "bob.localhost");
    let css = bob.get("/assets/styles/theme.css").await;
    assert_eq!(css.status, 200);
    assert!(css.text.contains("--accent:#1d5c96"), "Cocon's own theme: {}", css.text);
    assert_eq!(bob.get("/assets/images/logo.svg").await.status, 404, "not the school's");
    let icon = bob.get("/assets/favicon.svg").await;
    assert_eq!(icon.status, 200, "Cocon's own icon");
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    let login = ana.get("/auth/login").await;
    assert!(
        login.text.contains(r#"href="/assets/styles/theme.css""#),
        "{}",
        login.text
    );

    let port = cocon.http.rsplit(':').next().unwrap().to_string();
    let seen = super::browser::run_script(
        "theme_check.py",
        &[
            &format!("http://ana.localhost:{port}/auth/login"),
            &format!("http://bob.localhost:{port}/auth/login"),
        ],
    )
    .await;
    assert_eq!(seen["school_link"], "rgb(138, 21, 56)", "{seen}");
    assert!(
        seen["school_logo"]
            .as_str()
            .unwrap()
            .contains("/assets/images/logo.svg"),
        "{seen}"
    );
    assert_eq!(seen["default_link"], "rgb(29, 92, 150)", "{seen}");
}

/// A roster's teachers get a contact group per class they teach, holding its pupils with their
/// Cozy's address; running it again writes nothing; a teacher shares with a class in one step
/// and its pupils' instances receive the sharing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_rosters_classes_become_groups_a_teacher_shares_with_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cocon = Cocon::start(&data).await.unwrap();
    // Instances on `.localhost`, so that a sharing's request reaches each pupil's.
    let port = cocon_tests::sharing::port(&cocon);
    let at = |user: &str| format!("{user}.localhost:{port}");
    let (prof, ana, ben) = (at("prof"), at("ana"), at("ben"));
    let roster = dir.path().join("school.csv");
    std::fs::write(
        &roster,
        format!(
            "domain,name,email,class,role\n\
             {prof},Marie Prof,,6A; 6B,Teacher\n\
             {ana},Ana Lima,ana@example.org,6A,\n\
             {ben},Ben Roux,,6B,pupil\n\
             {},Cléo Petit,,5C,\n",
            at("cleo")
        ),
    )
    .unwrap();
    let (ok, _, err) = cocon_cli(&cocon, &data, &["instances", "import", roster.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        err.contains("class groups: 1 teachers in 2 classes; 2 groups and 2 contacts written"),
        "{err}"
    );
    assert_eq!(instance(&cocon, &prof).await["role"], "teacher");
    assert_eq!(instance(&cocon, &ana).await["role"], "");

    let token = cocon
        .token(
            &prof,
            "io.cozy.contacts io.cozy.contacts.groups io.cozy.sharings io.cozy.notes",
        )
        .await
        .unwrap();
    let teacher = cocon.api(&prof, Some(&token));
    let docs = |answer: &cocon_tests::Reply| -> Vec<Value> {
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["doc"].clone())
            .collect()
    };
    let groups = docs(
        &teacher
            .get("/data/io.cozy.contacts.groups/_all_docs?include_docs=true")
            .await,
    );
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["6A", "6B"]);
    let six_a = groups[0]["_id"].as_str().unwrap().to_string();
    let contacts = docs(&teacher.get("/data/io.cozy.contacts/_all_docs?include_docs=true").await);
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    let of_ana = contacts.iter().find(|c| c["fullname"] == "Ana Lima").unwrap();
    assert_eq!(of_ana["cozy"][0]["url"], format!("http://{ana}"));
    assert_eq!(of_ana["email"][0]["address"], "ana@example.org");
    assert_eq!(of_ana["relationships"]["groups"]["data"][0]["_id"], six_a.as_str());

    // Again: everything is as wanted already.
    let (ok, _, err) = cocon_cli(&cocon, &data, &["contexts", "classes", "default"]);
    assert!(ok, "{err}");
    assert!(err.contains("0 groups and 0 contacts written"), "{err}");
    let (ok, _, err) = cocon_cli(&cocon, &data, &["contexts", "classes", "nowhere"]);
    assert!(!ok && err.contains("nowhere"), "{err}");

    // The teacher shares a note with class 6A: Ana is invited, and her Cozy gets the request.
    let note = teacher
        .put("/data/io.cozy.notes/lesson1", &json!({"title": "Lesson 1"}))
        .await;
    assert_eq!(note.status, 200, "{}", note.text);
    let rule = json!({"title": "Lesson", "doctype": "io.cozy.notes", "values": ["lesson1"]});
    let created = teacher
        .post(
            "/sharings/",
            &json!({"data": {"type": "io.cozy.sharings",
                "attributes": {"description": "Lesson 1", "rules": [rule]},
                "relationships": {"recipients": {"data": [{"id": six_a, "type": "io.cozy.contacts.groups"}]}}}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let attrs = &created.body["data"]["attributes"];
    assert_eq!(attrs["groups"][0]["name"], "6A");
    let members = attrs["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "the teacher and Ana: {members:?}");
    assert_eq!(members[1]["instance"], format!("http://{ana}"));
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    let token = cocon.token(&ana, "io.cozy.sharings").await.unwrap();
    let pupil = cocon.api(&ana, Some(&token));
    cocon_tests::sharing::eventually(&pupil, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["description"] == "Lesson 1"
    })
    .await;

    // A new school year: Ana and Ben swap classes. The roster run again moves them, the
    // teacher's groups follow, and so does the sharing with 6A: Ben is invited, Ana revoked.
    std::fs::write(
        &roster,
        format!(
            "domain,name,email,class,role\n\
             {prof},Marie Prof,,6A;6B,teacher\n\
             {ana},Ana Lima,ana@example.org,6B,\n\
             {ben},Ben Roux,,6A,\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = cocon_cli(&cocon, &data, &["instances", "import", roster.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("0 instances created, 3 already there"), "{err}");
    assert!(err.contains("0 groups and 2 contacts written"), "{err}");
    assert_eq!(instance(&cocon, &ana).await["class"], "6B");
    let moved = cocon_tests::sharing::eventually(&teacher, &format!("/sharings/{id}"), |s| {
        let members = s["data"]["attributes"]["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        members.len() == 3 && members[1]["status"] == "revoked"
    })
    .await;
    let members = &moved["data"]["attributes"]["members"];
    assert_eq!(members[1]["instance"], format!("http://{ana}"));
    assert_eq!(members[2]["instance"], format!("http://{ben}"));
    assert_eq!(members[2]["groups"], json!([0]));
}
