#!/usr/bin/env python3
"""Session states as portable blobs, against the real retnetd:
GET /v1/sessions/{id}/state exports, PUT imports (docs/state-format.md).

- a session exported from one server and imported into another (same model)
  continues there exactly as it does where it was made;
- a blob of another model (another seed, or another shape) is refused with
  409; malformed, truncated, oversized or corrupted blobs with 400 / 413,
  and none of them leaves a session behind;
- PUT replaces the state of an existing session and creates a missing one
  under the given id;
- with --state-dir, sessions survive a SIGTERM and restart and continue
  exactly; torn, corrupt or foreign files are skipped with a log line; a
  kill -9 while sessions are being written leaves each file at its last
  good version or its new one, never corrupt.

Uses the model, the server wrapper and the environment of test_server.py;
standard library only.
"""

import os
import random
import re
import signal
import struct
import tempfile
import time
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402

HEADER = 96
OTHER_SEED_DIR = None
OTHER_SHAPE_DIR = None


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def reseal(blob):
    """A correct header checksum after editing header bytes."""
    b = bytearray(blob)
    b[92:96] = struct.pack("<I", crc32c(bytes(b[:92])))
    return bytes(b)


def setUpModule():
    global OTHER_SEED_DIR, OTHER_SHAPE_DIR
    ts.setUpModule()
    OTHER_SEED_DIR = os.path.join(ts.TMP, "other-seed")
    subprocess.run([ts.RETNET, "random", "--preset", "tiny", "--dtype", "f32", "--seed", "8",
                    OTHER_SEED_DIR], check=True, stdout=subprocess.DEVNULL, timeout=120)
    ts._shrink_vocab(OTHER_SEED_DIR, ts.VOCAB, ts.EOS)
    OTHER_SHAPE_DIR = os.path.join(ts.TMP, "other-shape")
    subprocess.run([ts.RETNET, "random", "--preset", "tiny", "--dtype", "f32", "--seed", "7",
                    OTHER_SHAPE_DIR], check=True, stdout=subprocess.DEVNULL, timeout=120)
    ts._shrink_vocab(OTHER_SHAPE_DIR, ts.VOCAB - 1, ts.EOS)
    for d in (OTHER_SEED_DIR, OTHER_SHAPE_DIR):
        subprocess.run(["cp", ts.TOKENIZER, os.path.join(d, "tokenizer.json")], check=True)


def tearDownModule():
    ts.tearDownModule()


def server_on(model_dir):
    s = ts.Server()
    s.args[s.args.index("--model") + 1] = model_dir
    return s.start()


class TestStateBlobs(ts.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.other = ts.Server().start()   # a second replica of the same model

    @classmethod
    def tearDownClass(cls):
        cls.other.stop()
        super().tearDownClass()

    def export(self, sid, port=None):
        status, hdrs, data = ts.http_request(port or self.port, "GET", "/v1/sessions/%s/state" % sid)
        self.assertEqual(status, 200, data[:300])
        self.assertEqual(hdrs["content-type"], "application/octet-stream")
        self.assertEqual(data[:8], b"RNSTATE\0")
        return data

    def put(self, sid, blob, port=None):
        return ts.http_json(port or self.port, "PUT", "/v1/sessions/%s/state" % sid, blob,
                            {"Content-Type": "application/octet-stream"})

    def turn(self, port, sid, prompt, n=12):
        status, _, js = ts.http_json(port, "POST", "/v1/completions",
                                     dict(prompt=prompt, max_tokens=n, temperature=0, ignore_eos=True,
                                          session=sid))
        self.assertEqual(status, 200, js)
        return js["choices"][0]["text"]

    def test_move_between_servers_continues_identically(self):
        sid = self._session()
        self.turn(self.port, sid, "To be, or not to be")
        tokens = self._get_session(sid)["tokens"]
        blob = self.export(sid)
        status, _, js = self.put(sid, blob, self.other.port)
        self.assertEqual(status, 201, js)
        self.assertEqual(js["id"], sid)
        self.assertEqual(js["tokens"], tokens)
        here = self.turn(self.port, sid, " that is the question")
        there = self.turn(self.other.port, sid, " that is the question")
        self.assertEqual(here, there)
        self.assertEqual(ts.http_request(self.other.port, "DELETE", "/v1/sessions/" + sid)[0], 200)

    def test_put_replaces_an_existing_state(self):
        a, b = self._session(), self._session()
        self.turn(self.port, a, "First citizen:")
        status, _, js = self.put(b, self.export(a))
        self.assertEqual(status, 200, js)
        self.assertEqual(js["tokens"], self._get_session(a)["tokens"])
        self.assertEqual(self.turn(self.port, a, " speak"), self.turn(self.port, b, " speak"))

    def test_fresh_session_exports_an_empty_state(self):
        sid, fresh = self._session(), self._session()
        blob = self.export(fresh)
        self.assertEqual(struct.unpack_from("<q", blob, 56)[0], 0)
        self.assertEqual(set(blob[HEADER:]), {0})
        status, _, js = self.put(sid, blob)
        self.assertEqual(status, 200, js)
        want = self.greedy("Hark", 10)
        self.assertEqual(self.turn(self.port, sid, "Hark", 10), want)

    def test_busy_and_missing(self):
        status, _, js = ts.http_json(self.port, "GET", "/v1/sessions/sess_%s/state" % ("0" * 32))
        ts.assert_error(self, status, js, 404)
        status, _, js = ts.http_json(self.port, "POST", "/v1/sessions/%s/state" % self._session(), {})
        ts.assert_error(self, status, js, 405)

    def bad_blobs(self, good):
        size = len(good)
        b = bytearray(good)
        flipped = bytearray(good)
        flipped[HEADER + 3] ^= 0x40
        return [
            ("empty", b"", 400),
            ("header only", good[:HEADER], 400),
            ("truncated payload", good[:-5], 400),
            ("one byte short of the header", good[:HEADER - 1], 400),
            ("bad magic", b"XNSTATE\0" + good[8:], 400),
            ("future version", reseal(good[:8] + struct.pack("<I", 9) + good[12:]), 400),
            ("header checksum", good[:60] + bytes([good[60] ^ 1]) + good[61:], 400),
            ("payload bit flip", bytes(flipped), 400),
            ("dtype", reseal(good[:32] + struct.pack("<I", 2) + good[36:]), 400),
            ("negative position", reseal(good[:56] + struct.pack("<q", -4) + good[64:]), 400),
            ("another config", reseal(good[:16] + bytes([good[16] ^ 0xff]) + good[17:]), 409),
            ("another shape", reseal(good[:40] + struct.pack("<I", 7) + good[44:]), 409),
            ("oversized", good + b"\0" * 64, 413),
            ("text", b'{"state": "none"}', 400),
        ], size, b

    def test_bad_blobs_are_refused_and_leave_nothing(self):
        sid = self._session()
        self.turn(self.port, sid, "Now is the winter")
        good = self.export(sid)
        cases, _, _ = self.bad_blobs(good)
        self.assertGreaterEqual(len(cases), 10)
        for i, (what, blob, want) in enumerate(cases):
            with self.subTest(what):
                new_id = "sess_%032x" % (0xabc000 + i)
                status, _, js = self.put(new_id, blob)
                ts.assert_error(self, status, js, want)
                status, _, _ = ts.http_json(self.port, "GET", "/v1/sessions/" + new_id)
                self.assertEqual(status, 404, "%s left a session behind" % what)
        status, _, js = self.put("not-an-id", good)
        ts.assert_error(self, status, js, 400)
        # the existing session is untouched by a refused replacement
        before = self.export(sid)
        status, _, js = self.put(sid, good[:-1])
        ts.assert_error(self, status, js, 400)
        self.assertEqual(self.export(sid), before)
        self.assertEqual(ts.http_request(self.port, "GET", "/health")[0], 200)


class TestOtherModels(unittest.TestCase):
    def test_blob_of_another_model_conflicts(self):
        a = ts.Server().start()
        try:
            status, _, js = ts.http_json(a.port, "POST", "/v1/sessions", None)
            sid = js["id"]
            ts.http_json(a.port, "POST", "/v1/completions",
                         dict(prompt="Hello", max_tokens=4, session=sid, temperature=0))
            _, _, blob = ts.http_request(a.port, "GET", "/v1/sessions/%s/state" % sid)
            self.assertEqual(blob[:8], b"RNSTATE\0")
            for d in (OTHER_SEED_DIR, OTHER_SHAPE_DIR):
                b = server_on(d)
                try:
                    status, _, js = ts.http_json(b.port, "PUT", "/v1/sessions/%s/state" % sid, blob,
                                                 {"Content-Type": "application/octet-stream"})
                    ts.assert_error(self, status, js, 409)
                    self.assertEqual(ts.http_request(b.port, "GET", "/v1/sessions/" + sid)[0], 404)
                finally:
                    b.stop()
        finally:
            a.stop()


class TestPersistence(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="states-", dir=ts.TMP)

    def server(self):
        return ts.Server("--state-dir", self.dir).start()

    def turn(self, port, sid, prompt, n=10):
        status, _, js = ts.http_json(port, "POST", "/v1/completions",
                                     dict(prompt=prompt, max_tokens=n, temperature=0, ignore_eos=True,
                                          session=sid))
        self.assertEqual(status, 200, js)
        return js["choices"][0]["text"]

    def new_session(self, port):
        status, _, js = ts.http_json(port, "POST", "/v1/sessions", None)
        self.assertEqual(status, 201, js)
        return js["id"]

    def get(self, port, sid):
        return ts.http_json(port, "GET", "/v1/sessions/" + sid)

    def test_sigterm_and_restart_continue_identically(self):
        a = self.server()
        used, fresh, gone = (self.new_session(a.port) for _ in range(3))
        self.turn(a.port, used, "O Romeo, Romeo!")
        self.turn(a.port, gone, "deleted later")
        status, _, twin = ts.http_json(a.port, "POST", "/v1/sessions/%s/fork" % used, None)
        self.assertEqual(status, 200, twin)
        want = self.turn(a.port, twin["id"], " wherefore art thou")
        tokens = self.get(a.port, used)[2]["tokens"]
        for sid in (twin["id"], gone):
            self.assertEqual(ts.http_request(a.port, "DELETE", "/v1/sessions/" + sid)[0], 200)
        a.stop()
        self.assertIn('msg="sessions persisted"', a.log())
        states = sorted(f for f in os.listdir(self.dir) if f.endswith(".state"))
        self.assertEqual(states, sorted([used + ".state", fresh + ".state"]))
        self.assertEqual(sorted(f for f in os.listdir(self.dir) if f.endswith(".owner")),
                         sorted([used + ".owner", fresh + ".owner"]))
        b = self.server()
        try:
            self.assertRegex(b.log(), r'msg="sessions restored".*restored=2 skipped=0')
            status, _, js = self.get(b.port, used)
            self.assertEqual((status, js["tokens"]), (200, tokens))
            self.assertEqual(self.turn(b.port, used, " wherefore art thou"), want)
            self.assertEqual(self.get(b.port, fresh)[2]["tokens"], 0)
            for sid in (gone, twin["id"]):
                self.assertEqual(self.get(b.port, sid)[0], 404)
        finally:
            b.stop()

    def test_persist_interval_survives_kill(self):
        a = ts.Server("--state-dir", self.dir, "--persist-interval", "1").start()
        sid = self.new_session(a.port)
        self.turn(a.port, sid, "Written while running")
        tokens = self.get(a.port, sid)[2]["tokens"]
        path = os.path.join(self.dir, sid + ".state")
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        a.kill()  # no clean stop: only the periodic write saved it
        b = self.server()
        try:
            status, _, js = self.get(b.port, sid)
            self.assertEqual((status, js["tokens"]), (200, tokens))
        finally:
            b.stop()

    def test_torn_corrupt_and_foreign_files_are_skipped(self):
        a = self.server()
        good = self.new_session(a.port)
        self.turn(a.port, good, "A good file")
        a.stop()
        with open(os.path.join(self.dir, good + ".state"), "rb") as f:
            blob = f.read()
        bad = {
            "sess_%032x" % 1: blob[:len(blob) // 2],                            # torn
            "sess_%032x" % 2: blob[:HEADER + 7] + bytes([blob[HEADER + 7] ^ 1]) + blob[HEADER + 8:],
            "sess_%032x" % 3: b"RNSTATE\0" + b"\0" * (len(blob) - 8),            # zeros
            "sess_%032x" % 4: reseal(blob[:16] + bytes([blob[16] ^ 1]) + blob[17:]),  # another model
            "not-a-session": blob,
        }
        for name, data in bad.items():
            with open(os.path.join(self.dir, name + ".state"), "wb") as f:
                f.write(data)
        leftover = os.path.join(self.dir, good + ".state.tmp.999")
        with open(leftover, "wb") as f:
            f.write(blob[:100])
        b = self.server()
        try:
            log = b.log()
            self.assertRegex(log, r'msg="sessions restored".*restored=1 skipped=5')
            self.assertEqual(log.count('msg="state file skipped"'), 5)
            self.assertEqual(self.get(b.port, good)[0], 200)
            for name in bad:
                if name.startswith("sess_"):
                    self.assertEqual(self.get(b.port, name)[0], 404, name)
            self.assertFalse(os.path.exists(leftover))
        finally:
            b.stop()

    def test_kill_during_persistence_never_leaves_a_corrupt_file(self):
        n, rng = 24, random.Random(11)
        a = self.server()
        ids = [self.new_session(a.port) for _ in range(n)]
        a.stop()
        allowed = {sid: {0} for sid in ids}    # what each file may hold now
        for rnd in range(4):
            srv = self.server()
            self.assertRegex(srv.log(), r'restored=%d skipped=0' % n)
            loaded = {}
            for sid in ids:
                status, _, js = self.get(srv.port, sid)
                self.assertEqual(status, 200, js)
                self.assertIn(js["tokens"], allowed[sid], "round %d: %s" % (rnd, sid))
                loaded[sid] = js["tokens"]
                self.turn(srv.port, sid, "round %d" % rnd, 3)
            now = {sid: self.get(srv.port, sid)[2]["tokens"] for sid in ids}
            srv.terminate()
            time.sleep(rng.uniform(0.0, 0.15))  # before, during or after the writes
            srv.kill()
            srv.wait_exit()
            # each file is now the version it had at start or the new one
            allowed = {sid: {loaded[sid], now[sid]} for sid in ids}
        final = self.server()
        try:
            self.assertRegex(final.log(), r'restored=%d skipped=0' % n)
        finally:
            final.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
