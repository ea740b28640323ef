// What the package's Worker for CPU models on threads runs (src/threads-worker.js, or
// src/threads-relaxed-worker.js on an engine with relaxed SIMD: src/simd.js), on the threaded
// build it imports: the rayon pool on more Workers (src/pool-worker.js, src/pool-relaxed-worker.js;
// src/worker-serve.js says the rest).
import { serve } from './worker-serve.js';

// The pool's Workers, held here: a Worker that shares a wasm memory but that nothing references
// may be collected (a Firefox bug).
const pool = [];

/**
 * Serves the package's requests on `glue` (the threaded build's wasm-bindgen module), its pool
 * on the Workers `poolWorker()` starts (each importing the same build).
 */
export function serveThreads(glue, poolWorker) {
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
}
