// Shared by the Node and browser tests: the parity fixture bundles of crates/dmoerm's tests,
// packed by the native CLI, and their PyTorch reference outputs.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
// the hf_* ones are Hugging Face reward-model directories (no dmoerm.json), packed as they are
export const FIXTURES = [
  'llama', 'llama3_rope', 'qwen2', 'qwen3', 'bert', 'bert_mean', 'plain_rm', 'mistral_window', 'qwen2_window',
  'hf_llama3', 'hf_qwen2', 'hf_mistral', 'hf_qwen3_multilabel', 'hf_bert',
];

/** The native `dmoerm` binary (built by `cargo test --workspace`). */
export function dmoermBin() {
  const target = process.env.CARGO_TARGET_DIR || join(root, 'target');
  const bin = join(target, 'debug', 'dmoerm');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build it with cargo build --workspace`);
  return bin;
}

/** Packs every fixture into a temporary directory; returns {name: path}. */
export function packFixtures() {
  const dir = mkdtempSync(join(tmpdir(), 'dmoerm-npm-'));
  const out = {};
  for (const name of FIXTURES) {
    out[name] = join(dir, `${name}.dmoerm`);
    execFileSync(dmoermBin(), ['pack', '--model', join(root, 'tests/fixtures', name), '--out', out[name]]);
  }
  return out;
}

export function expected(name) {
  return JSON.parse(readFileSync(join(root, 'tests/fixtures', name, 'expected.json'), 'utf8'));
}

/** Asserts a score equals the reference within `tol` (every number, same task). */
export function checkScore(assert, got, want, tol, what) {
  assert.equal(got.task, want.task, `${what}: task`);
  assert.equal(got.truncated, want.truncated, `${what}: truncated`);
  const close = (a, b, k) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${k} ${a} vs ${b}`);
  close(got.reward, want.reward, 'reward');
  assert.deepEqual(Object.keys(got.capabilities), Object.keys(want.capabilities), `${what}: capabilities`);
  for (const [k, v] of Object.entries(want.capabilities)) close(got.capabilities[k], v, k);
  assert.deepEqual(Object.keys(got.task_probs), Object.keys(want.task_probs), `${what}: tasks`);
  for (const [k, v] of Object.entries(want.task_probs)) close(got.task_probs[k], v, `p(${k})`);
}
