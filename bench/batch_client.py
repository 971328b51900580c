#!/usr/bin/env python3
"""batch_client.py: N concurrent streamed completions, timed (bench/batch_bench.sh).

Each stream has its own prompt, 16 token ids as batch_llamacpp.mjs gives
llama.cpp's sequences ((1 + SALT + 97 i + 31 k) mod 30000, k < 16: no two
streams share a cached prefix, and runs with different SALTs share none
either, so every prompt is evaluated, as llama.cpp's are), greedy, up to max_tokens tokens (random-weight models rarely emit
their end token, so each stream runs to max_tokens). Prints one JSON line:
streams, tokens (sum of usage.completion_tokens), wall_s (first request sent
-> last stream done), agg_tok_s (tokens / wall_s), ttft_ms p50/p99 (request
sent -> first text chunk), itl_ms p50/p99 (gaps between consecutive text
chunks of a stream, over every stream; a chunk carries one token: the
scheduler keeps each token's text apart however late the event loop takes
it, since 066feeb). Usage: batch_client.py URL MODEL STREAMS MAX_TOKENS [SALT]
Standard library only.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def one(url, model, i, max_tokens, salt, out):
    u = urllib.parse.urlparse(url)
    prompt = [(1 + salt + 97 * i + 31 * k) % 30000 for k in range(16)]
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=900)
    t0 = time.monotonic()
    conn.request("POST", u.path.rstrip("/") + "/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    stamps, tokens = [], 0
    if resp.status != 200:
        out[i] = {"error": resp.status}
        return
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if chunk.get("choices") and chunk["choices"][0].get("text"):
            stamps.append(time.monotonic())
    out[i] = {"t0": t0, "stamps": stamps, "tokens": tokens, "end": time.monotonic()}


def main():
    url, model, streams, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    salt = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    out = [None] * streams
    threads = [threading.Thread(target=one, args=(url, model, i, max_tokens, salt, out)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(o is None or "error" in o for o in out):
        print(json.dumps({"streams": streams, "error": [o for o in out if o is None or "error" in o][:1]}))
        return 1
    start = min(o["t0"] for o in out)
    end = max(o["end"] for o in out)
    tokens = sum(o["tokens"] for o in out)
    ttft = [(o["stamps"][0] - o["t0"]) * 1e3 for o in out if o["stamps"]]
    itl = [(b - a) * 1e3 for o in out for a, b in zip(o["stamps"], o["stamps"][1:])]
    print(json.dumps({"streams": streams, "tokens": tokens, "wall_s": round(end - start, 3),
                      "agg_tok_s": round(tokens / (end - start), 2),
                      "ttft_ms_p50": round(pct(ttft, 50), 1), "ttft_ms_p99": round(pct(ttft, 99), 1),
                      "itl_ms_p50": round(pct(itl, 50), 2), "itl_ms_p99": round(pct(itl, 99), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
