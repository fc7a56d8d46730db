//! The live pipeline end to end: headless on real photographs and on the synthetic scene,
//! recordings read back (MP4 through ffprobe/ffmpeg, raw depth PNGs), SIGINT mid-recording,
//! sources that fail or stall, Y4M and MP4 sources, camera format negotiation, and the window
//! under Xvfb.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imexdepth::capture::negotiate::{
    self, FormatCaps, FormatPreference, FourCc, PixelFormat, Request, SizeCaps,
};
use imexdepth::capture::synthetic::SyntheticSource;
use imexdepth::capture::{CaptureError, Frame, FrameSource};
use imexdepth::engine::{DepthEngine, EngineError};
use imexdepth::live::{self, EndReason, LiveConfig, LiveError};
use imexdepth::model::{InputSpec, OutputKind, OutputSpec};
use imexdepth::postprocess::{Colormap, Palette};
use imexdepth::record::{RawInfo, RawSidecar};
use imexdepth::tensor::Tensor;

const BIN: &str = env!("CARGO_BIN_EXE_imexdepth");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_model() -> PathBuf {
    root().join("tests/fixtures/imexnet-depth-random/model.onnx")
}

fn real_photos() -> String {
    let dir = root().join("assets/real");
    assert!(dir.join("coffee.png").is_file(), "{} missing: run scripts/setup.sh", dir.display());
    format!("{}/*.png", dir.display())
}

/// A fast, exact stand-in engine: depth = 0.5 m + 4 m x the pixel's mean intensity.
struct MeanEngine {
    delay: Duration,
}

fn mean_depth(r: f32, g: f32, b: f32) -> f32 {
    0.5 + 4.0 * (r + g + b) / 3.0
}

impl DepthEngine for MeanEngine {
    fn name(&self) -> &str {
        "mean"
    }
    fn provider(&self) -> String {
        "test".into()
    }
    fn run(&mut self, input: &Tensor) -> Result<Tensor, EngineError> {
        std::thread::sleep(self.delay);
        let [_, _, h, w] = input.shape;
        let (r, g, b) = (input.plane(0, 0), input.plane(0, 1), input.plane(0, 2));
        let data = (0..h * w).map(|i| mean_depth(r[i], g[i], b[i])).collect();
        Ok(Tensor::from_vec([1, 1, h, w], data))
    }
}

fn specs(w: usize, h: usize) -> (InputSpec, OutputSpec) {
    let input =
        InputSpec { name: "image".into(), shape: [1, 3, h, w], color: "rgb".into(), scale: 255.0 };
    let output = OutputSpec { name: "depth".into(), kind: OutputKind::Depth, unit: "m".into() };
    (input, output)
}

fn test_config(w: usize, h: usize) -> LiveConfig {
    let (input, output) = specs(w, h);
    let info = RawInfo {
        model: "mean".into(),
        engine: "mean".into(),
        provider: "test".into(),
        intrinsics: None,
    };
    let mut config = LiveConfig::new(input, output, info);
    config.duration = Some(Duration::from_secs(20));
    config
}

/// `(frames, duration seconds)` of the first video stream, by decoding every frame.
fn probe_mp4(path: &Path) -> (u64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames,duration,codec_name", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &json["streams"][0];
    assert_eq!(stream["codec_name"], "h264", "{json}");
    let frames = stream["nb_read_frames"].as_str().unwrap().parse().unwrap();
    let duration = stream["duration"].as_str().unwrap().parse().unwrap();
    (frames, duration)
}

/// ffmpeg decodes the whole file without a complaint.
fn assert_decodes(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed by scripts/setup.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg on {}: {stderr}",
        path.display()
    );
}

fn read_sidecar(dir: &Path) -> RawSidecar {
    let text = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn run_cli(args: &[&str]) -> (serde_json::Value, String) {
    let out = Command::new(BIN).arg("live").args(args).arg("--json").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "imexdepth live {args:?} failed: {stderr}");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (summary, stderr)
}

#[test]
fn real_photos_headless_with_both_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let (mp4, raw) = (dir.path().join("live.mp4"), dir.path().join("raw"));
    let model = fixture_model();
    let photos = real_photos();
    let (summary, _) = run_cli(&[
        "--model",
        model.to_str().unwrap(),
        "--engine",
        "native",
        "--source",
        &photos,
        "--fps",
        "4",
        "--frames",
        "6",
        "--no-window",
        "--record",
        mp4.to_str().unwrap(),
        "--record-raw",
        raw.to_str().unwrap(),
    ]);
    assert_eq!(summary["end"], "frames", "{summary}");
    assert_eq!(summary["frames_shown"], 6, "{summary}");
    assert_eq!(summary["engine"], "native");
    assert!(summary["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // The MP4 holds every shown frame and lasts as long as they covered in capture time.
    let (frames, duration) = probe_mp4(&mp4);
    assert_eq!(frames, 6);
    let sidecar = read_sidecar(&raw);
    assert_eq!(sidecar.frames.len(), 6);
    let span = sidecar.frames[5].t_capture_s - sidecar.frames[0].t_capture_s;
    let expected = span * 6.0 / 5.0;
    assert!((duration - expected).abs() < 0.05, "MP4 lasts {duration} s, frames span {expected} s");
    assert_decodes(&mp4);

    // Raw: RGB at the model's size, 16-bit depth in millimetres within the model's range.
    assert_eq!((sidecar.width, sidecar.height, sidecar.depth_unit.as_str()), (320, 240, "mm"));
    let depth = image::open(raw.join("depth_000005.png")).unwrap();
    let depth = depth.as_luma16().expect("16-bit grey depth").clone();
    assert_eq!(depth.dimensions(), (320, 240));
    assert!(depth.pixels().all(|p| (100..=20_000).contains(&p.0[0])), "depth outside 0.1-20 m");
    assert_eq!(image::open(raw.join("rgb_000005.png")).unwrap().to_rgb8().dimensions(), (320, 240));
}

#[test]
fn synthetic_scene_raw_depth_reads_back_as_shown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(64, 48);
    config.frames = Some(8);
    config.record_raw = Some(dir.path().join("raw"));
    let source = Box::new(SyntheticSource::new(128, 96, 50.0));
    let summary =
        live::run(source, Box::new(MeanEngine { delay: Duration::ZERO }), config).unwrap();
    assert!(summary.error.is_none(), "{:?}", summary.error);
    assert_eq!((summary.end, summary.frames_shown), (EndReason::Frames, 8));

    // Each saved depth is the engine's depth of the saved picture, to the millimetre.
    let raw = dir.path().join("raw");
    let sidecar = read_sidecar(&raw);
    assert_eq!(sidecar.frames.len(), 8);
    for frame in [0, 7] {
        let rgb = image::open(raw.join(format!("rgb_{frame:06}.png"))).unwrap().to_rgb8();
        let depth = image::open(raw.join(format!("depth_{frame:06}.png"))).unwrap();
        let depth = depth.as_luma16().unwrap();
        for (p, d) in rgb.pixels().zip(depth.pixels()) {
            let [r, g, b] = p.0.map(|v| f32::from(v) / 255.0);
            let want = (mean_depth(r, g, b) * 1000.0).round() as i32;
            assert!(
                (i32::from(d.0[0]) - want).abs() <= 1,
                "frame {frame}: {} mm vs {want} mm",
                d.0[0]
            );
        }
    }
    let seqs: Vec<u64> = sidecar.frames.iter().map(|f| f.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn slow_engine_drops_stale_frames_and_latency_stays_bounded() {
    let mut config = test_config(32, 24);
    config.duration = Some(Duration::from_millis(1500));
    let source = Box::new(SyntheticSource::new(64, 48, 100.0));
    let engine = Box::new(MeanEngine { delay: Duration::from_millis(50) });
    let summary = live::run(source, engine, config).unwrap();
    assert_eq!(summary.end, EndReason::Duration);
    assert!(summary.dropped_before_inference > 50, "{summary:?}");
    // Latency is one engine run plus at most one frame of waiting, never a queue.
    assert!(summary.latency_ms.p99 < 400.0, "{:?}", summary.latency_ms);
    assert!(summary.frames_shown >= 10, "{summary:?}");
}

/// A source that yields `ok` frames, then fails (or stalls forever).
struct Faulty {
    inner: SyntheticSource,
    ok: u64,
    served: u64,
    stall: bool,
}

impl FrameSource for Faulty {
    fn describe(&self) -> String {
        "faulty".into()
    }
    fn nominal_fps(&self) -> Option<f64> {
        Some(20.0)
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.served == self.ok {
            if self.stall {
                loop {
                    std::thread::park();
                }
            }
            let source = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "cable pulled");
            return Err(CaptureError::Camera { device: "/dev/video9".into(), source });
        }
        self.served += 1;
        self.inner.next_frame()
    }
}

#[test]
fn source_error_mid_stream_ends_the_run_with_playable_files() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("err.mp4");
    let mut config = test_config(64, 48);
    config.record_mp4 = Some(mp4.clone());
    config.record_raw = Some(dir.path().join("raw"));
    let inner = SyntheticSource::new(64, 48, 20.0);
    let source = Box::new(Faulty { inner, ok: 5, served: 0, stall: false });
    let started = Instant::now();
    let summary =
        live::run(source, Box::new(MeanEngine { delay: Duration::ZERO }), config).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(summary.end, EndReason::Error);
    assert!(
        matches!(summary.error, Some(LiveError::Capture(CaptureError::Camera { .. }))),
        "{:?}",
        summary.error
    );
    assert!(summary.error_message.as_deref().unwrap().contains("cable pulled"));
    let shown = summary.frames_shown;
    assert!((1..=5).contains(&shown), "{summary:?}");
    assert_eq!(probe_mp4(&mp4).0, shown);
    assert_eq!(read_sidecar(&dir.path().join("raw")).frames.len() as u64, shown);
}

#[test]
fn stalled_source_is_reported_and_the_run_still_ends() {
    let mut config = test_config(64, 48);
    config.duration = Some(Duration::from_millis(1200));
    config.stall_warning = Duration::from_millis(300);
    let inner = SyntheticSource::new(64, 48, 20.0);
    let source = Box::new(Faulty { inner, ok: 3, served: 0, stall: true });
    let started = Instant::now();
    let summary =
        live::run(source, Box::new(MeanEngine { delay: Duration::ZERO }), config).unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!((summary.end, summary.frames_shown), (EndReason::Duration, 3));
    assert!(summary.error.is_none());
}

#[test]
fn stop_flag_finishes_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("stop.mp4");
    let mut config = test_config(64, 48);
    config.record_mp4 = Some(mp4.clone());
    let stop = Arc::new(AtomicBool::new(false));
    config.stop = stop.clone();
    let raise = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::SeqCst);
    });
    let source = Box::new(SyntheticSource::new(64, 48, 30.0));
    let summary =
        live::run(source, Box::new(MeanEngine { delay: Duration::ZERO }), config).unwrap();
    raise.join().unwrap();
    assert_eq!(summary.end, EndReason::Stopped);
    let (frames, duration) = probe_mp4(&mp4);
    assert_eq!(frames, summary.frames_shown);
    assert!((duration - 0.7).abs() < 0.25, "{duration} s for a 0.7 s run");
}

#[test]
fn sigint_mid_recording_leaves_playable_files() {
    let dir = tempfile::tempdir().unwrap();
    let (mp4, raw) = (dir.path().join("int.mp4"), dir.path().join("raw"));
    let model = fixture_model();
    let mut child = Command::new(BIN)
        .args(["live", "--engine", "native", "--source", "synthetic", "--fps", "15", "--no-window"])
        .arg("--model")
        .arg(&model)
        .arg("--record")
        .arg(&mp4)
        .arg("--record-raw")
        .arg(&raw)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until frames are being recorded, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !raw.join("depth_000002.png").exists() {
        assert!(Instant::now() < deadline, "no frames recorded within 30 s");
        assert!(child.try_wait().unwrap().is_none(), "live exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Stopped"), "{stdout}");
    let (frames, _) = probe_mp4(&mp4);
    assert!(frames >= 3, "{frames} frames");
    assert_decodes(&mp4);
    assert_eq!(read_sidecar(&raw).frames.len() as u64, frames);
}

#[test]
fn y4m_and_recorded_mp4_play_as_sources() {
    let dir = tempfile::tempdir().unwrap();
    let y4m = dir.path().join("clip.y4m");
    let frames: Vec<_> =
        (0..6).map(|i| imexdepth::capture::synthetic::render(96, 64, i as f32 * 0.2)).collect();
    imexdepth::capture::y4m::write_y4m(&y4m, &frames, 30).unwrap();

    // Y4M in, MP4 out.
    let mp4 = dir.path().join("clip.mp4");
    let mut config = test_config(64, 48);
    config.record_mp4 = Some(mp4.clone());
    let source =
        imexdepth::capture::open(&imexdepth::capture::SourceOptions::new(y4m.to_str().unwrap()))
            .unwrap();
    let summary =
        live::run(source, Box::new(MeanEngine { delay: Duration::ZERO }), config).unwrap();
    assert_eq!(summary.end, EndReason::EndOfStream, "{summary:?}");
    assert_eq!(summary.frames_captured, 6);
    let recorded = probe_mp4(&mp4).0;
    assert_eq!(recorded, summary.frames_shown);

    // That MP4 in again: every frame decodes, at the canvas size.
    let mut source =
        imexdepth::capture::open(&imexdepth::capture::SourceOptions::new(mp4.to_str().unwrap()))
            .unwrap();
    let mut count = 0;
    while let Some(frame) = source.next_frame().unwrap() {
        assert_eq!(frame.image.dimensions(), imexdepth::postprocess::canvas_size(64, 48));
        count += 1;
    }
    assert_eq!(count, recorded);
}

#[test]
fn write_error_stops_recording_but_not_the_live_view() {
    let mut config = test_config(32, 24);
    config.frames = Some(5);
    config.record_raw = Some(PathBuf::from("/dev/null/raw"));
    let source = Box::new(SyntheticSource::new(32, 24, 50.0));
    let result = live::run(source, Box::new(MeanEngine { delay: Duration::ZERO }), config);
    // The directory cannot be created: reported before any frame, as an error of the run.
    assert!(matches!(result, Ok(ref s) if s.error.is_some()) || result.is_err());

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(32, 24);
    config.frames = Some(5);
    config.record_raw = Some(dir.path().join("raw"));
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    // A directory where the first PNG should go makes writing it fail.
    std::fs::create_dir_all(raw.join("rgb_000000.png")).unwrap();
    let source = Box::new(SyntheticSource::new(32, 24, 50.0));
    let summary =
        live::run(source, Box::new(MeanEngine { delay: Duration::ZERO }), config).unwrap();
    assert_eq!((summary.end, summary.frames_shown), (EndReason::Frames, 5));
    assert_eq!(summary.record_errors.len(), 1, "{:?}", summary.record_errors);
}

// Camera capability lists as real cameras report them (`v4l2-ctl --list-formats-ext`).

fn sizes(list: &[(u32, u32, &[f64])]) -> Vec<SizeCaps> {
    list.iter().map(|&(width, height, fps)| SizeCaps { width, height, fps: fps.to_vec() }).collect()
}

fn request(width: u32, height: u32, fps: f64, preference: FormatPreference) -> Request {
    Request { width, height, fps, preference }
}

/// A YUYV-only webcam (Logitech C270 style).
fn yuyv_only() -> Vec<FormatCaps> {
    vec![FormatCaps {
        fourcc: FourCc::YUYV,
        description: "YUYV 4:2:2".into(),
        sizes: sizes(&[
            (640, 480, &[30.0, 25.0, 20.0, 15.0, 10.0, 5.0]),
            (160, 120, &[30.0, 15.0]),
            (320, 240, &[30.0, 15.0]),
            (1280, 960, &[7.5, 5.0]),
        ]),
    }]
}

/// An MJPEG-only camera (many cheap USB 2 modules).
fn mjpeg_only() -> Vec<FormatCaps> {
    vec![FormatCaps {
        fourcc: FourCc::MJPEG,
        description: "Motion-JPEG".into(),
        sizes: sizes(&[
            (1920, 1080, &[30.0]),
            (1280, 720, &[60.0, 30.0]),
            (640, 480, &[120.0, 60.0, 30.0]),
        ]),
    }]
}

/// A raw-Bayer sensor (Raspberry Pi camera through unicam).
fn bayer_only() -> Vec<FormatCaps> {
    let raw = |code: &[u8; 4], desc: &str| FormatCaps {
        fourcc: FourCc(*code),
        description: desc.into(),
        sizes: sizes(&[(3280, 2464, &[21.0]), (1640, 1232, &[41.0])]),
    };
    vec![raw(b"pRAA", "10-bit Bayer RGRG/GBGB Packed"), raw(b"RGGB", "8-bit Bayer RGRG/GBGB")]
}

/// Both YUYV and MJPEG (Logitech C920 style): YUYV is slow at large sizes.
fn c920() -> Vec<FormatCaps> {
    vec![
        FormatCaps {
            fourcc: FourCc::YUYV,
            description: "YUYV 4:2:2".into(),
            sizes: sizes(&[(640, 480, &[30.0]), (1280, 720, &[10.0]), (1920, 1080, &[5.0])]),
        },
        FormatCaps {
            fourcc: FourCc::MJPEG,
            description: "Motion-JPEG".into(),
            sizes: sizes(&[(640, 480, &[30.0]), (1280, 720, &[30.0]), (1920, 1080, &[30.0])]),
        },
    ]
}

#[test]
fn negotiation_yuyv_only_camera() {
    let choice =
        negotiate::negotiate(&yuyv_only(), &request(640, 480, 30.0, FormatPreference::Auto))
            .unwrap();
    assert_eq!(
        (choice.format, choice.width, choice.height, choice.fps),
        (PixelFormat::Yuyv, 640, 480, Some(30.0))
    );
    // Asking for MJPEG falls back to what there is, and says so.
    let choice =
        negotiate::negotiate(&yuyv_only(), &request(640, 480, 30.0, FormatPreference::Mjpeg))
            .unwrap();
    assert_eq!(choice.format, PixelFormat::Yuyv);
    assert!(choice.fell_back);
    // A size it lacks: the rate counts more than the size (640x480 at 30, not 1280x960 at 7.5),
    // and the smallest larger size where the rate cannot be had anyway.
    let choice =
        negotiate::negotiate(&yuyv_only(), &request(800, 600, 30.0, FormatPreference::Auto))
            .unwrap();
    assert_eq!((choice.width, choice.height, choice.fps), (640, 480, Some(30.0)));
    let choice =
        negotiate::negotiate(&yuyv_only(), &request(800, 600, 5.0, FormatPreference::Auto))
            .unwrap();
    assert_eq!((choice.width, choice.height, choice.fps), (1280, 960, Some(5.0)));
}

#[test]
fn negotiation_mjpeg_only_camera() {
    let choice =
        negotiate::negotiate(&mjpeg_only(), &request(640, 480, 30.0, FormatPreference::Auto))
            .unwrap();
    assert_eq!(
        (choice.format, choice.width, choice.height, choice.fps),
        (PixelFormat::Mjpeg, 640, 480, Some(30.0))
    );
    assert!(!choice.fell_back);
    let choice =
        negotiate::negotiate(&mjpeg_only(), &request(1280, 720, 50.0, FormatPreference::Auto))
            .unwrap();
    assert_eq!((choice.width, choice.fps), (1280, Some(60.0)));
}

#[test]
fn negotiation_bayer_only_camera_names_what_it_offers() {
    let err = negotiate::negotiate(&bayer_only(), &request(640, 480, 30.0, FormatPreference::Auto))
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("pRAA") && message.contains("RGGB"), "{message}");
    assert!(message.contains("MJPG, YUYV and NV12"), "{message}");
}

#[test]
fn negotiation_prefers_yuyv_only_where_it_reaches_the_rate() {
    let small =
        negotiate::negotiate(&c920(), &request(640, 480, 30.0, FormatPreference::Auto)).unwrap();
    assert_eq!(small.format, PixelFormat::Yuyv);
    let large =
        negotiate::negotiate(&c920(), &request(1280, 720, 30.0, FormatPreference::Auto)).unwrap();
    assert_eq!((large.format, large.fps), (PixelFormat::Mjpeg, Some(30.0)));
    let forced =
        negotiate::negotiate(&c920(), &request(640, 480, 30.0, FormatPreference::Mjpeg)).unwrap();
    assert_eq!((forced.format, forced.fell_back), (PixelFormat::Mjpeg, false));
}

#[test]
#[ignore = "needs /dev/video0"]
fn real_camera_headless() {
    let (summary, _) = run_cli(&[
        "--model",
        fixture_model().to_str().unwrap(),
        "--engine",
        "native",
        "--source",
        "/dev/video0",
        "--frames",
        "30",
        "--no-window",
    ]);
    assert_eq!(summary["frames_shown"], 30);
}

/// An X server on a free display number, killed on drop.
struct Xvfb {
    child: std::process::Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_xvfb() -> Xvfb {
    for n in 90..110 {
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            continue;
        }
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "1280x720x24", "-nolisten", "tcp", "-br"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed by scripts/setup.sh");
        let socket = format!("/tmp/.X11-unix/X{n}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&socket).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Xvfb { child, display };
    }
    panic!("no free X display number in :90-:109");
}

/// Top-left of the canvas: the HUD box starts at canvas (4, 4) in [`HUD_BACKGROUND`].
fn find_canvas(shot: &image::RgbImage) -> Option<(u32, u32)> {
    let bg = imexdepth::postprocess::HUD_BACKGROUND;
    shot.enumerate_pixels()
        .find(|(x, y, p)| {
            p.0 == bg
                && *x + 20 < shot.width()
                && *y + 20 < shot.height()
                && shot.get_pixel(x + 20, *y).0 == bg
                && shot.get_pixel(*x, y + 2).0 == bg
        })
        .map(|(x, y, _)| (x.saturating_sub(4), y.saturating_sub(4)))
}

#[test]
fn window_under_xvfb_shows_overlay_colour_bar_and_hud() {
    let dir = tempfile::tempdir().unwrap();
    // A flat grey picture: the overlay panel must be exactly the blend of grey and depth colour.
    let grey = dir.path().join("grey.png");
    image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128])).save(&grey).unwrap();
    let x = start_xvfb();
    let mut child = Command::new(BIN)
        .args(["live", "--engine", "native", "--fps", "10", "--duration", "8", "--scale", "1"])
        .args(["--view", "overlay-depth", "--alpha", "0.5", "--range", "0.5:5"])
        .arg("--model")
        .arg(fixture_model())
        .arg("--source")
        .arg(&grey)
        .env("DISPLAY", &x.display)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let shot_path = dir.path().join("shot.png");
    let mut canvas = None;
    let deadline = Instant::now() + Duration::from_secs(7);
    while canvas.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(700));
        let ok = Command::new("import")
            .args(["-display", &x.display, "-window", "root"])
            .arg(&shot_path)
            .status()
            .expect("import (imagemagick) is installed by scripts/setup.sh");
        if ok.success() {
            let shot = image::open(&shot_path).unwrap().to_rgb8();
            canvas = find_canvas(&shot).map(|origin| (shot, origin));
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let (shot, (x0, y0)) = canvas
        .unwrap_or_else(|| panic!("no window found: {}", String::from_utf8_lossy(&out.stderr)));
    let px = |x: u32, y: u32| shot.get_pixel(x0 + x, y0 + y).0;

    // HUD: text pixels on the dark box.
    let hud_text = (4..200)
        .flat_map(|x| (4..40).map(move |y| (x, y)))
        .filter(|&(x, y)| px(x, y) == imexdepth::postprocess::HUD_TEXT)
        .count();
    assert!(hud_text > 100, "only {hud_text} HUD text pixels");

    // Colour bar: far colour at the top of the strip, near colour at the bottom, unit label.
    let palette = Palette::new(Colormap::Turbo, false);
    let bar = 640 + 8;
    assert_eq!(px(bar, 14), palette.at(0.0));
    assert_eq!(px(bar, 240 - 7), palette.at(1.0));
    let label = (644..670)
        .flat_map(|x| (3..11).map(move |y| (x, y)))
        .filter(|&(x, y)| px(x, y) == [255, 255, 255])
        .count();
    assert!(label > 10, "no unit label on the colour bar");

    // Overlay: left = round(0.5 * depth colour + 0.5 * grey), depth colour from the right panel.
    let mut checked = 0;
    for y in (120..236).step_by(7) {
        for x in (10..310).step_by(13) {
            let (left, right) = (px(x, y), px(320 + x, y));
            // The pointer's cross (white) may lie over the panels; turbo has no white.
            if left == [255, 255, 255] || right == [255, 255, 255] {
                continue;
            }
            for c in 0..3 {
                let want = (0.5 * f32::from(right[c]) + 64.0).round() as i32;
                assert!(
                    (i32::from(left[c]) - want).abs() <= 1,
                    "overlay at ({x}, {y}): {left:?} vs depth {right:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 100);
}
