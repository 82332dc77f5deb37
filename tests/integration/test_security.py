#!/usr/bin/env python3
"""Access control against the real retnetd: several API keys from a file
([server] api_key_file), sessions bound to the key that created them (any
other key gets 404 for every way of reaching them, and listings show only
one's own), ownership kept across a restart, public /health, /ready and
/metrics, and bad key files refused at start.

Uses test_server.py's model and server wrapper; standard library only.
"""

import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402

ALICE = "alice-0123456789abcdef"
BOB = "bob-0123456789abcdef0"
KEYS = None


def setUpModule():
    global KEYS
    ts.setUpModule()
    KEYS = os.path.join(ts.TMP, "keys.txt")
    with open(KEYS, "w") as f:
        f.write("# name:secret\nalice: %s\n\nbob:%s\n" % (ALICE, BOB))


def tearDownModule():
    ts.tearDownModule()


def as_(key):
    return {"Authorization": "Bearer " + key}


class TestKeysAndOwnership(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sec-", dir=ts.TMP)
        self.srv = ts.Server("--api-key-file", KEYS, "--state-dir", self.dir).start()
        self.port = self.srv.port

    def tearDown(self):
        self.srv.stop()

    def req(self, method, path, key, body=None, extra=None):
        h = dict(as_(key) if key else {}, **(extra or {}))
        return ts.http_json(self.port, method, path, body, h)

    def test_sessions_belong_to_their_key(self):
        status, _, js = self.req("POST", "/v1/sessions", ALICE)
        self.assertEqual(status, 201, js)
        sid = js["id"]
        self.assertEqual(self.req("POST", "/v1/completions", ALICE,
                                  dict(prompt="mine", max_tokens=2, session=sid))[0], 200)
        # every way bob could reach it: not found
        for method, path, body in (("GET", "/v1/sessions/" + sid, None),
                                   ("DELETE", "/v1/sessions/" + sid, None),
                                   ("POST", "/v1/sessions/%s/fork" % sid, None),
                                   ("GET", "/v1/sessions/%s/state" % sid, None),
                                   ("POST", "/v1/completions", dict(prompt="x", max_tokens=1, session=sid))):
            status, _, js = self.req(method, path, BOB, body)
            ts.assert_error(self, status, js, 404)
        status, _, blob = ts.http_request(self.port, "GET", "/v1/sessions/%s/state" % sid, headers=as_(ALICE))
        self.assertEqual(status, 200)
        status, _, js = ts.http_json(self.port, "PUT", "/v1/sessions/%s/state" % sid, blob,
                                     dict(as_(BOB), **{"Content-Type": "application/octet-stream"}))
        ts.assert_error(self, status, js, 409)  # not bob's to replace
        # listings show one's own only
        self.assertEqual([s["id"] for s in self.req("GET", "/v1/sessions", ALICE)[2]["data"]], [sid])
        self.assertEqual(self.req("GET", "/v1/sessions", BOB)[2]["data"], [])
        # without a key or with a wrong one: 401; /health, /ready, /metrics stay public
        for key in (None, "nope-0123456789abcdef"):
            status, _, js = self.req("GET", "/v1/sessions", key)
            ts.assert_error(self, status, js, 401)
        for path in ("/health", "/ready", "/metrics"):
            self.assertEqual(ts.http_request(self.port, "GET", path)[0], 200, path)
        # the owner survives a restart
        self.srv.stop()
        self.srv = ts.Server("--api-key-file", KEYS, "--state-dir", self.dir).start()
        self.port = self.srv.port
        self.assertEqual(self.req("GET", "/v1/sessions/" + sid, ALICE)[0], 200)
        self.assertEqual(self.req("GET", "/v1/sessions/" + sid, BOB)[0], 404)
        self.assertEqual(self.req("DELETE", "/v1/sessions/" + sid, ALICE)[0], 200)
        self.assertEqual([f for f in os.listdir(self.dir)], [])


class TestBadKeyFiles(unittest.TestCase):
    def start_fails(self, text, want):
        path = os.path.join(ts.TMP, "bad-keys.txt")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([ts.RETNETD, "--model", ts.MODEL_DIR, "--port", "0", "--api-key-file", path],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(want, r.stderr)

    def test_refused(self):
        self.start_fails("# nothing\n", "holds no key")
        self.start_fails("a:%s\na:%s\n" % (ALICE, BOB), "key name 'a' used twice")
        self.start_fails("a:\n", ":1: want")
        r = subprocess.run([ts.RETNETD, "--model", ts.MODEL_DIR, "--api-key-file", "/nonexistent"],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("/nonexistent", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
