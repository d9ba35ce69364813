# svcdns: cluster DNS for Kubernetes.   docker build -t svcdns:0.1.0 .
# The node proxy (deploy/proxy/) adds the kernel tools: docker build --target proxy -t svcdns-proxy:0.1.0 .
# Build stage: resolve and install the package and its wheels into a virtualenv.
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/svcdns
COPY pyproject.toml README.md ./
COPY svcdns ./svcdns
RUN /opt/svcdns/bin/pip install . \
    && /opt/svcdns/bin/pip uninstall --yes pip setuptools

# The node proxy: the same package plus the tools it drives (iptables-restore, nft, ipset,
# ipvsadm). It programs the node's netfilter, which needs root with NET_ADMIN (a non-root
# user does not get added capabilities), so this stage runs as root; the DaemonSet drops
# every other capability.
FROM python:3.12-slim-bookworm AS proxy
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables nftables ipset ipvsadm \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/svcdns /opt/svcdns
ENV PATH=/opt/svcdns/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 10256
ENTRYPOINT ["svcdns", "proxy"]

# Final stage (the default target): the interpreter, the virtualenv, nothing to build with, not root.
FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="svcdns" \
      org.opencontainers.image.description="Service discovery for Kubernetes: cluster DNS" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/svcdns /opt/svcdns
ENV PATH=/opt/svcdns/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" uid; no home, no shell login
USER 65532:65532
# DNS on 53 (binding it as non-root needs NET_BIND_SERVICE or the pod sysctl
# net.ipv4.ip_unprivileged_port_start, see deploy/deployment.yaml); /health, /ready
# and /metrics on 8080; /metrics again on 9153 (the Prometheus convention for DNS).
EXPOSE 53/udp 53/tcp 8080 9153
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
ENTRYPOINT ["svcdns"]
CMD ["serve", "--listen=0.0.0.0:53", "--health=0.0.0.0:8080", "--metrics=0.0.0.0:9153"]

