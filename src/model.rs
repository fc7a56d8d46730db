//! The model file: an ONNX file whose `metadata_props` carry the architecture description the
//! native engine rebuilds the network from (format in `models/README.md`).

use serde::{Deserialize, Serialize};

/// `imexdepth.input`: what the model takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// `"rgb"` or `"gray"`.
    pub color: String,
    /// The model takes `pixel / scale`.
    pub scale: f32,
}

/// What the output tensor means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Depth (planar z), in `unit`.
    Depth,
    /// Inverse depth (disparity up to scale).
    InverseDepth,
    /// Per-class scores (segmentation).
    Logits,
}

/// `imexdepth.output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub kind: OutputKind,
    /// `"m"`, `"relative"` or `"class"`.
    pub unit: String,
}

/// Boundary handling of the implicit solve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    Periodic,
    Reflect,
}

/// Interpolation of `upsample`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    Nearest,
    Bilinear,
}

/// One node of the architecture description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    Normalize { inputs: Vec<String>, output: String, mean: Vec<f32>, std: Vec<f32> },
    Conv {
        inputs: Vec<String>,
        output: String,
        weight: String,
        bias: Option<String>,
        stride: usize,
        padding: usize,
        groups: usize,
    },
    Affine { inputs: Vec<String>, output: String, scale: String, bias: String },
    Relu { inputs: Vec<String>, output: String },
    Add { inputs: Vec<String>, output: String },
    Residual { inputs: Vec<String>, output: String, h: f32 },
    Imex { inputs: Vec<String>, output: String, kernel: String, h: f32, boundary: Boundary, pad: usize },
    Upsample { inputs: Vec<String>, output: String, scale: usize, mode: UpsampleMode },
    Concat { inputs: Vec<String>, output: String },
    Sigmoid { inputs: Vec<String>, output: String },
    Exp { inputs: Vec<String>, output: String },
    Softplus { inputs: Vec<String>, output: String },
    Linear { inputs: Vec<String>, output: String, a: f32, b: f32 },
    Coords { inputs: Vec<String>, output: String },
    AddTensor { inputs: Vec<String>, output: String, tensor: String },
}

/// `imexdepth.arch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    pub name: String,
    pub input: String,
    pub output: String,
    pub nodes: Vec<Node>,
}

/// Errors while loading a model file (placeholder until the loader lands).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: the native engine is not built yet")]
    NotBuilt { path: std::path::PathBuf },
}
