import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expectedTensors } from "../src/model/architecture.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { writeModelFolder, type FolderOptions } from "./model-helpers.ts";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 60_000 });

const llama = { model_type: "llama", hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 2, vocab_size: 50, rms_norm_eps: 1e-5 };
const phi = { ...llama, model_type: "phi3", max_position_embeddings: 4096 };
const longrope = { type: "longrope", short_factor: [1, 1.1, 1.5, 2], long_factor: [1, 3, 9, 27] };

describe("model folders and `gqa-wasm info`", () => {
  const dirs: string[] = [];
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
  const folder = (config: Record<string, unknown>, opts?: FolderOptions) => { const d = writeModelFolder(config, opts); dirs.push(d); return d; };

  it("summarises a llama GQA folder: parameters, KV heads, KV bytes per token vs MHA", () => {
    const dir = folder(llama);
    const r = run("info", "--model", dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /architecture: llama \(GQA\)/);
    assert.match(r.stdout, /layers: 2, query heads: 8, head_dim: 8\nRoPE: theta 10000\n/);
    assert.match(r.stdout, /KV heads per layer: 2 in every layer/);
    // 2 layers x K,V x 2 heads x 8 x 4 bytes = 256 B; as MHA 8 heads: 1 KiB
    assert.match(r.stdout, /KV cache per token \(f32\): 256 B; as MHA: 1\.0 KiB \(4\.0x more\)/);
    const j = JSON.parse(run("info", "--model", dir, "--json").stdout);
    const params = [...expectedTensors(parseModelConfig(llama)).values()].reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0);
    assert.equal(j.parameters, params);
  });

  it("reads sharded folders, DeciLM's per-layer KV heads, qwen2 biases, qwen3 q/k norms, tied MQA with an explicit head_dim", () => {
    const deci = folder({ ...llama, model_type: "deci", num_hidden_layers: 3, num_key_value_heads_per_layer: [4, 2, 1] }, { shards: 2, dtype: "BF16" });
    assert.match(run("info", "--model", deci).stdout, /deci \(variable GQA\)[\s\S]*KV heads per layer: 4,2,1/);
    const qwen = folder({ ...llama, model_type: "qwen2" });
    assert.equal(run("info", "--model", qwen).status, 0);
    const qwen3 = folder({ ...llama, model_type: "qwen3", head_dim: 16, tie_word_embeddings: true, rope_theta: 1000000 });
    assert.match(run("info", "--model", qwen3).stdout, /architecture: qwen3 \(GQA\)[\s\S]*head_dim: 16\nRoPE: theta 1000000\n/);
    const llama3 = folder({ ...llama, rope_theta: 500000, rope_scaling: { rope_type: "llama3", factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } });
    assert.match(run("info", "--model", llama3).stdout, /RoPE: theta 500000, llama3 scaling: factor 32 over 8192 positions\n/);
    const gemma = { ...llama, model_type: "gemma3_text", num_hidden_layers: 3, num_key_value_heads: 1, head_dim: 16, sliding_window: 512, sliding_window_pattern: 3 };
    assert.match(run("info", "--model", folder(gemma)).stdout, /architecture: gemma3_text \(MQA\)[\s\S]*RoPE: theta 1000000\nsliding window: 512 tokens in 2 of 3 layers \(RoPE theta 10000 there\)\nscaling: embeddings x 8, attention scale 0.0625\n/);
    const granite = { ...llama, model_type: "granite", embedding_multiplier: 12, residual_multiplier: 0.22, attention_multiplier: 0.015625, logits_scaling: 8 };
    assert.match(run("info", "--model", folder(granite)).stdout, /\nscaling: embeddings x 12, attention scale 0.015625, residual adds x 0.22, logits x 0.125\n/);
    assert.doesNotMatch(run("info", "--model", folder(llama)).stdout, /scaling:/);
    // Phi-4-mini's form: RoPE on 3/4 of each head, LongRoPE (short factors at the default context, 1024 here).
    const phi4 = { ...phi, partial_rotary_factor: 0.75, tie_word_embeddings: true, original_max_position_embeddings: 1024, rope_scaling: { ...longrope, short_factor: [1, 1.5, 2], long_factor: [1, 4, 16] } };
    assert.match(run("info", "--model", folder(phi4)).stdout, /architecture: phi3 \(GQA\)[\s\S]*RoPE: theta 10000, on 6 of 8 elements per head, LongRoPE: short factors for a context of 1024 \(the long ones past 1024, up to 4096: --context\), attention factor 1\.09545\n/);
    const mqa = folder({ ...llama, num_key_value_heads: 1, head_dim: 16, tie_word_embeddings: true }, { shards: 3 });
    assert.match(run("info", "--model", mqa).stdout, /llama \(MQA\)[\s\S]*head_dim: 16/);
  });

  it("errors are one clear line and exit 1, never a stack trace", () => {
    const cases: [string[], RegExp][] = [
      [["info", "--model", "/nonexistent/model"], /not a model folder \(no such directory\)/],
      [["info", "--model", folder({ ...llama, model_type: "gpt2" }, { tensorsOf: llama })], /model_type "gpt2" is not supported \(llama, qwen2, qwen3, smollm3, mistral, deci, gemma2, gemma3_text, granite, phi3\)/],
      [["info", "--model", folder(llama, { drop: "model.layers.1.mlp.up_proj.weight" })], /missing tensors model.layers.1.mlp.up_proj.weight/],
      [["info", "--model", folder({ ...llama, num_key_value_heads: 3 }, { tensorsOf: llama })], /num_attention_heads 8 is not a multiple of its 3 KV heads/],
      [["info", "--model", folder({ ...llama, rope_scaling: { type: "yarn", factor: 4 } }, { tensorsOf: llama })], /rope_scaling type "yarn" is not supported \(llama3, linear, dynamic, longrope\)/],
      // Phi: LongRoPE's factor lists and partial rotary are checked before use.
      [["info", "--model", folder({ ...phi, rope_scaling: { type: "longrope", short_factor: [1, 2], long_factor: [1, 2, 3, 4] } }, { tensorsOf: phi })], /rope_scaling\.short_factor must list 4 positive numbers \(one per rotated pair\), got \[1,2\]/],
      [["info", "--model", folder({ ...phi, rope_scaling: { type: "longrope", short_factor: [1, 1, 1, 1], long_factor: [1, 1, 1, -1] } }, { tensorsOf: phi })], /rope_scaling\.long_factor must list 4 positive numbers/],
      [["info", "--model", folder({ ...phi, original_max_position_embeddings: 8192, rope_scaling: longrope }, { tensorsOf: phi })], /original_max_position_embeddings must be a positive integer up to max_position_embeddings 4096, got 8192/],
      [["info", "--model", folder({ ...phi, original_max_position_embeddings: 1, rope_scaling: longrope }, { tensorsOf: phi })], /original_max_position_embeddings 1 under max_position_embeddings 4096 gives LongRoPE no finite attention factor/],
      [["info", "--model", folder({ ...phi, partial_rotary_factor: 1.5 }, { tensorsOf: phi })], /partial_rotary_factor must be a number in \(0, 1\], got 1\.5/],
      [["info", "--model", folder({ ...phi, partial_rotary_factor: 0.7 }, { tensorsOf: phi })], /RoPE would rotate 5 elements of each head \(head_dim 8 x partial_rotary_factor 0\.7\); rotary embeddings rotate pairs/],
      // A Llama checkpoint called phi3: its q/k/v apart, where Phi-3 stores one qkv_proj.
      [["info", "--model", folder(phi, { tensorsOf: llama })], /tensor 'model\.layers\.0\.(mlp\.gate_proj|mlp\.up_proj|self_attn\.[qkv]_proj)\.weight' is not one a phi3 model with this config\.json uses/],
      [["info", "--model", folder({ ...llama, hidden_act: "gelu" }, { tensorsOf: llama })], /hidden_act "gelu" is not supported/],
      [["info", "--model", folder({ ...llama, mlp_bias: true }, { tensorsOf: llama })], /mlp_bias: true is not supported/],
      [["info", "--model", folder({ ...llama, model_type: "qwen2", use_sliding_window: true, sliding_window: 4 }, { tensorsOf: { ...llama, model_type: "qwen2" } })], /use_sliding_window: true \(Qwen2's per-layer window\) is not supported/],
      [["info", "--model", folder({ ...llama, model_type: "smollm3", no_rope_layers: [1, 0, 1] }, { tensorsOf: llama })], /no_rope_layers must list 2 values of 0 or 1, got \[1,0,1\]/],
      [["info", "--model", folder({ ...llama, model_type: "gemma3_text", layer_types: ["sliding_attention"] }, { tensorsOf: llama })], /layer_types must list 2 of "sliding_attention" or "full_attention", got \["sliding_attention"\]/],
      [["info", "--model", folder({ ...llama, model_type: "gemma2", attn_logit_softcapping: -1 }, { tensorsOf: llama })], /attn_logit_softcapping must be a positive number, got -1/],
      [["info", "--model", folder({ ...llama, model_type: "gemma3" }, { tensorsOf: llama })], /model_type "gemma3" \(Gemma 3 with vision, 4B and up\) is not supported; Gemma 3's text-only models \(gemma3_text: 270M, 1B\) are/],
      [["info", "--model", folder({ ...llama, model_type: "gemma3_text", hidden_activation: "relu" }, { tensorsOf: llama })], /hidden_activation "relu" is not supported \(silu: SwiGLU, gelu_pytorch_tanh: GeGLU\)/],
      [["info", "--model", folder({ ...llama, model_type: "gemma3_text", sliding_window_pattern: 0 }, { tensorsOf: llama })], /sliding_window_pattern must be a positive integer, got 0/],
      // Weights the config does not describe are refused, not ignored: a Qwen3 checkpoint called
      // qwen2 (its q/k norms), biases without attention_bias.
      [["info", "--model", folder({ ...llama, model_type: "qwen2" }, { tensorsOf: { ...llama, model_type: "qwen3", attention_bias: true } })], /tensor 'model\.layers\.0\.self_attn\.(o_proj\.bias|[qk]_norm\.weight)' is not one a qwen2 model with this config\.json uses/],
      [["info", "--model", folder(llama, { tensorsOf: { ...llama, model_type: "qwen3" } })], /tensor 'model\.layers\.0\.self_attn\.[qk]_norm\.weight' is not one a llama model/],
      [["info", "--model", folder(llama, { tensorsOf: { ...llama, attention_bias: true } })], /tensor 'model\.layers\.0\.self_attn\.[kqov]_proj\.bias' is not one a llama model with this config\.json uses \(is model_type or attention_bias right\?\)/],
    ];
    const broken = folder(llama);
    writeFileSync(join(broken, "model.safetensors"), new Uint8Array([255, 0, 0, 0, 0, 0, 0, 0, 1, 2]));
    cases.push([["info", "--model", broken], /model.safetensors: header length 255 runs past the end of the file/]);
    const badJson = folder(llama);
    writeFileSync(join(badJson, "config.json"), "{ nope");
    cases.push([["info", "--model", badJson], /config.json: config.json is not valid JSON/]);
    for (const [args, message] of cases) {
      const r = run(...args);
      assert.equal(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    assert.equal(run("info").status, 2);
  });
});
