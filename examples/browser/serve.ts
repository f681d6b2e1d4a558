// `npm run example:browser [-- --port 8080] [-- --model FILE.gguf]`: bundles the browser
// example's pages and Web Workers (esbuild, "gqa-wasm" = this checkout) and serves them with the
// kernels from http://127.0.0.1:PORT with COOP/COEP (cross-origin isolated, so threads work).
// With --model, the file is served as /model.gguf for the GGUF page's default URL.
import { createReadStream, mkdtempSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { bundle } from "../bundle.ts";

const { values } = parseArgs({ options: { port: { type: "string", default: "8080" }, model: { type: "string" }, host: { type: "string", default: "127.0.0.1" } }, strict: true });
const here = fileURLToPath(new URL(".", import.meta.url)), root = fileURLToPath(new URL("../..", import.meta.url));
const out = mkdtempSync(join(tmpdir(), "gqa-browser-example-"));
const files: Record<string, [string, string]> = {
  "/": ["text/html", join(here, "index.html")], "/index.html": ["text/html", join(here, "index.html")], "/gguf.html": ["text/html", join(here, "gguf.html")],
};
for (const name of ["main", "worker", "gguf-main", "gguf-worker"]) {
  await bundle(join(here, `${name}.ts`), join(out, `${name}.js`));
  files[`/${name}.js`] = ["text/javascript", join(out, `${name}.js`)];
}
for (const b of ["relaxed", "simd", "relaxed-threads", "simd-threads"]) files[`/build/gqa-${b}.wasm`] = ["application/wasm", join(root, `build/gqa-${b}.wasm`)];
if (values.model) files["/model.gguf"] = ["application/octet-stream", values.model];
const server = createServer((req, res) => {
  const file = files[new URL(req.url ?? "/", "http://x").pathname];
  if (!file) { res.writeHead(404).end("not found"); return; }
  res.writeHead(200, {
    "content-type": file[0], "content-length": String(statSync(file[1]).size),
    "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp",
  });
  createReadStream(file[1]).pipe(res);
});
server.listen(Number(values.port), values.host, () => {
  console.log(`gqa-wasm browser example: http://${values.host}:${values.port}/ (decode chart) and http://${values.host}:${values.port}/gguf.html (run a GGUF model${values.model ? `; ${values.model} is /model.gguf` : ""}); Ctrl-C stops`);
});
