//! 4-bit matrices: each block of [`Q4_BLOCK`] consecutive values of a row has its own scale.
//!
//! A packed q4 bundle stores a matrix `[rows, cols]` as two codes per byte, `[rows, cols / 2]`
//! (the low nibble holds the even column, the high nibble the odd one, each code stored as
//! `q + 8` for `q` in `-8..=7`), and an f16 scale per block, `[rows, cols / Q4_BLOCK]`:
//! `W[r, c] = q[r, c] * s[r, c / Q4_BLOCK]`. [`Q4Matrix`] keeps exactly that, an eighth of the
//! f32 bytes (plus a sixteenth for the scales).
//!
//! The scale of a block is the better (smaller squared error) of two: its value of largest
//! magnitude `m` divided by -8, so that `m` is code -8 exactly and the block spreads over all 16
//! codes (GGML's `Q4_0` rule), or `|m| / 7`, which keeps a value of the other sign and the same
//! magnitude from being clamped to 7 at the cost of a larger step. Blocks of 64 line up with
//! the int8 kernel's activation blocks ([`crate::Int8Linear`]): a block's integer sum is
//! scaled once, by both scales.

/// Values per block of a q4 row: 64, the int8 kernel's activation block.
pub const Q4_BLOCK: usize = crate::BK;

/// A `[rows, cols]` matrix of 4-bit codes with one scale per block of [`Q4_BLOCK`] values of a
/// row, resident as packed.
#[derive(Debug, Clone)]
pub struct Q4Matrix {
    rows: usize,
    cols: usize,
    /// `[rows, cols / 2]`: column `2 j` in the low nibble of byte `j`, `2 j + 1` in the high
    /// one, each as `q + 8`.
    codes: Vec<u8>,
    /// `[rows, cols / Q4_BLOCK]`.
    scales: Vec<f32>,
}

impl Q4Matrix {
    /// From the packed codes `[rows, cols / 2]` and the block scales `[rows, cols / Q4_BLOCK]`;
    /// `None` when `cols` is not a multiple of [`Q4_BLOCK`] or the lengths do not match.
    pub fn new(rows: usize, cols: usize, codes: Vec<u8>, scales: Vec<f32>) -> Option<Self> {
        if !cols.is_multiple_of(Q4_BLOCK)
            || codes.len() != rows.checked_mul(cols / 2)?
            || scales.len() != rows * (cols / Q4_BLOCK)
        {
            return None;
        }
        Some(Self { rows, cols, codes, scales })
    }

    /// Quantises a row-major `[rows, cols]` matrix: per block, scale `m / -8` or `|m| / 7` (`m`
    /// its value of largest magnitude; the one with the smaller squared error) rounded to f16
    /// (the bundle stores it so), codes `round(w / scale)` clamped to `-8..=7`. `None` when
    /// `cols` is not a multiple of [`Q4_BLOCK`], or a value is not finite, or a scale is beyond
    /// f16's range.
    pub fn quantize(values: &[f32], rows: usize) -> Option<Self> {
        let cols = values.len().checked_div(rows)?;
        if !cols.is_multiple_of(Q4_BLOCK) || cols == 0 || values.len() != rows * cols {
            return None;
        }
        let mut codes = Vec::with_capacity(values.len() / 2);
        let mut scales = Vec::with_capacity(values.len() / Q4_BLOCK);
        for block in values.chunks_exact(Q4_BLOCK) {
            let m = block.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            if !block.iter().all(|v| v.is_finite()) {
                return None;
            }
            let candidates = [m / -8.0, m.abs() / 7.0].map(|s| half::f16::from_f32(s).to_f32());
            if !candidates.iter().all(|s| s.is_finite()) {
                return None;
            }
            let code = |v: f32, scale: f32| if scale == 0.0 { 0 } else { (v / scale).round().clamp(-8.0, 7.0) as i8 };
            let error =
                |scale: f32| block.iter().map(|&v| (v - f32::from(code(v, scale)) * scale).powi(2)).sum::<f32>();
            let scale = if error(candidates[1]) < error(candidates[0]) { candidates[1] } else { candidates[0] };
            let nibble = |v: f32| (code(v, scale) + 8) as u8;
            codes.extend(block.chunks_exact(2).map(|p| nibble(p[0]) | nibble(p[1]) << 4));
            scales.push(scale);
        }
        Self::new(rows, cols, codes, scales)
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The packed codes, `[rows, cols / 2]` (what the bundle stores).
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The block scales, `[rows, cols / Q4_BLOCK]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Row `r`'s codes, `-8..=7`; empty past the last row.
    pub(crate) fn row_codes(&self, r: usize) -> impl Iterator<Item = i8> + '_ {
        let bytes = self.codes.get(r * self.cols / 2..(r + 1) * self.cols / 2).unwrap_or_default();
        bytes.iter().flat_map(|&b| [(b & 15) as i8 - 8, (b >> 4) as i8 - 8])
    }

    /// Row `r` as f32 (an embedding lookup), or `None` past the last row.
    pub fn row(&self, r: usize) -> Option<impl Iterator<Item = f32> + '_> {
        if r >= self.rows {
            return None;
        }
        let scales = &self.scales[r * (self.cols / Q4_BLOCK)..];
        Some(self.row_codes(r).enumerate().map(move |(c, q)| f32::from(q) * scales[c / Q4_BLOCK]))
    }
}

/// Codes per chunk of [`pack`]: an AVX-512 VNNI group's (32 outputs by 4 inputs).
const CHUNK: usize = 128;

/// Codes in the int8 kernel's panel layout, two per byte for a q4 weight: in each chunk of 128
/// codes, byte `j` holds code `j` in its low nibble and code `64 + j` in its high nibble, each
/// as `q + 8`, so that [`unpack`] is two masks over contiguous bytes (the compiler vectorises
/// it), and AVX-512 VNNI widens a group's two vectors of 64 codes from one 64-byte load.
pub(crate) fn pack(codes: &[i8]) -> Vec<u8> {
    debug_assert!(codes.len().is_multiple_of(CHUNK));
    let nibble = |q: i8| (q + 8) as u8 & 15;
    let half = CHUNK / 2;
    codes.chunks_exact(CHUNK).flat_map(|c| (0..half).map(move |j| nibble(c[j]) | nibble(c[half + j]) << 4)).collect()
}

/// [`pack`] undone, `plus` added to each code: `out` gets `2 * packed.len()` codes, `q + plus`.
pub(crate) fn unpack(packed: &[u8], out: &mut [i8], plus: i8) {
    let bias = plus - 8;
    for (p, o) in packed.chunks_exact(CHUNK / 2).zip(out.chunks_exact_mut(CHUNK)) {
        let (lo, hi) = o.split_at_mut(CHUNK / 2);
        for ((&b, l), h) in p.iter().zip(lo).zip(hi) {
            *l = (b & 15) as i8 + bias;
            *h = (b >> 4) as i8 + bias;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let mut values: Vec<f32> =
            (0..3 * 128).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.01 * (1 + i / 64) as f32).collect();
        values[5] = -0.5; // a lone extreme: the `m / -8` rule is the better there
        let m = Q4Matrix::quantize(&values, 3).unwrap();
        assert_eq!((m.dims(), m.codes().len(), m.scales().len()), ((3, 128), 3 * 64, 6));
        let back: Vec<f32> = (0..3).flat_map(|r| m.row(r).unwrap()).collect();
        // within half a step but where a value is clamped to 7 (the `m / -8` scale), and no
        // further than the `|m| / 7` scale's error, which clamps nothing
        for (b, (v, got)) in values.chunks(Q4_BLOCK).zip(back.chunks(Q4_BLOCK)).enumerate() {
            let scale = m.scales()[b];
            assert_eq!(half::f16::from_f32(scale).to_f32(), scale, "an f16 scale");
            for (&v, &g) in v.iter().zip(got) {
                let clamped = (v / scale).round() > 7.0;
                assert!(clamped || (v - g).abs() <= scale.abs() / 2.0 + 1e-7, "block {b}: {g} vs {v} (scale {scale})");
            }
            let max = v.iter().fold(0f32, |a, v| a.max(v.abs()));
            let step = half::f16::from_f32(max / 7.0).to_f32();
            let sym: f32 = v.iter().map(|&v| (v - (v / step).round() * step).powi(2)).sum();
            let sse: f32 = v.iter().zip(got).map(|(v, g)| (v - g).powi(2)).sum();
            assert!(sse <= sym * (1.0 + 1e-5), "block {b}: {sse} > {sym}");
        }
        // both rules are taken somewhere: some block has code -8, some is symmetric
        let codes: Vec<i8> = (0..3).flat_map(|r| m.row_codes(r)).collect();
        assert!(codes.chunks(Q4_BLOCK).any(|b| b.contains(&-8)));
        assert!(codes.chunks(Q4_BLOCK).any(|b| !b.contains(&-8)));
        assert!(m.row(3).is_none());
    }

    #[test]
    fn zero_blocks_and_what_does_not_quantise() {
        let m = Q4Matrix::quantize(&[0.0; 64], 1).unwrap();
        assert_eq!((m.scales(), m.row(0).unwrap().all(|v| v == 0.0)), (&[0.0][..], true));
        assert!(Q4Matrix::quantize(&[1.0; 96], 1).is_none(), "96 columns: not whole blocks");
        let mut inf = vec![1.0; 64];
        inf[3] = f32::INFINITY;
        assert!(Q4Matrix::quantize(&inf, 1).is_none());
        assert!(Q4Matrix::quantize(&[1e9; 64], 1).is_none(), "a scale beyond f16");
        assert!(Q4Matrix::new(1, 64, vec![0; 31], vec![1.0]).is_none());
        assert!(Q4Matrix::new(1, 64, vec![0; 32], vec![1.0, 1.0]).is_none());
    }

    #[test]
    fn panel_nibbles_round_trip() {
        let codes: Vec<i8> = (0..256).map(|i| (i * 7 % 16) as i8 - 8).collect();
        let packed = pack(&codes);
        assert_eq!(packed.len(), 128);
        let mut back = vec![0i8; 256];
        unpack(&packed, &mut back, 0);
        assert_eq!(back, codes);
        unpack(&packed, &mut back, 8);
        assert!(back.iter().zip(&codes).all(|(b, q)| *b == q + 8), "the codes plus 8: 0..=15");
    }
}
