// Score time of a packed bundle (default: models/default/model.dmoerm) in Node (wasm CPU)
// and in headless Chromium with WebGPU (SwiftShader here) and with the wasm CPU backend.
//
//   node bindings/npm/bench/score-time.mjs [MODEL] [REPEATS]
//
// Prints the median of REPEATS (default 5) after one warm-up: one score (prompt + response,
// ~30 tokens) and rank of 4 candidates. A benchmark, not a test: it asserts nothing.
import { relative } from 'node:path';
import { launch } from '../test/chromium.mjs';
import { RewardModel } from '../src/node.js';
import { serve, repoRoot } from '../../../scripts/serve.mjs';

const model = process.argv[2] ?? `${repoRoot}/models/default/model.dmoerm`;
const repeats = Number(process.argv[3] ?? 5);
const prompt = 'What does the word "harbor" mean?';
const response = 'A sheltered part of a body of water deep enough to give anchorage to ships.';
const candidates = [response, 'harbor harbor harbor harbor', 'A small furry animal.', 'I do not care, look it up.'];

// Runs in Node and in the page alike.
async function measure({ RewardModel, url, device, repeats, prompt, response, candidates }) {
  const t0 = performance.now();
  const rm = await RewardModel.load(url, { device, cache: false });
  const load = performance.now() - t0;
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const time = async (fn) => {
    await fn();
    const xs = [];
    for (let i = 0; i < repeats; i++) {
      const s = performance.now();
      await fn();
      xs.push(performance.now() - s);
    }
    return median(xs);
  };
  const score = await time(() => rm.score({ prompt, response }));
  const rank = await time(() => rm.rank(prompt, candidates));
  const used = rm.device;
  rm.dispose();
  return { device: used, load, score, rank };
}

const rows = [];
rows.push({ where: 'node', ...(await measure({ RewardModel, url: model, device: 'cpu', repeats, prompt, response, candidates })) });
const server = await serve();
const url = `/${relative(repoRoot, model)}`;
for (const [where, device] of [
  ['chromium webgpu (swiftshader)', 'webgpu'],
  ['chromium cpu (wasm)', 'cpu'],
]) {
  const browser = await launch(device);
  const page = await browser.newPage();
  await page.goto(`${server.url}/bindings/npm/test/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(
    async ({ src, ...rest }) => {
      const measure = new Function(`return (${src})`)();
      return measure({ RewardModel: window.dmoerm.RewardModel, ...rest });
    },
    { src: measure.toString(), url, device, repeats, prompt, response, candidates },
  );
  rows.push({ where, ...r });
  await browser.close();
}
await server.close();
console.log(`model ${relative(repoRoot, model)}, median of ${repeats} after one warm-up`);
console.log('where                              device   load ms   score ms   rank-4 ms');
for (const r of rows) {
  console.log(`${r.where.padEnd(34)} ${r.device.padEnd(7)} ${r.load.toFixed(0).padStart(8)} ${r.score.toFixed(0).padStart(10)} ${r.rank.toFixed(0).padStart(11)}`);
}
