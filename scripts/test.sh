#!/usr/bin/env bash
# Every test of Geyser: installs what is missing (beanstalkd, curl, a C compiler, chromium, openssl,
# cargo-nextest, maturin, the Python package and its test tools), builds the wheel users
# install (target/test-wheel), starts PostgreSQL and Redis on loopback when they are down
# (scripts/services.sh, which installs them too), then runs the
# Rust and Python suites against real servers, and the Python API suites again under
# marshmallow 3. Runs every suite even when one fails; exits non-zero if any did.
# Usage: bash scripts/test.sh   (inside a virtualenv or not; Rust 1.85+ must be installed)
# Touches: apt packages (as root), the PostgreSQL and Redis servers scripts/services.sh
# names (each test uses a schema or key prefix of its own), ~/.cargo/bin (cargo-nextest),
# the active virtualenv or, for a system Python that refuses pip installs,
# ~/.cache/geyser-test-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore  # root in CI containers: pip's warning is noise there

# -- system packages ------------------------------------------------------------------------
missing=()
command -v beanstalkd >/dev/null 2>&1 || missing+=(beanstalkd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v cc >/dev/null 2>&1 || missing+=(gcc)  # links the crate and builds its bundled SQLite
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the dashboard's browser test (tests/python/test_dashboard_browser.py)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # throwaway CAs for the TLS tests (tests/support/tls.rs, test_store_tls.py)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust 1.85 or newer (https://rustup.rs) and run again" >&2
  exit 1
fi

# -- Python: the active virtualenv, else python3 itself, unless it is a system Python that
# refuses pip installs (PEP 668, e.g. Debian's): then a virtualenv of our own.
py=python3
if python3 -c 'import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and not in_venv else 1)'; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/geyser-test-venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  py="$venv/bin/python"
  echo "python3 is the system's; installing into $venv"
fi
"$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# The wheel users install without Rust (tests/python/test_wheel.py installs it into a fresh
# virtualenv; GEYSER_TEST_WHEEL names it), then the package itself, editable, for the suites.
# One compile serves both: with the newest maturin, as pip's own build uses, and the same
# interpreter, the editable build finds the crate compiled in target/ and only packs it.
"$py" -m pip install -q --upgrade 'maturin>=1.7,<2'
echo "building the wheel (the first build compiles the Rust crate: minutes)"
rm -rf target/test-wheel
"$py" -m maturin build --release --out target/test-wheel \
  --interpreter "$("$py" -c 'import sys; print(sys.executable)')"
GEYSER_TEST_WHEEL=$(echo target/test-wheel/geyser-*.whl)
export GEYSER_TEST_WHEEL="$PWD/$GEYSER_TEST_WHEEL"
echo "installing the package (editable) and its test tools"
"$py" -m pip install -q -e '.[test]'

failed=()

# -- the servers the store suites share: PostgreSQL (127.0.0.1:5432, database test) and
# Redis (127.0.0.1:6379). A server that cannot be started fails its suites, not the others.
bash scripts/services.sh || failed+=("services")

# -- Rust: nextest runs each test in its own process, which the beanstalkd contract suites
# need; without it the tests run one at a time.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked --quiet || echo "could not install cargo-nextest" >&2
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast || failed+=("rust")
else
  echo "cargo-nextest unavailable: running the Rust tests one at a time"
  cargo test --no-fail-fast -- --test-threads=1 || failed+=("rust")
fi

# -- The Couchbase store (cargo feature `couchbase`, not in the default build): compiled on
# every run, its tests that need no cluster run; its contract tests (ignored otherwise) run
# too when GEYSER_TEST_COUCHBASE_URL names a cluster. See docs/stores.md, "Couchbase". A
# build of its own: the feature turns on serde_json's key order for every test (cargo unifies
# features), and the suites above test what the wheel ships.
cb_ignored=()
[ -n "${GEYSER_TEST_COUCHBASE_URL:-}" ] && cb_ignored=(--run-ignored all)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast --features couchbase --lib --test couchbase_store "${cb_ignored[@]}" \
    -E 'binary(couchbase_store) | test(/^store::couchbase::/)' || failed+=("rust, couchbase")
else
  { cargo test --features couchbase --lib store::couchbase:: &&
    cargo test --no-fail-fast --features couchbase --test couchbase_store -- ${cb_ignored:+--include-ignored}; } ||
    failed+=("rust, couchbase")
fi

# -- Python --------------------------------------------------------------------------------
# Three test processes (pytest-xdist; the tests mostly wait on servers and worker processes),
# the modules with a module-wide fixture each kept on one (xdist_group). The quick soak runs
# after them on its own: its four backend pairs already run at once, and its fault timing
# is what it tests.
"$py" -m pytest -q -n 3 --dist loadgroup --durations=15 --ignore=tests/python/test_soak.py tests/python ||
  failed+=("python")
"$py" -m pytest -q tests/python/test_soak.py || failed+=("python, soak")

# -- marshmallow 3 as well as 4: the API and lifecycle suites again, with marshmallow 3
# installed into a directory put first on the path of this same interpreter (and of the
# worker processes the tests start), so it works inside a virtualenv or not.
mm3=$(mktemp -d)
trap 'rm -rf "$mm3"' EXIT
"$py" -m pip install -q --no-deps --target "$mm3" 'marshmallow>=3.13,<4'
export PYTHONPATH="$mm3${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c 'import importlib.metadata as m, sys; v = m.version("marshmallow"); print("marshmallow", v); sys.exit(not v.startswith("3."))'
"$py" -m pytest -q tests/python/test_api.py tests/python/test_lifecycle.py -k "not beanstalkd" || failed+=("python, marshmallow 3")

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all suites passed"
