import assert from "node:assert/strict";
import { referenceLinear, maxAbsDiff } from "../src/reference.ts";
import { BUILDS, maxAbs, randomArray, runtimeFor } from "./helpers.ts";
import { EMBED_KERNELS } from "../src/runtime/kernel-exports.ts";
import { argmax, Sampler } from "../src/model/sampling.ts";

for (const build of BUILDS) {
  describe(`SIMD exp (${build} build)`, () => {
    it("has max relative error <= 2e-7 over the softmax range [-87, 0] and up to 80", async () => {
      const rt = await runtimeFor(build);
      const n = 200_003; // odd: exercises the scalar tail too
      const xs = new Float32Array(n);
      for (let i = 0; i < n; i++) xs[i] = -87 + (167 * i) / (n - 1);
      const x = rt.upload(xs), y = rt.alloc(n);
      try {
        rt.kernels.exp_f32(x.ptr, y.ptr, n);
        const ys = y.array;
        let worst = 0;
        for (let i = 0; i < n; i++) {
          const exact = Math.exp(xs[i]!);
          worst = Math.max(worst, Math.abs(ys[i]! - exact) / exact);
        }
        assert.ok(worst <= 2e-7, `max relative error ${worst.toExponential(3)}`);
      } finally { x.free(); y.free(); }
    });

    it("gives exactly 0 for -inf and underflow, 1 for 0, and keeps NaN", async () => {
      const rt = await runtimeFor(build);
      const xs = new Float32Array([-Infinity, -1000, -88, 0, NaN]);
      const x = rt.upload(xs), y = rt.alloc(xs.length);
      try {
        rt.kernels.exp_f32(x.ptr, y.ptr, xs.length);
        const ys = y.toFloat32Array();
        assert.deepEqual([...ys.subarray(0, 4)], [0, 0, 0, 1]);
        assert.ok(Number.isNaN(ys[4]), "exp(NaN) is NaN");
      } finally { x.free(); y.free(); }
    });
  });

  describe(`linear layer (${build} build) against the float64 reference`, () => {
    const shapes: [number, number, number, boolean][] = [
      // [rows, outFeatures, inFeatures, bias]
      [1, 1, 1, false], [1, 13, 37, true], [1, 64, 4096, false], [1, 67, 2051, true], [1, 4099, 3, true],
      [2, 9, 130, true], [3, 33, 7, false], [4, 2, 8, false], [5, 7, 1031, true],
      [7, 129, 513, false], [16, 64, 600, true], [64, 96, 1536, true], [130, 31, 65, false],
    ];
    for (const [M, N, K, withBias] of shapes) {
      it(`${M}x${N}x${K}${withBias ? " with bias" : ""} (${M === 1 ? "GEMV" : "GEMM"})`, async () => {
        const rt = await runtimeFor(build);
        const x = randomArray(M * K, M * 7 + K), w = randomArray(N * K, N * 13 + K), b = withBias ? randomArray(N, N) : undefined;
        const y = rt.linear({ x, weight: w, bias: b, inFeatures: K, outFeatures: N });
        const ref = referenceLinear(x, w, b, K, N);
        const err = maxAbsDiff(y, ref);
        assert.ok(err <= 2e-4 * maxAbs(ref), `max abs error ${err.toExponential(3)} vs scale ${maxAbs(ref).toExponential(3)}`);
      });
    }

    for (const dtype of ["bf16", "f16"] as const) {
      it(`${dtype} weights stay 16-bit and are widened in registers (GEMV and GEMM with tails)`, async () => {
        const rt = await runtimeFor(build);
        for (const [M, N, K] of [[1, 67, 301], [1, 67, 2053], [2, 9, 4100], [6, 37, 130], [9, 5, 4099]] as const) {
          const xa = randomArray(M * K, M + K), wa = randomArray(N * K, N * K), ba = randomArray(N, 3);
          const x = rt.upload(xa), w = rt.upload(wa, dtype), b = rt.upload(ba), y = rt.alloc(M * N);
          try {
            assert.equal(w.byteLength, N * K * 2);
            rt.linearInto({ x, weight: w, bias: b, out: y, inFeatures: K, outFeatures: N });
            const ref = referenceLinear(xa, w.toFloat32Array(), ba, K, N); // on the stored (rounded) weights
            const err = maxAbsDiff(y.array, ref);
            assert.ok(err <= 2e-4 * maxAbs(ref), `${M}x${N}x${K}: max error ${err}`);
          } finally { for (const t of [x, w, b, y]) t.free(); }
        }
      });
    }

    it("GEMV column ranges give the same bits as one call (four distant rows at a time, the block's last rows alone, rows over several blocks), in every weight dtype", async () => {
      const rt = await runtimeFor(build);
      for (const K of [301, 2053]) for (const dtype of ["f32", "bf16", "f16"] as const) {
        const N = K > 2000 ? 133 : 37; // 133 rows of K = 2053 f32 are three GEMV blocks
        const x = rt.upload(randomArray(K, 5)), w = rt.upload(randomArray(N * K, 6), dtype), y = rt.alloc(N), parts = rt.alloc(N);
        try {
          rt.linearInto({ x, weight: w, out: y, inFeatures: K, outFeatures: N });
          parts.array.fill(NaN);
          // Each call with the scratch its kernel asks for (bf16 GEMV splits x there).
          const scratch = rt.alloc(Math.max(1, rt.kernels.linear_panel_scratch_bytes(1, K) / 4));
          for (const [n0, n1] of [[0, 5], [5, 6], [6, N]]) rt.kernels[`linear_${dtype}`](x.ptr, w.ptr, 0, parts.ptr, 1, N, K, n0!, n1!, 0, scratch.ptr);
          assert.deepEqual(parts.toFloat32Array(), y.toFloat32Array(), `K ${K}, ${dtype}`);
          // Every column alone (the one-row kernel) against the same column paired in one call.
          parts.array.fill(NaN);
          for (let n = 0; n < N; n++) rt.kernels[`linear_${dtype}`](x.ptr, w.ptr, 0, parts.ptr, 1, N, K, n, n + 1, 0, scratch.ptr);
          scratch.free();
          assert.deepEqual(parts.toFloat32Array(), y.toFloat32Array(), `K ${K}, ${dtype}, columns alone`);
        } finally { for (const t of [x, w, y, parts]) t.free(); }
      }
    });

    it("upload takes a checkpoint's raw bf16 / f16 bits as they are", async () => {
      const rt = await runtimeFor(build);
      const values = randomArray(300, 9);
      for (const dtype of ["bf16", "f16"] as const) {
        const converted = rt.upload(values, dtype);
        const bits = new Uint16Array(rt.memory.memory.buffer, converted.ptr, values.length).slice();
        const raw = rt.upload(bits, dtype);
        assert.deepEqual(raw.toFloat32Array(), converted.toFloat32Array());
        converted.free(); raw.free();
      }
      assert.throws(() => rt.upload(new Uint16Array(4), "f32"), /a Uint16Array holds bf16 or f16 bits; pass dtype "bf16" or "f16", not f32/);
    });

    it("16-bit weights widen zeros, subnormals and the largest finite values exactly (bf16 infinities too; f16 weights must be finite)", async () => {
      const rt = await runtimeFor(build);
      const special = { f16: [0, -0, 1, -2, 65504, -65504, 2 ** -24, -(2 ** -24), 3 * 2 ** -20, 6.1e-5, -0.333251953125], bf16: [0, -0, 1, -2, 3.3895313892515355e38, 2 ** -133, 1e-40, Infinity, -Infinity] };
      for (const dtype of ["f16", "bf16"] as const) {
        const values = Float32Array.from(special[dtype]);
        const x = rt.upload(new Float32Array([1])), w = rt.upload(values, dtype), y = rt.alloc(values.length);
        try {
          rt.linearInto({ x, weight: w, out: y, inFeatures: 1, outFeatures: values.length });
          const noSign = (a: Float32Array) => Array.from(a, (v) => (v === 0 ? 0 : v)); // a dot product starts at +0: -0 sums to +0
          assert.deepEqual(noSign(y.toFloat32Array()), noSign(w.toFloat32Array()), dtype);
        } finally { for (const t of [x, w, y]) t.free(); }
      }
      // Every finite f16 bit pattern widens exactly (the kernels' 4-operation widening).
      const bits = Uint16Array.from({ length: 65536 }, (_, h) => h).filter((h) => (h & 0x7c00) !== 0x7c00);
      const w = rt.upload(bits, "f16"), x = rt.upload(new Float32Array([1])), y = rt.alloc(bits.length);
      rt.linearInto({ x, weight: w, out: y, inFeatures: 1, outFeatures: bits.length });
      const got = y.toFloat32Array(), want = w.toFloat32Array();
      for (let i = 0; i < bits.length; i++) assert.ok(got[i] === want[i] || (got[i] === 0 && want[i] === 0), `f16 0x${bits[i]!.toString(16)}: ${got[i]} vs ${want[i]}`);
      for (const b of [w, x, y]) b.free();
      assert.throws(() => rt.upload(new Float32Array([1, 70000]), "f16"), /70000 \(element 1\) is not a finite f16/);
    });

    it("linearInto on resident weights equals linear, and column ranges compose", async () => {
      const rt = await runtimeFor(build);
      const [M, N, K] = [6, 37, 300];
      const xa = randomArray(M * K, 1), wa = randomArray(N * K, 2), ba = randomArray(N, 3);
      const x = rt.upload(xa), w = rt.upload(wa), b = rt.upload(ba), y = rt.alloc(M * N), parts = rt.alloc(M * N);
      try {
        rt.linearInto({ x, weight: w, bias: b, out: y, inFeatures: K, outFeatures: N });
        assert.deepEqual(y.toFloat32Array(), rt.linear({ x: xa, weight: wa, bias: ba, inFeatures: K, outFeatures: N }));
        parts.array.fill(NaN);
        for (const [n0, n1] of [[0, 5], [5, 6], [6, N]]) rt.kernels.linear_f32(x.ptr, w.ptr, b.ptr, parts.ptr, M, N, K, n0!, n1!, 0, 0);
        assert.deepEqual(parts.toFloat32Array(), y.toFloat32Array());
      } finally {
        for (const t of [x, w, b, y, parts]) t.free();
      }
    });

  describe(`embedding lookup (${build} build)`, () => {
    it("gives each id's table row as the host reads it, bit for bit, in every table dtype, for any row range and a row length past whole blocks", async () => {
      const rt = await runtimeFor(build);
      const V = 11, K = 70; // 70: two whole 32-blocks and a partial one, and a 4-float tail
      const table = randomArray(V * K, 31).map((v, i) => (i % 17 === 0 ? v * 1e-6 : v * 3));
      for (const dtype of ["f32", "bf16", "f16", "q8_0", "q4_0", "q5_0_u8", "q5_1_u8"] as const) {
        const w = dtype === "f32" || dtype === "bf16" || dtype === "f16" ? rt.upload(table, dtype) : rt.upload(table, dtype, K);
        const tokens = [7, 0, 10, 7, 3], ids = rt.alloc(tokens.length), out = rt.alloc(tokens.length * K);
        try {
          rt.memory.i32.set(tokens, ids.ptr >>> 2);
          out.array.fill(NaN);
          const kernel = rt.kernels[EMBED_KERNELS[dtype]];
          kernel(w.ptr, K, ids.ptr, 0, 2, out.ptr);
          kernel(w.ptr, K, ids.ptr, 2, tokens.length, out.ptr);
          tokens.forEach((t, r) => assert.deepEqual(out.toFloat32Array().subarray(r * K, (r + 1) * K), w.subarray(t * K, (t + 1) * K).toFloat32Array(), `${dtype}: row ${r} (token ${t})`));
        } finally { for (const b of [w, ids, out]) b.free(); }
      }
    });
  });

  describe(`16-bit weights in a GEMM (${build} build): widened into an f32 panel once per call`, () => {
    for (const dtype of ["bf16", "f16"] as const) {
      it(`gives the bits of the f32 kernel on the widened weights, ${dtype} (any M from 4, K over two slices, N past one block)`, async () => {
        const rt = await runtimeFor(build);
        for (const [M, N, K] of [[4, 70, 600], [7, 131, 1030], [9, 5, 33]] as const) {
          const x = rt.upload(randomArray(M * K, 5)), w16 = rt.upload(randomArray(N * K, 6), dtype);
          const w32 = rt.upload(w16.toFloat32Array()), a = rt.alloc(M * N), b = rt.alloc(M * N);
          try {
            rt.linearInto({ x, weight: w16, out: a, inFeatures: K, outFeatures: N });
            rt.linearInto({ x, weight: w32, out: b, inFeatures: K, outFeatures: N });
            assert.deepEqual(a.toFloat32Array(), b.toFloat32Array(), `${M}x${N}x${K}`);
          } finally { for (const t of [x, w16, w32, a, b]) t.free(); }
        }
      });
    }
  });

  describe(`linear layer with accumulate (${build} build): out = (out + x·Wᵀ) + b, the residual add fused`, () => {
    for (const dtype of ["f32", "bf16", "f16", "q8_0", "q4_0"] as const) {
      it(`equals the product added afterwards, ${dtype}, GEMV and GEMM rows, K past one slice`, async () => {
        const rt = await runtimeFor(build);
        for (const [M, N, K] of [[1, 9, 40], [3, 5, 700], [6, 13, 96], [8, 6, 700]] as const) {
          const x = rt.upload(randomArray(M * K, 1)), bias = rt.upload(randomArray(N, 3));
          const w = dtype === "q8_0" || dtype === "q4_0" ? rt.upload(randomArray(N * K, 2), dtype, K) : rt.upload(randomArray(N * K, 2), dtype);
          const y0 = randomArray(M * N, 4), acc = rt.upload(y0), plain = rt.alloc(M * N);
          try {
            rt.linearInto({ x, weight: w, out: plain, inFeatures: K, outFeatures: N });
            const bs = bias.toFloat32Array();
            for (const b of [undefined, bias]) {
              acc.set(y0);
              rt.linearInto({ x, weight: w, bias: b, out: acc, inFeatures: K, outFeatures: N, accumulate: true });
              // (y + x·Wᵀ) + b, in f32
              const expected = Float32Array.from(plain.array, (v, i) => Math.fround(y0[i]! + v) + (b ? bs[i % N]! : 0));
              // One K slice (and every GEMV) adds y once at the end: the same bits. A GEMM over
              // several K slices adds the slices onto y in turn: a reassociation.
              if (M < 4 || K <= 512) assert.deepEqual(acc.toFloat32Array(), expected, `${M}x${N}x${K}${b ? " + bias" : ""}`);
              else assert.ok(maxAbsDiff(acc.toFloat32Array(), expected) <= 1e-5 * maxAbs(expected), `${M}x${N}x${K}: ${maxAbsDiff(acc.toFloat32Array(), expected)}`);
            }
          } finally { for (const t of [x, w, bias, acc, plain]) t.free(); }
        }
      });
    }
  });
  });
  describe(`argmax on resident logits (${build} build)`, () => {
    it("picks what the JavaScript argmax picks: the first of equal values, never a NaN after x[0], any length", async () => {
      const rt = await runtimeFor(build);
      let seed = 7;
      const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
      const cases: Float32Array[] = [Float32Array.of(-0, 0), Float32Array.of(0, -0), Float32Array.of(NaN, 5, 9), Float32Array.of(2, NaN, 9, NaN),
        new Float32Array(13).fill(-Infinity), Float32Array.of(-Infinity, NaN, -Infinity, 3), Float32Array.of(1, Infinity, 2, Infinity)];
      for (let n = 1; n <= 40; n++) {
        // Few distinct values, so most rows hold ties across lanes, vectors and the tail.
        cases.push(Float32Array.from({ length: n }, () => Math.floor(next() * 4) - 2));
        cases.push(Float32Array.from({ length: n }, () => (next() < 0.2 ? NaN : next() < 0.2 ? -Infinity : next())));
      }
      for (const n of [49152, 151936 + 3]) {
        const big = Float32Array.from({ length: n }, () => next() * 20 - 10);
        big[n - 1] = big[12345] = 10.5; // two equal maxima: the first wins
        cases.push(big);
      }
      for (const values of cases) {
        const x = rt.upload(values);
        try {
          const expected = argmax(values);
          assert.equal(rt.argmaxResident(x.array), expected, `[${Array.from(values.subarray(0, 12)).join(", ")}${values.length > 12 ? ", ..." : ""}] (${values.length})`);
          assert.equal(new Sampler({}, (v) => rt.argmaxResident(v)).next(x.array), expected);
        } finally { x.free(); }
      }
      assert.equal(rt.argmaxResident(Float32Array.of(1, 2)), undefined, "a JavaScript array is not resident");
    });
  });
}
