import assert from "node:assert/strict";
import { Ajv } from "ajv";
import fc from "fast-check";
import { compileSchema, JSON_OBJECT, JsonConstraint, SchemaError, TokenTable, type SchemaNode } from "../src/serve/json-constraint.ts";
import { TextTokenizer } from "../src/model/tokenizer.ts";
import { byteLevelTokenizer, BYTE_TOKENIZER_VOCAB } from "../src/model/synthetic.ts";

const utf8 = new TextEncoder();
const EOS = 2;

/** A vocabulary of single bytes plus multi-byte JSON-ish pieces, to exercise the trie walk and the string fast path. */
function vocabulary(): (Uint8Array | undefined)[] {
  const pieces = ['{"', '":', '","', '"}', "true", "false", "null", "12", "-0.5e+3", ' "a', 'b\\"c', "\\u00e9", "\n  ", "ab", "é", "[1,", "]}", '"name"', '{"name": "', "\x01"];
  return [undefined, undefined, undefined, ...Array.from({ length: 256 }, (_, b) => Uint8Array.of(b)), ...pieces.map((p) => utf8.encode(p))];
}
const table = new TokenTable(vocabulary(), [EOS]);

/** Accepts `text` byte token by byte token; true when every byte was allowed. */
function accepts(node: SchemaNode, text: string): { ok: boolean; finished: boolean } {
  const c = new JsonConstraint(table, node);
  for (const b of utf8.encode(text)) {
    if (!c.allowed()[3 + b]) return { ok: false, finished: false };
    c.accept(3 + b);
  }
  return { ok: true, finished: c.finished || c.allowed()[EOS] === 1 };
}

describe("constrained decoding: JSON automaton and token masks", () => {
  const person = compileSchema({
    type: "object", additionalProperties: false, required: ["name", "age"],
    properties: { name: { type: "string", maxLength: 5 }, age: { type: "integer" }, tags: { type: "array", items: { enum: ["x", "y", 3] }, maxItems: 2 }, ok: { type: ["boolean", "null"] } },
  });

  it("accepts exactly the documents the schema allows (properties in order, optional ones skippable)", () => {
    const good = ['{"name":"Bo","age":3}', '{ "name" : "éé", "age": -12, "tags": ["x", 3], "ok": null }', '{"name":"a\\"b","age":0,"ok":true}', '{"name":"\\u00e9","age":7,"tags":[]}'];
    for (const doc of good) assert.deepEqual(accepts(person, doc), { ok: true, finished: true }, doc);
    const bad = ['{"age":3,"name":"Bo"}', '{"name":"Bo"}', '{"name":"toolong","age":1}', '{"name":"Bo","age":1.5}', '{"name":"Bo","age":01}',
      '{"name":"Bo","age":1,"tags":["z"]}', '{"name":"Bo","age":1,"tags":["x","y","x"]}', '{"name":"Bo","age":1,"extra":1}', '{"name":"Bo","age":1,}', '{"name":"B\no","age":1}', '["name"]'];
    for (const doc of bad) {
      const r = accepts(person, doc);
      assert.ok(!r.ok || !r.finished, `refused: ${JSON.stringify(doc)}`);
    }
  });

  it("json_object takes any object, and nothing after it", () => {
    assert.deepEqual(accepts(JSON_OBJECT, '{"a": [1, {"b": null}, "c", -0.5e+3, true], "d": {}}'), { ok: true, finished: true });
    assert.equal(accepts(JSON_OBJECT, '{"a": 1} x').ok, false);
    assert.equal(accepts(JSON_OBJECT, "[1]").ok, false);
    assert.equal(accepts(JSON_OBJECT, '{"a": tru}').ok, false);
  });

  it("a top-level number may end (EOS allowed) or go on; whitespace is bounded", () => {
    const num = compileSchema({ type: "number" });
    assert.deepEqual(accepts(num, "12.5"), { ok: true, finished: true });
    assert.deepEqual(accepts(num, "12."), { ok: true, finished: false });
    assert.equal(accepts(JSON_OBJECT, `{${" ".repeat(13)}}`).ok, false);
    assert.equal(accepts(JSON_OBJECT, `{${" ".repeat(12)}}`).ok, true);
  });

  it("a number at its length bound never leaves the output without a way on ('.', 'e' or a sign need room for a digit)", () => {
    // (Fuzzing found "99999999999999999999999E": 24 characters, the exponent's digit past the bound, every token masked.)
    const num = compileSchema({ type: "number" });
    for (const [node, before] of [[num, ""], [JSON_OBJECT, '{"a": ']] as const) {
      for (let n = 1; n <= 24; n++) {
        for (const tail of ["", ".", "e", "E+", "e-", ".5", ".5e", "e5"]) {
          const text = before + "9".repeat(n) + tail, c = new JsonConstraint(table, node);
          let ok = true;
          for (const b of utf8.encode(text)) { if (!c.allowed()[3 + b]) { ok = false; break; } c.accept(3 + b); }
          if (ok) assert.ok(c.allowed().some((v) => v === 1), `${JSON.stringify(text)}: accepted, then no token and no EOS allowed`);
        }
      }
    }
    assert.equal(accepts(num, "9".repeat(23) + "e").ok, false, "an exponent marker with no room for its digit");
    assert.deepEqual(accepts(num, "9".repeat(22) + "e5"), { ok: true, finished: true });
  });

  it("each mask equals running every token's bytes through the automaton (trie walk and string fast path)", () => {
    const bytes = vocabulary();
    const schema = compileSchema({ type: "object", properties: { s: { type: "string", minLength: 1, maxLength: 3 }, n: { type: "number" }, a: { type: "array", items: {} } } });
    for (const node of [person, JSON_OBJECT, schema]) {
      // A random walk through allowed tokens; at every step compare the mask with brute force.
      fc.assert(fc.property(fc.array(fc.nat(), { minLength: 1, maxLength: 40 }), (choices) => {
        const c = new JsonConstraint(table, node);
        for (const pick of choices) {
          if (c.finished) break;
          const mask = c.allowed();
          for (let id = 3; id < bytes.length; id++) {
            const probe = new JsonConstraint(table, node);
            Object.assign(probe, { state: (c as unknown as { state: unknown }).state });
            let ok = true;
            try { probe.accept(id); } catch { ok = false; }
            assert.equal(mask[id], ok ? 1 : 0, `token ${JSON.stringify(new TextDecoder().decode(bytes[id]))}`);
          }
          const allowed = [...mask.keys()].filter((id) => mask[id] && id !== EOS);
          if (allowed.length === 0) break;
          c.accept(allowed[pick % allowed.length]!);
        }
      }), { numRuns: 40, seed: 7 });
    }
  });

  it("random walks that end are valid JSON that validates against the schema (ajv)", () => {
    const ajv = new Ajv({ strict: false });
    const schemas = [
      { type: "object", properties: { name: { type: "string", maxLength: 4 }, age: { type: "integer" }, pets: { type: "array", items: { enum: ["cat", "dog"] }, maxItems: 3 } }, required: ["name", "age", "pets"], additionalProperties: false },
      { type: "object", properties: { v: { anyOf: [{ type: "number" }, { type: "string", maxLength: 2 }, { type: "null" }] }, w: { const: "k" } }, required: ["v", "w"] },
      { type: "array", items: { type: "object", properties: { b: { type: "boolean" } }, required: ["b"] }, minItems: 1, maxItems: 2 },
    ];
    for (const schema of schemas) {
      const node = compileSchema(schema), validate = ajv.compile(schema);
      let finished = 0;
      fc.assert(fc.property(fc.array(fc.nat(), { minLength: 200, maxLength: 200 }), (choices) => {
        const c = new JsonConstraint(table, node);
        const out: number[] = [];
        for (const pick of choices) {
          const mask = c.allowed();
          // Prefer short structural tokens now and then so that walks end.
          const allowed = [...mask.keys()].filter((id) => mask[id]);
          if (allowed.includes(EOS) && pick % 3 === 0) break;
          const id = allowed[pick % allowed.length]!;
          if (id === EOS) break;
          c.accept(id);
          out.push(...vocabulary()[id]!);
          if (c.finished) break;
        }
        if (!c.finished && !c.allowed()[EOS]) return;
        finished++;
        const value = JSON.parse(new TextDecoder().decode(Uint8Array.from(out)));
        assert.ok(validate(value), `${JSON.stringify(value)}: ${ajv.errorsText(validate.errors)}`);
      }), { numRuns: 150, seed: 11 });
      assert.ok(finished > 0, "some walks finished");
    }
  });

  it("refuses schema keywords it cannot enforce, naming them", () => {
    assert.throws(() => compileSchema({ type: "string", pattern: "^a" }), (e: unknown) => e instanceof SchemaError && /pattern is not supported/.test(e.message));
    assert.throws(() => compileSchema({ type: "object", properties: { a: { type: "number", minimum: 0 } } }), /properties\.a: minimum/);
    assert.throws(() => compileSchema({ $ref: "#/x" }), /needs a type/);
    assert.throws(() => compileSchema({ anyOf: [{ type: "integer" }, { type: "number" }] }), /same character/);
    assert.throws(() => compileSchema({ type: "object", required: ["b"], properties: { a: {} } }), /'b' is not among the properties/);
    let deep: Record<string, unknown> = { type: "string" };
    for (let i = 0; i < 40; i++) deep = { type: "array", items: deep };
    assert.throws(() => compileSchema(deep), /deeper than 32/);
  });

  it("token bytes of a byte-level tokenizer are the bytes each token decodes to", () => {
    const files = byteLevelTokenizer();
    const tok = new TextTokenizer(JSON.parse(files["tokenizer.json"]), JSON.parse(files["tokenizer_config.json"]));
    const bytes = tok.tokenBytes(BYTE_TOKENIZER_VOCAB);
    assert.equal(bytes[0], undefined, "special tokens have none");
    for (const text of [" the", "he", "a", "\n", "é"]) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      const joined = ids.flatMap((id) => [...bytes[id]!]);
      assert.deepEqual(joined, [...utf8.encode(text)], text);
    }
  });
});
