// dmoerm against transformers.js in the same headless Chromium (Debian's chromium, wasm CPU),
// on the same weights (all-MiniLM-L6-v2) and the same token sequences: one configuration per
// page, medians of the timed runs, a table with the ratios (transformers.js time / dmoerm
// time: above 1, dmoerm is faster). benches/browser/run.sh prepares WORK_DIR.
//
//   node benches/browser/bench.mjs WORK_DIR
//
// RUNS (15) and RANK_RUNS (5) timed runs, after one untimed; THREADS (2) for the threaded
// transformers.js rows. WEBGPU=1 adds both sides on WebGPU (SwiftShader here: tens of seconds
// a score), the score only, WEBGPU_RUNS (3) times, with the compute dispatches, queue submits
// and buffer read-backs of one score (page.html counts them). ONLY=text keeps the configurations whose
// name contains it (WEBGPU=1 ONLY=WebGPU: the WebGPU rows alone).
//
// WORK_DIR holds work.json (the inputs and their token ids), default-f32.dmoerm (and
// default-q4.dmoerm, its q4 packing, for the WebGPU rows), minilm-rm-f32.dmoerm and
// minilm-rm-int8.dmoerm (a plain reward model on MiniLM), and minilm/ (the ONNX export
// transformers.js loads).
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from '../../bindings/npm/test/chromium.mjs';
import { serve } from '../../scripts/serve.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const work = resolve(process.argv[2] ?? '');
const spec = JSON.parse(readFileSync(join(work, 'work.json'), 'utf8'));
const runs = { score: Number(process.env.RUNS ?? 15), rank: Number(process.env.RANK_RUNS ?? 5) };
const threads = Number(process.env.THREADS ?? 2); // the browser's default count here (2 cores)

const f32 = { model: '/work/default-f32.dmoerm', plain: '/work/minilm-rm-f32.dmoerm' };
const int8 = { model: '/models/default/model.dmoerm', plain: '/work/minilm-rm-int8.dmoerm' };
const configs = [
  { name: 'dmoerm fp32, 1 thread', side: 'dmoerm', args: { ...f32, threads: 1 } },
  { name: `dmoerm fp32, ${threads} threads`, side: 'dmoerm', args: { ...f32, threads } },
  { name: 'transformers.js fp32, 1 thread', side: 'transformers', args: { dtype: 'fp32', threads: 1 } },
  { name: `transformers.js fp32, ${threads} threads`, side: 'transformers', args: { dtype: 'fp32', threads } },
  { name: 'dmoerm int8, 1 thread', side: 'dmoerm', args: { ...int8, threads: 1 } },
  { name: `dmoerm int8, ${threads} threads`, side: 'dmoerm', args: { ...int8, threads } },
  { name: 'transformers.js q8, 1 thread', side: 'transformers', args: { dtype: 'q8', threads: 1 } },
  { name: `transformers.js q8, ${threads} threads`, side: 'transformers', args: { dtype: 'q8', threads } },
];

if (process.env.WEBGPU === '1') {
  const webgpuRuns = { score: Number(process.env.WEBGPU_RUNS ?? 3), rank: 0, sequences: 0 };
  configs.push(
    { name: 'dmoerm fp32, WebGPU', side: 'dmoerm', mode: 'webgpu', runs: webgpuRuns, args: { ...f32, device: 'webgpu' } },
    // the shipped int8 default model and its q4 packing, each against transformers.js fp32
    { name: 'dmoerm int8, WebGPU', side: 'dmoerm', mode: 'webgpu', runs: webgpuRuns, args: { ...int8, device: 'webgpu' } },
    { name: 'dmoerm q4, WebGPU', side: 'dmoerm', mode: 'webgpu', runs: webgpuRuns, args: { ...int8, model: '/work/default-q4.dmoerm', device: 'webgpu' } },
    { name: 'transformers.js fp32, WebGPU', side: 'transformers', mode: 'webgpu', runs: webgpuRuns, args: { dtype: 'fp32', device: 'webgpu' } },
  );
}

if (process.env.ONLY) configs.splice(0, configs.length, ...configs.filter((c) => c.name.includes(process.env.ONLY)));

const median = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[xs.length >> 1] : NaN);
const server = await serve({ mounts: { '/tjs/': join(here, 'node_modules'), '/work/': work } });
const results = [];
try {
  for (const c of configs) {
    const browser = await launch(c.mode ?? 'cpu');
    try {
      const page = await browser.newPage();
      page.on('console', (m) => m.type() === 'error' && console.error(`[chromium] ${m.text()}`));
      page.on('pageerror', (e) => console.error(`[chromium] ${e}`));
      await page.goto(`${server.url}/benches/browser/page.html`);
      await page.waitForFunction(() => window.benchReady === true);
      const isolated = await page.evaluate(() => window.crossOriginIsolated);
      const r = await page.evaluate(({ side, args }) => window.bench[side](args), {
        side: c.side,
        args: { ...c.args, work: spec, runs: c.runs ?? runs },
      });
      const row = { ...c, device: r.device, isolated, threads: r.threads, score: median(r.score), gpu: r.gpu, rank: median(r.rank), seq: r.seq.map(median) };
      const gpu = r.gpu?.dispatches ? `, per score ${r.gpu.dispatches} dispatches, ${r.gpu.submits} submits, ${r.gpu.readbacks} read-backs` : '';
      console.error(`${c.name}: score ${row.score.toFixed(0)} ms, rank ${row.rank.toFixed(0)} ms, sequences ${row.seq.map((x) => x.toFixed(0)).join(' / ')} ms (device ${r.device}, threads ${row.threads}, isolated ${isolated}${gpu})`);
      results.push(row);
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
}
writeFileSync(join(work, 'results.json'), JSON.stringify({ spec: { ...spec, ids: undefined }, runs, results }, null, 1));

// the table: each transformers.js row against the dmoerm row of its precision
const works = ['score', 'rank', ...spec.sequences.map((s) => `seq${s.tokens}`)];
const label = {
  score: `score (router ${spec.ids.router.length} + ${spec.experts} x ${spec.ids.expert.length} tokens)`,
  rank: `rank of ${spec.candidates.length} (router + ${spec.experts * spec.candidates.length} x ${spec.ids.expert.length})`,
};
spec.sequences.forEach((s) => (label[`seq${s.tokens}`] = `one sequence of ${s.tokens} tokens (plain RM)`));
const value = (row, w) => (w === 'score' ? row.score : w === 'rank' ? row.rank : row.seq[works.indexOf(w) - 2] ?? NaN);
// each transformers.js row against dmoerm's of the same precision, device and thread count
const mine = (row) =>
  results.find(
    (r) =>
      r.side === 'dmoerm' &&
      r.args.device === row.args.device &&
      r.args.threads === row.args.threads &&
      (row.args.dtype === 'q8' ? r.name.includes('int8') : r.name.includes('fp32')),
  ) ?? { score: NaN, rank: NaN, seq: [] };
// dmoerm's quantised WebGPU rows: transformers.js fp32 on WebGPU against them
const theirs = (row) =>
  row.args.device === 'webgpu' && !row.name.includes('fp32')
    ? results.find((r) => r.side === 'transformers' && r.args.device === 'webgpu')
    : undefined;
const lines = ['| work | configuration | threads | median ms | transformers.js / dmoerm |', '| --- | --- | --- | --- | --- |'];
for (const w of works) {
  for (const row of results.filter((r) => !Number.isNaN(value(r, w)))) {
    const other = theirs(row);
    const ratio =
      row.side === 'transformers'
        ? `${(value(row, w) / value(mine(row), w)).toFixed(2)}x`
        : other
          ? `${(value(other, w) / value(row, w)).toFixed(2)}x (transformers.js fp32)`
          : '';
    lines.push(`| ${label[w]} | ${row.name} | ${row.threads ?? 'n/a'} | ${value(row, w).toFixed(0)} | ${ratio} |`);
  }
}
console.log(lines.join('\n'));
