/* addr.h: the network addresses nodes advertise (in tokens and node records).
 *
 * One small value type, mesh_addr, for an IPv4 or IPv6 address with a port,
 * with its text form ("1.2.3.4:9337", "[::1]:9337"), its wire form (the same
 * bytes in tokens and gossip, see docs/PROTOCOL.md), conversion to and from
 * sockaddr, a total order (so advertised lists are stable), and the list of
 * addresses this host can be reached at for a given listen address.
 *
 * Not for names: hosts are numeric IPs only, nothing here resolves DNS.
 * Threading: pure functions plus getifaddrs; any thread. */
#ifndef LLMESH_MESH_ADDR_H
#define LLMESH_MESH_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_FAMILY_IPV4 4
#define ADDR_FAMILY_IPV6 6
#define ADDR_TEXT_MAX 64          /* "[" + 45 + "]:" + 5 + NUL fits */
#define ADDR_WIRE_MAX 19          /* family + 16 + port */

typedef struct {
    uint8_t family;               /* ADDR_FAMILY_IPV4 or ADDR_FAMILY_IPV6 */
    uint8_t ip[16];               /* network order; IPv4 uses the first 4, rest zero */
    uint16_t port;                /* host order */
} mesh_addr;

/* Parses "IPV4:PORT" or "[IPV6]:PORT" (numeric only, port 0-65535). */
int addr_parse(const char *text, mesh_addr *out, char *err, size_t errlen);
/* Writes the text form; out needs ADDR_TEXT_MAX bytes. */
void addr_format(const mesh_addr *a, char out[ADDR_TEXT_MAX]);
/* The IP alone, without brackets or port ("::1"); out needs ADDR_TEXT_MAX. */
void addr_format_ip(const mesh_addr *a, char out[ADDR_TEXT_MAX]);

void addr_to_sockaddr(const mesh_addr *a, struct sockaddr_storage *out, socklen_t *len);
/* 0, or -1 for a family other than AF_INET / AF_INET6. */
int addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, mesh_addr *out);

/* Total order: loopback addresses last (they only help on the same host),
 * then family, IP bytes, port. 0 when equal. */
int addr_compare(const mesh_addr *a, const mesh_addr *b);
int addr_is_wildcard(const mesh_addr *a);
int addr_is_loopback(const mesh_addr *a);

/* Wire form: family byte, 4 or 16 IP bytes, u16 big-endian port. Returns the
 * bytes written (out needs ADDR_WIRE_MAX). */
size_t addr_encode(const mesh_addr *a, uint8_t *out);
/* Reads one address from p (at most len bytes). Returns the bytes consumed,
 * or -1 when truncated, of an unknown family, or with port 0. */
int addr_decode(const uint8_t *p, size_t len, mesh_addr *out);

/* The addresses a peer can dial to reach a socket bound to listen (with the
 * actual port): listen itself when it is a specific IP; for a wildcard, the
 * addresses of every interface that is up (IPv4 for 0.0.0.0, both families
 * for ::), loopback included, link-local skipped. Sorted with addr_compare,
 * duplicates removed, cut to max. Returns the count (>= 1), or -1 with err. */
int addr_local_list(const mesh_addr *listen, mesh_addr *out, int max, char *err, size_t errlen);

#endif
