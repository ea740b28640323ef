// A thread of the threaded build's rayon pool (src/threads-worker.js starts it): the module
// instantiated on the shared memory it is sent, then one of rayon's threads, for good
// (bindings/wasm/src/pool.rs).
import { initSync, runPoolThread } from '../wasm-threads/dmoerm_wasm.js';

self.onmessage = ({ data: { module, memory } }) => {
  self.onmessage = null;
  initSync({ module, memory });
  self.postMessage('ready');
  runPoolThread();
};
