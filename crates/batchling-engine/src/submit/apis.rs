//! Which Batch API a part goes to: the one API of a submit on one provider
//! ([`Apis::one`]), or, for a routes config ([`Apis::routed`]), the Batch
//! API of the target that would answer a line first (its route's primary).
//! The engine names no provider: the caller builds each target's client.

use std::collections::HashMap;

use batchling_core::pricing::ModelPrice;
use batchling_providers::BatchApi;
use batchling_providers::batch::Refusal;

/// One target of a routes config, as a Batch API sees it.
#[derive(Debug)]
pub struct BatchTarget<B> {
    /// Its Batch API client (built with one key of the target).
    pub api: B,
    /// The provider's model name, written into each line's body.
    pub model: String,
    /// The limit group of the key its batches are sent with.
    pub group: String,
    /// That key's id in its group (journaled with each answer; never the
    /// key).
    pub key_id: String,
    /// The config's price of the target (`None`: the catalog's of
    /// `model`); batch answers cost its batch price.
    pub price: Option<ModelPrice>,
}

/// The Batch APIs a submit's parts go to.
#[derive(Debug)]
pub struct Apis<B> {
    /// Without routes: the API every part goes to.
    one: Option<B>,
    /// By name, in the order given.
    targets: Vec<(String, BatchTarget<B>)>,
    /// A line's `model` (a route, or a target named directly) → its route's
    /// name and the index of its primary in `targets`.
    routes: HashMap<String, (String, usize)>,
}

/// Where a line goes ([`Apis::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed<'a> {
    /// The target (`None`: the one API, the line as it is).
    pub(crate) target: Option<&'a str>,
    /// The route its model named.
    pub(crate) route: Option<&'a str>,
    /// The model to write into its body.
    pub(crate) model: Option<&'a str>,
}

impl<B: BatchApi> Apis<B> {
    /// Every part on `api`, lines as they are.
    pub fn one(api: B) -> Self {
        Apis {
            one: Some(api),
            targets: Vec::new(),
            routes: HashMap::new(),
        }
    }

    /// Parts by target: add them with [`Apis::target`] and the routes with
    /// [`Apis::route`].
    pub fn routed() -> Self {
        Apis {
            one: None,
            targets: Vec::new(),
            routes: HashMap::new(),
        }
    }

    /// Add target `name`.
    pub fn target(&mut self, name: &str, target: BatchTarget<B>) {
        self.targets.push((name.to_owned(), target));
    }

    /// Lines whose model is `name` go to `primary`'s Batch API (the first
    /// target of the route's chain). False when no target has that name.
    pub fn route(&mut self, name: &str, primary: &str) -> bool {
        let Some(i) = self.targets.iter().position(|(n, _)| n == primary) else {
            return false;
        };
        self.routes.insert(name.to_owned(), (name.to_owned(), i));
        true
    }

    /// Whether parts go by target (a routes config).
    pub(crate) fn is_routed(&self) -> bool {
        self.one.is_none()
    }

    /// Where a line of `model` goes; a refusal when a routes config has no
    /// route for it.
    pub(crate) fn place(&self, model: Option<&str>) -> Result<Placed<'_>, Refusal> {
        if self.one.is_some() {
            return Ok(Placed {
                target: None,
                route: None,
                model: None,
            });
        }
        let found = model.and_then(|m| self.routes.get(m));
        let Some((route, i)) = found else {
            return Err(Refusal {
                code: "no_route",
                message: format!(
                    "the model {} names no route or model of the config",
                    model.map_or_else(|| "(none)".to_owned(), |m| format!("{m:?}"))
                ),
            });
        };
        let (name, t) = &self.targets[*i];
        Ok(Placed {
            target: Some(name),
            route: Some(route),
            model: Some(&t.model),
        })
    }

    /// The API of a part's target (`None`: the one API); `None` when the
    /// config has no such target (any more).
    pub(crate) fn api(&self, target: Option<&str>) -> Option<&B> {
        match target {
            None => self.one.as_ref(),
            Some(name) => self.batch_target(name).map(|t| &t.api),
        }
    }

    /// Target `name`.
    pub(crate) fn batch_target(&self, name: &str) -> Option<&BatchTarget<B>> {
        self.targets.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The APIs' settings ([`BatchApi::settings`]), journaled: the one
    /// API's, or a JSON object of each target's that has any (a JSON
    /// value, or its text).
    pub(crate) fn settings(&self) -> Option<String> {
        if let Some(one) = &self.one {
            return one.settings();
        }
        let each: serde_json::Map<String, serde_json::Value> = self
            .targets
            .iter()
            .filter_map(|(n, t)| {
                let text = t.api.settings()?;
                let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                Some((n.clone(), value))
            })
            .collect();
        (!each.is_empty()).then(|| serde_json::Value::Object(each).to_string())
    }
}
