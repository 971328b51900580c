// vs_llamacpp.mjs: llama.cpp's side of bench/vs_llamacpp.sh. The same tests
// as `llmesh bench` (prefill: PP random ids in one batch from an empty cache;
// decode: TG single-token evaluations from an empty cache, each producing a
// token, so the classifier runs every step), timed by llama.cpp's own
// performance counters (llama_perf_context: "prompt eval time" for prefill,
// "eval time" for decode; sampling and node-llama-cpp's JavaScript are
// outside both), median over REPS after one warm-up. Prints one JSON object
// per (model, threads) in `llmesh bench --json`'s fields.
//
//   node bench/vs_llamacpp.mjs --model PATH... [--threads 1,2] [--pp 128] [--tg 64] [--reps 3]
//
// node-llama-cpp is loaded from tests/e2e/reference/node_modules (installed by
// its install.sh), prebuilt CPU binary only, never a build or a download.
import {dirname, join, basename} from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const moduleDir = join(here, "..", "tests", "e2e", "reference", "node_modules", "node-llama-cpp");

function parseArgs(argv) {
    const o = {model: [], threads: [1, 2], pp: 128, tg: 64, reps: 3};
    for (let i = 0; i < argv.length; i += 2) {
        const k = argv[i], v = argv[i + 1];
        if (v === undefined) throw new Error(`${k} needs a value`);
        if (k === "--model") o.model.push(v);
        else if (k === "--threads") o.threads = v.split(",").map(Number);
        else if (k === "--pp" || k === "--tg" || k === "--reps") o[k.slice(2)] = Number(v);
        else throw new Error(`unknown option ${k}`);
    }
    for (const t of o.threads) if (!(Number.isInteger(t) && t >= 1)) throw new Error(`bad --threads`);
    if (!(o.pp >= 2 && o.tg >= 1 && o.reps >= 1)) throw new Error("--pp >= 2, --tg >= 1, --reps >= 1");
    if (!o.model.length) throw new Error("--model PATH is required");
    return o;
}

const median = (v) => {
    const s = [...v].sort((a, b) => a - b), n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};

// xorshift64, as in cmd_bench.c, so both programs see comparable ids.
function randomIds(n, vocab) {
    let x = 0x9e3779b97f4a7c15n;
    const mask = (1n << 64n) - 1n, ids = [];
    for (let i = 0; i < n; i++) {
        x ^= (x << 13n) & mask;
        x ^= x >> 7n;
        x ^= (x << 17n) & mask;
        ids.push(Number(x % BigInt(vocab)));
    }
    return ids;
}

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const {getLlama, LlamaLogLevel} = await import(pathToFileURL(join(moduleDir, "dist", "index.js")).href);
    // llama.cpp prints its timings at the info level; keep those lines only.
    let perf = [];
    const llama = await getLlama({
        gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
        logLevel: LlamaLogLevel.info, maxThreads: Math.max(...o.threads),
        logger: (level, message) => {
            if (message.includes("llama_perf_context_print")) perf.push(message);
            else if (level === LlamaLogLevel.error) process.stderr.write(message);
        },
    });
    // The counters since the last read: {prompt: [ms, tokens], eval: [ms, runs]}.
    async function timings(context) {
        perf = [];
        await context.printTimings();
        const text = perf.join("\n"), out = {};
        for (const [key, re] of [["prompt", /prompt eval time =\s*([\d.]+) ms \/\s*(\d+) tokens/],
                                 ["eval", /\beval time =\s*([\d.]+) ms \/\s*(\d+) runs/]]) {
            const line = text.split("\n").find((l) => re.test(l) && (key === "prompt") === l.includes("prompt"));
            const m = line && line.match(re);
            out[key] = m ? [Number(m[1]), Number(m[2])] : [NaN, 0];
        }
        return out;
    }
    for (const path of o.model) {
        const model = await llama.loadModel({modelPath: path, gpuLayers: 0});
        const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
        if (!(vocab > 0)) throw new Error(`${path}: no tokenizer.ggml.tokens in the metadata`);
        const ids = randomIds(Math.max(o.pp, o.tg), vocab);
        for (const threads of o.threads) {
            const context = await model.createContext({
                contextSize: Math.max(256, o.pp + o.tg + 16), batchSize: o.pp, threads, sequences: 1,
                flashAttention: false, performanceTracking: true,
            });
            const sequence = context.getSequence();
            const prefill = async () => {
                await sequence.clearHistory();
                const input = ids.slice(0, o.pp).map((id, i) => (i < o.pp - 1 ? id : [id, {generateNext: {token: true}}]));
                await sequence.controlledEvaluate(input);
            };
            const decode = async (n) => {
                await sequence.clearHistory();
                for (let i = 0; i < n; i++) await sequence.controlledEvaluate([[ids[i], {generateNext: {token: true}}]]);
            };
            await prefill();
            await decode(1);
            await timings(context);
            const pp = [], tg = [];
            for (let r = 0; r < o.reps; r++) {
                await prefill();
                const a = await timings(context);
                if (a.prompt[1] !== o.pp) throw new Error(`llama.cpp counted ${a.prompt[1]} prompt tokens, expected ${o.pp}`);
                pp.push(a.prompt[0]);
                await decode(o.tg);
                const b = await timings(context);
                if (b.eval[1] !== o.tg) throw new Error(`llama.cpp counted ${b.eval[1]} eval runs, expected ${o.tg}`);
                tg.push(b.eval[0]);
            }
            const ppMs = median(pp), tgMs = median(tg), r2 = (x) => Math.round(x * 100) / 100;
            console.log(JSON.stringify({
                model: basename(path).replace(/\.gguf$/, ""), program: "llama.cpp", threads, pp: o.pp, tg: o.tg,
                reps: o.reps, pp_ms: r2(ppMs), tg_ms: r2(tgMs), pp_tok_s: r2(o.pp / (ppMs / 1e3)),
                tg_tok_s: r2(o.tg / (tgMs / 1e3)),
            }));
            await context.dispose();
        }
        await model.dispose();
    }
    await llama.dispose();
}

main().catch((e) => {
    console.error(`vs_llamacpp.mjs: ${e.message}`);
    process.exit(1);
});
