#!/bin/sh
# Install Debian/Ubuntu packages in an image build: honours APT_MIRROR and trusts the extra
# CA bundle (hubops-ca.crt in the build context, empty when none is configured).
# Usage: install-os-packages.sh PACKAGE...
set -eu
if [ -n "${APT_MIRROR:-}" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
        [ -f "$f" ] || continue
        sed -i -e "s#http://deb.debian.org/debian\([ /]\)#${APT_MIRROR}\1#g" \
               -e "s#http://archive.ubuntu.com/ubuntu\([ /]\)#${APT_MIRROR}\1#g" "$f"
    done
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates "$@"
if [ -s /tmp/hubops-ca.crt ]; then
    cp /tmp/hubops-ca.crt /usr/local/share/ca-certificates/hubops-extra.crt
fi
update-ca-certificates >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/hubops-ca.crt
