#!/usr/bin/env bash
# Runs the Autobahn WebSocket conformance suite (autobahntestsuite, fuzzingclient mode)
# against a WebSocket server, and leaves its reports (index.json, one file per case) in
# OUTDIR.
#
#   scripts/autobahn.sh URL OUTDIR [CASES]
#   scripts/autobahn.sh ws://127.0.0.1:8080 target/autobahn-report
#   scripts/autobahn.sh ws://127.0.0.1:8080 target/autobahn-report '["9.*"]'
#
# CASES is a JSON list (default: cases 1 to 7, 9 and 10; 12 and 13 are permessage-deflate,
# which coop-echo declines). The suite is Python 2 code: it is installed from PyPI, once,
# into target/autobahn (or $AUTOBAHN_DIR) with `python2.7 -m pip install --target`; a
# pyenv Python 2.7 is used as PYENV_VERSION=2.7.18 unless PYENV_VERSION says otherwise.
set -euo pipefail

if [ $# -lt 2 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
url=$1
outdir=$2
cases=${3:-'["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]'}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${AUTOBAHN_DIR:-$root/target/autobahn}
export PYENV_VERSION=${PYENV_VERSION:-2.7.18}

if [ ! -f "$dir/autobahntestsuite/wstest.py" ]; then
  python2.7 -m pip install --quiet --disable-pip-version-check --target "$dir" autobahntestsuite
fi

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
cat > "$outdir/spec.json" <<SPEC
{
  "outdir": "$outdir",
  "servers": [{"agent": "server", "url": "$url"}],
  "cases": $cases,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
SPEC
# site.addsitedir, not PYTHONPATH: zope.interface is a namespace package, found only
# through the .pth file that pip puts beside it.
cd "$outdir"
exec python2.7 -c "
import site, sys
site.addsitedir('$dir')
sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', 'spec.json']
from autobahntestsuite.wstest import run
run()
"
