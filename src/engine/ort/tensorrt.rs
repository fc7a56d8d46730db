//! TensorRT execution provider options: precision, INT8 calibration, and the engine and timing
//! caches that spare users a rebuild (minutes on a Jetson) at every start.
//!
//! Caches live in `<user cache dir>/imexdepth/tensorrt/<key>/` where the key names the model's
//! SHA-256 (first 16 hex digits), the precision, the TensorRT version and the GPU, so an engine
//! built for another model, precision, TensorRT or GPU is never reused. An unwritable cache folder
//! gives a warning and a fallback under the temporary directory; if that fails too, caching is
//! off (with a warning) and every start rebuilds.
//!
//! # Limitations
//!
//! Untested on a GPU: no GPU machine was lent while this was written (see `scripts/gpu-check.sh`).
//! The TensorRT version is read from the `libnvinfer.so.X.Y.Z` file name in the usual library
//! folders; where none is found the key says `trt-unknown`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use crate::engine::parity::Precision;

/// What the user asked of TensorRT.
#[derive(Clone, Debug, Default)]
pub struct TensorRtOptions {
    /// `--fp16`.
    pub fp16: bool,
    /// `--int8`; needs `calibration`.
    pub int8: bool,
    /// `--calibration FILE`: an INT8 calibration table (ONNX Runtime's flatbuffer table or
    /// TensorRT's native text table, told apart by its `TRT-` first line).
    pub calibration: Option<PathBuf>,
    /// Cache root instead of `<user cache dir>/imexdepth/tensorrt`.
    pub cache_root: Option<PathBuf>,
}

impl TensorRtOptions {
    /// The precision these options build.
    pub fn precision(&self) -> Precision {
        Precision::from_flags(self.fp16, self.int8)
    }
}

/// Errors while preparing TensorRT.
#[derive(Debug, thiserror::Error)]
pub enum TensorRtError {
    #[error("--int8 needs --calibration FILE (a calibration table, for example in calibration/)")]
    MissingCalibration,
    #[error("cannot read calibration table {}", path.display())]
    Calibration {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read model {} to hash it for the engine cache", path.display())]
    Hash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cache folder chosen for one model, precision, TensorRT version and GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDir {
    pub path: PathBuf,
    pub key: String,
    /// True when the preferred folder was unwritable and a fallback is used.
    pub fallback: bool,
}

impl CacheDir {
    /// True if an engine was built here before (`*.engine` present).
    pub fn has_engine(&self) -> bool {
        let Ok(entries) = std::fs::read_dir(&self.path) else { return false };
        entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "engine"))
    }
}

/// Lowercase hex SHA-256 of a file.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `<sha16>-<precision>-trt<version>-<gpu>`, with the GPU name reduced to `[a-z0-9-]`.
pub fn cache_key(model_sha256: &str, precision: Precision, trt: &str, gpu: &str) -> String {
    let sha = &model_sha256[..model_sha256.len().min(16)];
    format!("{sha}-{precision}-trt{}-{}", slug(trt), slug(gpu))
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "unknown".into() } else { out }
}

/// The default cache root: `<user cache dir>/imexdepth/tensorrt`.
pub fn default_cache_root() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("imexdepth").join("tensorrt"))
}

/// The fallback root when the preferred one is unwritable.
pub fn fallback_cache_root() -> PathBuf {
    std::env::temp_dir().join("imexdepth-cache").join("tensorrt")
}

/// Picks a writable cache folder for `key` under `preferred` (or the default root), falling back
/// to the temporary directory with a warning; `None` (caching off, warned) if neither works.
pub fn resolve_cache_dir(preferred: Option<&Path>, key: &str) -> Option<CacheDir> {
    let preferred = preferred.map(Path::to_path_buf).or_else(default_cache_root);
    if let Some(root) = &preferred {
        let path = root.join(key);
        match ensure_writable(&path) {
            Ok(()) => return Some(CacheDir { path, key: key.into(), fallback: false }),
            Err(err) => tracing::warn!(
                "TensorRT cache folder {} is not writable ({err}); using {} instead",
                path.display(),
                fallback_cache_root().display()
            ),
        }
    }
    let path = fallback_cache_root().join(key);
    match ensure_writable(&path) {
        Ok(()) => Some(CacheDir { path, key: key.into(), fallback: true }),
        Err(err) => {
            tracing::warn!(
                "TensorRT fallback cache folder {} is not writable either ({err}); engine caching \
                 is off and every start rebuilds the engine",
                path.display()
            );
            None
        }
    }
}

fn ensure_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".write-probe");
    std::fs::File::create(&probe)?.write_all(b"ok")?;
    std::fs::remove_file(&probe)
}

/// The TensorRT version from the newest `libnvinfer.so.X.Y.Z` in the usual library folders.
pub fn tensorrt_version(extra_dirs: &[PathBuf]) -> Option<String> {
    let mut dirs: Vec<PathBuf> = extra_dirs.to_vec();
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&v));
    }
    let arch = std::env::consts::ARCH;
    for d in [
        format!("/usr/lib/{arch}-linux-gnu"),
        "/usr/local/cuda/lib64".into(),
        "/usr/local/tensorrt/lib".into(),
        "/usr/lib".into(),
    ] {
        dirs.push(d.into());
    }
    let mut best: Option<Vec<u32>> = None;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(v) = name.to_str().and_then(|n| n.strip_prefix("libnvinfer.so.")) else {
                continue;
            };
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            if let Some(parts) = parts
                && best.as_ref().is_none_or(|b| parts > *b)
            {
                best = Some(parts);
            }
        }
    }
    best.map(|b| b.iter().map(u32::to_string).collect::<Vec<_>>().join("."))
}

/// Copies the calibration table into the cache folder (ONNX Runtime reads it from there by file
/// name) and says whether it is TensorRT's native format.
pub fn install_calibration(table: &Path, cache: &Path) -> Result<(String, bool), TensorRtError> {
    let err = |source| TensorRtError::Calibration { path: table.to_path_buf(), source };
    let bytes = std::fs::read(table).map_err(err)?;
    let native = bytes.starts_with(b"TRT-");
    let name = "imexdepth-int8-calibration.table".to_string();
    std::fs::write(cache.join(&name), &bytes).map_err(err)?;
    Ok((name, native))
}

/// The TensorRT execution provider for `model` with `options`; logs where its caches live.
pub fn provider(
    model: &Path,
    options: &TensorRtOptions,
    gpu: &str,
) -> Result<(ort::ep::ExecutionProviderDispatch, Option<CacheDir>), TensorRtError> {
    if options.int8 && options.calibration.is_none() {
        return Err(TensorRtError::MissingCalibration);
    }
    let sha = file_sha256(model)
        .map_err(|source| TensorRtError::Hash { path: model.to_path_buf(), source })?;
    let trt = tensorrt_version(&[]).unwrap_or_else(|| "unknown".into());
    let key = cache_key(&sha, options.precision(), &trt, gpu);
    let cache = resolve_cache_dir(options.cache_root.as_deref(), &key);

    let mut ep = ort::ep::TensorRT::default()
        .with_fp16(options.fp16 || options.int8)
        .with_int8(options.int8)
        .with_engine_cache(cache.is_some())
        .with_timing_cache(cache.is_some());
    if let Some(cache) = &cache {
        let dir = cache.path.display().to_string();
        ep = ep.with_engine_cache_path(&dir).with_timing_cache_path(&dir);
        tracing::info!("TensorRT engine and timing cache: {dir}");
        if let (true, Some(table)) = (options.int8, &options.calibration) {
            let (name, native) = install_calibration(table, &cache.path)?;
            ep = ep
                .with_int8_calibration_table_name(name)
                .with_int8_use_native_calibration_table(native);
        }
    } else if options.int8 {
        tracing::warn!("INT8 needs a writable cache folder to hold the calibration table");
    }
    Ok((ep.build().error_on_failure(), cache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_names_model_precision_tensorrt_and_gpu() {
        let sha = "0123456789abcdef0123456789abcdef";
        let key = cache_key(sha, Precision::Fp16, "10.3.0", "NVIDIA Jetson Orin Nano (8GB)");
        assert_eq!(key, "0123456789abcdef-fp16-trt10.3.0-nvidia-jetson-orin-nano-8gb");
        assert_eq!(
            cache_key(sha, Precision::Fp32, "", ""),
            "0123456789abcdef-fp32-trtunknown-unknown"
        );
    }

    #[test]
    fn unwritable_cache_root_falls_back_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where a folder should be: not writable even for root.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let cache = resolve_cache_dir(Some(&blocker.join("cache")), "k-test-fallback").unwrap();
        assert!(cache.fallback);
        assert!(cache.path.starts_with(fallback_cache_root()), "{}", cache.path.display());
        let ok = resolve_cache_dir(Some(dir.path()), "k").unwrap();
        assert_eq!(ok, CacheDir { path: dir.path().join("k"), key: "k".into(), fallback: false });
        assert!(!ok.has_engine());
    }

    #[test]
    fn calibration_table_format_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("t.cache");
        std::fs::write(&table, b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n").unwrap();
        let (name, native) = install_calibration(&table, dir.path()).unwrap();
        assert!(native);
        assert!(dir.path().join(name).is_file());
        let missing = install_calibration(&dir.path().join("none"), dir.path()).unwrap_err();
        assert!(matches!(missing, TensorRtError::Calibration { .. }));
    }

    #[test]
    fn model_hash_is_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m");
        std::fs::write(&f, b"abc").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(file_sha256(&f).unwrap(), want);
    }
}
