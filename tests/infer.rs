//! `imexdepth infer` end to end: real photographs in, 16-bit millimetre depth out; bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn model() -> PathBuf {
    common::fixture_dir("imexnet-depth-random").join("model.onnx")
}

fn real_photo() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/coffee.png");
    assert!(path.is_file(), "{} missing: run scripts/setup.sh", path.display());
    path
}

fn infer(model: &Path, out: &Path, images: &[&Path]) -> Output {
    Command::new(common::bin())
        .args(["infer", "--engine", "native", "--model"])
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(images)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn writes_millimetre_depth_of_the_input_size() {
    let dir = tempfile::tempdir().unwrap();
    let photo = real_photo();
    let out = infer(&model(), dir.path(), &[&photo]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("median") && line.contains(" ms"), "{line}");
    let depth = image::open(dir.path().join("coffee.depth.png")).unwrap();
    let input = image::open(&photo).unwrap();
    assert_eq!((depth.width(), depth.height()), (input.width(), input.height()));
    let depth = depth.into_luma16();
    // Inside the centre crop every pixel has a depth in the model's 0.1-20 m range.
    let centre = depth.get_pixel(depth.width() / 2, depth.height() / 2).0[0];
    assert!((100..=20000).contains(&centre), "centre depth {centre} mm");
    let color = image::open(dir.path().join("coffee.color.png")).unwrap();
    assert_eq!((color.width(), color.height()), (input.width(), input.height()));
}

#[test]
fn stretch_fit_gives_every_pixel_a_depth() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["infer", "--engine", "native", "--fit", "stretch", "--json", "--model"])
        .arg(model())
        .arg("--out")
        .arg(dir.path())
        .arg(real_photo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["median_m"].as_f64().unwrap() > 0.1);
    let depth = image::open(dir.path().join("coffee.depth.png")).unwrap().into_luma16();
    assert!(depth.pixels().all(|p| p.0[0] > 0), "stretch leaves no invalid pixel");
}

#[test]
fn unreadable_and_empty_images_are_named_and_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"\xff\xd8\xff\xe0 this is not a jpeg").unwrap();
    let missing = dir.path().join("missing.png");
    let out_dir = dir.path().join("out");
    let out = infer(&model(), &out_dir, &[&empty, &garbage, &missing, &real_photo()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("empty.png") && err.contains("empty"), "{err}");
    assert!(err.contains("garbage.jpg"), "{err}");
    assert!(err.contains("missing.png"), "{err}");
    assert!(err.contains("3 of 4 images failed"), "{err}");
    // The good image still came out; nothing partial is left.
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"coffee.depth.png".to_string()), "{names:?}");
    assert!(names.iter().all(|n| !n.contains("partial") && !n.starts_with("garbage")), "{names:?}");
}

#[test]
fn unwritable_output_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = infer(&model(), &blocker.join("sub"), &[&real_photo()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("output folder") && err.contains("file/sub"), "{err}");
}

#[test]
fn missing_and_corrupt_models_exit_non_zero_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"\x08\x07garbage").unwrap();
    for model in [dir.path().join("nope.onnx"), corrupt] {
        let out = infer(&model, dir.path(), &[&real_photo()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&*model.to_string_lossy()) && !err.contains("panicked"), "{err}");
    }
}
