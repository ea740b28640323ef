// The entry of a NodeWorker's thread (src/node-worker.js): a Web Worker's globals over
// node:worker_threads, then the Worker's script.

import { parentPort, workerData } from 'node:worker_threads';
import { readFile } from 'node:fs/promises';
import { NodeWorker } from './node-worker.js';

// `self`: its messages, `onmessage` and `addEventListener('message')`, and `postMessage`
const self = new EventTarget();
self.onmessage = null;
self.postMessage = (message, transfer) => parentPort.postMessage(message, transfer);
globalThis.self = self;
globalThis.postMessage = self.postMessage;
// Workers of its own (the rayon pool, which src/threads-worker.js starts)
globalThis.Worker = NodeWorker;
// Node's fetch takes no file: URLs; the wasm glue fetches its .wasm through one
const webFetch = globalThis.fetch;
globalThis.fetch = async (resource, options) => {
  const url = resource instanceof Request ? new URL(resource.url) : new URL(String(resource));
  if (url.protocol !== 'file:') return webFetch(resource, options);
  const type = url.pathname.endsWith('.wasm') ? 'application/wasm' : 'text/javascript';
  return new Response(await readFile(url), { headers: { 'content-type': type } });
};

await import(workerData.url);
// Messages wait in the port until this listener starts it: the script's own listeners, which
// its module code sets up, see every one.
parentPort.on('message', (data) => {
  const event = new MessageEvent('message', { data });
  self.onmessage?.(event);
  self.dispatchEvent(event);
});
