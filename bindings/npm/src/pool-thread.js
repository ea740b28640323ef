// A thread of the threaded build's rayon pool (src/threads-serve.js starts it; its build's
// script, src/pool-worker.js or src/pool-relaxed-worker.js, calls this): the module
// instantiated on the shared memory it is sent, then one of rayon's threads, for good
// (bindings/wasm/src/pool.rs).

/** Runs this Worker as a pool thread of `glue`'s build. */
export function runPoolThread({ initSync, runPoolThread: run }) {
  self.onmessage = ({ data: { module, memory } }) => {
    self.onmessage = null;
    initSync({ module, memory });
    self.postMessage('ready');
    run();
  };
}
