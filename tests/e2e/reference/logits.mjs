// logits.mjs: llmesh's logits against llama.cpp's for the same token ids.
//
//   node logits.mjs --llmesh BIN (--ids I,J,... | --text FILE)
//                   --model PATH [--dequant F32PATH] [--name N] [--model PATH ...]
//
// Each --model starts a case; the --dequant and --name after it are that
// case's. Several cases share one process (and one llama.cpp load, ~1 s).
// --text: BOS + the first 255 ids of FILE by llama.cpp's tokenizer (the
// first model's vocabulary; the cases of one run share it). Both
// programs evaluate the ids in one batch from an empty cache (both with an
// F32 KV cache; llama.cpp: no flash attention, 2 threads) and give the raw
// logits of every position.
//
// F32 weights ("exact" check): the two must agree to float rounding:
// max |diff| <= 1e-5 * max |logit|, rms diff <= 5e-6 * the logits' std, and
// the same argmax at every position (a near tie, top two closer than twice
// the max diff, may differ). known.mjs may loosen the rms bound for a model
// family, with the reason (printed as KNOWN, not a failure).
//
// Quantized or F16 weights, with --dequant (the same weights as F32):
// llama.cpp quantizes activations to Q8_0 for Q8_0 and Q4_0 weights, to Q8_K
// for K-quant weights (llmesh does the same), and rounds them to F16 for F16
// weights (llmesh does not), so a one-ulp difference anywhere upstream (exp,
// sums) flips an int8 rounding and the two drift apart by up to the size of
// that quantization noise; bit equality is not a meaningful target. So:
//  - "exact" on the F32 file (same network, no activation quantization);
//  - "noise": with truth = llama.cpp on the F32 file, rms(llmesh - truth) <=
//    1.25 * rms(llama.cpp - truth): llmesh is no further from the exact
//    network than llama.cpp is; and rms(llama.cpp - truth) <= 2% of the
//    logits' std (the F32 file really is the same model);
//  - "argmax": llmesh's argmax equals llama.cpp's except where llama.cpp's
//    own top two are within its max distance from truth.
import {mkdtempSync, readFileSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {basename, join} from "node:path";

import {logitsLoose} from "./known.mjs";
import {Tally, llamaLogits, llmesh, loadLlama, parseArgs} from "./lib.mjs";

// Flags that belong to a case: each --model opens one.
const argv = process.argv.slice(2), global = [], cases = [];
for (let i = 0; i < argv.length; i++) {
    const flag = argv[i], value = argv[i + 1];
    if (flag === "--model") cases.push({model: value});
    else if ((flag === "--dequant" || flag === "--name") && cases.length) cases.at(-1)[flag.slice(2)] = value;
    else {
        global.push(flag);
        if (value !== undefined && !value.startsWith("--")) global.push(value);
        else continue;
    }
    i++;
}
const args = parseArgs(global);
if (!cases.length) throw new Error("no --model given");
for (const c of cases) c.name ??= basename(c.model, ".gguf");
const tally = new Tally(`logits ${cases.map((c) => c.name).join(", ")}`);
const llama = await loadLlama();

// llama.cpp's logits of ids for a model file, as Float32Array rows.
async function reference(path, ids) {
    const model = await llama.loadModel({modelPath: path});
    try {
        return await llamaLogits(model, ids, "F32");
    } finally {
        await model.dispose();
    }
}

// llmesh's logits, the same shape.
function ours(path, ids, nVocab) {
    const dir = mkdtempSync(join(tmpdir(), "llmesh-logits-"));
    try {
        const out = join(dir, "logits.f32");
        llmesh(args.llmesh, ["logits", "--model", path, "--ids", ids.join(","), "--all", "--top", "0",
                             "--threads", "2", "--kv-type", "f32", "--out", out]);
        const buf = readFileSync(out);
        const flat = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
        if (flat.length !== ids.length * nVocab)
            throw new Error(`llmesh gave ${flat.length} logits, expected ${ids.length} x ${nVocab}`);
        return ids.map((_, p) => flat.subarray(p * nVocab, (p + 1) * nVocab));
    } finally {
        rmSync(dir, {recursive: true, force: true});
    }
}

// Differences of two [pos][vocab] sets: max |a-b| (where), rms, std of b.
function compare(a, b) {
    let max = 0, where = [0, 0], sq = 0, sum = 0, sum2 = 0, n = 0, maxAbs = 0;
    for (let p = 0; p < a.length; p++)
        for (let i = 0; i < a[p].length; i++) {
            const d = Math.abs(a[p][i] - b[p][i]);
            if (!(d <= max)) {
                max = Number.isNaN(d) ? Infinity : d;
                where = [p, i];
            }
            sq += d * d;
            sum += b[p][i];
            sum2 += b[p][i] * b[p][i];
            maxAbs = Math.max(maxAbs, Math.abs(b[p][i]));
            n++;
        }
    return {max, where, rms: Math.sqrt(sq / n), std: Math.sqrt(Math.max(0, sum2 / n - (sum / n) ** 2)), maxAbs};
}

const argmax = (row) => {
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
    return best;
};

// Positions where llmesh's argmax differs from llama.cpp's by more than a
// near tie (gap within slack); all differing positions are printed.
function argmaxCheck(label, mine, ref, slack) {
    let equal = 0, real = 0;
    for (let p = 0; p < ref.length; p++) {
        const a = argmax(ref[p]), b = argmax(mine[p]);
        if (a === b) {
            equal++;
            continue;
        }
        const gap = ref[p][a] - ref[p][b], tie = gap <= slack;
        if (!tie) real++;
        console.log(`  ${label} argmax differs at pos ${p}: llama.cpp ${a} (${ref[p][a].toFixed(5)}), llmesh ${b} ` +
                    `(llama.cpp: ${ref[p][b].toFixed(5)}, gap ${gap.toExponential(2)})${tie ? ", a near tie" : ""}`);
    }
    return {equal, real};
}

const fmt = (x) => x.toExponential(3);

function exactCheck(name, label, mine, ref) {
    const c = compare(mine, ref);
    const [p, i] = c.where;
    const am = argmaxCheck(label, mine, ref, c.max * 2);
    console.log(`${label}: ${ref.length} positions x ${ref[0].length}: max|diff| ${fmt(c.max)} (pos ${p} id ${i}: ` +
                `llama.cpp ${ref[p][i]}, llmesh ${mine[p][i]}), rms ${fmt(c.rms)}, max|logit| ` +
                `${c.maxAbs.toFixed(3)}, std ${c.std.toFixed(4)}, argmax equal ${am.equal}/${ref.length}`);
    const rel = c.rms / c.std;
    if (c.max <= 1e-5 * c.maxAbs && rel <= 5e-6 && am.real === 0) {
        tally.pass();
        return;
    }
    const why = `${label}: max|diff| ${fmt(c.max)} (bound ${fmt(1e-5 * c.maxAbs)}), rms/std ${fmt(rel)} ` +
        `(bound 5e-6), ${am.real} argmax differences`;
    const loose = logitsLoose.find((k) => k.match.test(name));
    if (loose && c.max <= 1e-4 * c.maxAbs && rel <= loose.rmsRel && am.real === 0)
        tally.knownDiff(`${why}; within the known-difference bound rms/std <= ${loose.rmsRel}: ${loose.why}`);
    else tally.fail(why);
}

let ids;
if (args.text) {
    const model = await llama.loadModel({modelPath: cases[0].model, vocabOnly: true});
    ids = [model.tokens.bos, ...model.tokenize(readFileSync(args.text, "utf8"), false).slice(0, 255)];
    await model.dispose();
} else {
    ids = String(args.ids).split(",").map(Number);
}

for (const {model, dequant, name} of cases) {
    const ref = await reference(model, ids);
    const mine = ours(model, ids, ref[0].length);
    if (!dequant) {
        exactCheck(name, `logits ${name}`, mine, ref);
        continue;
    }
    const truth = await reference(dequant, ids);
    exactCheck(name, `logits ${name} (as F32)`, ours(dequant, ids, ref[0].length), truth);
    const direct = compare(mine, ref), theirs = compare(ref, truth), own = compare(mine, truth);
    console.log(`logits ${name}: llmesh vs llama.cpp: max|diff| ${fmt(direct.max)}, rms ${fmt(direct.rms)}; ` +
                `distance from the F32 network: llama.cpp rms ${fmt(theirs.rms)} (max ${fmt(theirs.max)}), ` +
                `llmesh rms ${fmt(own.rms)} (max ${fmt(own.max)}); logit std ${theirs.std.toFixed(4)}`);
    if (own.rms <= 1.25 * theirs.rms + 1e-6 * theirs.std && theirs.rms <= 0.02 * theirs.std) tally.pass();
    else tally.fail(`${name}: llmesh rms ${fmt(own.rms)} from the F32 network vs llama.cpp's ${fmt(theirs.rms)} ` +
                    `(or llama.cpp's above 2% of std ${theirs.std.toFixed(4)})`);
    const am = argmaxCheck(`logits ${name}`, mine, ref, theirs.max);
    console.log(`logits ${name}: argmax equal ${am.equal}/${ids.length}`);
    if (am.real === 0) tally.pass();
    else tally.fail(`${name}: argmax differs beyond near ties at ${am.real} positions`);
}
process.exit(tally.finish());
