// Constrained decoding for response_format json_object / json_schema: a byte-level pushdown
// automaton for JSON (restricted by a schema) decides, at each step, which tokens can extend
// the output so far; the others are masked out before sampling. The output therefore always
// parses, and validates against the schema. Object properties come in the schema's order
// (optional ones may be left out; no others), as llama.cpp's and OpenAI's strict mode do.
//
// The token mask is found by walking a trie of the vocabulary's byte strings with the automaton,
// pruning at the first byte it refuses. Inside a string, where almost every token fits, tokens
// without a quote, backslash or control byte are taken as a block and only the others are run.
// States are immutable (a frame and its parent), so a walk shares them and a mask is cached per
// state: a string's plain bytes return the very same state object.

/** A token mask per step; accept() the token chosen; finished once the JSON value is complete. */
export interface TokenConstraint {
  allowed(): Uint8Array;
  accept(token: number): void;
  readonly finished: boolean;
}

/** The schema uses something constrained decoding does not support (HTTP 400). */
export class SchemaError extends Error {
  constructor(message: string) { super(message); this.name = "SchemaError"; }
}

type Node =
  | { kind: "any" }
  | { kind: "object"; props: { key: Uint8Array; node: Node; required: boolean }[]; open: boolean }
  | { kind: "array"; items: Node; min: number; max: number }
  | { kind: "string"; min: number; max: number }
  | { kind: "number"; integer: boolean }
  | { kind: "literal"; options: Uint8Array[] }
  | { kind: "union"; options: Node[] };

const ANY: Node = { kind: "any" };
const utf8 = new TextEncoder();
/** Whitespace bytes allowed in one gap between tokens of JSON (bounded, so output cannot idle forever). */
const MAX_WHITESPACE = 12;
/** Digits of one number. */
const MAX_NUMBER_LENGTH = 24;
const MAX_SCHEMA_DEPTH = 32;

/** Annotations that do not restrict values. */
const IGNORED = new Set(["title", "description", "$schema", "$id", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "strict"]);
const SUPPORTED: Record<string, Set<string>> = {
  object: new Set(["type", "properties", "required", "additionalProperties"]),
  array: new Set(["type", "items", "minItems", "maxItems"]),
  string: new Set(["type", "minLength", "maxLength"]), number: new Set(["type"]), integer: new Set(["type"]), boolean: new Set(["type"]), null: new Set(["type"]),
};

/** Compiles a JSON schema (the subset above) into the automaton's nodes; throws SchemaError naming what is not supported. */
export function compileSchema(schema: unknown, path = "schema", depth = 0): Node {
  if (depth > MAX_SCHEMA_DEPTH) throw new SchemaError(`${path}: nested deeper than ${MAX_SCHEMA_DEPTH} levels`);
  if (schema === true || (isObject(schema) && Object.keys(schema).every((k) => IGNORED.has(k)))) return ANY;
  if (!isObject(schema)) throw new SchemaError(`${path}: a schema must be an object`);
  const keys = Object.keys(schema).filter((k) => !IGNORED.has(k));
  if ("enum" in schema || "const" in schema) {
    const values = "const" in schema ? [schema.const] : schema.enum;
    if (!Array.isArray(values) || values.length === 0) throw new SchemaError(`${path}.enum: must be a non-empty array`);
    const extra = keys.filter((k) => k !== "enum" && k !== "const" && k !== "type");
    if (extra.length > 0) throw new SchemaError(`${path}: ${extra.join(", ")} beside enum/const is not supported`);
    return { kind: "literal", options: values.map((v) => utf8.encode(JSON.stringify(v))) };
  }
  if ("anyOf" in schema || "oneOf" in schema) {
    const word = "anyOf" in schema ? "anyOf" : "oneOf";
    const list = schema[word];
    if (!Array.isArray(list) || list.length === 0) throw new SchemaError(`${path}.${word}: must be a non-empty array`);
    if (keys.length > 1) throw new SchemaError(`${path}: ${keys.filter((k) => k !== word).join(", ")} beside ${word} is not supported`);
    return union(list.map((s, i) => compileSchema(s, `${path}.${word}[${i}]`, depth + 1)), `${path}.${word}`);
  }
  const type = schema.type;
  if (Array.isArray(type)) {
    if (type.length === 0) throw new SchemaError(`${path}.type: must not be empty`);
    // Each type takes the keywords that apply to it (maxLength the string, items the array).
    const unused = keys.filter((k) => k !== "type" && !type.some((t) => SUPPORTED[t as string]?.has(k)));
    if (unused.length > 0) throw new SchemaError(`${path}: ${unused.join(", ")} ${unused.length > 1 ? "are" : "is"} not supported for constrained decoding`);
    const only = (t: unknown) => Object.fromEntries(Object.entries(schema).filter(([k]) => IGNORED.has(k) || SUPPORTED[t as string]?.has(k)).map(([k, v]) => [k, k === "type" ? t : v]));
    return union(type.map((t, i) => compileSchema(only(t), `${path}.type[${i}]`, depth + 1)), `${path}.type`);
  }
  if (typeof type !== "string" || !SUPPORTED[type]) {
    throw new SchemaError(type === undefined ? `${path}: needs a type (or enum, const, anyOf)` : `${path}.type: '${String(type)}' is not a JSON schema type`);
  }
  const unsupported = keys.filter((k) => !SUPPORTED[type]!.has(k));
  if (unsupported.length > 0) throw new SchemaError(`${path}: ${unsupported.join(", ")} ${unsupported.length > 1 ? "are" : "is"} not supported for constrained decoding`);
  switch (type) {
    case "string": {
      const min = schema.minLength ?? 0, max = schema.maxLength ?? Infinity;
      if (!Number.isInteger(min) || (min as number) < 0 || !(max === Infinity || (Number.isInteger(max) && (max as number) >= (min as number)))) throw new SchemaError(`${path}: minLength/maxLength must be integers with 0 <= minLength <= maxLength`);
      return { kind: "string", min: min as number, max: max as number };
    }
    case "number": return { kind: "number", integer: false };
    case "integer": return { kind: "number", integer: true };
    case "boolean": return { kind: "literal", options: [utf8.encode("true"), utf8.encode("false")] };
    case "null": return { kind: "literal", options: [utf8.encode("null")] };
    case "array": {
      const min = schema.minItems ?? 0, max = schema.maxItems ?? Infinity;
      if (!Number.isInteger(min) || (min as number) < 0 || !(max === Infinity || (Number.isInteger(max) && (max as number) >= (min as number)))) throw new SchemaError(`${path}: minItems/maxItems must be integers with 0 <= minItems <= maxItems`);
      return { kind: "array", items: schema.items === undefined ? ANY : compileSchema(schema.items, `${path}.items`, depth + 1), min: min as number, max: max as number };
    }
    default: { // object
      const props = schema.properties;
      if (props !== undefined && !isObject(props)) throw new SchemaError(`${path}.properties: must be an object`);
      const required = schema.required ?? [];
      if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) throw new SchemaError(`${path}.required: must be a list of names`);
      const names = Object.keys(props ?? {});
      for (const r of required) if (!names.includes(r as string)) throw new SchemaError(`${path}.required: '${r as string}' is not among the properties`);
      const ap = schema.additionalProperties;
      if (ap !== undefined && typeof ap !== "boolean" && !(isObject(ap) && Object.keys(ap).length === 0)) throw new SchemaError(`${path}.additionalProperties: only true or false is supported`);
      return {
        kind: "object", open: names.length === 0 && ap !== false,
        props: names.map((name) => ({ key: utf8.encode(JSON.stringify(name)), node: compileSchema(props![name], `${path}.properties.${name}`, depth + 1), required: required.includes(name) })),
      };
    }
  }
}

/** Alternatives must differ in their first byte: the automaton follows one path. */
function union(options: Node[], path: string): Node {
  const seen = new Map<number, number>();
  options.forEach((node, i) => {
    for (const b of firstBytes(node)) {
      if (seen.has(b) && seen.get(b) !== i) throw new SchemaError(`${path}: alternatives that can start with the same character ('${String.fromCharCode(b)}') are not supported`);
      seen.set(b, i);
    }
  });
  return { kind: "union", options };
}

function firstBytes(node: Node): number[] {
  switch (node.kind) {
    case "any": return [...utf8.encode('{["-0123456789tfn')];
    case "object": return [0x7b];
    case "array": return [0x5b];
    case "string": return [0x22];
    case "number": return [...utf8.encode("-0123456789")];
    case "literal": return [...new Set(node.options.map((o) => o[0]!))];
    case "union": return node.options.flatMap(firstBytes);
  }
}

function isObject(x: unknown): x is Record<string, unknown> { return typeof x === "object" && x !== null && !Array.isArray(x); }

// ---- the automaton ----

type Frame =
  | { t: "end" }
  | { t: "value"; node: Node; ws: number }
  /** phase: 0 after '{', 1 after a key, 2 after ':', 3 after a value, 4 after ',', 5 reading a key */
  | { t: "object"; node: Extract<Node, { kind: "object" }>; phase: number; next: number; current: number; ws: number }
  /** phase: 0 after '[', 1 after an item, 2 after ',' */
  | { t: "array"; node: Extract<Node, { kind: "array" }>; phase: number; count: number; ws: number }
  /** count: characters so far, kept only when the schema bounds the length (else the state is the same object all along) */
  /** left: continuation bytes the current UTF-8 character still needs, the next in [lo, hi] (strings stay valid UTF-8) */
  | { t: "string"; escape: boolean; hex: number; count: number; min: number; max: number; left: number; lo: number; hi: number }
  | { t: "literal"; options: Uint8Array[]; ids: number[]; pos: number }
  /** phase: 1 after '-', 2 after a leading 0, 3 integer digits, 4 after '.', 5 fraction digits, 6 after 'e', 7 after its sign, 8 exponent digits */
  | { t: "number"; integer: boolean; phase: number; length: number };

interface State { f: Frame; up: State | null }

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46);
const PLAIN_STRING: Extract<Frame, { t: "string" }> = { t: "string", escape: false, hex: 0, count: 0, min: 0, max: Infinity, left: 0, lo: 0, hi: 0 };
const ANY_STRING: Node = { kind: "string", min: 0, max: Infinity };
/** UTF-8 bytes that start a character (not continuation bytes). */
const startsChar = (b: number) => (b & 0xc0) !== 0x80;
/** What a byte starting a UTF-8 character needs next (RFC 3629: no overlongs, surrogates or code points past U+10FFFF); undefined if it cannot start one. */
function utf8Lead(b: number): { left: number; lo: number; hi: number } | undefined {
  if (b < 0x80) return { left: 0, lo: 0, hi: 0 };
  if (b >= 0xc2 && b <= 0xdf) return { left: 1, lo: 0x80, hi: 0xbf };
  if (b >= 0xe0 && b <= 0xef) return { left: 2, lo: b === 0xe0 ? 0xa0 : 0x80, hi: b === 0xed ? 0x9f : 0xbf };
  if (b >= 0xf0 && b <= 0xf4) return { left: 3, lo: b === 0xf0 ? 0x90 : 0x80, hi: b === 0xf4 ? 0x8f : 0xbf };
  return undefined;
}
/** Whole, valid UTF-8 characters with no quote, backslash or control byte: what a string's content takes as it is. */
function plainInString(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    if (b < 0x20 || b === 0x22 || b === 0x5c) return false;
    const lead = utf8Lead(b);
    if (!lead) return false;
    for (let j = 1; j <= lead.left; j++) {
      const c = bytes[i + j];
      if (c === undefined || c < (j === 1 ? lead.lo : 0x80) || c > (j === 1 ? lead.hi : 0xbf)) return false;
    }
    i += 1 + lead.left;
  }
  return true;
}

/** Returns to the parent once a value (or a key) is complete. */
function complete(parent: State, chosen = -1): State {
  const f = parent.f;
  if (f.t === "object" && f.phase === 5) return { f: { ...f, phase: 1, current: chosen }, up: parent.up };
  return parent;
}

/** Keys that may come next: from `next` on, skipping only optional properties. */
function nextKeys(node: Extract<Node, { kind: "object" }>, next: number): number[] {
  const ids: number[] = [];
  for (let j = next; j < node.props.length; j++) {
    ids.push(j);
    if (node.props[j]!.required) break;
  }
  return ids;
}
const canClose = (node: Extract<Node, { kind: "object" }>, next: number) => node.props.slice(next).every((p) => !p.required);

function begin(node: Node, b: number, parent: State): State | null {
  switch (node.kind) {
    case "any":
      if (b === 0x7b) return begin({ kind: "object", props: [], open: true }, b, parent);
      if (b === 0x5b) return begin({ kind: "array", items: ANY, min: 0, max: Infinity }, b, parent);
      if (b === 0x22) return begin(ANY_STRING, b, parent);
      if (b === 0x2d || isDigit(b)) return begin({ kind: "number", integer: false }, b, parent);
      return begin({ kind: "literal", options: [utf8.encode("true"), utf8.encode("false"), utf8.encode("null")] }, b, parent);
    case "object": return b === 0x7b ? { f: { t: "object", node, phase: 0, next: 0, current: -1, ws: 0 }, up: parent } : null;
    case "array": return b === 0x5b ? { f: { t: "array", node, phase: 0, count: 0, ws: 0 }, up: parent } : null;
    case "string":
      if (b !== 0x22) return null;
      return { f: node.min === 0 && node.max === Infinity ? PLAIN_STRING : { ...PLAIN_STRING, min: node.min, max: node.max }, up: parent };
    case "number":
      if (b === 0x2d) return { f: { t: "number", integer: node.integer, phase: 1, length: 1 }, up: parent };
      if (isDigit(b)) return { f: { t: "number", integer: node.integer, phase: b === 0x30 ? 2 : 3, length: 1 }, up: parent };
      return null;
    case "literal": return step({ f: { t: "literal", options: node.options, ids: node.options.map((_, i) => i), pos: 0 }, up: parent }, b);
    case "union": {
      for (const option of node.options) { const s = begin(option, b, parent); if (s) return s; }
      return null;
    }
  }
}

/** The state after byte `b`, or null when `b` cannot come next. */
export function step(s: State, b: number): State | null {
  const f = s.f;
  switch (f.t) {
    case "end": return null;
    case "value":
      if (isWs(b)) return f.ws < MAX_WHITESPACE ? { f: { ...f, ws: f.ws + 1 }, up: s.up } : null;
      return begin(f.node, b, s.up!);
    case "string": {
      const bounded = f.min > 0 || f.max !== Infinity;
      if (f.left > 0) {
        if (b < f.lo || b > f.hi) return null;
        return { f: f.left === 1 && !bounded ? PLAIN_STRING : { ...f, left: f.left - 1, lo: 0x80, hi: 0xbf }, up: s.up };
      }
      if (f.hex > 0) return isHex(b) ? { f: f.hex === 1 && !bounded ? PLAIN_STRING : { ...f, hex: f.hex - 1 }, up: s.up } : null;
      if (f.escape) {
        if (b === 0x75) return { f: { ...f, escape: false, hex: 4 }, up: s.up };
        return '"\\/bfnrt'.includes(String.fromCharCode(b)) ? { f: bounded ? { ...f, escape: false } : PLAIN_STRING, up: s.up } : null;
      }
      if (b === 0x22) return f.count >= f.min ? complete(s.up!) : null;
      if (b < 0x20) return null;
      const lead = utf8Lead(b);
      if (!lead) return null;
      if (!bounded && lead.left === 0) return b === 0x5c ? { f: { ...f, escape: true }, up: s.up } : s;
      // An escape counts as one character, at its backslash; a character at its first byte.
      const count = bounded ? f.count + 1 : 0;
      if (count > f.max) return null;
      return { f: { ...f, count, escape: b === 0x5c, ...lead }, up: s.up };
    }
    case "literal": {
      const options: Uint8Array[] = [], ids: number[] = [];
      let done = -1;
      f.options.forEach((o, i) => {
        if (o.length === f.pos) done = f.ids[i]!;
        else if (o[f.pos] === b) { options.push(o); ids.push(f.ids[i]!); }
      });
      if (options.length === 0) return done >= 0 ? step(complete(s.up!, done), b) : null;
      if (options.length === 1 && options[0]!.length === f.pos + 1) return complete(s.up!, ids[0]);
      return { f: { t: "literal", options, ids, pos: f.pos + 1 }, up: s.up };
    }
    case "number": {
      // A byte after which the number cannot end ('.', 'e', a sign) also needs room for the digit
      // that must follow: at the bound it would leave no way on.
      const go = (phase: number) => {
        const room = phase === 2 || phase === 3 || phase === 5 || phase === 8 ? 1 : 2;
        return f.length + room <= MAX_NUMBER_LENGTH ? { f: { ...f, phase, length: f.length + 1 }, up: s.up } : null;
      };
      const p = f.phase;
      if (isDigit(b)) {
        if (p === 1) return go(b === 0x30 ? 2 : 3);
        if (p === 3 || p === 5 || p === 8) return go(p);
        if (p === 4) return go(5);
        if (p === 6 || p === 7) return go(8);
        if (p === 2) return null; // no leading zeros
      }
      if (!f.integer) {
        if (b === 0x2e && (p === 2 || p === 3)) return go(4);
        if ((b === 0x65 || b === 0x45) && (p === 2 || p === 3 || p === 5)) return go(6);
        if ((b === 0x2b || b === 0x2d) && p === 6) return go(7);
      }
      return numberComplete(f) ? step(complete(s.up!), b) : null;
    }
    case "array": {
      if (isWs(b)) return f.ws < MAX_WHITESPACE ? { f: { ...f, ws: f.ws + 1 }, up: s.up } : null;
      const reset = { ...f, ws: 0 };
      if (b === 0x5d && ((f.phase === 0 && f.node.min === 0) || (f.phase === 1 && f.count >= f.node.min))) return complete(s.up!);
      if (f.phase === 1) return b === 0x2c && f.count < f.node.max ? { f: { ...reset, phase: 2 }, up: s.up } : null;
      if (f.phase === 0 && f.node.max === 0) return null;
      return begin(f.node.items, b, { f: { ...reset, phase: 1, count: f.count + 1 }, up: s.up });
    }
    case "object": {
      if (isWs(b)) return f.ws < MAX_WHITESPACE ? { f: { ...f, ws: f.ws + 1 }, up: s.up } : null;
      const reset = { ...f, ws: 0 };
      const node = f.node;
      switch (f.phase) {
        case 0: case 4:
          if (b === 0x7d && f.phase === 0 && canClose(node, f.next)) return complete(s.up!);
          if (b !== 0x22) return null;
          if (node.open) return { f: PLAIN_STRING, up: { f: { ...reset, phase: 5 }, up: s.up } };
          {
            const ids = nextKeys(node, f.next);
            if (ids.length === 0) return null;
            return step({ f: { t: "literal", options: ids.map((j) => node.props[j]!.key), ids, pos: 0 }, up: { f: { ...reset, phase: 5 }, up: s.up } }, b);
          }
        case 1: return b === 0x3a ? { f: { ...reset, phase: 2 }, up: s.up } : null;
        case 2: {
          const value = node.open ? ANY : node.props[f.current]!.node;
          return begin(value, b, { f: { ...reset, phase: 3, next: f.current + 1 }, up: s.up });
        }
        case 3:
          if (b === 0x7d && canClose(node, f.next)) return complete(s.up!);
          return b === 0x2c && (node.open || nextKeys(node, f.next).length > 0) ? { f: { ...reset, phase: 4 }, up: s.up } : null;
      }
      return null;
    }
  }
}

const numberComplete = (f: Extract<Frame, { t: "number" }>) => f.phase === 2 || f.phase === 3 || f.phase === 5 || f.phase === 8;

/** The value could end here (a top-level number or literal that may also go on). */
function mayEnd(s: State): boolean {
  let cur: State | null = s;
  for (;;) {
    if (cur.f.t === "end") return true;
    if (cur.f.t === "number" && numberComplete(cur.f)) { cur = complete(cur.up!); continue; }
    if (cur.f.t === "literal" && cur.f.options.some((o) => o.length === (cur!.f as { pos: number }).pos)) { cur = complete(cur.up!); continue; }
    return false;
  }
}

/** What a vocabulary looks like to the automaton, built once per tokenizer. */
export class TokenTable {
  /** Trie over token bytes: children per node, and the tokens ending at each node. */
  private readonly children: Map<number, number>[] = [new Map()];
  private readonly ending: number[][] = [[]];
  /** Tokens with a quote, backslash, control byte or part of a UTF-8 character (the only ones a string's content can refuse). */
  readonly specialInString: number[] = [];
  readonly plainInString: Uint8Array;
  /** Characters of each plain token (for maxLength). */
  private readonly chars: Uint16Array;

  constructor(readonly bytes: readonly (Uint8Array | undefined)[], readonly endTokens: readonly number[]) {
    this.plainInString = new Uint8Array(bytes.length);
    this.chars = new Uint16Array(bytes.length);
    bytes.forEach((tb, id) => {
      if (!tb || tb.length === 0) return;
      let node = 0;
      for (const b of tb) {
        let next = this.children[node]!.get(b);
        if (next === undefined) { next = this.children.length; this.children.push(new Map()); this.ending.push([]); this.children[node]!.set(b, next); }
        node = next;
      }
      this.ending[node]!.push(id);
      this.chars[id] = Math.min(65535, tb.reduce((n, b) => n + (startsChar(b) ? 1 : 0), 0));
      if (plainInString(tb)) this.plainInString[id] = 1;
      else this.specialInString.push(id);
    });
  }

  /** Tokens whose bytes all fit after state `s`. */
  mask(s: State): Uint8Array {
    const out = new Uint8Array(this.bytes.length);
    if (s.f.t === "string" && !s.f.escape && s.f.hex === 0 && s.f.left === 0) {
      const room = s.f.max - s.f.count;
      if (room === Infinity) out.set(this.plainInString);
      else for (let id = 0; id < out.length; id++) out[id] = this.plainInString[id]! && this.chars[id]! <= room ? 1 : 0;
      for (const id of this.specialInString) if (run(s, this.bytes[id]!)) out[id] = 1;
    } else {
      const walk = (node: number, state: State) => {
        for (const [b, child] of this.children[node]!) {
          const next = step(state, b);
          if (!next) continue;
          for (const id of this.ending[child]!) out[id] = 1;
          walk(child, next);
        }
      };
      walk(0, s);
    }
    if (mayEnd(s)) for (const id of this.endTokens) out[id] = 1;
    return out;
  }
}

function run(s: State, bytes: Uint8Array): State | null {
  let cur: State | null = s;
  for (let i = 0; i < bytes.length && cur; i++) cur = step(cur, bytes[i]!);
  return cur;
}

/** One generation's constraint: the automaton's state as tokens are accepted. */
export class JsonConstraint implements TokenConstraint {
  private state: State;
  private ended = false;
  private cached?: { state: State; mask: Uint8Array };

  constructor(private readonly table: TokenTable, root: Node) {
    this.state = { f: { t: "value", node: root, ws: 0 }, up: { f: { t: "end" }, up: null } };
  }

  get finished(): boolean { return this.ended || this.state.f.t === "end"; }

  allowed(): Uint8Array {
    if (this.cached?.state !== this.state) this.cached = { state: this.state, mask: this.table.mask(this.state) };
    return this.cached.mask;
  }

  accept(token: number): void {
    if (this.table.endTokens.includes(token)) { this.ended = true; return; }
    const bytes = this.table.bytes[token];
    const next = bytes ? run(this.state, bytes) : null;
    if (!next) throw new Error(`constrained decoding: token ${token} does not continue the JSON output`);
    this.state = next;
  }
}

/** The node for response_format {type: "json_object"}: any JSON object. */
export const JSON_OBJECT: Node = { kind: "object", props: [], open: true };
export type { Node as SchemaNode };
