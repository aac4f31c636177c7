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
# What a shell expects around it: users, a writable /tmp, home directories.
mkdir -p "$example/rootfs/etc" "$example/rootfs/root" "$example/rootfs/home" \
    "$example/rootfs/var" "$example/rootfs/tmp"
chmod 1777 "$example/rootfs/tmp"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/home:/bin/false' \
    > "$example/rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' > "$example/rootfs/etc/group"
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
# The engine: a systemd service where systemd runs, else a background daemon. Either
# way a running dockyardd is restarted onto this code; its containers keep running
# under their monitor.
sock=/run/dockyard.sock
if [ -d /run/systemd/system ]; then
    cat > /etc/systemd/system/dockyardd.service <<UNIT
[Unit]
Description=Dockyard container engine
After=network-online.target

[Service]
ExecStart=/usr/local/bin/dockyardd --pidfile /run/dockyardd.pid
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable -q dockyardd
    systemctl restart dockyardd
else
    pidfile=/run/dockyardd.pid
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        old=$(cat "$pidfile")
        kill -TERM "$old"
        left=300  # 30 s, then it is killed (its containers live on under the monitor)
        while kill -0 "$old" 2>/dev/null; do
            left=$((left - 1))
            [ "$left" -gt 0 ] || { kill -KILL "$old"; break; }
            sleep 0.1
        done
    fi
    setsid /usr/local/bin/dockyardd --pidfile "$pidfile" >>/var/log/dockyardd.log 2>&1 </dev/null &
fi
api() {  # method path [curl options...]
    m=$1 p=$2
    shift 2
    curl -sf --unix-socket "$sock" -X "$m" "$@" "http://localhost$p"
}
tries=200
until api GET /_ping >/dev/null 2>&1; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || { echo "dockyardd did not start: see /var/log/dockyardd.log" >&2; exit 1; }
    sleep 0.1
done

# A first image, made here from Debian's busybox-static (so no registry is needed), and
# named for what it is rather than after Docker Hub's busybox.
if ! api GET /images/dockyard/busybox:latest/json >/dev/null 2>&1; then
    tar -C "$example/rootfs" -c . | api POST \
        '/images/create?fromSrc=-&repo=dockyard/busybox&tag=latest&changes=CMD%20%5B%22sh%22%5D' \
        -H 'Content-Type: application/x-tar' --data-binary @- >/dev/null
fi
echo "Dockyard is installed: $(command -v dockyard), dockyardd on $sock, image dockyard/busybox"
