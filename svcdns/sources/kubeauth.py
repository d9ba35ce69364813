"""Connecting to the Kubernetes API: in-cluster service account or a kubeconfig.

kubernetes-asyncio does the TLS, kubeconfig parsing and exec/OIDC plugins (imported
without its generated models: see sources.kubelib). What we add is renewal of
credentials that expire, checked before every request (a LIST page or a WATCH):

- in a pod, kubelet rewrites the projected service account token long before it
  expires, and the library would keep a token it read for a minute: we re-read the
  file whenever its modification time changes (one ``stat`` per request);
- an exec credential plugin's token (``aws eks get-token``: 15 minutes) is loaded once
  by ``load_kube_config``: we ask the library's loader again before each request, and
  it runs the plugin when the token is within 5 minutes of its expirationTimestamp.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # kubelib is imported when a live source starts: manifests never pay for it
    from .kubelib import ApiClient, Configuration

log = logging.getLogger(__name__)

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"


class AuthError(RuntimeError):
    """No usable credentials; the message says which file or setting is wrong."""


@dataclass(frozen=True)
class InCluster:
    """Where a pod finds its API server and credentials."""

    host: str
    port: str
    token_file: str
    ca_file: str


def in_cluster(serviceaccount_dir: str, environ: Mapping[str, str] = os.environ) -> InCluster | None:
    """The in-cluster settings when this process runs in a pod (the API server's address
    in the environment and a token mounted), else None."""
    host, port = environ.get(SERVICE_HOST_ENV), environ.get(SERVICE_PORT_ENV)
    token = os.path.join(serviceaccount_dir, "token")
    if not host or not port or not os.path.isfile(token):
        return None
    return InCluster(host, port, token, os.path.join(serviceaccount_dir, "ca.crt"))


class TokenFile:
    """A bearer token read from a file, re-read whenever the file changes."""

    def __init__(self, path: str):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self.token = ""
        self.refresh()

    def refresh(self) -> str:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._stamp:
                with open(self.path) as f:
                    token = f.read().strip()
                if not token:
                    raise AuthError(f"{self.path}: service account token file is empty")
                if self._stamp is not None:
                    log.info("service account token in %s changed; using the new one", self.path)
                self.token, self._stamp = token, stamp
        except OSError as e:
            if not self.token:
                raise AuthError(f"{self.path}: cannot read the service account token: {e.strerror}") from None
            log.warning("cannot re-read %s (%s); keeping the token read before", self.path, e.strerror)
        return self.token

    def hook(self, configuration: Configuration) -> None:
        """``Configuration.refresh_api_key_hook``: called before every request."""
        configuration.api_key["BearerToken"] = self.refresh()


def in_cluster_configuration(settings: InCluster) -> Configuration:
    from .kubelib import Configuration

    if not os.path.isfile(settings.ca_file):
        raise AuthError(f"{settings.ca_file}: the service account CA certificate is missing")
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    cfg = Configuration(host=f"https://{host}:{settings.port}")
    cfg.ssl_ca_cert = settings.ca_file
    token = TokenFile(settings.token_file)
    cfg.api_key_prefix["BearerToken"] = "Bearer"
    token.hook(cfg)
    cfg.refresh_api_key_hook = token.hook
    return cfg


async def kubeconfig_configuration(path: str) -> Configuration:
    from .kubelib import ConfigException, Configuration, load_kube_config

    if not os.path.isfile(path):
        raise AuthError(f"--kubeconfig {path}: no such file")
    cfg = Configuration()
    try:
        loader = await load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
    except ConfigException as e:
        raise AuthError(f"--kubeconfig {path}: {e}") from None
    if getattr(loader, "exec_plugin_expiry", None) is not None:  # set for an exec plugin's expiring token
        cfg.refresh_api_key_hook = ExecCredential(loader).hook
    return cfg


class ExecCredential:
    """An exec plugin's token, renewed when it is about to expire."""

    def __init__(self, loader):
        self.loader = loader

    async def hook(self, configuration: Configuration) -> None:
        """``Configuration.refresh_api_key_hook``. The loader runs the plugin only when
        the token it holds is within its safety margin of expiring."""
        from .kubelib import ConfigException

        before = self.loader.token
        try:
            await self.loader.load_from_exec_plugin()
        except (ConfigException, OSError) as e:  # the reflector backs off and asks again
            raise AuthError(f"exec credential plugin: {e}") from None
        if self.loader.token != before:
            log.info("exec credential plugin issued a new token")
        configuration.api_key["BearerToken"] = self.loader.token


async def api_client(kubeconfig: str | None, serviceaccount_dir: str, environ: Mapping[str, str] = os.environ) -> ApiClient:
    """An ApiClient for ``--kubeconfig`` if given, else for the pod's service account."""
    from .kubelib import ApiClient

    if kubeconfig:
        cfg = await kubeconfig_configuration(kubeconfig)
        where = f"{cfg.host} (kubeconfig {kubeconfig})"
    else:
        settings = in_cluster(serviceaccount_dir, environ)
        if settings is None:
            raise AuthError(f"not in a cluster: {SERVICE_HOST_ENV}/{SERVICE_PORT_ENV} unset or no token in {serviceaccount_dir}")
        cfg = in_cluster_configuration(settings)
        where = f"{cfg.host} (in-cluster service account)"
    log.info("Kubernetes API: %s", where)
    return ApiClient(configuration=cfg)
