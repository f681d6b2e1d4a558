// The edge model of the Worker example and its memory test: a SmolLM2-135M-shaped Q4_0 GGUF
// (random weights, the synthetic byte-level tokenizer padded to the 49,152-token vocabulary),
// cut into byte shards of at most 25 MiB as they would sit in R2. Made once per test run.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SMOLLM2_135M_SHAPE } from "../src/demo.ts";
import { expectedTensors } from "../src/model/architecture.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { exportGGUF } from "../src/model/gguf-export.ts";
import { byteLevelTokenizer } from "../src/model/synthetic.ts";
import { seededArray } from "../src/random.ts";

export const SHARD_BYTES = 25 << 20;
export const EDGE_CONFIG = { ...SMOLLM2_135M_SHAPE, max_position_embeddings: 2048 };

/**
 * The shards' folder (model.gguf.00, .01, ...), written on first use and kept in the temporary
 * folder under a name that hashes the code that writes it (a changed writer makes new shards).
 */
export function edgeModelShards(): string {
  const hash = createHash("sha256");
  for (const f of ["../src/model/gguf-export.ts", "../src/formats/gguf.ts", "../src/formats/quant.ts", "../src/model/synthetic.ts", "./edge-model.ts"]) hash.update(readFileSync(new URL(f, import.meta.url)));
  const name = `gqa-edge-model-${hash.digest("hex").slice(0, 16)}`;
  const dir = join(tmpdir(), name);
  if (readdirSync(tmpdir()).includes(name) && readdirSync(dir).some((f) => f.endsWith(".done"))) return dir;
  mkdirSync(dir, { recursive: true });
  const cfg = parseModelConfig(EDGE_CONFIG);
  const shapes = expectedTensors(cfg);
  let seed = 1;
  const files = byteLevelTokenizer();
  // Each tensor is made when the writer asks for it: the f32 model is never whole in memory.
  const bytes = exportGGUF(cfg, (name) => {
    const n = shapes.get(name)!.reduce((a, b) => a * b, 1);
    return name.endsWith("norm.weight") ? new Float32Array(n).fill(1) : seededArray(n, seed++, 0.05);
  }, { dtype: "q4_0", name: "SmolLM2-135M-shaped", tokenizer: { json: JSON.parse(files["tokenizer.json"]), config: JSON.parse(files["tokenizer_config.json"]) } });
  for (let i = 0, at = 0; at < bytes.length; i++, at += SHARD_BYTES) writeFileSync(join(dir, `model.gguf.${String(i).padStart(2, "0")}`), bytes.subarray(at, at + SHARD_BYTES));
  writeFileSync(join(dir, `${bytes.length}.done`), "");
  return dir;
}

/** The shards by name, in memory (what the test puts into R2). */
export function edgeShardFiles(): Record<string, Uint8Array> {
  const dir = edgeModelShards();
  return Object.fromEntries(readdirSync(dir).filter((f) => f.startsWith("model.gguf.")).sort().map((f) => [f, new Uint8Array(readFileSync(join(dir, f)))]));
}
