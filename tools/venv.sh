#!/bin/sh
# Creates the Python environment for the fixture and benchmark tools in
# build/venv (or $RETNETD_VENV) and installs tools/requirements.txt into it.
# Does nothing when everything is already installed at the pinned versions.
# Prints the environment's python at the end.
#
#   tools/venv.sh
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu tools/venv.sh   # CPU-only torch wheel
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${RETNETD_VENV:-$ROOT/build/venv}
REQ=$ROOT/tools/requirements.txt
PY=$VENV/bin/python

if [ ! -x "$PY" ]; then
    echo "venv: creating $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi

# Are all pinned requirements installed at their versions?
satisfied() {
    "$PY" - "$REQ" <<'PYEOF'
import sys, importlib.metadata as md
ok = True
for line in open(sys.argv[1]):
    line = line.split('#', 1)[0].strip()
    if not line:
        continue
    name, want = line.split('==')
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    # a local build tag (2.15.0+cpu) satisfies ==2.15.0, as pip treats it
    if have is None or have.split('+')[0] != want:
        print('venv: %s %s wanted, %s installed' % (name, want, have or 'not'), file=sys.stderr)
        ok = False
sys.exit(0 if ok else 1)
PYEOF
}

if ! satisfied; then
    "$PY" -m pip install -q --upgrade pip
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        torch_pin=$(grep -E '^torch==' "$REQ")
        "$PY" -m pip install -q --index-url "$TORCH_INDEX_URL" "$torch_pin"
    fi
    "$PY" -m pip install -q -r "$REQ"
    satisfied
fi

echo "$PY"
