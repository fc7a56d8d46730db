//! Finding and loading the ONNX Runtime shared library (ort's `load-dynamic`: nothing is linked or
//! downloaded at build time).
//!
//! Search order, first hit wins:
//! 1. `--ort-lib PATH` (an error if the file is missing),
//! 2. `ORT_DYLIB_PATH` (an error if set and the file is missing),
//! 3. the project-local copy `third_party/onnxruntime/libonnxruntime.so` that
//!    `scripts/setup-ort.sh` extracts from PyPI's `onnxruntime` wheel, looked up in the working
//!    directory and in the ancestors of the executable's directory (`target/release/..`),
//! 4. the system: each directory of `LD_LIBRARY_PATH`, then `/usr/local/lib`,
//!    `/usr/lib/<arch>-linux-gnu`, `/usr/lib`, `/opt/onnxruntime/lib`.
//!
//! # API level
//!
//! The crate is built with ort's `api-17` feature, so it loads ONNX Runtime 1.17 and later: the
//! 1.31 CPU build from PyPI and NVIDIA's Jetson wheels (1.17 to 1.23) alike. An older library is
//! refused with [`LibraryError::TooOld`], not a crash.
//!
//! # Limitations
//!
//! One process loads one library: ort keeps the first one it loaded for the life of the process.
//! Asking for a second, different file gives [`LibraryError::AlreadyLoaded`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::logging::LogLevel;

/// The oldest ONNX Runtime this build loads (ort feature `api-17`).
pub const MIN_VERSION: &str = "1.17";

/// The environment variable ort itself reads; checked after `--ort-lib`.
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";

/// Where the project-local copy lives, relative to the project root.
pub const PROJECT_RELATIVE: &str = "third_party/onnxruntime";

/// Where a library path came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--ort-lib`.
    Flag,
    /// `ORT_DYLIB_PATH`.
    EnvVar,
    /// `third_party/onnxruntime/` (the set-up script's copy).
    Project,
    /// A system library directory.
    System,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Flag => "--ort-lib",
            Origin::EnvVar => ENV_VAR,
            Origin::Project => "project-local copy",
            Origin::System => "system library path",
        })
    }
}

/// A library file that exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub origin: Origin,
}

/// Errors while finding or loading the library.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("ONNX Runtime library {} (from {origin}) does not exist", path.display())]
    Missing { path: PathBuf, origin: Origin },
    #[error(
        "no ONNX Runtime library found (searched {}); run scripts/setup-ort.sh, set {ENV_VAR} \
         or pass --ort-lib",
        display_list(searched)
    )]
    NotFound { searched: Vec<PathBuf> },
    #[error("ONNX Runtime {found} at {} is older than {MIN_VERSION}, the oldest this build \
             supports (ort api-17); install ONNX Runtime {MIN_VERSION} or later", path.display())]
    TooOld { path: PathBuf, found: String },
    #[error("could not load ONNX Runtime library {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },
    #[error(
        "ONNX Runtime is already loaded from {} in this process; {} cannot be loaded beside it",
        loaded.display(),
        requested.display()
    )]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },
    #[error("could not create the ONNX Runtime environment from {}", path.display())]
    Environment {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
}

fn display_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".into();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The places to look for the library, in order.
#[derive(Clone, Debug, Default)]
pub struct LibrarySearch {
    /// `--ort-lib`.
    pub explicit: Option<PathBuf>,
    /// `ORT_DYLIB_PATH`.
    pub env: Option<PathBuf>,
    /// Candidate files of the project-local copy.
    pub project: Vec<PathBuf>,
    /// Candidate files in system directories.
    pub system: Vec<PathBuf>,
}

impl LibrarySearch {
    /// The default search: `explicit`, then `ORT_DYLIB_PATH`, the project-local copy, the system.
    pub fn new(explicit: Option<&Path>) -> Self {
        let env = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            explicit: explicit.map(Path::to_path_buf),
            env,
            project: project_candidates(),
            system: system_candidates(),
        }
    }

    /// A search that finds nothing (a machine without ONNX Runtime).
    pub fn nowhere() -> Self {
        Self::default()
    }

    /// The first candidate that exists. An explicit or environment path that does not exist is
    /// an error rather than a silent move down the list.
    pub fn locate(&self) -> Result<Located, LibraryError> {
        for (path, origin) in [(&self.explicit, Origin::Flag), (&self.env, Origin::EnvVar)] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(LibraryError::Missing { path: path.clone(), origin });
                }
                // ort resolves a relative path against the executable's folder first: make it
                // absolute so the file checked here is the file loaded.
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                return Ok(Located { path, origin });
            }
        }
        let lists = [(&self.project, Origin::Project), (&self.system, Origin::System)];
        for (list, origin) in lists {
            if let Some(path) = list.iter().find(|p| p.is_file()) {
                return Ok(Located { path: path.clone(), origin });
            }
        }
        Err(LibraryError::NotFound { searched: self.searched() })
    }

    /// Every path this search looks at, in order.
    pub fn searched(&self) -> Vec<PathBuf> {
        let explicit = self.explicit.iter().chain(self.env.iter());
        explicit.chain(self.project.iter()).chain(self.system.iter()).cloned().collect()
    }
}

fn library_file_names() -> Vec<String> {
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let plain = format!("{prefix}onnxruntime{suffix}");
    if cfg!(target_os = "linux") { vec![plain.clone(), format!("{plain}.1")] } else { vec![plain] }
}

fn project_candidates() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/release/imexdepth and target/release/deps/<test> sit 2 and 3 levels down.
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for root in roots {
        for name in library_file_names() {
            let candidate = root.join(PROJECT_RELATIVE).join(name);
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

fn system_candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    let arch_dir = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    for dir in ["/usr/local/lib", &arch_dir, "/usr/lib", "/opt/onnxruntime/lib"] {
        dirs.push(PathBuf::from(dir));
    }
    let mut out = Vec::new();
    for dir in dirs {
        for name in library_file_names() {
            let candidate = dir.join(name);
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// One of the execution providers imexdepth can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    /// TensorRT, CUDA, CPU: the order `--ep auto` tries.
    pub const ALL: [Provider; 3] = [Provider::TensorRt, Provider::Cuda, Provider::Cpu];

    /// The short name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }

    /// ONNX Runtime's name for it.
    pub fn ep_name(self) -> &'static str {
        match self {
            Provider::TensorRt => ep::TensorRT::NAME,
            Provider::Cuda => ep::CUDA::NAME,
            Provider::Cpu => ep::CPU::NAME,
        }
    }

    /// The short name for an ONNX Runtime provider name, if it is one of ours.
    pub fn from_ep_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.ep_name() == name)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The loaded library and its environment; one per process.
pub struct Runtime {
    env: Environment,
    pub path: PathBuf,
    pub origin: Origin,
    /// `major.minor.patch`, or `"unknown"`.
    pub version: String,
    /// The providers among [`Provider::ALL`] that this library build offers.
    pub providers: Vec<Provider>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("path", &self.path)
            .field("origin", &self.origin)
            .field("version", &self.version)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

impl Runtime {
    /// Locates and loads the library (once per process) and creates the environment.
    pub fn load(search: &LibrarySearch) -> Result<&'static Runtime, LibraryError> {
        let located = search.locate()?;
        let _guard = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(runtime) = RUNTIME.get() {
            return runtime.same_library(&located.path);
        }
        let runtime = Self::init(located)?;
        tracing::info!(
            "ONNX Runtime {} from {} ({}); providers: {}",
            runtime.version,
            runtime.path.display(),
            runtime.origin,
            runtime.provider_names()
        );
        Ok(RUNTIME.get_or_init(|| runtime))
    }

    /// The runtime if one was loaded in this process.
    pub fn get() -> Option<&'static Runtime> {
        RUNTIME.get()
    }

    fn same_library(&'static self, requested: &Path) -> Result<&'static Runtime, LibraryError> {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if canon(&self.path) == canon(requested) {
            Ok(self)
        } else {
            Err(LibraryError::AlreadyLoaded {
                loaded: self.path.clone(),
                requested: requested.to_path_buf(),
            })
        }
    }

    fn init(located: Located) -> Result<Runtime, LibraryError> {
        let path = located.path.clone();
        let builder = ort::init_from(&path).map_err(|source| match source {
            ort::LoadDynamicError::BadVersion { version_str, path } => {
                LibraryError::TooOld { path, found: version_str }
            }
            source => LibraryError::Load { path: path.clone(), source },
        })?;
        let env = builder
            .with_name("imexdepth")
            .build()
            .map_err(|source| LibraryError::Environment { path: path.clone(), source })?;
        // ONNX Runtime's INFO messages are many and low-level: pass them on only at -v.
        let level = if tracing::enabled!(tracing::Level::DEBUG) {
            LogLevel::Info
        } else {
            LogLevel::Warning
        };
        env.set_log_level(level);
        Ok(Runtime {
            env,
            version: library_version(&path),
            path,
            origin: located.origin,
            providers: offered_providers(),
        })
    }

    /// The ort environment sessions are created in.
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// Whether this library build offers `provider` (compiled in; it may still fail to start).
    pub fn offers(&self, provider: Provider) -> bool {
        self.providers.contains(&provider)
    }

    /// `"tensorrt, cuda, cpu"`.
    pub fn provider_names(&self) -> String {
        self.providers.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
    }
}

fn offered_providers() -> Vec<Provider> {
    let check = |available: ort::Result<bool>, provider: Provider| match available {
        Ok(true) => Some(provider),
        Ok(false) => None,
        Err(err) => {
            tracing::warn!("could not ask ONNX Runtime whether it offers {provider}: {err}");
            None
        }
    };
    [
        check(ep::TensorRT::is_available(), Provider::TensorRt),
        check(ep::CUDA::is_available(), Provider::Cuda),
        check(ep::CPU::is_available(), Provider::Cpu),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The library's version: from its build string (`git-branch=rel-1.31.1`), else from the file
/// name the path resolves to (`libonnxruntime.so.1.31.1`).
fn library_version(path: &Path) -> String {
    version_from_build_info(ort::info())
        .or_else(|| {
            let resolved = std::fs::canonicalize(path).ok()?;
            version_from_file_name(resolved.file_name()?.to_str()?)
        })
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn version_from_build_info(info: &str) -> Option<String> {
    let rest = &info[info.find("git-branch=rel-")? + "git-branch=rel-".len()..];
    let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    is_version(&version).then_some(version)
}

pub(crate) fn version_from_file_name(name: &str) -> Option<String> {
    let marker = ".so.";
    let version = &name[name.find(marker)? + marker.len()..];
    is_version(version).then(|| version.to_string())
}

fn is_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_build_info_and_file_names() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(version_from_build_info(info).as_deref(), Some("1.31.1"));
        assert_eq!(version_from_build_info("ORT Build Info: git-branch=main"), None);
        assert_eq!(version_from_file_name("libonnxruntime.so.1.20.0").as_deref(), Some("1.20.0"));
        assert_eq!(version_from_file_name("libonnxruntime.so"), None);
    }

    #[test]
    fn explicit_path_that_does_not_exist_is_an_error_not_a_fallthrough() {
        let search = LibrarySearch {
            explicit: Some("/nonexistent/libonnxruntime.so".into()),
            ..LibrarySearch::new(None)
        };
        let err = search.locate().unwrap_err();
        assert!(matches!(err, LibraryError::Missing { origin: Origin::Flag, .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/libonnxruntime.so"), "{err}");
    }

    #[test]
    fn empty_search_names_what_it_searched() {
        let dir = tempfile::tempdir().unwrap();
        let search = LibrarySearch {
            project: vec![dir.path().join("third_party/onnxruntime/libonnxruntime.so")],
            ..LibrarySearch::nowhere()
        };
        let err = search.locate().unwrap_err();
        assert!(matches!(err, LibraryError::NotFound { .. }));
        assert!(err.to_string().contains("third_party/onnxruntime/libonnxruntime.so"), "{err}");
    }

    #[test]
    fn first_existing_candidate_wins_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.so"), dir.path().join("b.so"));
        std::fs::write(&b, b"").unwrap();
        let search = LibrarySearch {
            project: vec![a.clone()],
            system: vec![b.clone()],
            ..LibrarySearch::nowhere()
        };
        assert_eq!(search.locate().unwrap(), Located { path: b, origin: Origin::System });
        std::fs::write(&a, b"").unwrap();
        assert_eq!(search.locate().unwrap(), Located { path: a, origin: Origin::Project });
    }
}
