// The npm package in Node, on the wasm CPU backend: every parity fixture bundle scores as the
// PyTorch reference (and so as native Rust) within the fixtures' tolerance, on the threaded
// build in a worker thread (the default: all cores) and on the single-thread build.
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { availableParallelism, tmpdir } from 'node:os';
import { RewardModel, webgpuAvailable, _panicForTests, _panicInNextScoreForTests, _setPartBytesForTests } from '../src/node.js';
import { serve } from '../../../scripts/serve.mjs';
import { dirname, join } from 'node:path';
import { FIXTURES, packFixtures, expected, checkScore, root, dmoermBin } from './fixtures.mjs';

const packed = packFixtures();

// the threaded build, as Node loads by default where it has 2 cores or more (this machine kind)
const cores = availableParallelism();
for (const [name, threads] of [...FIXTURES.map((f) => [f, undefined]), ['llama', 1], ['bert', 1], ['hf_qwen2', 1]]) {
  test(`${name}: scores match the reference (${threads ? `${threads} thread` : `default threads: ${cores}`})`, async () => {
    const exp = expected(name);
    const rm = await RewardModel.load(packed[name], { device: 'cpu', threads });
    assert.equal(rm.device, 'cpu');
    assert.equal(rm.threads, threads ?? cores);
    for (const [i, input] of exp.inputs.entries()) {
      const got = await rm.score({ messages: input.messages, response: input.response });
      checkScore(assert, got, input.expected, exp.tolerance, `${name} input ${i}`);
    }
    // the batch path gives the same numbers
    const batch = await rm.scoreBatch(exp.inputs.map((i) => ({ messages: i.messages, response: i.response })));
    for (const [i, input] of exp.inputs.entries()) checkScore(assert, batch[i], input.expected, exp.tolerance, `${name} batch ${i}`);
    rm.dispose();
    assert.throws(() => rm.device, /disposed/);
  });
}

test('rank: best-of-n order and rewards match the reference', async () => {
  const exp = expected('llama');
  const rm = await RewardModel.load(new Uint8Array(readFileSync(packed.llama)), { device: 'cpu' });
  const ranked = await rm.rank(exp.rank.prompt, exp.rank.candidates);
  assert.deepEqual(ranked.map((r) => r.index), exp.rank.order);
  for (const r of ranked) {
    assert.ok(Math.abs(r.reward - exp.rank.rewards[r.index]) <= exp.tolerance, `${r.reward} vs ${exp.rank.rewards[r.index]}`);
    assert.equal(r.response, exp.rank.candidates[r.index]);
    assert.equal(r.task, exp.rank.task);
  }
  assert.deepEqual(Object.keys(rm.info.tasks), ['chat', 'obj_qa']);
});

// A bundle over 1 GiB is held in parts (a browser moves at most 2 GiB to a Worker in one
// buffer); here in parts of 4093 bytes, so that tensors and the header straddle them: from a
// file, from the caller's bytes and downloaded, on one thread and in the threads' worker.
test('a bundle held in many parts scores as the reference', async () => {
  const server = await serve({ mounts: { '/fixtures/': dirname(packed.llama) } });
  _setPartBytesForTests(4093);
  try {
    const exp = expected('llama');
    const bytes = new Uint8Array(readFileSync(packed.llama));
    const url = `${server.url}/fixtures/${packed.llama.split('/').pop()}`;
    for (const [source, threads] of [[packed.llama, 1], [packed.llama, undefined], [bytes, undefined], [url, 1], [url, undefined]]) {
      const rm = await RewardModel.load(source, { device: 'cpu', threads, cache: false });
      const got = await rm.scoreBatch(exp.inputs.map((i) => ({ messages: i.messages, response: i.response })));
      for (const [i, input] of exp.inputs.entries()) checkScore(assert, got[i], input.expected, exp.tolerance, `${typeof source} ${threads} input ${i}`);
      rm.dispose();
    }
    assert.equal(bytes.length, readFileSync(packed.llama).length, "the caller's bytes are copied, not moved");
  } finally {
    _setPartBytesForTests();
    await server.close();
  }
});

// A model's folder, not packed: a Hugging Face reward model's files (and a dmoerm bundle
// directory), read as the page or Node gives them, scores as the reference.
test('a folder of Hugging Face files, or a bundle directory, scores as the reference', async () => {
  const fixtures = `${root}/tests/fixtures`;
  const server = await serve({ mounts: { '/fixtures/': fixtures } });
  try {
    for (const [name, threads] of [['hf_qwen2', 1], ['hf_llama3', undefined], ['hf_bert', 1], ['llama', 1], ['qwen3', undefined]]) {
      const exp = expected(name);
      const inputs = exp.inputs.map((i) => ({ messages: i.messages, response: i.response }));
      // a directory (Node), and the Hugging Face files served at a URL
      const sources = [`${fixtures}/${name}/`, ...(name.startsWith('hf_') ? [`${server.url}/fixtures/${name}/`] : [])];
      for (const source of sources) {
        const events = [];
        const rm = await RewardModel.load(source, { device: 'cpu', threads, cache: false, onProgress: (e) => events.push(e.status) });
        assert.equal(rm.threads, threads ?? cores);
        const got = await rm.scoreBatch(inputs);
        for (const [i, input] of exp.inputs.entries()) checkScore(assert, got[i], input.expected, exp.tolerance, `${source} input ${i}`);
        assert.deepEqual(events.slice(-2), ['load', 'ready'], `${source}: progress`);
        rm.dispose();
      }
    }
  } finally {
    await server.close();
  }
});

/**
 * A Qwen2 reward model whose projections and embedding are large enough to quantise (hidden 128,
 * MLP 256, one layer; the hf_qwen2 fixture's tokenizer), f32 weights from a fixed generator, as
 * a folder in a temporary directory (Rust's hf_models.rs builds the same shapes).
 */
function quantizableFolder() {
  const dir = mkdtempSync(join(tmpdir(), 'dmoerm-quantizable-'));
  const fixture = `${root}/tests/fixtures/hf_qwen2`;
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(`${fixture}/${f}`, `${dir}/${f}`);
  const config = JSON.parse(readFileSync(`${fixture}/config.json`, 'utf8'));
  Object.assign(config, { hidden_size: 128, intermediate_size: 256, num_hidden_layers: 1, layer_types: ['full_attention'] });
  writeFileSync(`${dir}/config.json`, JSON.stringify(config));
  const [h, m, v, kv, l] = [128, 256, 400, 64, 'model.layers.0'];
  const shapes = {
    'model.embed_tokens.weight': [v, h],
    [`${l}.self_attn.q_proj.weight`]: [h, h],
    [`${l}.self_attn.q_proj.bias`]: [h],
    [`${l}.self_attn.k_proj.weight`]: [kv, h],
    [`${l}.self_attn.k_proj.bias`]: [kv],
    [`${l}.self_attn.v_proj.weight`]: [kv, h],
    [`${l}.self_attn.v_proj.bias`]: [kv],
    [`${l}.self_attn.o_proj.weight`]: [h, h],
    [`${l}.mlp.gate_proj.weight`]: [m, h],
    [`${l}.mlp.up_proj.weight`]: [m, h],
    [`${l}.mlp.down_proj.weight`]: [h, m],
    [`${l}.input_layernorm.weight`]: [h],
    [`${l}.post_attention_layernorm.weight`]: [h],
    'model.norm.weight': [h],
    'score.weight': [1, h],
  };
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) % 1025) / 4096 - 0.125;
  const header = {};
  const data = [];
  let offset = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => (name.endsWith('norm.weight') ? 1 + random() : random()));
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + values.byteLength] };
    data.push(new Uint8Array(values.buffer));
    offset += values.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
  writeFileSync(`${dir}/model.safetensors`, Buffer.concat([length, json, ...data]));
  return dir;
}

test('a folder quantised as it loads scores as the CLI quantising it', async () => {
  const dir = quantizableFolder();
  const input = { prompt: 'What is the capital of France?', response: 'Paris, on the Seine.' };
  const cli = (extra) =>
    JSON.parse(
      execFileSync(dmoermBin(), ['score', '--model', dir, '--device', 'cpu', '--json', '--prompt', input.prompt, '--response', input.response, ...extra], {
        encoding: 'utf8',
      }),
    ).reward;
  const plain = cli([]);
  for (const [quantize, threads] of [['int8', 1], ['q4', undefined]]) {
    const rm = await RewardModel.load(`${dir}/`, { device: 'cpu', threads, quantize });
    const got = (await rm.score(input)).reward;
    const want = cli(['--quantize', quantize]);
    // the integer sums are the native kernels' exactly; the f32 around them (attention,
    // norms) differs in its last bits between the builds
    assert.ok(Math.abs(got - want) <= 1e-4, `${quantize}: ${got} vs the CLI's ${want}`);
    assert.ok(Math.abs(want - plain) > 1e-3, `${quantize}: the CLI's ${want} is the f32 model's ${plain}: nothing was quantised`);
    rm.dispose();
  }
  await assert.rejects(RewardModel.load(`${dir}/`, { device: 'cpu', quantize: 'q8' }), /quantize must be 'int8' or 'q4'/);
  await assert.rejects(RewardModel.load(packed.bert, { device: 'cpu', quantize: 'int8' }), /quantize applies to a folder/);
  rmSync(dir, { recursive: true });
});

test('a folder that cannot load is refused with the message the CLI gives', async () => {
  const { spawnSync } = await import('node:child_process');
  const { mkdtempSync, cpSync, rmSync, renameSync, truncateSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { dmoermBin } = await import('./fixtures.mjs');
  const copy = (from, edit) => {
    const dir = `${mkdtempSync(`${tmpdir()}/dmoerm-folder-`)}/model`;
    cpSync(`${root}/tests/fixtures/${from}`, dir, { recursive: true });
    edit(dir);
    return dir;
  };
  const cases = [
    ['no config.json', copy('hf_llama3', (d) => rmSync(`${d}/config.json`)), /neither dmoerm\.json .* nor config\.json/],
    ['no tokenizer', copy('hf_llama3', (d) => rmSync(`${d}/tokenizer.json`)), /no tokenizer\.json/],
    ['not a reward model', copy('llama/backbone', () => {}), /LlamaForCausalLM/],
    ['.bin weights', copy('hf_llama3', (d) => renameSync(`${d}/model.safetensors`, `${d}/pytorch_model.bin`)), /only PyTorch \.bin weights/],
    [
      'a shard the index names is missing',
      copy('hf_llama3', (d) => {
        renameSync(`${d}/model.safetensors`, `${d}/model-00001-of-00002.safetensors`);
        const weight_map = { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' };
        writeFileSync(`${d}/model.safetensors.index.json`, JSON.stringify({ weight_map }));
      }),
      /names the shard model-00002-of-00002\.safetensors, which is not in the directory/,
    ],
    [
      'a file outside the folder named by the index',
      copy('hf_llama3', (d) => {
        rmSync(`${d}/model.safetensors`);
        writeFileSync(`${d}/model.safetensors.index.json`, JSON.stringify({ weight_map: { a: '../../hf_qwen2/model.safetensors' } }));
      }),
      /must be relative and stay inside the bundle/,
    ],
  ];
  for (const [what, dir, message] of cases) {
    const cli = spawnSync(dmoermBin(), ['score', '--model', dir, '--prompt', 'a', '--response', 'b'], { encoding: 'utf8' });
    assert.notEqual(cli.status, 0, what);
    const said = cli.stderr.trim().replace(/^error: /, '');
    for (const threads of [1, 2]) {
      await assert.rejects(RewardModel.load(`${dir}/`, { device: 'cpu', threads }), (e) => {
        assert.ok(e instanceof Error, what);
        assert.match(e.message, message, what);
        assert.ok(said.includes(e.message), `${what}: the CLI says ${said}; the package ${e.message}`);
        return true;
      });
    }
  }
  // weights that cannot fit in wasm's 4 GiB are refused from their headers, before they are
  // read: two shards of 2.8 GB, and one file of 5.6 GB, which wasm32 cannot address (sparse
  // files on disk)
  const safetensors = (path, tensors) => {
    const header = {};
    let at = 0;
    for (const [name, shape] of Object.entries(tensors)) {
      const end = at + 4 * shape.reduce((a, b) => a * b, 1);
      header[name] = { dtype: 'F32', shape, data_offsets: [at, end] };
      at = end;
    }
    const json = Buffer.from(JSON.stringify(header));
    const start = Buffer.alloc(8);
    start.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(path, Buffer.concat([start, json]));
    truncateSync(path, 8 + json.length + at);
  };
  const sharded = copy('hf_qwen2', (d) => {
    rmSync(`${d}/model.safetensors`);
    safetensors(`${d}/model-00001-of-00002.safetensors`, { 'score.weight': [1, 64], a: [700_000_000] });
    safetensors(`${d}/model-00002-of-00002.safetensors`, { b: [700_000_000] });
    const weight_map = { 'score.weight': 'model-00001-of-00002.safetensors', a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' };
    writeFileSync(`${d}/model.safetensors.index.json`, JSON.stringify({ weight_map }));
  });
  const single = copy('hf_qwen2', (d) => safetensors(`${d}/model.safetensors`, { 'score.weight': [1, 64], a: [1_400_000_000] }));
  for (const threads of [1, 2]) {
    await assert.rejects(RewardModel.load(`${sharded}/`, { device: 'cpu', threads }), /out of memory: the model needs about 8\.4 GB loaded/);
    await assert.rejects(RewardModel.load(`${single}/`, { device: 'cpu', threads }), /lies beyond the 4 GiB .* split the weights into shards/);
  }
  // still usable after them
  const rm = await RewardModel.load(`${root}/tests/fixtures/hf_qwen2/`, { device: 'cpu', threads: 1 });
  assert.ok(Number.isFinite((await rm.score({ prompt: 'a', response: 'b' })).reward));
});

test('errors reach JS as Error with a message', async () => {
  await assert.rejects(RewardModel.load(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])), (e) => e instanceof Error && /packed dmoerm bundle/.test(e.message));
  await assert.rejects(RewardModel.load('/nonexistent/model.dmoerm'), (e) => e instanceof Error && /ENOENT/.test(e.message));
  await assert.rejects(RewardModel.load(packed.llama, { device: 'tpu' }), /expected 'webgpu', 'cpu' or 'auto'/);
  for (const threads of [0, 1.5, '2']) {
    await assert.rejects(RewardModel.load(packed.llama, { device: 'cpu', threads }), (e) => e instanceof TypeError && /threads must be a positive integer/.test(e.message));
  }
  // Node computes on the threads it is given (worker threads: one pool, of the size the first
  // threaded load asked for), or on this thread with one
  for (const threads of [1, 2]) {
    const rm = await RewardModel.load(packed.llama, { device: 'cpu', threads });
    assert.equal(rm.threads, threads);
    rm.dispose();
  }
  // Node has no navigator.gpu
  assert.equal(await webgpuAvailable(), false);
  await assert.rejects(RewardModel.load(packed.llama, { device: 'webgpu' }), /WebGPU is not available/);
  const rm = await RewardModel.load(packed.llama, { device: 'auto' });
  assert.equal(rm.device, 'cpu');
  await assert.rejects(rm.score({ response: 'x' }), /prompt/);
  await assert.rejects(rm.score({ promt: 'a', response: 'b' }), /a prompt .* is required/);
  await assert.rejects(rm.score({ prompt: 'a' }), /bad input: missing field `response`/);
  await assert.rejects(rm.score({ prompt: 'a', messages: [], response: 'b' }), /not both/);
  await assert.rejects(rm.score({ messages: [{ role: 'assistant', content: 'hi' }], response: 'b' }), /user message/);
  await assert.rejects(rm.rank('q', []), /no candidates/);
  // still usable after errors
  const ok = await rm.score({ prompt: 'What is the capital of France?', response: 'Paris.' });
  assert.ok(Number.isFinite(ok.reward));
});

// tokenizers 0.22 panics on a JSON syntax error inside tokenizer.json's `decoder` section
// (found by the fuzzer; native code catches it, wasm cannot): a trap must reach JS as an
// Error with the panic message, and the package must recover with a fresh wasm instance.
function withBrokenDecoder(bytes) {
  return withTokenizer(bytes, (text) => {
    const brace = text.indexOf('{', text.indexOf('"decoder"'));
    return `${text.slice(0, brace)}{"type": ,${text.slice(brace + 1)}`;
  });
}

/** The packed bundle `bytes` with its tokenizer.json replaced by `edit(text)`. */
function withTokenizer(bytes, edit) {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const files = JSON.parse(header.__metadata__['dmoerm.files']);
  const name = Object.keys(files).find((f) => f.endsWith('tokenizer.json'));
  files[name] = edit(files[name]);
  header.__metadata__['dmoerm.files'] = JSON.stringify(files);
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  padded.set(json);
  json = padded;
  const out = new Uint8Array(8 + json.length + bytes.length - 8 - headerLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + headerLen), 8 + json.length);
  return out;
}

test('a malformed tokenizer.json is an Error, not a trap', async () => {
  await assert.rejects(RewardModel.load(withBrokenDecoder(new Uint8Array(readFileSync(packed.llama)))), (e) => {
    assert.ok(e instanceof Error);
    assert.match(e.message, /tokenizer\.json: not valid JSON/);
    return true;
  });
});

// A seeded random walk over tokenizer.json mutations, as the native fuzzer makes them but
// through the wasm build, where a panic is a trap: every mutation must load or be an Error.
function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mutateTokenizer(text, rand) {
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  if (rand() < 0.3) {
    // text level: cut, delete or duplicate a span
    const at = Math.floor(rand() * text.length);
    const len = 1 + Math.floor(rand() * 40);
    return pick([
      () => text.slice(0, at),
      () => text.slice(0, at) + text.slice(at + len),
      () => text.slice(0, at) + text.slice(at, at + len) + text.slice(at),
    ])();
  }
  // structure level: replace one value somewhere in the document
  const doc = JSON.parse(text);
  const nodes = [];
  const walk = (v, parent, key) => {
    if (parent !== undefined) nodes.push([parent, key, v]);
    if (v && typeof v === 'object') for (const k of Object.keys(v)) walk(v[k], v, k);
  };
  walk(doc);
  const types = ['BPE', 'WordPiece', 'WordLevel', 'Unigram', 'ByteLevel', 'Metaspace', 'Sequence', 'Split',
    'Whitespace', 'BertPreTokenizer', 'NFC', 'Lowercase', 'Replace', 'Strip', 'TemplateProcessing',
    'RobertaProcessing', 'BertProcessing', 'ByteFallback', 'Fuse', 'Prepend', 'Regex', 'String'];
  const [parent, key, value] = pick(nodes);
  const other = pick(nodes)[2];
  parent[key] = pick([
    () => null, () => 0, () => -1, () => 4294967296, () => 1.5, () => '', () => 'x', () => [], () => ({}), () => true,
    () => pick(types), () => structuredClone(other), () => [structuredClone(value)], () => ({ type: pick(types) }),
  ])();
  return JSON.stringify(doc);
}

test('mutated tokenizer.json files load or are an Error; none traps', async (t) => {
  const bundles = { llama: new Uint8Array(readFileSync(packed.llama)), bert: new Uint8Array(readFileSync(packed.bert)) };
  const rand = mulberry32(13);
  let errors = 0;
  let loaded = 0;
  for (let i = 0; i < 1000; i++) {
    const name = i % 2 ? 'llama' : 'bert';
    const bytes = withTokenizer(bundles[name], (t) => mutateTokenizer(t, rand));
    try {
      const rm = await RewardModel.load(bytes, { device: 'cpu' });
      loaded += 1;
      rm.dispose();
    } catch (e) {
      assert.ok(e instanceof Error);
      assert.doesNotMatch(e.message, /inside wasm/, `mutation ${i} of ${name} trapped`);
      errors += 1;
    }
  }
  // both outcomes were exercised, and the instance is still the one it was
  t.diagnostic(`${errors} errors, ${loaded} loads`);
  assert.ok(errors >= 100 && loaded >= 20, `${errors} errors, ${loaded} loads`);
  const rm = await RewardModel.load(packed.llama, { device: 'cpu' });
  assert.ok(Number.isFinite((await rm.score({ prompt: 'a', response: 'b' })).reward));
});

test('a panic inside wasm is an Error with its message, and the package recovers', async () => {
  // a model in this thread's instance (one thread), which the panic traps
  const good = await RewardModel.load(packed.llama, { device: 'cpu', threads: 1 });
  await assert.rejects(_panicForTests(), /failed inside wasm \([\s\S]*a deliberate test panic/);
  // models of the trapped instance say so instead of trapping again
  await assert.rejects(async () => good.score({ prompt: 'a', response: 'b' }), /trapped; load it again/);
  // a new load gets a fresh instance that scores correctly
  const exp = expected('llama');
  const rm = await RewardModel.load(packed.llama, { device: 'cpu' });
  const input = exp.inputs[0];
  checkScore(assert, await rm.score({ messages: input.messages, response: input.response }), input.expected, exp.tolerance, 'after recovery');
});

test('a trap while scoring on the CPU rejects that call with its message, and the package recovers', { timeout: 180_000 }, async () => {
  const exp = expected('llama');
  const input = exp.inputs[0];
  const conv = { messages: input.messages, response: input.response };
  // on this thread, in the worker thread, and on a thread of its pool
  for (const [threads, onPool] of [[1, false], [2, false], [2, true]]) {
    for (const [what, call] of [
      ['score', (rm) => rm.score(conv)],
      ['scoreBatch', (rm) => rm.scoreBatch([conv, conv])],
      ['rank', (rm) => rm.rank('a prompt', ['one', 'two'])],
    ]) {
      const at = `${what} on ${threads} thread(s)${onPool ? ', on the pool' : ''}`;
      const rm = await RewardModel.load(packed.llama, { device: 'cpu', threads });
      await _panicInNextScoreForTests(rm, { onPool });
      // the promise settles (it used to stay pending, the trap thrown elsewhere)
      await assert.rejects(call(rm), /failed inside wasm \([\s\S]*a deliberate test panic/, at);
      await assert.rejects(async () => rm.score(conv), /trapped; load it again/, at);
      const fresh = await RewardModel.load(packed.llama, { device: 'cpu', threads });
      checkScore(assert, await fresh.score(conv), input.expected, exp.tolerance, `after the trap in ${at}`);
      fresh.dispose();
    }
  }
});

test('a script that scores on threads exits by itself, with its output', async () => {
  const { execFile } = await import('node:child_process');
  const script = `
    const { RewardModel } = await import(${JSON.stringify(new URL('../src/node.js', import.meta.url).href)});
    const rm = await RewardModel.load(${JSON.stringify(packed.llama)}, { device: 'cpu', threads: 2 });
    const s = await rm.score({ prompt: 'a', response: 'b' });
    console.log(rm.threads, Number.isFinite(s.reward));`; // no dispose: the threads are idle
  const run = new Promise((resolve, reject) =>
    execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 }, (e, stdout, stderr) => (e ? reject(new Error(`${e.message}: ${stderr}`)) : resolve({ stdout, stderr }))),
  );
  const { stdout, stderr } = await run;
  assert.equal(stdout.trim(), '2 true');
  assert.equal(stderr, '', 'nothing on stderr');
});

test('the default model loads and ranks its model card examples', async () => {
  const rm = await RewardModel.load(`${root}/models/default/model.dmoerm`, { device: 'cpu' });
  assert.deepEqual(Object.keys(rm.info.tasks), ['chat', 'obj_qa', 'sayings', 'text']);
  const prompt = 'What does the word "harbor" mean?';
  const good = '"harbor" means a sheltered port where ships can take on or discharge cargo.';
  const truncated = '"harbor" means a sheltered port where';
  const wrongWord = '"slum" means a district of a city marked by poverty and inferior living conditions.';
  const ranked = await rm.rank(prompt, [wrongWord, truncated, good]);
  assert.deepEqual(ranked.map((r) => r.response), [good, truncated, wrongWord]);
  assert.equal(ranked[0].task, 'obj_qa');
  assert.ok(ranked[0].taskProbs.obj_qa > 0.95);
  // the experts see the defects: truncation costs completeness, another word costs relevance
  const by = Object.fromEntries(ranked.map((r) => [r.response, r.capabilities]));
  assert.ok(by[truncated].completeness < by[good].completeness - 1);
  assert.ok(by[wrongWord].relevance < by[good].relevance - 1);
  const saying = await rm.score({ prompt: 'Tell me a saying about patience.', response: 'Patience is a virtue.' });
  const rude = await rm.score({ prompt: 'Tell me a saying about patience.', response: 'Seriously? Whatever. Patience is a virtue.' });
  assert.equal(saying.task, 'sayings');
  assert.ok(rude.capabilities.tone < saying.capabilities.tone - 1 && rude.reward < saying.reward);
  rm.dispose();
});

test('results have the one JSON shape of the CLI (score --json, rank --json)', async () => {
  const { execFileSync } = await import('node:child_process');
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { dmoermBin } = await import('./fixtures.mjs');
  const model = `${root}/models/default/model.dmoerm`;
  const rm = await RewardModel.load(model, { device: 'cpu' });
  const prompt = 'What does the word "harbor" mean?';
  const response = 'A harbor is a sheltered port where ships can dock.';
  const cli = (args) => JSON.parse(execFileSync(dmoermBin(), [...args, '--model', model, '--device', 'cpu', '--json'], { encoding: 'utf8' }));
  const same = (got, want, what) => {
    // the same keys in the same order, nested maps included; the same model's numbers: both
    // compute this int8 bundle's projections in int8 (the CLI with AVX-512 VNNI or AVX2, wasm
    // with simd128), kernels that give the same sums bit for bit (dmoerm-quant's tests, also
    // run in wasm); the other f32 operations differ in their last bits, which moves a few
    // activation codes: over 80 test responses, rewards 0.004 apart on average, 0.028 at most
    // (reward standard deviation 1.5)
    const shape = (v) => (typeof v === 'number' ? 'number' : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)])) : v);
    assert.deepEqual(JSON.stringify(shape(got)), JSON.stringify(shape(want)), `${what}: shape`);
    assert.ok(Math.abs(got.reward - want.reward) < 0.03, `${what}: reward ${got.reward} vs ${want.reward}`);
  };
  const score = await rm.score({ prompt, response });
  same(JSON.parse(JSON.stringify(score)), cli(['score', '--prompt', prompt, '--response', response]), 'score');
  // 0.1's camelCase name is an alias of the same object, not a second key
  assert.equal(score.taskProbs, score.task_probs);
  assert.ok(!Object.keys(score).includes('taskProbs'));
  const candidates = [response, 'A port.'];
  const ranked = await rm.rank(prompt, candidates);
  const file = `${mkdtempSync(`${tmpdir()}/dmoerm-rank-`)}/candidates.txt`;
  writeFileSync(file, candidates.join('\n') + '\n');
  const cliRanked = cli(['rank', '--prompt', prompt, '--candidates', file]);
  ranked.forEach((r, i) => same(JSON.parse(JSON.stringify(r)), cliRanked[i], `rank ${i}`));
  rm.dispose();
});

test('the TypeScript declarations (generated from the Rust types + the wrapper) compile against their use', async () => {
  const { execFileSync } = await import('node:child_process');
  const dir = `${root}/bindings/npm`;
  // throws with tsc's diagnostics on a type error (or on an @ts-expect-error that no longer errs)
  execFileSync(`${dir}/node_modules/.bin/tsc`, ['-p', 'test/types/tsconfig.json'], { cwd: dir, encoding: 'utf8' });
});
