//! A document's body as the committer takes it: its own fields serialised once, and the three
//! special ones (`_id`, `_rev`, `_deleted`) apart. `_type`, which cozy-client adds to every
//! document it normalises and sends back on updates, is dropped as cozy-stack drops it.
//!
//! A request's body is read without building a `serde_json::Value` tree: the top-level fields
//! are taken as raw JSON slices, checked by a visitor that allocates nothing, and copied without
//! their whitespace. Building the tree and serialising it again cost an allocation per key,
//! string and array, freed on another thread, on every create. The check is the tree's
//! (numbers in range, valid escapes and surrogates, UTF-8), so what one path refuses the other
//! refuses too; numbers and string escapes are kept as the client wrote them. A body with a
//! key twice in one object takes the tree's path, which keeps the last value in the first
//! place, as before.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::DocumentsError;

/// A document body ready to write.
#[derive(Debug, PartialEq)]
pub struct Fields {
    /// The fields but `_id`, `_rev` and `_deleted`, as one compact JSON object.
    pub json: Vec<u8>,
    pub id: Option<String>,
    /// The revision the write replaces (`_rev`).
    pub rev: Option<String>,
    pub deleted: bool,
}

impl Fields {
    /// Reads a request body: a JSON object of at most `max_bytes`, without reserved fields
    /// (`_type` is dropped).
    pub fn parse(body: &[u8], max_bytes: usize) -> Result<Fields, DocumentsError> {
        if body.len() > max_bytes {
            return Err(DocumentsError::TooLarge {
                size: body.len(),
                limit: max_bytes,
            });
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let top = de
            .deserialize_any(TopVisitor { capacity: body.len() })
            .and_then(|top| de.end().map(|()| top));
        match top {
            Ok(Top::Fields(fields)) => fields,
            Ok(Top::NotObject) => Err(not_object()),
            Ok(Top::Duplicates) => {
                let map: Map<String, Value> = serde_json::from_slice(body).map_err(not_json)?;
                Fields::from_map(map)
            }
            Err(e) => Err(not_json(e)),
        }
    }

    /// Takes a body already parsed (bulk writes, design documents).
    pub fn from_map(mut map: Map<String, Value>) -> Result<Fields, DocumentsError> {
        check_key_list(map.keys().map(String::as_str))?;
        map.shift_remove(CLIENT_TYPE);
        let id = match map.shift_remove("_id") {
            None => None,
            Some(Value::String(id)) => Some(id),
            Some(_) => return Err(DocumentsError::BadRequest("_id must be a string".into())),
        };
        let rev = match map.shift_remove("_rev") {
            None => None,
            Some(Value::String(rev)) => Some(rev),
            Some(_) => return Err(DocumentsError::BadRequest("_rev must be a string".into())),
        };
        let deleted = match map.shift_remove("_deleted") {
            None => false,
            Some(Value::Bool(deleted)) => deleted,
            Some(_) => return Err(DocumentsError::BadRequest("_deleted must be a boolean".into())),
        };
        let json = serde_json::to_vec(&map).expect("a JSON map serialises");
        Ok(Fields { json, id, rev, deleted })
    }

    /// No fields at all (a deletion's body).
    pub fn empty() -> Vec<u8> {
        b"{}".to_vec()
    }
}

fn not_json(e: serde_json::Error) -> DocumentsError {
    DocumentsError::BadRequest(format!("the body is not valid JSON: {e}"))
}

fn not_object() -> DocumentsError {
    DocumentsError::BadRequest("the document must be a JSON object".into())
}

/// The doctype cozy-client writes into the documents it normalises; never stored.
pub const CLIENT_TYPE: &str = "_type";

/// Fields starting with `_` are CouchDB's, except the three a client may send and `_type`,
/// which is dropped.
pub fn check_key(key: &str) -> Result<(), DocumentsError> {
    if key.starts_with('_') && !matches!(key, "_id" | "_rev" | "_deleted" | CLIENT_TYPE) {
        return Err(DocumentsError::BadRequest(format!(
            "the field {key:?} is reserved: fields starting with _ other than _id, _rev and _deleted are not allowed"
        )));
    }
    Ok(())
}

pub fn check_key_list<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<(), DocumentsError> {
    keys.into_iter().try_for_each(check_key)
}

enum Top {
    Fields(Result<Fields, DocumentsError>),
    NotObject,
    Duplicates,
}

/// `capacity`: the body's length, which the compacted fields never exceed (they lose
/// whitespace and the three special fields; keys lose escapes).
struct TopVisitor {
    capacity: usize,
}

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Top, A::Error> {
        let mut fields = Fields {
            json: Vec::with_capacity(self.capacity),
            id: None,
            rev: None,
            deleted: false,
        };
        fields.json.push(b'{');
        let mut keys = Keys::default();
        let mut refused = None;
        while let Some(key) = access.next_key_seed(KeySeed)? {
            if !keys.insert(key.clone()) {
                // Read on to the end so that invalid JSON is still called so.
                access.next_value::<de::IgnoredAny>()?;
                while access.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                return Ok(Top::Duplicates);
            }
            if refused.is_none() {
                refused = check_key(&key).err();
            }
            match &*key {
                "_id" => match access.next_value::<Value>()? {
                    Value::String(id) => fields.id = Some(id),
                    _ => refused = refused.or(Some(DocumentsError::BadRequest("_id must be a string".into()))),
                },
                "_rev" => match access.next_value::<Value>()? {
                    Value::String(rev) => fields.rev = Some(rev),
                    _ => refused = refused.or(Some(DocumentsError::BadRequest("_rev must be a string".into()))),
                },
                "_deleted" => match access.next_value::<Value>()? {
                    Value::Bool(deleted) => fields.deleted = deleted,
                    _ => refused = refused.or(Some(DocumentsError::BadRequest("_deleted must be a boolean".into()))),
                },
                CLIENT_TYPE => {
                    // Checked as any value is, so the same bodies fail as on the tree's path.
                    let raw: &'de RawValue = access.next_value()?;
                    let mut check = serde_json::Deserializer::from_str(raw.get());
                    if !(&mut check).deserialize_any(Checked).map_err(de::Error::custom)? {
                        while access.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                        return Ok(Top::Duplicates);
                    }
                }
                _ => {
                    let raw: &'de RawValue = access.next_value()?;
                    let mut check = serde_json::Deserializer::from_str(raw.get());
                    if !(&mut check).deserialize_any(Checked).map_err(de::Error::custom)? {
                        while access.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                        return Ok(Top::Duplicates);
                    }
                    if fields.json.len() > 1 {
                        fields.json.push(b',');
                    }
                    serde_json::to_writer(&mut fields.json, &*key).map_err(de::Error::custom)?;
                    fields.json.push(b':');
                    compact_into(&mut fields.json, raw.get().as_bytes());
                }
            }
        }
        fields.json.push(b'}');
        Ok(Top::Fields(match refused {
            Some(e) => Err(e),
            None => Ok(fields),
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Top, A::Error> {
        while access.next_element_seed(CheckedSeed)?.is_some() {}
        Ok(Top::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
        Ok(Top::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
        Ok(Top::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
        Ok(Top::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
        Ok(Top::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(Top::NotObject)
    }
    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(Top::NotObject)
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_string()))
    }
}

/// The keys of one object, to find one given twice.
#[derive(Default)]
struct Keys<'de>(Vec<Cow<'de, str>>, Option<std::collections::HashSet<Cow<'de, str>>>);

impl<'de> Keys<'de> {
    /// False if `key` was there already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(set) = &mut self.1 {
            return set.insert(key);
        }
        if self.0.contains(&key) {
            return false;
        }
        self.0.push(key);
        if self.0.len() > 16 {
            self.1 = Some(self.0.drain(..).collect());
        }
        true
    }
}

/// Checks a value the way building a `Value` would, without building it: false when an object
/// has a key twice.
struct Checked;

struct CheckedSeed;

impl<'de> DeserializeSeed<'de> for CheckedSeed {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<bool, A::Error> {
        let mut unique = true;
        while let Some(ok) = access.next_element_seed(CheckedSeed)? {
            unique &= ok;
        }
        Ok(unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<bool, A::Error> {
        let mut keys = Keys::default();
        let mut unique = true;
        while let Some(key) = access.next_key_seed(KeySeed)? {
            unique &= keys.insert(key);
            unique &= access.next_value_seed(CheckedSeed)?;
        }
        Ok(unique)
    }
}

/// Appends `raw`, valid JSON, without the whitespace between its tokens.
fn compact_into(out: &mut Vec<u8>, raw: &[u8]) {
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, &b) in raw.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.extend_from_slice(&raw[start..i]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&raw[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Fields, DocumentsError> {
        Fields::parse(body.as_bytes(), 1 << 20)
    }

    /// What the tree's path gives for the same body.
    fn by_tree(body: &str) -> Result<Fields, DocumentsError> {
        let value: Value = serde_json::from_str(body).map_err(not_json)?;
        let Value::Object(map) = value else {
            return Err(not_object());
        };
        Fields::from_map(map)
    }

    fn same_json(a: &[u8], b: &[u8]) -> bool {
        serde_json::from_slice::<Value>(a).unwrap() == serde_json::from_slice::<Value>(b).unwrap()
    }

    #[test]
    fn test_fields_are_compact_and_keep_their_order() {
        let f = parse(" {\"b\" : [1, 2, {\"x\": \"a b\\\" c\"}],\n \"_id\": \"d1\", \"a\":\t1.50 ,\"_rev\":\"1-x\"} ")
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&f.json).unwrap(),
            r#"{"b":[1,2,{"x":"a b\" c"}],"a":1.50}"#
        );
        assert_eq!(f.id.as_deref(), Some("d1"));
        assert_eq!(f.rev.as_deref(), Some("1-x"));
        assert!(!f.deleted);
        assert_eq!(parse("{}").unwrap().json, b"{}");
    }

    #[test]
    fn test_the_same_bodies_as_the_tree_pass_and_fail() {
        let bodies = [
            r#"{"a":1,"_id":"x","_deleted":true}"#,
            r#"{"a":"\u00e9\ud83d\ude00","n":-0.5e-3,"big":123456789012345678901234567890}"#,
            r#"{"a":1e400}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"tab	inside"}"#,
            r#"{"a":[1,2,}"#,
            r#"{"a":1} x"#,
            r#"{"_attachments":{}}"#,
            r#"{"_id":3}"#,
            r#"{"_rev":null}"#,
            r#"{"_deleted":"yes"}"#,
            r#"{"_type":"io.cozy.notes","a":1,"_rev":"1-x"}"#,
            // Found by fuzzing: the tree's path wrote this float back one ulp off until
            // serde_json's exact float parsing was turned on.
            r#"{"a":3.4282549452636845e-307,"b":1}"#,
            r#"{"_type":{"x":1e400}}"#,
            r#"{"_type":"\ud800"}"#,
            r#"[1,{"a":2}]"#,
            r#"[1,"\ud800"]"#,
            r#""text""#,
            "null",
            "",
            "{nope",
        ];
        for body in bodies {
            match (parse(body), by_tree(body)) {
                (Ok(a), Ok(b)) => {
                    assert!(same_json(&a.json, &b.json), "{body}");
                    assert_eq!((a.id, a.rev, a.deleted), (b.id, b.rev, b.deleted), "{body}");
                }
                (Err(a), Err(b)) => assert_eq!(
                    std::mem::discriminant(&a),
                    std::mem::discriminant(&b),
                    "{body}: {a} / {b}"
                ),
                (a, b) => panic!("{body}: {a:?} / {b:?}"),
            }
        }
    }

    #[test]
    fn test_a_key_given_twice_keeps_the_last_value_in_the_first_place() {
        for body in [
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"o":{"k":1,"k":2},"z":0}"#,
            r#"{"_id":"x","_id":"y","a":1}"#,
        ] {
            assert_eq!(parse(body).unwrap(), by_tree(body).unwrap(), "{body}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let body = format!("{{{},\"k7\":\"again\"}}", many.join(","));
        assert_eq!(parse(&body).unwrap(), by_tree(&body).unwrap());
    }

    #[test]
    fn test_cozy_clients_type_is_dropped() {
        let f = parse(r#"{"_id":"n1","_rev":"2-ab","_type":"io.cozy.notes","title":"x"}"#).unwrap();
        assert_eq!(f.json, br#"{"title":"x"}"#);
        assert_eq!((f.id.as_deref(), f.rev.as_deref()), (Some("n1"), Some("2-ab")));
        let body = r#"{"_type":"io.cozy.notes","o":{"k":1,"k":2}}"#;
        assert_eq!(parse(body).unwrap().json, br#"{"o":{"k":2}}"#);
        assert!(
            matches!(parse(r#"{"_type":"x","_foo":1}"#), Err(DocumentsError::BadRequest(m)) if m.contains("reserved"))
        );
    }

    #[test]
    fn test_reserved_fields_and_sizes_are_refused() {
        assert!(
            matches!(parse(r#"{"_attachments":{}}"#), Err(DocumentsError::BadRequest(m)) if m.contains("reserved"))
        );
        assert!(matches!(parse("[1]"), Err(DocumentsError::BadRequest(m)) if m.contains("JSON object")));
        assert!(matches!(parse("{nope"), Err(DocumentsError::BadRequest(m)) if m.contains("not valid JSON")));
        assert!(matches!(
            Fields::parse(&[b' '; 200], 100),
            Err(DocumentsError::TooLarge { size: 200, limit: 100 })
        ));
    }

    /// Fuzzing: bodies made of any JSON, spaced anyhow, with keys given twice, reserved
    /// fields, and bytes broken at random, pass or fail exactly as building the tree would.
    #[test]
    fn fuzz_body_compactor() {
        use proptest::prelude::*;
        const KEYS: &[&str] = &[
            "_id",
            "_rev",
            "_deleted",
            "_type",
            "_attachments",
            "a",
            "b",
            "\u{e9}",
            "k",
        ];
        let spaced = |text: String, spaces: Vec<(usize, u8)>| {
            let mut bytes = text.into_bytes();
            for (at, which) in spaces {
                let space = [b' ', b'\n', b'\t', b'\r'][which as usize % 4];
                // Only between tokens: after a structural character.
                if let Some(pos) = bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| matches!(b, b',' | b':' | b'{' | b'['))
                    .map(|(i, _)| i + 1)
                    .nth(at)
                {
                    bytes.insert(pos, space);
                }
            }
            bytes
        };
        let body = (
            cocon_common::fuzz::json(KEYS),
            proptest::collection::vec((0usize..20, any::<u8>()), 0..6),
            proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            any::<bool>(),
        )
            .prop_map(move |(value, spaces, broken, twice)| {
                let mut text = value.to_string();
                if twice && text.starts_with('{') && text.len() > 2 {
                    // A key given twice.
                    text.insert_str(1, "\"a\":1,");
                    text = text.replacen('}', ",\"a\":2}", 1);
                }
                let mut bytes = spaced(text, spaces);
                if let Some((at, byte)) = broken {
                    let at = at.index(bytes.len() + 1);
                    bytes.insert(at, byte);
                }
                bytes
            });
        cocon_common::fuzz::fuzz("body", body, |bytes| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let fast = Fields::parse(&bytes, 1 << 20);
            let tree = match std::str::from_utf8(&bytes) {
                Ok(text) => by_tree(text),
                Err(_) => Err(DocumentsError::BadRequest("not UTF-8".into())),
            };
            match (fast, tree) {
                (Ok(a), Ok(b)) => {
                    prop_assert!(same_json(&a.json, &b.json), "{}", text);
                    prop_assert_eq!((a.id, a.rev, a.deleted), (b.id, b.rev, b.deleted), "{}", text);
                    let parsed: Value = serde_json::from_slice(&a.json).expect("compacted fields are JSON");
                    prop_assert!(
                        parsed
                            .as_object()
                            .is_some_and(|o| o.keys().all(|k| !k.starts_with('_'))),
                        "{}",
                        text
                    );
                }
                (Err(a), Err(b)) => prop_assert_eq!(
                    std::mem::discriminant(&a),
                    std::mem::discriminant(&b),
                    "{}: {} / {}",
                    text,
                    a,
                    b
                ),
                (a, b) => prop_assert!(false, "{}: {:?} / {:?}", text, a, b),
            }
            Ok(())
        });
    }
}
