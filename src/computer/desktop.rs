//! A display an agent can see and drive: the X display a `Computer` declares (`display: ":0"`
//! with capability `gui`). [`Desktop::screenshot`] captures the screen (or a region of it),
//! scales it down to what a model takes in, and encodes it as PNG; [`Desktop::input`] moves,
//! clicks, drags, scrolls and types, with coordinates given in the model's picture of the
//! screen and scaled back to the screen's own pixels here, in one place.
//!
//! ```text
//! screen 1280x800 ──capture──► scale to 1024x640 ──► PNG ──► model
//! model clicks (512, 320) ──scale back──► (640, 400) on the screen
//! ```
//!
//! **Targeting the declared display without touching the environment.** Screen-capture
//! libraries such as xcap take the display from `DISPLAY` in the process environment on
//! every call (they have no parameter for it), so driving `:99` from a controller started on
//! `:0` would mean setting the process environment while libgit2, OpenSSL and the tokio
//! workers may be reading it on other threads: undefined behaviour, and two desktops could
//! never be driven at once. Instead each [`Desktop`] owns one thread that holds connections
//! opened to its display by name: captures speak the X protocol directly through `x11rb`
//! (`GetImage` of the root window; one connection kept open, not one per call), and input
//! goes through `enigo`'s XTEST backend, told the display in its settings. The thread also
//! serializes a display's actions (a click and a screenshot never interleave) and keeps the
//! blocking X calls off the async workers. It connects on first use and again after an
//! error, so an X server restarted under it is picked up.
//!
//! Without the `desktop` cargo feature the types remain and every action says the build
//! lacks desktop support.

use thiserror::Error;

/// The longest edge of the picture a model is sent, unless the screen is smaller: XGA-ish,
/// which Anthropic recommends for computer use (a 1280x800 screen is sent as 1024x640).
pub const TARGET_LONG_EDGE: u32 = 1024;
/// The most pixels a picture may have (Anthropic scales anything larger down itself, which
/// would leave the model's coordinates off).
pub const MAX_PIXELS: u64 = 1_150_000;
/// The longest edge the API takes.
pub const MAX_LONG_EDGE: u32 = 1568;

#[derive(Debug, Error)]
pub enum DesktopError {
    #[error("display {display}: cannot connect: {reason}")]
    Connect { display: String, reason: String },
    #[error("display {display}: screenshot: {reason}")]
    Capture { display: String, reason: String },
    #[error("display {display}: input: {reason}")]
    Input { display: String, reason: String },
    #[error("display {display}: {reason}")]
    Unsupported { display: String, reason: String },
    #[error("display {0}: its worker thread is gone")]
    Gone(String),
    /// The `proto worker` serving a remote display refused a request or could not run.
    #[error("display {display}: the remote worker: {reason}")]
    Worker { display: String, reason: String },
    #[error("this proto was built without the `desktop` feature; display {0} cannot be driven")]
    NotBuilt(String),
}

/// A size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// A point in the model's picture of the screen (the size of the last full screenshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: u32,
    pub y: u32,
}

/// A rectangle in the model's picture of the screen: `[x0, y0]` to `[x1, y1]`, exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Button {
    Left,
    Right,
    Middle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrollDirection {
    Up,
    Down,
    Left,
    Right,
}

/// One thing done with the mouse or keyboard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Move(Point),
    /// `count` clicks of `button`, at `at` or where the pointer is.
    Click {
        at: Option<Point>,
        button: Button,
        count: u8,
    },
    /// The left button pressed at `from`, the pointer moved to `to`, released.
    Drag {
        from: Point,
        to: Point,
    },
    /// `amount` wheel clicks, at `at` or where the pointer is.
    Scroll {
        at: Option<Point>,
        direction: ScrollDirection,
        amount: u32,
    },
    /// Text typed as it reads (a newline presses Return).
    Type(String),
    /// A key or a combination, in xdotool's names: `Return`, `ctrl+c`, `shift+Tab`.
    Key(String),
}

/// A picture of the screen for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screenshot {
    pub png: Vec<u8>,
    /// The picture's size (what the model's coordinates refer to, for a full screenshot).
    pub size: Size,
    /// The screen's own size.
    pub screen: Size,
}

/// The size a picture of `size` pixels is sent at: no larger than [`TARGET_LONG_EDGE`] on
/// its long edge and [`MAX_PIXELS`] in all, aspect kept, never enlarged.
pub fn fit(size: Size) -> Size {
    let (w, h) = (f64::from(size.width.max(1)), f64::from(size.height.max(1)));
    let long = w.max(h);
    let edge = f64::from(TARGET_LONG_EDGE.min(MAX_LONG_EDGE)) / long;
    let area = (MAX_PIXELS as f64 / (w * h)).sqrt();
    let factor = edge.min(area).min(1.0);
    Size {
        width: ((w * factor).round() as u32).max(1),
        height: ((h * factor).round() as u32).max(1),
    }
}

/// A coordinate of the model's picture (`picture` pixels wide) on the screen (`screen`
/// pixels wide), kept on the screen.
fn to_screen(at: u32, picture: u32, screen: u32) -> u32 {
    let scaled =
        (u64::from(at) * u64::from(screen) + u64::from(picture) / 2) / u64::from(picture.max(1));
    (scaled as u32).min(screen.saturating_sub(1))
}

/// `point` of the model's picture of a `screen`-sized screen, in screen pixels.
pub fn point_on_screen(point: Point, screen: Size) -> Point {
    let picture = fit(screen);
    Point {
        x: to_screen(point.x, picture.width, screen.width),
        y: to_screen(point.y, picture.height, screen.height),
    }
}

/// `region` of the model's picture, in screen pixels: `(x, y, width, height)`, at least one
/// pixel and inside the screen; `None` when it is empty or inverted.
pub fn region_on_screen(region: Region, screen: Size) -> Option<(u32, u32, u32, u32)> {
    if region.x1 <= region.x0 || region.y1 <= region.y0 {
        return None;
    }
    let picture = fit(screen);
    let x0 = to_screen(region.x0, picture.width, screen.width);
    let y0 = to_screen(region.y0, picture.height, screen.height);
    let x1 = to_screen(region.x1, picture.width, screen.width + 1).min(screen.width);
    let y1 = to_screen(region.y1, picture.height, screen.height + 1).min(screen.height);
    Some((x0, y0, (x1.max(x0 + 1)) - x0, (y1.max(y0 + 1)) - y0))
}

/// RGB pixels (`from` sized, 3 bytes each) scaled down to `to` by averaging the source
/// pixels each target pixel covers (text stays readable, unlike nearest-neighbour).
pub fn scale_rgb(rgb: &[u8], from: Size, to: Size) -> Vec<u8> {
    if from == to {
        return rgb.to_vec();
    }
    let (fw, fh) = (from.width as usize, from.height as usize);
    let (tw, th) = (to.width as usize, to.height as usize);
    // Source ranges per target column and row, computed once.
    let span = |t: usize, target: usize, source: usize| {
        let start = t * source / target;
        let end = ((t + 1) * source / target).max(start + 1).min(source);
        (start, end)
    };
    let columns: Vec<(usize, usize)> = (0..tw).map(|x| span(x, tw, fw)).collect();
    let mut out = vec![0u8; tw * th * 3];
    let mut sums = vec![0u32; tw * 3];
    for y in 0..th {
        let (y0, y1) = span(y, th, fh);
        sums.iter_mut().for_each(|s| *s = 0);
        for row in y0..y1 {
            let line = &rgb[row * fw * 3..(row + 1) * fw * 3];
            for (x, &(x0, x1)) in columns.iter().enumerate() {
                let sum = &mut sums[x * 3..x * 3 + 3];
                for px in line[x0 * 3..x1 * 3].chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
        }
        let rows = (y1 - y0) as u32;
        let line = &mut out[y * tw * 3..(y + 1) * tw * 3];
        for (x, &(x0, x1)) in columns.iter().enumerate() {
            let n = rows * (x1 - x0) as u32;
            for c in 0..3 {
                line[x * 3 + c] = ((sums[x * 3 + c] + n / 2) / n) as u8;
            }
        }
    }
    out
}

/// RGB pixels as a PNG, compressed for speed: a screenshot is sent once and dropped, so a
/// fast encoder matters more than the last few percent of size.
pub fn encode_png(rgb: &[u8], size: Size) -> Result<Vec<u8>, String> {
    #[cfg(feature = "desktop")]
    {
        let mut out = Vec::with_capacity(rgb.len() / 4);
        let mut encoder = png::Encoder::new(&mut out, size.width, size.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }
    #[cfg(not(feature = "desktop"))]
    {
        let _ = (rgb, size);
        Err("built without the `desktop` feature".into())
    }
}

/// A captured frame: RGB pixels, scaled and encoded into a [`Screenshot`].
#[cfg(feature = "desktop")]
fn picture(rgb: &[u8], size: Size, screen: Size) -> Result<Screenshot, String> {
    let sent = fit(size);
    let scaled = scale_rgb(rgb, size, sent);
    Ok(Screenshot {
        png: encode_png(&scaled, sent)?,
        size: sent,
        screen,
    })
}

pub use driver::Desktop;

#[cfg(feature = "desktop")]
mod driver {
    use std::sync::mpsc;

    use enigo::{Axis, Coordinate, Direction, Enigo, Key, Keyboard, Mouse, Settings};
    use tokio::sync::oneshot;
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, ImageOrder, Window};
    use x11rb::rust_connection::RustConnection;

    use super::{
        Button, DesktopError, Input, Point, Region, Screenshot, ScrollDirection, Size, picture,
        point_on_screen, region_on_screen,
    };

    enum Job {
        Capture(
            Option<Region>,
            oneshot::Sender<Result<Screenshot, DesktopError>>,
        ),
        Input(Input, oneshot::Sender<Result<(), DesktopError>>),
    }

    /// One X display, driven from a thread of its own (see the module docs).
    pub struct Desktop {
        display: String,
        jobs: mpsc::Sender<Job>,
    }

    impl std::fmt::Debug for Desktop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Desktop")
                .field("display", &self.display)
                .finish()
        }
    }

    impl Desktop {
        /// The display named `display` (`:99`); nothing connects until it is used. Its thread
        /// ends when the `Desktop` is dropped.
        pub fn new(display: &str) -> Result<Self, DesktopError> {
            let (jobs, queue) = mpsc::channel();
            let name = display.to_string();
            std::thread::Builder::new()
                .name(format!("desktop {display}"))
                .spawn(move || serve(&name, queue))
                .map_err(|e| DesktopError::Connect {
                    display: display.to_string(),
                    reason: format!("cannot start its thread: {e}"),
                })?;
            Ok(Desktop {
                display: display.to_string(),
                jobs,
            })
        }

        pub fn display(&self) -> &str {
            &self.display
        }

        /// The screen, or `region` of it (in the model's picture of the screen), scaled to
        /// fit what a model takes in.
        pub async fn screenshot(&self, region: Option<Region>) -> Result<Screenshot, DesktopError> {
            let (reply, answer) = oneshot::channel();
            self.send(Job::Capture(region, reply))?;
            answer
                .await
                .map_err(|_| DesktopError::Gone(self.display.clone()))?
        }

        /// Does `input`, its coordinates read in the model's picture of the screen.
        pub async fn input(&self, input: Input) -> Result<(), DesktopError> {
            let (reply, answer) = oneshot::channel();
            self.send(Job::Input(input, reply))?;
            answer
                .await
                .map_err(|_| DesktopError::Gone(self.display.clone()))?
        }

        fn send(&self, job: Job) -> Result<(), DesktopError> {
            self.jobs
                .send(job)
                .map_err(|_| DesktopError::Gone(self.display.clone()))
        }
    }

    /// The connections of the display's thread.
    struct Connected {
        conn: RustConnection,
        root: Window,
        screen: Size,
        /// Made on the first input: capturing needs no keyboard mapping.
        enigo: Option<Enigo>,
    }

    fn serve(display: &str, queue: mpsc::Receiver<Job>) {
        let mut connected: Option<Connected> = None;
        while let Ok(job) = queue.recv() {
            match job {
                Job::Capture(region, reply) => {
                    let result = with(display, &mut connected, |c| capture(display, c, region));
                    let _ = reply.send(result);
                }
                Job::Input(input, reply) => {
                    let result = with(display, &mut connected, |c| act(display, c, &input));
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Runs `f` on the display's connections, connecting first if need be; an error drops
    /// them, so the next job connects afresh (the X server may have been restarted).
    fn with<T>(
        display: &str,
        connected: &mut Option<Connected>,
        f: impl FnOnce(&mut Connected) -> Result<T, DesktopError>,
    ) -> Result<T, DesktopError> {
        let c = match connected {
            Some(c) => c,
            None => connected.insert(connect(display)?),
        };
        let result = f(c);
        if result.is_err() {
            *connected = None;
        }
        result
    }

    fn connect(display: &str) -> Result<Connected, DesktopError> {
        let failed = |reason: String| DesktopError::Connect {
            display: display.to_string(),
            reason,
        };
        let (conn, index) = x11rb::connect(Some(display)).map_err(|e| failed(e.to_string()))?;
        let screen = conn
            .setup()
            .roots
            .get(index)
            .ok_or_else(|| failed(format!("no screen {index}")))?;
        let (root, size) = (
            screen.root,
            Size {
                width: u32::from(screen.width_in_pixels),
                height: u32::from(screen.height_in_pixels),
            },
        );
        Ok(Connected {
            conn,
            root,
            screen: size,
            enigo: None,
        })
    }

    fn capture(
        display: &str,
        c: &mut Connected,
        region: Option<Region>,
    ) -> Result<Screenshot, DesktopError> {
        let failed = |reason: String| DesktopError::Capture {
            display: display.to_string(),
            reason,
        };
        let (x, y, width, height) = match region {
            None => (0, 0, c.screen.width, c.screen.height),
            Some(region) => region_on_screen(region, c.screen)
                .ok_or_else(|| failed(format!("empty region {region:?}")))?,
        };
        let rgb = grab(display, c, (x, y, width, height))?;
        picture(&rgb, Size { width, height }, c.screen).map_err(failed)
    }

    /// The pixels of a rectangle of the root window, as RGB.
    fn grab(
        display: &str,
        c: &Connected,
        (x, y, width, height): (u32, u32, u32, u32),
    ) -> Result<Vec<u8>, DesktopError> {
        let failed = |reason: String| DesktopError::Capture {
            display: display.to_string(),
            reason,
        };
        let unsupported = |reason: String| DesktopError::Unsupported {
            display: display.to_string(),
            reason,
        };
        let to16 = |v: u32| u16::try_from(v).map_err(|_| failed(format!("{v}: too large")));
        let reply = c
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                c.root,
                to16(x)? as i16,
                to16(y)? as i16,
                to16(width)?,
                to16(height)?,
                u32::MAX,
            )
            .map_err(|e| failed(e.to_string()))?
            .reply()
            .map_err(|e| failed(e.to_string()))?;
        let setup = c.conn.setup();
        let bits = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == reply.depth)
            .map(|f| f.bits_per_pixel);
        // The TrueColor layouts X servers use at depth 24 and 32: one pixel in 32 bits,
        // blue in the low byte. Anything else (8-bit palettes, 16-bit) is not worth the code.
        if !(matches!(reply.depth, 24 | 32) && bits == Some(32)) {
            return Err(unsupported(format!(
                "a screen of depth {} at {bits:?} bits per pixel cannot be captured (24-bit TrueColor can)",
                reply.depth
            )));
        }
        let pixels = (width as usize) * (height as usize);
        if reply.data.len() < pixels * 4 {
            return Err(failed(format!(
                "{} bytes for {pixels} pixels",
                reply.data.len()
            )));
        }
        let (r, b) = match setup.image_byte_order {
            ImageOrder::LSB_FIRST => (2, 0),
            _ => (1, 3),
        };
        let mut rgb = Vec::with_capacity(pixels * 3);
        for px in reply.data[..pixels * 4].chunks_exact(4) {
            rgb.extend_from_slice(&[px[r], px[1 + usize::from(r == 1)], px[b]]);
        }
        Ok(rgb)
    }

    fn act(display: &str, c: &mut Connected, input: &Input) -> Result<(), DesktopError> {
        let failed = |reason: String| DesktopError::Input {
            display: display.to_string(),
            reason,
        };
        let screen = c.screen;
        let enigo = match &mut c.enigo {
            Some(e) => e,
            None => c.enigo.insert(
                Enigo::new(&Settings {
                    x11_display: Some(display.to_string()),
                    ..Settings::default()
                })
                .map_err(|e| DesktopError::Connect {
                    display: display.to_string(),
                    reason: e.to_string(),
                })?,
            ),
        };
        let at = |p: Point| point_on_screen(p, screen);
        let mv = |enigo: &mut Enigo, p: Point| {
            let p = at(p);
            enigo.move_mouse(p.x as i32, p.y as i32, Coordinate::Abs)
        };
        let done = match input {
            Input::Move(p) => mv(enigo, *p),
            Input::Click { at, button, count } => (|| {
                if let Some(p) = at {
                    mv(enigo, *p)?;
                }
                let button = match button {
                    Button::Left => enigo::Button::Left,
                    Button::Right => enigo::Button::Right,
                    Button::Middle => enigo::Button::Middle,
                };
                for _ in 0..*count {
                    enigo.button(button, Direction::Click)?;
                }
                Ok(())
            })(),
            Input::Drag { from, to } => (|| {
                mv(enigo, *from)?;
                enigo.button(enigo::Button::Left, Direction::Press)?;
                mv(enigo, *to)?;
                enigo.button(enigo::Button::Left, Direction::Release)
            })(),
            Input::Scroll {
                at,
                direction,
                amount,
            } => (|| {
                if let Some(p) = at {
                    mv(enigo, *p)?;
                }
                let amount = i32::try_from(*amount).unwrap_or(i32::MAX);
                match direction {
                    ScrollDirection::Down => enigo.scroll(amount, Axis::Vertical),
                    ScrollDirection::Up => enigo.scroll(-amount, Axis::Vertical),
                    ScrollDirection::Right => enigo.scroll(amount, Axis::Horizontal),
                    ScrollDirection::Left => enigo.scroll(-amount, Axis::Horizontal),
                }
            })(),
            Input::Type(text) => (|| {
                for (i, line) in text.split('\n').enumerate() {
                    if i > 0 {
                        enigo.key(Key::Return, Direction::Click)?;
                    }
                    if !line.is_empty() {
                        enigo.text(line)?;
                    }
                }
                Ok(())
            })(),
            Input::Key(combo) => {
                let keys = combo
                    .split('+')
                    .map(|name| key(name.trim()).ok_or_else(|| name.trim().to_string()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|name| failed(format!("unknown key {name:?} in {combo:?}")))?;
                (|| {
                    for k in &keys {
                        enigo.key(*k, Direction::Press)?;
                    }
                    for k in keys.iter().rev() {
                        enigo.key(*k, Direction::Release)?;
                    }
                    Ok(())
                })()
            }
        };
        done.map_err(|e: enigo::InputError| failed(e.to_string()))
    }

    /// A key by its xdotool (X keysym) name, with the modifier and key names models also
    /// write (`ctrl`, `cmd`, `enter`, `esc`).
    fn key(name: &str) -> Option<Key> {
        use xkbcommon::xkb;
        let lower = name.to_ascii_lowercase();
        let named = match lower.as_str() {
            "ctrl" | "control" | "control_l" | "ctrl_l" => Some(Key::Control),
            "shift" | "shift_l" => Some(Key::Shift),
            "alt" | "alt_l" => Some(Key::Alt),
            "super" | "super_l" | "cmd" | "meta" | "win" => Some(Key::Meta),
            "enter" => Some(Key::Return),
            "esc" => Some(Key::Escape),
            _ => None,
        };
        if named.is_some() || name.is_empty() {
            return named;
        }
        let exact = xkb::keysym_from_name(name, xkb::KEYSYM_NO_FLAGS);
        let sym = if exact.raw() != 0 {
            exact
        } else {
            xkb::keysym_from_name(name, xkb::KEYSYM_CASE_INSENSITIVE)
        };
        if sym.raw() != 0 {
            return Some(Key::Other(sym.raw()));
        }
        let mut chars = name.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Some(Key::Unicode(c)),
            _ => None,
        }
    }
}

#[cfg(not(feature = "desktop"))]
mod driver {
    use super::{DesktopError, Input, Region, Screenshot};

    /// A display this build cannot drive (no `desktop` feature).
    #[derive(Debug)]
    pub struct Desktop {
        display: String,
    }

    impl Desktop {
        pub fn new(display: &str) -> Result<Self, DesktopError> {
            Ok(Desktop {
                display: display.to_string(),
            })
        }

        pub fn display(&self) -> &str {
            &self.display
        }

        pub async fn screenshot(
            &self,
            _region: Option<Region>,
        ) -> Result<Screenshot, DesktopError> {
            Err(DesktopError::NotBuilt(self.display.clone()))
        }

        pub async fn input(&self, _input: Input) -> Result<(), DesktopError> {
            Err(DesktopError::NotBuilt(self.display.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    #[test]
    fn pictures_fit_the_models_limits_and_keep_the_aspect() {
        assert_eq!(fit(size(1280, 800)), size(1024, 640));
        assert_eq!(fit(size(1920, 1080)), size(1024, 576));
        assert_eq!(fit(size(800, 600)), size(800, 600), "never enlarged");
        assert_eq!(fit(size(600, 2000)), size(307, 1024));
        let big = fit(size(3840, 2160));
        assert!(u64::from(big.width) * u64::from(big.height) <= MAX_PIXELS);
        assert!(big.width <= MAX_LONG_EDGE);
    }

    #[test]
    fn the_models_coordinates_scale_back_to_the_screen() {
        let screen = size(1280, 800);
        assert_eq!(
            point_on_screen(Point { x: 512, y: 320 }, screen),
            Point { x: 640, y: 400 }
        );
        assert_eq!(
            point_on_screen(Point { x: 0, y: 0 }, screen),
            Point { x: 0, y: 0 }
        );
        // The far edge and beyond stay on the screen.
        assert_eq!(
            point_on_screen(Point { x: 1024, y: 9999 }, screen),
            Point { x: 1279, y: 799 }
        );
        let region = Region {
            x0: 100,
            y0: 100,
            x1: 356,
            y1: 260,
        };
        assert_eq!(region_on_screen(region, screen), Some((125, 125, 320, 200)));
        assert_eq!(
            region_on_screen(
                Region {
                    x0: 10,
                    y0: 10,
                    x1: 10,
                    y1: 20
                },
                screen
            ),
            None
        );
    }

    #[test]
    fn scaling_averages_what_each_pixel_covers() {
        // 4x2 → 2x1: each target pixel is the mean of a 2x2 block.
        let rgb: Vec<u8> = [
            [0, 0, 0],
            [100, 100, 100],
            [200, 0, 0],
            [200, 0, 0],
            [0, 0, 0],
            [100, 100, 100],
            [0, 0, 200],
            [0, 0, 200],
        ]
        .concat();
        assert_eq!(
            scale_rgb(&rgb, size(4, 2), size(2, 1)),
            vec![50, 50, 50, 100, 0, 100]
        );
    }
}
