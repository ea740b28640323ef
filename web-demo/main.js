// The demo page: loads a packed bundle (models/default by default, or ?model=URL) with the
// npm package and scores the entered responses; "Open a reward-model folder" (or a folder
// dropped on the page) loads a Hugging Face reward model's files instead, in the tab.
import { RewardModel } from '../bindings/npm/src/index.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const modelUrl = params.get('model') ?? '../models/default/model.dmoerm';
const device = params.get('device') ?? 'auto';

// The default model knows its benchmark's tasks (see models/default/README.md): a good
// definition, a truncated one, and the definition of another word.
const EXAMPLES = [
  '"serendipity" means the faculty of making fortunate discoveries by accident.',
  '"serendipity" means the faculty of making',
  '"slum" means a district of a city marked by poverty and inferior living conditions.',
];

function addResponse(text = '') {
  const n = $('responses').children.length + 1;
  const wrap = document.createElement('div');
  wrap.className = 'response';
  wrap.innerHTML = `<label>Response ${n}</label><textarea rows="2" class="response-text"></textarea>`;
  wrap.querySelector('textarea').value = text;
  $('responses').append(wrap);
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
}

// One row of a bar chart: label, bar, value. Capability scores are logits (any sign):
// the bar shows sigmoid(score), the probability that the response is good at it.
function barRow(label, value, fraction) {
  const frag = document.createDocumentFragment();
  const name = document.createElement('span');
  name.textContent = label;
  const bar = document.createElement('div');
  bar.className = 'bar' + (fraction < 0.5 ? ' neg' : '');
  bar.dataset.capability = label;
  const fill = document.createElement('span');
  fill.style.width = `${(100 * Math.min(1, Math.max(0, fraction))).toFixed(1)}%`;
  bar.append(fill);
  const num = document.createElement('span');
  num.textContent = value.toFixed(3);
  frag.append(name, bar, num);
  return frag;
}

const sigmoid = (x) => 1 / (1 + Math.exp(-x));

let rm = null;

// Loads `source` (a URL, or a folder's files) in place of the model shown; `label` names it.
async function load(source, label) {
  $('error').hidden = true;
  $('score').disabled = true;
  $('result').hidden = true;
  document.body.dataset.ready = 'false';
  rm?.dispose();
  rm = null;
  $('model-name').textContent = label;
  try {
    rm = await RewardModel.load(source, {
      device,
      onProgress: (e) => {
        if (e.status === 'download') {
          $('progress').value = e.fraction;
          $('progress-text').textContent = `${(e.loaded / 1e6).toFixed(1)} / ${e.total ? (e.total / 1e6).toFixed(1) : '?'} MB${e.cached ? ' (cached)' : ''}`;
        } else if (e.status === 'load') {
          $('progress-text').textContent = `reading the model onto the device (${(e.bytes / 1e6).toFixed(1)} MB)`;
        } else if (e.status === 'ready') {
          $('progress-text').textContent = 'ready';
        }
      },
    });
  } catch (e) {
    $('device').textContent = 'device: none';
    showError(`Could not load the model from ${label}: ${e.message}`);
    return;
  }
  const threads = rm.threads > 1 ? `, ${rm.threads} threads` : '';
  $('device').textContent = `device: ${rm.device === 'webgpu' ? 'WebGPU' : `CPU (wasm${threads})`}`;
  $('model-name').textContent = rm.info.name ?? label;
  document.body.dataset.ready = 'true';
  $('score').disabled = false;
}

// The files under a dropped folder, each with its path in it (as <input webkitdirectory>
// gives `webkitRelativePath`).
async function droppedFiles(items) {
  const files = [];
  const walk = async (entry, path) => {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      Object.defineProperty(file, 'webkitRelativePath', { value: `${path}${file.name}` });
      files.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, `${path}${entry.name}/`);
      }
    }
  };
  for (const entry of [...items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean)) await walk(entry, '');
  return files;
}

async function main() {
  addResponse(EXAMPLES[0]);
  addResponse(EXAMPLES[1]);
  addResponse(EXAMPLES[2]);
  $('add').onclick = () => addResponse();
  $('folder').onchange = () => {
    const files = $('folder').files;
    if (files.length) load(files, files[0].webkitRelativePath.split('/')[0] || 'folder');
  };
  document.addEventListener('dragover', (e) => {
    e.preventDefault();
    document.body.classList.add('dragging');
  });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', async (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const files = await droppedFiles(e.dataTransfer.items);
    if (files.length) load(files, files[0].webkitRelativePath.split('/')[0]);
  });
  $('score').onclick = async () => {
    $('error').hidden = true;
    const prompt = $('prompt').value.trim();
    const candidates = [...document.querySelectorAll('.response-text')].map((t) => t.value.trim()).filter(Boolean);
    if (!prompt || candidates.length === 0) {
      showError('Enter a prompt and at least one response.');
      return;
    }
    $('score').disabled = true;
    try {
      const started = performance.now();
      const ranked = await rm.rank(prompt, candidates);
      const ms = performance.now() - started;
      render(ranked, ms);
    } catch (e) {
      showError(e.message);
    } finally {
      $('score').disabled = false;
    }
  };
  await load(modelUrl, modelUrl);
}

function render(ranked, ms) {
  const best = ranked[0];
  $('task').textContent = best.task;
  $('task-probs').replaceChildren(...Object.entries(best.task_probs).map(([t, p]) => barRow(t, p, p)));
  $('ranking').replaceChildren(
    ...ranked.map((r) => {
      const li = document.createElement('li');
      li.className = 'ranked';
      const head = document.createElement('div');
      head.innerHTML = `<span class="reward"></span> <span class="muted"></span>`;
      head.querySelector('.reward').textContent = `reward ${r.reward.toFixed(3)}`;
      head.querySelector('.muted').textContent = `response ${r.index + 1}: ${r.response}`;
      const caps = document.createElement('div');
      caps.className = 'caps';
      for (const [c, s] of Object.entries(r.capabilities)) caps.append(barRow(c, s, sigmoid(s)));
      li.append(head, caps);
      return li;
    }),
  );
  $('timing').textContent = `${ranked.length} responses scored in ${ms.toFixed(0)} ms (router once, experts batched)`;
  $('result').hidden = false;
  document.body.dataset.scored = String(Number(document.body.dataset.scored ?? 0) + 1);
}

main().catch((e) => showError(e.message));
