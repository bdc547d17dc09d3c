//! Limits given per model, and families of models sharing one lane: what
//! `--limits FILE` says (`batchling_core::limits`), as the pacer looks it
//! up when it makes a lane.
//!
//! A model listed in an entry gets that entry's limits and nothing of the
//! defaults (as the fake provider reads the same file): an entry is a
//! model's row of the provider's limits page. A family (an entry listing
//! several models) is one lane: one budget, one slow start, one pause.

use std::collections::HashMap;

use batchling_core::limits::LimitTable;

use super::Dimension;

/// Limits given by the user for one lane; `None` = not given (learned from
/// headers, if they say).
pub type GivenLimits = super::PerMinute;

/// One entry: a model's own limits, or a family's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The entry's name (`[models.NAME]`): a family's lane is shown by it.
    pub(super) name: Box<str>,
    /// More than one model shares it.
    pub(super) family: bool,
    pub(super) limits: GivenLimits,
}

/// Limits given per model and family (the `[models.*]` of a limits file).
/// Empty by default: every model has a lane of its own at the default
/// limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelLimits {
    entries: Vec<Entry>,
    /// Model name → index into `entries`.
    of_model: HashMap<Box<str>, u32>,
}

impl ModelLimits {
    /// The `[models.*]` entries of a limits file's table (its `[groups]`
    /// are the fake provider's, and not read here). A model listed twice
    /// keeps its first entry.
    pub fn from_table(table: &LimitTable) -> Self {
        let mut m = ModelLimits::default();
        for e in &table.models {
            let limits = GivenLimits {
                rpm: e.rpm,
                tpm: e.tpm,
                itpm: e.itpm,
                otpm: e.otpm,
            };
            let models: Vec<&str> = e.models.iter().map(String::as_str).collect();
            m.add(&e.name, &models, limits);
        }
        m
    }

    /// Give `models` one lane named `name` with `limits` (a family when
    /// more than one). A model already given keeps its first entry.
    pub fn add(&mut self, name: &str, models: &[&str], limits: GivenLimits) {
        let index = self.entries.len() as u32;
        self.entries.push(Entry {
            name: name.into(),
            family: models.len() > 1,
            limits,
        });
        for m in models {
            self.of_model.entry((*m).into()).or_insert(index);
        }
    }

    /// Whether no model has limits of its own.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry `model` is in: its index and the entry.
    pub(super) fn lookup(&self, model: &str) -> Option<(u32, &Entry)> {
        if self.of_model.is_empty() {
            return None;
        }
        let &i = self.of_model.get(model)?;
        Some((i, &self.entries[i as usize]))
    }

    /// Any entry's limit of `d` is given.
    pub(super) fn any(&self, d: Dimension) -> bool {
        self.entries.iter().any(|e| e.limits.get(d).is_some())
    }
}
