//! The model file: an ONNX file whose `metadata_props` carry the architecture description the
//! native engine rebuilds the network from (format in `models/README.md`).
//!
//! [`ModelFile::open`] reads the file with the `onnx-protobuf` crate, parses the `imexdepth.*`
//! metadata and collects the float32 initializers. It trusts nothing in the file: sizes are
//! bounded before anything large is allocated, external data is refused (so no path in the file
//! is ever opened), and every initializer's element count must match its dimensions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use onnx_protobuf::{Message, ModelProto, TensorProto};
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
    Normalize {
        inputs: Vec<String>,
        output: String,
        mean: Vec<f32>,
        std: Vec<f32>,
    },
    Conv {
        inputs: Vec<String>,
        output: String,
        weight: String,
        bias: Option<String>,
        stride: usize,
        padding: usize,
        groups: usize,
    },
    Affine {
        inputs: Vec<String>,
        output: String,
        scale: String,
        bias: String,
    },
    Relu {
        inputs: Vec<String>,
        output: String,
    },
    Add {
        inputs: Vec<String>,
        output: String,
    },
    Residual {
        inputs: Vec<String>,
        output: String,
        h: f32,
    },
    Imex {
        inputs: Vec<String>,
        output: String,
        kernel: String,
        h: f32,
        boundary: Boundary,
        pad: usize,
    },
    Upsample {
        inputs: Vec<String>,
        output: String,
        scale: usize,
        mode: UpsampleMode,
    },
    Concat {
        inputs: Vec<String>,
        output: String,
    },
    Sigmoid {
        inputs: Vec<String>,
        output: String,
    },
    Exp {
        inputs: Vec<String>,
        output: String,
    },
    Softplus {
        inputs: Vec<String>,
        output: String,
    },
    Linear {
        inputs: Vec<String>,
        output: String,
        a: f32,
        b: f32,
    },
    Coords {
        inputs: Vec<String>,
        output: String,
    },
    AddTensor {
        inputs: Vec<String>,
        output: String,
        tensor: String,
    },
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

impl Node {
    /// Names of the tensors this node reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            Node::Normalize { inputs, .. }
            | Node::Conv { inputs, .. }
            | Node::Affine { inputs, .. }
            | Node::Relu { inputs, .. }
            | Node::Add { inputs, .. }
            | Node::Residual { inputs, .. }
            | Node::Imex { inputs, .. }
            | Node::Upsample { inputs, .. }
            | Node::Concat { inputs, .. }
            | Node::Sigmoid { inputs, .. }
            | Node::Exp { inputs, .. }
            | Node::Softplus { inputs, .. }
            | Node::Linear { inputs, .. }
            | Node::Coords { inputs, .. }
            | Node::AddTensor { inputs, .. } => inputs,
        }
    }

    /// Name of the tensor this node writes.
    pub fn output(&self) -> &str {
        match self {
            Node::Normalize { output, .. }
            | Node::Conv { output, .. }
            | Node::Affine { output, .. }
            | Node::Relu { output, .. }
            | Node::Add { output, .. }
            | Node::Residual { output, .. }
            | Node::Imex { output, .. }
            | Node::Upsample { output, .. }
            | Node::Concat { output, .. }
            | Node::Sigmoid { output, .. }
            | Node::Exp { output, .. }
            | Node::Softplus { output, .. }
            | Node::Linear { output, .. }
            | Node::Coords { output, .. }
            | Node::AddTensor { output, .. } => output,
        }
    }

    /// The op name as written in the file (`"conv"`, `"imex"`, ...).
    pub fn op(&self) -> &'static str {
        match self {
            Node::Normalize { .. } => "normalize",
            Node::Conv { .. } => "conv",
            Node::Affine { .. } => "affine",
            Node::Relu { .. } => "relu",
            Node::Add { .. } => "add",
            Node::Residual { .. } => "residual",
            Node::Imex { .. } => "imex",
            Node::Upsample { .. } => "upsample",
            Node::Concat { .. } => "concat",
            Node::Sigmoid { .. } => "sigmoid",
            Node::Exp { .. } => "exp",
            Node::Softplus { .. } => "softplus",
            Node::Linear { .. } => "linear",
            Node::Coords { .. } => "coords",
            Node::AddTensor { .. } => "add_tensor",
        }
    }
}

/// Metadata keys of the format (see `models/README.md`).
pub const KEY_FORMAT: &str = "imexdepth.format";
pub const KEY_ARCH: &str = "imexdepth.arch";
pub const KEY_INPUT: &str = "imexdepth.input";
pub const KEY_OUTPUT: &str = "imexdepth.output";
pub const KEY_TRAINING: &str = "imexdepth.training";
/// The format version this build reads.
pub const FORMAT_VERSION: &str = "1";

/// Largest model file read (bytes); anything bigger is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Largest single initializer (elements).
pub const MAX_INITIALIZER_ELEMENTS: usize = 1 << 28;

/// A float32 initializer: dimensions and row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct Initializer {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// A parsed model file: metadata plus initializers (the graph itself is left to ONNX Runtime).
#[derive(Clone, Debug)]
pub struct ModelFile {
    pub path: PathBuf,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub arch: Arch,
    /// `imexdepth.training`, free-form JSON (`Null` when absent).
    pub training: serde_json::Value,
    /// Every `metadata_props` entry, verbatim.
    pub metadata: BTreeMap<String, String>,
    pub initializers: HashMap<String, Initializer>,
    /// Size of the file in bytes.
    pub file_bytes: u64,
}

/// Errors while loading a model file. Each names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: model file is {bytes} bytes; expected at most {max} bytes")]
    TooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("{path}: not an ONNX model (protobuf parse failed; truncated or another file type?)")]
    NotOnnx {
        path: PathBuf,
        #[source]
        source: protobuf::Error,
    },
    #[error("{path}: ONNX file has {problem}; expected a model exported by imexdepth_train")]
    NotAModel { path: PathBuf, problem: String },
    #[error(
        "{path}: metadata key `{key}` is missing; expected an ONNX file written by \
         imexdepth_train.export (see models/README.md)"
    )]
    MissingMetadata { path: PathBuf, key: &'static str },
    #[error("{path}: metadata `{key}` is invalid: {source}")]
    BadMetadata {
        path: PathBuf,
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: model format version {found:?}; this build reads version {expected}")]
    FormatVersion { path: PathBuf, found: String, expected: &'static str },
    #[error("{path}: initializer `{name}`: {problem}")]
    Initializer { path: PathBuf, name: String, problem: String },
    #[error("{path}: node {node} ({op}): {problem}")]
    Graph { path: PathBuf, node: String, op: &'static str, problem: String },
}

impl ModelFile {
    /// Reads and checks a model file. Nothing large is allocated before the file size is known.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let path_buf = path.to_path_buf();
        let read_err = |source| ModelError::Read { path: path_buf.clone(), source };
        let bytes = std::fs::metadata(path).map_err(read_err)?.len();
        if bytes > MAX_FILE_BYTES {
            return Err(ModelError::TooLarge { path: path_buf, bytes, max: MAX_FILE_BYTES });
        }
        let raw = std::fs::read(path).map_err(read_err)?;
        Self::from_bytes(path, &raw)
    }

    /// Parses a model from memory; `path` only names it in errors.
    pub fn from_bytes(path: &Path, raw: &[u8]) -> Result<Self, ModelError> {
        let path = path.to_path_buf();
        if raw.is_empty() {
            let problem = "zero bytes".to_string();
            return Err(ModelError::NotAModel { path, problem });
        }
        let proto = ModelProto::parse_from_bytes(raw)
            .map_err(|source| ModelError::NotOnnx { path: path.clone(), source })?;
        let graph = match proto.graph.as_ref() {
            Some(graph) if proto.ir_version > 0 => graph,
            _ => {
                let problem = "no graph or no IR version".to_string();
                return Err(ModelError::NotAModel { path, problem });
            }
        };
        let metadata: BTreeMap<String, String> =
            proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let format = required(&path, &metadata, KEY_FORMAT)?;
        if format != FORMAT_VERSION {
            let found = format.to_string();
            return Err(ModelError::FormatVersion { path, found, expected: FORMAT_VERSION });
        }
        let input: InputSpec = json_key(&path, &metadata, KEY_INPUT)?;
        let output: OutputSpec = json_key(&path, &metadata, KEY_OUTPUT)?;
        let arch: Arch = json_key(&path, &metadata, KEY_ARCH)?;
        let training =
            match metadata.get(KEY_TRAINING) {
                Some(text) => serde_json::from_str(text).map_err(|source| {
                    ModelError::BadMetadata { path: path.clone(), key: KEY_TRAINING, source }
                })?,
                None => serde_json::Value::Null,
            };
        let mut initializers = HashMap::new();
        for tensor in &graph.initializer {
            // Integer initializers (pads, shapes, axes) belong to the ONNX graph only.
            if let Some(init) = read_initializer(&path, tensor)? {
                initializers.insert(tensor.name.clone(), init);
            }
        }
        let file_bytes = raw.len() as u64;
        let model =
            ModelFile { path, input, output, arch, training, metadata, initializers, file_bytes };
        model.check_input()?;
        Ok(model)
    }

    /// The initializer `name`, or an error naming the node that wants it.
    pub fn weight(&self, name: &str, node: &Node) -> Result<&Initializer, ModelError> {
        self.initializers.get(name).ok_or_else(|| {
            self.graph_error(node, format!("initializer `{name}` is not in the file"))
        })
    }

    /// A [`ModelError::Graph`] for `node`.
    pub fn graph_error(&self, node: &Node, problem: String) -> ModelError {
        let node_name = node.output().to_string();
        ModelError::Graph { path: self.path.clone(), node: node_name, op: node.op(), problem }
    }

    /// Short description for logs: `name [N,C,H,W] -> kind (unit)`.
    pub fn summary(&self) -> String {
        let [n, c, h, w] = self.input.shape;
        format!(
            "{} [{n},{c},{h},{w}] -> {:?} ({}), {} nodes, {} initializers",
            self.arch.name,
            self.output.kind,
            self.output.unit,
            self.arch.nodes.len(),
            self.initializers.len()
        )
    }

    fn check_input(&self) -> Result<(), ModelError> {
        let [n, c, h, w] = self.input.shape;
        let plausible = (1..=64).contains(&n) && (c == 1 || c == 3) && h >= 1 && w >= 1;
        let scale_ok = self.input.scale.is_finite() && self.input.scale > 0.0;
        if !plausible || h > 8192 || w > 8192 || !scale_ok {
            let problem = format!(
                "imexdepth.input has shape {:?} and scale {}; expected [N<=64, 1 or 3, H<=8192, \
                 W<=8192] and a positive scale",
                self.input.shape, self.input.scale
            );
            return Err(ModelError::NotAModel { path: self.path.clone(), problem });
        }
        Ok(())
    }
}

fn required<'a>(
    path: &Path,
    metadata: &'a BTreeMap<String, String>,
    key: &'static str,
) -> Result<&'a str, ModelError> {
    metadata
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| ModelError::MissingMetadata { path: path.to_path_buf(), key })
}

fn json_key<T: serde::de::DeserializeOwned>(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<T, ModelError> {
    let text = required(path, metadata, key)?;
    serde_json::from_str(text).map_err(|source| ModelError::BadMetadata {
        path: path.to_path_buf(),
        key,
        source,
    })
}

/// ONNX `TensorProto.DataType.FLOAT`.
const ONNX_FLOAT: i32 = 1;

/// The float32 initializer in `tensor`, `None` for other data types.
fn read_initializer(path: &Path, tensor: &TensorProto) -> Result<Option<Initializer>, ModelError> {
    let fail = |problem: String| ModelError::Initializer {
        path: path.to_path_buf(),
        name: tensor.name.clone(),
        problem,
    };
    if !tensor.external_data.is_empty() || tensor.data_location.value() != 0 {
        return Err(fail("stored as external data; expected the data inside the file".into()));
    }
    let mut dims = Vec::with_capacity(tensor.dims.len());
    let mut count: usize = 1;
    for &d in &tensor.dims {
        let d = usize::try_from(d).map_err(|_| fail(format!("negative dimension {d}")))?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_INITIALIZER_ELEMENTS)
            .ok_or_else(|| fail(format!("dimensions {:?} are absurdly large", tensor.dims)))?;
        dims.push(d);
    }
    if tensor.data_type != ONNX_FLOAT {
        return Ok(None);
    }
    let data = if !tensor.raw_data.is_empty() {
        if tensor.raw_data.len() != count * 4 {
            return Err(fail(format!(
                "dimensions {:?} need {} bytes of raw data, found {}",
                tensor.dims,
                count * 4,
                tensor.raw_data.len()
            )));
        }
        tensor
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        if tensor.float_data.len() != count {
            return Err(fail(format!(
                "dimensions {:?} need {count} values, found {}",
                tensor.dims,
                tensor.float_data.len()
            )));
        }
        tensor.float_data.clone()
    };
    Ok(Some(Initializer { dims, data }))
}
