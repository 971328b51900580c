#!/bin/sh
# weights_bench.sh: builds bench/weights_bench.c against a build tree's
# libllmesh_core.a and runs it: model hashing speed (GB/s, one thread and all
# CPUs) and whole-model fetch throughput between two processes over QUIC,
# with the RTT of small frames on the same connection meanwhile.
# Usage: bench/weights_bench.sh [BUILD_DIR] [--link RATE] [weights_bench args...]
#   BUILD_DIR defaults to ./build; args e.g. --mb 1024 --runs 3 --window 8388608
#   --link 1gbit: the two processes run in two network namespaces joined by a
#   veth pair shaped with tbf to RATE (queue of 5 ms) each way; needs root.
#   Without it they talk over loopback. --sources 2: a second source process
#   (with --link, in a third namespace behind its own RATE uplink).
# The figures in docs/weights.md come from this script on a release build.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=$src/build
case "${1:-}" in --*|"") ;; *) build=$1; shift ;; esac
cmake --build "$build" --target llmesh_core >/dev/null
out="$build/weights_bench"
# shellcheck disable=SC2046
cc -std=gnu17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I"$src/src" \
    "$here/weights_bench.c" "$build/libllmesh_core.a" -o "$out" \
    $(pkg-config --cflags --libs libngtcp2 libngtcp2_crypto_gnutls gnutls libevent libevent_pthreads libcjson libpcre2-8) \
    -lpthread -lm
if [ "${1:-}" = "--link" ]; then
    rate=$2
    shift 2
    # --sources 2: a second source in a namespace of its own (the fetcher
    # sees two holders, each behind its own uplink of RATE).
    two=0
    for arg in "$@"; do [ "$arg" = 2 ] && [ "${prev:-}" = --sources ] && two=1; prev=$arg; done
    a=lmw$$a b=lmw$$b c=lmw$$c br=lmw$$br
    cleanup() { for ns in "$a" "$b" "$c" "$br"; do ip netns del "$ns" 2>/dev/null || true; done; }
    trap cleanup EXIT INT TERM
    if [ "$two" = 0 ]; then
        ip netns add "$a"
        ip netns add "$b"
        ip link add "${a}v" type veth peer name "${b}v"
        ip link set "${a}v" netns "$a"
        ip link set "${b}v" netns "$b"
        ip -n "$a" addr add 10.88.0.1/24 dev "${a}v"
        ip -n "$b" addr add 10.88.0.2/24 dev "${b}v"
        for ns in "$a" "$b"; do
            ip -n "$ns" link set lo up
            ip -n "$ns" link set "${ns}v" up
            ip netns exec "$ns" tc qdisc add dev "${ns}v" root tbf rate "$rate" burst 256kb latency 5ms
        done
        echo "link: veth between two namespaces, tbf $rate each way, 5 ms queue"
        "$out" --source-ns "$a:10.88.0.1" --fetcher-ns "$b:10.88.0.2" "$@"
        exit $?
    fi
    # Three namespaces on a bridge (in a fourth); each node's uplink (its
    # veth's egress) shaped to RATE, the bridge's ports not: two sources can
    # send the fetcher twice RATE in all.
    for ns in "$a" "$b" "$c" "$br"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    i=1
    for ns in "$a" "$b" "$c"; do
        ip link add "${ns}v" type veth peer name "${ns}p"
        ip link set "${ns}v" netns "$ns"
        ip link set "${ns}p" netns "$br"
        ip -n "$br" link set "${ns}p" master br0
        ip -n "$br" link set "${ns}p" up
        ip -n "$ns" addr add "10.88.0.$i/24" dev "${ns}v"
        ip -n "$ns" link set "${ns}v" up
        ip netns exec "$ns" tc qdisc add dev "${ns}v" root tbf rate "$rate" burst 256kb latency 5ms
        i=$((i + 1))
    done
    echo "link: three namespaces on a bridge, each uplink tbf $rate, 5 ms queue"
    "$out" --source-ns "$a:10.88.0.1" --fetcher-ns "$b:10.88.0.2" --source2-ns "$c:10.88.0.3" "$@"
    exit $?
fi
exec "$out" "$@"
