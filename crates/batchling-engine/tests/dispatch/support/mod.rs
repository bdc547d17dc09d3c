//! What every test here uses: a scripted upstream and a job in a
//! temporary directory.

mod upstream;
mod workdir;

pub(crate) use upstream::{
    Sent, Upstream, error, ok, rate_limited, refusal, reset, status, timeout,
};
pub(crate) use workdir::{Workdir, id, ms, secs};
