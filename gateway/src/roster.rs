//! Rosters: a CSV file of the people a context's instances are for (a school's pupils), one
//! row each. Its header names the columns, in any order and case: `domain` or `user` (a user
//! name the context's `domain_template` turns into a domain), `email`, `name`, `locale`,
//! `quota` (a size: `2GB`, `none`), `class`, `role` (`pupil`, the default, or `teacher`: a
//! teacher's `class` may name several, `6A;6B`, and their instance gets a contact group per
//! class, `admin.rs`'s `classes`). A row that cannot be read is rejected with its line and the
//! reason; the others become instance creations.

use cocon_common::context::Context;
use cocon_proto::auth::v1 as pb;

/// The columns a roster may have.
const COLUMNS: [&str; 8] = ["domain", "user", "email", "name", "locale", "quota", "class", "role"];

/// A row left out, for the person who fixes the roster.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejected {
    /// The row's line in the file (the header is line 1).
    pub line: u64,
    /// The row's domain or user name, as written.
    pub who: String,
    pub reason: String,
}

/// A roster read: the creations asked (with their lines), and the rows rejected.
#[derive(Debug, Default)]
pub struct Roster {
    pub rows: Vec<(u64, pb::CreateInstanceRequest)>,
    pub rejected: Vec<Rejected>,
}

/// Reads `text` for `context` (named `context_name`). `first_line` is the file line of the
/// first row after the header (a client that sends a long roster in parts says where each part
/// starts, so lines stay the file's). An unreadable header refuses the whole roster.
pub fn read(text: &[u8], context_name: &str, context: &Context, first_line: u64) -> Result<Roster, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the roster's header cannot be read: {e}"))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if let Some(unknown) = header.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        return Err(format!(
            "unknown column {unknown:?}: a roster's columns are {} (domain or user at least)",
            COLUMNS.join(", ")
        ));
    }
    if !header.iter().any(|h| h == "domain" || h == "user") {
        return Err("the roster has no domain or user column: name one in its first line".into());
    }
    if header.iter().any(|h| h == "user") && context.domain_template.is_empty() {
        return Err(format!(
            "the roster names users, but context {context_name} has no domain_template to make their \
             domains ({{user}}.school.example): add one to [contexts.{context_name}], or give domains"
        ));
    }
    let column = |name: &str| header.iter().position(|h| h == name);
    let role_column = column("role");
    let (domain, user, email, name, locale, quota, class) = (
        column("domain"),
        column("user"),
        column("email"),
        column("name"),
        column("locale"),
        column("quota"),
        column("class"),
    );
    let mut roster = Roster::default();
    let mut next_line = first_line;
    for record in reader.records() {
        // The file's line of the row: a quoted field may hold line breaks, so rows are not
        // one line each (the body's first row is on its line 2).
        let line = match &record {
            Ok(r) => r.position().map_or(next_line, |p| first_line + p.line() - 2),
            Err(_) => next_line,
        };
        next_line = line + 1;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                roster.rejected.push(Rejected {
                    line,
                    who: String::new(),
                    reason: format!("unreadable row: {e}"),
                });
                continue;
            }
        };
        let field = |at: Option<usize>| at.and_then(|i| record.get(i)).unwrap_or("").to_string();
        let (given_domain, given_user) = (field(domain), field(user));
        let who = if given_domain.is_empty() {
            given_user.clone()
        } else {
            given_domain.clone()
        };
        let mut reject = |reason: String| {
            roster.rejected.push(Rejected {
                line,
                who: who.clone(),
                reason,
            })
        };
        let domain = if !given_domain.is_empty() {
            given_domain
        } else if given_user.is_empty() {
            reject("no domain and no user name".into());
            continue;
        } else {
            match context.domain_of(&given_user) {
                Some(domain) => domain,
                None => {
                    reject(format!(
                        "{given_user:?} cannot be a domain's label: letters, digits and '-' only"
                    ));
                    continue;
                }
            }
        };
        let disk_quota = match field(quota).as_str() {
            "" => None,
            text => match cocon_common::size::parse(text) {
                Ok(bytes) => Some(bytes),
                Err(why) => {
                    reject(why);
                    continue;
                }
            },
        };
        let role = field(role_column).to_ascii_lowercase();
        if !matches!(role.as_str(), "" | "pupil" | "teacher") {
            reject(format!("unknown role {role:?}: pupil or teacher"));
            continue;
        }
        roster.rows.push((
            line,
            pb::CreateInstanceRequest {
                domain,
                email: field(email),
                locale: field(locale),
                context: context_name.to_string(),
                public_name: field(name),
                class: field(class),
                disk_quota,
                role,
                class_given: class.is_some(),
                role_given: role_column.is_some(),
            },
        ));
    }
    Ok(roster)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn school() -> Context {
        Context {
            domain_template: "{user}.school.test".into(),
            ..Context::default()
        }
    }

    #[test]
    fn test_a_roster_reads_its_columns_in_any_order_and_rejects_bad_rows_with_their_line() {
        let text = "User,Name,EMAIL,quota,class,Role\n\
                    jdupont,Jean Dupont,jean@example.org,1GB,6A\n\
                    \"bad name\",Bad,,,\n\
                    amartin,\"Martin, Anne\",,lots,6B\n\
                    ,Nobody,,,\n\
                    lroux,Léa Roux\n\
                    mprof,Marie Prof,,,6A;6B,Teacher\n\
                    xdir,Dir,,,,principal\n";
        let roster = read(text.as_bytes(), "school", &school(), 2).unwrap();
        assert_eq!(roster.rows.len(), 3);
        assert_eq!(roster.rows[0].1.role, "");
        assert_eq!(roster.rows[2].1.role, "teacher");
        assert_eq!(roster.rows[2].1.class, "6A;6B");
        assert!(roster.rows[0].1.class_given && roster.rows[0].1.role_given);
        let without = read(b"user,name\nana,Ana\n", "school", &school(), 2).unwrap();
        let ana = &without.rows[0].1;
        assert!(
            !ana.class_given && !ana.role_given,
            "a roster without the columns leaves them as they are"
        );
        let (line, first) = &roster.rows[0];
        assert_eq!(*line, 2);
        assert_eq!(first.domain, "jdupont.school.test");
        assert_eq!(first.public_name, "Jean Dupont");
        assert_eq!(first.email, "jean@example.org");
        assert_eq!(first.disk_quota, Some(1_000_000_000));
        assert_eq!((first.class.as_str(), first.context.as_str()), ("6A", "school"));
        assert_eq!(roster.rows[1].0, 6, "a short row takes empty fields");
        assert_eq!(roster.rows[1].1.public_name, "Léa Roux");
        let lines: Vec<(u64, &str)> = roster.rejected.iter().map(|r| (r.line, r.who.as_str())).collect();
        assert_eq!(lines, [(3, "bad name"), (4, "amartin"), (5, ""), (8, "xdir")]);
        assert!(
            roster.rejected[3].reason.contains("unknown role"),
            "{:?}",
            roster.rejected[3]
        );
        // A quoted field across lines: the rows after it keep their file lines.
        let text = "domain,name\na.test,\"two\nlines\"\nBad Domain,x\n";
        let quoted = read(text.as_bytes(), "school", &school(), 2).unwrap();
        assert_eq!(quoted.rows[0].0, 2);
        assert_eq!(quoted.rows[1].0, 4, "{:?}", quoted.rows);
        assert!(
            roster.rejected[1].reason.contains("not a size"),
            "{:?}",
            roster.rejected[1]
        );
    }

    #[test]
    fn test_a_roster_without_a_usable_header_is_refused_whole() {
        for (text, why) in [
            ("domain,age\na.test,12\n", "unknown column \"age\""),
            ("email\na@b.c\n", "no domain or user column"),
        ] {
            let err = read(text.as_bytes(), "school", &school(), 2).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let err = read(b"user\nx\n", "plain", &Context::default(), 2).unwrap_err();
        assert!(err.contains("no domain_template"), "{err}");
    }
}
