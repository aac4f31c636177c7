"""`dockyard run` and `dockyard create`: docker's container flags turned into the
create request, pulling the image when it is missing, and for `run` attaching, starting
and exiting with the container's status (125/126/127 as docker when it cannot)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from dockyard.cli.command import Bytes, Command, Duration, FlagValue, GoInt, StatusError, min_args
from dockyard.cli.connection import client
from dockyard.cli.containers import env_list
from dockyard.cli.streams import tty_size
from dockyard.errors import DockyardError, NotFound


class _Cpus(FlagValue):
    name = "decimal"

    def parse(self, text: str) -> int:
        try:
            return int(round(float(text) * 1e9))
        except ValueError:
            raise ValueError(f"failed to parse {text} as a rational number") from None


class _Ulimit(FlagValue):
    name = "ulimit"

    def parse(self, text: str) -> dict[str, Any]:
        name, eq, limits = text.partition("=")
        if not eq or not name:
            raise ValueError(f"invalid ulimit argument: {text}")
        soft, _, hard = limits.partition(":")
        try:
            s = int(soft)
            h = int(hard) if hard else s
        except ValueError:
            raise ValueError(f"invalid ulimit argument: {text}") from None
        if s > h:
            raise ValueError(f"ulimit soft limit must be less than or equal to hard limit: "
                             f"{s} > {h}")
        return {"Name": name, "Soft": s, "Hard": h}


class _Attach(FlagValue):
    name = "list"

    def parse(self, text: str) -> str:
        if text.lower() not in ("stdin", "stdout", "stderr"):
            raise ValueError("valid streams are STDIN, STDOUT and STDERR")
        return text.lower()


def _mount(text: str) -> dict[str, Any]:
    """--mount type=bind,source=/a,target=/b,readonly (docker's csv form)."""
    m: dict[str, Any] = {"Type": "volume"}
    for field in text.split(","):
        key, eq, value = field.partition("=")
        key = key.strip().lower()
        if key in ("type",):
            m["Type"] = value
        elif key in ("source", "src"):
            m["Source"] = value
        elif key in ("target", "destination", "dst"):
            m["Target"] = value
        elif key in ("readonly", "ro"):
            m["ReadOnly"] = not eq or value.lower() in ("1", "true")
        elif key == "bind-propagation":
            m.setdefault("BindOptions", {})["Propagation"] = value
        elif key == "tmpfs-size":
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = Bytes().parse(value)
        elif key == "tmpfs-mode":
            m.setdefault("TmpfsOptions", {})["Mode"] = int(value, 8)
        elif key == "volume-nocopy":
            m.setdefault("VolumeOptions", {})["NoCopy"] = not eq or value.lower() in ("1", "true")
        elif key == "consistency":
            m["Consistency"] = value
        else:
            raise StatusError(f"invalid argument \"{text}\" for \"--mount\" flag: unexpected "
                              f"key '{key}' in '{field}'", 125)
    if "Target" not in m:
        raise StatusError(f"invalid argument \"{text}\" for \"--mount\" flag: target is "
                          "required", 125)
    return m


def _labels(values: tuple[str, ...], files: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    items: list[str] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                items += [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as exc:
            raise StatusError(f"open {path}: {(exc.strerror or str(exc)).lower()}", 125) from None
    for item in [*items, *values]:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The flags `run` and `create` share, in docker's names."""
    opts = [
        click.option("-a", "--attach", multiple=True, type=_Attach(), help="Attach to STDIN, STDOUT or STDERR"),
        click.option("--add-host", multiple=True, metavar="list", help="Add a custom host-to-IP mapping (host:ip)"),
        click.option("--cap-add", multiple=True, metavar="list", help="Add Linux capabilities"),
        click.option("--cap-drop", multiple=True, metavar="list", help="Drop Linux capabilities"),
        click.option("--cgroup-parent", metavar="string", help="Optional parent cgroup for the container"),
        click.option("--cgroupns", metavar="string", help="Cgroup namespace to use (host|private)"),
        click.option("--cpu-shares", "-c", type=GoInt(), metavar="int", help="CPU shares (relative weight)"),
        click.option("--cpus", type=_Cpus(), metavar="decimal", help="Number of CPUs"),
        click.option("--cpuset-cpus", metavar="string", help="CPUs in which to allow execution (0-3, 0,1)"),
        click.option("--cpuset-mems", metavar="string", help="MEMs in which to allow execution (0-3, 0,1)"),
        click.option("--detach-keys", metavar="string", help="Override the key sequence for detaching a container"),
        click.option("--dns", multiple=True, metavar="list", help="Set custom DNS servers"),
        click.option("--dns-option", multiple=True, metavar="list", help="Set DNS options"),
        click.option("--dns-search", multiple=True, metavar="list", help="Set custom DNS search domains"),
        click.option("--domainname", metavar="string", help="Container NIS domain name"),
        click.option("--entrypoint", metavar="string", help="Overwrite the default ENTRYPOINT of the image"),
        click.option("-e", "--env", multiple=True, metavar="list", help="Set environment variables"),
        click.option("--env-file", multiple=True, metavar="list", help="Read in a file of environment variables"),
        click.option("--group-add", multiple=True, metavar="list", help="Add additional groups to join"),
        click.option("--health-cmd", metavar="string", help="Command to run to check health"),
        click.option("--health-interval", type=Duration(), metavar="duration", help="Time between running the check (ms|s|m|h) (default 0s)"),
        click.option("--health-retries", type=GoInt(), metavar="int", help="Consecutive failures needed to report unhealthy"),
        click.option("--health-start-interval", type=Duration(), metavar="duration", help="Time between running the check during the start period (ms|s|m|h) (default 0s)"),
        click.option("--health-start-period", type=Duration(), metavar="duration", help="Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)"),
        click.option("--health-timeout", type=Duration(), metavar="duration", help="Maximum time to allow one check to run (ms|s|m|h) (default 0s)"),
        click.option("-h", "--hostname", metavar="string", help="Container host name"),
        click.option("--init", is_flag=True, default=None, help="Run an init inside the container that forwards signals and reaps processes"),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached"),
        click.option("--ipc", metavar="string", help="IPC mode to use"),
        click.option("-l", "--label", multiple=True, metavar="list", help="Set meta data on a container"),
        click.option("--label-file", multiple=True, metavar="list", help="Read in a line delimited file of labels"),
        click.option("--log-driver", metavar="string", help="Logging driver for the container"),
        click.option("--log-opt", multiple=True, metavar="list", help="Log driver options"),
        click.option("-m", "--memory", type=Bytes(), metavar="bytes", help="Memory limit"),
        click.option("--memory-reservation", type=Bytes(), metavar="bytes", help="Memory soft limit"),
        click.option("--memory-swap", type=Bytes(allow_unlimited=True), metavar="bytes", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
        click.option("--mount", multiple=True, metavar="mount", help="Attach a filesystem mount to the container"),
        click.option("--name", metavar="string", help="Assign a name to the container"),
        click.option("--network", "--net", metavar="network", help="Connect a container to a network"),
        click.option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK"),
        click.option("--oom-kill-disable", is_flag=True, help="Disable OOM Killer"),
        click.option("--pid", metavar="string", help="PID namespace to use"),
        click.option("--pids-limit", type=GoInt(), metavar="int", help="Tune container pids limit (set -1 for unlimited)"),
        click.option("--platform", metavar="string", help="Set platform if server is multi-platform capable"),
        click.option("--privileged", is_flag=True, help="Give extended privileges to this container"),
        click.option("--pull", default="missing", metavar="string", help='Pull image before running ("always", "missing", "never")'),
        click.option("-q", "--quiet", is_flag=True, help="Suppress the pull output"),
        click.option("--read-only", is_flag=True, help="Mount the container's root filesystem as read only"),
        click.option("--restart", default="no", metavar="string", help='Restart policy to apply when a container exits (default "no")'),
        click.option("--rm", is_flag=True, help="Automatically remove the container and its associated anonymous volumes when it exits"),
        click.option("--runtime", metavar="string", help="Runtime to use for this container"),
        click.option("--security-opt", multiple=True, metavar="list", help="Security Options"),
        click.option("--shm-size", type=Bytes(), metavar="bytes", help="Size of /dev/shm"),
        click.option("--stop-signal", metavar="string", help="Signal to stop the container"),
        click.option("--stop-timeout", type=GoInt(), metavar="int", help="Timeout (in seconds) to stop a container"),
        click.option("--sysctl", multiple=True, metavar="map", help="Sysctl options"),
        click.option("--tmpfs", multiple=True, metavar="list", help="Mount a tmpfs directory"),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY"),
        click.option("--ulimit", multiple=True, type=_Ulimit(), metavar="ulimit", help="Ulimit options"),
        click.option("-u", "--user", metavar="string", help='Username or UID (format: "<name|uid>[:<group|gid>]")'),
        click.option("--userns", metavar="string", help="User namespace to use"),
        click.option("--uts", metavar="string", help="UTS namespace to use"),
        click.option("-v", "--volume", multiple=True, metavar="list", help="Bind mount a volume"),
        click.option("--volumes-from", multiple=True, metavar="list", help="Mount volumes from the specified container(s)"),
        click.option("-w", "--workdir", metavar="string", help="Working directory inside the container"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_config(o: dict[str, Any], image: str, cmd: list[str], detach: bool) -> dict[str, Any]:
    """docker's create request body from the parsed flags."""
    attach = set(o["attach"])
    if detach and attach:
        raise StatusError("Conflicting options: -a and -d", 125)
    if not detach and not attach:
        attach = {"stdout", "stderr"} | ({"stdin"} if o["interactive"] else set())
    health_opts = [o["health_cmd"], o["health_interval"], o["health_timeout"],
                   o["health_retries"], o["health_start_period"], o["health_start_interval"]]
    healthcheck: dict[str, Any] | None = None
    if o["no_healthcheck"]:
        if any(v is not None for v in health_opts):
            raise StatusError("--no-healthcheck conflicts with --health-* options", 125)
        healthcheck = {"Test": ["NONE"]}
    elif any(v is not None for v in health_opts):
        for flag, v in (("--health-interval", o["health_interval"]),
                        ("--health-timeout", o["health_timeout"]),
                        ("--health-start-period", o["health_start_period"]),
                        ("--health-start-interval", o["health_start_interval"])):
            if v is not None and v < 0:
                raise StatusError(f"{flag} cannot be negative", 125)
        if o["health_retries"] is not None and o["health_retries"] < 0:
            raise StatusError("--health-retries cannot be negative", 125)
        healthcheck = {"Test": ["CMD-SHELL", o["health_cmd"]] if o["health_cmd"] else None}
        # Zero durations and counts are left out, as Go's omitempty leaves them.
        for key, value in (("Interval", o["health_interval"]), ("Timeout", o["health_timeout"]),
                           ("StartPeriod", o["health_start_period"]),
                           ("StartInterval", o["health_start_interval"]),
                           ("Retries", o["health_retries"])):
            if value:
                healthcheck[key] = value
        if healthcheck["Test"] is None:
            del healthcheck["Test"]
    restart_name, _, retries = (o["restart"] or "no").partition(":")
    restart = {"Name": restart_name, "MaximumRetryCount": 0}
    if retries:
        try:
            restart["MaximumRetryCount"] = int(retries)
        except ValueError:
            raise StatusError("invalid restart policy format: maximum retry count must be "
                              "an integer", 125) from None
    if o["rm"] and restart["Name"] not in ("", "no"):
        raise StatusError("Conflicting options: --restart and --rm", 125)
    entrypoint: list[str] | None = None
    if o["entrypoint"] is not None:
        entrypoint = [o["entrypoint"]] if o["entrypoint"] else [""]
    tmpfs = {}
    for t in o["tmpfs"]:
        path, _, opts = t.partition(":")
        tmpfs[path] = opts
    sysctls = {}
    for s in o["sysctl"]:
        k, eq, v = s.partition("=")
        if not eq:
            raise StatusError(f'invalid argument "{s}" for "--sysctl" flag: sysctl \'{s}\' is '
                              "not allowed", 125)
        sysctls[k] = v
    log_opts = {}
    for lo in o["log_opt"]:
        k, _, v = lo.partition("=")
        log_opts[k] = v
    extra_hosts = [h.replace("=", ":", 1) if "=" in h else h for h in o["add_host"]]
    network = o["network"] or "default"
    # Keys in the order and with the nulls the docker CLI sends, so that inspect shows the
    # same document for a container either made; optional ones only when set.
    host_config: dict[str, Any] = {
        "Binds": list(o["volume"]) or None,
        "ContainerIDFile": "",
        "LogConfig": {"Type": o["log_driver"] or "", "Config": log_opts},
        "NetworkMode": network,
        "PortBindings": {},
        "RestartPolicy": restart,
        "AutoRemove": o["rm"],
        "VolumeDriver": "",
        "VolumesFrom": list(o["volumes_from"]) or None,
        # As docker: a TTY starts at our terminal's size (then follows it once attached).
        "ConsoleSize": tty_size() if o["tty"] else [0, 0],
        "CapAdd": [_capability(c) for c in o["cap_add"]] or None,
        "CapDrop": [_capability(c) for c in o["cap_drop"]] or None,
        "CgroupnsMode": o["cgroupns"] or "",
        "Dns": list(o["dns"]),
        "DnsOptions": list(o["dns_option"]),
        "DnsSearch": list(o["dns_search"]),
        "ExtraHosts": extra_hosts or None,
        "GroupAdd": list(o["group_add"]) or None,
        "IpcMode": o["ipc"] or "",
        "Cgroup": "",
        "Links": None,
        "OomScoreAdj": 0,
        "PidMode": o["pid"] or "",
        "Privileged": o["privileged"],
        "PublishAllPorts": False,
        "ReadonlyRootfs": o["read_only"],
        "SecurityOpt": list(o["security_opt"]) or None,
        "UTSMode": o["uts"] or "",
        "UsernsMode": o["userns"] or "",
        "ShmSize": o["shm_size"] or 0,
        "Isolation": "",
        "CpuShares": o["cpu_shares"] or 0,
        "Memory": o["memory"] or 0,
        "NanoCpus": o["cpus"] or 0,
        "CgroupParent": o["cgroup_parent"] or "",
        "BlkioWeight": 0, "BlkioWeightDevice": [], "BlkioDeviceReadBps": [],
        "BlkioDeviceWriteBps": [], "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [],
        "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
        "CpusetCpus": o["cpuset_cpus"] or "",
        "CpusetMems": o["cpuset_mems"] or "",
        "Devices": [],
        "DeviceCgroupRules": None,
        "DeviceRequests": None,
        "MemoryReservation": o["memory_reservation"] or 0,
        "MemorySwap": o["memory_swap"] or 0,
        "MemorySwappiness": -1,
        "OomKillDisable": o["oom_kill_disable"],
        "PidsLimit": o["pids_limit"] or 0,
        "Ulimits": list(o["ulimit"]),
        "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "MaskedPaths": None,
        "ReadonlyPaths": None,
        "Runtime": o["runtime"] or "",
    }
    optional = {"Mounts": [_mount(m) for m in o["mount"]] or None, "Tmpfs": tmpfs or None,
                "Sysctls": sysctls or None, "Init": o["init"]}
    host_config.update({k: v for k, v in optional.items() if v is not None})
    config: dict[str, Any] = {
        "Hostname": o["hostname"] or "",
        "Domainname": o["domainname"] or "",
        "User": o["user"] or "",
        "AttachStdin": "stdin" in attach,
        "AttachStdout": "stdout" in attach,
        "AttachStderr": "stderr" in attach,
        "Tty": o["tty"],
        "OpenStdin": o["interactive"],
        "StdinOnce": o["interactive"] and "stdin" in attach,
        "Env": env_list(o["env"], o["env_file"]),
        "Cmd": cmd or None,
        "Image": image,
        "Volumes": {},
        "WorkingDir": o["workdir"] or "",
        "Entrypoint": entrypoint,
        "OnBuild": None,
        "Labels": _labels(o["label"], o["label_file"]),
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
    if healthcheck is not None:
        config["Healthcheck"] = healthcheck
    if o["stop_signal"]:
        config["StopSignal"] = o["stop_signal"]
    if o["stop_timeout"] is not None:
        config["StopTimeout"] = o["stop_timeout"]
    return config


def _capability(name: str) -> str:
    """docker's NormalizeCapabilities: upper case with the CAP_ prefix; ALL stays ALL."""
    name = name.strip().upper()
    return name if name == "ALL" or name.startswith("CAP_") else f"CAP_{name}"


def _tagged(image: str) -> str:
    """busybox -> busybox:latest (what docker names in "Unable to find image")."""
    if "@" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:latest"


def _create(cfg: dict[str, Any], name: str | None, platform: str | None, pull: str,
            quiet: bool) -> str:
    """Create, pulling first (--pull=always) or when the image is missing, as docker."""
    from dockyard.cli.images import pull_image

    cl = client()
    image = cfg["Image"]
    if pull not in ("always", "missing", "never"):
        raise StatusError(f'invalid pull option: \'{pull}\': must be one of "always", '
                          '"missing" or "never"', 125)

    def do_pull() -> None:
        ref = _tagged(image)
        repo, _, tag = ref.rpartition(":") if "@" not in ref else (ref, "", "")
        pull_image(repo if "@" not in ref else ref, tag or None, platform, quiet, out=sys.stderr)

    if pull == "always":
        do_pull()
    try:
        created = cl.containers.create(cfg, name, platform)
    except NotFound as exc:
        if pull != "missing" or "No such image" not in str(exc):
            raise
        sys.stderr.write(f"Unable to find image '{_tagged(image)}' locally\n")
        sys.stderr.flush()
        do_pull()
        created = cl.containers.create(cfg, name, platform)
    for w in created.get("Warnings") or []:
        sys.stderr.write(f"WARNING: {w}\n")
    return created["Id"]


def _fail(cmd: str, exc: DockyardError | str, status: int = 125) -> StatusError:
    """docker run's report of a failure: "docker: <error>" and the help hint."""
    from dockyard.client.http import is_api_error

    text = str(exc)
    if isinstance(exc, DockyardError) and is_api_error(exc):
        text = f"Error response from daemon: {text}"
    return StatusError(f"dockyard: {text}\n\nRun 'dockyard {cmd} --help' for more information",
                       status)


def start_error_status(message: str) -> int:
    """docker's runStartContainerErr: 127 when the command is not found, 126 when it
    cannot be invoked, 125 otherwise."""
    if ("executable file not found" in message or "no such file or directory" in message
            or "system cannot find the file specified" in message):
        return 127
    if "permission denied" in message or "is a directory" in message:
        return 126
    return 125


@click.command(cls=Command, usage="[OPTIONS] IMAGE [COMMAND] [ARG...]", interspersed=False)
@click.option("-d", "--detach", is_flag=True, help="Run container in background and print container ID")
@click.option("--sig-proxy", is_flag=True, default=True, flag_value=True,
              help="Proxy received signals to the process (default true)")
@_options
@click.argument("args", nargs=-1, callback=min_args(1))
def run(detach: bool, sig_proxy: bool, args: tuple[str, ...], **o: Any) -> None:
    """Create and run a new container from an image"""
    image, cmd = args[0], list(args[1:])
    cfg = build_config(o, image, cmd, detach)
    if o["tty"] and cfg["AttachStdin"] and not sys.stdin.isatty():
        raise StatusError("the input device is not a TTY", 1)
    try:
        cid = _create(cfg, o["name"], o["platform"], o["pull"], o["quiet"])
    except DockyardError as exc:
        raise _fail("run", exc) from None
    cl = client()
    if detach:
        try:
            cl.containers.start(cid)
        except DockyardError as exc:
            if o["rm"]:
                try:
                    cl.containers.remove(cid, force=True)
                except DockyardError:
                    pass
            raise _fail("run", exc, start_error_status(str(exc))) from None
        click.echo(cid)
        return
    from dockyard.cli.streams import attach_and_wait

    def start_failed(exc: DockyardError) -> int:
        if o["rm"]:
            # dockerd removes an --rm container whose start failed; make sure of it.
            try:
                cl.containers.remove(cid, force=True)
            except DockyardError:
                pass
        raise _fail("run", exc, start_error_status(str(exc)))

    status = attach_and_wait(cl, cid, start=True, stdin=cfg["AttachStdin"], tty=o["tty"],
                             auto_remove=o["rm"], start_failed=start_failed,
                             detach_keys=o["detach_keys"], sig_proxy=sig_proxy)
    if status:
        raise StatusError("", status)


@click.command(cls=Command, usage="[OPTIONS] IMAGE [COMMAND] [ARG...]", interspersed=False)
@_options
@click.argument("args", nargs=-1, callback=min_args(1))
def create(args: tuple[str, ...], **o: Any) -> None:
    """Create a new container"""
    image, cmd = args[0], list(args[1:])
    # As docker create: attached to stdout and stderr unless -a says otherwise.
    cfg = build_config(o, image, cmd, detach=False)
    try:
        cid = _create(cfg, o["name"], o["platform"], o["pull"], o["quiet"])
    except DockyardError as exc:
        raise _fail("create", exc) from None
    click.echo(cid)
