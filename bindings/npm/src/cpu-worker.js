// The Worker that holds the CPU models of the threaded build (wasm-threads/): the package
// starts it (src/threads.js) on a cross-origin-isolated page. A thread of a threaded wasm
// blocks while the rayon pool computes, which a page's main thread may not; here it may, and
// the page stays responsive. The pool itself is more Workers (wasm-bindgen-rayon).
//
// Requests: {id, op, ...}; replies: {id, ok: true, value} or {id, ok: false, error, trapped}.
// After a trap (a Rust panic: the instance is unusable) every request fails with `trapped`,
// and the package starts a new Worker.

let glue = null;
let exports = null;
let trapped = null;
const models = new Map();
let nextModel = 1;

const ops = {
  async init({ threads, panics }) {
    glue = await import('../wasm-threads/dmoerm_wasm.js');
    exports = await glue.default({ module_or_path: new URL('../wasm-threads/dmoerm_wasm_bg.wasm', import.meta.url) });
    glue.reportPanicsTo(panics);
    await glue.initThreadPool(threads);
    return glue.threads();
  },
  load({ bytes, name }) {
    const model = glue.Model.fromBytes(bytes, 'cpu', name);
    const id = nextModel++;
    models.set(id, model);
    return { id, info: model.info() };
  },
  score: ({ model, input }) => live(model).scoreNow(input),
  scoreBatch: ({ model, inputs }) => live(model).scoreBatchNow(inputs),
  rank: ({ model, prompt, candidates }) => live(model).rankNow(prompt, candidates),
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
      let panic = null;
      try {
        panic = glue?.lastPanic();
      } catch {
        // the instance is too broken to say
      }
      trapped = panic ?? e.message;
      self.postMessage({ id, ok: false, error: trapped, trapped: true });
    } else {
      self.postMessage({ id, ok: false, error: e instanceof Error ? e.message : String(e) });
    }
  }
};
