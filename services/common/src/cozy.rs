//! Cozy's well-known names, as cozy-stack defines them and Cozy's clients send them: defined
//! once, for every service and the gateway.

/// The id of the root directory.
pub const ROOT_DIR_ID: &str = "io.cozy.files.root-dir";
/// The id of the trash directory.
pub const TRASH_DIR_ID: &str = "io.cozy.files.trash-dir";
/// The trash directory's name, under the root.
pub const TRASH_DIR_NAME: &str = ".cozy_trash";
/// The id of the disk-usage settings document.
pub const DISK_USAGE_ID: &str = "io.cozy.settings.disk-usage";

/// Whether `slug` names an app or a konnector as cozy-stack takes them: 1 to 64 lowercase
/// letters, digits, `-` and `_` (it is also a host name's first label).
pub fn is_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 64
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The doctypes the stack itself gives a meaning to.
pub mod doctype {
    pub const FILES: &str = "io.cozy.files";
    pub const FILES_VERSIONS: &str = "io.cozy.files.versions";
    pub const FILES_DOWNLOADS: &str = "io.cozy.files.downloads";
    pub const FILES_ARCHIVES: &str = "io.cozy.files.archives";
    pub const PERMISSIONS: &str = "io.cozy.permissions";
    pub const SETTINGS: &str = "io.cozy.settings";
    pub const SESSIONS: &str = "io.cozy.sessions";
    pub const OAUTH_CLIENTS: &str = "io.cozy.oauth.clients";
    /// The list of an instance's doctypes (`GET /data/_all_doctypes`).
    pub const DOCTYPES: &str = "io.cozy.doctypes";
    pub const JOBS: &str = "io.cozy.jobs";
    pub const TRIGGERS: &str = "io.cozy.triggers";
    pub const APPS: &str = "io.cozy.apps";
    pub const KONNECTORS: &str = "io.cozy.konnectors";
    /// The accounts konnectors log in with.
    pub const ACCOUNTS: &str = "io.cozy.accounts";
    pub const NOTIFICATIONS: &str = "io.cozy.notifications";
    pub const SHARINGS: &str = "io.cozy.sharings";
    pub const SHARED: &str = "io.cozy.shared";
    pub const CONTACTS: &str = "io.cozy.contacts";
    pub const CONTACTS_GROUPS: &str = "io.cozy.contacts.groups";
}
