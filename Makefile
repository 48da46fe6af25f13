# swpatch: `make demo` shows a live patch, `make test` runs the suite, `make bench`
# measures it against gdb and Frida (docs/benchmarks.md). Each installs what is missing
# (Debian packages, as root) first.

SHELL := /bin/bash
SWIFT ?= swift
CC ?= gcc
DEB_PACKAGES := libelf-dev libdw-dev libssl-dev libcapstone-dev pkg-config gcc g++ binutils make util-linux nginx python3-jsonschema
FIX := Fixtures
FIXOUT := Fixtures/build

.PHONY: all deps build fixtures test lint check-links format demo clean bench bench-fixtures release-check install \
  man deb deb-deps deb-check

all: build

# Install only what is missing, so a machine that has everything stays quiet and offline.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root to install$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

FIXTURE_CFLAGS := -O1 -g -Wall -Wextra

$(FIXOUT):
	@mkdir -p $(FIXOUT)

# Target programs: a single-threaded loop (PIE), the same with endbr64 (CET), and a
# multi-threaded one.
$(FIXOUT)/loop: $(FIX)/loop.c $(FIX)/loop_helper.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $^
$(FIXOUT)/loop-cet: $(FIX)/loop.c $(FIX)/loop_helper.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=full -o $@ $^
$(FIXOUT)/threads: $(FIX)/threads.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
$(FIXOUT)/hammer: $(FIX)/hammer.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
# The same under prev: functions whose relocated first instructions hold a RIP-relative
# load and a call (check with objdump -d after a compiler change).
$(FIXOUT)/relhammer: $(FIX)/relhammer.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
# A thread parked inside a patched function (stack consistency tests).
$(FIXOUT)/parked: $(FIX)/parked.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
$(FIXOUT)/parked-cold: $(FIX)/parked.c | $(FIXOUT)
	$(CC) -O2 -g -Wall -Wextra -fcf-protection=none -pthread -o $@ $<
# ... and with no unwind tables at all: stacks can be unwound only partly.
$(FIXOUT)/parked-nocfi: $(FIX)/parked.c | $(FIXOUT)
	$(CC) -O1 -g0 -fno-asynchronous-unwind-tables -fno-unwind-tables -fomit-frame-pointer \
	  -Wall -Wextra -fcf-protection=none -pthread -o $@ $<
# Where functions live: a non-PIE loop; a program using its own shared library (linked
# at start, found through RUNPATH $ORIGIN), libm and a dlopened plugin; an IFUNC; and
# -O2 code that gcc clones (scaled.constprop.0).
$(FIXOUT)/loop-nopie: $(FIX)/loop.c $(FIX)/loop_helper.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -fno-pie -no-pie -o $@ $^
$(FIXOUT)/places: $(FIX)/places.c $(FIXOUT)/libshared.so $(FIXOUT)/libplugin.so | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $< -L$(FIXOUT) -lshared -lm -ldl \
	  -Wl,-rpath,'$$ORIGIN'
# The target's internals by their C names: statics of a PIE executable (two `helper`s
# in two files) and of its own library, linked at start (RUNPATH $ORIGIN).
$(FIXOUT)/internals: $(FIX)/internals.c $(FIX)/internals_other.c $(FIXOUT)/libinternal.so | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $(FIX)/internals.c $(FIX)/internals_other.c \
	  -L$(FIXOUT) -linternal -Wl,-rpath,'$$ORIGIN'
# A library whose file name and SONAME differ, as packaged ones do (libnamed.so.1.2.3,
# SONAME libnamed.so.1, and the symlink ldconfig would make), and a program linked to it.
$(FIXOUT)/libnamed.so.1.2.3: $(FIX)/named_lib.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -fPIC -shared -Wl,-soname,libnamed.so.1 -o $@ $<
$(FIXOUT)/libnamed.so.1: $(FIXOUT)/libnamed.so.1.2.3
	ln -sf libnamed.so.1.2.3 $@
$(FIXOUT)/named: $(FIX)/named.c $(FIXOUT)/libnamed.so.1.2.3 $(FIXOUT)/libnamed.so.1 | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $< $(FIXOUT)/libnamed.so.1.2.3 -ldl -Wl,-rpath,'$$ORIGIN'
$(FIXOUT)/ifunc: $(FIX)/ifunc.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $<
$(FIXOUT)/clones: $(FIX)/clones.c | $(FIXOUT)
	$(CC) -O2 -fipa-cp-clone -g -Wall -Wextra -fcf-protection=none -o $@ $<
# DWARF and entry checks: loop without -g (signatures cannot be checked); -O2 code
# with a function inlined at known lines; assembly that loops back into its entry; and
# a binary split from its debug info: `split` finds it only through the build-id tree
# under debugroot/ (SWPATCH_DEBUG_ROOT in the tests), `split-link` only through the
# .gnu_debuglink next to it.
$(FIXOUT)/loop-nodebug: $(FIX)/loop.c $(FIX)/loop_helper.c | $(FIXOUT)
	$(CC) -O1 -Wall -Wextra -fcf-protection=none -o $@ $^
$(FIXOUT)/inlined: $(FIX)/inlined.c | $(FIXOUT)
	$(CC) -O2 -g -Wall -Wextra -fcf-protection=none -o $@ $<
$(FIXOUT)/loopback: $(FIX)/loopback.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $<
$(FIXOUT)/split-full: $(FIX)/split.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $<
$(FIXOUT)/split: $(FIXOUT)/split-full
	id=$$(readelf -n $< | awk '/Build ID/ {print $$3}'); \
	  mkdir -p $(FIXOUT)/debugroot/.build-id/$${id:0:2}; \
	  objcopy --only-keep-debug $< $(FIXOUT)/debugroot/.build-id/$${id:0:2}/$${id:2}.debug
	strip --strip-all -o $@ $<
$(FIXOUT)/split-link: $(FIXOUT)/split-full
	objcopy --only-keep-debug $< $@.debug
	strip --strip-all -o $@ $<
	cd $(FIXOUT) && objcopy --add-gnu-debuglink=split-link.debug split-link
# Never hurt the target: threads that come and go, a function with known instruction
# boundaries (and a tracer that parks a thread inside it), a target blocked in one
# system call, and a SIGUSR1 counter.
$(FIXOUT)/churn: $(FIX)/churn.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
# A function written in assembly, whose DWARF has no prototype.
$(FIXOUT)/asmfunc: $(FIX)/asmfunc.c $(FIX)/asmseven.S | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $^
# A target that forks on SIGUSR1, and one that runs another program on SIGUSR1.
$(FIXOUT)/forker $(FIXOUT)/execer $(FIXOUT)/firstline: $(FIXOUT)/%: $(FIX)/%.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $<
$(FIXOUT)/sled $(FIXOUT)/blocked $(FIXOUT)/signals $(FIXOUT)/parker: $(FIXOUT)/%: $(FIX)/%.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
# Targets that are hard to stop or to call into: a main thread that has exited, a thread
# blocked in vfork, seccomp strict mode, a seccomp filter that kills on memfd_create,
# systemd's MemoryDenyWriteExecute filter (or one that kills on mmap), a process that is
# not dumpable.
$(FIXOUT)/mainexit $(FIXOUT)/vforker $(FIXOUT)/seccomp-strict $(FIXOUT)/seccomp-filter \
  $(FIXOUT)/seccomp-mdwe $(FIXOUT)/undumpable: $(FIXOUT)/%: $(FIX)/%.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
# A thread holding a lock a library constructor needs (-rdynamic: the library finds it).
$(FIXOUT)/holder: $(FIX)/holder.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -rdynamic -o $@ $<
# Hot functions for the per-thread transition (-rdynamic: libhot.so uses `inside` and
# calls `helper` through its hook).
$(FIXOUT)/hot: $(FIX)/hot.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -rdynamic -o $@ $<
$(FIXOUT)/hotxx: $(FIX)/hotxx.cpp | $(FIXOUT)
	$(CXX) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -rdynamic -o $@ $<
# A second tracer, and an object file that is not a shared object (bad-input tests).
$(FIXOUT)/tracer: $(FIX)/tracer.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -o $@ $<
$(FIXOUT)/libfix.o: $(FIX)/libfix.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fPIC -c -o $@ $<

# Patch libraries: each replacement returns a value that names its version.
$(FIXOUT)/lib%.so: $(FIX)/lib%.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fPIC -shared -o $@ $<
# A patch library written with include/swpatch.h, as authors are told to build theirs.
$(FIXOUT)/librelwrap.so: $(FIX)/librelwrap.c include/swpatch.h | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -Wmissing-prototypes -fPIC -shared -Iinclude -o $@ $<
# A replacement for Debian nginx's ngx_http_send_response (NginxTests).
$(FIXOUT)/libngxfix.so: $(FIX)/libngxfix.c include/swpatch.h | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -Wmissing-prototypes -fPIC -shared -Iinclude -o $@ $<
# Two libraries with one build id (the symbol cache must key by content).
$(FIXOUT)/libsameid-%.so: $(FIX)/libsameid-%.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fPIC -shared -Wl,--build-id=0x5a5a5a5a5a5a5a5a -o $@ $<

$(FIXOUT)/%.json: $(FIX)/%.json | $(FIXOUT)
	cp $< $@

FIXTURE_FILES := $(FIXOUT)/loop $(FIXOUT)/loop-cet $(FIXOUT)/threads $(FIXOUT)/hammer $(FIXOUT)/relhammer $(FIXOUT)/parked $(FIXOUT)/parked-cold $(FIXOUT)/parked-nocfi $(FIXOUT)/tracer $(FIXOUT)/libfix.o \
  $(FIXOUT)/loop-nopie $(FIXOUT)/places $(FIXOUT)/named $(FIXOUT)/internals $(FIXOUT)/ifunc $(FIXOUT)/clones \
  $(FIXOUT)/loop-nodebug $(FIXOUT)/inlined $(FIXOUT)/loopback $(FIXOUT)/split $(FIXOUT)/split-link \
  $(FIXOUT)/churn $(FIXOUT)/sled $(FIXOUT)/blocked $(FIXOUT)/signals $(FIXOUT)/parker $(FIXOUT)/holder \
  $(FIXOUT)/forker $(FIXOUT)/execer $(FIXOUT)/firstline $(FIXOUT)/asmfunc $(FIXOUT)/hot $(FIXOUT)/hotxx \
  $(FIXOUT)/mainexit $(FIXOUT)/vforker $(FIXOUT)/seccomp-strict $(FIXOUT)/seccomp-filter \
  $(FIXOUT)/seccomp-mdwe $(FIXOUT)/undumpable \
  $(patsubst $(FIX)/%.c,$(FIXOUT)/%.so,$(wildcard $(FIX)/lib*.c)) \
  $(patsubst $(FIX)/%,$(FIXOUT)/%,$(wildcard $(FIX)/*.json))

fixtures: $(FIXTURE_FILES)

# The shipped binary: the Swift runtime and FoundationEssentials linked in statically, so
# a start resolves a handful of system libraries instead of a dozen Swift ones (issue 16:
# `swpatch status` in a few ms; docs/benchmarks.md, "Client start-up").
RELEASE := -c release --static-swift-stdlib

build: deps
	$(SWIFT) build $(RELEASE)

# The release binary and the header patch authors include (include/swpatch.h), under
# PREFIX (default /usr/local): PREFIX/bin/swpatch and PREFIX/include/swpatch.h.
# `swpatch new` looks for the header in ../include next to its binary.
PREFIX ?= /usr/local
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include
	install -m 0755 "$$($(SWIFT) build $(RELEASE) --show-bin-path)/swpatch" $(DESTDIR)$(PREFIX)/bin/swpatch
	install -m 0644 include/swpatch.h $(DESTDIR)$(PREFIX)/include/swpatch.h

# The release binary's link check needs a release build (minutes): `make lint` (and so
# `make test`) runs it on the one there is and says so when there is none; `make
# check-links` builds it first.
lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Package.swift
	@bash .ci/ownership
	@bin="$$($(SWIFT) build $(RELEASE) --show-bin-path)/swpatch"; \
	  if [ -f "$$bin" ]; then bash .ci/no-foundation "$$bin"; \
	  else echo "lint: no release build to check for Foundation and ICU (make check-links builds one)"; fi

check-links: build
	@bash .ci/no-foundation "$$($(SWIFT) build $(RELEASE) --show-bin-path)/swpatch"


format:
	$(SWIFT) format --in-place --recursive Sources Tests Package.swift

test: deps fixtures lint
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

demo: deps fixtures
	$(SWIFT) build $(RELEASE)
	@SWPATCH=$$($(SWIFT) build $(RELEASE) --show-bin-path)/swpatch bash $(FIX)/demo.sh

# The benchmark (docs/benchmarks.md): its own target program and patches of 1, 100 and
# 1,000 functions, generated into Fixtures/build/bench; peers (gdb, Frida, libLLVM-15)
# set up by bench/setup.sh; a release build; then swpatch-bench prints the table and
# writes bench/results.json. BENCH_SCRATCH picks the build directory; BENCH_ARGS adds
# swpatch-bench options (`make bench BENCH_ARGS=--quick`: fewer repetitions).
BENCH_SCRATCH ?= .build
BENCH_ARGS ?=
BENCHOUT := $(FIXOUT)/bench
BENCH_SIZES := 1 100 1000

$(BENCHOUT)/.generated: $(FIX)/gen-bench.sh | $(FIXOUT)
	bash $< $(BENCHOUT) && touch $@
$(BENCHOUT)/bench-target: $(FIX)/bench-target.c $(BENCHOUT)/.generated
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -rdynamic -o $@ $< \
	  $(BENCHOUT)/bench-functions.c -ldl
# Many copies of a small sleeping program, for the --all-of rows.
$(BENCHOUT)/bench-idle: $(FIX)/bench-idle.c | $(FIXOUT)
	@mkdir -p $(BENCHOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $<
$(BENCHOUT)/libbench-%.so: $(BENCHOUT)/.generated
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -fPIC -shared -o $@ $(BENCHOUT)/libbench-$*.c

bench-fixtures: $(BENCHOUT)/bench-target $(BENCHOUT)/bench-idle $(foreach n,$(BENCH_SIZES),$(BENCHOUT)/libbench-$(n).so) \
  $(FIXOUT)/hot $(FIXOUT)/libhot.so

bench: deps bench-fixtures
	@bash bench/setup.sh
	$(SWIFT) build $(RELEASE) --scratch-path $(BENCH_SCRATCH)
	@bin=$$($(SWIFT) build $(RELEASE) --scratch-path $(BENCH_SCRATCH) --show-bin-path); \
	  "$$bin/swpatch-bench" --swpatch "$$bin/swpatch" --fixtures $(BENCHOUT) \
	    --frida-python bench/.venv/bin/python --out bench/results.json $(BENCH_ARGS)

# Before a release: the README's three commands, in order, in a fresh clone of HEAD, as a
# new user runs them (docs/releasing.md). Not part of `make test`: it builds everything
# twice over and runs the benchmark (about 15 minutes here).
release-check:
	@dir=$${RELEASE_CHECK_DIR:-$$(mktemp -d /tmp/swpatch-release-check.XXXXXX)}; set -e; \
	  git clone -q . $$dir/swpatch; cd $$dir/swpatch; \
	  $(MAKE) demo; $(MAKE) test; $(MAKE) bench BENCH_ARGS=--quick; \
	  $(MAKE) install PREFIX=$$dir/prefix; \
	  test -x $$dir/prefix/bin/swpatch && test -f $$dir/prefix/include/swpatch.h; \
	  echo "release-check: make demo, make test, make bench and make install passed in $$dir/swpatch"

# Man pages, completions and the Debian package (docs/operations.md). The man pages are
# generated from the argument parser's own definitions by its generate-manual tool (built
# from the swift-argument-parser checkout, which reads `swpatch --experimental-dump-help`),
# and swpatch-patch(5) from docs/patch-format.md by packaging/md2man.py; `make man`
# refreshes the copies kept in man/ (ManualTests checks they name every verb and flag),
# `make deb` generates its own from the release binary. Not part of `make test`: the
# release build with the static Swift standard library takes several minutes.
VERSION ?= 0.1.0
MAN_DATE ?= $(shell git log -1 --format=%cs -- Sources/swpatch docs/patch-format.md 2>/dev/null)
GENMAN_SCRATCH := .build/generate-manual
GENMAN := $(GENMAN_SCRATCH)/release/generate-manual
DEB := dist/swpatch_$(VERSION)_amd64.deb
DEB_TOOLS := dpkg-dev lintian man-db xz-utils
# Who the package names as its maintainer: set it to a real address before shipping.
DEB_MAINTAINER ?= swpatch developers <swpatch@example.org>

$(GENMAN):
	$(SWIFT) package resolve
	$(SWIFT) build -c release --package-path .build/checkouts/swift-argument-parser \
	  --scratch-path $(GENMAN_SCRATCH) --product generate-manual

man: deps $(GENMAN)
	$(SWIFT) build --product swpatch
	@mkdir -p man
	bash packaging/gen-man.sh "$$($(SWIFT) build --show-bin-path)/swpatch" $(GENMAN) $(MAN_DATE) $(VERSION) man

deb-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(DEB_TOOLS)"

deb: deb-deps $(GENMAN)
	$(SWIFT) build -c release --static-swift-stdlib --product swpatch --scratch-path .build/deb
	bash packaging/build-deb.sh $(VERSION) "$$($(SWIFT) build -c release --scratch-path .build/deb --show-bin-path)/swpatch" \
	  $(GENMAN) $(MAN_DATE) "$(DEB_MAINTAINER)"

# lintian, then the package unpacked into a scratch root: file list, `swpatch --help`,
# `symbols` and `attach` from it, `man -l` on each page, each completion loaded in its
# shell (zsh and fish installed when missing).
deb-check: fixtures
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(DEB_TOOLS) zsh fish"
	bash packaging/deb-check.sh $(DEB)

clean:
	rm -rf .build $(FIXOUT) dist
