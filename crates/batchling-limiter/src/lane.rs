//! A lane: one budget, named by the caller as (upstream, limit group,
//! model), and the Redis keys it is kept in.
//!
//! Every key of a lane carries the same hash tag (`{…}`), so on Redis
//! Cluster a lane's keys sit on one slot and its scripts may touch them
//! all. The tag is a hash of the three names: a model name comes from a
//! request body (it may hold braces, or be long), and nothing the caller
//! passes is ever spelled out in a key name.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

use crate::Error;

/// The shortest and longest upstream id accepted (hex digits).
const UPSTREAM_HEX: std::ops::RangeInclusive<usize> = 16..=128;

/// The longest limit group or model name accepted (the pacer gives a
/// longer model name no lane of its own either).
pub const MAX_NAME_BYTES: usize = 256;

/// The longest key prefix accepted.
pub const MAX_PREFIX_BYTES: usize = 64;

/// One shared budget: a model (or family) of a limit group of an upstream.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    group: Box<str>,
    model: Option<Box<str>>,
    /// The hash tag of its keys (32 hex digits).
    tag: Box<str>,
}

impl Lane {
    /// The lane of `model` (`None`: requests without one) in limit group
    /// `group` of `upstream`.
    ///
    /// `upstream` must be a digest in hex (16 to 128 digits), e.g. the
    /// first 32 of SHA-256(base URL ‖ API key): never the key itself, nor
    /// anything a key can be read back from. Every process sharing the
    /// budget must derive the same one. `group` must be a name every
    /// process agrees on (a routes config's group name), not a number one
    /// process happened to give it.
    pub fn new(upstream: &str, group: &str, model: Option<&str>) -> Result<Lane, Error> {
        let hex = upstream.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex || !UPSTREAM_HEX.contains(&upstream.len()) {
            return Err(Error::BadLane {
                field: "upstream",
                reason: "must be a hex digest of 16 to 128 digits (never an API key)",
            });
        }
        for (field, name) in [("group", Some(group)), ("model", model)] {
            if name.is_some_and(|n| n.len() > MAX_NAME_BYTES) {
                return Err(Error::BadLane {
                    field,
                    reason: "is longer than 256 bytes",
                });
            }
        }
        let tag = tag_of(&upstream.to_ascii_lowercase(), group, model);
        Ok(Lane {
            group: group.into(),
            model: model.map(Box::from),
            tag: tag.into(),
        })
    }

    /// Its limit group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Its model, if it has one.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The hash tag its keys share (for operators looking at Redis).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl fmt::Debug for Lane {
    // The upstream digest stays out of logs: the tag identifies the lane.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lane")
            .field("group", &self.group)
            .field("model", &self.model)
            .field("tag", &self.tag)
            .finish()
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            Some(m) => write!(f, "{}/{m}", self.group),
            None => write!(f, "{}", self.group),
        }
    }
}

/// 32 hex digits naming (upstream, group, model); each part is length
/// prefixed so no two triples share an encoding.
fn tag_of(upstream: &str, group: &str, model: Option<&str>) -> String {
    let mut bytes = Vec::with_capacity(upstream.len() + group.len() + 64);
    for part in [Some(upstream), Some(group), model] {
        match part {
            Some(p) => {
                bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
                bytes.extend_from_slice(p.as_bytes());
            }
            None => bytes.extend_from_slice(&u64::MAX.to_le_bytes()),
        }
    }
    format!("{:032x}", xxh3_128(&bytes))
}

/// The keys of one lane under a prefix.
pub(crate) struct Keys {
    /// Hash: next allowed time per dimension (`r`, `t`, `i`, `o`), the
    /// latest booked send time (`last`), the reservation counter (`seq`)
    /// and the shared pause (`p`), all µs on Redis's clock; the units in
    /// each dimension's one-second log (`wr`, `wt`, `wi`, `wo`).
    pub(crate) state: String,
    /// Hash: limits learned from headers (`r`, `t`, `i`, `o`), per minute.
    pub(crate) learned: String,
    /// Sorted set: settled reservation ids, scored by their send time.
    pub(crate) settled: String,
    /// Sorted sets, one per dimension (requests, tokens, input, output):
    /// the one-second log, `seq:units` scored by send time.
    pub(crate) logs: [String; 4],
}

impl Keys {
    pub(crate) fn of(prefix: &str, lane: &Lane) -> Keys {
        let base = format!("{prefix}:{{{}}}", lane.tag);
        Keys {
            state: format!("{base}:s"),
            learned: format!("{base}:l"),
            settled: format!("{base}:d"),
            logs: ["r", "t", "i", "o"].map(|d| format!("{base}:w:{d}")),
        }
    }
}

/// A key prefix: short, and without the braces of a hash tag.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), Error> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"_-.:".contains(&b);
    let reason = if prefix.is_empty() {
        "is empty"
    } else if prefix.len() > MAX_PREFIX_BYTES {
        "is longer than 64 bytes"
    } else if !prefix.bytes().all(ok) {
        "may hold only letters, digits and _ - . :"
    } else {
        return Ok(());
    };
    Err(Error::BadPrefix { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_lane_is_named_by_all_three_parts() {
        let a = Lane::new(UP, "g", Some("m")).unwrap();
        let b = Lane::new(UP, "g", Some("n")).unwrap();
        let c = Lane::new(UP, "h", Some("m")).unwrap();
        let d = Lane::new(UP, "g", None).unwrap();
        let e = Lane::new(UP, "g", Some("")).unwrap();
        let tags = [a.tag(), b.tag(), c.tag(), d.tag(), e.tag()];
        for (i, x) in tags.iter().enumerate() {
            assert_eq!(x.len(), 32);
            for y in &tags[i + 1..] {
                assert_ne!(x, y);
            }
        }
        // The digest's case does not make another lane.
        let upper = Lane::new(&UP.to_ascii_uppercase(), "g", Some("m")).unwrap();
        assert_eq!(upper.tag(), a.tag());
    }

    #[test]
    fn an_upstream_must_be_a_digest() {
        let key_like = format!("sk-{}", "x".repeat(40));
        for bad in [key_like.as_str(), "abc", &"a".repeat(129), ""] {
            let err = Lane::new(bad, "g", None).unwrap_err();
            assert!(matches!(
                err,
                Error::BadLane {
                    field: "upstream",
                    ..
                }
            ));
            assert!(!err.to_string().contains(bad) || bad.is_empty());
        }
        let long = "m".repeat(MAX_NAME_BYTES + 1);
        let err = Lane::new(UP, "g", Some(&long)).unwrap_err();
        assert!(matches!(err, Error::BadLane { field: "model", .. }));
    }

    #[test]
    fn keys_share_one_hash_tag_and_hold_no_name() {
        let lane = Lane::new(UP, "group{x}", Some("gpt-{4}")).unwrap();
        let k = Keys::of("bl", &lane);
        let tag = format!("{{{}}}", lane.tag());
        for key in [&k.state, &k.learned, &k.settled]
            .into_iter()
            .chain(&k.logs)
        {
            assert!(key.starts_with(&format!("bl:{tag}:")), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}");
            assert!(!key.contains(UP) && !key.contains("gpt"), "{key}");
        }
        assert!(!format!("{lane:?}").contains(UP));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("batchling:test-1").is_ok());
        for bad in ["", "a{b}", "a b", &"p".repeat(65)] {
            assert!(matches!(check_prefix(bad), Err(Error::BadPrefix { .. })));
        }
    }
}
