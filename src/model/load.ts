// Loads a Hugging Face model folder into a TransformerModel: validates it (inspectModelFolder),
// then reads each safetensors file once and uploads its tensors.
import { parseSafetensors, readFloat32, type Safetensors } from "../formats/safetensors.ts";
import type { BufferDtype } from "../memory/wasm-buffer.ts";
import { importNodeBuiltin } from "../runtime/node-builtins.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { inspectModelFolder } from "./folder.ts";
import { Sampler, type SamplingOptions } from "./sampling.ts";
import { TransformerModel } from "./transformer.ts";

export async function loadModel(rt: Runtime, dir: string, options: { dtype?: BufferDtype } = {}): Promise<TransformerModel> {
  const folder = await inspectModelFolder(dir);
  const fs = await importNodeBuiltin<typeof import("node:fs/promises")>("fs/promises");
  const path = await importNodeBuiltin<typeof import("node:path")>("path");
  const files = new Map<string, Safetensors>();
  for (const file of new Set([...folder.tensors.values()].map((t) => t.file))) {
    const full = path.join(dir, file);
    files.set(file, parseSafetensors(new Uint8Array(await fs.readFile(full)), full));
  }
  return new TransformerModel(rt, folder.config, (name) => {
    const t = folder.tensors.get(name);
    if (!t) throw new Error(`${dir}: tensor '${name}' is missing`);
    return readFloat32(files.get(t.file)!, name);
  }, options.dtype ?? "f32");
}

/**
 * Generates up to `maxNewTokens` tokens after `prompt` through the KV cache: prefill, then one
 * token at a time, chosen by a Sampler (greedy by default); stops early at a stop token.
 */
export function generate(model: TransformerModel, prompt: number[], options: { maxNewTokens: number; sampling?: SamplingOptions; stopTokens?: number[] }): number[] {
  const sampler = new Sampler(options.sampling);
  const cache = model.createCache();
  try {
    const seq = cache.createSequence();
    const V = model.config.vocabSize;
    const history = [...prompt];
    const out: number[] = [];
    let logits = model.forward(cache, seq, prompt);
    let row = prompt.length - 1;
    while (out.length < options.maxNewTokens) {
      const next = sampler.next(logits.subarray(row * V, (row + 1) * V), history);
      out.push(next);
      history.push(next);
      if (options.stopTokens?.includes(next) || out.length === options.maxNewTokens) break;
      logits = model.forward(cache, seq, [next]);
      row = 0;
    }
    return out;
  } finally {
    cache.dispose();
  }
}
