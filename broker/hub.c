/* See hub.h. */
#include "hub.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "codec.h"
#include "log.h"
#include "util.h"

#define TICK_MS 100
#define TOUCH_EVERY_MS 2000 /* at most; host_timeout_ms / 10 if smaller */

enum hctx_state { H_RECV, H_BUSY, H_PARKED, H_SEND };

struct hctx {
        struct hub *hub;
        nng_ctx ctx;
        nng_aio *aio;
        enum hctx_state state;
        uint64_t host_id;
        uint64_t request_id;
        uint32_t pipe_id;
        int64_t deadline; /* monotonic ms; 0 = answer now */
};

struct hub {
        nng_socket sock;
        struct store *store;
        struct hub_config cfg;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct hctx **ctxs;
        size_t n_ctxs, cap_ctxs;
        size_t n_recv; /* contexts waiting for a request */
        int stopping;
        int64_t touch_every_ms;
        pthread_t thread;
        int watching; /* store_watch() tells of other brokers' changes */
};

static void ctx_cb(void *arg);

/* ---- replies ---- */

static void send_tmsg(struct hctx *c, const struct tmsg *m)
{
        uint8_t *buf = NULL;
        size_t len = 0;
        nng_msg *msg = NULL;
        int r = codec_encode(m, &buf, &len);

        if (r < 0) {
                struct tmsg e = { .request_id = m->request_id, .type = TMSG_ERROR };
                e.error.code = -r;
                snprintf(e.error.message, sizeof(e.error.message), "cannot encode reply: %s",
                         strerror(-r));
                if (codec_encode(&e, &buf, &len) < 0)
                        abort(); /* a fixed small message always encodes */
        }
        if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, buf, len) != 0)
                abort(); /* out of memory */
        free(buf);
        c->state = H_SEND;
        nng_aio_set_msg(c->aio, msg);
        nng_ctx_send(c->ctx, c->aio);
}

static void send_error(struct hctx *c, int code, const char *message)
{
        struct tmsg e = { .request_id = c->request_id, .type = TMSG_ERROR };
        e.error.code = code;
        util_strlcpy(e.error.message, message, sizeof(e.error.message));
        send_tmsg(c, &e);
}

static void send_desired(struct hctx *c)
{
        struct tmsg m = { .request_id = c->request_id, .type = TMSG_SYNC_REPLY };
        int r = store_host_desired(c->hub->store, c->host_id, &m.sync_reply);
        if (r < 0) {
                send_error(c, -r, "cannot read the host's desired state");
                return;
        }
        send_tmsg(c, &m);
        tmsg_clear(&m);
}

/* ---- contexts ---- */

/* Opens one more receiving context; caller holds the lock. */
static struct hctx *ctx_new_locked(struct hub *h)
{
        struct hctx *c;
        if (h->n_ctxs >= h->cfg.max_agents + 8)
                return NULL;
        if (h->n_ctxs == h->cap_ctxs) {
                size_t ncap = h->cap_ctxs ? h->cap_ctxs * 2 : 16;
                struct hctx **n = realloc(h->ctxs, ncap * sizeof(*n));
                if (!n)
                        return NULL;
                h->ctxs = n;
                h->cap_ctxs = ncap;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->hub = h;
        if (nng_ctx_open(&c->ctx, h->sock) != 0) {
                free(c);
                return NULL;
        }
        if (nng_aio_alloc(&c->aio, ctx_cb, c) != 0) {
                nng_ctx_close(c->ctx);
                free(c);
                return NULL;
        }
        c->state = H_RECV;
        h->ctxs[h->n_ctxs++] = c;
        h->n_recv++;
        return c;
}

static void handle_hello(struct hctx *c, const struct msg_hello *m)
{
        struct hub *h = c->hub;
        uint64_t id;
        int rebooted;

        if (!m->host_id[0] || !m->site[0]) {
                send_error(c, EINVAL, "hello needs host_id and site");
                return;
        }
        if (store_host_hello(h->store, m, util_now_ms(), &id, &rebooted) < 0) {
                send_error(c, EIO, "cannot record host");
                return;
        }
        log_info("host %s: joined (site %s, %s, %u vCPUs, %" PRIu64 " MiB, boot %s%s)",
                 m->host_id, m->site, m->hv_type, m->vcpus, m->ram_mb, m->boot_id,
                 rebooted ? ", rebooted" : "");
        struct tmsg rep = { .request_id = c->request_id, .type = TMSG_HELLO_REPLY };
        rep.hello_reply.host_num = id;
        rep.hello_reply.hold_ms = h->cfg.hold_ms;
        send_tmsg(c, &rep);
}

static void handle_sync(struct hctx *c, const struct msg_sync *m)
{
        struct hub *h = c->hub;
        struct hctx *spare = NULL;
        char boot_id[TMSG_STR];
        uint64_t host_id;
        uint64_t gen;
        int r;

        r = store_host_lookup(h->store, m->host_id, &host_id, boot_id, sizeof(boot_id));
        if (r == -ENOENT) {
                send_error(c, TMSG_E_UNKNOWN_HOST, "unknown host: send hello first");
                return;
        }
        if (r < 0 || store_host_observe(h->store, host_id, m, util_now_ms()) < 0) {
                send_error(c, EIO, "cannot record observed state");
                return;
        }
        if (strcmp(boot_id, m->boot_id) != 0) {
                /* Rebooted without a hello (the agent kept running?): have it
                 * join again so the reboot is recorded. */
                send_error(c, TMSG_E_UNKNOWN_HOST, "boot id changed: send hello");
                return;
        }
        c->host_id = host_id;

        /* Check the generation and park under the hub lock, so a
         * hub_notify() after a commit either is seen here or finds us. */
        pthread_mutex_lock(&h->lock);
        r = store_host_generation(h->store, host_id, &gen);
        if (r < 0 || gen != m->applied_generation || h->stopping) {
                pthread_mutex_unlock(&h->lock);
                if (r < 0)
                        send_error(c, EIO, "cannot read the host's generation");
                else
                        send_desired(c);
                return;
        }
        for (size_t i = 0; i < h->n_ctxs; i++) {
                struct hctx *o = h->ctxs[i];
                if (o != c && o->state == H_PARKED && o->host_id == host_id)
                        o->deadline = 0; /* superseded: flush it */
        }
        uint32_t hold = h->cfg.hold_ms;
        if (m->max_hold_ms && m->max_hold_ms < hold)
                hold = m->max_hold_ms;
        c->deadline = util_mono_ms() + hold;
        c->state = H_PARKED;
        if (h->n_recv == 0)
                spare = ctx_new_locked(h);
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        if (spare)
                nng_ctx_recv(spare->ctx, spare->aio);
}

static void handle_seed(struct hctx *c, const struct msg_seed_request *m)
{
        struct tmsg rep = { .request_id = c->request_id, .type = TMSG_SEED_REPLY };
        uint64_t host_id;
        char boot_id[TMSG_STR];
        int r;

        r = store_host_lookup(c->hub->store, m->host_id, &host_id, boot_id, sizeof(boot_id));
        if (r == -ENOENT) {
                send_error(c, TMSG_E_UNKNOWN_HOST, "unknown host: send hello first");
                return;
        }
        if (r == 0)
                r = store_vm_seed(c->hub->store, host_id, m->vm_id, &rep.seed_reply);
        if (r == -ENOENT) {
                send_error(c, ENOENT, "no such guest on this host");
                return;
        }
        if (r < 0) {
                send_error(c, EIO, "cannot read the guest's cloud-init inputs");
                return;
        }
        send_tmsg(c, &rep);
        tmsg_clear(&rep);
}

static void handle_request(struct hctx *c, nng_msg *msg)
{
        struct tmsg m;
        size_t len = nng_msg_len(msg);
        int r;

        c->pipe_id = nng_pipe_id(nng_msg_get_pipe(msg));
        r = codec_decode(nng_msg_body(msg), len, &m);
        nng_msg_free(msg);
        if (r < 0) {
                log_warn("agent link: undecodable message (%zu bytes) from pipe %" PRIu32
                         "; answered with an error",
                         len, c->pipe_id);
                c->request_id = 0;
                send_error(c, EINVAL, "undecodable message");
                return;
        }
        c->request_id = m.request_id;
        switch (m.type) {
        case TMSG_HELLO:
                handle_hello(c, &m.hello);
                break;
        case TMSG_SYNC:
                handle_sync(c, &m.sync);
                break;
        case TMSG_SEED_REQUEST:
                handle_seed(c, &m.seed_request);
                break;
        default:
                send_error(c, EINVAL, "unexpected message type");
        }
        tmsg_clear(&m);
}

static void ctx_cb(void *arg)
{
        struct hctx *c = arg;
        struct hub *h = c->hub;
        int rv = nng_aio_result(c->aio);

        if (c->state == H_SEND) {
                if (rv != 0) {
                        /* Not sent: the message is still ours. */
                        nng_msg_free(nng_aio_get_msg(c->aio));
                        nng_aio_set_msg(c->aio, NULL);
                }
                pthread_mutex_lock(&h->lock);
                if (h->stopping) {
                        pthread_mutex_unlock(&h->lock);
                        return;
                }
                c->state = H_RECV;
                c->host_id = 0;
                h->n_recv++;
                pthread_mutex_unlock(&h->lock);
                nng_ctx_recv(c->ctx, c->aio);
                return;
        }
        /* H_RECV completed. */
        pthread_mutex_lock(&h->lock);
        h->n_recv--;
        int stop = h->stopping || rv == NNG_ECLOSED;
        if (!stop)
                c->state = rv == 0 ? H_BUSY : H_RECV;
        if (!stop && rv != 0)
                h->n_recv++;
        pthread_mutex_unlock(&h->lock);
        if (stop) {
                if (rv == 0) {
                        nng_msg_free(nng_aio_get_msg(c->aio));
                        nng_aio_set_msg(c->aio, NULL);
                }
                return;
        }
        if (rv != 0) {
                nng_ctx_recv(c->ctx, c->aio);
                return;
        }
        handle_request(c, nng_aio_get_msg(c->aio));
}

static void on_pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
        struct hub *h = arg;
        uint32_t id = nng_pipe_id(p);
        uint64_t gone[8];
        size_t n_gone = 0;
        (void)ev;
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_ctxs; i++) {
                struct hctx *c = h->ctxs[i];
                if (c->state == H_PARKED && c->pipe_id == id) {
                        c->deadline = 0; /* the agent is gone: free the context */
                        if (n_gone < 8)
                                gone[n_gone++] = c->host_id;
                }
        }
        int stopping = h->stopping;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        /* It was heard from until now: the liveness threshold counts from
         * the disconnection, not from the last batched touch. */
        if (n_gone && !stopping)
                store_hosts_touch(h->store, gone, n_gone, util_now_ms());
}

void hub_notify(struct hub *h, uint64_t host_id)
{
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_ctxs; i++)
                if (h->ctxs[i]->state == H_PARKED && h->ctxs[i]->host_id == host_id)
                        h->ctxs[i]->deadline = 0;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
}

/* Another broker sharing the database changed a host's desired state
 * (store_watch(); host_id 0: any host's): its parked agent answers now. */
static void hub_store_changed(void *ud, uint64_t host_id)
{
        struct hub *h = ud;
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_ctxs; i++)
                if (h->ctxs[i]->state == H_PARKED && (!host_id || h->ctxs[i]->host_id == host_id))
                        h->ctxs[i]->deadline = 0;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
}

/* Sends the replies that are due and keeps parked hosts' last_seen fresh. */
static void *hub_thread(void *arg)
{
        struct hub *h = arg;
        int64_t last_touch = util_mono_ms(), last_live = last_touch;
        struct hctx **due = NULL;
        uint64_t *touch = NULL;
        size_t cap = 0;

        pthread_mutex_lock(&h->lock);
        while (!h->stopping) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += TICK_MS * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&h->cond, &h->lock, &ts);
                if (h->stopping)
                        break;
                if (cap < h->n_ctxs) {
                        cap = h->n_ctxs * 2;
                        struct hctx **nd = realloc(due, cap * sizeof(*due));
                        uint64_t *nt = realloc(touch, cap * sizeof(*touch));
                        if (nd)
                                due = nd;
                        if (nt)
                                touch = nt;
                        if (!nd || !nt) {
                                cap = 0;
                                continue;
                        }
                }
                int64_t now = util_mono_ms();
                int do_touch = now - last_touch >= h->touch_every_ms;
                size_t n_due = 0, n_touch = 0;
                for (size_t i = 0; i < h->n_ctxs; i++) {
                        struct hctx *c = h->ctxs[i];
                        if (c->state != H_PARKED)
                                continue;
                        if (c->deadline <= now) {
                                c->state = H_BUSY;
                                due[n_due++] = c;
                        } else if (do_touch) {
                                touch[n_touch++] = c->host_id;
                        }
                }
                pthread_mutex_unlock(&h->lock);
                for (size_t i = 0; i < n_due; i++)
                        send_desired(due[i]);
                if (do_touch) {
                        if (n_touch)
                                store_hosts_touch(h->store, touch, n_touch, util_now_ms());
                        last_touch = now;
                }
                if (h->cfg.host_timeout_ms > 0 && now - last_live >= 1000) {
                        store_hosts_liveness(h->store, util_now_ms(), h->cfg.host_timeout_ms,
                                             NULL, NULL);
                        last_live = now;
                }
                pthread_mutex_lock(&h->lock);
        }
        pthread_mutex_unlock(&h->lock);
        free(due);
        free(touch);
        return NULL;
}

int hub_start(const struct hub_config *cfg, struct store *s, struct hub **ret)
{
        struct hub *h = calloc(1, sizeof(*h));
        struct hctx *first[2] = { NULL, NULL };
        int rv;

        if (!h)
                return -ENOMEM;
        h->store = s;
        h->cfg = *cfg;
        h->touch_every_ms = TOUCH_EVERY_MS;
        /* A parked agent is heard from continuously; last_seen says so
         * in batches, at most a tenth of the threshold late. */
        if (cfg->host_timeout_ms > 0 && cfg->host_timeout_ms / 10 < h->touch_every_ms)
                h->touch_every_ms = cfg->host_timeout_ms / 10;
        if (h->touch_every_ms < 50)
                h->touch_every_ms = 50;
        store_set_seen_slack(s, h->touch_every_ms);
        pthread_mutex_init(&h->lock, NULL);
        /* Timed waits on the monotonic clock: a wall-clock step must not
         * stall or rush the replies. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&h->cond, &ca);
        pthread_condattr_destroy(&ca);
        if ((rv = nng_rep0_open(&h->sock)) != 0) {
                log_error("agent link: cannot open socket: %s", nng_strerror(rv));
                goto fail;
        }
        nng_socket_set_size(h->sock, NNG_OPT_RECVMAXSZ, TMSG_MAX_BYTES);
        nng_pipe_notify(h->sock, NNG_PIPE_EV_REM_POST, on_pipe_removed, h);
        pthread_mutex_lock(&h->lock);
        for (int i = 0; i < 2; i++)
                first[i] = ctx_new_locked(h);
        pthread_mutex_unlock(&h->lock);
        if (!first[0] || !first[1]) {
                log_error("agent link: cannot open contexts");
                goto fail;
        }
        if ((rv = nng_listen(h->sock, cfg->url, NULL, 0)) != 0) {
                log_error("agent link %s: cannot listen: %s", cfg->url, nng_strerror(rv));
                goto fail;
        }
        for (int i = 0; i < 2; i++)
                nng_ctx_recv(first[i]->ctx, first[i]->aio);
        if (pthread_create(&h->thread, NULL, hub_thread, h) != 0)
                goto fail;
        /* Several brokers may share the database: their changes wake the
         * agents parked here too. Without it they wait out hold_ms. */
        if (store_watch(s, hub_store_changed, h) == 0)
                h->watching = 1;
        else
                log_warn("agent link: other brokers' changes reach parked agents after"
                         " hold_ms only");
        *ret = h;
        return 0;
fail:
        h->stopping = 1;
        nng_close(h->sock);
        for (size_t i = 0; i < h->n_ctxs; i++) {
                nng_aio_free(h->ctxs[i]->aio);
                free(h->ctxs[i]);
        }
        free(h->ctxs);
        free(h);
        return -EADDRINUSE;
}

void hub_free(struct hub *h)
{
        if (!h)
                return;
        if (h->watching)
                store_watch(h->store, NULL, NULL);
        pthread_mutex_lock(&h->lock);
        h->stopping = 1;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
        nng_close(h->sock);
        for (size_t i = 0; i < h->n_ctxs; i++) {
                nng_aio_stop(h->ctxs[i]->aio);
                if (h->ctxs[i]->state == H_SEND) {
                        nng_msg *m = nng_aio_get_msg(h->ctxs[i]->aio);
                        if (m && nng_aio_result(h->ctxs[i]->aio) != 0)
                                nng_msg_free(m);
                }
                nng_aio_free(h->ctxs[i]->aio);
                free(h->ctxs[i]);
        }
        free(h->ctxs);
        pthread_cond_destroy(&h->cond);
        pthread_mutex_destroy(&h->lock);
        free(h);
}
