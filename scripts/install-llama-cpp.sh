#!/usr/bin/env bash
# Install llama-cpp-python (swell's CPU LLM engine) into a virtual environment, building its
# wheel at most once per machine: the wheel compiles llama.cpp from source (~6 minutes on two
# cores), so it is kept in a cache and reused by every later install.
#
#   scripts/install-llama-cpp.sh .venv/bin/python
#
# Environment:
#   SWELL_WHEEL_CACHE   where built wheels are kept (default: ~/.cache/swell/wheels)
#   CMAKE_ARGS          passed through to the build. The default on x86_64 is a portable AVX2
#                       build: a native build (-march=native) uses AMX and AVX-512 FP16 where
#                       the build machine has them, and crashed in llama_decode on such a VM.
#                       Each CMAKE_ARGS gets a cache folder of its own.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36

if [ $# -ne 1 ]; then
    echo "usage: $0 PATH/TO/VENV/bin/python" >&2
    exit 2
fi
PY=$1
if [ ! -x "$PY" ]; then
    echo "error: '$PY' is not an executable Python interpreter; pass the venv's bin/python" >&2
    exit 2
fi

if [ -z "${CMAKE_ARGS:-}" ] && [ "$(uname -m)" = x86_64 ]; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi
export CMAKE_ARGS="${CMAKE_ARGS:-}"
BUILD_KEY=$(printf '%s' "$CMAKE_ARGS" | sha256sum | cut -c1-12)
CACHE=${SWELL_WHEEL_CACHE:-$HOME/.cache/swell/wheels}/$BUILD_KEY
mkdir -p "$CACHE"

# pip itself decides whether a cached wheel suits this interpreter and platform (the wheel is
# tagged py3-none-<platform>: llama-cpp-python loads its C library through ctypes).
install_from_cache() {
    "$PY" -m pip install --no-index --only-binary :all: --find-links "$CACHE" --no-deps \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" "$@"
}

if install_from_cache --dry-run --ignore-installed --quiet >/dev/null 2>&1; then
    echo "using the llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} wheel cached in $CACHE"
else
    echo "building llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION} into $CACHE (takes minutes)"
    start=$(date +%s)
    # Build in a private directory and move the wheel into place only when complete, so that an
    # interrupted build never leaves a half-written wheel that a later run would take for a hit.
    BUILD_DIR=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf "$BUILD_DIR"' EXIT
    "$PY" -m pip wheel --no-cache-dir --no-deps "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -w "$BUILD_DIR"
    built=$(find "$BUILD_DIR" -maxdepth 1 -name "llama_cpp_python-*.whl" | head -n 1)
    if [ -z "$built" ]; then
        echo "error: pip wheel finished but left no llama_cpp_python wheel in $BUILD_DIR" >&2
        exit 1
    fi
    mv "$built" "$CACHE/"
    echo "built $CACHE/$(basename "$built") in $(($(date +%s) - start)) s"
fi

# The pure-Python dependencies of llama-cpp-python, installed the ordinary way.
"$PY" -m pip install "numpy>=1.20.0" "typing-extensions>=4.5.0" "diskcache>=5.6.1" "jinja2>=2.11.3"
# Reinstall when the venv holds a wheel of another build (pip would call it satisfied).
STAMP="$(dirname "$PY")/../.llama-cpp-build"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$LLAMA_CPP_PYTHON_VERSION-$BUILD_KEY" ]; then
    install_from_cache --force-reinstall
    echo "$LLAMA_CPP_PYTHON_VERSION-$BUILD_KEY" > "$STAMP"
fi
"$PY" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "installed")'
