#!/usr/bin/env bash
# Shared set-up for bin/sagaway and ./run-tests: system packages, a virtualenv, the package itself.
# Idempotent and quiet when everything is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAGAWAY_VENV:-$ROOT/.venv}"
EXTRAS="${SAGAWAY_EXTRAS:-}"

apt_install() {
    # Installs Debian packages that are missing; needs root (as on CI and the dev machines).
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
        local sudo=""
        [[ $(id -u) -ne 0 ]] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_venv() {
    local python="${PYTHON:-python3}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "bootstrap: creating virtualenv $VENV" >&2
        "$python" -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
    fi
    local stamp="$VENV/.sagaway-installed${EXTRAS:+-$EXTRAS}"
    if [[ -z "$EXTRAS" ]]; then
        # An install with extras (./run-tests makes one) holds the plain install too.
        local with_extras
        for with_extras in "$VENV"/.sagaway-installed-*; do
            if [[ -f "$with_extras" && ! "$ROOT/pyproject.toml" -nt "$with_extras" ]]; then
                stamp="$with_extras"
            fi
        done
    fi
    if [[ ! -f "$stamp" || "$ROOT/pyproject.toml" -nt "$stamp" ]]; then
        echo "bootstrap: installing sagaway${EXTRAS:+[$EXTRAS]} into $VENV" >&2
        "$VENV/bin/pip" install -q -e "$ROOT${EXTRAS:+[$EXTRAS]}" 2>&1 \
            | grep -vE "^(WARNING: Location|  )|BuildBackendWarning|^!!|^\s*$" >&2 || true
        "$VENV/bin/python" -c "import orchestrator" || { echo "bootstrap: install failed" >&2; exit 1; }
        touch "$stamp"
    fi
}
