//! The ONNX Runtime engine: runs the model file's ONNX graph through ONNX Runtime with the
//! TensorRT, CUDA or CPU execution provider.
//!
//! Tensors are NCHW float32 with the shapes fixed in the model file; an input of another shape is
//! refused with both shapes named (resizing frames is the preprocessor's job, never a guess here).
//!
//! The user always learns which provider really runs: an explicitly requested provider that the
//! library lacks or that fails to start is an error, never a silent CPU fallback; for GPU
//! providers the first run at open is profiled and the number of nodes each provider got is
//! logged once (ONNX Runtime 1.17 has no node-assignment query; profiling works on every version),
//! with a warning when part of the graph falls back to the CPU.
//!
//! # Limitations
//!
//! The CUDA and TensorRT paths are untested: no GPU machine was lent while this was written.
//! `scripts/gpu-check.sh` records their parity and latency where a GPU exists.

pub mod library;
pub mod tensorrt;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use self::library::{Provider, Runtime};
use self::tensorrt::{Precision, TensorRtError, TensorRtOptions};
use super::parity::error_chain;
use super::select::ProviderChoice;
use super::{DepthEngine, EngineError};
use crate::tensor::Tensor;

/// How to open a model with ONNX Runtime.
#[derive(Clone, Debug)]
pub struct OrtOptions {
    pub provider: ProviderChoice,
    pub tensorrt: TensorRtOptions,
    /// Intra-op threads; `None` lets ONNX Runtime choose (one per core).
    pub threads: Option<usize>,
    /// Profile the first run to learn which provider runs each node. `None`: only for GPU
    /// providers (on the CPU provider every node runs on the CPU).
    pub report_assignment: Option<bool>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        Self {
            provider: ProviderChoice::Auto,
            tensorrt: TensorRtOptions::default(),
            threads: None,
            report_assignment: None,
        }
    }
}

/// Errors while opening a model with ONNX Runtime.
#[derive(Debug, thiserror::Error)]
pub enum OrtError {
    #[error("cannot read model {}", path.display())]
    ReadModel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the ONNX Runtime {version} library at {} was built without the {provider} execution \
         provider (it offers: {}); point --ort-lib at a build with {provider} (onnxruntime-gpu, \
         NVIDIA's Jetson wheel) or use --ep cpu",
        library.display(),
        names(offered)
    )]
    ProviderMissing {
        provider: Provider,
        library: PathBuf,
        version: String,
        offered: Vec<Provider>,
    },
    #[error("the {provider} execution provider could not start for {}", path.display())]
    ProviderFailed {
        provider: Provider,
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error("{} is not a valid ONNX model for ONNX Runtime", path.display())]
    InvalidModel {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error("ONNX Runtime could not open {} on {provider}", path.display())]
    Session {
        provider: Provider,
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error("{}: expected one float32 input and one float32 output of rank 4, found {found}",
            path.display())]
    UnsupportedModel { path: PathBuf, found: String },
    #[error("{precision} needs the TensorRT execution provider; {provider} runs fp32 only")]
    PrecisionNeedsTensorRt { precision: Precision, provider: Provider },
    #[error(transparent)]
    TensorRt(#[from] TensorRtError),
    #[error("the first run of {} on {provider} failed", path.display())]
    FirstRun {
        provider: Provider,
        path: PathBuf,
        #[source]
        source: EngineError,
    },
}

fn names(providers: &[Provider]) -> String {
    if providers.is_empty() {
        return "none of tensorrt, cuda, cpu".into();
    }
    providers.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
}

/// How many graph nodes each execution provider ran in the profiled first run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Assignment {
    /// ONNX Runtime provider name -> node count.
    pub nodes: BTreeMap<String, usize>,
    /// Op types that ran on the CPU provider.
    pub cpu_ops: BTreeMap<String, usize>,
}

impl Assignment {
    /// Parses an ONNX Runtime profile (Chrome trace JSON): one `Node` event per kernel run.
    pub fn from_profile(json: &str) -> Result<Assignment, serde_json::Error> {
        let events: Vec<serde_json::Value> = serde_json::from_str(json)?;
        let mut out = Assignment::default();
        for event in &events {
            let is_kernel = event["cat"] == "Node"
                && event["name"].as_str().is_some_and(|n| n.ends_with("_kernel_time"));
            let Some(provider) = event["args"]["provider"].as_str().filter(|_| is_kernel) else {
                continue;
            };
            *out.nodes.entry(provider.to_string()).or_default() += 1;
            if provider == Provider::Cpu.ep_name() {
                let op = event["args"]["op_name"].as_str().unwrap_or("?").to_string();
                *out.cpu_ops.entry(op).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// `"tensorrt+cpu"`: the providers that ran nodes, ours in TensorRT, CUDA, CPU order.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = Provider::ALL
            .into_iter()
            .filter(|p| self.nodes.contains_key(p.ep_name()))
            .map(|p| p.name().to_string())
            .collect();
        let others = self.nodes.keys().filter(|n| Provider::from_ep_name(n).is_none());
        parts.extend(others.cloned());
        parts.join("+")
    }

    /// `"12 nodes on cuda, 2 on cpu"`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .nodes
            .iter()
            .map(|(name, n)| {
                let short = Provider::from_ep_name(name).map_or(name.as_str(), |p| p.name());
                format!("{n} on {short}")
            })
            .collect();
        format!("nodes: {}", parts.join(", "))
    }
}

/// A model opened in ONNX Runtime.
pub struct OrtEngine {
    session: Session,
    path: PathBuf,
    /// Input dims; `None` where the model leaves a dimension free.
    input_shape: [Option<usize>; 4],
    provider: Provider,
    precision: Precision,
    assignment: Option<Assignment>,
    runtime: &'static Runtime,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine")
            .field("path", &self.path)
            .field("input_shape", &self.input_shape)
            .field("provider", &self.provider)
            .field("precision", &self.precision)
            .field("assignment", &self.assignment)
            .finish_non_exhaustive()
    }
}

impl OrtEngine {
    /// Opens `model` on the provider `options` ask for. `--ep auto` tries TensorRT, CUDA and CPU
    /// in turn among those the library offers, warning for each that fails.
    pub fn open(
        runtime: &'static Runtime,
        model: &Path,
        options: &OrtOptions,
    ) -> Result<OrtEngine, OrtError> {
        std::fs::metadata(model)
            .map_err(|source| OrtError::ReadModel { path: model.to_path_buf(), source })?;
        let plan = provider_plan(runtime, options)?;
        let mut last = None;
        for (i, &provider) in plan.iter().enumerate() {
            match Self::open_on(runtime, model, provider, options) {
                Ok(engine) => return Ok(engine),
                Err(err @ OrtError::InvalidModel { .. }) => return Err(err),
                Err(err) if i + 1 < plan.len() => {
                    tracing::warn!(
                        "{provider} could not be used ({}); trying {}",
                        error_chain(&err),
                        plan[i + 1]
                    );
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.expect("provider plan is never empty"))
    }

    fn open_on(
        runtime: &'static Runtime,
        model: &Path,
        provider: Provider,
        options: &OrtOptions,
    ) -> Result<OrtEngine, OrtError> {
        let precision = effective_precision(provider, options)?;
        let (eps, building) = execution_providers(model, provider, options)?;
        let profile = options.report_assignment.unwrap_or(provider != Provider::Cpu);
        let prefix = profile.then(profile_prefix);

        let note = building.then(|| building_message(model, precision));
        let engine = with_heartbeat(note, || {
            let session = build_session(runtime, model, provider, eps, options, prefix.as_deref())?;
            let mut engine = OrtEngine::wrap(session, model, provider, precision, runtime)?;
            if provider != Provider::Cpu || profile {
                engine.assignment = engine.first_run(profile)?;
            }
            Ok::<_, OrtError>(engine)
        })?;
        engine.log_opened();
        Ok(engine)
    }

    fn wrap(
        session: Session,
        model: &Path,
        provider: Provider,
        precision: Precision,
        runtime: &'static Runtime,
    ) -> Result<OrtEngine, OrtError> {
        let input_shape = single_io_shape(&session, model)?;
        Ok(OrtEngine {
            session,
            path: model.to_path_buf(),
            input_shape,
            provider,
            precision,
            assignment: None,
            runtime,
        })
    }

    /// Runs zeros once (TensorRT and CUDA finish their set-up here); with `profile`, ends the
    /// profile and reads which provider ran each node.
    fn first_run(&mut self, profile: bool) -> Result<Option<Assignment>, OrtError> {
        let shape = self.input_shape.map(|d| d.unwrap_or(1));
        let zeros = Tensor::zeros(shape);
        self.run(&zeros).map_err(|source| OrtError::FirstRun {
            provider: self.provider,
            path: self.path.clone(),
            source,
        })?;
        if !profile {
            return Ok(None);
        }
        let file = match self.session.end_profiling() {
            Ok(file) => PathBuf::from(file),
            Err(err) => {
                tracing::warn!("could not end ONNX Runtime profiling: {err}");
                return Ok(None);
            }
        };
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|json| Assignment::from_profile(&json).map_err(|e| e.to_string()));
        let _ = std::fs::remove_file(&file);
        match parsed {
            Ok(assignment) => Ok(Some(assignment)),
            Err(err) => {
                tracing::warn!("could not read ONNX Runtime profile {}: {err}", file.display());
                Ok(None)
            }
        }
    }

    fn log_opened(&self) {
        let model = self.path.display();
        let label = self.provider();
        match &self.assignment {
            Some(a) => tracing::info!(
                "ONNX Runtime {} runs {model} (input {:?}) on {label} ({}; {})",
                self.runtime.version,
                self.input_shape(),
                self.precision,
                a.summary()
            ),
            None => tracing::info!(
                "ONNX Runtime {} runs {model} (input {:?}) on {label} ({})",
                self.runtime.version,
                self.input_shape(),
                self.precision
            ),
        }
        if let Some(a) = &self.assignment
            && self.provider != Provider::Cpu
            && !a.cpu_ops.is_empty()
        {
            let ops: Vec<String> = a.cpu_ops.iter().map(|(op, n)| format!("{op} x{n}")).collect();
            tracing::warn!(
                "part of {model} falls back to the CPU provider, with copies between devices: {}",
                ops.join(", ")
            );
        }
    }

    /// The provider this engine was opened on (before looking at node assignment).
    pub fn requested_provider(&self) -> Provider {
        self.provider
    }

    /// The precision TensorRT builds in (fp32 on other providers).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Which provider ran each node in the profiled first run, if profiled.
    pub fn assignment(&self) -> Option<&Assignment> {
        self.assignment.as_ref()
    }

    /// The model's input shape (free dimensions as 1).
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape.map(|d| d.unwrap_or(1))
    }

    /// The loaded library.
    pub fn runtime(&self) -> &'static Runtime {
        self.runtime
    }

    fn check_input(&self, input: &Tensor) -> Result<(), EngineError> {
        let fits = self.input_shape.iter().zip(input.shape).all(|(d, n)| d.is_none_or(|d| d == n));
        if fits {
            Ok(())
        } else {
            Err(EngineError::InputShape { expected: self.input_shape(), found: input.shape })
        }
    }
}

impl DepthEngine for OrtEngine {
    fn name(&self) -> &str {
        "ort"
    }

    fn provider(&self) -> String {
        match &self.assignment {
            Some(a) if !a.nodes.is_empty() => a.label(),
            _ => self.provider.name().to_string(),
        }
    }

    fn run(&mut self, input: &Tensor) -> Result<Tensor, EngineError> {
        self.check_input(input)?;
        let value = TensorRef::from_array_view((input.shape, input.data.as_slice()))
            .map_err(runtime_error)?;
        let outputs = self.session.run(ort::inputs![value]).map_err(runtime_error)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(runtime_error)?;
        let shape = output_shape(shape).ok_or_else(|| EngineError::Runtime {
            message: format!("output of rank {} (shape {shape:?}); expected rank 4", shape.len()),
            source: None,
        })?;
        Ok(Tensor::from_vec(shape, data.to_vec()))
    }
}

fn runtime_error(err: ort::Error) -> EngineError {
    EngineError::Runtime { message: err.message().to_string(), source: Some(Box::new(err)) }
}

/// `[N, K]` logits become `[N, K, 1, 1]`; rank 4 stays.
fn output_shape(dims: &[i64]) -> Option<[usize; 4]> {
    let d: Vec<usize> = dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
    match d.as_slice() {
        [n, c, h, w] => Some([*n, *c, *h, *w]),
        [n, k] => Some([*n, *k, 1, 1]),
        _ => None,
    }
}

fn provider_plan(runtime: &Runtime, options: &OrtOptions) -> Result<Vec<Provider>, OrtError> {
    let wanted = match options.provider {
        ProviderChoice::Tensorrt => Provider::TensorRt,
        ProviderChoice::Cuda => Provider::Cuda,
        ProviderChoice::Cpu => Provider::Cpu,
        ProviderChoice::Auto => {
            let plan: Vec<Provider> =
                Provider::ALL.into_iter().filter(|p| runtime.offers(*p)).collect();
            // Every ONNX Runtime build has the CPU provider; keep it even if the query failed.
            return Ok(if plan.is_empty() { vec![Provider::Cpu] } else { plan });
        }
    };
    if runtime.offers(wanted) || (wanted == Provider::Cpu && runtime.providers.is_empty()) {
        Ok(vec![wanted])
    } else {
        Err(OrtError::ProviderMissing {
            provider: wanted,
            library: runtime.path.clone(),
            version: runtime.version.clone(),
            offered: runtime.providers.clone(),
        })
    }
}

fn effective_precision(provider: Provider, options: &OrtOptions) -> Result<Precision, OrtError> {
    let asked = options.tensorrt.precision();
    if provider == Provider::TensorRt || asked == Precision::Fp32 {
        return Ok(asked);
    }
    if options.provider == ProviderChoice::Auto {
        tracing::warn!("{asked} applies to TensorRT only; {provider} runs the model in fp32");
        Ok(Precision::Fp32)
    } else {
        Err(OrtError::PrecisionNeedsTensorRt { precision: asked, provider })
    }
}

/// The execution providers to register, and whether a TensorRT engine will be built (no cached
/// engine yet).
fn execution_providers(
    model: &Path,
    provider: Provider,
    options: &OrtOptions,
) -> Result<(Vec<ExecutionProviderDispatch>, bool), OrtError> {
    let cuda = || ep::CUDA::default().build().error_on_failure();
    Ok(match provider {
        Provider::Cpu => (Vec::new(), false),
        Provider::Cuda => (vec![cuda()], false),
        Provider::TensorRt => {
            let gpu = super::gpu::primary_gpu_name();
            let (trt, cache) = tensorrt::provider(model, &options.tensorrt, &gpu)?;
            let building = cache.as_ref().is_none_or(|c| !c.has_engine());
            if !building && let Some(c) = &cache {
                tracing::info!("reusing the cached TensorRT engine in {}", c.path.display());
            }
            // Nodes TensorRT cannot take go to CUDA rather than the CPU.
            (vec![trt, cuda()], building)
        }
    })
}

fn build_session(
    runtime: &Runtime,
    model: &Path,
    provider: Provider,
    eps: Vec<ExecutionProviderDispatch>,
    options: &OrtOptions,
    profile: Option<&Path>,
) -> Result<Session, OrtError> {
    let classify = |err: ort::Error| classify_error(err, model, provider);
    let mut builder = Session::builder(runtime.environment()).map_err(classify)?;
    if let Some(threads) = options.threads {
        builder = builder.with_intra_threads(threads).map_err(|e| classify(e.into()))?;
    }
    if !eps.is_empty() {
        builder = builder.with_execution_providers(eps).map_err(|e| OrtError::ProviderFailed {
            provider,
            path: model.to_path_buf(),
            source: e.into(),
        })?;
    }
    if let Some(prefix) = profile {
        builder = builder.with_profiling(prefix).map_err(|e| classify(e.into()))?;
    }
    builder.commit_from_file(model).map_err(classify)
}

fn classify_error(err: ort::Error, model: &Path, provider: Provider) -> OrtError {
    use ort::ErrorCode as C;
    let path = model.to_path_buf();
    match err.code() {
        C::InvalidProtobuf | C::InvalidGraph | C::NoModel | C::NoSuchFile => {
            OrtError::InvalidModel { path, source: err }
        }
        C::ExecutionProviderFailure => OrtError::ProviderFailed { provider, path, source: err },
        _ if provider == Provider::Cpu => OrtError::Session { provider, path, source: err },
        _ => OrtError::ProviderFailed { provider, path, source: err },
    }
}

fn single_io_shape(session: &Session, model: &Path) -> Result<[Option<usize>; 4], OrtError> {
    let describe = |t: &ValueType| format!("{t:?}");
    let found = || {
        let ins: Vec<String> = session.inputs().iter().map(|o| describe(o.dtype())).collect();
        let outs: Vec<String> = session.outputs().iter().map(|o| describe(o.dtype())).collect();
        format!("inputs [{}], outputs [{}]", ins.join(", "), outs.join(", "))
    };
    let unsupported = || OrtError::UnsupportedModel { path: model.to_path_buf(), found: found() };
    let ([input], [output]) = (session.inputs(), session.outputs()) else {
        return Err(unsupported());
    };
    let f32_tensor = |t: &ValueType| t.tensor_type() == Some(TensorElementType::Float32);
    if !f32_tensor(input.dtype()) || !f32_tensor(output.dtype()) {
        return Err(unsupported());
    }
    let dims = input.dtype().tensor_shape().ok_or_else(unsupported)?;
    let dims: Vec<Option<usize>> = dims.iter().map(|&d| usize::try_from(d).ok()).collect();
    <[Option<usize>; 4]>::try_from(dims).map_err(|_| unsupported())
}

fn profile_prefix() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("imexdepth-ort-profile-{}-{n}", std::process::id()))
}

fn building_message(model: &Path, precision: Precision) -> String {
    format!(
        "building the TensorRT {precision} engine for {}; this can take minutes on a Jetson, and \
         later starts reuse the cached engine",
        model.display()
    )
}

/// Runs `f`; with a message, logs it first and then every 15 s until `f` returns.
fn with_heartbeat<T>(message: Option<String>, f: impl FnOnce() -> T) -> T {
    let Some(message) = message else { return f() };
    tracing::info!("{message}");
    let (done, wait) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let start = Instant::now();
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                wait.recv_timeout(Duration::from_secs(15))
            {
                tracing::info!(
                    "still building the TensorRT engine ({} s)",
                    start.elapsed().as_secs()
                );
            }
        });
        let out = f();
        drop(done);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"[
      {"cat": "Session", "name": "model_loading_uri", "args": {}},
      {"cat": "Node", "name": "/conv/Conv_fence_before", "args": {"op_name": "Conv"}},
      {"cat": "Node", "name": "/conv/Conv_kernel_time",
       "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
      {"cat": "Node", "name": "/mm/MatMul_kernel_time",
       "args": {"op_name": "MatMul", "provider": "CUDAExecutionProvider"}},
      {"cat": "Node", "name": "/shape/Shape_kernel_time",
       "args": {"op_name": "Shape", "provider": "CPUExecutionProvider"}}
    ]"#;

    #[test]
    fn profile_gives_node_counts_per_provider() {
        let a = Assignment::from_profile(PROFILE).unwrap();
        assert_eq!(a.nodes["CUDAExecutionProvider"], 2);
        assert_eq!(a.nodes["CPUExecutionProvider"], 1);
        assert_eq!(a.cpu_ops["Shape"], 1);
        assert_eq!(a.label(), "cuda+cpu");
        assert_eq!(a.summary(), "nodes: 1 on cpu, 2 on cuda");
        assert!(Assignment::from_profile("not json").is_err());
    }

    #[test]
    fn output_shapes_of_rank_two_and_four() {
        assert_eq!(output_shape(&[1, 1, 24, 32]), Some([1, 1, 24, 32]));
        assert_eq!(output_shape(&[8, 10]), Some([8, 10, 1, 1]));
        assert_eq!(output_shape(&[1, 2, 3]), None);
        assert_eq!(output_shape(&[-1, 2, 3, 4]), None);
    }
}
