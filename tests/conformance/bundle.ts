// Bundles a conformance entry for hosts without a module loader for our TypeScript
// (workerd, the browser): one ESM file. It must bundle with no Node built-in at all (the
// runtime reaches them only through computed dynamic imports), which workerd checks.
import { build } from "esbuild";

export async function bundle(entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [entry], outfile, bundle: true, format: "esm", platform: "browser", target: "es2022",
    external: ["*.wasm"], logLevel: "error",
  });
}
