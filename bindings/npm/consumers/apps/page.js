// What each browser app of the consumer tests runs (apps/vite, apps/webpack, apps/static): the
// package imported by its name, as an app imports it, then one load and the scores of the
// inputs the test gives in the URL (?device=&threads=&inputs=), left on `window.result`.
// ?wasm=URL: the wasm builds are served from there (a CDN), as `configure` tells the package.
import { RewardModel, configure } from 'dmoerm';

const params = new URLSearchParams(location.search);

async function run() {
  const wasm = params.get('wasm');
  if (wasm) configure({ wasmUrl: `${wasm}/wasm/dmoerm_wasm_bg.wasm`, threadedWasmUrl: `${wasm}/wasm-threads/dmoerm_wasm_bg.wasm` });
  const threads = params.has('threads') ? Number(params.get('threads')) : undefined;
  const rm = await RewardModel.load(params.get('model') ?? '/model.dmoerm', { device: params.get('device') ?? 'auto', threads, cache: false });
  const scores = [];
  for (const input of JSON.parse(params.get('inputs') ?? '[]')) scores.push(await rm.score(input));
  const result = { device: rm.device, threads: rm.threads, isolated: globalThis.crossOriginIsolated === true, scores };
  rm.dispose();
  return result;
}

window.result = run().catch((e) => ({ error: `${e?.constructor?.name}: ${e?.message}` }));
