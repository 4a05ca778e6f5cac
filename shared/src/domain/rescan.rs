//! Which ranges an ingest run scans: the fresh range on every tick, and older ranges again at
//! decreasing frequency (the re-scan tiers), so late observations are found without reading
//! the whole re-scan window on every tick.
//!
//! Ages count back from `end = now - settle`. A tier `(age, every)` reads every instant once
//! more when the instant is `age` old: it keeps a mark (where its last range ended) and, once
//! `end - age` has moved about `every` past the mark, scans `[mark, end - age)` and moves
//! the mark to the range's end. The fresh lane is the same with age 0 on every tick (from the
//! watermark). Ranges follow each other exactly, so a skipped or failed tick leaves no gap:
//! the next run's range simply starts where the last one ended. A range that is cut off is
//! saved as its lane's [`PendingScan`] and resumed first.
//!
//! An observation that becomes visible `d` after its start time is found by the first lane
//! whose pass over that instant comes after `d`: the fresh lane when `d <= settle`, else the
//! first tier with `settle + age >= d` ([`worst_detection`] bounds when). With the default
//! tiers each instant is listed 5 times (fresh + 4 tiers) instead of once per tick (288 a day).

use super::ingest::{Direction, PendingScan, truncate_ms};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

/// The default `RESCAN_TIERS`: `AGE:EVERY` in seconds (15 min every 15 min, 1 h hourly,
/// 6 h hourly, 24 h every 6 h).
pub const DEFAULT_RESCAN_TIERS: &str = "900:900,3600:3600,21600:3600,86400:21600";

/// A re-scan tier: every instant is read once more when it is `age` old (after settling), in
/// ranges of about `every` (so the tier runs about every `every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescanTier {
    /// How old an instant is when the tier reads it again.
    pub age: Duration,
    /// How often the tier runs (the length of its ranges).
    pub every: Duration,
}

/// The default tiers ([`DEFAULT_RESCAN_TIERS`]).
pub fn default_tiers() -> Vec<RescanTier> {
    parse_tiers(DEFAULT_RESCAN_TIERS).unwrap_or_default()
}

/// The longest tier age or period: 366 days, in seconds.
pub const MAX_TIER_SECONDS: u64 = 366 * 86_400;

/// Parses `AGE:EVERY[,AGE:EVERY...]` (seconds, both positive, ages increasing); an empty
/// string is no tier.
pub fn parse_tiers(raw: &str) -> Result<Vec<RescanTier>, String> {
    let mut tiers: Vec<RescanTier> = Vec::new();
    if raw.trim().is_empty() {
        return Ok(tiers);
    }
    for (i, part) in raw.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            return Err(format!(
                "item {} is empty; expected AGE:EVERY pairs such as 900:900,3600:3600",
                i + 1
            ));
        }
        let (age, every) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not AGE:EVERY (seconds)"))?;
        let secs = |v: &str| {
            let v = v.trim();
            let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            match v.parse::<i64>() {
                Ok(s) if s > 0 && s.unsigned_abs() <= MAX_TIER_SECONDS => Ok(Duration::seconds(s)),
                _ if digits && !v.trim_start_matches('0').is_empty() => Err(format!(
                    "{v:?} in {part:?} is more than {MAX_TIER_SECONDS} seconds (366 days), the longest a tier may be"
                )),
                _ => Err(format!(
                    "{v:?} in {part:?} is not a positive whole number of seconds"
                )),
            }
        };
        let tier = RescanTier {
            age: secs(age)?,
            every: secs(every)?,
        };
        if tiers.last().is_some_and(|last| last.age >= tier.age) {
            return Err(format!("ages must increase: {part:?}"));
        }
        tiers.push(tier);
    }
    Ok(tiers)
}

/// The tiers a deployment runs: the configured ones younger than `rescan`, then one at
/// exactly `rescan` (the outer bound: late observations up to `settle + rescan` are found),
/// running as often as the first configured tier at or past `rescan` (else the last one),
/// at most every `rescan`. No tier when `rescan` is zero.
pub fn effective_tiers(configured: &[RescanTier], rescan: Duration) -> Vec<RescanTier> {
    if rescan <= Duration::zero() {
        return Vec::new();
    }
    let mut tiers: Vec<RescanTier> = configured
        .iter()
        .copied()
        .filter(|t| t.age < rescan)
        .collect();
    let every = configured
        .iter()
        .find(|t| t.age >= rescan)
        .or(configured.last())
        .map_or(rescan, |t| t.every)
        .min(rescan);
    tiers.push(RescanTier { age: rescan, every });
    tiers
}

/// Which pass of a run a range belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// New settled usage, from the watermark.
    Fresh,
    /// The re-scan tier of this age (seconds).
    Tier(i64),
}

/// A tier's place in the cursor item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierCursor {
    /// Everything before this was read again by the tier (where its last range ended).
    pub mark: DateTime<Utc>,
    /// A range of the tier that was cut off.
    pub pending: Option<PendingScan>,
}

/// Ingest's cursor item: the watermark, the tiers' marks and, mid-scan, resume positions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngestCursor {
    /// Everything before this was scanned at least once. `None` before the first run.
    pub watermark: Option<DateTime<Utc>>,
    /// A fresh range that was cut off.
    pub pending: Option<PendingScan>,
    /// The re-scan tiers by age in seconds.
    pub tiers: BTreeMap<i64, TierCursor>,
}

impl IngestCursor {
    /// Saves the position reached within `lane`'s range.
    pub fn checkpoint(&mut self, lane: Lane, scan: PendingScan) {
        match lane {
            Lane::Fresh => self.pending = Some(scan),
            Lane::Tier(age) => {
                let entry = self.tiers.entry(age).or_insert(TierCursor {
                    mark: scan.from,
                    pending: None,
                });
                entry.pending = Some(scan);
            }
        }
    }

    /// `lane`'s range is covered: its mark (the watermark for the fresh lane) moves to the
    /// range's end and nothing is pending in it.
    pub fn complete(&mut self, lane: Lane, scan: PendingScan) {
        match lane {
            Lane::Fresh => {
                self.watermark = Some(self.watermark.map_or(scan.to, |w| w.max(scan.to)));
                self.pending = None;
            }
            Lane::Tier(age) => {
                let mark = self
                    .tiers
                    .get(&age)
                    .map_or(scan.to, |t| t.mark.max(scan.to));
                self.tiers.insert(
                    age,
                    TierCursor {
                        mark,
                        pending: None,
                    },
                );
            }
        }
    }
}

/// How far back a run reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Usage younger than this is not scanned yet.
    pub settle: Duration,
    /// The oldest tier's age (`RESCAN_SECONDS`); also how far back the first run reaches.
    pub rescan: Duration,
    /// Where the very first run (no watermark yet) starts, before `now - settle`.
    pub start_lookback: Duration,
}

/// One range a run scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPlan {
    /// The pass it belongs to.
    pub lane: Lane,
    /// The range (new or resumed) with its start position.
    pub scan: PendingScan,
    /// True when resuming a range that an earlier run started.
    pub resumed: bool,
}

/// Plans a run: the fresh range first (resumed, else `[watermark, end)` with
/// `end = now - settle`; the first run starts at `end - max(rescan, start_lookback)`), then
/// each due tier, youngest first (resumed, else `[mark, min(end - age, watermark))` once that
/// is about `every` long: at least 9/10 of it). Returns the cursor with the marks of new tiers set (a tier
/// without a mark starts at `watermark - age`: what the watermark covered is already read at
/// every younger age; tiers no longer configured are dropped) and the ranges in order.
pub fn plan_scans(
    cursor: &IngestCursor,
    now: DateTime<Utc>,
    reach: Reach,
    tiers: &[RescanTier],
    direction: Direction,
) -> (IngestCursor, Vec<ScanPlan>) {
    let end = truncate_ms(now - reach.settle);
    let covered = cursor.watermark.unwrap_or(end);
    let mut next = IngestCursor {
        tiers: BTreeMap::new(),
        ..cursor.clone()
    };
    let fresh = match cursor.pending.filter(|p| p.from < p.to) {
        Some(p) => Some((p, true)),
        None => {
            let start = cursor
                .watermark
                .unwrap_or_else(|| (end - reach.rescan).min(end - reach.start_lookback));
            new_range(start, end, direction).map(|s| (s, false))
        }
    };
    let mut plans: Vec<ScanPlan> = fresh
        .map(|(scan, resumed)| ScanPlan {
            lane: Lane::Fresh,
            scan,
            resumed,
        })
        .into_iter()
        .collect();
    for tier in tiers {
        let age = tier.age.num_seconds();
        let state = cursor.tiers.get(&age).copied().unwrap_or(TierCursor {
            mark: covered - tier.age,
            pending: None,
        });
        next.tiers.insert(age, state);
        let planned = match state.pending.filter(|p| p.from < p.to) {
            Some(p) => Some((p, true)),
            None => {
                let upper = (end - tier.age).min(covered);
                (upper - state.mark >= due_after(tier.every))
                    .then(|| new_range(state.mark, upper, direction))
                    .flatten()
                    .map(|s| (s, false))
            }
        };
        if let Some((scan, resumed)) = planned {
            plans.push(ScanPlan {
                lane: Lane::Tier(age),
                scan,
                resumed,
            });
        }
    }
    (next, plans)
}

/// How long a tier's range must be before it is read: 9/10 of `every`, so that a tick a few
/// seconds early (the schedule's jitter, the run's own start-up) does not put the tier off to
/// the next tick.
fn due_after(every: Duration) -> Duration {
    every - every / 10
}

/// `[from, to)` with the position where `direction` starts; `None` when empty.
fn new_range(from: DateTime<Utc>, to: DateTime<Utc>, direction: Direction) -> Option<PendingScan> {
    let position = match direction {
        Direction::NewestFirst => to,
        Direction::OldestFirst => from,
    };
    (from < to).then_some(PendingScan { from, to, position })
}

/// The latest an observation that becomes visible `delay` after its start time is found,
/// counted from that start time, when ingest runs every `tick` without failures: the fresh
/// lane's pass (`settle + tick`) when `delay <= settle`, else the first tier with
/// `settle + age >= delay` (`settle + age + every + tick`). `None` past the oldest tier
/// (later than `settle + RESCAN_SECONDS`: not promised).
pub fn worst_detection(
    tiers: &[RescanTier],
    settle: Duration,
    tick: Duration,
    delay: Duration,
) -> Option<Duration> {
    if delay <= settle {
        return Some(settle + tick);
    }
    tiers
        .iter()
        .find(|t| settle + t.age >= delay)
        .map(|t| settle + t.age + t.every + tick)
}

#[cfg(test)]
#[path = "rescan_tests.rs"]
mod tests;
