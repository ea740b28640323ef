//! A module's parameters on the host, by their path in the module (`head.weight`,
//! `adapter.projections.0.a`): to compare runs, read trained values and perturb a parameter
//! in a test.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};

use crate::error::Result;
use crate::features::read;

/// Parameter path -> (values, shape).
pub type HostParams = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

/// Every float parameter of `module`, read back.
pub fn to_host<M: Module>(module: &M) -> Result<HostParams> {
    collect(module, None)
}

/// The gradient of every float parameter of `module` that has one in `grads`, by path.
pub fn grads_by_path<M: Module>(module: &M, grads: &burn::optim::GradientsParams) -> Result<HostParams> {
    collect(module, Some(grads))
}

/// Each parameter's value (`grads` `None`) or gradient, read back under its path.
fn collect<M: Module>(module: &M, grads: Option<&burn::optim::GradientsParams>) -> Result<HostParams> {
    let mut v = Collect { path: Vec::new(), grads, out: BTreeMap::new(), error: None };
    module.visit(&mut v);
    match v.error {
        Some(e) => Err(e),
        None => Ok(v.out),
    }
}

/// `module` with the values of the parameters that `host` names replaced (ids kept).
pub fn with_values<M: Module>(module: M, host: &HostParams) -> M {
    module.map(&mut Replace { path: Vec::new(), host })
}

/// Parameter ids numbered `0, 1, ...` in visiting order: a model initialised twice the same
/// way has the same ids, so its optimiser state and checkpoints are the same too.
pub fn renumber<M: Module>(module: M) -> M {
    module.map(&mut Renumber(0))
}

struct Collect<'a> {
    path: Vec<String>,
    grads: Option<&'a burn::optim::GradientsParams>,
    out: HostParams,
    error: Option<crate::error::Error>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = match self.grads {
            None => param.val(),
            Some(grads) => match grads.get::<D>(param.id) {
                Some(g) => g,
                None => return,
            },
        };
        let shape = t.dims().to_vec();
        match read(t) {
            Ok(values) => {
                self.out.insert(self.path.join("."), (values, shape));
            }
            Err(e) => self.error = Some(e),
        }
    }
}

struct Replace<'a> {
    path: Vec<String>,
    host: &'a HostParams,
}

impl ModuleMapper for Replace<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((values, shape)) = self.host.get(&self.path.join(".")) else { return param };
        let (id, tensor, mapper) = param.consume();
        let value = Tensor::from_data(TensorData::new(values.clone(), shape.clone()), &tensor.device());
        Param::from_mapped_value(id, value, mapper)
    }
}

struct Renumber(u64);

impl ModuleMapper for Renumber {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        Param::from_mapped_value(ParamId::from(self.0 - 1), tensor, mapper)
    }
}
