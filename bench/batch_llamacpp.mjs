// batch_llamacpp.mjs: llama.cpp's side of bench/batch_bench.sh: N sequences
// of one context generating at once (node-llama-cpp batches the pending
// evaluations of all sequences into one llama_decode per step: llama.cpp's
// own continuous batching). Each sequence: a prompt of 16 ids of its own,
// then greedy generation of TG tokens (end-of-generation ignored: random
// weights). Timed as batch_client.py times llmesh: aggregate = tokens / wall
// (first evaluation started -> last sequence done), time to first token per
// sequence, gaps between a sequence's tokens (p50, p99). One JSON line per
// stream count.
//
//   node bench/batch_llamacpp.mjs --model PATH [--streams 1,2,4,8] [--tg 64] [--threads 2]
//
// node-llama-cpp from tests/e2e/reference/node_modules (its install.sh),
// prebuilt CPU binary only, never a build or a download.
import {dirname, join, basename} from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const moduleDir = join(here, "..", "tests", "e2e", "reference", "node_modules", "node-llama-cpp");

function parseArgs(argv) {
    const o = {model: "", streams: [1, 2, 4, 8], tg: 64, threads: 2};
    for (let i = 0; i < argv.length; i += 2) {
        const k = argv[i], v = argv[i + 1];
        if (v === undefined) throw new Error(`${k} needs a value`);
        if (k === "--model") o.model = v;
        else if (k === "--streams") o.streams = v.split(",").map(Number);
        else if (k === "--tg" || k === "--threads") o[k.slice(2)] = Number(v);
        else throw new Error(`unknown option ${k}`);
    }
    if (!o.model) throw new Error("--model PATH is required");
    return o;
}

const pct = (v, p) => {
    const s = [...v].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.round((p / 100) * (s.length - 1)))] : null;
};
const r = (x, d) => Math.round(x * 10 ** d) / 10 ** d;

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const {getLlama, LlamaLogLevel} = await import(pathToFileURL(join(moduleDir, "dist", "index.js")).href);
    const llama = await getLlama({
        gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
        logLevel: LlamaLogLevel.error, maxThreads: o.threads,
    });
    const model = await llama.loadModel({modelPath: o.model, gpuLayers: 0});
    const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
    for (const n of o.streams) {
        const context = await model.createContext({
            contextSize: n * (o.tg + 64), sequences: n, batchSize: 512, threads: o.threads, flashAttention: false,
        });
        const seqs = Array.from({length: n}, () => context.getSequence());
        const t0 = performance.now();
        const runs = seqs.map(async (seq, i) => {
            const prompt = Array.from({length: 16}, (_, k) => (1 + i * 97 + k * 31) % vocab);
            const stamps = [];
            for await (const token of seq.evaluate(prompt, {temperature: 0})) {
                void token;
                stamps.push(performance.now());
                if (stamps.length >= o.tg) break;
            }
            return stamps;
        });
        const all = await Promise.all(runs);
        const end = performance.now();
        const tokens = all.reduce((a, s) => a + s.length, 0);
        const ttft = all.filter((s) => s.length).map((s) => s[0] - t0);
        const itl = all.flatMap((s) => s.slice(1).map((t, k) => t - s[k]));
        console.log(JSON.stringify({
            program: "llama.cpp", model: basename(o.model).replace(/\.gguf$/, ""), streams: n, tokens,
            wall_s: r((end - t0) / 1e3, 3), agg_tok_s: r(tokens / ((end - t0) / 1e3), 2),
            ttft_ms_p50: r(pct(ttft, 50), 1), ttft_ms_p99: r(pct(ttft, 99), 1),
            itl_ms_p50: r(pct(itl, 50), 2), itl_ms_p99: r(pct(itl, 99), 2),
        }));
        await context.dispose();
    }
    await model.dispose();
    await llama.dispose();
}

main().catch((e) => {
    console.error(`batch_llamacpp.mjs: ${e.message}`);
    process.exit(1);
});
