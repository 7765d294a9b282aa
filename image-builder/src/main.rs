//! `image-builder`: build flashable Edgenode images, and provision boxes for an ISP.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use image_builder::build::{self, BuildOptions, Target};
use image_builder::provision;
use image_builder::update::{self, BundleOptions, RootSource};

#[derive(Parser)]
#[command(version, about = "Flashable Edgenode images and provisioning files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a flashable disk image from Debian packages (needs root, mmdebstrap,
    /// e2fsprogs, dosfstools, mtools, fdisk).
    Build {
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long)]
        out: PathBuf,
        /// A provisioning file to put on the boot partition as edgenode.toml.
        #[arg(long)]
        provision: Option<PathBuf>,
        /// Debian mirror.
        #[arg(long, default_value = build::DEFAULT_MIRROR)]
        mirror: String,
        /// Directory with already built `edgenode` and `edgenode-firstboot` for the
        /// target; without it they are built with cargo.
        #[arg(long)]
        binaries: Option<PathBuf>,
        /// Work directory (kept for inspection); default: next to --out.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Directory that keeps downloaded .deb files between builds.
        #[arg(long)]
        deb_cache: Option<PathBuf>,
        /// Update keys: the image trusts DIR/ca.cert.pem for updates. Made as a
        /// development CA and signing key when DIR has none (an ISP uses its own).
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// The version the image reports for itself (/usr/lib/edgenode/version).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
    },
    /// Make a signed RAUC update bundle (verity) of an image's root file system, which
    /// holds its kernel and initrd (needs rauc, squashfs-tools, openssl, fdisk).
    Bundle {
        #[arg(long, value_enum)]
        target: Target,
        /// A disk image from `image-builder build`: its slot A file system is bundled.
        #[arg(long, required_unless_present = "rootfs", conflicts_with = "rootfs")]
        image: Option<PathBuf>,
        /// Or an ext4 root file system image (a build's WORK/root.img).
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// rpi-arm64 with --rootfs: the slot's boot partition, a FAT image (a build's
        /// WORK/boot.img); with --image it is taken from the image.
        #[arg(long)]
        bootfs: Option<PathBuf>,
        /// The bundle's version, shown by `rauc info` and `edgenode update status`.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        /// Update keys (see `build --keys`); made when DIR has none.
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Turn an inventory CSV into one provisioning file and one label per box.
    Provision {
        #[arg(long)]
        inventory: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Provision { inventory, out } => {
            let started = Instant::now();
            let rows = provision::read_inventory(&inventory)?;
            eprintln!("provision: {} boxes from {}", rows.len(), inventory.display());
            let boxes = provision::provision(&rows, &out, &mut |done, total, name| {
                if done == total || done % 10 == 0 {
                    eprintln!("provision: [{done:>5}/{total}] {name}");
                }
            })?;
            let width = boxes.iter().map(|b| b.name.len()).max().unwrap_or(4).max(4);
            let code_width = boxes.iter().map(|b| b.label.link.claim_code.len()).max().unwrap_or(10).max(10);
            let pin_width = boxes.iter().map(|b| b.pin.len()).max().unwrap_or(3);
            println!("{:<width$}  {:<code_width$}  {:<pin_width$}  CA fingerprint", "name", "claim code", "pin");
            for provisioned in &boxes {
                println!(
                    "{:<width$}  {:<code_width$}  {:<pin_width$}  {}",
                    provisioned.name,
                    provisioned.label.link.claim_code,
                    provisioned.pin,
                    provisioned.label.ca_fingerprint
                );
            }
            eprintln!(
                "provision: wrote {n} edgenode.toml and {n} label.png under {} in {:.1} s",
                out.display(),
                started.elapsed().as_secs_f64(),
                n = boxes.len()
            );
            Ok(())
        }
        Command::Build { target, out, provision, mirror, binaries, work_dir, deb_cache, keys, version } => {
            let work_dir = work_dir.unwrap_or_else(|| out.with_extension("work"));
            let options = BuildOptions { target, out, provision, mirror, binaries, work_dir, deb_cache, keys, version };
            build::build(&options).context("image build failed")
        }
        Command::Bundle { target, image, rootfs, bootfs, version, keys, out } => {
            let source = match (image, rootfs) {
                (Some(image), _) => RootSource::Image(image),
                (None, Some(rootfs)) => RootSource::Rootfs(rootfs),
                (None, None) => unreachable!("clap requires --image or --rootfs"),
            };
            update::bundle(&BundleOptions { target, source, bootfs, version, keys, out }).context("bundle failed")
        }
    }
}
