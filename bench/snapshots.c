/* bench/snapshots: a snapshot made, or restored, through the whole stack
 * (HTTP, store commit, agent link, agent, libvirt), timed from the POST to
 * the moment the API shows it done. bench/run-qemu runs it beside `virsh
 * snapshot-create` / `snapshot-revert` of the same disk, in the same run.
 *
 *   snapshots --api URL --key KEY --vps ID [--count N] [--online] [--restore]
 *
 * Create: POST /v1/vps/ID/snapshots, then GET the snapshot until it is
 * "ready" (then it is deleted again, untimed). Restore: one snapshot made
 * first, then POST .../restore and GET the VPS until it is no longer
 * "restoring". Prints each run's milliseconds and their median.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

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

static CURL *curl;
static struct curl_slist *hdrs;
static struct buf resp;

static long request(const char *method, const char *url, const char *body)
{
        long code = 0;
        resp.len = 0;
        resp.data[0] = '\0';
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        if (!body)
                curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &resp);
        if (curl_easy_perform(curl) != CURLE_OK)
                return -1;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
        return code;
}

static void data_str(const char *key, char *out, size_t n)
{
        json_t *j = json_loads(resp.data, 0, NULL);
        json_t *v = json_object_get(json_object_get(j, "data"), key);
        snprintf(out, n, "%s", json_is_string(v) ? json_string_value(v) : "");
        json_decref(j);
}

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

/* GETs url until data.key is (want_eq) or is not (!want_eq) value; 60 s at
 * most. 0, or -1 with a message. */
static int wait_field(const char *url, const char *key, const char *value, int want_eq)
{
        char got[64];
        for (int k = 0; k < 600000; k++) {
                long code = request("GET", url, NULL);
                if (code != 200) {
                        fprintf(stderr, "snapshots: GET %s: HTTP %ld %s\n", url, code, resp.data);
                        return -1;
                }
                data_str(key, got, sizeof(got));
                if (!strcmp(got, "error")) {
                        fprintf(stderr, "snapshots: %s is in error: %s\n", url, resp.data);
                        return -1;
                }
                if ((strcmp(got, value) == 0) == want_eq)
                        return 0;
                usleep(100);
        }
        fprintf(stderr, "snapshots: %s: %s stayed %s\n", url, key, got);
        return -1;
}

/* Makes a snapshot; its URL into url. */
static int make_snapshot(const char *api, const char *vps, int i, int online, char *url, size_t n)
{
        char body[128], sid[64];
        snprintf(url, n, "%s/v1/vps/%s/snapshots", api, vps);
        snprintf(body, sizeof(body), "{\"name\":\"bench-%d\",\"online\":%s}", i,
                 online ? "true" : "false");
        long code = request("POST", url, body);
        if (code != 202) {
                fprintf(stderr, "snapshots: POST %s: HTTP %ld %s\n", url, code, resp.data);
                return -1;
        }
        data_str("id", sid, sizeof(sid));
        snprintf(url, n, "%s/v1/vps/%s/snapshots/%s", api, vps, sid);
        return wait_field(url, "status", "ready", 1);
}

static int delete_snapshot(const char *url)
{
        long code = request("DELETE", url, NULL);
        if (code != 202) {
                fprintf(stderr, "snapshots: DELETE %s: HTTP %ld %s\n", url, code, resp.data);
                return -1;
        }
        for (int k = 0; k < 600000; k++) {
                if ((code = request("GET", url, NULL)) == 404)
                        return 0;
                usleep(100);
        }
        fprintf(stderr, "snapshots: %s never went\n", url);
        return -1;
}

int main(int argc, char **argv)
{
        const char *api = NULL, *key = NULL, *vps = NULL;
        int count = 10, online = 0, restore = 0;
        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--online"))
                        online = 1;
                else if (!strcmp(argv[i], "--restore"))
                        restore = 1;
                else if (i + 1 < argc && !strcmp(argv[i], "--api"))
                        api = argv[++i];
                else if (i + 1 < argc && !strcmp(argv[i], "--key"))
                        key = argv[++i];
                else if (i + 1 < argc && !strcmp(argv[i], "--vps"))
                        vps = argv[++i];
                else if (i + 1 < argc && !strcmp(argv[i], "--count"))
                        count = atoi(argv[++i]);
                else
                        api = NULL, i = argc;
        }
        if (!api || !key || !vps || count < 1 || count > 1000) {
                fprintf(stderr, "usage: snapshots --api URL --key KEY --vps ID [--count N] "
                                "[--online] [--restore]\n");
                return 2;
        }
        char auth[160], url[512], snap_url[512], body[64];
        int64_t *ms = calloc((size_t)count, sizeof(*ms));
        curl = curl_easy_init();
        if (!ms || !curl)
                return 1;
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        hdrs = curl_slist_append(hdrs, auth);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");

        if (restore && make_snapshot(api, vps, 0, online, snap_url, sizeof(snap_url)) < 0)
                return 1;
        for (int i = 0; i < count; i++) {
                int64_t t0 = util_mono_us();
                if (!restore) {
                        if (make_snapshot(api, vps, i + 1, online, url, sizeof(url)) < 0)
                                return 1;
                        ms[i] = util_mono_us() - t0;
                        if (delete_snapshot(url) < 0)
                                return 1;
                } else {
                        char sid[64];
                        const char *p = strrchr(snap_url, '/');
                        snprintf(sid, sizeof(sid), "%s", p ? p + 1 : "");
                        snprintf(url, sizeof(url), "%s/v1/vps/%s/snapshots/%s/restore", api, vps,
                                 sid);
                        long code = request("POST", url, "{}");
                        if (code != 202) {
                                fprintf(stderr, "snapshots: POST %s: HTTP %ld %s\n", url, code,
                                        resp.data);
                                return 1;
                        }
                        snprintf(url, sizeof(url), "%s/v1/vps/%s", api, vps);
                        if (wait_field(url, "status", "restoring", 0) < 0)
                                return 1;
                        ms[i] = util_mono_us() - t0;
                }
                printf("%s %d: %.1f ms\n", restore ? "restore" : "create", i + 1, ms[i] / 1000.0);
        }
        if (restore && delete_snapshot(snap_url) < 0)
                return 1;
        qsort(ms, (size_t)count, sizeof(*ms), cmp_i64);
        snprintf(body, sizeof(body), "%.1f", ms[(count - 1) / 2] / 1000.0);
        printf("median %s ms\n", body);
        free(ms);
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(curl);
        return 0;
}
