# shellcheck shell=bash
# Shared by .ci/aws.sh and .ci/gcp.sh: a Python venv per emulator, kept
# between runs in ${SECRETS_CI_CACHE:-$HOME/.cache/secrets-ci} (created and
# filled from PyPI when missing or incomplete). Shared with .ci/openbao.sh
# too: a free loopback port, and stopping a server by its pid.

_emulator_venv() {
    # _emulator_venv NAME PIP_SPEC... : prints the venv's directory.
    local name="$1"
    shift
    local dir="${SECRETS_CI_CACHE:-$HOME/.cache/secrets-ci}/$name"
    if [ ! -f "$dir/.complete" ]; then
        echo "$name: installing into $dir (pip install $*)" >&2
        rm -rf "$dir"
        mkdir -p "$(dirname "$dir")"
        python3 -m venv "$dir" >&2
        "$dir/bin/pip" install -q --disable-pip-version-check "$@" >&2
        touch "$dir/.complete"
    fi
    echo "$dir"
}

_emulator_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# _emulator_wait NAME PID URL LOG: waits up to 30 s until URL answers 200.
_emulator_wait() {
    local name="$1" pid="$2" url="$3" log="$4" i
    for i in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name: the emulator exited; its log:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        if python3 - "$url" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
        then
            echo "$name: ready after ~$((i / 5))s"
            return 0
        fi
        sleep 0.2
    done
    echo "$name: no answer from $url within 30s" >&2
    return 1
}

# _emulator_stop NAME PID: TERM, then KILL after 5 s.
_emulator_stop() {
    local name="$1" pid="$2" i
    [ -n "$pid" ] || return 0
    echo "$name: stopping pid $pid"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
