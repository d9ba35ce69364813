"""``svcdns env`` and ``svcdns ipam``: read the cluster once, print, exit.

The I/O edge around the pure :mod:`svcdns.env` and :mod:`svcdns.ipam`: load manifests,
write output (atomically when it goes to a file), report problems on stderr as
``error: ...`` / ``warning: ...`` lines.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

from .env import budget_warning, human_bytes, render, service_env
from .ipam import Allocation, ClusterIPAllocator, allocate
from .sources.manifests import ManifestError, ManifestSource
from .store import ClusterState

log = logging.getLogger("svcdns")

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
LIVE_SYNC_TIMEOUT = 30.0  # seconds to list the cluster before giving up


class CommandError(Exception):
    """Stops a command with ``error: <message>`` on stderr and exit status 1."""


def in_cluster() -> bool:
    """Running in a pod: kubelet set KUBERNETES_SERVICE_HOST and mounted a token."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(SERVICE_ACCOUNT_TOKEN)


def check_source(args: argparse.Namespace) -> None:
    """--manifests, --kubeconfig or in-cluster: one of them, and manifests that exist."""
    if not args.manifests and not getattr(args, "kubeconfig", None) and not in_cluster():
        raise CommandError("no cluster to read: give --manifests PATH or --kubeconfig PATH, or run inside a cluster")
    for path in args.manifests:
        if not os.path.exists(path):
            raise CommandError(f"--manifests {path}: no such file or directory")


def load(paths: list[str], cidrs: tuple, *, derive_endpoints: bool = False) -> tuple[ClusterState, ManifestSource]:
    """The cluster state `svcdns serve` would build from these manifests (serve derives
    endpoints from selected pods where no Endpoints/EndpointSlices exist)."""
    state = ClusterState(implicit_namespaces=True, derive_endpoints=derive_endpoints)
    hook = ClusterIPAllocator(cidrs) if cidrs else None
    source = ManifestSource(paths, state, services_hook=hook)
    source.load()
    return state, source


def load_live(kubeconfig: str | None, timeout: float = LIVE_SYNC_TIMEOUT) -> ClusterState:
    """One full list of the cluster (kubeconfig, or the pod's service account), as the
    live source of `svcdns serve` would see it at its first sync; then disconnect."""
    import asyncio

    return asyncio.run(sync_live(kubeconfig, timeout))


async def sync_live(
    kubeconfig: str | None, timeout: float = LIVE_SYNC_TIMEOUT, *, pods: bool = False, endpoints: bool = False, nodes: bool = False
) -> ClusterState:
    """:func:`load_live` inside a running event loop; ``pods``/``endpoints`` also list
    those kinds (explain shows endpoints and knows pods by IP)."""
    import asyncio

    from .config import IN_CLUSTER_DIR
    from .sources.kube import KubeOptions, KubeSource
    from .sources.kubeauth import api_client

    async def sync() -> ClusterState:
        state = ClusterState()
        try:
            api = await api_client(kubeconfig, IN_CLUSTER_DIR)
        except Exception as e:  # a missing or unreadable kubeconfig or token
            raise CommandError(str(e) if kubeconfig else f"in-cluster: {e}") from None  # the message names the kubeconfig
        source = KubeSource(api, state, KubeOptions(endpoints=endpoints, pods=pods, nodes=nodes))
        task = asyncio.ensure_future(source.run())
        try:
            await asyncio.wait_for(source.synced.wait(), timeout)
        except asyncio.TimeoutError:
            raise CommandError(f"the Kubernetes API did not list the cluster within {timeout:.0f} s") from None
        finally:
            task.cancel()
            await source.close()
        return state

    return await sync()


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` in one step: a reader (the app an init container hands the file to)
    sees the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; other containers may need to read it
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def run_env(args: argparse.Namespace) -> int:
    check_source(args)
    ns = args.namespace
    if args.manifests:
        state, _ = load(args.manifests, args.service_cluster_ip_range)
        if not state.namespace_exists(ns):
            log.warning("namespace %s has no objects in the manifests; only default/kubernetes can apply", ns)
    else:  # the API server allocated every ClusterIP already: no --service-cluster-ip-range here
        state = load_live(args.kubeconfig)
        if not state.namespace_exists(ns):
            log.warning("namespace %s does not exist in the cluster; only default/kubernetes can apply", ns)
    env = service_env(state.services.values(), ns, enable_service_links=not args.no_service_links)
    for clash in env.clashes:
        log.warning(
            "%s is set by both %s/%s and %s/%s; using %s/%s (kubelet picks either)",
            clash.variable, *clash.loser, *clash.winner, *clash.winner,
        )
    text = render(env, args.format)
    if args.output:
        try:
            write_atomic(args.output, text)
        except OSError as e:
            raise CommandError(f"--output {args.output}: {e.strerror or e}") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    print(
        f"svcdns env: namespace {ns}: {len(env.variables)} variables from {len(env.services)} services, "
        f"{human_bytes(env.size)} (warning at {human_bytes(args.warn_bytes)})" + (f", written to {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    warning = budget_warning(env, args.warn_bytes)
    if warning:
        log.warning("%s", warning)
    return 0


def _is_cluster_ip_error(err: ManifestError) -> bool:
    return err.field.startswith("spec.clusterIP") and err.value is not None and err.obj.startswith("Service ")


class _ReportedByIpam(logging.Filter):
    """ipam prints malformed-clusterIP errors in its own format; drop the source's copy."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.args and isinstance(record.args[0], ManifestError) and _is_cluster_ip_error(record.args[0]))


def ipam_report(alloc: Allocation, manifest_errors: list[ManifestError]) -> tuple[str, list[str]]:
    """The table and usage (stdout) and the error lines (stderr) of ``svcdns ipam``."""
    lines = [str(a) for a in alloc.assignments]
    lines += [f"usage: {u}" for u in alloc.usage()]
    errors = []
    for err in manifest_errors:
        if _is_cluster_ip_error(err):
            ns_name = err.obj.removeprefix("Service ")
            errors.append(f"error: {ns_name}: {err.value}: malformed, not an IP address ({err.file}: document {err.document}, {err.field})")
    errors += [f"error: {e}" for e in alloc.errors]
    return "".join(line + "\n" for line in lines), errors


def run_ipam(args: argparse.Namespace) -> int:
    check_source(args)
    source_log = logging.getLogger("svcdns.sources.manifests")
    quiet = _ReportedByIpam()
    source_log.addFilter(quiet)
    try:
        _, source = load(args.manifests, ())  # as written: allocation happens below, once
    finally:
        source_log.removeFilter(quiet)
    alloc = allocate(source.services_in_file_order(), args.service_cluster_ip_range)
    table, errors = ipam_report(alloc, source.errors)
    sys.stdout.write(table)
    sys.stdout.flush()
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors or source.errors else 0
