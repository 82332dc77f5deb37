#!/usr/bin/env python3
"""retnetd's settings: the config file (INI, libinih), RETNETD_* environment
variables and flags, in that order of precedence over the built-in defaults
(server/options.c); --check-config; and bad configurations, each refused
with exit status 2 and one message naming the file and line, the variable or
the flag.  Also: the committed example config/retnetd.conf is exactly what
the code's table prints (so the two cannot drift apart), and it is valid.

Runs the real binary (RETNETD); standard library only.
"""

import os
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RETNETD = os.environ.get("RETNETD", os.path.join(ROOT, "build/release/retnetd"))
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RETNETD_")}


def run(*args, env=None, conf=None):
    e = dict(CLEAN_ENV, **(env or {}))
    argv = [RETNETD]
    path = None
    if conf is not None:
        fd, path = tempfile.mkstemp(suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(conf)
        argv += ["--config", path]
    argv += list(args)
    try:
        r = subprocess.run(argv, env=e, capture_output=True, text=True, timeout=30)
    finally:
        if path:
            os.unlink(path)
    return r.returncode, r.stdout, r.stderr, path


def effective(stdout):
    """key -> (value, source) from --check-config output."""
    out, section = {}, None
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line[1:-1]
        elif "=" in line and not line.startswith(";"):
            key, rest = line.split("=", 1)
            value, _, source = rest.partition(";")
            out["%s.%s" % (section, key.strip())] = (value.strip(), source.strip())
    return out


class TestConfig(unittest.TestCase):
    def test_example_is_the_table_and_valid(self):
        rc, example, err, _ = run("--print-config-example")
        self.assertEqual(rc, 0, err)
        with open(os.path.join(ROOT, "config/retnetd.conf")) as f:
            self.assertEqual(f.read(), example, "config/retnetd.conf is stale: regenerate it with "
                             "retnetd --print-config-example > config/retnetd.conf")
        rc, out, err, _ = run("--config", os.path.join(ROOT, "config/retnetd.conf"), "--check-config")
        self.assertEqual(rc, 0, err)
        eff = effective(out)
        self.assertGreaterEqual(len(eff), 30)
        self.assertTrue(all(src == "config file" for _, src in eff.values()), eff)

    def test_precedence(self):
        conf = "[server]\nport = 7001\ntimeout = 77\n[engine]\nchunk = 32\n[log]\nformat = json\n"
        rc, out, err, _ = run("--check-config", "--port", "7003",
                              env={"RETNETD_PORT": "7002", "RETNETD_TIMEOUT": "88"}, conf=conf)
        self.assertEqual(rc, 0, err)
        eff = effective(out)
        self.assertEqual(eff["server.port"], ("7003", "flag"))            # flag > env > file
        self.assertEqual(eff["server.timeout"], ("88", "environment"))    # env > file
        self.assertEqual(eff["engine.chunk"], ("32", "config file"))      # file > default
        self.assertEqual(eff["log.format"], ("json", "config file"))
        self.assertEqual(eff["limits.max_n"], ("8", "default"))
        rc, out, _, _ = run("--check-config", env={"RETNETD_API_KEY": "s3cret"})
        self.assertEqual(effective(out)["server.api_key"][0], "(set, not shown)")
        self.assertNotIn("s3cret", out)

    BAD = [
        ("unknown key", "[server]\nprot = 1\n", "%s:2: unknown key 'prot' in [server]"),
        ("unknown section", "[sever]\nport = 1\n", "%s:2: unknown section [sever]"),
        ("out of range", "[server]\nport = 70000\n", "%s:2: [server] port: 70000 is out of range"),
        ("not a number", "[engine]\nchunk = sixty\n", "%s:2: [engine] chunk: 'sixty' is not a whole number"),
        ("trailing junk", "[engine]\nchunk = 64k\n", "%s:2: [engine] chunk: '64k' is not a whole number"),
        ("bad choice", "[engine]\ndevice = tpu\n", "%s:2: [engine] device: 'tpu' is not one of auto|cpu|cuda"),
        ("bad boolean", "[log]\nrequests = maybe\n", "%s:2: [log] requests: 'maybe' is not a boolean"),
        ("outside a section", "port = 1\n", "%s:1: 'port' is outside a [section]"),
        ("set twice", "[server]\nport = 1\nport = 2\n", "%s:3: [server] port is set twice"),
        ("not key = value", "[server]\njust words\n", "%s:2: not a key = value line"),
        ("negative size", "[engine]\nstate_memory = -5\n", "%s:2: [engine] state_memory: -5 is out of range"),
        ("negative chunk", "[engine]\n\n; comment\nchunk = -1\n", "%s:4: [engine] chunk: -1 is out of range"),
        ("huge number", "[limits]\nmax_n = 99999999999999999999\n", "%s:2: [limits] max_n: '99999999999999999999' is not a whole number"),
    ]

    def test_bad_config_files(self):
        self.assertGreaterEqual(len(self.BAD), 10)
        for what, conf, want in self.BAD:
            with self.subTest(what):
                rc, out, err, path = run("--check-config", conf=conf)
                self.assertEqual(rc, 2, "%s: %s %s" % (what, out, err))
                self.assertIn(want % path, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_bad_environment_and_flags(self):
        cases = [
            (("--check-config",), {"RETNETD_PORT": "eighty"}, "RETNETD_PORT: 'eighty' is not a whole number"),
            (("--check-config",), {"RETNETD_LOG_FORMAT": "xml"}, "RETNETD_LOG_FORMAT: 'xml' is not one of logfmt|json"),
            (("--check-config", "--max-n", "0"), {}, "--max-n: 0 is out of range"),
            (("--check-config", "--frobnicate", "1"), {}, "unknown option '--frobnicate'"),
            (("--check-config", "--port"), {}, "--port needs a value"),
            (("--check-config", "--config", "/nonexistent/retnetd.conf"), {}, "/nonexistent/retnetd.conf"),
        ]
        for args, env, want in cases:
            with self.subTest(args=args, env=env):
                rc, out, err, _ = run(*args, env=env)
                self.assertEqual(rc, 2, out + err)
                self.assertIn(want, err)

    def test_help(self):
        rc, out, _, _ = run("--help")
        self.assertEqual(rc, 0)
        for flag in ("--config", "--check-config", "--port", "--state-dir", "--log-format"):
            self.assertIn(flag, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
