#!/usr/bin/env python3
"""Serve a GGUF chat model with llama.cpp's real HTTP server (xllamacpp, in-process) on loopback.

Usage: xserve.py MODEL.gguf ALIAS [--port N] [--ctx N] [--parallel N]

Prints exactly one line `BASE_URL=http://127.0.0.1:PORT/v1` on stdout once `GET /health`
answers 200; everything else (llama.cpp's log) goes to stderr. Stops on SIGTERM/SIGINT and
when the parent process dies (Linux PR_SET_PDEATHSIG).
"""
import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (best effort, Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:  # not Linux: the caller kills us explicitly
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("alias")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free loopback port")
    ap.add_argument("--ctx", type=int, default=2048, help="total context, split over the slots")
    ap.add_argument("--parallel", type=int, default=4, help="slots (requests decoded together)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    args = ap.parse_args()

    # Keep stdout for the single BASE_URL line: llama.cpp (C++) may write to fd 1.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    # Block the stop signals before the server starts its threads (they inherit the mask),
    # so that sigwait() below receives them instead of some server thread.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # parent already gone before prctl took effect
        return 0

    import xllamacpp as xlc  # imported late: slow-ish, and only needed here

    port = args.port or free_port()
    p = xlc.CommonParams()
    p.model.path = args.model
    p.model_alias = {args.alias}
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_ctx = args.ctx
    p.n_parallel = args.parallel
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    server = xlc.Server(p)  # noqa: F841 (must stay alive)
    print("xserve: listening:", server.listening_address, file=sys.stderr, flush=True)

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.ready_timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200 and json.load(r).get("status") == "ok":
                    break
        except Exception:
            pass
        if time.monotonic() > deadline:
            print(f"xserve: server not healthy after {args.ready_timeout}s", file=sys.stderr)
            return 1
        # A stop request while starting is honoured too.
        if signal.sigtimedwait(stop, 0.1) is not None:
            os._exit(0)

    out.write(f"BASE_URL={base}/v1\n")
    out.flush()
    sig = signal.sigwait(stop)
    print(f"xserve: stopping on signal {sig}", file=sys.stderr, flush=True)
    sys.stderr.flush()
    try:  # llama.cpp logs through C stdio; os._exit would drop what is buffered
        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass
    # The embedded server has no stop call; leaving the process is the clean way out
    # (the kernel closes the listening socket; no child processes exist).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
