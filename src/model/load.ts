// Loads a Hugging Face model folder into a TransformerModel: validates it (inspectModelFolder),
// then reads each safetensors file once and uploads its tensors.
import { parseSafetensors, readFloat32, type Safetensors } from "../formats/safetensors.ts";
import type { BufferDtype } from "../memory/wasm-buffer.ts";
import { importNodeBuiltin } from "../runtime/node-builtins.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { inspectModelFolder } from "./folder.ts";
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

/** Greedy decoding: `maxNewTokens` argmax tokens after `prompt`, through the KV cache. */
export function generateGreedy(model: TransformerModel, prompt: number[], maxNewTokens: number, stopTokens: number[] = []): number[] {
  const cache = model.createCache();
  try {
    const seq = cache.createSequence();
    const V = model.config.vocabSize;
    const out: number[] = [];
    let logits = model.forward(cache, seq, prompt);
    let row = prompt.length - 1;
    while (out.length < maxNewTokens) {
      let best = 0;
      for (let j = 1; j < V; j++) if (logits[row * V + j]! > logits[row * V + best]!) best = j;
      out.push(best);
      if (stopTokens.includes(best) || out.length === maxNewTokens) break;
      logits = model.forward(cache, seq, [best]);
      row = 0;
    }
    return out;
  } finally {
    cache.dispose();
  }
}
