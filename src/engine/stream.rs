//! Replica logs compared with the primary's while the primary is scanned: which replica `.log`s hold only the primary's bytes, found without reading the primary twice.
//!
//! A log's segment files, concatenated in offset order, are its **stream**. When a
//! replica log's first segment has the primary's first base, both streams begin
//! with the same record, and wherever the primary's segments are clean the two
//! streams must agree byte for byte if the copies agree. Each primary segment's
//! scan is shown to a [`StreamTee`], which reads the replica stream at the same
//! stream positions (crossing the replica's own segment boundaries) and compares
//! while the primary's bytes are still in the scan's window. The primary's
//! stream position of a segment is assumed from the sizes listed before the scan
//! (the segments are scanned in parallel); [`settle`] keeps a segment's outcome
//! only when every segment before it turned out clean and of that size, so a
//! wrong assumption costs a comparison, never a wrong answer.
//!
//! What is settled is the verified prefix of the primary stream: a replica `.log`
//! lying wholly inside it holds only the primary's bytes. One named like a primary
//! segment at the same stream position and of the same size is that segment's
//! twin ([`Known::Twin`]); one that starts at a record boundary of the primary
//! elsewhere holds the primary's records from its base on ([`Known::Inside`]).

use crate::engine::format::takhin::FileKind;
use crate::engine::layout::LogLayout;
use crate::engine::salvage::Shifted;
use crate::engine::scan::{visit_records, SegmentScan};
use crate::engine::segment::{FileStamp, ReadTap, SegmentAnalysis};
use crate::engine::source::Source;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

/// One replica log's segments as one stream.
#[derive(Debug)]
pub struct ReplicaStream {
    /// Which replica (0-based).
    pub replica: usize,
    segs: Vec<StreamSeg>,
}

#[derive(Debug)]
struct StreamSeg {
    base: u64,
    /// The `.log`, relative to the replica's data directory.
    rel: PathBuf,
    size: u64,
    /// Where it begins in the stream.
    start: u64,
}

impl ReplicaStream {
    /// Replica `replica`'s log `rlog` as a stream to compare with the primary log
    /// `plog`, when both begin at the same base (else the streams do not line up).
    /// Sizes are listed now; a file found another size later stops the comparison.
    pub fn new(
        replica: usize,
        source: &Source,
        rlog: &LogLayout,
        plog: &LogLayout,
    ) -> Option<Self> {
        let first = rlog.segments.first()?;
        if Some(first.base) != plog.segments.first().map(|s| s.base) {
            return None;
        }
        let mut segs = Vec::with_capacity(rlog.segments.len());
        let mut start = 0u64;
        for s in &rlog.segments {
            let rel = rlog.file_rel(s.base, FileKind::Log);
            let Some(m) = source.metadata(&rel).ok().filter(|m| m.is_file()) else {
                break; // the stream ends where a file cannot be listed
            };
            segs.push(StreamSeg {
                base: s.base,
                rel,
                size: m.len(),
                start,
            });
            start = start.checked_add(m.len())?;
        }
        Some(ReplicaStream { replica, segs })
    }

    /// The segment holding stream position `x`.
    fn seg_at(&self, x: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.start + s.size <= x);
        (i < self.segs.len() && self.segs[i].start <= x).then_some(i)
    }
}

/// The primary log's stream positions of its segments, from the sizes listed
/// now (`None` from the first segment whose `.log` cannot be listed on).
pub fn primary_starts(source: &Source, log: &LogLayout) -> Vec<Option<u64>> {
    let mut at = Some(0u64);
    log.segments
        .iter()
        .map(|s| {
            let here = at;
            let size = source
                .metadata(&log.file_rel(s.base, FileKind::Log))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            at = match (at, size) {
                (Some(a), Some(n)) => a.checked_add(n),
                _ => None,
            };
            here
        })
        .collect()
}

/// What one tee found for one replica: the primary segment's first `matched`
/// bytes equal the replica stream's from `start` on, and the stamps of the
/// replica files it read (by segment index).
#[derive(Debug, Clone)]
pub struct TeeOutcome {
    pub replica: usize,
    start: u64,
    matched: u64,
    stamps: Vec<(usize, FileStamp)>,
}

/// Every tee's outcomes, by (log, segment index in the log).
pub type Outcomes = Mutex<HashMap<(usize, usize), Vec<TeeOutcome>>>;

/// Compares one primary segment's bytes, as its scan reads them, with each replica
/// stream at the segment's assumed stream position; publishes on drop.
pub struct StreamTee<'a> {
    key: (usize, usize),
    copies: Vec<TeeCopy<'a>>,
    out: &'a Outcomes,
}

struct TeeCopy<'a> {
    stream: &'a ReplicaStream,
    source: &'a Source,
    start: u64,
    /// Bytes of the primary segment, from its start, found equal so far.
    matched: u64,
    live: bool,
    open: Option<(usize, File)>,
    stamps: Vec<(usize, FileStamp)>,
    buf: Vec<u8>,
}

impl<'a> StreamTee<'a> {
    /// A tee for segment `seg` of log `log` whose stream position is `start`,
    /// against `streams` (each with its replica's door).
    pub fn new(
        key: (usize, usize),
        start: u64,
        streams: &'a [(ReplicaStream, &'a Source)],
        out: &'a Outcomes,
    ) -> Self {
        let copies = streams
            .iter()
            .map(|(stream, source)| TeeCopy {
                stream,
                source,
                start,
                matched: 0,
                live: true,
                open: None,
                stamps: Vec::new(),
                buf: Vec::new(),
            })
            .collect();
        StreamTee { key, copies, out }
    }
}

impl TeeCopy<'_> {
    /// Compares `bytes`, the primary's at segment position `pos`, from `matched` on.
    fn read(&mut self, pos: u64, bytes: &[u8]) {
        if !self.live || pos.saturating_add(bytes.len() as u64) <= self.matched {
            return; // stopped, or bytes compared already (a window keeps what it read)
        }
        if pos > self.matched {
            self.live = false; // the scan skipped ahead: the prefix compared ends here
            return;
        }
        let mut data = &bytes[(self.matched - pos) as usize..];
        while !data.is_empty() {
            let x = self.start.saturating_add(self.matched);
            let Some(n) = self.compare_at(x, data) else {
                self.live = false;
                return;
            };
            self.matched += n as u64;
            data = &data[n..];
        }
    }

    /// Compares the start of `data` with the replica stream at `x`: how many bytes
    /// agreed (all those compared), `None` at the first difference or failure.
    fn compare_at(&mut self, x: u64, data: &[u8]) -> Option<usize> {
        let j = self.stream.seg_at(x)?;
        let seg = &self.stream.segs[j];
        let n = ((seg.start + seg.size - x) as usize).min(data.len());
        if self.open.as_ref().is_none_or(|(k, _)| *k != j) {
            let f = self.source.file(&seg.rel).ok()?;
            let stamp = FileStamp::of(&f.metadata().ok()?);
            if stamp.size != seg.size {
                return None;
            }
            self.stamps.push((j, stamp));
            self.open = Some((j, f));
        }
        let (_, f) = self.open.as_ref()?;
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        crate::engine::scan::read_exact_at(f, &mut self.buf[..n], x - seg.start).ok()?;
        (self.buf[..n] == data[..n]).then_some(n)
    }
}

impl ReadTap for StreamTee<'_> {
    fn read(&mut self, pos: u64, bytes: &[u8]) {
        for c in &mut self.copies {
            c.read(pos, bytes);
        }
    }

    fn wants_more(&self) -> bool {
        self.copies.iter().any(|c| c.live)
    }
}

impl Drop for StreamTee<'_> {
    fn drop(&mut self) {
        let found = self
            .copies
            .iter_mut()
            .map(|c| TeeOutcome {
                replica: c.stream.replica,
                start: c.start,
                matched: c.matched,
                stamps: std::mem::take(&mut c.stamps),
            })
            .collect();
        self.out.lock().insert(self.key, found);
    }
}

/// What the tees settled about one replica `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Byte-identical to the primary's `.log` of the same name (its stamp, as compared).
    Twin(FileStamp),
    /// Every byte is the primary's, from the record holding its base on.
    Inside,
}

/// The replica `.log`s (by replica, relative path) the tees proved hold only the
/// primary's bytes, for log `li` (`plog`, its segments' analyses `analyses`, its
/// assumed stream positions `starts`) against `streams`. `Inside` is settled only
/// when `inside` (one replica: such a file needs no comparison at all).
#[allow(clippy::too_many_arguments)]
pub fn settle(
    li: usize,
    primary: &Source,
    plog: &LogLayout,
    analyses: &[SegmentAnalysis],
    starts: &[Option<u64>],
    streams: &[(ReplicaStream, &Source)],
    outcomes: &HashMap<(usize, usize), Vec<TeeOutcome>>,
    inside: bool,
) -> HashMap<(usize, PathBuf), Known> {
    let mut known = HashMap::new();
    for (stream, source) in streams {
        let r = stream.replica;
        // Walk the primary stream while its segments are clean and were compared at the right place.
        let mut verified = 0u64;
        let mut at = 0u64;
        let mut walked: Vec<(u64, usize, &SegmentScan)> = Vec::new();
        let mut stamps: HashMap<usize, FileStamp> = HashMap::new();
        for (si, a) in analyses.iter().enumerate() {
            let Ok(scan) = &a.scan else { break };
            let Some(o) = outcomes
                .get(&(li, si))
                .and_then(|v| v.iter().find(|o| o.replica == r))
            else {
                break;
            };
            if starts.get(si).copied().flatten() != Some(at) || o.start != at {
                break;
            }
            stamps.extend(o.stamps.iter().copied());
            walked.push((at, si, scan));
            let covered = o.matched.min(scan.valid_bytes);
            verified = at.saturating_add(covered);
            if !(scan.is_clean() && covered == a.stamp.size) {
                break;
            }
            at = at.saturating_add(a.stamp.size);
        }
        for (j, seg) in stream.segs.iter().enumerate() {
            if seg.size == 0 || seg.start + seg.size > verified {
                continue;
            }
            // The file compared must still be the file it is.
            let Some(&stamp) = stamps.get(&j) else {
                continue;
            };
            let current = source.metadata(&seg.rel).ok().map(|m| FileStamp::of(&m));
            if current != Some(stamp) {
                continue;
            }
            let Some(&(s, si, scan)) = walked.iter().rev().find(|(s, _, _)| *s <= seg.start) else {
                continue;
            };
            let pbase = analyses[si].base;
            if s == seg.start && pbase == seg.base && analyses[si].stamp.size == seg.size {
                known.insert((r, seg.rel.clone()), Known::Twin(stamp));
            } else if inside && starts_record(primary, plog, pbase, scan, seg.base, seg.start - s) {
                known.insert((r, seg.rel.clone()), Known::Inside);
            }
        }
    }
    known
}

/// True when the record holding offset `o` begins at byte `pos` of the primary
/// segment `base` (scanned as `scan`).
fn starts_record(
    primary: &Source,
    plog: &LogLayout,
    base: u64,
    scan: &SegmentScan,
    o: u64,
    pos: u64,
) -> bool {
    let Some(k) = o.checked_sub(scan.base_offset) else {
        return false;
    };
    if k >= scan.records {
        return false;
    }
    let Ok(file) = primary.file(&plog.file_rel(base, FileKind::Log)) else {
        return false;
    };
    let view = Shifted {
        src: &file,
        start: 0,
        len: scan.valid_bytes,
    };
    let mut at = None;
    visit_records(&view, scan, k, 1, |m| at = Some(m.position)).is_ok() && at == Some(pos)
}
