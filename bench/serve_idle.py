"""What idle connections cost `batchling serve`: RSS and open files before, with 2,000
idle connections (half silent, half half a request head), and after its head timeout.

    python3 bench/serve_idle.py target/debug/batchling
"""
import os, re, socket, subprocess, sys, tempfile, time

binary = sys.argv[1]
p = subprocess.Popen([binary, "serve", "--mock", "--no-auth", "--listen", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp()], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
url = p.stdout.readline().strip()
host, port = re.match(r"http://([\d.]+):(\d+)/v1", url).groups()
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def fds():
    return len(os.listdir(f"/proc/{p.pid}/fd"))
time.sleep(0.5)
print("idle server: rss_kb", rss(), "fds", fds())
socks = []
for i in range(2000):
    s = socket.create_connection((host, int(port)))
    if i % 2: s.send(b"GET /v1/files HTTP/1.1\r\nHost: x\r\n")
    socks.append(s)
time.sleep(1)
print("2000 idle connections: rss_kb", rss(), "fds", fds())
t0 = time.time()
s = socket.create_connection((host, int(port))); s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); print("health:", s.recv(100).split(b"\r\n")[0], f"{(time.time()-t0)*1000:.1f} ms")
time.sleep(11)
print("after the 10 s head timeout: rss_kb", rss(), "fds", fds())
closed = 0
for s in socks:
    s.settimeout(1)
    try:
        if s.recv(10) == b"": closed += 1
    except Exception: pass
print("closed by the server:", closed, "of", len(socks))
p.terminate(); p.wait()
