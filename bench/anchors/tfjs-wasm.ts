import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-wasm";

// @tensorflow/tfjs-backend-wasm (XNNPACK), 1 thread under Node: MatMul with both operands
// resident in its memory.

let ready: Promise<void> | undefined;
export function initTfjs(): Promise<void> {
  ready ??= (async () => {
    await tf.setBackend("wasm");
    await tf.ready();
  })();
  return ready;
}

export interface TfjsCase { run(): Float32Array; dispose(): void }

/** y = x · Wᵀ for W [N, K]; tfjs gets W already transposed to [K, N], its plain layout. */
export function tfjsMatMul(x: Float32Array, w: Float32Array, M: number, N: number, K: number): TfjsCase {
  const wKN = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wKN[k * N + n] = w[n * K + k]!;
  const xt = tf.tensor2d(x, [M, K]), wt = tf.tensor2d(wKN, [K, N]);
  return {
    run() {
      const y = tf.matMul(xt, wt);
      const data = y.dataSync() as Float32Array;
      y.dispose();
      return data;
    },
    dispose() { xt.dispose(); wt.dispose(); },
  };
}
