#include "domxml.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv.h"

void domxml_name(uint64_t vm_id, char *buf, size_t len)
{
        snprintf(buf, len, HV_NAME_PREFIX "%" PRIu64, vm_id);
}

int domxml_parse_name(const char *name, uint64_t *ret_vm_id)
{
        size_t pl = strlen(HV_NAME_PREFIX);
        const char *p;
        uint64_t v = 0;

        if (strncmp(name, HV_NAME_PREFIX, pl) != 0)
                return -EINVAL;
        p = name + pl;
        if (*p < '1' || *p > '9' || strlen(p) > 19)
                return -EINVAL;
        for (; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        *ret_vm_id = v;
        return 0;
}

static void put_escaped(FILE *f, const char *s)
{
        for (; s && *s; s++) {
                switch (*s) {
                case '<': fputs("&lt;", f); break;
                case '>': fputs("&gt;", f); break;
                case '&': fputs("&amp;", f); break;
                case '\'': fputs("&apos;", f); break;
                case '"': fputs("&quot;", f); break;
                default: fputc(*s, f);
                }
        }
}

static void put_metadata(FILE *f, uint64_t vm_id, const struct domxml_params *p,
                         const char *indent)
{
        fprintf(f,
                "%s<" DOMXML_NS_PREFIX ":vm xmlns:" DOMXML_NS_PREFIX "=\"" DOMXML_NS "\">\n"
                "%s  <" DOMXML_NS_PREFIX ":id>%" PRIu64 "</" DOMXML_NS_PREFIX ":id>\n"
                "%s  <" DOMXML_NS_PREFIX ":reboot>%" PRIu64 "</" DOMXML_NS_PREFIX ":reboot>\n"
                "%s  <" DOMXML_NS_PREFIX ":rebuild>%" PRIu64 "</" DOMXML_NS_PREFIX ":rebuild>\n",
                indent, indent, vm_id, indent, p->reboot_done, indent, p->rebuild_done);
        /* Only when set: the documents of guests without them stay as they were. */
        if (p->host && domxml_host_valid(p->host))
                fprintf(f, "%s  <" DOMXML_NS_PREFIX ":host>%s</" DOMXML_NS_PREFIX ":host>\n",
                        indent, p->host);
        if (p->resize_done)
                fprintf(f, "%s  <" DOMXML_NS_PREFIX ":resize>%" PRIu64 "</" DOMXML_NS_PREFIX
                           ":resize>\n",
                        indent, p->resize_done);
        if (p->rescue)
                fprintf(f, "%s  <" DOMXML_NS_PREFIX ":rescue>1</" DOMXML_NS_PREFIX ":rescue>\n",
                        indent);
        if (p->restore_done)
                fprintf(f, "%s  <" DOMXML_NS_PREFIX ":restore>%" PRIu64 "</" DOMXML_NS_PREFIX
                           ":restore>\n",
                        indent, p->restore_done);
        fprintf(f, "%s</" DOMXML_NS_PREFIX ":vm>\n", indent);
}

int domxml_host_valid(const char *s)
{
        size_t n = 0;
        for (; s && s[n]; n++) {
                char c = s[n];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                        return 0;
        }
        return n > 0 && n < DOMXML_HOST_MAX;
}

static int set(const char *s)
{
        return s && *s;
}

static void put_params(FILE *f, const char *name, const char *const *v, size_t n)
{
        for (size_t k = 0; k < n && k < DOMXML_NIC_IPS_MAX; k++) {
                fprintf(f, "        <parameter name='%s' value='", name);
                put_escaped(f, v[k]);
                fprintf(f, "'/>\n");
        }
}

static void put_interface(FILE *f, const struct domxml_nic *n)
{
        fprintf(f, "    <interface type='bridge'>\n      <mac address='");
        put_escaped(f, n->mac);
        fprintf(f, "'/>\n      <source bridge='");
        put_escaped(f, n->bridge);
        fprintf(f, "'/>\n      <model type='virtio'/>\n");
        if (n->mtu)
                fprintf(f, "      <mtu size='%" PRIu32 "'/>\n", n->mtu);
        if (set(n->filter)) {
                fprintf(f, "      <filterref filter='");
                put_escaped(f, n->filter);
                fprintf(f, "'>\n");
                put_params(f, "IP", n->ips, n->n_ips);
                put_params(f, "IPV6", n->ips6, n->n_ips6);
                fprintf(f, "      </filterref>\n");
        }
        fprintf(f, "    </interface>\n");
}

/* In the root chain, rules and sub-chains run in the order of their
 * priorities: each spoofing chain (mac -800, ipv4-ip -710, ipv6-ip -620)
 * before the rule that accepts what returns from it (-650 for IPv4, -605
 * for IPv6), and no-other-l2-traffic's drop last. */
const char *const domxml_nwfilter_names[2] = { "tasman-no-ipv6-spoofing", DOMXML_FILTER };
const char *const domxml_nwfilters[2] = {
        "<filter name='tasman-no-ipv6-spoofing' chain='ipv6-ip' priority='-620'>\n"
        "  <rule action='return' direction='out' priority='100'>\n"
        "    <ipv6 srcipaddr='fe80::' srcipmask='10'/>\n"
        "  </rule>\n"
        "  <rule action='return' direction='out' priority='500'>\n"
        "    <ipv6 srcipaddr='$IPV6'/>\n"
        "  </rule>\n"
        "  <rule action='drop' direction='out' priority='1000'/>\n"
        "</filter>\n",
        "<filter name='" DOMXML_FILTER "' chain='root'>\n"
        "  <filterref filter='no-mac-spoofing'/>\n"
        "  <filterref filter='no-ip-spoofing'/>\n"
        "  <rule action='accept' direction='out' priority='-650'>\n"
        "    <mac protocolid='ipv4'/>\n"
        "  </rule>\n"
        "  <filterref filter='allow-incoming-ipv4'/>\n"
        "  <filterref filter='tasman-no-ipv6-spoofing'/>\n"
        "  <rule action='accept' direction='out' priority='-605'>\n"
        "    <mac protocolid='ipv6'/>\n"
        "  </rule>\n"
        "  <filterref filter='allow-incoming-ipv6'/>\n"
        "  <filterref filter='no-arp-spoofing'/>\n"
        "  <rule action='accept' direction='inout' priority='-500'>\n"
        "    <mac protocolid='arp'/>\n"
        "  </rule>\n"
        "  <filterref filter='no-other-l2-traffic'/>\n"
        "  <filterref filter='qemu-announce-self'/>\n"
        "</filter>\n",
};

int domxml_parse_macs(const char *xml, char (*macs)[18], size_t max, size_t *ret_n)
{
        size_t n = 0;
        const char *p = xml;

        while ((p = strstr(p, "<interface"))) {
                const char *end = strstr(p, "</interface>");
                const char *m = strstr(p, "<mac address=");
                p += strlen("<interface");
                if (!end || !m || m > end)
                        continue; /* an interface without a MAC */
                m += strlen("<mac address=");
                char q = *m++;
                if (q != '\'' && q != '"')
                        return -EINVAL;
                char mac[18];
                size_t k = 0;
                while (m[k] && m[k] != q && k < 17) {
                        char c = m[k];
                        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                                  (c >= 'A' && c <= 'F');
                        if ((k % 3 == 2) ? c != ':' : !hex)
                                return -EINVAL;
                        mac[k] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
                        k++;
                }
                if (k != 17 || m[k] != q)
                        return -EINVAL;
                mac[17] = '\0';
                if (n < max)
                        memcpy(macs[n], mac, sizeof(mac));
                n++;
                p = end;
        }
        *ret_n = n;
        return 0;
}

char *domxml_interface(const struct domxml_nic *n)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        put_interface(f, n);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

char *domxml_build(const struct domxml_params *p)
{
        char name[64], *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;
        domxml_name(p->vm_id, name, sizeof(name));
        fprintf(f, "<domain type='");
        put_escaped(f, p->domain_type);
        fprintf(f, "'>\n  <name>%s</name>\n", name);
        if (set(p->uuid)) {
                fprintf(f, "  <uuid>");
                put_escaped(f, p->uuid);
                fprintf(f, "</uuid>\n");
        }
        fprintf(f, "  <title>");
        put_escaped(f, p->hostname);
        fprintf(f, "</title>\n");
        fprintf(f, "  <metadata>\n");
        put_metadata(f, p->vm_id, p, "    ");
        fprintf(f, "  </metadata>\n");
        fprintf(f, "  <memory unit='MiB'>%" PRIu32 "</memory>\n", p->ram_mb);
        fprintf(f, "  <vcpu>%" PRIu32 "</vcpu>\n", p->vcpus);
        if (p->cpu_cap > 0 && p->cpu_cap < 100) /* the quota applies to each vCPU */
                fprintf(f, "  <cputune>\n    <period>100000</period>\n"
                           "    <quota>%" PRIu32 "</quota>\n  </cputune>\n",
                        p->cpu_cap * 1000);
        fprintf(f, "  <os>\n    <type arch='x86_64'>hvm</type>\n");
        if (set(p->kernel)) {
                fprintf(f, "    <kernel>");
                put_escaped(f, p->kernel);
                fprintf(f, "</kernel>\n");
                if (set(p->initrd)) {
                        fprintf(f, "    <initrd>");
                        put_escaped(f, p->initrd);
                        fprintf(f, "</initrd>\n");
                }
                if (set(p->cmdline)) {
                        fprintf(f, "    <cmdline>");
                        put_escaped(f, p->cmdline);
                        fprintf(f, "</cmdline>\n");
                }
        } else {
                fprintf(f, "    <boot dev='hd'/>\n");
        }
        fprintf(f, "  </os>\n");
        /* Without ACPI a guest can neither be shut down gracefully nor
         * power itself off. */
        if (strcmp(p->domain_type ? p->domain_type : "", "test") != 0)
                fprintf(f, "  <features>\n    <acpi/>\n  </features>\n");
        fprintf(f, "  <on_poweroff>destroy</on_poweroff>\n"
                   "  <on_reboot>restart</on_reboot>\n"
                   "  <on_crash>destroy</on_crash>\n");
        fprintf(f, "  <devices>\n");
        if (set(p->disk)) {
                fprintf(f, "    <disk type='file' device='disk'>\n"
                           "      <driver name='qemu' type='qcow2' discard='unmap'/>\n"
                           "      <source file='");
                put_escaped(f, p->disk);
                fprintf(f, "'/>\n      <target dev='vda' bus='virtio'/>\n");
                if (p->disk_iops || p->disk_bps) {
                        fprintf(f, "      <iotune>\n");
                        if (p->disk_iops)
                                fprintf(f, "        <total_iops_sec>%" PRIu64 "</total_iops_sec>\n",
                                        p->disk_iops);
                        if (p->disk_bps)
                                fprintf(f, "        <total_bytes_sec>%" PRIu64 "</total_bytes_sec>\n",
                                        p->disk_bps);
                        fprintf(f, "      </iotune>\n");
                }
                fprintf(f, "    </disk>\n");
        }
        if (set(p->seed)) {
                /* Read-only: never part of a snapshot. */
                fprintf(f, "    <disk type='file' device='cdrom' snapshot='no'>\n"
                           "      <driver name='qemu' type='raw'/>\n"
                           "      <source file='");
                put_escaped(f, p->seed);
                fprintf(f, "'/>\n      <target dev='hdc' bus='ide'/>\n      <readonly/>\n"
                           "    </disk>\n");
        }
        if (set(p->console_log)) {
                fprintf(f, "    <serial type='file'>\n      <source path='");
                put_escaped(f, p->console_log);
                fprintf(f, "' append='on'/>\n      <target port='0'/>\n    </serial>\n");
                fprintf(f, "    <console type='file'>\n      <source path='");
                put_escaped(f, p->console_log);
                fprintf(f, "' append='on'/>\n      <target type='serial' port='0'/>\n"
                           "    </console>\n");
        }
        for (size_t i = 0; p->nics && i < p->n_nics; i++)
                put_interface(f, &p->nics[i]);
        /* The QEMU guest agent's channel: guests that run one get their
         * file systems frozen for an online snapshot. */
        if (strcmp(p->domain_type ? p->domain_type : "", "test") != 0)
                fprintf(f, "    <channel type='unix'>\n"
                           "      <target type='virtio' name='org.qemu.guest_agent.0'/>\n"
                           "    </channel>\n");
        fprintf(f, "  </devices>\n</domain>\n");
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

char *domxml_metadata_marks(uint64_t vm_id, const struct domxml_marks *m)
{
        char *buf = NULL, extra[160 + DOMXML_HOST_MAX] = "";
        if (domxml_host_valid(m->host))
                snprintf(extra, sizeof(extra), "<host>%s</host>", m->host);
        if (m->resize_done)
                snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
                         "<resize>%" PRIu64 "</resize>", m->resize_done);
        if (m->rescue)
                snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), "<rescue>1</rescue>");
        if (m->restore_done)
                snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
                         "<restore>%" PRIu64 "</restore>", m->restore_done);
        /* libvirt puts the element into our namespace itself. */
        if (asprintf(&buf, "<vm><id>%" PRIu64 "</id><reboot>%" PRIu64 "</reboot><rebuild>%" PRIu64
                           "</rebuild>%s</vm>",
                     vm_id, m->reboot_done, m->rebuild_done, extra) < 0)
                return NULL;
        return buf;
}

char *domxml_metadata(uint64_t vm_id, uint64_t reboot_done, uint64_t rebuild_done)
{
        const struct domxml_marks m = { .reboot_done = reboot_done, .rebuild_done = rebuild_done };
        return domxml_metadata_marks(vm_id, &m);
}

/* Finds <tag>NUMBER</...> or <PREFIX:tag>NUMBER</...>: libvirt hands our
 * element back without the prefix and namespace declaration. */
/* The <host> element's text into buf (DOMXML_HOST_MAX); "" when there is
 * none; -EINVAL when it is not a valid host id. */
static int find_host(const char *xml, char *buf)
{
        const char *p = strstr(xml, "<host>"), *end;
        size_t skip = strlen("<host>");
        buf[0] = '\0';
        if (!p) {
                p = strstr(xml, "<" DOMXML_NS_PREFIX ":host>");
                skip = strlen("<" DOMXML_NS_PREFIX ":host>");
        }
        if (!p)
                return 0;
        p += skip;
        end = strchr(p, '<');
        if (!end || end == p || (size_t)(end - p) >= DOMXML_HOST_MAX)
                return -EINVAL;
        memcpy(buf, p, (size_t)(end - p));
        buf[end - p] = '\0';
        return domxml_host_valid(buf) ? 0 : -EINVAL;
}

static int find_u64(const char *xml, const char *tag, uint64_t *ret)
{
        char open[64];
        const char *p;
        char *end;

        snprintf(open, sizeof(open), "<%s>", tag);
        p = strstr(xml, open);
        if (!p) {
                snprintf(open, sizeof(open), "<" DOMXML_NS_PREFIX ":%s>", tag);
                p = strstr(xml, open);
        }
        if (!p)
                return -EINVAL;
        p += strlen(open);
        if (*p < '0' || *p > '9')
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno || *end != '<')
                return -EINVAL;
        *ret = v;
        return 0;
}

int domxml_parse_marks(const char *xml, uint64_t *ret_vm_id, struct domxml_marks *ret)
{
        struct domxml_marks m = { 0 };
        uint64_t id, rescue = 0;
        if (!xml)
                return -EINVAL;
        while (*xml == ' ' || *xml == '\n' || *xml == '\t')
                xml++;
        if (strncmp(xml, "<vm", 3) != 0 && strncmp(xml, "<" DOMXML_NS_PREFIX ":vm", 10) != 0)
                return -EINVAL;
        if (find_u64(xml, "id", &id) < 0 || find_u64(xml, "reboot", &m.reboot_done) < 0 ||
            find_u64(xml, "rebuild", &m.rebuild_done) < 0)
                return -EINVAL;
        if (find_u64(xml, "resize", &m.resize_done) < 0)
                m.resize_done = 0;
        if (find_u64(xml, "rescue", &rescue) < 0)
                rescue = 0;
        if (find_u64(xml, "restore", &m.restore_done) < 0)
                m.restore_done = 0;
        if (find_host(xml, m.host) < 0)
                return -EINVAL;
        m.rescue = rescue != 0;
        *ret_vm_id = id;
        *ret = m;
        return 0;
}

int domxml_parse_metadata(const char *xml, uint64_t *ret_vm_id, uint64_t *ret_reboot_done,
                          uint64_t *ret_rebuild_done)
{
        struct domxml_marks m;
        uint64_t id;
        int r = domxml_parse_marks(xml, &id, &m);
        if (r < 0)
                return r;
        *ret_vm_id = id;
        *ret_reboot_done = m.reboot_done;
        *ret_rebuild_done = m.rebuild_done;
        return 0;
}
