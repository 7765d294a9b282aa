//! Benchmark of the image pipeline on 12 MP camera-like JPEGs; driven by `bench/media/run`.
//!
//! Two steps in separate processes, so that the peak RSS of `run` measures the pipeline and
//! not the making of its inputs:
//!
//! ```text
//! media_bench generate DIR              # write 12 photos, 4000x3000, q92, EXIF orientation + GPS
//! media_bench run DIR [ITERATIONS] [THREADS]
//! ```
//!
//! `generate` scales the Plasma wallpapers (Debian package plasma-workspace-wallpapers) to
//! 4000x3000 and adds a little sensor-like noise, so the files decode like real photos; when
//! the package is missing it makes synthetic photo-like images (gradients + noise) and says so.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use edgenode::media::{testimage, MediaLimits, Pipeline};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

const PHOTOS: usize = 12;
const WIDTH: u32 = 4000;
const HEIGHT: u32 = 3000;
const WALLPAPER_GLOB_ROOT: &str = "/usr/share/wallpapers";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("generate") => generate(Path::new(args.get(1).context("generate needs DIR")?)),
        Some("run") => {
            let dir = Path::new(args.get(1).context("run needs DIR")?);
            let iterations = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(5);
            let threads = args.get(3).map(|n| n.parse()).transpose()?.unwrap_or(1);
            run(dir, iterations, threads)
        }
        _ => bail!("usage: media_bench generate DIR | media_bench run DIR [ITERATIONS] [THREADS]"),
    }
}

// ---------------------------------------------------------------------------------------
// generate

fn wallpapers() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(WALLPAPER_GLOB_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|theme| {
            let images = theme.path().join("contents/images");
            ["2560x1600.jpg", "2560x1600.png"].iter().map(|name| images.join(name)).find(|path| path.exists())
        })
        .collect();
    found.sort();
    found.truncate(PHOTOS);
    found
}

/// Deterministic noise in -6..=6, standing in for sensor noise and fine texture.
fn noise(x: u32, y: u32, seed: u32) -> i16 {
    let mut state = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ seed.wrapping_mul(0xC2B2_AE3D);
    state ^= state >> 15;
    state = state.wrapping_mul(0x2C1B_3C6D);
    state ^= state >> 12;
    (state % 13) as i16 - 6
}

fn add_noise(pixel: [u8; 3], x: u32, y: u32, seed: u32) -> [u8; 3] {
    let delta = noise(x, y, seed);
    pixel.map(|channel| (i16::from(channel) + delta).clamp(0, 255) as u8)
}

/// A wallpaper cropped to 4:3 and scaled to 4000x3000.
fn scaled_wallpaper(path: &Path) -> Result<Vec<u8>> {
    let source = image::open(path).with_context(|| format!("decoding {}", path.display()))?.to_rgb8();
    let (width, height) = source.dimensions();
    let crop_width = (f64::from(height) * 4.0 / 3.0).min(f64::from(width));
    let crop_height = crop_width * 3.0 / 4.0;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).crop(
        (f64::from(width) - crop_width) / 2.0,
        (f64::from(height) - crop_height) / 2.0,
        crop_width,
        crop_height,
    );
    let view = ImageRef::new(width, height, source.as_raw(), PixelType::U8x3)?;
    let mut target = Image::new(WIDTH, HEIGHT, PixelType::U8x3);
    Resizer::new().resize(&view, &mut target, &options)?;
    Ok(target.into_vec())
}

/// Smooth gradients, a few discs and noise: compresses and decodes roughly like a photo.
fn synthetic(x: u32, y: u32, seed: u32) -> [u8; 3] {
    let (fx, fy) = (x as f32 / WIDTH as f32, y as f32 / HEIGHT as f32);
    let phase = seed as f32 * 0.7;
    let mut pixel = [
        (128.0 + 100.0 * (fx * 6.0 + phase).sin()) as u8,
        (128.0 + 90.0 * (fy * 4.0 - phase).cos()) as u8,
        (128.0 + 80.0 * ((fx + fy) * 9.0).sin()) as u8,
    ];
    let (dx, dy) = (fx - 0.3 - 0.04 * seed as f32, fy - 0.5);
    if dx * dx + dy * dy < 0.02 {
        pixel = [230, 200, 40];
    }
    add_noise(pixel, x, y, seed)
}

fn generate(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let sources = wallpapers();
    if sources.is_empty() {
        println!("inputs: no Plasma wallpapers found; using {PHOTOS} synthetic photo-like images (gradients + noise)");
    } else {
        println!("inputs: {} Plasma wallpapers scaled to {WIDTH}x{HEIGHT} with noise added", sources.len());
    }
    for index in 0..PHOTOS {
        let seed = index as u32;
        // Every third photo was taken with the phone upright: stored sideways, Orientation 6.
        let orientation = if index % 3 == 2 { 6 } else { 1 };
        let jpeg = match sources.get(index) {
            Some(path) => {
                let pixels = scaled_wallpaper(path)?;
                testimage::jpeg_with_exif(WIDTH, HEIGHT, orientation, true, |x, y| {
                    let at = ((y * WIDTH + x) * 3) as usize;
                    add_noise([pixels[at], pixels[at + 1], pixels[at + 2]], x, y, seed)
                })
            }
            None => testimage::jpeg_with_exif(WIDTH, HEIGHT, orientation, true, |x, y| synthetic(x, y, seed)),
        };
        let name = match sources.get(index) {
            Some(path) => path.components().nth(4).map(|c| c.as_os_str().to_string_lossy().into_owned()),
            None => None,
        }
        .unwrap_or_else(|| format!("synthetic{index:02}"));
        let path = dir.join(format!("{index:02}-{name}.jpg"));
        std::fs::write(&path, &jpeg)?;
        println!("  {} {:.1} MB orientation {orientation}", path.display(), jpeg.len() as f64 / 1e6);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// run

/// (VmHWM, VmRSS) of this process in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Median and 90th percentile (nearest rank), in milliseconds.
fn median_p90(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let rank = |q: f64| ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
    (millis(samples[rank(0.5)]), millis(samples[rank(0.9)]))
}

struct Row {
    name: String,
    input_bytes: usize,
    display_bytes: usize,
    thumb_bytes: usize,
    samples: Vec<Duration>,
}

fn run(dir: &Path, iterations: usize, threads: usize) -> Result<()> {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jpg"))
        .collect();
    inputs.sort();
    if inputs.is_empty() {
        bail!("no .jpg inputs in {}; run `media_bench generate {}` first", dir.display(), dir.display());
    }
    let limits = MediaLimits { workers: threads.max(1), ..MediaLimits::default_for_pi() };
    let pipeline = Arc::new(Pipeline::new(limits));
    let (hwm_before, _) = memory_kib();

    // Warm-up: first-touch page faults and lazy statics are not what we measure.
    let first = std::fs::read(&inputs[0])?;
    pipeline.process(&first).map_err(|error| anyhow::anyhow!("{}: {error}", inputs[0].display()))?;
    drop(first);

    let queue = Arc::new(Mutex::new((0..iterations).flat_map(|_| 0..inputs.len()).collect::<Vec<_>>()));
    let rows: Arc<Mutex<Vec<Row>>> = Arc::new(Mutex::new(
        inputs
            .iter()
            .map(|path| Row {
                name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                input_bytes: 0,
                display_bytes: 0,
                thumb_bytes: 0,
                samples: Vec::new(),
            })
            .collect(),
    ));
    let inputs = Arc::new(inputs);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (pipeline, queue, rows, inputs) =
                (Arc::clone(&pipeline), Arc::clone(&queue), Arc::clone(&rows), Arc::clone(&inputs));
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let Some(index) = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop() else {
                        return Ok(());
                    };
                    // Read each time so only the photos being converted are in memory.
                    let bytes = std::fs::read(&inputs[index])?;
                    let start = Instant::now();
                    let processed = pipeline
                        .process(&bytes)
                        .map_err(|error| anyhow::anyhow!("{}: {error}", inputs[index].display()))?;
                    let elapsed = start.elapsed();
                    let mut rows = rows.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let row = &mut rows[index];
                    row.input_bytes = bytes.len();
                    row.display_bytes = processed.display.bytes.len();
                    row.thumb_bytes = processed.thumb.bytes.len();
                    row.samples.push(elapsed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    let wall = started.elapsed();
    let (hwm_after, rss_after) = memory_kib();

    let mut rows = Arc::try_unwrap(rows)
        .map_err(|_| anyhow::anyhow!("rows still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    println!();
    println!("edgenode media pipeline: {iterations} iterations per photo, {threads} thread(s), workers = {threads}");
    println!("| photo | input MB | median ms | p90 ms | display KB | thumb KB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    for row in &mut rows {
        all.extend_from_slice(&row.samples);
        let (median, p90) = median_p90(&mut row.samples);
        println!(
            "| {} | {:.1} | {median:.0} | {p90:.0} | {:.0} | {:.0} |",
            row.name,
            row.input_bytes as f64 / 1e6,
            row.display_bytes as f64 / 1e3,
            row.thumb_bytes as f64 / 1e3
        );
    }
    let (median, p90) = median_p90(&mut all);
    println!("| **all {} conversions** | | **{median:.0}** | **{p90:.0}** | | |", all.len());
    println!(
        "throughput: {:.2} photos/s ({:.0} ms wall per photo); peak RSS (VmHWM) {:.0} MB, {:.0} MB before converting; RSS now {:.0} MB",
        all.len() as f64 / wall.as_secs_f64(),
        millis(wall) / all.len() as f64,
        hwm_after as f64 / 1024.0,
        hwm_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    // One machine-readable line for bench/media/run.
    println!(
        "summary: median_ms={median:.1} p90_ms={p90:.1} wall_ms_per_photo={:.1} peak_rss_kib={hwm_after}",
        millis(wall) / all.len() as f64
    );
    Ok(())
}
