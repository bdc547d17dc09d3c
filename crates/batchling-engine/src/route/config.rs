//! A routes config (`batchling_core::routes`, `--config FILE`) made into
//! [`Routes`]: a limit group per `[groups.*]`, a target per `[models.*]`,
//! a route per `[routes.*]` and one for each target a line may name
//! directly. The caller makes the clients (the engine names no provider).

use std::collections::HashMap;
use std::sync::Arc;

use batchling_core::routes::{GroupConf, KeyRef, RouteConf, RoutesConfig};

use super::{GroupId, RouteError, RouteSpec, Routes, TargetId};
use crate::pacer::{GroupLimits, PacerConfig};

/// The routes of `config`, with the client of each key from `client`
/// (called once per key, group by group in the file's order), and the
/// pacer's settings of its limit groups, by group id as the routes number
/// them (give them as `PacerConfig::groups`).
pub fn from_config<P, E: From<RouteError>>(
    config: &RoutesConfig,
    mut client: impl FnMut(&GroupConf, &KeyRef) -> Result<Arc<P>, E>,
) -> Result<(Routes<P>, Vec<GroupLimits>), E> {
    let mut b = Routes::builder();
    let mut groups: HashMap<&str, GroupId> = HashMap::new();
    let mut limits = Vec::new();
    for (name, group) in &config.groups {
        let given = PacerConfig::from_limits_file(&group.limits);
        limits.push(GroupLimits {
            name: name.clone(),
            defaults: given.defaults(),
            models: given.models,
        });
        let mut keys = Vec::new();
        for key in &group.keys {
            keys.push((key.id.clone(), client(group, key)?));
        }
        groups.insert(name, b.group(name, keys));
    }
    let mut targets: HashMap<&str, TargetId> = HashMap::new();
    for (name, model) in &config.models {
        // A checked config names only groups it defines.
        let of: Vec<GroupId> = (model.groups.iter())
            .filter_map(|g| groups.get(g.as_str()).copied())
            .collect();
        let t = b.target(name, Some(&model.model), &of, model.price.clone());
        targets.insert(name, t);
    }
    let ids = |names: &[String]| {
        (names.iter())
            .filter_map(|n| targets.get(n.as_str()).copied())
            .collect()
    };
    for (name, route) in &config.routes {
        b.route(name, spec(route, &ids));
    }
    // A line may name a target itself: that target alone.
    for (name, t) in &targets {
        if !config.routes.contains_key(*name) {
            b.route(
                name,
                RouteSpec {
                    chain: vec![*t],
                    ..RouteSpec::default()
                },
            );
        }
    }
    Ok((b.build()?, limits))
}

/// A route's chains as target ids, and its caps.
fn spec(route: &RouteConf, ids: &impl Fn(&[String]) -> Vec<TargetId>) -> RouteSpec {
    RouteSpec {
        chain: ids(&route.expanded.chain),
        context_window_chain: ids(&route.expanded.context_window),
        content_policy_chain: ids(&route.expanded.content_policy),
        max_attempts: Some(route.attempts()),
        max_attempts_per_target: Some(route.attempts_per_target()),
        max_price_ratio: route.max_price_ratio,
        spill: route.spill,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_becomes_its_routes_and_group_limits() {
        let text = r#"
[providers.p]
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"
[groups.g1]
provider = "p"
keys = [{ id = "k1", env = "K1" }, { id = "k2", env = "K2" }]
limits = { rpm = 60 }
[groups.g2]
provider = "p"
keys = [{ id = "k3", env = "K3" }]
[models.a]
provider = "p"
model = "model-a"
groups = ["g1"]
[models.b]
provider = "p"
groups = ["g2", "g1"]
[routes.r]
chain = ["a", "b"]
"#;
        let config = RoutesConfig::parse(text, "r.toml").expect("valid");
        let mut made = Vec::new();
        let (routes, limits) = from_config::<(), RouteError>(&config, |g, k| {
            made.push(format!("{}/{}", g.name, k.id));
            Ok(Arc::new(()))
        })
        .expect("builds");
        assert_eq!(made, ["g1/k1", "g1/k2", "g2/k3"]);
        assert_eq!(limits.len(), 2);
        assert_eq!(
            (limits[0].name.as_str(), limits[0].defaults.rpm),
            ("g1", Some(60))
        );
        assert_eq!(limits[1].defaults.rpm, None);
        assert!(routes.records_attempts());
        let r = routes.route_of(Some("r")).expect("the route");
        assert_eq!(routes.route(r).chain(super::super::Chain::Main).len(), 2);
        // A target named directly is that target alone; an unknown name has no route.
        let b = routes.route_of(Some("b")).expect("the target's own route");
        assert!(!routes.route(b).has_fallback());
        assert_eq!(routes.route_of(Some("nope")), None);
        let t = routes.route(r).chain(super::super::Chain::Main)[0];
        assert_eq!(routes.model_of(t, Some("r")), Some("model-a"));
    }
}
