#!/usr/bin/env python3
"""`make install` into a staging directory (DESTDIR) and the systemd unit:

- every file lands in its FHS place (binaries, default model, config with the
  installed model and state paths, unit, docs), and the installed config is
  valid (`retnetd --check-config`) and serves the installed model;
- `systemd-analyze verify` accepts the unit (with its paths pointed at the
  staging directory, where the binary exists);
- `systemd-analyze security --offline` rates its exposure at most 3.0
  (docs/operations.md records the figure).

Needs make and systemd-analyze (the systemd package, which `make deps`
installs).  Standard library only.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402

STAGE = None


def setUpModule():
    global STAGE
    ts.setUpModule()
    STAGE = tempfile.mkdtemp(prefix="install-", dir=ts.TMP)
    subprocess.run(["make", "-s", "-C", ts.ROOT, "install", "DESTDIR=" + STAGE, "PREFIX=/usr"],
                   check=True, stdout=subprocess.DEVNULL, timeout=600)


def tearDownModule():
    ts.tearDownModule()


class TestInstall(unittest.TestCase):
    def test_layout_and_config(self):
        for rel in ("usr/bin/retnetd", "usr/bin/retnet", "usr/share/retnetd/models/config.json",
                    "usr/share/retnetd/models/model.safetensors", "usr/share/retnetd/models/tokenizer.json",
                    "etc/retnetd/retnetd.conf", "usr/lib/systemd/system/retnetd.service",
                    "usr/share/doc/retnetd/README.md", "usr/share/doc/retnetd/operations.md"):
            self.assertTrue(os.path.isfile(os.path.join(STAGE, rel)), rel)
        conf = os.path.join(STAGE, "etc/retnetd/retnetd.conf")
        r = subprocess.run([os.path.join(STAGE, "usr/bin/retnetd"), "--config", conf, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("dir = /usr/share/retnetd/models    ; config file", r.stdout)
        self.assertIn("state_dir = /var/lib/retnetd    ; config file", r.stdout)
        # the staged binary serves the staged model (paths overridden for the staging tree)
        srv = ts.Server()
        srv.args[0] = os.path.join(STAGE, "usr/bin/retnetd")
        srv.args[srv.args.index("--model") + 1] = os.path.join(STAGE, "usr/share/retnetd/models")
        srv.start()
        try:
            status, _, js = ts.http_json(srv.port, "POST", "/v1/completions",
                                         {"prompt": "ROMEO:", "max_tokens": 4})
            self.assertEqual(status, 200, js)
        finally:
            srv.stop()

    def staged_unit(self):
        with open(os.path.join(ts.ROOT, "systemd/retnetd.service.in")) as f:
            text = f.read()
        text = (text.replace("@BINDIR@", os.path.join(STAGE, "usr/bin"))
                    .replace("@SYSCONFDIR@", os.path.join(STAGE, "etc"))
                    .replace("@DOCDIR@", os.path.join(STAGE, "usr/share/doc/retnetd")))
        path = os.path.join(STAGE, "retnetd.service")
        with open(path, "w") as f:
            f.write(text)
        with open(os.path.join(STAGE, "usr/lib/systemd/system/retnetd.service")) as f:
            installed = f.read()
        self.assertIn("ExecStart=/usr/bin/retnetd --config /etc/retnetd/retnetd.conf", installed)
        self.assertFalse(re.search(r"@(BINDIR|SYSCONFDIR|DOCDIR)@", installed))
        return path

    def test_systemd_verify_and_security(self):
        if not shutil.which("systemd-analyze"):
            self.fail("systemd-analyze not found (the systemd package; make deps installs it)")
        unit = self.staged_unit()
        r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        print("systemd-analyze security: exposure %s" % m.group(1), file=sys.stderr)
        self.assertLessEqual(float(m.group(1)), 3.0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
