// The npm package and the demo in real headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core), twice: with WebGPU (SwiftShader) and with WebGPU off (wasm CPU
// fallback). Screenshots go to $DMOERM_TEST_OUT (default bindings/npm/test-output).
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MODES, launch } from './chromium.mjs';
import { serve } from '../../../scripts/serve.mjs';
import { FIXTURES, packFixtures, expected, checkScore, root, dmoermBin } from './fixtures.mjs';

const packed = packFixtures();
const sortKeys = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
const out = process.env.DMOERM_TEST_OUT ?? join(root, 'bindings/npm/test-output');
mkdirSync(out, { recursive: true });
for (const mode of Object.keys(MODES)) {
  test(`chromium, ${mode}`, async (t) => {
    const server = await serve({ mounts: { '/fixtures/': dirname(packed.llama) } });
    const browser = await launch(mode);
    t.after(async () => {
      await browser.close();
      await server.close();
    });
    const page = await browser.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && console.log(`[${mode} console] ${m.text()}`));

    await t.test('the device is the expected one', async () => {
      await page.goto(`${server.url}/bindings/npm/test/harness.html`);
      await page.waitForFunction(() => window.harnessReady === true);
      const available = await page.evaluate(() => window.dmoerm.webgpuAvailable());
      assert.equal(available, mode === 'webgpu', 'navigator.gpu adapter');
      assert.equal(await page.evaluate(() => crossOriginIsolated), true, 'COOP/COEP');
      // SwiftShader is a fallback adapter: 'auto' takes the CPU there, 'webgpu' still WebGPU
      const devices = await page.evaluate(async (webgpu) => {
        const { RewardModel } = window.dmoerm;
        const fallback = webgpu ? (await navigator.gpu.requestAdapter()).info.isFallbackAdapter : null;
        const chosen = [];
        for (const device of webgpu ? ['auto', 'webgpu'] : ['auto']) {
          const rm = await RewardModel.load('/fixtures/bert.dmoerm', { device, cache: false });
          chosen.push(rm.device);
          rm.dispose();
        }
        return { fallback, chosen };
      }, mode === 'webgpu');
      assert.deepEqual(devices, mode === 'webgpu' ? { fallback: true, chosen: ['cpu', 'webgpu'] } : { fallback: null, chosen: ['cpu'] });
    });

    await t.test('fixture bundles score as the reference', async () => {
      for (const name of FIXTURES) {
        const exp = expected(name);
        const inputs = exp.inputs.map((i) => ({ messages: i.messages, response: i.response }));
        const res = await page.evaluate(
          async ({ url, inputs, device }) => {
            const rm = await window.dmoerm.RewardModel.load(url, { device, threads: 2, cache: false });
            const scores = [];
            for (const input of inputs) scores.push(await rm.score(input));
            const used = [rm.device, rm.threads];
            rm.dispose();
            return { device: used, scores };
          },
          { url: `/fixtures/${name}.dmoerm`, inputs, device: mode },
        );
        // the page is cross-origin isolated: the CPU runs the threaded build, WebGPU the other
        assert.deepEqual(res.device, [mode, mode === 'cpu' ? 2 : 1], `${name}: device, threads`);
        for (const [i, input] of exp.inputs.entries()) checkScore(assert, res.scores[i], input.expected, exp.tolerance, `${name} input ${i}`);
      }
    });

    // an int8 or q4 bundle's projections stay quantised on WebGPU (burn's quantised matmul
    // reads them packed): the scores are the native GPU's (lavapipe) on the same bundle. An
    // f16 bundle's matrices stay f16 natively (lavapipe has f16 in shaders) and are expanded
    // on SwiftShader (no `shader-f16`): the same scores either way.
    if (mode === 'webgpu') await t.test('int8, q4 and f16 bundles on WebGPU score as on a native GPU', async () => {
      const dir = dirname(packed.llama);
      for (const [name, dtype] of [['llama', 'int8'], ['llama', 'q4'], ['bert', 'int8'], ['bert', 'f16']]) {
        const inputs = expected(name).inputs.map((i) => ({ messages: i.messages, response: i.response }));
        const [bundle, jsonl, scores] = ['dmoerm', 'jsonl', 'out.jsonl'].map((ext) => join(dir, `${name}-${dtype}.${ext}`));
        execFileSync(dmoermBin(), ['pack', '--model', join(root, 'tests/fixtures', name), '--out', bundle, '--dtype', dtype]);
        writeFileSync(jsonl, inputs.map((i) => JSON.stringify(i)).join('\n'));
        execFileSync(dmoermBin(), ['score', '--model', bundle, '--device', 'gpu', '--input', jsonl, '--output', scores]);
        const want = readFileSync(scores, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
        const got = await page.evaluate(async ({ url, inputs }) => {
          const rm = await window.dmoerm.RewardModel.load(url, { device: 'webgpu', cache: false });
          const scores = await rm.scoreBatch(inputs);
          rm.dispose();
          return scores;
        }, { url: `/fixtures/${name}-${dtype}.dmoerm`, inputs });
        assert.equal(got.length, inputs.length);
        // the CLI writes the maps' keys sorted; the order is not compared here
        const sorted = (s) => ({ ...s, capabilities: sortKeys(s.capabilities), task_probs: sortKeys(s.task_probs) });
        for (const [i, score] of got.entries()) checkScore(assert, sorted(score), sorted(want[i]), 1e-4, `${name} ${dtype} input ${i}`);
      }
    });

    // Chromium has relaxed SIMD: on threads the package runs the threaded build's twin that
    // computes 4-bit products with `i32x4.relaxed_dot_i8x16_i7x16_add_s` (src/simd.js); its
    // integers are the simd128 kernel's, so a q4 bundle scores as natively
    if (mode === 'cpu') await t.test('a q4 bundle scores on the relaxed-SIMD build as natively', async () => {
      const dir = dirname(packed.llama);
      const inputs = expected('llama').inputs.map((i) => ({ messages: i.messages, response: i.response }));
      const [bundle, jsonl, scores] = ['dmoerm', 'jsonl', 'out.jsonl'].map((ext) => join(dir, `llama-q4-cpu.${ext}`));
      execFileSync(dmoermBin(), ['pack', '--model', join(root, 'tests/fixtures/llama'), '--out', bundle, '--dtype', 'q4']);
      writeFileSync(jsonl, inputs.map((i) => JSON.stringify(i)).join('\n'));
      execFileSync(dmoermBin(), ['score', '--model', bundle, '--device', 'cpu', '--input', jsonl, '--output', scores]);
      const want = readFileSync(scores, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      // a fresh page: the package's threads Worker fetches its build once, when it starts
      const fresh = await browser.newPage();
      const wasm = [];
      fresh.on('request', (r) => r.url().endsWith('.wasm') && wasm.push(new URL(r.url()).pathname));
      fresh.on('pageerror', (e) => pageErrors.push(e.message));
      await fresh.goto(`${server.url}/bindings/npm/test/harness.html`);
      await fresh.waitForFunction(() => window.harnessReady === true);
      const got = await fresh.evaluate(async (inputs) => {
        const rm = await window.dmoerm.RewardModel.load('/fixtures/llama-q4-cpu.dmoerm', { device: 'cpu', threads: 2, cache: false });
        const scores = await rm.scoreBatch(inputs);
        rm.dispose();
        return scores;
      }, inputs);
      await fresh.close();
      assert.ok(wasm.includes('/bindings/npm/wasm-threads-relaxed/dmoerm_wasm_bg.wasm'), `the relaxed-SIMD build ran: ${wasm}`);
      assert.ok(!wasm.includes('/bindings/npm/wasm-threads/dmoerm_wasm_bg.wasm'), `and not the other threaded build: ${wasm}`);
      const sorted = (s) => ({ ...s, capabilities: sortKeys(s.capabilities), task_probs: sortKeys(s.task_probs) });
      for (const [i, score] of got.entries()) checkScore(assert, sorted(score), sorted(want[i]), 1e-4, `llama q4 input ${i}`);
    });

    await t.test('a plain page (no COOP/COEP) scores on one thread, as the isolated one does on two', async () => {
      const plainServer = await serve({ mounts: { '/fixtures/': dirname(packed.llama) }, isolated: false });
      const plain = await browser.newPage();
      t.after(() => plainServer.close());
      plain.on('pageerror', (e) => pageErrors.push(e.message));
      const exp = expected('llama');
      const inputs = exp.inputs.map((i) => ({ messages: i.messages, response: i.response }));
      const run = async (p, url) => {
        await p.goto(`${url}/bindings/npm/test/harness.html`);
        await p.waitForFunction(() => window.harnessReady === true);
        return p.evaluate(async ({ inputs, rank }) => {
          const rm = await window.dmoerm.RewardModel.load('/fixtures/llama.dmoerm', { device: 'cpu', threads: 2, cache: false });
          const scores = await rm.scoreBatch(inputs);
          const ranked = await rm.rank(rank.prompt, rank.candidates);
          const r = { isolated: crossOriginIsolated, threads: rm.threads, scores, ranked };
          rm.dispose();
          return r;
        }, { inputs, rank: exp.rank });
      };
      const one = await run(plain, plainServer.url);
      const two = await run(page, server.url);
      assert.deepEqual([one.isolated, one.threads, two.isolated, two.threads], [false, 1, true, 2]);
      for (const [i, input] of exp.inputs.entries()) {
        checkScore(assert, one.scores[i], input.expected, exp.tolerance, `one thread, input ${i}`);
        checkScore(assert, two.scores[i], input.expected, exp.tolerance, `two threads, input ${i}`);
      }
      for (const ranked of [one.ranked, two.ranked]) {
        assert.deepEqual(ranked.map((r) => r.index), exp.rank.order);
        for (const r of ranked) assert.ok(Math.abs(r.reward - exp.rank.rewards[r.index]) <= exp.tolerance, `rank: ${r.reward} vs ${exp.rank.rewards[r.index]}`);
      }
      await plain.close();
    });

    await t.test('downloads stream with progress, are cached, and the cache clears', async () => {
      const r = await page.evaluate(async (url) => {
        const { RewardModel, clearCache } = window.dmoerm;
        const last = async (options) => {
          const seen = [];
          const rm = await RewardModel.load(url, { device: 'cpu', ...options, onProgress: (p) => seen.push(p) });
          rm.dispose();
          const downloads = seen.filter((e) => e.status === 'download');
          return { ...downloads.at(-1), events: seen.length, after: seen.slice(downloads.length) };
        };
        await clearCache();
        const first = await last({});
        const second = await last({});
        const cleared = await clearCache();
        const third = await last({});
        const uncached = await last({ cache: false, version: 'x' });
        return { first, second, cleared, third, uncached };
      }, '/fixtures/llama.dmoerm');
      const size = (await import('node:fs')).statSync(packed.llama).size;
      assert.deepEqual([r.first.loaded, r.first.fraction, r.first.cached], [size, 1, false]);
      // after the download: the bundle is read onto the device, then the model is ready
      assert.deepEqual(r.first.after, [{ status: 'load', bytes: size }, { status: 'ready', device: 'cpu' }]);
      assert.deepEqual([r.second.loaded, r.second.cached], [size, true]);
      assert.equal(r.cleared, true);
      assert.equal(r.third.cached, false, 'after clearCache the model downloads again');
      assert.equal(r.uncached.cached, false);
    });

    await t.test('the package works in a Web Worker', async () => {
      const exp = expected('llama');
      const input = exp.inputs[0];
      const res = await page.evaluate(
        ({ url, input, device }) =>
          new Promise((ok) => {
            const worker = new Worker('/bindings/npm/test/worker.js', { type: 'module' });
            worker.onmessage = ({ data }) => ok(data);
            worker.onerror = (e) => ok({ ok: false, error: e.message });
            worker.postMessage({ url, input, device });
          }),
        { url: '/fixtures/llama.dmoerm', input: { messages: input.messages, response: input.response }, device: mode },
      );
      assert.ok(res.ok, res.error);
      assert.equal(res.device, mode);
      checkScore(assert, res.score, input.expected, exp.tolerance, 'worker');
    });

    await t.test('a trap while scoring rejects the call, and the package recovers', async () => {
      const exp = expected('llama');
      const input = exp.inputs[0];
      const before = pageErrors.length;
      const r = await page.evaluate(
        async ({ url, input, device }) => {
          const { RewardModel, _panicInNextScoreForTests } = window.dmoerm;
          const errors = [];
          const threads = [];
          // on the thread that scores (WebGPU: inside the call's promise task, in the package's
          // Worker), then, on the CPU, on a thread of the pool (the threaded build)
          for (const onPool of device === 'cpu' ? [false, true] : [false]) {
            const rm = await RewardModel.load(url, { device, cache: false });
            threads.push(rm.threads);
            await _panicInNextScoreForTests(rm, { onPool });
            errors.push(await rm.score(input).then(() => null, (e) => `${e instanceof Error} ${e.message}`));
            errors.push(await rm.score(input).then(() => null, (e) => e.message));
          }
          const fresh = await RewardModel.load(url, { device, cache: false });
          return { threads, errors, score: await fresh.score(input), device: fresh.device };
        },
        { url: '/fixtures/llama.dmoerm', input: { messages: input.messages, response: input.response }, device: mode },
      );
      // the page is cross-origin isolated: a CPU model runs on the threaded build, in a Worker
      assert.deepEqual(r.threads, mode === 'cpu' ? [2, 2] : [1]);
      assert.equal(r.device, mode);
      const panics = mode === 'cpu' ? ['a deliberate test panic while scoring', 'a deliberate test panic on a pool thread while scoring'] : ['a deliberate test panic while scoring'];
      assert.equal(r.errors.length, 2 * panics.length);
      for (const [i, panic] of panics.entries()) {
        assert.ok(r.errors[2 * i]?.startsWith('true dmoerm: scoring failed inside wasm ('), r.errors[2 * i] ?? 'resolved');
        assert.ok(r.errors[2 * i].includes(panic), r.errors[2 * i]);
        assert.match(r.errors[2 * i + 1] ?? 'resolved', /trapped; load it again/);
      }
      checkScore(assert, r.score, input.expected, exp.tolerance, 'after the traps');
      // a Worker that trapped outside a call the package made may also report `unreachable`
      // as an uncaught error; nothing else
      const during = pageErrors.splice(before);
      assert.ok(during.every((e) => /unreachable/.test(e)), `page errors: ${during}`);
    });

    await t.test('the demo scores through the UI', async () => {
      await page.goto(`${server.url}/web-demo/?device=${mode}`);
      await page.waitForSelector('body[data-ready="true"]', { timeout: 300_000 });
      const deviceText = await page.textContent('#device');
      // the demo's page is cross-origin isolated: on the CPU it computes on every core
      const cores = await page.evaluate(() => navigator.hardwareConcurrency);
      assert.equal(deviceText, mode === 'webgpu' ? 'device: WebGPU' : `device: CPU (wasm${cores > 1 ? `, ${cores} threads` : ''})`);
      await page.fill('#prompt', 'What is the meaning of the word "ocean"?');
      await page.fill('.response-text >> nth=0', 'A large body of salt water that covers most of the earth.');
      await page.click('#score');
      await page.waitForSelector('body[data-scored="1"]', { timeout: 300_000 });
      const ranked = await page.$$eval('li.ranked', (lis) => lis.length);
      assert.equal(ranked, 3);
      const task = await page.textContent('#task');
      const caps = await page.$$eval('li.ranked:first-child .caps .bar', (els) => els.map((e) => e.dataset.capability));
      assert.ok(caps.length >= 4, `capability bars: ${caps}`);
      assert.ok(task.length > 0);
      assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
      await page.screenshot({ path: join(out, `demo-${mode}.png`), fullPage: true });
    });

    // A Hugging Face reward model's folder, not packed: as <input webkitdirectory> gives it
    // (Playwright sets the folder on the input) and as files served at a URL
    await t.test('a folder of Hugging Face files scores as the reference', async () => {
      await page.goto(`${server.url}/bindings/npm/test/harness.html`);
      await page.waitForFunction(() => window.harnessReady === true);
      await page.evaluate(() => {
        const input = Object.assign(document.createElement('input'), { type: 'file', id: 'folder', webkitdirectory: true });
        document.body.append(input);
      });
      const name = 'hf_qwen2';
      await page.setInputFiles('#folder', join(root, 'tests/fixtures', name));
      const exp = expected(name);
      const inputs = exp.inputs.map((i) => ({ messages: i.messages, response: i.response }));
      const res = await page.evaluate(
        async ({ inputs, device, url }) => {
          const out = [];
          for (const source of [document.getElementById('folder').files, url]) {
            const rm = await window.dmoerm.RewardModel.load(source, { device, cache: false });
            out.push({ device: rm.device, name: rm.info.name, scores: await rm.scoreBatch(inputs) });
            rm.dispose();
          }
          return out;
        },
        { inputs, device: mode, url: `/tests/fixtures/${name}/` },
      );
      for (const [i, r] of res.entries()) {
        assert.equal(r.device, mode);
        for (const [j, input] of exp.inputs.entries()) checkScore(assert, r.scores[j], input.expected, exp.tolerance, `${['files', 'url'][i]} input ${j}`);
      }
      // a folder that cannot load (.bin weights only) rejects with the native loader's message,
      // and the page loads the next one
      const bad = mkdtempSync(join(tmpdir(), 'dmoerm-bin-'));
      cpSync(join(root, 'tests/fixtures/hf_llama3'), bad, { recursive: true });
      renameSync(join(bad, 'model.safetensors'), join(bad, 'pytorch_model.bin'));
      await page.setInputFiles('#folder', bad);
      const after = await page.evaluate(async ({ device, url }) => {
        const error = await window.dmoerm.RewardModel.load(document.getElementById('folder').files, { device }).then(() => null, (e) => e.message);
        const rm = await window.dmoerm.RewardModel.load(url, { device, cache: false });
        return { error, device: rm.device };
      }, { device: mode, url: `/tests/fixtures/${name}/` });
      assert.match(after.error ?? 'loaded', /invalid bundle \(.*\): only PyTorch \.bin weights/);
      assert.equal(after.device, mode);
    });

    await t.test('the demo scores a reward-model folder opened in it', async () => {
      const name = 'hf_qwen2';
      await page.goto(`${server.url}/web-demo/?device=${mode}`);
      await page.waitForSelector('body[data-ready="true"]', { timeout: 300_000 });
      await page.setInputFiles('#folder', join(root, 'tests/fixtures', name));
      await page.waitForSelector(`#model-name:text("${name}")`, { timeout: 60_000 });
      await page.waitForSelector('body[data-ready="true"]', { timeout: 300_000 });
      const prompt = 'What is the capital of France?';
      const responses = ['Paris is the capital of France.', 'I think it is Lyon.'];
      await page.fill('#prompt', prompt);
      await page.fill('.response-text >> nth=0', responses[0]);
      await page.fill('.response-text >> nth=1', responses[1]);
      await page.fill('.response-text >> nth=2', '');
      const before = Number((await page.getAttribute('body', 'data-scored')) ?? 0);
      await page.click('#score');
      await page.waitForSelector(`body[data-scored="${before + 1}"]`, { timeout: 300_000 });
      assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
      // the rewards shown are the native CLI's on the same folder (3 decimals shown)
      const shown = await page.$$eval('li.ranked', (lis) => lis.map((li) => [li.querySelector('.muted').textContent, Number(li.querySelector('.reward').textContent.replace('reward ', ''))]));
      assert.equal(shown.length, 2);
      const exp = expected(name);
      for (const [label, reward] of shown) {
        const response = responses[Number(label.match(/^response (\d+)/)[1]) - 1];
        const cli = JSON.parse(execFileSync(dmoermBin(), ['score', '--model', join(root, 'tests/fixtures', name), '--prompt', prompt, '--response', response, '--json'], { encoding: 'utf8' }));
        assert.ok(Math.abs(reward - cli.reward) <= 5e-4 + exp.tolerance, `${response}: ${reward} vs the CLI's ${cli.reward}`);
      }
      await page.screenshot({ path: join(out, `demo-folder-${mode}.png`), fullPage: true });
    });

    await t.test('a bad model URL shows an error, no uncaught exception', async () => {
      await page.goto(`${server.url}/web-demo/?model=/no/such/model.dmoerm`);
      await page.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
      assert.match(await page.textContent('#error'), /HTTP 404/);
    });

    assert.deepEqual(pageErrors, []);
  });
}
