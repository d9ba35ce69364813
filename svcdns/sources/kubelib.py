"""The parts of kubernetes-asyncio the live source uses, imported without the rest.

svcdns decodes the API's JSON itself (sources.reflector). Of kubernetes-asyncio it uses
what it is chosen for: ``Configuration``, the kubeconfig and in-cluster loaders (TLS,
client certificates, tokens, exec and OIDC plugins) and ``ApiClient.call_api``, which
authenticates each request and sends it through the library's aiohttp session.

Importing any of that normally costs ~40 MB of RSS and ~0.3 s of CPU: the first
``import kubernetes_asyncio.<anything>`` runs ``kubernetes_asyncio/__init__.py``, which
imports ``client/__init__.py``, which imports ~60 generated API modules and ~700 model
classes (``api_client.py`` imports ``client.models`` too). Upstream knows
(kubernetes-client/python#771); no release imports lazily yet.

So the three package ``__init__`` files that do this (``kubernetes_asyncio``,
``kubernetes_asyncio.client``, ``kubernetes_asyncio.client.models``) are registered as
*lazy packages* before the first import: a module object with the real ``__path__``, so
that submodules import from the installed files as usual, whose own ``__init__`` runs
only when something looks up a name that is not a submodule. Nothing is stubbed or
patched: other code in the same process that writes ``from kubernetes_asyncio import
client; client.CoreV1Api`` gets the real package, loaded at that moment. If the library
is already imported, or its layout ever changes, the plain imports below are used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

HEAVY_PACKAGES = ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models")


def lazy_package(name: str) -> ModuleType | None:
    """Register package ``name`` without running its ``__init__`` (see the module
    docstring). Returns None, changing nothing, if it is already imported or not a
    package."""
    if name in sys.modules:
        return None
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return None
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str):
        if not attr.startswith("__") and importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")  # a submodule: just that one
        # Any other name: run the real __init__ in this module, once, and look again.
        del module.__getattr__
        spec.loader.exec_module(module)
        return getattr(module, attr)

    module.__getattr__ = __getattr__
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _import():
    for name in HEAVY_PACKAGES:
        if lazy_package(name) is None:
            break  # imported already (or not a package): nothing to save
    from kubernetes_asyncio.client.api_client import ApiClient
    from kubernetes_asyncio.client.configuration import Configuration

    client = sys.modules["kubernetes_asyncio.client"]
    if "__getattr__" in vars(client):
        # config.kube_config does ``from kubernetes_asyncio.client import ApiClient,
        # Configuration``: let that find them without running the package __init__.
        client.ApiClient, client.Configuration = ApiClient, Configuration
    from kubernetes_asyncio.config.config_exception import ConfigException
    from kubernetes_asyncio.config.kube_config import load_kube_config

    return ApiClient, Configuration, ConfigException, load_kube_config


ApiClient, Configuration, ConfigException, load_kube_config = _import()

__all__ = ["ApiClient", "Configuration", "ConfigException", "load_kube_config"]
