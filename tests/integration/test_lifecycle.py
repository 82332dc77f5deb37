#!/usr/bin/env python3
"""retnetd's life cycle, against the real binary:

- the drain deadline: a stream still running when --drain-timeout expires is
  cut with an error event, and the server still exits 0, on time;
- SIGHUP reopens --log-file (after logrotate moved it), the server keeps
  serving;
- a failed start (bad model, port in use, no GPU for --device cuda, missing
  state directory, unwritable log file) exits non-zero with one clear line.

(The drain itself — running requests finish, new ones get 503, /ready turns
503 — is test_server.py's TestShutdown.)  Uses test_server.py's model and
server wrapper; standard library only.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402


def setUpModule():
    ts.setUpModule()


def tearDownModule():
    ts.tearDownModule()


class TestLifecycle(unittest.TestCase):
    def test_drain_deadline_cuts_streams_with_an_error_event(self):
        srv = ts.Server("--drain-timeout", "1", "--max-tokens", "1000000").start()
        s = ts.SSEStream(srv.port, "/v1/completions",
                         dict(prompt="forever", max_tokens=1000000, ignore_eos=True, stream=True))
        try:
            self.assertEqual(s.read_head(), 200)
            self.assertIsNotNone(s.next_event())
            srv.terminate()
            t0 = time.monotonic()
            events = s.read_all()
        finally:
            s.close()
        rc = srv.wait_exit(timeout=20)
        took = time.monotonic() - t0
        srv.check_clean_exit(rc)
        self.assertLess(took, 10.0)
        events = [e.decode() if isinstance(e, bytes) else e for e in events]
        errors = [json.loads(e[6:]) for e in events if e.startswith('data: {"error"')]
        self.assertEqual(len(errors), 1, events[-3:])
        self.assertEqual(errors[0]["error"]["type"], "service_unavailable_error")
        self.assertIn('drain deadline reached', srv.log())

    def test_sighup_reopens_the_log_file(self):
        log = os.path.join(ts.TMP, "retnetd-hup.log")
        srv = ts.Server("--log-file", log)
        # Server.start reads the ready line from stderr: this one logs to the file
        fd_out = open(os.path.join(ts.TMP, "hup-stdout.log"), "wb")
        proc = subprocess.Popen(srv.args, stdout=fd_out, stderr=fd_out)
        try:
            port = None
            deadline = time.monotonic() + ts.START_TIMEOUT
            while port is None and time.monotonic() < deadline:
                if os.path.exists(log):
                    with open(log) as f:
                        for line in f:
                            if 'msg="retnetd ready"' in line:
                                port = int(line.rsplit(":", 1)[1])
                time.sleep(0.05)
            self.assertIsNotNone(port)
            os.rename(log, log + ".1")                       # what logrotate does
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while not os.path.exists(log) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertTrue(os.path.exists(log))
            self.assertEqual(ts.http_request(port, "GET", "/health", headers={"X-Request-Id": "after-hup"})[0], 200)
            time.sleep(0.2)
            with open(log) as f:
                text = f.read()
            self.assertIn('msg="log file reopened"', text)
            self.assertIn("request_id=after-hup", text)
            with open(log + ".1") as f:
                self.assertNotIn("after-hup", f.read())
            proc.terminate()
            self.assertEqual(proc.wait(timeout=30), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
            fd_out.close()

    def failed_start(self, *args, model=None, want=""):
        argv = [ts.RETNETD, "--model", model or ts.MODEL_DIR, "--host", "127.0.0.1", "--port", "0",
                "--threads", "1"] + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn(want.lower(), lines[0].lower())
        return lines[0]

    def test_failed_starts_say_why(self):
        self.failed_start(model=os.path.join(ts.TMP, "no-such-model"), want="no-such-model")
        broken = os.path.join(ts.TMP, "broken-model")
        os.makedirs(broken, exist_ok=True)
        with open(os.path.join(broken, "config.json"), "w") as f:
            f.write("{not json")
        self.failed_start(model=broken, want="config.json")
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            line = self.failed_start("--port", str(port), want=str(port))
            self.assertRegex(line.lower(), r"in use|bind")
        if ts.DEVICE != "cuda":  # where the tests serve on a GPU, one is there to start on
            self.failed_start("--device", "cuda", want="cuda")
        self.failed_start("--state-dir", os.path.join(ts.TMP, "no-such-dir"), want="no-such-dir")
        self.failed_start("--log-file", "/proc/no/such/retnetd.log", want="/proc/no/such/retnetd.log")


if __name__ == "__main__":
    unittest.main(verbosity=2)
