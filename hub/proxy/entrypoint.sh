#!/bin/sh
# Read the proxy's API token from a file (mounted from the hub host), so that it is never in
# the container's environment as given to docker, nor in any rendered file.
set -eu
if [ -n "${CONFIGPROXY_AUTH_TOKEN_FILE:-}" ]; then
    CONFIGPROXY_AUTH_TOKEN=$(cat "$CONFIGPROXY_AUTH_TOKEN_FILE")
    export CONFIGPROXY_AUTH_TOKEN
fi
exec "$@"
