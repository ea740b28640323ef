// Loads the package in a module Web Worker, on the device the page asks for, and scores what
// the page sends.
import { RewardModel } from '../src/index.js';

self.onmessage = async ({ data }) => {
  try {
    const rm = await RewardModel.load(data.url, { device: data.device, cache: false });
    const score = await rm.score(data.input);
    self.postMessage({ ok: true, device: rm.device, score });
    rm.dispose();
  } catch (e) {
    self.postMessage({ ok: false, error: e.message });
  }
};
