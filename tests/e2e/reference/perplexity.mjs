// perplexity.mjs: the demo model's perplexity through llama.cpp, by the
// method of models/README.md, against the reference table, and llmesh's own
// `llmesh perplexity` against llama.cpp's.
//
//   node perplexity.mjs --model PATH --text FILE --kv F16|F32 [--expect PPL]
//                       [--llmesh BIN --ours-tol T]
//
// Method: llama.cpp's tokenization of FILE (no BOS, no special parsing) cut
// into chunks of 255 ids; each chunk evaluated from an empty cache with BOS
// first (one batch, logits at every position); every chunk token scored;
// ppl = exp(mean NLL), log-softmax in double precision from the full rows
// (node-llama-cpp's totalLogitWeight would be faster but moves the 4th
// decimal of the perplexity).
// --expect: the table's value (4 decimals) must be matched to within 1e-4,
// or --expect-tol (a quantized file: llama.cpp's result there depends on the
// CPU's kernel path, e.g. 71.1008 on an AMD EPYC with AVX-512 VNNI, 71.1414
// on an Intel Xeon with AMX, for the demo Q8_0 model).
// --llmesh: `llmesh perplexity --kv-type` (the same KV type as llama.cpp's)
// on the same file must be within T of llama.cpp's value. With F16, llama.cpp
// also rounds q and the attention weights to F16 (its F16 matrix product
// converts the other operand), llmesh only the cached keys and values.
import {readFileSync} from "node:fs";
import {basename} from "node:path";

import {Tally, llamaLogits, llmesh, loadLlama, parseArgs} from "./lib.mjs";

const CHUNK = 255;
const args = parseArgs(process.argv.slice(2));
const name = `${basename(args.model, ".gguf")} KV ${args.kv}`;
const tally = new Tally(`perplexity ${name}`);

const llama = await loadLlama();
const model = await llama.loadModel({modelPath: args.model});
const ids = model.tokenize(readFileSync(args.text, "utf8"), false);
let nll = 0, scored = 0, top1 = 0, chunks = 0;
for (let start = 0; start < ids.length && chunks < 10000; start += CHUNK, chunks++) {
    const chunk = [model.tokens.bos, ...ids.slice(start, start + CHUNK)];
    const rows = await llamaLogits(model, chunk, args.kv);
    for (let p = 0; p + 1 < chunk.length; p++) {
        const row = rows[p], target = chunk[p + 1];
        let max = -Infinity, best = 0;
        for (let i = 0; i < row.length; i++) if (row[i] > max) { max = row[i]; best = i; }
        let sum = 0;
        for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
        nll += Math.log(sum) + max - row[target];
        top1 += best === target ? 1 : 0;
        scored++;
    }
}
await model.dispose();
const ppl = Math.exp(nll / scored);
console.log(`perplexity ${name}: llama.cpp ppl ${ppl.toFixed(4)}, mean NLL ${(nll / scored).toFixed(5)}, ` +
            `top-1 ${(top1 / scored).toFixed(4)}, ${scored} tokens in ${chunks} chunks`);
if (args.expect !== undefined) {
    const want = Number(args.expect);
    const tol = args["expect-tol"] !== undefined ? Number(args["expect-tol"]) : 1e-4;
    if (Math.abs(ppl - want) <= tol + 1e-9) tally.pass();
    else tally.fail(`${name}: llama.cpp ppl ${ppl.toFixed(5)}, reference table ${want}`);
}
if (args.llmesh) {
    const out = llmesh(args.llmesh, ["perplexity", "--model", args.model, "--file", args.text, "--threads", "2",
                                     "--kv-type", String(args.kv).toLowerCase()]);
    const m = /(\d+\.\d+)/.exec(out);
    const ours = m ? Number(m[1]) : NaN;
    const tol = Number(args["ours-tol"]);
    console.log(`perplexity ${name}: llmesh ppl ${ours} (llama.cpp ${ppl.toFixed(4)}, |diff| ` +
                `${Math.abs(ours - ppl).toExponential(2)}, tolerance ${tol})`);
    if (Math.abs(ours - ppl) <= tol) tally.pass();
    else tally.fail(`${name}: llmesh ppl ${ours}, llama.cpp ${ppl.toFixed(5)} (output: ${out.trim()})`);
}
process.exit(tally.finish());
