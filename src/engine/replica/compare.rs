//! Comparing the copies of a log record by record (offset, timestamp, key, value; never the pad bytes): the divergences, which copy is the odd one out, and the records `--prefer` serves from another copy.

use super::pieces::Piece;
use crate::engine::format::takhin::{
    be_i64, be_u32, be_u64, HEADER_LEN, KEY_LEN_AT, OFFSET_AT, PAD_LEN, SIZE_FIELD_LEN,
    TIMESTAMP_AT, VALUE_LEN_FIELD_LEN,
};
use crate::engine::layout::escape_path;
use crate::engine::report::{Divergence, DivergentCopy};
use crate::engine::source::Source;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// At most this many divergences are listed per log; the rest are counted.
pub const MAX_DIVERGENCES_LISTED: usize = 1000;
/// Bytes compared per read when stretches of records are compared whole.
const COMPARE_CHUNK: usize = 1 << 20;

/// Which copy's record the view serves where copies disagree (`--prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefer {
    /// The primary's, always (the divergence is reported).
    #[default]
    Primary,
    /// A replica's wherever the primary is not in a majority (with two copies: the replica's).
    Replica,
    /// The majority's wherever the primary is not in it (three copies or more; with
    /// two there is no majority and the primary's is kept).
    Majority,
}

impl std::str::FromStr for Prefer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "primary" => Ok(Prefer::Primary),
            "replica" => Ok(Prefer::Replica),
            "majority" => Ok(Prefer::Majority),
            _ => Err(format!(
                "unknown preference '{s}': use primary, replica or majority"
            )),
        }
    }
}

/// A divergent record the view serves from replica `replica` (0-based) instead of the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sub {
    pub(super) offset: u64,
    pub(super) replica: usize,
}

/// One copy's record, read for comparison (pad bytes skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fields {
    pub(super) offset: u64,
    pub(super) timestamp: i64,
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
}

/// A forward reader over one file's byte range, through a large buffer.
pub(super) struct Reader<'a> {
    pub(super) file: &'a File,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) buf: Vec<u8>,
    pub(super) at: usize,
    pub(super) filled: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(file: &'a File, pos: u64, end: u64) -> Self {
        Reader {
            file,
            pos,
            end,
            buf: vec![0; COMPARE_CHUNK.min((end - pos).max(64) as usize)],
            at: 0,
            filled: 0,
        }
    }

    /// The next `n` bytes (`n` at most the buffer, else read into `out`).
    fn take_into(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        let mut left = n;
        while left > 0 {
            if self.at == self.filled {
                let want = ((self.end - self.pos) as usize).min(self.buf.len());
                if want == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "record past the end of its valid run: the file changed",
                    ));
                }
                let got = FileExt::read_at(self.file, &mut self.buf[..want], self.pos)?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.pos += got as u64;
                self.at = 0;
                self.filled = got;
            }
            let k = left.min(self.filled - self.at);
            out.extend_from_slice(&self.buf[self.at..self.at + k]);
            self.at += k;
            left -= k;
        }
        Ok(())
    }

    /// The next record's fields (its pad bytes read past). A record larger than
    /// `max` bytes or than what is left of the range is an error, never an allocation.
    pub(super) fn record(&mut self, scratch: &mut Vec<u8>, max: u64) -> io::Result<Fields> {
        let left = self.end - (self.pos - (self.filled - self.at) as u64);
        self.take_into(HEADER_LEN, scratch)?;
        let h = scratch.clone();
        let size = be_u32(&h, 0) as u64;
        if size > max || SIZE_FIELD_LEN + size > left {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file changed"));
        }
        let key_len = be_u32(&h, KEY_LEN_AT) as u64;
        // The records of a valid run were checked by the scan; a file changed
        // since may hold anything, so lengths are checked again before reading.
        let body = size.saturating_sub(HEADER_LEN as u64 - SIZE_FIELD_LEN);
        if key_len + VALUE_LEN_FIELD_LEN + PAD_LEN > body {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file changed"));
        }
        let mut key = Vec::new();
        self.take_into(key_len as usize, &mut key)?;
        self.take_into(VALUE_LEN_FIELD_LEN as usize, scratch)?;
        let value_len = be_u32(scratch, 0) as u64;
        if key_len + value_len + VALUE_LEN_FIELD_LEN + PAD_LEN != body {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file changed"));
        }
        let mut value = Vec::new();
        self.take_into(value_len as usize, &mut value)?;
        self.take_into(PAD_LEN as usize, scratch)?;
        Ok(Fields {
            offset: be_u64(&h, OFFSET_AT),
            timestamp: be_i64(&h, TIMESTAMP_AT),
            key,
            value,
        })
    }
}

/// Compares the copies of one log.
pub(super) struct Verifier<'a> {
    pub(super) copies: Vec<(String, &'a Source, Vec<Piece>)>,
    /// Replica `.log`s known byte-identical to the primary's of the same name.
    pub(super) identical: HashSet<(usize, PathBuf)>,
    /// Which replica each copy is (`None`: the primary).
    pub(super) who: Vec<Option<usize>>,
    pub(super) prefer: Prefer,
    pub(super) found: Vec<Divergence>,
    pub(super) more: u64,
    /// Where `prefer` serves another copy's record.
    pub(super) subs: Vec<Sub>,
    /// `--max-record-bytes`: no record read for comparison is larger.
    pub(super) max: u64,
}

impl Verifier<'_> {
    pub(super) fn run(&mut self) {
        // Every piece boundary of every copy: between two, the same copies hold every offset.
        let mut cuts: Vec<u64> = self
            .copies
            .iter()
            .flat_map(|(_, _, ps)| ps.iter().flat_map(|p| [p.from, p.to]))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let holders: Vec<(usize, Piece)> = self
                .copies
                .iter()
                .enumerate()
                .filter_map(|(i, (_, _, ps))| {
                    ps.iter()
                        .find(|p| p.from <= a && b <= p.to)
                        .map(|p| (i, p.clone()))
                })
                .collect();
            if holders.len() >= 2 {
                if let Err(e) = self.compare(a, b, &holders) {
                    tracing::warn!("comparing offsets {a}..{b}: {e}");
                }
            }
        }
    }

    /// Compares offsets `[a, b)` of the copies that hold them.
    fn compare(&mut self, a: u64, b: u64, holders: &[(usize, Piece)]) -> io::Result<()> {
        // The same bytes at the same place of files known identical: nothing to compare.
        let (first, p0) = &holders[0];
        let known = *first == 0
            && holders[1..].iter().all(|(i, p)| {
                p.file == p0.file
                    && p.start == p0.start
                    && self.who[*i].is_some_and(|r| self.identical.contains(&(r, p.file.clone())))
            });
        if known {
            return Ok(());
        }
        let mut files = Vec::new();
        for (i, p) in holders {
            let src = self.copies[*i].1;
            let f = src.file(&p.file)?;
            let from = p.position_of(&f, a)?;
            let to = p.position_of(&f, b)?;
            files.push((f, from, to));
        }
        let refs: Vec<(&File, u64, u64)> = files.iter().map(|(f, a, b)| (f, *a, *b)).collect();
        if same_bytes(&refs)? {
            return Ok(());
        }
        let mut readers: Vec<Reader> = files
            .iter()
            .map(|(f, from, to)| Reader::new(f, *from, *to))
            .collect();
        let mut scratch = Vec::new();
        for o in a..b {
            let mut positions = Vec::with_capacity(readers.len());
            let mut recs = Vec::with_capacity(readers.len());
            for r in readers.iter_mut() {
                positions.push(r.pos - (r.filled - r.at) as u64);
                recs.push(r.record(&mut scratch, self.max)?);
            }
            if recs.iter().all(|r| *r == recs[0]) {
                continue;
            }
            if holders[0].0 == 0 {
                if let Some(k) = chosen(self.prefer, &recs) {
                    if let Some(r) = self.who[holders[k].0] {
                        self.subs.push(Sub {
                            offset: o,
                            replica: r,
                        });
                    }
                }
            }
            if self.found.len() >= MAX_DIVERGENCES_LISTED {
                self.more += 1;
                continue;
            }
            let copies: Vec<(String, String, u64)> = holders
                .iter()
                .zip(&positions)
                .map(|((i, p), pos)| (self.copies[*i].0.clone(), escape_path(&p.file), *pos))
                .collect();
            self.found.push(divergence(o, &recs, copies));
        }
        Ok(())
    }
}

/// True when every copy's byte range has the same length and the same bytes
/// (pad bytes included: equal bytes mean equal records; unequal ones are then
/// compared record by record, pads left out).
pub(super) fn same_bytes(files: &[(&File, u64, u64)]) -> io::Result<bool> {
    let Some(len) = files[0].2.checked_sub(files[0].1) else {
        return Ok(false);
    };
    if files.iter().any(|(_, f, t)| t.checked_sub(*f) != Some(len)) {
        return Ok(false);
    }
    let mut first = vec![0u8; COMPARE_CHUNK.min(len.max(1) as usize)];
    let mut other = vec![0u8; first.len()];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(first.len());
        files[0]
            .0
            .read_exact_at(&mut first[..n], files[0].1 + done)?;
        for (f, from, _) in &files[1..] {
            f.read_exact_at(&mut other[..n], from + done)?;
            if first[..n] != other[..n] {
                return Ok(false);
            }
        }
        done += n as u64;
    }
    Ok(true)
}

/// Which copy's record `prefer` serves instead of the primary's (`recs[0]`), if any.
pub(super) fn chosen(prefer: Prefer, recs: &[Fields]) -> Option<usize> {
    let n = recs.len();
    let majority = (0..n).find(|&i| recs.iter().filter(|r| **r == recs[i]).count() * 2 > n);
    let outvoted = majority.filter(|&m| recs[m] != recs[0]);
    match prefer {
        Prefer::Primary => None,
        Prefer::Majority => outvoted,
        // No majority (two copies, or all different): the first replica's.
        Prefer::Replica => match majority {
            Some(_) => outvoted,
            None => Some(1),
        },
    }
}

/// The fields in which two records differ.
pub(super) fn differing(x: &Fields, y: &Fields) -> Vec<&'static str> {
    let mut f = Vec::new();
    if x.offset != y.offset {
        f.push("offset");
    }
    if x.timestamp != y.timestamp {
        f.push("timestamp");
    }
    if x.key != y.key {
        f.push("key");
    }
    if x.value != y.value {
        f.push("value");
    }
    f
}

/// The divergence at offset `o` between the copies' records `recs`
/// (`copies`: each copy's label, file and position).
pub(super) fn divergence(
    o: u64,
    recs: &[Fields],
    copies: Vec<(String, String, u64)>,
) -> Divergence {
    let n = recs.len();
    // The copies agreeing with each copy (itself included).
    let agree: Vec<usize> = (0..n)
        .map(|i| recs.iter().filter(|r| **r == recs[i]).count())
        .collect();
    let majority = (0..n).find(|&i| agree[i] * 2 > n);
    let mut fields: Vec<&'static str> = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            for f in differing(&recs[i], &recs[j]) {
                if !fields.contains(&f) {
                    fields.push(f);
                }
            }
        }
    }
    let order = ["offset", "timestamp", "key", "value"];
    fields.sort_by_key(|f| order.iter().position(|o| o == f));
    let out: Vec<DivergentCopy> = copies
        .iter()
        .enumerate()
        .map(|(i, (copy, path, position))| DivergentCopy {
            copy: copy.clone(),
            path: path.clone(),
            position: *position,
            differs_in: match majority {
                Some(m) => differing(&recs[i], &recs[m]),
                None => fields.clone(),
            },
        })
        .collect();
    let outliers: Vec<&DivergentCopy> = out.iter().filter(|c| !c.differs_in.is_empty()).collect();
    let (odd, verdict) = match majority {
        _ if n == 2 => (
            None,
            "two copies disagree: which one is right cannot be decided (a third copy would tell)"
                .to_string(),
        ),
        Some(_) if outliers.len() == 1 => (
            Some(outliers[0].copy.clone()),
            format!(
                "{} is the odd one out: the other {} copies agree",
                outliers[0].copy,
                n - 1
            ),
        ),
        Some(m) => (
            None,
            format!(
                "{} differ from the majority ({} of {} copies agree with {})",
                outliers
                    .iter()
                    .map(|c| c.copy.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                agree[m],
                n,
                out[m].copy
            ),
        ),
        None => (
            None,
            format!("no majority among {n} copies: which one is right cannot be decided"),
        ),
    };
    Divergence {
        offset: o,
        fields,
        copies: out,
        odd_one_out: odd,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rec(offset: u64, timestamp: i64, key: &[u8], value: &[u8]) -> Fields {
        Fields {
            offset,
            timestamp,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn a_record_larger_than_its_range_or_the_maximum_is_an_error_not_an_allocation() {
        let mut f = tempfile::tempfile().unwrap();
        // A consistent record header claiming 3.75 GiB: size, offset, timestamp,
        // key_len 0, value_len = size - 28; then a few bytes only.
        let size = 0xF000_0000u32;
        let mut b = size.to_be_bytes().to_vec();
        b.extend_from_slice(&[0u8; 20]);
        b.extend_from_slice(&(size - 28).to_be_bytes());
        b.extend_from_slice(&[0u8; 60]);
        f.write_all(&b).unwrap();
        let mut scratch = Vec::new();
        let mut r = Reader::new(&f, 0, b.len() as u64);
        assert!(r.record(&mut scratch, u64::MAX).is_err());
        let mut r = Reader::new(&f, 0, u64::MAX);
        assert!(r.record(&mut scratch, 1 << 20).is_err());
        // A range that ends inside the header.
        let mut r = Reader::new(&f, 0, 10);
        assert!(r.record(&mut scratch, u64::MAX).is_err());
    }

    #[test]
    fn the_preferred_copy_is_the_majoritys_or_with_two_the_replicas() {
        let good = rec(5, 1, b"k", b"v");
        let bad = rec(5, 1, b"k", b"w");
        let other = rec(5, 2, b"k", b"v");
        let three = [bad.clone(), rec(5, 1, b"k", b"v"), rec(5, 1, b"k", b"v")];
        assert_eq!(chosen(Prefer::Majority, &three), Some(1));
        assert_eq!(chosen(Prefer::Replica, &three), Some(1));
        assert_eq!(chosen(Prefer::Primary, &three), None);
        let two = [bad.clone(), good.clone()];
        assert_eq!(chosen(Prefer::Majority, &two), None, "no majority of two");
        assert_eq!(chosen(Prefer::Replica, &two), Some(1));
        // The primary in the majority keeps its record, whatever the preference.
        let kept = [good.clone(), good.clone(), bad.clone()];
        assert_eq!(chosen(Prefer::Replica, &kept), None);
        assert_eq!(chosen(Prefer::Majority, &kept), None);
        // All different: no majority.
        let split = [bad, good, other];
        assert_eq!(chosen(Prefer::Majority, &split), None);
        assert_eq!(chosen(Prefer::Replica, &split), Some(1));
    }

    #[test]
    fn a_divergence_names_the_fields_and_the_odd_one_out() {
        let copies = |n: usize| {
            (0..n)
                .map(|i| (format!("c{i}"), "f".to_string(), i as u64))
                .collect::<Vec<_>>()
        };
        let d = divergence(
            7,
            &[
                rec(7, 1, b"a", b"v"),
                rec(7, 2, b"a", b"v"),
                rec(7, 2, b"a", b"v"),
            ],
            copies(3),
        );
        assert_eq!(d.fields, vec!["timestamp"]);
        assert_eq!(d.odd_one_out.as_deref(), Some("c0"));
        assert_eq!(d.copies[0].differs_in, vec!["timestamp"]);
        assert!(d.copies[1].differs_in.is_empty());
        let d = divergence(
            7,
            &[rec(7, 1, b"a", b"v"), rec(7, 1, b"b", b"w")],
            copies(2),
        );
        assert_eq!(d.fields, vec!["key", "value"]);
        assert_eq!(d.odd_one_out, None);
        assert!(d.verdict.contains("cannot be decided"));
    }
}
