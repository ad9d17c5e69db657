# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# make run         set up (apt packages, .venv), build, trace a built-in guest, selftest
# make test        set up, build, run the whole test suite, the kernel matrix included
# make test-quick  the same without the kernel matrix and the packaging tests (about a minute)
# make matrix      the kernel matrix alone
# make bench       what kvmexit costs on this host; make bench-real: on real exits in the matrix's machines
# make             build the BPF objects only
PYTHON ?= /usr/bin/python3
VENV ?= .venv
CLANG ?= clang
LLVM_STRIP ?= llvm-strip
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib/kvmexit
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=
# build and test tools; the .deb test also needs the Debian packaging tools
APT_PACKAGES := clang llvm libbpf-dev libbpf1 bpftool python3-venv python3-pip strace tmux \
	debhelper dh-python pybuild-plugin-pyproject python3-hatchling python3-all python3-click \
	dpkg-dev man-db openssl systemd
# the kernel matrix (tests/kernels): emulators, and what builds their boot media
APT_PACKAGES += qemu-system-x86 qemu-system-arm bochs bochsbios vgabios bochs-term isolinux syslinux-common xorriso \
	busybox-static kmod xz-utils zstd e2fsprogs linux-perf
# the BTF corpus: pahole encodes Debian 5.10's module BTF from its -dbg package
APT_PACKAGES += dwarves

OBJS := src/kvmexit/bpf/kvm_exit.bpf.o src/kvmexit/bpf/kvm_exit_direct.bpf.o src/kvmexit/bpf/kvm_exit_legacy.bpf.o \
	src/kvmexit/bpf/kvm_exit_arm64.bpf.o
KVMEXIT := $(VENV)/bin/kvmexit

.PHONY: all build setup run test test-quick test-busy matrix bench bench-real stress soak dist zipapp check-repro install uninstall clean
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
		apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get -o DPkg::Lock::Timeout=300 install -y -qq $$missing >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# real exits: here if this host's KVM emits kvm_exit, else in the matrix's SVM machine
run: setup build
	@cd tests && PATH=$(CURDIR)/$(VENV)/bin:$$PATH ../$(VENV)/bin/python -m kernels demo
	@echo "== kvmexit selftest (this host)"
	@$(KVMEXIT) selftest

# realexit.bpf.o: make bench-real's baselines, also run by the matrix's bench cell
TEST_OBJS := build/fakemem.bpf.o build/realexit.bpf.o
BENCH_OBJS := build/baselines.bpf.o build/kvm_exit_nolat.bpf.o
build/fakemem.bpf.o: tests/bpf/fakemem.bpf.c bpf/kvm_min.h
build/baselines.bpf.o: bench/baselines.bpf.c bench/bcc_design.h bpf/kvm_min.h
build/realexit.bpf.o: bench/realexit.bpf.c bench/bcc_design.h bpf/kvm_min.h
build/%.bpf.o:
	@mkdir -p build
	$(CLANG) -target bpfel -g -O2 -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -c $< -o $@
# make bench: the shipped programs without --latency's code
build/kvm_exit_nolat.bpf.o: bpf/kvm_exit.bpf.c bpf/kvm_exit.h bpf/kvm_min.h
	@mkdir -p build
	$(CLANG) -target bpfel -g -O2 -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -DKVMEXIT_NO_LATENCY -c $< -o $@

test: setup build $(TEST_OBJS)
	$(VENV)/bin/python -m pytest

test-quick: setup build $(TEST_OBJS)
	$(VENV)/bin/python -m pytest -m "not matrix and not dist"

matrix: setup build
	$(VENV)/bin/python -m pytest -m matrix

bench: setup build $(BENCH_OBJS) zipapp
	$(VENV)/bin/python bench/bench.py

# real kvm_exit events: bench/real.py in the matrix's newest SVM, VMX and arm64 machines (a few minutes)
bench-real: setup build build/realexit.bpf.o
	cd tests && ../$(VENV)/bin/python -m kernels bench

# reliability: live reads under load, a long run's memory and fds, the suite on busy CPUs
stress: setup build
	$(VENV)/bin/python bench/soak.py stress
soak: setup build
	$(VENV)/bin/python bench/soak.py soak --minutes $(or $(MINUTES),10)
test-busy: setup build $(TEST_OBJS)
	$(VENV)/bin/python bench/busy.py --runs $(or $(RUNS),10) -- $(VENV)/bin/python -m pytest -q -m "not matrix"

# sdist and py3-none-any wheel, both carrying the BPF objects
dist: setup build
	rm -rf dist/kvmexit-* && $(VENV)/bin/python -m build --no-isolation --outdir dist . >/dev/null
	@ls dist/kvmexit-*

# one file: the package and click, run by the host's python3 (>= 3.9: click 8.2+ needs 3.10)
ZIPAPP_CLICK ?= click>=8.1,<8.2
zipapp: dist
	rm -rf build/zipapp && $(VENV)/bin/pip install -q --disable-pip-version-check --no-compile \
		--target build/zipapp --no-deps dist/kvmexit-*.whl '$(ZIPAPP_CLICK)'
	rm -rf build/zipapp/bin build/zipapp/share build/zipapp/*.dist-info
	# bytecode beside each module: zipimport cannot cache what it compiles, so
	# without it every start compiles click and kvmexit anew (~100 ms); another
	# Python version ignores these (magic number) and compiles the sources
	$(VENV)/bin/python -m compileall -q -b -s build/zipapp -p kvmexit.pyz --invalidation-mode unchecked-hash build/zipapp
	$(VENV)/bin/python -m zipapp build/zipapp -p '/usr/bin/env python3' -m 'kvmexit.cli:main' -c \
		-o dist/kvmexit.pyz
	@ls -l dist/kvmexit.pyz

# the shipped objects are what these sources build, in any directory
check-repro:
	@rm -rf build/repro && mkdir -p build/repro && cp -r bpf build/repro/src
	@$(MAKE) -s -C build/repro/src OUT=$(CURDIR)/build/repro CLANG=$(CLANG) LLVM_STRIP=$(LLVM_STRIP) >/dev/null
	@for o in kvm_exit.bpf.o kvm_exit_direct.bpf.o kvm_exit_legacy.bpf.o kvm_exit_arm64.bpf.o; do \
		cmp -s build/repro/$$o src/kvmexit/bpf/$$o || { echo "check-repro: src/kvmexit/bpf/$$o differs from a rebuild of bpf/: run make" >&2; exit 1; }; \
	done; echo "check-repro: the four objects rebuild byte-identical"

# no rebuild here (make install runs as root): build first with make
install:
	@test -f src/kvmexit/bpf/kvm_exit.bpf.o || { echo "install: run make first (BPF objects missing)" >&2; exit 1; }
	install -d $(DESTDIR)$(LIBDIR)/kvmexit/bpf $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 644 src/kvmexit/*.py $(DESTDIR)$(LIBDIR)/kvmexit/
	install -m 644 src/kvmexit/bpf/*.bpf.o $(DESTDIR)$(LIBDIR)/kvmexit/bpf/
	# bytecode now: an unprivileged user (CAP_BPF, CAP_PERFMON) cannot write it later
	python3 -m compileall -q $(DESTDIR)$(LIBDIR)/kvmexit
	printf '#!/usr/bin/python3\nimport sys\nsys.path.insert(0, "%s")\nfrom kvmexit.cli import main\nmain()\n' \
		'$(LIBDIR)' > $(DESTDIR)$(SBINDIR)/kvmexit
	chmod 755 $(DESTDIR)$(SBINDIR)/kvmexit
	install -m 644 man/kvmexit.8 $(DESTDIR)$(MANDIR)/man8/kvmexit.8

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(SBINDIR)/kvmexit $(DESTDIR)$(MANDIR)/man8/kvmexit.8

clean:
	$(MAKE) -C bpf clean
	rm -rf $(VENV) build dist
