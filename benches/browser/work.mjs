// The work of benches/browser, written as WORK_DIR/work.json: the default model's score input
// and rank candidates, and single sequences of 128 and 512 tokens for the plain reward model,
// each with the token ids dmoerm computes on (the `encode` example), which transformers.js
// then runs as they are.
//
//   node benches/browser/work.mjs ENCODE_BIN DMOERM_BIN WORK_DIR
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const [encodeBin, dmoermBin, work] = process.argv.slice(2);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const model = join(root, 'models/default/model.dmoerm');
const encode = (bundle, input) => JSON.parse(execFileSync(encodeBin, [bundle, JSON.stringify(input)], { encoding: 'utf8' }));

const input = {
  prompt: 'What does the word "harbor" mean, and where does it come from?',
  response:
    'A harbor is a sheltered stretch of water where ships, boats and barges can anchor safely, ' +
    'protected from waves and wind by the shape of the coast or by walls built for the purpose. ' +
    'The word comes from Old English herebeorg, a shelter or lodging, and a port is usually the town beside it.',
};
const ids = encode(model, input);
const score = JSON.parse(execFileSync(dmoermBin, ['score', '--model', model, '--device', 'cpu', '--json', '--prompt', input.prompt, '--response', input.response], { encoding: 'utf8' }));
const experts = Object.keys(score.capabilities).length;

// one sequence of exactly n tokens for the plain reward model: each " word" is one token
const plain = join(work, 'minilm-rm');
const sequence = (n) => {
  const at = (k) => ({ prompt: 'Rate this.', response: Array(k).fill('word').join(' ') });
  const overhead = encode(plain, at(10)).expert.length - 10;
  const s = at(n - overhead);
  const e = encode(plain, s);
  if (e.expert.length !== n) throw new Error(`a ${n}-token sequence came out as ${e.expert.length} tokens`);
  return { tokens: n, input: s, ids: e.expert };
};

const spec = { input, candidates: Array(16).fill(input.response), experts, task: score.task, ids, sequences: [sequence(128), sequence(512)] };
writeFileSync(join(work, 'work.json'), JSON.stringify(spec));
console.error(`work: router ${ids.router.length} tokens, ${experts} experts x ${ids.expert.length} tokens (task ${score.task}), sequences of 128 and 512 tokens`);
