// Node, ES modules: `node score.mjs MODEL INPUTS_JSON [THREADS]` prints the scores as JSON.
import { RewardModel } from 'dmoerm';

const [model, inputs, threads] = process.argv.slice(2);
const rm = await RewardModel.load(model, { device: 'cpu', threads: threads ? Number(threads) : undefined });
const scores = [];
for (const input of JSON.parse(inputs)) scores.push(await rm.score(input));
console.log(JSON.stringify({ device: rm.device, threads: rm.threads, scores }));
