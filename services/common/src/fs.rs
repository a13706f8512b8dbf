//! Files that hold secrets.

use std::io::Write;
use std::path::Path;

/// Writes a file only its owner can read (mode 0600), atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a secret file, creating it with `make()` (mode 0600) when it does not exist.
pub fn read_or_create_secret(path: &Path, make: impl FnOnce() -> String) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = make();
            write_private(path, secret.as_bytes())?;
            Ok(secret)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_secret_file_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("cocon-fs-{}", std::process::id()));
        let path = dir.join("secret");
        let _ = std::fs::remove_file(&path);
        let first = read_or_create_secret(&path, || "abc".into()).unwrap();
        let second = read_or_create_secret(&path, || "other".into()).unwrap();
        assert_eq!(first, "abc");
        assert_eq!(second, "abc");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
