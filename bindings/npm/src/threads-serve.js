// The package's Worker for CPU models on threads: the threaded build (shared memory), its
// rayon pool on more Workers (src/pool-worker.js; src/worker-serve.js says the rest).
import * as glue from '../wasm-threads/dmoerm_wasm.js';
import { serve } from './worker-serve.js';
import { crossOriginWorker } from './spawn.js';

// The pool's Workers, held here: a Worker that shares a wasm memory but that nothing references
// may be collected (a Firefox bug).
const pool = [];

const POOL_SCRIPT = './pool-worker.js'; // for the cross-origin case (src/spawn.js)

function poolWorker() {
  try {
    // a literal, so that bundlers find the script
    return new Worker(new URL('./pool-worker.js', import.meta.url), { type: 'module' });
  } catch (e) {
    return crossOriginWorker(e, POOL_SCRIPT, import.meta.url);
  }
}

// Starts `threads` Workers on this instance's module and memory (bindings/wasm/src/pool.rs),
// then hands them rayon's threads once every one is ready.
async function startPool(threads) {
  const init = { module: glue.sharedModule(), memory: glue.sharedMemory() };
  await Promise.all(
    Array.from({ length: threads }, () => {
      const worker = poolWorker();
      pool.push(worker);
      return new Promise((ready, fail) => {
        worker.onmessage = ({ data }) => (data === 'ready' ? ready() : fail(new Error(String(data))));
        worker.postMessage(init);
      });
    }),
  );
  glue.buildThreadPool(threads);
}

serve(glue, {
  instantiate: (wasmUrl) => glue.default(wasmUrl ? { module_or_path: wasmUrl } : undefined),
  startPool,
});
