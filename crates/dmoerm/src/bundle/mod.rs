//! Bundles: where a reward model's files come from.
//!
//! A bundle is either a directory (a `dmoerm.json` manifest beside the HF backbone files,
//! PEFT adapter directories and head safetensors), or the same content packed into one
//! safetensors file for the web ([`pack`]): every tensor stored as `"<file>::<tensor>"`, and
//! the manifest and text files (configs, tokenizer) in the header's metadata.
//! `docs/bundle-format.md` specifies both.

pub mod hf;
pub mod keys;
pub mod manifest;
pub(crate) mod read;
pub mod write;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use safetensors::{Dtype, View};

pub use hf::HfCheckpoint;
pub use manifest::{BackboneSpec, Combine, ExpertSpec, Manifest, Pooling, RouterSpec, TaskSpec};

use crate::error::{Error, Result};
use crate::quant::{QuantMatrix, Q4_BLOCK};
pub use crate::weights::INT8_MIN_ELEMENTS;
use crate::weights::{is_float, to_f32, Quantize, ReadAt, SafetensorsBuffer, TensorFile, SCALE_SUFFIX};

/// Metadata key of the packed format's name.
const PACKED_FORMAT_KEY: &str = "dmoerm.format";
const PACKED_FORMAT: &str = "dmoerm-packed";
const PACKED_VERSION_KEY: &str = "dmoerm.version";
const PACKED_MANIFEST_KEY: &str = "dmoerm.manifest";
const PACKED_FILES_KEY: &str = "dmoerm.files";

/// Where the files of a bundle are read from.
#[derive(Debug)]
pub(crate) enum Source {
    Dir {
        root: PathBuf,
        cache: HashMap<String, Arc<SafetensorsBuffer>>,
    },
    Packed {
        name: String,
        buffer: Arc<SafetensorsBuffer>,
        files: HashMap<String, String>,
        manifest: String,
    },
    /// A directory's files handed over one by one, by their paths in it (a folder a browser
    /// page was given, or files it fetched): no other file exists, and each is read when the
    /// model needs it.
    Files {
        name: String,
        files: BTreeMap<String, Arc<dyn ReadAt>>,
        cache: HashMap<String, Arc<SafetensorsBuffer>>,
    },
}

/// Rejects absolute paths and `..`: a bundle only reads its own files.
fn check_relative(manifest: &str, path: &str) -> Result<()> {
    let p = Path::new(path);
    if path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(Error::bundle(manifest, format!("path `{path}` must be relative and stay inside the bundle")));
    }
    Ok(())
}

/// The file `path` of the bundle directory `root` (canonical), with every symlink resolved;
/// an error if it resolves to a file outside `root`.
fn resolve_inside(root: &Path, path: &str) -> Result<PathBuf> {
    let full = root.join(path);
    let real = full.canonicalize().map_err(|source| Error::Io { path: full.display().to_string(), source })?;
    if !real.starts_with(root) {
        return Err(Error::bundle(
            path,
            format!("resolves to {}, outside the bundle directory {}", real.display(), root.display()),
        ));
    }
    Ok(real)
}

impl Source {
    /// A bundle directory, or a packed file.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::dir(path);
        }
        let name = path.display().to_string();
        let io = |source| Error::Io { path: name.clone(), source };
        // a packed file is read one tensor at a time, as a directory's files are
        #[cfg(unix)]
        return Self::packed_buffer(
            &name,
            SafetensorsBuffer::from_reader(&name, Box::new(std::fs::File::open(path).map_err(io)?))?,
        );
        #[cfg(not(unix))]
        Self::packed(&name, std::fs::read(path).map_err(io)?)
    }

    /// A bundle directory: every file is read through [`resolve_inside`] its canonical path.
    fn dir(path: &Path) -> Result<Self> {
        let root = path.canonicalize().map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Ok(Source::Dir { root, cache: HashMap::new() })
    }

    /// A directory given as its files (`name` names it in errors): each path relative to the
    /// directory, `/`-separated, and given once.
    pub fn files(name: &str, files: Vec<(String, Box<dyn ReadAt>)>) -> Result<Self> {
        let mut by_path = BTreeMap::new();
        for (path, reader) in files {
            let path = path.strip_prefix("./").unwrap_or(&path).to_string();
            check_relative(name, &path)?;
            if by_path.insert(path.clone(), Arc::<dyn ReadAt>::from(reader)).is_some() {
                return Err(Error::bundle(name, format!("the file {path} is given twice")));
            }
        }
        Ok(Source::Files { name: name.to_string(), files: by_path, cache: HashMap::new() })
    }

    /// A packed bundle from its bytes (`name` is used in errors).
    pub fn packed(name: &str, bytes: Vec<u8>) -> Result<Self> {
        Self::packed_buffer(name, SafetensorsBuffer::parse(name, bytes)?)
    }

    /// A packed bundle from its parsed buffer (behind a reader, its tensors are read one at
    /// a time as they load).
    pub fn packed_buffer(name: &str, buffer: SafetensorsBuffer) -> Result<Self> {
        let meta = buffer.metadata();
        if meta.get(PACKED_FORMAT_KEY).map(String::as_str) != Some(PACKED_FORMAT) {
            return Err(Error::bundle(name, "not a packed dmoerm bundle (no dmoerm.format metadata)"));
        }
        if meta.get(PACKED_VERSION_KEY).map(String::as_str) != Some("1") {
            return Err(Error::unsupported(name, "packed format version (this build reads 1)"));
        }
        let manifest = meta
            .get(PACKED_MANIFEST_KEY)
            .cloned()
            .ok_or_else(|| Error::bundle(name, "packed file has no dmoerm.manifest"))?;
        let files_json = meta.get(PACKED_FILES_KEY).map(String::as_str).unwrap_or("{}");
        let files: HashMap<String, String> =
            serde_json::from_str(files_json).map_err(|e| Error::json(&format!("{name} [{PACKED_FILES_KEY}]"), e))?;
        Ok(Source::Packed { name: name.to_string(), buffer: shared(buffer), files, manifest })
    }

    /// What errors call the bundle: its directory, or the packed bundle's name.
    pub fn name(&self) -> String {
        match self {
            Source::Dir { root, .. } => root.display().to_string(),
            Source::Packed { name, .. } | Source::Files { name, .. } => name.clone(),
        }
    }

    /// The names of the files at the top of a directory (sorted); none for a packed bundle.
    pub fn listing(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = match self {
            Source::Dir { root, .. } => std::fs::read_dir(root)
                .map_err(|source| Error::Io { path: root.display().to_string(), source })?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Source::Files { files, .. } => files.keys().filter(|p| !p.contains('/')).cloned().collect(),
            Source::Packed { .. } => Vec::new(),
        };
        names.sort();
        Ok(names)
    }

    /// The manifest, parsed and checked; for a Hugging Face reward-model directory (no
    /// `dmoerm.json`, a `config.json`), the manifest its files imply ([`hf`]).
    pub fn manifest(&mut self) -> Result<Manifest> {
        if !matches!(self, Source::Packed { .. }) {
            let names = self.listing()?;
            if !names.iter().any(|n| n == manifest::MANIFEST_FILE) {
                if names.iter().any(|n| n == hf::CONFIG) {
                    return hf::reward_model_manifest(self);
                }
                return Err(Error::bundle(
                    &self.name(),
                    format!(
                        "neither {} (a dmoerm bundle) nor {} (a Hugging Face model directory)",
                        manifest::MANIFEST_FILE,
                        hf::CONFIG
                    ),
                ));
            }
        }
        let (file, text) = match self {
            Source::Dir { .. } | Source::Files { .. } => {
                (manifest::MANIFEST_FILE.to_string(), self.text(manifest::MANIFEST_FILE)?)
            }
            Source::Packed { name, manifest, .. } => (format!("{name} [{PACKED_MANIFEST_KEY}]"), manifest.clone()),
        };
        let m = Manifest::parse(&file, &text)?;
        let (texts, tensors) = m.files();
        for path in texts.iter().chain(&tensors) {
            check_relative(&file, path)?;
        }
        Ok(m)
    }

    /// A text file of the bundle.
    pub fn text(&self, path: &str) -> Result<String> {
        match self {
            Source::Dir { root, .. } => {
                let full = resolve_inside(root, path)?;
                std::fs::read_to_string(&full).map_err(|source| Error::Io { path: full.display().to_string(), source })
            }
            Source::Packed { files, .. } => {
                files.get(path).cloned().ok_or_else(|| Error::bundle(path, "file is missing from the packed bundle"))
            }
            Source::Files { name, files, .. } => {
                let reader = files.get(path).ok_or_else(|| missing_file(name, path))?;
                let io = |source| Error::Io { path: path.to_string(), source };
                let size = reader.size().map_err(io)?;
                if size > MAX_TEXT_BYTES {
                    return Err(Error::bundle(path, format!("{size} bytes: too large for a text file of a bundle")));
                }
                let mut bytes = vec![0; size as usize];
                reader.read_exact_at(&mut bytes, 0).map_err(io)?;
                String::from_utf8(bytes).map_err(|_| Error::bundle(path, "not UTF-8 text"))
            }
        }
    }

    /// The backbone `spec` names (its `config.json`, weight shards and `tokenizer.json`).
    /// `quantize`: its large float matrices quantised as they load ([`TensorFile::quantizing`]).
    pub fn backbone(
        &mut self,
        spec: &BackboneSpec,
        device: &burn::tensor::Device,
        quantize: Option<Quantize>,
    ) -> Result<(crate::backbones::Backbone, tokenizers::Tokenizer)> {
        let config = self.text(&spec.config)?;
        let shards = spec.weights.iter().map(|w| self.tensors(w)).collect::<Result<Vec<_>>>()?;
        let weights = TensorFile::merge(shards).quantizing(quantize);
        let backbone = crate::backbones::Backbone::load(&spec.config, &config, &weights, device)?;
        let tokenizer = crate::text::parse_tokenizer(&spec.tokenizer, &self.text(&spec.tokenizer)?)?;
        Ok((backbone, tokenizer))
    }

    /// The chat template the backbone spec names (`None` when its files have none).
    pub fn chat_template(&self, spec: &BackboneSpec) -> Result<Option<crate::chat_template::ChatTemplate>> {
        let read = |path: &Option<String>| -> Result<Option<(String, String)>> {
            match path {
                Some(p) => Ok(Some((p.clone(), self.text(p)?))),
                None => Ok(None),
            }
        };
        let (config, jinja) = (read(&spec.tokenizer_config)?, read(&spec.chat_template)?);
        crate::chat_template::ChatTemplate::from_files(as_refs(&config), as_refs(&jinja))
    }

    /// A safetensors file of the bundle (parsed once, then shared).
    pub fn tensors(&mut self, path: &str) -> Result<TensorFile> {
        match self {
            Source::Dir { root, cache } => cached(cache, path, || {
                let full = resolve_inside(root, path)?;
                #[cfg(unix)]
                return SafetensorsBuffer::open(path, &full);
                #[cfg(not(unix))]
                SafetensorsBuffer::parse(
                    path,
                    std::fs::read(&full).map_err(|source| Error::Io { path: full.display().to_string(), source })?,
                )
            }),
            Source::Files { name, files, cache } => cached(cache, path, || {
                let reader = files.get(path).ok_or_else(|| missing_file(name, path))?;
                SafetensorsBuffer::from_reader(path, Box::new(reader.clone()))
            }),
            Source::Packed { buffer, .. } => {
                let prefix = format!("{path}::");
                if !buffer.names().any(|n| n.starts_with(&prefix)) {
                    return Err(Error::bundle(path, "file is missing from the packed bundle"));
                }
                Ok(TensorFile::new(path, buffer.clone(), prefix))
            }
        }
    }
}

/// The safetensors file `path` of a directory, parsed by `open` the first time, then shared.
fn cached(
    cache: &mut HashMap<String, Arc<SafetensorsBuffer>>,
    path: &str,
    open: impl FnOnce() -> Result<SafetensorsBuffer>,
) -> Result<TensorFile> {
    let buffer = match cache.get(path) {
        Some(b) => b.clone(),
        None => {
            let b = shared(open()?);
            cache.insert(path.to_string(), b.clone());
            b
        }
    };
    Ok(TensorFile::new(path, buffer, String::new()))
}

/// The largest text file (a config, a tokenizer) read from a folder's files: a tokenizer of a
/// 256k vocabulary is about 30 MB.
const MAX_TEXT_BYTES: u64 = 256 << 20;

fn missing_file(folder: &str, path: &str) -> Error {
    Error::bundle(path, format!("the folder {folder} has no such file"))
}

/// A bundle directory given as its files, by their paths in it, instead of a path on disk: a
/// Hugging Face reward-model directory or a dmoerm bundle directory that a browser page was
/// given (a folder the user chose, or files it fetched). The same rules apply as to a
/// directory ([`crate::RewardModel::load`]), with the same errors, and no other file can be
/// read. Opening it reads the manifest and the safetensors headers only, so that what
/// loading will hold ([`Folder::loaded_bytes`]) is known before any tensor is read.
#[derive(Debug)]
pub struct Folder {
    pub(crate) source: Source,
    pub(crate) manifest: Manifest,
}

impl Folder {
    /// The folder `name` (used in errors), as `(path in the folder, reader)` pairs.
    pub fn new(name: &str, files: Vec<(String, Box<dyn ReadAt>)>) -> Result<Self> {
        let mut source = Source::files(name, files)?;
        let manifest = source.manifest()?;
        let (_, tensors) = manifest.files();
        for path in &tensors {
            source.tensors(path)?;
        }
        Ok(Self { source, manifest })
    }

    /// The manifest: the folder's `dmoerm.json`, or the one its Hugging Face files imply.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the tensors will take once loaded, as [`SafetensorsBuffer::loaded_bytes`] counts
    /// them, over every safetensors file the manifest names: (the largest tensor, all).
    pub fn loaded_bytes(&self, quantized_stays: bool, quantize: Option<Quantize>) -> (u64, u64) {
        let each = self.buffers().map(|b| b.loaded_bytes(quantized_stays, quantize));
        each.fold((0, 0), |(l, t), (bl, bt)| (l.max(bl), t + bt))
    }

    /// The quantised matrices' stored bytes, as [`SafetensorsBuffer::quantized_bytes`]
    /// counts them, over every safetensors file.
    pub fn quantized_bytes(&self) -> u64 {
        self.buffers().map(|b| b.quantized_bytes()).sum()
    }

    fn buffers(&self) -> impl Iterator<Item = &SafetensorsBuffer> {
        let cache = match &self.source {
            Source::Files { cache, .. } => Some(cache),
            _ => None,
        };
        cache.into_iter().flat_map(|c| c.values().map(|b| b.as_ref()))
    }
}

/// A buffer the tensor files of a bundle share. In wasm it may hold JavaScript values (neither
/// `Send` nor `Sync`; the instance has one thread).
#[cfg_attr(target_family = "wasm", allow(clippy::arc_with_non_send_sync))]
fn shared(buffer: SafetensorsBuffer) -> Arc<SafetensorsBuffer> {
    Arc::new(buffer)
}

fn as_refs(file: &Option<(String, String)>) -> Option<(&str, &str)> {
    file.as_ref().map(|(p, t)| (p.as_str(), t.as_str()))
}

/// Dtype of the weights in a packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackDtype {
    /// Keep every tensor's dtype.
    Keep,
    /// Convert float tensors to f16 (halves an f32 download).
    F16,
    /// Store matrices (rank 2) of at least `min_elements` values as int8 with one f32 scale
    /// per row, every other float tensor as f16. With [`INT8_MIN_ELEMENTS`]
    /// ([`PackDtype::int8`]) that is the embeddings, projections and aggregators: about a
    /// quarter of an f32 download.
    Int8 { min_elements: usize },
    /// As [`PackDtype::Int8`], but a matrix whose rows are whole blocks of 64 values
    /// ([`crate::quant::Q4_BLOCK`]) as 4-bit codes, two a byte, with an f16 scale per block of
    /// a row: about an eighth of an f32 download. The other large matrices are int8.
    Q4 { min_elements: usize },
}

impl PackDtype {
    /// Int8 for the large matrices, f16 for the rest.
    pub fn int8() -> Self {
        Self::Int8 { min_elements: INT8_MIN_ELEMENTS }
    }

    /// Q4 for the large matrices (int8 where a row is not whole blocks), f16 for the rest.
    pub fn q4() -> Self {
        Self::Q4 { min_elements: INT8_MIN_ELEMENTS }
    }

    /// How this quantises, and the smallest matrix it quantises, if it quantises.
    fn quantized(self) -> Option<(Quantize, usize)> {
        match self {
            PackDtype::Int8 { min_elements } => Some((Quantize::Int8, min_elements)),
            PackDtype::Q4 { min_elements } => Some((Quantize::Q4, min_elements)),
            PackDtype::Keep | PackDtype::F16 => None,
        }
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackReport {
    /// Number of tensors.
    pub tensors: usize,
    /// Size of the packed file in bytes.
    pub bytes: usize,
}

struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Packs a bundle directory into the single-file form, optionally as f16, int8 or q4.
/// The caller should check the bundle loads first ([`crate::RewardModel::load`]).
pub fn pack_bytes(dir: &Path, dtype: PackDtype) -> Result<(Vec<u8>, PackReport)> {
    let mut source = Source::open(dir)?;
    if !matches!(source, Source::Dir { .. }) {
        return Err(Error::Input(format!("{} is not a bundle directory", dir.display())));
    }
    let manifest = source.manifest()?;
    let manifest_text = serde_json::to_string(&manifest).map_err(|e| Error::json(manifest::MANIFEST_FILE, e))?;
    let (text_files, tensor_files) = manifest.files();
    let mut files = BTreeMap::new();
    for path in &text_files {
        files.insert(path.clone(), source.text(path)?);
    }
    let mut tensors: Vec<(String, Owned)> = Vec::new();
    for path in &tensor_files {
        let file = source.tensors(path)?;
        for name in file.names() {
            let (entry, bytes) = file.raw(&name)?;
            let key = format!("{path}::{name}");
            let quantize = dtype.quantized().filter(|&(_, min)| Quantize::applies(entry.dtype, &entry.shape, min));
            // a q4 matrix `[rows, cols]` is stored as `[rows, cols / 2]` bytes
            let mut shape = entry.shape.clone();
            let (dtype, data) = match (dtype, quantize) {
                _ if !is_float(entry.dtype) => (entry.dtype, bytes.to_vec()),
                (_, Some((quantize, _))) => {
                    let values = to_f32(&bytes, entry.dtype).unwrap_or_default();
                    let (rows, cols) = (entry.shape[0], entry.shape[1]);
                    let (codes, scale) = match quantize.matrix(&values, rows, cols) {
                        QuantMatrix::Q4(m) => {
                            let data = m.scales().iter().flat_map(|s| half::f16::from_f32(*s).to_le_bytes()).collect();
                            shape[1] /= 2;
                            let scale_shape = vec![rows, cols / Q4_BLOCK];
                            ((Dtype::U8, m.codes().to_vec()), Owned { dtype: Dtype::F16, shape: scale_shape, data })
                        }
                        QuantMatrix::Int8(m) => {
                            let data = m.scales().iter().flat_map(|s| s.to_le_bytes()).collect();
                            let codes = m.codes().iter().map(|&q| q as u8).collect();
                            ((Dtype::I8, codes), Owned { dtype: Dtype::F32, shape: vec![rows], data })
                        }
                    };
                    tensors.push((format!("{key}{SCALE_SUFFIX}"), scale));
                    codes
                }
                (PackDtype::F16 | PackDtype::Int8 { .. } | PackDtype::Q4 { .. }, _) if entry.dtype != Dtype::F16 => {
                    let values = to_f32(&bytes, entry.dtype).unwrap_or_default();
                    (Dtype::F16, values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
                }
                _ => (entry.dtype, bytes.to_vec()),
            };
            tensors.push((key, Owned { dtype, shape, data }));
        }
    }
    let mut meta = HashMap::new();
    meta.insert(PACKED_FORMAT_KEY.to_string(), PACKED_FORMAT.to_string());
    meta.insert(PACKED_VERSION_KEY.to_string(), "1".to_string());
    meta.insert(PACKED_MANIFEST_KEY.to_string(), manifest_text);
    meta.insert(PACKED_FILES_KEY.to_string(), serde_json::to_string(&files).unwrap_or_default());
    let views = tensors.iter().map(|(n, t)| (n.clone(), t));
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Safetensors { file: dir.display().to_string(), message: e.to_string() })?;
    let report = PackReport { tensors: tensors.len(), bytes: bytes.len() };
    Ok((bytes, report))
}

/// A tensor of a bundle that holds NaN or infinite values ([`non_finite_tensors`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NonFiniteTensor {
    /// The file inside the bundle.
    pub file: String,
    /// The tensor.
    pub tensor: String,
    /// How many of its values are NaN or infinite.
    pub count: usize,
    /// How many values it has.
    pub numel: usize,
}

/// Scans every float tensor of every file the manifest of the bundle at `path` names for
/// NaN and infinite values (`dmoerm inspect --check`); returns the tensors that hold any, and
/// how many tensors were scanned. The int8 codes of a packed file are finite by construction;
/// their scales are scanned.
pub fn non_finite_tensors(path: &Path) -> Result<(Vec<NonFiniteTensor>, usize)> {
    let mut source = Source::open(path)?;
    let (_, files) = source.manifest()?.files();
    let (mut found, mut scanned) = (Vec::new(), 0);
    for file in &files {
        let tensors = source.tensors(file)?;
        for name in tensors.names() {
            let (entry, bytes) = tensors.raw(&name)?;
            let values = match to_f32(&bytes, entry.dtype) {
                Some(values) => values,
                // a quantised matrix (int8, q4): codes times scales, where a scale may be NaN
                None if tensors.contains(&format!("{name}{SCALE_SUFFIX}")) => tensors.read_f32(&name, None)?.0,
                None => continue,
            };
            scanned += 1;
            let count = values.iter().filter(|v| !v.is_finite()).count();
            if count > 0 {
                found.push(NonFiniteTensor { file: file.clone(), tensor: name, count, numel: values.len() });
            }
        }
    }
    Ok((found, scanned))
}
