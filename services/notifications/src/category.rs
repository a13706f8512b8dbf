//! A notification's category and what its declaration says (cozy-stack's
//! `notifications[category]` in a konnector's or app's manifest, or in an OAuth client's
//! registration): whether it is stateful, how often it may be sent, its default priority.

use std::time::Duration;

use serde_json::Value;

use crate::error::{NotificationsError, Result};

/// A category's declared properties.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// A notification with the same state as the last one of its source is dropped.
    pub stateful: bool,
    /// Sooner than this after the last one of its source, a notification is dropped.
    pub min_interval: Option<Duration>,
    pub default_priority: Option<String>,
}

impl Properties {
    /// The properties of `category` in a `notifications` declaration (`None`: nothing is
    /// declared). `strict`: a sender without declarations is refused (apps and konnectors); an
    /// OAuth client without any passes with no properties, as in cozy-stack.
    pub fn of(declared: Option<&Value>, category: &str, strict: bool) -> Result<Properties> {
        let Some(declared) = declared.and_then(Value::as_object).filter(|d| !d.is_empty()) else {
            return if strict {
                Err(NotificationsError::Denied(
                    "this sender declares no notification categories (its manifest's \"notifications\")".into(),
                ))
            } else {
                Ok(Properties::default())
            };
        };
        let Some(props) = declared.get(category) else {
            let mut known: Vec<&str> = declared.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(NotificationsError::Denied(format!(
                "category {category:?} is not declared (declared: {})",
                known.join(", ")
            )));
        };
        let min_interval = match props.get("min_interval") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(parse_interval(s).ok_or_else(|| {
                NotificationsError::BadRequest(format!(
                    "the category's min_interval {s:?} is not a duration (such as \"1h\" or \"7d\")"
                ))
            })?),
            Some(other) => {
                return Err(NotificationsError::BadRequest(format!(
                    "the category's min_interval must be a duration string, not {other}"
                )));
            }
        };
        Ok(Properties {
            stateful: props.get("stateful").and_then(Value::as_bool).unwrap_or(false),
            min_interval,
            default_priority: props
                .get("default_priority")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// A Go duration (`90m`, `1h30m`) or one with days (`7d`).
fn parse_interval(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn test_categories_are_read_as_cozy_declares_them() {
        let declared = json!({
            "balance-lower": {"stateful": true, "min_interval": "7d", "default_priority": "high"},
            "new-bill": {"description": "A bill arrived"},
        });
        let props = Properties::of(Some(&declared), "balance-lower", true).unwrap();
        assert!(props.stateful);
        assert_eq!(props.min_interval, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(props.default_priority.as_deref(), Some("high"));
        assert_eq!(
            Properties::of(Some(&declared), "new-bill", true).unwrap(),
            Properties::default()
        );
        let unknown = Properties::of(Some(&declared), "spam", true).unwrap_err().to_string();
        assert!(unknown.contains("balance-lower, new-bill"), "{unknown}");
        assert!(Properties::of(None, "x", true).is_err(), "a konnector must declare");
        assert_eq!(Properties::of(None, "x", false).unwrap(), Properties::default());
        let bad = json!({"c": {"min_interval": "soon"}});
        assert!(Properties::of(Some(&bad), "c", true).is_err());
    }
}
