# swpatch: `make demo` shows a live patch, `make test` runs the suite.
# Both install what is missing (Debian packages, as root) first.

SHELL := /bin/bash
SWIFT ?= swift
CC ?= gcc
DEB_PACKAGES := libelf-dev libdw-dev pkg-config gcc make
FIX := Fixtures
FIXOUT := Fixtures/build

.PHONY: all deps build fixtures test lint format demo clean

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
# Where functions live: a non-PIE loop; a program using its own shared library (linked
# at start, found through RUNPATH $ORIGIN), libm and a dlopened plugin; an IFUNC; and
# -O2 code that gcc clones (scaled.constprop.0).
$(FIXOUT)/loop-nopie: $(FIX)/loop.c $(FIX)/loop_helper.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -fno-pie -no-pie -o $@ $^
$(FIXOUT)/places: $(FIX)/places.c $(FIXOUT)/libshared.so $(FIXOUT)/libplugin.so | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $< -L$(FIXOUT) -lshared -lm -ldl \
	  -Wl,-rpath,'$$ORIGIN'
$(FIXOUT)/ifunc: $(FIX)/ifunc.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -o $@ $<
$(FIXOUT)/clones: $(FIX)/clones.c | $(FIXOUT)
	$(CC) -O2 -fipa-cp-clone -g -Wall -Wextra -fcf-protection=none -o $@ $<
# Never hurt the target: threads that come and go, a function with known instruction
# boundaries (and a tracer that parks a thread inside it), a target blocked in one
# system call, and a SIGUSR1 counter.
$(FIXOUT)/churn: $(FIX)/churn.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
$(FIXOUT)/sled $(FIXOUT)/blocked $(FIXOUT)/signals $(FIXOUT)/parker: $(FIXOUT)/%: $(FIX)/%.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -o $@ $<
# A thread holding a lock a library constructor needs (-rdynamic: the library finds it).
$(FIXOUT)/holder: $(FIX)/holder.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fcf-protection=none -pthread -rdynamic -o $@ $<
# A second tracer, and an object file that is not a shared object (bad-input tests).
$(FIXOUT)/tracer: $(FIX)/tracer.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -o $@ $<
$(FIXOUT)/libfix.o: $(FIX)/libfix.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fPIC -c -o $@ $<

# Patch libraries: each replacement returns a value that names its version.
$(FIXOUT)/lib%.so: $(FIX)/lib%.c | $(FIXOUT)
	$(CC) $(FIXTURE_CFLAGS) -fPIC -shared -o $@ $<

$(FIXOUT)/%.json: $(FIX)/%.json | $(FIXOUT)
	cp $< $@

FIXTURE_FILES := $(FIXOUT)/loop $(FIXOUT)/loop-cet $(FIXOUT)/threads $(FIXOUT)/hammer $(FIXOUT)/tracer $(FIXOUT)/libfix.o \
  $(FIXOUT)/loop-nopie $(FIXOUT)/places $(FIXOUT)/ifunc $(FIXOUT)/clones \
  $(FIXOUT)/churn $(FIXOUT)/sled $(FIXOUT)/blocked $(FIXOUT)/signals $(FIXOUT)/parker $(FIXOUT)/holder \
  $(patsubst $(FIX)/%.c,$(FIXOUT)/%.so,$(wildcard $(FIX)/lib*.c)) \
  $(patsubst $(FIX)/%,$(FIXOUT)/%,$(wildcard $(FIX)/*.json))

fixtures: $(FIXTURE_FILES)

build: deps
	$(SWIFT) build -c release

lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Package.swift

format:
	$(SWIFT) format --in-place --recursive Sources Tests Package.swift

test: deps fixtures lint
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

demo: deps fixtures
	$(SWIFT) build -c release
	@SWPATCH=$$($(SWIFT) build -c release --show-bin-path)/swpatch bash $(FIX)/demo.sh

clean:
	rm -rf .build $(FIXOUT)
