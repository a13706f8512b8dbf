//! A context's classes as contact groups in its teachers' instances (`POST
//! /instances/contexts/:name/classes`, which `cocon instances import` calls after a roster
//! with a `role` column): the roster put each person in classes (`class`, several `;` apart)
//! and made some of them teachers (`role`); each teacher gets a group per class they teach
//! holding its pupils, so that sharing a folder with a class is one step. The sharing service
//! writes the groups (`SetClassGroups`); this module reads the context's instances and says
//! which teacher gets which classes.

use std::collections::{BTreeMap, BTreeSet};

use cocon_mesh::{AuthClient, SharingClient};
use cocon_proto::auth::v1 as pb;
use cocon_proto::sharing::v1 as sharing_pb;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Instances read per call to the auth service.
const PAGE: u32 = 1000;
/// Teachers whose groups are written at once.
const CONCURRENT: usize = 4;

/// The classes `class` names: `;`-separated, trimmed, each once.
fn classes_of(class: &str) -> BTreeSet<String> {
    class
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// What each teacher of `instances` gets: their classes, each with its pupils. `origin`
/// makes a pupil's Cozy URL from its domain.
fn plan(instances: &[pb::Instance], origin: impl Fn(&str) -> String) -> Vec<sharing_pb::ClassGroupsRequest> {
    let mut pupils: BTreeMap<String, Vec<sharing_pb::ClassMember>> = BTreeMap::new();
    for i in instances.iter().filter(|i| i.role != "teacher") {
        for class in classes_of(&i.class) {
            pupils.entry(class).or_default().push(sharing_pb::ClassMember {
                domain: i.domain.clone(),
                name: i.public_name.clone(),
                email: i.email.clone(),
                url: origin(&i.domain),
            });
        }
    }
    instances
        .iter()
        .filter(|i| i.role == "teacher")
        .map(|t| sharing_pb::ClassGroupsRequest {
            instance_id: t.id.clone(),
            domain: t.domain.clone(),
            classes: classes_of(&t.class)
                .into_iter()
                .map(|name| sharing_pb::ClassGroup {
                    members: pupils.get(&name).cloned().unwrap_or_default(),
                    name,
                })
                .collect(),
        })
        .collect()
}

/// Writes every teacher's class groups in `context`; the report the admin API answers.
pub(crate) async fn sync(
    auth: &AuthClient,
    sharing: &SharingClient,
    context: &str,
    origin: impl Fn(&str) -> String,
) -> Result<Value, ApiError> {
    let mut instances = Vec::new();
    let mut after = String::new();
    loop {
        let page = auth
            .clone()
            .list_instances(pb::ListInstancesRequest {
                limit: PAGE,
                after: after.clone(),
                context: context.to_string(),
            })
            .await?
            .into_inner();
        instances.extend(page.instances.into_iter().filter(|i| !i.class.is_empty()));
        if page.next.is_empty() {
            break;
        }
        after = page.next;
    }
    let plan = plan(&instances, origin);
    let classes: BTreeSet<&str> = plan
        .iter()
        .flat_map(|t| t.classes.iter().map(|c| c.name.as_str()))
        .collect();
    let (classes, teachers) = (classes.len(), plan.len());
    let results: Vec<(String, Result<sharing_pb::ClassGroupsAnswer, tonic::Status>)> = futures::stream::iter(plan)
        .map(|teacher| {
            let mut sharing = sharing.clone();
            async move {
                let domain = teacher.domain.clone();
                (domain, sharing.set_class_groups(teacher).await.map(|a| a.into_inner()))
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    let (mut groups, mut contacts, mut failed) = (0u64, 0u64, Vec::new());
    for (domain, result) in results {
        match result {
            Ok(answer) => {
                groups += u64::from(answer.groups);
                contacts += u64::from(answer.contacts);
            }
            Err(status) => failed.push(json!({"domain": domain, "reason": status.message()})),
        }
    }
    Ok(json!({
        "context": context,
        "classes": classes,
        "teachers": teachers,
        "groups_written": groups,
        "contacts_written": contacts,
        "failed": failed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(domain: &str, class: &str, role: &str) -> pb::Instance {
        pb::Instance {
            id: format!("id-{domain}"),
            domain: domain.into(),
            public_name: domain.to_uppercase(),
            class: class.into(),
            role: role.into(),
            ..Default::default()
        }
    }

    #[test]
    fn test_each_teacher_gets_the_pupils_of_the_classes_they_teach() {
        let instances = [
            person("prof.test", "6A; 6B ;6A", "teacher"),
            person("other.test", "5C", "teacher"),
            person("a.test", "6A", ""),
            person("b.test", "6B;Latin", ""),
            person("c.test", "5C", ""),
            person("colleague.test", "6A", "teacher"),
        ];
        let plan = plan(&instances, |d| format!("https://{d}"));
        assert_eq!(plan.len(), 3);
        let prof = &plan[0];
        assert_eq!(prof.instance_id, "id-prof.test");
        let classes: Vec<(&str, Vec<&str>)> = prof
            .classes
            .iter()
            .map(|c| (c.name.as_str(), c.members.iter().map(|m| m.domain.as_str()).collect()))
            .collect();
        assert_eq!(classes, [("6A", vec!["a.test"]), ("6B", vec!["b.test"])]);
        assert_eq!(prof.classes[0].members[0].url, "https://a.test");
        assert_eq!(prof.classes[0].members[0].name, "A.TEST");
        assert_eq!(plan[1].classes[0].members[0].domain, "c.test");
    }
}
