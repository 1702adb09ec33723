# libresil: GNU make, one file list.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
# /usr installs keep their configuration in /etc (FHS), others beside them
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
MANDIR     ?= $(PREFIX)/share/man
DESTDIR    ?=

VERSION  := 0.1.0
SONAME   := libresil.so.0
CC       ?= cc
BUILD    ?= build

PKGS      := libcares libsodium
DEB_BUILD := build-essential pkg-config libc-ares-dev libcriterion-dev \
             libsodium-dev clang libclang-rt-14-dev
DEB_NET   := iproute2 nftables dnsmasq-base python3 curl socat netcat-openbsd \
             redis-server redis-tools iperf3 file valgrind postgresql

CFLAGS_BASE := -std=gnu11 -Wall -Wextra -Werror -fPIC -fvisibility=hidden \
               -D_GNU_SOURCE -Ilib -g
OPT      ?= -O2
SAN      ?=
CFLAGS   += $(CFLAGS_BASE) $(OPT) $(SAN)
# c-ares is linked in statically (its archive is PIC on Debian) and kept
# hidden: a preload whose own dependency is missing would stop the program
# from starting, where a missing preload only draws a loader warning.
CARES_A   = $(shell pkg-config --variable=libdir libcares 2>/dev/null)/libcares.a
SODIUM_A  = $(shell pkg-config --variable=libdir libsodium \
              2>/dev/null)/libsodium.a
LDLIBS_SO = -Wl,--exclude-libs,ALL $(CARES_A) $(SODIUM_A) -ldl -lpthread

LIB_SRC  := lib/status.c lib/log.c lib/config.c lib/addr.c lib/table.c \
            lib/names.c lib/health.c lib/path.c lib/race.c lib/sys.c lib/engine.c \
            lib/events.c lib/dns.c lib/swap.c lib/monitor.c lib/conn.c \
            lib/session_wire.c lib/ring.c lib/session_crypto.c lib/resume.c \
            lib/fds.c lib/epoll.c lib/session.c lib/resumer.c \
            lib/session_io.c lib/linger.c
SHIM_SRC := shim/init.c shim/socket.c shim/dns.c shim/io.c shim/poll.c
UNIT_SRC := $(wildcard tests/unit/*.c)
DRV_SRC  := $(wildcard tests/drivers/*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
SHIM_OBJ := $(SHIM_SRC:%.c=$(BUILD)/%.o)
DRIVERS  := $(DRV_SRC:tests/drivers/%.c=$(BUILD)/drivers/%)

.PHONY: all deps deps-net check test unit drivers net asan tsan bench demo \
        install uninstall clean symbols fuzz fuzz-corpus

all: $(BUILD)/libresil.so

# Installs what is missing when root, else prints the one apt-get line.
deps:
	@scripts/deps.sh $(DEB_BUILD)
deps-net:
	@scripts/deps.sh $(DEB_BUILD) $(DEB_NET)

$(BUILD)/%.o: %.c lib/*.h shim/*.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libresil.a: $(LIB_OBJ)
	ar rcs $@ $^

# -Bsymbolic-functions: references to our own functions (init.c compares
# what dlsym finds against the hook) bind at link time, not by a symbol
# look-up at every process start. No -z now: binding every import at load
# cost about 60,000 instructions at every start; bound lazily, a process
# pays for the functions it calls. Full RELRO would protect little here:
# `real` (lib/sys.h) is by design a writable table of function pointers.
$(BUILD)/libresil.so: $(SHIM_OBJ) $(BUILD)/libresil.a shim/libresil.map
	$(CC) $(CFLAGS) -shared -Wl,-soname,$(SONAME) \
	  -Wl,--version-script=shim/libresil.map -Wl,-Bsymbolic-functions \
	  -Wl,-z,relro \
	  -o $@ $(SHIM_OBJ) $(BUILD)/libresil.a $(LDLIBS_SO)
	@scripts/check-symbols.sh $@ shim/libresil.map

symbols: $(BUILD)/libresil.so

$(BUILD)/unit-tests: $(UNIT_SRC) $(BUILD)/libresil.a
	$(CC) $(CFLAGS) -Itests/unit -o $@ $(UNIT_SRC) $(BUILD)/libresil.a \
	  $(shell pkg-config --libs criterion $(PKGS)) -lpthread

# the drivers' own sanitizer flags (make tsan)
DRV_SAN  ?=
$(BUILD)/drivers/%: tests/drivers/%.c tests/drivers/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE $(DRV_SAN) \
	  -Itests/drivers -o $@ $< -lpthread -ldl
$(BUILD)/drivers/libearly.so: tests/drivers/early/early.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -fPIC -shared $(DRV_SAN) \
	  -o $@ $<
$(BUILD)/drivers/early_main: tests/drivers/early/early_main.c \
                             $(BUILD)/drivers/libearly.so
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 $(DRV_SAN) -o $@ $< \
	  -L$(BUILD)/drivers -learly -Wl,-rpath,'$$ORIGIN'

drivers: $(BUILD)/libresil.so $(DRIVERS) $(BUILD)/drivers/early_main

unit: deps $(BUILD)/unit-tests
	$(BUILD)/unit-tests --jobs 2

# libFuzzer (Debian's clang) on every parser of network bytes, from the
# seed corpus in the tree; new inputs go to $(BUILD)/fuzz/found, a crash
# leaves its input in $(BUILD)/fuzz/ and fails the target.
FUZZ_CC   ?= clang
FUZZ_TIME ?= 20
FUZZ_SRC  := lib/session_wire.c lib/session_crypto.c lib/ring.c \
             lib/resume.c lib/status.c lib/addr.c lib/sys.c
$(BUILD)/fuzz/fuzz_session: tests/fuzz/fuzz_session.c tests/fuzz/*.h \
                            $(FUZZ_SRC) lib/*.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	  -Itests/fuzz -o $@ tests/fuzz/fuzz_session.c $(FUZZ_SRC) \
	  $(shell pkg-config --libs libsodium) -lpthread
fuzz: deps $(BUILD)/fuzz/fuzz_session
	rm -rf $(BUILD)/fuzz/found && mkdir -p $(BUILD)/fuzz/found
	$(BUILD)/fuzz/fuzz_session -max_total_time=$(FUZZ_TIME) -max_len=600 \
	  -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
	  -artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/found tests/fuzz/corpus

# Rewrites the committed seeds (deterministic: same files every time).
$(BUILD)/fuzz/gen_corpus: tests/fuzz/gen_corpus.c tests/fuzz/*.h \
                          $(BUILD)/libresil.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/fuzz -o $@ $< $(BUILD)/libresil.a \
	  $(shell pkg-config --libs libsodium) -lpthread
fuzz-corpus: $(BUILD)/fuzz/gen_corpus
	rm -rf tests/fuzz/corpus && mkdir -p tests/fuzz/corpus
	$(BUILD)/fuzz/gen_corpus tests/fuzz/corpus

# The whole suite: unit, the fuzzer (FUZZ_TIME s), preload drivers, network
# scenarios, the instruction-count checks (callgrind: exact, no timing),
# then unit and drivers again under AddressSanitizer + UBSan.
# builds with two jobs (the CI machine's two cores): three builds of the
# library and the drivers (plain, ASan, TSan) otherwise take minutes
test check: deps-net
	$(MAKE) --no-print-directory -j2 unit drivers
	$(MAKE) --no-print-directory fuzz
	tests/drivers/run.sh $(BUILD)
	tests/net/run.sh $(BUILD)
	tests/net/fabric.sh $(BUILD)
	tests/net/session.sh $(BUILD)
	tests/tools/run.sh $(BUILD)
	tests/bench/cost.sh $(BUILD)
	$(MAKE) --no-print-directory asan
	$(MAKE) --no-print-directory tsan

asan:
	$(MAKE) --no-print-directory -j2 BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  build-asan/unit-tests build-asan/libresil.so drivers-asan
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  build-asan/unit-tests --jobs 2
	RESIL_SAN=1 tests/drivers/run.sh build-asan
	RESIL_SAN=1 tests/net/session.sh build-asan closing fionread burst

drivers-asan: $(BUILD)/libresil.so $(DRIVERS) $(BUILD)/drivers/early_main

# ThreadSanitizer: libresil and the drivers instrumented, the drivers run
# with TSan's runtime preloaded behind libresil (run.sh says why); any
# report fails the run. The drivers are instrumented also so that TSan's
# runtime initialises before any constructor: libearly's calls libresil's
# hooks before libresil's own runs, and an instrumented hook crashes in a
# runtime not yet set up.
tsan:
	$(MAKE) --no-print-directory -j2 BUILD=build-tsan OPT=-O1 \
	  SAN="-fsanitize=thread -fno-omit-frame-pointer" \
	  DRV_SAN=-fsanitize=thread drivers
	RESIL_SAN=tsan tests/drivers/run.sh build-tsan

bench: deps-net all
	tests/bench/run.sh $(BUILD)

demo: deps-net all
	scripts/demo.sh $(BUILD)

# resil-run learns where the library lives at install time; under DESTDIR it
# also finds it relative to itself (LIBREL), so a staged tree works as is.
DOCDIR_ := $(PREFIX)/share/doc/libresil
INSTALLED := $(LIBDIR)/libresil.so.$(VERSION) $(LIBDIR)/$(SONAME) \
  $(LIBDIR)/libresil.so $(BINDIR)/resil-run $(BINDIR)/resil-entrypoint \
  $(MANDIR)/man1/resil-run.1 $(MANDIR)/man7/libresil.7 \
  $(SYSCONFDIR)/libresil.conf.example $(DOCDIR_)/container.md \
  $(DOCDIR_)/systemd-dropin.conf $(DOCDIR_)/Dockerfile.libresil \
  $(DOCDIR_)/k8s-libresil.yaml
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 \
	  $(DESTDIR)$(SYSCONFDIR) $(DESTDIR)$(DOCDIR_)
	install -m 0755 $(BUILD)/libresil.so $(DESTDIR)$(LIBDIR)/libresil.so.$(VERSION)
	ln -sf libresil.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libresil.so
	sed -e "s|^_resil_libdir='@LIBDIR@'|_resil_libdir='$(LIBDIR)'|" \
	    -e "s|^_resil_librel='@LIBREL@'|_resil_librel='$$(realpath -m --relative-to=$(BINDIR) $(LIBDIR))'|" \
	    -e "s|^_resil_sysconfdir='@SYSCONFDIR@'|_resil_sysconfdir='$(SYSCONFDIR)'|" \
	    -e "s|^_resil_version='.*'|_resil_version='$(VERSION)'|" \
	    scripts/resil-run > $(DESTDIR)$(BINDIR)/resil-run.tmp
	chmod 0755 $(DESTDIR)$(BINDIR)/resil-run.tmp
	mv -f $(DESTDIR)$(BINDIR)/resil-run.tmp $(DESTDIR)$(BINDIR)/resil-run
	install -m 0755 scripts/resil-entrypoint $(DESTDIR)$(BINDIR)/resil-entrypoint
	install -m 0644 doc/resil-run.1 $(DESTDIR)$(MANDIR)/man1/resil-run.1
	install -m 0644 doc/libresil.7 $(DESTDIR)$(MANDIR)/man7/libresil.7
	install -m 0644 doc/libresil.conf.example \
	  $(DESTDIR)$(SYSCONFDIR)/libresil.conf.example
	install -m 0644 doc/container.md doc/systemd-dropin.conf \
	  doc/Dockerfile.libresil doc/k8s-libresil.yaml $(DESTDIR)$(DOCDIR_)

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	rmdir $(DESTDIR)$(DOCDIR_) 2>/dev/null || true

clean:
	rm -rf build build-asan build-tsan
