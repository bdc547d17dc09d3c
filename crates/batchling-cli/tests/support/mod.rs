//! What the SDK tests share: the repository root, and `batchling` children
//! that are killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed when dropped (also on panic).
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Skip a test whose real client (or server) cannot be installed, with a
/// `SKIPPED:` line. Under CI (`CI` set) it fails instead: CI reaches the
/// registries, and a skip that passes would hide a broken install step.
pub(crate) fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{reason}; CI is set, so this test may not skip");
    }
    eprintln!("SKIPPED: {reason}");
}

pub(crate) fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Start `batchling ARGS`, return it and the first line it prints (a URL).
pub(crate) fn start(args: &[&str], env: &[(&str, &str)], log: &Path) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchling"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn batchling");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("http://127.0.0.1:"),
        "{args:?} printed {line:?}; log: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (Proc(child), line.trim().to_owned())
}

/// Start `batchling serve` on a free port with its data under `dir/data`,
/// its log `dir/serve.log`, in front of `upstream`, accepting `keys`
/// (comma-separated) through `keys_env`, with `extra` flags; return it and
/// its base URL.
pub(crate) fn start_serve(
    dir: &Path,
    upstream: &str,
    keys_env: &str,
    keys: &str,
    extra: &[&str],
) -> (Proc, String) {
    let data = dir.join("data");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--base-url",
        upstream,
        "--auth-keys-env",
        keys_env,
    ];
    args.extend_from_slice(extra);
    start(&args, &[(keys_env, keys)], &dir.join("serve.log"))
}

/// The last 30 lines of a log, for a failure message.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().rev().take(30).collect();
    lines.reverse();
    lines.join("\n")
}
