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
# 0.23: with 0.19.3 an async export returning an option<string> (a source's
# checkpoint) after a fetch crashed in its post-return (out-of-bounds
# memory access, as in ComponentizeJS issue #224); 0.23.0 does not.
COMPONENTIZE_JS=0.23.0

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

# One folder per pinned version: a new pin installs from scratch beside the
# old one (npm upgrading in place can leave a broken tree), and its
# .installed stamp makes every plugin built by an older toolchain stale.
py_dir="$tools/componentize-py-$COMPONENTIZE_PY"
py="$py_dir/bin/componentize-py"
if [ ! -f "$py_dir/.installed" ]; then
  echo "guest-plugins: installing componentize-py $COMPONENTIZE_PY into $py_dir" >&2
  rm -rf "$py_dir"
  python3 -m venv "$py_dir"
  "$py_dir/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY"
  "$py" --version | grep -qx "componentize-py $COMPONENTIZE_PY" ||
    { echo "guest-plugins: $py is not componentize-py $COMPONENTIZE_PY" >&2; exit 1; }
  touch "$py_dir/.installed"
fi

js_dir="$tools/componentize-js-$COMPONENTIZE_JS"
js="$js_dir/node_modules/.bin/componentize-js"
if [ ! -f "$js_dir/.installed" ]; then
  echo "guest-plugins: installing componentize-js $COMPONENTIZE_JS into $js_dir" >&2
  rm -rf "$js_dir"
  mkdir -p "$js_dir"
  npm install --prefix "$js_dir" --no-audit --no-fund --loglevel=error \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS"
  "$js" --version | grep -qx "$COMPONENTIZE_JS" ||
    { echo "guest-plugins: $js is not componentize-js $COMPONENTIZE_JS" >&2; exit 1; }
  touch "$js_dir/.installed"
fi

# The world a plugin targets, from its manifest's `worlds = ["transform"]`.
world_of() {
  local world
  world="$(sed -n 's/^worlds = \["\([a-z]*\)"\]$/\1/p' "$1")"
  [ -n "$world" ] || { echo "guest-plugins: $1 names no single world" >&2; exit 1; }
  echo "causeway:plugin/$world-plugin@0.1.0"
}

# Whether $1 is missing or older than anything in the paths after it.
stale() {
  local target="$1"
  shift
  [ ! -f "$target" ] || [ -n "$(find "$@" -newer "$target" -not -path '*/__pycache__/*' -print -quit)" ]
}

for dir in "$root"/plugins/python/*/; do
  name="$(basename "$dir")"
  wasm="$out/$name.wasm"
  if stale "$wasm" "$dir" "$root/wit" "$py_dir/.installed"; then
    echo "guest-plugins: building $name (componentize-py)" >&2
    "$py" -d "$root/wit" -w "$(world_of "$dir/$name.toml")" componentize -p "$dir" app -o "$wasm.partial"
    mv "$wasm.partial" "$wasm"
  fi
  cp "$dir/$name.toml" "$out/$name.toml"
done

for dir in "$root"/plugins/js/*/; do
  name="$(basename "$dir")"
  wasm="$out/$name.wasm"
  if stale "$wasm" "$dir" "$root/wit" "$js_dir/.installed"; then
    echo "guest-plugins: building $name (componentize-js)" >&2
    world="$(world_of "$dir/$name.toml")"
    # A connector's fetch imports wasi:http, which the host serves under the
    # http grants; a transform gets no network, so no fetch. None serves
    # requests (fetch-event would export wasi:http/incoming-handler).
    disable=(fetch-event)
    [ "$world" != "causeway:plugin/transform-plugin@0.1.0" ] || disable+=(http)
    "$js" --wit "$root/wit" --world-name "$world" \
      --disable "${disable[@]}" -o "$wasm.partial" "$dir/app.js"
    mv "$wasm.partial" "$wasm"
  fi
  cp "$dir/$name.toml" "$out/$name.toml"
done
