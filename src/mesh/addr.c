/* addr.c: see addr.h. */
#include "mesh/addr.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t addr_ip_len(const mesh_addr *a) { return a->family == ADDR_FAMILY_IPV4 ? 4 : 16; }

int addr_parse(const char *text, mesh_addr *out, char *err, size_t errlen)
{
    char host[ADDR_TEXT_MAX];
    const char *port_text;
    memset(out, 0, sizeof *out);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host) {
            snprintf(err, errlen, "'%s' is not [IPV6]:PORT", text);
            return -1;
        }
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = 0;
        port_text = close + 2;
        if (inet_pton(AF_INET6, host, out->ip) != 1) {
            snprintf(err, errlen, "'%s' is not an IPv6 address", host);
            return -1;
        }
        out->family = ADDR_FAMILY_IPV6;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host || strchr(text, ':') != colon) {
            snprintf(err, errlen, "'%s' is not HOST:PORT (write IPv6 as [ADDR]:PORT)", text);
            return -1;
        }
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = 0;
        port_text = colon + 1;
        if (inet_pton(AF_INET, host, out->ip) != 1) {
            snprintf(err, errlen, "'%s' is not a numeric IPv4 address", host);
            return -1;
        }
        out->family = ADDR_FAMILY_IPV4;
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(port_text, &end, 10);
    if (!*port_text || *end || errno || port > 65535 || port_text[0] == '-' || port_text[0] == '+') {
        snprintf(err, errlen, "'%s' is not a port number (0-65535)", port_text);
        return -1;
    }
    out->port = (uint16_t)port;
    return 0;
}

void addr_format_ip(const mesh_addr *a, char out[ADDR_TEXT_MAX])
{
    if (!inet_ntop(a->family == ADDR_FAMILY_IPV4 ? AF_INET : AF_INET6, a->ip, out, ADDR_TEXT_MAX))
        snprintf(out, ADDR_TEXT_MAX, "?");
}

void addr_format(const mesh_addr *a, char out[ADDR_TEXT_MAX])
{
    _Static_assert(ADDR_TEXT_MAX >= INET6_ADDRSTRLEN + 8, "room for brackets and port");
    char ip[INET6_ADDRSTRLEN];
    if (!inet_ntop(a->family == ADDR_FAMILY_IPV4 ? AF_INET : AF_INET6, a->ip, ip, sizeof ip))
        snprintf(ip, sizeof ip, "?");
    if (a->family == ADDR_FAMILY_IPV6)
        snprintf(out, ADDR_TEXT_MAX, "[%s]:%u", ip, a->port);
    else
        snprintf(out, ADDR_TEXT_MAX, "%s:%u", ip, a->port);
}

void addr_to_sockaddr(const mesh_addr *a, struct sockaddr_storage *out, socklen_t *len)
{
    memset(out, 0, sizeof *out);
    if (a->family == ADDR_FAMILY_IPV4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(a->port);
        memcpy(&sin->sin_addr, a->ip, 4);
        *len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(a->port);
        memcpy(&sin6->sin6_addr, a->ip, 16);
        *len = sizeof *sin6;
    }
}

int addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, mesh_addr *out)
{
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        out->family = ADDR_FAMILY_IPV4;
        memcpy(out->ip, &sin->sin_addr, 4);
        out->port = ntohs(sin->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        /* A v4-mapped peer on a dual-stack socket is an IPv4 peer. */
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            out->family = ADDR_FAMILY_IPV4;
            memcpy(out->ip, sin6->sin6_addr.s6_addr + 12, 4);
        } else {
            out->family = ADDR_FAMILY_IPV6;
            memcpy(out->ip, &sin6->sin6_addr, 16);
        }
        out->port = ntohs(sin6->sin6_port);
        return 0;
    }
    return -1;
}

int addr_is_wildcard(const mesh_addr *a)
{
    static const uint8_t zero[16];
    return memcmp(a->ip, zero, addr_ip_len(a)) == 0;
}

int addr_is_loopback(const mesh_addr *a)
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    if (a->family == ADDR_FAMILY_IPV4) return a->ip[0] == 127;
    return memcmp(a->ip, v6_loopback, 16) == 0;
}

static int addr_is_link_local(const mesh_addr *a)
{
    if (a->family == ADDR_FAMILY_IPV4) return a->ip[0] == 169 && a->ip[1] == 254;
    return a->ip[0] == 0xfe && (a->ip[1] & 0xc0) == 0x80;
}

int addr_compare(const mesh_addr *a, const mesh_addr *b)
{
    int la = addr_is_loopback(a), lb = addr_is_loopback(b);
    if (la != lb) return la - lb;
    if (a->family != b->family) return a->family < b->family ? -1 : 1;
    int c = memcmp(a->ip, b->ip, 16);
    if (c) return c < 0 ? -1 : 1;
    if (a->port != b->port) return a->port < b->port ? -1 : 1;
    return 0;
}

size_t addr_encode(const mesh_addr *a, uint8_t *out)
{
    assert(a->family == ADDR_FAMILY_IPV4 || a->family == ADDR_FAMILY_IPV6);
    size_t n = addr_ip_len(a);
    out[0] = a->family;
    memcpy(out + 1, a->ip, n);
    out[1 + n] = (uint8_t)(a->port >> 8);
    out[2 + n] = (uint8_t)a->port;
    return n + 3;
}

int addr_decode(const uint8_t *p, size_t len, mesh_addr *out)
{
    memset(out, 0, sizeof *out);
    if (len < 1) return -1;
    if (p[0] != ADDR_FAMILY_IPV4 && p[0] != ADDR_FAMILY_IPV6) return -1;
    out->family = p[0];
    size_t n = addr_ip_len(out);
    if (len < n + 3) return -1;
    memcpy(out->ip, p + 1, n);
    out->port = (uint16_t)(p[1 + n] << 8 | p[2 + n]);
    if (out->port == 0) return -1;
    return (int)(n + 3);
}

static int addr_qsort_compare(const void *a, const void *b) { return addr_compare(a, b); }

int addr_local_list(const mesh_addr *listen, mesh_addr *out, int max, char *err, size_t errlen)
{
    assert(max >= 1);
    if (!addr_is_wildcard(listen)) {
        out[0] = *listen;
        return 1;
    }
    struct ifaddrs *list;
    if (getifaddrs(&list) != 0) {
        snprintf(err, errlen, "cannot list network interfaces: %s", strerror(errno));
        return -1;
    }
    /* Gather everything first, then sort, then cut: the cut must not depend
     * on the order getifaddrs happens to report interfaces in. */
    size_t n = 0, cap = 16;
    mesh_addr *all = malloc(cap * sizeof *all);
    for (struct ifaddrs *i = list; all && i; i = i->ifa_next) {
        if (!i->ifa_addr || !(i->ifa_flags & IFF_UP)) continue;
        mesh_addr a;
        socklen_t sl = i->ifa_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                           : sizeof(struct sockaddr_in);
        if (addr_from_sockaddr(i->ifa_addr, sl, &a) != 0) continue;
        if (listen->family == ADDR_FAMILY_IPV4 && a.family != ADDR_FAMILY_IPV4) continue;
        if (addr_is_link_local(&a) || addr_is_wildcard(&a)) continue;
        a.port = listen->port;
        if (n == cap) {
            mesh_addr *grown = realloc(all, 2 * cap * sizeof *all);
            if (!grown) { free(all); all = NULL; break; }
            all = grown;
            cap *= 2;
        }
        all[n++] = a;
    }
    freeifaddrs(list);
    if (!all) {
        snprintf(err, errlen, "out of memory listing interfaces");
        return -1;
    }
    qsort(all, n, sizeof *all, addr_qsort_compare);
    int count = 0;
    for (size_t i = 0; i < n && count < max; i++)
        if (count == 0 || addr_compare(&out[count - 1], &all[i]) != 0) out[count++] = all[i];
    free(all);
    if (count == 0) {
        snprintf(err, errlen, "no usable network interface address for a wildcard listen address");
        return -1;
    }
    return count;
}
