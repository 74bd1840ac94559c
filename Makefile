# pcie-acq: the user's entry points. `make run` runs the main job, `make test` the tests.
# Slow artefacts (toolroot, guest kernel) are cached outside the repo in $(ACQ_CACHE),
# keyed by their inputs; see qemu/toolroot.sh and qemu/kernel.sh.

SHELL := /bin/bash
CARGO ?= cargo
export ACQ_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pcie-acq

GUEST_TARGET := x86_64-unknown-linux-gnu
GUEST_DIR := target/guest
ACQ := target/release/acq
# The workspace's clippy builds here, apart from target/debug (see lint-workspace).
LINT_DIR := target/lint

.PHONY: all host-deps cargo-restore deps toolroot kernel kernels-for-test test-kernels lint-and-fuzz-builds fuzz-build kernel-test kernel-debug kernel-bench guest build driver driver-debug driver-bench run shell bench test test-host test-vm mutants explore soak lint lint-host lint-workspace lint-fuzz lint-driver fuzz vm-runs cargo-save swiotlb-set smokes host-builds modules doc-tests vm-tests-built fuzz-smoke module-cache-test fmt clean help

all: build

help:
	@echo "make run       boot the guest VM and run the main job (builds what is missing)"
	@echo "make shell     an interactive guest with one card and the driver loaded"
	@echo "make bench     throughput of every path side by side (updates docs/performance.md)"
	@echo "make test      host unit tests, the builds, the VM tests (make test-vm) with lint and the fuzz smoke beside them"
	@echo "make test-vm   only the end-to-end tests in the VM"
	@echo "make deps      provision the toolroot (QEMU, kernel toolchain) and the test guest kernel"
	@echo "make kernel-debug driver-debug   the KASAN/kmemleak guest kernel and the driver for it"
	@echo "make lint      cargo fmt --check, clippy -D warnings, and clippy on the kernel module"
	@echo "make explore   random scenarios checked against the invariants, failures shrunk (docs/explore.md)"
	@echo "make soak      100 load/stream/fault/unload cycles in one debug-kernel guest (KASAN, kmemleak)"
	@echo "make mutants   plant each bug of tests/mutants/ in the driver, score the scenarios (docs/explore.md)"
	@echo "make fuzz      every fuzz target for FUZZ_SECONDS (default 600) each (docs/robustness.md)"
	@echo "cache: $(ACQ_CACHE)"

## Provisioning (cached outside the repo)
# cargo's linker (cc), installed with apt-get when missing; qemu/toolroot.sh installs
# debootstrap and util-linux the same way.
host-deps:
	@bash qemu/host-deps.sh cc

# Compiled crates, crates.io's and this repo's (qemu/cargo-cache.sh): a fresh clone's
# target directories are seeded from the cache before the first build, and its sources of
# the content the cache was built from get the mtimes they had then, so that nothing is
# compiled again; make test-vm (after the
# builds the VM tests need) saves this clone's build when it differs, as make test does
# again after the lints' and the fuzz targets' builds beside them. cargo still decides
# what is fresh.
cargo-restore: host-deps
	@bash qemu/cargo-cache.sh restore

toolroot: host-deps
	@bash qemu/toolroot.sh >/dev/null

# Guest kernel flavors (qemu/kernel/*.config): test (the default, every test), debug (KASAN,
# kmemleak: a representative set of scenarios in make test-vm, acq run --kernel-flavor
# debug), bench (no debugging: make bench).
kernel: kernel-test
kernel-test kernel-debug kernel-bench: kernel-%: toolroot
	@bash qemu/kernel.sh $* >/dev/null

deps: toolroot kernel

## Builds
# Guest tools are static (glibc, crt-static) and built into their own target directory so
# their RUSTFLAGS never invalidate the host build.
# Every clone builds the same bytes (cargo names this repo's sources by relative paths):
# a guest snapshot is keyed by its image's bytes (harness/acq/src/snapshot.rs), so a fresh
# clone restores the snapshots another one saved (tests/acq-e2e/tests/vm/snapshot.rs checks
# that no guest tool names the clone).
guest: cargo-restore
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$(GUEST_DIR) \
		CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
		$(CARGO) build --release --locked -p acq-guest --target $(GUEST_TARGET)

build: cargo-restore
	$(CARGO) build --release --locked -p acq -p acq-device -p acq-sink

# The kernel module, built in the toolroot by the same rustc (and C compiler) as the guest
# kernel flavor it is for (a module built by any other rustc fails to load: E0514): the test
# flavor's is driver/acq.ko, the others' target/driver-FLAVOR/driver/acq.ko.
driver: kernel-test
	@bash qemu/module.sh >/dev/null
driver-debug driver-bench: driver-%: kernel-%
	@bash qemu/module.sh --flavor $* >/dev/null

## The main job: a VM with one card, streaming verified samples (tests/scenarios/default.json)
run: deps guest build driver
	$(ACQ) run --verbose --results results/run tests/scenarios/default.json

# An interactive guest with one card and the driver loaded: try
#   acq-stream --device /dev/acq0 --mode read --bytes 64M --verify
shell: deps guest build driver
	$(ACQ) vm --cards 1 --shell

# Throughput side by side in one VM boot; updates docs/performance.md. Reports, never fails
# on a number.
bench: deps guest build driver-bench
	$(ACQ) bench --kernel-flavor bench --update-docs

## Tests
# The host tests first (some time a card's rate on the host), with the release build, the
# guest tools and the modules built beside them at idle CPU priority (qemu/beside.sh:
# SCHED_IDLE, they get only the CPU time the tests leave unused, which is most of it, so
# no test's timing sees them; the tests' binaries run without cargo, whose lock would hold
# up the builds: tests/binaries.sh), then the VM tests. On a cold cache the kernels are
# built first, the lints and the fuzz targets' build beside them (test-kernels).
# The lints, the doc tests and the fuzz targets' build and smoke (no guest) run beside the
# VM tests the same way (BESIDE), taking the CPU time the guests leave unused, about two
# thirds of the two CPUs for the first 100 s while the quiet tests run, and a sixth after.
# Each job beside shows its output once it ends, and its failure fails make test. (A cargo
# at idle priority must not start while a cargo in the foreground may: one holding the
# package cache's lock while it waited for a CPU held up the guest tools' build, 47 s
# against 15.)
test: cargo-restore test-kernels
	@bash qemu/host-deps.sh strace
	@bash tests/binaries.sh build target/host-tests --locked --workspace --exclude acq-e2e
	@ACQ_TESTS_SKIP=module_cache bash qemu/beside.sh results/host-builds.log \
		'$(MAKE) --no-print-directory host-builds' bash tests/binaries.sh run target/host-tests
	@$(MAKE) --no-print-directory test-vm BESIDE="lint-workspace lint-fuzz doc-tests fuzz-smoke module-cache-test"

# The module cache's test builds a module in the toolroot (harness/acq/tests/
# module_cache.rs): beside the VM tests, not in the host tests before them.
module-cache-test:
	ACQ_TESTS_ONLY=module_cache bash tests/binaries.sh run target/host-tests

# The host's builds side by side: the release build (one crate, harness/acq, builds alone
# at its end), the guest tools, the modules one after the other (the module's lint builds
# driver/acq.ko the way make driver does), and the VM tests (cargo locks a profile's
# directory, target/release or target/debug: the two builds there run at once). Other
# orders of this work, and the scenarios run by the debug CLI, were tried and measured
# slower: README, "Later on 2026-12-06".
host-builds: cargo-restore
	@$(MAKE) --no-print-directory -j4 --output-sync=target build guest modules vm-tests-built

modules: kernels-for-test
	@$(MAKE) --no-print-directory lint-driver
	@$(MAKE) --no-print-directory driver
	@$(MAKE) --no-print-directory driver-debug

doc-tests: cargo-restore
	$(CARGO) test --locked --workspace --exclude acq-e2e --doc

# make test needs both the test and the debug kernel (make modules too). On a cold cache
# they build side by side (each with make -j$(nproc)), so that the stretches where one
# build runs a single job (its configuration, the Rust crates, the final link) overlap the
# other's parallel ones. A no-op on a warm cache.
kernels-for-test: toolroot
	@$(MAKE) --no-print-directory -j2 kernel-test kernel-debug

# make test's kernels, and the lints' and the fuzz targets' builds when their dependencies
# are not compiled yet (a cold cargo cache: about 300 CPU-seconds, clippy's 110 and the
# fuzz crates' with sanitizer coverage and libFuzzer's C++ 170). Those run now, beside the
# kernel builds when there are any (a kernel build minds no neighbour), instead of beside
# the VM tests, whose guests they slowed (a cold run's control-second-process failed). The
# job beside the VM tests then finds them built, and runs and reports them as on a warm
# cache.
test-kernels: toolroot
	@cold=; [ -d $(LINT_DIR)/debug ] && bash tests/acq-fuzz/run.sh compiled || \
	    cold=lint-and-fuzz-builds; \
	$(MAKE) --no-print-directory -j3 kernel-test kernel-debug $$cold

# Their cargo runs without make's jobserver (MAKEFLAGS emptied, -n and -k with it), so that
# it uses both CPUs whatever else make runs. A failure is announced here and reported by
# the job beside the VM tests, which runs them again.
lint-and-fuzz-builds: cargo-restore
	@mkdir -p results
	@echo "==> the lints' and the fuzz targets' dependencies are not compiled yet: built now, not beside the VM tests (log: results/lint-and-fuzz-builds.log)"
	@if MAKEFLAGS= $(MAKE) --no-print-directory -k lint-workspace lint-fuzz fuzz-build \
	    >results/lint-and-fuzz-builds.log 2>&1; then \
	    echo "==> the lints and the fuzz targets' build: done"; \
	else echo "==> the lints and the fuzz targets' build FAILED (results/lint-and-fuzz-builds.log): the job beside the VM tests runs them again and reports it"; fi

fuzz-build: cargo-restore
	bash tests/acq-fuzz/run.sh build

test-host: cargo-restore
	@bash qemu/host-deps.sh strace
	$(CARGO) test --locked --workspace --exclude acq-e2e

lint: lint-host lint-driver

lint-host: lint-workspace lint-fuzz

# Its own target directory (inside target/, so the cargo cache keeps its dependencies):
# make test runs it beside the builds and tests, which then never wait on its lock.
lint-workspace: cargo-restore
	$(CARGO) fmt --all -- --check
	CARGO_TARGET_DIR=$(LINT_DIR) $(CARGO) clippy --locked --workspace --all-targets -- -D warnings

lint-fuzz: cargo-restore
	cd tests/acq-fuzz && $(CARGO) fmt -- --check && $(CARGO) clippy --locked --all-targets -- -D warnings

# The kernel module through clippy with the kernel's own lint set (CLIPPY=1), warnings
# as errors; it builds driver/acq.ko on the way (clippy-driver compiles as rustc does).
# First rustfmt with the kernel's settings (.rustfmt.toml: edition 2021, defaults).
lint-driver: kernel-test
	rustfmt --edition 2021 --check driver/acq_main.rs
	@bash qemu/module.sh CLIPPY=1 KRUSTFLAGS=-Dwarnings >/dev/null

# Coverage-guided fuzzing (libFuzzer on stable; tests/acq-fuzz/). The smoke replays every
# seed and saved crash and fuzzes each target for 5 s, so the targets stay buildable.
FUZZ_SECONDS ?= 600
fuzz: cargo-restore
	bash tests/acq-fuzz/run.sh fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: cargo-restore
	bash tests/acq-fuzz/run.sh smoke

# Guests at once in make test-vm. Most tests and scenarios pace a card (a few MB/s) and
# wait on it, so a guest keeps about half a host CPU busy: four guests at once on a
# 2-core machine fill both cores (measured side by side: the Rust VM tests 503 s at 4
# against 591 at 2, the 73 scenarios 280 s against about 330, every test passing; the
# guests then used 1.6 and 2.0 of the 2 CPUs). The debug kernel's guests (KASAN,
# kmemleak scans) keep a CPU busy each, but each also waits 5 s for its leak scan:
# DEBUG_JOBS=3 ran the set in 175 s against 195 at 2 (one after the other, every
# scenario passing). The IOMMU and swiotlb sets (DMA_JOBS): four at a time, a playback scenario behind the
# IOMMU (every DMA translated) saw its capture consumer overflow twice, in one CI run of
# three. The tests that judge the driver by a latency, or by a consumer keeping up, run
# beside at most one other guest (acq_e2e::gate). The Rust VM tests are one test binary
# (tests/acq-e2e/tests/vm/), so that four of them run from the first to the last: cargo
# runs binaries one after the other, and each file's last tests ran alone. libtest starts
# every test at once; the gate lets VM_JOBS guests run (ACQ_TEST_GUESTS) and chooses who
# goes next: the quiet tests first, each beside the longest test waiting, then the longest
# first by the times the run before kept in the cache (425 s against 445 in name order,
# where the longest tests ended the run nearly alone). VM_JOBS=1 DEBUG_JOBS=1
# DMA_JOBS=1 for one at a time (but for the swiotlb set, which runs beside the smokes and
# the pool's own test). Tried and left out: every test file and scenario set side
# by side, sharing four machine-wide guest slots (a debug or DMA guest taking two, a quiet
# test three): 1540 s against about 1490 one after the other, every test passing. The
# guests' work is CPU-bound once four run: side by side only shares the same two CPUs.
# Most Rust VM tests share guests: a test that ends cleanly hands its guest to the next
# one of the same kind (tests/acq-e2e/src/pool.rs). It saves CPU more than time:
# most of these tests wait on paced cards, so the four slots bound them as much as the
# CPUs do (the files that use it took 475 s against 473-503 in CI runs before it).
VM_JOBS ?= 4
DEBUG_JOBS ?= 3
DMA_JOBS ?= 2

# The scenarios that also run on the debug kernel (KASAN, kmemleak) in make test-vm: every
# kind of fault the driver must survive, each data path, removal and unbind, remove and
# probe meeting a broken card. Their guests get 512 MiB (acq run --memory): a kmemleak scan
# reads every page's struct page, and the four scans of a run took 14 s against 18 s
# with 1 GiB. A KASAN boot is 12-14 s and kmemleak's baseline 7 s more (both now in the
# machine's snapshot: the set took 195 s against 230 with the baseline in every guest),
# where most of these scenarios run for a few seconds: --reuse-guests saves most of it, and in a shared
# guest one leak scan (about 12 s) serves all its scenarios, each object laid on the
# scenario it was allocated in (docs/scenarios.md): the set took 356 s against 375.
DEBUG_SCENARIOS = $(addprefix tests/scenarios/,$(addsuffix .json,default stream-splice-tee \
	stream-mmap consumer-methods fault-dma-error-splice fault-bad-completion-splice \
	fault-bad-completion-long \
	fault-all-ones-in-event-irq fault-cons-lie fault-hang-then-unbind fault-reset \
	fault-surprise-removal-splice playback-splice-recycled-pages playback-fault-dma-error \
	dma-swiotlb-force control-second-process fault-hang-at-remove probe-without-interrupts \
	playback-fault-index-lies fault-irq-storm-at-remove \
	playback-vmsplice-writer-killed share-card-to-card share-surprise-removal \
	share-importer-removed))

# The scenarios that also run with every DMA address translated by a virtual IOMMU and
# with every streaming mapping bounced (swiotlb=force) in make test-vm: where a missing or
# wrong mapping or sync shows (each data path, lying completions and event pages, reset,
# playback's recycled pages and the writer's own vmspliced pages, control from a second
# process, a card writing over the driver's rings, one card's ring played by another).
DMA_SCENARIOS = $(addprefix tests/scenarios/,$(addsuffix .json,stream-splice-tee stream-mmap \
	fault-dma-error-splice fault-bad-completion-long fault-cons-lie fault-reset \
	playback-splice-recycled-pages control-second-process fault-stray-dma-driver-memory \
	playback-vmsplice share-card-to-card))

# The VM tests: the Rust end-to-end tests, every scenario (reports in results/), the
# representative sets again on the debug kernel, with the IOMMU and with swiotlb (each set
# with one guest serving the scenarios of one shape in turn: --reuse-guests, measured
# one after the other on the 2-core machine kind: the 73 scenarios 214 s against 311, the
# 24 debug ones 375 s against 598 (README); a scenario run alone by `acq run FILE` still boots its
# own guest, and so do explore's and the mutants' runs), and
# one planted driver bug that a rate-limited scenario must catch (the mutants machinery and
# the lost wake-up invariant stay tested; docs/explore.md).
test-vm: deps guest build driver driver-debug vm-tests-built
	@bash qemu/cargo-cache.sh save
	@bash qemu/beside.sh results/beside.log \
		"$(if $(BESIDE),$(MAKE) --no-print-directory $(BESIDE) && $(MAKE) --no-print-directory cargo-save)" \
		$(MAKE) --no-print-directory vm-runs

# The VM tests' binaries, listed for tests/binaries.sh.
vm-tests-built: cargo-restore
	@bash tests/binaries.sh build target/acq-e2e-tests --locked -p acq-e2e

# What make test's job beside the VM tests builds and runs (none for make test-vm alone);
# once it is done, the cargo cache is saved again (the lint's dependencies, target/lint).
# A failing lint is reported once the VM tests end, and not when they fail.
BESIDE ?=
cargo-save:
	@bash qemu/cargo-cache.sh save

# make test-vm's runs, once everything is built. The Rust VM tests' binaries run without
# cargo (tests/binaries.sh: in the order cargo finished building them, which may vary,
# stopping at the first that fails, as cargo test does); libtest starts every test at
# once. The pool's own test runs last, beside the swiotlb set.
vm-runs:
	ACQ_TEST_GUESTS=$(VM_JOBS) ACQ_TESTS_SKIP=pool bash tests/binaries.sh run target/acq-e2e-tests --test-threads=256
	$(ACQ) run --jobs $(VM_JOBS) --reuse-guests --results results/test-vm tests/scenarios
	$(ACQ) run --jobs $(DEBUG_JOBS) --kernel-flavor debug --memory 512 --reuse-guests \
		--results results/test-vm-debug $(DEBUG_SCENARIOS)
	$(ACQ) run --jobs $(DMA_JOBS) --dma viommu --reuse-guests \
		--results results/test-vm-viommu $(DMA_SCENARIOS)
	@$(MAKE) --no-print-directory -j2 --output-sync=target swiotlb-set smokes

# The swiotlb set beside the two smokes and the pool's own test (tests/acq-e2e/tests/
# pool.rs, a binary of its own: it counts its binary's boots): a third guest beside its
# two, the set and the others each keeping the CPUs about half busy alone.
swiotlb-set:
	$(ACQ) run --jobs $(DMA_JOBS) --dma swiotlb --reuse-guests \
		--results results/test-vm-swiotlb $(DMA_SCENARIOS)

smokes:
	$(ACQ) mutants --only irq-wakes-nobody --scenarios tests/scenarios/control-config-restart.json \
		--results results/mutants-smoke --min-score 1
	$(ACQ) explore --seed 1 --runs 2 --results results/explore-smoke
	ACQ_TESTS_ONLY=pool bash tests/binaries.sh run target/acq-e2e-tests

# Random scenarios against the invariants, failing ones shrunk into results/explore/found/
# (opt-in; docs/explore.md).
EXPLORE_SEED ?= 1
EXPLORE_BUDGET ?= 20m
explore: deps guest build driver
	$(ACQ) explore --seed $(EXPLORE_SEED) --budget $(EXPLORE_BUDGET) --results results/explore

# One long-lived guest on the debug kernel: SOAK_CYCLES of load, stream, random fault,
# pool check, unload; kmemleak at the end (opt-in; docs/faults.md, "Soak").
SOAK_CYCLES ?= 100
SOAK_SEED ?= 1
soak: deps guest build driver-debug
	$(ACQ) soak --cycles $(SOAK_CYCLES) --seed $(SOAK_SEED) --results results/soak

# Every planted driver bug of tests/mutants/ against every scenario: the suite's score
# (opt-in: a surviving mutant costs a whole scenario run; docs/explore.md).
mutants: deps guest build driver driver-debug
	$(ACQ) mutants --results results/mutants

fmt:
	$(CARGO) fmt --all
	rustfmt --edition 2021 driver/acq_main.rs

clean:
	$(CARGO) clean
