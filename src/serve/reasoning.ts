// A thinking model's output (Qwen3, DeepSeek-R1 distills, QwQ: "<think>…</think>" before the
// answer) split as llama-server's --reasoning-format deepseek splits it: the thoughts go to
// message.reasoning_content, the rest to message.content. Streamed text arrives a token at a
// time, so a tag may come in pieces: text that could still become one is held until it is known.
// "auto" (llama-server's default): deepseek for a model whose chat template writes <think>
// (a thinking model), none for the others.

export const REASONING_FORMATS = ["auto", "none", "deepseek"] as const;
export type ReasoningFormat = (typeof REASONING_FORMATS)[number];

const OPEN = "<think>", CLOSE = "</think>";

/** The parts of a piece of output: thoughts, and answer. */
export interface ReasoningDelta { reasoning: string; content: string }

export class ReasoningSplitter {
  /** "start": nothing but whitespace yet (an opening tag may come); "thinking"; "content". */
  private state: "start" | "thinking" | "content";
  private held = "";
  /** After the closing tag: the answer's leading newlines are dropped, as llama-server does. */
  private trimAnswer = false;

  /** `opened`: the prompt already opened the thinking block (a template that ends with "<think>"). */
  constructor(opened = false) {
    this.state = opened ? "thinking" : "start";
  }

  /** Splits the next piece of output; what may still be part of a tag is held back. */
  push(text: string): ReasoningDelta {
    const out: ReasoningDelta = { reasoning: "", content: "" };
    let rest = this.held + text;
    this.held = "";
    while (rest !== "") {
      if (this.state === "start") {
        const lead = rest.length - rest.trimStart().length, body = rest.slice(lead);
        if (body.startsWith(OPEN)) { this.state = "thinking"; rest = body.slice(OPEN.length); continue; }
        if (OPEN.startsWith(body)) { this.held = rest; return out; } // "", "<", "<th", ... after whitespace
        this.state = "content";
        continue;
      }
      if (this.state === "thinking") {
        const end = rest.indexOf(CLOSE);
        if (end >= 0) {
          out.reasoning += rest.slice(0, end);
          rest = rest.slice(end + CLOSE.length);
          this.state = "content";
          this.trimAnswer = true;
          continue;
        }
        const keep = partialSuffix(rest, CLOSE);
        out.reasoning += rest.slice(0, rest.length - keep);
        this.held = rest.slice(rest.length - keep);
        return out;
      }
      if (this.trimAnswer) {
        rest = rest.replace(/^\s+/, "");
        if (rest === "") return out;
        this.trimAnswer = false;
      }
      out.content += rest;
      rest = "";
    }
    return out;
  }

  /**
   * The output has ended: what was held goes where it stood (an unclosed block's thoughts stay
   * thoughts; before any tag, whitespace or a partial "<think" is answer). Nothing is held once
   * the answer has begun.
   */
  finish(): ReasoningDelta {
    const held = this.held;
    this.held = "";
    return this.state === "thinking" ? { reasoning: held, content: "" } : { reasoning: "", content: held };
  }
}

/** Length of the longest proper prefix of `tag` that `text` ends with. */
export function partialSuffix(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}

/** Whether a rendered chat prompt leaves the model inside a thinking block (DeepSeek-R1's templates open it). */
export function promptOpensThinking(prompt: string): boolean {
  const t = prompt.trimEnd();
  return t.endsWith(OPEN);
}
