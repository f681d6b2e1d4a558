import { fmadd, load1, load4 } from "../simd";

// The probability·value microkernel family: o_r[0..w) += Σ_j p_r[j] · v_j[0..w) for rows r of a
// tile, j over a block of keys. v_j = v + j·ldv (bytes), so the keys may be strided (token-major
// K/V) or contiguous (a head-major page); V elements are of type V (f32, bf16 as u16, i8),
// widened in registers. Tiles: 4 rows x 8 floats (8 accumulators, six loads
// per eight FMAs), 4x4, 3x12, 2x16, 1x16, 1x4, and a scalar column for head_dim tails.

// @ts-ignore: decorator
@inline export function pvacc_4x8<V>(
  p0: usize, p1: usize, p2: usize, p3: usize, v: usize, ldv: usize, nKeys: i32,
  o0: usize, o1: usize, o2: usize, o3: usize,
): void {
  let a0 = v128.load(o0), b0 = v128.load(o0, 16);
  let a1 = v128.load(o1), b1 = v128.load(o1, 16);
  let a2 = v128.load(o2), b2 = v128.load(o2, 16);
  let a3 = v128.load(o3), b3 = v128.load(o3, 16);
  const end = <usize>nKeys << 2;
  for (let j: usize = 0; j < end; j += 4) {
    const va = load4<V>(v, 0), vb = load4<V>(v, 4);
    let p = v128.load32_splat(p0 + j);
    a0 = fmadd(p, va, a0); b0 = fmadd(p, vb, b0);
    p = v128.load32_splat(p1 + j);
    a1 = fmadd(p, va, a1); b1 = fmadd(p, vb, b1);
    p = v128.load32_splat(p2 + j);
    a2 = fmadd(p, va, a2); b2 = fmadd(p, vb, b2);
    p = v128.load32_splat(p3 + j);
    a3 = fmadd(p, va, a3); b3 = fmadd(p, vb, b3);
    v += ldv;
  }
  v128.store(o0, a0); v128.store(o0, b0, 16);
  v128.store(o1, a1); v128.store(o1, b1, 16);
  v128.store(o2, a2); v128.store(o2, b2, 16);
  v128.store(o3, a3); v128.store(o3, b3, 16);
}

// @ts-ignore: decorator
@inline export function pvacc_4x4<V>(
  p0: usize, p1: usize, p2: usize, p3: usize, v: usize, ldv: usize, nKeys: i32,
  o0: usize, o1: usize, o2: usize, o3: usize,
): void {
  let a0 = v128.load(o0), a1 = v128.load(o1), a2 = v128.load(o2), a3 = v128.load(o3);
  const end = <usize>nKeys << 2;
  for (let j: usize = 0; j < end; j += 4) {
    const va = load4<V>(v, 0);
    a0 = fmadd(v128.load32_splat(p0 + j), va, a0);
    a1 = fmadd(v128.load32_splat(p1 + j), va, a1);
    a2 = fmadd(v128.load32_splat(p2 + j), va, a2);
    a3 = fmadd(v128.load32_splat(p3 + j), va, a3);
    v += ldv;
  }
  v128.store(o0, a0); v128.store(o1, a1); v128.store(o2, a2); v128.store(o3, a3);
}

/** 3 rows x 12 floats (9 accumulators, six loads per nine FMAs): a group of 3 query heads without a repeated fourth row. */
// @ts-ignore: decorator
@inline export function pvacc_3x12<V>(p0: usize, p1: usize, p2: usize, v: usize, ldv: usize, nKeys: i32, o0: usize, o1: usize, o2: usize): void {
  let a0 = v128.load(o0), b0 = v128.load(o0, 16), c0 = v128.load(o0, 32);
  let a1 = v128.load(o1), b1 = v128.load(o1, 16), c1 = v128.load(o1, 32);
  let a2 = v128.load(o2), b2 = v128.load(o2, 16), c2 = v128.load(o2, 32);
  const end = <usize>nKeys << 2;
  for (let j: usize = 0; j < end; j += 4) {
    const va = load4<V>(v, 0), vb = load4<V>(v, 4), vc = load4<V>(v, 8);
    let p = v128.load32_splat(p0 + j);
    a0 = fmadd(p, va, a0); b0 = fmadd(p, vb, b0); c0 = fmadd(p, vc, c0);
    p = v128.load32_splat(p1 + j);
    a1 = fmadd(p, va, a1); b1 = fmadd(p, vb, b1); c1 = fmadd(p, vc, c1);
    p = v128.load32_splat(p2 + j);
    a2 = fmadd(p, va, a2); b2 = fmadd(p, vb, b2); c2 = fmadd(p, vc, c2);
    v += ldv;
  }
  v128.store(o0, a0); v128.store(o0, b0, 16); v128.store(o0, c0, 32);
  v128.store(o1, a1); v128.store(o1, b1, 16); v128.store(o1, c1, 32);
  v128.store(o2, a2); v128.store(o2, b2, 16); v128.store(o2, c2, 32);
}

/** 2 rows x 16 floats (8 accumulators, six loads per eight FMAs): a group of 2 query heads without the two repeated rows of a 4-row tile. */
// @ts-ignore: decorator
@inline export function pvacc_2x16<V>(p0: usize, p1: usize, v: usize, ldv: usize, nKeys: i32, o0: usize, o1: usize): void {
  let a0 = v128.load(o0), b0 = v128.load(o0, 16), c0 = v128.load(o0, 32), d0 = v128.load(o0, 48);
  let a1 = v128.load(o1), b1 = v128.load(o1, 16), c1 = v128.load(o1, 32), d1 = v128.load(o1, 48);
  const end = <usize>nKeys << 2;
  for (let j: usize = 0; j < end; j += 4) {
    const s0 = v128.load32_splat(p0 + j), s1 = v128.load32_splat(p1 + j);
    let x = load4<V>(v, 0);
    a0 = fmadd(s0, x, a0); a1 = fmadd(s1, x, a1);
    x = load4<V>(v, 4);
    b0 = fmadd(s0, x, b0); b1 = fmadd(s1, x, b1);
    x = load4<V>(v, 8);
    c0 = fmadd(s0, x, c0); c1 = fmadd(s1, x, c1);
    x = load4<V>(v, 12);
    d0 = fmadd(s0, x, d0); d1 = fmadd(s1, x, d1);
    v += ldv;
  }
  v128.store(o0, a0); v128.store(o0, b0, 16); v128.store(o0, c0, 32); v128.store(o0, d0, 48);
  v128.store(o1, a1); v128.store(o1, b1, 16); v128.store(o1, c1, 32); v128.store(o1, d1, 48);
}

// @ts-ignore: decorator
@inline export function pvacc_1x16<V>(p0: usize, v: usize, ldv: usize, nKeys: i32, o0: usize): void {
  let a = v128.load(o0), b = v128.load(o0, 16), c = v128.load(o0, 32), d = v128.load(o0, 48);
  const end = <usize>nKeys << 2;
  for (let j: usize = 0; j < end; j += 4) {
    const p = v128.load32_splat(p0 + j);
    a = fmadd(p, load4<V>(v, 0), a);
    b = fmadd(p, load4<V>(v, 4), b);
    c = fmadd(p, load4<V>(v, 8), c);
    d = fmadd(p, load4<V>(v, 12), d);
    v += ldv;
  }
  v128.store(o0, a); v128.store(o0, b, 16); v128.store(o0, c, 32); v128.store(o0, d, 48);
}

// @ts-ignore: decorator
@inline export function pvacc_1x4<V>(p0: usize, v: usize, ldv: usize, nKeys: i32, o0: usize): void {
  let a = v128.load(o0);
  const end = <usize>nKeys << 2;
  for (let j: usize = 0; j < end; j += 4) {
    a = fmadd(v128.load32_splat(p0 + j), load4<V>(v, 0), a);
    v += ldv;
  }
  v128.store(o0, a);
}

/** One output float: the head_dim tail. */
// @ts-ignore: decorator
@inline export function pvacc_1x1<V>(p0: usize, v: usize, ldv: usize, nKeys: i32, o0: usize): void {
  let a = load<f32>(o0);
  const end = <usize>nKeys << 2;
  for (let j: usize = 0; j < end; j += 4) {
    a += load<f32>(p0 + j) * load1<V>(v, 0);
    v += ldv;
  }
  store<f32>(o0, a);
}
