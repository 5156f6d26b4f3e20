//! The simulator is deterministic, and the seeds that once found bugs stay fixed.

use super::*;

fn quiet(_: i64, _: i64) {}

fn passes(cfg: Config) {
    let seed = cfg.seed;
    let (report, failure) = run(cfg, &quiet).unwrap();
    assert!(failure.is_none(), "seed {seed}: {failure:?}\n{}", report.text);
}

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let (a, fa) = run(Config::small(3), &quiet).unwrap();
    let (b, fb) = run(Config::small(3), &quiet).unwrap();
    assert_eq!(a.text, b.text);
    assert_eq!(a.html, b.html);
    assert_eq!(fa, fb);
    assert!(a.text.contains("all invariants hold"), "{}", a.text);
    assert!(a.html.contains("<svg"), "the report draws its charts");
    let (c, _) = run(Config::small(4), &quiet).unwrap();
    assert_ne!(a.text, c.text, "another seed, another run");
}

/// The bug: a node's clock did not observe the timestamps of received events, so a scrap
/// (or hold) recorded after a fill had arrived from a station whose clock ran ahead sorted
/// before that fill; the history then showed a fill after a scrap that nodes listed
/// differently (local scraps and findings did not refresh anomalies). Found by seeds 12,
/// 17, 24 and 35 of an earlier version of this world; these four failed on the unfixed
/// store in a later one. Since anomalies became a pure function of the data, every node
/// lists the same wrong one, and no invariant caught it any more (checked 2026-11-27 by
/// reverting the clock's observation: seeds 1–150 of the two-day world passed). The
/// oracle's "causal order" invariant now does: a fill the scrapping node held when it
/// scrapped must not sort after the scrap. With the fix reverted, seeds 17 and 24 fail
/// it (13 and 30 do not), and 58 of seeds 1–100. The unit test
/// `a_local_scrap_sorts_after_a_received_fill_from_a_clock_that_runs_ahead` in `node`
/// guards the fix too.
#[test]
fn seed_13_a_local_scrap_after_a_fill_from_a_fast_clock() {
    passes(Config::small(13));
}

#[test]
fn seed_17_a_local_scrap_after_a_fill_from_a_fast_clock() {
    passes(Config::small(17));
}

#[test]
fn seed_24_a_local_scrap_after_a_fill_from_a_fast_clock() {
    passes(Config::small(24));
}

#[test]
fn seed_30_stale_anomalies_after_a_local_finding() {
    passes(Config::small(30));
}

/// The fixed list CI runs: seeds 1–100 of the small world, on two threads.
#[test]
fn ci_seeds_1_to_100_hold_every_invariant() {
    let failures: Vec<String> = std::thread::scope(|s| {
        let halves: Vec<_> = [1u64, 51]
            .into_iter()
            .map(|from| {
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for seed in from..from + 50 {
                        let (_, failure) = run(Config::ci(seed), &quiet).unwrap();
                        if let Some(f) = failure {
                            failed.push(format!("seed {seed}: {f}"));
                        }
                    }
                    failed
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}
