// The OpenAI-compatible server, driven by the official `openai` client over loopback.
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import OpenAI from "openai";
import { createOpenAIServer, createRuntime, loadModel, syntheticModelFiles, TINY_CHAT_MODEL, type LanguageModel, type OpenAIServer, type Runtime } from "../src/index.ts";
import { byteLevelTokenizer } from "../src/model/synthetic.ts";
import { promptOpensThinking, ReasoningSplitter } from "../src/serve/reasoning.ts";
import { ToolCallSplitter } from "../src/serve/tool-calls.ts";
import { toolCallFormat } from "../src/model/chat-template.ts";
import { serveNode, type NodeServer } from "../src/serve/node.ts";
import { Sampler } from "../src/model/sampling.ts";
import { BatchScheduler } from "../src/serve/scheduler.ts";

const MODEL = "tiny";

describe("serve: OpenAI-compatible API with continuous batching", function () {
  this.timeout(180_000);
  let rt: Runtime, model: LanguageModel, server: NodeServer, client: OpenAI;
  const health = async () => (await (await fetch(`${server.url}/health`)).json()).scheduler;
  /** Waits until nothing runs or waits, then checks that only the prefix cache holds pages. */
  const idle = async () => {
    for (let i = 0; i < 400; i++) {
      const s = await health();
      if (s.running === 0 && s.queued === 0) return s;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error("the server did not become idle");
  };
  const post = (path: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal) =>
    fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body), signal });

  before(async () => {
    rt = await createRuntime();
    model = await loadModel(rt, syntheticModelFiles());
    server = await serveNode(model, { port: 0, modelId: MODEL, maxSequences: 16, maxBodyBytes: 256 << 10 });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => { await server?.close(); model?.dispose(); await rt?.dispose(); });

  it("messages a chat template refuses (raise_exception: Gemma 2's system turn, roles out of turn) are a 400 naming messages, and the server goes on", async () => {
    const template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}" +
      "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
      "<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    const m = await loadModel(rt, { ...syntheticModelFiles(), ...byteLevelTokenizer({ chatTemplate: template }) });
    const s = createOpenAIServer(m, { modelId: MODEL });
    try {
      const ask = (messages: unknown) => s.fetch(new Request("http://x/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, messages, max_tokens: 2, temperature: 0 }) }));
      for (const [messages, why] of [[[{ role: "system", content: "s" }, { role: "user", content: "u" }], /System role not supported/],
        [[{ role: "assistant", content: "a" }], /roles must alternate/]] as const) {
        const r = await ask(messages);
        assert.equal(r.status, 400);
        const e = (await r.json()).error;
        assert.equal(e.type, "invalid_request_error");
        assert.equal(e.param, "messages");
        assert.match(e.message, why);
      }
      assert.equal((await ask([{ role: "user", content: "u" }])).status, 200);
    } finally { s.close(); m.dispose(); }
  });

  it("chat_template_kwargs (llama-server's and vLLM's): the server's defaults, a request's laid over them; a bad value is a 400 naming it", async () => {
    const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n" +
      "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";
    const m = await loadModel(rt, { ...syntheticModelFiles(), ...byteLevelTokenizer({ chatTemplate: template }) });
    const s = createOpenAIServer(m, { modelId: MODEL, chatTemplateKwargs: { enable_thinking: false } });
    try {
      const ask = async (extra: Record<string, unknown>) => s.fetch(new Request("http://x/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 1, temperature: 0, ...extra }) }));
      const usage = async (extra: Record<string, unknown>) => { const r = await ask(extra); assert.equal(r.status, 200); return (await r.json()).usage.prompt_tokens as number; };
      const think = m.tokenizer!.encode("<think>\n\n</think>\n\n", { addSpecialTokens: false }).length;
      const byDefault = await usage({}), thinking = await usage({ chat_template_kwargs: { enable_thinking: true } });
      assert.equal(byDefault, thinking + think, "the server's enable_thinking: false, then the request's true");
      for (const bad of [[1], "x", { eos_token: "" }]) {
        const r = await ask({ chat_template_kwargs: bad });
        assert.equal(r.status, 400);
        const e = (await r.json()).error;
        assert.equal(e.param, "chat_template_kwargs");
        assert.match(e.message, /chat template variables (must be an object|cannot set eos_token)/);
      }
      assert.throws(() => createOpenAIServer(m, { chatTemplateKwargs: { messages: 1 } }), /cannot set messages/);
    } finally { s.close(); m.dispose(); }
  });

  it("reasoning_format deepseek splits <think>...</think> into reasoning_content as llama-server does, whatever pieces the text arrives in", () => {
    const split = (pieces: string[], opened = false) => {
      const r = new ReasoningSplitter(opened), out = { reasoning: "", content: "" };
      for (const d of [...pieces.map((p) => r.push(p)), r.finish()]) { out.reasoning += d.reasoning; out.content += d.content; }
      return out;
    };
    const cases: [string, boolean, { reasoning: string; content: string }][] = [
      ["<think>\nLet me see.\n</think>\n\nParis.", false, { reasoning: "\nLet me see.\n", content: "Paris." }],
      ["\n<think>a < b</think>yes", false, { reasoning: "a < b", content: "yes" }],
      ["Paris, no thoughts.", false, { reasoning: "", content: "Paris, no thoughts." }],
      ["<thinking is not the tag", false, { reasoning: "", content: "<thinking is not the tag" }],
      ["<think>cut off mid-thought </thi", false, { reasoning: "cut off mid-thought </thi", content: "" }],
      ["opened by the template</think>\nanswer", true, { reasoning: "opened by the template", content: "answer" }],
      ["<think>x</think>  ", false, { reasoning: "x", content: "" }],
      ["  ", false, { reasoning: "", content: "  " }],
    ];
    for (const [text, opened, want] of cases) {
      assert.deepEqual(split([text], opened), want, JSON.stringify(text));
      // Every way of cutting it into two or three pieces (a token boundary anywhere, tags split) gives the same.
      for (let i = 0; i <= text.length; i++) for (let j = i; j <= text.length; j += 3) {
        assert.deepEqual(split([text.slice(0, i), text.slice(i, j), text.slice(j)], opened), want, `${JSON.stringify(text)} cut at ${i}, ${j}`);
      }
    }
    assert.equal(promptOpensThinking("<|im_start|>assistant\n<think>\n"), true);
    assert.equal(promptOpensThinking("<|im_start|>assistant\n<think>\n\n</think>\n\n"), false);
  });

  it("reasoning_format in the API: a template that opens the thinking block puts the reply in reasoning_content, streamed or not; none keeps it in content; auto (the default) splits where the template writes <think>", async () => {
    const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";
    const m = await loadModel(rt, { ...syntheticModelFiles(), ...byteLevelTokenizer({ chatTemplate: template }) });
    const s = createOpenAIServer(m, { modelId: MODEL, reasoningFormat: "deepseek" });
    try {
      const ask = async (extra: Record<string, unknown>) => s.fetch(new Request("http://x/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 8, temperature: 0, ...extra }) }));
      const plain = (await (await ask({ reasoning_format: "none" })).json()).choices[0].message;
      const split = (await (await ask({})).json()).choices[0].message;
      assert.ok(plain.content.length > 0 && !plain.content.includes("</think>"));
      assert.deepEqual({ reasoning: split.reasoning_content, content: split.content }, { reasoning: plain.content, content: "" });
      const events = (await (await ask({ stream: true })).text()).split("\n\n").filter((l) => l.startsWith("data: {")).map((l) => JSON.parse(l.slice(6)));
      const deltas = events.map((e) => e.choices[0]?.delta ?? {});
      assert.equal(deltas.map((d) => d.reasoning_content ?? "").join(""), plain.content);
      assert.equal(deltas.map((d) => d.content ?? "").join(""), "");
      const bad = await ask({ reasoning_format: "deepseek-legacy" });
      assert.equal(bad.status, 400);
      assert.equal((await bad.json()).error.param, "reasoning_format");
      assert.throws(() => createOpenAIServer(m, { reasoningFormat: "x" as never }), /reasoningFormat must be one of auto, none, deepseek/);
      // auto, the default: this template writes <think>, so the reply is split; the ChatML model's is not.
      const byDefault = createOpenAIServer(m, { modelId: MODEL });
      try {
        const auto = (await (await byDefault.fetch(new Request("http://x/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 8, temperature: 0 }) }))).json()).choices[0].message;
        assert.deepEqual({ reasoning: auto.reasoning_content, content: auto.content }, { reasoning: plain.content, content: "" });
      } finally { byDefault.close(); }
      assert.equal(m.tokenizer!.templateThinks, true);
      assert.equal(model.tokenizer!.templateThinks, false);
    } finally { s.close(); m.dispose(); }
  });

  it("tool calls split from the output as llama-server's hermes and llama3 formats do, whatever pieces the text arrives in; text that is not a call of an offered tool stays content", () => {
    const split = (format: "hermes" | "llama3", pieces: string[]) => {
      const t = new ToolCallSplitter(format, new Set(["get_weather", "add"]));
      let content = pieces.map((p) => t.push(p)).join("");
      const end = t.finish();
      content += end.content;
      return { content, calls: end.calls };
    };
    const call = (name: string, args: unknown) => ({ name, arguments: JSON.stringify(args) });
    const cases: ["hermes" | "llama3", string, { content: string; calls: { name: string; arguments: string }[] }][] = [
      ["hermes", `<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>`, { content: "", calls: [call("get_weather", { city: "Paris" })] }],
      ["hermes", `Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>`,
        { content: "Let me check.\n", calls: [call("get_weather", { city: "Oslo" }), call("add", { a: 1, b: 2 })] }],
      ["hermes", `<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>`, { content: "", calls: [{ name: "get_weather", arguments: `{"city": "Rome"}` }] }],
      ["hermes", "Plain answer, a < b <tool is not a tag.", { content: "Plain answer, a < b <tool is not a tag.", calls: [] }],
      ["hermes", `<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>`, { content: `<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>`, calls: [] }],
      ["hermes", `<tool_call>not json</tool_call> after`, { content: "<tool_call>not json</tool_call> after", calls: [] }],
      ["hermes", `<tool_call>\n{"name": "add", "arguments": {"a": 5}}`, { content: "", calls: [call("add", { a: 5 })] }],
      ["hermes", `<tool_call>\n{"name": "add", "argu`, { content: `<tool_call>\n{"name": "add", "argu`, calls: [] }],
      ["llama3", ` {"name": "get_weather", "parameters": {"city": "Lima"}}`, { content: "", calls: [call("get_weather", { city: "Lima" })] }],
      ["llama3", `{"type": "function", "name": "add", "parameters": {"a": 1, "b": 3}}`, { content: "", calls: [call("add", { a: 1, b: 3 })] }],
      ["llama3", `{"no": "call"}`, { content: `{"no": "call"}`, calls: [] }],
      ["llama3", `The weather is fine {"name": "add"}`, { content: `The weather is fine {"name": "add"}`, calls: [] }],
    ];
    // The syntax a template teaches: Qwen's <tool_call> blocks, Llama 3.x's JSON (ipython turns); none without `tools`, or in another syntax.
    assert.equal(toolCallFormat("{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>\n{\"name\": ...}\n</tool_call>{% endif %}"), "hermes");
    assert.equal(toolCallFormat("{% if tools %}<|start_header_id|>system<|end_header_id|>{{ tools | tojson }}{% endif %}{% if m.role == 'ipython' %}{% endif %}"), "llama3");
    assert.equal(toolCallFormat("<tool_call> without the variable"), undefined);
    assert.equal(toolCallFormat("{% if tools %}[TOOL_CALLS]{% endif %}"), undefined);
    for (const [format, text, want] of cases) {
      assert.deepEqual(split(format, [text]), want, JSON.stringify(text));
      for (let i = 0; i <= text.length; i++) for (let j = i; j <= text.length; j += 5) {
        assert.deepEqual(split(format, [text.slice(0, i), text.slice(i, j), text.slice(j)]), want, `${JSON.stringify(text)} cut at ${i}, ${j}`);
      }
    }
  });

  it("tools in the API: offered to the chat template, tool and assistant tool_calls turns rendered, a reply that is a call returned as tool_calls (finish_reason tool_calls), streamed or not; forced calls (required, a named function) constrained; bad tools are a 400", async () => {
    // A Llama-3.x-style template (its constructs: the header tokens, tools as JSON, tool results
    // in an ipython turn, calls as {"name", "parameters"}).
    const template = `{{- bos_token }}{%- if tools is not none and tools is defined %}<|start_header_id|>system<|end_header_id|>\n\nRespond with {"name": function name, "parameters": arguments}.{%- for t in tools %}{{ t | tojson }}{%- endfor %}<|eot_id|>{%- endif %}
{%- for m in messages %}{%- if m.role == "assistant" and m.tool_calls is defined %}{%- for c in m.tool_calls %}<|start_header_id|>assistant<|end_header_id|>\n\n{{ {"name": c.function.name, "parameters": c.function.arguments} | tojson }}<|eot_id|>{%- endfor %}
{%- elif m.role == "tool" %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}`;
    const m = await loadModel(rt, { ...syntheticModelFiles(), ...byteLevelTokenizer({ chatTemplate: template }) });
    const s = createOpenAIServer(m, { modelId: MODEL });
    const ask = (extra: Record<string, unknown>) => s.fetch(new Request("http://x/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "Weather in Paris?" }], max_tokens: 120, temperature: 0, ...extra }) }));
    const tools = [{ type: "function", function: { name: "get_weather", description: "The weather in a city", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
    try {
      assert.equal(m.tokenizer!.toolCallFormat, "llama3");
      // The tools and a conversation of calls and results reach the template.
      const text = m.tokenizer!.applyChatTemplate([{ role: "user", content: "hi" }, { role: "assistant", content: "", tool_calls: [{ id: "c1", type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } }] },
        { role: "tool", content: "sunny", tool_call_id: "c1" }], { tools });
      assert.match(text, /"name": "get_weather", "description": "The weather in a city"/);
      assert.match(text, /<\|start_header_id\|>assistant<\|end_header_id\|>\n\n\{"name": "get_weather", "parameters": \{"city": "Paris"\}\}<\|eot_id\|><\|start_header_id\|>ipython<\|end_header_id\|>\n\nsunny/);
      const turns = [{ role: "user", content: "Weather in Paris?" }, { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" } }] },
        { role: "tool", tool_call_id: "call_1", content: "sunny, 21 C" }];
      assert.equal((await ask({ messages: turns, tools })).status, 200);
      // The random model's reply forced (response_format) to a call's JSON: parsed into tool_calls.
      const schema = { type: "object", additionalProperties: false, required: ["name", "parameters"], properties: { name: { const: "get_weather" },
        parameters: { type: "object", additionalProperties: false, required: ["city"], properties: { city: { type: "string", maxLength: 8 } } } } };
      const forced = { tools, response_format: { type: "json_schema", json_schema: { name: "call", schema } }, temperature: 1, seed: 4 };
      const r = await (await ask(forced)).json();
      const msg = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, "tool_calls");
      assert.equal(msg.content, null);
      assert.equal(msg.tool_calls.length, 1);
      assert.equal(msg.tool_calls[0].type, "function");
      assert.match(msg.tool_calls[0].id, /^call_[0-9a-f]{24}$/);
      assert.equal(msg.tool_calls[0].function.name, "get_weather");
      assert.equal(typeof JSON.parse(msg.tool_calls[0].function.arguments).city, "string");
      // Streamed: no content, the call in one delta, then finish_reason tool_calls; the same call.
      const events = (await (await ask({ ...forced, stream: true })).text()).split("\n\n").filter((l) => l.startsWith("data: {")).map((l) => JSON.parse(l.slice(6)));
      const deltas = events.map((e) => e.choices[0]?.delta ?? {});
      assert.equal(deltas.map((d) => d.content ?? "").join(""), "");
      const streamed = deltas.flatMap((d) => d.tool_calls ?? []);
      assert.deepEqual(streamed.map((c: { index: number; function: unknown }) => [c.index, c.function]), [[0, msg.tool_calls[0].function]]);
      assert.equal(events.at(-1).choices[0].finish_reason, "tool_calls");
      // tool_choice none: no tools, the same reply as content.
      const none = await (await ask({ ...forced, tool_choice: "none" })).json();
      assert.equal(none.choices[0].finish_reason, "stop");
      assert.equal(JSON.parse(none.choices[0].message.content).name, "get_weather");
      // Forced calls: "required" (one of the tools) and a named function, their JSON constrained while decoding.
      const add = { type: "function", function: { name: "add", parameters: { type: "object", additionalProperties: false, required: ["a", "b"], properties: { a: { type: "integer" }, b: { type: "integer" } } } } };
      // (A random model's "any object" runs long: "required" here offers one tool, whose parameters then bound the arguments.)
      for (const [choice, name, offered] of [["required", undefined, [add]], [{ type: "function", function: { name: "add" } }, "add", [...tools, add]]] as const) {
        for (const seed of [1, 2, 3]) {
          const f = await (await ask({ tools: offered, tool_choice: choice, temperature: 1, seed, max_tokens: 400 })).json();
          const calls = f.choices[0].message.tool_calls;
          assert.equal(f.choices[0].finish_reason, "tool_calls", JSON.stringify(f));
          assert.ok(name ? calls[0].function.name === name : ["get_weather", "add"].includes(calls[0].function.name));
          const args = JSON.parse(calls[0].function.arguments);
          if (calls[0].function.name === "add" && name) assert.ok(Number.isInteger(args.a) && Number.isInteger(args.b), calls[0].function.arguments);
        }
      }
      // Refused: a forced call beside response_format or without tools or of an unknown name, bad tools, a tool turn without its call's id.
      const refusals: [Record<string, unknown>, RegExp, string][] = [
        [{ tools, tool_choice: "required", response_format: { type: "json_object" } }, /a forced tool call \(tool_choice\) and response_format cannot be asked together/, "response_format"],
        [{ tool_choice: "required" }, /tool_choice forces a call, but the request offers no tools/, "tool_choice"],
        [{ tools, tool_choice: { type: "function", function: { name: "nope" } } }, /tool_choice names "nope", which is not among the tools/, "tool_choice"],
        [{ tools, tool_choice: "always" }, /tool_choice must be "auto", "none", "required" or \{ type: "function", function: \{ name \} \}, got "always"/, "tool_choice"],
        [{ tools: [{ type: "function", function: { name: "bad name!" } }] }, /tools\[0\] must be \{ type: "function", function: \{ name, description\?, parameters\? \} \}/, "tools[0]"],
        [{ tools: "x" }, /tools must be a list of at most 128 functions/, "tools"],
        [{ messages: [{ role: "tool", content: "x" }] }, /messages\[0\]\.tool_call_id must be the id of the call it answers/, "messages[0].tool_call_id"],
        [{ messages: [{ role: "assistant", content: null, tool_calls: [{ type: "function", function: { name: "f", arguments: "{" } }] }] }, /messages\[0\]\.tool_calls \[0\]\.function\.arguments is not JSON/, "messages[0].tool_calls"],
      ];
      for (const [extra, message, param] of refusals) {
        const bad = await ask(extra);
        assert.equal(bad.status, 400, JSON.stringify(extra));
        const err = (await bad.json()).error;
        assert.match(err.message, message);
        assert.equal(err.param, param);
      }
      const chatml = await (await post("/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "x" }], tools })).json();
      assert.match(chatml.error.message, /this model's chat template teaches no tool-call syntax this server parses/);
    } finally { s.close(); m.dispose(); }
    // Hermes (Qwen's form): a forced call opens its <tool_call> in the prompt; the JSON that follows is the call, streamed or not.
    const hermesTemplate = "{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}{% endfor %}\nCall as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
      + "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    const h = await loadModel(rt, { ...syntheticModelFiles(), ...byteLevelTokenizer({ chatTemplate: hermesTemplate }) });
    const hs = createOpenAIServer(h, { modelId: MODEL });
    try {
      assert.equal(h.tokenizer!.toolCallFormat, "hermes");
      const body = { model: MODEL, messages: [{ role: "user", content: "Weather in Paris?" }], max_tokens: 400, temperature: 1, seed: 5, tools, tool_choice: "required" };
      const r = await (await hs.fetch(new Request("http://x/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }))).json();
      assert.equal(r.choices[0].finish_reason, "tool_calls");
      assert.equal(r.choices[0].message.tool_calls[0].function.name, "get_weather");
      const events = (await (await hs.fetch(new Request("http://x/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) }))).text())
        .split("\n\n").filter((l) => l.startsWith("data: {")).map((l) => JSON.parse(l.slice(6)));
      assert.deepEqual(events.flatMap((e) => e.choices[0]?.delta?.tool_calls ?? []).map((c: { function: unknown }) => c.function), [r.choices[0].message.tool_calls[0].function]);
    } finally { hs.close(); h.dispose(); }
  });

  it("forwardBatch gives each sequence the logits it gets alone", () => {
    const t = model.transformer, cache = t.createCache();
    const prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [20]];
    const solo = prompts.map((p) => { const s = cache.createSequence(); const l = t.forward(cache, s, p, { logits: "last" }); cache.free(s); return l; });
    const seqs = prompts.map(() => cache.createSequence());
    const batch = t.forwardBatch(cache, prompts.map((p, i) => ({ seq: seqs[i]!, tokens: p })), { logits: "last" });
    const V = t.config.vocabSize;
    prompts.forEach((p, i) => {
      assert.equal(seqs[i]!.length(), p.length);
      for (let j = 0; j < V; j++) assert.ok(Math.abs(batch[i * V + j]! - solo[i]![j]!) < 1e-4, `sequence ${i} logit ${j}`);
    });
    assert.throws(() => t.forwardBatch(cache, [{ seq: seqs[0]!, tokens: [1] }, { seq: seqs[0]!, tokens: [2] }]), /appears twice/);
    assert.throws(() => t.forwardBatch(cache, [{ seq: seqs[0]!, tokens: [1] }, { seq: seqs[1]!, tokens: [99999] }]), /outside the vocabulary/);
    assert.deepEqual(seqs.map((s) => s.length()), prompts.map((p) => p.length), "a refused batch leaves every sequence as it was");
    cache.dispose();
  });

  it("the scheduler under a tight KV budget: shared prefixes reused, requests wait for pages instead of failing, nothing leaks", async () => {
    const cache = model.transformer.createCache({ maxTokens: 320, pageSize: 32 });
    // 10 pages of 32 tokens per layer: a request needs up to 3, so only a few run or stay cached at once.
    const scheduler = new BatchScheduler(model.transformer, cache, model.tokenizer, { maxSequences: 4, maxQueue: 100, maxCacheTokens: 320, prefillChunk: 16 });
    let state = 99;
    const rand = (n: number) => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) % n);
    const prefixes = [0, 1, 2].map((p) => Array.from({ length: 40 }, (_, i) => 3 + ((p * 31 + i * 7) % 250)));
    const jobs = Array.from({ length: 40 }, (_, i) => {
      const controller = new AbortController();
      if (rand(4) === 0) setTimeout(() => controller.abort(), rand(30));
      const prompt = [...prefixes[rand(3)]!, ...Array.from({ length: 1 + rand(10) }, () => 3 + rand(250))];
      return scheduler.submit({
        prompt, maxTokens: 1 + rand(20), temperature: 0, topP: 1, seed: i, frequencyPenalty: 0, presencePenalty: 0,
        stopTokens: new Set(), stopStrings: [], signal: controller.signal,
      });
    });
    const outcomes = await Promise.all(jobs);
    assert.equal(scheduler.counters.failed, 0);
    assert.ok(outcomes.some((o) => o.cachedPromptTokens >= 32), "later requests forked a cached prefix");
    assert.ok(outcomes.filter((o) => o.finishReason !== "aborted").every((o) => o.tokens.length > 0));
    assert.throws(() => scheduler.submit({ prompt: Array(400).fill(5), maxTokens: 1, temperature: 0, topP: 1, seed: 0, frequencyPenalty: 0, presencePenalty: 0, stopTokens: new Set(), stopStrings: [] }), /need .* tokens of KV cache; this server holds 320/);
    scheduler.close();
    assert.equal(cache.stats().pagesUsed, 0, "every page is free");
    cache.dispose();
  });

  it("lists the model and answers a chat, streamed and not, with the same text and usage", async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [MODEL]);
    const messages = [{ role: "system" as const, content: "Be brief." }, { role: "user" as const, content: "Hello there" }];
    const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0 });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices[0]!.message.role, "assistant");
    assert.equal(r.choices[0]!.finish_reason, "length");
    const prompt = model.tokenizer!.encode(model.tokenizer!.applyChatTemplate(messages), { addSpecialTokens: false });
    assert.equal(r.usage!.prompt_tokens, prompt.length);
    assert.equal(r.usage!.completion_tokens, 16);
    // The same tokens as generating in-process, greedily.
    const direct = await model.generate(prompt, { temperature: 0, maxNewTokens: 16, stopTokens: [2] }).done;
    assert.equal(r.choices[0]!.message.content, direct.text);
    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "", finish: string | null = null, usage;
    const roles: string[] = [];
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (!c) continue;
      if (c.delta.role) roles.push(c.delta.role);
      text += c.delta.content ?? "";
      finish = c.finish_reason ?? finish;
    }
    assert.deepEqual(roles, ["assistant"]);
    assert.equal(text, r.choices[0]!.message.content);
    assert.equal(finish, "length");
    assert.equal(usage!.completion_tokens, 16);
    assert.ok(usage!.prompt_tokens_details!.cached_tokens! >= prompt.length - 1, "the second request reused the first one's prompt from the prefix cache");
  });

  it("completions: text and token-id prompts, stop strings, seeds, logprobs", async () => {
    const ids = model.encode("the cat");
    const a = await client.completions.create({ model: MODEL, prompt: "the cat", max_tokens: 12, temperature: 0 });
    const b = await client.completions.create({ model: MODEL, prompt: ids, max_tokens: 12, temperature: 0 });
    assert.equal(a.object, "text_completion");
    assert.equal(a.choices[0]!.text, b.choices[0]!.text);
    // A stop string cut from the text, finish_reason stop.
    const full = a.choices[0]!.text;
    const stop = full.slice(4, 6);
    if (stop.length === 2 && !full.slice(0, 4).includes(stop)) {
      const s = await client.completions.create({ model: MODEL, prompt: "the cat", max_tokens: 12, temperature: 0, stop: [stop] });
      assert.equal(s.choices[0]!.text, full.slice(0, full.indexOf(stop)));
      assert.equal(s.choices[0]!.finish_reason, "stop");
    }
    // Sampling: the same seed gives the same text, streamed or not.
    const sampled = (seed: number) => client.completions.create({ model: MODEL, prompt: "the cat", max_tokens: 20, temperature: 1.2, top_p: 0.95, seed }).then((r) => r.choices[0]!.text);
    assert.equal(await sampled(7), await sampled(7));
    assert.notEqual(await sampled(7), await sampled(8));
    // logprobs: the greedy token is the most likely, its logprob the top one.
    const lp = await client.completions.create({ model: MODEL, prompt: "the cat", max_tokens: 5, temperature: 0, logprobs: 3 });
    const l = lp.choices[0]!.logprobs!;
    assert.equal(l.tokens!.length, 5);
    l.token_logprobs!.forEach((v, i) => {
      const top = Object.values(l.top_logprobs![i]!);
      // Keyed by token text: tokens that decode alike (partial UTF-8) share a key.
      assert.ok(top.length >= 1 && top.length <= 3);
      assert.ok(v! <= 0 && Math.abs(v! - Math.max(...top)) < 1e-9);
    });
    const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "x" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = chat.choices[0]!.logprobs!.content!;
    assert.equal(content.length, 4);
    for (const c of content) {
      assert.equal(c.top_logprobs.length, 2);
      assert.ok(c.top_logprobs[0]!.logprob >= c.top_logprobs[1]!.logprob && c.logprob === c.top_logprobs[0]!.logprob);
      assert.ok(Array.isArray(c.bytes));
    }
  });

  it("frequency and presence penalties follow OpenAI's rule", async () => {
    // Greedy with a large presence penalty never repeats a token until every other is worse.
    const r = await client.completions.create({ model: MODEL, prompt: [5, 6, 7], max_tokens: 30, temperature: 0, presence_penalty: 2, frequency_penalty: 2 });
    const plain = await client.completions.create({ model: MODEL, prompt: [5, 6, 7], max_tokens: 30, temperature: 0 });
    assert.notEqual(r.choices[0]!.text, plain.choices[0]!.text);
    // Checked against a plain computation of the rule on the model's own logits.
    const t = model.transformer, cache = t.createCache(), seq = cache.createSequence();
    let logits = t.forward(cache, seq, [5, 6, 7], { logits: "last" });
    const counts = new Map<number, number>(), out: number[] = [];
    for (let i = 0; i < 30; i++) {
      const z = Float32Array.from(logits);
      for (const [tok, n] of counts) z[tok]! -= n * 2 + 2;
      const next = new Sampler().next(z);
      out.push(next);
      if (next === 2) break;
      counts.set(next, (counts.get(next) ?? 0) + 1);
      logits = t.forward(cache, seq, [next], { logits: "last" });
    }
    cache.dispose();
    assert.equal(r.choices[0]!.text, model.tokenizer!.decode(out));
  });

  it("json_schema and json_object outputs always parse and validate", async () => {
    const ajv = new Ajv({ strict: false });
    const schema = {
      type: "object", additionalProperties: false, required: ["name", "age", "tags", "member"],
      properties: { name: { type: "string", maxLength: 12 }, age: { type: "integer" }, tags: { type: "array", items: { enum: ["red", "green", "blue"] }, maxItems: 3 }, member: { type: "boolean" }, note: { type: ["string", "null"], maxLength: 5 } },
    };
    const validate = ajv.compile(schema);
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const r = await client.chat.completions.create({
        model: MODEL, messages: [{ role: "user", content: `person ${seed}` }], max_tokens: 300, temperature: 1, seed,
        response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } },
      });
      assert.equal(r.choices[0]!.finish_reason, "stop", "the bounded schema completes within max_tokens");
      const value = JSON.parse(r.choices[0]!.message.content!);
      assert.ok(validate(value), `${r.choices[0]!.message.content}: ${ajv.errorsText(validate.errors)}`);
    }
    const stream = await client.chat.completions.create({
      model: MODEL, messages: [{ role: "user", content: "list" }], max_tokens: 300, temperature: 0.8, seed: 9, stream: true,
      response_format: { type: "json_schema", json_schema: { name: "list", schema: { type: "array", items: { type: "number" }, minItems: 1, maxItems: 4 } } },
    });
    let text = "";
    for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
    const arr = JSON.parse(text);
    assert.ok(Array.isArray(arr) && arr.length >= 1 && arr.length <= 4 && arr.every((x: unknown) => typeof x === "number"), text);
    // json_object: an object; unbounded, so it may be cut by max_tokens: then finish_reason says so.
    const o = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "obj" }], max_tokens: 200, temperature: 0.7, seed: 3, response_format: { type: "json_object" } });
    if (o.choices[0]!.finish_reason === "stop") assert.equal(typeof JSON.parse(o.choices[0]!.message.content!), "object");
    else assert.equal(o.choices[0]!.finish_reason, "length");
    const bad = await post("/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "string", pattern: "a+" } } } });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error.message, /pattern is not supported/);
  });

  it("16 concurrent greedy streams each equal their solo run, decoded in shared steps", async () => {
    const prompts = Array.from({ length: 16 }, (_, i) => `request number ${i}: ${"abc".repeat(i % 5)}`);
    const run = async (p: string) => {
      const s = await client.completions.create({ model: MODEL, prompt: p, max_tokens: 24, temperature: 0, stream: true });
      let text = "";
      for await (const c of s) text += c.choices[0]?.text ?? "";
      return text;
    };
    const solo: string[] = [];
    for (const p of prompts) solo.push(await run(p));
    const before = (await health()).steps;
    const together = await Promise.all(prompts.map(run));
    const steps = (await health()).steps - before;
    assert.deepEqual(together, solo);
    assert.ok(steps < 16 * 24 / 4, `16 x 24 tokens took ${steps} steps: sequences shared them`);
  });

  it("a client that disconnects mid-stream aborts its sequence and frees its pages", async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "go on" }], max_tokens: 500, temperature: 0, stream: true }, { signal: controller.signal });
    const abortedBefore = (await health()).aborted;
    let chunks = 0;
    try {
      for await (const _ of stream) if (++chunks === 3) controller.abort();
    } catch { /* the client's abort */ }
    const s = await idle();
    assert.equal(s.aborted, abortedBefore + 1);
    assert.equal(s.liveSequences, s.prefixEntries, "only the prefix cache holds sequences");
    // The same for a request that is not streamed: the closed connection aborts it.
    const quiet = new AbortController();
    const pending = post("/v1/completions", { model: MODEL, prompt: [5, 6, 7], max_tokens: 900, temperature: 0 }, {}, quiet.signal);
    while ((await health()).running === 0) await new Promise((r) => setTimeout(r, 5));
    quiet.abort();
    await assert.rejects(pending);
    const after = await idle();
    assert.equal(after.aborted, abortedBefore + 2);
    assert.equal(after.liveSequences, after.prefixEntries);
  });

  it("refuses bad requests with OpenAI's error shape and status", async () => {
    const msg = [{ role: "user", content: "x" }];
    const cases: [unknown, number, RegExp][] = [
      ["{not json", 400, /not valid JSON/],
      [{ model: MODEL, messages: msg, frobnicate: 1 }, 400, /Unrecognized request argument supplied: frobnicate/],
      [{ model: "other", messages: msg }, 404, /does not exist/],
      [{ model: MODEL, messages: msg, n: 2 }, 400, /n must be 1/],
      [{ model: MODEL, messages: msg, temperature: 3 }, 400, /temperature must be a number in \[0, 2\]/],
      [{ model: MODEL, messages: msg, max_tokens: 5000 }, 400, /maximum context length is 1024/],
      [{ model: MODEL, messages: [{ role: "user", content: "word ".repeat(1200) }] }, 400, /maximum context length/],
      [{ model: MODEL, messages: [{ role: "function", content: "x" }] }, 400, /role must be system, developer, user, assistant or tool/],
      [{ model: MODEL, messages: [] }, 400, /non-empty list/],
      [{ model: MODEL, messages: msg, stop: ["a", "b", "c", "d", "e"] }, 400, /up to 4/],
      [{ model: MODEL, messages: msg, top_logprobs: 2 }, 400, /needs logprobs/],
      [{ model: MODEL, messages: msg, stream_options: { include_usage: true } }, 400, /needs stream: true/],
    ];
    for (const [body, status, message] of cases) {
      const r = await post("/v1/chat/completions", body);
      assert.equal(r.status, status, JSON.stringify(body).slice(0, 80));
      const j = await r.json();
      assert.match(j.error.message, message);
      assert.ok("type" in j.error && "param" in j.error && "code" in j.error);
    }
    const big = await post("/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "x".repeat(300 << 10) }] });
    assert.equal(big.status, 413);
    assert.match((await big.json()).error.message, /larger than/);
    const unknown = await fetch(`${server.url}/v1/embeddings`, { method: "POST" });
    assert.equal(unknown.status, 404);
    // The official client surfaces them as typed errors.
    await assert.rejects(client.chat.completions.create({ model: "other", messages: [{ role: "user", content: "x" }] }), (e: unknown) => e instanceof OpenAI.NotFoundError);
  });

  it("with an API key, only requests that carry it get through", async () => {
    const keyed = await serveNode(model, { port: 0, modelId: MODEL, apiKey: "s3cret" });
    try {
      const ok = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "s3cret", maxRetries: 0 });
      assert.equal((await ok.models.list()).data[0]!.id, MODEL);
      for (const key of ["wrong", "s3cre", "s3cret2"]) {
        await assert.rejects(new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: key, maxRetries: 0 }).models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
      }
      const none = await fetch(`${keyed.url}/v1/models`);
      assert.equal(none.status, 401);
      assert.equal(none.headers.get("www-authenticate"), "Bearer");
    } finally {
      await keyed.close();
    }
  });

  it("a full queue answers 503 with Retry-After; waiting requests run when slots free", async () => {
    const small = await serveNode(model, { port: 0, modelId: MODEL, maxSequences: 1, maxQueue: 1 });
    // The tiny model decodes 900 tokens in ~40 ms, a window a busy machine's pause could close
    // (the first done before the third comes): each step is made to take 2 ms longer, so that the
    // first still runs, and the second waits, for ~1 s.
    const transformer = model.transformer, forwardBatch = transformer.forwardBatch;
    const pause = new Int32Array(new SharedArrayBuffer(4));
    transformer.forwardBatch = function (...args) { Atomics.wait(pause, 0, 0, 2); return forwardBatch.apply(this, args); };
    try {
      const body = { model: MODEL, prompt: [5, 6], max_tokens: 500, temperature: 0 };
      const send = () => fetch(`${small.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      const first = send(), second = send();
      for (let waited = 0; small.api.scheduler.stats().queued < 1 && waited < 5000; waited += 5) await new Promise((r) => setTimeout(r, 5));
      const third = await send();
      assert.equal(third.status, 503);
      assert.equal(third.headers.get("retry-after"), "1");
      assert.equal((await third.json()).error.code, "server_busy");
      // Streamed too: the refusal is the status, not a 200 and an error event.
      const streamed = await fetch(`${small.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
      assert.equal(streamed.status, 503);
      assert.equal((await streamed.json()).error.code, "server_busy");
      const [a, b] = await Promise.all([first, second]);
      assert.equal(a.status, 200);
      assert.equal(b.status, 200);
      assert.equal((await a.json()).choices[0].text, (await b.json()).choices[0].text);
    } finally {
      delete (transformer as { forwardBatch?: unknown }).forwardBatch; // the prototype's again
      await small.close();
    }
  });

  it("without max_tokens a request takes at most its sequence's share of the KV cache, so such requests run side by side", async () => {
    const small = await serveNode(model, { port: 0, modelId: MODEL, maxSequences: 4, maxCacheTokens: 512 });
    try {
      const ask = () => new OpenAI({ baseURL: `${small.url}/v1`, apiKey: "-", maxRetries: 0 }).completions.create({ model: MODEL, prompt: [5, 6, 7, 8], temperature: 0 });
      const results = await Promise.all([ask(), ask(), ask(), ask()]);
      // 512 tokens over 4 sequences in pages of 64 (the default): 2 pages each, one kept for
      // copy-on-write: 64 tokens.
      assert.equal(small.api.scheduler.sequenceShareTokens, 64);
      for (const r of results) {
        const n = r.usage!.completion_tokens;
        assert.ok(r.choices[0]!.finish_reason === "length" ? n === 64 - 4 : n < 64 - 4, `${n} tokens, ${r.choices[0]!.finish_reason}`);
      }
      const s = small.api.scheduler.stats();
      const most = Math.max(...results.map((r) => r.usage!.completion_tokens));
      assert.ok(s.steps < 2 * most, `${s.steps} steps for 4 x ${most} tokens: they ran together`);
      // max_tokens within the context but beyond what the cache holds per request: a 400 before any stream starts (found by the fuzz property).
      const tooMany = await fetch(`${small.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: MODEL, prompt: [5, 6], max_tokens: 600, stream: true }) });
      assert.equal(tooMany.status, 400);
      const err = (await tooMany.json()).error;
      assert.equal(err.code, "context_length_exceeded");
      assert.match(err.message, /need more than this server's KV cache holds per request \(448 tokens\)/);
    } finally {
      await small.close();
    }
  });

  it("a memory budget that runs out: the prefix cache gives way first, else a 503 out_of_memory, and the server goes on serving", async () => {
    // A model whose 1000-token prompt needs 8 MiB of K/V, in runtimes of 16 and 8 MiB.
    const big = { ...TINY_CHAT_MODEL, hidden_size: 256, num_attention_heads: 8, num_key_value_heads: 8, intermediate_size: 512 };
    const complete = (api: OpenAIServer, prompt: number[]) => api.fetch(new Request("http://local/v1/completions", { method: "POST", body: JSON.stringify({ model: MODEL, prompt, max_tokens: 2, temperature: 0 }) }));
    for (const [mb, firstStatus] of [[16, 200], [8, 503]] as const) {
      const small = await createRuntime({ maxMemoryBytes: mb << 20 });
      const m = await loadModel(small, syntheticModelFiles(big));
      const api = createOpenAIServer(m, { modelId: MODEL, maxSequences: 2, maxCacheTokens: 2048 });
      try {
        const first = await complete(api, Array(1000).fill(7));
        assert.equal(first.status, firstStatus, `${mb} MiB`);
        if (firstStatus === 503) assert.equal((await first.json()).error.code, "out_of_memory");
        // The next request runs: at 16 MiB the first one's cached K/V give way, at 8 MiB its pages went back to the runtime.
        const second = await complete(api, [5, 6, 7]);
        assert.equal(second.status, 200, `${mb} MiB: ${await second.clone().text()}`);
      } finally {
        api.close();
        m.dispose();
        await small.dispose();
      }
    }
  });

  it("bounded load with random aborts: no failures, no leaked pages", async () => {
    let state = 12345;
    const rand = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const failedBefore = (await health()).failed;
    const jobs = Array.from({ length: 48 }, async (_, i) => {
      const controller = new AbortController();
      const abortAfter = rand() < 0.4 ? Math.floor(rand() * 200) : undefined;
      if (abortAfter !== undefined) setTimeout(() => controller.abort(), abortAfter);
      const stream = rand() < 0.5;
      try {
        const r = await client.chat.completions.create({ model: MODEL, messages: [{ role: "system", content: "Shared system prompt." }, { role: "user", content: `load ${i}` }], max_tokens: 1 + Math.floor(rand() * 40), temperature: rand(), seed: i, stream }, { signal: controller.signal });
        if (stream) for await (const _ of r as AsyncIterable<unknown>) { /* drain */ }
        return "done";
      } catch (e) {
        if (controller.signal.aborted) return "aborted";
        throw e;
      }
    });
    const outcomes = await Promise.all(jobs);
    assert.ok(outcomes.includes("done"));
    const s = await idle();
    assert.equal(s.failed, failedBefore, "no request failed");
    server.api.scheduler.clearPrefixCache();
    const after = await health();
    assert.equal(after.pagesUsed, 0, "every page is free");
    assert.equal(after.liveSequences, 0);
    assert.equal(after.pagesReserved, 0);
  });
});
