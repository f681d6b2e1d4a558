import assert from "node:assert/strict";
import { maxAbsDiff } from "../src/reference.ts";
import { ropeInverseFrequencies, ropeTable } from "../src/model/rope.ts";
import { BUILDS, maxAbs, randomArray, runtimeFor } from "./helpers.ts";

// The building blocks of the model runner's forward pass against plain float64 code.
for (const build of BUILDS) {
  describe(`transformer kernels (${build} build)`, () => {
    it("RMSNorm equals x / sqrt(mean(x²) + eps) · w, in place too, for dims with tails", async () => {
      const rt = await runtimeFor(build);
      for (const dim of [1, 7, 64, 130]) {
        const rows = 3, xa = randomArray(rows * dim, dim, 3), wa = randomArray(dim, 2 * dim);
        const ref = new Float64Array(rows * dim);
        for (let r = 0; r < rows; r++) {
          let ss = 0;
          for (let i = 0; i < dim; i++) ss += xa[r * dim + i]! ** 2;
          const inv = 1 / Math.sqrt(ss / dim + 1e-5);
          for (let i = 0; i < dim; i++) ref[r * dim + i] = xa[r * dim + i]! * inv * wa[i]!;
        }
        const x = rt.upload(xa), w = rt.upload(wa);
        try {
          rt.kernels.rmsnorm_f32(x.ptr, w.ptr, x.ptr, dim, 1e-5, 0, rows);
          assert.ok(maxAbsDiff(x.array, ref) <= 1e-5 * maxAbs(ref), `dim ${dim}`);
        } finally { x.free(); w.free(); }
      }
    });

    it("RoPE rotates each head's halves (rotate_half) by the table's angles, from any table row; partial rotary leaves the rest of the head", async () => {
      const rt = await runtimeFor(build);
      // [heads, head_dim, rotated elements]: whole heads, and Phi-4-mini's 3/4 (96 of 128) with tails.
      for (const [heads, d, rd] of [[3, 8, 8], [2, 64, 64], [4, 6, 6], [1, 130, 130], [3, 128, 96], [2, 40, 30], [2, 16, 2]] as const) {
        const rows = 5, first = 7, scale = rd < d ? 1.19 : 1;
        const table = ropeTable(first + rows, ropeInverseFrequencies(rd, 10000), scale);
        const xa = randomArray(rows * heads * d, heads * d);
        const ref = Float64Array.from(xa);
        for (let r = 0; r < rows; r++) {
          for (let h = 0; h < heads; h++) {
            const base = (r * heads + h) * d;
            for (let i = 0; i < rd / 2; i++) {
              const angle = (first + r) / 10000 ** ((2 * i) / rd), c = Math.cos(angle) * scale, s = Math.sin(angle) * scale;
              const a = xa[base + i]!, b = xa[base + i + rd / 2]!;
              ref[base + i] = a * c - b * s;
              ref[base + i + rd / 2] = b * c + a * s;
            }
          }
        }
        const x = rt.upload(xa), cos = rt.upload(table.cos), sin = rt.upload(table.sin);
        try {
          rt.kernels.rope_f32(x.ptr, rows, heads, d, rd, cos.ptr, sin.ptr, first);
          assert.ok(maxAbsDiff(x.array, ref) <= 1e-5, `heads ${heads}, head_dim ${d}, rotary ${rd}: ${maxAbsDiff(x.array, ref)}`);
          // The elements past the rotated ones are untouched, bit for bit.
          for (let e = 0; e < rows * heads; e++) assert.deepEqual(x.array.subarray(e * d + rd, (e + 1) * d), xa.subarray(e * d + rd, (e + 1) * d));
        } finally { x.free(); cos.free(); sin.free(); }
      }
    });

    it("llama3 rope scaling keeps high frequencies, divides low ones by the factor, blends between", () => {
      const scaling = { type: "llama3" as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
      const plain = ropeInverseFrequencies(128, 500000), scaled = ropeInverseFrequencies(128, 500000, scaling);
      const wavelen = (f: number) => (2 * Math.PI) / f;
      plain.forEach((f, i) => {
        const s = scaled[i]!;
        if (wavelen(f) < 8192 / 4) assert.equal(s, f);
        else if (wavelen(f) > 8192) assert.ok(Math.abs(s - f / 8) <= 1e-15 * f);
        else assert.ok(s < f && s > f / 8, `blend at ${i}`);
      });
    });

    it("SwiGLU equals silu(gate) · up, including large |gate| where a naive exp overflows", async () => {
      const rt = await runtimeFor(build);
      const n = 1001;
      const ga = randomArray(n, 1, 20), ua = randomArray(n, 2);
      ga[0] = -100; ga[1] = 100; ga[2] = 0;
      const ref = Array.from(ga, (g, i) => (g / (1 + Math.exp(-g))) * ua[i]!);
      const g = rt.upload(ga), u = rt.upload(ua), out = rt.alloc(n);
      try {
        rt.kernels.swiglu_f32(g.ptr, u.ptr, out.ptr, n);
        const err = maxAbsDiff(out.array, ref);
        assert.ok(err <= 1e-5 * maxAbs(ref), `max error ${err}`);
        assert.ok(out.array.every(Number.isFinite));
      } finally { g.free(); u.free(); out.free(); }
    });

    it("GeGLU equals gelu_pytorch_tanh(gate) · up (torch's formula), to relative error, far into both tails", async () => {
      const rt = await runtimeFor(build);
      const n = 1003;
      const ga = randomArray(n, 3, 8), ua = randomArray(n, 4);
      ga[0] = -100; ga[1] = 100; ga[2] = 0; ga[3] = -9; ga[4] = -5.5; ga[5] = 1e-4;
      const y = (x: number) => Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3);
      const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(y(x)));
      const ref = Array.from(ga, (g, i) => gelu(g) * ua[i]!);
      // The same function with 0.5·(1 + tanh(y)) as 1 / (1 + e^(-2y)): float64's 1 + tanh cancels in the tail (g < -5).
      const exact = Array.from(ga, (g, i) => (g / (1 + Math.exp(-2 * y(g)))) * ua[i]!);
      const g = rt.upload(ga), u = rt.upload(ua), out = rt.alloc(n);
      try {
        rt.kernels.geglu_tanh_f32(g.ptr, u.ptr, out.ptr, n);
        assert.ok(maxAbsDiff(out.array, ref) <= 1e-5 * maxAbs(ref), `max error ${maxAbsDiff(out.array, ref)}`);
        // Each element to relative error too: the tail g << 0, where 1 + tanh cancels, is tiny but right.
        for (let i = 0; i < n; i++) if (Math.abs(exact[i]!) > 1e-30) assert.ok(Math.abs(out.array[i]! - exact[i]!) <= 2e-5 * Math.abs(exact[i]!), `element ${i} (gate ${ga[i]}): ${out.array[i]} vs ${exact[i]}`);
      } finally { g.free(); u.free(); out.free(); }
    });

    it("soft-cap (Gemma 2's logits) equals cap · tanh(x / cap) to 1e-6 of the cap, into both tails; a scaled add (Granite's residual) equals y + s · x", async () => {
      const rt = await runtimeFor(build);
      const n = 1003, xa = randomArray(n, 5, 200), ya = randomArray(n, 6, 3);
      xa[0] = 1e6; xa[1] = -1e6; xa[2] = 0; xa[3] = 1e-3; xa[4] = -29.9;
      const x = rt.upload(xa), y = rt.upload(ya), out = rt.alloc(n);
      try {
        for (const cap of [30, 50, 0.5]) {
          rt.kernels.softcap_f32(x.ptr, out.ptr, n, cap);
          for (let i = 0; i < n; i++) assert.ok(Math.abs(out.array[i]! - cap * Math.tanh(xa[i]! / cap)) <= 1e-6 * cap, `cap ${cap}, x ${xa[i]}: ${out.array[i]}`);
        }
        rt.kernels.add_scaled_f32(x.ptr, y.ptr, n, 0.22);
        assert.deepEqual([...y.array], [...Float32Array.from(ya, (v, i) => Math.fround(v + Math.fround(xa[i]! * Math.fround(0.22))))]);
      } finally { x.free(); y.free(); out.free(); }
    });

    it("RMSNorm added into a residual (Gemma's output norms): out += rmsnorm(x) · w over a row range; and a scale by a constant", async () => {
      const rt = await runtimeFor(build);
      for (const dim of [1, 7, 64, 130]) {
        const rows = 4, xa = randomArray(rows * dim, dim, 3), wa = randomArray(dim, 2 * dim), ra = randomArray(rows * dim, 3 * dim, 2);
        const ref = Float64Array.from(ra);
        for (let r = 1; r < 3; r++) {
          let ss = 0;
          for (let i = 0; i < dim; i++) ss += xa[r * dim + i]! ** 2;
          const inv = 1 / Math.sqrt(ss / dim + 1e-6);
          for (let i = 0; i < dim; i++) ref[r * dim + i] = ra[r * dim + i]! + xa[r * dim + i]! * inv * wa[i]!;
        }
        const x = rt.upload(xa), w = rt.upload(wa), res = rt.upload(ra);
        try {
          rt.kernels.rmsnorm_add_f32(x.ptr, w.ptr, res.ptr, dim, 1e-6, 1, 3);
          assert.ok(maxAbsDiff(res.array, ref) <= 1e-5 * maxAbs(ref), `dim ${dim}`);
          assert.deepEqual([...res.array.subarray(0, dim)], [...ra.subarray(0, dim)], "rows outside the range untouched");
          rt.kernels.scale_f32(x.ptr, x.ptr, rows * dim - 1, 25.25);
          assert.deepEqual([...x.array], [...Float32Array.from(xa, (v, i) => (i < rows * dim - 1 ? Math.fround(v * 25.25) : v))]);
        } finally { x.free(); w.free(); res.free(); }
      }
    });
  });
}
