"""The service environment variables kubelet gives every container.

Pure: a function of the cluster's Services and the pod's namespace, nothing else. It follows
kubelet (``getServiceEnvVarMap`` in pkg/kubelet/kubelet_pods.go and
``pkg/kubelet/envvars``):

- The services of the pod's namespace, plus the ``kubernetes`` service of ``default``;
  with ``enableServiceLinks: false`` only the latter. Services are keyed by name, so a
  ``kubernetes`` service in the pod's own namespace wins over ``default/kubernetes``.
- Only services with a ClusterIP count (headless and ExternalName services give nothing);
  dual-stack services use their primary address (``spec.clusterIP``).
- Per service ``NAME_SERVICE_HOST``, ``NAME_SERVICE_PORT`` (first port),
  ``NAME_SERVICE_PORT_PORTNAME`` per named port, and Docker-link variables ``NAME_PORT``
  (first port) and ``NAME_PORT_<port>_<PROTO>`` with ``_PROTO``, ``_PORT``, ``_ADDR``.
  Names are upper-cased with ``-`` turned into ``_``; URLs bracket IPv6 addresses
  (``tcp://[fd00::1]:80``), as kubelet's ``net.JoinHostPort`` does.

Where kubelet is not deterministic (two services producing the same variable name: the
winner depends on Go map order), svcdns takes services in name order, lets the later one
win and reports the clash.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Iterable

from .model import Service

Key = tuple[str, str]
MASTER_NAMESPACE = "default"  # kubelet's masterServiceNamespace
MASTER_SERVICES = frozenset({"kubernetes"})
FORMATS = ("env", "json", "shell")
DEFAULT_WARN_BYTES = 128 * 1024  # a sixteenth of the usual 2 MiB ARG_MAX (argv + envp)
TOP_CONTRIBUTORS = 5
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_var_name(name: str) -> str:
    """kubelet's makeEnvVariableName: upper case, ``-`` -> ``_``."""
    return name.upper().replace("-", "_")


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def service_variables(svc: Service) -> list[tuple[str, str]]:
    """The variables one service contributes, in kubelet's order (FromServices)."""
    if not svc.cluster_ips or not svc.ports:
        return []
    ip = svc.cluster_ips[0]
    prefix = env_var_name(svc.name)
    out = [(f"{prefix}_SERVICE_HOST", ip), (f"{prefix}_SERVICE_PORT", str(svc.ports[0].port))]
    out += [(f"{prefix}_SERVICE_PORT_{env_var_name(p.name)}", str(p.port)) for p in svc.ports if p.name]
    for i, p in enumerate(svc.ports):
        proto = p.protocol.lower()
        url = f"{proto}://{_host_port(ip, p.port)}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))  # Docker special-cases the first port
        port_prefix = f"{prefix}_PORT_{p.port}_{p.protocol.upper()}"
        out += [(port_prefix, url), (f"{port_prefix}_PROTO", proto), (f"{port_prefix}_PORT", str(p.port)), (f"{port_prefix}_ADDR", ip)]
    return out


def services_for_pod(services: Iterable[Service], namespace: str, *, enable_service_links: bool = True) -> list[Service]:
    """The services kubelet turns into variables for a pod in ``namespace``, by name."""
    chosen: dict[str, Service] = {}
    for svc in services:
        if not svc.cluster_ips:  # "None" or empty: headless, ExternalName
            continue
        if svc.namespace == MASTER_NAMESPACE and svc.name in MASTER_SERVICES:
            chosen.setdefault(svc.name, svc)  # the pod's own namespace wins on a clash
        elif svc.namespace == namespace and enable_service_links:
            chosen[svc.name] = svc
    return [chosen[name] for name in sorted(chosen)]


@dataclass(frozen=True)
class Clash:
    """Two services produce the same variable; ``winner``'s value is used."""

    variable: str
    winner: Key
    loser: Key


@dataclass(frozen=True)
class ServiceEnv:
    """A pod's service environment, plus where each variable came from."""

    namespace: str
    variables: dict[str, str]  # sorted by name
    origin: dict[str, Key]  # variable -> the service that set it
    clashes: tuple[Clash, ...] = field(default=())

    @property
    def services(self) -> list[Key]:
        return sorted(set(self.origin.values()))

    @property
    def size(self) -> int:
        """Bytes the variables take in a process's environment block: ``KEY=VALUE\\0`` each
        (what counts against the kernel's argument limit, pointers aside)."""
        return sum(len(k) + len(v) + 2 for k, v in self.variables.items())

    def size_by_service(self) -> list[tuple[Key, int]]:
        """Services by the bytes they add, largest first."""
        sizes: dict[Key, int] = {}
        for k, v in self.variables.items():
            key = self.origin[k]
            sizes[key] = sizes.get(key, 0) + len(k) + len(v) + 2
        return sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))


def service_env(services: Iterable[Service], namespace: str, *, enable_service_links: bool = True) -> ServiceEnv:
    """What kubelet injects into every container of a pod in ``namespace``."""
    values: dict[str, str] = {}
    origin: dict[str, Key] = {}
    clashes: list[Clash] = []
    for svc in services_for_pod(services, namespace, enable_service_links=enable_service_links):
        for name, value in service_variables(svc):
            if name in origin and origin[name] != svc.key:
                clashes.append(Clash(name, svc.key, origin[name]))
            values[name] = value
            origin[name] = svc.key
    ordered = dict(sorted(values.items()))
    return ServiceEnv(namespace, ordered, origin, tuple(clashes))


def render(env: ServiceEnv, fmt: str) -> str:
    """``env``: KEY=VALUE lines (Docker ``--env-file``); ``shell``: ``export`` lines quoted
    for sh; ``json``: one object."""
    if fmt == "json":
        return json.dumps(env.variables, indent=2) + "\n"
    if fmt == "shell":
        # A name sh cannot take (a service name starting with a digit, which the API
        # server would have refused) becomes a comment rather than a syntax error.
        return "".join(
            f"export {k}={shlex.quote(v)}\n" if _SHELL_NAME.match(k) else f"# not a shell variable name, skipped: {k}\n"
            for k, v in env.variables.items()
        )
    if fmt == "env":
        return "".join(f"{k}={v}\n" for k, v in env.variables.items())
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def human_bytes(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KiB"


def budget_warning(env: ServiceEnv, budget: int) -> str | None:
    """A warning when the environment passes ``budget`` bytes, naming the services that
    add most (kubernetes#84539: pods of large namespaces fail with "argument list too
    long" and nothing says why)."""
    if env.size <= budget:
        return None
    top = ", ".join(f"{ns}/{name} ({human_bytes(size)})" for (ns, name), size in env.size_by_service()[:TOP_CONTRIBUTORS])
    return (
        f"the service environment of namespace {env.namespace} is {human_bytes(env.size)} "
        f"({len(env.variables)} variables from {len(env.services)} services), over the budget of {human_bytes(budget)}; "
        f"largest: {top}. Every container of every pod in {env.namespace} gets these variables, and the kernel "
        f'refuses to start a process whose environment and arguments pass its limit ("argument list too long"). '
        f"Set enableServiceLinks: false in the pod spec and find services by DNS name instead "
        f"(KUBERNETES_SERVICE_HOST/PORT stay)."
    )
