// A model's chat template: Jinja from a downloaded folder, so untrusted code. It runs on
// @huggingface/jinja's interpreter under a budget: a bounded number of evaluation steps, of
// characters produced along the way, and of range() items, so that a hostile template ends with
// a clear error instead of taking the process down.
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { ModelConfigError } from "./config.ts";

export class TemplateError extends ModelConfigError {
  override name = "TemplateError";
}

export interface TemplateLimits {
  /** Evaluation steps (expressions and statements) per render. */
  steps: number;
  /** Characters of every string value produced during a render, summed (bounds time and memory). */
  chars: number;
  /** Items one range() call may make. */
  rangeItems: number;
}

/** Far above what real chat templates use (~50 steps per message), and a second or so at worst. */
export const DEFAULT_TEMPLATE_LIMITS: TemplateLimits = { steps: 300_000, chars: 64 << 20, rangeItems: 100_000 };

/** Longest template text accepted (real ones are a few KiB). */
const MAX_TEMPLATE_CHARS = 1 << 20;

type Value = { type: string; value: unknown };

export class ChatTemplate {
  private readonly template: Template;

  /** `source` names the file the template came from, for messages. */
  constructor(text: string, readonly source: string, private readonly limits: TemplateLimits = DEFAULT_TEMPLATE_LIMITS) {
    if (text.length > MAX_TEMPLATE_CHARS) throw new TemplateError(`${source}: the chat template is ${text.length} characters, over the ${MAX_TEMPLATE_CHARS} accepted`);
    try {
      this.template = new Template(text);
    } catch (e) {
      throw new TemplateError(`${source}: the chat template does not parse (${(e as Error).message})`);
    }
  }

  /** Renders with `variables` (messages, add_generation_prompt, bos_token, ...) within the limits. */
  render(variables: Record<string, unknown>): string {
    const { steps, chars, rangeItems } = this.limits;
    // The content the caller passes in may be long: the character budget grows with it.
    const charBudget = chars + 8 * JSON.stringify(variables).length;
    const env = new Environment();
    const globals: Record<string, unknown> = {
      false: false, true: true, none: null, False: false, True: true, None: null,
      raise_exception: (message: unknown) => { throw new TemplateError(`${this.source}: the chat template raised: ${String(message)}`); },
      range: (start: number, stop?: number, step = 1) => boundedRange(start, stop, step, rangeItems, this.source),
      strftime_now: (format: string) => strftime(new Date(), String(format)),
      ...variables,
    };
    for (const [name, value] of Object.entries(globals)) env.set(name, value);
    const source = this.source;
    let stepsLeft = steps, charsLeft = charBudget;
    // evaluate() is where every node goes through (the interpreter's own methods call it).
    const Base = Interpreter as unknown as new (env: Environment) => { run(program: unknown): Value; evaluate(node: unknown, scope: Environment): Value };
    class BudgetedInterpreter extends Base {
      override evaluate(node: unknown, scope: Environment): Value {
        if (--stepsLeft < 0) throw new TemplateError(`${source}: the chat template ran over ${steps} evaluation steps`);
        const result = super.evaluate(node, scope);
        // A loop runs over an array or object that went through here: charging its items as
        // steps bounds every loop's iterations, nested ones included, and arrays built by doubling.
        if (result?.value instanceof Array) stepsLeft -= result.value.length;
        else if (result?.value instanceof Map) stepsLeft -= result.value.size;
        if (stepsLeft < 0) throw new TemplateError(`${source}: the chat template ran over ${steps} evaluation steps`);
        if (typeof result?.value === "string" && (charsLeft -= result.value.length) < 0) {
          throw new TemplateError(`${source}: the chat template produced over ${charBudget} characters`);
        }
        return result;
      }
    }
    try {
      return String(new BudgetedInterpreter(env).run(this.template.parsed).value);
    } catch (e) {
      if (e instanceof TemplateError) throw e;
      throw new TemplateError(`${source}: the chat template failed on these messages (${(e as Error).message})`);
    }
  }
}

function boundedRange(start: number, stop: number | undefined, step: number, most: number, source: string): number[] {
  if (stop === undefined) { stop = start; start = 0; }
  for (const [name, v] of [["start", start], ["stop", stop], ["step", step]] as const) {
    if (!Number.isInteger(v)) throw new TemplateError(`${source}: range() ${name} must be an integer, got ${String(v)}`);
  }
  if (step === 0) throw new TemplateError(`${source}: range() step must not be zero`);
  const count = Math.max(0, Math.ceil((stop - start) / step));
  if (count > most) throw new TemplateError(`${source}: range() of ${count} items is over the chat template's limit of ${most}`);
  return Array.from({ length: count }, (_, i) => start + i * step);
}

/** Python's strftime for the codes chat templates use (Llama 3.x: "%d %b %Y"). */
function strftime(date: Date, format: string): string {
  const pad2 = (n: number) => String(n).padStart(2, "0");
  const month = (style: "long" | "short") => new Intl.DateTimeFormat("en-US", { month: style }).format(date);
  const day = (style: "long" | "short") => new Intl.DateTimeFormat("en-US", { weekday: style }).format(date);
  return format.replace(/%[YymdbBaAHMS%]/g, (code) => {
    switch (code) {
      case "%Y": return String(date.getFullYear());
      case "%y": return pad2(date.getFullYear() % 100);
      case "%m": return pad2(date.getMonth() + 1);
      case "%d": return pad2(date.getDate());
      case "%b": return month("short");
      case "%B": return month("long");
      case "%a": return day("short");
      case "%A": return day("long");
      case "%H": return pad2(date.getHours());
      case "%M": return pad2(date.getMinutes());
      case "%S": return pad2(date.getSeconds());
      default: return "%";
    }
  });
}

/** Values a chat template may read besides the messages (JSON values: a request's chat_template_kwargs). */
export type ChatTemplateVariables = Record<string, unknown>;
const TEMPLATE_OWN = new Set(["messages", "tools", "add_generation_prompt", "bos_token", "eos_token"]);

/** `variables` if it is a plain object that names none of the template's own values; else a RangeError. */
export function checkTemplateVariables(variables: unknown): ChatTemplateVariables {
  if (variables === undefined) return {};
  if (variables === null || typeof variables !== "object" || Array.isArray(variables)) throw new RangeError(`chat template variables must be an object, got ${variables === null ? "null" : Array.isArray(variables) ? "an array" : typeof variables}`);
  const own = Object.keys(variables).find((k) => TEMPLATE_OWN.has(k));
  if (own) throw new RangeError(`chat template variables cannot set ${own}, the template's own`);
  return variables as ChatTemplateVariables;
}

/**
 * The tool-call syntax a chat template teaches (llama-server's formats of these names): "hermes",
 * <tool_call>{"name", "arguments"}</tool_call> blocks (Qwen2.5, Qwen3, SmolLM3, Hermes); "llama3",
 * one {"name", "parameters"} object as the reply (Llama 3.1-3.3). Undefined: a template that never
 * reads `tools`, or a syntax not parsed here.
 */
export type ToolCallFormat = "hermes" | "llama3";
export function toolCallFormat(template: string): ToolCallFormat | undefined {
  if (!/\btools\b/.test(template)) return undefined;
  if (template.includes("<tool_call>")) return "hermes";
  // Llama 3.x: its header tokens, and tool results in an "ipython" turn.
  if (template.includes("<|start_header_id|>") && template.includes("ipython")) return "llama3";
  return undefined;
}
