// Long inputs in the browser: a packed reward model scores one conversation per input in
// headless Chromium on the wasm CPU backend (Debian's chromium, WebGPU off; DEVICE=webgpu:
// on WebGPU, SwiftShader here), a fresh page per input so that each input's wasm memory is
// its own. Prints one JSON line per input: the
// reward, the load and score seconds, and the wasm memory (MB) after loading and after scoring
// (wasm memory only grows, so the second is the peak; wasm32 has at most 4096 MiB), and the
// threads it computed on.
//
//   [DEVICE=webgpu] [THREADS=n] [THREADED_BUILD=simd128] node benches/long/browser.mjs MODEL.dmoerm CONV.jsonl...
//
// THREADS: the CPU's threads (default the package's: every core; the page is cross-origin
// isolated, so the threaded build runs: Chromium has relaxed SIMD, so its relaxed-SIMD twin,
// unless THREADED_BUILD=simd128, which names the other one's .wasm with `configure`). The
// `.wasm` files the page fetched are printed (`wasm`).
//
// The model and the inputs are served from their directories with the COOP/COEP server; the
// bundle is downloaded once per page (no cache) and stays in JavaScript memory while wasm
// reads it one tensor at a time.
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { launch } from '../../bindings/npm/test/chromium.mjs';
import { serve } from '../../scripts/serve.mjs';

const [model, ...convs] = process.argv.slice(2);
if (!model || convs.length === 0) {
  console.error('usage: node benches/long/browser.mjs MODEL.dmoerm CONV.jsonl...');
  process.exit(2);
}
const server = await serve({ mounts: { '/model/': dirname(resolve(model)) } });
const mb = (bytes) => bytes / 2 ** 20;
const device = process.env.DEVICE === 'webgpu' ? 'webgpu' : 'cpu';
const threads = process.env.THREADS ? Number(process.env.THREADS) : undefined;
const simd128 = process.env.THREADED_BUILD === 'simd128';
// REPEAT=n: the input scored n times in the page, the later times printed too (`again_seconds`:
// the first call compiles a GPU's kernels)
const repeat = Math.max(1, Number(process.env.REPEAT ?? 1));
try {
  for (const conv of convs) {
    const input = JSON.parse(readFileSync(conv, 'utf8').split('\n')[0]);
    const browser = await launch(device);
    try {
      const page = await browser.newPage();
      page.on('console', (m) => m.type() === 'error' && console.error(`[chromium] ${m.text()}`));
      const wasm = [];
      page.on('request', (r) => r.url().endsWith('.wasm') && wasm.push(new URL(r.url()).pathname));
      await page.goto(`${server.url}/bindings/npm/test/harness.html`);
      await page.waitForFunction(() => window.harnessReady === true);
      const r = await page.evaluate(
        async ({ url, input, device, threads, simd128, repeat }) => {
          const { RewardModel, configure, wasmMemoryBytes } = window.dmoerm;
          if (simd128) configure({ threadedWasmUrl: '/bindings/npm/wasm-threads/dmoerm_wasm_bg.wasm' });
          let t = performance.now();
          const rm = await RewardModel.load(url, { device, threads, cache: false });
          const loadSeconds = (performance.now() - t) / 1000;
          const loaded = await wasmMemoryBytes();
          t = performance.now();
          const score = await rm.score(input);
          const seconds = (performance.now() - t) / 1000;
          const again = [];
          for (let i = 1; i < repeat; i++) {
            t = performance.now();
            await rm.score(input);
            again.push((performance.now() - t) / 1000);
          }
          const peak = await wasmMemoryBytes();
          return { device: rm.device, threads: rm.threads, score, loadSeconds, seconds, again, loaded, peak };
        },
        { url: `/model/${basename(model)}`, input, device, threads, simd128, repeat },
      );
      console.log(
        JSON.stringify({
          input: basename(conv),
          device: r.device,
          threads: r.threads,
          truncated: r.score.truncated,
          reward: r.score.reward,
          load_seconds: r.loadSeconds,
          seconds: r.seconds,
          ...(repeat > 1 && { again_seconds: r.again }),
          wasm_loaded_mb: mb(r.loaded),
          wasm_peak_mb: mb(r.peak),
          wasm: [...new Set(wasm)],
        }),
      );
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
}
