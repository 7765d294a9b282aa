//! `edgenode discover`: browses the local network for Edgenode nodes over mDNS (no
//! node needs to run here) and prints them as a table, or JSON.

use std::time::Duration;

use anyhow::Result;

use edgenode::discovery;

pub fn discover(timeout: Duration, json: bool) -> Result<()> {
    let nodes = discovery::browse_once(timeout)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        print!("{}", discovery::render_table(&nodes));
    }
    Ok(())
}
