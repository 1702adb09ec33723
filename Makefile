# libresil: GNU make, one file list.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
SYSCONFDIR ?= $(PREFIX)/etc
MANDIR     ?= $(PREFIX)/share/man
DESTDIR    ?=

VERSION  := 0.1.0
SONAME   := libresil.so.0
CC       ?= cc
BUILD    ?= build

PKGS      := libcares
DEB_BUILD := build-essential pkg-config libc-ares-dev libcriterion-dev
DEB_NET   := iproute2 nftables dnsmasq-base python3 curl socat netcat-openbsd \
             redis-server redis-tools iperf3 file

CFLAGS_BASE := -std=gnu11 -Wall -Wextra -Werror -fPIC -fvisibility=hidden \
               -D_GNU_SOURCE -Ilib -g
OPT      ?= -O2
SAN      ?=
CFLAGS   += $(CFLAGS_BASE) $(OPT) $(SAN)
LDLIBS_SO = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lpthread

LIB_SRC  := lib/status.c lib/log.c lib/config.c lib/addr.c lib/table.c \
            lib/names.c lib/health.c lib/race.c lib/sys.c lib/engine.c \
            lib/events.c
SHIM_SRC := shim/init.c shim/socket.c shim/dns.c shim/io.c shim/poll.c
UNIT_SRC := $(wildcard tests/unit/*.c)
DRV_SRC  := $(wildcard tests/drivers/*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
SHIM_OBJ := $(SHIM_SRC:%.c=$(BUILD)/%.o)
DRIVERS  := $(DRV_SRC:tests/drivers/%.c=$(BUILD)/drivers/%)

.PHONY: all deps deps-net check test unit drivers net asan bench demo \
        install uninstall clean symbols

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

$(BUILD)/libresil.so: $(SHIM_OBJ) $(BUILD)/libresil.a shim/libresil.map
	$(CC) $(CFLAGS) -shared -Wl,-soname,$(SONAME) \
	  -Wl,--version-script=shim/libresil.map -Wl,-z,now -Wl,-z,relro \
	  -o $@ $(SHIM_OBJ) $(BUILD)/libresil.a $(LDLIBS_SO)
	@scripts/check-symbols.sh $@ shim/libresil.map

symbols: $(BUILD)/libresil.so

$(BUILD)/unit-tests: $(UNIT_SRC) $(BUILD)/libresil.a
	$(CC) $(CFLAGS) -Itests/unit -o $@ $(UNIT_SRC) $(BUILD)/libresil.a \
	  $(shell pkg-config --libs criterion $(PKGS)) -lpthread

$(BUILD)/drivers/%: tests/drivers/%.c tests/drivers/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE \
	  -Itests/drivers -o $@ $< -lpthread -ldl
$(BUILD)/drivers/libearly.so: tests/drivers/early/early.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -fPIC -shared -o $@ $<
$(BUILD)/drivers/early_main: tests/drivers/early/early_main.c \
                             $(BUILD)/drivers/libearly.so
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -o $@ $< \
	  -L$(BUILD)/drivers -learly -Wl,-rpath,'$$ORIGIN'

drivers: $(BUILD)/libresil.so $(DRIVERS) $(BUILD)/drivers/early_main

unit: deps $(BUILD)/unit-tests
	$(BUILD)/unit-tests --jobs 2

# The whole suite: unit, preload drivers, network scenarios, then unit and
# drivers again under AddressSanitizer + UBSan.
test check: deps-net
	$(MAKE) --no-print-directory unit drivers
	tests/drivers/run.sh $(BUILD)
	tests/net/run.sh $(BUILD)
	tests/tools/run.sh $(BUILD)
	$(MAKE) --no-print-directory asan

asan:
	$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  build-asan/unit-tests build-asan/libresil.so drivers-asan
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  build-asan/unit-tests --jobs 2
	RESIL_SAN=1 tests/drivers/run.sh build-asan

drivers-asan: $(BUILD)/libresil.so $(DRIVERS) $(BUILD)/drivers/early_main

bench: deps-net all
	tests/bench/run.sh $(BUILD)

demo: deps-net all
	scripts/demo.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(BUILD)/libresil.so $(DESTDIR)$(LIBDIR)/libresil.so.$(VERSION)
	ln -sf libresil.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libresil.so

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libresil.so.$(VERSION) \
	  $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libresil.so

clean:
	rm -rf build build-asan
