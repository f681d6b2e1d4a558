// Bundles an entry (a conformance case, an example) for hosts without a module loader for our TypeScript
// (workerd, the browser): one ESM file. It must bundle with no Node built-in at all (the
// runtime reaches them only through computed dynamic imports), which workerd checks.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

export async function bundle(entry: string, outfile: string): Promise<void> {
  const source = fileURLToPath(new URL("../src/index.ts", import.meta.url));
  await build({
    entryPoints: [entry], outfile, bundle: true, format: "esm", platform: "browser", target: "es2022",
    logLevel: "error",
    plugins: [{
      // The examples import the package as a user would: "gqa-wasm" is this checkout's source,
      // and "gqa-wasm/build/<name>.wasm" stays an import of the module file "./<name>.wasm".
      name: "gqa-wasm-package",
      setup(b) {
        b.onResolve({ filter: /\.wasm$/ }, (a) => ({ path: `./${a.path.split("/").pop()}`, external: true }));
        b.onResolve({ filter: /^gqa-wasm$/ }, () => ({ path: source }));
      },
    }],
  });
}
