# fake_hub.bash: the models_* tests' local stand-in for the Hugging Face hub
# (tests/tools/fake_hub.py; never the internet). Sourced after common.bash.

# start_fake_hub ARGS...: serves $T/root (ROOT/ORG/REPO/PATH), where the demo
# model is TestOrg/kjv-GGUF/kjv-llama-6.3M-q8_0.gguf; ARGS go to fake_hub.py
# (--cut-once, --rate, ...). Every request is logged as a JSON line to
# $T/hub.jsonl. Sets HUB_PID and HF_ENDPOINT, makes a download's first retry
# come after 0.1 s, and unsets HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE.
start_fake_hub() {
  mkdir -p "$T/root/TestOrg/kjv-GGUF"
  cp "$DEMO_MODEL" "$T/root/TestOrg/kjv-GGUF/kjv-llama-6.3M-q8_0.gguf"
  rm -f "$T/hub.port"
  python3 "$SRC/tests/tools/fake_hub.py" --root "$T/root" --port-file "$T/hub.port" --log "$T/hub.jsonl" "$@" \
    2>>"$T/hub.log" &
  HUB_PID=$!
  PIDS+=("$HUB_PID")
  wait_for 10 test -s "$T/hub.port" || die "the fake hub did not start"
  export HF_ENDPOINT="http://127.0.0.1:$(cat "$T/hub.port")" LLMESH_DOWNLOAD_RETRY_MS=100
  unset HF_HUB_CACHE HF_TOKEN HF_HUB_OFFLINE
}
