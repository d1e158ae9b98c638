//! Runs the CLI's `search` and `viz` subcommands without the `minference` binary (for working on
//! them before they are wired into it): `cargo run --release -p minference-search --example
//! search_cli -- search ...`.

#[path = "../../cli/src/search_cmd.rs"]
mod search_cmd;
#[path = "../../cli/src/viz_cmd.rs"]
mod viz_cmd;

use clap::Parser;

#[derive(Parser, Debug)]
enum Cli {
    Search(search_cmd::SearchArgs),
    Viz(viz_cmd::VizArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Search(a) => search_cmd::run(&a),
        Cli::Viz(a) => viz_cmd::run(&a),
    }
}
