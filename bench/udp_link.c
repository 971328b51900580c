/* udp_link.c: what one hop of a pipeline costs below our software, for
 * split_bench.sh: the one-way time of a bare UDP datagram between two
 * processes on this machine when the receiver has been asleep in recv()
 * while the sender computed, as a stage is while the others compute.
 *
 *   udp_link [--gap-us G] [--count N] [--size B]
 *
 * Two processes (fork) take turns: spin G us ("compute"), stamp, send B
 * bytes, block in recv() for the answer. The receiver stamps on return; both
 * read CLOCK_MONOTONIC, which one machine shares across processes. Prints
 * the median and 90th percentile of N one-way times in microseconds, as
 * "link_one_way_us MEDIAN P90".
 *
 * This is the kernel's part of a hop plus the receiving thread's wake-up
 * from idle, which no user-space protocol avoids; a hop's software cost is
 * what our ring takes beyond it. Not a test: no threshold, just a figure. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_COUNT 100000

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void spin_us(long us)
{
    uint64_t end = now_ns() + (uint64_t)us * 1000;
    while (now_ns() < end) {
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One side: n turns of (wait for the peer's datagram unless first, stamp the
 * arrival against the stamp it carries, compute, stamp and send). */
static void side(int fd, const struct sockaddr_in *peer, int first, int n, long gap_us, size_t size,
                 uint64_t *one_way, int *got)
{
    uint8_t buf[65536];
    memset(buf, 0x5a, sizeof buf);
    for (int i = 0; i < n; i++) {
        if (!(first && i == 0)) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            uint64_t t = now_ns();
            if (r < (ssize_t)sizeof(uint64_t)) break;
            uint64_t sent;
            memcpy(&sent, buf, sizeof sent);
            if (one_way) one_way[(*got)++] = t - sent;
        }
        spin_us(gap_us);
        uint64_t t = now_ns();
        memcpy(buf, &t, sizeof t);
        if (sendto(fd, buf, size, 0, (const struct sockaddr *)peer, sizeof *peer) < 0) break;
    }
}

int main(int argc, char **argv)
{
    long gap_us = 10000;
    int count = 200;
    size_t size = 3725;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--gap-us")) gap_us = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--count")) count = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = (size_t)atol(argv[i + 1]);
        else {
            fprintf(stderr, "usage: udp_link [--gap-us G] [--count N] [--size B]\n");
            return 2;
        }
    }
    if (gap_us < 0 || gap_us > 1000000 || count < 1 || count > MAX_COUNT || size < 8 || size > 65000) {
        fprintf(stderr, "udp_link: --gap-us 0..1000000, --count 1..%d, --size 8..65000\n", MAX_COUNT);
        return 2;
    }
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, sb = sa;
    socklen_t len = sizeof sa;
    if (a < 0 || b < 0 || bind(a, (struct sockaddr *)&sa, sizeof sa) || bind(b, (struct sockaddr *)&sb, sizeof sb) ||
        getsockname(a, (struct sockaddr *)&sa, &len) || (len = sizeof sb, getsockname(b, (struct sockaddr *)&sb, &len))) {
        perror("udp_link: socket");
        return 1;
    }
    struct timeval limit = {5, 0}; /* a lost datagram ends the run, not hangs it */
    setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    pid_t child = fork();
    if (child < 0) {
        perror("udp_link: fork");
        return 1;
    }
    if (child == 0) {
        side(b, &sa, 0, count, gap_us, size, NULL, NULL);
        _exit(0);
    }
    uint64_t *one_way = calloc((size_t)count, sizeof *one_way);
    int got = 0;
    if (!one_way) return 1;
    /* We send first; the child answers each; we measure the child's sends
     * (its datagrams reach us after we slept through its "compute"). */
    side(a, &sb, 1, count, gap_us, size, one_way, &got);
    waitpid(child, NULL, 0);
    if (got < 1) {
        fprintf(stderr, "udp_link: no datagram came back\n");
        return 1;
    }
    qsort(one_way, (size_t)got, sizeof *one_way, cmp_u64);
    printf("link_one_way_us %.1f %.1f\n", one_way[got / 2] / 1000.0, one_way[got * 9 / 10] / 1000.0);
    free(one_way);
    return 0;
}
