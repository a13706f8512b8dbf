//! How documents and changes are stored: a small header, then the document's JSON as sent back
//! to clients, so a read returns stored bytes without re-encoding them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DocumentsError;

/// The header byte of document rows written before tables were versioned.
const LEGACY_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct DocRecord {
    pub rev: String,
    pub seq: u64,
    pub deleted: bool,
    /// The document has other leaves than this winner (conflicts): writes read its tree.
    pub branched: bool,
    /// The whole document, `_id` and `_rev` first.
    pub json: Bytes,
}

impl DocRecord {
    /// The stored payload: seq, deleted, the revision, then the JSON (the table adds its
    /// version header, [`crate::tables::Docs`]).
    pub fn encode_into(&self, buf: &mut BytesMut) {
        buf.put_u64(self.seq);
        buf.put_u8(self.deleted as u8 | (self.branched as u8) << 1);
        buf.put_u16(self.rev.len() as u16);
        buf.put_slice(self.rev.as_bytes());
        buf.put_slice(&self.json);
    }

    pub fn encoded_len(&self) -> usize {
        11 + self.rev.len() + self.json.len()
    }

    /// Reads a payload of [`DocRecord::encode_into`]; the JSON is a slice of `raw`, not a copy.
    pub fn decode(mut raw: Bytes) -> Result<DocRecord, String> {
        let corrupt = || "document record".to_string();
        if raw.remaining() < 11 {
            return Err(corrupt());
        }
        let seq = raw.get_u64();
        let flags = raw.get_u8();
        let len = raw.get_u16() as usize;
        if raw.remaining() < len {
            return Err(corrupt());
        }
        let rev = String::from_utf8(raw.split_to(len).to_vec()).map_err(|_| corrupt())?;
        Ok(DocRecord {
            rev,
            seq,
            deleted: flags & 1 != 0,
            branched: flags & 2 != 0,
            json: raw,
        })
    }

    /// Reads a row written before tables were versioned: a version byte (1), then the payload.
    pub fn decode_unversioned(mut raw: Bytes) -> Result<DocRecord, String> {
        if raw.remaining() < 1 || raw.get_u8() != LEGACY_VERSION {
            return Err("document record of an unknown format".into());
        }
        DocRecord::decode(raw)
    }

    pub fn generation(&self) -> u64 {
        generation(&self.rev)
    }

    pub fn value(&self) -> Result<serde_json::Value, DocumentsError> {
        serde_json::from_slice(&self.json).map_err(|e| DocumentsError::Corrupt(e.to_string()))
    }
}

pub fn generation(rev: &str) -> u64 {
    rev.split_once('-').and_then(|(g, _)| g.parse().ok()).unwrap_or(0)
}

/// A row of the changes feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub id: String,
    pub rev: String,
    pub deleted: bool,
    /// The document had other leaves (conflicts) then: `style=all_docs` reads its tree.
    pub branched: bool,
}

impl ChangeRecord {
    pub fn encode_into(&self, buf: &mut BytesMut) {
        buf.put_u8(self.deleted as u8 | (self.branched as u8) << 1);
        buf.put_u16(self.rev.len() as u16);
        buf.put_slice(self.rev.as_bytes());
        buf.put_slice(self.id.as_bytes());
    }

    pub fn encoded_len(&self) -> usize {
        3 + self.rev.len() + self.id.len()
    }

    /// The same payload in every version so far.
    pub fn decode(mut raw: Bytes) -> Result<ChangeRecord, String> {
        let corrupt = || "change record".to_string();
        if raw.remaining() < 3 {
            return Err(corrupt());
        }
        let flags = raw.get_u8();
        let len = raw.get_u16() as usize;
        if raw.remaining() < len {
            return Err(corrupt());
        }
        let rev = String::from_utf8(raw.split_to(len).to_vec()).map_err(|_| corrupt())?;
        let id = String::from_utf8(raw.to_vec()).map_err(|_| corrupt())?;
        Ok(ChangeRecord {
            id,
            rev,
            deleted: flags & 1 != 0,
            branched: flags & 2 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_records_round_trip() {
        let d = DocRecord {
            rev: "3-abc".into(),
            seq: 42,
            deleted: false,
            branched: true,
            json: Bytes::from_static(br#"{"_id":"x","_rev":"3-abc"}"#),
        };
        let mut buf = BytesMut::new();
        d.encode_into(&mut buf);
        assert_eq!(buf.len(), d.encoded_len());
        assert_eq!(DocRecord::decode(buf.clone().freeze()).unwrap(), d);
        let mut legacy = BytesMut::from(&[LEGACY_VERSION][..]);
        legacy.extend_from_slice(&buf);
        assert_eq!(DocRecord::decode_unversioned(legacy.freeze()).unwrap(), d);
        assert_eq!(d.generation(), 3);
        let c = ChangeRecord {
            id: "x".into(),
            rev: "3-abc".into(),
            deleted: true,
            branched: true,
        };
        let mut buf = BytesMut::new();
        c.encode_into(&mut buf);
        assert_eq!(ChangeRecord::decode(buf.freeze()).unwrap(), c);
        assert!(DocRecord::decode_unversioned(Bytes::from_static(b"\x02")).is_err());
    }
}
