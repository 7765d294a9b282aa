//! The appliance tier's bad release (feature `rollback-drill`, node/Cargo.toml): a test
//! bundle installs it as /usr/bin/edgenode. `serve` opens the database as edgenode does,
//! so the real migration path runs (a copy kept in pre-migration/, the schema one
//! further), and then exits 1, as a release that migrates and then fails would. Anything
//! else, `status` for the health check included, answers 1: not serving. The slot it
//! replaced must then open the database and serve (tests/appliance/boot-x86_64).

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, command, flag, path] = args.as_slice() else {
        eprintln!("rollback drill: only `serve --config FILE` runs; not serving");
        return ExitCode::FAILURE;
    };
    if command != "serve" || flag != "--config" {
        eprintln!("rollback drill: only `serve --config FILE` runs; not serving");
        return ExitCode::FAILURE;
    }
    let config = match edgenode::config::Config::load(Some(Path::new(path))) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rollback drill: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(edgenode::node::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
