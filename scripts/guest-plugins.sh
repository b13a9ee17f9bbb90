#!/usr/bin/env bash
# Builds the Python and JavaScript plugins (plugins/python/*, plugins/js/*)
# into OUT_DIR, each as NAME.wasm beside its sidecar manifest NAME.toml.
#
# It installs their toolchains first, pinned, into target/toolchains:
# componentize-py from PyPI (in a venv) and componentize-js from npm. A
# missing python3 or npm is an error, never a skip. A plugin is rebuilt only
# when its sources or the WIT changed. The tests run it (tests/languages.rs).
set -euo pipefail

COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.19.3

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: scripts/guest-plugins.sh OUT_DIR}"
tools="${CARGO_TARGET_DIR:-$root/target}/toolchains"
mkdir -p "$out" "$tools"

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "guest-plugins: '$1' is not installed; it is needed $2" >&2
    exit 1
  }
}
need python3 "to install componentize-py (Python plugins)"
need npm "to install componentize-js (JavaScript plugins)"

# One build at a time: test binaries may ask together.
exec 9>"$tools/.guest-plugins.lock"
flock 9

py="$tools/python/bin/componentize-py"
if ! "$py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY"; then
  echo "guest-plugins: installing componentize-py $COMPONENTIZE_PY into $tools/python" >&2
  python3 -m venv "$tools/python"
  "$tools/python/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY"
fi

js="$tools/node/node_modules/.bin/componentize-js"
if ! "$js" --version 2>/dev/null | grep -qx "$COMPONENTIZE_JS"; then
  echo "guest-plugins: installing componentize-js $COMPONENTIZE_JS into $tools/node" >&2
  mkdir -p "$tools/node"
  npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS"
fi

# The world a plugin targets, from its manifest's `worlds = ["transform"]`.
world_of() {
  local world
  world="$(sed -n 's/^worlds = \["\([a-z]*\)"\]$/\1/p' "$1")"
  [ -n "$world" ] || { echo "guest-plugins: $1 names no single world" >&2; exit 1; }
  echo "causeway:plugin/$world-plugin@0.1.0"
}

# Whether $1 is missing or older than anything in the folders after it.
stale() {
  local target="$1"
  shift
  [ ! -f "$target" ] || [ -n "$(find "$@" -newer "$target" -not -path '*/__pycache__/*' -print -quit)" ]
}

for dir in "$root"/plugins/python/*/; do
  name="$(basename "$dir")"
  wasm="$out/$name.wasm"
  if stale "$wasm" "$dir" "$root/wit"; then
    echo "guest-plugins: building $name (componentize-py)" >&2
    "$py" -d "$root/wit" -w "$(world_of "$dir/$name.toml")" componentize -p "$dir" app -o "$wasm.partial"
    mv "$wasm.partial" "$wasm"
  fi
  cp "$dir/$name.toml" "$out/$name.toml"
done

for dir in "$root"/plugins/js/*/; do
  name="$(basename "$dir")"
  wasm="$out/$name.wasm"
  if stale "$wasm" "$dir" "$root/wit"; then
    echo "guest-plugins: building $name (componentize-js)" >&2
    # No fetch and no wasi:http in a transform: it imports what its world allows.
    "$js" --wit "$root/wit" --world-name "$(world_of "$dir/$name.toml")" \
      --disable http fetch-event -o "$wasm.partial" "$dir/app.js"
    mv "$wasm.partial" "$wasm"
  fi
  cp "$dir/$name.toml" "$out/$name.toml"
done
