//! The native engine against the PyTorch reference fixtures, and its refusals of bad model files.

mod common;

use std::path::Path;

use imexdepth::engine::DepthEngine;
use imexdepth::engine::native::NativeEngine;
use imexdepth::model::{ModelError, ModelFile};
use imexdepth::tolerance::{Tier, compare};

#[test]
fn native_matches_pytorch_fixtures() {
    let names = common::fixture_names();
    assert!(names.len() >= 3, "fixtures missing: {names:?}");
    for name in names {
        let mut engine = NativeEngine::open(&common::fixture_dir(&name).join("model.onnx"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (input, want) = common::fixture_io(&name);
        let got = engine.run(&input).unwrap();
        assert_eq!(got.shape, want.shape, "{name}: output shape");
        let cmp = compare(&got.data, &want.data, Tier::CrossRuntime);
        eprintln!("{name}: {cmp}");
        assert!(cmp.passed(), "{name}: {cmp}");
    }
}

#[test]
fn wrong_input_shape_is_an_error() {
    let mut engine =
        NativeEngine::open(&common::fixture_dir("tiny-imex-reflect").join("model.onnx")).unwrap();
    let err = engine.run(&imexdepth::tensor::Tensor::zeros([1, 3, 10, 10])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("[1, 3, 10, 10]") && text.contains("[1, 3, 24, 32]"), "{text}");
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(common::fixture_dir("tiny-imex-reflect").join("model.onnx")).unwrap()
}

/// Rewrites the fixture with `edit` applied to its protobuf and loads it from a temp file.
fn load_edited(edit: impl FnOnce(&mut onnx_protobuf::ModelProto)) -> Result<ModelFile, ModelError> {
    use onnx_protobuf::Message;
    let mut proto = onnx_protobuf::ModelProto::parse_from_bytes(&fixture_bytes()).unwrap();
    edit(&mut proto);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.onnx");
    std::fs::write(&path, proto.write_to_bytes().unwrap()).unwrap();
    ModelFile::open(&path)
}

fn set_meta(proto: &mut onnx_protobuf::ModelProto, key: &str, f: impl FnOnce(&str) -> String) {
    let entry = proto.metadata_props.iter_mut().find(|e| e.key == key).unwrap();
    entry.value = f(&entry.value);
}

fn open_native(model: Result<ModelFile, ModelError>) -> String {
    match model.and_then(NativeEngine::from_model) {
        Ok(_) => panic!("a bad model loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_model_file_names_the_path() {
    let err = NativeEngine::open(Path::new("/nonexistent/model.onnx")).err().unwrap().to_string();
    assert!(err.contains("/nonexistent/model.onnx"), "{err}");
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = fixture_bytes();
    let cases: [(&str, &[u8]); 3] = [
        ("empty.onnx", b""),
        ("truncated.onnx", &bytes[..bytes.len() / 2]),
        ("text.onnx", b"hello, not a model\n"),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err =
            NativeEngine::open(&path).err().unwrap_or_else(|| panic!("{name} loaded")).to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn missing_metadata_is_named() {
    let err = open_native(load_edited(|p| p.metadata_props.retain(|e| e.key != "imexdepth.arch")));
    assert!(err.contains("imexdepth.arch") && err.contains("missing"), "{err}");
}

#[test]
fn unknown_layer_kind_is_named() {
    let err = open_native(load_edited(|p| {
        set_meta(p, "imexdepth.arch", |v| {
            v.replacen("\"op\": \"sigmoid\"", "\"op\": \"warp_drive\"", 1).replacen(
                "\"op\":\"sigmoid\"",
                "\"op\":\"warp_drive\"",
                1,
            )
        })
    }));
    assert!(err.contains("warp_drive"), "{err}");
}

#[test]
fn initializer_of_wrong_shape_is_named() {
    let err = open_native(load_edited(|p| {
        let graph = p.graph.as_mut().unwrap();
        let init =
            graph.initializer.iter_mut().find(|t| t.dims.len() == 4 && t.dims[2] == 3).unwrap();
        init.dims[0] += 1; // claims more output channels than its data holds
    }));
    assert!(err.contains("initializer") || err.contains("dims"), "{err}");
}

#[test]
fn absurd_initializer_dims_are_refused_before_allocation() {
    let err = open_native(load_edited(|p| {
        let graph = p.graph.as_mut().unwrap();
        graph.initializer[0].dims = vec![1 << 40, 1 << 30];
    }));
    assert!(err.contains("absurdly large"), "{err}");
}

#[test]
fn external_data_is_refused() {
    let err = open_native(load_edited(|p| {
        let graph = p.graph.as_mut().unwrap();
        let mut entry = onnx_protobuf::StringStringEntryProto::new();
        entry.key = "location".into();
        entry.value = "../../etc/passwd".into();
        graph.initializer[0].external_data.push(entry);
    }));
    assert!(err.contains("external data"), "{err}");
}
