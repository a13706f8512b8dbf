//! Headers that keep a file's content from acting as a page of the instance's origin, for
//! every route that serves one (`/files`, WebDAV, secret links): a person's HTML or SVG must
//! never run script with the person's cookies.

use http::{HeaderMap, HeaderValue, header};

/// `Content-Disposition` with the name in both forms (RFC 6266): quoted ASCII, and UTF-8.
pub(crate) fn disposition(kind: &str, name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    HeaderValue::from_str(&format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Types a browser would run or render as a document (script, markup, styles), which a
/// browser is told to save rather than open.
pub(crate) fn is_active(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/xml"
            | "application/xml"
            | "text/javascript"
            | "application/javascript"
            | "application/ecmascript"
            | "text/css"
            | "application/wasm"
            | "text/xsl"
            | "application/x-shockwave-flash"
            | "multipart/x-mixed-replace"
    ) || essence.ends_with("+xml") && essence != "application/vnd.openxmlformats"
}

/// Marks a served file: never sniffed into another type, sandboxed if opened anyway, and sent
/// as an attachment when asked or when its type is active.
pub(crate) fn protect(h: &mut HeaderMap, mime: &str, name: &str, attachment: bool) {
    let kind = if attachment || is_active(mime) {
        "attachment"
    } else {
        "inline"
    };
    h.insert(header::CONTENT_DISPOSITION, disposition(kind, name));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_disposition_keeps_utf8_names_and_quotes_ascii() {
        let v = disposition("attachment", "été \"x\".txt");
        let s = v.to_str().unwrap();
        assert!(s.starts_with("attachment; filename=\"_t_ _x_.txt\""), "{s}");
        assert!(s.contains("filename*=UTF-8''%C3%A9t%C3%A9%20%22x%22.txt"), "{s}");
    }

    #[test]
    fn test_active_types_are_attachments() {
        for active in [
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/javascript",
        ] {
            assert!(is_active(active), "{active}");
            let mut h = HeaderMap::new();
            protect(&mut h, active, "x", false);
            assert!(
                h[header::CONTENT_DISPOSITION]
                    .to_str()
                    .unwrap()
                    .starts_with("attachment")
            );
        }
        for passive in ["image/png", "text/plain", "application/pdf", "video/mp4"] {
            assert!(!is_active(passive), "{passive}");
            let mut h = HeaderMap::new();
            protect(&mut h, passive, "x", false);
            assert!(h[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("inline"));
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(h[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("sandbox"));
        }
    }
}
