//! The `sessiond` command: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use sessiond_server::cli::{Cli, execute};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sessiond: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` joins the context chain on one line: the one-line reason API.md asks for.
            eprintln!("sessiond: {error:#}");
            ExitCode::FAILURE
        }
    }
}
