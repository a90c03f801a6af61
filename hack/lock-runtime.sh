#!/usr/bin/env bash
# Regenerates requirements/runtime.txt, the image's hash-locked runtime dependencies, from
# requirements/runtime.in (every component with every CLI extra, versions from the dev lock
# requirements/constraints.txt). Run it after changing a dependency or the dev lock:
#
#   make lock-runtime      (or: bash hack/lock-runtime.sh)
#
# pip-compile (pip-tools, pinned below) comes in a virtual environment of its own under
# $MODELTRUST_CACHE (default ~/.cache/modeltrust), not in the dev lock. It asks the package
# index (pip's configuration) for every file's hash of each pinned version, all platforms,
# so the lock also installs on other architectures. The four components themselves are
# built from this tree by the Dockerfile: their file:// lines are dropped from the lock.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tools=${MODELTRUST_CACHE:-$HOME/.cache/modeltrust}/pip-tools-7.6.2
out=requirements/runtime.txt

if [[ ! -x $tools/bin/pip-compile ]]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet pip-tools==7.6.2
fi
"$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links --output-file "$out" requirements/runtime.in
awk '/^modeltrust-[a-z]+ @ file:/ { skip = 1; next }
     skip && /^    #/ { next }
     /^# WARNING: pip install will require the following package to be hashed/ { next }
     /^# Consider using a hashable URL like/ { next }
     { skip = 0; print }' "$out" > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out: $(grep -c '^[a-z]' "$out") packages, every one hash-pinned" >&2
