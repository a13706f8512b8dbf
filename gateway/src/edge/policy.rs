//! The access policy: a casbin model and policy kept in `gateway/policy/`, asked on every
//! authenticated route. Its request is (kind of caller, route class, verb, grant), a small
//! finite set, so the gateway asks casbin every possible question once at start-up and keeps
//! the answers in a table: each request then costs one lookup instead of a run of casbin's
//! matcher, and the decisions are exactly casbin's.

use casbin::{CoreApi, DefaultModel, Enforcer, MgmtApi};
use cocon_common::scope::Grant;

pub const MODEL: &str = include_str!("../../policy/model.conf");
pub const POLICY: &str = include_str!("../../policy/policy.csv");

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The person, by their session cookie.
    Person,
    Cli,
    Oauth,
    /// A sharing-link code.
    Share,
    /// A konnector's run: an app whose token also opens its accounts' credentials.
    Konnector,
    /// A web app, by the token written into its page (with the person's session cookie).
    Webapp,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Person,
        Kind::Cli,
        Kind::Oauth,
        Kind::Share,
        Kind::Konnector,
        Kind::Webapp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Person => "person",
            Kind::Cli => "cli",
            Kind::Oauth => "oauth",
            Kind::Share => "share",
            Kind::Konnector => "konnector",
            Kind::Webapp => "webapp",
        }
    }

    /// The kind the auth service names (`cli`, `oauth`, `share`, `konnector`, `app`).
    pub fn of_token(kind: &str) -> Kind {
        match kind {
            "oauth" => Kind::Oauth,
            "app" => Kind::Webapp,
            "share" => Kind::Share,
            "konnector" => Kind::Konnector,
            _ => Kind::Cli,
        }
    }
}

/// The class of an authenticated route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    DataDoc,
    DataCreate,
    DataList,
    DataBulk,
    DataDoctypes,
    PermissionsSelf,
    PermissionsCreate,
    PermissionsManage,
    PermissionsSharedByLink,
    SettingsSessions,
    SettingsClients,
    SettingsDiskUsage,
    /// Changing the passphrase (the current one is asked whoever asks).
    SettingsPassphrase,
    /// Two-factor: its state, a secret to scan, turning it on (the passphrase asked of an app)
    /// and off (the passphrase asked whoever asks).
    SettingsTwoFactor,
    /// The person's settings of their instance.
    SettingsInstance,
    /// What every app reads as it starts: the capabilities and the context.
    SettingsContext,
    Files,
    FilesNode,
    /// Queueing a worker's jobs and reading its queue.
    JobsWorker,
    /// One job, or one trigger and what hangs on it.
    JobsOne,
    /// Creating and listing triggers.
    JobsTriggers,
    /// Purging and cleaning an instance's jobs.
    JobsAdmin,
    /// Installing, listing and removing konnectors.
    Konnectors,
    /// Watching a doctype or a document on the realtime socket, and notifying its watchers.
    Realtime,
    /// Sending the person a notification.
    Notifications,
    /// Creating and reading cozy-to-cozy sharings.
    Sharings,
    /// Listing, installing and removing web apps.
    Apps,
}

impl Route {
    const ALL: [Route; 27] = [
        Route::DataDoc,
        Route::DataCreate,
        Route::DataList,
        Route::DataBulk,
        Route::DataDoctypes,
        Route::PermissionsSelf,
        Route::PermissionsCreate,
        Route::PermissionsManage,
        Route::PermissionsSharedByLink,
        Route::SettingsSessions,
        Route::SettingsClients,
        Route::SettingsDiskUsage,
        Route::SettingsPassphrase,
        Route::SettingsTwoFactor,
        Route::SettingsInstance,
        Route::SettingsContext,
        Route::Files,
        Route::FilesNode,
        Route::JobsWorker,
        Route::JobsOne,
        Route::JobsTriggers,
        Route::JobsAdmin,
        Route::Konnectors,
        Route::Realtime,
        Route::Notifications,
        Route::Sharings,
        Route::Apps,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::DataDoc => "data/doc",
            Route::DataCreate => "data/create",
            Route::DataList => "data/list",
            Route::DataBulk => "data/bulk",
            Route::DataDoctypes => "data/doctypes",
            Route::PermissionsSelf => "permissions/self",
            Route::PermissionsCreate => "permissions/create",
            Route::PermissionsManage => "permissions/manage",
            Route::PermissionsSharedByLink => "permissions/shared-by-link",
            Route::SettingsSessions => "settings/sessions",
            Route::SettingsClients => "settings/clients",
            Route::SettingsDiskUsage => "settings/disk-usage",
            Route::SettingsPassphrase => "settings/passphrase",
            Route::SettingsTwoFactor => "settings/twofactor",
            Route::SettingsInstance => "settings/instance",
            Route::SettingsContext => "settings/context",
            Route::Files => "files",
            Route::FilesNode => "files/node",
            Route::JobsWorker => "jobs/worker",
            Route::JobsOne => "jobs/one",
            Route::JobsTriggers => "jobs/triggers",
            Route::JobsAdmin => "jobs/admin",
            Route::Konnectors => "konnectors",
            Route::Realtime => "realtime",
            Route::Notifications => "notifications",
            Route::Sharings => "sharings",
            Route::Apps => "apps",
        }
    }
}

const VERBS: [&str; 5] = cocon_common::scope::VERBS;
const GRANTS: [Grant; 3] = [Grant::None, Grant::Document, Grant::Whole];

/// casbin's answers to every question the gateway may ask.
pub struct Policy {
    allowed: Vec<bool>,
}

/// Where a question's answer sits in the table (the `ALL` arrays list the variants in their
/// declaration order, so a variant's discriminant is its index).
fn slot(kind: Kind, route: Route, verb: usize, grant: Grant) -> usize {
    ((kind as usize * Route::ALL.len() + route as usize) * VERBS.len() + verb) * GRANTS.len() + grant as usize
}

/// The `p` and `g` lines of a policy file, without comments.
fn lines(text: &str) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut policies = Vec::new();
    let mut roles = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(',').map(|f| f.trim().to_string());
        match fields.next().as_deref() {
            Some("p") => policies.push(fields.collect()),
            Some("g") => roles.push(fields.collect()),
            _ => {}
        }
    }
    (policies, roles)
}

impl Policy {
    /// Loads the model and policy and asks casbin every question.
    pub async fn load(model: &str, policy: &str) -> Result<Policy, casbin::Error> {
        let model = DefaultModel::from_str(model).await?;
        let mut enforcer = Enforcer::new(model, casbin::MemoryAdapter::default()).await?;
        let (policies, roles) = lines(policy);
        enforcer.add_policies(policies).await?;
        enforcer.add_grouping_policies(roles).await?;
        let mut allowed = vec![false; Kind::ALL.len() * Route::ALL.len() * VERBS.len() * GRANTS.len()];
        for kind in Kind::ALL {
            for route in Route::ALL {
                for (v, verb) in VERBS.iter().enumerate() {
                    for grant in GRANTS {
                        allowed[slot(kind, route, v, grant)] =
                            enforcer.enforce((kind.as_str(), route.as_str(), *verb, grant.as_str()))?;
                    }
                }
            }
        }
        Ok(Policy { allowed })
    }

    /// The policy of the repository (`gateway/policy/`).
    pub fn builtin() -> Policy {
        let started = std::time::Instant::now();
        // Nothing in it waits on I/O (the model and policy are compiled in), so it runs to
        // completion on the spot, inside or outside a runtime.
        let policy =
            futures::executor::block_on(Policy::load(MODEL, POLICY)).expect("the built-in access policy loads");
        tracing::info!(
            decisions = policy.allowed.len(),
            allowed = policy.allowed.iter().filter(|a| **a).count(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "access policy loaded"
        );
        policy
    }

    pub fn allows(&self, kind: Kind, route: Route, verb: &str, grant: Grant) -> bool {
        VERBS
            .iter()
            .position(|v| *v == verb)
            .is_some_and(|v| self.allowed[slot(kind, route, v, grant)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_every_question_has_its_own_slot() {
        let mut seen = std::collections::HashSet::new();
        for kind in Kind::ALL {
            for route in Route::ALL {
                for verb in 0..VERBS.len() {
                    for grant in GRANTS {
                        assert!(seen.insert(slot(kind, route, verb, grant)));
                    }
                }
            }
        }
        assert_eq!(
            seen.len(),
            Kind::ALL.len() * Route::ALL.len() * VERBS.len() * GRANTS.len()
        );
        assert!(seen.iter().all(|s| *s < seen.len()));
    }

    #[test]
    fn test_the_policy_says_what_the_docs_say() {
        let p = Policy::builtin();
        use Grant::*;
        use Kind::*;
        // Documents: one document with a rule on it; everything else with the whole doctype.
        for kind in [Cli, Oauth, Share] {
            assert!(p.allows(kind, Route::DataDoc, "GET", Document));
            assert!(p.allows(kind, Route::DataDoc, "PUT", Whole));
            assert!(!p.allows(kind, Route::DataDoc, "GET", None));
            assert!(
                !p.allows(kind, Route::DataList, "GET", Document),
                "listing needs the doctype"
            );
            assert!(p.allows(kind, Route::DataList, "POST", Whole));
            assert!(p.allows(kind, Route::DataCreate, "POST", Document), "a selector rule");
            assert!(!p.allows(kind, Route::DataCreate, "POST", None));
            assert!(p.allows(kind, Route::PermissionsSelf, "GET", None));
        }
        assert!(
            !p.allows(Person, Route::DataDoc, "GET", Whole),
            "the person uses apps for data"
        );
        assert!(!p.allows(Share, Route::DataDoctypes, "GET", Whole));
        assert!(p.allows(Cli, Route::DataDoctypes, "GET", Whole));
        // Permission sets: apps only; a code never mints links.
        assert!(p.allows(Oauth, Route::PermissionsCreate, "POST", None));
        assert!(!p.allows(Share, Route::PermissionsCreate, "POST", Whole));
        assert!(!p.allows(Share, Route::PermissionsManage, "GET", Whole));
        assert!(p.allows(Cli, Route::PermissionsManage, "DELETE", None));
        assert!(!p.allows(Cli, Route::PermissionsSharedByLink, "GET", Document));
        // Settings: the person; apps read what they have a whole rule for.
        assert!(p.allows(Person, Route::SettingsSessions, "DELETE", None));
        assert!(p.allows(Oauth, Route::SettingsClients, "GET", Whole));
        assert!(!p.allows(Oauth, Route::SettingsClients, "DELETE", Whole));
        assert!(p.allows(Webapp, Route::SettingsClients, "DELETE", Whole));
        assert!(p.allows(Webapp, Route::SettingsSessions, "DELETE", Whole));
        assert!(p.allows(Webapp, Route::SettingsPassphrase, "PUT", Whole));
        assert!(!p.allows(Cli, Route::SettingsPassphrase, "PUT", Whole));
        for verb in ["POST", "PUT", "DELETE"] {
            assert!(p.allows(Webapp, Route::SettingsTwoFactor, verb, Whole));
            assert!(!p.allows(Webapp, Route::SettingsTwoFactor, verb, Document));
            assert!(!p.allows(Oauth, Route::SettingsTwoFactor, verb, Whole));
            assert!(!p.allows(Cli, Route::SettingsTwoFactor, verb, Whole));
        }
        assert!(!p.allows(Oauth, Route::SettingsSessions, "DELETE", Whole));
        assert!(!p.allows(Webapp, Route::SettingsSessions, "DELETE", Document));
        assert!(!p.allows(Share, Route::SettingsSessions, "GET", Whole));
        assert!(
            !p.allows(Cli, Route::DataDoc, "HEAD", Whole),
            "verbs are normalised before"
        );
        // Files: a rule naming a folder opens the routes on one node (the service checks the
        // node is under it), never the listings.
        for kind in [Cli, Oauth, Share] {
            assert!(p.allows(kind, Route::FilesNode, "GET", Document));
            assert!(p.allows(kind, Route::FilesNode, "PUT", Whole));
            assert!(!p.allows(kind, Route::FilesNode, "GET", None));
            assert!(!p.allows(kind, Route::Files, "GET", Document));
        }
        // Jobs: an app queues the workers its rules name; only the CLI may use a rule on the
        // whole doctype for that; codes never reach jobs.
        assert!(p.allows(Oauth, Route::JobsWorker, "POST", Document));
        assert!(!p.allows(Oauth, Route::JobsWorker, "POST", Whole));
        assert!(p.allows(Cli, Route::JobsWorker, "POST", Whole));
        assert!(p.allows(Oauth, Route::JobsOne, "GET", Whole));
        assert!(!p.allows(Oauth, Route::JobsAdmin, "DELETE", Document));
        assert!(!p.allows(Share, Route::JobsOne, "GET", Whole));
        assert!(!p.allows(Person, Route::JobsTriggers, "GET", Whole));
        assert!(p.allows(Cli, Route::Konnectors, "POST", Whole));
        assert!(!p.allows(Oauth, Route::Konnectors, "POST", Document));
        assert!(!p.allows(Share, Route::Konnectors, "GET", Whole));
    }

    #[tokio::test]
    async fn test_a_deny_line_wins_over_an_allow() {
        let policy = format!("{POLICY}\np, oauth, data/doc, DELETE, *, deny\n");
        let p = Policy::load(MODEL, &policy).await.unwrap();
        assert!(!p.allows(Kind::Oauth, Route::DataDoc, "DELETE", Grant::Whole));
        assert!(p.allows(Kind::Cli, Route::DataDoc, "DELETE", Grant::Whole));
        assert!(p.allows(Kind::Oauth, Route::DataDoc, "GET", Grant::Whole));
    }
}
