# Tasman: one non-recursive Makefile, everything into build/.
#   make                 build tasman-broker, tasman-agent, tasmanctl
#   make test            install deps, build, run every test (summary line last)
#   make SANITIZE=address,undefined test
#   make run             start a broker + agent on this machine (foreground)
#   make bench           build and run the benchmarks

VERSION ?= 0.1.0
PREFIX ?= /usr
DESTDIR ?=
CC ?= cc
SANITIZE ?=
V ?=

ifeq ($(SANITIZE),)
BUILD := build
OPT := -O2 -g
else
BUILD := build/san
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
endif

Q := $(if $(V),,@)
say = $(if $(V),,@printf '  %-7s %s\n' $(1) $(2);)

PKGS := libvirt libisofs-1 libnl-3.0 libnl-route-3.0 libprotobuf-c libcurl libmicrohttpd jansson sqlite3 openssl libpq
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2 -Wno-format-nonliteral -Wno-format-truncation
CFLAGS_ALL := -std=gnu11 $(OPT) $(WARN) -MMD -MP -D_GNU_SOURCE -DTASMAN_VERSION='"$(VERSION)"' \
	-Icommon -Iproto -Iagent -Ibroker -I$(BUILD)/gen $(CPPFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(OPT) $(LDFLAGS)

pc_cflags = $(shell pkg-config --cflags $(1) 2>/dev/null)
pc_libs = $(shell pkg-config --libs $(1) 2>/dev/null)

COMMON_SRC := common/log.c common/config.c common/ids.c common/util.c common/notify.c common/tz.c common/money.c
PROTO_SRC := proto/codec.c $(BUILD)/gen/tasman.pb-c.c
AGENT_LIB_SRC := agent/hv_libvirt.c agent/reconcile.c agent/domxml.c agent/imgcache.c agent/seed.c \
	agent/net.c
AGENT_SRC := agent/main.c
BROKER_LIB_SRC := broker/http.c broker/store.c broker/store_sqlite.c broker/store_pg.c broker/api_native.c broker/api_admin.c \
	broker/hub.c broker/json.c broker/catalog.c broker/auth.c broker/scheduler.c broker/metrics.c \
	broker/sshkey.c broker/ratelimit.c broker/templates.c broker/listcache.c broker/ipam.c broker/dns.c broker/jobs.c \
	broker/api_tilaa.c broker/apiuser.c broker/form.c broker/tilaa.c $(BUILD)/gen/openapi.c
BROKER_SRC := broker/main.c
CTL_SRC := tools/tasmanctl.c

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(patsubst $(BUILD)/%,%,$(1)))

COMMON_OBJ := $(call obj,$(COMMON_SRC))
PROTO_OBJ := $(call obj,$(PROTO_SRC))
AGENT_LIB_OBJ := $(call obj,$(AGENT_LIB_SRC))
BROKER_LIB_OBJ := $(call obj,$(BROKER_LIB_SRC))

LIBS_AGENT := $(call pc_libs,libvirt libisofs-1 libprotobuf-c libcurl libcrypto libnl-3.0) -lnng -lpthread
LIBS_BROKER := $(call pc_libs,libmicrohttpd jansson sqlite3 libpq openssl libprotobuf-c libcurl libargon2) -lnng -lpthread
LIBS_CTL := $(call pc_libs,libcurl jansson)

BINS := $(BUILD)/tasman-broker $(BUILD)/tasman-agent $(BUILD)/tasmanctl

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
BENCHES := $(BUILD)/bench/create_latency $(BUILD)/bench/sched $(BUILD)/bench/agents $(BUILD)/bench/snapshots \
	$(BUILD)/bench/net_apply

.PHONY: all deps test unit e2e run bench clean format install man deb test-deb
# Keep test and bench objects between runs (no relink every time).
.SECONDARY:
all: $(BINS)

deps:
	$(Q)scripts/install-deps

$(BUILD)/gen/tasman.pb-c.c $(BUILD)/gen/tasman.pb-c.h: proto/tasman.proto
	$(call say,PROTOC,$<)
	$(Q)mkdir -p $(BUILD)/gen
	$(Q)protoc-c --c_out=$(BUILD)/gen --proto_path=proto $<

# The OpenAPI document, served at /v1/openapi.json, compiled in as a string.
$(BUILD)/gen/openapi.c: broker/openapi.json
	$(call say,GEN,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q){ echo '/* generated from broker/openapi.json */'; echo 'const char api_openapi_json[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } >$@

$(BUILD)/obj/%.o: %.c | $(BUILD)/gen/tasman.pb-c.h
	$(call say,CC,$<)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) $(call pc_cflags,$(PKGS)) -c -o $@ $<

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	$(call say,CC,$<)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) -Wno-shadow $(call pc_cflags,libprotobuf-c) -c -o $@ $<

$(BUILD)/tasman-agent: $(call obj,$(AGENT_SRC)) $(AGENT_LIB_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_AGENT)

$(BUILD)/tasman-broker: $(call obj,$(BROKER_SRC)) $(BROKER_LIB_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_BROKER)

$(BUILD)/tasmanctl: $(call obj,$(CTL_SRC)) $(COMMON_OBJ)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_CTL)

# Unit tests link every library object; the linker takes what each needs.
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(AGENT_LIB_OBJ) $(BROKER_LIB_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	$(call say,LD,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_AGENT) $(LIBS_BROKER) $(call pc_libs,cmocka)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(AGENT_LIB_OBJ) $(BUILD)/obj/broker/scheduler.o $(PROTO_OBJ) $(COMMON_OBJ)
	$(call say,LD,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_AGENT) $(call pc_libs,libcurl jansson) -lpthread

test: deps
	$(Q)$(MAKE) --no-print-directory all-tests
	$(Q)BUILD=$(BUILD) tests/run

# The benchmarks are built with the tests, so they never rot unnoticed.
all-tests: $(BINS) $(UNIT_TESTS) $(BENCHES)

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) scripts/run-local

bench: deps
	$(Q)$(MAKE) --no-print-directory $(BINS) $(BENCHES)
	$(Q)BUILD=$(BUILD) bench/run

# Man pages from each binary's --help (help2man), for the packages.
MANS := $(BUILD)/man/tasman-broker.8 $(BUILD)/man/tasman-agent.8 $(BUILD)/man/tasmanctl.1
man: $(MANS)
$(BUILD)/man/%.8: $(BUILD)/%
	$(Q)mkdir -p $(dir $@)
	$(Q)help2man --no-info --section=8 --version-string=$(VERSION) -n "$$($< --help | sed -n 3p)" -o $@ $<
$(BUILD)/man/%.1: $(BUILD)/%
	$(Q)mkdir -p $(dir $@)
	$(Q)help2man --no-info --section=1 --version-string=$(VERSION) -n "the Tasman admins' command line" -o $@ $<

install: all man
	install -D -m 0755 $(BUILD)/tasman-broker $(DESTDIR)$(PREFIX)/sbin/tasman-broker
	install -D -m 0755 $(BUILD)/tasman-agent $(DESTDIR)$(PREFIX)/sbin/tasman-agent
	install -D -m 0755 $(BUILD)/tasmanctl $(DESTDIR)$(PREFIX)/bin/tasmanctl
	install -D -m 0644 $(BUILD)/man/tasman-broker.8 $(DESTDIR)$(PREFIX)/share/man/man8/tasman-broker.8
	install -D -m 0644 $(BUILD)/man/tasman-agent.8 $(DESTDIR)$(PREFIX)/share/man/man8/tasman-agent.8
	install -D -m 0644 $(BUILD)/man/tasmanctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/tasmanctl.1
	install -D -m 0644 packaging/etc/broker.conf $(DESTDIR)/etc/tasman/broker.conf
	install -D -m 0644 packaging/etc/agent.conf $(DESTDIR)/etc/tasman/agent.conf

# Debian packages into build/deb/ (DEB_VERSION overrides the changelog's).
deb: deps
	$(Q)DEB_VERSION=$(DEB_VERSION) packaging/build-deb

# Builds the packages and checks install, upgrade and purge in a chroot.
test-deb: deps
	$(Q)BUILD=$(BUILD) UNIT=0 TEST_DIRS=tests/packaging TEST_TIMEOUT=1500 tests/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
