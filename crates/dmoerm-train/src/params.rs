//! Trainable parameters: named flat tensors with their shapes, an Adam optimiser, and
//! safetensors checkpoints.
//!
//! Every parameter is stored as a 1-D tensor and reshaped where it is used; a reshape is
//! differentiable, so the gradient of the flat leaf is the gradient of the parameter.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Named parameters.
#[derive(Debug, Clone)]
pub struct Params {
    values: BTreeMap<String, (Tensor<1>, Vec<usize>)>,
}

/// Host copy of parameters: name -> (values, shape).
pub type HostParams = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

impl Params {
    pub fn new() -> Self {
        Self { values: BTreeMap::new() }
    }

    /// Adds (or replaces) a parameter.
    pub fn insert(&mut self, name: impl Into<String>, values: Vec<f32>, shape: &[usize], device: &Device) {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        let n = values.len();
        let t = Tensor::from_data(TensorData::new(values, [n]), device);
        self.values.insert(name.into(), (t, shape.to_vec()));
    }

    /// The parameter `name` in its shape.
    ///
    /// # Panics
    /// If there is no such parameter or `D` is not its rank: both are programming errors of the
    /// objective that built the parameters.
    pub fn get<const D: usize>(&self, name: &str) -> Tensor<D> {
        let (t, shape) = self.values.get(name).unwrap_or_else(|| panic!("no parameter `{name}`"));
        let dims: [usize; D] = shape.as_slice().try_into().unwrap_or_else(|_| panic!("`{name}` is not {D}-D"));
        t.clone().reshape(dims)
    }

    /// The flat 1-D tensor of `name` (the autodiff leaf of a [`tracked`](Self::tracked) copy:
    /// read gradients from it).
    pub fn leaf(&self, name: &str) -> Option<&Tensor<1>> {
        self.values.get(name).map(|(t, _)| t)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.values.get(name).map(|(_, s)| s.as_slice())
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.values.values().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A copy whose tensors are autodiff leaves that require gradients.
    pub fn tracked(&self) -> Params {
        let values = self
            .values
            .iter()
            .map(|(k, (t, s))| (k.clone(), (t.clone().autodiff().require_grad(), s.clone())))
            .collect();
        Params { values }
    }

    /// Copies every parameter of `other` whose name starts with `from` under the name with
    /// `to` instead.
    pub fn copy_prefixed(&mut self, other: &Params, from: &str, to: &str) {
        for (k, v) in &other.values {
            if let Some(rest) = k.strip_prefix(from) {
                self.values.insert(format!("{to}{rest}"), v.clone());
            }
        }
    }

    /// Reads every parameter back to the host.
    pub fn to_host(&self) -> Result<HostParams> {
        self.values
            .iter()
            .map(|(k, (t, s))| {
                let v = t.clone().inner().into_data().try_into_vec::<f32>().map_err(|e| backend(&format!("{e:?}")))?;
                Ok((k.clone(), (v, s.clone())))
            })
            .collect()
    }

    /// Builds parameters from a host copy.
    pub fn from_host(host: HostParams, device: &Device) -> Self {
        let mut p = Params::new();
        for (k, (v, s)) in host {
            p.insert(k, v, &s, device);
        }
        p
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::new()
    }
}

fn backend(message: &str) -> Error {
    Error::Model(dmoerm::Error::Backend(message.to_string()))
}

/// Adam (Kingma & Ba), with bias correction; beta1 0.9, beta2 0.999, eps 1e-8.
#[derive(Debug, Clone)]
pub struct Adam {
    /// First moments, same names as the parameters.
    pub m: Params,
    /// Second moments.
    pub v: Params,
    /// Updates done.
    pub t: u64,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    /// Zero moments for `params`.
    pub fn new(params: &Params) -> Self {
        let zeros = |p: &Params| {
            let values = p.values.iter().map(|(k, (t, s))| (k.clone(), (t.zeros_like(), s.clone()))).collect();
            Params { values }
        };
        Self { m: zeros(params), v: zeros(params), t: 0 }
    }

    /// One update of `params` from the gradients of `tracked` (the leaves of this step).
    /// Parameters without a gradient (unused by the loss) are left as they are.
    pub fn step(&mut self, params: &mut Params, tracked: &Params, grads: &burn::tensor::Gradients, lr: f64) {
        self.t += 1;
        let c1 = 1.0 - Self::BETA1.powi(self.t as i32);
        let c2 = 1.0 - Self::BETA2.powi(self.t as i32);
        for (name, (p, _)) in params.values.iter_mut() {
            let Some(g) = tracked.values[name].0.grad(grads) else { continue };
            let m = &mut self.m.values.get_mut(name).expect("moments match the parameters").0;
            *m = m.clone().mul_scalar(Self::BETA1) + g.clone().mul_scalar(1.0 - Self::BETA1);
            let v = &mut self.v.values.get_mut(name).expect("moments match the parameters").0;
            *v = v.clone().mul_scalar(Self::BETA2) + g.square().mul_scalar(1.0 - Self::BETA2);
            let update = m.clone().div_scalar(c1) / v.clone().div_scalar(c2).sqrt().add_scalar(Self::EPS);
            *p = p.clone() - update.mul_scalar(lr);
        }
    }
}

/// Writes named host tensors (f32) with string metadata to a safetensors file, atomically
/// (a temporary file renamed over the target).
pub fn save_safetensors(path: &Path, tensors: &HostParams, metadata: BTreeMap<String, String>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, (v, s))| (k.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::run(path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: std::collections::HashMap<String, String> = metadata.into_iter().collect();
    let data = safetensors::serialize(views, Some(meta)).map_err(|e| Error::run(path, e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("write", path))
}

/// Reads a safetensors file written by [`save_safetensors`] (f32 tensors) and its metadata.
pub fn load_safetensors(path: &Path) -> Result<(HostParams, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::run(path, e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::run(path, e.to_string()))?;
    let mut out = HostParams::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::run(path, format!("tensor `{name}` is {:?}, expected F32", view.dtype())));
        }
        let v = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, (v, view.shape().to_vec()));
    }
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_matches_a_hand_computed_first_step_and_checkpoints_round_trip() {
        let device = Device::flex();
        let mut p = Params::new();
        p.insert("w", vec![1.0, -2.0], &[2], &device);
        let mut adam = Adam::new(&p);
        // loss = sum(w^2): gradient 2w; Adam's first step moves each weight by lr * sign(g).
        let tracked = p.tracked();
        let loss = tracked.get::<1>("w").square().sum();
        let grads = loss.backward();
        adam.step(&mut p, &tracked, &grads, 0.1);
        let host = p.to_host().unwrap();
        let w = &host["w"].0;
        assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6, "{w:?}");

        let path = std::env::temp_dir().join(format!("dmoerm-params-{}.safetensors", std::process::id()));
        save_safetensors(&path, &host, [("k".to_string(), "v".to_string())].into()).unwrap();
        let (back, meta) = load_safetensors(&path).unwrap();
        assert_eq!(back, host);
        assert_eq!(meta["k"], "v");
    }
}
