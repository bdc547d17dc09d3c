//! Rate limits as OpenAI keeps them: one budget per *lane*, a (limit
//! group, model limit) pair, plus how a request's tokens are counted and
//! the TOML file `batchling mock --limits` reads (`batchling_core::limits`).
//!
//! Lanes are laid out once at start: every group of
//! [`LimitTable::groups`] (and [`DEFAULT_GROUP`]) has every limit of
//! [`LimitTable::models`] (and the default limit, `MockConfig::rpm` /
//! `tpm`). Looking a lane up is two hash lookups; admission locks only that
//! lane's budget.

mod budget;
mod count;

use std::collections::HashMap;

use tokio::time::Instant;

use crate::config::{DEFAULT_GROUP, DEFAULT_LIMIT, MockConfig};
use crate::stats::LaneStats;

pub use batchling_core::limits::{LimitsFile, LimitsFileError, MAX_LIMITS_FILE_BYTES};
pub(crate) use budget::{Admission, Cost, LimitKind, LimitSnapshot};
pub(crate) use count::charge;

use budget::{Budget, Rates};

/// Which lane a request is charged to (an index into the lane table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaneId(usize);

/// Every lane's budget, and the maps from keys and models to lanes.
#[derive(Debug)]
pub(crate) struct Limits {
    /// Group names; index 0 is [`DEFAULT_GROUP`].
    groups: Vec<String>,
    group_of_key: HashMap<String, usize>,
    /// Limit names; the last is the default limit.
    limit_names: Vec<String>,
    limit_of_model: HashMap<String, usize>,
    /// `groups.len() × limit_names.len()` budgets, group by group.
    lanes: Vec<Budget>,
}

impl Limits {
    pub(crate) fn new(start: Instant, config: &MockConfig) -> Self {
        let table = &config.limits;
        let mut groups = vec![DEFAULT_GROUP.to_owned()];
        let mut group_of_key = HashMap::new();
        for group in &table.groups {
            let index = groups
                .iter()
                .position(|g| *g == group.name)
                .unwrap_or_else(|| {
                    groups.push(group.name.clone());
                    groups.len() - 1
                });
            for key in &group.keys {
                group_of_key.entry(key.clone()).or_insert(index);
            }
        }
        let mut limit_of_model = HashMap::new();
        for (index, limit) in table.models.iter().enumerate() {
            for model in &limit.models {
                limit_of_model.entry(model.clone()).or_insert(index);
            }
        }
        let default = Rates {
            rpm: config.rpm,
            tpm: config.tpm,
            itpm: config.itpm,
            otpm: config.otpm,
        };
        let per_minute: Vec<Rates> = (table.models.iter())
            .map(|m| Rates {
                rpm: m.rpm,
                tpm: m.tpm,
                itpm: m.itpm,
                otpm: m.otpm,
            })
            .chain([default])
            .collect();
        let lanes = (0..groups.len())
            .flat_map(|_| per_minute.iter())
            .map(|&rates| Budget::new(start, config.window, rates))
            .collect();
        Limits {
            groups,
            group_of_key,
            limit_names: (table.models.iter())
                .map(|m| m.name.clone())
                .chain([DEFAULT_LIMIT.to_owned()])
                .collect(),
            limit_of_model,
            lanes,
        }
    }

    /// The lane of a request with this API key and model (`None`: not
    /// known, e.g. an unparseable body: the group's default limit).
    pub(crate) fn lane(&self, key: Option<&str>, model: Option<&str>) -> LaneId {
        // The empty checks keep the common case (no table) free of hashing.
        let group = (key.filter(|_| !self.group_of_key.is_empty()))
            .and_then(|k| self.group_of_key.get(k))
            .copied();
        let limit = (model.filter(|_| !self.limit_of_model.is_empty()))
            .and_then(|m| self.limit_of_model.get(m))
            .copied();
        let width = self.limit_names.len();
        LaneId(group.unwrap_or(0) * width + limit.unwrap_or(width - 1))
    }

    /// The index of a lane's limit group (what keeps groups' prompt caches
    /// apart).
    pub(crate) fn group_index(&self, lane: LaneId) -> usize {
        lane.0 / self.limit_names.len()
    }

    /// The organisation a lane's 429 messages name.
    pub(crate) fn group_name(&self, lane: LaneId) -> &str {
        &self.groups[lane.0 / self.limit_names.len()]
    }

    /// Take one request of `cost` from the lane, or say why not.
    /// Also the header values as the admission left the lane (`None`
    /// when it has no limit).
    pub(crate) fn admit(&self, lane: LaneId, cost: Cost) -> (Admission, Option<LimitSnapshot>) {
        let budget = &self.lanes[lane.0];
        let (admission, snapshot) = budget.admit_seen_at(Instant::now(), cost);
        (admission, budget.is_active().then_some(snapshot))
    }

    /// The lane's header values right now; `None` when it has no limit.
    pub(crate) fn snapshot(&self, lane: LaneId) -> Option<LimitSnapshot> {
        let budget = &self.lanes[lane.0];
        budget.is_active().then(|| budget.snapshot())
    }

    /// Every lane that has a limit, with what it admitted second by second.
    pub(crate) fn stats(&self) -> Vec<LaneStats> {
        let width = self.limit_names.len();
        (self.lanes.iter().enumerate())
            .filter(|(_, budget)| budget.is_active())
            .map(|(i, budget)| {
                let rates = budget.per_minute();
                let totals = budget.totals();
                let sum =
                    |f: fn(&crate::stats::SecondCount) -> u64| totals.seconds.iter().map(f).sum();
                LaneStats {
                    group: self.groups[i / width].clone(),
                    limit: self.limit_names[i % width].clone(),
                    rpm: rates.rpm,
                    tpm: rates.tpm,
                    itpm: rates.itpm,
                    otpm: rates.otpm,
                    requests: sum(|s| s.requests),
                    tokens: sum(|s| s.tokens),
                    input_tokens: sum(|s| s.input_tokens),
                    output_tokens: sum(|s| s.output_tokens),
                    rate_limited: totals.rate_limited,
                    per_second: totals.seconds,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitGroup, LimitTable, ModelLimit};

    fn limits() -> Limits {
        Limits::new(
            Instant::now(),
            &MockConfig {
                rpm: Some(10),
                limits: LimitTable {
                    models: vec![
                        ModelLimit::new("a", Some(1), None),
                        ModelLimit::shared("fam", &["b", "c"], Some(2), None),
                    ],
                    groups: vec![
                        LimitGroup::new("org-x", &["k1", "k2"]),
                        LimitGroup::new("org-y", &["k3"]),
                    ],
                },
                ..MockConfig::default()
            },
        )
    }

    #[test]
    fn lanes_are_group_by_limit() {
        let l = limits();
        assert_eq!(l.lane(None, Some("a")), LaneId(0));
        assert_eq!(l.lane(None, Some("c")), LaneId(1));
        assert_eq!(l.lane(None, Some("zzz")), LaneId(2));
        assert_eq!(l.lane(None, None), LaneId(2));
        assert_eq!(l.lane(Some("k2"), Some("b")), LaneId(4));
        assert_eq!(l.lane(Some("k1"), Some("b")), LaneId(4));
        assert_eq!(l.lane(Some("k3"), Some("b")), LaneId(7));
        assert_eq!(l.lane(Some("unknown"), Some("b")), LaneId(1));
        assert_eq!(l.group_name(LaneId(7)), "org-y");
        assert_eq!(l.group_name(LaneId(2)), DEFAULT_GROUP);
    }

    #[test]
    fn stats_name_each_lane_and_count_its_seconds() {
        let l = limits();
        let lane = l.lane(Some("k1"), Some("b"));
        let five = Cost {
            tokens: 5,
            ..Cost::default()
        };
        let (first, seen) = l.admit(lane, five);
        assert_eq!(first, Admission::Admitted);
        // The headers are the budget as this admission left it.
        let remaining = |seen: Option<LimitSnapshot>| seen.and_then(|s| s.requests).map(|r| r.1);
        let left_after_first = remaining(seen).unwrap();
        let (second, seen) = l.admit(lane, five);
        assert_eq!(second, Admission::Admitted);
        assert_eq!(remaining(seen), Some(left_after_first - 1));
        let (third, seen) = l.admit(lane, five);
        assert!(matches!(third, Admission::Limited { .. }));
        assert_eq!(remaining(seen), Some(0), "a refusal costs nothing");
        let stats = l.stats();
        assert_eq!(stats.len(), 9);
        let s = stats
            .iter()
            .find(|s| s.group == "org-x" && s.limit == "fam")
            .unwrap();
        assert_eq!((s.requests, s.tokens, s.rate_limited), (2, 10, 1));
        assert_eq!(s.per_second.len(), 1);
        assert_eq!(s.peak().requests, 2);
    }
}
