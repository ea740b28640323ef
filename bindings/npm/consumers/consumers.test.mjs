// The npm package as users get it: the tarball `npm pack` makes, installed into apps built the
// ways people build them (apps/): Vite (dev server, and production build + preview), webpack 5,
// a page with an import map and no bundler, Node (ES modules and CommonJS) and TypeScript.
// Each browser app runs in headless Chromium on the CPU on one thread, on threads (a page sent
// with COOP/COEP), on a plain page (threads fall back to 1) and on WebGPU (SwiftShader); the
// default model's scores must be the native CLI's. Then the tarball's contents, size, publint
// and arethetypeswrong.
//
//   cd bindings/npm/consumers && npm ci --ignore-scripts && node --test consumers.test.mjs
// (after ./bindings/npm/build.sh and a native build of the CLI, as scripts/test.sh runs them)
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from '../test/chromium.mjs';
import { dmoermBin, root } from '../test/fixtures.mjs';
import { serve } from '../../../scripts/serve.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const bin = (name) => join(here, 'node_modules/.bin', name);
const run = (cmd, args, options = {}) => execFileSync(cmd, args, { cwd: here, encoding: 'utf8', ...options });

/** The tarball's budget: 5.4 MB when this test was written (both wasm builds, gzipped); the
 * threaded build's relaxed-SIMD twin added 1.5 MB. */
const PACKED_BUDGET = 7_500_000;

// The default model and what the native CLI scores on its model card's examples.
const MODEL = join(root, 'models/default/model.dmoerm');
const INPUTS = [
  { prompt: 'What does the word "harbor" mean?', response: '"harbor" means a sheltered port where ships can take on or discharge cargo.' },
  { prompt: 'Tell me a saying about patience.', response: 'Seriously? Whatever. Patience is a virtue.' },
];
// the wasm CPU path and the native CLI compute this int8 bundle's products with integer sums
// that agree bit for bit; the f32 operations around them differ in their last bits, which
// moves a few activation codes (test/node.test.mjs: rewards at most 0.028 apart over 80
// responses). WebGPU is compared with the native GPU (lavapipe), as test/browser.test.mjs does.
const CPU_TOLERANCE = 0.03;
const GPU_TOLERANCE = 1e-4;

function cliScores(device) {
  const dir = mkdtempSync(join(tmpdir(), 'dmoerm-consumers-'));
  writeFileSync(join(dir, 'in.jsonl'), INPUTS.map((i) => JSON.stringify(i)).join('\n'));
  run(dmoermBin(), ['score', '--model', MODEL, '--device', device, '--input', join(dir, 'in.jsonl'), '--output', join(dir, 'out.jsonl')]);
  return readFileSync(join(dir, 'out.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function checkScores(got, want, tolerance, what) {
  assert.equal(got.length, want.length, `${what}: scores`);
  for (const [i, w] of want.entries()) {
    assert.equal(got[i].task, w.task, `${what} ${i}: task`);
    assert.ok(Math.abs(got[i].reward - w.reward) <= tolerance, `${what} ${i}: reward ${got[i].reward} vs the CLI's ${w.reward}`);
    for (const [k, v] of Object.entries(w.capabilities)) {
      assert.ok(Math.abs(got[i].capabilities[k] - v) <= tolerance * 10, `${what} ${i}: ${k} ${got[i].capabilities[k]} vs ${v}`);
    }
  }
}

// Packs the package as `npm publish` would and installs the tarball into this folder, as a user
// installs it (the tools in package.json come from `npm ci`).
const packDir = mkdtempSync(join(tmpdir(), 'dmoerm-pack-'));
const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: join(here, '..') }))[0];
const tarball = join(packDir, packed.filename);
run('npm', ['install', '--no-save', '--ignore-scripts', '--no-audit', '--no-fund', tarball]);
const want = { cpu: cliScores('cpu'), webgpu: cliScores('gpu') };

// the model where every app serves it: /models/model.dmoerm
const MODEL_URL = '/models/model.dmoerm';
const modelDir = join(root, 'models/default');

test('the tarball holds what runs, within its size budget', () => {
  const files = packed.files.map((f) => f.path).sort();
  const allowed = /^(package\.json|README\.md|index\.d\.ts|src\/[\w-]+\.js|wasm(-threads(-relaxed)?)?\/(dmoerm_wasm(_bg)?\.(js|wasm|d\.ts)|dmoerm_wasm_bg\.wasm\.d\.ts|snippets\/[\w-]+\/[\w-]+\.js))$/;
  assert.deepEqual(files.filter((f) => !allowed.test(f)), [], 'files that do not run');
  for (const needed of ['src/index.js', 'src/node.js', 'src/webgpu-worker.js', 'src/threads-worker.js', 'src/pool-worker.js', 'src/threads-relaxed-worker.js', 'src/pool-relaxed-worker.js', 'wasm/dmoerm_wasm_bg.wasm', 'wasm-threads/dmoerm_wasm_bg.wasm', 'wasm-threads-relaxed/dmoerm_wasm_bg.wasm']) {
    assert.ok(files.includes(needed), `${needed} is in the tarball`);
  }
  console.log(`# tarball: ${packed.size} bytes packed, ${packed.unpackedSize} unpacked, ${files.length} files`);
  assert.ok(packed.size <= PACKED_BUDGET, `${packed.size} bytes packed, over the budget of ${PACKED_BUDGET}`);
});

test('publint and arethetypeswrong find nothing wrong', () => {
  console.log(run(bin('publint'), ['run', join(here, 'node_modules/dmoerm'), '--strict']));
  // every resolution mode: node10, node16 (from CJS and ESM) and bundler. The package is ES
  // modules only: a CommonJS importer gets it through require(esm) (Node 20.19, 22.12 on),
  // which the rule `cjs-resolves-to-esm` would report as an error.
  console.log(run(bin('attw'), [tarball, '--format', 'table-flipped', '--ignore-rules', 'cjs-resolves-to-esm']));
});

test('TypeScript: the types compile under moduleResolution bundler and node16', () => {
  for (const config of ['tsconfig.bundler.json', 'tsconfig.node16.json']) {
    run(bin('tsc'), ['-p', join(here, 'apps/types', config)]);
  }
});

test('Node: ES modules and CommonJS score as the CLI', () => {
  const inputs = JSON.stringify(INPUTS);
  for (const [script, args, threads] of [['score.mjs', [], 2], ['score.mjs', ['1'], 1], ['score.cjs', [], 2]]) {
    const out = JSON.parse(run(process.execPath, [join(here, 'apps/node', script), MODEL, inputs, ...args]));
    assert.deepEqual([out.device, out.threads], ['cpu', threads], script);
    checkScores(out.scores, want.cpu, CPU_TOLERANCE, `${script} ${args}`);
  }
});

// A browser app: how to start its servers, isolated (COOP/COEP) or not; resolves to the page's
// URL and `close`. `cdn`: another origin that serves the installed package (CORS on), as a CDN
// would.
const APPS = {
  // `vite` (the dev server): the package comes from its dependency pre-bundling
  'vite dev': async (isolated) => {
    const { createServer } = await import('vite');
    const server = await withIsolation(isolated, () => createServer({ root: join(here, 'apps/vite'), logLevel: 'warn', server: { port: 0, host: '127.0.0.1' } }));
    await server.listen();
    return { page: server.resolvedUrls.local[0], close: () => server.close() };
  },
  // `vite build` then `vite preview`
  'vite build': async (isolated) => {
    const { preview } = await import('vite');
    const server = await withIsolation(isolated, () => preview({ root: join(here, 'apps/vite'), logLevel: 'warn', preview: { port: 0, host: '127.0.0.1' } }));
    return { page: server.resolvedUrls.local[0], close: () => server.close() };
  },
  // webpack's production build, served as static files
  webpack: async (isolated) => {
    const server = await serve({ root: join(here, 'apps/webpack'), mounts: { '/models/': modelDir }, isolated });
    return { page: `${server.url}/`, close: server.close };
  },
  // no bundler: the page's import map names the installed package's browser entry
  'no bundler': async (isolated) => {
    const server = await serve({ root: here, mounts: { '/models/': modelDir }, isolated });
    return { page: `${server.url}/apps/static/`, close: server.close };
  },
  // no bundler, the package on another origin: its Workers are started through modules that
  // import their scripts (a browser starts a Worker only on a same-origin script)
  'no bundler, the package on a CDN': async (isolated) => {
    const [site, cdn] = await Promise.all([serve({ root: here, mounts: { '/models/': modelDir }, isolated }), cdnServer()]);
    return { page: `${site.url}/apps/static/cdn.html?cdn=${cdn.url}`, close: () => Promise.all([site.close(), cdn.close()]), cdn: cdn.url };
  },
};

// The installed package on another origin (localhost against the pages' 127.0.0.1).
async function cdnServer() {
  const cdn = await serve({ root: here, cors: true });
  return { ...cdn, url: cdn.url.replace('127.0.0.1', 'localhost') };
}

// Vite reads apps/vite/vite.config.js, which sends COOP/COEP unless DMOERM_ISOLATED=0.
async function withIsolation(isolated, start) {
  process.env.DMOERM_ISOLATED = isolated ? '1' : '0';
  try {
    return await start();
  } finally {
    delete process.env.DMOERM_ISOLATED;
  }
}

// The apps' builds, once.
test('the apps build, and no browser bundle imports a node: module', async () => {
  const vite = join(here, 'apps/vite');
  rmSync(join(vite, 'public'), { recursive: true, force: true });
  mkdirSync(join(vite, 'public/models'), { recursive: true });
  symlinkSync(MODEL, join(vite, 'public/models/model.dmoerm'));
  const { build } = await import('vite');
  await build({ root: vite, logLevel: 'warn', build: { emptyOutDir: true } });
  const webpack = (await import('webpack')).default;
  const config = (await import('./apps/webpack/webpack.config.js')).default;
  const stats = await new Promise((ok, fail) => webpack(config, (e, s) => (e ? fail(e) : ok(s))));
  assert.ok(!stats.hasErrors(), stats.toString('errors-only'));
  for (const dist of [join(vite, 'dist'), join(here, 'apps/webpack/dist')]) {
    const files = readdirSync(dist, { recursive: true }).map(String);
    // the three wasm builds were emitted (single-thread, threaded and its relaxed-SIMD twin),
    // and the Workers' scripts
    assert.equal(files.filter((f) => f.endsWith('.wasm')).length, 3, `${dist}: ${files}`);
    for (const f of files.filter((f) => f.endsWith('.js'))) {
      assert.doesNotMatch(readFileSync(join(dist, f), 'utf8'), /["']node:/, `${dist}/${f} imports a node: module`);
    }
    const sizes = files.filter((f) => statSync(join(dist, f)).isFile()).map((f) => `${f} ${statSync(join(dist, f)).size}`);
    console.log(`# ${dist}:\n#   ${sizes.join('\n#   ')}`);
  }
});

// Each browser app in each mode: [browser flags, page isolated, threads option, what it must
// use]. On the CPU the isolated page computes on every core (navigator.hardwareConcurrency).
const RUNS = [
  ['cpu', true, 1, { device: 'cpu', threads: 1, isolated: true }],
  ['cpu', true, undefined, { device: 'cpu', threads: 'cores', isolated: true }],
  ['cpu', false, undefined, { device: 'cpu', threads: 1, isolated: false }],
  ['webgpu', true, undefined, { device: 'webgpu', threads: 1, isolated: true }],
];

/**
 * Runs apps/page.js at `page` in `browser` with `params`; resolves to its result and the
 * URLs of the `.wasm` files the page and its Workers fetched.
 */
async function runPage(browser, page, params, what) {
  const tab = await browser.newPage();
  const errors = [];
  const wasm = [];
  tab.on('pageerror', (e) => errors.push(e.message));
  tab.on('request', (r) => r.url().endsWith('.wasm') && wasm.push(r.url()));
  const result = await pageResult(tab, `${page}${page.includes('?') ? '&' : '?'}${new URLSearchParams(params)}`);
  assert.ok(!result.error, `${what}: ${result.error}`);
  assert.deepEqual(errors, [], `${what}: page errors`);
  result.cores = await tab.evaluate(() => navigator.hardwareConcurrency);
  await tab.close();
  return { ...result, wasm };
}

for (const [name, start] of Object.entries(APPS)) {
  test(`${name}: the default model scores as the CLI, on the CPU (1 thread, threads, a plain page) and on WebGPU`, async (t) => {
    const browsers = {};
    const servers = {};
    t.after(async () => {
      for (const b of Object.values(browsers)) await b.close();
      for (const s of Object.values(servers)) await s.close();
    });
    for (const [mode, isolated, threads, expect] of RUNS) {
      browsers[mode] ??= await launch(mode);
      servers[isolated] ??= await start(isolated);
      const device = mode === 'webgpu' ? 'webgpu' : 'cpu';
      // SwiftShader takes seconds a score: one input there
      const inputs = mode === 'webgpu' ? INPUTS.slice(0, 1) : INPUTS;
      const what = `${name}, ${mode}, ${isolated ? 'isolated' : 'plain'} page, threads ${threads ?? 'default'}`;
      const params = { device, model: MODEL_URL, inputs: JSON.stringify(inputs), ...(threads && { threads: String(threads) }) };
      const result = await runPage(browsers[mode], servers[isolated].page, params, what);
      assert.deepEqual(
        { device: result.device, threads: result.threads, isolated: result.isolated },
        { ...expect, threads: expect.threads === 'cores' ? result.cores : expect.threads },
        what,
      );
      checkScores(result.scores, want[device].slice(0, inputs.length), device === 'webgpu' ? GPU_TOLERANCE : CPU_TOLERANCE, what);
      // the wasm came from the package's own origin, or the CDN's
      const origin = new URL(servers[isolated].cdn ?? servers[isolated].page).origin;
      assert.ok(result.wasm.length > 0 && result.wasm.every((u) => u.startsWith(origin)), `${what}: wasm from ${result.wasm}`);
    }
  });
}

test('vite build: with configure(), the app loads the wasm builds from a CDN instead of its own copies', async (t) => {
  const { preview } = await import('vite');
  const [server, cdn, browser] = await Promise.all([
    preview({ root: join(here, 'apps/vite'), logLevel: 'warn', preview: { port: 0, host: '127.0.0.1' } }),
    cdnServer(),
    launch('cpu'),
  ]);
  t.after(() => Promise.all([browser.close(), server.close(), cdn.close()]));
  const wasm = `${cdn.url}/node_modules/dmoerm`;
  for (const threads of ['1', '2']) {
    const what = `configure, ${threads} thread(s)`;
    const result = await runPage(browser, server.resolvedUrls.local[0], { device: 'cpu', threads, model: MODEL_URL, inputs: JSON.stringify(INPUTS), wasm }, what);
    assert.equal(result.threads, Number(threads), what);
    checkScores(result.scores, want.cpu, CPU_TOLERANCE, what);
    const file = threads === '1' ? 'wasm' : 'wasm-threads';
    assert.deepEqual([...new Set(result.wasm)], [`${wasm}/${file}/dmoerm_wasm_bg.wasm`], `${what}: the wasm fetched`);
  }
});

// Opens `url` and resolves to the page's `window.result`. Vite's dev server may reload the
// page once, when it has optimised a dependency it found late: then the result is read again.
async function pageResult(page, url) {
  await page.goto(url);
  for (let tries = 0; ; tries++) {
    try {
      await page.waitForFunction(() => window.result !== undefined, null, { timeout: 300_000 });
      return await page.evaluate(() => window.result);
    } catch (e) {
      if (tries > 0 || !/context was destroyed|navigation/i.test(e.message)) throw e;
    }
  }
}
