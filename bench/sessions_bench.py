#!/usr/bin/env python3
"""Sessions at scale, part of `make bench` (a benchmark: it asserts nothing).

On the default model (models/), retnetd with --threads T:

1. Second turn with a session vs resending the conversation: for a
   conversation of 1k, 4k and 16k tokens (tinyshakespeare), the time to first
   token of a new 32-token turn sent (a) on a session that already holds the
   conversation, (b) as one request carrying the whole conversation plus the
   turn (prefix cache off, so it is prefilled in full).  Median of 3.
2. Prefix cache: time to first token of a request whose first 2k tokens were
   prefilled by an earlier request (another ending), vs a fresh 2k prefix.
3. Host tier: bytes a session takes in host memory (from GET /v1/sessions on a
   server with 2 slots and 20 sessions) and so sessions per GiB; the time to
   first token of a 1-token turn on a session brought back from host memory
   or from disk, minus the same on a hot session (the restore latency), and
   of a request that first has to move an idle session out (offload).

Results: a table on stdout and build/bench/sessions.json.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import test_server as ts  # noqa: E402

TURN = " And what say you to this, my lord? Speak plainly, for the hour grows late and"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ttft(port, body):
    """Seconds from sending a streaming request to its first chunk."""
    body = dict(body, stream=True, max_tokens=1, temperature=0, ignore_eos=True)
    data = json.dumps(body).encode()
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(data)) + data
    s = socket.create_connection(("127.0.0.1", port), timeout=600)
    try:
        t0 = time.perf_counter()
        s.sendall(req)
        buf = b""
        while b"data: {" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed: %r" % buf[:300])
            buf += chunk
        t = time.perf_counter() - t0
        if not buf.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(buf[:300])
        while b"data: [DONE]" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return t
    finally:
        s.close()


def post(port, path, body):
    status, _, js = ts.http_json(port, "POST", path, body, timeout=600)
    if status not in (200, 201):
        raise RuntimeError("%s -> %d %s" % (path, status, js))
    return js


def conversation(port, text, n_tokens):
    """The first n_tokens tokens of text, as token ids."""
    ids = post(port, "/tokenize", {"prompt": text[:n_tokens * 8]})["tokens"]
    if len(ids) < n_tokens:
        raise RuntimeError("corpus too short for %d tokens" % n_tokens)
    return ids[:n_tokens]


def start(model, threads, *extra):
    s = ts.Server(*extra)
    s.args[s.args.index("--model") + 1] = model
    s.args[s.args.index("--threads") + 1] = str(threads)
    return s.start()


def turns_vs_resend(model, threads, text, lengths, reps):
    srv = start(model, threads, "--prefix-cache-memory", "0", "--max-prompt-tokens", "20000",
                "--slots", "8")
    out = []
    try:
        turn_ids = post(srv.port, "/tokenize", {"prompt": TURN})["tokens"][:32]
        for n in lengths:
            conv = conversation(srv.port, text, n)
            with_s, without = [], []
            for _ in range(reps):
                sid = post(srv.port, "/v1/sessions", None)["id"]
                post(srv.port, "/v1/completions", dict(prompt=conv, max_tokens=1, session=sid))
                with_s.append(ttft(srv.port, dict(prompt=turn_ids, session=sid)))
                ts.http_request(srv.port, "DELETE", "/v1/sessions/" + sid)
                without.append(ttft(srv.port, dict(prompt=conv + turn_ids)))
            row = dict(conversation_tokens=n, session_ttft_ms=1e3 * statistics.median(with_s),
                       resend_ttft_ms=1e3 * statistics.median(without))
            row["speedup"] = row["resend_ttft_ms"] / row["session_ttft_ms"]
            log("conversation %5d tokens: session %.1f ms, resend %.1f ms (%.0fx)"
                % (n, row["session_ttft_ms"], row["resend_ttft_ms"], row["speedup"]))
            out.append(row)
    finally:
        srv.stop()
    return out


def prefix_cache(model, threads, text, reps):
    srv = start(model, threads, "--max-prompt-tokens", "20000")
    try:
        base = conversation(srv.port, text, 2048 * (reps + 1) + 64)
        tail = post(srv.port, "/tokenize", {"prompt": TURN})["tokens"][:32]
        cold, warm = [], []
        for r in range(reps):
            prefix = base[r * 2048:(r + 1) * 2048]
            cold.append(ttft(srv.port, dict(prompt=prefix + tail)))
            warm.append(ttft(srv.port, dict(prompt=prefix + tail[::-1])))
        row = dict(prefix_tokens=2048, uncached_ttft_ms=1e3 * statistics.median(cold),
                   cached_ttft_ms=1e3 * statistics.median(warm))
        row["speedup"] = row["uncached_ttft_ms"] / row["cached_ttft_ms"]
        log("2k prefix: uncached %.1f ms, cached %.1f ms (%.1fx)"
            % (row["uncached_ttft_ms"], row["cached_ttft_ms"], row["speedup"]))
        return row
    finally:
        srv.stop()


def tiers(model, threads, reps):
    d = tempfile.mkdtemp(prefix="bench-tiers-")
    res = {}
    for name, extra in (("host", ()), ("disk", ("--host-state-memory", "0", "--state-dir", d))):
        srv = start(model, threads, "--slots", "2", "--prefix-cache-memory", "0", *extra)
        try:
            ids = [post(srv.port, "/v1/sessions", None)["id"] for _ in range(20)]
            for sid in ids:
                post(srv.port, "/v1/completions", dict(prompt="To be", max_tokens=1, session=sid))
            listing = ts.http_json(srv.port, "GET", "/v1/sessions")[2]
            if name == "host":
                per = listing["tiers"]["host_bytes"] / max(1, listing["tiers"]["host"])
                res["host_bytes_per_session"] = per
                res["sessions_per_GiB_host"] = 2 ** 30 / per
            hot = [s["id"] for s in listing["data"] if s["tier"] == "hot"]
            cold = [s["id"] for s in listing["data"] if s["tier"] != "hot"]
            hot_t, cold_t = [], []
            for r in range(reps):
                hot_t.append(ttft(srv.port, dict(prompt=[1], session=hot[-1])))
                cold_t.append(ttft(srv.port, dict(prompt=[1], session=cold[r])))
                hot = [s["id"] for s in ts.http_json(srv.port, "GET", "/v1/sessions")[2]["data"]
                       if s["tier"] == "hot"]
            res["%s_restore_ms" % name] = 1e3 * (statistics.median(cold_t) - statistics.median(hot_t))
            res["hot_turn_ms"] = 1e3 * statistics.median(hot_t)
            # a transient request that needs both slots: two idle sessions move out
            # first; then the same request with the slots already free
            t_off, t_base = [], []
            for r in range(reps):
                for sid in cold[2 * r + reps:2 * r + reps + 2]:   # two sessions back in the slots
                    post(srv.port, "/v1/completions", dict(prompt=[1], max_tokens=1, session=sid))
                t_off.append(ttft(srv.port, dict(prompt=[1], n=2)))
                t_base.append(ttft(srv.port, dict(prompt=[1], n=2)))
            res["%s_offload_ms_per_2" % name] = 1e3 * (statistics.median(t_off) - statistics.median(t_base))
            log("%s tier: restore %.2f ms; offload of 2 sessions %.2f ms"
                % (name, res["%s_restore_ms" % name], res["%s_offload_ms_per_2" % name]))
        finally:
            srv.stop()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lengths", default="1024,4096,16384")
    a = ap.parse_args()
    ts.TMP = tempfile.mkdtemp(prefix="retnetd-bench-")
    with open(os.path.join(ROOT, "data", "tinyshakespeare.txt")) as f:
        text = f.read()
    out = dict(model=a.model, threads=a.threads)
    try:
        out["turns"] = turns_vs_resend(a.model, a.threads, text, [int(x) for x in a.lengths.split(",")],
                                       a.reps)
        out["prefix_cache"] = prefix_cache(a.model, a.threads, text, a.reps)
        out["tiers"] = tiers(a.model, a.threads, a.reps)
    finally:
        ts._kill_all()
    os.makedirs(os.path.join(ROOT, "build", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "build", "bench", "sessions.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("%-28s %12s %12s %8s" % ("conversation + 32-token turn", "session TTFT", "resend TTFT", "ratio"))
    for r in out["turns"]:
        print("%-28d %10.1f ms %10.1f ms %7.0fx" % (r["conversation_tokens"], r["session_ttft_ms"],
                                                    r["resend_ttft_ms"], r["speedup"]))
    p = out["prefix_cache"]
    print("2k-token prefix: cached %.1f ms vs uncached %.1f ms TTFT (%.1fx)"
          % (p["cached_ttft_ms"], p["uncached_ttft_ms"], p["speedup"]))
    t = out["tiers"]
    print("host tier: %.0f bytes per session = %.0f sessions per GiB; restore from host %.2f ms, "
          "from disk %.2f ms; offload of 2 sessions %.2f ms (host)"
          % (t["host_bytes_per_session"], t["sessions_per_GiB_host"], t["host_restore_ms"],
             t["disk_restore_ms"], t["host_offload_ms_per_2"]))


if __name__ == "__main__":
    main()
