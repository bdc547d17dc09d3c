# Sourced by the scripts that need Python packages from PyPI (the SDK test,
# the real-LLM server): one way to make a venv hold exact versions.
#
#   ensure_venv WHAT VENV SPEC...
#
# WHAT names the purpose in messages ("the openai package"); VENV is created
# or reused; each SPEC is `name==version`, or `--no-deps name==version` for a
# package installed without its dependencies. Returns when every package is
# at its version; exits 3 (cannot install: no python3 or venv, PyPI
# unreachable) otherwise, with the reason on stderr. pip's output goes to
# stderr.

ensure_venv() {
    local what=$1 venv=$2
    shift 2
    local all=() plain=() nodeps=() next_nodeps=0 spec
    for spec in "$@"; do
        if [ "$spec" = --no-deps ]; then
            next_nodeps=1
            continue
        fi
        all+=("$spec")
        if [ $next_nodeps = 1 ]; then nodeps+=("$spec"); else plain+=("$spec"); fi
        next_nodeps=0
    done
    local me
    me=$(basename "$0")
    cannot_install() {
        echo "$me: cannot install $what: $*" >&2
        exit 3
    }
    installed() {
        [ -x "$venv/bin/python" ] && "$venv/bin/python" - "${all[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if all(version(n) == v for n, v in (s.split("==") for s in sys.argv[1:])) else 1)
PY
    }
    installed && return 0
    # Tests run in parallel and may all find the venv missing: one installs,
    # the others wait for it and then find it ready.
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
    installed && return 0
    command -v python3 >/dev/null || cannot_install "python3 not found"
    if [ ! -x "$venv/bin/python" ]; then
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv" >&2 || cannot_install "python3 -m venv $venv failed (is python3-venv installed?)"
    fi
    # Said out loud: a first `cargo test` would otherwise sit silent while
    # pip downloads (pip's own progress follows on stderr).
    echo "$me: installing $what into $venv from PyPI (once; later runs reuse it): ${all[*]}" >&2
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
    if [ ${#plain[@]} -gt 0 ]; then
        "${pip[@]}" install --progress-bar on "${plain[@]}" >&2 \
            || cannot_install "pip install ${plain[*]} failed (PyPI unreachable?)"
    fi
    if [ ${#nodeps[@]} -gt 0 ]; then
        "${pip[@]}" install --progress-bar on --no-deps "${nodeps[@]}" >&2 \
            || cannot_install "pip install --no-deps ${nodeps[*]} failed (PyPI unreachable?)"
    fi
    installed || cannot_install "installed but not importable in $venv"
}
