#!/usr/bin/env python3
"""batchling benchmarks: each scenario against the built-in fake provider,
reported as a ratio to the ideal.

Usage (from the repository root):
    cargo build --release
    python3 bench/bench.py [scenario ...]      # default: all but 'memory'
    python3 bench/bench.py memory              # the 1,000,000-line run

Each scenario starts `batchling mock` as its own process on a free loopback
port, writes an input file under bench/out/, runs `batchling run` against the
mock, and measures batchling's own CPU time and peak RSS (from wait4's rusage
of that process alone, so the mock's work is not counted). Results print as
a Markdown table, ready for BENCHMARKS.md.
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN") or os.path.join(ROOT, "target", "release", "batchling")
OUT = os.path.join(ROOT, "bench", "out")


def write_input(path, n, prompt_words=8, max_tokens=16, filler=None):
    words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet "
             "kilo lima mike november oscar papa quebec romeo sierra tango").split()
    with open(path, "w") as f:
        for i in range(n):
            if filler:
                text = " ".join([filler] * prompt_words)
            else:
                text = " ".join(words[(i + k) % len(words)] for k in range(prompt_words))
            body = {"model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"{i} {text}"}],
                    "max_tokens": max_tokens}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                "url": "/v1/chat/completions", "body": body},
                               separators=(",", ":")) + "\n")


def prompt_tokens_of(url, words):
    """Ask the mock how many prompt tokens a request of `words` fillers has
    (the mock counts with the same tokenizer as batchling)."""
    import urllib.request
    body = {"model": "gpt-4o-mini", "max_tokens": 1,
            "messages": [{"role": "user", "content": "7 " + " ".join(["the"] * words)}]}
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["usage"]["prompt_tokens"]


def start_mock(args):
    p = subprocess.Popen([BIN, "mock", "--port", "0"] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = p.stdout.readline().strip()
    if not url.startswith("http"):
        p.kill()
        raise SystemExit(f"mock did not start: {url!r}")
    return p, url


def run_batchling(url, inp, extra):
    out = os.path.join(OUT, "out.jsonl")
    summary = os.path.join(OUT, "summary.json")
    cmd = [BIN, "run", inp, "-o", out, "--base-url", url, "--quiet",
           "--summary-json", summary, "--restart"] + extra + os.environ.get("BENCH_EXTRA", "").split()
    env = dict(os.environ, OPENAI_API_KEY="sk-bench")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"batchling exited {code}: {' '.join(cmd)}")
    with open(summary) as f:
        s = json.load(f)
    s["_cpu"] = ru.ru_utime + ru.ru_stime
    s["_rss_mb"] = ru.ru_maxrss / 1024
    s["_wall"] = wall
    s["_out"] = out
    return s


def prompt_tokens_sum(out_path):
    total = 0
    with open(out_path) as f:
        for line in f:
            total += json.loads(line)["response"]["body"]["usage"]["prompt_tokens"]
    return total


def scenario(name, n, mock_args, run_args, ideal_fn, kind_args=None, prompt_tokens=None):
    os.makedirs(OUT, exist_ok=True)
    inp = os.path.join(OUT, f"{name}.jsonl")
    mock, url = start_mock(mock_args)
    kind_args = dict(kind_args or {})
    if prompt_tokens:
        # Size prompts to exactly `prompt_tokens` as the provider counts them.
        words = prompt_tokens
        words += prompt_tokens - prompt_tokens_of(url, words)
        assert prompt_tokens_of(url, words) == prompt_tokens
        kind_args.update(prompt_words=words, filler="the")
    write_input(inp, n, **kind_args)
    try:
        s = run_batchling(url, inp, run_args)
    finally:
        mock.terminate()
        mock.wait()
    ideal = ideal_fn(s)
    makespan = s["elapsed_s"]
    return {
        "scenario": name, "requests": s["requests"], "succeeded": s["succeeded"],
        "429s": s["rate_limited"], "makespan_s": round(makespan, 2),
        "ideal_s": round(ideal, 2) if ideal else None,
        "ratio": round(ideal / makespan, 4) if ideal else None,
        "cpu_s": round(s["_cpu"], 2),
        "cpu_s_per_10k": round(s["_cpu"] / s["requests"] * 10000, 3),
        "req_per_s": round(s["requests"] / makespan, 0),
        "peak_rss_mb": round(s["_rss_mb"], 1),
    }


def mock_stats(url):
    import urllib.request
    base = url[:-3] if url.endswith("/v1") else url
    with urllib.request.urlopen(base + "/_mock/stats") as r:
        return json.load(r)


def write_models_input(path, n, models, prompt_words=8, max_tokens=16):
    """`n` requests cycling through `models`."""
    with open(path, "w") as f:
        for i in range(n):
            body = {"model": models[i % len(models)],
                    "messages": [{"role": "user", "content": f"{i} " + " ".join(["the"] * prompt_words)}],
                    "max_tokens": max_tokens}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                "url": "/v1/chat/completions", "body": body},
                               separators=(",", ":")) + "\n")


def mixed_models(k, n, rpm=6000, run_args=()):
    """`n` requests over `k` models, each with its own `rpm` limit enforced
    per second by the fake provider, none given to batchling (learned).
    Ideal: the busiest model's share at its limit."""
    os.makedirs(OUT, exist_ok=True)
    models = [f"model-{chr(ord('a') + i)}" for i in range(k)]
    limits = os.path.join(OUT, f"mixed-{k}-limits.toml")
    with open(limits, "w") as f:
        f.write('window = "second"\n')
        for m in models:
            f.write(f'[models.{m}]\nrpm = {rpm}\n')
    inp = os.path.join(OUT, f"mixed-{k}.jsonl")
    write_models_input(inp, n, models)
    mock, url = start_mock(["--limits", limits, "--latency-ms", "200"])
    try:
        s = run_batchling(url, inp, list(run_args))
    finally:
        mock.terminate()
        mock.wait()
    per_model = -(-n // k)
    ideal = per_model / (rpm / 60)
    wide = "-c" + run_args[1] if run_args else ""
    return {"scenario": f"mixed-{k}-models-{n}{wide}", "requests": s["requests"], "succeeded": s["succeeded"],
            "429s": s["rate_limited"], "makespan_s": round(s["elapsed_s"], 2),
            "ideal_s": round(ideal, 2), "ratio": round(ideal / s["elapsed_s"], 4),
            "cpu_s": round(s["_cpu"], 2)}


# Request sizes (the provider's count, prompt + max_tokens) where one
# second's share of 300,000 TPM (5,000 tokens) holds 2 to 50 requests, none
# dividing it evenly.
TOKEN_SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "2300 1300 610 345 205 135 101").split()]


def token_sizes(rule, seconds=20, tpm=300000, max_tokens=50):
    """One row per size: `--tpm` given, the provider counting by `rule`
    (its `--token-count`), enforced per second. The ideal is what a
    per-second limit admits at most: floor(share / size) requests a second,
    by the provider's own count of each request."""
    os.makedirs(OUT, exist_ok=True)
    share = tpm // 60
    rows = []
    for size in TOKEN_SIZES:
        mock, url = start_mock(["--tpm", str(tpm), "--per-second", "--latency-ms", "200",
                                "--token-count", rule])
        try:
            # Size the prompt so the provider's count of a request is `size`.
            words = size - max_tokens
            words += (size - max_tokens) - prompt_tokens_of(url, words)
            if rule == "openai":
                # characters / 4: each "the " is 4 characters.
                words = size - max_tokens - 2
            per_s = share // size
            n = per_s * seconds
            inp = os.path.join(OUT, f"sizes-{rule}-{size}.jsonl")
            write_input(inp, n, prompt_words=words, max_tokens=max_tokens, filler="the")
            before = mock_stats(url)["tokens_admitted"]  # the sizing probes
            s = run_batchling(url, inp, ["--tpm", str(tpm)])
            stats = mock_stats(url)
        finally:
            mock.terminate()
            mock.wait()
        charged = (stats["tokens_admitted"] - before) / s["succeeded"]
        seconds_seen = [c["tokens"] for lane in stats.get("lanes", []) for c in lane.get("per_second", [])]
        full = sorted(seconds_seen[1:-1])
        per_s = share // round(charged)
        ideal = s["requests"] / per_s
        lanes = s.get("lanes") or [{}]
        rows.append({"scenario": f"tokens-{rule}-{size}", "requests": s["requests"],
                     "succeeded": s["succeeded"], "429s": s["rate_limited"],
                     "makespan_s": round(s["elapsed_s"], 2), "ideal_s": round(ideal, 2),
                     "ratio": round(ideal / s["elapsed_s"], 4),
                     "charged_per_request": round(charged, 1), "per_second": per_s,
                     "charge_ratio": lanes[0].get("token_charge_ratio"),
                     "window_min_med": f"{full[0]}/{full[len(full) // 2]}" if full else "",
                     "cpu_s": round(s["_cpu"], 2)})
    return rows


def run_anthropic(url, inp, extra):
    """`batchling run --provider anthropic` against the fake's Messages API."""
    base = url[:-3] if url.endswith("/v1") else url
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench"
    return run_batchling(base, inp, ["--provider", "anthropic"] + extra)


def write_messages_input(path, n, prompt_words, max_tokens):
    with open(path, "w") as f:
        for i in range(n):
            body = {"model": "claude-sonnet-4-5", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"{i} " + " ".join(["the"] * prompt_words)}]}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/messages",
                                "body": body}, separators=(",", ":")) + "\n")


def anthropic_bound(binding, seconds=30, window="second", given=False):
    """Native Messages lines against the fake Anthropic API, RPM, ITPM and
    OTPM all in force (the two that do not bind at 10x what the run needs),
    enforced per second, 200 ms latency, no limits given (learned from the
    anthropic-ratelimit-* headers). Ideal: what a per-second limit admits at
    most, floor(share / size) a second, by the fake's own count."""
    os.makedirs(OUT, exist_ok=True)
    words, max_tokens = {"rpm": (8, 16), "itpm": (470, 16), "otpm": (8, 95)}[binding]
    limits = {"rpm": 3000, "itpm": 300000, "otpm": 60000}
    window_args = ["--per-second"] if window == "second" else []
    limits = {k: v if k == binding else v * 40 for k, v in limits.items()}
    mock, url = start_mock(window_args + ["--latency-ms", "200"]
                           + [f"--{k}={v}" for k, v in limits.items()])
    run_args = []
    if given:
        # The limits page's three figures, given as batchling's limits file.
        path = os.path.join(OUT, "anthropic-limits.toml")
        with open(path, "w") as f:
            f.write("[default]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items()))
        run_args = ["--limits", path]
    try:
        inp = os.path.join(OUT, f"anthropic-{binding}.jsonl")
        write_messages_input(inp, 1, words, max_tokens)
        s1 = run_anthropic(url, inp, [])  # one request: the fake's count of one
        per_request = mock_stats(url)
        charged = {"rpm": 1, "itpm": per_request["lanes"][0]["input_tokens"],
                   "otpm": per_request["lanes"][0]["output_tokens"]}[binding]
        per_s = (limits[binding] // 60) // charged
        n = per_s * seconds
        write_messages_input(inp, n, words, max_tokens)
        s = run_anthropic(url, inp, run_args)
        stats = mock_stats(url)
    finally:
        mock.terminate()
        mock.wait()
    ideal = n / per_s
    how = "given" if given else "learned"
    return {"scenario": f"anthropic-{binding}-bound-per-{window}-{how}", "requests": s["requests"], "succeeded": s["succeeded"],
            "429s": s["rate_limited"], "makespan_s": round(s["elapsed_s"], 2), "ideal_s": round(ideal, 2),
            "ratio": round(ideal / s["elapsed_s"], 4), "per_second": per_s, "charged_per_request": charged,
            "mock_429s": stats["rate_limited"], "cpu_s": round(s["_cpu"], 2)}


def anthropic_529_storm(n=3000):
    """30% of attempts answered 529 overloaded_error: every request answered,
    none twice (the output's custom_ids, and the fake's successes)."""
    os.makedirs(OUT, exist_ok=True)
    mock, url = start_mock(["--latency-ms", "20", "--overloaded", "0.3"])
    try:
        inp = os.path.join(OUT, "anthropic-529.jsonl")
        write_messages_input(inp, n, 8, 16)
        s = run_anthropic(url, inp, ["--max-attempts", "20"])
        stats = mock_stats(url)
    finally:
        mock.terminate()
        mock.wait()
    ids = [json.loads(l)["custom_id"] for l in open(s["_out"])]
    return {"scenario": "anthropic-529-storm", "requests": s["requests"], "succeeded": s["succeeded"],
            "attempts": s["attempts"], "answered_once": len(ids) == len(set(ids)) == n,
            "fake_successes": stats["ok"], "fake_529s": stats["faults"],
            "makespan_s": round(s["elapsed_s"], 2), "cpu_s": round(s["_cpu"], 2)}


def run_routes(config_text, inp, extra=()):
    """`batchling run --config` with `config_text` (its keys in BENCH_KEY_*)."""
    path = os.path.join(OUT, "routes.toml")
    with open(path, "w") as f:
        f.write(config_text)
    out = os.path.join(OUT, "out.jsonl")
    summary = os.path.join(OUT, "summary.json")
    cmd = [BIN, "run", inp, "-o", out, "--config", path, "--quiet",
           "--summary-json", summary, "--restart"] + list(extra)
    env = dict(os.environ, BENCH_KEY_A="sk-bench-a", BENCH_KEY_B="sk-bench-b")
    env.pop("OPENAI_API_KEY", None)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"batchling exited {code}: {' '.join(cmd)}")
    with open(summary) as f:
        s = json.load(f)
    s["_cpu"] = ru.ru_utime + ru.ru_stime
    s["_wall"] = time.monotonic() - t0
    s["_out"] = out
    return s


def pooled_config(url, keys_a, keys_b, lim):
    """One provider at `url`, two limit groups (`keys_a`, `keys_b`: key
    variable names), one model pooling them."""
    def keys(names):
        return ", ".join(f'{{ id = "{k.lower()}", env = "{k}" }}' for k in names)
    return f"""
[providers.fake]
kind = "openai-compatible"
base_url = "{url}"

[groups.ga]
provider = "fake"
keys = [{keys(keys_a)}]
{lim}

[groups.gb]
provider = "fake"
keys = [{keys(keys_b)}]
{lim}

[models.gpt-4o-mini]
provider = "fake"
groups = ["ga", "gb"]
"""


def two_groups(n=6000, rpm=6000, given=True):
    """Issue #17: one model behind two limit groups of one provider (the
    fake keeps one budget per group of keys: `rpm` each, enforced per
    second, 200 ms latency). Ideal: n at their summed limit."""
    os.makedirs(OUT, exist_ok=True)
    limits = os.path.join(OUT, "two-groups-limits.toml")
    with open(limits, "w") as f:
        f.write(f'[default]\nrpm = {rpm}\n\n[groups]\norg-a = ["sk-bench-a"]\norg-b = ["sk-bench-b"]\n')
    mock, url = start_mock(["--limits", limits, "--per-second", "--latency-ms", "200"])
    lim = f"limits = {{ rpm = {rpm} }}" if given else ""
    try:
        cfg = pooled_config(url, ["BENCH_KEY_A"], ["BENCH_KEY_B"], lim)
        inp = os.path.join(OUT, "two-groups.jsonl")
        write_input(inp, n)
        s = run_routes(cfg, inp)
    finally:
        mock.terminate()
        mock.wait()
    ideal = n / (2 * rpm / 60)
    return {"scenario": "routes-two-groups" + ("" if given else "-learned"),
            "requests": s["requests"], "succeeded": s["succeeded"],
            "429s": s["rate_limited"], "makespan_s": round(s["elapsed_s"], 2),
            "ideal_s": round(ideal, 2), "ratio": round(ideal / s["elapsed_s"], 4),
            "cpu_s": round(s["_cpu"], 2)}


def overloaded_primary(n=6000, rpm=6000, share=0.3, spill=True):
    """Issue #17: a primary answering `share` of its attempts 529, a
    fallback beside it, each `rpm` enforced per second, 200 ms latency.
    The ideal: both targets' limits fully used, n / (the primary's
    successes, (1 - p) x rpm, + the fallback's rpm), which `spill = true`
    aims at. Without spill a line moves on only after 3 failures, so the
    primary's rate bounds the run: n x (1 + p + p^2) attempts at `rpm`
    (reported as ratio_to_chain_ideal)."""
    os.makedirs(OUT, exist_ok=True)
    base = ["--rpm", str(rpm), "--per-second", "--latency-ms", "200"]
    (mp, up) = start_mock(base + ["--overloaded", str(share)])
    (mf, uf) = start_mock(base)
    try:
        cfg = f"""
[providers.primary]
kind = "openai-compatible"
base_url = "{up}"

[providers.fallback]
kind = "openai-compatible"
base_url = "{uf}"

[groups.gp]
provider = "primary"
keys = [{{ id = "key-a", env = "BENCH_KEY_A" }}]
limits = {{ rpm = {rpm} }}

[groups.gf]
provider = "fallback"
keys = [{{ id = "key-b", env = "BENCH_KEY_B" }}]
limits = {{ rpm = {rpm} }}

[models.primary]
provider = "primary"
model = "gpt-4o-mini"
groups = ["gp"]

[models.fallback]
provider = "fallback"
model = "gpt-4o-mini"
groups = ["gf"]

[routes.gpt-4o-mini]
chain = ["primary", "fallback"]
spill = {"true" if spill else "false"}
"""
        inp = os.path.join(OUT, "overloaded.jsonl")
        write_input(inp, n)
        s = run_routes(cfg, inp)
        sp, sf = mock_stats(up), mock_stats(uf)
    finally:
        for m in (mp, mf):
            m.terminate()
            m.wait()
    ids = [json.loads(l)["custom_id"] for l in open(s["_out"])]
    p = share
    chain_ideal = n * (1 + p + p * p) / (rpm / 60)
    both_ideal = n / ((1 - p) * rpm / 60 + rpm / 60)
    return {"scenario": "routes-overloaded-primary" + ("" if spill else "-no-spill"),
            "requests": s["requests"],
            "succeeded": s["succeeded"], "429s": s["rate_limited"],
            "makespan_s": round(s["elapsed_s"], 2), "ideal_s": round(both_ideal, 2),
            "ratio": round(both_ideal / s["elapsed_s"], 4),
            "ratio_to_chain_ideal": round(chain_ideal / s["elapsed_s"], 4),
            "answered_once": len(ids) == len(set(ids)) == n,
            "by_primary": sp["ok"], "by_fallback": sf["ok"], "primary_529s": sp["faults"],
            "cpu_s": round(s["_cpu"], 2)}


def shared_limiter(processes=3, per_process=1000, learned=False):
    """Issue #18: `processes` runs, each its own input, one key, one 6,000
    RPM limit enforced per second, sharing it through Redis (`--limiter`).
    The ideal is the limit fully used: all lines at 100 a second."""
    mock, url = start_mock(["--rpm", "6000", "--per-second", "--latency-ms", "200"])
    prefix = f"blbench-{os.getpid()}-{int(time.time())}"
    procs = []
    try:
        t0 = time.monotonic()
        for i in range(processes):
            inp = os.path.join(OUT, f"shared-{i}.jsonl")
            write_input(inp, per_process)
            out = os.path.join(OUT, f"shared-{i}-out.jsonl")
            summary = os.path.join(OUT, f"shared-{i}.json")
            for stale in (out + ".journal",):
                if os.path.exists(stale):
                    os.remove(stale)
            given = [] if learned else ["--rpm", "6000"]
            cmd = [BIN, "run", inp, "-o", out, "--base-url", url, "--quiet", "--restart",
                   "--summary-json", summary, "--limiter", "redis://127.0.0.1:6379",
                   "--limiter-prefix", prefix] + given
            procs.append((subprocess.Popen(cmd, env=dict(os.environ, OPENAI_API_KEY="sk-bench")),
                          summary))
        cpu, rate_limited, ok = 0.0, 0, 0
        for p, summary in procs:
            _, status, ru = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit("a shared-limiter run failed")
            cpu += ru.ru_utime + ru.ru_stime
            with open(summary) as f:
                s = json.load(f)
            rate_limited += s["rate_limited"]
            ok += s["succeeded"]
        wall = time.monotonic() - t0
    finally:
        mock.terminate()
        mock.wait()
        subprocess.run(["sh", "-c", f"redis-cli --scan --pattern '{prefix}*' | xargs -r redis-cli del"],
                       stdout=subprocess.DEVNULL)
    n = processes * per_process
    ideal = n / 100.0
    return {"scenario": f"limiter-{processes}-processes" + ("-learned" if learned else ""),
            "requests": n, "succeeded": ok, "429s": rate_limited,
            "makespan_s": round(wall, 2), "ideal_s": ideal, "ratio": round(ideal / wall, 4),
            "cpu_s": round(cpu, 2)}


def store_schema(tag):
    """A PostgreSQL schema of the benchmark's own, and its store URL."""
    schema = f"blbench_{tag.replace('-', '_')}_{os.getpid()}_{int(time.time())}"
    return schema, f"postgres://postgres@127.0.0.1:5432/test?schema={schema}"


def drop_schema(schema):
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c",
                    f"DROP SCHEMA IF EXISTS {schema} CASCADE"], stdout=subprocess.DEVNULL)


def store_workers(workers, n, mock_args, run_args, ideal_fn, tag, limiter=True):
    """Issue #18: `workers` processes on one job of `n` lines in
    PostgreSQL (`--store`), from their start until the last one exits; each
    its own directory (its own local journal) and the same input file."""
    mock, url = start_mock(mock_args)
    schema, store = store_schema(tag)
    prefix = f"blbench-{tag}-{os.getpid()}-{int(time.time())}"
    os.makedirs(OUT, exist_ok=True)
    inp = os.path.join(OUT, f"store-{tag}.jsonl")
    write_input(inp, n)
    procs = []
    try:
        t0 = time.monotonic()
        for i in range(workers):
            d = os.path.join(OUT, f"store-{tag}-w{i}")
            subprocess.run(["rm", "-rf", d])
            os.makedirs(d)
            summary = os.path.join(d, "summary.json")
            cmd = [BIN, "run", inp, "-o", os.path.join(d, "out.jsonl"), "--base-url", url,
                   "--quiet", "--summary-json", summary, "--store", store] + run_args
            if limiter:
                cmd += ["--limiter", "redis://127.0.0.1:6379", "--limiter-prefix", prefix]
            env = dict(os.environ, OPENAI_API_KEY="sk-bench")
            procs.append((subprocess.Popen(cmd, env=env), summary))
        cpu, sent = [], []
        for p, summary in procs:
            _, status, ru = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"a store worker failed ({os.waitstatus_to_exitcode(status)})")
            cpu.append(ru.ru_utime + ru.ru_stime)
            with open(summary) as f:
                sent.append(json.load(f)["attempts"])
        wall = time.monotonic() - t0
        stats = mock_stats(url)
    finally:
        mock.terminate()
        mock.wait()
        drop_schema(schema)
        subprocess.run(["sh", "-c", f"redis-cli --scan --pattern '{prefix}*' | xargs -r redis-cli del"],
                       stdout=subprocess.DEVNULL)
    ideal = ideal_fn(n)
    row = {"scenario": f"store-{tag}", "workers": workers, "requests": n,
           "sent": stats["requests"], "429s": stats["rate_limited"],
           "makespan_s": round(wall, 2), "req_per_s": round(n / wall, 0),
           "cpu_s_per_10k_all": round(sum(cpu) / n * 10000, 3),
           # Each worker's CPU over the requests it sent itself.
           "cpu_s_per_10k_each": " ".join(f"{c / max(a, 1) * 10000:.2f}" for c, a in zip(cpu, sent)),
           "sent_each": " ".join(str(a) for a in sent),
           "cpu_s": " ".join(f"{c:.2f}" for c in cpu)}
    if ideal:
        row.update(ideal_s=ideal, ratio=round(ideal / wall, 4))
    return row


def store_load(n=1_000_000):
    """Issue #18: the first worker of a job of `n` lines loads it into
    PostgreSQL: from its start to the fake provider's first request (the
    load is done then: claims begin after it commits)."""
    mock, url = start_mock([])
    schema, store = store_schema("load")
    inp = os.path.join(OUT, f"store-load-{n}.jsonl")
    if not os.path.exists(inp):
        write_input(inp, n)
    d = os.path.join(OUT, "store-load-w0")
    subprocess.run(["rm", "-rf", d])
    os.makedirs(d)
    cmd = [BIN, "run", inp, "-o", os.path.join(d, "out.jsonl"), "--base-url", url, "--quiet",
           "--store", store]
    try:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=dict(os.environ, OPENAI_API_KEY="sk-bench"))
        while mock_stats(url)["requests"] == 0:
            if p.poll() is not None:
                raise SystemExit("the loading worker ended before sending")
            time.sleep(0.05)
        loaded = time.monotonic() - t0
        p.kill()
        p.wait()
    finally:
        mock.terminate()
        mock.wait()
        drop_schema(schema)
    return {"scenario": "store-load-1m", "requests": n, "load_s": round(loaded, 2)}


SCENARIOS = {
    # 3,000 requests, 6,000 RPM enforced per second, 200 ms latency.
    "rate-bound": lambda: scenario(
        "rate-bound", 3000,
        ["--rpm", "6000", "--per-second", "--latency-ms", "200"],
        ["--rpm", "6000"], lambda s: 3000 / (6000 / 60)),
    # 1,000 requests of 395 prompt tokens, max_tokens 100, 300,000 TPM per
    # second. The ideal is total tokens / TPM (every request counts prompt +
    # max_tokens at admission).
    "token-bound": lambda: scenario(
        "token-bound", 1000,
        ["--tpm", "300000", "--per-second", "--latency-ms", "200"],
        ["--tpm", "300000"],
        lambda s: (prompt_tokens_sum(s["_out"]) + 100 * 1000) / (300000 / 60),
        {"max_tokens": 100}, prompt_tokens=395),
    # The rate-bound case with no --rpm: limits learned from headers.
    "limits-learned": lambda: scenario(
        "limits-learned", 3000,
        ["--rpm", "6000", "--per-second", "--latency-ms", "200"],
        [], lambda s: 3000 / (6000 / 60)),
    # 5,000 requests, 500 ms latency, concurrency 100: ideal N x latency / concurrency.
    "latency-bound": lambda: scenario(
        "latency-bound", 5000, ["--latency-ms", "500"],
        ["--concurrency", "100"], lambda s: 5000 * 0.5 / 100),
    # 20,000 requests, zero latency, no limits: CPU per request and throughput.
    # CPU time on a shared VM varies by +-25%: the median of five runs,
    # with all five shown.
    "overhead": lambda: overhead(5),
    # 1,000,000 lines, zero latency: peak RSS, journal size, resume at 99%.
    "memory": lambda: memory_and_resume(),
    # `batchling estimate` over 1,000,000 requests of ~400 tokens (< 60 s).
    "estimate": lambda: estimate_1m(),
    # Only after 'memory': drop the last 1% of its journal and resume.
    "resume": lambda: dict(scenario="resume", **resume_at_99()),
    "serve": lambda: serve_50k(),
    # Issue #15: 2 and 10 models each with its own limit, none given.
    "mixed-2": lambda: mixed_models(2, 3000),
    "mixed-10": lambda: mixed_models(10, 10000),
    # As long as the rate-bound scenario (30 s): the start-up and the last
    # round trip weigh a third as much.
    "mixed-10-30s": lambda: mixed_models(10, 30000),
    # Ten lanes at 100 a second each, 200 ms: 200 requests in flight, near
    # the default --concurrency 256 (a permit is held until its answer is
    # journaled); with room to spare.
    "mixed-10-30s-wide": lambda: mixed_models(10, 30000, run_args=("--concurrency", "1024")),
    # Issue #15: seven request sizes against each counting rule.
    "token-sizes-exact": lambda: token_sizes("exact"),
    "token-sizes-openai": lambda: token_sizes("openai"),
    # Issue #16: the fake Anthropic API, each limit binding in turn; a 529 storm.
    "anthropic-rpm": lambda: anthropic_bound("rpm", given=True),
    "anthropic-itpm": lambda: anthropic_bound("itpm", given=True),
    "anthropic-otpm": lambda: anthropic_bound("otpm", given=True),
    # Limits learned from the headers (a slow start first, as for OpenAI).
    "anthropic-rpm-learned": lambda: anthropic_bound("rpm"),
    "anthropic-itpm-learned": lambda: anthropic_bound("itpm"),
    "anthropic-otpm-learned": lambda: anthropic_bound("otpm"),
    # The same with the fake's per-minute windows (Anthropic describes a
    # bucket refilled all along, not per-second windows).
    "anthropic-rpm-minute": lambda: anthropic_bound("rpm", window="minute"),
    "anthropic-itpm-minute": lambda: anthropic_bound("itpm", window="minute"),
    "anthropic-otpm-minute": lambda: anthropic_bound("otpm", window="minute"),
    "anthropic-529": lambda: anthropic_529_storm(),
    # Issue #17: key pools and fallback chains (`run --config`).
    "routes-two-groups": lambda: two_groups(),
    "routes-two-groups-learned": lambda: two_groups(given=False),
    "routes-overloaded-primary": lambda: overloaded_primary(),
    "routes-overloaded-primary-no-spill": lambda: overloaded_primary(spill=False),
    # Issue #18: three processes, one key, one limit shared through Redis.
    "limiter-3-processes": lambda: shared_limiter(),
    "limiter-3-processes-learned": lambda: shared_limiter(learned=True),
    # Issue #18: three workers on one job in PostgreSQL, one 6,000 RPM
    # per-second limit shared through Redis; ideal: the limit fully used.
    "store-3-workers": lambda: store_workers(
        3, 6000, ["--rpm", "6000", "--per-second", "--latency-ms", "200"], ["--rpm", "6000"],
        lambda n: n / 100.0, "3-workers"),
    # Store overhead: four workers, no latency, no limits, no shared budget.
    "store-overhead": lambda: store_workers(
        4, 100_000, [], ["--concurrency", "64"], lambda n: None, "overhead", limiter=False),
    "store-load-1m": lambda: store_load(),
}


def overhead(runs):
    rows = sorted((scenario("overhead", 20000, [], ["--concurrency", "64"], lambda s: None)
                   for _ in range(runs)), key=lambda r: r["cpu_s"])
    median = dict(rows[len(rows) // 2])
    median["cpu_s_per_10k_runs"] = " ".join(str(r["cpu_s_per_10k"]) for r in rows)
    return median


def memory_and_resume():
    """1,000,000 requests: peak RSS and journal size; then drop the last 1%
    from the journal (as if the run had died at 99%) and time the resume."""
    import sqlite3
    row = scenario("memory", 1_000_000, [], ["--concurrency", "64"], lambda s: None)
    out = os.path.join(OUT, "out.jsonl")
    journal = out + ".journal"
    row["journal_mb"] = round(os.path.getsize(journal) / 2**20, 1)
    row.update(resume_at_99())
    return row


def resume_at_99():
    """Needs the 'memory' run's journal: drop its last 1% and resume."""
    import sqlite3
    out = os.path.join(OUT, "out.jsonl")
    journal = out + ".journal"
    row = {}
    db = sqlite3.connect(journal)
    db.execute("DELETE FROM requests WHERE seq >= 990000")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    mock, url = start_mock([])
    try:
        cmd = [BIN, "run", os.path.join(OUT, "memory.jsonl"), "-o", out, "--base-url", url,
               "--quiet", "--summary-json", os.path.join(OUT, "summary.json"), "--concurrency", "64"]
        t0 = time.monotonic()
        subprocess.run(cmd, env=dict(os.environ, OPENAI_API_KEY="sk-bench"), check=True)
        resume_wall = time.monotonic() - t0
    finally:
        mock.terminate()
        mock.wait()
    with open(os.path.join(OUT, "summary.json")) as f:
        s = json.load(f)
    row["resume_wall_s"] = round(resume_wall, 2)
    row["resume_sent"] = s["attempts"]
    row["resume_first_request_s"] = round(s["first_request_s"], 2)
    return row


def estimate_1m():
    """`batchling estimate` on 1,000,000 chat requests of ~400 prompt tokens
    of varied text: no two prompts alike, words drawn Zipf-like from 20,000
    made-up words (so neither whole texts nor most words repeat trivially)."""
    import random
    rnd = random.Random(1)
    syll = ["ka", "lo", "mi", "ten", "dra", "vu", "shi", "por", "el", "quin", "zo", "ba",
            "rith", "an", "ul", "ne", "gor", "ti", "ves", "ma"]
    vocab = ["".join(rnd.choice(syll) for _ in range(rnd.randint(1, 4))) for _ in range(20000)]
    cum, acc = [], 0.0
    for r in range(len(vocab)):
        acc += 1.0 / (r + 1)
        cum.append(acc)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "estimate-1m-v2.jsonl")
    if not os.path.exists(path):
        with open(path, "w") as f:
            for i in range(1_000_000):
                text = " ".join(rnd.choices(vocab, cum_weights=cum, k=200))
                body = {"model": "gpt-4o-mini", "max_tokens": 100,
                        "messages": [{"role": "system", "content": "Classify the text."},
                                     {"role": "user", "content": f"{i}: {text}"}]}
                f.write(json.dumps({"custom_id": f"e{i}", "method": "POST",
                                    "url": "/v1/chat/completions", "body": body},
                                   separators=(",", ":")) + "\n")
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "estimate", path, "--json"], stdout=subprocess.PIPE)
    out, _ = p.communicate()
    wall = time.monotonic() - t0
    e = json.loads(out)["models"]["gpt-4o-mini"]
    return {"scenario": "estimate-1m", "requests": e["requests"],
            "input_tokens": e["input_tokens"], "makespan_s": round(wall, 1),
            "ideal_s": 60.0, "ratio": round(60.0 / wall, 2)}


def serve_50k(n=50_000):
    """A 50,000-request batch through `batchling serve` (upload, create, poll,
    download), in front of the mock with no limits. The server's RSS is
    sampled every 50 ms from /proc to show it stays flat."""
    import threading
    import urllib.request
    os.makedirs(OUT, exist_ok=True)
    inp = os.path.join(OUT, "serve.jsonl")
    write_input(inp, n)
    data_dir = os.path.join(OUT, "serve-data")
    subprocess.run(["rm", "-rf", data_dir], check=True)
    mock, mock_url = start_mock([])
    srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                            "--base-url", mock_url, "--no-auth", "--concurrency", "64"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = srv.stdout.readline().strip()
    samples = []  # (seconds since upload, rss MB, completed)
    progress = {"completed": 0}
    stop = threading.Event()
    t0 = time.monotonic()

    def sample():
        while not stop.is_set():
            try:
                with open(f"/proc/{srv.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            samples.append((time.monotonic() - t0, int(line.split()[1]) / 1024,
                                            progress["completed"]))
            except OSError:
                pass
            time.sleep(0.05)

    def call(method, path, body=None, headers=None):
        req = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(req) as r:
            return r.read()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        t0 = time.monotonic()
        boundary = "batchlingbench"
        with open(inp, "rb") as f:
            content = f.read()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"serve.jsonl\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        up = json.loads(call("POST", "/files", body, {"content-type": f"multipart/form-data; boundary={boundary}"}))
        batch = json.loads(call("POST", "/batches", json.dumps({
            "input_file_id": up["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}).encode(), {"content-type": "application/json"}))
        while True:
            b = json.loads(call("GET", f"/batches/{batch['id']}"))
            progress["completed"] = b["request_counts"]["completed"]
            if b["status"] in ("completed", "failed", "expired", "cancelled"):
                break
            time.sleep(0.05)
        out = call("GET", f"/files/{b['output_file_id']}/content")
        wall = time.monotonic() - t0
    finally:
        stop.set()
        sampler.join()
        srv.terminate()
        _, _, ru = os.wait4(srv.pid, 0)
        mock.kill()
        mock.wait()
    lines = out.count(b"\n")
    assert b["status"] == "completed" and lines == n, (b["status"], lines)
    peak = max(s[1] for s in samples)
    during = [s[1] for s in samples if 0 < s[2] < n]
    return {"scenario": "serve-50k", "requests": n, "succeeded": b["request_counts"]["completed"],
            "makespan_s": round(wall, 2), "req_per_s": round(n / wall),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "cpu_s_per_10k": round((ru.ru_utime + ru.ru_stime) / n * 10_000, 2),
            "peak_rss_mb": round(peak, 1),
            "rss_while_running_mb": f"{min(during):.0f}-{max(during):.0f}" if during else "",
            # Largest RSS seen up to each quarter of the answers: flat memory
            # plateaus early instead of growing with the batch.
            "rss_by_quarter_mb": " ".join(
                f"{max([s[1] for s in samples if s[2] <= q * n // 4] or [0]):.0f}" for q in (1, 2, 3, 4)),
            "rss_samples": len(samples)}


def main():
    names = sys.argv[1:] or [n for n in SCENARIOS if n not in ("memory", "resume", "estimate")]
    if not os.path.exists(BIN):
        raise SystemExit("build first: cargo build --release")
    rows = []
    for n in names:
        r = SCENARIOS[n]()
        rows.extend(r if isinstance(r, list) else [r])
    cols = ["scenario", "requests", "succeeded", "429s", "makespan_s", "ideal_s",
            "ratio", "cpu_s", "cpu_s_per_10k", "req_per_s", "peak_rss_mb"]
    extra = sorted({k for r in rows for k in r} - set(cols))
    cols += extra
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
