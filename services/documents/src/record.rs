//! How documents and changes are stored: a small header, then the document's JSON as sent back
//! to clients, so a read returns stored bytes without re-encoding them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DocumentsError;

const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct DocRecord {
    pub rev: String,
    pub seq: u64,
    pub deleted: bool,
    /// The whole document, `_id` and `_rev` first.
    pub json: Bytes,
}

impl DocRecord {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(12 + self.rev.len() + self.json.len());
        buf.put_u8(VERSION);
        buf.put_u64(self.seq);
        buf.put_u8(self.deleted as u8);
        buf.put_u16(self.rev.len() as u16);
        buf.put_slice(self.rev.as_bytes());
        buf.put_slice(&self.json);
        buf.freeze()
    }

    pub fn decode(mut raw: Bytes) -> Result<DocRecord, DocumentsError> {
        let corrupt = || DocumentsError::Corrupt("document record".into());
        if raw.remaining() < 12 || raw.get_u8() != VERSION {
            return Err(corrupt());
        }
        let seq = raw.get_u64();
        let deleted = raw.get_u8() != 0;
        let len = raw.get_u16() as usize;
        if raw.remaining() < len {
            return Err(corrupt());
        }
        let rev = String::from_utf8(raw.split_to(len).to_vec()).map_err(|_| corrupt())?;
        Ok(DocRecord {
            rev,
            seq,
            deleted,
            json: raw,
        })
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
}

impl ChangeRecord {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(4 + self.rev.len() + self.id.len());
        buf.put_u8(self.deleted as u8);
        buf.put_u16(self.rev.len() as u16);
        buf.put_slice(self.rev.as_bytes());
        buf.put_slice(self.id.as_bytes());
        buf.freeze()
    }

    pub fn decode(mut raw: Bytes) -> Result<ChangeRecord, DocumentsError> {
        let corrupt = || DocumentsError::Corrupt("change record".into());
        if raw.remaining() < 3 {
            return Err(corrupt());
        }
        let deleted = raw.get_u8() != 0;
        let len = raw.get_u16() as usize;
        if raw.remaining() < len {
            return Err(corrupt());
        }
        let rev = String::from_utf8(raw.split_to(len).to_vec()).map_err(|_| corrupt())?;
        let id = String::from_utf8(raw.to_vec()).map_err(|_| corrupt())?;
        Ok(ChangeRecord { id, rev, deleted })
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
            json: Bytes::from_static(br#"{"_id":"x","_rev":"3-abc"}"#),
        };
        assert_eq!(DocRecord::decode(d.encode()).unwrap(), d);
        assert_eq!(d.generation(), 3);
        let c = ChangeRecord {
            id: "x".into(),
            rev: "3-abc".into(),
            deleted: true,
        };
        assert_eq!(ChangeRecord::decode(c.encode()).unwrap(), c);
        assert!(DocRecord::decode(Bytes::from_static(b"\x02")).is_err());
    }
}
