// The GPU kernels that stage their operands in workgroup memory (crates/dmoerm/src/kernels/gpu.rs:
// the tiled products and attention) compile in Chromium's WebGPU. A browser runs them on every
// adapter it does not report as a fallback, so the browser tests, on SwiftShader (a fallback:
// the barrier-free kernels run), never do; and native wgpu compiles WGSL with naga, which does
// not hold a shader to WGSL's uniformity rules for barriers as Chromium's Tint does.
//
// The kernels' WGSL comes from CubeCL's compilation log of a native run with the tiled kernels
// forced ($DMOERM_KERNELS_WGSL; scripts/test.sh writes it from the parity tests). Each kernel
// is compiled here as the package's wasm build declares it: the storage buffers it writes
// read_write, the others read-only (CubeCL's WGSL for the browser), on a device with the
// adapter's limits (as CubeCL requests it). Kernels that need shader-f16 are left out where the
// adapter lacks it (SwiftShader does), and said so.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { launch } from './chromium.mjs';
import { serve } from '../../../scripts/serve.mjs';

/** The kernels this test is for: each must be in the log, compiled here at least once. */
const TILED = ['attention_tiled_kernel', 'matmul_tiled_kernel', 'matmul_quant_tiled_kernel'];

/** Every distinct WGSL source of our kernels in a CubeCL compilation log, with its kernel. */
function kernels(log) {
  const found = new Map();
  for (const [, name, code] of log.matchAll(/name: dmoerm::kernels::gpu::(\w+)[\s\S]*?```wgsl\n([\s\S]*?)```/g)) {
    found.set(code, name);
  }
  return [...found].map(([code, name]) => ({ name, code }));
}

/**
 * `code` with the storage buffers it never stores into read-only. CubeCL's WGSL reaches a
 * buffer through pointers (`let v7 = &v1; let v9 = &(*v7)[i]; *v9 = x;`): a store through a
 * pointer derived from a buffer writes that buffer.
 */
function asInTheBrowser(code) {
  const root = new Map();
  for (const [, name] of code.matchAll(/var<storage, read_write> (\w+):/g)) root.set(name, name);
  for (const [, ptr, base] of code.matchAll(/let (\w+) = &\(?\*?(\w+)/g)) {
    if (root.has(base)) root.set(ptr, root.get(base));
  }
  const written = new Set();
  for (const [, ptr] of code.matchAll(/^\(?\*(\w+)\)?(?:\[[^\]]*\])?\s*=[^=]/gm)) {
    if (root.has(ptr)) written.add(root.get(ptr));
  }
  const browser = code.replace(/var<storage, read_write> (\w+):/g, (decl, name) =>
    written.has(name) ? decl : `var<storage, read> ${name}:`,
  );
  return { browser, written: written.size };
}

const logPath = process.env.DMOERM_KERNELS_WGSL;
test('the tiled GPU kernels compile in Chromium (Tint)', { skip: !logPath && 'DMOERM_KERNELS_WGSL is not set (scripts/test.sh sets it): the tiled kernels are NOT checked' }, async (t) => {
  const all = kernels(readFileSync(logPath, 'utf8'));
  for (const name of TILED) assert.ok(all.some((k) => k.name === name), `${name} is in the log`);
  const shaders = all.map((k) => ({ ...k, ...asInTheBrowser(k.code) }));
  for (const k of shaders) assert.ok(k.written >= 1, `${k.name}: the buffer it writes is found`);

  const server = await serve({});
  const browser = await launch('webgpu');
  t.after(async () => {
    await browser.close();
    await server.close();
  });
  const page = await browser.newPage();
  await page.goto(`${server.url}/bindings/npm/test/harness.html`);
  const results = await page.evaluate(async (shaders) => {
    const adapter = await navigator.gpu.requestAdapter();
    const limits = {};
    for (const key of ['maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup']) {
      limits[key] = adapter.limits[key];
    }
    const f16 = adapter.features.has('shader-f16');
    const device = await adapter.requestDevice({ requiredFeatures: f16 ? ['shader-f16'] : [], requiredLimits: limits });
    const results = [];
    for (const { name, browser: code } of shaders) {
      if (!f16 && /^enable f16;/m.test(code)) {
        results.push({ name, skipped: 'shader-f16' });
        continue;
      }
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ code });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
      try {
        await device.createComputePipelineAsync({ layout: 'auto', compute: { module } });
      } catch (e) {
        errors.push(String(e.message ?? e));
      }
      const scope = await device.popErrorScope();
      if (scope) errors.push(scope.message);
      results.push({ name, errors });
    }
    return results;
  }, shaders);

  const compiled = results.filter((r) => !r.skipped);
  const skipped = results.length - compiled.length;
  t.diagnostic(`${compiled.length} kernels compiled, ${skipped} left out (shader-f16 missing)`);
  for (const r of compiled) assert.deepEqual(r.errors, [], `${r.name} compiles`);
  for (const name of TILED) assert.ok(compiled.some((r) => r.name === name), `${name} compiled at least once`);
});
