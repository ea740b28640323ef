//! Tensors in and out of safetensors files, with errors that name the file and tensor:
//! [`TensorFile`] reads, [`TensorWriter`] writes, and [`load_linear`] / [`save_linear`] convert
//! between PyTorch's `nn.Linear` layout (`weight` `[out, in]`) and burn's (`[in, out]`).
//!
//! Modules never spell a full key: each reads and writes its own tensors by their short names
//! through a [`Scope`] (reading) or [`WriteScope`] (writing), and hands each child
//! `scope.at("child")`, the way PyTorch's `state_dict` nests names.
//!
//! A [`TensorFile`] is one safetensors file of a bundle directory, or the part of a packed
//! bundle that came from that file (its tensors are stored under `"<file>::<name>"`).
//! Weights may be f32, f16 or bf16 in the file; the model computes in f32. A packed file may
//! also hold quantised matrices ([`crate::quant::QuantMatrix`]), each a codes tensor `T` plus
//! `T::scale`:
//! - int8, one scale per row: `T` i8 `[rows, cols]`, `T::scale` f32 `[rows]`;
//!   `T[r, c] = q[r, c] * scale[r]`;
//! - q4, one scale per block of 64 values of a row: `T` u8 `[rows, cols / 2]` (two codes per
//!   byte), `T::scale` f16 `[rows, cols / 64]`; `T[r, c] = q[r, c] * scale[r, c / 64]`.
//!
//! Shapes are always the matrix's own, `[rows, cols]`, whatever the storage.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::error::{Error, Result};
pub use crate::quant::quantize_rows;
use crate::quant::{Int8Matrix, Q4Matrix, QuantMatrix, Q4_BLOCK};

/// Suffix of the scales of a quantised tensor (int8 or q4).
pub const SCALE_SUFFIX: &str = "::scale";

/// Smallest matrix that [`Quantize`] quantises (and `pack --dtype int8|q4`): smaller ones (LoRA
/// adapters, heads, norms) stay as they are.
pub const INT8_MIN_ELEMENTS: usize = 16_384;

/// How large float matrices are quantised: by `pack` into a bundle, or as a model loads
/// ([`LoadOptions`]). Either way a matrix of rank 2 with at least
/// [`INT8_MIN_ELEMENTS`] values becomes the same [`QuantMatrix`] ([`Quantize::matrix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    /// int8 codes, one f32 scale per row.
    Int8,
    /// 4-bit codes, one f16 scale per block of 64 values of a row ([`Q4_BLOCK`]); int8 where a
    /// row is not whole blocks.
    Q4,
}

/// How a model loads, beyond its device ([`crate::RewardModel::load_with`],
/// [`crate::RewardModel::from_folder`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Quantise the backbone's float matrices of rank 2 with at least
    /// [`crate::weights::INT8_MIN_ELEMENTS`] values (its projections and embedding table) as
    /// they load, as `dmoerm pack --dtype int8|q4` does: the model is then the one the packed
    /// bundle would give (the same codes and scales), without the `pack` step, and runs on the
    /// int8 kernels. Adapters, heads, the router and the aggregators stay as stored; matrices a
    /// bundle already stores quantised stay as they are.
    pub quantize: Option<Quantize>,
}

impl std::str::FromStr for Quantize {
    type Err = Error;

    /// `"int8"` or `"q4"`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "int8" => Ok(Quantize::Int8),
            "q4" => Ok(Quantize::Q4),
            other => Err(Error::Input(format!("unknown quantisation {other:?}: int8 or q4"))),
        }
    }
}

impl Quantize {
    /// Whether a stored tensor is one that quantisation takes: floats, of rank 2, at least
    /// `min_elements` values (the loader's [`INT8_MIN_ELEMENTS`]; `pack` may be given another).
    pub fn applies(dtype: Dtype, shape: &[usize], min_elements: usize) -> bool {
        is_float(dtype) && shape.len() == 2 && shape.iter().product::<usize>() >= min_elements
    }

    /// The row-major `[rows, cols]` `values` quantised: q4 where its rows are whole blocks of
    /// finite values within f16's range, else int8 (a row with a NaN or an infinity keeps a NaN
    /// scale, so it stays non-finite).
    pub fn matrix(self, values: &[f32], rows: usize, cols: usize) -> QuantMatrix {
        let q4 = match self {
            Quantize::Q4 => Q4Matrix::quantize(values, rows),
            Quantize::Int8 => None,
        };
        q4.map(QuantMatrix::Q4).unwrap_or_else(|| {
            let (codes, scales) = quantize_rows(values, rows);
            QuantMatrix::Int8(
                Int8Matrix::new(rows, cols, codes, scales).expect("quantize_rows gives rows x cols codes"),
            )
        })
    }
}

/// Where one tensor's bytes lie in the file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// One parsed and validated safetensors buffer.
#[derive(Debug)]
pub struct SafetensorsBuffer {
    data: Data,
    entries: HashMap<String, Entry>,
    metadata: HashMap<String, String>,
}

/// Random access to the bytes of a safetensors file that is not held in this process's memory
/// as a whole: a file on disk, or, in a browser, a bundle kept in JavaScript memory, outside
/// the 4 GB that wasm can address. A buffer over one reads each tensor when it is loaded, so
/// that loading never holds a whole file beside the tensors made from it.
pub trait ReadAt: std::fmt::Debug + SendSync {
    /// The length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Fills `buf` with the bytes that start at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

/// `Send + Sync` natively, where a loaded model may move between threads; nothing in wasm,
/// where a reader holds JavaScript values, which are neither.
#[cfg(not(target_family = "wasm"))]
pub trait SendSync: Send + Sync {}
#[cfg(not(target_family = "wasm"))]
impl<T: Send + Sync> SendSync for T {}
#[cfg(target_family = "wasm")]
pub trait SendSync {}
#[cfg(target_family = "wasm")]
impl<T> SendSync for T {}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// One reader shared by several users (a file of a [`crate::bundle`] given as its files, read
/// as text and as tensors).
impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn size(&self) -> std::io::Result<u64> {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let bytes = start.checked_add(buf.len()).and_then(|end| self.get(start..end));
        buf.copy_from_slice(bytes.ok_or(std::io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }
}

fn beyond_address_space(tensor: &str) -> String {
    format!(
        "tensor `{tensor}` lies beyond the {} GiB this platform can address in one file (a browser's wasm): \
         split the weights into shards of less (transformers: `save_pretrained(..., max_shard_size=\"2GB\")`)",
        (usize::MAX as u64).saturating_add(1) >> 30
    )
}

/// A tensor of a safetensors header, as safetensors' `TensorInfo` reads it but in u64: on
/// wasm32 its `usize` offsets stop at 4 GiB, and a file past that must be refused by name.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: Dtype,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Reads and checks a safetensors header: every tensor's byte size matches its dtype and
/// shape, and the offsets tile the data section, which ends where the file does. These are
/// safetensors' own checks, in u64: on wasm32 its `usize` arithmetic (sizes in bits) overflows
/// for a tensor of 512 MiB, and a 0.6B model's embedding is 620 MB.
fn read_header(file: &str, reader: &dyn ReadAt) -> Result<(HashMap<String, Entry>, HashMap<String, String>)> {
    let io = |source| Error::Io { path: file.to_string(), source };
    let bad = |message: String| Error::Safetensors { file: file.to_string(), message };
    let len = reader.size().map_err(io)?;
    if len < 8 {
        return Err(bad("the file is shorter than its header".into()));
    }
    let mut n = [0u8; 8];
    reader.read_exact_at(&mut n, 0).map_err(io)?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || n.saturating_add(8) > len {
        return Err(bad(format!("header length {n} does not fit the file ({len} bytes)")));
    }
    let mut header = vec![0u8; n as usize];
    reader.read_exact_at(&mut header, 8).map_err(io)?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let mut metadata = HashMap::new();
    let mut tensors = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value).map_err(|e| bad(format!("__metadata__: {e}")))?;
        } else {
            let info: HeaderEntry = serde_json::from_value(value).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            tensors.push((name, info));
        }
    }
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let data_start = 8 + n;
    let mut end = 0u64;
    let mut entries = HashMap::with_capacity(tensors.len());
    for (name, info) in tensors {
        let (s, e) = info.data_offsets;
        if s != end || e < s {
            return Err(bad(format!("tensor `{name}`: its offsets do not follow the previous tensor's")));
        }
        end = e;
        let bits = info.shape.iter().try_fold(info.dtype.bitsize() as u64, |acc, &d| acc.checked_mul(d));
        if bits.is_none_or(|b| b % 8 != 0 || b / 8 != e - s) {
            return Err(bad(format!("tensor `{name}`: {} bytes do not hold {:?} {:?}", e - s, info.dtype, info.shape)));
        }
        let shape: std::result::Result<Vec<usize>, _> = info.shape.iter().map(|&d| usize::try_from(d)).collect();
        let (Ok(start), Ok(stop), Ok(shape)) =
            (usize::try_from(data_start + s), usize::try_from(data_start + e), shape)
        else {
            return Err(bad(beyond_address_space(&name)));
        };
        entries.insert(name, Entry { dtype: info.dtype, shape, start, end: stop });
    }
    if data_start + end != len {
        return Err(bad(format!("the tensors end at byte {} of a {len}-byte file", data_start + end)));
    }
    Ok((entries, metadata))
}

/// Where a buffer's tensor bytes are: in memory, or behind a [`ReadAt`].
#[derive(Debug)]
enum Data {
    Memory(Vec<u8>),
    Reader(Box<dyn ReadAt>),
}

impl SafetensorsBuffer {
    /// Opens the safetensors file at `path` (`file` names it in errors): reads and checks its
    /// header now, each tensor when it is read.
    #[cfg(unix)]
    pub fn open(file: &str, path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Self::from_reader(file, Box::new(f))
    }

    /// A safetensors file behind `reader` (`file` names it in errors): reads and checks its
    /// header now, each tensor when it is read.
    pub fn from_reader(file: &str, reader: Box<dyn ReadAt>) -> Result<Self> {
        let (entries, metadata) = read_header(file, reader.as_ref())?;
        Ok(Self { data: Data::Reader(reader), entries, metadata })
    }

    /// Parses `bytes`; `file` names the buffer in errors.
    pub fn parse(file: &str, bytes: Vec<u8>) -> Result<Self> {
        let (entries, metadata) = read_header(file, &bytes)?;
        Ok(Self { data: Data::Memory(bytes), entries, metadata })
    }

    /// The bytes of `entry`.
    fn bytes(&self, entry: &Entry) -> std::io::Result<Cow<'_, [u8]>> {
        match &self.data {
            Data::Memory(bytes) => Ok(Cow::Borrowed(&bytes[entry.start..entry.end])),
            Data::Reader(r) => {
                let mut bytes = vec![0u8; entry.end - entry.start];
                r.read_exact_at(&mut bytes, entry.start as u64)?;
                Ok(Cow::Owned(bytes))
            }
        }
    }

    /// An f32 tensor behind a reader, read straight into its values (no byte copy beside them).
    fn f32_values(&self, entry: &Entry) -> Option<std::io::Result<Vec<f32>>> {
        #[cfg(target_endian = "little")]
        if let (Data::Reader(r), Dtype::F32) = (&self.data, entry.dtype) {
            let mut values = vec![0f32; (entry.end - entry.start) / 4];
            // SAFETY: the bytes of `values` (every bit pattern is a valid f32), which little-endian
            // f32 data fills as it is stored
            let bytes = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), values.len() * 4) };
            return Some(r.read_exact_at(bytes, entry.start as u64).map(|()| values));
        }
        let _ = entry;
        None
    }

    /// The bytes the tensors take once loaded, for the largest tensor and for all: 4 a value
    /// (f32), but the stored bytes for a quantised matrix (int8, q4) where `quantized_stays`
    /// (the CPU keeps it so, [`crate::quant`]), and a float matrix that `quantize` quantises as
    /// it loads ([`TensorFile::quantizing`]) as its codes (it passes through f32 as it loads: it
    /// counts 4 a value as the largest).
    pub fn loaded_bytes(&self, quantized_stays: bool, quantize: Option<Quantize>) -> (u64, u64) {
        // (resident, while loading)
        let bytes = |(name, e): (&String, &Entry)| {
            let stored = e.shape.iter().map(|&d| d as u64).product::<u64>();
            let on_load =
                quantize.filter(|_| quantized_stays && Quantize::applies(e.dtype, &e.shape, INT8_MIN_ELEMENTS));
            match (self.is_quantized(name, e), on_load) {
                (true, _) if quantized_stays => (stored, stored),
                (true, _) if e.dtype == Dtype::U8 => (8 * stored, 8 * stored), // two values a byte
                (false, Some(Quantize::Q4)) if e.shape[1].is_multiple_of(Q4_BLOCK) => (stored / 2, 4 * stored),
                (false, Some(_)) => (stored, 4 * stored),
                _ => (4 * stored, 4 * stored),
            }
        };
        self.entries
            .iter()
            .map(bytes)
            .fold((0, 0), |(largest, total), (resident, loading)| (largest.max(loading), total + resident))
    }

    /// The bytes of the quantised matrices' codes (int8, q4) as stored: on a GPU, the most of
    /// the weights that stays in host memory (a quantised embedding table does; the
    /// projections and every float tensor go to the GPU as they load).
    pub fn quantized_bytes(&self) -> u64 {
        let entries = self.entries.iter().filter(|(name, e)| self.is_quantized(name, e));
        entries.map(|(_, e)| e.shape.iter().map(|&d| d as u64).product::<u64>()).sum()
    }

    /// Whether the entry `name` holds a quantised matrix's codes: i8, or u8 with scales.
    fn is_quantized(&self, name: &str, e: &Entry) -> bool {
        match e.dtype {
            Dtype::I8 => true,
            Dtype::U8 => self.entries.contains_key(&format!("{name}{SCALE_SUFFIX}")),
            _ => false,
        }
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// A view of tensors from one logical file of a bundle.
#[derive(Debug, Clone)]
pub struct TensorFile {
    /// The file's path inside the bundle, used in errors.
    pub file: String,
    /// The buffers holding this file's tensors (several for a sharded checkpoint), each with
    /// the prefix of this file's names in it (`""` for a plain file, `"<file>::"` in a packed
    /// bundle).
    parts: Vec<(Arc<SafetensorsBuffer>, String)>,
    /// Float matrices of at least [`INT8_MIN_ELEMENTS`] values are read as quantised ones
    /// ([`Self::quantizing`]).
    quantize: Option<Quantize>,
}

impl TensorFile {
    pub fn new(file: &str, buffer: Arc<SafetensorsBuffer>, prefix: String) -> Self {
        Self { file: file.to_string(), parts: vec![(buffer, prefix)], quantize: None }
    }

    /// One logical file from shards (`model-00001-of-00002.safetensors`, ...).
    pub fn merge(files: Vec<TensorFile>) -> Self {
        let file = files.iter().map(|f| f.file.as_str()).collect::<Vec<_>>().join(", ");
        let quantize = files.iter().find_map(|f| f.quantize);
        Self { file, parts: files.into_iter().flat_map(|f| f.parts).collect(), quantize }
    }

    /// This file with its float matrices of rank 2 and at least [`INT8_MIN_ELEMENTS`] values
    /// quantised as they are read ([`Quantize::matrix`]): [`Self::quant_matrix`] gives them as
    /// a packed bundle would hold them, and [`Self::read_f32`] their quantised values.
    pub fn quantizing(mut self, quantize: Option<Quantize>) -> Self {
        self.quantize = quantize;
        self
    }

    /// Names of the tensors in this file (without the packing prefix; the scales of a
    /// quantised tensor are part of it, not listed).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .parts
            .iter()
            .flat_map(|(b, prefix)| b.names().filter_map(|n| n.strip_prefix(prefix.as_str()).map(str::to_string)))
            .filter(|n| !n.ends_with(SCALE_SUFFIX))
            .collect();
        names.sort();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    fn entry(&self, name: &str) -> Option<(&Entry, &SafetensorsBuffer)> {
        self.parts.iter().find_map(|(b, prefix)| b.entries.get(&format!("{prefix}{name}")).map(|e| (e, b.as_ref())))
    }

    /// Shape of a tensor (a q4 matrix's own, `[rows, cols]`, not its storage's), or a
    /// `MissingTensor` error.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let (entry, _) = self.entry(name).ok_or_else(|| self.missing(name))?;
        Ok(self.shape_of(name, entry))
    }

    /// Whether `name` is stored as a q4 matrix: u8 codes with scales beside them.
    fn is_q4(&self, name: &str, entry: &Entry) -> bool {
        entry.dtype == Dtype::U8 && entry.shape.len() == 2 && self.contains(&format!("{name}{SCALE_SUFFIX}"))
    }

    /// The tensor's own shape: a q4 matrix holds two values a byte.
    fn shape_of(&self, name: &str, entry: &Entry) -> Vec<usize> {
        if self.is_q4(name, entry) {
            vec![entry.shape[0], 2 * entry.shape[1]]
        } else {
            entry.shape.clone()
        }
    }

    fn missing(&self, name: &str) -> Error {
        Error::MissingTensor { file: self.file.clone(), tensor: name.to_string() }
    }

    /// The raw entry (dtype, shape, bytes) of a tensor.
    pub fn raw(&self, name: &str) -> Result<(&Entry, Cow<'_, [u8]>)> {
        let (entry, buffer) = self.entry(name).ok_or_else(|| self.missing(name))?;
        let bytes = buffer.bytes(entry).map_err(|source| Error::Io { path: self.file.clone(), source })?;
        Ok((entry, bytes))
    }

    /// Reads a tensor as f32 values, checking its shape against `expected`
    /// (`None` accepts any shape). Returns the values and the shape.
    pub fn read_f32(&self, name: &str, expected: Option<&[usize]>) -> Result<(Vec<f32>, Vec<usize>)> {
        let (entry, _) = self.entry(name).ok_or_else(|| self.missing(name))?;
        let shape = self.shape_of(name, entry);
        if let Some(expected) = expected {
            if shape != expected {
                return Err(Error::Shape {
                    file: self.file.clone(),
                    tensor: name.to_string(),
                    expected: expected.to_vec(),
                    found: shape,
                });
            }
        }
        if let [rows, cols] = shape[..] {
            if let Some(m) = self.quant_matrix(name, rows, cols)? {
                return Ok((m.to_f32(), shape));
            }
        }
        Ok((self.float_values(name)?, shape))
    }

    /// The values of `name` as stored, as f32 (a `Dtype` error for a tensor that is not
    /// floats).
    fn float_values(&self, name: &str) -> Result<Vec<f32>> {
        let (entry, buffer) = self.entry(name).ok_or_else(|| self.missing(name))?;
        let io = |source| Error::Io { path: self.file.clone(), source };
        if let Some(values) = buffer.f32_values(entry) {
            return values.map_err(io);
        }
        let bytes = buffer.bytes(entry).map_err(io)?;
        to_f32(&bytes, entry.dtype).ok_or_else(|| Error::Dtype {
            file: self.file.clone(),
            tensor: name.to_string(),
            dtype: format!("{:?}", entry.dtype),
        })
    }

    /// The matrix `name`, `[rows, cols]`, as its codes and scales when the file stores it
    /// quantised (a packed int8 or q4 bundle); `None` when it is a float tensor.
    pub fn quant_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Option<QuantMatrix>> {
        let (entry, _) = self.entry(name).ok_or_else(|| self.missing(name))?;
        let q4 = self.is_q4(name, entry);
        let shape_error = |tensor: String, expected: Vec<usize>, found: Vec<usize>| Error::Shape {
            file: self.file.clone(),
            tensor,
            expected,
            found,
        };
        // a float matrix quantised as it is read (`quantizing`)
        let on_load = self.quantize.filter(|_| Quantize::applies(entry.dtype, &entry.shape, INT8_MIN_ELEMENTS));
        if entry.dtype != Dtype::I8 && !q4 && on_load.is_none() {
            return Ok(None);
        }
        let shape = self.shape_of(name, entry);
        if shape != [rows, cols] {
            return Err(shape_error(name.to_string(), vec![rows, cols], shape));
        }
        if let Some(quantize) = on_load {
            return Ok(Some(quantize.matrix(&self.float_values(name)?, rows, cols)));
        }
        let (_, bytes) = self.raw(name)?;
        let scale_name = format!("{name}{SCALE_SUFFIX}");
        let (scales, scale_shape) = self.read_f32(&scale_name, None)?;
        let matrix = if q4 {
            let expected = vec![rows, cols / Q4_BLOCK];
            Q4Matrix::new(rows, cols, bytes.into_owned(), scales)
                .filter(|_| scale_shape == expected)
                .map(QuantMatrix::Q4)
                .ok_or_else(|| shape_error(scale_name, expected, scale_shape))?
        } else {
            let codes = bytes.iter().map(|&b| b as i8).collect();
            Int8Matrix::new(rows, cols, codes, scales)
                .filter(|_| scale_shape == [rows])
                .map(QuantMatrix::Int8)
                .ok_or_else(|| shape_error(scale_name, vec![rows], scale_shape))?
        };
        Ok(Some(matrix))
    }

    /// Reads a tensor of rank `D` with exactly the `expected` shape onto `device`.
    pub fn tensor<const D: usize>(&self, name: &str, expected: [usize; D], device: &Device) -> Result<Tensor<D>> {
        let (values, shape) = self.read_f32(name, Some(&expected))?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Reads a PyTorch linear weight `[out, in]` and returns it transposed, `[in, out]`,
    /// the layout burn's matmul wants.
    pub fn linear_weight(&self, name: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Tensor<2>> {
        let (values, _) = self.read_f32(name, Some(&[d_out, d_in]))?;
        Ok(Tensor::from_data(TensorData::new(transpose(&values, d_out, d_in), [d_in, d_out]), device))
    }

    /// The f16 values of `name` where the file stores it in 16 bits with the `expected` shape:
    /// f16 as it is, bf16 converted where no finite value overflows f16 (f16 holds bf16's
    /// 8 significant bits exactly; only magnitudes below f16's normal range, 6.1e-5, round, by
    /// at most 3e-8). `None` for any other dtype, and for bf16 beyond f16's range (a shape
    /// error is [`read_f32`](Self::read_f32)'s to report).
    pub(crate) fn half_values(&self, name: &str, expected: &[usize]) -> Result<Option<Vec<half::f16>>> {
        let (entry, _) = self.entry(name).ok_or_else(|| self.missing(name))?;
        if !matches!(entry.dtype, Dtype::F16 | Dtype::BF16) || entry.shape != expected {
            return Ok(None);
        }
        let (entry, bytes) = self.raw(name)?;
        let pairs = bytes.chunks_exact(2).map(|b| [b[0], b[1]]);
        if entry.dtype == Dtype::F16 {
            return Ok(Some(pairs.map(half::f16::from_le_bytes).collect()));
        }
        let converted: Option<Vec<half::f16>> = pairs
            .map(|b| {
                let v = half::bf16::from_le_bytes(b).to_f32();
                let h = half::f16::from_f32(v);
                (h.is_finite() || !v.is_finite()).then_some(h)
            })
            .collect();
        Ok(converted)
    }
}

/// Values per block of an int8 row in [`burn_quantized`] at most: burn's blocks hold at most
/// 255 values, and an int8 row's one scale is repeated per block (4 bytes per 128 codes).
const BURN_INT8_BLOCK: usize = 128;

/// A quantised matrix `[rows, cols]` as burn's quantised tensor data, for a GPU: on wgpu,
/// burn's matmul (cubek) reads the codes packed and scales each block as it multiplies, so the
/// matrix stays quantised in GPU memory. The layout is burn's `PackedU32` store: along a row,
/// the codes packed four (int8) or eight (q4, two's complement nibbles) to a little-endian
/// `u32` word, then an f32 scale per block of a row. A q4 matrix keeps its blocks of
/// [`Q4_BLOCK`]; an int8 row's one scale is repeated for each of its blocks of
/// `gcd(cols, 128)` values. The values are the matrix's own, `code * scale`, exactly. `None`
/// when an int8 row does not split into blocks of at least 16 values (the caller expands the
/// matrix to f32).
pub fn burn_quantized(m: &QuantMatrix) -> Option<TensorData> {
    use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
    use burn::tensor::DType;
    let (rows, cols) = m.dims();
    let (value, block, mut bytes, scales) = match m {
        QuantMatrix::Int8(m) => {
            let block = 1 << cols.trailing_zeros().min(BURN_INT8_BLOCK.trailing_zeros());
            if block < 16 {
                return None;
            }
            let scales = m.scales().iter().flat_map(|&s| std::iter::repeat_n(s, cols / block)).collect();
            (QuantValue::Q8S, block, m.codes().iter().map(|&q| q as u8).collect::<Vec<u8>>(), scales)
        }
        // the bundle's byte `j` holds columns `2 j` (low nibble) and `2 j + 1` as `q + 8`, which
        // is burn's order; `(q + 8) ^ 8` is `q` as a two's complement nibble
        QuantMatrix::Q4(m) => {
            (QuantValue::Q4F, Q4_BLOCK, m.codes().iter().map(|&b| b ^ 0x88).collect(), m.scales().to_vec())
        }
    };
    bytes.extend(scales.iter().flat_map(|s: &f32| s.to_le_bytes()));
    let scheme = QuantScheme::default()
        .with_value(value)
        .with_store(QuantStore::PackedU32(0))
        .per_block([u8::try_from(block).ok()?], ScaleDtype::F32);
    TensorData::try_from_bytes_vec(bytes, [rows, cols], DType::QFloat(scheme)).ok()
}

/// `path.name`, or `name` at the top.
fn join(path: &str, name: &str) -> String {
    match (path.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => path.to_string(),
        _ => format!("{path}.{name}"),
    }
}

/// One module's view of a [`TensorFile`]. A key is `<root><path>.<name>`: `root` is the
/// checkpoint's own prefix (`model.` in a `*ForCausalLM` file, `bert.` in a `BertFor*` one),
/// `path` the module's canonical path (`layers.3.self_attn.q_proj`, the name LoRA adapters
/// use), `name` the tensor's short name (`weight`, `bias`).
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    file: &'a TensorFile,
    root: String,
    path: String,
}

impl<'a> Scope<'a> {
    /// The top of `file`.
    pub fn new(file: &'a TensorFile) -> Self {
        Self { file, root: String::new(), path: String::new() }
    }

    /// The top of a checkpoint whose names may carry `root` (e.g. `model.`): `root` when the
    /// file has `<root><probe>`, none when it has `<probe>`, else a `MissingTensor` error.
    pub fn detect_root(file: &'a TensorFile, root: &str, probe: &str) -> Result<Self> {
        let root = if file.contains(&format!("{root}{probe}")) {
            root
        } else if file.contains(probe) {
            ""
        } else {
            return Err(Error::MissingTensor { file: file.file.clone(), tensor: format!("{root}{probe}") });
        };
        Ok(Self { file, root: root.to_string(), path: String::new() })
    }

    /// The child module `child` (a name, an index, or a dotted path; `""` is this module).
    pub fn at(&self, child: impl Display) -> Self {
        Self { file: self.file, root: self.root.clone(), path: join(&self.path, &child.to_string()) }
    }

    /// The module's canonical path (without the checkpoint's root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file, for errors.
    pub fn file(&self) -> &'a TensorFile {
        self.file
    }

    /// The full key of this module's tensor `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.root, join(&self.path, name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.file.contains(&self.key(name))
    }

    /// This module's tensor `name`, with exactly the `expected` shape, onto `device`.
    pub fn tensor<const D: usize>(&self, name: &str, expected: [usize; D], device: &Device) -> Result<Tensor<D>> {
        self.file.tensor(&self.key(name), expected, device)
    }

    /// This module's tensor `name` as f32 values and its shape (`None` accepts any shape).
    pub fn read_f32(&self, name: &str, expected: Option<&[usize]>) -> Result<(Vec<f32>, Vec<usize>)> {
        self.file.read_f32(&self.key(name), expected)
    }

    /// This module's `weight`, `[rows, cols]`, as codes and scales when the file stores it
    /// quantised (int8, q4); `None` for a float tensor.
    pub fn quantized(&self, rows: usize, cols: usize) -> Result<Option<QuantMatrix>> {
        self.file.quant_matrix(&self.key(crate::bundle::keys::WEIGHT), rows, cols)
    }

    /// This module's `weight` as a PyTorch linear weight `[out, in]`, transposed to `[in, out]`.
    pub fn linear_weight(&self, d_in: usize, d_out: usize, device: &Device) -> Result<Tensor<2>> {
        self.file.linear_weight(&self.key(crate::bundle::keys::WEIGHT), d_in, d_out, device)
    }

    /// [`linear_weight`](Self::linear_weight), except that a weight the file stores in 16
    /// bits (f16; bf16 within f16's range) is f16 on a device that holds f16 weights
    /// ([`crate::device::half_resident`]).
    pub fn linear_weight_as_stored(&self, d_in: usize, d_out: usize, device: &Device) -> Result<Tensor<2>> {
        let name = self.key(crate::bundle::keys::WEIGHT);
        let half = self.half_on(device, &name, &[d_out, d_in])?;
        self.fits(device, &name, d_in * d_out, half.is_some())?;
        match half {
            Some(values) => Ok(Tensor::from_data(
                TensorData::new(transpose(&values, d_out, d_in), [d_in, d_out]),
                (device, DType::F16),
            )),
            None => self.linear_weight(d_in, d_out, device),
        }
    }

    /// [`tensor`](Self::tensor), except that a tensor the file stores in 16 bits (f16; bf16
    /// within f16's range) is f16 on a device that holds f16 weights
    /// ([`crate::device::half_resident`]).
    pub fn tensor_as_stored<const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let half = self.half_on(device, &self.key(name), &expected)?;
        self.fits(device, &self.key(name), expected.iter().product(), half.is_some())?;
        match half {
            Some(values) => Ok(Tensor::from_data(TensorData::new(values, expected), (device, DType::F16))),
            None => self.tensor(name, expected, device),
        }
    }

    /// A `Device` error where the tensor `key`, `values` long (f16 with `half`, else f32), is
    /// larger than the largest buffer `device` allocates (a GPU's; WebGPU's SwiftShader takes
    /// 1 GiB): said at loading, instead of failing the first score.
    fn fits(&self, device: &Device, key: &str, values: usize, half: bool) -> Result<()> {
        let bytes = values as u64 * if half { 2 } else { 4 };
        match crate::device::largest_buffer(device) {
            Some(largest) if bytes > largest => Err(Error::Device(format!(
                "{}: {key} takes {:.2} GB, more than the largest buffer this GPU allocates ({:.2} GB); \
                 pack the model with `--dtype int8` or `q4`, or run it on the CPU",
                self.file.file,
                bytes as f64 / 1e9,
                largest as f64 / 1e9
            ))),
            _ => Ok(()),
        }
    }

    /// The f16 values of the file's tensor `key` where `device` holds f16 weights and the file
    /// stores it in 16 bits with the `expected` shape ([`TensorFile::half_values`]).
    fn half_on(&self, device: &Device, key: &str, expected: &[usize]) -> Result<Option<Vec<half::f16>>> {
        match crate::device::half_resident(device) {
            true => self.file.half_values(key, expected),
            false => Ok(None),
        }
    }
}

/// Named f32 tensors on the host, written as one safetensors file: what a module's `save`
/// fills under its key prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorWriter {
    tensors: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
}

impl TensorWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, values: Vec<f32>, shape: Vec<usize>) {
        self.tensors.insert(name.into(), (values, shape));
    }

    /// Reads `tensor` back to the host and adds it as `name`.
    pub fn insert_tensor<const D: usize>(&mut self, name: impl Into<String>, tensor: Tensor<D>) -> Result<()> {
        let shape = tensor.dims().to_vec();
        let values = tensor.into_data().try_into_vec::<f32>().map_err(|e| Error::Backend(format!("{e:?}")))?;
        self.insert(name, values, shape);
        Ok(())
    }

    /// The safetensors bytes, with `metadata` in the header.
    pub fn to_bytes(&self, metadata: BTreeMap<String, String>) -> Result<Vec<u8>> {
        let bytes: Vec<(&String, Vec<u8>, &Vec<usize>)> =
            self.tensors.iter().map(|(k, (v, s))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect(), s)).collect();
        let views = bytes
            .iter()
            .map(|(k, b, s)| {
                TensorView::new(Dtype::F32, s.to_vec(), b)
                    .map(|v| (k.to_string(), v))
                    .map_err(|e| Error::Safetensors { file: k.to_string(), message: e.to_string() })
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = metadata.into_iter().collect();
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Safetensors { file: "(writing)".into(), message: e.to_string() })
    }

    /// Writes the file atomically (a temporary file renamed over `path`), creating its directory.
    pub fn save(&self, path: &Path, metadata: BTreeMap<String, String>) -> Result<()> {
        let data = self.to_bytes(metadata)?;
        write_atomic(path, &data)
    }
}

/// One module's place in a [`TensorWriter`]: the writing side of [`Scope`]. A key is
/// `<path>.<name>`.
#[derive(Debug)]
pub struct WriteScope<'a> {
    out: &'a mut TensorWriter,
    path: String,
}

impl<'a> WriteScope<'a> {
    /// The top of `out`.
    pub fn new(out: &'a mut TensorWriter) -> Self {
        Self { out, path: String::new() }
    }

    /// The child module `child` (a name, an index, or a dotted path; `""` is this module).
    pub fn at(&mut self, child: impl Display) -> WriteScope<'_> {
        WriteScope { path: join(&self.path, &child.to_string()), out: &mut *self.out }
    }

    /// Reads `tensor` back to the host and adds it as this module's `name`.
    pub fn insert_tensor<const D: usize>(&mut self, name: &str, tensor: Tensor<D>) -> Result<()> {
        self.out.insert_tensor(join(&self.path, name), tensor)
    }
}

/// Writes `data` to `path` through a temporary file renamed over it, creating the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads the PyTorch `nn.Linear(d_in, d_out)` at `w`: `weight` `[out, in]` and, when the file
/// has it, `bias` `[out]`, as a burn [`Linear`] (`weight` `[in, out]`).
pub fn load_linear(w: &Scope, d_in: usize, d_out: usize, device: &Device) -> Result<Linear> {
    let weight = w.linear_weight(d_in, d_out, device)?;
    Ok(linear(weight, optional_bias(w, d_out, device)?))
}

/// The `bias` `[d_out]` at `w`, when the file has one.
fn optional_bias(w: &Scope, d_out: usize, device: &Device) -> Result<Option<Tensor<1>>> {
    let bias = crate::bundle::keys::BIAS;
    w.contains(bias).then(|| w.tensor(bias, [d_out], device)).transpose()
}

/// A linear layer `y = x W^T + b` whose weight stays as a packed bundle stores it (int8, q4)
/// and is expanded to f32 for each product: the same numbers as the expanded weight, in a
/// quarter (an eighth) of its resident bytes. For a large layer that runs once a call (a
/// task's aggregator), on the CPU, for inference.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    /// `[out, in]`
    weight: Arc<QuantMatrix>,
    bias: Option<Tensor<1>>,
}

impl PackedLinear {
    /// `(in, out)`
    pub fn dims(&self) -> (usize, usize) {
        let (out, inp) = self.weight.dims();
        (inp, out)
    }

    /// The weight as the f32 it stands for, `[in, out]` (burn's layout; a transposed view).
    pub fn expanded_weight(&self, device: &Device) -> Tensor<2> {
        let (out, inp) = self.weight.dims();
        Tensor::<2>::from_data(TensorData::new(self.weight.to_f32(), [out, inp]), device).transpose()
    }

    pub fn bias(&self) -> Option<Tensor<1>> {
        self.bias.clone()
    }

    /// # Shapes
    /// - x: `[n, in]`, output: `[n, out]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let weight = self.expanded_weight(&x.device());
        burn::tensor::module::linear(x, weight, self.bias.clone())
    }
}

/// [`load_linear`], except that on the CPU, for inference, a weight the file stores quantised
/// stays so ([`PackedLinear`]).
pub fn load_linear_or_packed(
    w: &Scope,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<std::result::Result<Linear, PackedLinear>> {
    if crate::device::quantized_resident(device) {
        if let Some(weight) = w.quantized(d_out, d_in)? {
            return Ok(Err(PackedLinear { weight: Arc::new(weight), bias: optional_bias(w, d_out, device)? }));
        }
    }
    load_linear(w, d_in, d_out, device).map(Ok)
}

/// A [`Linear`] from its tensors: `weight` `[in, out]`, `bias` `[out]`.
pub fn linear(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Linear {
    Linear { weight: param(weight), bias: bias.map(param) }
}

/// A parameter: a loaded or initialised weight, trainable once the module is put in training
/// mode (`Module::train`).
pub(crate) fn param<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t)
}

/// A parameter computed from other parameters for one pass (e.g. adapters stacked for a
/// batched forward): it keeps the autodiff graph back to them.
pub(crate) fn derived<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::initialized(ParamId::new(), t)
}

/// Adds a [`Linear`] at `out` in PyTorch's layout: `weight` `[out, in]` and `bias` `[out]`
/// (when it has one).
pub fn save_linear(linear: &Linear, out: &mut WriteScope) -> Result<()> {
    out.insert_tensor(crate::bundle::keys::WEIGHT, linear.weight.val().transpose())?;
    if let Some(b) = &linear.bias {
        out.insert_tensor(crate::bundle::keys::BIAS, b.val())?;
    }
    Ok(())
}

/// Row-major `[rows, cols]` -> `[cols, rows]`.
pub fn transpose<T: Copy>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = values.to_vec();
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Little-endian f32 / f16 / bf16 bytes to f32; `None` for any other dtype.
pub fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        Dtype::F16 => Some(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        Dtype::BF16 => Some(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        _ => None,
    }
}

/// The dtypes a bundle may hold.
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packed layer computes what burn's `Linear` computes on its weight expanded to f32.
    #[test]
    fn a_packed_linear_computes_as_its_expanded_weight() {
        let device = Device::flex();
        let (n, d_in, d_out) = (3, 128, 48);
        let values = |len: usize, seed: u32| -> Vec<f32> {
            (0..len as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
        };
        let (codes, scales) = quantize_rows(&values(d_out * d_in, 7), d_out);
        let int8 = QuantMatrix::Int8(Int8Matrix::new(d_out, d_in, codes, scales).unwrap());
        let q4 = QuantMatrix::Q4(Q4Matrix::quantize(&values(d_out * d_in, 9), d_out).unwrap());
        let x = Tensor::<2>::from_data(TensorData::new(values(n * d_in, 3), [n, d_in]), &device);
        let bias = Tensor::<1>::from_data(TensorData::new(values(d_out, 5), [d_out]), &device);
        for weight in [int8, q4] {
            let expanded = transpose(&weight.to_f32(), d_out, d_in);
            let reference =
                linear(Tensor::from_data(TensorData::new(expanded, [d_in, d_out]), &device), Some(bias.clone()));
            let want: Vec<f32> = reference.forward(x.clone()).into_data().try_into_vec().unwrap();
            let packed = PackedLinear { weight: Arc::new(weight), bias: Some(bias.clone()) };
            assert_eq!(packed.dims(), (d_in, d_out));
            let got: Vec<f32> = packed.forward(x.clone()).into_data().try_into_vec().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn scopes_nest_names_as_pytorch_state_dicts_do() {
        let device = Device::flex();
        let mut out = TensorWriter::new();
        let mut top = WriteScope::new(&mut out);
        let mut layer = top.at("model.layers.3");
        layer.at("self_attn.q_proj").insert_tensor("weight", Tensor::<1>::from_floats([1.0, 2.0], &device)).unwrap();
        layer.insert_tensor("scale", Tensor::<1>::from_floats([3.0], &device)).unwrap();
        let bytes = out.to_bytes(BTreeMap::new()).unwrap();
        let file = TensorFile::new("f", Arc::new(SafetensorsBuffer::parse("f", bytes).unwrap()), String::new());
        assert_eq!(file.names(), ["model.layers.3.scale", "model.layers.3.self_attn.q_proj.weight"]);

        // the checkpoint's root is found and kept out of the canonical path
        let w = Scope::detect_root(&file, "model.", "layers.3.scale").unwrap();
        let q = w.at("layers").at(3).at("self_attn.q_proj");
        assert_eq!(q.path(), "layers.3.self_attn.q_proj");
        assert_eq!(q.key("weight"), "model.layers.3.self_attn.q_proj.weight");
        assert_eq!(q.read_f32("weight", Some(&[2])).unwrap().0, [1.0, 2.0]);
        assert_eq!(w.at("layers.3").at("").read_f32("scale", None).unwrap().0, [3.0]);
        // a file without the root reads the same names bare; a file with neither is an error
        assert_eq!(Scope::detect_root(&file, "bert.", "model.layers.3.scale").unwrap().key("x"), "x");
        let missing = Scope::detect_root(&file, "model.", "embed_tokens.weight").unwrap_err();
        assert!(matches!(missing, Error::MissingTensor { tensor, .. } if tensor == "model.embed_tokens.weight"));
    }

    /// A directory's file is read one tensor at a time; the values and the checks are those of
    /// a file read whole.
    #[cfg(unix)]
    #[test]
    fn a_file_opened_lazily_reads_as_one_read_whole() {
        let device = Device::flex();
        let mut out = TensorWriter::new();
        out.insert_tensor("a", Tensor::<2>::from_floats([[1.0, -2.5], [3.0, 0.125]], &device)).unwrap();
        out.insert("b", vec![7.0; 3], vec![3]);
        let dir = std::env::temp_dir().join(format!("dmoerm-weights-{}", std::process::id()));
        let path = dir.join("t.safetensors");
        out.save(&path, BTreeMap::from([("k".to_string(), "v".to_string())])).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let whole =
            TensorFile::new("t", Arc::new(SafetensorsBuffer::parse("t", bytes.clone()).unwrap()), String::new());
        let lazy = SafetensorsBuffer::open("t", &path).unwrap();
        assert_eq!(lazy.metadata().get("k").map(String::as_str), Some("v"));
        let lazy = TensorFile::new("t", Arc::new(lazy), String::new());
        for name in ["a", "b"] {
            assert_eq!(lazy.read_f32(name, None).unwrap(), whole.read_f32(name, None).unwrap());
            assert_eq!(lazy.raw(name).unwrap().1, whole.raw(name).unwrap().1);
        }
        assert_eq!(lazy.read_f32("a", None).unwrap().0, [1.0, -2.5, 3.0, 0.125]);
        // a cut file and a lying header are refused when opened
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert!(matches!(SafetensorsBuffer::open("t", &path), Err(Error::Safetensors { .. })));
        std::fs::write(&path, [&u64::MAX.to_le_bytes()[..], b"{}"].concat()).unwrap();
        assert!(matches!(SafetensorsBuffer::open("t", &path), Err(Error::Safetensors { .. })));
    }

    /// 16-bit values for a GPU: f16 as stored; bf16 as f16 where it fits (tiny magnitudes
    /// round by at most 3e-8), `None` where a value overflows f16 and for 32-bit floats.
    #[test]
    fn sixteen_bit_tensors_read_as_f16_where_f16_holds_them() {
        let file = |dtype: Dtype, values: &[f32]| {
            let data: Vec<u8> = match dtype {
                Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
                Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
                _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            let view = TensorView::new(dtype, vec![values.len()], &data).unwrap();
            let bytes = safetensors::serialize([("t", view)], None).unwrap();
            TensorFile::new("f", Arc::new(SafetensorsBuffer::parse("f", bytes).unwrap()), String::new())
        };
        let values = [1.0, -0.375, 3.0e-3, 1.0e-6, 0.0, 60000.0];
        let n = [values.len()];
        for dtype in [Dtype::F16, Dtype::BF16] {
            let stored = file(dtype, &values);
            let expanded = stored.read_f32("t", None).unwrap().0;
            let half = stored.half_values("t", &n).unwrap().expect("16-bit values");
            for (h, v) in half.iter().zip(&expanded) {
                assert!((h.to_f32() - v).abs() <= 3e-8 * v.abs().max(1.0), "{dtype:?}: {h} for {v}");
                // only the value below f16's normal range is not exact
                assert!(h.to_f32() == *v || v.abs() < 6.1e-5, "{dtype:?}: {h} for {v}");
            }
            assert!(stored.half_values("t", &[n[0] + 1]).unwrap().is_none(), "another shape");
        }
        assert!(file(Dtype::BF16, &[1.0, 70000.0]).half_values("t", &[2]).unwrap().is_none(), "beyond f16");
        assert!(file(Dtype::F32, &[1.0]).half_values("t", &[1]).unwrap().is_none(), "32 bits");
    }

    /// A tensor larger than the GPU's largest buffer is refused when it loads, with the sizes;
    /// on the CPU there is no such limit.
    #[cfg(feature = "gpu")]
    #[test]
    fn a_tensor_over_the_gpus_largest_buffer_is_refused_at_loading() {
        if std::env::var("DMOERM_SKIP_WGPU").as_deref() == Ok("1") {
            eprintln!("DMOERM_SKIP_WGPU=1: the buffer limit is NOT checked");
            return;
        }
        let gpu = crate::device::open(crate::DeviceChoice::Gpu).expect("a wgpu adapter (mesa-vulkan-drivers)");
        let largest = crate::device::largest_buffer(&gpu).expect("a GPU's largest buffer");
        assert!(largest >= 1 << 27, "WebGPU guarantees 128 MiB at least: {largest}");
        eprintln!("largest buffer: {largest} bytes");
        let mut out = TensorWriter::new();
        out.insert("t", vec![1.0; 2], vec![2]);
        let file = TensorFile::new(
            "f",
            Arc::new(SafetensorsBuffer::parse("f", out.to_bytes(BTreeMap::new()).unwrap()).unwrap()),
            String::new(),
        );
        let w = Scope::new(&file);
        let values = (largest / 4 + 1) as usize;
        let err = w.fits(&gpu, "big.weight", values, false).unwrap_err().to_string();
        assert!(err.contains("big.weight") && err.contains("largest buffer"), "{err}");
        assert!(w.fits(&gpu, "big.weight", values, true).is_ok(), "in f16 it fits");
        assert!(w.fits(&Device::flex(), "big.weight", values, false).is_ok());
    }
}
