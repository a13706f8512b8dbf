//! Who may manage a permission set: the client that made it, or a token whose rules cover the
//! whole set; never a sharing-link code, never another client with narrower rights.

use std::sync::Arc;

use cocon_auth::{AuthError, AuthService, Config, Deps};
use cocon_events::{EventBus, MemoryBus};
use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::PermissionRule;
use cocon_storage::{EmbeddedStore, Store};
use serde_json::Value;

const REDIRECT: &str = "https://app.example/cb";

/// An OAuth access token of a new client for `scope`.
async fn app_token(auth: &AuthService, scope: &str) -> (String, String) {
    let client: Value = serde_json::from_str(
        &auth
            .register_client(
                "a.test",
                &format!(r#"{{"redirect_uris":["{REDIRECT}"],"client_name":"App","software_id":"app-{scope}"}}"#),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let code = auth
        .issue_code(&pb::AuthorizationRequest {
            domain: "a.test".into(),
            client_id: client_id.clone(),
            redirect_uri: REDIRECT.into(),
            scope: scope.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let tokens = auth
        .exchange_token(&pb::TokenRequest {
            domain: "a.test".into(),
            grant_type: "authorization_code".into(),
            code,
            redirect_uri: REDIRECT.into(),
            client_id: client_id.clone(),
            client_secret: client["client_secret"].as_str().unwrap().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    (tokens.access_token, client_id)
}

/// One rule: GET on the note n1.
fn note_set() -> pb::PermissionChanges {
    pb::PermissionChanges {
        rules: vec![rule("n", "io.cozy.notes", &["GET"], &["n1"])],
        ..Default::default()
    }
}

fn rule(name: &str, doctype: &str, verbs: &[&str], values: &[&str]) -> PermissionRule {
    PermissionRule {
        name: name.into(),
        doctype: doctype.into(),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        values: values.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn test_only_the_maker_or_a_wider_token_manages_a_set() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap());
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(cocon_events::streams::all(
        &cocon_events::streams::Limits::default(),
    )));
    let auth = AuthService::build(
        Config::default(),
        Deps {
            store,
            bus,
            data_dir: dir.path().to_path_buf(),
            mesh_key: cocon_common::ticket::MeshKey::random(),
            contexts: Default::default(),
        },
    )
    .await
    .unwrap();
    auth.create_instance(&pb::CreateInstanceRequest {
        domain: "a.test".to_string(),
        ..Default::default()
    })
    .await
    .unwrap();

    let (notes_app, notes_client) = app_token(&auth, "io.cozy.notes:GET").await;
    let (contacts_app, _) = app_token(&auth, "io.cozy.contacts").await;
    let (wide_cli, _, _) = auth.issue_token("a.test", "io.cozy.notes", 3600).await.unwrap();

    let made = auth
        .create_permission("a.test", &notes_app, &note_set(), &["bob".into()], "")
        .await
        .unwrap();
    let id = made.id.as_str();
    assert_eq!(made.source_id, format!("io.cozy.oauth.clients/{notes_client}"));

    // Another app with other rights neither sees nor deletes it.
    assert!(matches!(
        auth.get_permission("a.test", &contacts_app, id).await,
        Err(AuthError::Denied(_))
    ));
    assert!(matches!(
        auth.delete_permission("a.test", &contacts_app, id).await,
        Err(AuthError::Denied(_))
    ));
    // Nor may it widen the set through a patch.
    assert!(matches!(
        auth.patch_permission(
            "a.test",
            &notes_app,
            id,
            &pb::PermissionChanges {
                rules: vec![rule("w", "io.cozy.notes", &["DELETE"], &[])],
                ..Default::default()
            }
        )
        .await,
        Err(AuthError::Denied(_))
    ));
    // A token holding all of its rules may.
    auth.get_permission("a.test", &wide_cli, id).await.unwrap();

    // The set's own code cannot mint or manage sets.
    let code = made.codes[0].code.as_str();
    assert_eq!(made.codes[0].name, "bob");
    assert!(matches!(
        auth.create_permission("a.test", code, &note_set(), &[], "").await,
        Err(AuthError::Denied(_))
    ));
    assert!(matches!(
        auth.get_permission("a.test", code, id).await,
        Err(AuthError::Denied(_))
    ));

    // The maker deletes it; the code is gone with it.
    auth.delete_permission("a.test", &notes_app, id).await.unwrap();
    assert!(matches!(
        auth.authenticate("a.test", code, "", &[]).await,
        Err(AuthError::InvalidToken(_))
    ));
    assert!(matches!(
        auth.get_permission("a.test", &wide_cli, id).await,
        Err(AuthError::NoSuchPermission(_))
    ));
}
