// The package's Worker for CPU models on threads, on the threaded build's relaxed-SIMD twin
// (wasm-threads-relaxed/; src/threads-serve.js).
import * as glue from '../wasm-threads-relaxed/dmoerm_wasm.js';
import { serveThreads } from './threads-serve.js';
import { crossOriginWorker } from './spawn.js';

serveThreads(glue, () => {
  try {
    // a literal, so that bundlers find the script
    return new Worker(new URL('./pool-relaxed-worker.js', import.meta.url), { type: 'module' });
  } catch (e) {
    return crossOriginWorker(e, './pool-relaxed-worker.js', import.meta.url);
  }
});
