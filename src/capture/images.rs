//! Still images as a video: one file, a folder, or a glob such as `'photos/*.png'`, played at a
//! fixed rate, looping unless asked to play once.
//!
//! Globs match `*` and `?` in the file name only (`dir/*.png`, not `*/x.png`); matches are
//! played in name order. Each image is decoded before its deadline and stamped when it is due,
//! so the capture timestamp is when the frame is handed on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pace::Pacer;
use super::{CaptureError, DEFAULT_IMAGE_FPS, Frame, FrameSource, SourceOptions};

/// File extensions taken from folders and globs.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Images played at a fixed rate.
pub struct ImageSource {
    spec: String,
    paths: Vec<PathBuf>,
    pacer: Pacer,
    fps: f64,
    looping: bool,
    next: usize,
    seq: u64,
}

impl ImageSource {
    /// Lists the images `spec` names and checks that the first one decodes.
    pub fn open(spec: &str, options: &SourceOptions) -> Result<Self, CaptureError> {
        let paths = list_images(spec)?;
        load_rgb(&paths[0])?;
        let fps = options.fps.unwrap_or(DEFAULT_IMAGE_FPS);
        if !(fps.is_finite() && fps > 0.0) {
            return Err(CaptureError::BadSpec { spec: format!("--fps {fps}"), expected: "> 0" });
        }
        let pacer = Pacer::new(fps);
        let spec = spec.to_string();
        Ok(Self {
            spec,
            paths,
            pacer,
            fps,
            looping: options.looping.unwrap_or(true),
            next: 0,
            seq: 0,
        })
    }

    /// The files played, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl FrameSource for ImageSource {
    fn describe(&self) -> String {
        let looping = if self.looping { ", looping" } else { "" };
        format!("{} ({} images @ {} fps{looping})", self.spec, self.paths.len(), self.fps)
    }

    fn nominal_fps(&self) -> Option<f64> {
        Some(self.fps)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.next == self.paths.len() {
            if !self.looping {
                return Ok(None);
            }
            self.next = 0;
        }
        let image = load_rgb(&self.paths[self.next])?;
        self.next += 1;
        let captured = self.pacer.wait();
        let timestamp = Duration::from_secs_f64(self.seq as f64 / self.fps);
        let frame = Frame { image, captured, timestamp, seq: self.seq };
        self.seq += 1;
        Ok(Some(frame))
    }
}

/// Decodes one image file to 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<image::RgbImage, CaptureError> {
    let reader = image::ImageReader::open(path)
        .map_err(|source| CaptureError::Io { path: path.to_path_buf(), source })?;
    let reader = reader
        .with_guessed_format()
        .map_err(|source| CaptureError::Io { path: path.to_path_buf(), source })?;
    let decoded = reader
        .decode()
        .map_err(|source| CaptureError::Image { path: path.to_path_buf(), source })?;
    Ok(decoded.into_rgb8())
}

/// The image files `spec` names: a file, a folder's images, or a file-name glob.
pub fn list_images(spec: &str) -> Result<Vec<PathBuf>, CaptureError> {
    let path = Path::new(spec);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut paths = if name.contains(['*', '?']) {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        read_dir_matching(dir, |file| wildcard_match(name, file))?
    } else if path.is_dir() {
        read_dir_matching(path, has_image_extension)?
    } else {
        vec![path.to_path_buf()]
    };
    paths.sort();
    if paths.is_empty() {
        return Err(CaptureError::NoImages { pattern: spec.to_string() });
    }
    Ok(paths)
}

fn read_dir_matching(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<PathBuf>, CaptureError> {
    let io_error = |source| CaptureError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if keep(file) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn has_image_extension(file: &str) -> bool {
    let ext = Path::new(file).extension().and_then(|e| e.to_str()).unwrap_or("");
    IMAGE_EXTENSIONS.iter().any(|known| ext.eq_ignore_ascii_case(known))
}

/// Shell-style match of `*` (any run) and `?` (one character); hidden files need a leading `.`.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.png", "a.png"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("*.png", "a.jpg"));
        assert!(!wildcard_match("*.png", ".hidden.png"));
        assert!(wildcard_match("*a*b", "xxaxxb"));
        assert!(!wildcard_match("*a*b", "xxaxxbc"));
    }

    #[test]
    fn glob_folder_and_file() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.png", "c.txt"] {
            image::RgbImage::new(4, 3).save(dir.path().join(name)).unwrap_or_else(|_| {
                std::fs::write(dir.path().join(name), b"x").unwrap();
            });
        }
        let glob = format!("{}/*.png", dir.path().display());
        let found = list_images(&glob).unwrap();
        let names: Vec<_> = found.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.png", "b.png"]);
        assert_eq!(list_images(dir.path().to_str().unwrap()).unwrap().len(), 2);
        let none = format!("{}/*.jpg", dir.path().display());
        assert!(matches!(list_images(&none), Err(CaptureError::NoImages { .. })));
    }

    #[test]
    fn plays_once_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        image::RgbImage::new(4, 3).save(dir.path().join("a.png")).unwrap();
        let mut options = SourceOptions::new(dir.path().to_str().unwrap());
        options.looping = Some(false);
        options.fps = Some(1000.0);
        let mut source = ImageSource::open(&options.spec, &options).unwrap();
        let frame = source.next_frame().unwrap().unwrap();
        assert_eq!((frame.seq, frame.image.width()), (0, 4));
        assert!(source.next_frame().unwrap().is_none());
    }
}
