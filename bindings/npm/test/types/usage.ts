// Compiled (not run) by test/node.test.mjs with `tsc --noEmit --strict`: the package's
// declarations, written for the JS wrapper and generated from the Rust types, fit together
// and describe what the API returns.
import { RewardModel, type ProgressEvent, type Ranked, type Score } from '../../index.js';

export async function use(): Promise<number> {
  const events: string[] = [];
  const rm = await RewardModel.load('/model.dmoerm', {
    device: 'auto',
    threads: 2,
    onProgress: (e: ProgressEvent) => {
      if (e.status === 'download') events.push(`${e.loaded}/${e.total} ${e.fraction} ${e.cached}`);
      else if (e.status === 'load') events.push(`${e.bytes}`);
      else events.push(e.device);
    },
  });
  // a Hugging Face reward model's folder, as a page is given it or as served
  const input = document.querySelector('input[webkitdirectory]') as HTMLInputElement;
  const fromFolder = await RewardModel.load(input.files!, { device: 'cpu' });
  const fromUrl = await RewardModel.load('https://example.com/models/qwen-rm/');
  fromFolder.dispose();
  fromUrl.dispose();
  const s: Score = await rm.score({ prompt: 'q', response: 'r' });
  const m: Score = await rm.score({ messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'q' }], response: 'r' });
  const probs: Record<string, number> = s.task_probs;
  const caps: Record<string, number> = m.capabilities;
  const alias: Record<string, number> = s.taskProbs;
  const ranked: Ranked[] = await rm.rank('q', ['a', 'b']);
  const best: { index: number; response: string; reward: number; task: string; truncated: boolean } = ranked[0];
  // @ts-expect-error: a role is one of system, user, assistant
  await rm.score({ messages: [{ role: 'bot', content: 'q' }], response: 'r' });
  // @ts-expect-error: the response is required
  await rm.score({ prompt: 'q' });
  const threads: number = rm.threads;
  rm.dispose();
  return threads + s.reward + probs.x + caps.y + alias.x + best.reward + events.length;
}
