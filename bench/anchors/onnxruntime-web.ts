import * as ort from "onnxruntime-web";
import { FLOAT, INT32, onnxModel } from "../onnx-graph.ts";

// onnxruntime-web, WASM backend, 1 thread: com.microsoft.GroupQueryAttention and MatMul.

ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
ort.env.logLevel = "error";

export interface OrtCase { run(): Promise<Float32Array>; dispose(): Promise<void> }

const sessionOptions: ort.InferenceSession.SessionOptions = { executionProviders: ["wasm"], logSeverityLevel: 3 };

/**
 * GroupQueryAttention with `past` cached tokens (BNSH) and `seqQ` new ones; the past K/V tensors
 * are the same objects every run. Layout of our k/v: [past + seqQ, KV, D] token-major; it is
 * split here into ORT's past (BNSH) and new (BSH) parts so both compute the same attention.
 */
export async function ortGroupQueryAttention(
  q: Float32Array, k: Float32Array, v: Float32Array, seqQ: number, past: number, H: number, KV: number, D: number,
): Promise<OrtCase> {
  const total = past + seqQ;
  const model = onnxModel({
    nodes: [{
      opType: "GroupQueryAttention", domain: "com.microsoft",
      inputs: ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"],
      outputs: ["output", "present_key", "present_value"],
      attributes: [{ name: "num_heads", int: H }, { name: "kv_num_heads", int: KV }, { name: "scale", float: 1 / Math.sqrt(D) }],
    }],
    inputs: [
      { name: "query", elemType: FLOAT, dims: [1, seqQ, H * D] },
      { name: "key", elemType: FLOAT, dims: [1, seqQ, KV * D] },
      { name: "value", elemType: FLOAT, dims: [1, seqQ, KV * D] },
      { name: "past_key", elemType: FLOAT, dims: [1, KV, past, D] },
      { name: "past_value", elemType: FLOAT, dims: [1, KV, past, D] },
      { name: "seqlens_k", elemType: INT32, dims: [1] },
      { name: "total_sequence_length", elemType: INT32, dims: [] },
    ],
    outputs: [
      { name: "output", elemType: FLOAT, dims: [1, seqQ, H * D] },
      { name: "present_key", elemType: FLOAT, dims: [1, KV, "present_len", D] },
      { name: "present_value", elemType: FLOAT, dims: [1, KV, "present_len", D] },
    ],
  });
  const session = await ort.InferenceSession.create(model, sessionOptions);
  const toBnsh = (x: Float32Array) => {
    const t = new Float32Array(KV * past * D);
    for (let j = 0; j < past; j++) for (let h = 0; h < KV; h++) t.set(x.subarray((j * KV + h) * D, (j * KV + h + 1) * D), (h * past + j) * D);
    return t;
  };
  const feeds = {
    query: new ort.Tensor("float32", q, [1, seqQ, H * D]),
    key: new ort.Tensor("float32", k.slice(past * KV * D), [1, seqQ, KV * D]),
    value: new ort.Tensor("float32", v.slice(past * KV * D), [1, seqQ, KV * D]),
    past_key: new ort.Tensor("float32", toBnsh(k), [1, KV, past, D]),
    past_value: new ort.Tensor("float32", toBnsh(v), [1, KV, past, D]),
    seqlens_k: new ort.Tensor("int32", new Int32Array([total - 1]), [1]),
    total_sequence_length: new ort.Tensor("int32", new Int32Array([total]), []),
  };
  return {
    async run() {
      const r = await session.run(feeds);
      const out = r.output!.data as Float32Array;
      for (const t of Object.values(r)) t.dispose();
      return out;
    },
    dispose: () => session.release(),
  };
}

/** MatMul x[M, K] · B[K, N] with B a constant initializer (ORT may pre-pack it). */
export async function ortMatMul(x: Float32Array, wNK: Float32Array, M: number, N: number, K: number): Promise<OrtCase> {
  const b = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) b[k * N + n] = wNK[n * K + k]!;
  const model = onnxModel({
    nodes: [{ opType: "MatMul", inputs: ["x", "w"], outputs: ["y"] }],
    inputs: [{ name: "x", elemType: FLOAT, dims: [M, K] }],
    outputs: [{ name: "y", elemType: FLOAT, dims: [M, N] }],
    initializers: [{ name: "w", dims: [K, N], data: b }],
  });
  const session = await ort.InferenceSession.create(model, sessionOptions);
  const feeds = { x: new ort.Tensor("float32", x, [M, K]) };
  return {
    async run() {
      const r = await session.run(feeds);
      const y = r.y!.data as Float32Array;
      r.y!.dispose();
      return y;
    },
    dispose: () => session.release(),
  };
}
