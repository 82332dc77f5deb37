#!/usr/bin/env python3
"""Integration tests for retnetd: the real binary, over loopback.

Each test class starts its own retnetd on 127.0.0.1 (port 0, the port is read
from the "retnetd ready" log line) on a tiny random model, talks to it with
the standard library only, and stops it with SIGTERM at the end.  A server
that does not exit with status 0, or whose log carries a sanitizer report,
fails the class.

Environment:
  RETNETD  the server binary (default build/release/retnetd)
  RETNET   the CLI that writes the test model (default build/release/retnet)
  RETNETD_TEST_DEVICE  the server's --device (default cpu)

The model is `retnet random --preset tiny --dtype f32` (d 256, 4 layers) cut
down to the 2001 ids of tests/fixtures/tokenizer/bytelevel.json, so every id
the model can produce decodes; eos_token_id is 0 (<|endoftext|>).
"""

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RETNETD = os.environ.get("RETNETD", os.path.join(ROOT, "build/release/retnetd"))
RETNET = os.environ.get("RETNET", os.path.join(ROOT, "build/release/retnet"))
DEVICE = os.environ.get("RETNETD_TEST_DEVICE", "cpu")
# On a GPU a sequence's bits are its own only while its batch goes through
# the weight-streaming GEMV (docs/architecture.md, batch invariance): served
# there, the servers keep it up to 8 sessions and the batching tests use 8.
if DEVICE == "cuda":
    os.environ["RETNET_CUDA_GEMV_MAX"] = "8"
CONCURRENT = 32 if DEVICE != "cuda" else 8
TOKENIZER = os.path.join(ROOT, "tests/fixtures/tokenizer/bytelevel.json")

MODEL_NAME = "tiny-test"
VOCAB = 2001
EOS = 0
HTTP_TIMEOUT = 120       # any single request; generous for sanitizer builds
START_TIMEOUT = 60       # until the "ready" line
STOP_TIMEOUT = 60        # SIGTERM to exit (the server drains first)
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")

TMP = None
MODEL_DIR = None
_servers = []


# ----------------------------------------------------------------- the model

def _shrink_vocab(model_dir, vocab, eos):
    """Keeps the first `vocab` rows of the embedding and the lm_head."""
    path = os.path.join(model_dir, "model.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out, blobs, off = {}, [], 0
    for name in sorted(k for k in header if k != "__metadata__"):
        e = header[name]
        begin, end = e["data_offsets"]
        blob, shape = data[begin:end], list(e["shape"])
        if name in ("model.embeddings.weight", "lm_head.weight"):
            row = len(blob) // shape[0]
            blob, shape[0] = blob[:row * vocab], vocab
        out[name] = {"dtype": e["dtype"], "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    head = json.dumps(out).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    cpath = os.path.join(model_dir, "config.json")
    with open(cpath) as f:
        cfg = json.load(f)
    cfg["vocab_size"] = vocab
    cfg["eos_token_id"] = eos
    with open(cpath, "w") as f:
        json.dump(cfg, f)


def setUpModule():
    global TMP, MODEL_DIR
    for b in (RETNETD, RETNET):
        if not os.access(b, os.X_OK):
            raise unittest.SkipTest("%s is not built (make all)" % b)
    TMP = tempfile.mkdtemp(prefix="retnetd-it-")
    MODEL_DIR = os.path.join(TMP, "model")
    subprocess.run([RETNET, "random", "--preset", "tiny", "--dtype", "f32", "--seed", "7", MODEL_DIR],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    _shrink_vocab(MODEL_DIR, VOCAB, EOS)
    shutil.copy(TOKENIZER, os.path.join(MODEL_DIR, "tokenizer.json"))


def tearDownModule():
    _kill_all()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def _kill_all():
    for s in _servers:
        s.kill()


atexit.register(_kill_all)


# ---------------------------------------------------------------- the server

class Server:
    """One retnetd process; its stdout and stderr go to a log file."""

    def __init__(self, *extra):
        # RETNETD_WRAP (e.g. "valgrind --error-exitcode=99 ...") runs the server under a tool
        self.args = os.environ.get("RETNETD_WRAP", "").split() + [RETNETD, "--model", MODEL_DIR, "--model-name", MODEL_NAME, "--host", "127.0.0.1",
                     "--port", "0", "--threads", "1", "--device", DEVICE] + list(extra)
        self.proc = None
        self.port = None
        self.log_path = None

    def start(self):
        fd, self.log_path = tempfile.mkstemp(prefix="retnetd-", suffix=".log", dir=TMP)
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _servers.append(self)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            m = re.search(r'msg="retnetd ready".*listen=http://127\.0\.0\.1:(\d+)', self.log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise AssertionError("retnetd exited with %d before it was ready:\n%s"
                                     % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("retnetd not ready after %d s:\n%s" % (START_TIMEOUT, self.log()))
            time.sleep(0.02)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Waits for the process; fails (after killing it) when it is late."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("retnetd did not exit within %d s:\n%s" % (timeout, self.log()[-4000:]))

    def check_clean_exit(self, rc):
        log = self.log()
        for mark in SANITIZER_MARKS:
            if mark in log:
                raise AssertionError("sanitizer report in the server log:\n%s" % log[-12000:])
        if rc != 0:
            raise AssertionError("retnetd exited with status %d:\n%s" % (rc, log[-4000:]))

    def stop(self):
        """SIGTERM, wait, and check the exit status and the log."""
        if self.proc.poll() is None:
            self.terminate()
        self.check_clean_exit(self.wait_exit())


# -------------------------------------------------------------- HTTP helpers

def http_request(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
    """Returns (status, headers as a lower-case dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def http_json(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
    status, hdrs, data = http_request(port, method, path, body, headers, timeout)
    try:
        js = json.loads(data.decode("utf-8")) if data else None
    except ValueError:
        raise AssertionError("%s %s -> %d, not JSON: %r" % (method, path, status, data[:500]))
    return status, hdrs, js


class SSEStream:
    """A request whose response is read incrementally over a raw socket (so
    the test controls exactly when it stops reading and closes): the status
    line, the headers, then the de-chunked body as raw SSE events."""

    def __init__(self, port, path, body, headers=None, timeout=HTTP_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        data = json.dumps(body).encode()
        lines = ["POST %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port,
                 "Content-Type: application/json", "Content-Length: %d" % len(data)]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        self.raw = b""        # bytes from the socket not yet parsed
        self.body = b""       # de-chunked body not yet returned as events
        self.status = None
        self.headers = None
        self.chunked = False
        self.remaining = None  # Content-Length left to read when not chunked
        self.ended = False

    def _recv(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("the server closed the connection")
        self.raw += d

    def read_head(self):
        if self.status is not None:
            return self.status
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        if not self.chunked:
            self.remaining = int(self.headers.get("content-length", "0"))
        return self.status

    def _more_body(self):
        """Moves at least one more piece of the body into self.body; returns
        False at the end of the body."""
        if self.ended:
            return False
        if not self.chunked:
            if self.remaining == 0:
                self.ended = True
                return False
            if not self.raw:
                self._recv()
            take = self.raw[:self.remaining]
            self.raw = self.raw[len(take):]
            self.remaining -= len(take)
            self.body += take
            return True
        while b"\r\n" not in self.raw:
            self._recv()
        size_line, rest = self.raw.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(rest) < size + 2:
            self._recv()
            size_line, rest = self.raw.split(b"\r\n", 1)
        if rest[size:size + 2] != b"\r\n":
            raise AssertionError("bad chunk framing: %r" % rest[:size + 8])
        self.raw = rest[size + 2:]
        if size == 0:
            self.ended = True
            return False
        self.body += rest[:size]
        return True

    def next_event(self):
        """The next SSE event's raw bytes (without the blank line), or None
        at the end of the body."""
        self.read_head()
        while b"\n\n" not in self.body:
            if not self._more_body():
                if self.body:
                    raise AssertionError("body ends inside an event: %r" % self.body[:300])
                return None
        ev, self.body = self.body.split(b"\n\n", 1)
        return ev

    def read_all(self):
        evs = []
        while True:
            ev = self.next_event()
            if ev is None:
                return evs
            evs.append(ev)

    def read_body(self):
        self.read_head()
        while self._more_body():
            pass
        return self.body

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def parse_events(tc, events):
    """Checks the SSE framing of every event and returns (chunks, done):
    chunks are the decoded JSON objects in order, done whether the last
    event was [DONE].  Keep-alive comments are skipped."""
    chunks, done = [], False
    for ev in events:
        # each event on its own must be valid UTF-8: no character is split
        text = ev.decode("utf-8", "strict")
        if text.startswith(":"):
            continue
        tc.assertFalse(done, "an event after [DONE]: %r" % text)
        tc.assertTrue(text.startswith("data: "), "event is not 'data: ...': %r" % text)
        tc.assertNotIn("\n", text, "multi-line event: %r" % text)
        payload = text[len("data: "):]
        if payload == "[DONE]":
            done = True
            continue
        chunks.append(json.loads(payload))
    return chunks, done


def assert_error(tc, status, js, want_status, want_type=None, param=None):
    tc.assertEqual(status, want_status, js)
    tc.assertIsInstance(js, dict)
    tc.assertEqual(set(js), {"error"})
    e = js["error"]
    tc.assertEqual(set(e), {"message", "type", "param", "code"}, e)
    tc.assertIsInstance(e["message"], str)
    tc.assertTrue(e["message"])
    tc.assertIsInstance(e["type"], str)
    if want_type:
        tc.assertEqual(e["type"], want_type, e)
    if param is not None:
        tc.assertEqual(e["param"], param, e)
    return e


class ServerTestCase(unittest.TestCase):
    server_args = ()
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_args).start()
        cls.port = cls.server.port

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            cls.server.stop()

    # --- helpers
    def post(self, path, body, headers=None):
        return http_json(self.port, "POST", path, body, headers)

    def complete(self, **body):
        status, hdrs, js = self.post("/v1/completions", body)
        self.assertEqual(status, 200, js)
        return js

    def greedy(self, prompt, max_tokens=16, **kw):
        body = dict(prompt=prompt, max_tokens=max_tokens, temperature=0, ignore_eos=True)
        body.update(kw)
        return self.complete(**body)["choices"][0]["text"]

    def _session(self):
        status, _, js = self.post("/v1/sessions", None)
        self.assertEqual(status, 201, js)
        self.assertRegex(js["id"], r"^sess_[0-9a-f]{32}$")
        self.assertEqual(js["object"], "session")
        self.assertEqual(js["tokens"], 0)
        self.addCleanup(lambda: http_request(self.port, "DELETE", "/v1/sessions/" + js["id"]))
        return js["id"]

    def _get_session(self, sid):
        status, _, js = http_json(self.port, "GET", "/v1/sessions/" + sid)
        self.assertEqual(status, 200, js)
        self.assertEqual(js["id"], sid)
        return js

    def tokenize(self, text):
        status, _, js = self.post("/tokenize", {"prompt": text})
        self.assertEqual(status, 200, js)
        self.assertEqual(js["count"], len(js["tokens"]))
        return js["tokens"]

    def stream(self, body, path="/v1/completions"):
        """A whole streaming request: (SSEStream with head read, chunks, done)."""
        s = SSEStream(self.port, path, dict(body, stream=True))
        try:
            self.assertEqual(s.read_head(), 200, s.read_body() if s.status != 200 else "")
            chunks, done = parse_events(self, s.read_all())
        finally:
            s.close()
        return s, chunks, done


def tokens_per_second(port):
    """The server's decode rate for one plain request of 64 tokens (its
    prefill and the HTTP round trip included): what the timing cases below
    scale by, or skip under, where an engine is far slower than the CPU's
    tiny model (a sanitizer build; the emulated CUDA backend)."""
    t0 = time.monotonic()
    status, _, js = http_json(port, "POST", "/v1/completions",
                              {"prompt": "warm up", "max_tokens": 64, "ignore_eos": True})
    assert status == 200, js
    return 64 / (time.monotonic() - t0)


def need_rate(tc, rate, want, why):
    """Skips tc's case when the engine makes fewer than want tokens/s: its
    timing premise (why) does not hold on such an engine."""
    if rate < want:
        tc.skipTest("needs %d tokens/s (%s); this engine makes %.1f" % (want, why, rate))


def stream_texts(chunks, key="text"):
    """Concatenated text per choice index, and the finish reasons seen per index."""
    texts, finishes = {}, {}
    for c in chunks:
        for ch in c["choices"]:
            i = ch["index"]
            if key == "text":
                piece = ch["text"]
            else:
                piece = ch["delta"].get("content") or ""
            texts[i] = texts.get(i, "") + piece
            if ch.get("finish_reason") is not None:
                finishes.setdefault(i, []).append(ch["finish_reason"])
    return texts, finishes


# ===================================================================== tests

class TestAPI(ServerTestCase):
    """The main instance: 8 slots, a 4096-byte body limit."""
    server_args = ("--slots", "8", "--max-waiting", "32", "--max-body", "4096")

    # ------------------------------------------------------------ small endpoints
    def test_health_ready(self):
        status, _, js = http_json(self.port, "GET", "/health")
        self.assertEqual((status, js), (200, {"status": "ok"}))
        status, _, js = http_json(self.port, "GET", "/ready")
        self.assertEqual((status, js), (200, {"status": "ready"}))

    def test_models(self):
        status, hdrs, js = http_json(self.port, "GET", "/v1/models")
        self.assertEqual(status, 200, js)
        self.assertTrue(hdrs["content-type"].startswith("application/json"))
        self.assertEqual(js["object"], "list")
        self.assertEqual(len(js["data"]), 1)
        m = js["data"][0]
        self.assertEqual(m["id"], MODEL_NAME)
        self.assertEqual(m["object"], "model")
        self.assertIsInstance(m["created"], int)
        self.assertEqual(m["meta"]["n_vocab"], VOCAB)
        self.assertEqual(m["meta"]["state_slots"], 8)

    def test_tokenize_detokenize(self):
        ids = self.tokenize("To be, or not to be")
        self.assertTrue(ids)
        self.assertTrue(all(isinstance(i, int) and 0 <= i < VOCAB for i in ids))
        status, _, js = self.post("/detokenize", {"tokens": ids})
        self.assertEqual(status, 200, js)
        self.assertEqual(js["text"], "To be, or not to be")
        status, _, js = self.post("/detokenize", {"tokens": [VOCAB + 5]})
        assert_error(self, status, js, 400, "invalid_request_error", "tokens")

    # ------------------------------------------------------------ completions
    def test_completion_shape(self):
        t0 = time.time()
        js = self.complete(prompt="Hello world", max_tokens=5, temperature=0, ignore_eos=True)
        self.assertRegex(js["id"], r"^cmpl-[0-9a-f]+$")
        self.assertEqual(js["object"], "text_completion")
        self.assertIsInstance(js["created"], int)
        self.assertLess(abs(js["created"] - t0), 120)
        self.assertEqual(js["model"], MODEL_NAME)
        self.assertEqual(len(js["choices"]), 1)
        ch = js["choices"][0]
        self.assertEqual(set(ch), {"index", "text", "logprobs", "finish_reason"})
        self.assertEqual(ch["index"], 0)
        self.assertIsInstance(ch["text"], str)
        self.assertIsNone(ch["logprobs"])
        self.assertEqual(ch["finish_reason"], "length")
        u = js["usage"]
        self.assertEqual(set(u), {"prompt_tokens", "completion_tokens", "total_tokens",
                                  "prompt_tokens_details"})
        self.assertEqual(u["prompt_tokens_details"], {"cached_tokens": 0})
        self.assertEqual(u["prompt_tokens"], len(self.tokenize("Hello world")))
        self.assertEqual(u["completion_tokens"], 5)
        self.assertEqual(u["total_tokens"], u["prompt_tokens"] + 5)
        # the model named explicitly is accepted as well
        js2 = self.complete(model=MODEL_NAME, prompt="Hello world", max_tokens=5, temperature=0, ignore_eos=True)
        self.assertEqual(js2["choices"][0]["text"], ch["text"])
        self.assertNotEqual(js2["id"], js["id"])

    def test_max_tokens(self):
        for n in (1, 7, 33):
            js = self.complete(prompt="Once upon a time", max_tokens=n, temperature=0.7, seed=3, ignore_eos=True)
            self.assertEqual(js["choices"][0]["finish_reason"], "length")
            self.assertEqual(js["usage"]["completion_tokens"], n)

    def test_default_max_tokens_is_16(self):
        js = self.complete(prompt="Once", temperature=0, ignore_eos=True)
        self.assertEqual(js["usage"]["completion_tokens"], 16)

    def test_eos(self):
        # a bias that forces <|endoftext|>: the completion stops at once, and the
        # special token is not part of the text
        js = self.complete(prompt="Hello", max_tokens=10, temperature=0, logit_bias={str(EOS): 100})
        ch = js["choices"][0]
        self.assertEqual(ch["finish_reason"], "stop")
        self.assertEqual(ch["text"], "")
        self.assertEqual(js["usage"]["completion_tokens"], 1)
        # ignore_eos goes on to max_tokens
        js = self.complete(prompt="Hello", max_tokens=4, temperature=0, logit_bias={str(EOS): 100},
                           ignore_eos=True)
        self.assertEqual(js["choices"][0]["finish_reason"], "length")
        self.assertEqual(js["usage"]["completion_tokens"], 4)

    def test_greedy_deterministic(self):
        a = self.greedy("The quick brown fox", 24)
        b = self.greedy("The quick brown fox", 24)
        self.assertEqual(a, b)
        self.assertTrue(a)
        # top_k 1 at temperature 1 is greedy too
        c = self.complete(prompt="The quick brown fox", max_tokens=24, temperature=1.0, top_k=1,
                          ignore_eos=True, seed=99)["choices"][0]["text"]
        self.assertEqual(c, a)

    def test_seed(self):
        def sample(seed):
            return self.complete(prompt="Hello", max_tokens=24, temperature=1.0, seed=seed,
                                 ignore_eos=True)["choices"][0]["text"]
        a1, a2, b = sample(1234), sample(1234), sample(4321)
        self.assertEqual(a1, a2)
        self.assertNotEqual(a1, b)

    def test_n_choices(self):
        js = self.complete(prompt="Hello", max_tokens=6, temperature=1.0, seed=5, n=3, ignore_eos=True)
        self.assertEqual([c["index"] for c in js["choices"]], [0, 1, 2])
        self.assertEqual(js["usage"]["completion_tokens"], 18)
        self.assertEqual(js["usage"]["prompt_tokens"], len(self.tokenize("Hello")))
        texts = [c["text"] for c in js["choices"]]
        self.assertGreater(len(set(texts)), 1, texts)
        # greedy: every choice is the greedy text
        js = self.complete(prompt="Hello", max_tokens=6, temperature=0, n=3, ignore_eos=True)
        self.assertEqual([c["text"] for c in js["choices"]], [self.greedy("Hello", 6)] * 3)

    def test_prompt_list(self):
        prompts = ["First prompt", "Second, longer prompt here", "3"]
        want = [self.greedy(p, 8) for p in prompts]
        self.assertEqual(len(set(want)), 3)
        js = self.complete(prompt=prompts, max_tokens=8, temperature=0, n=2, ignore_eos=True)
        self.assertEqual(len(js["choices"]), 6)
        self.assertEqual(sorted(c["index"] for c in js["choices"]), list(range(6)))
        for c in js["choices"]:
            self.assertEqual(c["text"], want[c["index"] // 2], c)
        self.assertEqual(js["usage"]["completion_tokens"], 6 * 8)
        self.assertEqual(js["usage"]["prompt_tokens"], sum(len(self.tokenize(p)) for p in prompts))

    def test_token_prompts(self):
        text = "Token ids and text agree"
        ids = self.tokenize(text)
        a = self.complete(prompt=text, max_tokens=12, temperature=0, ignore_eos=True)
        b = self.complete(prompt=ids, max_tokens=12, temperature=0, ignore_eos=True)
        self.assertEqual(b["choices"][0]["text"], a["choices"][0]["text"])
        self.assertEqual(b["usage"], a["usage"])
        # a list of id lists
        ids2 = self.tokenize("Another one")
        c = self.complete(prompt=[ids, ids2], max_tokens=12, temperature=0, ignore_eos=True)
        self.assertEqual([x["text"] for x in c["choices"]],
                         [a["choices"][0]["text"], self.greedy("Another one", 12)])

    def test_echo(self):
        prompt = "Echo this prompt"
        plain = self.greedy(prompt, 8)
        js = self.complete(prompt=prompt, max_tokens=8, temperature=0, ignore_eos=True, echo=True)
        self.assertEqual(js["choices"][0]["text"], prompt + plain)
        # in a stream, the prompt comes first
        _, chunks, done = self.stream(dict(prompt=prompt, max_tokens=8, temperature=0, ignore_eos=True,
                                           echo=True))
        self.assertTrue(done)
        self.assertEqual(stream_texts(chunks)[0][0], prompt + plain)

    def test_logprobs(self):
        js = self.complete(prompt="Log probabilities", max_tokens=10, temperature=0, logprobs=2, ignore_eos=True)
        ch = js["choices"][0]
        lp = ch["logprobs"]
        self.assertEqual(set(lp), {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
        for k in lp:
            self.assertEqual(len(lp[k]), 10, k)
        self.assertTrue(all(isinstance(t, str) for t in lp["tokens"]))
        self.assertTrue(all(x <= 0 for x in lp["token_logprobs"]), lp["token_logprobs"])
        self.assertEqual(lp["text_offset"][0], 0)
        self.assertEqual(lp["text_offset"], sorted(lp["text_offset"]))
        for tok_lp, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
            self.assertTrue(1 <= len(top) <= 2, top)
            self.assertTrue(all(v <= 0 for v in top.values()))
            # greedy: the chosen token is the most likely one
            self.assertAlmostEqual(max(top.values()), tok_lp, places=4)
        # the same request without logprobs has the same text
        self.assertEqual(ch["text"], self.greedy("Log probabilities", 10))
        # logprobs 0: the chosen tokens' logprobs, no alternatives
        js = self.complete(prompt="Log probabilities", max_tokens=4, temperature=0, logprobs=0, ignore_eos=True)
        lp = js["choices"][0]["logprobs"]
        self.assertEqual(len(lp["token_logprobs"]), 4)
        self.assertTrue(all(t == {} for t in lp["top_logprobs"]), lp["top_logprobs"])

    # ------------------------------------------------------------ stop strings
    def _stop_case(self, prompt, max_tokens=48):
        full = self.greedy(prompt, max_tokens)
        self.assertGreaterEqual(len(full), 6, full)
        stop = full[2:5]
        cut = full.find(stop)
        return full, stop, full[:cut]

    def test_stop(self):
        full, stop, want = self._stop_case("Stop strings are")
        js = self.complete(prompt="Stop strings are", max_tokens=48, temperature=0, ignore_eos=True,
                           stop=[stop], logprobs=0)
        ch = js["choices"][0]
        self.assertEqual(ch["text"], want, (full, stop))
        self.assertNotIn(stop, ch["text"])
        self.assertEqual(ch["finish_reason"], "stop")
        # usage counts the tokens up to the stop string, as the logprobs do
        used = js["usage"]["completion_tokens"]
        self.assertLess(used, 48)
        self.assertEqual(used, len(ch["logprobs"]["tokens"]))
        # the generation itself ends at the stop string, not at max_tokens: a
        # session shows how many tokens went through the model
        sid = self._session()
        prompt_ids = self.tokenize("Stop strings are")
        js = self.complete(prompt=prompt_ids, max_tokens=4000, temperature=0, ignore_eos=True, stop=[stop],
                           session=sid)
        self.assertEqual(js["choices"][0]["text"], want)
        self.assertLess(self._get_session(sid)["tokens"], len(prompt_ids) + 1000)
        # a string as stop, and a stop string that never appears
        self.assertEqual(self.greedy("Stop strings are", 48, stop=stop), want)
        js = self.complete(prompt="Stop strings are", max_tokens=48, temperature=0, ignore_eos=True,
                           stop=["\x01never\x02"])
        self.assertEqual(js["choices"][0]["text"], full)
        self.assertEqual(js["choices"][0]["finish_reason"], "length")

    def test_stop_stream(self):
        full, stop, want = self._stop_case("Streaming stop strings")
        _, chunks, done = self.stream(dict(prompt="Streaming stop strings", max_tokens=48, temperature=0,
                                           ignore_eos=True, stop=[stop],
                                           stream_options={"include_usage": True}))
        self.assertTrue(done)
        texts, finishes = stream_texts(chunks)
        self.assertEqual(texts[0], want, (full, stop))
        self.assertEqual(finishes, {0: ["stop"]})
        # the same count of tokens up to the stop string as without streaming
        plain = self.complete(prompt="Streaming stop strings", max_tokens=48, temperature=0, ignore_eos=True,
                              stop=[stop])
        self.assertEqual(chunks[-1]["usage"], plain["usage"])
        self.assertLess(plain["usage"]["completion_tokens"], 48)
        # n = 2: both choices stop
        _, chunks, done = self.stream(dict(prompt="Streaming stop strings", max_tokens=48, temperature=0,
                                           ignore_eos=True, stop=[stop], n=2))
        texts, finishes = stream_texts(chunks)
        self.assertEqual(texts, {0: want, 1: want})
        self.assertEqual(finishes, {0: ["stop"], 1: ["stop"]})

    # ------------------------------------------------------------ streaming
    def _check_chunk(self, c, cid):
        self.assertEqual(c["id"], cid)
        self.assertEqual(c["object"], "text_completion")
        self.assertEqual(c["model"], MODEL_NAME)
        self.assertIsInstance(c["created"], int)

    def test_stream(self):
        body = dict(prompt="Server-sent events", max_tokens=40, temperature=0, ignore_eos=True)
        want = self.greedy(body["prompt"], 40)
        s, chunks, done = self.stream(body)
        self.assertEqual(s.headers["content-type"], "text/event-stream")
        self.assertEqual(s.headers["cache-control"], "no-cache")
        self.assertEqual(s.headers["x-accel-buffering"], "no")
        self.assertTrue(done, "no data: [DONE]")
        self.assertTrue(chunks)
        cid = chunks[0]["id"]
        self.assertRegex(cid, r"^cmpl-[0-9a-f]+$")
        for c in chunks:
            self._check_chunk(c, cid)
            self.assertEqual(len(c["choices"]), 1)
            ch = c["choices"][0]
            self.assertEqual(set(ch), {"index", "text", "logprobs", "finish_reason"})
            if "usage" in c:
                self.assertIsNone(c["usage"])
        texts, finishes = stream_texts(chunks)
        self.assertEqual(texts, {0: want})
        self.assertEqual(finishes, {0: ["length"]})
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")

    def test_stream_usage(self):
        body = dict(prompt="Usage at the end", max_tokens=20, temperature=0, ignore_eos=True, n=2,
                    stream_options={"include_usage": True})
        _, chunks, done = self.stream(body)
        self.assertTrue(done)
        last = chunks[-1]
        self.assertEqual(last["choices"], [])
        self.assertEqual(last["usage"], {"prompt_tokens": len(self.tokenize("Usage at the end")),
                                         "completion_tokens": 40,
                                         "total_tokens": len(self.tokenize("Usage at the end")) + 40,
                                         "prompt_tokens_details": {"cached_tokens": 0}})
        for c in chunks[:-1]:
            self.assertIn("usage", c)
            self.assertIsNone(c["usage"])
            self.assertEqual(len(c["choices"]), 1)
        texts, finishes = stream_texts(chunks)
        want = self.greedy("Usage at the end", 20)
        self.assertEqual(texts, {0: want, 1: want})
        self.assertEqual(finishes, {0: ["length"], 1: ["length"]})

    def test_stream_continuous_usage(self):
        # every chunk carries the counts so far; they never go down and end
        # at the final usage
        prompt_len = len(self.tokenize("Usage all along"))
        _, chunks, done = self.stream(dict(
            prompt="Usage all along", max_tokens=20, temperature=0, ignore_eos=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True}))
        self.assertTrue(done)
        seen = 0
        for c in chunks:
            u = c["usage"]
            self.assertEqual(u["prompt_tokens"], prompt_len)
            self.assertEqual(u["total_tokens"], prompt_len + u["completion_tokens"])
            self.assertGreaterEqual(u["completion_tokens"], seen)
            seen = u["completion_tokens"]
        self.assertGreaterEqual(chunks[0]["usage"]["completion_tokens"], 1)
        self.assertEqual(seen, 20)
        self.assertEqual(stream_texts(chunks)[0], {0: self.greedy("Usage all along", 20)})
        status, _, js = self.post("/v1/completions", {
            "prompt": "x", "stream": True, "stream_options": {"continuous_usage_stats": "yes"}})
        assert_error(self, status, js, 400, param="continuous_usage_stats")

    def test_stream_utf8_and_logprobs(self):
        # long samples of a random model: multi-byte characters, byte tokens
        # that only form a character together, invalid sequences
        for seed in (1, 2):
            body = dict(prompt="\u00e9\u4e2d\U0001F600", max_tokens=64, temperature=1.0, seed=seed,
                        ignore_eos=True, n=2, logprobs=1)
            _, chunks, done = self.stream(body)  # parse_events decodes each event strictly
            self.assertTrue(done)
            ref = self.complete(**body)
            texts, finishes = stream_texts(chunks)
            self.assertEqual(texts, {c["index"]: c["text"] for c in ref["choices"]})
            self.assertEqual(finishes, {0: ["length"], 1: ["length"]})
            # logprobs entries add up to the tokens generated, per choice
            ntok = {}
            for c in chunks:
                ch = c["choices"][0]
                ntok[ch["index"]] = ntok.get(ch["index"], 0) + len(ch["logprobs"]["tokens"])
            self.assertEqual(ntok, {0: 64, 1: 64})

    # ------------------------------------------------------------ chat
    def test_chat(self):
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
        status, _, js = self.post("/v1/chat/completions",
                                  {"messages": msgs, "max_tokens": 12, "temperature": 0, "ignore_eos": True})
        self.assertEqual(status, 200, js)
        self.assertRegex(js["id"], r"^chatcmpl-[0-9a-f]+$")
        self.assertEqual(js["object"], "chat.completion")
        self.assertEqual(js["model"], MODEL_NAME)
        ch = js["choices"][0]
        self.assertEqual(ch["index"], 0)
        self.assertEqual(ch["message"]["role"], "assistant")
        self.assertIsInstance(ch["message"]["content"], str)
        self.assertEqual(ch["finish_reason"], "length")
        self.assertEqual(js["usage"]["completion_tokens"], 12)
        # max_completion_tokens is the newer name
        status, _, js2 = self.post("/v1/chat/completions",
                                   {"messages": msgs, "max_completion_tokens": 12, "temperature": 0,
                                    "ignore_eos": True})
        self.assertEqual(status, 200, js2)
        self.assertEqual(js2["choices"][0]["message"]["content"], ch["message"]["content"])
        # streaming: chunk objects, the role first, the same content
        s, chunks, done = self.stream({"messages": msgs, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
                                       "n": 2}, path="/v1/chat/completions")
        self.assertTrue(done)
        self.assertEqual(s.headers["content-type"], "text/event-stream")
        first = {}
        for c in chunks:
            self.assertEqual(c["object"], "chat.completion.chunk")
            self.assertRegex(c["id"], r"^chatcmpl-")
            for x in c["choices"]:
                self.assertIn("delta", x)
                first.setdefault(x["index"], x["delta"])
        self.assertEqual(first[0].get("role"), "assistant")
        self.assertEqual(first[1].get("role"), "assistant")
        texts, finishes = stream_texts(chunks, key="delta")
        self.assertEqual(texts, {0: ch["message"]["content"], 1: ch["message"]["content"]})
        self.assertEqual(finishes, {0: ["length"], 1: ["length"]})
        # bad messages
        status, _, js = self.post("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]})
        assert_error(self, status, js, 400, "invalid_request_error", "messages")
        status, _, js = self.post("/v1/chat/completions", {"messages": []})
        assert_error(self, status, js, 400, "invalid_request_error", "messages")

    # ------------------------------------------------------------ errors
    def test_errors(self):
        def err(body, want_status, param=None, path="/v1/completions", want_type=None):
            status, hdrs, js = http_json(self.port, "POST", path, body,
                                         {"Content-Type": "application/json"})
            return assert_error(self, status, js, want_status, want_type, param)

        err("{not json", 400, want_type="invalid_request_error")
        err("[1, 2]", 400, want_type="invalid_request_error")
        e = err({"prompt": "x", "frobnicate": 1}, 400, "frobnicate")
        self.assertIn("frobnicate", e["message"])
        err({"prompt": "x", "max_tokens": 0}, 400, "max_tokens")
        err({"prompt": "x", "max_tokens": 1.5}, 400, "max_tokens")
        err({"prompt": "x", "max_tokens": 10 ** 9}, 400, "max_tokens")
        err({"prompt": "x", "temperature": 3}, 400, "temperature")
        err({"prompt": "x", "temperature": "hot"}, 400, "temperature")
        err({"prompt": "x", "top_p": 0}, 400, "top_p")
        err({"prompt": "x", "n": 100}, 400, "n")
        err({"prompt": "x", "n": 0}, 400, "n")
        err({"prompt": "x", "stream": "yes"}, 400, "stream")
        err({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options")
        err({"prompt": [1, VOCAB]}, 400, "prompt")
        err({"prompt": [-1]}, 400, "prompt")
        err({"prompt": [1.5]}, 400, "prompt")
        err({"prompt": []}, 400, "prompt")
        err({"prompt": 5}, 400, "prompt")
        err({"max_tokens": 4}, 400, "prompt")
        err({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop")
        err({"prompt": "x", "stop": [""]}, 400, "stop")
        err({"prompt": "x", "logit_bias": {str(VOCAB): 1}}, 400, "logit_bias")
        err({"prompt": "x", "logprobs": 21}, 400, "logprobs")
        err({"prompt": "x", "echo": True, "logprobs": 1}, 400, "echo")
        err({"prompt": "x", "model": "no-such-model"}, 404, "model", want_type="not_found_error")
        err({"messages": [{"role": "user", "content": "x"}], "model": "nope"}, 404, "model",
            path="/v1/chat/completions")
        err({"messages": [{"role": "user", "content": "x"}], "echo": True}, 400, "echo",
            path="/v1/chat/completions")

        status, _, js = http_json(self.port, "GET", "/no/such/path")
        assert_error(self, status, js, 404, "not_found_error")
        status, _, js = http_json(self.port, "POST", "/v1/nothing", {"a": 1})
        assert_error(self, status, js, 404)
        for method, path in (("GET", "/v1/completions"), ("DELETE", "/v1/chat/completions"),
                             ("POST", "/v1/models"), ("GET", "/tokenize"), ("PUT", "/v1/sessions")):
            status, _, js = http_json(self.port, method, path)
            assert_error(self, status, js, 405, "invalid_request_error")

        # the server is fine afterwards
        self.assertEqual(self.greedy("still fine", 3), self.greedy("still fine", 3))

    def test_body_too_large(self):
        big = {"prompt": "x" * 5000, "max_tokens": 1}
        status, _, js = http_json(self.port, "POST", "/v1/completions", big)
        assert_error(self, status, js, 413, "invalid_request_error")
        status, _, js = http_json(self.port, "POST", "/v1/chat/completions", "{" + " " * 10000 + "}",
                                  {"Content-Type": "application/json"})
        assert_error(self, status, js, 413)
        # exactly at the limit is accepted
        body = json.dumps({"prompt": "", "max_tokens": 1, "ignore_eos": True})
        body = json.dumps({"prompt": "a" * (4096 - len(body)), "max_tokens": 1, "ignore_eos": True})
        self.assertEqual(len(body), 4096)
        status, _, js = http_json(self.port, "POST", "/v1/completions", body,
                                  {"Content-Type": "application/json"})
        self.assertEqual(status, 200, js)
        self.assertEqual(http_json(self.port, "GET", "/health")[0], 200)

    def test_keep_alive_connection(self):
        # several requests, errors included, on one connection
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            for body, want in (({"prompt": "a", "max_tokens": 2}, 200), ({"prompt": "a", "n": 99}, 400),
                               ({"prompt": "b", "max_tokens": 2}, 200)):
                conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
                r = conn.getresponse()
                json.loads(r.read())
                self.assertEqual(r.status, want)
        finally:
            conn.close()

    # ------------------------------------------------------------ sessions
    def test_session_continues(self):
        a = self.tokenize("The session remembers")
        b = self.tokenize(" what came before it")
        t1 = self.tokenize(" and")[0]
        sid = self._session()
        # request 1: prompt A; the bias makes the one generated token t1
        js = self.complete(session=sid, prompt=a, max_tokens=1, temperature=0, ignore_eos=True,
                           logit_bias={str(t1): 100})
        self.assertEqual(js["usage"]["completion_tokens"], 1)
        self.assertEqual(self._get_session(sid)["tokens"], len(a) + 1)
        # request 2 continues from A + t1
        cont = self.complete(session=sid, prompt=b, max_tokens=6, temperature=0, ignore_eos=True)
        self.assertEqual(cont["usage"]["prompt_tokens"], len(b))
        whole = self.complete(prompt=a + [t1] + b, max_tokens=6, temperature=0, ignore_eos=True)
        self.assertEqual(cont["choices"][0]["text"], whole["choices"][0]["text"])
        self.assertEqual(self._get_session(sid)["tokens"], len(a) + 1 + len(b) + 6)
        # without the session the continuation is different
        alone = self.complete(prompt=b, max_tokens=6, temperature=0, ignore_eos=True)
        self.assertNotEqual(alone["choices"][0]["text"], cont["choices"][0]["text"])
        # the same history on a second session, continued by a stream
        sid2 = self._session()
        self.complete(session=sid2, prompt=a, max_tokens=1, temperature=0, ignore_eos=True,
                      logit_bias={str(t1): 100})
        _, chunks, done = self.stream(dict(session=sid2, prompt=b, max_tokens=6, temperature=0, ignore_eos=True))
        self.assertTrue(done)
        self.assertEqual(stream_texts(chunks)[0][0], whole["choices"][0]["text"])
        self.assertEqual(self._get_session(sid2)["tokens"], len(a) + 1 + len(b) + 6)

    def test_session_fork(self):
        sid = self._session()
        self.complete(session=sid, prompt="A shared beginning", max_tokens=3, temperature=0, ignore_eos=True)
        status, _, fk = self.post("/v1/sessions/%s/fork" % sid, None)
        self.assertEqual(status, 200, fk)
        fid = fk["id"]
        self.addCleanup(lambda: http_request(self.port, "DELETE", "/v1/sessions/" + fid))
        self.assertRegex(fid, r"^sess_[0-9a-f]{32}$")
        self.assertNotEqual(fid, sid)
        self.assertEqual(fk["tokens"], self._get_session(sid)["tokens"])
        on_fork = self.complete(session=fid, prompt=" and then", max_tokens=8, temperature=0, ignore_eos=True)
        on_orig = self.complete(session=sid, prompt=" and then", max_tokens=8, temperature=0, ignore_eos=True)
        self.assertEqual(on_fork["choices"][0]["text"], on_orig["choices"][0]["text"])
        # they are independent afterwards
        x = self.complete(session=fid, prompt=" X", max_tokens=8, temperature=0, ignore_eos=True)
        y = self.complete(session=sid, prompt=" X", max_tokens=8, temperature=0, ignore_eos=True)
        self.assertEqual(x["choices"][0]["text"], y["choices"][0]["text"])
        # a fork of a never-used session is empty, like a new one
        sid2 = self._session()
        status, _, fk2 = self.post("/v1/sessions/%s/fork" % sid2, None)
        self.assertEqual(status, 200, fk2)
        self.addCleanup(lambda: http_request(self.port, "DELETE", "/v1/sessions/" + fk2["id"]))
        self.assertEqual(fk2["tokens"], 0)
        self.assertEqual(self.greedy("fresh", 6, session=fk2["id"]), self.greedy("fresh", 6))

    def test_session_delete_and_unknown(self):
        sid = self._session()
        status, _, js = http_json(self.port, "DELETE", "/v1/sessions/" + sid)
        self.assertEqual(status, 200, js)
        self.assertEqual(js, {"id": sid, "object": "session.deleted", "deleted": True})
        status, _, js = http_json(self.port, "GET", "/v1/sessions/" + sid)
        assert_error(self, status, js, 404, "not_found_error")
        status, _, js = http_json(self.port, "DELETE", "/v1/sessions/" + sid)
        assert_error(self, status, js, 404)
        status, _, js = self.post("/v1/completions", {"prompt": "x", "session": sid})
        assert_error(self, status, js, 404, "not_found_error", "session")
        status, _, js = self.post("/v1/completions", {"prompt": "x", "session": "sess_" + "0" * 32})
        assert_error(self, status, js, 404, "not_found_error", "session")
        status, _, js = self.post("/v1/sessions/%s/fork" % ("sess_" + "1" * 32), None)
        assert_error(self, status, js, 404)
        # n > 1 cannot continue one state
        sid = self._session()
        status, _, js = self.post("/v1/completions", {"prompt": "x", "session": sid, "n": 2})
        assert_error(self, status, js, 400, "invalid_request_error", "session")
        # the session is not left busy by a refused request
        self.assertFalse(self._get_session(sid)["busy"])
        self.greedy("x", 2, session=sid)

    def test_session_busy(self):
        sid = self._session()
        s = SSEStream(self.port, "/v1/completions",
                      dict(session=sid, prompt="busy", max_tokens=4000, ignore_eos=True, stream=True))
        try:
            self.assertEqual(s.read_head(), 200)
            self.assertIsNotNone(s.next_event())
            self.assertTrue(self._get_session(sid)["busy"])
            status, _, js = self.post("/v1/completions", {"prompt": "x", "session": sid, "max_tokens": 1})
            assert_error(self, status, js, 409, "invalid_request_error")
            status, _, js = http_json(self.port, "DELETE", "/v1/sessions/" + sid)
            assert_error(self, status, js, 409)
            status, _, js = self.post("/v1/sessions/%s/fork" % sid, None)
            assert_error(self, status, js, 409)
        finally:
            s.close()
        # the client left: the session is released
        deadline = time.monotonic() + 10
        while self._get_session(sid)["busy"] and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertFalse(self._get_session(sid)["busy"])
        self.assertGreater(self._get_session(sid)["tokens"], 0)
        self.greedy("x", 2, session=sid)
        status, _, js = http_json(self.port, "DELETE", "/v1/sessions/" + sid)
        self.assertEqual(status, 200, js)

    # ------------------------------------------------------------ concurrency
    def test_concurrent_streams(self):
        check_concurrent_streams(self, 8)

    def test_concurrent_mixed(self):
        # streams and plain requests of different lengths, more than the slots
        jobs = [(i, "Mixed %d" % i, 4 + 5 * (i % 4), i % 2 == 0) for i in range(12)]
        want = {i: self.greedy(p, m) for i, p, m, _ in jobs}
        got, errors = {}, []

        def run(i, p, m, streaming):
            try:
                if streaming:
                    _, chunks, done = self.stream(dict(prompt=p, max_tokens=m, temperature=0, ignore_eos=True))
                    got[i] = stream_texts(chunks)[0][0]
                else:
                    got[i] = self.greedy(p, m)
            except Exception as e:
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=run, args=j) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HTTP_TIMEOUT)
        self.assertEqual(errors, [])
        self.assertEqual(got, want)


def check_concurrent_streams(tc, count, logprobs_every=0):
    """count greedy streams at once must each equal the same request alone.
    A batch of plain greedy rows has the engine pick the tokens
    (rn_decode_argmax); with logprobs_every, every such stream asks for
    logprobs, so batches holding one take the logits to the host sampler,
    which must choose the same tokens."""
    prompts = ["Concurrent request number %d says" % i for i in range(count)]
    want = [tc.greedy(p, 24) for p in prompts]
    results, errors = [None] * count, []

    def run(i):
        try:
            body = dict(prompt=prompts[i], max_tokens=24, temperature=0, ignore_eos=True, stream=True)
            if logprobs_every and i % logprobs_every == logprobs_every - 1:
                body["logprobs"] = 1
            s = SSEStream(tc.port, "/v1/completions", body)
            try:
                if s.read_head() != 200:
                    raise AssertionError("status %d: %r" % (s.status, s.read_body()))
                chunks, done = parse_events(tc, s.read_all())
            finally:
                s.close()
            if not done:
                raise AssertionError("stream %d: no [DONE]" % i)
            results[i] = stream_texts(chunks)
        except Exception as e:  # reported below, with the index
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HTTP_TIMEOUT)
    tc.assertFalse(any(t.is_alive() for t in threads), "a stream hangs")
    tc.assertEqual(errors, [])
    for i in range(count):
        tc.assertEqual(results[i], ({0: want[i]}, {0: ["length"]}), i)


class TestChatLogprobs(ServerTestCase):
    server_args = ("--slots", "2")

    def test_chat_logprobs(self):
        status, _, js = http_json(self.port, "POST", "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0,
            "ignore_eos": True, "logprobs": True, "top_logprobs": 3})
        self.assertEqual(status, 200, js)
        content = js["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), 5)
        for t in content:
            self.assertLessEqual(t["logprob"], 0.0)
            self.assertEqual(len(t["top_logprobs"]), 3)
            # greedy: the chosen token is the most likely one
            self.assertAlmostEqual(t["top_logprobs"][0]["logprob"], t["logprob"], places=5)
            self.assertEqual(bytes(t["bytes"]).decode("utf-8", "replace"), t["token"])
        status, _, js = http_json(self.port, "POST", "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        self.assertIsNone(js["choices"][0]["logprobs"])


class TestSessionsHoldAllSlots(ServerTestCase):
    """Without a host or disk tier (--host-state-memory 0, no --state-dir),
    when sessions hold every state slot, a request that needs a slot of its
    own is refused (429) at once instead of blocking all later requests;
    requests on a session still run.  (With a tier, idle sessions move out:
    test_tiers.py.)"""
    server_args = ("--slots", "2", "--max-waiting", "8", "--host-state-memory", "0")

    def test_no_slot_left(self):
        ids = []
        for _ in range(2):
            status, _, js = http_json(self.port, "POST", "/v1/sessions")
            self.assertEqual(status, 201, js)
            ids.append(js["id"])
        t0 = time.monotonic()
        status, headers, js = http_json(self.port, "POST", "/v1/completions",
                                        {"prompt": "hi", "max_tokens": 2})
        self.assertEqual(status, 429, js)
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertEqual(js["error"]["type"], "rate_limit_error")
        status, _, js = http_json(self.port, "POST", "/v1/completions",
                                  {"prompt": "hi", "max_tokens": 2, "session": ids[0]})
        self.assertEqual(status, 200, js)
        status, _, js = http_json(self.port, "DELETE", "/v1/sessions/" + ids[1])
        self.assertEqual(status, 200, js)
        status, _, js = http_json(self.port, "POST", "/v1/completions",
                                  {"prompt": "hi", "max_tokens": 2})
        self.assertEqual(status, 200, js)


class TestAllow(ServerTestCase):
    server_args = ("--slots", "2")

    def test_405_lists_allowed_methods(self):
        for method, path, allow in (("GET", "/v1/completions", "POST"),
                                    ("POST", "/v1/models", "GET, HEAD"),
                                    ("POST", "/health", "GET, HEAD"),
                                    ("PUT", "/v1/sessions", "GET, HEAD, POST")):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn.request(method, path, body=b"" if method != "GET" else None)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            self.assertEqual(resp.status, 405, path)
            self.assertEqual(resp.getheader("Allow"), allow, path)


class TestCurl(ServerTestCase):
    """The README's curl commands, run with curl itself."""
    server_args = ("--slots", "4")

    def curl(self, *args):
        out = subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                             timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def test_curl_completion_and_stream(self):
        base = "http://127.0.0.1:%d" % self.port
        body = json.dumps({"prompt": "ROMEO:", "max_tokens": 12, "temperature": 0})
        plain = json.loads(self.curl(base + "/v1/completions", "-d", body))
        self.assertEqual(plain["object"], "text_completion")
        text = plain["choices"][0]["text"]
        stream_body = json.dumps({"prompt": "ROMEO:", "max_tokens": 12, "temperature": 0,
                                  "stream": True})
        raw = self.curl("-N", base + "/v1/completions", "-d", stream_body).decode("utf-8")
        events = [e for e in raw.split("\n\n") if e]
        self.assertEqual(events[-1], "data: [DONE]")
        streamed = "".join(json.loads(e[len("data: "):])["choices"][0]["text"] for e in events[:-1])
        self.assertEqual(streamed, text)
        chat = json.loads(self.curl(base + "/v1/chat/completions", "-d", json.dumps(
            {"messages": [{"role": "user", "content": "Speak, friend."}], "max_tokens": 4})))
        self.assertEqual(chat["choices"][0]["message"]["role"], "assistant")
        self.assertEqual(json.loads(self.curl(base + "/health")), {"status": "ok"})


class TestStreamInterval(ServerTestCase):
    """--stream-interval-us: tokens that come faster than the interval share
    one event, but the first token and the end never wait for it."""
    server_args = ("--slots", "2", "--stream-interval-us", "1000000")

    def test_tokens_share_events_first_and_last_do_not_wait(self):
        need_rate(self, tokens_per_second(self.port), 100, "40 tokens well inside the 1 s interval")
        want = self.greedy("ROMEO:", max_tokens=40)
        t0 = time.monotonic()
        s = SSEStream(self.port, "/v1/completions",
                      dict(prompt="ROMEO:", max_tokens=40, temperature=0, ignore_eos=True,
                           stream=True, stream_options={"include_usage": True}))
        try:
            self.assertEqual(s.read_head(), 200)
            first = s.next_event()
            t_first = time.monotonic() - t0
            chunks, done = parse_events(self, [first] + s.read_all())
            t_end = time.monotonic() - t0
        finally:
            s.close()
        self.assertTrue(done)
        text, finishes = stream_texts(chunks)
        self.assertEqual(text[0], want)
        self.assertEqual(finishes[0], ["length"])
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 40)
        with_text = [c for c in chunks if c["choices"] and c["choices"][0]["text"]]
        # 40 tokens of the tiny model take far less than the 1 s interval:
        # the first token alone, the other 39 together at the end (a third
        # event only if a slow machine crossed the interval once)
        self.assertLessEqual(len(with_text), 3, [c["choices"][0]["text"] for c in with_text])
        self.assertGreaterEqual(len(with_text), 2)
        self.assertLess(t_first, 0.9, "the first token waited for the interval")
        self.assertLess(t_end, 0.9 if len(with_text) == 2 else 1.9, "the end waited")

    def test_urgent_news_of_one_stream_does_not_flush_another(self):
        # A runs long with its tokens held for the 1 s interval; B's first
        # token and end go out at once, and must not take A's held tokens
        # with them (each send takes a core from the engine on a small machine);
        # A lasts some seconds, at most 4000 tokens
        n = max(20, min(4000, int(4 * tokens_per_second(self.port))))
        a = SSEStream(self.port, "/v1/completions",
                      dict(prompt="A long one", max_tokens=n, temperature=0, ignore_eos=True,
                           stream=True))
        try:
            self.assertEqual(a.read_head(), 200)
            self.assertIsNotNone(a.next_event())  # A's first token, sent at once
            t0 = time.monotonic()
            _, chunks, done = self.stream(dict(prompt="B", max_tokens=2, temperature=0,
                                               ignore_eos=True))
            self.assertTrue(done)
            quick = time.monotonic() - t0 < 0.5
            a.sock.setblocking(False)
            try:
                got = a.sock.recv(65536)
            except BlockingIOError:
                got = b""
            finally:
                a.sock.setblocking(True)
            if quick:  # still inside A's interval: nothing of A may have come
                self.assertEqual(got, b"", "B's urgent news flushed A's held tokens")
            # A's tokens still all arrive
            a.raw += got
            chunks, done = parse_events(self, a.read_all())
            self.assertTrue(done)
        finally:
            a.close()

    def test_stop_strings_are_not_held(self):
        # the loop must see every token of a request with stop strings at
        # once, or the engine runs on past a match: a session's state keeps
        # every token generated, and the 1 s interval would let it run on
        # for up to a second
        full = self.greedy("Stop strings are", 48)
        stop = full[2:5]
        want = full[:full.find(stop)]
        for stream in (False, True):
            sid = self._session()
            prompt_ids = self.tokenize("Stop strings are")
            body = dict(prompt=prompt_ids, max_tokens=4000, temperature=0, ignore_eos=True,
                        stop=[stop], session=sid)
            if stream:
                _, chunks, done = self.stream(dict(body, stream_options={"include_usage": True}))
                text, finishes = stream_texts(chunks)
                text, used = text[0], chunks[-1]["usage"]["completion_tokens"]
                self.assertEqual(finishes[0], ["stop"])
            else:
                js = self.complete(**body)
                text, used = js["choices"][0]["text"], js["usage"]["completion_tokens"]
                self.assertEqual(js["choices"][0]["finish_reason"], "stop")
            self.assertEqual(text, want, stream)
            # a match stops the engine as soon as the HTTP thread has seen it
            # (a few steps on a busy machine); held for the interval, the tiny
            # model would have run through all 4000
            self.assertLessEqual(self._get_session(sid)["tokens"], len(prompt_ids) + used + 500,
                                 stream)

    def test_interval_outside_0_to_1s_is_refused(self):
        # accepted values get as far as loading the (missing) model: status 1
        for value, rc in (("-2", 2), ("1000001", 2), ("x", 2), ("-1", 1), ("0", 1),
                          ("1000000", 1)):
            out = subprocess.run([RETNETD, "--stream-interval-us", value, "--model",
                                  os.path.join(ROOT, "no-such-model")],
                                 capture_output=True, timeout=30)
            self.assertEqual(out.returncode, rc, (value, out.stderr))
            if rc == 2:
                self.assertIn(b"stream-interval-us", out.stderr)


class TestStreamIntervalPoll(ServerTestCase):
    """With an interval of 1 ms or more and a core the engine does not use
    (the tests' --threads 1 on a machine with more cores), the HTTP thread
    collects held tokens on its own timer while a stream is decoding (from
    its first token on), and the engine wakes it only for first tokens and
    ends: held tokens must still go
    out every interval while the stream runs, not at its end.  (On one core
    the engine's own wakes do it, and the same holds.)"""
    server_args = ("--slots", "2", "--max-tokens", "1000000", "--stream-interval-us", "100000")

    def test_held_tokens_go_out_every_interval(self):
        need_rate(self, tokens_per_second(self.port), 50, "several tokens in each 100 ms interval")
        s = SSEStream(self.port, "/v1/completions",
                      dict(prompt="ROMEO:", max_tokens=1000000, temperature=0, ignore_eos=True,
                           stream=True))
        times = []
        try:
            self.assertEqual(s.read_head(), 200)
            s.sock.settimeout(2.0)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.2:
                try:
                    ev = s.next_event()
                except socket.timeout:
                    self.fail("nothing for 2 s after %d events: held tokens were not sent"
                              % len(times))
                self.assertIsNotNone(ev, "the stream ended early")
                self.assertNotIn(b"[DONE]", ev)
                times.append(time.monotonic())
            wakes = dict(re.findall(r'^retnetd_http_wakes_total\{by="(\w+)"\} (\d+)$',
                                    http_request(self.port, "GET", "/metrics")[2].decode(),
                                    re.M))
        finally:
            s.close()
        # the first token at once, then about one event per 100 ms: a timer
        # that never ran would leave everything after the first token for
        # the end, one wake per token would send thousands
        self.assertGreaterEqual(len(times), 5, times)
        self.assertLessEqual(len(times), 40, "tokens were not held")
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertLess(max(gaps), 0.6, gaps)
        if (os.cpu_count() or 1) > 1:
            # the timer sent the held tokens; the engine woke the HTTP thread
            # only for the first token (and perhaps the warm-up's news)
            self.assertGreaterEqual(int(wakes["timer"]), len(times) - 2, wakes)
            self.assertLessEqual(int(wakes["engine"]), 3, wakes)
        # the cancelled stream stops the timer's work and the server serves on
        self.assertTrue(self.greedy("ROMEO:", max_tokens=4))


class TestStreamIntervalDefault(unittest.TestCase):
    """-1 (the default) holds tokens back 4 ms when the CPU engine's threads
    take every core (each wake of the HTTP thread preempts one), 1 ms when
    the HTTP thread has a core of its own or the engine is a GPU."""

    def chosen(self, *args):
        srv = Server(*args).start()
        try:
            m = re.search(r'msg="retnetd ready".* stream_interval_us=(\d+)', srv.log())
            self.assertIsNotNone(m, srv.log())
            return int(m.group(1))
        finally:
            srv.stop()

    def test_default_follows_the_cores_the_engine_takes(self):
        cpus = os.cpu_count()
        every = DEVICE == "cpu"  # check-cuda runs this file with cuda
        # Server passes --threads 1; a later --threads wins
        self.assertEqual(self.chosen("--threads", str(cpus)), 4000 if every else 1000)
        self.assertEqual(self.chosen(), 4000 if every and cpus <= 1 else 1000)
        self.assertEqual(self.chosen("--stream-interval-us", "250"), 250)


class TestVersion(unittest.TestCase):
    """--version (and -V) print the build's version and exit 0: the one the
    ready line and /metrics report."""

    def test_version_matches_the_ready_line(self):
        for flag in ("--version", "-V"):
            out = subprocess.run([RETNETD, flag], capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            m = re.fullmatch(r"retnetd (\S+)\n", out.stdout)
            self.assertIsNotNone(m, out.stdout)
        srv = Server().start()
        try:
            ready = re.search(r'msg="retnetd ready" version=(\S+)', srv.log())
            self.assertIsNotNone(ready, srv.log())
            self.assertEqual(ready.group(1), m.group(1))
        finally:
            srv.stop()


class TestGpuStateDtype(unittest.TestCase):
    """--gpu-state-dtype bf16 halves a slot on the GPU; the CPU engine keeps
    fp32 states whatever it says (a GPU setting, like --gpu-state-memory)."""

    def ready(self, *args):
        srv = Server(*args).start()
        try:
            m = re.search(r'msg="retnetd ready".* state_bytes=(\d+) state_dtype=(\w+)', srv.log())
            self.assertIsNotNone(m, srv.log())
            return int(m.group(1)), m.group(2)
        finally:
            srv.stop()

    def test_bf16_on_the_gpu_only(self):
        f32_bytes, f32 = self.ready()
        self.assertEqual(f32, "f32")
        got = self.ready("--gpu-state-dtype", "bf16")
        self.assertEqual(got, (f32_bytes // 2, "bf16") if DEVICE == "cuda" else (f32_bytes, "f32"))

    def test_unknown_dtype_is_refused(self):
        out = subprocess.run([RETNETD, "--gpu-state-dtype", "fp8", "--model",
                              os.path.join(ROOT, "no-such-model")], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn(b"f32|bf16", out.stderr)


class TestBatching(ServerTestCase):
    """32 slots: 32 streams (8 on a GPU) decode in the same batches and still
    give exactly what each prompt gives alone."""
    server_args = ("--slots", "32", "--max-waiting", "64")

    def test_32_concurrent_streams(self):
        check_concurrent_streams(self, CONCURRENT)

    def test_32_concurrent_streams_some_with_logprobs(self):
        check_concurrent_streams(self, CONCURRENT, logprobs_every=4)

    def test_sampled_streams_draw_what_the_whole_row_draws(self):
        # Sampling rows in a shared batch are drawn from the rows the engine
        # reduced to their candidates (a GPU keeps the logits on the device),
        # fetching a row only when the draw lands past its candidates or the
        # sampler adjusts logits.  Each request must still give exactly what
        # `retnet generate` draws from whole rows with the same seed.
        cases = [dict(temperature=0.8, top_p=0.9, seed=11),
                 dict(temperature=1.6, seed=12),  # flat: draws past the candidates
                 dict(temperature=1.0, top_k=40, seed=13),
                 dict(temperature=1.2, top_k=200, min_p=0.01, seed=14),
                 dict(temperature=0.7, repetition_penalty=1.3, seed=15),  # the whole row
                 dict(temperature=0.0)]
        prompt = "Sampling with a seed, case"

        def cli(i, params):
            args = [RETNET, "generate", MODEL_DIR, "%s %d" % (prompt, i), "-n", "20", "--ignore-eos",
                    "--threads", "1", "--device", DEVICE]
            for k, v in params.items():
                args += ["--" + k.replace("_", "-"), str(v)]
            out = subprocess.run(args, check=True, stdout=subprocess.PIPE, timeout=120).stdout.decode()
            self.assertTrue(out.startswith("%s %d" % (prompt, i)) and out.endswith("\n"), out)
            return out[len("%s %d" % (prompt, i)):-1]

        want = [cli(i, c) for i, c in enumerate(cases)]
        got, errors = [None] * len(cases), []

        def run(i):
            try:
                body = dict(prompt="%s %d" % (prompt, i), max_tokens=20, ignore_eos=True, **cases[i])
                if i % 2:
                    body["logprobs"] = 2
                got[i] = self.complete(**body)["choices"][0]["text"]
            except Exception as e:  # reported below, with the index
                errors.append((i, repr(e)))

        for i in range(len(cases)):  # alone
            run(i)
        self.assertEqual(errors, [])
        self.assertEqual(got, want)
        got = [None] * len(cases)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
        for t in threads:  # together, in shared batches
            t.start()
        for t in threads:
            t.join(HTTP_TIMEOUT)
        self.assertEqual(errors, [])
        self.assertEqual(got, want)


class TestAuth(ServerTestCase):
    server_args = ("--api-key", "secret", "--slots", "2")

    def test_api_key(self):
        body = {"prompt": "Hi", "max_tokens": 2}
        for hdrs in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"},
                     {"Authorization": "Bearer secretx"}, {"Authorization": "Bearer "}):
            status, _, js = http_json(self.port, "POST", "/v1/completions", body, hdrs)
            assert_error(self, status, js, 401, "authentication_error")
            status, _, js = http_json(self.port, "GET", "/v1/models", None, hdrs)
            assert_error(self, status, js, 401, "authentication_error")
        ok = {"Authorization": "Bearer secret"}
        status, _, js = http_json(self.port, "POST", "/v1/completions", body, ok)
        self.assertEqual(status, 200, js)
        status, _, js = http_json(self.port, "GET", "/v1/models", None, ok)
        self.assertEqual(status, 200, js)
        # a stream with the key
        s = SSEStream(self.port, "/v1/completions", dict(body, stream=True), ok)
        try:
            self.assertEqual(s.read_head(), 200)
            _, done = parse_events(self, s.read_all())
            self.assertTrue(done)
        finally:
            s.close()
        # probes stay public
        self.assertEqual(http_json(self.port, "GET", "/health")[0], 200)
        self.assertEqual(http_json(self.port, "GET", "/ready")[0], 200)


class TestDisconnect(ServerTestCase):
    """Clients that leave (mid-stream, or while queued) free what they held."""
    slots = 3
    server_args = ("--slots", str(slots), "--max-waiting", "8", "--max-tokens", "100000", "--host-state-memory", "0")

    def _hold(self, prompt="hold", **kw):
        """A long stream that has started (it holds a slot)."""
        s = SSEStream(self.port, "/v1/completions",
                      dict(prompt=prompt, max_tokens=100000, ignore_eos=True, stream=True, **kw))
        self.assertEqual(s.read_head(), 200)
        self.assertIsNotNone(s.next_event())
        return s

    def _all_slots_free(self):
        """n = slots runs only when no slot is held; it must finish at once."""
        t0 = time.monotonic()
        status, _, js = http_json(self.port, "POST", "/v1/completions",
                                  {"prompt": "all slots", "max_tokens": 3, "n": self.slots}, timeout=20)
        self.assertEqual(status, 200, js)
        self.assertLess(time.monotonic() - t0, 10.0)

    def test_disconnect_frees_slots(self):
        for _round in range(2):
            streams = []
            try:
                for i in range(self.slots):
                    streams.append(self._hold("Long %d" % i))
            finally:
                for s in streams:
                    s.close()
            self.assertEqual(http_json(self.port, "GET", "/health")[0], 200)
            # every slot is free: new requests finish at once (the abandoned
            # streams alone would need minutes)
            t0 = time.monotonic()
            out, errors = [None] * self.slots, []

            def run(i):
                try:
                    out[i] = http_json(self.port, "POST", "/v1/completions",
                                       {"prompt": "after %d" % i, "max_tokens": 4, "temperature": 0},
                                       timeout=20)
                except Exception as e:
                    errors.append(repr(e))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(self.slots)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertEqual(errors, [])
            self.assertEqual([o[0] for o in out], [200] * self.slots, out)
            self.assertLess(time.monotonic() - t0, 10.0)
        self._all_slots_free()

    def test_disconnect_while_waiting(self):
        # requests that leave while queued are dropped and do not run later
        holds = []
        try:
            for _ in range(self.slots):
                holds.append(self._hold())
            queued = [SSEStream(self.port, "/v1/completions",
                                dict(prompt="queued", max_tokens=100000, ignore_eos=True, stream=True))
                      for _ in range(2)]
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
            conn.request("POST", "/v1/completions", json.dumps({"prompt": "parked", "max_tokens": 100000}),
                         {"Content-Type": "application/json"})
            time.sleep(0.3)
            for q in queued:
                q.close()
            conn.close()
        finally:
            for h in holds:
                h.close()
        self._all_slots_free()

    def test_session_cancelled_while_queued(self):
        # a session whose first request leaves before it ran still starts empty
        # (its slot held an earlier request's state)
        want = self.greedy("a clean start", 8)
        sid = self._session()
        holds, waiting = [], None
        try:
            for _ in range(self.slots - 1):
                holds.append(self._hold())
            # no slot is free: this one waits at the head of the queue, and the
            # session request behind it
            waiting = SSEStream(self.port, "/v1/completions",
                                dict(prompt="waits", max_tokens=2, ignore_eos=True, stream=True))
            time.sleep(0.2)
            left = SSEStream(self.port, "/v1/completions",
                             dict(prompt="leaves", max_tokens=2, ignore_eos=True, stream=True, session=sid))
            time.sleep(0.2)
            left.close()
            time.sleep(0.2)
            # its job still waits in the engine, which owns the slot until it
            # drops the job: the session stays busy (no export, fork or move)
            self.assertTrue(self._get_session(sid)["busy"])
            status, _, js = http_json(self.port, "GET", "/v1/sessions/%s/state" % sid)
            assert_error(self, status, js, 409)
        finally:
            for h in holds:
                h.close()
            if waiting:
                waiting.close()
        deadline = time.monotonic() + 10
        while self._get_session(sid)["busy"] and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self._get_session(sid)["tokens"], 0)
        self.assertEqual(self.greedy("a clean start", 8, session=sid), want)

    def test_fork_does_not_wait_behind_the_queue(self):
        # a fork needs no free slot beyond the one its new session takes, so
        # it is done at once even while the FIFO's head waits for slots
        sid = self._session()
        self.greedy("forked", 2, session=sid)
        holds, waiting = [], None
        try:
            for _ in range(self.slots - 3):
                holds.append(self._hold())
            # two slots free; this request needs three and waits at the head
            waiting = SSEStream(self.port, "/v1/completions",
                                dict(prompt="waits", max_tokens=2, ignore_eos=True, stream=True, n=3))
            time.sleep(0.2)
            t0 = time.monotonic()
            status, _, js = http_json(self.port, "POST", "/v1/sessions/%s/fork" % sid, None, timeout=10)
            self.assertEqual(status, 200, js)
            self.assertLess(time.monotonic() - t0, 5.0)
            self.assertEqual(js["tokens"], self._get_session(sid)["tokens"])
            fork_id = js["id"]
        finally:
            for h in holds:
                h.close()
            if waiting:
                waiting.close()
        for s_id in (sid, fork_id):
            deadline = time.monotonic() + 10
            while self._get_session(s_id)["busy"] and time.monotonic() < deadline:
                time.sleep(0.02)
            status, _, js = http_json(self.port, "DELETE", "/v1/sessions/" + s_id)
            self.assertEqual(status, 200, js)
        self._all_slots_free()

    def test_session_after_disconnect(self):
        # a stream on a session that leaves mid-way: the session is released,
        # keeps what was fed into it, and can be continued
        sid = self._session()
        s = self._hold("partial", session=sid)
        s.close()
        deadline = time.monotonic() + 10
        while self._get_session(sid)["busy"] and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertFalse(self._get_session(sid)["busy"])
        self.assertGreater(self._get_session(sid)["tokens"], 0)
        self.greedy("more", 4, session=sid)


class TestOverload(ServerTestCase):
    server_args = ("--slots", "1", "--max-waiting", "1", "--max-tokens", "100000", "--host-state-memory", "0")

    def test_429(self):
        running = SSEStream(self.port, "/v1/completions",
                            dict(prompt="running", max_tokens=100000, ignore_eos=True, stream=True))
        queued = None
        try:
            self.assertEqual(running.read_head(), 200)
            self.assertIsNotNone(running.next_event())
            queued = SSEStream(self.port, "/v1/completions",
                               dict(prompt="queued", max_tokens=3, ignore_eos=True, stream=True))
            # the queued request sends nothing until it runs; give the server
            # a moment to take it in
            time.sleep(0.5)
            status, hdrs, js = http_json(self.port, "POST", "/v1/completions", {"prompt": "third", "max_tokens": 1},
                                         timeout=10)
            e = assert_error(self, status, js, 429, "rate_limit_error")
            self.assertEqual(e["code"], "server_is_overloaded")
            self.assertIn("retry-after", hdrs)
            self.assertGreaterEqual(int(hdrs["retry-after"]), 1)
            # n larger than the server's slots can never run
            status, _, js = http_json(self.port, "POST", "/v1/completions", {"prompt": "x", "n": 2})
            assert_error(self, status, js, 400, "invalid_request_error", "n")
            # the probes still answer
            self.assertEqual(http_json(self.port, "GET", "/health")[0], 200)
            # a stream still waiting for its slot gets SSE comments (every 5 s)
            t0 = time.monotonic()
            self.assertEqual(queued.read_head(), 200)
            self.assertEqual(queued.next_event(), b": keep-alive")
            self.assertLess(time.monotonic() - t0, 12)
            # the running stream ends when it leaves; the queued one runs then
            running.close()
            chunks, done = parse_events(self, queued.read_all())
            self.assertTrue(done)
            self.assertEqual(stream_texts(chunks)[1], {0: ["length"]})
        finally:
            running.close()
            if queued:
                queued.close()
        status, _, js = http_json(self.port, "POST", "/v1/completions", {"prompt": "later", "max_tokens": 2},
                                  timeout=20)
        self.assertEqual(status, 200, js)


    def test_session_slots(self):
        # a session holds a slot for its lifetime: with one slot, one session
        status, _, sess = http_json(self.port, "POST", "/v1/sessions")
        self.assertEqual(status, 201, sess)
        try:
            status, hdrs, js = http_json(self.port, "POST", "/v1/sessions")
            e = assert_error(self, status, js, 429, "rate_limit_error")
            self.assertEqual(e["code"], "no_free_state")
            self.assertIn("retry-after", hdrs)
            status, _, js = http_json(self.port, "POST", "/v1/sessions/%s/fork" % sess["id"])
            assert_error(self, status, js, 429, "rate_limit_error")
            # the session itself runs in its own slot
            status, _, js = http_json(self.port, "POST", "/v1/completions",
                                      {"prompt": "in the session", "max_tokens": 3, "session": sess["id"]},
                                      timeout=20)
            self.assertEqual(status, 200, js)
        finally:
            status, _, js = http_json(self.port, "DELETE", "/v1/sessions/" + sess["id"])
            self.assertEqual(status, 200, js)
        # the slot is back
        status, _, js = http_json(self.port, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2},
                                  timeout=20)
        self.assertEqual(status, 200, js)


class TestShutdown(unittest.TestCase):
    """SIGTERM: drain, then exit 0."""

    def setUp(self):
        self.server = Server("--slots", "2", "--max-tokens", "100000").start()
        self.port = self.server.port

    def tearDown(self):
        self.server.kill()

    def _open(self):
        """A keep-alive connection the server has already accepted."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        conn.request("GET", "/health")
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        return conn

    def test_idle(self):
        t0 = time.monotonic()
        self.server.stop()
        self.assertLess(time.monotonic() - t0, 10)

    def test_sessions_at_exit(self):
        for _ in range(2):
            status, _, js = http_json(self.port, "POST", "/v1/sessions")
            self.assertEqual(status, 201, js)
        status, _, js = http_json(self.port, "POST", "/v1/completions",
                                  {"prompt": "x", "max_tokens": 2, "session": js["id"]})
        self.assertEqual(status, 200, js)
        self.server.stop()

    def test_drain(self):
        # requests that last about a second: long enough to outlast the checks
        # below, short enough to drain within the 30 s (sanitizer builds and
        # the emulated CUDA backend are much slower)
        n = max(10, min(5000, int(tokens_per_second(self.port))))
        probe, refused, parked = self._open(), self._open(), self._open()
        # a plain request in flight when the signal comes is answered in full
        parked.request("POST", "/v1/completions", json.dumps({"prompt": "parked", "max_tokens": n,
                                                              "ignore_eos": True}),
                       {"Content-Type": "application/json"})
        s = SSEStream(self.port, "/v1/completions",
                      dict(prompt="draining", max_tokens=n, ignore_eos=True, stream=True, logprobs=0,
                           stream_options={"include_usage": True}))
        try:
            self.assertEqual(s.read_head(), 200)
            first = s.next_event()
            self.assertIsNotNone(first)
            self.server.terminate()
            signalled = time.monotonic()
            # the signal is handled asynchronously: /ready turns 503 soon
            deadline = time.monotonic() + 10
            while True:
                probe.request("GET", "/ready")
                r = probe.getresponse()
                js = json.loads(r.read())
                if r.status == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert_error(self, r.status, js, 503, "service_unavailable_error")
            self.assertIn("retry-after", {k.lower() for k, _ in r.getheaders()})
            # a new request on a connection accepted before the signal: 503
            refused.request("POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 1}),
                            {"Content-Type": "application/json"})
            r = refused.getresponse()
            assert_error(self, r.status, json.loads(r.read()), 503, "service_unavailable_error")
            # /health still answers during the drain
            probe.request("GET", "/health")
            r = probe.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            # no new connections
            with self.assertRaises(OSError):
                c = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                try:
                    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    if not c.recv(100):
                        raise ConnectionResetError("closed")
                finally:
                    c.close()
            # the running stream is finished, not cut
            chunks, done = parse_events(self, [first] + s.read_all())
            self.assertTrue(done)
            self.assertEqual(chunks[-1]["usage"]["completion_tokens"], n)
            self.assertEqual(stream_texts(chunks)[1], {0: ["length"]})
            self.assertEqual(sum(len(c["choices"][0]["logprobs"]["tokens"]) for c in chunks if c["choices"]), n)
            r = parked.getresponse()
            js = json.loads(r.read())
            self.assertEqual(r.status, 200, js)
            self.assertEqual(js["usage"]["completion_tokens"], n)
            self.assertEqual(js["choices"][0]["finish_reason"], "length")
        finally:
            s.close()
            probe.close()
            refused.close()
            parked.close()
        # within the drain deadline (30 s)
        rc = self.server.wait_exit(timeout=max(1.0, 30 - (time.monotonic() - signalled)))
        self.server.check_clean_exit(rc)
        log = self.server.log()
        self.assertIn("draining", log)
        self.assertIn('msg="stopped"', log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
