// Bundles a conformance entry for hosts without a module loader for our TypeScript
// (workerd, the browser): one ESM file. The runtime reaches Node built-ins only on Node, Deno
// and Bun paths (reading a file: URL, starting worker_threads), through dynamic imports; here
// they become modules that throw when loaded, so the bundle holds no Node built-in at all.
import { build } from "esbuild";

export async function bundle(entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [entry], outfile, bundle: true, format: "esm", platform: "browser", target: "es2022",
    external: ["*.wasm"], logLevel: "error",
    plugins: [{
      name: "no-node-builtins",
      setup(b) {
        b.onResolve({ filter: /^node:/ }, (a) => ({ path: a.path, namespace: "unavailable" }));
        b.onLoad({ filter: /.*/, namespace: "unavailable" }, (a) => ({
          contents: `throw new Error(${JSON.stringify(`${a.path} is not available on this host`)});`, loader: "js",
        }));
      },
    }],
  });
}
