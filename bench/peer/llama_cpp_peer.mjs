// llama.cpp as a peer, driven through the npm registry's node-llama-cpp (prebuilt llama.cpp
// CPU backends, the Zen 4 one chosen at run time): the same GGUF file Switchyard runs, in the
// same invocation, so ratios never come from copied figures. Installed by bench/peer/install.sh.
//
//   node llama_cpp_peer.mjs bench    --model F --threads T --prompt-len P --gen N --reps R
//   node llama_cpp_peer.mjs logits   --model F --ids 1,2,3 [--threads T]
//   node llama_cpp_peer.mjs tokenize --model F --text-file F
//
// bench: one JSON line per rep {prefill_tps, decode_tps}: a P-token prompt evaluated in one
// batch (fresh sequence each rep), then N greedy tokens one at a time.
// logits: JSON {vocab, logits: [[...] per position]} (raw, before any sampling).
// tokenize: JSON {ids} with llama.cpp's tokenizer (no BOS added, special tokens parsed).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import {readFileSync} from "node:fs";

function parseArgs(argv) {
  const mode = argv[0];
  const opts = {threads: 1, "prompt-len": 128, gen: 64, reps: 3};
  for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in opts) && !["model", "ids", "text-file", "batch"].includes(key))
      throw new Error(`unknown option '${argv[i]}'`);
    if (i + 1 >= argv.length) throw new Error(`option '${argv[i]}' needs a value`);
    opts[key] = argv[i + 1];
  }
  if (!["bench", "logits", "tokenize"].includes(mode))
    throw new Error("usage: llama_cpp_peer.mjs bench|logits|tokenize --model F ...");
  if (!opts.model) throw new Error("--model is required");
  return {mode, opts};
}

const {mode, opts} = parseArgs(process.argv.slice(2));
const threads = Number(opts.threads);
const llama = await getLlama({gpu: false, build: "never",
                              logLevel: process.env.PEER_LOG ? LlamaLogLevel.debug : LlamaLogLevel.error,
                              maxThreads: threads});
const model = await llama.loadModel({modelPath: opts.model, gpuLayers: 0});

if (mode === "tokenize") {
  const text = readFileSync(opts["text-file"], "utf8");
  console.log(JSON.stringify({ids: model.tokenize(text, true)}));
  process.exit(0);
}

const promptLen = Number(opts["prompt-len"]);
// logits: an F32 KV cache (as Switchyard's), so only the weights' arithmetic differs; bench:
// llama.cpp's default F16 cache, what its users run.
const kv = mode === "logits" ? {experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", flashAttention: false} : {};
const context = await model.createContext({
  contextSize: Math.max(512, promptLen + Number(opts.gen) + 8),
  batchSize: opts.batch ? Number(opts.batch) : Math.max(512, promptLen), threads: {ideal: threads, min: threads}, sequences: 1, ...kv,
});

if (mode === "logits") {
  const ids = opts.ids.split(",").map(Number);
  const seq = context.getSequence();
  const out = await seq.controlledEvaluate(ids.map((t) => [t, {generateNext: {logits: true}}]));
  // The map may be ordered by value: place each logit at its token id.
  const logits = out.map((o) => {
    const row = new Array(o.next.logits.size).fill(0);
    for (const [token, value] of o.next.logits) row[token] = value;
    return row;
  });
  console.log(JSON.stringify({vocab: logits[0].length, logits}));
  process.exit(0);
}

// bench: token ids cycle through the vocabulary (no tokenizer involved), as Switchyard's bench.
const vocab = logitsVocab(model);
const prompt = Array.from({length: promptLen}, (_, i) => 1 + ((i * 7919) % (vocab - 1)));
for (let rep = 0; rep < Number(opts.reps); ++rep) {
  const seq = context.getSequence();
  let t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const prefill = (performance.now() - t0) / 1000;
  let last = prompt[prompt.length - 1], made = 0;
  t0 = performance.now();
  for await (const token of seq.evaluate([last], {temperature: 0})) {
    if (++made >= Number(opts.gen)) break;
    last = token;
  }
  const decode = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({rep, prefill_tps: promptLen / prefill, decode_tps: made / decode}));
  seq.dispose();
}
process.exit(0);

function logitsVocab(m) {
  const n = m.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length;
  return n ?? 32000;
}
