//! Shared test plumbing: an in-process mock on its own runtime, a builder
//! for `batchling run` subprocesses, and readers for what a run leaves behind.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use batchling_mock::{MockConfig, MockServer};
use serde_json::Value;
use tempfile::TempDir;

/// The API key every test run gets. Distinctive, so a leak is easy to find.
pub(crate) const API_KEY: &str = "sk-fake-7c41e0d2";

/// No single run may take longer than this; past it the child is killed and
/// the test fails (a hang is a bug, not a slow machine).
const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// A mock server on a runtime of its own, alive as long as this value.
pub(crate) struct Mock {
    server: Option<MockServer>,
    rt: tokio::runtime::Runtime,
}

impl Mock {
    pub(crate) fn start(config: MockConfig) -> Mock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let server = rt
            .block_on(MockServer::start(config, "127.0.0.1:0".parse().unwrap()))
            .expect("the mock starts");
        Mock {
            server: Some(server),
            rt,
        }
    }

    pub(crate) fn plain() -> Mock {
        Mock::start(MockConfig::default())
    }

    /// POST `body` straight to the mock (no batchling in between) and return
    /// the status and the raw body. Used to learn what the mock answers for
    /// a body; call it only after assertions on the mock's counters.
    pub(crate) fn post_direct(&self, url: &str, body: &str) -> (u16, Vec<u8>) {
        let path = url.strip_prefix("/v1").unwrap_or(url);
        let addr = self.addr();
        let mut s = TcpStream::connect(addr).expect("connect to the mock");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST /v1{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read the mock's answer");
        parse_http_response(&raw)
    }
}

fn parse_http_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let rest = &raw[split + 4..];
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let lower = head.to_ascii_lowercase();
    let header = |name: &str| {
        lower
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_text = std::str::from_utf8(&rest[..nl]).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("a chunk size");
            rest = &rest[nl + 2..];
            if size == 0 {
                return (status, body);
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
    let body = match header("content-length:") {
        Some(len) => rest[..len.parse::<usize>().unwrap()].to_vec(),
        None => rest.to_vec(),
    };
    (status, body)
}

impl Deref for Mock {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        self.server.as_ref().expect("the mock is running")
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            // Abrupt stop: cancel every connection at once.
            let _guard = self.rt.enter();
            drop(s);
        }
    }
}

/// A JSON string literal.
pub(crate) fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// One input line with `body` embedded verbatim.
pub(crate) fn line(custom_id: &str, url: &str, body: &str) -> String {
    format!(
        r#"{{"custom_id":{},"method":"POST","url":{},"body":{body}}}"#,
        js(custom_id),
        js(url)
    )
}

/// A chat body whose single user message is `text`.
pub(crate) fn chat_body(text: &str) -> String {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}

pub(crate) fn chat_line(custom_id: &str, text: &str) -> String {
    line(custom_id, "/v1/chat/completions", &chat_body(text))
}

/// `n` chat requests `{prefix}-000`...: the file text and the ids in order.
pub(crate) fn chat_file(prefix: &str, n: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    let text = ids
        .iter()
        .map(|id| chat_line(id, &format!("question {id}")) + "\n")
        .collect();
    (text, ids)
}

/// Check an output line answered `chat_line(id, text)`: the mock's echo.
#[track_caller]
pub(crate) fn assert_chat_echo(line: &Value, text: &str) {
    let body = &line["response"]["body"];
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("echo:{text}"),
        "{line}"
    );
    assert_eq!(body["object"], "chat.completion", "{line}");
}

/// A `batchling run` about to happen, in a temp dir of its own.
#[must_use = "a Run does nothing until `.run()` or `.spawn()`"]
pub(crate) struct Run {
    /// The subcommand: `run` or `submit`.
    command: &'static str,
    dir: TempDir,
    input: OsString,
    args: Vec<OsString>,
    env_key: bool,
    stdin: Option<Vec<u8>>,
    cwd: Option<PathBuf>,
    wrapper: Vec<OsString>,
    quiet: bool,
    /// Variables set for the child beyond the key.
    env: Vec<(OsString, OsString)>,
}

impl Run {
    /// A run over `input` (written to `in.jsonl`), output `out.jsonl`,
    /// `--quiet`, `--summary-json summary.json`, with the test API key.
    pub(crate) fn new(input: &str) -> Run {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, input).unwrap();
        Run {
            command: "run",
            input: path.into(),
            dir,
            args: Vec::new(),
            env_key: true,
            stdin: None,
            cwd: None,
            wrapper: Vec::new(),
            quiet: true,
            env: Vec::new(),
        }
    }

    /// Without `--quiet`: notices, the last progress line and the summary
    /// on stderr.
    pub(crate) fn loud(mut self) -> Run {
        self.quiet = false;
        self
    }

    /// A `batchling submit` instead of `run` (same files and flags), polling
    /// every few milliseconds.
    pub(crate) fn submit(input: &str) -> Run {
        let mut r =
            Run::new(input).args(&["--poll-interval", "5ms", "--max-poll-interval", "40ms"]);
        r.command = "submit";
        r
    }

    /// Run batchling through another program (e.g. `prlimit ... --`).
    pub(crate) fn wrapped(mut self, wrapper: &[&str]) -> Run {
        self.wrapper = wrapper.iter().map(OsString::from).collect();
        self
    }

    /// Send to this mock (`--base-url`).
    pub(crate) fn against(self, mock: &Mock) -> Run {
        self.args(&["--base-url", &mock.base_url()])
    }

    /// Send to this mock's Messages API (`--provider anthropic
    /// --base-url`), the test key in ANTHROPIC_API_KEY.
    pub(crate) fn against_anthropic(mut self, mock: &Mock) -> Run {
        self.env.push(("ANTHROPIC_API_KEY".into(), API_KEY.into()));
        self.args(&[
            "--provider",
            "anthropic",
            "--base-url",
            &mock.anthropic_base_url(),
        ])
    }

    /// Send to this Azure-shaped mock (`--provider azure --base-url` its
    /// endpoint, `--azure-api-version` when given), the test key in
    /// AZURE_OPENAI_API_KEY.
    pub(crate) fn against_azure(mut self, mock: &Mock, api_version: Option<&str>) -> Run {
        self.env
            .push(("AZURE_OPENAI_API_KEY".into(), API_KEY.into()));
        let endpoint = mock.base_url().trim_end_matches("/v1").to_owned();
        let r = self.args(&["--provider", "azure", "--base-url", &endpoint]);
        match api_version {
            Some(v) => r.args(&["--azure-api-version", v]),
            None => r,
        }
    }

    /// Set an environment variable for the child.
    pub(crate) fn env(mut self, name: &str, value: &str) -> Run {
        self.env.push((name.into(), value.into()));
        self
    }

    pub(crate) fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: &[S]) -> Run {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Forget the extra arguments given so far (for a rerun with others).
    pub(crate) fn clear_args(mut self) -> Run {
        self.args.clear();
        if self.command == "submit" {
            return self.args(&["--poll-interval", "5ms", "--max-poll-interval", "40ms"]);
        }
        self
    }

    /// The journal (the default path).
    pub(crate) fn state_path(&self) -> PathBuf {
        self.dir.path().join("out.jsonl.journal")
    }

    /// Use this as the input argument instead of `in.jsonl`.
    pub(crate) fn input_arg(mut self, input: impl Into<OsString>) -> Run {
        self.input = input.into();
        self
    }

    /// Read the input from standard input (`-`), fed with `in.jsonl`'s text.
    pub(crate) fn via_stdin(mut self) -> Run {
        self.stdin = Some(std::fs::read(self.dir.path().join("in.jsonl")).unwrap());
        self.input = "-".into();
        self
    }

    /// Leave OPENAI_API_KEY unset.
    pub(crate) fn without_key(mut self) -> Run {
        self.env_key = false;
        self
    }

    pub(crate) fn current_dir(mut self, dir: impl Into<PathBuf>) -> Run {
        self.cwd = Some(dir.into());
        self
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn out_path(&self) -> PathBuf {
        self.dir.path().join("out.jsonl")
    }

    fn command(&self) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_batchling"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_batchling")),
        };
        c.arg(self.command)
            .arg(&self.input)
            .arg("-o")
            .arg(self.out_path())
            .args(self.quiet.then_some("--quiet"))
            .arg("--summary-json")
            .arg(self.dir.path().join("summary.json"))
            .args(&self.args)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("AZURE_OPENAI_API_KEY")
            .env_remove("AZURE_OPENAI_ENDPOINT")
            .env_remove("AZURE_OPENAI_API_VERSION")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.env_key {
            c.env("OPENAI_API_KEY", API_KEY);
        }
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    /// The input file this run reads.
    pub(crate) fn input_path(&self) -> PathBuf {
        self.dir.path().join("in.jsonl")
    }

    /// Start the run without waiting for it.
    pub(crate) fn spawn(self) -> Running {
        let mut child = self.command().spawn().expect("start batchling");
        if let Some(data) = &self.stdin {
            let mut stdin = child.stdin.take().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        // Drain the pipes on threads so a chatty child never blocks.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Running {
            run: self,
            child,
            out_t,
            err_t,
        }
    }

    /// Run to the end.
    pub(crate) fn run(self) -> Outcome {
        self.spawn().wait()
    }
}

pub(crate) struct Running {
    run: Run,
    child: Child,
    out_t: std::thread::JoinHandle<String>,
    err_t: std::thread::JoinHandle<String>,
}

impl Running {
    /// The output path of the running command.
    pub(crate) fn out_path_of_run(&self) -> PathBuf {
        self.run.out_path()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the child (no chance to clean up) and get the run back, to
    /// run the same command again.
    pub(crate) fn kill(mut self) -> Run {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.out_t.join();
        let _ = self.err_t.join();
        self.run
    }

    /// Send SIGTERM to the child.
    pub(crate) fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    pub(crate) fn wait(self) -> Outcome {
        self.wait_with_peak().0
    }

    /// Run to the end, and the child's peak resident memory in bytes as
    /// last read from `/proc/PID/status` (`VmHWM`, sampled every few
    /// milliseconds while it runs).
    pub(crate) fn wait_with_peak(mut self) -> (Outcome, u64) {
        let start = Instant::now();
        let status_file = format!("/proc/{}/status", self.child.id());
        let mut peak = 0;
        let status = loop {
            // Read before asking whether it ended: the last reading is of
            // the process just before its exit.
            if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            }) {
                peak = peak.max(hwm * 1024);
            }
            if let Some(s) = self.child.try_wait().expect("wait for batchling") {
                break s;
            }
            if start.elapsed() > RUN_DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "batchling did not finish within {RUN_DEADLINE:?}; stderr:\n{}",
                    self.err_t.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let outcome = Outcome {
            status,
            stdout: self.out_t.join().unwrap(),
            stderr: self.err_t.join().unwrap(),
            run: self.run,
        };
        (outcome, peak)
    }
}

/// What a finished run left behind.
pub(crate) struct Outcome {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    run: Run,
}

impl Outcome {
    /// The exit code (fails the test if the process died of a signal).
    #[track_caller]
    pub(crate) fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| {
            panic!(
                "batchling died of a signal: {:?}\nstderr:\n{}",
                self.status, self.stderr
            )
        })
    }

    #[track_caller]
    pub(crate) fn assert_code(&self, want: i32) {
        assert_eq!(
            self.code(),
            want,
            "unexpected exit code; stderr:\n{}",
            self.stderr
        );
    }

    pub(crate) fn dir(&self) -> &Path {
        self.run.dir()
    }

    /// The same command again, in the same directory (a resume).
    pub(crate) fn again(self) -> Run {
        self.run
    }

    pub(crate) fn out_path(&self) -> PathBuf {
        self.run.out_path()
    }

    pub(crate) fn errors_path(&self) -> PathBuf {
        self.dir().join("out.errors.jsonl")
    }

    pub(crate) fn out_text(&self) -> String {
        std::fs::read_to_string(self.out_path()).expect("the output file exists")
    }

    pub(crate) fn err_text(&self) -> String {
        std::fs::read_to_string(self.errors_path()).expect("the error file exists")
    }

    pub(crate) fn out_lines(&self) -> Vec<Value> {
        parse_lines(&self.out_text(), "output")
    }

    pub(crate) fn err_lines(&self) -> Vec<Value> {
        parse_lines(&self.err_text(), "error")
    }

    pub(crate) fn summary(&self) -> Value {
        let text = std::fs::read_to_string(self.dir().join("summary.json"))
            .unwrap_or_else(|e| panic!("no summary json ({e}); stderr:\n{}", self.stderr));
        serde_json::from_str(&text).expect("the summary is JSON")
    }
}

/// Every line of a JSONL file, each required to be a JSON object.
pub(crate) fn parse_lines(text: &str, what: &str) -> Vec<Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the {what} file ends mid-line: {text:?}"
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what} line {} is not JSON ({e}): {l}", i + 1));
            assert!(v.is_object(), "{what} line {} is not an object: {l}", i + 1);
            v
        })
        .collect()
}

/// The `custom_id`s of some lines, in order.
pub(crate) fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l["custom_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no custom_id: {l}"))
                .to_owned()
        })
        .collect()
}

/// Assert every id of `want` appears exactly once across `lines`, and
/// nothing else does.
#[track_caller]
pub(crate) fn assert_each_once(lines: &[Value], want: &[String]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in ids(lines) {
        *seen.entry(id).or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "ids written more than once: {dup:?}");
    let got: BTreeSet<&String> = seen.keys().collect();
    let want: BTreeSet<&String> = want.iter().collect();
    assert_eq!(got, want, "the set of ids written differs from the input");
}

/// The summary's integer field.
pub(crate) fn num(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary.{field} is not a number: {summary}"))
}

/// Wait (up to a minute) for a condition the test needs before acting;
/// not a timing assertion: only a hang fails it.
#[track_caller]
pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A native Messages line.
pub(crate) fn native_line(custom_id: &str, text: &str) -> String {
    line(
        custom_id,
        "/v1/messages",
        &format!(
            r#"{{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{{"role":"user","content":{}}}]}}"#,
            js(text)
        ),
    )
}

/// An OpenAI chat line naming a Claude model.
pub(crate) fn claude_chat_line(custom_id: &str, text: &str) -> String {
    line(
        custom_id,
        "/v1/chat/completions",
        &format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":{}}}]}}"#,
            js(text)
        ),
    )
}

/// The output or error line of `id`.
pub(crate) fn by_id<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["custom_id"] == id)
        .unwrap_or_else(|| panic!("no line for {id}"))
}

/// A TCP proxy to a local service (PostgreSQL, Redis) that a test can cut
/// and restore: cut, it refuses new connections and closes the ones it
/// holds (as a restart or a partition would); restored, it passes
/// connections again.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub(crate) fn to(target: &'static str) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
        let port = listener.local_addr().expect("its address").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if flag.load(Relaxed) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let generation = flag.clone();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = generation.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 << 10];
                        // A read timeout lets a cut close idle connections too.
                        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                        loop {
                            if flag.load(Relaxed) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if flag.load(Relaxed) || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut }
    }

    pub(crate) fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A Redis key prefix of the test's own; its keys are removed when it
/// ends.
pub(crate) struct Prefix(pub(crate) String);

impl Prefix {
    pub(crate) fn new(name: &str) -> Self {
        Prefix(format!("bltest-{name}-{}", unique()))
    }

    /// Remove the prefix's keys now (as a Redis restart would, with
    /// nothing saved).
    pub(crate) fn wipe(&self) {
        let script = format!(
            "redis-cli --scan --pattern '{}*' | xargs -r redis-cli del",
            self.0
        );
        let _ = Command::new("sh").args(["-c", &script]).output();
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Best effort: the keys expire by themselves two minutes on.
        self.wipe();
    }
}

/// A PostgreSQL schema of the test's own in the machine's `test`
/// database, dropped when it ends.
pub(crate) struct Schema(pub(crate) String);

impl Schema {
    pub(crate) fn new(name: &str) -> Self {
        Schema(format!("bltest_{name}_{}", unique()))
    }

    /// The store URL of this schema, on `port`.
    pub(crate) fn url_on(&self, port: u16) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{port}/test?schema={}",
            self.0
        )
    }

    /// The store URL of this schema.
    pub(crate) fn url(&self) -> String {
        self.url_on(5432)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0);
        let _ = Command::new("psql")
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-c",
                &sql,
            ])
            .output();
    }
}

/// A name part no other test process or case shares.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}_{nanos}", std::process::id())
}

/// Send `signal` (`STOP`, `CONT`, `KILL`) to the process `pid`.
pub(crate) fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// Wait (at most `limit`) until `done` holds.
#[track_caller]
pub(crate) fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
