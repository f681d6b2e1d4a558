// A Hugging Face model folder on disk (Node, Deno, Bun): config.json and model.safetensors, or
// sharded model-0000x-of-0000y.safetensors with model.safetensors.index.json. inspectModelFolder
// reads only the headers, and checks every tensor the config needs is there with its shape.
import { SafetensorsError } from "../errors.ts";
import { parseHeader, readHeaderLength, type TensorInfo } from "../formats/safetensors.ts";
import { importNodeBuiltin } from "../runtime/node-builtins.ts";
import { expectedTensors, ModelConfigError, parseModelConfig, type ModelConfig } from "./config.ts";

export interface FolderTensor extends TensorInfo { file: string }

export interface ModelFolder {
  dir: string;
  config: ModelConfig;
  tensors: Map<string, FolderTensor>;
}

export interface ModelSummary {
  architecture: string;
  parameters: number;
  layers: number;
  numHeads: number;
  headDim: number;
  kvHeadsPerLayer: number[];
  /** K + V bytes per token over all layers, f32 cache */
  kvBytesPerToken: number;
  /** the same model with one KV head per query head (MHA) */
  mhaKvBytesPerToken: number;
  weightBytes: number;
}

type Fs = typeof import("node:fs/promises");
type Path = typeof import("node:path");

async function readJson(fs: Fs, file: string, what: string): Promise<unknown> {
  let text: string;
  try { text = await fs.readFile(file, "utf8"); } catch (e) {
    throw new ModelConfigError(`${file}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try { return JSON.parse(text); } catch (e) {
    throw new ModelConfigError(`${file}: ${what} is not valid JSON (${(e as Error).message})`);
  }
}

async function readHeader(fs: Fs, file: string): Promise<Map<string, TensorInfo>> {
  const handle = await fs.open(file, "r").catch((e: NodeJS.ErrnoException) => {
    throw new SafetensorsError(`${file}: cannot open (${e.code ?? e.message})`);
  });
  try {
    const size = (await handle.stat()).size;
    const first = new Uint8Array(8);
    await handle.read(first, 0, 8, 0);
    const length = readHeaderLength(first, size, file);
    const header = new Uint8Array(length);
    await handle.read(header, 0, length, 8);
    return parseHeader(header, size, file).tensors;
  } finally {
    await handle.close();
  }
}

export async function inspectModelFolder(dir: string): Promise<ModelFolder> {
  const fs = await importNodeBuiltin<Fs>("fs/promises");
  const path = await importNodeBuiltin<Path>("path");
  const stat = await fs.stat(dir).catch(() => undefined);
  if (!stat?.isDirectory()) throw new ModelConfigError(`${dir}: not a model folder (no such directory)`);
  const config = parseModelConfig(await readJson(fs, path.join(dir, "config.json"), "config.json"), path.join(dir, "config.json"));
  const indexFile = path.join(dir, "model.safetensors.index.json");
  let files: string[];
  let weightMap: Record<string, string> | undefined;
  if (await fs.stat(indexFile).catch(() => undefined)) {
    const index = await readJson(fs, indexFile, "the shard index") as { weight_map?: unknown };
    if (index === null || typeof index !== "object" || typeof index.weight_map !== "object" || index.weight_map === null) {
      throw new ModelConfigError(`${indexFile}: no weight_map object`);
    }
    weightMap = index.weight_map as Record<string, string>;
    files = [...new Set(Object.values(weightMap))];
  } else {
    files = ["model.safetensors"];
  }
  const tensors = new Map<string, FolderTensor>();
  for (const file of files) {
    for (const [name, info] of await readHeader(fs, path.join(dir, file))) {
      if (tensors.has(name)) throw new SafetensorsError(`${path.join(dir, file)}: tensor '${name}' is also in ${tensors.get(name)!.file}`);
      tensors.set(name, { ...info, file });
    }
  }
  if (weightMap) {
    for (const [name, file] of Object.entries(weightMap)) {
      if (tensors.get(name)?.file !== file) throw new SafetensorsError(`${indexFile}: tensor '${name}' is mapped to ${file}, which does not hold it`);
    }
  }
  const missing: string[] = [];
  for (const [name, shape] of expectedTensors(config)) {
    const t = tensors.get(name);
    if (!t) { missing.push(name); continue; }
    if (t.shape.join("x") !== shape.join("x")) {
      throw new ModelConfigError(`${path.join(dir, t.file)}: tensor '${name}' has shape [${t.shape.join(", ")}], the config needs [${shape.join(", ")}]`);
    }
  }
  if (missing.length > 0) {
    throw new ModelConfigError(`${dir}: missing tensors ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`);
  }
  return { dir, config, tensors };
}

export function summarizeModel(folder: ModelFolder): ModelSummary {
  const c = folder.config;
  let parameters = 0, weightBytes = 0;
  for (const t of folder.tensors.values()) {
    parameters += t.shape.reduce((a, b) => a * b, 1);
    weightBytes += t.byteLength;
  }
  const perLayer = (kv: number) => 2 * kv * c.headDim * 4;
  return {
    architecture: `${c.modelType}${c.kvHeadsPerLayer.every((k) => k === c.numHeads) ? " (MHA)" : new Set(c.kvHeadsPerLayer).size > 1 ? " (variable GQA)" : c.kvHeadsPerLayer[0] === 1 ? " (MQA)" : " (GQA)"}`,
    parameters, layers: c.numLayers, numHeads: c.numHeads, headDim: c.headDim, kvHeadsPerLayer: c.kvHeadsPerLayer,
    kvBytesPerToken: c.kvHeadsPerLayer.reduce((s, kv) => s + perLayer(kv), 0),
    mhaKvBytesPerToken: c.numLayers * perLayer(c.numHeads),
    weightBytes,
  };
}
