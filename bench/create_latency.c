/* bench/create_latency: POST /v1/vps -> status "running", through the whole
 * stack (HTTP, store commit, agent link, agent, libvirt test driver), beside
 * the time the same define + start takes through libvirt directly, in the
 * same run. Prints p50/p99 of both and our overhead.
 *
 *   create_latency --api URL --key KEY [--count N]
 * (bench/run starts a broker and an agent and calls this.)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "hv.h"
#include "util.h"

struct buf {
        char data[65536];
        size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
        struct buf *b = ud;
        size_t len = size * n;
        if (b->len + len >= sizeof(b->data))
                return 0;
        memcpy(b->data + b->len, p, len);
        b->len += len;
        b->data[b->len] = '\0';
        return len;
}

static int request(CURL *c, const char *method, const char *url, const char *body,
                   struct curl_slist *hdrs, struct buf *out, long *code)
{
        out->len = 0;
        out->data[0] = '\0';
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (!body)
                curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
        if (curl_easy_perform(c) != CURLE_OK)
                return -EIO;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
        return 0;
}

static const char *json_str(const char *text, const char *k1, const char *k2, char *out,
                            size_t n)
{
        json_t *j = json_loads(text, 0, NULL);
        json_t *v = json_object_get(json_object_get(j, k1), k2);
        snprintf(out, n, "%s", json_is_string(v) ? json_string_value(v) : "");
        json_decref(j);
        return out;
}

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

static double pct(int64_t *v, int n, double p)
{
        int i = (int)(p * (n - 1) + 0.5);
        return v[i] / 1000.0;
}

int main(int argc, char **argv)
{
        const char *api = NULL, *key = NULL;
        int count = 1000;
        for (int i = 1; i + 1 < argc; i += 2) {
                if (!strcmp(argv[i], "--api"))
                        api = argv[i + 1];
                else if (!strcmp(argv[i], "--key"))
                        key = argv[i + 1];
                else if (!strcmp(argv[i], "--count"))
                        count = atoi(argv[i + 1]);
        }
        if (!api || !key || count < 1 || count > 100000) {
                fprintf(stderr, "usage: create_latency --api URL --key KEY [--count N]\n");
                return 2;
        }
        int64_t *ours = calloc((size_t)count, sizeof(*ours));
        int64_t *direct = calloc((size_t)count, sizeof(*direct));
        CURL *c = curl_easy_init();
        struct curl_slist *hdrs = NULL;
        char auth[128], url[256], body[256], id[64], status[32];
        static struct buf b;
        long code;
        int polls = 0;

        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        hdrs = curl_slist_append(hdrs, auth);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        for (int i = 0; i < count; i++) {
                snprintf(url, sizeof(url), "%s/v1/vps", api);
                snprintf(body, sizeof(body),
                         "{\"name\":\"bench%d\",\"size\":\"standard-1vcpu-1gb\","
                         "\"image\":\"debian-12\"}",
                         i);
                int64_t t0 = util_mono_us();
                if (request(c, "POST", url, body, hdrs, &b, &code) < 0 || code != 201) {
                        fprintf(stderr, "create %d failed: HTTP %ld %s\n", i, code, b.data);
                        return 1;
                }
                json_str(b.data, "data", "id", id, sizeof(id));
                snprintf(url, sizeof(url), "%s/v1/vps/%s", api, id);
                for (int k = 0;; k++) {
                        if (request(c, "GET", url, NULL, hdrs, &b, &code) < 0 || code != 200) {
                                fprintf(stderr, "get %s failed: HTTP %ld\n", id, code);
                                return 1;
                        }
                        polls++;
                        if (!strcmp(json_str(b.data, "data", "status", status, sizeof(status)),
                                    "running"))
                                break;
                        if (k > 200000 || !strcmp(status, "error")) {
                                fprintf(stderr, "vps %s never ran (status %s)\n", id, status);
                                return 1;
                        }
                        usleep(50);
                }
                ours[i] = util_mono_us() - t0;
        }

        /* The reference: the same define + start through libvirt directly. */
        struct hv *hv;
        if (hv_open("test:///default", &hv) < 0)
                return 1;
        for (int i = 0; i < count; i++) {
                struct domxml_params p = { .vm_id = (uint64_t)i + 1, .hostname = "bench",
                                           .domain_type = "test", .vcpus = 1, .ram_mb = 1024 };
                int64_t t0 = util_mono_us();
                if (hv_define(hv, &p) < 0 || hv_start(hv, p.vm_id) < 0)
                        return 1;
                direct[i] = util_mono_us() - t0;
        }
        hv_free(hv);

        qsort(ours, (size_t)count, sizeof(*ours), cmp_i64);
        qsort(direct, (size_t)count, sizeof(*direct), cmp_i64);
        printf("create_latency: %d VPS, POST -> running (test:///default, loopback)\n", count);
        printf("  tasman  (POST to running): p50 %8.3f ms   p99 %8.3f ms   (%.1f GET polls/VPS)\n",
               pct(ours, count, 0.5), pct(ours, count, 0.99), (double)polls / count);
        printf("  libvirt (define + start):  p50 %8.3f ms   p99 %8.3f ms\n",
               pct(direct, count, 0.5), pct(direct, count, 0.99));
        printf("  overhead p50: %.3f ms (target < 5 ms)\n",
               pct(ours, count, 0.5) - pct(direct, count, 0.5));
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(c);
        free(ours);
        free(direct);
        return 0;
}
