// Web Workers in Node, over node:worker_threads: what the package's Worker (src/workers.js)
// and, inside it, the rayon pool of the threaded build (src/threads-worker.js) start there, so
// that Node computes on threads as a cross-origin-isolated page does.
//
// A NodeWorker runs src/node-worker-main.js, which gives the thread a Web Worker's globals
// (`self`, `postMessage`, `Worker`, `fetch` of file: URLs) and then imports the script.
//
// A thread does not keep Node running: the pool's threads wait for work forever, and a script
// that has scored must still exit. The package refs its Worker while a call is in flight
// (`ref`, `unref`).

import { Worker as Thread } from 'node:worker_threads';

const MAIN = new URL('./node-worker-main.js', import.meta.url);

export class NodeWorker extends EventTarget {
  #thread;

  /** As `new Worker(url, {type: 'module'})`. */
  constructor(url) {
    super();
    this.onmessage = null;
    this.onerror = null;
    // Node's flags, but for --input-type (the main script's, which a thread's module refuses)
    const execArgv = process.execArgv.filter((a, i, all) => !a.startsWith('--input-type') && all[i - 1] !== '--input-type');
    this.#thread = new Thread(MAIN, { workerData: { url: String(url) }, execArgv });
    this.#thread.unref();
    this.#thread.on('message', (data) => {
      const event = new MessageEvent('message', { data });
      this.onmessage?.(event);
      this.dispatchEvent(event);
    });
    // an uncaught error in the thread (a Worker's `error` event, which `preventDefault` keeps
    // from being reported again in a browser)
    this.#thread.on('error', (e) => this.onerror?.({ message: e?.message ?? String(e), preventDefault() {} }));
  }

  postMessage(message, transfer) {
    this.#thread.postMessage(message, transfer);
  }

  terminate() {
    this.#thread.terminate();
  }

  /** Keeps Node running while this thread works for a caller. */
  ref() {
    this.#thread.ref();
  }

  /** Lets Node exit although this thread is alive (waiting for work). */
  unref() {
    this.#thread.unref();
  }
}
