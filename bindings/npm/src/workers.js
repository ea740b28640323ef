import { locations, platform } from './platform.js';
import { relaxedSimd } from './simd.js';
import { deadModelError, trapError } from './wasm-calls.js';

// The Workers the package owns to hold models, one of each kind at most: 'threads' (CPU models
// on the threaded build, src/threads-worker.js, or its relaxed-SIMD twin,
// src/threads-relaxed-worker.js, where the page is cross-origin isolated, and in Node, on
// node:worker_threads: src/node-worker.js) and 'webgpu' (WebGPU models on the
// single-thread build, src/webgpu-worker.js, in a browser). Each model is a handle in its
// Worker; each call a request.

const workers = { threads: null, webgpu: null }; // kind -> {post, ready, gen}
let generation = 0;

/** Whether a browser context can start WebGPU Workers of its own (a page or a worker). */
export function canStartWorkers() {
  return platform.name === 'browser' && typeof Worker !== 'undefined';
}

/**
 * How many threads the CPU path can compute on here, given the `threads` option: in a browser
 * 1 without cross-origin isolation (no SharedArrayBuffer), else `threads`, all cores by
 * default; in Node `threads`, all cores by default.
 */
export async function cpuThreads(threads) {
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
    throw new TypeError(`dmoerm: threads must be a positive integer, not ${threads}`);
  }
  if (platform.name === 'browser' && (!canStartWorkers() || globalThis.crossOriginIsolated !== true)) return 1;
  return threads ?? platform.defaultThreads();
}

// Starts the Worker of `kind` once; the threaded one's pool has the size the first threaded
// load asked for.
function start(kind, threads) {
  if (!workers[kind]) {
    const gen = ++generation;
    const threaded = kind === 'threads';
    // the threaded build's relaxed-SIMD twin where the engine runs it, unless the app named
    // where the threaded build's files are (`configure`: those are wasm-threads/'s)
    const relaxed = threaded && relaxedSimd() && !locations.threadedWasmUrl && !locations.threadedWorkerUrl;
    const w = platform.spawn(relaxed ? 'threads-relaxed' : kind, threaded ? locations.threadedWorkerUrl : locations.workerUrl);
    // A panic that no reply can report (on a pool thread, which the caller waits for forever,
    // or inside a WebGPU call's promise task) is posted here by the Rust panic hook.
    const panics = `dmoerm-panics-${crypto.randomUUID()}`;
    const channel = new BroadcastChannel(panics);
    channel.unref?.(); // Node: listening does not keep it running
    const pending = new Map();
    let next = 0;
    const failAll = (error, trapped) => {
      for (const { reject } of pending.values()) reject({ error, trapped });
      pending.clear();
      if (workers[kind]?.gen === gen) workers[kind] = null;
      channel.close();
      w.terminate();
    };
    channel.onmessage = ({ data }) => failAll(String(data), true);
    w.onmessage = ({ data }) => {
      const call = pending.get(data.id);
      // the reply to a call that the panic channel already failed (a trap: failAll)
      if (!call) return;
      pending.delete(data.id);
      if (pending.size === 0) w.unref?.(); // Node: nothing in flight
      if (data.ok) call.resolve(data.value);
      else {
        if (data.trapped) failAll(data.error, true);
        call.reject({ error: data.error, trapped: data.trapped });
      }
    };
    w.onerror = (e) => {
      e.preventDefault();
      // a panic's own message comes on the channel, in no set order with this event: give it
      // time to arrive first (failAll does nothing the second time)
      setTimeout(() => failAll(`the ${kind} worker failed: ${e.message}`, true), 250);
    };
    const post = (op, args = {}, transfer = []) =>
      new Promise((resolve, reject) => {
        const id = next++;
        pending.set(id, { resolve, reject });
        w.ref?.(); // Node: keeps running until the reply
        w.postMessage({ id, op, ...args }, transfer);
      });
    const wasmUrl = threaded ? locations.threadedWasmUrl : locations.wasmUrl;
    const ready = post('init', { threads, panics, wasmUrl });
    workers[kind] = { post, ready, gen };
    ready.catch(() => {
      if (workers[kind]?.gen === gen) workers[kind] = null;
    });
  }
  return workers[kind];
}

// Runs request `op`; a failure becomes an Error, and a trap names what to do about it.
async function call(w, what, op, args, transfer) {
  let reply;
  try {
    return await w.post(op, args, transfer);
  } catch (e) {
    reply = e;
  }
  if (reply instanceof Error) throw new Error(`dmoerm: ${what} failed: ${reply.message}`); // e.g. postMessage's own
  if (reply.trapped) throw trapError(what, reply.error);
  throw new Error(reply.error);
}

async function started(kind, threads) {
  const w = start(kind, threads);
  try {
    return { w, threads: await w.ready };
  } catch ({ error }) {
    throw new Error(`dmoerm: starting the ${kind === 'threads' ? 'CPU threads' : 'WebGPU worker'} failed: ${error}`);
  }
}

/**
 * Resolves `device` ('webgpu' or 'auto') in the WebGPU Worker, as the single-thread build
 * does (bindings/wasm `prepareDevice`): 'webgpu', initialised there, or 'cpu'.
 */
export async function prepareWebgpu(device) {
  const { w } = await started('webgpu');
  return call(w, 'opening the device', 'prepare', { device });
}

/** A model in a Worker of the package: the methods RewardModel calls, each a request. */
export class WorkerModel {
  #w;
  #kind;
  #id;

  constructor(w, kind, id, info, device, threads) {
    this.#w = w;
    this.#kind = kind;
    this.#id = id;
    this.info = info;
    this.device = device;
    this.threads = threads;
  }

  /**
   * Where a model loads in the Worker of `kind` ('threads': onto the CPU, with a pool of
   * `threads`; 'webgpu': onto WebGPU, which `prepareWebgpu` opened): a bundle's bytes in
   * `parts` (Uint8Arrays of at most 1 GiB; `owned`: the package's own download, moved to the
   * Worker instead of copied), or a folder's files (src/folder.js), which the package read and
   * moves.
   */
  static on(kind, threads) {
    const device = kind === 'threads' ? 'cpu' : 'webgpu';
    const model = (w, pool, reply) => new WorkerModel(w, kind, reply.id, reply.info, device, pool);
    return {
      async load(parts, name, owned) {
        const { w, threads: pool } = await started(kind, threads);
        const sent = sendable(parts, owned);
        const args = { parts: sent, name, device };
        return model(w, pool, await call(w, 'loading the model', 'load', args, sent.map((p) => p.buffer)));
      },
      async plan(paths, sizes, files, name, quantize) {
        const { w } = await started(kind, threads);
        // copied, not moved: the files go again with the load
        const sent = files.map((parts) => sendable(parts, true));
        return call(w, 'reading the folder', 'plan', { paths, sizes, files: sent, name, device, quantize });
      },
      async loadFiles(paths, sizes, files, name, quantize) {
        const { w, threads: pool } = await started(kind, threads);
        const sent = files.map((parts) => sendable(parts, true));
        const args = { paths, sizes, files: sent, name, device, quantize };
        return model(w, pool, await call(w, 'loading the model', 'loadFiles', args, sent.flat().map((p) => p.buffer)));
      },
    };
  }

  #live() {
    if (workers[this.#kind] !== this.#w) throw deadModelError();
    return this.#w;
  }

  score(input) {
    return call(this.#live(), 'scoring', 'score', { model: this.#id, input });
  }

  scoreBatch(inputs) {
    return call(this.#live(), 'scoring', 'scoreBatch', { model: this.#id, inputs });
  }

  rank(prompt, candidates) {
    return call(this.#live(), 'ranking', 'rank', { model: this.#id, prompt, candidates });
  }

  /** @internal The next score, scoreBatch or rank panics (on a pool thread when `onPool`). */
  panicNext(onPool) {
    return call(this.#live(), 'the test hook', 'panicNext', { onPool });
  }

  dispose() {
    if (workers[this.#kind] === this.#w) this.#w.post('dispose', { model: this.#id }).catch(() => {});
  }
}

// `parts` as posted to a Worker: a part that is not the package's own (`owned`) whole buffer is
// copied into one (posting a view would copy all of its buffer), so that each can be moved.
function sendable(parts, owned) {
  const whole = (p) => p.byteOffset === 0 && p.byteLength === p.buffer.byteLength;
  return parts.map((p) => (owned && whole(p) ? p : p.slice()));
}

/** The wasm memory in bytes of the package's running Workers, added up (0 when none runs). */
export async function workersMemoryBytes() {
  let total = 0;
  for (const w of Object.values(workers)) if (w) total += await call(w, 'reading the memory size', 'memory');
  return total;
}
