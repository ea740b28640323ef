// Compiled (not run) by consumers.test.mjs with `tsc --noEmit`, once per module resolution
// (tsconfig.bundler.json, tsconfig.node16.json): the installed package's types, as an app sees
// them.
import { RewardModel, configure, type ProgressEvent, type Ranked, type Score } from 'dmoerm';

export async function use(): Promise<number> {
  configure({ wasmUrl: '/static/dmoerm_wasm_bg.wasm' });
  const rm = await RewardModel.load('/models/model.dmoerm', {
    device: 'auto',
    threads: 2,
    onProgress: (e: ProgressEvent) => void e.status,
  });
  const s: Score = await rm.score({ prompt: 'q', response: 'r' });
  const ranked: Ranked[] = await rm.rank([{ role: 'user', content: 'q' }], ['a', 'b']);
  // @ts-expect-error: the response is required
  await rm.score({ prompt: 'q' });
  // @ts-expect-error: no such option
  configure({ wasmURL: 'x' });
  const device: 'webgpu' | 'cpu' = rm.device;
  rm.dispose();
  return s.reward + ranked[0].reward + s.task_probs[s.task] + device.length;
}
