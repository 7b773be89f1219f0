// Reference encoder: Hugging Face's JavaScript tokenizers (@huggingface/tokenizers).
// usage: node hf_encode.mjs TOKENIZER_JSON TEXT_FILE -> {"ids": [...], "decoded": "..."}
import { readFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const [jsonPath, textPath] = process.argv.slice(2);
if (!jsonPath || !textPath) {
  console.error("usage: node hf_encode.mjs TOKENIZER_JSON TEXT_FILE");
  process.exit(2);
}
const tokenizer = new Tokenizer(JSON.parse(readFileSync(jsonPath, "utf8")), {});
const text = readFileSync(textPath, "utf8");
const ids = tokenizer.encode(text, { add_special_tokens: true }).ids;
// clean_up_tokenization_spaces defaults to true in tokenizers.js; HF's Rust decode does not clean up.
const decoded = ids.length ? tokenizer.decode(ids, { clean_up_tokenization_spaces: false }) : "";
process.stdout.write(JSON.stringify({ ids, decoded }) + "\n");
