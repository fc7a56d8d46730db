//! The native engine: rebuilds the network from a model file's architecture description and
//! its initializers, and runs it in Rust on the CPU (convolutions through `gemm`, the implicit
//! solve through real FFTs, see [`crate::imex`]).
//!
//! Everything about the graph is checked once at load for the model's input shape: every
//! tensor a node reads exists, every initializer has the shape its node needs, channel counts
//! agree, the implicit solve's padding fits the grid. [`NativeEngine::run`] then only computes.
//! It is the exact reference the ONNX Runtime engine is validated against.

mod conv;
mod gemm;
mod ops;

use std::collections::HashMap;
use std::path::Path;

pub use conv::Conv2d;

use super::{DepthEngine, EngineError};
use crate::imex::{Kernel3, SolvePlan};
use crate::model::{Initializer, ModelError, ModelFile, Node, UpsampleMode};
use crate::tensor::Tensor;

/// One executable step.
enum Op {
    Normalize { mean: Vec<f32>, std: Vec<f32> },
    Conv(Conv2d),
    Affine { scale: Vec<f32>, bias: Vec<f32> },
    Map(fn(f32) -> f32),
    Linear { a: f32, b: f32 },
    Add { k: f32 },
    Imex { plan: SolvePlan },
    Upsample { scale: usize, mode: UpsampleMode },
    Concat,
    Coords,
    AddTensor { data: Vec<f32>, shape: [usize; 4] },
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Normalize { .. } => "normalize",
            Op::Conv(c) if c.groups > 1 => "conv_grouped",
            Op::Conv(c) if c.kh == 1 => "conv1x1",
            Op::Conv(_) => "conv",
            Op::Affine { .. } => "affine",
            Op::Map(_) => "map",
            Op::Linear { .. } => "linear",
            Op::Add { .. } => "add",
            Op::Imex { .. } => "imex",
            Op::Upsample { .. } => "upsample",
            Op::Concat => "concat",
            Op::Coords => "coords",
            Op::AddTensor { .. } => "add_tensor",
        }
    }
}

struct Step {
    op: Op,
    inputs: Vec<usize>,
    output: usize,
    /// Slots no later step reads: freed after this step.
    release: Vec<usize>,
}

/// One step of a [`NativeEngine::profile`]: op name, output shape, milliseconds.
pub type OpTime = (&'static str, [usize; 4], f64);

/// The native Rust engine for one model file.
pub struct NativeEngine {
    model: ModelFile,
    steps: Vec<Step>,
    slots: usize,
    output_slot: usize,
    im2col: Vec<f32>,
    macs: MacCount,
}

/// Multiply-adds of one forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct MacCount {
    pub conv: u64,
    /// Number of implicit solves (channel planes) per forward pass.
    pub imex_planes: u64,
}

impl NativeEngine {
    /// Reads the model file and builds the network for its input shape.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        Self::from_model(ModelFile::open(path)?)
    }

    /// Builds the network of an already parsed model file.
    pub fn from_model(model: ModelFile) -> Result<Self, ModelError> {
        let mut builder = Builder::new(&model);
        for node in &model.arch.nodes {
            builder.add(node)?;
        }
        let output_slot = builder.slot(&model.arch.output).ok_or_else(|| {
            let problem = format!("the output `{}` is never written", model.arch.output);
            ModelError::NotAModel { path: model.path.clone(), problem }
        })?;
        let (steps, slots, macs) = builder.finish(output_slot);
        Ok(Self { model, steps, slots, output_slot, im2col: Vec::new(), macs })
    }

    pub fn model(&self) -> &ModelFile {
        &self.model
    }

    pub fn macs(&self) -> MacCount {
        self.macs
    }

    /// Runs once and returns each step's op, output shape and wall time (for `-v` profiling
    /// and benchmarks).
    pub fn profile(&mut self, input: &Tensor) -> Result<Vec<OpTime>, EngineError> {
        self.check_input(input)?;
        let mut values: Vec<Option<Tensor>> = (0..self.slots).map(|_| None).collect();
        values[0] = Some(input.clone());
        let mut times = Vec::with_capacity(self.steps.len());
        for i in 0..self.steps.len() {
            let start = std::time::Instant::now();
            let out = self.execute(i, &mut values);
            times.push((self.steps[i].op.name(), out.shape, start.elapsed().as_secs_f64() * 1e3));
            values[self.steps[i].output] = Some(out);
        }
        Ok(times)
    }

    fn check_input(&self, input: &Tensor) -> Result<(), EngineError> {
        if input.shape != self.model.input.shape {
            let (expected, found) = (self.model.input.shape, input.shape);
            return Err(EngineError::InputShape { expected, found });
        }
        Ok(())
    }

    fn execute(&mut self, step_index: usize, values: &mut [Option<Tensor>]) -> Tensor {
        let step = &self.steps[step_index];
        // The first input, owned: taken when this step is its last reader, else copied.
        let first = step.inputs[0];
        let reused = step.release.contains(&first) && !step.inputs[1..].contains(&first);
        let mut own_first = || match reused {
            true => values[first].take().expect("slot written before read"),
            false => values[first].clone().expect("slot written before read"),
        };
        match &step.op {
            Op::Normalize { mean, std } => ops::normalize(own_first(), mean, std),
            Op::Affine { scale, bias } => ops::affine(own_first(), scale, bias),
            Op::Map(f) => ops::map(own_first(), f),
            Op::Linear { a, b } => ops::map(own_first(), |v| a * v + b),
            Op::AddTensor { data, shape } => ops::add_broadcast(own_first(), data, *shape),
            Op::Add { k } => {
                let a = own_first();
                ops::add_scaled(a, values[step.inputs[1]].as_ref().expect("slot written"), *k)
            }
            Op::Imex { plan } => {
                let mut y = own_first();
                let f = values[step.inputs[1]].as_ref().expect("slot written before read");
                let image = f.c() * f.h() * f.w();
                for (o, fi) in y.data.chunks_exact_mut(image).zip(f.data.chunks_exact(image)) {
                    plan.solve_image(fi, o, true);
                }
                y
            }
            Op::Upsample { scale, mode } => ops::upsample(read(values, first), *scale, *mode),
            Op::Coords => ops::coords(read(values, first)),
            Op::Concat => {
                let parts: Vec<&Tensor> = step.inputs.iter().map(|&i| read(values, i)).collect();
                ops::concat(&parts)
            }
            Op::Conv(conv) => run_conv(conv, read(values, first), &mut self.im2col),
        }
    }
}

fn read(values: &[Option<Tensor>], slot: usize) -> &Tensor {
    values[slot].as_ref().expect("slot written before read")
}

fn run_conv(conv: &Conv2d, x: &Tensor, col: &mut Vec<f32>) -> Tensor {
    let (ho, wo) = conv.output_size(x.h(), x.w());
    let mut out = Tensor::zeros([x.n(), conv.cout, ho, wo]);
    let (image_in, image_out) = (x.c() * x.h() * x.w(), conv.cout * ho * wo);
    for (xi, oi) in x.data.chunks_exact(image_in).zip(out.data.chunks_exact_mut(image_out)) {
        conv.run(xi, x.h(), x.w(), oi, col);
    }
    out
}

impl DepthEngine for NativeEngine {
    fn name(&self) -> &str {
        "native"
    }

    fn provider(&self) -> String {
        "cpu".into()
    }

    fn run(&mut self, input: &Tensor) -> Result<Tensor, EngineError> {
        self.check_input(input)?;
        let mut values: Vec<Option<Tensor>> = (0..self.slots).map(|_| None).collect();
        values[0] = Some(input.clone());
        for i in 0..self.steps.len() {
            let out = self.execute(i, &mut values);
            let step = &self.steps[i];
            values[step.output] = Some(out);
            for &slot in &step.release {
                values[slot] = None;
            }
        }
        Ok(values[self.output_slot].take().expect("output slot is never released"))
    }
}

/// Turns nodes into steps, inferring and checking every tensor's shape.
struct Builder<'a> {
    model: &'a ModelFile,
    names: HashMap<String, usize>,
    shapes: Vec<[usize; 4]>,
    steps: Vec<Step>,
    macs: MacCount,
}

impl<'a> Builder<'a> {
    fn new(model: &'a ModelFile) -> Self {
        let names = HashMap::from([(model.arch.input.clone(), 0)]);
        let shapes = vec![model.input.shape];
        Self { model, names, shapes, steps: Vec::new(), macs: MacCount::default() }
    }

    fn slot(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    fn add(&mut self, node: &Node) -> Result<(), ModelError> {
        let inputs = self.resolve(node)?;
        let shapes: Vec<[usize; 4]> = inputs.iter().map(|&i| self.shapes[i]).collect();
        let arity = match node {
            Node::Add { .. } | Node::Residual { .. } | Node::Imex { .. } => 2,
            Node::Concat { .. } => shapes.len().max(1),
            _ => 1,
        };
        if shapes.len() != arity || shapes.is_empty() {
            let problem = format!("reads {} tensors, expected {arity}", shapes.len());
            return Err(self.model.graph_error(node, problem));
        }
        let (op, shape) = self.lower(node, &shapes)?;
        if self.names.contains_key(node.output()) {
            let problem = "writes a tensor name that already exists".to_string();
            return Err(self.model.graph_error(node, problem));
        }
        let output = self.shapes.len();
        self.shapes.push(shape);
        self.names.insert(node.output().to_string(), output);
        self.steps.push(Step { op, inputs, output, release: Vec::new() });
        Ok(())
    }

    fn resolve(&self, node: &Node) -> Result<Vec<usize>, ModelError> {
        node.inputs()
            .iter()
            .map(|name| {
                self.slot(name).ok_or_else(|| {
                    self.model
                        .graph_error(node, format!("reads `{name}`, which no earlier node writes"))
                })
            })
            .collect()
    }

    /// The step for `node` and its output shape.
    fn lower(&mut self, node: &Node, ins: &[[usize; 4]]) -> Result<(Op, [usize; 4]), ModelError> {
        let x = ins[0];
        let model = self.model;
        let fail = |problem: String| Err(model.graph_error(node, problem));
        let same = |s: &[[usize; 4]]| s.iter().all(|t| *t == s[0]);
        Ok(match node {
            Node::Normalize { mean, std, .. } => {
                if mean.len() != x[1] || std.len() != x[1] || std.contains(&0.0) {
                    return fail(format!(
                        "needs {} non-zero mean/std values, got {}/{}",
                        x[1],
                        mean.len(),
                        std.len()
                    ));
                }
                (Op::Normalize { mean: mean.clone(), std: std.clone() }, x)
            }
            Node::Conv { weight, bias, stride, padding, groups, .. } => {
                self.conv(node, x, weight, bias.as_deref(), *stride, *padding, *groups)?
            }
            Node::Affine { scale, bias, .. } => {
                let scale = self.vector(node, scale, x[1])?;
                let bias = self.vector(node, bias, x[1])?;
                (Op::Affine { scale, bias }, x)
            }
            Node::Relu { .. } => (Op::Map(|v| v.max(0.0)), x),
            Node::Sigmoid { .. } => (Op::Map(ops::sigmoid), x),
            Node::Exp { .. } => (Op::Map(f32::exp), x),
            Node::Softplus { .. } => (Op::Map(ops::softplus), x),
            Node::Linear { a, b, .. } => (Op::Linear { a: *a, b: *b }, x),
            Node::Add { .. } | Node::Residual { .. } if !same(ins) => {
                return fail(format!("adds tensors of shapes {ins:?}"));
            }
            Node::Add { .. } => (Op::Add { k: 1.0 }, x),
            Node::Residual { h, .. } => (Op::Add { k: *h }, x),
            Node::Imex { kernel, h, boundary, pad, .. } => {
                if !same(ins) {
                    return fail(format!("y and f have different shapes {ins:?}"));
                }
                let kernels = self.kernels(node, kernel, x[1])?;
                let plan = SolvePlan::new(&kernels, *h, *h, x[2], x[3], *boundary, *pad)
                    .map_err(|e| model.graph_error(node, e.to_string()))?;
                self.macs.imex_planes += (x[0] * x[1]) as u64;
                (Op::Imex { plan }, x)
            }
            Node::Upsample { scale, mode, .. } => {
                if *scale == 0 || *scale > 16 {
                    return fail(format!("upsample scale {scale}; expected 1..=16"));
                }
                (
                    Op::Upsample { scale: *scale, mode: *mode },
                    [x[0], x[1], x[2] * scale, x[3] * scale],
                )
            }
            Node::Concat { .. } => {
                if ins.iter().any(|s| s[0] != x[0] || s[2..] != x[2..]) {
                    return fail(format!("concatenates tensors of shapes {ins:?}"));
                }
                (Op::Concat, [x[0], ins.iter().map(|s| s[1]).sum(), x[2], x[3]])
            }
            Node::Coords { .. } => (Op::Coords, [x[0], 2, x[2], x[3]]),
            Node::AddTensor { tensor, .. } => self.add_tensor(node, tensor, x)?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        node: &Node,
        x: [usize; 4],
        weight: &str,
        bias: Option<&str>,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<(Op, [usize; 4]), ModelError> {
        let w = self.model.weight(weight, node)?;
        let fail = |problem: String| self.model.graph_error(node, problem);
        let [cout, cin_g, kh, kw] = match w.dims[..] {
            [a, b, c, d] => [a, b, c, d],
            _ => {
                return Err(fail(format!(
                    "weight `{weight}` has dims {:?}; expected [O, I/groups, kh, kw]",
                    w.dims
                )));
            }
        };
        if groups == 0 || cin_g * groups != x[1] || cout % groups != 0 || stride == 0 {
            return Err(fail(format!(
                "weight `{weight}` {:?} with groups {groups} and stride {stride} does not fit an input of {} channels",
                w.dims, x[1]
            )));
        }
        if kh > x[2] + 2 * padding || kw > x[3] + 2 * padding {
            return Err(fail(format!("kernel {kh}x{kw} larger than the padded input {x:?}")));
        }
        let bias = bias.map(|b| self.vector(node, b, cout)).transpose()?;
        let conv = Conv2d {
            weight: w.data.clone(),
            bias,
            cout,
            cin: x[1],
            kh,
            kw,
            stride,
            padding,
            groups,
        };
        let (ho, wo) = conv.output_size(x[2], x[3]);
        self.macs.conv += x[0] as u64 * conv.macs(x[2], x[3]);
        Ok((Op::Conv(conv), [x[0], cout, ho, wo]))
    }

    fn vector(&self, node: &Node, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let init = self.model.weight(name, node)?;
        if init.data.len() != len || init.dims.iter().filter(|&&d| d != 1).count() > 1 {
            let problem =
                format!("initializer `{name}` has dims {:?}; expected [{len}]", init.dims);
            return Err(self.model.graph_error(node, problem));
        }
        Ok(init.data.clone())
    }

    fn kernels(
        &self,
        node: &Node,
        name: &str,
        channels: usize,
    ) -> Result<Vec<Kernel3>, ModelError> {
        let init = self.model.weight(name, node)?;
        if init.dims != [channels, 1, 3, 3] {
            let problem =
                format!("kernel `{name}` has dims {:?}; expected [{channels}, 1, 3, 3]", init.dims);
            return Err(self.model.graph_error(node, problem));
        }
        Ok(init.data.chunks_exact(9).map(|k| k.try_into().expect("chunks of 9")).collect())
    }

    fn add_tensor(
        &self,
        node: &Node,
        name: &str,
        x: [usize; 4],
    ) -> Result<(Op, [usize; 4]), ModelError> {
        let init: &Initializer = self.model.weight(name, node)?;
        let fits = init.dims.len() == 4
            && init.dims[0] == 1
            && (1..4).all(|d| init.dims[d] == 1 || init.dims[d] == x[d]);
        if !fits {
            let problem = format!(
                "tensor `{name}` has dims {:?}; expected [1, {} or 1, {} or 1, {} or 1]",
                init.dims, x[1], x[2], x[3]
            );
            return Err(self.model.graph_error(node, problem));
        }
        let shape = [1, init.dims[1], init.dims[2], init.dims[3]];
        Ok((Op::AddTensor { data: init.data.clone(), shape }, x))
    }

    /// Marks, for each step, which slots it reads for the last time.
    fn finish(mut self, output_slot: usize) -> (Vec<Step>, usize, MacCount) {
        let mut last_use = vec![None; self.shapes.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for &slot in &step.inputs {
                last_use[slot] = Some(i);
            }
        }
        for (slot, last) in last_use.into_iter().enumerate() {
            if let Some(i) = last.filter(|_| slot != output_slot) {
                self.steps[i].release.push(slot);
            }
        }
        (self.steps, self.shapes.len(), self.macs)
    }
}

/// The machine's float32 multiply-add rate on large matrix products through the engine's own
/// `gemm` kernel (all rayon threads), measured for about `budget`: the compute floor's
/// denominator.
pub fn peak_macs_per_second(budget: std::time::Duration) -> f64 {
    const N: usize = 384;
    let lhs: Vec<f32> = (0..N * N).map(|i| (i % 17) as f32 * 0.01).collect();
    let rhs: Vec<f32> = (0..N * N).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut out = vec![0.0f32; N * N];
    gemm::matmul_acc(&mut out, &lhs, &rhs, N, N, N); // warm-up
    let (start, mut runs) = (std::time::Instant::now(), 0u64);
    while runs < 3 || start.elapsed() < budget {
        gemm::matmul_acc(&mut out, &lhs, &rhs, N, N, N);
        runs += 1;
    }
    (runs * (N * N * N) as u64) as f64 / start.elapsed().as_secs_f64()
}
