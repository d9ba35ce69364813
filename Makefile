# Everything a fresh machine with only Python needs: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LISTEN ?= 127.0.0.1:5353
HEALTH ?= 127.0.0.1:8080
DIG    := dig @127.0.0.1 -p $(lastword $(subst :, ,$(LISTEN)))

.PHONY: run test system-deps bench bench-forward bench-api bench-proxy fuzz soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian packages the tests drive for real (installed only when missing).
system-deps:
	@./scripts/need dig:dnsutils
	@./scripts/need knotd:knot dnsmasq:dnsmasq-base   # real upstream nameservers for the forwarding tests
	@./scripts/need dnsperf:dnsperf   # load for the rolling-restart and flood tests (issue 7)
	@./scripts/need ip:iproute2 iptables-restore:iptables nft:nftables ipvsadm:ipvsadm ipset:ipset

run: $(STAMP)
	@./scripts/need dig:dnsutils || echo "(could not install dig; any DNS client will do)"
	@echo "svcdns on $(LISTEN) (udp+tcp), health and metrics on http://$(HEALTH)/metrics — try:"
	@echo "  $(DIG) my-service.default.svc.cluster.local"
	@echo "  $(DIG) my-service.web SRV          # short name: CNAME + records, no +search needed"
	@echo "  $(DIG) _https._tcp.my-service.web.svc.cluster.local SRV"
	@echo "  $(DIG) nginx.default.svc.cluster.local       # headless: one A per ready pod"
	@echo "  $(DIG) web-0.nginx.default.svc.cluster.local"
	@echo "  $(DIG) my-database.default.svc.cluster.local # ExternalName: CNAME"
	@echo "  $(DIG) -x 10.0.0.11                          # PTR"
	@echo "  $(DIG) dual-stack.web.svc.cluster.local AAAA"
	@echo "  $(DIG) my-service.web.explain.svcdns CH TXT        # why it resolves so (svcdns explain over DNS)"
	@echo "Ctrl-C to stop."
	$(PY) -m svcdns serve --listen $(LISTEN) --health $(HEALTH)

test: $(STAMP) system-deps
	$(PY) -m pytest -q

bench: $(STAMP)
	./bench/dnsperf.sh

# Forwarded answers served from the cache, one core (docs/performance.md, "Forwarding cache").
bench-forward: $(STAMP)
	@./scripts/need dnsperf:dnsperf knotd:knot taskset:util-linux
	$(PY) bench/forward_cache.py

# Long fuzz run with atheris (docs/reliability.md): FUZZ_RUNS inputs through the query path.
FUZZ_RUNS ?= 1000000
fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[fuzz]'
	mkdir -p bench/out/fuzz-corpus
	$(PY) tests/fuzz/atheris_dns.py -runs=$(FUZZ_RUNS) -max_len=1024 -print_final_stats=1 \
	  -artifact_prefix=bench/out/ bench/out/fuzz-corpus

# 60 s of dnsperf at 80 % of peak while endpoints churn (docs/reliability.md).
soak: $(STAMP)
	./bench/soak.sh
# The live API source at 10,000 services / 100,000 endpoints (see docs/performance.md).
bench-api: $(STAMP)
	$(PY) bench/scale_api.py
# Proxy sync at 10,000 services x 10 endpoints (root: applies rules in a throwaway netns).
bench-proxy: $(STAMP) system-deps
	$(PY) bench/proxy_sync.py --modes iptables-legacy,nftables

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
