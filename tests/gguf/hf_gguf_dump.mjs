// Reference parser: Hugging Face's JavaScript GGUF reader (@huggingface/gguf).
// usage: node hf_gguf_dump.mjs FILE.gguf -> {"version", "metadata": {key: {type, value}},
//        "tensors": [{name, dims, type, offset}]} with 64-bit integers as decimal strings.
import { gguf } from "@huggingface/gguf";

const path = process.argv[2];
if (!path) {
  console.error("usage: node hf_gguf_dump.mjs FILE.gguf");
  process.exit(2);
}
const TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
  "u64", "i64", "f64"];
const plain = (v) => (typeof v === "bigint" ? v.toString() : Array.isArray(v) ? v.map(plain) : v);
const { typedMetadata, tensorInfos, tensorDataOffset } = await gguf(path, {
  allowLocalFile: true,
  typedMetadata: true,
});
const metadata = {};
for (const [key, entry] of Object.entries(typedMetadata)) {
  if (key === "version" || key === "tensor_count" || key === "kv_count") continue;
  const out = { type: TYPE_NAMES[entry.type], value: plain(entry.value) };
  if (entry.subType !== undefined) out.element = TYPE_NAMES[entry.subType];
  metadata[key] = out;
}
const tensors = tensorInfos.map((t) => ({
  name: t.name,
  dims: t.shape.map((d) => d.toString()),
  type: t.dtype,
  offset: (BigInt(tensorDataOffset) + BigInt(t.offset)).toString(),
}));
process.stdout.write(JSON.stringify({ version: Number(typedMetadata.version.value), metadata, tensors }) + "\n");
