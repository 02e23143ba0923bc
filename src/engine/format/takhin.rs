//! The Takhin segment layout: record and index constants, one-record parsing, and a writer.
//!
//! A Takhin partition is a directory of segments. A segment with base offset `B`
//! has three files named with `B` as `%020d`:
//!
//! ```text
//! B.log        records, back to back
//! B.index      16 bytes per record: u64 offset | u64 byte position in B.log
//! B.timeindex  16 bytes per record: i64 timestamp | u64 offset
//! ```
//!
//! A record (all integers big-endian):
//!
//! ```text
//! u32 size | i64 offset | i64 timestamp_ms | u32 key_len | key | u32 value_len | value | 4 pad bytes
//! ```
//!
//! There is no checksum: a flipped bit inside a key or value is undetectable.

use std::io::{self, Write};

/// Bytes of the `size` field that opens every record.
pub const SIZE_FIELD_LEN: u64 = 4;
/// Bytes of the fixed part counted by `size`: offset (8) + timestamp (8) +
/// key_len (4) + value_len (4) + pad (4). So `size == RECORD_OVERHEAD + key_len + value_len`.
pub const RECORD_OVERHEAD: u64 = 28;
/// Position of the `offset` field from the start of the record.
pub const OFFSET_AT: usize = 4;
/// Position of the `timestamp_ms` field from the start of the record.
pub const TIMESTAMP_AT: usize = 12;
/// Position of the `key_len` field from the start of the record.
pub const KEY_LEN_AT: usize = 20;
/// Position of the key from the start of the record.
pub const KEY_AT: usize = 24;
/// Bytes a record needs before its key: size, offset, timestamp, key_len.
pub const HEADER_LEN: usize = KEY_AT;
/// Bytes of the `value_len` field, which follows the key.
pub const VALUE_LEN_FIELD_LEN: u64 = 4;
/// Trailing bytes after the value. Takhin fills them from a reused buffer, so
/// their content is unspecified and never checked.
pub const PAD_LEN: u64 = 4;
/// Bytes of one entry in `.index` and in `.timeindex`.
pub const INDEX_ENTRY_LEN: u64 = 16;
/// One index entry: two big-endian 64-bit fields.
pub type IndexEntry = [u8; INDEX_ENTRY_LEN as usize];
/// Position of an entry's first field: the offset in `.index`, the timestamp in `.timeindex`.
pub const ENTRY_FIRST_AT: usize = 0;
/// Position of an entry's second field: the byte position in `.index`, the offset in `.timeindex`.
pub const ENTRY_SECOND_AT: usize = 8;
/// Digits of the zero-padded base offset in a segment's file names.
pub const BASE_DIGITS: usize = 20;
/// Default upper bound on `size`, so a garbage length is not taken for a record.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// File-name suffixes of a segment's three files.
pub const LOG_EXT: &str = "log";
pub const INDEX_EXT: &str = "index";
pub const TIMEINDEX_EXT: &str = "timeindex";

/// The kind of a segment file, by its suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Log,
    Index,
    TimeIndex,
}

impl FileKind {
    pub fn ext(self) -> &'static str {
        match self {
            FileKind::Log => LOG_EXT,
            FileKind::Index => INDEX_EXT,
            FileKind::TimeIndex => TIMEINDEX_EXT,
        }
    }

    pub fn from_ext(ext: &[u8]) -> Option<FileKind> {
        match ext {
            b"log" => Some(FileKind::Log),
            b"index" => Some(FileKind::Index),
            b"timeindex" => Some(FileKind::TimeIndex),
            _ => None,
        }
    }
}

/// The file name of a segment file: `B` as `%020d` plus the suffix.
pub fn segment_file_name(base: u64, kind: FileKind) -> String {
    format!("{base:020}.{}", kind.ext())
}

/// How a file name relates to the segment naming scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// `<20 digits>.<log|index|timeindex>`, with the parsed base offset.
    Segment(u64, FileKind),
    /// Ends in a segment suffix but the stem is not 20 digits (or overflows u64).
    SegmentLike(FileKind),
    /// Anything else: an opaque file.
    Other,
}

/// Classifies a raw file name (bytes, since names need not be UTF-8).
pub fn classify_name(name: &[u8]) -> NameMatch {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return NameMatch::Other;
    };
    let Some(kind) = FileKind::from_ext(&name[dot + 1..]) else {
        return NameMatch::Other;
    };
    let stem = &name[..dot];
    if stem.len() == BASE_DIGITS && stem.iter().all(u8::is_ascii_digit) {
        // 20 digits can exceed u64::MAX (18446744073709551615); such a name is not a segment.
        if let Some(base) = std::str::from_utf8(stem).ok().and_then(|s| s.parse().ok()) {
            return NameMatch::Segment(base, kind);
        }
    }
    NameMatch::SegmentLike(kind)
}

/// Reads a big-endian u32 at `at`; the caller guarantees the bounds.
#[inline]
pub fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads a big-endian u64 at `at`; the caller guarantees the bounds.
#[inline]
pub fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads a big-endian i64 at `at`; the caller guarantees the bounds.
#[inline]
pub fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One `.index` entry as Takhin writes it.
#[inline]
pub fn index_entry(offset: u64, position: u64) -> IndexEntry {
    let mut e = [0u8; INDEX_ENTRY_LEN as usize];
    e[ENTRY_FIRST_AT..ENTRY_SECOND_AT].copy_from_slice(&offset.to_be_bytes());
    e[ENTRY_SECOND_AT..].copy_from_slice(&position.to_be_bytes());
    e
}

/// One `.timeindex` entry as Takhin writes it.
#[inline]
pub fn timeindex_entry(timestamp: i64, offset: u64) -> IndexEntry {
    let mut e = [0u8; INDEX_ENTRY_LEN as usize];
    e[ENTRY_FIRST_AT..ENTRY_SECOND_AT].copy_from_slice(&timestamp.to_be_bytes());
    e[ENTRY_SECOND_AT..].copy_from_slice(&offset.to_be_bytes());
    e
}

/// A decoded record, owning its key and value (for dumps, tests and the writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Record {
    /// Bytes the record occupies in a `.log`, `size` field included.
    pub fn encoded_len(&self) -> u64 {
        SIZE_FIELD_LEN + RECORD_OVERHEAD + self.key.len() as u64 + self.value.len() as u64
    }

    /// Appends the record's bytes; `pad` fills the 4 unspecified trailing bytes.
    ///
    /// Panics if key or value exceeds u32::MAX bytes, which the format cannot hold.
    pub fn encode_into(&self, out: &mut Vec<u8>, pad: [u8; 4]) {
        let key_len = u32::try_from(self.key.len()).expect("key fits u32");
        let value_len = u32::try_from(self.value.len()).expect("value fits u32");
        let size = u32::try_from(RECORD_OVERHEAD + key_len as u64 + value_len as u64)
            .expect("record fits u32");
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(&self.value);
        out.extend_from_slice(&pad);
    }

    /// Decodes a whole record from `buf`, which must start at the record.
    /// Returns `None` unless the bytes form a record whose lengths agree.
    pub fn decode(buf: &[u8]) -> Option<Record> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let size = be_u32(buf, 0) as u64;
        if size < RECORD_OVERHEAD || buf.len() as u64 != SIZE_FIELD_LEN + size {
            return None;
        }
        let key_len = be_u32(buf, KEY_LEN_AT) as u64;
        if RECORD_OVERHEAD + key_len > size {
            return None;
        }
        let k = key_len as usize;
        let value_len = be_u32(buf, KEY_AT + k) as u64;
        if RECORD_OVERHEAD + key_len + value_len != size {
            return None;
        }
        let v_at = KEY_AT + k + VALUE_LEN_FIELD_LEN as usize;
        Some(Record {
            offset: be_u64(buf, OFFSET_AT),
            timestamp: be_i64(buf, TIMESTAMP_AT),
            key: buf[KEY_AT..KEY_AT + k].to_vec(),
            value: buf[v_at..v_at + value_len as usize].to_vec(),
        })
    }
}

/// Writes Takhin segments the way the reference writer does: records back to
/// back, with a dense `.index` and `.timeindex` entry per record. For tests,
/// the demo and benchmarks; the engine itself never writes.
#[derive(Debug, Default)]
pub struct SegmentWriter {
    pub log: Vec<u8>,
    pub index: Vec<u8>,
    pub timeindex: Vec<u8>,
    pub base_offset: u64,
    pub next_offset: u64,
    /// The 4 pad bytes given to every record (Takhin's are whatever its buffer held).
    pub pad: [u8; 4],
}

impl SegmentWriter {
    pub fn new(base_offset: u64) -> Self {
        SegmentWriter {
            base_offset,
            next_offset: base_offset,
            ..Default::default()
        }
    }

    /// Appends a record with the next offset; returns that offset.
    pub fn append(&mut self, timestamp: i64, key: &[u8], value: &[u8]) -> u64 {
        let rec = Record {
            offset: self.next_offset,
            timestamp,
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.append_record(&rec);
        rec.offset
    }

    /// Appends a record as given, its offset included (tests use this to write
    /// a wrong offset on purpose); index entries follow the record's own fields.
    pub fn append_record(&mut self, rec: &Record) {
        let position = self.log.len() as u64;
        rec.encode_into(&mut self.log, self.pad);
        self.index
            .extend_from_slice(&index_entry(rec.offset, position));
        self.timeindex
            .extend_from_slice(&timeindex_entry(rec.timestamp, rec.offset));
        self.next_offset = rec.offset.wrapping_add(1);
    }

    /// Writes the three files into `dir`, named after the base offset.
    pub fn write_to(&self, dir: &std::path::Path) -> io::Result<()> {
        for (kind, bytes) in [
            (FileKind::Log, &self.log),
            (FileKind::Index, &self.index),
            (FileKind::TimeIndex, &self.timeindex),
        ] {
            let mut f = std::fs::File::create(dir.join(segment_file_name(self.base_offset, kind)))?;
            f.write_all(bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_classify() {
        assert_eq!(
            classify_name(b"00000000000000000375.log"),
            NameMatch::Segment(375, FileKind::Log)
        );
        assert_eq!(
            classify_name(b"00000000000000000375.timeindex"),
            NameMatch::Segment(375, FileKind::TimeIndex)
        );
        assert_eq!(
            classify_name(b"375.log"),
            NameMatch::SegmentLike(FileKind::Log)
        );
        assert_eq!(
            classify_name(b"99999999999999999999.index"),
            NameMatch::SegmentLike(FileKind::Index)
        );
        assert_eq!(classify_name(b"topic-metadata.json"), NameMatch::Other);
        assert_eq!(classify_name(b"log"), NameMatch::Other);
    }

    #[test]
    fn record_round_trips() {
        let r = Record {
            offset: 7,
            timestamp: -3,
            key: b"k".to_vec(),
            value: vec![1, 2, 3],
        };
        let mut buf = Vec::new();
        r.encode_into(&mut buf, [9; 4]);
        assert_eq!(buf.len() as u64, r.encoded_len());
        assert_eq!(be_u32(&buf, 0) as u64, RECORD_OVERHEAD + 4);
        assert_eq!(Record::decode(&buf), Some(r));
        assert_eq!(Record::decode(&buf[..buf.len() - 1]), None);
    }
}
