//! The quantised matrices a packed bundle stores: int8 codes with one scale per row
//! ([`Int8Matrix`]; the 4-bit [`Q4Matrix`] is in `q4.rs`), and int8 quantisation of a matrix.

use crate::Q4Matrix;

/// A `[rows, cols]` matrix of i8 codes with one f32 scale per row, resident as int8.
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) codes: Vec<i8>,
    pub(crate) scales: Vec<f32>,
}

impl Int8Matrix {
    /// From codes `[rows, cols]` (row-major) and one scale per row; `None` when the lengths do
    /// not match.
    pub fn new(rows: usize, cols: usize, codes: Vec<i8>, scales: Vec<f32>) -> Option<Self> {
        if codes.len() != rows.checked_mul(cols)? || scales.len() != rows {
            return None;
        }
        Some(Self { rows, cols, codes, scales })
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The codes, `[rows, cols]` row-major.
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// The scales, one per row.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Row `r` as f32 (an embedding lookup), or `None` past the last row.
    pub fn row(&self, r: usize) -> Option<impl Iterator<Item = f32> + '_> {
        let s = *self.scales.get(r)?;
        Some(self.codes[r * self.cols..(r + 1) * self.cols].iter().map(move |&q| f32::from(q) * s))
    }
}

/// A quantised matrix `[rows, cols]`, as a packed bundle stores it.
#[derive(Debug, Clone)]
pub enum QuantMatrix {
    /// int8 codes, one scale per row.
    Int8(Int8Matrix),
    /// 4-bit codes, one scale per block of [`Q4_BLOCK`] values of a row.
    Q4(Q4Matrix),
}

impl QuantMatrix {
    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            QuantMatrix::Int8(m) => m.dims(),
            QuantMatrix::Q4(m) => m.dims(),
        }
    }

    /// Appends row `r` as f32 to `out` (an embedding lookup); `false` past the last row.
    pub fn push_row(&self, r: usize, out: &mut Vec<f32>) -> bool {
        match self {
            QuantMatrix::Int8(m) => m.row(r).map(|row| out.extend(row)).is_some(),
            QuantMatrix::Q4(m) => m.row(r).map(|row| out.extend(row)).is_some(),
        }
    }

    /// Every value as f32, row-major (the codes times their scales).
    pub fn to_f32(&self) -> Vec<f32> {
        let (rows, cols) = self.dims();
        let mut out = Vec::with_capacity(rows * cols);
        (0..rows).for_each(|r| _ = self.push_row(r, &mut out));
        out
    }

    /// Row `r`'s codes into `out` (`cols` long).
    pub(crate) fn row_codes_into(&self, r: usize, out: &mut [i8]) {
        match self {
            QuantMatrix::Int8(m) => out.copy_from_slice(&m.codes[r * m.cols..(r + 1) * m.cols]),
            QuantMatrix::Q4(m) => out.iter_mut().zip(m.row_codes(r)).for_each(|(o, q)| *o = q),
        }
    }
}

/// Symmetric int8 quantisation of a row-major `[rows, cols]` matrix, one scale per row
/// (`max |w| / 127`): returns the codes and the scales. A row with a NaN or an infinity gets a
/// NaN scale, so that it stays non-finite (a bundle packed from broken weights is as broken,
/// and says so: `inspect --check`, and scoring fails) instead of its NaN becoming code 0.
pub fn quantize_rows(values: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = values.len().checked_div(rows).unwrap_or(0);
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks(cols.max(1)) {
        if !row.iter().all(|v| v.is_finite()) {
            codes.extend(std::iter::repeat_n(0, row.len()));
            scales.push(f32::NAN);
            continue;
        }
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        codes.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8));
        scales.push(scale);
    }
    (codes, scales)
}
