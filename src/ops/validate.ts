// Argument checks shared by the ops: each names the op and the argument it rejects.

export function positiveInt(op: string, name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${op}: ${name} must be an integer, got ${describe(value)}`);
  }
  if (value <= 0) throw new RangeError(`${op}: ${name} must be positive, got ${value}`);
  return value;
}

export function float32Array(op: string, name: string, value: unknown): Float32Array {
  if (!(value instanceof Float32Array)) throw new TypeError(`${op}: ${name} must be a Float32Array, got ${describe(value)}`);
  return value;
}

/** Number of rows of `rowLength` floats in a buffer of `length` floats (no partial row, none empty). */
export function rowsOf(op: string, name: string, length: number, rowLength: number, shape: string): number {
  if (length === 0) throw new RangeError(`${op}: ${name} is empty; expected ${shape}`);
  if (length % rowLength !== 0) {
    throw new RangeError(`${op}: ${name} has ${length} elements, not a multiple of ${rowLength}; expected ${shape}`);
  }
  return length / rowLength;
}

export function describe(value: unknown): string {
  if (value === null) return "null";
  if (ArrayBuffer.isView(value)) return value.constructor.name;
  if (typeof value === "object") return (value as object).constructor?.name ?? "object";
  return `${typeof value} ${String(value)}`;
}
