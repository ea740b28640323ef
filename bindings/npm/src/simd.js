// Whether this engine runs wasm's relaxed SIMD, which the threaded build's relaxed twin
// (wasm-threads-relaxed/: 4-bit weights on `i32x4.relaxed_dot_i8x16_i7x16_add_s`) needs: a
// module of one function that returns that instruction's result validates. Chromium since 114
// and Node since 22 have it; the others run wasm-threads/, the same numbers.

// (func (result v128) (i32x4.relaxed_dot_i8x16_i7x16_add_s (v128.const 0) (v128.const 0) (v128.const 0)))
const zeros = () => [0xfd, 0x0c, ...new Array(16).fill(0)];
const body = [0x00, ...zeros(), ...zeros(), ...zeros(), 0xfd, 0x93, 0x02, 0x0b];
const PROBE = new Uint8Array([
  ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // the magic number and version 1
  ...[0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b], // types: () -> v128
  ...[0x03, 0x02, 0x01, 0x00], // functions: one of type 0
  ...[0x0a, body.length + 2, 0x01, body.length, ...body], // code
]);

let known;

/** Whether `WebAssembly` here validates relaxed SIMD (checked once). */
export function relaxedSimd() {
  known ??= typeof WebAssembly === 'object' && WebAssembly.validate(PROBE);
  return known;
}
