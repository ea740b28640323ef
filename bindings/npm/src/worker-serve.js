// What the package's two Workers (src/workers.js) run, each on one wasm build, which its entry
// imports and starts:
// - src/threads-worker.js: CPU models on the threaded build (wasm-threads/), on a
//   cross-origin-isolated page and in Node. A thread of a threaded wasm blocks while the rayon
//   pool computes, which a page's main thread may not; here it may. The pool itself is more
//   Workers (src/pool-worker.js).
// - src/webgpu-worker.js: WebGPU models on the single-thread build (wasm/). A trap inside an
//   asynchronous WebGPU call cannot be caught where it happens; here it ends this Worker, and
//   the panic hook tells the page (below).
// In both the page stays responsive while a model computes.
//
// Requests: {id, op, ...}; replies: {id, ok: true, value} or {id, ok: false, error, trapped}.
// A panic on any thread of the instance is also posted on the BroadcastChannel `panics` by the
// Rust panic hook, which reaches the page even when no reply can (a blocked or dead thread).
// After a trap (the instance is unusable) every request fails with `trapped`, and the package
// starts a new Worker.

import { panicOf, runModel } from './wasm-calls.js';

/**
 * Answers the package's requests with `glue`, the wasm-bindgen module of this Worker's build.
 * The first request initialises it: `instantiate(wasmUrl)` (the `.wasm` at `wasmUrl`, or the
 * glue's own file beside it when undefined) resolves to the wasm exports, then
 * `startPool(threads)`, for the threaded build, starts the rayon pool.
 */
export function serve(glue, { instantiate, startPool }) {
  let exports = null;
  let trapped = null;
  const models = new Map();
  let nextModel = 1;

  const ops = {
    async init({ threads, panics, wasmUrl }) {
      exports = await instantiate(wasmUrl);
      glue.reportPanicsTo(panics);
      await startPool?.(threads);
      return glue.threads();
    },
    // 'webgpu', 'cpu' or 'auto' -> the device to load onto (initialising WebGPU once)
    prepare: ({ device }) => glue.prepareDevice(device),
    load({ parts, name, device }) {
      const model = glue.Model.fromParts(parts, device, name);
      const id = nextModel++;
      models.set(id, model);
      return { id, info: model.info() };
    },
    plan: ({ paths, sizes, files, name, device, quantize }) => glue.folderPlan(paths, sizes, files, device, name, quantize),
    loadFiles({ paths, sizes, files, name, device, quantize }) {
      const model = glue.Model.fromFiles(paths, sizes, files, device, name, quantize);
      const id = nextModel++;
      models.set(id, model);
      return { id, info: model.info() };
    },
    score: ({ model, input }) => runModel(live(model), 'score', [input]),
    scoreBatch: ({ model, inputs }) => runModel(live(model), 'scoreBatch', [inputs]),
    rank: ({ model, prompt, candidates }) => runModel(live(model), 'rank', [prompt, candidates]),
    dispose({ model }) {
      models.get(model)?.free();
      models.delete(model);
    },
    memory: () => exports.memory.buffer.byteLength,
    panicNext: ({ onPool }) => glue.panicInNextScoreForTests(onPool),
  };

  function live(id) {
    const model = models.get(id);
    if (!model) throw new Error('dmoerm: this RewardModel was disposed');
    return model;
  }

  self.onmessage = async ({ data: { id, op, ...args } }) => {
    if (trapped) {
      self.postMessage({ id, ok: false, error: trapped, trapped: true });
      return;
    }
    try {
      self.postMessage({ id, ok: true, value: await ops[op](args) });
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) {
        trapped = panicOf(glue, e);
        self.postMessage({ id, ok: false, error: trapped, trapped: true });
      } else {
        self.postMessage({ id, ok: false, error: e instanceof Error ? e.message : String(e) });
      }
    }
  };
}
