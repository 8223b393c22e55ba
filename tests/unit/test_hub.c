/* The broker's agent link over a real nng socket: a REQ client plays the
 * agent against hub.c and a real SQLite store. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "codec.h"
#include "hub.h"
#include "store.h"
#include "util.h"

struct fx {
        char dir[64];
        char url[128];
        struct store *store;
        struct hub *hub;
        nng_socket req;
};

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        char db[128];
        snprintf(f->dir, sizeof(f->dir), "/tmp/tasman-hub.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(db, sizeof(db), "%s/db", f->dir);
        snprintf(f->url, sizeof(f->url), "ipc://%s/agent.sock", f->dir);
        assert_int_equal(store_open(db, &f->store), 0);
        struct hub_config hc = { .url = f->url, .hold_ms = 300, .max_agents = 16 };
        assert_int_equal(hub_start(&hc, f->store, &f->hub), 0);
        assert_int_equal(nng_req0_open(&f->req), 0);
        nng_socket_set_ms(f->req, NNG_OPT_RECVTIMEO, 5000);
        nng_socket_set_ms(f->req, NNG_OPT_SENDTIMEO, 5000);
        nng_socket_set_ms(f->req, NNG_OPT_RECONNMINT, 10);
        assert_int_equal(nng_dial(f->req, f->url, NULL, 0), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        char cmd[160];
        nng_close(f->req);
        hub_free(f->hub);
        store_free(f->store);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

/* Sends raw bytes, returns the decoded reply (or fails the test). */
static void raw_roundtrip(nng_socket s, const void *buf, size_t len, struct tmsg *rep)
{
        void *in;
        size_t in_len;
        assert_int_equal(nng_send(s, (void *)buf, len, 0), 0);
        assert_int_equal(nng_recv(s, &in, &in_len, NNG_FLAG_ALLOC), 0);
        assert_int_equal(codec_decode(in, in_len, rep), 0);
        nng_free(in, in_len);
}

static void roundtrip(nng_socket s, struct tmsg *req, struct tmsg *rep)
{
        uint8_t *buf;
        size_t len;
        assert_int_equal(codec_encode(req, &buf, &len), 0);
        raw_roundtrip(s, buf, len, rep);
        free(buf);
        assert_int_equal(rep->request_id, req->request_id);
}

static void hello(nng_socket s, const char *host, uint64_t *ret_host)
{
        struct tmsg req = { .request_id = 1, .type = TMSG_HELLO }, rep;
        strcpy(req.hello.host_id, host);
        strcpy(req.hello.site, "tas-1");
        strcpy(req.hello.boot_id, "boot-1");
        strcpy(req.hello.hv_type, "test");
        req.hello.vcpus = 8;
        req.hello.ram_mb = 16384;
        req.hello.disk_gb = 500;
        roundtrip(s, &req, &rep);
        assert_int_equal(rep.type, TMSG_HELLO_REPLY);
        assert_int_equal(rep.hello_reply.hold_ms, 300);
        *ret_host = rep.hello_reply.host_num;
}

static void sync_req(struct tmsg *req, const char *host, uint64_t applied)
{
        memset(req, 0, sizeof(*req));
        req->request_id = 7;
        req->type = TMSG_SYNC;
        strcpy(req->sync.host_id, host);
        strcpy(req->sync.boot_id, "boot-1");
        req->sync.applied_generation = applied;
}

static void test_garbage_gets_error_and_link_survives(void **state)
{
        struct fx *f = *state;
        struct tmsg rep;
        uint64_t host;
        static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02 };

        raw_roundtrip(f->req, junk, sizeof(junk), &rep);
        assert_int_equal(rep.type, TMSG_ERROR);
        assert_int_equal(rep.error.code, EINVAL);
        tmsg_clear(&rep);
        /* The same link still serves a good request afterwards. */
        hello(f->req, "hv1", &host);
        assert_true(host > 0);
}

/* A raw SP-over-IPC peer (nng's own client hangs in nng_close after its
 * pipe is dropped mid-send): handshake as a REQ, then announce a message
 * larger than TMSG_MAX_BYTES. The hub must drop that connection. */
static void test_oversized_message_dropped_others_served(void **state)
{
        struct fx *f = *state;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        static const uint8_t hello_sp[8] = { 0, 'S', 'P', 0, 0, 0x30, 0, 0 };
        uint8_t peer[8], hdr[9], junk[4096] = { 0 };
        uint64_t big = (uint64_t)TMSG_MAX_BYTES + 1024, host;
        struct timeval tv = { .tv_sec = 5 };
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);

        assert_true(fd >= 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->url + strlen("ipc://"));
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        assert_int_equal(write(fd, hello_sp, sizeof(hello_sp)), 8);
        assert_int_equal(read(fd, peer, sizeof(peer)), 8);
        assert_int_equal(peer[5], 0x31); /* the hub is a REP */
        hdr[0] = 1;
        for (int i = 0; i < 8; i++)
                hdr[1 + i] = (uint8_t)(big >> (56 - 8 * i));
        assert_int_equal(write(fd, hdr, sizeof(hdr)), 9);
        /* The hub may have hung up already: no SIGPIPE for that. */
        (void)!send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
        /* The hub hangs up (EOF or reset), and does not wait for 8 MiB. */
        ssize_t n = read(fd, peer, sizeof(peer));
        assert_true(n <= 0);
        if (n < 0)
                assert_true(errno == ECONNRESET || errno == EPIPE);
        close(fd);
        /* The first agent is served as before. */
        hello(f->req, "hv1", &host);
}

static void test_sync_unknown_host(void **state)
{
        struct fx *f = *state;
        struct tmsg req, rep;
        sync_req(&req, "nobody", 0);
        roundtrip(f->req, &req, &rep);
        assert_int_equal(rep.type, TMSG_ERROR);
        assert_int_equal(rep.error.code, TMSG_E_UNKNOWN_HOST);
}

static void test_sync_long_poll_and_notify(void **state)
{
        struct fx *f = *state;
        struct tmsg req, rep;
        uint64_t host;
        struct account a;
        struct vm vm;

        hello(f->req, "hv1", &host);
        /* Behind: answered at once with the whole desired state. */
        sync_req(&req, "hv1", 0);
        roundtrip(f->req, &req, &rep);
        assert_int_equal(rep.type, TMSG_SYNC_REPLY);
        uint64_t gen = rep.sync_reply.generation;
        assert_true(gen >= 1);
        assert_int_equal(rep.sync_reply.n_domains, 0);
        tmsg_clear(&rep);

        /* Up to date: parked until hold_ms, then the same state again. */
        sync_req(&req, "hv1", gen);
        roundtrip(f->req, &req, &rep);
        assert_int_equal(rep.type, TMSG_SYNC_REPLY);
        assert_int_equal(rep.sync_reply.generation, gen);
        tmsg_clear(&rep);

        /* Parked, then a VPS is placed on the host: the reply carries it. */
        assert_int_equal(store_account_create(f->store, "acme", TIER_PRO, &a), 0);
        uint8_t *buf;
        size_t len;
        sync_req(&req, "hv1", gen);
        req.sync.max_hold_ms = 0;
        assert_int_equal(codec_encode(&req, &buf, &len), 0);
        assert_int_equal(nng_send(f->req, buf, len, 0), 0);
        free(buf);
        struct vm_new nv = { .account_id = a.id, .name = "web1", .size = "s", .image = "debian-12",
                             .vcpus = 1, .ram_mb = 1024, .disk_gb = 10 };
        assert_int_equal(store_vm_create(f->store, &nv, util_now_ms(), 0, &vm), 0);
        hub_notify(f->hub, host);
        void *in;
        size_t in_len;
        assert_int_equal(nng_recv(f->req, &in, &in_len, NNG_FLAG_ALLOC), 0);
        assert_int_equal(codec_decode(in, in_len, &rep), 0);
        nng_free(in, in_len);
        assert_int_equal(rep.type, TMSG_SYNC_REPLY);
        assert_true(rep.sync_reply.generation > gen);
        assert_int_equal(rep.sync_reply.n_domains, 1);
        assert_int_equal(rep.sync_reply.domains[0].vm_id, vm.id);
        assert_string_equal(rep.sync_reply.domains[0].hostname, "web1");
        assert_int_equal(rep.sync_reply.domains[0].power, POWER_RUNNING);
        tmsg_clear(&rep);
}

static void test_two_agents_parked_each_answered(void **state)
{
        struct fx *f = *state;
        nng_socket b;
        struct tmsg req, rep;
        uint64_t h1, h2;

        assert_int_equal(nng_req0_open(&b), 0);
        nng_socket_set_ms(b, NNG_OPT_RECVTIMEO, 5000);
        assert_int_equal(nng_dial(b, f->url, NULL, 0), 0);
        hello(f->req, "hv1", &h1);
        hello(b, "hv2", &h2);
        assert_true(h1 != h2);
        /* Both park at their generation; both are answered, each its own. */
        uint64_t g1, g2;
        assert_int_equal(store_host_generation(f->store, h1, &g1), 0);
        assert_int_equal(store_host_generation(f->store, h2, &g2), 0);
        sync_req(&req, "hv1", g1);
        roundtrip(f->req, &req, &rep);
        assert_int_equal(rep.type, TMSG_SYNC_REPLY);
        assert_int_equal(rep.sync_reply.generation, g1);
        tmsg_clear(&rep);
        sync_req(&req, "hv2", g2);
        roundtrip(b, &req, &rep);
        assert_int_equal(rep.type, TMSG_SYNC_REPLY);
        assert_int_equal(rep.sync_reply.generation, g2);
        tmsg_clear(&rep);
        nng_close(b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_garbage_gets_error_and_link_survives, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_oversized_message_dropped_others_served,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync_unknown_host, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync_long_poll_and_notify, setup, teardown),
                cmocka_unit_test_setup_teardown(test_two_agents_parked_each_answered, setup,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
