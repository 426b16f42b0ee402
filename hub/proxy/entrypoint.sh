#!/bin/sh
# Start configurable-http-proxy as uid/gid 65534 after reading, as root, what only root may
# read on the hub host: the API token (never in the container's environment as given to
# docker, nor in any rendered file) and the TLS key (often 0600 root, e.g. from certbot).
# Root here holds only CHOWN, SETUID and SETGID (hubops drops the rest): the copies are made
# and locked down while root owns them, then handed to 65534 in one chown.
set -eu
if [ -n "${CONFIGPROXY_AUTH_TOKEN_FILE:-}" ]; then
    CONFIGPROXY_AUTH_TOKEN=$(cat "$CONFIGPROXY_AUTH_TOKEN_FILE")
    export CONFIGPROXY_AUTH_TOKEN
fi
if [ -n "${HUBOPS_TLS_SOURCE:-}" ] && [ -n "${HUBOPS_TLS_DIR:-}" ]; then
    mkdir -p "$HUBOPS_TLS_DIR"
    cp "$HUBOPS_TLS_SOURCE/cert.pem" "$HUBOPS_TLS_SOURCE/key.pem" "$HUBOPS_TLS_DIR/"
    chmod 0400 "$HUBOPS_TLS_DIR/cert.pem" "$HUBOPS_TLS_DIR/key.pem"
    chmod 0500 "$HUBOPS_TLS_DIR"
    chown -R 65534:65534 "$HUBOPS_TLS_DIR"
fi
if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
fi
exec "$@"
