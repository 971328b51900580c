/* anthropic_bench.c: what rewriting a streamed answer into Anthropic's
 * events costs (serve/anthropic.c): chat chunks as openai.c writes them (a
 * one-word text delta) fed through an anthropic_answer into a sink that
 * only counts bytes. Prints each run's nanoseconds per chunk and the
 * median. Wall-clock: compare runs made together.
 * Usage: anthropic_bench [RUNS] [CHUNKS_PER_RUN] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "serve/anthropic.h"

static size_t bytes_out;
static void sink_begin(api_sink *s, int status, const char *ct) { (void)s, (void)status, (void)ct; }
static void sink_write(api_sink *s, const char *d, size_t n) { (void)s, (void)d; bytes_out += n; }
static void sink_end(api_sink *s) { (void)s; }
static const api_sink_ops ops = {sink_begin, sink_write, sink_end, NULL, NULL};

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static const char chunk[] =
        "data: {\"id\":\"chatcmpl-0123456789abcdef\",\"object\":\"chat.completion.chunk\",\"created\":1765000000,"
        "\"model\":\"kjv-llama-6.3M-q8_0\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the\"},"
        "\"logprobs\":null,\"finish_reason\":null}]}\n\n";
    int runs = argc > 1 ? atoi(argv[1]) : 7, n = argc > 2 ? atoi(argv[2]) : 20000;
    if (runs < 1 || runs > 101 || n < 1) return 2;
    double ns[101];
    api_sink client = {&ops};
    for (int r = 0; r < runs; r++) {
        uint64_t t0 = clock_ns();
        anthropic_answer *a = anthropic_answer_new(&client, "m", ANTHROPIC_MESSAGE);
        if (!a) return 1;
        api_sink *s = anthropic_answer_sink(a);
        s->ops->begin(s, 200, "text/event-stream");
        for (int i = 0; i < n; i++) s->ops->write(s, chunk, sizeof chunk - 1);
        s->ops->write(s, "data: [DONE]\n\n", 14);
        s->ops->end(s);
        ns[r] = (double)(clock_ns() - t0) / n;
        printf("run %d: %.0f ns per chunk\n", r + 1, ns[r]);
    }
    qsort(ns, (size_t)runs, sizeof ns[0], by_value);
    printf("median of %d runs of %d chunks: %.0f ns per chunk (%zu bytes out)\n", runs, n, ns[runs / 2], bytes_out);
    return 0;
}
