import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRuntime, loadModel, type GenerateOptions, type Generation, type LanguageModel, type LoadProgress, type Runtime } from "../src/index.ts";
import { greedyByRecomputing } from "./model-reference.ts";
import { f32ToBf16 } from "../src/formats/half.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { folderToGGUF } from "../src/model/gguf-export.ts";
import { randomWeights, referenceForward, SPECIAL_TOKENS, TOKENIZER_VOCAB, textModel, SENTENCEPIECE_VOCAB, writeModelFolder, writeSentencePieceTokenizer, writeTokenizer } from "./model-helpers.ts";

/** Every streamed piece, and the result. */
async function collect(g: Generation) {
  const pieces: string[] = [], tokens: number[] = [];
  for await (const step of g) { pieces.push(step.text); tokens.push(step.token); }
  return { pieces, tokens, result: await g.done };
}

describe("text generation: tokenizer, streaming, stop rules, cancellation, chat", function () {
  this.timeout(120_000);
  let rt: Runtime, dir: string, model: LanguageModel;
  const greedy: GenerateOptions = { temperature: 0, stopTokens: [] };
  before(async () => {
    rt = await createRuntime();
    dir = writeModelFolder(textModel);
    writeTokenizer(dir);
    model = await loadModel(rt, dir);
  });
  after(() => { model.dispose(); rmSync(dir, { recursive: true, force: true }); });

  it("tokenizes with tokenizer.json (byte-level BPE, merges, special tokens) and decodes back", () => {
    const tok = model.tokenizer!;
    const text = "the theme in a café 🙂 <|im_end|>";
    const ids = tok.encode(text);
    assert.ok(ids.includes(tok.tokenId("Ġthe")!), "the merge 'Ġthe' applies");
    assert.ok(ids.includes(SPECIAL_TOKENS.indexOf("<|im_end|>")), "special tokens are matched whole");
    assert.equal(tok.decode(ids, { skipSpecialTokens: false }), text);
    assert.equal(tok.decode(ids), "the theme in a café 🙂 ");
    assert.ok(ids.every((id) => id >= 0 && id < TOKENIZER_VOCAB));
  });

  it("renders the chat template from tokenizer_config.json", () => {
    const text = model.tokenizer!.applyChatTemplate([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }]);
    assert.equal(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  });

  it("chat template variables (Qwen3's enable_thinking) reach the template, in applyChatTemplate and chat(); the template's own names cannot be set", async () => {
    // A Qwen3-style switch (written here): an empty thinking block when enable_thinking is false.
    const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n" +
      "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";
    const thinking = writeModelFolder(textModel);
    writeTokenizer(thinking, { chatTemplate: template });
    const m = await loadModel(rt, thinking);
    try {
      const tok = m.tokenizer!, hi = [{ role: "user", content: "Hi" }];
      assert.equal(tok.applyChatTemplate(hi), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
      assert.equal(tok.applyChatTemplate(hi, { variables: { enable_thinking: false } }), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
      assert.throws(() => tok.applyChatTemplate(hi, { variables: { messages: [] } }), /chat template variables cannot set messages, the template's own/);
      assert.throws(() => tok.applyChatTemplate(hi, { variables: [1] as never }), /chat template variables must be an object, got an array/);
      assert.throws(() => m.chat({ templateVariables: { add_generation_prompt: false } }), /cannot set add_generation_prompt/);
      const think = tok.encode("<think>\n\n</think>\n\n", { addSpecialTokens: false }).length;
      const plain = await m.chat().send("Hi", { ...greedy, maxNewTokens: 1 }).done;
      const off = await m.chat({ templateVariables: { enable_thinking: false } }).send("Hi", { ...greedy, maxNewTokens: 1 }).done;
      assert.equal(off.promptTokens, plain.promptTokens + think);
    } finally { m.dispose(); rmSync(thinking, { recursive: true, force: true }); }
  });

  it("a Qwen3-style template renders under the budget: namespace(), a reverse walk with loop.index0, string methods, `in`, `is string`", async () => {
    // Written here in the style of Qwen3's template (its constructs, not its text): the last user
    // query found walking backwards; earlier assistant turns lose their thoughts, later ones keep them.
    const t = `{%- set ns = namespace(last_query_index=messages|length - 1) %}{%- set found = namespace(v=false) %}
{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}
{%- if not found.v and message.role == "user" and message.content is string and not message.content.startswith('<tool_response>') %}{%- set ns.last_query_index = index %}{%- set found.v = true %}{%- endif %}{%- endfor %}
{%- for message in messages %}{%- set content = message.content if message.content is string else '' %}
{%- if message.role == "assistant" %}{%- set thought = '' %}{%- if '</think>' in content %}{%- set thought = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}
{%- if loop.index0 > ns.last_query_index %}{{- '<|im_start|>assistant\\n<think>\\n' + thought.strip('\\n') + '\\n</think>\\n\\n' + content }}{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}{{- '<|im_end|>\\n' }}
{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}`;
    const { ChatTemplate } = await import("../src/model/chat-template.ts");
    const turns = [{ role: "user", content: "hi" }, { role: "assistant", content: "<think>\nhmm\n</think>\n\nhello" }, { role: "user", content: "again" }, { role: "assistant", content: "<think>ok</think>sure" }];
    const text = new ChatTemplate(t, "qwen3-style").render({ messages: turns, add_generation_prompt: true, enable_thinking: false });
    assert.equal(text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n" +
      "<|im_start|>assistant\n<think>\nok\n</think>\n\nsure<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  });

  it("a Gemma-3-style template renders: the system turn folded into the first user turn, messages[1:], content as a string or a list of parts, | trim, roles that must alternate (raise_exception)", async () => {
    // Written here in the style of Gemma 3's template (its constructs, not its text).
    const t = `{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- if messages[0]['content'] is string -%}{%- set prefix = messages[0]['content'] + '\n\n' -%}
{%- else -%}{%- set prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}{%- set turns = messages[1:] -%}{%- else -%}{%- set prefix = "" -%}{%- set turns = messages -%}{%- endif -%}
{%- for message in turns -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception("roles must alternate user/assistant") }}{%- endif -%}
{%- set role = "model" if message['role'] == 'assistant' else message['role'] -%}{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else "") }}
{%- if message['content'] is string -%}{{ message['content'] | trim }}{%- elif message['content'] is iterable -%}{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] | trim }}{%- endif -%}{%- endfor -%}
{%- else -%}{{ raise_exception("bad content") }}{%- endif -%}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}`;
    const { ChatTemplate } = await import("../src/model/chat-template.ts");
    const template = new ChatTemplate(t, "gemma3-style");
    const turns = [{ role: "system", content: "Be brief." }, { role: "user", content: " hi " }, { role: "assistant", content: [{ type: "text", text: "hello\n" }] }, { role: "user", content: "again" }];
    assert.equal(template.render({ messages: turns, add_generation_prompt: true, bos_token: "<bos>" }),
      "<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n<start_of_turn>user\nagain<end_of_turn>\n<start_of_turn>model\n");
    assert.throws(() => template.render({ messages: [{ role: "assistant", content: "x" }], add_generation_prompt: true, bos_token: "<bos>" }), /roles must alternate user\/assistant/);
  });

  it("a Phi-4-mini-style template renders: <|role|> turns closed by <|end|>, `'tools' in message` on a dict with `is not none`, the EOS without a generation prompt", async () => {
    // Written here in the style of Phi-4-mini's template (its constructs, not its text).
    const t = `{%- for message in messages -%}{%- if message['role'] == 'system' and 'tools' in message and message['tools'] is not none -%}
{{- '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|><|end|>' -}}
{%- else -%}{{- '<|' + message['role'] + '|>' + message['content'] + '<|end|>' -}}{%- endif -%}{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- else -%}{{- eos_token -}}{%- endif -%}`;
    const { ChatTemplate } = await import("../src/model/chat-template.ts");
    const template = new ChatTemplate(t, "phi4-style");
    const turns = [{ role: "system", content: "Be brief.", tools: "[{\"name\": \"f\"}]" }, { role: "user", content: "hi" }];
    assert.equal(template.render({ messages: turns, add_generation_prompt: true, eos_token: "<|endoftext|>" }),
      "<|system|>Be brief.<|tool|>[{\"name\": \"f\"}]<|/tool|><|end|><|user|>hi<|end|><|assistant|>");
    assert.equal(template.render({ messages: [{ role: "system", content: "s", tools: null }, { role: "user", content: "hi" }], add_generation_prompt: false, eos_token: "<|endoftext|>" }),
      "<|system|>s<|end|><|user|>hi<|end|><|endoftext|>");
  });

  it("streams: the pieces join into the result text, and the tokens equal recomputing the whole forward each step", async () => {
    const prompt = model.encode("the theme");
    const { pieces, tokens, result } = await collect(model.generate("the theme", { ...greedy, maxNewTokens: 12 }));
    assert.equal(result.finishReason, "max-tokens");
    assert.deepEqual(result.tokens, greedyByRecomputing(model.transformer, prompt, 12));
    assert.deepEqual(tokens, result.tokens);
    assert.equal(pieces.join(""), result.text);
    assert.equal(result.text, model.tokenizer!.decode(result.tokens));
    assert.equal(result.promptTokens, prompt.length);
    assert.ok(result.kvCacheBytes > 0 && result.prefillTokensPerSecond > 0 && result.decodeTokensPerSecond > 0);
  });

  it("never streams half a UTF-8 character: pieces are held until the character is complete", async () => {
    const { TextStream } = await import("../src/model/generation.ts");
    const emoji = model.tokenizer!.encode("🙂");
    assert.equal(emoji.length, 4, "one byte token per UTF-8 byte of the emoji");
    const stream = new TextStream(model.tokenizer, []);
    const pieces = emoji.map((id) => stream.push(id));
    assert.deepEqual(pieces, ["", "", "", "🙂"]);
  });

  it("streams the text of every id decoded at once, decoding only the ids since the last whole character", async () => {
    const { TextStream } = await import("../src/model/generation.ts");
    const { TextTokenizer, byteChars } = await import("../src/model/tokenizer.ts");
    // Each tokenizer with the name of its token for one byte (byte-level: a printable stand-in; SentencePiece: <0xNN>).
    const byteLevel = (b: number) => byteChars()[b]!, fallback = (b: number) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    const sources: [string, (dir: string) => void, number, (b: number) => string][] = [
      ["byte-level BPE", (d) => writeTokenizer(d), TOKENIZER_VOCAB, byteLevel],
      ["SentencePiece, leading space stripped", (d) => writeSentencePieceTokenizer(d), SENTENCEPIECE_VOCAB, fallback],
      ["SentencePiece, no space prefix", (d) => writeSentencePieceTokenizer(d, { spacePrefix: false }), SENTENCEPIECE_VOCAB, fallback],
    ];
    for (const [label, write, vocab, byteToken] of sources) {
      const dir = mkdtempSync(join(tmpdir(), "gqa-textstream-"));
      try {
        write(dir);
        const tok = new TextTokenizer(JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")), JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")));
        // Any ids: special tokens, lone and partial UTF-8 bytes, runs of invalid ones, whole words.
        let seed = 7;
        const ids = Array.from({ length: 400 }, () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % vocab; });
        ids.splice(100, 0, ...tok.encode("naïve café 🙂 ok", { addSpecialTokens: false }));
        // Long runs that are no characters (a lead byte again and again, continuation bytes), then a
        // character split over byte tokens: a stream of a model gone astray.
        const byte = (b: number) => tok.tokenId(byteToken(b))!;
        ids.splice(200, 0, ...Array(60).fill(byte(0xc3)), ...Array(60).fill(byte(0x82)), byte(0xe2), byte(0x82), byte(0xac), ...Array(40).fill(byte(0xf0)));
        const stream = new TextStream(tok, []);
        let streamed = "";
        ids.forEach((id, i) => {
          streamed += stream.push(id);
          assert.equal(stream.text, tok.decode(ids.slice(0, i + 1)), `${label}: the text after ${i + 1} ids`);
          assert.ok(stream.text.startsWith(streamed), `${label}: streamed text is final text`);
        });
        assert.equal(streamed + stream.flush(), tok.decode(ids), label);
      } finally { rmSync(dir, { recursive: true, force: true }); }
    }
  });

  it("stops at a stop string, which is cut from the text and never streamed", async () => {
    const free = await model.generate("in a", { ...greedy, maxNewTokens: 24 }).done;
    // A two-character stop string from the middle of the free run's text.
    let at = 4;
    while (at < free.text.length - 2 && /\uFFFD/.test(free.text.slice(at, at + 2))) at++;
    const stop = free.text.slice(at, at + 2);
    const expected = free.text.slice(0, free.text.indexOf(stop));
    const { pieces, result } = await collect(model.generate("in a", { ...greedy, maxNewTokens: 24, stopStrings: [stop] }));
    assert.equal(result.finishReason, "stop-string");
    assert.equal(result.text, expected);
    assert.equal(pieces.join(""), expected);
  });

  it("stops at EOS from generation_config.json, including it in the tokens but not in the text", async () => {
    const free = await model.generate("the", { ...greedy, maxNewTokens: 10 }).done;
    const eos = free.tokens[5]!;
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [99999, eos], do_sample: false }));
    const withEos = await loadModel(rt, dir);
    try {
      assert.deepEqual(withEos.defaults.eosTokenIds, [99999, eos]);
      const r = await withEos.generate("the", { maxNewTokens: 10 }).done;
      assert.equal(r.finishReason, "eos");
      assert.deepEqual(r.tokens, free.tokens.slice(0, free.tokens.indexOf(eos) + 1));
      assert.equal(r.text, withEos.tokenizer!.decode(r.tokens.slice(0, -1)));
    } finally {
      withEos.dispose();
      rmSync(join(dir, "generation_config.json"));
    }
  });

  it("generation_config.json sampling defaults apply, explicit options win, a seed reproduces", async () => {
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ do_sample: true, temperature: 1.3, top_p: 0.9, repetition_penalty: 1.1 }));
    const sampled = await loadModel(rt, dir);
    try {
      assert.deepEqual(sampled.defaults.sampling, { temperature: 1.3, topK: 50, topP: 0.9, repetitionPenalty: 1.1 });
      const a = await sampled.generate("the", { maxNewTokens: 16, seed: 7, stopTokens: [] }).done;
      const b = await sampled.generate("the", { maxNewTokens: 16, seed: 7, stopTokens: [] }).done;
      const c = await sampled.generate("the", { maxNewTokens: 16, seed: 8, stopTokens: [] }).done;
      assert.deepEqual(a.tokens, b.tokens);
      assert.notDeepEqual(a.tokens, c.tokens);
      const g = await sampled.generate("the", { maxNewTokens: 16, temperature: 0, repetitionPenalty: 1, stopTokens: [] }).done;
      assert.deepEqual(g.tokens, (await model.generate("the", { ...greedy, maxNewTokens: 16 }).done).tokens);
    } finally {
      sampled.dispose();
      rmSync(join(dir, "generation_config.json"));
    }
  });

  it("an AbortSignal ends the stream at the next token with finishReason 'aborted', and the model stays usable", async () => {
    const controller = new AbortController();
    const g = model.generate("the", { ...greedy, maxNewTokens: 200, signal: controller.signal });
    let seen = 0;
    for await (const _ of g) if (++seen === 3) controller.abort();
    const r = await g.done;
    assert.equal(r.finishReason, "aborted");
    assert.equal(r.tokens.length, 3);
    const already = new AbortController();
    already.abort();
    assert.equal((await model.generate("the", { signal: already.signal }).done).tokens.length, 0);
    assert.equal((await model.generate("the", { ...greedy, maxNewTokens: 4 }).done).tokens.length, 4);
    assert.equal(model.kvCache().stats().sequences.length, 0, "every generation's pages went back to the cache");
  });

  it("timers run while a generation streams (a macrotask at least every 10 ms): one aborts a generation that would run for seconds", async () => {
    const longDir = writeModelFolder({ ...textModel, max_position_embeddings: 100_000 });
    writeTokenizer(longDir);
    const long = await loadModel(rt, longDir);
    try {
      const controller = new AbortController();
      const started = performance.now();
      setTimeout(() => controller.abort(), 5);
      const r = await long.generate("the", { ...greedy, maxNewTokens: 90_000, signal: controller.signal }).done;
      assert.equal(r.finishReason, "aborted", `${r.tokens.length} tokens, no timer ran between them`);
      assert.ok(r.tokens.length < 90_000);
      assert.ok(performance.now() - started < 30_000);
    } finally {
      long.dispose();
      rmSync(longDir, { recursive: true, force: true });
    }
  });

  it("stops when the context (max_position_embeddings) is full", async () => {
    const long = Array.from({ length: 505 }, (_, i) => 10 + (i % 200));
    const r = await model.generate(long, { ...greedy, maxNewTokens: 50 }).done;
    assert.equal(r.finishReason, "context-full");
    assert.equal(r.promptTokens + r.tokens.length, 512);
    assert.throws(() => model.generate(Array(512).fill(5), greedy), /prompt has 512 tokens; the model's context is 512/);
  });

  it("multi-turn chat keeps the conversation in the cache: each turn computes only its new tokens, and equals a fresh run", async () => {
    const chat = model.chat({ system: "You are terse." });
    const first = await collect(chat.send("Hi there", { ...greedy, maxNewTokens: 6 }));
    assert.equal(first.result.reusedTokens, 0);
    assert.equal(chat.messages.length, 3);
    assert.equal(chat.messages[2]!.content, first.result.text);
    const second = await chat.send("And then?", { ...greedy, maxNewTokens: 6 }).done;
    // The second prompt starts with the whole first prompt: those K/V were not recomputed.
    assert.ok(second.reusedTokens >= first.result.promptTokens, `reused ${second.reusedTokens} of ${second.promptTokens}`);
    // The same conversation from scratch gives the same reply.
    const prompt = model.tokenizer!.encode(model.tokenizer!.applyChatTemplate(chat.messages.slice(0, 4)), { addSpecialTokens: false });
    assert.equal(prompt.length, second.promptTokens);
    assert.deepEqual(second.tokens, greedyByRecomputing(model.transformer, prompt, second.tokens.length));
    assert.throws(() => { chat.send("a"); chat.send("b"); }, /still being generated/);
    chat.dispose();
  });

  it("loads the same model from ArrayBuffers, fetch Responses, Files and a URL as from the folder, reporting progress", async () => {
    const files: Record<string, ArrayBuffer> = {};
    for (const f of readdirSync(dir)) { const b = readFileSync(join(dir, f)); files[f] = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength); }
    const expected = (await model.generate("the theme", { ...greedy, maxNewTokens: 8 }).done).tokens;
    const progress: LoadProgress[] = [];
    const fromBuffers = await loadModel(rt, files, { onProgress: (p) => progress.push({ ...p }) });
    const responses = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, new Response(v, { headers: { "content-length": String(v.byteLength) } })]));
    const fromResponses = await loadModel(rt, responses);
    // A file picker's File objects (Blobs), as a browser page gets them.
    const blobProgress: LoadProgress[] = [];
    const fromBlobs = await loadModel(rt, Object.fromEntries(Object.entries(files).map(([k, v]) => [k, new File([v], k)])), { onProgress: (p) => blobProgress.push({ ...p }) });
    assert.equal(blobProgress.at(-1)!.doneBytes, blobProgress.at(-1)!.totalBytes);
    const { createServer } = await import("node:http");
    const server = createServer((req, res) => {
      const name = decodeURIComponent(req.url!.split("/").pop()!);
      if (!(name in files)) { res.writeHead(404).end(); return; }
      res.writeHead(200, { "content-length": files[name]!.byteLength }).end(Buffer.from(files[name]!));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      const fromUrl = await loadModel(rt, `http://127.0.0.1:${port}/models/tiny`);
      for (const m of [fromBuffers, fromResponses, fromBlobs, fromUrl]) {
        assert.deepEqual((await m.generate("the theme", { ...greedy, maxNewTokens: 8 }).done).tokens, expected);
        m.dispose();
      }
    } finally { server.close(); }
    const reads = progress.filter((p) => p.phase === "read"), uploads = progress.filter((p) => p.phase === "upload");
    assert.ok(reads.length > 0 && uploads.length > 0);
    for (const list of [reads, uploads]) {
      list.forEach((p, i) => assert.ok(p.doneBytes >= (list[i - 1]?.doneBytes ?? 0) && p.doneBytes <= p.totalBytes));
      assert.equal(list.at(-1)!.doneBytes, list.at(-1)!.totalBytes);
    }
  });

  it("over http(s), a folder's safetensors headers come by Range requests and each file's data is fetched once, as a stream; a server that ignores ranges works too", async () => {
    const files: Record<string, Buffer> = {};
    for (const f of readdirSync(dir)) files[f] = readFileSync(join(dir, f));
    const expected = (await model.generate("the theme", { ...greedy, maxNewTokens: 6 }).done).tokens;
    const { createServer } = await import("node:http");
    for (const ranges of [true, false]) {
      const served = new Map<string, number>();
      let rangeRequests = 0;
      const server = createServer((req, res) => {
        const name = decodeURIComponent(req.url!.split("/").pop()!), body = files[name];
        if (!body) { res.writeHead(404).end(); return; }
        const m = ranges ? /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "") : null;
        const part = m ? body.subarray(Number(m[1]), Math.min(body.length, Number(m[2]) + 1)) : body;
        served.set(name, (served.get(name) ?? 0) + part.length);
        if (m && name === "model.safetensors") rangeRequests++;
        res.writeHead(m ? 206 : 200, { "content-length": part.length, ...(m ? { "content-range": `bytes ${m[1]}-${Number(m[1]) + part.length - 1}/${body.length}` } : {}) });
        // A server that ignores ranges sends the whole file, of which the client reads the first bytes and cancels.
        res.end(part);
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      try {
        const m = await loadModel(rt, `http://127.0.0.1:${(server.address() as { port: number }).port}/models/tiny`);
        assert.deepEqual((await m.generate("the theme", { ...greedy, maxNewTokens: 6 }).done).tokens, expected);
        m.dispose();
        const size = files["model.safetensors"]!.length;
        if (ranges) {
          assert.ok(rangeRequests >= 2, "the header length, then the header, by ranges");
          assert.ok(served.get("model.safetensors")! < size + 4096, `served ${served.get("model.safetensors")} bytes of a ${size}-byte file: the data once, the header by ranges`);
        }
      } finally { server.close(); }
    }
  });

  it("a model too big for the memory budget fails to load with WasmOutOfMemoryError, frees what it uploaded, and the runtime stays usable", async () => {
    const small = await createRuntime({ maxMemoryBytes: 8 << 20 });
    const before = small.stats().persistentLiveBytes;
    const big = writeModelFolder({ ...textModel, hidden_size: 512, intermediate_size: 2048, num_attention_heads: 8 }); // 30 MiB of f32 weights
    try {
      // The one line says what the weights take and what 4-bit blocks would (which fit here).
      await assert.rejects(loadModel(small, big), (e: Error) => e.name === "WasmOutOfMemoryError"
        && /: the weights take 30\.0 MiB of wasm memory as loaded: wasm memory cannot grow to .* the limit is 8\.0 MiB; as 4-bit blocks \(dtype q4_0 or q4_k_m\) they would take about 4\.2 MiB$/.test(e.message));
      assert.equal(small.stats().persistentLiveBytes, before, "the weights uploaded before the failure were freed");
      // A GGUF file of it likewise (as Phi-4-mini's Q8_0 file, 4.06 GB, does not fit wasm32's 4 GiB, where its 4-bit ones do).
      const f32 = await folderToGGUF(big, { dtype: "f32" });
      await assert.rejects(loadModel(small, { "m.gguf": f32 }), (e: Error) => e.name === "WasmOutOfMemoryError"
        && /^m\.gguf: the weights take 30\.0 MiB of wasm memory as loaded: .* the limit is 8\.0 MiB; as 4-bit blocks \(dtype q4_0 or q4_k_m\) they would take about 4\.2 MiB$/.test(e.message));
      assert.equal(small.stats().persistentLiveBytes, before);
      const fits = await loadModel(small, dir);
      assert.equal((await fits.generate("the", { ...greedy, maxNewTokens: 3 }).done).tokens.length, 3);
      fits.dispose();
    } finally { rmSync(big, { recursive: true, force: true }); }
  });

  it("a folder streams into wasm memory a group of rows at a time: tensors over several groups and file chunks cut at odd places give the float64 reference's logits (f32, bf16 as stored, q8_0 at load); a NaN in a late group names its element; nothing is left allocated", async () => {
    // An 8192-token vocabulary of 256: the embedding and the LM head are 8 MiB each in f32, two
    // 4 MiB groups of rows; the file is read in 8 MiB chunks, which its 8-byte + header offset
    // cuts inside tensors.
    const cfg = parseModelConfig({ ...textModel, vocab_size: 8192, hidden_size: 256, intermediate_size: 384, num_hidden_layers: 1, num_attention_heads: 4 });
    const raw = { ...textModel, vocab_size: 8192, hidden_size: 256, intermediate_size: 384, num_hidden_layers: 1, num_attention_heads: 4 };
    const weights = randomWeights(cfg);
    const ids = [5, 8000, 17, 4095, 4096, 8191];
    const want = referenceForward(cfg, weights, ids).flat();
    const logitsOf = (m: LanguageModel) => {
      const cache = m.transformer.createCache();
      try { return Array.from(m.transformer.forward(cache, cache.createSequence(), ids)); } finally { cache.dispose(); }
    };
    const dirs = [writeModelFolder(raw, { weights }), writeModelFolder(raw, { weights, dtype: "BF16" })];
    try {
      const load = async (source: string, dtype?: "bf16" | "q8_0") => {
        const m = await loadModel(rt, source, { dtype });
        try { return { dtype: m.transformer.weightDtype, logits: logitsOf(m) }; } finally { m.dispose(); }
      };
      const f32 = await load(dirs[0]!), err = f32.logits.reduce((e, v, i) => Math.max(e, Math.abs(v - want[i]!)), 0);
      assert.ok(f32.dtype === "f32" && err <= 1e-4, `f32: ${err}`);
      // A BF16 file's bits, copied as stored: the reference on the same bf16-rounded weights.
      const rounded = new Map([...weights].map(([n, w]) => [n, Float32Array.from(w, (v) => new Float32Array(new Uint32Array([f32ToBf16(v) << 16]).buffer)[0]!)]));
      const bfWant = referenceForward(cfg, rounded, ids).flat();
      const bf16 = await load(dirs[1]!), bfErr = bf16.logits.reduce((e, v, i) => Math.max(e, Math.abs(v - bfWant[i]!)), 0);
      assert.ok(bf16.dtype === "bf16" && bfErr <= 1e-4, `bf16: ${bfErr}`);
      // Q8_0 at load, a group of rows at a time: the blocks of quantizing each whole tensor.
      const q8 = await load(dirs[0]!, "q8_0"), whole = new TransformerModel(rt, cfg, (n) => weights.get(n)!, "q8_0");
      const cache = whole.createCache();
      try {
        assert.equal(q8.dtype, "q8_0");
        assert.deepEqual(q8.logits, Array.from(whole.forward(cache, cache.createSequence(), ids)));
      } finally { cache.dispose(); whole.dispose(); }
      const before = rt.stats().persistentLiveBytes;
      const poisoned = new Map(weights);
      const embedding = Float32Array.from(weights.get("model.embed_tokens.weight")!);
      embedding[6000 * 256 + 7] = Number.NaN;
      poisoned.set("model.embed_tokens.weight", embedding);
      const bad = writeModelFolder(raw, { weights: poisoned });
      dirs.push(bad);
      await assert.rejects(loadModel(rt, bad), /tensor 'model\.embed_tokens\.weight' holds a non-finite value \(NaN or infinity\) at element 1536007; the checkpoint is corrupt/);
      assert.equal(rt.stats().persistentLiveBytes, before, "a refused load leaves nothing allocated");
    } finally {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }
  });

  it("clear errors: text without a tokenizer, chat without a template, bad tokenizer.json, missing files in memory", async () => {
    const bare = writeModelFolder(textModel);
    const noTemplate = writeModelFolder(textModel);
    writeTokenizer(noTemplate, { chatTemplate: null });
    const badTok = writeModelFolder(textModel);
    writeFileSync(join(badTok, "tokenizer.json"), "{\"model\": 3");
    try {
      const m = await loadModel(rt, bare);
      assert.throws(() => m.generate("hi"), /needs the model's tokenizer \(tokenizer\.json/);
      assert.deepEqual((await m.generate([1, 2], { ...greedy, maxNewTokens: 2 }).done).tokens.length, 2);
      m.dispose();
      const n = await loadModel(rt, noTemplate);
      assert.throws(() => n.chat(), /chat needs a chat template/);
      n.dispose();
      await assert.rejects(loadModel(rt, badTok), /tokenizer\.json: tokenizer\.json is not valid JSON/);
      await assert.rejects(loadModel(rt, { "config.json": JSON.stringify(textModel) }), /model\.safetensors: not among the files given \(config\.json\)/);
      await assert.rejects(loadModel(rt, 42 as never), /expected a folder path, a URL or the files by name/);
    } finally {
      for (const d of [bare, noTemplate, badTok]) rmSync(d, { recursive: true, force: true });
    }
  });
});

describe("text generation with a SentencePiece-style tokenizer (byte fallback, <s> added)", function () {
  this.timeout(60_000);
  it("adds BOS, round-trips text through byte-fallback tokens, holds back partial characters, and streams the decoded text", async () => {
    const rt = await createRuntime();
    const dir = writeModelFolder({ ...textModel, vocab_size: SENTENCEPIECE_VOCAB, bos_token_id: 1, eos_token_id: 2 });
    writeSentencePieceTokenizer(dir);
    const model = await loadModel(rt, dir);
    try {
      const tok = model.tokenizer!;
      const ids = model.encode("Hello wörld €");
      assert.equal(ids[0], 1, "<s> first");
      assert.ok(ids.includes(tok.tokenId("<0xC3>")!), "ö falls back to bytes");
      assert.equal(ids.length > 0 && tok.decode(ids), "Hello wörld €");
      assert.ok(ids.every((id) => id < SENTENCEPIECE_VOCAB));
      const { TextStream } = await import("../src/model/generation.ts");
      const stream = new TextStream(tok, []);
      assert.deepEqual(["<0xE2>", "<0x82>", "<0xAC>"].map((t) => stream.push(tok.tokenId(t)!)), ["", "", "€"]);
      assert.deepEqual(model.defaults.eosTokenIds, [2]);
      const { pieces, result } = await collect(model.generate("Hello world", { temperature: 0, maxNewTokens: 16, stopTokens: [] }));
      assert.equal(pieces.join(""), result.text);
      assert.equal(result.text, tok.decode(result.tokens));
    } finally {
      model.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
