# shellcheck shell=bash
# The GCP Secret Manager emulator for the tests of the gcpsm backend
# (tests/all/gcpsm.rs): drongo from PyPI, which serves Secret Manager's v1
# REST API (no auth, etags ignored, no 64 KiB limit: the backend enforces
# what it must itself).
#
# Sourced by .ci/run (under `set -euo pipefail`); defines:
#   start_gcp  installs drongo into a venv if missing (see emulators.sh),
#              starts it on 127.0.0.1 on a free port, waits for
#              /drongo/health, and exports
#                SECRETS_TEST_GCPSM_URL  gcpsm://test-project?endpoint=http://127.0.0.1:PORT
#   stop_gcp   stops it; safe to call when start_gcp never ran or failed.
#
# For development: `source .ci/gcp.sh && start_gcp`, run the tests, then
# `stop_gcp`.

# shellcheck source=.ci/emulators.sh
source "$(dirname "${BASH_SOURCE[0]}")/emulators.sh"

_GCP_PID=""
_GCP_DIR=""

start_gcp() {
    echo "gcp: starting drongo"
    local venv port
    venv="$(_emulator_venv drongo-0.8.0 drongo==0.8.0)"
    _GCP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/gcp-test.XXXXXX")"
    port="$(_emulator_free_port)"
    "$venv/bin/drongo" server --host 127.0.0.1 --port "$port" >"$_GCP_DIR/server.log" 2>&1 </dev/null &
    _GCP_PID=$!
    echo "gcp: drongo pid $_GCP_PID on http://127.0.0.1:$port"
    if ! _emulator_wait gcp "$_GCP_PID" "http://127.0.0.1:$port/drongo/health" "$_GCP_DIR/server.log"; then
        stop_gcp
        return 1
    fi
    export SECRETS_TEST_GCPSM_URL="gcpsm://test-project?endpoint=http://127.0.0.1:$port"
    echo "gcp: ready: SECRETS_TEST_GCPSM_URL=$SECRETS_TEST_GCPSM_URL"
}

stop_gcp() {
    _emulator_stop gcp "${_GCP_PID:-}"
    _GCP_PID=""
    if [ -n "${_GCP_DIR:-}" ]; then
        rm -rf "$_GCP_DIR"
        _GCP_DIR=""
    fi
    unset SECRETS_TEST_GCPSM_URL
    return 0
}
