// gguf_compat.mjs MODEL.gguf TEXT: loads MODEL with llama.cpp (node-llama-cpp,
// CPU) and prints one JSON line: perplexity over TEXT by the method of
// models/README.md (chunks of 255 tokens after BOS, context 256, every token
// scored), top-1 accuracy, and the greedy 8-token continuation of
// "In the beginning". Used by tests/integration/gguf_compat.sh.
import {getLlama} from "node-llama-cpp";
import {readFileSync} from "node:fs";

const [modelPath, textPath] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 2});
const seq = context.getSequence();

const ids = model.tokenize(readFileSync(textPath, "utf8"), false);
let nll = 0, scored = 0, top1 = 0;
for (let s = 0; s < ids.length; s += 255) {
  const chunk = ids.slice(s, s + 255);
  const input = [model.tokens.bos, ...chunk.slice(0, -1)]
    .map((t) => [t, {generateNext: {probabilities: true}}]);
  await seq.clearHistory();
  const out = await seq.controlledEvaluate(input);
  for (let i = 0; i < chunk.length; i++) {
    const probs = out[i].next.probabilities;
    nll -= Math.log(probs.get(chunk[i]) ?? 1e-30);
    if (probs.keys().next().value === chunk[i]) top1++;
    scored++;
  }
}

await seq.clearHistory();
const greedy = [];
const prompt = [model.tokens.bos, ...model.tokenize("In the beginning", false)];
for await (const t of seq.evaluate(prompt, {temperature: 0})) {
  greedy.push(t);
  if (greedy.length >= 8) break;
}
console.log(JSON.stringify({perplexity: Math.exp(nll / scored), scored, top1: top1 / scored,
                            greedy: model.detokenize(greedy)}));
await context.dispose();
await model.dispose();
await llama.dispose();
