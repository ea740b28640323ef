//! `dmoerm._dmoerm`, the native module of the `dmoerm` Python package: [`RewardModel`] over
//! the core's `RewardModel`, taking and returning the same shapes as the CLI's JSON and the npm
//! package (Python dicts and lists, through serde). Scoring releases the GIL.

use std::path::PathBuf;
use std::sync::Arc;

use dmoerm::text::history;
use dmoerm::{Conversation, ConversationInput, DeviceChoice, Message};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pythonize::{depythonize, pythonize};
use serde::Serialize;

create_exception!(
    _dmoerm,
    DmoermError,
    PyException,
    "What dmoerm raises: an invalid input, a bundle that does not load, a non-finite score."
);

fn error(e: impl std::fmt::Display) -> PyErr {
    DmoermError::new_err(e.to_string())
}

fn to_py<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    pythonize(py, value).map_err(error)
}

/// `{"prompt" or "messages", "response"}` as a conversation (the core's one rule for
/// "prompt or messages").
fn conversation(input: &Bound<'_, PyAny>) -> PyResult<Conversation> {
    let input: ConversationInput = depythonize(input).map_err(|e| error(format!("bad input: {e}")))?;
    Conversation::try_from(input).map_err(error)
}

/// A prompt string or a list of `{"role", "content"}` messages.
fn prompt_history(prompt: &Bound<'_, PyAny>) -> PyResult<Vec<Message>> {
    match prompt.extract::<String>() {
        Ok(text) => history(Some(text), None),
        Err(_) => {
            let messages: Vec<Message> = depythonize(prompt).map_err(|e| error(format!("bad messages: {e}")))?;
            history(None, Some(messages))
        }
    }
    .map_err(error)
}

/// A DMoERM reward model (or a plain reward model) loaded from a bundle directory, a packed
/// `.dmoerm` file or a Hugging Face reward-model directory.
#[pyclass(frozen, module = "dmoerm")]
struct RewardModel {
    inner: Arc<dmoerm::RewardModel>,
    device: String,
}

#[pymethods]
impl RewardModel {
    /// `device`: "auto" (a hardware GPU if there is one, else the CPU), "cpu" or "gpu".
    /// `quantize`: None, "int8" or "q4": the backbone's large float matrices quantised as the
    /// model loads (as `dmoerm pack --dtype int8|q4` would store them).
    #[new]
    #[pyo3(signature = (path, device = "auto", quantize = None))]
    fn new(py: Python<'_>, path: PathBuf, device: &str, quantize: Option<&str>) -> PyResult<Self> {
        let choice: DeviceChoice = device.parse().map_err(error)?;
        let quantize = quantize.map(str::parse).transpose().map_err(error)?;
        let (inner, device) = py
            .detach(|| {
                let (device, why) = dmoerm::device::open_explained(choice)?;
                dmoerm::RewardModel::load_with(&path, device, dmoerm::LoadOptions { quantize }).map(|m| (m, why))
            })
            .map_err(error)?;
        Ok(Self { inner: Arc::new(inner), device })
    }

    /// Where the model runs, in words (e.g. "the CPU (flex, 2 threads), as asked").
    #[getter]
    fn device(&self) -> &str {
        &self.device
    }

    /// `{"name", "tasks": {task: [capability, ...]}}`, tasks in the bundle's order.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let tasks = PyDict::new(py);
        for task in self.inner.tasks() {
            tasks.set_item(task, self.inner.capabilities(task).unwrap_or_default())?;
        }
        let info = PyDict::new(py);
        info.set_item("name", self.inner.manifest().name.as_deref())?;
        info.set_item("tasks", tasks)?;
        Ok(info)
    }

    /// Scores `{"prompt" or "messages", "response"}`:
    /// `{"reward", "task", "task_probs", "capabilities", "truncated"}`.
    fn score<'py>(&self, py: Python<'py>, input: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let conv = conversation(input)?;
        let model = &self.inner;
        let score = py.detach(|| model.score(&conv)).map_err(error)?;
        to_py(py, &score)
    }

    /// Scores a list of inputs (each routed on its own), in batches; one result per input, in order.
    fn score_batch<'py>(&self, py: Python<'py>, inputs: Vec<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        let convs = inputs.iter().map(conversation).collect::<PyResult<Vec<_>>>()?;
        let model = &self.inner;
        let scores = py.detach(|| model.score_batch(&convs)).map_err(error)?;
        to_py(py, &scores)
    }

    /// Best-of-n: `prompt` (a string or a list of messages) routed once, every candidate scored
    /// in one batched pass; best first, each with its `index` and `response`.
    fn rank<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        candidates: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let messages = prompt_history(prompt)?;
        let model = &self.inner;
        let ranked = py.detach(|| model.rank_messages(&messages, &candidates)).map_err(error)?;
        to_py(py, &ranked)
    }

    fn __repr__(&self) -> String {
        let name = self.inner.manifest().name.clone().unwrap_or_default();
        format!("RewardModel({name:?}, tasks={:?}, device={:?})", self.inner.tasks(), self.device)
    }
}

#[pymodule]
fn _dmoerm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Without it, device="auto" or "gpu" on a machine without a desktop session prints
    // libwayland's "XDG_RUNTIME_DIR is invalid" on stderr at every adapter probe.
    // SAFETY: it sets an environment variable while the import holds the GIL, as Python's own
    // `os.environ[...] = ...` does; the module has started no thread of its own yet.
    unsafe { dmoerm::device::quiet_vulkan_loader() };
    m.add_class::<RewardModel>()?;
    m.add("DmoermError", m.py().get_type::<DmoermError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
