// Rotary position embedding in the Hugging Face convention (rotate_half): in each head, of the
// first rotaryDim elements, element i < rotaryDim/2 pairs with i + rotaryDim/2:
// (a, b) -> (a·cos - b·sin, b·cos + a·sin); the rest of the head (partial rotary, Phi-4-mini's
// last quarter) passes through. The host computes the angle table (inverse frequencies, their
// scalings) once; cos and sin are [positions][rotaryDim/2]. x is token-major [rows, heads,
// headDim]; row r uses table row tableRow0 + r. In place.
export function rope_f32(x: usize, rows: i32, heads: i32, headDim: i32, rotaryDim: i32, cos: usize, sin: usize, tableRow0: i32): void {
  const half = rotaryDim >> 1;
  const halfBytes = <usize>half << 2;
  const body = <usize>(half & ~3) << 2;
  for (let r = 0; r < rows; r++) {
    const c = cos + <usize>(tableRow0 + r) * halfBytes, s = sin + <usize>(tableRow0 + r) * halfBytes;
    for (let h = 0; h < heads; h++) {
      const a = x + (<usize>(r * heads + h) * <usize>headDim << 2), b = a + halfBytes;
      for (let o: usize = 0; o < body; o += 16) {
        const av = v128.load(a + o), bv = v128.load(b + o), cv = v128.load(c + o), sv = v128.load(s + o);
        v128.store(a + o, f32x4.sub(f32x4.mul(av, cv), f32x4.mul(bv, sv)));
        v128.store(b + o, f32x4.add(f32x4.mul(bv, cv), f32x4.mul(av, sv)));
      }
      for (let o = body; o < halfBytes; o += 4) {
        const av = load<f32>(a + o), bv = load<f32>(b + o), cv = load<f32>(c + o), sv = load<f32>(s + o);
        store<f32>(a + o, av * cv - bv * sv);
        store<f32>(b + o, bv * cv + av * sv);
      }
    }
  }
}
