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
use std::io::{self, Write};

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

/// Both rebuilt index files whole, in memory (for tests; repair streams them with
/// [`stream_rebuilt_indexes`], the mount reads ranges).
pub fn rebuild_indexes<S: ReadAt + ?Sized>(
    src: &S,
    scan: &SegmentScan,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let n = scan.index_bytes() as usize;
    let mut index = Vec::with_capacity(n);
    let mut timeindex = Vec::with_capacity(n);
    stream_rebuilt_indexes(src, scan, &mut index, &mut timeindex).map_err(StreamError::into_io)?;
    Ok((index, timeindex))
}

/// The size and CRC-32 of one rebuilt index file, taken as it streamed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDigest {
    pub bytes: u64,
    pub crc32: u32,
}

/// What streaming the rebuilt indexes failed on: the `.log` read, or one index's writer.
#[derive(Debug)]
pub enum StreamError {
    /// Reading the `.log`, or it no longer holds the records its scan found.
    Read(io::Error),
    /// Writing the rebuilt index of this kind.
    Write(IndexKind, io::Error),
}

impl StreamError {
    /// The underlying error, whichever side it came from.
    pub fn into_io(self) -> io::Error {
        match self {
            StreamError::Read(e) | StreamError::Write(_, e) => e,
        }
    }
}

/// Bytes of rebuilt entries gathered before they are hashed and handed to a writer:
/// a segment's indexes stream through this much memory each, whatever their size.
const STREAM_BYTES: usize = 4096 * INDEX_ENTRY_LEN as usize;

/// One rebuilt index on its way to its writer: a fixed block of entries, the
/// CRC-32 and size of what was handed on, and the writer's first error (the walk
/// cannot be stopped from its visitor; what follows an error is dropped).
struct IndexStream<'w> {
    kind: IndexKind,
    out: &'w mut dyn Write,
    block: Vec<u8>,
    crc: crc32fast::Hasher,
    bytes: u64,
    failed: Option<io::Error>,
}

impl<'w> IndexStream<'w> {
    fn new(kind: IndexKind, out: &'w mut dyn Write) -> Self {
        IndexStream {
            kind,
            out,
            block: Vec::with_capacity(STREAM_BYTES),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            failed: None,
        }
    }

    #[inline]
    fn push(&mut self, m: &RecordMeta) {
        self.block.extend_from_slice(&entry_for(self.kind, m));
        if self.block.len() >= STREAM_BYTES {
            self.hand_on();
        }
    }

    fn hand_on(&mut self) {
        if self.failed.is_none() {
            self.crc.update(&self.block);
            self.bytes += self.block.len() as u64;
            if let Err(e) = self.out.write_all(&self.block) {
                self.failed = Some(e);
            }
        }
        self.block.clear();
    }

    fn finish(mut self) -> Result<IndexDigest, StreamError> {
        self.hand_on();
        if self.failed.is_none() {
            if let Err(e) = self.out.flush() {
                self.failed = Some(e);
            }
        }
        match self.failed {
            Some(e) => Err(StreamError::Write(self.kind, e)),
            None => Ok(IndexDigest {
                bytes: self.bytes,
                crc32: self.crc.finalize(),
            }),
        }
    }
}

/// Streams both rebuilt index files of `scan` to their writers in one walk of the
/// records (give `io::sink()` for one not wanted: its digest is still taken), through
/// one fixed block each, so memory does not grow with the segment. Returns each
/// file's size and CRC-32 (`.index`, `.timeindex`).
pub fn stream_rebuilt_indexes<S: ReadAt + ?Sized>(
    src: &S,
    scan: &SegmentScan,
    index: &mut dyn Write,
    timeindex: &mut dyn Write,
) -> Result<(IndexDigest, IndexDigest), StreamError> {
    let mut i = IndexStream::new(IndexKind::Offset, index);
    let mut t = IndexStream::new(IndexKind::Time, timeindex);
    visit_records(src, scan, 0, scan.records, |m| {
        i.push(m);
        t.push(m);
    })
    .map_err(StreamError::Read)?;
    Ok((i.finish()?, t.finish()?))
}

/// The size and CRC-32 of both rebuilt index files, nothing of them kept.
pub fn rebuilt_digests<S: ReadAt + ?Sized>(
    src: &S,
    scan: &SegmentScan,
) -> io::Result<(IndexDigest, IndexDigest)> {
    stream_rebuilt_indexes(src, scan, &mut io::sink(), &mut io::sink())
        .map_err(StreamError::into_io)
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

/// Rebuilt entries gathered before they are compared with the original in one
/// slice comparison (a per-entry comparison was a fifth of `check`'s instructions).
const BATCH_BYTES: usize = 256 * INDEX_ENTRY_LEN as usize;

/// Compares an original index file with the rebuilt entries as they stream by.
pub struct IndexComparer<'a, S: ?Sized> {
    kind: IndexKind,
    window: Window<'a, S>,
    /// Entries compared so far (all of them matched).
    compared: u64,
    /// Rebuilt entries not compared yet: the first `pending_len` bytes.
    pending: Box<[u8; BATCH_BYTES]>,
    pending_len: usize,
    verdict: Option<IndexVerdict>,
}

impl<'a, S: ReadAt + ?Sized> IndexComparer<'a, S> {
    pub fn new(kind: IndexKind, original: &'a S, original_len: u64) -> Self {
        IndexComparer {
            kind,
            window: Window::new(original, original_len),
            compared: 0,
            pending: Box::new([0; BATCH_BYTES]),
            pending_len: 0,
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
        let at = self.pending_len;
        self.pending[at..at + INDEX_ENTRY_LEN as usize].copy_from_slice(&entry_for(self.kind, m));
        self.pending_len = at + INDEX_ENTRY_LEN as usize;
        if self.pending_len == BATCH_BYTES {
            self.compare_pending();
        }
    }

    /// Compares the pending entries with the original's next ones: the first
    /// that differs, or the first the original lacks, is the verdict.
    #[cold]
    fn compare_pending(&mut self) {
        let e = INDEX_ENTRY_LEN as usize;
        let pending = self.pending_len / e;
        let at = self.compared * INDEX_ENTRY_LEN;
        // Whole entries the original still holds from `at` (a partial last one is missing).
        let held =
            (self.window.len.saturating_sub(at) / INDEX_ENTRY_LEN).min(pending as u64) as usize;
        if held > 0 {
            match self.window.get(at, held * e) {
                Ok(found) if found == &self.pending[..held * e] => {}
                Ok(found) => {
                    let i = (0..held)
                        .find(|i| found[i * e..(i + 1) * e] != self.pending[i * e..(i + 1) * e])
                        .expect("the slices differ in some entry");
                    self.verdict = Some(IndexVerdict::Differs {
                        entry: self.compared + i as u64,
                        found: found[i * e..(i + 1) * e].try_into().expect("one entry"),
                        expected: self.pending[i * e..(i + 1) * e]
                            .try_into()
                            .expect("one entry"),
                    });
                }
                Err(err) => self.verdict = Some(IndexVerdict::Unreadable(err.to_string())),
            }
        }
        if self.verdict.is_none() && held < pending {
            // The original ends here; finish() reports how short it is.
            self.verdict = Some(IndexVerdict::TooShort {
                bytes: self.window.len,
                expected_entries: 0,
            });
        }
        self.compared += pending as u64;
        self.pending_len = 0;
    }

    /// The verdict once every rebuilt entry was pushed (`total` of them).
    pub fn finish(mut self, total: u64) -> IndexVerdict {
        if self.verdict.is_none() && self.pending_len > 0 {
            self.compare_pending();
        }
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

    /// The scan of a segment written by [`seg`] (based at 100).
    fn scanned(w: &SegmentWriter) -> SegmentScan {
        scan_segment(
            &w.log,
            w.log.len() as u64,
            100,
            &ScanOptions::default(),
            |_| {},
        )
        .unwrap()
    }

    #[test]
    fn clean_segment_rebuilds_its_indexes() {
        let w = seg(3000);
        let s = scanned(&w);
        assert!(s.is_clean());
        assert_eq!(s.records, 3000);
        assert_eq!(s.checkpoints.len(), 3);
        let (i, t) = rebuild_indexes(&w.log, &s).unwrap();
        assert_eq!(i, w.index);
        assert_eq!(t, w.timeindex);
        let part = read_rebuilt_index(&w.log, &s, IndexKind::Offset, 16 * 1500 + 5, 40).unwrap();
        assert_eq!(part, w.index[16 * 1500 + 5..16 * 1500 + 45]);
    }

    /// A writer that takes `room` bytes, then fails like a full disk.
    struct Full {
        room: usize,
        took: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.took.len() + b.len() > self.room {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.took.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Streamed through blocks (4096 entries), the indexes are the segment's own, whole,
    /// around and across block boundaries; their digests are of exactly those bytes.
    #[test]
    fn streamed_indexes_are_whole_across_blocks() {
        let block = STREAM_BYTES as u64 / INDEX_ENTRY_LEN;
        for n in [0, 1, block - 1, block, block + 1, 2 * block + 3] {
            let w = seg(n);
            let s = scanned(&w);
            let (mut i, mut t) = (Vec::new(), Vec::new());
            let (di, dt) = stream_rebuilt_indexes(&w.log, &s, &mut i, &mut t).unwrap();
            assert!(i == w.index && t == w.timeindex, "{n} records");
            assert_eq!(
                di,
                IndexDigest {
                    bytes: i.len() as u64,
                    crc32: crc32fast::hash(&i)
                }
            );
            assert_eq!(
                dt,
                IndexDigest {
                    bytes: t.len() as u64,
                    crc32: crc32fast::hash(&t)
                }
            );
            assert_eq!(rebuilt_digests(&w.log, &s).unwrap(), (di, dt));
        }
    }

    /// A writer's failure is reported as that index's, not as a read of the `.log`.
    #[test]
    fn a_failed_write_names_its_index() {
        let w = seg(3 * STREAM_BYTES as u64 / INDEX_ENTRY_LEN);
        let s = scanned(&w);
        let mut full = Full {
            room: STREAM_BYTES,
            took: Vec::new(),
        };
        let e = stream_rebuilt_indexes(&w.log, &s, &mut io::sink(), &mut full).unwrap_err();
        assert!(
            matches!(&e, StreamError::Write(IndexKind::Time, e) if e.raw_os_error() == Some(libc::ENOSPC)),
            "{e:?}"
        );
        assert!(
            full.took == w.timeindex[..STREAM_BYTES],
            "the first block, nothing after"
        );
        // A `.log` shorter than its scan says is a read error.
        let e = stream_rebuilt_indexes(
            &w.log[..w.log.len() / 2],
            &s,
            &mut io::sink(),
            &mut io::sink(),
        )
        .unwrap_err();
        assert!(matches!(e, StreamError::Read(_)), "{e:?}");
    }

    #[test]
    fn comparer_reports_short_and_long() {
        let w = seg(5);
        let s = scanned(&w);
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

    /// The comparer's verdict, entry by entry, as the README states it: the
    /// first entry the original lacks or holds differently, else too long, else a match.
    fn model(expected: &[u8], orig: &[u8]) -> String {
        let e = INDEX_ENTRY_LEN as usize;
        for (i, want) in expected.chunks(e).enumerate() {
            match orig.get(i * e..(i + 1) * e) {
                None => return "short".into(),
                Some(found) if found != want => return format!("differs {i}"),
                Some(_) => {}
            }
        }
        if orig.len() > expected.len() {
            "long".into()
        } else {
            "match".into()
        }
    }

    proptest::proptest! {
        /// Batched comparison (256 entries at a time) agrees with the entry-by-entry model
        /// around every batch boundary, for cut, flipped and extended originals.
        #[test]
        fn batched_comparer_agrees_with_the_entry_model(
            n in 0u64..700,
            cut in proptest::option::of(0usize..12_000),
            flip in proptest::option::of((0usize..12_000, 1u8..=255)),
            extra in 0usize..40,
        ) {
            let w = seg(n);
            let s = scanned(&w);
            let mut orig = w.index.clone();
            if let Some((at, x)) = flip {
                if !orig.is_empty() {
                    let at = at % orig.len();
                    orig[at] ^= x;
                }
            }
            if let Some(c) = cut {
                orig.truncate(c.min(orig.len()));
            } else {
                orig.extend(std::iter::repeat_n(0u8, extra));
            }
            let mut c = IndexComparer::new(IndexKind::Offset, &orig, orig.len() as u64);
            visit_records(&w.log, &s, 0, s.records, |m| c.push(m)).unwrap();
            let got = match c.finish(s.records) {
                IndexVerdict::Match => "match".to_string(),
                IndexVerdict::TooLong { .. } => "long".into(),
                IndexVerdict::TooShort { .. } => "short".into(),
                IndexVerdict::Differs { entry, .. } => format!("differs {entry}"),
                other => format!("{other:?}"),
            };
            proptest::prop_assert_eq!(got, model(&w.index, &orig));
        }
    }
}
