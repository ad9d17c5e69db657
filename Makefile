# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# make run   set up (apt packages, .venv), build, trace a built-in guest, selftest
# make test  set up, build, run the whole test suite
# make       build the BPF objects only
PYTHON ?= /usr/bin/python3
VENV ?= .venv
CLANG ?= clang
LLVM_STRIP ?= llvm-strip
PREFIX ?= /usr/local
APT_PACKAGES := clang llvm libbpf-dev libbpf1 bpftool python3-venv python3-pip

OBJS := src/kvmexit/bpf/kvm_exit.bpf.o src/kvmexit/bpf/kvm_exit_legacy.bpf.o
KVMEXIT := $(VENV)/bin/kvmexit

.PHONY: all build setup run test bench clean
all: build

build: $(OBJS)

$(OBJS): bpf/kvm_exit.bpf.c bpf/kvm_exit.h bpf/kvm_min.h bpf/Makefile
	$(MAKE) -C bpf CLANG=$(CLANG) LLVM_STRIP=$(LLVM_STRIP)

# Debian packages first (only those missing), then the virtualenv.
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

run: setup build
	@echo "== kvmexit 5 (all threads, 5 s) while the built-in guest runs alongside"
	@$(KVMEXIT) guest --seconds 7 >/dev/null & sleep 0.5; $(KVMEXIT) 5; wait
	@echo "== kvmexit --calibrate -p PID -a 3: the same counting code fed by kvm:kvm_pio (port = reason)"
	@$(KVMEXIT) guest --seconds 2 > .run-guest.json & sleep 0.5; \
		$(KVMEXIT) --calibrate -p $$(head -c 200 .run-guest.json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p') -a 3; \
		wait; rm -f .run-guest.json
	@echo "== kvmexit selftest"
	@$(KVMEXIT) selftest

TEST_OBJS := build/fakemem.bpf.o
BENCH_OBJS := build/baselines.bpf.o
build/fakemem.bpf.o: tests/bpf/fakemem.bpf.c bpf/kvm_min.h
build/baselines.bpf.o: bench/baselines.bpf.c bpf/kvm_min.h
build/%.bpf.o:
	@mkdir -p build
	$(CLANG) -target bpfel -g -O2 -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -c $< -o $@

test: setup build $(TEST_OBJS)
	$(VENV)/bin/python -m pytest

bench: setup build $(BENCH_OBJS)
	$(VENV)/bin/python bench/bench.py

clean:
	$(MAKE) -C bpf clean
	rm -rf $(VENV) build dist
