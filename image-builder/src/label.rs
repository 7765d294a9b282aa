//! Printable box labels: a PNG with a QR code that holds the box's onboarding link,
//! `http://<name>.local/?claim=<code>`, and under it the same in text (name, URL,
//! claim code) with the start of the box's CA fingerprint.
//!
//! The link is plain HTTP on purpose: a phone reaches it before it trusts anything.
//! The node's onboarding page there (port 80 on the appliance) installs the node's CA
//! and continues to `https://<name>.local:8443/#/claim?code=<code>`. The fingerprint on
//! the label is what the person compares with the one the phone shows while
//! installing the CA.

use std::path::Path;

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per QR module: 8 prints sharp at 300 dpi on a 40 mm label.
const MODULE_PIXELS: u32 = 8;
/// The quiet zone the QR standard asks for, in modules.
const QUIET_ZONE_MODULES: u32 = 4;
/// The glyphs are 8 × 8 pixels, scaled by a whole number so they stay sharp on a
/// thermal printer (no grey): 2 gives 16 px (1.4 mm at 300 dpi), 3 for the name.
const GLYPH_PIXELS: u32 = 8;
const TEXT_SCALE: u32 = 2;
const NAME_SCALE: u32 = 3;
/// Space between lines, in pixels of a scale-1 glyph (times the line's scale).
const LINE_GAP: u32 = 4;
/// The text is at least this wide, in characters of `TEXT_SCALE`: a generated claim
/// code's line (`Claim code: XXXX-XXXX-XXXX`) and the fingerprint's fit unwrapped.
const TEXT_COLUMNS_MIN: u32 = 26;
/// White space left and right of the text and under it.
const TEXT_MARGIN_PIXELS: u32 = 16;
/// Groups of the CA fingerprint on the label: 8 bytes, enough to tell a forged CA
/// apart at a glance; the full one is on the onboarding page and in `edgenode status`.
pub const FINGERPRINT_GROUPS_ON_LABEL: usize = 8;
/// `…` is not in the 8 × 8 font's ASCII range: three 2 × 2 dots on its baseline.
const ELLIPSIS_GLYPH: [u8; 8] = [0x00, 0x00, 0x00, 0x00, 0x00, 0xDB, 0xDB, 0x00];

/// What the QR code holds: the box's onboarding link.
#[derive(Debug, Clone, PartialEq)]
pub struct OnboardingLink {
    /// The box's host label: it is `<name>.local` on the LAN.
    pub name: String,
    /// Letters, digits and `-` only: the onboarding page drops anything else.
    pub claim_code: String,
}

impl OnboardingLink {
    /// `http://<name>.local/`: what a person types when the code does not scan.
    pub fn base_url(&self) -> String {
        format!("http://{}.local/", self.name)
    }

    /// `http://<name>.local/?claim=<code>`.
    pub fn url(&self) -> String {
        format!("{}?claim={}", self.base_url(), self.claim_code)
    }

    /// Reads a link back (used by tests and by whoever scans a label).
    pub fn parse(url: &str) -> Option<OnboardingLink> {
        let (name, claim_code) = url.strip_prefix("http://")?.split_once(".local/?claim=")?;
        let link = OnboardingLink { name: name.to_owned(), claim_code: claim_code.to_owned() };
        (crate::provisioning::is_host_label(name) && is_link_safe(claim_code)).then_some(link)
    }
}

/// Whether a claim code goes into the link as it is (and survives the onboarding
/// page, which keeps only letters, digits and `-`).
pub fn is_link_safe(claim_code: &str) -> bool {
    !claim_code.is_empty() && claim_code.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelContent {
    pub link: OnboardingLink,
    /// `SHA-256 AB:CD:…` of the box's CA, as the node prints it.
    pub ca_fingerprint: String,
}

impl LabelContent {
    /// The text under the code, one entry per line before wrapping, with its scale.
    fn text_lines(&self) -> Vec<(String, u32)> {
        vec![
            (self.link.name.clone(), NAME_SCALE),
            (self.link.base_url(), TEXT_SCALE),
            (format!("Claim code: {}", self.link.claim_code), TEXT_SCALE),
            ("CA fingerprint SHA-256:".to_owned(), TEXT_SCALE),
            (short_fingerprint(&self.ca_fingerprint), TEXT_SCALE),
        ]
    }
}

/// `SHA-256 AB:CD:…` → the first `FINGERPRINT_GROUPS_ON_LABEL` groups and `…`.
pub fn short_fingerprint(fingerprint: &str) -> String {
    let hex = fingerprint.strip_prefix("SHA-256 ").unwrap_or(fingerprint);
    let groups: Vec<&str> = hex.split(':').collect();
    if groups.len() <= FINGERPRINT_GROUPS_ON_LABEL {
        return hex.to_owned();
    }
    format!("{}…", groups[..FINGERPRINT_GROUPS_ON_LABEL].join(":"))
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("the label content does not fit in a QR code: {0}")]
    Encode(String),
    #[error("cannot write the label {path}: {source}")]
    Write { path: String, source: image::ImageError },
}

/// Renders the label: the QR code (black on white, with its quiet zone) and the text
/// under it, wrapped to the label's width.
pub fn render(content: &LabelContent) -> Result<image::GrayImage, LabelError> {
    // Level M survives a scuffed sticker and keeps the code small enough to scan.
    let code = QrCode::with_error_correction_level(content.link.url(), EcLevel::M)
        .map_err(|error| LabelError::Encode(error.to_string()))?;
    let modules = code.width() as u32;
    let colors = code.to_colors();
    let qr_side = (modules + 2 * QUIET_ZONE_MODULES) * MODULE_PIXELS;

    // As wide as the code, or as `TEXT_COLUMNS_MIN` characters; longer lines wrap.
    let width = qr_side.max(TEXT_COLUMNS_MIN * GLYPH_PIXELS * TEXT_SCALE + 2 * TEXT_MARGIN_PIXELS);
    let lines = content.text_lines();
    let mut wrapped = Vec::new();
    for (text, scale) in &lines {
        let columns = ((width - 2 * TEXT_MARGIN_PIXELS) / (GLYPH_PIXELS * scale)) as usize;
        wrapped.extend(wrap(text, columns).into_iter().map(|line| (line, *scale)));
    }
    let text_height: u32 = wrapped.iter().map(|(_, scale)| (GLYPH_PIXELS + LINE_GAP) * scale).sum();
    let height = qr_side + text_height + TEXT_MARGIN_PIXELS;

    let mut image = image::GrayImage::from_pixel(width, height, image::Luma([255]));
    let qr_left = (width - qr_side) / 2;
    for y in 0..qr_side {
        for x in 0..qr_side {
            let module_x = (x / MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES);
            let module_y = (y / MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES);
            let dark = match (module_x, module_y) {
                (Some(mx), Some(my)) if mx < modules && my < modules => {
                    colors[(my * modules + mx) as usize] == Color::Dark
                }
                _ => false,
            };
            if dark {
                image.put_pixel(qr_left + x, y, image::Luma([0]));
            }
        }
    }
    // The code's quiet zone is the space above the text.
    let mut top = qr_side;
    for (line, scale) in &wrapped {
        draw_text(&mut image, line, TEXT_MARGIN_PIXELS, top, *scale);
        top += (GLYPH_PIXELS + LINE_GAP) * scale;
    }
    Ok(image)
}

pub fn write_png(content: &LabelContent, path: &Path) -> Result<(), LabelError> {
    render(content)?
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| LabelError::Write { path: path.display().to_string(), source })
}

/// Splits `text` into lines of at most `columns` characters, after a `.`, `/` or `-`
/// when one falls in the second half of the line (names and URLs), else anywhere.
fn wrap(text: &str, columns: usize) -> Vec<String> {
    let columns = columns.max(1);
    let mut rest: Vec<char> = text.chars().collect();
    let mut lines = Vec::new();
    while rest.len() > columns {
        let break_after = rest[columns / 2..columns].iter().rposition(|c| matches!(c, '.' | '/' | '-'));
        let at = break_after.map_or(columns, |position| columns / 2 + position + 1);
        lines.push(rest.drain(..at).collect());
    }
    lines.push(rest.into_iter().collect());
    lines
}

/// Draws `text` in black with its top-left corner at (`left`, `top`). Characters
/// outside ASCII (none in what a label says, besides `…`) are drawn as `?`.
fn draw_text(image: &mut image::GrayImage, text: &str, left: u32, top: u32, scale: u32) {
    for (index, character) in text.chars().enumerate() {
        let glyph = match character {
            '…' => ELLIPSIS_GLYPH,
            c if c.is_ascii() => font8x8::legacy::BASIC_LEGACY[c as usize],
            _ => font8x8::legacy::BASIC_LEGACY[usize::from(b'?')],
        };
        let glyph_left = left + index as u32 * GLYPH_PIXELS * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for column in 0..GLYPH_PIXELS {
                // Bit 0 is the leftmost pixel of the row.
                if bits >> column & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let x = glyph_left + column * scale + dx;
                        let y = top + row as u32 * scale + dy;
                        if x < image.width() && y < image.height() {
                            image.put_pixel(x, y, image::Luma([0]));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> LabelContent {
        let groups: Vec<String> = (0..32).map(|byte| format!("{byte:02X}")).collect();
        LabelContent {
            link: OnboardingLink { name: "box-0001".into(), claim_code: "QAWC-SBQ9-Q63B".into() },
            ca_fingerprint: format!("SHA-256 {}", groups.join(":")),
        }
    }

    #[test]
    fn the_link_round_trips_and_refuses_what_the_onboarding_page_would_drop() {
        let link = content().link;
        assert_eq!(link.url(), "http://box-0001.local/?claim=QAWC-SBQ9-Q63B");
        assert_eq!(OnboardingLink::parse(&link.url()), Some(link));
        assert_eq!(OnboardingLink::parse("https://box-0001.local/?claim=QAWC-SBQ9-Q63B"), None);
        assert_eq!(OnboardingLink::parse("http://box-0001.local/?claim=a&b=c"), None);
        assert!(!is_link_safe("two words"));
    }

    #[test]
    fn the_label_shows_the_start_of_the_fingerprint() {
        assert_eq!(short_fingerprint(&content().ca_fingerprint), "00:01:02:03:04:05:06:07…");
        assert_eq!(short_fingerprint("SHA-256 AB:CD"), "AB:CD");
    }

    #[test]
    fn long_lines_wrap_after_a_separator() {
        assert_eq!(wrap("http://a-long-box-name.local/", 16), ["http://a-long-", "box-name.local/"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("short", 16), ["short"]);
    }

    #[test]
    fn renders_the_code_with_its_quiet_zone_and_text_under_it() {
        let content = content();
        let image = render(&content).unwrap();
        let code = QrCode::with_error_correction_level(content.link.url(), EcLevel::M).unwrap();
        let qr_side = (code.width() as u32 + 2 * QUIET_ZONE_MODULES) * MODULE_PIXELS;
        assert!(image.width() >= qr_side);
        assert!(image.height() > qr_side);
        // Corners are white; the finder pattern's corner is dark.
        assert_eq!(image.get_pixel(0, 0).0, [255]);
        let finder = QUIET_ZONE_MODULES * MODULE_PIXELS;
        assert_eq!(image.get_pixel((image.width() - qr_side) / 2 + finder, finder).0, [0]);
        // Only black and white (a thermal printer prints no grey), and text below.
        assert!(image.pixels().all(|pixel| pixel.0 == [0] || pixel.0 == [255]));
        let dark_below = (qr_side..image.height())
            .flat_map(|y| (0..image.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| image.get_pixel(x, y).0 == [0])
            .count();
        assert!(dark_below > 1_000, "the text is drawn under the code ({dark_below} dark pixels)");
    }

    #[test]
    fn long_names_and_codes_wrap_inside_the_label() {
        let mut content = content();
        content.link.name = "a".repeat(63);
        content.link.claim_code = "B".repeat(64);
        let image = render(&content).unwrap();
        // Nothing is drawn into the right margin.
        let x = image.width() - TEXT_MARGIN_PIXELS / 2;
        assert!((0..image.height()).all(|y| image.get_pixel(x, y).0 == [255]));
    }
}
