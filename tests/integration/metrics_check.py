"""metrics_check.py: checks a /metrics document (Prometheus text format)
against /api/status and the requests a test made. Used by metrics.sh.

The exposition is parsed by prometheus_client's own text-format parser
(Debian's python3-prometheus-client), not by us. Run with Debian's python3
(/usr/bin/python3), where that package installs.

Usage: metrics_check.py METRICS_FILE STATUS_JSON EXPECT_JSON
EXPECT_JSON: {"http": {"model|code": n, ...}, "generations": n,
              "prompt_tokens": n, "completion_tokens": n,
              "itl_min": n, "itl_max": n,
              "from_peers": n, "split_model": "id" or null, "lanes": n}
Prints ok:/FAIL: lines; exits 1 on any failure."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

text = open(sys.argv[1]).read()
status = json.load(open(sys.argv[2]))
want = json.load(open(sys.argv[3]))
fails = 0


def check(what, ok, detail=""):
    global fails
    print(("ok: " if ok else "FAIL: ") + what + ("" if ok else f" ({detail})"))
    if not ok:
        fails += 1


families = {f.name: f for f in text_string_to_metric_families(text)}
samples = [s for f in families.values() for s in f.samples]


def value(name, **labels):
    """The sample's value, or None when absent."""
    for s in samples:
        if s.name == name and s.labels == labels:
            return s.value
    return None


def count(name, **labels):
    """A registry count: absent is 0 (a family shows only what was counted)."""
    v = value(name, **labels)
    return 0 if v is None else v


def values(name):
    return [s for s in samples if s.name == name]


# ---- the format: names, HELP and TYPE lines
type_lines = {}
help_lines = set()
for line in text.splitlines():
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ", 3)
        check(f"one TYPE line for {name}", name not in type_lines)
        type_lines[name] = kind
    elif line.startswith("# HELP "):
        help_lines.add(line.split(" ", 3)[2])
check("the document ends with a line feed", text.endswith("\n"))
check("every family has HELP and TYPE", set(type_lines) == help_lines and len(type_lines) > 30,
      f"{len(type_lines)} TYPE, {len(help_lines)} HELP")
check("every family is llmesh_*", all(n.startswith("llmesh_") for n in type_lines))
check("counters end in _total", all(n.endswith("_total") for n, k in type_lines.items() if k == "counter"),
      [n for n, k in type_lines.items() if k == "counter" and not n.endswith("_total")])
check("no family is untyped to the parser", all(f.type != "unknown" for f in families.values()),
      [f.name for f in families.values() if f.type == "unknown"])
check("every value is a finite number", all(math.isfinite(s.value) for s in samples))

# ---- histograms: cumulative buckets, +Inf == _count
for name in ("llmesh_time_to_first_token_seconds", "llmesh_inter_token_latency_seconds"):
    check(f"{name} is a histogram", type_lines.get(name) == "histogram")
    by_model = {}
    for s in values(name + "_bucket"):
        by_model.setdefault(s.labels["model"], []).append((float(s.labels["le"]), s.value))
    check(f"{name} has buckets", len(by_model) >= 1 or not want["generations"])
    for model, buckets in by_model.items():
        counts = [v for _, v in sorted(buckets)]
        check(f"{name}{{model={model}}}: buckets cumulative", counts == sorted(counts), counts)
        check(f"{name}{{model={model}}}: +Inf last and equal to _count",
              sorted(buckets)[-1][0] == math.inf and counts[-1] == value(name + "_count", model=model))
        check(f"{name}{{model={model}}}: _sum >= 0", value(name + "_sum", model=model) >= 0)

# ---- the registry against the requests made
model = want["model"]
for key, n in want["http"].items():
    m, code = key.split("|")
    got = value("llmesh_http_requests_total", model=m, code=code)
    check(f"http_requests_total{{model=\"{m}\",code=\"{code}\"}} == {n}", got == n, got)
total_http = sum(s.value for s in values("llmesh_http_requests_total"))
check("no other http_requests_total", total_http == sum(want["http"].values()), total_http)
check(f"generations_total == {want['generations']}", count("llmesh_generations_total", model=model) == want["generations"])
check(f"prompt_tokens_total == usage's sum ({want['prompt_tokens']})",
      count("llmesh_prompt_tokens_total", model=model) == want["prompt_tokens"],
      count("llmesh_prompt_tokens_total", model=model))
check(f"completion_tokens_total == usage's sum ({want['completion_tokens']})",
      count("llmesh_completion_tokens_total", model=model) == want["completion_tokens"],
      count("llmesh_completion_tokens_total", model=model))
check("time_to_first_token count == generations",
      count("llmesh_time_to_first_token_seconds_count", model=model) == want["generations"])
itl = count("llmesh_inter_token_latency_seconds_count", model=model) or 0
check(f"inter_token_latency count: one per gap, {want['itl_min']} <= count <= {want['itl_max']}",
      want["itl_min"] <= itl <= want["itl_max"], itl)

# ---- against /api/status
c = status["counters"]
for metric, key in [("llmesh_api_requests_total", "requests"), ("llmesh_api_bad_requests_total", "bad_requests"),
                    ("llmesh_api_forwarded_total", "forwarded"), ("llmesh_api_retried_total", "retried"),
                    ("llmesh_api_failed_total", "failed"), ("llmesh_auth_refused_total", "auth_refused"),
                    ("llmesh_mesh_bad_frames_total", "bad_frames"), ("llmesh_stage_bad_frames_total", "stage_bad_frames"),
                    ("llmesh_mesh_streams_opened_total", "streams_opened"),
                    ("llmesh_mesh_streams_accepted_total", "streams_accepted"),
                    ("llmesh_routes_served_total", "routes_served"),
                    ("llmesh_weights_served_bytes_total", "weights_served_bytes"),
                    ("llmesh_weights_fetched_bytes_total", "weights_fetched_bytes"),
                    ("llmesh_weights_bad_chunks_total", "weights_bad_chunks")]:
    check(f"{metric} == counters.{key} ({c[key]})", value(metric) == c[key], value(metric))
for event, key in [("suspect", "peers_suspected"), ("dead", "peers_dead"), ("alive_again", "peers_alive_again"),
                   ("left", "peers_left")]:
    got = value("llmesh_failure_detector_events_total", event=event)
    check(f"failure_detector_events_total{{event={event}}} == counters.{key} ({c[key]})", got == c[key], got)
if "left" in want:
    check(f"failure_detector_events_total{{event=left}} == {want['left']}",
          value("llmesh_failure_detector_events_total", event="left") == want["left"])
# API answers to HTTP clients are every request the API handled, less those
# peers sent through the tunnel, plus the 401s refused before the API.
api_401 = want["http"].get("|401", 0)
check("sum(http_requests_total) == requests - from peers + 401s",
      total_http == c["requests"] - want["from_peers"] + api_401, (total_http, c["requests"]))

for state in ("connecting", "alive", "suspect", "dead", "left"):
    n = sum(1 for p in status["peers"] if p["state"] == state)
    check(f"peers{{state={state}}} == {n}", value("llmesh_peers", state=state) == n)
for p in status["peers"]:
    if "link" in p:
        got = value("llmesh_peer_rtt_seconds", peer=p["id"], link=p["link"])
        # The smoothed RTT moves with every acknowledgement (0.2 to 2 ms
        # from one read to the next on a busy loopback), and the status was
        # read a moment before: the same figure in seconds, within a factor
        # of 30 (a unit slip would be a factor of 1000).
        rtt = p["rtt_ms"] / 1000
        check(f"peer_rtt_seconds of {p['id'][:8]} ~ rtt_ms / 1000 ({rtt})", got is not None and
              (got == rtt or (rtt > 0 and rtt / 30 <= got <= rtt * 30)), got)
        # The status was read first and the link carries probes meanwhile:
        # the counters can only have grown since.
        for metric, key in (("llmesh_peer_received_bytes_total", "rx_bytes"),
                            ("llmesh_peer_sent_bytes_total", "tx_bytes")):
            got = value(metric, peer=p["id"])
            check(f"{metric} of {p['id'][:8]} >= {key} ({p[key]}) > 0",
                  got is not None and p[key] > 0 and got >= p[key], got)

served = [m for m in status["models"]]
for m in served:
    check(f"lanes{{model={m}}} == {want['lanes']}", value("llmesh_lanes", model=m) == want["lanes"])
    check(f"lanes_busy{{model={m}}} == 0 when idle", value("llmesh_lanes_busy", model=m) == 0)
    check(f"queue_depth{{model={m}}} == 0 when idle", value("llmesh_queue_depth", model=m) == 0)

if want.get("split_model"):
    plan = [p for p in status["plans"] if p["model"] == want["split_model"] and "counters" in p][0]
    pc = plan["counters"]
    for metric, key in [("llmesh_split_frames_sent_total", "frames_sent"), ("llmesh_split_sent_bytes_total", "bytes_sent"),
                        ("llmesh_split_round_trips_total", "round_trips"), ("llmesh_split_breaks_total", "breaks")]:
        check(f"{metric} == plan counters.{key} ({pc[key]})", value(metric, model=plan["model"]) == pc[key])
    rt = value("llmesh_split_round_trip_seconds_total", model=plan["model"])
    check("split_round_trip_seconds_total == round_trip_ms x round_trips / 1000",
          abs(rt - pc["round_trip_ms"] * pc["round_trips"] / 1000) < 1e-6, rt)
    check("the split made round trips", pc["round_trips"] > 0)
    for i, st in enumerate(plan["stages"]):
        if "counters" not in st:
            continue
        sc = st["counters"]
        labels = dict(model=plan["model"], stage=str(i), node=st["node"])
        check(f"stage {i}: tokens_total == {sc['tokens']} (> 0)",
              value("llmesh_split_stage_tokens_total", **labels) == sc["tokens"] and sc["tokens"] > 0)
        for metric, key, scale in [("llmesh_split_stage_compute_seconds_total", "compute_ms", 1e-3),
                                   ("llmesh_split_stage_send_seconds_total", "send_ms", 1e-3),
                                   ("llmesh_split_stage_received_bytes_total", "bytes_in", 1),
                                   ("llmesh_split_stage_sent_bytes_total", "bytes_out", 1)]:
            got = value(metric, **labels)
            if key not in sc:   # stage 0, the coordinator's own layers: compute only
                check(f"stage {i}: no {metric} (no {key} of its own)", got is None, got)
                continue
            check(f"stage {i}: {metric} == {key}", got is not None and abs(got - sc[key] * scale) < 1e-6, got)
    check("stage 0 (the coordinator's layers) has counters", "counters" in plan["stages"][0])

    # Per-step histograms: one observation per batch step for every stage
    # and for the hops; stage 0's sum is the same time as its counter.
    hop = value("llmesh_split_step_hop_seconds_count", model=plan["model"])
    check("split_step_hop_seconds: a histogram with one observation per step (> 0)",
          type_lines.get("llmesh_split_step_hop_seconds") == "histogram" and hop is not None and hop > 0, hop)
    check("split_step_compute_seconds is a histogram",
          type_lines.get("llmesh_split_step_compute_seconds") == "histogram")
    for i, st in enumerate(plan["stages"]):
        labels = dict(model=plan["model"], stage=str(i), node=st["node"])
        n = value("llmesh_split_step_compute_seconds_count", **labels)
        check(f"stage {i}: step_compute_seconds count == the hops' ({hop})", n == hop, n)
        buckets = sorted((float(s.labels["le"]), s.value) for s in values("llmesh_split_step_compute_seconds_bucket")
                         if all(s.labels.get(k) == v for k, v in labels.items()))
        counts = [v for _, v in buckets]
        check(f"stage {i}: step_compute_seconds buckets cumulative, +Inf == count",
              counts == sorted(counts) and buckets and buckets[-1][0] == math.inf and counts[-1] == n, counts)
    s0 = value("llmesh_split_step_compute_seconds_sum", model=plan["model"], stage="0", node=plan["stages"][0]["node"])
    c0 = plan["stages"][0]["counters"]["compute_ms"] / 1000
    check(f"stage 0: step_compute_seconds sum == its compute counter ({c0})", s0 is not None and c0 > 0 and
          abs(s0 - c0) < 1e-6, s0)

print(f"{len(type_lines)} families, {len(samples)} samples")
sys.exit(1 if fails else 0)
