// Tool calls (OpenAI's `tools`, `tool_calls`, `tool` messages) as llama-server makes them: the
// request's tools go to the chat template as its `tools` variable, and the model's output is split
// into content and calls by the syntax its template teaches it (llama-server's formats of the same
// names): "hermes", `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Qwen2.5,
// Qwen3, SmolLM3, Hermes); "llama3", one JSON object {"name": ..., "parameters": {...}} as the
// whole reply (Llama 3.1 / 3.2 / 3.3). Streamed text arrives a token at a time, so a tag or an
// object may come in pieces: text that could still become a call is held until it is known.

import { partialSuffix } from "./reasoning.ts";

import type { ToolCallFormat } from "../model/chat-template.ts";

/** A tool the request offers (OpenAI's { type: "function", function: {...} }). */
export interface ToolSpec { type: "function"; function: { name: string; description?: string; parameters?: Record<string, unknown> } }

/** A call the model made: the tool's name and its arguments as JSON text. */
export interface ToolCall { name: string; arguments: string }

const OPEN = "<tool_call>", CLOSE = "</tool_call>";

/** Splits output into content and tool calls, as it streams. */
export class ToolCallSplitter {
  /** hermes: "content" or inside a "call" block; llama3: "start" (nothing but whitespace yet), "object" (a reply that began with "{"), "content". */
  private state: "start" | "content" | "call" | "object";
  private held = "";
  private readonly calls: ToolCall[] = [];

  /** `opened`: the prompt already opened a call block (hermes: a forced call's <tool_call>). */
  constructor(private readonly format: ToolCallFormat, private readonly names: ReadonlySet<string>, opened = false) {
    this.state = opened ? "call" : format === "llama3" ? "start" : "content";
  }

  /** The content of the next piece of output that is known not to be part of a call. */
  push(text: string): string {
    let out = "", rest = this.held + text;
    this.held = "";
    while (rest !== "") {
      if (this.state === "start") {
        const body = rest.trimStart();
        if (body === "") { this.held = rest; return out; }
        this.state = body.startsWith("{") ? "object" : "content";
        continue;
      }
      if (this.state === "object") { this.held = rest; return out; } // the whole reply decides
      if (this.state === "call") {
        const end = rest.indexOf(CLOSE);
        if (end < 0) { this.held = rest; return out; }
        const block = rest.slice(0, end);
        if (!this.take(block)) out += OPEN + block + CLOSE; // not a call after all: it was text
        rest = rest.slice(end + CLOSE.length);
        this.state = "content";
        continue;
      }
      // content (hermes: up to a block's opening tag; llama3: everything)
      if (this.format === "llama3") { out += rest; return out; }
      const at = rest.indexOf(OPEN);
      if (at >= 0) {
        out += this.calls.length > 0 ? rest.slice(0, at).trim() : rest.slice(0, at);
        rest = rest.slice(at + OPEN.length);
        this.state = "call";
        continue;
      }
      const keep = partialSuffix(rest, OPEN);
      // Between calls, whitespace is held: it joins nothing.
      const free = rest.slice(0, rest.length - keep);
      if (this.calls.length > 0 && free.trim() === "") { this.held = rest; return out; }
      out += free;
      this.held = rest.slice(rest.length - keep);
      return out;
    }
    return out;
  }

  /** The output has ended: what was held (a block left open is a call if it parses), and the calls made. */
  finish(): { content: string; calls: ToolCall[] } {
    const held = this.held;
    this.held = "";
    let content = "";
    if (this.state === "object") { if (!this.take(held)) content = held; }
    else if (this.state === "call") { if (!this.take(held)) content = OPEN + held; }
    else content = this.calls.length > 0 ? held.trim() : held;
    return { content, calls: this.calls };
  }

  /** A call's JSON ({"name", "arguments"} or Llama's "parameters") naming a tool of the request: taken, true; else false. */
  private take(text: string): boolean {
    let v: unknown;
    try { v = JSON.parse(text.trim()); } catch { return false; }
    if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
    const { name, arguments: args, parameters } = v as Record<string, unknown>;
    const given = args ?? parameters ?? {};
    if (typeof name !== "string" || !this.names.has(name)) return false;
    if (typeof given === "string") {
      try { JSON.parse(given); } catch { return false; }
      this.calls.push({ name, arguments: given });
    } else if (given !== null && typeof given === "object" && !Array.isArray(given)) this.calls.push({ name, arguments: JSON.stringify(given) });
    else return false;
    return true;
  }
}
