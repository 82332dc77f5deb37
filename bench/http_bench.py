#!/usr/bin/env python3
"""`make bench-http`: what HTTP and server-sent events cost on top of the
engine.  A benchmark, not a test: it asserts nothing about speed.

For each engine thread count T (--threads; by default one core short of
all, so that the HTTP thread and the client have a core the engine does not
use, as beside a GPU engine, and then every core, where each of their wakes
preempts an engine thread), one server each, and for each concurrency B in
1, 8, 32, one after the other on that server:

1. the engine alone: `retnet bench MODEL --threads T --batch B --decode 256
   --json`, the median of 5 runs (decode tokens/s of B sequences in one
   batch; the server idles);
2. retnetd on the same model with --threads T, B concurrent streaming
   requests (a fixed prompt, max_tokens 64, ignore_eos, temperature 0,
   stream_options.include_usage); every client sends requests one after the
   other over fresh connections, --level-tokens (16384) tokens in all, its
   first one shorter by a client-dependent amount so that the clients'
   requests end, and the next ones arrive, spread over the iterations.
   Reported: time to first token (request sent -> first chunk with a
   choice) p50/p99, inter-chunk latency p50/p99 (every SSE chunk is one wake
   of the stream; usually one token), aggregate tokens/s over the level's
   wall time (ramp up and drain included), and the full-load rate: the
   tokens that reached the clients while all B streams were open (from the
   moment every client's first stream has its first chunk to the moment
   the first client has had all its answers), over that time.  Inside that
   window every admission, prefill, HTTP request and SSE chunk of the later
   requests is paid for, as in a server under a steady load of B streams;
   the full-load rate over the engine alone is the share of engine
   throughput that survives sampling, scheduling, HTTP and SSE.  Also
   reported: B x the median per-stream rate (tokens after the first chunk
   over the time they took), the figure earlier runs used, which charges a
   stream with its neighbours' admissions but not its own.  Steps 1 and 2
   run --repeats times (3) in turn, and the pair with the median full-load
   ratio is reported, next to every pair's ratios.

Then:

3. GET /health with wrk (-t2 -c64 -d10s): requests/s.

The model is models/ (the default model) when models/config.json exists,
otherwise the tiny random model the integration tests use.  The client is
bench/sse_load.c (built by `make bench-http`): one thread, epoll, raw
sockets; it only timestamps received bytes while measuring, and this script
parses them afterwards.  `--client python` runs the same protocol from this
process instead (selectors), at about 50 us of CPU per token, which on a
small machine is taken from the server.  The client, wrk and the server
share the cores: read the numbers with that in mind.  Every wait is bounded; the server is stopped at the end.

Results: a table on stdout and build/bench/http.json.
"""

import argparse
import bisect
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import test_server  # noqa: E402  (the tiny test model)

PROMPT = "ROMEO:"
MAX_TOKENS = 64
ENGINE_STEPS = 256    # decode steps per engine-alone run: about as long as a full-load window
LEVEL_TIMEOUT = 300   # seconds for one concurrency level, at most
IO_TIMEOUT = 60       # seconds without progress on a connection


def log(msg):
    print(msg, flush=True)


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs, or None."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


# ---------------------------------------------------------------- the model

def test_model(retnet, tmp):
    """The integration tests' model: tiny random weights, 2001-id vocabulary."""
    d = os.path.join(tmp, "model")
    subprocess.run([retnet, "random", "--preset", "tiny", "--dtype", "f32", "--seed", "7", d],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    test_server._shrink_vocab(d, test_server.VOCAB, test_server.EOS)
    shutil.copy(test_server.TOKENIZER, os.path.join(d, "tokenizer.json"))
    return d


def engine_bench(retnet, model, threads, batch, prompt_tokens, runs=5):
    """The engine alone, the median of `runs` runs of `retnet bench`:
    (decode tokens/s of `batch` sequences over ENGINE_STEPS steps, serving
    tokens/s: the same requests as the level's, prompts and admissions
    included, over ENGINE_STEPS iterations).  A best-of-N here would compare
    the engine's luckiest window on a noisy machine with the server's
    typical one.  With --batch 1 both decode_b1_tok_s (measured first, right
    after the prefill) and decode_bB_tok_s measure batch 1; the better one
    counts."""
    decode, serve = [], []
    for _ in range(runs):
        out = subprocess.run([retnet, "bench", model, "--threads", str(threads), "--batch", str(batch),
                              "--decode", str(ENGINE_STEPS), "--serve-steps", str(ENGINE_STEPS),
                              "--serve-prompt", str(prompt_tokens), "--serve-tokens", str(MAX_TOKENS),
                              "--json"], check=True, capture_output=True, text=True, timeout=600).stdout
        js = json.loads(out.strip().splitlines()[-1])
        decode.append(max(js["decode_b1_tok_s"], js["decode_bB_tok_s"]) if batch == 1
                      else js["decode_bB_tok_s"])
        serve.append(js["serve_tok_s"])
    return statistics.median(decode), statistics.median(serve)


def prompt_token_count(port):
    """How many tokens the server makes of PROMPT (POST /tokenize)."""
    status, _, js = test_server.http_json(port, "POST", "/tokenize", {"prompt": PROMPT})
    if status != 200:
        raise RuntimeError("POST /tokenize: status %d: %r" % (status, js))
    return int(js["count"])


# --------------------------------------------------------------- the server

class Server:
    def __init__(self, retnetd, model, threads, slots, log_path, extra=()):
        self.args = [retnetd, "--model", model, "--host", "127.0.0.1", "--port", "0",
                     "--threads", str(threads), "--slots", str(slots), "--max-waiting", "256",
                     "--device", "cpu"]  # compared with `retnet bench`, the CPU engine
        self.args += list(extra)
        self.log_path = log_path
        self.proc = None
        self.port = None

    def start(self, timeout=120):
        with open(self.log_path, "wb") as f:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                m = re.search(rb'msg="retnetd ready".*listen=http://127\.0\.0\.1:(\d+)', f.read())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        with open(self.log_path, "rb") as f:
            tail = f.read()[-2000:].decode("utf-8", "replace")
        raise SystemExit("bench-http: retnetd did not start:\n%s" % tail)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------ clients

def wire_request(port, body):
    """A streaming completion request with body, over a connection it closes."""
    data = json.dumps(body).encode()
    return (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (port, len(data), data))


class Request:
    """One streaming completion over a fresh connection (Connection: close):
    raw bytes and the time each recv() ended, parsed after the run."""

    def __init__(self, port, body, client=0):
        self.client = client
        self.wire = wire_request(port, body)
        self.port = port
        self.sock = None
        self.t_send = None
        self.raw = bytearray()
        self.marks = []      # (cumulative raw length, time)
        self.t_end = None
        self.last_io = None

    def start(self, sel):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.t_send = time.monotonic()
        self.sock.sendall(self.wire)
        self.sock.setblocking(False)
        self.last_io = self.t_send
        sel.register(self.sock, selectors.EVENT_READ, self)

    def on_readable(self, sel):
        try:
            d = self.sock.recv(262144)
        except BlockingIOError:
            return False
        now = time.monotonic()
        self.last_io = now
        if d:
            self.raw += d
            self.marks.append((len(self.raw), now))
            return False
        self.t_end = now
        sel.unregister(self.sock)
        self.sock.close()
        return True

    def abort(self, sel):
        try:
            sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()

    def parse(self):
        """(status, [(time, chunk dict)]) from the recorded bytes."""
        head_end = self.raw.find(b"\r\n\r\n")
        if head_end < 0:
            raise RuntimeError("no response head: %r" % bytes(self.raw[:200]))
        head = bytes(self.raw[:head_end]).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        chunked = any(h.lower().startswith("transfer-encoding:") and "chunked" in h.lower() for h in head)
        pos = head_end + 4
        body, body_to_raw = bytearray(), []  # body offset -> raw offset, per piece
        if chunked:
            while True:
                eol = self.raw.find(b"\r\n", pos)
                size = int(bytes(self.raw[pos:eol]).split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    break
                body_to_raw.append((len(body), pos))
                body += self.raw[pos:pos + size]
                pos += size + 2
        else:
            body_to_raw.append((0, pos))
            body += self.raw[pos:]
        starts = [b for b, _ in body_to_raw]
        mark_ends = [m for m, _ in self.marks]

        def when(body_off):
            i = bisect.bisect_right(starts, body_off) - 1
            raw_off = body_to_raw[i][1] + (body_off - body_to_raw[i][0])
            j = bisect.bisect_left(mark_ends, raw_off + 1)
            return self.marks[min(j, len(self.marks) - 1)][1]

        events, off = [], 0
        while True:
            k = body.find(b"\n\n", off)
            if k < 0:
                break
            ev = bytes(body[off:k])
            t = when(k + 1)
            off = k + 2
            if ev.startswith(b"data: ") and ev != b"data: [DONE]":
                events.append((t, json.loads(ev[6:])))
        return status, events


def cpu_seconds(pid, tid=None):
    """User + system CPU seconds of a process (or of its thread tid) so far
    (Linux), or None."""
    try:
        with open("/proc/%d/stat" % pid if tid is None else "/proc/%d/task/%d/stat" % (pid, tid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Recorded:
    """A request the C client (bench/sse_load.c) made: what it received and
    when, with Request's parse()."""
    parse = Request.parse

    def __init__(self, client, t_send, t_end, marks, raw):
        self.client, self.t_send, self.t_end, self.marks, self.raw = client, t_send, t_end, marks, raw


def read_records(path):
    """The requests sse_load wrote to path, in completion order."""
    out = []
    with open(path, "rb") as f:
        while True:
            head = f.readline()
            if not head:
                return out
            tag, client, t_send, t_end, n_marks, n_bytes = head.split()
            if tag != b"REQ":
                raise RuntimeError("sse_load record: %r" % head[:80])
            marks = []
            for _ in range(int(n_marks)):
                ln, t = f.readline().split()
                marks.append((int(ln), float(t)))
            raw = f.read(int(n_bytes))
            f.read(1)
            out.append(Recorded(int(client), float(t_send), float(t_end), marks, raw))


def run_clients_c(client, port, body, first_bodies, per_client, tmp):
    """The level's requests through the C client, client i's first one
    first_bodies[i]; returns (done, client CPU s)."""
    concurrency = len(first_bodies)
    req, rec = os.path.join(tmp, "request.http"), os.path.join(tmp, "records.bin")
    first = os.path.join(tmp, "first.")
    with open(req, "wb") as f:
        f.write(wire_request(port, body))
    for i, b in enumerate(first_bodies):
        with open(first + str(i), "wb") as f:
            f.write(wire_request(port, b))
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([client, str(port), str(concurrency), str(per_client), req, rec,
                          str(LEVEL_TIMEOUT), first], capture_output=True, text=True,
                         timeout=LEVEL_TIMEOUT + 30)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError("sse_load failed: %s" % out.stderr.strip())
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return read_records(rec), cpu


def run_clients_py(port, body, first_bodies, per_client):
    """The level's requests from this process, client i's first one
    first_bodies[i]; returns (done, client CPU s)."""
    concurrency = len(first_bodies)
    sel = selectors.DefaultSelector()
    left = [per_client] * concurrency
    done, active = [], {}
    cpu0 = time.process_time()
    t0 = time.monotonic()
    for c in range(concurrency):
        r = Request(port, first_bodies[c], c)
        r.start(sel)
        active[r] = c
        left[c] -= 1
    try:
        while active:
            now = time.monotonic()
            if now - t0 > LEVEL_TIMEOUT:
                raise RuntimeError("level %d did not finish in %d s" % (concurrency, LEVEL_TIMEOUT))
            for r in active:
                if now - r.last_io > IO_TIMEOUT:
                    raise RuntimeError("a request made no progress for %d s" % IO_TIMEOUT)
            for key, _ in sel.select(timeout=1.0):
                r = key.data
                if r.on_readable(sel):
                    c = active.pop(r)
                    done.append(r)
                    if left[c] > 0:
                        left[c] -= 1
                        n = Request(port, body, c)
                        n.start(sel)
                        active[n] = c
    finally:
        for r in active:
            r.abort(sel)
        sel.close()
    return done, time.process_time() - cpu0


def run_level(port, concurrency, per_client, server_pid=None, client=None, tmp=None):
    """Runs `concurrency` clients, each sending `per_client` requests in turn,
    from the C client when given (its path), else from this process."""
    # continuous_usage_stats: every chunk says how many tokens so far, so
    # the tokens that came with the first chunk are known exactly
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    # Client i's first request asks for MAX_TOKENS * (i + 1) / concurrency
    # tokens, its later ones for MAX_TOKENS: the clients' requests then end,
    # and the next ones arrive, spread evenly over the engine's iterations,
    # as independent clients' would (and as `retnet bench --serve-steps`
    # spreads its admissions).  Started together with equal lengths, every
    # client's requests would end in the same iteration for the whole level,
    # and the next iteration would admit all of them at once.
    first_len = [max(1, MAX_TOKENS * (i + 1) // concurrency) for i in range(concurrency)]
    first_bodies = [dict(body, max_tokens=n) for n in first_len]
    # the server's main thread runs the libuv loop: HTTP, SSE, JSON, detokenizing
    srv0 = cpu_seconds(server_pid) if server_pid else None
    loop0 = cpu_seconds(server_pid, server_pid) if server_pid else None
    t0 = time.monotonic()
    if client:
        done, client_cpu = run_clients_c(client, port, body, first_bodies, per_client, tmp)
    else:
        done, client_cpu = run_clients_py(port, body, first_bodies, per_client)
    wall = max(r.t_end for r in done) - t0
    srv1 = cpu_seconds(server_pid) if server_pid else None
    loop1 = cpu_seconds(server_pid, server_pid) if server_pid else None

    ttft, itl, rates, tokens, arrivals = [], [], [], 0, []
    first_chunk, last_chunk = {}, {}  # per client: its first request's first chunk, last request's last
    first_sent = {}
    for r in done:
        first_sent[r.client] = min(first_sent.get(r.client, r.t_send), r.t_send)
    for r in done:
        status, events = r.parse()
        if status != 200:
            raise RuntimeError("status %d: %r" % (status, bytes(r.raw[:300])))
        chunks = [(t, e) for t, e in events if e.get("choices")]
        usage = [e["usage"] for _, e in events if e.get("usage") and not e.get("choices")]
        if not chunks or not usage:
            raise RuntimeError("a stream without chunks or usage")
        n = usage[-1]["completion_tokens"]
        want = first_len[r.client] if r.t_send == first_sent[r.client] else MAX_TOKENS
        if n != want:
            raise RuntimeError("%d tokens instead of %d" % (n, want))
        tokens += n
        times = [t for t, _ in chunks]
        seen = 0
        for t, e in chunks:
            k = e["usage"]["completion_tokens"]
            arrivals.append((t, k - seen))
            seen = k
        first_chunk[r.client] = min(first_chunk.get(r.client, times[0]), times[0])
        last_chunk[r.client] = max(last_chunk.get(r.client, times[-1]), times[-1])
        ttft.append(times[0] - r.t_send)
        itl += [b - a for a, b in zip(times, times[1:])]
        # tokens after the first chunk over the time they took (a chunk may
        # carry several tokens: --stream-interval-us)
        first = chunks[0][1]["usage"]["completion_tokens"]
        if times[-1] > times[0] and n > first and n == MAX_TOKENS:
            rates.append((n - first) / (times[-1] - times[0]))
    # full load: from the moment every client's first stream is decoding to
    # the moment the first client has had all its answers, every client has
    # a request in the server (or between two of its requests); the tokens
    # that reached the clients then, over that time.  Admissions, prefills,
    # HTTP and SSE of the following requests are all inside it; the ramp up
    # and the drain, with fewer than `concurrency` streams, are not.
    w0, w1 = max(first_chunk.values()), min(last_chunk.values())
    in_window = sum(k for t, k in arrivals if w0 < t <= w1)
    return {
        "concurrency": concurrency, "requests": len(done), "tokens": tokens, "wall_s": wall,
        "full_load_s": w1 - w0,
        "full_load_tok_s": in_window / (w1 - w0) if w1 > w0 else None,
        "ttft_p50_ms": 1e3 * pct(ttft, 50), "ttft_p99_ms": 1e3 * pct(ttft, 99),
        "itl_p50_ms": 1e3 * pct(itl, 50), "itl_p99_ms": 1e3 * pct(itl, 99),
        "chunks_per_token": (len(itl) + len(done)) / tokens,
        "aggregate_tok_s": tokens / wall,
        "steady_tok_s": concurrency * statistics.median(rates),
        "client_cpu_cores": client_cpu / wall,
        "client": "C (bench/sse_load.c)" if client else "Python",
        "server_cpu_cores": (srv1 - srv0) / wall if srv0 is not None and srv1 is not None else None,
        "loop_cpu_share": (loop1 - loop0) / (srv1 - srv0) if None not in (srv0, srv1, loop0, loop1)
        and srv1 > srv0 else None,
    }


# ---------------------------------------------------------------------- wrk

def health_wrk(port, seconds):
    wrk = shutil.which("wrk")
    if not wrk:
        return {"error": "wrk not installed (`sh tools/deps.sh wrk` installs it)"}
    cmd = [wrk, "-t2", "-c64", "-d%ds" % seconds, "http://127.0.0.1:%d/health" % port]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    errs = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    sock = re.search(r"Socket errors:(.*)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {"command": " ".join(cmd[:-1] + ["http://127.0.0.1:PORT/health"]),
            "requests_per_s": float(rps.group(1)) if rps else None,
            "latency_avg_ms": float(lat.group(1)) * scale[lat.group(2)] if lat else None,
            "non_2xx": int(errs.group(1)) if errs else 0,
            "socket_errors": sock.group(1).strip() if sock else None}


# --------------------------------------------------------------------- main

def measure(a, model, threads, levels, client, tmp, wrk_seconds):
    """One configuration: a server with --threads threads, each level's
    engine / server pairs, then /health with wrk if wrk_seconds > 0.
    Returns (results, health)."""
    srv = Server(a.retnetd, model, threads, max(levels), os.path.join(tmp, "retnetd.log"),
                 a.server_arg)
    srv.start()
    results, health = [], None
    try:
        run_level(srv.port, 1, 2, client=client, tmp=tmp)  # warm-up
        n_prompt = prompt_token_count(srv.port)
        for c in levels:
            # the engine alone right before the same load over HTTP (the
            # server idles meanwhile), so that both see the same machine;
            # --repeats such pairs, and the pair with the median ratio is
            # reported (one pair moved by ±5% on a 2-core machine)
            pairs = []
            for _ in range(a.repeats):
                engine, serve = engine_bench(a.retnet, model, threads, c, n_prompt)
                per_client = max(3, -(-a.level_tokens // (c * MAX_TOKENS)))
                r = run_level(srv.port, c, per_client, srv.proc.pid, client, tmp)
                r["engine_tok_s"] = engine
                r["engine_serve_tok_s"] = serve
                r["prompt_tokens"] = n_prompt
                r["steady_vs_engine"] = r["steady_tok_s"] / engine
                r["aggregate_vs_engine"] = r["aggregate_tok_s"] / engine
                r["full_load_vs_engine"] = (r["full_load_tok_s"] or 0.0) / engine
                r["full_load_vs_serve"] = (r["full_load_tok_s"] or 0.0) / serve
                pairs.append(r)
                log("threads %d, batch/streams %-3d engine %8.1f tok/s decoding, %8.1f serving; http %d "
                    "requests in %.1f s, %.1f s at full load: %.1f%% of serving, %.1f%% of decoding"
                    % (threads, c, engine, serve, r["requests"], r["wall_s"], r["full_load_s"],
                       100 * r["full_load_vs_serve"], 100 * r["full_load_vs_engine"]))
            pairs.sort(key=lambda p: p["full_load_vs_serve"])
            r = pairs[len(pairs) // 2]
            r["ratios"] = [p["full_load_vs_serve"] for p in pairs]
            r["decode_ratios"] = [p["full_load_vs_engine"] for p in pairs]
            r["steady_ratios"] = [p["steady_vs_engine"] for p in pairs]
            results.append(r)
        if wrk_seconds > 0:
            health = health_wrk(srv.port, wrk_seconds)
    finally:
        rc = srv.stop()
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        kept = os.path.join(os.path.dirname(a.out), "http-retnetd-t%d.log" % threads)
        shutil.copy(srv.log_path, kept)
    if rc != 0:
        log("bench-http: retnetd exited with status %s; its log: %s" % (rc, os.path.relpath(kept, ROOT)))
    return results, health


def report(threads, cores, results, repeats):
    """The table and ratio lines of one configuration."""
    log("")
    if threads < cores:
        log("--threads %d of %d cores: the HTTP thread and the client have a core the engine does "
            "not use (as beside a GPU engine)" % (threads, cores))
    else:
        log("--threads %d of %d cores: the engine takes every core; each wake of the HTTP thread "
            "or the client preempts one of its threads" % (threads, cores))
    head = ("streams", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "aggregate", "full load", "engine",
            "engine", "full load/", "full load/")
    unit = ("", "ms", "ms", "ms", "ms", "tok/s", "tok/s", "serving", "decoding", "serving", "decoding")
    fmt = "%-8s %8s %8s %8s %8s %10s %10s %10s %10s %10s %10s"
    log(fmt % head)
    log(fmt % unit)
    for r in results:
        log("%-8d %8.1f %8.1f %8.2f %8.2f %10.1f %10.1f %10.1f %10.1f %9.1f%% %9.1f%%"
            % (r["concurrency"], r["ttft_p50_ms"], r["ttft_p99_ms"], r["itl_p50_ms"], r["itl_p99_ms"],
               r["aggregate_tok_s"], r["full_load_tok_s"] or 0.0, r["engine_serve_tok_s"], r["engine_tok_s"],
               100 * r["full_load_vs_serve"], 100 * r["full_load_vs_engine"]))
    def each(key, fmt):
        return ", ".join(fmt % r[key] if r.get(key) is not None else "?" for r in results)
    def ratios(key):
        return "; ".join("%d streams %s" % (r["concurrency"], " / ".join("%.1f%%" % (100 * x) for x in r[key]))
                         for r in results)
    log("target: full load / engine serving >= 95%% (HTTP + SSE overhead <= 5%%); the median of %d pairs, "
        "all: %s" % (repeats, ratios("ratios")))
    log("full load / engine decoding (the prompts' own work charged to the server too), the same pairs: %s"
        % ratios("decode_ratios"))
    log("per-stream median rate x streams / engine decoding (earlier runs' figure): %s" % ratios("steady_ratios"))
    log("share of the server's CPU time in its HTTP loop thread (HTTP, SSE, JSON, detokenizing): %s"
        % ", ".join("%.1f%%" % (100 * r["loop_cpu_share"]) if r.get("loop_cpu_share") is not None else "?"
                    for r in results))
    log("CPU cores used by the server: %s; by the client: %s; SSE chunks per token: %s"
        % (each("server_cpu_cores", "%.2f"), each("client_cpu_cores", "%.2f"), each("chunks_per_token", "%.2f")))


def main():
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retnetd", default=os.path.join(ROOT, "build/release/retnetd"))
    ap.add_argument("--retnet", default=os.path.join(ROOT, "build/release/retnet"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models"))
    ap.add_argument("--threads", default=None,
                    help="engine thread counts to measure, comma-separated (default: one core "
                         "short of all, then all: %s)" % ",".join(map(str, default_threads(cores))))
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--level-tokens", type=int, default=16384,
                    help="tokens streamed per level and pair (each client sends at least 3 requests)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="engine / server pairs per level; the median pair is reported")
    ap.add_argument("--out", default=os.path.join(ROOT, "build/bench/http.json"))
    ap.add_argument("--client", default=os.path.join(ROOT, "build/release/bench/sse_load"),
                    help="the C load client; 'python' (or a missing file): this process")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="one more retnetd flag (repeat: --server-arg=--stream-interval-us "
                         "--server-arg=0)")
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    thread_counts = ([int(x) for x in a.threads.split(",")] if a.threads else default_threads(cores))
    client = a.client if a.client != "python" and os.access(a.client, os.X_OK) else None

    tmp = tempfile.mkdtemp(prefix="retnetd-bench-")
    configs, health = [], None
    try:
        if os.path.exists(os.path.join(a.model, "config.json")):
            model, note = a.model, "default model (%s)" % os.path.relpath(a.model, ROOT)
        else:
            model = test_model(a.retnet, tmp)
            note = "tiny random test model (%s/config.json does not exist)" % os.path.relpath(a.model, ROOT)
        load = os.getloadavg()
        log("bench-http: %s, --threads %s, %d cores, load average %.2f %.2f %.2f; client: %s"
            % (note, ",".join(map(str, thread_counts)), cores, *load, client or "Python (this process)"))
        if load[0] > 0.5 * cores:
            log("bench-http: the machine is busy; expect noise")
        for i, threads in enumerate(thread_counts):
            wrk = a.wrk_seconds if i == len(thread_counts) - 1 else 0  # /health once, at the end
            results, h = measure(a, model, threads, levels, client, tmp, wrk)
            configs.append({"threads": threads, "levels": results})
            health = h or health
    finally:
        if not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)

    for cfg in configs:
        report(cfg["threads"], cores, cfg["levels"], a.repeats)
    log("")
    if health and health.get("requests_per_s") is not None:
        log("GET /health (%s): %.0f requests/s, latency avg %.2f ms, non-2xx %d (target >= 10000/s)"
            % (health["command"], health["requests_per_s"], health["latency_avg_ms"] or 0, health["non_2xx"]))
    elif health:
        log("GET /health: %s" % health.get("error", "wrk output not understood"))

    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"model": note, "client": client or "python", "cores": cores, "load_average": load,
                   "prompt": PROMPT, "max_tokens": MAX_TOKENS, "configs": configs, "health": health},
                  f, indent=1)
    log("wrote %s" % os.path.relpath(a.out, ROOT))


def default_threads(cores):
    """One core short of all (the HTTP thread and the client get one), then
    all of them; a single core only the latter."""
    return [cores - 1, cores] if cores > 1 else [1]


if __name__ == "__main__":
    main()
