// Text <-> token ids from a model's tokenizer.json and tokenizer_config.json, with
// @huggingface/tokenizers (the Hugging Face tokenizer pipeline in JS), and chat prompts rendered
// from the model's own Jinja chat template with @huggingface/jinja.
import { Tokenizer } from "@huggingface/tokenizers";
import { ChatTemplate, checkTemplateVariables, toolCallFormat, type ChatTemplateVariables, type ToolCallFormat } from "./chat-template.ts";
import { ModelConfigError } from "./config.ts";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool" | (string & {});
  content: string;
  /** An assistant turn's tool calls, their arguments as objects (as Hugging Face's templates read them). */
  tool_calls?: readonly { id: string; type: "function"; function: { name: string; arguments: unknown } }[];
  /** A tool turn: the call it answers. */
  tool_call_id?: string;
}

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly template?: ChatTemplate;
  private readonly byteLevel: boolean;
  readonly bosToken?: string;
  readonly eosToken?: string;
  /** The chat template writes <think> (a thinking model: Qwen3, DeepSeek-R1 distills, QwQ, SmolLM3). */
  readonly templateThinks: boolean;
  /** The tool-call syntax the chat template teaches (toolCallFormat); undefined: none this runtime parses. */
  readonly toolCallFormat?: ToolCallFormat;

  /**
   * `chatTemplate` overrides the one in tokenizer_config.json (newer checkpoints ship it as
   * chat_template.jinja beside it); the sources name the files, for messages.
   */
  constructor(tokenizerJson: unknown, tokenizerConfig: Record<string, unknown> = {}, private readonly source = "tokenizer.json", chatTemplate?: { text: string; source: string }, configSource = "tokenizer_config.json") {
    try {
      this.tokenizer = new Tokenizer(tokenizerJson as object, tokenizerConfig);
    } catch (e) {
      throw new ModelConfigError(`${source}: not a tokenizer this runtime can read (${(e as Error).message})`);
    }
    // Byte-level vocabularies (GPT-2, Llama 3, Qwen2) write bytes as printable characters;
    // SentencePiece ones write spaces as U+2581 and raw bytes as <0xNN>.
    this.byteLevel = JSON.stringify((tokenizerJson as { decoder?: unknown })?.decoder ?? null).includes("ByteLevel");
    this.bosToken = tokenText(tokenizerConfig.bos_token);
    this.eosToken = tokenText(tokenizerConfig.eos_token);
    const fromConfig = pickTemplate(tokenizerConfig.chat_template);
    const template = chatTemplate ?? (fromConfig === undefined ? undefined : { text: fromConfig, source: configSource });
    if (template !== undefined) this.template = new ChatTemplate(template.text, template.source);
    this.templateThinks = template?.text.includes("<think>") ?? false;
    this.toolCallFormat = template && toolCallFormat(template.text);
  }

  get hasChatTemplate(): boolean { return this.template !== undefined; }

  /** Token ids of `text`; `addSpecialTokens` adds what the tokenizer's post-processor adds (e.g. BOS). */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    try {
      return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
    } catch (e) {
      throw new ModelConfigError(`${this.source}: the tokenizer failed to encode (${(e as Error).message})`);
    }
  }

  /** The text of `ids`; special tokens (EOS, chat markers) are left out unless asked for. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return "";
    try {
      return this.tokenizer.decode(ids as number[], { skip_special_tokens: options.skipSpecialTokens ?? true });
    } catch (e) {
      throw new ModelConfigError(`${this.source}: the tokenizer failed to decode (${(e as Error).message})`);
    }
  }

  tokenId(token: string): number | undefined { return this.tokenizer.token_to_id(token); }

  /**
   * The bytes each token id below `vocabSize` stands for in decoded text (what constrained
   * decoding matches against); undefined for added and special tokens and unused ids.
   */
  tokenBytes(vocabSize: number): (Uint8Array | undefined)[] {
    const added = new Set(this.tokenizer.added_tokens.map((t: { id: number }) => t.id));
    const fromChar = new Map(byteChars().map((c, b) => [c, b]));
    const utf8 = new TextEncoder();
    const table: (Uint8Array | undefined)[] = [];
    for (let id = 0; id < vocabSize; id++) {
      const piece = added.has(id) ? undefined : this.tokenizer.id_to_token(id);
      if (piece === undefined) { table.push(undefined); continue; }
      if (this.byteLevel) {
        const bytes = [...piece].map((c) => fromChar.get(c));
        table.push(bytes.every((b) => b !== undefined) ? Uint8Array.from(bytes as number[]) : undefined);
        continue;
      }
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
      table.push(byte ? Uint8Array.of(parseInt(byte[1]!, 16)) : utf8.encode(piece.replaceAll("\u2581", " ")));
    }
    return table;
  }

  /**
   * The prompt text for `messages`, as the model was trained to see them, ending with the
   * assistant's turn opened. `variables`: more values for the template to read, as Hugging Face's
   * apply_chat_template keyword arguments (Qwen3's { enable_thinking: false }); they cannot
   * replace messages, tools, add_generation_prompt, bos_token or eos_token. `tools`: the functions
   * the model may call (OpenAI's { type: "function", function } objects), as the template's `tools`.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean; variables?: ChatTemplateVariables; tools?: readonly unknown[] } = {}): string {
    if (!this.template) throw new ModelConfigError("this model's tokenizer has no chat template (tokenizer_config.json chat_template or chat_template.jinja)");
    return this.template.render({
      ...checkTemplateVariables(options.variables), messages, ...(options.tools ? { tools: options.tools } : {}), add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: this.bosToken ?? "", eos_token: this.eosToken ?? "",
    });
  }
}


/** GPT-2's byte -> printable character map, in which byte-level BPE vocabularies are written. */
export function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const chars: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) chars.push(String.fromCodePoint(printable(b) ? b : 256 + extra++));
  return chars;
}

/** A special token as tokenizer_config.json writes it: a string or an AddedToken object. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") return (value as { content: string }).content;
  return undefined;
}

/** chat_template is a string, or a list of named templates of which "default" is the chat one. */
function pickTemplate(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => t?.name === "default") ?? value[0];
    return typeof named?.template === "string" ? named.template : undefined;
  }
  return undefined;
}
