// A real-size Hugging Face reward model's folder opened in the web demo, as a user opens
// theirs: a Qwen3ForSequenceClassification of Qwen3-0.6B's shape (hidden 1024, 28 layers,
// 16 query / 8 KV heads of 128, MLP 3072, vocabulary 151,936, tied embeddings, one label) in
// bf16, 1.2 GB, set on the demo's "Open a reward-model folder" input in headless Chromium; the
// CPU on threads (the demo's page is cross-origin isolated). Prints the time from choosing the
// folder to ready, the score of two responses, the wasm memory, and the rewards beside the
// native CLI's on the same folder.
//
//     node benches/browser/folder.mjs          # after ./bindings/npm/build.sh and a CLI build
//
// The weights are random (no checkpoint can be downloaded here; speed and memory do not depend
// on the values) and the tokenizer is the small ChatML one of the hf_qwen3_multilabel fixture
// (its ids fit the vocabulary). Writes the folder under $CARGO_TARGET_DIR/bench-folder once.
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { launch } from '../../bindings/npm/test/chromium.mjs';
import { dmoermBin, root } from '../../bindings/npm/test/fixtures.mjs';
import { serve } from '../../scripts/serve.mjs';

const SHAPE = { vocab: 151936, hidden: 1024, layers: 28, heads: 16, kvHeads: 8, headDim: 128, mlp: 3072 };
const dir = join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'bench-folder', 'qwen3-0.6b-rm');

// The tensors of a Qwen3ForSequenceClassification, as transformers names them: [name, shape, norm?]
function tensors({ vocab, hidden, layers, heads, kvHeads, headDim, mlp }) {
  const out = [['model.embed_tokens.weight', [vocab, hidden]]];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      [`${p}.input_layernorm.weight`, [hidden], true],
      [`${p}.self_attn.q_proj.weight`, [heads * headDim, hidden]],
      [`${p}.self_attn.k_proj.weight`, [kvHeads * headDim, hidden]],
      [`${p}.self_attn.v_proj.weight`, [kvHeads * headDim, hidden]],
      [`${p}.self_attn.o_proj.weight`, [hidden, heads * headDim]],
      [`${p}.self_attn.q_norm.weight`, [headDim], true],
      [`${p}.self_attn.k_norm.weight`, [headDim], true],
      [`${p}.post_attention_layernorm.weight`, [hidden], true],
      [`${p}.mlp.gate_proj.weight`, [mlp, hidden]],
      [`${p}.mlp.up_proj.weight`, [mlp, hidden]],
      [`${p}.mlp.down_proj.weight`, [hidden, mlp]],
    );
  }
  out.push(['model.norm.weight', [hidden], true], ['score.weight', [1, hidden]]);
  return out;
}

// bf16 values: norms 1, the rest uniform in +-0.04 (a seeded generator), written in blocks.
function writeModel() {
  mkdirSync(dir, { recursive: true });
  const fixture = join(root, 'tests/fixtures/hf_qwen3_multilabel');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja']) copyFileSync(join(fixture, f), join(dir, f));
  const { vocab, hidden, layers, heads, kvHeads, headDim, mlp } = SHAPE;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['Qwen3ForSequenceClassification'], model_type: 'qwen3', attention_bias: false, head_dim: headDim,
    hidden_act: 'silu', hidden_size: hidden, intermediate_size: mlp, max_position_embeddings: 40960,
    num_attention_heads: heads, num_hidden_layers: layers, num_key_value_heads: kvHeads, rms_norm_eps: 1e-6,
    rope_theta: 1000000, tie_word_embeddings: true, vocab_size: vocab, pad_token_id: 0, torch_dtype: 'bfloat16',
    id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 },
  }, null, 2));
  const list = tensors(SHAPE);
  const header = {};
  let at = 0;
  for (const [name, shape] of list) {
    const end = at + 2 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'BF16', shape, data_offsets: [at, end] };
    at = end;
  }
  const json = Buffer.from(JSON.stringify(header));
  const fd = openSync(join(dir, 'model.safetensors.partial'), 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, len);
  writeSync(fd, json);
  let seed = 7;
  const block = new Uint16Array(1 << 22);
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  for (const [, shape, norm] of list) {
    let n = shape.reduce((a, b) => a * b, 1);
    while (n > 0) {
      const m = Math.min(n, block.length);
      for (let i = 0; i < m; i++) {
        seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
        f[0] = norm ? 1 : ((seed / 2 ** 32) - 0.5) * 0.08;
        block[i] = bits[0] >>> 16;
      }
      writeSync(fd, new Uint8Array(block.buffer, 0, 2 * m));
      n -= m;
    }
  }
  closeSync(fd);
  execFileSync('mv', [join(dir, 'model.safetensors.partial'), join(dir, 'model.safetensors')]);
}

if (!existsSync(join(dir, 'model.safetensors'))) writeModel();

const prompt = 'Explain in two sentences why the sky is blue on a clear day.';
const responses = [
  'Sunlight scatters off the molecules of the air, and blue light, with its short wavelength, scatters much more than red. So blue light reaches our eyes from every part of the sky.',
  'Because the ocean reflects onto it.',
];
const native = responses.map((response) =>
  JSON.parse(execFileSync(dmoermBin(), ['score', '--model', dir, '--prompt', prompt, '--response', response, '--json'], { encoding: 'utf8' })).reward,
);

const server = await serve();
const browser = await launch('cpu');
const page = await browser.newPage();
page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
await page.goto(`${server.url}/web-demo/?device=cpu`);
await page.waitForSelector('body[data-ready="true"]', { timeout: 300_000 });
const t0 = Date.now();
await page.setInputFiles('#folder', dir);
await page.waitForSelector('#model-name:text("qwen3-0.6b-rm")');
await page.waitForSelector('body[data-ready="true"]', { timeout: 600_000 });
const loadSeconds = (Date.now() - t0) / 1000;
const error = await page.isVisible('#error') ? await page.textContent('#error') : null;
if (error) throw new Error(error);
await page.fill('#prompt', prompt);
for (const [i, r] of responses.entries()) await page.fill(`.response-text >> nth=${i}`, r);
await page.fill('.response-text >> nth=2', '');
const shown = [];
for (let run = 0; run < 2; run++) {
  const before = Number((await page.getAttribute('body', 'data-scored')) ?? 0);
  await page.click('#score');
  await page.waitForSelector(`body[data-scored="${before + 1}"]`, { timeout: 600_000 });
  shown.push(await page.textContent('#timing'));
}
const rewards = await page.$$eval('li.ranked', (lis) => lis.map((li) => [li.querySelector('.muted').textContent, li.querySelector('.reward').textContent]));
const { wasmMemoryBytes } = await page.evaluate(async () => ({ wasmMemoryBytes: await (await import('/bindings/npm/src/index.js')).wasmMemoryBytes() }));
const threads = await page.textContent('#device');
const screenshot = join(dir, '..', 'demo.png');
await page.screenshot({ path: screenshot, fullPage: true });
console.log(JSON.stringify({ folder: dir, device: threads, loadSeconds, scores: shown, rewards, native, wasmMemoryMB: Math.round(wasmMemoryBytes / 1e6), screenshot }, null, 1));
await browser.close();
await server.close();
