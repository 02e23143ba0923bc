//! Property tests: the scanner agrees with a small independent model on mutated and arbitrary segments, and never panics.

use crate::common;

use common::segment_of;
use proptest::prelude::*;
use recoverfs::engine::index::{read_rebuilt_index, IndexComparer, IndexKind};
use recoverfs::engine::scan::{scan_segment, DamageKind, ScanOptions};

/// The README's "Damage kinds" table, written as plainly as possible over a byte slice:
/// (valid bytes, records, damage kind).
fn model(b: &[u8], base: u64, max: u64) -> (usize, u64, Option<DamageKind>) {
    let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64;
    let mut p = 0usize;
    let mut n = 0u64;
    while p < b.len() {
        let bad = |k| (p, n, Some(k));
        if b.len() - p < 4 {
            return bad(DamageKind::IncompleteRecord);
        }
        let size = u32_at(p);
        if size < 28 && b[p..].iter().all(|&x| x == 0) {
            return bad(DamageKind::ZeroFill);
        }
        if size < 28 || size > max {
            return bad(DamageKind::BadSize);
        }
        if (p as u64) + 4 + size > b.len() as u64 {
            return bad(DamageKind::IncompleteRecord);
        }
        let key_len = u32_at(p + 20);
        if 28 + key_len > size {
            return bad(DamageKind::BadLengths);
        }
        let value_len = u32_at(p + 24 + key_len as usize);
        if 28 + key_len + value_len != size {
            return bad(DamageKind::BadLengths);
        }
        let offset = u64::from_be_bytes(b[p + 4..p + 12].try_into().unwrap());
        // Takhin offsets are signed 64-bit: none past i64::MAX is valid.
        match base.checked_add(n) {
            Some(e) if e <= i64::MAX as u64 && offset == e => {}
            _ => return bad(DamageKind::OffsetMismatch),
        }
        p += 4 + size as usize;
        n += 1;
    }
    (p, n, None)
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Cut(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Splice(prop::sample::Index, Vec<u8>),
    ZeroTail(usize),
    Overwrite(prop::sample::Index, Vec<u8>),
    /// After the last record: a size field too small for a record (1..=27) followed by
    /// `n` zeros. Not a zero-filled tail (the size is not zero): bad-size.
    SmallSizeThenZeros(u8, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::None),
        any::<prop::sample::Index>().prop_map(Mutation::Cut),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..40)
        )
            .prop_map(|(i, v)| Mutation::Splice(i, v)),
        (1usize..5000).prop_map(Mutation::ZeroTail),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(prop_oneof![Just(0u8), Just(0xFF), any::<u8>()], 1..12)
        )
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
        (1u8..28, 0usize..64).prop_map(|(size, n)| Mutation::SmallSizeThenZeros(size, n)),
    ]
}

fn apply(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    // Appended even to an empty segment: then the small size is its first field.
    if let Mutation::SmallSizeThenZeros(size, n) = m {
        b.extend_from_slice(&[0, 0, 0, *size]);
        b.extend(std::iter::repeat_n(0, *n));
        return b;
    }
    if b.is_empty() {
        return b;
    }
    match m {
        Mutation::None => {}
        Mutation::Cut(i) => b.truncate(i.index(b.len())),
        Mutation::Flip(i, bit) => {
            let at = i.index(b.len());
            b[at] ^= 1 << bit;
        }
        Mutation::Splice(i, v) => {
            let at = i.index(b.len());
            b.splice(at..at, v.iter().copied());
        }
        Mutation::ZeroTail(n) => b.extend(std::iter::repeat_n(0, *n)),
        Mutation::SmallSizeThenZeros(..) => unreachable!("applied above"),
        Mutation::Overwrite(i, v) => {
            let at = i.index(b.len());
            for (k, x) in v.iter().enumerate() {
                if at + k < b.len() {
                    b[at + k] = *x;
                }
            }
        }
    }
    b
}

fn records() -> impl Strategy<Value = Vec<(i64, Vec<u8>, Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<i64>(),
            prop::collection::vec(any::<u8>(), 0..12),
            prop::collection::vec(any::<u8>(), 0..200),
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn scanner_agrees_with_the_model(
        recs in records(),
        base in prop_oneof![Just(0u64), 0u64..1_000_000_000, Just(i64::MAX as u64 - 3), Just(u64::MAX - 3)],
        m in mutation(),
        max in prop_oneof![Just(64u64 << 20), 28u64..300],
        pad in any::<[u8; 4]>(),
    ) {
        let w = segment_of(base, pad, &recs);
        let b = apply(w.log.clone(), &m);
        let opts = ScanOptions::with_max(max);
        let s = scan_segment(&b, b.len() as u64, base, &opts, |_| {}).unwrap();
        let (valid, n, kind) = model(&b, base, max);
        prop_assert_eq!(s.valid_bytes, valid as u64);
        prop_assert_eq!(s.records, n);
        prop_assert_eq!(s.damage.as_ref().map(|d| d.kind()), kind);
        prop_assert_eq!(s.damage.as_ref().map(|d| d.position), kind.map(|_| valid as u64));
        // The rebuilt index of the prefix is the writer's, entry for entry.
        let entries = (n * 16) as usize;
        // Every record written is valid when none is past the largest offset.
        let in_range = (recs.len() as u64).checked_sub(1).is_none_or(|k| {
            base.checked_add(k).is_some_and(|o| o <= i64::MAX as u64)
        });
        if matches!(m, Mutation::None | Mutation::ZeroTail(_)) && max >= 64 << 20 && in_range {
            prop_assert_eq!(n as usize, recs.len());
            let idx = read_rebuilt_index(&b, &s, IndexKind::Offset, 0, u64::MAX).unwrap();
            prop_assert_eq!(&idx[..], &w.index[..entries]);
            let tidx = read_rebuilt_index(&b, &s, IndexKind::Time, 0, u64::MAX).unwrap();
            prop_assert_eq!(&tidx[..], &w.timeindex[..entries]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_agree(b in prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..3000), base in any::<u64>(), max in 0u64..100_000) {
        let opts = ScanOptions::with_max(max);
        let s = scan_segment(&b, b.len() as u64, base, &opts, |_| {}).unwrap();
        let (valid, n, kind) = model(&b, base, max);
        prop_assert_eq!((s.valid_bytes, s.records, s.damage.map(|d| d.kind())), (valid as u64, n, kind));
    }

    #[test]
    fn arbitrary_index_files_never_panic(recs in records(), orig in prop::collection::vec(any::<u8>(), 0..700), pos in 0u64..1000, len in 0u64..1000) {
        let w = segment_of(7, [0; 4], &recs);
        let mut c = IndexComparer::new(IndexKind::Offset, &orig, orig.len() as u64);
        let s = scan_segment(&w.log, w.log.len() as u64, 7, &ScanOptions::default(), |m| c.push(m)).unwrap();
        let v = c.finish(s.records);
        prop_assert_eq!(v.is_match(), orig == w.index);
        let part = read_rebuilt_index(&w.log, &s, IndexKind::Time, pos, len).unwrap();
        let end = (pos + len).min(w.timeindex.len() as u64);
        let want = if pos < end { &w.timeindex[pos as usize..end as usize] } else { &[][..] };
        prop_assert_eq!(&part[..], want);
    }
}
