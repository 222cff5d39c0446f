// Drives Debian's chromium (playwright-core, never a downloaded browser) against a running ComfyUI with the
// real frontend: loads every example workflow, then queues the tiny workflow, waits for the svg2.stats
// heatmap and the SVG2 Compare chart, reads their pixels and saves a screenshot.
// Usage: node svg2_ui.mjs <server url> <workflows dir> <tiny workflow json> <screenshot png>
// Prints one JSON object (the measurements) on the last line of stdout.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, workflowsDir, tinyPath, screenshotPath] = process.argv.slice(2);
const userDataDir = mkdtempSync(join(tmpdir(), "svg2-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1600, height: 900 },
  deviceScaleFactor: 1,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { console_errors: [], other_errors: [], workflows: {} };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  // Errors raised by this pack's extension (the frontend's own network noise is not ours to judge).
  const ours = (text) => text.includes("/extensions/ComfyUI-SVG2/");
  page.on("pageerror", (error) => {
    if (ours(`${error.stack}`)) result.console_errors.push(String(error.stack));
  });
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const where = `${message.location()?.url ?? ""}:${message.location()?.lineNumber ?? ""}`;
    if (ours(where) || ours(message.text())) result.console_errors.push(message.text());
    else result.other_errors.push(`${message.text()} @ ${where}`);
  });
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.comfyAPI?.app?.app?.vueAppReady && window.comfyAPI.app.app.canvas?.graph
    && window.comfyAPI.app.app.extensions?.some((e) => e.name === "svg2.sparse_attention"), null, { timeout: 120000 });
  await page.waitForLoadState("networkidle");
  // Loads a workflow; the frontend may still be restoring its start-up workflow, so check and retry.
  const load = async (workflow) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const loaded = await page.evaluate(async (wf) => {
        const app = window.comfyAPI.app.app;
        await app.loadGraphData(wf, true, true, null);
        await new Promise((resolve) => setTimeout(resolve, 300));
        return (app.graph.nodes ?? app.graph._nodes).length === wf.nodes.length;
      }, workflow);
      if (loaded) return;
    }
    throw new Error("the frontend did not keep the loaded workflow");
  };

  result.frontend_version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  await page.evaluate(async () => {
    await window.comfyAPI.app.app.extensionManager?.setting?.set("Comfy.Minimap.Visible", false);
  });

  // -- every example workflow loads with known node types; the SVG2 nodes get the preset and the canvas --
  for (const file of readdirSync(workflowsDir).filter((f) => f.endsWith(".json")).sort()) {
    const workflow = JSON.parse(readFileSync(join(workflowsDir, file), "utf8"));
    await load(workflow);
    result.workflows[file] = await page.evaluate(() => {
      const app = window.comfyAPI.app.app;
      const known = window.LiteGraph?.registered_node_types ?? {};
      const nodes = app.graph.nodes ?? app.graph._nodes;
      return {
        missing: nodes.filter((n) => !(n.type in known)).map((n) => n.type),
        svg2: nodes.filter((n) => n.comfyClass === "SVG2SparseAttention").map((n) => ({
          id: n.id,
          preset: n.widgets.find((w) => w.name === "preset")?.value,
          values: Object.fromEntries(n.widgets.filter((w) => typeof w.value !== "object")
            .map((w) => [w.name, w.value])),
          canvas: n.svg2Canvas instanceof HTMLCanvasElement,
          serialized: n.serialize().widgets_values,
        })),
      };
    });
    await page.keyboard.press("Escape");
  }

  // -- the preset widget sets the sliders --
  result.preset = await page.evaluate(() => {
    const app = window.comfyAPI.app.app;
    const node = (app.graph.nodes ?? app.graph._nodes).find((n) => n.comfyClass === "SVG2SparseAttention");
    const preset = node.widgets.find((w) => w.name === "preset");
    const read = () => Object.fromEntries(["top_p", "num_q_clusters", "num_k_clusters"]
      .map((k) => [k, node.widgets.find((w) => w.name === k).value]));
    preset.value = "turbo";
    preset.callback("turbo");
    const turbo = read();
    const top = node.widgets.find((w) => w.name === "top_p");
    top.value = 0.8;
    top.callback(0.8);
    return { turbo, after_edit: preset.value };
  });

  // -- the payload parser on hand-made payloads: trailing dense steps, fallbacks, hostile values --
  result.parsed = await page.evaluate(async () => {
    const { normalizeStats, drawStats } = await import("/extensions/ComfyUI-SVG2/svg2.js");
    const stats = normalizeStats({
      node: "1", model: "wan", steps: 6, sparse_calls: 4, dense_calls: 9, mean_density: 0.3,
      dense_reasons: { "cross-attention": 5, "<img src=x onerror=alert(1)>": 3, "warm-up step": 1 },
      density: { steps: [2, 3], layers: [1, 2], values: [[0.2, "0.5"], [0.4, null]] },
      svg2_time_ms: 1500,
    });
    const canvas = document.createElement("canvas");
    canvas.style.width = "300px";
    canvas.style.height = "160px";
    document.body.appendChild(canvas);
    const drawn = drawStats(canvas, stats);
    canvas.remove();
    const hostile = normalizeStats({ density: { steps: [1e9], layers: [1e9], values: [[1]] }, steps: "x" });
    return { stats, drawn, hostile_cells: hostile.steps * hostile.layers,
      injected: document.querySelectorAll("img[src=x]").length };
  });

  // -- queue the tiny workflow and wait for the stats event and the compare result --
  const tiny = JSON.parse(readFileSync(tinyPath, "utf8"));
  await load(tiny);
  await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0, 1));
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => {
    const app = window.comfyAPI.app.app;
    const nodes = app.graph.nodes ?? app.graph._nodes;
    return nodes.some((n) => n.svg2Stats) && nodes.some((n) => n.svg2Compare);
  }, null, { timeout: 240000, polling: 250 });
  await page.waitForTimeout(500);

  result.run = await page.evaluate(() => {
    const app = window.comfyAPI.app.app;
    const nodes = app.graph.nodes ?? app.graph._nodes;
    const svg2 = nodes.find((n) => n.comfyClass === "SVG2SparseAttention");
    const compare = nodes.find((n) => n.comfyClass === "SVG2Compare");
    // Pixels of the heatmap area: how many differ from the background, and how many distinct colours.
    const pixels = (canvas) => {
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      let lit = 0;
      const colours = new Set();
      for (let i = 0; i < data.length; i += 4) {
        const rgb = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
        if (rgb !== 0x1b1b1b) lit += 1;
        colours.add(rgb);
      }
      return { width: canvas.width, height: canvas.height, lit, colours: colours.size };
    };
    return {
      stats: svg2.svg2Stats,
      drawn: svg2.svg2Drawn,
      heatmap_pixels: pixels(svg2.svg2Canvas),
      compare: compare.svg2Compare,
      compare_pixels: pixels(compare.svg2CompareCanvas),
      node_size: svg2.size,
      innerHTML_has_payload: document.body.innerHTML.includes("dense_reasons"),
    };
  });

  // -- the view scales with the node: grow the node, the canvas grows and is redrawn --
  result.resized = await page.evaluate(async () => {
    const app = window.comfyAPI.app.app;
    const node = (app.graph.nodes ?? app.graph._nodes).find((n) => n.comfyClass === "SVG2SparseAttention");
    const size = [...node.size];
    const before = [node.svg2Canvas.clientWidth, node.svg2Canvas.clientHeight];
    node.setSize([size[0] + 160, size[1] + 120]);
    app.graph.setDirtyCanvas(true, true);
    await new Promise((resolve) => setTimeout(resolve, 600));
    const after = [node.svg2Canvas.clientWidth, node.svg2Canvas.clientHeight];
    node.setSize(size);
    app.graph.setDirtyCanvas(true, true);
    await new Promise((resolve) => setTimeout(resolve, 300));
    return { before, after, cells: node.svg2Drawn.cells };
  });

  // -- screenshot: the SVG2 node, the samplers and the compare node at 100% --
  const clip = await page.evaluate(async () => {
    const app = window.comfyAPI.app.app;
    const nodes = app.graph.nodes ?? app.graph._nodes;
    const shown = nodes.filter((n) => ["SVG2SparseAttention", "SVG2Compare", "KSampler"].includes(n.comfyClass));
    const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    const x0 = Math.min(...shown.map((n) => n.pos[0])) - 20;
    const y0 = Math.min(...shown.map((n) => n.pos[1])) - title - 20;
    const x1 = Math.max(...shown.map((n) => n.pos[0] + n.size[0])) + 20;
    const y1 = Math.max(...shown.map((n) => n.pos[1] + n.size[1])) + 20;
    const ds = app.canvas.ds;
    const rect = app.canvas.canvas.getBoundingClientRect();
    ds.scale = 1.0;
    ds.offset = [(rect.width - (x1 - x0)) / 2 - x0, (rect.height - (y1 - y0)) / 2 - y0];
    app.graph.setDirtyCanvas(true, true);
    await new Promise((resolve) => setTimeout(resolve, 800));
    const left = rect.left + (x0 + ds.offset[0]) * ds.scale;
    const top = rect.top + (y0 + ds.offset[1]) * ds.scale;
    return { x: Math.max(0, left), y: Math.max(0, top), width: Math.min(rect.width, (x1 - x0) * ds.scale),
      height: Math.min(rect.height, (y1 - y0) * ds.scale) };
  });
  await page.screenshot({ path: screenshotPath, clip });

  // -- the same in the Vue node renderer ("Nodes 2.0"): a new run redraws the canvas inside the DOM widget --
  await page.evaluate(async () => {
    await window.comfyAPI.app.app.extensionManager.setting.set("Comfy.VueNodes.Enabled", true);
  });
  await page.waitForTimeout(500);
  tiny.nodes.filter((n) => n.type === "KSampler").forEach((n) => { n.widgets_values[0] = 4242; });
  await load(tiny);
  await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0, 1));
  await page.waitForFunction(() => {
    const nodes = window.comfyAPI.app.app.graph.nodes;
    return nodes.some((n) => n.svg2Stats) && nodes.some((n) => n.svg2Compare);
  }, null, { timeout: 240000, polling: 250 });
  await page.waitForTimeout(800);
  result.vue = await page.evaluate(() => {
    const node = window.comfyAPI.app.app.graph.nodes.find((n) => n.comfyClass === "SVG2SparseAttention");
    const canvas = node.svg2Canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) if (((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]) !== 0x1b1b1b) lit += 1;
    return { connected: canvas.isConnected, width: canvas.clientWidth, height: canvas.clientHeight,
      cells: node.svg2Drawn.cells, lit };
  });
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
result.other_errors = result.other_errors.filter((e) => !/Content Security Policy|status of 404/.test(e)).slice(0, 20);
console.log(JSON.stringify(result));
