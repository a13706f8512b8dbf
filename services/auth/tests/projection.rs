//! The auth tables are a projection of the auth event log: rebuilding them from the log gives
//! the same rows, and the person can still log in with the same passphrase and sessions.

use std::sync::Arc;

use cocon_auth::{AuthService, Config, Deps, Origin};
use cocon_common::context::Contexts;
use cocon_events::{EventBus, MemoryBus};
use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::PermissionRule;
use cocon_storage::{EmbeddedStore, Store, TableRow};

async fn table(store: &Arc<dyn Store>, name: &'static str) -> Vec<TableRow> {
    store.scan_table(name, None, 100_000).await.unwrap()
}

fn plain(text: &str) -> Option<pb::Passphrase> {
    Some(pb::Passphrase {
        plain: text.into(),
        hashed: String::new(),
    })
}

async fn login(auth: &AuthService, domain: &str, pass: &str) -> Result<pb::Session, cocon_auth::AuthError> {
    let req = pb::LoginRequest {
        domain: domain.into(),
        passphrase: plain(pass),
        ..Default::default()
    };
    let answer = auth.login(&req, &Origin::default()).await?;
    Ok(answer.session.expect("no two-factor here: a session"))
}

/// An auth service on an embedded store and an in-memory bus under `dir`.
async fn service(dir: &std::path::Path) -> (AuthService, Arc<dyn Store>) {
    service_with(dir, Default::default()).await
}

async fn service_with(dir: &std::path::Path, contexts: Contexts) -> (AuthService, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("store.redb")).unwrap());
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(cocon_events::streams::all(
        &cocon_events::streams::Limits::default(),
    )));
    let config = Config {
        kdf_iterations: 1000,
        ..Config::default()
    };
    let deps = Deps {
        store: store.clone(),
        bus,
        data_dir: dir.to_path_buf(),
        mesh_key: cocon_common::ticket::MeshKey::random(),
        contexts: Arc::new(contexts),
    };
    (AuthService::build(config, deps).await.unwrap(), store)
}

#[tokio::test]
async fn test_rebuild_gives_the_same_instances_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, store) = service(dir.path()).await;

    // Two people onboard and log in; one ends a session; one domain is destroyed and re-created.
    for domain in ["a.test", "b.test", "gone.test"] {
        auth.create_instance(&pb::CreateInstanceRequest {
            domain: domain.to_string(),
            email: "owner@example.org".to_string(),
            locale: "fr".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
        let token = auth.issue_onboarding(domain, "").await.unwrap().register_token;
        let req = pb::SetPassphraseRequest {
            domain: domain.into(),
            register_token: token,
            new: plain("passphrase of a person"),
            open_session: true,
            ..Default::default()
        };
        auth.set_passphrase(&req, &Origin::default()).await.unwrap();
    }
    let kept = login(&auth, "a.test", "passphrase of a person").await.unwrap();
    let ended = login(&auth, "a.test", "passphrase of a person").await.unwrap();
    assert!(login(&auth, "a.test", "wrong").await.is_err());
    assert_eq!(auth.logout("a.test", &ended.id, false).await.unwrap(), 1);
    // b turns two-factor on and signs in with a recovery code.
    let proposal = auth.propose_two_factor("b.test").await.unwrap();
    let totp = totp_rs::TOTP::from_url(&proposal.otpauth_uri).unwrap();
    let codes = auth
        .enable_two_factor("b.test", &totp.generate_current().unwrap(), None)
        .await
        .unwrap();
    let first = auth
        .login(
            &pb::LoginRequest {
                domain: "b.test".into(),
                passphrase: plain("passphrase of a person"),
                ..Default::default()
            },
            &Origin::default(),
        )
        .await
        .unwrap();
    assert!(first.session.is_none());
    let second = pb::LoginTwoFactorRequest {
        domain: "b.test".into(),
        two_factor_token: first.two_factor_token,
        code: codes[0].clone(),
        ..Default::default()
    };
    auth.login_two_factor(&second, &Origin::default()).await.unwrap();
    assert!(
        auth.login_two_factor(&second, &Origin::default()).await.is_err(),
        "a recovery code works once"
    );
    // a connects an OAuth client: a code, its exchange, a refresh; a second code is left waiting.
    let client: serde_json::Value = serde_json::from_str(
        &auth
            .register_client(
                "a.test",
                r#"{"redirect_uris":["https://app.example/cb"],"client_name":"App","software_id":"app"}"#,
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let authorization = pb::AuthorizationRequest {
        domain: "a.test".into(),
        client_id: client["client_id"].as_str().unwrap().into(),
        redirect_uri: "https://app.example/cb".into(),
        scope: "io.cozy.notes".into(),
        ..Default::default()
    };
    let exchange = |grant_type: &str, code: &str, refresh: &str| pb::TokenRequest {
        domain: "a.test".into(),
        grant_type: grant_type.into(),
        code: code.into(),
        redirect_uri: "https://app.example/cb".into(),
        client_id: client["client_id"].as_str().unwrap().into(),
        client_secret: client["client_secret"].as_str().unwrap().into(),
        refresh_token: refresh.into(),
        ..Default::default()
    };
    let code = auth.issue_code(&authorization).await.unwrap();
    let tokens = auth
        .exchange_token(&exchange("authorization_code", &code, ""))
        .await
        .unwrap();
    auth.exchange_token(&exchange("refresh_token", "", &tokens.refresh_token))
        .await
        .unwrap();
    auth.issue_code(&authorization).await.unwrap();
    // a shares notes by link: a set with two codes, one dropped later; another set deleted.
    let (cli, _, _) = auth.issue_token("a.test", "io.cozy.notes", 3600).await.unwrap();
    // Another CLI token, revoked: it stays refused after the rebuild.
    let (revoked, _, revoked_id) = auth.issue_token("a.test", "io.cozy.notes", 3600).await.unwrap();
    auth.revoke_cli_token("a.test", &revoked_id).await.unwrap();
    let notes = pb::PermissionChanges {
        rules: vec![PermissionRule {
            name: "n".into(),
            doctype: "io.cozy.notes".into(),
            verbs: vec!["GET".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let set = auth
        .create_permission("a.test", &cli, &notes, &["bob".into(), "jane".into()], "1D")
        .await
        .unwrap();
    let set_id = set.id.as_str();
    let keep_bob = pb::PermissionChanges {
        codes: Some(pb::CodeNames {
            names: vec!["bob".into()],
        }),
        ..Default::default()
    };
    auth.patch_permission("a.test", &cli, set_id, &keep_bob).await.unwrap();
    let other = auth
        .create_permission("a.test", &cli, &notes, &["x".into()], "")
        .await
        .unwrap();
    auth.delete_permission("a.test", &cli, &other.id).await.unwrap();

    auth.destroy_instance("gone.test").await.unwrap();
    auth.create_instance(&pb::CreateInstanceRequest {
        domain: "gone.test".to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    auth.issue_onboarding("gone.test", "passphrase_reset").await.unwrap();

    let instances = table(&store, "auth.instances").await;
    let sessions = table(&store, "auth.sessions").await;
    assert_eq!(instances.len(), 3);
    assert_eq!(sessions.len(), 4, "a's onboarding and kept sessions, b's two");

    let oauth_tables = [
        "auth.clients",
        "auth.codes",
        "auth.grants",
        "auth.permissions",
        "auth.share_codes",
        "auth.cli_tokens",
    ];
    let mut oauth = Vec::new();
    for name in oauth_tables {
        oauth.push(table(&store, name).await);
    }
    assert_eq!(
        oauth.iter().map(Vec::len).collect::<Vec<_>>(),
        [1, 1, 1, 1, 2, 1],
        "one set left, with bob's code and shortcode; one CLI token of two"
    );

    let mut projection = AuthService::projection(store.clone()).await.unwrap();
    let replayed = cocon_events::rebuild(store.clone(), &mut projection, &mut |_| {})
        .await
        .unwrap();
    // Per domain: created, onboarding issued, passphrase set, session created; then two logins,
    // a failed one, a logout; two-factor proposed, enabled, a login and a failed one; a client
    // registered, two codes and two token issues; two CLI tokens issued and one revoked; two sets
    // created, one updated and one deleted; a destruction, a creation and an onboarding link.
    assert_eq!(replayed, 3 * 4 + 4 + 4 + 5 + 3 + 4 + 3);
    assert_eq!(table(&store, "auth.instances").await, instances);
    assert_eq!(table(&store, "auth.sessions").await, sessions);
    for (name, rows) in oauth_tables.into_iter().zip(oauth) {
        assert_eq!(table(&store, name).await, rows, "{name}");
    }

    // The passphrase (sealed in its event) and the sessions still work after the rebuild.
    let listed = auth.list_sessions("a.test").await.unwrap();
    assert!(listed.iter().any(|s| s.id == kept.id) && listed.iter().all(|s| s.id != ended.id));
    let status = auth.two_factor_status("b.test").await.unwrap();
    assert!(status.enabled);
    assert_eq!(status.recovery_codes_left, 9);
    assert!(matches!(
        login(&auth, "gone.test", "passphrase of a person").await,
        Err(cocon_auth::AuthError::NotOnboarded)
    ));
    // bob's code (sealed in its event) still opens the set; jane's was dropped.
    let code = |name: &str| set.codes.iter().find(|c| c.name == name).unwrap().code.clone();
    let bob = auth.authenticate("a.test", &code("bob"), "", &[]).await.unwrap();
    assert_eq!((bob.kind.as_str(), bob.permission_id.as_str()), ("share", set_id));
    assert_eq!(bob.rules[0].doctype, "io.cozy.notes");
    assert!(auth.authenticate("a.test", &code("jane"), "", &[]).await.is_err());
    assert!(auth.authenticate("a.test", &cli, "", &[]).await.is_ok());
    assert!(matches!(
        auth.authenticate("a.test", &revoked, "", &[]).await,
        Err(cocon_auth::AuthError::InvalidToken(m)) if m.contains("revoked")
    ));
}

#[tokio::test]
async fn test_instances_list_in_pages_of_the_asked_size() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, _) = service(dir.path()).await;
    for domain in ["e.test", "a.test", "d.test", "b.test", "c.test"] {
        auth.create_instance(&pb::CreateInstanceRequest {
            domain: domain.to_string(),
            locale: "en".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = auth.list_instances_after(&after, 2).await.unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|i| i.domain.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => after = last.domain.clone(),
            _ => break,
        }
    }
    assert_eq!(seen, ["a.test", "b.test", "c.test", "d.test", "e.test"]);
}

#[tokio::test]
async fn test_a_roster_creates_its_instances_once_with_its_contexts_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let contexts: Contexts =
        toml::from_str::<toml::Table>("[contexts.school]\ndisk_quota = \"2GB\"\nlocale = \"fr\"\n[contexts.other]\n")
            .unwrap()["contexts"]
            .clone()
            .try_into()
            .unwrap();
    let (auth, store) = service_with(dir.path(), contexts).await;
    auth.create_instance(&pb::CreateInstanceRequest {
        domain: "taken.test".into(),
        context: "other".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let row = |domain: &str, class: &str| pb::CreateInstanceRequest {
        domain: domain.into(),
        context: "school".into(),
        public_name: format!("Pupil {domain}"),
        class: class.into(),
        ..Default::default()
    };
    let roster = vec![
        row("p1.test", "6A"),
        pb::CreateInstanceRequest {
            locale: "en".into(),
            disk_quota: Some(0),
            ..row("p2.test", "6B")
        },
        row("p1.test", "6A"),
        row("taken.test", ""),
        row("Not A Domain", ""),
        pb::CreateInstanceRequest {
            context: "nowhere".into(),
            ..row("p3.test", "")
        },
    ];
    let kinds = |outcomes: &[pb::InstanceOutcome]| -> Vec<String> {
        use pb::instance_outcome::Outcome;
        outcomes
            .iter()
            .map(|o| match o.outcome.as_ref().unwrap() {
                Outcome::Created(i) => format!("created {}", i.domain),
                Outcome::Existing(i) => format!("existing {}", i.domain),
                Outcome::Rejected(why) => format!("rejected {why}"),
            })
            .collect()
    };
    let first = auth.create_instances(&roster).await.unwrap();
    let first_kinds = kinds(&first);
    assert_eq!(&first_kinds[..2], ["created p1.test", "created p2.test"]);
    assert!(first_kinds[2].contains("named twice"), "{}", first_kinds[2]);
    assert!(
        first_kinds[3].contains("already exists in context other"),
        "{}",
        first_kinds[3]
    );
    assert!(
        first_kinds[4].starts_with("rejected invalid domain"),
        "{}",
        first_kinds[4]
    );
    assert!(first_kinds[5].contains("no context \"nowhere\""), "{}", first_kinds[5]);

    // The context's defaults, unless the row says otherwise.
    let p1 = auth.instance("p1.test").await.unwrap();
    assert_eq!(
        (p1.disk_quota, p1.locale.as_str(), p1.context.as_str()),
        (2_000_000_000, "fr", "school")
    );
    assert_eq!((p1.public_name.as_str(), p1.class.as_str()), ("Pupil p1.test", "6A"));
    let p2 = auth.instance("p2.test").await.unwrap();
    assert_eq!((p2.disk_quota, p2.locale.as_str()), (0, "en"));

    // The same roster again changes nothing.
    let instances = table(&store, "auth.instances").await;
    let second = kinds(&auth.create_instances(&roster).await.unwrap());
    assert_eq!(&second[..2], ["existing p1.test", "existing p2.test"]);
    assert_eq!(table(&store, "auth.instances").await, instances);

    // The roster's instances are in the log: a rebuild gives them back as they were.
    let mut projection = AuthService::projection(store.clone()).await.unwrap();
    cocon_events::rebuild(store.clone(), &mut projection, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(table(&store, "auth.instances").await, instances);
}

#[tokio::test]
async fn test_apps_permission_sets_are_recorded_together_and_only_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, store) = service(dir.path()).await;
    auth.create_instance(&pb::CreateInstanceRequest {
        domain: "a.test".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rule = |doctype: &str| PermissionRule {
        name: "main".into(),
        doctype: doctype.into(),
        ..Default::default()
    };
    let app = |slug: &str, doctype: &str, remove: bool| pb::AppPermissions {
        slug: slug.into(),
        rules: if remove { Vec::new() } else { vec![rule(doctype)] },
        remove,
    };
    let events = || async { table(&store, "auth.events").await.len() };
    let before = events().await;
    let sets = [app("home", "io.cozy.apps", false), app("drive", "io.cozy.files", false)];
    auth.set_app_permissions("a.test", &sets).await.unwrap();
    assert_eq!(events().await, before + 2, "one event per app");
    assert_eq!(table(&store, "auth.permissions").await.len(), 2);
    // The same again records nothing; a change and a removal record one event each.
    auth.set_app_permissions("a.test", &sets).await.unwrap();
    assert_eq!(events().await, before + 2);
    let changed = [app("home", "io.cozy.notes", false), app("drive", "", true)];
    auth.set_app_permissions("a.test", &changed).await.unwrap();
    assert_eq!(events().await, before + 4);
    let left = table(&store, "auth.permissions").await;
    assert_eq!(left.len(), 1);
    // A wrong slug refuses the whole call: nothing of it is recorded.
    let wrong = [
        app("notes", "io.cozy.notes", false),
        app("../x", "io.cozy.notes", false),
    ];
    assert!(auth.set_app_permissions("a.test", &wrong).await.is_err());
    assert_eq!(table(&store, "auth.permissions").await, left);
}
