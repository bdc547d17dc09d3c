//! What needs the whole file: every name used is defined, groups and
//! models agree on their provider, keys are not shared, chains expand
//! without loops or repeats; then the warnings.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::pricing::Catalog;
use crate::tomlfile::{Problem, closest};

use super::parse::{Spots, all_of, one_of};
use super::{Chains, MAX_CHAIN_TARGETS, MAX_ROUTE_DEPTH, RouteConf, RoutesConfig, join};

/// Beyond these, a limit is a typo (requests and tokens per minute).
const MAX_RPM: u64 = 1_000_000_000;
const MAX_TPM: u64 = 1_000_000_000_000;

/// Check the parsed file and expand its chains; the warnings found.
pub(super) fn check(cfg: &mut RoutesConfig, spots: &Spots) -> Result<Vec<Problem>, Problem> {
    let mut warnings = Vec::new();
    groups(cfg, spots, &mut warnings)?;
    models(cfg, spots)?;
    let expanded = expand_all(cfg, spots)?;
    for (name, chains) in expanded {
        if let Some(route) = cfg.routes.get_mut(&name) {
            route.expanded = chains;
        }
    }
    warn_unused(cfg, &mut warnings);
    warn_pools(cfg, &mut warnings);
    warn_limits(cfg, spots, &mut warnings);
    for route in cfg.routes.values() {
        warn_route(cfg, route, spots, &mut warnings);
    }
    Ok(warnings)
}

fn at(spots: &Spots, field: String, message: String) -> Problem {
    Problem {
        line: spots.line(&field),
        field,
        message,
    }
}

/// "unknown provider "x" (did you mean y?): the file defines a, b".
fn unknown_name<'k>(
    kind: &str,
    name: &str,
    known: impl Iterator<Item = &'k String> + Clone,
) -> String {
    let hint = closest(name, known.clone().map(String::as_str))
        .map(|k| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    let names: Vec<&str> = known.map(String::as_str).take(9).collect();
    let defined = match names.len() {
        0 => format!("the file defines no {kind}"),
        9 => format!("the file defines {}, ...", names[..8].join(", ")),
        _ => format!("the file defines {}", all_of(&names)),
    };
    format!("unknown {kind} {name:?}{hint}: {defined}")
}

fn groups(cfg: &RoutesConfig, spots: &Spots, warnings: &mut Vec<Problem>) -> Result<(), Problem> {
    // Key ids are unique in the file; a variable is in one group of a
    // provider (two groups holding one key would double its budget).
    let mut ids: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut envs: HashMap<&str, (&str, &str)> = HashMap::new();
    for group in cfg.groups.values() {
        let prefix = join("groups", &group.name);
        if !cfg.providers.contains_key(&group.provider) {
            let message = unknown_name("provider", &group.provider, cfg.providers.keys());
            return Err(at(spots, format!("{prefix}.provider"), message));
        }
        for (i, key) in group.keys.iter().enumerate() {
            let field = format!("{prefix}.keys[{i}]");
            if let Some((other, j)) = ids.insert(&key.id, (&group.name, i)) {
                let message = format!(
                    "the key id {:?} is already used by {}.keys[{j}]: ids name keys in journals and errors, so each is unique",
                    key.id,
                    join("groups", other)
                );
                return Err(at(spots, field, message));
            }
            match envs.insert(&key.env, (&group.name, &group.provider)) {
                Some((other, _)) if other == group.name => {
                    let message = format!("the variable {} is listed twice in this group", key.env);
                    return Err(at(spots, format!("{field}.env"), message));
                }
                Some((other, provider)) if provider == group.provider => {
                    let message = format!(
                        "the variable {} is also in {}: one key in two groups would count its budget twice; a key belongs to one group",
                        key.env,
                        join("groups", other)
                    );
                    return Err(at(spots, format!("{field}.env"), message));
                }
                Some((other, provider)) => warnings.push(at(
                    spots,
                    format!("{field}.env"),
                    format!(
                        "the variable {} is also in {} (provider {provider}): if both providers reach the same account, its budget is counted twice",
                        key.env,
                        join("groups", other)
                    ),
                )),
                None => {}
            }
        }
        limit_bounds(group, spots)?;
    }
    Ok(())
}

/// Limits beyond any provider's are typos.
fn limit_bounds(group: &super::GroupConf, spots: &Spots) -> Result<(), Problem> {
    let prefix = join(&join("groups", &group.name), "limits");
    let l = &group.limits;
    let default = [
        ("rpm", l.rpm),
        ("tpm", l.tpm),
        ("itpm", l.itpm),
        ("otpm", l.otpm),
    ];
    let models = l.table.models.iter().flat_map(|m| {
        let p = join(&prefix, &m.name);
        [
            ("rpm", m.rpm),
            ("tpm", m.tpm),
            ("itpm", m.itpm),
            ("otpm", m.otpm),
        ]
        .map(move |(r, v)| (join(&p, r), r, v))
    });
    let all = default
        .map(|(r, v)| (join(&prefix, r), r, v))
        .into_iter()
        .chain(models);
    for (field, rate, value) in all {
        let max = if rate == "rpm" { MAX_RPM } else { MAX_TPM };
        if let Some(v) = value.filter(|&v| v > max) {
            let message = format!("{v} is beyond any provider's limit (at most {max})");
            let line = spots.line(&field).or(spots.line(&prefix));
            return Err(Problem {
                line,
                field,
                message,
            });
        }
    }
    Ok(())
}

fn models(cfg: &RoutesConfig, spots: &Spots) -> Result<(), Problem> {
    for model in cfg.models.values() {
        let prefix = join("models", &model.name);
        if !cfg.providers.contains_key(&model.provider) {
            let message = unknown_name("provider", &model.provider, cfg.providers.keys());
            return Err(at(spots, format!("{prefix}.provider"), message));
        }
        let mut seen = BTreeSet::new();
        for (i, name) in model.groups.iter().enumerate() {
            let field = format!("{prefix}.groups[{i}]");
            let Some(group) = cfg.groups.get(name) else {
                let message = unknown_name("group", name, cfg.groups.keys());
                return Err(at(spots, field, message));
            };
            if group.provider != model.provider {
                let message = format!(
                    "the group {name} holds keys of the provider {}, not of {}: a model's groups are of its provider",
                    group.provider, model.provider
                );
                return Err(at(spots, field, message));
            }
            if !seen.insert(name) {
                return Err(at(
                    spots,
                    field,
                    format!("the group {name} is listed twice"),
                ));
            }
        }
    }
    Ok(())
}

/// Every route's chains as targets.
fn expand_all(cfg: &RoutesConfig, spots: &Spots) -> Result<BTreeMap<String, Chains>, Problem> {
    let mut out = BTreeMap::new();
    for route in cfg.routes.values() {
        let prefix = join("routes", &route.name);
        let expander = Expander { cfg, spots };
        let chains = Chains {
            chain: expander.chain(route, &format!("{prefix}.chain"), &route.chain)?,
            context_window: expander.chain(
                route,
                &format!("{prefix}.context_window_chain"),
                &route.context_window_chain,
            )?,
            content_policy: expander.chain(
                route,
                &format!("{prefix}.content_policy_chain"),
                &route.content_policy_chain,
            )?,
        };
        out.insert(route.name.clone(), chains);
    }
    Ok(out)
}

struct Expander<'c> {
    cfg: &'c RoutesConfig,
    spots: &'c Spots,
}

impl Expander<'_> {
    /// One chain of `route` (at `field`), routes it names replaced by their
    /// own `chain`.
    fn chain(
        &self,
        route: &RouteConf,
        field: &str,
        entries: &[String],
    ) -> Result<Vec<String>, Problem> {
        let mut out = Vec::new();
        let mut path = vec![route.name.clone()];
        self.entries(field, entries, &mut path, &mut out)?;
        Ok(out)
    }

    fn entries(
        &self,
        field: &str,
        entries: &[String],
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), Problem> {
        for (i, name) in entries.iter().enumerate() {
            let here = format!("{field}[{i}]");
            if self.cfg.models.contains_key(name) {
                self.push_target(&here, name, path, out)?;
            } else if let Some(route) = self.cfg.routes.get(name) {
                self.enter(&here, route, path, out)?;
            } else {
                let known = self.cfg.models.keys().chain(self.cfg.routes.keys());
                let message = unknown_name("target or route", name, known);
                return Err(at(self.spots, here, message));
            }
        }
        Ok(())
    }

    fn push_target(
        &self,
        here: &str,
        name: &str,
        path: &[String],
        out: &mut Vec<String>,
    ) -> Result<(), Problem> {
        if out.iter().any(|t| t == name) {
            let via = if path.len() > 1 {
                format!(" (through {})", path.join(" → "))
            } else {
                String::new()
            };
            let message = format!(
                "the target {name} is already in this chain{via}: a chain tries each target once"
            );
            return Err(at(self.spots, here.to_owned(), message));
        }
        if out.len() == MAX_CHAIN_TARGETS {
            let message = format!("the chain holds more than {MAX_CHAIN_TARGETS} targets");
            return Err(at(self.spots, here.to_owned(), message));
        }
        out.push(name.to_owned());
        Ok(())
    }

    /// A route named in a chain: its own chain, unless that loops.
    fn enter(
        &self,
        here: &str,
        route: &RouteConf,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), Problem> {
        if let Some(start) = path.iter().position(|r| *r == route.name) {
            let cycle: Vec<&str> = (path[start..].iter())
                .map(String::as_str)
                .chain([route.name.as_str()])
                .collect();
            let message = format!(
                "the routes loop: {} (a chain may name a route, never one that leads back)",
                cycle.join(" → ")
            );
            return Err(at(self.spots, here.to_owned(), message));
        }
        if path.len() == MAX_ROUTE_DEPTH {
            let message = format!("routes name routes more than {MAX_ROUTE_DEPTH} deep");
            return Err(at(self.spots, here.to_owned(), message));
        }
        path.push(route.name.clone());
        let field = format!("{}.chain", join("routes", &route.name));
        self.entries(&field, &route.chain, path, out)?;
        path.pop();
        Ok(())
    }
}

fn warn_unused(cfg: &RoutesConfig, warnings: &mut Vec<Problem>) {
    for provider in cfg.providers.values() {
        if !cfg.groups.values().any(|g| g.provider == provider.name) {
            warnings.push(Problem {
                line: Some(provider.line),
                field: join("providers", &provider.name),
                message: "no group holds keys for this provider: it is never used".into(),
            });
        }
    }
    for group in cfg.groups.values() {
        if !cfg.models.values().any(|m| m.groups.contains(&group.name)) {
            warnings.push(Problem {
                line: Some(group.line),
                field: join("groups", &group.name),
                message: "no model sends through this group: its keys are never used".into(),
            });
        }
    }
}

/// Several groups behind one model add their budgets up: right only when
/// their keys are in different limit domains.
fn warn_pools(cfg: &RoutesConfig, warnings: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for model in cfg.models.values() {
        if model.groups.len() < 2 || !seen.insert(model.groups.clone()) {
            continue;
        }
        let url = cfg
            .providers
            .get(&model.provider)
            .map_or("", |p| p.base_url.as_str());
        warnings.push(Problem {
            line: Some(model.line),
            field: format!("{}.groups", join("models", &model.name)),
            message: format!(
                "the groups {} all send to {url} and their budgets add up: right only if their keys belong to different projects, organisations or resources (keys of one project share its limits; put them in one group)",
                all_of(&model.groups.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        });
    }
}

/// A group's limit for a model none of its targets is.
fn warn_limits(cfg: &RoutesConfig, spots: &Spots, warnings: &mut Vec<Problem>) {
    for group in cfg.groups.values() {
        let served: BTreeSet<&str> = (cfg.models.values())
            .filter(|m| m.groups.contains(&group.name))
            .map(|m| m.model.as_str())
            .collect();
        let prefix = join(&join("groups", &group.name), "limits");
        for limit in &group.limits.table.models {
            if limit.models.iter().any(|m| served.contains(m.as_str())) {
                continue;
            }
            let field = join(&prefix, &limit.name);
            warnings.push(at(
                spots,
                field,
                format!(
                    "no model of this group is {}: the limit applies to nothing (a limit names the provider's model, the model field of [models.*])",
                    one_of(&limit.models.iter().map(String::as_str).collect::<Vec<_>>())
                ),
            ));
        }
    }
}

fn warn_route(cfg: &RoutesConfig, route: &RouteConf, spots: &Spots, warnings: &mut Vec<Problem>) {
    let prefix = join("routes", &route.name);
    let per_target = route.attempts_per_target();
    let targets = route.expanded.chain.len();
    if let Some(max) = route.max_attempts {
        if route.max_attempts_per_target.is_some_and(|p| p > max) {
            warnings.push(at(
                spots,
                format!("{prefix}.max_attempts_per_target"),
                format!("more than max_attempts ({max}): a target gets at most {max}"),
            ));
        }
        let reach = (max as usize).div_ceil(per_target as usize);
        if reach < targets {
            warnings.push(at(
                spots,
                format!("{prefix}.max_attempts"),
                format!(
                    "{max} attempts at {per_target} per target reach {reach} of the chain's {targets} targets when each fails: the last ones are tried only when others fail fast"
                ),
            ));
        }
    }
    let primary = route.expanded.chain.first().and_then(|t| cfg.models.get(t));
    let primary_window = primary.and_then(|m| m.context_window);
    // Expanded targets have no index of their own in the file: the field's line.
    for target in &route.expanded.context_window {
        let window = cfg.models.get(target).and_then(|m| m.context_window);
        if let (Some(p), Some(w)) = (primary_window, window)
            && w <= p
        {
            warnings.push(at(
                spots,
                format!("{prefix}.context_window_chain"),
                format!("{target}'s context window ({w}) is no larger than the primary's ({p}): it cannot take what the primary could not"),
            ));
        }
    }
}

/// Warnings that need the catalog.
pub(super) fn price_warnings(cfg: &RoutesConfig, catalog: &Catalog) -> Vec<Problem> {
    let mut warnings = Vec::new();
    let used: BTreeSet<&String> = (cfg.routes.values())
        .flat_map(|r| {
            let c = &r.expanded;
            c.chain
                .iter()
                .chain(&c.context_window)
                .chain(&c.content_policy)
        })
        .collect();
    for model in cfg.models.values() {
        if cfg.price(&model.name, catalog).is_none() && used.contains(&model.name) {
            warnings.push(Problem {
                line: Some(model.line),
                field: join("models", &model.name),
                message: format!(
                    "no price: {:?} is not in the price catalog and the model gives no price = {{ input = ..., output = ... }}, so its cost counts as 0 and max_price_ratio cannot bound it",
                    model.model
                ),
            });
        }
    }
    for route in cfg.routes.values() {
        ratio_warnings(cfg, route, catalog, &mut warnings);
    }
    warnings
}

/// Fallbacks dearer than the primary.
fn ratio_warnings(
    cfg: &RoutesConfig,
    route: &RouteConf,
    catalog: &Catalog,
    warnings: &mut Vec<Problem>,
) {
    let c = &route.expanded;
    let Some(primary) = c.chain.first() else {
        return;
    };
    let Some(base) = cfg.price(primary, catalog) else {
        return;
    };
    let fallbacks = c
        .chain
        .iter()
        .skip(1)
        .chain(&c.context_window)
        .chain(&c.content_policy);
    let field = join("routes", &route.name);
    for target in fallbacks {
        let Some(p) = cfg.price(target, catalog) else {
            continue;
        };
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                a / b
            } else if a > 0.0 {
                f64::INFINITY
            } else {
                1.0
            }
        };
        let input = ratio(p.price.input, base.price.input);
        let output = ratio(p.price.output, base.price.output);
        let (low, high) = (input.min(output), input.max(output));
        let message = match route.max_price_ratio {
            Some(max) if low > max => format!(
                "{target} costs more than {max}x the primary {primary} per token (input {input:.1}x, output {output:.1}x): max_price_ratio means it is never used"
            ),
            None if high > 1.0 => format!(
                "{target} costs up to {high:.1}x the primary {primary} per token: without max_price_ratio nothing bounds what a fallback costs"
            ),
            _ => continue,
        };
        warnings.push(Problem {
            line: Some(route.line),
            field: field.clone(),
            message,
        });
    }
}
