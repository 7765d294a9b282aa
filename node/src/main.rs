//! `edgenode`: the command line. Parses flags, sets up logging and the runtime, and
//! hands over to a command: `serve` is the node (`edgenode::node`), the others are in
//! `cli/`.

mod cli;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use edgenode::config::Config;

#[derive(Parser)]
#[command(name = "edgenode", version, about = "A self-hosted neighbourhood photo-sharing node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: HTTPS and HTTP/3 on one port, storage in the data directory.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// Address and port for both TCP (HTTPS) and UDP (HTTP/3).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Node name (mDNS instance and host name).
        #[arg(long)]
        name: Option<String>,
        /// Claim code for the first (admin) account; generated when not given.
        #[arg(long)]
        claim_code: Option<String>,
        /// Do not advertise or browse with mDNS.
        #[arg(long)]
        no_mdns: bool,
    },
    /// Browse the local network for Edgenode nodes (no node needs to run here).
    Discover {
        /// Seconds to listen for adverts.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pair with sibling nodes and list them (talks to the node running on this data dir).
    Peer {
        #[command(subcommand)]
        action: PeerAction,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Create, list and revoke invites to this node (talks to the node running on this
    /// data dir). Exits 0 when done, 1 when the node refused, 2 when no node answered.
    Invite {
        #[command(subcommand)]
        action: cli::invite::InviteAction,
        #[command(flatten)]
        common: CommonArgs,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The people of this node: list, add, password-reset codes, disable, enable (talks
    /// to the node running on this data dir). Exits 0 when done, 1 when the node
    /// refused, 2 when no node answered.
    User {
        #[command(subcommand)]
        action: cli::user::UserAction,
        #[command(flatten)]
        common: CommonArgs,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Show this node's identity, claim state, whether it is serving, and nearby nodes.
    #[command(after_help = cli::status::HELP_AFTER)]
    Status {
        #[command(flatten)]
        common: CommonArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Upload photos (files, or folders walked for JPEG, PNG and WebP) to any node as
    /// one of its users, optionally one post each. Resumable: run it again after an
    /// interruption. Exits 0 when all are done, 1 when any failed, 130 after Ctrl-C.
    Upload(cli::upload::UploadArgs),
    /// Back up the node serving on this data dir into DEST (a USB disk, say): its
    /// database as of one transaction, its photos and identity; incremental, keeping
    /// --keep generations. Safe while the node serves.
    #[command(after_help = cli::backup::HELP_AFTER)]
    Backup {
        #[command(flatten)]
        args: cli::backup::BackupArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Restore a backup into an empty data dir, with the node stopped; the node started
    /// on it has the same identity, users, posts and photos.
    Restore(cli::restore::RestoreArgs),
    /// Updates of this box: status, check now, install one bundle (talks to the node
    /// running on this data dir; `status` reads its files when it does not answer).
    #[command(after_help = cli::update::HELP_AFTER)]
    Update {
        #[command(subcommand)]
        action: cli::update::UpdateAction,
        #[command(flatten)]
        common: CommonArgs,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Check a configuration file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Read FILE with the node's own parser and check its values, without starting the node.
    #[command(after_help = cli::config_check::HELP_AFTER)]
    Check {
        /// The TOML file, e.g. /etc/edgenode/node.toml.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PeerAction {
    /// Show a one-time code; run `edgenode peer join` with it on the other node.
    Pair {
        /// Seconds to wait for the other node to join (0: print the code and return).
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Join the node at ADDRESS (its peer address, `host:port`) with the code it showed.
    Join { address: String, code: String },
    /// Siblings with state, last contact, lag and trust.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Retire the dead sibling NODE_ID (a box replaced): siblings stop waiting for it
    /// and refuse its key. Exits 0 retired, 1 refused, 2 no node answered.
    Retire {
        /// The dead sibling's node id, as `edgenode peer list` shows it.
        node_id: String,
        /// Retire it even though it is connected now.
        #[arg(long)]
        force: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct CommonArgs {
    /// TOML configuration file (every key has a default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the database, media and identity live.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl CommonArgs {
    fn load(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        Ok(config)
    }

    /// As `load`, but with neither --config nor --data-dir, the appliance's config
    /// when this machine has one: `edgenode status` on a box finds its node.
    fn load_local_node(&self) -> Result<Config> {
        match (&self.config, &self.data_dir) {
            (None, None) => Ok(Config::load(cli::appliance_config().as_deref())?),
            _ => self.load(),
        }
    }
}

/// jemalloc, whose background threads return freed pages to the OS within seconds
/// (dirty pages decay over 10 s): after a burst of uploads the node's RSS comes back
/// near its baseline, where glibc malloc kept its per-thread arenas full of freed
/// decode buffers. Measured with bench/upload-memory/run.
#[global_allocator]
static GLOBAL_ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BLOCKING_THREADS_MAX: usize = 128;
const BLOCKING_THREAD_IDLE_MS: u64 = 2000;

fn main() -> Result<std::process::ExitCode> {
    // Whatever the node, a crate or a subcommand creates in the data dir (database,
    // photos, spooled uploads, keys) is for this user only, even where a creation
    // site forgets its own mode; files and dirs that existed before are fixed at start
    // (`store::make_data_dir_private`).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    let logging = cli::Logging::init();
    // Blocking threads run API handlers, conversions and password checks; those two wait
    // in their own gates (at most 32 + 64 waiting), so 128 threads keep requests moving
    // while a flood cannot grow the pool to tokio's 512 (each thread's stack and
    // allocator cache stay resident until it exits; idle ones exit after 2 s).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .thread_keep_alive(std::time::Duration::from_millis(BLOCKING_THREAD_IDLE_MS))
        .build()
        .context("cannot start the runtime")?;
    // A closure, so that an early `?` in an arm also ends in `exit_code`.
    let done = (|| match cli.command {
        Command::Serve { common, listen, name, claim_code, no_mdns } => {
            let mut config = common.load()?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(name) = name {
                config.name = name;
            }
            if claim_code.is_some() {
                config.claim_code = claim_code;
            }
            if no_mdns {
                config.mdns.enabled = false;
            }
            config.validate()?;
            logging.apply_log_level(&config.log_level)?;
            runtime.block_on(edgenode::node::serve(config)).map_err(anyhow::Error::from)
        }
        Command::Status { common, json } => match common.load_local_node() {
            Ok(config) => runtime.block_on(cli::status::status(config, json)),
            Err(error) => Err(cli::Exit::new(cli::EXIT_CANNOT_TELL, error.to_string()).into()),
        },
        Command::Config { action: ConfigAction::Check { file } } => cli::config_check::check(&file),
        Command::Peer { action, common } => {
            // On a box, the appliance's config: `edgenode peer list` finds its node.
            let config = common.load_local_node()?;
            match action {
                PeerAction::Pair { wait } => runtime.block_on(cli::peer::pair(config, wait)),
                PeerAction::Join { address, code } => runtime.block_on(cli::peer::join(config, &address, &code)),
                PeerAction::List { json } => runtime.block_on(cli::peer::list(config, json)),
                PeerAction::Retire { node_id, force, json } => {
                    runtime.block_on(cli::peer::retire(config, &node_id, force, json))
                }
            }
        }
        Command::Invite { action, common, json } => {
            runtime.block_on(cli::invite::invite(common.load_local_node()?, action, json))
        }
        Command::User { action, common, json } => {
            runtime.block_on(cli::user::user(common.load_local_node()?, action, json))
        }
        Command::Update { action, common, json } => match common.load_local_node() {
            Ok(config) => runtime.block_on(cli::update::update(config, action, json)),
            Err(error) => Err(cli::Exit::new(cli::EXIT_CANNOT_TELL, error.to_string()).into()),
        },
        Command::Upload(args) => runtime.block_on(cli::upload::upload(args)),
        Command::Backup { args, common } => match common.load_local_node() {
            Ok(config) => runtime.block_on(cli::backup::backup(config, args)),
            Err(error) => Err(cli::Exit::new(cli::EXIT_CANNOT_TELL, error.to_string()).into()),
        },
        Command::Restore(args) => cli::restore::restore(args),
        Command::Discover { timeout, json } => cli::discover::discover(Duration::from_secs(timeout), json),
    })();
    // Last: `serve` has stopped every piece of the node in order by now; dropping the
    // runtime ends only tasks with no stop of their own (fan-out's loops, search's
    // feeder), which then let go of the store, and it closes.
    drop(runtime);
    Ok(cli::exit_code(done, &logging))
}
