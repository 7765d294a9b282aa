//! `edgenode-firstboot`: run once on the box's first boot by edgenode-firstboot.service.
//! Applies `edgenode.toml` from the boot partition (see `provisioning.rs`).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use image_builder::provisioning::{self, Layout};

#[derive(Parser)]
#[command(version, about = "Apply Edgenode provisioning from the boot partition (once)")]
struct Cli {
    #[arg(long, default_value = "/boot/firmware")]
    boot_dir: PathBuf,
    #[arg(long, default_value = "/var/lib/edgenode-config")]
    config_dir: PathBuf,
    #[arg(long, default_value = "/var/lib/edgenode")]
    state_dir: PathBuf,
    /// The user the node runs as; owns the state dir, the identity, the CA and the
    /// claim code.
    #[arg(long, default_value = "edgenode")]
    user: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let node_owner = user_ids(&cli.user).with_context(|| format!("user {} is not in /etc/passwd", cli.user))?;
    let fallback_name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| provisioning::is_host_label(name))
        .unwrap_or_else(|| "edgenode".to_owned());
    let layout = Layout {
        boot_dir: cli.boot_dir,
        config_dir: cli.config_dir,
        state_dir: cli.state_dir,
        node_owner: Some(node_owner),
        fallback_name,
    };
    let applied = provisioning::apply(&layout).context("first boot provisioning failed; the node stays stopped")?;
    if applied.from_file {
        println!(
            "edgenode-firstboot: applied {} for node {} (Wi-Fi {}, SSH {}, CA {}); secrets removed from {}",
            provisioning::FILE_NAME,
            applied.name,
            if applied.wifi { "configured" } else { "off" },
            if applied.ssh { "on" } else { "off" },
            if applied.ca { "from the file" } else { "made by the node" },
            layout.boot_dir.display()
        );
    } else {
        println!(
            "edgenode-firstboot: no {} on the boot partition; node {} uses defaults",
            provisioning::FILE_NAME,
            applied.name
        );
    }
    Ok(())
}

/// uid and gid from /etc/passwd (the image has no NSS modules beyond files).
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[0] == user).then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}
