//! Printable box labels: a PNG with a QR code that holds the node's URL, pin and claim
//! code as one link, `https://<name>.local:<port>/#pin=<pin>&claim=<code>`, so a phone
//! that scans it opens the node (the fragment never leaves the phone).

use std::path::Path;

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per QR module: 8 prints sharp at 300 dpi on a 40 mm label.
const MODULE_PIXELS: u32 = 8;
/// The quiet zone the QR standard asks for, in modules.
const QUIET_ZONE_MODULES: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct LabelContent {
    pub url: String,
    pub pin: String,
    pub claim_code: String,
}

impl LabelContent {
    pub fn payload(&self) -> String {
        format!("{}#pin={}&claim={}", self.url, self.pin, self.claim_code)
    }

    /// Reads a payload back (used by tests and by whoever scans a label).
    pub fn from_payload(payload: &str) -> Option<LabelContent> {
        let (url, fragment) = payload.split_once('#')?;
        let (pin, claim) = fragment.strip_prefix("pin=")?.split_once("&claim=")?;
        Some(LabelContent { url: url.to_owned(), pin: pin.to_owned(), claim_code: claim.to_owned() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("the label content does not fit in a QR code: {0}")]
    Encode(String),
    #[error("cannot write the label {path}: {source}")]
    Write { path: String, source: image::ImageError },
}

/// Renders the QR code as a black-on-white grey-scale image.
pub fn render(content: &LabelContent) -> Result<image::GrayImage, LabelError> {
    // Level M survives a scuffed sticker and keeps the code small enough to scan.
    let code = QrCode::with_error_correction_level(content.payload(), EcLevel::M)
        .map_err(|error| LabelError::Encode(error.to_string()))?;
    let modules = code.width() as u32;
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE_MODULES) * MODULE_PIXELS;
    Ok(image::GrayImage::from_fn(side, side, |x, y| {
        let module_x = (x / MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES);
        let module_y = (y / MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES);
        let dark = match (module_x, module_y) {
            (Some(mx), Some(my)) if mx < modules && my < modules => colors[(my * modules + mx) as usize] == Color::Dark,
            _ => false,
        };
        image::Luma([if dark { 0 } else { 255 }])
    }))
}

pub fn write_png(content: &LabelContent, path: &Path) -> Result<(), LabelError> {
    render(content)?
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| LabelError::Write { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_renders_with_a_quiet_zone() {
        let content = LabelContent {
            url: "https://box-0001.local:8443/".into(),
            pin: "sha256/+lUx6E0x/abcdefghijklmnopqrstuvwxyz0123456789AB=".into(),
            claim_code: "QAWC-SBQ9-Q63B".into(),
        };
        assert_eq!(LabelContent::from_payload(&content.payload()), Some(content.clone()));
        let image = render(&content).unwrap();
        assert_eq!(image.width(), image.height());
        assert_eq!(image.width() % MODULE_PIXELS, 0);
        // Corners are quiet zone (white); the finder pattern's corner is dark.
        assert_eq!(image.get_pixel(0, 0).0, [255]);
        let finder = QUIET_ZONE_MODULES * MODULE_PIXELS;
        assert_eq!(image.get_pixel(finder, finder).0, [0]);
    }
}
