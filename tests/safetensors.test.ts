import assert from "node:assert/strict";
import { parseSafetensors, readFloat32, SafetensorsError, writeSafetensors } from "../src/index.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../src/formats/half.ts";
import { randomArray } from "./helpers.ts";

/** A file with this exact header (object or raw text) and `dataBytes` zero bytes of data. */
function fileWith(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

describe("16-bit floats", () => {
  it("f16 and bf16 round trips are exact for every 16-bit pattern", () => {
    for (let h = 0; h < 65536; h++) {
      const x = f16ToF32(h), y = bf16ToF32(h);
      if (!Number.isNaN(x)) assert.equal(f32ToF16(x), h, `f16 ${h.toString(16)}`);
      else assert.ok(Number.isNaN(f16ToF32(f32ToF16(x))));
      if (!Number.isNaN(y)) assert.equal(f32ToBf16(y), h, `bf16 ${h.toString(16)}`);
    }
  });

  it("rounds to nearest even, overflows to infinity and keeps subnormals", () => {
    assert.equal(f16ToF32(f32ToF16(1 + 2 ** -11)), 1); // a tie rounds to even
    assert.equal(f16ToF32(f32ToF16(1 + 3 * 2 ** -11)), 1 + 2 ** -9);
    assert.equal(f16ToF32(f32ToF16(70000)), Infinity);
    assert.equal(f16ToF32(f32ToF16(2 ** -24)), 2 ** -24);
    assert.equal(bf16ToF32(f32ToBf16(1 + 2 ** -8)), 1);
  });
});

describe("safetensors", () => {
  it("round-trips F32, F16 and BF16 tensors and metadata", () => {
    const a = randomArray(6 * 5, 1), b = randomArray(7, 2), c = randomArray(3 * 4, 3);
    const bytes = writeSafetensors({
      "model.embed_tokens.weight": { dtype: "F32", shape: [6, 5], data: a },
      "model.norm.weight": { dtype: "F16", shape: [7], data: b },
      "lm_head.weight": { dtype: "BF16", shape: [3, 4], data: c },
    }, { format: "pt" });
    const f = parseSafetensors(bytes, "model.safetensors");
    assert.deepEqual(f.metadata, { format: "pt" });
    assert.deepEqual(f.tensors.get("model.embed_tokens.weight")!.shape, [6, 5]);
    assert.deepEqual(readFloat32(f, "model.embed_tokens.weight"), a);
    assert.deepEqual(readFloat32(f, "model.norm.weight"), Float32Array.from(b, (x) => f16ToF32(f32ToF16(x))));
    assert.deepEqual(readFloat32(f, "lm_head.weight"), Float32Array.from(c, (x) => bf16ToF32(f32ToBf16(x))));
    assert.equal((8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))) % 8, 0, "data is 8-byte aligned");
    assert.throws(() => readFloat32(f, "model.layers.0.mlp.up_proj.weight"), /model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' is missing/);
  });

  const t = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });
  const bad: [string, Uint8Array, RegExp][] = [
    ["too short", new Uint8Array(5), /too short for the 8-byte header length/],
    ["header past the end", (() => { const b = fileWith({}, 0); new DataView(b.buffer).setBigUint64(0, 1000n, true); return b; })(), /runs past the end of the file/],
    ["absurd header length", (() => { const b = fileWith({}, 0); new DataView(b.buffer).setBigUint64(0, 2n ** 60n, true); return b; })(), /exceeds 100000000 bytes/],
    ["not JSON", fileWith("{not json", 0), /not valid UTF-8 JSON/],
    ["not UTF-8", (() => { const b = fileWith('{"a":1}', 0); b[10] = 0xff; return b; })(), /not valid UTF-8 JSON/],
    ["JSON array", fileWith([1, 2], 0), /not a JSON object/],
    ["unsupported dtype", fileWith({ w: t("I64", [2], [0, 16]) }, 16), /tensor 'w': dtype I64 is not supported \(F32, F16, BF16\)/],
    ["unknown dtype", fileWith({ w: t("F33", [2], [0, 8]) }, 8), /tensor 'w': unknown dtype "F33"/],
    ["negative dim", fileWith({ w: t("F32", [-2], [0, 8]) }, 8), /shape \[-2\] is not a list of non-negative integers/],
    ["fractional dim", fileWith({ w: t("F32", [1.5], [0, 8]) }, 8), /shape \[1.5\]/],
    ["offsets not a pair", fileWith({ w: t("F32", [2], [0]) }, 8), /data_offsets \[0\] is not \[begin, end\]/],
    ["reversed offsets", fileWith({ w: t("F32", [0], [8, 0]) }, 8), /end before they begin/],
    ["offsets out of bounds", fileWith({ w: t("F32", [4], [0, 16]) }, 8), /run past the data \(8 bytes\)/],
    ["size mismatch", fileWith({ w: t("F32", [3], [0, 8]) }, 8), /span 8 bytes but shape \[3\] of F32 needs 12/],
    ["overlap", fileWith({ a: t("F32", [2], [0, 8]), b: t("F32", [2], [4, 12]) }, 12), /overlaps/],
    ["hole", fileWith({ a: t("F32", [1], [0, 4]), b: t("F32", [1], [8, 12]) }, 12), /hole of 4 bytes before tensor 'b'/],
    ["trailing bytes", fileWith({ a: t("F32", [1], [0, 4]) }, 12), /8 bytes after the last tensor belong to no tensor/],
    ["bad metadata", fileWith({ __metadata__: { a: 1 } }, 0), /__metadata__.a is not a string/],
  ];
  for (const [what, bytes, message] of bad) {
    it(`rejects a file with ${what}`, () => {
      assert.throws(() => parseSafetensors(bytes, "model.safetensors"), (e: unknown) =>
        e instanceof SafetensorsError && message.test((e as Error).message) && (e as Error).message.startsWith("model.safetensors: "));
    });
  }

  it("fuzz: 3000 corrupted headers and lengths are accepted or rejected with a SafetensorsError, never anything else", () => {
    const good = writeSafetensors({
      a: { dtype: "F32", shape: [3, 2], data: randomArray(6, 1) },
      b: { dtype: "BF16", shape: [5], data: randomArray(5, 2) },
      c: { dtype: "F16", shape: [2, 2], data: randomArray(4, 3) },
    });
    const headerEnd = 8 + Number(new DataView(good.buffer).getBigUint64(0, true));
    let state = 7, rejected = 0;
    const rnd = (n: number) => { state = (Math.imul(state, 1103515245) + 12345) >>> 0; return state % n; };
    const digits = "0123456789-.e,[]\"{}:";
    for (let i = 0; i < 3000; i++) {
      const b = good.slice(0, rnd(8) === 0 ? good.length - rnd(40) : good.length);
      for (let k = 0, n = 1 + rnd(4); k < n; k++) {
        const at = rnd(headerEnd);
        b[at] = at < 8 ? rnd(256) : digits.charCodeAt(rnd(digits.length));
      }
      try {
        const f = parseSafetensors(b, "fuzz");
        for (const name of f.tensors.keys()) readFloat32(f, name);
      } catch (e) {
        assert.ok(e instanceof SafetensorsError, `mutation ${i}: ${(e as Error).name}: ${(e as Error).message}`);
        rejected++;
      }
    }
    assert.ok(rejected > 1000, `only ${rejected} of 3000 mutations were rejected`);
  });
});
