// lib.mjs: shared pieces of the llama.cpp reference checks (tokenize.mjs,
// logits.mjs, perplexity.mjs): loading llama.cpp through node-llama-cpp with
// its prebuilt CPU binary only (never a build or a download), running the
// llmesh binary, and the pass/fail tally every script prints last.
import {execFileSync} from "node:child_process";

// llama.cpp, CPU only, from the @node-llama-cpp/linux-x64 package.
export async function loadLlama() {
    const {getLlama, LlamaLogLevel} = await import("node-llama-cpp");
    return getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        logLevel: LlamaLogLevel.error,
        maxThreads: 2,
    });
}

// Evaluates ids (one sequence, empty cache) and returns the logits of every
// position as Float32Array rows (raw logits, nothing applied). kvType: "F32"
// or "F16" (llama.cpp's default).
export async function llamaLogits(model, ids, kvType = "F32") {
    const context = await model.createContext({
        contextSize: Math.max(256, ids.length + 32),
        batchSize: ids.length,
        threads: 2,
        flashAttention: false,
        experimentalKvCacheKeyType: kvType,
        experimentalKvCacheValueType: kvType,
    });
    try {
        const sequence = context.getSequence();
        const input = ids.map((id) => [id, {generateNext: {logits: true}}]);
        const out = await sequence.controlledEvaluate(input);
        return out.map((item) => {
            const row = new Float32Array(item.next.logits.size);
            for (const [id, v] of item.next.logits) row[id] = v;
            return row;
        });
    } finally {
        await context.dispose();
    }
}

// Runs the llmesh binary; returns stdout (a Buffer when raw). Throws with
// stderr in the message on a non-zero exit.
export function llmesh(bin, args, raw = false) {
    try {
        const out = execFileSync(bin, args, {maxBuffer: 1 << 30, stdio: ["ignore", "pipe", "pipe"]});
        return raw ? out : out.toString("utf8");
    } catch (e) {
        throw new Error(`llmesh ${args.join(" ").slice(0, 200)}: ${e.stderr?.toString() ?? e.message}`);
    }
}

// A check's tally: pass, fail (printed at once), known (a documented
// difference, printed, not a failure).
export class Tally {
    constructor(name) {
        this.name = name;
        this.passed = 0;
        this.failed = 0;
        this.known = 0;
    }
    pass() {
        this.passed++;
    }
    fail(msg) {
        this.failed++;
        console.log(`FAIL ${this.name}: ${msg}`);
    }
    knownDiff(msg) {
        this.known++;
        console.log(`KNOWN ${this.name}: ${msg}`);
    }
    // The line tests/integration/llamacpp_reference.sh adds up.
    finish() {
        console.log(`RESULT ${this.name} passed=${this.passed} failed=${this.failed} known=${this.known}`);
        return this.failed ? 1 : 0;
    }
}

// "--flag value" pairs into an object; repeated flags collect into arrays.
export function parseArgs(argv) {
    const out = {};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
        const key = a.slice(2);
        const value = i + 1 < argv.length && !argv[i + 1].startsWith("--") ? argv[++i] : true;
        if (key in out) out[key] = [].concat(out[key], value);
        else out[key] = value;
    }
    return out;
}

export const list = (v) => (v === undefined ? [] : [].concat(v));
