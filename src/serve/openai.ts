// The OpenAI-compatible API as one web-standard handler, `(Request) => Promise<Response>`, on
// Hono: the same object serves Node (@hono/node-server), Deno.serve, Bun.serve and a Cloudflare
// Worker. Requests are checked field by field (unknown fields, wrong types and out-of-range
// values are 400s in OpenAI's error shape) before anything is queued; generation runs on the
// BatchScheduler, so concurrent requests decode together.
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { WasmOutOfMemoryError } from "../errors.ts";
import type { LanguageModel } from "../model/language-model.ts";
import { checkTemplateVariables, TemplateError, type ChatTemplateVariables, type ToolCallFormat } from "../model/chat-template.ts";
import type { ChatMessage } from "../model/tokenizer.ts";
import type { KVCache, KVDtype } from "../kv/kv-cache.ts";
import { promptOpensThinking, REASONING_FORMATS, ReasoningSplitter, type ReasoningDelta, type ReasoningFormat } from "./reasoning.ts";
import { ToolCallSplitter, type ToolCall, type ToolSpec } from "./tool-calls.ts";
import { compileSchema, JSON_OBJECT, JsonConstraint, SchemaError, TokenTable } from "./json-constraint.ts";
import { BatchScheduler, ServerBusyError, type CompletionJob, type CompletionOutcome, type SchedulerOptions, type TokenEvent } from "./scheduler.ts";

export interface OpenAIServerOptions extends SchedulerOptions {
  /** The id /v1/models lists and requests must name (default "gqa-wasm"). */
  modelId?: string;
  /** With a key, /v1 requests need `Authorization: Bearer KEY`. */
  apiKey?: string;
  /** Largest request body (default 4 MiB). */
  maxBodyBytes?: number;
  /** KV cache for all sequences, in tokens (default maxSequences x min(context, 4096)). */
  maxCacheTokens?: number;
  kvDtype?: KVDtype;
  /**
   * Chat template variables for every chat request (llama-server's --chat-template-kwargs, e.g.
   * Qwen3's { enable_thinking: false }); a request's own chat_template_kwargs are laid over them.
   */
  chatTemplateKwargs?: ChatTemplateVariables;
  /**
   * "deepseek": a thinking model's "<think>…</think>" goes to message.reasoning_content (streamed
   * as delta.reasoning_content), the answer to content, as llama-server's --reasoning-format
   * deepseek; "none": the text as the model wrote it; "auto" (default, as llama-server's):
   * deepseek where the chat template writes <think>, else none. A request's reasoning_format wins.
   */
  reasoningFormat?: ReasoningFormat;
}

export interface OpenAIServer {
  fetch: (request: Request) => Promise<Response>;
  scheduler: BatchScheduler;
  /** The server's KV cache (its sequences belong to the scheduler). */
  cache: KVCache;
  /** Ends running requests, frees the server's KV cache. */
  close(): void;
}

/** A request the API refuses: status, OpenAI error type, the parameter at fault. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null, readonly code: string | null = null, readonly type = status === 401 ? "authentication_error" : status >= 500 ? "server_error" : "invalid_request_error") {
    super(message);
  }
}

const CHAT_FIELDS = new Set(["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "n", "response_format", "user", "chat_template_kwargs", "reasoning_format", "tools", "tool_choice", "parallel_tool_calls"]);
const COMPLETION_FIELDS = new Set(["model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "frequency_penalty", "presence_penalty", "logprobs", "n", "best_of", "echo", "user", "response_format"]);
const now = () => Math.floor(Date.now() / 1000);

/** The model id a server names by default: the folder's or file's name (without .gguf). */
export function modelIdOf(path: string): string {
  return path.replace(/[\\/]+$/, "").split(/[\\/]/).pop()!.replace(/\.gguf$/i, "");
}

export function createOpenAIServer(model: LanguageModel, options: OpenAIServerOptions = {}): OpenAIServer {
  const modelId = options.modelId ?? "gqa-wasm";
  const serverKwargs = checkTemplateVariables(options.chatTemplateKwargs);
  const serverReasoning = options.reasoningFormat ?? "auto";
  if (!(REASONING_FORMATS as readonly string[]).includes(serverReasoning)) throw new RangeError(`reasoningFormat must be one of ${REASONING_FORMATS.join(", ")}, got ${JSON.stringify(serverReasoning)}`);
  const context = model.config.maxPositionEmbeddings;
  const maxSequences = options.maxSequences ?? 8;
  const maxCacheTokens = options.maxCacheTokens ?? maxSequences * Math.min(context, 4096);
  const cache = model.transformer.createCache({ dtype: options.kvDtype, maxTokens: maxCacheTokens });
  const scheduler = new BatchScheduler(model.transformer, cache, model.tokenizer, { ...options, maxSequences, maxCacheTokens });
  const created = now();
  let tokenTable: TokenTable | undefined;
  /** The vocabulary's bytes for JSON constraints (built on first use), ending at the model's EOS tokens. */
  const tokensOf = () => (tokenTable ??= new TokenTable(bytesOf(), [...new Set(model.defaults.eosTokenIds)]));
  let tokenBytes: (Uint8Array | undefined)[] | undefined;
  const bytesOf = () => (tokenBytes ??= model.tokenizer?.tokenBytes(model.config.vocabSize) ?? []);
  const expectedKey = options.apiKey;

  const app = new Hono();
  app.onError((e, c) => errorResponse(c, e));
  app.notFound((c) => errorResponse(c, new ApiError(404, `no route ${c.req.method} ${new URL(c.req.url).pathname}`)));
  app.use("/v1/*", async (c, next) => {
    if (expectedKey !== undefined && !(await sameSecret(bearer(c.req.header("authorization")), expectedKey))) {
      throw new ApiError(401, "a valid API key is needed: Authorization: Bearer <key>", null, "invalid_api_key");
    }
    await next();
  });
  app.use("/v1/*", bodyLimit({ maxSize: options.maxBodyBytes ?? 4 << 20, onError: (c) => errorResponse(c, new ApiError(413, `the request body is larger than ${options.maxBodyBytes ?? 4 << 20} bytes`)) }));

  app.get("/health", (c) => c.json({ status: "ok", model: modelId, scheduler: scheduler.stats(), wasmMemoryBytes: model.transformer.rt.stats().memoryBytes }));
  const modelObject = { id: modelId, object: "model", created, owned_by: "gqa-wasm" };
  app.get("/v1/models", (c) => c.json({ object: "list", data: [modelObject] }));
  app.get("/v1/models/:id", (c) => {
    if (c.req.param("id") !== modelId) throw new ApiError(404, `the model '${c.req.param("id")}' does not exist; this server has '${modelId}'`, "model", "model_not_found");
    return c.json(modelObject);
  });

  app.post("/v1/chat/completions", async (c) => {
    const body = await jsonBody(c);
    checkFields(body, CHAT_FIELDS);
    checkModel(body.model, modelId);
    const messages = chatMessages(body.messages);
    const tokenizer = model.tokenizer;
    if (!tokenizer?.hasChatTemplate) throw new ApiError(400, "this model has no chat template; use /v1/completions", "messages");
    // Template variables (llama-server's and vLLM's chat_template_kwargs): the server's, then the request's.
    let variables: ChatTemplateVariables;
    try { variables = { ...serverKwargs, ...checkTemplateVariables(body.chat_template_kwargs) }; } catch (e) { throw new ApiError(400, (e as Error).message, "chat_template_kwargs"); }
    // A template that refuses these messages (Gemma's raise_exception on a system turn or roles out
    // of turn) refuses the request, as llama-server does: the client's to fix.
    const tools = chatTools(body, tokenizer.toolCallFormat);
    let text: string;
    try { text = tokenizer.applyChatTemplate(messages, { variables, tools: tools?.specs }); } catch (e) { throw e instanceof TemplateError ? new ApiError(400, e.message, "messages") : e; }
    // A forced call (tool_choice "required" or a named function): the reply opens with the call
    // (Hermes: its <tool_call> tag written into the prompt) and its JSON is constrained while decoding.
    const promptOpensCall = tools?.forced !== undefined && tools.format === "hermes";
    if (promptOpensCall) text += "<tool_call>\n";
    const prompt = tokenizer.encode(text, { addSpecialTokens: false });
    const format = body.reasoning_format ?? serverReasoning;
    if (!(REASONING_FORMATS as readonly unknown[]).includes(format)) throw new ApiError(400, `reasoning_format must be one of ${REASONING_FORMATS.join(", ")}, got ${JSON.stringify(format)}`, "reasoning_format");
    const splits = format === "deepseek" || (format === "auto" && tokenizer.templateThinks);
    const splitter = splits ? new ReasoningSplitter(promptOpensThinking(text)) : undefined;
    const logprobs = optionalBoolean(body.logprobs, "logprobs") ?? false;
    const top = integerIn(body.top_logprobs, "top_logprobs", 0, 20);
    if (top !== undefined && !logprobs) throw new ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs");
    // The newer name wins where a client sends both.
    const maxTokensField = body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens";
    const job = buildJob(body, prompt, maxTokensField, logprobs ? top ?? 0 : undefined);
    if (tools?.forced) {
      if (job.constraint) throw new ApiError(400, "a forced tool call (tool_choice) and response_format cannot be asked together", "response_format");
      job.constraint = callConstraint(tools);
    }
    return respond(c, body, job, "chat", splitter, tools && new ToolCallSplitter(tools.format, tools.names, promptOpensCall));
  });

  app.post("/v1/completions", async (c) => {
    const body = await jsonBody(c);
    checkFields(body, COMPLETION_FIELDS);
    checkModel(body.model, modelId);
    if (body.echo !== undefined && body.echo !== false) throw new ApiError(400, "echo is not supported", "echo");
    if (body.best_of !== undefined && body.best_of !== 1) throw new ApiError(400, "best_of must be 1", "best_of");
    const prompt = completionPrompt(body.prompt);
    const top = integerIn(body.logprobs, "logprobs", 0, 5);
    return respond(c, body, buildJob(body, prompt, "max_tokens", top), "text");
  });

  function completionPrompt(p: unknown): number[] {
    const V = model.config.vocabSize;
    const text = (s: string) => {
      if (!model.tokenizer) throw new ApiError(400, "this model has no tokenizer; send the prompt as token ids", "prompt");
      return model.encode(s);
    };
    if (typeof p === "string") return text(p);
    if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") return text(p[0]);
    if (Array.isArray(p) && p.length === 1 && Array.isArray(p[0])) return completionPrompt(p[0]);
    if (Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t))) {
      for (const t of p as number[]) if (t < 0 || t >= V) throw new ApiError(400, `token id ${t} is outside the vocabulary [0, ${V})`, "prompt");
      return p as number[];
    }
    if (Array.isArray(p) && p.length > 1) throw new ApiError(400, "one prompt per request (a list of prompts is not supported)", "prompt");
    throw new ApiError(400, "prompt must be a string or a list of token ids", "prompt");
  }

  function buildJob(body: Record<string, unknown>, prompt: number[], maxTokensField: string, logprobs: number | undefined): CompletionJob {
    if (prompt.length === 0) throw new ApiError(400, "the prompt has no tokens", "prompt");
    const n = integerIn(body.n, "n", 1, Infinity);
    if (n !== undefined && n !== 1) throw new ApiError(400, "n must be 1 (one choice per request)", "n");
    const room = context - prompt.length;
    if (room < 1) throw new ApiError(400, `this model's maximum context length is ${context} tokens; the prompt has ${prompt.length}`, "messages", "context_length_exceeded");
    const asked = integerIn(body[maxTokensField], maxTokensField, 1, Infinity);
    if (asked !== undefined && asked > room) {
      throw new ApiError(400, `this model's maximum context length is ${context} tokens; the prompt has ${prompt.length} and ${maxTokensField} asks for ${asked}`, maxTokensField, "context_length_exceeded");
    }
    const fits = scheduler.maxRequestTokens - prompt.length;
    if (fits < 1) throw new ApiError(400, `the prompt (${prompt.length} tokens) does not fit this server's KV cache (${scheduler.maxRequestTokens} tokens per request)`, "messages", "context_length_exceeded");
    // Refused here, before a stream starts, rather than by the scheduler after its 200.
    if (asked !== undefined && asked > fits) {
      throw new ApiError(400, `the prompt (${prompt.length} tokens) and ${maxTokensField} (${asked}) need more than this server's KV cache holds per request (${scheduler.maxRequestTokens} tokens)`, maxTokensField, "context_length_exceeded");
    }
    // Unasked, a request may fill the context, up to its share of the KV cache when every
    // sequence slot is busy (so that requests without max_tokens still run side by side).
    const maxTokens = asked ?? Math.min(room, fits, Math.max(1, scheduler.sequenceShareTokens - prompt.length));
    const temperature = numberIn(body.temperature, "temperature", 0, 2) ?? model.defaults.sampling.temperature ?? 1;
    const topP = numberIn(body.top_p, "top_p", 0, 1) ?? model.defaults.sampling.topP ?? 1;
    const eos = new Set(model.defaults.eosTokenIds);
    return {
      prompt, maxTokens, temperature, topP: Math.max(topP, 1e-9), topK: integerIn(body.top_k, "top_k", 0, Infinity) ?? model.defaults.sampling.topK,
      seed: integerIn(body.seed, "seed", -(2 ** 53), 2 ** 53) ?? Math.floor(Math.random() * 2 ** 31),
      frequencyPenalty: numberIn(body.frequency_penalty, "frequency_penalty", -2, 2) ?? 0,
      presencePenalty: numberIn(body.presence_penalty, "presence_penalty", -2, 2) ?? 0,
      stopTokens: eos, stopStrings: stopList(body.stop), logprobs,
      constraint: constraintFor(body.response_format),
    };
  }

  function constraintFor(format: unknown): JsonConstraint | undefined {
    if (format === undefined || format === null) return undefined;
    if (!isRecord(format) || typeof format.type !== "string") throw new ApiError(400, "response_format must be { type: 'text' | 'json_object' | 'json_schema' }", "response_format");
    if (format.type === "text") return undefined;
    if (!model.tokenizer) throw new ApiError(400, "response_format needs the model's tokenizer", "response_format");
    let root;
    if (format.type === "json_object") root = JSON_OBJECT;
    else if (format.type === "json_schema") {
      const js = format.json_schema;
      if (!isRecord(js) || typeof js.name !== "string") throw new ApiError(400, "response_format.json_schema needs a name and a schema", "response_format");
      try {
        root = compileSchema(js.schema ?? {}, "json_schema.schema");
      } catch (e) {
        if (e instanceof SchemaError) throw new ApiError(400, e.message, "response_format");
        throw e;
      }
    } else throw new ApiError(400, `response_format.type '${format.type}' is not one of text, json_object, json_schema`, "response_format");
    return new JsonConstraint(tokensOf(), root);
  }

  /**
   * The JSON of a forced call: {"name", "arguments"} (Hermes) or {"name", "parameters"} (Llama 3.x),
   * the name one of the tools' (or the named one), its arguments the tool's parameters schema (the
   * named tool's, or the only one's) where the constraint supports it, else any object.
   */
  function callConstraint(tools: ChatTools): JsonConstraint {
    const named = tools.forced?.name, spec = named !== undefined ? tools.specs.find((t) => t.function.name === named) : tools.specs.length === 1 ? tools.specs[0] : undefined;
    const anyObject = { type: "object" };
    let args: unknown = anyObject;
    if (spec?.function.parameters) {
      try { compileSchema(spec.function.parameters, "parameters"); args = spec.function.parameters; } catch (e) { if (!(e instanceof SchemaError)) throw e; }
    }
    const argsKey = tools.format === "hermes" ? "arguments" : "parameters";
    const schema = { type: "object", additionalProperties: false, required: ["name", argsKey],
      properties: { name: named !== undefined ? { const: named } : { enum: tools.specs.map((t) => t.function.name) }, [argsKey]: args } };
    return new JsonConstraint(tokensOf(), compileSchema(schema, "tool call"));
  }

  function stopList(stop: unknown): string[] {
    if (stop === undefined || stop === null) return [];
    const list = typeof stop === "string" ? [stop] : stop;
    if (!Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === "string" && s.length > 0 && s.length <= 1024)) {
      throw new ApiError(400, "stop must be a string or a list of up to 4 non-empty strings", "stop");
    }
    if (!model.tokenizer) throw new ApiError(400, "stop strings need the model's tokenizer", "stop");
    return list as string[];
  }

  const utf8 = new TextDecoder();
  const tokenText = (id: number) => {
    const b = bytesOf()[id];
    return b ? utf8.decode(b) : model.tokenizer?.decode([id], { skipSpecialTokens: false }) ?? String(id);
  };
  const tokenBytesList = (id: number) => [...(bytesOf()[id] ?? new TextEncoder().encode(tokenText(id)))];

  function chatLogprobs(e: TokenEvent) {
    return {
      token: tokenText(e.token), logprob: e.logprob!, bytes: tokenBytesList(e.token),
      top_logprobs: (e.topLogprobs ?? []).map((t) => ({ token: tokenText(t.token), logprob: t.logprob, bytes: tokenBytesList(t.token) })),
    };
  }

  function usage(o: CompletionOutcome) {
    return { prompt_tokens: o.promptTokens, completion_tokens: o.tokens.length, total_tokens: o.promptTokens + o.tokens.length, prompt_tokens_details: { cached_tokens: o.cachedPromptTokens } };
  }

  /**
   * `reasoning` (chat): splits thoughts from the answer (reasoning_format "deepseek", or "auto" for
   * a thinking model); `toolCalls`: splits the answer's tool calls from its content.
   */
  async function respond(c: Context, body: Record<string, unknown>, job: CompletionJob, kind: "chat" | "text", reasoning?: ReasoningSplitter, toolCalls?: ToolCallSplitter): Promise<Response> {
    const parallel = optionalBoolean(body.parallel_tool_calls, "parallel_tool_calls") ?? true;
    /** The calls as OpenAI's tool_calls (the first only without parallel_tool_calls). */
    const callList = (calls: ToolCall[]) => (parallel ? calls : calls.slice(0, 1)).map((call) => ({ id: `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`, type: "function", function: call }));
    const stream = optionalBoolean(body.stream, "stream") ?? false;
    const streamOptions = body.stream_options;
    if (streamOptions !== undefined && streamOptions !== null && (!stream || !isRecord(streamOptions))) throw new ApiError(400, "stream_options needs stream: true", "stream_options");
    const includeUsage = isRecord(streamOptions) && streamOptions.include_usage === true;
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID().replaceAll("-", "")}`;
    const stamp = now();
    const abort = new AbortController();
    const clientSignal = c.req.raw.signal;
    clientSignal?.addEventListener("abort", () => abort.abort(), { once: true });
    job.signal = abort.signal;

    if (!stream) {
      const events: TokenEvent[] = [];
      job.onToken = (e) => events.push(e);
      const outcome = await submitted(job);
      let finish = outcome.finishReason === "length" ? "length" : "stop";
      const lp = job.logprobs === undefined ? null : kind === "chat" ? { content: events.map(chatLogprobs) } : textLogprobs(events);
      let content = outcome.text, thoughts = "";
      if (reasoning) {
        const a = reasoning.push(outcome.text), b = reasoning.finish();
        content = a.content + b.content;
        thoughts = a.reasoning + b.reasoning;
      }
      let calls: ReturnType<typeof callList> = [];
      if (toolCalls) {
        const before = toolCalls.push(content), after = toolCalls.finish();
        content = before + after.content;
        calls = callList(after.calls);
        if (calls.length > 0 && finish === "stop") finish = "tool_calls";
      }
      const message = {
        role: "assistant", content: calls.length > 0 && content === "" ? null : content, ...(thoughts ? { reasoning_content: thoughts } : {}),
        ...(calls.length > 0 ? { tool_calls: calls } : {}), refusal: null,
      };
      const choice = kind === "chat"
        ? { index: 0, message, logprobs: lp, finish_reason: finish }
        : { index: 0, text: outcome.text, logprobs: lp, finish_reason: finish };
      return c.json({ id, object: kind === "chat" ? "chat.completion" : "text_completion", created: stamp, model: modelId, system_fingerprint: null, choices: [choice], usage: usage(outcome) });
    }

    const encoder = new TextEncoder();
    const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
    let offset = 0;
    const body$ = new ReadableStream<Uint8Array>({
      start: (controller) => {
        const send = (data: unknown) => { try { controller.enqueue(encoder.encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`)); } catch { /* the client left */ } };
        const chunk = (choice: Record<string, unknown>) => send({ id, object, created: stamp, model: modelId, system_fingerprint: null, choices: [{ index: 0, ...choice }], ...(includeUsage ? { usage: null } : {}) });
        if (kind === "chat") chunk({ delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null });
        /** A chat delta (thoughts apart with `reasoning`, tool calls held back with `toolCalls`); none when empty, unless it carries logprobs. */
        const chatDelta = (d: ReasoningDelta, logprobs: unknown) => {
          if (toolCalls) d = { reasoning: d.reasoning, content: toolCalls.push(d.content) };
          if (d.reasoning === "" && d.content === "" && logprobs === null) return;
          const delta = { ...(d.reasoning ? { reasoning_content: d.reasoning } : {}), ...(d.content || !d.reasoning ? { content: d.content } : {}) };
          chunk({ delta, logprobs, finish_reason: null });
        };
        job.onToken = (e) => {
          if (e.text === "" && job.logprobs === undefined) return;
          if (kind === "chat") chatDelta(reasoning ? reasoning.push(e.text) : { reasoning: "", content: e.text }, job.logprobs === undefined ? null : { content: [chatLogprobs(e)] });
          else { chunk({ text: e.text, logprobs: job.logprobs === undefined ? null : textLogprobs([e], offset), finish_reason: null }); offset += e.text.length; }
        };
        // Refusals (a full queue) throw here, inside start, which the ReadableStream constructor
        // rethrows: the client gets the error status, not a 200 and then an error event.
        scheduler.submit(job).then((outcome) => {
          if (outcome.finishReason === "aborted") return;
          let finish = outcome.finishReason === "length" ? "length" : "stop";
          if (kind === "chat" && reasoning) chatDelta(reasoning.finish(), null); // what a partial tag held back
          if (kind === "chat" && toolCalls) {
            // The calls, each whole in one delta, once the output has ended (as they parse only then).
            const { content, calls } = toolCalls.finish();
            if (content !== "") chunk({ delta: { content }, logprobs: null, finish_reason: null });
            callList(calls).forEach((call, index) => chunk({ delta: { tool_calls: [{ index, ...call }] }, logprobs: null, finish_reason: null }));
            if (calls.length > 0 && finish === "stop") finish = "tool_calls";
          }
          if (kind === "chat") chunk({ delta: {}, logprobs: null, finish_reason: finish });
          else chunk({ text: "", logprobs: null, finish_reason: finish });
          if (includeUsage) send({ id, object, created: stamp, model: modelId, system_fingerprint: null, choices: [], usage: usage(outcome) });
          send("[DONE]");
        }, (e) => {
          const err = toApiError(e);
          send({ error: { message: err.message, type: err.type, param: err.param, code: err.code } });
        }).finally(() => { try { controller.close(); } catch { /* already closed */ } });
      },
      cancel: () => abort.abort(),
    });
    return new Response(body$, { headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive" } });
  }

  function textLogprobs(events: TokenEvent[], start = 0) {
    let at = start;
    return {
      tokens: events.map((e) => tokenText(e.token)),
      token_logprobs: events.map((e) => e.logprob!),
      // Keyed by text, most likely first: tokens that decode alike (parts of a character) keep the likelier.
      top_logprobs: events.map((e) => {
        const top: Record<string, number> = {};
        for (const t of e.topLogprobs ?? []) top[tokenText(t.token)] ??= t.logprob;
        return top;
      }),
      text_offset: events.map((e) => { const o = at; at += e.text.length; return o; }),
    };
  }

  async function submitted(job: CompletionJob): Promise<CompletionOutcome> {
    try {
      return await scheduler.submit(job);
    } catch (e) {
      throw toApiError(e);
    }
  }

  return { fetch: (request) => Promise.resolve(app.fetch(request)), scheduler, cache, close: () => { scheduler.close(); cache.dispose(); } };
}

function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof ServerBusyError) return Object.assign(new ApiError(503, e.message, null, "server_busy"), { retryAfter: e.retryAfterSeconds });
  // The runtime's memory budget ran out mid-pass (other requests hold it, or this one is too big for it).
  if (e instanceof WasmOutOfMemoryError) return Object.assign(new ApiError(503, e.message.split("\n")[0]!, null, "out_of_memory"), { retryAfter: 1 });
  if (e instanceof RangeError) return new ApiError(400, e.message);
  return new ApiError(500, (e as Error)?.message ?? String(e));
}

function errorResponse(c: Context, e: unknown): Response {
  const err = toApiError(e);
  const headers: Record<string, string> = {};
  const retry = (err as { retryAfter?: number }).retryAfter;
  if (retry !== undefined) headers["retry-after"] = String(retry);
  if (err.status === 401) headers["www-authenticate"] = "Bearer";
  // The body was not read to its end: the connection cannot carry another request.
  if (err.status === 413) headers.connection = "close";
  return c.json({ error: { message: err.message, type: err.type, param: err.param, code: err.code } }, err.status as 400, headers);
}

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch (e) {
    if ((e as { status?: number })?.status === 413 || (e as Error)?.name === "BodyLimitError") throw e;
    throw new ApiError(400, "the request body is not valid JSON");
  }
  if (!isRecord(body)) throw new ApiError(400, "the request body must be a JSON object");
  return body;
}

function checkFields(body: Record<string, unknown>, known: Set<string>): void {
  for (const k of Object.keys(body)) if (!known.has(k)) throw new ApiError(400, `Unrecognized request argument supplied: ${k}`, k);
}

function checkModel(model: unknown, id: string): void {
  if (typeof model !== "string") throw new ApiError(400, "model is required", "model");
  if (model !== id) throw new ApiError(404, `the model '${model}' does not exist; this server has '${id}'`, "model", "model_not_found");
}

function chatMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new ApiError(400, "messages must be a non-empty list", "messages");
  return raw.map((m, i) => {
    const at = `messages[${i}]`;
    if (!isRecord(m)) throw new ApiError(400, `${at} must be an object`, at);
    const role = m.role === "developer" ? "system" : m.role;
    if (role !== "system" && role !== "user" && role !== "assistant" && role !== "tool") throw new ApiError(400, `${at}.role must be system, developer, user, assistant or tool`, `${at}.role`);
    const fields = role === "assistant" ? ["tool_calls"] : role === "tool" ? ["tool_call_id"] : [];
    for (const k of Object.keys(m)) if (k !== "role" && k !== "content" && k !== "name" && !fields.includes(k)) throw new ApiError(400, `${at}.${k} is not supported`, `${at}.${k}`);
    if (role === "tool" && typeof m.tool_call_id !== "string") throw new ApiError(400, `${at}.tool_call_id must be the id of the call it answers`, `${at}.tool_call_id`);
    const toolCalls = role === "assistant" && m.tool_calls !== undefined && m.tool_calls !== null ? assistantToolCalls(m.tool_calls, at) : undefined;
    // An assistant turn of calls alone has no content.
    let content = toolCalls && (m.content === null || m.content === undefined) ? "" : m.content;
    if (Array.isArray(content)) {
      content = content.map((part, j) => {
        if (!isRecord(part) || part.type !== "text" || typeof part.text !== "string") throw new ApiError(400, `${at}.content[${j}]: only text parts are supported`, `${at}.content`);
        return part.text;
      }).join("");
    }
    if (typeof content !== "string") throw new ApiError(400, `${at}.content must be a string or a list of text parts`, `${at}.content`);
    return { role, content, ...(toolCalls ? { tool_calls: toolCalls } : {}), ...(role === "tool" ? { tool_call_id: m.tool_call_id as string } : {}) };
  });
}

/** An assistant turn's tool_calls for the template: their arguments (JSON text) as objects, as Hugging Face's templates read them. */
function assistantToolCalls(raw: unknown, at: string): NonNullable<ChatMessage["tool_calls"]> {
  const fail = (why: string) => new ApiError(400, `${at}.tool_calls ${why}`, `${at}.tool_calls`);
  if (!Array.isArray(raw) || raw.length > MAX_TOOLS) throw fail(`must be a list of at most ${MAX_TOOLS} calls`);
  return raw.map((call, j) => {
    if (!isRecord(call) || (call.type !== undefined && call.type !== "function") || !isRecord(call.function) || typeof call.function.name !== "string" || typeof call.function.arguments !== "string") {
      throw fail(`[${j}] must be { id, type: "function", function: { name, arguments } } with arguments as JSON text`);
    }
    let args: unknown;
    try { args = JSON.parse(call.function.arguments); } catch { throw fail(`[${j}].function.arguments is not JSON`); }
    return { id: typeof call.id === "string" ? call.id : `call_${j}`, type: "function" as const, function: { name: call.function.name, arguments: args } };
  });
}

/** Tools a request may offer, and calls an assistant turn may hold. */
const MAX_TOOLS = 128;

/** A request's tools: for the template, for the output's parser, and `forced` when it must call one (a name: that one). */
interface ChatTools { specs: ToolSpec[]; names: Set<string>; format: ToolCallFormat; forced?: { name?: string } }

/**
 * The request's tools for the chat template and the output's parser: undefined without tools or
 * with tool_choice "none". "auto" (the default) lets the model choose; "required" or a named
 * function ({ type: "function", function: { name } }) forces a call. A model whose template
 * teaches no call syntax parsed here is refused.
 */
function chatTools(body: Record<string, unknown>, format: ToolCallFormat | undefined): ChatTools | undefined {
  const raw = body.tools, choice = body.tool_choice ?? "auto";
  const named = isRecord(choice) && choice.type === "function" && isRecord(choice.function) && typeof choice.function.name === "string" ? choice.function.name : undefined;
  if (choice !== "auto" && choice !== "none" && choice !== "required" && named === undefined) {
    throw new ApiError(400, `tool_choice must be "auto", "none", "required" or { type: "function", function: { name } }, got ${JSON.stringify(choice).slice(0, 80)}`, "tool_choice");
  }
  if ((raw === undefined || raw === null || (Array.isArray(raw) && raw.length === 0)) && (choice === "required" || named !== undefined)) throw new ApiError(400, "tool_choice forces a call, but the request offers no tools", "tool_choice");
  if (raw === undefined || raw === null) return undefined;
  if (!Array.isArray(raw) || raw.length > MAX_TOOLS) throw new ApiError(400, `tools must be a list of at most ${MAX_TOOLS} functions`, "tools");
  if (raw.length === 0 || choice === "none") return undefined;
  const specs = raw.map((t, i): ToolSpec => {
    const f = isRecord(t) ? t.function : undefined;
    if (!isRecord(t) || t.type !== "function" || !isRecord(f) || typeof f.name !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(f.name)) {
      throw new ApiError(400, `tools[${i}] must be { type: "function", function: { name, description?, parameters? } } with a name of 1-64 letters, digits, _ . -`, `tools[${i}]`);
    }
    if (f.description !== undefined && typeof f.description !== "string") throw new ApiError(400, `tools[${i}].function.description must be a string`, `tools[${i}]`);
    if (f.parameters !== undefined && !isRecord(f.parameters)) throw new ApiError(400, `tools[${i}].function.parameters must be a JSON schema object`, `tools[${i}]`);
    return { type: "function", function: { name: f.name, ...(f.description !== undefined ? { description: f.description } : {}), ...(f.parameters !== undefined ? { parameters: f.parameters } : {}) } };
  });
  if (!format) throw new ApiError(400, "this model's chat template teaches no tool-call syntax this server parses (Hermes <tool_call> blocks: Qwen2.5, Qwen3, SmolLM3; Llama 3.x JSON)", "tools");
  const names = new Set(specs.map((x) => x.function.name));
  if (named !== undefined && !names.has(named)) throw new ApiError(400, `tool_choice names ${JSON.stringify(named).slice(0, 80)}, which is not among the tools`, "tool_choice");
  return { specs, names, format, ...(choice === "required" || named !== undefined ? { forced: named !== undefined ? { name: named } : {} } : {}) };
}

function optionalBoolean(v: unknown, name: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new ApiError(400, `${name} must be a boolean`, name);
  return v;
}

function numberIn(v: unknown, name: string, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) throw new ApiError(400, `${name} must be a number in [${min}, ${max}]`, name);
  return v;
}

function integerIn(v: unknown, name: string, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw new ApiError(400, `${name} must be an integer${max === Infinity ? ` >= ${min}` : ` in [${min}, ${max}]`}`, name);
  return v;
}

function isRecord(x: unknown): x is Record<string, unknown> { return typeof x === "object" && x !== null && !Array.isArray(x); }

function bearer(header: string | undefined): string {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? "");
  return m ? m[1]!.trim() : "";
}

/** Compares digests of the two keys byte by byte, all bytes every time (constant time). */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const digest = async (s: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  const [a, b] = await Promise.all([digest(given), digest(expected)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
