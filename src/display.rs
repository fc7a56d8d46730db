//! The live window (feature `window`, through `minifb`): shows the canvas, reports keys and the
//! pointer.
//!
//! minifb loads X11 or Wayland at run time; without a display `Window::new` fails, and
//! [`Display::open`] turns that into an error that names the way out (`--no-window`). The
//! window is scaled by an integer factor (`--scale`); the pointer is reported in canvas pixels.
//! Keys map to [`Action`]s through [`action_for_key`], a pure function, so the key table is
//! tested without a window.

use image::RgbImage;

/// Errors of the live window.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error(
        "cannot open a window (DISPLAY={display:?}): {source}; run with --no-window for headless \
         operation"
    )]
    Open {
        display: Option<String>,
        #[cfg(feature = "window")]
        #[source]
        source: minifb::Error,
        #[cfg(not(feature = "window"))]
        source: NotBuilt,
    },
    #[cfg(feature = "window")]
    #[error("updating the window failed: {source}")]
    Update {
        #[source]
        source: minifb::Error,
    },
}

/// This build has no window support.
#[derive(Debug, thiserror::Error)]
#[error("imexdepth was built without the cargo feature `window`")]
pub struct NotBuilt;

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    NextView,
    NextColormap,
    Invert,
    ToggleRange,
    AlphaUp,
    AlphaDown,
    ToggleRecording,
    ToggleHud,
    ToggleHelp,
}

/// The key table (see also [`crate::postprocess::HELP`]): a key's name as minifb spells it.
pub fn action_for_key(name: &str) -> Option<Action> {
    Some(match name {
        "Q" | "Escape" => Action::Quit,
        "V" => Action::NextView,
        "C" => Action::NextColormap,
        "I" => Action::Invert,
        "F" => Action::ToggleRange,
        "Equal" | "NumPadPlus" | "Period" => Action::AlphaUp,
        "Minus" | "NumPadMinus" | "Comma" => Action::AlphaDown,
        "R" => Action::ToggleRecording,
        "D" => Action::ToggleHud,
        "H" => Action::ToggleHelp,
        _ => return None,
    })
}

/// Integer window scales minifb offers.
pub fn window_scale(scale: u32) -> u32 {
    match scale {
        0 | 1 => 1,
        2 | 3 => 2,
        4..=7 => 4,
        _ => 8,
    }
}

/// The live window.
#[cfg(feature = "window")]
pub struct Display {
    window: minifb::Window,
    buffer: Vec<u32>,
    size: (u32, u32),
}

#[cfg(feature = "window")]
impl Display {
    /// Opens a window for canvases of `size`, scaled by `scale` (1, 2, 4 or 8).
    pub fn open(title: &str, size: (u32, u32), scale: u32) -> Result<Self, DisplayError> {
        let scale = match window_scale(scale) {
            1 => minifb::Scale::X1,
            2 => minifb::Scale::X2,
            4 => minifb::Scale::X4,
            _ => minifb::Scale::X8,
        };
        let options = minifb::WindowOptions { scale, ..minifb::WindowOptions::default() };
        let window = minifb::Window::new(title, size.0 as usize, size.1 as usize, options)
            .map_err(|source| DisplayError::Open { display: display_env(), source })?;
        let buffer = vec![0; size.0 as usize * size.1 as usize];
        Ok(Self { window, buffer, size })
    }

    /// Whether the window is still open (not closed by the user).
    pub fn is_open(&self) -> bool {
        self.window.is_open()
    }

    /// Shows a canvas (which must have the size the window was opened with).
    pub fn show(&mut self, canvas: &RgbImage) -> Result<(), DisplayError> {
        assert_eq!(canvas.dimensions(), self.size, "canvas size differs from the window's");
        for (dst, px) in self.buffer.iter_mut().zip(canvas.pixels()) {
            let [r, g, b] = px.0;
            *dst = (u32::from(r) << 16) | (u32::from(g) << 8) | u32::from(b);
        }
        let (w, h) = (self.size.0 as usize, self.size.1 as usize);
        self.window
            .update_with_buffer(&self.buffer, w, h)
            .map_err(|source| DisplayError::Update { source })
    }

    /// Processes window events without a new picture.
    pub fn poll(&mut self) {
        self.window.update();
    }

    /// Actions of the keys pressed since the last update.
    pub fn actions(&self) -> Vec<Action> {
        let keys = self.window.get_keys_pressed(minifb::KeyRepeat::No);
        keys.iter().filter_map(|k| action_for_key(&format!("{k:?}"))).collect()
    }

    /// The pointer in canvas pixels, if over the window.
    pub fn pointer(&self) -> Option<(u32, u32)> {
        let (x, y) = self.window.get_mouse_pos(minifb::MouseMode::Discard)?;
        (x >= 0.0 && y >= 0.0).then_some((x as u32, y as u32))
    }
}

/// Stand-in without the `window` feature: opening always fails.
#[cfg(not(feature = "window"))]
pub struct Display;

#[cfg(not(feature = "window"))]
impl Display {
    pub fn open(_title: &str, _size: (u32, u32), _scale: u32) -> Result<Self, DisplayError> {
        Err(DisplayError::Open { display: display_env(), source: NotBuilt })
    }
    pub fn is_open(&self) -> bool {
        false
    }
    pub fn show(&mut self, _canvas: &RgbImage) -> Result<(), DisplayError> {
        Ok(())
    }
    pub fn poll(&mut self) {}
    pub fn actions(&self) -> Vec<Action> {
        Vec::new()
    }
    pub fn pointer(&self) -> Option<(u32, u32)> {
        None
    }
}

fn display_env() -> Option<String> {
    std::env::var("DISPLAY").ok().or_else(|| std::env::var("WAYLAND_DISPLAY").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_table() {
        assert_eq!(action_for_key("Escape"), Some(Action::Quit));
        assert_eq!(action_for_key("Q"), Some(Action::Quit));
        assert_eq!(action_for_key("R"), Some(Action::ToggleRecording));
        assert_eq!(action_for_key("Equal"), Some(Action::AlphaUp));
        assert_eq!(action_for_key("Z"), None);
        assert_eq!(window_scale(3), 2);
    }
}
