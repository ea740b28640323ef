// The threaded CPU path: the models live in a Worker this package owns (src/cpu-worker.js),
// which runs the threaded wasm build on a pool of `threads` more Workers. Only where shared
// memory exists: a browser page or worker that is cross-origin isolated (COOP/COEP headers).

let worker = null; // {post(op, args, transfer), threads, gen}
let generation = 0;

/**
 * How many threads the CPU path can compute on here, given the `threads` option: 1 without
 * cross-origin isolation (no SharedArrayBuffer) or in Node (the single-thread build runs on
 * the calling thread), else `threads`, all cores by default.
 */
export function cpuThreads(threads, isNode) {
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
    throw new TypeError(`dmoerm: threads must be a positive integer, not ${threads}`);
  }
  if (isNode || globalThis.crossOriginIsolated !== true || typeof Worker === 'undefined') return 1;
  return threads ?? Math.max(1, navigator.hardwareConcurrency || 1);
}

// Starts the Worker and its pool once; the pool has the size the first threaded load asked for.
function start(threads) {
  if (!worker) {
    const gen = ++generation;
    const w = new Worker(new URL('./cpu-worker.js', import.meta.url), { type: 'module' });
    // a panic on a pool thread aborts only that thread's Worker, and the call waiting for it
    // would wait forever: the panic hook posts the message here (bindings/wasm: reportPanicsTo)
    const panics = `dmoerm-panics-${crypto.randomUUID()}`;
    const channel = new BroadcastChannel(panics);
    const pending = new Map();
    let next = 0;
    const failAll = (error, trapped) => {
      for (const { reject } of pending.values()) reject({ error, trapped });
      pending.clear();
      if (worker?.gen === gen) worker = null;
      channel.close();
      w.terminate();
    };
    channel.onmessage = ({ data }) => failAll(String(data), true);
    w.onmessage = ({ data }) => {
      const call = pending.get(data.id);
      pending.delete(data.id);
      if (data.ok) call.resolve(data.value);
      else {
        if (data.trapped) failAll(data.error, true);
        call.reject({ error: data.error, trapped: data.trapped });
      }
    };
    w.onerror = (e) => {
      e.preventDefault();
      failAll(`the CPU worker failed: ${e.message}`, true);
    };
    const post = (op, args = {}, transfer = []) =>
      new Promise((resolve, reject) => {
        const id = next++;
        pending.set(id, { resolve, reject });
        w.postMessage({ id, op, ...args }, transfer);
      });
    const ready = post('init', { threads, panics });
    worker = { post, ready, gen };
    ready.catch(() => {
      if (worker?.gen === gen) worker = null;
    });
  }
  return worker;
}

// Runs request `op`; a failure becomes an Error, and a trap names what to do about it.
async function call(w, what, op, args, transfer) {
  try {
    return await w.post(op, args, transfer);
  } catch ({ error, trapped }) {
    if (trapped) throw new Error(`dmoerm: ${what} failed inside wasm (${error}); models loaded before must be loaded again`);
    throw new Error(error);
  }
}

/** A model in the CPU worker: the methods RewardModel calls, each a request. */
export class WorkerModel {
  #w;
  #id;

  constructor(w, id, info, threads) {
    this.#w = w;
    this.#id = id;
    this.info = info;
    this.threads = threads;
    this.device = 'cpu';
  }

  /**
   * Loads `bytes` into the worker (started on first use, with a pool of `threads`); `owned`:
   * the bytes are the package's own download, moved to the worker instead of copied.
   */
  static async load(bytes, name, threads, owned) {
    const w = start(threads);
    let pool;
    try {
      pool = await w.ready;
    } catch ({ error }) {
      throw new Error(`dmoerm: starting the CPU threads failed: ${error}`);
    }
    const transfer = owned && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? [bytes.buffer] : [];
    const { id, info } = await call(w, 'loading the model', 'load', { bytes, name }, transfer);
    return new WorkerModel(w, id, info, pool);
  }

  #live() {
    if (worker !== this.#w) throw new Error('dmoerm: this RewardModel lived in a wasm instance that trapped; load it again');
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

  dispose() {
    if (worker === this.#w) this.#w.post('dispose', { model: this.#id }).catch(() => {});
  }
}

/** The CPU worker's wasm memory in bytes, or null when it is not running. */
export async function workerMemoryBytes() {
  return worker ? call(worker, 'reading the memory size', 'memory') : null;
}

/**
 * @internal The next score, scoreBatch or rank in the CPU worker panics, on a pool thread when
 * `onPool` (tests); resolves to whether the worker runs.
 */
export async function panicInNextScore(onPool) {
  if (!worker) return false;
  await call(worker, 'the test hook', 'panicNext', { onPool });
  return true;
}
