//! Reconciliation properties: two random sets end as their union having moved exactly
//! their symmetric difference; a link that drops, duplicates and reorders frames still
//! converges; refused items are not stored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::fingerprint::Summary;
use crate::store::{Infallible, MemStore, PutOutcome};

const SCOPE: &[u8] = b"3701020001";

/// Items are their own content; the id is its SHA-256. Content starting with 0xEE is
/// refused (a stand-in for a bad signature).
fn check(_scope: &[u8], bytes: &[u8]) -> Result<Id, String> {
    if bytes.first() == Some(&0xEE) {
        return Err("refused: bad signature".into());
    }
    Ok(Sha256::digest(bytes).into())
}

fn store_of(items: &BTreeSet<u32>) -> MemStore {
    let mut s = MemStore::new(check);
    for i in items {
        let mut bytes = vec![0x01];
        bytes.extend_from_slice(&i.to_le_bytes());
        s.insert(SCOPE, check(SCOPE, &bytes).unwrap(), bytes);
    }
    s
}

/// Small enough that frames are cut by bytes as well as by count.
const FRAME_BYTES: usize = 200;

fn opts(initiator: bool) -> SessionOptions {
    SessionOptions {
        initiator,
        scopes: vec![SCOPE.to_vec()],
        id_list_max: 16,
        items_per_frame: 32,
        frame_bytes_max: FRAME_BYTES,
        ids_per_frame: 64,
        retry_ms: 1_000,
        checkpoints: BTreeMap::new(),
        hold_items_below: 0,
        hold_quiet_ms: 0,
        hold_max_ms: 0,
        mark_bytes: 0,
    }
}

/// A link with faults drawn from a seeded generator.
struct Link {
    queue: VecDeque<Frame>,
    drop_pct: u64,
    dup_pct: u64,
    reorder_pct: u64,
    rng: u64,
    /// Kinds of the frames sent, in order.
    kinds: Vec<&'static str>,
}

impl Link {
    fn new(seed: u64, drop_pct: u64, dup_pct: u64, reorder_pct: u64) -> Link {
        Link { queue: VecDeque::new(), drop_pct, dup_pct, reorder_pct, rng: seed | 1, kinds: Vec::new() }
    }

    fn roll(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 100
    }

    fn send(&mut self, f: Frame) {
        // Every frame goes through its encoding, as on the wire.
        let bytes = f.encode();
        let f = Frame::decode(&bytes[4..]).expect("our own frames decode");
        if let Frame::Items { items, .. } = &f {
            let total: usize = items.iter().map(Vec::len).sum();
            assert!(items.len() == 1 || total <= FRAME_BYTES, "{} items, {total} bytes", items.len());
        }
        self.kinds.push(match &f {
            Frame::Fingerprint { .. } => "fingerprint",
            Frame::InSync { .. } => "in_sync",
            Frame::Split { .. } => "split",
            Frame::IdList { .. } => "id_list",
            Frame::Want { .. } => "want",
            Frame::Items { .. } => "items",
            Frame::Pushed { .. } => "pushed",
            Frame::Mark { .. } => "mark",
            Frame::Holding { .. } => "holding",
        });
        if self.roll() < self.drop_pct {
            return;
        }
        if self.roll() < self.dup_pct {
            self.queue.push_back(f.clone());
        }
        if self.roll() < self.reorder_pct && !self.queue.is_empty() {
            self.queue.push_front(f);
        } else {
            self.queue.push_back(f);
        }
    }
}

struct Run<A = MemStore, B = MemStore> {
    a: A,
    b: B,
    sa: Session,
    sb: Session,
    steps: u64,
    /// Frame kinds sent by a and by b.
    kinds: (Vec<&'static str>, Vec<&'static str>),
}

/// Runs both sessions (`a` initiates) until both are in sync and the links are empty, or
/// `max_steps`.
fn run(a: MemStore, b: MemStore, ab: Link, ba: Link, max_steps: u64) -> Run {
    run_with(a, b, (opts(true), opts(false)), ab, ba, max_steps)
}

fn run_with<A: ItemStore, B: ItemStore>(
    a: A,
    b: B,
    (oa, ob): (SessionOptions, SessionOptions),
    mut ab: Link,
    mut ba: Link,
    max_steps: u64,
) -> Run<A, B> {
    let (mut a, mut b) = (a, b);
    let (mut sa, mut sb) = (Session::new(oa), Session::new(ob));
    let mut now = 0u64;
    sa.start(&a, now).unwrap();
    sb.start(&b, now).unwrap();
    let mut steps = 0;
    while steps < max_steps {
        steps += 1;
        now += 10;
        while let Some(f) = sa.poll_transmit(&a).unwrap() {
            ab.send(f);
        }
        while let Some(f) = sb.poll_transmit(&b).unwrap() {
            ba.send(f);
        }
        if let Some(f) = ab.queue.pop_front() {
            sb.handle(f, &mut b, now).unwrap();
        }
        if let Some(f) = ba.queue.pop_front() {
            sa.handle(f, &mut a, now).unwrap();
        }
        sa.handle_timeout(&a, now).unwrap();
        sb.handle_timeout(&b, now).unwrap();
        if sa.is_in_sync() && sb.is_in_sync() && ab.queue.is_empty() && ba.queue.is_empty() {
            break;
        }
    }
    Run { a, b, sa, sb, steps, kinds: (ab.kinds, ba.kinds) }
}

/// Hands each side's frames to the other, `x` first, over a perfect link and without
/// timeouts, until neither sends any.
fn exchange<X: ItemStore, Y: ItemStore>((sx, x): (&mut Session, &mut X), (sy, y): (&mut Session, &mut Y)) {
    for _ in 0..1_000 {
        let mut moved = false;
        while let Some(f) = sx.poll_transmit(x).unwrap() {
            sy.handle(f, y, 0).unwrap();
            moved = true;
        }
        while let Some(f) = sy.poll_transmit(y).unwrap() {
            sx.handle(f, x, 0).unwrap();
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("the sessions never went quiet");
}

fn sets() -> impl Strategy<Value = (BTreeSet<u32>, BTreeSet<u32>)> {
    (proptest::collection::btree_set(0u32..5000, 0..600), proptest::collection::btree_set(0u32..5000, 0..600))
}

proptest! {
    #[test]
    fn two_random_sets_exchange_exactly_their_symmetric_difference((x, y) in sets()) {
        let r = run(store_of(&x), store_of(&y), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 100_000);
        let union: BTreeSet<u32> = x.union(&y).copied().collect();
        prop_assert_eq!(r.a.items.get(SCOPE).map_or(0, |m| m.len()), union.len());
        prop_assert_eq!(&r.a.items, &store_of(&union).items);
        prop_assert_eq!(&r.b.items, &store_of(&union).items);
        // Nothing moved that the other side already had.
        prop_assert_eq!(r.sa.stats.items_sent as usize, x.difference(&y).count());
        prop_assert_eq!(r.sb.stats.items_sent as usize, y.difference(&x).count());
        prop_assert!(r.sa.is_in_sync() && r.sb.is_in_sync(), "finished in sync after {} steps", r.steps);
    }

    #[test]
    fn a_link_that_drops_duplicates_and_reorders_still_converges((x, y) in sets(), seed in any::<u64>()) {
        let r = run(store_of(&x), store_of(&y), Link::new(seed, 20, 10, 20), Link::new(seed.rotate_left(7), 20, 10, 20), 200_000);
        let union = store_of(&x.union(&y).copied().collect());
        prop_assert_eq!(&r.a.items, &union.items, "seed {}", seed);
        prop_assert_eq!(&r.b.items, &union.items, "seed {}", seed);
    }
}

#[test]
fn one_difference_among_many_costs_few_frames() {
    let x: BTreeSet<u32> = (0..100_000).collect();
    let mut y = x.clone();
    y.remove(&4242);
    let r = run(store_of(&x), store_of(&y), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 10_000);
    assert_eq!(r.sa.stats.items_sent, 1);
    let frames = r.sa.stats.frames_out + r.sb.stats.frames_out;
    assert!(frames <= 12, "{frames} frames for one difference among 100k");
}

#[test]
fn an_empty_peer_gets_everything_without_splitting() {
    let x: BTreeSet<u32> = (0..3000).collect();
    let r = run(store_of(&x), store_of(&BTreeSet::new()), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 10_000);
    assert_eq!(r.b.items.get(SCOPE).map_or(0, |m| m.len()), 3000);
    // `Pushed`, the root fingerprint's answer and the closing frames.
    assert!(r.sb.stats.frames_out <= 4, "{:?}", r.sb.stats);
}

#[test]
fn refused_items_are_not_stored_and_are_reported() {
    let mut a = store_of(&(0..10).collect());
    let bad = vec![0xEE, 1, 2, 3];
    a.insert(SCOPE, Sha256::digest(&bad).into(), bad);
    let mut r = run(a, store_of(&BTreeSet::new()), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 2_000);
    assert_eq!(r.b.items.get(SCOPE).map_or(0, |m| m.len()), 10);
    // Every round offers it again and every time it is refused (and logged).
    assert!(r.sb.stats.items_refused >= 1);
    let refusals = r.sb.take_refusals();
    assert!(!refusals.is_empty() && refusals.iter().all(|r| r == "refused: bad signature"));
    // They cannot agree while one side holds an item the other refuses.
    assert!(!r.sb.is_in_sync());
}

#[test]
fn frames_for_other_scopes_are_ignored() {
    let mut b = store_of(&BTreeSet::new());
    let mut s = Session::new(opts(false));
    s.handle(Frame::Items { scope: b"9999999999".to_vec(), items: vec![vec![1, 2, 3]] }, &mut b, 0).unwrap();
    assert!(b.items.is_empty());
}

/// Adds the items of `range` to `s` (as `store_of` makes them).
fn add(s: &mut MemStore, range: std::ops::Range<u32>) {
    for i in range {
        let bytes = [&[1u8][..], &i.to_le_bytes()].concat();
        s.insert(SCOPE, check(SCOPE, &bytes).unwrap(), bytes);
    }
}

/// Session settings of an initiator and a responder resuming from their checkpoints.
fn resumed(a: BTreeMap<Vec<u8>, u64>, b: BTreeMap<Vec<u8>, u64>) -> (SessionOptions, SessionOptions) {
    let (mut oa, mut ob) = (opts(true), opts(false));
    oa.checkpoints = a;
    ob.checkpoints = b;
    (oa, ob)
}

#[test]
fn after_a_sync_the_changes_since_the_checkpoints_are_the_whole_round() {
    let common: BTreeSet<u32> = (0..10_000).collect();
    let first = run(store_of(&common), store_of(&common), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 10_000);
    let (ckpt_a, ckpt_b) = (first.sa.checkpoints().clone(), first.sb.checkpoints().clone());
    assert_eq!(ckpt_a.get(SCOPE), Some(&10_000));
    assert_eq!(ckpt_b.get(SCOPE), Some(&10_000));

    // Offline, a adds 100 items and b adds 50.
    let (mut a, mut b) = (first.a, first.b);
    add(&mut a, 20_000..20_100);
    add(&mut b, 30_000..30_050);
    let r = run_with(a, b, resumed(ckpt_a, ckpt_b), Link::new(3, 0, 0, 0), Link::new(4, 0, 0, 0), 10_000);
    assert!(r.sa.is_in_sync() && r.sb.is_in_sync());
    assert_eq!((r.sa.stats.items_sent, r.sb.stats.items_sent), (100, 50));
    assert_eq!(r.a.items, r.b.items);
    // Pushes, then one fingerprint answered by InSync: no walk at all.
    let walk = |k: &[&str]| k.iter().filter(|k| matches!(**k, "split" | "id_list" | "want")).count();
    assert_eq!(walk(&r.kinds.0) + walk(&r.kinds.1), 0, "{:?}", r.kinds);
    assert_eq!(r.kinds.0.iter().filter(|k| **k == "fingerprint").count(), 1, "{:?}", r.kinds.0);
    assert_eq!(r.sa.checkpoints().get(SCOPE), Some(&10_150));
    assert_eq!(r.sb.checkpoints().get(SCOPE), Some(&10_150));

    // A wrong checkpoint (b lost data it had confirmed) costs a walk, not data.
    let mut lost = r.b.clone();
    let gone: Vec<Id> = lost.items[SCOPE].keys().take(7).copied().collect();
    for id in &gone {
        lost.items.get_mut(SCOPE).unwrap().remove(id);
    }
    let opts = resumed(r.sa.checkpoints().clone(), r.sb.checkpoints().clone());
    let again = run_with(r.a, lost, opts, Link::new(5, 0, 0, 0), Link::new(6, 0, 0, 0), 10_000);
    assert_eq!(again.a.items, again.b.items);
    assert_eq!(again.sa.stats.items_sent, 7);
}

/// A checkpoint of 0 (the peer holds nothing of this side: a station meeting the head
/// office that just enrolled it) pushes the whole log at once; without one, the same
/// meeting is a walk. Either way both end with the union.
#[test]
fn a_zero_checkpoint_pushes_the_whole_log_without_waiting_for_a_walk() {
    let mine: BTreeSet<u32> = (0..3_000).collect();
    let theirs: BTreeSet<u32> = (10_000..14_000).collect();
    let union = store_of(&mine.union(&theirs).copied().collect());
    let zero = BTreeMap::from([(SCOPE.to_vec(), 0)]);
    let pushed = run_with(
        store_of(&mine),
        store_of(&theirs),
        resumed(zero, BTreeMap::new()),
        Link::new(1, 0, 0, 0),
        Link::new(2, 0, 0, 0),
        100_000,
    );
    assert_eq!(pushed.a.items, union.items);
    assert_eq!(pushed.b.items, union.items);
    assert!(pushed.sa.is_in_sync() && pushed.sb.is_in_sync());
    // Every item of a went before its first fingerprint: the push, not the walk.
    let k = &pushed.kinds.0;
    let first_fp = k.iter().position(|k| *k == "fingerprint").expect("a fingerprint after the push");
    let items_before: usize = k[..first_fp].iter().filter(|k| **k == "items").count();
    assert!(items_before >= 3_000usize.div_ceil(32), "{items_before} items frames before the first fingerprint: {k:?}");
    assert_eq!(pushed.sa.stats.items_sent, 3_000, "nothing sent twice");
    assert_eq!(pushed.sb.stats.items_sent, 4_000);

    // No checkpoint: a walk; a's items come only after b's answers.
    let walked = run(store_of(&mine), store_of(&theirs), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 100_000);
    assert_eq!(walked.a.items, union.items);
    let k = &walked.kinds.0;
    let first_fp = k.iter().position(|k| *k == "fingerprint").expect("a fingerprint");
    assert!(!k[..first_fp].contains(&"items"), "{k:?}");
}

#[test]
fn a_hub_relays_what_others_sent_it_page_by_page_and_echoes_nothing() {
    let common: BTreeSet<u32> = (0..1_000).collect();
    let first = run(store_of(&common), store_of(&common), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 10_000);
    let (ckpt_a, ckpt_b) = (first.sa.checkpoints().clone(), first.sb.checkpoints().clone());
    // Offline, the station a records 500 items; the hub b takes 5,000 from other stations
    // (156 pages of 32).
    let (mut a, mut b) = (first.a, first.b);
    add(&mut a, 20_000..20_500);
    add(&mut b, 30_000..35_000);
    let r = run_with(a, b, resumed(ckpt_a, ckpt_b), Link::new(3, 0, 0, 0), Link::new(4, 0, 0, 0), 100_000);
    assert!(r.sa.is_in_sync() && r.sb.is_in_sync());
    assert_eq!(r.a.items, r.b.items);
    // The hub pushed the 5,000 and none of the 500 it had just stored from a.
    assert_eq!((r.sa.stats.items_sent, r.sb.stats.items_sent), (500, 5_000));
    let walk = |k: &[&str]| k.iter().filter(|k| matches!(**k, "split" | "id_list" | "want")).count();
    assert_eq!(walk(&r.kinds.0) + walk(&r.kinds.1), 0, "{:?}", r.kinds);
}

/// The reads of a test store that wraps a `MemStore` in `$field`, passed through.
macro_rules! reads_from {
    ($field:ident) => {
        fn summary(&self, scope: &[u8], prefix: &[u8]) -> Result<Summary, Infallible> {
            self.$field.summary(scope, prefix)
        }

        fn ids(&self, scope: &[u8], prefix: &[u8]) -> Result<Vec<Id>, Infallible> {
            self.$field.ids(scope, prefix)
        }

        fn get(&self, scope: &[u8], id: &Id) -> Result<Option<Vec<u8>>, Infallible> {
            self.$field.get(scope, id)
        }

        fn seq(&self, scope: &[u8]) -> Result<u64, Infallible> {
            self.$field.seq(scope)
        }

        fn changes_after(&self, scope: &[u8], since: u64, limit: usize) -> Result<Vec<(u64, Id)>, Infallible> {
            self.$field.changes_after(scope, since, limit)
        }
    };
}

/// A store that takes each put in two parts and records one item of its own between
/// them, as a node does when a handheld writes while a long put is being stored.
struct Interleaving {
    inner: MemStore,
    own: Vec<u32>,
}

impl ItemStore for Interleaving {
    type Error = Infallible;

    reads_from!(inner);

    fn put(&mut self, scope: &[u8], mut items: Vec<Vec<u8>>) -> Result<PutOutcome, Infallible> {
        let second = items.split_off(items.len() / 2);
        let mut out = self.inner.put(scope, items)?;
        if let Some(i) = self.own.pop() {
            add(&mut self.inner, i..i + 1);
        }
        let more = self.inner.put(scope, second)?;
        out.stored.extend(more.stored);
        out.seqs.extend(more.seqs);
        Ok(out)
    }
}

#[test]
fn what_this_side_wrote_between_the_parts_of_a_put_is_pushed_not_taken_for_the_peers() {
    let common: BTreeSet<u32> = (0..1_000).collect();
    let first = run(store_of(&common), store_of(&common), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 10_000);
    let (ckpt_a, ckpt_b) = (first.sa.checkpoints().clone(), first.sb.checkpoints().clone());
    // Offline, a records 320 items (ten frames of 32); b will record one of its own in the
    // middle of storing each frame.
    let mut a = first.a;
    add(&mut a, 20_000..20_320);
    let b = Interleaving { inner: first.b, own: (40_000..40_010).collect() };
    let r = run_with(a, b, resumed(ckpt_a, ckpt_b), Link::new(3, 0, 0, 0), Link::new(4, 0, 0, 0), 100_000);
    assert!(r.b.own.is_empty(), "every put was taken in two parts with a write between");
    assert!(r.sa.is_in_sync() && r.sb.is_in_sync());
    assert_eq!(r.a.items, r.b.inner.items);
    // b pushed its ten and none of a's 320; no walk was needed to find them.
    assert_eq!((r.sa.stats.items_sent, r.sb.stats.items_sent), (320, 10));
    let walk = |k: &[&str]| k.iter().filter(|k| matches!(**k, "split" | "id_list" | "want")).count();
    assert_eq!(walk(&r.kinds.0) + walk(&r.kinds.1), 0, "{:?}", r.kinds);
}

/// Two stores of `n` common items that synced once, and new sessions of both resuming
/// from that round's checkpoints (the first store's initiates).
fn synced_pair(n: u32) -> (MemStore, MemStore, Session, Session) {
    let common: BTreeSet<u32> = (0..n).collect();
    let first = run(store_of(&common), store_of(&common), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 10_000);
    let (oa, ob) = resumed(first.sa.checkpoints().clone(), first.sb.checkpoints().clone());
    (first.a, first.b, Session::new(oa), Session::new(ob))
}

#[test]
fn a_write_landing_while_the_peer_confirms_a_fingerprint_goes_in_the_same_round() {
    let (mut a, mut b, mut sa, mut sb) = synced_pair(100);
    add(&mut a, 1_000..1_001);
    sa.start(&a, 0).unwrap();
    // No timeouts: the round must finish on the frames alone.
    let mut wrote = false;
    for _ in 0..100 {
        let mut moved = false;
        while let Some(f) = sa.poll_transmit(&a).unwrap() {
            let fingerprint = matches!(f, Frame::Fingerprint { .. });
            sb.handle(f, &mut b, 0).unwrap();
            moved = true;
            // a writes after b found the fingerprints equal, before a hears so.
            if fingerprint && !wrote {
                add(&mut a, 2_000..2_001);
                wrote = true;
            }
        }
        while let Some(f) = sb.poll_transmit(&b).unwrap() {
            sa.handle(f, &mut a, 0).unwrap();
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(wrote);
    assert!(sa.is_in_sync(), "the round stalled until its retry");
    assert_eq!(a.items, b.items);
    assert_eq!(sa.stats.items_sent, 2);
}

/// A write made while a round waits on the peer (a head office that answers nothing
/// while it takes in another station's upload) goes at once, without a second `Pushed`,
/// and the round then ends in sync without sending it again.
#[test]
fn a_write_during_a_round_goes_at_once_and_the_round_confirms_it() {
    let (mut a, mut b, mut sa, mut sb) = synced_pair(100);
    sa.start(&a, 0).unwrap();
    while let Some(f) = sa.poll_transmit(&a).unwrap() {
        sb.handle(f, &mut b, 0).unwrap();
    }
    // b's answers wait; a writes.
    add(&mut a, 1_000..1_001);
    sb.push_now(&b).unwrap();
    sa.push_now(&a).unwrap();
    let mut sent = Vec::new();
    while let Some(f) = sa.poll_transmit(&a).unwrap() {
        sent.push(f.clone());
        sb.handle(f, &mut b, 0).unwrap();
    }
    assert!(matches!(sent.as_slice(), [Frame::Items { items, .. }] if items.len() == 1), "{sent:?}");
    assert_eq!(a.items, b.items, "the write is at the peer before the round goes on");
    exchange((&mut sb, &mut b), (&mut sa, &mut a));
    assert!(sa.is_in_sync() && sb.is_in_sync(), "the round stalled");
    assert_eq!((sa.stats.items_sent, sb.stats.items_sent), (1, 0));
    assert_eq!(sa.checkpoints()[SCOPE], a.seq(SCOPE).unwrap());
}

#[test]
fn sequence_ranges_hold_exactly_their_numbers() {
    let r = [(3, 5), (9, 9), (12, 20)];
    let inside: Vec<u64> = (0..25).filter(|s| in_ranges(&r, *s)).collect();
    assert_eq!(inside, [3, 4, 5, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    assert!(!in_ranges(&[], 1));
}

#[test]
fn items_a_walk_finds_wait_for_the_walk_and_go_in_full_frames() {
    let (x, y): (BTreeSet<u32>, BTreeSet<u32>) = ((0..4000).collect(), (2000..6000).collect());
    let items_frames = |hold: usize, seed: u64, lossy: u64| {
        let o = |initiator| SessionOptions {
            hold_items_below: hold,
            hold_quiet_ms: 30,
            hold_max_ms: 1 << 40,
            ..opts(initiator)
        };
        let r = run_with(
            store_of(&x),
            store_of(&y),
            (o(true), o(false)),
            Link::new(seed, lossy, lossy, lossy),
            Link::new(seed.rotate_left(9), lossy, lossy, lossy),
            200_000,
        );
        let union = store_of(&x.union(&y).copied().collect());
        assert_eq!(r.a.items, union.items, "hold {hold}, seed {seed}");
        assert_eq!(r.b.items, union.items, "hold {hold}, seed {seed}");
        r.kinds.0.iter().filter(|k| **k == "items").count()
    };
    // 2,000 items of 5 bytes, at most 32 per frame.
    let full = 2000usize.div_ceil(32);
    let held = items_frames(1 << 16, 1, 0);
    assert!(held <= full + 1, "{held} items frames with holding, {full} full ones would do");
    let unheld = items_frames(0, 1, 0);
    assert!(unheld > 2 * full, "{unheld} items frames without holding: the walk answers range by range");
    // Held items still arrive over a link that drops, duplicates and reorders frames.
    for seed in 1..20 {
        items_frames(1 << 16, seed, 15);
    }
}

#[test]
fn held_items_go_after_the_longest_hold_though_the_peer_never_goes_quiet() {
    let mut a = store_of(&(0..10).collect());
    let ids: Vec<Id> = a.items[SCOPE].keys().copied().collect();
    let mut s =
        Session::new(SessionOptions { hold_items_below: 1 << 16, hold_quiet_ms: 30, hold_max_ms: 500, ..opts(false) });
    s.handle(Frame::Want { scope: SCOPE.to_vec(), ids }, &mut a, 0).unwrap();
    let mut now = 0;
    loop {
        let mut items = 0;
        while let Some(f) = s.poll_transmit(&a).unwrap() {
            items += matches!(f, Frame::Items { .. }) as usize;
        }
        if now < 500 {
            assert_eq!(items, 0, "items sent after {now} ms, before the longest hold");
            assert!(s.holds_items() && s.release_at() == Some((now + 30).min(500)), "{now} ms: {:?}", s.release_at());
        } else {
            assert!(items > 0 && !s.holds_items(), "nothing sent after {now} ms");
            break;
        }
        // The peer sends something every 10 ms: never quiet for 30.
        now += 10;
        let fp = Fingerprint::default();
        s.handle(Frame::InSync { scope: SCOPE.to_vec(), fp }, &mut a, now).unwrap();
        s.handle_timeout(&a, now).unwrap();
    }
}

#[test]
fn a_side_with_far_fewer_items_names_them_instead_of_splitting_down() {
    // A station meeting a head office that holds other stations' data.
    let (x, y): (BTreeSet<u32>, BTreeSet<u32>) = ((0..300).collect(), (300..20_300).collect());
    let r = run(store_of(&x), store_of(&y), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 100_000);
    let union = store_of(&x.union(&y).copied().collect());
    assert_eq!(r.a.items, union.items);
    assert_eq!(r.b.items, union.items);
    assert_eq!((r.sa.stats.items_sent, r.sb.stats.items_sent), (300, 20_000));
    let splits = |kinds: &[&str]| kinds.iter().filter(|k| **k == "split").count();
    // The head office splits the root once; the station answers each part with its ids.
    assert_eq!((splits(&r.kinds.0), splits(&r.kinds.1)), (0, 1), "{:?}", r.sa.stats);
}

/// Items a walk found go scope by scope in the order the options list them, whatever
/// the scopes' names: a receiver checks events against the records that come first.
#[test]
fn found_items_go_in_the_order_the_options_list_their_scopes() {
    let (records, events): (&[u8], &[u8]) = (b"z-records", b"a-events");
    let mut s = Session::new(SessionOptions { scopes: vec![records.to_vec(), events.to_vec()], ..opts(false) });
    let mut store = MemStore::new(check);
    for (scope, n) in [(events, 1u8), (records, 2u8)] {
        let bytes = vec![0x01, n];
        store.insert(scope, check(scope, &bytes).unwrap(), bytes);
    }
    for scope in [events, records] {
        let ids: Vec<Id> = store.items[scope].keys().copied().collect();
        s.handle(Frame::Want { scope: scope.to_vec(), ids }, &mut store, 0).unwrap();
    }
    let mut order = Vec::new();
    while let Some(f) = s.poll_transmit(&store).unwrap() {
        if let Frame::Items { scope, .. } = f {
            order.push(scope);
        }
    }
    assert_eq!(order, [records.to_vec(), events.to_vec()]);
}

/// A store whose puts become durable only when asked (as the node's writer lets a
/// stream's puts share one commit): `held` is what survives a crash.
#[derive(Clone)]
struct Lazy {
    live: MemStore,
    held: MemStore,
}

impl ItemStore for Lazy {
    type Error = Infallible;

    reads_from!(live);

    fn put(&mut self, scope: &[u8], items: Vec<Vec<u8>>) -> Result<PutOutcome, Infallible> {
        self.live.put(scope, items)
    }

    fn durable(&mut self) -> Result<(), Infallible> {
        self.held = self.live.clone();
        Ok(())
    }
}

/// A long push marks its progress; the peer answers each mark once what came before it
/// is durable, and the pusher's checkpoint moves there. Cut off part way (the peer
/// losing what it had not made durable), the next session pushes only what follows the
/// last mark answered.
#[test]
fn a_push_cut_off_resumes_after_the_last_mark_the_peer_made_durable() {
    let mine: BTreeSet<u32> = (0..3_000).collect();
    let zero = BTreeMap::from([(SCOPE.to_vec(), 0)]);
    let empty = Lazy { live: MemStore::new(check), held: MemStore::new(check) };
    let cut_off = |mark_bytes: u64| {
        let (mut oa, ob) = resumed(zero.clone(), BTreeMap::new());
        oa.mark_bytes = mark_bytes;
        // 60 steps: about 60 of the push's 94 frames reach the peer.
        run_with(store_of(&mine), empty.clone(), (oa, ob), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 60)
    };

    let cut = cut_off(1_000);
    assert!(!cut.sa.is_in_sync());
    assert!(cut.kinds.0.contains(&"mark") && cut.kinds.1.contains(&"holding"), "{:?}", cut.kinds);
    let ckpt = cut.sa.checkpoints()[SCOPE];
    assert!(cut.sa.stats.pushes_confirmed >= 2, "{:?}", cut.sa.stats);
    assert!(ckpt > 1_000 && ckpt < 3_000, "checkpoint {ckpt}");
    // What the checkpoint claims the peer holds, it holds durably.
    for (_, id) in cut.a.changes_after(SCOPE, 0, ckpt as usize).unwrap() {
        assert!(cut.b.held.items[SCOPE].contains_key(&id));
    }

    // The peer restarts with what it made durable; the push resumes after the mark.
    let b = Lazy { live: cut.b.held.clone(), held: cut.b.held };
    let (mut oa, ob) = resumed(cut.sa.checkpoints().clone(), BTreeMap::new());
    oa.mark_bytes = 1_000;
    let again = run_with(cut.a, b, (oa, ob), Link::new(3, 0, 0, 0), Link::new(4, 0, 0, 0), 10_000);
    assert!(again.sa.is_in_sync() && again.sb.is_in_sync());
    assert_eq!(again.b.live.items, store_of(&mine).items);
    assert_eq!(again.sa.stats.items_sent, 3_000 - ckpt);

    // Without marks, the same cut leaves the checkpoint where it was: all again.
    assert_eq!(cut_off(0).sa.checkpoints()[SCOPE], 0);
}

/// The answer to a mark can be taken on its own, ahead of what this side queued before
/// (a head office sends it while it holds its own frames back, or amid a stream it has
/// not answered yet); it is what moves the pusher's checkpoint.
#[test]
fn the_answer_to_a_mark_is_taken_ahead_of_everything_queued() {
    let mut b = store_of(&(0..10).collect());
    let mut sb = Session::new(opts(false));
    // The peer's root fingerprint differs: b queues its answer to it first.
    let fp = Summary::of(std::iter::empty::<Id>()).fingerprint();
    sb.handle(Frame::Fingerprint { scope: SCOPE.to_vec(), prefix: vec![], fp }, &mut b, 0).unwrap();
    assert!(sb.poll_urgent().is_none(), "nothing to answer yet");
    sb.handle(Frame::Mark { scope: SCOPE.to_vec(), seq: 7 }, &mut b, 1).unwrap();
    assert_eq!(sb.poll_urgent(), Some(Frame::Holding { scope: SCOPE.to_vec(), seq: 7 }));
    assert!(sb.poll_urgent().is_none());
    let rest: Vec<Frame> = std::iter::from_fn(|| sb.poll_transmit(&b).unwrap()).collect();
    assert!(!rest.is_empty() && !rest.iter().any(|f| matches!(f, Frame::Holding { .. })), "{rest:?}");

    // Left to `poll_transmit`, it goes first all the same.
    let mut sc = Session::new(opts(false));
    sc.handle(Frame::Fingerprint { scope: SCOPE.to_vec(), prefix: vec![], fp }, &mut b, 0).unwrap();
    sc.handle(Frame::Mark { scope: SCOPE.to_vec(), seq: 9 }, &mut b, 1).unwrap();
    assert_eq!(sc.poll_transmit(&b).unwrap(), Some(Frame::Holding { scope: SCOPE.to_vec(), seq: 9 }));
}

/// Changes relayed now go ahead of everything queued, in bounded frames, without what
/// the peer itself sent, and move no push or checkpoint: the peer takes them as items,
/// and a later push sends them again in their turn.
#[test]
fn changes_relayed_now_go_first_without_the_peers_own_and_move_nothing() {
    let mut a = store_of(&(0..40).collect());
    let mut sa = Session::new(SessionOptions { checkpoints: BTreeMap::from([(SCOPE.to_vec(), 0)]), ..opts(false) });
    // The peer's own item, stored here as change 41: never relayed back to it.
    let mut theirs = vec![0x01];
    theirs.extend_from_slice(&1_000u32.to_le_bytes());
    sa.handle(Frame::Items { scope: SCOPE.to_vec(), items: vec![theirs.clone()] }, &mut a, 0).unwrap();
    let fp = Summary::of(std::iter::empty::<Id>()).fingerprint();
    sa.handle(Frame::Fingerprint { scope: SCOPE.to_vec(), prefix: vec![], fp }, &mut a, 1).unwrap();
    let changes = a.changes_after(SCOPE, 10, 100).unwrap();
    assert_eq!(changes.len(), 31);
    sa.relay_now(&a, SCOPE, changes).unwrap();
    sa.relay_now(&a, b"another scope", a.changes_after(SCOPE, 0, 5).unwrap()).unwrap();
    let mut relayed = Vec::new();
    while let Some(f) = sa.poll_urgent() {
        let Frame::Items { scope, items } = f else { panic!("{f:?}") };
        assert_eq!(scope, SCOPE);
        assert!(items.len() <= 32 && (items.len() == 1 || items.iter().map(Vec::len).sum::<usize>() <= FRAME_BYTES));
        relayed.extend(items);
    }
    let expected: Vec<Vec<u8>> = (10..40u32).map(|i| [vec![0x01], i.to_le_bytes().to_vec()].concat()).collect();
    assert_eq!(relayed, expected, "changes 11 to 40 in order, without the peer's own");
    assert_eq!(sa.stats.items_sent, 30);
    assert_eq!(sa.checkpoints()[SCOPE], 0);
    // The answer to the empty peer's fingerprint (everything) was queued before them and
    // goes after, all of it again.
    let mut rest = 0;
    while let Some(f) = sa.poll_transmit(&a).unwrap() {
        rest += match f {
            Frame::Items { items, .. } => items.len(),
            _ => 0,
        };
    }
    assert_eq!(rest, 41);
}

/// Where the push of one scope ends, a sixteenth of `mark_bytes` is enough for a mark:
/// a node's documents go before its events, and a cut during the events does not send
/// them again.
#[test]
fn the_end_of_a_scopes_push_is_marked_so_a_cut_in_the_next_scope_keeps_it() {
    const DOCS: &[u8] = b"docs";
    let mut a = store_of(&(0..3_000).collect());
    for i in 0..100u32 {
        let bytes = [&[2u8][..], &i.to_le_bytes()].concat();
        a.insert(DOCS, check(DOCS, &bytes).unwrap(), bytes);
    }
    let zero = BTreeMap::from([(DOCS.to_vec(), 0), (SCOPE.to_vec(), 0)]);
    let (mut oa, mut ob) = resumed(zero, BTreeMap::new());
    for o in [&mut oa, &mut ob] {
        o.scopes = vec![DOCS.to_vec(), SCOPE.to_vec()];
    }
    // 100 documents of 5 bytes: under a mark within a scope, over a sixteenth of one.
    oa.mark_bytes = 1_000;
    let empty = Lazy { live: MemStore::new(check), held: MemStore::new(check) };
    let cut = run_with(a, empty, (oa, ob), Link::new(1, 0, 0, 0), Link::new(2, 0, 0, 0), 60);
    assert!(!cut.sa.is_in_sync());
    assert_eq!(cut.sa.checkpoints()[DOCS], 100);
    assert!(cut.sa.checkpoints()[SCOPE] > 0);
    assert_eq!(cut.b.held.items[DOCS].len(), 100);
}

/// A responder that stored more after its push (a head office taking in other stations'
/// uploads) answers the peer's differing root fingerprint with those changes and its own
/// fingerprint, not a walk: a walk raced the push and sent its items a second time.
#[test]
fn a_responder_that_stored_more_since_its_push_pushes_it_instead_of_walking() {
    let (mut a, mut b, mut sa, mut sb) = synced_pair(1_000);
    add(&mut b, 10_000..10_300);
    sa.start(&a, 0).unwrap();
    let mut walk = 0;
    let mut wrote = false;
    for _ in 0..1_000 {
        let mut moved = false;
        while let Some(f) = sa.poll_transmit(&a).unwrap() {
            walk += matches!(f, Frame::Split { .. } | Frame::IdList { .. } | Frame::Want { .. }) as usize;
            // b takes in 200 more (another station's upload) after its push went, before
            // a's fingerprint comes.
            if matches!(f, Frame::Fingerprint { .. }) && !wrote {
                add(&mut b, 20_000..20_200);
                wrote = true;
            }
            sb.handle(f, &mut b, 0).unwrap();
            moved = true;
        }
        while let Some(f) = sb.poll_transmit(&b).unwrap() {
            walk += matches!(f, Frame::Split { .. } | Frame::IdList { .. } | Frame::Want { .. }) as usize;
            sa.handle(f, &mut a, 0).unwrap();
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(wrote);
    assert_eq!(a.items, b.items);
    assert!(sa.is_in_sync() && sb.is_in_sync(), "the round stalled");
    assert_eq!(walk, 0, "walked");
    assert_eq!(sb.stats.items_sent, 500, "an item sent twice");
    assert_eq!(sa.checkpoints()[SCOPE], a.seq(SCOPE).unwrap());
    assert_eq!(sb.checkpoints()[SCOPE], b.seq(SCOPE).unwrap());
}
