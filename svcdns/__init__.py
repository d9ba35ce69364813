"""svcdns: service discovery for Kubernetes — cluster DNS, service proxy, service env vars."""

__version__ = "0.1.0"
