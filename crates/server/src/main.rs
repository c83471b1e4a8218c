//! The `sessiond` command: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use sessiond_server::cli::{Cli, execute, flush_logs, init_logging};
use sessiond_server::config::LogFormat;

/// mimalloc rather than the C library's allocator: a refresh allocates and frees a few hundred
/// small buffers across the runtime's threads, where glibc's malloc spent about 8 % of the
/// server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return fail(
                format,
                &format!("sessiond: cannot start the async runtime: {error}"),
            );
        }
    };
    let outcome = runtime.block_on(execute(cli));
    // Tasks still on the runtime end with it (it is dropped at the end of `main` otherwise);
    // then what `serve` logged last goes out, before the reason of a failure.
    drop(runtime);
    flush_logs();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // `{:#}` joins the context chain on one line: the one-line reason API.md asks for.
        Err(error) => fail(format, &format!("sessiond: {error:#}")),
    }
}

/// Writes the one-line reason of a failure in the log format: a plain line, or a JSON log line
/// like every other one.
fn fail(format: LogFormat, reason: &str) -> ExitCode {
    match format {
        LogFormat::Text => eprintln!("{reason}"),
        LogFormat::Json => {
            init_logging(format);
            tracing::error!("{reason}");
        }
    }
    ExitCode::FAILURE
}
