/* sockaddr_ip.h: whether two socket addresses are of the same IP address,
 * whatever their ports: the key of the per-address connection limits of the
 * QUIC endpoint (net/quic.c) and of the HTTP servers (serve/http_guard.c).
 * An IPv4 address and its v4-mapped IPv6 form are different here: each
 * caller compares addresses as one socket of its own reports them. */
#ifndef LLMESH_SOCKADDR_IP_H
#define LLMESH_SOCKADDR_IP_H

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static inline int sockaddr_same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                       sizeof(struct in6_addr));
    return 0;
}

#endif
