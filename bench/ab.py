#!/usr/bin/env python3
"""Interleaved A/B of batchling binaries on the overhead scenario.

Usage (from the repository root, after `python3 bench/bench.py overhead`
has written bench/out/overhead.jsonl):

    python3 bench/ab.py RUNS BINARY [BINARY ...]

A binary may carry environment variables and extra flags:
    'path/to/batchling|NAME=VALUE;NAME2=VALUE|--no-fsync'

One `batchling mock` (from the first binary) serves every run; the binaries
take turns, so a change in the machine's load hits all of them alike. Each
run's CPU comes from wait4 (batchling's own, user + system). Prints, per
binary, the medians in CPU-seconds per 10,000 requests and requests/s.
"""

import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT = os.path.join(ROOT, "bench", "out", "overhead.jsonl")
OUT = os.path.join(ROOT, "bench", "out", "ab.jsonl")


def parse(spec):
    parts = spec.split("|")
    env = dict(kv.split("=", 1) for kv in parts[1].split(";") if kv) if len(parts) > 1 else {}
    extra = parts[2].split() if len(parts) > 2 else []
    return parts[0], env, extra


def main():
    runs, specs = int(sys.argv[1]), sys.argv[2:]
    with open(INPUT) as f:
        n = sum(1 for _ in f)
    mock = subprocess.Popen([parse(specs[0])[0], "mock", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = mock.stdout.readline().strip()
    results = {s: [] for s in specs}
    try:
        for _ in range(runs):
            for spec in specs:
                binary, env, extra = parse(spec)
                # A journal of another binary's schema would be refused:
                # each run starts from none.
                for leftover in (OUT + ".journal", OUT + ".journal-wal", OUT + ".journal-shm"):
                    if os.path.exists(leftover):
                        os.remove(leftover)
                cmd = [binary, "run", INPUT, "-o", OUT, "--base-url", url, "--quiet",
                       "--restart", "--concurrency", "64"] + extra
                t0 = time.monotonic()
                p = subprocess.Popen(cmd, env=dict(os.environ, OPENAI_API_KEY="sk-ab", **env))
                _, status, usage = os.wait4(p.pid, 0)
                wall = time.monotonic() - t0
                if status != 0:
                    sys.exit(f"{spec}: exit status {status}")
                per10k = 10_000 / n
                results[spec].append((usage.ru_utime * per10k, usage.ru_stime * per10k, wall))
    finally:
        mock.terminate()
        mock.wait()
    for spec, r in results.items():
        total = sorted(u + s for u, s, _ in r)
        print(f"{spec}: {statistics.median(total):.3f} CPU-s per 10k "
              f"(user {statistics.median(u for u, _, _ in r):.3f}, "
              f"system {statistics.median(s for _, s, _ in r):.3f}), "
              f"{n / statistics.median(w for _, _, w in r):,.0f} req/s; "
              f"runs {' '.join(f'{t:.2f}' for t in total)}")


if __name__ == "__main__":
    main()
