// Tiny ONNX graphs for the onnxruntime-web anchors, encoded by hand: a protobuf writer of the
// few ModelProto fields we need (onnx.proto3 field numbers), so the benchmark needs no ONNX
// tooling.

class Proto {
  readonly bytes: number[] = [];
  private varint(n: number | bigint): void {
    let v = BigInt(n);
    if (v < 0n) v += 1n << 64n;
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) b |= 0x80;
      this.bytes.push(b);
    } while (v > 0n);
  }
  private key(field: number, wire: number): void { this.varint((field << 3) | wire); }
  int(field: number, n: number): this { this.key(field, 0); this.varint(n); return this; }
  float(field: number, x: number): this {
    this.key(field, 5);
    const b = new Uint8Array(new Float32Array([x]).buffer);
    this.bytes.push(...b);
    return this;
  }
  raw(field: number, data: Uint8Array): this {
    this.key(field, 2); this.varint(data.length);
    for (let i = 0; i < data.length; i++) this.bytes.push(data[i]!);
    return this;
  }
  string(field: number, s: string): this { return this.raw(field, new TextEncoder().encode(s)); }
  message(field: number, m: Proto): this { return this.raw(field, Uint8Array.from(m.bytes)); }
}

export const FLOAT = 1, INT32 = 6;

export interface ValueInfo { name: string; elemType: number; dims: (number | string)[] }
export interface Attribute { name: string; int?: number; float?: number }
export interface Node { opType: string; domain?: string; inputs: string[]; outputs: string[]; attributes?: Attribute[] }
export interface Initializer { name: string; dims: number[]; data: Float32Array }

function valueInfo(v: ValueInfo): Proto {
  const shape = new Proto();
  for (const d of v.dims) shape.message(1, typeof d === "number" ? new Proto().int(1, d) : new Proto().string(2, d));
  const tensorType = new Proto().int(1, v.elemType).message(2, shape);
  return new Proto().string(1, v.name).message(2, new Proto().message(1, tensorType));
}

function node(n: Node, index: number): Proto {
  const p = new Proto();
  for (const i of n.inputs) p.string(1, i);
  for (const o of n.outputs) p.string(2, o);
  p.string(3, `${n.opType}_${index}`).string(4, n.opType);
  for (const a of n.attributes ?? []) {
    const attr = new Proto().string(1, a.name);
    if (a.float !== undefined) attr.float(2, a.float).int(20, 1);
    else attr.int(3, a.int!).int(20, 2);
    p.message(5, attr);
  }
  if (n.domain) p.string(7, n.domain);
  return p;
}

function initializer(t: Initializer): Proto {
  const p = new Proto();
  for (const d of t.dims) p.int(1, d);
  return p.int(2, FLOAT).string(8, t.name).raw(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

/** Serialises a one-graph model (opset 17 plus com.microsoft 1). */
export function onnxModel(g: { nodes: Node[]; inputs: ValueInfo[]; outputs: ValueInfo[]; initializers?: Initializer[] }): Uint8Array {
  const graph = new Proto();
  g.nodes.forEach((n, i) => graph.message(1, node(n, i)));
  graph.string(2, "gqa_wasm_anchor");
  for (const t of g.initializers ?? []) graph.message(5, initializer(t));
  for (const v of g.inputs) graph.message(11, valueInfo(v));
  for (const v of g.outputs) graph.message(12, valueInfo(v));
  const model = new Proto()
    .int(1, 8) // ir_version
    .string(2, "gqa-wasm-bench")
    .message(7, graph)
    .message(8, new Proto().string(1, "").int(2, 17))
    .message(8, new Proto().string(1, "com.microsoft").int(2, 1));
  return Uint8Array.from(model.bytes);
}
