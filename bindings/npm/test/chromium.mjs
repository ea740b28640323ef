// Debian's Chromium, headless, in the two modes the tests and the score-time bench use.
import { chromium } from 'playwright-core';

/** Launch flags: WebGPU through SwiftShader, or WebGPU off (the package's wasm CPU fallback). */
export const MODES = {
  webgpu: ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--no-sandbox'],
  cpu: ['--disable-features=WebGPU', '--no-sandbox'],
};

/** Starts /usr/bin/chromium (or $CHROMIUM) in `mode`; never downloads a browser. */
export function launch(mode) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: MODES[mode], headless: true });
}
