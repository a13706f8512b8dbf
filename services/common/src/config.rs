//! Configuration: one TOML file with a section per service, overridden by `COCON_*` env vars.
//!
//! `COCON_DATA_DIR=/x` sets the top-level `data_dir`; `COCON_DOCUMENTS__MAX_DOC_BYTES=1000` sets
//! `max_doc_bytes` in the `[documents]` section. Values parse as TOML scalars when they can
//! (`true`, `42`), else as strings. The environment is passed in, so tests never touch the process's.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Env vars that start with `COCON_` but are not configuration keys (exact names, or prefixes ending in `_`).
const NOT_CONFIG: [&str; 4] = [
    "COCON_LOG_FORMAT",
    "COCON_TEST_",
    "COCON_ADMIN_TOKEN",
    "COCON_ADMIN_URL",
];

pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut root = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse {
                path: path.display().to_string(),
                source: Box::new(source),
            })?
        }
        None => toml::Table::new(),
    };
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("COCON_") else {
            continue;
        };
        let skipped = NOT_CONFIG
            .iter()
            .any(|skip| key == *skip || (skip.ends_with('_') && key.starts_with(skip)));
        if skipped || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        set_path(&mut root, &path, parse_scalar(&value))?;
    }
    toml::Value::Table(root)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))
}

fn parse_scalar(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    toml::Value::String(raw.to_string())
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), ConfigError> {
    let (last, parents) = path.split_last().expect("path is never empty");
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            ConfigError::Invalid(format!("`{part}` is not a section, cannot set `{}`", path.join(".")))
        })?;
    }
    // A string that looks like a number stays a string where the file had a string.
    let value = match (current.get(last), value) {
        (Some(toml::Value::String(_)), toml::Value::Integer(i)) => toml::Value::String(i.to_string()),
        (Some(toml::Value::String(_)), toml::Value::Boolean(b)) => toml::Value::String(b.to_string()),
        (_, v) => v,
    };
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Section {
        max: u64,
        name: String,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Root {
        data_dir: String,
        documents: Section,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn test_env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("cocon-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cocon.toml");
        std::fs::write(&file, "data_dir = \"/a\"\n[documents]\nmax = 1\nname = \"x\"\n").unwrap();
        let root: Root = load(
            Some(&file),
            env(&[
                ("COCON_DOCUMENTS__MAX", "42"),
                ("COCON_DATA_DIR", "/b"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(root.data_dir, "/b");
        assert_eq!(root.documents.max, 42);
        assert_eq!(root.documents.name, "x");
    }

    #[test]
    fn test_bad_value_is_a_clear_error() {
        let err = load::<Root>(None, env(&[("COCON_DOCUMENTS__MAX", "lots")])).unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }

    #[test]
    fn test_missing_file_names_the_path() {
        let err = load::<Root>(Some(Path::new("/nonexistent/cocon.toml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cocon.toml"));
    }
}
