//! The Rust half of the `dmoerm` npm package: a thin wasm-bindgen layer over `crates/dmoerm`.
//!
//! It holds no model logic, only conversions: JS inputs to [`dmoerm::Conversation`]s, scores
//! back to plain JS objects, and every [`dmoerm::Error`] to a JS `Error` with its message.
//! The JS wrapper (`bindings/npm/src/core.js`) adds downloading, caching and the public API.
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use dmoerm::backbones::quantized_projections_stay;
use dmoerm::bundle::Folder;
use dmoerm::text::history;
use dmoerm::weights::{ReadAt, SafetensorsBuffer};
use dmoerm::{Conversation, ConversationInput, Device, LoadOptions, Message, Quantize, RewardModel};
use js_sys::{Promise, Reflect};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

thread_local! {
    /// The message of the last Rust panic, for the JS wrapper to report (a panic aborts the
    /// wasm instance with a bare `unreachable`).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The WebGPU device: wgpu's runtime is initialised once per wasm instance and shared by
    /// every model loaded afterwards.
    #[cfg(not(target_feature = "atomics"))]
    static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
    /// Set by [`panic_in_next_score_for_tests`]: the next scoring call panics.
    static PANIC_NEXT: Cell<Option<PanicWhere>> = const { Cell::new(None) };
}

/// Where [`panic_in_next_score_for_tests`] makes the next scoring call panic.
#[derive(Clone, Copy)]
enum PanicWhere {
    /// On the thread that called it.
    Caller,
    /// On a thread of the rayon pool (the threaded build), while the caller waits for it.
    Pool,
}

/// The name of the `BroadcastChannel` on which a panic on any thread is reported, where the
/// package runs this instance in a Worker of its own. A panic aborts only the Worker it happens
/// in: when that is a pool thread (the threaded build), the thread that waits for it waits
/// forever, and when it happens inside a promise's task (WebGPU), that promise never settles;
/// this message is how the package hears of either.
static PANIC_CHANNEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[wasm_bindgen(
    inline_js = "export function broadcast(name, message) { const c = new BroadcastChannel(name); c.postMessage(message); c.close(); }"
)]
extern "C" {
    fn broadcast(name: &str, message: &str);
}

/// From now on a panic on any thread is posted on the `BroadcastChannel` `name` (the package
/// listens there on the page's side and fails the waiting calls).
#[wasm_bindgen(js_name = reportPanicsTo)]
pub fn report_panics_to(name: String) {
    let _ = PANIC_CHANNEL.set(name);
}

#[cfg(not(target_feature = "atomics"))]
async fn webgpu_device() -> Result<Device, JsValue> {
    if let Some(dev) = WEBGPU.with(|d| d.borrow().clone()) {
        return Ok(dev);
    }
    let dev = Device::wgpu_options().init_async().await.map_err(|e| js_error(format!("WebGPU: {e}")))?;
    WEBGPU.with(|d| *d.borrow_mut() = Some(dev.clone()));
    Ok(dev)
}

/// The threaded build (`+atomics`) only: the rayon pool of Web Workers that burn's CPU backend
/// and the kernels run on. The package starts it once, in the Worker that holds the models,
/// before loading any.
#[cfg(target_feature = "atomics")]
mod pool;

/// How many threads the CPU backend computes on: 1 in the single-thread build, the pool's size
/// in the threaded one.
#[wasm_bindgen]
pub fn threads() -> usize {
    #[cfg(target_feature = "atomics")]
    return rayon::current_num_threads();
    #[cfg(not(target_feature = "atomics"))]
    1
}

extern "C" {
    /// The module's static constructors (burn's GPU compiler registers its ops with
    /// `inventory`), which wasm-ld synthesises.
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
fn start() {
    // Run the constructors once, here. A module that never calls them is linked as a command:
    // wasm-ld then runs them at the top of every exported function, every call of which
    // (with every JS value a result makes) then re-runs hundreds of registrations (`inventory`
    // skips a second one): 3-4% of a score's time in Node.
    // SAFETY: the linker's function; constructors that run again are no-ops (`inventory`)
    unsafe { __wasm_call_ctors() };
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        if let Some(name) = PANIC_CHANNEL.get() {
            broadcast(name, &message);
        }
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
    }));
}

/// The message of the last panic, if one happened (the instance is unusable after it).
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow().clone())
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// Whether `navigator.gpu` exists and gives an adapter. Never throws: any failure is `false`.
#[wasm_bindgen(js_name = webgpuAdapter)]
pub async fn webgpu_adapter() -> bool {
    request_adapter().await.is_some()
}

/// The adapter `navigator.gpu.requestAdapter()` gives, if any (never throws).
async fn request_adapter() -> Option<JsValue> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok().filter(|n| !n.is_undefined())?;
    let gpu = Reflect::get(&navigator, &"gpu".into()).ok().filter(|g| !g.is_undefined() && !g.is_null())?;
    let request = Reflect::get(&gpu, &"requestAdapter".into()).and_then(|f| f.dyn_into::<js_sys::Function>()).ok()?;
    let promise = request.call0(&gpu).and_then(|p| p.dyn_into::<Promise>()).ok()?;
    JsFuture::from(promise).await.ok().filter(|a| !a.is_null() && !a.is_undefined())
}

/// Whether `adapter` is a fallback adapter, a software rasteriser such as SwiftShader
/// (`GPUAdapterInfo.isFallbackAdapter`, or the adapter's own `isFallbackAdapter` in browsers
/// from before it moved there): `auto` skips it, the wasm CPU path being much faster there
/// (BENCHMARKS.md: 25 s a score on SwiftShader, against 0.6 s on the CPU).
fn is_fallback(adapter: &JsValue) -> bool {
    let flag = |o: &JsValue| Reflect::get(o, &"isFallbackAdapter".into()).ok().and_then(|v| v.as_bool());
    let info = Reflect::get(adapter, &"info".into()).ok().filter(JsValue::is_object);
    info.as_ref().and_then(flag).or_else(|| flag(adapter)).unwrap_or(false)
}

/// A packed bundle kept in JavaScript memory, in parts (a browser moves at most 2 GiB to a
/// Worker in one `ArrayBuffer`; the package cuts a bundle into parts of at most 1 GiB):
/// loading copies one tensor at a time into wasm, so the file itself never takes room in
/// wasm's 4 GiB.
#[derive(Debug)]
struct JsParts {
    parts: Vec<js_sys::Uint8Array>,
    /// where each part starts in the bundle, and the end of the bytes held last
    starts: Vec<u64>,
    /// the file's size, when only its first bytes are held (see [`folder_plan`])
    size: Option<u64>,
}

impl JsParts {
    fn new(parts: &js_sys::Array) -> Result<Self, JsValue> {
        let parts: Vec<js_sys::Uint8Array> = parts
            .iter()
            .map(|p| p.dyn_into::<js_sys::Uint8Array>())
            .collect::<Result<_, _>>()
            .map_err(|_| js_error("a bundle's parts must be Uint8Arrays"))?;
        let mut starts = vec![0u64];
        for p in &parts {
            starts.push(starts[starts.len() - 1] + u64::from(p.length()));
        }
        Ok(Self { parts, starts, size: None })
    }

    /// A file of `size` bytes of which `parts` hold the first ones (all, or its header).
    fn first_bytes(parts: &js_sys::Array, size: u64) -> Result<Self, JsValue> {
        let held = Self::new(parts)?;
        match held.starts[held.starts.len() - 1] <= size {
            true => Ok(Self { size: Some(size), ..held }),
            false => Err(js_error("a file's parts hold more bytes than its size")),
        }
    }
}

impl ReadAt for JsParts {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.size.unwrap_or(self.starts[self.starts.len() - 1]))
    }

    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
        while !buf.is_empty() {
            // the part holding `offset`: the last that starts at or before it
            let i = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
            let part = self.parts.get(i).ok_or(std::io::ErrorKind::UnexpectedEof)?;
            let at = u32::try_from(offset - self.starts[i]).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
            let n = (part.length().saturating_sub(at) as usize).min(buf.len());
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let (now, rest) = buf.split_at_mut(n);
            part.subarray(at, at + n as u32).copy_to(now);
            (buf, offset) = (rest, offset + n as u64);
        }
        Ok(())
    }
}

/// The wasm32 address space is 4 GiB. On the CPU loading needs the weights as they stay in
/// memory (f32, but int8 and q4 matrices stay quantised), one more copy of the largest tensor
/// while it is read, and room to compute. On WebGPU the weights go to the GPU as they load:
/// wasm holds the quantised matrices at most (an embedding table stays on the host) and the
/// tensor being read: its stored bytes and its f32 values, then those values, their transpose
/// (a linear weight) and wgpu's staging copy for the upload, three times its f32 size at most
/// (a 262 MB table peaked at 769 MB of wasm memory). Refuse early, with a message, instead of
/// aborting when an allocation fails. `(largest, total)`: the bytes of the largest tensor and
/// of all as loaded (`SafetensorsBuffer::loaded_bytes`); `quantized`: the quantised
/// matrices' bytes.
fn check_memory(name: &str, (largest, total): (u64, u64), quantized: u64, device: &Device) -> Result<(), JsValue> {
    let needed = match *device == Device::flex() {
        true => total + largest,
        false => quantized + 3 * largest,
    };
    const LIMIT: u64 = 7 << 29; // 3.5 GiB: 0.5 GiB stays for the code, the stack and activations
    if needed > LIMIT {
        return Err(js_error(format!(
            "{name}: out of memory: the model needs about {:.1} GB loaded, more than the {:.1} GB a wasm page can give it",
            needed as f64 / 1e9,
            LIMIT as f64 / 1e9
        )));
    }
    Ok(())
}

/// Resolves `"webgpu"`, `"cpu"` or `"auto"` (WebGPU when `navigator.gpu` gives an adapter that
/// is not a fallback one, else the CPU) to the device to load onto, initialising WebGPU once
/// when it is chosen.
#[wasm_bindgen(js_name = prepareDevice)]
pub async fn prepare_device(device: String) -> Result<String, JsValue> {
    let webgpu = match device.as_str() {
        "cpu" => false,
        "webgpu" => {
            if !webgpu_adapter().await {
                return Err(js_error(
                    "WebGPU is not available here (no navigator.gpu adapter); use device 'cpu' or 'auto'",
                ));
            }
            true
        }
        "auto" => request_adapter().await.is_some_and(|a| !is_fallback(&a)),
        other => return Err(js_error(format!("device '{other}': expected 'webgpu', 'cpu' or 'auto'"))),
    };
    if webgpu {
        #[cfg(not(target_feature = "atomics"))]
        webgpu_device().await?;
        #[cfg(target_feature = "atomics")]
        return Err(js_error("the threaded build runs on the CPU only; WebGPU is in the single-thread build"));
    }
    Ok(if webgpu { "webgpu" } else { "cpu" }.to_string())
}

/// Panics, for the tests of the JS wrapper's recovery from a trapped instance.
#[wasm_bindgen(js_name = panicForTests)]
pub fn panic_for_tests() {
    panic!("a deliberate test panic");
}

/// Makes the next score, score batch or rank panic (in its promise's task, or in the call for
/// the `*Now` ones), for the tests of a trap in the middle of scoring; `on_pool`: on a thread
/// of the rayon pool (the threaded build; elsewhere on the caller's).
#[wasm_bindgen(js_name = panicInNextScoreForTests)]
pub fn panic_in_next_score_for_tests(on_pool: bool) {
    PANIC_NEXT.with(|p| p.set(Some(if on_pool { PanicWhere::Pool } else { PanicWhere::Caller })));
}

fn panic_if_asked() {
    match PANIC_NEXT.with(|p| p.take()) {
        None => {}
        #[cfg(target_feature = "atomics")]
        Some(PanicWhere::Pool) => {
            // the caller is not a pool thread: rayon runs both halves on the pool
            rayon::join(|| (), || panic!("a deliberate test panic on a pool thread while scoring"));
        }
        Some(_) => panic!("a deliberate test panic while scoring"),
    }
}

/// A prompt as a string or a messages array, as the conversation history before a response.
fn prompt_history(prompt: JsValue) -> Result<Vec<Message>, JsValue> {
    if let Some(p) = prompt.as_string() {
        history(Some(p), None)
    } else {
        let m: Vec<Message> = serde_wasm_bindgen::from_value(prompt).map_err(|e| bad("bad messages", e))?;
        history(None, Some(m))
    }
    .map_err(js_error)
}

/// serde-wasm-bindgen's errors print as `Error: <message>`; keep the message.
fn bad(what: &str, e: serde_wasm_bindgen::Error) -> JsValue {
    let text = e.to_string();
    js_error(format!("{what}: {}", text.strip_prefix("Error: ").unwrap_or(&text)))
}

/// One conversation as JS gives it: `{prompt | messages, response}` (other keys are ignored,
/// as JS APIs do).
fn conversation(value: JsValue) -> Result<Conversation, JsValue> {
    let input: ConversationInput = serde_wasm_bindgen::from_value(value).map_err(|e| bad("bad input", e))?;
    Conversation::try_from(input).map_err(js_error)
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_error)
}

/// The device `"webgpu"` or `"cpu"` names ([`prepare_device`] opened WebGPU), and its label.
fn device_named(device: &str) -> Result<(Device, &'static str), JsValue> {
    match device {
        #[cfg(not(target_feature = "atomics"))]
        "webgpu" => Ok((
            WEBGPU
                .with(|d| d.borrow().clone())
                .ok_or_else(|| js_error("WebGPU is not initialised: call prepareDevice first"))?,
            "webgpu",
        )),
        "cpu" => Ok((Device::flex(), "cpu")),
        other => Err(js_error(format!("device '{other}': expected 'webgpu' or 'cpu'"))),
    }
}

/// A directory given as its files, checked to fit on `device` (see [`check_memory`]): the file
/// `paths[i]` (relative to it) has `sizes[i]` bytes, held in JavaScript memory as the parts
/// `files[i]` (an array of `Uint8Array`s), which hold only its first bytes (a safetensors
/// header) when it is not read yet ([`folder_plan`]). With the device and its label.
fn checked_folder(
    name: &str,
    paths: Vec<String>,
    sizes: Vec<f64>,
    files: &js_sys::Array,
    device: &str,
    quantize: Option<Quantize>,
) -> Result<(Folder, Device, &'static str), JsValue> {
    if paths.len() != files.length() as usize || paths.len() != sizes.len() {
        return Err(js_error("a folder needs a size and an array of parts per path"));
    }
    let readers = paths
        .into_iter()
        .zip(sizes)
        .zip(files.iter())
        .map(|((path, size), parts)| {
            let parts = parts.dyn_into::<js_sys::Array>().map_err(|_| js_error("a file's parts must be an array"))?;
            Ok((path, Box::new(JsParts::first_bytes(&parts, size as u64)?) as Box<dyn ReadAt>))
        })
        .collect::<Result<Vec<_>, JsValue>>()?;
    let folder = Folder::new(name, readers).map_err(js_error)?;
    let (dev, label) = device_named(device)?;
    let loaded = folder.loaded_bytes(quantized_projections_stay(&dev), quantize);
    check_memory(name, loaded, folder.quantized_bytes(), &dev)?;
    Ok((folder, dev, label))
}

/// The `quantize` option of a folder's load: `undefined`, `"int8"` or `"q4"`.
fn quantize_option(quantize: Option<String>) -> Result<Option<Quantize>, JsValue> {
    quantize.map(|q| q.parse::<Quantize>()).transpose().map_err(js_error)
}

/// Checks a folder (a Hugging Face reward model's, or a dmoerm bundle directory) before it is
/// read: its text files whole, its safetensors files as far as their headers. Resolves the
/// paths of the safetensors files the model reads, which the package then reads whole for
/// [`Model::from_files`]; throws the error loading would give (the native loader's), or an
/// out-of-memory one when the weights cannot fit on `device` (quantised as they load where
/// `quantize` says so: `"int8"` or `"q4"`).
#[wasm_bindgen(js_name = folderPlan)]
pub fn folder_plan(
    paths: Vec<String>,
    sizes: Vec<f64>,
    files: js_sys::Array,
    device: &str,
    name: &str,
    quantize: Option<String>,
) -> Result<Vec<String>, JsValue> {
    let (folder, _, _) = checked_folder(name, paths, sizes, &files, device, quantize_option(quantize)?)?;
    Ok(folder.manifest().files().1)
}

/// A loaded reward model.
#[wasm_bindgen]
pub struct Model {
    inner: Rc<RewardModel>,
    device: &'static str,
}

#[wasm_bindgen]
impl Model {
    /// Loads a packed bundle, given as its bytes in order in `parts` (`Uint8Array`s), onto
    /// the device [`prepare_device`] returned (`"webgpu"` or `"cpu"`). Synchronous, so that a
    /// trap while parsing a bad bundle surfaces in the caller's `try`.
    #[wasm_bindgen(js_name = fromParts)]
    pub fn from_parts(parts: js_sys::Array, device: &str, name: &str) -> Result<Model, JsValue> {
        let buffer = SafetensorsBuffer::from_reader(name, Box::new(JsParts::new(&parts)?))
            .map_err(|e| js_error(format!("{name}: not a packed dmoerm bundle ({e})")))?;
        let (dev, label) = device_named(device)?;
        check_memory(
            name,
            buffer.loaded_bytes(quantized_projections_stay(&dev), None),
            buffer.quantized_bytes(),
            &dev,
        )?;
        let inner = RewardModel::from_packed_buffer(name, buffer, dev).map_err(js_error)?;
        Ok(Model { inner: Rc::new(inner), device: label })
    }

    /// Loads a folder's model ([`folder_plan`] said which files to read whole) onto `device`,
    /// one tensor at a time, its backbone's large float matrices quantised as they load where
    /// `quantize` says so (`"int8"` or `"q4"`: [`LoadOptions`]).
    #[wasm_bindgen(js_name = fromFiles)]
    pub fn from_files(
        paths: Vec<String>,
        sizes: Vec<f64>,
        files: js_sys::Array,
        device: &str,
        name: &str,
        quantize: Option<String>,
    ) -> Result<Model, JsValue> {
        let quantize = quantize_option(quantize)?;
        let (folder, dev, label) = checked_folder(name, paths, sizes, &files, device, quantize)?;
        let inner = RewardModel::from_folder(folder, dev, LoadOptions { quantize }).map_err(js_error)?;
        Ok(Model { inner: Rc::new(inner), device: label })
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    /// `{name, tasks: {task: [capability, ...]}}`.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        #[derive(Serialize)]
        struct Info<'a> {
            name: Option<&'a str>,
            tasks: Vec<(&'a str, Vec<&'a str>)>,
        }
        let m = &self.inner;
        let tasks = m.tasks().into_iter().map(|t| (t, m.capabilities(t).unwrap_or_default())).collect();
        to_js(&Info { name: m.manifest().name.as_deref(), tasks })
    }

    /// Scores `{prompt | messages, response}`; resolves to the core's `Score`.
    pub fn score(&self, input: JsValue) -> Promise {
        let model = self.inner.clone();
        future_to_promise(async move {
            panic_if_asked();
            let conv = conversation(input)?;
            to_js(&model.score_async(&conv).await.map_err(js_error)?)
        })
    }

    /// Scores an array of inputs in batches.
    #[wasm_bindgen(js_name = scoreBatch)]
    pub fn score_batch(&self, inputs: Vec<JsValue>) -> Promise {
        let model = self.inner.clone();
        future_to_promise(async move {
            panic_if_asked();
            let convs = inputs.into_iter().map(conversation).collect::<Result<Vec<_>, _>>()?;
            to_js(&model.score_batch_async(&convs).await.map_err(js_error)?)
        })
    }

    /// Best-of-n: ranks `candidates` for a prompt (a string or a messages array), routing once.
    pub fn rank(&self, prompt: JsValue, candidates: Vec<String>) -> Promise {
        let model = self.inner.clone();
        future_to_promise(async move {
            panic_if_asked();
            let messages = prompt_history(prompt)?;
            to_js(&model.rank_messages_async(&messages, &candidates).await.map_err(js_error)?)
        })
    }

    // The same three computed inside the call, for a model on the CPU (nothing there needs to
    // wait): a trap then throws in the caller, which can report it, where a trap inside a
    // promise's task leaves that promise unsettled.

    /// [`Self::score`], now (CPU).
    #[wasm_bindgen(js_name = scoreNow)]
    pub fn score_now(&self, input: JsValue) -> Result<JsValue, JsValue> {
        panic_if_asked();
        to_js(&self.inner.score(&conversation(input)?).map_err(js_error)?)
    }

    /// [`Self::score_batch`], now (CPU).
    #[wasm_bindgen(js_name = scoreBatchNow)]
    pub fn score_batch_now(&self, inputs: Vec<JsValue>) -> Result<JsValue, JsValue> {
        panic_if_asked();
        let convs = inputs.into_iter().map(conversation).collect::<Result<Vec<_>, _>>()?;
        to_js(&self.inner.score_batch(&convs).map_err(js_error)?)
    }

    /// [`Self::rank`], now (CPU).
    #[wasm_bindgen(js_name = rankNow)]
    pub fn rank_now(&self, prompt: JsValue, candidates: Vec<String>) -> Result<JsValue, JsValue> {
        panic_if_asked();
        to_js(&self.inner.rank_messages(&prompt_history(prompt)?, &candidates).map_err(js_error)?)
    }
}
