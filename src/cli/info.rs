//! `imexdepth info`: what this machine offers. The ONNX Runtime library (found or not, path,
//! version, providers), which engine `--engine auto` would use, the GPUs, and the models in
//! `models/` with their metadata. Text on stdout, or one JSON object with `--json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use imexdepth::engine::gpu::{Gpu, gpus};
use imexdepth::model::ModelFile;

/// Arguments of `imexdepth info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// ONNX Runtime shared library to inspect; default: ORT_DYLIB_PATH, then the project-local
    /// copy, then the system's library paths.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Folder whose `*.onnx` models are listed.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Info {
    imexdepth: &'static str,
    onnxruntime: OrtInfo,
    gpus: Vec<Gpu>,
    models_dir: PathBuf,
    models: Vec<ModelInfo>,
}

#[derive(Debug, Default, Serialize)]
struct OrtInfo {
    /// Whether the `ort` feature is compiled in.
    built_with_ort: bool,
    /// The oldest library this build loads (ort API level).
    min_version: &'static str,
    found: bool,
    loaded: bool,
    path: Option<PathBuf>,
    origin: Option<String>,
    version: Option<String>,
    providers: Vec<String>,
    /// Why the library is not usable, if it is not.
    problem: Option<String>,
    searched: Vec<PathBuf>,
    /// What `--engine auto --ep auto` would run: `"ort"` or `"native"`.
    auto_engine: &'static str,
}

#[derive(Debug, Serialize)]
struct ModelInfo {
    path: PathBuf,
    bytes: u64,
    problem: Option<String>,
    arch: Option<String>,
    input_shape: Option<[usize; 4]>,
    input_color: Option<String>,
    output: Option<String>,
    /// `metadata_props`, except the long architecture description.
    metadata: BTreeMap<String, String>,
}

/// Runs `imexdepth info`.
pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let info = Info {
        imexdepth: env!("CARGO_PKG_VERSION"),
        onnxruntime: ort_info(args.ort_lib.as_deref()),
        gpus: gpus(),
        models: list_models(&args.models),
        models_dir: args.models,
    };
    if args.json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        print_text(&info);
    }
    Ok(())
}

#[cfg(feature = "ort")]
fn ort_info(explicit: Option<&Path>) -> OrtInfo {
    use imexdepth::engine::ort::library::{LibrarySearch, MIN_VERSION, Runtime};
    use imexdepth::engine::parity::error_chain;

    let search = LibrarySearch::new(explicit);
    let mut info = OrtInfo {
        built_with_ort: true,
        min_version: MIN_VERSION,
        searched: search.searched(),
        auto_engine: "native",
        ..OrtInfo::default()
    };
    if let Ok(located) = search.locate() {
        info.found = true;
        info.path = Some(located.path);
        info.origin = Some(located.origin.to_string());
    }
    match Runtime::load(&search) {
        Ok(runtime) => {
            info.loaded = true;
            info.version = Some(runtime.version.clone());
            info.providers = runtime.providers.iter().map(|p| p.name().to_string()).collect();
            info.auto_engine = "ort";
        }
        Err(err) => info.problem = Some(error_chain(&err)),
    }
    info
}

#[cfg(not(feature = "ort"))]
fn ort_info(_explicit: Option<&Path>) -> OrtInfo {
    OrtInfo {
        min_version: "-",
        problem: Some("this imexdepth was built without the `ort` feature".into()),
        auto_engine: "native",
        ..OrtInfo::default()
    }
}

fn list_models(dir: &Path) -> Vec<ModelInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    paths.sort();
    paths.iter().map(|p| model_info(p)).collect()
}

fn model_info(path: &Path) -> ModelInfo {
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match ModelFile::open(path) {
        Ok(model) => ModelInfo {
            path: path.to_path_buf(),
            bytes,
            problem: None,
            arch: Some(model.arch.name.clone()),
            input_shape: Some(model.input.shape),
            input_color: Some(model.input.color.clone()),
            output: Some(format!("{:?} ({})", model.output.kind, model.output.unit)),
            metadata: model.metadata.into_iter().filter(|(k, _)| k != "imexdepth.arch").collect(),
        },
        Err(err) => ModelInfo {
            path: path.to_path_buf(),
            bytes,
            problem: Some(err.to_string()),
            arch: None,
            input_shape: None,
            input_color: None,
            output: None,
            metadata: BTreeMap::new(),
        },
    }
}

fn print_text(info: &Info) {
    let ort = &info.onnxruntime;
    println!("imexdepth {}", info.imexdepth);
    if !ort.built_with_ort {
        println!("ONNX Runtime: not built in (cargo feature `ort` off)");
    } else {
        println!("ONNX Runtime (this build loads {} or later):", ort.min_version);
        match (&ort.path, ort.loaded) {
            (Some(path), true) => {
                let version = ort.version.as_deref().unwrap_or("unknown");
                let origin = ort.origin.as_deref().unwrap_or("?");
                println!("  library   {version} at {} ({origin})", path.display());
                println!("  providers {}", ort.providers.join(", "));
            }
            (Some(path), false) => println!("  library   {} found but not usable", path.display()),
            (None, _) => println!("  library   not found"),
        }
        if let Some(problem) = &ort.problem {
            println!("  problem   {problem}");
        }
    }
    println!("  --engine auto runs: {}", ort.auto_engine);
    print_gpus(&info.gpus);
    print_models(&info.models_dir, &info.models);
}

fn print_gpus(gpus: &[Gpu]) {
    if gpus.is_empty() {
        println!("GPUs: none found (no nvidia-smi, or it lists none; no Jetson model name)");
        return;
    }
    println!("GPUs:");
    for g in gpus {
        let extra: Vec<String> = [
            g.memory.clone(),
            g.compute_capability.as_ref().map(|c| format!("compute {c}")),
            g.driver.as_ref().map(|d| format!("driver {d}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        println!("  {} ({})", g.name, extra.join(", "));
    }
}

fn print_models(dir: &Path, models: &[ModelInfo]) {
    if models.is_empty() {
        println!("Models in {}: none", dir.display());
        return;
    }
    println!("Models in {}:", dir.display());
    for m in models {
        let size = if m.bytes >= 1_000_000 {
            format!("{:.1} MB", m.bytes as f64 / 1e6)
        } else {
            format!("{:.1} kB", m.bytes as f64 / 1e3)
        };
        let name = m.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        if let Some(problem) = &m.problem {
            println!("  {name}  {size}  NOT USABLE: {problem}");
            continue;
        }
        let arch = m.arch.as_deref().unwrap_or("?");
        let color = m.input_color.as_deref().unwrap_or("?");
        let output = m.output.as_deref().unwrap_or("?");
        println!(
            "  {name}  {size}  {arch}  input {:?} {color}  output {output}",
            m.input_shape.unwrap_or_default()
        );
        for (key, value) in &m.metadata {
            println!("      {key}: {}", shorten(value, 120));
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}...")
}
