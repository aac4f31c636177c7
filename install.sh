#!/bin/sh
# Sets up Dockyard on Debian 12, as root: the Debian packages it needs, a virtual
# environment under /opt/dockyard, and its commands in /usr/local/bin.
set -eu
src=$(cd "$(dirname "$0")" && pwd)
prefix=${DOCKYARD_PREFIX:-/opt/dockyard}
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    python3 python3-venv libseccomp2 iproute2 util-linux procps curl openssl \
    busybox-static tini runc crun time skopeo docker-registry docker.io >/dev/null

# Debian's own interpreter: it starts several times faster than a pyenv shim.
[ -x "$prefix/bin/python" ] || /usr/bin/python3 -m venv "$prefix"
"$prefix/bin/pip" install -q --disable-pip-version-check -e "$src[test]"
# Byte-compile now: every container start imports these modules.
"$prefix/bin/python" -m compileall -q "$src/src" >/dev/null
# Our own launchers rather than pip's: pip's import re, and site processing costs
# milliseconds too; both would show in every container start.
site=$("$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
launcher() {  # command module
    rm -f "/usr/local/bin/$1"
    printf '%s\n' "#!$prefix/bin/python -S" "import sys" \
        "sys.path[:0] = [\"$src/src\", \"$site\"]" \
        "from $2 import main" "sys.exit(main())" > "/usr/local/bin/$1"
    chmod 755 "/usr/local/bin/$1"
}
launcher dockyard-runtime dockyard.runtime.cli
launcher dockyard dockyard.cli.main
launcher dockyardd dockyard.daemon.main

# An example bundle from Debian's busybox-static, so a first container needs no registry.
example=/var/lib/dockyard/examples/busybox
if [ ! -x "$example/rootfs/bin/busybox" ]; then
    mkdir -p "$example/rootfs/bin"
    cp /bin/busybox "$example/rootfs/bin/busybox"
    chroot "$example/rootfs" /bin/busybox --install -s /bin
fi
rm -f "$example/config.json"
dockyard-runtime spec --bundle "$example"
"$prefix/bin/python" - "$example/config.json" <<'PY'
import json, sys
path = sys.argv[1]
cfg = json.load(open(path))
cfg["process"]["terminal"] = False
cfg["process"]["args"] = ["sh", "-c", 'echo "hello from $(hostname), I am pid $$"; ps']
json.dump(cfg, open(path, "w"), indent=1)
PY
echo "Dockyard is installed: $(command -v dockyard-runtime)"
