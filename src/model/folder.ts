// A Hugging Face model folder: config.json and model.safetensors, or sharded
// model-0000x-of-0000y.safetensors with model.safetensors.index.json, from any ModelSource.
// inspectModel reads only the headers, and checks every tensor the config needs is there with its shape.
import { SafetensorsError } from "../errors.ts";
import { parseHeader, readHeaderLength, type TensorInfo } from "../formats/safetensors.ts";
import { isPlainFileName, openModelFiles, type ModelFiles, type ModelSource } from "./files.ts";
import { expectedTensors, minTensorCount, unusedLayerTensor } from "./architecture.ts";
import { ModelConfigError, parseModelConfig, type ModelConfig } from "./config.ts";

export interface FolderTensor extends TensorInfo { file: string }

export interface ModelFolder {
  /** where the files are */
  dir: string;
  config: ModelConfig;
  /** config.json as written (generation defaults such as eos_token_id live there too) */
  configJson: Record<string, unknown>;
  tensors: Map<string, FolderTensor>;
  /** byte size of each safetensors file */
  fileBytes: Map<string, number>;
  files: ModelFiles;
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
  /** Rotary embeddings: theta and the scaling, in words ("llama3 scaling: factor 32 over 8192 positions"). */
  rope: string;
  /** The sliding window, in words ("512 tokens in 15 of 18 layers (RoPE theta 10000 there)"); absent: none. */
  slidingWindow?: string;
  /** What scales or caps the model's values beyond Llama's, in words (Gemma's, Granite's); absent: nothing. */
  scaling?: string;
}

/** The file's JSON, or undefined when the file is absent; bad JSON is a clear error. */
export async function readJsonFile(files: ModelFiles, name: string, what: string): Promise<unknown> {
  const text = await files.text(name);
  if (text === undefined) return undefined;
  try { return JSON.parse(text); } catch (e) {
    throw new ModelConfigError(`${files.describe(name)}: ${what} is not valid JSON (${(e as Error).message})`);
  }
}

async function readHeader(files: ModelFiles, file: string): Promise<{ tensors: Map<string, TensorInfo>; size: number }> {
  const source = files.describe(file);
  const first = await files.head(file, 8);
  const length = readHeaderLength(first.bytes, first.size, source);
  const header = (await files.head(file, 8 + length)).bytes.subarray(8);
  return { tensors: parseHeader(header, first.size, source).tensors, size: first.size };
}

/**
 * Reads config.json and the safetensors headers (not the data) of a model, and checks that
 * every tensor the config needs is there with its shape.
 */
export async function inspectModel(source: ModelSource | ModelFiles): Promise<ModelFolder> {
  const files = isModelFiles(source) ? source : openModelFiles(source);
  const json = await readJsonFile(files, "config.json", "config.json");
  if (json === undefined) throw new ModelConfigError(`${files.describe("config.json")}: cannot read config.json (ENOENT)`);
  const config = parseModelConfig(json, files.describe("config.json"));
  const indexName = "model.safetensors.index.json";
  const index = await readJsonFile(files, indexName, "the shard index") as { weight_map?: unknown } | undefined;
  let names: string[];
  let weightMap: Record<string, string> | undefined;
  if (index !== undefined) {
    if (index === null || typeof index !== "object" || typeof index.weight_map !== "object" || index.weight_map === null) {
      throw new ModelConfigError(`${files.describe(indexName)}: no weight_map object`);
    }
    weightMap = index.weight_map as Record<string, string>;
    names = [...new Set(Object.values(weightMap))];
    for (const file of names) {
      if (typeof file !== "string" || !isPlainFileName(file)) {
        throw new ModelConfigError(`${files.describe(indexName)}: shard ${JSON.stringify(file)} is not a plain file name in the model's folder`);
      }
    }
  } else {
    names = ["model.safetensors"];
  }
  const tensors = new Map<string, FolderTensor>();
  const fileBytes = new Map<string, number>();
  for (const file of names) {
    const header = await readHeader(files, file);
    fileBytes.set(file, header.size);
    for (const [name, info] of header.tensors) {
      if (tensors.has(name)) throw new SafetensorsError(`${files.describe(file)}: tensor '${name}' is also in ${tensors.get(name)!.file}`);
      tensors.set(name, { ...info, file });
    }
  }
  if (weightMap) {
    for (const [name, file] of Object.entries(weightMap)) {
      if (tensors.get(name)?.file !== file) throw new SafetensorsError(`${files.describe(indexName)}: tensor '${name}' is mapped to ${file}, which does not hold it`);
    }
  }
  if (minTensorCount(config) > tensors.size) {
    throw new ModelConfigError(`${files.describe("config.json")}: num_hidden_layers is ${config.numLayers}, but the safetensors files hold only ${tensors.size} tensors (each layer needs at least 9)`);
  }
  const missing: string[] = [];
  for (const [name, shape] of expectedTensors(config)) {
    const t = tensors.get(name);
    if (!t) { missing.push(name); continue; }
    if (t.shape.join("x") !== shape.join("x")) {
      throw new ModelConfigError(`${files.describe(t.file)}: tensor '${name}' has shape [${t.shape.join(", ")}], the config needs [${shape.join(", ")}]`);
    }
  }
  const unused = unusedLayerTensor(config, tensors.keys());
  if (unused) throw new ModelConfigError(`${files.describe(tensors.get(unused)!.file)}: tensor '${unused}' is not one a ${config.modelType} model with this config.json uses (is model_type or attention_bias right?)`);
  if (missing.length > 0) {
    throw new ModelConfigError(`${files.location}: missing tensors ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`);
  }
  return { dir: files.location, config, configJson: json as Record<string, unknown>, tensors, fileBytes, files };
}

function isModelFiles(x: unknown): x is ModelFiles {
  return typeof x === "object" && x !== null && typeof (x as ModelFiles).head === "function" && typeof (x as ModelFiles).describe === "function";
}

/** What inspectModel (a folder) or inspectGGUF (a GGUF file) found, summarized; `tensors` need shape and byteLength. */
export function summarizeModel(folder: { config: ModelConfig; tensors: Map<string, { shape: number[]; byteLength: number }> }): ModelSummary {
  const c = folder.config;
  let parameters = 0, weightBytes = 0;
  for (const t of folder.tensors.values()) {
    parameters += t.shape.reduce((a, b) => a * b, 1);
    weightBytes += t.byteLength;
  }
  const perLayer = (kv: number) => 2 * kv * c.headDim * 4, scaling = scalingSummary(c);
  return {
    architecture: `${c.modelType}${c.kvHeadsPerLayer.every((k) => k === c.numHeads) ? " (MHA)" : new Set(c.kvHeadsPerLayer).size > 1 ? " (variable GQA)" : c.kvHeadsPerLayer[0] === 1 ? " (MQA)" : " (GQA)"}`,
    parameters, layers: c.numLayers, numHeads: c.numHeads, headDim: c.headDim, kvHeadsPerLayer: c.kvHeadsPerLayer,
    kvBytesPerToken: c.kvHeadsPerLayer.reduce((s, kv) => s + perLayer(kv), 0),
    mhaKvBytesPerToken: c.numLayers * perLayer(c.numHeads),
    weightBytes, rope: ropeSummary(c),
    ...(c.slidingWindow !== undefined && (c.slidingLayers?.some((x) => x) ?? true) ? { slidingWindow: windowSummary(c) } : {}),
    ...(scaling ? { scaling } : {}),
  };
}

function scalingSummary(c: ModelConfig): string | undefined {
  const parts = [
    c.embeddingScale !== undefined ? `embeddings x ${+c.embeddingScale.toPrecision(6)}` : "",
    c.attentionScale !== undefined ? `attention scale ${+c.attentionScale.toPrecision(6)}` : "",
    c.residualScale !== undefined ? `residual adds x ${c.residualScale}` : "",
    c.logitScale !== undefined ? `logits x ${+c.logitScale.toPrecision(6)}` : "",
    c.attentionSoftcap !== undefined ? `scores capped at ${c.attentionSoftcap}` : "",
    c.finalSoftcap !== undefined ? `logits capped at ${c.finalSoftcap}` : "",
  ].filter((p) => p !== "");
  return parts.length > 0 ? parts.join(", ") : undefined;
}

function windowSummary(c: ModelConfig): string {
  const sliding = c.slidingLayers?.filter((x) => x).length ?? c.numLayers;
  return `${c.slidingWindow} tokens in ${sliding === c.numLayers ? "every layer" : `${sliding} of ${c.numLayers} layers`}${c.localRopeTheta !== undefined ? ` (RoPE theta ${c.localRopeTheta} there)` : ""}`;
}

function ropeSummary(c: ModelConfig): string {
  const s = c.ropeScaling, theta = `theta ${c.ropeTheta}${c.rotaryDim < c.headDim ? `, on ${c.rotaryDim} of ${c.headDim} elements per head` : ""}`;
  if (!s) return theta;
  if (s.type === "llama3") return `${theta}, llama3 scaling: factor ${s.factor} over ${s.originalMaxPositionEmbeddings} positions`;
  if (s.type === "factors") return `${theta}, per-frequency factors ${Math.min(...s.factors)}-${Math.max(...s.factors)} (rope_freqs.weight)`;
  if (s.type === "longrope") {
    const long = c.maxPositionEmbeddings > s.originalMaxPositionEmbeddings;
    return `${theta}, LongRoPE: ${long ? "long" : "short"} factors for a context of ${c.maxPositionEmbeddings}${long ? "" : ` (the long ones past ${s.originalMaxPositionEmbeddings}, up to ${s.maxPositionEmbeddings}: --context)`}, attention factor ${+s.attentionFactor.toPrecision(6)}`;
  }
  return `${theta}, ${s.type} scaling: factor ${s.factor}`;
}
