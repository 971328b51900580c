/* nfq_delay.c: the tests' stand-in for netem's delay and loss on kernels
 * built without sch_netem (this project's VMs and CI machines), in C.
 *
 *   nfq_delay DELAY_MS JITTER_MS LOSS_PERCENT
 *
 * netns.bash has iptables queue every packet leaving a namespace's uplink to
 * NFQUEUE 0; this program binds that queue (metadata only: no payload
 * crosses to userspace), drops each packet with probability LOSS, and
 * accepts the others after DELAY +- JITTER ms (uniform, like netem without a
 * distribution table; packets may reorder, as with netem). It prints "ready"
 * once the queue is bound, and runs until killed.
 *
 * Why not the Python version netns.bash used before (still its fallback):
 * it costs tens of microseconds of CPU per packet and wakes on select's
 * coarse timeouts, which on a 2-core machine shows up in every figure a
 * benchmark takes under emulated delay. This one spends a few microseconds
 * per packet and sleeps in poll() until the next packet is due.
 *
 * The netlink messages (nfnetlink_queue): CONFIG with CMD_BIND, then CONFIG
 * with PARAMS (copy mode META) and QUEUE_MAXLEN; each PACKET carries
 * PACKET_HDR (packet id, big-endian); a VERDICT names the id. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_NUM 0
#define HEAP_MAX (1 << 20) /* packets held at once; beyond, accepted at once */

typedef struct {
    uint64_t due_ns;
    uint32_t id;
} held;

static held heap[HEAP_MAX];
static size_t n_held;
static int nl;
static uint32_t seq;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void heap_push(uint64_t due, uint32_t id)
{
    size_t i = n_held++;
    while (i > 0 && heap[(i - 1) / 2].due_ns > due) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = (held){due, id};
}

static held heap_pop(void)
{
    held top = heap[0], last = heap[--n_held];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n_held) break;
        if (c + 1 < n_held && heap[c + 1].due_ns < heap[c].due_ns) c++;
        if (heap[c].due_ns >= last.due_ns) break;
        heap[i] = heap[c];
        i = c;
    }
    if (n_held) heap[i] = last;
    return top;
}

/* One nfnetlink_queue message with up to two attributes. */
static int nl_send(uint16_t type, uint16_t flags, uint16_t a1, const void *d1, uint16_t l1, uint16_t a2,
                   const void *d2, uint16_t l2)
{
    uint8_t buf[128] = {0};
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    size_t off = NLMSG_HDRLEN;
    struct nfgenmsg *g = (struct nfgenmsg *)(buf + off);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(QUEUE_NUM);
    off += NLMSG_ALIGN(sizeof *g);
    uint16_t types[2] = {a1, a2}, lens[2] = {l1, l2};
    const void *data[2] = {d1, d2};
    for (int i = 0; i < 2 && data[i]; i++) {
        struct nlattr *a = (struct nlattr *)(buf + off);
        a->nla_type = types[i];
        a->nla_len = (uint16_t)(NLA_HDRLEN + lens[i]);
        memcpy(buf + off + NLA_HDRLEN, data[i], lens[i]);
        off += NLA_ALIGN(a->nla_len);
    }
    h->nlmsg_len = (uint32_t)off;
    h->nlmsg_type = (uint16_t)((NFNL_SUBSYS_QUEUE << 8) | type);
    h->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
    h->nlmsg_seq = ++seq;
    return send(nl, buf, off, 0) == (ssize_t)off ? 0 : -1;
}

/* Waits for the kernel's answer to a config request: 0 or -errno. */
static int nl_ack(void)
{
    uint8_t buf[4096];
    ssize_t n = recv(nl, buf, sizeof buf, 0);
    if (n < (ssize_t)NLMSG_HDRLEN) return -EIO;
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (h->nlmsg_type == NLMSG_ERROR && (size_t)n >= NLMSG_HDRLEN + sizeof(int)) {
        int e;
        memcpy(&e, buf + NLMSG_HDRLEN, sizeof e);
        return e;
    }
    return 0;
}

static void verdict(uint32_t id, uint32_t v)
{
    struct nfqnl_msg_verdict_hdr vh = {htonl(v), htonl(id)};
    nl_send(NFQNL_MSG_VERDICT, 0, NFQA_VERDICT_HDR, &vh, sizeof vh, 0, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: nfq_delay DELAY_MS JITTER_MS LOSS_PERCENT\n");
        return 2;
    }
    double delay = atof(argv[1]), jitter = atof(argv[2]), loss = atof(argv[3]) / 100;
    if (delay < 0 || jitter < 0 || loss < 0 || loss > 1 || delay > 60000 || jitter > 60000) {
        fprintf(stderr, "nfq_delay: delay and jitter 0..60000 ms, loss 0..100 %%\n");
        return 2;
    }
    nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (nl < 0) {
        perror("nfq_delay: netlink socket");
        return 1;
    }
    int rcv = 16 << 20;
    if (setsockopt(nl, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) != 0)
        setsockopt(nl, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (bind(nl, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("nfq_delay: bind");
        return 1;
    }
    struct nfqnl_msg_config_cmd cmd = {.command = NFQNL_CFG_CMD_BIND};
    struct nfqnl_msg_config_params params = {htonl(0), NFQNL_COPY_META};
    uint32_t maxlen = htonl(65536);
    int e = 0;
    if (nl_send(NFQNL_MSG_CONFIG, NLM_F_ACK, NFQA_CFG_CMD, &cmd, sizeof cmd, 0, NULL, 0) || (e = nl_ack()) ||
        nl_send(NFQNL_MSG_CONFIG, NLM_F_ACK, NFQA_CFG_PARAMS, &params, sizeof params, NFQA_CFG_QUEUE_MAXLEN,
                &maxlen, sizeof maxlen) ||
        (e = nl_ack())) {
        fprintf(stderr, "nfq_delay: the queue config was refused: %s\n", strerror(e < 0 ? -e : EIO));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    srand48((long)now_ns());
    static uint8_t buf[1 << 20];
    for (;;) {
        uint64_t now = now_ns();
        while (n_held && heap[0].due_ns <= now) verdict(heap_pop().id, NF_ACCEPT);
        int timeout = -1;
        if (n_held) timeout = (int)((heap[0].due_ns - now + 999999) / 1000000); /* ms, rounded up */
        struct pollfd p = {nl, POLLIN, 0};
        /* poll's millisecond timeout would hold a packet up to 1 ms late: the
         * last millisecond is slept with nanosleep instead. */
        if (n_held && heap[0].due_ns - now < 1000000) {
            struct timespec ts = {0, (long)(heap[0].due_ns - now)};
            if (poll(&p, 1, 0) == 0) {
                nanosleep(&ts, NULL);
                continue;
            }
        } else if (poll(&p, 1, timeout) <= 0) {
            continue;
        }
        ssize_t n = recv(nl, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) continue; /* ENOBUFS: the kernel dropped some; they fail open (--queue-bypass) */
        int len = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) continue;
            size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
            while (off + NLA_HDRLEN <= h->nlmsg_len) {
                struct nlattr *a = (struct nlattr *)((uint8_t *)h + off);
                if (a->nla_len < NLA_HDRLEN || off + a->nla_len > h->nlmsg_len) break;
                if ((a->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR &&
                    a->nla_len >= NLA_HDRLEN + sizeof(struct nfqnl_msg_packet_hdr)) {
                    struct nfqnl_msg_packet_hdr ph;
                    memcpy(&ph, (uint8_t *)a + NLA_HDRLEN, sizeof ph);
                    uint32_t id = ntohl(ph.packet_id);
                    double d = delay + (jitter > 0 ? (drand48() * 2 - 1) * jitter : 0);
                    if (loss > 0 && drand48() < loss) verdict(id, NF_DROP);
                    else if (d <= 0 || n_held == HEAP_MAX) verdict(id, NF_ACCEPT);
                    else heap_push(now_ns() + (uint64_t)(d * 1e6), id);
                    break;
                }
                off += NLA_ALIGN(a->nla_len);
            }
        }
    }
}
