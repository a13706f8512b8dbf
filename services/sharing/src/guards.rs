//! What an instance receives read-only: the rules of its active sharings as a recipient whose
//! changes would not go back (the owner made it read-only, or no rule syncs). The gateway
//! hands them to the documents and files services with the person's writes, which are then
//! refused there (403) instead of diverging from the owner's copy unseen.

use cocon_common::cozy::doctype::FILES;
use cocon_proto::sharing::v1 as pb;

use crate::doc::Sharing;
use crate::error::Result;
use crate::files_rule::{FilesRule, files_rule};
use crate::service::SharingService;

/// Whether this recipient's changes to `sharing` stay here.
fn received_read_only(sharing: &Sharing, origin: &str) -> bool {
    !sharing.owner
        && sharing.active
        && (sharing.read_only_rules()
            || crate::revoke::my_member(sharing, origin).is_some_and(|me| sharing.members[me].read_only))
}

/// The guards of the sharings an instance (at `origin`) holds.
pub(crate) fn guards_of(sharings: &[Sharing], origin: &str) -> pb::Guards {
    let mut guards = pb::Guards::default();
    for sharing in sharings.iter().filter(|s| received_read_only(s, origin)) {
        // The folder (or the file) as it is here, or the folder an album's files land in.
        match files_rule(sharing) {
            Some(rule @ FilesRule::Referenced { .. }) => guards.directories.push(rule.landing().to_string()),
            Some(FilesRule::Folder(id) | FilesRule::File(id)) => guards.directories.push(id.to_string()),
            None => {}
        }
        for rule in sharing.rules.iter().filter(|r| !r.local && r.doctype != FILES) {
            guards.documents.push(pb::DocumentGuard {
                doctype: rule.doctype.clone(),
                selector: rule.selector.clone(),
                values: rule.values.clone(),
            });
        }
    }
    guards
}

impl SharingService {
    pub(crate) async fn read_only_guards(&self, req: pb::GuardsRequest) -> Result<pb::Guards> {
        let instance = self.instance(req.instance, true)?;
        Ok(guards_of(&self.all_shown(&instance.id).await?, &instance.origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{Member, Rule, status};

    fn sharing(owner: bool, sync: bool, me_read_only: bool) -> Sharing {
        let behaviour = if sync { "sync" } else { "push" };
        let rule = |doctype: &str, value: &str| Rule {
            title: "t".into(),
            doctype: doctype.into(),
            values: vec![value.into()],
            add: behaviour.into(),
            update: behaviour.into(),
            remove: behaviour.into(),
            ..Default::default()
        };
        Sharing {
            id: "s1".into(),
            active: true,
            owner,
            rules: vec![rule("io.cozy.notes", "n1"), rule(FILES, "dir1")],
            members: vec![
                Member {
                    status: status::OWNER.into(),
                    instance: "https://alice.test".into(),
                    ..Default::default()
                },
                Member {
                    status: status::READY.into(),
                    instance: "https://bob.test".into(),
                    read_only: me_read_only,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn test_only_what_a_recipient_cannot_send_back_is_guarded() {
        // Read-write recipient, and the owner: nothing guarded.
        assert_eq!(
            guards_of(&[sharing(false, true, false)], "https://bob.test"),
            pb::Guards::default()
        );
        assert_eq!(
            guards_of(&[sharing(true, true, true)], "https://alice.test"),
            pb::Guards::default()
        );
        // A read-only member: its documents and folders.
        let guards = guards_of(&[sharing(false, true, true)], "https://bob.test");
        assert_eq!(guards.directories, vec!["dir1".to_string()]);
        assert_eq!(guards.documents.len(), 1);
        assert_eq!(guards.documents[0].doctype, "io.cozy.notes");
        assert_eq!(guards.documents[0].values, vec!["n1".to_string()]);
        // Rules that only push: every recipient is read-only.
        assert_eq!(
            guards_of(&[sharing(false, false, false)], "https://bob.test")
                .directories
                .len(),
            1
        );
        // Ended (revoked or left): the copy is the person's own again.
        let mut ended = sharing(false, true, true);
        ended.active = false;
        assert_eq!(guards_of(&[ended], "https://bob.test"), pb::Guards::default());
    }
}
