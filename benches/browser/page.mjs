// The page of benches/browser/bench.mjs: times one side (dmoerm or transformers.js) on the
// work it is given. One page per configuration, so that ONNX Runtime's thread count (fixed
// when its first session starts) and each side's memory are the configuration's own.
import { RewardModel } from '/bindings/npm/src/index.js';
import { AutoModel, Tensor, env } from '/tjs/@huggingface/transformers/dist/transformers.web.js';

/**
 * `runs` timings (ms) of `fn`, after one untimed run (none when `runs` is 0), and the WebGPU
 * work of one timed run (`page.html` counts it; all zero on the CPU).
 */
async function times(fn, runs) {
  if (runs === 0) return { ms: [], gpu: null };
  await fn();
  const settle = () => new Promise((done) => setTimeout(done, 500));
  // counts from a Worker arrive on a channel, after the call's own reply at times
  await settle();
  const before = { ...window.gpuCounts };
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    ms.push(performance.now() - t);
  }
  await settle();
  const gpu = Object.fromEntries(Object.entries(window.gpuCounts).map(([k, v]) => [k, (v - before[k]) / runs]));
  return { ms, gpu };
}

/** Rows of token ids (all of one length) as the three int64 inputs of a BERT graph. */
function inputs(rows, types) {
  const dims = [rows.length, rows[0].length];
  const flat = (f) => BigInt64Array.from(rows.flatMap((r, i) => r.map((x, j) => BigInt(f(x, i, j)))));
  return {
    input_ids: new Tensor('int64', flat((x) => x), dims),
    attention_mask: new Tensor('int64', flat(() => 1), dims),
    token_type_ids: new Tensor('int64', flat((_, i, j) => types?.[i]?.[j] ?? 0), dims),
  };
}

window.bench = {
  /**
   * dmoerm's package on the wasm CPU backend: `score` and `rank` of the default model, and
   * `score` of a plain reward model on MiniLM (one pass of one sequence).
   */
  async dmoerm({ model, plain, device = 'cpu', threads, work, runs }) {
    const rm = await RewardModel.load(model, { device, threads, cache: false });
    const score = await times(() => rm.score(work.input), runs.score);
    const rank = await times(() => rm.rank(work.input.prompt, work.candidates), runs.rank);
    const [used, pool] = [rm.device, rm.threads];
    rm.dispose();
    const seq = [];
    if (runs.sequences !== 0) {
      const one = await RewardModel.load(plain, { device, threads, cache: false });
      for (const s of work.sequences) seq.push((await times(() => one.score(s.input), runs.score)).ms);
      one.dispose();
    }
    return { device: used, threads: used === 'cpu' ? pool : null, score: score.ms, gpu: score.gpu, rank: rank.ms, seq };
  },

  /** transformers.js (ONNX Runtime Web) running the same sequences through the backbone. */
  async transformers({ dtype, threads = 1, device = 'wasm', work, runs }) {
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = '/work/';
    env.useBrowserCache = false;
    env.backends.onnx.wasm.wasmPaths = '/tjs/onnxruntime-web/dist/';
    env.backends.onnx.wasm.numThreads = threads;
    const model = await AutoModel.from_pretrained('minilm', { dtype, device });
    const { router, expert, expert_types: types } = work.ids;
    const experts = (n) => inputs(Array(n).fill(expert), Array(n).fill(types));
    const [scoreRows, rankRows, routerRows] = [experts(work.experts), experts(work.experts * work.candidates.length), inputs([router])];
    // one score: the router's pass and one batched pass of the experts' rows, as dmoerm runs it
    const score = await times(async () => {
      await model(routerRows);
      await model(scoreRows);
    }, runs.score);
    const rank = await times(async () => {
      await model(routerRows);
      await model(rankRows);
    }, runs.rank);
    const seq = [];
    for (const s of runs.sequences === 0 ? [] : work.sequences) {
      const one = inputs([s.ids]);
      seq.push((await times(() => model(one), runs.score)).ms);
    }
    await model.dispose();
    const used = device === 'wasm' ? env.backends.onnx.wasm.numThreads : null;
    return { device, threads: used, score: score.ms, gpu: score.gpu, rank: rank.ms, seq };
  },
};
window.benchReady = true;
