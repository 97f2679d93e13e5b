# shellcheck shell=bash
# hvac, the HashiCorp Vault Python client, for the tests of the Vault KV v2
# compatible API (tests/all/vault_api.rs).
#
# Sourced by .ci/run (under `set -euo pipefail`); defines:
#   setup_hvac  makes a virtual environment with hvac from PyPI (once; a
#               venv that imports hvac is reused) and exports
#                 SECRETS_TEST_HVAC_PYTHON  the venv's python
#
# For development: `source .ci/hvac.sh && setup_hvac`, then run the tests.
# The venv lives in target/ (HVAC_VENV overrides), outside the sources.

setup_hvac() {
    local venv="${HVAC_VENV:-$PWD/target/hvac-venv}"
    echo "hvac: venv $venv"
    if ! "$venv/bin/python" -c 'import hvac' >/dev/null 2>&1; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check 'hvac>=2,<3'
    fi
    "$venv/bin/python" -c 'import importlib.metadata as m; print("hvac:", m.version("hvac"))'
    export SECRETS_TEST_HVAC_PYTHON="$venv/bin/python"
}
