//! Routes: which target answers a line, with which key, and where the line
//! goes when that target cannot answer it.
//!
//! - A **route** is what a line's `body.model` names: an ordered chain of
//!   targets, a chain of its own for context-window failures and one for
//!   content-policy refusals (both empty unless given), a cap on attempts
//!   over all of them, a cap per target and a price ceiling for fallbacks.
//! - A **target** is one model at one provider (its own name for the model,
//!   its price), served by one or more limit groups: a key pool whose
//!   groups' budgets add up.
//! - A **limit group** holds the keys that share one budget at the
//!   provider. The pacer keeps a lane per (group, model); admissions go to
//!   whichever group of the target can take the request first, so two
//!   groups run at their summed limits and a 429 pauses only its own.
//!
//! Without a config, [`Routes::single`] sends every line to one provider
//! as it is: one route, one target (the line's own model), one group, one
//! key, and no circuit (an outage is the run's outage handling).
//!
//! What moves a line along a chain is decided in `hop.rs` from the
//! provider's verdict; this file holds the routes, their targets, groups
//! and keys, and what is out for the run (dead keys, models gone).

pub(crate) mod circuit;
mod config;
pub(crate) mod hop;

pub use config::from_config;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use batchling_core::pricing::ModelPrice;
use serde::{Deserialize, Serialize};

use self::circuit::Circuit;

/// The HTTP attempts one line gets over a whole chain when a route does
/// not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;

/// Attempts at one target before the line moves on, when a route with a
/// fallback does not say.
pub const DEFAULT_MAX_ATTEMPTS_PER_TARGET: u32 = 3;

/// Which of a route's chains a line is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// The route's chain.
    Main = 0,
    /// For lines whose prompt does not fit a target's context window.
    ContextWindow = 1,
    /// For lines a target's content filter refused.
    ContentPolicy = 2,
}

impl Chain {
    /// Its name in journals and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Main => "main",
            Chain::ContextWindow => "context_window",
            Chain::ContentPolicy => "content_policy",
        }
    }
}

/// A route as given: its chains of target ids (from [`RoutesBuilder::target`])
/// and its caps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteSpec {
    /// The targets in order; the first is the primary.
    pub chain: Vec<TargetId>,
    /// Where a context-window failure goes (empty: it fails).
    pub context_window_chain: Vec<TargetId>,
    /// Where a content-policy refusal goes (empty: it is the answer).
    pub content_policy_chain: Vec<TargetId>,
    /// HTTP attempts per line over every chain (429s not counted); `None`:
    /// the job's retry policy's.
    pub max_attempts: Option<u32>,
    /// Attempts at one target before the next; `None`: all of
    /// `max_attempts` when the route has one target, else
    /// [`DEFAULT_MAX_ATTEMPTS_PER_TARGET`].
    pub max_attempts_per_target: Option<u32>,
    /// A fallback may cost at most this many times the primary, for the
    /// line's worst case (its input and its most output); `None`: no cap.
    /// A fallback whose price (or the primary's) is unknown is not
    /// eligible under a cap.
    pub max_price_ratio: Option<f64>,
    /// While the target a line is on has no room for it now (its limits
    /// hold it back), it may go to a later target of the main chain that
    /// has: the chain's limits add up. Off by default: a fallback may cost
    /// more than waiting.
    pub spill: bool,
}

/// A target, by the order it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetId(pub(crate) u32);

/// A limit group, by the order it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub(crate) u32);

/// A route could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A group without keys.
    #[error("the limit group {group} has no keys")]
    NoKeys {
        /// The group's name.
        group: String,
    },
    /// A target without groups.
    #[error("the target {target} has no limit group")]
    NoGroups {
        /// The target's name.
        target: String,
    },
    /// A route whose chain is empty.
    #[error("the route {route} has an empty chain")]
    EmptyChain {
        /// The route's name.
        route: String,
    },
    /// A target twice in one chain: a line would be sent to it twice.
    #[error("the route {route} lists the target {target} twice in one chain")]
    Repeated {
        /// The route's name.
        route: String,
        /// The target's name.
        target: String,
    },
    /// A cap of zero.
    #[error("the route {route} allows no attempt")]
    NoAttempts {
        /// The route's name.
        route: String,
    },
    /// A price ratio below 1 (the primary itself would not be allowed).
    #[error("the route {route}'s max_price_ratio must be at least 1")]
    PriceRatio {
        /// The route's name.
        route: String,
    },
}

/// One key of a limit group.
pub(crate) struct Key<P> {
    /// Its id in journals and reports (never the key).
    pub(crate) id: Box<str>,
    pub(crate) client: Arc<P>,
    /// Refused (401/403, no quota, a spend cap): out for the run.
    dead: AtomicBool,
    /// It answered once without refusing: it may take any number.
    proven: AtomicBool,
    /// Its first request is out (a key not proven takes one at a time, so
    /// a dead key in a pool costs one request, not a burst).
    probing: AtomicBool,
}

impl<P> Key<P> {
    fn usable(&self) -> bool {
        !self.dead.load(Relaxed)
    }
}

/// A key for the next request of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPick {
    /// This one.
    Key(KeyAt),
    /// Every live key is new and has its first request out: wait for an
    /// answer.
    Busy,
    /// None is alive.
    Dead,
}

/// Keys sharing one budget.
pub(crate) struct Group<P> {
    pub(crate) name: Box<str>,
    pub(crate) keys: Vec<Key<P>>,
    /// Round robin over its keys (any key of a group spends one budget).
    next: AtomicU32,
}

/// One model at one provider.
pub(crate) struct Target {
    pub(crate) name: Box<str>,
    /// The provider's name for it; `None`: the line's own `model`.
    pub(crate) model: Option<Box<str>>,
    pub(crate) groups: Vec<u32>,
    /// Its price when given; else the catalog's for its model.
    pub(crate) price: Option<ModelPrice>,
    pub(crate) circuit: Circuit,
    /// 404 model not found: out for the run.
    gone: AtomicBool,
}

/// A route, built.
pub(crate) struct Route {
    pub(crate) name: Box<str>,
    pub(crate) chains: [Vec<u32>; 3],
    pub(crate) max_attempts: Option<u32>,
    pub(crate) per_target: Option<u32>,
    pub(crate) max_price_ratio: Option<f64>,
    pub(crate) spill: bool,
}

impl Route {
    pub(crate) fn chain(&self, c: Chain) -> &[u32] {
        &self.chains[c as usize]
    }

    /// Whether the route can send a line anywhere but its primary.
    pub(crate) fn has_fallback(&self) -> bool {
        self.chains[0].len() > 1 || !self.chains[1].is_empty() || !self.chains[2].is_empty()
    }
}

/// The routes of a run, their targets, limit groups and keys. Built once
/// (by [`Routes::single`] or a [`RoutesBuilder`]); what is out for the run
/// is kept in atomics.
pub struct Routes<P> {
    pub(crate) groups: Vec<Group<P>>,
    pub(crate) targets: Vec<Target>,
    pub(crate) routes: Vec<Route>,
    /// A line's `model` → its route.
    by_name: HashMap<Box<str>, u32>,
    /// More than one key in all: a key takes one request until it answers.
    probe_keys: bool,
    /// Built from a config (not [`Routes::single`]): each request's
    /// attempts and who answered go to the journal.
    records: bool,
    /// The route of a line whose model no route names.
    any: Option<u32>,
}

impl<P> std::fmt::Debug for Routes<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("routes", &self.routes.len())
            .field("targets", &self.targets.len())
            .field("groups", &self.groups.len())
            .finish()
    }
}

/// Where a key sits: its group and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyAt {
    pub(crate) group: u32,
    pub(crate) key: u32,
}

impl<P> Routes<P> {
    /// Every line to `provider`, as it is: one route, one target, one
    /// group, one key.
    pub fn single(provider: Arc<P>) -> Self {
        let mut b = RoutesBuilder::new();
        let g = b.group("default", vec![("default".to_owned(), provider)]);
        let t = b.target("default", None, &[g], None);
        b.route_any(RouteSpec {
            chain: vec![t],
            ..RouteSpec::default()
        });
        let mut routes = b.build().expect("one target, one group, one key");
        routes.records = false;
        routes
    }

    /// Whether requests keep their attempts and who answered them for the
    /// journal (routes of a config do; [`Routes::single`] does not).
    pub(crate) fn records_attempts(&self) -> bool {
        self.records
    }

    /// Start building routes.
    pub fn builder() -> RoutesBuilder<P> {
        RoutesBuilder::new()
    }

    /// The route of a line naming `model`.
    pub(crate) fn route_of(&self, model: Option<&str>) -> Option<u32> {
        model
            .and_then(|m| self.by_name.get(m).copied())
            .or(self.any)
    }

    pub(crate) fn route(&self, r: u32) -> &Route {
        &self.routes[r as usize]
    }

    pub(crate) fn target(&self, t: u32) -> &Target {
        &self.targets[t as usize]
    }

    /// Limit group `g`'s name (what other processes sharing its budget
    /// call it too).
    pub(crate) fn group_name(&self, g: u32) -> &str {
        &self.groups[g as usize].name
    }

    pub(crate) fn key(&self, at: KeyAt) -> &Key<P> {
        &self.groups[at.group as usize].keys[at.key as usize]
    }

    /// A live key of group `g`, round robin. While keys are pooled, a key
    /// that has not answered yet takes only its first request.
    pub(crate) fn pick_key(&self, g: u32) -> KeyPick {
        let group = &self.groups[g as usize];
        let n = group.keys.len() as u32;
        // Round robin moves on when a key is sent on (`key_sending`), not
        // when one is picked: a pick may wait for the lane and be made
        // again.
        let start = group.next.load(Relaxed);
        let mut busy = false;
        for i in 0..n {
            let k = start.wrapping_add(i) % n;
            let key = &group.keys[k as usize];
            if !key.usable() {
                continue;
            }
            let free = !self.probe_keys || key.proven.load(Relaxed) || !key.probing.load(Relaxed);
            if free {
                return KeyPick::Key(KeyAt { group: g, key: k });
            }
            busy = true;
        }
        if busy { KeyPick::Busy } else { KeyPick::Dead }
    }

    /// The request picked `at` and is sent on it now: a key not proven
    /// yet takes no other until it answers.
    pub(crate) fn key_sending(&self, at: KeyAt) {
        let group = &self.groups[at.group as usize];
        group.next.store(at.key.wrapping_add(1), Relaxed);
        let key = self.key(at);
        if self.probe_keys && !key.proven.load(Relaxed) {
            key.probing.store(true, Relaxed);
        }
    }

    /// The key's attempt got an answer that did not refuse it (or no
    /// answer at all): it may take more than one request at a time.
    pub(crate) fn key_answered(&self, at: KeyAt) {
        let key = self.key(at);
        if self.probe_keys && !key.proven.load(Relaxed) {
            key.proven.store(true, Relaxed);
            key.probing.store(false, Relaxed);
        }
    }

    /// Whether group `g` has a live key.
    pub(crate) fn group_alive(&self, g: u32) -> bool {
        self.groups[g as usize].keys.iter().any(Key::usable)
    }

    /// Whether target `t` may be sent to at all (not gone, a live key).
    pub(crate) fn target_alive(&self, t: u32) -> bool {
        let target = self.target(t);
        !target.gone.load(Relaxed) && target.groups.iter().any(|&g| self.group_alive(g))
    }

    /// The key is refused for the run. True when some key of any group is
    /// still alive.
    pub(crate) fn kill_key(&self, at: KeyAt) -> bool {
        let key = self.key(at);
        key.dead.store(true, Relaxed);
        key.probing.store(false, Relaxed);
        (0..self.groups.len() as u32).any(|g| self.group_alive(g))
    }

    /// The model is not at the provider: the target is out for the run.
    pub(crate) fn remove_target(&self, t: u32) {
        self.target(t).gone.store(true, Relaxed);
    }

    /// The model name the target sends, for a line naming `line_model`.
    pub(crate) fn model_of<'a>(&'a self, t: u32, line_model: Option<&'a str>) -> Option<&'a str> {
        self.target(t).model.as_deref().or(line_model)
    }

    /// What is out now and what was: each target's circuit and each key's
    /// state, for `batchling status`.
    pub fn health(&self) -> RouteHealth {
        let targets = (self.targets.iter())
            .map(|t| {
                let (circuit_open, opened) = t.circuit.report();
                TargetHealth {
                    target: t.name.to_string(),
                    circuit_open,
                    opened,
                    gone: t.gone.load(Relaxed),
                }
            })
            .collect();
        let keys = (self.groups.iter())
            .flat_map(|g| {
                g.keys.iter().map(|k| KeyHealth {
                    group: g.name.to_string(),
                    key_id: k.id.to_string(),
                    state: if k.dead.load(Relaxed) {
                        KeyState::Dead
                    } else if k.proven.load(Relaxed) || !self.probe_keys {
                        KeyState::Live
                    } else {
                        KeyState::Untried
                    },
                })
            })
            .collect();
        RouteHealth { targets, keys }
    }
}

/// The routes' health at one moment (journaled now and then while a run
/// goes, and at its end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHealth {
    /// Per target, in the order the config gives them.
    pub targets: Vec<TargetHealth>,
    /// Per key, by limit group.
    pub keys: Vec<KeyHealth>,
}

/// A target's circuit (see `circuit.rs`) and whether it is out for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    /// The target's name.
    pub target: String,
    /// Open: its lines go to the next step of their chain, one probe at a
    /// time finds out whether it is back.
    pub circuit_open: bool,
    /// Times its circuit opened in this run.
    pub opened: u64,
    /// Its model was not found (404): out for the run.
    pub gone: bool,
}

/// A key of a limit group, by its id (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHealth {
    /// Its limit group.
    pub group: String,
    /// Its id in the config.
    pub key_id: String,
    /// What it is now.
    pub state: KeyState,
}

/// A key's state in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// It answered (or it is the only key): it takes any number.
    Live,
    /// Not answered yet: it takes one request until it does.
    Untried,
    /// Refused (401/403, no quota, a spend cap): out for the run.
    Dead,
}

/// Builds [`Routes`]: groups with their keys, then targets on groups, then
/// routes over targets.
pub struct RoutesBuilder<P> {
    groups: Vec<Group<P>>,
    targets: Vec<Target>,
    routes: Vec<(Option<Box<str>>, RouteSpec)>,
}

impl<P> RoutesBuilder<P> {
    fn new() -> Self {
        RoutesBuilder {
            groups: Vec::new(),
            targets: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// A limit group: `keys` (id, client) share one budget.
    pub fn group(&mut self, name: &str, keys: Vec<(String, Arc<P>)>) -> GroupId {
        self.groups.push(Group {
            name: name.into(),
            keys: keys
                .into_iter()
                .map(|(id, client)| Key {
                    id: id.into(),
                    client,
                    dead: AtomicBool::new(false),
                    proven: AtomicBool::new(false),
                    probing: AtomicBool::new(false),
                })
                .collect(),
            next: AtomicU32::new(0),
        });
        GroupId(self.groups.len() as u32 - 1)
    }

    /// A target named `name`: `model` at the provider of `groups` (`None`:
    /// the line's own model), at `price` when given.
    pub fn target(
        &mut self,
        name: &str,
        model: Option<&str>,
        groups: &[GroupId],
        price: Option<ModelPrice>,
    ) -> TargetId {
        self.targets.push(Target {
            name: name.into(),
            model: model.map(Into::into),
            groups: groups.iter().map(|g| g.0).collect(),
            price,
            circuit: Circuit::new(false),
            gone: AtomicBool::new(false),
        });
        TargetId(self.targets.len() as u32 - 1)
    }

    /// The route of lines whose `model` is `name`.
    pub fn route(&mut self, name: &str, spec: RouteSpec) {
        self.routes.push((Some(name.into()), spec));
    }

    /// The route of lines whose model no route names (without one, such a
    /// line fails with `no_route`).
    pub fn route_any(&mut self, spec: RouteSpec) {
        self.routes.push((None, spec));
    }

    /// Check and build. A route listed twice keeps its first.
    pub fn build(self) -> Result<Routes<P>, RouteError> {
        for g in &self.groups {
            if g.keys.is_empty() {
                return Err(RouteError::NoKeys {
                    group: g.name.to_string(),
                });
            }
        }
        for t in &self.targets {
            if t.groups.is_empty() {
                return Err(RouteError::NoGroups {
                    target: t.name.to_string(),
                });
            }
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        let mut by_name = HashMap::new();
        let mut any = None;
        let mut fallback = vec![false; self.targets.len()];
        for (name, spec) in self.routes {
            let route = self::check(name.as_deref().unwrap_or("*"), spec, &self.targets)?;
            if route.has_fallback() {
                for c in &route.chains {
                    for &t in c {
                        fallback[t as usize] = true;
                    }
                }
            }
            let index = routes.len() as u32;
            match name {
                Some(n) => {
                    by_name.entry(n).or_insert(index);
                }
                None => {
                    any.get_or_insert(index);
                }
            }
            routes.push(route);
        }
        let mut targets = self.targets;
        for (t, has_fallback) in targets.iter_mut().zip(fallback) {
            // Only a target some route can fall back from gets a circuit.
            t.circuit = Circuit::new(has_fallback);
        }
        let probe_keys = self.groups.iter().map(|g| g.keys.len()).sum::<usize>() > 1;
        Ok(Routes {
            groups: self.groups,
            targets,
            routes,
            by_name,
            probe_keys,
            records: true,
            any,
        })
    }
}

/// A route's spec, checked.
fn check(name: &str, spec: RouteSpec, targets: &[Target]) -> Result<Route, RouteError> {
    let err_route = || name.to_owned();
    if spec.chain.is_empty() {
        return Err(RouteError::EmptyChain { route: err_route() });
    }
    if spec.max_attempts == Some(0) || spec.max_attempts_per_target == Some(0) {
        return Err(RouteError::NoAttempts { route: err_route() });
    }
    if spec.max_price_ratio.is_some_and(|r| r.is_nan() || r < 1.0) {
        return Err(RouteError::PriceRatio { route: err_route() });
    }
    let chains = [
        spec.chain,
        spec.context_window_chain,
        spec.content_policy_chain,
    ]
    .map(|c| c.into_iter().map(|t| t.0).collect::<Vec<u32>>());
    for c in &chains {
        for (i, t) in c.iter().enumerate() {
            if c[..i].contains(t) {
                return Err(RouteError::Repeated {
                    route: err_route(),
                    target: targets[*t as usize].name.to_string(),
                });
            }
        }
    }
    Ok(Route {
        name: name.into(),
        chains,
        max_attempts: spec.max_attempts,
        per_target: spec.max_attempts_per_target,
        max_price_ratio: spec.max_price_ratio,
        spill: spec.spill,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_groups() -> (RoutesBuilder<()>, GroupId, GroupId) {
        let mut b = RoutesBuilder::new();
        let a = b.group(
            "a",
            vec![("a1".into(), Arc::new(())), ("a2".into(), Arc::new(()))],
        );
        let g = b.group("b", vec![("b1".into(), Arc::new(()))]);
        (b, a, g)
    }

    #[test]
    fn keys_go_round_robin_and_a_dead_key_is_skipped() {
        let (mut b, a, g) = two_groups();
        let t = b.target("t", Some("m"), &[a, g], None);
        b.route(
            "r",
            RouteSpec {
                chain: vec![t],
                ..RouteSpec::default()
            },
        );
        let r = b.build().expect("valid");
        let KeyPick::Key(first) = r.pick_key(0) else {
            panic!("a key")
        };
        // Picked but not sent: still free, and still the next.
        assert_eq!(r.pick_key(0), KeyPick::Key(first));
        r.key_sending(first);
        let KeyPick::Key(second) = r.pick_key(0) else {
            panic!("a key")
        };
        r.key_sending(second);
        assert_ne!(first, second);
        // Both new, both with their first request out: wait.
        assert_eq!(r.pick_key(0), KeyPick::Busy);
        r.key_answered(second);
        assert!(r.kill_key(first));
        for _ in 0..4 {
            assert_eq!(r.pick_key(0), KeyPick::Key(second));
        }
        assert!(r.kill_key(second));
        assert_eq!(r.pick_key(0), KeyPick::Dead);
        assert!(!r.group_alive(0));
        assert!(r.target_alive(0), "group b still has a key");
        assert!(
            !r.kill_key(KeyAt { group: 1, key: 0 }),
            "no key left anywhere"
        );
        assert!(!r.target_alive(0));
    }

    #[test]
    fn lines_find_their_route_by_model_or_the_default() {
        let (mut b, a, _) = two_groups();
        let t = b.target("t", Some("m"), &[a], None);
        b.route(
            "fast",
            RouteSpec {
                chain: vec![t],
                ..RouteSpec::default()
            },
        );
        let r = b.build().expect("valid");
        assert_eq!(r.route_of(Some("fast")), Some(0));
        assert_eq!(r.route_of(Some("slow")), None);
        assert_eq!(r.model_of(0, Some("fast")), Some("m"));
        let single = Routes::single(Arc::new(()));
        assert_eq!(single.route_of(Some("anything")), Some(0));
        assert_eq!(single.model_of(0, Some("anything")), Some("anything"));
        assert!(!single.route(0).has_fallback());
        // One key in all: no first-request probing.
        for _ in 0..3 {
            assert!(matches!(single.pick_key(0), KeyPick::Key(_)));
        }
    }

    #[test]
    fn bad_routes_are_refused() {
        let (mut b, a, _) = two_groups();
        let t = b.target("t", None, &[a], None);
        b.route(
            "r",
            RouteSpec {
                chain: vec![t, t],
                ..RouteSpec::default()
            },
        );
        assert!(matches!(b.build(), Err(RouteError::Repeated { .. })));
        for spec in [
            RouteSpec::default(),
            RouteSpec {
                chain: vec![TargetId(0)],
                max_attempts: Some(0),
                ..RouteSpec::default()
            },
            RouteSpec {
                chain: vec![TargetId(0)],
                max_price_ratio: Some(0.5),
                ..RouteSpec::default()
            },
            RouteSpec {
                chain: vec![TargetId(0)],
                max_price_ratio: Some(f64::NAN),
                ..RouteSpec::default()
            },
        ] {
            let (mut b, a, _) = two_groups();
            b.target("t", None, &[a], None);
            b.route("r", spec);
            assert!(b.build().is_err());
        }
        let mut b: RoutesBuilder<()> = RoutesBuilder::new();
        b.group("empty", vec![]);
        assert!(matches!(b.build(), Err(RouteError::NoKeys { .. })));
    }
}
