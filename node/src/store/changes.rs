//! The change sequence of each replication scope, packed: one row holds the entries of up
//! to [`ROW_ENTRIES`] consecutive sequence numbers (`item-seq-3`, see `tables.rs`).
//!
//! One row per entry (`item-seq-2`) was a B-tree insert of some 100 bytes per event: a
//! head office's first sync of 10,000 cylinders (215,000 events) with those inserts left
//! out took its writer 3.6–3.9 s instead of 4.5–5.2 s. A received batch of 4,096 events
//! now writes four rows.

use redb::{ReadableTable, Table};

use super::StoreError;

/// Entries per row at most: a reader starting in the middle of a row reads the whole row
/// and copies the rest of it (a row is at most 60 KiB: the events scope's entries are
/// 60-byte log keys).
pub(crate) const ROW_ENTRIES: usize = 1024;

/// A row's value: the width of its entries, then the entries.
fn parse(value: &[u8]) -> Result<(usize, &[u8]), StoreError> {
    match value.split_first() {
        Some((&w, entries)) if w > 0 && entries.len() % w as usize == 0 && !entries.is_empty() => {
            Ok((w as usize, entries))
        }
        _ => Err(StoreError::Corrupt(format!("change sequence row of {} bytes is malformed", value.len()))),
    }
}

/// The last sequence number of `scope` (0: nothing added yet).
pub(crate) fn last(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    scope: &str,
) -> Result<u64, StoreError> {
    let Some(row) = table.range((scope, 0)..=(scope, u64::MAX))?.next_back() else { return Ok(0) };
    let (k, v) = row?;
    let (width, entries) = parse(v.value())?;
    Ok(k.value().1 + (entries.len() / width) as u64 - 1)
}

/// Adds `entries` (all of one width, at most 255 bytes) after the last of `scope`; says
/// the sequence numbers they got, `None` for no entries.
pub(crate) fn append<'e>(
    table: &mut Table<(&'static str, u64), &'static [u8]>,
    scope: &str,
    entries: impl IntoIterator<Item = &'e [u8]>,
) -> Result<Option<(u64, u64)>, StoreError> {
    let first = last(table, scope)? + 1;
    let mut next = first;
    let mut row: Vec<&[u8]> = Vec::new();
    for entry in entries {
        row.push(entry);
        if row.len() == ROW_ENTRIES {
            put_row(table, scope, next, &row)?;
            next += row.len() as u64;
            row.clear();
        }
    }
    if !row.is_empty() {
        put_row(table, scope, next, &row)?;
        next += row.len() as u64;
    }
    Ok((next > first).then_some((first, next - 1)))
}

/// Writes `entries` (all of one width, at most 255 bytes) as the row of `scope` whose
/// first entry is numbered `first`.
pub(crate) fn put_row(
    table: &mut Table<(&'static str, u64), &'static [u8]>,
    scope: &str,
    first: u64,
    entries: &[impl AsRef<[u8]>],
) -> Result<(), StoreError> {
    let width = entries.first().map_or(0, |e| e.as_ref().len());
    let width_byte = u8::try_from(width).ok().filter(|w| *w > 0);
    let mut value = Vec::with_capacity(1 + width * entries.len());
    value.push(width_byte.ok_or_else(|| StoreError::Invalid(format!("a change of {width} bytes")))?);
    for e in entries {
        let e = e.as_ref();
        if e.len() != width {
            return Err(StoreError::Invalid(format!("changes of {width} and {} bytes in one row", e.len())));
        }
        value.extend_from_slice(e);
    }
    table.insert((scope, first), value.as_slice())?;
    Ok(())
}

/// The entries of `scope` numbered `lo..=hi`, in order, as (sequence, entry).
pub(crate) fn entries<'t>(
    table: &'t impl ReadableTable<(&'static str, u64), &'static [u8]>,
    scope: &str,
    lo: u64,
    hi: u64,
) -> Result<Entries<'t>, StoreError> {
    // The row holding `lo` starts at or before it.
    let start = match table.range((scope, 0)..=(scope, lo))?.next_back() {
        Some(row) => row?.0.value().1,
        None => lo,
    };
    let rows = table.range((scope, start)..=(scope, hi.max(start)))?;
    Ok(Entries { rows, row: Vec::new(), width: 1, seq: 0, at: 0, lo, hi })
}

/// See [`entries`].
pub(crate) struct Entries<'t> {
    rows: redb::Range<'t, (&'static str, u64), &'static [u8]>,
    /// The current row's entries.
    row: Vec<u8>,
    width: usize,
    /// The sequence number of the entry at `at`.
    seq: u64,
    at: usize,
    lo: u64,
    hi: u64,
}

impl Iterator for Entries<'_> {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.at < self.row.len() {
                if self.seq > self.hi {
                    return None;
                }
                let entry = self.row[self.at..self.at + self.width].to_vec();
                let seq = self.seq;
                self.at += self.width;
                self.seq += 1;
                return Some(Ok((seq, entry)));
            }
            let (k, v) = match self.rows.next()? {
                Ok(row) => row,
                Err(e) => return Some(Err(e.into())),
            };
            let first = k.value().1;
            let (width, entries) = match parse(v.value()) {
                Ok(parsed) => parsed,
                Err(e) => return Some(Err(e)),
            };
            // Entries before `lo` (in the row holding it) are skipped, not copied.
            let skip = self.lo.saturating_sub(first).min((entries.len() / width) as u64) as usize;
            self.row.clear();
            self.row.extend_from_slice(&entries[skip * width..]);
            self.width = width;
            self.seq = first + skip as u64;
            self.at = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::CHANGES_TABLE;

    fn with_table<T>(f: impl FnOnce(&mut Table<(&'static str, u64), &'static [u8]>) -> T) -> T {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let tx = db.begin_write().unwrap();
        let out = f(&mut tx.open_table(CHANGES_TABLE).unwrap());
        tx.commit().unwrap();
        out
    }

    fn entry(scope: u8, seq: u64) -> [u8; 9] {
        let mut e = [scope; 9];
        e[1..].copy_from_slice(&seq.to_be_bytes());
        e
    }

    #[test]
    fn entries_read_back_by_number_across_rows_and_scopes() {
        with_table(|t| {
            assert_eq!(last(t, "a").unwrap(), 0);
            assert_eq!(append(t, "a", std::iter::empty()).unwrap(), None);
            // Appends of 1, ROW_ENTRIES + 5 and 3 entries, another scope's in between.
            let mut n = 0u64;
            for size in [1, ROW_ENTRIES as u64 + 5, 3] {
                let batch: Vec<[u8; 9]> = (n + 1..=n + size).map(|s| entry(b'a', s)).collect();
                let got = append(t, "a", batch.iter().map(|e| e.as_slice())).unwrap();
                assert_eq!(got, Some((n + 1, n + size)));
                n += size;
                let other = [entry(b'b', 1)];
                append(t, "b", other.iter().map(|e| e.as_slice())).unwrap();
            }
            assert_eq!(last(t, "a").unwrap(), n);
            assert_eq!(last(t, "b").unwrap(), 3);
            // Every window, including ones starting or ending inside a row.
            for (lo, hi) in [(1, n), (2, 2), (1, 1), (1000, 1030), (1024, 1026), (1030, n + 10), (n + 1, n + 5), (5, 3)]
            {
                let got: Vec<(u64, Vec<u8>)> = entries(t, "a", lo, hi).unwrap().map(Result::unwrap).collect();
                let want: Vec<(u64, Vec<u8>)> = (lo..=hi.min(n)).map(|s| (s, entry(b'a', s).to_vec())).collect();
                assert_eq!(got, want, "{lo}..={hi}");
            }
            let b: Vec<u64> = entries(t, "b", 1, u64::MAX).unwrap().map(|e| e.unwrap().0).collect();
            assert_eq!(b, [1, 2, 3]);
        });
    }

    #[test]
    fn an_append_of_mixed_widths_or_empty_entries_is_refused_and_a_bad_row_is_an_error() {
        with_table(|t| {
            let mixed: [&[u8]; 2] = [b"abc", b"de"];
            assert!(matches!(append(t, "a", mixed), Err(StoreError::Invalid(_))));
            let empty: [&[u8]; 1] = [b""];
            assert!(matches!(append(t, "a", empty), Err(StoreError::Invalid(_))));
            t.insert(("c", 1), [3u8, 1, 2].as_slice()).unwrap();
            assert!(matches!(last(t, "c"), Err(StoreError::Corrupt(_))));
            assert!(entries(t, "c", 1, 5).unwrap().any(|e| matches!(e, Err(StoreError::Corrupt(_)))));
        });
    }
}
