//! Budget events: a threshold crossed, a hard limit reached, a hard limit raised above the
//! period's usage again. Each is written once as an item of its own (the item is the event:
//! the table's stream carries it to EventBridge), keyed so that no caller can write it twice.

use super::budget::BudgetMode;
use chrono::{DateTime, Utc};

/// The `source` of every event on the bus.
pub const EVENT_SOURCE: &str = "tracemeter";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BudgetEventKind {
    /// Usage reached `percent` % of the limit (one event per threshold and period).
    ThresholdCrossed {
        /// The threshold, in percent of the limit.
        percent: u32,
    },
    /// A hard limit was reached: the gateway must stop the customer (one event per period
    /// and limit episode).
    LimitReached,
    /// A reached hard limit no longer holds: raised above the period's usage, credits given
    /// back under it, or the budget made soft or unlimited. The gateway may let the
    /// customer spend (one event per period and limit episode).
    LimitCleared,
}

impl BudgetEventKind {
    /// The EventBridge `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            BudgetEventKind::ThresholdCrossed { .. } => "Budget Threshold Crossed",
            BudgetEventKind::LimitReached => "Budget Limit Reached",
            BudgetEventKind::LimitCleared => "Budget Limit Cleared",
        }
    }
}

/// One budget event, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetEvent {
    /// The Stripe customer.
    pub customer_id: String,
    /// The period key (`2026-11`, `2026-W48`, `2026-11-23`).
    pub period: String,
    /// What happened.
    pub kind: BudgetEventKind,
    /// Credits used in the period when it happened.
    pub used: u64,
    /// The limit then (for a clearing: the new limit; 0 when the budget has none).
    pub limit: u64,
    /// The budget's mode.
    pub mode: BudgetMode,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The period's limit episode ([`super::budget::BudgetUsage::clears`] when the event
    /// was decided): a limit reached and its clearing share one, so a period whose limit
    /// is reached, cleared and reached again sends each event again.
    pub episode: u64,
}

impl BudgetEvent {
    /// The percent of the `detail`: the threshold for a crossing, else usage in whole
    /// percent of the limit (rounded down).
    pub fn percent(&self) -> u64 {
        match self.kind {
            BudgetEventKind::ThresholdCrossed { percent } => u64::from(percent),
            _ if self.limit == 0 => 0,
            _ => {
                let pct = u128::from(self.used) * 100 / u128::from(self.limit);
                u64::try_from(pct).unwrap_or(u64::MAX)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: BudgetEventKind, used: u64, limit: u64) -> BudgetEvent {
        BudgetEvent {
            customer_id: "cus_1".into(),
            period: "2026-11".into(),
            kind,
            used,
            limit,
            mode: BudgetMode::Hard,
            at: Utc::now(),
            episode: 0,
        }
    }

    #[test]
    fn the_percent_is_the_threshold_or_the_share_of_the_limit() {
        let crossed = BudgetEventKind::ThresholdCrossed { percent: 80 };
        assert_eq!(event(crossed, 812, 1000).percent(), 80);
        assert_eq!(
            event(BudgetEventKind::LimitReached, 150, 150).percent(),
            100
        );
        assert_eq!(event(BudgetEventKind::LimitCleared, 150, 400).percent(), 37);
        assert_eq!(
            event(BudgetEventKind::LimitCleared, u64::MAX, 1).percent(),
            u64::MAX
        );
        assert_eq!(event(BudgetEventKind::LimitReached, 5, 0).percent(), 0);
    }

    #[test]
    fn each_kind_has_its_detail_type() {
        let crossed = BudgetEventKind::ThresholdCrossed { percent: 50 };
        assert_eq!(crossed.detail_type(), "Budget Threshold Crossed");
        assert_eq!(
            BudgetEventKind::LimitReached.detail_type(),
            "Budget Limit Reached"
        );
        assert_eq!(
            BudgetEventKind::LimitCleared.detail_type(),
            "Budget Limit Cleared"
        );
    }
}
