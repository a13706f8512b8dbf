//! The mails Cocon sends itself (cozy's `template_name`): a subject, a text part and an HTML
//! part per template and locale, rendered with minijinja from `services/jobs/mail/`, built
//! into the binary. The HTML is escaped as it is rendered; a value a template needs and the
//! mail does not give is an error, never an empty hole in the mail.

use std::sync::LazyLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

/// The locales the templates are written in; any other falls back to the first.
pub const LOCALES: [&str; 2] = ["en", "fr"];

/// Each template's name and the values it needs.
pub const TEMPLATES: [(&str, &[&str]); 2] = [
    ("passphrase_reset", &["domain", "link", "hours"]),
    ("onboarding", &["domain", "link", "days"]),
];

macro_rules! sources {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../mail/", $name)))),*]
    };
}

const SOURCES: [(&str, &str); 9] = sources![
    "layout.html",
    "passphrase_reset.en.txt",
    "passphrase_reset.en.html",
    "passphrase_reset.fr.txt",
    "passphrase_reset.fr.html",
    "onboarding.en.txt",
    "onboarding.en.html",
    "onboarding.fr.txt",
    "onboarding.fr.html",
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    for (name, source) in SOURCES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("mail template {name} does not parse: {e}"));
    }
    env
});

/// A rendered mail.
#[derive(Debug)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders template `name` in `locale` (falling back to English) with `values`.
pub fn render(name: &str, locale: &str, values: &Value) -> Result<Rendered, String> {
    let Some((_, needed)) = TEMPLATES.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "there is no mail template named {name:?} (there are {}): send the mail's parts instead",
            known.join(", ")
        ));
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|k| values.get(k).is_none_or(Value::is_null))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "mail template {name:?} needs template_values {}",
            missing.join(", ")
        ));
    }
    let locale = LOCALES.iter().find(|l| **l == locale).unwrap_or(&LOCALES[0]);
    let fail = |e: minijinja::Error| format!("mail template {name:?} ({locale}) does not render: {e}");
    let mut context = values.as_object().cloned().unwrap_or_default();
    context.insert("locale".into(), Value::String(locale.to_string()));
    let text = ENV.get_template(&format!("{name}.{locale}.txt")).map_err(fail)?;
    let mut captured = text.render_captured(&context).map_err(fail)?;
    let (subject, body) = captured
        .with_state_mut(|state| {
            let subject = state.render_block("subject")?;
            let body = state.render_block("body")?;
            Ok::<_, minijinja::Error>((subject.trim().to_string(), body.trim().to_string()))
        })
        .map_err(fail)?;
    context.insert("subject".into(), Value::String(subject.clone()));
    let html = ENV
        .get_template(&format!("{name}.{locale}.html"))
        .and_then(|t| t.render(&context))
        .map_err(fail)?;
    Ok(Rendered {
        subject,
        text: body,
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_every_template_renders_in_every_locale() {
        let values = json!({"domain": "alice.test", "link": "https://alice.test/x?a=1&b=2", "hours": 24, "days": 7});
        for (name, _) in TEMPLATES {
            for locale in LOCALES {
                let mail = render(name, locale, &values).unwrap();
                assert!(mail.subject.contains("alice.test"), "{name} {locale}: {}", mail.subject);
                assert!(!mail.subject.contains('\n'));
                assert!(
                    mail.text.contains("https://alice.test/x?a=1&b=2"),
                    "the text is not escaped"
                );
                assert!(mail.html.contains("a=1&amp;b=2"), "the HTML is escaped: {}", mail.html);
                assert!(mail.html.contains(&format!("<html lang=\"{locale}\">")));
            }
        }
    }

    #[test]
    fn test_values_are_escaped_missing_ones_refused_and_locales_fall_back() {
        let values = json!({"domain": "<b>alice</b>", "link": "l", "hours": 1});
        let mail = render("passphrase_reset", "de", &values).unwrap();
        assert!(
            mail.subject.starts_with("Choose a new passphrase"),
            "English for an unknown locale"
        );
        assert!(
            mail.html.contains("&lt;b&gt;alice&lt;") && !mail.html.contains("<b>alice"),
            "{}",
            mail.html
        );
        let missing = render("passphrase_reset", "fr", &json!({"domain": "a"})).unwrap_err();
        assert!(missing.contains("link, hours"), "{missing}");
        let unknown = render("nope", "en", &json!({})).unwrap_err();
        assert!(unknown.contains("passphrase_reset, onboarding"), "{unknown}");
    }
}
