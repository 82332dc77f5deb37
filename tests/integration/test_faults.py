#!/usr/bin/env python3
"""Faults, against the real retnetd, each with the behaviour docs/reliability.md
records:

- an engine failure in the middle of a batched decode (injected with
  RETNETD_FAULT_DECODE=n: the n-th decode call fails) ends only the requests
  in that batch, with a clear error; requests after it are served;
- a model file truncated or unreadable at start: one clear line, exit != 0;
- a state directory that is full or read-only (a small tmpfs; needs the
  right to mount, else this case says SKIPPED): writing sessions at stop
  fails with a log line per session, the previous files stay intact, the
  server still exits 0;
- SIGTERM under load: every running stream finishes with [DONE], exit 0;
- a device failure the engine cannot recover from (RETNETD_FAULT_LOST=1
  with RETNETD_FAULT_DECODE): the requests in flight end with a 503 (a
  stream with an error event), the server drains and exits with status 1,
  for its service manager to restart it; on the emulated CUDA build, the
  same from a kernel that fails on the device (RN_EMU_FAIL_LAUNCH).

Uses test_server.py's model and server wrapper; standard library only.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402


def setUpModule():
    ts.setUpModule()


def tearDownModule():
    ts.tearDownModule()


def server_with_env(env, *args):
    """A started ts.Server whose process alone sees the variables env
    (fault injection), restored in this one as they were."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return ts.Server(*args).start()
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def stream_events(port, body):
    s = ts.SSEStream(port, "/v1/completions", dict(body, stream=True))
    try:
        status = s.read_head()
        events = [e.decode() if isinstance(e, bytes) else e for e in s.read_all()]
    finally:
        s.close()
    return status, events


class TestFaults(unittest.TestCase):
    def test_engine_failure_mid_batch(self):
        srv = server_with_env({"RETNETD_FAULT_DECODE": "30"}, "--slots", "4")
        try:
            results = {}

            def run(name):
                results[name] = stream_events(srv.port, dict(prompt=name, max_tokens=200, ignore_eos=True))
            threads = [threading.Thread(target=run, args=("s%d" % i,)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            failed = 0
            for name, (status, events) in results.items():
                self.assertEqual(status, 200)
                self.assertEqual(events[-1], "data: [DONE]", name)
                errs = [json.loads(e[6:]) for e in events if e.startswith('data: {"error"')]
                if errs:
                    failed += 1
                    self.assertEqual(errs[0]["error"]["type"], "server_error")
                    self.assertIn("engine error", errs[0]["error"]["message"])
            self.assertGreaterEqual(failed, 1)   # the batch with the failure
            # later requests are served normally
            status, _, js = ts.http_json(srv.port, "POST", "/v1/completions",
                                         {"prompt": "after", "max_tokens": 20, "ignore_eos": True})
            self.assertEqual(status, 200, js)
            self.assertEqual(js["usage"]["completion_tokens"], 20)
        finally:
            srv.stop()

    def test_device_lost_stops_the_server(self):
        """A device failure the engine cannot recover from (RETNETD_FAULT_LOST:
        the injected failure also loses the device, as a GPU fault's sticky
        error does): the requests in flight end with an error, and the server
        drains and exits with status 1 so its service manager restarts it."""
        self.check_lost_device({"RETNETD_FAULT_DECODE": "30", "RETNETD_FAULT_LOST": "1"})

    def test_kernel_fault_stops_the_server(self):
        """The same from a real fault of the CUDA backend: on the emulated
        CUDA build (make check-cuda-emu-integration sets
        RETNETD_TEST_KERNEL_FAULT=1), RN_EMU_FAIL_LAUNCH makes the 1000th
        kernel fail on the device, within the stream's decode (the server's
        start runs fewer than 300), with the device's sticky error."""
        if os.environ.get("RETNETD_TEST_KERNEL_FAULT") != "1":
            self.skipTest("needs the emulated CUDA build (make check-cuda-emu-integration)")
        self.check_lost_device({"RN_EMU_FAIL_LAUNCH": "1000"})

    def check_lost_device(self, env):
        """A server started with env (the fault) loses its device while it
        decodes a stream and a plain request: the stream ends with an error
        event and the request with a 503 (Retry-After: the restarted server
        may serve it), both of type service_unavailable_error and saying the
        device failed; the server exits with status 1 and says why."""
        srv = server_with_env(env, "--slots", "4")
        try:
            results = {}

            def plain():
                results["plain"] = ts.http_request(srv.port, "POST", "/v1/completions",
                                                   {"prompt": "p", "max_tokens": 400, "ignore_eos": True})
            t = threading.Thread(target=plain)
            t.start()
            status, events = stream_events(srv.port, dict(prompt="s", max_tokens=400, ignore_eos=True))
            t.join(120)
            self.assertEqual(status, 200)
            self.assertEqual(events[-1], "data: [DONE]")
            errs = [json.loads(e[6:]) for e in events if e.startswith('data: {"error"')]
            self.assertEqual(len(errs), 1, events[-3:])
            self.assertEqual(errs[0]["error"]["type"], "service_unavailable_error")
            self.assertIn("device failed", errs[0]["error"]["message"])
            status, hdrs, body = results["plain"]
            self.assertEqual(status, 503, body[:300])
            self.assertEqual(hdrs.get("retry-after"), "1")
            err = json.loads(body)["error"]
            self.assertEqual(err["type"], "service_unavailable_error")
            self.assertIn("device failed during", err["message"])
            rc = srv.wait_exit()
            log = srv.log()
            self.assertEqual(rc, 1, log[-3000:])
            self.assertIn('msg="engine device failed', log)
            for mark in ts.SANITIZER_MARKS:
                self.assertNotIn(mark, log)
        finally:
            srv.kill()

    def broken_model(self, how):
        d = tempfile.mkdtemp(prefix="broken-", dir=ts.TMP)
        for f in os.listdir(ts.MODEL_DIR):
            shutil.copy(os.path.join(ts.MODEL_DIR, f), d)
        st = os.path.join(d, "model.safetensors")
        if how == "truncated":
            with open(st, "r+b") as f:
                f.truncate(os.path.getsize(st) // 2)
        else:  # unreadable: a directory where the file should be
            os.unlink(st)
            os.mkdir(st)
        r = subprocess.run([ts.RETNETD, "--model", d, "--port", "0"], capture_output=True, text=True,
                           timeout=60)
        self.assertNotEqual(r.returncode, 0)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn("model.safetensors", lines[0])

    def test_broken_model_files(self):
        self.broken_model("truncated")
        self.broken_model("unreadable")

    def test_state_dir_full(self):
        d = tempfile.mkdtemp(prefix="full-", dir=ts.TMP)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", d], capture_output=True,
                           text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here (%s)" % r.stderr.strip())
        try:
            srv = ts.Server("--state-dir", d).start()
            ids = []
            for _ in range(3):  # 3 states of 1 MiB + 96 bytes: one fits, the rest do not
                sid = ts.http_json(srv.port, "POST", "/v1/sessions", None)[2]["id"]
                ts.http_json(srv.port, "POST", "/v1/completions",
                             dict(prompt="fill", max_tokens=2, session=sid))
                ids.append(sid)
            srv.stop()  # exit status 0 is checked there
            log = srv.log()
            self.assertIn('msg="sessions persisted"', log)
            self.assertRegex(log, r"failed=[12]")
            self.assertIn("No space left on device", log)
            leftovers = [f for f in os.listdir(d) if ".tmp." in f]
            self.assertEqual(leftovers, [])  # no half-written file remains
            # what was written is whole: a restart restores it, skips nothing
            srv2 = ts.Server("--state-dir", d).start()
            try:
                self.assertRegex(srv2.log(), r"restored=[12] skipped=0")
            finally:
                srv2.stop()
        finally:
            subprocess.run(["umount", d], capture_output=True)

    def test_sigterm_under_load(self):
        srv = ts.Server("--slots", "8").start()
        results = {}
        # streams of up to a few seconds, well inside the 30 s drain on a
        # slow engine (the emulated CUDA backend makes a few tokens/s)
        n = max(10, min(400, int(2 * ts.tokens_per_second(srv.port))))

        def run(name):
            results[name] = stream_events(srv.port, dict(prompt=name, max_tokens=n, ignore_eos=True))
        threads = [threading.Thread(target=run, args=("l%d" % i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        text = ts.http_request(srv.port, "GET", "/metrics")[2].decode()
        self.assertRegex(text, r"retnetd_running_requests [1-9]")  # they are running at the signal
        srv.terminate()
        for t in threads:
            t.join(600)
        srv.check_clean_exit(srv.wait_exit())
        self.assertEqual(len(results), 8)
        for name, (status, events) in results.items():
            self.assertEqual(status, 200, name)
            self.assertEqual(events[-1], "data: [DONE]", name)
            self.assertFalse(any(e.startswith('data: {"error"') for e in events), name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
