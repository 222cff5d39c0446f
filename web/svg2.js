// SVG2 frontend extension: the live density view and the preset widget on "SVG2 Sparse Attention",
// and the per-frame PSNR/SSIM chart on "SVG2 Compare".
// Everything received from the server is drawn on a <canvas> as numbers or canvas text; nothing received
// is ever inserted into the page as HTML.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SVG2_NODE = "SVG2SparseAttention";
const COMPARE_NODE = "SVG2Compare";
const STATS_EVENT = "svg2.stats";

// Preset -> slider values. "balanced" is the official 720p script setting; see README "Presets".
export const PRESETS = {
  quality: { top_p: 0.95, num_q_clusters: 400, num_k_clusters: 1000 },
  balanced: { top_p: 0.9, num_q_clusters: 300, num_k_clusters: 1000 },
  turbo: { top_p: 0.75, num_q_clusters: 100, num_k_clusters: 500 },
};
const CUSTOM = "custom";

const COLORMAP = [
  // viridis, 0 -> 1
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];

function densityColor(d) {
  const x = Math.min(1, Math.max(0, d)) * (COLORMAP.length - 1);
  const i = Math.min(COLORMAP.length - 2, Math.floor(x));
  const t = x - i;
  const c = COLORMAP[i].map((v, k) => Math.round(v + t * (COLORMAP[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

const MAX_CELLS = 1 << 16;
// Dense calls by design (the settings or the model ask for them); every other dense reason is a fallback
// worth a look in the log. The same list as BY_DESIGN_DENSE_REASONS in nodes/stats.py (a test keeps them equal).
const BY_DESIGN_DENSE = new Set(["cross-attention", "warm-up step", "last step", "dense layer",
  "not video self-attention", "not video self-attention (text refiner)", "top_p 1.0 keeps every block"]);

// Reduces a svg2.stats payload (DEVELOPERS.md, "Node: svg2.stats event") to plain numbers. The payload lists
// only the (step, layer) cells that ran sparse; the grid here spans every step of the sampler call and
// layer 0..max, and cells without a sparse call are null (kept dense).
export function normalizeStats(detail) {
  const num = (v) => (finite(v) && v >= 0 ? v : 0);
  const index = (xs) => (Array.isArray(xs) ? xs.map((x) => (Number.isInteger(x) && x >= 0 ? x : -1)) : []);
  const steps = index(detail?.density?.steps);
  const layers = index(detail?.density?.layers);
  const values = Array.isArray(detail?.density?.values) ? detail.density.values : [];
  const numSteps = Math.max(steps.length ? Math.max(...steps) + 1 : 0,
    Number.isInteger(detail?.steps) && detail.steps > 0 ? detail.steps : 0);
  const numLayers = layers.length ? Math.max(...layers) + 1 : 0;
  const density = [];
  if (numLayers > 0 && numSteps * numLayers <= MAX_CELLS) {
    for (let s = 0; s < numSteps; s++) density.push(new Array(numLayers).fill(null));
    steps.forEach((step, i) => {
      const row = Array.isArray(values[i]) ? values[i] : [];
      layers.forEach((layer, j) => {
        if (step >= 0 && layer >= 0 && finite(row[j])) density[step][layer] = Math.min(1, Math.max(0, row[j]));
      });
    });
  }
  let fallback = 0;
  let fallbackReason = null;
  const reasons = detail?.dense_reasons && typeof detail.dense_reasons === "object" ? detail.dense_reasons : {};
  for (const [reason, count] of Object.entries(reasons)) {
    if (BY_DESIGN_DENSE.has(reason) || !finite(count)) continue;
    fallback += count;
    if (fallbackReason === null) fallbackReason = String(reason).slice(0, 80);
  }
  return {
    density,
    steps: density.length,
    layers: density.length ? numLayers : 0,
    meanDensity: finite(detail?.mean_density) ? detail.mean_density : null,
    sparse: num(detail?.sparse_calls),
    dense: num(detail?.dense_calls),
    fallback,
    fallbackReason,
    seconds: finite(detail?.svg2_time_ms) ? detail.svg2_time_ms / 1000 : null,
    served: detail?.model !== null,
  };
}

// Sizes the canvas to its box (device pixels), clears it to the background and sets the font size to
// width / charsPerLine, clamped to 9-13 px.
function beginDraw(canvas, charsPerLine) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth);
  const height = Math.max(1, canvas.clientHeight);
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const font = Math.max(9, Math.min(13, width / charsPerLine));
  ctx.font = `${font}px sans-serif`;
  ctx.textBaseline = "top";
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, width, height);
  return { ctx, width, height, font };
}

function drawText(ctx, text, x, y, color = "#ddd", align = "left") {
  ctx.fillStyle = color;
  ctx.textAlign = align;
  ctx.fillText(text, x, y);
}

function formatSeconds(s) {
  return s >= 100 ? `${s.toFixed(0)} s` : s >= 1 ? `${s.toFixed(2)} s` : `${(s * 1000).toFixed(1)} ms`;
}

export function drawStats(canvas, stats) {
  const { ctx, width, height, font } = beginDraw(canvas, 28);
  if (!stats) {
    drawText(ctx, "SVG2: queue a prompt to see density per step and layer", 6, 6, "#888");
    return { cells: 0 };
  }
  const pct = (d) => `${(100 * d).toFixed(1)}%`;
  const line1 = `density ${stats.meanDensity === null ? "-" : pct(stats.meanDensity)}` +
    `   sparse ${stats.sparse}   dense ${stats.dense}   fallback ${stats.fallback}`;
  const line2 = `SVG2 attention ${stats.seconds === null ? "-" : formatSeconds(stats.seconds)}` +
    `   ${stats.steps} steps x ${stats.layers} layers`;
  drawText(ctx, line1, 6, 4, stats.fallback > 0 ? "#f0b040" : "#ddd");
  drawText(ctx, line2, 6, 6 + font * 1.2, "#aaa");
  let top = 10 + font * 2.4;
  if (stats.fallbackReason !== null) {
    drawText(ctx, `fallback ${stats.fallback}: ${stats.fallbackReason}`, 6, top - 2, "#f0b040");
    top += font * 1.2;
  }

  // -- heatmap: x = sampling step, y = layer (0 at the top); grey = kept dense --
  const legend = 14;
  const left = 6 + font * 1.4;
  const right = width - 6;
  const bottom = height - font * 1.4 - legend - 6;
  const mapW = right - left;
  const mapH = bottom - top;
  if (stats.steps === 0 || stats.layers === 0 || mapW < 4 || mapH < 4) {
    drawText(ctx, stats.served ? "no sparse attention call in this run" : "model not served by SVG2 (see the log)",
      6, top, "#888");
    return { cells: 0 };
  }
  const cellW = mapW / stats.steps;
  const cellH = mapH / stats.layers;
  let cells = 0;
  stats.density.forEach((row, step) => {
    for (let layer = 0; layer < stats.layers; layer++) {
      const d = row[layer];
      ctx.fillStyle = d === null || d === undefined ? "#555" : densityColor(d);
      ctx.fillRect(left + step * cellW, top + layer * cellH, Math.ceil(cellW), Math.ceil(cellH));
      cells += 1;
    }
  });
  ctx.strokeStyle = "#666";
  ctx.strokeRect(left - 0.5, top - 0.5, mapW + 1, mapH + 1);
  ctx.save();
  ctx.translate(4, top + mapH / 2);
  ctx.rotate(-Math.PI / 2);
  drawText(ctx, "layer", 0, 0, "#aaa", "center");
  ctx.restore();
  drawText(ctx, "0", left, bottom + 2, "#aaa");
  drawText(ctx, "step", left + mapW / 2, bottom + 2, "#aaa", "center");
  drawText(ctx, String(stats.steps - 1), right, bottom + 2, "#aaa", "right");

  // -- legend: density colour bar 0..100% and the dense swatch --
  const ly = height - legend - 2;
  const barW = Math.max(20, mapW * 0.5);
  for (let i = 0; i < barW; i++) {
    ctx.fillStyle = densityColor(i / barW);
    ctx.fillRect(left + i, ly, 1.5, legend - 4);
  }
  drawText(ctx, "0", left - 2, ly, "#aaa", "right");
  drawText(ctx, "100%", left + barW + 3, ly, "#aaa");
  const sx = left + barW + font * 3.5;
  ctx.fillStyle = "#555";
  ctx.fillRect(sx, ly, legend - 4, legend - 4);
  drawText(ctx, "dense", sx + legend, ly, "#aaa");
  return { cells };
}

export function drawCompare(canvas, result) {
  const { ctx, width, height, font } = beginDraw(canvas, 26);
  if (!result || result.psnr.length === 0) {
    drawText(ctx, "PSNR / SSIM appear here after a run", 6, 6, "#888");
    return;
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  drawText(ctx, `PSNR ${mean(result.psnr).toFixed(2)} dB   SSIM ${mean(result.ssim).toFixed(4)}   ` +
    `${result.psnr.length} frames`, 6, 4);
  // -- per-frame PSNR (orange, 10..50 dB) and SSIM (cyan, 0..1) --
  const top = 8 + font * 1.4;
  const left = 6;
  const w = width - 12;
  const h = height - top - 6;
  if (h < 8) return;
  ctx.strokeStyle = "#444";
  ctx.strokeRect(left, top, w, h);
  const plot = (values, lo, hi, color) => {
    ctx.strokeStyle = color;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = left + (values.length === 1 ? w / 2 : (i / (values.length - 1)) * w);
      const y = top + h - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo) * h;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  const psnrLo = Math.floor(Math.min(20, ...result.psnr) / 10) * 10;
  const psnrHi = Math.ceil(Math.max(40, ...result.psnr) / 10) * 10;
  const ssimLo = Math.floor(Math.min(0.5, ...result.ssim) * 10) / 10;
  plot(result.psnr, psnrLo, psnrHi, "#f0a030");
  plot(result.ssim, ssimLo, 1, "#30c0f0");
  const labelY = top + h - font - 2;
  drawText(ctx, `PSNR ${psnrLo}-${psnrHi} dB`, left + 3, labelY, "#f0a030");
  drawText(ctx, `SSIM ${ssimLo.toFixed(1)}-1`, left + w - 3, labelY, "#30c0f0", "right");
}

// A canvas inside a DOM widget: follows the node's size in both the classic and the Vue node renderer.
function addCanvasWidget(node, name, minHeight, redraw) {
  const canvas = document.createElement("canvas");
  canvas.style.width = "100%";
  canvas.style.height = "100%";
  canvas.style.display = "block";
  const widget = node.addDOMWidget(name, "svg2_canvas", canvas, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => minHeight,
    getValue: () => "",
    setValue: () => {},
  });
  widget.serialize = false;
  const observer = new ResizeObserver(() => redraw());
  observer.observe(canvas);
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    observer.disconnect();
    return onRemoved?.apply(this, arguments);
  };
  return canvas;
}

function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function matchingPreset(node) {
  for (const [name, values] of Object.entries(PRESETS)) {
    const same = Object.entries(values).every(([key, v]) => {
      const w = findWidget(node, key);
      return w && Math.abs(Number(w.value) - v) < 1e-6;
    });
    if (same) return name;
  }
  return CUSTOM;
}

export function applyPreset(node, name) {
  const values = PRESETS[name];
  if (!values) return false;
  for (const [key, v] of Object.entries(values)) {
    const w = findWidget(node, key);
    if (w) w.value = v;
  }
  node.setDirtyCanvas?.(true, true);
  node.graph?.setDirtyCanvas?.(true, true);
  return true;
}

function setupSVG2Node(node) {
  node.svg2Stats = null;
  node.svg2Drawn = { cells: 0 };
  const preset = node.addWidget("combo", "preset", matchingPreset(node), (value) => {
    if (value !== CUSTOM) applyPreset(node, value);
  }, { values: [CUSTOM, ...Object.keys(PRESETS)], serialize: false });
  preset.serialize = false;
  preset.tooltip = "quality: top_p 0.95, 400/1000 clusters; balanced: 0.9, 300/1000 (official 720p); " +
    "turbo: 0.75, 100/500. Sets the sliders; 'custom' means they match no preset.";
  for (const key of Object.keys(PRESETS.balanced)) {
    const w = findWidget(node, key);
    if (!w) continue;
    const callback = w.callback;
    w.callback = function () {
      const result = callback?.apply(this, arguments);
      preset.value = matchingPreset(node);
      return result;
    };
  }
  node.svg2Canvas = addCanvasWidget(node, "svg2_stats", 180, () => {
    node.svg2Drawn = drawStats(node.svg2Canvas, node.svg2Stats);
  });
  const onConfigure = node.onConfigure;
  node.onConfigure = function () {
    const result = onConfigure?.apply(this, arguments);
    preset.value = matchingPreset(node);
    return result;
  };
  const [w, h] = node.size;
  node.setSize([Math.max(w, 340), Math.max(h, node.computeSize()[1])]);
}

function setupCompareNode(node) {
  node.svg2Compare = null;
  node.svg2CompareCanvas = addCanvasWidget(node, "svg2_compare", 90, () => {
    drawCompare(node.svg2CompareCanvas, node.svg2Compare);
  });
  const onExecuted = node.onExecuted;
  node.onExecuted = function (output) {
    onExecuted?.apply(this, arguments);
    const numbers = (xs) => (Array.isArray(xs) ? xs.filter(finite) : []);
    node.svg2Compare = { psnr: numbers(output?.psnr), ssim: numbers(output?.ssim) };
    drawCompare(node.svg2CompareCanvas, node.svg2Compare);
  };
}

// The stats event names the node by its execution id ("12", or "5:12" inside a subgraph).
function findNode(id) {
  let graph = app.rootGraph ?? app.graph;
  const parts = String(id).split(":");
  for (let i = 0; i < parts.length; i++) {
    const node = graph?.getNodeById?.(Number(parts[i])) ?? graph?.getNodeById?.(parts[i]);
    if (!node) return null;
    if (i === parts.length - 1) return node;
    graph = node.subgraph;
  }
  return null;
}

app.registerExtension({
  name: "svg2.sparse_attention",
  setup() {
    api.addEventListener(STATS_EVENT, ({ detail }) => {
      const node = findNode(detail?.node);
      if (!node || !node.svg2Canvas) return;
      node.svg2Stats = normalizeStats(detail);
      node.svg2Drawn = drawStats(node.svg2Canvas, node.svg2Stats);
      node.setDirtyCanvas?.(true, true);
    });
  },
  nodeCreated(node) {
    if (node.comfyClass === SVG2_NODE) setupSVG2Node(node);
    else if (node.comfyClass === COMPARE_NODE) setupCompareNode(node);
  },
});
