//! Index files: the rebuilt `.index`/`.timeindex` entries of a valid prefix, and the verdict on an original index.
//!
//! Rebuilt entries are produced on demand by re-walking records from the scan's
//! nearest checkpoint, so any byte range of a rebuilt index costs at most one
//! checkpoint interval of reading. An original index is only evidence: it is
//! compared entry by entry with the rebuilt one as the scan streams by.

use crate::engine::format::takhin::{
    be_i64, be_u64, index_entry, timeindex_entry, IndexEntry, ENTRY_FIRST_AT, ENTRY_SECOND_AT,
    INDEX_ENTRY_LEN,
};
use crate::engine::scan::{visit_records, ReadAt, RecordMeta, SegmentScan, Window};
use std::io;

/// Which rebuilt index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    Offset,
    Time,
}

/// The rebuilt entry of one record in the given index.
#[inline]
pub fn entry_for(kind: IndexKind, m: &RecordMeta) -> IndexEntry {
    match kind {
        IndexKind::Offset => index_entry(m.offset, m.position),
        IndexKind::Time => timeindex_entry(m.timestamp, m.offset),
    }
}

/// Bytes `[pos, pos+len)` of a rebuilt index, clamped to its size.
pub fn read_rebuilt_index<S: ReadAt + ?Sized>(
    src: &S,
    scan: &SegmentScan,
    kind: IndexKind,
    pos: u64,
    len: u64,
) -> io::Result<Vec<u8>> {
    let total = scan.index_bytes();
    if pos >= total || len == 0 {
        return Ok(Vec::new());
    }
    let end = pos.saturating_add(len).min(total);
    let first = pos / INDEX_ENTRY_LEN;
    let last = (end - 1) / INDEX_ENTRY_LEN;
    let mut out = Vec::with_capacity(((last - first + 1) * INDEX_ENTRY_LEN) as usize);
    visit_records(src, scan, first, last - first + 1, |m| {
        out.extend_from_slice(&entry_for(kind, m))
    })?;
    let skip = (pos - first * INDEX_ENTRY_LEN) as usize;
    out.drain(..skip);
    out.truncate((end - pos) as usize);
    Ok(out)
}

/// Both rebuilt index files whole (for repair and tests; the mount reads ranges).
pub fn rebuild_indexes<S: ReadAt + ?Sized>(
    src: &S,
    scan: &SegmentScan,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let n = scan.index_bytes() as usize;
    let mut index = Vec::with_capacity(n);
    let mut timeindex = Vec::with_capacity(n);
    visit_records(src, scan, 0, scan.records, |m| {
        index.extend_from_slice(&entry_for(IndexKind::Offset, m));
        timeindex.extend_from_slice(&entry_for(IndexKind::Time, m));
    })?;
    Ok((index, timeindex))
}

/// How an original index file compares with the rebuilt one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexVerdict {
    Match,
    Missing,
    /// The original could not be read.
    Unreadable(String),
    /// Entry `entry` differs: `found` is what the original holds, `expected` what it should.
    Differs {
        entry: u64,
        found: IndexEntry,
        expected: IndexEntry,
    },
    /// The original ends inside or before entry `entries` of `expected_entries`.
    TooShort {
        bytes: u64,
        expected_entries: u64,
    },
    /// The original holds bytes past the `expected_entries` entries it should have.
    TooLong {
        bytes: u64,
        expected_entries: u64,
    },
}

impl IndexVerdict {
    pub fn is_match(&self) -> bool {
        matches!(self, IndexVerdict::Match)
    }

    /// The report's one-line form.
    pub fn describe(&self, kind: IndexKind) -> String {
        let show = |e: &IndexEntry| match kind {
            IndexKind::Offset => format!(
                "offset {} at position {}",
                be_u64(e, ENTRY_FIRST_AT),
                be_u64(e, ENTRY_SECOND_AT)
            ),
            IndexKind::Time => format!(
                "timestamp {} for offset {}",
                be_i64(e, ENTRY_FIRST_AT),
                be_u64(e, ENTRY_SECOND_AT)
            ),
        };
        match self {
            IndexVerdict::Match => "match".into(),
            IndexVerdict::Missing => "missing".into(),
            IndexVerdict::Unreadable(e) => format!("unreadable: {e}"),
            IndexVerdict::Differs {
                entry,
                found,
                expected,
            } => format!(
                "differs at entry {entry}: holds {}, should hold {}",
                show(found),
                show(expected)
            ),
            IndexVerdict::TooShort {
                bytes,
                expected_entries,
            } => format!(
                "too short: {bytes} bytes ({} entries{}), should be {expected_entries} entries",
                bytes / INDEX_ENTRY_LEN,
                if bytes % INDEX_ENTRY_LEN != 0 {
                    " and a partial one"
                } else {
                    ""
                }
            ),
            IndexVerdict::TooLong {
                bytes,
                expected_entries,
            } => format!(
                "too long: {bytes} bytes, should be {expected_entries} entries ({} bytes)",
                expected_entries * INDEX_ENTRY_LEN
            ),
        }
    }
}

/// Compares an original index file with the rebuilt entries as they stream by.
pub struct IndexComparer<'a, S: ?Sized> {
    kind: IndexKind,
    window: Window<'a, S>,
    entries: u64,
    verdict: Option<IndexVerdict>,
}

impl<'a, S: ReadAt + ?Sized> IndexComparer<'a, S> {
    pub fn new(kind: IndexKind, original: &'a S, original_len: u64) -> Self {
        IndexComparer {
            kind,
            window: Window::new(original, original_len),
            entries: 0,
            verdict: None,
        }
    }

    /// Feeds the next rebuilt entry's record.
    // Always inlined: twice per record in the scan's inner loop (see `check_record`).
    #[inline(always)]
    pub fn push(&mut self, m: &RecordMeta) {
        if self.verdict.is_some() {
            return;
        }
        let at = self.entries * INDEX_ENTRY_LEN;
        let expected = entry_for(self.kind, m);
        if at + INDEX_ENTRY_LEN > self.window.len {
            // The original ends here; finish() reports how short it is.
            self.verdict = Some(IndexVerdict::TooShort {
                bytes: self.window.len,
                expected_entries: 0,
            });
        } else {
            match self.window.get(at, INDEX_ENTRY_LEN as usize) {
                Ok(found) if found == expected => {}
                Ok(found) => {
                    self.verdict = Some(IndexVerdict::Differs {
                        entry: self.entries,
                        found: found.try_into().expect("one entry"),
                        expected,
                    })
                }
                Err(e) => self.verdict = Some(IndexVerdict::Unreadable(e.to_string())),
            }
        }
        self.entries += 1;
    }

    /// The verdict once every rebuilt entry was pushed (`total` of them).
    pub fn finish(self, total: u64) -> IndexVerdict {
        match self.verdict {
            Some(IndexVerdict::TooShort { bytes, .. }) => IndexVerdict::TooShort {
                bytes,
                expected_entries: total,
            },
            Some(v) => v,
            None if self.window.len > total * INDEX_ENTRY_LEN => IndexVerdict::TooLong {
                bytes: self.window.len,
                expected_entries: total,
            },
            None => IndexVerdict::Match,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::takhin::SegmentWriter;
    use crate::engine::scan::{scan_segment, ScanOptions};

    fn seg(n: u64) -> SegmentWriter {
        let mut w = SegmentWriter::new(100);
        for i in 0..n {
            w.append(1000 + i as i64, b"k", &vec![i as u8; (i % 7) as usize]);
        }
        w
    }

    #[test]
    fn clean_segment_rebuilds_its_indexes() {
        let w = seg(3000);
        let s = scan_segment(
            &w.log,
            w.log.len() as u64,
            100,
            &ScanOptions::default(),
            |_| {},
        )
        .unwrap();
        assert!(s.is_clean());
        assert_eq!(s.records, 3000);
        assert_eq!(s.checkpoints.len(), 3);
        let (i, t) = rebuild_indexes(&w.log, &s).unwrap();
        assert_eq!(i, w.index);
        assert_eq!(t, w.timeindex);
        let part = read_rebuilt_index(&w.log, &s, IndexKind::Offset, 16 * 1500 + 5, 40).unwrap();
        assert_eq!(part, w.index[16 * 1500 + 5..16 * 1500 + 45]);
    }

    #[test]
    fn comparer_reports_short_and_long() {
        let w = seg(5);
        let s = scan_segment(
            &w.log,
            w.log.len() as u64,
            100,
            &ScanOptions::default(),
            |_| {},
        )
        .unwrap();
        for (orig, want) in [
            (w.index[..40].to_vec(), "too short"),
            ([w.index.clone(), vec![0; 16]].concat(), "too long"),
        ] {
            let mut c = IndexComparer::new(IndexKind::Offset, &orig, orig.len() as u64);
            visit_records(&w.log, &s, 0, s.records, |m| c.push(m)).unwrap();
            let v = c.finish(s.records);
            assert!(v.describe(IndexKind::Offset).starts_with(want), "{v:?}");
        }
    }
}
