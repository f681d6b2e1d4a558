// The page: starts the Web Worker, shows progress, and draws decode time against context length
// for each KV-head count as the points arrive.
import type { FromWorker, Point } from "./worker.ts";

const contexts = [256, 512, 1024, 2048, 4096];
const kvHeads = [32, 8, 1];
const colors: Record<number, string> = { 32: "#d62728", 8: "#1f77b4", 1: "#2ca02c" };
const names: Record<number, string> = { 32: "MHA (32 KV heads)", 8: "GQA-8", 1: "MQA" };
const points: Point[] = [];
const progress = document.getElementById("progress") as HTMLProgressElement;
const status = document.getElementById("status")!;
const canvas = document.getElementById("chart") as HTMLCanvasElement;
const load = document.getElementById("load") as HTMLProgressElement;
const genStatus = document.getElementById("gen-status")!;
const generation = document.getElementById("generation")!;
const result = window as unknown as { exampleResult: unknown };

function draw(): void {
  const ctx = canvas.getContext("2d")!;
  const [w, h, left, bottom] = [canvas.width, canvas.height, 72, 40];
  ctx.clearRect(0, 0, w, h);
  const maxMs = Math.max(0.001, ...points.map((p) => p.ms));
  const x = (c: number) => left + ((w - left - 20) * Math.log2(c / contexts[0]!)) / Math.log2(contexts.at(-1)! / contexts[0]!);
  const y = (ms: number) => h - bottom - ((h - bottom - 20) * ms) / maxMs;
  ctx.strokeStyle = "#333"; ctx.fillStyle = "#333"; ctx.font = "12px system-ui";
  ctx.beginPath(); ctx.moveTo(left, 10); ctx.lineTo(left, h - bottom); ctx.lineTo(w - 10, h - bottom); ctx.stroke();
  for (const c of contexts) ctx.fillText(String(c), x(c) - 12, h - bottom + 16);
  ctx.fillText("context (tokens)", w / 2 - 40, h - 6);
  for (let i = 0; i <= 4; i++) ctx.fillText(((maxMs * i) / 4).toFixed(2), 26, y((maxMs * i) / 4) + 4);
  ctx.save(); ctx.translate(14, h / 2 + 30); ctx.rotate(-Math.PI / 2); ctx.fillText("ms / token", 0, 0); ctx.restore();
  kvHeads.forEach((kv, i) => {
    const series = points.filter((p) => p.kvHeads === kv);
    ctx.strokeStyle = ctx.fillStyle = colors[kv]!;
    ctx.beginPath();
    series.forEach((p, j) => (j ? ctx.lineTo(x(p.context), y(p.ms)) : ctx.moveTo(x(p.context), y(p.ms))));
    ctx.stroke();
    for (const p of series) ctx.fillRect(x(p.context) - 3, y(p.ms) - 3, 6, 6);
    ctx.fillText(names[kv]!, left + 10, 20 + 16 * i);
  });
}

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
worker.onmessage = (e: MessageEvent<FromWorker>) => {
  const m = e.data;
  if (m.type === "start") { progress.max = m.total; status.textContent = `${m.build} kernels: measuring…`; }
  if (m.type === "point") { points.push(m.point); progress.value = points.length; draw(); }
  if (m.type === "done") status.textContent = `done: ${points.length} points`;
  if (m.type === "load") { load.value = m.fraction; genStatus.textContent = `loading the model: ${m.phase} ${(100 * m.fraction).toFixed(0)}%`; }
  if (m.type === "token") { generation.textContent += m.text; genStatus.textContent = "generating…"; }
  if (m.type === "generated") {
    genStatus.textContent = `${m.tokens.length} tokens at ${m.decodeTokensPerSecond.toFixed(0)} tokens/s`;
    result.exampleResult = { points, generation: { text: m.text, tokens: m.tokens, shown: generation.textContent } };
  }
  if (m.type === "error") { status.textContent = `error: ${m.message}`; result.exampleResult = { error: m.message }; }
};
worker.postMessage({ base: new URL("/", location.href).href, contexts, kvHeads });
