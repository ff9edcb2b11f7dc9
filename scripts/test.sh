#!/usr/bin/env bash
# Every test of Geyser, on a fresh Debian machine: installs what is missing
# (beanstalkd, the Python package and its test tools), then runs the Rust and
# Python suites against real servers. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v beanstalkd >/dev/null 2>&1 || missing+=(beanstalkd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python3 -m pip install -q -e '.[test]'

if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
python3 -m pytest -q tests/python

# marshmallow 3 as well as 4: the API and lifecycle tests again, in a virtualenv that
# sees this installation but pins marshmallow 3.
venv=$(mktemp -d)/mm3
python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q 'marshmallow>=3.13,<4'
"$venv/bin/python" -c 'import importlib.metadata as m, sys; v = m.version("marshmallow"); print("marshmallow", v); sys.exit(not v.startswith("3."))'
"$venv/bin/python" -m pytest -q tests/python/test_api.py tests/python/test_lifecycle.py -k "not beanstalkd"
