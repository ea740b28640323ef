// The package's Worker for CPU models on threads, on the threaded build
// (wasm-threads/; src/threads-serve.js).
import * as glue from '../wasm-threads/dmoerm_wasm.js';
import { serveThreads } from './threads-serve.js';
import { crossOriginWorker } from './spawn.js';

serveThreads(glue, () => {
  try {
    // a literal, so that bundlers find the script
    return new Worker(new URL('./pool-worker.js', import.meta.url), { type: 'module' });
  } catch (e) {
    return crossOriginWorker(e, './pool-worker.js', import.meta.url);
  }
});
