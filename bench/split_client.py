#!/usr/bin/env python3
"""split_client.py: one streamed completion, timed (for bench/split_bench.sh).

Prints one JSON line: ttft_ms (request sent -> first token chunk), tokens
(usage.completion_tokens), decode_tok_s ((tokens - 1) / (last chunk - first chunk)),
total_ms. Usage: split_client.py URL MODEL PROMPT_FILE MAX_TOKENS
Standard library only (the bench runs on machines without pip).
"""
import http.client
import json
import sys
import time
import urllib.parse


def main():
    url, model, prompt_file, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    prompt = open(prompt_file, encoding="utf-8").read()
    u = urllib.parse.urlparse(url)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t0 = time.monotonic()
    conn.request("POST", u.path.rstrip("/") + "/completions", body,
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        print(json.dumps({"error": resp.status, "body": resp.read().decode(errors="replace")[:300]}))
        return 1
    stamps = []
    tokens = None
    prompt_tokens = None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: {"):
            continue
        obj = json.loads(line[6:])
        if obj.get("choices") and obj["choices"][0].get("text"):
            stamps.append(time.monotonic())
        if obj.get("usage"):
            tokens = obj["usage"]["completion_tokens"]
            prompt_tokens = obj["usage"]["prompt_tokens"]
    t1 = time.monotonic()
    n = tokens if tokens is not None else len(stamps)
    out = {"tokens": n, "prompt_tokens": prompt_tokens, "total_ms": (t1 - t0) * 1000,
           "ttft_ms": (stamps[0] - t0) * 1000 if n else None,
           "decode_tok_s": (n - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
