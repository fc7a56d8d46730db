//! Helpers shared by the end-to-end tests: fixtures written by the Python exporter.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use imexdepth::tensor::Tensor;

/// `tests/fixtures/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Every fixture folder holding a `model.onnx`.
pub fn fixture_names() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model.onnx").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Reads a little-endian float32 file as a tensor of `shape`.
pub fn read_f32(path: &Path, shape: [usize; 4]) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let data =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Tensor::from_vec(shape, data)
}

/// The fixture's input and expected output, shapes from `meta.json`.
pub fn fixture_io(name: &str) -> (Tensor, Tensor) {
    let dir = fixture_dir(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let shape = |key: &str| -> [usize; 4] {
        let dims: Vec<usize> = meta[key]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        dims.try_into().unwrap()
    };
    (
        read_f32(&dir.join("input.bin"), shape("input")),
        read_f32(&dir.join("output.bin"), shape("output")),
    )
}

/// The `imexdepth` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imexdepth"))
}
