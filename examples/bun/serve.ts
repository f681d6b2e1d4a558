// The OpenAI-compatible API under Bun.serve: the same handler as `gqa-wasm serve` on Node.
//   bun examples/bun/serve.ts [MODEL_DIR_OR_GGUF] [--port N]
// Without a model path it serves the tiny synthetic chat model (random weights). Then point any
// OpenAI client at http://127.0.0.1:PORT/v1.
import { createOpenAIServer, createRuntime, modelIdOf, loadModel, syntheticModelFiles } from "../../src/index.ts";

const args = process.argv.slice(2);
const portAt = args.indexOf("--port");
const port = portAt >= 0 ? Number(args.splice(portAt, 2)[1]) : 8080;
const path = args[0];
const rt = await createRuntime();
const model = await loadModel(rt, path ?? syntheticModelFiles());
const api = createOpenAIServer(model, { modelId: path ? modelIdOf(path) : "tiny" });
// idleTimeout 0: a long generation streams for as long as it takes.
const server = Bun.serve({ hostname: "127.0.0.1", port, idleTimeout: 0, fetch: api.fetch });
console.log(`gqa-wasm on Bun ${Bun.version}: http://127.0.0.1:${server.port}/v1`);
process.on("SIGTERM", () => { server.stop(true); api.close(); model.dispose(); process.exit(0); });
