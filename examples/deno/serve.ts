// The OpenAI-compatible API under Deno.serve: the same handler as `gqa-wasm serve` on Node.
//   deno run -A examples/deno/serve.ts [MODEL_DIR_OR_GGUF] [--port N]
// Without a model path it serves the tiny synthetic chat model (random weights). Then point any
// OpenAI client at http://127.0.0.1:PORT/v1.
// (In a project of your own, map "gqa-wasm" to "npm:gqa-wasm" in deno.json.)
import { createOpenAIServer, createRuntime, modelIdOf, loadModel, syntheticModelFiles } from "gqa-wasm";

const args = [...Deno.args];
const portAt = args.indexOf("--port");
const port = portAt >= 0 ? Number(args.splice(portAt, 2)[1]) : 8080;
const path = args[0];
const rt = await createRuntime();
const model = await loadModel(rt, path ?? syntheticModelFiles());
const api = createOpenAIServer(model, { modelId: path ? modelIdOf(path) : "tiny" });
const server = Deno.serve({
  hostname: "127.0.0.1", port,
  onListen: ({ port }) => console.log(`gqa-wasm on Deno ${Deno.version.deno}: http://127.0.0.1:${port}/v1`),
}, api.fetch);
Deno.addSignalListener("SIGTERM", async () => { await server.shutdown(); api.close(); model.dispose(); Deno.exit(0); });
