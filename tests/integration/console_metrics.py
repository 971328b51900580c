"""console_metrics.py: after the browser test, checks A's /metrics (parsed by
prometheus_client's text-format parser, Debian's python3-prometheus-client)
against the status document the console draws from: the counters, the
per-model traffic the traffic panel shows, and the per-peer link bytes of
the topology panel. The status was read first, so counters may only have
grown since (peers' bytes); the rest must be equal. Used by console.sh.

Usage: console_metrics.py METRICS_FILE STATUS_JSON MODEL
Prints ok:/FAIL: lines; exits 1 on any failure."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = open(sys.argv[1]).read()
status = json.load(open(sys.argv[2]))
model = sys.argv[3]
fails = 0


def check(what, ok, detail=""):
    global fails
    print(("ok: " if ok else "FAIL: ") + what + ("" if ok else f" ({detail})"))
    fails += not ok


samples = [s for f in text_string_to_metric_families(text) for s in f.samples]


def value(name, **labels):
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


c = status["counters"]
for metric, key in [("llmesh_api_requests_total", "requests"), ("llmesh_api_failed_total", "failed"),
                    ("llmesh_auth_refused_total", "auth_refused"), ("llmesh_mesh_bad_frames_total", "bad_frames")]:
    check(f"{metric} == counters.{key} ({c[key]})", value(metric) == c[key], value(metric))

t = next((x for x in status["traffic"] if x["model"] == model), None)
check("status traffic has the model", t is not None)
if t:
    check(f"completion_tokens_total == traffic.completion_tokens ({t['completion_tokens']})",
          value("llmesh_completion_tokens_total", model=model) == t["completion_tokens"])
    check(f"generations_total == traffic.generations ({t['generations']})",
          value("llmesh_generations_total", model=model) == t["generations"])
    http = sum(s.value for s in samples if s.name == "llmesh_http_requests_total" and s.labels["model"] == model)
    check(f"sum(http_requests_total{{model}}) == traffic.requests ({t['requests']})", http == t["requests"], http)
    check(f"inter_token_latency count == traffic.itl_count ({t['itl_count']}) > 0",
          t["itl_count"] > 0 and value("llmesh_inter_token_latency_seconds_count", model=model) == t["itl_count"])
    check("lanes == traffic.lanes", value("llmesh_lanes", model=model) == t["lanes"])

# Stage timings: every stage of the plan A coordinates, stage 0 (A's own
# layers) included, with the compute time the console's model panel shows.
plan = next((p for p in status["plans"] if p["model"] == model and "counters" in p), None)
check("status has the plan A coordinates", plan is not None)
if plan:
    for i, st in enumerate(plan["stages"]):
        c = st.get("counters", {})
        got = value("llmesh_split_stage_compute_seconds_total", model=model, stage=str(i))
        check(f"stage {i}: split_stage_compute_seconds_total == compute_ms / 1000 ({c.get('compute_ms')}) > 0",
              got is not None and c.get("compute_ms", 0) > 0 and abs(got - c["compute_ms"] / 1000) < 1e-6, got)
    check("stage 0 has no send samples (no send of its own)",
          value("llmesh_split_stage_send_seconds_total", model=model, stage="0") is None)

linked = [p for p in status["peers"] if "link" in p and p["state"] == "alive"]
check("A has connected peers", len(linked) >= 1)
for p in linked:
    for metric, key in (("llmesh_peer_received_bytes_total", "rx_bytes"), ("llmesh_peer_sent_bytes_total", "tx_bytes")):
        got = value(metric, peer=p["id"])
        check(f"{metric} of {p['id'][:8]} >= {key} ({p[key]}) > 0", got is not None and p[key] > 0 and got >= p[key],
              got)
print(f"{fails} failed")
sys.exit(1 if fails else 0)
