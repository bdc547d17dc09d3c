#!/usr/bin/env python3
"""A server that answers every POST with one large chat completion, for
measuring batchling's memory on a large answer (BENCHMARKS.md, "Bounded
answers").

Usage: SIZE_MB=200 MODE=length|chunked python3 bench/big_answer.py
Prints its base URL (http://127.0.0.1:PORT/v1) on stdout, then serves until
killed. MODE=length sends a Content-Length; MODE=chunked sends 1 MiB chunks.
"""

import os
import socket
import threading

SIZE = int(float(os.environ.get("SIZE_MB", "200")) * 1024 * 1024)
MODE = os.environ.get("MODE", "length")
HEAD = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"'
TAIL = (b'"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')
BODY = HEAD + b"a" * (SIZE - len(HEAD) - len(TAIL)) + TAIL


def handle(c):
    try:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, rest = buf.split(b"\r\n\r\n", 1)
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            while len(rest) < n:
                d = c.recv(65536)
                if not d:
                    return
                rest += d
            buf = rest[n:]
            if MODE == "chunked":
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          b"transfer-encoding: chunked\r\n\r\n")
                view = memoryview(BODY)
                for i in range(0, len(BODY), 1 << 20):
                    piece = view[i:i + (1 << 20)]
                    c.sendall(b"%x\r\n" % len(piece))
                    c.sendall(piece)
                    c.sendall(b"\r\n")
                c.sendall(b"0\r\n\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n" % len(BODY))
                c.sendall(BODY)
    except OSError:
        pass
    finally:
        c.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    print(f"http://127.0.0.1:{s.getsockname()[1]}/v1", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
