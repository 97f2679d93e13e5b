# shellcheck shell=bash
# The AWS Secrets Manager emulator for the tests of the awssm backend
# (tests/all/awssm.rs): moto's server from PyPI, which serves Secrets
# Manager over the real JSON protocol (it accepts any SigV4 signature; no
# 64 KiB limit, no throttling: the backend enforces what it must itself).
#
# Sourced by .ci/run (under `set -euo pipefail`); defines:
#   start_aws  installs moto into a venv if missing (see emulators.sh),
#              starts moto_server on 127.0.0.1 on a free port, waits until
#              it answers, and exports
#                SECRETS_TEST_AWSSM_URL  awssm://us-east-1?endpoint=http://127.0.0.1:PORT
#              (moto checks no signature; the tests give the backend dummy
#              keys in code, so no AWS variable is exported).
#   stop_aws   stops it; safe to call when start_aws never ran or failed.
#
# For development: `source .ci/aws.sh && start_aws`, run the tests, then
# `stop_aws`.

# shellcheck source=.ci/emulators.sh
source "$(dirname "${BASH_SOURCE[0]}")/emulators.sh"

_AWS_PID=""
_AWS_DIR=""

start_aws() {
    echo "aws: starting moto"
    local venv port
    venv="$(_emulator_venv moto-5.2.5 moto==5.2.5 flask flask-cors)"
    _AWS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/aws-test.XXXXXX")"
    port="$(_emulator_free_port)"
    # moto's own moto_server, but one request at a time (see the script).
    "$venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/moto_server.py" 127.0.0.1 "$port" \
        >"$_AWS_DIR/server.log" 2>&1 </dev/null &
    _AWS_PID=$!
    echo "aws: moto pid $_AWS_PID on http://127.0.0.1:$port"
    if ! _emulator_wait aws "$_AWS_PID" "http://127.0.0.1:$port/moto-api/" "$_AWS_DIR/server.log"; then
        stop_aws
        return 1
    fi
    export SECRETS_TEST_AWSSM_URL="awssm://us-east-1?endpoint=http://127.0.0.1:$port"
    echo "aws: ready: SECRETS_TEST_AWSSM_URL=$SECRETS_TEST_AWSSM_URL"
}

stop_aws() {
    _emulator_stop aws "${_AWS_PID:-}"
    _AWS_PID=""
    if [ -n "${_AWS_DIR:-}" ]; then
        rm -rf "$_AWS_DIR"
        _AWS_DIR=""
    fi
    unset SECRETS_TEST_AWSSM_URL
    return 0
}
