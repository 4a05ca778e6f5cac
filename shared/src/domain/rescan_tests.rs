use super::*;
use proptest::prelude::*;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
}
fn reach(settle: i64, rescan: i64, start_lookback: i64) -> Reach {
    Reach {
        settle: Duration::seconds(settle),
        rescan: Duration::seconds(rescan),
        start_lookback: Duration::seconds(start_lookback),
    }
}
const TICK: i64 = 300;
const DAY: i64 = 86_400;

fn tiers() -> Vec<RescanTier> {
    effective_tiers(&default_tiers(), Duration::seconds(DAY))
}

#[test]
fn tiers_are_parsed_and_bounded_by_rescan_seconds() {
    let tier = |a, e| RescanTier {
        age: Duration::seconds(a),
        every: Duration::seconds(e),
    };
    assert_eq!(
        default_tiers(),
        vec![
            tier(900, 900),
            tier(3600, 3600),
            tier(21_600, 3600),
            tier(86_400, 21_600)
        ]
    );
    assert_eq!(
        tiers(),
        default_tiers(),
        "the default outer tier is RESCAN_SECONDS"
    );
    assert_eq!(parse_tiers(" ").expect("empty"), vec![]);
    assert!(parse_tiers("900").is_err());
    assert!(parse_tiers("900:0").is_err());
    assert!(parse_tiers("3600:60,900:60").is_err(), "ages increase");
    let d = default_tiers();
    let secs = Duration::seconds;
    // A shorter RESCAN_SECONDS cuts the list and ends at exactly RESCAN_SECONDS.
    assert_eq!(
        effective_tiers(&d, secs(7200)),
        vec![tier(900, 900), tier(3600, 3600), tier(7200, 3600)]
    );
    assert_eq!(effective_tiers(&d, secs(600)), vec![tier(600, 600)]);
    assert_eq!(effective_tiers(&d, secs(0)), vec![]);
    assert_eq!(
        effective_tiers(&[], secs(3600)),
        vec![tier(3600, 3600)],
        "no tiers configured: the outer bound alone, every RESCAN_SECONDS"
    );
    // A longer one adds an outer tier after the configured ones.
    let longer = effective_tiers(&d, secs(3 * DAY));
    assert_eq!(longer.len(), 5);
    assert_eq!(longer[4], tier(3 * DAY, 21_600));
}

#[test]
fn the_first_run_reads_the_window_once_and_sets_the_tier_marks() {
    let (cursor, plans) = plan_scans(
        &IngestCursor::default(),
        t(100_000),
        reach(900, DAY, 0),
        &tiers(),
        Direction::NewestFirst,
    );
    let end = t(100_000 - 900);
    assert_eq!(plans.len(), 1, "{plans:?}");
    assert_eq!(plans[0].lane, Lane::Fresh);
    assert_eq!(
        (plans[0].scan.from, plans[0].scan.to, plans[0].scan.position),
        (end - Duration::seconds(DAY), end, end)
    );
    assert_eq!(cursor.tiers.len(), 4);
    assert_eq!(cursor.tiers[&900].mark, end - Duration::seconds(900));
    assert_eq!(cursor.tiers[&DAY].mark, end - Duration::seconds(DAY));
    // Without re-scan, the first run reaches back by the start lookback, oldest first.
    let (_, first) = plan_scans(
        &IngestCursor::default(),
        t(10_000),
        reach(900, 0, 5_000),
        &[],
        Direction::OldestFirst,
    );
    assert_eq!(first[0].scan.from, t(10_000 - 900 - 5_000));
    assert_eq!(first[0].scan.position, first[0].scan.from);
}

#[test]
fn a_tier_runs_once_its_range_is_about_an_every_long_and_not_before() {
    let mut cursor = IngestCursor {
        watermark: Some(t(9_000)),
        ..IngestCursor::default()
    };
    let one = [RescanTier {
        age: Duration::seconds(900),
        every: Duration::seconds(900),
    }];
    cursor.tiers.insert(
        900,
        TierCursor {
            mark: t(8_000),
            pending: None,
        },
    );
    let plan = |now| {
        plan_scans(
            &cursor,
            t(now),
            reach(0, 900, 0),
            &one,
            Direction::OldestFirst,
        )
        .1
    };
    // end - age = now - 900; due once that is 9/10 of 900 past the mark (8,000).
    assert_eq!(plan(9_709).len(), 1, "fresh only");
    let due = plan(9_710);
    assert_eq!(due.len(), 2);
    assert_eq!(due[1].lane, Lane::Tier(900));
    assert_eq!((due[1].scan.from, due[1].scan.to), (t(8_000), t(8_810)));
    // Never past what the fresh lane has covered (the watermark), even after an outage.
    let late = plan(50_000);
    assert_eq!((late[1].scan.from, late[1].scan.to), (t(8_000), t(9_000)));
    assert_eq!((late[0].scan.from, late[0].scan.to), (t(9_000), t(50_000)));
}

#[test]
fn pending_ranges_are_resumed_in_their_lane() {
    let pending = PendingScan {
        from: t(1),
        to: t(100),
        position: t(50),
    };
    let mut cursor = IngestCursor {
        watermark: Some(t(5_000)),
        pending: Some(pending),
        ..IngestCursor::default()
    };
    cursor.checkpoint(Lane::Tier(DAY), pending);
    let (_, plans) = plan_scans(
        &cursor,
        t(10_000),
        reach(60, DAY, 60),
        &tiers()[3..],
        Direction::NewestFirst,
    );
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert!(plans.iter().all(|p| p.resumed && p.scan == pending));
    assert_eq!(
        plans.iter().map(|p| p.lane).collect::<Vec<_>>(),
        vec![Lane::Fresh, Lane::Tier(DAY)]
    );
    cursor.complete(Lane::Tier(DAY), pending);
    assert_eq!(
        cursor.tiers[&DAY],
        TierCursor {
            mark: t(100),
            pending: None
        }
    );
    cursor.complete(Lane::Fresh, pending);
    assert_eq!((cursor.watermark, cursor.pending), (Some(t(5_000)), None));
}

#[test]
fn worst_detection_per_tier() {
    let (settle, tick) = (Duration::seconds(900), Duration::seconds(TICK));
    let at = |d: i64| worst_detection(&tiers(), settle, tick, Duration::seconds(d));
    let m = |min: i64| Some(Duration::minutes(min));
    assert_eq!(at(300), m(20), "within settle: the fresh pass");
    assert_eq!(at(1_800), m(15 + 15 + 15 + 5));
    assert_eq!(at(4_500), m(15 + 60 + 60 + 5));
    assert_eq!(at(22_500), m(15 + 360 + 60 + 5));
    assert_eq!(at(DAY + 900), m(15 + 1440 + 360 + 5));
    assert_eq!(
        at(DAY + 901),
        None,
        "past settle + RESCAN_SECONDS: not promised"
    );
}

/// What a simulated tick does: the run is skipped, cut off in its `n`-th range, or done.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Skipped,
    CutIn(usize),
    Done,
}

/// One piece of a range read by a run: (lane, from, to, when).
type Read = (Lane, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);
/// A piece of a lane's reads: (from, to).
type Piece = (DateTime<Utc>, DateTime<Utc>);

/// Runs `fates.len()` ticks from `t(0)`, each `TICK` late by `jitter[k]` seconds; returns
/// what was read and the final cursor.
fn simulate(
    fates: &[Fate],
    jitter: &[i64],
    direction: Direction,
    settle: i64,
) -> (Vec<Read>, IngestCursor) {
    let (mut cursor, mut reads) = (IngestCursor::default(), Vec::new());
    let r = reach(settle, DAY, 0);
    for (k, fate) in fates.iter().enumerate() {
        let now = t(k as i64 * TICK + jitter.get(k).copied().unwrap_or(0));
        if matches!(fate, Fate::Skipped) {
            continue;
        }
        let (next, plans) = plan_scans(&cursor, now, r, &tiers(), direction);
        cursor = next;
        for (i, plan) in plans.into_iter().enumerate() {
            let s = plan.scan;
            let (left_from, left_to) = match direction {
                Direction::NewestFirst => (s.from, s.position),
                Direction::OldestFirst => (s.position, s.to),
            };
            if matches!(fate, Fate::CutIn(n) if *n == i) {
                let mid = left_from + (left_to - left_from) / 2;
                let (read, position) = match direction {
                    Direction::NewestFirst => ((mid, left_to), mid),
                    Direction::OldestFirst => ((left_from, mid), mid),
                };
                reads.push((plan.lane, read.0, read.1, now));
                cursor.checkpoint(plan.lane, PendingScan { position, ..s });
                break;
            }
            reads.push((plan.lane, left_from, left_to, now));
            cursor.complete(plan.lane, s);
        }
    }
    (reads, cursor)
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => Just(Fate::Done),
        1 => Just(Fate::Skipped),
        1 => (0usize..5).prop_map(Fate::CutIn),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever ticks are skipped or cut off, each lane's reads follow each other exactly (no
    /// gap, no overlap) up to its mark, and a tier never reads an instant before it is `age`
    /// old.
    #[test]
    fn every_lane_covers_its_range_exactly_once_across_failures(
        fates in prop::collection::vec(fate(), 2 * 288),
        jitter in prop::collection::vec(0i64..60, 2 * 288),
        newest_first in any::<bool>(),
    ) {
        let direction = if newest_first { Direction::NewestFirst } else { Direction::OldestFirst };
        // A last tick without failure finishes what is pending.
        let mut fates = fates;
        fates.push(Fate::Done);
        let (reads, cursor) = simulate(&fates, &jitter, direction, 900);
        let mut lanes: BTreeMap<Lane, Vec<Piece>> = BTreeMap::new();
        for (lane, from, to, at) in &reads {
            prop_assert!(from <= to);
            if let Lane::Tier(age) = lane {
                prop_assert!(*to <= *at - Duration::seconds(900 + age), "read too young");
            }
            lanes.entry(*lane).or_default().push((*from, *to));
        }
        for (lane, mut pieces) in lanes {
            pieces.sort();
            for w in pieces.windows(2) {
                prop_assert_eq!(w[0].1, w[1].0, "{:?}: gap or overlap", lane);
            }
            let end = match lane {
                Lane::Fresh => cursor.watermark,
                Lane::Tier(age) => cursor.tiers.get(&age).map(|c| c.mark),
            };
            prop_assert_eq!(pieces.last().map(|p| p.1), end, "{:?}: read up to its mark", lane);
        }
        prop_assert!(cursor.pending.is_none() && cursor.tiers.values().all(|c| c.pending.is_none()));
    }

    /// Without failures, an observation that appears up to `settle + RESCAN_SECONDS` after
    /// its start is read by a pass after it appeared, within [`worst_detection`].
    #[test]
    fn late_observations_are_found_within_the_worst_case(
        start in 0i64..DAY,
        delay in 1i64..(DAY + 900),
        jitter in prop::collection::vec(0i64..30, 3 * 288),
    ) {
        let fates = vec![Fate::Done; 3 * 288];
        let (reads, _) = simulate(&fates, &jitter, Direction::NewestFirst, 900);
        let at = t(DAY / 2 + start);
        let appears = at + Duration::seconds(delay);
        let found = reads
            .iter()
            .filter(|(_, from, to, when)| *from <= at && at < *to && *when >= appears)
            .map(|r| r.3)
            .min();
        let bound = worst_detection(&tiers(), Duration::seconds(900), Duration::seconds(TICK + 30), Duration::seconds(delay))
            .expect("within the promise");
        prop_assert!(found.is_some(), "not found: start {} delay {}", start, delay);
        prop_assert!(found.is_some_and(|f| f <= at + bound), "found at {:?}, bound {:?}", found, bound);
    }
}

#[test]
fn in_steady_state_each_instant_is_listed_once_per_lane_a_day() {
    let fates = vec![Fate::Done; 6 * 288];
    let (reads, _) = simulate(&fates, &[], Direction::NewestFirst, 900);
    // Days 2 to 5 (after a day of warm-up): every lane read about a day's worth of instants a
    // day (the tiers in ranges about `every` long, so a single day may hold one more or less).
    let days = 4.0;
    let steady = reads.iter().filter(|r| r.3 >= t(2 * DAY));
    let mut by_lane: BTreeMap<Lane, Duration> = BTreeMap::new();
    for (lane, from, to, _) in steady {
        *by_lane.entry(*lane).or_insert(Duration::zero()) += *to - *from;
    }
    assert_eq!(by_lane.len(), 5, "{by_lane:?}");
    for (lane, read) in &by_lane {
        let hours = read.num_minutes() as f64 / 60.0 / days;
        assert!((22.0..=24.5).contains(&hours), "{lane:?}: {hours} h a day");
    }
    let total: Duration = by_lane.values().copied().sum();
    let listings = total.num_seconds() as f64 / DAY as f64 / days;
    assert!(
        listings <= 5.05 && listings > 4.7,
        "{listings} listings per instant a day"
    );
}
