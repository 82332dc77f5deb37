#!/usr/bin/env python3
"""Bounded, self-stopping load and soak test of retnetd on loopback.

    python3 tests/load/soak.py --duration 120        # the version `make check` runs
    python3 tests/load/soak.py --duration 1800       # `make soak`

Starts retnetd (the tiny test model of tests/integration, so the engine is
fast and the server itself is what is exercised), then for --duration
seconds runs, concurrently:

  clients   streaming and plain completions, sessions (create, turn, fork,
            state export, delete), each stream checked: every event is JSON,
            choices arrive in order, the stream ends with [DONE];
  droppers  streams closed after a random number of events, requests cut
            mid-body;
  hostile   slowloris (headers sent a byte at a time, then abandoned),
            oversized headers and bodies, pipelined requests, malformed
            request lines, a stream consumer that never reads;
  idle      --idle connections (10,000, or what the descriptor limit allows)
            opened and held silent during one probe phase;
  probe     one stream at a time whose inter-token gaps are measured in
            phases: alone; with the idle connections; with the HTTP-level
            hostile clients (slowloris, oversized headers and bodies,
            pipelining, garbage: they use no engine time); with 8 streams read
            normally; with 8 streams never read; under the full load.  Stated
            bounds, checked in runs of 10 minutes or more: p99 gap with idle
            or hostile clients <= 2 x the quiet p99 + 5 ms; with never-read
            streams <= 1.5 x that with read streams + 5 ms (a consumer that
            does not read costs what one that reads does: its compute, no
            waiting).

Every loop checks the clock; every socket has a timeout.  At the end it
reports (stdout, and build/load/soak.json): requests served, p50/p99
latency, 5xx count, malformed streams, RSS and open file descriptors of the
server after warm-up and at the end, and the probe's p99 inter-token gap
with and without the hostile clients.  Exit status 1 when: any 5xx, any
malformed stream, the server died, the descriptors at the end differ from
those at the start, or (runs of 10 minutes or more) RSS grew by 5% or more
after warm-up.
"""

import argparse
import json
import os
import random
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import test_server as ts  # noqa: E402

TIMEOUT = 30


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = []
        self.status = {}
        self.malformed = []
        self.streams = 0
        self.errors = []

    def add(self, status, seconds=None):
        with self.lock:
            self.status[status] = self.status.get(status, 0) + 1
            if seconds is not None:
                self.latency.append(seconds)

    def bad(self, what):
        with self.lock:
            if len(self.malformed) < 20:
                self.malformed.append(what)
            else:
                self.malformed.append("...")


def raw_request(port, method, path, body=b"", headers=None, timeout=TIMEOUT):
    h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n"
               % (method, path, len(body), h)).encode() + body)
    return s


def read_all(s, limit=1 << 22):
    buf = b""
    while len(buf) < limit:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return buf


def parse_response(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body


def check_stream(stats, body, n_max):
    events = [e for e in body.split(b"\n\n") if e.strip()]
    if not events or events[-1] != b"data: [DONE]":
        stats.bad("stream without [DONE]: %r" % body[-200:])
        return
    tokens = 0
    for e in events[:-1]:
        if e.startswith(b":"):
            continue
        if not e.startswith(b"data: "):
            stats.bad("not an SSE data event: %r" % e[:100])
            return
        try:
            js = json.loads(e[6:])
        except ValueError:
            stats.bad("event is not JSON: %r" % e[:100])
            return
        if "error" in js:
            stats.bad("error event: %r" % e[:200])
            return
        for ch in js.get("choices", []):
            tokens += 1 if ch.get("text") is not None else 0
    if tokens > n_max + 1:
        stats.bad("more chunks than tokens")


def client(port, stats, stop, rng):
    while not stop.is_set():
        kind = rng.random()
        t0 = time.monotonic()
        try:
            if kind < 0.4:
                n = rng.randint(4, 24)
                body = json.dumps(dict(prompt="stream %d" % rng.randint(0, 10**6), max_tokens=n, stream=True,
                                       temperature=0.8, seed=rng.randint(0, 1 << 30))).encode()
                status, data = parse_response(read_all(raw_request(port, "POST", "/v1/completions", body,
                                                                    {"Content-Type": "application/json"})))
                stats.add(status, time.monotonic() - t0)
                if status == 200:
                    with stats.lock:
                        stats.streams += 1
                    check_stream(stats, data, n)
            elif kind < 0.7:
                status, _, js = ts.http_json(port, "POST", "/v1/completions",
                                             dict(prompt="plain", max_tokens=rng.randint(1, 16)), timeout=TIMEOUT)
                stats.add(status, time.monotonic() - t0)
            else:
                status, _, js = ts.http_json(port, "POST", "/v1/sessions", None, timeout=TIMEOUT)
                stats.add(status)
                if status != 201:
                    continue
                sid = js["id"]
                for _ in range(rng.randint(1, 3)):
                    st, _, _ = ts.http_json(port, "POST", "/v1/completions",
                                            dict(prompt=" turn", max_tokens=4, session=sid), timeout=TIMEOUT)
                    stats.add(st)
                st, _, fk = ts.http_json(port, "POST", "/v1/sessions/%s/fork" % sid, None, timeout=TIMEOUT)
                stats.add(st)
                st, _, _ = ts.http_request(port, "GET", "/v1/sessions/%s/state" % sid, timeout=TIMEOUT)
                stats.add(st)
                for x in (sid, fk.get("id") if isinstance(fk, dict) else None):
                    if x:
                        stats.add(ts.http_request(port, "DELETE", "/v1/sessions/" + x, timeout=TIMEOUT)[0])
        except (OSError, ValueError) as e:
            with stats.lock:
                stats.errors.append(repr(e)[:200])


def dropper(port, stats, stop, rng):
    while not stop.is_set():
        try:
            if rng.random() < 0.7:
                body = json.dumps(dict(prompt="drop", max_tokens=200, stream=True, ignore_eos=True)).encode()
                s = raw_request(port, "POST", "/v1/completions", body, {"Content-Type": "application/json"})
                for _ in range(rng.randint(0, 6)):
                    s.recv(256)
                s.close()
            else:  # a body that never arrives in full
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
                time.sleep(rng.random() * 0.2)
                s.close()
        except OSError:
            pass
        time.sleep(rng.random() * 0.05)


def hostile(port, stats, stop, rng, held):
    while not stop.is_set():
        k = rng.randrange(5)
        try:
            if k == 0 and len(held) < 40:  # slowloris: a few header bytes, then silence
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                s.sendall(b"GET /health HTTP/1.1\r\nHo")
                held.append(s)
            elif k == 1:  # oversized headers
                s = raw_request(port, "GET", "/health", headers={"X-Big": "a" * 200000})
                status, _ = parse_response(read_all(s))
                if status >= 500 and status != 503:
                    stats.add(status)
            elif k == 2:  # oversized body
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"Content-Length: 3000000\r\n\r\n")
                try:
                    for _ in range(40):
                        s.sendall(b"x" * 65536)
                except OSError:
                    pass
                status, _ = parse_response(read_all(s))
                stats.add(status if status else 413)
            elif k == 3:  # pipelined requests on one connection
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\n"
                          b"Connection: close\r\n\r\n")
                data = read_all(s)
                if data.count(b"HTTP/1.1 200") != 2:
                    stats.bad("pipelining: %r" % data[:200])
            else:  # garbage request line
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                s.sendall(b"\x16\x03\x01\x02\x00 garbage \r\n\r\n")
                read_all(s)
        except OSError:
            pass
        time.sleep(rng.random() * 0.05)


def never_reader(port, stop, held):
    """Streams whose consumer never reads (8 at a time; the oldest is
    abandoned for a new one as they finish generating): the server must not
    block on them."""
    while not stop.is_set():
        body = json.dumps(dict(prompt="unread", max_tokens=300, stream=True, ignore_eos=True)).encode()
        try:
            s = raw_request(port, "POST", "/v1/completions", body, {"Content-Type": "application/json"})
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            held.append(s)
        except OSError:
            pass
        while len(held) > 8:
            held.pop(0).close()
        time.sleep(0.04)


def reader(port, stop):
    """Streams like never_reader's, read to the end, back to back."""
    while not stop.is_set():
        body = json.dumps(dict(prompt="unread", max_tokens=300, stream=True, ignore_eos=True)).encode()
        try:
            read_all(raw_request(port, "POST", "/v1/completions", body, {"Content-Type": "application/json"}))
        except OSError:
            pass


def probe_gaps(port, seconds, stop):
    """Inter-token gaps (s) of back-to-back probe streams during `seconds`."""
    gaps, end = [], time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():
        body = json.dumps(dict(prompt="probe", max_tokens=64, stream=True, ignore_eos=True)).encode()
        try:
            s = raw_request(port, "POST", "/v1/completions", body, {"Content-Type": "application/json"})
            last, buf = None, b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                now = time.monotonic()
                n = c.count(b'"text"')
                if n and last is not None:
                    gaps.extend([(now - last) / n] * n)
                if n:
                    last = now
                buf += c
                if b"[DONE]" in buf:
                    break
            s.close()
        except OSError:
            pass
    return gaps


def proc_stats(pid):
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return rss * 1024, len(os.listdir("/proc/%d/fd" % pid))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


CRASHED = []  # load threads that died of an exception: a broken load is no load


def record_crash(args, default=threading.excepthook):
    CRASHED.append("%s: %r" % (args.thread.name if args.thread else "?", args.exc_value))
    default(args)


def main():
    threading.excepthook = record_crash
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=120)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--idle", type=int, default=10000, help="idle connections held in one phase")
    a = ap.parse_args()
    ts.setUpModule()
    # room for the idle-connection phase, in this process and the server it starts
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n_idle = max(0, min(a.idle, (hard - 200) // 2))
    srv = ts.Server("--slots", "16", "--max-waiting", "64", "--max-connections", str(n_idle + 256),
                    "--timeout", "5", "--max-sessions", "64").start()
    port, pid = srv.port, srv.proc.pid
    stats, stop, rng = Stats(), threading.Event(), random.Random(a.seed)
    result = {}
    try:
        phase = min(10.0, a.duration / 8)
        base_gaps = probe_gaps(port, phase, stop)
        # idle connections up to the limit (connected, sending nothing)
        idle = []
        for _ in range(n_idle):
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(b"G")
                idle.append(c)
            except OSError:
                break
        idle_gaps = probe_gaps(port, min(phase, 4.0), stop)
        idle_open = len(idle)
        for c in idle:
            c.close()
        # HTTP-level hostile clients alone (they use no engine time)
        held_slow, held_unread = [], []
        hstop = threading.Event()
        h = threading.Thread(target=hostile, args=(port, stats, hstop, random.Random(rng.random()), held_slow))
        h.daemon = True
        h.start()
        hostile_gaps = probe_gaps(port, phase, stop)
        hstop.set()
        h.join(TIMEOUT + 5)
        # 8 streams read normally, then 8 whose consumer never reads: the probe
        # must see the same engine load either way (the server does not wait
        # for slow readers)
        rstop = threading.Event()
        readers = [threading.Thread(target=reader, args=(port, rstop)) for _ in range(8)]
        for t in readers:
            t.daemon = True
            t.start()
        reader_gaps = probe_gaps(port, phase, stop)
        rstop.set()
        for t in readers:
            t.join(TIMEOUT + 5)
        nstop = threading.Event()
        nr = threading.Thread(target=never_reader, args=(port, nstop, held_unread))
        nr.daemon = True
        nr.start()
        time.sleep(1.0)
        unread_gaps = probe_gaps(port, phase, stop)
        nstop.set()
        nr.join(TIMEOUT + 5)
        for s_ in held_unread:
            s_.close()
        held_unread.clear()
        # then everyone, hostile ones included
        threads = [threading.Thread(target=hostile, args=(port, stats, stop, random.Random(rng.random()),
                                                          held_slow)),
                   threading.Thread(target=never_reader, args=(port, stop, held_unread))]
        threads += [threading.Thread(target=dropper, args=(port, stats, stop, random.Random(rng.random())))
                    for _ in range(2)]
        for t in threads:
            t.daemon = True
            t.start()
        # then everyone
        warm = min(30.0, a.duration / 4)
        more = [threading.Thread(target=client, args=(port, stats, stop, random.Random(rng.random())))
                for _ in range(a.clients)]
        t0 = time.monotonic()
        for t in more:
            t.daemon = True
            t.start()
        threads += more
        time.sleep(warm)
        rss0, fds0 = proc_stats(pid)
        load_gaps = probe_gaps(port, max(1.0, a.duration - (time.monotonic() - t0) - 1.0), stop)
        while time.monotonic() - t0 < a.duration:
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT + 5)
        for s in held_slow + held_unread:
            s.close()
        time.sleep(6)  # idle connections time out (--timeout 5), streams of gone clients end
        alive = srv.proc.poll() is None
        rss1, fds1 = proc_stats(pid) if alive else (0, 0)
        # descriptors with no client at all, vs. the same at the start of the run
        result = dict(
            duration_s=a.duration, requests=sum(stats.status.values()), by_status=stats.status,
            streams_checked=stats.streams, malformed=stats.malformed, client_errors=len(stats.errors),
            latency_p50_ms=1e3 * pct(stats.latency, 0.5), latency_p99_ms=1e3 * pct(stats.latency, 0.99),
            five_xx=sum(v for k, v in stats.status.items() if 500 <= k < 600 and k != 503),
            rss_after_warmup=rss0, rss_end=rss1, fds_under_load=fds0, fds_end=fds1,
            probe_gap_p99_ms_quiet=1e3 * pct(base_gaps, 0.99),
            probe_gap_p99_ms_hostile_only=1e3 * pct(hostile_gaps, 0.99),
            idle_connections=idle_open, probe_gap_p99_ms_idle_connections=1e3 * pct(idle_gaps, 0.99),
            probe_gap_p99_ms_8_readers=1e3 * pct(reader_gaps, 0.99),
            probe_gap_p99_ms_8_never_readers=1e3 * pct(unread_gaps, 0.99),
            probe_gap_p99_ms_full_load=1e3 * pct(load_gaps, 0.99),
            server_alive=alive)
    finally:
        stop.set()
        if srv.proc.poll() is None:
            srv.stop()
        ts.tearDownModule()
    # the server with no client at all, at the end: only its listening socket, the
    # loop's descriptors and the log: compared with a fresh server's count
    fresh = fresh_fd_count()
    result["fds_fresh_server"] = fresh
    os.makedirs(os.path.join(ROOT, "build", "load"), exist_ok=True)
    with open(os.path.join(ROOT, "build", "load", "soak.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    fail = []
    result["crashed_threads"] = CRASHED
    if CRASHED:
        fail.append("load threads died: %s" % CRASHED[:3])
    if result["five_xx"]:
        fail.append("5xx responses")
    if result["malformed"]:
        fail.append("malformed responses: %s" % result["malformed"][:3])
    if not result["server_alive"]:
        fail.append("the server died")
    if result["fds_end"] != fresh:
        fail.append("descriptors at the end %d, a fresh server has %d" % (result["fds_end"], fresh))
    bound = 2 * result["probe_gap_p99_ms_quiet"] + 5.0
    for what in ("hostile_only", "idle_connections"):
        if a.duration >= 600 and result["probe_gap_p99_ms_" + what] > bound:
            fail.append("%s delay tokens: p99 gap %.1f ms > %.1f ms"
                        % (what, result["probe_gap_p99_ms_" + what], bound))
    unread_bound = 1.5 * result["probe_gap_p99_ms_8_readers"] + 5.0
    if a.duration >= 600 and result["probe_gap_p99_ms_8_never_readers"] > unread_bound:
        fail.append("never-reading consumers cost more than readers: %.1f ms > %.1f ms"
                    % (result["probe_gap_p99_ms_8_never_readers"], unread_bound))
    if a.duration >= 600 and result["rss_end"] > 1.05 * result["rss_after_warmup"]:
        fail.append("RSS grew by %.1f%% after warm-up" % (100.0 * result["rss_end"] / result["rss_after_warmup"] - 100))
    for f_ in fail:
        print("soak: FAIL: " + f_)
    print("soak: %s" % ("FAILED" if fail else "PASSED"))
    return 1 if fail else 0


def fresh_fd_count():
    ts.setUpModule()
    srv = ts.Server("--slots", "16", "--max-waiting", "64", "--max-connections", "256", "--timeout", "5",
                    "--max-sessions", "64").start()
    try:
        time.sleep(0.5)
        return proc_stats(srv.proc.pid)[1]
    finally:
        srv.stop()
        ts.tearDownModule()


if __name__ == "__main__":
    sys.exit(main())
