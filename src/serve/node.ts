// The OpenAI-compatible handler on Node's HTTP server (@hono/node-server), for `gqa-wasm serve`.
import { serve, type ServerType } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import type { LanguageModel } from "../model/language-model.ts";
import { createOpenAIServer, type OpenAIServer, type OpenAIServerOptions } from "./openai.ts";

export interface NodeServer {
  /** http://host:port */
  url: string;
  api: OpenAIServer;
  /** Stops listening, ends running requests and frees the server's KV cache. */
  close(): Promise<void>;
}

export async function serveNode(model: LanguageModel, options: OpenAIServerOptions & { host?: string; port?: number } = {}): Promise<NodeServer> {
  const api = createOpenAIServer(model, options);
  const hostname = options.host ?? "127.0.0.1";
  let server!: ServerType;
  const address = await new Promise<AddressInfo>((resolve, reject) => {
    server = serve({ fetch: api.fetch, hostname, port: options.port ?? 8080 }, (info) => resolve(info));
    server.once("error", reject);
  }).catch((e: NodeJS.ErrnoException) => {
    api.close();
    throw new RangeError(`cannot listen on ${hostname}:${options.port ?? 8080}: ${e.code === "EADDRINUSE" ? "the port is in use" : e.message}`);
  });
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    api,
    close: () => new Promise<void>((resolve) => {
      api.close();
      (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}
