// A loaded model ready to talk: the transformer, its tokenizer and generation defaults, one KV
// cache for its generations. generate() streams a continuation; chat() keeps a conversation
// whose earlier turns stay in the cache, so each turn computes only its new tokens.
import type { KVCache, KVCacheOptions } from "../kv/kv-cache.ts";
import { Generation, type GenerateOptions } from "./generation.ts";
import type { SamplingOptions } from "./sampling.ts";
import { checkTemplateVariables, type ChatTemplateVariables } from "./chat-template.ts";
import type { ChatMessage, TextTokenizer } from "./tokenizer.ts";
import type { TransformerModel } from "./transformer.ts";

/** What generation_config.json (and config.json) say generation should default to. */
export interface GenerationDefaults {
  eosTokenIds: number[];
  bosTokenId?: number;
  sampling: SamplingOptions;
  maxNewTokens?: number;
}

export type Prompt = string | readonly number[];

export class LanguageModel {
  private cache?: KVCache;

  constructor(
    readonly transformer: TransformerModel,
    readonly tokenizer: TextTokenizer | undefined,
    readonly defaults: GenerationDefaults,
    private readonly cacheOptions: Omit<KVCacheOptions, "layers"> = {},
  ) {}

  get config() { return this.transformer.config; }

  /** Token ids of a prompt: ids are used as given, text is encoded with the model's special tokens (e.g. BOS). */
  encode(prompt: Prompt): number[] {
    if (typeof prompt !== "string") return [...prompt];
    return this.requireTokenizer("a text prompt").encode(prompt);
  }

  /**
   * Continues `prompt` (text or ids). Iterate the result for { token, text } as they come, or
   * await `.done` for the whole GenerationResult. Unset sampling options take the model's
   * generation_config.json defaults (greedy when it does not sample).
   */
  generate(prompt: Prompt, options: GenerateOptions = {}): Generation {
    const ids = this.encode(prompt);
    const cache = this.kvCache();
    const seq = cache.createSequence();
    const generation = new Generation({ model: this.transformer, cache, seq, cached: [], tokenizer: this.tokenizer }, ids, this.withDefaults(options));
    return generation.onEnd(() => cache.free(seq));
  }

  /**
   * A conversation: each send() renders the chat template over all messages and reuses the
   * cached prefix. `templateVariables`: more values for the template (Qwen3's { enable_thinking: false }).
   */
  chat(options: { system?: string; templateVariables?: ChatTemplateVariables } = {}): Chat {
    return new Chat(this, this.kvCache(), options.system, checkTemplateVariables(options.templateVariables));
  }

  /** @internal */
  withDefaults(options: GenerateOptions): GenerateOptions & { defaultStopTokens: number[] } {
    const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as GenerateOptions;
    return {
      ...this.defaults.sampling, maxNewTokens: this.defaults.maxNewTokens, ...defined,
      defaultStopTokens: this.defaults.eosTokenIds,
    };
  }

  /** @internal */
  requireTokenizer(what: string): TextTokenizer {
    if (!this.tokenizer) throw new RangeError(`${what} needs the model's tokenizer (tokenizer.json beside config.json); pass token ids instead`);
    return this.tokenizer;
  }

  /** The KV cache shared by this model's generations and chats. */
  kvCache(): KVCache {
    this.cache ??= this.transformer.createCache(this.cacheOptions);
    return this.cache;
  }

  /** Frees the cache and the weights. */
  dispose(): void {
    this.cache?.dispose();
    this.cache = undefined;
    this.transformer.dispose();
  }
}

/** A multi-turn conversation whose K/V stay in the cache between turns. */
export class Chat {
  readonly messages: ChatMessage[] = [];
  private readonly seq;
  /** Ids whose K/V the sequence holds. */
  private readonly cached: number[] = [];
  private busy = false;

  constructor(private readonly model: LanguageModel, private readonly cache: KVCache, system: string | undefined, private readonly variables: ChatTemplateVariables) {
    model.requireTokenizer("chat");
    if (!model.tokenizer!.hasChatTemplate) throw new RangeError("chat needs a chat template (tokenizer_config.json chat_template or chat_template.jinja); use generate() for plain text");
    if (system !== undefined) this.messages.push({ role: "system", content: system });
    this.seq = cache.createSequence();
  }

  /** Tokens of the conversation held in the cache. */
  get cachedTokens(): number { return this.cached.length; }

  /**
   * Adds the user's message and generates the assistant's reply (streamed like generate()); the
   * reply joins the conversation when the generation ends, however it ends. A message that would
   * not fit the context throws a RangeError and leaves the conversation as it was.
   */
  send(content: string, options: GenerateOptions = {}): Generation {
    if (this.busy) throw new Error("chat: the previous reply is still being generated");
    const tokenizer = this.model.tokenizer!;
    const messages = [...this.messages, { role: "user", content }];
    // The template writes the special tokens itself (BOS included where the model wants one).
    const ids = tokenizer.encode(tokenizer.applyChatTemplate(messages, { variables: this.variables }), { addSpecialTokens: false });
    const context = this.model.config.maxPositionEmbeddings;
    if (ids.length >= context) {
      throw new RangeError(`chat: with this message the conversation is ${ids.length} tokens, and the model's context is ${context}; the message was not added`);
    }
    const generation = new Generation({ model: this.model.transformer, cache: this.cache, seq: this.seq, cached: this.cached, tokenizer }, ids, this.model.withDefaults(options));
    this.busy = true;
    return generation.onEnd((result) => {
      this.busy = false;
      if (result) this.messages.push({ role: "user", content }, { role: "assistant", content: result.text });
    });
  }

  /** Releases the conversation's pages. */
  dispose(): void { this.cache.free(this.seq); }
}
