//! Budget rules: periods in the key, hard and soft limits, alert thresholds.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc, Weekday};

/// A budget period, in UTC calendar terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC calendar day.
    Day,
    /// An ISO week (Monday to Sunday, UTC).
    Week,
    /// A UTC calendar month.
    Month,
}

impl Period {
    /// Parses `day`, `week` or `month`.
    pub fn parse(s: &str) -> Option<Period> {
        match s.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" => Some(Period::Day),
            "week" | "weekly" => Some(Period::Week),
            "month" | "monthly" => Some(Period::Month),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The key of the period that contains `at`: `2026-11-23`, `2026-W48` or `2026-11`.
    pub fn key(self, at: DateTime<Utc>) -> String {
        match self {
            Period::Day => at.format("%Y-%m-%d").to_string(),
            Period::Week => {
                let week = at.iso_week();
                format!("{}-W{:02}", week.year(), week.week())
            }
            Period::Month => at.format("%Y-%m").to_string(),
        }
    }
}

/// A period key read back: the kind and first instant of the period `key` names, when `key`
/// is exactly what [`Period::key`] writes (`2026-11`, `2026-W48`, `2026-11-23`); else `None`.
pub fn period_of_key(key: &str) -> Option<(Period, DateTime<Utc>)> {
    let (kind, first) = match key.split_once("-W") {
        Some((year, week)) => {
            let (year, week) = (year.parse().ok()?, week.parse().ok()?);
            (
                Period::Week,
                NaiveDate::from_isoywd_opt(year, week, Weekday::Mon)?,
            )
        }
        None if key.len() == 7 => (
            Period::Month,
            NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d").ok()?,
        ),
        None => (
            Period::Day,
            NaiveDate::parse_from_str(key, "%Y-%m-%d").ok()?,
        ),
    };
    let start = Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0)?);
    // Only the exact written form: no unpadded month, no sign, no spaces.
    (kind.key(start) == key).then_some((kind, start))
}

/// The most alert thresholds a policy takes, and the highest percentage.
pub const MAX_THRESHOLDS: usize = 20;
/// The highest alert threshold, in percent.
pub const MAX_THRESHOLD_PCT: u32 = 1000;

/// Parses alert thresholds: percentages from 1 to 1000, comma separated (`50,80,100`), or
/// `none` for no alerts; sorted, without repeats. The error says what is wrong (an empty list
/// or an empty item is refused: it is a mistake, never a way to say "no alerts").
pub fn parse_thresholds(raw: &str) -> Result<Vec<u32>, String> {
    if raw.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, part) in raw.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            return Err(format!(
                "item {} is empty; expected percentages from 1 to {MAX_THRESHOLD_PCT} such as 50,80,100, or none",
                i + 1
            ));
        }
        let pct: u32 = match part.parse() {
            Ok(p) if (1..=MAX_THRESHOLD_PCT).contains(&p) => p,
            _ => {
                return Err(format!(
                    "{part:?} is not a whole percentage from 1 to {MAX_THRESHOLD_PCT}"
                ));
            }
        };
        out.push(pct);
        if out.len() > MAX_THRESHOLDS {
            return Err(format!("more than {MAX_THRESHOLDS} thresholds"));
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// What happens at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetMode {
    /// Never bill past the limit; the excess is recorded as capped.
    Hard,
    /// Always bill; alert at thresholds.
    Soft,
}

impl BudgetMode {
    /// Parses `hard` or `soft`.
    pub fn parse(s: &str) -> Option<BudgetMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hard" => Some(BudgetMode::Hard),
            "soft" => Some(BudgetMode::Soft),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetMode::Hard => "hard",
            BudgetMode::Soft => "soft",
        }
    }
}

/// A customer's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Credits per period; `None` means unlimited (usage is still counted).
    pub limit: Option<u64>,
    /// The period the limit applies to.
    pub period: Period,
    /// Hard or soft.
    pub mode: BudgetMode,
    /// Alert thresholds in percent of the limit, ascending.
    pub thresholds: Vec<u32>,
}

/// How a charge splits against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Credits to bill.
    pub billable: u64,
    /// Credits not billed because the hard limit was reached.
    pub capped: u64,
}

impl BudgetPolicy {
    /// The hard limit, when one applies.
    pub fn hard_limit(&self) -> Option<u64> {
        match self.mode {
            BudgetMode::Hard => self.limit,
            BudgetMode::Soft => None,
        }
    }

    /// Splits `credits` given `used` credits already counted in the period.
    pub fn split(&self, used: u64, credits: u64) -> Split {
        match self.hard_limit() {
            Some(limit) => {
                let room = limit.saturating_sub(used);
                let billable = credits.min(room);
                Split {
                    billable,
                    capped: credits - billable,
                }
            }
            None => Split {
                billable: credits,
                capped: 0,
            },
        }
    }

    /// Shares the room under the hard limit among charges in the order given: earlier charges
    /// get the room first, what does not fit is capped. `used` is what the period already
    /// counts. Without a hard limit every charge is billed in full.
    pub fn share(&self, used: u64, charges: &[u64]) -> Vec<Split> {
        let mut running = used;
        charges
            .iter()
            .map(|&credits| {
                let split = self.split(running, credits);
                running = running.saturating_add(split.billable);
                split
            })
            .collect()
    }

    /// The thresholds reached at `used` credits (all of them, not only new ones).
    pub fn thresholds_reached(&self, used: u64) -> Vec<u32> {
        let Some(limit) = self.limit.filter(|l| *l > 0) else {
            return Vec::new();
        };
        self.thresholds
            .iter()
            .copied()
            .filter(|pct| u128::from(used) * 100 >= u128::from(*pct) * u128::from(limit))
            .collect()
    }
}

/// A budget counter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetUsage {
    /// Credits billed in the period.
    pub used: u64,
    /// Credits capped in the period.
    pub capped: u64,
    /// Whether the hard limit was reached.
    pub exceeded: bool,
    /// How many times the period's exceeded flag was cleared: the number of the limit
    /// episode now running (a reach and the clearing that ends it are one episode), which
    /// keys the `Budget Limit Reached` and `Budget Limit Cleared` events.
    pub clears: u64,
    /// The thresholds whose `Budget Threshold Crossed` event is known to be recorded (marked
    /// on the counter once recorded): a check does not put them again.
    pub alerted: std::collections::BTreeSet<u32>,
    /// The latest limit episode whose `Budget Limit Reached` event is known to be recorded.
    pub reached: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, s)
            .single()
            .expect("valid time")
    }

    fn hard(limit: u64) -> BudgetPolicy {
        BudgetPolicy {
            limit: Some(limit),
            period: Period::Month,
            mode: BudgetMode::Hard,
            thresholds: vec![50, 80, 100],
        }
    }

    #[test]
    fn periods_and_modes_read_back_from_their_stored_names() {
        for p in [Period::Day, Period::Week, Period::Month] {
            assert_eq!(Period::parse(p.as_str()), Some(p));
        }
        assert_eq!(
            [Period::Day, Period::Week, Period::Month].map(Period::as_str),
            ["day", "week", "month"]
        );
        assert_eq!(Period::parse(" Daily"), Some(Period::Day));
        assert_eq!(Period::parse("WEEKLY"), Some(Period::Week));
        assert_eq!(Period::parse("monthly"), Some(Period::Month));
        assert_eq!(Period::parse("year"), None);
        for m in [BudgetMode::Hard, BudgetMode::Soft] {
            assert_eq!(BudgetMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(
            [BudgetMode::Hard, BudgetMode::Soft].map(BudgetMode::as_str),
            ["hard", "soft"]
        );
        assert_eq!(BudgetMode::parse(" HARD "), Some(BudgetMode::Hard));
        assert_eq!(BudgetMode::parse("strict"), None);
    }

    #[test]
    fn a_zero_limit_reaches_no_threshold() {
        let policy = BudgetPolicy {
            limit: Some(0),
            mode: BudgetMode::Soft,
            ..hard(0)
        };
        assert_eq!(policy.thresholds_reached(500), Vec::<u32>::new());
    }

    fn billed(splits: &[Split]) -> Vec<(u64, u64)> {
        splits.iter().map(|s| (s.billable, s.capped)).collect()
    }

    #[test]
    fn a_hard_limit_is_shared_in_order() {
        // GIVEN 100 credits of room, 30 already used
        // WHEN three charges of 40 arrive in one batch
        // THEN the first two fit (70 left, then 30), the third is capped entirely
        let splits = hard(100).share(30, &[40, 40, 40]);
        assert_eq!(billed(&splits), vec![(40, 0), (30, 10), (0, 40)]);
    }

    #[test]
    fn soft_and_unlimited_budgets_share_nothing_out() {
        let mut soft = hard(100);
        soft.mode = BudgetMode::Soft;
        assert_eq!(billed(&soft.share(90, &[40, 40])), vec![(40, 0), (40, 0)]);
        let unlimited = BudgetPolicy {
            limit: None,
            ..hard(0)
        };
        assert_eq!(billed(&unlimited.share(u64::MAX, &[5])), vec![(5, 0)]);
    }

    #[test]
    fn a_period_already_over_its_limit_caps_everything() {
        assert_eq!(billed(&hard(10).share(12, &[1, 2])), vec![(0, 1), (0, 2)]);
    }

    #[test]
    fn period_keys_use_the_usage_time_in_utc() {
        let last_second = at(2026, 11, 30, 23, 59, 59);
        let next = at(2026, 12, 1, 0, 0, 0);
        assert_eq!(Period::Month.key(last_second), "2026-11");
        assert_eq!(Period::Month.key(next), "2026-12");
        assert_eq!(Period::Day.key(last_second), "2026-11-30");
        assert_eq!(Period::Day.key(next), "2026-12-01");
        // ISO week: 2026-12-31 is a Thursday in 2026-W53; 2027-01-01 too.
        assert_eq!(Period::Week.key(at(2026, 12, 31, 12, 0, 0)), "2026-W53");
        assert_eq!(Period::Week.key(at(2027, 1, 1, 12, 0, 0)), "2026-W53");
        assert_eq!(Period::Week.key(at(2026, 11, 22, 23, 59, 59)), "2026-W47");
        assert_eq!(Period::Week.key(at(2026, 11, 23, 0, 0, 0)), "2026-W48");
    }

    #[test]
    fn hard_limit_caps_the_excess() {
        let p = BudgetPolicy {
            limit: Some(100),
            period: Period::Month,
            mode: BudgetMode::Hard,
            thresholds: vec![50, 80, 100],
        };
        assert_eq!(
            p.split(0, 60),
            Split {
                billable: 60,
                capped: 0
            }
        );
        assert_eq!(
            p.split(60, 60),
            Split {
                billable: 40,
                capped: 20
            }
        );
        assert_eq!(
            p.split(100, 5),
            Split {
                billable: 0,
                capped: 5
            }
        );
        assert_eq!(
            p.split(150, 5),
            Split {
                billable: 0,
                capped: 5
            }
        );
    }

    #[test]
    fn soft_limit_bills_everything_and_reports_thresholds() {
        let p = BudgetPolicy {
            limit: Some(1000),
            period: Period::Day,
            mode: BudgetMode::Soft,
            thresholds: vec![50, 80, 100],
        };
        assert_eq!(
            p.split(5000, 10),
            Split {
                billable: 10,
                capped: 0
            }
        );
        assert_eq!(p.thresholds_reached(499), Vec::<u32>::new());
        assert_eq!(p.thresholds_reached(500), vec![50]);
        assert_eq!(p.thresholds_reached(1200), vec![50, 80, 100]);
    }
}
