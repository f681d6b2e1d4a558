import { createRuntime, type KernelBuild, type Runtime } from "../src/index.ts";
import { readFile } from "node:fs/promises";
export { seededArray as randomArray } from "../src/random.ts";

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Builds whose bytes this engine validates (relaxed needs --experimental-wasm-relaxed-simd on Node 20). */
export async function availableBuilds(): Promise<KernelBuild[]> {
  const builds: KernelBuild[] = [];
  for (const build of ["simd", "relaxed"] as const) {
    const bytes = await readFile(new URL(`../build/gqa-${build}.wasm`, import.meta.url));
    if (WebAssembly.validate(bytes)) builds.push(build);
  }
  return builds;
}

const runtimes = new Map<KernelBuild, Promise<Runtime>>();
/** One shared runtime per build for the kernel tests. */
export function runtimeFor(build: KernelBuild): Promise<Runtime> {
  let rt = runtimes.get(build);
  if (!rt) { rt = createRuntime({ build }); runtimes.set(build, rt); }
  return rt;
}

export const BUILDS = await availableBuilds();
