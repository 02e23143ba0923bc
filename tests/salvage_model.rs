//! Salvage after mid-segment damage: an independent model of the resync rule, a proptest against it with ground truth, fixed cases, the real Takhin fixtures damaged, and an ignored benchmark.

use crate::common;

use common::{fixtures, segment_of};
use proptest::prelude::*;
use recoverfs::engine::format::takhin::{
    index_entry, timeindex_entry, Record, SegmentWriter, INDEX_ENTRY_LEN,
};
use recoverfs::engine::index::rebuild_indexes;
use recoverfs::engine::layout::discover;
use recoverfs::engine::salvage::{salvage, RunEnd, Salvage};
use recoverfs::engine::scan::{
    scan_segment, visit_records, walk, Damage, DamageKind, ReadAt, ScanOptions, SegmentScan,
    WalkStart,
};
use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;

// ---------------------------------------------------------------- the model

/// A run as the model sees it: (position, end, first offset, records, confirmed by index).
type MRun = (u64, u64, u64, u64, bool);

fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as u64
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// A well-formed record at `q`: (offset, end). The checks of the "Damage kinds" table, offset aside.
fn wf(b: &[u8], q: usize, max: u64) -> Option<(u64, usize)> {
    if b.len() < q + 4 {
        return None;
    }
    let size = u32_at(b, q);
    if size < 28 || size > max || q as u64 + 4 + size > b.len() as u64 {
        return None;
    }
    let kl = u32_at(b, q + 20);
    if 28 + kl > size {
        return None;
    }
    let vl = u32_at(b, q + 24 + kl as usize);
    (28 + kl + vl == size).then(|| (u64_at(b, q + 4), q + 4 + size as usize))
}

/// Index entry `k`, if the index holds it whole.
fn entry(ix: &[u8], k: u64) -> Option<(u64, u64)> {
    let at = usize::try_from(k).ok()?.checked_mul(16)?;
    (at + 16 <= ix.len()).then(|| (u64_at(ix, at), u64_at(ix, at + 8)))
}

fn plausible(o: u64, q: usize, c: usize, e: u64) -> bool {
    o >= e && o - e <= ((q - c) / 32) as u64
}

/// The rule of `engine::salvage`'s docs, written as plainly as possible (quadratic,
/// whole-slice, no windows, no skipping): runs, and the (position, offset) of the
/// first record cut at `next_base`.
fn model(
    b: &[u8],
    base: u64,
    max: u64,
    ix: Option<&[u8]>,
    next_base: Option<u64>,
) -> (Vec<MRun>, Option<(u64, u64)>) {
    let opts = ScanOptions::with_max(max);
    let s = scan_segment(b, b.len() as u64, base, &opts, |_| {}).unwrap();
    let mut runs = Vec::new();
    match &s.damage {
        None => return (runs, None),
        Some(d) if d.kind() == DamageKind::ZeroFill => return (runs, None),
        _ => {}
    }
    let len = b.len();
    let Some(mut e) = base.checked_add(s.records) else {
        return (runs, None);
    };
    let mut c = s.valid_bytes as usize;
    // A record at [p, end) with offset o may stand before the confirmed record h.
    let fits = |h: Option<(u64, usize)>, p: usize, end: usize, o: u64| {
        h.is_none_or(|(oh, ph)| p >= ph || (end <= ph && o < oh))
    };
    // The chain from q: (end, records, cut record).
    let chain = |q: usize, o: u64, h: Option<(u64, usize)>| {
        let (mut p, mut n) = (q, 0u64);
        while p < len {
            match wf(b, p, max) {
                Some((off, end)) if off == o.wrapping_add(n) => {
                    if !fits(h, p, end, off) {
                        break;
                    }
                    if next_base.is_some_and(|nb| off >= nb) {
                        return (p, n, Some((p as u64, off)));
                    }
                    n += 1;
                    p = end;
                }
                _ => break,
            }
        }
        (p, n, None)
    };
    while c < len {
        // The confirmed resync: first consistent entry from e - B whose record is there.
        // The gap is clear when the entries before it sit where a healthy index puts them.
        let mut h = None;
        let mut clear = false;
        if let (Some(ix), Some(k0)) = (ix, e.checked_sub(base)) {
            let mut gap = Vec::new();
            let mut consistent = true;
            let mut k = k0;
            while let Some((o, pos)) = entry(ix, k) {
                if Some(o) != base.checked_add(k) {
                    consistent = false;
                } else if pos > c as u64
                    && pos < len as u64
                    && plausible(o, pos as usize, c, e)
                    && wf(b, pos as usize, max).map(|x| x.0) == Some(o)
                {
                    h = Some((o, pos as usize));
                    gap.push(pos);
                    clear = consistent
                        && gap[0] == if gap.len() == 1 { pos } else { c as u64 }
                        && gap.windows(2).all(|w| w[1] >= w[0].saturating_add(32));
                    break;
                } else {
                    gap.push(pos);
                }
                k += 1;
            }
        }
        if h.is_none() || !clear {
            let limit = h.map_or(len, |x| x.1);
            while h.is_none_or(|(_, ph)| c <= ph) {
                let mut found = None;
                for q in c + 1..limit {
                    let Some((o, end1)) = wf(b, q, max) else {
                        continue;
                    };
                    if !plausible(o, q, c, e) || !fits(h, q, end1, o) {
                        continue;
                    }
                    let confirmed = ix
                        .and_then(|ix| entry(ix, o.checked_sub(base)?))
                        .is_some_and(|x| x == (o, q as u64));
                    let ok = confirmed
                        || end1 == len
                        || wf(b, end1, max).is_some_and(|(o2, end2)| {
                            o2 == o.wrapping_add(1) && fits(h, end1, end2, o2)
                        });
                    if ok {
                        found = Some((q, o, confirmed));
                        break;
                    }
                }
                let Some((q, o, confirmed)) = found else {
                    break;
                };
                let (end, n, cut) = chain(q, o, h);
                if n > 0 {
                    runs.push((q as u64, end as u64, o, n, confirmed));
                }
                if cut.is_some() {
                    return (runs, cut);
                }
                (c, e) = (end, o.wrapping_add(n));
            }
        }
        let Some((oh, ph)) = h else { break };
        if c > ph {
            continue;
        }
        let (end, n, cut) = chain(ph, oh, None);
        if n > 0 {
            runs.push((ph as u64, end as u64, oh, n, true));
        }
        if cut.is_some() {
            return (runs, cut);
        }
        (c, e) = (end, oh.wrapping_add(n));
    }
    (runs, None)
}

// ---------------------------------------------------------------- the engine, as the tests call it

fn engine(
    b: &[u8],
    base: u64,
    max: u64,
    ix: Option<&Vec<u8>>,
    next_base: Option<u64>,
) -> (SegmentScan, Salvage) {
    let opts = ScanOptions::with_max(max);
    let len = b.len() as u64;
    let s = scan_segment(b, len, base, &opts, |_| {}).unwrap();
    let ix = ix.map(|i| (i as &dyn ReadAt, i.len() as u64));
    let v = salvage(b, len, &s, ix, next_base, &opts).unwrap();
    (s, v)
}

fn as_model(v: &Salvage) -> (Vec<MRun>, Option<(u64, u64)>) {
    (
        v.runs
            .iter()
            .map(|r| {
                (
                    r.position,
                    r.end,
                    r.first_offset,
                    r.records,
                    r.confirmed_by_index,
                )
            })
            .collect(),
        v.cut.map(|c| (c.position, c.offset)),
    )
}

/// Every run's own scan re-walks, and its rebuilt indexes are the writer's entries
/// for those records with positions relative to the run.
fn check_run_views(b: &[u8], v: &Salvage) {
    for r in &v.runs {
        let view = r.view(b);
        let again = scan_segment(
            &view,
            r.bytes(),
            r.first_offset,
            &ScanOptions::with_max(u64::MAX),
            |_| {},
        )
        .unwrap();
        assert_eq!(again, r.scan, "a run's scan is the scan of its bytes");
        let (i, t) = rebuild_indexes(&view, &r.scan).unwrap();
        let mut want_i = Vec::new();
        let mut want_t = Vec::new();
        visit_records(&view, &r.scan, 0, r.records, |m| {
            let rec = Record::decode(
                &b[(r.position + m.position) as usize..][..m.encoded_len() as usize],
            )
            .unwrap();
            want_i.extend_from_slice(&index_entry(rec.offset, m.position));
            want_t.extend_from_slice(&timeindex_entry(rec.timestamp, rec.offset));
        })
        .unwrap();
        assert_eq!(i, want_i);
        assert_eq!(t, want_t);
    }
}

/// Every run ends where, and as, the scanner would end the same records: salvage's own
/// copy of the framing rule (`Log::check`) must give the scanner's damage, kind, cause
/// and numbers, for the run's records walked as a segment based at its first offset.
fn check_run_ends(b: &[u8], v: &Salvage, max: u64) {
    let opts = ScanOptions::with_max(max);
    for r in &v.runs {
        let start = WalkStart {
            position: r.position,
            index: 0,
        };
        let w = walk(b, b.len() as u64, r.first_offset, start, &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        match &r.ends_in {
            RunEnd::Damage(d) => {
                assert_eq!(w.damage.as_ref(), Some(d), "run at {}", r.position);
                assert_eq!((w.end, w.visited), (r.end, r.records));
            }
            RunEnd::EndOfFile => {
                assert_eq!(w.damage, None, "run at {}", r.position);
                assert_eq!((w.end, w.visited), (b.len() as u64, r.records));
            }
            // Stopped before a record the scanner takes (rule improvements 2 and 3).
            RunEnd::ConfirmedRecord { .. } | RunEnd::NextSegment => {
                assert!(w.visited > r.records, "run at {}: {w:?}", r.position)
            }
        }
    }
}

// ---------------------------------------------------------------- proptest

#[derive(Debug, Clone)]
enum Fill {
    Zero,
    Random(Vec<u8>),
    Ff,
}

#[derive(Debug, Clone)]
enum Harm {
    /// In place: ranges (start, len) overwritten.
    Ranges(Vec<(prop::sample::Index, usize)>, Fill),
    /// Bytes [a, a + cut) replaced by `insert`.
    Splice(prop::sample::Index, usize, Vec<u8>),
}

#[derive(Debug, Clone)]
enum IndexState {
    Absent,
    Intact,
    Truncated(prop::sample::Index),
    Garbled(prop::sample::Index, Vec<u8>),
}

fn harm() -> impl Strategy<Value = Harm> {
    let fill = prop_oneof![
        Just(Fill::Zero),
        Just(Fill::Ff),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Fill::Random),
    ];
    prop_oneof![
        (
            prop::collection::vec((any::<prop::sample::Index>(), 1usize..600), 1..4),
            fill
        )
            .prop_map(|(r, f)| Harm::Ranges(r, f)),
        (
            any::<prop::sample::Index>(),
            0usize..600,
            prop::collection::vec(any::<u8>(), 0..600)
        )
            .prop_map(|(a, c, i)| Harm::Splice(a, c, i)),
    ]
}

fn index_state() -> impl Strategy<Value = IndexState> {
    prop_oneof![
        1 => Just(IndexState::Absent),
        2 => Just(IndexState::Intact),
        1 => any::<prop::sample::Index>().prop_map(IndexState::Truncated),
        1 => (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..100)
        )
            .prop_map(|(i, v)| IndexState::Garbled(i, v)),
    ]
}

/// The damaged bytes, and a map from each untouched record's original position to its
/// position now, plus the byte where the last damage ends (in the damaged file).
fn apply(w: &SegmentWriter, positions: &[u64], h: &Harm) -> (Vec<u8>, Vec<Option<u64>>, usize) {
    let mut b = w.log.clone();
    let n = b.len();
    let ends: Vec<u64> = positions
        .iter()
        .skip(1)
        .copied()
        .chain([n as u64])
        .collect();
    match h {
        Harm::Ranges(ranges, fill) => {
            let mut touched = vec![false; positions.len()];
            let mut last_end = 0;
            for (i, l) in ranges {
                let a = i.index(n);
                let z = (a + l).min(n);
                for (k, x) in b[a..z].iter_mut().enumerate() {
                    *x = match fill {
                        Fill::Zero => 0,
                        Fill::Ff => 0xFF,
                        Fill::Random(v) => v[k % v.len()] ^ (k as u8).wrapping_mul(151),
                    };
                }
                last_end = last_end.max(z);
                for (r, (&p, &e)) in positions.iter().zip(&ends).enumerate() {
                    if (p as usize) < z && (e as usize) > a {
                        touched[r] = true;
                    }
                }
            }
            let map = positions
                .iter()
                .zip(&touched)
                .map(|(&p, &t)| (!t).then_some(p))
                .collect();
            (b, map, last_end)
        }
        Harm::Splice(a, cut, insert) => {
            let a = a.index(n);
            let z = (a + cut).min(n);
            b.splice(a..z, insert.iter().copied());
            let shift = insert.len() as i64 - (z - a) as i64;
            let map = positions
                .iter()
                .zip(&ends)
                .map(|(&p, &e)| {
                    if (e as usize) <= a {
                        Some(p)
                    } else if (p as usize) >= z {
                        Some((p as i64 + shift) as u64)
                    } else {
                        None
                    }
                })
                .collect();
            (b, map, a + insert.len())
        }
    }
}

fn records() -> impl Strategy<Value = Vec<(i64, Vec<u8>, Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<i64>(),
            prop::collection::vec(any::<u8>(), 0..12),
            prop::collection::vec(any::<u8>(), 0..200),
        ),
        2..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn salvage_agrees_with_the_model_and_the_truth(
        recs in records(),
        base in prop_oneof![Just(0u64), 0u64..1_000_000_000],
        pad in any::<[u8; 4]>(),
        h in harm(),
        ixs in index_state(),
        next in prop::option::of(0u64..80),
        small_max in any::<bool>(),
    ) {
        let w = segment_of(base, pad, &recs);
        let positions: Vec<u64> = (0..recs.len()).map(|k| u64_at(&w.index, k * 16 + 8)).collect();
        let (b, now, damage_end) = apply(&w, &positions, &h);
        let ix: Option<Vec<u8>> = match &ixs {
            IndexState::Absent => None,
            IndexState::Intact => Some(w.index.clone()),
            IndexState::Truncated(i) => Some(w.index[..i.index(w.index.len() + 1)].to_vec()),
            IndexState::Garbled(i, v) => {
                let mut x = w.index.clone();
                let a = i.index(x.len());
                for (k, y) in v.iter().enumerate() {
                    if a + k < x.len() { x[a + k] = *y; }
                }
                Some(x)
            }
        };
        let next_base = next.map(|k| base + k);
        let max = if small_max { 150 } else { 64 << 20 };
        let (s, v) = engine(&b, base, max, ix.as_ref(), next_base);
        let want = model(&b, base, max, ix.as_deref(), next_base);
        prop_assert_eq!(&as_model(&v), &want);
        prop_assert!(v.stopped_at.is_none());
        check_run_views(&b, &v);
        check_run_ends(&b, &v, max);
        for r in &v.runs {
            prop_assert!(r.position >= s.valid_bytes && r.end <= b.len() as u64);
            prop_assert!(r.first_offset >= base + s.records);
            prop_assert!(next_base.is_none_or(|nb| r.last_offset() < nb));
        }
        if small_max || matches!(ixs, IndexState::Garbled(..)) {
            // A lying index may hide records (module docs, "Limits"); the model covers it.
            return Ok(());
        }
        // Ground truth. No fakes: every record salvaged is an original record at its
        // (shifted) position (the garbage here is random, so a fake is vanishingly rare).
        let mut got = BTreeMap::new();
        for r in &v.runs {
            let view = r.view(&b[..]);
            visit_records(&view, &r.scan, 0, r.records, |m| {
                got.insert(m.offset, r.position + m.position);
            }).unwrap();
        }
        for (&o, &p) in &got {
            let k = (o - base) as usize;
            prop_assert!(k < recs.len(), "offset {} is no record", o);
            let orig = positions[k] as usize;
            // The record salvaged at p decodes to the original record with offset o.
            let end = if k + 1 < recs.len() { positions[k + 1] as usize } else { w.log.len() };
            let len = end - orig;
            prop_assert!((p as usize) + len <= b.len());
            let now_rec = Record::decode(&b[p as usize..p as usize + len]);
            let orig_rec = Record::decode(&w.log[orig..end]);
            prop_assert_eq!(now_rec.map(|r| (r.offset, r.key.len(), r.value.len())),
                            orig_rec.map(|r| (r.offset, r.key.len(), r.value.len())));
        }
        // Must come back: the untouched tail after the last damage, from its first record
        // whose offset passes the bound, when the prefix stops before it.
        if s.damage.as_ref().is_some_and(|d| d.kind() != DamageKind::ZeroFill) {
            let e = base + s.records;
            let p = s.valid_bytes;
            let mut tail = Vec::new();
            for k in (0..recs.len()).rev() {
                match now[k] {
                    Some(q) if q as usize >= damage_end => tail.push((base + k as u64, q)),
                    _ => break,
                }
            }
            tail.reverse();
            let must: Vec<_> = tail
                .into_iter()
                .filter(|&(o, q)| q > p && o >= e)
                .skip_while(|&(o, q)| o - e > (q - p) / 32)
                .filter(|&(o, _)| next_base.is_none_or(|nb| o < nb))
                .collect();
            for (o, q) in must {
                prop_assert_eq!(got.get(&o), Some(&q), "record {} at {} must come back: {:?}", o, q, as_model(&v));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_agree(
        b in prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>(), 1 => Just(28u8)], 0..3000),
        ix in prop::option::of(prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..400)),
        base in prop_oneof![Just(0u64), any::<u64>()],
        max in 0u64..100_000,
        next_base in prop::option::of(any::<u64>()),
    ) {
        let (_, v) = engine(&b, base, max, ix.as_ref(), next_base);
        prop_assert_eq!(as_model(&v), model(&b, base, max, ix.as_deref(), next_base));
        check_run_ends(&b, &v, max);
    }
}

/// What follows the last run's records (or replaces part of the last record).
#[derive(Debug, Clone)]
enum Tail {
    /// The file cut inside (or at the start of) the last record.
    Cut(prop::sample::Index),
    /// A bit of the last record's header flipped.
    Flip(prop::sample::Index, u8),
    /// Appended: a size too small for a record, then `n` zeros.
    SmallSize(u8, usize),
    /// Appended bytes (zeros, 0xFF, anything).
    Bytes(Vec<u8>),
}

fn tail() -> impl Strategy<Value = Tail> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Tail::Cut),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Tail::Flip(i, b)),
        (0u8..28, 0usize..40).prop_map(|(s, n)| Tail::SmallSize(s, n)),
        prop::collection::vec(prop_oneof![Just(0u8), Just(0xFF), any::<u8>()], 1..40)
            .prop_map(Tail::Bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The first record's size destroyed, so the rest is salvaged as a run; the run's
    /// end (every kind of damage, and the end of the file) is the scanner's.
    #[test]
    fn a_runs_end_agrees_with_the_scanner(
        recs in records(),
        pad in any::<[u8; 4]>(),
        t in tail(),
        small_max in any::<bool>(),
    ) {
        let w = segment_of(0, pad, &recs);
        let mut b = w.log.clone();
        b[..4].copy_from_slice(&[0xFF; 4]);
        let last = u64_at(&w.index, (recs.len() - 1) * 16 + 8) as usize;
        match &t {
            Tail::Cut(i) => b.truncate(last + i.index(b.len() - last)),
            Tail::Flip(i, bit) => {
                let at = last + i.index((b.len() - last).min(28));
                b[at] ^= 1 << bit;
            }
            Tail::SmallSize(size, n) => {
                b.extend_from_slice(&[0, 0, 0, *size]);
                b.extend(std::iter::repeat_n(0, *n));
            }
            Tail::Bytes(v) => b.extend_from_slice(v),
        }
        let max = if small_max { 150 } else { 64 << 20 };
        let (_, v) = engine(&b, 0, max, None, None);
        prop_assert_eq!(as_model(&v), model(&b, 0, max, None, None));
        check_run_ends(&b, &v, max);
    }
}

// ---------------------------------------------------------------- fixed cases

/// `n` records from `base`, keys `k<i>`, values of 40..140 bytes.
fn seg(base: u64, n: u64) -> SegmentWriter {
    let mut w = SegmentWriter::new(base);
    for i in 0..n {
        let v: Vec<u8> = (0..40 + (i * 37 % 100))
            .map(|j| (j * 7 + i) as u8)
            .collect();
        w.append(1_700_000_000_000 + i as i64, format!("k{i}").as_bytes(), &v);
    }
    w
}

/// Position of record `k` (from the writer's index).
fn pos(w: &SegmentWriter, k: u64) -> usize {
    u64_at(&w.index, k as usize * 16 + 8) as usize
}

fn overwrite(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Runs as (first offset, records, position), after checking the engine against the model.
fn runs_of(b: &[u8], base: u64, ix: Option<&Vec<u8>>, next_base: Option<u64>) -> Salvage {
    let max = 64 << 20;
    let (_, v) = engine(b, base, max, ix, next_base);
    assert_eq!(
        as_model(&v),
        model(b, base, max, ix.map(|x| &x[..]), next_base)
    );
    check_run_views(b, &v);
    v
}

fn shape(v: &Salvage) -> Vec<(u64, u64, u64)> {
    v.runs
        .iter()
        .map(|r| (r.first_offset, r.records, r.position))
        .collect()
}

#[test]
fn garbage_over_one_header_mid_segment() {
    let w = seg(1000, 50);
    let mut b = w.log.clone();
    overwrite(&mut b, pos(&w, 20), &[0xA5; 24]);
    for ix in [None, Some(&w.index)] {
        let v = runs_of(&b, 1000, ix, None);
        assert_eq!(shape(&v), [(1021, 29, pos(&w, 21) as u64)]);
        let r = &v.runs[0];
        assert_eq!(r.ends_in, RunEnd::EndOfFile);
        assert_eq!(r.confirmed_by_index, ix.is_some());
        assert_eq!(r.end, b.len() as u64);
        // The run's rebuilt .timeindex is the original's entries for those records.
        let (_, t) = rebuild_indexes(&r.view(&b), &r.scan).unwrap();
        assert_eq!(t, w.timeindex[21 * INDEX_ENTRY_LEN as usize..]);
        assert!(v.cut.is_none());
    }
}

#[test]
fn a_zeroed_4k_block_mid_segment() {
    let w = seg(0, 400);
    let mut b = w.log.clone();
    let (a, z) = (8192, 8192 + 4096);
    b[a..z].fill(0);
    let first_after = (0..400).find(|&k| pos(&w, k) >= z).unwrap();
    for ix in [None, Some(&w.index)] {
        let (s, v) = engine(&b, 0, 64 << 20, ix, None);
        // The prefix ends at the first record whose framing the zeros hit (a record
        // whose value alone is zeroed still reads as valid: there is no checksum).
        let damaged = s.records;
        assert!(pos(&w, damaged + 1) > a && pos(&w, damaged) < z);
        assert_eq!(
            shape(&runs_of(&b, 0, ix, None)),
            [(first_after, 400 - first_after, pos(&w, first_after) as u64)]
        );
        assert_eq!(v.records() + s.records, 400 - (first_after - damaged));
    }
}

#[test]
fn two_damaged_ranges_in_one_segment() {
    let w = seg(7, 50);
    let mut b = w.log.clone();
    overwrite(&mut b, pos(&w, 10), &[0xFF; 8]);
    overwrite(&mut b, pos(&w, 30) + 4, &[0x11; 8]); // an offset field: offset-mismatch
    for ix in [None, Some(&w.index)] {
        let v = runs_of(&b, 7, ix, None);
        assert_eq!(
            shape(&v),
            [(18, 19, pos(&w, 11) as u64), (38, 19, pos(&w, 31) as u64)]
        );
        match &v.runs[0].ends_in {
            RunEnd::Damage(d) => {
                assert_eq!(d.position, pos(&w, 30) as u64);
                assert_eq!(d.kind(), DamageKind::OffsetMismatch);
                assert_eq!(d.record, 19);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A salvaged run ends at each kind of damage exactly as the scanner would end there
/// (salvage checks a run's records with its own copy of the framing rule): each tail
/// below follows a run, after damage that ended the segment's valid prefix.
#[test]
fn a_run_ends_at_each_damage_as_the_scanner_does() {
    let w = seg(0, 10);
    let mut b = w.log.clone();
    overwrite(&mut b, pos(&w, 2), &[0xFF; 8]);
    let run_end = b.len() as u64;
    let next = |offset: u64| encoded(offset, b"after");
    let rec = next(10);
    let with = |at: usize, bytes: &[u8]| {
        let mut r = rec.clone();
        overwrite(&mut r, at, bytes);
        r
    };
    let cases: Vec<(&str, Vec<u8>, Damage)> = vec![
        ("3 bytes", vec![0, 0, 1], Damage::FewBytesLeft { remain: 3 }),
        ("zeros", vec![0; 40], Damage::ZeroFill { bytes: 40 }),
        (
            "a small size, then zeros",
            [&[0, 0, 0, 5][..], &[0; 36]].concat(),
            Damage::SizeTooSmall { size: 5 },
        ),
        (
            "a small size, the end",
            vec![0, 0, 0, 27],
            Damage::SizeTooSmall { size: 27 },
        ),
        (
            "zeros, then a byte",
            [&[0; 30][..], &[1]].concat(),
            Damage::SizeTooSmall { size: 0 },
        ),
        (
            "a size above the maximum",
            with(0, &(1u32 << 30).to_be_bytes()),
            Damage::SizeTooLarge {
                size: 1 << 30,
                max: 64 << 20,
            },
        ),
        (
            "a torn record",
            rec[..rec.len() - 1].to_vec(),
            Damage::Torn {
                total: rec.len() as u64,
                end: run_end + rec.len() as u64,
                file_len: run_end + rec.len() as u64 - 1,
            },
        ),
        (
            "a key longer than the record",
            with(20, &1000u32.to_be_bytes()),
            Damage::KeyTooLong {
                key_len: 1000,
                size: rec.len() as u64 - 4,
            },
        ),
        (
            "lengths that disagree",
            with(28, &6u32.to_be_bytes()),
            Damage::LengthsDisagree {
                key_len: 4,
                value_len: 6,
                size: rec.len() as u64 - 4,
            },
        ),
        (
            "the wrong offset",
            next(11),
            Damage::OffsetMismatch {
                found: 11,
                expected: 10,
                base: 3,
                index: 7,
            },
        ),
    ];
    for (what, tail, want) in cases {
        let mut b = b.clone();
        b.extend_from_slice(&tail);
        let v = runs_of(&b, 0, None, None);
        check_run_ends(&b, &v, 64 << 20);
        assert_eq!(shape(&v), [(3, 7, pos(&w, 3) as u64)], "{what}");
        assert_eq!(
            v.runs[0].ends_in,
            RunEnd::Damage(recoverfs::engine::scan::SegmentDamage {
                position: run_end,
                record: 7,
                cause: want,
            }),
            "{what}"
        );
    }
}

/// One record's bytes as Takhin writes them.
fn encoded(offset: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Record {
        offset,
        timestamp: 1,
        key: b"fake".to_vec(),
        value: value.to_vec(),
    }
    .encode_into(&mut out, [0; 4]);
    out
}

/// What the bound guarantees: a record hidden in a value (an application that stores
/// Takhin records, a re-encoded copy, ...) is found by the byte search whenever it is
/// well-formed, but it is taken only if its offset could belong to the damaged bytes
/// (at most one offset per 32 of them) and its chain is long enough, so it can never
/// claim offsets far ahead or a later segment's. What it can't: two chained records
/// with plausible offsets inside a value look exactly like real ones (no checksum);
/// only a healthy index tells them apart (see the next test).
#[test]
fn a_record_inside_a_value_does_not_make_a_false_run() {
    let base = 500;
    // Record 10's value holds: a record with an offset far past the bound, then two
    // chained records past the bound, then one record with a plausible offset alone.
    let mut value = Vec::new();
    value.extend(encoded(base + 10 + 1000, b"far"));
    value.extend(encoded(base + 10 + 2000, b"chained"));
    value.extend(encoded(base + 10 + 2001, b"chained"));
    value.extend(encoded(base + 10, b"plausible but alone"));
    value.extend(b"tail");
    let mut w = SegmentWriter::new(base);
    for i in 0..30u64 {
        let v = if i == 10 {
            value.clone()
        } else {
            vec![i as u8; 50]
        };
        w.append(i as i64, b"k", &v);
    }
    let mut b = w.log.clone();
    overwrite(&mut b, pos(&w, 10), &[0xEE; 4]);
    for ix in [None, Some(&w.index)] {
        let v = runs_of(&b, base, ix, None);
        assert_eq!(shape(&v), [(base + 11, 19, pos(&w, 11) as u64)]);
    }

    // The limit: two chained records with plausible offsets inside the value are
    // taken without an index; a healthy index vouches for the gap and rejects them.
    let mut value = encoded(base + 10, b"fake one");
    value.extend(encoded(base + 11, b"fake two"));
    value.extend(b"padding so the fakes end mid-value");
    let mut w = SegmentWriter::new(base);
    for i in 0..30u64 {
        let v = if i == 10 {
            value.clone()
        } else {
            vec![i as u8; 50]
        };
        w.append(i as i64, b"k", &v);
    }
    let mut b = w.log.clone();
    overwrite(&mut b, pos(&w, 10), &[0xEE; 4]);
    let fake_at = (pos(&w, 10) + 24 + 1 + 4) as u64;
    let v = runs_of(&b, base, None, None);
    assert_eq!(
        shape(&v),
        [(base + 10, 2, fake_at), (base + 12, 18, pos(&w, 12) as u64)],
        "without an index the fakes are indistinguishable (and cost record 11)"
    );
    let v = runs_of(&b, base, Some(&w.index), None);
    assert_eq!(shape(&v), [(base + 11, 19, pos(&w, 11) as u64)]);
    assert!(v.runs[0].confirmed_by_index);
}

/// A damaged region that holds well-formed records (an old copy of the log written
/// over it, say) with plausible offsets: the index confirms the real resync, vouches
/// for the gap, and the look-alikes are not taken. With the index damaged around the
/// gap, the byte search runs, but what it finds yields to the confirmed record.
#[test]
fn index_confirmed_resync_beats_lookalikes() {
    let base = 40;
    let w = seg(base, 40);
    let mut b = w.log.clone();
    // Records 10..=13 overwritten by look-alikes with offsets 50, 51, 52 (chained,
    // shorter than the originals) and garbage up to record 14.
    let (a, z) = (pos(&w, 10), pos(&w, 14));
    let mut fake = Vec::new();
    for o in 50..53 {
        fake.extend(encoded(o, b"old"));
    }
    assert!(fake.len() < z - a);
    b[a..z].fill(0x5A);
    overwrite(&mut b, a + 3, &fake);
    let v = runs_of(&b, base, None, None);
    assert_eq!(
        shape(&v)[0],
        (50, 3, (a + 3) as u64),
        "look-alikes win without an index"
    );
    let v = runs_of(&b, base, Some(&w.index), None);
    assert_eq!(shape(&v), [(54, 26, z as u64)]);
    assert!(v.runs[0].confirmed_by_index);

    // The entries of the gap damaged: the byte search runs; the look-alikes end before
    // the confirmed record and hold smaller offsets, so they are kept (the format can't
    // tell), but they never displace it.
    let mut ix = w.index.clone();
    ix[10 * 16..14 * 16].fill(0xCC);
    let v = runs_of(&b, base, Some(&ix), None);
    assert_eq!(shape(&v), [(50, 3, (a + 3) as u64), (54, 26, z as u64)]);
    assert!(!v.runs[0].confirmed_by_index && v.runs[1].confirmed_by_index);
}

#[test]
fn a_run_reaching_the_next_segment_is_cut_there() {
    let w = seg(100, 50);
    let mut b = w.log.clone();
    overwrite(&mut b, pos(&w, 10), &[0xA5; 24]);
    for ix in [None, Some(&w.index)] {
        let v = runs_of(&b, 100, ix, Some(130));
        assert_eq!(shape(&v), [(111, 19, pos(&w, 11) as u64)]);
        assert_eq!(v.runs[0].ends_in, RunEnd::NextSegment);
        assert_eq!(v.runs[0].end, pos(&w, 30) as u64);
        let cut = v.cut.unwrap();
        assert_eq!(
            (cut.position, cut.offset, cut.next_base),
            (pos(&w, 30) as u64, 130, 130)
        );
        // A next segment that starts before the run: nothing is shown, the cut is reported.
        let v = runs_of(&b, 100, ix, Some(105));
        assert!(v.runs.is_empty());
        assert_eq!(v.cut.map(|c| c.offset), Some(111));
    }
}

#[test]
fn clean_and_tail_damage_salvage_nothing() {
    let w = seg(0, 20);
    assert!(runs_of(&w.log, 0, Some(&w.index), None).runs.is_empty());
    let mut z = w.log.clone();
    z.extend([0; 5000]);
    assert!(runs_of(&z, 0, Some(&w.index), None).runs.is_empty());
    let torn = &w.log[..w.log.len() - 3];
    assert!(runs_of(torn, 0, Some(&w.index), None).runs.is_empty());
    // A lone intact record between two damaged ones comes back only when the index confirms it.
    let mut b = w.log.clone();
    overwrite(&mut b, pos(&w, 5), &[0xFF; 4]);
    overwrite(&mut b, pos(&w, 7), &[0xFF; 4]);
    assert_eq!(
        shape(&runs_of(&b, 0, None, None)),
        [(8, 12, pos(&w, 8) as u64)]
    );
    assert_eq!(
        shape(&runs_of(&b, 0, Some(&w.index), None)),
        [(6, 1, pos(&w, 6) as u64), (8, 12, pos(&w, 8) as u64)]
    );
}

// ---------------------------------------------------------------- the real Takhin fixtures

#[derive(serde::Deserialize)]
struct Expected {
    offset: u64,
    timestamp: i64,
    key: String,
}

#[test]
fn fixture_segments_damaged_mid_segment_salvage_exactly_the_records_after() {
    let root = fixtures();
    let mut checked = 0;
    let src = recoverfs::engine::source::Source::open(&root.join("data")).unwrap();
    for log in discover(&std::sync::Arc::new(src)).logs {
        let rel = log.rel.to_str().unwrap().to_string();
        let expected: Vec<Expected> =
            fs::read_to_string(root.join(format!("expected/data/{rel}.records.jsonl")))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        let dir = root.join("data").join(&rel);
        let bases: Vec<u64> = log.segments.iter().map(|s| s.base).collect();
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let read = |ext| fs::read(dir.join(format!("{base:020}.{ext}"))).unwrap();
            let (clean, index) = (read("log"), read("index"));
            let n = (index.len() / 16) as u64;
            if n < 3 {
                continue;
            }
            for (victim, harm) in [(n / 2, 0u8), (1, 0xFF), (n - 2, 0x7F)] {
                let at = u64_at(&index, victim as usize * 16 + 8) as usize;
                let mut b = clean.clone();
                overwrite(&mut b, at, &[harm; 13]);
                for ix in [None, Some(&index)] {
                    let v = runs_of(&b, base, ix, next_base);
                    let mut got = Vec::new();
                    for r in &v.runs {
                        let view = r.view(&b[..]);
                        visit_records(&view, &r.scan, 0, r.records, |m| {
                            let rec = Record::decode(
                                &b[(r.position + m.position) as usize..]
                                    [..m.encoded_len() as usize],
                            )
                            .unwrap();
                            got.push((m.offset, m.timestamp, hex(&rec.key)));
                        })
                        .unwrap();
                    }
                    let want: Vec<_> = expected
                        .iter()
                        .filter(|x| x.offset > base + victim && x.offset < base + n)
                        .map(|x| (x.offset, x.timestamp, x.key.clone()))
                        .collect();
                    assert_eq!(got, want, "{rel} segment {base} record {victim} damaged");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 50, "{checked}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------- benchmark sanity (ignored)

/// Salvage of a large segment damaged at byte 100, with and without its `.index`,
/// against a plain scan of the clean segment. The damage is overlaid on the file by a
/// `ReadAt` wrapper, so nothing large is copied or written.
///
/// ```text
/// recoverfs synth /var/tmp/rfs-salvage --partitions 1 --segment-mb 1024
/// RECOVERFS_SALVAGE_LOG=/var/tmp/rfs-salvage/topic-0/partition-0/00000000000000000000.log \
///   cargo test --release --test suite -- --ignored --nocapture salvage_model::bench
/// ```
#[test]
#[ignore]
fn bench_salvage_vs_clean_scan() {
    use std::time::Instant;
    struct Overlay<'a> {
        f: &'a fs::File,
        at: u64,
        bytes: Vec<u8>,
    }
    impl ReadAt for Overlay<'_> {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
            let n = ReadAt::read_at(self.f, buf, pos)?;
            let end = self.at + self.bytes.len() as u64;
            let (a, z) = (self.at.max(pos), end.min(pos + n as u64));
            if a < z {
                buf[(a - pos) as usize..(z - pos) as usize]
                    .copy_from_slice(&self.bytes[(a - self.at) as usize..(z - self.at) as usize]);
            }
            Ok(n)
        }
    }
    let path = std::path::PathBuf::from(std::env::var("RECOVERFS_SALVAGE_LOG").unwrap());
    let f = fs::File::open(&path).unwrap();
    let ixf = fs::File::open(path.with_extension("index")).unwrap();
    let len = f.metadata().unwrap().len();
    let ilen = ixf.metadata().unwrap().len();
    let opts = ScanOptions::default();
    let time = |label: &str, run: &mut dyn FnMut() -> u64| {
        let mut best = f64::MAX;
        let mut out = 0;
        for _ in 0..3 {
            let t = Instant::now();
            out = run();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{label}: {best:.3} s (best of 3), {out} records");
        best
    };
    let clean = time("clean scan", &mut || {
        scan_segment(&f, len, 0, &opts, |_| {}).unwrap().records
    });
    let damaged = Overlay {
        f: &f,
        at: 100,
        bytes: vec![0xA5; 200],
    };
    let s = scan_segment(&damaged, len, 0, &opts, |_| {}).unwrap();
    println!(
        "damaged prefix: {} records, damage {:?}",
        s.records, s.damage
    );
    let without = time("salvage without .index", &mut || {
        salvage(&damaged, len, &s, None, None, &opts)
            .unwrap()
            .records()
    });
    let with = time("salvage with .index", &mut || {
        salvage(&damaged, len, &s, Some((&ixf, ilen)), None, &opts)
            .unwrap()
            .records()
    });
    println!(
        "ratio to the clean scan: without index {:.2}x, with index {:.2}x",
        without / clean,
        with / clean
    );

    // Linearity: 256 MiB of pseudo-random garbage from byte 100, then the rest intact.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..256u64 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let damaged = Overlay {
        f: &f,
        at: 100,
        bytes: garbage,
    };
    let s = scan_segment(&damaged, len, 0, &opts, |_| {}).unwrap();
    let without = time("256 MiB garbage: salvage without .index", &mut || {
        salvage(&damaged, len, &s, None, None, &opts)
            .unwrap()
            .records()
    });
    let with = time("256 MiB garbage: salvage with .index", &mut || {
        salvage(&damaged, len, &s, Some((&ixf, ilen)), None, &opts)
            .unwrap()
            .records()
    });
    println!(
        "ratio to the clean scan: without index {:.2}x, with index {:.2}x",
        without / clean,
        with / clean
    );
}

/// Memory stays bounded on a file crafted as a great many tiny runs: the search stops
/// at `MAX_RUNS` and says where.
#[test]
fn the_number_of_runs_is_capped() {
    use recoverfs::engine::salvage::MAX_RUNS;
    let mut w = SegmentWriter::new(0);
    let mut b = Vec::new();
    let runs = MAX_RUNS as u64 + 10;
    for _ in 0..=runs {
        // Two minimal records, then 4 bytes that break the chain.
        w.log.clear();
        w.append(0, b"", b"");
        w.append(0, b"", b"");
        b.extend_from_slice(&w.log);
        b.extend_from_slice(&[0xFF; 4]);
    }
    let (s, v) = engine(&b, 0, 64 << 20, None, None);
    assert_eq!(s.records, 2);
    assert_eq!(v.runs.len(), MAX_RUNS);
    assert!(v.runs.iter().all(|r| r.records == 2));
    assert_eq!(v.stopped_at, Some(v.runs.last().unwrap().end));
    let (want, _) = model(&b, 0, 64 << 20, None, None);
    assert_eq!(as_model(&v).0, want[..MAX_RUNS]);
}
