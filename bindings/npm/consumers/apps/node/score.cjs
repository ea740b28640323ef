// Node, CommonJS: `node score.cjs MODEL INPUTS_JSON` prints the scores as JSON. The package is
// ES modules: `require` loads it where Node can require them (20.19 and 22.12 on).
const { RewardModel } = require('dmoerm');

async function main() {
  const [model, inputs] = process.argv.slice(2);
  const rm = await RewardModel.load(model, { device: 'cpu' });
  const scores = [];
  for (const input of JSON.parse(inputs)) scores.push(await rm.score(input));
  console.log(JSON.stringify({ device: rm.device, threads: rm.threads, scores }));
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
